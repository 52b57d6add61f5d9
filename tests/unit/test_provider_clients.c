// tests/unit/test_provider_clients.c — actors/stripe_client.c and actors/cryptomus_client.c:
// the requests they build (exact form and JSON bytes, headers, signature), the answers they read
// (canned JSON as Stripe and Cryptomus document it), and the glue through httpc (a one-shot HTTP
// responder in a thread of the test records the bytes on the wire; a closed port stands for an
// unreachable provider).
//
// Expected values were computed outside our code:
//   form values: python3 -c 'from urllib.parse import quote; print(quote(VALUE, safe=""))'
//     (encodes all but [A-Za-z0-9_.~-], like curl_easy_escape)
//   Cryptomus sign: printf '%s' "$BODY" | base64 -w0 | { read b; printf '%s%s' "$b" testPaymentKey123; } | md5sum
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
// cmocka after the standard headers it needs
#include <cmocka.h>

#include <arpa/inet.h>
#include <curl/curl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "actors/cryptomus_client.h"
#include "actors/httpc.h"
#include "actors/stripe_client.h"
#include "common/util.h"

#define BID "0b7e3a1c-8a51-4c1e-9a57-2f6f5e1c9d3a"
#define KEY "testPaymentKey123"

typedef struct {
    zloop_t *loop;
    httpc_t *http;
    logger_t lg;
    stripe_client_t *stripe;
    cryptomus_client_t *crypto;
} fx_t;

static int setup(void **state) {
    fx_t *fx = calloc(1, sizeof *fx);
    assert_non_null(fx);
    fx->lg = (logger_t){.level = SLOG_INFO, .who = "test"};
    fx->loop = zloop_new();
    fx->http = httpc_new(fx->loop, &fx->lg);
    assert_non_null(fx->http);
    stripe_config_t sc = {.api_base = "https://api.stripe.test/", .secret_key = "sk_test_x",
                          .public_url = "http://127.0.0.1:8080/"};
    fx->stripe = stripe_client_new(fx->http, &sc, &fx->lg);
    assert_non_null(fx->stripe);
    cryptomus_config_t cc = {.api_base = "https://api.cryptomus.test", .merchant = "8b03432e-385b-4670-8d06-064591096795",
                             .payment_key = KEY, .public_url = "https://sweety.example"};
    fx->crypto = cryptomus_client_new(fx->http, &cc, &fx->lg);
    assert_non_null(fx->crypto);
    *state = fx;
    return 0;
}

static int teardown(void **state) {
    fx_t *fx = *state;
    httpc_destroy(&fx->http);
    stripe_client_destroy(&fx->stripe);
    cryptomus_client_destroy(&fx->crypto);
    zloop_destroy(&fx->loop);
    free(fx);
    return 0;
}

static httpc_response_t answer(long status, const char *body) {
    return (httpc_response_t){.status = status, .body = (char *)body, .body_len = strlen(body), .attempts = 1,
                              .stripe_should_retry = -1};
}

// ---- Stripe: requests -------------------------------------------------------------------------

static void test_stripe_checkout_form_is_encoded_like_stripe_node(void **state) {
    fx_t *fx = *state;
    stripe_checkout_params_t p = {.booking_id = BID, .amount_cents = 1500, .currency = "USD",
                                  .product_name = "Standard call \xE2\x80\x93 10 min, Ann's (VIP)!*~ \xF0\x9F\x93\x9E",
                                  .customer_email = "ann+test@example.com", .now_s = 1700000000};
    httpc_prepared_t r;
    assert_int_equal(stripe_prepare_checkout(fx->stripe, &p, &r), 0);
    assert_string_equal(r.method, "POST");
    assert_string_equal(r.url, "https://api.stripe.test/v1/checkout/sessions");
    assert_string_equal(
        r.body,
        "mode=payment&line_items[0][price_data][currency]=usd&line_items[0][price_data][unit_amount]=1500"
        "&line_items[0][price_data][product_data][name]=Standard%20call%20%E2%80%93%2010%20min%2C%20Ann%27s%20"
        "%28VIP%29%21%2A~%20%F0%9F%93%9E&line_items[0][quantity]=1"
        "&success_url=http%3A%2F%2F127.0.0.1%3A8080%2Fbooking-confirmation%3Fbooking%3D" BID
        "&cancel_url=http%3A%2F%2F127.0.0.1%3A8080%2F&client_reference_id=" BID "&metadata[booking_id]=" BID
        "&payment_intent_data[metadata][booking_id]=" BID "&customer_email=ann%2Btest%40example.com"
        "&expires_at=1700001860");
    assert_int_equal(r.body_len, strlen(r.body));
    assert_string_equal(httpc_prepared_header(&r, "Authorization"), "Bearer sk_test_x");
    assert_string_equal(httpc_prepared_header(&r, "Stripe-Version"), STRIPE_API_VERSION);
    assert_string_equal(httpc_prepared_header(&r, "Idempotency-Key"), "checkout-" BID);
    assert_string_equal(httpc_prepared_header(&r, "content-type"), "application/x-www-form-urlencoded");
    assert_true(r.retryable);
    assert_string_equal(r.log_name, "stripe.checkout_create");
    httpc_prepared_clear(&r);
}

static void test_stripe_checkout_without_email_leaves_the_field_out(void **state) {
    fx_t *fx = *state;
    stripe_checkout_params_t p = {.booking_id = "bk_42", .amount_cents = 900, .currency = "eur",
                                  .product_name = "Free", .customer_email = "", .now_s = 1};
    httpc_prepared_t r;
    assert_int_equal(stripe_prepare_checkout(fx->stripe, &p, &r), 0);
    assert_null(strstr(r.body, "customer_email"));
    assert_non_null(strstr(r.body, "&line_items[0][price_data][currency]=eur&"));
    assert_non_null(strstr(r.body, "&expires_at=1861"));
    httpc_prepared_clear(&r);
    // the clock: now + 31 minutes when now_s is 0
    p.now_s = 0;
    int64_t before = (int64_t)time(NULL);
    assert_int_equal(stripe_prepare_checkout(fx->stripe, &p, &r), 0);
    const char *e = strstr(r.body, "expires_at=");
    assert_non_null(e);
    int64_t at = strtoll(e + 11, NULL, 10);
    assert_true(at >= before + 1860 && at <= (int64_t)time(NULL) + 1860);
    httpc_prepared_clear(&r);
}

static void test_stripe_checkout_refuses_bad_parameters(void **state) {
    fx_t *fx = *state;
    httpc_prepared_t r;
    const char *bad_ids[] = {"", "bk 1", "a/b", "bk?x=1", "0123456789012345678901234567890123456789012345678901234567890123X"};
    for (size_t i = 0; i < sizeof bad_ids / sizeof bad_ids[0]; i++) {
        stripe_checkout_params_t p = {.booking_id = bad_ids[i], .amount_cents = 1, .currency = "usd", .product_name = "x"};
        assert_int_equal(stripe_prepare_checkout(fx->stripe, &p, &r), -1);
    }
    stripe_checkout_params_t p = {.booking_id = "bk", .amount_cents = 0, .currency = "usd", .product_name = "x"};
    assert_int_equal(stripe_prepare_checkout(fx->stripe, &p, &r), -1);
    p.amount_cents = 1;
    p.currency = "us";
    assert_int_equal(stripe_prepare_checkout(fx->stripe, &p, &r), -1);
    p.currency = "u$d";
    assert_int_equal(stripe_prepare_checkout(fx->stripe, &p, &r), -1);
    p.currency = "usd";
    p.product_name = "";
    assert_int_equal(stripe_prepare_checkout(fx->stripe, &p, &r), -1);
    assert_null(r.url);   // left cleared
}

static void test_stripe_retrieve_expire_and_refund_requests(void **state) {
    fx_t *fx = *state;
    httpc_prepared_t r;
    assert_int_equal(stripe_prepare_retrieve(fx->stripe, "cs_test_a1B2", true, &r), 0);
    assert_string_equal(r.method, "GET");
    assert_string_equal(r.url, "https://api.stripe.test/v1/checkout/sessions/cs_test_a1B2?expand%5B%5D=payment_intent");
    assert_null(r.body);
    assert_null(httpc_prepared_header(&r, "Idempotency-Key"));
    assert_string_equal(httpc_prepared_header(&r, "Authorization"), "Bearer sk_test_x");
    httpc_prepared_clear(&r);
    assert_int_equal(stripe_prepare_retrieve(fx->stripe, "cs_test_a1B2", false, &r), 0);
    assert_string_equal(r.url, "https://api.stripe.test/v1/checkout/sessions/cs_test_a1B2");
    httpc_prepared_clear(&r);
    assert_int_equal(stripe_prepare_retrieve(fx->stripe, "cs_test/../../v1/refunds", false, &r), -1);
    assert_int_equal(stripe_prepare_retrieve(fx->stripe, "", false, &r), -1);

    assert_int_equal(stripe_prepare_expire(fx->stripe, "cs_test_a1B2", &r), 0);
    assert_string_equal(r.method, "POST");
    assert_string_equal(r.url, "https://api.stripe.test/v1/checkout/sessions/cs_test_a1B2/expire");
    assert_string_equal(r.body, "");
    assert_int_equal(r.body_len, 0);
    assert_string_equal(httpc_prepared_header(&r, "Idempotency-Key"), "expire-cs_test_a1B2");
    httpc_prepared_clear(&r);

    assert_int_equal(stripe_prepare_refund(fx->stripe, "pi_3OqXyZ", BID, &r), 0);
    assert_string_equal(r.url, "https://api.stripe.test/v1/refunds");
    assert_string_equal(r.body, "payment_intent=pi_3OqXyZ&reason=requested_by_customer&metadata[booking_id]=" BID);
    assert_string_equal(httpc_prepared_header(&r, "Idempotency-Key"), "refund-" BID);
    assert_string_equal(httpc_prepared_header(&r, "Stripe-Version"), STRIPE_API_VERSION);
    assert_true(r.retryable);
    httpc_prepared_clear(&r);
    assert_int_equal(stripe_prepare_refund(fx->stripe, "", BID, &r), -1);
    assert_int_equal(stripe_prepare_refund(fx->stripe, "pi_1&amount=1", BID, &r), -1);
}

// ---- Stripe: answers --------------------------------------------------------------------------

static const char session_open[] =
    "{\"id\":\"cs_test_a1B2\",\"object\":\"checkout.session\",\"amount_total\":1500,\"client_reference_id\":\"" BID
    "\",\"currency\":\"usd\",\"expires_at\":1700001860,\"livemode\":false,\"metadata\":{\"booking_id\":\"" BID
    "\"},\"mode\":\"payment\",\"payment_intent\":null,\"payment_status\":\"unpaid\",\"status\":\"open\","
    "\"url\":\"https://checkout.stripe.com/c/pay/cs_test_a1B2#fidkdWxOYHwnPyd1blpxYHZxWjA0\"}";

static void test_stripe_parses_a_new_session(void **state) {
    (void)state;
    httpc_response_t resp = answer(200, session_open);
    snprintf(resp.request_id, sizeof resp.request_id, "req_abc");
    stripe_outcome_t o;
    stripe_session_t s;
    stripe_parse_session(&resp, &o, &s);
    assert_int_equal(o.kind, PROVIDER_OK);
    assert_int_equal(o.http_status, 200);
    assert_string_equal(o.request_id, "req_abc");
    assert_string_equal(s.id, "cs_test_a1B2");
    assert_string_equal(s.url, "https://checkout.stripe.com/c/pay/cs_test_a1B2#fidkdWxOYHwnPyd1blpxYHZxWjA0");
    assert_int_equal(s.expires_at, 1700001860);
    assert_string_equal(s.status, "open");
    assert_string_equal(s.payment_status, "unpaid");
    assert_string_equal(s.payment_intent, "");
    assert_string_equal(s.client_reference_id, BID);
    assert_int_equal(s.amount_total, 1500);
    assert_string_equal(s.currency, "usd");
}

static void test_stripe_parses_payment_intent_as_id_or_expanded_object(void **state) {
    (void)state;
    stripe_outcome_t o;
    stripe_session_t s;
    httpc_response_t resp = answer(200, "{\"id\":\"cs_1\",\"object\":\"checkout.session\",\"status\":\"complete\","
                                        "\"payment_status\":\"paid\",\"payment_intent\":\"pi_9\",\"url\":null}");
    stripe_parse_session(&resp, &o, &s);
    assert_int_equal(o.kind, PROVIDER_OK);
    assert_string_equal(s.payment_intent, "pi_9");
    assert_string_equal(s.url, "");
    assert_int_equal(s.expires_at, -1);
    assert_int_equal(s.amount_total, -1);
    resp = answer(200, "{\"id\":\"cs_1\",\"object\":\"checkout.session\",\"status\":\"complete\",\"payment_status\":"
                       "\"paid\",\"payment_intent\":{\"id\":\"pi_9\",\"object\":\"payment_intent\",\"status\":\"succeeded\","
                       "\"metadata\":{\"booking_id\":\"bk\"}}}");
    stripe_parse_session(&resp, &o, &s);
    assert_int_equal(o.kind, PROVIDER_OK);
    assert_string_equal(s.payment_intent, "pi_9");
    assert_string_equal(s.payment_intent_status, "succeeded");
    assert_string_equal(s.payment_status, "paid");
}

static void test_stripe_error_answers_are_classified(void **state) {
    (void)state;
    stripe_outcome_t o;
    stripe_session_t s;
    httpc_response_t resp = answer(400, "{\"error\":{\"code\":\"parameter_unknown\",\"doc_url\":\"https://stripe.com/docs/error-codes/parameter-unknown\","
                                        "\"message\":\"Received unknown parameter: foo\",\"param\":\"foo\",\"type\":\"invalid_request_error\"}}");
    stripe_parse_session(&resp, &o, &s);
    assert_int_equal(o.kind, PROVIDER_REJECTED);
    assert_string_equal(o.error_type, "invalid_request_error");
    assert_string_equal(o.error_code, "parameter_unknown");
    assert_string_equal(o.error_param, "foo");
    assert_string_equal(o.error_message, "Received unknown parameter: foo");
    assert_false(o.not_found);
    assert_string_equal(s.id, "");

    resp = answer(404, "{\"error\":{\"code\":\"resource_missing\",\"message\":\"No such checkout.session: 'cs_x'\","
                       "\"param\":\"session\",\"type\":\"invalid_request_error\"}}");
    stripe_parse_session(&resp, &o, &s);
    assert_int_equal(o.kind, PROVIDER_REJECTED);
    assert_true(o.not_found);

    resp = answer(400, "{\"error\":{\"message\":\"Keys for idempotent requests can only be used with the same parameters\","
                       "\"type\":\"idempotency_error\"}}");
    stripe_parse_session(&resp, &o, &s);
    assert_int_equal(o.kind, PROVIDER_REJECTED);
    assert_string_equal(o.error_type, "idempotency_error");
    assert_string_equal(o.error_code, "");

    long unavailable[] = {409, 429, 500, 502, 503};
    for (size_t i = 0; i < sizeof unavailable / sizeof unavailable[0]; i++) {
        resp = answer(unavailable[i], "{\"error\":{\"type\":\"api_error\",\"message\":\"x\"}}");
        stripe_parse_session(&resp, &o, &s);
        assert_int_equal(o.kind, PROVIDER_UNAVAILABLE);
        assert_string_equal(o.error_type, "api_error");
    }
    resp = answer(0, "");
    resp.transport_error = CURLE_COULDNT_CONNECT;
    resp.attempts = 3;
    stripe_parse_session(&resp, &o, &s);
    assert_int_equal(o.kind, PROVIDER_UNAVAILABLE);
    assert_int_equal(o.attempts, 3);
    resp.transport_error = CURLE_FILESIZE_EXCEEDED;
    stripe_parse_session(&resp, &o, &s);
    assert_int_equal(o.kind, PROVIDER_BAD_RESPONSE);

    // a 200 that is not a session
    const char *bad[] = {"not json", "[]", "{\"object\":\"checkout.session\"}", "{\"id\":\"re_1\",\"object\":\"refund\"}",
                         "{\"id\":42,\"object\":\"checkout.session\"}",
                         "{\"id\":\"cs_1\",\"object\":\"checkout.session\",\"expires_at\":\"soon\"}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        resp = answer(200, bad[i]);
        stripe_parse_session(&resp, &o, &s);
        assert_int_equal(o.kind, PROVIDER_BAD_RESPONSE);
    }
}

static void test_stripe_parses_a_refund(void **state) {
    (void)state;
    stripe_outcome_t o;
    stripe_refund_t f;
    httpc_response_t resp = answer(200, "{\"id\":\"re_3Oq\",\"object\":\"refund\",\"amount\":1500,\"charge\":\"ch_1\","
                                        "\"currency\":\"usd\",\"metadata\":{\"booking_id\":\"" BID "\"},"
                                        "\"payment_intent\":\"pi_3OqXyZ\",\"reason\":\"requested_by_customer\","
                                        "\"status\":\"pending\"}");
    stripe_parse_refund(&resp, &o, &f);
    assert_int_equal(o.kind, PROVIDER_OK);
    assert_string_equal(f.id, "re_3Oq");
    assert_string_equal(f.status, "pending");
    assert_int_equal(f.amount, 1500);
    assert_string_equal(f.payment_intent, "pi_3OqXyZ");
    resp = answer(200, "{\"id\":\"re_3Oq\",\"object\":\"refund\"}");   // no status
    stripe_parse_refund(&resp, &o, &f);
    assert_int_equal(o.kind, PROVIDER_BAD_RESPONSE);
    resp = answer(400, "{\"error\":{\"code\":\"charge_already_refunded\",\"type\":\"invalid_request_error\","
                       "\"message\":\"Charge ch_1 has already been refunded.\"}}");
    stripe_parse_refund(&resp, &o, &f);
    assert_int_equal(o.kind, PROVIDER_REJECTED);
    assert_string_equal(o.error_code, "charge_already_refunded");
}

// ---- Cryptomus: requests ----------------------------------------------------------------------

#define INVOICE_BODY                                                                                                \
    "{\"amount\":\"15.00\",\"currency\":\"USD\",\"order_id\":\"" BID "\",\"url_callback\":\"https:\\/\\/sweety."   \
    "example\\/webhooks\\/cryptomus\",\"url_return\":\"https:\\/\\/sweety.example\\/\",\"url_success\":\"https:"   \
    "\\/\\/sweety.example\\/booking-confirmation?booking=" BID "\",\"lifetime\":3600,\"additional_data\":\"" BID "\"}"
#define INVOICE_SIGN "74212861a557fd54847dd5cdfd493dd2"
#define INFO_BODY "{\"order_id\":\"" BID "\"}"
#define INFO_SIGN "114822f1acb01acc77c908152b667256"

static void test_cryptomus_invoice_body_is_php_json_and_signed(void **state) {
    fx_t *fx = *state;
    cryptomus_invoice_params_t p = {.booking_id = BID, .amount_cents = 1500, .currency = "usd"};
    httpc_prepared_t r;
    assert_int_equal(cryptomus_prepare_invoice(fx->crypto, &p, &r), 0);
    assert_string_equal(r.method, "POST");
    assert_string_equal(r.url, "https://api.cryptomus.test/v1/payment");
    assert_string_equal(r.body, INVOICE_BODY);
    assert_int_equal(r.body_len, strlen(INVOICE_BODY));
    assert_string_equal(httpc_prepared_header(&r, "sign"), INVOICE_SIGN);
    assert_string_equal(httpc_prepared_header(&r, "merchant"), "8b03432e-385b-4670-8d06-064591096795");
    assert_string_equal(httpc_prepared_header(&r, "Content-Type"), "application/json");
    assert_true(r.retryable);
    httpc_prepared_clear(&r);
}

static void test_cryptomus_invoice_other_amount_currency_and_lifetime(void **state) {
    fx_t *fx = *state;
    cryptomus_config_t cc = {.api_base = "https://api.cryptomus.test", .merchant = "m", .payment_key = KEY,
                             .public_url = "http://127.0.0.1:8080"};
    cryptomus_client_t *c = cryptomus_client_new(fx->http, &cc, &fx->lg);
    assert_non_null(c);
    cryptomus_invoice_params_t p = {.booking_id = "bk_42", .amount_cents = 123405, .currency = "usdt", .lifetime_s = 900};
    httpc_prepared_t r;
    assert_int_equal(cryptomus_prepare_invoice(c, &p, &r), 0);
    assert_string_equal(r.body, "{\"amount\":\"1234.05\",\"currency\":\"USDT\",\"order_id\":\"bk_42\",\"url_callback\":"
                                "\"http:\\/\\/127.0.0.1:8080\\/webhooks\\/cryptomus\",\"url_return\":\"http:\\/\\/127.0.0.1:"
                                "8080\\/\",\"url_success\":\"http:\\/\\/127.0.0.1:8080\\/booking-confirmation?booking=bk_42\","
                                "\"lifetime\":900,\"additional_data\":\"bk_42\"}");
    assert_string_equal(httpc_prepared_header(&r, "sign"), "044aa390986f7d2b81f9ddb71429bbe7");
    httpc_prepared_clear(&r);
    p.lifetime_s = 299;
    assert_int_equal(cryptomus_prepare_invoice(c, &p, &r), -1);
    p.lifetime_s = 0;
    p.booking_id = "bk.42";   // not alpha_dash
    assert_int_equal(cryptomus_prepare_invoice(c, &p, &r), -1);
    p.booking_id = "bk_42";
    p.amount_cents = -1;
    assert_int_equal(cryptomus_prepare_invoice(c, &p, &r), -1);
    cryptomus_client_destroy(&c);
    assert_null(c);
}

static void test_cryptomus_payment_info_request(void **state) {
    fx_t *fx = *state;
    httpc_prepared_t r;
    assert_int_equal(cryptomus_prepare_info(fx->crypto, BID, &r), 0);
    assert_string_equal(r.url, "https://api.cryptomus.test/v1/payment/info");
    assert_string_equal(r.body, INFO_BODY);
    assert_string_equal(httpc_prepared_header(&r, "sign"), INFO_SIGN);
    httpc_prepared_clear(&r);
    assert_int_equal(cryptomus_prepare_info(fx->crypto, "a\"b", &r), -1);
}

static void test_cryptomus_amounts_and_php_escaping(void **state) {
    (void)state;
    char buf[32];
    struct {
        int64_t cents;
        const char *text;
    } cases[] = {{1500, "15.00"}, {5, "0.05"}, {0, "0.00"}, {123456, "1234.56"}, {100, "1.00"}, {99, "0.99"}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        assert_int_equal(cryptomus_amount_from_cents(cases[i].cents, buf, sizeof buf), 0);
        assert_string_equal(buf, cases[i].text);
    }
    assert_int_equal(cryptomus_amount_from_cents(-5, buf, sizeof buf), -1);
    assert_int_equal(cryptomus_amount_from_cents(1500, buf, 5), -1);

    // PHP: json_encode(["a" => "é/ü 📞", "b" => "back\\slash \"q\" \n", "n" => 3600])
    json_t *v = json_pack("{s:s,s:s,s:i}", "a", "\xC3\xA9/\xC3\xBC \xF0\x9F\x93\x9E", "b", "back\\slash \"q\" \n", "n", 3600);
    char *s = cryptomus_json_encode(v);
    assert_string_equal(s, "{\"a\":\"\\u00e9\\/\\u00fc \\ud83d\\udcde\",\"b\":\"back\\\\slash \\\"q\\\" \\n\",\"n\":3600}");
    free(s);
    json_decref(v);
    v = json_pack("{s:s}", "u", "\\uABCD");   // a literal backslash-u is not an escape to lowercase
    s = cryptomus_json_encode(v);
    assert_string_equal(s, "{\"u\":\"\\\\uABCD\"}");
    free(s);
    json_decref(v);
}

// ---- Cryptomus: answers -----------------------------------------------------------------------

static void test_cryptomus_parses_an_invoice(void **state) {
    (void)state;
    httpc_response_t resp = answer(
        200, "{\"state\":0,\"result\":{\"uuid\":\"26109ba0-b05b-4ee0-93d1-fd62c822ce95\",\"order_id\":\"" BID "\","
             "\"amount\":\"15.00\",\"payment_amount\":null,\"payer_amount\":null,\"discount_percent\":null,"
             "\"discount\":\"0.00000000\",\"payer_currency\":null,\"currency\":\"USD\",\"merchant_amount\":null,"
             "\"network\":null,\"address\":null,\"from\":null,\"txid\":null,\"payment_status\":\"check\","
             "\"url\":\"https:\\/\\/pay.cryptomus.com\\/pay\\/26109ba0-b05b-4ee0-93d1-fd62c822ce95\","
             "\"expired_at\":1689098133,\"status\":\"check\",\"is_final\":false,\"additional_data\":\"" BID "\","
             "\"created_at\":\"2023-07-11T20:23:52+03:00\",\"updated_at\":\"2023-07-11T21:23:52+03:00\"}}");
    cryptomus_outcome_t o;
    cryptomus_payment_t p;
    cryptomus_parse_payment(&resp, &o, &p);
    assert_int_equal(o.kind, PROVIDER_OK);
    assert_int_equal(o.state, 0);
    assert_string_equal(p.uuid, "26109ba0-b05b-4ee0-93d1-fd62c822ce95");
    assert_string_equal(p.order_id, BID);
    assert_string_equal(p.amount, "15.00");
    assert_string_equal(p.currency, "USD");
    assert_string_equal(p.payer_currency, "");
    assert_string_equal(p.url, "https://pay.cryptomus.com/pay/26109ba0-b05b-4ee0-93d1-fd62c822ce95");
    assert_int_equal(p.expired_at, 1689098133);
    assert_string_equal(p.status, "check");
    assert_false(p.is_final);
    assert_string_equal(p.additional_data, BID);
}

static void test_cryptomus_parses_a_final_payment_info(void **state) {
    (void)state;
    httpc_response_t resp = answer(200, "{\"state\":0,\"result\":{\"uuid\":\"u-1\",\"order_id\":\"bk_42\",\"amount\":15,"
                                        "\"payment_amount\":\"15.00\",\"payer_currency\":\"USDT\",\"currency\":\"USD\","
                                        "\"payment_status\":\"paid\",\"is_final\":true,\"expired_at\":\"1689098133\"}}");
    cryptomus_outcome_t o;
    cryptomus_payment_t p;
    cryptomus_parse_payment(&resp, &o, &p);
    assert_int_equal(o.kind, PROVIDER_OK);
    assert_string_equal(p.status, "paid");   // from payment_status when status is absent
    assert_true(p.is_final);
    assert_string_equal(p.amount, "15");
    assert_string_equal(p.payer_currency, "USDT");
    assert_int_equal(p.expired_at, 1689098133);
}

static void test_cryptomus_refusals_are_classified(void **state) {
    (void)state;
    cryptomus_outcome_t o;
    cryptomus_payment_t p;
    httpc_response_t resp = answer(422, "{\"state\":1,\"errors\":{\"amount\":[\"validation.required\"],"
                                        "\"order_id\":[\"validation.alpha_dash\",\"validation.max.string\"]}}");
    cryptomus_parse_payment(&resp, &o, &p);
    assert_int_equal(o.kind, PROVIDER_REJECTED);
    assert_int_equal(o.state, 1);
    assert_string_equal(o.errors, "amount:validation.required,order_id:validation.alpha_dash,order_id:validation.max.string");
    assert_false(o.not_found);

    resp = answer(404, "{\"state\":1,\"message\":\"Payment not found\"}");
    cryptomus_parse_payment(&resp, &o, &p);
    assert_int_equal(o.kind, PROVIDER_REJECTED);
    assert_true(o.not_found);
    assert_string_equal(o.message, "Payment not found");

    resp = answer(200, "{\"state\":1,\"message\":\"Payment not found\"}");   // same, with a 200
    cryptomus_parse_payment(&resp, &o, &p);
    assert_int_equal(o.kind, PROVIDER_REJECTED);
    assert_true(o.not_found);

    resp = answer(401, "{\"state\":1,\"message\":\"Invalid Sign\"}");
    cryptomus_parse_payment(&resp, &o, &p);
    assert_int_equal(o.kind, PROVIDER_REJECTED);
    assert_false(o.not_found);

    resp = answer(503, "<html>busy</html>");
    cryptomus_parse_payment(&resp, &o, &p);
    assert_int_equal(o.kind, PROVIDER_UNAVAILABLE);
    assert_int_equal(o.state, -1);

    resp = answer(0, "");
    resp.transport_error = CURLE_OPERATION_TIMEDOUT;
    cryptomus_parse_payment(&resp, &o, &p);
    assert_int_equal(o.kind, PROVIDER_UNAVAILABLE);

    const char *bad[] = {"garbage", "{\"state\":0}", "{\"state\":0,\"result\":[]}", "{\"state\":0,\"result\":{\"url\":\"x\"}}",
                         "{\"result\":{\"uuid\":\"u\"}}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        resp = answer(200, bad[i]);
        cryptomus_parse_payment(&resp, &o, &p);
        assert_int_equal(o.kind, PROVIDER_BAD_RESPONSE);
        assert_string_equal(p.uuid, "");
    }
}

// ---- through httpc ----------------------------------------------------------------------------

// Accepts one connection, records the request (head and body), sends `reply`, closes.
typedef struct {
    int lfd, port;
    pthread_t thread;
    const char *reply;
    char request[16384];
    size_t len;
} oneshot_t;

static void *oneshot_run(void *arg) {
    oneshot_t *o = arg;
    struct pollfd p = {.fd = o->lfd, .events = POLLIN};
    if (poll(&p, 1, 10000) <= 0) return NULL;
    int fd = accept(o->lfd, NULL, NULL);
    if (fd < 0) return NULL;
    size_t want = SIZE_MAX;
    while (o->len < want && o->len < sizeof o->request - 1) {
        struct pollfd q = {.fd = fd, .events = POLLIN};
        if (poll(&q, 1, 5000) <= 0) break;
        ssize_t n = recv(fd, o->request + o->len, sizeof o->request - 1 - o->len, 0);
        if (n <= 0) break;
        o->len += (size_t)n;
        o->request[o->len] = '\0';
        char *end = strstr(o->request, "\r\n\r\n");
        if (end && want == SIZE_MAX) {
            const char *cl = strcasestr(o->request, "\r\nContent-Length:");
            want = (size_t)(end + 4 - o->request) + (cl && cl < end ? strtoul(cl + 17, NULL, 10) : 0);
        }
    }
    send(fd, o->reply, strlen(o->reply), MSG_NOSIGNAL);
    shutdown(fd, SHUT_WR);
    close(fd);
    return NULL;
}

static void oneshot_start(oneshot_t *o, const char *reply) {
    memset(o, 0, sizeof *o);
    o->reply = reply;
    o->lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    assert_int_equal(bind(o->lfd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(o->lfd, 4), 0);
    assert_int_equal(getsockname(o->lfd, (struct sockaddr *)&a, &al), 0);
    o->port = ntohs(a.sin_port);
    assert_int_equal(pthread_create(&o->thread, NULL, oneshot_run, o), 0);
}

static void oneshot_stop(oneshot_t *o) {
    pthread_join(o->thread, NULL);
    close(o->lfd);
}

typedef struct {
    int calls;
    stripe_outcome_t so;
    stripe_session_t session;
    cryptomus_outcome_t co;
    cryptomus_payment_t payment;
    bool got_object;
} got_t;

static void on_session(void *arg, const stripe_outcome_t *o, const stripe_session_t *s) {
    got_t *g = arg;
    g->calls++;
    g->so = *o;
    g->got_object = s != NULL;
    if (s) g->session = *s;
}

static void on_refund(void *arg, const stripe_outcome_t *o, const stripe_refund_t *f) {
    got_t *g = arg;
    g->calls++;
    g->so = *o;
    g->got_object = f != NULL;
}

static void on_payment(void *arg, const cryptomus_outcome_t *o, const cryptomus_payment_t *p) {
    got_t *g = arg;
    g->calls++;
    g->co = *o;
    g->got_object = p != NULL;
    if (p) g->payment = *p;
}

static int stop_when_called(zloop_t *loop, int timer_id, void *arg) {
    const got_t *g = arg;
    return g->calls > 0 ? -1 : 0;
}

static void run_until_called(zloop_t *loop, got_t *g) {
    int a = zloop_timer(loop, 5, 0, stop_when_called, g);
    int b = zloop_timer(loop, 10000, 1, stop_when_called, &(got_t){.calls = 1});   // deadline
    zloop_start(loop);
    zloop_timer_end(loop, a);
    zloop_timer_end(loop, b);
}

static void test_stripe_checkout_through_httpc_sends_what_was_prepared(void **state) {
    fx_t *fx = *state;
    char reply[2048];
    snprintf(reply, sizeof reply,
             "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nRequest-Id: req_live1\r\nContent-Length: %zu\r\n"
             "Connection: close\r\n\r\n%s",
             strlen(session_open), session_open);
    oneshot_t srv;
    oneshot_start(&srv, reply);
    char base[64];
    snprintf(base, sizeof base, "http://127.0.0.1:%d", srv.port);
    stripe_config_t sc = {.api_base = base, .secret_key = "sk_test_wire", .public_url = "http://127.0.0.1:8080"};
    stripe_client_t *c = stripe_client_new(fx->http, &sc, &fx->lg);
    stripe_checkout_params_t p = {.booking_id = BID, .amount_cents = 1500, .currency = "usd",
                                  .product_name = "Standard call", .now_s = 1700000000};
    got_t g = {0};
    assert_int_equal(stripe_checkout_create(c, &p, on_session, &g), 0);
    stripe_client_destroy(&c);   // calls in flight keep what they need
    run_until_called(fx->loop, &g);
    oneshot_stop(&srv);
    assert_int_equal(g.calls, 1);
    assert_int_equal(g.so.kind, PROVIDER_OK);
    assert_true(g.got_object);
    assert_string_equal(g.so.request_id, "req_live1");
    assert_string_equal(g.session.id, "cs_test_a1B2");
    assert_non_null(strstr(srv.request, "POST /v1/checkout/sessions HTTP/1.1\r\n"));
    assert_non_null(strstr(srv.request, "\r\nAuthorization: Bearer sk_test_wire\r\n"));
    assert_non_null(strstr(srv.request, "\r\nStripe-Version: " STRIPE_API_VERSION "\r\n"));
    assert_non_null(strstr(srv.request, "\r\nIdempotency-Key: checkout-" BID "\r\n"));
    assert_non_null(strstr(srv.request, "\r\nContent-Type: application/x-www-form-urlencoded\r\n"));
    assert_non_null(strstr(srv.request, "\r\n\r\nmode=payment&line_items[0][price_data][currency]=usd&"));
    assert_non_null(strstr(srv.request, "&expires_at=1700001860"));
}

static void test_cryptomus_invoice_through_httpc_sends_the_signed_bytes(void **state) {
    fx_t *fx = *state;
    const char *body = "{\"state\":0,\"result\":{\"uuid\":\"u-1\",\"order_id\":\"" BID "\",\"amount\":\"15.00\","
                       "\"currency\":\"USD\",\"url\":\"https:\\/\\/pay.cryptomus.com\\/pay\\/u-1\",\"expired_at\":1700003600,"
                       "\"status\":\"check\",\"is_final\":false}}";
    char reply[2048];
    snprintf(reply, sizeof reply, "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n%s", strlen(body),
             body);
    oneshot_t srv;
    oneshot_start(&srv, reply);
    char base[64];
    snprintf(base, sizeof base, "http://127.0.0.1:%d/", srv.port);
    cryptomus_config_t cc = {.api_base = base, .merchant = "8b03432e-385b-4670-8d06-064591096795", .payment_key = KEY,
                             .public_url = "https://sweety.example/"};
    cryptomus_client_t *c = cryptomus_client_new(fx->http, &cc, &fx->lg);
    cryptomus_invoice_params_t p = {.booking_id = BID, .amount_cents = 1500, .currency = "USD"};
    got_t g = {0};
    assert_int_equal(cryptomus_invoice_create(c, &p, on_payment, &g), 0);
    run_until_called(fx->loop, &g);
    oneshot_stop(&srv);
    cryptomus_client_destroy(&c);
    assert_int_equal(g.calls, 1);
    assert_int_equal(g.co.kind, PROVIDER_OK);
    assert_string_equal(g.payment.uuid, "u-1");
    assert_string_equal(g.payment.url, "https://pay.cryptomus.com/pay/u-1");
    assert_int_equal(g.payment.expired_at, 1700003600);
    assert_non_null(strstr(srv.request, "POST /v1/payment HTTP/1.1\r\n"));
    assert_non_null(strstr(srv.request, "\r\nmerchant: 8b03432e-385b-4670-8d06-064591096795\r\n"));
    assert_non_null(strstr(srv.request, "\r\nsign: " INVOICE_SIGN "\r\n"));
    assert_non_null(strstr(srv.request, "\r\nContent-Type: application/json\r\n"));
    const char *sent = strstr(srv.request, "\r\n\r\n");
    assert_non_null(sent);
    assert_string_equal(sent + 4, INVOICE_BODY);
}

static void test_unreachable_provider_is_unavailable_after_every_attempt(void **state) {
    fx_t *fx = *state;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &al), 0);
    close(fd);
    char base[64];
    snprintf(base, sizeof base, "http://127.0.0.1:%d", ntohs(a.sin_port));
    httpc_set_backoff(fx->http, 10, 50);
    stripe_config_t sc = {.api_base = base, .secret_key = "sk_test_x", .public_url = "http://127.0.0.1:8080",
                          .max_attempts = 2};
    stripe_client_t *c = stripe_client_new(fx->http, &sc, &fx->lg);
    got_t g = {0};
    assert_int_equal(stripe_refund_create(c, "pi 1", BID, on_refund, &g), -1);   // refused at once, no call
    assert_int_equal(stripe_session_retrieve(c, "cs_1", true, on_session, &g), 0);
    run_until_called(fx->loop, &g);
    stripe_client_destroy(&c);
    assert_int_equal(g.calls, 1);
    assert_int_equal(g.so.kind, PROVIDER_UNAVAILABLE);
    assert_int_equal(g.so.attempts, 2);
    assert_int_equal(g.so.http_status, 0);
    assert_false(g.got_object);
}

static void test_calls_cancelled_by_httpc_destroy_end_unavailable(void **state) {
    fx_t *fx = *state;
    got_t g1 = {0}, g2 = {0};
    stripe_checkout_params_t p = {.booking_id = BID, .amount_cents = 1500, .currency = "usd", .product_name = "x"};
    assert_int_equal(stripe_checkout_create(fx->stripe, &p, on_session, &g1), 0);
    assert_int_equal(cryptomus_payment_info(fx->crypto, BID, on_payment, &g2), 0);
    assert_int_equal(httpc_in_flight(fx->http), 2);
    httpc_destroy(&fx->http);
    assert_int_equal(g1.calls, 1);
    assert_int_equal(g1.so.kind, PROVIDER_UNAVAILABLE);
    assert_int_equal(g2.calls, 1);
    assert_int_equal(g2.co.kind, PROVIDER_UNAVAILABLE);
}

int main(void) {
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_stripe_checkout_form_is_encoded_like_stripe_node, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stripe_checkout_without_email_leaves_the_field_out, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stripe_checkout_refuses_bad_parameters, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stripe_retrieve_expire_and_refund_requests, setup, teardown),
        cmocka_unit_test(test_stripe_parses_a_new_session),
        cmocka_unit_test(test_stripe_parses_payment_intent_as_id_or_expanded_object),
        cmocka_unit_test(test_stripe_error_answers_are_classified),
        cmocka_unit_test(test_stripe_parses_a_refund),
        cmocka_unit_test_setup_teardown(test_cryptomus_invoice_body_is_php_json_and_signed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cryptomus_invoice_other_amount_currency_and_lifetime, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cryptomus_payment_info_request, setup, teardown),
        cmocka_unit_test(test_cryptomus_amounts_and_php_escaping),
        cmocka_unit_test(test_cryptomus_parses_an_invoice),
        cmocka_unit_test(test_cryptomus_parses_a_final_payment_info),
        cmocka_unit_test(test_cryptomus_refusals_are_classified),
        cmocka_unit_test_setup_teardown(test_stripe_checkout_through_httpc_sends_what_was_prepared, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cryptomus_invoice_through_httpc_sends_the_signed_bytes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unreachable_provider_is_unavailable_after_every_attempt, setup, teardown),
        cmocka_unit_test_setup_teardown(test_calls_cancelled_by_httpc_destroy_end_unavailable, setup, teardown),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return failed;
}
