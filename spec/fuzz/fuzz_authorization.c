/*
 * libFuzzer: eid_authorization_parse on any bytes. Never crashes or reads out
 * of bounds (ASan, UBSan); what it accepts keeps its documented shape; it is
 * strict, so the value rebuilt from what it parsed is the value it was given.
 */
#include "eidkit/eidkit.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size) {
    eid_authorization a;
    eid_error err = {0};
    if (eid_authorization_parse((const char *)data, size, &a, &err) != EID_OK) {
        if (err.message[0] == '\0') abort(); /* a refusal always says why */
        return 0;
    }
    if (strlen(a.signature) != 64 || strspn(a.signature, "0123456789abcdef") != 64) abort();
    if (strlen(a.date) != 10 || a.signed_headers_count == 0) abort();
    char again[1024];
    int n = snprintf(again, sizeof again,
                     "TC3-HMAC-SHA256 Credential=%s/%s/%s/tc3_request, SignedHeaders=%s, "
                     "Signature=%s",
                     a.secret_id, a.date, a.service, a.signed_headers, a.signature);
    if (n < 0 || (size_t)n != size || memcmp(again, data, size) != 0) abort();
    return 0;
}
