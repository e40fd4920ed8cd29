/* Ledger transitions per second: for each of n fresh tokens, issue -> claim
 * -> record (a passed verdict) -> consume, through the C API, one
 * thread, one connection. Prints "<backend> <runs> <median transitions/s>
 * <p50 us> <p99.9 us> <slowest us> <calls of 5 ms or more>" over every
 * call of every run: a call that pays for a checkpoint shows in the last
 * two.
 * With MODE take: n eid_ledger_take calls on one bucket that always has a
 * token (each one writes); refuse: on one that is always empty (each one
 * only reads). Prints "<backend> <runs> <median takes/s>".
 * Usage: ledger_bench URL N RUNS [transitions|take|refuse] */
#define _POSIX_C_SOURCE 200809L

#include "eidkit/ledger.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* n takes on one bucket; the rate of takes per second, or 0 on failure. */
static double take_run(eid_ledger *l, const char *key, long n, int refuse, eid_error *err) {
    /* A bucket that never runs dry, or one that is dry after its first take. */
    double rate = refuse ? 0.001 : 1e9, burst = refuse ? 1 : 1e9;
    int allowed;
    double retry;
    double t0 = now_s();
    for (long i = 0; i < n; i++)
        if (eid_ledger_take(l, key, rate, burst, 0, &allowed, &retry, err) != EID_OK) return 0;
    return (double)n / (now_s() - t0);
}

int main(int argc, char **argv) {
    if (argc != 4 && argc != 5) {
        fprintf(stderr, "usage: ledger_bench URL N RUNS [transitions|take|refuse]\n");
        return 2;
    }
    long n = atol(argv[2]), runs = atol(argv[3]);
    const char *mode = argc == 5 ? argv[4] : "transitions";
    if (n < 1 || runs < 1 || runs > 99) return 2;
    eid_ledger *l = NULL;
    eid_error err = {0};
    if (eid_ledger_open(argv[1], NULL, &l, &err) != EID_OK) {
        fprintf(stderr, "ledger_bench: %s\n", err.message);
        return 1;
    }
    double rates[99];
    eid_ledger_outcome pass = {.has_verdict = 1,
                               .err_code = 0,
                               .attempts = 1,
                               .billable = 1,
                               .request_id = "6f1c2b7e-0000-4000-8000-000000000000"};
    eid_ledger_entry rec;
    unsigned long tag = (unsigned long)time(NULL);
    if (strcmp(mode, "take") == 0 || strcmp(mode, "refuse") == 0) {
        for (long r = 0; r < runs; r++) {
            char key[64];
            snprintf(key, sizeof key, "bench:%s:%lx-%ld", mode, tag, r);
            if ((rates[r] = take_run(l, key, n, mode[0] == 'r', &err)) == 0) {
                fprintf(stderr, "ledger_bench: %s\n", err.message);
                eid_ledger_free(l);
                return 1;
            }
        }
        qsort(rates, (size_t)runs, sizeof rates[0], cmp);
        printf("%s %ld %.0f\n", eid_ledger_backend(l), runs, rates[runs / 2]);
        eid_ledger_free(l);
        return 0;
    }
    if (strcmp(mode, "transitions") != 0) {
        fprintf(stderr, "ledger_bench: unknown mode %s\n", mode);
        eid_ledger_free(l);
        return 2;
    }
    size_t n_calls = (size_t)runs * (size_t)n * 4, k = 0;
    double *lat = malloc(n_calls * sizeof *lat);
    if (lat == NULL) {
        eid_ledger_free(l);
        return 1;
    }
    for (long r = 0; r < runs; r++) {
        double t0 = now_s();
        for (long i = 0; i < n; i++) {
            char tok[64];
            snprintf(tok, sizeof tok, "B%lx-%ld-%ld", tag, r, i);
            eid_ledger_issue_params in = {
                .token = tok, .merchant_id = "0NSJ2023", .subject = "user-42"};
            eid_status st = EID_OK;
            for (int step = 0; step < 4 && st == EID_OK; step++) {
                double c0 = now_s();
                switch (step) {
                case 0: st = eid_ledger_issue(l, &in, &err); break;
                case 1: st = eid_ledger_claim(l, tok, "user-42", &rec, &err); break;
                case 2: st = eid_ledger_record(l, tok, &pass, &rec, &err); break;
                default: st = eid_ledger_consume(l, tok, "user-42", &rec, &err);
                }
                lat[k++] = now_s() - c0;
            }
            if (st != EID_OK) {
                fprintf(stderr, "ledger_bench: %s\n", err.message);
                free(lat);
                eid_ledger_free(l);
                return 1;
            }
        }
        rates[r] = 4.0 * (double)n / (now_s() - t0);
    }
    qsort(rates, (size_t)runs, sizeof rates[0], cmp);
    qsort(lat, k, sizeof lat[0], cmp);
    size_t slow = 0;
    for (size_t i = 0; i < k; i++)
        slow += lat[i] >= 0.005;
    printf("%s %ld %.0f %.1f %.1f %.1f %zu\n", eid_ledger_backend(l), runs, rates[runs / 2],
           lat[k / 2] * 1e6, lat[k - 1 - k / 1000] * 1e6, lat[k - 1] * 1e6, slow);
    free(lat);
    eid_ledger_free(l);
    return 0;
}
