/* Allocation-failure sweep of the API client: make the Nth heap allocation
 * of one client life cycle (create, credentials, a call, the three typed
 * calls, three submitted calls, free) fail, for every N until a life cycle
 * runs clean, against a real `eidkit sim`. Each run must end without a
 * crash, with the expected answer or a clean error, and with every
 * allocation it made freed again.
 *
 * malloc and friends are replaced in this executable (glibc supports it),
 * so cJSON and OpenSSL allocations fail too. Not built with the sanitizers,
 * which replace malloc themselves.
 * Usage: test_client_alloc /path/to/eidkit */
#define _GNU_SOURCE

#include "eidkit/client.h"

#include "check.h"
#include "simproc.h"

#include <dlfcn.h>
#include <execinfo.h>
#include <openssl/err.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern void *__libc_malloc(size_t n);
extern void *__libc_calloc(size_t n, size_t m);
extern void *__libc_realloc(void *p, size_t n);
extern void __libc_free(void *p);

/* Exported (the build hides symbols by default) so the libraries bind to them. */
#define EXPORT __attribute__((visibility("default")))

static int armed;
static long count, fail_at, live;

/* libcurl 7.88 itself does not survive every allocation failure (the sweep
 * hit a SIGFPE inside curl_multi_socket_action), so allocations made by
 * libcurl's own code (or by libc functions it calls) are not failed here: the sweep is about
 * eidkit's error paths, cJSON's and OpenSSL's. */
static int in_counted;
static int counted(void) {
    if (in_counted) return 0;
    in_counted = 1;
    void *frames[4];
    int n = backtrace(frames, 4); /* this, malloc, the caller, its caller */
    in_counted = 0;
    for (int i = 2; i < n; i++) {
        Dl_info di;
        if (dladdr(frames[i], &di) && di.dli_fname && strstr(di.dli_fname, "libcurl")) return 0;
    }
    return 1;
}

/* Debugging aid: EIDKIT_ALLOC_TRACE=N prints a backtrace of the Nth
 * allocation of every life cycle. */
static long trace_at;
static void trace(void) {
    if (trace_at && count == trace_at) {
        void *frames[32];
        int n = backtrace(frames, 32);
        backtrace_symbols_fd(frames, n, 2);
        fputs("--\n", stderr);
    }
}

EXPORT void *malloc(size_t n) {
    if (armed && counted() && (++count, trace(), count == fail_at)) return NULL;
    void *p = __libc_malloc(n);
    if (armed && p) live++;
    return p;
}
EXPORT void *calloc(size_t n, size_t m) {
    if (armed && counted() && (++count, trace(), count == fail_at)) return NULL;
    void *p = __libc_calloc(n, m);
    if (armed && p) live++;
    return p;
}
EXPORT void *realloc(void *p, size_t n) {
    if (armed && counted() && (++count, trace(), count == fail_at)) return NULL;
    void *q = __libc_realloc(p, n);
    if (armed && q && p == NULL) live++;
    return q;
}
EXPORT void free(void *p) {
    if (armed && p) live--;
    __libc_free(p);
}

#define SECRET_ID  SIM_SECRET_ID
#define SECRET_KEY SIM_SECRET_KEY

#define BIZ_TOKEN_ILLEGAL "InvalidParameterValue.BizTokenIllegal"

/* A call's result: the service's answer `want` (every call here is refused),
 * or a local or transport failure with a code. Every answer is read in full
 * (a JSON library that dropped a character on a failed allocation, as
 * jansson 2.14's lexer did, shows up here as a wrong code). */
static int acceptable_(const eid_result *r, const char *want) {
    switch (r->status) {
    case EID_E_CLIENT_REMOTE: return strcmp(r->code, want) == 0;
    case EID_E_CLIENT_TRANSPORT:
    case EID_E_NOMEM:
    case EID_E_CRYPTO:
    case EID_E_INTERNAL: return r->code[0] != '\0';
    default: return 0;
    }
}
static int acceptable(const eid_result *r, const char *want) {
    int ok = acceptable_(r, want);
    if (!ok)
        fprintf(stderr, "allocation %ld failing: status %d code '%s' message '%s'\n", fail_at,
                (int)r->status, r->code, r->message);
    return ok;
}

/* The end of one call: 1 when it got the service's answer. */
static int settled(eid_status st, eid_result *r, const char *want) {
    if (r == NULL) {
        CHECK(st == EID_E_NOMEM);
        return 0;
    }
    CHECK(acceptable(r, want));
    int clean = r->status == EID_E_CLIENT_REMOTE;
    eid_result_free(r);
    return clean;
}

/* One life cycle; returns 1 when every step succeeded. */
static int lifecycle(void) {
    static const char body[] = "{\"EidToken\":\"x\"}";
    eid_client_options o = {
        .endpoint = sim_url, .max_attempts = 1, .timeout_ms = 2000, .deadline_ms = 2000};
    eid_client *c = NULL;
    eid_error err = {0};
    int clean = 1;
    eid_status st = eid_client_new(&o, &c, &err);
    if (st != EID_OK) {
        CHECK(c == NULL && (st == EID_E_NOMEM || st == EID_E_INTERNAL || st == EID_E_CRYPTO));
        return 0;
    }
    st = eid_client_set_credentials(c, SECRET_ID, SECRET_KEY, sizeof SECRET_KEY - 1, NULL, &err);
    if (st != EID_OK) {
        CHECK(st == EID_E_NOMEM);
        eid_client_free(c);
        return 0;
    }
    eid_result *r = NULL;
    st = eid_client_call(c, "CheckEidTokenStatus", body, sizeof body - 1, &r, &err);
    clean &= settled(st, r, BIZ_TOKEN_ILLEGAL);
    /* The typed calls build their bodies with cJSON. */
    eid_get_eid_token_params p = {.merchant_id = "unknown-merchant",
                                  .name = "\xe9\x9f\xa6\xe5\xb0\x8f\xe5\xae\x9d",
                                  .id_card = "11204416541220243X",
                                  .config_json = "{\"InputType\":\"4\"}"};
    st = eid_client_get_eid_token(c, &p, &r, &err);
    if (r == NULL && st == EID_E_INVALID_ARG) {
        /* cJSON cannot say whether Config failed to parse for its syntax or
         * for memory; both are "Config" (eidkit/client.h). */
        CHECK_STR(err.field, "Config");
        clean = 0;
    } else {
        clean &= settled(st, r, "InvalidParameterValue");
    }
    st = eid_client_get_eid_result(c, "x", "1", 2, &r, &err);
    clean &= settled(st, r, BIZ_TOKEN_ILLEGAL);
    st = eid_client_check_eid_token_status(c, "x", &r, &err);
    clean &= settled(st, r, BIZ_TOKEN_ILLEGAL);
    int submitted = 0;
    for (int i = 0; i < 3; i++) {
        st = eid_client_submit(c, "CheckEidTokenStatus", body, sizeof body - 1, NULL, &err);
        if (st == EID_OK) {
            submitted++;
        } else {
            CHECK(st == EID_E_NOMEM);
            clean = 0;
        }
    }
    for (int got = 0, rounds = 0; got < submitted && rounds < 100; rounds++) {
        eid_client_perform(c, 100);
        while (eid_client_next(c, NULL, &r)) {
            got++;
            clean &= settled(EID_OK, r, BIZ_TOKEN_ILLEGAL);
        }
    }
    eid_client_free(c);
    return clean;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: test_client_alloc /path/to/eidkit\n");
        return 2;
    }
    void *warm[2];
    backtrace(warm, 2); /* loads libgcc_s before any allocation is counted */
    if (sim_start(argv[1], "test-client-alloc", -1, 1) != 0) {
        fprintf(stderr, "test_client_alloc: cannot start %s sim\n", argv[1]);
        sim_stop();
        return 1;
    }
    CHECK(eid_client_global_init() == EID_OK);
    const char *t = getenv("EIDKIT_ALLOC_TRACE");
    trace_at = t ? atol(t) : 0;
    /* Warm up the one-time state of OpenSSL (its per-thread error queue too)
     * and libcurl without failures, and count one life cycle's allocations. */
    ERR_raise(ERR_LIB_USER, 1);
    ERR_clear_error();
    CHECK(lifecycle() == 1);
    count = 0, fail_at = 0, armed = 1;
    CHECK(lifecycle() == 1);
    armed = 0;
    printf("test_client_alloc: a life cycle makes %ld allocations\n", count);
    long n;
    int clean = 0, swept = 0;
    const char *only = getenv("EIDKIT_ALLOC_ONLY"); /* debugging: one point */
    long first = only ? atol(only) : 1, last = only ? first : 20000;
    for (n = first; n <= last; n++) {
        count = 0;
        live = 0;
        fail_at = n;
        armed = 1;
        if (getenv("EIDKIT_ALLOC_PROGRESS")) fprintf(stderr, "n=%ld\n", n);
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        clean = lifecycle();
        /* OpenSSL keeps the errors a failed allocation raised on this
         * thread's queue until cleared: not a leak, so clear them. */
        ERR_clear_error();
        armed = 0;
        clock_gettime(CLOCK_MONOTONIC, &t1);
        if (t1.tv_sec - t0.tv_sec >= 1)
            fprintf(stderr, "allocation %ld failing: the life cycle took %ld s\n", n,
                    (long)(t1.tv_sec - t0.tv_sec));
        if (live != 0) {
            fprintf(stderr, "allocation %ld failing: %ld blocks not freed\n", n, live);
            CHECK(live == 0);
        }
        if (count < fail_at) { /* the life cycle made fewer than n: all swept */
            swept = 1;
            break;
        }
    }
    CHECK(swept && clean);
    sim_stop();
    printf("test_client_alloc: swept %ld allocation points\n", n - 1);
    return check_report("test_client_alloc");
}
