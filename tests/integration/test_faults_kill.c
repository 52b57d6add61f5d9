// tests/integration/test_faults_kill.c — sweetyd killed with SIGKILL at random moments under a
// steady load of bookings, payments (Stripe and Cryptomus webhooks from the sandbox) and VAPI
// calls, SWEETY_FAULT_KILLS times in a row (default 20), restarted each time. After every restart
// the always-true invariants are checked; at the end, once the system is at rest, all of them
// (tests/integration/faults.h): no booking lost, every booking final or legitimately waiting,
// every paid booking served or refunded, no attempt dialled twice, counters equal to calls.
// The moments are drawn from a seed that is printed (SWEETY_FAULT_SEED repeats a run).
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "tests/integration/faults.h"

static faults_stack_t stack;
static faults_load_t load;

static int setup(void **state) {
    faults_opts_t o = {.daemons = 1, .vapi_limit = 8, .agent_limit = 4, .outcome = "answer:2"};
    if (faults_setup_stack(&stack, &o, 285 + 6 * (faults_env_long("SWEETY_FAULT_KILLS", 20, 1, 10000) - 20)) != 0) return -1;
    *state = &stack;
    return 0;
}

static int teardown(void **state) {
    (void)state;
    return faults_teardown_stack(&stack, &load);
}

static int64_t db_count(const char *sql) { return client_query_int(&stack.d[0], sql); }

static void test_sweetyd_killed_at_random_moments_under_load_loses_nothing(void **state) {
    (void)state;
    int kills = (int)faults_env_long("SWEETY_FAULT_KILLS", 20, 1, 10000);
    int up_min = (int)faults_env_long("SWEETY_FAULT_KILL_MIN_MS", 700, 0, 600000);
    int up_max = (int)faults_env_long("SWEETY_FAULT_KILL_MAX_MS", 3500, up_min, 600000);
    unsigned seed = faults_seed("kill");
    unsigned rng = seed;
    printf("[faults] kill: %d kills, each after %d..%d ms of load, down 0..1000 ms before the restart\n", kills,
           up_min, up_max);
    assert_int_equal(faults_load_start(&load, &stack, seed ^ 0x5bd1e995u, 11, 150, 450, NULL), 0);
    int64_t started = harness_now_ms();
    int64_t restart_ms_total = 0, restart_ms_max = 0;
    for (int k = 1; k <= kills; k++) {
        harness_sleep_ms(faults_rand_between(&rng, up_min, up_max));
        // what was in flight when it died (informative)
        int64_t dialing = db_count("SELECT count(*) FROM call_queue WHERE status = 'dialing'");
        int64_t active = db_count("SELECT count(*) FROM active_calls");
        int64_t pending = db_count("SELECT count(*) FROM bookings WHERE status IN ('pending', 'pending_payment', 'confirmed')");
        assert_int_equal(faults_daemon_kill9(&stack, 0), 0);
        harness_sleep_ms(faults_rand_between(&rng, 0, 1000));
        int64_t t0 = harness_now_ms();
        assert_int_equal(faults_daemon_start(&stack, 0), 0);
        int64_t took = harness_now_ms() - t0;
        restart_ms_total += took;
        if (took > restart_ms_max) restart_ms_max = took;
        printf("[faults] kill %d/%d at %.1f s (dialing %lld, active calls %lld, unpaid %lld): healthy again in %lld ms\n",
               k, kills, (double)(harness_now_ms() - started) / 1000.0, (long long)dialing, (long long)active,
               (long long)pending, (long long)took);
        fflush(stdout);
        char when[64];
        snprintf(when, sizeof when, "after kill %d", k);
        faults_assert_always(&stack, &load, when);
    }
    harness_sleep_ms(1500);
    faults_load_stop(&load);
    printf("[faults] kill: load stopped after %.1f s; restarts took %lld ms on average, %lld ms at most\n",
           (double)(harness_now_ms() - started) / 1000.0, (long long)(restart_ms_total / (kills ? kills : 1)),
           (long long)restart_ms_max);
    faults_load_print(&load);
    faults_report_t r;
    faults_converge(&stack, &load, "kill", (int)faults_env_long("SWEETY_FAULT_SETTLE_MS", 120000, 1000, 3600000), &r);
    // the load really ran into the kills: requests had to be sent again, and calls were placed
    assert_true(load.answered_201 > 0);
    assert_true(r.vapi_calls > 0);
    assert_true(r.wh_deliveries[0] > 0);
    faults_report_free(&r);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sweetyd_killed_at_random_moments_under_load_loses_nothing),
    };
    return faults_run_group("faults_kill", tests, sizeof tests / sizeof tests[0], setup, teardown);
}
