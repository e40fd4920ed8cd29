/*
 * The eidkit program: Lua 5.4 with eidkit.core preloaded and eidkit's Lua
 * files on the module path. Subcommands other than `run` are written in Lua
 * (lua/eidkit/cli/); this file only sets the stage, as lua.c does.
 */
#define _POSIX_C_SOURCE 200809L

#include "eidkit/eidkit.h"

#include "../bindings/eidkit_lua.h"

#include <lualib.h>

#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef EIDKIT_BUILD_LUA_DIR
#define EIDKIT_BUILD_LUA_DIR ""
#endif
#ifndef EIDKIT_INSTALL_LUA_DIR
#define EIDKIT_INSTALL_LUA_DIR "/usr/local/share/lua/5.4"
#endif

static const char *progname = "eidkit";

static int file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* Where eidkit's own Lua files are: $EIDKIT_LUA_DIR, else next to an installed
 * binary (<prefix>/bin/../share/lua/5.4), else the source tree this binary
 * was built from, else the configured install prefix. */
static void find_lua_dir(char *out, size_t cap) {
    const char *env = getenv("EIDKIT_LUA_DIR");
    if (env && *env) {
        snprintf(out, cap, "%s", env);
        return;
    }
    char exe[PATH_MAX], probe[PATH_MAX + 64];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = '\0';
        char *slash = strrchr(exe, '/');
        if (slash) {
            *slash = '\0';
            snprintf(probe, sizeof probe, "%s/../share/lua/5.4/eidkit/init.lua", exe);
            int n2 = snprintf(out, cap, "%s/../share/lua/5.4", exe);
            if (file_exists(probe) && n2 > 0 && (size_t)n2 < cap) return;
        }
    }
    snprintf(probe, sizeof probe, "%s/eidkit/init.lua", EIDKIT_BUILD_LUA_DIR);
    if (EIDKIT_BUILD_LUA_DIR[0] && file_exists(probe)) {
        snprintf(out, cap, "%s", EIDKIT_BUILD_LUA_DIR);
        return;
    }
    snprintf(out, cap, "%s", EIDKIT_INSTALL_LUA_DIR);
}

/* Prepend our Lua directory to package.path; keep LUA_PATH's entries after it
 * so busted and other rocks on the system path still load. */
static void setup_paths(lua_State *L) {
    char dir[PATH_MAX];
    find_lua_dir(dir, sizeof dir);
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "path");
    lua_pushfstring(L, "%s/?.lua;%s/?/init.lua;%s", dir, dir, lua_tostring(L, -1));
    lua_setfield(L, -3, "path");
    lua_pop(L, 1);
    lua_getfield(L, -1, "preload");
    lua_pushcfunction(L, luaopen_eidkit_core);
    lua_setfield(L, -2, "eidkit.core");
    lua_pop(L, 2);
}

static int msghandler(lua_State *L) {
    const char *msg = lua_tostring(L, 1);
    if (msg == NULL) {
        if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING) return 1;
        msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    }
    luaL_traceback(L, L, msg, 1);
    return 1;
}

static int report(lua_State *L, int status) {
    if (status != LUA_OK) {
        const char *msg = lua_tostring(L, -1);
        fprintf(stderr, "%s: %s\n", progname, msg ? msg : "(no message)");
        fflush(stderr);
        lua_pop(L, 1);
    }
    return status;
}

static lua_State *globalL;

/* As lua.c: on Ctrl-C, make the running script raise instead of dying with
 * its files half written. */
static void lstop(lua_State *L, lua_Debug *ar) {
    (void)ar;
    lua_sethook(L, NULL, 0, 0);
    luaL_error(L, "interrupted!");
}

static void laction(int sig) {
    signal(sig, SIG_DFL);
    lua_sethook(globalL, lstop, LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1);
}

static int docall(lua_State *L, int narg, int nres) {
    int base = lua_gettop(L) - narg;
    lua_pushcfunction(L, msghandler);
    lua_insert(L, base);
    globalL = L;
    signal(SIGINT, laction);
    int status = lua_pcall(L, narg, nres, base);
    signal(SIGINT, SIG_DFL);
    lua_remove(L, base);
    return status;
}

/* The global `arg`, built as lua.c builds it: script at 0, its arguments at
 * 1.., everything before it at negative indices. */
static void create_arg_table(lua_State *L, char **argv, int argc, int script) {
    lua_createtable(L, argc - script - 1, script + 1);
    for (int i = 0; i < argc; i++) {
        lua_pushstring(L, argv[i]);
        lua_rawseti(L, -2, i - script);
    }
    lua_setglobal(L, "arg");
}

static int run_script(lua_State *L, char **argv, int argc, int script) {
    create_arg_table(L, argv, argc, script);
    const char *fname = argv[script];
    if (strcmp(fname, "-") == 0) fname = NULL; /* stdin */
    /* Text only: a precompiled chunk can crash the VM by design. */
    int status = luaL_loadfilex(L, fname, "t");
    if (status == LUA_OK) {
        int n = argc - script - 1;
        luaL_checkstack(L, n + 3, "too many arguments to script");
        for (int i = script + 1; i < argc; i++)
            lua_pushstring(L, argv[i]);
        status = docall(L, n, 0);
    }
    return report(L, status) == LUA_OK ? EXIT_SUCCESS : EXIT_FAILURE;
}

/* Hand a subcommand to lua/eidkit/cli/init.lua: cli.main(cmd, args) -> code. */
static int run_cli(lua_State *L, char **argv, int argc, int first) {
    create_arg_table(L, argv, argc, 0);
    lua_getglobal(L, "require");
    lua_pushliteral(L, "eidkit.cli");
    int status = docall(L, 1, 1);
    if (status != LUA_OK) return report(L, status), EXIT_FAILURE;
    lua_getfield(L, -1, "main");
    lua_createtable(L, argc - first, 0);
    for (int i = first; i < argc; i++) {
        lua_pushstring(L, argv[i]);
        lua_rawseti(L, -2, i - first + 1);
    }
    status = docall(L, 1, 1);
    if (status != LUA_OK) return report(L, status), EXIT_FAILURE;
    int code = (int)luaL_optinteger(L, -1, 0);
    return code;
}

int main(int argc, char **argv) {
    lua_State *L = luaL_newstate();
    if (L == NULL) {
        fprintf(stderr, "%s: cannot create Lua state: not enough memory\n", progname);
        return EXIT_FAILURE;
    }
    luaL_openlibs(L);
    setup_paths(L);

    int code;
    const char *cmd = argc > 1 ? argv[1] : "";
    if (argc < 2) {
        code = run_cli(L, argv, argc, 1); /* prints the usage */
    } else if (strcmp(cmd, "run") == 0) {
        if (argc < 3) {
            fprintf(stderr, "%s run: missing SCRIPT (use - for standard input)\n", progname);
            code = 2;
        } else {
            code = run_script(L, argv, argc, 2);
        }
    } else if (strcmp(cmd, "-") == 0 || strchr(cmd, '/') != NULL || file_exists(cmd)) {
        /* Interpreter style, as `busted --lua=eidkit` invokes it. */
        code = run_script(L, argv, argc, 1);
    } else {
        code = run_cli(L, argv, argc, 1); /* sign, version, help, --help, or unknown */
    }
    lua_close(L);
    return code;
}
