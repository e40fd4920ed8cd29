#include "eidkit/eidkit.h"

#include "internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* One row per eid_status, indexed by its value: the English text and the
 * short code the Lua bindings put in err.code. Both lookups read this table,
 * so a status added to the enum gets its text and code in one place. */
static const struct status_row {
    const char *code, *text;
} statuses[] = {
    [EID_OK] = {"ok", "success"},
    [EID_E_INVALID_ARG] = {"invalid", "invalid argument"},
    [EID_E_NOMEM] = {"nomem", "out of memory"},
    [EID_E_BUFFER_TOO_SMALL] = {"buffer_too_small", "buffer too small"},
    [EID_E_CRYPTO] = {"crypto", "cryptographic operation failed"},
    [EID_E_INTERNAL] = {"internal", "internal error"},
    [EID_E_LEDGER_UNKNOWN] = {"unknown_token", "unknown token"},
    [EID_E_LEDGER_WRONG_SUBJECT] = {"wrong_subject", "token bound to another subject"},
    [EID_E_LEDGER_EXPIRED] = {"expired", "token expired"},
    [EID_E_LEDGER_CONSUMED] = {"consumed", "token already consumed"},
    [EID_E_LEDGER_EXISTS] = {"exists", "token already issued"},
    [EID_E_LEDGER_PENDING] = {"pending", "no result recorded yet"},
    [EID_E_LEDGER_UNAVAILABLE] = {"unavailable", "ledger backend unavailable"},
    [EID_E_LEDGER_STORAGE] = {"storage", "ledger storage failure"},
    [EID_E_CLIENT_TRANSPORT] = {"transport", "API call failed in transport"},
    [EID_E_CLIENT_REMOTE] = {"remote", "API returned an error"},
    [EID_E_KEY] = {"key", "unusable key"},
    [EID_E_DECRYPT] = {"decrypt", "decryption failed (wrong key or tampered ciphertext)"},
    [EID_E_FORMAT] = {"format", "malformed encrypted input"},
};

static const struct status_row *row_of(eid_status status) {
    /* Compared as unsigned: a negative value is out of range too. */
    if ((unsigned)status >= sizeof statuses / sizeof statuses[0]) return NULL;
    return statuses[status].code ? &statuses[status] : NULL;
}

const char *eid_strerror(eid_status status) {
    const struct status_row *r = row_of(status);
    return r ? r->text : "unknown status";
}

const char *eid_status_code(eid_status status) {
    const struct status_row *r = row_of(status);
    return r ? r->code : "unknown";
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
