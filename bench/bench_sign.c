/*
 * Time eid_signer_sign on one TC3 vector: with the derived key cached, with a
 * fresh derivation on every call, and the bare OpenSSL work a signature cannot
 * avoid (the floor), so the signer's own overhead can be read off the table.
 *
 *   bench_sign VECTORS.json VECTOR_NAME REPS TARGET_MS [CASE...]
 *
 * CASE is c_cached, c_fresh or c_floor (default: all three), so a profiler can
 * be pointed at one of them; or "allocs", which times nothing and counts the
 * heap allocations per call of each path instead (it swaps OpenSSL's
 * allocator, so it runs alone).
 *
 * Every case is checked against the vector's signature before it is timed,
 * the eidkit ones after as well; a wrong signature exits non-zero. Results go
 * to stdout as
 *   result <TAB> id <TAB> label <TAB> median_us <TAB> min_us <TAB> max_us <TAB> iters <TAB> reps
 *   allocs <TAB> id <TAB> per_call
 * for bench/run to tabulate. Not part of the test suite.
 */
#define _POSIX_C_SOURCE 200809L

#include "eidkit/eidkit.h"

#include <cjson/cJSON.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_REPS    101
#define ALLOC_CALLS 1000

typedef struct bench_ctx {
    eid_sign_request req[2]; /* [1] differs from [0] only in the secret key */
    const char *names[EID_SIGNED_HEADERS_MAX];
    char other_key[EID_SECRET_KEY_MAX + 1];
    const char *want_sig;
    char want_auth[EID_AUTHORIZATION_MAX];
    char date[11];

    eid_signer *signer;
    eid_signature sig;

    /* The floor: the exact bytes eidkit hashes and MACs for this vector. */
    char canonical[8192];
    size_t canonical_len;
    char sts[256];
    size_t sts_len;
    EVP_MD *sha256;
    EVP_MD_CTX *md;
    EVP_MAC *hmac;
    EVP_MAC_CTX *mac;
} bench_ctx;

typedef void (*bench_fn)(bench_ctx *c, size_t n);

static int ncases;
static char **cases;

static bool wanted(const char *id) {
    if (ncases == 0) return strcmp(id, "allocs") != 0;
    for (int i = 0; i < ncases; i++)
        if (strcmp(cases[i], id) == 0) return true;
    return false;
}

static void die(const char *what, const char *detail) {
    fprintf(stderr, "bench_sign: %s%s%s\n", what, detail ? ": " : "", detail ? detail : "");
    exit(1);
}

/* ------------------------------------------------------------- the cases */

static void sign_or_die(bench_ctx *c, const eid_sign_request *r) {
    eid_error err = {0};
    if (eid_signer_sign(c->signer, r, &c->sig, &err) != EID_OK) die("sign failed", err.message);
}

static void check_auth(const bench_ctx *c, const char *label) {
    if (strcmp(c->sig.authorization, c->want_auth) != 0) {
        fprintf(stderr, "bench_sign: %s signs wrongly\n  got  %s\n  want %s\n", label,
                c->sig.authorization, c->want_auth);
        exit(1);
    }
}

/* Same request every call: after the first, every call is a cache hit. */
static void run_cached(bench_ctx *c, size_t n) {
    for (size_t i = 0; i < n; i++)
        sign_or_die(c, &c->req[0]);
}

/* Two secrets through a one-slot cache: each call evicts the other's key, so
 * every call pays the three-HMAC derivation, as a signer without a cache would
 * (and as the Node SDK does on every call). The slot holds req[0]'s key when a
 * run starts, and n is even, so a run starts on req[1] and ends on req[0],
 * whose result can be checked. */
static void run_fresh(bench_ctx *c, size_t n) {
    for (size_t i = 0; i < n; i++)
        sign_or_die(c, &c->req[(i & 1) ^ 1]);
}

/* What eidkit's hot path does in OpenSSL, and nothing else: hash the body,
 * hash the canonical request, re-key and run the HMAC. No validation, no
 * formatting, no lock. */
static void run_floor(bench_ctx *c, size_t n) {
    unsigned char d[32];
    unsigned int dl;
    size_t ml;
    const eid_sign_request *r = &c->req[0];
    for (size_t i = 0; i < n; i++) {
        if (EVP_DigestInit_ex2(c->md, c->sha256, NULL) != 1 ||
            EVP_DigestUpdate(c->md, r->body, r->body_len) != 1 ||
            EVP_DigestFinal_ex(c->md, d, &dl) != 1 ||
            EVP_DigestInit_ex2(c->md, c->sha256, NULL) != 1 ||
            EVP_DigestUpdate(c->md, c->canonical, c->canonical_len) != 1 ||
            EVP_DigestFinal_ex(c->md, d, &dl) != 1 || EVP_MAC_init(c->mac, NULL, 0, NULL) != 1 ||
            EVP_MAC_update(c->mac, (const unsigned char *)c->sts, c->sts_len) != 1 ||
            EVP_MAC_final(c->mac, d, &ml, sizeof d) != 1)
            die("OpenSSL floor failed", NULL);
    }
}

static void setup_cached(bench_ctx *c) {
    if (eid_signer_new(NULL, &c->signer) != EID_OK) die("eid_signer_new failed", NULL);
    sign_or_die(c, &c->req[0]);
    check_auth(c, "C cached");
}

static void finish_cached(bench_ctx *c) {
    check_auth(c, "C cached");
    uint64_t hits, misses;
    eid_signer_cache_stats(c->signer, &hits, &misses);
    if (misses != 1) die("the cached case missed the key cache", NULL);
    eid_signer_free(c->signer);
    c->signer = NULL;
}

static void setup_fresh(bench_ctx *c) {
    eid_signer_options one = {.cache_slots = 1};
    if (eid_signer_new(&one, &c->signer) != EID_OK) die("eid_signer_new failed", NULL);
    sign_or_die(c, &c->req[0]);
    check_auth(c, "C fresh");
}

static void finish_fresh(bench_ctx *c) {
    check_auth(c, "C fresh");
    uint64_t hits, misses;
    eid_signer_cache_stats(c->signer, &hits, &misses);
    if (hits != 0) die("the fresh case hit the key cache", NULL);
    eid_signer_free(c->signer);
    c->signer = NULL;
}

/* The floor's inputs come from eid_signer_explain; its key is derived here
 * with one-shot EVP calls, and its result checked against the vector, so a
 * floor that does less than a real signature cannot slip through. */
static void setup_floor(bench_ctx *c) {
    if (eid_signer_new(NULL, &c->signer) != EID_OK) die("eid_signer_new failed", NULL);
    eid_sign_explain ex = {.canonical_request = c->canonical,
                           .canonical_request_cap = sizeof c->canonical};
    eid_error err = {0};
    if (eid_signer_explain(c->signer, &c->req[0], &c->sig, &ex, &err) != EID_OK)
        die("explain failed", err.message);
    eid_signer_free(c->signer);
    c->signer = NULL;
    c->canonical_len = ex.canonical_request_len;
    c->sts_len = strlen(ex.string_to_sign);
    memcpy(c->sts, ex.string_to_sign, c->sts_len + 1);

    c->sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
    c->hmac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    c->md = EVP_MD_CTX_new();
    if (c->sha256 == NULL || c->hmac == NULL || c->md == NULL) die("OpenSSL fetch failed", NULL);
    c->mac = EVP_MAC_CTX_new(c->hmac);
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
        OSSL_PARAM_construct_end(),
    };
    const eid_sign_request *r = &c->req[0];
    unsigned char seed[3 + EID_SECRET_KEY_MAX], kdate[32], kservice[32], ksigning[32], d[32];
    memcpy(seed, "TC3", 3);
    memcpy(seed + 3, r->secret_key, r->secret_key_len);
    size_t dl;
    if (EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, seed, 3 + r->secret_key_len,
                  (const unsigned char *)c->date, 10, kdate, 32, NULL) == NULL ||
        EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, kdate, 32, (const unsigned char *)r->service,
                  strlen(r->service), kservice, 32, NULL) == NULL ||
        EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, kservice, 32,
                  (const unsigned char *)"tc3_request", 11, ksigning, 32, NULL) == NULL ||
        c->mac == NULL || EVP_MAC_CTX_set_params(c->mac, params) != 1 ||
        EVP_MAC_init(c->mac, ksigning, 32, NULL) != 1 ||
        EVP_MAC_update(c->mac, (const unsigned char *)c->sts, c->sts_len) != 1 ||
        EVP_MAC_final(c->mac, d, &dl, sizeof d) != 1)
        die("OpenSSL floor setup failed", NULL);
    char hex[65];
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", d[i]);
    if (strcmp(hex, c->want_sig) != 0) die("the OpenSSL floor signs wrongly", hex);
}

static void finish_floor(bench_ctx *c) {
    EVP_MAC_CTX_free(c->mac);
    EVP_MAC_free(c->hmac);
    EVP_MD_CTX_free(c->md);
    EVP_MD_free(c->sha256);
}

typedef struct bench_case {
    const char *id;
    const char *label;
    void (*setup)(bench_ctx *);
    bench_fn run;
    void (*finish)(bench_ctx *);
} bench_case;

static const bench_case all_cases[] = {
    {"c_cached", "C eid_signer_sign, cached key", setup_cached, run_cached, finish_cached},
    {"c_fresh", "C eid_signer_sign, fresh key (1 slot, 2 secrets)", setup_fresh, run_fresh,
     finish_fresh},
    {"c_floor", "C OpenSSL alone: 2 SHA-256 + 1 HMAC via EVP", setup_floor, run_floor,
     finish_floor},
};

/* ---------------------------------------------------------------- timing */

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double time_run(bench_fn fn, bench_ctx *c, size_t n) {
    double t0 = now_s();
    fn(c, n);
    return now_s() - t0;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Doubling n until one run lasts target_s doubles as the warm-up (caches,
 * branch predictors, OpenSSL's lazily built state). */
static void measure(const bench_case *bc, bench_ctx *c, int reps, double target_s) {
    size_t n = 256;
    while (time_run(bc->run, c, n) < target_s)
        n *= 2;
    double us[MAX_REPS];
    for (int i = 0; i < reps; i++)
        us[i] = time_run(bc->run, c, n) * 1e6 / (double)n;
    qsort(us, (size_t)reps, sizeof us[0], cmp_double);
    double median = reps % 2 ? us[reps / 2] : (us[reps / 2 - 1] + us[reps / 2]) / 2;
    printf("result\t%s\t%s\t%.4f\t%.4f\t%.4f\t%zu\t%d\n", bc->id, bc->label, median, us[0],
           us[reps - 1], n, reps);
    fflush(stdout);
}

/* ----------------------------------------------------------- allocations */

/* libeidkit allocates only through OpenSSL, so counting here sees all of the
 * signer's heap use. */
static size_t n_allocs;

static void *count_malloc(size_t n, const char *file, int line) {
    (void)file, (void)line;
    n_allocs++;
    return malloc(n);
}

static void *count_realloc(void *p, size_t n, const char *file, int line) {
    (void)file, (void)line;
    n_allocs++;
    return realloc(p, n);
}

static void count_free(void *p, const char *file, int line) {
    (void)file, (void)line;
    free(p);
}

static void count_allocs(bench_ctx *c) {
    for (size_t i = 0; i < sizeof all_cases / sizeof all_cases[0]; i++) {
        const bench_case *bc = &all_cases[i];
        bc->setup(c);
        bc->run(c, 2); /* leave one-time lazy allocations out of the count */
        size_t before = n_allocs;
        bc->run(c, ALLOC_CALLS);
        printf("allocs\t%s\t%.2f\n", bc->id, (double)(n_allocs - before) / ALLOC_CALLS);
        bc->finish(c);
    }
}

/* ----------------------------------------------------------------- input */

static const char *jstr(const cJSON *v, const char *key) {
    const char *s = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(v, key));
    if (s == NULL) die("vector field missing", key);
    return s;
}

static int64_t jint(const cJSON *v, const char *key) {
    const cJSON *n = cJSON_GetObjectItemCaseSensitive(v, key);
    if (!cJSON_IsNumber(n)) die("vector field missing", key);
    return (int64_t)n->valuedouble;
}

static const cJSON *find_vector(const cJSON *root, const char *name) {
    const cJSON *v;
    cJSON_ArrayForEach(v, cJSON_GetObjectItemCaseSensitive(root, "vectors")) {
        const char *vn = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(v, "name"));
        if (vn && strcmp(vn, name) == 0) return v;
    }
    die("no such vector", name);
    return NULL;
}

/* The JSON document in path; exits when it cannot be read or parsed. */
static cJSON *load_json(const char *path) {
    FILE *f = fopen(path, "rb");
    long size = f && fseek(f, 0, SEEK_END) == 0 ? ftell(f) : -1;
    char *text = size >= 0 && fseek(f, 0, SEEK_SET) == 0 ? malloc((size_t)size + 1) : NULL;
    cJSON *root = NULL;
    if (text && fread(text, 1, (size_t)size, f) == (size_t)size)
        root = cJSON_ParseWithLength(text, (size_t)size);
    free(text);
    if (f) fclose(f);
    if (root == NULL) die("cannot read vectors", path);
    return root;
}

/* Strings point into v, which must outlive c. */
static void load_request(bench_ctx *c, const cJSON *v) {
    const cJSON *sh = cJSON_GetObjectItemCaseSensitive(v, "signed_headers");
    size_t nsh = (size_t)cJSON_GetArraySize(sh);
    if (nsh > EID_SIGNED_HEADERS_MAX) die("too many signed headers", NULL);
    for (size_t k = 0; k < nsh; k++)
        c->names[k] = cJSON_GetStringValue(cJSON_GetArrayItem(sh, (int)k));
    const char *key = jstr(v, "secret_key");
    const char *body = jstr(v, "body");
    c->req[0] = (eid_sign_request){
        .secret_id = jstr(v, "secret_id"),
        .secret_key = key,
        .secret_key_len = strlen(key),
        .host = jstr(v, "host"),
        .service = jstr(v, "service"),
        .action = jstr(v, "action"),
        .version = jstr(v, "version"),
        .content_type = jstr(v, "content_type"),
        .timestamp = jint(v, "timestamp"),
        .body = body,
        .body_len = strlen(body),
        .signed_headers = c->names,
        .signed_headers_count = nsh,
    };
    /* Same length as the real secret, so both halves of the fresh case do
     * identical work. */
    snprintf(c->other_key, sizeof c->other_key, "%s", key);
    c->other_key[0] ^= 1;
    c->req[1] = c->req[0];
    c->req[1].secret_key = c->other_key;

    /* The whole expected Authorization, framed without eidkit's help (gmtime
     * for the date), so a wrong credential scope fails as well. */
    c->want_sig = jstr(v, "signature");
    time_t ts = (time_t)c->req[0].timestamp;
    struct tm tm;
    if (gmtime_r(&ts, &tm) == NULL || strftime(c->date, sizeof c->date, "%Y-%m-%d", &tm) != 10)
        die("bad vector timestamp", NULL);
    char sh_str[EID_SIGNED_HEADERS_STR_MAX];
    size_t off = 0;
    for (size_t k = 0; k < nsh && off < sizeof sh_str; k++)
        off +=
            (size_t)snprintf(sh_str + off, sizeof sh_str - off, "%s%s", k ? ";" : "", c->names[k]);
    if (nsh == 0 || off >= sizeof sh_str) die("bad signed_headers in the vector", NULL);
    snprintf(c->want_auth, sizeof c->want_auth,
             "TC3-HMAC-SHA256 Credential=%s/%s/%s/tc3_request, SignedHeaders=%s, Signature=%s",
             c->req[0].secret_id, c->date, c->req[0].service, sh_str, c->want_sig);
}

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: bench_sign VECTORS.json VECTOR_NAME REPS TARGET_MS [CASE...]\n");
        return 2;
    }
    ncases = argc - 5;
    cases = argv + 5;
    int reps = atoi(argv[3]);
    double target_s = atof(argv[4]) / 1000.0;
    if (reps < 1 || reps > MAX_REPS || target_s <= 0) die("bad REPS or TARGET_MS", NULL);
    if (wanted("allocs") && ncases != 1) die("allocs runs alone", NULL);
    /* Must precede OpenSSL's first allocation. */
    if (wanted("allocs") && !CRYPTO_set_mem_functions(count_malloc, count_realloc, count_free))
        die("cannot install the counting allocator", NULL);

    cJSON *root = load_json(argv[1]);
    static bench_ctx c;
    load_request(&c, find_vector(root, argv[2]));
    fprintf(stderr, "C: %s, body %zu bytes, want Signature=%s\n", argv[2], c.req[0].body_len,
            c.want_sig);

    if (wanted("allocs")) count_allocs(&c);
    for (size_t i = 0; i < sizeof all_cases / sizeof all_cases[0]; i++) {
        const bench_case *bc = &all_cases[i];
        if (!wanted(bc->id)) continue;
        bc->setup(&c);
        measure(bc, &c, reps, target_s);
        bc->finish(&c);
    }
    cJSON_Delete(root);
    return 0;
}
