/* Allocation-failure sweep of the identity crypto: for each operation (key
 * loads, SM2 in every layout, RSA, AES-256-CBC, SM4-GCM, an EidInfo both
 * ways), make its Nth OpenSSL allocation fail for every N it performs, and
 * check that it succeeds or fails with EID_E_NOMEM/EID_E_CRYPTO (EID_E_KEY
 * for a load), never crashes, never returns wrong plaintext, and leaks
 * nothing (valgrind and ASan check that part). Operations are swept one at
 * a time, so the cost is the sum of their allocations, not the product.
 * libgcrypt's and cJSON's own allocations are not hooked; SM2: see sweep().
 * Usage: test_crypto_alloc FIXTURE_DIR */
#include "eidkit/crypto.h"

#include "alloc_fail.h"
#include "check.h"

#include <openssl/crypto.h>
#include <stdio.h>
#include <string.h>

static const char *dir;
static eid_pkey *priv, *pub, *rsa;
static const unsigned char key[32] = "0123456789abcdef0123456789abcdef", iv[16] = {7};

static int failed_ok(eid_status st) { return st == EID_E_NOMEM || st == EID_E_CRYPTO; }

static eid_pkey *load(const char *name, eid_status *st) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    eid_pkey *k = NULL;
    *st = eid_pkey_load_file(path, &k, NULL);
    return k;
}

/* Each op returns 1 when it succeeded with the right result, 0 when it
 * failed as allowed; a wrong result or status fails a CHECK. */
static int op_load(void) {
    /* One form: OpenSSL's PEM decoders make some 3,000 allocations per
     * load; test_crypto covers the other forms. */
    static const char *files[] = {"sm2_pkcs8.pem"};
    int ok = 1;
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        eid_status st;
        eid_pkey *k = load(files[i], &st);
        if (st != EID_OK) {
            CHECK((st == EID_E_NOMEM || st == EID_E_KEY) && k == NULL);
            ok = 0;
        }
        eid_pkey_free(k);
    }
    return ok;
}

static int op_sm2(void) {
    static const eid_sm2_layout layouts[] = {EID_SM2_C1C3C2_04, EID_SM2_C1C3C2_RAW, EID_SM2_DER};
    unsigned char ct[256], pt[256];
    size_t n = 0, m = 0;
    int ok = 1;
    for (size_t i = 0; i < 3; i++) {
        eid_status st = eid_sm2_encrypt(pub, layouts[i], key, 16, ct, sizeof ct, &n, NULL);
        if (st == EID_OK)
            st = eid_sm2_decrypt(priv, EID_SM2_AUTO, ct, n, pt, sizeof pt, &m, NULL, NULL);
        if (st == EID_OK) {
            CHECK(m == 16 && memcmp(pt, key, 16) == 0);
        } else {
            CHECK(failed_ok(st));
            ok = 0;
        }
    }
    return ok;
}

static int op_rsa(void) {
    unsigned char ct[256], pt[256];
    size_t n = 0, m = 0;
    eid_status st = eid_rsa_encrypt(rsa, key, 32, ct, sizeof ct, &n, NULL);
    if (st == EID_OK) st = eid_rsa_decrypt(rsa, ct, n, pt, sizeof pt, &m, NULL);
    if (st == EID_OK) {
        CHECK(m == 32 && memcmp(pt, key, 32) == 0);
        return 1;
    }
    /* OpenSSL's PKCS#1 v1.5 decryption does not always report a failed
     * allocation as one (it hides why decryption failed); no plaintext
     * comes out either way. */
    CHECK(failed_ok(st) || st == EID_E_DECRYPT);
    return 0;
}

static int op_symmetric(void) {
    unsigned char ct[64], pt[64], tag[16];
    size_t n = 0, m = 0;
    int ok = 1;
    eid_status st = eid_aes_cbc_encrypt(key, 32, iv, 16, "identity", 8, ct, sizeof ct, &n, NULL);
    if (st == EID_OK) st = eid_aes_cbc_decrypt(key, 32, iv, 16, ct, n, pt, sizeof pt, &m, NULL);
    if (st == EID_OK) {
        CHECK(m == 8 && memcmp(pt, "identity", 8) == 0);
    } else {
        CHECK(failed_ok(st));
        ok = 0;
    }
    st = eid_sm4_gcm_encrypt(key, 16, iv, 12, "identity", 8, ct, sizeof ct, &n, tag, NULL);
    if (st == EID_OK)
        st = eid_sm4_gcm_decrypt(key, 16, iv, 12, ct, n, tag, 16, pt, sizeof pt, &m, NULL);
    if (st == EID_OK) {
        CHECK(m == 8 && memcmp(pt, "identity", 8) == 0);
    } else {
        CHECK(failed_ok(st));
        ok = 0;
    }
    return ok;
}

static int op_eidinfo(void) {
    eid_identity id = {.name = "\xe9\x9f\xa6\xe5\xb0\x8f\xe5\xae\x9d",
                       .idtype = "01",
                       .idnum = "11204416541220243X"},
                 got;
    char dk[512], ui[512];
    eid_status st =
        eid_eidinfo_encrypt(pub, EID_SM2_C1C3C2_04, &id, dk, sizeof dk, ui, sizeof ui, NULL);
    if (st == EID_OK) st = eid_eidinfo_decrypt(priv, dk, strlen(dk), ui, strlen(ui), &got, NULL);
    if (st == EID_OK) {
        CHECK_STR(got.idnum, id.idnum);
        eid_identity_wipe(&got);
        return 1;
    }
    CHECK(failed_ok(st));
    return 0;
}

/* OpenSSL 3.0.x's SM2 crashes inside its own KDF set-up
 * (EVP_KDF_CTX_new, under ossl_ecdh_kdf_X9_63) when one of OpenSSL's
 * internal allocations fails, so the SM2 operations are swept over the
 * allocations eidkit itself makes (OPENSSL_malloc from core/src/) only. */
static int ours_only;

static void *sel_malloc(size_t n, const char *file, int line) {
    if (ours_only && (file == NULL || strstr(file, "core/src/") == NULL)) return malloc(n);
    return t_malloc(n, file, line);
}
static void *sel_realloc(void *p, size_t n, const char *file, int line) {
    if (ours_only && (file == NULL || strstr(file, "core/src/") == NULL)) return realloc(p, n);
    return t_realloc(p, n, file, line);
}

static void sweep(const char *name, int (*op)(void), int ours) {
    CHECK(op() == 1);
    long n;
    int clean = 0;
    ours_only = ours;
    for (n = 1; n < 20000 && !clean; n++) {
        alloc_count = 0;
        fail_at = n;
        op();
        clean = alloc_count < n; /* the failure point was never reached */
    }
    fail_at = 0;
    ours_only = 0;
    printf("%s: swept %ld allocation failure points\n", name, n - 1);
    CHECK(clean);
    CHECK(n > 2);
    CHECK(op() == 1);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: test_crypto_alloc FIXTURE_DIR\n");
        return 2;
    }
    dir = argv[1];
    CHECK(CRYPTO_set_mem_functions(sel_malloc, sel_realloc, t_free) == 1);
    eid_status st;
    priv = load("sm2_sec1.pem", &st);
    pub = load("sm2_pub.pem", &st);
    rsa = load("rsa1024.pem", &st);
    CHECK(priv && pub && rsa);
    if (priv && pub && rsa) {
        sweep("load", op_load, 0);
        sweep("rsa", op_rsa, 0);
        sweep("symmetric", op_symmetric, 0);
        sweep("sm2 (eidkit's allocations)", op_sm2, 1);
        sweep("eidinfo (eidkit's allocations)", op_eidinfo, 1);
    }
    eid_pkey_free(priv);
    eid_pkey_free(pub);
    eid_pkey_free(rsa);
    return check_report("test_crypto_alloc");
}
