/*
 * eidkit.Poller: one wait over several descriptors and signals, for a host
 * that drives several event sources from the Lua thread (eidkit serve: the
 * HTTP servers, the API client, the ledger's worker pool).
 *
 *   local p = core.poller()
 *   p:add(srv:fd())  p:add(client:fd())  p:remove(fd)
 *   p:signals({ "TERM", "INT", "HUP" }, { "PIPE" })  -- watched; ignored
 *   local n = p:wait(timeout_ms)   -- ready descriptors (0: timeout or EINTR); -1 waits
 *   local name = p:signal()        -- "TERM", ... or nil: one pending signal
 *                                  --   (once a wait has seen it arrive)
 *   p:close()                      -- idempotent; also __gc and __close
 *
 * An epoll set, level-triggered, readable events only; the caller then asks
 * every source for its work (they are cheap to ask). Signals are read
 * through a signalfd in the same set: p:signals blocks them in the calling
 * thread, so one that arrives between a check and the wait is never lost (it
 * stays pending and makes the signalfd readable); close restores the mask
 * and the dispositions. Other threads must block them too (the ledger pool's
 * workers block every signal), or the kernel may deliver them there.
 */
#define _GNU_SOURCE

#include "eidkit_lua.h"

#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <unistd.h>

#define EIDKIT_POLLER_MT "eidkit.Poller"
#define WAIT_EVENTS      16

static const struct {
    const char *name;
    int sig;
} signal_names[] = {
    {"HUP", SIGHUP},   {"INT", SIGINT},   {"QUIT", SIGQUIT}, {"TERM", SIGTERM},
    {"USR1", SIGUSR1}, {"USR2", SIGUSR2}, {"PIPE", SIGPIPE}, {"ALRM", SIGALRM},
};
#define N_SIGNAL_NAMES (sizeof signal_names / sizeof signal_names[0])

typedef struct lpoller {
    int epfd;       /* -1 once closed */
    int sfd;        /* the signalfd, -1 without p:signals */
    int sfd_ready;  /* the last wait saw sfd readable (or no wait has yet) */
    sigset_t watch; /* the signals read through sfd */
    sigset_t old_mask;
    int ignored[N_SIGNAL_NAMES]; /* 1: set to SIG_IGN by p:signals */
    struct sigaction old_act[N_SIGNAL_NAMES];
} lpoller;

static lpoller *check_poller(lua_State *L) {
    lpoller *p = luaL_checkudata(L, 1, EIDKIT_POLLER_MT);
    if (p->epfd < 0) luaL_error(L, "attempt to use a closed " EIDKIT_POLLER_MT);
    return p;
}

static int check_fd(lua_State *L, int idx) {
    lua_Integer fd = luaL_checkinteger(L, idx);
    luaL_argcheck(L, fd >= 0 && fd <= 0x7fffffff, idx, "expected a file descriptor");
    return (int)fd;
}

static int signal_index(lua_State *L, int list, lua_Integer i) {
    lua_rawgeti(L, list, i);
    const char *name = lua_tostring(L, -1);
    if (name && strncmp(name, "SIG", 3) == 0) name += 3;
    for (size_t k = 0; name && k < N_SIGNAL_NAMES; k++)
        if (strcmp(signal_names[k].name, name) == 0) {
            lua_pop(L, 1);
            return (int)k;
        }
    return luaL_argerror(L, list,
                         lua_pushfstring(L, "unknown signal '%s'", luaL_tolstring(L, -1, NULL)));
}

/* p:add(fd): watch fd for readability. Adding it again changes nothing. */
static int l_add(lua_State *L) {
    lpoller *p = check_poller(L);
    int fd = check_fd(L, 2);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};
    if (epoll_ctl(p->epfd, EPOLL_CTL_ADD, fd, &ev) != 0 && errno != EEXIST)
        return luaL_error(L, "eidkit.Poller:add: %s", strerror(errno));
    return 0;
}

/* p:remove(fd): stop watching fd (a descriptor not watched is fine). */
static int l_remove(lua_State *L) {
    lpoller *p = check_poller(L);
    epoll_ctl(p->epfd, EPOLL_CTL_DEL, check_fd(L, 2), NULL);
    return 0;
}

/* p:wait(timeout_ms) -> the number of ready descriptors; 0 on timeout or
 * when interrupted. timeout_ms -1 (the default) waits without limit. */
static int l_wait(lua_State *L) {
    lpoller *p = check_poller(L);
    lua_Integer t = luaL_optinteger(L, 2, -1);
    luaL_argcheck(L, t >= -1 && t <= 86400000, 2, "timeout_ms: expected -1..86400000");
    struct epoll_event evs[WAIT_EVENTS];
    int n = epoll_wait(p->epfd, evs, WAIT_EVENTS, (int)t);
    if (n < 0 && errno != EINTR) return luaL_error(L, "eidkit.Poller:wait: %s", strerror(errno));
    /* p:signal reads the signalfd only after a wait that saw it readable: a
     * read of it on every turn of a busy loop was a system call for nothing
     * (it is level-triggered, so a signal not read now shows up next wait). */
    if (n >= 0 && n < WAIT_EVENTS) p->sfd_ready = 0; /* a full array may have left it out */
    for (int i = 0; i < n && p->sfd >= 0; i++)
        if (evs[i].data.fd == p->sfd) p->sfd_ready = 1;
    lua_pushinteger(L, n < 0 ? 0 : n);
    return 1;
}

static void restore_signals(lpoller *p) {
    if (p->sfd < 0) return;
    close(p->sfd);
    p->sfd = -1;
    for (size_t k = 0; k < N_SIGNAL_NAMES; k++)
        if (p->ignored[k]) {
            sigaction(signal_names[k].sig, &p->old_act[k], NULL);
            p->ignored[k] = 0;
        }
    pthread_sigmask(SIG_SETMASK, &p->old_mask, NULL);
}

/* p:signals(watched [, ignored]): block the watched signals in this thread
 * and read them through a signalfd in the set (p:signal); set the ignored
 * ones to SIG_IGN. Once per poller. */
static int l_signals(lua_State *L) {
    lpoller *p = check_poller(L);
    luaL_checktype(L, 2, LUA_TTABLE);
    if (!lua_isnoneornil(L, 3)) luaL_checktype(L, 3, LUA_TTABLE);
    if (p->sfd >= 0) return luaL_error(L, "eidkit.Poller:signals: already called");
    sigset_t set;
    sigemptyset(&set);
    for (lua_Integer i = 1; i <= (lua_Integer)lua_rawlen(L, 2); i++)
        sigaddset(&set, signal_names[signal_index(L, 2, i)].sig);
    int ignore[N_SIGNAL_NAMES] = {0};
    if (lua_istable(L, 3))
        for (lua_Integer i = 1; i <= (lua_Integer)lua_rawlen(L, 3); i++)
            ignore[signal_index(L, 3, i)] = 1;
    int sfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    if (sfd < 0) return luaL_error(L, "eidkit.Poller:signals: %s", strerror(errno));
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = sfd};
    if (epoll_ctl(p->epfd, EPOLL_CTL_ADD, sfd, &ev) != 0) {
        int e = errno;
        close(sfd);
        return luaL_error(L, "eidkit.Poller:signals: %s", strerror(e));
    }
    p->sfd = sfd;
    p->sfd_ready = 1;
    p->watch = set;
    pthread_sigmask(SIG_BLOCK, &set, &p->old_mask);
    for (size_t k = 0; k < N_SIGNAL_NAMES; k++)
        if (ignore[k]) {
            struct sigaction sa;
            memset(&sa, 0, sizeof sa);
            sa.sa_handler = SIG_IGN;
            sigemptyset(&sa.sa_mask);
            p->ignored[k] = sigaction(signal_names[k].sig, &sa, &p->old_act[k]) == 0;
        }
    return 0;
}

/* p:signal() -> the name of one pending watched signal ("TERM"), or nil;
 * one that arrived after the last wait is seen after the next. */
static int l_signal(lua_State *L) {
    lpoller *p = check_poller(L);
    if (p->sfd < 0 || !p->sfd_ready) return 0;
    struct signalfd_siginfo si;
    for (;;) {
        ssize_t n = read(p->sfd, &si, sizeof si);
        if (n == (ssize_t)sizeof si) break;
        if (n < 0 && errno == EINTR) continue;
        p->sfd_ready = 0;
        return 0; /* EAGAIN: none pending */
    }
    for (size_t k = 0; k < N_SIGNAL_NAMES; k++)
        if ((uint32_t)signal_names[k].sig == si.ssi_signo) {
            lua_pushstring(L, signal_names[k].name);
            return 1;
        }
    lua_pushinteger(L, (lua_Integer)si.ssi_signo);
    return 1;
}

static int l_close(lua_State *L) {
    lpoller *p = luaL_checkudata(L, 1, EIDKIT_POLLER_MT);
    if (p->epfd < 0) return 0;
    restore_signals(p);
    close(p->epfd);
    p->epfd = -1;
    return 0;
}

static int l_tostring(lua_State *L) {
    lpoller *p = luaL_checkudata(L, 1, EIDKIT_POLLER_MT);
    if (p->epfd < 0)
        lua_pushliteral(L, EIDKIT_POLLER_MT " (closed)");
    else
        lua_pushfstring(L, EIDKIT_POLLER_MT " (%p)", (void *)p);
    return 1;
}

/* core.poller() -> eidkit.Poller */
static int l_poller(lua_State *L) {
    lpoller *p = lua_newuserdatauv(L, sizeof *p, 0);
    memset(p, 0, sizeof *p);
    p->epfd = -1;
    p->sfd = -1;
    luaL_setmetatable(L, EIDKIT_POLLER_MT);
    p->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (p->epfd < 0) return eidkit_push_fail(L, "poller", strerror(errno));
    return 1;
}

void eidkit_open_poller(lua_State *L) {
    static const luaL_Reg methods[] = {
        {"add", l_add},       {"remove", l_remove}, {"wait", l_wait}, {"signals", l_signals},
        {"signal", l_signal}, {"close", l_close},   {NULL, NULL},
    };
    static const luaL_Reg meta[] = {
        {"__gc", l_close},
        {"__close", l_close},
        {"__tostring", l_tostring},
        {NULL, NULL},
    };
    eidkit_new_class(L, EIDKIT_POLLER_MT, meta, methods);
    lua_pop(L, 1);
    lua_pushcfunction(L, l_poller);
    lua_setfield(L, -2, "poller");
}
