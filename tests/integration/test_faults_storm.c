// tests/integration/test_faults_storm.c — a webhook storm: SWEETY_FAULT_STORM_EVENTS (default
// 5,000) deliveries of real, signed Stripe, Cryptomus and VAPI events, duplicated and in shuffled
// order, eight at a time. The sandbox holds every event while bookings are paid, fail, expire,
// get cancelled, pay late, and free-trial calls ring and end; then it releases them all, each N
// times, shuffled (sandbox/README.md: /_sandbox/webhooks hold / release). Reconciliation is slowed
// down (reconcile_after_s = 600) so the webhooks alone do the work.
// Afterwards: every delivery was answered 2xx (duplicates included), every event is in
// webhook_events once, every booking reached the state its events mean whatever their order (with
// its exact history), each payment was applied once and each refund made once, and every invariant
// of tests/integration/faults.h holds.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "tests/integration/faults.h"

static faults_stack_t stack;

static int setup(void **state) {
    faults_opts_t o = {.daemons = 1, .vapi_limit = 10, .agent_limit = 5, .outcome = "answer:2",
                       .extra_conf = "[payments]\nreconcile_after_s = 600\nreconcile_every_s = 1\n"};
    if (faults_setup_stack(&stack, &o, 285 + faults_env_long("SWEETY_FAULT_STORM_EVENTS", 5000, 100, 1000000) / 100 - 50) != 0) return -1;
    *state = &stack;
    return 0;
}

static int teardown(void **state) {
    (void)state;
    return faults_stack_stop(&stack);
}

typedef enum {
    S_STRIPE_PAID,        // completed, paid
    S_STRIPE_ASYNC_OK,    // completed unpaid, then async_payment_succeeded
    S_STRIPE_ASYNC_FAIL,  // completed unpaid, then async_payment_failed
    S_STRIPE_EXPIRED,     // checkout.session.expired
    S_STRIPE_CANCELLED,   // paid, but the customer cancelled before the webhook came: refunded
    S_CRYPTO_PAID,
    S_CRYPTO_WRONG,       // wrong_amount
    S_CRYPTO_CANCEL,      // cancel
    S_CRYPTO_LATE,        // cancel, then paid: either order is possible once shuffled
    S_FREE,               // a free trial: its VAPI messages are part of the storm
    S_KINDS
} scenario_t;

static const char *const NAMES[S_KINDS] = {"stripe_paid", "stripe_async_ok", "stripe_async_fail", "stripe_expired",
                                           "stripe_cancelled", "crypto_paid", "crypto_wrong_amount", "crypto_cancel",
                                           "crypto_late", "free_trial"};
static const int COUNT[S_KINDS] = {36, 8, 6, 6, 4, 18, 4, 4, 4, 25};

typedef struct {
    client_booked_t b;
    scenario_t kind;
} storm_booking_t;

static storm_booking_t B[160];
static int NB;

static long sandbox(const char *method, const char *path, const char *json, json_t **out) {
    return faults_sandbox(&stack, method, path, json, out);
}

static void make(scenario_t kind, int n) {
    static const char *const plans[] = {"standard", "extended", "premium"};
    for (int i = 0; i < n; i++) {
        storm_booking_t *s = &B[NB++];
        s->kind = kind;
        char phone[32];
        snprintf(phone, sizeof phone, "+1744%02d%06d", (int)kind % 100, i % 1000000);
        bool crypto = kind >= S_CRYPTO_PAID && kind <= S_CRYPTO_LATE;
        const char *plan = kind == S_FREE ? "free_trial" : plans[i % 3];
        assert_int_equal(client_book_into(&stack.d[0], plan, kind == S_FREE ? NULL : crypto ? "cryptomus" : "stripe",
                                          phone, &s->b),
                         201);
        const char *sess = s->b.session;
        switch (kind) {
        case S_STRIPE_PAID: assert_int_equal(test_sandbox_complete(&stack.sb, sess, "{\"payment_status\":\"paid\"}"), 200); break;
        case S_STRIPE_ASYNC_OK:
            assert_int_equal(test_sandbox_complete(&stack.sb, sess, "{\"payment_status\":\"unpaid\",\"then\":\"async_succeeded\"}"), 200);
            break;
        case S_STRIPE_ASYNC_FAIL:
            assert_int_equal(test_sandbox_complete(&stack.sb, sess, "{\"payment_status\":\"unpaid\",\"then\":\"async_failed\"}"), 200);
            break;
        case S_STRIPE_EXPIRED: {
            char path[256];
            snprintf(path, sizeof path, "/_sandbox/stripe/sessions/%s/expire_now", sess);
            assert_int_equal(sandbox("POST", path, "{}", NULL), 200);
            break;
        }
        case S_STRIPE_CANCELLED: {
            assert_int_equal(test_sandbox_complete(&stack.sb, sess, "{\"payment_status\":\"paid\"}"), 200);
            char path[128], auth[1100];
            snprintf(path, sizeof path, "/api/bookings/%s/cancel", s->b.id);
            snprintf(auth, sizeof auth, "Authorization: Bearer %s", s->b.token);
            const char *headers[] = {auth, NULL};
            assert_int_equal(client_api(&stack.d[0], "POST", path, NULL, headers, NULL, NULL), 200);
            break;
        }
        case S_CRYPTO_PAID: assert_int_equal(test_sandbox_invoice_status(&stack.sb, sess, "paid"), 200); break;
        case S_CRYPTO_WRONG: assert_int_equal(test_sandbox_invoice_status(&stack.sb, sess, "wrong_amount"), 200); break;
        case S_CRYPTO_CANCEL: assert_int_equal(test_sandbox_invoice_status(&stack.sb, sess, "cancel"), 200); break;
        case S_CRYPTO_LATE:
            assert_int_equal(test_sandbox_invoice_status(&stack.sb, sess, "cancel"), 200);
            assert_int_equal(test_sandbox_invoice_status(&stack.sb, sess, "paid"), 200);
            break;
        default: break;
        }
    }
}

// Counts the sandbox's event records: held ones, and ones still to be delivered.
static void count_events(int *held, int *busy, int *total) {
    json_t *j = NULL;
    sandbox("GET", "/_sandbox/webhooks", NULL, &j);
    size_t i;
    json_t *ev;
    *held = *busy = 0;
    *total = (int)json_array_size(json_object_get(j, "events"));
    json_array_foreach(json_object_get(j, "events"), i, ev) {
        const char *st = json_string_value(json_object_get(ev, "state"));
        *held += st && !strcmp(st, "held");
        *busy += st && !strcmp(st, "pending");
    }
    json_decref(j);
}

static int64_t q(const char *fmt, const char *id) {
    char sql[512];
    snprintf(sql, sizeof sql, fmt, id);
    return client_query_int(&stack.d[0], sql);
}

static void status_of(const char *id, char *out, size_t size) {
    char sql[200];
    snprintf(sql, sizeof sql, "SELECT b.status || '/' || coalesce(p.status::text, '-') FROM bookings b"
                              " LEFT JOIN payments p ON p.booking_id = b.id WHERE b.id = '%.40s'", id);
    out[0] = '\0';
    harness_pg_query(stack.d[0].db_url, sql, out, size);
}

static void history_of(const char *id, char *out, size_t size) {
    char sql[300];
    snprintf(sql, sizeof sql, "SELECT string_agg(status::text, ',' ORDER BY seq) FROM booking_events WHERE booking_id = '%.40s'",
             id);
    out[0] = '\0';
    harness_pg_query(stack.d[0].db_url, sql, out, size);
}

// What each booking must have become, whatever order its events came in.
static int check_outcomes(void) {
    static const char *const PAID_PATH = "pending,pending_payment,confirmed,queued,initiating,calling,completed";
    int bad = 0;
    for (int i = 0; i < NB; i++) {
        const storm_booking_t *s = &B[i];
        char st[64], h[256];
        status_of(s->b.id, st, sizeof st);
        history_of(s->b.id, h, sizeof h);
        const char *want_st = NULL, *want_h = NULL, *alt_st = NULL;
        switch (s->kind) {
        case S_STRIPE_PAID:
        case S_STRIPE_ASYNC_OK:
        case S_CRYPTO_PAID: want_st = "completed/paid"; want_h = PAID_PATH; break;
        case S_STRIPE_ASYNC_FAIL:
        case S_CRYPTO_WRONG: want_st = "payment_failed/failed"; want_h = "pending,pending_payment,payment_failed"; break;
        case S_STRIPE_EXPIRED:
        case S_CRYPTO_CANCEL: want_st = "cancelled/expired"; want_h = "pending,pending_payment,cancelled"; break;
        case S_STRIPE_CANCELLED: want_st = "cancelled/refunded"; want_h = "pending,pending_payment,cancelled"; break;
        case S_CRYPTO_LATE:   // paid first: served; cancel first: the late money is to be refunded by hand
            want_st = "completed/paid";
            alt_st = "cancelled/refund_required";
            want_h = strcmp(st, alt_st) == 0 ? "pending,pending_payment,cancelled" : PAID_PATH;
            break;
        case S_FREE: want_st = "completed/-"; want_h = "queued,initiating,calling,completed"; break;
        default: break;
        }
        bool ok_st = strcmp(st, want_st) == 0 || (alt_st && strcmp(st, alt_st) == 0);
        bool ok_h = strcmp(h, want_h) == 0;
        if (!ok_st || !ok_h) {
            printf("[faults] storm: %s booking %s is %s (history %s); wanted %s%s%s (history %s)\n", NAMES[s->kind],
                   s->b.id, st, h, want_st, alt_st ? " or " : "", alt_st ? alt_st : "", want_h);
            bad++;
        }
        if (s->kind != S_FREE) {
            // exactly the events its provider sent, each stored once
            int64_t stored = q("SELECT count(*) FROM webhook_events WHERE booking_id = '%.40s'", s->b.id);
            int64_t confirmed = q("SELECT count(*) FROM booking_events WHERE booking_id = '%.40s' AND status = 'confirmed'", s->b.id);
            if (confirmed > 1 || stored < 1) {
                printf("[faults] storm: booking %s: %lld events stored, confirmed %lld times\n", s->b.id,
                       (long long)stored, (long long)confirmed);
                bad++;
            }
        }
    }
    return bad;
}

static void test_five_thousand_duplicated_and_reordered_webhooks_change_each_booking_once(void **state) {
    (void)state;
    long target = faults_env_long("SWEETY_FAULT_STORM_EVENTS", 5000, 100, 1000000);
    printf("[faults] storm: %ld deliveries wanted; bookings:", target);
    for (int k = 0; k < S_KINDS; k++) printf(" %s=%d", NAMES[k], COUNT[k]);
    printf("\n");
    fflush(stdout);
    assert_int_equal(sandbox("POST", "/_sandbox/webhooks", "{\"mode\":\"hold\",\"concurrency\":8}", NULL), 200);
    int64_t t0 = harness_now_ms();
    make(S_FREE, COUNT[S_FREE]);   // first: their calls run while the paid bookings are made
    for (int k = 0; k < S_FREE; k++) make((scenario_t)k, COUNT[k]);
    // every event generated: async outcomes come a moment after the completion, and the free
    // trials' calls ring and end (their end is learnt by looking the quiet call up, as nothing is
    // delivered): until the number of held events stops growing and every free trial is settled
    int held = 0, busy = 0, total = 0, last = -1;
    int64_t stable_since = harness_now_ms(), deadline = harness_now_ms() + 60000;
    for (;;) {
        count_events(&held, &busy, &total);
        int64_t free_open = client_query_int(&stack.d[0], "SELECT count(*) FROM bookings WHERE plan = 'free_trial'"
                                                          " AND status NOT IN ('completed', 'failed')");
        if (held != last) {
            last = held;
            stable_since = harness_now_ms();
        }
        if (free_open == 0 && harness_now_ms() - stable_since >= 2000) break;
        assert_true(harness_now_ms() < deadline);
        harness_sleep_ms(200);
    }
    int copies = (int)((target + held - 1) / held);
    if (copies > 1000) copies = 1000;
    int released = held * copies;
    printf("[faults] storm: %d events held after %.1f s; releasing each %d times, shuffled, 8 at a time (%d deliveries)\n",
           held, (double)(harness_now_ms() - t0) / 1000.0, copies, released);
    fflush(stdout);
    assert_int_equal(sandbox("POST", "/_sandbox/webhooks", "{\"mode\":\"normal\"}", NULL), 200);
    char release[96];
    snprintf(release, sizeof release, "{\"order\":\"shuffle\",\"duplicates\":%d}", copies);
    int64_t t1 = harness_now_ms();
    assert_int_equal(sandbox("POST", "/_sandbox/webhooks/release", release, NULL), 200);
    deadline = harness_now_ms() + 200000;
    do {
        harness_sleep_ms(500);
        count_events(&held, &busy, &total);
        assert_true(harness_now_ms() < deadline);
    } while (busy > 0);
    double took = (double)(harness_now_ms() - t1) / 1000.0;
    printf("[faults] storm: delivered in %.1f s (%.0f a second)\n", took, took > 0 ? released / took : 0.0);
    fflush(stdout);

    faults_report_t r;
    faults_converge(&stack, NULL, "storm", (int)faults_env_long("SWEETY_FAULT_SETTLE_MS", 120000, 1000, 3600000), &r);
    int deliveries = r.wh_deliveries[0] + r.wh_deliveries[1] + r.wh_deliveries[2];
    int refused = r.wh_non2xx[0] + r.wh_non2xx[1] + r.wh_non2xx[2];
    printf("[faults] storm: %d deliveries in all (stripe %d, cryptomus %d, vapi %d), %d not answered 2xx\n", deliveries,
           r.wh_deliveries[0], r.wh_deliveries[1], r.wh_deliveries[2], refused);
    assert_true(deliveries >= target);
    assert_int_equal(refused, 0);   // duplicates and out-of-order events are answered 200 too
    // each distinct Stripe and Cryptomus event stored once (the table's key), and nothing else
    assert_int_equal(r.stored_events, r.wh_events[0] + r.wh_events[1]);
    faults_report_free(&r);
    assert_int_equal(check_outcomes(), 0);
    // a refund per cancelled-but-paid Stripe booking, no more
    json_t *refunds = NULL;
    sandbox("GET", "/_sandbox/stripe/refunds", NULL, &refunds);
    assert_int_equal(json_array_size(json_object_get(refunds, "refunds")), COUNT[S_STRIPE_CANCELLED]);
    json_decref(refunds);
}

// The check is not vacuous: each kind of damage done to the settled database above is reported
// (then undone). Runs after the storm, on its data.
static int count_with(const char *needle, bool hard_only) {
    faults_check_opts_t o = {.quiet = !hard_only, .load = NULL};
    faults_report_t r;
    faults_check(&stack, &o, &r);
    int n = r.text.p && strstr(r.text.p, needle) ? r.hard + r.soft : 0;
    if (!n) printf("[faults] selftest: wanted \"%s\" in:\n%s", needle, r.text.p ? r.text.p : "(nothing)\n");
    faults_report_free(&r);
    return n;
}

static void exec_sql(const char *sql) { assert_int_equal(harness_pg_query(stack.d[0].db_url, sql, NULL, 0), 0); }

static void test_the_invariant_check_notices_broken_data(void **state) {
    (void)state;
    faults_check_opts_t o = {.quiet = true};
    faults_report_t r;
    assert_int_equal(faults_check(&stack, &o, &r), 0);
    faults_report_free(&r);
    // The damage is done at rest: a running daemon's refund sweep (every second here) would mend the
    // paid-again payment before the check could see it. The daemon must drain and exit 0.
    faults_watch(1, NULL);
    assert_int_equal(test_daemon_stop(&stack.d[0], 15000), 0);

    exec_sql("UPDATE vapi_agents SET active_calls = 1 WHERE id = (SELECT min(id::text)::uuid FROM vapi_agents)");
    assert_true(count_with("tries in progress", true) > 0);
    exec_sql("UPDATE vapi_agents SET active_calls = 0");

    exec_sql("UPDATE webhook_events SET event_id = event_id || '-hidden' WHERE id = (SELECT min(id) FROM webhook_events"
             " WHERE provider = 'stripe')");
    assert_true(count_with("not in webhook_events", true) > 0);
    exec_sql("UPDATE webhook_events SET event_id = left(event_id, length(event_id) - 7) WHERE event_id LIKE '%-hidden'");

    exec_sql("UPDATE booking_events SET status = 'confirmed' WHERE (booking_id, seq) = (SELECT booking_id, max(seq)"
             " FROM booking_events WHERE status = 'completed' GROUP BY booking_id LIMIT 1)");
    assert_true(count_with("backwards or after a final status", true) > 0);
    exec_sql("UPDATE booking_events e SET status = 'completed' FROM bookings b WHERE b.id = e.booking_id"
             " AND e.seq = b.status_seq AND b.status = 'completed' AND e.status = 'confirmed'");

    exec_sql("UPDATE payments SET status = 'paid' WHERE status = 'refunded' AND booking_id = (SELECT min(booking_id::text)::uuid"
             " FROM payments WHERE status = 'refunded')");
    assert_true(count_with("no refund begun", false) > 0);
    exec_sql("UPDATE payments SET status = 'refunded' WHERE status = 'paid' AND refunded_at IS NOT NULL");

    assert_int_equal(faults_check(&stack, &o, &r), 0);
    faults_report_free(&r);
    printf("[faults] selftest: the check reported a wrong counter, an acknowledged event not stored, a history"
           " going backwards and money kept on a cancelled booking\n");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_five_thousand_duplicated_and_reordered_webhooks_change_each_booking_once),
        cmocka_unit_test(test_the_invariant_check_notices_broken_data),
    };
    return faults_run_group("faults_storm", tests, sizeof tests / sizeof tests[0], setup, teardown);
}
