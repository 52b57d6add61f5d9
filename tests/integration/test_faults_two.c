// tests/integration/test_faults_two.c — two sweetyd on one database, both taking the load, one
// killed with SIGKILL mid-load and never restarted: the survivor finishes everything, including what
// the dead one had in flight — its calls (whose VAPI messages go to the dead one's URL: looked up
// when quiet), its dials without an answer (lease lookups), its unpaid checkouts (Cryptomus callbacks
// go to the dead one: reconciled), its refunds. Clients fail over with the same Idempotency-Key and
// the Stripe webhook endpoint is pointed at the survivor, as a load balancer would.
// test_dispatch_resilience.c shows two instances never dial twice, and one instance killed and
// restarted; this is the case where nobody restarts it.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "tests/integration/faults.h"

static faults_stack_t stack;
static faults_load_t load;

static int setup(void **state) {
    faults_opts_t o = {.daemons = 2, .vapi_limit = 8, .agent_limit = 4, .outcome = "answer:3"};
    if (faults_setup_stack(&stack, &o, 285 + faults_env_long("SWEETY_FAULT_TWO_AFTER_MS", 8000, 0, 3600000) / 1000 - 8) != 0) return -1;
    *state = &stack;
    return 0;
}

static int teardown(void **state) {
    (void)state;
    return faults_teardown_stack(&stack, &load);
}

static int64_t db_count(const char *sql) { return client_query_int(&stack.d[1], sql); }

static void test_one_of_two_killed_mid_load_the_other_finishes_the_work(void **state) {
    (void)state;
    unsigned seed = faults_seed("two");
    unsigned rng = seed;
    int before_ms = faults_rand_between(&rng, 4000, 8000);
    int after_ms = (int)faults_env_long("SWEETY_FAULT_TWO_AFTER_MS", 8000, 0, 3600000);
    printf("[faults] two: load through both, the first killed after %d ms (once calls are up), load %d ms more\n",
           before_ms, after_ms);
    assert_int_equal(faults_load_start(&load, &stack, seed ^ 0x85ebca6bu, 44, 120, 400, NULL), 0);
    harness_sleep_ms(before_ms);
    int64_t deadline = harness_now_ms() + 15000;
    while (db_count("SELECT count(*) FROM active_calls") < 3 && harness_now_ms() < deadline) harness_sleep_ms(50);
    int64_t active = db_count("SELECT count(*) FROM active_calls");
    int64_t dialing = db_count("SELECT count(*) FROM call_queue WHERE status = 'dialing'");
    int64_t unpaid = db_count("SELECT count(*) FROM bookings WHERE status IN ('pending', 'pending_payment', 'confirmed')");
    int64_t open = db_count("SELECT count(*) FROM bookings WHERE status NOT IN ('completed', 'failed', 'cancelled',"
                            " 'payment_failed')");
    assert_int_equal(faults_daemon_kill9(&stack, 0), 0);
    printf("[faults] two: killed the first with %lld calls active, %lld dialling, %lld unpaid, %lld bookings open\n",
           (long long)active, (long long)dialing, (long long)unpaid, (long long)open);
    fflush(stdout);
    // clients keep trying the dead one for a moment (and fail over); then only the survivor is used
    char hook[200];
    snprintf(hook, sizeof hook, "{\"webhook_url\":\"%s/webhooks/stripe\"}", stack.d[1].base_url);
    assert_int_equal(faults_sandbox(&stack, "POST", "/_sandbox/stripe/config", hook, NULL), 200);
    harness_sleep_ms(1000);
    atomic_store(&load.targets, 1 << 1);
    harness_sleep_ms(after_ms);
    faults_assert_always(&stack, &load, "with the first one dead");
    faults_load_stop(&load);
    faults_load_print(&load);
    faults_report_t r;
    faults_converge(&stack, &load, "two", (int)faults_env_long("SWEETY_FAULT_SETTLE_MS", 120000, 1000, 3600000), &r);
    assert_true(active > 0);
    assert_true(r.by_status[7] > 0);
    faults_report_free(&r);
    // the survivor did it alone: it is still the same process
    assert_int_equal(harness_proc_kill(stack.d[1].proc, 0), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_one_of_two_killed_mid_load_the_other_finishes_the_work),
    };
    return faults_run_group("faults_two", tests, sizeof tests / sizeof tests[0], setup, teardown);
}
