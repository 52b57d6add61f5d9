// tests/integration/test_sandbox.c — the provider sandbox (sweety-sandbox) over its real HTTP
// interface: Stripe Checkout with Idempotency-Key replays, Stripe's 400/401 errors, the hosted page,
// signed webhooks (verified here with OpenSSL directly, not with the sandbox's code), refunds,
// injected faults (500, delay, drop), webhook retries and held/reordered/duplicated deliveries, and
// Cryptomus invoices with request and webhook signatures.
//
// Each test starts its own sandbox on a free port with a webhook receiver of its own: a listening
// socket read with plain accept/recv on a thread, which records every request and answers 200 (or
// 500 to the first N, to exercise retries). Teardown sends SIGTERM and requires exit status 0, so
// the ASan build also fails a test when the sandbox leaks.
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <curl/curl.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "tests/harness/harness.h"

#define STRIPE_KEY "sk_test_sandbox_0123456789"
#define STRIPE_WHSEC "whsec_sandbox_test_secret"
#define CM_MERCHANT "8b03432e-385b-4670-8d06-064591096795"
#define CM_KEY "sandboxPaymentKey123"
#define RECEIVER_MAX_RECEIVED 64
#include "tests/integration/receiver.h"

// ---- fixture -------------------------------------------------------------------------------------
static int setup(void **state) {
    fixture_t *f = fixture_new();
    if (!f) return -1;
    char bin[512], listen[64], hook[128];
    if (harness_bin_path("sweety-sandbox", bin, sizeof bin) != 0) return -1;
    snprintf(listen, sizeof listen, "127.0.0.1:%d", f->port);
    snprintf(hook, sizeof hook, "http://127.0.0.1:%d/webhooks/stripe", f->rx.port);
    const char *argv[] = {bin, "--listen", listen, "--public-url", f->base, "--stripe-secret-key", STRIPE_KEY,
                          "--stripe-webhook-secret", STRIPE_WHSEC, "--stripe-webhook-url", hook,
                          "--cryptomus-merchant", CM_MERCHANT, "--webhook-retry-ms", "100,200,400",
                          "--webhook-timeout-ms", "3000", NULL};
    // the payment key comes from the environment, as it would in the demo
    const char *env[] = {"SANDBOX_CRYPTOMUS_PAYMENT_KEY=" CM_KEY, NULL};
    if (fixture_spawn(f, argv, env) != 0) return -1;
    char *log = harness_read_file(f->log);
    char want[96];
    snprintf(want, sizeof want, "sandbox listening on http://127.0.0.1:%d\n", f->port);
    bool ready_line = log && strstr(log, want);
    free(log);
    if (!ready_line) {
        dump_log(f);
        return -1;
    }
    *state = f;
    return 0;
}

// ---- helpers -------------------------------------------------------------------------------------
static long http(const fixture_t *f, const char *method, const char *path, const char *body,
                 const char *const *headers, harness_http_t *r) {
    char url[512];
    snprintf(url, sizeof url, "%s%s", f->base, path);
    harness_http(method, url, body, headers, r);
    return r->status;
}

static long control(const fixture_t *f, const char *method, const char *path, const char *json, json_t **out) {
    harness_http_t r;
    const char *headers[] = {"Content-Type: application/json", NULL};
    long status = http(f, method, path, json, headers, &r);
    if (out) *out = parse(r.body);
    harness_http_clear(&r);
    return status;
}

#define CHECKOUT_FORM                                                                                              \
    "mode=payment&line_items%5B0%5D%5Bprice_data%5D%5Bcurrency%5D=usd"                                           \
    "&line_items%5B0%5D%5Bprice_data%5D%5Bunit_amount%5D=1500"                                                   \
    "&line_items%5B0%5D%5Bprice_data%5D%5Bproduct_data%5D%5Bname%5D=AI%20phone%20call"                           \
    "&line_items%5B0%5D%5Bquantity%5D=1"                                                                         \
    "&success_url=http%3A%2F%2F127.0.0.1%3A9%2Fbooking-confirmation%3Fbooking%3Dbk_42%26sid%3D%7BCHECKOUT_"       \
    "SESSION_ID%7D"                                                                                              \
    "&cancel_url=http%3A%2F%2F127.0.0.1%3A9%2F&client_reference_id=bk_42&metadata%5Bbooking_id%5D=bk_42"          \
    "&payment_intent_data%5Bmetadata%5D%5Bbooking_id%5D=bk_42"

// POSTs a checkout session with the right key; `extra` is appended to the form, `idem` may be NULL.
static long create_checkout(const fixture_t *f, const char *idem, const char *extra, harness_http_t *r) {
    char body[2048], idem_header[300];
    snprintf(body, sizeof body, "%s%s", CHECKOUT_FORM, extra ? extra : "");
    snprintf(idem_header, sizeof idem_header, "Idempotency-Key: %s", idem ? idem : "");
    const char *headers[] = {"Authorization: Bearer " STRIPE_KEY, idem ? idem_header : NULL, NULL};
    return http(f, "POST", "/v1/checkout/sessions", body, headers, r);
}

// Creates a session and returns its id in `id`.
static void new_session(const fixture_t *f, char *id, size_t size) {
    harness_http_t r;
    assert_int_equal(create_checkout(f, NULL, NULL, &r), 200);
    json_t *s = parse(r.body);
    assert_non_null(jstr(s, "id"));
    snprintf(id, size, "%s", jstr(s, "id"));
    json_decref(s);
    harness_http_clear(&r);
}

static int journal_count(const fixture_t *f, const char *query) {
    char path[256];
    snprintf(path, sizeof path, "/_sandbox/requests?%s", query);
    json_t *j = NULL;
    assert_int_equal(control(f, "GET", path, NULL, &j), 200);
    int n = (int)json_integer_value(json_object_get(j, "count"));
    json_decref(j);
    return n;
}

// Stripe-Signature "t=…,v1=…" must equal HMAC-SHA256(whole whsec string, "t.body"), computed here.
static void assert_stripe_signed(const received_t *r) {
    long long t = 0;
    char v1[80] = "";
    assert_int_equal(sscanf(r->stripe_signature, "t=%lld,v1=%64[0-9a-f]", &t, v1), 2);
    assert_true(llabs((long long)time(NULL) - t) < 60);
    char *signed_payload = NULL;
    int n = asprintf(&signed_payload, "%lld.%.*s", t, (int)r->body_len, r->body);
    assert_true(n > 0);
    unsigned char mac[32];
    unsigned int maclen = 0;
    HMAC(EVP_sha256(), STRIPE_WHSEC, (int)strlen(STRIPE_WHSEC), (unsigned char *)signed_payload, (size_t)n, mac, &maclen);
    char hex[65];
    for (unsigned i = 0; i < maclen; i++) snprintf(hex + 2 * i, 3, "%02x", mac[i]);
    assert_string_equal(v1, hex);
    free(signed_payload);
}

static void md5_b64_sign(const char *body, size_t len, char out[33]) {
    unsigned char *b64 = malloc(4 * ((len + 2) / 3) + 1);
    int blen = EVP_EncodeBlock(b64, (const unsigned char *)body, (int)len);
    char *text = NULL;
    int n = asprintf(&text, "%.*s%s", blen, (char *)b64, CM_KEY);
    unsigned char md[16];
    unsigned int mdlen = 0;
    EVP_Digest(text, (size_t)n, md, &mdlen, EVP_md5(), NULL);
    for (unsigned i = 0; i < 16; i++) snprintf(out + 2 * i, 3, "%02x", md[i]);
    free(b64);
    free(text);
}

// POSTs a Cryptomus API call signed over `body` (or with `sign_override`).
static long cryptomus_call(const fixture_t *f, const char *path, const char *body, const char *merchant,
                           const char *sign_override, json_t **out) {
    char sign[33], sign_h[80], merchant_h[80];
    md5_b64_sign(body, strlen(body), sign);
    snprintf(sign_h, sizeof sign_h, "sign: %s", sign_override ? sign_override : sign);
    snprintf(merchant_h, sizeof merchant_h, "merchant: %s", merchant);
    const char *headers[] = {"Content-Type: application/json", merchant_h, sign_h, NULL};
    harness_http_t r;
    long status = http(f, "POST", path, body, headers, &r);
    if (out) *out = parse(r.body);
    harness_http_clear(&r);
    return status;
}

// A Cryptomus webhook: "sign" is the last member, over the raw text without it.
static json_t *assert_cryptomus_signed(const received_t *r) {
    const char *cut = strstr(r->body, ",\"sign\":\"");
    assert_non_null(cut);
    assert_int_equal(strlen(cut), strlen(",\"sign\":\"\"}") + 32);
    char *unsigned_text = NULL;
    int n = asprintf(&unsigned_text, "%.*s}", (int)(cut - r->body), r->body);
    assert_true(n > 0);
    char want[33];
    md5_b64_sign(unsigned_text, (size_t)n, want);
    assert_memory_equal(cut + 9, want, 32);
    free(unsigned_text);
    return parse(r->body);
}

// ---- Stripe --------------------------------------------------------------------------------------
static void test_stripe_idempotency_key_replays_the_first_answer(void **state) {
    fixture_t *f = *state;
    harness_http_t a, b, c;
    assert_int_equal(create_checkout(f, "checkout-bk_42-1", NULL, &a), 200);
    assert_int_equal(create_checkout(f, "checkout-bk_42-1", NULL, &b), 200);
    assert_string_equal(a.body, b.body);   // byte for byte
    assert_non_null(strcasestr(b.headers, "\nIdempotent-Replayed: true"));
    assert_null(strcasestr(a.headers, "Idempotent-Replayed"));
    assert_non_null(strcasestr(a.headers, "\nRequest-Id: req_"));
    json_t *s = parse(a.body);
    assert_string_equal(jstr(s, "object"), "checkout.session");
    assert_true(strncmp(jstr(s, "id"), "cs_test_", 8) == 0);
    assert_string_equal(jstr(s, "status"), "open");
    assert_string_equal(jstr(s, "payment_status"), "unpaid");
    assert_true(json_is_null(json_object_get(s, "payment_intent")));
    assert_int_equal(json_integer_value(json_object_get(s, "amount_total")), 1500);
    assert_string_equal(jstr(s, "client_reference_id"), "bk_42");
    assert_string_equal(jstr(s, "metadata.booking_id"), "bk_42");
    char url[256];
    snprintf(url, sizeof url, "%s/pay/%s", f->base, jstr(s, "id"));
    assert_string_equal(jstr(s, "url"), url);
    json_decref(s);
    // the same key with other parameters
    assert_int_equal(create_checkout(f, "checkout-bk_42-1", "&customer_email=ann%40example.com", &c), 400);
    json_t *e = parse(c.body);
    assert_string_equal(jstr(e, "error.type"), "idempotency_error");
    json_decref(e);
    harness_http_clear(&a);
    harness_http_clear(&b);
    harness_http_clear(&c);
    // without a key, every request makes a new session
    char id1[128], id2[128];
    new_session(f, id1, sizeof id1);
    new_session(f, id2, sizeof id2);
    assert_string_not_equal(id1, id2);
    json_t *list = NULL;
    assert_int_equal(control(f, "GET", "/_sandbox/stripe/sessions", NULL, &list), 200);
    assert_int_equal(json_array_size(json_object_get(list, "sessions")), 3);
    json_decref(list);
    assert_int_equal(journal_count(f, "provider=stripe&path=/v1/checkout/sessions"), 5);
}

static void assert_stripe_400(const fixture_t *f, const char *extra_or_form, bool whole_form, const char *param,
                              const char *message) {
    harness_http_t r;
    if (whole_form) {
        const char *headers[] = {"Authorization: Bearer " STRIPE_KEY, NULL};
        assert_int_equal(http(f, "POST", "/v1/checkout/sessions", extra_or_form, headers, &r), 400);
    } else {
        assert_int_equal(create_checkout(f, NULL, extra_or_form, &r), 400);
    }
    json_t *e = parse(r.body);
    assert_string_equal(jstr(e, "error.type"), "invalid_request_error");
    assert_string_equal(jstr(e, "error.param"), param);
    if (message) assert_string_equal(jstr(e, "error.message"), message);
    json_decref(e);
    harness_http_clear(&r);
}

static void test_stripe_bad_parameters_get_400_with_the_param(void **state) {
    fixture_t *f = *state;
    assert_stripe_400(f, "mode=payment&line_items%5B0%5D%5Bprice_data%5D%5Bcurrency%5D=usd", true,
                      "line_items[0][price_data][unit_amount]",
                      "Missing required param: line_items[0][price_data][unit_amount].");
    assert_stripe_400(f,
                      "mode=payment&line_items%5B0%5D%5Bprice_data%5D%5Bcurrency%5D=usd"
                      "&line_items%5B0%5D%5Bprice_data%5D%5Bunit_amount%5D=1500"
                      "&line_items%5B0%5D%5Bprice_data%5D%5Bproduct_data%5D%5Bname%5D=x"
                      "&line_items%5B0%5D%5Bquantity%5D=1&cancel_url=http%3A%2F%2Fa.test%2F",
                      true, "success_url", "Missing required param: success_url.");
    assert_stripe_400(f, "line_items%5B0%5D%5Bquantity%5D=1", true, "mode", "Missing required param: mode.");
    char extra[64];
    snprintf(extra, sizeof extra, "&expires_at=%lld", (long long)time(NULL) + 600);   // < 30 min
    assert_stripe_400(f, extra, false, "expires_at", NULL);
    snprintf(extra, sizeof extra, "&expires_at=%lld", (long long)time(NULL) + 2 * 86400);   // > 24 h
    assert_stripe_400(f, extra, false, "expires_at", NULL);
    assert_stripe_400(f, "&metdata%5Bbooking_id%5D=bk_42", false, "metdata[booking_id]",
                      "Received unknown parameter: metdata[booking_id]");
    // validation failures are not stored under the key: the corrected request then succeeds
    harness_http_t r;
    snprintf(extra, sizeof extra, "&expires_at=%lld", (long long)time(NULL) + 60);
    assert_int_equal(create_checkout(f, "fix-me", extra, &r), 400);
    harness_http_clear(&r);
    snprintf(extra, sizeof extra, "&expires_at=%lld", (long long)time(NULL) + 1800);
    assert_int_equal(create_checkout(f, "fix-me", extra, &r), 200);
    harness_http_clear(&r);
}

static void test_stripe_wrong_or_missing_key_gets_401(void **state) {
    fixture_t *f = *state;
    const char *wrong[] = {"Authorization: Bearer sk_test_wrong_key_000000", NULL};
    harness_http_t r;
    assert_int_equal(http(f, "POST", "/v1/checkout/sessions", CHECKOUT_FORM, wrong, &r), 401);
    json_t *e = parse(r.body);
    assert_string_equal(jstr(e, "error.type"), "invalid_request_error");
    assert_non_null(strstr(jstr(e, "error.message"), "Invalid API Key provided"));
    json_decref(e);
    harness_http_clear(&r);
    assert_int_equal(http(f, "POST", "/v1/checkout/sessions", CHECKOUT_FORM, NULL, &r), 401);
    harness_http_clear(&r);
    // Basic auth with the key as user name, as `curl -u sk_test_…:` sends it
    char basic[128], *b64 = malloc(128);
    EVP_EncodeBlock((unsigned char *)b64, (const unsigned char *)STRIPE_KEY ":", (int)strlen(STRIPE_KEY ":"));
    snprintf(basic, sizeof basic, "Authorization: Basic %s", b64);
    free(b64);
    const char *ok[] = {basic, NULL};
    assert_int_equal(http(f, "POST", "/v1/checkout/sessions", CHECKOUT_FORM, ok, &r), 200);
    harness_http_clear(&r);
    assert_int_equal(journal_count(f, "provider=stripe"), 3);
}

static void test_stripe_pay_redirects_sends_a_signed_webhook_and_refunds(void **state) {
    fixture_t *f = *state;
    char id[128], path[256];
    new_session(f, id, sizeof id);
    harness_http_t r;
    snprintf(path, sizeof path, "/pay/%s", id);
    assert_int_equal(http(f, "GET", path, NULL, NULL, &r), 200);
    assert_non_null(strstr(r.body, "AI phone call"));
    assert_non_null(strstr(r.body, "15.00 USD"));
    assert_non_null(strstr(r.body, "/complete\""));
    harness_http_clear(&r);
    // Cancel goes back to cancel_url and leaves the session open, as on Stripe
    snprintf(path, sizeof path, "/pay/%s/cancel", id);
    assert_int_equal(http(f, "POST", path, "", NULL, &r), 303);
    assert_non_null(strcasestr(r.headers, "\nLocation: http://127.0.0.1:9/\r"));
    harness_http_clear(&r);
    snprintf(path, sizeof path, "/pay/%s/complete", id);
    assert_int_equal(http(f, "POST", path, "", NULL, &r), 303);
    char location[512];
    snprintf(location, sizeof location, "\nLocation: http://127.0.0.1:9/booking-confirmation?booking=bk_42&sid=%s\r", id);
    assert_non_null(strcasestr(r.headers, location));
    harness_http_clear(&r);
    // a second payment of the same session is refused
    assert_int_equal(http(f, "POST", path, "", NULL, &r), 409);
    harness_http_clear(&r);

    assert_int_equal(receiver_wait(&f->rx, 1, 5000), 0);
    received_t *w = &f->rx.items[0];
    assert_string_equal(w->path, "/webhooks/stripe");
    assert_stripe_signed(w);
    json_t *ev = parse(w->body);
    assert_string_equal(jstr(ev, "type"), "checkout.session.completed");
    assert_string_equal(jstr(ev, "object"), "event");
    assert_true(strncmp(jstr(ev, "id"), "evt_", 4) == 0);
    assert_string_equal(jstr(ev, "data.object.id"), id);
    assert_string_equal(jstr(ev, "data.object.payment_status"), "paid");
    assert_string_equal(jstr(ev, "data.object.status"), "complete");
    char pi[64];
    snprintf(pi, sizeof pi, "%s", jstr(ev, "data.object.payment_intent"));
    assert_true(strncmp(pi, "pi_", 3) == 0);
    json_decref(ev);

    const char *auth[] = {"Authorization: Bearer " STRIPE_KEY, NULL};
    snprintf(path, sizeof path, "/v1/payment_intents/%s", pi);
    assert_int_equal(http(f, "GET", path, NULL, auth, &r), 200);
    json_t *intent = parse(r.body);
    assert_string_equal(jstr(intent, "status"), "succeeded");
    assert_string_equal(jstr(intent, "metadata.booking_id"), "bk_42");
    json_decref(intent);
    harness_http_clear(&r);
    snprintf(path, sizeof path, "/v1/checkout/sessions/%s?expand[]=payment_intent", id);
    assert_int_equal(http(f, "GET", path, NULL, auth, &r), 200);
    json_t *s = parse(r.body);
    assert_string_equal(jstr(s, "payment_intent.id"), pi);
    json_decref(s);
    harness_http_clear(&r);

    // refund: answered, seen in the journal, confirmed by refund.created and charge.refunded
    char form[160];
    snprintf(form, sizeof form, "payment_intent=%s&reason=requested_by_customer&metadata%%5Bbooking_id%%5D=bk_42", pi);
    const char *refund_headers[] = {"Authorization: Bearer " STRIPE_KEY, "Idempotency-Key: refund-bk_42", NULL};
    assert_int_equal(http(f, "POST", "/v1/refunds", form, refund_headers, &r), 200);
    json_t *re = parse(r.body);
    assert_string_equal(jstr(re, "status"), "succeeded");
    assert_string_equal(jstr(re, "payment_intent"), pi);
    assert_int_equal(json_integer_value(json_object_get(re, "amount")), 1500);
    json_decref(re);
    harness_http_clear(&r);
    json_t *j = NULL;
    assert_int_equal(control(f, "GET", "/_sandbox/requests?provider=stripe&path=/v1/refunds", NULL, &j), 200);
    json_t *entry = json_array_get(json_object_get(j, "requests"), 0);
    assert_string_equal(jstr(entry, "fields.payment_intent"), pi);
    assert_string_equal(jstr(entry, "headers.idempotency-key"), "refund-bk_42");
    assert_true(json_is_true(json_object_get(json_object_get(entry, "headers"), "authorization")));
    json_decref(j);
    assert_int_equal(receiver_wait(&f->rx, 3, 5000), 0);
    json_t *e1 = parse(f->rx.items[1].body), *e2 = parse(f->rx.items[2].body);
    assert_string_equal(jstr(e1, "type"), "refund.created");
    assert_string_equal(jstr(e2, "type"), "charge.refunded");
    assert_true(json_is_true(json_object_get(json_object_get(json_object_get(e2, "data"), "object"), "refunded")));
    assert_stripe_signed(&f->rx.items[1]);
    assert_stripe_signed(&f->rx.items[2]);
    json_decref(e1);
    json_decref(e2);
    // nothing left to refund
    const char *plain[] = {"Authorization: Bearer " STRIPE_KEY, NULL};
    assert_int_equal(http(f, "POST", "/v1/refunds", form, plain, &r), 400);
    json_t *err = parse(r.body);
    assert_string_equal(jstr(err, "error.code"), "charge_already_refunded");
    json_decref(err);
    harness_http_clear(&r);
}

static void test_stripe_async_payment_then_failure_sends_both_events(void **state) {
    fixture_t *f = *state;
    char id[128], path[256];
    new_session(f, id, sizeof id);
    snprintf(path, sizeof path, "/_sandbox/stripe/sessions/%s/complete", id);
    assert_int_equal(control(f, "POST", path, "{\"payment_status\":\"unpaid\",\"then\":\"async_failed\"}", NULL), 200);
    assert_int_equal(receiver_wait(&f->rx, 2, 5000), 0);
    json_t *e1 = parse(f->rx.items[0].body), *e2 = parse(f->rx.items[1].body);
    assert_string_equal(jstr(e1, "type"), "checkout.session.completed");
    assert_string_equal(jstr(e1, "data.object.payment_status"), "unpaid");
    assert_string_equal(jstr(e2, "type"), "checkout.session.async_payment_failed");
    json_decref(e1);
    json_decref(e2);
    // an open session can be expired through the API; a completed one cannot
    const char *auth[] = {"Authorization: Bearer " STRIPE_KEY, NULL};
    harness_http_t r;
    snprintf(path, sizeof path, "/v1/checkout/sessions/%s/expire", id);
    assert_int_equal(http(f, "POST", path, "", auth, &r), 400);
    harness_http_clear(&r);
    char id2[128];
    new_session(f, id2, sizeof id2);
    snprintf(path, sizeof path, "/v1/checkout/sessions/%s/expire", id2);
    assert_int_equal(http(f, "POST", path, "", auth, &r), 200);
    json_t *s = parse(r.body);
    assert_string_equal(jstr(s, "status"), "expired");
    json_decref(s);
    harness_http_clear(&r);
    assert_int_equal(receiver_wait(&f->rx, 3, 5000), 0);
    json_t *e3 = parse(f->rx.items[2].body);
    assert_string_equal(jstr(e3, "type"), "checkout.session.expired");
    json_decref(e3);
}

// ---- faults --------------------------------------------------------------------------------------
static void test_fault_500_twice_then_success_makes_one_session(void **state) {
    fixture_t *f = *state;
    assert_int_equal(control(f, "POST", "/_sandbox/faults",
                             "{\"provider\":\"stripe\",\"path_prefix\":\"/v1/checkout/sessions\",\"status\":500,\"count\":2}",
                             NULL),
                     200);
    harness_http_t r;
    for (int i = 0; i < 2; i++) {
        assert_int_equal(create_checkout(f, "checkout-bk_7-1", NULL, &r), 500);
        json_t *e = parse(r.body);
        assert_string_equal(jstr(e, "error.type"), "api_error");
        json_decref(e);
        harness_http_clear(&r);
    }
    assert_int_equal(create_checkout(f, "checkout-bk_7-1", NULL, &r), 200);
    harness_http_clear(&r);
    json_t *list = NULL;
    control(f, "GET", "/_sandbox/stripe/sessions", NULL, &list);
    assert_int_equal(json_array_size(json_object_get(list, "sessions")), 1);
    json_decref(list);
    assert_int_equal(journal_count(f, "provider=stripe&path=/v1/checkout/sessions"), 3);
    // a 429 carries Stripe's rate-limit error
    control(f, "POST", "/_sandbox/faults", "{\"provider\":\"stripe\",\"path_prefix\":\"/v1/\",\"status\":429}", NULL);
    assert_int_equal(create_checkout(f, NULL, NULL, &r), 429);
    json_t *e = parse(r.body);
    assert_string_equal(jstr(e, "error.code"), "rate_limit");
    json_decref(e);
    harness_http_clear(&r);
}

typedef struct {
    const fixture_t *f;
    long status;
    char *body;
    int64_t ms;
} slow_call_t;

static void *slow_checkout(void *arg) {
    slow_call_t *c = arg;
    harness_http_t r;
    int64_t t0 = harness_now_ms();
    c->status = create_checkout(c->f, "slow-key", NULL, &r);
    c->ms = harness_now_ms() - t0;
    c->body = strdup(r.body ? r.body : "");
    harness_http_clear(&r);
    return NULL;
}

static void test_delay_fault_answers_late_without_blocking_others(void **state) {
    fixture_t *f = *state;
    assert_int_equal(control(f, "POST", "/_sandbox/faults",
                             "{\"provider\":\"stripe\",\"path_prefix\":\"/v1/checkout/sessions\",\"delay_ms\":1500}", NULL),
                     200);
    slow_call_t call = {.f = f};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, slow_checkout, &call), 0);
    int64_t deadline = harness_now_ms() + 5000;
    while (journal_count(f, "provider=stripe") < 1 && harness_now_ms() < deadline) harness_sleep_ms(10);
    // the loop keeps serving: a control request and a concurrent retry answer at once
    int64_t t0 = harness_now_ms();
    assert_int_equal(control(f, "GET", "/_sandbox/health", NULL, NULL), 200);
    harness_http_t r;
    assert_int_equal(create_checkout(f, "slow-key", NULL, &r), 409);   // first request still in flight
    assert_true(harness_now_ms() - t0 < 1000);
    harness_http_clear(&r);
    pthread_join(t, NULL);
    assert_int_equal(call.status, 200);
    assert_true(call.ms >= 1400);
    assert_int_equal(create_checkout(f, "slow-key", NULL, &r), 200);   // now replayed
    assert_string_equal(r.body, call.body);
    harness_http_clear(&r);
    free(call.body);
}

static void test_drop_fault_closes_the_connection(void **state) {
    fixture_t *f = *state;
    assert_int_equal(
        control(f, "POST", "/_sandbox/faults", "{\"provider\":\"stripe\",\"path_prefix\":\"/v1/\",\"drop\":true}", NULL),
        200);
    harness_http_t r;
    assert_int_equal(create_checkout(f, NULL, NULL, &r), 0);   // no answer at all
    harness_http_clear(&r);
    assert_int_equal(create_checkout(f, NULL, NULL, &r), 200);
    harness_http_clear(&r);
    json_t *list = NULL;
    control(f, "GET", "/_sandbox/stripe/sessions", NULL, &list);
    assert_int_equal(json_array_size(json_object_get(list, "sessions")), 1);   // the dropped one never ran
    json_decref(list);
}

// ---- webhook delivery ----------------------------------------------------------------------------
static void test_webhook_is_retried_until_the_receiver_answers_2xx(void **state) {
    fixture_t *f = *state;
    pthread_mutex_lock(&f->rx.mu);
    f->rx.fail_first = 2;
    pthread_mutex_unlock(&f->rx.mu);
    char id[128], path[256];
    new_session(f, id, sizeof id);
    snprintf(path, sizeof path, "/_sandbox/stripe/sessions/%s/complete", id);
    assert_int_equal(control(f, "POST", path, "{\"payment_status\":\"paid\"}", NULL), 200);
    assert_int_equal(receiver_wait(&f->rx, 3, 5000), 0);
    json_t *e[3];
    for (int i = 0; i < 3; i++) {
        e[i] = parse(f->rx.items[i].body);
        assert_stripe_signed(&f->rx.items[i]);
    }
    assert_string_equal(jstr(e[0], "id"), jstr(e[1], "id"));
    assert_string_equal(jstr(e[1], "id"), jstr(e[2], "id"));
    for (int i = 0; i < 3; i++) json_decref(e[i]);
    // the receiver has answered; the sandbox records the 200 a moment later
    json_t *list = NULL;
    int64_t deadline = harness_now_ms() + 3000;
    for (;;) {
        control(f, "GET", "/_sandbox/webhooks?provider=stripe", NULL, &list);
        const char *st = jstr(json_array_get(json_object_get(list, "events"), 0), "state");
        if ((st && strcmp(st, "delivered") == 0) || harness_now_ms() > deadline) break;
        json_decref(list);
        harness_sleep_ms(20);
    }
    json_t *ev = json_array_get(json_object_get(list, "events"), 0);
    assert_string_equal(jstr(ev, "state"), "delivered");
    assert_int_equal(json_integer_value(json_object_get(ev, "attempts")), 3);
    assert_int_equal(json_integer_value(json_object_get(ev, "delivered")), 1);
    json_decref(list);
}

static void test_held_webhooks_are_released_in_reverse_with_duplicates(void **state) {
    fixture_t *f = *state;
    assert_int_equal(control(f, "POST", "/_sandbox/webhooks", "{\"mode\":\"hold\"}", NULL), 200);
    char id1[128], id2[128], path[256];
    new_session(f, id1, sizeof id1);
    new_session(f, id2, sizeof id2);
    snprintf(path, sizeof path, "/_sandbox/stripe/sessions/%s/complete", id1);
    assert_int_equal(control(f, "POST", path, "{}", NULL), 200);
    snprintf(path, sizeof path, "/_sandbox/stripe/sessions/%s/expire_now", id2);
    assert_int_equal(control(f, "POST", path, NULL, NULL), 200);
    json_t *list = NULL;
    control(f, "GET", "/_sandbox/webhooks", NULL, &list);
    json_t *events = json_object_get(list, "events");
    assert_int_equal(json_array_size(events), 2);
    assert_string_equal(jstr(json_array_get(events, 0), "state"), "held");
    assert_string_equal(jstr(json_array_get(events, 1), "state"), "held");
    json_decref(list);
    assert_int_equal(receiver_count(&f->rx), 0);
    json_t *rel = NULL;
    assert_int_equal(control(f, "POST", "/_sandbox/webhooks/release", "{\"order\":\"reverse\",\"duplicates\":2}", &rel), 200);
    assert_int_equal(json_integer_value(json_object_get(rel, "released")), 4);
    json_decref(rel);
    assert_int_equal(receiver_wait(&f->rx, 4, 5000), 0);
    const char *want[] = {"checkout.session.expired", "checkout.session.completed", "checkout.session.expired",
                          "checkout.session.completed"};
    for (int i = 0; i < 4; i++) {
        json_t *e = parse(f->rx.items[i].body);
        assert_string_equal(jstr(e, "type"), want[i]);
        json_decref(e);
        assert_stripe_signed(&f->rx.items[i]);
    }
    // "drop" records events without delivering them
    assert_int_equal(control(f, "POST", "/_sandbox/webhooks", "{\"mode\":\"drop\"}", NULL), 200);
    char id3[128];
    new_session(f, id3, sizeof id3);
    snprintf(path, sizeof path, "/_sandbox/stripe/sessions/%s/complete", id3);
    assert_int_equal(control(f, "POST", path, "{}", NULL), 200);
    control(f, "GET", "/_sandbox/webhooks?type=checkout.session.completed", NULL, &list);
    assert_string_equal(jstr(json_array_get(json_object_get(list, "events"), 1), "state"), "dropped");
    json_decref(list);
    assert_int_equal(receiver_count(&f->rx), 4);
}

static void test_reset_forgets_sessions_requests_and_events(void **state) {
    fixture_t *f = *state;
    char id[128];
    new_session(f, id, sizeof id);
    assert_int_equal(control(f, "POST", "/_sandbox/reset", NULL, NULL), 200);
    json_t *list = NULL;
    control(f, "GET", "/_sandbox/stripe/sessions", NULL, &list);
    assert_int_equal(json_array_size(json_object_get(list, "sessions")), 0);
    json_decref(list);
    assert_int_equal(journal_count(f, "provider=stripe"), 0);
    const char *auth[] = {"Authorization: Bearer " STRIPE_KEY, NULL};
    harness_http_t r;
    char path[256];
    snprintf(path, sizeof path, "/v1/checkout/sessions/%s", id);
    assert_int_equal(http(f, "GET", path, NULL, auth, &r), 404);
    harness_http_clear(&r);
}

// ---- Cryptomus -----------------------------------------------------------------------------------
static void invoice_body(const fixture_t *f, const char *order_id, char *out, size_t size) {
    snprintf(out, size,
             "{\"amount\":\"15.00\",\"currency\":\"USD\",\"order_id\":\"%s\",\"url_callback\":"
             "\"http:\\/\\/127.0.0.1:%d\\/webhooks\\/cryptomus\",\"url_success\":\"http:\\/\\/127.0.0.1:9\\/ok\","
             "\"lifetime\":3600,\"additional_data\":\"https:\\/\\/x.example\\/a\"}",
             order_id, f->rx.port);
}

static void test_cryptomus_invoice_needs_merchant_and_sign(void **state) {
    fixture_t *f = *state;
    char body[512];
    invoice_body(f, "bk_42", body, sizeof body);
    json_t *a = NULL, *b = NULL, *e = NULL;
    assert_int_equal(cryptomus_call(f, "/v1/payment", body, CM_MERCHANT, NULL, &a), 200);
    assert_int_equal(json_integer_value(json_object_get(a, "state")), 0);
    const char *uuid = jstr(a, "result.uuid");
    assert_non_null(uuid);
    char url[256];
    snprintf(url, sizeof url, "%s/crypto/%s", f->base, uuid);
    assert_string_equal(jstr(a, "result.url"), url);
    assert_string_equal(jstr(a, "result.status"), "check");
    assert_string_equal(jstr(a, "result.amount"), "15.00");
    assert_true(json_is_integer(json_object_get(json_object_get(a, "result"), "expired_at")));
    // the same order_id returns the same invoice
    assert_int_equal(cryptomus_call(f, "/v1/payment", body, CM_MERCHANT, NULL, &b), 200);
    assert_string_equal(jstr(b, "result.uuid"), uuid);
    json_decref(b);
    // a wrong sign, a wrong merchant
    assert_int_equal(cryptomus_call(f, "/v1/payment", body, CM_MERCHANT, "00000000000000000000000000000000", &e), 401);
    assert_int_equal(json_integer_value(json_object_get(e, "state")), 1);
    json_decref(e);
    assert_int_equal(cryptomus_call(f, "/v1/payment", body, "someone-else", NULL, &e), 401);
    json_decref(e);
    // validation: 422 with Laravel rule names
    assert_int_equal(cryptomus_call(f, "/v1/payment", "{\"currency\":\"USD\",\"order_id\":\"bk 1\"}", CM_MERCHANT, NULL, &e),
                     422);
    assert_string_equal(json_string_value(json_array_get(json_object_get(json_object_get(e, "errors"), "amount"), 0)),
                        "validation.required");
    assert_string_equal(json_string_value(json_array_get(json_object_get(json_object_get(e, "errors"), "order_id"), 0)),
                        "validation.alpha_dash");
    json_decref(e);
    // payment info by order_id; an unknown one
    assert_int_equal(cryptomus_call(f, "/v1/payment/info", "{\"order_id\":\"bk_42\"}", CM_MERCHANT, NULL, &b), 200);
    assert_string_equal(jstr(b, "result.uuid"), uuid);
    json_decref(b);
    assert_int_equal(cryptomus_call(f, "/v1/payment/info", "{\"uuid\":\"nope\"}", CM_MERCHANT, NULL, &e), 404);
    assert_string_equal(jstr(e, "message"), "Payment not found");
    json_decref(e);
    json_decref(a);
}

static void test_cryptomus_payment_sends_a_signed_webhook(void **state) {
    fixture_t *f = *state;
    char body[512], uuid[64], path[128];
    invoice_body(f, "bk_43", body, sizeof body);
    json_t *a = NULL;
    assert_int_equal(cryptomus_call(f, "/v1/payment", body, CM_MERCHANT, NULL, &a), 200);
    snprintf(uuid, sizeof uuid, "%s", jstr(a, "result.uuid"));
    json_decref(a);
    harness_http_t r;
    snprintf(path, sizeof path, "/crypto/%s", uuid);
    assert_int_equal(http(f, "GET", path, NULL, NULL, &r), 200);
    assert_non_null(strstr(r.body, "Pay less"));
    harness_http_clear(&r);
    snprintf(path, sizeof path, "/crypto/%s/paid", uuid);
    assert_int_equal(http(f, "POST", path, "", NULL, &r), 303);
    assert_non_null(strcasestr(r.headers, "\nLocation: http://127.0.0.1:9/ok\r"));
    harness_http_clear(&r);
    assert_int_equal(receiver_wait(&f->rx, 1, 5000), 0);
    received_t *w = &f->rx.items[0];
    assert_string_equal(w->path, "/webhooks/cryptomus");
    assert_non_null(strstr(w->body, "\"additional_data\":\"https:\\/\\/x.example\\/a\""));   // PHP-style "\/"
    json_t *hook = assert_cryptomus_signed(w);
    assert_string_equal(jstr(hook, "type"), "payment");
    assert_string_equal(jstr(hook, "uuid"), uuid);
    assert_string_equal(jstr(hook, "order_id"), "bk_43");
    assert_string_equal(jstr(hook, "status"), "paid");
    assert_string_equal(jstr(hook, "amount"), "15.00");
    assert_true(json_is_true(json_object_get(hook, "is_final")));
    json_decref(hook);
    json_t *info = NULL;
    assert_int_equal(cryptomus_call(f, "/v1/payment/info", "{\"order_id\":\"bk_43\"}", CM_MERCHANT, NULL, &info), 200);
    assert_string_equal(jstr(info, "result.status"), "paid");
    json_decref(info);
    // a final invoice cannot be paid again from the page
    assert_int_equal(http(f, "POST", path, "", NULL, &r), 409);
    harness_http_clear(&r);
}

static void test_cryptomus_test_webhook_is_signed_and_changes_nothing(void **state) {
    fixture_t *f = *state;
    char body[512], uuid[64];
    invoice_body(f, "bk_44", body, sizeof body);
    json_t *a = NULL;
    assert_int_equal(cryptomus_call(f, "/v1/payment", body, CM_MERCHANT, NULL, &a), 200);
    snprintf(uuid, sizeof uuid, "%s", jstr(a, "result.uuid"));
    json_decref(a);
    char req[512];
    snprintf(req, sizeof req,
             "{\"uuid\":\"%s\",\"currency\":\"USD\",\"network\":\"tron\",\"url_callback\":"
             "\"http:\\/\\/127.0.0.1:%d\\/webhooks\\/cryptomus\",\"status\":\"cancel\"}",
             uuid, f->rx.port);
    json_t *res = NULL;
    assert_int_equal(cryptomus_call(f, "/v1/test-webhook/payment", req, CM_MERCHANT, NULL, &res), 200);
    assert_int_equal(json_integer_value(json_object_get(res, "state")), 0);
    assert_true(json_is_array(json_object_get(res, "result")));
    json_decref(res);
    assert_int_equal(receiver_wait(&f->rx, 1, 5000), 0);
    json_t *hook = assert_cryptomus_signed(&f->rx.items[0]);
    assert_string_equal(jstr(hook, "status"), "cancel");
    assert_string_equal(jstr(hook, "uuid"), uuid);
    json_decref(hook);
    json_t *info = NULL;
    assert_int_equal(cryptomus_call(f, "/v1/payment/info", "{\"order_id\":\"bk_44\"}", CM_MERCHANT, NULL, &info), 200);
    assert_string_equal(jstr(info, "result.status"), "check");
    json_decref(info);
}

int main(void) {
    curl_global_init(CURL_GLOBAL_DEFAULT);   // before any thread calls curl
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_stripe_idempotency_key_replays_the_first_answer),
        T(test_stripe_bad_parameters_get_400_with_the_param),
        T(test_stripe_wrong_or_missing_key_gets_401),
        T(test_stripe_pay_redirects_sends_a_signed_webhook_and_refunds),
        T(test_stripe_async_payment_then_failure_sends_both_events),
        T(test_fault_500_twice_then_success_makes_one_session),
        T(test_delay_fault_answers_late_without_blocking_others),
        T(test_drop_fault_closes_the_connection),
        T(test_webhook_is_retried_until_the_receiver_answers_2xx),
        T(test_held_webhooks_are_released_in_reverse_with_duplicates),
        T(test_reset_forgets_sessions_requests_and_events),
        T(test_cryptomus_invoice_needs_merchant_and_sign),
        T(test_cryptomus_payment_sends_a_signed_webhook),
        T(test_cryptomus_test_webhook_is_signed_and_changes_nothing),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return rc;
}
