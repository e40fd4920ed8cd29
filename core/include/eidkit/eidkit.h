/*
 * eidkit -- merchant-side toolkit for Tencent Cloud FaceID E证通 (eID).
 *
 * This header is the contract of libeidkit. Conventions, for every function:
 *   - Functions return an eid_status; EID_OK is 0. Values are never renumbered.
 *   - Strings are NUL-terminated UTF-8 unless a length is passed beside them.
 *     Byte data (bodies, secrets) is pointer + length.
 *   - Output goes to caller-supplied buffers or structs; nothing returned needs
 *     freeing unless the function says so. *_free(NULL) is a no-op.
 *   - An optional eid_error* receives the failing field and a message. Messages
 *     name what was wrong, never the value of a secret.
 *   - No function aborts or exits the process; there is no global mutable state.
 *
 * The ABI is plain C (no varargs, no callbacks on the hot path, fixed-size
 * structs) so that a LuaJIT FFI binding can call it as well as the Lua 5.4
 * module in bindings/.
 */
#ifndef EIDKIT_H
#define EIDKIT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(EIDKIT_BUILDING) && defined(__GNUC__)
#define EID_API __attribute__((visibility("default")))
#else
#define EID_API
#endif

#define EIDKIT_VERSION_MAJOR 0
#define EIDKIT_VERSION_MINOR 1
#define EIDKIT_VERSION_PATCH 0
#define EIDKIT_VERSION       "0.1.0"

/* ---------------------------------------------------------------- status */

typedef enum eid_status {
    EID_OK = 0,
    EID_E_INVALID_ARG = 1,      /* a request field is missing or malformed */
    EID_E_NOMEM = 2,            /* an allocation failed; nothing was changed */
    EID_E_BUFFER_TOO_SMALL = 3, /* a caller buffer is short; *_len says how long */
    EID_E_CRYPTO = 4,           /* OpenSSL refused an operation */
    EID_E_INTERNAL = 5,         /* a bug in eidkit: please report it */
    /* Ledger refusals and failures (eidkit/ledger.h). */
    EID_E_LEDGER_UNKNOWN = 6,       /* no such token in the ledger */
    EID_E_LEDGER_WRONG_SUBJECT = 7, /* the token is bound to another subject */
    EID_E_LEDGER_EXPIRED = 8,       /* the token's TTL or result window is over */
    EID_E_LEDGER_CONSUMED = 9,      /* the token was already consumed */
    EID_E_LEDGER_EXISTS = 10,       /* the token was already issued */
    EID_E_LEDGER_PENDING = 11,      /* no verdict yet: the result was not recorded */
    EID_E_LEDGER_UNAVAILABLE = 12,  /* the backend cannot be reached; nothing was changed */
    EID_E_LEDGER_STORAGE = 13,      /* the backend refused a write (disk full, read-only) */
    /* API client failures (eidkit/client.h); eid_result.code says which. */
    EID_E_CLIENT_TRANSPORT = 14, /* no usable answer: timeout, connection, TLS, HTTP, body */
    EID_E_CLIENT_REMOTE = 15,    /* the service answered with Response.Error */
    /* Identity crypto (eidkit/crypto.h). */
    EID_E_KEY = 16,     /* a key that cannot be read, or of the wrong type or half */
    EID_E_DECRYPT = 17, /* authentication failed: wrong key, bad tag, tampered ciphertext */
    EID_E_FORMAT = 18   /* encrypted input of the wrong shape: base64, length, layout, JSON */
} eid_status;

/* Static English text for a status; never NULL, also for unknown values.
 * Thread-safe. */
EID_API const char *eid_strerror(eid_status status);

/* The short code for a status that the Lua bindings put in err.code:
 * "ok", "invalid", "nomem", "buffer_too_small", "crypto", "internal",
 * "unknown_token", "wrong_subject", "expired", "consumed", "exists",
 * "pending", "unavailable", "storage", "transport", "remote", "key",
 * "decrypt", "format"; "unknown" for
 * a value outside the enum. A static string, never NULL; codes, like the
 * values, are never changed once published. Thread-safe. */
EID_API const char *eid_status_code(eid_status status);

/* The library's version string, e.g. "0.1.0". Thread-safe. */
EID_API const char *eid_version(void);

/* The OpenSSL version libeidkit runs with, e.g. "OpenSSL 3.0.11 19 Sep 2023".
 * Thread-safe. */
EID_API const char *eid_crypto_version(void);

/* Detail for a failed call. Fill is best effort: on success it is untouched. */
typedef struct eid_error {
    eid_status status;
    char field[32];    /* the request field at fault, "" when none */
    char message[224]; /* "field: what is wrong"; never contains secrets */
} eid_error;

/* ----------------------------------------------------------------- clock */

/* Returns the current Unix time in seconds. Must be thread-safe if the signer
 * using it is shared between threads. */
typedef int64_t (*eid_clock_fn)(void *ud);

typedef struct eid_clock {
    eid_clock_fn now; /* NULL: the system clock (time(2)) */
    void *ud;
} eid_clock;

/* ---------------------------------------------------------------- signer */

/* Pass as eid_sign_request.timestamp to use the signer's clock. */
#define EID_TIMESTAMP_NOW INT64_MIN
/* Latest timestamp accepted: 9999-12-31T23:59:59Z. */
#define EID_TIMESTAMP_MAX INT64_C(253402300799)

/* Input limits, checked before any work is done. */
#define EID_SECRET_ID_MAX      128
#define EID_SECRET_KEY_MAX     256
#define EID_TOKEN_MAX          4096
#define EID_FIELD_MAX          255 /* host, content type, action, version, region, language */
#define EID_SERVICE_MAX        63
#define EID_SIGNED_HEADERS_MAX 8

/* Sizes of the output fields of eid_signature, NUL included. */
#define EID_AUTHORIZATION_MAX      512
#define EID_SIGNED_HEADERS_STR_MAX 128

/* Every header eidkit sends; at most this many come out of eid_sign_headers. */
#define EID_HEADERS_MAX 9

typedef struct eid_signer eid_signer;

typedef struct eid_signer_options {
    /* Derived signing keys kept per (secret key, date, service), least
     * recently used evicted. 0 means 8; more than 4096 is EID_E_INVALID_ARG.
     * Each entry holds a copy of the secret key, wiped on eviction and on
     * free. */
    size_t cache_slots;
    eid_clock clock; /* used for EID_TIMESTAMP_NOW */
} eid_signer_options;

/* One signing request. Fields marked "default" may be NULL. */
typedef struct eid_sign_request {
    const char *secret_id;  /* required */
    const void *secret_key; /* required; bytes, not printed anywhere */
    size_t secret_key_len;
    const char *token; /* STS session token -> X-TC-Token; NULL: none */

    const char *host;         /* default "faceid.tencentcloudapi.com" */
    const char *service;      /* default: the host's first label */
    const char *action;       /* required, e.g. "GetEidToken" */
    const char *version;      /* default "2018-03-01" when service is faceid; else required */
    const char *region;       /* NULL: no X-TC-Region */
    const char *language;     /* NULL: no X-TC-Language */
    const char *content_type; /* default "application/json" */

    int64_t timestamp; /* Unix seconds, or EID_TIMESTAMP_NOW */

    const void *body; /* exact bytes sent; NULL only with body_len 0 */
    size_t body_len;

    /* Header names to sign, any case and order; NULL/0: content-type, host.
     * Allowed: content-type, host (both required) and x-tc-action,
     * x-tc-version, x-tc-timestamp, x-tc-region, x-tc-token, x-tc-language
     * (only when that header is sent). */
    const char *const *signed_headers;
    size_t signed_headers_count;
} eid_sign_request;

/* The result of signing: plain arrays, so callers can keep it on the stack. */
typedef struct eid_signature {
    int64_t timestamp;                               /* the one signed */
    char timestamp_str[24];                          /* decimal, for X-TC-Timestamp */
    char date[11];                                   /* UTC YYYY-MM-DD of timestamp */
    char signature[65];                              /* lower-case hex */
    char signed_headers[EID_SIGNED_HEADERS_STR_MAX]; /* "content-type;host" */
    char authorization[EID_AUTHORIZATION_MAX];       /* the Authorization value */
} eid_signature;

/* Optional intermediates for eid_signer_explain. The caller provides the
 * buffers; on EID_E_BUFFER_TOO_SMALL the *_len fields say what is needed. */
typedef struct eid_sign_explain {
    char *canonical_request;
    size_t canonical_request_cap;
    size_t canonical_request_len; /* out, NUL excluded */
    char string_to_sign[256];     /* always fits: fixed format, bounded fields */
    char hashed_payload[65];
    char hashed_canonical_request[65];
} eid_sign_explain;

/* Create a signer. opts may be NULL for defaults. On success *out owns the
 * signer; free it with eid_signer_free. OpenSSL's SHA-256 and HMAC are
 * fetched here once, not per call.
 * Thread safety: one signer may be shared by threads; calls on it are
 * serialised by an internal mutex (use one signer per thread to sign in
 * parallel). */
EID_API eid_status eid_signer_new(const eid_signer_options *opts, eid_signer **out);

/* Wipe every cached secret and key, then free. NULL is a no-op. */
EID_API void eid_signer_free(eid_signer *signer);

/* Sign req into *sig (TC3-HMAC-SHA256). err may be NULL.
 * With a cached key, this costs two SHA-256 and one HMAC. eidkit itself
 * allocates nothing per call; OpenSSL 3.0's EVP layer makes a few small
 * allocations when it re-initialises digest contexts. */
EID_API eid_status eid_signer_sign(eid_signer *signer, const eid_sign_request *req,
                                   eid_signature *sig, eid_error *err);

/* As eid_signer_sign, and also fill *explain with the canonical request,
 * the string to sign and the hashes, for debugging SignatureFailure. */
EID_API eid_status eid_signer_explain(eid_signer *signer, const eid_sign_request *req,
                                      eid_signature *sig, eid_sign_explain *explain,
                                      eid_error *err);

/* Number of derived-key cache hits and misses since creation. Thread-safe. */
EID_API void eid_signer_cache_stats(eid_signer *signer, uint64_t *hits, uint64_t *misses);

typedef struct eid_header {
    const char *name;  /* canonical spelling, e.g. "X-TC-Timestamp" */
    const char *value; /* points into req, sig or static storage */
} eid_header;

/* Every header to send for a signed request: Authorization, Content-Type,
 * Host, X-TC-Action, X-TC-Version, X-TC-Timestamp, and X-TC-Region,
 * X-TC-Token, X-TC-Language when set. Values point into req and sig, which
 * must outlive out[]. Defaults are applied as in eid_signer_sign. Returns the
 * number written (at most EID_HEADERS_MAX). Thread-safe. */
EID_API size_t eid_sign_headers(const eid_sign_request *req, const eid_signature *sig,
                                eid_header out[EID_HEADERS_MAX]);

/* The UTC calendar date of a Unix timestamp as "YYYY-MM-DD" into out[11].
 * Fails with EID_E_INVALID_ARG outside 0..EID_TIMESTAMP_MAX. Thread-safe. */
EID_API eid_status eid_utc_date(int64_t timestamp, char out[11]);

/* --------------------------------------------------------------- verifier
 * The server side of TC3: what the simulator (and any merchant service that
 * accepts Tencent-style signed calls) uses to check a request as received. */

/* Most header names a received SignedHeaders list may carry. */
#define EID_VERIFY_HEADERS_MAX 16

/* A parsed Authorization header:
 *   TC3-HMAC-SHA256 Credential=ID/DATE/SERVICE/tc3_request,
 *   SignedHeaders=a;b, Signature=HEX */
typedef struct eid_authorization {
    char secret_id[EID_SECRET_ID_MAX + 1];
    char date[11];                                   /* YYYY-MM-DD, digits checked */
    char service[EID_SERVICE_MAX + 1];               /* as the client derived it */
    char signed_headers[EID_SIGNED_HEADERS_STR_MAX]; /* "content-type;host" */
    size_t signed_headers_count;
    char signature[65]; /* 64 lower-case hex digits */
} eid_authorization;

/* Parse an Authorization value of len bytes into *out. Strict about the
 * documented shape (", " separators, this field order, lower-case hex, header
 * names of [a-z0-9-] with no empty or repeated entries); the message says
 * which part is malformed and never echoes the value. Thread-safe. */
EID_API eid_status eid_authorization_parse(const char *value, size_t len, eid_authorization *out,
                                           eid_error *err);

/* The pieces of a received request that its signature covers. */
typedef struct eid_canonical {
    const void *secret_key; /* the key registered for the request's SecretId */
    size_t secret_key_len;
    const char *date;           /* credential-scope date, "YYYY-MM-DD" */
    const char *service;        /* credential-scope service */
    const char *timestamp;      /* X-TC-Timestamp as received (decimal digits) */
    const char *method;         /* NULL: "POST" */
    const char *uri;            /* canonical URI; NULL: "/" */
    const char *query;          /* canonical query string; NULL: "" */
    const char *signed_headers; /* "a;b;c" as in the Authorization */
    /* One value per signed header, in the same order; a NULL entry stands for
     * a header that was not received and canonicalises as empty. Values are
     * trimmed of surrounding spaces and tabs. */
    const char *const *values;
    size_t value_count;
    int lower_values; /* non-zero: lower-case the values, as the TC3 document says */
    const void *body; /* exact bytes received; NULL only with body_len 0 */
    size_t body_len;
} eid_canonical;

/* Compute the TC3 signature of c into signature[65] (lower-case hex), using
 * and feeding the signer's derived-key cache. explain may be NULL; when given,
 * its canonical request buffer and hashes are filled as eid_signer_explain
 * fills them. Compare the result with eid_ct_equal, never strcmp.
 * Thread-safe in the same way as eid_signer_sign. */
EID_API eid_status eid_signer_compute(eid_signer *signer, const eid_canonical *c,
                                      char signature[65], eid_sign_explain *explain,
                                      eid_error *err);

/* Constant-time comparison: 1 when the two byte strings are equal, else 0.
 * Time depends only on the lengths. Thread-safe. */
EID_API int eid_ct_equal(const void *a, size_t alen, const void *b, size_t blen);

/* Fill buf with n bytes from OpenSSL's CSPRNG. Thread-safe. */
EID_API eid_status eid_random_bytes(void *buf, size_t n);

#ifdef __cplusplus
}
#endif

#endif /* EIDKIT_H */
