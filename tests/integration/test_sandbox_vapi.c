// tests/integration/test_sandbox_vapi.c — the VAPI simulator of sweety-sandbox over its real HTTP
// interface: POST /call and its 201 (monitor.controlUrl, subscriptionLimits), 401 for a wrong key,
// NestJS-style 400s, the concurrency limit in each of its three forms ("400", "blocked", "ended"),
// scripted timelines delivered as server messages (X-Vapi-Secret, and the HMAC headers verified
// here with OpenSSL directly, not with the sandbox's code), live call control ending a call,
// lost end messages, GET /call filters (finding a call whose create answer was lost), the
// per-key peak, faults and reset.
//
// Each test starts its own sandbox on a free port with a webhook receiver of its own: a listening
// socket read with plain accept/recv on a thread, which records every request (head and body) and
// answers 200. Teardown sends SIGTERM and requires exit status 0, so the ASan build also fails a
// test when the sandbox leaks.
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
#define VAPI_KEY "0c9d8d0e-7f3a-4b1e-9d2c-5a6b7c8dA001"   // from --vapi-key, limit 2
#define VAPI_SECRET "vapi-shared-secret-42"
#define VAPI_HMAC "vapi-hmac-secret-43"
#define ASSISTANT_ID "6f1b8a34-2c4d-4e5f-8a9b-0c1d2e3f4a5b"
#define PHONE_NUMBER_ID "7a2c9b45-3d5e-4f60-9b0c-1d2e3f4a5b6c"
#define RECEIVER_MAX_RECEIVED 256
#include "tests/integration/receiver.h"

// ---- received server messages -------------------------------------------------------------------
// Does received message `r` belong to call `id` and match type (and status, when given)?
static bool message_is(const received_t *r, const char *id, const char *type, const char *status) {
    const json_t *m = json_object_get(r->json, "message");
    const char *cid = jstr(m, "call.id"), *t = jstr(m, "type"), *s = jstr(m, "status");
    return cid && t && strcmp(cid, id) == 0 && strcmp(t, type) == 0 && (!status || (s && strcmp(s, status) == 0));
}

// Waits for the message and returns its index, or -1 on timeout.
static int wait_message(receiver_t *rx, const char *id, const char *type, const char *status, int timeout_ms) {
    int64_t deadline = harness_now_ms() + timeout_ms;
    for (;;) {
        pthread_mutex_lock(&rx->mu);
        int found = -1;
        for (int i = 0; i < rx->n && found < 0; i++)
            if (message_is(&rx->items[i], id, type, status)) found = i;
        pthread_mutex_unlock(&rx->mu);
        if (found >= 0) return found;
        if (harness_now_ms() > deadline) return -1;
        harness_sleep_ms(10);
    }
}

// The messages received for call `id`, as "type" or "type:status", in arrival order, joined by ' '.
static void messages_of(receiver_t *rx, const char *id, char *out, size_t size) {
    size_t k = 0;
    out[0] = '\0';
    pthread_mutex_lock(&rx->mu);
    for (int i = 0; i < rx->n; i++) {
        const json_t *m = json_object_get(rx->items[i].json, "message");
        if (!jstr(m, "call.id") || strcmp(jstr(m, "call.id"), id) != 0) continue;
        const char *s = jstr(m, "status");
        k += (size_t)snprintf(out + k, size - k, "%s%s%s%s", k ? " " : "", jstr(m, "type"), s ? ":" : "", s ? s : "");
        if (k >= size) break;
    }
    pthread_mutex_unlock(&rx->mu);
}

// ---- fixture -------------------------------------------------------------------------------------
static int setup(void **state) {
    fixture_t *f = fixture_new();
    if (!f) return -1;
    char bin[512], listen[64], hook[128];
    if (harness_bin_path("sweety-sandbox", bin, sizeof bin) != 0) return -1;
    snprintf(listen, sizeof listen, "127.0.0.1:%d", f->port);
    snprintf(hook, sizeof hook, "http://127.0.0.1:%d/webhooks/vapi", f->rx.port);
    const char *argv[] = {bin, "--listen", listen, "--public-url", f->base, "--stripe-secret-key", STRIPE_KEY,
                          "--stripe-webhook-secret", STRIPE_WHSEC, "--cryptomus-merchant", CM_MERCHANT,
                          "--cryptomus-payment-key", CM_KEY, "--vapi-key", VAPI_KEY ":2", "--vapi-key",
                          "second-option-key-0002:5", "--vapi-server-url", hook, "--vapi-webhook-secret", VAPI_SECRET,
                          "--webhook-timeout-ms", "3000", NULL};
    // the HMAC secret comes from the environment, as it would in the demo
    const char *env[] = {"SANDBOX_VAPI_HMAC_SECRET=" VAPI_HMAC, NULL};
    if (fixture_spawn(f, argv, env) != 0) return -1;
    *state = f;
    return 0;
}

// ---- helpers -------------------------------------------------------------------------------------
static long http(const fixture_t *f, const char *method, const char *path, const char *body,
                 const char *const *headers, json_t **out) {
    char url[1024];
    snprintf(url, sizeof url, "%s%s", strncmp(path, "http", 4) == 0 ? "" : f->base, path);
    harness_http_t r;
    harness_http(method, url, body, headers, &r);
    if (out) *out = r.body && r.body_len ? parse(r.body) : NULL;
    long status = r.status;
    harness_http_clear(&r);
    return status;
}

static long control(const fixture_t *f, const char *method, const char *path, const char *json, json_t **out) {
    const char *headers[] = {"Content-Type: application/json", NULL};
    return http(f, method, path, json, headers, out);
}

static void control_ok(const fixture_t *f, const char *path, const char *json) {
    json_t *j = NULL;
    long status = control(f, "POST", path, json, &j);
    if (status != 200) fprintf(stderr, "%s -> %ld %s\n", path, status, j ? json_dumps(j, 0) : "");
    assert_int_equal(status, 200);
    json_decref(j);
}

// A VAPI API request with `key` (NULL: no Authorization header).
static long vapi(const fixture_t *f, const char *method, const char *path, const char *key, const char *json,
                 json_t **out) {
    char auth[300];
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", key ? key : "");
    const char *headers[] = {"Content-Type: application/json", key ? auth : NULL, NULL};
    return http(f, method, path, json, headers, out);
}

// The body the daemon sends: customer number, booking id in metadata, maxDurationSeconds.
static void call_body(char *out, size_t size, const char *number, const char *booking, int max_s) {
    snprintf(out, size,
             "{\"assistantId\":\"" ASSISTANT_ID "\",\"phoneNumberId\":\"" PHONE_NUMBER_ID "\","
             "\"customer\":{\"number\":\"%s\"},\"name\":\"booking %s\","
             "\"assistantOverrides\":{\"maxDurationSeconds\":%d,\"metadata\":{\"booking_id\":\"%s\"},"
             "\"variableValues\":{\"booking_id\":\"%s\"},\"serverMessages\":[\"status-update\",\"end-of-call-report\",\"hang\"]}}",
             number, booking, max_s, booking, booking);
}

// POST /call expecting 201; the call id goes to `id`, the answer to *out (may be NULL).
static void create_call(const fixture_t *f, const char *key, const char *number, const char *booking, char id[64],
                        json_t **out) {
    char body[1024];
    call_body(body, sizeof body, number, booking, 600);
    json_t *c = NULL;
    long status = vapi(f, "POST", "/call", key, body, &c);
    if (status != 201) fprintf(stderr, "POST /call -> %ld %s\n", status, c ? json_dumps(c, 0) : "");
    assert_int_equal(status, 201);
    assert_non_null(jstr(c, "id"));
    snprintf(id, 64, "%s", jstr(c, "id"));
    if (out)
        *out = c;
    else
        json_decref(c);
}

static json_t *get_call(const fixture_t *f, const char *key, const char *id) {
    char path[128];
    snprintf(path, sizeof path, "/call/%s", id);
    json_t *c = NULL;
    assert_int_equal(vapi(f, "GET", path, key, NULL, &c), 200);
    return c;
}

// Waits until GET /call/{id} shows `status`. 0 or -1.
static int wait_call_status(const fixture_t *f, const char *key, const char *id, const char *status, int timeout_ms) {
    int64_t deadline = harness_now_ms() + timeout_ms;
    for (;;) {
        json_t *c = get_call(f, key, id);
        bool ok = jstr(c, "status") && strcmp(jstr(c, "status"), status) == 0;
        json_decref(c);
        if (ok) return 0;
        if (harness_now_ms() > deadline) return -1;
        harness_sleep_ms(20);
    }
}

// The key's entry in GET /_sandbox/vapi/stats (json_decref the result).
static json_t *key_stats(const fixture_t *f, const char *suffix) {
    json_t *s = NULL, *out = NULL;
    assert_int_equal(control(f, "GET", "/_sandbox/vapi/stats", NULL, &s), 200);
    size_t i;
    json_t *k;
    json_array_foreach(json_object_get(s, "keys"), i, k) {
        if (strcmp(jstr(k, "key_suffix"), suffix) == 0) out = json_incref(k);
    }
    json_decref(s);
    assert_non_null(out);
    return out;
}

static int int_of(const json_t *j, const char *key) { return (int)json_integer_value(json_object_get(j, key)); }

// X-Vapi-Secret is the shared secret; x-signature = hex HMAC-SHA256(secret, "<x-timestamp>.<body>"),
// with x-timestamp in milliseconds, recent.
static void assert_vapi_signed(const received_t *r) {
    char secret[128], ts[32], sig[80];
    header_value(r->head, "X-Vapi-Secret", secret, sizeof secret);
    header_value(r->head, "x-timestamp", ts, sizeof ts);
    header_value(r->head, "x-signature", sig, sizeof sig);
    assert_string_equal(secret, VAPI_SECRET);
    long long t = strtoll(ts, NULL, 10);
    assert_true(llabs((long long)time(NULL) * 1000 - t) < 60000);
    char *signed_payload = NULL;
    int n = asprintf(&signed_payload, "%s.%.*s", ts, (int)r->body_len, r->body);
    assert_true(n > 0);
    unsigned char mac[32];
    unsigned int maclen = 0;
    HMAC(EVP_sha256(), VAPI_HMAC, (int)strlen(VAPI_HMAC), (unsigned char *)signed_payload, (size_t)n, mac, &maclen);
    char hex[65];
    for (unsigned i = 0; i < maclen; i++) snprintf(hex + 2 * i, 3, "%02x", mac[i]);
    assert_string_equal(sig, hex);
    free(signed_payload);
}

// ---- creating calls ------------------------------------------------------------------------------
static void test_vapi_create_call_answers_201_with_control_url(void **state) {
    fixture_t *f = *state;
    control_ok(f, "/_sandbox/vapi/config", "{\"default_outcome\":\"never-ends\"}");
    char id[64];
    json_t *c = NULL;
    create_call(f, VAPI_KEY, "+15551230001", "bk_1", id, &c);
    assert_int_equal(strlen(id), 36);
    assert_non_null(jstr(c, "orgId"));
    assert_non_null(jstr(c, "createdAt"));
    assert_non_null(jstr(c, "updatedAt"));
    assert_string_equal(jstr(c, "type"), "outboundPhoneCall");
    assert_string_equal(jstr(c, "status"), "queued");
    assert_string_equal(jstr(c, "assistantId"), ASSISTANT_ID);
    assert_string_equal(jstr(c, "phoneNumberId"), PHONE_NUMBER_ID);
    assert_string_equal(jstr(c, "customer.number"), "+15551230001");
    assert_string_equal(jstr(c, "name"), "booking bk_1");
    assert_string_equal(jstr(c, "assistantOverrides.metadata.booking_id"), "bk_1");
    char want[256];
    snprintf(want, sizeof want, "%s/vapi-control/%s/control", f->base, id);
    assert_string_equal(jstr(c, "monitor.controlUrl"), want);
    assert_non_null(jstr(c, "monitor.listenUrl"));
    assert_true(json_is_false(jget(c, "subscriptionLimits.concurrencyBlocked")));
    assert_int_equal(json_integer_value(jget(c, "subscriptionLimits.concurrencyLimit")), 2);
    assert_int_equal(json_integer_value(jget(c, "subscriptionLimits.remainingConcurrentCalls")), 1);
    json_decref(c);
    // GET /call/{id}, also through the "/vapi" mount (an api_base with a path)
    char path[128];
    snprintf(path, sizeof path, "/vapi/call/%s", id);
    json_t *g = NULL;
    assert_int_equal(vapi(f, "GET", path, VAPI_KEY, NULL, &g), 200);
    assert_string_equal(jstr(g, "id"), id);
    assert_null(json_object_get(g, "subscriptionLimits"));
    assert_non_null(jstr(g, "monitor.controlUrl"));
    json_decref(g);
    // another key (another org) does not see it; a bad id is refused as NestJS's ParseUUIDPipe does
    assert_int_equal(vapi(f, "GET", path, "second-option-key-0002", NULL, NULL), 404);
    assert_int_equal(vapi(f, "GET", "/call/not-a-uuid", VAPI_KEY, NULL, &g), 400);
    assert_string_equal(jstr(g, "message"), "Validation failed (uuid is expected)");
    json_decref(g);
    // the journal records the request under the provider "vapi"
    json_t *j = NULL;
    assert_int_equal(control(f, "GET", "/_sandbox/requests?provider=vapi&path=/call&method=POST", NULL, &j), 200);
    assert_int_equal(json_integer_value(json_object_get(j, "count")), 1);
    json_decref(j);
}

static void test_vapi_wrong_or_missing_key_gets_401(void **state) {
    fixture_t *f = *state;
    char body[1024];
    call_body(body, sizeof body, "+15551230002", "bk_2", 600);
    const char *keys[] = {"not-a-known-key", NULL};
    for (size_t i = 0; i < 2; i++) {
        json_t *e = NULL;
        assert_int_equal(vapi(f, "POST", "/call", keys[i], body, &e), 401);
        assert_true(strncmp(jstr(e, "message"), "Invalid Key", 11) == 0);
        assert_string_equal(jstr(e, "error"), "Unauthorized");
        assert_int_equal(json_integer_value(json_object_get(e, "statusCode")), 401);
        json_decref(e);
    }
    assert_int_equal(vapi(f, "GET", "/call", "not-a-known-key", NULL, NULL), 401);
    // a key registered at run time works at once
    control_ok(f, "/_sandbox/vapi/keys", "{\"key\":\"not-a-known-key\",\"limit\":3}");
    char id[64];
    json_t *c = NULL;
    create_call(f, "not-a-known-key", "+15551230002", "bk_2", id, &c);
    assert_int_equal(json_integer_value(jget(c, "subscriptionLimits.concurrencyLimit")), 3);
    json_decref(c);
    json_t *k = key_stats(f, "-key");
    assert_int_equal(int_of(k, "limit"), 3);
    assert_int_equal(int_of(k, "created"), 1);
    json_decref(k);
}

static bool has_message(const json_t *err, const char *text) {
    size_t i;
    json_t *m;
    json_array_foreach(json_object_get(err, "message"), i, m) {
        if (strcmp(json_string_value(m), text) == 0) return true;
    }
    return false;
}

static void test_vapi_missing_or_bad_fields_get_400(void **state) {
    fixture_t *f = *state;
    json_t *e = NULL;
    // class-validator messages, all at once, in an array
    assert_int_equal(vapi(f, "POST", "/call", VAPI_KEY,
                          "{\"assistantId\":\"" ASSISTANT_ID "\",\"phoneNumberId\":\"" PHONE_NUMBER_ID "\","
                          "\"customer\":{\"number\":\"55\"},\"metadata\":{\"booking_id\":\"bk_3\"},"
                          "\"assistantOverrides\":{\"maxDurationSeconds\":5,\"metaData\":{}}}",
                          &e),
                     400);
    assert_string_equal(jstr(e, "error"), "Bad Request");
    assert_int_equal(json_integer_value(json_object_get(e, "statusCode")), 400);
    assert_true(json_is_array(json_object_get(e, "message")));
    assert_true(has_message(e, "property metadata should not exist"));   // no top-level metadata on a call
    assert_true(has_message(e, "customer.number must be longer than or equal to 3 characters"));
    assert_true(has_message(e, "assistantOverrides.maxDurationSeconds must not be less than 10"));
    assert_true(has_message(e, "assistantOverrides.property metaData should not exist"));
    json_decref(e);
    // not E.164
    assert_int_equal(vapi(f, "POST", "/call", VAPI_KEY,
                          "{\"assistantId\":\"" ASSISTANT_ID "\",\"phoneNumberId\":\"" PHONE_NUMBER_ID "\","
                          "\"customer\":{\"number\":\"5551234567\"}}",
                          &e),
                     400);
    assert_true(strstr(json_string_value(json_array_get(json_object_get(e, "message"), 0)), "E.164") != NULL);
    json_decref(e);
    // the checks after validation: a string message
    assert_int_equal(vapi(f, "POST", "/call", VAPI_KEY,
                          "{\"assistantId\":\"" ASSISTANT_ID "\",\"customer\":{\"number\":\"+15551230003\"}}", &e),
                     400);
    assert_non_null(strstr(jstr(e, "message"), "phoneNumberId"));
    json_decref(e);
    assert_int_equal(vapi(f, "POST", "/call", VAPI_KEY,
                          "{\"phoneNumberId\":\"" PHONE_NUMBER_ID "\",\"customer\":{\"number\":\"+15551230003\"}}", &e),
                     400);
    assert_non_null(strstr(jstr(e, "message"), "assistantId"));
    json_decref(e);
    assert_int_equal(vapi(f, "POST", "/call", VAPI_KEY,
                          "{\"assistantId\":\"" ASSISTANT_ID "\",\"phoneNumberId\":\"" PHONE_NUMBER_ID "\"}", &e),
                     400);
    assert_non_null(strstr(jstr(e, "message"), "customer"));
    json_decref(e);
    // broken JSON
    assert_int_equal(vapi(f, "POST", "/call", VAPI_KEY, "{\"assistantId\":", &e), 400);
    assert_non_null(strstr(jstr(e, "message"), "JSON"));
    json_decref(e);
    // nothing was created
    json_t *calls = NULL;
    assert_int_equal(control(f, "GET", "/_sandbox/vapi/calls", NULL, &calls), 200);
    assert_int_equal(json_array_size(json_object_get(calls, "calls")), 0);
    json_decref(calls);
}

// ---- concurrency ---------------------------------------------------------------------------------
// Two never-ending calls fill VAPI_KEY's two slots.
static void fill_slots(fixture_t *f, char ids[2][64]) {
    control_ok(f, "/_sandbox/vapi/config", "{\"default_outcome\":\"never-ends\"}");
    create_call(f, VAPI_KEY, "+15551231001", "bk_10", ids[0], NULL);
    create_call(f, VAPI_KEY, "+15551231002", "bk_11", ids[1], NULL);
}

static void end_by_control(fixture_t *f, const char *id) {
    char url[256];
    snprintf(url, sizeof url, "/vapi-control/%s/control", id);
    json_t *r = NULL;
    assert_int_equal(control(f, "POST", url, "{\"type\":\"end-call\"}", &r), 200);
    json_decref(r);
}

static void test_vapi_over_limit_answers_400_over_concurrency_limit(void **state) {
    fixture_t *f = *state;
    char ids[2][64], body[1024], id[64];
    fill_slots(f, ids);
    call_body(body, sizeof body, "+15551231003", "bk_12", 600);
    json_t *e = NULL;
    assert_int_equal(vapi(f, "POST", "/call", VAPI_KEY, body, &e), 400);
    assert_string_equal(jstr(e, "message"), "Over Concurrency Limit");
    assert_string_equal(jstr(e, "error"), "Bad Request");
    assert_int_equal(json_integer_value(json_object_get(e, "statusCode")), 400);
    json_decref(e);
    // the other key has its own slots
    create_call(f, "second-option-key-0002", "+15551231003", "bk_12", id, NULL);
    // a slot frees when a call ends
    end_by_control(f, ids[0]);
    create_call(f, VAPI_KEY, "+15551231003", "bk_12", id, NULL);
    json_t *k = key_stats(f, "A001");
    assert_int_equal(int_of(k, "limit"), 2);
    assert_int_equal(int_of(k, "active"), 2);
    assert_int_equal(int_of(k, "peak"), 2);
    assert_int_equal(int_of(k, "created"), 3);
    assert_int_equal(int_of(k, "rejected"), 1);
    json_decref(k);
}

static void test_vapi_over_limit_blocked_answers_201_already_ended(void **state) {
    fixture_t *f = *state;
    char ids[2][64], id[64];
    fill_slots(f, ids);
    control_ok(f, "/_sandbox/vapi/config", "{\"concurrency_mode\":\"blocked\"}");
    json_t *c = NULL;
    create_call(f, VAPI_KEY, "+15551231004", "bk_13", id, &c);
    assert_true(json_is_true(jget(c, "subscriptionLimits.concurrencyBlocked")));
    assert_int_equal(json_integer_value(jget(c, "subscriptionLimits.remainingConcurrentCalls")), 0);
    assert_string_equal(jstr(c, "status"), "ended");
    assert_string_equal(jstr(c, "endedReason"), "call.start.error-subscription-concurrency-limit-reached");
    json_decref(c);
    int i = wait_message(&f->rx, id, "status-update", "ended", 5000);
    assert_true(i >= 0);
    assert_string_equal(jstr(f->rx.items[i].json, "message.endedReason"),
                        "call.start.error-subscription-concurrency-limit-reached");
    assert_string_equal(jstr(f->rx.items[i].json, "message.call.assistantOverrides.metadata.booking_id"), "bk_13");
    json_t *k = key_stats(f, "A001");
    assert_int_equal(int_of(k, "active"), 2);
    assert_int_equal(int_of(k, "peak"), 2);
    assert_int_equal(int_of(k, "rejected"), 1);
    json_decref(k);
}

static void test_vapi_over_limit_ended_answers_201_then_an_ended_status(void **state) {
    fixture_t *f = *state;
    char ids[2][64], id[64];
    fill_slots(f, ids);
    control_ok(f, "/_sandbox/vapi/config", "{\"concurrency_mode\":\"ended\"}");
    json_t *c = NULL;
    create_call(f, VAPI_KEY, "+15551231005", "bk_14", id, &c);
    assert_true(json_is_false(jget(c, "subscriptionLimits.concurrencyBlocked")));
    assert_string_equal(jstr(c, "status"), "queued");
    json_decref(c);
    int i = wait_message(&f->rx, id, "status-update", "ended", 5000);
    assert_true(i >= 0);
    assert_string_equal(jstr(f->rx.items[i].json, "message.endedReason"),
                        "call.start.error-subscription-concurrency-limit-reached");
    assert_true(wait_message(&f->rx, id, "end-of-call-report", NULL, 5000) >= 0);
    char seen[512];
    messages_of(&f->rx, id, seen, sizeof seen);
    assert_string_equal(seen, "status-update:ended end-of-call-report");   // it never rang
    c = get_call(f, VAPI_KEY, id);
    assert_string_equal(jstr(c, "status"), "ended");
    assert_null(jstr(c, "startedAt"));
    json_decref(c);
    json_t *k = key_stats(f, "A001");
    assert_int_equal(int_of(k, "peak"), 2);
    assert_int_equal(int_of(k, "active"), 2);
    json_decref(k);
}

// ---- timelines -----------------------------------------------------------------------------------
static void test_vapi_script_busy_then_answer_delivers_signed_messages(void **state) {
    fixture_t *f = *state;
    control_ok(f, "/_sandbox/vapi/script", "{\"number\":\"+15551232001\",\"outcomes\":[\"busy\",\"answer:1\"]}");
    char busy[64], answered[64];
    create_call(f, VAPI_KEY, "+15551232001", "bk_20", busy, NULL);
    assert_true(wait_message(&f->rx, busy, "end-of-call-report", NULL, 5000) >= 0);
    char seen[512];
    messages_of(&f->rx, busy, seen, sizeof seen);
    assert_string_equal(seen, "status-update:ringing status-update:ended end-of-call-report");
    int i = wait_message(&f->rx, busy, "status-update", "ended", 0);
    assert_string_equal(jstr(f->rx.items[i].json, "message.endedReason"), "customer-busy");

    int64_t t0 = harness_now_ms();
    create_call(f, VAPI_KEY, "+15551232001", "bk_20", answered, NULL);
    int r = wait_message(&f->rx, answered, "end-of-call-report", NULL, 8000);
    assert_true(r >= 0);
    assert_true(harness_now_ms() - t0 >= 1000);   // in progress for about a second
    messages_of(&f->rx, answered, seen, sizeof seen);
    assert_string_equal(seen, "status-update:ringing status-update:in-progress status-update:ended end-of-call-report");
    const json_t *report = json_object_get(f->rx.items[r].json, "message");
    assert_string_equal(jstr(report, "endedReason"), "customer-ended-call");
    assert_non_null(jstr(report, "startedAt"));
    assert_non_null(jstr(report, "endedAt"));
    assert_true(json_is_number(json_object_get(report, "cost")));
    assert_non_null(strstr(jstr(report, "artifact.recordingUrl"), answered));
    assert_non_null(jstr(report, "artifact.transcript"));
    assert_true(json_is_object(json_object_get(report, "analysis")));
    assert_string_equal(jstr(report, "call.id"), answered);
    assert_string_equal(jstr(report, "call.assistantOverrides.metadata.booking_id"), "bk_20");
    assert_true(json_is_integer(json_object_get(report, "timestamp")));
    // every message: to the configured URL, with the secret and a valid HMAC
    pthread_mutex_lock(&f->rx.mu);
    int n = f->rx.n;
    pthread_mutex_unlock(&f->rx.mu);
    assert_int_equal(n, 7);
    for (int k = 0; k < n; k++) {
        assert_string_equal(f->rx.items[k].path, "/webhooks/vapi");
        assert_non_null(jstr(f->rx.items[k].json, "message.call.assistantOverrides.metadata.booking_id"));
        assert_vapi_signed(&f->rx.items[k]);
    }
    // GET /call agrees with the report
    json_t *c = get_call(f, VAPI_KEY, answered);
    assert_string_equal(jstr(c, "status"), "ended");
    assert_string_equal(jstr(c, "endedReason"), "customer-ended-call");
    assert_string_equal(jstr(c, "startedAt"), jstr(report, "startedAt"));
    assert_string_equal(jstr(c, "artifact.recordingUrl"), jstr(report, "artifact.recordingUrl"));
    json_decref(c);
    // the sandbox's own records: one event per message, VAPI's default of no retries
    json_t *w = NULL;
    assert_int_equal(control(f, "GET", "/_sandbox/webhooks?provider=vapi&type=end-of-call-report", NULL, &w), 200);
    assert_int_equal(json_array_size(json_object_get(w, "events")), 2);
    json_decref(w);
}

static void test_vapi_control_end_call_ends_a_never_ending_call(void **state) {
    fixture_t *f = *state;
    control_ok(f, "/_sandbox/vapi/script", "{\"number\":\"+15551233001\",\"outcomes\":[\"never-ends\"]}");
    char id[64];
    json_t *c = NULL;
    create_call(f, VAPI_KEY, "+15551233001", "bk_30", id, &c);
    char control_url[256];
    snprintf(control_url, sizeof control_url, "%s", jstr(c, "monitor.controlUrl"));
    json_decref(c);
    assert_true(wait_message(&f->rx, id, "status-update", "in-progress", 5000) >= 0);
    json_t *r = NULL;
    assert_int_equal(http(f, "POST", control_url, "{\"type\":\"end-call\"}",
                          (const char *const[]){"Content-Type: application/json", NULL}, &r),
                     200);
    json_decref(r);
    int i = wait_message(&f->rx, id, "status-update", "ended", 5000);
    assert_true(i >= 0);
    assert_string_equal(jstr(f->rx.items[i].json, "message.endedReason"), "manually-canceled");
    assert_true(wait_message(&f->rx, id, "end-of-call-report", NULL, 5000) >= 0);
    // the sandbox shows the monitor ended it
    json_t *v = NULL;
    char path[128];
    snprintf(path, sizeof path, "/_sandbox/vapi/calls/%s", id);
    assert_int_equal(control(f, "GET", path, NULL, &v), 200);
    assert_string_equal(jstr(v, "sandbox.ended_by"), "control");
    assert_true(json_is_true(jget(v, "sandbox.ended_by_control")));
    assert_int_equal(json_integer_value(jget(v, "sandbox.control_requests")), 1);
    assert_string_equal(jstr(v, "call.status"), "ended");
    json_decref(v);
    // again: the call is over; an unknown call is 404
    assert_int_equal(control(f, "POST", control_url, "{\"type\":\"end-call\"}", NULL), 400);
    assert_int_equal(control(f, "POST", "/vapi-control/00000000-0000-4000-8000-000000000000/control",
                             "{\"type\":\"end-call\"}", NULL),
                     404);
    json_t *k = key_stats(f, "A001");
    assert_int_equal(int_of(k, "active"), 0);
    json_decref(k);
}

static void test_vapi_never_ending_call_stops_at_max_duration(void **state) {
    fixture_t *f = *state;
    control_ok(f, "/_sandbox/vapi/config", "{\"default_outcome\":\"never-ends\",\"timescale\":0.05}");
    char body[1024], id[64];
    call_body(body, sizeof body, "+15551233002", "bk_31", 10);   // 10 s → 0.5 s at this timescale
    json_t *c = NULL;
    assert_int_equal(vapi(f, "POST", "/call", VAPI_KEY, body, &c), 201);
    snprintf(id, sizeof id, "%s", jstr(c, "id"));
    json_decref(c);
    int i = wait_message(&f->rx, id, "status-update", "ended", 5000);
    assert_true(i >= 0);
    assert_string_equal(jstr(f->rx.items[i].json, "message.endedReason"), "exceeded-max-duration");
}

static void test_vapi_lost_end_sends_no_end_messages_but_get_shows_ended(void **state) {
    fixture_t *f = *state;
    control_ok(f, "/_sandbox/vapi/script", "{\"number\":\"+15551234001\",\"outcomes\":[\"lost-end:0.3\"]}");
    char id[64];
    create_call(f, VAPI_KEY, "+15551234001", "bk_40", id, NULL);
    assert_int_equal(wait_call_status(f, VAPI_KEY, id, "ended", 5000), 0);
    json_t *c = get_call(f, VAPI_KEY, id);
    assert_string_equal(jstr(c, "endedReason"), "customer-ended-call");
    assert_non_null(jstr(c, "endedAt"));
    json_decref(c);
    // nothing about the end arrives (the report would follow within 100 ms)
    assert_true(wait_message(&f->rx, id, "status-update", "in-progress", 5000) >= 0);
    assert_int_equal(wait_message(&f->rx, id, "end-of-call-report", NULL, 600), -1);
    char seen[512];
    messages_of(&f->rx, id, seen, sizeof seen);
    assert_string_equal(seen, "status-update:ringing status-update:in-progress");
    json_t *k = key_stats(f, "A001");
    assert_int_equal(int_of(k, "active"), 0);   // the slot is free all the same
    json_decref(k);
}

// ---- lookups, stats, faults, reset ---------------------------------------------------------------
static void test_vapi_list_finds_a_call_whose_answer_was_lost(void **state) {
    fixture_t *f = *state;
    char before[40], body[1024];
    json_t *h = NULL;
    control_ok(f, "/_sandbox/vapi/config", "{\"default_outcome\":\"never-ends\"}");
    // the sandbox's clock, a little in the past, as the daemon would note it before dialling
    time_t now = time(NULL) - 2;
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(before, sizeof before, "%Y-%m-%dT%H:%M:%S.000Z", &tm);
    // the call is created, then the connection is closed before the answer
    control_ok(f, "/_sandbox/faults",
               "{\"provider\":\"vapi\",\"path_prefix\":\"/call\",\"method\":\"POST\",\"drop\":true,\"when\":\"after\"}");
    call_body(body, sizeof body, "+15551235001", "bk_50", 600);
    assert_int_equal(vapi(f, "POST", "/call", VAPI_KEY, body, NULL), 0);
    create_call(f, "second-option-key-0002", "+15551235001", "bk_51", (char[64]){0}, NULL);   // another org
    char path[256];
    snprintf(path, sizeof path, "/call?createdAtGt=%s&phoneNumberId=" PHONE_NUMBER_ID "&limit=10", before);
    json_t *list = NULL;
    assert_int_equal(vapi(f, "GET", path, VAPI_KEY, NULL, &list), 200);
    assert_true(json_is_array(list));
    assert_int_equal(json_array_size(list), 1);
    const json_t *found = json_array_get(list, 0);
    assert_string_equal(jstr(found, "customer.number"), "+15551235001");
    assert_string_equal(jstr(found, "assistantOverrides.metadata.booking_id"), "bk_50");
    char id[64];
    snprintf(id, sizeof id, "%s", jstr(found, "id"));
    // createdAtGt its own createdAt excludes it; createdAtGe includes it
    char created[40];
    snprintf(created, sizeof created, "%s", jstr(found, "createdAt"));
    json_decref(list);
    snprintf(path, sizeof path, "/call?createdAtGt=%s", created);
    assert_int_equal(vapi(f, "GET", path, VAPI_KEY, NULL, &list), 200);
    assert_int_equal(json_array_size(list), 0);
    json_decref(list);
    snprintf(path, sizeof path, "/call?createdAtGe=%s&id=%s", created, id);
    assert_int_equal(vapi(f, "GET", path, VAPI_KEY, NULL, &list), 200);
    assert_int_equal(json_array_size(list), 1);
    json_decref(list);
    // other phone number: nothing; bad parameters: 400 NestJS-style
    assert_int_equal(vapi(f, "GET", "/call?phoneNumberId=00000000-0000-4000-8000-000000000000", VAPI_KEY, NULL, &list),
                     200);
    assert_int_equal(json_array_size(list), 0);
    json_decref(list);
    assert_int_equal(vapi(f, "GET", "/call?createdAtGt=yesterday", VAPI_KEY, NULL, &h), 400);
    assert_true(has_message(h, "createdAtGt must be a valid ISO 8601 date string"));
    json_decref(h);
    assert_int_equal(vapi(f, "GET", "/call?number=%2B15551235001", VAPI_KEY, NULL, &h), 400);
    assert_true(has_message(h, "property number should not exist"));
    json_decref(h);
    // the fault was recorded against the request
    json_t *j = NULL;
    assert_int_equal(control(f, "GET", "/_sandbox/requests?provider=vapi&method=POST", NULL, &j), 200);
    assert_true(json_is_true(jget(json_array_get(json_object_get(j, "requests"), 0), "fault.drop")));
    json_decref(j);
}

static void test_vapi_stats_record_the_peak_per_key(void **state) {
    fixture_t *f = *state;
    control_ok(f, "/_sandbox/vapi/keys", "{\"key\":\"peak-test-key-P003\",\"limit\":3}");
    control_ok(f, "/_sandbox/vapi/script",
               "{\"number\":\"+15551236001\",\"outcomes\":[\"never-ends\",\"never-ends\",\"answer:0.2\",\"never-ends\"]}");
    char ids[3][64];
    for (int i = 0; i < 3; i++) create_call(f, "peak-test-key-P003", "+15551236001", "bk_60", ids[i], NULL);
    json_t *k = key_stats(f, "P003");
    assert_int_equal(int_of(k, "peak"), 3);   // all three were held at once, whatever ended since
    json_decref(k);
    end_by_control(f, ids[0]);
    end_by_control(f, ids[1]);
    assert_int_equal(wait_call_status(f, "peak-test-key-P003", ids[2], "ended", 5000), 0);
    k = key_stats(f, "P003");
    assert_int_equal(int_of(k, "active"), 0);
    json_decref(k);
    create_call(f, "peak-test-key-P003", "+15551236001", "bk_61", ids[0], NULL);
    k = key_stats(f, "P003");
    assert_int_equal(int_of(k, "active"), 1);
    assert_int_equal(int_of(k, "peak"), 3);
    assert_int_equal(int_of(k, "created"), 4);
    assert_int_equal(int_of(k, "limit"), 3);
    json_decref(k);
}

static void test_vapi_faults_answer_with_vapi_error_bodies(void **state) {
    fixture_t *f = *state;
    control_ok(f, "/_sandbox/faults", "{\"provider\":\"vapi\",\"path_prefix\":\"/call\",\"status\":500}");
    control_ok(f, "/_sandbox/faults", "{\"provider\":\"vapi\",\"path_prefix\":\"/call\",\"status\":429}");
    char body[1024], id[64];
    call_body(body, sizeof body, "+15551237001", "bk_70", 600);
    json_t *e = NULL;
    assert_int_equal(vapi(f, "POST", "/call", VAPI_KEY, body, &e), 500);
    assert_int_equal(json_integer_value(json_object_get(e, "statusCode")), 500);
    json_decref(e);
    assert_int_equal(vapi(f, "POST", "/call", VAPI_KEY, body, &e), 429);
    assert_int_equal(json_integer_value(json_object_get(e, "statusCode")), 429);
    json_decref(e);
    json_t *calls = NULL;
    assert_int_equal(control(f, "GET", "/_sandbox/vapi/calls", NULL, &calls), 200);
    assert_int_equal(json_array_size(json_object_get(calls, "calls")), 0);   // nothing ran
    json_decref(calls);
    // a delay holds the answer but the call exists meanwhile
    control_ok(f, "/_sandbox/faults", "{\"provider\":\"vapi\",\"path_prefix\":\"/call\",\"delay_ms\":300}");
    int64_t t0 = harness_now_ms();
    create_call(f, VAPI_KEY, "+15551237001", "bk_70", id, NULL);
    assert_true(harness_now_ms() - t0 >= 300);
}

static void test_reset_forgets_vapi_calls_and_run_time_keys(void **state) {
    fixture_t *f = *state;
    control_ok(f, "/_sandbox/vapi/keys", "{\"key\":\"run-time-key-R004\"}");
    control_ok(f, "/_sandbox/vapi/config", "{\"default_outcome\":\"never-ends\",\"concurrency_mode\":\"blocked\"}");
    control_ok(f, "/_sandbox/vapi/script", "{\"number\":\"+15551238001\",\"outcomes\":[\"busy\"]}");
    char id[64];
    create_call(f, VAPI_KEY, "+15551238001", "bk_80", id, NULL);
    control_ok(f, "/_sandbox/reset", "{}");
    json_t *j = NULL;
    assert_int_equal(control(f, "GET", "/_sandbox/vapi/calls", NULL, &j), 200);
    assert_int_equal(json_array_size(json_object_get(j, "calls")), 0);
    json_decref(j);
    assert_int_equal(control(f, "GET", "/_sandbox/vapi/scripts", NULL, &j), 200);
    assert_int_equal(json_array_size(json_object_get(j, "scripts")), 0);
    json_decref(j);
    assert_int_equal(control(f, "GET", "/_sandbox/vapi/config", NULL, &j), 200);
    assert_string_equal(jstr(j, "concurrency_mode"), "400");
    assert_string_equal(jstr(j, "default_outcome"), "answer:2");
    json_decref(j);
    // the run-time key is gone, the option keys stay with fresh counters
    assert_int_equal(vapi(f, "GET", "/call", "run-time-key-R004", NULL, NULL), 401);
    json_t *k = key_stats(f, "A001");
    assert_int_equal(int_of(k, "created"), 0);
    assert_int_equal(int_of(k, "peak"), 0);
    assert_int_equal(int_of(k, "active"), 0);
    json_decref(k);
    create_call(f, VAPI_KEY, "+15551238001", "bk_81", id, NULL);
}

int main(void) {
    curl_global_init(CURL_GLOBAL_DEFAULT);   // before any thread calls curl
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_vapi_create_call_answers_201_with_control_url),
        T(test_vapi_wrong_or_missing_key_gets_401),
        T(test_vapi_missing_or_bad_fields_get_400),
        T(test_vapi_over_limit_answers_400_over_concurrency_limit),
        T(test_vapi_over_limit_blocked_answers_201_already_ended),
        T(test_vapi_over_limit_ended_answers_201_then_an_ended_status),
        T(test_vapi_script_busy_then_answer_delivers_signed_messages),
        T(test_vapi_control_end_call_ends_a_never_ending_call),
        T(test_vapi_never_ending_call_stops_at_max_duration),
        T(test_vapi_lost_end_sends_no_end_messages_but_get_shows_ended),
        T(test_vapi_list_finds_a_call_whose_answer_was_lost),
        T(test_vapi_stats_record_the_peak_per_key),
        T(test_vapi_faults_answer_with_vapi_error_bodies),
        T(test_reset_forgets_vapi_calls_and_run_time_keys),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return rc;
}
