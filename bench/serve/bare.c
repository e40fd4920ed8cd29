/*
 * bench/serve's bare server: the parts `eidkit serve` is built from, and
 * nothing of eidkit's own work. It is built the way issue 12 asks a server
 * to be: one loop drives libmicrohttpd (external epoll, a connection
 * suspended while its call is out, as bindings/httpd.c does) and the C
 * client's curl multi (core/src/client.c: TC3 signing, libcurl, retries), here
 * on one thread. It has no Lua, no gateway, flow or policy, no ledger, no
 * access log, no metrics and no subject check. Its CPU a request is what those
 * parts cost before eidkit's own work starts: a lower bound for any server
 * built from them, to set against the Node.js peer.
 *
 *   POST /eid/token  (any body)     -> 200 {"EidToken", "Url"}      (GetEidToken)
 *   POST /eid/result {"EidToken"}   -> 200 {"status", "retry_with_new_token"}
 *                                                                  (GetEidResult)
 *
 *   TENCENTCLOUD_SECRET_ID=... TENCENTCLOUD_SECRET_KEY=... \
 *     serve_bare --endpoint URL --merchant-id ID [--listen-port N]
 *
 * Prints "listening on http://127.0.0.1:PORT" and serves until SIGINT or
 * SIGTERM. The "status" is the coarse one bench/serve/peer.js gives
 * (pending, passed, expired, failed). An upstream failure answers 502.
 */
#define _GNU_SOURCE /* strdup under -std=c11 */

#include "eidkit/client.h"
#include "../bench_server.h"

#include <cjson/cJSON.h>
#include <microhttpd.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_BODY 16384

typedef struct req {
    struct MHD_Connection *conn;
    int token; /* POST /eid/token, else /eid/result */
    int state; /* 0 reading, 1 waiting upstream, 2 answer ready */
    unsigned status;
    struct MHD_Response *resp;
    size_t len;
    char body[MAX_BODY];
} req;

static eid_client *client;
static const char *merchant_id;

static struct MHD_Response *json(const char *text) {
    struct MHD_Response *r =
        MHD_create_response_from_buffer(strlen(text), (void *)text, MHD_RESPMEM_MUST_COPY);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    return r;
}

static enum MHD_Result answer(struct MHD_Connection *c, unsigned status, const char *text) {
    struct MHD_Response *r = json(text);
    enum MHD_Result ok = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ok;
}

/* GetEidResult's Text.ErrCode -> the outcome, as peer.js classifies it. */
static char *result_answer(const cJSON *response) {
    const cJSON *text = cJSON_GetObjectItemCaseSensitive(response, "Text");
    const cJSON *code = cJSON_GetObjectItemCaseSensitive(text, "ErrCode");
    const char *out;
    if (!cJSON_IsNumber(code) || code->valueint == 17)
        out = "{\"status\":\"pending\",\"retry_with_new_token\":false}";
    else if (code->valueint == 0)
        out = "{\"status\":\"passed\",\"retry_with_new_token\":false}";
    else if (code->valueint == 15)
        out = "{\"status\":\"expired\",\"retry_with_new_token\":true}";
    else
        out = "{\"status\":\"failed\",\"retry_with_new_token\":true}";
    return strdup(out);
}

static char *token_answer(const cJSON *response) {
    const cJSON *tok = cJSON_GetObjectItemCaseSensitive(response, "EidToken");
    const cJSON *url = cJSON_GetObjectItemCaseSensitive(response, "Url");
    if (!cJSON_IsString(tok)) return NULL;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "EidToken", tok->valuestring);
    if (cJSON_IsString(url)) cJSON_AddStringToObject(o, "Url", url->valuestring);
    char *text = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return text;
}

/* The call's body, or NULL (400) when the request does not name a token. */
static char *call_body(req *q) {
    cJSON *call = cJSON_CreateObject();
    if (q->token) {
        cJSON_AddStringToObject(call, "MerchantId", merchant_id);
    } else {
        q->body[q->len] = '\0';
        cJSON *in = cJSON_Parse(q->body);
        const cJSON *tok = cJSON_GetObjectItemCaseSensitive(in, "EidToken");
        if (cJSON_IsString(tok)) {
            cJSON_AddStringToObject(call, "EidToken", tok->valuestring);
            cJSON_AddStringToObject(call, "InfoType", "156"); /* as eidkit serve sends it */
        }
        cJSON_Delete(in);
        if (!cJSON_IsString(tok)) {
            cJSON_Delete(call);
            return NULL;
        }
    }
    char *body = cJSON_PrintUnformatted(call);
    cJSON_Delete(call);
    return body;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **ctx) {
    (void)cls, (void)version;
    req *q = *ctx;
    if (q == NULL) {
        int token = strcmp(url, "/eid/token") == 0;
        if (!token && strcmp(url, "/eid/result") != 0)
            return answer(c, 404, "{\"error\":{\"code\":\"unknown_route\"}}");
        if (strcmp(method, "POST") != 0)
            return answer(c, 405, "{\"error\":{\"code\":\"method_not_allowed\"}}");
        q = malloc(sizeof *q);
        if (q == NULL) return MHD_NO;
        q->conn = c;
        q->token = token;
        q->state = 0;
        q->len = 0;
        q->resp = NULL;
        *ctx = q;
        return MHD_YES;
    }
    if (*upload_size > 0) {
        if (q->len + *upload_size >= MAX_BODY) return MHD_NO;
        memcpy(q->body + q->len, upload, *upload_size);
        q->len += *upload_size;
        *upload_size = 0;
        return MHD_YES;
    }
    if (q->state == 2) return MHD_queue_response(c, q->status, q->resp);
    if (q->state == 1) return MHD_YES; /* resumed before its answer: cannot happen */

    char *body = call_body(q);
    if (body == NULL) return answer(c, 400, "{\"error\":{\"code\":\"bad_request\",\"message\":\"EidToken\"}}");
    eid_error err;
    eid_status st = eid_client_submit(client, q->token ? "GetEidToken" : "GetEidResult", body,
                                      strlen(body), q, &err);
    free(body);
    if (st != EID_OK) return answer(c, 500, "{\"error\":{\"code\":\"internal\"}}");
    q->state = 1;
    MHD_suspend_connection(c);
    return MHD_YES;
}

static void on_completed(void *cls, struct MHD_Connection *c, void **ctx,
                         enum MHD_RequestTerminationCode why) {
    (void)cls, (void)c, (void)why;
    req *q = *ctx;
    if (q == NULL) return;
    if (q->resp) MHD_destroy_response(q->resp);
    free(q);
    *ctx = NULL;
}

/* Every finished call: its answer, and its connection back into MHD's set. */
static int take_results(void) {
    int n = 0;
    void *ud;
    eid_result *r;
    while (eid_client_next(client, &ud, &r)) {
        req *q = ud;
        char *text = NULL;
        if (r->status == EID_OK) {
            /* defer_parse: the client handed the Response over unparsed. */
            cJSON *response = cJSON_Parse(r->response);
            if (response) text = q->token ? token_answer(response) : result_answer(response);
            cJSON_Delete(response);
        }
        q->status = text ? 200 : 502;
        q->resp = json(text ? text : "{\"error\":{\"code\":\"upstream\"}}");
        free(text);
        q->state = 2;
        eid_result_free(r);
        MHD_resume_connection(q->conn);
        n++;
    }
    return n;
}

static int usage(void) {
    fprintf(stderr, "usage: serve_bare --endpoint URL --merchant-id ID [--listen-port N]\n"
                    "  (credentials: TENCENTCLOUD_SECRET_ID, TENCENTCLOUD_SECRET_KEY)\n");
    return 2;
}

int main(int argc, char **argv) {
    const char *endpoint = NULL;
    long port = 0;
    for (int i = 1; i < argc; i += 2) {
        if (i + 1 >= argc) return usage();
        if (strcmp(argv[i], "--endpoint") == 0) {
            endpoint = argv[i + 1];
        } else if (strcmp(argv[i], "--merchant-id") == 0) {
            merchant_id = argv[i + 1];
        } else if (strcmp(argv[i], "--listen-port") == 0) {
            char *end;
            port = strtol(argv[i + 1], &end, 10);
            if (*end || port < 0 || port > 65535) return usage();
        } else {
            return usage();
        }
    }
    const char *id = getenv("TENCENTCLOUD_SECRET_ID"), *key = getenv("TENCENTCLOUD_SECRET_KEY");
    if (endpoint == NULL || merchant_id == NULL || id == NULL || key == NULL) return usage();

    bench_raise_nofile();
    signal(SIGPIPE, SIG_IGN);

    /* As `eidkit serve` builds its client for bench/serve
     * (--upstream-concurrency 10000; the Lua binding's deferred parse). */
    eid_client_options o = {0};
    o.endpoint = endpoint;
    o.max_in_flight = 10000;
    o.defer_parse = 1;
    eid_error err;
    if (eid_client_new(&o, &client, &err) != EID_OK ||
        eid_client_set_credentials(client, id, key, strlen(key), NULL, &err) != EID_OK) {
        fprintf(stderr, "serve_bare: %s\n", err.message);
        return 1;
    }

    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct MHD_Daemon *d = MHD_start_daemon(
        BENCH_MHD_FLAGS,
        (uint16_t)port, NULL, NULL, on_request, NULL, MHD_OPTION_SOCK_ADDR, &sa,
        /* bench/serve runs eidkit serve with --max-connections 20000: the
         * ladder's clients must meet the load, not a connection cap. */
        MHD_OPTION_CONNECTION_LIMIT, 20000u, MHD_OPTION_LISTEN_BACKLOG_SIZE, 4096u,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL, MHD_OPTION_END);
    if (d == NULL) {
        fprintf(stderr, "serve_bare: cannot listen on port %ld\n", port);
        return 1;
    }
    const union MHD_DaemonInfo *pi = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    const union MHD_DaemonInfo *ei = MHD_get_daemon_info(d, MHD_DAEMON_INFO_EPOLL_FD);

    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN};
    ev.data.fd = ei->epoll_fd;
    epoll_ctl(ep, EPOLL_CTL_ADD, ei->epoll_fd, &ev);
    ev.data.fd = eid_client_fd(client);
    epoll_ctl(ep, EPOLL_CTL_ADD, ev.data.fd, &ev);

    sigset_t orig;
    bench_stop_signals(&orig);

    printf("listening on http://127.0.0.1:%u\n", pi ? (unsigned)pi->port : 0u);
    fflush(stdout);

    int resumed = 0;
    while (!bench_stop) {
        long wait = -1;
        MHD_UNSIGNED_LONG_LONG t;
        if (MHD_get_timeout(d, &t) == MHD_YES) wait = t > 60000 ? 60000 : (long)t;
        long ct = eid_client_timeout(client);
        if (ct >= 0 && (wait < 0 || ct < wait)) wait = ct;
        if (resumed) wait = 0; /* MHD must run once more to send the answers */
        struct epoll_event evs[8];
        int n = epoll_pwait(ep, evs, 8, (int)wait, &orig);
        if (n < 0 && errno != EINTR) break;
        MHD_run(d);
        eid_client_perform(client, 0);
        resumed = take_results();
    }
    MHD_stop_daemon(d);
    eid_client_free(client);
    close(ep);
    return 0;
}
