/* The API client on a thread of its own: bindings/client_thread.c. Used by
 * bindings/client.c for core.client_new{thread = true}; the Lua thread
 * queues calls and takes back results and logger events, in order. */
#ifndef EIDKIT_CLIENT_THREAD_H
#define EIDKIT_CLIENT_THREAD_H

#include "eidkit/client.h"

#include <stddef.h>
#include <stdint.h>

typedef int64_t eidkit_titem_id;

/* One queued call, then its result; or one logger event. */
typedef struct eidkit_titem {
    struct eidkit_titem *next;
    struct eidkit_titem *fprev, *fnext; /* submitted to the client: the transport thread's */
    int is_event;
    eidkit_titem_id id;
    eid_result *result; /* NULL for a finished call: no memory for its result */
    eid_client_event ev;
    /* The event's strings, as long as the result fields they come from. */
    char level[8], event[16], action[EID_FIELD_MAX + 1], trace_id[EID_TRACE_ID_MAX],
        code[EID_CODE_MAX], request_id[EID_REQUEST_ID_MAX];
    size_t body_len;
    char body[]; /* a queued call's body */
} eidkit_titem;

typedef struct eidkit_transport eidkit_transport;

/* A transport without its thread yet: its logger (eidkit_transport_logger,
 * with the transport as ud) goes into the client's options, then
 * eidkit_transport_start(t, client) runs the thread: 0, or -1. */
eidkit_transport *eidkit_transport_new(void);
eid_client_log_fn eidkit_transport_logger(void);
int eidkit_transport_start(eidkit_transport *t, eid_client *c);

/* Queue a call (action and body copied); its result comes back with id.
 * What the client would refuse at once (eid_client_check_call) is refused
 * here, with err. */
eid_status eidkit_transport_submit(eidkit_transport *t, const char *action, const char *body,
                                   size_t body_len, eidkit_titem_id id, eid_error *err);

/* Readable (an eventfd) when items are waiting for eidkit_transport_take. */
int eidkit_transport_fd(const eidkit_transport *t);

/* Every waiting item, oldest first (the caller frees them). */
eidkit_titem *eidkit_transport_take(eidkit_transport *t);

/* Wait up to timeout_ms for items: 1 when some are there. */
int eidkit_transport_wait(eidkit_transport *t, long timeout_ms);

/* Around any other use of the client from the Lua thread. */
void eidkit_transport_lock(eidkit_transport *t);
void eidkit_transport_unlock(eidkit_transport *t);

/* Append it to the list head..tail (it->next is cleared). */
void eidkit_titem_append(eidkit_titem **head, eidkit_titem **tail, eidkit_titem *it);

void eidkit_titems_free(eidkit_titem *it);

/* Stop and join the thread, free what is queued and in flight. The client
 * is the caller's to free afterwards (its calls' results are dropped). */
void eidkit_transport_free(eidkit_transport *t);

#endif
