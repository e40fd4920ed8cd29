/* GetEidResult's EidInfo: an SM4 session key SM2-encrypted to the merchant
 * (DesKey) and the identity JSON under SM4-ECB without padding (UserInfo),
 * both base64 (eid-api.md §6.1). */
#include "eidkit/crypto.h"

#include "crypto_internal.h"

#include <cjson/cJSON.h>
#include <openssl/crypto.h>
#include <string.h>

void eid_identity_wipe(eid_identity *id) {
    if (id != NULL) OPENSSL_cleanse(id, sizeof *id);
}

/* Wipe every string value of a parsed tree before it is freed. */
static void cleanse_json(cJSON *node) {
    for (; node != NULL; node = node->next) {
        if (node->valuestring != NULL)
            OPENSSL_cleanse(node->valuestring, strlen(node->valuestring));
        cleanse_json(node->child);
    }
}

/* Copy the string member `name` of obj into dst[cap]. */
static eid_status take(const cJSON *obj, const char *name, char *dst, size_t cap, int required,
                       eid_error *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, name);
    if (v == NULL && !required) return EID_OK;
    if (!cJSON_IsString(v)) {
        return eid__fail(err, EID_E_FORMAT, "UserInfo", "\"%s\" is missing or not a string", name);
    }
    size_t n = strlen(v->valuestring);
    if (n >= cap) return eid__fail(err, EID_E_FORMAT, "UserInfo", "\"%s\" is too long", name);
    memcpy(dst, v->valuestring, n + 1);
    return EID_OK;
}

/* base64 text of len bytes, checked and decoded into a fresh buffer. */
static eid_status unbase64(const char *field, const char *in, size_t len, unsigned char **out,
                           size_t *out_len, eid_error *err) {
    *out = NULL;
    if (in == NULL || len == 0) return eid__fail(err, EID_E_FORMAT, field, "empty");
    if (len > EID_EIDINFO_B64_MAX) {
        return eid__fail(err, EID_E_FORMAT, field, "longer than %d characters",
                         EID_EIDINFO_B64_MAX);
    }
    size_t cap = len / 4 * 3 + 1;
    *out = OPENSSL_malloc(cap);
    if (*out == NULL) return eid__fail(err, EID_E_NOMEM, field, "out of memory");
    eid_error e = {0};
    eid_status st = eid_base64_decode(in, len, *out, cap, out_len, &e);
    if (st != EID_OK) {
        OPENSSL_clear_free(*out, cap);
        *out = NULL;
        return eid__fail(err, st, field, "%s", e.message);
    }
    return EID_OK;
}

eid_status eid_eidinfo_decrypt(const eid_pkey *key, const char *des_key, size_t des_key_len,
                               const char *user_info, size_t user_info_len, eid_identity *out,
                               eid_error *err) {
    eid_status st = EID_OK;
    unsigned char *dk = NULL, *ui = NULL, *plain = NULL;
    size_t dk_len = 0, ui_len = 0, plain_len = 0, ui_cap = 0;
    unsigned char session[EID_SM4_KEY_LEN + 1];
    size_t session_len = 0;
    cJSON *json = NULL;
    if (out == NULL) return eid__fail(err, EID_E_INVALID_ARG, "out", "NULL");
    memset(out, 0, sizeof *out);
    if (key == NULL) return eid__fail(err, EID_E_INVALID_ARG, "key", "NULL");
    st = unbase64("DesKey", des_key, des_key_len, &dk, &dk_len, err);
    if (st != EID_OK) goto fail;
    st = unbase64("UserInfo", user_info, user_info_len, &ui, &ui_len, err);
    if (st != EID_OK) goto fail;
    ui_cap = user_info_len / 4 * 3 + 1;

    eid_error e = {0};
    st = eid_sm2_decrypt(key, EID_SM2_AUTO, dk, dk_len, session, sizeof session, &session_len, NULL,
                         &e);
    if (st == EID_E_BUFFER_TOO_SMALL || (st == EID_OK && session_len != EID_SM4_KEY_LEN)) {
        st = eid__fail(err, EID_E_FORMAT, "DesKey", "the session key is %zu bytes (expected %d)",
                       session_len, EID_SM4_KEY_LEN);
        goto fail;
    }
    if (st != EID_OK) {
        eid__fail(err, st, "DesKey", "%s", e.message);
        goto fail;
    }
    plain = OPENSSL_malloc(ui_len + 1);
    if (plain == NULL) {
        st = eid__fail(err, EID_E_NOMEM, "UserInfo", "out of memory");
        goto fail;
    }
    st = eid_sm4_ecb_decrypt(session, session_len, ui, ui_len, plain, ui_len, &plain_len, &e);
    if (st != EID_OK) {
        eid__fail(err, st, "UserInfo", "%s", e.message);
        goto fail;
    }
    /* Without padding the sender fills the last block as it likes: the JSON
     * object ends at the last '}', and is the whole plaintext up to there.
     * Blocks decrypted with the wrong key are random: they begin with '{'
     * one time in 256 (and with "{}" one in 65,536), so what is not one
     * object ending there is one verdict whatever its first bytes. */
    size_t end = plain_len;
    while (end > 0 && plain[end - 1] != '}')
        end--;
    const char *parsed = NULL;
    if (end > 0 && plain[0] == '{')
        json = cJSON_ParseWithLengthOpts((const char *)plain, end, &parsed, 0);
    if (!cJSON_IsObject(json) || parsed != (const char *)plain + end) {
        st = eid__fail(err, EID_E_DECRYPT, "UserInfo",
                       "the plaintext is not a JSON object: wrong key or tampered ciphertext");
        goto fail;
    }
    st = take(json, "name", out->name, sizeof out->name, 1, err);
    if (st == EID_OK) st = take(json, "idnum", out->idnum, sizeof out->idnum, 1, err);
    if (st == EID_OK) st = take(json, "idtype", out->idtype, sizeof out->idtype, 0, err);
fail:
    if (st != EID_OK) eid_identity_wipe(out);
    cleanse_json(json);
    cJSON_Delete(json);
    OPENSSL_cleanse(session, sizeof session);
    if (plain) OPENSSL_clear_free(plain, ui_len + 1);
    if (ui) OPENSSL_clear_free(ui, ui_cap);
    if (dk) OPENSSL_free(dk);
    return st;
}

eid_status eid_eidinfo_encrypt(const eid_pkey *key, eid_sm2_layout layout, const eid_identity *id,
                               char *des_key, size_t des_key_cap, char *user_info,
                               size_t user_info_cap, eid_error *err) {
    eid_status st = EID_OK;
    unsigned char session[EID_SM4_KEY_LEN];
    unsigned char wrapped[EID_SM4_KEY_LEN + 128];
    size_t wrapped_len = 0, text_len = 0, padded = 0, ct_len = 0, n = 0;
    char *text = NULL;
    unsigned char *ct = NULL;
    cJSON *json = NULL;
    if (key == NULL || id == NULL || des_key == NULL || user_info == NULL) {
        return eid__fail(err, EID_E_INVALID_ARG, "key", "NULL argument");
    }
    if (eid_random_bytes(session, sizeof session) != EID_OK) {
        return eid__fail(err, EID_E_CRYPTO, "key", "the random generator failed");
    }
    st = eid_sm2_encrypt(key, layout, session, sizeof session, wrapped, sizeof wrapped,
                         &wrapped_len, err);
    if (st != EID_OK) goto fail;
    json = cJSON_CreateObject();
    if (json == NULL || !cJSON_AddStringToObject(json, "name", id->name) ||
        !cJSON_AddStringToObject(json, "idtype", id->idtype) ||
        !cJSON_AddStringToObject(json, "idnum", id->idnum) ||
        (text = cJSON_PrintUnformatted(json)) == NULL) {
        st = eid__fail(err, EID_E_NOMEM, "UserInfo", "out of memory");
        goto fail;
    }
    text_len = strlen(text);
    padded = (text_len + 15) / 16 * 16;
    ct = OPENSSL_zalloc(padded);
    if (ct == NULL) {
        st = eid__fail(err, EID_E_NOMEM, "UserInfo", "out of memory");
        goto fail;
    }
    memcpy(ct, text, text_len); /* zero filler to the block size */
    st = eid_sm4_ecb_encrypt(session, sizeof session, ct, padded, ct, padded, &ct_len, err);
    if (st != EID_OK) goto fail;
    st = eid_base64_encode(wrapped, wrapped_len, des_key, des_key_cap, &n);
    if (st == EID_OK) st = eid_base64_encode(ct, ct_len, user_info, user_info_cap, &n);
    if (st != EID_OK) eid__fail(err, st, "out", "buffers too small");
fail:
    OPENSSL_cleanse(session, sizeof session);
    if (text) {
        OPENSSL_cleanse(text, text_len);
        cJSON_free(text);
    }
    cleanse_json(json);
    cJSON_Delete(json);
    if (ct) OPENSSL_clear_free(ct, padded);
    return st;
}
