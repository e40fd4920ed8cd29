/* OpenSSL allocation hooks that fail the fail_at-th allocation, for the
 * allocation-failure sweeps: install with
 *   CRYPTO_set_mem_functions(t_malloc, t_realloc, t_free)
 * before OpenSSL's first allocation, then for n = 1, 2, ...: alloc_count = 0,
 * fail_at = n, run one life cycle; alloc_count < n means the sweep is done.
 * Header-only, like check.h. */
#ifndef EIDKIT_ALLOC_FAIL_H
#define EIDKIT_ALLOC_FAIL_H

#include <stdlib.h>

static long alloc_count;
static long fail_at; /* 0: never */

static void *t_malloc(size_t n, const char *file, int line) {
    (void)file, (void)line;
    if (fail_at && ++alloc_count == fail_at) return NULL;
    return malloc(n);
}
static void *t_realloc(void *p, size_t n, const char *file, int line) {
    (void)file, (void)line;
    if (fail_at && ++alloc_count == fail_at) return NULL;
    return realloc(p, n);
}
static void t_free(void *p, const char *file, int line) {
    (void)file, (void)line;
    free(p);
}

#endif
