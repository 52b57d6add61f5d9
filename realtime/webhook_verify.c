// realtime/webhook_verify.c — see webhook_verify.h.
//
// Digests are computed with OpenSSL (EVP_MAC HMAC-SHA256, EVP MD5, EVP_EncodeBlock for base64)
// over the raw bytes, streamed: no copy of the body is made except in the Cryptomus fallback, which
// has to rebuild the signed text. Choices where providers.md leaves room:
// - Stripe: a header with two "t" items is refused (stripe-node keeps the last; Stripe never sends
//   two); "t" must be plain decimal digits; a v1 value must be the lowercase hex digest, as
//   stripe-node compares strings; at most WEBHOOK_SECRETS_MAX secrets are tried.
// - Cryptomus: the raw cut is tried first and, if the body ends with the sign member, is final: a
//   body whose text is not what Cryptomus signed (e.g. "/" not escaped) fails even though a PHP
//   re-encoding of it would match. Only a body whose "sign" is not the last member is rebuilt.
//   The rebuild writes control characters as \u00xx (lowercase, like PHP), escapes U+2028/U+2029
//   (PHP does under JSON_UNESCAPED_UNICODE) and writes an empty object as [] (PHP's empty array);
//   reals are written by jansson (17 significant digits), which can differ from PHP — Cryptomus
//   sends amounts as strings.
// - Rotation (the *_any functions): every configured secret is checked on every request and the
//   results are combined without an early exit, so the time taken does not depend on which secret
//   matched. The X-Vapi-Secret header is compared as SHA-256 digests, so not even the configured
//   secret's length shows in the time taken.
#include "realtime/webhook_verify.h"

#include <jansson.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "realtime/api_error.h"

static const char hexdigits[] = "0123456789abcdef";

static void to_hex(const unsigned char *in, size_t n, char *out) {
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hexdigits[in[i] >> 4];
        out[2 * i + 1] = hexdigits[in[i] & 15];
    }
    out[2 * n] = '\0';
}

// Lowercase hex HMAC-SHA256(key, a || b || c) into hex[65]. 0 or -1.
static int hmac_hex3(const char *key, const void *a, size_t alen, const void *b, size_t blen,
                     const void *c, size_t clen, char hex[65]) {
    EVP_MAC *m = EVP_MAC_fetch(NULL, "HMAC", NULL);
    EVP_MAC_CTX *ctx = m ? EVP_MAC_CTX_new(m) : NULL;
    OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, "SHA256", 0),
                           OSSL_PARAM_construct_end()};
    unsigned char mac[32];
    size_t outl = 0;
    int ok = ctx && EVP_MAC_init(ctx, (const unsigned char *)key, strlen(key), params) == 1 &&
             EVP_MAC_update(ctx, a, alen) == 1 && EVP_MAC_update(ctx, b, blen) == 1 &&
             (clen == 0 || EVP_MAC_update(ctx, c, clen) == 1) &&
             EVP_MAC_final(ctx, mac, &outl, sizeof mac) == 1 && outl == sizeof mac;
    EVP_MAC_CTX_free(ctx);
    EVP_MAC_free(m);
    if (!ok) return -1;
    to_hex(mac, sizeof mac, hex);
    return 0;
}

// Plain decimal, 1–18 digits (fits int64 without overflow checks).
static bool parse_decimal(const char *s, size_t n, int64_t *out) {
    if (n < 1 || n > 18) return false;
    int64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return false;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return true;
}

// ---------------------------------------------------------------------------------------- Stripe

typedef struct {
    const char *key;
    size_t klen;
    const char *val;
    size_t vlen;
} kv_t;

// Item i of "k=v,k=v,…": advances *pos past it. false when the header is exhausted.
static bool next_item(const char *h, size_t len, size_t *pos, kv_t *kv) {
    if (*pos > len) return false;
    const char *item = h + *pos;
    const char *comma = memchr(item, ',', len - *pos);
    size_t ilen = comma ? (size_t)(comma - item) : len - *pos;
    *pos += ilen + 1;
    const char *eq = memchr(item, '=', ilen);
    kv->key = item;
    kv->klen = eq ? (size_t)(eq - item) : ilen;
    kv->val = eq ? eq + 1 : item + ilen;
    kv->vlen = eq ? ilen - kv->klen - 1 : 0;
    return true;
}

static bool key_is(const kv_t *kv, const char *k) {
    return kv->klen == strlen(k) && memcmp(kv->key, k, kv->klen) == 0;
}

int stripe_signature_verify(const char *header, const void *body, size_t len,
                            const char *const *secrets, int64_t now, int64_t tolerance_s) {
    return stripe_signature_verify_any(header, body, len, secrets, now, tolerance_s, NULL);
}

int stripe_signature_verify_any(const char *header, const void *body, size_t len, const char *const *secrets,
                                int64_t now, int64_t tolerance_s, int *matched) {
    if (matched) *matched = -1;
    if (!header || (!body && len) || !secrets || len > WEBHOOK_BODY_MAX) return WEBHOOK_BAD_SIGNATURE;
    size_t hlen = strnlen(header, WEBHOOK_HEADER_MAX + 1);
    if (hlen > WEBHOOK_HEADER_MAX) return WEBHOOK_BAD_SIGNATURE;

    int64_t t = -1;
    size_t nv1 = 0, pos = 0;
    kv_t kv;
    while (next_item(header, hlen, &pos, &kv)) {
        if (key_is(&kv, "t")) {
            if (t >= 0 || !parse_decimal(kv.val, kv.vlen, &t)) return WEBHOOK_BAD_SIGNATURE;
        } else if (key_is(&kv, "v1")) {
            nv1++;
        }
    }
    if (t < 0 || nv1 == 0) return WEBHOOK_BAD_SIGNATURE;

    // the signed payload starts with t as a decimal number, as stripe-node formats it
    char tbuf[24];
    int tl = snprintf(tbuf, sizeof tbuf, "%lld.", (long long)t);
    char expect[WEBHOOK_SECRETS_MAX][65];
    int which[WEBHOOK_SECRETS_MAX];
    size_t nexp = 0;
    for (size_t i = 0; secrets[i] && i < WEBHOOK_SECRETS_MAX; i++) {
        if (!secrets[i][0]) continue;
        if (hmac_hex3(secrets[i], tbuf, (size_t)tl, body ? body : "", len, NULL, 0, expect[nexp]) != 0)
            return WEBHOOK_BAD_SIGNATURE;
        which[nexp++] = (int)i;
    }
    int found = -1;
    pos = 0;
    while (next_item(header, hlen, &pos, &kv)) {
        if (!key_is(&kv, "v1")) continue;
        for (size_t i = 0; i < nexp; i++) {
            bool eq = util_consttime_equal(expect[i], 64, kv.val, kv.vlen);
            if (eq && found < 0) found = which[i];
        }
    }
    OPENSSL_cleanse(expect, sizeof expect);
    if (found < 0) return WEBHOOK_BAD_SIGNATURE;
    if (matched) *matched = found;
    if (tolerance_s > 0 && (now - t > tolerance_s || t - now > tolerance_s))
        return WEBHOOK_STALE_TIMESTAMP;
    return WEBHOOK_OK;
}

// ------------------------------------------------------------------------------------- Cryptomus

// md5(base64(stream) + key), with the base64 produced chunk by chunk (3-byte groups, so the
// concatenation of chunk encodings is the encoding of the whole).
typedef struct {
    EVP_MD_CTX *md;
    unsigned char carry[3];
    size_t ncarry;
    bool ok;
} b64md5_t;

static void b64md5_begin(b64md5_t *s) {
    memset(s, 0, sizeof *s);
    s->md = EVP_MD_CTX_new();
    s->ok = s->md && EVP_DigestInit_ex(s->md, EVP_md5(), NULL) == 1;
}

static void b64md5_feed(b64md5_t *s, const void *data, size_t n) {
    enum { CHUNK = 768 };   // multiple of 3
    unsigned char in[CHUNK], out[CHUNK / 3 * 4 + 1];
    const unsigned char *p = data;
    while (s->ok && n > 0) {
        size_t take = n < CHUNK - s->ncarry ? n : CHUNK - s->ncarry;
        memcpy(in, s->carry, s->ncarry);
        memcpy(in + s->ncarry, p, take);
        size_t total = s->ncarry + take, whole = total / 3 * 3;
        p += take;
        n -= take;
        if (whole) {
            int ol = EVP_EncodeBlock(out, in, (int)whole);
            if (EVP_DigestUpdate(s->md, out, (size_t)ol) != 1) s->ok = false;
        }
        s->ncarry = total - whole;
        memcpy(s->carry, in + whole, s->ncarry);
    }
}

// Finishes into hex[33] ("" on failure) and frees the context.
static void b64md5_end(b64md5_t *s, const char *key, char hex[33]) {
    unsigned char out[8], md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    hex[0] = '\0';
    if (s->ok && s->ncarry) {
        int ol = EVP_EncodeBlock(out, s->carry, (int)s->ncarry);
        if (EVP_DigestUpdate(s->md, out, (size_t)ol) != 1) s->ok = false;
    }
    if (s->ok && EVP_DigestUpdate(s->md, key, strlen(key)) == 1 &&
        EVP_DigestFinal_ex(s->md, md, &mdlen) == 1 && mdlen == 16)
        to_hex(md, 16, hex);
    EVP_MD_CTX_free(s->md);
    s->md = NULL;
}

void cryptomus_sign(const void *body, size_t len, const char *key, char hex[33]) {
    b64md5_t s;
    hex[0] = '\0';
    if ((!body && len) || !key) return;
    b64md5_begin(&s);
    b64md5_feed(&s, body, len);
    b64md5_end(&s, key, hex);
}

static bool is_hex32(const char *s) {
    for (int i = 0; i < 32; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f') || (s[i] >= 'A' && s[i] <= 'F')))
            return false;
    return true;
}

// Length of the body before `,"sign":"<32 hex>"}` (+ trailing whitespace) when it ends that way,
// else 0.
static size_t raw_sign_cut(const char *b, size_t len) {
    static const char pre[] = ",\"sign\":\"";   // 9 characters
    const size_t tail = sizeof pre - 1 + 32 + 2;  // + closing quote and brace
    while (len && (b[len - 1] == ' ' || b[len - 1] == '\n' || b[len - 1] == '\r' || b[len - 1] == '\t'))
        len--;
    if (len < tail + 1) return 0;
    const char *t = b + len - tail;
    if (memcmp(t, pre, sizeof pre - 1) != 0 || !is_hex32(t + sizeof pre - 1) || t[tail - 2] != '"' ||
        t[tail - 1] != '}')
        return 0;
    return len - tail;
}

// PHP json_encode(…, JSON_UNESCAPED_UNICODE) of what jansson wrote with JSON_ESCAPE_SLASH:
// \u00XX escapes in lowercase, U+2028/U+2029 escaped. malloc'ed, or NULL.
static char *php_fixup(const char *in) {
    size_t n = strlen(in), extra = 0;
    for (size_t i = 0; i + 2 < n; i++)
        if ((unsigned char)in[i] == 0xE2 && (unsigned char)in[i + 1] == 0x80 &&
            ((unsigned char)in[i + 2] == 0xA8 || (unsigned char)in[i + 2] == 0xA9))
            extra += 3;   // 3 bytes become 6
    char *out = malloc(n + extra + 1);
    if (!out) return NULL;
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)in[i];
        if (c == '\\' && i + 1 < n) {
            out[o++] = in[i++];
            if (in[i] == 'u' && i + 4 < n) {
                out[o++] = in[i++];
                for (int k = 0; k < 4; k++, i++) {
                    char h = in[i];
                    out[o++] = (h >= 'A' && h <= 'F') ? (char)(h - 'A' + 'a') : h;
                }
            } else {
                out[o++] = in[i++];
            }
        } else if (c == 0xE2 && i + 2 < n && (unsigned char)in[i + 1] == 0x80 &&
                   ((unsigned char)in[i + 2] == 0xA8 || (unsigned char)in[i + 2] == 0xA9)) {
            memcpy(out + o, (unsigned char)in[i + 2] == 0xA8 ? "\\u2028" : "\\u2029", 6);
            o += 6;
            i += 3;
        } else {
            out[o++] = in[i++];
        }
    }
    out[o] = '\0';
    return out;
}

int cryptomus_signature_verify(const void *body, size_t len, const char *payment_key) {
    const char *const keys[] = {payment_key, NULL};
    return cryptomus_signature_verify_any(body, len, keys, NULL);
}

int cryptomus_signature_verify_any(const void *body, size_t len, const char *const *payment_keys, int *matched) {
    if (matched) *matched = -1;
    if (!body || !payment_keys || len > WEBHOOK_BODY_MAX) return WEBHOOK_BAD_SIGNATURE;
    size_t nkeys = 0;
    for (size_t i = 0; payment_keys[i] && i < WEBHOOK_SECRETS_MAX; i++) nkeys += payment_keys[i][0] != '\0';
    if (nkeys == 0) return WEBHOOK_BAD_SIGNATURE;
    json_t *root = api_json_loadb(body, len, JSON_REJECT_DUPLICATES);
    json_t *sign = json_object_get(root, "sign");
    int found = -1;
    char given[33];
    char *php = NULL;   // the PHP re-encoding of the body without "sign", when it is not the last member
    if (!json_is_object(root) || !json_is_string(sign) || json_string_length(sign) != 32) goto done;
    memcpy(given, json_string_value(sign), 33);

    size_t cut = raw_sign_cut(body, len);
    if (cut > 0) {
        if (memcmp((const char *)body + cut + 9, given, 32) != 0) goto done;
    } else {
        json_object_del(root, "sign");
        char *text = json_object_size(root) == 0
                         ? strdup("[]")
                         : json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ESCAPE_SLASH);
        php = text ? php_fixup(text) : NULL;
        free(text);
        if (!php) goto done;
    }
    for (size_t i = 0; payment_keys[i] && i < WEBHOOK_SECRETS_MAX; i++) {
        if (!payment_keys[i][0]) continue;
        char hex[33];
        if (cut > 0) {
            b64md5_t s;
            b64md5_begin(&s);
            b64md5_feed(&s, body, cut);
            b64md5_feed(&s, "}", 1);
            b64md5_end(&s, payment_keys[i], hex);
        } else {
            cryptomus_sign(php, strlen(php), payment_keys[i], hex);
        }
        bool eq = hex[0] && util_consttime_equal(hex, 32, given, 32);
        if (eq && found < 0) found = (int)i;
    }
done:
    free(php);
    json_decref(root);
    if (found < 0) return WEBHOOK_BAD_SIGNATURE;
    if (matched) *matched = found;
    return WEBHOOK_OK;
}

// ------------------------------------------------------------------------------------------ VAPI

static int sha256(const void *data, size_t len, unsigned char md[32]) {
    unsigned int n = 0;
    return EVP_Digest(data, len, md, &n, EVP_sha256(), NULL) == 1 && n == 32 ? 0 : -1;
}

int vapi_secret_verify(const char *header_value, const char *secret) {
    const char *const secrets[] = {secret, NULL};
    return vapi_secret_verify_any(header_value, secrets, NULL);
}

int vapi_secret_verify_any(const char *header_value, const char *const *secrets, int *matched) {
    if (matched) *matched = -1;
    if (!header_value || !secrets) return WEBHOOK_BAD_SIGNATURE;
    size_t hl = strnlen(header_value, WEBHOOK_HEADER_MAX + 1);
    if (hl > WEBHOOK_HEADER_MAX) return WEBHOOK_BAD_SIGNATURE;
    unsigned char given[32];
    if (sha256(header_value, hl, given) != 0) return WEBHOOK_BAD_SIGNATURE;
    int found = -1;
    for (size_t i = 0; secrets[i] && i < WEBHOOK_SECRETS_MAX; i++) {
        if (!secrets[i][0]) continue;
        unsigned char want[32];
        if (sha256(secrets[i], strnlen(secrets[i], WEBHOOK_HEADER_MAX + 1), want) != 0) continue;
        bool eq = CRYPTO_memcmp(given, want, sizeof want) == 0;
        OPENSSL_cleanse(want, sizeof want);
        if (eq && found < 0) found = (int)i;
    }
    if (found < 0) return WEBHOOK_BAD_SIGNATURE;
    if (matched) *matched = found;
    return WEBHOOK_OK;
}

int vapi_hmac_verify(const char *signature_hex, const char *timestamp, const void *body, size_t len,
                     const char *secret, int64_t now_s) {
    const char *const secrets[] = {secret, NULL};
    return vapi_hmac_verify_any(signature_hex, timestamp, body, len, secrets, now_s, NULL);
}

int vapi_hmac_verify_any(const char *signature_hex, const char *timestamp, const void *body, size_t len,
                         const char *const *secrets, int64_t now_s, int *matched) {
    if (matched) *matched = -1;
    if (!signature_hex || !timestamp || (!body && len) || !secrets || len > WEBHOOK_BODY_MAX)
        return WEBHOOK_BAD_SIGNATURE;
    if (strncmp(signature_hex, "sha256=", 7) == 0) signature_hex += 7;
    if (strnlen(signature_hex, 65) != 64) return WEBHOOK_BAD_SIGNATURE;
    char given[65];
    for (int i = 0; i < 64; i++) {
        char c = signature_hex[i];
        given[i] = (c >= 'A' && c <= 'F') ? (char)(c - 'A' + 'a') : c;
    }
    given[64] = '\0';
    size_t tlen = strnlen(timestamp, 19);
    int64_t ts;
    if (!parse_decimal(timestamp, tlen, &ts)) return WEBHOOK_BAD_SIGNATURE;
    int found = -1;
    for (size_t i = 0; secrets[i] && i < WEBHOOK_SECRETS_MAX; i++) {
        if (!secrets[i][0]) continue;
        char expect[65];
        if (hmac_hex3(secrets[i], timestamp, tlen, ".", 1, body ? body : "", len, expect) != 0) continue;
        bool eq = util_consttime_equal(expect, 64, given, 64);
        OPENSSL_cleanse(expect, sizeof expect);
        if (eq && found < 0) found = (int)i;
    }
    if (found < 0) return WEBHOOK_BAD_SIGNATURE;
    if (matched) *matched = found;
    if (ts > 100000000000LL) ts /= 1000;   // milliseconds
    if (now_s - ts > VAPI_HMAC_TOLERANCE_S || ts - now_s > VAPI_HMAC_TOLERANCE_S)
        return WEBHOOK_STALE_TIMESTAMP;
    return WEBHOOK_OK;
}
