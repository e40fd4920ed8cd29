/*
 * A GetEidResult answer's JSON text digested into an eid_ledger_outcome, for
 * clients that hold the answer as text rather than as a Lua 5.4 table (the
 * nginx ledger, eidkit.openresty.ledger, encodes the response table with
 * cjson and records through here). The rules are those of read_outcome in
 * bindings/ledger.c; spec/openresty/ledger_spec.lua records one table of
 * answers through both and compares what each stored, so the two cannot
 * drift unseen.
 */
#include "ledger_internal.h"

#include <cjson/cJSON.h>
#include <openssl/crypto.h>

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define EXPIRED_CODE "InvalidParameterValue.BizTokenExpired"

struct eid_ledger_digest {
    eid_ledger_outcome o;
    char *request_id;
    eid_ledger_attempt *details;
};

/* JSON null is absent, as cjson.null is to the binding. */
static bool absent(const cJSON *v) { return v == NULL || cJSON_IsNull(v); }

/* A double that is a whole number in int64_t range. */
static bool whole(double d, int64_t *v) {
    if (!isfinite(d) || d != floor(d) || d < -9223372036854775808.0 || d >= 9223372036854775808.0)
        return false;
    *v = (int64_t)d;
    return true;
}

/* A number, or a string Lua would convert to an integer (Tencent sends
 * ReqTime as a string of digits): leading and trailing spaces allowed. */
static bool detail_integer(const cJSON *t, const char *field, int64_t *v) {
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(t, field);
    if (cJSON_IsNumber(x)) return whole(x->valuedouble, v);
    if (!cJSON_IsString(x)) return false;
    const char *s = x->valuestring;
    char *end;
    errno = 0;
    long long i = strtoll(s, &end, 10);
    if (end != s && errno == 0) {
        while (*end == ' ' || (*end >= '\t' && *end <= '\r'))
            end++;
        if (*end == '\0') {
            *v = (int64_t)i;
            return true;
        }
    }
    double d = strtod(s, &end);
    if (end == s) return false;
    while (*end == ' ' || (*end >= '\t' && *end <= '\r'))
        end++;
    return *end == '\0' && whole(d, v);
}

/* t[field] cut to cap - 1 bytes, control bytes dropped ("" when not a
 * string). */
static void detail_text(const cJSON *t, const char *field, char *dst, size_t cap) {
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(t, field);
    const char *s = cJSON_IsString(x) ? x->valuestring : "";
    size_t n = 0;
    for (size_t i = 0; s[i] && n + 1 < cap; i++)
        if ((unsigned char)s[i] >= 0x20 && s[i] != 0x7f) dst[n++] = s[i];
    dst[n] = '\0';
}

static bool is_true(const cJSON *t, const char *field) {
    return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(t, field));
}

/* One LivenessDetail entry; its Name and Idcard are never read. */
static void read_detail(const cJSON *t, eid_ledger_attempt *a) {
    memset(a, 0, sizeof *a);
    const cJSON *seq = cJSON_GetObjectItemCaseSensitive(t, "Seq");
    if (cJSON_IsString(seq) && strlen(seq->valuestring) <= EID_LEDGER_SEQ_MAX)
        strcpy(a->seq, seq->valuestring);
    if (!detail_integer(t, "ReqTime", &a->req_time_ms) || a->req_time_ms < 0) a->req_time_ms = 0;
    a->has_err_code = detail_integer(t, "Errcode", &a->err_code);
    a->has_liveness_mode = detail_integer(t, "LivenessMode", &a->liveness_mode);
    a->is_need_charge = is_true(t, "IsNeedCharge");
    detail_text(t, "Sim", a->sim, sizeof a->sim);
    detail_text(t, "CompareLibType", a->compare_lib_type, sizeof a->compare_lib_type);
}

static const char *json_type(const cJSON *v) {
    if (cJSON_IsString(v)) return "string";
    if (cJSON_IsNumber(v)) return "number";
    if (cJSON_IsBool(v)) return "boolean";
    if (cJSON_IsArray(v) || cJSON_IsObject(v)) return "table";
    return "null";
}

/* Text.LivenessDetail: an array (an empty or keyed object is cjson's
 * encoding of a Lua table with no list part: no entries). */
static eid_status read_details(eid_ledger_digest *g, const cJSON *list, eid_error *err) {
    eid_ledger_outcome *o = &g->o;
    if (cJSON_IsObject(list)) return EID_OK;
    if (!cJSON_IsArray(list))
        return eid__fail(err, EID_E_INVALID_ARG, "Text.LivenessDetail", "expected array");
    int n = cJSON_GetArraySize(list);
    o->attempts = n;
    int first = n > EID_LEDGER_DETAILS_MAX ? n - EID_LEDGER_DETAILS_MAX : 0;
    if (n > 0) {
        g->details = OPENSSL_zalloc(sizeof *g->details * (size_t)(n - first));
        if (g->details == NULL) return eid__fail(err, EID_E_NOMEM, "", "out of memory");
    }
    int i = 0;
    for (const cJSON *e = list->child; e; e = e->next, i++) {
        if (!cJSON_IsObject(e))
            return eid__fail(err, EID_E_INVALID_ARG, "Text.LivenessDetail",
                             "expected a list of objects");
        if (is_true(e, "IsNeedCharge")) o->billable++;
        if (i >= first) read_detail(e, &g->details[i - first]);
    }
    o->details = g->details;
    o->n_details = n > 0 ? (size_t)(n - first) : 0;
    return EID_OK;
}

static eid_status digest(eid_ledger_digest *g, const cJSON *root, eid_error *err) {
    eid_ledger_outcome *o = &g->o;
    if (!cJSON_IsObject(root))
        return eid__fail(err, EID_E_INVALID_ARG, "response", "expected a JSON object");
    const cJSON *resp = cJSON_GetObjectItemCaseSensitive(root, "Response");
    if (!cJSON_IsObject(resp)) resp = root;
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(resp, "Error");
    if (cJSON_IsObject(e)) {
        const cJSON *code = cJSON_GetObjectItemCaseSensitive(e, "Code");
        if (!cJSON_IsString(code) || strcmp(code->valuestring, EXPIRED_CODE) != 0)
            return eid__fail(err, EID_E_INVALID_ARG, "Error",
                             "a failed GetEidResult call carries no result");
        o->has_verdict = 1; /* the token expired: recorded like its ErrCode */
        o->err_code = EID_ERRCODE_EXPIRED;
    } else if (!absent(e)) {
        return eid__fail(err, EID_E_INVALID_ARG, "Error", "expected table");
    }
    /* As the binding's field_string: a string or absent (null is a type
     * error there too). */
    const cJSON *rid = cJSON_GetObjectItemCaseSensitive(resp, "RequestId");
    if (cJSON_IsString(rid)) {
        size_t len = strlen(rid->valuestring);
        if ((g->request_id = OPENSSL_malloc(len + 1)) == NULL)
            return eid__fail(err, EID_E_NOMEM, "", "out of memory");
        memcpy(g->request_id, rid->valuestring, len + 1);
        o->request_id = g->request_id;
    } else if (rid != NULL) {
        return eid__fail(err, EID_E_INVALID_ARG, "RequestId", "expected string, got %s",
                         json_type(rid));
    }
    o->intention = is_true(resp, "IsVerifyIntention");
    const cJSON *text = cJSON_GetObjectItemCaseSensitive(resp, "Text");
    if (cJSON_IsObject(text)) {
        const cJSON *code = cJSON_GetObjectItemCaseSensitive(text, "ErrCode");
        if (!absent(code)) {
            int64_t v;
            if (!cJSON_IsNumber(code) || !whole(code->valuedouble, &v))
                return eid__fail(err, EID_E_INVALID_ARG, "Text.ErrCode", "expected integer");
            o->has_verdict = 1;
            o->err_code = v;
        }
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(text, "LivenessDetail");
        if (!absent(list)) {
            eid_status st = read_details(g, list, err);
            if (st) return st;
        }
    } else if (!absent(text)) {
        return eid__fail(err, EID_E_INVALID_ARG, "Text", "expected table");
    }
    return EID_OK;
}

eid_status eid_ledger_digest_json(const char *json, size_t len, eid_ledger_digest **out,
                                  eid_error *err) {
    if (out == NULL) return eid__fail(err, EID_E_INVALID_ARG, "out", "is NULL");
    *out = NULL;
    if (json == NULL) return eid__fail(err, EID_E_INVALID_ARG, "response", "is NULL");
    cJSON *root = cJSON_ParseWithLength(json, len);
    if (root == NULL) return eid__fail(err, EID_E_INVALID_ARG, "response", "not JSON");
    eid_ledger_digest *g = OPENSSL_zalloc(sizeof *g);
    eid_status st = g ? digest(g, root, err) : eid__fail(err, EID_E_NOMEM, "", "out of memory");
    cJSON_Delete(root);
    if (st) {
        eid_ledger_digest_free(g);
        return st;
    }
    *out = g;
    return EID_OK;
}

const eid_ledger_outcome *eid_ledger_digest_outcome(const eid_ledger_digest *d) {
    return d ? &d->o : NULL;
}

void eid_ledger_digest_free(eid_ledger_digest *d) {
    if (d == NULL) return;
    OPENSSL_free(d->request_id);
    OPENSSL_free(d->details);
    OPENSSL_free(d);
}
