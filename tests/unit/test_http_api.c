// tests/unit/test_http_api.c — the HTTP actor's /api/* and /webhooks/* routes, in-process and over
// real HTTP (libcurl): the bus broker and the http actor run as czmq actors on a free port of
// 127.0.0.1, and scripted stand-ins for the payments and dialer actors (endpoints named "payments"
// and "dialer", each in its own thread, for this unit test only) record every command they get and
// answer HTTP_REPLY as the test tells them: at once, never, or when released.
//
// Also the pure parts behind those routes: the pending-request table, the rate limiter, and the
// decimal amounts of Cryptomus webhooks.
//
// Signatures are computed here with OpenSSL directly (HMAC-SHA256 for Stripe and VAPI,
// md5(base64(body) + key) for Cryptomus), not with the code under test.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
// cmocka after the standard headers it needs
#include <cmocka.h>

#include <arpa/inet.h>
#include <ctype.h>
#include <curl/curl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "tests/unit/curl_reply.h"
#include "bus/broker.h"
#include "bus/bus.h"
#include "common/token.h"
#include "conf/config.h"
#include "realtime/http.h"
#include "realtime/pending.h"
#include "realtime/ratelimit.h"
#include "realtime/webhook_parse.h"
#include "realtime/webhook_verify.h"

#define WAIT_MS 5000
#define TOKEN_SECRET "token-secret-for-tests"
#define STRIPE_SECRET "whsec_test_secret"
#define CRYPTOMUS_KEY "testPaymentKey123"
#define VAPI_SECRET "vapi-shared-secret-1"
#define VAPI_HMAC "vapi-hmac-secret-1"
#define ORIGIN "http://app.example"

// ---- the stand-ins for the payments and dialer actors --------------------------------------

typedef enum { MODE_REPLY, MODE_SILENT, MODE_HOLD } fake_mode_t;

typedef struct {
    fake_mode_t mode;
    int64_t status;
    char outcome[24];
    char body[4096];
    zlist_t *received;   // bus_msg_t* in arrival order
    zlist_t *held;       // bus_msg_t* replies not sent yet
} fake_t;

static int64_t request_id_of(const bus_msg_t *m) {
    switch (m->type) {
    case BUS_PLANS_GET: return m->u.plans_get.request_id;
    case BUS_BOOKING_CREATE: return m->u.booking_create.request_id;
    case BUS_BOOKING_GET: return m->u.booking_get.request_id;
    case BUS_BOOKING_CANCEL: return m->u.booking_cancel.request_id;
    case BUS_PAYMENT_WEBHOOK: return m->u.payment_webhook.request_id;
    case BUS_VAPI_WEBHOOK: return m->u.vapi_webhook.request_id;
    default: return -1;
    }
}

static void fake_on_command(fake_t *fake, bus_endpoint_t *ep, const bus_msg_t *msg) {
    bus_msg_t *copy = malloc(sizeof *copy);
    *copy = *msg;
    zlist_append(fake->received, copy);
    if (fake->mode == MODE_SILENT) return;
    bus_msg_t *reply = calloc(1, sizeof *reply);
    bus_msg_init(reply, BUS_HTTP_REPLY);
    reply->u.http_reply.request_id = request_id_of(msg);
    reply->u.http_reply.status = fake->status;
    snprintf(reply->u.http_reply.outcome, sizeof reply->u.http_reply.outcome, "%s", fake->outcome);
    snprintf(reply->u.http_reply.body, sizeof reply->u.http_reply.body, "%s", fake->body);
    if (fake->mode == MODE_HOLD) {
        zlist_append(fake->held, reply);
        return;
    }
    bus_send_to(ep, "http", reply, 1000);
    free(reply);
}

// args: the endpoint's name ("payments", "dialer"). Pipe commands: SCRIPT mode status outcome body
// (answers a signal); TAKE (answers one frame: the oldest command received as bus_msg_t bytes, or an
// empty frame); RELEASE (sends the held replies, answers a signal); $TERM.
static void fake_actor(zsock_t *pipe, void *args) {
    bus_endpoint_t *ep = bus_endpoint_new((const char *)args, NULL);
    zsock_signal(pipe, ep ? 0 : 1);
    if (!ep) return;
    fake_t fake = {.mode = MODE_REPLY, .status = 200, .received = zlist_new(), .held = zlist_new()};
    snprintf(fake.body, sizeof fake.body, "{\"ok\":true}");
    zpoller_t *poller = zpoller_new(pipe, bus_endpoint_inbox(ep), NULL);
    bool done = false;
    while (!done) {
        zsock_t *which = zpoller_wait(poller, -1);
        if (!which) break;
        if (which == pipe) {
            zmsg_t *m = zmsg_recv(pipe);
            if (!m) break;
            char *cmd = zmsg_popstr(m);
            if (!cmd || streq(cmd, "$TERM")) {
                done = true;
            } else if (streq(cmd, "SCRIPT")) {
                char *mode = zmsg_popstr(m), *status = zmsg_popstr(m), *outcome = zmsg_popstr(m), *body = zmsg_popstr(m);
                fake.mode = streq(mode, "silent") ? MODE_SILENT : streq(mode, "hold") ? MODE_HOLD : MODE_REPLY;
                fake.status = atoll(status);
                snprintf(fake.outcome, sizeof fake.outcome, "%s", outcome);
                snprintf(fake.body, sizeof fake.body, "%s", body);
                zstr_free(&mode);
                zstr_free(&status);
                zstr_free(&outcome);
                zstr_free(&body);
                zsock_signal(pipe, 0);
            } else if (streq(cmd, "TAKE")) {
                bus_msg_t *got = zlist_pop(fake.received);
                zframe_t *frame = got ? zframe_new(got, sizeof *got) : zframe_new_empty();
                zframe_send(&frame, pipe, 0);
                free(got);
            } else if (streq(cmd, "RELEASE")) {
                bus_msg_t *reply;
                while ((reply = zlist_pop(fake.held))) {
                    bus_send_to(ep, "http", reply, 1000);
                    free(reply);
                }
                zsock_signal(pipe, 0);
            }
            zstr_free(&cmd);
            zmsg_destroy(&m);
        } else {
            bus_msg_t msg;
            if (bus_endpoint_recv(ep, bus_endpoint_inbox(ep), &msg) == 0) fake_on_command(&fake, ep, &msg);
        }
    }
    void *item;
    while ((item = zlist_pop(fake.received))) free(item);
    while ((item = zlist_pop(fake.held))) free(item);
    zlist_destroy(&fake.received);
    zlist_destroy(&fake.held);
    zpoller_destroy(&poller);
    bus_endpoint_destroy(&ep);
}

// ---- fixture ----------------------------------------------------------------------------------

typedef struct {
    char tmpdir[64];
    char trace[128];
    bus_broker_args_t broker_args;
    zactor_t *broker;
    zactor_t *payments;
    zactor_t *dialer;
    config_t cfg;
    http_args_t http_args;
    zactor_t *http;
    int port;
    char base[80];
} fixture_t;

static void script_actor(zactor_t *actor, const char *mode, int status, const char *outcome, const char *body) {
    char st[16];
    snprintf(st, sizeof st, "%d", status);
    zstr_sendx(actor, "SCRIPT", mode, st, outcome, body, NULL);
    assert_int_equal(zsock_wait(actor), 0);
}

static void script(fixture_t *f, const char *mode, int status, const char *outcome, const char *body) {
    script_actor(f->payments, mode, status, outcome, body);
}

static void release_held(fixture_t *f) {
    zstr_send(f->payments, "RELEASE");
    assert_int_equal(zsock_wait(f->payments), 0);
}

// The oldest command a stand-in received, waiting up to timeout_ms. false when none came.
static bool take_from(zactor_t *actor, bus_msg_t *out, int timeout_ms) {
    int64_t deadline = zclock_mono() + timeout_ms;
    do {
        zstr_send(actor, "TAKE");
        zframe_t *frame = zframe_recv(actor);
        bool got = frame && zframe_size(frame) == sizeof *out;
        if (got) memcpy(out, zframe_data(frame), sizeof *out);
        zframe_destroy(&frame);
        if (got) return true;
        zclock_sleep(5);
    } while (zclock_mono() < deadline);
    return false;
}

static bool take(fixture_t *f, bus_msg_t *out, int timeout_ms) {
    return take_from(f->payments, out, timeout_ms);
}

static int free_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in in = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof in;
    int port = -1;
    if (bind(fd, (struct sockaddr *)&in, len) == 0 && getsockname(fd, (struct sockaddr *)&in, &len) == 0)
        port = ntohs(in.sin_port);
    close(fd);
    return port;
}

static bool http_start(fixture_t *f, int64_t reply_timeout_ms) {
    f->http_args = (http_args_t){.cfg = &f->cfg, .log = {.level = SLOG_WARN, .who = "http"},
                                 .reply_timeout_ms = reply_timeout_ms};
    f->http = zactor_new(http_actor, &f->http_args);
    if (!f->http) return false;
    zsock_set_rcvtimeo(zactor_sock(f->http), 10000);
    char *status = zstr_recv(f->http);
    bool ready = status && strcmp(status, "READY") == 0;
    zstr_free(&status);
    zsock_set_rcvtimeo(zactor_sock(f->http), -1);
    return ready;
}

// (Re)starts the http actor; another process may take the free port first, so try a few.
static void http_restart(fixture_t *f, int64_t reply_timeout_ms) {
    zactor_destroy(&f->http);
    for (int attempt = 0; attempt < 3; attempt++) {
        f->port = free_port();
        assert_true(f->port > 0);
        f->cfg.http_listen_port = f->port;
        snprintf(f->base, sizeof f->base, "http://127.0.0.1:%d", f->port);
        if (http_start(f, reply_timeout_ms)) return;
        zactor_destroy(&f->http);
    }
    fail_msg("the http actor did not start");
}

static int setup(void **state) {
    fixture_t *f = calloc(1, sizeof *f);
    if (!f) return -1;
    snprintf(f->tmpdir, sizeof f->tmpdir, "/tmp/test_http_api.XXXXXX");
    if (!mkdtemp(f->tmpdir)) return -1;
    snprintf(f->trace, sizeof f->trace, "ipc://%s/trace", f->tmpdir);
    f->broker_args = (bus_broker_args_t){.trace_endpoint = f->trace, .keep = 1000,
                                         .log = {.level = SLOG_WARN, .who = "broker"}};
    f->broker = bus_broker_new(&f->broker_args);
    if (!f->broker) return -1;
    f->payments = zactor_new(fake_actor, "payments");
    if (!f->payments) return -1;
    f->dialer = zactor_new(fake_actor, "dialer");
    if (!f->dialer) return -1;
    f->cfg.http_listen_host = "127.0.0.1";
    f->cfg.http_cors_origin = ORIGIN "/";   // a trailing slash in the configuration is tolerated
    f->cfg.http_booking_rate_per_min = 1000;
    f->cfg.http_webhook_rate_per_min = 1000;
    f->cfg.stripe_webhook_secret = STRIPE_SECRET;
    f->cfg.stripe_tolerance_s = 300;
    f->cfg.cryptomus_payment_key = CRYPTOMUS_KEY;
    f->cfg.vapi_webhook_secret = VAPI_SECRET;
    f->cfg.security_token_secret = TOKEN_SECRET;
    *state = f;
    http_restart(f, 5000);
    return 0;
}

static int teardown(void **state) {
    fixture_t *f = *state;
    zactor_destroy(&f->http);
    zactor_destroy(&f->payments);
    zactor_destroy(&f->dialer);
    zactor_destroy(&f->broker);
    char path[256];
    snprintf(path, sizeof path, "%s/trace", f->tmpdir);
    unlink(path);
    rmdir(f->tmpdir);
    free(f);
    return 0;
}

// ---- HTTP with curl -----------------------------------------------------------------------------


// One request. headers: NULL-terminated "Name: value" list (may be NULL). A POST body goes with
// whatever Content-Type the headers name, none when they name none.
static void call(fixture_t *f, const char *method, const char *path, const char *body, size_t len,
                 const char *const *headers, long timeout_ms, reply_t *r) {
    memset(r, 0, sizeof *r);
    char url[512];
    snprintf(url, sizeof url, "%s%s", f->base, path);
    CURL *h = curl_easy_init();
    struct curl_slist *list = curl_slist_append(NULL, "Expect:");
    bool has_type = false;
    for (size_t i = 0; headers && headers[i]; i++) {
        list = curl_slist_append(list, headers[i]);
        if (strncasecmp(headers[i], "Content-Type:", 13) == 0) has_type = true;
    }
    if (!has_type) list = curl_slist_append(list, "Content-Type:");   // curl would add a form type
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, list);
    if (strcmp(method, "POST") == 0) {
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, body ? body : "");
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)len);
    } else if (strcmp(method, "GET") != 0) {
        curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    }
    r->rc = curl_easy_perform(h);
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r->status);
    curl_slist_free_all(list);
    curl_easy_cleanup(h);
}

static void get(fixture_t *f, const char *path, const char *const *headers, reply_t *r) {
    call(f, "GET", path, NULL, 0, headers, 5000, r);
}

static void post(fixture_t *f, const char *path, const char *body, const char *const *headers, reply_t *r) {
    call(f, "POST", path, body, body ? strlen(body) : 0, headers, 5000, r);
}

static const char *const json_headers[] = {"Content-Type: application/json", NULL};

static bool has_header(const reply_t *r, const char *line) {
    return strcasestr(r->headers, line) != NULL;
}

static void error_code(const reply_t *r, char *out, size_t size) {
    out[0] = '\0';
    json_t *root = r->body ? json_loads(r->body, 0, NULL) : NULL;
    const char *code = json_string_value(json_object_get(json_object_get(root, "error"), "code"));
    const char *message = json_string_value(json_object_get(json_object_get(root, "error"), "message"));
    if (code && message) snprintf(out, size, "%s", code);
    json_decref(root);
}

#define assert_error(r, want_status, want_code)                                                              \
    do {                                                                                                     \
        char code_[64];                                                                                      \
        error_code((r), code_, sizeof code_);                                                                \
        if ((r)->status != (want_status) || strcmp(code_, (want_code)) != 0)                                 \
            fail_msg("want %d %s, got %ld %s (%s)", (want_status), (want_code), (r)->status, code_,           \
                     (r)->body ? (r)->body : "");                                                            \
        assert_true(has_header((r), "Content-Type: application/json; charset=utf-8"));                       \
    } while (0)

// GETs /metrics until its body contains `needle`.
static bool metrics_show(fixture_t *f, const char *needle) {
    int64_t deadline = zclock_mono() + WAIT_MS;
    while (zclock_mono() < deadline) {
        reply_t r;
        get(f, "/metrics", NULL, &r);
        bool found = r.status == 200 && r.body && strstr(r.body, needle);
        reply_clear(&r);
        if (found) return true;
        zclock_sleep(20);
    }
    return false;
}

static void bearer_header(char *out, size_t size, const char *booking_id, int64_t issued_at, int64_t ttl,
                          const char *secret) {
    char token[512];
    assert_int_equal(token_issue(secret, booking_id, issued_at, ttl, token, sizeof token), 0);
    snprintf(out, size, "Authorization: Bearer %s", token);
}

// Proves that nothing was sent before it: a request that certainly reaches payments, whose command
// must then be the first one the stand-in holds.
static void assert_nothing_sent(fixture_t *f) {
    char auth[700];
    bearer_header(auth, sizeof auth, "barrier", time(NULL), 600, TOKEN_SECRET);
    const char *headers[] = {auth, NULL};
    script(f, "reply", 200, "", "{}");
    reply_t r;
    get(f, "/api/bookings/barrier", headers, &r);
    assert_int_equal(r.status, 200);
    reply_clear(&r);
    bus_msg_t m;
    assert_true(take(f, &m, WAIT_MS));
    if (m.type != BUS_BOOKING_GET || strcmp(m.u.booking_get.booking_id, "barrier") != 0)
        fail_msg("a command was sent: %s", bus_type_topic(m.type));
}

// ---- signatures, computed independently ----------------------------------------------------------

static void stripe_header(char *out, size_t size, const char *secret, int64_t t, const char *body) {
    char *payload = NULL;
    assert_true(asprintf(&payload, "%lld.%s", (long long)t, body) > 0);
    unsigned char mac[32];
    unsigned int maclen = 0;
    HMAC(EVP_sha256(), secret, (int)strlen(secret), (const unsigned char *)payload, strlen(payload), mac, &maclen);
    free(payload);
    assert_int_equal(maclen, 32);
    char hex[65];
    for (int i = 0; i < 32; i++) sprintf(hex + 2 * i, "%02x", mac[i]);
    snprintf(out, size, "Stripe-Signature: t=%lld,v1=%s", (long long)t, hex);
}

// The body with ,"sign":"<md5(base64(body) + key)>" appended as its last member, as Cryptomus does.
static char *cryptomus_signed(const char *unsigned_body, const char *key) {
    size_t n = strlen(unsigned_body);
    unsigned char *b64 = malloc(4 * ((n + 2) / 3) + 1);
    EVP_EncodeBlock(b64, (const unsigned char *)unsigned_body, (int)n);
    char *text = NULL;
    assert_true(asprintf(&text, "%s%s", (char *)b64, key) > 0);
    free(b64);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    assert_int_equal(EVP_Digest(text, strlen(text), md, &mdlen, EVP_md5(), NULL), 1);
    free(text);
    char hex[33];
    for (unsigned i = 0; i < mdlen && i < 16; i++) sprintf(hex + 2 * i, "%02x", md[i]);
    char *out = NULL;
    assert_true(asprintf(&out, "%.*s,\"sign\":\"%s\"}", (int)(n - 1), unsigned_body, hex) > 0);
    return out;
}

static void sha256_hex(const char *s, char hex[65]) {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    EVP_Digest(s, strlen(s), md, &mdlen, EVP_sha256(), NULL);
    for (unsigned i = 0; i < mdlen; i++) sprintf(hex + 2 * i, "%02x", md[i]);
}

static void rfc3339(int64_t t, char *out, size_t size) {
    time_t tt = (time_t)t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    strftime(out, size, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

// ---- bookings ------------------------------------------------------------------------------------

static void test_every_booking_validation_error_reaches_the_client_and_nothing_is_sent(void **state) {
    fixture_t *f = *state;
    char past[32], far[32];
    rfc3339(time(NULL) - 3600, past, sizeof past);
    rfc3339(time(NULL) + 40 * 86400, far, sizeof far);
    char body_past[256], body_far[256];
    snprintf(body_past, sizeof body_past,
             "{\"name\":\"Ann\",\"phone\":\"+15551234567\",\"plan\":\"standard\",\"scheduled_for\":\"%s\"}", past);
    snprintf(body_far, sizeof body_far,
             "{\"name\":\"Ann\",\"phone\":\"+15551234567\",\"plan\":\"standard\",\"scheduled_for\":\"%s\"}", far);
    char long_message[700];
    memset(long_message, 'x', 501);
    long_message[501] = '\0';
    char body_long[900];
    snprintf(body_long, sizeof body_long,
             "{\"name\":\"Ann\",\"phone\":\"+15551234567\",\"plan\":\"standard\",\"message\":\"%s\"}", long_message);
    struct {
        const char *body;
        const char *code;
    } cases[] = {
        {"not json", "invalid_json"},
        {"[1,2]", "invalid_json"},
        {"", "invalid_json"},
        {"{\"phone\":\"+15551234567\",\"plan\":\"standard\"}", "invalid_name"},
        {"{\"name\":\"Ann\",\"phone\":\"5551234567\",\"plan\":\"standard\"}", "invalid_phone"},
        {"{\"name\":\"Ann\",\"phone\":\"+15551234567\",\"email\":\"nope\",\"plan\":\"standard\"}", "invalid_email"},
        {"{\"name\":\"Ann\",\"phone\":\"+15551234567\",\"plan\":\"gold\"}", "invalid_plan"},
        {body_long, "message_too_long"},
        {body_past, "invalid_scheduled_for"},
        {body_far, "invalid_scheduled_for"},
        {"{\"name\":\"Ann\",\"phone\":\"+15551234567\",\"plan\":\"standard\",\"payment_method\":\"cash\"}",
         "invalid_payment_method"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        reply_t r;
        post(f, "/api/bookings", cases[i].body, json_headers, &r);
        assert_error(&r, 400, cases[i].code);
        reply_clear(&r);
    }
    assert_nothing_sent(f);
}

static void test_booking_needs_a_json_content_type(void **state) {
    fixture_t *f = *state;
    const char *body = "{\"name\":\"Ann\",\"phone\":\"+15551234567\",\"plan\":\"free_trial\"}";
    const char *none[] = {NULL};
    const char *text[] = {"Content-Type: text/plain", NULL};
    const char *form[] = {"Content-Type: application/x-www-form-urlencoded", NULL};
    const char *lookalike[] = {"Content-Type: application/jsonp", NULL};
    const char *const *bad[] = {none, text, form, lookalike};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        reply_t r;
        post(f, "/api/bookings", body, bad[i], &r);
        assert_error(&r, 415, "unsupported_media_type");
        reply_clear(&r);
    }
    assert_nothing_sent(f);

    // parameters and case do not matter
    const char *with_charset[] = {"Content-Type: Application/JSON; charset=utf-8", NULL};
    script(f, "reply", 201, "", "{\"booking_id\":\"b1\",\"status\":\"queued\",\"status_token\":\"t\"}");
    reply_t r;
    post(f, "/api/bookings", body, with_charset, &r);
    assert_int_equal(r.status, 201);
    reply_clear(&r);
    bus_msg_t m;
    assert_true(take(f, &m, WAIT_MS));
    assert_int_equal(m.type, BUS_BOOKING_CREATE);
}

static void test_booking_body_over_16k_is_413(void **state) {
    fixture_t *f = *state;
    size_t len = 16 * 1024 + 1;
    char *body = malloc(len + 1);
    memset(body, ' ', len);
    body[len] = '\0';
    reply_t r;
    call(f, "POST", "/api/bookings", body, len, json_headers, 5000, &r);
    assert_error(&r, 413, "too_large");
    reply_clear(&r);
    free(body);
    assert_nothing_sent(f);
}

static void test_booking_rate_limit_answers_429_past_the_limit(void **state) {
    fixture_t *f = *state;
    f->cfg.http_booking_rate_per_min = 3;
    http_restart(f, 5000);
    reply_t r;
    for (int i = 0; i < 3; i++) {   // invalid requests count too
        post(f, "/api/bookings", "{}", json_headers, &r);
        assert_error(&r, 400, "invalid_name");
        reply_clear(&r);
    }
    post(f, "/api/bookings", "{}", json_headers, &r);
    assert_error(&r, 429, "rate_limited");
    reply_clear(&r);
    // other routes are not limited by it
    script(f, "reply", 200, "", "{\"plans\":[]}");
    get(f, "/api/plans", NULL, &r);
    assert_int_equal(r.status, 200);
    reply_clear(&r);
    assert_true(metrics_show(f, "sweety_http_requests_total{path=\"/api/bookings\",status=\"429\"} 1\n"));
}

static void test_idempotency_key_must_be_short_printable_ascii(void **state) {
    fixture_t *f = *state;
    const char *body = "{\"name\":\"Ann\",\"phone\":\"+15551234567\",\"plan\":\"free_trial\"}";
    char too_long[300], longest[300];
    snprintf(too_long, sizeof too_long, "Idempotency-Key: %0256d", 7);
    snprintf(longest, sizeof longest, "Idempotency-Key: %0255d", 7);
    const char *h_long[] = {"Content-Type: application/json", too_long, NULL};
    const char *h_utf8[] = {"Content-Type: application/json", "Idempotency-Key: caf\xc3\xa9", NULL};
    const char *h_ctrl[] = {"Content-Type: application/json", "Idempotency-Key: a\x01z", NULL};
    const char *const *bad[] = {h_long, h_utf8, h_ctrl};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        reply_t r;
        post(f, "/api/bookings", body, bad[i], &r);
        assert_error(&r, 400, "invalid_idempotency_key");
        reply_clear(&r);
    }
    assert_nothing_sent(f);

    const char *h_ok[] = {"Content-Type: application/json", longest, NULL};
    script(f, "reply", 201, "", "{}");
    reply_t r;
    post(f, "/api/bookings", body, h_ok, &r);
    assert_int_equal(r.status, 201);
    reply_clear(&r);
    bus_msg_t m;
    assert_true(take(f, &m, WAIT_MS));
    assert_int_equal(m.type, BUS_BOOKING_CREATE);
    assert_string_equal(m.u.booking_create.idem_key, longest + strlen("Idempotency-Key: "));
}

static void test_valid_booking_is_forwarded_with_every_field_and_the_reply_passed_through(void **state) {
    fixture_t *f = *state;
    int64_t when = (int64_t)time(NULL) + 3600;
    char at[32];
    rfc3339(when, at, sizeof at);
    char body[512];
    snprintf(body, sizeof body,
             "{\"name\":\"Ann Lee\",\"phone\":\"+15551234567\",\"email\":\"ann@example.com\",\"plan\":\"standard\","
             "\"message\":\"call me\\nlater\",\"payment_method\":\"cryptomus\",\"scheduled_for\":\"%s\"}",
             at);
    // deliberately odd spacing and key order: it must come back byte for byte
    const char *answer = "{\"booking_id\":\"0b7e\",  \"status\":\"pending_payment\",\"status_token\":\"tok\","
                         "\"checkout_url\":\"https://pay.example/x\",\"note\":\"\\u00e9\"}";
    script(f, "reply", 201, "", answer);
    // header names in any case
    const char *headers[] = {"content-type: application/json", "IDEMPOTENCY-KEY: key-1", NULL};
    reply_t r;
    post(f, "/api/bookings", body, headers, &r);
    assert_int_equal(r.status, 201);
    assert_string_equal(r.body, answer);
    assert_int_equal(r.len, strlen(answer));
    assert_true(has_header(&r, "Content-Type: application/json; charset=utf-8"));
    reply_clear(&r);

    bus_msg_t m;
    assert_true(take(f, &m, WAIT_MS));
    assert_int_equal(m.type, BUS_BOOKING_CREATE);
    const bus_booking_create_t *c = &m.u.booking_create;
    assert_true(c->request_id > 0);
    assert_string_equal(m.from, "http");
    assert_string_equal(c->idem_key, "key-1");
    char hash[65];
    sha256_hex(body, hash);
    assert_string_equal(c->request_hash, hash);
    assert_string_equal(c->name, "Ann Lee");
    assert_string_equal(c->phone, "+15551234567");
    assert_string_equal(c->email, "ann@example.com");
    assert_string_equal(c->plan, "standard");
    assert_string_equal(c->message, "call me\nlater");
    assert_string_equal(c->payment_method, "cryptomus");
    assert_int_equal(c->scheduled_for, when);

    // any status is passed through, errors included
    const char *cooldown = "{\"error\":{\"code\":\"free_trial_cooldown\",\"message\":\"m\",\"retry_after_s\":60}}";
    script(f, "reply", 409, "", cooldown);
    post(f, "/api/bookings", "{\"name\":\"Ann\",\"phone\":\"+15551234567\",\"plan\":\"free_trial\"}", json_headers, &r);
    assert_int_equal(r.status, 409);
    assert_string_equal(r.body, cooldown);
    reply_clear(&r);
    assert_true(take(f, &m, WAIT_MS));
    assert_string_equal(m.u.booking_create.idem_key, "");
    assert_string_equal(m.u.booking_create.payment_method, "none");
}

// ---- GET /api/bookings/{id}, cancel -----------------------------------------------------------------

static void test_booking_status_and_cancel_need_a_matching_token(void **state) {
    fixture_t *f = *state;
    int64_t now = (int64_t)time(NULL);
    char good[700], expired[700], other_id[700], other_secret[700];
    bearer_header(good, sizeof good, "bk-1", now, 3600, TOKEN_SECRET);
    bearer_header(expired, sizeof expired, "bk-1", now - 7200, 3600, TOKEN_SECRET);
    bearer_header(other_id, sizeof other_id, "bk-2", now, 3600, TOKEN_SECRET);
    bearer_header(other_secret, sizeof other_secret, "bk-1", now, 3600, "another-secret");
    char basic[760];
    snprintf(basic, sizeof basic, "Authorization: Basic %s", good + strlen("Authorization: Bearer "));
    const char *bad[] = {NULL, "Authorization: Bearer", "Authorization: Bearer not.a.token", basic, expired,
                         other_id, other_secret};
    char *first_body = NULL;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const char *headers[] = {bad[i], NULL};
        reply_t r;
        get(f, "/api/bookings/bk-1", headers, &r);
        assert_error(&r, 404, "not_found");
        if (!first_body) first_body = strdup(r.body);
        else assert_string_equal(r.body, first_body);   // one answer for every case
        reply_clear(&r);
        post(f, "/api/bookings/bk-1/cancel", NULL, headers, &r);
        assert_error(&r, 404, "not_found");
        assert_string_equal(r.body, first_body);
        reply_clear(&r);
    }
    free(first_body);
    assert_nothing_sent(f);

    const char *headers[] = {good, NULL};
    const char *status_body = "{\"booking_id\":\"bk-1\",\"status\":\"queued\",\"events\":[]}";
    script(f, "reply", 200, "", status_body);
    reply_t r;
    get(f, "/api/bookings/bk-1", headers, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, status_body);
    reply_clear(&r);
    bus_msg_t m;
    assert_true(take(f, &m, WAIT_MS));
    assert_int_equal(m.type, BUS_BOOKING_GET);
    assert_string_equal(m.u.booking_get.booking_id, "bk-1");
    assert_true(m.u.booking_get.request_id > 0);

    // a good token for another path's id
    get(f, "/api/bookings/bk-2", headers, &r);
    assert_error(&r, 404, "not_found");
    reply_clear(&r);

    // cancel: a body is ignored
    const char *cancel_body = "{\"booking_id\":\"bk-1\",\"status\":\"cancelled\",\"refund\":\"none\"}";
    script(f, "reply", 200, "", cancel_body);
    const char *with_body[] = {good, "Content-Type: application/json", NULL};
    post(f, "/api/bookings/bk-1/cancel", "{\"reason\":\"x\"}", with_body, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, cancel_body);
    reply_clear(&r);
    assert_true(take(f, &m, WAIT_MS));
    assert_int_equal(m.type, BUS_BOOKING_CANCEL);
    assert_string_equal(m.u.booking_cancel.booking_id, "bk-1");

    // wrong methods and unknown sub-paths
    post(f, "/api/bookings/bk-1", "{}", with_body, &r);
    assert_error(&r, 405, "method_not_allowed");
    assert_true(has_header(&r, "Allow: GET, HEAD"));
    reply_clear(&r);
    get(f, "/api/bookings/bk-1/cancel", headers, &r);
    assert_error(&r, 405, "method_not_allowed");
    assert_true(has_header(&r, "Allow: POST"));
    reply_clear(&r);
    get(f, "/api/bookings/bk-1/events", headers, &r);
    assert_error(&r, 404, "not_found");
    reply_clear(&r);
    get(f, "/api/bookings/", headers, &r);
    assert_error(&r, 404, "not_found");
    reply_clear(&r);
    assert_nothing_sent(f);
    assert_true(metrics_show(f, "sweety_http_requests_total{path=\"/api/bookings/{id}/cancel\",status=\"200\"} 1\n"));
}

// ---- plans ----------------------------------------------------------------------------------------

static void test_plans_are_passed_through_and_cached_for_a_second(void **state) {
    fixture_t *f = *state;
    const char *plans = "{\"plans\":[{\"key\":\"free_trial\",\"name\":\"Free\",\"price_cents\":0,"
                        "\"currency\":\"usd\",\"duration_seconds\":120}]}";
    script(f, "reply", 200, "", plans);
    reply_t r;
    int64_t t0 = zclock_mono();
    get(f, "/api/plans", NULL, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, plans);
    reply_clear(&r);
    bus_msg_t m;
    assert_true(take(f, &m, WAIT_MS));
    assert_int_equal(m.type, BUS_PLANS_GET);

    // within the second: from the cache (no command)
    get(f, "/api/plans", NULL, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, plans);
    reply_clear(&r);
    bool asked_again = take(f, &m, 0);
    if (asked_again) assert_true(zclock_mono() - t0 >= 1000);   // only a slow machine gets here

    // later: asked again
    int64_t deadline = zclock_mono() + WAIT_MS;
    while (!asked_again && zclock_mono() < deadline) {
        get(f, "/api/plans", NULL, &r);
        assert_int_equal(r.status, 200);
        reply_clear(&r);
        asked_again = take(f, &m, 50);
    }
    assert_true(asked_again);
    assert_true(zclock_mono() - t0 >= 1000);
}

// ---- replies that do not come ------------------------------------------------------------------

static void test_payments_answering_503_reaches_the_client(void **state) {
    fixture_t *f = *state;
    const char *down = "{\"error\":{\"code\":\"unavailable\",\"message\":\"the database is down\"}}";
    script(f, "reply", 503, "", down);
    reply_t r;
    post(f, "/api/bookings", "{\"name\":\"Ann\",\"phone\":\"+15551234567\",\"plan\":\"free_trial\"}", json_headers, &r);
    assert_error(&r, 503, "unavailable");
    assert_string_equal(r.body, down);
    reply_clear(&r);
}

static void test_no_reply_is_503_after_the_timeout_and_a_late_reply_is_ignored(void **state) {
    fixture_t *f = *state;
    http_restart(f, 400);
    script(f, "hold", 200, "", "{\"plans\":[]}");
    reply_t r;
    int64_t t0 = zclock_mono();
    get(f, "/api/plans", NULL, &r);
    int64_t took = zclock_mono() - t0;
    assert_error(&r, 503, "unavailable");
    assert_true(took >= 350);
    reply_clear(&r);
    bus_msg_t m;
    assert_true(take(f, &m, WAIT_MS));
    release_held(f);   // the answer comes after all: nobody waits for it any more

    script(f, "reply", 200, "", "{\"plans\":[1]}");
    get(f, "/api/plans", NULL, &r);   // not served from a cache filled by the late answer
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "{\"plans\":[1]}");
    reply_clear(&r);
    assert_true(metrics_show(f, "sweety_http_upstream_failures_total{reason=\"timeout\"} 1\n"));
    assert_true(metrics_show(f, "sweety_http_pending 0\n"));
}

static void test_client_leaving_before_the_reply_is_harmless(void **state) {
    fixture_t *f = *state;
    script(f, "hold", 200, "applied", "{\"received\":true}");
    const char *body = "{\"id\":\"evt_gone\",\"type\":\"payment_intent.created\",\"data\":{\"object\":{\"id\":\"pi_1\"}}}";
    char sig[256];
    stripe_header(sig, sizeof sig, STRIPE_SECRET, time(NULL), body);
    const char *headers[] = {"Content-Type: application/json", sig, NULL};
    reply_t r;
    call(f, "POST", "/webhooks/stripe", body, strlen(body), headers, 300, &r);   // gives up first
    assert_int_equal(r.rc, CURLE_OPERATION_TIMEDOUT);
    reply_clear(&r);
    bus_msg_t m;
    assert_true(take(f, &m, WAIT_MS));
    assert_int_equal(m.type, BUS_PAYMENT_WEBHOOK);
    assert_true(metrics_show(f, "sweety_http_pending 1\n"));   // the orphan waits for its answer
    release_held(f);
    // the answer is still counted, and nothing is written anywhere
    assert_true(metrics_show(f, "sweety_webhooks_total{provider=\"stripe\",outcome=\"applied\"} 1\n"));
    assert_true(metrics_show(f, "sweety_http_pending 0\n"));
    script(f, "reply", 200, "", "{\"plans\":[]}");
    get(f, "/api/plans", NULL, &r);
    assert_int_equal(r.status, 200);
    reply_clear(&r);
}

typedef struct {
    fixture_t *f;
    reply_t r;
} async_call_t;

static void *plans_in_thread(void *arg) {
    async_call_t *a = arg;
    get(a->f, "/api/plans", NULL, &a->r);
    return NULL;
}

static void test_stop_answers_waiting_requests_503(void **state) {
    fixture_t *f = *state;
    script(f, "hold", 200, "", "{\"plans\":[]}");
    async_call_t a = {.f = f};
    pthread_t thread;
    assert_int_equal(pthread_create(&thread, NULL, plans_in_thread, &a), 0);
    bus_msg_t m;
    assert_true(take(f, &m, WAIT_MS));   // the request is waiting
    zactor_destroy(&f->http);            // drains, then answers it
    pthread_join(thread, NULL);
    assert_int_equal(a.r.rc, CURLE_OK);
    assert_error(&a.r, 503, "unavailable");
    assert_true(has_header(&a.r, "Connection: close"));
    reply_clear(&a.r);
    release_held(f);
}

// ---- Stripe -------------------------------------------------------------------------------------

static const char stripe_completed[] =
    "{\"id\":\"evt_1\",\"object\":\"event\",\"type\":\"checkout.session.completed\",\"created\":1700000000,"
    "\"data\":{\"object\":{\"id\":\"cs_test_1\",\"object\":\"checkout.session\",\"client_reference_id\":\"bk-1\","
    "\"metadata\":{\"booking_id\":\"bk-meta\"},\"payment_status\":\"paid\",\"status\":\"complete\","
    "\"payment_intent\":\"pi_1\",\"amount_total\":1500,\"currency\":\"usd\"}}}";

static void stripe_post(fixture_t *f, const char *sig_header, const char *body, reply_t *r) {
    const char *headers[] = {"Content-Type: application/json", sig_header, NULL};
    call(f, "POST", "/webhooks/stripe", body, strlen(body), headers, 5000, r);
}

static void test_stripe_webhook_with_a_bad_signature_is_400_and_sends_nothing(void **state) {
    fixture_t *f = *state;
    int64_t now = (int64_t)time(NULL);
    char wrong_secret[256], stale[256], good[256];
    stripe_header(wrong_secret, sizeof wrong_secret, "whsec_other", now, stripe_completed);
    stripe_header(stale, sizeof stale, STRIPE_SECRET, now - 1000, stripe_completed);
    stripe_header(good, sizeof good, STRIPE_SECRET, now, stripe_completed);
    char *tampered = strdup(stripe_completed);
    *strstr(tampered, "1500") = '9';
    reply_t r;
    stripe_post(f, wrong_secret, stripe_completed, &r);
    assert_error(&r, 400, "bad_signature");
    reply_clear(&r);
    stripe_post(f, stale, stripe_completed, &r);
    assert_error(&r, 400, "stale_timestamp");
    reply_clear(&r);
    stripe_post(f, good, tampered, &r);
    assert_error(&r, 400, "bad_signature");
    reply_clear(&r);
    stripe_post(f, "X-Nothing: 1", stripe_completed, &r);   // no Stripe-Signature at all
    assert_error(&r, 400, "bad_signature");
    reply_clear(&r);
    free(tampered);
    assert_nothing_sent(f);
    assert_true(metrics_show(f, "sweety_webhooks_total{provider=\"stripe\",outcome=\"bad_signature\"} 4\n"));
}

static void test_stripe_webhook_with_a_good_signature_is_forwarded(void **state) {
    fixture_t *f = *state;
    script(f, "reply", 200, "applied", "{\"received\":true}");
    char sig[256];
    stripe_header(sig, sizeof sig, STRIPE_SECRET, time(NULL), stripe_completed);
    reply_t r;
    stripe_post(f, sig, stripe_completed, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "{\"received\":true}");
    reply_clear(&r);
    bus_msg_t m;
    assert_true(take(f, &m, WAIT_MS));
    assert_int_equal(m.type, BUS_PAYMENT_WEBHOOK);
    const bus_payment_webhook_t *w = &m.u.payment_webhook;
    assert_true(w->request_id > 0);
    assert_string_equal(w->provider, "stripe");
    assert_string_equal(w->event_id, "evt_1");
    assert_string_equal(w->event_type, "checkout.session.completed");
    assert_string_equal(w->object_id, "cs_test_1");
    assert_string_equal(w->booking_id, "bk-1");   // client_reference_id wins over metadata
    assert_string_equal(w->payment_status, "paid");
    assert_string_equal(w->status, "complete");
    assert_string_equal(w->payment_intent, "pi_1");
    assert_int_equal(w->amount_cents, 1500);
    assert_string_equal(w->currency, "usd");
    assert_string_equal(w->refund_id, "");
    assert_string_equal(w->order_id, "");

    // a refund: its id, and a charge.refunded: the amount refunded, the booking from metadata
    const char *refund = "{\"id\":\"evt_2\",\"type\":\"refund.updated\",\"data\":{\"object\":{\"id\":\"re_9\","
                         "\"status\":\"succeeded\",\"payment_intent\":\"pi_1\",\"metadata\":{\"booking_id\":\"bk-7\"}}}}";
    const char *charge = "{\"id\":\"evt_3\",\"type\":\"charge.refunded\",\"data\":{\"object\":{\"id\":\"ch_1\","
                         "\"amount_refunded\":700,\"refunded\":false,\"currency\":\"usd\",\"payment_intent\":\"pi_1\"}}}";
    script(f, "reply", 200, "duplicate", "{\"received\":true}");
    stripe_header(sig, sizeof sig, STRIPE_SECRET, time(NULL), refund);
    memcpy(sig, "stripe-SIGNATURE", 16);   // header names in any case
    stripe_post(f, sig, refund, &r);
    assert_int_equal(r.status, 200);
    reply_clear(&r);
    assert_true(take(f, &m, WAIT_MS));
    assert_string_equal(m.u.payment_webhook.refund_id, "re_9");
    assert_string_equal(m.u.payment_webhook.object_id, "re_9");
    assert_string_equal(m.u.payment_webhook.booking_id, "bk-7");
    assert_string_equal(m.u.payment_webhook.status, "succeeded");
    script(f, "reply", 200, "unknown_target", "{\"received\":true}");
    stripe_header(sig, sizeof sig, STRIPE_SECRET, time(NULL), charge);
    stripe_post(f, sig, charge, &r);
    assert_int_equal(r.status, 200);
    reply_clear(&r);
    assert_true(take(f, &m, WAIT_MS));
    assert_int_equal(m.u.payment_webhook.amount_cents, 700);
    assert_string_equal(m.u.payment_webhook.object_id, "ch_1");
    assert_string_equal(m.u.payment_webhook.booking_id, "");

    // verified but unreadable: 400 invalid_payload, nothing sent
    const char *unreadable[] = {"{\"object\":\"event\"}", "not json at all"};
    for (size_t i = 0; i < 2; i++) {
        stripe_header(sig, sizeof sig, STRIPE_SECRET, time(NULL), unreadable[i]);
        stripe_post(f, sig, unreadable[i], &r);
        assert_error(&r, 400, "invalid_payload");
        reply_clear(&r);
    }
    assert_nothing_sent(f);
    // payments refusing to record one (a 4xx without an outcome) counts as invalid_payload too
    const char *refused = "{\"error\":{\"code\":\"invalid_payload\",\"message\":\"the event could not be recorded\"}}";
    script(f, "reply", 400, "", refused);
    stripe_header(sig, sizeof sig, STRIPE_SECRET, time(NULL), stripe_completed);
    stripe_post(f, sig, stripe_completed, &r);
    assert_error(&r, 400, "invalid_payload");
    assert_string_equal(r.body, refused);
    reply_clear(&r);
    assert_true(take(f, &m, WAIT_MS));
    assert_true(metrics_show(f, "sweety_webhooks_total{provider=\"stripe\",outcome=\"applied\"} 1\n"));
    assert_true(metrics_show(f, "sweety_webhooks_total{provider=\"stripe\",outcome=\"duplicate\"} 1\n"));
    assert_true(metrics_show(f, "sweety_webhooks_total{provider=\"stripe\",outcome=\"unknown_target\"} 1\n"));
    assert_true(metrics_show(f, "sweety_webhooks_total{provider=\"stripe\",outcome=\"invalid_payload\"} 3\n"));
}

static void test_webhook_not_stored_is_never_answered_2xx(void **state) {
    fixture_t *f = *state;
    script(f, "reply", 503, "", "{\"error\":{\"code\":\"unavailable\",\"message\":\"not stored\"}}");
    char sig[256];
    stripe_header(sig, sizeof sig, STRIPE_SECRET, time(NULL), stripe_completed);
    reply_t r;
    stripe_post(f, sig, stripe_completed, &r);
    assert_error(&r, 503, "unavailable");
    reply_clear(&r);
    assert_true(metrics_show(f, "sweety_webhooks_total{provider=\"stripe\",outcome=\"unavailable\"} 1\n"));

    http_restart(f, 300);   // and no answer at all
    script(f, "silent", 0, "", "");
    stripe_post(f, sig, stripe_completed, &r);
    assert_error(&r, 503, "unavailable");
    reply_clear(&r);

    f->cfg.stripe_webhook_secret = NULL;   // not configured: refused, not accepted
    http_restart(f, 5000);
    stripe_post(f, sig, stripe_completed, &r);
    assert_error(&r, 503, "unavailable");
    reply_clear(&r);
}

static void test_webhook_bodies_up_to_256k_are_read_and_larger_are_413(void **state) {
    fixture_t *f = *state;
    size_t len = 200 * 1024;   // over the 16 KiB of the API routes
    char *body = malloc(256 * 1024 + 2);
    memset(body, ' ', 256 * 1024 + 1);
    body[len] = '\0';
    char sig[256];
    stripe_header(sig, sizeof sig, "whsec_other", time(NULL), body);
    reply_t r;
    stripe_post(f, sig, body, &r);
    assert_error(&r, 400, "bad_signature");
    reply_clear(&r);
    body[len] = ' ';
    body[256 * 1024 + 1] = '\0';   // one byte over
    stripe_post(f, sig, body, &r);
    assert_error(&r, 413, "too_large");
    reply_clear(&r);
    free(body);
}

static void test_webhook_rate_limit_is_per_endpoint_and_counted(void **state) {
    fixture_t *f = *state;
    f->cfg.http_webhook_rate_per_min = 2;
    http_restart(f, 5000);
    char sig[256];
    stripe_header(sig, sizeof sig, "whsec_other", time(NULL), stripe_completed);
    reply_t r;
    for (int i = 0; i < 2; i++) {
        stripe_post(f, sig, stripe_completed, &r);
        assert_error(&r, 400, "bad_signature");
        reply_clear(&r);
    }
    stripe_post(f, sig, stripe_completed, &r);
    assert_error(&r, 429, "rate_limited");
    reply_clear(&r);
    // Cryptomus has a limit of its own
    post(f, "/webhooks/cryptomus", "{\"uuid\":\"u\"}", json_headers, &r);
    assert_error(&r, 400, "bad_signature");
    reply_clear(&r);
    assert_true(metrics_show(f, "sweety_webhooks_total{provider=\"stripe\",outcome=\"rate_limited\"} 1\n"));
    assert_true(metrics_show(f, "sweety_webhooks_total{provider=\"cryptomus\",outcome=\"bad_signature\"} 1\n"));
}

// ---- Cryptomus ----------------------------------------------------------------------------------

static void test_cryptomus_webhook_good_and_bad_signatures(void **state) {
    fixture_t *f = *state;
    const char *unsigned_body =
        "{\"type\":\"payment\",\"uuid\":\"62f88b36-a9d5-4fa6-aa5d-4d5d7e9b9f2a\",\"order_id\":\"bk-42\","
        "\"amount\":\"15.5\",\"payment_amount\":\"15.50\",\"merchant_amount\":\"15.19\",\"is_final\":true,"
        "\"status\":\"paid\",\"currency\":\"USD\",\"additional_data\":\"https:\\/\\/x.example\\/a\"}";
    char *good = cryptomus_signed(unsigned_body, CRYPTOMUS_KEY);
    char *wrong_key = cryptomus_signed(unsigned_body, "anotherKey");
    char *tampered = strdup(good);
    memcpy(strstr(tampered, "\"paid\""), "\"fail\"", 6);

    reply_t r;
    post(f, "/webhooks/cryptomus", wrong_key, json_headers, &r);
    assert_error(&r, 400, "bad_signature");
    reply_clear(&r);
    post(f, "/webhooks/cryptomus", tampered, json_headers, &r);
    assert_error(&r, 400, "bad_signature");
    reply_clear(&r);
    assert_nothing_sent(f);
    assert_true(metrics_show(f, "sweety_webhooks_total{provider=\"cryptomus\",outcome=\"bad_signature\"} 2\n"));

    script(f, "reply", 200, "applied", "{\"received\":true}");
    post(f, "/webhooks/cryptomus", good, json_headers, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "{\"received\":true}");
    reply_clear(&r);
    bus_msg_t m;
    assert_true(take(f, &m, WAIT_MS));
    assert_int_equal(m.type, BUS_PAYMENT_WEBHOOK);
    const bus_payment_webhook_t *w = &m.u.payment_webhook;
    assert_string_equal(w->provider, "cryptomus");
    assert_string_equal(w->event_id, "62f88b36-a9d5-4fa6-aa5d-4d5d7e9b9f2a:paid");
    assert_string_equal(w->event_type, "payment");
    assert_string_equal(w->object_id, "62f88b36-a9d5-4fa6-aa5d-4d5d7e9b9f2a");
    assert_string_equal(w->order_id, "bk-42");
    assert_string_equal(w->booking_id, "bk-42");
    assert_string_equal(w->status, "paid");
    assert_true(w->is_final);
    assert_int_equal(w->amount_cents, 1550);
    assert_string_equal(w->currency, "USD");
    assert_true(metrics_show(f, "sweety_webhooks_total{provider=\"cryptomus\",outcome=\"applied\"} 1\n"));

    // verified, but without the fields we need
    char *no_order = cryptomus_signed("{\"uuid\":\"u-1\",\"status\":\"paid\"}", CRYPTOMUS_KEY);
    post(f, "/webhooks/cryptomus", no_order, json_headers, &r);
    assert_error(&r, 400, "invalid_payload");
    reply_clear(&r);
    assert_nothing_sent(f);
    free(no_order);
    free(good);
    free(wrong_key);
    free(tampered);
}

// ---- VAPI ---------------------------------------------------------------------------------------

#define VAPI_CALL "6f1c2b9e-1d2a-4f43-9a57-0c4f1f0d9e11"
#define VAPI_BOOKING "0b7e3a1c-8a51-4c1e-9a57-2f6f5e1c9d3a"

static const char vapi_ringing[] =
    "{\"message\":{\"type\":\"status-update\",\"status\":\"ringing\",\"timestamp\":1795293061000,"
    "\"call\":{\"id\":\"" VAPI_CALL "\",\"status\":\"ringing\",\"phoneNumberId\":\"ph-1\","
    "\"assistantOverrides\":{\"metadata\":{\"booking_id\":\"" VAPI_BOOKING "\",\"attempt\":1}}},"
    "\"customer\":{\"number\":\"+15551234567\"}}}";

// hex HMAC-SHA256(secret, "<timestamp>.<body>"), as VAPI's HMAC credential signs by default.
static void vapi_hmac_hex(const char *secret, const char *timestamp, const char *body, size_t len, char hex[65]) {
    char *payload = malloc(strlen(timestamp) + 1 + len + 1);
    size_t tl = strlen(timestamp);
    memcpy(payload, timestamp, tl);
    payload[tl] = '.';
    memcpy(payload + tl + 1, body, len);
    unsigned char mac[32];
    unsigned int maclen = 0;
    HMAC(EVP_sha256(), secret, (int)strlen(secret), (const unsigned char *)payload, tl + 1 + len, mac, &maclen);
    free(payload);
    assert_int_equal(maclen, 32);
    for (int i = 0; i < 32; i++) sprintf(hex + 2 * i, "%02x", mac[i]);
}

// POSTs body to /webhooks/vapi with `secret` in X-Vapi-Secret (none when NULL) and the extra headers.
static void vapi_post_n(fixture_t *f, const char *secret, const char *body, size_t len, const char *const *extra,
                        reply_t *r) {
    char secret_header[256];
    const char *headers[8] = {"Content-Type: application/json"};
    size_t n = 1;
    if (secret) {
        snprintf(secret_header, sizeof secret_header, "X-Vapi-Secret: %s", secret);
        headers[n++] = secret_header;
    }
    for (size_t i = 0; extra && extra[i] && n < 7; i++) headers[n++] = extra[i];
    headers[n] = NULL;
    call(f, "POST", "/webhooks/vapi", body, len, headers, 5000, r);
}

static void vapi_post(fixture_t *f, const char *secret, const char *body, const char *const *extra, reply_t *r) {
    vapi_post_n(f, secret, body, strlen(body), extra, r);
}

static bool take_dialer(fixture_t *f, bus_msg_t *out, int timeout_ms) {
    return take_from(f->dialer, out, timeout_ms);
}

// Proves that nothing reached the dialer before it: a message that certainly does, which must then
// be the first one the stand-in holds.
static void assert_nothing_sent_to_dialer(fixture_t *f, const char *const *extra) {
    const char *barrier = "{\"message\":{\"type\":\"hang\",\"call\":{\"id\":\"barrier\"}}}";
    script_actor(f->dialer, "reply", 200, "applied", "{}");
    reply_t r;
    vapi_post(f, VAPI_SECRET, barrier, extra, &r);
    assert_int_equal(r.status, 200);
    reply_clear(&r);
    bus_msg_t m;
    assert_true(take_dialer(f, &m, WAIT_MS));
    if (m.type != BUS_VAPI_WEBHOOK || strcmp(m.u.vapi_webhook.call_id, "barrier") != 0)
        fail_msg("a command was sent to the dialer: %s %s", bus_type_topic(m.type), m.u.vapi_webhook.call_id);
}

static void test_vapi_webhook_with_a_bad_or_missing_secret_is_401_and_sends_nothing(void **state) {
    fixture_t *f = *state;
    char too_long[WEBHOOK_HEADER_MAX + 16];
    memset(too_long, 'x', sizeof too_long - 1);
    too_long[sizeof too_long - 1] = '\0';
    const char *wrong[] = {"vapi-shared-secret-2", "VAPI-SHARED-SECRET-1", "vapi-shared-secret-1x", "vapi-shared-secret-",
                           too_long};
    reply_t r;
    for (size_t i = 0; i < sizeof wrong / sizeof wrong[0]; i++) {
        vapi_post(f, wrong[i], vapi_ringing, NULL, &r);
        assert_error(&r, 401, "bad_secret");
        reply_clear(&r);
    }
    vapi_post(f, NULL, vapi_ringing, NULL, &r);   // no header at all
    assert_error(&r, 401, "bad_secret");
    reply_clear(&r);
    const char *lowercase[] = {"x-vapi-secret: " VAPI_SECRET, NULL};   // header names in any case
    script_actor(f->dialer, "reply", 200, "applied", "{}");
    vapi_post(f, NULL, vapi_ringing, lowercase, &r);
    assert_int_equal(r.status, 200);
    reply_clear(&r);
    bus_msg_t m;
    assert_true(take_dialer(f, &m, WAIT_MS));
    assert_nothing_sent_to_dialer(f, NULL);
    assert_true(metrics_show(f, "sweety_webhooks_total{provider=\"vapi\",outcome=\"bad_signature\"} 6\n"));
    assert_nothing_sent(f);   // nor to payments

    f->cfg.vapi_webhook_secret = NULL;   // not configured: refused, not accepted
    http_restart(f, 5000);
    vapi_post(f, VAPI_SECRET, vapi_ringing, NULL, &r);
    assert_error(&r, 503, "unavailable");
    reply_clear(&r);
    assert_true(metrics_show(f, "sweety_webhooks_total{provider=\"vapi\",outcome=\"unavailable\"} 1\n"));
}

static void test_vapi_hmac_signature_when_configured(void **state) {
    fixture_t *f = *state;
    f->cfg.vapi_webhook_hmac_secret = VAPI_HMAC;
    http_restart(f, 5000);
    script_actor(f->dialer, "reply", 200, "applied", "{}");
    int64_t now = (int64_t)time(NULL);
    char ts_s[32], ts_ms[32], ts_old[32], ts_future_ms[32];
    snprintf(ts_s, sizeof ts_s, "%lld", (long long)now);
    snprintf(ts_ms, sizeof ts_ms, "%lld", (long long)now * 1000 + 123);
    snprintf(ts_old, sizeof ts_old, "%lld", (long long)now - 1000);
    snprintf(ts_future_ms, sizeof ts_future_ms, "%lld", ((long long)now + 1000) * 1000);
    char hex[65], sig[128], ts[64];
    reply_t r;
    bus_msg_t m;

    // good signatures: seconds, milliseconds, with the sha256= prefix, upper-case hex
    const char *good_ts[] = {ts_s, ts_ms, ts_s, ts_ms};
    for (size_t i = 0; i < 4; i++) {
        vapi_hmac_hex(VAPI_HMAC, good_ts[i], vapi_ringing, strlen(vapi_ringing), hex);
        if (i == 3)
            for (char *c = hex; *c; c++) *c = (char)toupper((unsigned char)*c);
        snprintf(sig, sizeof sig, "x-signature: %s%s", i == 2 ? "sha256=" : "", hex);
        snprintf(ts, sizeof ts, "x-timestamp: %s", good_ts[i]);
        const char *extra[] = {sig, ts, NULL};
        vapi_post(f, VAPI_SECRET, vapi_ringing, extra, &r);
        if (r.status != 200) fail_msg("signature %zu: %ld %s", i, r.status, r.body ? r.body : "");
        reply_clear(&r);
        assert_true(take_dialer(f, &m, WAIT_MS));
        assert_string_equal(m.u.vapi_webhook.call_id, VAPI_CALL);
    }

    // bad ones: another key, another body, stale either way, a timestamp that is not the signed one,
    // headers missing; and a good signature without the shared secret
    struct {
        const char *key, *signed_ts, *sent_ts, *body;
        bool send_sig, send_ts;
        const char *secret;
        bool stale;
    } bad[] = {
        {"another-key", ts_s, ts_s, vapi_ringing, true, true, VAPI_SECRET, false},
        {VAPI_HMAC, ts_s, ts_s, "{\"message\":{\"type\":\"status-update\"}}", true, true, VAPI_SECRET, false},
        {VAPI_HMAC, ts_old, ts_old, vapi_ringing, true, true, VAPI_SECRET, true},
        {VAPI_HMAC, ts_future_ms, ts_future_ms, vapi_ringing, true, true, VAPI_SECRET, true},
        {VAPI_HMAC, ts_s, ts_ms, vapi_ringing, true, true, VAPI_SECRET, false},
        {VAPI_HMAC, ts_s, ts_s, vapi_ringing, false, true, VAPI_SECRET, false},
        {VAPI_HMAC, ts_s, ts_s, vapi_ringing, true, false, VAPI_SECRET, false},
        {VAPI_HMAC, ts_s, ts_s, vapi_ringing, true, true, "wrong", false},
        {VAPI_HMAC, ts_s, ts_s, vapi_ringing, true, true, NULL, false},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        vapi_hmac_hex(bad[i].key, bad[i].signed_ts, bad[i].body, strlen(bad[i].body), hex);
        snprintf(sig, sizeof sig, "x-signature: %s", hex);
        snprintf(ts, sizeof ts, "x-timestamp: %s", bad[i].sent_ts);
        const char *extra[3] = {NULL};
        size_t n = 0;
        if (bad[i].send_sig) extra[n++] = sig;
        if (bad[i].send_ts) extra[n++] = ts;
        vapi_post(f, bad[i].secret, vapi_ringing, extra, &r);
        assert_error(&r, 401, "bad_secret");
        if (bad[i].stale) assert_non_null(strstr(r.body, "tolerance"));
        reply_clear(&r);
    }
    vapi_hmac_hex(VAPI_HMAC, ts_s, "{\"message\":{\"type\":\"hang\",\"call\":{\"id\":\"barrier\"}}}",
                  strlen("{\"message\":{\"type\":\"hang\",\"call\":{\"id\":\"barrier\"}}}"), hex);
    snprintf(sig, sizeof sig, "x-signature: %s", hex);
    snprintf(ts, sizeof ts, "x-timestamp: %s", ts_s);
    const char *barrier_headers[] = {sig, ts, NULL};
    assert_nothing_sent_to_dialer(f, barrier_headers);
    assert_true(metrics_show(f, "sweety_webhooks_total{provider=\"vapi\",outcome=\"bad_signature\"} 9\n"));
    assert_true(metrics_show(f, "sweety_webhooks_total{provider=\"vapi\",outcome=\"applied\"} 5\n"));
}

static void test_vapi_status_update_and_reports_reach_the_dialer_and_its_reply_is_passed_through(void **state) {
    fixture_t *f = *state;
    script_actor(f->dialer, "reply", 200, "applied", "{}");
    reply_t r;
    vapi_post(f, VAPI_SECRET, vapi_ringing, NULL, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "{}");
    assert_true(has_header(&r, "Content-Type: application/json"));
    reply_clear(&r);
    bus_msg_t m;
    assert_true(take_dialer(f, &m, WAIT_MS));
    assert_int_equal(m.type, BUS_VAPI_WEBHOOK);
    assert_string_equal(m.from, "http");
    const bus_vapi_webhook_t *w = &m.u.vapi_webhook;
    assert_true(w->request_id > 0);
    assert_string_equal(w->call_id, VAPI_CALL);
    assert_string_equal(w->type, "status-update");
    assert_string_equal(w->status, "ringing");
    assert_string_equal(w->ended_reason, "");
    assert_string_equal(w->booking_id, VAPI_BOOKING);
    assert_int_equal(w->timestamp_ms, 1795293061000LL);
    assert_int_equal(w->started_at_ms, 0);
    assert_int_equal(w->ended_at_ms, 0);
    assert_int_equal(w->duration_ms, 0);
    assert_int_equal(w->cost_micros, 0);
    assert_string_equal(w->recording_url, "");

    // an end-of-call report: times, duration, cost, recording; the dialer's answer passed through
    const char *report =
        "{\"message\":{\"type\":\"end-of-call-report\",\"endedReason\":\"customer-ended-call\","
        "\"startedAt\":\"2026-11-21T20:31:05.250Z\",\"endedAt\":\"2026-11-21T20:33:05.750Z\",\"cost\":0.1234,"
        "\"artifact\":{\"recordingUrl\":\"https://storage.vapi.ai/rec.wav\",\"transcript\":\"AI: Hello\","
        "\"messages\":[]},\"analysis\":{\"summary\":\"ok\"},\"timestamp\":1795293186000,"
        "\"call\":{\"id\":\"" VAPI_CALL "\",\"assistantOverrides\":{\"metadata\":{\"booking_id\":\"" VAPI_BOOKING "\"}}}}}";
    script_actor(f->dialer, "reply", 200, "duplicate", "{\"stored\":false}");
    vapi_post(f, VAPI_SECRET, report, NULL, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "{\"stored\":false}");
    reply_clear(&r);
    assert_true(take_dialer(f, &m, WAIT_MS));
    assert_string_equal(w->type, "end-of-call-report");
    assert_string_equal(w->status, "");
    assert_string_equal(w->ended_reason, "customer-ended-call");
    assert_int_equal(w->started_at_ms, 1795293065250LL);
    assert_int_equal(w->ended_at_ms, 1795293185750LL);
    assert_int_equal(w->duration_ms, 120500);
    assert_int_equal(w->cost_micros, 123400);
    assert_string_equal(w->recording_url, "https://storage.vapi.ai/rec.wav");
    assert_int_equal(w->timestamp_ms, 1795293186000LL);

    // a recording URL too long for the bus is left out, never cut; an ended reason (113 characters)
    // is cut to fit
    char long_url[700], long_reason[200], body[2048];
    snprintf(long_url, sizeof long_url, "https://storage.vapi.ai/%0600d.wav", 1);
    snprintf(long_reason, sizeof long_reason, "call.in-progress.error-vapifault-%080d", 7);
    snprintf(body, sizeof body,
             "{\"message\":{\"type\":\"status-update\",\"status\":\"ended\",\"endedReason\":\"%s\","
             "\"artifact\":{\"recordingUrl\":\"%s\"},\"call\":{\"id\":\"c-2\"}}}",
             long_reason, long_url);
    script_actor(f->dialer, "reply", 200, "unknown_target", "{}");
    vapi_post(f, VAPI_SECRET, body, NULL, &r);
    assert_int_equal(r.status, 200);
    reply_clear(&r);
    assert_true(take_dialer(f, &m, WAIT_MS));
    assert_string_equal(w->call_id, "c-2");
    assert_string_equal(w->status, "ended");
    assert_string_equal(w->booking_id, "");
    assert_string_equal(w->recording_url, "");
    assert_int_equal(strlen(w->ended_reason), sizeof w->ended_reason - 1);
    assert_memory_equal(w->ended_reason, long_reason, sizeof w->ended_reason - 1);

    // hang goes to the dialer too
    script_actor(f->dialer, "reply", 200, "ignored", "{}");
    vapi_post(f, VAPI_SECRET, "{\"message\":{\"type\":\"hang\",\"call\":{\"id\":\"c-3\"}}}", NULL, &r);
    assert_int_equal(r.status, 200);
    reply_clear(&r);
    assert_true(take_dialer(f, &m, WAIT_MS));
    assert_string_equal(w->type, "hang");
    assert_string_equal(w->call_id, "c-3");

    // not stored: the dialer's 503 reaches VAPI, and so does silence (after the reply timeout)
    const char *down = "{\"error\":{\"code\":\"unavailable\",\"message\":\"not stored\"}}";
    script_actor(f->dialer, "reply", 503, "", down);
    vapi_post(f, VAPI_SECRET, vapi_ringing, NULL, &r);
    assert_error(&r, 503, "unavailable");
    assert_string_equal(r.body, down);
    reply_clear(&r);
    assert_true(take_dialer(f, &m, WAIT_MS));
    assert_true(metrics_show(f, "sweety_webhooks_total{provider=\"vapi\",outcome=\"applied\"} 1\n"));
    assert_true(metrics_show(f, "sweety_webhooks_total{provider=\"vapi\",outcome=\"duplicate\"} 1\n"));
    assert_true(metrics_show(f, "sweety_webhooks_total{provider=\"vapi\",outcome=\"unknown_target\"} 1\n"));
    assert_true(metrics_show(f, "sweety_webhooks_total{provider=\"vapi\",outcome=\"ignored\"} 1\n"));
    assert_true(metrics_show(f, "sweety_webhooks_total{provider=\"vapi\",outcome=\"unavailable\"} 1\n"));
    http_restart(f, 300);
    script_actor(f->dialer, "silent", 0, "", "");
    vapi_post(f, VAPI_SECRET, vapi_ringing, NULL, &r);
    assert_error(&r, 503, "unavailable");
    reply_clear(&r);
    assert_true(take_dialer(f, &m, WAIT_MS));
    assert_true(metrics_show(f, "sweety_webhooks_total{provider=\"vapi\",outcome=\"unavailable\"} 1\n"));
    assert_nothing_sent(f);   // payments saw none of it
}

static void test_vapi_other_message_types_are_answered_at_once_without_a_command(void **state) {
    fixture_t *f = *state;
    const char *types[] = {"conversation-update", "speech-update", "transcript", "model-output",
                           "assistant-request", "tool-calls", "transfer-destination-request",
                           "knowledge-base-request", "user-interrupted"};
    size_t n = sizeof types / sizeof types[0];
    reply_t r;
    for (size_t i = 0; i < n; i++) {
        char body[256];
        snprintf(body, sizeof body, "{\"message\":{\"type\":\"%s\",\"call\":{\"id\":\"" VAPI_CALL "\"}}}", types[i]);
        vapi_post(f, VAPI_SECRET, body, NULL, &r);
        if (r.status != 200 || !r.body || strcmp(r.body, "{}") != 0)
            fail_msg("%s: %ld %s", types[i], r.status, r.body ? r.body : "");
        reply_clear(&r);
    }
    // verified but unreadable: 400 invalid_payload, nothing sent
    const char *unreadable[] = {"not json", "{\"type\":\"status-update\"}", "{\"message\":{\"status\":\"ended\"}}",
                                "{\"message\":{\"type\":\"status-update\",\"status\":\"ended\"}}",
                                "{\"message\":{\"type\":\"status-update\",\"call\":{\"id\":\"c\"}}}",
                                "{\"message\":{\"type\":\"hang\"}}"};
    const char *fields[] = {"", "message", "message.type", "message.call.id", "message.status", "message.call.id"};
    for (size_t i = 0; i < sizeof unreadable / sizeof unreadable[0]; i++) {
        vapi_post(f, VAPI_SECRET, unreadable[i], NULL, &r);
        assert_error(&r, 400, "invalid_payload");
        if (fields[i][0]) assert_non_null(strstr(r.body, fields[i]));
        reply_clear(&r);
    }
    assert_nothing_sent_to_dialer(f, NULL);
    char want[128];
    snprintf(want, sizeof want, "sweety_webhooks_total{provider=\"vapi\",outcome=\"ignored\"} %zu\n", n);
    assert_true(metrics_show(f, want));
    assert_true(metrics_show(f, "sweety_webhooks_total{provider=\"vapi\",outcome=\"invalid_payload\"} 6\n"));
}

static void test_vapi_bodies_up_to_1mib_are_read_and_larger_are_413(void **state) {
    fixture_t *f = *state;
    size_t max = 1024 * 1024;
    char *body = malloc(max + 2);
    size_t n = strlen(vapi_ringing);
    memcpy(body, vapi_ringing, n - 2);   // all but the two closing braces
    memset(body + n - 2, ' ', max - n);  // padded with spaces to exactly 1 MiB
    memcpy(body + max - 2, "}}", 2);
    body[max] = '\0';
    script_actor(f->dialer, "reply", 200, "applied", "{}");
    reply_t r;
    vapi_post_n(f, VAPI_SECRET, body, max, NULL, &r);
    assert_int_equal(r.status, 200);
    reply_clear(&r);
    bus_msg_t m;
    assert_true(take_dialer(f, &m, WAIT_MS));
    assert_string_equal(m.u.vapi_webhook.call_id, VAPI_CALL);
    body[max] = ' ';
    body[max + 1] = '\0';   // one byte over
    vapi_post_n(f, VAPI_SECRET, body, max + 1, NULL, &r);
    assert_error(&r, 413, "too_large");
    reply_clear(&r);
    free(body);
    assert_nothing_sent_to_dialer(f, NULL);
}

static void test_vapi_rate_limit_is_its_own_and_counted(void **state) {
    fixture_t *f = *state;
    f->cfg.http_webhook_rate_per_min = 2;
    http_restart(f, 5000);
    reply_t r;
    for (int i = 0; i < 2; i++) {   // refused requests count too
        vapi_post(f, "wrong", vapi_ringing, NULL, &r);
        assert_error(&r, 401, "bad_secret");
        reply_clear(&r);
    }
    vapi_post(f, VAPI_SECRET, vapi_ringing, NULL, &r);
    assert_error(&r, 429, "rate_limited");
    reply_clear(&r);
    // Stripe has a limit of its own
    char sig[256];
    stripe_header(sig, sizeof sig, "whsec_other", time(NULL), stripe_completed);
    stripe_post(f, sig, stripe_completed, &r);
    assert_error(&r, 400, "bad_signature");
    reply_clear(&r);
    assert_true(metrics_show(f, "sweety_webhooks_total{provider=\"vapi\",outcome=\"rate_limited\"} 1\n"));
    assert_true(metrics_show(f, "sweety_webhooks_total{provider=\"vapi\",outcome=\"bad_signature\"} 2\n"));
    assert_true(metrics_show(f, "sweety_http_requests_total{path=\"/webhooks/vapi\",status=\"429\"} 1\n"));
}

// ---- CORS ---------------------------------------------------------------------------------------

static void test_cors_headers_only_for_the_allowed_origin(void **state) {
    fixture_t *f = *state;
    script(f, "reply", 200, "", "{\"plans\":[]}");
    const char *allowed[] = {"Origin: " ORIGIN, NULL};
    const char *other[] = {"Origin: http://evil.example", NULL};
    reply_t r;
    get(f, "/api/plans", allowed, &r);   // a forwarded answer
    assert_int_equal(r.status, 200);
    assert_true(has_header(&r, "Access-Control-Allow-Origin: " ORIGIN "\r\n"));
    assert_true(has_header(&r, "Vary: Origin"));
    reply_clear(&r);
    bus_msg_t m;
    assert_true(take(f, &m, WAIT_MS));
    assert_int_equal(m.type, BUS_PLANS_GET);
    get(f, "/api/nope", allowed, &r);   // an error answered here
    assert_int_equal(r.status, 404);
    assert_true(has_header(&r, "Access-Control-Allow-Origin: " ORIGIN "\r\n"));
    reply_clear(&r);
    get(f, "/api/plans", other, &r);
    assert_int_equal(r.status, 200);
    assert_false(has_header(&r, "Access-Control-Allow-Origin"));
    assert_true(has_header(&r, "Vary: Origin"));
    reply_clear(&r);
    get(f, "/healthz", allowed, &r);   // not an API route
    assert_false(has_header(&r, "Access-Control-Allow-Origin"));
    reply_clear(&r);

    const char *preflight[] = {"Origin: " ORIGIN, "Access-Control-Request-Method: POST",
                               "Access-Control-Request-Headers: content-type, idempotency-key", NULL};
    call(f, "OPTIONS", "/api/bookings", NULL, 0, preflight, 5000, &r);
    assert_int_equal(r.status, 204);
    assert_true(has_header(&r, "Access-Control-Allow-Origin: " ORIGIN "\r\n"));
    assert_true(has_header(&r, "Access-Control-Allow-Methods: GET, POST, OPTIONS"));
    assert_true(has_header(&r, "Access-Control-Allow-Headers: Content-Type, Authorization, Idempotency-Key"));
    assert_true(has_header(&r, "Access-Control-Max-Age: 600"));
    assert_false(has_header(&r, "Content-Length"));
    reply_clear(&r);
    call(f, "OPTIONS", "/api/bookings/bk-1/cancel", NULL, 0, preflight, 5000, &r);
    assert_int_equal(r.status, 204);
    assert_true(has_header(&r, "Access-Control-Allow-Methods:"));
    reply_clear(&r);
    const char *preflight_other[] = {"Origin: http://evil.example", "Access-Control-Request-Method: POST", NULL};
    call(f, "OPTIONS", "/api/bookings", NULL, 0, preflight_other, 5000, &r);
    assert_int_equal(r.status, 204);
    assert_false(has_header(&r, "Access-Control-Allow"));
    reply_clear(&r);
    assert_nothing_sent(f);
}

// ---- key rotation: a request signed with the previous value of a secret ---------------------------

// Every secret that can be rotated has a _previous: during a rotation the routes accept either,
// refuse anything else, and /metrics tells which one each request was verified with.
static void test_previous_secrets_are_accepted_during_a_rotation_and_counted(void **state) {
    fixture_t *f = *state;
    f->cfg.stripe_webhook_secret = "whsec_rotated_new";
    f->cfg.stripe_webhook_secret_previous = STRIPE_SECRET;
    f->cfg.cryptomus_payment_key = "rotatedPaymentKeyNew";
    f->cfg.cryptomus_payment_key_previous = CRYPTOMUS_KEY;
    f->cfg.vapi_webhook_secret = "vapi-rotated-new";
    f->cfg.vapi_webhook_secret_previous = VAPI_SECRET;
    f->cfg.vapi_webhook_hmac_secret = "vapi-hmac-rotated-new";
    f->cfg.vapi_webhook_hmac_secret_previous = VAPI_HMAC;
    f->cfg.security_token_secret = "token-secret-rotated-new";
    f->cfg.security_token_secret_previous = TOKEN_SECRET;
    http_restart(f, 5000);
    script(f, "reply", 200, "applied", "{\"received\":true}");
    script_actor(f->dialer, "reply", 200, "applied", "{}");
    reply_t r;
    bus_msg_t m;

    // Stripe: previous, current, neither
    const char *stripe_secrets[] = {STRIPE_SECRET, "whsec_rotated_new", "whsec_third"};
    for (size_t i = 0; i < 3; i++) {
        char sig[256];
        stripe_header(sig, sizeof sig, stripe_secrets[i], time(NULL), stripe_completed);
        stripe_post(f, sig, stripe_completed, &r);
        if (i < 2) {
            assert_int_equal(r.status, 200);
            assert_true(take(f, &m, WAIT_MS));
        } else {
            assert_error(&r, 400, "bad_signature");
        }
        reply_clear(&r);
    }

    // Cryptomus: previous, current, neither
    const char *unsigned_body = "{\"type\":\"payment\",\"uuid\":\"u-rot\",\"order_id\":\"bk-9\",\"amount\":\"15.00\","
                                "\"is_final\":true,\"status\":\"paid\",\"currency\":\"USD\"}";
    const char *cm_keys[] = {CRYPTOMUS_KEY, "rotatedPaymentKeyNew", "thirdPaymentKey"};
    for (size_t i = 0; i < 3; i++) {
        char *body = cryptomus_signed(unsigned_body, cm_keys[i]);
        post(f, "/webhooks/cryptomus", body, json_headers, &r);
        free(body);
        if (i < 2) {
            assert_int_equal(r.status, 200);
            assert_true(take(f, &m, WAIT_MS));
        } else {
            assert_error(&r, 400, "bad_signature");
        }
        reply_clear(&r);
    }

    // VAPI: the shared secret and the HMAC secret, each previous or current; a third of either fails
    struct {
        const char *secret, *hmac;
        bool ok;
    } vapi[] = {{VAPI_SECRET, VAPI_HMAC, true},
                {"vapi-rotated-new", "vapi-hmac-rotated-new", true},
                {VAPI_SECRET, "vapi-hmac-rotated-new", true},
                {"vapi-third", VAPI_HMAC, false},
                {"vapi-rotated-new", "vapi-hmac-third", false}};
    for (size_t i = 0; i < sizeof vapi / sizeof vapi[0]; i++) {
        char ts[32], hex[65], sig[128], tsh[64];
        snprintf(ts, sizeof ts, "%lld", (long long)time(NULL));
        vapi_hmac_hex(vapi[i].hmac, ts, vapi_ringing, strlen(vapi_ringing), hex);
        snprintf(sig, sizeof sig, "x-signature: %s", hex);
        snprintf(tsh, sizeof tsh, "x-timestamp: %s", ts);
        const char *extra[] = {sig, tsh, NULL};
        vapi_post(f, vapi[i].secret, vapi_ringing, extra, &r);
        if (vapi[i].ok) {
            if (r.status != 200) fail_msg("vapi case %zu: %ld", i, r.status);
            assert_true(take_dialer(f, &m, WAIT_MS));
        } else {
            assert_error(&r, 401, "bad_secret");
        }
        reply_clear(&r);
    }

    // status tokens: issued under the previous secret, the current one, and a third
    const char *token_secrets[] = {TOKEN_SECRET, "token-secret-rotated-new", "token-secret-third"};
    script(f, "reply", 200, "", "{}");
    for (size_t i = 0; i < 3; i++) {
        char auth[700];
        bearer_header(auth, sizeof auth, "bk-rot", time(NULL), 600, token_secrets[i]);
        const char *headers[] = {auth, NULL};
        get(f, "/api/bookings/bk-rot", headers, &r);
        if (i < 2) {
            assert_int_equal(r.status, 200);
            assert_true(take(f, &m, WAIT_MS));
        } else {
            assert_error(&r, 404, "not_found");
        }
        reply_clear(&r);
    }

    const char *counts[] = {
        "sweety_secret_matches_total{key=\"stripe.webhook_secret\",which=\"current\"} 1\n",
        "sweety_secret_matches_total{key=\"stripe.webhook_secret\",which=\"previous\"} 1\n",
        "sweety_secret_matches_total{key=\"cryptomus.payment_key\",which=\"current\"} 1\n",
        "sweety_secret_matches_total{key=\"cryptomus.payment_key\",which=\"previous\"} 1\n",
        "sweety_secret_matches_total{key=\"vapi.webhook_secret\",which=\"current\"} 1\n",
        "sweety_secret_matches_total{key=\"vapi.webhook_secret\",which=\"previous\"} 2\n",
        "sweety_secret_matches_total{key=\"vapi.webhook_hmac_secret\",which=\"current\"} 2\n",
        "sweety_secret_matches_total{key=\"vapi.webhook_hmac_secret\",which=\"previous\"} 1\n",
        "sweety_secret_matches_total{key=\"security.token_secret\",which=\"current\"} 1\n",
        "sweety_secret_matches_total{key=\"security.token_secret\",which=\"previous\"} 1\n",
        "sweety_webhooks_total{provider=\"stripe\",outcome=\"bad_signature\"} 1\n",
        "sweety_webhooks_total{provider=\"cryptomus\",outcome=\"bad_signature\"} 1\n",
        "sweety_webhooks_total{provider=\"vapi\",outcome=\"bad_signature\"} 2\n",
    };
    for (size_t i = 0; i < sizeof counts / sizeof counts[0]; i++)
        if (!metrics_show(f, counts[i])) fail_msg("metrics lack %s", counts[i]);

    // The rotation over: the previous values removed, they are refused.
    f->cfg.stripe_webhook_secret_previous = NULL;
    f->cfg.cryptomus_payment_key_previous = NULL;
    f->cfg.vapi_webhook_secret_previous = NULL;
    f->cfg.vapi_webhook_hmac_secret_previous = NULL;
    f->cfg.security_token_secret_previous = NULL;
    http_restart(f, 5000);
    char sig[256];
    stripe_header(sig, sizeof sig, STRIPE_SECRET, time(NULL), stripe_completed);
    stripe_post(f, sig, stripe_completed, &r);
    assert_error(&r, 400, "bad_signature");
    reply_clear(&r);
    char *body = cryptomus_signed(unsigned_body, CRYPTOMUS_KEY);
    post(f, "/webhooks/cryptomus", body, json_headers, &r);
    free(body);
    assert_error(&r, 400, "bad_signature");
    reply_clear(&r);
    vapi_post(f, VAPI_SECRET, vapi_ringing, NULL, &r);
    assert_error(&r, 401, "bad_secret");
    reply_clear(&r);
    char auth[700];
    bearer_header(auth, sizeof auth, "bk-rot", time(NULL), 600, TOKEN_SECRET);
    const char *headers[] = {auth, NULL};
    get(f, "/api/bookings/bk-rot", headers, &r);
    assert_error(&r, 404, "not_found");
    reply_clear(&r);
}

static size_t discard(char *data, size_t size, size_t n, void *arg) {
    return size * n;
}

static void test_preflight_keeps_the_connection(void **state) {
    fixture_t *f = *state;
    CURL *h = curl_easy_init();
    char url[128];
    long connects = 0, total = 0, status = 0;
    for (int i = 0; i < 3; i++) {
        snprintf(url, sizeof url, "%s%s", f->base, i == 1 ? "/healthz" : "/api/plans");
        curl_easy_setopt(h, CURLOPT_URL, url);
        curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, i == 1 ? "GET" : "OPTIONS");
        curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 5000L);
        curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, discard);
        assert_int_equal(curl_easy_perform(h), CURLE_OK);
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
        curl_easy_getinfo(h, CURLINFO_NUM_CONNECTS, &connects);
        assert_true(status == 204 || status == 503);
        total += connects;
    }
    curl_easy_cleanup(h);
    assert_int_equal(total, 1);
}

// ---- the pure parts -----------------------------------------------------------------------------

typedef struct {
    int64_t ids[8];
    void *owners[8];
    int kinds[8];
    size_t n;
} expired_t;

static void record_expired(void *arg, int64_t id, void *owner, int kind) {
    expired_t *e = arg;
    if (e->n < 8) {
        e->ids[e->n] = id;
        e->owners[e->n] = owner;
        e->kinds[e->n] = kind;
    }
    e->n++;
}

static void test_pending_table_ids_orphans_expiry_and_bounds(void **state) {
    (void)state;
    assert_null(pending_new(0));
    assert_null(pending_new(PENDING_CAPACITY_MAX + 1));
    pending_t *p = pending_new(3);
    int a = 1, b = 2, c = 3;
    int64_t ia = pending_add(p, &a, 10, 100);
    int64_t ib = pending_add(p, &b, 11, 200);
    int64_t ic = pending_add(p, &c, 12, 300);
    assert_true(ia > 0 && ib > 0 && ic > 0 && ia != ib && ib != ic);
    assert_int_equal(pending_add(p, &a, 13, 400), -1);   // full
    assert_int_equal(pending_count(p), 3);

    void *owner = NULL;
    int kind = 0;
    assert_true(pending_take(p, ib, &owner, &kind));
    assert_ptr_equal(owner, &b);
    assert_int_equal(kind, 11);
    assert_false(pending_take(p, ib, &owner, &kind));   // answered once only
    int64_t id2 = pending_add(p, &b, 14, 400);          // reuses b's slot with a new id
    assert_true(id2 > 0 && id2 != ib);
    assert_false(pending_take(p, ib, NULL, NULL));      // a late answer for the old id
    assert_false(pending_take(p, 0, NULL, NULL));
    assert_false(pending_take(p, -5, NULL, NULL));
    assert_false(pending_take(p, ((int64_t)1 << 40) | 2, NULL, NULL));

    pending_orphan(p, ia);
    expired_t e = {0};
    assert_int_equal(pending_expire(p, 99, record_expired, &e), 0);
    assert_int_equal(pending_expire(p, 300, record_expired, &e), 2);   // a (orphan) then c
    assert_int_equal(e.ids[0], ia);
    assert_null(e.owners[0]);
    assert_int_equal(e.ids[1], ic);
    assert_ptr_equal(e.owners[1], &c);
    assert_int_equal(pending_count(p), 1);
    assert_int_equal(pending_expire(p, INT64_MAX, record_expired, &e), 1);
    assert_int_equal(e.ids[2], id2);
    assert_int_equal(pending_count(p), 0);
    pending_destroy(&p);
    assert_null(p);

    // many rounds through a small table: ids never repeat
    p = pending_new(2);
    int64_t last = 0;
    for (int i = 0; i < 1000; i++) {
        int64_t id = pending_add(p, &a, 0, i);
        assert_true(id > last);
        last = id;
        assert_true(pending_take(p, id, NULL, NULL));
    }
    pending_destroy(&p);
}

static void test_ratelimit_counts_per_key_in_a_sliding_minute(void **state) {
    (void)state;
    ratelimit_t *rl = ratelimit_new(4);
    const char *k1 = "10.0.0.1", *k2 = "10.0.0.2";
    int64_t t = 600000;   // the start of a minute
    for (int i = 0; i < 3; i++) assert_true(ratelimit_allow(rl, k1, strlen(k1), 3, t + i));
    assert_false(ratelimit_allow(rl, k1, strlen(k1), 3, t + 10));
    assert_true(ratelimit_allow(rl, k2, strlen(k2), 3, t + 10));   // keys are independent
    // just after the minute turns, the previous minute still weighs almost fully
    assert_false(ratelimit_allow(rl, k1, strlen(k1), 3, t + 60000 + 100));
    // half-way through the next minute: 3 × 0.5 = 1.5 → one more fits
    assert_true(ratelimit_allow(rl, k1, strlen(k1), 3, t + 90000));
    assert_false(ratelimit_allow(rl, k1, strlen(k1), 3, t + 90001));
    // two minutes later everything is forgotten
    for (int i = 0; i < 3; i++) assert_true(ratelimit_allow(rl, k1, strlen(k1), 3, t + 240000 + i));
    // no limit
    for (int i = 0; i < 100; i++) assert_true(ratelimit_allow(rl, k1, strlen(k1), 0, t));

    // bounded: the least recently seen key is forgotten
    char key[8];
    for (int i = 0; i < 10; i++) {
        snprintf(key, sizeof key, "k%d", i);
        assert_true(ratelimit_allow(rl, key, strlen(key), 1, t + 300000));
    }
    assert_int_equal(ratelimit_size(rl), 4);
    assert_true(ratelimit_evictions(rl) >= 6);
    assert_false(ratelimit_allow(rl, "k9", 2, 1, t + 300000));   // recent keys are remembered
    assert_true(ratelimit_allow(rl, "k0", 2, 1, t + 300000));    // an evicted one starts afresh
    ratelimit_destroy(&rl);
    assert_null(rl);
    assert_null(ratelimit_new(0));
}

static void test_decimal_amounts_become_cents(void **state) {
    (void)state;
    struct {
        const char *text;
        int64_t cents;
    } ok[] = {{"15", 1500}, {"15.00", 1500}, {"15.5", 1550}, {"0.01", 1}, {"15.009", 1500}, {"0", 0},
              {"999999999999999.99", 99999999999999999LL}};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        int64_t v = -1;
        assert_int_equal(webhook_decimal_cents(ok[i].text, &v), 0);
        assert_int_equal(v, ok[i].cents);
    }
    const char *bad[] = {"", ".5", "15.", "-1", "+1", "1e3", "1,5", "15.00 ", "1234567890123456", "abc"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int64_t v = 42;
        if (webhook_decimal_cents(bad[i], &v) == 0) fail_msg("accepted: '%s'", bad[i]);
        assert_int_equal(v, 42);
    }
    assert_int_equal(webhook_decimal_cents(NULL, NULL), -1);
}

int main(void) {
    curl_global_init(CURL_GLOBAL_DEFAULT);
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pending_table_ids_orphans_expiry_and_bounds),
        cmocka_unit_test(test_ratelimit_counts_per_key_in_a_sliding_minute),
        cmocka_unit_test(test_decimal_amounts_become_cents),
        T(test_every_booking_validation_error_reaches_the_client_and_nothing_is_sent),
        T(test_booking_needs_a_json_content_type),
        T(test_booking_body_over_16k_is_413),
        T(test_booking_rate_limit_answers_429_past_the_limit),
        T(test_idempotency_key_must_be_short_printable_ascii),
        T(test_valid_booking_is_forwarded_with_every_field_and_the_reply_passed_through),
        T(test_booking_status_and_cancel_need_a_matching_token),
        T(test_plans_are_passed_through_and_cached_for_a_second),
        T(test_payments_answering_503_reaches_the_client),
        T(test_no_reply_is_503_after_the_timeout_and_a_late_reply_is_ignored),
        T(test_client_leaving_before_the_reply_is_harmless),
        T(test_stop_answers_waiting_requests_503),
        T(test_stripe_webhook_with_a_bad_signature_is_400_and_sends_nothing),
        T(test_stripe_webhook_with_a_good_signature_is_forwarded),
        T(test_webhook_not_stored_is_never_answered_2xx),
        T(test_webhook_bodies_up_to_256k_are_read_and_larger_are_413),
        T(test_webhook_rate_limit_is_per_endpoint_and_counted),
        T(test_cryptomus_webhook_good_and_bad_signatures),
        T(test_vapi_webhook_with_a_bad_or_missing_secret_is_401_and_sends_nothing),
        T(test_vapi_hmac_signature_when_configured),
        T(test_vapi_status_update_and_reports_reach_the_dialer_and_its_reply_is_passed_through),
        T(test_vapi_other_message_types_are_answered_at_once_without_a_command),
        T(test_vapi_bodies_up_to_1mib_are_read_and_larger_are_413),
        T(test_vapi_rate_limit_is_its_own_and_counted),
        T(test_cors_headers_only_for_the_allowed_origin),
        T(test_preflight_keeps_the_connection),
        T(test_previous_secrets_are_accepted_during_a_rotation_and_counted),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return failed;
}
