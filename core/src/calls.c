/*
 * The typed E证通 calls: GetEidToken, GetEidResult and CheckEidTokenStatus
 * as request bodies built with cJSON, then eid_client_call.
 */
#include "client_internal.h"

#include <cjson/cJSON.h>

#include <string.h>

/* 1 when s is UTF-8 as RFC 3629 has it: no overlong forms, no surrogates,
 * nothing past U+10FFFF. cJSON copies bytes as they are; the service
 * expects UTF-8, so a bad field is the caller's mistake, named. */
static int utf8_valid(const char *s) {
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        unsigned c = *p, cp, min;
        size_t n;
        if (c < 0x80) {
            p++;
            continue;
        }
        if (c >= 0xc2 && c <= 0xdf)
            n = 1, cp = c & 0x1f, min = 0x80;
        else if (c >= 0xe0 && c <= 0xef)
            n = 2, cp = c & 0x0f, min = 0x800;
        else if (c >= 0xf0 && c <= 0xf4)
            n = 3, cp = c & 0x07, min = 0x10000;
        else
            return 0;
        for (size_t i = 1; i <= n; i++) {
            if ((p[i] & 0xc0) != 0x80) return 0; /* also stops at the NUL */
            cp = cp << 6 | (p[i] & 0x3fu);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
        p += n + 1;
    }
    return 1;
}

typedef struct field {
    const char *key; /* Tencent's name, a literal */
    const char *value;
} field;

/* A new object of the string fields whose value is not NULL, in order. */
static eid_status build(const field *f, size_t n, cJSON **out, eid_error *err) {
    *out = NULL;
    for (size_t i = 0; i < n; i++)
        if (f[i].value && !utf8_valid(f[i].value))
            return eid__fail(err, EID_E_INVALID_ARG, f[i].key, "not valid UTF-8");
    cJSON *o = cJSON_CreateObject();
    if (o == NULL) return eid__fail(err, EID_E_NOMEM, "", "out of memory");
    for (size_t i = 0; i < n; i++) {
        if (f[i].value == NULL) continue;
        if (!cJSON_AddItemToObjectCS(o, f[i].key, cJSON_CreateString(f[i].value))) {
            cJSON_Delete(o);
            return eid__fail(err, EID_E_NOMEM, "", "out of memory");
        }
    }
    *out = o;
    return EID_OK;
}

/* Serialise obj (freed here) and call action with it. */
static eid_status call_json(eid_client *c, const char *action, cJSON *obj, eid_result **out,
                            eid_error *err) {
    char *body = cJSON_PrintUnformatted(obj);
    cJSON_Delete(obj);
    if (body == NULL) return eid__fail(err, EID_E_NOMEM, "", "out of memory");
    eid_status st = eid_client_call(c, action, body, strlen(body), out, err);
    cJSON_free(body);
    return st;
}

eid_status eid_client_get_eid_token(eid_client *c, const eid_get_eid_token_params *p,
                                    eid_result **out, eid_error *err) {
    if (out) *out = NULL;
    if (p == NULL || p->merchant_id == NULL || *p->merchant_id == '\0')
        return eid__fail(err, EID_E_INVALID_ARG, "MerchantId", "required");
    if ((p->name == NULL) != (p->id_card == NULL))
        return eid__fail(err, EID_E_INVALID_ARG, "Name", "Name and IdCard go together");
    if (p->config_json && !utf8_valid(p->config_json))
        return eid__fail(err, EID_E_INVALID_ARG, "Config", "must be a JSON object");
    const field f[] = {
        {"MerchantId", p->merchant_id},   {"Name", p->name},
        {"IdCard", p->id_card},           {"Extra", p->extra},
        {"RedirectUrl", p->redirect_url},
    };
    cJSON *o;
    eid_status st = build(f, sizeof f / sizeof *f, &o, err);
    if (st != EID_OK) return st;
    if (p->config_json) {
        cJSON *cfg = cJSON_ParseWithOpts(p->config_json, NULL, 1);
        if (!cJSON_IsObject(cfg)) {
            cJSON_Delete(cfg);
            cJSON_Delete(o);
            return eid__fail(err, EID_E_INVALID_ARG, "Config", "must be a JSON object");
        }
        cJSON_AddItemToObjectCS(o, "Config", cfg); /* cannot fail: both exist */
    }
    return call_json(c, "GetEidToken", o, out, err);
}

eid_status eid_client_get_eid_result(eid_client *c, const char *eid_token, const char *info_type,
                                     int best_frames_count, eid_result **out, eid_error *err) {
    if (out) *out = NULL;
    if (eid_token == NULL || *eid_token == '\0')
        return eid__fail(err, EID_E_INVALID_ARG, "EidToken", "required");
    const field f[] = {{"EidToken", eid_token}, {"InfoType", info_type}};
    cJSON *o;
    eid_status st = build(f, sizeof f / sizeof *f, &o, err);
    if (st != EID_OK) return st;
    if (best_frames_count >= 0 &&
        cJSON_AddNumberToObject(o, "BestFramesCount", best_frames_count) == NULL) {
        cJSON_Delete(o);
        return eid__fail(err, EID_E_NOMEM, "", "out of memory");
    }
    return call_json(c, "GetEidResult", o, out, err);
}

eid_status eid_client_check_eid_token_status(eid_client *c, const char *eid_token, eid_result **out,
                                             eid_error *err) {
    if (out) *out = NULL;
    if (eid_token == NULL || *eid_token == '\0')
        return eid__fail(err, EID_E_INVALID_ARG, "EidToken", "required");
    const field f[] = {{"EidToken", eid_token}};
    cJSON *o;
    eid_status st = build(f, sizeof f / sizeof *f, &o, err);
    if (st != EID_OK) return st;
    return call_json(c, "CheckEidTokenStatus", o, out, err);
}
