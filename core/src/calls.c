/*
 * The typed E证通 calls: GetEidToken, GetEidResult and CheckEidTokenStatus
 * as request bodies built with jansson, then eid_client_call.
 */
#include "client_internal.h"

#include <jansson.h>

#include <stdlib.h>
#include <string.h>

/* Serialise obj (stolen) and call action with it. */
static eid_status call_json(eid_client *c, const char *action, json_t *obj, eid_result **out,
                            eid_error *err) {
    if (obj == NULL) return eid__fail(err, EID_E_NOMEM, "", "out of memory");
    char *body = json_dumps(obj, JSON_COMPACT);
    json_decref(obj);
    if (body == NULL) return eid__fail(err, EID_E_NOMEM, "", "out of memory");
    eid_status st = eid_client_call(c, action, body, strlen(body), out, err);
    free(body);
    return st;
}

/* Set key to the string v when v is not NULL; 0 on failure. */
static int put_str(json_t *o, const char *key, const char *v) {
    return v == NULL || json_object_set_new(o, key, json_string(v)) == 0;
}

eid_status eid_client_get_eid_token(eid_client *c, const eid_get_eid_token_params *p,
                                    eid_result **out, eid_error *err) {
    if (out) *out = NULL;
    if (p == NULL || p->merchant_id == NULL || *p->merchant_id == '\0')
        return eid__fail(err, EID_E_INVALID_ARG, "MerchantId", "required");
    if ((p->name == NULL) != (p->id_card == NULL))
        return eid__fail(err, EID_E_INVALID_ARG, "Name", "Name and IdCard go together");
    json_t *o = json_object();
    if (o == NULL) return eid__fail(err, EID_E_NOMEM, "", "out of memory");
    int ok = put_str(o, "MerchantId", p->merchant_id) && put_str(o, "Name", p->name) &&
             put_str(o, "IdCard", p->id_card) && put_str(o, "Extra", p->extra) &&
             put_str(o, "RedirectUrl", p->redirect_url);
    if (!ok) {
        json_decref(o);
        return eid__fail(err, EID_E_INVALID_ARG, "Name", "a field is not valid UTF-8");
    }
    if (p->config_json) {
        json_error_t jerr;
        json_t *cfg = json_loads(p->config_json, 0, &jerr);
        if (!json_is_object(cfg)) {
            json_decref(cfg);
            json_decref(o);
            return eid__fail(err, EID_E_INVALID_ARG, "Config", "must be a JSON object");
        }
        json_object_set_new(o, "Config", cfg);
    }
    return call_json(c, "GetEidToken", o, out, err);
}

eid_status eid_client_get_eid_result(eid_client *c, const char *eid_token, const char *info_type,
                                     int best_frames_count, eid_result **out, eid_error *err) {
    if (out) *out = NULL;
    if (eid_token == NULL || *eid_token == '\0')
        return eid__fail(err, EID_E_INVALID_ARG, "EidToken", "required");
    json_t *o = json_object();
    if (o == NULL) return eid__fail(err, EID_E_NOMEM, "", "out of memory");
    int ok = put_str(o, "EidToken", eid_token) && put_str(o, "InfoType", info_type) &&
             (best_frames_count < 0 ||
              json_object_set_new(o, "BestFramesCount", json_integer(best_frames_count)) == 0);
    if (!ok) {
        json_decref(o);
        return eid__fail(err, EID_E_INVALID_ARG, "EidToken", "not valid UTF-8");
    }
    return call_json(c, "GetEidResult", o, out, err);
}

eid_status eid_client_check_eid_token_status(eid_client *c, const char *eid_token, eid_result **out,
                                             eid_error *err) {
    if (out) *out = NULL;
    if (eid_token == NULL || *eid_token == '\0')
        return eid__fail(err, EID_E_INVALID_ARG, "EidToken", "required");
    json_t *o = json_object();
    if (o == NULL) return eid__fail(err, EID_E_NOMEM, "", "out of memory");
    if (!put_str(o, "EidToken", eid_token)) {
        json_decref(o);
        return eid__fail(err, EID_E_INVALID_ARG, "EidToken", "not valid UTF-8");
    }
    return call_json(c, "CheckEidTokenStatus", o, out, err);
}
