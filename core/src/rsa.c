/* RSA with PKCS#1 v1.5 padding through OpenSSL's EVP: FaceID's
 * CiphertextBlob for AES-256-CBC. */
#include "eidkit/crypto.h"

#include "crypto_internal.h"

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/rsa.h>
#include <string.h>

#define PKCS1_OVERHEAD 11

static size_t modulus_bytes(const eid_pkey *key) {
    int n = EVP_PKEY_get_size(key->pkey);
    return n > 0 ? (size_t)n : 0;
}

size_t eid_rsa_ciphertext_len(const eid_pkey *key, size_t plain_len) {
    if (key == NULL || key->type != EID_PKEY_RSA) return 0;
    size_t k = modulus_bytes(key);
    if (k <= PKCS1_OVERHEAD) return 0;
    size_t chunk = k - PKCS1_OVERHEAD;
    size_t blocks = plain_len == 0 ? 1 : (plain_len + chunk - 1) / chunk;
    return blocks * k;
}

static EVP_PKEY_CTX *pkcs1_ctx(const eid_pkey *key, int encrypt) {
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_pkey(NULL, key->pkey, NULL);
    if (ctx == NULL) return NULL;
    int ok = encrypt ? EVP_PKEY_encrypt_init(ctx) : EVP_PKEY_decrypt_init(ctx);
    if (ok != 1 || EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_PADDING) != 1) {
        EVP_PKEY_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

eid_status eid_rsa_encrypt(const eid_pkey *key, const void *in, size_t in_len, void *out,
                           size_t cap, size_t *out_len, eid_error *err) {
    eid_status st = eid__check_io(in, in_len, out, out_len, err);
    EVP_PKEY_CTX *ctx = NULL;
    if (st != EID_OK) return st;
    if (key == NULL || key->type != EID_PKEY_RSA) {
        return eid__fail(err, EID_E_KEY, "key", "an RSA key is needed");
    }
    if (in_len > EID_CIPHER_IN_MAX) {
        return eid__fail(err, EID_E_INVALID_ARG, "in", "longer than %d bytes", EID_CIPHER_IN_MAX);
    }
    size_t k = modulus_bytes(key), need = eid_rsa_ciphertext_len(key, in_len);
    *out_len = need;
    if (need > cap) return eid__fail(err, EID_E_BUFFER_TOO_SMALL, "out", "%zu bytes needed", need);
    ctx = pkcs1_ctx(key, 1);
    if (ctx == NULL) {
        st = eid__fail(err, EID_E_CRYPTO, "key", "RSA encryption set-up failed");
        goto fail;
    }
    size_t chunk = k - PKCS1_OVERHEAD, done = 0, written = 0;
    const unsigned char *p = in;
    do {
        size_t n = in_len - done < chunk ? in_len - done : chunk;
        size_t olen = k;
        if (EVP_PKEY_encrypt(ctx, (unsigned char *)out + written, &olen, p + done, n) != 1 ||
            olen != k) {
            st = eid__fail(err, EID_E_CRYPTO, "in", "RSA encryption failed");
            goto fail;
        }
        done += n;
        written += k;
    } while (done < in_len);
    *out_len = written;
fail:
    if (st != EID_OK && st != EID_E_BUFFER_TOO_SMALL) OPENSSL_cleanse(out, cap < need ? cap : need);
    EVP_PKEY_CTX_free(ctx);
    ERR_clear_error();
    return st;
}

eid_status eid_rsa_decrypt(const eid_pkey *key, const void *in, size_t in_len, void *out,
                           size_t cap, size_t *out_len, eid_error *err) {
    eid_status st = eid__check_io(in, in_len, out, out_len, err);
    EVP_PKEY_CTX *ctx = NULL;
    unsigned char *plain = NULL;
    size_t plain_cap = 0, plain_len = 0;
    if (st != EID_OK) return st;
    if (key == NULL || key->type != EID_PKEY_RSA || !key->priv) {
        return eid__fail(err, EID_E_KEY, "key", "an RSA private key is needed");
    }
    size_t k = modulus_bytes(key);
    if (in_len == 0 || in_len % k != 0 || in_len > EID_CIPHER_IN_MAX) {
        return eid__fail(err, EID_E_FORMAT, "in",
                         "%zu bytes is not a whole number of %zu-byte RSA blocks", in_len, k);
    }
    plain_cap = in_len;
    plain = OPENSSL_malloc(plain_cap);
    ctx = pkcs1_ctx(key, 0);
    if (plain == NULL || ctx == NULL) {
        st = eid__fail(err, plain ? EID_E_CRYPTO : EID_E_NOMEM, "key",
                       "RSA decryption set-up failed");
        goto fail;
    }
    const unsigned char *p = in;
    for (size_t off = 0; off < in_len; off += k) {
        size_t olen = plain_cap - plain_len;
        if (EVP_PKEY_decrypt(ctx, plain + plain_len, &olen, p + off, k) != 1) {
            int nomem = ERR_GET_REASON(ERR_peek_last_error()) == ERR_R_MALLOC_FAILURE;
            st = eid__fail(err, nomem ? EID_E_NOMEM : EID_E_DECRYPT, "in",
                           nomem ? "out of memory"
                                 : "RSA decryption failed: wrong key or tampered ciphertext");
            goto fail;
        }
        plain_len += olen;
    }
    st = eid__deliver(plain, plain_len, out, cap, out_len, err);
fail:
    if (plain) OPENSSL_clear_free(plain, plain_cap);
    EVP_PKEY_CTX_free(ctx);
    ERR_clear_error();
    return st;
}
