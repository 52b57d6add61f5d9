// sandbox/sign.h — the providers' signatures, computed exactly as the providers compute them, so
// the sandbox can check our requests and sign what it sends us (providers.md §1.5, §2.7, §3.1, §3.4).
//
// Pure functions over bytes (OpenSSL's HMAC, EVP digests and EVP_EncodeBlock); no state, any thread.
// The unit test tests/unit/test_sandbox_signing.c runs the vectors of providers.md §1.7 and §3.5
// through them.
#ifndef SWEETY_SANDBOX_SIGN_H
#define SWEETY_SANDBOX_SIGN_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SB_SHA256_HEX_SIZE 65   // 64 hex digits + NUL
#define SB_MD5_HEX_SIZE 33      // 32 hex digits + NUL

// Lowercase hex of HMAC-SHA256(key, data). 0 or -1.
int sb_hmac_sha256_hex(const void *key, size_t keylen, const void *data, size_t len,
                       char out[SB_SHA256_HEX_SIZE]);

// Stripe's v1 signature: hex HMAC-SHA256 keyed with the whole signing secret ("whsec_..." as
// UTF-8 bytes, not decoded) over "<t>.<payload>". 0 or -1.
int sb_stripe_v1(const char *secret, int64_t t, const void *payload, size_t len,
                 char out[SB_SHA256_HEX_SIZE]);
// The Stripe-Signature header value "t=<t>,v1=<hex>". 0 or -1 (also when `size` is too small).
int sb_stripe_signature_header(const char *secret, int64_t t, const void *payload, size_t len,
                               char *out, size_t size);

// VAPI's HMAC webhook credential with its defaults (sha256, hex, payloadFormat "{timestamp}.{body}"):
// hex HMAC-SHA256 keyed with the secret's bytes over "<t>.<body>"; t is the x-timestamp value. 0 or -1.
int sb_vapi_hmac(const char *secret, int64_t t, const void *body, size_t len, char out[SB_SHA256_HEX_SIZE]);

// Standard base64 with '=' padding (malloc'ed, NUL-terminated; NULL when out of memory).
char *sb_base64(const void *data, size_t len);

// Cryptomus: md5_hex(base64(body) + payment_key), over the exact bytes. 0 or -1.
int sb_cryptomus_sign(const char *payment_key, const void *body, size_t len, char out[SB_MD5_HEX_SIZE]);

// A Cryptomus webhook body: `fields` encoded as PHP json_encode($d, JSON_UNESCAPED_UNICODE) would
// (compact, key order kept, "/" written as "\/", UTF-8 left raw), then "sign" appended as the last
// member, computed over the text without it. malloc'ed; NULL on failure.
char *sb_cryptomus_webhook_body(const json_t *fields, const char *payment_key, size_t *len);

#endif
