/*
 * The ceiling for the simulator benchmark: libmicrohttpd in the mode
 * eidkit.HttpServer uses (no internal thread; one thread polls MHD's epoll fd
 * and calls MHD_run), answering every request with a fixed small JSON body
 * and no Lua at all. Whatever `eidkit sim` reaches is measured against this.
 *
 * Usage: mhd_trivial [port]      (0 or nothing: an ephemeral port)
 * Prints "listening on http://127.0.0.1:PORT" and serves until SIGINT/SIGTERM.
 */
#define _GNU_SOURCE /* ppoll */

#include <microhttpd.h>

#include "bench_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

static const char BODY[] = "{\"Response\":{\"RequestId\":\"bench\",\"Result\":\"0\"}}";

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **ctx) {
    (void)url, (void)method, (void)version, (void)upload;
    static int first_call_marker;
    if (*ctx == NULL) { /* headers in; wait for the (empty) body, as eidkit does */
        *ctx = &first_call_marker;
        return MHD_YES;
    }
    if (*upload_size > 0) {
        *upload_size = 0;
        return MHD_YES;
    }
    return MHD_queue_response(c, MHD_HTTP_OK, cls);
}

int main(int argc, char **argv) {
    int port = argc > 1 ? atoi(argv[1]) : 0;
    if (port < 0 || port > 65535) {
        fprintf(stderr, "usage: mhd_trivial [port]\n");
        return 2;
    }
    bench_raise_nofile();
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(sizeof BODY - 1, (void *)BODY, MHD_RESPMEM_PERSISTENT);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    MHD_add_response_header(resp, MHD_HTTP_HEADER_DATE, "Tue, 01 Jan 2030 00:00:00 GMT");
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct MHD_Daemon *d = MHD_start_daemon(
        BENCH_MHD_FLAGS,
        (uint16_t)port, NULL, NULL, on_request, resp, MHD_OPTION_SOCK_ADDR, &sa,
        MHD_OPTION_CONNECTION_LIMIT, 4096u, MHD_OPTION_LISTEN_BACKLOG_SIZE, 4096u, MHD_OPTION_END);
    if (d == NULL) {
        fprintf(stderr, "mhd_trivial: cannot start on port %d\n", port);
        return 1;
    }
    const union MHD_DaemonInfo *pi = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    const union MHD_DaemonInfo *ei = MHD_get_daemon_info(d, MHD_DAEMON_INFO_EPOLL_FD);

    sigset_t orig;
    bench_stop_signals(&orig);
    printf("listening on http://127.0.0.1:%u\n", pi ? (unsigned)pi->port : 0u);
    fflush(stdout);
    while (!bench_stop) {
        MHD_UNSIGNED_LONG_LONG t;
        struct timespec ts, *tp = NULL;
        if (MHD_get_timeout(d, &t) == MHD_YES) {
            ts.tv_sec = (time_t)(t / 1000);
            ts.tv_nsec = (long)(t % 1000) * 1000000L;
            tp = &ts;
        }
        struct pollfd p = {.fd = ei->epoll_fd, .events = POLLIN};
        ppoll(&p, 1, tp, &orig);
        MHD_run(d);
    }
    MHD_stop_daemon(d);
    MHD_destroy_response(resp);
    return 0;
}
