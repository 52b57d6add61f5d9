// tests/integration/test_payments.c — bookings and payments end to end: the real sweetyd, a real
// PostgreSQL and sweety-sandbox standing in for Stripe and Cryptomus, all over HTTP.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <curl/curl.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <time.h>
#include <unistd.h>

#include "tests/integration/client.h"
#include "tests/integration/daemon.h"
#include "tests/integration/sandbox.h"

typedef struct {
    test_daemon_t d;
    test_sandbox_t sb;
    char names[64][48];   // personal data the tests sent: none may reach the daemon's log
    size_t nnames;
} fixture_t;

static fixture_t *F;

// ---- helpers ------------------------------------------------------------------------------------

static void remember(const char *pii) {
    if (F->nnames < 64) snprintf(F->names[F->nnames++], sizeof F->names[0], "%s", pii);
}

static void new_phone(char *out, size_t size) {
    client_new_phone(out, size);
    remember(out + 1);   // the digits alone must not appear either
}

#define JSON_HDR CLIENT_JSON_HDR
#define api(...) client_api(&F->d, __VA_ARGS__)
#define book(...) client_book(&F->d, __VA_ARGS__)
#define query_int(sql) client_query_int(&F->d, sql)
#define wait_status(...) client_wait_status(&F->d, __VA_ARGS__)
#define history(...) client_history(&F->d, __VA_ARGS__)
typedef client_booked_t booked_t;

static void book_paid(const char *plan, const char *method, booked_t *b) {
    char phone[20];
    new_phone(phone, sizeof phone);
    assert_int_equal(client_book_into(&F->d, plan, method, phone, b), 201);
    assert_non_null(strstr(b->checkout, "http"));
}

static long sandbox(const char *method, const char *path, const char *json) {
    return test_sandbox_call(&F->sb, method, path, json, NULL);
}

static int journal_count(const char *query) {
    json_t *j = NULL;
    char path[256];
    snprintf(path, sizeof path, "/_sandbox/requests?%s", query);
    test_sandbox_call(&F->sb, "GET", path, NULL, &j);
    int n = (int)json_integer_value(json_object_get(j, "count"));
    json_decref(j);
    return n;
}

// ---- set-up -------------------------------------------------------------------------------------

static int setup(void **state) {
    static fixture_t f;
    F = &f;
    srand((unsigned)getpid());
    char dir[512];
    if (harness_tmpdir(dir, sizeof dir) != 0) return -1;
    test_sandbox_reserve(&f.sb, dir);
    harness_rmtree(dir);
    char extra[1024];
    test_sandbox_daemon_conf(&f.sb, "[payments]\nreconcile_after_s = 2\nreconcile_every_s = 1\n"
                                    "[http]\nbooking_rate_per_min = 100000\nwebhook_rate_per_min = 100000\n",
                             extra, sizeof extra);
    if (test_daemon_prepare(&f.d, NULL, extra) != 0) return -1;
    snprintf(f.sb.log, sizeof f.sb.log, "%s/sandbox.log", f.d.dir);
    if (test_sandbox_start(&f.sb, f.d.base_url) != 0 || test_daemon_start(&f.d) != 0) return -1;
    remember("Zoe Quartermaine");
    remember("zoe.q@example.org");
    *state = &f;
    return 0;
}

static int teardown(void **state) {
    fixture_t *f = *state;
    if (!f) return -1;
    int code = test_daemon_stop(&f->d, 10000);
    test_sandbox_stop(&f->sb);
    if (code != 0) fprintf(stderr, "sweetyd exited %d\n", code);
    test_daemon_cleanup(&f->d);
    return code == 0 ? 0 : -1;
}

static int reset_sandbox(void **state) {
    sandbox("POST", "/_sandbox/reset", "{}");
    return 0;
}

// ---- tests --------------------------------------------------------------------------------------

static void test_plans_are_listed_in_price_order(void **state) {
    json_t *j = NULL;
    assert_int_equal(api("GET", "/api/plans", NULL, NULL, &j, NULL), 200);
    json_t *plans = json_object_get(j, "plans");
    assert_int_equal(json_array_size(plans), 4);
    assert_string_equal(json_string_value(json_object_get(json_array_get(plans, 0), "key")), "free_trial");
    json_int_t last = -1;
    for (size_t i = 0; i < 4; i++) {
        json_int_t price = json_integer_value(json_object_get(json_array_get(plans, i), "price_cents"));
        assert_true(price >= last);
        last = price;
        assert_non_null(json_object_get(json_array_get(plans, i), "duration_seconds"));
        assert_non_null(json_object_get(json_array_get(plans, i), "currency"));
    }
    json_decref(j);
}

static void test_every_validation_error_is_answered_with_its_code(void **state) {
    const struct {
        const char *body;
        long status;
        const char *code;
    } cases[] = {
        {"not json", 400, "invalid_json"},
        {"[1,2]", 400, "invalid_json"},
        {"{\"name\":\"A\",\"phone\":\"555\",\"plan\":\"standard\"}", 400, "invalid_phone"},
        {"{\"name\":\"A\",\"phone\":\"+15551230000\",\"email\":\"nope\",\"plan\":\"standard\"}", 400, "invalid_email"},
        {"{\"name\":\"A\",\"phone\":\"+15551230000\",\"plan\":\"platinum\"}", 400, "invalid_plan"},
        {"{\"name\":\"\",\"phone\":\"+15551230000\",\"plan\":\"standard\"}", 400, "invalid_name"},
        {"{\"name\":\"A\",\"phone\":\"+15551230000\",\"plan\":\"standard\",\"scheduled_for\":\"2001-01-01T00:00:00Z\"}",
         400, "invalid_scheduled_for"},
        {"{\"name\":\"A\",\"phone\":\"+15551230000\",\"plan\":\"standard\",\"payment_method\":\"cash\"}", 400,
         "invalid_payment_method"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        json_t *j = NULL;
        long st = api("POST", "/api/bookings", cases[i].body, JSON_HDR, &j, NULL);
        const char *code = json_string_value(json_object_get(json_object_get(j, "error"), "code"));
        if (st != cases[i].status || !code || strcmp(code, cases[i].code) != 0)
            fprintf(stderr, "case %zu: %ld %s\n", i, st, code ? code : "(none)");
        assert_int_equal(st, cases[i].status);
        assert_string_equal(code, cases[i].code);
        json_decref(j);
    }
    char message[700];
    memset(message, 'x', 501);
    message[501] = '\0';
    char body[1024];
    snprintf(body, sizeof body, "{\"name\":\"A\",\"phone\":\"+15551230000\",\"plan\":\"standard\",\"message\":\"%s\"}", message);
    json_t *j = NULL;
    assert_int_equal(api("POST", "/api/bookings", body, JSON_HDR, &j, NULL), 400);
    assert_string_equal(json_string_value(json_object_get(json_object_get(j, "error"), "code")), "message_too_long");
    json_decref(j);

    char *big = malloc(17 * 1024 + 64);
    memset(big, ' ', 17 * 1024);
    strcpy(big + 17 * 1024, "{}");
    assert_int_equal(api("POST", "/api/bookings", big, JSON_HDR, NULL, NULL), 413);
    free(big);
    const char *text_hdr[] = {"Content-Type: text/plain", NULL};
    assert_int_equal(api("POST", "/api/bookings", "{}", text_hdr, &j, NULL), 415);
    assert_string_equal(json_string_value(json_object_get(json_object_get(j, "error"), "code")), "unsupported_media_type");
    json_decref(j);
    assert_int_equal(query_int("SELECT count(*) FROM bookings WHERE user_id IN (SELECT id FROM users WHERE phone='+15551230000')"), 0);
}

static void test_idempotency_key_returns_the_first_answer_byte_for_byte(void **state) {
    char phone[20], body[512], key[80];
    new_phone(phone, sizeof phone);
    snprintf(body, sizeof body, "{\"name\":\"Zoe Quartermaine\",\"phone\":\"%s\",\"plan\":\"standard\"}", phone);
    snprintf(key, sizeof key, "Idempotency-Key: test-%s", phone + 1);
    const char *headers[] = {"Content-Type: application/json", key, NULL};
    char *first = NULL, *second = NULL;
    assert_int_equal(api("POST", "/api/bookings", body, headers, NULL, &first), 201);
    assert_int_equal(api("POST", "/api/bookings", body, headers, NULL, &second), 201);
    assert_string_equal(first, second);
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM bookings b JOIN users u ON u.id=b.user_id WHERE u.phone='%s'", phone);
    assert_int_equal(query_int(sql), 1);
    assert_int_equal(journal_count("provider=stripe&path=/v1/checkout/sessions&method=POST"), 1);
    char other[512];
    snprintf(other, sizeof other, "{\"name\":\"Zoe Quartermaine\",\"phone\":\"%s\",\"plan\":\"premium\"}", phone);
    json_t *j = NULL;
    assert_int_equal(api("POST", "/api/bookings", other, headers, &j, NULL), 422);
    assert_string_equal(json_string_value(json_object_get(json_object_get(j, "error"), "code")), "idempotency_key_reused");
    json_decref(j);
    free(first);
    free(second);
}

static void test_twenty_simultaneous_free_trials_for_one_phone_one_wins(void **state) {
    char phone[20], body[256], url[128];
    new_phone(phone, sizeof phone);
    snprintf(body, sizeof body, "{\"name\":\"Zoe Quartermaine\",\"phone\":\"%s\",\"plan\":\"free_trial\"}", phone);
    snprintf(url, sizeof url, "%s/api/bookings", F->d.base_url);
    CURLM *multi = curl_multi_init();
    CURL *easy[20];
    struct curl_slist *hdr = curl_slist_append(NULL, "Content-Type: application/json");
    FILE *sink = fopen("/dev/null", "w");
    for (int i = 0; i < 20; i++) {
        easy[i] = curl_easy_init();
        curl_easy_setopt(easy[i], CURLOPT_URL, url);
        curl_easy_setopt(easy[i], CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(easy[i], CURLOPT_HTTPHEADER, hdr);
        curl_easy_setopt(easy[i], CURLOPT_WRITEDATA, sink);
        curl_easy_setopt(easy[i], CURLOPT_TIMEOUT, 30L);
        curl_multi_add_handle(multi, easy[i]);
    }
    int running = 1;
    while (running) {
        curl_multi_perform(multi, &running);
        if (running) curl_multi_poll(multi, NULL, 0, 100, NULL);
    }
    int created = 0, cooldown = 0;
    for (int i = 0; i < 20; i++) {
        long st = 0;
        curl_easy_getinfo(easy[i], CURLINFO_RESPONSE_CODE, &st);
        created += st == 201;
        cooldown += st == 409;
        curl_multi_remove_handle(multi, easy[i]);
        curl_easy_cleanup(easy[i]);
    }
    curl_multi_cleanup(multi);
    curl_slist_free_all(hdr);
    fclose(sink);
    assert_int_equal(created, 1);
    assert_int_equal(cooldown, 19);
    json_t *j = NULL;
    assert_int_equal(api("POST", "/api/bookings", body, JSON_HDR, &j, NULL), 409);
    json_t *err = json_object_get(j, "error");
    assert_string_equal(json_string_value(json_object_get(err, "code")), "free_trial_cooldown");
    json_int_t retry = json_integer_value(json_object_get(err, "retry_after_s"));
    assert_true(retry > 0 && retry <= 86400);
    json_decref(j);
}

static void test_free_trial_is_queued_at_once(void **state) {
    char phone[20];
    new_phone(phone, sizeof phone);
    json_t *j = NULL;
    assert_int_equal(book("free_trial", NULL, phone, &j), 201);
    assert_string_equal(json_string_value(json_object_get(j, "status")), "queued");
    assert_null(json_object_get(j, "checkout_url"));
    char sql[200];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM call_queue WHERE booking_id='%s'",
             json_string_value(json_object_get(j, "booking_id")));
    assert_int_equal(query_int(sql), 1);
    json_decref(j);
}

static void test_stripe_paid_checkout_confirms_and_queues_once(void **state) {
    booked_t b;
    book_paid("standard", "stripe", &b);
    assert_non_null(strstr(b.checkout, F->sb.url));
    assert_int_equal(test_sandbox_complete(&F->sb, b.session, "{\"payment_status\":\"paid\"}"), 200);
    assert_int_equal(wait_status(b.id, b.token, "queued", 15000), 0);
    char h[256];
    history(b.id, b.token, h, sizeof h);
    assert_string_equal(h, "pending,pending_payment,confirmed,queued");
    char sql[200];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM call_queue WHERE booking_id='%s'", b.id);
    assert_int_equal(query_int(sql), 1);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM payments WHERE booking_id='%s' AND status='paid'", b.id);
    assert_int_equal(query_int(sql), 1);
}

static void test_stripe_async_payment_succeeds_later(void **state) {
    booked_t b;
    book_paid("extended", "stripe", &b);
    assert_int_equal(test_sandbox_complete(&F->sb, b.session, "{\"payment_status\":\"unpaid\",\"then\":\"async_succeeded\"}"), 200);
    assert_int_equal(wait_status(b.id, b.token, "queued", 15000), 0);
}

static void test_stripe_async_payment_failure_fails_the_booking(void **state) {
    booked_t b;
    book_paid("standard", "stripe", &b);
    assert_int_equal(test_sandbox_complete(&F->sb, b.session, "{\"payment_status\":\"unpaid\",\"then\":\"async_failed\"}"), 200);
    assert_int_equal(wait_status(b.id, b.token, "payment_failed", 15000), 0);
}

static void test_stripe_expired_checkout_cancels_the_booking(void **state) {
    booked_t b;
    book_paid("premium", "stripe", &b);
    char path[256];
    snprintf(path, sizeof path, "/_sandbox/stripe/sessions/%s/expire_now", b.session);
    assert_int_equal(sandbox("POST", path, "{}"), 200);
    assert_int_equal(wait_status(b.id, b.token, "cancelled", 15000), 0);
}

static void test_cryptomus_paid_and_failed(void **state) {
    booked_t paid, failed;
    book_paid("standard", "cryptomus", &paid);
    book_paid("standard", "cryptomus", &failed);
    assert_int_equal(test_sandbox_invoice_status(&F->sb, paid.session, "paid"), 200);
    assert_int_equal(test_sandbox_invoice_status(&F->sb, failed.session, "wrong_amount"), 200);
    assert_int_equal(wait_status(paid.id, paid.token, "queued", 15000), 0);
    assert_int_equal(wait_status(failed.id, failed.token, "payment_failed", 15000), 0);
}

// Stripe-Signature computed here with OpenSSL directly, independently of the daemon's code.
static void sign_stripe(const char *secret, long t, const char *body, char *header, size_t size) {
    char payload[8192];
    snprintf(payload, sizeof payload, "%ld.%s", t, body);
    unsigned char mac[32];
    unsigned int len = 0;
    HMAC(EVP_sha256(), secret, (int)strlen(secret), (const unsigned char *)payload, strlen(payload), mac, &len);
    char hex[65];
    for (int i = 0; i < 32; i++) sprintf(hex + 2 * i, "%02x", mac[i]);
    snprintf(header, size, "Stripe-Signature: t=%ld,v1=%s", t, hex);
}

static long post_stripe(const char *body, const char *sig_header) {
    const char *headers[] = {"Content-Type: application/json", sig_header, NULL};
    return api("POST", "/webhooks/stripe", body, headers, NULL, NULL);
}

static void test_bad_stripe_signatures_are_refused_and_store_nothing(void **state) {
    const char *body = "{\"id\":\"evt_sig_test_1\",\"object\":\"event\",\"type\":\"checkout.session.completed\","
                       "\"data\":{\"object\":{\"id\":\"cs_test_nothing\",\"object\":\"checkout.session\","
                       "\"payment_status\":\"paid\",\"status\":\"complete\",\"client_reference_id\":null}}}";
    long now = (long)time(NULL);
    int64_t before = query_int("SELECT count(*) FROM webhook_events");
    char hdr[256];
    sign_stripe("whsec_wrong_secret", now, body, hdr, sizeof hdr);
    assert_int_equal(post_stripe(body, hdr), 400);
    sign_stripe(SANDBOX_STRIPE_WHSEC, now, body, hdr, sizeof hdr);
    char tampered[1024];
    snprintf(tampered, sizeof tampered, "%s", body);
    tampered[strlen(tampered) - 3] = ' ';
    assert_int_equal(post_stripe(tampered, hdr), 400);
    char stale[256];
    sign_stripe(SANDBOX_STRIPE_WHSEC, now - 301, body, stale, sizeof stale);
    json_t *j = NULL;
    const char *headers[] = {"Content-Type: application/json", stale, NULL};
    assert_int_equal(api("POST", "/webhooks/stripe", body, headers, &j, NULL), 400);
    assert_string_equal(json_string_value(json_object_get(json_object_get(j, "error"), "code")), "stale_timestamp");
    json_decref(j);
    assert_int_equal(post_stripe(body, "Stripe-Signature: t=1,v0=abc"), 400);
    char wrong_several[512];
    snprintf(wrong_several, sizeof wrong_several, "Stripe-Signature: t=%ld,v1=%064d,v1=%064d", now, 0, 1);
    assert_int_equal(post_stripe(body, wrong_several), 400);
    assert_int_equal(query_int("SELECT count(*) FROM webhook_events"), before);
    // Several v1 values, one of them right (a secret being rolled): accepted, stored once.
    char good[256], several[512];
    sign_stripe(SANDBOX_STRIPE_WHSEC, now, body, good, sizeof good);
    snprintf(several, sizeof several, "Stripe-Signature: t=%ld,v1=%064d,%s", now, 0, strstr(good, "v1="));
    assert_int_equal(post_stripe(body, several), 200);
    assert_int_equal(query_int("SELECT count(*) FROM webhook_events WHERE event_id='evt_sig_test_1'"), 1);
    // A verified event naming nothing we know changes nothing, and is counted as such.
    char *metrics = NULL;
    api("GET", "/metrics", NULL, NULL, NULL, &metrics);
    assert_non_null(strstr(metrics, "outcome=\"unknown_target\""));
    assert_non_null(strstr(metrics, "outcome=\"bad_signature\""));
    free(metrics);
}

// Waits until every recorded event of the sandbox has been delivered (or given up).
static void wait_webhooks_settled(int timeout_ms) {
    int64_t deadline = harness_now_ms() + timeout_ms;
    while (harness_now_ms() < deadline) {
        json_t *j = NULL;
        test_sandbox_call(&F->sb, "GET", "/_sandbox/webhooks", NULL, &j);
        size_t i, busy = 0;
        json_t *ev;
        json_array_foreach(json_object_get(j, "events"), i, ev) {
            const char *st = json_string_value(json_object_get(ev, "state"));
            busy += st && (strcmp(st, "pending") == 0 || strcmp(st, "held") == 0);
        }
        json_decref(j);
        if (busy == 0) return;
        harness_sleep_ms(100);
    }
}

static void test_one_event_delivered_fifty_times_moves_the_booking_once(void **state) {
    booked_t b;
    book_paid("standard", "stripe", &b);
    assert_int_equal(sandbox("POST", "/_sandbox/webhooks", "{\"mode\":\"hold\"}"), 200);
    assert_int_equal(test_sandbox_complete(&F->sb, b.session, "{\"payment_status\":\"paid\"}"), 200);
    assert_int_equal(sandbox("POST", "/_sandbox/webhooks/release", "{\"order\":\"shuffle\",\"duplicates\":50}"), 200);
    assert_int_equal(wait_status(b.id, b.token, "queued", 20000), 0);
    wait_webhooks_settled(30000);
    char h[256];
    history(b.id, b.token, h, sizeof h);
    assert_string_equal(h, "pending,pending_payment,confirmed,queued");
    char sql[200];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM call_queue WHERE booking_id='%s'", b.id);
    assert_int_equal(query_int(sql), 1);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM webhook_events WHERE booking_id='%s'", b.id);
    assert_int_equal(query_int(sql), 1);
}

static void test_async_events_in_reverse_order_still_confirm_once(void **state) {
    booked_t b;
    book_paid("standard", "stripe", &b);
    assert_int_equal(sandbox("POST", "/_sandbox/webhooks", "{\"mode\":\"hold\"}"), 200);
    assert_int_equal(test_sandbox_complete(&F->sb, b.session, "{\"payment_status\":\"unpaid\",\"then\":\"async_succeeded\"}"), 200);
    // the async outcome is generated a moment after the completion: wait for both to be held
    int64_t deadline = harness_now_ms() + 10000;
    size_t held = 0;
    while (held < 2 && harness_now_ms() < deadline) {
        json_t *j = NULL;
        test_sandbox_call(&F->sb, "GET", "/_sandbox/webhooks", NULL, &j);
        held = json_array_size(json_object_get(j, "events"));
        json_decref(j);
        if (held < 2) harness_sleep_ms(50);
    }
    assert_int_equal(held, 2);
    assert_int_equal(sandbox("POST", "/_sandbox/webhooks/release", "{\"order\":\"reverse\",\"duplicates\":3}"), 200);
    assert_int_equal(wait_status(b.id, b.token, "queued", 20000), 0);
    wait_webhooks_settled(20000);
    char h[256];
    history(b.id, b.token, h, sizeof h);
    assert_string_equal(h, "pending,pending_payment,confirmed,queued");
}

static void test_lost_webhook_is_made_good_by_reconciliation(void **state) {
    booked_t b;
    book_paid("standard", "stripe", &b);
    assert_int_equal(sandbox("POST", "/_sandbox/webhooks", "{\"mode\":\"drop\"}"), 200);
    assert_int_equal(test_sandbox_complete(&F->sb, b.session, "{\"payment_status\":\"paid\"}"), 200);
    assert_int_equal(wait_status(b.id, b.token, "queued", 30000), 0);
    char sql[200];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM webhook_events WHERE event_id LIKE 'reconcile:%%' AND booking_id='%s'", b.id);
    assert_int_equal(query_int(sql), 1);
}

static void test_provider_failing_twice_then_succeeding_makes_one_checkout(void **state) {
    assert_int_equal(sandbox("POST", "/_sandbox/faults",
                             "{\"provider\":\"stripe\",\"path_prefix\":\"/v1/checkout/sessions\",\"method\":\"POST\",\"status\":500,\"count\":2}"),
                     200);
    booked_t b;
    book_paid("standard", "stripe", &b);
    assert_int_equal(journal_count("provider=stripe&path=/v1/checkout/sessions&method=POST"), 3);
    json_t *j = NULL;
    test_sandbox_call(&F->sb, "GET", "/_sandbox/stripe/sessions", NULL, &j);
    json_t *list = json_is_array(j) ? j : json_object_get(j, "sessions");
    assert_int_equal(json_array_size(list), 1);
    json_decref(j);
}

static void test_unreachable_provider_gives_502_and_a_failed_booking(void **state) {
    assert_int_equal(sandbox("POST", "/_sandbox/faults",
                             "{\"provider\":\"stripe\",\"path_prefix\":\"/v1/checkout/sessions\",\"method\":\"POST\",\"drop\":true,\"count\":10}"),
                     200);
    char phone[20];
    new_phone(phone, sizeof phone);
    json_t *j = NULL;
    assert_int_equal(book("standard", "stripe", phone, &j), 502);
    assert_string_equal(json_string_value(json_object_get(json_object_get(j, "error"), "code")), "provider_unavailable");
    json_decref(j);
    char sql[256];
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM bookings b JOIN users u ON u.id=b.user_id WHERE u.phone='%s' AND b.status='payment_failed'",
             phone);
    assert_int_equal(query_int(sql), 1);
}

static long cancel(const booked_t *b, json_t **out) {
    char path[128], auth[1100];
    snprintf(path, sizeof path, "/api/bookings/%s/cancel", b->id);
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", b->token);
    const char *headers[] = {auth, NULL};
    return api("POST", path, NULL, headers, out, NULL);
}

static void test_cancel_refunds_a_paid_booking_and_expires_an_unpaid_one(void **state) {
    booked_t paid, unpaid;
    book_paid("standard", "stripe", &paid);
    book_paid("standard", "stripe", &unpaid);
    assert_int_equal(test_sandbox_complete(&F->sb, paid.session, "{\"payment_status\":\"paid\"}"), 200);
    assert_int_equal(wait_status(paid.id, paid.token, "queued", 15000), 0);
    json_t *j = NULL;
    assert_int_equal(cancel(&paid, &j), 200);
    assert_string_equal(json_string_value(json_object_get(j, "status")), "cancelled");
    const char *refund = json_string_value(json_object_get(j, "refund"));
    assert_true(strcmp(refund, "succeeded") == 0 || strcmp(refund, "pending") == 0);
    json_decref(j);
    assert_int_equal(journal_count("provider=stripe&path=/v1/refunds&method=POST"), 1);
    assert_int_equal(cancel(&paid, &j), 200);   // again: still 200, no second refund
    json_decref(j);
    assert_int_equal(journal_count("provider=stripe&path=/v1/refunds&method=POST"), 1);

    assert_int_equal(cancel(&unpaid, &j), 200);
    assert_string_equal(json_string_value(json_object_get(j, "refund")), "none");
    json_decref(j);
    char q[256];
    snprintf(q, sizeof q, "provider=stripe&path=/v1/checkout/sessions/%s/expire", unpaid.session);
    int64_t deadline = harness_now_ms() + 5000;
    while (journal_count(q) == 0 && harness_now_ms() < deadline) harness_sleep_ms(50);
    assert_int_equal(journal_count(q), 1);

    // a wrong token reveals nothing
    booked_t forged = paid;
    snprintf(forged.token, sizeof forged.token, "%s", unpaid.token);
    assert_int_equal(cancel(&forged, &j), 404);
    json_decref(j);
}

static void test_money_for_a_cancelled_booking_is_refunded(void **state) {
    booked_t b;
    book_paid("standard", "stripe", &b);
    // our expiry of the checkout fails at Stripe, so the customer can still pay, as in a real race
    char fault[256];
    snprintf(fault, sizeof fault,
             "{\"provider\":\"stripe\",\"path_prefix\":\"/v1/checkout/sessions/%s/expire\",\"status\":500,\"count\":10}",
             b.session);
    assert_int_equal(sandbox("POST", "/_sandbox/faults", fault), 200);
    json_t *j = NULL;
    assert_int_equal(cancel(&b, &j), 200);
    json_decref(j);
    assert_int_equal(test_sandbox_complete(&F->sb, b.session, "{\"payment_status\":\"paid\"}"), 200);   // the customer paid anyway
    int64_t deadline = harness_now_ms() + 15000;
    while (journal_count("provider=stripe&path=/v1/refunds&method=POST") == 0 && harness_now_ms() < deadline)
        harness_sleep_ms(100);
    assert_int_equal(journal_count("provider=stripe&path=/v1/refunds&method=POST"), 1);
    assert_int_equal(wait_status(b.id, b.token, "cancelled", 1000), 0);
}

static void test_late_cryptomus_money_is_marked_for_a_manual_refund(void **state) {
    booked_t b;
    book_paid("standard", "cryptomus", &b);
    assert_int_equal(test_sandbox_invoice_status(&F->sb, b.session, "cancel"), 200);
    assert_int_equal(wait_status(b.id, b.token, "cancelled", 15000), 0);
    assert_int_equal(test_sandbox_invoice_status(&F->sb, b.session, "paid"), 200);   // the money came anyway
    char sql[200];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM payments WHERE booking_id='%s' AND status='refund_required'", b.id);
    int64_t deadline = harness_now_ms() + 15000;
    while (query_int(sql) != 1 && harness_now_ms() < deadline) harness_sleep_ms(100);
    assert_int_equal(query_int(sql), 1);
    char *out = NULL, *err = NULL;
    const char *args[] = {"booking", "show", b.id, "--json", NULL};
    assert_int_equal(test_daemon_ctl(&F->d, args, &out, &err), 0);
    json_t *doc = json_loads(out, 0, NULL);
    assert_non_null(doc);
    assert_string_equal(json_string_value(json_object_get(json_object_get(doc, "payment"), "status")), "refund_required");
    assert_string_equal(json_string_value(json_object_get(json_object_get(doc, "booking"), "status")), "cancelled");
    assert_true(json_array_size(json_object_get(doc, "events")) >= 3);
    assert_true(json_is_null(json_object_get(doc, "queue")));
    json_decref(doc);
    free(out);
    free(err);
}

static void test_no_personal_data_reaches_the_log(void **state) {
    char *log = harness_read_file(F->d.log);
    assert_non_null(log);
    for (size_t i = 0; i < F->nnames; i++) {
        if (strstr(log, F->names[i])) fprintf(stderr, "found personal data '%s' in the daemon log\n", F->names[i]);
        assert_null(strstr(log, F->names[i]));
    }
    assert_null(strstr(log, SANDBOX_STRIPE_KEY));
    assert_null(strstr(log, SANDBOX_STRIPE_WHSEC));
    assert_null(strstr(log, SANDBOX_CRYPTOMUS_KEY));
    free(log);
}

int main(void) {
    curl_global_init(CURL_GLOBAL_DEFAULT);
#define T(fn) cmocka_unit_test_setup(fn, reset_sandbox)
    const struct CMUnitTest tests[] = {
        T(test_plans_are_listed_in_price_order),
        T(test_every_validation_error_is_answered_with_its_code),
        T(test_idempotency_key_returns_the_first_answer_byte_for_byte),
        T(test_twenty_simultaneous_free_trials_for_one_phone_one_wins),
        T(test_free_trial_is_queued_at_once),
        T(test_stripe_paid_checkout_confirms_and_queues_once),
        T(test_stripe_async_payment_succeeds_later),
        T(test_stripe_async_payment_failure_fails_the_booking),
        T(test_stripe_expired_checkout_cancels_the_booking),
        T(test_cryptomus_paid_and_failed),
        T(test_bad_stripe_signatures_are_refused_and_store_nothing),
        T(test_one_event_delivered_fifty_times_moves_the_booking_once),
        T(test_async_events_in_reverse_order_still_confirm_once),
        T(test_lost_webhook_is_made_good_by_reconciliation),
        T(test_provider_failing_twice_then_succeeding_makes_one_checkout),
        T(test_unreachable_provider_gives_502_and_a_failed_booking),
        T(test_cancel_refunds_a_paid_booking_and_expires_an_unpaid_one),
        T(test_money_for_a_cancelled_booking_is_refunded),
        T(test_late_cryptomus_money_is_marked_for_a_manual_refund),
        T(test_no_personal_data_reaches_the_log),
    };
    int failed = cmocka_run_group_tests_name("payments", tests, setup, teardown);
    curl_global_cleanup();
    return failed;
}
