/*
 * The API client on a thread of its own (core.client_new{thread = true}).
 *
 * Under bench/serve about a third of the Lua thread's time went to libcurl
 * (signing, sending, the loopback socket work, the connection lookup) while
 * the second core sat half idle; and since a thousand clients whose answers
 * come back together are served one after another on the Lua thread, that
 * time is what the last of them waits (docs/internals/serve.md). Here a
 * transport thread owns the eid_client: it takes submitted calls from a
 * queue, drives libcurl, and hands back each finished call, and each logger
 * event before it, in order, on a list the Lua thread takes whole when an
 * eventfd says there is something.
 *
 * No Lua ever runs on the transport thread. The logger's events are copied
 * and delivered by the Lua thread (bindings/client.c); a Lua retry function
 * would have to answer synchronously inside libcurl's completion handling,
 * so a threaded client refuses one (the default policy, with its knobs, is
 * C and runs here). The few calls the Lua thread still makes on the
 * eid_client itself (credentials, clock skew, counters) take the client lock,
 * which the transport thread holds only while it works, never while it
 * waits.
 */
#define _GNU_SOURCE

#include "client_thread.h"
#include "wakefd.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

struct eidkit_transport {
    eid_client *c;
    pthread_t thread;
    pthread_mutex_t client_mu; /* held by whoever uses c */
    pthread_mutex_t mu;        /* the two queues and stop */
    eidkit_titem *in_head, *in_tail;
    eidkit_titem *out_head, *out_tail;
    eidkit_titem *flight; /* submitted to c, not finished: the transport thread's */
    int stop, started;
    int wake_fd;        /* Lua thread -> transport thread: calls queued, or stop */
    eidkit_wakefd done; /* transport thread -> Lua thread: items on the out list (under mu) */
};

void eidkit_titem_append(eidkit_titem **head, eidkit_titem **tail, eidkit_titem *it) {
    it->next = NULL;
    if (*tail)
        (*tail)->next = it;
    else
        *head = it;
    *tail = it;
}

static void fly(eidkit_transport *t, eidkit_titem *it) {
    it->fprev = NULL;
    it->fnext = t->flight;
    if (t->flight) t->flight->fprev = it;
    t->flight = it;
}

static void land(eidkit_transport *t, eidkit_titem *it) {
    if (it->fprev)
        it->fprev->fnext = it->fnext;
    else
        t->flight = it->fnext;
    if (it->fnext) it->fnext->fprev = it->fprev;
    it->fprev = it->fnext = NULL;
}

static void put_out(eidkit_transport *t, eidkit_titem *it) {
    eidkit_titem_append(&t->out_head, &t->out_tail, it);
}

static void copy_str(char *dst, size_t n, const char *src) {
    snprintf(dst, n, "%s", src ? src : "");
}

/* The client's logger on the transport thread: the event is copied into an
 * item that goes out ahead of its call's result. Without memory for the
 * copy the event is dropped (a metric sample lost), never the call. */
static void on_event(void *ud, const eid_client_event *ev) {
    eidkit_transport *t = ud;
    eidkit_titem *it = calloc(1, sizeof *it);
    if (it == NULL) return;
    it->is_event = 1;
    copy_str(it->level, sizeof it->level, ev->level);
    copy_str(it->event, sizeof it->event, ev->event);
    copy_str(it->action, sizeof it->action, ev->action);
    copy_str(it->trace_id, sizeof it->trace_id, ev->trace_id);
    copy_str(it->code, sizeof it->code, ev->code);
    copy_str(it->request_id, sizeof it->request_id, ev->request_id);
    it->ev = *ev;
    it->ev.level = it->level;
    it->ev.event = it->event;
    it->ev.action = it->action;
    it->ev.trace_id = it->trace_id;
    it->ev.code = it->code;
    it->ev.request_id = it->request_id;
    pthread_mutex_lock(&t->mu);
    put_out(t, it);
    pthread_mutex_unlock(&t->mu);
}

/* A call the client refused at submit (no memory, an action it rejects)
 * finishes at once with that status. Its item was made at submit, so
 * handing a result back never needs memory it might not get. */
static void refuse(eidkit_titem *it, eid_status st, const eid_error *err) {
    eid_result *r = calloc(1, sizeof *r);
    if (r) {
        r->status = st;
        snprintf(r->code, sizeof r->code, "%s", eid_status_code(st));
        snprintf(r->message, sizeof r->message, "%s", err->message);
    }
    it->result = r; /* NULL: bindings/client.c reports no memory */
}

static void *run(void *arg) {
    eidkit_transport *t = arg;
    pthread_setname_np(pthread_self(), "eidkit-client"); /* for top -H, perf and gdb */
    for (;;) {
        pthread_mutex_lock(&t->mu);
        eidkit_titem *s = t->in_head;
        t->in_head = t->in_tail = NULL;
        int stop = t->stop;
        pthread_mutex_unlock(&t->mu);
        if (stop) { /* eidkit_transport_free frees what is left */
            eidkit_titems_free(s);
            return NULL;
        }

        eidkit_titem *done_head = NULL, *done_tail = NULL;
        pthread_mutex_lock(&t->client_mu);
        for (eidkit_titem *nx; s; s = nx) {
            nx = s->next;
            eid_error err = {0};
            eid_status st = eid_client_submit(t->c, s->action, s->body, s->body_len, s, &err);
            if (st != EID_OK) {
                refuse(s, st, &err);
                eidkit_titem_append(&done_head, &done_tail, s);
            } else {
                fly(t, s);
            }
        }
        eid_client_perform(t->c, 0);
        void *ud;
        eid_result *r;
        while (eid_client_next(t->c, &ud, &r)) {
            eidkit_titem *it = ud;
            land(t, it);
            it->result = r;
            eidkit_titem_append(&done_head, &done_tail, it);
        }
        long wait = eid_client_timeout(t->c);
        int fd = eid_client_fd(t->c);
        pthread_mutex_unlock(&t->client_mu);

        pthread_mutex_lock(&t->mu);
        for (eidkit_titem *it = done_head, *nx; it; it = nx) {
            nx = it->next;
            put_out(t, it);
        }
        /* One wake-up per turn, for every result and event of the turn, and
         * none while the last is unread (wakefd.h). */
        if (t->out_head != NULL) eidkit_wakefd_raise(&t->done);
        int queued = t->in_head != NULL || t->stop;
        pthread_mutex_unlock(&t->mu);
        if (queued) continue;

        struct pollfd pf[2] = {{.fd = t->wake_fd, .events = POLLIN}, {.fd = fd, .events = POLLIN}};
        int n = poll(pf, 2, (int)(wait < 0 ? -1 : wait));
        if (n > 0 && (pf[0].revents & POLLIN)) eidkit_wakefd_read(t->wake_fd);
    }
}

eidkit_transport *eidkit_transport_new(void) {
    eidkit_transport *t = calloc(1, sizeof *t);
    if (t == NULL) return NULL;
    t->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    t->done.fd = -1;
    if (t->wake_fd < 0 || eidkit_wakefd_open(&t->done) < 0) {
        if (t->wake_fd >= 0) close(t->wake_fd);
        eidkit_wakefd_close(&t->done);
        free(t);
        return NULL;
    }
    pthread_mutex_init(&t->mu, NULL);
    pthread_mutex_init(&t->client_mu, NULL);
    return t;
}

int eidkit_transport_start(eidkit_transport *t, eid_client *c) {
    t->c = c;
    /* The thread takes no signal: they stay with the Lua thread's loop
     * (core.poller's signalfd needs them blocked everywhere else). */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&t->thread, NULL, run, t);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    t->started = rc == 0;
    return rc == 0 ? 0 : -1;
}

eid_client_log_fn eidkit_transport_logger(void) { return on_event; }

eid_status eidkit_transport_submit(eidkit_transport *t, const char *action, const char *body,
                                   size_t body_len, eidkit_titem_id id, eid_error *err) {
    eid_status st = eid_client_check_call(action, body, body_len, err);
    if (st != EID_OK) return st;
    size_t alen = strlen(action);
    eidkit_titem *it = calloc(1, sizeof *it + body_len);
    if (it == NULL) {
        snprintf(err->message, sizeof err->message, "out of memory");
        return EID_E_NOMEM;
    }
    it->id = id;
    it->body_len = body_len;
    memcpy(it->action, action, alen + 1);
    memcpy(it->body, body, body_len);
    pthread_mutex_lock(&t->mu);
    int was_empty = t->in_head == NULL;
    eidkit_titem_append(&t->in_head, &t->in_tail, it);
    pthread_mutex_unlock(&t->mu);
    /* A non-empty queue has a wake-up on its way already. */
    if (was_empty) eidkit_wakefd_write(t->wake_fd);
    return EID_OK;
}

int eidkit_transport_fd(const eidkit_transport *t) { return t->done.fd; }

eidkit_titem *eidkit_transport_take(eidkit_transport *t) {
    pthread_mutex_lock(&t->mu);
    eidkit_wakefd_clear(&t->done); /* the items below are the ones it announced */
    eidkit_titem *head = t->out_head;
    t->out_head = t->out_tail = NULL;
    pthread_mutex_unlock(&t->mu);
    return head;
}

int eidkit_transport_wait(eidkit_transport *t, long timeout_ms) {
    struct pollfd pf = {.fd = t->done.fd, .events = POLLIN};
    int n;
    do {
        n = poll(&pf, 1, (int)timeout_ms);
    } while (n < 0 && errno == EINTR);
    return n > 0;
}

void eidkit_transport_lock(eidkit_transport *t) { pthread_mutex_lock(&t->client_mu); }
void eidkit_transport_unlock(eidkit_transport *t) { pthread_mutex_unlock(&t->client_mu); }

void eidkit_titems_free(eidkit_titem *it) {
    while (it) {
        eidkit_titem *nx = it->next;
        eid_result_free(it->result);
        free(it);
        it = nx;
    }
}

void eidkit_transport_free(eidkit_transport *t) {
    if (t == NULL) return;
    if (t->started) {
        pthread_mutex_lock(&t->mu);
        t->stop = 1;
        pthread_mutex_unlock(&t->mu);
        eidkit_wakefd_write(t->wake_fd);
        pthread_join(t->thread, NULL);
    }
    eidkit_titems_free(t->in_head);
    eidkit_titems_free(t->out_head);
    for (eidkit_titem *it = t->flight, *nx; it; it = nx) { /* results dropped by eid_client_free */
        nx = it->fnext;
        free(it);
    }
    pthread_mutex_destroy(&t->mu);
    pthread_mutex_destroy(&t->client_mu);
    close(t->wake_fd);
    eidkit_wakefd_close(&t->done);
    free(t);
}
