// common/token.c — see token.h.
//
// base64url is OpenSSL's EVP_EncodeBlock/EVP_DecodeBlock with the alphabet swapped (+/ ↔ -_) and
// the padding removed/restored; no codec of our own. The signature is compared as text, so a token
// whose signature segment is a non-canonical encoding of the right bytes is still refused, and
// tampering with any character of a token fails. The signature is checked before any part of the
// token is parsed: JSON from a forged token is never read.
#include "common/token.h"

#include <jansson.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"

// {"alg":"HS256","typ":"JWT"}, base64url: every token we issue has this header.
static const char header_b64[] = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9";

#define SIG_B64_LEN 43   // 32 bytes, unpadded base64url

struct token_signer {
    // One HMAC-SHA256 context per entry of the secrets list, keyed with it when the signer was
    // made; NULL for an empty or missing entry. EVP_MAC_init with a NULL key restarts an HMAC
    // context under the key it already holds (OpenSSL 3, EVP_MAC-HMAC), so a token costs no key
    // setup and no allocation.
    EVP_MAC_CTX *ctx[TOKEN_SECRETS_MAX];
};

token_signer_t *token_signer_new(const char *const *secrets) {
    token_signer_t *self = calloc(1, sizeof *self);
    if (!self) return NULL;
    size_t n = 0;
    bool any = false;
    for (; secrets && n < TOKEN_SECRETS_MAX && secrets[n]; n++) any = any || secrets[n][0];
    if (!any) return self;   // nothing to key: a signer that refuses every token
    EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    if (!mac) goto fail;
    OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, "SHA256", 0),
                           OSSL_PARAM_construct_end()};
    for (size_t i = 0; i < n; i++) {
        if (!secrets[i][0]) continue;
        self->ctx[i] = EVP_MAC_CTX_new(mac);
        if (!self->ctx[i] ||
            EVP_MAC_init(self->ctx[i], (const unsigned char *)secrets[i], strlen(secrets[i]), params) != 1) {
            EVP_MAC_free(mac);
            goto fail;
        }
    }
    EVP_MAC_free(mac);   // each context holds its own reference to the algorithm
    return self;
fail:
    token_signer_destroy(&self);
    return NULL;
}

void token_signer_destroy(token_signer_t **self_p) {
    token_signer_t *self = *self_p;
    if (!self) return;
    for (size_t i = 0; i < TOKEN_SECRETS_MAX; i++) EVP_MAC_CTX_free(self->ctx[i]);   // frees the keys too
    free(self);
    *self_p = NULL;
}

// HMAC-SHA256 of data[0..len) under secret i. -1 when that slot has no key or OpenSSL fails.
static int signer_mac(token_signer_t *self, size_t i, const void *data, size_t len, unsigned char mac[32]) {
    EVP_MAC_CTX *ctx = self->ctx[i];
    size_t outl = 0;
    int ok = ctx && EVP_MAC_init(ctx, NULL, 0, NULL) == 1 && EVP_MAC_update(ctx, data, len) == 1 &&
             EVP_MAC_final(ctx, mac, &outl, 32) == 1 && outl == 32;
    return ok ? 0 : -1;
}

// Unpadded base64url of in[0..n) into out (needs 4*ceil(n/3)+1 bytes). Returns the length.
static size_t b64url_encode(const unsigned char *in, size_t n, char *out) {
    int len = EVP_EncodeBlock((unsigned char *)out, in, (int)n);
    while (len > 0 && out[len - 1] == '=') len--;
    for (int i = 0; i < len; i++) {
        if (out[i] == '+') out[i] = '-';
        else if (out[i] == '/') out[i] = '_';
    }
    out[len] = '\0';
    return (size_t)len;
}

// Decodes unpadded base64url in[0..n) (n <= TOKEN_MAX_LEN) into out (needs 3*ceil(n/4) bytes).
// Returns the decoded length, or -1 when in holds anything else.
static long b64url_decode(const char *in, size_t n, unsigned char *out) {
    char buf[TOKEN_MAX_LEN + 4];
    if (n > TOKEN_MAX_LEN || n % 4 == 1) return -1;
    for (size_t i = 0; i < n; i++) {
        char c = in[i];
        if (c == '-') c = '+';
        else if (c == '_') c = '/';
        else if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')))
            return -1;
        buf[i] = c;
    }
    size_t pad = (4 - n % 4) % 4;
    memset(buf + n, '=', pad);
    if (n + pad == 0) return 0;
    int len = EVP_DecodeBlock(out, (const unsigned char *)buf, (int)(n + pad));
    if (len < 0) return -1;
    return (long)len - (long)pad;   // EVP_DecodeBlock counts the padding as zero bytes
}

static bool bid_valid(const char *s, size_t len) {
    if (len < 1 || len > TOKEN_BID_MAX) return false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_'))
            return false;
    }
    return true;
}

int token_signer_issue(token_signer_t *self, const char *booking_id, int64_t now, int64_t ttl_s, char *out,
                       size_t outsize) {
    if (!self || !self->ctx[0] || !booking_id || !out || ttl_s <= 0) return -1;   // no ctx: no secret
    if (!bid_valid(booking_id, strnlen(booking_id, TOKEN_BID_MAX + 1))) return -1;
    if (now > INT64_MAX - ttl_s) return -1;
    char claims[128];
    int n = snprintf(claims, sizeof claims, "{\"bid\":\"%s\",\"exp\":%lld,\"iat\":%lld}", booking_id,
                     (long long)(now + ttl_s), (long long)now);
    if (n < 0 || (size_t)n >= sizeof claims) return -1;
    char buf[256];
    size_t pos = sizeof header_b64 - 1;
    memcpy(buf, header_b64, pos);
    buf[pos++] = '.';
    pos += b64url_encode((const unsigned char *)claims, (size_t)n, buf + pos);
    unsigned char mac[32];
    if (signer_mac(self, 0, buf, pos, mac) != 0) return -1;
    buf[pos++] = '.';
    pos += b64url_encode(mac, sizeof mac, buf + pos);
    if (pos + 1 > outsize) return -1;
    memcpy(out, buf, pos + 1);
    return 0;
}

int token_issue(const char *secret, const char *booking_id, int64_t now, int64_t ttl_s, char *out,
                size_t outsize) {
    if (!secret || !*secret) return -1;
    const char *const secrets[] = {secret, NULL};
    token_signer_t *signer = token_signer_new(secrets);
    if (!signer) return -1;
    int rc = token_signer_issue(signer, booking_id, now, ttl_s, out, outsize);
    token_signer_destroy(&signer);
    return rc;
}

// Decodes one base64url segment and parses it as a JSON object. NULL if it is anything else.
static json_t *segment_json(const char *seg, size_t n) {
    unsigned char raw[TOKEN_MAX_LEN];
    long len = b64url_decode(seg, n, raw);
    if (len <= 0) return NULL;
    json_error_t jerr;
    json_t *v = json_loadb((const char *)raw, (size_t)len, JSON_REJECT_DUPLICATES, &jerr);
    if (!json_is_object(v)) {
        json_decref(v);
        return NULL;
    }
    return v;
}

// Where the segments of a token lie: header token[0..hlen), claims claims[0..clen), signature
// sig[0..SIG_B64_LEN); token[0..signed_len) is the signed text.
typedef struct {
    size_t hlen, clen, signed_len;
    const char *claims, *sig;
} token_parts_t;

// Splits a token into its three non-empty segments. -1 for anything else (too long, a segment
// missing or empty, a fourth one, a signature of the wrong length).
static int token_split(const char *token, token_parts_t *p) {
    size_t len = strnlen(token, TOKEN_MAX_LEN + 1);
    if (len > TOKEN_MAX_LEN) return -1;
    const char *dot1 = memchr(token, '.', len);
    const char *dot2 = dot1 ? memchr(dot1 + 1, '.', len - (size_t)(dot1 + 1 - token)) : NULL;
    if (!dot1 || !dot2 || memchr(dot2 + 1, '.', len - (size_t)(dot2 + 1 - token))) return -1;
    p->hlen = (size_t)(dot1 - token);
    p->clen = (size_t)(dot2 - dot1 - 1);
    p->claims = dot1 + 1;
    p->sig = dot2 + 1;
    p->signed_len = (size_t)(dot2 - token);
    size_t slen = len - (size_t)(p->sig - token);
    if (p->hlen == 0 || p->clen == 0 || slen != SIG_B64_LEN) return -1;
    return 0;
}

int token_verify(const char *secret, const char *token, int64_t now, char booking_id[37]) {
    const char *const secrets[] = {secret, NULL};
    return token_verify_any(secrets, token, now, booking_id, NULL);
}

int token_verify_any(const char *const *secrets, const char *token, int64_t now, char booking_id[37],
                     int *matched) {
    if (matched) *matched = -1;
    if (!secrets || !token || !booking_id) return -1;
    token_parts_t parts;
    if (token_split(token, &parts) != 0) return -1;   // refused before any key is set up
    token_signer_t *signer = token_signer_new(secrets);
    if (!signer) return -1;
    int rc = token_signer_verify(signer, token, now, booking_id, matched);
    token_signer_destroy(&signer);
    return rc;
}

int token_signer_verify(token_signer_t *self, const char *token, int64_t now, char booking_id[37], int *matched) {
    if (matched) *matched = -1;
    if (!self || !token || !booking_id) return -1;
    token_parts_t parts;
    if (token_split(token, &parts) != 0) return -1;

    // Every secret is tried, without an early exit: the time taken does not say which one matched.
    int found = -1;
    for (size_t i = 0; i < TOKEN_SECRETS_MAX; i++) {
        if (!self->ctx[i]) continue;   // an empty or missing secret
        unsigned char mac[32];
        char expect[48];
        if (signer_mac(self, i, token, parts.signed_len, mac) != 0) continue;
        b64url_encode(mac, sizeof mac, expect);
        bool eq = util_consttime_equal(expect, SIG_B64_LEN, parts.sig, SIG_B64_LEN);
        if (eq && found < 0) found = (int)i;
    }
    if (found < 0) return -1;

    int rc = -1;
    json_t *header = segment_json(token, parts.hlen);
    json_t *claims = segment_json(parts.claims, parts.clen);
    if (!header || !claims) goto done;
    json_t *alg = json_object_get(header, "alg");
    if (!json_is_string(alg) || strcmp(json_string_value(alg), "HS256") != 0 ||
        json_string_length(alg) != 5 || json_object_get(header, "crit"))
        goto done;
    json_t *bid = json_object_get(claims, "bid");
    json_t *exp = json_object_get(claims, "exp");
    json_t *iat = json_object_get(claims, "iat");
    if (!json_is_string(bid) || !json_is_integer(exp) || !json_is_integer(iat)) goto done;
    if (!bid_valid(json_string_value(bid), json_string_length(bid))) goto done;
    if (json_integer_value(exp) <= now) goto done;
    if (now <= INT64_MAX - TOKEN_IAT_SKEW_S && json_integer_value(iat) > now + TOKEN_IAT_SKEW_S)
        goto done;
    memcpy(booking_id, json_string_value(bid), json_string_length(bid) + 1);
    if (matched) *matched = found;
    rc = 0;
done:
    json_decref(header);
    json_decref(claims);
    return rc;
}
