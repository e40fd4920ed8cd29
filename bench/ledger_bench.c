/* Ledger transitions per second: for each of n fresh tokens, issue -> claim
 * -> record (a passed verdict) -> consume, through the C API, one
 * thread, one connection. Prints "<backend> <runs> <median transitions/s>".
 * Usage: ledger_bench URL TOKENS RUNS */
#define _POSIX_C_SOURCE 200809L

#include "eidkit/ledger.h"

#include <stdio.h>
#include <stdlib.h>
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

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: ledger_bench URL TOKENS RUNS\n");
        return 2;
    }
    long n = atol(argv[2]), runs = atol(argv[3]);
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
    for (long r = 0; r < runs; r++) {
        double t0 = now_s();
        for (long i = 0; i < n; i++) {
            char tok[64];
            snprintf(tok, sizeof tok, "B%lx-%ld-%ld", tag, r, i);
            eid_ledger_issue_params in = {
                .token = tok, .merchant_id = "0NSJ2023", .subject = "user-42"};
            if (eid_ledger_issue(l, &in, &err) || eid_ledger_claim(l, tok, "user-42", &rec, &err) ||
                eid_ledger_record(l, tok, &pass, &rec, &err) ||
                eid_ledger_consume(l, tok, "user-42", &rec, &err)) {
                fprintf(stderr, "ledger_bench: %s\n", err.message);
                eid_ledger_free(l);
                return 1;
            }
        }
        rates[r] = 4.0 * (double)n / (now_s() - t0);
    }
    qsort(rates, (size_t)runs, sizeof rates[0], cmp);
    printf("%s %ld %.0f\n", eid_ledger_backend(l), runs, rates[runs / 2]);
    eid_ledger_free(l);
    return 0;
}
