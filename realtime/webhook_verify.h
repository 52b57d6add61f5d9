// realtime/webhook_verify.h — authenticity checks of provider webhooks over the raw request bytes,
// before anything in them is believed (providers.md §1.5 Stripe, §3.4 Cryptomus, §2.7 VAPI).
//
// Called by the HTTP actor on its service thread once the body is complete. Pure: no I/O, no
// globals; every comparison of secret material is constant-time; work is bounded for any input
// (header lengths are capped, bodies above WEBHOOK_BODY_MAX are refused).
#ifndef SWEETY_WEBHOOK_VERIFY_H
#define SWEETY_WEBHOOK_VERIFY_H

#include <stddef.h>
#include <stdint.h>

#define WEBHOOK_BODY_MAX (4 * 1024 * 1024)   // end-of-call reports with transcripts are large
#define WEBHOOK_HEADER_MAX 8192              // a Stripe-Signature header longer than this is refused

#define WEBHOOK_OK 0
#define WEBHOOK_BAD_SIGNATURE (-1)
#define WEBHOOK_STALE_TIMESTAMP (-2)

// Stripe-Signature "t=<unix>,v1=<hex>[,v1=<hex>…][,v0=…]" over "<t>.<raw body>", HMAC-SHA256 keyed
// with the whole signing secret ("whsec_…" bytes). secrets: NULL-terminated list (two during a
// rotation; NULL or empty entries are skipped). Accepts when any v1 equals the digest under any
// secret; other schemes are ignored. Then, when tolerance_s > 0, refuses a timestamp more than
// tolerance_s in the past or in the future (age == tolerance passes).
// WEBHOOK_OK, WEBHOOK_BAD_SIGNATURE (also: no/duplicate t, no v1, malformed header) or
// WEBHOOK_STALE_TIMESTAMP (only ever for a correctly signed header).
int stripe_signature_verify(const char *header, const void *body, size_t len,
                            const char *const *secrets, int64_t now, int64_t tolerance_s);

// Cryptomus body signature: the body's last member must be "sign":"<32 hex>"; the signed text is
// the body with `,"sign":"…"` cut out, checked as md5_hex(base64(text) + payment_key). When "sign"
// is elsewhere in the object, the text is rebuilt as PHP json_encode(…, JSON_UNESCAPED_UNICODE)
// would write it (key order kept, compact, "/" as "\/"). WEBHOOK_OK or WEBHOOK_BAD_SIGNATURE.
int cryptomus_signature_verify(const void *body, size_t len, const char *payment_key);

// Signature of an outbound Cryptomus request: md5_hex(base64(body) + key), lowercase, into hex[33].
// hex is "" if OpenSSL fails.
void cryptomus_sign(const void *body, size_t len, const char *key, char hex[33]);

// X-Vapi-Secret against vapi.webhook_secret, constant time (neither the secret's content nor its
// length shows in the time taken). WEBHOOK_OK or WEBHOOK_BAD_SIGNATURE (also for a NULL value or an
// empty/NULL secret).
int vapi_secret_verify(const char *header_value, const char *secret);

// VAPI HMAC credential (defaults): x-signature = hex HMAC-SHA256(secret, "<x-timestamp>.<body>"),
// an optional "sha256=" prefix and either hex case accepted. The timestamp is decimal seconds or
// milliseconds (values above 1e11 are milliseconds) and must lie within 300 s of now_s.
// WEBHOOK_OK, WEBHOOK_BAD_SIGNATURE or WEBHOOK_STALE_TIMESTAMP (only for a valid signature).
int vapi_hmac_verify(const char *signature_hex, const char *timestamp, const void *body, size_t len,
                     const char *secret, int64_t now_s);

#define VAPI_HMAC_TOLERANCE_S 300

// ---- several secrets: key rotation ------------------------------------------------------------
// The checks above against a NULL-terminated list of secrets: the current one first, then (during
// a rotation) the previous one; empty entries are skipped, at most WEBHOOK_SECRETS_MAX are used.
// Every secret is always checked, whatever the others gave, so the time taken does not tell which
// one matched (or how far a guess got). *matched (may be NULL) receives the index in the list of
// the secret that matched (also when the answer is WEBHOOK_STALE_TIMESTAMP), -1 when none did
// (also on any refusal before the comparison).
#define WEBHOOK_SECRETS_MAX 8

int stripe_signature_verify_any(const char *header, const void *body, size_t len, const char *const *secrets,
                                int64_t now, int64_t tolerance_s, int *matched);
int cryptomus_signature_verify_any(const void *body, size_t len, const char *const *payment_keys, int *matched);
// Constant time in the secrets' contents and lengths: both sides are hashed (SHA-256) first.
int vapi_secret_verify_any(const char *header_value, const char *const *secrets, int *matched);
int vapi_hmac_verify_any(const char *signature_hex, const char *timestamp, const void *body, size_t len,
                         const char *const *secrets, int64_t now_s, int *matched);

#endif
