// tests/integration/test_dispatch.c — call dispatch end to end: the real sweetyd, a real
// PostgreSQL and sweety-sandbox playing VAPI (and Stripe for paid plans): queue, agent capacity,
// the dialer, VAPI server messages, retries, the duration monitor, lookups of quiet calls.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <curl/curl.h>
#include <unistd.h>

#include "tests/integration/client.h"
#include "tests/integration/daemon.h"
#include "tests/integration/sandbox.h"

#define KEY_A "vapi_key_account_a_0001"
#define KEY_B "vapi_key_account_b_0002"
#define LIMIT_A 3
#define LIMIT_B 2
#define PLAN_SECONDS 10
#define GRACE_S 1

typedef struct {
    test_daemon_t d;
    test_sandbox_t sb;
    char account_a[40], account_b[40];
} fixture_t;

static fixture_t *F;

// ---- helpers ------------------------------------------------------------------------------------

static long sandbox(const char *method, const char *path, const char *json, json_t **out) {
    return test_sandbox_call(&F->sb, method, path, json, out);
}

static int ctl(const char *const *args, char *out_line, size_t size) {
    char *out = NULL, *err = NULL;
    int rc = test_daemon_ctl(&F->d, args, &out, &err);
    if (rc != 0) fprintf(stderr, "sweetyctl %s %s: %s\n", args[0], args[1] ? args[1] : "", err ? err : "");
    if (out_line && out) {
        snprintf(out_line, size, "%s", out);
        out_line[strcspn(out_line, "\n")] = '\0';
    }
    free(out);
    free(err);
    return rc;
}

static int add_account(const char *name, const char *key, int limit, char *id, size_t size) {
    setenv("SWEETY_TEST_VAPI_KEY", key, 1);
    char lim[16];
    snprintf(lim, sizeof lim, "%d", limit);
    const char *args[] = {"account", "add", "--name", name, "--api-key-env", "SWEETY_TEST_VAPI_KEY", "--phone-number-id",
                          "pn_test_0001", "--max-concurrent", lim, NULL};
    int rc = ctl(args, id, size);
    unsetenv("SWEETY_TEST_VAPI_KEY");
    return rc;
}

static int add_agent(const char *account, const char *plan, int limit) {
    char lim[16];
    snprintf(lim, sizeof lim, "%d", limit);
    const char *args[] = {"agent", "add", "--account", account, "--plan", plan, "--max-concurrent", lim, NULL};
    return ctl(args, NULL, 0);
}

static void script(const char *phone, const char *outcomes_json) {
    char body[512];
    snprintf(body, sizeof body, "{\"number\":\"%s\",\"outcomes\":%s}", phone, outcomes_json);
    assert_int_equal(sandbox("POST", "/_sandbox/vapi/script", body, NULL), 200);
}

static void book_free(const char *phone, client_booked_t *b) {
    assert_int_equal(client_book_into(&F->d, "free_trial", NULL, phone, b), 201);
}

// Sum of every agent's and account's counter: zero when no call is active.
static int64_t capacity_in_use(void) {
    return client_query_int(&F->d, "SELECT coalesce(sum(active_calls),0) FROM vapi_agents") +
           client_query_int(&F->d, "SELECT coalesce(sum(active_calls),0) FROM vapi_accounts");
}

static void wait_capacity_released(void) {
    int64_t deadline = harness_now_ms() + 5000;
    while (capacity_in_use() != 0 && harness_now_ms() < deadline) harness_sleep_ms(50);
    assert_int_equal(capacity_in_use(), 0);
}

static int64_t calls_to(const char *phone) {
    json_t *j = NULL;
    sandbox("GET", "/_sandbox/vapi/calls", NULL, &j);
    json_t *calls = json_is_array(j) ? j : json_object_get(j, "calls");
    size_t i, n = 0;
    json_t *c;
    json_array_foreach(calls, i, c) {
        const char *num = json_string_value(json_object_get(c, "number"));
        n += num && strcmp(num, phone) == 0;
    }
    json_decref(j);
    return (int64_t)n;
}

static void pay(const client_booked_t *b) {
    assert_int_equal(test_sandbox_complete(&F->sb, b->session, "{\"payment_status\":\"paid\"}"), 200);
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
    char extra[2048];
    test_sandbox_daemon_conf(&f.sb,
                             "[payments]\nreconcile_after_s = 2\nreconcile_every_s = 1\n"
                             "[http]\nbooking_rate_per_min = 100000\nwebhook_rate_per_min = 1000000\n"
                             "[scheduler]\nmax_retries = 2\nretry_base_s = 1\nretry_max_s = 2\ngrace_s = 1\n"
                             "stale_call_s = 3\nlease_s = 3\naccount_hold_s = 1\n",
                             extra, sizeof extra);
    if (test_daemon_prepare(&f.d, NULL, extra) != 0) return -1;
    snprintf(f.sb.log, sizeof f.sb.log, "%s/sandbox.log", f.d.dir);
    if (test_sandbox_start(&f.sb, f.d.base_url) != 0 || test_daemon_start(&f.d) != 0) return -1;
    char body[128];
    snprintf(body, sizeof body, "{\"key\":\"%s\",\"limit\":%d}", KEY_A, LIMIT_A);
    if (sandbox("POST", "/_sandbox/vapi/keys", body, NULL) != 200) return -1;
    snprintf(body, sizeof body, "{\"key\":\"%s\",\"limit\":%d}", KEY_B, LIMIT_B);
    if (sandbox("POST", "/_sandbox/vapi/keys", body, NULL) != 200) return -1;
    if (add_account("account-a", KEY_A, LIMIT_A, f.account_a, sizeof f.account_a) != 0 ||
        add_account("account-b", KEY_B, LIMIT_B, f.account_b, sizeof f.account_b) != 0)
        return -1;
    const char *plans[] = {"free_trial", "standard", "extended", "premium"};
    for (size_t i = 0; i < 4; i++) {
        char secs[16], assistant[32];
        snprintf(secs, sizeof secs, "%d", PLAN_SECONDS);
        snprintf(assistant, sizeof assistant, "asst_%s", plans[i]);
        const char *set[] = {"plan", "set", plans[i], "--duration-seconds", secs, "--assistant-id", assistant, NULL};
        if (ctl(set, NULL, 0) != 0) return -1;
        // per plan, one agent in each account: 2 accounts x 2 agents for the load test's plan
        if (add_agent(f.account_a, plans[i], 2) != 0 || add_agent(f.account_b, plans[i], 2) != 0) return -1;
    }
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
    sandbox("POST", "/_sandbox/vapi/config", "{\"default_outcome\":\"answer:1\",\"concurrency_mode\":\"400\"}", NULL);
    return 0;
}

// ---- tests --------------------------------------------------------------------------------------

static void test_every_plan_goes_from_queued_to_completed(void **state) {
    const char *plans[] = {"free_trial", "standard", "extended", "premium"};
    client_booked_t b[4];
    for (size_t i = 0; i < 4; i++) {
        char phone[20];
        client_new_phone(phone, sizeof phone);
        if (i == 0) {
            book_free(phone, &b[i]);
        } else {
            assert_int_equal(client_book_into(&F->d, plans[i], "stripe", phone, &b[i]), 201);
            pay(&b[i]);
        }
    }
    for (size_t i = 0; i < 4; i++) {
        assert_int_equal(client_wait_status(&F->d, b[i].id, b[i].token, "completed", 30000), 0);
        char h[256];
        client_history(&F->d, b[i].id, b[i].token, h, sizeof h);
        const char *want = i == 0 ? "queued,initiating,calling,completed"
                                  : "pending,pending_payment,confirmed,queued,initiating,calling,completed";
        assert_string_equal(h, want);
    }
    wait_capacity_released();
}

static void test_busy_twice_then_answered_completes_after_two_retries(void **state) {
    char phone[20];
    client_new_phone(phone, sizeof phone);
    script(phone, "[\"busy\",\"busy\",\"answer:1\"]");
    client_booked_t b;
    book_free(phone, &b);
    assert_int_equal(client_wait_status(&F->d, b.id, b.token, "completed", 40000), 0);
    assert_int_equal(calls_to(phone), 3);
    char sql[160];
    snprintf(sql, sizeof sql, "SELECT attempt FROM call_queue WHERE booking_id='%s'", b.id);
    assert_int_equal(client_query_int(&F->d, sql), 2);
    wait_capacity_released();
}

static void test_always_busy_fails_and_a_paid_booking_is_refunded(void **state) {
    char phone[20];
    client_new_phone(phone, sizeof phone);
    script(phone, "[\"busy\"]");
    client_booked_t b;
    assert_int_equal(client_book_into(&F->d, "standard", "stripe", phone, &b), 201);
    pay(&b);
    assert_int_equal(client_wait_status(&F->d, b.id, b.token, "failed", 60000), 0);
    assert_int_equal(calls_to(phone), 3);   // the first attempt and max_retries = 2 retries
    char sql[200];
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM payments WHERE booking_id='%s' AND status IN ('refunded','refund_pending')", b.id);
    int64_t deadline = harness_now_ms() + 15000;
    while (client_query_int(&F->d, sql) != 1 && harness_now_ms() < deadline) harness_sleep_ms(100);
    assert_int_equal(client_query_int(&F->d, sql), 1);
}

static void test_call_that_never_ends_is_ended_at_plan_length_plus_grace(void **state) {
    char phone[20];
    client_new_phone(phone, sizeof phone);
    script(phone, "[\"stuck\"]");   // ignores maxDurationSeconds: only our monitor ends it
    client_booked_t b;
    book_free(phone, &b);
    assert_int_equal(client_wait_status(&F->d, b.id, b.token, "calling", 20000), 0);
    int64_t calling_at = harness_now_ms();
    assert_int_equal(client_wait_status(&F->d, b.id, b.token, "completed", (PLAN_SECONDS + GRACE_S + 10) * 1000), 0);
    int64_t took = harness_now_ms() - calling_at;
    assert_true(took >= (PLAN_SECONDS + GRACE_S - 1) * 1000);
    assert_true(took <= (PLAN_SECONDS + GRACE_S + 5) * 1000);
    // ended through VAPI's live call control, by our monitor (VAPI itself never ends a `stuck` call)
    json_t *calls = NULL;
    char path[128];
    snprintf(path, sizeof path, "/_sandbox/vapi/calls?number=%%2B%s", phone + 1);
    sandbox("GET", path, NULL, &calls);
    json_t *list = json_is_array(calls) ? calls : json_object_get(calls, "calls");
    assert_int_equal(json_array_size(list), 1);
    assert_true(json_is_true(json_object_get(json_array_get(list, 0), "ended_by_control")));
    json_decref(calls);
    wait_capacity_released();
}

static void test_lost_end_of_call_is_settled_by_a_lookup(void **state) {
    char phone[20];
    client_new_phone(phone, sizeof phone);
    script(phone, "[\"lost-end:1\"]");
    client_booked_t b;
    book_free(phone, &b);
    assert_int_equal(client_wait_status(&F->d, b.id, b.token, "calling", 20000), 0);
    assert_int_equal(client_wait_status(&F->d, b.id, b.token, "completed", 30000), 0);
    wait_capacity_released();
}

static void test_bad_vapi_secret_is_refused_and_changes_nothing(void **state) {
    const char *body = "{\"message\":{\"type\":\"status-update\",\"status\":\"ended\",\"endedReason\":\"customer-busy\","
                       "\"call\":{\"id\":\"call-does-not-matter\"}}}";
    const char *bad[] = {"Content-Type: application/json", "X-Vapi-Secret: not-the-secret", NULL};
    json_t *j = NULL;
    assert_int_equal(client_api(&F->d, "POST", "/webhooks/vapi", body, bad, &j, NULL), 401);
    assert_string_equal(json_string_value(json_object_get(json_object_get(j, "error"), "code")), "bad_secret");
    json_decref(j);
    const char *none[] = {"Content-Type: application/json", NULL};
    assert_int_equal(client_api(&F->d, "POST", "/webhooks/vapi", body, none, NULL, NULL), 401);
}

static void test_end_of_call_report_ten_times_releases_capacity_once(void **state) {
    char phone[20];
    client_new_phone(phone, sizeof phone);
    client_booked_t b;
    book_free(phone, &b);
    assert_int_equal(client_wait_status(&F->d, b.id, b.token, "completed", 30000), 0);
    char sql[160], call_id[80] = "";
    snprintf(sql, sizeof sql, "SELECT vapi_call_id FROM bookings WHERE id='%s'", b.id);
    assert_int_equal(harness_pg_query(F->d.db_url, sql, call_id, sizeof call_id), 0);
    assert_true(call_id[0] != '\0');
    // the report follows the `ended` status-update by a moment: wait until the sandbox has sent it
    json_t *j = NULL;
    char event_id[128] = "";
    int64_t deadline = harness_now_ms() + 10000;
    while (!event_id[0] && harness_now_ms() < deadline) {
        json_decref(j);
        j = NULL;
        sandbox("GET", "/_sandbox/webhooks?provider=vapi&type=end-of-call-report", NULL, &j);
        size_t i;
        json_t *ev;
        json_array_foreach(json_object_get(j, "events"), i, ev) {
            const char *evbody = json_string_value(json_object_get(ev, "body"));
            const char *id = json_string_value(json_object_get(ev, "id"));
            const char *st = json_string_value(json_object_get(ev, "state"));
            if (evbody && id && st && strstr(evbody, call_id) && strcmp(st, "delivered") == 0)
                snprintf(event_id, sizeof event_id, "%s", id);
        }
        if (!event_id[0]) harness_sleep_ms(100);
    }
    if (!event_id[0]) {
        char *dump = json_dumps(j, JSON_COMPACT);
        fprintf(stderr, "no end-of-call-report for call %s in %.2000s\n", call_id, dump ? dump : "");
        free(dump);
    }
    json_decref(j);
    assert_true(event_id[0] != '\0');
    wait_capacity_released();
    char req[200];
    snprintf(req, sizeof req, "{\"id\":\"%s\",\"times\":10}", event_id);
    assert_int_equal(sandbox("POST", "/_sandbox/webhooks/redeliver", req, NULL), 200);
    // the ten deliveries change nothing: watch for a while that nothing moves
    int64_t until = harness_now_ms() + 1500;
    while (harness_now_ms() < until) {
        assert_int_equal(capacity_in_use(), 0);
        harness_sleep_ms(100);
    }
    char h[256];
    client_history(&F->d, b.id, b.token, h, sizeof h);
    assert_string_equal(h, "queued,initiating,calling,completed");
}

static void test_two_hundred_bookings_never_exceed_any_limit(void **state) {
    enum { N = 200 };
    for (int i = 0; i < N; i++) {
        char phone[20];
        snprintf(phone, sizeof phone, "+1444%07d", i + (int)(getpid() % 1000) * 1000);
        json_t *j = NULL;
        assert_int_equal(client_book(&F->d, "free_trial", NULL, phone, &j), 201);
        json_decref(j);
    }
    int64_t deadline = harness_now_ms() + 240000;
    int64_t done = 0;
    while (harness_now_ms() < deadline) {
        done = client_query_int(&F->d, "SELECT count(*) FROM bookings b JOIN users u ON u.id=b.user_id "
                                       "WHERE u.phone LIKE '+1444%' AND b.status='completed'");
        if (done == N) break;
        harness_sleep_ms(250);
    }
    assert_int_equal(done, N);
    json_t *stats = NULL;
    sandbox("GET", "/_sandbox/vapi/stats", NULL, &stats);
    size_t i;
    json_t *k;
    json_array_foreach(json_object_get(stats, "keys"), i, k) {
        json_int_t peak = json_integer_value(json_object_get(k, "peak"));
        json_int_t limit = json_integer_value(json_object_get(k, "limit"));
        assert_true(peak <= limit);
    }
    json_decref(stats);
    wait_capacity_released();
}

static void test_vapi_over_concurrency_requeues_without_counting_an_attempt(void **state) {
    // account B's key has no room at VAPI although our counters say it has: VAPI refuses with its
    // over-concurrency answer, the call goes back to the queue (no attempt counted), B rests
    char body[128];
    snprintf(body, sizeof body, "{\"key\":\"%s\",\"limit\":0}", KEY_B);
    assert_int_equal(sandbox("POST", "/_sandbox/vapi/keys", body, NULL), 200);
    client_booked_t b[6];
    for (size_t i = 0; i < 6; i++) {
        char phone[20];
        client_new_phone(phone, sizeof phone);
        book_free(phone, &b[i]);
    }
    for (size_t i = 0; i < 6; i++) {
        assert_int_equal(client_wait_status(&F->d, b[i].id, b[i].token, "completed", 60000), 0);
        char sql[160];
        snprintf(sql, sizeof sql, "SELECT attempt FROM call_queue WHERE booking_id='%.40s'", b[i].id);
        assert_int_equal(client_query_int(&F->d, sql), 0);
    }
    json_t *stats = NULL;
    sandbox("GET", "/_sandbox/vapi/stats", NULL, &stats);
    json_int_t refused = 0;
    size_t i;
    json_t *k;
    json_array_foreach(json_object_get(stats, "keys"), i, k)
        if (json_integer_value(json_object_get(k, "limit")) == 0)
            refused = json_integer_value(json_object_get(k, "rejected"));
    json_decref(stats);
    assert_true(refused > 0);   // B was really tried, and refused
    snprintf(body, sizeof body, "{\"key\":\"%s\",\"limit\":%d}", KEY_B, LIMIT_B);
    assert_int_equal(sandbox("POST", "/_sandbox/vapi/keys", body, NULL), 200);
    wait_capacity_released();
}

static int64_t set_accounts_enabled(bool enabled) {
    return client_query_int(&F->d, enabled ? "WITH u AS (UPDATE vapi_accounts SET enabled = true RETURNING 1)"
                                             " SELECT count(*) FROM u"
                                           : "WITH u AS (UPDATE vapi_accounts SET enabled = false RETURNING 1)"
                                             " SELECT count(*) FROM u");
}

// With no usable agent, the scheduler stops claiming for each new booking (a claim could only
// fail); the bookings wait, and once an operator enables an account again (NOTIFY sweety_config)
// every one of them is dialled, once.
static void test_bookings_wait_while_no_agent_is_usable_then_are_dialled_once(void **state) {
    enum { N = 5 };
    assert_int_equal(set_accounts_enabled(false), 2);
    client_booked_t b[N];
    char phones[N][20];
    for (size_t i = 0; i < N; i++) {
        client_new_phone(phones[i], sizeof phones[i]);
        book_free(phones[i], &b[i]);
    }
    harness_sleep_ms(1500);   // more than a sweep: nothing can be claimed
    for (size_t i = 0; i < N; i++) {
        char sql[160];
        snprintf(sql, sizeof sql, "SELECT count(*) FROM bookings WHERE id = '%.40s' AND status = 'queued'", b[i].id);
        assert_int_equal(client_query_int(&F->d, sql), 1);
        assert_int_equal(calls_to(phones[i]), 0);
    }
    int64_t enabled_at = harness_now_ms();
    assert_int_equal(set_accounts_enabled(true), 2);
    for (size_t i = 0; i < N; i++)
        assert_int_equal(client_wait_status(&F->d, b[i].id, b[i].token, "completed", 30000), 0);
    if (getenv("SWEETY_TEST_VERBOSE"))
        fprintf(stderr, "all %d completed %lld ms after the accounts came back\n", N,
                (long long)(harness_now_ms() - enabled_at));
    for (size_t i = 0; i < N; i++) assert_int_equal(calls_to(phones[i]), 1);
    wait_capacity_released();
}

// No name, email or full phone number in the daemon's log after all the calls above.
static void test_no_personal_data_reaches_the_log(void **state) {
    char *log = harness_read_file(F->d.log);
    assert_non_null(log);
    assert_null(strstr(log, "Zoe Quartermaine"));
    assert_null(strstr(log, "zoe.q@example.org"));
    assert_null(strstr(log, KEY_A));
    assert_null(strstr(log, KEY_B));
    for (const char *p = log; *p; p++) {
        size_t digits = 0;
        const char *q = p + (*p == '+');
        while (q[digits] >= '0' && q[digits] <= '9') digits++;
        if (*p == '+' && digits >= 8) {
            fprintf(stderr, "phone-like text in the log: %.16s\n", p);
            fail();
        }
        if (digits >= 11 && (p == log || p[-1] < '0' || p[-1] > '9') && strncmp(q, "1555", 4) == 0) {
            fprintf(stderr, "test phone digits in the log: %.16s\n", p);
            fail();
        }
    }
    free(log);
}

int main(void) {
    curl_global_init(CURL_GLOBAL_DEFAULT);
#define T(fn) cmocka_unit_test_setup(fn, reset_sandbox)
    const struct CMUnitTest tests[] = {
        T(test_every_plan_goes_from_queued_to_completed),
        T(test_busy_twice_then_answered_completes_after_two_retries),
        T(test_always_busy_fails_and_a_paid_booking_is_refunded),
        T(test_call_that_never_ends_is_ended_at_plan_length_plus_grace),
        T(test_lost_end_of_call_is_settled_by_a_lookup),
        T(test_bad_vapi_secret_is_refused_and_changes_nothing),
        T(test_end_of_call_report_ten_times_releases_capacity_once),
        T(test_vapi_over_concurrency_requeues_without_counting_an_attempt),
        T(test_two_hundred_bookings_never_exceed_any_limit),
        T(test_bookings_wait_while_no_agent_is_usable_then_are_dialled_once),
        T(test_no_personal_data_reaches_the_log),
    };
    int failed = cmocka_run_group_tests_name("dispatch", tests, setup, teardown);
    curl_global_cleanup();
    return failed;
}
