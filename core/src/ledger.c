/*
 * The token ledger's front: URL dispatch, input validation, the clock, the
 * lock, payload sealing (AES-256-GCM) and the state machine shared with the
 * SQLite backend. docs/internals/ledger.md describes the design.
 */
#define _POSIX_C_SOURCE 200809L

#include "ledger_internal.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SEAL_VERSION 1
#define SEAL_NONCE   12
#define SEAL_TAG     16
#define SEAL_HEAD    (1 + SEAL_NONCE)

struct eid_ledger {
    pthread_mutex_t lock;
    const ledger_ops *ops;
    void *be;
    eid_clock clock;
    ledger_config cfg;
    bool has_key;
    bool batch; /* between eid_ledger_batch_begin and _end */
    unsigned char key[EID_LEDGER_KEY_LEN];
};

/* ------------------------------------------------------------ utilities */

const char *eid_ledger_state_name(eid_ledger_state state) {
    switch (state) {
    case EID_LEDGER_ISSUED: return "issued";
    case EID_LEDGER_PASSED: return "passed";
    case EID_LEDGER_FAILED: return "failed";
    case EID_LEDGER_CONSUMED: return "consumed";
    case EID_LEDGER_EXPIRED: return "expired";
    case EID_LEDGER_ABANDONED: return "abandoned";
    }
    return "unknown";
}

bool eid__ledger_copy(char *dst, size_t cap, const char *src, size_t len) {
    bool whole = len < cap;
    size_t n = whole ? len : cap - 1;
    memcpy(dst, src, n);
    dst[n] = '\0';
    return whole;
}

bool eid__ledger_same(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    return la == lb && CRYPTO_memcmp(a, b, la) == 0;
}

static int64_t now_of(const eid_ledger *l) {
    return l->clock.now ? l->clock.now(l->clock.ud) : (int64_t)time(NULL);
}

/* Milliseconds: an injected clock's seconds, else the real-time clock's. */
static int64_t now_ms_of(const eid_ledger *l) {
    if (l->clock.now) return l->clock.now(l->clock.ud) * 1000;
    struct timespec ts;
    if (clock_gettime(CLOCK_REALTIME, &ts) != 0) return (int64_t)time(NULL) * 1000;
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

typedef enum text_kind {
    T_TOKEN,      /* [A-Za-z0-9._-] */
    T_VISIBLE,    /* printable ASCII, no spaces */
    T_REQUEST_ID, /* printable ASCII, no spaces, no ',' */
    T_TEXT,       /* no control bytes (UTF-8 allowed) */
    T_EXTRA       /* no control bytes but tab */
} text_kind;

static bool byte_ok(unsigned char c, text_kind k) {
    switch (k) {
    case T_TOKEN:
        return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
               c == '-' || c == '_' || c == '.';
    case T_VISIBLE: return c > 0x20 && c < 0x7f;
    case T_REQUEST_ID: return c > 0x20 && c < 0x7f && c != ',';
    case T_TEXT: return c >= 0x20 && c != 0x7f;
    case T_EXTRA: return (c >= 0x20 && c != 0x7f) || c == '\t';
    }
    return false;
}

static const char *kind_words(text_kind k) {
    switch (k) {
    case T_TOKEN: return "letters, digits, '.', '_' and '-'";
    case T_VISIBLE: return "printable ASCII without spaces";
    case T_REQUEST_ID: return "printable ASCII without spaces or ','";
    case T_TEXT: return "no control characters";
    case T_EXTRA: return "no control characters except tab";
    }
    return "valid characters";
}

/* Validate one string; never echoes it (it may be a token or a user id). */
static eid_status check_text(eid_error *err, const char *field, const char *s, size_t max,
                             text_kind k, bool may_be_empty) {
    if (s == NULL) return eid__fail(err, EID_E_INVALID_ARG, field, "required");
    size_t n = 0;
    for (; s[n]; n++) {
        if (n >= max) return eid__fail(err, EID_E_INVALID_ARG, field, "longer than %zu bytes", max);
        if (!byte_ok((unsigned char)s[n], k))
            return eid__fail(err, EID_E_INVALID_ARG, field, "byte %zu is not allowed (expected %s)",
                             n + 1, kind_words(k));
    }
    if (n == 0 && !may_be_empty)
        return eid__fail(err, EID_E_INVALID_ARG, field, "must not be empty");
    return EID_OK;
}

static eid_status check_token(eid_error *err, const char *token) {
    return check_text(err, "token", token, EID_LEDGER_TOKEN_MAX, T_TOKEN, false);
}

static eid_status check_subject(eid_error *err, const char *subject) {
    return check_text(err, "subject", subject, EID_LEDGER_SUBJECT_MAX, T_TEXT, false);
}

/* -------------------------------------------------------- state machine */

static bool has_verdict(const eid_ledger_entry *r) {
    return r->state == EID_LEDGER_PASSED || r->state == EID_LEDGER_FAILED ||
           r->state == EID_LEDGER_CONSUMED;
}

/* Append id to the ',' list, dropping the oldest ids beyond the cap; an id
 * already present is not added twice (a retried pull). */
static void add_request_id(char *ids, size_t cap, const char *id) {
    size_t idlen = strlen(id), n = strlen(ids), count = n ? 1 : 0;
    for (const char *p = ids; *p;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len == idlen && memcmp(p, id, len) == 0) return;
        p += len + (end ? 1 : 0);
    }
    for (size_t i = 0; i < n; i++)
        count += ids[i] == ',';
    while (count >= EID_LEDGER_REQUEST_IDS || (n && n + 1 + idlen + 1 > cap)) {
        char *comma = strchr(ids, ',');
        if (comma == NULL) {
            ids[0] = '\0';
            n = 0;
            count = 0;
            break;
        }
        memmove(ids, comma + 1, strlen(comma + 1) + 1);
        n = strlen(ids);
        count--;
    }
    if (n) ids[n++] = ',';
    memcpy(ids + n, id, idlen + 1);
}

bool eid__ledger_settles(int64_t code) {
    const eid_errcode_info *e = eid_errcode_lookup(code);
    return e == NULL || e->verdict != EID_VERDICT_NONE;
}

/* A consumed failure whose verdict may still change: the user can retry on
 * the same token until its lifetime ends, and each retry may be billed. */
static bool consumed_open(const eid_ledger_entry *r) {
    return r->state == EID_LEDGER_CONSUMED && r->has_err_code && r->err_code != 0 &&
           r->err_code != EID_ERRCODE_EXPIRED && !(r->has_late_err_code && r->late_err_code == 0);
}

/* A later verdict on a consumed token: kept beside the consumed one, which
 * the merchant was told and which replays return. */
static void apply_late(eid_ledger_entry *r, const eid_ledger_outcome *o, int32_t old_attempts) {
    if (!consumed_open(r) || o->attempts < old_attempts) return;
    int64_t current = r->has_late_err_code ? r->late_err_code : r->err_code;
    if (o->err_code == current) return;
    r->has_late_err_code = 1;
    r->late_err_code = o->err_code;
    r->late_pass = o->err_code == 0;
}

bool eid__ledger_attempt_ok(const eid_ledger_attempt *a) {
    size_t n = strnlen(a->seq, sizeof a->seq);
    if (n == 0 || n > EID_LEDGER_SEQ_MAX) return false;
    for (size_t i = 0; i < n; i++)
        if (!byte_ok((unsigned char)a->seq[i], T_TEXT)) return false;
    return true;
}

const eid_ledger_attempt *eid__ledger_details(const eid_ledger_outcome *o, size_t *n) {
    if (o->details == NULL) {
        *n = 0;
        return NULL;
    }
    size_t skip = o->n_details > EID_LEDGER_DETAILS_MAX ? o->n_details - EID_LEDGER_DETAILS_MAX : 0;
    *n = o->n_details - skip;
    return o->details + skip;
}

void eid__ledger_apply(eid_ledger_entry *r, const eid_ledger_outcome *o, int64_t now) {
    int32_t old_attempts = r->attempts;
    r->late_pass = 0;
    if (o->intention) r->intention = 1;
    /* "Look again later": kept until an answer with a verdict, or none. */
    r->retry_later = o->has_verdict && !eid__ledger_settles(o->err_code);
    r->pulls++;
    r->last_pull_at = now;
    if (o->request_id && *o->request_id)
        add_request_id(r->request_ids, sizeof r->request_ids, o->request_id);
    if (o->attempts > r->attempts) r->attempts = o->attempts;
    if (o->billable > r->billable) r->billable = o->billable;
    /* "Flow not finished", "already completed", a service-side hiccup: no verdict. */
    if (!o->has_verdict || !eid__ledger_settles(o->err_code)) return;
    if (o->err_code == EID_ERRCODE_EXPIRED) { /* Tencent says the token expired */
        /* Also after our own TTL expiry: Tencent's word settles the token,
         * so it can be consumed (closed) exactly once. */
        if (r->state == EID_LEDGER_ISSUED || (r->state == EID_LEDGER_EXPIRED && !r->has_err_code)) {
            r->state = EID_LEDGER_EXPIRED;
            r->has_err_code = 1; /* settled: no last pull needed */
            r->err_code = EID_ERRCODE_EXPIRED;
        }
        return;
    }
    if (r->state == EID_LEDGER_CONSUMED) {
        apply_late(r, o, old_attempts);
        return;
    }
    bool verdict_free = r->state == EID_LEDGER_ISSUED || r->state == EID_LEDGER_EXPIRED ||
                        r->state == EID_LEDGER_ABANDONED;
    /* A failed verdict yields to one from a response that saw at least as
     * many attempts (the user retried on the same token); an older response
     * arriving late (a slow callback) cannot undo a newer one. */
    bool replace = r->state == EID_LEDGER_FAILED && o->attempts >= old_attempts &&
                   (o->err_code != r->err_code);
    if (!verdict_free && !replace) return;
    r->state = o->err_code == 0 ? EID_LEDGER_PASSED : EID_LEDGER_FAILED;
    r->has_err_code = 1;
    r->err_code = o->err_code;
    r->finished_at = now;
}

static eid_status check_owner(const eid_ledger_entry *r, const char *subject, eid_error *err) {
    if (!eid__ledger_same(r->subject, subject))
        return eid__fail(err, EID_E_LEDGER_WRONG_SUBJECT, "subject",
                         "the token is bound to another subject");
    return EID_OK;
}

eid_status eid__ledger_check_claim(const eid_ledger_entry *r, const char *subject, int64_t now,
                                   eid_error *err) {
    eid_status st = check_owner(r, subject, err);
    if (st) return st;
    if (r->state == EID_LEDGER_CONSUMED)
        return eid__fail(err, EID_E_LEDGER_CONSUMED, "token", "already consumed");
    if (r->state == EID_LEDGER_EXPIRED || r->state == EID_LEDGER_ABANDONED ||
        (r->state == EID_LEDGER_ISSUED && now >= r->expires_at))
        return eid__fail(err, EID_E_LEDGER_EXPIRED, "token", "expired with no result");
    return EID_OK;
}

eid_status eid__ledger_check_consume(const eid_ledger_entry *r, const char *subject, int64_t now,
                                     eid_error *err) {
    /* Expired with Tencent's EID_ERRCODE_EXPIRED is a verdict too: consuming it is
     * how a flow reports the expiry once. */
    if (r->state == EID_LEDGER_EXPIRED && r->has_err_code) return check_owner(r, subject, err);
    eid_status st = eid__ledger_check_claim(r, subject, now, err);
    if (st) return st;
    if (!has_verdict(r))
        return eid__fail(err, EID_E_LEDGER_PENDING, "token", "no result recorded yet");
    return EID_OK;
}

void eid__ledger_apply_consume(eid_ledger_entry *r, int64_t now) {
    r->state = EID_LEDGER_CONSUMED;
    r->consumed_at = now;
    r->settled_billable = r->billable;
}

/* A failure may turn into a pass until the TTL; one pull after the TTL sees
 * the attempts made just before it. */
static bool failure_due(const eid_ledger_entry *r, int64_t now) {
    return now < r->result_deadline &&
           (now < r->expires_at || r->last_pull_at < r->expires_at || r->retry_later);
}

bool eid__ledger_is_due(const eid_ledger_entry *r, int64_t now) {
    switch (r->state) {
    case EID_LEDGER_ISSUED: return now < r->result_deadline;
    case EID_LEDGER_FAILED: return failure_due(r, now);
    case EID_LEDGER_CONSUMED: return consumed_open(r) && failure_due(r, now);
    /* One last pull after the TTL catches a flow finished just before it. */
    case EID_LEDGER_EXPIRED:
        return now < r->result_deadline && !r->has_err_code &&
               (r->last_pull_at < r->expires_at || r->retry_later);
    default: return false;
    }
}

bool eid__ledger_is_open(const eid_ledger_entry *r, int64_t now) {
    return r->state == EID_LEDGER_ISSUED || r->state == EID_LEDGER_EXPIRED ||
           eid__ledger_is_due(r, now);
}

/* -------------------------------------------------------- token bucket */

bool eid__ledger_bucket_take(double *tokens, int64_t *last_ms, int64_t now_ms, double rate,
                             double burst, int cost, double *retry_after_s) {
    double t = *tokens;
    /* A clock behind the last refill (another node's, or one stepped back)
     * refills nothing and does not move the bucket back in time. */
    if (now_ms > *last_ms) {
        t += (double)(now_ms - *last_ms) * rate / 1000.0;
        *last_ms = now_ms;
    }
    if (t > burst) t = burst; /* also when the caller lowered burst */
    if (t < (double)cost) {
        *retry_after_s = ((double)cost - t) / rate;
        return false;
    }
    t -= (double)cost;
    if (t > burst) t = burst; /* a give to a bucket that refilled meanwhile */
    *tokens = t;
    *retry_after_s = 0.0;
    return true;
}

/* ------------------------------------------------------------- sealing */

static eid_status seal(const eid_ledger *l, const char *token, const void *data, size_t len,
                       unsigned char **out, size_t *out_len, eid_error *err) {
    eid_status st = EID_E_CRYPTO;
    EVP_CIPHER_CTX *ctx = NULL;
    size_t total = SEAL_HEAD + len + SEAL_TAG;
    unsigned char *buf = OPENSSL_malloc(total);
    if (buf == NULL) return eid__fail(err, EID_E_NOMEM, "payload", "out of memory");
    buf[0] = SEAL_VERSION;
    int n = 0, fin = 0;
    if (RAND_bytes(buf + 1, SEAL_NONCE) != 1) goto fail;
    if ((ctx = EVP_CIPHER_CTX_new()) == NULL) goto fail;
    if (EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, l->key, buf + 1) != 1 ||
        EVP_EncryptUpdate(ctx, NULL, &n, (const unsigned char *)token, (int)strlen(token)) != 1 ||
        EVP_EncryptUpdate(ctx, buf + SEAL_HEAD, &n, data, (int)len) != 1 ||
        EVP_EncryptFinal_ex(ctx, buf + SEAL_HEAD + n, &fin) != 1 ||
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, SEAL_TAG, buf + SEAL_HEAD + len) != 1)
        goto fail;
    EVP_CIPHER_CTX_free(ctx);
    *out = buf;
    *out_len = total;
    return EID_OK;
fail:
    EVP_CIPHER_CTX_free(ctx);
    OPENSSL_clear_free(buf, total);
    return eid__fail(err, st, "payload", "AES-256-GCM encryption failed");
}

static eid_status unseal(const eid_ledger *l, const char *token, const unsigned char *blob,
                         size_t blen, void *buf, size_t cap, size_t *len, eid_error *err) {
    if (blen < SEAL_HEAD + SEAL_TAG || blob[0] != SEAL_VERSION)
        return eid__fail(err, EID_E_CRYPTO, "payload", "stored payload is malformed");
    size_t plen = blen - SEAL_HEAD - SEAL_TAG;
    *len = plen;
    if (plen > cap) return eid__fail(err, EID_E_BUFFER_TOO_SMALL, "payload", "buffer too small");
    unsigned char *plain = OPENSSL_malloc(plen ? plen : 1);
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    int n = 0, fin = 0;
    bool ok =
        plain && ctx && EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, l->key, blob + 1) == 1 &&
        EVP_DecryptUpdate(ctx, NULL, &n, (const unsigned char *)token, (int)strlen(token)) == 1 &&
        EVP_DecryptUpdate(ctx, plain, &n, blob + SEAL_HEAD, (int)plen) == 1 &&
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, SEAL_TAG,
                            (void *)(blob + SEAL_HEAD + plen)) == 1 &&
        EVP_DecryptFinal_ex(ctx, plain + n, &fin) == 1;
    EVP_CIPHER_CTX_free(ctx);
    if (ok) memcpy(buf, plain, plen);
    if (plain) OPENSSL_clear_free(plain, plen ? plen : 1);
    if (!ok)
        return eid__fail(err, EID_E_CRYPTO, "payload",
                         "cannot decrypt: wrong payload key or altered data");
    return EID_OK;
}

/* --------------------------------------------------------------- public */

static eid_status parse_options(const eid_ledger_options *o, ledger_config *cfg, eid_error *err) {
    cfg->token_ttl = o && o->token_ttl ? o->token_ttl : EID_LEDGER_DEFAULT_TTL;
    cfg->result_window = o && o->result_window ? o->result_window : EID_LEDGER_RESULT_WINDOW;
    cfg->retention = o && o->retention ? o->retention : EID_LEDGER_REDIS_RETENTION;
    cfg->timeout_ms = o && o->timeout_ms ? o->timeout_ms : 5000;
    const int64_t year = 366 * 86400;
    if (cfg->token_ttl < 1 || cfg->token_ttl > year)
        return eid__fail(err, EID_E_INVALID_ARG, "token_ttl", "must be 1..%lld seconds",
                         (long long)year);
    if (cfg->result_window < 1 || cfg->result_window > year)
        return eid__fail(err, EID_E_INVALID_ARG, "result_window", "must be 1..%lld seconds",
                         (long long)year);
    if (cfg->retention < 1 || cfg->retention > 10 * year)
        return eid__fail(err, EID_E_INVALID_ARG, "retention", "must be 1..%lld seconds",
                         (long long)(10 * year));
    if (cfg->timeout_ms < 1 || cfg->timeout_ms > 600000)
        return eid__fail(err, EID_E_INVALID_ARG, "timeout_ms", "must be 1..600000");
    if (o && (o->payload_key || o->payload_key_len) &&
        (o->payload_key == NULL || o->payload_key_len != EID_LEDGER_KEY_LEN))
        return eid__fail(err, EID_E_INVALID_ARG, "payload_key", "must be exactly %d bytes",
                         EID_LEDGER_KEY_LEN);
    return EID_OK;
}

eid_status eid_ledger_check_url(const char *url, eid_error *err) {
    if (url == NULL) return eid__fail(err, EID_E_INVALID_ARG, "url", "required");
    size_t ulen = strnlen(url, EID_LEDGER_URL_MAX + 1);
    if (ulen > EID_LEDGER_URL_MAX)
        return eid__fail(err, EID_E_INVALID_ARG, "url", "longer than %d bytes", EID_LEDGER_URL_MAX);
    if (strncmp(url, "sqlite:", 7) == 0) {
        if (url[7] == '\0')
            return eid__fail(err, EID_E_INVALID_ARG, "url",
                             "sqlite: needs a path (sqlite:./eidkit.db)");
        return EID_OK;
    }
    if (strncmp(url, "redis://", 8) == 0) {
        eid_ledger_redis_url u;
        eid_status st = eid_ledger_redis_url_parse(url, &u, err);
        eid_ledger_redis_url_clear(&u);
        return st;
    }
    return eid__fail(err, EID_E_INVALID_ARG, "url",
                     "unknown scheme (expected sqlite:PATH or redis://HOST:PORT/DB)");
}

eid_status eid_ledger_open(const char *url, const eid_ledger_options *opts, eid_ledger **out,
                           eid_error *err) {
    if (out == NULL) return eid__fail(err, EID_E_INVALID_ARG, "out", "is NULL");
    *out = NULL;
    eid_status st = eid_ledger_check_url(url, err);
    if (st) return st;
    ledger_config cfg;
    st = parse_options(opts, &cfg, err);
    if (st) return st;

    /* eid_ledger_check_url let through only these two. */
    int sqlite = strncmp(url, "sqlite:", 7) == 0;
    const ledger_ops *ops = sqlite ? &eid__ledger_sqlite_ops : &eid__ledger_redis_ops;
    const char *location = url + (sqlite ? 7 : 8);

    eid_ledger *l = OPENSSL_zalloc(sizeof *l);
    if (l == NULL) return eid__fail(err, EID_E_NOMEM, "", "out of memory");
    if (pthread_mutex_init(&l->lock, NULL) != 0) {
        OPENSSL_free(l);
        return eid__fail(err, EID_E_NOMEM, "", "cannot create a mutex");
    }
    l->ops = ops;
    l->cfg = cfg;
    if (opts) l->clock = opts->clock;
    if (opts && opts->payload_key) {
        memcpy(l->key, opts->payload_key, EID_LEDGER_KEY_LEN);
        l->has_key = true;
    }
    st = ops == &eid__ledger_sqlite_ops ? eid__ledger_sqlite_open(location, &cfg, &l->be, err)
                                        : eid__ledger_redis_open(location, &cfg, &l->be, err);
    if (st) {
        eid_ledger_free(l);
        return st;
    }
    *out = l;
    return EID_OK;
}

void eid_ledger_free(eid_ledger *l) {
    if (l == NULL) return;
    if (l->be) l->ops->close(l->be);
    pthread_mutex_destroy(&l->lock);
    OPENSSL_clear_free(l, sizeof *l);
}

const char *eid_ledger_backend(const eid_ledger *l) { return l ? l->ops->name : "none"; }

/* In a batch SQLite rolled back, a call must fail, not run on its own
 * and commit what the batch's caller will report as failed. */
static eid_status batch_guard(const eid_ledger *l, eid_error *err) {
    if (l->batch && l->ops->batch_broken(l->be))
        return eid__fail(err, EID_E_LEDGER_STORAGE, l->ops->name,
                         "batch: an earlier error rolled its transaction back");
    return EID_OK;
}

#define LOCKED(l, call)                                                                            \
    do {                                                                                           \
        pthread_mutex_lock(&(l)->lock);                                                            \
        st = batch_guard(l, err);                                                                  \
        if (st == EID_OK) st = (call);                                                             \
        pthread_mutex_unlock(&(l)->lock);                                                          \
    } while (0)

int eid_ledger_batches(const eid_ledger *l) { return l && l->ops->batch_begin ? 1 : 0; }

eid_status eid_ledger_batch_begin(eid_ledger *l, eid_error *err) {
    if (l == NULL) return eid__fail(err, EID_E_INVALID_ARG, "ledger", "is NULL");
    if (l->ops->batch_begin == NULL)
        return eid__fail(err, EID_E_INVALID_ARG, "ledger", "the %s backend has no batches",
                         l->ops->name);
    eid_status st;
    pthread_mutex_lock(&l->lock);
    if (l->batch)
        st = eid__fail(err, EID_E_INVALID_ARG, "ledger", "a batch is already open");
    else if ((st = l->ops->batch_begin(l->be, err)) == EID_OK)
        l->batch = true;
    pthread_mutex_unlock(&l->lock);
    return st;
}

eid_status eid_ledger_batch_end(eid_ledger *l, eid_error *err) {
    if (l == NULL) return eid__fail(err, EID_E_INVALID_ARG, "ledger", "is NULL");
    eid_status st;
    pthread_mutex_lock(&l->lock);
    if (!l->batch) {
        st = eid__fail(err, EID_E_INVALID_ARG, "ledger", "no batch is open");
    } else {
        l->batch = false;
        st = l->ops->batch_end(l->be, err);
    }
    pthread_mutex_unlock(&l->lock);
    return st;
}

eid_status eid_ledger_issue(eid_ledger *l, const eid_ledger_issue_params *in, eid_error *err) {
    if (l == NULL) return eid__fail(err, EID_E_INVALID_ARG, "ledger", "is NULL");
    if (in == NULL) return eid__fail(err, EID_E_INVALID_ARG, "params", "is NULL");
    eid_status st;
    if ((st = eid_ledger_check_issue(in, err))) return st;
    eid_ledger_entry r;
    memset(&r, 0, sizeof r);
    r.created_at = in->created_at ? in->created_at : now_of(l);
    if (r.created_at < 0 || r.created_at > EID_TIMESTAMP_MAX)
        return eid__fail(err, EID_E_INVALID_ARG, "created_at", "out of range");
    r.expires_at = in->expires_at ? in->expires_at : r.created_at + l->cfg.token_ttl;
    if (r.expires_at <= r.created_at || r.expires_at > EID_TIMESTAMP_MAX)
        return eid__fail(err, EID_E_INVALID_ARG, "expires_at", "must be after created_at");
    r.result_deadline = r.created_at + l->cfg.result_window;
    r.intention = in->intention != 0;
    strcpy(r.token, in->token);
    strcpy(r.merchant_id, in->merchant_id);
    strcpy(r.subject, in->subject);
    if (in->extra) strcpy(r.extra, in->extra);
    r.state = EID_LEDGER_ISSUED;
    LOCKED(l, l->ops->issue(l->be, &r, err));
    return st;
}

eid_status eid_ledger_check_issue(const eid_ledger_issue_params *in, eid_error *err) {
    if (in == NULL) return eid__fail(err, EID_E_INVALID_ARG, "params", "is NULL");
    eid_status st;
    if ((st = check_token(err, in->token))) return st;
    if ((st = check_text(err, "merchant_id", in->merchant_id, EID_LEDGER_MERCHANT_MAX, T_VISIBLE,
                         false)))
        return st;
    if ((st = check_subject(err, in->subject))) return st;
    if (in->extra &&
        (st = check_text(err, "extra", in->extra, EID_LEDGER_EXTRA_MAX, T_EXTRA, true)))
        return st;
    return EID_OK;
}

eid_status eid_ledger_check_claim(const char *bound_subject, int state, int64_t expires_at,
                                  const char *subject, int64_t now, eid_error *err) {
    if (bound_subject == NULL || subject == NULL)
        return eid__fail(err, EID_E_INVALID_ARG, "subject", "is NULL");
    size_t n = strlen(bound_subject);
    /* Never compare a cut copy: a stored subject is at most this long. */
    if (n > EID_LEDGER_SUBJECT_MAX)
        return eid__fail(err, EID_E_INVALID_ARG, "subject", "stored subject too long");
    eid_ledger_entry r;
    memset(&r, 0, sizeof r);
    memcpy(r.subject, bound_subject, n + 1);
    r.state = (eid_ledger_state)state;
    r.expires_at = expires_at;
    return eid__ledger_check_claim(&r, subject, now, err);
}

eid_status eid_ledger_get(eid_ledger *l, const char *token, eid_ledger_entry *out, eid_error *err) {
    if (l == NULL || out == NULL) return eid__fail(err, EID_E_INVALID_ARG, "ledger", "is NULL");
    eid_status st;
    if ((st = check_token(err, token))) return st;
    LOCKED(l, l->ops->get(l->be, token, out, err));
    if (st == EID_OK) out->open = eid__ledger_is_open(out, now_of(l));
    return st;
}

eid_status eid_ledger_claim(eid_ledger *l, const char *token, const char *subject,
                            eid_ledger_entry *out, eid_error *err) {
    if (l == NULL) return eid__fail(err, EID_E_INVALID_ARG, "ledger", "is NULL");
    eid_status st;
    if ((st = check_token(err, token)) || (st = check_subject(err, subject))) return st;
    eid_ledger_entry r;
    pthread_mutex_lock(&l->lock);
    st = batch_guard(l, err);
    if (st == EID_OK) st = l->ops->get(l->be, token, &r, err);
    if (st == EID_OK) st = eid__ledger_check_claim(&r, subject, now_of(l), err);
    pthread_mutex_unlock(&l->lock);
    if (st == EID_OK && out) *out = r;
    return st;
}

eid_status eid__ledger_check_outcome(const char *token, const eid_ledger_outcome *o,
                                     eid_error *err) {
    eid_status st;
    if ((st = check_token(err, token))) return st;
    if (o->attempts < 0 || o->billable < 0 || o->billable > o->attempts)
        return eid__fail(err, EID_E_INVALID_ARG, "outcome",
                         "billable and attempts must be 0 <= billable <= attempts");
    if (o->request_id && *o->request_id &&
        (st = check_text(err, "request_id", o->request_id, EID_LEDGER_REQUEST_ID_MAX, T_REQUEST_ID,
                         false)))
        return st;
    if (o->payload == NULL && o->payload_len)
        return eid__fail(err, EID_E_INVALID_ARG, "payload", "NULL with a non-zero length");
    if (o->details == NULL && o->n_details)
        return eid__fail(err, EID_E_INVALID_ARG, "details", "NULL with a non-zero count");
    return EID_OK;
}

int64_t eid_ledger_clock_cell(void *ud) { return ud ? *(const int64_t *)ud : 0; }

int eid_ledger_is_due(const eid_ledger_entry *e, int64_t now) {
    return e != NULL && eid__ledger_is_due(e, now);
}

int eid_ledger_is_open(const eid_ledger_entry *e, int64_t now) {
    return e != NULL && eid__ledger_is_open(e, now);
}

/* What every record does before its backend: check the call, seal its
 * payload (*blob: OPENSSL_malloc'd, or NULL for none). */
static eid_status prepare_record(eid_ledger *l, const char *token, const eid_ledger_outcome *o,
                                 unsigned char **blob, size_t *blen, eid_error *err) {
    *blob = NULL;
    *blen = 0;
    if (o == NULL) return eid__fail(err, EID_E_INVALID_ARG, "outcome", "is NULL");
    eid_status st;
    if ((st = eid__ledger_check_outcome(token, o, err))) return st;
    if (o->payload) {
        if (!l->has_key)
            return eid__fail(err, EID_E_INVALID_ARG, "payload",
                             "no payload key configured (payloads are only stored encrypted)");
        if (o->payload_len > EID_LEDGER_PAYLOAD_MAX)
            return eid__fail(err, EID_E_INVALID_ARG, "payload", "longer than %d bytes",
                             EID_LEDGER_PAYLOAD_MAX);
        if ((st = seal(l, token, o->payload, o->payload_len, blob, blen, err))) return st;
    }
    return EID_OK;
}

/* eid_ledger_record at now (0: the ledger's clock). */
static eid_status record_at(eid_ledger *l, const char *token, const eid_ledger_outcome *o,
                            int64_t now, eid_ledger_entry *out, eid_error *err) {
    unsigned char *blob;
    size_t blen;
    eid_status st = prepare_record(l, token, o, &blob, &blen, err);
    if (st) return st;
    eid_ledger_entry r;
    LOCKED(l, l->ops->record(l->be, token, o, blob, blen, now ? now : now_of(l), &r, err));
    OPENSSL_free(blob);
    if (st == EID_OK && out) *out = r;
    return st;
}

eid_status eid_ledger_record(eid_ledger *l, const char *token, const eid_ledger_outcome *o,
                             eid_ledger_entry *out, eid_error *err) {
    if (l == NULL) return eid__fail(err, EID_E_INVALID_ARG, "ledger", "is NULL");
    return record_at(l, token, o, 0, out, err);
}

int eid_ledger_pipelines(const eid_ledger *l) { return l && l->ops->record_many ? 1 : 0; }

void eid_ledger_record_many(eid_ledger *l, eid_ledger_record_call *calls, size_t n) {
    if (calls == NULL) return;
    for (size_t i = 0; i < n; i++)
        memset(&calls[i].err, 0, sizeof calls[i].err);
    ledger_record_item *items = NULL;
    /* Alone, in a batch (SQLite's transaction) or without pipelines: one at
     * a time, as the caller would have made them. */
    if (l && l->ops->record_many && !l->batch && n > 1) items = OPENSSL_zalloc(n * sizeof *items);
    if (items == NULL) {
        for (size_t i = 0; i < n; i++) {
            eid_ledger_record_call *c = &calls[i];
            c->st = l ? record_at(l, c->token, c->outcome, c->now, c->out, &c->err)
                      : eid__fail(&c->err, EID_E_INVALID_ARG, "ledger", "is NULL");
        }
        return;
    }
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        eid_ledger_record_call *c = &calls[i];
        unsigned char *blob;
        size_t blen;
        if ((c->st = prepare_record(l, c->token, c->outcome, &blob, &blen, &c->err))) continue;
        items[m] = (ledger_record_item){.token = c->token,
                                        .o = c->outcome,
                                        .blob = blob,
                                        .blob_len = blen,
                                        .now = c->now ? c->now : now_of(l),
                                        .call = i};
        m++;
    }
    pthread_mutex_lock(&l->lock);
    if (m) l->ops->record_many(l->be, items, m);
    pthread_mutex_unlock(&l->lock);
    for (size_t k = 0; k < m; k++) {
        eid_ledger_record_call *c = &calls[items[k].call];
        c->st = items[k].st;
        c->err = items[k].err;
        if (c->st == EID_OK && c->out) *c->out = items[k].out;
        OPENSSL_free((void *)items[k].blob);
    }
    OPENSSL_free(items);
}

/* Attempts in reconciliation order: by ReqTime, then Seq. */
static int attempt_order(const void *pa, const void *pb) {
    const eid_ledger_attempt *a = pa, *b = pb;
    if (a->req_time_ms != b->req_time_ms) return a->req_time_ms < b->req_time_ms ? -1 : 1;
    return strcmp(a->seq, b->seq);
}

void eid__ledger_sort_attempts(eid_ledger_attempt *a, size_t n) {
    if (n > 1) qsort(a, n, sizeof *a, attempt_order);
}

eid_status eid_ledger_attempts(eid_ledger *l, const char *token, eid_ledger_attempt *out,
                               size_t cap, size_t *n, eid_error *err) {
    if (l == NULL || n == NULL || (out == NULL && cap))
        return eid__fail(err, EID_E_INVALID_ARG, "ledger", "NULL argument");
    *n = 0;
    eid_status st;
    if ((st = check_token(err, token))) return st;
    eid_ledger_attempt *all = NULL;
    size_t count = 0;
    LOCKED(l, l->ops->attempts(l->be, token, &all, &count, err));
    if (st) return st;
    eid__ledger_sort_attempts(all, count);
    if (count && cap) memcpy(out, all, (count < cap ? count : cap) * sizeof *all);
    OPENSSL_free(all);
    *n = count;
    if (count > cap)
        return eid__fail(err, EID_E_BUFFER_TOO_SMALL, "attempts", "%zu stored, room for %zu", count,
                         cap);
    return EID_OK;
}

eid_status eid_ledger_consume(eid_ledger *l, const char *token, const char *subject,
                              eid_ledger_entry *out, eid_error *err) {
    if (l == NULL) return eid__fail(err, EID_E_INVALID_ARG, "ledger", "is NULL");
    eid_status st;
    if ((st = check_token(err, token)) || (st = check_subject(err, subject))) return st;
    eid_ledger_entry r;
    LOCKED(l, l->ops->consume(l->be, token, subject, now_of(l), &r, err));
    if (st == EID_OK && out) *out = r;
    return st;
}

eid_status eid_ledger_due(eid_ledger *l, eid_ledger_entry *out, size_t cap, size_t *n,
                          eid_error *err) {
    if (l == NULL || n == NULL || (out == NULL && cap))
        return eid__fail(err, EID_E_INVALID_ARG, "ledger", "NULL argument");
    *n = 0;
    if (cap == 0) return EID_OK;
    eid_status st;
    LOCKED(l, l->ops->due(l->be, now_of(l), out, cap, n, err));
    return st;
}

eid_status eid_ledger_export(eid_ledger *l, int64_t from, int64_t to, int64_t after_created,
                             const char *after_token, eid_ledger_entry *out, size_t cap, size_t *n,
                             eid_error *err) {
    if (l == NULL || n == NULL || (out == NULL && cap))
        return eid__fail(err, EID_E_INVALID_ARG, "ledger", "NULL argument");
    *n = 0;
    eid_status st;
    if (to == 0) to = INT64_MAX; /* open-ended */
    if (from > to) return eid__fail(err, EID_E_INVALID_ARG, "from", "after 'to'");
    if (after_token && *after_token && (st = check_token(err, after_token))) return st;
    if (cap == 0) return EID_OK;
    LOCKED(l, l->ops->export(l->be, from, to, after_created,
                             after_token && *after_token ? after_token : NULL, out, cap, n, err));
    int64_t now = now_of(l);
    for (size_t i = 0; st == EID_OK && i < *n; i++)
        out[i].open = eid__ledger_is_open(&out[i], now);
    return st;
}

eid_status eid_ledger_expire(eid_ledger *l, int64_t now, uint64_t *expired, uint64_t *abandoned,
                             eid_error *err) {
    if (l == NULL) return eid__fail(err, EID_E_INVALID_ARG, "ledger", "is NULL");
    uint64_t e = 0, a = 0;
    eid_status st;
    LOCKED(l, l->ops->expire(l->be, now ? now : now_of(l), &e, &a, err));
    if (expired) *expired = e;
    if (abandoned) *abandoned = a;
    return st;
}

eid_status eid_ledger_stats(eid_ledger *l, eid_ledger_counts *out, eid_error *err) {
    if (l == NULL || out == NULL) return eid__fail(err, EID_E_INVALID_ARG, "ledger", "is NULL");
    memset(out, 0, sizeof *out);
    eid_status st;
    LOCKED(l, l->ops->stats(l->be, now_of(l), out, err));
    return st;
}

eid_status eid_ledger_payload(eid_ledger *l, const char *token, void *buf, size_t cap, size_t *len,
                              eid_error *err) {
    if (l == NULL || len == NULL || (buf == NULL && cap))
        return eid__fail(err, EID_E_INVALID_ARG, "ledger", "NULL argument");
    *len = 0;
    eid_status st;
    if ((st = check_token(err, token))) return st;
    if (!l->has_key)
        return eid__fail(err, EID_E_INVALID_ARG, "payload", "no payload key configured");
    unsigned char *blob = NULL;
    size_t blen = 0;
    LOCKED(l, l->ops->payload(l->be, token, &blob, &blen, err));
    if (st) return st;
    if (blob == NULL) return eid__fail(err, EID_E_LEDGER_PENDING, "payload", "none stored");
    st = unseal(l, token, blob, blen, buf, cap, len, err);
    OPENSSL_free(blob);
    return st;
}

/* Kept past an idle bucket's longest refill, so a node whose clock is a
 * little behind still finds it. */
#define BUCKET_TTL_MARGIN_MS 1000

eid_status eid_ledger_check_take(const char *key, double rate, double burst, int64_t now_ms,
                                 int64_t *ttl_ms, eid_error *err) {
    if (ttl_ms == NULL) return eid__fail(err, EID_E_INVALID_ARG, "ttl_ms", "is NULL");
    eid_status st;
    if ((st = check_text(err, "key", key, EID_LEDGER_BUCKET_KEY_MAX, T_TEXT, false))) return st;
    if (!isfinite(rate) || rate <= 0)
        return eid__fail(err, EID_E_INVALID_ARG, "rate", "must be a positive number per second");
    if (!isfinite(burst) || burst < 1)
        return eid__fail(err, EID_E_INVALID_ARG, "burst", "must be a number >= 1");
    double refill = burst / rate; /* seconds for an empty bucket to fill */
    if (!(refill <= EID_LEDGER_BUCKET_REFILL_MAX))
        return eid__fail(err, EID_E_INVALID_ARG, "rate",
                         "too slow: burst / rate must be at most %d seconds",
                         EID_LEDGER_BUCKET_REFILL_MAX);
    if (now_ms < 0 || now_ms > EID_TIMESTAMP_MAX * 1000)
        return eid__fail(err, EID_E_INVALID_ARG, "now_ms", "out of range");
    *ttl_ms = (int64_t)(refill * 1000.0) + 1 + BUCKET_TTL_MARGIN_MS; /* rounded up */
    return EID_OK;
}

/* One bucket step of cost 1 (take) or -1 (give). */
static eid_status bucket(eid_ledger *l, const char *key, double rate, double burst, int64_t now_ms,
                         int cost, int *allowed, double *retry_after_s, eid_error *err) {
    eid_status st;
    int64_t ttl_ms;
    if ((st = eid_ledger_check_take(key, rate, burst, now_ms, &ttl_ms, err))) return st;
    double retry = 0.0;
    pthread_mutex_lock(&l->lock);
    int64_t now = now_ms ? now_ms : now_ms_of(l);
    st = batch_guard(l, err);
    if (st == EID_OK)
        st = l->ops->take(l->be, key, rate, burst, now, ttl_ms, cost, allowed, &retry, err);
    pthread_mutex_unlock(&l->lock);
    if (st) *allowed = 0;
    if (retry_after_s && st == EID_OK && !*allowed) *retry_after_s = retry;
    return st;
}

eid_status eid_ledger_take(eid_ledger *l, const char *key, double rate, double burst,
                           int64_t now_ms, int *allowed, double *retry_after_s, eid_error *err) {
    if (allowed) *allowed = 0;
    if (retry_after_s) *retry_after_s = 0.0;
    if (l == NULL || allowed == NULL)
        return eid__fail(err, EID_E_INVALID_ARG, "ledger", "NULL argument");
    return bucket(l, key, rate, burst, now_ms, 1, allowed, retry_after_s, err);
}

eid_status eid_ledger_give(eid_ledger *l, const char *key, double rate, double burst,
                           int64_t now_ms, eid_error *err) {
    if (l == NULL) return eid__fail(err, EID_E_INVALID_ARG, "ledger", "NULL argument");
    int allowed = 0;
    return bucket(l, key, rate, burst, now_ms, -1, &allowed, NULL, err);
}
