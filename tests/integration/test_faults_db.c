// tests/integration/test_faults_db.c — PostgreSQL restarted under load (a private cluster, so the
// shared one keeps serving the other tests), SWEETY_FAULT_DB_RESTARTS times (default 2), down for
// SWEETY_FAULT_DB_DOWN_MS each (default 5000): /healthz turns 503 and back to 200 by itself, the
// daemon (the same process) reconnects, no webhook is answered 2xx unless its event was stored
// (the sandbox's delivery log against webhook_events: part of faults_check), and once at rest
// every invariant of tests/integration/faults.h holds.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "tests/integration/faults.h"

static faults_stack_t stack;
static faults_load_t load;

static int setup(void **state) {
    faults_opts_t o = {.daemons = 1, .private_pg = true, .vapi_limit = 8, .agent_limit = 4, .outcome = "answer:2"};
    long restarts = faults_env_long("SWEETY_FAULT_DB_RESTARTS", 2, 1, 100);
    long down_s = faults_env_long("SWEETY_FAULT_DB_DOWN_MS", 5000, 500, 600000) / 1000;
    if (faults_setup_stack(&stack, &o, 285 + restarts * (10 + down_s) - 30) != 0) return -1;
    *state = &stack;
    return 0;
}

static int teardown(void **state) {
    (void)state;
    return faults_teardown_stack(&stack, &load);
}

static long get(const char *path, char **body) {
    char url[160];
    snprintf(url, sizeof url, "%s%s", stack.d[0].base_url, path);
    harness_http_t r;
    harness_http("GET", url, NULL, NULL, &r);
    long status = r.status;
    if (body) *body = strdup(r.body);
    harness_http_clear(&r);
    return status;
}

static long reconnects(void) {
    char *m = NULL;
    get("/metrics", &m);
    const char *line = m ? strstr(m, "\nsweety_db_reconnects_total ") : NULL;
    long n = line ? atol(line + strlen("\nsweety_db_reconnects_total ")) : -1;
    free(m);
    return n;
}

// Waits until /healthz answers `want`; returns how long it took, or -1.
static int64_t wait_health(long want, int timeout_ms) {
    int64_t t0 = harness_now_ms();
    char url[160];
    snprintf(url, sizeof url, "%s/healthz", stack.d[0].base_url);
    if (harness_http_wait_status(url, want, timeout_ms) != 0) return -1;
    return harness_now_ms() - t0;
}

static void test_postgresql_restarted_under_load_daemon_reconnects_and_acknowledges_only_what_it_stored(void **state) {
    (void)state;
    int restarts = (int)faults_env_long("SWEETY_FAULT_DB_RESTARTS", 2, 1, 100);
    int down_ms = (int)faults_env_long("SWEETY_FAULT_DB_DOWN_MS", 5000, 500, 600000);
    unsigned seed = faults_seed("db");
    unsigned rng = seed;
    printf("[faults] db: %d restarts of PostgreSQL, down %d ms each\n", restarts, down_ms);
    pid_t pid = harness_proc_pid(stack.d[0].proc);
    long reconnects_before = reconnects();
    assert_int_equal(faults_load_start(&load, &stack, seed ^ 0x27d4eb2fu, 33, 150, 450, NULL), 0);
    for (int k = 1; k <= restarts; k++) {
        harness_sleep_ms(faults_rand_between(&rng, 2500, 5000));
        int64_t t0 = harness_now_ms();
        assert_int_equal(harness_pg_cluster_stop(stack.pg), 0);
        int64_t to_503 = wait_health(503, 15000);
        assert_true(to_503 >= 0);
        char *body = NULL;
        assert_int_equal(get("/healthz", &body), 503);
        assert_non_null(strstr(body, "\"db\":\"down\""));
        free(body);
        int64_t left = down_ms - (harness_now_ms() - t0);
        if (left > 0) harness_sleep_ms((int)left);
        assert_int_equal(harness_pg_cluster_start(stack.pg), 0);
        faults_note_postmaster(&stack);
        int64_t to_200 = wait_health(200, 30000);
        assert_true(to_200 >= 0);
        printf("[faults] db: restart %d/%d: /healthz 503 after %lld ms, PostgreSQL down %lld ms, "
               "/healthz 200 again %lld ms after it came back\n",
               k, restarts, (long long)to_503, (long long)(harness_now_ms() - t0 - to_200), (long long)to_200);
        fflush(stdout);
        assert_int_equal(harness_proc_pid(stack.d[0].proc), pid);   // the same process, never restarted
        assert_int_equal(harness_proc_kill(stack.d[0].proc, 0), 0);
        char when[64];
        snprintf(when, sizeof when, "after PostgreSQL restart %d", k);
        faults_assert_always(&stack, &load, when);
    }
    harness_sleep_ms(3000);
    faults_load_stop(&load);
    faults_load_print(&load);
    long reconnects_after = reconnects();
    printf("[faults] db: sweety_db_reconnects_total %ld -> %ld\n", reconnects_before, reconnects_after);
    assert_true(reconnects_after > reconnects_before);
    faults_report_t r;
    faults_converge(&stack, &load, "db", (int)faults_env_long("SWEETY_FAULT_SETTLE_MS", 120000, 1000, 3600000), &r);
    // the outages were felt: some webhooks were refused (and delivered again, or reconciled)
    assert_true(r.wh_non2xx[0] + r.wh_non2xx[1] + r.wh_non2xx[2] > 0);
    assert_true(r.by_status[7] > 0);
    faults_report_free(&r);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_postgresql_restarted_under_load_daemon_reconnects_and_acknowledges_only_what_it_stored),
    };
    return faults_run_group("faults_db", tests, sizeof tests / sizeof tests[0], setup, teardown);
}
