#include "eidkit/eidkit.h"

#include "internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

const char *eid_strerror(eid_status status) {
    switch (status) {
    case EID_OK: return "success";
    case EID_E_INVALID_ARG: return "invalid argument";
    case EID_E_NOMEM: return "out of memory";
    case EID_E_BUFFER_TOO_SMALL: return "buffer too small";
    case EID_E_CRYPTO: return "cryptographic operation failed";
    case EID_E_INTERNAL: return "internal error";
    case EID_E_LEDGER_UNKNOWN: return "unknown token";
    case EID_E_LEDGER_WRONG_SUBJECT: return "token bound to another subject";
    case EID_E_LEDGER_EXPIRED: return "token expired";
    case EID_E_LEDGER_CONSUMED: return "token already consumed";
    case EID_E_LEDGER_EXISTS: return "token already issued";
    case EID_E_LEDGER_PENDING: return "no result recorded yet";
    case EID_E_LEDGER_UNAVAILABLE: return "ledger backend unavailable";
    case EID_E_LEDGER_STORAGE: return "ledger storage failure";
    case EID_E_CLIENT_TRANSPORT: return "API call failed in transport";
    case EID_E_CLIENT_REMOTE: return "API returned an error";
    }
    return "unknown status";
}

const char *eid_version(void) { return EIDKIT_VERSION; }

eid_status eid__fail(eid_error *err, eid_status status, const char *field, const char *fmt, ...) {
    if (err == NULL) return status;
    err->status = status;
    snprintf(err->field, sizeof err->field, "%s", field ? field : "");
    size_t off = 0;
    if (field && *field) {
        int n = snprintf(err->message, sizeof err->message, "%s: ", field);
        off = n > 0 && (size_t)n < sizeof err->message ? (size_t)n : 0;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message + off, sizeof err->message - off, fmt, ap);
    va_end(ap);
    return status;
}
