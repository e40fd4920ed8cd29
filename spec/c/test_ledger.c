/* The token ledger's C API on its SQLite backend: every transition and
 * refusal, input validation, persistence across reopen, sealed payloads,
 * token buckets (eid_ledger_take), batches, schema migration, and an
 * allocation-failure sweep over a whole token life. Time comes from a frozen
 * clock the test moves by hand. */
#define _POSIX_C_SOURCE 200809L

#include "eidkit/ledger.h"

#include "alloc_fail.h"
#include "ledger_internal.h"
#include "check.h"

#include <dirent.h>
#include <math.h>
#include <openssl/crypto.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static int64_t clock_now = 1735660800;
static int64_t test_clock(void *ud) {
    (void)ud;
    return clock_now;
}

static char dir[] = "/tmp/eidkit-ledger-XXXXXX";
static char path[128], url[160];

static const char tok[] = "CE661F1A-0F1E-45BD-BE13-34C05CEA7681";
static const unsigned char key[32] = "0123456789abcdef0123456789abcdef";

static eid_ledger *open_ledger(const char *u, const unsigned char *k) {
    eid_ledger_options o = {.clock = {test_clock, NULL}, .token_ttl = 600};
    if (k) {
        o.payload_key = k;
        o.payload_key_len = 32;
    }
    eid_ledger *l = NULL;
    eid_error err = {0};
    eid_status st = eid_ledger_open(u, &o, &l, &err);
    if (st != EID_OK && !fail_at) fprintf(stderr, "open %s: %s\n", u, err.message);
    return l;
}

static eid_status issue(eid_ledger *l, const char *token, const char *subject) {
    eid_ledger_issue_params in = {
        .token = token, .merchant_id = "0NSJ2023", .subject = subject, .extra = "order-9"};
    return eid_ledger_issue(l, &in, NULL);
}

static eid_ledger_outcome verdict(int64_t code, int attempts, int billable, const char *rid) {
    eid_ledger_outcome o = {.has_verdict = 1,
                            .err_code = code,
                            .attempts = attempts,
                            .billable = billable,
                            .request_id = rid};
    return o;
}

static void test_lifecycle(void) {
    eid_ledger *l = open_ledger(url, NULL);
    CHECK(l != NULL);
    if (!l) return;
    CHECK_STR(eid_ledger_backend(l), "sqlite");
    CHECK(issue(l, tok, "user-42") == EID_OK);
    eid_error err = {0};
    CHECK(issue(l, tok, "user-43") == EID_E_LEDGER_EXISTS);

    eid_ledger_entry r;
    CHECK(eid_ledger_claim(l, tok, "user-42", &r, &err) == EID_OK);
    CHECK(r.state == EID_LEDGER_ISSUED);
    CHECK(r.created_at == clock_now && r.expires_at == clock_now + 600);
    CHECK(r.result_deadline == clock_now + 3 * 86400);
    CHECK_STR(r.merchant_id, "0NSJ2023");
    CHECK_STR(r.extra, "order-9");
    CHECK(eid_ledger_claim(l, tok, "user-4", NULL, &err) == EID_E_LEDGER_WRONG_SUBJECT);
    CHECK(strstr(err.message, "user") == NULL);
    CHECK(eid_ledger_claim(l, "NOPE", "user-42", NULL, &err) == EID_E_LEDGER_UNKNOWN);
    CHECK(strstr(err.message, "NOPE") == NULL);
    CHECK(eid_ledger_consume(l, tok, "user-42", NULL, &err) == EID_E_LEDGER_PENDING);

    /* Pending pulls count but change no state. */
    eid_ledger_outcome pending = {.request_id = "req-1"};
    clock_now += 10;
    CHECK(eid_ledger_record(l, tok, &pending, &r, &err) == EID_OK);
    CHECK(r.state == EID_LEDGER_ISSUED && r.pulls == 1 && r.last_pull_at == clock_now);
    eid_ledger_outcome unfinished = verdict(17, 0, 0, "req-2");
    CHECK(eid_ledger_record(l, tok, &unfinished, &r, &err) == EID_OK);
    CHECK(r.state == EID_LEDGER_ISSUED && !r.has_err_code);

    /* A failed first attempt, then the user retries on the same token. */
    eid_ledger_outcome fail1 = verdict(1003, 1, 0, "req-3");
    CHECK(eid_ledger_record(l, tok, &fail1, &r, &err) == EID_OK);
    CHECK(r.state == EID_LEDGER_FAILED && r.err_code == 1003 && r.finished_at == clock_now);
    size_t n = 9;
    eid_ledger_entry due[4];
    CHECK(eid_ledger_due(l, due, 4, &n, &err) == EID_OK && n == 1);
    eid_ledger_outcome pass = verdict(0, 2, 1, "req-4");
    CHECK(eid_ledger_record(l, tok, &pass, &r, &err) == EID_OK);
    CHECK(r.state == EID_LEDGER_PASSED && r.err_code == 0 && r.attempts == 2 && r.billable == 1);
    /* The slow callback carrying the first response changes no verdict. */
    CHECK(eid_ledger_record(l, tok, &fail1, &r, &err) == EID_OK);
    CHECK(r.state == EID_LEDGER_PASSED && r.err_code == 0 && r.attempts == 2);
    /* Nor does a later failure: passed is final. */
    eid_ledger_outcome fail3 = verdict(2016, 3, 2, "req-4");
    CHECK(eid_ledger_record(l, tok, &fail3, &r, &err) == EID_OK);
    CHECK(r.state == EID_LEDGER_PASSED && r.attempts == 3 && r.billable == 2);
    CHECK_STR(r.request_ids, "req-1,req-2,req-3,req-4");
    CHECK(r.pulls == 6);
    CHECK(eid_ledger_due(l, due, 4, &n, &err) == EID_OK && n == 0);

    CHECK(eid_ledger_consume(l, tok, "user-43", NULL, &err) == EID_E_LEDGER_WRONG_SUBJECT);
    CHECK(eid_ledger_consume(l, tok, "user-42", &r, &err) == EID_OK);
    CHECK(r.state == EID_LEDGER_CONSUMED && r.consumed_at == clock_now);
    CHECK(eid_ledger_consume(l, tok, "user-42", NULL, &err) == EID_E_LEDGER_CONSUMED);
    CHECK_STR(err.message, "token: already consumed");
    CHECK(eid_ledger_claim(l, tok, "user-42", NULL, &err) == EID_E_LEDGER_CONSUMED);
    /* A pull after consume still adds billing facts, never a verdict. */
    CHECK(eid_ledger_record(l, tok, &fail3, &r, &err) == EID_OK);
    CHECK(r.state == EID_LEDGER_CONSUMED && r.err_code == 0);
    eid_ledger_free(l);

    /* Everything survives a reopen. */
    l = open_ledger(url, NULL);
    CHECK(l && eid_ledger_get(l, tok, &r, &err) == EID_OK);
    CHECK(r.state == EID_LEDGER_CONSUMED && r.billable == 2 && r.pulls == 7);
    eid_ledger_free(l);
}

static void test_expiry(void) {
    eid_ledger *l = open_ledger(url, NULL);
    if (!l) return;
    int64_t t0 = clock_now;
    eid_error err = {0};
    CHECK(issue(l, "T-EXPIRE-1", "u1") == EID_OK);
    clock_now += 1;
    CHECK(issue(l, "T-EXPIRE-2", "u2") == EID_OK);
    clock_now += 1;
    CHECK(issue(l, "T-EXPIRE-3", "u3") == EID_OK);
    eid_ledger_outcome ex = verdict(15, 0, 0, NULL);
    CHECK(eid_ledger_record(l, "T-EXPIRE-3", &ex, NULL, &err) == EID_OK);
    CHECK(eid_ledger_claim(l, "T-EXPIRE-3", "u3", NULL, &err) == EID_E_LEDGER_EXPIRED);

    eid_ledger_entry due[8];
    size_t n = 0;
    CHECK(eid_ledger_due(l, due, 8, &n, &err) == EID_OK && n == 2);
    CHECK_STR(due[0].token, "T-EXPIRE-1");
    CHECK_STR(due[1].token, "T-EXPIRE-2");
    CHECK(eid_ledger_due(l, due, 1, &n, &err) == EID_OK && n == 1);

    clock_now = t0 + 600; /* T-EXPIRE-1's TTL is over */
    CHECK(eid_ledger_claim(l, "T-EXPIRE-1", "u1", NULL, &err) == EID_E_LEDGER_EXPIRED);
    uint64_t e = 9, a = 9;
    CHECK(eid_ledger_expire(l, 0, &e, &a, &err) == EID_OK && e == 1 && a == 0);
    /* Expired tokens get one last pull after the TTL. */
    CHECK(eid_ledger_due(l, due, 8, &n, &err) == EID_OK && n == 2);
    eid_ledger_outcome pending = {0};
    CHECK(eid_ledger_record(l, "T-EXPIRE-1", &pending, NULL, &err) == EID_OK);
    CHECK(eid_ledger_due(l, due, 8, &n, &err) == EID_OK && n == 1);
    CHECK_STR(due[0].token, "T-EXPIRE-2");

    clock_now = t0 + 3 * 86400 + 5;
    CHECK(eid_ledger_expire(l, 0, &e, &a, &err) == EID_OK && e == 0 && a == 3);
    eid_ledger_counts s;
    CHECK(eid_ledger_stats(l, &s, &err) == EID_OK);
    CHECK(s.count[EID_LEDGER_ABANDONED] == 3 && s.count[EID_LEDGER_CONSUMED] == 1);
    CHECK(s.billable == 2 && s.due == 0);
    /* A verdict pulled late still lands on an abandoned token. */
    eid_ledger_outcome late = verdict(2006, 1, 1, "req-late");
    eid_ledger_entry r;
    CHECK(eid_ledger_record(l, "T-EXPIRE-2", &late, &r, &err) == EID_OK);
    CHECK(r.state == EID_LEDGER_FAILED && r.billable == 1);
    eid_ledger_free(l);
}

static void test_export(void) {
    eid_ledger *l = open_ledger(url, NULL);
    if (!l) return;
    int64_t base = 1800000000;
    char name[32];
    eid_error err = {0};
    for (int i = 0; i < 25; i++) {
        snprintf(name, sizeof name, "EXP-%02d", i);
        eid_ledger_issue_params in = {
            .token = name, .merchant_id = "m", .subject = "s", .created_at = base + i / 2};
        CHECK(eid_ledger_issue(l, &in, &err) == EID_OK);
    }
    eid_ledger_entry page[10];
    size_t n = 0, total = 0;
    int64_t after = 0;
    char last[EID_LEDGER_TOKEN_MAX + 1] = "";
    int pages = 0;
    do {
        CHECK(eid_ledger_export(l, base + 1, base + 11, after, last, page, 10, &n, &err) == EID_OK);
        for (size_t i = 0; i < n; i++) {
            snprintf(name, sizeof name, "EXP-%02zu", 2 + total + i);
            CHECK_STR(page[i].token, name);
        }
        total += n;
        if (n) {
            after = page[n - 1].created_at;
            strcpy(last, page[n - 1].token);
        }
        pages++;
    } while (n == 10 && pages < 10);
    CHECK(total == 20);
    /* to 0: open-ended, so from base on is all 25 (earlier tests issued
     * theirs before base). */
    CHECK(eid_ledger_export(l, base, 0, 0, NULL, page, 10, &n, &err) == EID_OK && n == 10);
    for (total = n, pages = 1; n == 10 && pages < 10; pages++, total += n) {
        after = page[n - 1].created_at;
        strcpy(last, page[n - 1].token);
        CHECK(eid_ledger_export(l, base, 0, after, last, page, 10, &n, &err) == EID_OK);
    }
    CHECK(total == 25);
    CHECK(eid_ledger_export(l, 5, 4, 0, NULL, page, 10, &n, &err) == EID_E_INVALID_ARG);
    eid_ledger_free(l);
}

static void test_payload(void) {
    eid_ledger *l = open_ledger(url, key);
    if (!l) return;
    eid_error err = {0};
    CHECK(issue(l, "PAY-1", "u") == EID_OK);
    const char body[] = "{\"Text\":{\"ErrCode\":0,\"Name\":\"secret name\"}}";
    eid_ledger_outcome o = verdict(0, 1, 1, "rid");
    o.payload = body;
    o.payload_len = sizeof body - 1;
    eid_ledger_entry r;
    CHECK(eid_ledger_record(l, "PAY-1", &o, &r, &err) == EID_OK && r.has_payload);
    char buf[128];
    size_t len = 0;
    CHECK(eid_ledger_payload(l, "PAY-1", buf, sizeof buf, &len, &err) == EID_OK);
    CHECK(len == sizeof body - 1 && memcmp(buf, body, len) == 0);
    CHECK(eid_ledger_payload(l, "PAY-1", buf, 4, &len, &err) == EID_E_BUFFER_TOO_SMALL);
    CHECK(len == sizeof body - 1);
    eid_ledger_free(l);

    /* At rest the name is nowhere in the file. */
    FILE *f = fopen(path, "rb");
    CHECK(f != NULL);
    if (f) {
        static char data[1 << 20];
        size_t got = fread(data, 1, sizeof data, f);
        fclose(f);
        int leaked = 0;
        for (size_t i = 0; i + 11 <= got; i++)
            leaked |= memcmp(data + i, "secret name", 11) == 0;
        CHECK(!leaked);
    }
    unsigned char other[32];
    memcpy(other, key, 32);
    other[0] ^= 1;
    l = open_ledger(url, other);
    CHECK(eid_ledger_payload(l, "PAY-1", buf, sizeof buf, &len, &err) == EID_E_CRYPTO);
    eid_ledger_free(l);
    l = open_ledger(url, NULL);
    CHECK(eid_ledger_record(l, "PAY-1", &o, NULL, &err) == EID_E_INVALID_ARG);
    CHECK_STR(err.field, "payload");
    eid_ledger_free(l);
}

static void test_bad_input(void) {
    eid_ledger *l = NULL;
    eid_error err = {0};
    static const struct {
        const char *url, *msg;
    } urls[] = {
        {"mysql://x", "url: unknown scheme (expected sqlite:PATH or redis://HOST:PORT/DB)"},
        {"sqlite:", "url: sqlite: needs a path (sqlite:./eidkit.db)"},
        {"redis://", "url: redis URL needs HOST:PORT (redis://127.0.0.1:6379/0)"},
        {"redis://h:0/0", "url: redis port must be 1..65535"},
        {"redis://h:99999", "url: redis port must be 1..65535"},
        {"redis://h:6379/x", "url: redis database must be 0..1000"},
        {"redis://h:6379/0?db=1", "url: the only redis option is ?prefix="},
        {"redis://h h:6379", "url: redis host may hold letters, digits, '.' and '-' only"},
    };
    for (size_t i = 0; i < sizeof urls / sizeof urls[0]; i++) {
        CHECK(eid_ledger_open(urls[i].url, NULL, &l, &err) == EID_E_INVALID_ARG);
        CHECK_STR(err.message, urls[i].msg);
        CHECK(l == NULL);
    }
    /* Nothing listens on port 1. */
    CHECK(eid_ledger_open("redis://127.0.0.1:1/0", NULL, &l, &err) == EID_E_LEDGER_UNAVAILABLE);
    CHECK(eid_ledger_open("sqlite:/nonexistent-dir/x.db", NULL, &l, &err) == EID_E_LEDGER_STORAGE);
    eid_ledger_options bad_key = {.payload_key = key, .payload_key_len = 16};
    CHECK(eid_ledger_open(url, &bad_key, &l, &err) == EID_E_INVALID_ARG);
    CHECK_STR(err.message, "payload_key: must be exactly 32 bytes");

    l = open_ledger(url, NULL);
    if (!l) return;
    eid_ledger_issue_params in = {.token = "ok-token", .merchant_id = "m", .subject = "s"};
    static const struct {
        const char *token, *merchant, *subject, *extra, *msg;
    } cases[] = {
        {NULL, "m", "s", NULL, "token: required"},
        {"", "m", "s", NULL, "token: must not be empty"},
        {"tok en", "m", "s", NULL,
         "token: byte 4 is not allowed (expected letters, digits, '.', '_' and '-')"},
        {"t", "", "s", NULL, "merchant_id: must not be empty"},
        {"t", "m", "a\nb", NULL, "subject: byte 2 is not allowed (expected no control characters)"},
        {"t", "m", "s", "x\001",
         "extra: byte 2 is not allowed (expected no control characters "
         "except tab)"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        in.token = cases[i].token;
        in.merchant_id = cases[i].merchant;
        in.subject = cases[i].subject;
        in.extra = cases[i].extra;
        CHECK(eid_ledger_issue(l, &in, &err) == EID_E_INVALID_ARG);
        CHECK_STR(err.message, cases[i].msg);
    }
    char long_token[EID_LEDGER_TOKEN_MAX + 2];
    memset(long_token, 'A', sizeof long_token - 1);
    long_token[sizeof long_token - 1] = '\0';
    in.token = long_token;
    in.merchant_id = "m";
    in.subject = "s";
    in.extra = NULL;
    CHECK(eid_ledger_issue(l, &in, &err) == EID_E_INVALID_ARG);
    CHECK_STR(err.message, "token: longer than 128 bytes");
    /* No partial records from refused input. */
    eid_ledger_entry r;
    CHECK(eid_ledger_get(l, "t", &r, &err) == EID_E_LEDGER_UNKNOWN);
    eid_ledger_outcome o = verdict(0, 1, 2, NULL);
    CHECK(eid_ledger_record(l, tok, &o, NULL, &err) == EID_E_INVALID_ARG);
    CHECK_STR(err.message, "outcome: billable and attempts must be 0 <= billable <= attempts");
    o = verdict(0, 1, 1, "has space");
    CHECK(eid_ledger_record(l, tok, &o, NULL, &err) == EID_E_INVALID_ARG);
    CHECK_STR(err.field, "request_id");
    CHECK(eid_ledger_record(l, "never-issued", &o, NULL, &err) == EID_E_INVALID_ARG);
    o.request_id = NULL;
    CHECK(eid_ledger_record(l, "never-issued", &o, NULL, &err) == EID_E_LEDGER_UNKNOWN);
    CHECK(eid_ledger_consume(l, "never-issued", "s", NULL, &err) == EID_E_LEDGER_UNKNOWN);
    CHECK(eid_ledger_claim(l, tok, "", NULL, &err) == EID_E_INVALID_ARG);
    eid_ledger_free(l);
    eid_ledger_free(NULL);
}

static void test_schema_version(void) {
    char p2[300], u2[310];
    snprintf(p2, sizeof p2, "%s/future.db", dir);
    snprintf(u2, sizeof u2, "sqlite:%s", p2);
    sqlite3 *db;
    CHECK(sqlite3_open(p2, &db) == SQLITE_OK);
    CHECK(sqlite3_exec(db, "PRAGMA user_version = 99", NULL, NULL, NULL) == SQLITE_OK);
    sqlite3_close(db);
    eid_ledger *l = NULL;
    eid_error err = {0};
    CHECK(eid_ledger_open(u2, NULL, &l, &err) == EID_E_LEDGER_STORAGE);
    CHECK_STR(err.message, "sqlite: schema version 99 is newer than this eidkit's (3)");
}

/* Attempts: stored once per Seq, listed by ReqTime; a count without a
 * buffer; too small a buffer says how many there are. */
static void test_attempts(void) {
    eid_ledger *l = open_ledger(url, NULL);
    if (!l) return;
    eid_error err = {0};
    eid_ledger_attempt d[3];
    memset(d, 0, sizeof d);
    snprintf(d[0].seq, sizeof d[0].seq, "b");
    d[0].req_time_ms = 2000;
    d[0].is_need_charge = 1;
    snprintf(d[1].seq, sizeof d[1].seq, "a");
    d[1].req_time_ms = 1000;
    d[1].has_err_code = 1;
    d[1].err_code = 2016;
    /* d[2] has no Seq: counted by the caller, not stored */
    eid_ledger_outcome o = {.has_verdict = 1,
                            .err_code = 2016,
                            .attempts = 3,
                            .billable = 1,
                            .details = d,
                            .n_details = 3};
    CHECK(issue(l, "ATT-1", "u") == EID_OK);
    CHECK(eid_ledger_record(l, "ATT-1", &o, NULL, &err) == EID_OK);
    CHECK(eid_ledger_record(l, "ATT-1", &o, NULL, &err) == EID_OK);
    size_t n = 9;
    CHECK(eid_ledger_attempts(l, "ATT-1", NULL, 0, &n, &err) == EID_E_BUFFER_TOO_SMALL && n == 2);
    eid_ledger_attempt out[2];
    CHECK(eid_ledger_attempts(l, "ATT-1", out, 1, &n, &err) == EID_E_BUFFER_TOO_SMALL && n == 2);
    CHECK_STR(out[0].seq, "a");
    CHECK(eid_ledger_attempts(l, "ATT-1", out, 2, &n, &err) == EID_OK && n == 2);
    CHECK_STR(out[0].seq, "a");
    CHECK(out[0].req_time_ms == 1000 && out[0].has_err_code && out[0].err_code == 2016);
    CHECK_STR(out[1].seq, "b");
    CHECK(out[1].is_need_charge && !out[1].has_err_code);
    CHECK(eid_ledger_attempts(l, "ATT-none", out, 2, &n, &err) == EID_E_LEDGER_UNKNOWN);
    o.details = NULL;
    CHECK(eid_ledger_record(l, "ATT-1", &o, NULL, &err) == EID_E_INVALID_ARG);
    eid_ledger_free(l);
}

/* What schema version 3 added, taken out again to make an older file. */
#define V2_UNDO                                                                                    \
    "DROP TABLE attempts; ALTER TABLE tokens DROP COLUMN late_err_code;"                           \
    " ALTER TABLE tokens DROP COLUMN settled_billable; ALTER TABLE tokens DROP COLUMN intention;"  \
    " ALTER TABLE tokens DROP COLUMN retry_later;"

/* A file of schema version 1 (no token buckets) is migrated on open and
 * keeps its tokens. */
static void test_migration(void) {
    char p2[300], u2[310];
    snprintf(p2, sizeof p2, "%s/v1.db", dir);
    snprintf(u2, sizeof u2, "sqlite:%s", p2);
    eid_ledger *l = open_ledger(u2, NULL);
    CHECK(l && issue(l, "OLD-1", "u") == EID_OK);
    eid_ledger_free(l);
    sqlite3 *db;
    CHECK(sqlite3_open(p2, &db) == SQLITE_OK);
    CHECK(sqlite3_exec(db, "DROP TABLE buckets; " V2_UNDO " PRAGMA user_version = 1", NULL, NULL,
                       NULL) == SQLITE_OK);
    sqlite3_close(db);
    l = open_ledger(u2, NULL);
    CHECK(l != NULL);
    if (!l) return;
    eid_error err = {0};
    eid_ledger_entry r;
    int allowed = 0;
    CHECK(eid_ledger_get(l, "OLD-1", &r, &err) == EID_OK && r.state == EID_LEDGER_ISSUED);
    CHECK(eid_ledger_take(l, "k", 1, 1, 0, &allowed, NULL, &err) == EID_OK && allowed);
    eid_ledger_free(l);
    CHECK(sqlite3_open(p2, &db) == SQLITE_OK);
    sqlite3_stmt *s = NULL;
    CHECK(sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &s, NULL) == SQLITE_OK);
    CHECK(sqlite3_step(s) == SQLITE_ROW && sqlite3_column_int(s, 0) == 3);
    sqlite3_finalize(s);
    sqlite3_close(db);
}

/* A file of schema version 2 (before late verdicts) is migrated on open: a
 * token consumed then keeps its charges as settled, and a consumed failure
 * is due again, so a retry the old version never pulled is still billed. */
static void test_migration_v2(void) {
    char p2[300], u2[310];
    snprintf(p2, sizeof p2, "%s/v2.db", dir);
    snprintf(u2, sizeof u2, "sqlite:%s", p2);
    eid_ledger *l = open_ledger(u2, NULL);
    eid_error err = {0};
    eid_ledger_outcome o = {.has_verdict = 1, .err_code = 2016, .attempts = 1, .billable = 1};
    CHECK(l && issue(l, "OLD-2", "u") == EID_OK);
    CHECK(eid_ledger_record(l, "OLD-2", &o, NULL, &err) == EID_OK);
    CHECK(eid_ledger_consume(l, "OLD-2", "u", NULL, &err) == EID_OK);
    eid_ledger_free(l);
    sqlite3 *db;
    CHECK(sqlite3_open(p2, &db) == SQLITE_OK);
    CHECK(sqlite3_exec(db, V2_UNDO " PRAGMA user_version = 2", NULL, NULL, NULL) == SQLITE_OK);
    sqlite3_close(db);
    l = open_ledger(u2, NULL);
    CHECK(l != NULL);
    if (!l) return;
    eid_ledger_entry r, due[4];
    size_t n = 0;
    CHECK(eid_ledger_get(l, "OLD-2", &r, &err) == EID_OK);
    CHECK(r.state == EID_LEDGER_CONSUMED && r.err_code == 2016 && r.billable == 1);
    CHECK(r.settled_billable == 1 && !r.has_late_err_code);
    CHECK(eid_ledger_due(l, due, 4, &n, &err) == EID_OK && n == 1);
    /* The retry the old version missed: a late pass, once. */
    eid_ledger_outcome pass = {.has_verdict = 1, .err_code = 0, .attempts = 2, .billable = 2};
    CHECK(eid_ledger_record(l, "OLD-2", &pass, &r, &err) == EID_OK);
    CHECK(r.late_pass && r.has_late_err_code && r.late_err_code == 0 && r.billable == 2);
    CHECK(r.err_code == 2016 && r.settled_billable == 1);
    CHECK(eid_ledger_record(l, "OLD-2", &pass, &r, &err) == EID_OK && !r.late_pass);
    CHECK(eid_ledger_due(l, due, 4, &n, &err) == EID_OK && n == 0);
    eid_ledger_free(l);
}

/* ------------------------------------------------------- token buckets */

/* The bucket on a frozen clock, step by step. The rates are powers of two
 * (or small integers) so every expected value is exact in binary. */
static void test_take(void) {
    eid_ledger *l = open_ledger(url, NULL);
    if (!l) return;
    const int64_t t0 = INT64_C(1735660800000);
    static const struct {
        const char *key;
        int64_t at; /* ms after t0 */
        double rate, burst;
        int allowed;
        double retry;
    } steps[] = {
        /* A new bucket is full: burst takes, then the exact wait for one. */
        {"b", 0, 2, 3, 1, 0},
        {"b", 0, 2, 3, 1, 0},
        {"b", 0, 2, 3, 1, 0},
        {"b", 0, 2, 3, 0, 0.5},
        {"b", 250, 2, 3, 0, 0.25}, /* half a token back */
        {"b", 500, 2, 3, 1, 0},
        {"b", 500, 2, 3, 0, 0.5},
        /* A clock behind the last refill (another node's) refills nothing. */
        {"b", 400, 2, 3, 0, 0.5},
        {"b", 750, 2, 3, 0, 0.25},
        /* Ten idle seconds refill to burst, not to 20. */
        {"b", 10500, 2, 3, 1, 0},
        {"b", 10500, 2, 3, 1, 0},
        {"b", 10500, 2, 3, 1, 0},
        {"b", 10500, 2, 3, 0, 0.5},
        /* Another key is another bucket. */
        {"c", 10500, 2, 3, 1, 0},
        /* A lower burst caps what is stored (9 tokens become 2). */
        {"d", 0, 1, 10, 1, 0},
        {"d", 0, 1, 2, 1, 0},
        {"d", 0, 1, 2, 1, 0},
        {"d", 0, 1, 2, 0, 1},
        /* Milliseconds count: 4 a second is half a token in 125 ms. */
        {"e", 0, 4, 1, 1, 0},
        {"e", 125, 4, 1, 0, 0.125},
        {"e", 249, 4, 1, 0, 0.001},
        {"e", 250, 4, 1, 1, 0},
        /* Fractional burst: 2.5 tokens, so two takes and then half a token. */
        {"f", 0, 1, 2.5, 1, 0},
        {"f", 0, 1, 2.5, 1, 0},
        {"f", 0, 1, 2.5, 0, 0.5},
        /* UTF-8 and spaces are fine in a key. */
        {"subject:é¦ å°å®", 0, 1, 1, 1, 0},
        {"subject:é¦ å°å®", 0, 1, 1, 0, 1},
    };
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) {
        int allowed = -1;
        double retry = -1;
        eid_error err = {0};
        eid_status st = eid_ledger_take(l, steps[i].key, steps[i].rate, steps[i].burst,
                                        t0 + steps[i].at, &allowed, &retry, &err);
        CHECK(st == EID_OK);
        if (allowed != steps[i].allowed || fabs(retry - steps[i].retry) > 1e-12)
            fprintf(stderr, "take step %zu: allowed %d retry %.17g\n", i, allowed, retry);
        CHECK(allowed == steps[i].allowed);
        CHECK(fabs(retry - steps[i].retry) <= 1e-12);
    }
    /* The subject limit of the gateway: 5 per 600 s. */
    int allowed = 0;
    double retry = 0;
    for (int i = 0; i < 5; i++)
        CHECK(eid_ledger_take(l, "g", 5.0 / 600, 5, t0, &allowed, &retry, NULL) == EID_OK &&
              allowed);
    CHECK(eid_ledger_take(l, "g", 5.0 / 600, 5, t0, &allowed, &retry, NULL) == EID_OK && !allowed);
    CHECK(fabs(retry - 120) < 1e-9);
    CHECK(eid_ledger_take(l, "g", 5.0 / 600, 5, t0 + 119000, &allowed, &retry, NULL) == EID_OK);
    CHECK(!allowed && fabs(retry - 1) < 1e-9);
    CHECK(eid_ledger_take(l, "g", 5.0 / 600, 5, t0 + 120000, &allowed, &retry, NULL) == EID_OK);
    CHECK(allowed && retry == 0);

    /* give: one token back, refilled first as for a take, never above burst. */
    for (int i = 0; i < 3; i++)
        CHECK(eid_ledger_take(l, "h", 2, 3, t0, &allowed, &retry, NULL) == EID_OK && allowed);
    CHECK(eid_ledger_give(l, "h", 2, 3, t0 + 250, NULL) == EID_OK); /* 0.5 + 1 */
    CHECK(eid_ledger_take(l, "h", 2, 3, t0 + 250, &allowed, &retry, NULL) == EID_OK && allowed);
    CHECK(eid_ledger_take(l, "h", 2, 3, t0 + 250, &allowed, &retry, NULL) == EID_OK && !allowed);
    CHECK(fabs(retry - 0.25) < 1e-12);
    for (int i = 0; i < 5; i++)
        CHECK(eid_ledger_give(l, "h", 2, 3, t0 + 250, NULL) == EID_OK);
    for (int i = 0; i < 3; i++)
        CHECK(eid_ledger_take(l, "h", 2, 3, t0 + 250, &allowed, &retry, NULL) == EID_OK && allowed);
    CHECK(eid_ledger_take(l, "h", 2, 3, t0 + 250, &allowed, &retry, NULL) == EID_OK && !allowed);
    /* To a bucket never seen (full): nothing more than burst. */
    CHECK(eid_ledger_give(l, "i", 1, 1, t0, NULL) == EID_OK);
    CHECK(eid_ledger_take(l, "i", 1, 1, t0, &allowed, &retry, NULL) == EID_OK && allowed);
    CHECK(eid_ledger_take(l, "i", 1, 1, t0, &allowed, &retry, NULL) == EID_OK && !allowed);

    /* now_ms 0 is the ledger's clock: its seconds, times 1000. */
    CHECK(eid_ledger_take(l, "clock", 1, 1, 0, &allowed, &retry, NULL) == EID_OK && allowed);
    CHECK(eid_ledger_take(l, "clock", 1, 1, 0, &allowed, &retry, NULL) == EID_OK && !allowed);
    CHECK(retry == 1);
    CHECK(eid_ledger_take(l, "clock", 1, 1, clock_now * 1000 + 500, &allowed, &retry, NULL) ==
              EID_OK &&
          !allowed && retry == 0.5);
    clock_now += 1;
    CHECK(eid_ledger_take(l, "clock", 1, 1, 0, &allowed, NULL, NULL) == EID_OK && allowed);

    /* A second handle on the file (as another process would) shares it. */
    eid_ledger *l2 = open_ledger(url, NULL);
    CHECK(eid_ledger_take(l2, "b", 2, 3, t0 + 10500, &allowed, &retry, NULL) == EID_OK);
    CHECK(!allowed && retry == 0.5);
    CHECK(eid_ledger_take(l2, "b", 2, 3, t0 + 11000, &allowed, &retry, NULL) == EID_OK && allowed);
    CHECK(eid_ledger_take(l, "b", 2, 3, t0 + 11000, &allowed, &retry, NULL) == EID_OK && !allowed);
    eid_ledger_free(l2);

    /* expire() deletes buckets that are full again (3 tokens at 2 a second:
     * 1.5 s, and a 1 s margin); the next take finds a full bucket. */
    sqlite3 *db;
    sqlite3_stmt *s = NULL;
    CHECK(sqlite3_open(path, &db) == SQLITE_OK);
    const char *count = "SELECT count(*) FROM buckets WHERE key = 'b'";
    CHECK(sqlite3_prepare_v2(db, count, -1, &s, NULL) == SQLITE_OK);
    CHECK(sqlite3_step(s) == SQLITE_ROW && sqlite3_column_int(s, 0) == 1);
    sqlite3_reset(s);
    CHECK(eid_ledger_expire(l, (t0 + 11000 + 2500) / 1000 - 1, NULL, NULL, NULL) == EID_OK);
    CHECK(sqlite3_step(s) == SQLITE_ROW && sqlite3_column_int(s, 0) == 1);
    sqlite3_reset(s);
    CHECK(eid_ledger_expire(l, (t0 + 11000 + 2501) / 1000 + 1, NULL, NULL, NULL) == EID_OK);
    CHECK(sqlite3_step(s) == SQLITE_ROW && sqlite3_column_int(s, 0) == 0);
    sqlite3_finalize(s);
    sqlite3_close(db);
    eid_ledger_free(l);
}

static void test_take_errors(void) {
    eid_ledger *l = open_ledger(url, NULL);
    if (!l) return;
    char long_key[EID_LEDGER_BUCKET_KEY_MAX + 2];
    memset(long_key, 'k', sizeof long_key - 1);
    long_key[sizeof long_key - 1] = '\0';
    static const double nan_ = NAN, inf = INFINITY;
    const struct {
        const char *key;
        double rate, burst;
        int64_t now;
        const char *msg;
    } cases[] = {
        {NULL, 1, 1, 0, "key: required"},
        {"", 1, 1, 0, "key: must not be empty"},
        {long_key, 1, 1, 0, "key: longer than 256 bytes"},
        {"user\001x", 1, 1, 0, "key: byte 5 is not allowed (expected no control characters)"},
        {"k", 0, 1, 0, "rate: must be a positive number per second"},
        {"k", -1, 1, 0, "rate: must be a positive number per second"},
        {"k", nan_, 1, 0, "rate: must be a positive number per second"},
        {"k", inf, 1, 0, "rate: must be a positive number per second"},
        {"k", 1, 0.5, 0, "burst: must be a number >= 1"},
        {"k", 1, nan_, 0, "burst: must be a number >= 1"},
        {"k", 1, inf, 0, "burst: must be a number >= 1"},
        {"k", 1e-9, 1, 0, "rate: too slow: burst / rate must be at most 31622400 seconds"},
        {"k", 1, 1, -1, "now_ms: out of range"},
        {"k", 1, 1, EID_TIMESTAMP_MAX * 1000 + 1, "now_ms: out of range"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int allowed = 7;
        double retry = 7;
        eid_error err = {0};
        CHECK(eid_ledger_take(l, cases[i].key, cases[i].rate, cases[i].burst, cases[i].now,
                              &allowed, &retry, &err) == EID_E_INVALID_ARG);
        CHECK_STR(err.message, cases[i].msg);
        CHECK(allowed == 0 && retry == 0);
        eid_error gerr = {0};
        CHECK(eid_ledger_give(l, cases[i].key, cases[i].rate, cases[i].burst, cases[i].now,
                              &gerr) == EID_E_INVALID_ARG);
        CHECK_STR(gerr.message, cases[i].msg);
    }
    /* The longest key, and the slowest rate, are accepted. */
    long_key[EID_LEDGER_BUCKET_KEY_MAX] = '\0';
    int allowed = 0;
    eid_error err = {0};
    CHECK(eid_ledger_take(l, long_key, 1, 1, 0, &allowed, NULL, &err) == EID_OK && allowed);
    CHECK(eid_ledger_take(l, "slow", 1.0 / EID_LEDGER_BUCKET_REFILL_MAX, 1, 0, &allowed, NULL,
                          &err) == EID_OK &&
          allowed);
    CHECK(eid_ledger_take(NULL, "k", 1, 1, 0, &allowed, NULL, &err) == EID_E_INVALID_ARG);
    CHECK(eid_ledger_take(l, "k", 1, 1, 0, NULL, NULL, &err) == EID_E_INVALID_ARG);
    CHECK(eid_ledger_give(NULL, "k", 1, 1, 0, &err) == EID_E_INVALID_ARG);
    eid_ledger_free(l);
}

/* ------------------------------------------------- allocation failures */

/* One life in a fresh in-memory database; every call either works or fails
 * cleanly. */
static void alloc_life(void) {
    eid_ledger *l = open_ledger("sqlite::memory:", key);
    if (!l) return;
    eid_error err = {0};
    eid_ledger_outcome o = verdict(0, 1, 1, "rid");
    o.payload = "{}";
    o.payload_len = 2;
    char buf[8];
    size_t len;
    if (issue(l, "A1", "s") == EID_OK && eid_ledger_record(l, "A1", &o, NULL, &err) == 0) {
        eid_status st = eid_ledger_payload(l, "A1", buf, sizeof buf, &len, &err);
        CHECK(st == EID_OK || st == EID_E_NOMEM || st == EID_E_CRYPTO);
        eid_ledger_consume(l, "A1", "s", NULL, &err);
    }
    /* Attempts: stored with a record, listed back (the list is allocated). */
    eid_ledger_attempt d = {.seq = "q1", .req_time_ms = 1, .is_need_charge = 1}, got[1];
    eid_ledger_outcome od = verdict(2016, 1, 1, NULL);
    od.details = &d;
    od.n_details = 1;
    if (issue(l, "A2", "s") == EID_OK && eid_ledger_record(l, "A2", &od, NULL, &err) == EID_OK) {
        size_t n = 0;
        eid_status sa = eid_ledger_attempts(l, "A2", got, 1, &n, &err);
        CHECK(sa == EID_E_NOMEM || (sa == EID_OK && n == 1 && strcmp(got[0].seq, "q1") == 0));
    }
    int allowed = 0;
    eid_status st = eid_ledger_take(l, "subject:s", 1, 2, 0, &allowed, NULL, &err);
    CHECK(st == EID_OK || st == EID_E_NOMEM);
    eid_ledger_free(l);
}

static void test_alloc_failures(void) {
    CHECK(CRYPTO_set_mem_functions(t_malloc, t_realloc, t_free) == 1);
    alloc_life();
    int clean = 0;
    long n;
    for (n = 1; n < 200 && !clean; n++) {
        alloc_count = 0;
        fail_at = n;
        alloc_life();
        clean = alloc_count < n;
    }
    fail_at = 0;
    CHECK(clean);
}

/* The codes the Lua bindings put in err.code come from eid_status_code. */
/* What libeidkit hands a second Redis client (eidkit.openresty.ledger):
 * the scripts with their prologue, the record reader and the rules. */
static void test_redis_exports(void) {
    size_t len = 0;
    CHECK(eid_ledger_redis_script("consume", NULL, 0, &len) == EID_E_BUFFER_TOO_SMALL);
    CHECK(len > 100);
    char *buf = malloc(len + 1);
    CHECK(buf != NULL);
    if (buf) {
        size_t got = 0;
        CHECK(eid_ledger_redis_script("consume", buf, len, &got) == EID_E_BUFFER_TOO_SMALL);
        CHECK(eid_ledger_redis_script("consume", buf, len + 1, &got) == EID_OK && got == len);
        CHECK(strlen(buf) == len);
        /* The prologue first, from the C tables, then the file. */
        CHECK(strncmp(buf, "local ERR_EXPIRED, ERR_PENDING = 15, 17\nlocal FIELDS = {\"token\"",
                      62) == 0);
        CHECK(strstr(buf, "[17] = true") != NULL);
        CHECK(strstr(buf, "-- eidkit ledger, Redis backend: consume") != NULL);
        free(buf);
    }
    CHECK(eid_ledger_redis_script("nope", NULL, 0, &len) == EID_E_INVALID_ARG);
    CHECK(eid_ledger_redis_script(NULL, NULL, 0, &len) == EID_E_INVALID_ARG);
    CHECK(eid_ledger_redis_script("take", NULL, 0, NULL) == EID_E_INVALID_ARG);

    size_t nf = 0;
    while (eid_ledger_redis_field(nf))
        nf++;
    CHECK(nf == 20);
    CHECK_STR(eid_ledger_redis_field(0), "token");
    CHECK_STR(eid_ledger_redis_field(19), "retry_later");

    /* A consumed failure read back: settled_billable defaults to billable
     * when absent, and it is open while its TTL runs. */
    const char *v[21] = {"T-1",    "m",     "alice", "",     "3", "1000", "1600",
                         "260200", "1100",  "1200",  "1100", "1", "2",    "1",
                         "2006",   "r1,r2", NULL,    NULL,   "1", "0",    "0"};
    size_t lens[21];
    for (int i = 0; i < 21; i++)
        lens[i] = v[i] ? strlen(v[i]) : 0;
    eid_ledger_entry e;
    CHECK(eid_ledger_redis_entry(v, lens, 21, 1300, &e) == EID_OK);
    CHECK_STR(e.token, "T-1");
    CHECK(e.state == EID_LEDGER_CONSUMED && e.has_err_code && e.err_code == 2006);
    CHECK(!e.has_late_err_code && e.settled_billable == 1 && e.intention && !e.has_payload);
    CHECK_STR(e.request_ids, "r1,r2");
    CHECK(e.open);
    CHECK(eid_ledger_redis_entry(v, lens, 20, 1300, &e) == EID_E_INVALID_ARG);
    v[0] = NULL;
    CHECK(eid_ledger_redis_entry(v, lens, 21, 1300, &e) == EID_E_LEDGER_UNKNOWN);

    /* The same record as the scripts' RECORD packs it (Redis's cjson: "/"
     * escaped, missing fields false), and what is not that shape. */
    const char *packed = "[\"T-1\",\"m\",\"al\\/ice\",\"\",\"3\",\"1000\",\"1600\",\"260200\","
                         "\"1100\",\"1200\",\"1100\",\"1\",\"2\",\"1\",\"2006\",\"r1,r2\",false,"
                         "false,\"1\",\"0\"]";
    memset(&e, 0xff, sizeof e);
    CHECK(eid_ledger_redis_entry_packed(packed, strlen(packed), 7, 1300, &e) == EID_OK);
    CHECK_STR(e.token, "T-1");
    CHECK_STR(e.subject, "al/ice");
    CHECK(e.state == EID_LEDGER_CONSUMED && e.has_err_code && e.err_code == 2006);
    CHECK(!e.has_late_err_code && e.settled_billable == 1 && e.intention && e.has_payload);
    CHECK_STR(e.request_ids, "r1,r2");
    CHECK(e.open);
    const char *none = "[false,false,false,false,false,false,false,false,false,false,false,false,"
                       "false,false,false,false,false,false,false,false]";
    CHECK(eid_ledger_redis_entry_packed(none, strlen(none), 0, 1300, &e) == EID_E_LEDGER_UNKNOWN);
    const char *bad[] = {
        "", "[", "{}", "[\"T-1\"]",
        "[1,false,false,false,false,false,false,false,"
        "false,false,false,false,false,false,false,false,false,false,false,false]"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        CHECK(eid_ledger_redis_entry_packed(bad[i], strlen(bad[i]), 0, 1300, &e) ==
              EID_E_INVALID_ARG);
    /* Only len bytes are read: the record's own end, not the string's. */
    CHECK(eid_ledger_redis_entry_packed(packed, strlen(packed) - 1, 0, 1300, &e) ==
          EID_E_INVALID_ARG);
    CHECK(eid_ledger_redis_entry_packed(NULL, 0, 0, 1300, &e) == EID_E_INVALID_ARG);
    CHECK(eid_ledger_redis_entry_packed(packed, strlen(packed), 0, 1300, NULL) ==
          EID_E_INVALID_ARG);

    eid_error err;
    CHECK(eid_ledger_redis_refusal("wrong_subject", &err) == EID_E_LEDGER_WRONG_SUBJECT);
    CHECK_STR(err.message, "subject: the token is bound to another subject");
    CHECK(eid_ledger_redis_refusal("whatever", &err) == EID_E_INTERNAL);
    CHECK(eid_ledger_redis_refusal(NULL, &err) == EID_E_INTERNAL);

    CHECK(eid_ledger_check_claim("alice", EID_LEDGER_PASSED, 100, "alice", 200, &err) == EID_OK);
    CHECK(eid_ledger_check_claim("alice", EID_LEDGER_ISSUED, 100, "alice", 200, &err) ==
          EID_E_LEDGER_EXPIRED);
    CHECK(eid_ledger_check_claim("alice", EID_LEDGER_PASSED, 100, "alicf", 200, &err) ==
          EID_E_LEDGER_WRONG_SUBJECT);
    CHECK(strstr(err.message, "ali") == NULL);
    char longsub[EID_LEDGER_SUBJECT_MAX + 2];
    memset(longsub, 'a', sizeof longsub - 1);
    longsub[sizeof longsub - 1] = '\0';
    /* Never a compare of a cut copy. */
    CHECK(eid_ledger_check_claim(longsub, EID_LEDGER_PASSED, 100, longsub, 200, &err) ==
          EID_E_INVALID_ARG);

    eid_ledger_issue_params p = {.token = "T-2", .merchant_id = "m", .subject = "s"};
    CHECK(eid_ledger_check_issue(&p, &err) == EID_OK);
    p.token = "T 2";
    CHECK(eid_ledger_check_issue(&p, &err) == EID_E_INVALID_ARG);
    CHECK(strncmp(err.message, "token:", 6) == 0);
    CHECK(eid_ledger_check_issue(NULL, &err) == EID_E_INVALID_ARG);

    int64_t ttl = 0;
    CHECK(eid_ledger_check_take("k", 10, 20, 0, &ttl, &err) == EID_OK && ttl == 2000 + 1 + 1000);
    CHECK(eid_ledger_check_take("k", 0, 20, 0, &ttl, &err) == EID_E_INVALID_ARG);
    CHECK(eid_ledger_check_take("k", 10, 20, 0, NULL, &err) == EID_E_INVALID_ARG);
}

/* The redis:// grammar eid_ledger_open and the OpenResty ledger share:
 * what it reads, what it refuses, and that no refusal repeats a secret. */
static void test_redis_url(void) {
    eid_ledger_redis_url u;
    eid_error err = {0};
    CHECK(eid_ledger_redis_url_parse("redis://10.0.0.5:6380", &u, &err) == EID_OK);
    CHECK_STR(u.host, "10.0.0.5");
    CHECK(u.port == 6380 && u.db == 0 && !u.has_password);
    CHECK_STR(u.prefix, "eidkit:");
    CHECK(eid_ledger_redis_url_parse("redis://:s3cr%2Ft%40x@h:1/7?prefix=app:", &u, &err) ==
          EID_OK);
    CHECK(u.has_password && u.db == 7 && u.port == 1);
    CHECK_STR(u.user, "");
    CHECK_STR(u.password, "s3cr/t@x");
    CHECK_STR(u.prefix, "app:");
    /* An unencoded '@' belongs to the password: the host follows the last one. */
    CHECK(eid_ledger_redis_url_parse("redis://eid%3Akit:p@ss:w@h.example:6379/2", &u, &err) ==
          EID_OK);
    CHECK_STR(u.user, "eid:kit");
    CHECK_STR(u.password, "p@ss:w");
    CHECK_STR(u.host, "h.example");
    /* '@' in the prefix is not userinfo. */
    CHECK(eid_ledger_redis_url_parse("redis://h:1/0?prefix=a@b", &u, &err) == EID_OK);
    CHECK(!u.has_password);
    CHECK_STR(u.prefix, "a@b");
    eid_ledger_redis_url_clear(&u);
    CHECK(u.password[0] == '\0' && u.host[0] == '\0');

    char long_pw[600] = "redis://:";
    memset(long_pw + 9, 'p', 512);
    strcpy(long_pw + 9 + 512, "@h:1");
    const struct {
        const char *url, *msg;
    } bad[] = {
        {"rediss://h:1", "url: expected redis://HOST:PORT[/DB][?prefix=P]"},
        {"redis://hunter2@h:1",
         "url: redis URL names a user without a password "
         "(redis://USER:PASSWORD@HOST:PORT, or redis://:PASSWORD@HOST:PORT)"},
        {"redis://:@h:1", "url: redis password is empty"},
        {"redis://:hunter2%4@h:1", "url: redis password: bad percent-encoding"},
        {"redis://:hunter2%00@h:1", "url: redis password: bad percent-encoding"},
        {"redis://hunter%zz:pw@h:1", "url: redis user: bad percent-encoding"},
        {long_pw, "url: redis password longer than 511 bytes"},
        {"redis://:hunter2@", "url: redis URL needs HOST:PORT (redis://127.0.0.1:6379/0)"},
        {"redis://:hunter2@h:x", "url: redis port must be 1..65535"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        memset(&u, 'x', sizeof u);
        CHECK(eid_ledger_redis_url_parse(bad[i].url, &u, &err) == EID_E_INVALID_ARG);
        CHECK_STR(err.field, "url");
        CHECK_STR(err.message, bad[i].msg);
        CHECK(strstr(err.message, "hunter") == NULL);
        CHECK(u.password[0] == '\0'); /* a refusal leaves no secret behind */
        /* eid_ledger_open reads the same grammar, with the same words. */
        eid_ledger *l = NULL;
        if (strncmp(bad[i].url, "redis://", 8) == 0) {
            CHECK(eid_ledger_open(bad[i].url, NULL, &l, &err) == EID_E_INVALID_ARG);
            CHECK_STR(err.message, bad[i].msg);
            CHECK(l == NULL);
        }
    }
    /* eid_ledger_check_url: open's URL checks, opening nothing. */
    CHECK(eid_ledger_check_url("redis://:pw@10.0.0.5:6380/2?prefix=a:", &err) == EID_OK);
    CHECK(eid_ledger_check_url("sqlite:/nonexistent-dir/x.db", &err) == EID_OK);
    CHECK(eid_ledger_check_url(NULL, &err) == EID_E_INVALID_ARG);
    static const char *const refused[] = {"sqlite:", "mysql://x", "redis://h:0/0",
                                          "redis://hunter2@h:1"};
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        eid_error open_err = {0};
        eid_ledger *l = NULL;
        CHECK(eid_ledger_check_url(refused[i], &err) == EID_E_INVALID_ARG);
        CHECK(eid_ledger_open(refused[i], NULL, &l, &open_err) == EID_E_INVALID_ARG);
        CHECK_STR(err.message, open_err.message);
    }
    CHECK(eid_ledger_redis_url_parse(NULL, &u, &err) == EID_E_INVALID_ARG);
    CHECK(eid_ledger_redis_url_parse("redis://h:1", NULL, &err) == EID_E_INVALID_ARG);
}

static void test_status_codes(void) {
    CHECK(strcmp(eid_status_code(EID_OK), "ok") == 0);
    CHECK(strcmp(eid_status_code(EID_E_LEDGER_UNKNOWN), "unknown_token") == 0);
    CHECK(strcmp(eid_status_code(EID_E_LEDGER_UNAVAILABLE), "unavailable") == 0);
    CHECK(strcmp(eid_status_code(EID_E_CLIENT_REMOTE), "remote") == 0);
    CHECK(strcmp(eid_status_code((eid_status)-1), "unknown") == 0);
    CHECK(strcmp(eid_status_code((eid_status)(EID_E_FORMAT + 1)), "unknown") == 0);
    CHECK(strcmp(eid_strerror(EID_E_LEDGER_PENDING), "no result recorded yet") == 0);
    CHECK(strcmp(eid_strerror((eid_status)-1), "unknown status") == 0);
}

/* Group commit: the batch's calls share one transaction, each that writes
 * more than one row in its own savepoint; nothing is visible elsewhere before the end; a batch
 * waits for (and refuses past the busy timeout) another connection's write lock. */
/* eid_ledger_record_many on a backend without pipelines: each call as
 * eid_ledger_record alone, with its own time and result; the Redis
 * pipeline itself is held to the same answers by spec/ledger/pool_spec.lua. */
static void test_record_many(void) {
    char u2[200];
    snprintf(u2, sizeof u2, "sqlite:%s/many.db", dir);
    eid_ledger *l = open_ledger(u2, NULL);
    CHECK(l != NULL);
    if (l == NULL) return;
    CHECK(eid_ledger_pipelines(l) == 0);
    CHECK(eid_ledger_pipelines(NULL) == 0);
    CHECK(issue(l, "T-MANY-1", "u1") == EID_OK);
    CHECK(issue(l, "T-MANY-2", "u2") == EID_OK);
    eid_ledger_outcome pass = verdict(0, 1, 1, "req-m1"), fail = verdict(-3, 1, 1, "req-m2");
    eid_ledger_entry out[2];
    eid_ledger_record_call calls[] = {
        {.token = "T-MANY-1", .outcome = &pass, .now = clock_now + 7, .out = &out[0]},
        {.token = "T-NEVER", .outcome = &pass},
        {.token = "T-MANY-2", .outcome = NULL},
        {.token = "T-MANY-2", .outcome = &fail, .out = &out[1]},
    };
    calls[1].st = EID_E_INTERNAL; /* set by the call, whatever was there */
    eid_ledger_record_many(l, calls, 4);
    CHECK(calls[0].st == EID_OK && out[0].state == EID_LEDGER_PASSED && out[0].billable == 1);
    CHECK(out[0].last_pull_at == clock_now + 7); /* its own time */
    CHECK(calls[1].st == EID_E_LEDGER_UNKNOWN);
    CHECK(calls[2].st == EID_E_INVALID_ARG);
    CHECK_STR(calls[2].err.message, "outcome: is NULL");
    CHECK(calls[3].st == EID_OK && out[1].state == EID_LEDGER_FAILED);
    CHECK(out[1].last_pull_at == clock_now); /* now 0: the ledger's clock */
    eid_ledger_entry r;
    CHECK(eid_ledger_get(l, "T-MANY-2", &r, NULL) == EID_OK && r.err_code == -3);
    eid_ledger_record_many(NULL, calls, 1);
    CHECK(calls[0].st == EID_E_INVALID_ARG);
    eid_ledger_record_many(l, NULL, 3); /* nothing to do */
    eid_ledger_record_many(l, calls, 0);
    eid_ledger_free(l);
}

static void test_batch(void) {
    char p2[160], u2[200];
    snprintf(p2, sizeof p2, "%s/batch.db", dir);
    snprintf(u2, sizeof u2, "sqlite:%s", p2);
    eid_ledger *a = open_ledger(u2, NULL), *b = open_ledger(u2, NULL);
    CHECK(a != NULL && b != NULL);
    if (a == NULL || b == NULL) return;
    eid_error err = {0};
    eid_ledger_entry r;
    CHECK(eid_ledger_batches(a) == 1);
    CHECK(eid_ledger_batches(NULL) == 0);
    CHECK(eid_ledger_batch_end(a, &err) == EID_E_INVALID_ARG);
    CHECK_STR(err.message, "ledger: no batch is open");
    CHECK(eid_ledger_batch_begin(NULL, &err) == EID_E_INVALID_ARG);

    CHECK(eid_ledger_batch_begin(a, &err) == EID_OK);
    CHECK(eid_ledger_batch_begin(a, &err) == EID_E_INVALID_ARG);
    CHECK_STR(err.message, "ledger: a batch is already open");
    CHECK(issue(a, "T-BATCH-1", "u1") == EID_OK);
    CHECK(issue(a, "T-BATCH-2", "u2") == EID_OK);
    CHECK(issue(a, "T-BATCH-1", "u9") == EID_E_LEDGER_EXISTS); /* refused; the first stays */
    eid_ledger_outcome pass = verdict(0, 1, 1, "req-b1");
    CHECK(eid_ledger_record(a, "T-BATCH-1", &pass, &r, &err) == EID_OK);
    CHECK(eid_ledger_consume(a, "T-BATCH-1", "u2", NULL, &err) == EID_E_LEDGER_WRONG_SUBJECT);
    CHECK(eid_ledger_consume(a, "T-BATCH-1", "u1", &r, &err) == EID_OK);
    CHECK(eid_ledger_consume(a, "T-BATCH-1", "u1", NULL, &err) == EID_E_LEDGER_CONSUMED);
    CHECK(eid_ledger_claim(a, "T-BATCH-2", "u2", &r, &err) == EID_OK); /* its own write */
    /* A poll of a pending token writes one row and runs without a
     * savepoint of its own: a call that fails next to it still takes
     * nothing of it along. */
    eid_ledger_outcome poll = {.request_id = "req-b2"};
    CHECK(eid_ledger_record(a, "T-BATCH-2", &poll, &r, &err) == EID_OK && r.pulls == 1);
    CHECK(eid_ledger_record(a, "T-BATCH-NONE", &poll, &r, &err) == EID_E_LEDGER_UNKNOWN);
    int allowed = 0; /* a take writes one row too */
    CHECK(eid_ledger_take(a, "k-batch", 0.001, 1, 0, &allowed, NULL, &err) == EID_OK && allowed);
    CHECK(eid_ledger_take(a, "k-batch", 0.001, 1, 0, &allowed, NULL, &err) == EID_OK && !allowed);
    /* Not yet committed: another connection sees none of it, and cannot
     * write while the batch holds the lock. */
    CHECK(eid_ledger_get(b, "T-BATCH-1", &r, &err) == EID_E_LEDGER_UNKNOWN);
    CHECK(eid_ledger_batch_end(a, &err) == EID_OK);
    CHECK(eid_ledger_get(b, "T-BATCH-1", &r, &err) == EID_OK);
    CHECK(r.state == EID_LEDGER_CONSUMED && r.billable == 1);
    CHECK_STR(r.subject, "u1");
    CHECK(eid_ledger_get(b, "T-BATCH-2", &r, &err) == EID_OK && r.state == EID_LEDGER_ISSUED);
    CHECK(r.pulls == 1 && strcmp(r.request_ids, "req-b2") == 0);
    CHECK(eid_ledger_take(b, "k-batch", 0.001, 1, 0, &allowed, NULL, &err) == EID_OK && !allowed);

    /* Out of the batch, each call commits on its own again. */
    CHECK(issue(a, "T-BATCH-3", "u3") == EID_OK);
    CHECK(eid_ledger_get(b, "T-BATCH-3", &r, &err) == EID_OK);
    eid_ledger_free(a);

    /* Another connection's batch holds the write lock: a batch cannot begin
     * past the busy timeout, while reads go on (WAL). */
    eid_ledger_options o = {.clock = {test_clock, NULL}, .timeout_ms = 100};
    CHECK(eid_ledger_open(u2, &o, &a, &err) == EID_OK);
    CHECK(eid_ledger_batch_begin(b, &err) == EID_OK);
    CHECK(issue(b, "T-BATCH-4", "u4") == EID_OK);
    CHECK(eid_ledger_batch_begin(a, &err) == EID_E_LEDGER_UNAVAILABLE);
    CHECK(eid_ledger_batch_end(a, &err) == EID_E_INVALID_ARG); /* a failed begin opens nothing */
    CHECK(eid_ledger_get(a, "T-BATCH-3", &r, &err) == EID_OK);
    CHECK(eid_ledger_get(a, "T-BATCH-4", &r, &err) == EID_E_LEDGER_UNKNOWN);
    /* A ledger freed with its batch open keeps nothing of it. */
    eid_ledger_free(b);
    CHECK(eid_ledger_get(a, "T-BATCH-4", &r, &err) == EID_E_LEDGER_UNKNOWN);
    CHECK(eid_ledger_batch_begin(a, &err) == EID_OK && eid_ledger_batch_end(a, &err) == EID_OK);
    eid_ledger_free(a);
}

/* A database file of its own, and a cap on how far its files may grow. */
typedef struct full_disk {
    char path[160], url[200], wal[170];
    struct rlimit old;
    void (*prev)(int);
} full_disk;

static void full_disk_file(full_disk *d, const char *name) {
    snprintf(d->path, sizeof d->path, "%s/%s", dir, name);
    snprintf(d->url, sizeof d->url, "sqlite:%s", d->path);
    snprintf(d->wal, sizeof d->wal, "%s-wal", d->path);
}

/* From now on neither file may grow by more than margin bytes: the file
 * size limit (RLIMIT_FSIZE, with SIGXFSZ ignored so the write fails with
 * EFBIG) stands in for a full disk. */
static void full_disk_on(full_disk *d, off_t margin) {
    struct stat sw, sd;
    CHECK(stat(d->wal, &sw) == 0 && stat(d->path, &sd) == 0);
    CHECK(getrlimit(RLIMIT_FSIZE, &d->old) == 0);
    struct rlimit lim = d->old;
    lim.rlim_cur = (rlim_t)((sw.st_size > sd.st_size ? sw.st_size : sd.st_size) + margin);
    d->prev = signal(SIGXFSZ, SIG_IGN);
    CHECK(setrlimit(RLIMIT_FSIZE, &lim) == 0);
}

static void full_disk_off(full_disk *d) {
    CHECK(setrlimit(RLIMIT_FSIZE, &d->old) == 0);
    signal(SIGXFSZ, d->prev);
}

/* A batch whose commit cannot be written keeps nothing: the file size limit
 * stops the WAL from growing by the batch's pages, as a full disk would. */
static void test_batch_commit_fails(void) {
    full_disk d;
    full_disk_file(&d, "batch-full.db");
    eid_ledger *a = open_ledger(d.url, NULL), *b = open_ledger(d.url, NULL);
    CHECK(a != NULL && b != NULL);
    if (a == NULL || b == NULL) return;
    eid_error err = {0};
    eid_ledger_entry r;
    CHECK(issue(a, "T-FULL-0", "u0") == EID_OK);
    full_disk_on(&d, 8192);
    char extra[1001];
    memset(extra, 'x', 1000);
    extra[1000] = '\0';
    CHECK(eid_ledger_batch_begin(a, &err) == EID_OK);
    eid_status issued = EID_OK;
    for (int i = 1; i <= 60 && issued == EID_OK; i++) {
        char t[32];
        snprintf(t, sizeof t, "T-FULL-%d", i);
        eid_ledger_issue_params in = {
            .token = t, .merchant_id = "0NSJ2023", .subject = "u1", .extra = extra};
        issued = eid_ledger_issue(a, &in, &err);
    }
    CHECK(issued == EID_OK); /* 60 KiB of pages: in the cache until the commit */
    CHECK(eid_ledger_batch_end(a, &err) == EID_E_LEDGER_STORAGE);
    CHECK(strstr(err.message, "sqlite") != NULL);
    full_disk_off(&d);
    /* Nothing of the batch was kept; what came before it was; and the
     * ledger goes on. */
    CHECK(eid_ledger_get(b, "T-FULL-1", &r, &err) == EID_E_LEDGER_UNKNOWN);
    CHECK(eid_ledger_get(b, "T-FULL-60", &r, &err) == EID_E_LEDGER_UNKNOWN);
    CHECK(eid_ledger_get(b, "T-FULL-0", &r, &err) == EID_OK);
    CHECK(eid_ledger_batch_begin(a, &err) == EID_OK);
    CHECK(issue(a, "T-FULL-1", "u1") == EID_OK);
    CHECK(eid_ledger_batch_end(a, &err) == EID_OK);
    CHECK(eid_ledger_get(b, "T-FULL-1", &r, &err) == EID_OK);
    eid_ledger_free(a);
    eid_ledger_free(b);
}

/* A batch broken half-way: an error that makes SQLite roll the whole
 * transaction back (here the cache, 16 MiB, spilling pages into a WAL that
 * may not grow, as on a full disk) ends the batch's transaction under the
 * calls already made. Every later call in the batch must fail rather than
 * run on its own (and be committed without the earlier ones), batch_end
 * says the batch is lost, nothing of it is kept, and the ledger goes on. */
static void test_batch_broken(void) {
    full_disk d;
    full_disk_file(&d, "batch-broken.db");
    eid_ledger *a = open_ledger(d.url, key), *b = open_ledger(d.url, key);
    CHECK(a != NULL && b != NULL);
    if (a == NULL || b == NULL) return;
    eid_error err = {0};
    eid_ledger_entry r;
    for (int i = 0; i <= 24; i++) {
        char t[32];
        snprintf(t, sizeof t, "T-BRK-%d", i);
        CHECK(issue(a, t, "u") == EID_OK);
    }
    static char big[EID_LEDGER_PAYLOAD_MAX];
    for (size_t i = 0; i < sizeof big; i++) /* incompressible enough, not secret */
        big[i] = (char)('a' + (i * 7919 + i / 13) % 26);
    full_disk_on(&d, 65536);
    CHECK(eid_ledger_batch_begin(a, &err) == EID_OK);
    eid_status st = EID_OK;
    int recorded = 0;
    for (int i = 1; i <= 24 && st == EID_OK; i++) {
        char t[32];
        snprintf(t, sizeof t, "T-BRK-%d", i);
        eid_ledger_outcome o = verdict(0, 1, 1, "rid");
        o.payload = big;
        o.payload_len = sizeof big;
        st = eid_ledger_record(a, t, &o, &r, &err);
        if (st == EID_OK) recorded++;
    }
    /* Over 16 MiB of pages: the cache spilled into the WAL and could not. */
    CHECK(st == EID_E_LEDGER_STORAGE);
    CHECK(recorded >= 8 && recorded < 24);
    /* Every further call in the batch fails, a read as well as a write. */
    CHECK(issue(a, "T-BRK-NEW", "u") == EID_E_LEDGER_STORAGE);
    CHECK(eid_ledger_get(a, "T-BRK-0", &r, &err) == EID_E_LEDGER_STORAGE);
    CHECK(strstr(err.message, "rolled its transaction back") != NULL);
    int allowed = 1;
    CHECK(eid_ledger_take(a, "k", 1, 1, 0, &allowed, NULL, &err) == EID_E_LEDGER_STORAGE);
    CHECK(!allowed);
    CHECK(eid_ledger_batch_end(a, &err) == EID_E_LEDGER_STORAGE);
    full_disk_off(&d);
    /* Nothing of the batch was kept, not even the records made before the
     * error; what came before the batch was; the ledger goes on. */
    CHECK(eid_ledger_get(b, "T-BRK-1", &r, &err) == EID_OK && r.state == EID_LEDGER_ISSUED);
    CHECK(eid_ledger_get(b, "T-BRK-NEW", &r, &err) == EID_E_LEDGER_UNKNOWN);
    CHECK(eid_ledger_get(a, "T-BRK-1", &r, &err) == EID_OK && r.state == EID_LEDGER_ISSUED);
    CHECK(eid_ledger_batch_begin(a, &err) == EID_OK);
    eid_ledger_outcome o = verdict(0, 1, 1, "rid");
    CHECK(eid_ledger_record(a, "T-BRK-1", &o, &r, &err) == EID_OK);
    CHECK(eid_ledger_batch_end(a, &err) == EID_OK);
    CHECK(eid_ledger_get(b, "T-BRK-1", &r, &err) == EID_OK && r.state != EID_LEDGER_ISSUED);
    eid_ledger_free(a);
    eid_ledger_free(b);
}

/* The checkpoint sequence number in the WAL's header (offset 12,
 * big-endian: SQLite's file format); 0 when unreadable. */
static uint32_t wal_sequence(const char *wal) {
    unsigned char h[16] = {0};
    FILE *f = fopen(wal, "rb");
    if (f == NULL) return 0;
    size_t n = fread(h, 1, sizeof h, f);
    fclose(f);
    if (n != sizeof h) return 0;
    return (uint32_t)h[12] << 24 | (uint32_t)h[13] << 16 | (uint32_t)h[14] << 8 | h[15];
}

static off_t file_size(const char *file) {
    struct stat st;
    return stat(file, &st) == 0 ? st.st_size : -1;
}

/* The signals blocked in the thread named name (from /proc/self/task/ * /status,
 * SigBlk); -1 when there is no such thread. */
static long long blocked_in_thread(const char *name) {
    DIR *d = opendir("/proc/self/task");
    if (d == NULL) return -1;
    long long mask = -1;
    struct dirent *e;
    char file[300], line[256];
    while (mask < 0 && (e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') continue;
        snprintf(file, sizeof file, "/proc/self/task/%s/status", e->d_name);
        FILE *f = fopen(file, "r");
        if (f == NULL) continue;
        int ours = 0;
        while (fgets(line, sizeof line, f)) {
            if (strncmp(line, "Name:", 5) == 0) ours = strstr(line, name) != NULL;
            if (ours && strncmp(line, "SigBlk:", 7) == 0)
                mask = (long long)strtoull(line + 7, NULL, 16);
        }
        fclose(f);
    }
    closedir(d);
    return mask;
}

/* Issue tokens (prefix-NNNNNN, t holds the last) until the WAL at w holds
 * more than the checkpoint interval, then, a few ms apart, until its
 * header's checkpoint sequence has moved on from what it was on entry:
 * the WAL started over, after a checkpoint wrote everything back. */
static void fill_until_restart(eid_ledger *l, const char *w, const char *prefix, char *t,
                               size_t tcap) {
    uint32_t seq0 = wal_sequence(w);
    /* pages of 4 KiB, with frame headers */
    const off_t full = (off_t)EID__SQLITE_CHECKPOINT_PAGES * (4096 + 24);
    int n = 0, ok = 1;
    while (ok && file_size(w) < full && n < 200000) {
        snprintf(t, tcap, "%s-%06d", prefix, ++n);
        ok = issue(l, t, "user-1") == EID_OK;
    }
    CHECK(ok && file_size(w) >= full);
    for (int k = 0; ok && wal_sequence(w) == seq0 && k < 2000; k++) {
        nanosleep(&(struct timespec){.tv_nsec = 5000000}, NULL);
        snprintf(t, tcap, "%s-%06d", prefix, ++n);
        ok = issue(l, t, "user-1") == EID_OK;
    }
    CHECK(ok && wal_sequence(w) != seq0);
}

/* SQLite's own autocheckpoint is off (the checkpoint runs on a thread of
 * the ledger's): past the interval a checkpoint still runs, beside the
 * commits, and the WAL starts over with every token kept. With renamed,
 * the file is renamed away under the open ledger, so the checkpointer's
 * own open fails (at its first request): it must hand the checkpoints back
 * to the committing connection rather than let the WAL grow for good. */
static void check_checkpoints(const char *name, bool renamed) {
    char p[160], moved[170], u[200], w[170], t[40];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    snprintf(moved, sizeof moved, "%s.moved", p);
    snprintf(u, sizeof u, "sqlite:%s", p);
    snprintf(w, sizeof w, "%s-wal", p);
    eid_ledger *l = open_ledger(u, NULL);
    CHECK(l != NULL);
    if (!l) return;
    CHECK(issue(l, "T-CKPT-000000", "user-1") == EID_OK);
    if (renamed) CHECK(rename(p, moved) == 0);
    fill_until_restart(l, w, "T-CKPT", t, sizeof t);
    if (renamed) {
        CHECK(rename(moved, p) == 0);
    } else {
        /* It took no signal from this thread, which takes them all: a
         * process-directed one must go to a thread that acts on it. */
        long long mask = blocked_in_thread("eidkit-ckpt");
        CHECK(mask != -1);
        int sigs[] = {SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGCHLD};
        for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
            CHECK(mask != -1 && (mask >> (sigs[i] - 1) & 1));
    }
    eid_ledger_entry r;
    eid_error err = {0};
    CHECK(eid_ledger_get(l, "T-CKPT-000000", &r, &err) == EID_OK);
    CHECK(eid_ledger_get(l, t, &r, &err) == EID_OK);
    eid_ledger_free(l); /* stops the checkpointer, then closes */
    l = open_ledger(u, NULL);
    CHECK(l != NULL && eid_ledger_get(l, t, &r, &err) == EID_OK);
    eid_ledger_free(l);
    CHECK(file_size(w) == -1); /* the last close wrote the WAL back and removed it */
}

static void test_checkpoint(void) {
    check_checkpoints("checkpoint.db", false);
    check_checkpoints("fallback.db", true);
}

int main(void) {
    if (mkdtemp(dir) == NULL) return 2;
    snprintf(path, sizeof path, "%s/ledger.db", dir);
    snprintf(url, sizeof url, "sqlite:%s", path);
    test_alloc_failures(); /* first: OpenSSL's allocator can only be set before use */
    test_lifecycle();
    test_expiry();
    test_export();
    test_payload();
    test_bad_input();
    test_schema_version();
    test_migration();
    test_migration_v2();
    test_attempts();
    test_take();
    test_take_errors();
    test_record_many();
    test_batch();
    test_batch_commit_fails();
    test_batch_broken();
    test_checkpoint();
    test_status_codes();
    test_redis_exports();
    test_redis_url();
    char cmd[320];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
    return check_report("test_ledger");
}
