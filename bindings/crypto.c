/* eidkit.Key (an SM2 or RSA key from eidkit/crypto.h) and the module-level
 * symmetric ciphers and base64 that eidkit.crypto builds on. Misuse (wrong
 * argument types, key or IV lengths) raises; failures of the data
 * (decryption, format) return nil, err with err.code "decrypt", "format" or
 * "key". Plaintext returned to Lua is a Lua string, which Lua cannot wipe;
 * the C buffers behind it are wiped (docs/internals/crypto.md). */
#include "eidkit/crypto.h"

#include "eidkit_lua.h"

#include <openssl/crypto.h>
#include <string.h>

#define EIDKIT_KEY_MT "eidkit.Key"

typedef struct lkey {
    eid_pkey *k; /* NULL once closed */
} lkey;

static lkey *check_key(lua_State *L, int idx) {
    lkey *lk = luaL_checkudata(L, idx, EIDKIT_KEY_MT);
    if (lk->k == NULL) luaL_error(L, "attempt to use a closed eidkit.Key");
    return lk;
}

/* nil, err for a failed status; misuse (EID_E_INVALID_ARG) raises. */
static int failed(lua_State *L, eid_status st, const eid_error *err) {
    if (st == EID_E_INVALID_ARG) return luaL_error(L, "%s", err->message);
    return eidkit_push_status(L, st, err->message);
}

/* key_load(pem) -> Key | nil, err */
static int l_key_load(lua_State *L) {
    size_t len;
    const char *pem = luaL_checklstring(L, 1, &len);
    lkey *lk = lua_newuserdatauv(L, sizeof *lk, 0);
    lk->k = NULL;
    luaL_setmetatable(L, EIDKIT_KEY_MT);
    eid_error err = {0};
    eid_status st = eid_pkey_load(pem, len, &lk->k, &err);
    if (st != EID_OK) return eidkit_push_status(L, st, err.message);
    return 1;
}

/* key_load_file(path) -> Key | nil, err */
static int l_key_load_file(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    lkey *lk = lua_newuserdatauv(L, sizeof *lk, 0);
    lk->k = NULL;
    luaL_setmetatable(L, EIDKIT_KEY_MT);
    eid_error err = {0};
    eid_status st = eid_pkey_load_file(path, &lk->k, &err);
    if (st != EID_OK) return eidkit_push_status(L, st, err.message);
    return 1;
}

static int l_key_close(lua_State *L) {
    lkey *lk = luaL_checkudata(L, 1, EIDKIT_KEY_MT);
    eid_pkey_free(lk->k);
    lk->k = NULL;
    return 0;
}

static int l_key_tostring(lua_State *L) {
    lkey *lk = luaL_checkudata(L, 1, EIDKIT_KEY_MT);
    if (lk->k == NULL) {
        lua_pushliteral(L, "eidkit.Key (closed)");
    } else {
        lua_pushfstring(L, "eidkit.Key (%s %s)",
                        eid_pkey_get_type(lk->k) == EID_PKEY_SM2 ? "SM2" : "RSA",
                        eid_pkey_is_private(lk->k) ? "private" : "public");
    }
    return 1;
}

static int l_key_type(lua_State *L) {
    lkey *lk = check_key(L, 1);
    lua_pushstring(L, eid_pkey_get_type(lk->k) == EID_PKEY_SM2 ? "sm2" : "rsa");
    return 1;
}

static int l_key_is_private(lua_State *L) {
    lua_pushboolean(L, eid_pkey_is_private(check_key(L, 1)->k));
    return 1;
}

static int l_key_public_pem(lua_State *L) {
    lkey *lk = check_key(L, 1);
    char buf[4096];
    size_t n = 0;
    eid_error err = {0};
    eid_status st = eid_pkey_public_pem(lk->k, buf, sizeof buf, &n, &err);
    if (st != EID_OK) return failed(L, st, &err);
    lua_pushlstring(L, buf, n);
    return 1;
}

static const char *const layout_names[] = {"auto", "c1c3c2", "c1c3c2_raw", "der", NULL};

/* key:encrypt(data [, layout]) -> ciphertext: SM2 (layout "c1c3c2" with the
 * 04 prefix by default, "c1c3c2_raw", "der") or RSA PKCS#1 v1.5. */
static int l_key_encrypt(lua_State *L) {
    lkey *lk = check_key(L, 1);
    size_t len;
    const char *in = luaL_checklstring(L, 2, &len);
    eid_error err = {0};
    eid_status st;
    size_t n = 0;
    luaL_Buffer b;
    if (eid_pkey_get_type(lk->k) == EID_PKEY_SM2) {
        eid_sm2_layout layout = (eid_sm2_layout)luaL_checkoption(L, 3, "c1c3c2", layout_names);
        luaL_argcheck(L, layout != EID_SM2_AUTO, 3, "'auto' is for decryption");
        lua_settop(L, 3);
        size_t cap = eid_sm2_ciphertext_len(layout, len);
        char *p = luaL_buffinitsize(L, &b, cap);
        st = eid_sm2_encrypt(lk->k, layout, in, len, p, cap, &n, &err);
    } else {
        size_t cap = eid_rsa_ciphertext_len(lk->k, len);
        char *p = luaL_buffinitsize(L, &b, cap ? cap : 1);
        st = eid_rsa_encrypt(lk->k, in, len, p, cap, &n, &err);
    }
    if (st != EID_OK) return failed(L, st, &err);
    luaL_pushresultsize(&b, n);
    return 1;
}

/* key:decrypt(data [, layout]) -> plaintext[, layout] | nil, err. SM2
 * detects the layout unless one is given, and returns the one found. */
static int l_key_decrypt(lua_State *L) {
    lkey *lk = check_key(L, 1);
    size_t len;
    const char *in = luaL_checklstring(L, 2, &len);
    int sm2 = eid_pkey_get_type(lk->k) == EID_PKEY_SM2;
    eid_sm2_layout layout =
        sm2 ? (eid_sm2_layout)luaL_checkoption(L, 3, "auto", layout_names) : EID_SM2_AUTO;
    lua_settop(L, 2); /* the buffer goes on top of the arguments */
    eid_error err = {0};
    eid_status st;
    size_t n = 0;
    luaL_Buffer b;
    char *p = luaL_buffinitsize(L, &b, len ? len : 1);
    eid_sm2_layout found = EID_SM2_AUTO;
    if (sm2) {
        st = eid_sm2_decrypt(lk->k, layout, in, len, p, len, &n, &found, &err);
    } else {
        st = eid_rsa_decrypt(lk->k, in, len, p, len, &n, &err);
    }
    if (st != EID_OK) return failed(L, st, &err);
    luaL_pushresultsize(&b, n);
    if (!sm2) return 1;
    lua_pushstring(L, layout_names[found]);
    return 2;
}

/* key:decrypt_eidinfo(DesKey, UserInfo) -> {name, idtype, idnum} | nil, err */
static int l_key_decrypt_eidinfo(lua_State *L) {
    lkey *lk = check_key(L, 1);
    size_t dl, ul;
    const char *dk = luaL_checklstring(L, 2, &dl);
    const char *ui = luaL_checklstring(L, 3, &ul);
    eid_identity id;
    eid_error err = {0};
    eid_status st = eid_eidinfo_decrypt(lk->k, dk, dl, ui, ul, &id, &err);
    if (st != EID_OK) return failed(L, st, &err);
    lua_createtable(L, 0, 3);
    lua_pushstring(L, id.name);
    lua_setfield(L, -2, "name");
    lua_pushstring(L, id.idtype);
    lua_setfield(L, -2, "idtype");
    lua_pushstring(L, id.idnum);
    lua_setfield(L, -2, "idnum");
    eid_identity_wipe(&id);
    return 1;
}

/* Copy the string field `name` of the table at idx into dst[cap]. */
static void identity_field(lua_State *L, int idx, const char *name, char *dst, size_t cap,
                           eid_identity *id) {
    lua_getfield(L, idx, name);
    size_t n = 0;
    const char *s = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &n) : NULL;
    if (s == NULL || n >= cap || strlen(s) != n) {
        eid_identity_wipe(id);
        luaL_error(L,
                   "bad argument #2 to 'encrypt_eidinfo' (%s: expected a string shorter than "
                   "%d bytes)",
                   name, (int)cap);
    }
    memcpy(dst, s, n + 1);
    lua_pop(L, 1);
}

/* key:encrypt_eidinfo({name, idtype, idnum} [, layout]) -> DesKey, UserInfo
 * (the simulator's side; key is the merchant's SM2 public key). */
static int l_key_encrypt_eidinfo(lua_State *L) {
    lkey *lk = check_key(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    eid_sm2_layout layout = (eid_sm2_layout)luaL_checkoption(L, 3, "c1c3c2", layout_names);
    luaL_argcheck(L, layout != EID_SM2_AUTO, 3, "'auto' is for decryption");
    eid_identity id;
    memset(&id, 0, sizeof id);
    identity_field(L, 2, "name", id.name, sizeof id.name, &id);
    identity_field(L, 2, "idnum", id.idnum, sizeof id.idnum, &id);
    lua_getfield(L, 2, "idtype");
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        strcpy(id.idtype, "01");
    } else {
        lua_pop(L, 1);
        identity_field(L, 2, "idtype", id.idtype, sizeof id.idtype, &id);
    }
    char dk[1024], ui[2048];
    eid_error err = {0};
    eid_status st = eid_eidinfo_encrypt(lk->k, layout, &id, dk, sizeof dk, ui, sizeof ui, &err);
    eid_identity_wipe(&id);
    if (st != EID_OK) return failed(L, st, &err);
    lua_pushstring(L, dk);
    lua_pushstring(L, ui);
    return 2;
}

/* ------------------------------------------------------ symmetric ciphers */

static const char *check_bytes(lua_State *L, int idx, size_t want, const char *what) {
    size_t len;
    const char *s = luaL_checklstring(L, idx, &len);
    if (len != want) {
        lua_pushfstring(L, "%s: expected %d bytes, got %d", what, (int)want, (int)len);
        luaL_argerror(L, idx, lua_tostring(L, -1));
    }
    return s;
}

/* sm4_ecb_encrypt(key16, data) / sm4_ecb_decrypt(key16, data): no padding. */
static int sm4_ecb(lua_State *L, int enc) {
    const char *key = check_bytes(L, 1, EID_SM4_KEY_LEN, "key");
    size_t len, n = 0;
    const char *in = luaL_checklstring(L, 2, &len);
    luaL_Buffer b;
    char *p = luaL_buffinitsize(L, &b, len ? len : 1);
    eid_error err = {0};
    eid_status st = enc ? eid_sm4_ecb_encrypt(key, EID_SM4_KEY_LEN, in, len, p, len, &n, &err)
                        : eid_sm4_ecb_decrypt(key, EID_SM4_KEY_LEN, in, len, p, len, &n, &err);
    if (st != EID_OK) return failed(L, st, &err);
    luaL_pushresultsize(&b, n);
    return 1;
}
static int l_sm4_ecb_encrypt(lua_State *L) { return sm4_ecb(L, 1); }
static int l_sm4_ecb_decrypt(lua_State *L) { return sm4_ecb(L, 0); }

/* aes_cbc_encrypt(key32, iv16, data) / aes_cbc_decrypt: AES-256-CBC, PKCS#7. */
static int aes_cbc(lua_State *L, int enc) {
    const char *key = check_bytes(L, 1, EID_AES256_KEY_LEN, "key");
    const char *iv = check_bytes(L, 2, EID_CBC_IV_LEN, "iv");
    size_t len, n = 0;
    const char *in = luaL_checklstring(L, 3, &len);
    size_t cap = len + 16;
    luaL_Buffer b;
    char *p = luaL_buffinitsize(L, &b, cap);
    eid_error err = {0};
    eid_status st = enc ? eid_aes_cbc_encrypt(key, EID_AES256_KEY_LEN, iv, EID_CBC_IV_LEN, in, len,
                                              p, cap, &n, &err)
                        : eid_aes_cbc_decrypt(key, EID_AES256_KEY_LEN, iv, EID_CBC_IV_LEN, in, len,
                                              p, cap, &n, &err);
    if (st != EID_OK) return failed(L, st, &err);
    luaL_pushresultsize(&b, n);
    return 1;
}
static int l_aes_cbc_encrypt(lua_State *L) { return aes_cbc(L, 1); }
static int l_aes_cbc_decrypt(lua_State *L) { return aes_cbc(L, 0); }

/* sm4_gcm_encrypt(key16, iv12, data) -> ciphertext, tag16 */
static int l_sm4_gcm_encrypt(lua_State *L) {
    const char *key = check_bytes(L, 1, EID_SM4_KEY_LEN, "key");
    const char *iv = check_bytes(L, 2, EID_GCM_IV_LEN, "iv");
    size_t len, n = 0;
    const char *in = luaL_checklstring(L, 3, &len);
    unsigned char tag[EID_GCM_TAG_LEN];
    luaL_Buffer b;
    char *p = luaL_buffinitsize(L, &b, len ? len : 1);
    eid_error err = {0};
    eid_status st = eid_sm4_gcm_encrypt(key, EID_SM4_KEY_LEN, iv, EID_GCM_IV_LEN, in, len, p,
                                        len ? len : 1, &n, tag, &err);
    if (st != EID_OK) return failed(L, st, &err);
    luaL_pushresultsize(&b, n);
    lua_pushlstring(L, (const char *)tag, sizeof tag);
    return 2;
}

/* sm4_gcm_decrypt(key16, iv12, ciphertext, tag) -> plaintext | nil, err */
static int l_sm4_gcm_decrypt(lua_State *L) {
    const char *key = check_bytes(L, 1, EID_SM4_KEY_LEN, "key");
    const char *iv = check_bytes(L, 2, EID_GCM_IV_LEN, "iv");
    size_t len, tlen, n = 0;
    const char *in = luaL_checklstring(L, 3, &len);
    const char *tag = luaL_checklstring(L, 4, &tlen);
    luaL_Buffer b;
    char *p = luaL_buffinitsize(L, &b, len ? len : 1);
    eid_error err = {0};
    eid_status st = eid_sm4_gcm_decrypt(key, EID_SM4_KEY_LEN, iv, EID_GCM_IV_LEN, in, len, tag,
                                        tlen, p, len ? len : 1, &n, &err);
    if (st != EID_OK) return failed(L, st, &err);
    luaL_pushresultsize(&b, n);
    return 1;
}

/* base64_encode(bytes) -> text */
static int l_base64_encode(lua_State *L) {
    size_t len, n = 0;
    const char *in = luaL_checklstring(L, 1, &len);
    luaL_argcheck(L, len <= EID_CIPHER_IN_MAX, 1, "too long");
    size_t cap = eid_base64_encoded_len(len);
    luaL_Buffer b;
    char *p = luaL_buffinitsize(L, &b, cap);
    if (eid_base64_encode(in, len, p, cap, &n) != EID_OK) return luaL_error(L, "base64 failed");
    luaL_pushresultsize(&b, n);
    return 1;
}

/* base64_decode(text) -> bytes | nil, err (code "format") */
static int l_base64_decode(lua_State *L) {
    size_t len, n = 0;
    const char *in = luaL_checklstring(L, 1, &len);
    size_t cap = len / 4 * 3 + 1;
    luaL_Buffer b;
    char *p = luaL_buffinitsize(L, &b, cap);
    eid_error err = {0};
    eid_status st = eid_base64_decode(in, len, p, cap, &n, &err);
    if (st != EID_OK) return eidkit_push_status(L, st, err.message);
    luaL_pushresultsize(&b, n);
    return 1;
}

void eidkit_open_crypto(lua_State *L) {
    static const luaL_Reg meta[] = {
        {"__gc", l_key_close},
        {"__close", l_key_close},
        {"__tostring", l_key_tostring},
        {NULL, NULL},
    };
    static const luaL_Reg methods[] = {
        {"type", l_key_type},
        {"is_private", l_key_is_private},
        {"public_pem", l_key_public_pem},
        {"encrypt", l_key_encrypt},
        {"decrypt", l_key_decrypt},
        {"decrypt_eidinfo", l_key_decrypt_eidinfo},
        {"encrypt_eidinfo", l_key_encrypt_eidinfo},
        {"close", l_key_close},
        {NULL, NULL},
    };
    eidkit_new_class(L, EIDKIT_KEY_MT, meta, methods);
    lua_pop(L, 1);
    static const luaL_Reg funcs[] = {
        {"key_load", l_key_load},
        {"key_load_file", l_key_load_file},
        {"sm4_ecb_encrypt", l_sm4_ecb_encrypt},
        {"sm4_ecb_decrypt", l_sm4_ecb_decrypt},
        {"aes_cbc_encrypt", l_aes_cbc_encrypt},
        {"aes_cbc_decrypt", l_aes_cbc_decrypt},
        {"sm4_gcm_encrypt", l_sm4_gcm_encrypt},
        {"sm4_gcm_decrypt", l_sm4_gcm_decrypt},
        {"base64_encode", l_base64_encode},
        {"base64_decode", l_base64_decode},
        {NULL, NULL},
    };
    luaL_setfuncs(L, funcs, 0);
}
