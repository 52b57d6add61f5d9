// tests/integration/test_faults_providers.c — the providers misbehave under load for a while
// (SWEETY_FAULT_SECONDS, default 40; the long version is 300): the sandbox's fault rules make
// Stripe Checkout creation, Stripe refunds, Cryptomus invoices, VAPI POST /call and VAPI GET /call
// (lookups) answer slowly, with 429, with 500, not at all (connection closed), execute but lose
// the answer, or hang past the daemon's timeouts — one kind after another. Then the faults are
// cleared and everything must converge (tests/integration/faults.h): bookings completed, or
// failed / cancelled with the money refunded, or payment_failed where the client got a 502; no
// attempt dialled twice although answers were lost; counters equal to calls.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "tests/integration/faults.h"

static faults_stack_t stack;
static faults_load_t load;

static int setup(void **state) {
    faults_opts_t o = {.daemons = 1, .vapi_limit = 8, .agent_limit = 4, .outcome = "answer:2"};
    if (faults_setup_stack(&stack, &o, 285 + faults_env_long("SWEETY_FAULT_SECONDS", 40, 6, 3600) - 40) != 0) return -1;
    *state = &stack;
    return 0;
}

static int teardown(void **state) {
    (void)state;
    return faults_teardown_stack(&stack, &load);
}

// One kind of misbehaviour, on every provider endpoint the daemon uses. `fault` is the JSON
// members a rule adds to {"provider","path_prefix","method","count"} (see sandbox/README.md).
typedef struct {
    const char *name;
    const char *stripe_checkout, *stripe_refund, *cryptomus, *vapi_create, *vapi_get;
} phase_t;

static const phase_t PHASES[] = {
    {"slow (3-4 s)", "\"delay_ms\":3000", "\"delay_ms\":3000", "\"delay_ms\":3000", "\"delay_ms\":4000",
     "\"delay_ms\":3000"},
    {"429", "\"status\":429", "\"status\":429", "\"status\":429", "\"status\":429", "\"status\":429"},
    {"500", "\"status\":500", "\"status\":500", "\"status\":500", "\"status\":500", "\"status\":500"},
    {"no answer (connection closed)", "\"drop\":true", "\"drop\":true", "\"drop\":true", "\"drop\":true",
     "\"drop\":true"},
    {"done but the answer lost", "\"status\":500,\"when\":\"after\"", "\"drop\":true,\"when\":\"after\"",
     "\"drop\":true,\"when\":\"after\"", "\"drop\":true,\"when\":\"after\"", "\"status\":500"},
    {"hanging past the timeouts", "\"delay_ms\":9000", "\"delay_ms\":9000", "\"delay_ms\":9000",
     "\"delay_ms\":21000", "\"delay_ms\":21000"},
};
#define NPHASES (sizeof PHASES / sizeof PHASES[0])

static void add_rule(const char *provider, const char *prefix, const char *method, const char *fault) {
    char body[512];
    snprintf(body, sizeof body, "{\"provider\":\"%s\",\"path_prefix\":\"%s\",\"method\":\"%s\",\"count\":100000,%s}",
             provider, prefix, method, fault);
    assert_int_equal(faults_sandbox(&stack, "POST", "/_sandbox/faults", body, NULL), 200);
}

// Checkouts fail only in the first half of a phase (`checkouts`): in the second, bookings are made
// and paid, so there are calls to place and refunds to make while VAPI and refunds still fail.
static void apply_phase(const phase_t *p, bool checkouts) {
    assert_int_equal(faults_sandbox(&stack, "POST", "/_sandbox/faults/clear", "{}", NULL), 200);
    if (checkouts) {
        add_rule("stripe", "/v1/checkout/sessions", "POST", p->stripe_checkout);
        add_rule("cryptomus", "/v1/payment", "POST", p->cryptomus);
    }
    add_rule("stripe", "/v1/refunds", "POST", p->stripe_refund);
    add_rule("vapi", "/call", "POST", p->vapi_create);
    add_rule("vapi", "/call", "GET", p->vapi_get);
}

// More money in motion than the default mix: calls that fail (refunds) and customers who cancel.
static const int MIX[FL_KINDS] = {[FL_FREE] = 20, [FL_FREE_RETRY] = 5, [FL_FREE_FAIL] = 3, [FL_STRIPE] = 20,
                                  [FL_STRIPE_ASYNC] = 5, [FL_STRIPE_BUSY] = 12, [FL_STRIPE_CANCEL] = 15,
                                  [FL_STRIPE_UNPAID] = 2, [FL_STRIPE_EXPIRE] = 3, [FL_CRYPTO] = 8,
                                  [FL_CRYPTO_FAIL] = 2, [FL_CRYPTO_LATE] = 2, [FL_SCHEDULED] = 3};

// How many requests the sandbox answered with a fault, per provider.
static void count_faulted(int out[3]) {
    json_t *j = NULL;
    faults_sandbox(&stack, "GET", "/_sandbox/requests", NULL, &j);
    size_t i;
    json_t *req;
    json_array_foreach(json_object_get(j, "requests"), i, req) {
        if (!json_is_object(json_object_get(req, "fault"))) continue;
        const char *p = json_string_value(json_object_get(req, "provider"));
        if (!p) continue;
        out[!strcmp(p, "stripe") ? 0 : !strcmp(p, "cryptomus") ? 1 : 2]++;
    }
    json_decref(j);
}

static void test_providers_slow_429_500_or_silent_for_a_while_then_everything_converges(void **state) {
    (void)state;
    int seconds = (int)faults_env_long("SWEETY_FAULT_SECONDS", 40, 6, 3600);
    int period_ms = seconds * 1000 / (int)NPHASES;
    unsigned seed = faults_seed("providers");
    printf("[faults] providers: %d s of faults, %zu kinds of %d ms each (SWEETY_FAULT_SECONDS=300 for the long run)\n",
           seconds, NPHASES, period_ms);
    assert_int_equal(faults_load_start(&load, &stack, seed, 22, 150, 450, MIX), 0);
    harness_sleep_ms(2000);   // a few bookings in flight before it starts
    int64_t start = harness_now_ms();
    for (size_t k = 0; k < NPHASES; k++) {
        apply_phase(&PHASES[k], true);
        printf("[faults] providers: %5.1f s: %s\n", (double)(harness_now_ms() - start) / 1000.0, PHASES[k].name);
        fflush(stdout);
        harness_sleep_ms(period_ms / 2);
        apply_phase(&PHASES[k], false);
        printf("[faults] providers: %5.1f s: %s, checkouts healthy again\n", (double)(harness_now_ms() - start) / 1000.0,
               PHASES[k].name);
        fflush(stdout);
        harness_sleep_ms(period_ms - period_ms / 2);
        faults_assert_always(&stack, &load, PHASES[k].name);
    }
    assert_int_equal(faults_sandbox(&stack, "POST", "/_sandbox/faults/clear", "{}", NULL), 200);
    int faulted[3] = {0};
    count_faulted(faulted);
    printf("[faults] providers: %5.1f s: faults cleared; faulted requests: stripe %d, cryptomus %d, vapi %d\n",
           (double)(harness_now_ms() - start) / 1000.0, faulted[0], faulted[1], faulted[2]);
    harness_sleep_ms(3000);   // load against healthy providers again
    faults_load_stop(&load);
    faults_load_print(&load);
    faults_report_t r;
    faults_converge(&stack, &load, "providers", (int)faults_env_long("SWEETY_FAULT_SETTLE_MS", 150000, 1000, 3600000),
                    &r);
    assert_true(faulted[0] > 0 && faulted[2] > 0);   // the daemon really met the faults
    assert_true(r.by_status[7] > 0);                  // and still served calls
    faults_report_free(&r);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_providers_slow_429_500_or_silent_for_a_while_then_everything_converges),
    };
    return faults_run_group("faults_providers", tests, sizeof tests / sizeof tests[0], setup, teardown);
}
