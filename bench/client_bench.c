/* bench/client's C side: sequential calls per second against `eidkit sim`.
 *   client_bench bare  URL ACTION BODY N RUNS   libcurl easy, keep-alive, one
 *                                               request signed once, resent
 *                                               (eidkit's headers, same bytes)
 *   client_bench c     URL ACTION BODY N RUNS   eid_client_call: sign, send,
 *                                               parse the envelope, every call
 *   client_bench batch URL ACTION BODY N RUNS   eid_client_submit N at once
 * Prints one calls/s figure per run. Every answer is checked: HTTP 200 and a
 * Response without Error, else the program exits 1. Demo credentials of the
 * simulator (public). */
#define _POSIX_C_SOURCE 200809L

#include "eidkit/client.h"

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SECRET_ID  "AKIDeidkitSimDemo00000000000000000000"
#define SECRET_KEY "eidkitSimDemoSecretKey000000000"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

typedef struct sinkbuf {
    char data[65536];
    size_t len;
} sinkbuf;

static size_t sink(char *d, size_t s, size_t n, void *ud) {
    sinkbuf *b = ud;
    size_t len = s * n;
    if (b->len + len < sizeof b->data) {
        memcpy(b->data + b->len, d, len);
        b->len += len;
        b->data[b->len] = '\0';
    }
    return len;
}

static void die(const char *what) {
    fprintf(stderr, "client_bench: %s\n", what);
    exit(1);
}

static void check_body(const char *body) {
    if (strstr(body, "\"Response\"") == NULL || strstr(body, "\"Error\"") != NULL) {
        fprintf(stderr, "client_bench: bad answer: %.300s\n", body);
        exit(1);
    }
}

static void bare(const char *url, const char *action, const char *body, long n, int runs) {
    eid_signer *s;
    if (eid_signer_new(NULL, &s) != EID_OK) die("signer");
    const char *host = strstr(url, "://") + 3;
    eid_sign_request req = {.secret_id = SECRET_ID,
                            .secret_key = SECRET_KEY,
                            .secret_key_len = strlen(SECRET_KEY),
                            .host = host,
                            .service = "faceid",
                            .action = action,
                            .timestamp = EID_TIMESTAMP_NOW,
                            .body = body,
                            .body_len = strlen(body)};
    eid_signature sig;
    if (eid_signer_sign(s, &req, &sig, NULL) != EID_OK) die("sign");
    eid_header h[EID_HEADERS_MAX];
    size_t nh = eid_sign_headers(&req, &sig, h);
    struct curl_slist *list = NULL;
    char line[1024];
    for (size_t i = 0; i < nh; i++) {
        snprintf(line, sizeof line, "%s: %s", h[i].name, h[i].value);
        list = curl_slist_append(list, line);
    }
    /* The same request eidkit sends: its client name and a trace id too. */
    list = curl_slist_append(list, "X-TC-RequestClient: eidkit/" EIDKIT_VERSION);
    list = curl_slist_append(list, "Expect:");
    list = curl_slist_append(list, "Accept:");
    list = curl_slist_append(list, "X-TC-TraceId: 6f1c0a52-3d5e-4b7a-9c1e-2f4b8d9e0a17");
    CURL *e = curl_easy_init();
    sinkbuf b;
    char full[256];
    snprintf(full, sizeof full, "%s/", url);
    curl_easy_setopt(e, CURLOPT_URL, full);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, list);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, sink);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    for (int r = 0; r < runs; r++) {
        double t0 = now();
        for (long i = 0; i < n; i++) {
            b.len = 0;
            long status = 0;
            if (curl_easy_perform(e) != CURLE_OK) die("curl_easy_perform");
            curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
            if (status != 200) die("HTTP status");
            check_body(b.data);
        }
        printf("%.0f\n", (double)n / (now() - t0));
        fflush(stdout);
    }
    curl_easy_cleanup(e);
    curl_slist_free_all(list);
    eid_signer_free(s);
}

static eid_client *client(const char *url) {
    eid_client_options o = {.endpoint = url}; /* defaults, as a C host would start */
    eid_client *c;
    if (eid_client_new(&o, &c, NULL) != EID_OK) die("client");
    if (eid_client_set_credentials(c, SECRET_ID, SECRET_KEY, strlen(SECRET_KEY), NULL, NULL) !=
        EID_OK)
        die("credentials");
    return c;
}

static void seq(const char *url, const char *action, const char *body, long n, int runs) {
    eid_client *c = client(url);
    size_t blen = strlen(body);
    for (int r = 0; r < runs; r++) {
        double t0 = now();
        for (long i = 0; i < n; i++) {
            eid_result *res;
            if (eid_client_call(c, action, body, blen, &res, NULL) != EID_OK) {
                fprintf(stderr, "client_bench: %s: %s\n", res ? res->code : "?",
                        res ? res->message : "");
                exit(1);
            }
            if (res->attempts != 1) die("a retry happened");
            eid_result_free(res);
        }
        printf("%.0f\n", (double)n / (now() - t0));
        fflush(stdout);
    }
    eid_client_free(c);
}

static void batch(const char *url, const char *action, const char *body, long n, int runs) {
    eid_client *c = client(url);
    size_t blen = strlen(body);
    for (int r = 0; r < runs; r++) {
        double t0 = now();
        for (long i = 0; i < n; i++)
            if (eid_client_submit(c, action, body, blen, NULL, NULL) != EID_OK) die("submit");
        long done = 0;
        while (done < n) {
            eid_client_perform(c, 1000);
            eid_result *res;
            while (eid_client_next(c, NULL, &res)) {
                if (res->status != EID_OK) {
                    fprintf(stderr, "client_bench: %s: %s\n", res->code, res->message);
                    exit(1);
                }
                eid_result_free(res);
                done++;
            }
        }
        printf("%.0f\n", (double)n / (now() - t0));
        fflush(stdout);
    }
    eid_client_free(c);
}

int main(int argc, char **argv) {
    if (argc != 7) {
        fprintf(stderr, "usage: client_bench bare|c|batch URL ACTION BODY N RUNS\n");
        return 2;
    }
    long n = atol(argv[5]);
    int runs = atoi(argv[6]);
    if (n <= 0 || runs <= 0) die("N and RUNS must be positive");
    curl_global_init(CURL_GLOBAL_DEFAULT);
    if (strcmp(argv[1], "bare") == 0)
        bare(argv[2], argv[3], argv[4], n, runs);
    else if (strcmp(argv[1], "c") == 0)
        seq(argv[2], argv[3], argv[4], n, runs);
    else if (strcmp(argv[1], "batch") == 0)
        batch(argv[2], argv[3], argv[4], n, runs);
    else
        die("mode must be bare, c or batch");
    curl_global_cleanup();
    return 0;
}
