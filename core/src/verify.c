/*
 * Parsing of a received TC3 Authorization header. No crypto here: the
 * signature itself is recomputed by eid_signer_compute in sign.c.
 *
 * The parser is strict on purpose. Tencent documents one exact shape, the
 * official SDKs all produce it, and a lenient simulator would let a client
 * bug through that the real service rejects.
 */
#include "eidkit/eidkit.h"

#include "internal.h"

#include <stdbool.h>
#include <string.h>

#define ALGORITHM "TC3-HMAC-SHA256 "

/* A cursor over the value, so each step reads "expect this, take until that". */
typedef struct cursor {
    const char *p, *end;
} cursor;

static bool take_literal(cursor *c, const char *lit) {
    size_t n = strlen(lit);
    if ((size_t)(c->end - c->p) < n || memcmp(c->p, lit, n) != 0) return false;
    c->p += n;
    return true;
}

/* Copy bytes up to (not including) stop into out; false when stop is missing,
 * the piece is empty or longer than cap-1, or a byte fails ok(). */
static bool take_until(cursor *c, char stop, char *out, size_t cap, bool (*ok)(unsigned char)) {
    const char *q = c->p;
    while (q < c->end && *q != stop)
        q++;
    size_t n = (size_t)(q - c->p);
    if (q == c->end && stop != '\0') return false;
    if (n == 0 || n >= cap) return false;
    for (size_t i = 0; i < n; i++)
        if (!ok((unsigned char)c->p[i])) return false;
    memcpy(out, c->p, n);
    out[n] = '\0';
    c->p = q;
    return true;
}

static bool visible_id(unsigned char ch) {
    return ch > 0x20 && ch < 0x7f && ch != '/' && ch != ',';
}
static bool digit(unsigned char ch) { return ch >= '0' && ch <= '9'; }
static bool date_char(unsigned char ch) { return digit(ch) || ch == '-'; }
static bool header_char(unsigned char ch) {
    return (ch >= 'a' && ch <= 'z') || digit(ch) || ch == '-' || ch == ';';
}
static bool hex_char(unsigned char ch) { return digit(ch) || (ch >= 'a' && ch <= 'f'); }

static eid_status malformed(eid_error *err, const char *part, const char *what) {
    return eid__fail(err, EID_E_INVALID_ARG, "authorization", "%s: %s", part, what);
}

eid_status eid_authorization_parse(const char *value, size_t len, eid_authorization *out,
                                   eid_error *err) {
    if (out == NULL) return eid__fail(err, EID_E_INVALID_ARG, "authorization", "out is NULL");
    memset(out, 0, sizeof *out);
    if (value == NULL || len == 0) return malformed(err, "header", "is missing or empty");
    cursor c = {value, value + len};
    if (memchr(value, '\0', len) != NULL) return malformed(err, "header", "contains a NUL byte");

    if (!take_literal(&c, ALGORITHM))
        return malformed(err, "algorithm", "must start with \"TC3-HMAC-SHA256 \"");
    if (!take_literal(&c, "Credential="))
        return malformed(err, "Credential", "expected \"Credential=\" after the algorithm");
    if (!take_until(&c, '/', out->secret_id, sizeof out->secret_id, visible_id) ||
        !take_literal(&c, "/"))
        return malformed(err, "Credential", "SecretId is missing, too long or malformed");
    if (!take_until(&c, '/', out->date, sizeof out->date, date_char) || !take_literal(&c, "/"))
        return malformed(err, "Credential", "date is missing or not YYYY-MM-DD");
    const char *d = out->date;
    if (strlen(d) != 10 || d[4] != '-' || d[7] != '-' || !digit((unsigned char)d[5]) ||
        !digit((unsigned char)d[8]))
        return malformed(err, "Credential", "date is not YYYY-MM-DD");
    if (!take_until(&c, '/', out->service, sizeof out->service, visible_id) ||
        !take_literal(&c, "/"))
        return malformed(err, "Credential", "service is missing, too long or malformed");
    if (!take_literal(&c, "tc3_request, "))
        return malformed(err, "Credential", "scope must end with \"/tc3_request, \"");
    if (!take_literal(&c, "SignedHeaders="))
        return malformed(err, "SignedHeaders", "expected \"SignedHeaders=\" after the Credential");
    if (!take_until(&c, ',', out->signed_headers, sizeof out->signed_headers, header_char) ||
        !take_literal(&c, ", "))
        return malformed(err, "SignedHeaders", "missing, too long or not lower-case names");
    /* Names: non-empty, no repeats. */
    size_t count = 0;
    const char *sh = out->signed_headers;
    for (const char *p = sh;;) {
        const char *semi = strchr(p, ';');
        size_t n = semi ? (size_t)(semi - p) : strlen(p);
        if (n == 0) return malformed(err, "SignedHeaders", "has an empty name");
        for (const char *q = sh; q < p;) {
            const char *qs = strchr(q, ';');
            if ((size_t)(qs - q) == n && memcmp(q, p, n) == 0)
                return malformed(err, "SignedHeaders", "names a header twice");
            q = qs + 1;
        }
        if (++count > EID_VERIFY_HEADERS_MAX)
            return malformed(err, "SignedHeaders", "names too many headers");
        if (semi == NULL) break;
        p = semi + 1;
    }
    out->signed_headers_count = count;
    if (!take_literal(&c, "Signature="))
        return malformed(err, "Signature", "expected \"Signature=\" after SignedHeaders");
    if (c.end - c.p != 64 || !take_until(&c, '\0', out->signature, sizeof out->signature, hex_char))
        return malformed(err, "Signature", "must be 64 lower-case hex digits");
    return EID_OK;
}
