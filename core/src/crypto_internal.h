/* Shared by the identity-crypto files of libeidkit (pkey.c, sm2.c, rsa.c,
 * cipher.c, base64.c, eidinfo.c); not installed. */
#ifndef EIDKIT_CRYPTO_INTERNAL_H
#define EIDKIT_CRYPTO_INTERNAL_H

#include "eidkit/crypto.h"

#include "internal.h"

#include <openssl/evp.h>

struct eid_pkey {
    EVP_PKEY *pkey;
    eid_pkey_type type;
    int priv;
};

/* The checks every buffer-filling function starts with: out_len set,
 * in NULL only with in_len 0. Returns EID_OK or the failure recorded in err. */
eid_status eid__check_io(const void *in, size_t in_len, const void *out, const size_t *out_len,
                         eid_error *err);

/* Copy n bytes of tmp to out when they fit in cap (else
 * EID_E_BUFFER_TOO_SMALL with *out_len = n). */
eid_status eid__deliver(const void *tmp, size_t n, void *out, size_t cap, size_t *out_len,
                        eid_error *err);

#endif
