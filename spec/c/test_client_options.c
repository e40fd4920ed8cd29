/* The options' one source (eidkit/client.h): eid_client_option's table ends
 * with NULL and is what eid_client_new applies, eid_client_default_endpoint
 * is the endpoint a client without one calls, and eid_client_is_read names
 * the reads. White-box: core/src/client.c is compiled into this test, so the
 * fields of a new client (opaque everywhere else) can be read.
 * Usage: test_client_options */
#include "client.c"

#include "check.h"

static const eid_client_option_spec *spec_named(const char *name) {
    const eid_client_option_spec *s;
    for (size_t i = 0; (s = eid_client_option(i)) != NULL; i++)
        if (strcmp(s->name, name) == 0) return s;
    return NULL;
}

static void test_table(void) {
    static const char *const names[] = {"connect_timeout", "timeout", "deadline", "max_response"};
    size_t n = 0;
    while (eid_client_option(n) != NULL)
        n++;
    CHECK(n == sizeof names / sizeof *names);
    CHECK(eid_client_option(n) == NULL && eid_client_option((size_t)-1) == NULL);
    for (size_t i = 0; i < n && i < sizeof names / sizeof *names; i++) {
        const eid_client_option_spec *s = eid_client_option(i);
        CHECK_STR(s->name, names[i]);
        CHECK_STR(s->unit, i == 3 ? "bytes" : "s");
        CHECK(s->min > 0 && s->min <= s->def && s->def <= s->max);
        /* What the Lua options and eid_client_options can carry exactly. */
        if (strcmp(s->unit, "bytes") == 0)
            CHECK(s->min == (double)(uint64_t)s->min && s->max == (double)(uint64_t)s->max &&
                  s->def == (double)(uint64_t)s->def);
        else
            CHECK(s->max * 1000 <= 2147483647.0 && s->min * 1000 >= 1);
    }
    /* The values README and docs/internals/client.md state. */
    CHECK(spec_named("connect_timeout")->def == 2 && spec_named("connect_timeout")->max == 3600);
    CHECK(spec_named("timeout")->def == 10 && spec_named("timeout")->max == 3600);
    CHECK(spec_named("deadline")->def == 30 && spec_named("deadline")->max == 86400);
    CHECK(spec_named("max_response")->def == 16 * 1024 * 1024);
    CHECK(spec_named("max_response")->min == 1 && spec_named("max_response")->max == 4294967296.0);
}

/* A client made from zeroed options got the table's defaults; given values
 * are kept. */
static void test_new_applies_the_table(void) {
    eid_client *c = NULL;
    eid_error err = {0};
    CHECK(eid_client_new(NULL, &c, &err) == EID_OK);
    if (c == NULL) return;
    CHECK(c->connect_timeout_ms == (long)(spec_named("connect_timeout")->def * 1000));
    CHECK(c->timeout_ms == (long)(spec_named("timeout")->def * 1000));
    CHECK(c->deadline_ms == (long)(spec_named("deadline")->def * 1000));
    CHECK(c->max_response == (size_t)spec_named("max_response")->def);
    char want[128];
    snprintf(want, sizeof want, "%s/", eid_client_default_endpoint());
    CHECK_STR(c->url, want);
    CHECK_STR(c->url, "https://faceid.tencentcloudapi.com/");
    eid_client_free(c);

    eid_client_options o = {.endpoint = "http://127.0.0.1:9",
                            .connect_timeout_ms = 7,
                            .timeout_ms = 8,
                            .deadline_ms = 9,
                            .max_response = 10};
    CHECK(eid_client_new(&o, &c, &err) == EID_OK);
    if (c == NULL) return;
    CHECK(c->connect_timeout_ms == 7 && c->timeout_ms == 8 && c->deadline_ms == 9);
    CHECK(c->max_response == 10);
    CHECK_STR(c->url, "http://127.0.0.1:9/");
    eid_client_free(c);
}

static void test_is_read(void) {
    static const struct {
        const char *action;
        int read;
    } rows[] = {
        {"GetEidResult", 1},
        {"CheckEidTokenStatus", 1},
        {"GetWeChatBillDetails", 1},
        {"GetEidToken", 0},
        {"DetectAuth", 0},
        {"getEidResult", 0},
        {"GetEidResultX", 0},
        {"GetEid", 0},
        {"", 0},
    };
    for (size_t i = 0; i < sizeof rows / sizeof *rows; i++) {
        if (eid_client_is_read(rows[i].action) != rows[i].read)
            fprintf(stderr, "is_read(%s)\n", rows[i].action);
        CHECK(eid_client_is_read(rows[i].action) == rows[i].read);
    }
    CHECK(eid_client_is_read(NULL) == 0);
}

/* The trace id both clients send: the seed's bytes with the counter added to
 * the last eight (carrying), the version and variant bits set, UUID layout. */
static void test_trace_id(void) {
    unsigned char seed[16];
    for (int i = 0; i < 16; i++)
        seed[i] = (unsigned char)(0xf0 + i);
    char id[EID_TRACE_ID_MAX];
    eid_trace_id(seed, 0, id);
    CHECK_STR(id, "f0f1f2f3-f4f5-46f7-b8f9-fafbfcfdfeff");
    eid_trace_id(seed, 1, id); /* 0xff + 1 carries into the byte before */
    CHECK_STR(id, "f0f1f2f3-f4f5-46f7-b8f9-fafbfcfdff00");
    eid_trace_id(seed, 0x0102030405060708u, id);
    CHECK_STR(id, "f0f1f2f3-f4f5-46f7-b9fb-fe0002040607");
    memset(seed, 0, sizeof seed);
    eid_trace_id(seed, UINT64_MAX, id);
    CHECK_STR(id, "00000000-0000-4000-bfff-ffffffffffff");
    char other[EID_TRACE_ID_MAX];
    eid_trace_id(seed, UINT64_MAX - 1, other);
    CHECK(strcmp(id, other) != 0 && strlen(id) == 36);
}

int main(void) {
    test_table();
    test_trace_id();
    CHECK_STR(eid_client_default_service(), "faceid");
    test_new_applies_the_table();
    test_is_read();
    return check_report("test_client_options");
}
