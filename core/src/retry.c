/*
 * What an attempt came to and whether to try again: one table from outcome to
 * status, code, transience and "sent", the per-action safety rule and the
 * default backoff, the clock-skew re-sign and the deadline. Pure and public
 * (eidkit/retry.h), so any transport (libcurl here, nginx in OpenResty) gets
 * the same verdicts. Rules and reasons: docs/internals/client.md.
 */
#include "client_internal.h"

#include <stdio.h>
#include <string.h>

/* The codes an outcome can carry. The first N_TRANSPORT are the transport
 * codes eid_client_transport_code lists; the rest are local failures. */
enum {
    C_TIMEOUT,
    C_CONNECT,
    C_RESET,
    C_TLS,
    C_BAD_RESPONSE,
    N_TRANSPORT,
    C_NOMEM = N_TRANSPORT,
    C_TRANSPORT,
    C_NONE,   /* success: "" */
    C_REMOTE, /* Tencent's Error.Code */
    C_HTTP,   /* http_NNN */
};
static const char *const code_names[] = {
    [C_TIMEOUT] = "timeout",
    [C_CONNECT] = "connect",
    [C_RESET] = "reset",
    [C_TLS] = "tls",
    [C_BAD_RESPONSE] = "bad_response",
    [C_NOMEM] = "nomem",
    [C_TRANSPORT] = "transport",
};

#define HTTP_PREFIX_LEN (sizeof EID_HTTP_CODE_PREFIX - 1)

enum { T_NO, T_YES, T_TENCENT, T_HTTP }; /* transient: never, always, by code, by status */

/* error_body: the outcome comes with a body that explains a failure, and
 * keep_received may hand out (by its HTTP status). MALFORMED is left out: it
 * is a 200 by definition. */
static const struct outcome_rule {
    eid_status status;
    unsigned char code, transient, never_sent, error_body;
} rules_by_outcome[EID_OUTCOME_COUNT] = {
    [EID_OUTCOME_OK] = {EID_OK, C_NONE, T_NO, 0, 0},
    [EID_OUTCOME_REMOTE] = {EID_E_CLIENT_REMOTE, C_REMOTE, T_TENCENT, 0, 0},
    [EID_OUTCOME_MALFORMED] = {EID_E_CLIENT_TRANSPORT, C_BAD_RESPONSE, T_NO, 0, 0},
    [EID_OUTCOME_NOMEM] = {EID_E_NOMEM, C_NOMEM, T_NO, 0, 0},
    [EID_OUTCOME_HTTP] = {EID_E_CLIENT_TRANSPORT, C_HTTP, T_HTTP, 0, 1},
    [EID_OUTCOME_TIMEOUT] = {EID_E_CLIENT_TRANSPORT, C_TIMEOUT, T_YES, 0, 0},
    [EID_OUTCOME_CONNECT] = {EID_E_CLIENT_TRANSPORT, C_CONNECT, T_YES, 1, 0},
    [EID_OUTCOME_RESET] = {EID_E_CLIENT_TRANSPORT, C_RESET, T_YES, 0, 0},
    [EID_OUTCOME_TLS] = {EID_E_CLIENT_TRANSPORT, C_TLS, T_NO, 1, 0},
    [EID_OUTCOME_TRUNCATED] = {EID_E_CLIENT_TRANSPORT, C_BAD_RESPONSE, T_YES, 0, 1},
    [EID_OUTCOME_TOO_BIG] = {EID_E_CLIENT_TRANSPORT, C_BAD_RESPONSE, T_NO, 0, 1},
    [EID_OUTCOME_RECV_NOMEM] = {EID_E_CLIENT_TRANSPORT, C_NOMEM, T_NO, 0, 0},
    [EID_OUTCOME_OTHER] = {EID_E_CLIENT_TRANSPORT, C_TRANSPORT, T_NO, 0, 0},
};

const char *eid_client_transport_code(size_t i) { return i < N_TRANSPORT ? code_names[i] : NULL; }

int eid_client_is_transport_code(const char *code) {
    if (code == NULL) return 0;
    for (size_t i = 0; i < N_TRANSPORT; i++)
        if (strcmp(code, code_names[i]) == 0) return 1;
    if (strncmp(code, EID_HTTP_CODE_PREFIX, HTTP_PREFIX_LEN) != 0) return 0;
    const char *d = code + HTTP_PREFIX_LEN;
    if (*d == '\0') return 0;
    for (; *d; d++)
        if (*d < '0' || *d > '9') return 0;
    return 1;
}

const char *eid__outcome_code(eid_outcome o) {
    if ((unsigned)o >= EID_OUTCOME_COUNT) return "";
    unsigned char c = rules_by_outcome[o].code;
    return c < C_NONE ? code_names[c] : "";
}

static int starts(const char *s, const char *prefix) {
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* Reads change nothing, so any transient failure may be retried. */
static const char *const reads[] = {"GetEidResult", "CheckEidTokenStatus", "GetWeChatBillDetails"};

int eid_client_is_read(const char *action) {
    if (action == NULL) return 0;
    for (size_t i = 0; i < sizeof reads / sizeof *reads; i++)
        if (strcmp(action, reads[i]) == 0) return 1;
    return 0;
}

/* Tencent codes that mean "the service did not do it; try again" (§4.4). */
static int code_transient(const char *code) {
    return starts(code, "RequestLimitExceeded") || starts(code, "InternalError") ||
           strcmp(code, "ServiceUnavailable") == 0 || starts(code, "ResourceUnavailable") ||
           strcmp(code, "ResourceInsufficient") == 0 || strcmp(code, "ResourceInUse") == 0 ||
           strcmp(code, "FailedOperation.UnKnown") == 0 ||
           strcmp(code, "FailedOperation.DbError") == 0;
}

static const char *const outcome_names[EID_OUTCOME_COUNT] = {
    [EID_OUTCOME_OK] = "ok",
    [EID_OUTCOME_REMOTE] = "remote",
    [EID_OUTCOME_MALFORMED] = "malformed",
    [EID_OUTCOME_NOMEM] = "nomem",
    [EID_OUTCOME_HTTP] = "http",
    [EID_OUTCOME_TIMEOUT] = "timeout",
    [EID_OUTCOME_CONNECT] = "connect",
    [EID_OUTCOME_RESET] = "reset",
    [EID_OUTCOME_TLS] = "tls",
    [EID_OUTCOME_TRUNCATED] = "truncated",
    [EID_OUTCOME_TOO_BIG] = "too_big",
    [EID_OUTCOME_RECV_NOMEM] = "recv_nomem",
    [EID_OUTCOME_OTHER] = "other",
};

const char *eid_outcome_name(eid_outcome o) {
    return (unsigned)o < EID_OUTCOME_COUNT ? outcome_names[o] : NULL;
}

/* 1 ms to spare: an attempt started that close to the deadline could not
 * finish before it. */
double eid_retry_delay(const eid_retry_facts *f, double wanted) {
    if (f == NULL || !(wanted >= 0) || wanted >= f->remaining - 0.001) return -1;
    return wanted;
}

static void stop(eid_retry_verdict *v, eid_status status) {
    memset(v, 0, sizeof *v);
    v->status = status;
    v->backoff = v->default_delay = v->delay = -1;
}

static eid_status refuse(eid_retry_verdict *v, eid_error *err, const char *field, const char *why) {
    if (v) stop(v, EID_E_INVALID_ARG);
    return eid__fail(err, EID_E_INVALID_ARG, field, "%s", why);
}

static int backoff_ok(double s) {
    return s == 0 || (s >= EID_RETRY_BACKOFF_MIN && s <= EID_RETRY_BACKOFF_LIMIT);
}

eid_status eid_retry_check_rules(const eid_retry_rules *r, eid_error *err) {
    if (r == NULL) return EID_OK;
    if (r->max_attempts < 0 || r->max_attempts > EID_RETRY_MAX_ATTEMPTS_LIMIT)
        return eid__fail(err, EID_E_INVALID_ARG, "max_attempts", "must be 1..%d (0: the default)",
                         EID_RETRY_MAX_ATTEMPTS_LIMIT);
    if (!backoff_ok(r->backoff_base))
        return eid__fail(err, EID_E_INVALID_ARG, "backoff_base",
                         "must be %g..%g seconds (0: the default)", EID_RETRY_BACKOFF_MIN,
                         EID_RETRY_BACKOFF_LIMIT);
    if (!backoff_ok(r->backoff_cap))
        return eid__fail(err, EID_E_INVALID_ARG, "backoff_cap",
                         "must be %g..%g seconds (0: the default)", EID_RETRY_BACKOFF_MIN,
                         EID_RETRY_BACKOFF_LIMIT);
    return EID_OK;
}

eid_status eid_retry_decide(const eid_retry_rules *rules, const eid_retry_facts *f,
                            eid_retry_verdict *v, eid_error *err) {
    static const eid_retry_rules defaults = {0};
    if (rules == NULL) rules = &defaults;
    if (v == NULL) return refuse(v, err, "verdict", "must not be NULL");
    if (f == NULL) return refuse(v, err, "facts", "must not be NULL");
    if (f->action == NULL) return refuse(v, err, "action", "must not be NULL");
    if (f->attempts < 1) return refuse(v, err, "attempts", "must be at least 1");
    if ((unsigned)f->outcome >= EID_OUTCOME_COUNT)
        return refuse(v, err, "outcome", "not an eid_outcome");
    if (!(f->jitter >= 0 && f->jitter < 1)) return refuse(v, err, "jitter", "must be in [0, 1)");
    if (eid_retry_check_rules(rules, err) != EID_OK) {
        stop(v, EID_E_INVALID_ARG);
        return EID_E_INVALID_ARG;
    }
    int max_attempts = rules->max_attempts ? rules->max_attempts : EID_RETRY_DEFAULT_MAX_ATTEMPTS;
    double base = rules->backoff_base > 0 ? rules->backoff_base : EID_RETRY_DEFAULT_BASE;
    double cap_max = rules->backoff_cap > 0 ? rules->backoff_cap : EID_RETRY_DEFAULT_CAP;

    const struct outcome_rule *o = &rules_by_outcome[f->outcome];
    const char *remote = f->remote_code ? f->remote_code : "";
    stop(v, o->status);
    v->sent = f->bytes_sent && !o->never_sent;
    /* A 200 body is Tencent's answer, and a GetEidResult's holds Name,
     * IdCard and EidInfo: cut short or unreadable, it still must not reach
     * an error that merchants log. Only another status's page is kept. */
    v->keep_received = o->error_body && f->http_status != 0 && f->http_status != 200;
    switch (o->code) {
    case C_NONE: break;
    case C_REMOTE: snprintf(v->code, sizeof v->code, "%s", remote); break;
    case C_HTTP:
        snprintf(v->code, sizeof v->code, EID_HTTP_CODE_PREFIX "%03ld", f->http_status);
        break;
    default: snprintf(v->code, sizeof v->code, "%s", code_names[o->code]); break;
    }
    switch (o->transient) {
    case T_YES: v->transient = 1; break;
    case T_TENCENT: v->transient = code_transient(remote); break;
    case T_HTTP: v->transient = f->http_status >= 500 || f->http_status == 429; break;
    default: v->transient = 0; break;
    }
    if (v->status == EID_OK) return EID_OK;
    /* The service refused the timestamp, so nothing was done: adopt its
     * clock and re-sign, once per call (also for GetEidToken). Without a
     * Date there is no clock to adopt. */
    if (f->outcome == EID_OUTCOME_REMOTE && !f->skew_retried && f->server_time > 0 &&
        strcmp(remote, "AuthFailure.SignatureExpire") == 0) {
        v->adopt_skew = 1;
        v->skew = f->server_time - f->local_time;
        if (f->remaining > 0.001) {
            v->resign = 1;
            v->delay = 0;
            return EID_OK;
        }
    }
    /* Non-reads (GetEidToken mints a token and has no ClientToken) are
     * repeated only when the request provably never arrived, or when the
     * service refused it for throttling. */
    int safe = rules->retry_unsafe || !v->sent || eid_client_is_read(f->action) ||
               (f->outcome == EID_OUTCOME_REMOTE && starts(remote, "RequestLimitExceeded"));
    v->retryable = v->transient && safe;
    if (v->status == EID_E_NOMEM) return EID_OK; /* nothing to ask: stop */
    v->ask_policy = 1;
    if (v->retryable && f->attempts < max_attempts) {
        /* Full jitter: uniform(0, min(cap, base * 2^(attempts-1))). */
        double cap = base;
        for (int i = 1; i < f->attempts && cap < cap_max; i++)
            cap *= 2;
        v->backoff = cap > cap_max ? cap_max : cap;
        v->default_delay = f->jitter * v->backoff;
        v->delay = eid_retry_delay(f, v->default_delay);
    }
    return EID_OK;
}
