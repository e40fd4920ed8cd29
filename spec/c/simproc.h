/* `eidkit sim` as a child process for the C tests that need the simulator
 * over real sockets: started on a free loopback port (read back from
 * --port-file), stopped with SIGTERM. Header-only, like check.h. */
#ifndef EIDKIT_SIMPROC_H
#define EIDKIT_SIMPROC_H

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define SIM_SECRET_ID   "AKIDeidkitSimDemo00000000000000000000"
#define SIM_SECRET_KEY  "eidkitSimDemoSecretKey000000000"
#define SIM_MERCHANT_ID "0NSJ000000000000000000EIDKIT"

static pid_t sim_pid;
static char sim_url[64];
static char sim_port_file[96];

static void sim_sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Start `BIN sim --listen 127.0.0.1:0 [--seed SEED]` (seed < 0: none), its
 * output to /dev/null (stderr too when quiet). Sets sim_url; 0 on success. */
static int sim_start(const char *bin, const char *tag, long seed, int quiet) {
    snprintf(sim_port_file, sizeof sim_port_file, "/tmp/eidkit-%s-%ld.port", tag, (long)getpid());
    unlink(sim_port_file);
    char seed_text[24];
    snprintf(seed_text, sizeof seed_text, "%ld", seed);
    sim_pid = fork();
    if (sim_pid < 0) return -1;
    if (sim_pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGTERM); /* no stray simulator if the test is killed */
        int devnull = open("/dev/null", O_WRONLY);
        if (devnull >= 0) {
            dup2(devnull, 1);
            if (quiet) dup2(devnull, 2);
        }
        if (seed >= 0)
            execl(bin, bin, "sim", "--listen", "127.0.0.1:0", "--port-file", sim_port_file,
                  "--seed", seed_text, (char *)NULL);
        else
            execl(bin, bin, "sim", "--listen", "127.0.0.1:0", "--port-file", sim_port_file,
                  (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 500; i++) {
        FILE *f = fopen(sim_port_file, "r");
        int port = 0;
        if (f) {
            if (fscanf(f, "%d", &port) != 1) port = 0;
            fclose(f);
        }
        if (port > 0) {
            snprintf(sim_url, sizeof sim_url, "http://127.0.0.1:%d", port);
            return 0;
        }
        sim_sleep_ms(10);
    }
    return -1;
}

/* SIGTERM and wait up to 5 s; returns 0 when it exited by itself, -1 when it
 * had to be killed (a stop that hangs is a bug in the server). */
static int sim_stop(void) {
    int rc = 0;
    if (sim_pid > 0) {
        kill(sim_pid, SIGTERM);
        int i = 0;
        while (waitpid(sim_pid, NULL, WNOHANG) != sim_pid && ++i < 500)
            sim_sleep_ms(10);
        if (i >= 500) {
            kill(sim_pid, SIGKILL);
            waitpid(sim_pid, NULL, 0);
            rc = -1;
        }
        sim_pid = 0;
    }
    unlink(sim_port_file);
    return rc;
}

#endif
