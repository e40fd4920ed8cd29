/* SM2 encryption through OpenSSL's EVP, in the three ciphertext encodings
 * found in the wild. OpenSSL speaks only the DER form; the raw C1C3C2 forms
 * are converted to and from it with OpenSSL's own ASN.1 and EC routines
 * (docs/internals/crypto.md has the detection rule). */
#include "eidkit/crypto.h"

#include "crypto_internal.h"

#include <openssl/asn1.h>
#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/obj_mac.h>
#include <string.h>

#define COORD 32 /* bytes of x1 and y1 on the 256-bit curve */
#define HASH  32 /* C3: SM3 */
/* DER overhead: SEQUENCE header (4) + 2 INTEGERs (2 + 33 each) + the C3
 * OCTET STRING (2 + 32) + the C2 OCTET STRING header (4). */
#define DER_OVERHEAD (4 + 2 * 35 + 34 + 4)

size_t eid_sm2_ciphertext_len(eid_sm2_layout layout, size_t plain_len) {
    switch (layout) {
    case EID_SM2_C1C3C2_04: return 1 + 2 * COORD + HASH + plain_len;
    case EID_SM2_C1C3C2_RAW: return 2 * COORD + HASH + plain_len;
    case EID_SM2_DER: return DER_OVERHEAD + plain_len;
    case EID_SM2_AUTO: break;
    }
    return 0;
}

/* The parts of an SM2 ciphertext, pointing into a buffer of the caller's. */
typedef struct parts {
    unsigned char xy[2 * COORD];
    const unsigned char *c3, *c2;
    size_t c2_len;
} parts;

/* Whether 04 || xy is a point on the SM2 curve: raw ciphertexts are told
 * apart by this, since a random 64 bytes almost never is one. -1 on an
 * allocation failure. */
static int on_curve(const unsigned char xy[2 * COORD]) {
    unsigned char oct[1 + 2 * COORD];
    oct[0] = 0x04;
    memcpy(oct + 1, xy, 2 * COORD);
    EC_GROUP *g = EC_GROUP_new_by_curve_name(NID_sm2);
    EC_POINT *p = g ? EC_POINT_new(g) : NULL;
    int ok = p == NULL ? -1 : EC_POINT_oct2point(g, p, oct, sizeof oct, NULL) == 1;
    EC_POINT_free(p);
    EC_GROUP_free(g);
    ERR_clear_error();
    return ok;
}

/* Split a DER ciphertext. 1 parsed, 0 not this layout, -1 no memory. The
 * returned C3/C2 pointers go into *seq, which the caller frees. */
static int parse_der(const unsigned char *in, size_t len, parts *pt, STACK_OF(ASN1_TYPE) * *seq) {
    const unsigned char *p = in;
    *seq = NULL;
    if (len < 2 || in[0] != 0x30 || len > 65536) return 0;
    STACK_OF(ASN1_TYPE) *s = d2i_ASN1_SEQUENCE_ANY(NULL, &p, (long)len);
    if (s == NULL) {
        int nomem = ERR_GET_REASON(ERR_peek_last_error()) == ERR_R_MALLOC_FAILURE;
        ERR_clear_error();
        return nomem ? -1 : 0;
    }
    *seq = s;
    if (p != in + len || sk_ASN1_TYPE_num(s) != 4) return 0;
    ASN1_TYPE *t[4];
    for (int i = 0; i < 4; i++)
        t[i] = sk_ASN1_TYPE_value(s, i);
    if (ASN1_TYPE_get(t[0]) != V_ASN1_INTEGER || ASN1_TYPE_get(t[1]) != V_ASN1_INTEGER ||
        ASN1_TYPE_get(t[2]) != V_ASN1_OCTET_STRING || ASN1_TYPE_get(t[3]) != V_ASN1_OCTET_STRING)
        return 0;
    for (int i = 0; i < 2; i++) {
        BIGNUM *bn = ASN1_INTEGER_to_BN(t[i]->value.integer, NULL);
        if (bn == NULL) return -1;
        int ok = !BN_is_negative(bn) && BN_bn2binpad(bn, pt->xy + i * COORD, COORD) == COORD;
        BN_free(bn);
        if (!ok) return 0;
    }
    if (ASN1_STRING_length(t[2]->value.octet_string) != HASH) return 0;
    pt->c3 = ASN1_STRING_get0_data(t[2]->value.octet_string);
    pt->c2 = ASN1_STRING_get0_data(t[3]->value.octet_string);
    pt->c2_len = (size_t)ASN1_STRING_length(t[3]->value.octet_string);
    return 1;
}

/* Split a raw ciphertext (with or without the 04). 1, 0 or -1 as above. */
static int parse_raw(const unsigned char *in, size_t len, int prefixed, parts *pt) {
    size_t off = prefixed ? 1 : 0;
    if (len < off + 2 * COORD + HASH + 1 || (prefixed && in[0] != 0x04)) return 0;
    memcpy(pt->xy, in + off, 2 * COORD);
    int ok = on_curve(pt->xy);
    if (ok != 1) return ok;
    pt->c3 = in + off + 2 * COORD;
    pt->c2 = pt->c3 + HASH;
    pt->c2_len = len - off - 2 * COORD - HASH;
    return 1;
}

/* The DER encoding of pt, OPENSSL_malloc'd into *der. */
static eid_status encode_der(const parts *pt, unsigned char **der, int *der_len) {
    eid_status st = EID_E_NOMEM;
    STACK_OF(ASN1_TYPE) *s = sk_ASN1_TYPE_new_null();
    if (s == NULL) goto fail;
    for (int i = 0; i < 4; i++) {
        ASN1_TYPE *t = ASN1_TYPE_new();
        if (t == NULL) goto fail;
        if (!sk_ASN1_TYPE_push(s, t)) {
            ASN1_TYPE_free(t);
            goto fail;
        }
        if (i < 2) {
            BIGNUM *bn = BN_bin2bn(pt->xy + i * COORD, COORD, NULL);
            ASN1_INTEGER *ai = bn ? BN_to_ASN1_INTEGER(bn, NULL) : NULL;
            BN_free(bn);
            if (ai == NULL) goto fail;
            ASN1_TYPE_set(t, V_ASN1_INTEGER, ai);
        } else {
            ASN1_OCTET_STRING *os = ASN1_OCTET_STRING_new();
            const unsigned char *d = i == 2 ? pt->c3 : pt->c2;
            int n = i == 2 ? HASH : (int)pt->c2_len;
            if (os == NULL) goto fail;
            if (!ASN1_OCTET_STRING_set(os, d, n)) {
                ASN1_OCTET_STRING_free(os);
                goto fail;
            }
            ASN1_TYPE_set(t, V_ASN1_OCTET_STRING, os);
        }
    }
    *der = NULL;
    *der_len = i2d_ASN1_SEQUENCE_ANY(s, der);
    if (*der_len <= 0) goto fail;
    st = EID_OK;
fail:
    sk_ASN1_TYPE_pop_free(s, ASN1_TYPE_free);
    ERR_clear_error();
    return st;
}

static const char *layout_name(eid_sm2_layout l) {
    switch (l) {
    case EID_SM2_C1C3C2_04: return "C1C3C2 with 04";
    case EID_SM2_C1C3C2_RAW: return "C1C3C2 without 04";
    case EID_SM2_DER: return "DER";
    case EID_SM2_AUTO: break;
    }
    return "auto";
}

eid_status eid_sm2_encrypt(const eid_pkey *key, eid_sm2_layout layout, const void *in,
                           size_t in_len, void *out, size_t cap, size_t *out_len, eid_error *err) {
    eid_status st = eid__check_io(in, in_len, out, out_len, err);
    EVP_PKEY_CTX *ctx = NULL;
    unsigned char *der = NULL;
    size_t der_len = 0, der_cap = 0;
    STACK_OF(ASN1_TYPE) *seq = NULL;
    if (st != EID_OK) return st;
    if (key == NULL || key->type != EID_PKEY_SM2) {
        return eid__fail(err, EID_E_KEY, "key", "an SM2 key is needed");
    }
    if (layout != EID_SM2_C1C3C2_04 && layout != EID_SM2_C1C3C2_RAW && layout != EID_SM2_DER) {
        return eid__fail(err, EID_E_INVALID_ARG, "layout", "unknown SM2 layout %d", (int)layout);
    }
    if (in_len == 0 || in_len > EID_SM2_PLAIN_MAX) {
        return eid__fail(err, EID_E_INVALID_ARG, "in", "%zu bytes (expected 1..%d)", in_len,
                         EID_SM2_PLAIN_MAX);
    }
    ctx = EVP_PKEY_CTX_new_from_pkey(NULL, key->pkey, NULL);
    if (ctx == NULL || EVP_PKEY_encrypt_init(ctx) != 1 ||
        EVP_PKEY_encrypt(ctx, NULL, &der_cap, in, in_len) != 1) {
        st =
            eid__fail(err, ctx ? EID_E_CRYPTO : EID_E_NOMEM, "key", "SM2 encryption set-up failed");
        goto fail;
    }
    der = OPENSSL_malloc(der_cap);
    if (der == NULL) {
        st = eid__fail(err, EID_E_NOMEM, "out", "out of memory");
        goto fail;
    }
    der_len = der_cap;
    if (EVP_PKEY_encrypt(ctx, der, &der_len, in, in_len) != 1) {
        st = eid__fail(err, EID_E_CRYPTO, "in", "SM2 encryption failed");
        goto fail;
    }
    if (layout == EID_SM2_DER) {
        st = eid__deliver(der, der_len, out, cap, out_len, err);
        goto fail;
    }
    parts pt;
    int r = parse_der(der, der_len, &pt, &seq);
    if (r != 1) {
        st = eid__fail(err, r < 0 ? EID_E_NOMEM : EID_E_INTERNAL, "out",
                       "cannot re-encode OpenSSL's SM2 ciphertext");
        goto fail;
    }
    size_t off = layout == EID_SM2_C1C3C2_04 ? 1 : 0;
    size_t n = off + 2 * COORD + HASH + pt.c2_len;
    *out_len = n;
    if (n > cap) {
        st = eid__fail(err, EID_E_BUFFER_TOO_SMALL, "out", "%zu bytes needed", n);
        goto fail;
    }
    unsigned char *o = out;
    if (off) o[0] = 0x04;
    memcpy(o + off, pt.xy, 2 * COORD);
    memcpy(o + off + 2 * COORD, pt.c3, HASH);
    memcpy(o + off + 2 * COORD + HASH, pt.c2, pt.c2_len);
fail:
    sk_ASN1_TYPE_pop_free(seq, ASN1_TYPE_free);
    OPENSSL_free(der);
    EVP_PKEY_CTX_free(ctx);
    ERR_clear_error();
    return st;
}

eid_status eid_sm2_decrypt(const eid_pkey *key, eid_sm2_layout layout, const void *in,
                           size_t in_len, void *out, size_t cap, size_t *out_len,
                           eid_sm2_layout *found, eid_error *err) {
    eid_status st = eid__check_io(in, in_len, out, out_len, err);
    EVP_PKEY_CTX *ctx = NULL;
    STACK_OF(ASN1_TYPE) *seq = NULL;
    unsigned char *der = NULL, *plain = NULL;
    int der_len = 0;
    size_t plain_cap = 0, plain_len = 0;
    eid_sm2_layout used = EID_SM2_AUTO;
    parts pt;
    if (st != EID_OK) return st;
    if (key == NULL || key->type != EID_PKEY_SM2 || !key->priv) {
        return eid__fail(err, EID_E_KEY, "key", "an SM2 private key is needed");
    }
    if ((unsigned)layout > EID_SM2_DER) {
        return eid__fail(err, EID_E_INVALID_ARG, "layout", "unknown SM2 layout %d", (int)layout);
    }
    /* DER first: it is the only form that starts with a SEQUENCE and parses
     * whole; then the raw forms, whose C1 must be a point on the curve. */
    static const eid_sm2_layout order[] = {EID_SM2_DER, EID_SM2_C1C3C2_04, EID_SM2_C1C3C2_RAW};
    int r = 0;
    for (size_t i = 0; i < 3 && r == 0; i++) {
        if (layout != EID_SM2_AUTO && layout != order[i]) continue;
        if (order[i] == EID_SM2_DER) {
            r = parse_der(in, in_len, &pt, &seq);
        } else {
            r = parse_raw(in, in_len, order[i] == EID_SM2_C1C3C2_04, &pt);
        }
        if (r == 1) used = order[i];
    }
    if (r < 0) {
        st = eid__fail(err, EID_E_NOMEM, "in", "out of memory");
        goto fail;
    }
    if (r == 0) {
        st = eid__fail(err, EID_E_FORMAT, "in", "%zu bytes are not an SM2 ciphertext (%s)", in_len,
                       layout == EID_SM2_AUTO ? "DER, C1C3C2 with or without 04"
                                              : layout_name(layout));
        goto fail;
    }
    if (pt.c2_len == 0 || pt.c2_len > EID_SM2_PLAIN_MAX) {
        st = eid__fail(err, EID_E_FORMAT, "in", "an SM2 ciphertext of %zu bytes", pt.c2_len);
        goto fail;
    }
    /* OpenSSL decrypts the DER form only: re-encode the raw ones. */
    st = encode_der(&pt, &der, &der_len);
    if (st != EID_OK) {
        eid__fail(err, st, "in", "out of memory");
        goto fail;
    }
    ctx = EVP_PKEY_CTX_new_from_pkey(NULL, key->pkey, NULL);
    plain_cap = pt.c2_len;
    plain = OPENSSL_malloc(plain_cap);
    if (ctx == NULL || plain == NULL) {
        st = eid__fail(err, EID_E_NOMEM, "in", "out of memory");
        goto fail;
    }
    plain_len = plain_cap;
    if (EVP_PKEY_decrypt_init(ctx) != 1 ||
        EVP_PKEY_decrypt(ctx, plain, &plain_len, der, (size_t)der_len) != 1) {
        int nomem = ERR_GET_REASON(ERR_peek_last_error()) == ERR_R_MALLOC_FAILURE;
        st = eid__fail(err, nomem ? EID_E_NOMEM : EID_E_DECRYPT, "in",
                       nomem ? "out of memory"
                             : "SM2 decryption failed (%s layout): wrong key or tampered "
                               "ciphertext",
                       layout_name(used));
        goto fail;
    }
    st = eid__deliver(plain, plain_len, out, cap, out_len, err);
    if (st == EID_OK && found) *found = used;
fail:
    if (plain) OPENSSL_clear_free(plain, plain_cap);
    OPENSSL_free(der);
    sk_ASN1_TYPE_pop_free(seq, ASN1_TYPE_free);
    EVP_PKEY_CTX_free(ctx);
    ERR_clear_error();
    return st;
}
