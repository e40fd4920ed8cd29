/*
 * eidkit identity crypto: the ciphers of E证通's EidInfo and of the FaceID
 * field encryption (`Encryption`), on OpenSSL 3.0's EVP (SM2, SM4-ECB,
 * AES-256-CBC, RSA PKCS#1 v1.5) and libgcrypt (SM4-GCM, which Debian 12's
 * OpenSSL lacks). Nothing here implements a cipher or a mode itself.
 *
 * Conventions are those of eidkit.h, and for every function here:
 *   - Output goes to a caller buffer `out` of `cap` bytes; `*out_len` receives
 *     the length written. On EID_E_BUFFER_TOO_SMALL nothing is written and
 *     `*out_len` says how many bytes are needed; the *_len() helpers give an
 *     upper bound in advance.
 *   - On any failure no partial plaintext is left in `out`: whatever was
 *     written is wiped (OPENSSL_cleanse) before returning. Intermediate
 *     buffers holding keys or plaintext are wiped before they are freed.
 *   - eid_error messages name what was wrong (the field, the length, the
 *     layout), never a key, a plaintext or a ciphertext.
 *   - NULL for a required pointer is EID_E_INVALID_ARG; `in` may be NULL only
 *     with in_len 0.
 *   - Thread safety: every function is safe to call from any thread. An
 *     eid_pkey is immutable once loaded and may be shared by threads.
 *
 * Failures: EID_E_KEY (a key that cannot be read, or of the wrong type or
 * half), EID_E_DECRYPT (authentication failed: wrong key, bad tag, a
 * tampered or truncated ciphertext), EID_E_FORMAT (input of the wrong
 * shape: bad base64, a length that cannot be, an unknown SM2 layout, an
 * EidInfo plaintext that is not the documented JSON), EID_E_CRYPTO (OpenSSL
 * or libgcrypt refused for another reason), EID_E_NOMEM.
 */
#ifndef EIDKIT_CRYPTO_H
#define EIDKIT_CRYPTO_H

#include "eidkit.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------ keys */

/* A public or private SM2 or RSA key. Opaque, immutable once loaded. */
typedef struct eid_pkey eid_pkey;

typedef enum eid_pkey_type {
    EID_PKEY_SM2 = 1, /* an EC key on curve SM2 (sm2p256v1) */
    EID_PKEY_RSA = 2
} eid_pkey_type;

/* Longest PEM text accepted (bytes). */
#define EID_PEM_MAX (64 * 1024)

/* Load one key from PEM text of pem_len bytes. Accepted: a private key as
 * PKCS#8 ("PRIVATE KEY"), SEC1 ("EC PRIVATE KEY", with or without an
 * "EC PARAMETERS" block before it, as `gmssl ecparam -genkey` and
 * `openssl ecparam -genkey` write it) or PKCS#1 ("RSA PRIVATE KEY"); a
 * public key as SPKI ("PUBLIC KEY") or PKCS#1 ("RSA PUBLIC KEY"). Encrypted
 * PEM is refused. An EC key on any curve but SM2 is EID_E_KEY.
 * On success *out owns the key: free it with eid_pkey_free. The PEM bytes
 * are not kept; the caller may wipe them at once. */
EID_API eid_status eid_pkey_load(const void *pem, size_t pem_len, eid_pkey **out, eid_error *err);

/* eid_pkey_load from a file (at most EID_PEM_MAX bytes). The bytes read are
 * wiped before returning. An unreadable file is EID_E_KEY with the reason
 * (the path is not repeated in the message). */
EID_API eid_status eid_pkey_load_file(const char *path, eid_pkey **out, eid_error *err);

/* Free a key, wiping its private part (OpenSSL clears key material on
 * free). NULL is a no-op. */
EID_API void eid_pkey_free(eid_pkey *key);

/* The key's type, and whether it holds the private half (1) or only the
 * public one (0). key must not be NULL. */
EID_API eid_pkey_type eid_pkey_get_type(const eid_pkey *key);
EID_API int eid_pkey_is_private(const eid_pkey *key);

/* The public half of key in SPKI PEM ("-----BEGIN PUBLIC KEY-----"), into
 * out/cap; *out_len excludes the NUL written after it. */
EID_API eid_status eid_pkey_public_pem(const eid_pkey *key, char *out, size_t cap, size_t *out_len,
                                       eid_error *err);

/* ------------------------------------------------------------------- SM2
 * SM2 public-key encryption (GB/T 32918.4) through OpenSSL's EVP. The
 * ciphertext is C1 (the point x1, y1: 64 bytes), C3 (SM3 hash: 32 bytes)
 * and C2 (as long as the plaintext), in one of three encodings. */
typedef enum eid_sm2_layout {
    EID_SM2_AUTO = 0,       /* decrypt only: detect (docs/internals/crypto.md) */
    EID_SM2_C1C3C2_04 = 1,  /* 04 || x || y || C3 || C2: Tencent's SDKs, gm-crypto */
    EID_SM2_C1C3C2_RAW = 2, /* x || y || C3 || C2: sm-crypto's mode 1 */
    EID_SM2_DER = 3         /* SEQUENCE {x, y, C3, C2}: OpenSSL, GmSSL v2 */
} eid_sm2_layout;

/* Upper bound of the ciphertext length for plain_len bytes in layout. */
EID_API size_t eid_sm2_ciphertext_len(eid_sm2_layout layout, size_t plain_len);

/* Encrypt in_len bytes (1..EID_SM2_PLAIN_MAX) to key (SM2, public or
 * private) in layout (not AUTO). */
#define EID_SM2_PLAIN_MAX 4096
EID_API eid_status eid_sm2_encrypt(const eid_pkey *key, eid_sm2_layout layout, const void *in,
                                   size_t in_len, void *out, size_t cap, size_t *out_len,
                                   eid_error *err);

/* Decrypt with key (SM2 private). layout EID_SM2_AUTO detects which of the
 * three encodings in is; *found (may be NULL) receives the layout used.
 * The plaintext is at most in_len - 96 bytes. */
EID_API eid_status eid_sm2_decrypt(const eid_pkey *key, eid_sm2_layout layout, const void *in,
                                   size_t in_len, void *out, size_t cap, size_t *out_len,
                                   eid_sm2_layout *found, eid_error *err);

/* ------------------------------------------------------------------- RSA
 * RSA with PKCS#1 v1.5 padding (what FaceID's AES-256-CBC CiphertextBlob
 * uses). Plaintexts longer than modulus - 11 bytes are encrypted in chunks
 * of that size and the ciphertext blocks concatenated, as the official Go
 * SDK does; decryption accepts any whole number of blocks. */

/* The ciphertext length for plain_len bytes under key. */
EID_API size_t eid_rsa_ciphertext_len(const eid_pkey *key, size_t plain_len);

EID_API eid_status eid_rsa_encrypt(const eid_pkey *key, const void *in, size_t in_len, void *out,
                                   size_t cap, size_t *out_len, eid_error *err);
EID_API eid_status eid_rsa_decrypt(const eid_pkey *key, const void *in, size_t in_len, void *out,
                                   size_t cap, size_t *out_len, eid_error *err);

/* ------------------------------------------------------------- symmetric
 * Each takes the key and IV as pointer + length and checks the lengths:
 * SM4 keys are 16 bytes, AES-256 keys 32; the CBC IV is 16 bytes, the GCM IV
 * 12. Lengths of in: SM4-ECB needs a multiple of 16 (no padding is added or
 * removed); AES-256-CBC adds PKCS#7 padding (ciphertext = in_len rounded up
 * to the next multiple of 16, plus 16 when already one) and checks it on
 * decryption; SM4-GCM's ciphertext is as long as the plaintext, with a
 * separate 16-byte tag and no AAD. At most EID_CIPHER_IN_MAX bytes in. */
#define EID_SM4_KEY_LEN    16
#define EID_AES256_KEY_LEN 32
#define EID_CBC_IV_LEN     16
#define EID_GCM_IV_LEN     12
#define EID_GCM_TAG_LEN    16
#define EID_CIPHER_IN_MAX  (16 * 1024 * 1024)

EID_API eid_status eid_sm4_ecb_encrypt(const void *key, size_t key_len, const void *in,
                                       size_t in_len, void *out, size_t cap, size_t *out_len,
                                       eid_error *err);
EID_API eid_status eid_sm4_ecb_decrypt(const void *key, size_t key_len, const void *in,
                                       size_t in_len, void *out, size_t cap, size_t *out_len,
                                       eid_error *err);

EID_API eid_status eid_aes_cbc_encrypt(const void *key, size_t key_len, const void *iv,
                                       size_t iv_len, const void *in, size_t in_len, void *out,
                                       size_t cap, size_t *out_len, eid_error *err);
EID_API eid_status eid_aes_cbc_decrypt(const void *key, size_t key_len, const void *iv,
                                       size_t iv_len, const void *in, size_t in_len, void *out,
                                       size_t cap, size_t *out_len, eid_error *err);

/* tag receives EID_GCM_TAG_LEN bytes. */
EID_API eid_status eid_sm4_gcm_encrypt(const void *key, size_t key_len, const void *iv,
                                       size_t iv_len, const void *in, size_t in_len, void *out,
                                       size_t cap, size_t *out_len,
                                       unsigned char tag[EID_GCM_TAG_LEN], eid_error *err);
/* A tag that does not verify is EID_E_DECRYPT; nothing is written to out. */
EID_API eid_status eid_sm4_gcm_decrypt(const void *key, size_t key_len, const void *iv,
                                       size_t iv_len, const void *in, size_t in_len,
                                       const void *tag, size_t tag_len, void *out, size_t cap,
                                       size_t *out_len, eid_error *err);

/* ---------------------------------------------------------------- base64
 * Standard alphabet with '=' padding (RFC 4648 §4), as Tencent sends it. */

/* Bytes needed to encode in_len bytes, NUL included. */
EID_API size_t eid_base64_encoded_len(size_t in_len);
/* Encode; out gets a NUL after *out_len characters. */
EID_API eid_status eid_base64_encode(const void *in, size_t in_len, char *out, size_t cap,
                                     size_t *out_len);
/* Decode strictly: only the alphabet, padding only at the end, length a
 * multiple of 4; anything else is EID_E_FORMAT. At most in_len / 4 * 3
 * bytes come out. */
EID_API eid_status eid_base64_decode(const char *in, size_t in_len, void *out, size_t cap,
                                     size_t *out_len, eid_error *err);

/* --------------------------------------------------------------- EidInfo */

#define EID_IDENTITY_NAME_MAX   256 /* bytes, NUL excluded */
#define EID_IDENTITY_IDTYPE_MAX 16
#define EID_IDENTITY_IDNUM_MAX  64
#define EID_EIDINFO_B64_MAX     (64 * 1024) /* longest DesKey or UserInfo accepted */

/* The verified identity inside GetEidResult's EidInfo.UserInfo. A plain
 * struct the caller owns; wipe it with eid_identity_wipe when done. */
typedef struct eid_identity {
    char name[EID_IDENTITY_NAME_MAX + 1];     /* UTF-8 */
    char idtype[EID_IDENTITY_IDTYPE_MAX + 1]; /* "01": PRC ID card */
    char idnum[EID_IDENTITY_IDNUM_MAX + 1];
} eid_identity;

/* Decrypt an EidInfo: base64-decode des_key and SM2-decrypt it with key
 * (the merchant's SM2 private key; any of the three layouts, detected) to a
 * 16-byte SM4 session key; base64-decode user_info and SM4-ECB-decrypt it
 * with that key; parse the JSON {"name","idtype","idnum"} (filler after the
 * final '}' is ignored: the cipher is used without padding) into *out.
 * Every intermediate (session key, plaintext, parsed strings) is wiped. On
 * failure *out is zeroed. */
EID_API eid_status eid_eidinfo_decrypt(const eid_pkey *key, const char *des_key, size_t des_key_len,
                                       const char *user_info, size_t user_info_len,
                                       eid_identity *out, eid_error *err);

/* The reverse, for the simulator and tests: a fresh random SM4 session key,
 * SM2-encrypted to key (public) in layout, and the JSON of *id zero-filled to
 * a multiple of 16 and SM4-ECB-encrypted, both base64, NUL-terminated, into
 * des_key (cap des_key_cap) and user_info (cap user_info_cap). */
EID_API eid_status eid_eidinfo_encrypt(const eid_pkey *key, eid_sm2_layout layout,
                                       const eid_identity *id, char *des_key, size_t des_key_cap,
                                       char *user_info, size_t user_info_cap, eid_error *err);

/* Wipe an identity (OPENSSL_cleanse). NULL is a no-op. */
EID_API void eid_identity_wipe(eid_identity *id);

#ifdef __cplusplus
}
#endif

#endif /* EIDKIT_CRYPTO_H */
