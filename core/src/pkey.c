/* Keys for the identity crypto: SM2 and RSA, public or private, from PEM. */
#include "eidkit/crypto.h"

#include "crypto_internal.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/decoder.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <string.h>

/* Encrypted PEM is refused: the passphrase callback supplies none. */
static int no_passphrase(char *buf, int size, int rwflag, void *u) {
    (void)buf, (void)size, (void)rwflag, (void)u;
    return -1;
}

/* Whether the n bytes at p contain the NUL-terminated word. */
static int contains(const void *p, size_t n, const char *word) {
    size_t w = strlen(word);
    const char *s = p;
    for (size_t i = 0; i + w <= n; i++)
        if (memcmp(s + i, word, w) == 0) return 1;
    return 0;
}

/* A public key in SPKI or PKCS#1 ("RSA PUBLIC KEY") form; NULL if none. */
static EVP_PKEY *read_public(const void *pem, size_t len) {
    EVP_PKEY *pk = NULL;
    BIO *bio = BIO_new_mem_buf(pem, (int)len);
    if (bio == NULL) return NULL;
    pk = PEM_read_bio_PUBKEY(bio, NULL, no_passphrase, NULL);
    if (pk == NULL) {
        BIO_free(bio);
        bio = BIO_new_mem_buf(pem, (int)len);
        if (bio == NULL) return NULL;
        OSSL_DECODER_CTX *dctx = OSSL_DECODER_CTX_new_for_pkey(&pk, "PEM", "type-specific", "RSA",
                                                               EVP_PKEY_PUBLIC_KEY, NULL, NULL);
        if (dctx != NULL && !OSSL_DECODER_from_bio(dctx, bio)) pk = NULL;
        OSSL_DECODER_CTX_free(dctx);
    }
    BIO_free(bio);
    return pk;
}

eid_status eid_pkey_load(const void *pem, size_t pem_len, eid_pkey **out, eid_error *err) {
    eid_status st = EID_OK;
    EVP_PKEY *pk = NULL;
    BIO *bio = NULL;
    int priv = 1;
    if (out == NULL || pem == NULL)
        return eid__fail(err, EID_E_INVALID_ARG, "key", "NULL argument");
    *out = NULL;
    if (pem_len == 0 || pem_len > EID_PEM_MAX) {
        return eid__fail(err, EID_E_KEY, "key", "PEM text of %zu bytes (expected 1..%d)", pem_len,
                         EID_PEM_MAX);
    }
    if (contains(pem, pem_len, "ENCRYPTED")) {
        return eid__fail(err, EID_E_KEY, "key", "encrypted PEM is not supported");
    }
    bio = BIO_new_mem_buf(pem, (int)pem_len);
    if (bio == NULL) {
        st = eid__fail(err, EID_E_NOMEM, "key", "out of memory");
        goto fail;
    }
    pk = PEM_read_bio_PrivateKey(bio, NULL, no_passphrase, NULL);
    if (pk == NULL) {
        priv = 0;
        pk = read_public(pem, pem_len);
    }
    if (pk == NULL) {
        unsigned long e = ERR_peek_last_error();
        if (ERR_GET_REASON(e) == ERR_R_MALLOC_FAILURE) {
            st = eid__fail(err, EID_E_NOMEM, "key", "out of memory");
        } else {
            st = eid__fail(err, EID_E_KEY, "key",
                           "no SM2 or RSA key in the PEM text (PKCS#8, SEC1, PKCS#1 or SPKI)");
        }
        goto fail;
    }
    eid_pkey_type type;
    if (EVP_PKEY_is_a(pk, "SM2")) {
        type = EID_PKEY_SM2;
    } else if (EVP_PKEY_is_a(pk, "RSA")) {
        type = EID_PKEY_RSA;
    } else {
        st = eid__fail(err, EID_E_KEY, "key", "a %s key; expected SM2 (curve sm2p256v1) or RSA",
                       EVP_PKEY_get0_type_name(pk) ? EVP_PKEY_get0_type_name(pk) : "unknown");
        goto fail;
    }
    eid_pkey *k = OPENSSL_zalloc(sizeof *k);
    if (k == NULL) {
        st = eid__fail(err, EID_E_NOMEM, "key", "out of memory");
        goto fail;
    }
    k->pkey = pk;
    k->type = type;
    k->priv = priv;
    pk = NULL;
    *out = k;
fail:
    EVP_PKEY_free(pk);
    BIO_free(bio);
    ERR_clear_error();
    return st;
}

eid_status eid_pkey_load_file(const char *path, eid_pkey **out, eid_error *err) {
    eid_status st = EID_OK;
    char *buf = NULL;
    size_t len = 0;
    FILE *f = NULL;
    if (out == NULL || path == NULL)
        return eid__fail(err, EID_E_INVALID_ARG, "key", "NULL argument");
    *out = NULL;
    f = fopen(path, "rb");
    if (f == NULL) {
        st = eid__fail(err, EID_E_KEY, "key", "cannot open the key file: %s", strerror(errno));
        goto fail;
    }
    buf = OPENSSL_malloc(EID_PEM_MAX + 1);
    if (buf == NULL) {
        st = eid__fail(err, EID_E_NOMEM, "key", "out of memory");
        goto fail;
    }
    len = fread(buf, 1, EID_PEM_MAX + 1, f);
    if (ferror(f)) {
        st = eid__fail(err, EID_E_KEY, "key", "cannot read the key file");
        goto fail;
    }
    if (len > EID_PEM_MAX) {
        st = eid__fail(err, EID_E_KEY, "key", "the key file is longer than %d bytes", EID_PEM_MAX);
        goto fail;
    }
    st = eid_pkey_load(buf, len, out, err);
fail:
    if (buf != NULL) OPENSSL_clear_free(buf, EID_PEM_MAX + 1);
    if (f != NULL) fclose(f);
    return st;
}

void eid_pkey_free(eid_pkey *key) {
    if (key == NULL) return;
    EVP_PKEY_free(key->pkey);
    OPENSSL_free(key);
}

eid_pkey_type eid_pkey_get_type(const eid_pkey *key) { return key->type; }

int eid_pkey_is_private(const eid_pkey *key) { return key->priv; }

eid_status eid_pkey_public_pem(const eid_pkey *key, char *out, size_t cap, size_t *out_len,
                               eid_error *err) {
    eid_status st = EID_OK;
    BIO *bio = NULL;
    if (key == NULL || out == NULL || out_len == NULL) {
        return eid__fail(err, EID_E_INVALID_ARG, "key", "NULL argument");
    }
    bio = BIO_new(BIO_s_mem());
    if (bio == NULL || !PEM_write_bio_PUBKEY(bio, key->pkey)) {
        st = eid__fail(err, EID_E_NOMEM, "key", "cannot write the public key");
        goto fail;
    }
    char *p;
    long n = BIO_get_mem_data(bio, &p);
    *out_len = (size_t)n;
    if ((size_t)n + 1 > cap) {
        st = EID_E_BUFFER_TOO_SMALL;
        eid__fail(err, st, "out", "%ld bytes needed", n + 1);
        goto fail;
    }
    memcpy(out, p, (size_t)n);
    out[n] = '\0';
fail:
    BIO_free(bio);
    ERR_clear_error();
    return st;
}
