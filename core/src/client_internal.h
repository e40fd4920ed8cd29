/* Declarations shared by the API client's files; not installed.
 *   client.c    the signed client: options, the curl multi/epoll loop, submit/call
 *   envelope.c  reading Tencent's answer envelope (cJSON)
 *   retry.c     what an attempt came to and whether to try again (pure)
 *   calls.c     the typed calls (GetEidToken, GetEidResult, CheckEidTokenStatus)
 *   http.c      the plain, unsigned HTTP helper (eid_http_get / eid_http_request)
 * Design notes: docs/internals/client.md. */
#ifndef EIDKIT_CLIENT_INTERNAL_H
#define EIDKIT_CLIENT_INTERNAL_H

#include "eidkit/client.h"

#include "internal.h"

#include <stddef.h>

/* ------------------------------------------------------------ buffers */

/* A growing byte buffer, kept NUL-terminated once anything is in it. */
typedef struct eid_buf {
    char *p;
    size_t len, cap;
} eid_buf;

/* Append len bytes to b unless that would pass max bytes in all (then
 * *too_big is set). 1 on success, 0 when refused or out of memory. */
int eid__buf_append(eid_buf *b, const char *data, size_t len, size_t max, int *too_big);

/* Printf into a fixed field, truncating. */
void eid__setf(char *dst, size_t cap, const char *fmt, ...) EID_PRINTF(3, 4);

/* ------------------------------------------------------------ outcomes */

/* What one attempt came to, in terms no transport owns: libcurl's result
 * codes map onto these (client.c), and so can another transport's errors.
 * Values are internal and may change. */
typedef enum eid_outcome {
    EID_OUTCOME_OK,         /* 200, a Response without Error */
    EID_OUTCOME_REMOTE,     /* 200, Response.Error.Code (facts.remote_code) */
    EID_OUTCOME_MALFORMED,  /* 200, but not a usable envelope */
    EID_OUTCOME_NOMEM,      /* 200, out of memory keeping the Response */
    EID_OUTCOME_HTTP,       /* any other HTTP status (facts.http_status) */
    EID_OUTCOME_TIMEOUT,    /* the attempt ran out of time */
    EID_OUTCOME_CONNECT,    /* refused, DNS, proxy DNS: nothing was sent */
    EID_OUTCOME_RESET,      /* the connection broke, nothing received */
    EID_OUTCOME_TLS,        /* certificate, CA file, handshake: nothing was sent */
    EID_OUTCOME_TRUNCATED,  /* the body was cut short */
    EID_OUTCOME_TOO_BIG,    /* the answer passed max_response */
    EID_OUTCOME_RECV_NOMEM, /* out of memory receiving the answer */
    EID_OUTCOME_OTHER,      /* a transport failure that fits none of these */
    EID_OUTCOME_COUNT
} eid_outcome;

/* The code an outcome reports ("timeout", "bad_response", "transport", ...);
 * "" for EID_OUTCOME_OK, and for REMOTE and HTTP, whose codes depend on the
 * answer (see eid__retry_decide). The names come from the same table as
 * eid_client_transport_code. */
const char *eid__outcome_code(eid_outcome o);

/* ------------------------------------------------------------ retries */

/* The default retry policy's settings (from eid_client_options). */
typedef struct eid_retry_rules {
    int max_attempts;    /* attempts in all */
    int retry_unsafe;    /* retry non-reads like reads */
    double backoff_base; /* seconds */
    double backoff_cap;  /* seconds */
} eid_retry_rules;

/* The facts of one attempt, as a transport saw them. */
typedef struct eid_attempt_facts {
    const char *action;      /* e.g. "GetEidToken" */
    int attempts;            /* attempts made, this one included (>= 1) */
    eid_outcome outcome;     /* what happened */
    int bytes_sent;          /* any request byte went out */
    long http_status;        /* for EID_OUTCOME_HTTP */
    const char *remote_code; /* Error.Code, for EID_OUTCOME_REMOTE */
    int skew_retried;        /* this call already adopted the server's clock */
} eid_attempt_facts;

/* What the rules make of an attempt. */
typedef struct eid_attempt_verdict {
    eid_status status;       /* of the attempt */
    char code[EID_CODE_MAX]; /* as in eid_result.code; "" on success */
    int transient;           /* a failure that may pass (§4.4, 5xx, 429, resets, ...) */
    int sent;                /* 0 when the request provably never reached the server */
    int retryable;           /* transient, and safe to repeat for this action */
    int adopt_skew;          /* AuthFailure.SignatureExpire, first time in this call:
                                adopt the answer's Date as the clock and retry at once */
    double backoff;          /* the default delay is uniform(0, backoff) seconds;
                                < 0: the default policy stops */
} eid_attempt_verdict;

/* Classify an attempt and decide the default retry. Pure: no I/O, no
 * clock, no randomness, no allocation; v is filled in whole. Thread-safe. */
/* Actions that change nothing on the server (any transient failure may be
 * retried, and a connection may be reused for them). */
int eid__is_read(const char *action);

void eid__retry_decide(const eid_retry_rules *rules, const eid_attempt_facts *f,
                       eid_attempt_verdict *v);

/* ------------------------------------------------------------ envelope */

/* Read the body of a 200 answer into r: request_id, message, the code for
 * EID_OUTCOME_REMOTE, the Response text (EID_OUTCOME_OK and _REMOTE) or the
 * first bytes received (EID_OUTCOME_MALFORMED). status and the other codes
 * are eid__retry_decide's. With defer_parse, a body shaped {"Response": {...}}
 * with no "Error" key anywhere is taken unparsed (request_id stays ""). body
 * may be NULL when len is 0. */
eid_outcome eid__envelope_read(const char *body, size_t len, int defer_parse, eid_result *r);

/* Keep at most EID_RECEIVED_MAX bytes of body in r->received (on failure to
 * allocate, none). */
void eid__result_keep_received(eid_result *r, const char *body, size_t len);

#endif
