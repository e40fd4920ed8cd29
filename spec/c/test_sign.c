/* C tests for the TC3 signer: the shared vectors, the UTC date rule, the key
 * cache, the clock, bad input, and signing from several threads at once. */
#define _POSIX_C_SOURCE 200809L

#include "eidkit/eidkit.h"

#include "check.h"
#include "json_file.h"

#include <cjson/cJSON.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>

#define FAKE_SECRET "FakeSecretKeyForTestVectors000000"

static eid_sign_request faceid_request(const char *body) {
    eid_sign_request r = {0};
    r.secret_id = "AKIDEXAMPLEFAKEFAKEFAKEFAKEFAKE00000";
    r.secret_key = FAKE_SECRET;
    r.secret_key_len = strlen(FAKE_SECRET);
    r.action = "GetEidResult";
    r.timestamp = 1735660800;
    r.body = body;
    r.body_len = strlen(body);
    return r;
}

static void test_vectors(eid_signer *s, const char *path) {
    cJSON *root = load_json(path);
    CHECK(root != NULL);
    if (root == NULL) return;
    const cJSON *vectors = cJSON_GetObjectItemCaseSensitive(root, "vectors");
    CHECK(cJSON_GetArraySize(vectors) >= 5);
    const cJSON *v;
    cJSON_ArrayForEach(v, vectors) {
        const char *names[EID_SIGNED_HEADERS_MAX];
        const cJSON *sh = cJSON_GetObjectItemCaseSensitive(v, "signed_headers");
        size_t nsh = (size_t)cJSON_GetArraySize(sh);
        CHECK(nsh <= EID_SIGNED_HEADERS_MAX);
        for (size_t k = 0; k < nsh && k < EID_SIGNED_HEADERS_MAX; k++)
            names[k] = cJSON_GetStringValue(cJSON_GetArrayItem(sh, (int)k));
        const char *body = jstr(v, "body");
        const char *key = jstr(v, "secret_key");
        eid_sign_request r = {
            .secret_id = jstr(v, "secret_id"),
            .secret_key = key,
            .secret_key_len = strlen(key),
            .service = jstr(v, "service"),
            .host = jstr(v, "host"),
            .action = jstr(v, "action"),
            .version = jstr(v, "version"),
            .region = jstr(v, "region"),
            .content_type = jstr(v, "content_type"),
            .timestamp = jint(v, "timestamp"),
            .body = body,
            .body_len = strlen(body),
            .signed_headers = names,
            .signed_headers_count = nsh,
        };
        char cr[4096];
        eid_sign_explain ex = {.canonical_request = cr, .canonical_request_cap = sizeof cr};
        eid_signature sig;
        eid_error err = {0};
        /* Twice: the second call takes the cached-key path. */
        for (int pass = 0; pass < 2; pass++) {
            eid_status st = eid_signer_explain(s, &r, &sig, &ex, &err);
            if (st != EID_OK) fprintf(stderr, "%s: %s\n", jstr(v, "name"), err.message);
            CHECK(st == EID_OK);
            CHECK_STR(sig.signature, jstr(v, "signature"));
            if (jstr(v, "authorization")) CHECK_STR(sig.authorization, jstr(v, "authorization"));
            if (jstr(v, "hashed_payload")) CHECK_STR(ex.hashed_payload, jstr(v, "hashed_payload"));
            if (jstr(v, "hashed_canonical_request"))
                CHECK_STR(ex.hashed_canonical_request, jstr(v, "hashed_canonical_request"));
        }
        if (nsh == 3) /* vector C: x-tc-action is signed with its value lower-cased */
            CHECK(strstr(cr, "\nx-tc-action:describeinstances\n") != NULL);
    }
    cJSON_Delete(root);
}

static void test_dates(void) {
    static const struct {
        int64_t ts;
        const char *date;
    } cases[] = {
        {0, "1970-01-01"},          {86399, "1970-01-01"},
        {86400, "1970-01-02"},      {951782400, "2000-02-29"},
        {951868799, "2000-02-29"},  {951868800, "2000-03-01"},
        {1735660800, "2024-12-31"}, /* 2025-01-01 00:00 at UTC+8 */
        {1735689599, "2024-12-31"}, {1735689600, "2025-01-01"},
        {4107542399, "2100-02-28"}, /* 2100 is not a leap year */
        {4107542400, "2100-03-01"}, {EID_TIMESTAMP_MAX, "9999-12-31"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char out[11];
        CHECK(eid_utc_date(cases[i].ts, out) == EID_OK);
        CHECK_STR(out, cases[i].date);
    }
    char out[11];
    CHECK(eid_utc_date(-1, out) == EID_E_INVALID_ARG);
    CHECK(eid_utc_date(EID_TIMESTAMP_MAX + 1, out) == EID_E_INVALID_ARG);
}

static void test_cache(void) {
    eid_signer *s = NULL;
    eid_signer_options o = {.cache_slots = 2};
    CHECK(eid_signer_new(&o, &s) == EID_OK);
    eid_sign_request r = faceid_request("{}");
    eid_signature a, b, c;
    uint64_t hits = 9, misses = 9;
    CHECK(eid_signer_sign(s, &r, &a, NULL) == EID_OK);
    CHECK(eid_signer_sign(s, &r, &b, NULL) == EID_OK);
    CHECK_STR(a.signature, b.signature);
    eid_signer_cache_stats(s, &hits, &misses);
    CHECK(hits == 1 && misses == 1);

    /* Next UTC day and another secret are misses; the result must be what a
     * fresh signer computes (no stale key reused). */
    r.timestamp += 86400;
    CHECK(eid_signer_sign(s, &r, &c, NULL) == EID_OK);
    r.secret_key = "another";
    r.secret_key_len = 7;
    CHECK(eid_signer_sign(s, &r, &c, NULL) == EID_OK);
    eid_signer_cache_stats(s, &hits, &misses);
    CHECK(hits == 1 && misses == 3);
    eid_signer *fresh = NULL;
    eid_signature d;
    CHECK(eid_signer_new(NULL, &fresh) == EID_OK);
    CHECK(eid_signer_sign(fresh, &r, &d, NULL) == EID_OK);
    CHECK_STR(c.signature, d.signature);
    /* A secret that is a prefix of a cached one must not hit. */
    r.secret_key = "anothe";
    r.secret_key_len = 6;
    CHECK(eid_signer_sign(s, &r, &c, NULL) == EID_OK);
    CHECK(eid_signer_sign(fresh, &r, &d, NULL) == EID_OK);
    CHECK_STR(c.signature, d.signature);
    eid_signer_free(fresh);
    eid_signer_free(s);
    eid_signer_free(NULL);
}

static int64_t fixed_clock(void *ud) { return *(int64_t *)ud; }

static void test_clock(void) {
    int64_t now = 1700000000;
    eid_signer_options o = {.clock = {fixed_clock, &now}};
    eid_signer *s = NULL;
    CHECK(eid_signer_new(&o, &s) == EID_OK);
    eid_sign_request r = faceid_request("{}");
    r.timestamp = EID_TIMESTAMP_NOW;
    eid_signature sig;
    CHECK(eid_signer_sign(s, &r, &sig, NULL) == EID_OK);
    CHECK(sig.timestamp == 1700000000);
    CHECK_STR(sig.timestamp_str, "1700000000");
    CHECK_STR(sig.date, "2023-11-14");
    now = -5;
    eid_error err = {0};
    CHECK(eid_signer_sign(s, &r, &sig, &err) == EID_E_INVALID_ARG);
    CHECK_STR(err.field, "timestamp");
    eid_signer_free(s);
}

static void expect_invalid(eid_signer *s, eid_sign_request r, const char *field,
                           const char *needle) {
    eid_signature sig;
    eid_error err = {0};
    eid_status st = eid_signer_sign(s, &r, &sig, &err);
    CHECK(st == EID_E_INVALID_ARG);
    CHECK_STR(err.field, field);
    if (strstr(err.message, needle) == NULL)
        fprintf(stderr, "message '%s' lacks '%s'\n", err.message, needle);
    CHECK(strstr(err.message, needle) != NULL);
    CHECK(strstr(err.message, FAKE_SECRET) == NULL);
    CHECK(strncmp(err.message, field, strlen(field)) == 0);
}

static void test_bad_input(eid_signer *s) {
    eid_sign_request r = faceid_request("{}");
    eid_sign_request b;

    b = r, b.secret_key = NULL, b.secret_key_len = 0;
    expect_invalid(s, b, "secret_key", "required");
    b = r, b.secret_key_len = 0;
    expect_invalid(s, b, "secret_key", "required");
    b = r, b.secret_id = NULL;
    expect_invalid(s, b, "secret_id", "required");
    b = r, b.secret_id = "AKID/x";
    expect_invalid(s, b, "secret_id", "not allowed");
    b = r, b.action = NULL;
    expect_invalid(s, b, "action", "required");
    b = r, b.action = "Get Eid";
    expect_invalid(s, b, "action", "not allowed");
    b = r, b.body = NULL;
    expect_invalid(s, b, "body", "NULL");
    b = r, b.timestamp = -1;
    expect_invalid(s, b, "timestamp", "Unix seconds");
    b = r, b.timestamp = EID_TIMESTAMP_MAX + 1;
    expect_invalid(s, b, "timestamp", "Unix seconds");
    b = r, b.host = "faceid.tencentcloudapi.com\r\nX-Evil: 1";
    expect_invalid(s, b, "host", "not allowed");
    b = r, b.content_type = " application/json";
    expect_invalid(s, b, "content_type", "leading or trailing");
    b = r, b.service = "FaceID";
    expect_invalid(s, b, "service", "lower-case");
    b = r, b.host = "cvm.tencentcloudapi.com";
    expect_invalid(s, b, "version", "required");
    b = r, b.token = "bad token";
    expect_invalid(s, b, "token", "not allowed");

    const char *unknown[] = {"content-type", "host", "x-foo"};
    b = r, b.signed_headers = unknown, b.signed_headers_count = 3;
    expect_invalid(s, b, "signed_headers", "unknown header 'x-foo'");
    const char *dup[] = {"content-type", "host", "Host"};
    b = r, b.signed_headers = dup, b.signed_headers_count = 3;
    expect_invalid(s, b, "signed_headers", "twice");
    const char *no_host[] = {"content-type"};
    b = r, b.signed_headers = no_host, b.signed_headers_count = 1;
    expect_invalid(s, b, "signed_headers", "content-type and host");
    const char *token_hdr[] = {"content-type", "host", "x-tc-token"};
    b = r, b.signed_headers = token_hdr, b.signed_headers_count = 3;
    expect_invalid(s, b, "signed_headers", "set token");

    /* NULL arguments fail cleanly rather than crash. */
    eid_signature sig;
    CHECK(eid_signer_sign(NULL, &r, &sig, NULL) == EID_E_INVALID_ARG);
    CHECK(eid_signer_sign(s, NULL, &sig, NULL) == EID_E_INVALID_ARG);
    CHECK(eid_signer_sign(s, &r, NULL, NULL) == EID_E_INVALID_ARG);
    CHECK(eid_signer_new(NULL, NULL) == EID_E_INVALID_ARG);
    CHECK(strcmp(eid_strerror((eid_status)999), "unknown status") == 0);
    CHECK_STR(eid_version(), EIDKIT_VERSION);
}

static void test_headers_and_explain(eid_signer *s) {
    eid_sign_request r = faceid_request("{\"EidToken\":\"x\"}");
    r.token = "SessionTok";
    r.region = "ap-guangzhou";
    r.language = "en-US";
    const char *all[] = {"X-TC-Token",  "host",          "content-type", "x-tc-timestamp",
                         "x-tc-region", "x-tc-language", "x-tc-version", "x-tc-action"};
    r.signed_headers = all;
    r.signed_headers_count = 8;
    eid_signature sig;
    char small[8];
    eid_sign_explain ex = {.canonical_request = small, .canonical_request_cap = sizeof small};
    eid_error err = {0};
    CHECK(eid_signer_explain(s, &r, &sig, &ex, &err) == EID_E_BUFFER_TOO_SMALL);
    CHECK(ex.canonical_request_len > sizeof small);
    char big[1024];
    ex.canonical_request = big;
    ex.canonical_request_cap = sizeof big;
    CHECK(eid_signer_explain(s, &r, &sig, &ex, &err) == EID_OK);
    CHECK_STR(sig.signed_headers, "content-type;host;x-tc-action;x-tc-language;x-tc-region;"
                                  "x-tc-timestamp;x-tc-token;x-tc-version");
    CHECK_STR(big, "POST\n/\n\ncontent-type:application/json\nhost:faceid.tencentcloudapi.com\n"
                   "x-tc-action:geteidresult\nx-tc-language:en-us\nx-tc-region:ap-guangzhou\n"
                   "x-tc-timestamp:1735660800\nx-tc-token:sessiontok\nx-tc-version:2018-03-01\n\n"
                   "content-type;host;x-tc-action;x-tc-language;x-tc-region;x-tc-timestamp;"
                   "x-tc-token;x-tc-version\n"
                   "fc62023eebc7fde243bf7cb383afad19f021a772312bdff57e7b08bbbdd7221e");
    eid_header h[EID_HEADERS_MAX];
    size_t n = eid_sign_headers(&r, &sig, h);
    CHECK(n == 9);
    const char *names[] = {"Authorization", "Content-Type", "Host",
                           "X-TC-Action",   "X-TC-Version", "X-TC-Timestamp",
                           "X-TC-Region",   "X-TC-Token",   "X-TC-Language"};
    for (size_t i = 0; i < n && i < 9; i++)
        CHECK_STR(h[i].name, names[i]);
    CHECK_STR(h[0].value, sig.authorization);
    CHECK_STR(h[4].value, "2018-03-01");
    CHECK_STR(h[5].value, "1735660800");
    r.token = r.region = r.language = NULL;
    r.signed_headers = NULL;
    CHECK(eid_signer_sign(s, &r, &sig, NULL) == EID_OK);
    CHECK(eid_sign_headers(&r, &sig, h) == 6);
}

/* Garbage in every field: each call must end in EID_OK or a clean
 * EID_E_INVALID_ARG naming a field, never in a crash or an overread (the ASan
 * and valgrind runs of this binary watch for those). */
static uint64_t rng_state = 0x9E3779B97F4A7C15u;
static uint64_t rnd(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static const char *garbage(char *buf, size_t cap) {
    static const char *const likely[] = {"content-type", "host", "x-tc-token", "X-TC-Action",
                                         "faceid",       "",     "a/b",        "GetEidToken"};
    switch (rnd() % 4) {
    case 0: return NULL;
    case 1: return likely[rnd() % 8];
    default: {
        size_t n = rnd() % cap;
        for (size_t i = 0; i < n; i++) {
            buf[i] = (char)(rnd() % 3 ? 0x20 + rnd() % 95 : 1 + rnd() % 255);
        }
        buf[n] = '\0';
        return buf;
    }
    }
}

static void test_garbage(eid_signer *s) {
    char f[12][300];
    int ok = 0, invalid = 0;
    for (int iter = 0; iter < 20000; iter++) {
        const char *names[10];
        char hn[10][24];
        size_t nnames = rnd() % 11;
        for (size_t i = 0; i < nnames; i++)
            names[i] = garbage(hn[i], sizeof hn[i]);
        eid_sign_request r = faceid_request("{}");
        /* Keep some fields valid so deeper checks are reached too. */
        if (rnd() % 2) r.secret_id = garbage(f[0], 200);
        if (rnd() % 2) {
            r.secret_key = garbage(f[1], 300);
            r.secret_key_len = r.secret_key ? strlen(r.secret_key) : 0;
        }
        if (rnd() % 2) r.token = garbage(f[2], 300);
        if (rnd() % 2) r.host = garbage(f[3], 300);
        if (rnd() % 2) r.service = garbage(f[4], 80);
        if (rnd() % 2) r.action = garbage(f[5], 150);
        if (rnd() % 2) r.version = garbage(f[6], 40);
        if (rnd() % 2) r.region = garbage(f[7], 80);
        if (rnd() % 2) r.language = garbage(f[8], 20);
        if (rnd() % 2) r.content_type = garbage(f[9], 300);
        if (rnd() % 4 == 0) r.timestamp = (int64_t)rnd();
        if (rnd() % 2) {
            r.signed_headers = names;
            r.signed_headers_count = nnames;
        }
        eid_signature sig;
        eid_error err = {0};
        eid_status st = eid_signer_sign(s, &r, &sig, &err);
        if (st == EID_OK) {
            ok++;
            CHECK(strlen(sig.authorization) > 100);
        } else {
            invalid++;
            CHECK(st == EID_E_INVALID_ARG);
            CHECK(err.field[0] != '\0');
            CHECK(strncmp(err.message, err.field, strlen(err.field)) == 0);
        }
    }
    /* Both outcomes must have been exercised for the test to mean anything. */
    CHECK(ok > 100 && invalid > 100);
}

typedef struct {
    eid_signer *s;
    char want[65];
    int bad;
} thread_arg;

static void *sign_loop(void *p) {
    thread_arg *a = p;
    eid_sign_request r = faceid_request("{\"EidToken\":\"CE661F1A-0F1E-45BD-BE13-34C05CEA7681\","
                                        "\"InfoType\":\"0\",\"BestFramesCount\":1}");
    for (int i = 0; i < 20000; i++) {
        eid_signature sig;
        /* Alternate days so threads also race on key derivation. */
        r.timestamp = 1735660800 + (i % 2) * 86400;
        if (eid_signer_sign(a->s, &r, &sig, NULL) != EID_OK)
            a->bad++;
        else if (i % 2 == 0 && strcmp(sig.signature, a->want) != 0)
            a->bad++;
    }
    return NULL;
}

static void test_threads(void) {
    eid_signer *s = NULL;
    eid_signer_options o = {.cache_slots = 1};
    CHECK(eid_signer_new(&o, &s) == EID_OK);
    thread_arg args[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        args[i] = (thread_arg){.s = s, .bad = 0};
        strcpy(args[i].want, "9d0bc3c64ade52127bed12c509c1285cbe63f648e9a6fec46d1adf5836364b78");
        CHECK(pthread_create(&th[i], NULL, sign_loop, &args[i]) == 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        CHECK(args[i].bad == 0);
    }
    eid_signer_free(s);
}

int main(int argc, char **argv) {
    const char *vectors = argc > 1 ? argv[1] : "spec/vectors/tc3-vectors.json";
    eid_signer *s = NULL;
    CHECK(eid_signer_new(NULL, &s) == EID_OK);
    if (s == NULL) return check_report("test_sign");
    test_vectors(s, vectors);
    test_dates();
    test_cache();
    test_clock();
    test_bad_input(s);
    test_headers_and_explain(s);
    test_garbage(s);
    test_threads();
    eid_signer_free(s);
    return check_report("test_sign");
}
