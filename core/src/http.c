/*
 * The plain, unsigned HTTP helper (eid_http_get / eid_http_request): one
 * blocking libcurl easy transfer, never through a proxy, for local services
 * such as the CVM metadata service and a simulator's control API.
 */
#include "client_internal.h"

#include <curl/curl.h>

#include <limits.h>
#include <stdlib.h>
#include <string.h>

typedef struct get_buf {
    eid_buf b;
    size_t max;
    int too_big;
} get_buf;

static size_t on_get_write(char *data, size_t size, size_t n, void *ud) {
    get_buf *g = ud;
    size_t len = size * n;
    return eid__buf_append(&g->b, data, len, g->max, &g->too_big) ? len : 0;
}

eid_status eid_http_get(const char *url, long timeout_ms, size_t max, char **body, size_t *body_len,
                        long *status, eid_error *err) {
    return eid_http_request("GET", url, NULL, 0, timeout_ms, max, body, body_len, status, err);
}

eid_status eid_http_request(const char *method, const char *url, const void *req, size_t req_len,
                            long timeout_ms, size_t max, char **body, size_t *body_len,
                            long *status, eid_error *err) {
    if (url == NULL || body == NULL || status == NULL || timeout_ms <= 0 || max == 0)
        return eid__fail(err, EID_E_INVALID_ARG, "url",
                         "url, body, status, timeout and max needed");
    size_t ml = method ? strlen(method) : 0;
    int method_ok = ml > 0 && ml <= 16;
    for (size_t i = 0; i < ml && method_ok; i++)
        method_ok = (method[i] >= 'A' && method[i] <= 'Z');
    if (!method_ok) return eid__fail(err, EID_E_INVALID_ARG, "method", "must be 1..16 capitals");
    if (req == NULL && req_len > 0)
        return eid__fail(err, EID_E_INVALID_ARG, "body", "NULL with a non-zero length");
    if (req_len > (size_t)LONG_MAX) return eid__fail(err, EID_E_INVALID_ARG, "body", "too large");
    if (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0)
        return eid__fail(err, EID_E_INVALID_ARG, "url", "must start with http:// or https://");
    *body = NULL;
    if (eid_client_global_init() != EID_OK)
        return eid__fail(err, EID_E_INTERNAL, "", "curl_global_init failed");
    CURL *e = curl_easy_init();
    if (e == NULL) return eid__fail(err, EID_E_NOMEM, "nomem", "out of memory");
    get_buf g = {.max = max};
    char errbuf[CURL_ERROR_SIZE] = "";
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(e, CURLOPT_PROXY, ""); /* local services: never via a proxy */
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_get_write);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, &g);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, errbuf);
    struct curl_slist *hdrs = NULL, *h;
    if (strcmp(method, "GET") != 0) {
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
        if (req_len > 0 || strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0) {
            /* POSTFIELDS with an explicit size: a body of any bytes, even
             * empty, and no Expect: 100-continue round trip. */
            curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, (long)req_len);
            curl_easy_setopt(e, CURLOPT_POSTFIELDS, req_len ? (const char *)req : "");
            h = curl_slist_append(NULL, "Content-Type: application/json");
            if (h) hdrs = curl_slist_append(h, "Expect:");
            if (h == NULL || hdrs == NULL) {
                curl_slist_free_all(h);
                curl_easy_cleanup(e);
                return eid__fail(err, EID_E_NOMEM, "nomem", "out of memory");
            }
            curl_easy_setopt(e, CURLOPT_HTTPHEADER, hdrs);
        }
    }
    CURLcode rc = curl_easy_perform(e);
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, status);
    curl_easy_cleanup(e);
    curl_slist_free_all(hdrs);
    if (rc != CURLE_OK) {
        free(g.b.p);
        /* The signed client's names (retry.c), on a coarser split. */
        eid_outcome o = rc == CURLE_OPERATION_TIMEDOUT ? EID_OUTCOME_TIMEOUT
                        : rc == CURLE_COULDNT_CONNECT  ? EID_OUTCOME_CONNECT
                        : g.too_big                    ? EID_OUTCOME_TOO_BIG
                                                       : EID_OUTCOME_OTHER;
        return eid__fail(err, EID_E_CLIENT_TRANSPORT, eid__outcome_code(o), "%s",
                         g.too_big   ? "response too large"
                         : errbuf[0] ? errbuf
                                     : curl_easy_strerror(rc));
    }
    if (g.b.p == NULL) {
        g.b.p = calloc(1, 1);
        if (g.b.p == NULL) return eid__fail(err, EID_E_NOMEM, "nomem", "out of memory");
    }
    *body = g.b.p;
    if (body_len) *body_len = g.b.len;
    return EID_OK;
}
