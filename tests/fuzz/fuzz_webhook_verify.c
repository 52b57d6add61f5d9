// tests/fuzz/fuzz_webhook_verify.c — webhook authenticity checks (realtime/webhook_verify.c):
// the Stripe-Signature header, the Cryptomus body signature (and cryptomus_sign), the VAPI secret
// header and the VAPI HMAC headers.
//
// Input: byte 0 picks the check (mod 4), byte 1 holds flags, the rest is text:
//   0 Stripe     "<Stripe-Signature header>\n<body>"
//   1 Cryptomus  "<body>"
//   2 VAPI       "<X-Vapi-Secret value>"
//   3 VAPI HMAC  "<x-signature>\n<x-timestamp>\n<body>"
// A fuzzer cannot forge an HMAC, so with flag bit 0 the target signs the input itself (with an
// independent reference implementation: OpenSSL's one-shot HMAC / base64 / MD5) before checking it,
// which takes the verifiers past their signature comparison into what follows (timestamps, the
// Cryptomus raw cut). The results are then compared with what providers.md says they must be, and
// the *_any variants (key rotation) must give the same answer and name the secret that matched.
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "realtime/api_error.h"
#include "realtime/webhook_verify.h"
#include "tests/fuzz/fuzz.h"

static const char *const stripe_secrets[] = {FUZZ_STRIPE_SECRET, "", FUZZ_STRIPE_SECRET_OLD, NULL};

static void hex_of(const unsigned char *in, size_t n, char *out, bool upper) {
    const char *digits = upper ? "0123456789ABCDEF" : "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * n] = '\0';
}

// hex HMAC-SHA256(key, a || b || c) into out[65].
static void ref_hmac(const char *key, const void *a, size_t alen, const void *b, size_t blen, const void *c,
                     size_t clen, bool upper, char out[65]) {
    unsigned char *msg = malloc(alen + blen + clen + 1);
    FUZZ_CHECK(msg != NULL);
    memcpy(msg, a, alen);
    memcpy(msg + alen, b, blen);
    memcpy(msg + alen + blen, c, clen);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    FUZZ_CHECK(HMAC(EVP_sha256(), key, (int)strlen(key), msg, alen + blen + clen, md, &mdlen) != NULL);
    FUZZ_CHECK(mdlen == 32);
    hex_of(md, 32, out, upper);
    free(msg);
}

// md5_hex(base64(data) + key), the whole input at once.
static void ref_cryptomus(const void *data, size_t n, const char *key, char out[33]) {
    size_t klen = strlen(key), blen = 4 * ((n + 2) / 3);
    unsigned char *buf = malloc(blen + klen + 1);
    FUZZ_CHECK(buf != NULL);
    int got = EVP_EncodeBlock(buf, data, (int)n);
    FUZZ_CHECK(got >= 0 && (size_t)got == blen);
    memcpy(buf + blen, key, klen);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    FUZZ_CHECK(EVP_Digest(buf, blen + klen, md, &mdlen, EVP_md5(), NULL) == 1 && mdlen == 16);
    hex_of(md, 16, out, false);
    free(buf);
}

// Does a header's comma-separated list have an item whose key is exactly "t"?
static bool has_t_item(const char *h) {
    for (const char *item = h;; item++) {
        size_t n = strcspn(item, ",");
        size_t klen = strcspn(item, "=,");
        if (klen == 1 && item[0] == 't') return true;
        item += n;
        if (!*item) return false;
    }
}

static void check_stripe(unsigned flags, char *text, size_t len) {
    char *nl = memchr(text, '\n', len);
    const char *body = nl ? nl + 1 : "";
    size_t blen = nl ? len - (size_t)(nl + 1 - text) : 0;
    if (nl) *nl = '\0';
    const char *header = text;
    char *built = NULL;
    int64_t t = 0;
    if (flags & 1) {
        t = FUZZ_NOW + ((int64_t)(flags >> 2) - 32) * 10;
        char tdot[32], sig[65];
        int tl = snprintf(tdot, sizeof tdot, "%lld.", (long long)t);
        ref_hmac(flags & 2 ? FUZZ_STRIPE_SECRET_OLD : FUZZ_STRIPE_SECRET, tdot, (size_t)tl, body, blen, "", 0,
                 false, sig);
        FUZZ_CHECK(asprintf(&built, "t=%lld,v1=%s,%s", (long long)t, sig, text) > 0);
        header = built;
    }
    int rc = stripe_signature_verify(header, body, blen, stripe_secrets, FUZZ_NOW, 300);
    FUZZ_CHECK(rc == WEBHOOK_OK || rc == WEBHOOK_BAD_SIGNATURE || rc == WEBHOOK_STALE_TIMESTAMP);
    int rc0 = stripe_signature_verify(header, body, blen, stripe_secrets, FUZZ_NOW, 0);
    FUZZ_CHECK(rc0 == WEBHOOK_OK || rc0 == WEBHOOK_BAD_SIGNATURE);
    FUZZ_CHECK((rc == WEBHOOK_BAD_SIGNATURE) == (rc0 == WEBHOOK_BAD_SIGNATURE));
    int matched = 7;
    FUZZ_CHECK(stripe_signature_verify_any(header, body, blen, stripe_secrets, FUZZ_NOW, 300, &matched) == rc);
    FUZZ_CHECK((matched >= 0) == (rc != WEBHOOK_BAD_SIGNATURE));
    if (built && !has_t_item(text) && strlen(built) <= WEBHOOK_HEADER_MAX) {
        int64_t age = FUZZ_NOW - t;
        FUZZ_CHECK(rc == (age > 300 || age < -300 ? WEBHOOK_STALE_TIMESTAMP : WEBHOOK_OK));
        FUZZ_CHECK(rc0 == WEBHOOK_OK);
        FUZZ_CHECK(matched == (flags & 2 ? 2 : 0));   // the index in stripe_secrets of the one used
    }
    free(built);
}

// During a rotation (a wrong key first, ours second) the answer is the same, and names ours.
static void check_cryptomus_rotation(const char *body, size_t len, int rc) {
    static const char *const keys[] = {"", "not-the-payment-key", FUZZ_CRYPTOMUS_KEY, NULL};
    int matched = 7;
    FUZZ_CHECK(cryptomus_signature_verify_any(body, len, keys, &matched) == rc);
    FUZZ_CHECK(matched == (rc == WEBHOOK_OK ? 2 : -1));
}

static void check_cryptomus(unsigned flags, const char *text, size_t len) {
    char mine[33], ref[33];
    cryptomus_sign(text, len, FUZZ_CRYPTOMUS_KEY, mine);
    ref_cryptomus(text, len, FUZZ_CRYPTOMUS_KEY, ref);
    FUZZ_CHECK(strcmp(mine, ref) == 0);

    size_t end = len;
    while (end && (text[end - 1] == ' ' || text[end - 1] == '\n' || text[end - 1] == '\r' || text[end - 1] == '\t'))
        end--;
    if (!(flags & 1) || end == 0 || text[end - 1] != '}') {
        int rc = cryptomus_signature_verify(text, len, FUZZ_CRYPTOMUS_KEY);
        FUZZ_CHECK(rc == WEBHOOK_OK || rc == WEBHOOK_BAD_SIGNATURE);
        check_cryptomus_rotation(text, len, rc);
        return;
    }
    // Re-signed as Cryptomus does: the last member `,"sign":"…"`, over the text without it.
    size_t plen = end - 1;
    char *signed_text = malloc(plen + 1);
    FUZZ_CHECK(signed_text != NULL);
    memcpy(signed_text, text, plen);
    signed_text[plen] = '}';
    char sign[33];
    ref_cryptomus(signed_text, plen + 1, FUZZ_CRYPTOMUS_KEY, sign);
    free(signed_text);
    size_t blen = plen + 9 + 32 + 2;
    char *body = malloc(blen);
    FUZZ_CHECK(body != NULL);
    memcpy(body, text, plen);
    memcpy(body + plen, ",\"sign\":\"", 9);
    memcpy(body + plen + 9, sign, 32);
    memcpy(body + plen + 41, "\"}", 2);
    int rc = cryptomus_signature_verify(body, blen, FUZZ_CRYPTOMUS_KEY);
    json_t *j = api_json_loadb(body, blen, JSON_REJECT_DUPLICATES);
    FUZZ_CHECK(rc == (json_is_object(j) ? WEBHOOK_OK : WEBHOOK_BAD_SIGNATURE));
    json_decref(j);
    check_cryptomus_rotation(body, blen, rc);
    free(body);
}

static void check_vapi_secret(const char *text) {
    int rc = vapi_secret_verify(text, FUZZ_VAPI_SECRET);
    FUZZ_CHECK(rc == (strcmp(text, FUZZ_VAPI_SECRET) == 0 ? WEBHOOK_OK : WEBHOOK_BAD_SIGNATURE));
    FUZZ_CHECK(vapi_secret_verify(text, "") == WEBHOOK_BAD_SIGNATURE);
    static const char *const secrets[] = {"previous-vapi-secret", "", FUZZ_VAPI_SECRET, NULL};
    int matched = 7;
    int rc_any = vapi_secret_verify_any(text, secrets, &matched);
    int expect = !strcmp(text, secrets[0]) ? 0 : !strcmp(text, FUZZ_VAPI_SECRET) ? 2 : -1;
    FUZZ_CHECK(matched == expect && rc_any == (expect >= 0 ? WEBHOOK_OK : WEBHOOK_BAD_SIGNATURE));
}

static void check_vapi_hmac(unsigned flags, char *text, size_t len) {
    char *nl1 = memchr(text, '\n', len);
    if (!nl1) return;
    char *nl2 = memchr(nl1 + 1, '\n', len - (size_t)(nl1 + 1 - text));
    if (!nl2) return;
    *nl1 = *nl2 = '\0';
    const char *sig = text, *ts = nl1 + 1, *body = nl2 + 1;
    size_t blen = len - (size_t)(body - text);
    char made[7 + 65];
    if (flags & 1) {
        strcpy(made, flags & 4 ? "sha256=" : "");
        ref_hmac(FUZZ_VAPI_SECRET, ts, strlen(ts), ".", 1, body, blen, flags & 2, made + strlen(made));
        sig = made;
    }
    int rc = vapi_hmac_verify(sig, ts, body, blen, FUZZ_VAPI_SECRET, FUZZ_NOW);
    FUZZ_CHECK(rc == WEBHOOK_OK || rc == WEBHOOK_BAD_SIGNATURE || rc == WEBHOOK_STALE_TIMESTAMP);
    static const char *const secrets[] = {"previous-vapi-secret", FUZZ_VAPI_SECRET, NULL};
    int matched = 7;
    FUZZ_CHECK(vapi_hmac_verify_any(sig, ts, body, blen, secrets, FUZZ_NOW, &matched) == rc);
    FUZZ_CHECK(matched == (rc == WEBHOOK_BAD_SIGNATURE ? -1 : 1));
    if (!(flags & 1)) return;
    size_t tl = strlen(ts);
    bool digits = tl >= 1 && tl <= 18 && strspn(ts, "0123456789") == tl;
    if (!digits) {
        FUZZ_CHECK(rc == WEBHOOK_BAD_SIGNATURE);
        return;
    }
    int64_t t = strtoll(ts, NULL, 10);
    if (t > 100000000000LL) t /= 1000;
    FUZZ_CHECK(rc == (FUZZ_NOW - t > 300 || t - FUZZ_NOW > 300 ? WEBHOOK_STALE_TIMESTAMP : WEBHOOK_OK));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 2) return 0;
    unsigned mode = data[0] % 4, flags = data[1];
    size_t len = size - 2;
    char *text = malloc(len + 1);   // NUL-terminated copy; the verifiers get (text, len) for bodies
    FUZZ_CHECK(text != NULL);
    memcpy(text, data + 2, len);
    text[len] = '\0';
    switch (mode) {
    case 0: check_stripe(flags, text, len); break;
    case 1: check_cryptomus(flags, text, len); break;
    case 2: check_vapi_secret(text); break;
    case 3: check_vapi_hmac(flags, text, len); break;
    }
    free(text);
    return 0;
}
