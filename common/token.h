// common/token.h — booking status tokens: compact JWTs (RFC 7519), HS256 only, signed with
// security.token_secret. The claims are {"bid": booking id, "exp": unix s, "iat": unix s}.
//
// The payments actor issues one with every new booking; the HTTP actor checks it on GET
// /api/bookings/{id}, /cancel and WebSocket subscriptions. token_issue/token_verify/
// token_verify_any are pure functions (OpenSSL HMAC, jansson), any thread. A thread that signs or
// checks many tokens with the same secrets owns a token_signer_t instead: the same tokens and the
// same checks, without looking up HMAC and deriving the key again for every token.
#ifndef SWEETY_TOKEN_H
#define SWEETY_TOKEN_H

#include <stddef.h>
#include <stdint.h>

#define TOKEN_MAX_LEN 1024     // longer input is refused without being looked at
#define TOKEN_BID_MAX 36       // a booking id: 1–36 characters of [A-Za-z0-9_-] (a UUID fits)
#define TOKEN_IAT_SKEW_S 60    // an "iat" further in the future than this is refused

// Writes "<header>.<claims>.<signature>" (NUL-terminated) into out[outsize]. exp = now + ttl_s.
// 0, or -1 for an empty secret, a booking id outside the rule above, ttl_s <= 0, an overflowing
// exp, or an out buffer too small (256 bytes is always enough).
int token_issue(const char *secret, const char *booking_id, int64_t now, int64_t ttl_s, char *out,
                size_t outsize);

// 0 and the booking id copied into booking_id[] when the token is well formed, its signature is
// ours (checked in constant time over the exact text), its header says "alg":"HS256" (and has no
// "crit"), and its claims hold a valid "bid", integer "exp" > now and integer "iat" not more than
// TOKEN_IAT_SKEW_S ahead of now. Otherwise -1 and booking_id is left untouched.
int token_verify(const char *secret, const char *token, int64_t now, char booking_id[37]);

// The same against a NULL-terminated list of secrets: security.token_secret first, then, during a
// rotation, security.token_secret_previous (empty entries skipped, at most TOKEN_SECRETS_MAX used).
// The signature is computed and compared under every secret, whatever the others gave. *matched
// (may be NULL) receives the index of the secret whose signature matched, -1 when none did; a
// token may still be refused afterwards for its claims (expired ...), and then -1 is returned too.
#define TOKEN_SECRETS_MAX 4
int token_verify_any(const char *const *secrets, const char *token, int64_t now, char booking_id[37],
                     int *matched);

// ---- token_signer_t: the secrets keyed once ------------------------------------------------------
// Setting up HMAC-SHA256 (EVP_MAC_fetch, a context, the key) costs several times the hashing of a
// token itself. A signer does it once per secret; each token then only re-initialises the keyed
// context. Not thread safe (the contexts are reused): one signer per thread, owned by that thread.
// It keeps no copy of the secrets, only the keyed HMAC contexts.
typedef struct token_signer token_signer_t;

// secrets: a NULL-terminated list, as for token_verify_any (at most TOKEN_SECRETS_MAX used; NULL
// means no secret). secrets[0] is the one tokens are issued with. Empty entries are kept as slots
// that never verify, so *matched indexes are those of the list. NULL on an OpenSSL or memory
// failure only: a signer without a usable secret is valid and refuses everything.
token_signer_t *token_signer_new(const char *const *secrets);
void token_signer_destroy(token_signer_t **self_p);

// token_issue with secrets[0] (-1 when it was NULL or empty). Byte-identical output.
int token_signer_issue(token_signer_t *self, const char *booking_id, int64_t now, int64_t ttl_s, char *out,
                       size_t outsize);

// token_verify_any with the signer's secrets: the same checks, the same results.
int token_signer_verify(token_signer_t *self, const char *token, int64_t now, char booking_id[37], int *matched);

#endif
