/* The server side of TC3: Authorization parsing and signature recomputation
 * from a request as received. Every official vector is verified from its
 * published Authorization alone, the way the simulator sees it. */
#include "eidkit/eidkit.h"

#include "check.h"
#include "json_file.h"

#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The received value of a signed header, by name, for one vector. */
static const char *vector_value(const cJSON *v, const char *name, const char *action) {
    if (strcmp(name, "content-type") == 0) return jstr(v, "content_type");
    if (strcmp(name, "host") == 0) return jstr(v, "host");
    if (strcmp(name, "x-tc-action") == 0) return action;
    return NULL;
}

static void test_vectors(eid_signer *s, const char *path) {
    cJSON *root = load_json(path);
    CHECK(root != NULL);
    if (root == NULL) return;
    const cJSON *v;
    int verified = 0;
    cJSON_ArrayForEach(v, cJSON_GetObjectItemCaseSensitive(root, "vectors")) {
        /* Vectors without a printed Authorization get the one their fields
         * imply, which is what a client sends. */
        char built[512], date[11];
        const char *auth = jstr(v, "authorization");
        if (auth == NULL) {
            CHECK(eid_utc_date(jint(v, "timestamp"), date) == EID_OK);
            char sh[128] = "";
            size_t k = 0;
            const cJSON *name;
            cJSON_ArrayForEach(name, cJSON_GetObjectItemCaseSensitive(v, "signed_headers")) {
                if (k++) strcat(sh, ";");
                strcat(sh, cJSON_GetStringValue(name));
            }
            snprintf(built, sizeof built,
                     "TC3-HMAC-SHA256 Credential=%s/%s/%s/tc3_request, SignedHeaders=%s, "
                     "Signature=%s",
                     jstr(v, "secret_id"), date, jstr(v, "service"), sh, jstr(v, "signature"));
            auth = built;
        }
        eid_authorization a;
        eid_error err = {0};
        CHECK(eid_authorization_parse(auth, strlen(auth), &a, &err) == EID_OK);
        CHECK_STR(a.secret_id, jstr(v, "secret_id"));
        CHECK_STR(a.service, jstr(v, "service"));
        CHECK_STR(a.signature, jstr(v, "signature"));
        /* Values exactly as a client sends them (X-TC-Action in its usual
         * case), lower-cased by the verifier as the TC3 document says. */
        const char *values[EID_VERIFY_HEADERS_MAX];
        size_t n = 0;
        char names[EID_SIGNED_HEADERS_STR_MAX];
        memcpy(names, a.signed_headers, sizeof names);
        for (char *tok = strtok(names, ";"); tok; tok = strtok(NULL, ";"))
            values[n++] = vector_value(v, tok, jstr(v, "action"));
        CHECK(n == a.signed_headers_count);
        char ts[24];
        snprintf(ts, sizeof ts, "%lld", (long long)jint(v, "timestamp"));
        const char *body = jstr(v, "body");
        eid_canonical c = {
            .secret_key = jstr(v, "secret_key"),
            .secret_key_len = strlen(jstr(v, "secret_key")),
            .date = a.date,
            .service = a.service,
            .timestamp = ts,
            .signed_headers = a.signed_headers,
            .values = values,
            .value_count = n,
            .lower_values = 1,
            .body = body,
            .body_len = strlen(body),
        };
        char sig[65], cr[4096];
        eid_sign_explain ex = {.canonical_request = cr, .canonical_request_cap = sizeof cr};
        CHECK(eid_signer_compute(s, &c, sig, &ex, &err) == EID_OK);
        CHECK(eid_ct_equal(sig, 64, a.signature, 64));
        if (jstr(v, "hashed_canonical_request"))
            CHECK_STR(ex.hashed_canonical_request, jstr(v, "hashed_canonical_request"));
        /* A one-byte change anywhere in the body must break it. */
        char changed[1024];
        size_t bl = strlen(body);
        if (bl > 0 && bl < sizeof changed) {
            memcpy(changed, body, bl);
            changed[bl / 2] ^= 1;
            c.body = changed;
            CHECK(eid_signer_compute(s, &c, sig, NULL, &err) == EID_OK);
            CHECK(!eid_ct_equal(sig, 64, a.signature, 64));
        }
        verified++;
    }
    CHECK(verified >= 5);
    cJSON_Delete(root);
}

/* Values are trimmed; lower_values decides case; a missing header (NULL)
 * canonicalises as empty. Each variant must match what the signer produced
 * for the equivalent request. */
static void test_value_forms(eid_signer *s) {
    static const char key[] = "FakeSecretKeyForTestVectors000000";
    static const char body[] = "{\"EidToken\":\"x\"}";
    const char *names[] = {"content-type", "host", "x-tc-action"};
    eid_sign_request r = {
        .secret_id = "AKIDEXAMPLE",
        .secret_key = key,
        .secret_key_len = sizeof key - 1,
        .action = "GetEidResult",
        .host = "127.0.0.1",
        .service = "faceid",
        .timestamp = 1700000000,
        .body = body,
        .body_len = sizeof body - 1,
        .signed_headers = names,
        .signed_headers_count = 3,
    };
    eid_signature want;
    CHECK(eid_signer_sign(s, &r, &want, NULL) == EID_OK);
    const char *values[] = {"  application/json\t", "127.0.0.1", "GetEidResult"};
    eid_canonical c = {
        .secret_key = key,
        .secret_key_len = sizeof key - 1,
        .date = "2023-11-14",
        .service = "faceid",
        .timestamp = "1700000000",
        .signed_headers = "content-type;host;x-tc-action",
        .values = values,
        .value_count = 3,
        .lower_values = 1,
        .body = body,
        .body_len = sizeof body - 1,
    };
    char sig[65];
    CHECK(eid_signer_compute(s, &c, sig, NULL, NULL) == EID_OK);
    CHECK_STR(sig, want.signature);
    c.lower_values = 0; /* "GetEidResult" kept as sent: a different request */
    CHECK(eid_signer_compute(s, &c, sig, NULL, NULL) == EID_OK);
    CHECK(strcmp(sig, want.signature) != 0);

    const char *missing[] = {"application/json", NULL, "getEIDresult"};
    c.values = missing;
    c.lower_values = 1;
    char cr[512];
    eid_sign_explain ex = {.canonical_request = cr, .canonical_request_cap = sizeof cr};
    CHECK(eid_signer_compute(s, &c, sig, &ex, NULL) == EID_OK);
    CHECK(strstr(cr, "\nhost:\nx-tc-action:geteidresult\n") != NULL);

    /* Validation: every bad input names its field. */
    eid_error err = {0};
    eid_canonical bad = c;
    bad.value_count = 2;
    CHECK(eid_signer_compute(s, &bad, sig, NULL, &err) == EID_E_INVALID_ARG);
    CHECK_STR(err.field, "values");
    bad = c;
    bad.secret_key_len = 0;
    CHECK(eid_signer_compute(s, &bad, sig, NULL, &err) == EID_E_INVALID_ARG);
    CHECK_STR(err.field, "secret_key");
    bad = c;
    bad.date = "2023-1-14";
    CHECK(eid_signer_compute(s, &bad, sig, NULL, &err) == EID_E_INVALID_ARG);
    CHECK_STR(err.field, "date");
    bad = c;
    bad.service = "a/b";
    CHECK(eid_signer_compute(s, &bad, sig, NULL, &err) == EID_E_INVALID_ARG);
    CHECK_STR(err.field, "service");
    bad = c;
    bad.timestamp = NULL;
    CHECK(eid_signer_compute(s, &bad, sig, NULL, &err) == EID_E_INVALID_ARG);
    CHECK_STR(err.field, "timestamp");
    bad = c;
    ex.canonical_request_cap = 8;
    CHECK(eid_signer_compute(s, &bad, sig, &ex, &err) == EID_E_BUFFER_TOO_SMALL);
    CHECK(ex.canonical_request_len > 8);
    CHECK(eid_signer_compute(NULL, &c, sig, NULL, &err) == EID_E_INVALID_ARG);
}

static void expect_malformed(const char *value, const char *part) {
    eid_authorization a;
    eid_error err = {0};
    CHECK(eid_authorization_parse(value, strlen(value), &a, &err) == EID_E_INVALID_ARG);
    CHECK_STR(err.field, "authorization");
    if (strstr(err.message, part) == NULL)
        fprintf(stderr, "message '%s' does not name '%s'\n", err.message, part);
    CHECK(strstr(err.message, part) != NULL);
    CHECK(strstr(err.message, "SECRETID") == NULL); /* never echoes the value */
}

static void test_parse(void) {
    const char *sig64 = "9d0bc3c64ade52127bed12c509c1285cbe63f648e9a6fec46d1adf5836364b78";
    char good[512];
    snprintf(good, sizeof good,
             "TC3-HMAC-SHA256 Credential=SECRETID/2024-12-31/faceid/tc3_request, "
             "SignedHeaders=content-type;host;x-tc-action, Signature=%s",
             sig64);
    eid_authorization a;
    CHECK(eid_authorization_parse(good, strlen(good), &a, NULL) == EID_OK);
    CHECK_STR(a.secret_id, "SECRETID");
    CHECK_STR(a.date, "2024-12-31");
    CHECK_STR(a.service, "faceid");
    CHECK_STR(a.signed_headers, "content-type;host;x-tc-action");
    CHECK(a.signed_headers_count == 3);
    CHECK_STR(a.signature, sig64);
    /* The Node SDK pointed at http://localhost:8080 derives service
     * "localhost:8080"; the simulator must be able to accept it. */
    const char *node = "TC3-HMAC-SHA256 Credential=SECRETID/2024-12-31/localhost:8080/tc3_request, "
                       "SignedHeaders=content-type;host, "
                       "Signature=9d0bc3c64ade52127bed12c509c1285cbe63f648e9a6fec46d1adf5836364b78";
    CHECK(eid_authorization_parse(node, strlen(node), &a, NULL) == EID_OK);
    CHECK_STR(a.service, "localhost:8080");

    expect_malformed("", "missing");
    expect_malformed("Bearer abc", "algorithm");
    expect_malformed("TC3-HMAC-SHA1 Credential=SECRETID/2024-12-31/faceid/tc3_request",
                     "algorithm");
    expect_malformed("TC3-HMAC-SHA256 SignedHeaders=host", "Credential");
    expect_malformed("TC3-HMAC-SHA256 Credential=SECRETID", "Credential");
    expect_malformed("TC3-HMAC-SHA256 Credential=/2024-12-31/faceid/tc3_request, ", "SecretId");
    expect_malformed("TC3-HMAC-SHA256 Credential=SECRETID/2024-1-31/faceid/tc3_request, ", "date");
    expect_malformed("TC3-HMAC-SHA256 Credential=SECRETID/2024x12x31/faceid/tc3_request, ", "date");
    expect_malformed("TC3-HMAC-SHA256 Credential=SECRETID/2024-12-31//tc3_request, ", "service");
    expect_malformed("TC3-HMAC-SHA256 Credential=SECRETID/2024-12-31/faceid/tc4_request, ",
                     "scope");
    expect_malformed("TC3-HMAC-SHA256 Credential=SECRETID/2024-12-31/faceid/tc3_request,"
                     "SignedHeaders=host, Signature=x",
                     "scope");
    expect_malformed("TC3-HMAC-SHA256 Credential=SECRETID/2024-12-31/faceid/tc3_request, "
                     "SignedHeaders=Host, Signature=x",
                     "SignedHeaders");
    expect_malformed("TC3-HMAC-SHA256 Credential=SECRETID/2024-12-31/faceid/tc3_request, "
                     "SignedHeaders=host;;content-type, Signature=x",
                     "empty name");
    expect_malformed("TC3-HMAC-SHA256 Credential=SECRETID/2024-12-31/faceid/tc3_request, "
                     "SignedHeaders=host;content-type;host, Signature=x",
                     "twice");
    expect_malformed("TC3-HMAC-SHA256 Credential=SECRETID/2024-12-31/faceid/tc3_request, "
                     "SignedHeaders=host, Sig=x",
                     "Signature");
    expect_malformed("TC3-HMAC-SHA256 Credential=SECRETID/2024-12-31/faceid/tc3_request, "
                     "SignedHeaders=host, Signature=ABCDEF",
                     "hex");
    char upper[512];
    snprintf(upper, sizeof upper, "%s", good);
    upper[strlen(upper) - 1] = 'F';
    expect_malformed(upper, "hex");
    char trailing[520];
    snprintf(trailing, sizeof trailing, "%s ", good);
    expect_malformed(trailing, "hex");
    /* An embedded NUL is refused even when the rest parses. */
    char nul[512];
    memcpy(nul, good, strlen(good) + 1);
    nul[30] = '\0';
    eid_authorization b;
    CHECK(eid_authorization_parse(nul, strlen(good), &b, NULL) == EID_E_INVALID_ARG);
    CHECK(eid_authorization_parse(good, strlen(good), NULL, NULL) == EID_E_INVALID_ARG);
    CHECK(eid_authorization_parse(NULL, 5, &b, NULL) == EID_E_INVALID_ARG);
}

/* Random mutations of a valid header: every result is OK or INVALID_ARG,
 * never a crash (this file also runs under valgrind and ASan). */
static void test_mutations(void) {
    const char *good = "TC3-HMAC-SHA256 Credential=AKIDEXAMPLE/2024-12-31/faceid/tc3_request, "
                       "SignedHeaders=content-type;host;x-tc-action, "
                       "Signature=9d0bc3c64ade52127bed12c509c1285cbe63f648e9a6fec46d1adf5836364b78";
    size_t len = strlen(good);
    uint64_t x = 0x2545F4914F6CDD1Du;
    int ok = 0, bad = 0;
    for (int i = 0; i < 20000; i++) {
        char buf[400];
        memcpy(buf, good, len);
        size_t n = len;
        int edits = 1 + (int)(x % 4);
        for (int e = 0; e < edits; e++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            size_t at = (size_t)(x >> 8) % n;
            switch (x % 3) {
            case 0: buf[at] = (char)(x >> 32); break; /* replace */
            case 1: n = at; break;                    /* truncate */
            default:
                memmove(buf + at, buf + at + 1, n - at - 1); /* delete */
                n--;
            }
            if (n == 0) break;
        }
        eid_authorization a;
        eid_status st = eid_authorization_parse(buf, n, &a, NULL);
        CHECK(st == EID_OK || st == EID_E_INVALID_ARG);
        if (st == EID_OK) {
            ok++;
            CHECK(strlen(a.signature) == 64 && a.signed_headers_count >= 1);
        } else {
            bad++;
        }
    }
    CHECK(bad > 15000);
    (void)ok;
}

static void test_helpers(void) {
    CHECK(eid_ct_equal("abc", 3, "abc", 3) == 1);
    CHECK(eid_ct_equal("abc", 3, "abd", 3) == 0);
    CHECK(eid_ct_equal("abc", 3, "abcd", 4) == 0);
    CHECK(eid_ct_equal(NULL, 0, "", 0) == 0);
    unsigned char a[32] = {0}, b[32] = {0};
    CHECK(eid_random_bytes(a, sizeof a) == EID_OK);
    CHECK(eid_random_bytes(b, sizeof b) == EID_OK);
    CHECK(memcmp(a, b, sizeof a) != 0);
    CHECK(eid_random_bytes(NULL, 4) == EID_E_INVALID_ARG);
    CHECK(eid_random_bytes(NULL, 0) == EID_OK);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: test_verify VECTORS.json\n");
        return 2;
    }
    eid_signer *s = NULL;
    CHECK(eid_signer_new(NULL, &s) == EID_OK);
    test_vectors(s, argv[1]);
    test_value_forms(s);
    eid_signer_free(s);
    test_parse();
    test_mutations();
    test_helpers();
    return check_report("test_verify");
}
