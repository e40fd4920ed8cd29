/* Declarations shared between libeidkit's source files; not installed. */
#ifndef EIDKIT_INTERNAL_H
#define EIDKIT_INTERNAL_H

#include "eidkit/eidkit.h"

#if defined(__GNUC__)
#define EID_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define EID_PRINTF(a, b)
#endif

/* Record a failure in err (if non-NULL) as "field: message" and return status,
 * so call sites read `return eid__fail(err, EID_E_INVALID_ARG, "host", "...")`. */
eid_status eid__fail(eid_error *err, eid_status status, const char *field, const char *fmt, ...)
    EID_PRINTF(4, 5);

#endif
