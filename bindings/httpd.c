/*
 * eidkit.HttpServer: an HTTP server for Lua on libmicrohttpd.
 *
 * MHD runs without a thread of its own. The Lua thread waits on MHD's epoll
 * fd and calls MHD_run(), so every handler call happens on the thread that
 * owns the lua_State: no locks. A delayed or slow response suspends its
 * connection and puts it on a timer heap; the loop resumes it when due, so
 * one waiting response never holds up another. A handler may also return
 * false to defer: the connection is suspended until srv:respond(id, resp),
 * which is how `eidkit serve` answers from a coroutine that waited on the
 * network. docs/internals/httpd.md has the details.
 *
 * No Lua error ever longjmps through MHD: the handler, the request table
 * and the response conversion all run inside one lua_pcall (the Lua-cURLv3
 * rule), and the MHD callbacks themselves make no raising Lua calls.
 */
#define _GNU_SOURCE /* epoll_pwait */

#include "eidkit_lua.h"

#include <gnutls/abstract.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <microhttpd.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define HTTPD_MT "eidkit.HttpServer"

#define UV_HANDLER  1
#define UV_ON_ERROR 2

#define NOT_QUEUED      SIZE_MAX
#define SLOW_CHUNKS     10
#define SLOW_DEFAULT_MS 2000
#define BODY_ERROR_500  "{\"error\":\"internal handler error\"}"
#define BODY_ERROR_413  "{\"error\":\"request body too large\"}"
#define BODY_ERROR_503                                                                             \
    "{\"error\":{\"code\":\"overloaded\",\"message\":\"the server is busy; try again\"}}"
#define BODY_ERROR_400                                                                             \
    "{\"error\":{\"code\":\"bad_request\",\"message\":\"the request is malformed\"}}"
#define READER_BLOCK     4096
#define LISTEN_BACKLOG   4096
#define DEFAULT_MAX_CONN 4096
#define DEFAULT_MAX_BODY (10 * 1024 * 1024)
#define DEFAULT_TIMEOUT  60
/* A request's head and body must arrive within this from the connection's
 * start or the end of its last answer (slowloris: a line every few seconds
 * reset the idle timeout forever). */
#define DEFAULT_REQUEST_TIMEOUT 20
/* Bodies buffered at once, all connections together (a body is refused 503
 * past it): 200 unfinished 10 MB bodies took 2.4 GB. */
#define DEFAULT_MAX_BUFFERED ((lua_Integer)64 * 1024 * 1024)
#define SWEEP_MS             250 /* how often the deadlines and the reserve are checked */

typedef struct httpd httpd;

/* A certificate chain and its key as GnuTLS takes them from the handshake
 * callback (on_tls_cert). srv:set_tls swaps in a new one while connections
 * are open: each connection holds the one that was current when it was
 * accepted, for as long as GnuTLS may look at it, so a reference count
 * (the server's, and each such connection's) frees it. */
typedef struct tls_creds {
    unsigned refs, n;
    gnutls_pcert_st *pcert;
    gnutls_privkey_t key;
} tls_creds;

/* P_DEFERRED: the handler returned false; the connection is suspended until
 * srv:respond(id, resp) (then P_DELAYED) or the client hangs up (P_GONE). */
enum phase { P_BODY, P_DEFERRED, P_DELAYED, P_GONE, P_DONE };
enum fault { F_NONE, F_RESET, F_TRUNCATE, F_SLOW };

/* One request: created by the URI callback, freed when MHD says it is done. */
typedef struct req {
    httpd *srv;
    struct MHD_Connection *conn;
    enum phase phase;
    char *query; /* raw query string, "" if none */
    char *body;
    size_t body_len, body_cap;
    int too_large;
    int malformed; /* refused with 400 once its head is in (see framing_ok) */

    /* The response, built by the handler call. */
    struct MHD_Response *resp;
    unsigned status;
    enum fault fault;
    uint64_t delay_ms;
    char *out; /* body bytes for the callback (truncate, slow) responses */
    size_t out_len;
    uint64_t slow_ms, next_due;
    size_t chunk, chunk_end;

    uint64_t due; /* timer, valid while heap_idx != NOT_QUEUED */
    size_t heap_idx;

    uint64_t id;          /* req.id in Lua: never 0, never reused */
    int deferred;         /* in the id map, awaiting srv:respond */
    struct conn_t *track; /* its connection's record while deferred, else NULL */
} req;

/* The deferred requests by id: open addressing, linear probing, backward
 * shift on removal. Ids are sequential, so id & mask spreads them well. */
typedef struct id_map {
    req **slots;
    size_t cap, n; /* cap: 0 or a power of two */
} id_map;

/* One accepted connection, in order of the start of the request it is
 * waiting for (a keep-alive connection moves to the end after each answer). */
typedef struct conn_t {
    struct conn_t *prev, *next;
    tls_creds *tls; /* the server's when it was accepted (TLS servers) */
    req *deferred;  /* its request waiting for srv:respond, or NULL */
    int fd;
    int hup;        /* the client hung up (or half-closed): seen in the server's epoll set */
    uint64_t since; /* the connection opened, or its last answer went out */
    int busy;       /* its request is in: the handler has it, or it is answered */
    int shut;       /* shut down by the sweep; MHD closes it */
    /* The peer's "host:port", formatted at the connection's first request:
     * it does not change, and snprintf for every request showed in perf. */
    char remote[INET6_ADDRSTRLEN + 16];
} conn_t;

struct httpd {
    struct MHD_Daemon *d; /* NULL once closed */
    conn_t *c_head, *c_tail;
    size_t n_conns, n_shut;
    uint64_t last_sweep, request_timeout_ms;
    size_t max_conn, reserve;
    size_t buffered, max_buffered; /* body bytes held by every request */
    lua_State *L;                  /* the thread inside step()/run(), for handler calls */
    int epfd;                      /* ours: MHD's epoll fd plus deferred sockets (hang-ups) */
    int mhd_epfd;
    unsigned port;
    size_t max_body;
    int stop, dispatching, closing;
    req **heap; /* timers: a binary min-heap on due */
    size_t heap_len, heap_cap;
    lua_Integer suspended, requests, deferred_n, active;
    id_map deferred;
    uint64_t next_id;
    int kick;       /* a connection was resumed outside MHD_run: step at once */
    int quiesced;   /* the listening socket is closed */
    char *body413;  /* the 413 body (too_large_body), or NULL for the default */
    tls_creds *tls; /* TLS: what new connections get (srv:set_tls) */
    char log[256];  /* MHD's last message while starting */
    int capture_log;
};

/* ------------------------------------------------------------ clock, date */

static uint64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* RFC 7231 IMF-fixdate, independent of the C locale. */
static void http_date(char out[64]) {
    static const char days[] = "SunMonTueWedThuFriSat";
    static const char months[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
    /* Formatted once a second per thread: every answer carries one. */
    static _Thread_local time_t last = (time_t)-1;
    static _Thread_local char text[64];
    time_t t = time(NULL);
    if (t != last) {
        struct tm tm;
        gmtime_r(&t, &tm);
        snprintf(text, sizeof text, "%.3s, %02d %.3s %04d %02d:%02d:%02d GMT",
                 days + 3 * tm.tm_wday, tm.tm_mday, months + 3 * tm.tm_mon, tm.tm_year + 1900,
                 tm.tm_hour, tm.tm_min, tm.tm_sec);
        last = t;
    }
    memcpy(out, text, 64);
}

/* ------------------------------------------------------------ timer heap */

static void heap_set(httpd *s, size_t i, req *r) {
    s->heap[i] = r;
    r->heap_idx = i;
}

static void heap_up(httpd *s, size_t i) {
    req *r = s->heap[i];
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (s->heap[p]->due <= r->due) break;
        heap_set(s, i, s->heap[p]);
        i = p;
    }
    heap_set(s, i, r);
}

static void heap_down(httpd *s, size_t i) {
    req *r = s->heap[i];
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= s->heap_len) break;
        if (c + 1 < s->heap_len && s->heap[c + 1]->due < s->heap[c]->due) c++;
        if (r->due <= s->heap[c]->due) break;
        heap_set(s, i, s->heap[c]);
        i = c;
    }
    heap_set(s, i, r);
}

static int heap_push(httpd *s, req *r, uint64_t due) {
    if (s->heap_len == s->heap_cap) {
        size_t cap = s->heap_cap ? 2 * s->heap_cap : 64;
        req **h = realloc(s->heap, cap * sizeof *h);
        if (h == NULL) return -1;
        s->heap = h;
        s->heap_cap = cap;
    }
    r->due = due;
    heap_set(s, s->heap_len++, r);
    heap_up(s, s->heap_len - 1);
    return 0;
}

static void heap_remove(httpd *s, req *r) {
    size_t i = r->heap_idx;
    if (i == NOT_QUEUED) return;
    r->heap_idx = NOT_QUEUED;
    req *last = s->heap[--s->heap_len];
    if (last == r) return;
    heap_set(s, i, last);
    heap_up(s, i);
    heap_down(s, last->heap_idx);
}

/* ------------------------------------------------------------- id map */

/* Ids are sequential: as their own hash they filled one run of adjacent
 * slots as long as the requests in flight, and every removal shifted back
 * along all of it (undefer was among the loop thread's top symbols with
 * 1,000 requests deferred). Mixed (Fibonacci hashing), runs stay short. */
static size_t map_home(const id_map *m, uint64_t id) {
    uint64_t h = id * UINT64_C(0x9E3779B97F4A7C15);
    return (size_t)(h ^ (h >> 32)) & (m->cap - 1);
}

static int map_put(id_map *m, req *r) {
    if (2 * (m->n + 1) > m->cap) {
        size_t cap = m->cap ? 2 * m->cap : 64;
        req **slots = calloc(cap, sizeof *slots);
        if (slots == NULL) return -1;
        id_map grown = {slots, cap, 0};
        for (size_t i = 0; i < m->cap; i++)
            if (m->slots[i]) {
                size_t j = map_home(&grown, m->slots[i]->id);
                while (slots[j])
                    j = (j + 1) & (cap - 1);
                slots[j] = m->slots[i];
                grown.n++;
            }
        free(m->slots);
        *m = grown;
    }
    size_t i = map_home(m, r->id);
    while (m->slots[i])
        i = (i + 1) & (m->cap - 1);
    m->slots[i] = r;
    m->n++;
    return 0;
}

static size_t map_slot(const id_map *m, uint64_t id) {
    if (m->cap == 0) return SIZE_MAX;
    for (size_t i = map_home(m, id); m->slots[i]; i = (i + 1) & (m->cap - 1))
        if (m->slots[i]->id == id) return i;
    return SIZE_MAX;
}

static void map_remove(id_map *m, uint64_t id) {
    size_t i = map_slot(m, id), mask = m->cap - 1;
    if (i == SIZE_MAX) return;
    m->slots[i] = NULL;
    m->n--;
    for (size_t j = (i + 1) & mask; m->slots[j]; j = (j + 1) & mask) {
        size_t k = map_home(m, m->slots[j]->id);
        /* Move the entry back into the hole unless its home lies in (i, j]. */
        int stays = i <= j ? (i < k && k <= j) : (i < k || k <= j);
        if (!stays) {
            m->slots[i] = m->slots[j];
            m->slots[j] = NULL;
            i = j;
        }
    }
}

/* ------------------------------------------------------ deferred requests */

/* While deferred, MHD does not look at the socket (a suspended connection is
 * neither read nor timed out), so we watch it for a hang-up ourselves. Each
 * socket joins the server's epoll set once, when its connection opens, with
 * EPOLLONESHOT: a hang-up is reported once and is final, so the set needs no
 * change per request (an add and a delete per deferred request were a tenth
 * of the loop's syscalls under load). The closing socket leaves the set. */
static void watch(httpd *s, conn_t *k) {
    if (k->fd < 0) return;
    struct epoll_event ev = {.events = EPOLLRDHUP | EPOLLONESHOT, .data.ptr = k};
    epoll_ctl(s->epfd, EPOLL_CTL_ADD, k->fd, &ev); /* failing: no hang-up seen while deferred */
}

static void unwatch(httpd *s, conn_t *k) {
    if (k->fd >= 0) epoll_ctl(s->epfd, EPOLL_CTL_DEL, k->fd, NULL);
}

/* Take r out of the deferred set (its id is then unknown to respond). */
static void undefer(httpd *s, req *r) {
    if (!r->deferred) return;
    map_remove(&s->deferred, r->id);
    if (r->track) r->track->deferred = NULL;
    r->track = NULL;
    r->deferred = 0;
    s->deferred_n--;
}

/* Wake a deferred connection: MHD calls the access handler again, which
 * answers by r->phase (P_DELAYED: the response; P_GONE: close). */
static void wake(httpd *s, req *r, enum phase phase) {
    undefer(s, r);
    r->phase = phase;
    MHD_resume_connection(r->conn);
    s->kick = 1;
}

/* Suspend the connection until due; 0 on success. Without memory for the
 * timer the caller answers at once instead of waiting. */
static int suspend_until(req *r, uint64_t due) {
    if (heap_push(r->srv, r, due) != 0) return -1;
    MHD_suspend_connection(r->conn);
    r->srv->suspended++;
    return 0;
}

static void resume(httpd *s, req *r) {
    heap_remove(s, r);
    MHD_resume_connection(r->conn);
    s->suspended--;
}

static void fire_timers(httpd *s, uint64_t now) {
    while (s->heap_len > 0 && s->heap[0]->due <= now)
        resume(s, s->heap[0]);
}

/* -------------------------------------------------------- request state */

static void req_free(req *r) {
    if (r == NULL) return;
    r->srv->active--;
    undefer(r->srv, r);
    if (r->heap_idx != NOT_QUEUED) {
        heap_remove(r->srv, r);
        r->srv->suspended--;
    }
    if (r->resp) MHD_destroy_response(r->resp);
    free(r->query);
    r->srv->buffered -= r->body_cap;
    free(r->body);
    free(r->out);
    free(r);
}

/* MHD_OPTION_URI_LOG_CALLBACK: the raw URI, before MHD splits off the query.
 * What it returns becomes the request's context pointer. */
static void *on_uri(void *cls, const char *uri, struct MHD_Connection *c) {
    (void)c;
    req *r = calloc(1, sizeof *r);
    if (r == NULL) return NULL;
    r->srv = cls;
    r->heap_idx = NOT_QUEUED;
    const char *q = strchr(uri, '?');
    /* MHD decodes the path and a %00 would cut it short: "/a%00/b" must not
     * reach a handler as "/a". */
    for (const char *p = uri; *p && (q == NULL || p < q); p++)
        if (p[0] == '%' && p[1] == '0' && p[2] == '0') r->malformed = 1;
    q = q ? q + 1 : "";
    size_t n = strlen(q);
    const char *hash = memchr(q, '#', n);
    if (hash) n = (size_t)(hash - q);
    r->query = malloc(n + 1);
    if (r->query == NULL) {
        free(r);
        return NULL;
    }
    memcpy(r->query, q, n);
    r->query[n] = '\0';
    r->srv->active++;
    return r;
}

/* ------------------------------------------------- connections, deadlines */

static void conn_unlink(httpd *s, conn_t *k) {
    if (k->prev)
        k->prev->next = k->next;
    else
        s->c_head = k->next;
    if (k->next)
        k->next->prev = k->prev;
    else
        s->c_tail = k->prev;
    k->prev = k->next = NULL;
}

static void conn_append(httpd *s, conn_t *k) {
    k->prev = s->c_tail;
    k->next = NULL;
    if (s->c_tail)
        s->c_tail->next = k;
    else
        s->c_head = k;
    s->c_tail = k;
}

static conn_t *conn_of(struct MHD_Connection *c) {
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return ci ? ci->socket_context : NULL;
}

/* Its request is in: no deadline while the handler works or it is answered. */
static void conn_busy(struct MHD_Connection *c) {
    conn_t *k = conn_of(c);
    if (k) k->busy = 1;
}

static void creds_unref(tls_creds *t) {
    if (t == NULL || --t->refs > 0) return;
    for (unsigned i = 0; i < t->n; i++)
        gnutls_pcert_deinit(&t->pcert[i]);
    free(t->pcert);
    if (t->key) gnutls_privkey_deinit(t->key);
    free(t);
}

/* GnuTLS asks which certificate to present (gnutls_certificate_retrieve_
 * function2): the one the connection took when accepted. MHD gives each TLS
 * session its connection as the session pointer. GnuTLS neither frees nor
 * changes what it is handed. */
static int on_tls_cert(gnutls_session_t session, const gnutls_datum_t *req_ca_dn, int nreqs,
                       const gnutls_pk_algorithm_t *pk_algos, int pk_algos_length,
                       gnutls_pcert_st **pcert, unsigned int *pcert_length,
                       gnutls_privkey_t *pkey) {
    (void)req_ca_dn;
    (void)nreqs;
    (void)pk_algos;
    (void)pk_algos_length;
    struct MHD_Connection *c = gnutls_session_get_ptr(session);
    const union MHD_ConnectionInfo *ci =
        c ? MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT) : NULL;
    const conn_t *k = ci ? ci->socket_context : NULL;
    if (k == NULL || k->tls == NULL) return -1; /* untracked (no memory): no handshake */
    *pcert = k->tls->pcert;
    *pcert_length = k->tls->n;
    *pkey = k->tls->key;
    return 0;
}

static void on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
                          enum MHD_ConnectionNotificationCode code) {
    httpd *s = cls;
    conn_t *k = *socket_context;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
        k = calloc(1, sizeof *k);
        if (k == NULL) return; /* untracked: MHD's idle timeout still applies */
        k->fd = ci ? ci->connect_fd : -1;
        k->since = now_ms();
        if ((k->tls = s->tls) != NULL) k->tls->refs++;
        conn_append(s, k);
        s->n_conns++;
        *socket_context = k;
        watch(s, k);
    } else if (k != NULL) {
        if (k->deferred) k->deferred->track = NULL;
        creds_unref(k->tls);
        unwatch(s, k); /* before MHD closes the socket: no event can name k after this */
        conn_unlink(s, k);
        s->n_conns--;
        if (k->shut) s->n_shut--;
        free(k);
        *socket_context = NULL;
    }
}

/* Shut down (MHD then closes) every connection whose request has not come
 * in within the request timeout, and, while fewer than `reserve` slots are
 * free, the ones that have waited longest for theirs: a trickle of bytes
 * no longer holds a slot, and there is always room for a new client. At
 * most every SWEEP_MS. */
static void sweep_connections(httpd *s, uint64_t now) {
    /* Crowded, it runs at once and frees twice the reserve: connections
     * accepted from the listen queue take freed slots first, and a new
     * client waits behind them. */
    int crowded = s->n_conns - s->n_shut + s->reserve > s->max_conn;
    if (!crowded && now - s->last_sweep < SWEEP_MS) return;
    s->last_sweep = now;
    for (conn_t *k = s->c_head; k; k = k->next) {
        if (k->busy || k->shut) continue;
        int late = now - k->since > s->request_timeout_ms;
        crowded = s->n_conns - s->n_shut + 2 * s->reserve > s->max_conn;
        if (!late && !crowded) break; /* the rest came later */
        if (k->fd >= 0) shutdown(k->fd, SHUT_RDWR);
        k->shut = 1;
        s->n_shut++;
    }
}

static void on_completed(void *cls, struct MHD_Connection *c, void **ctx,
                         enum MHD_RequestTerminationCode toe) {
    httpd *s = cls;
    (void)toe;
    req_free(*ctx);
    *ctx = NULL;
    conn_t *k = conn_of(c);
    if (k != NULL && !k->shut) { /* waiting for its next request from now */
        k->busy = 0;
        k->since = now_ms();
        conn_unlink(s, k);
        conn_append(s, k);
    }
}

__attribute__((format(printf, 2, 0))) static void on_log(void *cls, const char *fmt, va_list ap) {
    httpd *s = cls;
    if (!s->capture_log) return; /* at run time MHD only reports client behaviour */
    vsnprintf(s->log, sizeof s->log, fmt, ap);
    size_t n = strlen(s->log);
    while (n > 0 && (s->log[n - 1] == '\n' || s->log[n - 1] == '.'))
        s->log[--n] = '\0';
}

/* ------------------------------------------------------------ responses */

static void add_date(struct MHD_Response *resp) {
    char date[64];
    http_date(date);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_DATE, date);
}

/* A fixed JSON answer; with close, the connection closes after it (after
 * a request whose framing is in doubt, nothing more on it can be trusted). */
static enum MHD_Result queue_json(struct MHD_Connection *c, unsigned status, const char *body,
                                  int close) {
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(strlen(body), (void *)body, MHD_RESPMEM_PERSISTENT);
    if (resp == NULL) return MHD_NO;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    if (close) MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
    add_date(resp);
    enum MHD_Result ret = MHD_queue_response(c, status, resp);
    MHD_destroy_response(resp);
    return ret;
}

static enum MHD_Result queue_fixed(struct MHD_Connection *c, unsigned status, const char *body) {
    return queue_json(c, status, body, 0);
}

static enum MHD_Result queue_fixed_close(struct MHD_Connection *c, unsigned status,
                                         const char *body) {
    return queue_json(c, status, body, 1);
}

/* Body source for fault = "truncate" and "slow". */
static ssize_t read_body(void *cls, uint64_t pos, char *buf, size_t max) {
    req *r = cls;
    if (r->srv->closing) return MHD_CONTENT_READER_END_WITH_ERROR;
    size_t p = (size_t)pos, n;
    if (r->fault == F_TRUNCATE) {
        size_t half = r->out_len / 2;
        if (p >= half) return MHD_CONTENT_READER_END_WITH_ERROR; /* MHD closes the connection */
        n = half - p;
    } else {
        if (p >= r->chunk_end) {
            if (now_ms() < r->next_due && suspend_until(r, r->next_due) == 0) return 0;
            r->chunk_end += r->chunk;
            r->next_due += r->slow_ms / SLOW_CHUNKS;
        }
        n = (r->chunk_end < r->out_len ? r->chunk_end : r->out_len) - p;
    }
    if (n > max) n = max;
    memcpy(buf, r->out + p, n);
    return (ssize_t)n;
}

/* Abort with a TCP RST: linger 0, then MHD closes the socket (MHD_USE_TURBO
 * keeps it from sending a FIN first). */
static enum MHD_Result reset(struct MHD_Connection *c) {
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (ci) {
        struct linger lg = {.l_onoff = 1, .l_linger = 0};
        setsockopt(ci->connect_fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    }
    return MHD_NO;
}

static enum MHD_Result respond(req *r) {
    r->phase = P_DONE;
    if (r->fault == F_RESET) return reset(r->conn);
    if (r->fault == F_SLOW) {
        r->next_due = now_ms() + r->slow_ms / SLOW_CHUNKS;
        r->chunk_end = 0;
    }
    enum MHD_Result ret = MHD_queue_response(r->conn, r->status, r->resp);
    MHD_destroy_response(r->resp);
    r->resp = NULL;
    return ret;
}

/* ------------------------------------------------------ the Lua handler */

typedef struct kv {
    const char *k, *v;
} kv;

typedef struct kv_list {
    kv *items;
    size_t n, cap;
    int boxed; /* items is a userdata on the Lua stack, for the caller to pop */
} kv_list;

/* Values a request usually has fit here, on the C stack: a userdata for
 * each list was two GC objects a request. */
#define KV_INLINE 32

static enum MHD_Result collect_kv(void *cls, enum MHD_ValueKind kind, const char *k,
                                  const char *v) {
    (void)kind;
    kv_list *l = cls;
    if (l->n < l->cap) l->items[l->n++] = (kv){k, v ? v : ""};
    return MHD_YES;
}

/* Copy a connection's values out first, so that the Lua calls that build the
 * table (which may raise) happen outside MHD's iterator: into buf (KV_INLINE
 * items) when they fit, else into a userdata left on the stack (boxed). */
static kv_list get_values(lua_State *L, struct MHD_Connection *c, enum MHD_ValueKind kind,
                          kv *buf) {
    kv_list l = {buf, 0, KV_INLINE, 0};
    int n = MHD_get_connection_values(c, kind, collect_kv, &l);
    if (n <= KV_INLINE) return l;
    l = (kv_list){NULL, 0, (size_t)n, 1};
    l.items = lua_newuserdatauv(L, l.cap * sizeof(kv), 0); /* freed by the GC */
    MHD_get_connection_values(c, kind, collect_kv, &l);
    return l;
}

/* The client's address as "host:port" ("[host]:port" for IPv6; "" when
 * unknown) into out. */
static void format_remote(struct MHD_Connection *c, char *out, size_t cap) {
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    char host[INET6_ADDRSTRLEN] = "?";
    if (ci && ci->client_addr->sa_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)(const void *)ci->client_addr;
        inet_ntop(AF_INET, &a->sin_addr, host, sizeof host);
        snprintf(out, cap, "%s:%u", host, (unsigned)ntohs(a->sin_port));
    } else if (ci && ci->client_addr->sa_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)(const void *)ci->client_addr;
        inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host);
        snprintf(out, cap, "[%s]:%u", host, (unsigned)ntohs(a->sin6_port));
    } else {
        out[0] = '\0';
    }
}

static void push_remote(lua_State *L, struct MHD_Connection *c) {
    conn_t *k = conn_of(c);
    if (k == NULL) { /* untracked (no memory at connect): formatted each time */
        char text[INET6_ADDRSTRLEN + 16];
        format_remote(c, text, sizeof text);
        lua_pushstring(L, text);
        return;
    }
    if (k->remote[0] == '\0') format_remote(c, k->remote, sizeof k->remote);
    lua_pushstring(L, k->remote);
}

static void lower_copy(char *dst, const char *src, size_t n) {
    for (size_t j = 0; j < n; j++)
        dst[j] = (src[j] >= 'A' && src[j] <= 'Z') ? (char)(src[j] - 'A' + 'a') : src[j];
}

static void push_request(lua_State *L, req *r, const char *method, const char *url) {
    struct MHD_Connection *c = r->conn;
    lua_createtable(L, 0, 8);
    lua_pushstring(L, method);
    lua_setfield(L, -2, "method");
    lua_pushstring(L, url);
    lua_setfield(L, -2, "path");
    lua_pushstring(L, r->query);
    lua_setfield(L, -2, "query");

    kv buf[KV_INLINE];
    kv_list l = get_values(L, c, MHD_GET_ARGUMENT_KIND, buf);
    lua_createtable(L, 0, (int)l.n);
    for (size_t i = 0; i < l.n; i++) {
        lua_pushstring(L, l.items[i].v);
        lua_setfield(L, -2, l.items[i].k);
    }
    lua_setfield(L, -2 - l.boxed, "args");
    if (l.boxed) lua_pop(L, 1);

    /* Lower-cased names; repeated headers joined with ", " (RFC 9110 5.3). */
    l = get_values(L, c, MHD_HEADER_KIND, buf);
    lua_createtable(L, 0, (int)l.n);
    for (size_t i = 0; i < l.n; i++) {
        char name[128];
        size_t klen = strlen(l.items[i].k);
        if (klen < sizeof name) {
            lower_copy(name, l.items[i].k, klen);
            lua_pushlstring(L, name, klen);
        } else {
            luaL_Buffer b;
            lower_copy(luaL_buffinitsize(L, &b, klen), l.items[i].k, klen);
            luaL_pushresultsize(&b, klen);
        }
        lua_pushvalue(L, -1);
        if (lua_rawget(L, -3) == LUA_TSTRING) {
            lua_pushliteral(L, ", ");
            lua_pushstring(L, l.items[i].v);
            lua_concat(L, 3);
        } else {
            lua_pop(L, 1);
            lua_pushstring(L, l.items[i].v);
        }
        lua_rawset(L, -3);
    }
    lua_setfield(L, -2 - l.boxed, "headers");
    if (l.boxed) lua_pop(L, 1);

    lua_pushlstring(L, r->body ? r->body : "", r->body_len);
    lua_setfield(L, -2, "body");
    push_remote(L, c);
    lua_setfield(L, -2, "remote");
    lua_pushinteger(L, (lua_Integer)r->id);
    lua_setfield(L, -2, "id");
}

/* A non-negative number field of the response table at t, or def. */
static uint64_t resp_ms(lua_State *L, int t, const char *field, uint64_t def) {
    int ty = lua_getfield(L, t, field);
    uint64_t v = def;
    if (ty != LUA_TNIL) {
        lua_Number n = lua_tonumber(L, -1);
        if (ty != LUA_TNUMBER || !(n >= 0 && n <= 86400000))
            luaL_error(L, "response.%s: expected milliseconds 0..86400000, got %s", field,
                       ty == LUA_TNUMBER ? lua_tostring(L, -1) : luaL_typename(L, -1));
        v = (uint64_t)n;
    }
    lua_pop(L, 1);
    return v;
}

/* Turn the handler's response table (at t) into r->resp and friends. Raises
 * on a malformed table; r->resp is freed by the caller then. */
static void read_response(lua_State *L, int t, req *r) {
    r->status = 200;
    if (lua_getfield(L, t, "status") != LUA_TNIL) {
        int isnum;
        lua_Integer st = lua_tointegerx(L, -1, &isnum);
        if (!isnum || lua_type(L, -1) != LUA_TNUMBER || st < 200 || st > 599)
            luaL_error(L, "response.status: expected an integer 200..599, got %s",
                       luaL_tolstring(L, -1, NULL));
        r->status = (unsigned)st;
    }
    lua_pop(L, 1);

    r->fault = F_NONE;
    if (lua_getfield(L, t, "fault") != LUA_TNIL) {
        const char *f = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "";
        if (strcmp(f, "reset") == 0)
            r->fault = F_RESET;
        else if (strcmp(f, "truncate") == 0)
            r->fault = F_TRUNCATE;
        else if (strcmp(f, "slow") == 0)
            r->fault = F_SLOW;
        else
            luaL_error(L, "response.fault: expected \"reset\", \"truncate\" or \"slow\", got %s",
                       luaL_tolstring(L, -1, NULL));
    }
    lua_pop(L, 1);
    r->delay_ms = resp_ms(L, t, "delay_ms", 0);
    r->slow_ms = resp_ms(L, t, "slow_ms", SLOW_DEFAULT_MS);

    size_t len = 0;
    const char *body = "";
    int ty = lua_getfield(L, t, "body");
    if (ty == LUA_TSTRING)
        body = lua_tolstring(L, -1, &len);
    else if (ty != LUA_TNIL)
        luaL_error(L, "response.body: expected string, got %s", luaL_typename(L, -1));
    if (r->fault == F_RESET) {
        lua_pop(L, 1);
        return; /* nothing is sent */
    }
    if (r->fault == F_NONE) {
        r->resp = MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
    } else {
        r->out = malloc(len ? len : 1);
        if (r->out == NULL) luaL_error(L, "not enough memory");
        memcpy(r->out, body, len);
        r->out_len = len;
        r->chunk = len / SLOW_CHUNKS + (len % SLOW_CHUNKS != 0);
        r->resp = MHD_create_response_from_callback(len, READER_BLOCK, read_body, r, NULL);
    }
    lua_pop(L, 1);
    if (r->resp == NULL) luaL_error(L, "not enough memory");

    int has_date = 0;
    if ((ty = lua_getfield(L, t, "headers")) != LUA_TNIL) {
        if (ty != LUA_TTABLE)
            luaL_error(L, "response.headers: expected table, got %s", luaL_typename(L, -1));
        lua_pushnil(L);
        while (lua_next(L, -2) != 0) {
            if (lua_type(L, -2) != LUA_TSTRING)
                luaL_error(L, "response.headers: names must be strings");
            int vt = lua_type(L, -1);
            if (vt != LUA_TSTRING && vt != LUA_TNUMBER)
                luaL_error(L, "response.headers[\"%s\"]: expected string, got %s",
                           lua_tostring(L, -2), lua_typename(L, vt));
            const char *k = lua_tostring(L, -2), *v = lua_tostring(L, -1);
            if (strcasecmp(k, MHD_HTTP_HEADER_DATE) == 0) has_date = 1;
            if (strcasecmp(k, MHD_HTTP_HEADER_CONTENT_LENGTH) == 0) {
                /* The server always sends #body; a copy of it is harmless. */
                char *end;
                errno = 0;
                unsigned long long cl = strtoull(v, &end, 10);
                if (errno || end == v || *end || cl != (unsigned long long)len)
                    luaL_error(L, "response.headers[\"%s\"]: %s differs from #body (%d)", k, v,
                               (int)len);
            } else if (MHD_add_response_header(r->resp, k, v) != MHD_YES)
                luaL_error(L,
                           "response.headers[\"%s\"]: refused (invalid characters, or a header "
                           "the server sets itself)",
                           k);
            lua_pop(L, 1);
        }
    }
    lua_pop(L, 1);
    if (!has_date) add_date(r->resp);
}

/* Runs under lua_pcall: (req lightuserdata, server userdata, method, url).
 * A handler that returns false defers: r->deferred is set and no response
 * is read (srv:respond brings it later). */
static int call_handler(lua_State *L) {
    req *r = lua_touserdata(L, 1);
    lua_getiuservalue(L, 2, UV_HANDLER);
    push_request(L, r, lua_touserdata(L, 3), lua_touserdata(L, 4));
    lua_call(L, 1, 1);
    if (lua_isboolean(L, -1) && !lua_toboolean(L, -1)) {
        r->deferred = 1;
        return 0;
    }
    if (!lua_istable(L, -1))
        return luaL_error(L, "handler returned %s, expected a response table or false",
                          luaL_typename(L, -1));
    read_response(L, lua_gettop(L), r);
    return 0;
}

/* Runs under lua_pcall: (req lightuserdata, response table), for respond. */
static int call_read_response(lua_State *L) {
    req *r = lua_touserdata(L, 1);
    if (!lua_istable(L, 2))
        return luaL_error(L, "respond: expected a response table, got %s", luaL_typename(L, 2));
    read_response(L, 2, r);
    return 0;
}

static int traceback(lua_State *L) {
    const char *msg = lua_tostring(L, 1);
    if (msg == NULL) msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    luaL_traceback(L, L, msg, 1);
    return 1;
}

static int call_on_error(lua_State *L) {
    lua_getiuservalue(L, 1, UV_ON_ERROR);
    lua_pushvalue(L, 2);
    lua_call(L, 1, 0);
    return 0;
}

/* Tell on_error (or stderr) about a failed handler call; message at top. */
static void report(lua_State *L, int srv_idx) {
    int top = lua_gettop(L);
    const char *msg = lua_tostring(L, -1);
    if (msg == NULL) msg = "(error object is not a string)";
    if (lua_getiuservalue(L, srv_idx, UV_ON_ERROR) == LUA_TFUNCTION) {
        lua_pushcfunction(L, call_on_error);
        lua_pushvalue(L, srv_idx);
        lua_pushvalue(L, top);
        if (lua_pcall(L, 2, 0, 0) != LUA_OK) {
            fprintf(stderr, "eidkit.HttpServer: on_error failed: %s\nhandler error: %s\n",
                    lua_tostring(L, -1) ? lua_tostring(L, -1) : "?", msg);
        }
    } else {
        fprintf(stderr, "eidkit.HttpServer: handler error: %s\n", msg);
    }
    lua_settop(L, top);
}

/* Run the Lua handler for r; 0 when r->status/resp/fault are set. The server
 * userdata is argument 1 of the step()/run() frame MHD_run was called from. */
static int run_handler(httpd *s, req *r, const char *method, const char *url) {
    lua_State *L = s->L;
    if (L == NULL || lua_touserdata(L, 1) != s) return -1;
    int top = lua_gettop(L);
    if (!lua_checkstack(L, 8)) return -1;
    lua_pushcfunction(L, traceback);
    lua_pushcfunction(L, call_handler);
    lua_pushlightuserdata(L, r);
    lua_pushvalue(L, 1);
    lua_pushlightuserdata(L, (void *)method); /* strings are made inside the pcall */
    lua_pushlightuserdata(L, (void *)url);
    r->id = ++s->next_id;
    int rc = lua_pcall(L, 4, 0, top + 1);
    if (rc != LUA_OK) {
        if (r->resp) MHD_destroy_response(r->resp);
        r->resp = NULL;
        free(r->out);
        r->out = NULL;
        r->deferred = 0;
        report(L, 1);
    }
    lua_settop(L, top);
    return rc == LUA_OK ? 0 : -1;
}

/* ------------------------------------------------------ MHD access handler */

static const char *body_413(const httpd *s) { return s->body413 ? s->body413 : BODY_ERROR_413; }

typedef struct framing {
    int content_length, transfer_encoding, bad_length;
} framing;

static enum MHD_Result count_framing(void *cls, enum MHD_ValueKind kind, const char *key,
                                     const char *value) {
    (void)kind;
    framing *f = cls;
    if (strcasecmp(key, "Content-Length") == 0) {
        f->content_length++;
        if (value == NULL || *value == '\0' || strspn(value, "0123456789") != strlen(value))
            f->bad_length = 1;
    } else if (strcasecmp(key, "Transfer-Encoding") == 0) {
        f->transfer_encoding++;
    }
    return MHD_YES;
}

/* RFC 9112 6.3: a message with Transfer-Encoding and Content-Length, or
 * with Content-Length fields that disagree (or a list such as "5, 5"), must
 * be refused: a proxy in front may frame it the other way (request
 * smuggling). One Content-Length field of digits is all we take. */
static int framing_ok(struct MHD_Connection *c) {
    framing f = {0};
    MHD_get_connection_values(c, MHD_HEADER_KIND, count_framing, &f);
    if (f.transfer_encoding > 0 && f.content_length > 0) return 0;
    return f.content_length <= 1 && !f.bad_length;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **ctx) {
    (void)version;
    httpd *s = cls;
    req *r = *ctx;
    if (r == NULL || s->closing) return MHD_NO;
    if (r->conn == NULL) { /* first call: headers are in */
        r->conn = c;
        if (r->malformed || !framing_ok(c)) {
            s->requests++;
            conn_busy(c);
            r->phase = P_DONE;
            r->malformed = 1;
            return queue_fixed_close(c, MHD_HTTP_BAD_REQUEST, BODY_ERROR_400);
        }
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
        if (cl && strtoull(cl, NULL, 10) > s->max_body) {
            s->requests++;
            conn_busy(c);
            r->phase = P_DONE;
            return queue_fixed(c, MHD_HTTP_CONTENT_TOO_LARGE, body_413(s));
        }
        return MHD_YES; /* MHD sends 100 Continue if the client asked */
    }
    switch (r->phase) {
    case P_BODY:
        if (*upload_size > 0) {
            size_t n = *upload_size;
            *upload_size = 0;
            if (r->too_large || n > s->max_body - r->body_len) {
                r->too_large = 1; /* keep reading, discard, answer 413 at the end */
                return MHD_YES;
            }
            if (r->body_len + n > r->body_cap) {
                size_t cap = r->body_cap ? r->body_cap : 1024;
                while (cap < r->body_len + n)
                    cap *= 2;
                if (s->buffered - r->body_cap + cap > s->max_buffered) {
                    /* Refused now rather than read: the memory is what is short. */
                    s->requests++;
                    r->phase = P_DONE;
                    conn_busy(c);
                    return queue_fixed_close(c, MHD_HTTP_SERVICE_UNAVAILABLE, BODY_ERROR_503);
                }
                char *b = realloc(r->body, cap);
                if (b == NULL) return MHD_NO;
                s->buffered = s->buffered - r->body_cap + cap;
                r->body = b;
                r->body_cap = cap;
            }
            memcpy(r->body + r->body_len, upload, n);
            r->body_len += n;
            return MHD_YES;
        }
        s->requests++;
        conn_busy(c);
        if (r->too_large) {
            r->phase = P_DONE;
            return queue_fixed(c, MHD_HTTP_CONTENT_TOO_LARGE, body_413(s));
        }
        int hrc = run_handler(s, r, method, url);
        /* The handler has the body as a Lua string now. */
        s->buffered -= r->body_cap;
        free(r->body);
        r->body = NULL;
        r->body_len = r->body_cap = 0;
        if (hrc != 0) {
            r->phase = P_DONE;
            return queue_fixed(c, MHD_HTTP_INTERNAL_SERVER_ERROR, BODY_ERROR_500);
        }
        if (r->deferred) {
            r->deferred = 0;
            if (map_put(&s->deferred, r) != 0) {
                r->phase = P_DONE;
                return queue_fixed(c, MHD_HTTP_INTERNAL_SERVER_ERROR, BODY_ERROR_500);
            }
            r->deferred = 1;
            r->phase = P_DEFERRED;
            s->deferred_n++;
            conn_t *k = conn_of(c);
            if (k && k->hup) { /* gone before it was deferred: respond finds no one */
                undefer(s, r);
                r->phase = P_GONE;
                return MHD_NO;
            }
            if (k) {
                k->deferred = r;
                r->track = k;
            }
            MHD_suspend_connection(c);
            return MHD_YES;
        }
        if (r->delay_ms > 0) {
            r->phase = P_DELAYED;
            if (suspend_until(r, now_ms() + r->delay_ms) == 0) return MHD_YES;
        }
        return respond(r);
    case P_DELAYED: return respond(r); /* resumed by the timer or by srv:respond */
    case P_GONE: return MHD_NO;        /* the client hung up while deferred */
    case P_DEFERRED: break;            /* not resumed yet */
    case P_DONE: *upload_size = 0; break;
    }
    return MHD_YES;
}

/* ------------------------------------------------------------ event loop */

static volatile sig_atomic_t got_signal;

static void on_signal(int sig) {
    (void)sig;
    got_signal = 1;
}

/* Milliseconds until the server needs a step: 0 after a resume outside
 * MHD_run, else the least of MHD's timeout and the next timer; -1 when only
 * its epoll fd becoming readable matters. */
static int64_t next_timeout(httpd *s) {
    if (s->kick) return 0;
    int64_t t = s->n_conns > s->n_shut ? SWEEP_MS : -1; /* the deadlines need a look */
    MHD_UNSIGNED_LONG_LONG mt;
    if (MHD_get_timeout(s->d, &mt) == MHD_YES) t = mt > INT32_MAX ? INT32_MAX : (int64_t)mt;
    if (s->heap_len > 0) {
        uint64_t now = now_ms(), due = s->heap[0]->due;
        int64_t d = due > now ? (int64_t)(due - now) : 0;
        if (t < 0 || t > d) t = d;
    }
    return t;
}

/* Wait at most timeout_ms (-1: no limit beyond MHD's and the timers'), then
 * close what hung up while deferred, resume what is due and let MHD do its
 * work. With mask, the wait is an epoll_pwait that lets SIGINT/SIGTERM in. */
static void iterate(lua_State *L, httpd *s, int64_t timeout_ms, const sigset_t *mask) {
    int64_t t = timeout_ms, mt = next_timeout(s);
    if (mt >= 0 && (t < 0 || t > mt)) t = mt;
    if (t > INT32_MAX) t = INT32_MAX;
    struct epoll_event evs[64];
    int n = epoll_pwait(s->epfd, evs, 64, (int)t, mask);
    for (int i = 0; i < n; i++) {
        conn_t *k = evs[i].data.ptr;
        if (k == NULL) continue; /* MHD's own epoll fd */
        k->hup = 1;
        if (k->deferred && k->deferred->phase == P_DEFERRED) wake(s, k->deferred, P_GONE);
    }
    s->kick = 0;
    uint64_t now = now_ms();
    fire_timers(s, now);
    sweep_connections(s, now);
    /* Under run(), SIGINT/SIGTERM are blocked everywhere except inside
     * epoll_pwait (which unblocks them atomically) and here: handlers run with
     * the caller's mask so that processes they start inherit it. A signal
     * taken here sets the flag run() tests before its next wait. */
    sigset_t blocked;
    if (mask) pthread_sigmask(SIG_SETMASK, mask, &blocked);
    s->L = L;
    s->dispatching = 1;
    MHD_run(s->d);
    s->dispatching = 0;
    s->L = NULL;
    sweep_connections(s, now_ms()); /* what MHD_run accepted may crowd it */
    if (mask) pthread_sigmask(SIG_SETMASK, &blocked, NULL);
}

/* ------------------------------------------------------ eidkit.HttpServer */

static httpd *check_open(lua_State *L) {
    httpd *s = luaL_checkudata(L, 1, HTTPD_MT);
    if (s->d == NULL) luaL_error(L, "attempt to use a closed " HTTPD_MT);
    return s;
}

static httpd *check_idle(lua_State *L, const char *what) {
    httpd *s = check_open(L);
    if (s->dispatching) luaL_error(L, HTTPD_MT ":%s called from inside its handler", what);
    return s;
}

static void do_close(httpd *s) {
    if (s->d == NULL) return;
    /* Wake every suspended connection (MHD must not be stopped with one);
     * with closing set, the callbacks answer MHD_NO without touching Lua, so
     * this is safe from __gc. */
    s->closing = 1;
    while (s->heap_len > 0)
        resume(s, s->heap[0]);
    for (size_t i = 0; i < s->deferred.cap; i++)
        while (s->deferred.slots[i]) /* wake() moves entries down: look again */
            wake(s, s->deferred.slots[i], P_GONE);
    MHD_run(s->d);
    MHD_stop_daemon(s->d); /* each connection lets its creds go */
    s->d = NULL;
    creds_unref(s->tls);
    s->tls = NULL;
    free(s->heap);
    s->heap = NULL;
    s->heap_len = s->heap_cap = 0;
    free(s->deferred.slots);
    s->deferred = (id_map){NULL, 0, 0};
    if (s->epfd >= 0) close(s->epfd);
    s->epfd = -1;
    free(s->body413);
    s->body413 = NULL;
}

static int srv_close(lua_State *L) {
    httpd *s = luaL_checkudata(L, 1, HTTPD_MT);
    if (s->dispatching) return luaL_error(L, HTTPD_MT ":close called from inside its handler");
    do_close(s);
    return 0;
}

static int srv_gc(lua_State *L) {
    httpd *s = luaL_checkudata(L, 1, HTTPD_MT);
    do_close(s);
    creds_unref(s->tls); /* a server that never started */
    s->tls = NULL;
    return 0;
}

static int srv_port(lua_State *L) {
    lua_pushinteger(L, (lua_Integer)check_open(L)->port);
    return 1;
}

static int srv_stop(lua_State *L) {
    check_open(L)->stop = 1;
    return 0;
}

/* srv:respond(id, resp) -> true, or false when the request is not waiting
 * (already answered, unknown, or its client hung up). The response table is
 * a handler's; a malformed one answers 500 and goes to on_error, as a
 * handler error does. Allowed from inside a handler. */
static int srv_respond(lua_State *L) {
    httpd *s = check_open(L);
    lua_Integer id = luaL_checkinteger(L, 2);
    luaL_checkany(L, 3);
    size_t slot = id > 0 ? map_slot(&s->deferred, (uint64_t)id) : SIZE_MAX;
    if (slot == SIZE_MAX || s->closing) {
        lua_pushboolean(L, 0);
        return 1;
    }
    req *r = s->deferred.slots[slot];
    lua_settop(L, 3);
    lua_pushcfunction(L, traceback);
    lua_pushcfunction(L, call_read_response);
    lua_pushlightuserdata(L, r);
    lua_pushvalue(L, 3);
    if (lua_pcall(L, 2, 0, 4) != LUA_OK) {
        if (r->resp) MHD_destroy_response(r->resp);
        free(r->out);
        r->out = NULL;
        r->fault = F_NONE;
        r->delay_ms = 0;
        r->status = MHD_HTTP_INTERNAL_SERVER_ERROR;
        r->resp = MHD_create_response_from_buffer(strlen(BODY_ERROR_500), (void *)BODY_ERROR_500,
                                                  MHD_RESPMEM_PERSISTENT);
        if (r->resp) {
            MHD_add_response_header(r->resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
            add_date(r->resp);
        }
        report(L, 1);
        if (r->resp == NULL) { /* no memory even for that: close the connection */
            wake(s, r, P_GONE);
            lua_pushboolean(L, 0);
            return 1;
        }
    }
    if (r->delay_ms > 0) { /* still suspended, now on the timer heap */
        undefer(s, r);
        r->phase = P_DELAYED;
        if (heap_push(s, r, now_ms() + r->delay_ms) == 0) {
            s->suspended++;
            lua_pushboolean(L, 1);
            return 1;
        }
        MHD_resume_connection(r->conn); /* no memory for the timer: answer now */
        s->kick = 1;
    } else {
        wake(s, r, P_DELAYED);
    }
    lua_pushboolean(L, 1);
    return 1;
}

/* srv:fd() -> a descriptor that becomes readable when the server has work:
 * its own epoll set, holding MHD's and the deferred connections' sockets. */
static int srv_fd(lua_State *L) {
    lua_pushinteger(L, check_open(L)->epfd);
    return 1;
}

/* srv:timeout() -> milliseconds until the server needs srv:step(0) even if
 * its fd stays quiet (MHD's timeout, the delay timers, a resume); -1: none. */
static int srv_timeout(lua_State *L) {
    lua_pushinteger(L, (lua_Integer)next_timeout(check_open(L)));
    return 1;
}

/* srv:quiesce(): stop accepting connections (the listening socket is
 * closed, so new connections are refused); open connections are served on.
 * Idempotent. */
static int srv_quiesce(lua_State *L) {
    httpd *s = check_open(L);
    if (!s->quiesced) {
        MHD_socket fd = MHD_quiesce_daemon(s->d);
        if (fd != MHD_INVALID_SOCKET) close(fd);
        s->quiesced = 1;
    }
    return 0;
}

static int srv_step(lua_State *L) {
    httpd *s = check_idle(L, "step");
    lua_Number t = luaL_optnumber(L, 2, 0);
    luaL_argcheck(L, t >= 0 && t <= 86400000, 2, "timeout_ms: expected 0..86400000");
    lua_settop(L, 1); /* the server is argument 1 while handlers run */
    iterate(L, s, (int64_t)t, NULL);
    lua_pushboolean(L, 1);
    return 1;
}

static int srv_run(lua_State *L) {
    httpd *s = check_idle(L, "run");
    lua_settop(L, 1);
    struct sigaction sa, old_int, old_term;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigset_t block, orig;
    sigemptyset(&block);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGTERM);
    got_signal = 0;
    s->stop = 0;
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    /* Signals stay blocked except inside epoll_pwait and MHD_run (see iterate),
     * so one that arrives between the flag test and the wait stays pending
     * and ends the wait: there is no window in which it is lost. (An earlier
     * version unblocked them around the whole iteration, and a SIGTERM just
     * before the wait left it waiting forever.) */
    pthread_sigmask(SIG_BLOCK, &block, &orig);
    while (!s->stop && !got_signal)
        iterate(L, s, -1, &orig);
    pthread_sigmask(SIG_SETMASK, &orig, NULL);
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    int by_signal = got_signal && !s->stop;
    got_signal = 0;
    s->stop = 0;
    if (by_signal)
        lua_pushliteral(L, "signal");
    else
        lua_pushliteral(L, "stopped");
    return 1;
}

static int srv_stats(lua_State *L) {
    httpd *s = check_open(L);
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_CURRENT_CONNECTIONS);
    lua_createtable(L, 0, 5);
    lua_pushinteger(L, di ? (lua_Integer)di->num_connections : 0);
    lua_setfield(L, -2, "connections");
    lua_pushinteger(L, s->suspended);
    lua_setfield(L, -2, "suspended");
    lua_pushinteger(L, s->requests);
    lua_setfield(L, -2, "requests");
    lua_pushinteger(L, s->deferred_n);
    lua_setfield(L, -2, "deferred");
    lua_pushinteger(L, s->active);
    lua_setfield(L, -2, "active");
    return 1;
}

static int srv_tostring(lua_State *L) {
    httpd *s = luaL_checkudata(L, 1, HTTPD_MT);
    if (s->d)
        lua_pushfstring(L, HTTPD_MT " (port %d)", (int)s->port);
    else
        lua_pushliteral(L, HTTPD_MT " (closed)");
    return 1;
}

/* ------------------------------------------------------------- creation */

typedef struct options {
    const char *host, *cert, *key, *body413;
    lua_Integer port, max_conn, max_body, timeout, request_timeout, max_per_address, max_buffered;
} options;

static void bad_field(lua_State *L, const char *field, const char *what) {
    lua_pushfstring(L, "%s: %s", field, what);
    luaL_argerror(L, 1, lua_tostring(L, -1));
}

static lua_Integer int_field(lua_State *L, const char *field, lua_Integer def, lua_Integer lo,
                             lua_Integer hi) {
    lua_Integer v = def;
    if (lua_getfield(L, 1, field) != LUA_TNIL) {
        int isnum;
        v = lua_tointegerx(L, -1, &isnum);
        if (!isnum || lua_type(L, -1) != LUA_TNUMBER || v < lo || v > hi) {
            lua_pushfstring(L, "expected an integer %I..%I, got %s", lo, hi,
                            luaL_tolstring(L, -1, NULL));
            bad_field(L, field, lua_tostring(L, -1));
        }
    }
    lua_pop(L, 1);
    return v;
}

static const char *str_field(lua_State *L, const char *field, const char *def) {
    const char *v = def;
    int t = lua_getfield(L, 1, field);
    if (t != LUA_TNIL) {
        if (t != LUA_TSTRING) {
            lua_pushfstring(L, "expected string, got %s", lua_typename(L, t));
            bad_field(L, field, lua_tostring(L, -1));
        }
        v = lua_tostring(L, -1); /* kept alive by the options table */
    }
    lua_pop(L, 1);
    return v;
}

/* An encrypted key would make OpenSSL ask for a passphrase on the terminal. */
static int no_passphrase(char *buf, int size, int rwflag, void *u) {
    (void)buf, (void)size, (void)rwflag, (void)u;
    return 0;
}

/* What libmicrohttpd's TLS would refuse with one word ("Failed to
 * initialize TLS support"), said precisely, by OpenSSL reading the same
 * PEM text: the first certificate, the key (unencrypted), and whether they
 * are a pair. NULL when they are. Never quotes the files. */
static const char *tls_problem(const char *cert, size_t cert_len, const char *key, size_t key_len) {
    const char *why = NULL;
    X509 *x = NULL;
    EVP_PKEY *k = NULL;
    BIO *b = BIO_new_mem_buf(cert, cert_len > INT32_MAX ? -1 : (int)cert_len);
    if (b) x = PEM_read_bio_X509(b, NULL, no_passphrase, NULL);
    BIO_free(b);
    b = BIO_new_mem_buf(key, key_len > INT32_MAX ? -1 : (int)key_len);
    if (b) k = PEM_read_bio_PrivateKey(b, NULL, no_passphrase, NULL);
    BIO_free(b);
    if (x == NULL)
        why = "the certificate file holds no PEM certificate";
    else if (k == NULL)
        why = "the key file holds no unencrypted PEM private key";
    else if (X509_check_private_key(x, k) != 1)
        why = "the key is not the certificate's";
    X509_free(x);
    EVP_PKEY_free(k);
    ERR_clear_error();
    return why;
}

/* The pair as GnuTLS will present it, after tls_problem found it sound:
 * NULL with *why when GnuTLS reads it otherwise (or memory ran out). The
 * result has one reference, its caller's. */
static tls_creds *creds_load(const char *cert, size_t cert_len, const char *key, size_t key_len,
                             const char **why) {
    if ((*why = tls_problem(cert, cert_len, key, key_len)) != NULL) return NULL;
    if (cert_len > UINT32_MAX || key_len > UINT32_MAX) {
        *why = "the certificate or key file is too large";
        return NULL;
    }
    tls_creds *t = calloc(1, sizeof *t);
    if (t == NULL) {
        *why = "not enough memory";
        return NULL;
    }
    t->refs = 1;
    gnutls_x509_crt_t *crts = NULL;
    unsigned n = 0;
    gnutls_datum_t cd = {(unsigned char *)cert, (unsigned)cert_len};
    gnutls_datum_t kd = {(unsigned char *)key, (unsigned)key_len};
    *why = "GnuTLS cannot read the certificate chain";
    if (gnutls_x509_crt_list_import2(&crts, &n, &cd, GNUTLS_X509_FMT_PEM, 0) < 0 || n == 0)
        goto fail;
    if ((t->pcert = calloc(n, sizeof *t->pcert)) != NULL &&
        gnutls_pcert_import_x509_list(t->pcert, crts, &n, 0) >= 0)
        t->n = n; /* the DER is copied: the crts go */
    for (unsigned i = 0; i < n; i++)
        gnutls_x509_crt_deinit(crts[i]);
    gnutls_free(crts);
    if (t->n == 0) goto fail;
    *why = "GnuTLS cannot read the private key";
    if (gnutls_privkey_init(&t->key) < 0) {
        t->key = NULL;
        goto fail;
    }
    if (gnutls_privkey_import_x509_raw(t->key, &kd, GNUTLS_X509_FMT_PEM, NULL, 0) < 0) goto fail;
    *why = NULL;
    return t;
fail:
    creds_unref(t);
    return NULL;
}

/* core.http_tls_check(cert_pem, key_pem) -> true | nil, problem: the check
 * core.http_server and srv:set_tls make of a pair, for a host's --check. */
static int l_tls_check(lua_State *L) {
    size_t cl, kl;
    const char *cert = luaL_checklstring(L, 1, &cl);
    const char *key = luaL_checklstring(L, 2, &kl);
    const char *why;
    tls_creds *t = creds_load(cert, cl, key, kl, &why);
    if (t) {
        creds_unref(t);
        lua_pushboolean(L, 1);
        return 1;
    }
    lua_pushnil(L);
    lua_pushstring(L, why);
    return 2;
}

/* srv:set_tls(cert_pem, key_pem) -> true | nil, problem: connections
 * accepted from now on present this pair; open ones keep theirs. A pair
 * core.http_tls_check refuses changes nothing. */
static int srv_set_tls(lua_State *L) {
    httpd *s = check_open(L); /* close() drops the pair: "without TLS" would mislead */
    size_t cl, kl;
    const char *cert = luaL_checklstring(L, 2, &cl);
    const char *key = luaL_checklstring(L, 3, &kl);
    if (s->tls == NULL)
        return luaL_error(L, HTTPD_MT ":set_tls: the server was started without TLS");
    const char *why;
    tls_creds *t = creds_load(cert, cl, key, kl, &why);
    if (t == NULL) {
        lua_pushnil(L);
        lua_pushstring(L, why);
        return 2;
    }
    creds_unref(s->tls);
    s->tls = t;
    lua_pushboolean(L, 1);
    return 1;
}

static void read_options(lua_State *L, options *o) {
    static const char *const known[] = {
        "host",
        "port",
        "handler",
        "tls_cert",
        "tls_key",
        "max_connections",
        "max_body",
        "on_error",
        "connection_timeout",
        "too_large_body",
        "request_timeout",
        "max_per_address",
        "max_buffered",
        NULL,
    };
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_pushnil(L);
    while (lua_next(L, 1) != 0) {
        int ok = 0;
        if (lua_type(L, -2) == LUA_TSTRING)
            for (int i = 0; known[i] && !ok; i++)
                ok = strcmp(lua_tostring(L, -2), known[i]) == 0;
        if (!ok) {
            lua_pushfstring(L, "unknown option '%s'", luaL_tolstring(L, -2, NULL));
            luaL_argerror(L, 1, lua_tostring(L, -1));
        }
        lua_pop(L, 1);
    }
    if (lua_getfield(L, 1, "handler") != LUA_TFUNCTION)
        bad_field(L, "handler", lua_isnil(L, -1) ? "required (a function)" : "expected function");
    if (lua_getfield(L, 1, "on_error") != LUA_TNIL && !lua_isfunction(L, -1))
        bad_field(L, "on_error", "expected function");
    lua_pop(L, 2);
    o->host = str_field(L, "host", "127.0.0.1");
    o->cert = str_field(L, "tls_cert", NULL);
    o->key = str_field(L, "tls_key", NULL);
    o->body413 = str_field(L, "too_large_body", NULL);
    if ((o->cert == NULL) != (o->key == NULL))
        bad_field(L, o->cert ? "tls_key" : "tls_cert", "required with the other TLS field");
    o->port = int_field(L, "port", 0, 0, 65535);
    o->max_conn = int_field(L, "max_connections", DEFAULT_MAX_CONN, 1, 1000000);
    o->max_body = int_field(L, "max_body", DEFAULT_MAX_BODY, 0, (lua_Integer)1 << 40);
    o->timeout = int_field(L, "connection_timeout", DEFAULT_TIMEOUT, 0, 86400);
    o->request_timeout = int_field(L, "request_timeout", DEFAULT_REQUEST_TIMEOUT, 1, 86400);
    /* 0: no limit per address (the simulator, a server behind a proxy);
     * eidkit serve sets one. */
    o->max_per_address = int_field(L, "max_per_address", 0, 0, 1000000);
    o->max_buffered = int_field(L, "max_buffered", DEFAULT_MAX_BUFFERED, 0, (lua_Integer)1 << 40);
}

/* 1,000+ connections need more descriptors than the usual soft limit. */
static void raise_nofile(void) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

static const char *errno_text(int e) {
    switch (e) {
    case EADDRINUSE: return "address already in use";
    case EACCES: return "permission denied";
    case EADDRNOTAVAIL: return "address not available";
    default: return strerror(e);
    }
}

/* Our own listening socket, so a bind failure has a precise reason. */
static int open_listener(lua_State *L, const options *o, int *ipv6) {
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    socklen_t len;
    struct sockaddr_in *a4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, o->host, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons((uint16_t)o->port);
        len = sizeof *a4;
        *ipv6 = 0;
    } else if (inet_pton(AF_INET6, o->host, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)o->port);
        len = sizeof *a6;
        *ipv6 = 1;
    } else {
        bad_field(L, "host", "expected an IPv4 or IPv6 address literal");
        return -1;
    }
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return luaL_error(L, "http_server: socket: %s", strerror(errno));
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (*ipv6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&ss, len) != 0 || listen(fd, LISTEN_BACKLOG) != 0) {
        int e = errno;
        close(fd);
        bad_field(L, e == EADDRNOTAVAIL ? "host" : "port", errno_text(e));
    }
    return fd;
}

static unsigned bound_port(int fd) {
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0) return 0;
    if (ss.ss_family == AF_INET6) return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

/* core.http_server{host=, port=, handler=, tls_cert=, tls_key=, ...} */
static int http_server_new(lua_State *L) {
    options o;
    read_options(L, &o);
    if (o.cert && !MHD_is_feature_supported(MHD_FEATURE_TLS))
        bad_field(L, "tls_cert", "this libmicrohttpd was built without TLS");
    if (o.cert && !MHD_is_feature_supported(MHD_FEATURE_HTTPS_CERT_CALLBACK))
        bad_field(L, "tls_cert", "this libmicrohttpd cannot take its certificate from a callback");

    /* Created closed, then opened: __gc is safe at every failure below. */
    httpd *s = lua_newuserdatauv(L, sizeof *s, 2);
    memset(s, 0, sizeof *s);
    s->epfd = -1;
    s->mhd_epfd = -1;
    luaL_setmetatable(L, HTTPD_MT);
    lua_getfield(L, 1, "handler");
    lua_setiuservalue(L, -2, UV_HANDLER);
    lua_getfield(L, 1, "on_error");
    lua_setiuservalue(L, -2, UV_ON_ERROR);
    s->max_body = (size_t)o.max_body;
    s->max_conn = (size_t)o.max_conn;
    s->reserve = o.max_conn >= 64 ? (size_t)o.max_conn / 16 : 0; /* kept free for new clients */
    s->request_timeout_ms = (uint64_t)o.request_timeout * 1000u;
    s->max_buffered = (size_t)o.max_buffered;
    if (o.cert) {
        const char *why;
        s->tls = creds_load(o.cert, strlen(o.cert), o.key, strlen(o.key), &why);
        if (s->tls == NULL) bad_field(L, "tls_cert/tls_key", why);
    }

    raise_nofile();
    int ipv6 = 0;
    int fd = open_listener(L, &o, &ipv6);
    s->port = bound_port(fd);

    unsigned flags = MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_SUPPRESS_DATE_NO_CLOCK |
                     MHD_USE_ERROR_LOG | MHD_USE_TURBO;
    if (o.cert) flags |= MHD_USE_TLS;
    if (ipv6) flags |= MHD_USE_IPv6;
    /* The certificate through a callback rather than MHD's own copy of the
     * PEM: srv:set_tls can then change it without a restart. */
    gnutls_certificate_retrieve_function2 *pick = on_tls_cert;
    struct MHD_OptionItem tls[] = {
        {MHD_OPTION_HTTPS_CERT_CALLBACK, 0, NULL},
        {MHD_OPTION_END, 0, NULL},
    };
    memcpy(&tls[0].ptr_value, &pick, sizeof pick); /* a function pointer as MHD's void * */
    if (!o.cert) tls[0].option = MHD_OPTION_END;
    s->capture_log = 1;
    s->d = MHD_start_daemon(
        flags, 0, NULL, NULL, on_request, s, MHD_OPTION_LISTEN_SOCKET, fd,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)o.max_conn, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned)o.timeout, MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)o.max_per_address,
        MHD_OPTION_NOTIFY_CONNECTION, on_connection, s, MHD_OPTION_URI_LOG_CALLBACK, on_uri, s,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, s, MHD_OPTION_EXTERNAL_LOGGER, on_log, s,
        MHD_OPTION_ARRAY, tls, MHD_OPTION_END);
    s->capture_log = 0;
    if (s->d == NULL) {
        if (fcntl(fd, F_GETFD) != -1) close(fd); /* MHD may or may not have closed it */
        const char *why = s->log[0] ? s->log : "libmicrohttpd could not start";
        if (o.cert) {
            lua_pushfstring(L, "tls_cert/tls_key: %s (expected PEM certificate and key)", why);
            luaL_argerror(L, 1, lua_tostring(L, -1));
        }
        return luaL_error(L, "http_server: %s", why);
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_EPOLL_FD);
    s->mhd_epfd = di ? di->epoll_fd : -1;
    if (s->mhd_epfd < 0) {
        do_close(s);
        return luaL_error(L, "http_server: libmicrohttpd has no epoll descriptor");
    }
    if (o.body413 && (s->body413 = strdup(o.body413)) == NULL) {
        do_close(s);
        return luaL_error(L, "not enough memory");
    }
    /* Our epoll set: MHD's (data.ptr NULL), and deferred sockets later. */
    s->epfd = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    if (s->epfd < 0 || epoll_ctl(s->epfd, EPOLL_CTL_ADD, s->mhd_epfd, &ev) != 0) {
        int e = errno;
        do_close(s);
        return luaL_error(L, "http_server: epoll: %s", strerror(e));
    }
    return 1;
}

void eidkit_open_httpd(lua_State *L) {
    static const luaL_Reg methods[] = {
        {"port", srv_port},       {"run", srv_run},         {"step", srv_step},
        {"stop", srv_stop},       {"stats", srv_stats},     {"close", srv_close},
        {"respond", srv_respond}, {"fd", srv_fd},           {"timeout", srv_timeout},
        {"quiesce", srv_quiesce}, {"set_tls", srv_set_tls}, {NULL, NULL},
    };
    static const luaL_Reg meta[] = {
        {"__gc", srv_gc},
        {"__close", srv_close},
        {"__tostring", srv_tostring},
        {NULL, NULL},
    };
    eidkit_new_class(L, HTTPD_MT, meta, methods);
    lua_pop(L, 1);
    lua_pushcfunction(L, http_server_new);
    lua_setfield(L, -2, "http_server");
    lua_pushcfunction(L, l_tls_check);
    lua_setfield(L, -2, "http_tls_check");
    /* For eidkit serve's --max-connections help and range. */
    lua_pushinteger(L, DEFAULT_MAX_CONN);
    lua_setfield(L, -2, "http_max_connections");
}
