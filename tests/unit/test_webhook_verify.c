// tests/unit/test_webhook_verify.c — realtime/webhook_verify.c against fixed vectors.
//
// Every expected digest below was computed outside our code, on the command line, e.g.
//   printf '%s' '1700000000.{"id":"evt_1",...}' | openssl dgst -sha256 -hmac whsec_test_secret
//   printf '%s' "$BODY" | base64 -w0 | { read b; printf '%s%s' "$b" testPaymentKey123; } | md5sum
// plus the vectors of providers.md §1.7 (Stripe) and §3.5 (Cryptomus), which match those commands.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
// cmocka after the standard headers it needs
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "realtime/webhook_verify.h"

// ------------------------------------------------------------------------------------- Stripe

#define T0 1700000000LL
static const char body1[] = "{\"id\":\"evt_1\",\"object\":\"event\",\"type\":\"checkout.session.completed\"}";
static const char body2[] = "{\n  \"id\": \"evt_test_webhook\",\n  \"object\": \"event\"\n}";
static const char body3[] = "{\"id\":\"evt_1\",\"object\":\"event\"}";
#define SIG1 "d1e4aa90551919f198c22ba0a9691b35338d4b631d54ce1f1465e93b1d41c430"   // whsec_test_secret, T0, body1
#define SIG2 "4f1cd7feda9826e746b7d482c4badebb657398df1099e1046364f6196a230150"   // whsec_test_secret, T0, body2
#define SIG3 "61717e8c6c6f2a660ad087fe7252dfa57e460dbe02b686efa3f8f41d209f51d6"   // whsec_abc, 1492774577, body3
#define SIG1_NEW "a2f16f5788750d9e95c0947ca2f16605565cf055f2755ba469b1e966d86448bf"   // whsec_new_secret, T0, body1
#define SIG_NUL "1c68785302fdb56dfa4ba16b9548a84be275258764de5cc2fc6aa3e576e157a0"   // whsec_test_secret, T0, "a\0b"
#define V0 "6ffbb59b2300aae63f272406069a9788598b792a944a07aba816edb039989a39"

static const char *const test_secret[] = {"whsec_test_secret", NULL};

static int stripe(const char *header, const char *body, int64_t now) {
    return stripe_signature_verify(header, body, strlen(body), test_secret, now, 300);
}

static void test_stripe_providers_vectors_verify(void **state) {
    (void)state;
    assert_int_equal(stripe("t=1700000000,v1=" SIG1, body1, T0), WEBHOOK_OK);
    assert_int_equal(stripe("t=1700000000,v1=" SIG2, body2, T0), WEBHOOK_OK);
    const char *const abc[] = {"whsec_abc", NULL};
    assert_int_equal(stripe_signature_verify("t=1492774577,v1=" SIG3, body3, strlen(body3), abc, 1492774577, 300),
                     WEBHOOK_OK);
}

static void test_stripe_tolerance_boundary_300_passes_301_is_stale(void **state) {
    (void)state;
    const char *h = "t=1700000000,v1=" SIG1 ",v1=deadbeef,v0=" V0;
    assert_int_equal(stripe(h, body1, T0 + 300), WEBHOOK_OK);
    assert_int_equal(stripe(h, body1, T0 + 301), WEBHOOK_STALE_TIMESTAMP);
    assert_int_equal(stripe(h, body1, T0 + 86400), WEBHOOK_STALE_TIMESTAMP);
}

static void test_stripe_future_timestamp_beyond_tolerance_is_stale(void **state) {
    (void)state;
    const char *h = "t=1700000000,v1=" SIG1;
    assert_int_equal(stripe(h, body1, T0 - 300), WEBHOOK_OK);
    assert_int_equal(stripe(h, body1, T0 - 301), WEBHOOK_STALE_TIMESTAMP);
}

static void test_stripe_tolerance_zero_disables_the_age_check(void **state) {
    (void)state;
    assert_int_equal(stripe_signature_verify("t=1700000000,v1=" SIG1, body1, strlen(body1), test_secret,
                                             T0 + 1000000, 0),
                     WEBHOOK_OK);
}

static void test_stripe_v0_only_header_fails(void **state) {
    (void)state;
    assert_int_equal(stripe("t=1700000000,v0=" V0, body1, T0), WEBHOOK_BAD_SIGNATURE);
    // even a v0 carrying the right digest is not a v1
    assert_int_equal(stripe("t=1700000000,v0=" SIG1, body1, T0), WEBHOOK_BAD_SIGNATURE);
    assert_int_equal(stripe("t=1700000000,v2=" SIG1, body1, T0), WEBHOOK_BAD_SIGNATURE);
}

static void test_stripe_any_matching_v1_among_several_passes(void **state) {
    (void)state;
    assert_int_equal(stripe("t=1700000000,v1=" SIG1 ",v1=" SIG2, body1, T0), WEBHOOK_OK);
    assert_int_equal(stripe("t=1700000000,v1=" SIG2 ",v1=" SIG1, body1, T0), WEBHOOK_OK);
    assert_int_equal(stripe("v1=bad_signature,t=1700000000,v1=" SIG2 ",v0=" V0 ",v1=" SIG1 ",v1=", body1, T0),
                     WEBHOOK_OK);
    assert_int_equal(stripe("t=1700000000,v1=" SIG2 ",v1=bad_signature", body1, T0), WEBHOOK_BAD_SIGNATURE);
}

static void test_stripe_tampered_body_fails(void **state) {
    (void)state;
    char body[sizeof body1];
    for (size_t i = 0; i < sizeof body1 - 1; i++) {
        memcpy(body, body1, sizeof body);
        body[i] ^= 0x01;
        assert_int_equal(stripe("t=1700000000,v1=" SIG1, body, T0), WEBHOOK_BAD_SIGNATURE);
    }
    // a byte more or less
    assert_int_equal(stripe_signature_verify("t=1700000000,v1=" SIG1, body1, sizeof body1 - 2, test_secret, T0, 300),
                     WEBHOOK_BAD_SIGNATURE);
    assert_int_equal(stripe_signature_verify("t=1700000000,v1=" SIG1, body1, sizeof body1, test_secret, T0, 300),
                     WEBHOOK_BAD_SIGNATURE);
}

static void test_stripe_signed_timestamp_cannot_be_changed(void **state) {
    (void)state;
    assert_int_equal(stripe("t=1700000001,v1=" SIG1, body1, T0), WEBHOOK_BAD_SIGNATURE);
    // a stale replay with a fresh t does not verify; a bad signature is reported before staleness
    assert_int_equal(stripe("t=1700000000,v1=" SIG2, body1, T0 + 1000), WEBHOOK_BAD_SIGNATURE);
}

static void test_stripe_wrong_secret_fails(void **state) {
    (void)state;
    const char *const wrong[] = {"whsec_test_secreT", NULL};
    const char *const prefixless[] = {"test_secret", NULL};
    const char *const none[] = {NULL};
    const char *const empty[] = {"", NULL};
    const char *h = "t=1700000000,v1=" SIG1;
    assert_int_equal(stripe_signature_verify(h, body1, strlen(body1), wrong, T0, 300), WEBHOOK_BAD_SIGNATURE);
    assert_int_equal(stripe_signature_verify(h, body1, strlen(body1), prefixless, T0, 300), WEBHOOK_BAD_SIGNATURE);
    assert_int_equal(stripe_signature_verify(h, body1, strlen(body1), none, T0, 300), WEBHOOK_BAD_SIGNATURE);
    assert_int_equal(stripe_signature_verify(h, body1, strlen(body1), empty, T0, 300), WEBHOOK_BAD_SIGNATURE);
    assert_int_equal(stripe_signature_verify(h, body1, strlen(body1), NULL, T0, 300), WEBHOOK_BAD_SIGNATURE);
}

static void test_stripe_two_secrets_during_rotation(void **state) {
    (void)state;
    const char *const both[] = {"whsec_new_secret", "whsec_test_secret", NULL};
    const char *const only_new[] = {"whsec_new_secret", NULL};
    size_t n = strlen(body1);
    // Stripe signs with each active secret; we hold either or both
    assert_int_equal(stripe_signature_verify("t=1700000000,v1=" SIG1 ",v1=" SIG1_NEW, body1, n, both, T0, 300), WEBHOOK_OK);
    assert_int_equal(stripe_signature_verify("t=1700000000,v1=" SIG1, body1, n, both, T0, 300), WEBHOOK_OK);
    assert_int_equal(stripe_signature_verify("t=1700000000,v1=" SIG1_NEW, body1, n, both, T0, 300), WEBHOOK_OK);
    assert_int_equal(stripe_signature_verify("t=1700000000,v1=" SIG1_NEW, body1, n, only_new, T0, 300), WEBHOOK_OK);
    assert_int_equal(stripe_signature_verify("t=1700000000,v1=" SIG1, body1, n, only_new, T0, 300),
                     WEBHOOK_BAD_SIGNATURE);
    assert_int_equal(stripe_signature_verify("t=1700000000,v1=" SIG1_NEW, body1, n, test_secret, T0, 300),
                     WEBHOOK_BAD_SIGNATURE);
}

static void test_stripe_body_is_raw_bytes_not_a_c_string(void **state) {
    (void)state;
    assert_int_equal(stripe_signature_verify("t=1700000000,v1=" SIG_NUL, "a\0b", 3, test_secret, T0, 300), WEBHOOK_OK);
    assert_int_equal(stripe_signature_verify("t=1700000000,v1=" SIG_NUL, "a\0c", 3, test_secret, T0, 300),
                     WEBHOOK_BAD_SIGNATURE);
}

static void test_stripe_malformed_headers_fail(void **state) {
    (void)state;
    const char *bad[] = {
        "", ",", "=", "t", "t=", "v1=" SIG1, "t=1700000000", "t=1700000000,", "t=abc,v1=" SIG1,
        "t=-1700000000,v1=" SIG1, "t=+1700000000,v1=" SIG1, "t=1700000000 ,v1=" SIG1,
        "t=1700000000,t=1700000000,v1=" SIG1, "t=1700000000, v1=" SIG1, "t=1700000000,V1=" SIG1,
        "T=1700000000,v1=" SIG1, "t=1700000000;v1=" SIG1, "t=1700000000,v1=" SIG1 "0",
        "t=1700000000,v1=D1E4AA90551919F198C22BA0A9691B35338D4B631D54CE1F1465E93B1D41C430",
        "t=1700000000,v1=d1e4aa90551919f198c22ba0a9691b35338d4b631d54ce1f1465e93b1d41c43",
        "t=99999999999999999999999,v1=" SIG1,
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        if (stripe(bad[i], body1, T0) != WEBHOOK_BAD_SIGNATURE) fail_msg("accepted: %s", bad[i]);
    assert_int_equal(stripe_signature_verify(NULL, body1, strlen(body1), test_secret, T0, 300), WEBHOOK_BAD_SIGNATURE);
}

static void test_stripe_overlong_header_is_refused(void **state) {
    (void)state;
    size_t n = WEBHOOK_HEADER_MAX + 100;
    char *h = malloc(n + 1);
    int k = snprintf(h, n + 1, "t=1700000000,v1=" SIG1);
    for (size_t i = (size_t)k; i < n; i++) h[i] = (i % 20 == 0) ? ',' : 'x';
    h[n] = '\0';
    assert_int_equal(stripe(h, body1, T0), WEBHOOK_BAD_SIGNATURE);
    // just under the limit, many bogus items and the right v1: still verifies
    h[WEBHOOK_HEADER_MAX - 1] = '\0';
    assert_int_equal(stripe(h, body1, T0), WEBHOOK_OK);
    free(h);
}

// ---------------------------------------------------------------------------------- Cryptomus

#define CKEY "testPaymentKey123"
static const char cm_request[] =
    "{\"amount\":\"15.00\",\"currency\":\"USD\",\"order_id\":\"bk_42\",\"url_callback\":\"https://example.com/cb\","
    "\"lifetime\":3600}";
static const char cm_webhook[] =
    "{\"type\":\"payment\",\"uuid\":\"62f88b36-a9d5-4fa6-aa5d-4d5d7e9b9f2a\",\"order_id\":\"bk_42\","
    "\"amount\":\"15.00\",\"payment_amount\":\"15.00\",\"merchant_amount\":\"14.70\",\"is_final\":true,"
    "\"status\":\"paid\",\"currency\":\"USD\",\"additional_data\":\"https:\\/\\/x.example\\/a\","
    "\"sign\":\"d56b3f51f75c1b6b13801b4daa34211c\"}";
static const char cm_webhook_unescaped[] =
    "{\"type\":\"payment\",\"uuid\":\"62f88b36-a9d5-4fa6-aa5d-4d5d7e9b9f2a\",\"order_id\":\"bk_42\","
    "\"amount\":\"15.00\",\"payment_amount\":\"15.00\",\"merchant_amount\":\"14.70\",\"is_final\":true,"
    "\"status\":\"paid\",\"currency\":\"USD\",\"additional_data\":\"https://x.example/a\","
    "\"sign\":\"d56b3f51f75c1b6b13801b4daa34211c\"}";

static int cm(const char *body) {
    return cryptomus_signature_verify(body, strlen(body), CKEY);
}

static void test_cryptomus_sign_matches_the_providers_vectors(void **state) {
    (void)state;
    char hex[33];
    cryptomus_sign(cm_request, strlen(cm_request), CKEY, hex);
    assert_string_equal(hex, "73083c80bb2d6547342f97f6e688cd8d");
    cryptomus_sign("", 0, CKEY, hex);
    assert_string_equal(hex, "a78aab9218659693270c548b5738121b");
    cryptomus_sign(NULL, 0, CKEY, hex);
    assert_string_equal(hex, "a78aab9218659693270c548b5738121b");
}

static void test_cryptomus_sign_streams_bodies_of_every_length(void **state) {
    (void)state;
    // {"pad":"x…x"} of 10000, 10001, 10002 bytes: the three base64 remainders across many chunks
    static const char *expect[] = {"e1b19caec18dbc2f0302fd27a2afc724", "75292a43b5c368fda36a8a3aeee40ed5",
                                   "eb2ab0122cd5f0b1c8bc6cb91d93f363"};
    for (int r = 0; r < 3; r++) {
        size_t n = 10000 + (size_t)r;
        char *b = malloc(n + 1);
        memcpy(b, "{\"pad\":\"", 8);
        memset(b + 8, 'x', n - 10);
        memcpy(b + n - 2, "\"}", 3);
        char hex[33];
        cryptomus_sign(b, n, CKEY, hex);
        assert_string_equal(hex, expect[r]);
        free(b);
    }
}

static void test_cryptomus_providers_webhook_vector_verifies(void **state) {
    (void)state;
    assert_int_equal(cm(cm_webhook), WEBHOOK_OK);
}

static void test_cryptomus_unescaped_slashes_variant_fails(void **state) {
    (void)state;
    assert_int_equal(cm(cm_webhook_unescaped), WEBHOOK_BAD_SIGNATURE);
}

static void test_cryptomus_tampered_body_or_wrong_key_fails(void **state) {
    (void)state;
    char body[sizeof cm_webhook];
    memcpy(body, cm_webhook, sizeof body);
    char *amount = strstr(body, "15.00");
    amount[1] = '6';   // "16.00"
    assert_int_equal(cm(body), WEBHOOK_BAD_SIGNATURE);
    // every single-bit change of the signed part fails (or the JSON breaks, which fails too)
    const size_t signed_len = sizeof cm_webhook - 1 - 44;
    for (size_t i = 0; i < signed_len; i++) {
        memcpy(body, cm_webhook, sizeof body);
        body[i] ^= 0x20;
        if (cm(body) == WEBHOOK_OK) fail_msg("accepted with byte %zu changed", i);
    }
    assert_int_equal(cryptomus_signature_verify(cm_webhook, strlen(cm_webhook), "testPaymentKey124"),
                     WEBHOOK_BAD_SIGNATURE);
    assert_int_equal(cryptomus_signature_verify(cm_webhook, strlen(cm_webhook), ""), WEBHOOK_BAD_SIGNATURE);
    assert_int_equal(cryptomus_signature_verify(cm_webhook, strlen(cm_webhook), NULL), WEBHOOK_BAD_SIGNATURE);
}

static void test_cryptomus_sign_is_compared_exactly(void **state) {
    (void)state;
    char body[sizeof cm_webhook];
    memcpy(body, cm_webhook, sizeof body);
    char *sign = strstr(body, "d56b3f51");
    for (int i = 0; i < 32; i++)
        if (sign[i] >= 'a' && sign[i] <= 'f') sign[i] = (char)(sign[i] - 'a' + 'A');
    assert_int_equal(cm(body), WEBHOOK_BAD_SIGNATURE);   // PHP hash_equals is case-sensitive
    memcpy(body, cm_webhook, sizeof body);
    sign = strstr(body, "d56b3f51");
    sign[31] = sign[31] == '0' ? '1' : '0';
    assert_int_equal(cm(body), WEBHOOK_BAD_SIGNATURE);
}

static void test_cryptomus_trailing_whitespace_is_tolerated(void **state) {
    (void)state;
    char *b = NULL;
    assert_true(asprintf(&b, "%s\r\n", cm_webhook) > 0);
    assert_int_equal(cm(b), WEBHOOK_OK);
    free(b);
}

static void test_cryptomus_sign_not_last_is_checked_on_a_php_re_encoding(void **state) {
    (void)state;
    // signed text (md5sum on the command line): {"uuid":"u-1","order_id":"bk_42","status":"paid",
    // "is_final":true,"additional_data":"https:\/\/x.example\/a","note":"café\u001f"}
    static const char first[] =
        "{\"sign\":\"650386798a359adbc73a0ea9aee14228\",\"uuid\":\"u-1\",\"order_id\":\"bk_42\","
        "\"status\":\"paid\",\"is_final\":true,\"additional_data\":\"https://x.example/a\","
        "\"note\":\"caf\xc3\xa9\\u001F\"}";
    assert_int_equal(cm(first), WEBHOOK_OK);
    static const char middle_pretty[] =
        "{\"uuid\": \"u-1\", \"order_id\": \"bk_42\", \"sign\": \"650386798a359adbc73a0ea9aee14228\",\n"
        " \"status\": \"paid\", \"is_final\": true, \"additional_data\": \"https:\\/\\/x.example\\/a\","
        " \"note\": \"caf\\u00e9\\u001f\"}";
    assert_int_equal(cm(middle_pretty), WEBHOOK_OK);
    // key order matters to PHP, so it matters here
    static const char reordered[] =
        "{\"sign\":\"650386798a359adbc73a0ea9aee14228\",\"order_id\":\"bk_42\",\"uuid\":\"u-1\","
        "\"status\":\"paid\",\"is_final\":true,\"additional_data\":\"https://x.example/a\","
        "\"note\":\"caf\xc3\xa9\\u001F\"}";
    assert_int_equal(cm(reordered), WEBHOOK_BAD_SIGNATURE);
    // U+2028 is escaped by PHP even under JSON_UNESCAPED_UNICODE: signed text {"a":"x\u2028y"}
    static const char ls[] = "{\"sign\":\"fb81858f48f2398051e32fb39c4b18a2\",\"a\":\"x\xe2\x80\xa8y\"}";
    assert_int_equal(cm(ls), WEBHOOK_OK);
    // nothing but the sign: PHP encodes the empty array as []
    assert_int_equal(cm("{\"sign\":\"4ab4d7812c94388326ad2ad258693506\"}"), WEBHOOK_OK);
}

static void test_cryptomus_long_body_verifies(void **state) {
    (void)state;
    // signed text: {"pad":"x…x"} of 10000 bytes (see the streaming test)
    size_t n = 10000;
    char *b = malloc(n + 64);
    memcpy(b, "{\"pad\":\"", 8);
    memset(b + 8, 'x', n - 10);
    strcpy(b + n - 2, "\",\"sign\":\"e1b19caec18dbc2f0302fd27a2afc724\"}");
    assert_int_equal(cm(b), WEBHOOK_OK);
    b[100] = 'y';
    assert_int_equal(cm(b), WEBHOOK_BAD_SIGNATURE);
    free(b);
}

static void test_cryptomus_malformed_bodies_fail(void **state) {
    (void)state;
    const char *bad[] = {
        "", "{}", "[]", "null", "not json",
        "{\"uuid\":\"u\"}",
        "{\"uuid\":\"u\",\"sign\":null}",
        "{\"uuid\":\"u\",\"sign\":42}",
        "{\"uuid\":\"u\",\"sign\":\"d56b3f51f75c1b6b13801b4daa34211\"}",
        "{\"uuid\":\"u\",\"sign\":\"d56b3f51f75c1b6b13801b4daa34211cc\"}",
        "garbage,\"sign\":\"d56b3f51f75c1b6b13801b4daa34211c\"}",
        "{\"a\":1,\"sign\":\"d56b3f51f75c1b6b13801b4daa34211c\",\"sign\":\"d56b3f51f75c1b6b13801b4daa34211c\"}",
        "[\"x\",\"sign\":\"d56b3f51f75c1b6b13801b4daa34211c\"}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        if (cm(bad[i]) != WEBHOOK_BAD_SIGNATURE) fail_msg("accepted: %s", bad[i]);
    assert_int_equal(cryptomus_signature_verify(NULL, 0, CKEY), WEBHOOK_BAD_SIGNATURE);
    assert_int_equal(cryptomus_signature_verify(cm_webhook, WEBHOOK_BODY_MAX + 1, CKEY), WEBHOOK_BAD_SIGNATURE);
}

// --------------------------------------------------------------------------------------- VAPI

#define VSECRET "vapi-hmac-secret"
static const char vbody[] = "{\"message\":{\"type\":\"status-update\"}}";
#define VSIG_S "8a47ddf4e7d581ad5b780282fc110a687dee44522ab7977bbde81daee281df33"    // ts 1700000000
#define VSIG_MS "ecedea5c44bff022716a19baaf4e39cf068bc61a54e1f649c0220202929c69eb"   // ts 1700000000123

static int vapi(const char *sig, const char *ts, const char *body, int64_t now) {
    return vapi_hmac_verify(sig, ts, body, strlen(body), VSECRET, now);
}

static void test_vapi_secret_header_compare(void **state) {
    (void)state;
    assert_int_equal(vapi_secret_verify("s3cr3t-value", "s3cr3t-value"), WEBHOOK_OK);
    assert_int_equal(vapi_secret_verify("s3cr3t-valuE", "s3cr3t-value"), WEBHOOK_BAD_SIGNATURE);
    assert_int_equal(vapi_secret_verify("s3cr3t-valu", "s3cr3t-value"), WEBHOOK_BAD_SIGNATURE);
    assert_int_equal(vapi_secret_verify("s3cr3t-value ", "s3cr3t-value"), WEBHOOK_BAD_SIGNATURE);
    assert_int_equal(vapi_secret_verify("", "s3cr3t-value"), WEBHOOK_BAD_SIGNATURE);
    assert_int_equal(vapi_secret_verify(NULL, "s3cr3t-value"), WEBHOOK_BAD_SIGNATURE);
    assert_int_equal(vapi_secret_verify("", ""), WEBHOOK_BAD_SIGNATURE);   // no secret configured
    assert_int_equal(vapi_secret_verify("x", NULL), WEBHOOK_BAD_SIGNATURE);
}

static void test_vapi_hmac_vectors_in_seconds_and_milliseconds(void **state) {
    (void)state;
    assert_int_equal(vapi(VSIG_S, "1700000000", vbody, T0), WEBHOOK_OK);
    assert_int_equal(vapi("sha256=" VSIG_S, "1700000000", vbody, T0), WEBHOOK_OK);
    assert_int_equal(vapi("8A47DDF4E7D581AD5B780282FC110A687DEE44522AB7977BBDE81DAEE281DF33", "1700000000", vbody, T0),
                     WEBHOOK_OK);
    assert_int_equal(vapi(VSIG_MS, "1700000000123", vbody, T0), WEBHOOK_OK);
}

static void test_vapi_hmac_window_is_300_seconds_both_ways(void **state) {
    (void)state;
    assert_int_equal(vapi(VSIG_S, "1700000000", vbody, T0 + 300), WEBHOOK_OK);
    assert_int_equal(vapi(VSIG_S, "1700000000", vbody, T0 + 301), WEBHOOK_STALE_TIMESTAMP);
    assert_int_equal(vapi(VSIG_S, "1700000000", vbody, T0 - 300), WEBHOOK_OK);
    assert_int_equal(vapi(VSIG_S, "1700000000", vbody, T0 - 301), WEBHOOK_STALE_TIMESTAMP);
    assert_int_equal(vapi(VSIG_MS, "1700000000123", vbody, T0 + 300), WEBHOOK_OK);
    assert_int_equal(vapi(VSIG_MS, "1700000000123", vbody, T0 + 301), WEBHOOK_STALE_TIMESTAMP);
}

static void test_vapi_hmac_refuses_tampering_and_wrong_secrets(void **state) {
    (void)state;
    assert_int_equal(vapi(VSIG_S, "1700000000", "{\"message\":{\"type\":\"status-updatE\"}}", T0),
                     WEBHOOK_BAD_SIGNATURE);
    assert_int_equal(vapi(VSIG_S, "1700000001", vbody, T0), WEBHOOK_BAD_SIGNATURE);
    assert_int_equal(vapi(VSIG_S, "1700000000000", vbody, T0), WEBHOOK_BAD_SIGNATURE);   // same instant in ms
    assert_int_equal(vapi_hmac_verify(VSIG_S, "1700000000", vbody, strlen(vbody), "vapi-hmac-secreT", T0),
                     WEBHOOK_BAD_SIGNATURE);
    assert_int_equal(vapi_hmac_verify(VSIG_S, "1700000000", vbody, strlen(vbody), "", T0), WEBHOOK_BAD_SIGNATURE);
    const char *bad_sigs[] = {"", "sha256=", "sha512=" VSIG_S, VSIG_S "0", "8a47ddf4", "sha256=sha256=" VSIG_S,
                              "za47ddf4e7d581ad5b780282fc110a687dee44522ab7977bbde81daee281df33"};
    for (size_t i = 0; i < sizeof bad_sigs / sizeof *bad_sigs; i++)
        assert_int_equal(vapi(bad_sigs[i], "1700000000", vbody, T0), WEBHOOK_BAD_SIGNATURE);
    const char *bad_ts[] = {"", "-1700000000", "1700000000.5", " 1700000000", "0x65", "99999999999999999999"};
    for (size_t i = 0; i < sizeof bad_ts / sizeof *bad_ts; i++)
        assert_int_equal(vapi(VSIG_S, bad_ts[i], vbody, T0), WEBHOOK_BAD_SIGNATURE);
    assert_int_equal(vapi_hmac_verify(NULL, "1700000000", vbody, strlen(vbody), VSECRET, T0), WEBHOOK_BAD_SIGNATURE);
    assert_int_equal(vapi_hmac_verify(VSIG_S, NULL, vbody, strlen(vbody), VSECRET, T0), WEBHOOK_BAD_SIGNATURE);
}

// ---- two secrets during a rotation: current first, then previous ----------------------------------

static void test_stripe_rotation_says_which_secret_matched(void **state) {
    (void)state;
    const char *const rotated[] = {"whsec_new_secret", "whsec_test_secret", NULL};   // current, previous
    size_t n = strlen(body1);
    int matched = 7;
    assert_int_equal(stripe_signature_verify_any("t=1700000000,v1=" SIG1_NEW, body1, n, rotated, T0, 300, &matched),
                     WEBHOOK_OK);
    assert_int_equal(matched, 0);
    assert_int_equal(stripe_signature_verify_any("t=1700000000,v1=" SIG1, body1, n, rotated, T0, 300, &matched),
                     WEBHOOK_OK);
    assert_int_equal(matched, 1);
    // neither: a signature of another body under the old secret
    assert_int_equal(stripe_signature_verify_any("t=1700000000,v1=" SIG2, body1, n, rotated, T0, 300, &matched),
                     WEBHOOK_BAD_SIGNATURE);
    assert_int_equal(matched, -1);
    // a stale timestamp is still stale under the previous secret
    assert_int_equal(stripe_signature_verify_any("t=1700000000,v1=" SIG1, body1, n, rotated, T0 + 301, 300, &matched),
                     WEBHOOK_STALE_TIMESTAMP);
    assert_int_equal(matched, 1);
    // no previous configured (NULL entry): only the current one
    const char *const alone[] = {"whsec_new_secret", NULL, NULL};
    assert_int_equal(stripe_signature_verify_any("t=1700000000,v1=" SIG1, body1, n, alone, T0, 300, &matched),
                     WEBHOOK_BAD_SIGNATURE);
    assert_int_equal(matched, -1);
    assert_int_equal(stripe_signature_verify_any("t=1700000000,v1=" SIG1, body1, n, rotated, T0, 300, NULL), WEBHOOK_OK);
}

static void test_cryptomus_rotation_says_which_key_matched(void **state) {
    (void)state;
    const char *const rotated[] = {"newPaymentKey456", CKEY, NULL};
    const char *const current_first[] = {CKEY, "oldPaymentKey000", NULL};
    const char *const neither[] = {"newPaymentKey456", "oldPaymentKey000", NULL};
    int matched = 7;
    assert_int_equal(cryptomus_signature_verify_any(cm_webhook, strlen(cm_webhook), rotated, &matched), WEBHOOK_OK);
    assert_int_equal(matched, 1);
    assert_int_equal(cryptomus_signature_verify_any(cm_webhook, strlen(cm_webhook), current_first, &matched),
                     WEBHOOK_OK);
    assert_int_equal(matched, 0);
    assert_int_equal(cryptomus_signature_verify_any(cm_webhook, strlen(cm_webhook), neither, &matched),
                     WEBHOOK_BAD_SIGNATURE);
    assert_int_equal(matched, -1);
    // the PHP re-encoding path (sign not last) under the previous key too
    static const char first[] = "{\"sign\":\"4ab4d7812c94388326ad2ad258693506\"}";
    assert_int_equal(cryptomus_signature_verify_any(first, strlen(first), rotated, &matched), WEBHOOK_OK);
    assert_int_equal(matched, 1);
    assert_int_equal(cryptomus_signature_verify_any(first, strlen(first), neither, &matched), WEBHOOK_BAD_SIGNATURE);
    assert_int_equal(matched, -1);
    const char *const none[] = {NULL};
    assert_int_equal(cryptomus_signature_verify_any(cm_webhook, strlen(cm_webhook), none, &matched),
                     WEBHOOK_BAD_SIGNATURE);
}

static void test_vapi_secret_rotation_says_which_secret_matched(void **state) {
    (void)state;
    const char *const rotated[] = {"vapi-new-secret", "vapi-old-secret", NULL};
    int matched = 7;
    assert_int_equal(vapi_secret_verify_any("vapi-new-secret", rotated, &matched), WEBHOOK_OK);
    assert_int_equal(matched, 0);
    assert_int_equal(vapi_secret_verify_any("vapi-old-secret", rotated, &matched), WEBHOOK_OK);
    assert_int_equal(matched, 1);
    const char *neither[] = {"vapi-other-secret", "vapi-old-secre", "vapi-old-secret ", "", "vapi-new-secretvapi-old-secret"};
    for (size_t i = 0; i < sizeof neither / sizeof *neither; i++) {
        assert_int_equal(vapi_secret_verify_any(neither[i], rotated, &matched), WEBHOOK_BAD_SIGNATURE);
        assert_int_equal(matched, -1);
    }
    assert_int_equal(vapi_secret_verify_any(NULL, rotated, &matched), WEBHOOK_BAD_SIGNATURE);
    const char *const alone[] = {"vapi-new-secret", NULL, NULL};
    assert_int_equal(vapi_secret_verify_any("vapi-old-secret", alone, &matched), WEBHOOK_BAD_SIGNATURE);
    const char *const empty[] = {"", "", NULL};
    assert_int_equal(vapi_secret_verify_any("", empty, &matched), WEBHOOK_BAD_SIGNATURE);
}

static void test_vapi_hmac_rotation_says_which_secret_matched(void **state) {
    (void)state;
    const char *const rotated[] = {"vapi-hmac-new", VSECRET, NULL};
    const char *const current_first[] = {VSECRET, "vapi-hmac-old", NULL};
    const char *const neither[] = {"vapi-hmac-new", "vapi-hmac-old", NULL};
    size_t n = strlen(vbody);
    int matched = 7;
    assert_int_equal(vapi_hmac_verify_any(VSIG_S, "1700000000", vbody, n, rotated, T0, &matched), WEBHOOK_OK);
    assert_int_equal(matched, 1);
    assert_int_equal(vapi_hmac_verify_any(VSIG_MS, "1700000000123", vbody, n, current_first, T0, &matched), WEBHOOK_OK);
    assert_int_equal(matched, 0);
    assert_int_equal(vapi_hmac_verify_any(VSIG_S, "1700000000", vbody, n, neither, T0, &matched),
                     WEBHOOK_BAD_SIGNATURE);
    assert_int_equal(matched, -1);
    assert_int_equal(vapi_hmac_verify_any(VSIG_S, "1700000000", vbody, n, rotated, T0 + 301, &matched),
                     WEBHOOK_STALE_TIMESTAMP);
    assert_int_equal(matched, 1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stripe_providers_vectors_verify),
        cmocka_unit_test(test_stripe_tolerance_boundary_300_passes_301_is_stale),
        cmocka_unit_test(test_stripe_future_timestamp_beyond_tolerance_is_stale),
        cmocka_unit_test(test_stripe_tolerance_zero_disables_the_age_check),
        cmocka_unit_test(test_stripe_v0_only_header_fails),
        cmocka_unit_test(test_stripe_any_matching_v1_among_several_passes),
        cmocka_unit_test(test_stripe_tampered_body_fails),
        cmocka_unit_test(test_stripe_signed_timestamp_cannot_be_changed),
        cmocka_unit_test(test_stripe_wrong_secret_fails),
        cmocka_unit_test(test_stripe_two_secrets_during_rotation),
        cmocka_unit_test(test_stripe_body_is_raw_bytes_not_a_c_string),
        cmocka_unit_test(test_stripe_malformed_headers_fail),
        cmocka_unit_test(test_stripe_overlong_header_is_refused),
        cmocka_unit_test(test_cryptomus_sign_matches_the_providers_vectors),
        cmocka_unit_test(test_cryptomus_sign_streams_bodies_of_every_length),
        cmocka_unit_test(test_cryptomus_providers_webhook_vector_verifies),
        cmocka_unit_test(test_cryptomus_unescaped_slashes_variant_fails),
        cmocka_unit_test(test_cryptomus_tampered_body_or_wrong_key_fails),
        cmocka_unit_test(test_cryptomus_sign_is_compared_exactly),
        cmocka_unit_test(test_cryptomus_trailing_whitespace_is_tolerated),
        cmocka_unit_test(test_cryptomus_sign_not_last_is_checked_on_a_php_re_encoding),
        cmocka_unit_test(test_cryptomus_long_body_verifies),
        cmocka_unit_test(test_cryptomus_malformed_bodies_fail),
        cmocka_unit_test(test_vapi_secret_header_compare),
        cmocka_unit_test(test_vapi_hmac_vectors_in_seconds_and_milliseconds),
        cmocka_unit_test(test_vapi_hmac_window_is_300_seconds_both_ways),
        cmocka_unit_test(test_vapi_hmac_refuses_tampering_and_wrong_secrets),
        cmocka_unit_test(test_stripe_rotation_says_which_secret_matched),
        cmocka_unit_test(test_cryptomus_rotation_says_which_key_matched),
        cmocka_unit_test(test_vapi_secret_rotation_says_which_secret_matched),
        cmocka_unit_test(test_vapi_hmac_rotation_says_which_secret_matched),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
