/*
 * Tencent's answer envelope, {"Response": {..., "Error": {"Code", "Message"},
 * "RequestId"}}: read from the bytes of a 200 answer into a result. No
 * transport here; eid_retry_decide turns the outcome into status and code.
 * A body this file refuses is never copied into the result: a 200 body can be
 * a GetEidResult with Name, IdCard and EidInfo (eid_retry_verdict's
 * keep_received), so the message says only where it failed and its size.
 */
#include "client_internal.h"

#include <cjson/cJSON.h>

#include <stdlib.h>
#include <string.h>

static int is_ws(char ch) { return ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n'; }

/* For a body already parsed as a one-member object whose member is
 * "Response": the offset and length of the member's value text. */
static int response_span(const char *p, size_t n, size_t *off, size_t *len) {
    size_t i = 0;
    while (i < n && is_ws(p[i]))
        i++;
    if (i >= n || p[i++] != '{') return 0;
    while (i < n && is_ws(p[i]))
        i++;
    if (n - i < 10 || memcmp(p + i, "\"Response\"", 10) != 0) return 0;
    i += 10;
    while (i < n && is_ws(p[i]))
        i++;
    if (i >= n || p[i++] != ':') return 0;
    while (i < n && is_ws(p[i]))
        i++;
    size_t e = n;
    while (e > i && is_ws(p[e - 1]))
        e--;
    if (e <= i || p[e - 1] != '}') return 0;
    e--;
    while (e > i && is_ws(p[e - 1]))
        e--;
    if (e <= i) return 0;
    *off = i;
    *len = e - i;
    return 1;
}

/* memmem for the "Error" key text, without _GNU_SOURCE. */
static int has_error_key(const char *p, size_t n) {
    static const char key[] = "\"Error\"";
    for (size_t i = 0; i + sizeof key - 1 <= n; i++) {
        const char *q = memchr(p + i, '"', n - i);
        if (q == NULL) return 0;
        i = (size_t)(q - p);
        if (n - i >= sizeof key - 1 && memcmp(q, key, sizeof key - 1) == 0) return 1;
    }
    return 0;
}

/* r->response = a copy of n bytes at p; 0 when out of memory. */
static int keep_response(eid_result *r, const char *p, size_t n) {
    r->response = malloc(n + 1);
    if (r->response == NULL) return 0;
    memcpy(r->response, p, n);
    r->response[n] = '\0';
    r->response_len = n;
    return 1;
}

static eid_outcome nomem(eid_result *r) {
    eid__setf(r->message, sizeof r->message, "out of memory keeping the response");
    return EID_OUTCOME_NOMEM;
}

eid_outcome eid__envelope_read(const char *body, size_t len, int defer_parse, eid_result *r) {
    size_t off, span;
    if (body == NULL) body = "", len = 0;
    /* defer_parse: an answer without "Error" anywhere is a success whose
     * Response the caller parses (the Lua binding, with lua-cjson). */
    if (defer_parse && !has_error_key(body, len) && response_span(body, len, &off, &span) &&
        body[off] == '{')
        return keep_response(r, body + off, span) ? EID_OUTCOME_OK : nomem(r);
    /* cJSON parses a 1.2 KB GetEidResult in 2.7 us where jansson took
     * 14.6 us, which was most of the C path's overhead over a bare libcurl
     * loop (bench/client). Trailing bytes after the JSON value are refused. */
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(body, len, &end, 0);
    if (root && end) {
        while (end < body + len && is_ws(*end))
            end++;
        if (end != body + len) {
            cJSON_Delete(root);
            root = NULL;
        }
    }
    cJSON *resp = root ? cJSON_GetObjectItemCaseSensitive(root, "Response") : NULL;
    if (root == NULL || !cJSON_IsObject(resp)) {
        if (root == NULL)
            eid__setf(r->message, sizeof r->message,
                      "the body is not JSON (invalid at byte %zu); %zu bytes received",
                      end && end >= body ? (size_t)(end - body) : (size_t)0, len);
        else
            eid__setf(r->message, sizeof r->message,
                      "the body has no Response object; %zu bytes received", len);
        cJSON_Delete(root);
        return EID_OUTCOME_MALFORMED;
    }
    eid_outcome out = EID_OUTCOME_OK;
    const char *rid = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(resp, "RequestId"));
    if (rid) eid__setf(r->request_id, sizeof r->request_id, "%s", rid);
    cJSON *e = cJSON_GetObjectItemCaseSensitive(resp, "Error");
    if (e != NULL && !cJSON_IsNull(e)) {
        const char *code = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(e, "Code"));
        if (!cJSON_IsObject(e) || code == NULL) {
            eid__setf(r->message, sizeof r->message,
                      "Response.Error has no Code string; %zu bytes received", len);
            cJSON_Delete(root);
            return EID_OUTCOME_MALFORMED;
        }
        const char *msg = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(e, "Message"));
        eid__setf(r->code, sizeof r->code, "%s", code);
        eid__setf(r->message, sizeof r->message, "%s", msg ? msg : "");
        out = EID_OUTCOME_REMOTE;
    }
    if (cJSON_GetArraySize(root) == 1 && response_span(body, len, &off, &span)) {
        /* The envelope is exactly {"Response": X}: hand out X as received. */
        if (!keep_response(r, body + off, span)) out = nomem(r);
    } else {
        r->response = cJSON_PrintUnformatted(resp);
        if (r->response == NULL)
            out = nomem(r);
        else
            r->response_len = strlen(r->response);
    }
    cJSON_Delete(root);
    return out;
}
