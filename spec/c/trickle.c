/*
 * trickle: many slow clients for the HTTP server's specs (slowloris and
 * unfinished bodies). Not a test by itself.
 *
 *   trickle head HOST PORT FROM N EVERY_MS SECONDS
 *     N connections from address FROM, each sending a request head one
 *     header line every EVERY_MS, never finishing it
 *   trickle body HOST PORT FROM N BYTES SECONDS
 *     N connections from FROM, each announcing a 10 MB body and sending BYTES
 *     of it, then nothing
 *   trickle abandon HOST PORT FROM N BYTES SECONDS
 *     as body, then each client closes its end at once (the server's sockets
 *     are left to close theirs)
 *
 * Holds them for SECONDS, then prints "connected C closed_by_server S" and
 * exits 0. A connection counts as closed by the server when a read returns
 * 0 or an error (the server hung up on it).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static long long now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int dial(const char *host, int port, const char *from) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    struct sockaddr_in src = {.sin_family = AF_INET};
    inet_pton(AF_INET, from, &src.sin_addr);
    struct sockaddr_in dst = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port)};
    inet_pton(AF_INET, host, &dst.sin_addr);
    if (bind(fd, (struct sockaddr *)&src, sizeof src) != 0 ||
        connect(fd, (struct sockaddr *)&dst, sizeof dst) != 0) {
        close(fd);
        return -1;
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    return fd;
}

/* 1 when the server closed fd (EOF or error), 0 while it is open. */
static int gone(int fd) {
    char buf[512];
    for (;;) {
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n == 0) return 1;
        if (n < 0) return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : 1;
    }
}

int main(int argc, char **argv) {
    if (argc != 8) {
        fprintf(stderr, "usage: trickle head|body HOST PORT FROM N EVERY_MS|BYTES SECONDS\n");
        return 2;
    }
    int abandon = strcmp(argv[1], "abandon") == 0;
    int body = abandon || strcmp(argv[1], "body") == 0;
    const char *host = argv[2], *from = argv[4];
    int port = atoi(argv[3]), n = atoi(argv[5]), arg = atoi(argv[6]), seconds = atoi(argv[7]);
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    int *fds = calloc((size_t)n, sizeof *fds);
    char *closed = calloc((size_t)n, 1);
    if (fds == NULL || closed == NULL) return 1;
    static char chunk[65536];
    memset(chunk, 'x', sizeof chunk);
    int connected = 0;
    for (int i = 0; i < n; i++) {
        fds[i] = dial(host, port, from);
        if (fds[i] < 0) {
            closed[i] = 1;
            continue;
        }
        connected++;
        const char *head =
            body ? "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 10000000\r\n\r\n"
                 : "GET /echo HTTP/1.1\r\nHost: t\r\n";
        if (send(fds[i], head, strlen(head), MSG_NOSIGNAL) < 0) closed[i] = 1;
        for (long sent = 0; body && !closed[i] && sent < arg;) {
            size_t want = (size_t)(arg - sent) < sizeof chunk ? (size_t)(arg - sent) : sizeof chunk;
            ssize_t k = send(fds[i], chunk, want, MSG_NOSIGNAL);
            if (k > 0) {
                sent += k;
            } else if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
                struct pollfd p = {.fd = fds[i], .events = POLLOUT};
                if (poll(&p, 1, 1000) <= 0) break; /* the server stopped reading */
            } else {
                closed[i] = 1;
            }
        }
    }
    if (abandon)
        for (int i = 0; i < n; i++)
            if (fds[i] >= 0) {
                close(fds[i]);
                fds[i] = -1;
            }
    printf("started %d\n", connected);
    fflush(stdout);
    long long end = now_ms() + (long long)seconds * 1000, next = now_ms();
    while (now_ms() < end) {
        if (!body && now_ms() >= next) {
            for (int i = 0; i < n; i++)
                if (!closed[i] && send(fds[i], "X-Slow: 1\r\n", 11, MSG_NOSIGNAL) < 0)
                    closed[i] = 1;
            next = now_ms() + arg;
        }
        usleep(50000);
    }
    int by_server = 0;
    for (int i = 0; i < n; i++)
        if (fds[i] >= 0 && (closed[i] || gone(fds[i]))) by_server++;
    printf("connected %d closed_by_server %d\n", connected, by_server);
    fflush(stdout);
    for (int i = 0; i < n; i++)
        if (fds[i] >= 0) close(fds[i]);
    free(fds);
    free(closed);
    return 0;
}
