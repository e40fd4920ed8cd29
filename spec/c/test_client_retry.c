/* The client's retry rules (core/src/retry.c, compiled into this test): each
 * outcome's status, code, transience and "sent", which actions may repeat
 * what, the clock-skew retry and the backoff ladder, one table row per case.
 * Pure: no simulator, no network. Usage: test_client_retry */
#include "client_internal.h"

#include "check.h"

#include <stdio.h>
#include <string.h>

static const eid_retry_rules rules = {
    .max_attempts = 4, .retry_unsafe = 0, .backoff_base = 0.1, .backoff_cap = 2.0};

/* An attempt's facts with no deadline, Date or jitter (backoff is checked). */
#define FACTS(action, attempts, outcome, sent, http, code, skew_retried)                           \
    { action, attempts, outcome, sent, http, code, skew_retried, 0, 0, 0, 0 }

typedef struct want {
    eid_status status;
    const char *code;
    int transient, sent, retryable, adopt_skew;
    double backoff;
} want;

static const struct row {
    const char *name;
    eid_retry_facts f;
    want w;
} rows[] = {
    /* 200 answers */
    {"success",
     FACTS("GetEidResult", 1, EID_OUTCOME_OK, 1, 200, NULL, 0),
     {EID_OK, "", 0, 1, 0, 0, -1}},
    {"remote, permanent",
     FACTS("GetEidResult", 1, EID_OUTCOME_REMOTE, 1, 200, "InvalidParameter", 0),
     {EID_E_CLIENT_REMOTE, "InvalidParameter", 0, 1, 0, 0, -1}},
    {"remote transient, read",
     FACTS("GetEidResult", 1, EID_OUTCOME_REMOTE, 1, 200, "InternalError.Db", 0),
     {EID_E_CLIENT_REMOTE, "InternalError.Db", 1, 1, 1, 0, 0.1}},
    {"remote transient, GetEidToken sent",
     FACTS("GetEidToken", 1, EID_OUTCOME_REMOTE, 1, 200, "InternalError", 0),
     {EID_E_CLIENT_REMOTE, "InternalError", 1, 1, 0, 0, -1}},
    {"throttled GetEidToken",
     FACTS("GetEidToken", 2, EID_OUTCOME_REMOTE, 1, 200, "RequestLimitExceeded.UinLimitExceeded",
           0),
     {EID_E_CLIENT_REMOTE, "RequestLimitExceeded.UinLimitExceeded", 1, 1, 1, 0, 0.2}},
    {"every §4.4 code",
     FACTS("CheckEidTokenStatus", 1, EID_OUTCOME_REMOTE, 1, 200, "FailedOperation.DbError", 0),
     {EID_E_CLIENT_REMOTE, "FailedOperation.DbError", 1, 1, 1, 0, 0.1}},
    {"SignatureExpire",
     {"GetEidToken", 1, EID_OUTCOME_REMOTE, 1, 200, "AuthFailure.SignatureExpire", 0, 5.0,
      1700000600, 1700000000, 0},
     {EID_E_CLIENT_REMOTE, "AuthFailure.SignatureExpire", 0, 1, 0, 1, -1}},
    {"SignatureExpire twice",
     FACTS("GetEidResult", 2, EID_OUTCOME_REMOTE, 1, 200, "AuthFailure.SignatureExpire", 1),
     {EID_E_CLIENT_REMOTE, "AuthFailure.SignatureExpire", 0, 1, 0, 0, -1}},
    {"malformed",
     FACTS("GetEidResult", 1, EID_OUTCOME_MALFORMED, 1, 200, NULL, 0),
     {EID_E_CLIENT_TRANSPORT, "bad_response", 0, 1, 0, 0, -1}},
    {"no memory for the Response",
     FACTS("GetEidResult", 1, EID_OUTCOME_NOMEM, 1, 200, NULL, 0),
     {EID_E_NOMEM, "nomem", 0, 1, 0, 0, -1}},
    /* other HTTP statuses */
    {"503, read",
     FACTS("GetEidResult", 1, EID_OUTCOME_HTTP, 1, 503, NULL, 0),
     {EID_E_CLIENT_TRANSPORT, "http_503", 1, 1, 1, 0, 0.1}},
    {"429, read",
     FACTS("GetEidResult", 1, EID_OUTCOME_HTTP, 1, 429, NULL, 0),
     {EID_E_CLIENT_TRANSPORT, "http_429", 1, 1, 1, 0, 0.1}},
    {"404",
     FACTS("GetEidResult", 1, EID_OUTCOME_HTTP, 1, 404, NULL, 0),
     {EID_E_CLIENT_TRANSPORT, "http_404", 0, 1, 0, 0, -1}},
    {"502, GetEidToken",
     FACTS("GetEidToken", 1, EID_OUTCOME_HTTP, 1, 502, NULL, 0),
     {EID_E_CLIENT_TRANSPORT, "http_502", 1, 1, 0, 0, -1}},
    /* transport failures */
    {"timeout before sending, GetEidToken",
     FACTS("GetEidToken", 1, EID_OUTCOME_TIMEOUT, 0, 0, NULL, 0),
     {EID_E_CLIENT_TRANSPORT, "timeout", 1, 0, 1, 0, 0.1}},
    {"timeout after sending, GetEidToken",
     FACTS("GetEidToken", 1, EID_OUTCOME_TIMEOUT, 1, 0, NULL, 0),
     {EID_E_CLIENT_TRANSPORT, "timeout", 1, 1, 0, 0, -1}},
    {"timeout after sending, read",
     FACTS("GetEidResult", 3, EID_OUTCOME_TIMEOUT, 1, 0, NULL, 0),
     {EID_E_CLIENT_TRANSPORT, "timeout", 1, 1, 1, 0, 0.4}},
    {"connect: never sent",
     FACTS("GetEidToken", 1, EID_OUTCOME_CONNECT, 1, 0, NULL, 0),
     {EID_E_CLIENT_TRANSPORT, "connect", 1, 0, 1, 0, 0.1}},
    {"reset, GetEidToken",
     FACTS("GetEidToken", 1, EID_OUTCOME_RESET, 1, 0, NULL, 0),
     {EID_E_CLIENT_TRANSPORT, "reset", 1, 1, 0, 0, -1}},
    {"reset, unknown action",
     FACTS("Foo", 1, EID_OUTCOME_RESET, 1, 0, NULL, 0),
     {EID_E_CLIENT_TRANSPORT, "reset", 1, 1, 0, 0, -1}},
    {"reset, read",
     FACTS("GetWeChatBillDetails", 1, EID_OUTCOME_RESET, 1, 0, NULL, 0),
     {EID_E_CLIENT_TRANSPORT, "reset", 1, 1, 1, 0, 0.1}},
    {"tls",
     FACTS("GetEidResult", 1, EID_OUTCOME_TLS, 1, 0, NULL, 0),
     {EID_E_CLIENT_TRANSPORT, "tls", 0, 0, 0, 0, -1}},
    {"truncated, read",
     FACTS("GetEidResult", 1, EID_OUTCOME_TRUNCATED, 1, 200, NULL, 0),
     {EID_E_CLIENT_TRANSPORT, "bad_response", 1, 1, 1, 0, 0.1}},
    {"too big",
     FACTS("GetEidResult", 1, EID_OUTCOME_TOO_BIG, 1, 200, NULL, 0),
     {EID_E_CLIENT_TRANSPORT, "bad_response", 0, 1, 0, 0, -1}},
    {"no memory receiving",
     FACTS("GetEidResult", 1, EID_OUTCOME_RECV_NOMEM, 1, 200, NULL, 0),
     {EID_E_CLIENT_TRANSPORT, "nomem", 0, 1, 0, 0, -1}},
    {"other",
     FACTS("GetEidResult", 1, EID_OUTCOME_OTHER, 1, 0, NULL, 0),
     {EID_E_CLIENT_TRANSPORT, "transport", 0, 1, 0, 0, -1}},
    /* the last attempt */
    {"attempts used up",
     FACTS("GetEidResult", 4, EID_OUTCOME_TIMEOUT, 1, 0, NULL, 0),
     {EID_E_CLIENT_TRANSPORT, "timeout", 1, 1, 1, 0, -1}},
};

static void test_rows(void) {
    for (size_t i = 0; i < sizeof rows / sizeof *rows; i++) {
        const struct row *t = &rows[i];
        eid_retry_verdict v;
        memset(&v, 0x5a, sizeof v); /* every field must be written */
        CHECK(eid_retry_decide(&rules, &t->f, &v, NULL) == EID_OK);
        int ok = v.status == t->w.status && strcmp(v.code, t->w.code) == 0 &&
                 v.transient == t->w.transient && v.sent == t->w.sent &&
                 v.retryable == t->w.retryable && v.adopt_skew == t->w.adopt_skew &&
                 v.backoff == t->w.backoff;
        CHECK(ok);
        if (!ok)
            fprintf(stderr,
                    "  %s: got status %d code '%s' transient %d sent %d retryable %d skew %d "
                    "backoff %g\n",
                    t->name, (int)v.status, v.code, v.transient, v.sent, v.retryable, v.adopt_skew,
                    v.backoff);
    }
}

/* retry_unsafe repeats GetEidToken like a read; the ladder doubles to the cap. */
static void test_unsafe_and_ladder(void) {
    eid_retry_rules r = {
        .max_attempts = 10, .retry_unsafe = 1, .backoff_base = 0.1, .backoff_cap = 0.5};
    eid_retry_facts f = {
        .action = "GetEidToken", .outcome = EID_OUTCOME_HTTP, .bytes_sent = 1, .http_status = 502};
    static const double ladder[] = {0.1, 0.2, 0.4, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, -1};
    for (int a = 1; a <= 10; a++) {
        eid_retry_verdict v;
        f.attempts = a;
        CHECK(eid_retry_decide(&r, &f, &v, NULL) == EID_OK);
        CHECK(v.retryable == 1);
        if (v.backoff != ladder[a - 1])
            fprintf(stderr, "  attempt %d: backoff %g, want %g\n", a, v.backoff, ladder[a - 1]);
        CHECK(v.backoff == ladder[a - 1]);
    }
}

/* The outcome names are the transport codes' table. */
static void test_outcome_codes(void) {
    static const struct {
        eid_outcome o;
        const char *code;
    } names[] = {
        {EID_OUTCOME_OK, ""},
        {EID_OUTCOME_REMOTE, ""},
        {EID_OUTCOME_HTTP, ""},
        {EID_OUTCOME_TIMEOUT, "timeout"},
        {EID_OUTCOME_CONNECT, "connect"},
        {EID_OUTCOME_RESET, "reset"},
        {EID_OUTCOME_TLS, "tls"},
        {EID_OUTCOME_MALFORMED, "bad_response"},
        {EID_OUTCOME_TRUNCATED, "bad_response"},
        {EID_OUTCOME_TOO_BIG, "bad_response"},
        {EID_OUTCOME_NOMEM, "nomem"},
        {EID_OUTCOME_RECV_NOMEM, "nomem"},
        {EID_OUTCOME_OTHER, "transport"},
        {EID_OUTCOME_COUNT, ""},
    };
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        CHECK_STR(eid__outcome_code(names[i].o), names[i].code);
    for (size_t i = 0; eid_client_transport_code(i) != NULL; i++)
        CHECK(eid_client_is_transport_code(eid_client_transport_code(i)));
}

/* The skew re-sign, the jitter inside the deadline and the refusals; the
 * same cases run from both Lua hosts in spec/client/retry_decide_spec.lua. */
static void test_skew_deadline_refusals(void) {
    eid_retry_verdict v;
    eid_retry_facts f = {.action = "GetEidToken",
                         .attempts = 1,
                         .outcome = EID_OUTCOME_REMOTE,
                         .bytes_sent = 1,
                         .remote_code = "AuthFailure.SignatureExpire",
                         .remaining = 1.0,
                         .server_time = 1000,
                         .local_time = 1600};
    CHECK(eid_retry_decide(NULL, &f, &v, NULL) == EID_OK);
    CHECK(v.adopt_skew == 1 && v.skew == -600 && v.resign == 1 && v.delay == 0);
    CHECK(v.ask_policy == 0);
    f.remaining = 0.0005; /* no time to re-sign: adopt, then stop */
    CHECK(eid_retry_decide(NULL, &f, &v, NULL) == EID_OK);
    CHECK(v.adopt_skew == 1 && v.resign == 0 && v.delay < 0 && v.ask_policy == 1);

    f = (eid_retry_facts){.action = "GetEidResult",
                          .attempts = 2,
                          .outcome = EID_OUTCOME_RESET,
                          .bytes_sent = 1,
                          .remaining = 1.0,
                          .jitter = 0.5};
    CHECK(eid_retry_decide(NULL, &f, &v, NULL) == EID_OK);
    CHECK(v.backoff == 0.2 && v.default_delay == 0.1 && v.delay == 0.1);
    f.remaining = 0.1005; /* the delay would end within 1 ms of the deadline */
    CHECK(eid_retry_decide(NULL, &f, &v, NULL) == EID_OK);
    CHECK(v.default_delay == 0.1 && v.delay == -1);
    CHECK(eid_retry_delay(&f, 0.05) == 0.05);
    CHECK(eid_retry_delay(&f, -1) == -1);
    CHECK(eid_retry_delay(NULL, 0) == -1);

    eid_error err = {0};
    f.jitter = 1.0;
    CHECK(eid_retry_decide(NULL, &f, &v, &err) == EID_E_INVALID_ARG);
    CHECK_STR(err.field, "jitter");
    CHECK(v.status == EID_E_INVALID_ARG && v.delay == -1);
    f.jitter = 0;
    f.outcome = EID_OUTCOME_COUNT;
    CHECK(eid_retry_decide(NULL, &f, &v, &err) == EID_E_INVALID_ARG);
    CHECK_STR(err.field, "outcome");
    CHECK(eid_retry_decide(NULL, NULL, &v, &err) == EID_E_INVALID_ARG);
    CHECK(eid_retry_decide(NULL, &f, NULL, NULL) == EID_E_INVALID_ARG);
    for (int o = 0; o < EID_OUTCOME_COUNT; o++)
        CHECK(eid_outcome_name((eid_outcome)o) != NULL);
    CHECK(eid_outcome_name(EID_OUTCOME_COUNT) == NULL);
}

/* keep_received, for every outcome and status: a body may go into the error
 * only from an answer whose status is neither 200 (Tencent's answers, where a
 * GetEidResult holds an identity) nor unknown. */
static void test_keep_received(void) {
    static const long statuses[] = {0, 200, 404, 502};
    for (int o = 0; o < EID_OUTCOME_COUNT; o++) {
        for (size_t i = 0; i < sizeof statuses / sizeof *statuses; i++) {
            eid_retry_facts f = {.action = "GetEidResult",
                                 .attempts = 1,
                                 .outcome = (eid_outcome)o,
                                 .bytes_sent = 1,
                                 .http_status = statuses[i],
                                 .remote_code = "InvalidParameter",
                                 .remaining = 1.0};
            eid_retry_verdict v;
            memset(&v, 0x5a, sizeof v);
            CHECK(eid_retry_decide(NULL, &f, &v, NULL) == EID_OK);
            int body =
                o == EID_OUTCOME_HTTP || o == EID_OUTCOME_TRUNCATED || o == EID_OUTCOME_TOO_BIG;
            int keep = body && statuses[i] != 0 && statuses[i] != 200;
            if (v.keep_received != keep)
                fprintf(stderr, "  %s, status %ld: keep_received %d, want %d\n",
                        eid_outcome_name((eid_outcome)o), statuses[i], v.keep_received, keep);
            CHECK(v.keep_received == keep);
        }
    }
    eid_retry_facts bad = {
        .action = "GetEidResult", .outcome = EID_OUTCOME_HTTP, .http_status = 502};
    eid_retry_verdict v;
    memset(&v, 0x5a, sizeof v);
    CHECK(eid_retry_decide(NULL, &bad, &v, NULL) == EID_E_INVALID_ARG); /* attempts 0 */
    CHECK(v.keep_received == 0);
}

int main(void) {
    test_rows();
    test_keep_received();
    test_skew_deadline_refusals();
    test_unsafe_and_ladder();
    test_outcome_codes();
    return check_report("test_client_retry");
}
