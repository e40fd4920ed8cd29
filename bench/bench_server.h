/*
 * What the libmicrohttpd benchmark servers (bench/mhd_trivial.c,
 * bench/serve/bare.c) share: the daemon mode, the descriptor limit, and how
 * they stop.
 *
 * They stop on SIGINT or SIGTERM, which set bench_stop. Both signals stay
 * blocked except inside the main loop's wait, which unblocks them atomically
 * with the sigset bench_stop_signals returns (ppoll, epoll_pwait): a signal
 * that arrives between the loop's check of bench_stop and its wait then ends
 * the wait instead of being missed until the next event.
 */
#ifndef EIDKIT_BENCH_SERVER_H
#define EIDKIT_BENCH_SERVER_H

#include <microhttpd.h>

#include <signal.h>
#include <string.h>
#include <sys/resource.h>

/* The mode bindings/httpd.c runs libmicrohttpd in: no thread of its own (the
 * caller's loop waits on its epoll fd and calls MHD_run), connections
 * suspended while their answer is out, no Date header from the clock, and
 * opportunistic reads and writes. */
#define BENCH_MHD_FLAGS                                                                        \
    (MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_SUPPRESS_DATE_NO_CLOCK | MHD_USE_TURBO | \
     MHD_USE_ERROR_LOG)

/* Every client is a descriptor: thousands of wrk connections need the hard
 * limit, not the default soft one. */
static void bench_raise_nofile(void) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

static volatile sig_atomic_t bench_stop;

static void bench_on_signal(int sig) {
    (void)sig;
    bench_stop = 1;
}

/* Install the handler and block both signals; *orig gets the mask the
 * loop's wait should run with. */
static void bench_stop_signals(sigset_t *orig) {
    struct sigaction act;
    memset(&act, 0, sizeof act);
    act.sa_handler = bench_on_signal;
    sigaction(SIGINT, &act, NULL);
    sigaction(SIGTERM, &act, NULL);
    sigset_t block;
    sigemptyset(&block);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGTERM);
    sigprocmask(SIG_BLOCK, &block, orig);
}

#endif
