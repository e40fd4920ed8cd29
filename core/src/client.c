/*
 * The signed FaceID API client: one curl multi handle per client drives every
 * call, synchronous or submitted, each with its own attempts, backoff and
 * deadline. What an attempt came to and whether to retry is retry.c's; the
 * answer envelope is envelope.c's. Design notes (retry classes, clock skew,
 * callbacks): docs/internals/client.md.
 */
#define _POSIX_C_SOURCE 200809L

#include "client_internal.h"

#include <curl/curl.h>
#include <openssl/crypto.h>

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define REQUEST_CLIENT "eidkit/" EIDKIT_VERSION

/* Transfers are spread over lanes, each its own multi handle and so its own
 * connection cache: libcurl 7.88 looks for a reusable connection by walking
 * every connection to the host, and at 1,000 on the wire that walk was the
 * largest single cost of a call in `eidkit serve` (docs/BENCHMARKS.md). */
#define LANE_CONNS 64
#define MAX_LANES  16

typedef struct lane {
    eid_client *c;
    CURLM *multi;
    double timer_at; /* when curl wants CURL_SOCKET_TIMEOUT; < 0: never */
    size_t active;   /* transfers in this lane */
} lane;

typedef struct call call;
struct call {
    eid_client *c;
    call *prev, *next;   /* the client's unfinished calls */
    call *wprev, *wnext; /* the calls waiting for an attempt to start (waiting) */
    int waiting;
    call *done_next; /* the finished queue */
    CURL *easy;      /* while on the wire */
    size_t hdr_used;
    char *body;
    size_t body_len;
    void *ud;
    int sync, finished, in_multi, skew_retried, too_big;
    int lane;    /* the lane of the attempt on the wire (in_multi) */
    int delayed; /* waiting out a retry's backoff (counted in n_delayed) */
    double start, deadline, not_before, attempt_start;
    char date[64]; /* the last answer's Date header value; "" when none */
    eid_buf resp;
    eid_result *res;
    /* Each written before it is read: new_call zeroes only the fields above
     * (CALL_ZEROED), not these 9 KiB, for every call. */
    char action[EID_FIELD_MAX + 1];
    struct curl_slist nodes[EID_HEADERS_MAX + 1]; /* signed headers, trace id */
    char hdrtext[8192];
    char errbuf[CURL_ERROR_SIZE];
};
#define CALL_ZEROED offsetof(call, action)

/* What the epoll set holds for one of curl's connection sockets. When a
 * transfer ends, curl stops watching its socket (CURL_POLL_REMOVE) and the
 * connection goes back to its cache; the next transfer on it asks for the
 * same events again. Deleting and adding the socket each time was two
 * epoll_ctl calls per API call, so a socket curl stops watching stays in the
 * set, marked idle, and leaves it only when it becomes ready while idle (the
 * server closed it) or when curl closes it. Only sockets curl opened through
 * on_open_socket are kept so: their closing goes through on_close_socket,
 * which keeps the table true when a descriptor number is reused (curl's
 * resolver closes its own socketpair directly, so those come and go). */
typedef struct sock_state {
    uint32_t events, lane;
    unsigned char ours; /* opened by on_open_socket, not closed yet */
    unsigned char in_set, idle;
} sock_state;

struct eid_client {
    lane lanes[MAX_LANES];
    int n_lanes;
    CURLSH *share;
    eid_signer *signer;
    char *url, *host, *service, *version, *region, *language, *proxy, *ca_file;
    char **extra;
    size_t n_extra;
    struct curl_slist *tail; /* X-TC-RequestClient, Expect, Accept, extras */
    int has_trace;
    char fixed_trace[EID_TRACE_ID_MAX]; /* X-TC-TraceId given in headers */
    long connect_timeout_ms, timeout_ms, deadline_ms;
    int insecure, defer_parse;
    eid_retry_rules rules;
    size_t max_response, max_in_flight;
    eid_clock clock;
    eid_client_retry_fn retry;
    void *retry_ud;
    eid_client_log_fn logger;
    void *logger_ud;
    char *secret_id, *token;
    unsigned char *secret_key;
    size_t secret_key_len;
    call *calls; /* unfinished */
    call *spare; /* released calls for reuse (call_release) */
    size_t n_spare;
    call *done_head, *done_tail;
    call *wait_head, *wait_tail; /* calls not on the wire, oldest first */
    size_t n_unfinished, n_active;
    size_t n_delayed;       /* unfinished calls given a backoff delay, not yet restarted */
    int epfd;               /* the sockets curl asked us to watch, every lane's */
    sock_state *socks;      /* by descriptor: what epfd holds for curl's connection sockets */
    size_t n_socks, n_idle; /* n_idle: kept in the set while curl does not watch them */
    double last_watch;      /* the last safety-net pass (step) */
    unsigned long finished_count;
    CURL **pool;
    size_t pool_n, pool_cap;
    int64_t skew;
    uint64_t requests, connects;
    unsigned char trace_seed[16]; /* random per client; calls add a counter */
    uint64_t trace_counter;
};

static int on_socket(CURL *e, curl_socket_t s, int what, void *ud, void *sockp);
static int on_timer(CURLM *m, long timeout_ms, void *ud);
static long wait_ms_at(const eid_client *c, double now);

/* ------------------------------------------------------------ helpers */

static pthread_once_t global_once = PTHREAD_ONCE_INIT;
static CURLcode global_rc = CURLE_FAILED_INIT;
static void global_init_once(void) { global_rc = curl_global_init(CURL_GLOBAL_DEFAULT); }

eid_status eid_client_global_init(void) {
    pthread_once(&global_once, global_init_once);
    return global_rc == CURLE_OK ? EID_OK : EID_E_INTERNAL;
}

static double mono_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int64_t wall_now(const eid_client *c) {
    return c->clock.now ? c->clock.now(c->clock.ud) : (int64_t)time(NULL);
}

static char *dup_opt(const char *s, int *nomem) {
    if (s == NULL) return NULL;
    char *d = strdup(s);
    if (d == NULL) *nomem = 1;
    return d;
}

static void wipe_free(void *p, size_t n) {
    if (p == NULL) return;
    OPENSSL_cleanse(p, n);
    free(p);
}

void eid__setf(char *dst, size_t cap, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(dst, cap, fmt, ap);
    va_end(ap);
}

/* ------------------------------------------------------------ options */

/* The numeric options' defaults and the Lua options' ranges, for this client
 * and eidkit.openresty.client alike (eidkit/client.h says why public). */
enum { OPT_CONNECT_TIMEOUT, OPT_TIMEOUT, OPT_DEADLINE, OPT_MAX_RESPONSE, OPT_COUNT };
static const eid_client_option_spec option_specs[OPT_COUNT] = {
    [OPT_CONNECT_TIMEOUT] = {"connect_timeout", "s", 2, 0.001, 3600},
    [OPT_TIMEOUT] = {"timeout", "s", 10, 0.001, 3600},
    [OPT_DEADLINE] = {"deadline", "s", 30, 0.001, 86400},
    [OPT_MAX_RESPONSE] = {"max_response", "bytes", 16 << 20, 1, 4294967296.0},
};

const eid_client_option_spec *eid_client_option(size_t i) {
    return i < OPT_COUNT ? &option_specs[i] : NULL;
}

const char *eid_client_default_endpoint(void) { return "https://faceid.tencentcloudapi.com"; }

const char *eid_client_default_service(void) { return "faceid"; }

/* A zero time option: the table's default in ms. */
static long default_ms(long ms, int opt) { return ms ? ms : (long)(option_specs[opt].def * 1000); }

static const char *const reserved_headers[] = {
    "authorization",  "host",        "content-type",      "x-tc-action",   "x-tc-version",
    "x-tc-timestamp", "x-tc-region", "x-tc-token",        "x-tc-language", "x-tc-requestclient",
    "content-length", "expect",      "transfer-encoding",
};

/* "Name: value" with a token name and no CR/LF; 1 when acceptable. */
static int header_ok(const char *h, int *is_trace) {
    const char *colon = strchr(h, ':');
    if (colon == NULL || colon == h) return 0;
    for (const char *p = h; p < colon; p++)
        if (*p <= ' ' || *p >= 127) return 0;
    if (strpbrk(h, "\r\n") != NULL) return 0;
    size_t n = (size_t)(colon - h);
    for (size_t i = 0; i < sizeof reserved_headers / sizeof *reserved_headers; i++)
        if (strlen(reserved_headers[i]) == n && strncasecmp(h, reserved_headers[i], n) == 0)
            return 0;
    *is_trace = n == 12 && strncasecmp(h, "x-tc-traceid", 12) == 0;
    return 1;
}

/* Split endpoint into url (with a trailing path) and the Host value. */
static eid_status parse_endpoint(eid_client *c, const char *ep, eid_error *err) {
    const char *rest;
    if (strncmp(ep, "https://", 8) == 0)
        rest = ep + 8;
    else if (strncmp(ep, "http://", 7) == 0)
        rest = ep + 7;
    else
        return eid__fail(err, EID_E_INVALID_ARG, "endpoint", "must start with http:// or https://");
    size_t hl = strcspn(rest, "/?#");
    if (hl == 0 || hl > EID_FIELD_MAX)
        return eid__fail(err, EID_E_INVALID_ARG, "endpoint", "has no host or a host over %d bytes",
                         EID_FIELD_MAX);
    for (size_t i = 0; i < hl; i++)
        if (rest[i] <= ' ' || rest[i] >= 127 || rest[i] == '@')
            return eid__fail(err, EID_E_INVALID_ARG, "endpoint", "host has a bad character");
    if (rest[hl] != '\0' && strcmp(rest + hl, "/") != 0)
        return eid__fail(err, EID_E_INVALID_ARG, "endpoint",
                         "must be scheme://host[:port] with no path (the API path is /)");
    c->host = strndup(rest, hl);
    size_t ul = (size_t)(rest - ep) + hl + 2;
    c->url = malloc(ul);
    if (c->host == NULL || c->url == NULL) return eid__fail(err, EID_E_NOMEM, "", "out of memory");
    snprintf(c->url, ul, "%.*s/", (int)((size_t)(rest - ep) + hl), ep);
    return EID_OK;
}

eid_status eid_client_new(const eid_client_options *opts, eid_client **out, eid_error *err) {
    eid_client_options zero;
    eid_status st;
    if (out == NULL) return eid__fail(err, EID_E_INVALID_ARG, "out", "must not be NULL");
    *out = NULL;
    if (opts == NULL) {
        memset(&zero, 0, sizeof zero);
        opts = &zero;
    }
    if (opts->connect_timeout_ms < 0 || opts->timeout_ms < 0 || opts->deadline_ms < 0)
        return eid__fail(err, EID_E_INVALID_ARG, "timeout", "must not be negative");
    /* The retry rules' ranges, as eid_retry_decide will check them. */
    eid_retry_rules asked = {.max_attempts = opts->max_attempts,
                             .backoff_base = (double)opts->backoff_base_ms / 1000.0,
                             .backoff_cap = (double)opts->backoff_cap_ms / 1000.0};
    if (eid_retry_check_rules(&asked, err) != EID_OK) return EID_E_INVALID_ARG;
    if (opts->header_count > 0 && opts->headers == NULL)
        return eid__fail(err, EID_E_INVALID_ARG, "headers", "NULL with a non-zero count");
    if (eid_client_global_init() != EID_OK)
        return eid__fail(err, EID_E_INTERNAL, "", "curl_global_init failed");

    eid_client *c = calloc(1, sizeof *c);
    if (c == NULL) return eid__fail(err, EID_E_NOMEM, "", "out of memory");
    c->epfd = -1;
    st = parse_endpoint(c, opts->endpoint ? opts->endpoint : eid_client_default_endpoint(), err);
    if (st != EID_OK) goto fail;
    int nomem = 0;
    c->service = dup_opt(opts->service ? opts->service : eid_client_default_service(), &nomem);
    c->version = dup_opt(opts->version ? opts->version : "2018-03-01", &nomem);
    c->region = dup_opt(opts->region, &nomem);
    c->language = dup_opt(opts->language, &nomem);
    c->proxy = dup_opt(opts->proxy, &nomem);
    c->ca_file = dup_opt(opts->ca_file, &nomem);
    if (nomem) {
        st = eid__fail(err, EID_E_NOMEM, "", "out of memory");
        goto fail;
    }
    if (opts->header_count) {
        c->extra = calloc(opts->header_count, sizeof *c->extra);
        if (c->extra == NULL) {
            st = eid__fail(err, EID_E_NOMEM, "", "out of memory");
            goto fail;
        }
    }
    for (size_t i = 0; i < opts->header_count; i++) {
        int trace = 0;
        if (opts->headers[i] == NULL || !header_ok(opts->headers[i], &trace)) {
            st = eid__fail(err, EID_E_INVALID_ARG, "headers",
                           "entry %zu is not 'Name: value' or names a header eidkit sets", i + 1);
            goto fail;
        }
        c->extra[i] = strdup(opts->headers[i]);
        c->n_extra = i + 1;
        if (c->extra[i] == NULL) {
            st = eid__fail(err, EID_E_NOMEM, "", "out of memory");
            goto fail;
        }
        if (trace) { /* the caller's trace id: results report it */
            const char *v = strchr(c->extra[i], ':') + 1;
            while (*v == ' ' || *v == '\t')
                v++;
            c->has_trace = 1;
            snprintf(c->fixed_trace, sizeof c->fixed_trace, "%s", v);
        }
    }
    static const char *const fixed[] = {"X-TC-RequestClient: " REQUEST_CLIENT,
                                        "Expect:", "Accept:"};
    for (size_t i = 0; i < 3 + c->n_extra; i++) {
        struct curl_slist *t = curl_slist_append(c->tail, i < 3 ? fixed[i] : c->extra[i - 3]);
        if (t == NULL) {
            st = eid__fail(err, EID_E_NOMEM, "", "out of memory");
            goto fail;
        }
        c->tail = t;
    }
    c->connect_timeout_ms = default_ms(opts->connect_timeout_ms, OPT_CONNECT_TIMEOUT);
    c->timeout_ms = default_ms(opts->timeout_ms, OPT_TIMEOUT);
    c->deadline_ms = default_ms(opts->deadline_ms, OPT_DEADLINE);
    c->insecure = opts->insecure;
    /* Zeros stay zeros: eid_retry_decide applies the defaults (one source). */
    c->rules.max_attempts = opts->max_attempts;
    c->rules.backoff_base = (double)opts->backoff_base_ms / 1000.0;
    c->rules.backoff_cap = (double)opts->backoff_cap_ms / 1000.0;
    c->rules.retry_unsafe = opts->retry_unsafe;
    c->defer_parse = opts->defer_parse;
    c->max_response =
        opts->max_response ? opts->max_response : (size_t)option_specs[OPT_MAX_RESPONSE].def;
    c->max_in_flight = opts->max_in_flight ? opts->max_in_flight : 256;
    c->clock = opts->clock;
    c->retry = opts->retry;
    c->retry_ud = opts->retry_ud;
    c->logger = opts->logger;
    c->logger_ud = opts->logger_ud;

    eid_signer_options so = {.cache_slots = 4, .clock = opts->clock};
    st = eid_signer_new(&so, &c->signer);
    if (st != EID_OK) {
        st = eid__fail(err, st, "", "cannot create the signer");
        goto fail;
    }
    if (eid_random_bytes(c->trace_seed, sizeof c->trace_seed) != EID_OK) {
        st = eid__fail(err, EID_E_CRYPTO, "", "the random generator failed");
        goto fail;
    }
    c->share = curl_share_init();
    c->epfd = epoll_create1(EPOLL_CLOEXEC);
    size_t lanes = (c->max_in_flight + LANE_CONNS - 1) / LANE_CONNS;
    c->n_lanes = lanes < 1 ? 1 : lanes > MAX_LANES ? MAX_LANES : (int)lanes;
    for (int i = 0; i < c->n_lanes; i++) {
        lane *ln = &c->lanes[i];
        ln->c = c;
        ln->timer_at = -1;
        ln->multi = curl_multi_init();
        if (ln->multi == NULL) break;
        curl_multi_setopt(ln->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
        curl_multi_setopt(ln->multi, CURLMOPT_SOCKETDATA, ln);
        curl_multi_setopt(ln->multi, CURLMOPT_TIMERFUNCTION, on_timer);
        curl_multi_setopt(ln->multi, CURLMOPT_TIMERDATA, ln);
        /* Idle connections kept: the lane's share of max_in_flight. */
        curl_multi_setopt(ln->multi, CURLMOPT_MAXCONNECTS,
                          (long)((c->max_in_flight + (size_t)c->n_lanes - 1) / (size_t)c->n_lanes));
    }
    if (c->lanes[c->n_lanes - 1].multi == NULL || c->share == NULL || c->epfd < 0) {
        st = eid__fail(err, EID_E_NOMEM, "", "cannot create curl handles or epoll");
        goto fail;
    }
    /* One client is used by one thread, so the share needs no locks. DNS and
     * TLS sessions are shared by the lanes; connections live in each lane's
     * multi handle, which every call (synchronous or not) goes through. */
    curl_share_setopt(c->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
    curl_share_setopt(c->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
    *out = c;
    return EID_OK;
fail:
    eid_client_free(c);
    return st;
}

static void result_clear_bodies(eid_result *r) {
    free(r->response);
    free(r->received);
    r->response = r->received = NULL;
    r->response_len = r->received_len = 0;
}

void eid_result_free(eid_result *r) {
    if (r == NULL) return;
    result_clear_bodies(r);
    free(r);
}

/* Wipe the signed headers and free what a call owns, not the call itself. */
static void call_clear(call *k) {
    OPENSSL_cleanse(k->hdrtext, k->hdr_used);
    free(k->body);
    free(k->resp.p);
    eid_result_free(k->res);
}

static void call_free(call *k) {
    if (k == NULL) return;
    call_clear(k);
    free(k);
}

/* A finished call's 9 KiB kept for the next (a malloc and free of that size
 * per call showed in `eidkit serve`'s profile). */
#define MAX_SPARE_CALLS 32
static void call_release(eid_client *c, call *k) {
    if (c->n_spare >= MAX_SPARE_CALLS) {
        call_free(k);
        return;
    }
    call_clear(k);
    k->next = c->spare;
    c->spare = k;
    c->n_spare++;
}

void eid_client_free(eid_client *c) {
    if (c == NULL) return;
    while (c->calls) {
        call *k = c->calls;
        c->calls = k->next;
        if (k->easy) {
            if (k->in_multi) curl_multi_remove_handle(c->lanes[k->lane].multi, k->easy);
            curl_easy_cleanup(k->easy);
        }
        call_free(k);
    }
    while (c->done_head) {
        call *k = c->done_head;
        c->done_head = k->done_next;
        call_free(k);
    }
    while (c->spare) {
        call *k = c->spare;
        c->spare = k->next;
        free(k);
    }
    for (size_t i = 0; i < c->pool_n; i++)
        curl_easy_cleanup(c->pool[i]);
    free(c->pool);
    for (int i = 0; i < c->n_lanes; i++)
        if (c->lanes[i].multi) curl_multi_cleanup(c->lanes[i].multi);
    if (c->epfd >= 0) close(c->epfd);
    free(c->socks); /* after the multis: closing their connections updates it */
    if (c->share) curl_share_cleanup(c->share);
    eid_signer_free(c->signer);
    curl_slist_free_all(c->tail);
    for (size_t i = 0; i < c->n_extra; i++)
        free(c->extra[i]);
    free(c->extra);
    free(c->url);
    free(c->host);
    free(c->service);
    free(c->version);
    free(c->region);
    free(c->language);
    free(c->proxy);
    free(c->ca_file);
    free(c->secret_id);
    if (c->token) wipe_free(c->token, strlen(c->token));
    wipe_free(c->secret_key, c->secret_key_len);
    free(c);
}

eid_status eid_client_set_credentials(eid_client *c, const char *secret_id, const void *secret_key,
                                      size_t secret_key_len, const char *token, eid_error *err) {
    if (c == NULL) return eid__fail(err, EID_E_INVALID_ARG, "client", "must not be NULL");
    if (secret_id == NULL || *secret_id == '\0' || strlen(secret_id) > EID_SECRET_ID_MAX)
        return eid__fail(err, EID_E_INVALID_ARG, "secret_id", "must be 1..%d bytes",
                         EID_SECRET_ID_MAX);
    if (secret_key == NULL || secret_key_len == 0 || secret_key_len > EID_SECRET_KEY_MAX)
        return eid__fail(err, EID_E_INVALID_ARG, "secret_key", "must be 1..%d bytes",
                         EID_SECRET_KEY_MAX);
    if (token && strlen(token) > EID_TOKEN_MAX)
        return eid__fail(err, EID_E_INVALID_ARG, "token", "longer than %d bytes", EID_TOKEN_MAX);
    char *id = strdup(secret_id);
    unsigned char *key = malloc(secret_key_len);
    char *tok = token && *token ? strdup(token) : NULL;
    if (id == NULL || key == NULL || (token && *token && tok == NULL)) {
        free(id);
        free(key);
        free(tok);
        return eid__fail(err, EID_E_NOMEM, "", "out of memory");
    }
    memcpy(key, secret_key, secret_key_len);
    free(c->secret_id);
    if (c->token) wipe_free(c->token, strlen(c->token));
    wipe_free(c->secret_key, c->secret_key_len);
    c->secret_id = id;
    c->secret_key = key;
    c->secret_key_len = secret_key_len;
    c->token = tok;
    return EID_OK;
}

void eid_client_set_skew(eid_client *c, int64_t skew) {
    if (c) c->skew = skew;
}

int64_t eid_client_skew(const eid_client *c) { return c ? c->skew : 0; }

int eid_client_fd(const eid_client *c) { return c ? c->epfd : -1; }

long eid_client_timeout(const eid_client *c) {
    if (c == NULL || (c->n_unfinished == 0 && c->done_head == NULL)) return -1;
    if (c->done_head != NULL) return 0;
    return wait_ms_at(c, mono_now());
}

void eid_client_stats(const eid_client *c, uint64_t *requests, uint64_t *connects) {
    if (requests) *requests = c ? c->requests : 0;
    if (connects) *connects = c ? c->connects : 0;
}

/* ------------------------------------------------------------ transfers */

int eid__buf_append(eid_buf *b, const char *data, size_t len, size_t max, int *too_big) {
    if (len > max - b->len) {
        *too_big = 1;
        return 0;
    }
    if (b->len + len + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 2048;
        while (cap < b->len + len + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (p == NULL) return 0;
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, data, len);
    b->len += len;
    b->p[b->len] = '\0';
    return 1;
}

static size_t on_write(char *data, size_t size, size_t n, void *ud) {
    call *k = ud;
    size_t len = size * n;
    /* 0 makes libcurl stop with CURLE_WRITE_ERROR */
    return eid__buf_append(&k->resp, data, len, k->c->max_response, &k->too_big) ? len : 0;
}

static size_t on_header(char *data, size_t size, size_t n, void *ud) {
    call *k = ud;
    size_t len = size * n;
    /* Kept raw; parsed only on AuthFailure.SignatureExpire. */
    if (len > 5 && len - 5 < sizeof k->date && strncasecmp(data, "date:", 5) == 0) {
        memcpy(k->date, data + 5, len - 5);
        k->date[len - 5] = '\0';
    }
    return len;
}

/* The sock_state of descriptor fd, the table grown to hold it (zeroed);
 * NULL when the table cannot grow. A socket the table does not hold, or
 * holds zeroed (not ours), is added and deleted each time, as before the
 * table: a failed growth costs syscalls, never a socket left in the set. */
static sock_state *sock_at(eid_client *c, curl_socket_t fd) {
    if (fd < 0) return NULL;
    size_t i = (size_t)fd;
    if (i >= c->n_socks) {
        size_t n = c->n_socks ? c->n_socks : 64;
        while (n <= i)
            n *= 2;
        sock_state *t = realloc(c->socks, n * sizeof *t);
        if (t == NULL) return NULL;
        memset(t + c->n_socks, 0, (n - c->n_socks) * sizeof *t);
        c->socks = t;
        c->n_socks = n;
    }
    return &c->socks[i];
}

static void set_idle(eid_client *c, sock_state *st, unsigned char idle) {
    if (st->idle == idle) return;
    st->idle = idle;
    if (idle)
        c->n_idle++;
    else
        c->n_idle--;
}

/* A sock_state already in the table, or NULL. */
static sock_state *sock_peek(const eid_client *c, curl_socket_t fd) {
    return fd >= 0 && (size_t)fd < c->n_socks ? &c->socks[fd] : NULL;
}

static curl_socket_t on_open_socket(void *ud, curlsocktype purpose, struct curl_sockaddr *a) {
    eid_client *c = ud;
    (void)purpose;
    curl_socket_t fd = socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
    if (fd < 0) return CURL_SOCKET_BAD;
    sock_state *st = sock_at(c, fd);
    if (st) *st = (sock_state){.ours = 1};
    return fd;
}

/* Closing takes the socket out of the epoll set (nothing else holds it). */
static int on_close_socket(void *ud, curl_socket_t fd) {
    sock_state *st = sock_peek(ud, fd);
    if (st) {
        set_idle(ud, st, 0);
        *st = (sock_state){0};
    }
    return close(fd);
}

/* A new easy handle with the options every call shares. */
static CURL *easy_new(eid_client *c) {
    CURL *e = curl_easy_init();
    if (e == NULL) return NULL;
    int bad = 0;
    bad |= curl_easy_setopt(e, CURLOPT_URL, c->url) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_SHARE, c->share) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_write) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https") != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, on_open_socket) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_OPENSOCKETDATA, c) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_CLOSESOCKETFUNCTION, on_close_socket) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_CLOSESOCKETDATA, c) != CURLE_OK;
    if (c->proxy) bad |= curl_easy_setopt(e, CURLOPT_PROXY, c->proxy) != CURLE_OK;
    if (c->ca_file) bad |= curl_easy_setopt(e, CURLOPT_CAINFO, c->ca_file) != CURLE_OK;
    if (c->insecure) {
        bad |= curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 0L) != CURLE_OK;
        bad |= curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 0L) != CURLE_OK;
    }
    if (bad) {
        curl_easy_cleanup(e);
        return NULL;
    }
    return e;
}

static CURL *easy_get(eid_client *c) {
    if (c->pool_n > 0) return c->pool[--c->pool_n];
    return easy_new(c);
}

static void easy_put(eid_client *c, CURL *e) {
    if (c->pool_n == c->pool_cap) {
        size_t cap = c->pool_cap ? c->pool_cap * 2 : 16;
        CURL **p = realloc(c->pool, cap * sizeof *p);
        if (p == NULL) {
            curl_easy_cleanup(e);
            return;
        }
        c->pool = p;
        c->pool_cap = cap;
    }
    c->pool[c->pool_n++] = e;
}

/* ------------------------------------------------------------ classification */

/* The libcurl results the retry rules tell apart (retry.c); any other
 * failure is EID_OUTCOME_OTHER, code "transport". */
static const struct curl_outcome {
    CURLcode rc;
    eid_outcome outcome;
} curl_outcomes[] = {
    {CURLE_OPERATION_TIMEDOUT, EID_OUTCOME_TIMEOUT},
    {CURLE_COULDNT_CONNECT, EID_OUTCOME_CONNECT},
    {CURLE_COULDNT_RESOLVE_HOST, EID_OUTCOME_CONNECT},
    {CURLE_COULDNT_RESOLVE_PROXY, EID_OUTCOME_CONNECT},
    {CURLE_SSL_CONNECT_ERROR, EID_OUTCOME_TLS},
    {CURLE_PEER_FAILED_VERIFICATION, EID_OUTCOME_TLS},
    {CURLE_SSL_CACERT_BADFILE, EID_OUTCOME_TLS},
    {CURLE_SSL_CERTPROBLEM, EID_OUTCOME_TLS},
    {CURLE_SSL_CIPHER, EID_OUTCOME_TLS},
    {CURLE_SSL_ISSUER_ERROR, EID_OUTCOME_TLS},
    {CURLE_SSL_PINNEDPUBKEYNOTMATCH, EID_OUTCOME_TLS},
    {CURLE_SSL_INVALIDCERTSTATUS, EID_OUTCOME_TLS},
    {CURLE_SSL_CRL_BADFILE, EID_OUTCOME_TLS},
    {CURLE_SSL_ENGINE_INITFAILED, EID_OUTCOME_TLS},
    {CURLE_WRITE_ERROR, EID_OUTCOME_RECV_NOMEM}, /* on_write refused: TOO_BIG if too_big */
    {CURLE_PARTIAL_FILE, EID_OUTCOME_TRUNCATED},
    {CURLE_RECV_ERROR, EID_OUTCOME_RESET},
    {CURLE_SEND_ERROR, EID_OUTCOME_RESET},
    {CURLE_GOT_NOTHING, EID_OUTCOME_RESET},
};

static eid_outcome outcome_of(CURLcode rc, int too_big) {
    if (rc == CURLE_WRITE_ERROR && too_big) return EID_OUTCOME_TOO_BIG;
    for (size_t i = 0; i < sizeof curl_outcomes / sizeof *curl_outcomes; i++)
        if (curl_outcomes[i].rc == rc) return curl_outcomes[i].outcome;
    return EID_OUTCOME_OTHER;
}

static double jitter(void) {
    uint32_t r = 0;
    if (eid_random_bytes(&r, sizeof r) != EID_OK) return 0.5;
    return (double)r / 4294967296.0;
}

/* Keep at most EID_RECEIVED_MAX bytes of body in r->received (on failure to
 * allocate, none): only for what the verdict's keep_received allows. */
static void keep_received(eid_result *r, const char *body, size_t len) {
    size_t n = len < EID_RECEIVED_MAX ? len : EID_RECEIVED_MAX;
    r->received = malloc(n + 1);
    if (r->received == NULL) return;
    if (n) memcpy(r->received, body, n);
    r->received[n] = '\0';
    r->received_len = n;
}

/* After one attempt: fill k->res, *f with its facts and *v with the retry
 * rules' verdict (eidkit/retry.h). */
static void classify(call *k, CURLcode rc, double now, eid_retry_facts *f_out,
                     eid_retry_verdict *v) {
    eid_result *r = k->res;
    long http = 0;
    long reqsize = 0;
    curl_easy_getinfo(k->easy, CURLINFO_RESPONSE_CODE, &http);
    curl_easy_getinfo(k->easy, CURLINFO_REQUEST_SIZE, &reqsize);
    r->http_status = http;
    r->code[0] = r->message[0] = r->request_id[0] = '\0';
    result_clear_bodies(r);
    eid_retry_facts f = {
        .action = k->action,
        .attempts = r->attempts,
        .bytes_sent = reqsize > 0,
        .http_status = http,
        .remote_code = r->code,
        .skew_retried = k->skew_retried,
        .remaining = k->deadline - now,
    };
    if (rc == CURLE_OK && http == 200)
        f.outcome = eid__envelope_read(k->resp.p, k->resp.len, k->c->defer_parse, r);
    else if (rc == CURLE_OK)
        f.outcome = EID_OUTCOME_HTTP;
    else
        f.outcome = outcome_of(rc, k->too_big);
    /* Off the hot path (a success): the jitter's draw, and the clocks, which
     * only a refused timestamp needs. */
    if (f.outcome != EID_OUTCOME_OK) f.jitter = jitter();
    if (f.outcome == EID_OUTCOME_REMOTE && k->date[0]) {
        time_t server = curl_getdate(k->date, NULL);
        f.server_time = server > 0 ? (int64_t)server : 0;
        f.local_time = wall_now(k->c);
    }
    if (eid_retry_decide(&k->c->rules, &f, v, NULL) != EID_OK) /* cannot happen: facts are ours */
        v->status = EID_E_INTERNAL;
    *f_out = f;
    r->status = v->status;
    memcpy(r->code, v->code, strlen(v->code) + 1);
    if (rc == CURLE_OK && http == 200) return; /* the envelope said the rest */
    const char *detail = k->errbuf[0] ? k->errbuf : curl_easy_strerror(rc);
    switch (f.outcome) {
    case EID_OUTCOME_HTTP:
        eid__setf(r->message, sizeof r->message, "HTTP %ld; %zu bytes received", http, k->resp.len);
        break;
    case EID_OUTCOME_TIMEOUT:
        eid__setf(r->message, sizeof r->message, "%s%s",
                  f.bytes_sent ? "" : "before sending: ", detail);
        break;
    case EID_OUTCOME_TOO_BIG:
        eid__setf(r->message, sizeof r->message, "response larger than %zu bytes",
                  k->c->max_response);
        break;
    case EID_OUTCOME_RECV_NOMEM:
        eid__setf(r->message, sizeof r->message, "out of memory receiving the response");
        break;
    case EID_OUTCOME_TRUNCATED:
        eid__setf(r->message, sizeof r->message, "truncated body: %s; %zu bytes received", detail,
                  k->resp.len);
        break;
    default: eid__setf(r->message, sizeof r->message, "%s", detail); break;
    }
    if (v->keep_received) keep_received(r, k->resp.p, k->resp.len);
}

/* ------------------------------------------------------------ the loop */

static void list_remove(eid_client *c, call *k) {
    if (k->prev)
        k->prev->next = k->next;
    else
        c->calls = k->next;
    if (k->next) k->next->prev = k->prev;
    k->prev = k->next = NULL;
}

/* The waiting list: unfinished calls with no attempt on the wire (new, or
 * between attempts), oldest first. step() and wait_ms_at() walk it instead
 * of every unfinished call, which with a thousand on the wire made each
 * turn of the loop O(calls) twice. */
static void wait_push(eid_client *c, call *k) {
    if (k->waiting) return;
    k->waiting = 1;
    k->wnext = NULL;
    k->wprev = c->wait_tail;
    if (c->wait_tail)
        c->wait_tail->wnext = k;
    else
        c->wait_head = k;
    c->wait_tail = k;
}

static void wait_remove(eid_client *c, call *k) {
    if (!k->waiting) return;
    k->waiting = 0;
    if (k->wprev)
        k->wprev->wnext = k->wnext;
    else
        c->wait_head = k->wnext;
    if (k->wnext)
        k->wnext->wprev = k->wprev;
    else
        c->wait_tail = k->wprev;
    k->wprev = k->wnext = NULL;
}

static void log_event(eid_client *c, call *k, const char *level, const char *what, double dur,
                      double delay) {
    if (c->logger == NULL) return;
    eid_client_event ev = {
        .level = level,
        .event = what,
        .action = k->action,
        .trace_id = k->res->trace_id,
        .attempts = k->res->attempts,
        .duration = dur,
        .code = k->res->code,
        .http_status = k->res->http_status,
        .request_id = k->res->request_id,
        .retry_delay = delay,
        .skew = c->skew,
    };
    c->logger(c->logger_ud, &ev);
}

static void undelay(eid_client *c, call *k) {
    if (k->delayed) {
        k->delayed = 0;
        c->n_delayed--;
    }
}

static void finish(eid_client *c, call *k) {
    k->res->elapsed = mono_now() - k->start;
    if (k->easy) {
        easy_put(c, k->easy);
        k->easy = NULL;
    }
    OPENSSL_cleanse(k->hdrtext, k->hdr_used);
    k->hdr_used = 0;
    free(k->resp.p);
    k->resp.p = NULL;
    k->resp.len = k->resp.cap = 0;
    undelay(c, k);
    wait_remove(c, k);
    list_remove(c, k);
    c->n_unfinished--;
    c->finished_count++;
    k->finished = 1;
    if (!k->sync) {
        if (c->done_tail)
            c->done_tail->done_next = k;
        else
            c->done_head = k;
        c->done_tail = k;
    }
}

static void fail_local(eid_client *c, call *k, eid_status st, const char *code, const char *msg) {
    k->res->status = st;
    eid__setf(k->res->code, sizeof k->res->code, "%s", code);
    eid__setf(k->res->message, sizeof k->res->message, "%s", msg);
    k->res->retryable = 0;
    finish(c, k);
}

/* Sign and put the call on the wire. On failure the call is finished. */
static void start_attempt(eid_client *c, call *k, double now) {
    undelay(c, k);
    double left = k->deadline - now;
    if (left <= 0.001) {
        if (k->res->attempts == 0)
            fail_local(c, k, EID_E_CLIENT_TRANSPORT, eid__outcome_code(EID_OUTCOME_TIMEOUT),
                       "deadline reached before sending");
        else
            finish(c, k);
        return;
    }
    if (k->easy == NULL) k->easy = easy_get(c);
    if (k->easy == NULL) {
        fail_local(c, k, EID_E_NOMEM, eid_status_code(EID_E_NOMEM), "cannot create a curl handle");
        return;
    }
    if (c->secret_id == NULL) {
        fail_local(c, k, EID_E_INVALID_ARG, "credentials", "no credentials set on the client");
        return;
    }
    eid_sign_request req = {
        .secret_id = c->secret_id,
        .secret_key = c->secret_key,
        .secret_key_len = c->secret_key_len,
        .token = c->token,
        .host = c->host,
        .service = c->service,
        .action = k->action,
        .version = c->version,
        .region = c->region,
        .language = c->language,
        .timestamp = wall_now(c) + c->skew,
        .body = k->body,
        .body_len = k->body_len,
    };
    eid_signature sig;
    eid_error serr = {0};
    eid_status st = eid_signer_sign(c->signer, &req, &sig, &serr);
    if (st != EID_OK) {
        fail_local(c, k, st, eid_status_code(st), serr.message);
        return;
    }
    /* The header list lives in the call: nodes and text in fixed arrays,
     * the constant tail (client name, Expect, Accept, extras) in the client.
     * No allocation per attempt; the text is wiped when the call ends. */
    eid_header h[EID_HEADERS_MAX];
    size_t nh = eid_sign_headers(&req, &sig, h);
    size_t used = 0, n = 0;
    int bad = 0;
    for (size_t i = 0; i <= nh && !bad; i++) {
        const char *name = i < nh ? h[i].name : "X-TC-TraceId";
        const char *value = i < nh ? h[i].value : k->res->trace_id;
        if (i == nh && c->has_trace) break;
        size_t a = strlen(name), b = strlen(value);
        if (used + a + b + 3 > sizeof k->hdrtext) {
            bad = 1;
            break;
        }
        char *line = k->hdrtext + used;
        memcpy(line, name, a);
        line[a] = ':';
        line[a + 1] = ' ';
        memcpy(line + a + 2, value, b + 1);
        used += a + b + 3;
        k->nodes[n].data = line;
        k->nodes[n].next = NULL;
        if (n > 0) k->nodes[n - 1].next = &k->nodes[n];
        n++;
    }
    OPENSSL_cleanse(&sig, sizeof sig);
    if (bad) {
        OPENSSL_cleanse(k->hdrtext, used);
        fail_local(c, k, EID_E_INVALID_ARG, "invalid", "headers longer than 8 KiB");
        return;
    }
    k->nodes[n - 1].next = c->tail;
    k->hdr_used = used;
    struct curl_slist *list = &k->nodes[0];
    long total = (long)(left * 1000);
    if (total > c->timeout_ms) total = c->timeout_ms;
    if (total < 1) total = 1;
    long conn = c->connect_timeout_ms < total ? c->connect_timeout_ms : total;
    CURL *e = k->easy;
    k->resp.len = 0;
    k->too_big = 0;
    k->date[0] = '\0';
    k->errbuf[0] = '\0';
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, list);
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, (long)k->body_len);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, k->body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, k);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, k);
    curl_easy_setopt(e, CURLOPT_PRIVATE, k);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, k->errbuf);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, total);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, conn);
    /* libcurl resends a request on its own when a reused keep-alive
     * connection dies before any reply; for GetEidToken that would mint a
     * token behind the attempt count (and the ledger's back). A call that is
     * not a read gets a connection of its own, which curl never resends on:
     * one handshake (TLS sessions are resumed from the share) per token. */
    curl_easy_setopt(e, CURLOPT_FRESH_CONNECT, eid_client_is_read(k->action) ? 0L : 1L);
    /* The least busy lane: it is the likeliest to hold an idle connection. */
    int best = 0;
    for (int i = 1; i < c->n_lanes; i++)
        if (c->lanes[i].active < c->lanes[best].active) best = i;
    if (curl_multi_add_handle(c->lanes[best].multi, e) != CURLM_OK) {
        fail_local(c, k, EID_E_NOMEM, eid_status_code(EID_E_NOMEM), "cannot add the transfer");
        return;
    }
    k->lane = best;
    c->lanes[best].active++;
    wait_remove(c, k);
    k->in_multi = 1;
    k->attempt_start = now;
    k->res->attempts++;
    c->n_active++;
    c->requests++;
}

/* One attempt ended: decide between finishing and another attempt. */
static void on_done(eid_client *c, call *k, CURLcode rc, double now) {
    long nc = 0;
    curl_easy_getinfo(k->easy, CURLINFO_NUM_CONNECTS, &nc);
    c->connects += (uint64_t)(nc > 0 ? nc : 0);
    curl_multi_remove_handle(c->lanes[k->lane].multi, k->easy);
    c->lanes[k->lane].active--;
    k->in_multi = 0;
    c->n_active--;
    wait_push(c, k); /* another attempt, unless finish() takes it off again */
    eid_retry_facts f;
    eid_retry_verdict v;
    classify(k, rc, now, &f, &v);
    eid_result *r = k->res;
    if (v.sent) r->sent = 1;
    double dur = now - k->attempt_start;

    /* Clock skew: adopt the server's clock from Date, re-sign, once. */
    if (v.adopt_skew) {
        k->skew_retried = 1;
        c->skew = v.skew;
        log_event(c, k, "warn", "skew", dur, 0);
        if (v.resign) {
            k->not_before = now;
            return;
        }
    }

    r->retryable = v.retryable;
    double delay = v.delay;
    if (v.ask_policy && c->retry) {
        eid_retry_info info = {
            .action = k->action,
            .code = r->code,
            .http_status = r->http_status,
            .attempts = r->attempts,
            .retryable = r->retryable,
            .sent = v.sent,
            .default_delay = v.default_delay,
            .remaining = f.remaining,
        };
        delay = eid_retry_delay(&f, c->retry(c->retry_ud, &info));
    }
    log_event(c, k, r->status == EID_OK ? "info" : "warn", "attempt", dur, delay);
    if (delay < 0) {
        finish(c, k);
        return;
    }
    k->not_before = now + delay;
    if (delay > 0 && !k->delayed) {
        k->delayed = 1;
        c->n_delayed++;
    }
}

/* libcurl tells us which sockets to watch (CURLMOPT_SOCKETFUNCTION) and
 * when to call it back (CURLMOPT_TIMERFUNCTION); we watch them with epoll
 * and hand curl only the sockets that are ready (curl_multi_socket_action).
 * curl_multi_perform would walk every transfer on each wake-up, which is
 * quadratic with 1,000 calls in flight. */
static int on_socket(CURL *e, curl_socket_t s, int what, void *ud, void *sockp) {
    lane *ln = ud;
    eid_client *c = ln->c;
    (void)e;
    sock_state *st = sock_peek(c, s);
    if (st && !st->ours) st = NULL; /* not one of ours: added and deleted each time */
    if (what == CURL_POLL_REMOVE) {
        if (st && st->in_set)
            set_idle(c, st, 1);
        else
            epoll_ctl(c->epfd, EPOLL_CTL_DEL, s, NULL);
        curl_multi_assign(ln->multi, s, NULL);
        return 0;
    }
    struct epoll_event ev = {0};
    ev.events = (what & CURL_POLL_IN ? EPOLLIN : 0u) | (what & CURL_POLL_OUT ? EPOLLOUT : 0u);
    /* The lane in the high half: its multi is the one to tell. */
    uint32_t lane_ix = (uint32_t)(ln - c->lanes);
    ev.data.u64 = (uint64_t)lane_ix << 32 | (uint32_t)s;
    if (sockp == NULL) curl_multi_assign(ln->multi, s, ln);
    if (st && st->in_set && st->events == ev.events && st->lane == lane_ix) {
        set_idle(c, st, 0); /* already there, as wanted */
        return 0;
    }
    int rc;
    if ((st && st->in_set) || sockp != NULL) {
        if ((rc = epoll_ctl(c->epfd, EPOLL_CTL_MOD, s, &ev)) != 0 && errno == ENOENT)
            rc = epoll_ctl(c->epfd, EPOLL_CTL_ADD, s, &ev);
    } else if ((rc = epoll_ctl(c->epfd, EPOLL_CTL_ADD, s, &ev)) != 0 && errno == EEXIST) {
        rc = epoll_ctl(c->epfd, EPOLL_CTL_MOD, s, &ev);
    }
    if (st) {
        set_idle(c, st, 0);
        *st = (sock_state){.events = ev.events, .lane = lane_ix, .ours = 1, .in_set = rc == 0};
    }
    return 0;
}

static int on_timer(CURLM *m, long timeout_ms, void *ud) {
    lane *ln = ud;
    (void)m;
    ln->timer_at = timeout_ms < 0 ? -1 : mono_now() + (double)timeout_ms / 1000.0;
    return 0;
}

static void drain_lane(eid_client *c, lane *ln) {
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(ln->multi, &left)) != NULL) {
        if (m->msg != CURLMSG_DONE) continue;
        call *k = NULL;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&k);
        CURLcode rc = m->data.result;
        if (k) on_done(c, k, rc, mono_now());
    }
}

static void drain(eid_client *c) {
    for (int i = 0; i < c->n_lanes; i++)
        drain_lane(c, &c->lanes[i]);
}

/* CURL_SOCKET_TIMEOUT to every lane whose timer is due (all: force). */
static void fire_timers(eid_client *c, int force) {
    int running = 0;
    for (int i = 0; i < c->n_lanes; i++) {
        lane *ln = &c->lanes[i];
        if (force || (ln->timer_at >= 0 && ln->timer_at <= mono_now())) {
            ln->timer_at = -1;
            curl_multi_socket_action(ln->multi, CURL_SOCKET_TIMEOUT, 0, &running);
        }
    }
}

/* End an attempt that libcurl never finished, past its call's deadline. */
static void stalled(eid_client *c, call *k) {
    curl_multi_remove_handle(c->lanes[k->lane].multi, k->easy);
    c->lanes[k->lane].active--;
    curl_easy_cleanup(k->easy); /* its state is unknown: not back to the pool */
    k->easy = NULL;
    k->in_multi = 0;
    c->n_active--;
    eid_result *r = k->res;
    r->status = EID_E_CLIENT_TRANSPORT;
    eid__setf(r->code, sizeof r->code, "%s", eid__outcome_code(EID_OUTCOME_TIMEOUT));
    eid__setf(r->message, sizeof r->message, "deadline reached: the transfer stalled");
    r->retryable = 1;
    finish(c, k);
}

/* How long the loop may sleep from now (ms): until curl's timer, a waiting
 * call's start, or the safety net below, whichever is first. */
static long wait_ms_at(const eid_client *c, double now) {
    long w = c->n_active > 0 ? 250 : 1000;
    for (int i = 0; i < c->n_lanes; i++) {
        if (c->lanes[i].timer_at < 0) continue;
        double d = (c->lanes[i].timer_at - now) * 1000;
        if (d < (double)w) w = d <= 0 ? 0 : (long)d + 1;
    }
    /* With every slot taken only a retry waiting out its backoff can make
     * the wait shorter: without one, skip the walk over the queued calls
     * (it made each wake-up O(calls) in a batch of thousands). */
    if (c->n_unfinished > c->n_active && (c->n_active < c->max_in_flight || c->n_delayed > 0)) {
        int can_start = c->n_active < c->max_in_flight;
        for (const call *k = c->wait_head; k; k = k->wnext)
            if (can_start || k->not_before > now) {
                double d = (k->not_before - now) * 1000;
                if (d < w) w = d <= 0 ? 0 : (long)d + 1;
            }
    }
    return w;
}

/* Start what is due, fire curl's timer, handle completions. Returns the
 * number of calls that finished; *wait_ms gets how long the loop may sleep. */
static unsigned long step(eid_client *c, long *wait_ms) {
    unsigned long before = c->finished_count;
    double now = mono_now();
    if (c->n_unfinished > c->n_active) {
        for (call *k = c->wait_head, *nx; k && c->n_active < c->max_in_flight; k = nx) {
            nx = k->wnext;
            if (k->not_before <= now) start_attempt(c, k, now);
        }
    }
    fire_timers(c, 0);
    drain(c);
    now = mono_now();
    /* A safety net under libcurl's timers, four times a second while
     * transfers run: let curl check its timeouts, and end any attempt that
     * overran its call's deadline (a timer can be lost when an allocation
     * fails inside libcurl; the allocation-failure sweep found it). */
    if (c->n_active > 0 && now - c->last_watch >= 0.25) {
        c->last_watch = now;
        fire_timers(c, 1);
        drain(c);
        for (call *k = c->calls, *nx; k; k = nx) {
            nx = k->next;
            if (k->in_multi && now > k->deadline + 0.1) stalled(c, k);
        }
        now = mono_now();
    }
    *wait_ms = wait_ms_at(c, now);
    return c->finished_count - before;
}

/* Hand curl the sockets epoll found ready, except idle ones (see
 * sock_state), which leave the set. */
static void on_ready(eid_client *c, const struct epoll_event *evs, int n) {
    int running = 0;
    for (int i = 0; i < n; i++) {
        curl_socket_t fd = (curl_socket_t)(uint32_t)evs[i].data.u64;
        sock_state *st = sock_peek(c, fd);
        if (st && st->ours && st->idle) { /* ready while curl does not watch it: closed */
            epoll_ctl(c->epfd, EPOLL_CTL_DEL, fd, NULL);
            set_idle(c, st, 0);
            st->in_set = 0;
            continue;
        }
        int flags = (evs[i].events & EPOLLIN ? CURL_CSELECT_IN : 0) |
                    (evs[i].events & EPOLLOUT ? CURL_CSELECT_OUT : 0) |
                    (evs[i].events & (EPOLLERR | EPOLLHUP) ? CURL_CSELECT_ERR : 0);
        lane *ln = &c->lanes[evs[i].data.u64 >> 32];
        curl_multi_socket_action(ln->multi, fd, flags, &running);
    }
    if (n > 0) drain(c);
}

size_t eid_client_perform(eid_client *c, long timeout_ms) {
    if (c == NULL) return 0;
    double end = mono_now() + (double)(timeout_ms > 0 ? timeout_ms : 0) / 1000.0;
    struct epoll_event evs[256];
    int polled = 0; /* the sockets were looked at once: perform(0) reads what is ready */
    for (;;) {
        long w;
        if (step(c, &w) > 0) break;
        if (c->n_unfinished == 0) {
            /* Nothing to wait for, but a kept connection the server closed
             * makes the set readable (the host woke for it): let it go. */
            if (c->n_idle > 0)
                on_ready(c, evs, epoll_wait(c->epfd, evs, (int)(sizeof evs / sizeof *evs), 0));
            break;
        }
        double left = (end - mono_now()) * 1000;
        if (left <= 0 && w > 0 && polled) break;
        polled = 1;
        if (w > left) w = left > 0 ? (long)left + 1 : 0;
        on_ready(c, evs, epoll_wait(c->epfd, evs, (int)(sizeof evs / sizeof *evs), (int)w));
    }
    return c->n_unfinished;
}

void eid_trace_id(const unsigned char seed[16], uint64_t counter, char out[EID_TRACE_ID_MAX]) {
    static const char hex[] = "0123456789abcdef";
    unsigned char u[16];
    memcpy(u, seed, sizeof u);
    uint64_t n = counter, carry = 0;
    for (int i = 15; i >= 8; i--) {
        uint64_t v = (uint64_t)u[i] + (n & 0xff) + carry;
        u[i] = (unsigned char)v;
        carry = v >> 8;
        n >>= 8;
    }
    u[6] = (unsigned char)((u[6] & 0x0f) | 0x40);
    u[8] = (unsigned char)((u[8] & 0x3f) | 0x80);
    char *o = out;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10) *o++ = '-';
        *o++ = hex[u[i] >> 4];
        *o++ = hex[u[i] & 15];
    }
    *o = '\0';
}

eid_status eid_client_check_call(const char *action, const void *body, size_t body_len,
                                 eid_error *err) {
    size_t al = action ? strlen(action) : 0;
    if (al == 0 || al > EID_FIELD_MAX)
        return eid__fail(err, EID_E_INVALID_ARG, "action", "must be 1..%d bytes", EID_FIELD_MAX);
    for (size_t i = 0; i < al; i++) {
        char ch = action[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9')))
            return eid__fail(err, EID_E_INVALID_ARG, "action", "must be letters and digits");
    }
    if (body == NULL && body_len > 0)
        return eid__fail(err, EID_E_INVALID_ARG, "body", "NULL with a non-zero length");
    if (body_len > (size_t)10 << 20)
        return eid__fail(err, EID_E_INVALID_ARG, "body", "larger than 10 MB");
    return EID_OK;
}

static eid_status new_call(eid_client *c, const char *action, const void *body, size_t body_len,
                           void *ud, int sync, call **out, eid_error *err) {
    if (c == NULL) return eid__fail(err, EID_E_INVALID_ARG, "client", "must not be NULL");
    eid_status st = eid_client_check_call(action, body, body_len, err);
    if (st != EID_OK) return st;
    call *k = c->spare;
    if (k != NULL) {
        c->spare = k->next;
        c->n_spare--;
        memset(k, 0, CALL_ZEROED);
    } else if ((k = calloc(1, sizeof *k)) == NULL) {
        return eid__fail(err, EID_E_NOMEM, "", "out of memory");
    }
    k->res = calloc(1, sizeof *k->res);
    k->body = malloc(body_len + 1);
    if (k->res == NULL || k->body == NULL) {
        call_free(k);
        return eid__fail(err, EID_E_NOMEM, "", "out of memory");
    }
    if (body_len) memcpy(k->body, body, body_len);
    k->body[body_len] = '\0';
    k->body_len = body_len;
    memcpy(k->action, action, strlen(action) + 1);
    if (c->has_trace)
        memcpy(k->res->trace_id, c->fixed_trace, sizeof k->res->trace_id);
    else
        eid_trace_id(c->trace_seed, ++c->trace_counter, k->res->trace_id);
    k->c = c;
    k->ud = ud;
    k->sync = sync;
    k->start = k->not_before = mono_now();
    k->deadline = k->start + (double)c->deadline_ms / 1000.0;
    k->next = c->calls;
    if (c->calls) c->calls->prev = k;
    c->calls = k;
    wait_push(c, k);
    c->n_unfinished++;
    *out = k;
    return EID_OK;
}

eid_status eid_client_submit(eid_client *c, const char *action, const void *body, size_t body_len,
                             void *ud, eid_error *err) {
    call *k;
    return new_call(c, action, body, body_len, ud, 0, &k, err);
}

eid_status eid_client_call(eid_client *c, const char *action, const void *body, size_t body_len,
                           eid_result **out, eid_error *err) {
    if (out == NULL) return eid__fail(err, EID_E_INVALID_ARG, "out", "must not be NULL");
    *out = NULL;
    call *k;
    eid_status st = new_call(c, action, body, body_len, NULL, 1, &k, err);
    if (st != EID_OK) return st;
    while (!k->finished)
        eid_client_perform(c, 1000);
    *out = k->res;
    k->res = NULL;
    call_release(c, k);
    return (*out)->status;
}

int eid_client_next(eid_client *c, void **ud, eid_result **out) {
    if (c == NULL || c->done_head == NULL) return 0;
    call *k = c->done_head;
    c->done_head = k->done_next;
    if (c->done_head == NULL) c->done_tail = NULL;
    if (ud) *ud = k->ud;
    if (out) {
        *out = k->res;
        k->res = NULL;
    }
    call_release(c, k);
    return 1;
}
