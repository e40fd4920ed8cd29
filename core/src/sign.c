/*
 * TC3-HMAC-SHA256 request signing (Tencent Cloud API signature v3).
 *
 * The one OpenSSL-facing file for signing. Hot-path budget per call with a
 * cached key: SHA-256(body), SHA-256(canonical request), one HMAC over the
 * string to sign, no allocation. The three-step key derivation runs only on a
 * cache miss (new secret, new UTC day or new service).
 */
#define _POSIX_C_SOURCE 200809L

#include "eidkit/eidkit.h"

#include "internal.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/rand.h>

#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define DEFAULT_HOST         "faceid.tencentcloudapi.com"
#define DEFAULT_CONTENT_TYPE "application/json"
#define FACEID_VERSION       "2018-03-01"
#define DEFAULT_SLOTS        8
/* The fixed output buffers hold the longest valid input. */
_Static_assert(16 + 20 + 1 + 10 + 1 + EID_SERVICE_MAX + 13 + 64 < 256, "string to sign buffer");
_Static_assert(27 + EID_SECRET_ID_MAX + 1 + 10 + 1 + EID_SERVICE_MAX + 28 +
                       EID_SIGNED_HEADERS_STR_MAX + 12 + 64 <
                   EID_AUTHORIZATION_MAX,
               "authorization buffer");
/* Large enough for every signed header at its maximum length plus framing. */
#define CANONICAL_MAX (EID_TOKEN_MAX + 8 * (EID_FIELD_MAX + 20) + 256)

typedef struct key_slot {
    uint64_t last_used; /* 0: empty */
    char date[11];
    char service[EID_SERVICE_MAX + 1];
    size_t secret_len;
    unsigned char secret[EID_SECRET_KEY_MAX];
    EVP_MAC_CTX *mac; /* keyed with SecretSigning for (secret, date, service) */
} key_slot;

struct eid_signer {
    pthread_mutex_t lock;
    EVP_MD *sha256;
    EVP_MAC *hmac;
    EVP_MD_CTX *md;      /* scratch, used under lock */
    EVP_MAC_CTX *derive; /* scratch for key derivation, used under lock */
    key_slot *slots;
    size_t nslots;
    uint64_t tick, hits, misses;
    eid_clock clock;
};

/* The headers eidkit can sign, in canonical (sorted, lower-case) order. The
 * signed-header set is a bitmask over this table, so canonical order falls out
 * of iterating it. */
enum {
    H_CONTENT_TYPE,
    H_HOST,
    H_ACTION,
    H_LANGUAGE,
    H_REGION,
    H_TIMESTAMP,
    H_TOKEN,
    H_VERSION,
    H_COUNT
};
/* Each name with its length, so the hot path measures nothing per call. */
#define HEADER_NAME(s) s, sizeof s - 1
static const struct {
    const char *name;
    size_t len;
} header_lc[H_COUNT] = {
    {HEADER_NAME("content-type")},  {HEADER_NAME("host")},         {HEADER_NAME("x-tc-action")},
    {HEADER_NAME("x-tc-language")}, {HEADER_NAME("x-tc-region")},  {HEADER_NAME("x-tc-timestamp")},
    {HEADER_NAME("x-tc-token")},    {HEADER_NAME("x-tc-version")},
};
#define MASK_DEFAULT ((1u << H_CONTENT_TYPE) | (1u << H_HOST))

/* The request with defaults applied and every field validated. */
typedef struct resolved {
    const char *v[H_COUNT]; /* header values; NULL when not sent */
    size_t len[H_COUNT];
    char service[EID_SERVICE_MAX + 1];
    size_t service_len;
    size_t secret_id_len;
    unsigned mask;
    int64_t timestamp;
    char ts[24];
} resolved;

/* What the string to sign and the signing key cover, besides the canonical
 * request; the same for the signer and the verifier. */
typedef struct tc3_scope {
    const char *timestamp; /* decimal, as signed */
    size_t timestamp_len;
    const char *date; /* "YYYY-MM-DD" */
    const char *service;
    size_t service_len;
    const void *secret;
    size_t secret_len;
} tc3_scope;

/* The intermediate strings of one signature, for the HMAC and the explain copy. */
typedef struct tc3_trace {
    char payload_hex[65]; /* HashedRequestPayload */
    char cr_hex[65];      /* HashedCanonicalRequest */
    char sts[256];        /* StringToSign */
    size_t sts_len;
} tc3_trace;

/* ------------------------------------------------------------- utilities */

static void hex32(const unsigned char in[32], char out[65]) {
    static const char digits[] = "0123456789abcdef";
    for (int i = 0; i < 32; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[64] = '\0';
}

static char lower(char c) { return (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c; }

static inline size_t put(char *dst, size_t off, const char *src, size_t n) {
    memcpy(dst + off, src, n);
    return off + n;
}

static inline size_t put_lower(char *dst, size_t off, const char *src, size_t n) {
    for (size_t i = 0; i < n; i++)
        dst[off + i] = lower(src[i]);
    return off + n;
}

/* Days since 1970-01-01 to a civil date (proleptic Gregorian), after Howard
 * Hinnant's public-domain algorithm: exact for the whole accepted range and
 * free of the locale and TZ state that gmtime would consult. */
static void civil_from_days(int64_t z, int *y, unsigned *m, unsigned *d) {
    z += 719468;
    const int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    const unsigned doe = (unsigned)(z - era * 146097);
    const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    const int64_t yy = (int64_t)yoe + era * 400;
    const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    const unsigned mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = (int)(yy + (*m <= 2));
}

eid_status eid_utc_date(int64_t timestamp, char out[11]) {
    if (timestamp < 0 || timestamp > EID_TIMESTAMP_MAX) return EID_E_INVALID_ARG;
    int y;
    unsigned m, d;
    civil_from_days(timestamp / 86400, &y, &m, &d);
    out[0] = (char)('0' + y / 1000);
    out[1] = (char)('0' + y / 100 % 10);
    out[2] = (char)('0' + y / 10 % 10);
    out[3] = (char)('0' + y % 10);
    out[4] = '-';
    out[5] = (char)('0' + m / 10);
    out[6] = (char)('0' + m % 10);
    out[7] = '-';
    out[8] = (char)('0' + d / 10);
    out[9] = (char)('0' + d % 10);
    out[10] = '\0';
    return EID_OK;
}

/* ------------------------------------------------------------ validation */

/* Character classes, one bit each, so validation is one table load per byte. */
typedef enum charset {
    CS_VISIBLE = 1,   /* printable ASCII, no space */
    CS_TEXT = 2,      /* printable ASCII, inner spaces allowed */
    CS_SECRET_ID = 4, /* visible, but not '/' or ',' which frame the Credential */
    CS_WORD = 8,      /* [A-Za-z0-9] */
    CS_VERSION = 16,  /* [A-Za-z0-9.-] */
    CS_SERVICE = 32,  /* [a-z0-9-] */
    CS_REGION = 32,   /* [a-z0-9-] */
    CS_LANGUAGE = 64, /* [A-Za-z-] */
} charset;

/* charclass[c] has bit CS_x set when byte c belongs to class x. Generated from
 * the definitions above; bytes >= 0x80 belong to none. */
static const unsigned char charclass[256] = {
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x02, 0x07, 0x07, 0x07, 0x07, 0x07, 0x07, 0x07, 0x07, 0x07, 0x07, 0x07, 0x03, 0x77, 0x17, 0x03,
    0x3f, 0x3f, 0x3f, 0x3f, 0x3f, 0x3f, 0x3f, 0x3f, 0x3f, 0x3f, 0x07, 0x07, 0x07, 0x07, 0x07, 0x07,
    0x07, 0x5f, 0x5f, 0x5f, 0x5f, 0x5f, 0x5f, 0x5f, 0x5f, 0x5f, 0x5f, 0x5f, 0x5f, 0x5f, 0x5f, 0x5f,
    0x5f, 0x5f, 0x5f, 0x5f, 0x5f, 0x5f, 0x5f, 0x5f, 0x5f, 0x5f, 0x5f, 0x07, 0x07, 0x07, 0x07, 0x07,
    0x07, 0x7f, 0x7f, 0x7f, 0x7f, 0x7f, 0x7f, 0x7f, 0x7f, 0x7f, 0x7f, 0x7f, 0x7f, 0x7f, 0x7f, 0x7f,
    0x7f, 0x7f, 0x7f, 0x7f, 0x7f, 0x7f, 0x7f, 0x7f, 0x7f, 0x7f, 0x7f, 0x07, 0x07, 0x07, 0x07, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
};

static bool in_set(unsigned char c, charset cs) { return (charclass[c] & cs) != 0; }

static const char *charset_words(charset cs) {
    switch (cs) {
    case CS_VISIBLE: return "printable ASCII without spaces";
    case CS_TEXT: return "printable ASCII without leading or trailing spaces";
    case CS_SECRET_ID: return "printable ASCII without spaces, '/' or ','";
    case CS_WORD: return "letters and digits";
    case CS_VERSION: return "letters, digits, '.' and '-'";
    case CS_SERVICE: return "lower-case letters, digits and '-'";
    case CS_LANGUAGE: return "letters and '-' (e.g. zh-CN, en-US)";
    }
    return "valid characters";
}

/* Check one string field. Never echoes the value: some fields are secrets and
 * the rest may be attacker-controlled. */
static eid_status check_field(eid_error *err, const char *field, const char *s, size_t max,
                              charset cs, size_t *len_out) {
    size_t n = 0;
    for (; s[n]; n++) {
        if (n >= max) return eid__fail(err, EID_E_INVALID_ARG, field, "longer than %zu bytes", max);
        if (!in_set((unsigned char)s[n], cs))
            return eid__fail(err, EID_E_INVALID_ARG, field, "byte %zu is not allowed (expected %s)",
                             n + 1, charset_words(cs));
    }
    if (n == 0) return eid__fail(err, EID_E_INVALID_ARG, field, "must not be empty");
    if (cs == CS_TEXT && (s[0] == ' ' || s[n - 1] == ' '))
        return eid__fail(err, EID_E_INVALID_ARG, field, "has leading or trailing spaces");
    *len_out = n;
    return EID_OK;
}

/* The table index of a header name in any case, or -1. */
static int header_index(const char *name) {
    char lc[20];
    size_t n = 0;
    for (; name[n] && n < sizeof lc - 1; n++)
        lc[n] = lower(name[n]);
    lc[n] = '\0';
    if (name[n] != '\0') return -1;
    for (int h = 0; h < H_COUNT; h++)
        if (strcmp(lc, header_lc[h].name) == 0) return h;
    return -1;
}

/* A name eidkit cannot sign: quoted when printable, else only its position. */
static eid_status unknown_header(eid_error *err, const char *name, size_t i) {
    for (size_t k = 0; name[k] && k < 40; k++)
        if (!in_set((unsigned char)name[k], CS_VISIBLE))
            return eid__fail(err, EID_E_INVALID_ARG, "signed_headers",
                             "entry %zu is not a header name", i + 1);
    return eid__fail(err, EID_E_INVALID_ARG, "signed_headers",
                     "unknown header '%.40s' (allowed: content-type, host, x-tc-action, "
                     "x-tc-language, x-tc-region, x-tc-timestamp, x-tc-token, x-tc-version)",
                     name);
}

static eid_status parse_signed_headers(const eid_sign_request *req, unsigned *mask,
                                       eid_error *err) {
    if (req->signed_headers == NULL || req->signed_headers_count == 0) {
        *mask = MASK_DEFAULT;
        return EID_OK;
    }
    if (req->signed_headers_count > EID_SIGNED_HEADERS_MAX)
        return eid__fail(err, EID_E_INVALID_ARG, "signed_headers", "more than %d names",
                         EID_SIGNED_HEADERS_MAX);
    unsigned m = 0;
    for (size_t i = 0; i < req->signed_headers_count; i++) {
        const char *name = req->signed_headers[i];
        if (name == NULL)
            return eid__fail(err, EID_E_INVALID_ARG, "signed_headers", "entry %zu is NULL", i + 1);
        int h = header_index(name);
        if (h < 0) return unknown_header(err, name, i);
        if (m & (1u << h))
            return eid__fail(err, EID_E_INVALID_ARG, "signed_headers", "'%s' is listed twice",
                             header_lc[h].name);
        m |= 1u << h;
    }
    if ((m & MASK_DEFAULT) != MASK_DEFAULT)
        return eid__fail(err, EID_E_INVALID_ARG, "signed_headers",
                         "must include content-type and host (TC3 requires both)");
    *mask = m;
    return EID_OK;
}

/* SecretId, SecretKey and the body pointer. */
static eid_status resolve_secrets(const eid_sign_request *req, resolved *r, eid_error *err) {
    if (req->secret_id == NULL) return eid__fail(err, EID_E_INVALID_ARG, "secret_id", "required");
    eid_status st = check_field(err, "secret_id", req->secret_id, EID_SECRET_ID_MAX, CS_SECRET_ID,
                                &r->secret_id_len);
    if (st != EID_OK) return st;
    if (req->secret_key == NULL || req->secret_key_len == 0)
        return eid__fail(err, EID_E_INVALID_ARG, "secret_key", "required");
    if (req->secret_key_len > EID_SECRET_KEY_MAX)
        return eid__fail(err, EID_E_INVALID_ARG, "secret_key", "longer than %d bytes",
                         EID_SECRET_KEY_MAX);
    if (req->body == NULL && req->body_len != 0)
        return eid__fail(err, EID_E_INVALID_ARG, "body", "NULL with a non-zero length");
    return EID_OK;
}

/* Check header h's value and record it as sent; a NULL value is not sent. */
static eid_status set_header(resolved *r, int h, const char *field, const char *value, size_t max,
                             charset cs, eid_error *err) {
    if (value == NULL) return EID_OK;
    eid_status st = check_field(err, field, value, max, cs, &r->len[h]);
    if (st == EID_OK) r->v[h] = value;
    return st;
}

/* The service as given, or as the official SDKs derive it: the host's first
 * label, lower-cased. */
static eid_status resolve_service(const eid_sign_request *req, resolved *r, eid_error *err) {
    if (req->service) {
        eid_status st =
            check_field(err, "service", req->service, EID_SERVICE_MAX, CS_SERVICE, &r->service_len);
        if (st == EID_OK) memcpy(r->service, req->service, r->service_len + 1);
        return st;
    }
    const char *host = r->v[H_HOST];
    size_t n = 0;
    while (host[n] && host[n] != '.' && host[n] != ':')
        n++;
    if (n == 0 || n > EID_SERVICE_MAX)
        return eid__fail(err, EID_E_INVALID_ARG, "service",
                         "required (cannot derive it from host)");
    for (size_t i = 0; i < n; i++) {
        r->service[i] = lower(host[i]);
        if (!in_set((unsigned char)r->service[i], CS_SERVICE))
            return eid__fail(err, EID_E_INVALID_ARG, "service",
                             "required (the host's first label is not a service name)");
    }
    r->service[n] = '\0';
    r->service_len = n;
    return EID_OK;
}

/* Host, service, action and version: which API is called. */
static eid_status resolve_endpoint(const eid_sign_request *req, resolved *r, eid_error *err) {
    const char *host = req->host ? req->host : DEFAULT_HOST;
    eid_status st = set_header(r, H_HOST, "host", host, EID_FIELD_MAX, CS_VISIBLE, err);
    if (st == EID_OK) st = resolve_service(req, r, err);
    if (st != EID_OK) return st;
    if (req->action == NULL) return eid__fail(err, EID_E_INVALID_ARG, "action", "required");
    if ((st = set_header(r, H_ACTION, "action", req->action, 128, CS_WORD, err))) return st;
    const char *version = req->version;
    if (version == NULL) {
        if (strcmp(r->service, "faceid") != 0)
            return eid__fail(err, EID_E_INVALID_ARG, "version",
                             "required for service '%s' (defaults only for faceid)", r->service);
        version = FACEID_VERSION;
    }
    return set_header(r, H_VERSION, "version", version, 32, CS_VERSION, err);
}

/* The content type and the optional headers. */
static eid_status resolve_headers(const eid_sign_request *req, resolved *r, eid_error *err) {
    const char *ct = req->content_type ? req->content_type : DEFAULT_CONTENT_TYPE;
    eid_status st = set_header(r, H_CONTENT_TYPE, "content_type", ct, EID_FIELD_MAX, CS_TEXT, err);
    if (st == EID_OK) st = set_header(r, H_REGION, "region", req->region, 64, CS_REGION, err);
    if (st == EID_OK)
        st = set_header(r, H_LANGUAGE, "language", req->language, 16, CS_LANGUAGE, err);
    if (st == EID_OK)
        st = set_header(r, H_TOKEN, "token", req->token, EID_TOKEN_MAX, CS_VISIBLE, err);
    return st;
}

/* Every signed header must be sent; the timestamp always is. */
static eid_status check_signed_sent(const resolved *r, eid_error *err) {
    for (int h = 0; h < H_COUNT; h++)
        if ((r->mask & (1u << h)) && h != H_TIMESTAMP && r->v[h] == NULL)
            return eid__fail(err, EID_E_INVALID_ARG, "signed_headers",
                             "'%s' is signed but not sent (set %s)", header_lc[h].name,
                             h == H_TOKEN    ? "token"
                             : h == H_REGION ? "region"
                                             : "language");
    return EID_OK;
}

/* Apply defaults and validate everything; no crypto, no clock. */
static eid_status resolve(const eid_sign_request *req, resolved *r, eid_error *err) {
    memset(r->v, 0, sizeof r->v);
    if (req == NULL) return eid__fail(err, EID_E_INVALID_ARG, "request", "is NULL");
    eid_status st = resolve_secrets(req, r, err);
    if (st == EID_OK) st = resolve_endpoint(req, r, err);
    if (st == EID_OK) st = resolve_headers(req, r, err);
    if (st == EID_OK) st = parse_signed_headers(req, &r->mask, err);
    if (st == EID_OK) st = check_signed_sent(r, err);
    return st;
}

static eid_status resolve_time(const eid_signer *s, const eid_sign_request *req, resolved *r,
                               char date[11], eid_error *err) {
    int64_t ts = req->timestamp;
    if (ts == EID_TIMESTAMP_NOW)
        ts = s->clock.now ? s->clock.now(s->clock.ud) : (int64_t)time(NULL);
    if (ts < 0 || ts > EID_TIMESTAMP_MAX)
        return eid__fail(err, EID_E_INVALID_ARG, "timestamp",
                         "must be Unix seconds between 0 and %lld (got %lld)",
                         (long long)EID_TIMESTAMP_MAX, (long long)ts);
    r->timestamp = ts;
    /* Decimal by hand: snprintf("%lld") was a tenth of a cached signature. */
    char digits[24];
    size_t n = 0;
    uint64_t u = (uint64_t)ts;
    do {
        digits[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    for (size_t i = 0; i < n; i++)
        r->ts[i] = digits[n - 1 - i];
    r->ts[n] = '\0';
    r->v[H_TIMESTAMP] = r->ts;
    r->len[H_TIMESTAMP] = n;
    return eid_utc_date(ts, date);
}

/* ---------------------------------------------------------------- crypto */

static bool sha256(eid_signer *s, const void *data, size_t len, unsigned char out[32]) {
    unsigned int outl = 0;
    return EVP_DigestInit_ex2(s->md, s->sha256, NULL) == 1 &&
           EVP_DigestUpdate(s->md, data, len) == 1 && EVP_DigestFinal_ex(s->md, out, &outl) == 1 &&
           outl == 32;
}

static bool hmac_once(EVP_MAC_CTX *ctx, const void *key, size_t keylen, const void *msg,
                      size_t msglen, unsigned char out[32]) {
    size_t outl = 0;
    return EVP_MAC_init(ctx, key, keylen, NULL) == 1 && EVP_MAC_update(ctx, msg, msglen) == 1 &&
           EVP_MAC_final(ctx, out, &outl, 32) == 1 && outl == 32;
}

static EVP_MAC_CTX *new_hmac_ctx(EVP_MAC *hmac) {
    EVP_MAC_CTX *ctx = EVP_MAC_CTX_new(hmac);
    if (ctx == NULL) return NULL;
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
        OSSL_PARAM_construct_end(),
    };
    if (EVP_MAC_CTX_set_params(ctx, params) != 1) {
        EVP_MAC_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

static void slot_wipe(key_slot *slot) {
    OPENSSL_cleanse(slot->secret, sizeof slot->secret);
    slot->secret_len = 0;
    slot->last_used = 0;
}

static bool slot_matches(const key_slot *slot, const tc3_scope *sc) {
    return slot->last_used != 0 && memcmp(slot->date, sc->date, 11) == 0 &&
           strlen(slot->service) == sc->service_len &&
           memcmp(slot->service, sc->service, sc->service_len) == 0 &&
           slot->secret_len == sc->secret_len &&
           CRYPTO_memcmp(slot->secret, sc->secret, sc->secret_len) == 0;
}

/* The slot holding sc's key, or NULL with *victim set to the least recently
 * used slot. */
static key_slot *slot_find(eid_signer *s, const tc3_scope *sc, key_slot **victim) {
    *victim = &s->slots[0];
    for (size_t i = 0; i < s->nslots; i++) {
        key_slot *slot = &s->slots[i];
        if (slot_matches(slot, sc)) return slot;
        if (slot->last_used < (*victim)->last_used) *victim = slot;
    }
    return NULL;
}

/* Derive SecretSigning for sc into slot (TC3: three HMACs over date, service
 * and "tc3_request"), wiping every intermediate. On failure the slot is left
 * empty. */
static bool slot_derive(eid_signer *s, key_slot *slot, const tc3_scope *sc) {
    unsigned char kdate[32], kservice[32], ksigning[32];
    unsigned char seed[3 + EID_SECRET_KEY_MAX];
    memcpy(seed, "TC3", 3);
    memcpy(seed + 3, sc->secret, sc->secret_len);
    slot_wipe(slot);
    bool ok = hmac_once(s->derive, seed, 3 + sc->secret_len, sc->date, 10, kdate) &&
              hmac_once(s->derive, kdate, 32, sc->service, sc->service_len, kservice) &&
              hmac_once(s->derive, kservice, 32, "tc3_request", 11, ksigning) &&
              EVP_MAC_init(slot->mac, ksigning, 32, NULL) == 1;
    OPENSSL_cleanse(seed, sizeof seed);
    OPENSSL_cleanse(kdate, sizeof kdate);
    OPENSSL_cleanse(kservice, sizeof kservice);
    OPENSSL_cleanse(ksigning, sizeof ksigning);
    if (!ok) return false;
    memcpy(slot->date, sc->date, 11);
    memcpy(slot->service, sc->service, sc->service_len);
    slot->service[sc->service_len] = '\0';
    memcpy(slot->secret, sc->secret, sc->secret_len);
    slot->secret_len = sc->secret_len;
    return true;
}

/* Find or derive the keyed HMAC for sc's (secret, date, service). Called
 * under lock. */
static EVP_MAC_CTX *signing_key(eid_signer *s, const tc3_scope *sc, eid_error *err) {
    key_slot *victim;
    key_slot *slot = slot_find(s, sc, &victim);
    if (slot != NULL) {
        s->hits++;
    } else {
        s->misses++;
        if (!slot_derive(s, victim, sc)) {
            eid__fail(err, EID_E_CRYPTO, "", "HMAC-SHA256 key derivation failed");
            return NULL;
        }
        slot = victim;
    }
    slot->last_used = ++s->tick;
    return slot->mac;
}

/* ------------------------------------------------------------- TC3 steps
 * Each step after validation is one helper, called by both the signer
 * (sign_locked) and the verifier (eid_signer_compute), so the two cannot
 * drift: canonical request (cr_*), payload and request hashes, string to sign,
 * signing key, HMAC, explain copy. The crypto steps run under the lock. */

/* SHA-256 of data as lower-case hex. */
static eid_status sha256_hex(eid_signer *s, const void *data, size_t len, char hex[65],
                             eid_error *err) {
    unsigned char digest[32];
    if (!sha256(s, data, len, digest)) return eid__fail(err, EID_E_CRYPTO, "", "SHA-256 failed");
    hex32(digest, hex);
    return EID_OK;
}

/* HashedRequestPayload; body may be NULL when len is 0. */
static eid_status hash_payload(eid_signer *s, const void *body, size_t len, tc3_trace *t,
                               eid_error *err) {
    return sha256_hex(s, len ? body : "", len, t->payload_hex, err);
}

/* "METHOD\nURI\nQUERY\n": the canonical request's first three lines. */
static inline size_t cr_request_line(char *cr, const char *method, const char *uri,
                                     const char *query) {
    size_t n = put(cr, 0, method, strlen(method));
    cr[n++] = '\n';
    n = put(cr, n, uri, strlen(uri));
    cr[n++] = '\n';
    n = put(cr, n, query, strlen(query));
    cr[n++] = '\n';
    return n;
}

/* One "name:value\n" line of CanonicalHeaders; value lower-cased when asked. */
static inline size_t cr_header(char *cr, size_t off, const char *name, size_t name_len,
                               const char *v, size_t vlen, bool lower_value) {
    off = put(cr, off, name, name_len);
    cr[off++] = ':';
    off = lower_value ? put_lower(cr, off, v, vlen) : put(cr, off, v, vlen);
    cr[off++] = '\n';
    return off;
}

/* The blank line that ends CanonicalHeaders, SignedHeaders and the payload
 * hash: the canonical request's last lines. */
static inline size_t cr_tail(char *cr, size_t off, const char *signed_headers, size_t sh_len,
                             const char payload_hex[65]) {
    cr[off++] = '\n';
    off = put(cr, off, signed_headers, sh_len);
    cr[off++] = '\n';
    return put(cr, off, payload_hex, 64);
}

/* Algorithm, timestamp, credential scope and the canonical request's hash.
 * Every part is bounded by validation (see the _Static_assert above), so the
 * fixed buffer cannot overflow. */
static void string_to_sign(const tc3_scope *sc, tc3_trace *t) {
    char *sts = t->sts;
    size_t n = put(sts, 0, "TC3-HMAC-SHA256\n", 16);
    n = put(sts, n, sc->timestamp, sc->timestamp_len);
    sts[n++] = '\n';
    n = put(sts, n, sc->date, 10);
    sts[n++] = '/';
    n = put(sts, n, sc->service, sc->service_len);
    n = put(sts, n, "/tc3_request\n", 13);
    n = put(sts, n, t->cr_hex, 64);
    sts[n] = '\0';
    t->sts_len = n;
}

/* The final HMAC over the string to sign, as hex into signature. */
static eid_status hmac_hex(EVP_MAC_CTX *mac, const tc3_trace *t, char signature[65],
                           eid_error *err) {
    unsigned char digest[32];
    size_t outl = 0;
    /* A NULL key re-initialises the HMAC with the key it already holds. */
    if (EVP_MAC_init(mac, NULL, 0, NULL) != 1 ||
        EVP_MAC_update(mac, (const unsigned char *)t->sts, t->sts_len) != 1 ||
        EVP_MAC_final(mac, digest, &outl, 32) != 1 || outl != 32)
        return eid__fail(err, EID_E_CRYPTO, "", "HMAC-SHA256 failed");
    hex32(digest, signature);
    return EID_OK;
}

/* From a finished canonical request of n bytes to the signature: hash it,
 * build the string to sign, look up the key, run the HMAC. */
static eid_status tc3_sign(eid_signer *s, const tc3_scope *sc, const char *cr, size_t n,
                           tc3_trace *t, char signature[65], eid_error *err) {
    eid_status st = sha256_hex(s, cr, n, t->cr_hex, err);
    if (st != EID_OK) return st;
    string_to_sign(sc, t);
    EVP_MAC_CTX *mac = signing_key(s, sc, err);
    if (mac == NULL) return EID_E_CRYPTO;
    return hmac_hex(mac, t, signature, err);
}

/* Copy the intermediates into ex (nothing when ex is NULL). The fixed fields
 * and the length are filled even when the canonical request does not fit. */
static eid_status fill_explain(eid_sign_explain *ex, const tc3_trace *t, const char *cr, size_t n,
                               eid_error *err) {
    if (ex == NULL) return EID_OK;
    memcpy(ex->string_to_sign, t->sts, t->sts_len + 1);
    memcpy(ex->hashed_payload, t->payload_hex, 65);
    memcpy(ex->hashed_canonical_request, t->cr_hex, 65);
    ex->canonical_request_len = n;
    if (ex->canonical_request == NULL || ex->canonical_request_cap < n + 1)
        return eid__fail(err, EID_E_BUFFER_TOO_SMALL, "canonical_request", "needs %zu bytes",
                         n + 1);
    memcpy(ex->canonical_request, cr, n);
    ex->canonical_request[n] = '\0';
    return EID_OK;
}

/* ---------------------------------------------------------------- public */

const char *eid_crypto_version(void) { return OpenSSL_version(OPENSSL_VERSION); }

eid_status eid_signer_new(const eid_signer_options *opts, eid_signer **out) {
    if (out == NULL) return EID_E_INVALID_ARG;
    *out = NULL;
    size_t nslots = opts && opts->cache_slots ? opts->cache_slots : DEFAULT_SLOTS;
    if (nslots > 4096) return EID_E_INVALID_ARG;

    eid_signer *s = OPENSSL_zalloc(sizeof *s);
    if (s == NULL) return EID_E_NOMEM;
    if (pthread_mutex_init(&s->lock, NULL) != 0) {
        OPENSSL_free(s);
        return EID_E_NOMEM;
    }
    if (opts) s->clock = opts->clock;
    eid_status st = EID_E_NOMEM;
    s->slots = OPENSSL_zalloc(nslots * sizeof *s->slots);
    if (s->slots == NULL) goto fail;
    s->nslots = nslots;
    /* A failed fetch is as likely an allocation failure as a missing provider;
     * either way there is nothing the caller can fix but memory. */
    s->sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
    s->hmac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    if (s->sha256 == NULL || s->hmac == NULL) goto fail;
    s->md = EVP_MD_CTX_new();
    s->derive = new_hmac_ctx(s->hmac);
    if (s->md == NULL || s->derive == NULL) goto fail;
    for (size_t i = 0; i < nslots; i++)
        if ((s->slots[i].mac = new_hmac_ctx(s->hmac)) == NULL) goto fail;
    *out = s;
    return EID_OK;
fail:
    eid_signer_free(s);
    return st;
}

void eid_signer_free(eid_signer *s) {
    if (s == NULL) return;
    if (s->slots) {
        for (size_t i = 0; i < s->nslots; i++) {
            slot_wipe(&s->slots[i]);
            EVP_MAC_CTX_free(s->slots[i].mac);
        }
        OPENSSL_free(s->slots);
    }
    EVP_MAC_CTX_free(s->derive);
    EVP_MD_CTX_free(s->md);
    EVP_MAC_free(s->hmac);
    EVP_MD_free(s->sha256);
    pthread_mutex_destroy(&s->lock);
    OPENSSL_clear_free(s, sizeof *s);
}

void eid_signer_cache_stats(eid_signer *s, uint64_t *hits, uint64_t *misses) {
    if (s == NULL) return;
    pthread_mutex_lock(&s->lock);
    if (hits) *hits = s->hits;
    if (misses) *misses = s->misses;
    pthread_mutex_unlock(&s->lock);
}

/* The SignedHeaders string of mask, in table (= sorted) order; its length. */
static size_t signed_headers_str(unsigned mask, char out[EID_SIGNED_HEADERS_STR_MAX]) {
    size_t n = 0;
    for (int h = 0; h < H_COUNT; h++) {
        if (!(mask & (1u << h))) continue;
        if (n) out[n++] = ';';
        n = put(out, n, header_lc[h].name, header_lc[h].len);
    }
    out[n] = '\0';
    return n;
}

/* The signer's canonical request: POST to "/" with no query, the signed
 * headers in table order. Values are lower-cased as the TC3 document
 * specifies; that is also what makes x-tc-action match vector C. */
static size_t sign_canonical(const resolved *r, const char *sh, size_t sh_len,
                             const char payload_hex[65], char cr[CANONICAL_MAX]) {
    size_t n = cr_request_line(cr, "POST", "/", "");
    for (int h = 0; h < H_COUNT; h++)
        if (r->mask & (1u << h))
            n = cr_header(cr, n, header_lc[h].name, header_lc[h].len, r->v[h], r->len[h], true);
    return cr_tail(cr, n, sh, sh_len, payload_hex);
}

/* The Authorization value, by length-known copies into a buffer sized for
 * the longest valid input (see the _Static_assert above). */
static void authorization(eid_signature *sig, const char *secret_id, size_t secret_id_len,
                          const tc3_scope *sc, size_t sh_len) {
    char *a = sig->authorization;
    size_t n = put(a, 0, "TC3-HMAC-SHA256 Credential=", 27);
    n = put(a, n, secret_id, secret_id_len);
    a[n++] = '/';
    n = put(a, n, sc->date, 10);
    a[n++] = '/';
    n = put(a, n, sc->service, sc->service_len);
    n = put(a, n, "/tc3_request, SignedHeaders=", 28);
    n = put(a, n, sig->signed_headers, sh_len);
    n = put(a, n, ", Signature=", 12);
    n = put(a, n, sig->signature, 64);
    a[n] = '\0';
}

/* Everything after resolve, under the signer's lock. */
static eid_status sign_locked(eid_signer *s, const eid_sign_request *req, const resolved *r,
                              const char date[11], eid_signature *sig, eid_sign_explain *ex,
                              eid_error *err) {
    tc3_trace t;
    eid_status st = hash_payload(s, req->body, req->body_len, &t, err);
    if (st != EID_OK) return st;
    size_t sh_len = signed_headers_str(r->mask, sig->signed_headers);
    char cr[CANONICAL_MAX];
    size_t n = sign_canonical(r, sig->signed_headers, sh_len, t.payload_hex, cr);
    const tc3_scope sc = {
        .timestamp = r->ts,
        .timestamp_len = r->len[H_TIMESTAMP],
        .date = date,
        .service = r->service,
        .service_len = r->service_len,
        .secret = req->secret_key,
        .secret_len = req->secret_key_len,
    };
    if ((st = tc3_sign(s, &sc, cr, n, &t, sig->signature, err))) return st;
    sig->timestamp = r->timestamp;
    memcpy(sig->timestamp_str, r->ts, r->len[H_TIMESTAMP] + 1);
    memcpy(sig->date, date, 11);
    authorization(sig, req->secret_id, r->secret_id_len, &sc, sh_len);
    return fill_explain(ex, &t, cr, n, err);
}

eid_status eid_signer_explain(eid_signer *s, const eid_sign_request *req, eid_signature *sig,
                              eid_sign_explain *ex, eid_error *err) {
    if (s == NULL) return eid__fail(err, EID_E_INVALID_ARG, "signer", "is NULL");
    if (sig == NULL) return eid__fail(err, EID_E_INVALID_ARG, "signature", "is NULL");
    resolved r;
    char date[11];
    eid_status st = resolve(req, &r, err);
    if (st == EID_OK) st = resolve_time(s, req, &r, date, err);
    if (st != EID_OK) return st;
    pthread_mutex_lock(&s->lock);
    st = sign_locked(s, req, &r, date, sig, ex, err);
    pthread_mutex_unlock(&s->lock);
    return st;
}

eid_status eid_signer_sign(eid_signer *s, const eid_sign_request *req, eid_signature *sig,
                           eid_error *err) {
    return eid_signer_explain(s, req, sig, NULL, err);
}

size_t eid_sign_headers(const eid_sign_request *req, const eid_signature *sig,
                        eid_header out[EID_HEADERS_MAX]) {
    if (req == NULL || sig == NULL || out == NULL) return 0;
    size_t n = 0;
    out[n++] = (eid_header){"Authorization", sig->authorization};
    out[n++] =
        (eid_header){"Content-Type", req->content_type ? req->content_type : DEFAULT_CONTENT_TYPE};
    out[n++] = (eid_header){"Host", req->host ? req->host : DEFAULT_HOST};
    out[n++] = (eid_header){"X-TC-Action", req->action};
    out[n++] = (eid_header){"X-TC-Version", req->version ? req->version : FACEID_VERSION};
    out[n++] = (eid_header){"X-TC-Timestamp", sig->timestamp_str};
    if (req->region) out[n++] = (eid_header){"X-TC-Region", req->region};
    if (req->token) out[n++] = (eid_header){"X-TC-Token", req->token};
    if (req->language) out[n++] = (eid_header){"X-TC-Language", req->language};
    return n;
}

/* ------------------------------------------------------------- verifier */

/* A received request, checked and split: what compute_build assembles. */
typedef struct received {
    tc3_scope scope;
    const char *method, *uri, *query;
    const char *names[EID_VERIFY_HEADERS_MAX]; /* into c->signed_headers */
    size_t name_len[EID_VERIFY_HEADERS_MAX];
    size_t count;
    size_t sh_len;
} received;

static bool is_blank(char c) { return c == ' ' || c == '\t'; }

/* The arguments and the key material. */
static eid_status check_args(const eid_signer *s, const eid_canonical *c, const char *signature,
                             eid_error *err) {
    if (s == NULL) return eid__fail(err, EID_E_INVALID_ARG, "signer", "is NULL");
    if (c == NULL) return eid__fail(err, EID_E_INVALID_ARG, "canonical", "is NULL");
    if (signature == NULL) return eid__fail(err, EID_E_INVALID_ARG, "signature", "is NULL");
    if (c->secret_key == NULL || c->secret_key_len == 0)
        return eid__fail(err, EID_E_INVALID_ARG, "secret_key", "must not be empty");
    if (c->secret_key_len > EID_SECRET_KEY_MAX)
        return eid__fail(err, EID_E_INVALID_ARG, "secret_key", "longer than %d bytes",
                         EID_SECRET_KEY_MAX);
    if (c->body == NULL && c->body_len != 0)
        return eid__fail(err, EID_E_INVALID_ARG, "body", "is NULL with a non-zero length");
    return EID_OK;
}

/* Date, service and timestamp: what the string to sign and the key cover. */
static eid_status check_scope(const eid_canonical *c, tc3_scope *sc, eid_error *err) {
    eid_status st;
    if (c->date == NULL || strlen(c->date) != 10)
        return eid__fail(err, EID_E_INVALID_ARG, "date", "must be YYYY-MM-DD");
    if (c->service == NULL) return eid__fail(err, EID_E_INVALID_ARG, "service", "is NULL");
    if ((st = check_field(err, "service", c->service, EID_SERVICE_MAX, CS_SECRET_ID,
                          &sc->service_len)))
        return st;
    if (c->timestamp == NULL) return eid__fail(err, EID_E_INVALID_ARG, "timestamp", "is NULL");
    if ((st = check_field(err, "timestamp", c->timestamp, 20, CS_VISIBLE, &sc->timestamp_len)))
        return st;
    sc->date = c->date;
    sc->service = c->service;
    sc->timestamp = c->timestamp;
    sc->secret = c->secret_key;
    sc->secret_len = c->secret_key_len;
    return EID_OK;
}

/* Split SignedHeaders into names; one value is needed per name. */
static eid_status split_signed_headers(const eid_canonical *c, received *rx, eid_error *err) {
    if (c->signed_headers == NULL || c->signed_headers[0] == '\0')
        return eid__fail(err, EID_E_INVALID_ARG, "signed_headers", "must not be empty");
    rx->sh_len = strlen(c->signed_headers);
    rx->count = 0;
    for (const char *p = c->signed_headers;;) {
        const char *semi = strchr(p, ';');
        if (rx->count == EID_VERIFY_HEADERS_MAX)
            return eid__fail(err, EID_E_INVALID_ARG, "signed_headers", "more than %d names",
                             EID_VERIFY_HEADERS_MAX);
        rx->names[rx->count] = p;
        rx->name_len[rx->count++] = semi ? (size_t)(semi - p) : strlen(p);
        if (semi == NULL) break;
        p = semi + 1;
    }
    if (rx->count != c->value_count || (rx->count > 0 && c->values == NULL))
        return eid__fail(err, EID_E_INVALID_ARG, "values", "%zu values for %zu signed headers",
                         c->value_count, rx->count);
    return EID_OK;
}

/* Everything eid_signer_compute checks before it allocates or hashes. */
static eid_status compute_check(const eid_signer *s, const eid_canonical *c, const char *signature,
                                received *rx, eid_error *err) {
    eid_status st = check_args(s, c, signature, err);
    if (st == EID_OK) st = check_scope(c, &rx->scope, err);
    if (st == EID_OK) st = split_signed_headers(c, rx, err);
    if (st != EID_OK) return st;
    rx->method = c->method ? c->method : "POST";
    rx->uri = c->uri ? c->uri : "/";
    rx->query = c->query ? c->query : "";
    return EID_OK;
}

/* A received value as canonicalised: NULL is empty; spaces and tabs around it
 * are trimmed. Returns its length; *v moves past the leading blanks. */
static size_t trim_value(const char **v) {
    const char *p = *v ? *v : "";
    size_t n = strlen(p);
    while (n > 0 && is_blank(p[0]))
        p++, n--;
    while (n > 0 && is_blank(p[n - 1]))
        n--;
    *v = p;
    return n;
}

/* Allocate the canonical request, sized from its inputs, and fill it up to
 * the payload hash, which compute_finish appends under the lock. */
static eid_status compute_build(const eid_canonical *c, const received *rx, char **out, size_t *len,
                                eid_error *err) {
    size_t cap = strlen(rx->method) + strlen(rx->uri) + strlen(rx->query) + rx->sh_len + 64 + 8;
    for (size_t i = 0; i < rx->count; i++)
        cap += rx->name_len[i] + 2 + (c->values[i] ? strlen(c->values[i]) : 0);
    char *cr = malloc(cap);
    if (cr == NULL) return eid__fail(err, EID_E_NOMEM, "", "out of memory");
    size_t n = cr_request_line(cr, rx->method, rx->uri, rx->query);
    for (size_t i = 0; i < rx->count; i++) {
        const char *v = c->values[i];
        size_t vlen = trim_value(&v);
        n = cr_header(cr, n, rx->names[i], rx->name_len[i], v, vlen, c->lower_values != 0);
    }
    *out = cr;
    *len = n;
    return EID_OK;
}

/* Hash the payload, finish the canonical request and sign it under the lock;
 * then the explain copy. */
static eid_status compute_finish(eid_signer *s, const eid_canonical *c, const received *rx,
                                 char *cr, size_t n, char signature[65], eid_sign_explain *ex,
                                 eid_error *err) {
    tc3_trace t;
    pthread_mutex_lock(&s->lock);
    eid_status st = hash_payload(s, c->body, c->body_len, &t, err);
    if (st == EID_OK) {
        n = cr_tail(cr, n, c->signed_headers, rx->sh_len, t.payload_hex);
        st = tc3_sign(s, &rx->scope, cr, n, &t, signature, err);
    }
    pthread_mutex_unlock(&s->lock);
    return st == EID_OK ? fill_explain(ex, &t, cr, n, err) : st;
}

eid_status eid_signer_compute(eid_signer *s, const eid_canonical *c, char signature[65],
                              eid_sign_explain *ex, eid_error *err) {
    received rx;
    char *cr = NULL;
    size_t n = 0;
    eid_status st = compute_check(s, c, signature, &rx, err);
    if (st == EID_OK) st = compute_build(c, &rx, &cr, &n, err);
    if (st == EID_OK) st = compute_finish(s, c, &rx, cr, n, signature, ex, err);
    free(cr);
    return st;
}

int eid_ct_equal(const void *a, size_t alen, const void *b, size_t blen) {
    if (alen != blen || a == NULL || b == NULL) return 0;
    return CRYPTO_memcmp(a, b, alen) == 0;
}

eid_status eid_random_bytes(void *buf, size_t n) {
    if (buf == NULL && n != 0) return EID_E_INVALID_ARG;
    if (n > INT_MAX || (n > 0 && RAND_bytes(buf, (int)n) != 1)) return EID_E_CRYPTO;
    return EID_OK;
}
