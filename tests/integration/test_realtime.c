// tests/integration/test_realtime.c — the WebSocket /ws end to end: the real sweetyd (two of them
// on one database for the multi-instance case), a real PostgreSQL, sweety-sandbox for payments,
// and a real WebSocket client (tests/harness/wsclient.h, libwebsockets' client).
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "common/token.h"
#include "tests/harness/wsclient.h"
#include "tests/integration/client.h"
#include "tests/integration/daemon.h"
#include "tests/integration/sandbox.h"

#define TOKEN_SECRET "test-token-secret-0123456789abcdef"   // what test_daemon_prepare configures

typedef struct {
    test_daemon_t d;
    test_sandbox_t sb;
} fixture_t;

static fixture_t *F;

// ---- helpers ------------------------------------------------------------------------------------

static void book_paid(const test_daemon_t *d, client_booked_t *b) {
    char phone[20];
    client_new_phone(phone, sizeof phone);
    assert_int_equal(client_book_into(d, "standard", "stripe", phone, b), 201);
    assert_true(b->session[0] != '\0');
}

static void pay(const client_booked_t *b) {
    char path[256];
    snprintf(path, sizeof path, "/_sandbox/stripe/sessions/%s/complete", b->session);
    assert_int_equal(test_sandbox_call(&F->sb, "POST", path, "{\"payment_status\":\"paid\"}", NULL), 200);
}

static void subscribe(wsc_t *c, const char *id, const char *token, int after_seq) {
    char text[1400];
    snprintf(text, sizeof text, "{\"type\":\"subscribe\",\"booking_id\":\"%s\",\"token\":\"%s\",\"after_seq\":%d}", id,
             token, after_seq);
    assert_int_equal(wsc_send(c, text), 0);
}

static wsc_t *connect_open(wsc_ctx_t *ctx, const test_daemon_t *d) {
    wsc_t *c = wsc_connect(ctx, d->port, "/ws", NULL);
    assert_non_null(c);
    for (int i = 0; i < 500 && !wsc_is_open(c) && !wsc_is_closed(c); i++) wsc_service(ctx, 10);
    assert_true(wsc_is_open(c));
    return c;
}

static const char *msg_field(const wsc_t *c, size_t i, const char *key, char *buf, size_t size) {
    json_t *j = json_loads(wsc_msg(c, i), 0, NULL);
    json_t *v = json_object_get(j, key);
    buf[0] = '\0';
    if (json_is_string(v)) snprintf(buf, size, "%s", json_string_value(v));
    else if (json_is_integer(v)) snprintf(buf, size, "%lld", (long long)json_integer_value(v));
    json_decref(j);
    return buf;
}

// The status frames received, "seq:status" joined with commas.
static void statuses(const wsc_t *c, char *out, size_t size) {
    out[0] = '\0';
    for (size_t i = 0; i < wsc_count(c); i++) {
        char type[32], seq[16], st[32];
        if (strcmp(msg_field(c, i, "type", type, sizeof type), "status") != 0) continue;
        size_t n = strlen(out);
        snprintf(out + n, size - n, "%s%s:%s", n ? "," : "", msg_field(c, i, "seq", seq, sizeof seq),
                 msg_field(c, i, "status", st, sizeof st));
    }
}

static size_t count_type(const wsc_t *c, const char *want) {
    size_t n = 0;
    char type[32];
    for (size_t i = 0; i < wsc_count(c); i++)
        if (strcmp(msg_field(c, i, "type", type, sizeof type), want) == 0) n++;
    return n;
}

typedef struct {
    wsc_t **c;
    size_t n;
    size_t want;
    const char *type;
} wait_t;

static bool all_have(void *arg) {
    wait_t *w = arg;
    for (size_t i = 0; i < w->n; i++)
        if (count_type(w->c[i], w->type) < w->want) return false;
    return true;
}

static int wait_type(wsc_ctx_t *ctx, wsc_t *c, const char *type, size_t want, int timeout_ms) {
    wait_t w = {&c, 1, want, type};
    return wsc_wait(ctx, all_have, &w, timeout_ms);
}

static bool is_closed(void *arg) {
    return wsc_is_closed(arg);
}

// The history as the REST API gives it, "seq:status" joined with commas.
static void rest_history(const test_daemon_t *d, const client_booked_t *b, char *out, size_t size) {
    char h[512];
    client_history(d, b->id, b->token, h, sizeof h);
    out[0] = '\0';
    int seq = 1;
    for (char *save = NULL, *t = strtok_r(h, ",", &save); t; t = strtok_r(NULL, ",", &save), seq++) {
        size_t n = strlen(out);
        snprintf(out + n, size - n, "%s%d:%s", n ? "," : "", seq, t);
    }
}

static int64_t metric(const test_daemon_t *d, const char *line_prefix) {
    char *raw = NULL;
    client_api(d, "GET", "/metrics", NULL, NULL, NULL, &raw);
    int64_t v = -1;
    char needle[256];
    snprintf(needle, sizeof needle, "\n%s", line_prefix);   // the sample, not its # HELP line
    const char *p = raw ? strstr(raw, needle) : NULL;
    if (p) v = strtoll(p + strlen(needle), NULL, 10);
    free(raw);
    return v;
}

static long rss_kib(pid_t pid) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    char *s = harness_read_file(path);
    const char *p = s ? strstr(s, "VmRSS:") : NULL;
    long v = p ? strtol(p + 6, NULL, 10) : -1;
    free(s);
    return v;
}

// ---- set-up -------------------------------------------------------------------------------------

static int setup(void **state) {
    static fixture_t f;
    F = &f;
    srand((unsigned)getpid());
    // 1,000 clients here and 1,000 connections in sweetyd (which inherits the limit)
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    char dir[512];
    if (harness_tmpdir(dir, sizeof dir) != 0) return -1;
    test_sandbox_reserve(&f.sb, dir);
    harness_rmtree(dir);
    char extra[1024];
    test_sandbox_daemon_conf(&f.sb, "[http]\nbooking_rate_per_min = 100000\nwebhook_rate_per_min = 100000\n", extra,
                             sizeof extra);
    if (test_daemon_prepare(&f.d, NULL, extra) != 0) return -1;
    snprintf(f.sb.log, sizeof f.sb.log, "%s/sandbox.log", f.d.dir);
    if (test_sandbox_start(&f.sb, f.d.base_url) != 0 || test_daemon_start(&f.d) != 0) return -1;
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

// ---- tests --------------------------------------------------------------------------------------

static void test_statuses_arrive_live_in_order_and_reconnect_misses_nothing(void **state) {
    client_booked_t b;
    book_paid(&F->d, &b);
    wsc_ctx_t *ctx = wsc_ctx_new();
    wsc_t *c = connect_open(ctx, &F->d);
    subscribe(c, b.id, b.token, 0);
    assert_int_equal(wait_type(ctx, c, "status", 2, 10000), 0);
    char buf[64];
    assert_string_equal(msg_field(c, 0, "type", buf, sizeof buf), "subscribed");
    assert_string_equal(msg_field(c, 0, "booking_id", buf, sizeof buf), b.id);
    pay(&b);
    assert_int_equal(wait_type(ctx, c, "status", 4, 15000), 0);
    wsc_service(ctx, 300);   // nothing more may come
    char got[512], want[512];
    statuses(c, got, sizeof got);
    assert_string_equal(got, "1:pending,2:pending_payment,3:confirmed,4:queued");
    rest_history(&F->d, &b, want, sizeof want);
    assert_string_equal(got, want);   // the socket and GET /api/bookings/{id} agree
    assert_string_equal(msg_field(c, 1, "booking_id", buf, sizeof buf), b.id);
    assert_non_null(strstr(msg_field(c, 1, "at", buf, sizeof buf), "T"));
    wsc_close(c);

    // reconnect with the last seq seen: nothing again, nothing missing
    wsc_t *r = connect_open(ctx, &F->d);
    subscribe(r, b.id, b.token, 2);
    assert_int_equal(wait_type(ctx, r, "status", 2, 10000), 0);
    wsc_service(ctx, 300);
    statuses(r, got, sizeof got);
    assert_string_equal(got, "3:confirmed,4:queued");
    wsc_t *r4 = connect_open(ctx, &F->d);
    subscribe(r4, b.id, b.token, 4);
    assert_int_equal(wait_type(ctx, r4, "subscribed", 1, 10000), 0);
    wsc_service(ctx, 500);
    assert_int_equal(count_type(r4, "status"), 0);

    // subscribing after the history exists: all of it, in order
    wsc_t *late = connect_open(ctx, &F->d);
    subscribe(late, b.id, b.token, 0);
    assert_int_equal(wait_type(ctx, late, "status", 4, 10000), 0);
    statuses(late, got, sizeof got);
    assert_string_equal(got, want);
    wsc_ctx_destroy(&ctx);
}

static void test_free_trial_subscriber_sees_it_queued(void **state) {
    wsc_ctx_t *ctx = wsc_ctx_new();
    char phone[20];
    client_new_phone(phone, sizeof phone);
    client_booked_t b;
    assert_int_equal(client_book_into(&F->d, "free_trial", NULL, phone, &b), 201);
    wsc_t *c = connect_open(ctx, &F->d);
    subscribe(c, b.id, b.token, 0);
    assert_int_equal(client_wait_status(&F->d, b.id, b.token, "queued", 10000), 0);
    char want[512], got[512];
    rest_history(&F->d, &b, want, sizeof want);
    size_t n = 0;
    for (char *p = want; *p; p++) n += *p == ',';
    assert_int_equal(wait_type(ctx, c, "status", n + 1, 10000), 0);
    statuses(c, got, sizeof got);
    assert_string_equal(got, want);
    assert_non_null(strstr(got, "queued"));
    wsc_ctx_destroy(&ctx);
}

static void expect_close(wsc_ctx_t *ctx, wsc_t *c, const char *error_code, int close_code) {
    assert_int_equal(wsc_wait(ctx, is_closed, c, 10000), 0);
    assert_int_equal(wsc_close_code(c), close_code);
    char buf[64];
    assert_true(wsc_count(c) >= 1);
    assert_string_equal(msg_field(c, wsc_count(c) - 1, "type", buf, sizeof buf), "error");
    assert_string_equal(msg_field(c, wsc_count(c) - 1, "code", buf, sizeof buf), error_code);
}

static void test_bad_expired_or_foreign_tokens_are_closed_4401(void **state) {
    client_booked_t b, other;
    book_paid(&F->d, &b);
    book_paid(&F->d, &other);
    char expired[300];
    assert_int_equal(token_issue(TOKEN_SECRET, b.id, (int64_t)time(NULL) - 3600, 60, expired, sizeof expired), 0);
    char forged[300];
    assert_int_equal(token_issue("some-other-secret-0123456789", b.id, (int64_t)time(NULL), 3600, forged, sizeof forged),
                     0);
    const char *tokens[] = {"not-a-token", expired, forged, other.token};
    wsc_ctx_t *ctx = wsc_ctx_new();
    for (size_t i = 0; i < sizeof tokens / sizeof tokens[0]; i++) {
        wsc_t *c = connect_open(ctx, &F->d);
        subscribe(c, b.id, tokens[i], 0);
        expect_close(ctx, c, "unauthorized", 4401);
        assert_int_equal(count_type(c, "status"), 0);
    }
    wsc_ctx_destroy(&ctx);
}

static void test_malformed_frames_are_closed_4400(void **state) {
    const char *frames[] = {"not json", "[1,2]", "{\"type\":\"unsubscribe_all\"}", "{\"type\":\"subscribe\"}",
                            "{\"type\":\"subscribe\",\"booking_id\":\"x\",\"token\":\"y\",\"after_seq\":-1}"};
    wsc_ctx_t *ctx = wsc_ctx_new();
    for (size_t i = 0; i < sizeof frames / sizeof frames[0]; i++) {
        wsc_t *c = connect_open(ctx, &F->d);
        assert_int_equal(wsc_send(c, frames[i]), 0);
        expect_close(ctx, c, "bad_request", 4400);
    }
    wsc_ctx_destroy(&ctx);
}

static void test_foreign_origin_is_refused_at_the_upgrade(void **state) {
    wsc_ctx_t *ctx = wsc_ctx_new();
    wsc_t *bad = wsc_connect(ctx, F->d.port, "/ws", "http://evil.example");
    assert_int_equal(wsc_wait(ctx, is_closed, bad, 10000), 0);
    assert_true(wsc_failed(bad));
    assert_int_equal(wsc_http_status(bad), 403);
    wsc_t *good = wsc_connect(ctx, F->d.port, "/ws", F->d.base_url);   // http.cors_origin defaults to public_url
    for (int i = 0; i < 500 && !wsc_is_open(good) && !wsc_is_closed(good); i++) wsc_service(ctx, 10);
    assert_true(wsc_is_open(good));
    wsc_t *elsewhere = wsc_connect(ctx, F->d.port, "/other", NULL);
    assert_int_equal(wsc_wait(ctx, is_closed, elsewhere, 10000), 0);
    assert_true(wsc_failed(elsewhere));
    wsc_ctx_destroy(&ctx);
}

static void test_seventeenth_subscription_is_refused_and_the_connection_stays(void **state) {
    wsc_ctx_t *ctx = wsc_ctx_new();
    wsc_t *c = connect_open(ctx, &F->d);
    char id[40], tok[300];
    for (int i = 0; i < 16; i++) {
        snprintf(id, sizeof id, "no-such-booking-%d", i);
        assert_int_equal(token_issue(TOKEN_SECRET, id, (int64_t)time(NULL), 3600, tok, sizeof tok), 0);
        subscribe(c, id, tok, 0);
        if (i == 3) subscribe(c, id, tok, 0);   // again: does not count twice
    }
    assert_int_equal(wait_type(ctx, c, "subscribed", 17, 10000), 0);
    snprintf(id, sizeof id, "no-such-booking-16");
    assert_int_equal(token_issue(TOKEN_SECRET, id, (int64_t)time(NULL), 3600, tok, sizeof tok), 0);
    subscribe(c, id, tok, 0);
    assert_int_equal(wait_type(ctx, c, "error", 1, 10000), 0);
    char buf[64];
    assert_string_equal(msg_field(c, wsc_count(c) - 1, "code", buf, sizeof buf), "too_many_subscriptions");
    assert_int_equal(metric(&F->d, "sweety_ws_subscriptions "), 16);
    // still open and still served
    client_booked_t b;
    book_paid(&F->d, &b);
    wsc_service(ctx, 200);
    assert_true(wsc_is_open(c));
    wsc_t *c2 = connect_open(ctx, &F->d);
    subscribe(c2, b.id, b.token, 0);
    assert_int_equal(wait_type(ctx, c2, "status", 2, 10000), 0);
    wsc_ctx_destroy(&ctx);
}

#define MANY_CLIENTS 1000
#define MANY_BOOKINGS 20

static void test_a_thousand_clients_each_get_every_status(void **state) {
    static client_booked_t b[MANY_BOOKINGS];
    for (int i = 0; i < MANY_BOOKINGS; i++) book_paid(&F->d, &b[i]);
    wsc_ctx_t *ctx = wsc_ctx_new();
    static wsc_t *c[MANY_CLIENTS];
    for (int i = 0; i < MANY_CLIENTS; i++) {
        c[i] = wsc_connect(ctx, F->d.port, "/ws", NULL);
        assert_non_null(c[i]);
        subscribe(c[i], b[i % MANY_BOOKINGS].id, b[i % MANY_BOOKINGS].token, 0);
        if (i % 50 == 49) wsc_service(ctx, 5);
    }
    wait_t w = {c, MANY_CLIENTS, 2, "status"};
    int rc = wsc_wait(ctx, all_have, &w, 60000);
    size_t open = 0;
    for (int i = 0; i < MANY_CLIENTS; i++) open += wsc_is_open(c[i]);
    if (rc != 0) fprintf(stderr, "open clients: %zu\n", open);
    assert_int_equal(rc, 0);
    assert_int_equal(metric(&F->d, "sweety_ws_connections "), MANY_CLIENTS);
    for (int i = 0; i < MANY_BOOKINGS; i++) pay(&b[i]);
    w.want = 4;
    assert_int_equal(wsc_wait(ctx, all_have, &w, 60000), 0);
    wsc_service(ctx, 300);
    for (int i = 0; i < MANY_CLIENTS; i++) {
        char got[512];
        statuses(c[i], got, sizeof got);
        assert_string_equal(got, "1:pending,2:pending_payment,3:confirmed,4:queued");
    }
    wsc_ctx_destroy(&ctx);
}

static void test_a_client_that_stops_reading_is_closed_and_memory_stays_bounded(void **state) {
    pid_t pid = harness_proc_pid(F->d.proc);
    long before = rss_kib(pid);
    int64_t slow_before = metric(&F->d, "sweety_ws_closed_total{reason=\"slow_consumer\"} ");
    client_booked_t b;
    book_paid(&F->d, &b);
    wsc_ctx_t *ctx = wsc_ctx_new();
    wsc_t *c = connect_open(ctx, &F->d);
    subscribe(c, b.id, b.token, 0);
    assert_int_equal(wait_type(ctx, c, "status", 2, 10000), 0);
    wsc_rx_enable(c, false);
    // Every subscribe replays the whole history: many frames the client never reads.
    bool closed = false;
    for (int round = 0; round < 400 && !closed; round++) {
        char text[1400];
        snprintf(text, sizeof text, "{\"type\":\"subscribe\",\"booking_id\":\"%s\",\"token\":\"%s\",\"after_seq\":0}",
                 b.id, b.token);
        for (int i = 0; i < 200 && !wsc_is_closed(c); i++) wsc_send(c, text);
        wsc_service(ctx, 20);
        if (round % 10 == 9)
            closed = metric(&F->d, "sweety_ws_closed_total{reason=\"slow_consumer\"} ") > slow_before;
    }
    for (int i = 0; i < 100 && !closed; i++) {
        wsc_service(ctx, 50);
        closed = metric(&F->d, "sweety_ws_closed_total{reason=\"slow_consumer\"} ") > slow_before;
    }
    assert_true(closed);
    long after = rss_kib(pid);
    fprintf(stderr, "sweetyd VmRSS before %ld KiB, after %ld KiB\n", before, after);
    assert_true(before > 0 && after > 0);
    assert_true(after - before < 64 * 1024);   // bounded: the queue is 256 KiB at most
    wsc_rx_enable(c, true);
    assert_int_equal(wsc_wait(ctx, is_closed, c, 20000), 0);
    wsc_ctx_destroy(&ctx);
}

static void test_status_committed_by_another_instance_reaches_the_client(void **state) {
    test_daemon_t b;
    assert_int_equal(test_daemon_prepare(&b, F->d.db_url, NULL), 0);
    assert_int_equal(test_daemon_start(&b), 0);
    client_booked_t bk;
    book_paid(&F->d, &bk);   // through A; the sandbox's webhooks go to A too
    wsc_ctx_t *ctx = wsc_ctx_new();
    wsc_t *c = connect_open(ctx, &b);
    subscribe(c, bk.id, bk.token, 0);
    assert_int_equal(wait_type(ctx, c, "status", 2, 10000), 0);
    pay(&bk);
    assert_int_equal(wait_type(ctx, c, "status", 4, 15000), 0);
    char got[512];
    statuses(c, got, sizeof got);
    assert_string_equal(got, "1:pending,2:pending_payment,3:confirmed,4:queued");

    // SIGTERM: the client sees 1001
    assert_int_equal(test_daemon_stop(&b, 10000), 0);
    assert_int_equal(wsc_wait(ctx, is_closed, c, 5000), 0);
    assert_int_equal(wsc_close_code(c), 1001);
    wsc_ctx_destroy(&ctx);
    test_daemon_cleanup(&b);
}

// Under AddressSanitizer freed memory is held in a quarantine (256 MiB by default) before reuse,
// so sweetyd's RSS would grow with every replayed frame it frees, not with what it keeps. A small
// quarantine keeps the memory check meaningful in the sanitizer build; sweetyd inherits it.
static void bound_asan_quarantine(void) {
    const char *asan = getenv("ASAN_OPTIONS");
    if (asan == NULL) return;
    char opts[1024];
    int n = snprintf(opts, sizeof opts, "%s:quarantine_size_mb=4", asan);
    if (n > 0 && (size_t)n < sizeof opts) setenv("ASAN_OPTIONS", opts, 1);
}

int main(void) {
    curl_global_init(CURL_GLOBAL_DEFAULT);
    bound_asan_quarantine();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_statuses_arrive_live_in_order_and_reconnect_misses_nothing),
        cmocka_unit_test(test_free_trial_subscriber_sees_it_queued),
        cmocka_unit_test(test_bad_expired_or_foreign_tokens_are_closed_4401),
        cmocka_unit_test(test_malformed_frames_are_closed_4400),
        cmocka_unit_test(test_foreign_origin_is_refused_at_the_upgrade),
        cmocka_unit_test(test_seventeenth_subscription_is_refused_and_the_connection_stays),
        cmocka_unit_test(test_a_thousand_clients_each_get_every_status),
        cmocka_unit_test(test_a_client_that_stops_reading_is_closed_and_memory_stays_bounded),
        cmocka_unit_test(test_status_committed_by_another_instance_reaches_the_client),
    };
    int failed = cmocka_run_group_tests_name("realtime", tests, setup, teardown);
    curl_global_cleanup();
    return failed;
}
