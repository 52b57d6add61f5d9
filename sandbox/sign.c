// sandbox/sign.c — see sign.h.
#include "sandbox/sign.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void to_hex(const unsigned char *bytes, size_t n, char *out) {
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hex[bytes[i] >> 4];
        out[2 * i + 1] = hex[bytes[i] & 15];
    }
    out[2 * n] = '\0';
}

int sb_hmac_sha256_hex(const void *key, size_t keylen, const void *data, size_t len,
                       char out[SB_SHA256_HEX_SIZE]) {
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int maclen = 0;
    static const unsigned char empty = 0;
    if (keylen > (size_t)INT32_MAX) return -1;
    if (!HMAC(EVP_sha256(), key, (int)keylen, len ? data : &empty, len, mac, &maclen) || maclen != 32)
        return -1;
    to_hex(mac, maclen, out);
    return 0;
}

int sb_stripe_v1(const char *secret, int64_t t, const void *payload, size_t len,
                 char out[SB_SHA256_HEX_SIZE]) {
    char prefix[32];
    int plen = snprintf(prefix, sizeof prefix, "%lld.", (long long)t);
    if (plen <= 0 || (size_t)plen >= sizeof prefix) return -1;
    char *signed_payload = malloc((size_t)plen + len + 1);
    if (!signed_payload) return -1;
    memcpy(signed_payload, prefix, (size_t)plen);
    if (len) memcpy(signed_payload + plen, payload, len);
    int rc = sb_hmac_sha256_hex(secret, strlen(secret), signed_payload, (size_t)plen + len, out);
    free(signed_payload);
    return rc;
}

// The same signed text as Stripe's v1 ("<t>.<payload>"), kept apart because the two may diverge.
int sb_vapi_hmac(const char *secret, int64_t t, const void *body, size_t len, char out[SB_SHA256_HEX_SIZE]) {
    return sb_stripe_v1(secret, t, body, len, out);
}

int sb_stripe_signature_header(const char *secret, int64_t t, const void *payload, size_t len,
                               char *out, size_t size) {
    char v1[SB_SHA256_HEX_SIZE];
    if (sb_stripe_v1(secret, t, payload, len, v1) != 0) return -1;
    int n = snprintf(out, size, "t=%lld,v1=%s", (long long)t, v1);
    return n > 0 && (size_t)n < size ? 0 : -1;
}

char *sb_base64(const void *data, size_t len) {
    if (len > (size_t)INT32_MAX / 2) return NULL;
    char *out = malloc(4 * ((len + 2) / 3) + 1);
    if (!out) return NULL;
    EVP_EncodeBlock((unsigned char *)out, len ? data : (const unsigned char *)"", (int)len);
    return out;
}

int sb_cryptomus_sign(const char *payment_key, const void *body, size_t len, char out[SB_MD5_HEX_SIZE]) {
    char *b64 = sb_base64(body, len);
    if (!b64) return -1;
    size_t blen = strlen(b64), klen = strlen(payment_key);
    char *text = malloc(blen + klen + 1);
    int rc = -1;
    if (text) {
        memcpy(text, b64, blen);
        memcpy(text + blen, payment_key, klen);
        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned int mdlen = 0;
        if (EVP_Digest(text, blen + klen, md, &mdlen, EVP_md5(), NULL) == 1 && mdlen == 16) {
            to_hex(md, mdlen, out);
            rc = 0;
        }
        free(text);
    }
    free(b64);
    return rc;
}

char *sb_cryptomus_webhook_body(const json_t *fields, const char *payment_key, size_t *len) {
    if (!json_is_object(fields) || json_object_get(fields, "sign")) return NULL;
    // JSON_COMPACT gives "," and ":" without spaces; JSON_ESCAPE_SLASH writes "\/"; without
    // JSON_ENSURE_ASCII UTF-8 stays raw (JSON_UNESCAPED_UNICODE); jansson keeps insertion order.
    char *text = json_dumps(fields, JSON_COMPACT | JSON_ESCAPE_SLASH);
    if (!text) return NULL;
    size_t n = strlen(text);
    char sign[SB_MD5_HEX_SIZE];
    char *out = NULL;
    if (n >= 2 && text[n - 1] == '}' && sb_cryptomus_sign(payment_key, text, n, sign) == 0) {
        // {...} + ,"sign":"<32>"} ; an empty object gets no leading comma
        size_t cap = n + 64;
        out = malloc(cap);
        if (out) {
            int m = snprintf(out, cap, "%.*s%s\"sign\":\"%s\"}", (int)(n - 1), text, n > 2 ? "," : "", sign);
            if (len) *len = (size_t)m;
        }
    }
    free(text);
    return out;
}
