/* The symmetric ciphers: SM4-ECB and AES-256-CBC through OpenSSL's EVP,
 * SM4-GCM through libgcrypt (Debian 12's OpenSSL 3.0 has no SM4-GCM). */
#include "eidkit/crypto.h"

#include "crypto_internal.h"

#include <gcrypt.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <pthread.h>
#include <string.h>

#define BLOCK 16

eid_status eid__check_io(const void *in, size_t in_len, const void *out, const size_t *out_len,
                         eid_error *err) {
    if (out_len == NULL) return eid__fail(err, EID_E_INVALID_ARG, "out_len", "NULL");
    if (in == NULL && in_len != 0) return eid__fail(err, EID_E_INVALID_ARG, "in", "NULL");
    if (out == NULL) return eid__fail(err, EID_E_INVALID_ARG, "out", "NULL");
    return EID_OK;
}

eid_status eid__deliver(const void *tmp, size_t n, void *out, size_t cap, size_t *out_len,
                        eid_error *err) {
    *out_len = n;
    if (n > cap) return eid__fail(err, EID_E_BUFFER_TOO_SMALL, "out", "%zu bytes needed", n);
    if (n) memcpy(out, tmp, n);
    return EID_OK;
}

static eid_status check_len(const char *what, size_t got, size_t want, eid_error *err) {
    if (got == want) return EID_OK;
    return eid__fail(err, EID_E_INVALID_ARG, what, "%zu bytes (expected %zu)", got, want);
}

/* One EVP pass over in into out (which the caller sized), wiping out on
 * failure. decrypt_fails is the status a failing final block means. */
static eid_status evp_run(const EVP_CIPHER *cipher, int enc, int pad, const void *key,
                          const void *iv, const void *in, size_t in_len, unsigned char *out,
                          size_t out_cap, size_t *out_len, eid_status final_fails, eid_error *err) {
    eid_status st = EID_OK;
    int n1 = 0, n2 = 0;
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    if (ctx == NULL) return eid__fail(err, EID_E_NOMEM, "in", "out of memory");
    if (EVP_CipherInit_ex2(ctx, cipher, key, iv, enc, NULL) != 1 ||
        EVP_CIPHER_CTX_set_padding(ctx, pad) != 1 ||
        EVP_CipherUpdate(ctx, out, &n1, in, (int)in_len) != 1) {
        int nomem = ERR_GET_REASON(ERR_peek_last_error()) == ERR_R_MALLOC_FAILURE;
        st = eid__fail(err, nomem ? EID_E_NOMEM : EID_E_CRYPTO, "in", "%s failed",
                       EVP_CIPHER_get0_name(cipher));
        goto fail;
    }
    if (EVP_CipherFinal_ex(ctx, out + n1, &n2) != 1) {
        st =
            eid__fail(err, final_fails, "in",
                      final_fails == EID_E_DECRYPT ? "bad padding: wrong key or tampered ciphertext"
                                                   : "%s failed",
                      EVP_CIPHER_get0_name(cipher));
        goto fail;
    }
    *out_len = (size_t)n1 + (size_t)n2;
fail:
    if (st != EID_OK) OPENSSL_cleanse(out, out_cap);
    EVP_CIPHER_CTX_free(ctx);
    ERR_clear_error();
    return st;
}

/* Decrypt into a scratch buffer first, so that a failure late in the pass
 * never leaves plaintext in the caller's buffer, then deliver. */
static eid_status evp_decrypt(const EVP_CIPHER *cipher, int pad, const void *key, const void *iv,
                              const void *in, size_t in_len, void *out, size_t cap, size_t *out_len,
                              eid_error *err) {
    size_t tmp_cap = in_len + BLOCK, n = 0;
    unsigned char *tmp = OPENSSL_malloc(tmp_cap);
    if (tmp == NULL) return eid__fail(err, EID_E_NOMEM, "in", "out of memory");
    eid_status st = evp_run(cipher, 0, pad, key, iv, in, in_len, tmp, tmp_cap, &n,
                            pad ? EID_E_DECRYPT : EID_E_CRYPTO, err);
    if (st == EID_OK) st = eid__deliver(tmp, n, out, cap, out_len, err);
    OPENSSL_clear_free(tmp, tmp_cap);
    return st;
}

eid_status eid_sm4_ecb_encrypt(const void *key, size_t key_len, const void *in, size_t in_len,
                               void *out, size_t cap, size_t *out_len, eid_error *err) {
    eid_status st = eid__check_io(in, in_len, out, out_len, err);
    if (st == EID_OK && key == NULL) st = eid__fail(err, EID_E_INVALID_ARG, "key", "NULL");
    if (st == EID_OK) st = check_len("key", key_len, EID_SM4_KEY_LEN, err);
    if (st != EID_OK) return st;
    if (in_len % BLOCK != 0 || in_len > EID_CIPHER_IN_MAX) {
        return eid__fail(err, EID_E_INVALID_ARG, "in",
                         "%zu bytes: SM4-ECB without padding needs a multiple of 16", in_len);
    }
    *out_len = in_len;
    if (in_len > cap)
        return eid__fail(err, EID_E_BUFFER_TOO_SMALL, "out", "%zu bytes needed", in_len);
    return evp_run(EVP_sm4_ecb(), 1, 0, key, NULL, in, in_len, out, cap, out_len, EID_E_CRYPTO,
                   err);
}

eid_status eid_sm4_ecb_decrypt(const void *key, size_t key_len, const void *in, size_t in_len,
                               void *out, size_t cap, size_t *out_len, eid_error *err) {
    eid_status st = eid__check_io(in, in_len, out, out_len, err);
    if (st == EID_OK && key == NULL) st = eid__fail(err, EID_E_INVALID_ARG, "key", "NULL");
    if (st == EID_OK) st = check_len("key", key_len, EID_SM4_KEY_LEN, err);
    if (st != EID_OK) return st;
    if (in_len == 0 || in_len % BLOCK != 0 || in_len > EID_CIPHER_IN_MAX) {
        return eid__fail(err, EID_E_FORMAT, "in",
                         "%zu bytes is not a whole number of 16-byte SM4 blocks", in_len);
    }
    return evp_decrypt(EVP_sm4_ecb(), 0, key, NULL, in, in_len, out, cap, out_len, err);
}

static eid_status cbc_args(const void *key, size_t key_len, const void *iv, size_t iv_len,
                           eid_error *err) {
    if (key == NULL) return eid__fail(err, EID_E_INVALID_ARG, "key", "NULL");
    if (iv == NULL) return eid__fail(err, EID_E_INVALID_ARG, "iv", "NULL");
    eid_status st = check_len("key", key_len, EID_AES256_KEY_LEN, err);
    if (st == EID_OK) st = check_len("iv", iv_len, EID_CBC_IV_LEN, err);
    return st;
}

eid_status eid_aes_cbc_encrypt(const void *key, size_t key_len, const void *iv, size_t iv_len,
                               const void *in, size_t in_len, void *out, size_t cap,
                               size_t *out_len, eid_error *err) {
    eid_status st = eid__check_io(in, in_len, out, out_len, err);
    if (st == EID_OK) st = cbc_args(key, key_len, iv, iv_len, err);
    if (st != EID_OK) return st;
    if (in_len > EID_CIPHER_IN_MAX) {
        return eid__fail(err, EID_E_INVALID_ARG, "in", "longer than %d bytes", EID_CIPHER_IN_MAX);
    }
    size_t need = (in_len / BLOCK + 1) * BLOCK;
    *out_len = need;
    if (need > cap) return eid__fail(err, EID_E_BUFFER_TOO_SMALL, "out", "%zu bytes needed", need);
    return evp_run(EVP_aes_256_cbc(), 1, 1, key, iv, in, in_len, out, cap, out_len, EID_E_CRYPTO,
                   err);
}

eid_status eid_aes_cbc_decrypt(const void *key, size_t key_len, const void *iv, size_t iv_len,
                               const void *in, size_t in_len, void *out, size_t cap,
                               size_t *out_len, eid_error *err) {
    eid_status st = eid__check_io(in, in_len, out, out_len, err);
    if (st == EID_OK) st = cbc_args(key, key_len, iv, iv_len, err);
    if (st != EID_OK) return st;
    if (in_len == 0 || in_len % BLOCK != 0 || in_len > EID_CIPHER_IN_MAX) {
        return eid__fail(err, EID_E_FORMAT, "in",
                         "%zu bytes is not a whole number of 16-byte AES blocks", in_len);
    }
    return evp_decrypt(EVP_aes_256_cbc(), 1, key, iv, in, in_len, out, cap, out_len, err);
}

/* ------------------------------------------------------------- SM4-GCM */

/* A non-NULL input for empty plaintexts: libgcrypt reads NULL as "in place". */
static const unsigned char empty[1];

static pthread_once_t gcry_once = PTHREAD_ONCE_INIT;
static int gcry_ready;

/* libgcrypt must be initialised once per process; a host that already did
 * (its own gcry_check_version) is left as it set itself up. Only ciphers
 * are used, so secure memory is not needed. */
static void gcry_setup(void) {
    if (!gcry_control(GCRYCTL_INITIALIZATION_FINISHED_P)) {
        if (gcry_check_version(NULL) == NULL) return;
        gcry_control(GCRYCTL_DISABLE_SECMEM, 0);
        gcry_control(GCRYCTL_INITIALIZATION_FINISHED, 0);
    }
    gcry_ready = 1;
}

static eid_status gcm_open(const void *key, size_t key_len, const void *iv, size_t iv_len,
                           gcry_cipher_hd_t *hd, eid_error *err) {
    if (key == NULL) return eid__fail(err, EID_E_INVALID_ARG, "key", "NULL");
    if (iv == NULL) return eid__fail(err, EID_E_INVALID_ARG, "iv", "NULL");
    eid_status st = check_len("key", key_len, EID_SM4_KEY_LEN, err);
    if (st == EID_OK) st = check_len("iv", iv_len, EID_GCM_IV_LEN, err);
    if (st != EID_OK) return st;
    pthread_once(&gcry_once, gcry_setup);
    if (!gcry_ready) return eid__fail(err, EID_E_CRYPTO, "key", "libgcrypt did not initialise");
    gcry_error_t e = gcry_cipher_open(hd, GCRY_CIPHER_SM4, GCRY_CIPHER_MODE_GCM, 0);
    if (e == 0) e = gcry_cipher_setkey(*hd, key, key_len);
    if (e == 0) e = gcry_cipher_setiv(*hd, iv, iv_len);
    if (e != 0) {
        int nomem = gcry_err_code(e) == GPG_ERR_ENOMEM;
        return eid__fail(err, nomem ? EID_E_NOMEM : EID_E_CRYPTO, "key", "SM4-GCM set-up failed");
    }
    return EID_OK;
}

eid_status eid_sm4_gcm_encrypt(const void *key, size_t key_len, const void *iv, size_t iv_len,
                               const void *in, size_t in_len, void *out, size_t cap,
                               size_t *out_len, unsigned char tag[EID_GCM_TAG_LEN],
                               eid_error *err) {
    gcry_cipher_hd_t hd = NULL;
    eid_status st = eid__check_io(in, in_len, out, out_len, err);
    if (st == EID_OK && tag == NULL) st = eid__fail(err, EID_E_INVALID_ARG, "tag", "NULL");
    if (st == EID_OK && in_len > EID_CIPHER_IN_MAX) {
        st = eid__fail(err, EID_E_INVALID_ARG, "in", "longer than %d bytes", EID_CIPHER_IN_MAX);
    }
    if (st != EID_OK) return st;
    *out_len = in_len;
    if (in_len > cap)
        return eid__fail(err, EID_E_BUFFER_TOO_SMALL, "out", "%zu bytes needed", in_len);
    st = gcm_open(key, key_len, iv, iv_len, &hd, err);
    if (st != EID_OK) goto fail;
    gcry_error_t e = gcry_cipher_final(hd);
    if (e == 0) e = gcry_cipher_encrypt(hd, out, in_len, in_len ? in : empty, in_len);
    if (e == 0) e = gcry_cipher_gettag(hd, tag, EID_GCM_TAG_LEN);
    if (e != 0) st = eid__fail(err, EID_E_CRYPTO, "in", "SM4-GCM encryption failed");
fail:
    gcry_cipher_close(hd);
    return st;
}

eid_status eid_sm4_gcm_decrypt(const void *key, size_t key_len, const void *iv, size_t iv_len,
                               const void *in, size_t in_len, const void *tag, size_t tag_len,
                               void *out, size_t cap, size_t *out_len, eid_error *err) {
    gcry_cipher_hd_t hd = NULL;
    unsigned char *tmp = NULL;
    size_t tmp_cap = in_len ? in_len : 1;
    eid_status st = eid__check_io(in, in_len, out, out_len, err);
    if (st == EID_OK && tag == NULL) st = eid__fail(err, EID_E_INVALID_ARG, "tag", "NULL");
    if (st == EID_OK && tag_len != EID_GCM_TAG_LEN) {
        st = eid__fail(err, EID_E_FORMAT, "tag", "%zu bytes (expected %d)", tag_len,
                       EID_GCM_TAG_LEN);
    }
    if (st == EID_OK && in_len > EID_CIPHER_IN_MAX) {
        st = eid__fail(err, EID_E_FORMAT, "in", "longer than %d bytes", EID_CIPHER_IN_MAX);
    }
    if (st != EID_OK) return st;
    st = gcm_open(key, key_len, iv, iv_len, &hd, err);
    if (st != EID_OK) goto fail;
    /* The tag is checked before any plaintext reaches the caller. */
    tmp = OPENSSL_malloc(tmp_cap);
    if (tmp == NULL) {
        st = eid__fail(err, EID_E_NOMEM, "in", "out of memory");
        goto fail;
    }
    gcry_error_t e = gcry_cipher_final(hd);
    if (e == 0) e = gcry_cipher_decrypt(hd, tmp, in_len, in_len ? in : empty, in_len);
    if (e != 0) {
        st = eid__fail(err, EID_E_CRYPTO, "in", "SM4-GCM decryption failed");
        goto fail;
    }
    if (gcry_cipher_checktag(hd, tag, tag_len) != 0) {
        st = eid__fail(err, EID_E_DECRYPT, "tag",
                       "SM4-GCM tag mismatch: wrong key or IV, or tampered ciphertext");
        goto fail;
    }
    st = eid__deliver(tmp, in_len, out, cap, out_len, err);
fail:
    if (tmp) OPENSSL_clear_free(tmp, tmp_cap);
    gcry_cipher_close(hd);
    return st;
}
