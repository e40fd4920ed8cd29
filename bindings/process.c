/*
 * eidkit.Process: child processes for eidkit.testing (start `eidkit sim`,
 * signal it, wait for it) without a shell.
 *
 *   local p, err = core.spawn({ "eidkit", "sim", ... },
 *       { env = { NAME = "value", DROP = false }, clear_env = false,
 *         stdin = path, stdout = path, stderr = path, die_with_parent = false })
 *   p:pid()  p:kill("TERM")  p:wait(seconds) -> status, "exit"|"signal"
 *   p:close([grace]) -- TERM, then KILL after grace seconds, reaped; idempotent
 *
 * posix_spawn (glibc reports a failed exec as its return value, so a bad
 * program name is an ordinary nil, err; the redirections are opened before
 * spawning, so a bad path is reported as one). The child gets
 * default signal dispositions, an empty signal mask and no descriptors but
 * 0, 1 and 2. Waiting polls waitpid(WNOHANG) with a growing sleep: no
 * SIGCHLD handler is installed, so nothing else in the process is disturbed.
 * A reaped child's pid is never signalled again (it may have been reused).
 * With die_with_parent (Linux) the child is started by fork + exec instead,
 * with PR_SET_PDEATHSIG: it gets SIGTERM if this process dies unclosed.
 */
#define _GNU_SOURCE /* posix_spawn_file_actions_addclosefrom_np */

#include "eidkit_lua.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define EIDKIT_PROCESS_MT "eidkit.Process"

/* Seconds close() and __gc wait after SIGTERM before SIGKILL. */
#define DEFAULT_GRACE 2.0

extern char **environ;

typedef struct lprocess {
    pid_t pid;  /* 0 until spawned */
    int reaped; /* the status below is final; never signal pid again */
    int closed; /* close() ran: methods raise */
    int kind;   /* 'e' exited, 's' killed by a signal, '?' reaped elsewhere */
    int code;   /* exit status or signal number */
} lprocess;

static const struct {
    const char *name;
    int sig;
} signals[] = {
    {"HUP", SIGHUP},   {"INT", SIGINT},   {"QUIT", SIGQUIT}, {"KILL", SIGKILL},
    {"TERM", SIGTERM}, {"USR1", SIGUSR1}, {"USR2", SIGUSR2}, {"STOP", SIGSTOP},
    {"CONT", SIGCONT}, {"ALRM", SIGALRM}, {"PIPE", SIGPIPE}, {"ABRT", SIGABRT},
};

static const char *signal_name(int sig) {
    for (size_t i = 0; i < sizeof signals / sizeof signals[0]; i++)
        if (signals[i].sig == sig) return signals[i].name;
    return NULL;
}

static lprocess *check_process(lua_State *L, int idx) {
    lprocess *p = luaL_checkudata(L, idx, EIDKIT_PROCESS_MT);
    if (p->closed) luaL_error(L, "attempt to use a closed eidkit.Process");
    return p;
}

static void sleep_seconds(double s) {
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static double monotonic(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* One non-blocking reap attempt: 1 when the child is reaped (now or
 * before), 0 when it still runs. */
static int try_reap(lprocess *p) {
    if (p->reaped || p->pid <= 0) return 1;
    int st = 0;
    pid_t r;
    do {
        r = waitpid(p->pid, &st, WNOHANG);
    } while (r < 0 && errno == EINTR);
    if (r == 0) return 0;
    p->reaped = 1;
    if (r < 0) { /* ECHILD: SIGCHLD ignored, or reaped by someone else */
        p->kind = '?';
        p->code = 0;
    } else if (WIFSIGNALED(st)) {
        p->kind = 's';
        p->code = WTERMSIG(st);
    } else {
        p->kind = 'e';
        p->code = WIFEXITED(st) ? WEXITSTATUS(st) : 0;
    }
    return 1;
}

/* Wait up to timeout seconds (negative: forever); 1 when reaped. The sleep
 * grows from 1 ms to 20 ms, so a quick child is seen quickly. */
static int reap_within(lprocess *p, double timeout) {
    double until = monotonic() + timeout, nap = 0.001;
    while (!try_reap(p)) {
        if (timeout >= 0) {
            double left = until - monotonic();
            if (left <= 0) return 0;
            if (nap > left) nap = left;
        }
        sleep_seconds(nap);
        if (nap < 0.02) nap *= 2;
    }
    return 1;
}

/* status, "exit"|"signal" (or nil, err when reaped by someone else). */
static int push_status(lua_State *L, const lprocess *p) {
    if (p->kind == '?')
        return eidkit_push_fail(L, "unknown_status",
                                "the child was reaped elsewhere (is SIGCHLD ignored?)");
    lua_pushinteger(L, p->code);
    lua_pushstring(L, p->kind == 's' ? "signal" : "exit");
    return 2;
}

/* TERM, up to grace seconds, KILL, reap. Never raises. */
static void terminate(lprocess *p, double grace) {
    if (p->pid <= 0 || try_reap(p)) return;
    kill(p->pid, SIGTERM);
    if (reap_within(p, grace)) return;
    kill(p->pid, SIGKILL);
    reap_within(p, -1);
}

static int check_signal(lua_State *L, int idx) {
    if (lua_type(L, idx) == LUA_TNUMBER) {
        int isnum = 0;
        lua_Integer n = lua_tointegerx(L, idx, &isnum);
        if (!isnum || n < 0 || n >= NSIG) luaL_argerror(L, idx, "expected a signal number");
        return (int)n;
    }
    const char *name = luaL_optstring(L, idx, "TERM");
    if (strncmp(name, "SIG", 3) == 0) name += 3;
    for (size_t i = 0; i < sizeof signals / sizeof signals[0]; i++)
        if (strcmp(signals[i].name, name) == 0) return signals[i].sig;
    return luaL_argerror(L, idx, lua_pushfstring(L, "unknown signal '%s'", name));
}

/* A non-negative number of seconds, or dflt when absent (nil). */
static double opt_seconds(lua_State *L, int idx, double dflt, const char *what) {
    if (lua_isnoneornil(L, idx)) return dflt;
    lua_Number s = luaL_checknumber(L, idx);
    if (!(s >= 0 && s <= 86400)) luaL_argerror(L, idx, what);
    return (double)s;
}

static int l_pid(lua_State *L) {
    lua_pushinteger(L, check_process(L, 1)->pid);
    return 1;
}

/* p:kill([signal]) -> true | nil, err (code "exited" once reaped). */
static int l_kill(lua_State *L) {
    lprocess *p = check_process(L, 1);
    int sig = check_signal(L, 2);
    if (try_reap(p)) return eidkit_push_fail(L, "exited", "the process has already exited");
    if (kill(p->pid, sig) != 0) return eidkit_push_fail(L, "kill", strerror(errno));
    lua_pushboolean(L, 1);
    return 1;
}

/* p:wait([timeout]) -> status, "exit"|"signal" | nil, err (code "timeout").
 * Without a timeout it waits as long as it takes. */
static int l_wait(lua_State *L) {
    lprocess *p = check_process(L, 1);
    double timeout = opt_seconds(L, 2, -1, "timeout: expected 0..86400 seconds");
    if (!reap_within(p, timeout)) {
        int n = eidkit_push_fail(L, "timeout", "the process is still running");
        lua_pushboolean(L, 1);
        lua_setfield(L, -2, "retryable");
        return n;
    }
    return push_status(L, p);
}

/* p:running() -> boolean, without waiting. */
static int l_running(lua_State *L) {
    lua_pushboolean(L, !try_reap(check_process(L, 1)));
    return 1;
}

/* p:close([grace]) -> status, kind: TERM, KILL after grace seconds, reap.
 * Idempotent; __gc and __close do the same with the default grace. */
static int l_close(lua_State *L) {
    lprocess *p = luaL_checkudata(L, 1, EIDKIT_PROCESS_MT);
    double grace = opt_seconds(L, 2, DEFAULT_GRACE, "grace: expected 0..86400 seconds");
    if (!p->closed) {
        terminate(p, grace);
        p->closed = 1;
    }
    if (p->pid <= 0) return 0;
    return push_status(L, p);
}

/* __gc, and __close (whose second argument is an error object, not a grace). */
static int l_gc(lua_State *L) {
    lprocess *p = luaL_checkudata(L, 1, EIDKIT_PROCESS_MT);
    if (!p->closed) terminate(p, DEFAULT_GRACE);
    p->closed = 1;
    return 0;
}

static int l_tostring(lua_State *L) {
    lprocess *p = luaL_checkudata(L, 1, EIDKIT_PROCESS_MT);
    const char *state = p->closed ? "closed" : "running";
    if (!p->closed && try_reap(p)) state = "exited";
    if (p->reaped && p->kind == 's') {
        const char *name = signal_name(p->code);
        if (name)
            lua_pushfstring(L, "eidkit.Process (pid %d, %s, SIG%s)", (int)p->pid, state, name);
        else
            lua_pushfstring(L, "eidkit.Process (pid %d, %s, signal %d)", (int)p->pid, state,
                            p->code);
    } else if (p->reaped && p->kind == 'e') {
        lua_pushfstring(L, "eidkit.Process (pid %d, %s, status %d)", (int)p->pid, state, p->code);
    } else {
        lua_pushfstring(L, "eidkit.Process (pid %d, %s)", (int)p->pid, state);
    }
    return 1;
}

/* A string without NUL bytes, from t[key] (argument arg); NULL when nil. */
static const char *opt_path(lua_State *L, int t, const char *key, int arg) {
    int type = lua_getfield(L, t, key);
    const char *s = NULL;
    if (type == LUA_TSTRING) {
        size_t len;
        s = lua_tolstring(L, -1, &len);
        if (len == 0 || strlen(s) != len)
            luaL_argerror(L, arg, lua_pushfstring(L, "%s: expected a file path", key));
    } else if (type != LUA_TNIL) {
        luaL_argerror(
            L, arg,
            lua_pushfstring(L, "%s: expected a file path, got %s", key, lua_typename(L, type)));
    }
    lua_pop(L, 1); /* the options table keeps the string alive */
    return s;
}

/* argv[1..n] as a NULL-terminated array in a userdata at the stack top. */
static char **build_argv(lua_State *L, int t) {
    lua_Integer n = luaL_len(L, t);
    if (n < 1) luaL_argerror(L, 1, "argv: expected a non-empty list of strings");
    if (n > 65536) luaL_argerror(L, 1, "argv: too many arguments");
    char **argv = lua_newuserdatauv(L, sizeof *argv * (size_t)(n + 1), 0);
    for (lua_Integer i = 1; i <= n; i++) {
        size_t len;
        if (lua_rawgeti(L, t, i) != LUA_TSTRING)
            luaL_argerror(L, 1,
                          lua_pushfstring(L, "argv[%d]: expected string, got %s", (int)i,
                                          luaL_typename(L, -1)));
        const char *s = lua_tolstring(L, -1, &len);
        if (strlen(s) != len)
            luaL_argerror(L, 1, lua_pushfstring(L, "argv[%d]: contains a NUL byte", (int)i));
        argv[i - 1] = (char *)s; /* the argv table keeps it alive */
        lua_pop(L, 1);
    }
    argv[n] = NULL;
    if (argv[0][0] == '\0') luaL_argerror(L, 1, "argv[1]: expected a program name");
    return argv;
}

/* The child's environment: the inherited one (unless clear_env), minus the
 * names env maps to false, plus env's string values. A userdata array
 * pointing into strings kept in a table, both left on the stack. */
static char **build_env(lua_State *L, int opts) {
    int clear = 0, env = 0;
    if (opts) {
        lua_getfield(L, opts, "clear_env");
        clear = lua_toboolean(L, -1);
        lua_pop(L, 1);
        if (lua_getfield(L, opts, "env") == LUA_TTABLE) {
            env = lua_gettop(L);
        } else if (!lua_isnil(L, -1)) {
            luaL_argerror(L, 2, "env: expected a table {NAME = value | false}");
        } else {
            lua_pop(L, 1);
        }
    }
    if (!clear && !env) {
        lua_pushnil(L); /* keep the stack shape: keeper table, array */
        lua_pushnil(L);
        return environ;
    }
    lua_newtable(L); /* keeper: the "NAME=value" strings */
    int keep = lua_gettop(L);
    lua_Integer n = 0;
    if (env) {
        lua_pushnil(L);
        while (lua_next(L, env)) {
            size_t klen, vlen;
            if (lua_type(L, -2) != LUA_TSTRING) luaL_argerror(L, 2, "env: names must be strings");
            const char *k = lua_tolstring(L, -2, &klen);
            if (klen == 0 || strlen(k) != klen || strchr(k, '='))
                luaL_argerror(L, 2, lua_pushfstring(L, "env: bad variable name '%s'", k));
            if (lua_type(L, -1) == LUA_TSTRING) {
                const char *v = lua_tolstring(L, -1, &vlen);
                if (strlen(v) != vlen)
                    luaL_argerror(L, 2, lua_pushfstring(L, "env.%s: contains a NUL byte", k));
                lua_pushfstring(L, "%s=%s", k, v);
                lua_rawseti(L, keep, ++n);
            } else if (!(lua_type(L, -1) == LUA_TBOOLEAN && !lua_toboolean(L, -1))) {
                luaL_argerror(L, 2, lua_pushfstring(L, "env.%s: expected a string or false", k));
            }
            lua_pop(L, 1);
        }
    }
    if (!clear) {
        for (char **e = environ; *e; e++) {
            const char *eq = strchr(*e, '=');
            if (eq == NULL) continue;
            if (env) {
                lua_pushlstring(L, *e, (size_t)(eq - *e));
                int overridden = lua_rawget(L, env) != LUA_TNIL;
                lua_pop(L, 1);
                if (overridden) continue;
            }
            lua_pushstring(L, *e);
            lua_rawseti(L, keep, ++n);
        }
    }
    char **envp = lua_newuserdatauv(L, sizeof *envp * (size_t)(n + 1), 0);
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, keep, i);
        envp[i - 1] = (char *)lua_tostring(L, -1);
        lua_pop(L, 1);
    }
    envp[n] = NULL;
    return envp;
}

/* posix_spawn with fds[i] (>= 3, or -1: inherit) as descriptor i: 0 or an
 * errno value. */
static int spawn_posix(pid_t *pid, char **argv, char **envp, const int fds[3]) {
    int rc;
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    int fa_ok = 0, attr_ok = 0;
    rc = posix_spawn_file_actions_init(&fa);
    if (rc == 0) {
        fa_ok = 1;
        rc = posix_spawnattr_init(&attr);
    }
    if (rc == 0) attr_ok = 1;
    sigset_t none, defaults;
    sigemptyset(&none);
    sigemptyset(&defaults);
    for (int s = 1; s < NSIG && s < 32; s++)
        if (s != SIGKILL && s != SIGSTOP) sigaddset(&defaults, s);
    if (rc == 0) rc = posix_spawnattr_setsigmask(&attr, &none);
    if (rc == 0) rc = posix_spawnattr_setsigdefault(&attr, &defaults);
    if (rc == 0)
        rc = posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    for (int i = 0; i < 3 && rc == 0; i++)
        if (fds[i] >= 0) rc = posix_spawn_file_actions_adddup2(&fa, fds[i], i);
#if defined(__GLIBC__) && defined(__GLIBC_PREREQ)
#if __GLIBC_PREREQ(2, 34)
    if (rc == 0) rc = posix_spawn_file_actions_addclosefrom_np(&fa, 3);
#endif
#endif
    if (rc == 0) {
        if (strchr(argv[0], '/'))
            rc = posix_spawn(pid, argv[0], &fa, &attr, argv, envp);
        else
            rc = posix_spawnp(pid, argv[0], &fa, &attr, argv, envp);
    }
    if (fa_ok) posix_spawn_file_actions_destroy(&fa);
    if (attr_ok) posix_spawnattr_destroy(&attr);
    return rc;
}

#ifdef __linux__
/* fork + exec for die_with_parent: the child gets PR_SET_PDEATHSIG(SIGTERM),
 * so it is stopped even when this process dies without closing it (a CI
 * timeout's SIGKILL). Only async-signal-safe calls between fork and exec; a
 * failed exec is reported through a close-on-exec pipe. 0 or an errno. */
static int spawn_linked(pid_t *pid, char **argv, char **envp, const int fds[3]) {
    int pipefd[2];
    if (pipe2(pipefd, O_CLOEXEC) != 0) return errno;
    long max_fd = sysconf(_SC_OPEN_MAX);
    if (max_fd < 0 || max_fd > 65536) max_fd = 65536;
    pid_t parent = getpid();
    sigset_t all, old;
    sigfillset(&all);
    sigprocmask(SIG_SETMASK, &all, &old); /* no handler runs in the child before exec */
    pid_t c = fork();
    if (c == 0) {
        struct sigaction dfl;
        memset(&dfl, 0, sizeof dfl);
        dfl.sa_handler = SIG_DFL;
        for (int s = 1; s < NSIG && s < 32; s++)
            if (s != SIGKILL && s != SIGSTOP) sigaction(s, &dfl, NULL);
        int e = 0;
        if (prctl(PR_SET_PDEATHSIG, SIGTERM) != 0) e = errno;
        if (e == 0 && getppid() != parent) _exit(127); /* the parent is already gone */
        for (int i = 0; i < 3 && e == 0; i++)
            if (fds[i] >= 0 && dup2(fds[i], i) < 0) e = errno;
        for (long fd = 3; fd < max_fd && e == 0; fd++)
            if (fd != pipefd[1]) close((int)fd);
        if (e == 0) {
            sigset_t none;
            sigemptyset(&none);
            sigprocmask(SIG_SETMASK, &none, NULL);
            if (strchr(argv[0], '/'))
                execve(argv[0], argv, envp);
            else
                execvpe(argv[0], argv, envp);
            e = errno;
        }
        ssize_t w = write(pipefd[1], &e, sizeof e);
        (void)w;
        _exit(127);
    }
    int fork_errno = errno;
    sigprocmask(SIG_SETMASK, &old, NULL);
    close(pipefd[1]);
    if (c < 0) {
        close(pipefd[0]);
        return fork_errno;
    }
    int e = 0;
    ssize_t n;
    do {
        n = read(pipefd[0], &e, sizeof e);
    } while (n < 0 && errno == EINTR);
    close(pipefd[0]);
    if (n == (ssize_t)sizeof e) { /* exec failed: reap the child now */
        while (waitpid(c, NULL, 0) < 0 && errno == EINTR) {
        }
        return e ? e : ENOEXEC;
    }
    *pid = c;
    return 0;
}
#else
static int spawn_linked(pid_t *pid, char **argv, char **envp, const int fds[3]) {
    return spawn_posix(pid, argv, envp, fds); /* no parent-death signal here */
}
#endif

/* core.spawn(argv [, opts]) -> eidkit.Process | nil, err (code "spawn").
 * A program name without '/' is looked up on PATH. */
static int l_spawn(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    int opts = 0;
    if (!lua_isnoneornil(L, 2)) {
        luaL_checktype(L, 2, LUA_TTABLE);
        opts = 2;
        lua_pushnil(L);
        while (lua_next(L, opts)) {
            static const char *const known[] = {"env",    "clear_env",       "stdin", "stdout",
                                                "stderr", "die_with_parent", NULL};
            int ok = 0;
            if (lua_type(L, -2) == LUA_TSTRING)
                for (int i = 0; known[i]; i++)
                    if (strcmp(lua_tostring(L, -2), known[i]) == 0) ok = 1;
            if (!ok)
                luaL_argerror(
                    L, 2, lua_pushfstring(L, "unknown option '%s'", luaL_tolstring(L, -2, NULL)));
            lua_pop(L, 1);
        }
    }
    lua_settop(L, 2);
    char **argv = build_argv(L, 1);
    const char *in = opts ? opt_path(L, opts, "stdin", 2) : NULL;
    const char *out = opts ? opt_path(L, opts, "stdout", 2) : NULL;
    const char *err = opts ? opt_path(L, opts, "stderr", 2) : NULL;
    char **envp = build_env(L, opts);
    int linked = 0;
    if (opts) {
        lua_getfield(L, opts, "die_with_parent");
        linked = lua_toboolean(L, -1);
        lua_pop(L, 1);
    }

    /* Created closed (pid 0), opened once the child exists. */
    lprocess *p = lua_newuserdatauv(L, sizeof *p, 0);
    memset(p, 0, sizeof *p);
    luaL_setmetatable(L, EIDKIT_PROCESS_MT);

    /* The redirections are opened here, so a bad path is named as such. */
    const char *paths[3] = {in, out, err};
    int fds[3] = {-1, -1, -1}, rc = 0;
    for (int i = 0; i < 3 && rc == 0; i++) {
        if (paths[i] == NULL) continue;
        int flags = i == 0 ? O_RDONLY : O_WRONLY | O_CREAT | O_TRUNC;
        do {
            fds[i] = open(paths[i], flags | O_CLOEXEC, 0600);
        } while (fds[i] < 0 && errno == EINTR);
        if (fds[i] < 0) rc = errno;
    }
    if (rc != 0) {
        static const char *const names[3] = {"stdin", "stdout", "stderr"};
        char msg[256];
        int i = 0;
        while (fds[i] >= 0 || paths[i] == NULL)
            i++;
        snprintf(msg, sizeof msg, "%s: %.160s: %s", names[i], paths[i], strerror(rc));
        for (int j = 0; j < 3; j++)
            if (fds[j] >= 0) close(fds[j]);
        return eidkit_push_fail(L, "spawn", msg);
    }

    /* Keep the redirections clear of 0-2, so installing one cannot clobber another. */
    for (int i = 0; i < 3 && rc == 0; i++) {
        if (fds[i] >= 0 && fds[i] < 3) {
            int moved = fcntl(fds[i], F_DUPFD_CLOEXEC, 3);
            if (moved < 0) rc = errno;
            close(fds[i]);
            fds[i] = moved;
        }
    }
    pid_t pid = 0;
    if (rc == 0)
        rc = linked ? spawn_linked(&pid, argv, envp, fds) : spawn_posix(&pid, argv, envp, fds);
    for (int i = 0; i < 3; i++)
        if (fds[i] >= 0) close(fds[i]);
    if (rc != 0) {
        char msg[256];
        snprintf(msg, sizeof msg, "cannot run '%.120s': %s", argv[0], strerror(rc));
        return eidkit_push_fail(L, "spawn", msg);
    }
    p->pid = pid;
    return 1;
}

/* core.executable() -> the path of the running program | nil, err. In the
 * eidkit host this is the eidkit binary, whatever the cwd or PATH. */
static int l_executable(lua_State *L) {
    char buf[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
    if (n <= 0) return eidkit_push_fail(L, "executable", strerror(errno));
    lua_pushlstring(L, buf, (size_t)n);
    return 1;
}

void eidkit_open_process(lua_State *L) {
    static const luaL_Reg methods[] = {
        {"pid", l_pid},         {"kill", l_kill},   {"wait", l_wait},
        {"running", l_running}, {"close", l_close}, {NULL, NULL},
    };
    static const luaL_Reg meta[] = {
        {"__gc", l_gc},
        {"__close", l_gc},
        {"__tostring", l_tostring},
        {NULL, NULL},
    };
    eidkit_new_class(L, EIDKIT_PROCESS_MT, meta, methods);
    lua_pop(L, 1);
    lua_pushcfunction(L, l_spawn);
    lua_setfield(L, -2, "spawn");
    lua_pushcfunction(L, l_executable);
    lua_setfield(L, -2, "executable");
}
