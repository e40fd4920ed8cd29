/*
 * eidkit.LedgerPool: the token ledger off the Lua thread. A few worker
 * threads each own an eid_ledger opened from the same URL and options; the
 * Lua thread reads a call's arguments into a job (bindings/ledger.c, the
 * same code eidkit.Ledger uses), copies its inputs, and queues it; a worker
 * runs the blocking C call (a Redis round trip, an SQLite transaction and
 * its fsync); the finished job goes on a done list and an eventfd wakes the
 * Lua thread's loop, which pushes the results as eidkit.Ledger would.
 * No Lua ever runs on a worker.
 *
 *   local pool = core.ledger_pool(url [, opts [, workers]])  -- opts as core.ledger_open
 *   local id = pool:claim(token, subject)   -- any eidkit.Ledger operation -> job id
 *   pool:fd()                    -- readable when a job finished
 *   local id, a, b = pool:next() -- a finished job: its results (a, b as the
 *                                -- method returns them), or false, message
 *                                -- for misuse to raise; nil when none
 *   pool:next(id)                -- that job only, when finished
 *   pool:wait(id [, timeout_ms]) -- block until job id finished -> true | false
 *   pool:defer(true)             -- a post wakes no worker (a busy one still takes
 *                                -- what is queued); pool:flush() wakes one for all
 *   pool:flush()                 -- the jobs posted before it; pool:wait flushes
 *   pool:runs()                  -- batches run (a lone job is one), jobs run
 *   pool:close()                 -- finishes every queued job, joins the workers
 *
 * docs/internals/serve.md says why threads rather than hiredis's async API.
 */
#define _GNU_SOURCE

#include "eidkit_lua.h"
#include "wakefd.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define EIDKIT_POOL_MT  "eidkit.LedgerPool"
#define DEFAULT_WORKERS 4
#define MAX_WORKERS     64
#define MAX_SPARE       64 /* jobs kept for reuse: 4 KiB each */
/* Jobs one SQLite transaction may take: bounds how long the first of them
 * waits for the last (tens of microseconds each). */
#define MAX_BATCH 64

typedef struct job {
    struct job *next;
    lua_Integer id;
    eidkit_ledger_job j;
} job;

typedef struct pool pool;

typedef struct worker {
    pool *p;
    eid_ledger *l;
    pthread_t thread;
    int started;
    int64_t now; /* the job's Lua clock, for the ledger's clock callback */
} worker;

struct pool {
    pthread_mutex_t mu;
    pthread_cond_t work; /* a job was queued, or stop */
    pthread_cond_t done; /* a job finished */
    job *queue_head, *queue_tail;
    job *done_head, *done_tail;
    int stop;
    eidkit_wakefd efd; /* raised under mu while the done list has jobs (wakefd.h) */
    int deferred;      /* pool:defer(true): post leaves waking a worker to pool:flush */
    int unsignaled;    /* deferred: jobs queued since the last wake-up */
    int closed;
    int has_clock;
    int omit_request_ids; /* opened with request_ids = false */
    int n_workers;
    worker workers[MAX_WORKERS];
    lua_Integer last_id, pending; /* pending: queued or running or not yet taken */
    lua_Integer runs, ran;        /* batches (a lone job counts as one) and jobs run */
    job *held;                    /* the job whose results l_next is pushing; see release_held */
    job *spare;                   /* finished jobs kept for reuse (Lua thread only) */
    int n_spare;
    char backend[16];
};

static int64_t worker_clock(void *ud) { return ((worker *)ud)->now; }

static pool *check_pool(lua_State *L) {
    pool *p = luaL_checkudata(L, 1, EIDKIT_POOL_MT);
    if (p->closed) luaL_error(L, "attempt to use a closed " EIDKIT_POOL_MT);
    return p;
}

static void append(job **head, job **tail, job *k) {
    k->next = NULL;
    if (*tail)
        (*tail)->next = k;
    else
        *head = k;
    *tail = k;
}

/* The n record jobs from k as one eid_ledger_record_many: on Redis one
 * pipeline, so a worker that fell behind pays one round trip (and Redis one
 * read and one write) for all of them instead of one each. */
static void run_records(worker *w, job *k, int n) {
    eid_ledger_record_call calls[MAX_BATCH];
    job *i = k;
    for (int x = 0; x < n; x++, i = i->next)
        calls[x] = (eid_ledger_record_call){
            .token = i->j.token, .outcome = &i->j.outcome, .now = i->j.now, .out = &i->j.entry};
    w->now = k->j.now; /* a call with now 0 reads the clock, as alone */
    eid_ledger_record_many(w->l, calls, (size_t)n);
    i = k;
    for (int x = 0; x < n; x++, i = i->next) {
        i->j.st = calls[x].st;
        i->j.err = calls[x].err;
    }
}

/* Run the n jobs from k on w's ledger. With more than one and a backend
 * that has batches (SQLite), they share one transaction: a worker that
 * fell behind catches up on one set of file locks and one WAL commit
 * instead of one per job. A batch that cannot commit kept nothing, so each
 * of its jobs reports that failure (a misuse refused before the database
 * keeps its own). When the batch cannot begin (another process holds the
 * write lock), each job runs on its own as it would have alone. */
static void run_jobs(worker *w, job *k, int n) {
    eid_error err;
    if (n > 1 && eid_ledger_pipelines(w->l)) { /* records only: see work() */
        run_records(w, k, n);
        return;
    }
    int batch = n > 1 && eid_ledger_batch_begin(w->l, &err) == EID_OK;
    for (job *i = k; i; i = i->next) {
        w->now = i->j.now;
        eidkit_ledger_job_run(w->l, &i->j);
    }
    if (!batch) return;
    eid_status st = eid_ledger_batch_end(w->l, &err);
    if (st == EID_OK) return;
    for (job *i = k; i; i = i->next) {
        if (i->j.st == EID_E_INVALID_ARG) continue;
        i->j.st = st;
        i->j.err = err;
    }
}

static void *work(void *arg) {
    worker *w = arg;
    pool *p = w->p;
    pthread_setname_np(pthread_self(), "eidkit-ledger"); /* for top -H, perf and gdb */
    /* SQLite: any jobs share a transaction. Redis: records queued together
     * share a pipeline; any other job runs alone, so that one worker does
     * not take a run of round trips the other workers could share. */
    int max = eid_ledger_batches(w->l) ? MAX_BATCH : 1;
    int pipelines = eid_ledger_pipelines(w->l);
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (p->queue_head == NULL && !p->stop)
            pthread_cond_wait(&p->work, &p->mu);
        job *k = p->queue_head;
        if (k == NULL) break; /* stop, and nothing left to run */
        job *last = k;
        int n = 1;
        while (n < max && last->next) {
            last = last->next;
            n++;
        }
        while (pipelines && n < MAX_BATCH && k->j.op == EIDKIT_LEDGER_RECORD && last->next &&
               last->next->j.op == EIDKIT_LEDGER_RECORD) {
            last = last->next;
            n++;
        }
        p->queue_head = last->next;
        if (p->queue_head == NULL) p->queue_tail = NULL;
        last->next = NULL;
        /* Deferred, one wake-up brought the whole queue: what this batch
         * left (a job that runs alone, more than a batch) goes to the next
         * idle worker, as the posts would have sent it. */
        if (p->deferred && p->queue_head) pthread_cond_signal(&p->work);
        pthread_mutex_unlock(&p->mu);
        run_jobs(w, k, n);
        pthread_mutex_lock(&p->mu);
        if (p->done_tail)
            p->done_tail->next = k;
        else
            p->done_head = k;
        p->done_tail = last;
        p->runs++;
        p->ran += n;
        pthread_cond_broadcast(&p->done);
        eidkit_wakefd_raise(&p->efd);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

static void free_list(job *k) {
    while (k) {
        job *nx = k->next;
        eidkit_ledger_job_clear(&k->j);
        free(k);
        k = nx;
    }
}

/* A job taken by l_next stays here while its results are pushed: if
 * pushing raises, the next l_next or the close frees it. Holding it in a
 * userdata instead cost a 4 KiB Lua allocation per finished job, the
 * largest share of `eidkit serve`'s garbage. */
static void release_held(pool *p) {
    job *k = p->held;
    p->held = NULL;
    if (k == NULL) return;
    eidkit_ledger_job_clear(&k->j);
    /* Kept for the next post: a 4 KiB malloc and free per job was most of
     * the C side's allocator time under load. */
    if (p->n_spare < MAX_SPARE && !p->closed) {
        k->next = p->spare;
        p->spare = k;
        p->n_spare++;
    } else {
        free(k);
    }
}

/* Let the workers finish every queued job (a write must never be lost),
 * join them, and free everything. */
static void do_close(pool *p) {
    if (p->closed) return;
    p->closed = 1;
    pthread_mutex_lock(&p->mu);
    p->stop = 1;
    pthread_cond_broadcast(&p->work);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->n_workers; i++) {
        if (p->workers[i].started) pthread_join(p->workers[i].thread, NULL);
        eid_ledger_free(p->workers[i].l);
        p->workers[i].l = NULL;
    }
    release_held(p);
    while (p->spare) { /* cleared when they were released */
        job *nx = p->spare->next;
        free(p->spare);
        p->spare = nx;
    }
    p->n_spare = 0;
    free_list(p->queue_head);
    free_list(p->done_head);
    p->queue_head = p->queue_tail = p->done_head = p->done_tail = NULL;
    eidkit_wakefd_close(&p->efd);
    pthread_cond_destroy(&p->work);
    pthread_cond_destroy(&p->done);
    pthread_mutex_destroy(&p->mu);
}

/* Read op's arguments on this thread (misuse raises here, naming the
 * method), copy them, queue the job; returns its id. */
static int post(lua_State *L, eidkit_ledger_op op) {
    pool *p = check_pool(L);
    eidkit_ledger_job j; /* reading allocates nothing: a raise leaks nothing */
    j.now = 0;
    if (p->has_clock) eidkit_ledger_read_clock(L, 1, &j.now);
    eidkit_ledger_job_read(L, op, &j);
    j.omit_request_ids = p->omit_request_ids;
    job *owned = p->spare;
    if (owned != NULL) {
        p->spare = owned->next;
        p->n_spare--;
    } else if ((owned = malloc(sizeof *owned)) == NULL) {
        return luaL_error(L, "not enough memory");
    }
    owned->j = j;
    if (eidkit_ledger_job_own(&owned->j) != 0) {
        free(owned);
        return luaL_error(L, "not enough memory");
    }
    owned->id = ++p->last_id;
    pthread_mutex_lock(&p->mu);
    append(&p->queue_head, &p->queue_tail, owned);
    p->pending++;
    if (p->deferred)
        p->unsignaled = 1;
    else
        pthread_cond_signal(&p->work);
    pthread_mutex_unlock(&p->mu);
    lua_pushinteger(L, owned->id);
    return 1;
}

static int l_issue(lua_State *L) { return post(L, EIDKIT_LEDGER_ISSUE); }
static int l_claim(lua_State *L) { return post(L, EIDKIT_LEDGER_CLAIM); }
static int l_consume(lua_State *L) { return post(L, EIDKIT_LEDGER_CONSUME); }
static int l_get(lua_State *L) { return post(L, EIDKIT_LEDGER_GET); }
static int l_record(lua_State *L) { return post(L, EIDKIT_LEDGER_RECORD); }
static int l_due(lua_State *L) { return post(L, EIDKIT_LEDGER_DUE); }
static int l_export(lua_State *L) { return post(L, EIDKIT_LEDGER_EXPORT); }
static int l_expire(lua_State *L) { return post(L, EIDKIT_LEDGER_EXPIRE); }
static int l_stats(lua_State *L) { return post(L, EIDKIT_LEDGER_STATS); }
static int l_payload(lua_State *L) { return post(L, EIDKIT_LEDGER_PAYLOAD); }
static int l_take(lua_State *L) { return post(L, EIDKIT_LEDGER_TAKE); }
static int l_attempts(lua_State *L) { return post(L, EIDKIT_LEDGER_ATTEMPTS); }
static int l_give(lua_State *L) { return post(L, EIDKIT_LEDGER_GIVE); }

/* Unlink the finished job id (any when id is 0) from the done list. */
static job *take_done(pool *p, lua_Integer id) {
    job *prev = NULL;
    for (job *k = p->done_head; k; prev = k, k = k->next) {
        if (id && k->id != id) continue;
        if (prev)
            prev->next = k->next;
        else
            p->done_head = k->next;
        if (p->done_tail == k) p->done_tail = prev;
        p->pending--;
        return k;
    }
    return NULL;
}

/* pool:next([id]) -> id, results... | nil */
static int l_next(lua_State *L) {
    pool *p = check_pool(L);
    lua_Integer id = luaL_optinteger(L, 2, 0);
    pthread_mutex_lock(&p->mu);
    job *k = take_done(p, id);
    if (k == NULL) {
        /* Seen empty: clear the eventfd, under p->mu, so a job finishing
         * later raises it again. */
        eidkit_wakefd_clear(&p->efd);
    }
    pthread_mutex_unlock(&p->mu);
    if (k == NULL) return 0;
    release_held(p);
    p->held = k;
    lua_pushinteger(L, k->id);
    char msg[sizeof k->j.err.message + 32];
    int arg = eidkit_ledger_job_misuse(&k->j, msg, sizeof msg);
    int n;
    if (arg) {
        /* Raised by the caller as the method would have: the method is
         * called with ':', so the position excludes the object. */
        lua_pushboolean(L, 0);
        lua_pushfstring(L, "bad argument #%d to '%s' (%s)", arg - 1, eidkit_ledger_op_name(k->j.op),
                        msg);
        n = 2;
    } else {
        n = eidkit_ledger_job_push(L, &k->j);
    }
    release_held(p);
    return 1 + n;
}

/* Under p->mu: wake a worker for what was posted since the last wake-up. */
static void flush_locked(pool *p) {
    if (!p->unsignaled) return;
    p->unsignaled = 0;
    pthread_cond_signal(&p->work);
}

static double mono(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* pool:wait(id [, timeout_ms]) -> true once job id has finished (it stays
 * for pool:next(id)), false after timeout_ms (default: no limit). */
static int l_wait(lua_State *L) {
    pool *p = check_pool(L);
    lua_Integer id = luaL_checkinteger(L, 2);
    lua_Integer t = luaL_optinteger(L, 3, -1);
    luaL_argcheck(L, t >= -1 && t <= 86400000, 3, "timeout_ms: expected -1..86400000");
    double end = mono() + (double)t / 1000.0;
    int found = 0;
    pthread_mutex_lock(&p->mu);
    flush_locked(p); /* else a deferred job would never run */
    for (;;) {
        for (job *k = p->done_head; k && !found; k = k->next)
            found = k->id == id;
        if (found) break;
        if (t < 0) {
            pthread_cond_wait(&p->done, &p->mu);
            continue;
        }
        double left = end - mono();
        if (left <= 0) break;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        double at = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9 + left;
        ts.tv_sec = (time_t)at;
        ts.tv_nsec = (long)((at - (double)ts.tv_sec) * 1e9);
        pthread_cond_timedwait(&p->done, &p->mu, &ts);
    }
    pthread_mutex_unlock(&p->mu);
    lua_pushboolean(L, found);
    return 1;
}

/* pool:defer(on): with on, a post only queues its job and pool:flush wakes a
 * worker for every job posted before it. A loop that posts several jobs a
 * turn flushes once a turn: each post woke an idle worker (a futex call, a
 * context switch) for a batch of one, where now one wake-up takes a turn's
 * jobs in one transaction or one pipeline. */
static int l_defer(lua_State *L) {
    pool *p = check_pool(L);
    int on = lua_toboolean(L, 2);
    pthread_mutex_lock(&p->mu);
    p->deferred = on;
    if (!on) flush_locked(p);
    pthread_mutex_unlock(&p->mu);
    return 0;
}

/* pool:flush(): nothing on a closed pool (close ran every queued job). */
static int l_flush(lua_State *L) {
    pool *p = luaL_checkudata(L, 1, EIDKIT_POOL_MT);
    if (p->closed) return 0;
    pthread_mutex_lock(&p->mu);
    flush_locked(p);
    pthread_mutex_unlock(&p->mu);
    return 0;
}

static int l_fd(lua_State *L) {
    lua_pushinteger(L, check_pool(L)->efd.fd);
    return 1;
}

/* pool:pending() -> jobs posted and not yet taken by next. */
static int l_pending(lua_State *L) {
    pool *p = check_pool(L);
    pthread_mutex_lock(&p->mu);
    lua_Integer n = p->pending;
    pthread_mutex_unlock(&p->mu);
    lua_pushinteger(L, n);
    return 1;
}

/* pool:runs() -> runs, jobs: how many times a worker ran queued jobs (one
 * alone, or a batch) and how many jobs those were. */
static int l_runs(lua_State *L) {
    pool *p = check_pool(L);
    pthread_mutex_lock(&p->mu);
    lua_Integer runs = p->runs, ran = p->ran;
    pthread_mutex_unlock(&p->mu);
    lua_pushinteger(L, runs);
    lua_pushinteger(L, ran);
    return 2;
}

static int l_backend(lua_State *L) {
    lua_pushstring(L, check_pool(L)->backend);
    return 1;
}

static int l_workers(lua_State *L) {
    lua_pushinteger(L, check_pool(L)->n_workers);
    return 1;
}

static int l_close(lua_State *L) {
    do_close(luaL_checkudata(L, 1, EIDKIT_POOL_MT));
    return 0;
}

static int l_tostring(lua_State *L) {
    pool *p = luaL_checkudata(L, 1, EIDKIT_POOL_MT);
    if (p->closed)
        lua_pushliteral(L, EIDKIT_POOL_MT " (closed)");
    else
        lua_pushfstring(L, EIDKIT_POOL_MT " (%s, %d workers, %p)", p->backend, p->n_workers,
                        (void *)p);
    return 1;
}

/* core.ledger_pool(url [, opts [, workers]]) -> pool | nil, err. Every
 * worker's ledger is opened here, on this thread, so a ledger that cannot be
 * reached fails now. An in-memory SQLite database is one per handle: it
 * gets one worker. */
static int l_pool(lua_State *L) {
    size_t ulen;
    const char *url = luaL_checklstring(L, 1, &ulen);
    luaL_argcheck(L, strlen(url) == ulen, 1, "contains a NUL byte");
    eid_ledger_options o;
    int has_clock, has_encoder;
    eidkit_ledger_read_options(L, 2, &o, &has_clock, &has_encoder);
    lua_Integer n = luaL_optinteger(L, 3, DEFAULT_WORKERS);
    luaL_argcheck(L, n >= 1 && n <= MAX_WORKERS, 3, "workers: expected 1..64");
    if (strcmp(url, "sqlite::memory:") == 0) n = 1;

    /* Created closed, then opened: __gc is safe at every failure below. */
    int request_ids = eidkit_ledger_read_request_ids(L, 2);
    pool *p = lua_newuserdatauv(L, sizeof *p, 2);
    memset(p, 0, sizeof *p);
    p->omit_request_ids = !request_ids;
    p->closed = 1;
    p->efd.fd = -1;
    luaL_setmetatable(L, EIDKIT_POOL_MT);
    int self = lua_gettop(L);
    if (has_clock) {
        lua_getfield(L, 2, "clock");
        lua_setiuservalue(L, self, 1);
    }
    if (has_encoder) {
        lua_getfield(L, 2, "payload_encoder");
        lua_setiuservalue(L, self, 2);
    }
    p->has_clock = has_clock;
    if (eidkit_wakefd_open(&p->efd) < 0) return eidkit_push_fail(L, "internal", strerror(errno));
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->work, NULL);
    /* Timed waits in l_wait use CLOCK_REALTIME, the default. */
    pthread_cond_init(&p->done, NULL);
    p->closed = 0;

    for (int i = 0; i < (int)n; i++) {
        worker *w = &p->workers[i];
        w->p = p;
        eid_ledger_options wo = o;
        if (has_clock) {
            eidkit_ledger_read_clock(L, self, &w->now);
            wo.clock.now = worker_clock;
            wo.clock.ud = w;
        }
        eid_error err = {0};
        eid_status st = eid_ledger_open(url, &wo, &w->l, &err);
        p->n_workers = i + (w->l != NULL);
        if (st) {
            do_close(p);
            return eidkit_ledger_open_failed(L, st, &err);
        }
    }
    snprintf(p->backend, sizeof p->backend, "%s", eid_ledger_backend(p->workers[0].l));

    /* Workers start with every signal blocked: a host reading signals
     * through a signalfd (core.poller) must never see one delivered here. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    int failed = 0;
    for (int i = 0; i < p->n_workers && !failed; i++) {
        failed = pthread_create(&p->workers[i].thread, NULL, work, &p->workers[i]) != 0;
        p->workers[i].started = !failed;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (failed) {
        do_close(p);
        return eidkit_push_fail(L, "internal", "cannot start the ledger's worker threads");
    }
    return 1;
}

void eidkit_open_ledger_pool(lua_State *L) {
    static const luaL_Reg methods[] = {
        {"issue", l_issue},       {"claim", l_claim},     {"consume", l_consume},
        {"get", l_get},           {"record", l_record},   {"due", l_due},
        {"export", l_export},     {"expire", l_expire},   {"stats", l_stats},
        {"payload", l_payload},   {"take", l_take},       {"next", l_next},
        {"attempts", l_attempts}, {"wait", l_wait},       {"defer", l_defer},
        {"flush", l_flush},       {"fd", l_fd},           {"pending", l_pending},
        {"runs", l_runs},         {"backend", l_backend}, {"workers", l_workers},
        {"close", l_close},       {"give", l_give},       {NULL, NULL},
    };
    static const luaL_Reg meta[] = {
        {"__gc", l_close},
        {"__close", l_close},
        {"__tostring", l_tostring},
        {NULL, NULL},
    };
    eidkit_new_class(L, EIDKIT_POOL_MT, meta, methods);
    lua_pop(L, 1);
    lua_pushcfunction(L, l_pool);
    lua_setfield(L, -2, "ledger_pool");
}
