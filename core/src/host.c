/* The clocks, the sleep and the named values of eidkit/host.h. */
#define _POSIX_C_SOURCE 200809L

#include "eidkit/host.h"
#include "eidkit/ledger.h"

#include <errno.h>
#include <time.h>

static double clock_seconds(clockid_t id) {
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

double eid_clock_now(void) { return clock_seconds(CLOCK_REALTIME); }

double eid_clock_monotonic(void) { return clock_seconds(CLOCK_MONOTONIC); }

eid_status eid_sleep(double s) {
    if (!(s >= 0 && s <= 86400)) return EID_E_INVALID_ARG; /* NaN fails both */
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
    return EID_OK;
}

static const eid_named_value limits[] = {
    {"token_max", EID_LEDGER_TOKEN_MAX},
    {"merchant_max", EID_LEDGER_MERCHANT_MAX},
    {"subject_max", EID_LEDGER_SUBJECT_MAX},
    {"extra_max", EID_LEDGER_EXTRA_MAX},
    {"request_id_max", EID_LEDGER_REQUEST_ID_MAX},
    {"request_ids", EID_LEDGER_REQUEST_IDS},
    {"payload_max", EID_LEDGER_PAYLOAD_MAX},
    {"url_max", EID_LEDGER_URL_MAX},
    {"default_ttl", EID_LEDGER_DEFAULT_TTL},
    {"result_window", EID_LEDGER_RESULT_WINDOW},
    {"redis_retention", EID_LEDGER_REDIS_RETENTION},
    {"key_len", EID_LEDGER_KEY_LEN},
    {"bucket_key_max", EID_LEDGER_BUCKET_KEY_MAX},
    {"bucket_refill_max", EID_LEDGER_BUCKET_REFILL_MAX},
};

const eid_named_value *eid_limits(size_t *n) {
    if (n) *n = sizeof limits / sizeof limits[0];
    return limits;
}

static const eid_named_value errcodes[] = {
    {"expired", EID_ERRCODE_EXPIRED},
    {"pending", EID_ERRCODE_PENDING},
};

const eid_named_value *eid_errcode_names(size_t *n) {
    if (n) *n = sizeof errcodes / sizeof errcodes[0];
    return errcodes;
}
