// common/token.h — booking status tokens: compact JWTs (RFC 7519), HS256 only, signed with
// security.token_secret. The claims are {"bid": booking id, "exp": unix s, "iat": unix s}.
//
// The HTTP actor issues one with every new booking and checks it on GET /api/bookings/{id},
// /cancel and WebSocket subscriptions. Pure functions (OpenSSL HMAC, jansson), any thread.
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

#endif
