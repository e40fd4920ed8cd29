/* Allocation-failure sweep: make the Nth allocation fail, for every N that the
 * signer's life cycle performs, and check that each call either succeeds or
 * reports EID_E_NOMEM/EID_E_CRYPTO, never crashes, and leaks nothing (the
 * valgrind and ASan runs of this binary check the last part). */
#include "eidkit/eidkit.h"

#include "alloc_fail.h"
#include "check.h"

#include <openssl/crypto.h>
#include <stdlib.h>

static const char secret[] = "FakeSecretKeyForTestVectors000000";

/* One life cycle: create, sign (miss), sign (hit), sign (next day), free. */
static int lifecycle(void) {
    eid_signer *s = NULL;
    eid_status st = eid_signer_new(NULL, &s);
    if (st != EID_OK) {
        CHECK(st == EID_E_NOMEM);
        CHECK(s == NULL);
        return 0;
    }
    eid_sign_request r = {
        .secret_id = "AKIDEXAMPLEFAKEFAKEFAKEFAKEFAKE00000",
        .secret_key = secret,
        .secret_key_len = sizeof secret - 1,
        .action = "GetEidResult",
        .timestamp = 1735660800,
        .body = "{\"EidToken\":\"CE661F1A-0F1E-45BD-BE13-34C05CEA7681\",\"InfoType\":\"0\","
                "\"BestFramesCount\":1}",
    };
    r.body_len = strlen(r.body);
    int ok = 1;
    for (int i = 0; i < 3; i++) {
        if (i == 2) r.timestamp += 86400;
        eid_signature sig;
        eid_error err = {0};
        st = eid_signer_sign(s, &r, &sig, &err);
        if (st != EID_OK) {
            CHECK(st == EID_E_CRYPTO || st == EID_E_NOMEM);
            CHECK(err.message[0] != '\0');
            ok = 0;
        } else if (i < 2) {
            CHECK_STR(sig.signature,
                      "9d0bc3c64ade52127bed12c509c1285cbe63f648e9a6fec46d1adf5836364b78");
        }
    }
    eid_signer_free(s);
    return ok;
}

int main(void) {
    CHECK(CRYPTO_set_mem_functions(t_malloc, t_realloc, t_free) == 1);
    /* Warm up OpenSSL's one-time global initialisation with no failures, as a
     * long-running host would have done long before. */
    CHECK(lifecycle() == 1);
    long n;
    int clean = 0;
    for (n = 1; n < 5000 && !clean; n++) {
        alloc_count = 0;
        fail_at = n;
        lifecycle();
        clean = alloc_count < n; /* the failure point was never reached */
    }
    fail_at = 0;
    printf("swept %ld allocation failure points\n", n - 1);
    CHECK(clean);
    CHECK(n > 5);
    CHECK(lifecycle() == 1);
    return check_report("test_alloc");
}
