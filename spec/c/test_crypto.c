/* The identity crypto of eidkit/crypto.h: known answers from the standards
 * and from Tencent's own SM4-GCM, round trips in every SM2 layout, key forms,
 * and every failure the header promises (wrong key, truncated input, bad
 * tag, bad base64, wrong lengths) with no plaintext left behind.
 * Usage: test_crypto FIXTURE_DIR (spec/fixtures/crypto). */
#include "eidkit/crypto.h"

#include "check.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *dir;

static eid_pkey *load(const char *name) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    eid_pkey *k = NULL;
    eid_error err = {0};
    eid_status st = eid_pkey_load_file(path, &k, &err);
    if (st != EID_OK) {
        /* Every case after this one uses the key: stop rather than crash. */
        fprintf(stderr, "test_crypto: cannot load %s: %s\n", path, err.message);
        exit(1);
    }
    return k;
}

/* The ciphertext on the line of rsa_ciphertexts.txt that starts with tag,
 * hex-decoded into out; its length. Missing: stop, as load() does. */
static size_t load_ciphertext(const char *tag, unsigned char *out, size_t cap) {
    char path[512], line[2048];
    snprintf(path, sizeof path, "%s/rsa_ciphertexts.txt", dir);
    FILE *f = fopen(path, "r");
    size_t taglen = strlen(tag), n = 0;
    while (f != NULL && fgets(line, sizeof line, f) != NULL) {
        if (strncmp(line, tag, taglen) != 0 || line[taglen] != ' ') continue;
        unsigned int byte;
        for (const char *p = line + taglen + 1; n < cap && sscanf(p, "%2x", &byte) == 1; p += 2)
            out[n++] = (unsigned char)byte;
        break;
    }
    if (f != NULL) fclose(f);
    if (n == 0) {
        fprintf(stderr, "test_crypto: no ciphertext '%s' in %s\n", tag, path);
        exit(1);
    }
    return n;
}

static size_t unhex(const char *hex, unsigned char *out) {
    size_t n = strlen(hex) / 2;
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        sscanf(hex + 2 * i, "%2x", &v);
        out[i] = (unsigned char)v;
    }
    return n;
}

static int all_zero(const unsigned char *p, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (p[i]) return 0;
    return 1;
}

static void test_known_answers(void) {
    unsigned char key[32], pt[64], want[64], out[96], tag[16];
    size_t n = 0;
    /* SM4 (GB/T 32907-2016, appendix A example 1). */
    unhex("0123456789abcdeffedcba9876543210", key);
    unhex("0123456789abcdeffedcba9876543210", pt);
    unhex("681edf34d206965e86b3e94f536e4246", want);
    CHECK(eid_sm4_ecb_encrypt(key, 16, pt, 16, out, sizeof out, &n, NULL) == EID_OK);
    CHECK(n == 16 && memcmp(out, want, 16) == 0);
    CHECK(eid_sm4_ecb_decrypt(key, 16, want, 16, out, sizeof out, &n, NULL) == EID_OK);
    CHECK(n == 16 && memcmp(out, pt, 16) == 0);

    /* AES-256-CBC (NIST SP 800-38A F.2.5, first block), plus a PKCS#7 block. */
    unhex("603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4", key);
    unsigned char iv[16];
    unhex("000102030405060708090a0b0c0d0e0f", iv);
    unhex("6bc1bee22e409f96e93d7e117393172a", pt);
    unhex("f58c4c04d6e5f1ba779eabfb5f7bfbd6", want);
    CHECK(eid_aes_cbc_encrypt(key, 32, iv, 16, pt, 16, out, sizeof out, &n, NULL) == EID_OK);
    CHECK(n == 32 && memcmp(out, want, 16) == 0);
    unsigned char back[48];
    size_t m = 0;
    CHECK(eid_aes_cbc_decrypt(key, 32, iv, 16, out, n, back, sizeof back, &m, NULL) == EID_OK);
    CHECK(m == 16 && memcmp(back, pt, 16) == 0);

    /* SM4-GCM: Tencent's faceid-api-crypto-nodejs and libgcrypt agree
     * (eid-api.md §6.3): zero key and IV, "hello". */
    memset(key, 0, 16);
    memset(iv, 0, 12);
    unhex("1587c6137e", want);
    CHECK(eid_sm4_gcm_encrypt(key, 16, iv, 12, "hello", 5, out, sizeof out, &n, tag, NULL) ==
          EID_OK);
    CHECK(n == 5 && memcmp(out, want, 5) == 0);
    unhex("0fbff8442dac703ee3a837292dc92f2a", want);
    CHECK(memcmp(tag, want, 16) == 0);
    CHECK(eid_sm4_gcm_decrypt(key, 16, iv, 12, out, 5, tag, 16, back, sizeof back, &m, NULL) ==
          EID_OK);
    CHECK(m == 5 && memcmp(back, "hello", 5) == 0);
}

static void test_symmetric_failures(void) {
    unsigned char key[32] = {1}, iv[16] = {2}, out[64], back[64], tag[16];
    size_t n = 0, m = 0;
    eid_error err = {0};
    /* Wrong lengths of key, IV, block. */
    CHECK(eid_sm4_ecb_encrypt(key, 15, "0123456789abcdef", 16, out, sizeof out, &n, &err) ==
          EID_E_INVALID_ARG);
    CHECK_STR(err.field, "key");
    CHECK(eid_sm4_ecb_encrypt(key, 16, "abc", 3, out, sizeof out, &n, NULL) == EID_E_INVALID_ARG);
    CHECK(eid_sm4_ecb_decrypt(key, 16, "abc", 3, out, sizeof out, &n, NULL) == EID_E_FORMAT);
    CHECK(eid_aes_cbc_encrypt(key, 16, iv, 16, "x", 1, out, sizeof out, &n, NULL) ==
          EID_E_INVALID_ARG);
    CHECK(eid_aes_cbc_encrypt(key, 32, iv, 12, "x", 1, out, sizeof out, &n, NULL) ==
          EID_E_INVALID_ARG);
    CHECK(eid_sm4_gcm_encrypt(key, 16, iv, 16, "x", 1, out, sizeof out, &n, tag, NULL) ==
          EID_E_INVALID_ARG);
    /* Buffer too small says how much is needed and writes nothing. */
    memset(out, 0, sizeof out);
    CHECK(eid_aes_cbc_encrypt(key, 32, iv, 16, "0123456789abcdef", 16, out, 31, &n, NULL) ==
          EID_E_BUFFER_TOO_SMALL);
    CHECK(n == 32 && all_zero(out, sizeof out));

    /* AES-256-CBC: a wrong key fails the padding check (or, 1 in ~256,
     * yields garbage; the fixed keys here do not). Nothing comes out. */
    static const char secret[] = "\xe9\x9f\xa6\xe5\xb0\x8f\xe5\xae\x9d 11204416541220243X";
    CHECK(eid_aes_cbc_encrypt(key, 32, iv, 16, secret, sizeof secret - 1, out, sizeof out, &n,
                              NULL) == EID_OK);
    unsigned char wrong[32] = {9};
    memset(back, 0, sizeof back);
    CHECK(eid_aes_cbc_decrypt(wrong, 32, iv, 16, out, n, back, sizeof back, &m, &err) ==
          EID_E_DECRYPT);
    CHECK(all_zero(back, sizeof back));
    CHECK(strstr(err.message, "11204416541220243X") == NULL);
    CHECK(eid_aes_cbc_decrypt(key, 32, iv, 16, out, n - 1, back, sizeof back, &m, NULL) ==
          EID_E_FORMAT);
    CHECK(eid_aes_cbc_decrypt(key, 32, iv, 16, out, 0, back, sizeof back, &m, NULL) ==
          EID_E_FORMAT);
    /* Empty plaintext: one block of padding. */
    CHECK(eid_aes_cbc_encrypt(key, 32, iv, 16, NULL, 0, out, sizeof out, &n, NULL) == EID_OK);
    CHECK(n == 16);
    CHECK(eid_aes_cbc_decrypt(key, 32, iv, 16, out, n, back, sizeof back, &m, NULL) == EID_OK);
    CHECK(m == 0);

    /* SM4-GCM: a flipped ciphertext bit, a flipped tag bit, a wrong IV, a
     * short tag; each EID_E_DECRYPT (short tag: FORMAT) and no plaintext. */
    CHECK(eid_sm4_gcm_encrypt(key, 16, iv, 12, secret, sizeof secret - 1, out, sizeof out, &n, tag,
                              NULL) == EID_OK);
    out[3] ^= 1;
    memset(back, 0, sizeof back);
    CHECK(eid_sm4_gcm_decrypt(key, 16, iv, 12, out, n, tag, 16, back, sizeof back, &m, &err) ==
          EID_E_DECRYPT);
    CHECK(all_zero(back, sizeof back));
    CHECK_STR(err.field, "tag");
    out[3] ^= 1;
    tag[15] ^= 0x80;
    CHECK(eid_sm4_gcm_decrypt(key, 16, iv, 12, out, n, tag, 16, back, sizeof back, &m, NULL) ==
          EID_E_DECRYPT);
    tag[15] ^= 0x80;
    CHECK(eid_sm4_gcm_decrypt(key, 16, iv, 12, out, n, tag, 15, back, sizeof back, &m, NULL) ==
          EID_E_FORMAT);
    CHECK(eid_sm4_gcm_decrypt(key, 16, iv, 12, out, n - 1, tag, 16, back, sizeof back, &m, NULL) ==
          EID_E_DECRYPT);
    CHECK(all_zero(back, sizeof back));
    CHECK(eid_sm4_gcm_decrypt(key, 16, iv, 12, out, n, tag, 16, back, sizeof back, &m, NULL) ==
          EID_OK);
    CHECK(m == sizeof secret - 1 && memcmp(back, secret, m) == 0);
    /* Empty plaintext: empty ciphertext and a tag that still verifies. */
    CHECK(eid_sm4_gcm_encrypt(key, 16, iv, 12, NULL, 0, out, sizeof out, &n, tag, NULL) == EID_OK);
    CHECK(n == 0);
    CHECK(eid_sm4_gcm_decrypt(key, 16, iv, 12, out, 0, tag, 16, back, sizeof back, &m, NULL) ==
          EID_OK);
    CHECK(m == 0);
    tag[0] ^= 1;
    CHECK(eid_sm4_gcm_decrypt(key, 16, iv, 12, out, 0, tag, 16, back, sizeof back, &m, NULL) ==
          EID_E_DECRYPT);
}

static void test_keys(void) {
    static const struct {
        const char *file;
        eid_pkey_type type;
        int priv;
    } forms[] = {
        {"sm2_sec1.pem", EID_PKEY_SM2, 1},          {"sm2_sec1_bare.pem", EID_PKEY_SM2, 1},
        {"sm2_gmssl.pem", EID_PKEY_SM2, 1},         {"sm2_pkcs8.pem", EID_PKEY_SM2, 1},
        {"sm2_pub.pem", EID_PKEY_SM2, 0},           {"rsa1024.pem", EID_PKEY_RSA, 1},
        {"rsa1024_pkcs1.pem", EID_PKEY_RSA, 1},     {"rsa1024_pub.pem", EID_PKEY_RSA, 0},
        {"rsa1024_pkcs1_pub.pem", EID_PKEY_RSA, 0},
    };
    for (size_t i = 0; i < sizeof forms / sizeof forms[0]; i++) {
        eid_pkey *k = load(forms[i].file);
        if (k == NULL) continue;
        CHECK(eid_pkey_get_type(k) == forms[i].type);
        CHECK(eid_pkey_is_private(k) == forms[i].priv);
        eid_pkey_free(k);
    }
    /* The four SM2 files hold one key: each public PEM is sm2_pub.pem. */
    char want[512], got[512];
    size_t wn = 0, gn = 0;
    eid_pkey *pub = load("sm2_pub.pem");
    CHECK(eid_pkey_public_pem(pub, want, sizeof want, &wn, NULL) == EID_OK);
    for (int i = 0; i < 4; i++) {
        eid_pkey *k = load(forms[i].file);
        CHECK(eid_pkey_public_pem(k, got, sizeof got, &gn, NULL) == EID_OK);
        CHECK(gn == wn && memcmp(got, want, wn) == 0);
        eid_pkey_free(k);
    }
    CHECK(eid_pkey_public_pem(pub, got, 10, &gn, NULL) == EID_E_BUFFER_TOO_SMALL);
    CHECK(gn == wn);
    eid_pkey_free(pub);

    eid_pkey *k = NULL;
    eid_error err = {0};
    char path[512];
    snprintf(path, sizeof path, "%s/p256.pem", dir);
    CHECK(eid_pkey_load_file(path, &k, &err) == EID_E_KEY && k == NULL);
    CHECK(strstr(err.message, "SM2") != NULL);
    CHECK(eid_pkey_load("not a key", 9, &k, &err) == EID_E_KEY && k == NULL);
    CHECK(eid_pkey_load("", 0, &k, &err) == EID_E_KEY);
    const char enc[] = "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED "
                       "PRIVATE KEY-----\n";
    CHECK(eid_pkey_load(enc, sizeof enc - 1, &k, &err) == EID_E_KEY);
    CHECK(strstr(err.message, "encrypted") != NULL);
    snprintf(path, sizeof path, "%s/no-such-key.pem", dir);
    CHECK(eid_pkey_load_file(path, &k, &err) == EID_E_KEY);
    CHECK(strstr(err.message, "no-such-key") == NULL); /* the path is not repeated */
    eid_pkey_free(NULL);
}

static void test_sm2(void) {
    eid_pkey *priv = load("sm2_sec1.pem"), *pub = load("sm2_pub.pem");
    eid_pkey *other = load("sm2_other.pem"), *rsa = load("rsa1024.pem");
    unsigned char ct[256], pt[64];
    size_t n = 0, m = 0;
    eid_error err = {0};
    static const unsigned char key[16] = "0123456789ABCDEF";
    static const eid_sm2_layout layouts[] = {EID_SM2_C1C3C2_04, EID_SM2_C1C3C2_RAW, EID_SM2_DER};
    for (int round = 0; round < 10; round++) {
        for (size_t i = 0; i < 3; i++) {
            eid_sm2_layout found = EID_SM2_AUTO;
            CHECK(eid_sm2_encrypt(pub, layouts[i], key, 16, ct, sizeof ct, &n, NULL) == EID_OK);
            CHECK(n <= eid_sm2_ciphertext_len(layouts[i], 16));
            if (layouts[i] == EID_SM2_C1C3C2_04) CHECK(n == 113 && ct[0] == 0x04);
            if (layouts[i] == EID_SM2_C1C3C2_RAW) CHECK(n == 112);
            if (layouts[i] == EID_SM2_DER) CHECK(ct[0] == 0x30);
            memset(pt, 0, sizeof pt);
            CHECK(eid_sm2_decrypt(priv, EID_SM2_AUTO, ct, n, pt, sizeof pt, &m, &found, NULL) ==
                  EID_OK);
            CHECK(m == 16 && memcmp(pt, key, 16) == 0);
            CHECK(found == layouts[i]);
            CHECK(eid_sm2_decrypt(priv, layouts[i], ct, n, pt, sizeof pt, &m, NULL, NULL) ==
                  EID_OK);
            /* The wrong key: DECRYPT, no plaintext. */
            memset(pt, 0, sizeof pt);
            CHECK(eid_sm2_decrypt(other, EID_SM2_AUTO, ct, n, pt, sizeof pt, &m, NULL, &err) ==
                  EID_E_DECRYPT);
            CHECK(all_zero(pt, sizeof pt));
            /* A flipped bit in C2 (the last byte): DECRYPT. */
            ct[n - 1] ^= 1;
            CHECK(eid_sm2_decrypt(priv, EID_SM2_AUTO, ct, n, pt, sizeof pt, &m, NULL, NULL) ==
                  EID_E_DECRYPT);
            ct[n - 1] ^= 1;
            /* Truncated: C2 loses a byte (hash mismatch) or the layout is gone. */
            eid_status st =
                eid_sm2_decrypt(priv, EID_SM2_AUTO, ct, n - 1, pt, sizeof pt, &m, NULL, NULL);
            CHECK(st == EID_E_DECRYPT || st == EID_E_FORMAT);
            CHECK(eid_sm2_decrypt(priv, EID_SM2_AUTO, ct, 50, pt, sizeof pt, &m, NULL, NULL) ==
                  EID_E_FORMAT);
        }
    }
    /* A layout forced to the wrong one is FORMAT. */
    CHECK(eid_sm2_encrypt(pub, EID_SM2_DER, key, 16, ct, sizeof ct, &n, NULL) == EID_OK);
    CHECK(eid_sm2_decrypt(priv, EID_SM2_C1C3C2_04, ct, n, pt, sizeof pt, &m, NULL, NULL) ==
          EID_E_FORMAT);
    /* Random bytes of the right length are not a ciphertext. */
    memset(ct, 0x5a, 113);
    ct[0] = 0x04;
    CHECK(eid_sm2_decrypt(priv, EID_SM2_AUTO, ct, 113, pt, sizeof pt, &m, NULL, &err) ==
          EID_E_FORMAT);
    /* Keys of the wrong type or half. */
    CHECK(eid_sm2_decrypt(pub, EID_SM2_AUTO, ct, 113, pt, sizeof pt, &m, NULL, NULL) == EID_E_KEY);
    CHECK(eid_sm2_encrypt(rsa, EID_SM2_DER, key, 16, ct, sizeof ct, &n, NULL) == EID_E_KEY);
    CHECK(eid_sm2_encrypt(pub, EID_SM2_AUTO, key, 16, ct, sizeof ct, &n, NULL) ==
          EID_E_INVALID_ARG);
    CHECK(eid_sm2_encrypt(pub, EID_SM2_DER, key, 0, ct, sizeof ct, &n, NULL) == EID_E_INVALID_ARG);
    /* Too small an output buffer: the needed length, nothing written. */
    CHECK(eid_sm2_encrypt(pub, EID_SM2_C1C3C2_04, key, 16, ct, 100, &n, NULL) ==
          EID_E_BUFFER_TOO_SMALL);
    CHECK(n == 113);
    CHECK(eid_sm2_encrypt(pub, EID_SM2_C1C3C2_04, key, 16, ct, sizeof ct, &n, NULL) == EID_OK);
    memset(pt, 0, sizeof pt);
    CHECK(eid_sm2_decrypt(priv, EID_SM2_AUTO, ct, n, pt, 15, &m, NULL, NULL) ==
          EID_E_BUFFER_TOO_SMALL);
    CHECK(m == 16 && all_zero(pt, sizeof pt));
    eid_pkey_free(priv);
    eid_pkey_free(pub);
    eid_pkey_free(other);
    eid_pkey_free(rsa);
}

static void test_rsa(void) {
    static const char *privs[] = {"rsa1024.pem", "rsa1024_pkcs1.pem", "rsa2048.pem"};
    static const char *pubs[] = {"rsa1024_pub.pem", "rsa1024_pkcs1_pub.pem", "rsa2048.pem"};
    unsigned char ct[1024], pt[1024], msg[300];
    size_t n = 0, m = 0;
    for (size_t i = 0; i < sizeof msg; i++)
        msg[i] = (unsigned char)(i * 7 + 3);
    for (int i = 0; i < 3; i++) {
        eid_pkey *priv = load(privs[i]), *pub = load(pubs[i]);
        size_t k = i == 2 ? 256 : 128;
        CHECK(eid_rsa_encrypt(pub, msg, 32, ct, sizeof ct, &n, NULL) == EID_OK);
        CHECK(n == k && n == eid_rsa_ciphertext_len(pub, 32));
        CHECK(eid_rsa_decrypt(priv, ct, n, pt, sizeof pt, &m, NULL) == EID_OK);
        CHECK(m == 32 && memcmp(pt, msg, 32) == 0);
        /* Longer than one block: chunks of k - 11 bytes. */
        CHECK(eid_rsa_encrypt(pub, msg, sizeof msg, ct, sizeof ct, &n, NULL) == EID_OK);
        CHECK(n == ((sizeof msg + k - 12) / (k - 11)) * k);
        CHECK(eid_rsa_decrypt(priv, ct, n, pt, sizeof pt, &m, NULL) == EID_OK);
        CHECK(m == sizeof msg && memcmp(pt, msg, m) == 0);
        CHECK(eid_rsa_decrypt(priv, ct, n - 1, pt, sizeof pt, &m, NULL) == EID_E_FORMAT);
        if (!eid_pkey_is_private(pub)) {
            CHECK(eid_rsa_decrypt(pub, ct, n, pt, sizeof pt, &m, NULL) == EID_E_KEY);
        }
        eid_pkey_free(priv);
        eid_pkey_free(pub);
    }
    /* The wrong key, on fixed ciphertexts (the fixture says why): each is
     * first read back with its own key, so it is what it claims to be. */
    eid_pkey *a = load("rsa1024.pem"), *c = load("rsa2048.pem");
    eid_pkey *sm2 = load("sm2_pub.pem");
    n = load_ciphertext("rsa2048", ct, sizeof ct);
    CHECK(n == 256);
    CHECK(eid_rsa_decrypt(c, ct, n, pt, sizeof pt, &m, NULL) == EID_OK);
    CHECK(m == 32 && memcmp(pt, msg, 32) == 0);
    memset(pt, 0, sizeof pt);
    CHECK(eid_rsa_decrypt(a, ct, 128, pt, sizeof pt, &m, NULL) == EID_E_DECRYPT);
    CHECK(all_zero(pt, sizeof pt));
    n = load_ciphertext("rsa1024", ct, sizeof ct);
    CHECK(n == 128);
    CHECK(eid_rsa_decrypt(a, ct, n, pt, sizeof pt, &m, NULL) == EID_OK);
    CHECK(m == 32 && memcmp(pt, msg, 32) == 0);
    ct[5] ^= 1;
    memset(pt, 0, sizeof pt);
    CHECK(eid_rsa_decrypt(a, ct, n, pt, sizeof pt, &m, NULL) == EID_E_DECRYPT);
    CHECK(all_zero(pt, sizeof pt));
    CHECK(eid_rsa_encrypt(sm2, msg, 32, ct, sizeof ct, &n, NULL) == EID_E_KEY);
    eid_pkey_free(a);
    eid_pkey_free(c);
    eid_pkey_free(sm2);
}

static void test_base64(void) {
    char b[64];
    unsigned char d[64];
    size_t n = 0;
    CHECK(eid_base64_encode("hello!?", 7, b, sizeof b, &n) == EID_OK);
    CHECK_STR(b, "aGVsbG8hPw==");
    CHECK(n == 12);
    CHECK(eid_base64_encode("", 0, b, sizeof b, &n) == EID_OK && n == 0 && b[0] == '\0');
    CHECK(eid_base64_encode("abc", 3, b, 4, &n) == EID_E_BUFFER_TOO_SMALL);
    CHECK(eid_base64_decode("aGVsbG8hPw==", 12, d, sizeof d, &n, NULL) == EID_OK);
    CHECK(n == 7 && memcmp(d, "hello!?", 7) == 0);
    CHECK(eid_base64_decode("aGVsbG8h", 8, d, sizeof d, &n, NULL) == EID_OK && n == 6);
    CHECK(eid_base64_decode("", 0, d, sizeof d, &n, NULL) == EID_OK && n == 0);
    static const char *bad[] = {"aGVsbG8hPw=", "aGVs bG8h", "aGVs\nbG8h", "aGV=bG8h",
                                "a===",        "aGVsbG8*",  "aGVsbG8-"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECK(eid_base64_decode(bad[i], strlen(bad[i]), d, sizeof d, &n, NULL) == EID_E_FORMAT);
    }
}

static void test_eidinfo(void) {
    eid_pkey *priv = load("sm2_sec1.pem"), *pub = load("sm2_pub.pem");
    eid_pkey *other = load("sm2_other.pem");
    eid_identity id = {0}, got;
    /* A UTF-8 name long enough that the JSON spans four blocks. */
    strcpy(id.name, "\xe9\x9f\xa6\xe5\xb0\x8f\xe5\xae\x9d\xc2\xb7\xe6\xac\xa7\xe9\x98\xb3");
    strcpy(id.idtype, "01");
    strcpy(id.idnum, "11204416541220243X");
    char dk[512], ui[512];
    eid_error err = {0};
    static const eid_sm2_layout layouts[] = {EID_SM2_C1C3C2_04, EID_SM2_C1C3C2_RAW, EID_SM2_DER};
    for (size_t i = 0; i < 3; i++) {
        CHECK(eid_eidinfo_encrypt(pub, layouts[i], &id, dk, sizeof dk, ui, sizeof ui, NULL) ==
              EID_OK);
        CHECK(eid_eidinfo_decrypt(priv, dk, strlen(dk), ui, strlen(ui), &got, NULL) == EID_OK);
        CHECK_STR(got.name, id.name);
        CHECK_STR(got.idtype, "01");
        CHECK_STR(got.idnum, "11204416541220243X");
        eid_identity_wipe(&got);
        CHECK(all_zero((unsigned char *)&got, sizeof got));
    }
    /* Every failure zeroes *out and names no identity. */
    static const eid_identity zero;
    CHECK(eid_eidinfo_decrypt(other, dk, strlen(dk), ui, strlen(ui), &got, &err) == EID_E_DECRYPT);
    CHECK(memcmp(&got, &zero, sizeof got) == 0);
    CHECK_STR(err.field, "DesKey");
    CHECK(eid_eidinfo_decrypt(priv, "%%%%", 4, ui, strlen(ui), &got, &err) == EID_E_FORMAT);
    CHECK_STR(err.field, "DesKey");
    CHECK(eid_eidinfo_decrypt(priv, dk, strlen(dk), ui, strlen(ui) - 4, &got, &err) ==
          EID_E_FORMAT);
    CHECK_STR(err.field, "UserInfo");
    CHECK(eid_eidinfo_decrypt(priv, dk, strlen(dk), "", 0, &got, &err) == EID_E_FORMAT);
    CHECK(eid_eidinfo_decrypt(priv, dk, 8, ui, strlen(ui), &got, &err) == EID_E_FORMAT);
    CHECK(eid_eidinfo_decrypt(pub, dk, strlen(dk), ui, strlen(ui), &got, &err) == EID_E_KEY);
    /* UserInfo under another session key: garbage, not JSON. */
    char dk2[512], ui2[512];
    CHECK(eid_eidinfo_encrypt(pub, EID_SM2_C1C3C2_04, &id, dk2, sizeof dk2, ui2, sizeof ui2,
                              NULL) == EID_OK);
    memset(&got, 0x55, sizeof got);
    CHECK(eid_eidinfo_decrypt(priv, dk2, strlen(dk2), ui, strlen(ui), &got, &err) == EID_E_DECRYPT);
    CHECK(memcmp(&got, &zero, sizeof got) == 0);
    CHECK(strstr(err.message, "11204416541220243X") == NULL);
    /* A DesKey wrapping 15 bytes instead of 16: FORMAT. */
    unsigned char wrapped[256];
    size_t wn = 0, bn = 0;
    CHECK(eid_sm2_encrypt(pub, EID_SM2_C1C3C2_04, "0123456789abcde", 15, wrapped, sizeof wrapped,
                          &wn, NULL) == EID_OK);
    CHECK(eid_base64_encode(wrapped, wn, dk2, sizeof dk2, &bn) == EID_OK);
    CHECK(eid_eidinfo_decrypt(priv, dk2, bn, ui, strlen(ui), &got, &err) == EID_E_FORMAT);
    /* Plain JSON with the right session key but a missing idnum: FORMAT. */
    unsigned char session[16] = "sixteen byte key", block[32] = {0}, ct[32];
    size_t cn = 0;
    memcpy(block, "{\"name\":\"x\"}", 12);
    CHECK(eid_sm4_ecb_encrypt(session, 16, block, 16, ct, sizeof ct, &cn, NULL) == EID_OK);
    CHECK(eid_sm2_encrypt(pub, EID_SM2_DER, session, 16, wrapped, sizeof wrapped, &wn, NULL) ==
          EID_OK);
    CHECK(eid_base64_encode(wrapped, wn, dk2, sizeof dk2, &bn) == EID_OK);
    CHECK(eid_base64_encode(ct, cn, ui2, sizeof ui2, &bn) == EID_OK);
    CHECK(eid_eidinfo_decrypt(priv, dk2, strlen(dk2), ui2, bn, &got, &err) == EID_E_FORMAT);
    CHECK(strstr(err.message, "idnum") != NULL);
    /* Blocks that begin with '{' and end in '}' but are no JSON (a wrong
     * key gives such a plaintext one time in 256): DECRYPT, as any other
     * plaintext that is not a JSON object. */
    memcpy(block, "{\x01\xfe\x7f garbage}", 14);
    CHECK(eid_sm4_ecb_encrypt(session, 16, block, 16, ct, sizeof ct, &cn, NULL) == EID_OK);
    CHECK(eid_base64_encode(ct, cn, ui2, sizeof ui2, &bn) == EID_OK);
    memset(&got, 0x55, sizeof got);
    CHECK(eid_eidinfo_decrypt(priv, dk2, strlen(dk2), ui2, bn, &got, &err) == EID_E_DECRYPT);
    CHECK(memcmp(&got, &zero, sizeof got) == 0);
    CHECK_STR(err.field, "UserInfo");
    /* An object that ends before the last '}': DECRYPT too. */
    memcpy(block, "{}\x01\xfe garbage}", 14);
    CHECK(eid_sm4_ecb_encrypt(session, 16, block, 16, ct, sizeof ct, &cn, NULL) == EID_OK);
    CHECK(eid_base64_encode(ct, cn, ui2, sizeof ui2, &bn) == EID_OK);
    CHECK(eid_eidinfo_decrypt(priv, dk2, strlen(dk2), ui2, bn, &got, &err) == EID_E_DECRYPT);
    /* PKCS#7-style filler after the '}' is ignored, as zero filler is. */
    unsigned char big[48], ct48[48];
    memcpy(big, "{\"name\":\"x\",\"idtype\":\"01\",\"idnum\":\"1\"}", 38);
    memset(big + 38, 10, 10);
    CHECK(eid_sm4_ecb_encrypt(session, 16, big, 48, ct48, sizeof ct48, &cn, NULL) == EID_OK);
    CHECK(eid_base64_encode(ct48, cn, ui2, sizeof ui2, &bn) == EID_OK);
    CHECK(eid_eidinfo_decrypt(priv, dk2, strlen(dk2), ui2, bn, &got, &err) == EID_OK);
    CHECK_STR(got.name, "x");
    CHECK_STR(got.idnum, "1");
    eid_pkey_free(priv);
    eid_pkey_free(pub);
    eid_pkey_free(other);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: test_crypto FIXTURE_DIR\n");
        return 2;
    }
    dir = argv[1];
    test_known_answers();
    test_symmetric_failures();
    test_keys();
    test_sm2();
    test_rsa();
    test_base64();
    test_eidinfo();
    CHECK(strcmp(eid_status_code(EID_E_KEY), "key") == 0);
    CHECK(strcmp(eid_status_code(EID_E_DECRYPT), "decrypt") == 0);
    CHECK(strcmp(eid_status_code(EID_E_FORMAT), "format") == 0);
    return check_report("test_crypto");
}
