/*
 * eidkit/client.h -- the FaceID API client: libcurl transport, TC3 signing
 * of every attempt, envelope parsing, per-action retries inside a deadline,
 * clock-skew correction, and many calls at once on one thread.
 *
 * Conventions are those of eidkit.h. In addition:
 *   - A client is NOT thread-safe: use one client per thread (clients do not
 *     share state). eid_client_global_init is thread-safe.
 *   - Every call ends in an eid_result the caller owns and frees with
 *     eid_result_free. A result never contains secrets, Authorization or
 *     request bodies.
 *   - Callbacks (logger, retry policy) run on the calling thread from inside
 *     eid_client_call / eid_client_perform, never from inside a libcurl
 *     callback, so a host may run its own interpreter there. They must not
 *     call back into the same client.
 * See docs/internals/client.md for the retry and clock-skew rules.
 */
#ifndef EIDKIT_CLIENT_H
#define EIDKIT_CLIENT_H

#include "eidkit/eidkit.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct eid_client eid_client;

/* Largest Error.Code / message / RequestId kept in a result, NUL included. */
#define EID_CODE_MAX       96
#define EID_MESSAGE_MAX    512
#define EID_REQUEST_ID_MAX 80
#define EID_RECEIVED_MAX   512 /* bytes of a non-200 body kept for the error */
#define EID_TRACE_ID_MAX   64

/* One finished call. */
typedef struct eid_result {
    /* EID_OK: Response without Error. EID_E_CLIENT_REMOTE: Tencent answered
     * with Error.Code. EID_E_CLIENT_TRANSPORT: no usable answer (code says
     * which: a transport code, see eid_client_transport_code, or
     * "transport" for a libcurl failure none of them names, or "nomem").
     * EID_E_INVALID_ARG / EID_E_NOMEM / EID_E_CRYPTO: the call could not be
     * signed or sent at all. */
    eid_status status;
    char code[EID_CODE_MAX];             /* "" on success */
    char message[EID_MESSAGE_MAX];       /* "" on success; never a secret */
    char request_id[EID_REQUEST_ID_MAX]; /* Response.RequestId, "" when none */
    char trace_id[EID_TRACE_ID_MAX];     /* X-TC-TraceId sent with every attempt */
    long http_status;                    /* of the last attempt; 0 when none */
    int attempts;                        /* attempts made, >= 1 unless never sent */
    int retryable;                       /* the last failure was transient */
    double elapsed;                      /* seconds, all attempts and waits */
    /* The Response object as compact JSON text (NUL-terminated), for
     * EID_OK and EID_E_CLIENT_REMOTE; NULL otherwise. */
    char *response;
    size_t response_len;
    /* The first bytes (at most EID_RECEIVED_MAX, NUL-terminated) of an
     * answer whose HTTP status is not 200: http_NNN, or bad_response for such
     * a body cut short or too large (a proxy's or load balancer's page, which
     * says what went wrong). NULL otherwise, and always for a 200 body, even
     * a truncated or unreadable one: Tencent answers with 200, and a
     * GetEidResult's body holds Name, IdCard and EidInfo, which must not
     * reach errors that get logged. The message still gives the size. */
    char *received;
    size_t received_len;
    /* 1 when an attempt may have reached the server: for a call that is not
     * a read (GetEidToken), its effect may have happened even though the
     * call failed. 0 when no attempt provably got there. */
    int sent;
} eid_result;

/* Frees r and what it owns. NULL is a no-op. Thread-safe. */
EID_API void eid_result_free(eid_result *r);

/* What the logger receives after each attempt and on a clock correction.
 * Strings are valid only during the callback. No secrets, no bodies, no
 * Authorization, no Name/IdCard: only what is listed here. */
typedef struct eid_client_event {
    const char *level;      /* "info", "warn" */
    const char *event;      /* "attempt", "skew" */
    const char *action;     /* e.g. "GetEidResult" */
    const char *trace_id;   /* X-TC-TraceId */
    int attempts;           /* attempts made so far, this one included */
    double duration;        /* seconds, this attempt */
    const char *code;       /* "" on success */
    long http_status;       /* 0 when none */
    const char *request_id; /* "" when none */
    double retry_delay;     /* seconds until the next attempt; < 0: no retry */
    int64_t skew;           /* seconds the server's clock is ahead of ours */
} eid_client_event;
typedef void (*eid_client_log_fn)(void *ud, const eid_client_event *ev);

/* What the retry policy sees after a failed attempt. */
typedef struct eid_retry_info {
    const char *action;
    const char *code; /* as in eid_result.code */
    long http_status;
    int attempts;         /* attempts made so far, the one that just failed included */
    int retryable;        /* the default classification (§4.4 and the action) */
    int sent;             /* 0 when the request provably never reached the server */
    double default_delay; /* seconds the default policy would wait; < 0: no retry */
    double remaining;     /* seconds left before the deadline */
} eid_retry_info;
/* Return the delay in seconds before the next attempt, or a negative number
 * to stop. The deadline still applies: a delay that overruns it stops. */
typedef double (*eid_client_retry_fn)(void *ud, const eid_retry_info *info);

/* Options; zero-initialise, then set what you need. Strings are copied. */
typedef struct eid_client_options {
    /* The defaults of endpoint and of the numeric fields come from
     * eid_client_default_endpoint and eid_client_option (values shown). */
    const char *endpoint;    /* NULL: "https://faceid.tencentcloudapi.com" */
    const char *service;     /* NULL: eid_client_default_service() (credential scope) */
    const char *version;     /* NULL: "2018-03-01" */
    const char *region;      /* NULL: no X-TC-Region */
    const char *language;    /* NULL: no X-TC-Language */
    long connect_timeout_ms; /* 0: 2000 */
    long timeout_ms;         /* per attempt; 0: 10000 */
    long deadline_ms;        /* all attempts and waits of one call; 0: 30000 */
    const char *proxy;       /* NULL: libcurl's usual env vars; "": none */
    const char *ca_file;     /* NULL: the system store */
    int insecure;            /* non-zero: do not verify TLS peers (tests only) */
    /* Extra "Name: value" headers. Signed or computed ones (Authorization,
     * Host, Content-Type, X-TC-Action/Version/Timestamp/Region/Token/Language,
     * X-TC-RequestClient) are refused; X-TC-TraceId replaces the generated
     * one. */
    const char *const *headers;
    size_t header_count;
    size_t max_response; /* bytes; 0: 16 MiB. Larger answers are bad_response */
    /* Requests on the wire at once (one connection each); later calls wait
     * their turn, their deadline running. 0: 256. libcurl 7.88 scans a
     * host's connections for every transfer, so beyond a few hundred per
     * host the client spends more CPU than it gains (bench/client), and
     * Tencent's per-action QPS limits make more pointless. */
    size_t max_in_flight;
    eid_clock clock; /* signing time; NULL now: time(2) */
    /* Default retry policy: attempts in all, and the full-jitter backoff
     * delay = uniform(0, min(cap, base * 2^(attempt-1))). */
    int max_attempts;     /* 0: 4 */
    long backoff_base_ms; /* 0: 100 */
    long backoff_cap_ms;  /* 0: 2000 */
    int retry_unsafe;     /* non-zero: retry GetEidToken (and unknown
                             actions) like reads, even after a send */
    /* Non-zero: a 200 answer shaped {"Response": {...}} with no "Error" key
     * anywhere is taken as a success without a full JSON parse (request_id
     * stays ""); the caller must parse response itself and treat a failure
     * as bad_response. The Lua binding sets it and decodes with lua-cjson,
     * which saves the C parse on the hot path. 0: every answer is
     * parsed (cJSON) before it is returned. */
    int defer_parse;
    eid_client_retry_fn retry; /* NULL: the default policy */
    void *retry_ud;
    eid_client_log_fn logger; /* NULL: no events */
    void *logger_ud;
} eid_client_options;

/* libcurl's process-wide initialisation, once; eid_client_new calls it.
 * Thread-safe (pthread_once). Returns EID_E_INTERNAL if libcurl fails. */
EID_API eid_status eid_client_global_init(void);

/* Create a client. opts may be NULL. On failure *out is NULL and err (may be
 * NULL) names the bad option. Free with eid_client_free. */
EID_API eid_status eid_client_new(const eid_client_options *opts, eid_client **out, eid_error *err);

/* Abort every pending call (their results are dropped), close connections,
 * wipe credentials, free. NULL is a no-op. */
EID_API void eid_client_free(eid_client *c);

/* Set the credentials used to sign later attempts; copied, the old ones
 * wiped. token may be NULL. */
EID_API eid_status eid_client_set_credentials(eid_client *c, const char *secret_id,
                                              const void *secret_key, size_t secret_key_len,
                                              const char *token, eid_error *err);

/* Call action with a JSON object body (exact bytes sent) and wait for the
 * outcome, retries included. *out receives a result to free with
 * eid_result_free, also when the call failed; the return value is
 * (*out)->status. Only EID_E_NOMEM / EID_E_INVALID_ARG (bad arguments) leave
 * *out NULL. Other calls submitted on this client progress meanwhile. */
EID_API eid_status eid_client_call(eid_client *c, const char *action, const void *body,
                                   size_t body_len, eid_result **out, eid_error *err);

/* Submit a call to run concurrently; ud comes back with its result from
 * eid_client_next. body is copied. */
EID_API eid_status eid_client_submit(eid_client *c, const char *action, const void *body,
                                     size_t body_len, void *ud, eid_error *err);

/* What eid_client_submit and eid_client_call refuse before anything is
 * queued (EID_E_INVALID_ARG naming the field): an action that is not 1 to
 * EID_FIELD_MAX letters and digits, a NULL body with a length, a body over
 * 10 MB. EID_OK otherwise. For a host that queues calls for a client on
 * another thread and must refuse the same ones at once. Thread-safe. */
EID_API eid_status eid_client_check_call(const char *action, const void *body, size_t body_len,
                                         eid_error *err);

/* Drive submitted calls for at most timeout_ms (0: do not wait, but handle
 * every socket that is ready) or until a call has finished. Returns the
 * number of calls still unfinished (not counting those waiting in
 * eid_client_next). */
EID_API size_t eid_client_perform(eid_client *c, long timeout_ms);

/* Take one finished call: 1 with *ud and *out (caller frees), or 0 if none. */
EID_API int eid_client_next(eid_client *c, void **ud, eid_result **out);

/* For a host's own event loop: the client's epoll descriptor, readable when
 * one of its sockets is. Wait on it (with poll/epoll, or add it to your own
 * epoll set) for at most eid_client_timeout() ms, then call
 * eid_client_perform(c, 0) and take results with eid_client_next. The
 * descriptor belongs to the client: never read or close it. -1 for NULL.
 * Not thread-safe with calls on c. */
EID_API int eid_client_fd(const eid_client *c);

/* Milliseconds until the client needs eid_client_perform(c, 0) even if its
 * descriptor stays quiet (curl's timer, a retry's backoff, a call not yet
 * started, a safety net four times a second while transfers run); 0 when a
 * finished call waits in eid_client_next; -1 when nothing is submitted.
 * NULL: -1. Not thread-safe with calls on c. */
EID_API long eid_client_timeout(const eid_client *c);

/* The server clock's offset from ours (seconds, server minus local) that the
 * client adopted after AuthFailure.SignatureExpire; 0 until then. */
EID_API int64_t eid_client_skew(const eid_client *c);

/* Set the offset used to sign (seconds, server minus local), as if adopted
 * from the server: for tests that move a simulator's clock, and for hosts
 * that know the server's clock from elsewhere. Later SignatureExpire
 * answers still re-adopt it. NULL c: no-op. Not thread-safe with calls on c. */
EID_API void eid_client_set_skew(eid_client *c, int64_t skew);

/* Counters since creation: requests sent, connections opened. */
EID_API void eid_client_stats(const eid_client *c, uint64_t *requests, uint64_t *connects);

/* The transport codes: the eid_result.code values (and Lua err.code) that
 * say no usable answer came from the server, whatever the action:
 *   "timeout"       the attempt or the call's deadline ran out
 *   "connect"       refused, DNS or proxy DNS; nothing was sent
 *   "reset"         the connection broke before any answer
 *   "tls"           certificate, CA file or handshake; nothing was sent
 *   "bad_response"  an answer cut short, too large, or not Tencent's envelope
 * and EID_HTTP_CODE_PREFIX with the status in three or more digits
 * ("http_503"): an HTTP status other than 200.
 * eid_client_transport_code(i) returns the i-th name of the list above, in
 * that order, and NULL for i past its end; the strings are static. The same
 * table names the codes of results, so the list and the client agree.
 * Thread-safe. */
#define EID_HTTP_CODE_PREFIX "http_"
EID_API const char *eid_client_transport_code(size_t i);

/* 1 when code (NUL-terminated) is a transport code: a name of the list above,
 * or "http_" followed by decimal digits only. 0 otherwise, and for NULL.
 * Thread-safe. */
EID_API int eid_client_is_transport_code(const char *code);

/* ----------------------------------------------- the options' one source
 * eidkit has two clients with the same options: this one (eidkit.client on
 * the Lua 5.4 host) and eidkit.openresty.client, which sends through nginx
 * and reads these rules through the LuaJIT FFI. Each rule below is written
 * once, in libeidkit, and both clients apply it, so they cannot disagree.
 *
 * One numeric option, as the Lua options of both clients take it: name,
 * unit ("s": a number of seconds; "bytes": an integer), the value applied
 * when the option is not given, and the range accepted, both ends included.
 * eid_client_new applies def (in ms for seconds) to a zero field of
 * eid_client_options; the ranges are the Lua options' (eid_client_new
 * itself refuses only negative timeouts). */
typedef struct eid_client_option_spec {
    const char *name; /* "connect_timeout", "timeout", "deadline", "max_response" */
    const char *unit; /* "s" or "bytes" */
    double def;
    double min;
    double max;
} eid_client_option_spec;

/* The i-th numeric option (connect_timeout, timeout, deadline,
 * max_response, in that order), or NULL for i past the last. Static
 * storage, never freed. Thread-safe. */
EID_API const eid_client_option_spec *eid_client_option(size_t i);

/* The endpoint used when eid_client_options.endpoint is NULL
 * ("https://faceid.tencentcloudapi.com"). Static. Thread-safe. */
EID_API const char *eid_client_default_endpoint(void);

/* The service in the credential scope when eid_client_options.service is
 * NULL ("faceid"), for the C client and eidkit.openresty.client alike.
 * Static. Thread-safe. */
EID_API const char *eid_client_default_service(void);

/* 1 when action (NUL-terminated) is a read, an action that changes nothing
 * on the server (GetEidResult, CheckEidTokenStatus, GetWeChatBillDetails):
 * its transient failures are retried even after a send, and it may reuse a
 * pooled connection. Anything else (GetEidToken mints a token) gets a fresh
 * connection, and is retried after a send only with retry_unsafe. 0 for
 * NULL. Thread-safe. */
EID_API int eid_client_is_read(const char *action);

/* The X-TC-TraceId of a call: a UUID v4-shaped id made of a 16-byte random
 * seed plus counter (added to its last 8 bytes), written NUL-terminated to
 * out (36 characters). Unique per seed and counter, unpredictable without the
 * seed, and no random draw per call. What the C client sends (its seed is
 * drawn once per client) and what eidkit.openresty.client sends (once per
 * worker). Thread-safe. */
EID_API void eid_trace_id(const unsigned char seed[16], uint64_t counter,
                          char out[EID_TRACE_ID_MAX]);

/* ---------------------------------------------------- the three E证通 calls
 * Typed forms of eid_client_call: the body is built with cJSON (so values
 * are escaped), fields left NULL are omitted, and the outcome is as for
 * eid_client_call. A missing required field, or a field that is not UTF-8,
 * is EID_E_INVALID_ARG naming it (err->field), with *out left NULL; out of
 * memory building the body is EID_E_NOMEM, except while parsing config_json,
 * where cJSON cannot tell it from bad syntax: both are "Config". */

typedef struct eid_get_eid_token_params {
    const char *merchant_id;  /* MerchantId, required */
    const char *name;         /* Name; give with id_card, or neither */
    const char *id_card;      /* IdCard */
    const char *extra;        /* Extra */
    const char *redirect_url; /* RedirectUrl */
    const char *config_json;  /* Config as a JSON object text, e.g. {"InputType":"4"} */
} eid_get_eid_token_params;

EID_API eid_status eid_client_get_eid_token(eid_client *c, const eid_get_eid_token_params *p,
                                            eid_result **out, eid_error *err);

/* info_type NULL: omitted (Tencent's default "0"); best_frames_count < 0:
 * omitted. */
EID_API eid_status eid_client_get_eid_result(eid_client *c, const char *eid_token,
                                             const char *info_type, int best_frames_count,
                                             eid_result **out, eid_error *err);

EID_API eid_status eid_client_check_eid_token_status(eid_client *c, const char *eid_token,
                                                     eid_result **out, eid_error *err);

/* A plain, unsigned GET of url (http or https) with a total timeout, for
 * credential sources such as the CVM metadata service. At most max bytes of
 * body are accepted (more is EID_E_CLIENT_TRANSPORT, "bad_response").
 * On EID_OK *body (NUL-terminated, free with free()) and *status are set,
 * whatever the HTTP status. On failure err->field is the error code
 * ("timeout", "connect", ...) and err->message the detail. Thread-safe. */
EID_API eid_status eid_http_get(const char *url, long timeout_ms, size_t max, char **body,
                                size_t *body_len, long *status, eid_error *err);

/* eid_http_get with a method ("GET", "POST", "PUT", "DELETE", ...; letters
 * only) and an optional body (req may be NULL when req_len is 0), sent as
 * application/json. Never through a proxy: it serves local services (the
 * metadata service, a simulator's control API). Same results and errors as
 * eid_http_get. Thread-safe. */
EID_API eid_status eid_http_request(const char *method, const char *url, const void *req,
                                    size_t req_len, long timeout_ms, size_t max, char **body,
                                    size_t *body_len, long *status, eid_error *err);

#ifdef __cplusplus
}
#endif

#endif /* EIDKIT_CLIENT_H */
