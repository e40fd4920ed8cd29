/* Base64 (RFC 4648 §4) through OpenSSL's EVP_EncodeBlock/EVP_DecodeBlock,
 * with the strict shape check done here: OpenSSL's decoder accepts
 * whitespace and reports the padding as decoded zero bytes. */
#include "eidkit/crypto.h"

#include "crypto_internal.h"

#include <limits.h>
#include <openssl/evp.h>

size_t eid_base64_encoded_len(size_t in_len) { return (in_len + 2) / 3 * 4 + 1; }

eid_status eid_base64_encode(const void *in, size_t in_len, char *out, size_t cap,
                             size_t *out_len) {
    if (out == NULL || out_len == NULL || (in == NULL && in_len != 0) || in_len > INT_MAX / 2)
        return EID_E_INVALID_ARG;
    size_t need = eid_base64_encoded_len(in_len);
    *out_len = need - 1;
    if (need > cap) return EID_E_BUFFER_TOO_SMALL;
    if (in_len == 0) {
        out[0] = '\0';
        return EID_OK;
    }
    int n = EVP_EncodeBlock((unsigned char *)out, in, (int)in_len);
    if (n < 0 || (size_t)n != need - 1) return EID_E_INTERNAL;
    return EID_OK;
}

static int b64_char(unsigned char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' ||
           c == '/';
}

eid_status eid_base64_decode(const char *in, size_t in_len, void *out, size_t cap, size_t *out_len,
                             eid_error *err) {
    eid_status st = eid__check_io(in, in_len, out, out_len, err);
    if (st != EID_OK) return st;
    if (in_len % 4 != 0 || in_len > INT_MAX / 2) {
        return eid__fail(err, EID_E_FORMAT, "base64", "%zu characters (not a multiple of 4)",
                         in_len);
    }
    size_t pad = 0;
    if (in_len >= 4 && in[in_len - 1] == '=') pad = in[in_len - 2] == '=' ? 2 : 1;
    for (size_t i = 0; i < in_len - pad; i++) {
        if (!b64_char((unsigned char)in[i])) {
            return eid__fail(err, EID_E_FORMAT, "base64", "invalid character at offset %zu", i);
        }
    }
    size_t need = in_len / 4 * 3 - pad;
    *out_len = need;
    if (need > cap) return eid__fail(err, EID_E_BUFFER_TOO_SMALL, "out", "%zu bytes needed", need);
    if (in_len == 0) return EID_OK;
    /* EVP_DecodeBlock writes in_len / 4 * 3 bytes, padding included. */
    unsigned char *tmp = OPENSSL_malloc(in_len / 4 * 3);
    if (tmp == NULL) return eid__fail(err, EID_E_NOMEM, "base64", "out of memory");
    int n = EVP_DecodeBlock(tmp, (const unsigned char *)in, (int)in_len);
    if (n < 0 || (size_t)n != in_len / 4 * 3) {
        st = eid__fail(err, EID_E_FORMAT, "base64", "not valid base64");
    } else {
        st = eid__deliver(tmp, need, out, cap, out_len, err);
    }
    OPENSSL_clear_free(tmp, in_len / 4 * 3);
    return st;
}
