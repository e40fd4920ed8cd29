/*
 * eidkit token ledger: the life of every EidToken, from issue to consume.
 *
 * States (docs/internals/ledger.md has the full transition table):
 *
 *   issued --record(verdict)--> passed | failed --consume--> consumed
 *   issued --expire (TTL over, no verdict) / EID_ERRCODE_EXPIRED--> expired
 *   issued | expired --expire (result window over)--> abandoned
 *
 * A verdict is Text.ErrCode from GetEidResult: 0 is passed, anything else
 * failed, except the codes eidkit/errcode.h calls EID_VERDICT_NONE ("flow
 * not finished", "already completed", service-side and transient), which
 * count as no verdict: only a pull. A passed verdict is
 * final. A failed one is final once the token's TTL is over; before that the
 * user may retry on the same token, so a later pull may turn it into passed.
 * Consuming a failed verdict freezes what the merchant was told, not what
 * Tencent bills: such a token stays due until its TTL is over (and one pull
 * after it), and a later verdict lands as the entry's late verdict.
 * Attempts and billable counts only ever grow.
 *
 * Backends, chosen by URL:
 *   sqlite:PATH                 (sqlite:./eidkit.db, sqlite::memory:)
 *   redis://[[USER]:PASSWORD@]HOST:PORT[/DB][?prefix=P]
 *                               (USER and PASSWORD percent-encoded; with
 *                               them the backend sends AUTH on every new
 *                               connection)
 * Every transition is atomic across processes (SQLite: one IMMEDIATE
 * transaction; Redis: one server-side Lua script on one hash slot).
 *
 * Conventions are those of eidkit.h: eid_status results, caller-owned output
 * structs, an optional eid_error with a message that names the field at fault
 * and never contains a subject, token or key.
 *
 * Names: eid_ledger_<verb> for each operation, and the same verb for the Lua
 * method (eid_ledger_issue is ledger:issue, eid_ledger_record is
 * ledger:record, ...). The structs are named for what they hold:
 * eid_ledger_issue_params (what issue stores), eid_ledger_outcome (what
 * record applies), eid_ledger_entry (one stored token), eid_ledger_counts
 * (what stats counts).
 */
#ifndef EIDKIT_LEDGER_H
#define EIDKIT_LEDGER_H

#include "eidkit.h"
#include "errcode.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Input limits (bytes, NUL excluded). */
#define EID_LEDGER_TOKEN_MAX       128  /* [A-Za-z0-9._-] */
#define EID_LEDGER_MERCHANT_MAX    64   /* printable ASCII, no spaces */
#define EID_LEDGER_SUBJECT_MAX     128  /* no control bytes */
#define EID_LEDGER_EXTRA_MAX       1024 /* no control bytes except tab */
#define EID_LEDGER_REQUEST_ID_MAX  64   /* printable ASCII, no spaces or ',' */
#define EID_LEDGER_REQUEST_IDS     16   /* the most recent ids kept per token */
#define EID_LEDGER_PAYLOAD_MAX     (1024 * 1024)
#define EID_LEDGER_URL_MAX         1024
#define EID_LEDGER_DEFAULT_TTL     7200        /* s; the integration guide's EidToken TTL */
#define EID_LEDGER_RESULT_WINDOW   (3 * 86400) /* s; Tencent keeps results 3 days */
#define EID_LEDGER_REDIS_RETENTION (7 * 86400) /* s kept in Redis after the window */
#define EID_LEDGER_KEY_LEN         32          /* AES-256-GCM payload key */
/* Per-attempt records (eid_ledger_attempt): LivenessDetail fields kept. */
#define EID_LEDGER_SEQ_MAX     64  /* Seq: no control bytes */
#define EID_LEDGER_SIM_MAX     16  /* Sim, as Tencent's string ("95.27") */
#define EID_LEDGER_LIBTYPE_MAX 64  /* CompareLibType (UTF-8) */
#define EID_LEDGER_DETAILS_MAX 100 /* LivenessDetail entries one record call stores */
/* Token buckets (eid_ledger_take). */
#define EID_LEDGER_BUCKET_KEY_MAX    256           /* no control bytes (UTF-8 allowed) */
#define EID_LEDGER_BUCKET_REFILL_MAX (366 * 86400) /* s; burst / rate, an empty bucket's refill */

/* Two of Tencent's Text.ErrCode values the ledger names (eid_errcode_lookup
 * has them all). */
#define EID_ERRCODE_EXPIRED 15 /* the EidToken expired: the token settles as expired */
#define EID_ERRCODE_PENDING 17 /* the flow is not finished: no verdict, only a pull */

typedef enum eid_ledger_state {
    EID_LEDGER_ISSUED = 0,
    EID_LEDGER_PASSED = 1,
    EID_LEDGER_FAILED = 2,
    EID_LEDGER_CONSUMED = 3,
    EID_LEDGER_EXPIRED = 4,
    EID_LEDGER_ABANDONED = 5
} eid_ledger_state;
#define EID_LEDGER_STATES 6

/* "issued", "passed", ...; "unknown" for other values. Thread-safe. */
EID_API const char *eid_ledger_state_name(eid_ledger_state state);

typedef struct eid_ledger eid_ledger;

/* One liveness+compare attempt: a Text.LivenessDetail entry, stored once per
 * (token, seq) however often it is pulled. Never a name or ID number (the
 * entry's Idcard and Name are not kept). Strings longer than their field are
 * cut; a Seq that is empty, too long or has control bytes is not stored. */
typedef struct eid_ledger_attempt {
    char seq[EID_LEDGER_SEQ_MAX + 1];
    int64_t req_time_ms; /* ReqTime: Unix milliseconds; 0 when absent or not a number */
    int has_err_code;
    int64_t err_code; /* Errcode */
    int is_need_charge;
    char sim[EID_LEDGER_SIM_MAX + 1];
    int has_liveness_mode;
    int64_t liveness_mode;
    char compare_lib_type[EID_LEDGER_LIBTYPE_MAX + 1];
} eid_ledger_attempt;

typedef struct eid_ledger_options {
    eid_clock clock;       /* NULL now: time(2) */
    int64_t token_ttl;     /* s; 0: EID_LEDGER_DEFAULT_TTL */
    int64_t result_window; /* s after created_at; 0: EID_LEDGER_RESULT_WINDOW */
    int64_t retention;     /* Redis: s kept after the window; 0: EID_LEDGER_REDIS_RETENTION */
    int timeout_ms;        /* SQLite busy timeout / Redis connect+command timeout; 0: 5000 */
    /* Opt-in payload encryption: 32 bytes, copied (and wiped on free). NULL:
     * payloads are refused, so nothing is ever stored in the clear. */
    const unsigned char *payload_key;
    size_t payload_key_len;
} eid_ledger_options;

/* What a merchant stores when GetEidToken returns: the input of
 * eid_ledger_issue. */
typedef struct eid_ledger_issue_params {
    const char *token;       /* EidToken, required */
    const char *merchant_id; /* MerchantId, required */
    const char *subject;     /* the merchant's own user/order id, required */
    const char *extra;       /* Extra as sent to Tencent; NULL: "" */
    int64_t created_at;      /* 0: the ledger's clock */
    int64_t expires_at;      /* 0: created_at + token_ttl */
    int intention;           /* Config.UseIntentionVerify: priced differently */
} eid_ledger_issue_params;

/* A GetEidResult response, digested: the input of eid_ledger_record (the Lua
 * binding builds it from the response table; see eidkit.ledger). */
typedef struct eid_ledger_outcome {
    int has_verdict;        /* Text.ErrCode present; 0: still pending */
    int64_t err_code;       /* Text.ErrCode */
    int32_t attempts;       /* #Text.LivenessDetail */
    int32_t billable;       /* entries with IsNeedCharge == true */
    const char *request_id; /* RequestId; NULL or "": none */
    /* The LivenessDetail entries (at most EID_LEDGER_DETAILS_MAX are
     * stored, the last ones); NULL with 0: none. */
    const eid_ledger_attempt *details;
    size_t n_details;
    int intention; /* IsVerifyIntention was true: marks the token (never unmarks) */
    /* Optional result payload (e.g. the response JSON), stored encrypted
     * with AES-256-GCM; needs payload_key. NULL: keep the stored one. */
    const void *payload;
    size_t payload_len;
} eid_ledger_outcome;

/* One ledger entry: a stored token. No names or ID numbers: only what the
 * merchant gave at issue and what the ledger derived from results. */
typedef struct eid_ledger_entry {
    char token[EID_LEDGER_TOKEN_MAX + 1];
    char merchant_id[EID_LEDGER_MERCHANT_MAX + 1];
    char subject[EID_LEDGER_SUBJECT_MAX + 1];
    char extra[EID_LEDGER_EXTRA_MAX + 1];
    eid_ledger_state state;
    int64_t created_at, expires_at, result_deadline;
    int64_t finished_at;  /* first verdict; 0: none */
    int64_t consumed_at;  /* 0: not consumed */
    int64_t last_pull_at; /* 0: never pulled */
    int32_t pulls;        /* eid_ledger_record calls */
    int32_t attempts;     /* liveness+compare attempts seen */
    int32_t billable;     /* attempts with IsNeedCharge */
    int has_err_code;
    int64_t err_code; /* the verdict's Text.ErrCode when has_err_code */
    /* Tencent's verdict recorded after the token was consumed with a failure
     * (the user retried on the same token), when it differs from err_code:
     * err_code stays what the merchant was told. A late 0 is final. */
    int has_late_err_code;
    int64_t late_err_code;
    int32_t settled_billable; /* billable when consumed; 0 before */
    int intention;            /* issued with intention verification, or a result said so */
    /* The last pull answered an ErrCode that is no verdict (EID_VERDICT_NONE:
     * 14, 17, the service-side 1006/1007/2017): Tencent may still answer,
     * so the token stays due until its result window. */
    int retry_later;
    /* Set only by eid_ledger_get and eid_ledger_export: the token may still
     * change (be pulled, retried on, expired), as of the ledger's clock;
     * while it may, its billable count may still grow. */
    int open;
    /* Set only in what eid_ledger_record returns: this call stored a late
     * pass (late_err_code became 0), which happens once per token. */
    int late_pass;
    int has_payload;
    /* Up to EID_LEDGER_REQUEST_IDS ids, oldest first, ',' separated. */
    char request_ids[EID_LEDGER_REQUEST_IDS * (EID_LEDGER_REQUEST_ID_MAX + 1)];
} eid_ledger_entry;

/* What eid_ledger_stats counts. */
typedef struct eid_ledger_counts {
    uint64_t count[EID_LEDGER_STATES]; /* tokens per state */
    uint64_t billable;                 /* sum of billable over all tokens */
    uint64_t due;                      /* tokens whose result must still be pulled */
} eid_ledger_counts;

/* Check url as eid_ledger_open reads it, opening and sending nothing: the
 * scheme, a non-empty SQLite path, the whole redis:// grammar. EID_OK or
 * EID_E_INVALID_ARG with err->field "url" and the message eid_ledger_open
 * would give (never the URL's user or password). Thread-safe. */
EID_API eid_status eid_ledger_check_url(const char *url, eid_error *err);

/* Open url. opts may be NULL. On success *out owns the ledger (free it with
 * eid_ledger_free). SQLite: creates or migrates the schema, WAL mode,
 * synchronous=NORMAL. Redis: connects and pings. Fails with
 * EID_E_INVALID_ARG (bad URL or option), EID_E_LEDGER_UNAVAILABLE (cannot
 * open or reach), EID_E_LEDGER_STORAGE, EID_E_NOMEM.
 * Thread safety: a ledger may be shared by threads; calls are serialised by
 * an internal mutex. Open one ledger per process after fork(). */
EID_API eid_status eid_ledger_open(const char *url, const eid_ledger_options *opts,
                                   eid_ledger **out, eid_error *err);

/* Close and free; wipes the payload key. NULL is a no-op. */
EID_API void eid_ledger_free(eid_ledger *ledger);

/* "sqlite" or "redis". Thread-safe. */
EID_API const char *eid_ledger_backend(const eid_ledger *ledger);

/* Store a new token in state issued. EID_E_LEDGER_EXISTS if the token is
 * known (nothing changed). */
EID_API eid_status eid_ledger_issue(eid_ledger *ledger, const eid_ledger_issue_params *params,
                                    eid_error *err);

/* Check that token belongs to subject (constant-time compare) and may still
 * be used: refuses EID_E_LEDGER_UNKNOWN, _WRONG_SUBJECT, _EXPIRED (TTL over
 * with no verdict, expired or abandoned) and _CONSUMED. out may be NULL;
 * on success it receives the entry. Changes nothing. */
EID_API eid_status eid_ledger_claim(eid_ledger *ledger, const char *token, const char *subject,
                                    eid_ledger_entry *out, eid_error *err);

/* Apply one GetEidResult outcome, idempotently (see the header comment).
 * out may be NULL; on success it receives the updated entry.
 * EID_E_LEDGER_UNKNOWN if the token was never issued. */
EID_API eid_status eid_ledger_record(eid_ledger *ledger, const char *token,
                                     const eid_ledger_outcome *outcome, eid_ledger_entry *out,
                                     eid_error *err);

/* Mark a token with a verdict as consumed, exactly once even with many
 * processes racing: the first caller gets EID_OK, every later one
 * EID_E_LEDGER_CONSUMED. Refuses _UNKNOWN, _WRONG_SUBJECT, _EXPIRED and
 * EID_E_LEDGER_PENDING (no verdict yet). */
EID_API eid_status eid_ledger_consume(eid_ledger *ledger, const char *token, const char *subject,
                                      eid_ledger_entry *out, eid_error *err);

/* Read one entry without any check (for operators and the CLI). */
EID_API eid_status eid_ledger_get(eid_ledger *ledger, const char *token, eid_ledger_entry *out,
                                  eid_error *err);

/* The stored attempts of token, ordered by (ReqTime, Seq), at most cap into
 * out[]; *n receives how many are stored in all (more than cap: out holds the
 * first cap and the call returns EID_E_BUFFER_TOO_SMALL). EID_E_LEDGER_UNKNOWN
 * for a token never issued. Thread-safe (the ledger's mutex). */
EID_API eid_status eid_ledger_attempts(eid_ledger *ledger, const char *token,
                                       eid_ledger_attempt *out, size_t cap, size_t *n,
                                       eid_error *err);

/* Tokens whose result must still be pulled, oldest first, at most cap, into
 * out[]; *n receives the count. Within the result window: issued; failed or
 * consumed with a failed verdict (and no late pass) before the TTL, or not
 * pulled since the TTL; expired by the TTL alone and not pulled since; and
 * any of these whose last pull had no verdict (retry_later). */
EID_API eid_status eid_ledger_due(eid_ledger *ledger, eid_ledger_entry *out, size_t cap, size_t *n,
                                  eid_error *err);

/* Tokens created in [from, to), ordered by (created_at, token), at most cap,
 * starting after the cursor (after_token NULL or "": from the start; else the
 * last token of the previous page and its created_at). from 0 and to 0 leave
 * that end open, so (0, 0) is every token. For reconciliation. */
EID_API eid_status eid_ledger_export(eid_ledger *ledger, int64_t from, int64_t to,
                                     int64_t after_created, const char *after_token,
                                     eid_ledger_entry *out, size_t cap, size_t *n, eid_error *err);

/* Move issued tokens whose TTL is over to expired, and issued/expired ones
 * whose result window is over to abandoned, as of now (the ledger's clock
 * when now is 0). *expired and *abandoned (may be NULL) receive the counts. */
EID_API eid_status eid_ledger_expire(eid_ledger *ledger, int64_t now, uint64_t *expired,
                                     uint64_t *abandoned, eid_error *err);

/* Count the tokens per state, the billable attempts and the due tokens into
 * *out. Reads every token: an operator's call, not a per-request one. */
EID_API eid_status eid_ledger_stats(eid_ledger *ledger, eid_ledger_counts *out, eid_error *err);

/* Decrypt the stored payload of token into buf (cap bytes); *len receives its
 * length (also on EID_E_BUFFER_TOO_SMALL). EID_E_LEDGER_PENDING when none is
 * stored; EID_E_CRYPTO when the key is wrong or the data was altered. */
EID_API eid_status eid_ledger_payload(eid_ledger *ledger, const char *token, void *buf, size_t cap,
                                      size_t *len, eid_error *err);

/* Take one token from the token bucket named key, shared by every process
 * that uses the same ledger (the same SQLite file or Redis server and
 * prefix), for rate limits that hold across nodes. The bucket holds up to
 * burst tokens and gains rate_per_s tokens a second; a bucket never seen (or
 * idle long enough to be full again) starts full. With at least one token,
 * one is taken and *allowed is 1; otherwise nothing changes, *allowed is 0
 * and *retry_after_s (may be NULL) receives the exact seconds until one token
 * is back (0 when allowed).
 *
 * now_ms is the caller's Unix time in milliseconds; 0 uses the ledger's
 * clock (an eid_ledger_options.clock gives whole seconds, times 1000; none:
 * CLOCK_REALTIME in milliseconds). A time earlier than the bucket's last
 * refill refills nothing, so nodes whose clocks differ by d ms let at most
 * rate_per_s * d / 1000 extra tokens through. Every take is one atomic step
 * (SQLite: one IMMEDIATE transaction; Redis: one script on
 * "<prefix>bucket:<key>", which expires once the bucket would be full).
 * Redis: a command resent after a lost reply may take a second token (never
 * one too few).
 *
 * key: 1..EID_LEDGER_BUCKET_KEY_MAX bytes without control characters;
 * rate_per_s > 0 and burst >= 1, finite, with burst / rate_per_s at most
 * EID_LEDGER_BUCKET_REFILL_MAX seconds; all else is EID_E_INVALID_ARG naming
 * "key", "rate", "burst" or "now_ms" (the message never contains the key).
 * NULL ledger or allowed: EID_E_INVALID_ARG. Backend failures as for the
 * other calls (EID_E_LEDGER_UNAVAILABLE, EID_E_LEDGER_STORAGE, ...); then
 * *allowed is 0 and a caller should refuse (fail closed). Thread-safe like
 * every call (the ledger's mutex); nothing is allocated for the caller. */
EID_API eid_status eid_ledger_take(eid_ledger *ledger, const char *key, double rate_per_s,
                                   double burst, int64_t now_ms, int *allowed,
                                   double *retry_after_s, eid_error *err);

/* Give back one token an eid_ledger_take took, for work it was to pay for
 * that never happened (a caller holding two limits, whose second refused).
 * The bucket refills as for a take, gains one token and never holds more
 * than burst, so a give to a bucket that refilled meanwhile (or was never
 * seen) changes nothing. Same arguments, checks, clock, atomicity and
 * failures as eid_ledger_take; a Redis give resent after a lost reply may
 * give twice (never too little back). */
EID_API eid_status eid_ledger_give(eid_ledger *ledger, const char *key, double rate_per_s,
                                   double burst, int64_t now_ms, eid_error *err);

/* ------------------------------------------------------- batches (SQLite)
 * Group commit for a caller that holds many calls at once (eidkit serve's
 * ledger thread): the calls made on ledger between eid_ledger_batch_begin
 * and eid_ledger_batch_end run in one IMMEDIATE transaction, and a call that
 * fails undoes only its own writes (each call that writes more than one row
 * runs in a savepoint of its own); the batch pays one set of file locks and
 * one WAL commit. Nothing written
 * in a batch is durable, or visible to another connection, before
 * eid_ledger_batch_end returns EID_OK; when it fails nothing of the batch
 * was kept, and a caller must treat every call of the batch as failed with
 * its error (what they read may have been another call's undone write).
 * After an error that made SQLite roll the whole transaction back (disk
 * full, an I/O error), every further call in the batch fails with
 * EID_E_LEDGER_STORAGE rather than run on its own.
 *
 * eid_ledger_batches: 1 when the backend has batches (SQLite), else 0.
 * eid_ledger_batch_begin: EID_E_INVALID_ARG for a backend without batches
 * or a batch already open; otherwise as BEGIN IMMEDIATE (EID_E_LEDGER_UNAVAILABLE
 * when another process holds the write lock past the busy timeout). A batch
 * belongs to the thread that began it: no other thread may use ledger until
 * eid_ledger_batch_end, which always ends the batch. */
EID_API int eid_ledger_batches(const eid_ledger *ledger);
EID_API eid_status eid_ledger_batch_begin(eid_ledger *ledger, eid_error *err);
EID_API eid_status eid_ledger_batch_end(eid_ledger *ledger, eid_error *err);

/* ------------------------------------------------------ pipelines (Redis)
 * For a caller that holds many records at once (eidkit serve's ledger
 * workers): eid_ledger_record_many makes n eid_ledger_record calls, each as
 * if made alone, in order, each with its own result; a backend that
 * pipelines (Redis) writes them all before reading any answer, so n records
 * cost one round trip and one wake-up of each side instead of n. Not a
 * transaction: each call succeeds or fails on its own, as alone. When the
 * connection breaks, the calls not yet answered run again one by one (a
 * record is idempotent: one the server ran before the break is not counted
 * twice); when the server has lost its script cache, a call runs again with
 * the script's text. Other backends, and a batch, run the calls one at a
 * time.
 *
 * call.now: the Unix seconds the call records at (0: the ledger's clock);
 * call.out may be NULL; call.st and call.err receive what eid_ledger_record
 * would have returned and set. eid_ledger_pipelines: 1 when the backend
 * pipelines (Redis), else 0. Thread-safe (the ledger's mutex, held for the
 * whole pipeline). */
typedef struct eid_ledger_record_call {
    const char *token;
    const eid_ledger_outcome *outcome;
    int64_t now;
    eid_ledger_entry *out;
    eid_status st;
    eid_error err;
} eid_ledger_record_call;

EID_API int eid_ledger_pipelines(const eid_ledger *ledger);
EID_API void eid_ledger_record_many(eid_ledger *ledger, eid_ledger_record_call *calls, size_t n);

/* ------------------------------------------------ the Redis scripts, shared
 * Another Redis client (OpenResty's cosocket ledger, eidkit.openresty.ledger)
 * runs the same transitions by sending the text the Redis backend sends:
 * these two calls are where it gets it, so the scripts and what they share
 * with C exist once. */

/* A redis:// ledger URL, read as the Redis backend reads it (and the
 * OpenResty ledger, through the FFI, so that both accept the same URLs). */
#define EID_LEDGER_REDIS_HOST_MAX     255
#define EID_LEDGER_REDIS_PREFIX_MAX   64
#define EID_LEDGER_REDIS_USER_MAX     127
#define EID_LEDGER_REDIS_PASSWORD_MAX 511
typedef struct eid_ledger_redis_url {
    char host[EID_LEDGER_REDIS_HOST_MAX + 1];
    int port;
    int db;                                       /* 0 when the URL names none */
    char prefix[EID_LEDGER_REDIS_PREFIX_MAX + 1]; /* "eidkit:" when the URL names none */
    char user[EID_LEDGER_REDIS_USER_MAX + 1];     /* "": the default user */
    char password[EID_LEDGER_REDIS_PASSWORD_MAX + 1];
    int has_password; /* 1: AUTH [user] password on every new connection */
} eid_ledger_redis_url;

/* Parse `url` (redis://[[USER]:PASSWORD@]HOST:PORT[/DB][?prefix=P]) into
 * *out. USER and PASSWORD are percent-decoded; '@' ends them at the last
 * one before the first '/' or '?', so a password holding '/', '?', '%' or
 * ':' (in USER) must be percent-encoded. A user without a password is
 * refused (Redis has no such login). EID_E_INVALID_ARG with err->field "url"
 * and a message that never repeats the user or the password. The password
 * lands in out: wipe it with eid_ledger_redis_url_clear. Thread-safe. */
EID_API eid_status eid_ledger_redis_url_parse(const char *url, eid_ledger_redis_url *out,
                                              eid_error *err);

/* Wipe *u (the password included). */
EID_API void eid_ledger_redis_url_clear(eid_ledger_redis_url *u);

/* The exact script the Redis backend runs for the transition `name`
 * ("issue", "record", "consume", "expire" or "take"), or "read" (one
 * record, for a client that parses replies in Lua): a prologue defining
 * ERR_EXPIRED, ERR_PENDING, FIELDS, RECORD and NO_VERDICT from the C tables, then
 * lua/eidkit/ledger/redis/<name>.lua as compiled in. Its SHA-1 is what the
 * backend sends with EVALSHA. Writes the text and a NUL into buf (cap bytes)
 * and its length (NUL excluded) into *len. NULL buf with cap 0 only measures.
 * EID_E_INVALID_ARG: name NULL or not a script, or len NULL;
 * EID_E_BUFFER_TOO_SMALL: cap is not above *len (then *len is still set and
 * buf untouched). Thread-safe; allocates nothing. */
EID_API eid_status eid_ledger_redis_script(const char *name, char *buf, size_t cap, size_t *len);

/* The i-th hash field of a stored record, in the order the scripts' FIELDS
 * and their "ok" answers' record array carry them; NULL past the last. The static string is never
 * freed. Thread-safe. */
EID_API const char *eid_ledger_redis_field(size_t i);

/* A script's refusal (its answer {code}: "unknown_token", "wrong_subject",
 * "consumed", "expired", "pending", "exists") as the Redis backend reports
 * it: the status, and in *err (may be NULL) the field and message. Any other
 * code is EID_E_INTERNAL ("unexpected script answer"). Thread-safe. */
EID_API eid_status eid_ledger_redis_refusal(const char *code, eid_error *err);

/* The rule eid_ledger_claim applies to a stored record, for a client that
 * read the record itself: may `subject` use the token bound to
 * `bound_subject`, in eid_ledger_state `state`, expiring at `expires_at`,
 * at `now`? EID_OK, or the refusal (EID_E_LEDGER_WRONG_SUBJECT,
 * _CONSUMED, _EXPIRED) with *err (may be NULL) set as eid_ledger_claim sets
 * it. The subjects are compared in constant time. NULL subjects:
 * EID_E_INVALID_ARG. Thread-safe. */
EID_API eid_status eid_ledger_check_claim(const char *bound_subject, int state, int64_t expires_at,
                                          const char *subject, int64_t now, eid_error *err);

/* A stored record as the Redis backend reads it, for a client that read it
 * itself: values[0 .. n-2] are the hash fields in eid_ledger_redis_field
 * order (NULL for a missing field), values[n-1] the payload's length in
 * decimal (HSTRLEN), lens their byte lengths; n must be the field count + 1.
 * Fills *out as eid_ledger_get does, `open` as of `now` included.
 * EID_E_LEDGER_UNKNOWN: the token field is missing (no such record);
 * EID_E_INVALID_ARG: NULL values, lens or out, or another n. Thread-safe;
 * allocates nothing. */
EID_API eid_status eid_ledger_redis_entry(const char *const *values, const size_t *lens, size_t n,
                                          int64_t now, eid_ledger_entry *out);

/* The same for a record as the scripts answer it ({"ok", record, payload
 * length [, late]}, and "read"'s answer): `record` (len bytes) is the JSON
 * array of the FIELDS values, false where missing, that the prologue's
 * RECORD(key) makes; payload_len is the answer's next element. Fills *out
 * as eid_ledger_redis_entry does. EID_E_LEDGER_UNKNOWN: the token field is
 * false (no such record); EID_E_INVALID_ARG: NULL record or out, or a
 * record not of that shape. Thread-safe. */
EID_API eid_status eid_ledger_redis_entry_packed(const char *record, size_t len,
                                                 int64_t payload_len, int64_t now,
                                                 eid_ledger_entry *out);

/* The checks eid_ledger_take makes on its arguments, with the same statuses
 * and messages (never the key), for a client that takes by itself; on
 * EID_OK *ttl_ms (not NULL) is how long the bucket's key must live after
 * the take (the refill time, rounded up, plus a margin). Thread-safe. */
EID_API eid_status eid_ledger_check_take(const char *key, double rate_per_s, double burst,
                                         int64_t now_ms, int64_t *ttl_ms, eid_error *err);

/* The checks eid_ledger_issue makes on the text of its params (token,
 * merchant_id, subject, extra; not the times), with the same statuses and
 * messages, for a client that issues by itself. NULL params:
 * EID_E_INVALID_ARG. Thread-safe. */
EID_API eid_status eid_ledger_check_issue(const eid_ledger_issue_params *params, eid_error *err);

/* ------------------------------------------ recording from another client
 * A client that sends its own Redis commands (eidkit.openresty.ledger, in
 * nginx) records a GetEidResult answer with what the Redis backend uses:
 * the answer's JSON text digested into an outcome here (the Lua binding
 * digests a decoded table by the same rules; a spec holds the two to the
 * same stored records), then the record script's arguments built by the
 * function r_record itself calls, so both send the same ARGV. */

/* A GetEidResult answer, digested; owns what its outcome points to. */
typedef struct eid_ledger_digest eid_ledger_digest;

/* Digest the JSON text of a GetEidResult answer (the Response object, or a
 * body with a Response member) as the Lua binding digests the decoded table
 * (ledger:record): Error.Code InvalidParameterValue.BizTokenExpired is the
 * verdict EID_ERRCODE_EXPIRED, any other Error is refused; RequestId,
 * IsVerifyIntention, Text.ErrCode (an integer; null or absent: no verdict),
 * the LivenessDetail count, billable (IsNeedCharge == true) and the last
 * EID_LEDGER_DETAILS_MAX entries (Seq, ReqTime, Errcode, IsNeedCharge, Sim,
 * LivenessMode, CompareLibType; never Name or Idcard). JSON null counts as
 * absent where the binding treats cjson.null so. On success *out owns the
 * result (free with eid_ledger_digest_free). EID_E_INVALID_ARG, with err's
 * field and message naming the member at fault ("Text.ErrCode: expected
 * integer"), for text that is not JSON or a member of the wrong type;
 * EID_E_NOMEM. NULL json or out: EID_E_INVALID_ARG. Thread-safe. */
EID_API eid_status eid_ledger_digest_json(const char *json, size_t len, eid_ledger_digest **out,
                                          eid_error *err);

/* The digest's outcome (no payload), valid until eid_ledger_digest_free.
 * NULL digest: NULL. */
EID_API const eid_ledger_outcome *eid_ledger_digest_outcome(const eid_ledger_digest *d);

/* NULL is a no-op. */
EID_API void eid_ledger_digest_free(eid_ledger_digest *d);

/* The record script's ARGV for outcome o at now. */
typedef struct eid_ledger_redis_args eid_ledger_redis_args;

/* Check token and o as eid_ledger_record does and build the ARGV that the
 * Redis backend sends to the "record" script (KEYS: "<prefix>{<token>}" and
 * "<prefix>{<token>}:attempts"). A payload needs the ledger's key, which
 * only eid_ledger_record holds: o->payload set is EID_E_INVALID_ARG. On
 * success *out owns copies of every argument (free with
 * eid_ledger_redis_args_free). EID_E_INVALID_ARG as eid_ledger_record;
 * EID_E_NOMEM. Thread-safe. */
EID_API eid_status eid_ledger_redis_record_args(const char *token, const eid_ledger_outcome *o,
                                                int64_t now, eid_ledger_redis_args **out,
                                                eid_error *err);

/* How many arguments a holds (0 for NULL). */
EID_API size_t eid_ledger_redis_args_count(const eid_ledger_redis_args *a);

/* Argument i (0-based) and its length into *len; NULL past the end. The
 * bytes live until eid_ledger_redis_args_free. */
EID_API const char *eid_ledger_redis_args_get(const eid_ledger_redis_args *a, size_t i,
                                              size_t *len);

/* NULL is a no-op. */
EID_API void eid_ledger_redis_args_free(eid_ledger_redis_args *a);

/* A token's stored attempts as the Redis backend reads them, for a client
 * that read "<prefix>{<token>}:attempts" itself: values[0 .. n-1] is the
 * HGETALL reply (field, value, field, value, ...), lens their lengths.
 * Decodes each well-formed pair into out (at most cap), ordered as
 * eid_ledger_attempts orders them; *count receives how many are stored
 * (more than cap: EID_E_BUFFER_TOO_SMALL, out unordered). NULL count, or
 * NULL values/lens with n > 0, or NULL out with cap > 0:
 * EID_E_INVALID_ARG. Thread-safe; allocates nothing. */
EID_API eid_status eid_ledger_redis_attempts(const char *const *values, const size_t *lens,
                                             size_t n, eid_ledger_attempt *out, size_t cap,
                                             size_t *count);

/* Does the Redis backend's expire walk run the expire script on this
 * entry at now (its TTL or result window is over while it is issued, or
 * expired and waiting to be abandoned)? 1 or 0; NULL: 0. Thread-safe. */
EID_API int eid_ledger_redis_expirable(const eid_ledger_entry *e, int64_t now);

/* A clock for eid_ledger_options.clock that reads the int64_t Unix seconds
 * ud points to: for a host that keeps its own time and cannot be called
 * back (LuaJIT's FFI, where a callback from a compiled trace fails), which
 * sets the cell before each call. NULL ud: 0. Thread-safe as the cell is. */
EID_API int64_t eid_ledger_clock_cell(void *ud);

/* The rules the backends apply to a stored entry at now, for a client that
 * walks the indexes itself: must its result still be pulled (what
 * eid_ledger_due lists)? May it still change (the Redis due index keeps
 * exactly these; `open` in eid_ledger_get)? 1 or 0; NULL entry: 0.
 * Thread-safe. */
EID_API int eid_ledger_is_due(const eid_ledger_entry *e, int64_t now);
EID_API int eid_ledger_is_open(const eid_ledger_entry *e, int64_t now);

#ifdef __cplusplus
}
#endif

#endif /* EIDKIT_LEDGER_H */
