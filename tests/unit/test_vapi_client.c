// tests/unit/test_vapi_client.c — actors/vapi_client.c: the requests it builds (method, URL,
// headers, the JSON body member by member), how it reads VAPI's answers (canned bodies in the
// shapes providers.md §2 documents, each error kind and the three forms of over-concurrency), and
// the glue through httpc against a scripted HTTP server in a thread of this test: a create is never
// sent twice once it may have left (500, timeout), but is sent again while the connection is
// refused; reads are retried; a find walks back page by page and says "no such call" only after
// VAPI listed the whole window (otherwise: unavailable, so the dialer never dials twice).
//
// The server answers requests in arrival order from a script of steps (the last one repeats; a new
// script starts again at its first step): a
// status and a body, optionally after a delay. It records each request's method, path,
// Authorization header and body.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
// cmocka after the standard headers it needs
#include <cmocka.h>

#include <arpa/inet.h>
#include <curl/curl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "actors/httpc.h"
#include "actors/vapi_client.h"
#include "common/util.h"
#include "tests/unit/script_server.h"

#define BID "0b7e3a1c-8a51-4c1e-9a57-2f6f5e1c9d3a"
#define KEY "vapi-private-key-1"
#define CALL_ID "6f1c2b9e-1d2a-4f43-9a57-0c4f1f0d9e11"
#define CONTROL "https://phone-call-websocket.aws-us-west-2-backend-production1.vapi.ai/" CALL_ID "/control"

// ---- the scripted server ----------------------------------------------------------------------

#define STUB_STEPS 8
#define STUB_SEEN 16

typedef struct {
    int status;
    int delay_ms;
    const char *body;
} step_t;

typedef struct {
    char method[8];
    char path[512];
    char auth[256];
    char content_type[64];
    char body[4096];
} seen_t;

typedef struct {
    int lfd, port;
    int stop[2];
    pthread_t thread;
    pthread_mutex_t mu;
    step_t steps[STUB_STEPS];
    size_t nsteps;
    int first;   // the hit that stub_script's first step answers
    seen_t seen[STUB_SEEN];
    int hits;
} stub_t;

// One connection: read the request, record it, answer the next step, close.
static void stub_serve(stub_t *s, int fd) {
    char buf[16384];
    size_t len = 0;
    char *end = script_read_head(fd, s->stop[0], buf, sizeof buf, &len);
    if (!end) return;
    size_t head_len = (size_t)(end + 4 - buf);
    char value[64];
    header_value(buf, "Content-Length", value, sizeof value);
    size_t want = strtoul(value, NULL, 10);
    while (len - head_len < want && len < sizeof buf - 1) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 5000) <= 0) return;
        ssize_t n = recv(fd, buf + len, sizeof buf - 1 - len, 0);
        if (n <= 0) return;
        len += (size_t)n;
        buf[len] = '\0';
    }
    *end = '\0';

    pthread_mutex_lock(&s->mu);
    int hit = s->hits++;
    size_t step_no = (size_t)(hit - s->first);
    if (hit < STUB_SEEN) {
        seen_t *r = &s->seen[hit];
        sscanf(buf, "%7s %511s", r->method, r->path);
        header_value(buf, "Authorization", r->auth, sizeof r->auth);
        header_value(buf, "Content-Type", r->content_type, sizeof r->content_type);
        snprintf(r->body, sizeof r->body, "%.*s", (int)want, end + 4);
    }
    step_t step = s->nsteps ? s->steps[step_no < s->nsteps ? step_no : s->nsteps - 1]
                            : (step_t){.status = 200, .body = "{}"};
    pthread_mutex_unlock(&s->mu);

    if (step.delay_ms > 0) {
        struct pollfd p = {.fd = s->stop[0], .events = POLLIN};
        if (poll(&p, 1, step.delay_ms) > 0) return;
    }
    const char *body = step.body ? step.body : "";
    char head[256];
    snprintf(head, sizeof head,
             "HTTP/1.1 %d Scripted\r\nContent-Type: application/json\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n",
             step.status, strlen(body));
    send_all(fd, head, strlen(head));
    send_all(fd, body, strlen(body));
}

static void *stub_main(void *arg) {
    stub_t *s = arg;
    for (;;) {
        struct pollfd p[2] = {{.fd = s->lfd, .events = POLLIN}, {.fd = s->stop[0], .events = POLLIN}};
        if (poll(p, 2, -1) < 0 || p[1].revents) break;
        int fd = accept(s->lfd, NULL, NULL);
        if (fd < 0) continue;
        stub_serve(s, fd);
        shutdown(fd, SHUT_WR);
        close(fd);
    }
    return NULL;
}

static int stub_start(stub_t *s) {
    memset(s, 0, sizeof *s);
    pthread_mutex_init(&s->mu, NULL);
    if (script_listen(&s->lfd, &s->port, s->stop, 16) != 0) return -1;
    return pthread_create(&s->thread, NULL, stub_main, s) == 0 ? 0 : -1;
}

static void stub_stop(stub_t *s) {
    script_signal_stop(s->stop);
    pthread_join(s->thread, NULL);
    script_close(s->lfd, s->stop);
    pthread_mutex_destroy(&s->mu);
}

static void stub_script(stub_t *s, const step_t *steps, size_t n) {
    pthread_mutex_lock(&s->mu);
    for (size_t i = 0; i < n && i < STUB_STEPS; i++) s->steps[i] = steps[i];
    s->nsteps = n < STUB_STEPS ? n : STUB_STEPS;
    s->first = s->hits;   // a new script starts at its first step
    pthread_mutex_unlock(&s->mu);
}

static int stub_hits(stub_t *s) {
    pthread_mutex_lock(&s->mu);
    int n = s->hits;
    pthread_mutex_unlock(&s->mu);
    return n;
}

// A port on 127.0.0.1 where nothing listens: connections to it are refused.
static int closed_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    int port = -1;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) == 0 && getsockname(fd, (struct sockaddr *)&a, &al) == 0)
        port = ntohs(a.sin_port);
    close(fd);
    return port;
}

// ---- fixture ----------------------------------------------------------------------------------

typedef struct {
    bool called;
    vapi_outcome_t outcome;
    bool has_call;
    vapi_call_t call;
} result_t;

typedef struct {
    stub_t stub;
    zloop_t *loop;
    httpc_t *http;
    logger_t lg;
    vapi_client_t *vapi;     // api_base: https://api.vapi.test (prepare tests)
    vapi_client_t *local;    // api_base: the stub
    char base[64];
    int done, expect;
    int64_t deadline;
    result_t results[4];
} fx_t;

static vapi_client_t *client(fx_t *fx, const char *api_base, const char *secret, int timeout_ms) {
    vapi_config_t c = {.api_base = api_base, .public_url = "https://sweety.example/", .webhook_secret = secret,
                       .timeout_ms = timeout_ms, .max_attempts = 3};
    return vapi_client_new(fx->http, &c, &fx->lg);
}

static int setup(void **state) {
    fx_t *fx = calloc(1, sizeof *fx);
    assert_non_null(fx);
    assert_int_equal(stub_start(&fx->stub), 0);
    fx->lg = (logger_t){.level = SLOG_WARN, .who = "test"};
    fx->loop = zloop_new();
    zloop_set_nonstop(fx->loop, true);
    fx->http = httpc_new(fx->loop, &fx->lg);
    assert_non_null(fx->http);
    httpc_set_backoff(fx->http, 10, 50);
    fx->vapi = client(fx, "https://api.vapi.test/", "vapi-webhook-secret", 0);
    assert_non_null(fx->vapi);
    snprintf(fx->base, sizeof fx->base, "http://127.0.0.1:%d", fx->stub.port);
    fx->local = client(fx, fx->base, NULL, 2000);
    assert_non_null(fx->local);
    *state = fx;
    return 0;
}

static int teardown(void **state) {
    fx_t *fx = *state;
    httpc_destroy(&fx->http);
    vapi_client_destroy(&fx->vapi);
    vapi_client_destroy(&fx->local);
    zloop_destroy(&fx->loop);
    stub_stop(&fx->stub);
    free(fx);
    return 0;
}

static httpc_response_t answer(long status, const char *body) {
    return (httpc_response_t){.status = status, .body = (char *)body, .body_len = strlen(body), .attempts = 1,
                              .stripe_should_retry = -1};
}

static httpc_response_t no_answer(int curl_code) {
    return (httpc_response_t){.status = 0, .body = "", .transport_error = curl_code, .attempts = 1,
                              .stripe_should_retry = -1};
}

static vapi_create_params_t create_params(void) {
    return (vapi_create_params_t){.api_key = KEY, .assistant_id = "asst-1f2e", .phone_number_id = "ph-9a8b",
                                  .customer_number = "+15551234567", .booking_id = BID, .attempt = 2,
                                  .max_duration_s = 300};
}

// ---- requests ---------------------------------------------------------------------------------

static void test_create_request_carries_exactly_the_documented_fields(void **state) {
    fx_t *fx = *state;
    vapi_create_params_t p = create_params();
    httpc_prepared_t r;
    assert_int_equal(vapi_prepare_create(fx->vapi, &p, &r), 0);
    assert_string_equal(r.method, "POST");
    assert_string_equal(r.url, "https://api.vapi.test/call");
    assert_string_equal(httpc_prepared_header(&r, "Authorization"), "Bearer " KEY);
    assert_string_equal(httpc_prepared_header(&r, "Content-Type"), "application/json");
    assert_false(r.retryable);   // no idempotency at VAPI
    assert_true(r.retry_unsent);
    assert_string_equal(r.log_name, "vapi.call_create");
    assert_int_equal(r.body_len, strlen(r.body));

    json_error_t jerr;
    json_t *got = json_loads(r.body, 0, &jerr);
    assert_non_null(got);
    json_t *want = json_loads(
        "{\"assistantId\":\"asst-1f2e\",\"phoneNumberId\":\"ph-9a8b\",\"customer\":{\"number\":\"+15551234567\"},"
        "\"name\":\"" BID " #2\","
        "\"assistantOverrides\":{\"maxDurationSeconds\":300,"
        "\"metadata\":{\"booking_id\":\"" BID "\",\"attempt\":2},"
        "\"variableValues\":{\"booking_id\":\"" BID "\"},"
        "\"server\":{\"url\":\"https://sweety.example/webhooks/vapi\",\"timeoutSeconds\":20,"
        "\"secret\":\"vapi-webhook-secret\"},"
        "\"serverMessages\":[\"status-update\",\"end-of-call-report\",\"hang\"],"
        "\"monitorPlan\":{\"controlEnabled\":true}}}",
        0, &jerr);
    assert_non_null(want);
    if (!json_equal(got, want)) fail_msg("body: %s", r.body);
    // types matter: integers are integers, controlEnabled is the JSON true
    assert_true(json_is_integer(json_object_get(json_object_get(got, "assistantOverrides"), "maxDurationSeconds")));
    assert_true(json_is_true(json_object_get(json_object_get(json_object_get(got, "assistantOverrides"), "monitorPlan"),
                                             "controlEnabled")));
    json_decref(got);
    json_decref(want);
    httpc_prepared_clear(&r);
    assert_null(r.url);

    // no webhook secret configured: the server object has none
    vapi_client_t *plain = client(fx, "https://api.vapi.test", NULL, 0);
    p.booking_id = "bk-42";
    p.attempt = 1;
    assert_int_equal(vapi_prepare_create(plain, &p, &r), 0);
    got = json_loads(r.body, 0, &jerr);
    const json_t *server = json_object_get(json_object_get(got, "assistantOverrides"), "server");
    assert_int_equal(json_object_size(server), 2);
    assert_null(json_object_get(server, "secret"));
    assert_string_equal(json_string_value(json_object_get(got, "name")), "booking bk-42 #1");
    json_decref(got);
    httpc_prepared_clear(&r);
    vapi_client_destroy(&plain);
}

static void test_call_names_fit_vapis_forty_characters(void **state) {
    (void)state;
    char name[64];
    assert_int_equal(vapi_call_name("bk-42", 3, name, sizeof name), 0);
    assert_string_equal(name, "booking bk-42 #3");
    assert_int_equal(vapi_call_name(BID, 1, name, sizeof name), 0);   // a UUID: the long form is 47
    assert_string_equal(name, BID " #1");
    assert_int_equal(vapi_call_name(BID, 99, name, sizeof name), 0);
    assert_int_equal(strlen(name), VAPI_NAME_MAX);
    assert_int_equal(vapi_call_name(BID, 100, name, sizeof name), -1);   // 41 characters
    assert_int_equal(vapi_call_name("bk-42", 0, name, sizeof name), -1);
    assert_int_equal(vapi_call_name("bk 42", 1, name, sizeof name), -1);
    assert_int_equal(vapi_call_name("bk-42", 1, name, 10), -1);
}

static void test_create_refuses_bad_parameters(void **state) {
    fx_t *fx = *state;
    httpc_prepared_t r;
    vapi_create_params_t p;
    const char *bad_keys[] = {"k\r\nX-Injected: 1", "k k", "", NULL};
    for (size_t i = 0; i < 4; i++) {
        p = create_params();
        p.api_key = bad_keys[i];
        assert_int_equal(vapi_prepare_create(fx->vapi, &p, &r), -1);
        assert_null(r.url);
        assert_null(r.headers[0]);
    }
    const char *bad_numbers[] = {"5551234567", "+0551234567", "+1555", "+1555123456789012", "+1555-123-4567", NULL};
    for (size_t i = 0; i < 6; i++) {
        p = create_params();
        p.customer_number = bad_numbers[i];
        assert_int_equal(vapi_prepare_create(fx->vapi, &p, &r), -1);
    }
    const char *bad_ids[] = {"", "a/b", "a\"b", NULL};
    for (size_t i = 0; i < 4; i++) {
        p = create_params();
        p.assistant_id = bad_ids[i];
        assert_int_equal(vapi_prepare_create(fx->vapi, &p, &r), -1);
        p = create_params();
        p.phone_number_id = bad_ids[i];
        assert_int_equal(vapi_prepare_create(fx->vapi, &p, &r), -1);
        p = create_params();
        p.booking_id = bad_ids[i];
        assert_int_equal(vapi_prepare_create(fx->vapi, &p, &r), -1);
    }
    int bad_durations[] = {0, 9, 43201};
    for (size_t i = 0; i < 3; i++) {
        p = create_params();
        p.max_duration_s = bad_durations[i];
        assert_int_equal(vapi_prepare_create(fx->vapi, &p, &r), -1);
    }
    p = create_params();
    p.attempt = 0;
    assert_int_equal(vapi_prepare_create(fx->vapi, &p, &r), -1);
    p = create_params();
    p.max_duration_s = 43200;
    assert_int_equal(vapi_prepare_create(fx->vapi, &p, &r), 0);
    httpc_prepared_clear(&r);
}

static void test_get_find_and_end_requests(void **state) {
    fx_t *fx = *state;
    httpc_prepared_t r;
    assert_int_equal(vapi_prepare_get(fx->vapi, KEY, CALL_ID, &r), 0);
    assert_string_equal(r.method, "GET");
    assert_string_equal(r.url, "https://api.vapi.test/call/" CALL_ID);
    assert_null(r.body);
    assert_string_equal(httpc_prepared_header(&r, "Authorization"), "Bearer " KEY);
    assert_true(r.retryable);
    httpc_prepared_clear(&r);
    assert_int_equal(vapi_prepare_get(fx->vapi, KEY, "../assistant", &r), -1);
    assert_int_equal(vapi_prepare_get(fx->vapi, KEY, "id?x=1", &r), -1);
    assert_int_equal(vapi_prepare_get(fx->vapi, NULL, CALL_ID, &r), -1);

    // 2026-11-21T20:31:00.123Z
    assert_int_equal(vapi_prepare_find(fx->vapi, KEY, "ph-9a8b", 1795293060123LL, &r), 0);
    assert_string_equal(r.method, "GET");
    assert_string_equal(r.url,
                        "https://api.vapi.test/call?createdAtGt=2026-11-21T20%3A31%3A00.123Z&phoneNumberId=ph-9a8b&limit=1000");
    assert_string_equal(httpc_prepared_header(&r, "Authorization"), "Bearer " KEY);
    assert_true(r.retryable);
    httpc_prepared_clear(&r);
    assert_int_equal(vapi_prepare_find(fx->vapi, KEY, "ph&limit=1", 0, &r), -1);
    assert_int_equal(vapi_prepare_find(fx->vapi, KEY, "ph-9a8b", -1, &r), -1);

    assert_int_equal(vapi_prepare_end(fx->vapi, CONTROL, &r), 0);
    assert_string_equal(r.method, "POST");
    assert_string_equal(r.url, CONTROL);
    assert_string_equal(r.body, "{\"type\":\"end-call\"}");
    assert_string_equal(httpc_prepared_header(&r, "Content-Type"), "application/json");
    assert_null(httpc_prepared_header(&r, "Authorization"));   // the private key never goes there
    assert_true(r.retryable);
    assert_string_equal(r.log_name, "vapi.call_end");
    httpc_prepared_clear(&r);
    const char *bad_urls[] = {"", "ftp://x/control", "https://x/a b", "https://x/\r\nHost: y", "/relative", NULL};
    for (size_t i = 0; i < 6; i++) assert_int_equal(vapi_prepare_end(fx->vapi, bad_urls[i], &r), -1);
}

// ---- answers ----------------------------------------------------------------------------------

static const char call_created[] =
    "{\"id\":\"" CALL_ID "\",\"orgId\":\"org-1\",\"createdAt\":\"2026-11-21T20:31:00.123Z\","
    "\"updatedAt\":\"2026-11-21T20:31:00.123Z\",\"type\":\"outboundPhoneCall\",\"status\":\"queued\","
    "\"name\":\"" BID " #2\",\"phoneNumberId\":\"ph-9a8b\",\"phoneCallProvider\":\"twilio\","
    "\"customer\":{\"number\":\"+15551234567\"},\"assistantId\":\"asst-1f2e\","
    "\"monitor\":{\"listenUrl\":\"wss://x/listen\",\"controlUrl\":\"" CONTROL "\"},"
    "\"subscriptionLimits\":{\"concurrencyBlocked\":false,\"concurrencyLimit\":10,\"remainingConcurrentCalls\":9}}";

static const char call_blocked[] =
    "{\"id\":\"" CALL_ID "\",\"orgId\":\"org-1\",\"createdAt\":\"2026-11-21T20:31:00.123Z\","
    "\"updatedAt\":\"2026-11-21T20:31:00.123Z\",\"status\":\"ended\","
    "\"endedReason\":\"call.start.error-subscription-concurrency-limit-reached\","
    "\"subscriptionLimits\":{\"concurrencyBlocked\":true,\"concurrencyLimit\":10,\"remainingConcurrentCalls\":0}}";

static void test_created_call_is_read(void **state) {
    (void)state;
    httpc_response_t resp = answer(201, call_created);
    vapi_outcome_t o;
    vapi_call_t c;
    bool has = false;
    vapi_parse_create(&resp, &o, &c, &has);
    assert_int_equal(o.kind, VAPI_OK);
    assert_string_equal(vapi_result_name(o.kind), "ok");
    assert_true(has);
    assert_false(o.maybe_created);
    assert_int_equal(o.http_status, 201);
    assert_string_equal(c.id, CALL_ID);
    assert_string_equal(c.status, "queued");
    assert_string_equal(c.name, BID " #2");
    assert_string_equal(c.phone_number_id, "ph-9a8b");
    assert_string_equal(c.control_url, CONTROL);
    assert_int_equal(c.created_at_ms, 1795293060123LL);
    assert_int_equal(c.started_at_ms, 0);
    assert_int_equal(c.cost_micros, -1);
    assert_false(c.concurrency_blocked);
    assert_int_equal(c.concurrency_limit, 10);
    assert_int_equal(c.remaining_concurrent, 9);
}

static void test_the_three_concurrency_forms_and_other_refusals(void **state) {
    (void)state;
    vapi_outcome_t o;
    vapi_call_t c;
    bool has;
    // 1. 400 {"error":"Over Concurrency Limit"} (community reports)
    httpc_response_t resp = answer(400, "{\"error\":\"Over Concurrency Limit\"}");
    vapi_parse_create(&resp, &o, &c, &has);
    assert_int_equal(o.kind, VAPI_CONCURRENCY);
    assert_false(has);
    assert_string_equal(o.error, "Over_Concurrency_Limit");
    // 1b. the same words as a NestJS message string
    resp = answer(400, "{\"message\":\"Over Concurrency Limit.\",\"error\":\"Bad Request\",\"statusCode\":400}");
    vapi_parse_create(&resp, &o, &c, &has);
    assert_int_equal(o.kind, VAPI_CONCURRENCY);
    assert_string_equal(o.error, "Bad_Request");
    assert_string_equal(o.message, "Over Concurrency Limit.");
    // 2. a NestJS message array
    resp = answer(400, "{\"message\":[\"Couldn't create call.\",\"concurrency limit reached (10 of 10)\"],"
                       "\"error\":\"Bad Request\",\"statusCode\":400}");
    vapi_parse_create(&resp, &o, &c, &has);
    assert_int_equal(o.kind, VAPI_CONCURRENCY);
    assert_string_equal(o.message, "Couldn't create call.; concurrency limit reached (10 of 10)");
    // 3. a 201 whose call is blocked: the call is reported too
    resp = answer(201, call_blocked);
    vapi_parse_create(&resp, &o, &c, &has);
    assert_int_equal(o.kind, VAPI_CONCURRENCY);
    assert_string_equal(vapi_result_name(o.kind), "concurrency");
    assert_true(has);
    assert_string_equal(c.id, CALL_ID);
    assert_true(c.concurrency_blocked);
    assert_int_equal(c.remaining_concurrent, 0);
    assert_string_equal(c.ended_reason, "call.start.error-subscription-concurrency-limit-reached");

    // another 400: rejected, with the messages joined
    resp = answer(400, "{\"message\":[\"customer.number must be a valid phone number in the E.164 format.\","
                       "\"assistantId must be a UUID\"],\"error\":\"Bad Request\",\"statusCode\":400}");
    vapi_parse_create(&resp, &o, &c, &has);
    assert_int_equal(o.kind, VAPI_REJECTED);
    assert_false(o.maybe_created);
    assert_string_equal(o.message,
                        "customer.number must be a valid phone number in the E.164 format.; assistantId must be a UUID");
    // concurrency words outside a 400 do not make it a concurrency refusal
    resp = answer(403, "{\"message\":\"concurrency add-on required\",\"error\":\"Forbidden\"}");
    vapi_parse_create(&resp, &o, &c, &has);
    assert_int_equal(o.kind, VAPI_ACCOUNT_ERROR);

    long account[] = {401, 402, 403};
    for (size_t i = 0; i < 3; i++) {
        resp = answer(account[i], "{\"message\":\"Invalid Key. Hot tip, you may be using the private key instead "
                                  "of the public key, or vice versa.\",\"error\":\"Unauthorized\",\"statusCode\":401}");
        vapi_parse_create(&resp, &o, &c, &has);
        assert_int_equal(o.kind, VAPI_ACCOUNT_ERROR);
        assert_string_equal(vapi_result_name(o.kind), "account_error");
        assert_false(o.maybe_created);
    }
    resp = answer(404, "{\"message\":\"Assistant not found\",\"error\":\"Not Found\",\"statusCode\":404}");
    vapi_parse_create(&resp, &o, &c, &has);
    assert_int_equal(o.kind, VAPI_REJECTED);
    assert_true(o.not_found);
    resp = answer(422, "not json");
    vapi_parse_create(&resp, &o, &c, &has);
    assert_int_equal(o.kind, VAPI_REJECTED);
    assert_string_equal(o.error, "");
    assert_string_equal(o.message, "");
}

static void test_unavailable_says_whether_the_call_may_exist(void **state) {
    (void)state;
    vapi_outcome_t o;
    vapi_call_t c;
    bool has;
    httpc_response_t resp = answer(429, "{\"message\":\"Rate limit exceeded\"}");
    vapi_parse_create(&resp, &o, &c, &has);
    assert_int_equal(o.kind, VAPI_UNAVAILABLE);
    assert_false(o.maybe_created);   // refused before any work
    long five[] = {500, 502, 503, 504};
    for (size_t i = 0; i < 4; i++) {
        resp = answer(five[i], "{\"message\":\"Internal server error\",\"statusCode\":500}");
        vapi_parse_create(&resp, &o, &c, &has);
        assert_int_equal(o.kind, VAPI_UNAVAILABLE);
        assert_true(o.maybe_created);
    }
    int unsent[] = {CURLE_COULDNT_CONNECT, CURLE_COULDNT_RESOLVE_HOST};
    for (size_t i = 0; i < 2; i++) {
        resp = no_answer(unsent[i]);
        vapi_parse_create(&resp, &o, &c, &has);
        assert_int_equal(o.kind, VAPI_UNAVAILABLE);
        assert_int_equal(o.transport_error, unsent[i]);
        assert_false(o.maybe_created);
    }
    int maybe_sent[] = {CURLE_OPERATION_TIMEDOUT, CURLE_RECV_ERROR, CURLE_SEND_ERROR, CURLE_GOT_NOTHING,
                        CURLE_SSL_CONNECT_ERROR, CURLE_ABORTED_BY_CALLBACK};
    for (size_t i = 0; i < sizeof maybe_sent / sizeof maybe_sent[0]; i++) {
        resp = no_answer(maybe_sent[i]);
        vapi_parse_create(&resp, &o, &c, &has);
        assert_int_equal(o.kind, VAPI_UNAVAILABLE);
        assert_true(o.maybe_created);
        assert_string_equal(vapi_result_name(o.kind), "unavailable");
    }
    // the same failures of a read say nothing about creating
    resp = answer(500, "{}");
    vapi_parse_get(&resp, &o, &c, &has);
    assert_int_equal(o.kind, VAPI_UNAVAILABLE);
    assert_false(o.maybe_created);
    resp = no_answer(CURLE_OPERATION_TIMEDOUT);
    vapi_parse_get(&resp, &o, &c, &has);
    assert_false(o.maybe_created);
}

static void test_unreadable_2xx_is_bad_response_and_may_exist(void **state) {
    (void)state;
    vapi_outcome_t o;
    vapi_call_t c;
    bool has;
    const char *bodies[] = {"", "not json", "{}", "{\"id\":42}", "{\"id\":\"\"}", "[]",
                            "{\"results\":[{\"id\":\"c1\"}],\"errors\":[],\"subscriptionLimits\":{}}"};   // a batch
    for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++) {
        httpc_response_t resp = answer(201, bodies[i]);
        vapi_parse_create(&resp, &o, &c, &has);
        if (o.kind != VAPI_BAD_RESPONSE) fail_msg("body %zu: %s", i, vapi_result_name(o.kind));
        assert_false(has);
        assert_true(o.maybe_created);
    }
    httpc_response_t resp = answer(201, "");
    resp.transport_error = CURLE_FILESIZE_EXCEEDED;   // an answer over httpc's cap
    vapi_parse_create(&resp, &o, &c, &has);
    assert_int_equal(o.kind, VAPI_BAD_RESPONSE);
    assert_string_equal(vapi_result_name(o.kind), "bad_response");
    assert_true(o.maybe_created);
    resp = answer(200, "{\"status\":\"ended\"}");
    vapi_parse_get(&resp, &o, &c, &has);
    assert_int_equal(o.kind, VAPI_BAD_RESPONSE);
    assert_false(o.maybe_created);
}

static void test_ended_call_is_read_with_cost_times_and_recording(void **state) {
    (void)state;
    const char *ended =
        "{\"id\":\"" CALL_ID "\",\"createdAt\":\"2026-11-21T20:31:00.000Z\",\"updatedAt\":\"2026-11-21T20:36:00Z\","
        "\"status\":\"ended\",\"endedReason\":\"customer-ended-call\",\"startedAt\":\"2026-11-21T20:31:05.250Z\","
        "\"endedAt\":\"2026-11-21T20:33:05.750Z\",\"cost\":0.1234,\"costBreakdown\":{\"total\":0.1234},"
        "\"artifact\":{\"recordingUrl\":\"https://storage.vapi.ai/rec/" CALL_ID ".wav\",\"transcript\":\"AI: Hi\"},"
        "\"monitor\":{\"controlUrl\":\"" CONTROL "\"}}";
    httpc_response_t resp = answer(200, ended);
    vapi_outcome_t o;
    vapi_call_t c;
    bool has;
    vapi_parse_get(&resp, &o, &c, &has);
    assert_int_equal(o.kind, VAPI_OK);
    assert_true(has);
    assert_string_equal(c.status, "ended");
    assert_string_equal(c.ended_reason, "customer-ended-call");
    assert_int_equal(c.started_at_ms, 1795293065250LL);
    assert_int_equal(c.ended_at_ms, 1795293185750LL);
    assert_int_equal(c.cost_micros, 123400);
    assert_string_equal(c.recording_url, "https://storage.vapi.ai/rec/" CALL_ID ".wav");
    assert_int_equal(c.concurrency_limit, -1);

    // wrong types read as absent; an old top-level recordingUrl is used when artifact has none
    const char *odd = "{\"id\":\"c-2\",\"status\":7,\"endedReason\":null,\"startedAt\":\"yesterday\",\"cost\":\"0.5\","
                      "\"recordingUrl\":\"https://old.example/r.mp3\",\"monitor\":[],\"subscriptionLimits\":5}";
    resp = answer(200, odd);
    vapi_parse_get(&resp, &o, &c, &has);
    assert_int_equal(o.kind, VAPI_OK);
    assert_string_equal(c.id, "c-2");
    assert_string_equal(c.status, "");
    assert_string_equal(c.ended_reason, "");
    assert_int_equal(c.started_at_ms, 0);
    assert_int_equal(c.cost_micros, -1);
    assert_string_equal(c.control_url, "");
    assert_string_equal(c.recording_url, "https://old.example/r.mp3");
    assert_false(c.concurrency_blocked);

    resp = answer(404, "{\"message\":\"Call not found\",\"error\":\"Not Found\",\"statusCode\":404}");
    vapi_parse_get(&resp, &o, &c, &has);
    assert_int_equal(o.kind, VAPI_REJECTED);
    assert_true(o.not_found);
    assert_false(has);
    resp = answer(401, "{}");
    vapi_parse_get(&resp, &o, &c, &has);
    assert_int_equal(o.kind, VAPI_ACCOUNT_ERROR);
    // a get never reads over-concurrency
    resp = answer(400, "{\"error\":\"Over Concurrency Limit\"}");
    vapi_parse_get(&resp, &o, &c, &has);
    assert_int_equal(o.kind, VAPI_REJECTED);
}

static void test_find_picks_the_newest_call_with_the_name(void **state) {
    (void)state;
    const char *list =
        "[{\"id\":\"c-other\",\"name\":\"" BID " #1\",\"createdAt\":\"2026-11-21T20:31:09.000Z\"},"
        "{\"id\":\"c-old\",\"name\":\"" BID " #2\",\"createdAt\":\"2026-11-21T20:31:01.000Z\"},"
        "{\"name\":\"" BID " #2\",\"createdAt\":\"2026-11-21T20:31:30.000Z\"},"   // no id: skipped
        "{\"id\":\"c-new\",\"name\":\"" BID " #2\",\"status\":\"ringing\",\"createdAt\":\"2026-11-21T20:31:05.000Z\","
        "\"monitor\":{\"controlUrl\":\"" CONTROL "\"}},"
        "{\"id\":\"c-noname\"}, 42]";
    httpc_response_t resp = answer(200, list);
    vapi_outcome_t o;
    vapi_call_t c;
    bool has;
    vapi_parse_find(&resp, BID " #2", &o, &c, &has);
    assert_int_equal(o.kind, VAPI_OK);
    assert_true(has);
    assert_string_equal(c.id, "c-new");
    assert_string_equal(c.status, "ringing");
    assert_string_equal(c.control_url, CONTROL);

    vapi_parse_find(&resp, BID " #3", &o, &c, &has);
    assert_int_equal(o.kind, VAPI_OK);
    assert_false(has);
    assert_string_equal(c.id, "");
    // what a find needs to page on: every item counts, only dated ones bound the page
    vapi_find_page_t page;
    vapi_parse_find_page(&resp, BID " #3", &o, &c, &has, &page);
    assert_int_equal(page.count, 6);
    assert_int_equal(page.oldest_ms, 1795293061000LL);   // 20:31:01.000
    assert_int_equal(page.newest_ms, 1795293090000LL);   // 20:31:30.000
    assert_true(page.unsorted);                           // 20:31:01 is listed before 20:31:30
    resp = answer(200, "[" "{\"id\":\"a\",\"createdAt\":\"2026-11-21T20:31:09.000Z\"},"
                       "{\"id\":\"b\"},{\"id\":\"c\",\"createdAt\":\"2026-11-21T20:31:09.000Z\"},"
                       "{\"id\":\"d\",\"createdAt\":\"2026-11-21T20:31:01.000Z\"}]");
    vapi_parse_find_page(&resp, BID " #3", &o, &c, &has, &page);
    assert_int_equal(page.count, 4);
    assert_false(page.unsorted);                          // equal times and undated items are in order
    resp = answer(200, "[]");
    vapi_parse_find_page(&resp, BID " #3", &o, &c, &has, &page);
    assert_int_equal(page.count, 0);
    assert_int_equal(page.oldest_ms, 0);

    resp = answer(200, "{\"results\":[{\"id\":\"c-p\",\"name\":\"booking bk-1 #1\"}],\"metadata\":{}}");
    vapi_parse_find(&resp, "booking bk-1 #1", &o, &c, &has);
    assert_true(has);
    assert_string_equal(c.id, "c-p");
    resp = answer(200, "[]");
    vapi_parse_find(&resp, "booking bk-1 #1", &o, &c, &has);
    assert_int_equal(o.kind, VAPI_OK);
    assert_false(has);
    resp = answer(200, "{\"id\":\"c-p\"}");
    vapi_parse_find(&resp, "booking bk-1 #1", &o, &c, &has);
    assert_int_equal(o.kind, VAPI_BAD_RESPONSE);
    assert_false(o.maybe_created);
    resp = answer(503, "");
    vapi_parse_find(&resp, "booking bk-1 #1", &o, &c, &has);
    assert_int_equal(o.kind, VAPI_UNAVAILABLE);
}

static void test_end_call_answers(void **state) {
    (void)state;
    vapi_outcome_t o;
    httpc_response_t resp = answer(200, "");
    vapi_parse_end(&resp, &o);
    assert_int_equal(o.kind, VAPI_OK);
    resp = answer(204, "");
    vapi_parse_end(&resp, &o);
    assert_int_equal(o.kind, VAPI_OK);
    resp = answer(404, "{\"message\":\"call not found\"}");
    vapi_parse_end(&resp, &o);
    assert_int_equal(o.kind, VAPI_REJECTED);
    assert_true(o.not_found);
    resp = answer(500, "");
    vapi_parse_end(&resp, &o);
    assert_int_equal(o.kind, VAPI_UNAVAILABLE);
    assert_false(o.maybe_created);
}

// ---- through httpc, against the scripted server ------------------------------------------------

static void on_call(void *arg, const vapi_outcome_t *outcome, const vapi_call_t *call) {
    result_t *r = arg;
    assert_false(r->called);   // exactly once
    r->called = true;
    r->outcome = *outcome;
    r->has_call = call != NULL;
    if (call) r->call = *call;
}

static fx_t *current;   // the fixture of the running test, for the end-call callback's count

static void count_done(void) {
    current->done++;
}

static void on_call_counted(void *arg, const vapi_outcome_t *outcome, const vapi_call_t *call) {
    on_call(arg, outcome, call);
    count_done();
}

static void on_end_counted(void *arg, const vapi_outcome_t *outcome) {
    on_call(arg, outcome, NULL);
    count_done();
}

static int on_check(zloop_t *loop, int timer_id, void *arg) {
    fx_t *fx = arg;
    return (fx->done >= fx->expect || util_monotonic_ms() > fx->deadline) ? -1 : 0;
}

static void run_until_done(fx_t *fx, int expect, int timeout_ms) {
    current = fx;
    fx->done = 0;
    fx->expect = expect;
    fx->deadline = util_monotonic_ms() + timeout_ms;
    int id = zloop_timer(fx->loop, 5, 0, on_check, fx);
    zloop_start(fx->loop);
    zloop_timer_end(fx->loop, id);
}

static void test_create_is_sent_once_and_its_answer_read(void **state) {
    fx_t *fx = *state;
    step_t steps[] = {{201, 0, call_created}};
    stub_script(&fx->stub, steps, 1);
    vapi_create_params_t p = create_params();
    assert_int_equal(vapi_call_create(fx->local, &p, on_call_counted, &fx->results[0]), 0);
    run_until_done(fx, 1, 10000);
    result_t *r = &fx->results[0];
    assert_true(r->called);
    assert_int_equal(r->outcome.kind, VAPI_OK);
    assert_true(r->has_call);
    assert_string_equal(r->call.id, CALL_ID);
    assert_int_equal(stub_hits(&fx->stub), 1);
    seen_t *s = &fx->stub.seen[0];
    assert_string_equal(s->method, "POST");
    assert_string_equal(s->path, "/call");
    assert_string_equal(s->auth, "Bearer " KEY);
    assert_string_equal(s->content_type, "application/json");
    json_t *body = json_loads(s->body, 0, NULL);
    assert_non_null(body);
    assert_string_equal(json_string_value(json_object_get(body, "name")), BID " #2");
    json_decref(body);
}

static void test_create_answered_500_is_not_sent_again(void **state) {
    fx_t *fx = *state;
    step_t steps[] = {{500, 0, "{\"message\":\"Internal server error\",\"statusCode\":500}"}, {201, 0, call_created}};
    stub_script(&fx->stub, steps, 2);
    vapi_create_params_t p = create_params();
    assert_int_equal(vapi_call_create(fx->local, &p, on_call_counted, &fx->results[0]), 0);
    run_until_done(fx, 1, 10000);
    result_t *r = &fx->results[0];
    assert_true(r->called);
    assert_int_equal(r->outcome.kind, VAPI_UNAVAILABLE);
    assert_int_equal(r->outcome.http_status, 500);
    assert_int_equal(r->outcome.attempts, 1);
    assert_true(r->outcome.maybe_created);
    assert_false(r->has_call);
    // give a wrongful retry time to arrive (backoff is 10..50 ms here)
    int64_t until = util_monotonic_ms() + 300;
    while (util_monotonic_ms() < until) zclock_sleep(10);
    assert_int_equal(stub_hits(&fx->stub), 1);
}

static void test_create_timing_out_is_not_sent_again(void **state) {
    fx_t *fx = *state;
    step_t steps[] = {{201, 1500, call_created}};   // answers after 1.5 s; this client waits 0.4 s
    stub_script(&fx->stub, steps, 1);
    vapi_client_t *quick = client(fx, fx->base, NULL, 400);
    vapi_create_params_t p = create_params();
    assert_int_equal(vapi_call_create(quick, &p, on_call_counted, &fx->results[0]), 0);
    run_until_done(fx, 1, 10000);
    result_t *r = &fx->results[0];
    assert_true(r->called);
    assert_int_equal(r->outcome.kind, VAPI_UNAVAILABLE);
    assert_int_equal(r->outcome.transport_error, CURLE_OPERATION_TIMEDOUT);
    assert_int_equal(r->outcome.attempts, 1);
    assert_true(r->outcome.maybe_created);
    assert_int_equal(stub_hits(&fx->stub), 1);
    vapi_client_destroy(&quick);
}

static void test_create_is_sent_again_while_the_connection_is_refused(void **state) {
    fx_t *fx = *state;
    char base[64];
    snprintf(base, sizeof base, "http://127.0.0.1:%d", closed_port());
    vapi_client_t *down = client(fx, base, NULL, 2000);
    vapi_create_params_t p = create_params();
    assert_int_equal(vapi_call_create(down, &p, on_call_counted, &fx->results[0]), 0);
    run_until_done(fx, 1, 10000);
    result_t *r = &fx->results[0];
    assert_true(r->called);
    assert_int_equal(r->outcome.kind, VAPI_UNAVAILABLE);
    assert_int_equal(r->outcome.transport_error, CURLE_COULDNT_CONNECT);
    assert_int_equal(r->outcome.attempts, 3);   // max_attempts: nothing ever left, so each try was safe
    assert_false(r->outcome.maybe_created);
    vapi_client_destroy(&down);
}

static void test_get_is_retried_after_500(void **state) {
    fx_t *fx = *state;
    const char *ended = "{\"id\":\"" CALL_ID "\",\"status\":\"ended\",\"endedReason\":\"customer-busy\"}";
    step_t steps[] = {{500, 0, "{}"}, {502, 0, ""}, {200, 0, ended}};
    stub_script(&fx->stub, steps, 3);
    assert_int_equal(vapi_call_get(fx->local, KEY, CALL_ID, on_call_counted, &fx->results[0]), 0);
    run_until_done(fx, 1, 10000);
    result_t *r = &fx->results[0];
    assert_true(r->called);
    assert_int_equal(r->outcome.kind, VAPI_OK);
    assert_int_equal(r->outcome.attempts, 3);
    assert_string_equal(r->call.ended_reason, "customer-busy");
    assert_int_equal(stub_hits(&fx->stub), 3);
    for (int i = 0; i < 3; i++) {
        assert_string_equal(fx->stub.seen[i].method, "GET");
        assert_string_equal(fx->stub.seen[i].path, "/call/" CALL_ID);
        assert_string_equal(fx->stub.seen[i].auth, "Bearer " KEY);
    }
}

static void test_find_and_end_through_httpc(void **state) {
    fx_t *fx = *state;
    char control[128];
    snprintf(control, sizeof control, "%s/%s/control", fx->base, CALL_ID);
    const char *list = "[{\"id\":\"c-9\",\"name\":\"booking bk-7 #1\",\"createdAt\":\"2026-11-21T20:31:05.000Z\"}]";
    step_t steps[] = {{503, 0, ""}, {200, 0, list}, {200, 0, "{\"ok\":true}"}};
    stub_script(&fx->stub, steps, 3);
    assert_int_equal(vapi_call_find(fx->local, KEY, "ph-9a8b", 1795293060123LL, "bk-7", 1, on_call_counted,
                                    &fx->results[0]),
                     0);
    run_until_done(fx, 1, 10000);
    assert_int_equal(fx->results[0].outcome.kind, VAPI_OK);
    assert_true(fx->results[0].has_call);
    assert_string_equal(fx->results[0].call.id, "c-9");
    assert_int_equal(fx->results[0].outcome.attempts, 2);
    assert_string_equal(fx->stub.seen[1].path,
                        "/call?createdAtGt=2026-11-21T20%3A31%3A00.123Z&phoneNumberId=ph-9a8b&limit=1000");

    assert_int_equal(vapi_call_end(fx->local, control, on_end_counted, &fx->results[1]), 0);
    run_until_done(fx, 1, 10000);
    assert_int_equal(fx->results[1].outcome.kind, VAPI_OK);
    assert_false(fx->results[1].has_call);
    seen_t *s = &fx->stub.seen[2];
    assert_string_equal(s->method, "POST");
    assert_string_equal(s->path, "/" CALL_ID "/control");
    assert_string_equal(s->auth, "");
    assert_string_equal(s->body, "{\"type\":\"end-call\"}");

    // invalid arguments: refused at once, no callback
    assert_int_equal(vapi_call_find(fx->local, KEY, "ph-9a8b", 0, "bk 7", 1, on_call_counted, &fx->results[2]), -1);
    assert_int_equal(vapi_call_end(fx->local, "nope", on_end_counted, &fx->results[2]), -1);
    assert_false(fx->results[2].called);
}

// ---- find: page by page ------------------------------------------------------------------------

// 2026-11-21T20:31:00.123Z, the find's created_after in these tests.
#define AFTER_MS 1795293060123LL
#define FIND_PATH "/call?createdAtGt=2026-11-21T20%3A31%3A00.123Z"

// A client whose finds read pages of `limit` calls, at most `pages` of them.
static vapi_client_t *paged_client(fx_t *fx, int limit, int pages) {
    vapi_config_t c = {.api_base = fx->base, .public_url = "https://sweety.example/", .timeout_ms = 2000,
                       .max_attempts = 3, .find_limit = limit, .find_max_pages = pages};
    vapi_client_t *vapi = vapi_client_new(fx->http, &c, &fx->lg);
    assert_non_null(vapi);
    return vapi;
}

// One listed call: its id, name and createdAt (whole seconds after 20:31:00 plus ms, so pages can
// share a millisecond).
#define LISTED(id, name, ms) "{\"id\":\"" id "\",\"name\":\"" name "\",\"createdAt\":\"2026-11-21T20:31:" ms "Z\"}"
// A full page of two other calls, and a later page holding the call looked for (bk-7 #1).
#define PAGE_OTHERS "[" LISTED("c-a", "x #1", "09.000") "," LISTED("c-b", "x #2", "08.000") "]"
#define PAGE_WANTED "[" LISTED("c-7", "booking bk-7 #1", "07.000") "]"

// The find ended without a call and without saying "no such call" (kind tells how).
static void assert_no_call(const result_t *r, vapi_result_t kind) {
    assert_int_equal(r->outcome.kind, kind);
    assert_false(r->has_call);
    assert_false(r->outcome.not_found);
}

// Runs a find of booking bk-7 attempt 1 on `vapi` into fx->results[slot]; returns the requests it made.
static int run_find(fx_t *fx, vapi_client_t *vapi, const step_t *steps, size_t n, int slot) {
    stub_script(&fx->stub, steps, n);
    int before = stub_hits(&fx->stub);
    assert_int_equal(vapi_call_find(vapi, KEY, "ph-9a8b", AFTER_MS, "bk-7", 1, on_call_counted, &fx->results[slot]), 0);
    run_until_done(fx, 1, 10000);
    assert_true(fx->results[slot].called);
    return stub_hits(&fx->stub) - before;
}

// Hundreds of calls a second on one number: the lost dial's call is older than a full page, so the
// find walks back page by page (each bounded by the previous page's oldest createdAt + 1 ms, which
// lists that millisecond again) until it reaches it.
static void test_find_reads_older_pages_until_it_finds_the_call(void **state) {
    fx_t *fx = *state;
    vapi_client_t *vapi = paged_client(fx, 3, 5);
    const char *p1 = "[" LISTED("c-a", "booking bk-8 #1", "09.000") "," LISTED("c-b", "booking bk-9 #1", "08.500") ","
                     LISTED("c-c", "booking bk-7 #2", "08.250") "]";
    // c-c again (same millisecond as the bound), then two older ones: still full, still not there
    const char *p2 = "[" LISTED("c-c", "booking bk-7 #2", "08.250") "," LISTED("c-d", "booking bk-6 #1", "08.250") ","
                     LISTED("c-e", "booking bk-5 #1", "07.001") "]";
    const char *p3 = "[" LISTED("c-e", "booking bk-5 #1", "07.001") "," LISTED("c-7", "booking bk-7 #1", "06.000") "]";
    step_t steps[] = {{200, 0, p1}, {200, 0, p2}, {200, 0, p3}};
    assert_int_equal(run_find(fx, vapi, steps, 3, 0), 3);
    result_t *r = &fx->results[0];
    assert_int_equal(r->outcome.kind, VAPI_OK);
    assert_true(r->has_call);
    assert_string_equal(r->call.id, "c-7");
    assert_int_equal(r->outcome.pages, 3);
    assert_int_equal(r->outcome.attempts, 3);
    assert_string_equal(fx->stub.seen[0].path, FIND_PATH "&phoneNumberId=ph-9a8b&limit=3");
    assert_string_equal(fx->stub.seen[1].path,
                        FIND_PATH "&createdAtLt=2026-11-21T20%3A31%3A08.251Z&phoneNumberId=ph-9a8b&limit=3");
    assert_string_equal(fx->stub.seen[2].path,
                        FIND_PATH "&createdAtLt=2026-11-21T20%3A31%3A07.002Z&phoneNumberId=ph-9a8b&limit=3");
    for (int i = 0; i < 3; i++) assert_string_equal(fx->stub.seen[i].auth, "Bearer " KEY);
    vapi_client_destroy(&vapi);
}

// The window may end too: its first page already carries createdAtLt, later ones narrow it.
static void test_find_window_bounds_the_first_page_too(void **state) {
    fx_t *fx = *state;
    vapi_client_t *vapi = paged_client(fx, 2, 5);
    const char *p1 = PAGE_OTHERS, *p2 = PAGE_WANTED;
    step_t steps[] = {{200, 0, p1}, {200, 0, p2}};
    stub_script(&fx->stub, steps, 2);
    // 20:31:00.123 .. 20:31:10.000
    assert_int_equal(vapi_call_find_window(vapi, KEY, "ph-9a8b", AFTER_MS, 1795293070000LL, "bk-7", 1,
                                           on_call_counted, &fx->results[0]),
                     0);
    run_until_done(fx, 1, 10000);
    assert_int_equal(fx->results[0].outcome.kind, VAPI_OK);
    assert_string_equal(fx->results[0].call.id, "c-7");
    assert_string_equal(fx->stub.seen[0].path,
                        FIND_PATH "&createdAtLt=2026-11-21T20%3A31%3A10.000Z&phoneNumberId=ph-9a8b&limit=2");
    assert_string_equal(fx->stub.seen[1].path,
                        FIND_PATH "&createdAtLt=2026-11-21T20%3A31%3A08.001Z&phoneNumberId=ph-9a8b&limit=2");
    // an empty or inverted window is refused at once
    assert_int_equal(vapi_call_find_window(vapi, KEY, "ph-9a8b", AFTER_MS, AFTER_MS, "bk-7", 1, on_call_counted,
                                           &fx->results[1]),
                     -1);
    assert_int_equal(
        vapi_call_find_window(vapi, KEY, "ph-9a8b", AFTER_MS, -5, "bk-7", 1, on_call_counted, &fx->results[1]), -1);
    assert_false(fx->results[1].called);
    vapi_client_destroy(&vapi);
}

// "No such call" (which makes the dialer dial again) only once VAPI listed the whole window: a page
// that is not full.
static void test_find_says_no_such_call_only_after_a_page_that_is_not_full(void **state) {
    fx_t *fx = *state;
    vapi_client_t *vapi = paged_client(fx, 2, 5);
    const char *p1 = "[" LISTED("c-a", "booking bk-8 #1", "09.000") "," LISTED("c-b", "booking bk-9 #1", "08.000") "]";
    const char *p2 = "[" LISTED("c-c", "booking bk-7 #2", "07.000") "]";
    step_t steps[] = {{200, 0, p1}, {200, 0, p2}};
    assert_int_equal(run_find(fx, vapi, steps, 2, 0), 2);
    result_t *r = &fx->results[0];
    assert_no_call(r, VAPI_OK);
    assert_int_equal(r->outcome.pages, 2);

    // an empty page after a full one says the same
    step_t empty[] = {{200, 0, p1}, {200, 0, "[]"}};
    assert_int_equal(run_find(fx, vapi, empty, 2, 1), 2);
    assert_int_equal(fx->results[1].outcome.kind, VAPI_OK);
    assert_false(fx->results[1].has_call);
    vapi_client_destroy(&vapi);
}

// When the window cannot be searched to its end the answer is "unavailable" (the dialer asks again
// later), never "no such call" (the dialer would dial the attempt a second time).
static void test_find_is_unavailable_when_it_cannot_search_to_the_end(void **state) {
    fx_t *fx = *state;
    vapi_client_t *vapi = paged_client(fx, 2, 3);
    const char *p1 = PAGE_OTHERS;
    const char *p2 = "[" LISTED("c-c", "x #3", "07.000") "," LISTED("c-d", "x #4", "06.000") "]";
    const char *p3 = "[" LISTED("c-e", "x #5", "05.000") "," LISTED("c-f", "x #6", "04.000") "]";
    const char *p4 = "[" LISTED("c-7", "booking bk-7 #1", "03.000") "]";

    // the page bound: three full pages read, the fourth (which has the call) never asked for
    step_t bound[] = {{200, 0, p1}, {200, 0, p2}, {200, 0, p3}, {200, 0, p4}};
    assert_int_equal(run_find(fx, vapi, bound, 4, 0), 3);
    result_t *r = &fx->results[0];
    assert_no_call(r, VAPI_UNAVAILABLE);
    assert_int_equal(r->outcome.http_status, 200);
    assert_int_equal(r->outcome.transport_error, 0);
    assert_int_equal(r->outcome.pages, 3);

    // no progress: a full page whose calls all share one millisecond (the next page would be it again)
    const char *same = "[" LISTED("c-a", "x #1", "09.000") "," LISTED("c-b", "x #2", "09.000") "]";
    step_t stuck[] = {{200, 0, same}, {200, 0, p4}};
    assert_int_equal(run_find(fx, vapi, stuck, 2, 1), 1);
    assert_no_call(&fx->results[1], VAPI_UNAVAILABLE);

    // no progress: VAPI ignored createdAtLt and listed the same page again
    step_t ignored[] = {{200, 0, p1}, {200, 0, p1}, {200, 0, p4}};
    assert_int_equal(run_find(fx, vapi, ignored, 3, 2), 2);
    assert_int_equal(fx->results[2].outcome.kind, VAPI_UNAVAILABLE);

    // no progress: a full page without a single readable createdAt
    const char *undated_page = "[{\"id\":\"c-a\",\"name\":\"x #1\"},{\"id\":\"c-b\",\"name\":\"x #2\"}]";
    step_t undated[] = {{200, 0, undated_page}, {200, 0, p4}};
    assert_int_equal(run_find(fx, vapi, undated, 2, 3), 1);
    assert_int_equal(fx->results[3].outcome.kind, VAPI_UNAVAILABLE);

    // not newest first: paging by the oldest createdAt could skip calls, so it does not try
    memset(fx->results, 0, sizeof fx->results);
    const char *unsorted = "[" LISTED("c-b", "x #2", "08.000") "," LISTED("c-a", "x #1", "09.000") "]";
    step_t odd[] = {{200, 0, unsorted}, {200, 0, p4}};
    assert_int_equal(run_find(fx, vapi, odd, 2, 0), 1);
    assert_no_call(&fx->results[0], VAPI_UNAVAILABLE);
    vapi_client_destroy(&vapi);
}

// A later page's refusal is reported as it is, but its 404 does not mean "no such call".
static void test_find_later_page_errors_are_not_no_such_call(void **state) {
    fx_t *fx = *state;
    vapi_client_t *vapi = paged_client(fx, 2, 5);
    const char *p1 = PAGE_OTHERS;
    step_t gone[] = {{200, 0, p1}, {404, 0, "{\"message\":\"Not Found\",\"statusCode\":404}"}};
    assert_int_equal(run_find(fx, vapi, gone, 2, 0), 2);
    assert_int_equal(fx->results[0].outcome.kind, VAPI_REJECTED);
    assert_false(fx->results[0].outcome.not_found);
    assert_false(fx->results[0].has_call);

    step_t down[] = {{200, 0, p1}, {503, 0, ""}};   // the last step repeats: every retry fails
    assert_int_equal(run_find(fx, vapi, down, 2, 1), 4);
    assert_int_equal(fx->results[1].outcome.kind, VAPI_UNAVAILABLE);
    assert_int_equal(fx->results[1].outcome.http_status, 503);
    assert_int_equal(fx->results[1].outcome.attempts, 4);   // 1 + 3, summed over the pages
    vapi_client_destroy(&vapi);
}

// A page too large to read (HTTPC_BODY_MAX) is asked again with half as many calls.
static void test_find_halves_a_page_too_large_to_read(void **state) {
    fx_t *fx = *state;
    vapi_client_t *vapi = paged_client(fx, 4, 5);
    size_t big_len = HTTPC_BODY_MAX + 4096;
    char *big = malloc(big_len + 1);
    assert_non_null(big);
    memset(big, ' ', big_len);
    big[0] = '[';
    big[big_len - 1] = ']';
    big[big_len] = '\0';
    const char *small = "[" LISTED("c-7", "booking bk-7 #1", "03.000") "]";
    step_t steps[] = {{200, 0, big}, {200, 0, small}};
    assert_int_equal(run_find(fx, vapi, steps, 2, 0), 2);
    assert_int_equal(fx->results[0].outcome.kind, VAPI_OK);
    assert_true(fx->results[0].has_call);
    assert_string_equal(fx->results[0].call.id, "c-7");
    assert_string_equal(fx->stub.seen[1].path, FIND_PATH "&phoneNumberId=ph-9a8b&limit=2");
    free(big);
    vapi_client_destroy(&vapi);
}

// The client may go while a find walks its pages; httpc's destruction ends it with one callback.
static void test_find_outlives_its_client_and_ends_once(void **state) {
    fx_t *fx = *state;
    vapi_client_t *vapi = paged_client(fx, 2, 5);
    const char *p1 = PAGE_OTHERS, *p2 = PAGE_WANTED;
    step_t steps[] = {{200, 0, p1}, {200, 0, p2}};
    stub_script(&fx->stub, steps, 2);
    assert_int_equal(vapi_call_find(vapi, KEY, "ph-9a8b", AFTER_MS, "bk-7", 1, on_call_counted, &fx->results[0]), 0);
    vapi_client_destroy(&vapi);
    run_until_done(fx, 1, 10000);
    assert_int_equal(fx->results[0].outcome.kind, VAPI_OK);
    assert_string_equal(fx->results[0].call.id, "c-7");

    // cancelled between pages: the second page is slow and httpc goes first
    vapi = paged_client(fx, 2, 5);
    step_t slow[] = {{200, 0, p1}, {200, 3000, p2}};
    stub_script(&fx->stub, slow, 2);
    assert_int_equal(vapi_call_find(vapi, KEY, "ph-9a8b", AFTER_MS, "bk-7", 1, on_call_counted, &fx->results[1]), 0);
    vapi_client_destroy(&vapi);
    int64_t until = util_monotonic_ms() + 5000;
    while (stub_hits(&fx->stub) < 4 && util_monotonic_ms() < until) run_until_done(fx, 1, 20);
    assert_false(fx->results[1].called);
    httpc_destroy(&fx->http);   // teardown tolerates NULL
    assert_true(fx->results[1].called);
    assert_no_call(&fx->results[1], VAPI_UNAVAILABLE);
}

static void test_client_needs_its_urls(void **state) {
    fx_t *fx = *state;
    vapi_config_t c = {.api_base = "https://api.vapi.ai"};
    assert_null(vapi_client_new(fx->http, &c, &fx->lg));
    c = (vapi_config_t){.public_url = "https://x"};
    assert_null(vapi_client_new(fx->http, &c, &fx->lg));
    c = (vapi_config_t){.api_base = "", .public_url = "https://x"};
    assert_null(vapi_client_new(fx->http, &c, &fx->lg));
    vapi_client_t *none = NULL;
    vapi_client_destroy(&none);
}

int main(void) {
    curl_global_init(CURL_GLOBAL_DEFAULT);
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_create_request_carries_exactly_the_documented_fields),
        cmocka_unit_test(test_call_names_fit_vapis_forty_characters),
        T(test_create_refuses_bad_parameters),
        T(test_get_find_and_end_requests),
        cmocka_unit_test(test_created_call_is_read),
        cmocka_unit_test(test_the_three_concurrency_forms_and_other_refusals),
        cmocka_unit_test(test_unavailable_says_whether_the_call_may_exist),
        cmocka_unit_test(test_unreadable_2xx_is_bad_response_and_may_exist),
        cmocka_unit_test(test_ended_call_is_read_with_cost_times_and_recording),
        cmocka_unit_test(test_find_picks_the_newest_call_with_the_name),
        cmocka_unit_test(test_end_call_answers),
        T(test_create_is_sent_once_and_its_answer_read),
        T(test_create_answered_500_is_not_sent_again),
        T(test_create_timing_out_is_not_sent_again),
        T(test_create_is_sent_again_while_the_connection_is_refused),
        T(test_get_is_retried_after_500),
        T(test_find_and_end_through_httpc),
        T(test_find_reads_older_pages_until_it_finds_the_call),
        T(test_find_window_bounds_the_first_page_too),
        T(test_find_says_no_such_call_only_after_a_page_that_is_not_full),
        T(test_find_is_unavailable_when_it_cannot_search_to_the_end),
        T(test_find_later_page_errors_are_not_no_such_call),
        T(test_find_halves_a_page_too_large_to_read),
        T(test_find_outlives_its_client_and_ends_once),
        T(test_client_needs_its_urls),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return failed;
}
