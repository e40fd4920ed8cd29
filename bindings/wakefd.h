/* An eventfd one thread raises to wake another thread's poll: the ledger
 * pool's workers and the API client's transport thread wake the Lua thread's
 * loop with one (bindings/ledger_pool.c, bindings/client_thread.c).
 *
 * The descriptor is level-triggered, so a second write before a read wakes
 * nobody, and a read while it is not set only says EAGAIN: both are system
 * calls for nothing, once a job or once a turn of the loop. The `set` flag
 * saves them. It must be read and written under the lock that guards the
 * list the descriptor announces: then a raise after a clear always writes
 * again, and a clear never swallows a write whose items the reader has not
 * taken. */
#ifndef EIDKIT_WAKEFD_H
#define EIDKIT_WAKEFD_H

#include <stdint.h>
#include <sys/eventfd.h>
#include <unistd.h>

typedef struct {
    int fd;  /* -1 when not open */
    int set; /* written since it was last read: readable */
} eidkit_wakefd;

/* Open: 0, or -1 with errno (fd stays -1). */
static inline int eidkit_wakefd_open(eidkit_wakefd *w) {
    w->set = 0;
    w->fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    return w->fd < 0 ? -1 : 0;
}

static inline void eidkit_wakefd_close(eidkit_wakefd *w) {
    if (w->fd >= 0) close(w->fd);
    w->fd = -1;
    w->set = 0;
}

/* Unconditional write and read, for a caller that keeps its own account of
 * whether one is due (the transport's queue of calls). The write only fails
 * when the counter is near 2^64, and then the descriptor is readable anyway;
 * the read only fails with EAGAIN, when nothing was written. */
static inline void eidkit_wakefd_write(int fd) {
    uint64_t one = 1;
    ssize_t n = write(fd, &one, sizeof one);
    (void)n;
}

static inline void eidkit_wakefd_read(int fd) {
    uint64_t v;
    ssize_t n = read(fd, &v, sizeof v);
    (void)n;
}

/* Make it readable unless it is already (under the list's lock). */
static inline void eidkit_wakefd_raise(eidkit_wakefd *w) {
    if (w->set) return;
    eidkit_wakefd_write(w->fd);
    w->set = 1;
}

/* Make it unreadable if it was raised (under the list's lock). */
static inline void eidkit_wakefd_clear(eidkit_wakefd *w) {
    if (!w->set) return;
    eidkit_wakefd_read(w->fd);
    w->set = 0;
}

#endif
