/* The token ledger's front (ledger.c) and its backends (ledger_sqlite.c,
 * ledger_redis.c); not installed. The front validates input, reads the
 * clock, encrypts payloads and holds the lock; a backend stores records and
 * makes each transition atomic. */
#ifndef EIDKIT_LEDGER_INTERNAL_H
#define EIDKIT_LEDGER_INTERNAL_H

#include "eidkit/ledger.h"

#include "internal.h"

#include <stdbool.h>

/* The WAL length, in pages, at which the SQLite ledger checkpoints
 * (ledger_sqlite.c says why this many); test_ledger fills the WAL past it. */
#define EID__SQLITE_CHECKPOINT_PAGES 10000

/* Settings a backend needs, resolved from eid_ledger_options. */
typedef struct ledger_config {
    int64_t token_ttl, result_window, retention;
    int timeout_ms;
} ledger_config;

/* One record of a pipeline (ledger_ops.record_many). */
typedef struct ledger_record_item {
    const char *token;
    const eid_ledger_outcome *o;
    const unsigned char *blob; /* the sealed payload, or NULL to keep the stored one */
    size_t blob_len;
    int64_t now;
    size_t call; /* its index among eid_ledger_record_many's calls */
    eid_ledger_entry out;
    eid_status st;
    eid_error err;
} ledger_record_item;

typedef struct ledger_ops {
    const char *name;
    void (*close)(void *be);
    /* rec is complete (state issued, all times set). */
    eid_status (*issue)(void *be, const eid_ledger_entry *rec, eid_error *err);
    eid_status (*get)(void *be, const char *token, eid_ledger_entry *out, eid_error *err);
    /* blob: the sealed payload, or NULL to keep the stored one. */
    eid_status (*record)(void *be, const char *token, const eid_ledger_outcome *o,
                         const unsigned char *blob, size_t blob_len, int64_t now,
                         eid_ledger_entry *out, eid_error *err);
    /* Every stored attempt of token into *out (OPENSSL_malloc'd, caller
     * frees; NULL with *n 0: none), in any order; _UNKNOWN if no token. */
    eid_status (*attempts)(void *be, const char *token, eid_ledger_attempt **out, size_t *n,
                           eid_error *err);
    eid_status (*consume)(void *be, const char *token, const char *subject, int64_t now,
                          eid_ledger_entry *out, eid_error *err);
    eid_status (*due)(void *be, int64_t now, eid_ledger_entry *out, size_t cap, size_t *n,
                      eid_error *err);
    eid_status (*export)(void *be, int64_t from, int64_t to, int64_t after_created,
                         const char *after_token, eid_ledger_entry *out, size_t cap, size_t *n,
                         eid_error *err);
    eid_status (*expire)(void *be, int64_t now, uint64_t *expired, uint64_t *abandoned,
                         eid_error *err);
    eid_status (*stats)(void *be, int64_t now, eid_ledger_counts *out, eid_error *err);
    /* *blob is OPENSSL_malloc'd (caller frees); NULL with EID_OK: none. */
    eid_status (*payload)(void *be, const char *token, unsigned char **blob, size_t *len,
                          eid_error *err);
    /* Arguments checked; now_ms resolved; ttl_ms: how long an idle bucket is
     * kept (its longest refill and a margin). */
    eid_status (*take)(void *be, const char *key, double rate, double burst, int64_t now_ms,
                       int64_t ttl_ms, int cost, int *allowed, double *retry_after_s,
                       eid_error *err);
    /* Optional (NULL: no batches; eid_ledger_batch_begin refuses). begin
     * opens the batch's transaction; broken: an error has since ended it;
     * end commits it (or says why it cannot) and always leaves the batch. */
    eid_status (*batch_begin)(void *be, eid_error *err);
    bool (*batch_broken)(void *be);
    eid_status (*batch_end)(void *be, eid_error *err);
    /* Optional (NULL: eid_ledger_record_many calls record for each). The n
     * items, checked and sealed, in one round trip; sets each st, out, err. */
    void (*record_many)(void *be, struct ledger_record_item *items, size_t n);
} ledger_ops;

/* Open functions: location is what follows the scheme ("./x.db", or
 * "host:port/db?prefix=p" for Redis). */
eid_status eid__ledger_sqlite_open(const char *location, const ledger_config *cfg, void **be,
                                   eid_error *err);
eid_status eid__ledger_redis_open(const char *location, const ledger_config *cfg, void **be,
                                  eid_error *err);
extern const ledger_ops eid__ledger_sqlite_ops;
extern const ledger_ops eid__ledger_redis_ops;

/* The state machine, shared by the front and the SQLite backend; the Redis
 * scripts (lua/eidkit/ledger/redis/) implement the same rules and the
 * conformance spec holds both to them. */

/* Does Text.ErrCode code give a verdict (eid_errcode_lookup: anything but
 * EID_VERDICT_NONE; an unknown code is a failure)? */
bool eid__ledger_settles(int64_t code);
/* Apply outcome o at now to r (idempotent; never erases a final verdict). */
void eid__ledger_apply(eid_ledger_entry *r, const eid_ledger_outcome *o, int64_t now);
/* The consume transition itself (after eid__ledger_check_consume). */
void eid__ledger_apply_consume(eid_ledger_entry *r, int64_t now);
/* May subject consume r at now? EID_OK or the refusal. */
eid_status eid__ledger_check_consume(const eid_ledger_entry *r, const char *subject, int64_t now,
                                     eid_error *err);
/* May subject claim r at now? */
eid_status eid__ledger_check_claim(const eid_ledger_entry *r, const char *subject, int64_t now,
                                   eid_error *err);
/* Must r's result still be pulled at now? */
bool eid__ledger_is_due(const eid_ledger_entry *r, int64_t now);
/* May r still change without a pull (due, or issued/expired and so waiting
 * to expire or be abandoned)? The Redis due index keeps exactly these. */
bool eid__ledger_is_open(const eid_ledger_entry *r, int64_t now);
/* Constant-time equality of two NUL-terminated strings (length leaks). */
bool eid__ledger_same(const char *a, const char *b);

/* The token bucket rule, shared by the front and the SQLite backend (the
 * Redis script take.lua does the same arithmetic in the same order).
 * *tokens and *last_ms are the stored state (for a bucket not stored: burst
 * and now_ms). Refills up to burst; then cost 1 takes one token and returns
 * true, or returns false with *retry_after_s; cost -1 (eid_ledger_give) puts
 * one back, never above burst, and returns true. The state is to be stored
 * only when true (a refusal changes nothing). */
bool eid__ledger_bucket_take(double *tokens, int64_t *last_ms, int64_t now_ms, double rate,
                             double burst, int cost, double *retry_after_s);

/* The checks eid_ledger_record makes on token and o (not the payload key):
 * every client that records, the nginx one included, makes them. */
eid_status eid__ledger_check_outcome(const char *token, const eid_ledger_outcome *o,
                                     eid_error *err);

/* The record script's arguments (ARGV) for o at now, as the Redis backend
 * sends them; blob (may be NULL: keep the stored payload) is referenced,
 * not copied. */
struct eid_ledger_redis_args {
    size_t n;
    const char **argv;
    size_t *lens;
};
eid_status eid__ledger_redis_record_args(const eid_ledger_outcome *o, int64_t now,
                                         const unsigned char *blob, size_t blen,
                                         eid_ledger_redis_args **out, eid_error *err);

/* Attempts in the order eid_ledger_attempts returns them (ReqTime, Seq). */
void eid__ledger_sort_attempts(eid_ledger_attempt *a, size_t n);

/* May attempt a be stored (its Seq usable as a key)? */
bool eid__ledger_attempt_ok(const eid_ledger_attempt *a);
/* The details of o that are stored: the last EID_LEDGER_DETAILS_MAX. */
const eid_ledger_attempt *eid__ledger_details(const eid_ledger_outcome *o, size_t *n);

/* Bounded copy that always terminates; returns false if src was cut. */
bool eid__ledger_copy(char *dst, size_t cap, const char *src, size_t len);

#endif
