// tests/unit/test_token.c — common/token.c: status tokens (JWT HS256).
//
// The fixed token below was built on the command line, independently of our code:
//   H=$(printf '%s' '{"alg":"HS256","typ":"JWT"}' | base64 -w0 | tr '+/' '-_' | tr -d '=')
//   P=$(printf '%s' '{"bid":"0b6e4c1e-5a57-4f4e-9d2a-3c1f7e2b9a10","exp":1700604800,"iat":1700000000}'
//       | base64 -w0 | tr '+/' '-_' | tr -d '=')        (one line in the shell)
//   S=$(printf '%s' "$H.$P" | openssl dgst -sha256 -hmac 'test-token-secret' -binary
//       | base64 -w0 | tr '+/' '-_' | tr -d '=')        (one line in the shell)
// and the "alg":"none" ones the same way with that header. Tokens with odd claims are signed here
// with OpenSSL's HMAC() directly (forge()), as an attacker who knew the secret would.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
// cmocka after the standard headers it needs
#include <cmocka.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/token.h"

#define SECRET "test-token-secret"
#define BID "0b6e4c1e-5a57-4f4e-9d2a-3c1f7e2b9a10"
#define IAT 1700000000LL
#define TTL 604800LL
#define EXP (IAT + TTL)

static const char cli_token[] =
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
    "eyJiaWQiOiIwYjZlNGMxZS01YTU3LTRmNGUtOWQyYS0zYzFmN2UyYjlhMTAiLCJleHAiOjE3MDA2MDQ4MDAsImlhdCI6MTcwMDAwMDAwMH0."
    "JUpDwIFj5ixicf7o0w59eIC3WqCN8DT0Ipzo26EEmEs";

// {"alg":"none","typ":"JWT"} + the same claims, unsigned and signed with HS256 (openssl)
static const char none_unsigned[] =
    "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0."
    "eyJiaWQiOiIwYjZlNGMxZS01YTU3LTRmNGUtOWQyYS0zYzFmN2UyYjlhMTAiLCJleHAiOjE3MDA2MDQ4MDAsImlhdCI6MTcwMDAwMDAwMH0.";
static const char none_hs256_signed[] =
    "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0."
    "eyJiaWQiOiIwYjZlNGMxZS01YTU3LTRmNGUtOWQyYS0zYzFmN2UyYjlhMTAiLCJleHAiOjE3MDA2MDQ4MDAsImlhdCI6MTcwMDAwMDAwMH0."
    "CumGep4wUMt5kUKb_jZEpS69ALJbPxT2gqIn5MZUgbc";

static void b64url(const void *in, size_t n, char *out) {
    int len = EVP_EncodeBlock((unsigned char *)out, in, (int)n);
    while (len > 0 && out[len - 1] == '=') len--;
    for (int i = 0; i < len; i++) out[i] = out[i] == '+' ? '-' : out[i] == '/' ? '_' : out[i];
    out[len] = '\0';
}

// header.claims.HS256(secret) for arbitrary header and claims text. Caller frees.
static char *forge(const char *header, const char *claims, const char *secret) {
    char h[2048], c[2048], sig[64];   // inputs stay under 1500 bytes
    b64url(header, strlen(header), h);
    b64url(claims, strlen(claims), c);
    char *signing = NULL;
    if (asprintf(&signing, "%s.%s", h, c) < 0) abort();
    unsigned char mac[32];
    unsigned int maclen = 0;
    HMAC(EVP_sha256(), secret, (int)strlen(secret), (unsigned char *)signing, strlen(signing), mac, &maclen);
    b64url(mac, maclen, sig);
    char *tok = NULL;
    if (asprintf(&tok, "%s.%s", signing, sig) < 0) abort();
    free(signing);
    return tok;
}

static const char hs256[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";

static int verify(const char *tok, int64_t now, char bid[37]) {
    return token_verify(SECRET, tok, now, bid);
}

static void test_issue_matches_a_token_built_with_openssl(void **state) {
    (void)state;
    char tok[512];
    assert_int_equal(token_issue(SECRET, BID, IAT, TTL, tok, sizeof tok), 0);
    assert_string_equal(tok, cli_token);
}

static void test_verify_accepts_the_openssl_token_and_returns_its_booking(void **state) {
    (void)state;
    char bid[37] = "";
    assert_int_equal(verify(cli_token, IAT, bid), 0);
    assert_string_equal(bid, BID);
    assert_int_equal(verify(cli_token, EXP - 1, bid), 0);
}

static void test_issued_token_round_trips(void **state) {
    (void)state;
    char tok[512], bid[37];
    assert_int_equal(token_issue("another secret", "bk_42", 100, 60, tok, sizeof tok), 0);
    assert_int_equal(token_verify("another secret", tok, 159, bid), 0);
    assert_string_equal(bid, "bk_42");
}

static void test_expired_token_is_refused(void **state) {
    (void)state;
    char bid[37] = "untouched";
    assert_int_equal(verify(cli_token, EXP, bid), -1);
    assert_int_equal(verify(cli_token, EXP + 1000, bid), -1);
    assert_string_equal(bid, "untouched");
}

static void test_changing_any_character_breaks_the_token(void **state) {
    (void)state;
    static const char alphabet[] = "AQgw_-.=+/ 0a";
    char tok[sizeof cli_token], bid[37];
    for (size_t i = 0; i < sizeof cli_token - 1; i++) {
        for (const char *a = alphabet; *a; a++) {
            if (*a == cli_token[i]) continue;
            memcpy(tok, cli_token, sizeof tok);
            tok[i] = *a;
            if (verify(tok, IAT, bid) == 0) fail_msg("accepted with byte %zu changed to '%c'", i, *a);
        }
    }
}

static void test_truncated_or_extended_token_is_refused(void **state) {
    (void)state;
    char tok[sizeof cli_token + 8], bid[37];
    for (size_t n = 0; n < sizeof cli_token - 1; n++) {
        memcpy(tok, cli_token, n);
        tok[n] = '\0';
        assert_int_equal(verify(tok, IAT, bid), -1);
    }
    snprintf(tok, sizeof tok, "%sA", cli_token);
    assert_int_equal(verify(tok, IAT, bid), -1);
    snprintf(tok, sizeof tok, "%s.", cli_token);
    assert_int_equal(verify(tok, IAT, bid), -1);
    snprintf(tok, sizeof tok, "%s=", cli_token);
    assert_int_equal(verify(tok, IAT, bid), -1);
}

static void test_non_canonical_signature_encoding_is_refused(void **state) {
    (void)state;
    // the last of 43 characters carries 2 unused bits: 's' (…44) and 't' (…45) decode alike
    char tok[sizeof cli_token], bid[37];
    memcpy(tok, cli_token, sizeof tok);
    assert_int_equal(tok[sizeof tok - 2], 's');
    tok[sizeof tok - 2] = 't';
    assert_int_equal(verify(tok, IAT, bid), -1);
}

static void test_wrong_secret_is_refused(void **state) {
    (void)state;
    char bid[37];
    assert_int_equal(token_verify("test-token-secreT", cli_token, IAT, bid), -1);
    assert_int_equal(token_verify("", cli_token, IAT, bid), -1);
    assert_int_equal(token_verify(NULL, cli_token, IAT, bid), -1);
}

static void test_alg_none_is_refused(void **state) {
    (void)state;
    char bid[37];
    assert_int_equal(verify(none_unsigned, IAT, bid), -1);
    // even with a valid HS256 MAC over it, the header's alg must be HS256
    assert_int_equal(verify(none_hs256_signed, IAT, bid), -1);
}

static void test_other_algorithms_and_crit_headers_are_refused(void **state) {
    (void)state;
    const char *claims = "{\"bid\":\"bk_1\",\"exp\":1700604800,\"iat\":1700000000}";
    const char *headers[] = {"{\"alg\":\"HS512\",\"typ\":\"JWT\"}", "{\"alg\":\"RS256\"}",
                             "{\"alg\":\"hs256\"}", "{\"typ\":\"JWT\"}", "{\"alg\":256}",
                             "{\"alg\":\"HS256\",\"crit\":[\"exp\"]}", "[\"HS256\"]", "not json",
                             "{\"alg\":\"HS256\",\"alg\":\"none\"}", "{\"alg\":\"HS256\\u0000\"}"};
    char bid[37];
    for (size_t i = 0; i < sizeof headers / sizeof *headers; i++) {
        char *tok = forge(headers[i], claims, SECRET);
        if (verify(tok, IAT, bid) != -1) fail_msg("header %s accepted", headers[i]);
        free(tok);
    }
    // the minimal valid header passes (typ is optional)
    char *tok = forge("{\"alg\":\"HS256\"}", claims, SECRET);
    assert_int_equal(verify(tok, IAT, bid), 0);
    assert_string_equal(bid, "bk_1");
    free(tok);
}

static void test_claims_for_another_booking_cannot_be_swapped_in(void **state) {
    (void)state;
    char a[512], b[512], bid[37];
    assert_int_equal(token_issue(SECRET, "booking-a", IAT, TTL, a, sizeof a), 0);
    assert_int_equal(token_issue(SECRET, "booking-b", IAT, TTL, b, sizeof b), 0);
    assert_int_equal(verify(a, IAT, bid), 0);
    assert_string_equal(bid, "booking-a");
    // a's header and signature with b's claims
    const char *a2 = strrchr(a, '.'), *b1 = strchr(b, '.'), *b2 = strrchr(b, '.');
    char *mixed = NULL;
    assert_true(asprintf(&mixed, "%.*s%.*s%s", (int)(strchr(a, '.') - a), a, (int)(b2 - b1), b1, a2) > 0);
    assert_int_equal(verify(mixed, IAT, bid), -1);
    assert_string_equal(bid, "booking-a");
    free(mixed);
}

static void test_missing_or_mistyped_claims_are_refused(void **state) {
    (void)state;
    const char *claims[] = {
        "{\"exp\":1700604800,\"iat\":1700000000}",
        "{\"bid\":\"bk_1\",\"iat\":1700000000}",
        "{\"bid\":\"bk_1\",\"exp\":1700604800}",
        "{\"bid\":\"bk_1\",\"exp\":\"1700604800\",\"iat\":1700000000}",
        "{\"bid\":\"bk_1\",\"exp\":1700604800.0,\"iat\":1700000000}",
        "{\"bid\":\"bk_1\",\"exp\":null,\"iat\":1700000000}",
        "{\"bid\":42,\"exp\":1700604800,\"iat\":1700000000}",
        "{\"bid\":\"\",\"exp\":1700604800,\"iat\":1700000000}",
        "{\"bid\":\"0b6e4c1e-5a57-4f4e-9d2a-3c1f7e2b9a10x\",\"exp\":1700604800,\"iat\":1700000000}",
        "{\"bid\":\"bk 1\",\"exp\":1700604800,\"iat\":1700000000}",
        "{\"bid\":\"bk/../1\",\"exp\":1700604800,\"iat\":1700000000}",
        "{\"bid\":\"bk_1\",\"bid\":\"bk_2\",\"exp\":1700604800,\"iat\":1700000000}",
        "{\"bid\":\"bk_1\",\"exp\":1700604800,\"iat\":1700000061}",   // issued 61 s in the future
        "[\"bk_1\",1700604800,1700000000]",
        "",
    };
    char bid[37];
    for (size_t i = 0; i < sizeof claims / sizeof *claims; i++) {
        char *tok = forge(hs256, claims[i], SECRET);
        if (verify(tok, IAT, bid) != -1) fail_msg("claims %s accepted", claims[i]);
        free(tok);
    }
    // iat up to 60 s ahead (clock skew between instances) is fine; unknown claims are ignored
    char *tok = forge(hs256, "{\"bid\":\"bk_1\",\"exp\":1700604800,\"iat\":1700000060,\"x\":[1]}", SECRET);
    assert_int_equal(verify(tok, IAT, bid), 0);
    free(tok);
}

static void test_malformed_tokens_are_refused(void **state) {
    (void)state;
    const char *toks[] = {"", ".", "..", "...", "a.b", "a.b.c.d", "a..c", ".b.c",
                          "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9..JUpDwIFj5ixicf7o0w59eIC3WqCN8DT0Ipzo26EEmEs",
                          "Bearer x.y.z", "\xff\xfe.\x01.\x02"};
    char bid[37];
    for (size_t i = 0; i < sizeof toks / sizeof *toks; i++) assert_int_equal(verify(toks[i], IAT, bid), -1);
    assert_int_equal(verify(NULL, IAT, bid), -1);
}

static void test_overlong_token_is_refused(void **state) {
    (void)state;
    // a correctly signed token whose claims make it longer than TOKEN_MAX_LEN
    char claims[1200];
    int n = snprintf(claims, sizeof claims, "{\"bid\":\"bk_1\",\"exp\":1700604800,\"iat\":1700000000,\"pad\":\"");
    memset(claims + n, 'x', 800);
    strcpy(claims + n + 800, "\"}");
    char *tok = forge(hs256, claims, SECRET);
    assert_true(strlen(tok) > TOKEN_MAX_LEN);
    char bid[37];
    assert_int_equal(verify(tok, IAT, bid), -1);
    free(tok);
    // no NUL within a huge buffer: only TOKEN_MAX_LEN + 1 bytes are looked at
    char *big = malloc(1 << 20);
    memset(big, 'A', 1 << 20);
    big[(1 << 20) - 1] = '\0';
    assert_int_equal(verify(big, IAT, bid), -1);
    free(big);
}

static void test_issue_refuses_bad_arguments(void **state) {
    (void)state;
    char tok[512];
    assert_int_equal(token_issue("", BID, IAT, TTL, tok, sizeof tok), -1);
    assert_int_equal(token_issue(NULL, BID, IAT, TTL, tok, sizeof tok), -1);
    assert_int_equal(token_issue(SECRET, "", IAT, TTL, tok, sizeof tok), -1);
    assert_int_equal(token_issue(SECRET, "has space", IAT, TTL, tok, sizeof tok), -1);
    assert_int_equal(token_issue(SECRET, "quote\"", IAT, TTL, tok, sizeof tok), -1);
    assert_int_equal(token_issue(SECRET, BID "0", IAT, TTL, tok, sizeof tok), -1);   // 37 chars
    assert_int_equal(token_issue(SECRET, BID, IAT, 0, tok, sizeof tok), -1);
    assert_int_equal(token_issue(SECRET, BID, IAT, -5, tok, sizeof tok), -1);
    assert_int_equal(token_issue(SECRET, BID, INT64_MAX - 10, TTL, tok, sizeof tok), -1);
    // out buffer: exactly the length + NUL works, one byte less does not
    size_t need = strlen(cli_token) + 1;
    assert_int_equal(token_issue(SECRET, BID, IAT, TTL, tok, need), 0);
    assert_int_equal(token_issue(SECRET, BID, IAT, TTL, tok, need - 1), -1);
    assert_true(strlen(cli_token) < 256);
}

// ---- two secrets during a rotation (security.token_secret_previous) --------------------------------

static void test_token_signed_with_the_previous_secret_verifies_until_it_expires(void **state) {
    (void)state;
    const char *const rotated[] = {"the-new-token-secret", SECRET, NULL};   // current, previous
    char bid[37] = "";
    int matched = 7;
    assert_int_equal(token_verify_any(rotated, cli_token, IAT, bid, &matched), 0);
    assert_string_equal(bid, BID);
    assert_int_equal(matched, 1);
    // ... but no longer once it has expired: the previous secret does not lengthen a token's life
    assert_int_equal(token_verify_any(rotated, cli_token, EXP, bid, &matched), -1);
    assert_int_equal(matched, -1);
}

static void test_token_signed_with_the_current_secret_says_current(void **state) {
    (void)state;
    char tok[512], bid[37];
    assert_int_equal(token_issue("the-new-token-secret", BID, IAT, TTL, tok, sizeof tok), 0);
    const char *const rotated[] = {"the-new-token-secret", SECRET, NULL};
    int matched = 7;
    assert_int_equal(token_verify_any(rotated, tok, IAT, bid, &matched), 0);
    assert_int_equal(matched, 0);
    // with no previous secret configured (NULL or empty entry), the current one alone works
    const char *const alone[] = {"the-new-token-secret", NULL, NULL};
    assert_int_equal(token_verify_any(alone, tok, IAT, bid, &matched), 0);
    assert_int_equal(matched, 0);
    const char *const empty_previous[] = {"the-new-token-secret", "", NULL};
    assert_int_equal(token_verify_any(empty_previous, cli_token, IAT, bid, &matched), -1);
    assert_int_equal(matched, -1);
}

static void test_token_signed_with_neither_secret_is_refused(void **state) {
    (void)state;
    const char *const rotated[] = {"the-new-token-secret", "the-old-token-secret", NULL};
    char bid[37] = "untouched";
    int matched = 7;
    assert_int_equal(token_verify_any(rotated, cli_token, IAT, bid, &matched), -1);
    assert_int_equal(matched, -1);
    assert_string_equal(bid, "untouched");
    const char *const none[] = {NULL};
    assert_int_equal(token_verify_any(none, cli_token, IAT, bid, &matched), -1);
    assert_int_equal(token_verify_any(NULL, cli_token, IAT, bid, &matched), -1);
    // a claim changed and signed again with a third secret verifies under none of them
    char *forged = forge(hs256, "{\"bid\":\"" BID "\",\"exp\":1700604800,\"iat\":1700000000}", "x");
    assert_int_equal(token_verify_any(rotated, forged, IAT, bid, &matched), -1);
    free(forged);
}

// ---- token_signer_t: the same tokens and the same answers as the pure functions --------------------

static void test_signer_issues_byte_identical_tokens(void **state) {
    (void)state;
    const char *const one[] = {SECRET, NULL};
    token_signer_t *signer = token_signer_new(one);
    assert_non_null(signer);
    char tok[512], expect[512];
    assert_int_equal(token_signer_issue(signer, BID, IAT, TTL, tok, sizeof tok), 0);
    assert_string_equal(tok, cli_token);
    // the keyed context is reused: every later token must still be the one token_issue gives
    const char *bids[] = {"bk_42", BID, "a", "booking-b", "0123456789abcdefghijklmnopqrstuvwxyz"};
    for (int round = 0; round < 3; round++) {
        for (size_t i = 0; i < sizeof bids / sizeof *bids; i++) {
            int64_t iat = IAT + round * 1000 + (int64_t)i;
            assert_int_equal(token_signer_issue(signer, bids[i], iat, 60 + round, tok, sizeof tok), 0);
            assert_int_equal(token_issue(SECRET, bids[i], iat, 60 + round, expect, sizeof expect), 0);
            assert_string_equal(tok, expect);
        }
    }
    token_signer_destroy(&signer);
    assert_null(signer);
    token_signer_destroy(&signer);   // twice is harmless

    // during a rotation tokens are issued with the current secret, the first one
    const char *const rotated[] = {"the-new-token-secret", SECRET, NULL};
    signer = token_signer_new(rotated);
    assert_non_null(signer);
    assert_int_equal(token_signer_issue(signer, BID, IAT, TTL, tok, sizeof tok), 0);
    assert_int_equal(token_issue("the-new-token-secret", BID, IAT, TTL, expect, sizeof expect), 0);
    assert_string_equal(tok, expect);
    token_signer_destroy(&signer);
}

static void test_signer_refuses_the_arguments_token_issue_refuses(void **state) {
    (void)state;
    const char *const one[] = {SECRET, NULL};
    token_signer_t *signer = token_signer_new(one);
    assert_non_null(signer);
    char tok[512];
    assert_int_equal(token_signer_issue(signer, "", IAT, TTL, tok, sizeof tok), -1);
    assert_int_equal(token_signer_issue(signer, NULL, IAT, TTL, tok, sizeof tok), -1);
    assert_int_equal(token_signer_issue(signer, "has space", IAT, TTL, tok, sizeof tok), -1);
    assert_int_equal(token_signer_issue(signer, "quote\"", IAT, TTL, tok, sizeof tok), -1);
    assert_int_equal(token_signer_issue(signer, BID "0", IAT, TTL, tok, sizeof tok), -1);
    assert_int_equal(token_signer_issue(signer, BID, IAT, 0, tok, sizeof tok), -1);
    assert_int_equal(token_signer_issue(signer, BID, IAT, -5, tok, sizeof tok), -1);
    assert_int_equal(token_signer_issue(signer, BID, INT64_MAX - 10, TTL, tok, sizeof tok), -1);
    assert_int_equal(token_signer_issue(signer, BID, IAT, TTL, NULL, sizeof tok), -1);
    size_t need = strlen(cli_token) + 1;
    assert_int_equal(token_signer_issue(signer, BID, IAT, TTL, tok, need - 1), -1);
    assert_int_equal(token_signer_issue(signer, BID, IAT, TTL, tok, need), 0);
    assert_string_equal(tok, cli_token);   // a refused call leaves the context usable
    token_signer_destroy(&signer);
    assert_int_equal(token_signer_issue(NULL, BID, IAT, TTL, tok, sizeof tok), -1);

    // no current secret (empty or missing): nothing is issued, and nothing verifies but what an
    // entry after it signed
    const char *const empty_current[] = {"", SECRET, NULL};
    signer = token_signer_new(empty_current);
    assert_non_null(signer);
    assert_int_equal(token_signer_issue(signer, BID, IAT, TTL, tok, sizeof tok), -1);
    char bid[37];
    int matched = 7;
    assert_int_equal(token_signer_verify(signer, cli_token, IAT, bid, &matched), 0);
    assert_int_equal(matched, 1);
    token_signer_destroy(&signer);
    const char *const none[] = {NULL};
    const char *const *lists[] = {none, NULL};
    for (size_t i = 0; i < 2; i++) {
        signer = token_signer_new(lists[i]);
        assert_non_null(signer);   // valid, refusing everything
        assert_int_equal(token_signer_issue(signer, BID, IAT, TTL, tok, sizeof tok), -1);
        assert_int_equal(token_signer_verify(signer, cli_token, IAT, bid, &matched), -1);
        assert_int_equal(matched, -1);
        token_signer_destroy(&signer);
    }
}

static void test_signer_verifies_the_rotation_cases(void **state) {
    (void)state;
    const char *const rotated[] = {"the-new-token-secret", SECRET, NULL};   // current, previous
    token_signer_t *signer = token_signer_new(rotated);
    assert_non_null(signer);
    char tok[512], bid[37] = "";
    int matched = 7;
    // previous secret: accepted and said so, until the token expires
    assert_int_equal(token_signer_verify(signer, cli_token, IAT, bid, &matched), 0);
    assert_string_equal(bid, BID);
    assert_int_equal(matched, 1);
    strcpy(bid, "untouched");
    assert_int_equal(token_signer_verify(signer, cli_token, EXP, bid, &matched), -1);
    assert_int_equal(matched, -1);
    assert_string_equal(bid, "untouched");
    // current secret
    assert_int_equal(token_signer_issue(signer, "bk_42", IAT, 60, tok, sizeof tok), 0);
    assert_int_equal(token_signer_verify(signer, tok, IAT + 59, bid, &matched), 0);
    assert_string_equal(bid, "bk_42");
    assert_int_equal(matched, 0);
    assert_int_equal(token_signer_verify(signer, tok, IAT + 60, bid, &matched), -1);   // expired
    assert_int_equal(matched, -1);
    // a bad signature: the last character changed, and a claim signed with a third secret
    tok[strlen(tok) - 1] = tok[strlen(tok) - 1] == 'A' ? 'B' : 'A';
    assert_int_equal(token_signer_verify(signer, tok, IAT, bid, &matched), -1);
    assert_int_equal(matched, -1);
    char *forged = forge(hs256, "{\"bid\":\"" BID "\",\"exp\":1700604800,\"iat\":1700000000}", "x");
    assert_int_equal(token_signer_verify(signer, forged, IAT, bid, &matched), -1);
    free(forged);
    assert_int_equal(token_signer_verify(signer, NULL, IAT, bid, &matched), -1);
    assert_int_equal(token_signer_verify(signer, cli_token, IAT, NULL, &matched), -1);
    assert_int_equal(token_signer_verify(signer, cli_token, IAT, bid, NULL), 0);   // matched optional
    assert_int_equal(token_signer_verify(NULL, cli_token, IAT, bid, &matched), -1);
    token_signer_destroy(&signer);

    // after the rotation the old secret is gone
    const char *const after[] = {"the-new-token-secret", "", NULL};
    signer = token_signer_new(after);
    assert_non_null(signer);
    assert_int_equal(token_signer_verify(signer, cli_token, IAT, bid, &matched), -1);
    assert_int_equal(matched, -1);
    token_signer_destroy(&signer);
}

// Every verdict of a signer (result, *matched, booking id) against token_verify_any's, for a set
// of tokens (good, forged, expired, mutated one character at a time, cut short, malformed), several
// secret lists and several clocks.
static void test_signer_verifies_exactly_like_token_verify_any(void **state) {
    (void)state;
    enum { TOKS_MAX = 1024 };
    char **toks = calloc(TOKS_MAX, sizeof *toks);
    assert_non_null(toks);
    size_t n = 0;
    toks[n++] = strdup(cli_token);
    toks[n++] = strdup(none_unsigned);
    toks[n++] = strdup(none_hs256_signed);
    toks[n++] = forge(hs256, "{\"bid\":\"bk_1\",\"exp\":1700604800,\"iat\":1700000060,\"x\":[1]}", SECRET);
    toks[n++] = forge(hs256, "{\"bid\":\"bk_1\",\"exp\":1700604800,\"iat\":1700000061}", SECRET);
    toks[n++] = forge("{\"alg\":\"HS256\",\"crit\":[\"x\"]}", "{\"bid\":\"bk_1\",\"exp\":1700604800,\"iat\":1}", SECRET);
    toks[n++] = forge(hs256, "{\"bid\":\"bk_1\",\"exp\":1700604800,\"iat\":1}", "the-new-token-secret");
    toks[n++] = forge(hs256, "{\"bid\":\"bk 1\",\"exp\":1700604800,\"iat\":1}", SECRET);
    const char *malformed[] = {"", ".", "..", "a.b", "a.b.c.d", "a..c", "\xff\xfe.\x01.\x02"};
    for (size_t i = 0; i < sizeof malformed / sizeof *malformed; i++) toks[n++] = strdup(malformed[i]);
    for (size_t i = 0; i < sizeof cli_token - 1; i += 3) {   // every third character changed
        toks[n] = strdup(cli_token);
        assert_non_null(toks[n]);
        toks[n][i] = toks[n][i] == 'A' ? 'B' : 'A';
        n++;
    }
    for (size_t len = 0; len < sizeof cli_token - 1; len += 7) toks[n++] = strndup(cli_token, len);
    assert_true(n < TOKS_MAX);
    for (size_t i = 0; i < n; i++) assert_non_null(toks[i]);

    const char *const l_one[] = {SECRET, NULL};
    const char *const l_rotated[] = {"the-new-token-secret", SECRET, NULL};
    const char *const l_old_first[] = {SECRET, "the-new-token-secret", NULL};
    const char *const l_empty_current[] = {"", SECRET, NULL};
    const char *const l_neither[] = {"the-new-token-secret", "the-old-token-secret", NULL};
    const char *const l_many[] = {"a", "b", "c", "d", SECRET, NULL};   // beyond TOKEN_SECRETS_MAX
    const char *const l_none[] = {NULL};
    const char *const *lists[] = {l_one, l_rotated, l_old_first, l_empty_current, l_neither, l_many, l_none};
    const int64_t nows[] = {IAT, IAT - 1, EXP - 1, EXP, 0};

    for (size_t l = 0; l < sizeof lists / sizeof *lists; l++) {
        token_signer_t *signer = token_signer_new(lists[l]);
        assert_non_null(signer);
        for (size_t t = 0; t < n; t++) {
            for (size_t k = 0; k < sizeof nows / sizeof *nows; k++) {
                char bid_a[37] = "untouched", bid_b[37] = "untouched";
                int m_a = 7, m_b = 7;
                int rc_a = token_verify_any(lists[l], toks[t], nows[k], bid_a, &m_a);
                int rc_b = token_signer_verify(signer, toks[t], nows[k], bid_b, &m_b);
                if (rc_a != rc_b || m_a != m_b || strcmp(bid_a, bid_b) != 0)
                    fail_msg("list %zu token %zu now %lld: %d/%d/%s vs %d/%d/%s", l, t, (long long)nows[k], rc_a,
                             m_a, bid_a, rc_b, m_b, bid_b);
            }
        }
        token_signer_destroy(&signer);
    }
    for (size_t i = 0; i < n; i++) free(toks[i]);
    free(toks);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_issue_matches_a_token_built_with_openssl),
        cmocka_unit_test(test_verify_accepts_the_openssl_token_and_returns_its_booking),
        cmocka_unit_test(test_issued_token_round_trips),
        cmocka_unit_test(test_expired_token_is_refused),
        cmocka_unit_test(test_changing_any_character_breaks_the_token),
        cmocka_unit_test(test_truncated_or_extended_token_is_refused),
        cmocka_unit_test(test_non_canonical_signature_encoding_is_refused),
        cmocka_unit_test(test_wrong_secret_is_refused),
        cmocka_unit_test(test_alg_none_is_refused),
        cmocka_unit_test(test_other_algorithms_and_crit_headers_are_refused),
        cmocka_unit_test(test_claims_for_another_booking_cannot_be_swapped_in),
        cmocka_unit_test(test_missing_or_mistyped_claims_are_refused),
        cmocka_unit_test(test_malformed_tokens_are_refused),
        cmocka_unit_test(test_overlong_token_is_refused),
        cmocka_unit_test(test_issue_refuses_bad_arguments),
        cmocka_unit_test(test_token_signed_with_the_previous_secret_verifies_until_it_expires),
        cmocka_unit_test(test_token_signed_with_the_current_secret_says_current),
        cmocka_unit_test(test_token_signed_with_neither_secret_is_refused),
        cmocka_unit_test(test_signer_issues_byte_identical_tokens),
        cmocka_unit_test(test_signer_refuses_the_arguments_token_issue_refuses),
        cmocka_unit_test(test_signer_verifies_the_rotation_cases),
        cmocka_unit_test(test_signer_verifies_exactly_like_token_verify_any),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
