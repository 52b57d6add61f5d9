// tests/unit/test_sandbox_signing.c — the provider sandbox signs exactly as Stripe and Cryptomus do:
// the fixed vectors of providers.md §1.7 (computed with stripe-node and openssl) and §3.5 (checked
// with Node crypto and coreutils) run through sandbox/sign.c.
//
// sweety-sandbox is a program, not one of the libraries tests/CMakeLists.txt links, so its signing
// code (OpenSSL and jansson only, both linked into every test) is compiled into this test directly.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "sandbox/sign.c"

#define WEBHOOK_VECTOR                                                                                                \
    "{\"type\":\"payment\",\"uuid\":\"62f88b36-a9d5-4fa6-aa5d-4d5d7e9b9f2a\",\"order_id\":\"bk_42\",\"amount\":"      \
    "\"15.00\",\"payment_amount\":\"15.00\",\"merchant_amount\":\"14.70\",\"is_final\":true,\"status\":\"paid\","     \
    "\"currency\":\"USD\",\"additional_data\":\"https:\\/\\/x.example\\/a\",\"sign\":"                                \
    "\"d56b3f51f75c1b6b13801b4daa34211c\"}"

static void assert_stripe_v1(const char *secret, int64_t t, const char *payload, const char *want) {
    char got[SB_SHA256_HEX_SIZE];
    assert_int_equal(sb_stripe_v1(secret, t, payload, strlen(payload), got), 0);
    assert_string_equal(got, want);
}

static void test_stripe_v1_matches_the_providers_vectors(void **state) {
    (void)state;
    assert_stripe_v1("whsec_test_secret", 1700000000,
                     "{\"id\":\"evt_1\",\"object\":\"event\",\"type\":\"checkout.session.completed\"}",
                     "d1e4aa90551919f198c22ba0a9691b35338d4b631d54ce1f1465e93b1d41c430");
    assert_stripe_v1("whsec_test_secret", 1700000000, "{\n  \"id\": \"evt_test_webhook\",\n  \"object\": \"event\"\n}",
                     "4f1cd7feda9826e746b7d482c4badebb657398df1099e1046364f6196a230150");
    assert_stripe_v1("whsec_abc", 1492774577, "{\"id\":\"evt_1\",\"object\":\"event\"}",
                     "61717e8c6c6f2a660ad087fe7252dfa57e460dbe02b686efa3f8f41d209f51d6");
}

static void test_stripe_key_is_the_whole_whsec_string(void **state) {
    (void)state;
    // Keyed with "test_secret" (the prefix stripped) the first vector must not come out.
    char got[SB_SHA256_HEX_SIZE];
    const char *payload = "{\"id\":\"evt_1\",\"object\":\"event\",\"type\":\"checkout.session.completed\"}";
    assert_int_equal(sb_stripe_v1("test_secret", 1700000000, payload, strlen(payload), got), 0);
    assert_string_not_equal(got, "d1e4aa90551919f198c22ba0a9691b35338d4b631d54ce1f1465e93b1d41c430");
}

static void test_stripe_signature_header_is_t_then_v1(void **state) {
    (void)state;
    const char *payload = "{\"id\":\"evt_1\",\"object\":\"event\",\"type\":\"checkout.session.completed\"}";
    char header[160];
    assert_int_equal(sb_stripe_signature_header("whsec_test_secret", 1700000000, payload, strlen(payload), header,
                                                sizeof header),
                     0);
    assert_string_equal(header, "t=1700000000,v1=d1e4aa90551919f198c22ba0a9691b35338d4b631d54ce1f1465e93b1d41c430");
    char tiny[20];
    assert_int_equal(sb_stripe_signature_header("whsec_test_secret", 1700000000, payload, strlen(payload), tiny,
                                                sizeof tiny),
                     -1);
}

static void test_hmac_matches_stripe_node_raw_vectors(void **state) {
    (void)state;
    char got[SB_SHA256_HEX_SIZE];
    assert_int_equal(sb_hmac_sha256_hex("test_secret", 11, "", 0, got), 0);
    assert_string_equal(got, "f7f9bd47fb987337b5796fdc1fdb9ba221d0d5396814bfcaf9521f43fd8927fd");
    const char *obj = "{\"obj1\":\"hello\",\"obj2\":\"world\"}";
    assert_int_equal(sb_hmac_sha256_hex("test_secret", 11, obj, strlen(obj), got), 0);
    assert_string_equal(got, "bebb1a643997f419b315ddba19e6f5411e1ce7f810ba6d3617ce72823092f363");
    const char emoji[] = "\xf0\x9f\x98\x80";   // U+1F600 in UTF-8
    assert_int_equal(sb_hmac_sha256_hex("test_secret", 11, emoji, 4, got), 0);
    assert_string_equal(got, "837da296d05c4fe31f61d5d7ead035099d9585a5bcde87de952012a78f0b0c43");
}

static void test_base64_is_standard_with_padding(void **state) {
    (void)state;
    const char *cases[][2] = {{"", ""}, {"f", "Zg=="}, {"fo", "Zm8="}, {"foo", "Zm9v"}, {"foobar", "Zm9vYmFy"}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *b = sb_base64(cases[i][0], strlen(cases[i][0]));
        assert_non_null(b);
        assert_string_equal(b, cases[i][1]);
        free(b);
    }
}

static void test_cryptomus_request_sign_matches_the_vectors(void **state) {
    (void)state;
    const char *body = "{\"amount\":\"15.00\",\"currency\":\"USD\",\"order_id\":\"bk_42\",\"url_callback\":"
                       "\"https://example.com/cb\",\"lifetime\":3600}";
    char got[SB_MD5_HEX_SIZE];
    assert_int_equal(sb_cryptomus_sign("testPaymentKey123", body, strlen(body), got), 0);
    assert_string_equal(got, "73083c80bb2d6547342f97f6e688cd8d");
    assert_int_equal(sb_cryptomus_sign("testPaymentKey123", "", 0, got), 0);
    assert_string_equal(got, "a78aab9218659693270c548b5738121b");   // md5("testPaymentKey123")
}

// The sandbox's webhook encoder reproduces the §3.5 raw body byte for byte: PHP json_encode
// text ("\/" escaped, no spaces, key order kept) with "sign" appended last.
static void test_cryptomus_webhook_body_matches_the_vector(void **state) {
    (void)state;
    json_t *fields = json_object();
    json_object_set_new(fields, "type", json_string("payment"));
    json_object_set_new(fields, "uuid", json_string("62f88b36-a9d5-4fa6-aa5d-4d5d7e9b9f2a"));
    json_object_set_new(fields, "order_id", json_string("bk_42"));
    json_object_set_new(fields, "amount", json_string("15.00"));
    json_object_set_new(fields, "payment_amount", json_string("15.00"));
    json_object_set_new(fields, "merchant_amount", json_string("14.70"));
    json_object_set_new(fields, "is_final", json_true());
    json_object_set_new(fields, "status", json_string("paid"));
    json_object_set_new(fields, "currency", json_string("USD"));
    json_object_set_new(fields, "additional_data", json_string("https://x.example/a"));
    size_t len = 0;
    char *body = sb_cryptomus_webhook_body(fields, "testPaymentKey123", &len);
    assert_non_null(body);
    assert_string_equal(body, WEBHOOK_VECTOR);
    assert_int_equal(len, strlen(WEBHOOK_VECTOR));
    free(body);
    // A body that already holds "sign" is refused rather than signed twice.
    json_object_set_new(fields, "sign", json_string("x"));
    assert_null(sb_cryptomus_webhook_body(fields, "testPaymentKey123", NULL));
    json_decref(fields);
}

// Verification as a receiver does it (cut ,"sign":"…" from the raw text) agrees with the vector,
// and fails once "\/" is unescaped first (providers.md §3.5).
static void test_cryptomus_webhook_sign_is_over_the_escaped_text(void **state) {
    (void)state;
    const char *raw = WEBHOOK_VECTOR;
    const char *cut = strstr(raw, ",\"sign\":\"");
    assert_non_null(cut);
    char *unsigned_text = NULL;
    assert_true(asprintf(&unsigned_text, "%.*s}", (int)(cut - raw), raw) > 0);
    char got[SB_MD5_HEX_SIZE];
    assert_int_equal(sb_cryptomus_sign("testPaymentKey123", unsigned_text, strlen(unsigned_text), got), 0);
    assert_string_equal(got, "d56b3f51f75c1b6b13801b4daa34211c");
    // unescape "\/" and the signature no longer matches
    char *unescaped = strdup(unsigned_text);
    char *w = unescaped;
    for (const char *r = unsigned_text; *r; r++) {
        if (r[0] == '\\' && r[1] == '/') continue;
        *w++ = *r;
    }
    *w = '\0';
    assert_int_equal(sb_cryptomus_sign("testPaymentKey123", unescaped, strlen(unescaped), got), 0);
    assert_string_not_equal(got, "d56b3f51f75c1b6b13801b4daa34211c");
    free(unescaped);
    free(unsigned_text);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stripe_v1_matches_the_providers_vectors),
        cmocka_unit_test(test_stripe_key_is_the_whole_whsec_string),
        cmocka_unit_test(test_stripe_signature_header_is_t_then_v1),
        cmocka_unit_test(test_hmac_matches_stripe_node_raw_vectors),
        cmocka_unit_test(test_base64_is_standard_with_padding),
        cmocka_unit_test(test_cryptomus_request_sign_matches_the_vectors),
        cmocka_unit_test(test_cryptomus_webhook_body_matches_the_vector),
        cmocka_unit_test(test_cryptomus_webhook_sign_is_over_the_escaped_text),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
