/*
 * SQLite backend of the token ledger: one table keyed by EidToken (and one
 * of token buckets keyed by name), WAL journal, synchronous=NORMAL, a busy
 * timeout, a versioned schema and prepared statements kept for the life of
 * the handle. A transition that
 * reads before it writes runs in one BEGIN IMMEDIATE transaction, so two
 * processes on one file serialise on it.
 */
#define _POSIX_C_SOURCE 200809L

#include "ledger_internal.h"

#include <openssl/crypto.h>
#include <pthread.h>
#include <sqlite3.h>

#include <signal.h>
#include <string.h>
#include <sys/prctl.h>

#define SCHEMA_VERSION 3

/* Migration i takes the schema from version i to i + 1. */
static const char *const migrations[SCHEMA_VERSION] = {
    "CREATE TABLE tokens ("
    " token TEXT PRIMARY KEY NOT NULL,"
    " merchant_id TEXT NOT NULL,"
    " subject TEXT NOT NULL,"
    " extra TEXT NOT NULL DEFAULT '',"
    " state INTEGER NOT NULL,"
    " created_at INTEGER NOT NULL,"
    " expires_at INTEGER NOT NULL,"
    " result_deadline INTEGER NOT NULL,"
    " finished_at INTEGER NOT NULL DEFAULT 0,"
    " consumed_at INTEGER NOT NULL DEFAULT 0,"
    " last_pull_at INTEGER NOT NULL DEFAULT 0,"
    " pulls INTEGER NOT NULL DEFAULT 0,"
    " attempts INTEGER NOT NULL DEFAULT 0,"
    " billable INTEGER NOT NULL DEFAULT 0,"
    " err_code INTEGER,"
    " request_ids TEXT NOT NULL DEFAULT '',"
    " payload BLOB"
    ") WITHOUT ROWID;"
    "CREATE INDEX tokens_state_created ON tokens(state, created_at);"
    "CREATE INDEX tokens_created ON tokens(created_at, token);",
    /* 2: token buckets (eid_ledger_take); full_at_ms: when the bucket is
     * full again, after which expire may delete it. */
    "CREATE TABLE buckets ("
    " key TEXT PRIMARY KEY NOT NULL,"
    " tokens REAL NOT NULL,"
    " last_ms INTEGER NOT NULL,"
    " full_at_ms INTEGER NOT NULL"
    ") WITHOUT ROWID;",
    /* 3: the verdict after a consumed failure, and the charges counted when
     * consumed (a token consumed before this version: all it had). */
    "ALTER TABLE tokens ADD COLUMN late_err_code INTEGER;"
    "ALTER TABLE tokens ADD COLUMN settled_billable INTEGER NOT NULL DEFAULT 0;"
    "UPDATE tokens SET settled_billable = billable WHERE state = 3;"
    /* ... whether intention verification was on (priced differently), and
     * every LivenessDetail entry once per Seq. */
    "ALTER TABLE tokens ADD COLUMN intention INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE tokens ADD COLUMN retry_later INTEGER NOT NULL DEFAULT 0;"
    "CREATE TABLE attempts ("
    " token TEXT NOT NULL,"
    " seq TEXT NOT NULL,"
    " req_time INTEGER NOT NULL,"
    " err_code INTEGER,"
    " charged INTEGER NOT NULL,"
    " sim TEXT NOT NULL,"
    " liveness_mode INTEGER,"
    " compare_lib_type TEXT NOT NULL,"
    " PRIMARY KEY (token, seq)"
    ") WITHOUT ROWID;",
};

#define COLUMNS                                                                                    \
    "token, merchant_id, subject, extra, state, created_at, expires_at, result_deadline, "         \
    "finished_at, consumed_at, last_pull_at, pulls, attempts, billable, err_code, request_ids, "   \
    "payload IS NOT NULL, late_err_code, settled_billable, intention, retry_later"

#define STR_(x) #x
#define STR(x)  STR_(x)
/* eid__ledger_is_due as SQL, ?1 being now: issued within the window;
 * failed, or consumed with a failure and no late pass, before the TTL or
 * not pulled since; expired by the TTL alone and not pulled since; the
 * last two also while the last pull had no verdict (retry_later). */
#define DUE_RULE                                                                                   \
    "((state = 0 AND result_deadline > ?1) OR"                                                     \
    " ((state = 2 OR (state = 3 AND err_code NOT IN (0, " STR(                                     \
        EID_ERRCODE_EXPIRED) ") AND"                                                               \
                             "   coalesce(late_err_code, -1) <> 0)) AND result_deadline > ?1 AND"  \
                             "   (expires_at > ?1 OR last_pull_at < expires_at OR retry_later = "  \
                             "1)) OR"                                                              \
                             " (state = 4 AND err_code IS NULL AND result_deadline > ?1 AND"       \
                             "   (last_pull_at < expires_at OR retry_later = 1)))"

enum stmt {
    S_INSERT,
    S_ATTEMPT_PUT,
    S_ATTEMPTS,
    S_EXISTS,
    S_GET,
    S_UPDATE,
    S_UPDATE_KEEP_STATE,
    S_DUE,
    S_EXPORT_FIRST,
    S_EXPORT_AFTER,
    S_EXPIRE,
    S_ABANDON,
    S_STATS,
    S_DUE_COUNT,
    S_PAYLOAD,
    S_BUCKET_GET,
    S_BUCKET_PUT,
    S_BUCKET_PURGE,
    S_BEGIN,
    S_COMMIT,
    S_ROLLBACK,
    S_SAVEPOINT,
    S_RELEASE,
    S_ROLLBACK_TO,
    S_COUNT
};

static const char *const sql[S_COUNT] = {
    [S_INSERT] = "INSERT INTO tokens (token, merchant_id, subject, extra, state, created_at,"
                 " expires_at, result_deadline, intention) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8,"
                 " ?9) ON CONFLICT (token) DO NOTHING",
    [S_ATTEMPT_PUT] = "INSERT INTO attempts (token, seq, req_time, err_code, charged, sim,"
                      " liveness_mode, compare_lib_type) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
                      " ON CONFLICT (token, seq) DO NOTHING",
    [S_ATTEMPTS] = "SELECT seq, req_time, err_code, charged, sim, liveness_mode, compare_lib_type"
                   " FROM attempts WHERE token = ?1",
    [S_EXISTS] = "SELECT 1 FROM tokens WHERE token = ?1",
    [S_GET] = "SELECT " COLUMNS " FROM tokens WHERE token = ?1",
#define UPDATE_REST                                                                                \
    " finished_at = ?3, consumed_at = ?4, last_pull_at = ?5, pulls = ?6, attempts = ?7,"           \
    " billable = ?8, err_code = ?9, request_ids = ?10, payload = COALESCE(?11, payload),"          \
    " late_err_code = ?12, settled_billable = ?13, intention = ?14, retry_later = ?15"             \
    " WHERE token = ?1"
    [S_UPDATE] = "UPDATE tokens SET state = ?2," UPDATE_REST,
    /* SQLite rewrites the index entries of every column an UPDATE names, a
     * value unchanged or not: naming state on a pull that leaves it (every
     * poll of a pending token) dirtied a page of tokens_state_created too,
     * and doubled the WAL frames of each commit. ?2 is unused here. */
    [S_UPDATE_KEEP_STATE] = "UPDATE tokens SET" UPDATE_REST,
    [S_DUE] =
        "SELECT " COLUMNS " FROM tokens WHERE " DUE_RULE " ORDER BY created_at, token LIMIT ?2",
    [S_EXPORT_FIRST] = "SELECT " COLUMNS " FROM tokens WHERE created_at >= ?1 AND created_at < ?2"
                       " ORDER BY created_at, token LIMIT ?3",
    [S_EXPORT_AFTER] = "SELECT " COLUMNS " FROM tokens WHERE created_at < ?2 AND"
                       " (created_at, token) > (?4, ?5) AND created_at >= ?1"
                       " ORDER BY created_at, token LIMIT ?3",
    [S_EXPIRE] = "UPDATE tokens SET state = 4 WHERE state = 0 AND expires_at <= ?1"
                 " AND result_deadline > ?1",
    [S_ABANDON] = "UPDATE tokens SET state = 5 WHERE state IN (0, 4) AND result_deadline <= ?1",
    [S_STATS] = "SELECT state, count(*), total(billable) FROM tokens GROUP BY state",
    [S_DUE_COUNT] = "SELECT count(*) FROM tokens WHERE " DUE_RULE,
    [S_PAYLOAD] = "SELECT payload FROM tokens WHERE token = ?1",
    [S_BUCKET_GET] = "SELECT tokens, last_ms FROM buckets WHERE key = ?1",
    [S_BUCKET_PUT] =
        "INSERT INTO buckets (key, tokens, last_ms, full_at_ms) VALUES (?1, ?2, ?3, ?4)"
        " ON CONFLICT (key) DO UPDATE SET tokens = excluded.tokens,"
        " last_ms = excluded.last_ms, full_at_ms = excluded.full_at_ms",
    [S_BUCKET_PURGE] = "DELETE FROM buckets WHERE full_at_ms <= ?1",
    [S_BEGIN] = "BEGIN IMMEDIATE",
    [S_COMMIT] = "COMMIT",
    [S_ROLLBACK] = "ROLLBACK",
    [S_SAVEPOINT] = "SAVEPOINT eidkit_call",
    [S_RELEASE] = "RELEASE eidkit_call",
    [S_ROLLBACK_TO] = "ROLLBACK TO eidkit_call",
};

/* Checkpoints run on a thread of their own, with a connection of its own,
 * once the WAL holds EID__SQLITE_CHECKPOINT_PAGES pages (about 40 MB; SQLite's default
 * is 1,000). Every poll of a pending token is a commit, and a checkpoint
 * writes back each page the WAL holds, then an fdatasync: run by the
 * committing thread (SQLite's own autocheckpoint) it held up every call
 * queued behind that commit: under bench/serve 1 % of the ledger calls
 * waited about 45 ms for it. Ten times SQLite's interval found the same
 * hot pages ten times fewer. In WAL mode a checkpoint and the writer do
 * not wait for each other; what the checkpoint has written back lets the
 * writer start the WAL over at its next commit. */
typedef struct checkpointer {
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool running;   /* the thread exists (started on the first request) */
    bool requested; /* a checkpoint is wanted; the thread clears it */
    bool stop;
    bool failed; /* no thread, or it could not open its connection: the
                  * committing connection checkpoints */
    char *path;
} checkpointer;

typedef struct sqlite_be {
    sqlite3 *db;
    sqlite3_stmt *st[S_COUNT];
    /* Inside eid_ledger_batch_begin/_end: one IMMEDIATE transaction is open
     * and a call's own transaction is a savepoint in it (none for a call
     * that writes one row: begin). */
    bool batch;
    checkpointer ck;
} sqlite_be;

/* Map an SQLite result code to a status and a message that names the
 * library's reason, never a value (sqlite3_errstr is static text). */
static eid_status db_fail(eid_error *err, int rc, const char *what) {
    eid_status st;
    switch (rc & 0xff) {
    case SQLITE_NOMEM: st = EID_E_NOMEM; break;
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
    case SQLITE_PROTOCOL: st = EID_E_LEDGER_UNAVAILABLE; break;
    case SQLITE_FULL:
    case SQLITE_IOERR:
    case SQLITE_READONLY:
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
    case SQLITE_CANTOPEN:
    case SQLITE_PERM: st = EID_E_LEDGER_STORAGE; break;
    default: st = EID_E_INTERNAL;
    }
    return eid__fail(err, st, "sqlite", "%s: %s", what, sqlite3_errstr(rc));
}

static void row_to_record(sqlite3_stmt *s, eid_ledger_entry *r) {
    memset(r, 0, sizeof *r);
    struct {
        char *dst;
        size_t cap;
    } text[] = {{r->token, sizeof r->token},
                {r->merchant_id, sizeof r->merchant_id},
                {r->subject, sizeof r->subject},
                {r->extra, sizeof r->extra}};
    for (int i = 0; i < 4; i++) {
        const char *v = (const char *)sqlite3_column_text(s, i);
        if (v) eid__ledger_copy(text[i].dst, text[i].cap, v, (size_t)sqlite3_column_bytes(s, i));
    }
    r->state = (eid_ledger_state)sqlite3_column_int(s, 4);
    r->created_at = sqlite3_column_int64(s, 5);
    r->expires_at = sqlite3_column_int64(s, 6);
    r->result_deadline = sqlite3_column_int64(s, 7);
    r->finished_at = sqlite3_column_int64(s, 8);
    r->consumed_at = sqlite3_column_int64(s, 9);
    r->last_pull_at = sqlite3_column_int64(s, 10);
    r->pulls = sqlite3_column_int(s, 11);
    r->attempts = sqlite3_column_int(s, 12);
    r->billable = sqlite3_column_int(s, 13);
    r->has_err_code = sqlite3_column_type(s, 14) != SQLITE_NULL;
    r->err_code = sqlite3_column_int64(s, 14);
    const char *ids = (const char *)sqlite3_column_text(s, 15);
    if (ids)
        eid__ledger_copy(r->request_ids, sizeof r->request_ids, ids,
                         (size_t)sqlite3_column_bytes(s, 15));
    r->has_payload = sqlite3_column_int(s, 16);
    r->has_late_err_code = sqlite3_column_type(s, 17) != SQLITE_NULL;
    r->late_err_code = sqlite3_column_int64(s, 17);
    r->settled_billable = sqlite3_column_int(s, 18);
    r->intention = sqlite3_column_int(s, 19);
    r->retry_later = sqlite3_column_int(s, 20);
}

static sqlite3_stmt *stmt(sqlite_be *b, enum stmt which) {
    sqlite3_stmt *s = b->st[which];
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    return s;
}

/* Run a statement that returns no rows (or whose rows are ignored). */
static eid_status exec(sqlite_be *b, enum stmt which, const char *what, eid_error *err) {
    sqlite3_stmt *s = stmt(b, which);
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
    }
    sqlite3_reset(s);
    return rc == SQLITE_DONE ? EID_OK : db_fail(err, rc, what);
}

static void *checkpoint_main(void *arg) {
    checkpointer *ck = arg;
    prctl(PR_SET_NAME, "eidkit-ckpt"); /* for top -H, perf and gdb */
    sqlite3 *db = NULL;
    pthread_mutex_lock(&ck->mu);
    for (;;) {
        while (!ck->requested && !ck->stop)
            pthread_cond_wait(&ck->cv, &ck->mu);
        if (ck->stop) break;
        ck->requested = false;
        pthread_mutex_unlock(&ck->mu);
        /* A connection finds the WAL at its first read: before that a
         * checkpoint on it does nothing. */
        if (db == NULL &&
            (sqlite3_open_v2(ck->path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL) !=
                 SQLITE_OK ||
             sqlite3_exec(db, "PRAGMA schema_version", NULL, NULL, NULL) != SQLITE_OK)) {
            sqlite3_close_v2(db);
            db = NULL;
            /* Without a connection of its own no checkpoint would ever run
             * and the WAL would grow without end: hand them back to the
             * committing connection, as when no thread could be started. */
            pthread_mutex_lock(&ck->mu);
            ck->failed = true;
            break;
        }
        /* PASSIVE: as much as no reader or writer needs, never waiting. */
        sqlite3_wal_checkpoint_v2(db, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
        pthread_mutex_lock(&ck->mu);
    }
    pthread_mutex_unlock(&ck->mu);
    sqlite3_close_v2(db);
    return NULL;
}

/* sqlite3_wal_hook, on the committing thread after each commit: hand the
 * checkpoint to the checkpointer once the WAL is long enough. Registering
 * it turns SQLite's autocheckpoint off. */
static int on_wal_commit(void *arg, sqlite3 *db, const char *name, int pages) {
    sqlite_be *b = arg;
    checkpointer *ck = &b->ck;
    if (pages < EID__SQLITE_CHECKPOINT_PAGES) return SQLITE_OK;
    pthread_mutex_lock(&ck->mu);
    if (!ck->running && !ck->failed) {
        /* No signal for this thread: a process-directed one must reach a
         * thread that handles it (eidkit serve's loop, an nginx worker's). */
        sigset_t all, old;
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &old);
        ck->running = pthread_create(&ck->thread, NULL, checkpoint_main, ck) == 0;
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        ck->failed = !ck->running;
    }
    if (ck->running && !ck->failed && !ck->requested) {
        ck->requested = true;
        pthread_cond_signal(&ck->cv);
    }
    bool inline_ckpt = ck->failed;
    pthread_mutex_unlock(&ck->mu);
    /* No thread could be started: as SQLite's autocheckpoint would. */
    if (inline_ckpt) sqlite3_wal_checkpoint_v2(db, name, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
    return SQLITE_OK;
}

/* Set up the checkpointer for the file at path (a ":memory:" or temporary
 * database never calls the hook: it has no WAL). */
static eid_status checkpointer_init(sqlite_be *b, const char *path, eid_error *err) {
    checkpointer *ck = &b->ck;
    ck->path = OPENSSL_strdup(path);
    if (ck->path == NULL) return eid__fail(err, EID_E_NOMEM, "", "out of memory");
    if (pthread_mutex_init(&ck->mu, NULL) != 0) {
        OPENSSL_free(ck->path);
        ck->path = NULL;
        return eid__fail(err, EID_E_NOMEM, "", "cannot create a mutex");
    }
    if (pthread_cond_init(&ck->cv, NULL) != 0) {
        pthread_mutex_destroy(&ck->mu);
        OPENSSL_free(ck->path);
        ck->path = NULL;
        return eid__fail(err, EID_E_NOMEM, "", "cannot create a condition variable");
    }
    sqlite3_wal_hook(b->db, on_wal_commit, b);
    return EID_OK;
}

/* Stop the checkpointer before the writer closes (whose close then
 * checkpoints what is left and removes the WAL). */
static void checkpointer_close(sqlite_be *b) {
    checkpointer *ck = &b->ck;
    if (ck->path == NULL) return;
    pthread_mutex_lock(&ck->mu);
    ck->stop = true;
    pthread_cond_signal(&ck->cv);
    bool running = ck->running;
    pthread_mutex_unlock(&ck->mu);
    if (running) pthread_join(ck->thread, NULL);
    pthread_cond_destroy(&ck->cv);
    pthread_mutex_destroy(&ck->mu);
    OPENSSL_free(ck->path);
    ck->path = NULL;
}

static void close_be(void *p) {
    sqlite_be *b = p;
    if (b == NULL) return;
    if (b->db) sqlite3_wal_hook(b->db, NULL, NULL);
    checkpointer_close(b);
    for (int i = 0; i < S_COUNT; i++)
        sqlite3_finalize(b->st[i]);
    sqlite3_close_v2(b->db);
    OPENSSL_free(b);
}

static eid_status exec_sql(sqlite3 *db, const char *text, const char *what, eid_error *err) {
    int rc = sqlite3_exec(db, text, NULL, NULL, NULL);
    return rc == SQLITE_OK ? EID_OK : db_fail(err, rc, what);
}

static eid_status migrate(sqlite3 *db, eid_error *err) {
    eid_status st;
    if ((st = exec_sql(db, "BEGIN IMMEDIATE", "schema", err))) return st;
    sqlite3_stmt *s = NULL;
    int rc = sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &s, NULL);
    if (rc != SQLITE_OK || (rc = sqlite3_step(s)) != SQLITE_ROW) {
        sqlite3_finalize(s);
        st = db_fail(err, rc, "reading the schema version");
        goto fail;
    }
    int version = sqlite3_column_int(s, 0);
    sqlite3_finalize(s);
    if (version > SCHEMA_VERSION) {
        st = eid__fail(err, EID_E_LEDGER_STORAGE, "sqlite",
                       "schema version %d is newer than this eidkit's (%d)", version,
                       SCHEMA_VERSION);
        goto fail;
    }
    for (int v = version; v < SCHEMA_VERSION; v++) {
        char pragma[40];
        snprintf(pragma, sizeof pragma, "PRAGMA user_version = %d", v + 1);
        if ((st = exec_sql(db, migrations[v], "migrating the schema", err)) ||
            (st = exec_sql(db, pragma, "migrating the schema", err)))
            goto fail;
    }
    return exec_sql(db, "COMMIT", "schema", err);
fail:
    sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    return st;
}

eid_status eid__ledger_sqlite_open(const char *path, const ledger_config *cfg, void **out,
                                   eid_error *err) {
    sqlite_be *b = OPENSSL_zalloc(sizeof *b);
    if (b == NULL) return eid__fail(err, EID_E_NOMEM, "", "out of memory");
    eid_status st;
    int rc = sqlite3_open_v2(
        path, &b->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        st = db_fail(err, rc, "cannot open the database");
        goto fail;
    }
    sqlite3_extended_result_codes(b->db, 1);
    sqlite3_busy_timeout(b->db, cfg->timeout_ms);
    /* WAL: readers never block the writer; NORMAL: a killed process loses
     * nothing acknowledged (only a power loss can drop the last commits). */
    if ((st = exec_sql(b->db, "PRAGMA journal_mode = WAL", "setting WAL mode", err)) ||
        (st = exec_sql(b->db, "PRAGMA synchronous = NORMAL", "setting synchronous", err)) ||
        /* Pages read through a mapping and a 16 MiB cache: with the default
         * 2 MB cache a ledger of a few thousand polled tokens was read with a
         * pread per page, the largest part of a call's cost (perf, bench/serve).
         * Best effort: a build without mmap keeps reading with pread. */
        (st = exec_sql(b->db, "PRAGMA cache_size = -16384", "setting the cache size", err)) ||
        (st = exec_sql(b->db, "PRAGMA mmap_size = 268435456", "setting mmap_size", err)) ||
        /* The WAL is cut back to this after a checkpoint, so one that grew
         * while the checkpointer fell behind does not stay that large. */
        (st = exec_sql(b->db, "PRAGMA journal_size_limit = 67108864", "setting journal_size_limit",
                       err)) ||
        (st = migrate(b->db, err)) || (st = checkpointer_init(b, path, err)))
        goto fail;
    for (int i = 0; i < S_COUNT; i++) {
        rc = sqlite3_prepare_v3(b->db, sql[i], -1, SQLITE_PREPARE_PERSISTENT, &b->st[i], NULL);
        if (rc != SQLITE_OK) {
            st = db_fail(err, rc, "preparing a statement");
            goto fail;
        }
    }
    *out = b;
    return EID_OK;
fail:
    close_be(b);
    return st;
}

static eid_status s_issue(void *p, const eid_ledger_entry *r, eid_error *err) {
    sqlite_be *b = p;
    sqlite3_stmt *s = stmt(b, S_INSERT);
    sqlite3_bind_text(s, 1, r->token, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, r->merchant_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 3, r->subject, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 4, r->extra, -1, SQLITE_STATIC);
    sqlite3_bind_int(s, 5, (int)r->state);
    sqlite3_bind_int64(s, 6, r->created_at);
    sqlite3_bind_int64(s, 7, r->expires_at);
    sqlite3_bind_int64(s, 8, r->result_deadline);
    sqlite3_bind_int(s, 9, r->intention);
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    if (rc != SQLITE_DONE) return db_fail(err, rc, "issue");
    if (sqlite3_changes(b->db) == 0)
        return eid__fail(err, EID_E_LEDGER_EXISTS, "token", "already issued");
    return EID_OK;
}

static eid_status load(sqlite_be *b, const char *token, eid_ledger_entry *r, eid_error *err) {
    sqlite3_stmt *s = stmt(b, S_GET);
    sqlite3_bind_text(s, 1, token, -1, SQLITE_STATIC);
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) row_to_record(s, r);
    sqlite3_reset(s);
    if (rc == SQLITE_ROW) return EID_OK;
    if (rc == SQLITE_DONE) return eid__fail(err, EID_E_LEDGER_UNKNOWN, "token", "unknown");
    return db_fail(err, rc, "read");
}

static eid_status s_get(void *p, const char *token, eid_ledger_entry *r, eid_error *err) {
    return load(p, token, r, err);
}

/* Write r back; old_state: the state load found (see S_UPDATE_KEEP_STATE). */
static eid_status save(sqlite_be *b, const eid_ledger_entry *r, eid_ledger_state old_state,
                       const unsigned char *blob, size_t blen, eid_error *err) {
    bool same = r->state == old_state;
    sqlite3_stmt *s = stmt(b, same ? S_UPDATE_KEEP_STATE : S_UPDATE);
    sqlite3_bind_text(s, 1, r->token, -1, SQLITE_STATIC);
    if (!same) sqlite3_bind_int(s, 2, (int)r->state);
    sqlite3_bind_int64(s, 3, r->finished_at);
    sqlite3_bind_int64(s, 4, r->consumed_at);
    sqlite3_bind_int64(s, 5, r->last_pull_at);
    sqlite3_bind_int(s, 6, r->pulls);
    sqlite3_bind_int(s, 7, r->attempts);
    sqlite3_bind_int(s, 8, r->billable);
    if (r->has_err_code) sqlite3_bind_int64(s, 9, r->err_code);
    sqlite3_bind_text(s, 10, r->request_ids, -1, SQLITE_STATIC);
    if (blob) sqlite3_bind_blob(s, 11, blob, (int)blen, SQLITE_STATIC);
    if (r->has_late_err_code) sqlite3_bind_int64(s, 12, r->late_err_code);
    sqlite3_bind_int(s, 13, r->settled_billable);
    sqlite3_bind_int(s, 14, r->intention);
    sqlite3_bind_int(s, 15, r->retry_later);
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    return rc == SQLITE_DONE ? EID_OK : db_fail(err, rc, "write");
}

/* Store one attempt unless its Seq is stored already (a re-pull). */
static eid_status save_attempt(sqlite_be *b, const char *token, const eid_ledger_attempt *a,
                               eid_error *err) {
    sqlite3_stmt *s = stmt(b, S_ATTEMPT_PUT);
    sqlite3_bind_text(s, 1, token, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, a->seq, (int)strnlen(a->seq, sizeof a->seq), SQLITE_STATIC);
    sqlite3_bind_int64(s, 3, a->req_time_ms);
    if (a->has_err_code) sqlite3_bind_int64(s, 4, a->err_code);
    sqlite3_bind_int(s, 5, a->is_need_charge != 0);
    sqlite3_bind_text(s, 6, a->sim, (int)strnlen(a->sim, sizeof a->sim), SQLITE_STATIC);
    if (a->has_liveness_mode) sqlite3_bind_int64(s, 7, a->liveness_mode);
    sqlite3_bind_text(s, 8, a->compare_lib_type,
                      (int)strnlen(a->compare_lib_type, sizeof a->compare_lib_type), SQLITE_STATIC);
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    return rc == SQLITE_DONE ? EID_OK : db_fail(err, rc, "write");
}

static eid_status broken(eid_error *err) {
    return eid__fail(err, EID_E_LEDGER_STORAGE, "sqlite",
                     "batch: an earlier error rolled its transaction back");
}

/* Start a call's transaction: its own IMMEDIATE one, or in a batch a
 * savepoint, so a call that fails undoes its own writes and no other's.
 * A call that writes one row at most (one_row: every poll of a pending
 * token) needs no savepoint in a batch: a statement that fails undoes
 * itself, and one that takes the whole transaction with it breaks the batch
 * either way (finish). The savepoint and its release were two of a poll's
 * four statements. */
static eid_status begin(sqlite_be *b, bool one_row, eid_error *err) {
    if (!b->batch) return exec(b, S_BEGIN, "begin", err);
    return one_row ? EID_OK : exec(b, S_SAVEPOINT, "savepoint", err);
}

/* End a call's transaction (one_row as given to begin): commit (in a batch:
 * release the savepoint) when st is OK, else roll back and keep st. */
static eid_status finish(sqlite_be *b, eid_status st, bool one_row, eid_error *err) {
    if (b->batch) {
        /* An error SQLite answers by rolling back the whole transaction
         * (SQLITE_FULL, an I/O error) leaves no savepoint to end: the batch
         * is broken and eid_ledger_batch_end says so. */
        if (sqlite3_get_autocommit(b->db)) return st ? st : broken(err);
        if (one_row) return st;
        if (st == EID_OK && (st = exec(b, S_RELEASE, "release", err)) == EID_OK) return EID_OK;
        exec(b, S_ROLLBACK_TO, "rollback", NULL);
        exec(b, S_RELEASE, "release", NULL);
        return st;
    }
    if (st == EID_OK) {
        st = exec(b, S_COMMIT, "commit", err);
        if (st == EID_OK) return EID_OK;
    }
    if (!sqlite3_get_autocommit(b->db)) exec(b, S_ROLLBACK, "rollback", NULL);
    return st;
}

static eid_status s_record(void *p, const char *token, const eid_ledger_outcome *o,
                           const unsigned char *blob, size_t blen, int64_t now,
                           eid_ledger_entry *out, eid_error *err) {
    sqlite_be *b = p;
    size_t n;
    const eid_ledger_attempt *d = eid__ledger_details(o, &n);
    bool one_row = n == 0; /* no attempt to keep beside the token's row */
    eid_status st = begin(b, one_row, err);
    if (st) return st;
    st = load(b, token, out, err);
    if (st == EID_OK) {
        eid_ledger_state was = out->state;
        eid__ledger_apply(out, o, now);
        if (blob) out->has_payload = 1;
        st = save(b, out, was, blob, blen, err);
    }
    for (size_t i = 0; st == EID_OK && i < n; i++)
        if (eid__ledger_attempt_ok(&d[i])) st = save_attempt(b, token, &d[i], err);
    return finish(b, st, one_row, err);
}

static eid_status s_attempts(void *p, const char *token, eid_ledger_attempt **out, size_t *n,
                             eid_error *err) {
    sqlite_be *b = p;
    *out = NULL;
    *n = 0;
    sqlite3_stmt *s = stmt(b, S_EXISTS);
    sqlite3_bind_text(s, 1, token, -1, SQLITE_STATIC);
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    if (rc == SQLITE_DONE) return eid__fail(err, EID_E_LEDGER_UNKNOWN, "token", "unknown");
    if (rc != SQLITE_ROW) return db_fail(err, rc, "read");
    s = stmt(b, S_ATTEMPTS);
    sqlite3_bind_text(s, 1, token, -1, SQLITE_STATIC);
    size_t cap = 0;
    eid_status st = EID_OK;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        if (*n == cap) {
            size_t ncap = cap ? 2 * cap : 8;
            eid_ledger_attempt *grown = OPENSSL_realloc(*out, ncap * sizeof **out);
            if (grown == NULL) {
                st = eid__fail(err, EID_E_NOMEM, "", "out of memory");
                break;
            }
            *out = grown;
            cap = ncap;
        }
        eid_ledger_attempt *a = &(*out)[(*n)++];
        memset(a, 0, sizeof *a);
        eid__ledger_copy(a->seq, sizeof a->seq, (const char *)sqlite3_column_text(s, 0),
                         (size_t)sqlite3_column_bytes(s, 0));
        a->req_time_ms = sqlite3_column_int64(s, 1);
        a->has_err_code = sqlite3_column_type(s, 2) != SQLITE_NULL;
        a->err_code = sqlite3_column_int64(s, 2);
        a->is_need_charge = sqlite3_column_int(s, 3);
        eid__ledger_copy(a->sim, sizeof a->sim, (const char *)sqlite3_column_text(s, 4),
                         (size_t)sqlite3_column_bytes(s, 4));
        a->has_liveness_mode = sqlite3_column_type(s, 5) != SQLITE_NULL;
        a->liveness_mode = sqlite3_column_int64(s, 5);
        eid__ledger_copy(a->compare_lib_type, sizeof a->compare_lib_type,
                         (const char *)sqlite3_column_text(s, 6),
                         (size_t)sqlite3_column_bytes(s, 6));
    }
    if (st == EID_OK && rc != SQLITE_DONE) st = db_fail(err, rc, "read");
    sqlite3_reset(s);
    if (st) {
        OPENSSL_free(*out);
        *out = NULL;
        *n = 0;
    }
    return st;
}

static eid_status s_consume(void *p, const char *token, const char *subject, int64_t now,
                            eid_ledger_entry *out, eid_error *err) {
    sqlite_be *b = p;
    eid_status st = begin(b, true, err);
    if (st) return st;
    st = load(b, token, out, err);
    if (st == EID_OK) st = eid__ledger_check_consume(out, subject, now, err);
    if (st == EID_OK) {
        eid_ledger_state was = out->state;
        eid__ledger_apply_consume(out, now);
        st = save(b, out, was, NULL, 0, err);
    }
    return finish(b, st, true, err);
}

static eid_status rows(sqlite3_stmt *s, eid_ledger_entry *out, size_t cap, size_t *n,
                       eid_error *err) {
    int rc;
    *n = 0;
    while (*n < cap && (rc = sqlite3_step(s)) == SQLITE_ROW)
        row_to_record(s, &out[(*n)++]);
    if (*n < cap && rc != SQLITE_DONE) {
        sqlite3_reset(s);
        *n = 0;
        return db_fail(err, rc, "list");
    }
    sqlite3_reset(s);
    return EID_OK;
}

static eid_status s_due(void *p, int64_t now, eid_ledger_entry *out, size_t cap, size_t *n,
                        eid_error *err) {
    sqlite3_stmt *s = stmt(p, S_DUE);
    sqlite3_bind_int64(s, 1, now);
    sqlite3_bind_int64(s, 2, (sqlite3_int64)cap);
    return rows(s, out, cap, n, err);
}

static eid_status s_export(void *p, int64_t from, int64_t to, int64_t after_created,
                           const char *after_token, eid_ledger_entry *out, size_t cap, size_t *n,
                           eid_error *err) {
    sqlite3_stmt *s = stmt(p, after_token ? S_EXPORT_AFTER : S_EXPORT_FIRST);
    sqlite3_bind_int64(s, 1, from);
    sqlite3_bind_int64(s, 2, to);
    sqlite3_bind_int64(s, 3, (sqlite3_int64)cap);
    if (after_token) {
        sqlite3_bind_int64(s, 4, after_created);
        sqlite3_bind_text(s, 5, after_token, -1, SQLITE_STATIC);
    }
    return rows(s, out, cap, n, err);
}

static eid_status s_expire(void *p, int64_t now, uint64_t *expired, uint64_t *abandoned,
                           eid_error *err) {
    sqlite_be *b = p;
    eid_status st = begin(b, false, err);
    if (st) return st;
    sqlite3_bind_int64(stmt(b, S_EXPIRE), 1, now);
    int rc = sqlite3_step(b->st[S_EXPIRE]);
    sqlite3_reset(b->st[S_EXPIRE]);
    if (rc != SQLITE_DONE) return finish(b, db_fail(err, rc, "expire"), false, err);
    *expired = (uint64_t)sqlite3_changes(b->db);
    sqlite3_bind_int64(stmt(b, S_ABANDON), 1, now);
    rc = sqlite3_step(b->st[S_ABANDON]);
    sqlite3_reset(b->st[S_ABANDON]);
    if (rc != SQLITE_DONE) return finish(b, db_fail(err, rc, "expire"), false, err);
    *abandoned = (uint64_t)sqlite3_changes(b->db);
    /* Token buckets that are full again are the same as none. */
    sqlite3_bind_int64(stmt(b, S_BUCKET_PURGE), 1, now * 1000);
    rc = sqlite3_step(b->st[S_BUCKET_PURGE]);
    sqlite3_reset(b->st[S_BUCKET_PURGE]);
    if (rc != SQLITE_DONE) return finish(b, db_fail(err, rc, "expire"), false, err);
    return finish(b, EID_OK, false, err);
}

static eid_status s_stats(void *p, int64_t now, eid_ledger_counts *out, eid_error *err) {
    sqlite_be *b = p;
    sqlite3_stmt *s = stmt(b, S_STATS);
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        int state = sqlite3_column_int(s, 0);
        if (state >= 0 && state < EID_LEDGER_STATES)
            out->count[state] = (uint64_t)sqlite3_column_int64(s, 1);
        out->billable += (uint64_t)sqlite3_column_double(s, 2);
    }
    sqlite3_reset(s);
    if (rc != SQLITE_DONE) return db_fail(err, rc, "stats");
    s = stmt(b, S_DUE_COUNT);
    sqlite3_bind_int64(s, 1, now);
    rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) out->due = (uint64_t)sqlite3_column_int64(s, 0);
    sqlite3_reset(s);
    return rc == SQLITE_ROW ? EID_OK : db_fail(err, rc, "stats");
}

static eid_status s_payload(void *p, const char *token, unsigned char **blob, size_t *len,
                            eid_error *err) {
    sqlite_be *b = p;
    sqlite3_stmt *s = stmt(b, S_PAYLOAD);
    sqlite3_bind_text(s, 1, token, -1, SQLITE_STATIC);
    int rc = sqlite3_step(s);
    eid_status st = EID_OK;
    *blob = NULL;
    if (rc == SQLITE_ROW && sqlite3_column_type(s, 0) == SQLITE_BLOB) {
        *len = (size_t)sqlite3_column_bytes(s, 0);
        *blob = OPENSSL_malloc(*len ? *len : 1);
        if (*blob == NULL)
            st = eid__fail(err, EID_E_NOMEM, "", "out of memory");
        else
            memcpy(*blob, sqlite3_column_blob(s, 0), *len);
    } else if (rc == SQLITE_DONE) {
        st = eid__fail(err, EID_E_LEDGER_UNKNOWN, "token", "unknown");
    } else if (rc != SQLITE_ROW) {
        st = db_fail(err, rc, "read");
    }
    sqlite3_reset(s);
    return st;
}

/* Read, decide (eid__ledger_bucket_take) and write in one IMMEDIATE
 * transaction, so processes sharing the file share the bucket. */
static eid_status s_take(void *p, const char *key, double rate, double burst, int64_t now_ms,
                         int64_t ttl_ms, int cost, int *allowed, double *retry_after_s,
                         eid_error *err) {
    sqlite_be *b = p;
    eid_status st = begin(b, true, err);
    if (st) return st;
    sqlite3_stmt *s = stmt(b, S_BUCKET_GET);
    sqlite3_bind_text(s, 1, key, -1, SQLITE_STATIC);
    double tokens = burst;
    int64_t last_ms = now_ms;
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        tokens = sqlite3_column_double(s, 0);
        last_ms = sqlite3_column_int64(s, 1);
    }
    sqlite3_reset(s);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return finish(b, db_fail(err, rc, "take"), true, err);
    *allowed = eid__ledger_bucket_take(&tokens, &last_ms, now_ms, rate, burst, cost, retry_after_s);
    if (*allowed) {
        s = stmt(b, S_BUCKET_PUT);
        sqlite3_bind_text(s, 1, key, -1, SQLITE_STATIC);
        sqlite3_bind_double(s, 2, tokens);
        sqlite3_bind_int64(s, 3, last_ms);
        sqlite3_bind_int64(s, 4, last_ms + ttl_ms);
        rc = sqlite3_step(s);
        sqlite3_reset(s);
        if (rc != SQLITE_DONE) st = db_fail(err, rc, "take");
    }
    st = finish(b, st, true, err);
    if (st) *allowed = 0;
    return st;
}

static eid_status s_batch_begin(void *p, eid_error *err) {
    sqlite_be *b = p;
    eid_status st = exec(b, S_BEGIN, "batch", err);
    b->batch = st == EID_OK;
    return st;
}

static bool s_batch_broken(void *p) {
    sqlite_be *b = p;
    return b->batch && sqlite3_get_autocommit(b->db);
}

static eid_status s_batch_end(void *p, eid_error *err) {
    sqlite_be *b = p;
    b->batch = false;
    if (sqlite3_get_autocommit(b->db)) return broken(err);
    eid_status st = exec(b, S_COMMIT, "batch commit", err);
    if (st && !sqlite3_get_autocommit(b->db)) exec(b, S_ROLLBACK, "rollback", NULL);
    return st;
}

const ledger_ops eid__ledger_sqlite_ops = {
    .name = "sqlite",
    .close = close_be,
    .issue = s_issue,
    .get = s_get,
    .record = s_record,
    .attempts = s_attempts,
    .consume = s_consume,
    .due = s_due,
    .export = s_export,
    .expire = s_expire,
    .stats = s_stats,
    .payload = s_payload,
    .take = s_take,
    .batch_begin = s_batch_begin,
    .batch_broken = s_batch_broken,
    .batch_end = s_batch_end,
};
