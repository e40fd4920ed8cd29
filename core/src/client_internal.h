/* Declarations shared by the API client's files; not installed.
 *   client.c    the signed client: options, the curl multi/epoll loop, submit/call
 *   envelope.c  reading Tencent's answer envelope (cJSON)
 *   retry.c     what an attempt came to and whether to try again (pure)
 *   calls.c     the typed calls (GetEidToken, GetEidResult, CheckEidTokenStatus)
 *   http.c      the plain, unsigned HTTP helper (eid_http_get / eid_http_request)
 * Design notes: docs/internals/client.md. */
#ifndef EIDKIT_CLIENT_INTERNAL_H
#define EIDKIT_CLIENT_INTERNAL_H

#include "eidkit/client.h"
#include "eidkit/retry.h"

#include "internal.h"

#include <stddef.h>

/* ------------------------------------------------------------ buffers */

/* A growing byte buffer, kept NUL-terminated once anything is in it. */
typedef struct eid_buf {
    char *p;
    size_t len, cap;
} eid_buf;

/* Append len bytes to b unless that would pass max bytes in all (then
 * *too_big is set). 1 on success, 0 when refused or out of memory. */
int eid__buf_append(eid_buf *b, const char *data, size_t len, size_t max, int *too_big);

/* Printf into a fixed field, truncating. */
void eid__setf(char *dst, size_t cap, const char *fmt, ...) EID_PRINTF(3, 4);

/* ------------------------------------------------------------ outcomes */

/* eid_outcome, the facts of an attempt and the verdict are public:
 * eidkit/retry.h, so every transport gets the same decisions. */

/* The code an outcome reports ("timeout", "bad_response", "transport", ...);
 * "" for EID_OUTCOME_OK, and for REMOTE and HTTP, whose codes depend on the
 * answer (see eid_retry_decide). The names come from the same table as
 * eid_client_transport_code. */
const char *eid__outcome_code(eid_outcome o);

/* ------------------------------------------------------------ envelope */

/* Read the body of a 200 answer into r: request_id, message, the code for
 * EID_OUTCOME_REMOTE, and the Response text (EID_OUTCOME_OK and _REMOTE).
 * EID_OUTCOME_MALFORMED keeps none of the body, only its size in the message
 * (it may hold an identity: keep_received in eidkit/retry.h). status and the
 * other codes are eid_retry_decide's. With defer_parse, a body shaped {"Response": {...}}
 * with no "Error" key anywhere is taken unparsed (request_id stays ""). body
 * may be NULL when len is 0. */
eid_outcome eid__envelope_read(const char *body, size_t len, int defer_parse, eid_result *r);

#endif
