/*
 * libFuzzer: sign, then verify what was signed. The input is split at NUL
 * bytes into secret id, key, action, body and timestamp digits. Whatever the
 * signer accepts, its Authorization parses, and the verifier's signature over
 * the same pieces is the signer's (the property the simulator relies on).
 */
#include "eidkit/eidkit.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static eid_signer *signer;

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size) {
    if (signer == NULL && eid_signer_new(NULL, &signer) != EID_OK) abort();
    char *buf = malloc(size + 1);
    if (buf == NULL) return 0;
    memcpy(buf, data, size);
    buf[size] = '\0';
    const char *part[5] = {"", "", "", "", ""};
    size_t len[5] = {0};
    size_t at = 0;
    for (int i = 0; i < 5 && at <= size; i++) {
        part[i] = buf + at;
        len[i] = strlen(part[i]);
        at += len[i] + 1;
    }
    int64_t ts = 0;
    for (size_t i = 0; i < len[4] && i < 10; i++)
        ts = ts * 10 + (part[4][i] & 7);
    eid_sign_request req = {
        .secret_id = part[0],
        .secret_key = part[1],
        .secret_key_len = len[1],
        .action = part[2],
        .body = part[3],
        .body_len = len[3],
        .timestamp = ts,
    };
    eid_signature sig;
    eid_error err = {0};
    if (eid_signer_sign(signer, &req, &sig, &err) != EID_OK) {
        free(buf);
        return 0;
    }
    eid_authorization a;
    if (eid_authorization_parse(sig.authorization, strlen(sig.authorization), &a, &err) != EID_OK)
        abort();
    const char *values[] = {"application/json", "faceid.tencentcloudapi.com"};
    eid_canonical c = {
        .secret_key = part[1],
        .secret_key_len = len[1],
        .date = a.date,
        .service = a.service,
        .timestamp = sig.timestamp_str,
        .signed_headers = a.signed_headers,
        .values = values,
        .value_count = 2,
        .body = part[3],
        .body_len = len[3],
    };
    char again[65];
    if (eid_signer_compute(signer, &c, again, NULL, &err) != EID_OK) abort();
    if (!eid_ct_equal(again, 64, sig.signature, 64)) abort();
    free(buf);
    return 0;
}
