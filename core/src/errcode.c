/*
 * The Text.ErrCode table (eidkit/errcode.h). Groups and their reasons follow
 * eid-api.md §4.3-4.4 and issue 14; docs/internals/flow.md has the table in
 * prose and spec/flow/errcode_spec.lua pins every row.
 */
#include "eidkit/errcode.h"

#define PASSED  EID_VERDICT_PASSED
#define FAILED  EID_VERDICT_FAILED
#define PENDING EID_VERDICT_NONE
#define EXPIRE  EID_VERDICT_EXPIRED

/* Ordered by code (eid_errcode_lookup searches it by bisection). */
static const eid_errcode_info table[] = {
    {0, PASSED, "passed", 0, 1},
    /* The merchant's call style or permissions: no user can pass. */
    {1, FAILED, "merchant_config", 0, 0},
    {2, FAILED, "merchant_config", 0, 0},
    {3, FAILED, "merchant_config", 0, 0},
    /* Service errors the user meets: a new token may work. */
    {4, FAILED, "user_retry", 1, 0},
    {8, FAILED, "user_retry", 1, 0},
    {10, FAILED, "user_retry", 1, 0},
    {12, FAILED, "user_retry", 1, 0},
    {13, FAILED, "user_retry", 1, 0},
    /* "Already completed": the result exists, pull it again; never a failure. */
    {14, PENDING, "completed", 0, 0},
    {15, EXPIRE, "token_expired", 1, 0},
    /* The token's attempts are used up. */
    {16, FAILED, "retry_limit", 0, 0},
    {17, PENDING, "unfinished", 0, 0},
    {201, FAILED, "user_retry", 1, 0},
    {202, FAILED, "user_retry", 1, 0},
    {203, FAILED, "merchant_config", 0, 0},
    {204, FAILED, "merchant_config", 0, 0},
    /* Final for this identity: another ID, an expired card, no record. */
    {301, FAILED, "identity_rejected", 0, 0},
    {302, FAILED, "identity_rejected", 0, 0},
    {303, FAILED, "user_retry", 1, 0},
    {1001, FAILED, "user_retry", 1, 0},
    /* Liveness refused the person (a recording, a failed face check): not a
     * blind invitation to try again. */
    {1002, FAILED, "liveness_rejected", 0, 0},
    {1003, FAILED, "liveness_rejected", 0, 0},
    {1004, FAILED, "liveness_rejected", 0, 0},
    {1005, FAILED, "liveness_rejected", 0, 0},
    /* Service-side and transient: look again later on the same token. */
    {1006, PENDING, "service_retry", 0, 0},
    {1007, PENDING, "service_retry", 0, 0},
    {1008, FAILED, "user_retry", 1, 0},
    {2001, FAILED, "user_retry", 1, 0},
    /* The name or ID number the merchant sent is malformed. */
    {2002, FAILED, "merchant_input", 0, 0},
    {2003, FAILED, "merchant_input", 0, 0},
    /* Capture problems: the user may retry. */
    {2004, FAILED, "capture", 1, 0},
    {2005, FAILED, "identity_rejected", 0, 0},
    {2006, FAILED, "identity_rejected", 0, 1},
    {2007, FAILED, "identity_rejected", 0, 0},
    {2008, FAILED, "identity_rejected", 0, 0},
    {2009, FAILED, "identity_rejected", 0, 0},
    {2010, FAILED, "capture", 1, 0},
    {2011, FAILED, "liveness_rejected", 0, 0},
    {2012, FAILED, "capture", 1, 0},
    {2013, FAILED, "capture", 1, 0},
    {2014, FAILED, "capture", 1, 0},
    {2015, FAILED, "user_retry", 1, 0},
    {2016, FAILED, "identity_rejected", 0, 1},
    {2017, PENDING, "service_retry", 0, 0},
};

const eid_errcode_info *eid_errcode_lookup(int64_t code) {
    size_t lo = 0, hi = sizeof table / sizeof table[0];
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (table[mid].code == code) return &table[mid];
        if (table[mid].code < code)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

const eid_errcode_info *eid_errcode_table(size_t *n) {
    if (n) *n = sizeof table / sizeof table[0];
    return table;
}

const char *eid_errcode_status(eid_errcode_verdict verdict) {
    static const char *const names[] = {
        [EID_VERDICT_PASSED] = "passed",
        [EID_VERDICT_FAILED] = "failed",
        [EID_VERDICT_NONE] = "pending",
        [EID_VERDICT_EXPIRED] = "expired",
    };
    if ((unsigned)verdict >= sizeof names / sizeof names[0]) return NULL;
    return names[verdict];
}
