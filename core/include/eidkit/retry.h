/*
 * eidkit/retry.h -- the API client's retry decision as one pure function.
 *
 * After each attempt of a call, a transport (eidkit's libcurl client, the
 * OpenResty client in lua/eidkit/openresty/client.lua) describes what
 * happened in an eid_retry_facts and asks eid_retry_decide what it came to:
 * the status and code of the attempt, whether it may have reached the
 * server, whether to adopt the server's clock and re-sign at once, and how
 * long to wait before the next attempt (full jitter inside the deadline), or
 * to stop. Every transport uses this function, so the rules have one source;
 * they are explained in docs/internals/client.md.
 *
 * Conventions are those of eidkit.h. In addition, every function here is
 * pure: no I/O, no clock, no randomness (the caller draws the jitter), no
 * allocation, no global state. So they are thread-safe, and cheap to call
 * through the LuaJIT FFI (plain structs, no callbacks).
 */
#ifndef EIDKIT_RETRY_H
#define EIDKIT_RETRY_H

#include "eidkit/client.h"

#ifdef __cplusplus
extern "C" {
#endif

/* What one attempt came to, in terms no transport owns; libcurl's results
 * map onto these (core/src/client.c), and so do nginx's. Values are never
 * renumbered. eid_outcome_name gives each a short name for bindings. */
typedef enum eid_outcome {
    EID_OUTCOME_OK = 0,          /* 200, a Response without Error */
    EID_OUTCOME_REMOTE = 1,      /* 200, Response.Error.Code (facts.remote_code) */
    EID_OUTCOME_MALFORMED = 2,   /* 200, but not a usable envelope */
    EID_OUTCOME_NOMEM = 3,       /* 200, out of memory keeping the Response */
    EID_OUTCOME_HTTP = 4,        /* any other HTTP status (facts.http_status) */
    EID_OUTCOME_TIMEOUT = 5,     /* the attempt ran out of time (facts.bytes_sent says when) */
    EID_OUTCOME_CONNECT = 6,     /* refused, DNS, proxy DNS: nothing was sent */
    EID_OUTCOME_RESET = 7,       /* the connection broke, nothing received */
    EID_OUTCOME_TLS = 8,         /* certificate, CA file, handshake: nothing was sent */
    EID_OUTCOME_TRUNCATED = 9,   /* the body was cut short */
    EID_OUTCOME_TOO_BIG = 10,    /* the answer passed max_response */
    EID_OUTCOME_RECV_NOMEM = 11, /* out of memory receiving the answer */
    EID_OUTCOME_OTHER = 12,      /* a transport failure that fits none of these */
    EID_OUTCOME_COUNT = 13
} eid_outcome;

/* The defaults a zero field of eid_retry_rules stands for; the same as
 * eid_client_options' (max_attempts, backoff_base_ms, backoff_cap_ms). */
#define EID_RETRY_DEFAULT_MAX_ATTEMPTS 4
#define EID_RETRY_DEFAULT_BASE         0.1 /* seconds */
#define EID_RETRY_DEFAULT_CAP          2.0 /* seconds */

/* The range of a non-zero rule: eid_retry_check_rules refuses what is
 * outside, and so eid_retry_decide, eid_client_new and both API clients'
 * `retry` options do (the Lua 5.4 binding takes its ranges from here). */
#define EID_RETRY_MAX_ATTEMPTS_LIMIT 100    /* max_attempts 1..100 */
#define EID_RETRY_BACKOFF_MIN        0.001  /* seconds */
#define EID_RETRY_BACKOFF_LIMIT      3600.0 /* seconds */

/* The default policy's settings. Zero-initialise for the defaults above. */
typedef struct eid_retry_rules {
    int max_attempts;    /* attempts in all; 0: EID_RETRY_DEFAULT_MAX_ATTEMPTS */
    int retry_unsafe;    /* non-zero: retry non-reads (GetEidToken) like reads */
    double backoff_base; /* seconds; 0: EID_RETRY_DEFAULT_BASE */
    double backoff_cap;  /* seconds; 0: EID_RETRY_DEFAULT_CAP */
} eid_retry_rules;

/* EID_OK when each field of rules is 0 (its default) or in its range above;
 * else EID_E_INVALID_ARG naming the field ("max_attempts", "backoff_base"
 * or "backoff_cap") in *err (may be NULL). NULL rules are the defaults.
 * Thread-safe. */
EID_API eid_status eid_retry_check_rules(const eid_retry_rules *rules, eid_error *err);

/* The facts of one attempt, as a transport saw them. Strings are read only
 * during the call. */
typedef struct eid_retry_facts {
    const char *action;      /* e.g. "GetEidToken"; required */
    int attempts;            /* attempts made, this one included (>= 1) */
    eid_outcome outcome;     /* what happened */
    int bytes_sent;          /* non-zero: a request byte may have gone out */
    long http_status;        /* the answer's status, 0 when none: names EID_OUTCOME_HTTP's
                                code and decides keep_received */
    const char *remote_code; /* Error.Code, for EID_OUTCOME_REMOTE; NULL: "" */
    int skew_retried;        /* this call already adopted the server's clock */
    double remaining;        /* seconds left before the call's deadline, now */
    int64_t server_time;     /* the answer's Date in Unix seconds; 0: none */
    int64_t local_time;      /* the signing clock (without any skew) now, Unix seconds */
    double jitter;           /* uniform in [0, 1), drawn by the caller */
} eid_retry_facts;

/* What the rules make of an attempt. */
typedef struct eid_retry_verdict {
    eid_status status;       /* of the attempt: EID_OK, EID_E_CLIENT_REMOTE, ... */
    char code[EID_CODE_MAX]; /* as in eid_result.code; "" on success */
    int transient;           /* a failure that may pass (§4.4, 5xx, 429, resets, ...) */
    int sent;                /* 0 when the request provably never reached the server */
    int retryable;           /* transient, and safe to repeat for this action */
    int adopt_skew;          /* AuthFailure.SignatureExpire with a Date, first time in
                                this call: adopt skew as the clock offset */
    int64_t skew;            /* server_time - local_time, when adopt_skew; else 0 */
    int resign;              /* adopt_skew and time remains: attempt again at once,
                                re-signed; a caller's policy is not asked */
    int ask_policy;          /* a failure a caller-supplied retry policy decides on (its
                                answer goes through eid_retry_delay); 0 for success,
                                resign and running out of memory */
    double backoff;          /* the full-jitter ceiling: min(cap, base * 2^(attempts-1));
                                < 0: the default policy does not retry */
    double default_delay;    /* jitter * backoff; < 0 when backoff is */
    double delay;            /* the decision without a policy: >= 0 attempt again after
                                that many seconds (0 with resign); < 0 stop */
    int keep_received;       /* the answer's first bytes may go into the error
                                (eid_result.received): only for EID_OUTCOME_HTTP, _TRUNCATED
                                and _TOO_BIG with an http_status other than 0 and 200, that
                                is a proxy's or load balancer's page. A 200 body, whole or
                                cut short, may be a GetEidResult carrying Name, IdCard and
                                EidInfo, and errors get logged; Tencent's own envelope never
                                comes with another status. */
} eid_retry_verdict;

/* Decide on one attempt. rules may be NULL (the defaults). On EID_OK *v is
 * filled in whole. EID_E_INVALID_ARG when f or v is NULL, f->action is NULL,
 * f->attempts < 1, f->outcome is not an eid_outcome, f->jitter is outside
 * [0, 1), or a rule is negative; err (may be NULL) names the field, and v
 * (when not NULL) says stop (status EID_E_INVALID_ARG, every delay -1).
 * Pure and thread-safe. */
EID_API eid_status eid_retry_decide(const eid_retry_rules *rules, const eid_retry_facts *f,
                                    eid_retry_verdict *v, eid_error *err);

/* The deadline rule: a wanted delay (a policy's answer, or the default) is
 * kept when it is >= 0 and ends at least 1 ms before the deadline
 * (f->remaining); otherwise -1 (stop). f NULL: -1. Pure and thread-safe. */
EID_API double eid_retry_delay(const eid_retry_facts *f, double wanted);

/* The short name of an outcome ("ok", "remote", "malformed", "nomem",
 * "http", "timeout", "connect", "reset", "tls", "truncated", "too_big",
 * "recv_nomem", "other"), static; NULL past EID_OUTCOME_COUNT. Bindings map
 * names to values with it. Thread-safe. */
EID_API const char *eid_outcome_name(eid_outcome o);

#ifdef __cplusplus
}
#endif

#endif /* EIDKIT_RETRY_H */
