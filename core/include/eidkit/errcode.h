/*
 * eidkit: what each of Tencent's Text.ErrCode values (GetEidResult, the E证通
 * outcome codes of eid-api.md §4.3) means to a merchant. One table, read by
 * the ledger (which codes settle a token), by the Redis scripts (through
 * their prologue), by eidkit.policy's default classification and by the
 * simulator's billing (through core.errcode_table).
 *
 * Plain data, no state: every function is thread-safe and allocates nothing.
 */
#ifndef EIDKIT_ERRCODE_H
#define EIDKIT_ERRCODE_H

#include "eidkit.h"

#ifdef __cplusplus
extern "C" {
#endif

/* What a code does to the token's verdict. Values are never renumbered. */
typedef enum eid_errcode_verdict {
    EID_VERDICT_PASSED = 0, /* the flow passed: final */
    EID_VERDICT_FAILED = 1, /* a failed verdict (the user may still retry on the token) */
    EID_VERDICT_NONE = 2,   /* no verdict: pull again later on the same token */
    EID_VERDICT_EXPIRED = 3 /* the token expired (Tencent's verdict) */
} eid_errcode_verdict;

typedef struct eid_errcode_info {
    int64_t code;
    eid_errcode_verdict verdict;
    const char *reason;       /* eidkit.flow's outcome.reason: "identity_rejected", ... */
    int retry_with_new_token; /* may the user start again with a new token? */
    int billed;               /* Tencent bills this outcome (eid-api.md §4.3, §9) */
} eid_errcode_info;

/* The entry for code, or NULL when the code is not in the table (unknown:
 * treat as EID_VERDICT_FAILED, reason "unclassified", not retryable, and
 * count it: see eidkit.flow). The pointer is to static data. */
EID_API const eid_errcode_info *eid_errcode_lookup(int64_t code);

/* The whole table, ordered by code; *n receives its length. Static data. */
EID_API const eid_errcode_info *eid_errcode_table(size_t *n);

/* eidkit.flow's word for a verdict (outcome.status): "passed", "failed",
 * "pending" (EID_VERDICT_NONE), "expired"; NULL for a value outside the enum.
 * A static string. */
EID_API const char *eid_errcode_status(eid_errcode_verdict verdict);

#ifdef __cplusplus
}
#endif

#endif /* EIDKIT_ERRCODE_H */
