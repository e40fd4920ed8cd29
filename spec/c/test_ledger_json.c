/* What libeidkit gives a ledger client that holds a GetEidResult answer as
 * JSON text (eidkit.openresty.ledger): eid_ledger_digest_json and the record
 * script's ARGV (eid_ledger_redis_record_args, the builder r_record uses),
 * with their NULL handling, refusals naming the member, and an
 * allocation-failure sweep (valgrind checks nothing leaks on any path).
 * spec/openresty/ledger_spec.lua holds the digest to the Lua binding's. */
#include "eidkit/ledger.h"

#include "alloc_fail.h"
#include "check.h"

#include <openssl/crypto.h>
#include <string.h>

static const char answer[] =
    "{\"Response\":{\"RequestId\":\"req-1\",\"IsVerifyIntention\":true,"
    "\"Text\":{\"ErrCode\":2006,\"LivenessDetail\":["
    "{\"Seq\":\"a\",\"ReqTime\":\"1735660800123\",\"Errcode\":1001,\"IsNeedCharge\":true,"
    "\"Sim\":\"95.27\",\"LivenessMode\":2,\"CompareLibType\":\"lib\",\"Name\":\"N\",\"Idcard\":"
    "\"I\"},"
    "{\"Seq\":\"b\",\"ReqTime\":-4,\"Errcode\":null,\"IsNeedCharge\":false}]}}}";

static void test_digest(void) {
    eid_ledger_digest *d = NULL;
    eid_error err = {0};
    CHECK(eid_ledger_digest_json(answer, sizeof answer - 1, &d, &err) == EID_OK);
    const eid_ledger_outcome *o = eid_ledger_digest_outcome(d);
    CHECK(o != NULL);
    if (o == NULL) return;
    CHECK(o->has_verdict == 1 && o->err_code == 2006);
    CHECK(o->attempts == 2 && o->billable == 1 && o->intention == 1);
    CHECK_STR(o->request_id, "req-1");
    CHECK(o->n_details == 2);
    CHECK_STR(o->details[0].seq, "a");
    CHECK(o->details[0].req_time_ms == 1735660800123LL);
    CHECK(o->details[0].has_err_code && o->details[0].err_code == 1001);
    CHECK(o->details[0].has_liveness_mode && o->details[0].liveness_mode == 2);
    CHECK_STR(o->details[0].sim, "95.27");
    CHECK(o->details[1].req_time_ms == 0 && !o->details[1].has_err_code);

    /* The ARGV r_record sends: now, has_verdict, code, attempts, billable,
     * request id, max ids, intention, n, then Seq/value pairs. */
    eid_ledger_redis_args *a = NULL;
    CHECK(eid_ledger_redis_record_args("TOKEN-1", o, 1735660900, &a, &err) == EID_OK);
    CHECK(eid_ledger_redis_args_count(a) == 13);
    const char *want[] = {"1735660900", "1", "2006", "2", "1", "req-1", "16", "1", "2", "a"};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        size_t len = 0;
        const char *v = eid_ledger_redis_args_get(a, i, &len);
        CHECK_STR(v, want[i]);
        CHECK(v && len == strlen(want[i]));
    }
    size_t len = 0;
    CHECK(eid_ledger_redis_args_get(a, 13, &len) == NULL);
    CHECK(memcmp(eid_ledger_redis_args_get(a, 10, &len),
                 "1735660800123\x1f"
                 "1001\x1f"
                 "1\x1f"
                 "2\x1f",
                 18) == 0);
    eid_ledger_redis_args_free(a);
    eid_ledger_digest_free(d);
}

static void refused(const char *json, const char *field) {
    eid_ledger_digest *d = (eid_ledger_digest *)&d; /* set to NULL on failure */
    eid_error err = {0};
    CHECK(eid_ledger_digest_json(json, strlen(json), &d, &err) == EID_E_INVALID_ARG);
    CHECK(d == NULL);
    CHECK_STR(err.field, field);
}

static void test_refusals(void) {
    refused("{\"Text\":{\"ErrCode\":\"0\"}}", "Text.ErrCode");
    refused("{\"Text\":{\"ErrCode\":1.5}}", "Text.ErrCode");
    refused("{\"Text\":[1]}", "Text");
    refused("{\"Text\":{\"LivenessDetail\":7}}", "Text.LivenessDetail");
    refused("{\"Text\":{\"LivenessDetail\":[1]}}", "Text.LivenessDetail");
    refused("{\"Error\":{\"Code\":\"InternalError\"}}", "Error");
    refused("{\"RequestId\":null}", "RequestId");
    refused("[1]", "response");
    refused("{not json", "response");
    eid_error err = {0};
    CHECK(eid_ledger_digest_json(NULL, 0, NULL, &err) == EID_E_INVALID_ARG);
    eid_ledger_digest_free(NULL);
    eid_ledger_redis_args_free(NULL);
    CHECK(eid_ledger_digest_outcome(NULL) == NULL);
    CHECK(eid_ledger_redis_args_count(NULL) == 0);
    /* BizTokenExpired is the verdict 15; JSON null is absent. */
    eid_ledger_digest *d = NULL;
    const char *exp =
        "{\"Error\":{\"Code\":\"InvalidParameterValue.BizTokenExpired\"},\"Text\":null}";
    CHECK(eid_ledger_digest_json(exp, strlen(exp), &d, &err) == EID_OK);
    const eid_ledger_outcome *o = eid_ledger_digest_outcome(d);
    CHECK(o && o->has_verdict && o->err_code == EID_ERRCODE_EXPIRED && o->attempts == 0);
    /* eid_ledger_record's checks: a bad token or request id, a payload. */
    eid_ledger_redis_args *a = NULL;
    CHECK(eid_ledger_redis_record_args("bad token", o, 1, &a, &err) == EID_E_INVALID_ARG);
    CHECK_STR(err.field, "token");
    eid_ledger_outcome copy = *o;
    copy.request_id = "a b";
    CHECK(eid_ledger_redis_record_args("T", &copy, 1, &a, &err) == EID_E_INVALID_ARG);
    CHECK_STR(err.field, "request_id");
    copy.request_id = NULL;
    copy.payload = "x";
    copy.payload_len = 1;
    CHECK(eid_ledger_redis_record_args("T", &copy, 1, &a, &err) == EID_E_INVALID_ARG);
    CHECK_STR(err.field, "payload");
    CHECK(a == NULL);
    eid_ledger_digest_free(d);
}

/* >100 details: the last EID_LEDGER_DETAILS_MAX are kept, all counted. */
static void test_many(void) {
    char json[40000];
    size_t n = (size_t)snprintf(json, sizeof json, "{\"Text\":{\"ErrCode\":0,\"LivenessDetail\":[");
    for (int i = 1; i <= 130; i++)
        n += (size_t)snprintf(json + n, sizeof json - n, "%s{\"Seq\":\"s%d\",\"IsNeedCharge\":%s}",
                              i > 1 ? "," : "", i, i % 2 ? "true" : "false");
    n += (size_t)snprintf(json + n, sizeof json - n, "]}}");
    eid_ledger_digest *d = NULL;
    CHECK(eid_ledger_digest_json(json, n, &d, NULL) == EID_OK);
    const eid_ledger_outcome *o = eid_ledger_digest_outcome(d);
    CHECK(o && o->attempts == 130 && o->billable == 65 && o->n_details == EID_LEDGER_DETAILS_MAX);
    if (o) CHECK_STR(o->details[0].seq, "s31");
    eid_ledger_digest_free(d);
}

static void alloc_life(void) {
    eid_ledger_digest *d = NULL;
    eid_error err = {0};
    eid_status st = eid_ledger_digest_json(answer, sizeof answer - 1, &d, &err);
    CHECK(st == EID_OK || st == EID_E_NOMEM);
    if (st) return;
    eid_ledger_redis_args *a = NULL;
    st = eid_ledger_redis_record_args("TOKEN-1", eid_ledger_digest_outcome(d), 1, &a, &err);
    CHECK(st == EID_OK || st == EID_E_NOMEM);
    eid_ledger_redis_args_free(a);
    eid_ledger_digest_free(d);
}

static void test_alloc_failures(void) {
    CHECK(CRYPTO_set_mem_functions(t_malloc, t_realloc, t_free) == 1);
    int clean = 0;
    for (long n = 1; n < 50 && !clean; n++) {
        alloc_count = 0;
        fail_at = n;
        alloc_life();
        clean = alloc_count < n;
    }
    fail_at = 0;
    CHECK(clean);
}

int main(void) {
    test_alloc_failures(); /* first: the hooks must precede OpenSSL's first allocation */
    test_digest();
    test_refusals();
    test_many();
    return check_report("test_ledger_json");
}
