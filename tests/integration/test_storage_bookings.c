// tests/integration/test_storage_bookings.c — the query modules behind bookings and payments
// (storage/bookings.h, storage/payments.h, storage/idempotency.h) against a real PostgreSQL: a
// fresh, migrated database per test on the shared test cluster. Races are real: the concurrent
// tests fork processes, each with its own connection, released together through a pipe.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/log.h"
#include "storage/bookings.h"
#include "storage/db.h"
#include "storage/idempotency.h"
#include "storage/migrate.h"
#include "storage/payments.h"
#include "storage/store.h"
#include "tests/harness/harness.h"
#include "tests/integration/storage_fixture.h"

// ---- helpers -----------------------------------------------------------------------------------

static int setup(void **state) {
    *state = fixture_open("stbk");
    return 0;
}

static void next_phone(fx_t *fx, char *buf, size_t size) {
    snprintf(buf, size, "+1555%07d", ++fx->phones);
}

static booking_new_t new_booking(const char *phone, const char *plan, const char *method) {
    booking_new_t in = {
        .name = "Ann Example", .phone = phone, .email = "ann@example.com", .plan = plan,
        .message = "hello", .payment_method = method, .scheduled_for = NULL, .max_retries = 3,
    };
    return in;
}

// A paid booking, status pending.
static void make_pending(fx_t *fx, const char *plan, const char *method, char id[STORE_UUID_LEN]) {
    char phone[24];
    next_phone(fx, phone, sizeof phone);
    booking_new_t in = new_booking(phone, plan, method);
    booking_created_t c;
    assert_int_equal(bookings_create(fx->db, &in, &c, NULL), STORE_OK);
    assert_string_equal(c.status, "pending");
    snprintf(id, STORE_UUID_LEN, "%s", c.id);
}

// A paid Stripe booking with its checkout: status pending_payment, session "cs_test_<n>".
static void make_awaiting(fx_t *fx, char id[STORE_UUID_LEN], char session[64]) {
    make_pending(fx, "standard", "stripe", id);
    snprintf(session, 64, "cs_test_%d", fx->phones);
    booking_checkout_t co = {"stripe", session, NULL, "https://checkout.stripe.test/c/pay", 1900000000};
    booking_event_t ev;
    assert_int_equal(bookings_checkout_created(fx->db, id, &co, &ev), STORE_OK);
    assert_string_equal(ev.status, "pending_payment");
    assert_int_equal(ev.seq, 2);
}

static payment_event_t stripe_event(const char *event_id, const char *type, const char *booking_id,
                                    const char *session) {
    payment_event_t ev = {
        .provider = "stripe", .event_id = event_id, .event_type = type, .provider_status = NULL,
        .booking_id = booking_id, .session_id = session, .invoice_uuid = NULL, .payment_intent = NULL,
    };
    return ev;
}

static payment_outcome_t apply_paid(db_t *db, payment_event_t ev, payment_result_t *out) {
    payment_result_t r;
    assert_int_equal(payments_apply_paid(db, &ev, 1500, "usd", 3, &r), STORE_OK);
    if (out) *out = r;
    return r.outcome;
}

static payment_outcome_t apply_expired(db_t *db, payment_event_t ev) {
    payment_result_t r;
    assert_int_equal(payments_apply_expired(db, &ev, &r), STORE_OK);
    return r.outcome;
}

static void assert_booking_status(db_t *db, const char *id, const char *want) {
    booking_view_t v;
    assert_int_equal(bookings_get(db, id, &v), STORE_OK);
    assert_string_equal(v.status, want);
}

static void assert_payment_status(db_t *db, const char *id, const char *want) {
    payment_t p;
    assert_int_equal(payments_get(db, id, &p), STORE_OK);
    assert_string_equal(p.status, want);
    payment_clear(&p);
}

static long long queue_rows(db_t *db, const char *id) {
    return query_int(db, "SELECT count(*) FROM call_queue WHERE booking_id = '%s'", id);
}

// ---- bookings_create -----------------------------------------------------------------------------

static void test_paid_booking_starts_pending_with_a_pending_payment(void **state) {
    fx_t *fx = *state;
    char phone[24];
    next_phone(fx, phone, sizeof phone);
    booking_new_t in = new_booking(phone, "extended", "cryptomus");
    booking_created_t c;
    assert_int_equal(bookings_create(fx->db, &in, &c, NULL), STORE_OK);
    assert_string_equal(c.status, "pending");
    assert_int_equal(c.seq, 1);
    assert_string_equal(c.plan, "extended");
    assert_int_equal(c.price_cents, 2900);
    assert_string_equal(c.currency, "usd");
    assert_int_equal(c.duration_seconds, 1200);
    assert_string_equal(c.payment_method, "cryptomus");
    assert_int_equal(strlen(c.id), 36);
    assert_int_equal(strlen(c.created_at), 24);

    payment_t p;
    assert_int_equal(payments_get(fx->db, c.id, &p), STORE_OK);
    assert_string_equal(p.status, "pending");
    assert_string_equal(p.provider, "cryptomus");
    assert_int_equal(p.amount_cents, 2900);
    assert_string_equal(p.currency, "usd");
    assert_string_equal(p.session_id, "");
    assert_null(p.checkout_url);
    payment_clear(&p);
    assert_int_equal(queue_rows(fx->db, c.id), 0);

    // The same phone again: the user is updated, not duplicated; no email keeps the stored one.
    in.name = "Ann Renamed";
    in.email = NULL;
    in.payment_method = NULL;   // default: stripe
    booking_created_t c2;
    assert_int_equal(bookings_create(fx->db, &in, &c2, NULL), STORE_OK);
    assert_string_equal(c2.payment_method, "stripe");
    assert_string_equal(c2.user_id, c.user_id);
    assert_int_equal(query_int(fx->db, "SELECT count(*) FROM users WHERE phone = '%s'", phone), 1);
    assert_query_str(fx->db, "Ann Renamed", "SELECT name FROM users WHERE phone = '%s'", phone);
    assert_query_str(fx->db, "ann@example.com", "SELECT email FROM users WHERE phone = '%s'", phone);
}

static void test_free_trial_is_queued_once_per_phone_per_day(void **state) {
    fx_t *fx = *state;
    char phone[24];
    next_phone(fx, phone, sizeof phone);
    booking_new_t in = new_booking(phone, "free_trial", "cryptomus");   // method ignored
    in.scheduled_for = "2099-01-02T03:04:05Z";
    in.max_retries = 5;
    booking_created_t c;
    assert_int_equal(bookings_create(fx->db, &in, &c, NULL), STORE_OK);
    assert_string_equal(c.status, "queued");
    assert_string_equal(c.payment_method, "none");
    assert_int_equal(c.price_cents, 0);
    assert_int_equal(queue_rows(fx->db, c.id), 1);
    assert_int_equal(query_int(fx->db, "SELECT priority FROM call_queue WHERE booking_id = '%s'", c.id), 10);
    assert_int_equal(query_int(fx->db, "SELECT max_retries FROM call_queue WHERE booking_id = '%s'", c.id), 5);
    assert_int_equal(query_int(fx->db, "SELECT count(*) FROM call_queue WHERE booking_id = '%s'"
                                       " AND next_attempt_at = '2099-01-02T03:04:05Z' AND status = 'queued'", c.id), 1);
    assert_int_equal(query_int(fx->db, "SELECT count(*) FROM payments WHERE booking_id = '%s'", c.id), 0);
    booking_view_t v;
    assert_int_equal(bookings_get(fx->db, c.id, &v), STORE_OK);
    assert_string_equal(v.scheduled_for, "2099-01-02T03:04:05.000Z");

    booking_created_t untouched;
    memset(&untouched, 0x5a, sizeof untouched);
    booking_created_t again = untouched;
    int retry = -1;
    in.scheduled_for = NULL;
    assert_int_equal(bookings_create(fx->db, &in, &again, &retry), STORE_ERR_COOLDOWN);
    assert_true(retry > 86000 && retry <= 86400);
    assert_memory_equal(&again, &untouched, sizeof again);   // output untouched on failure
    assert_int_equal(query_int(fx->db, "SELECT count(*) FROM bookings b JOIN users u ON u.id = b.user_id"
                                       " WHERE u.phone = '%s'", phone), 1);

    // 23 hours later: still cooling down, about an hour to go. 24 hours and a second: allowed.
    exec_ok(fx->db, "UPDATE users SET last_free_trial = now() - interval '23 hours'");
    assert_int_equal(bookings_create(fx->db, &in, &again, &retry), STORE_ERR_COOLDOWN);
    assert_true(retry > 3500 && retry <= 3600);
    exec_ok(fx->db, "UPDATE users SET last_free_trial = now() - interval '24 hours 1 second'");
    assert_int_equal(bookings_create(fx->db, &in, &again, &retry), STORE_OK);
    assert_string_equal(again.status, "queued");

    // A paid plan for the same phone is not limited.
    in.plan = "premium";
    in.payment_method = "stripe";
    assert_int_equal(bookings_create(fx->db, &in, &again, NULL), STORE_OK);
    assert_string_equal(again.status, "pending");
}

static child_result_t free_trial_child(db_t *db, int index, void *arg) {
    booking_new_t in = new_booking(arg, "free_trial", NULL);
    booking_created_t c;
    child_result_t r = {0, 0, ""};
    r.rc = bookings_create(db, &in, &c, &r.value);
    return r;
}

static void test_twenty_simultaneous_free_trials_for_one_phone_make_one_booking(void **state) {
    fx_t *fx = *state;
    // Twice: a phone never seen (all twenty race to insert the user) and a known user.
    char phone[2][24];
    next_phone(fx, phone[0], sizeof phone[0]);
    next_phone(fx, phone[1], sizeof phone[1]);
    booking_new_t in = new_booking(phone[1], "standard", "stripe");
    booking_created_t c;
    assert_int_equal(bookings_create(fx->db, &in, &c, NULL), STORE_OK);

    for (int round = 0; round < 2; round++) {
        child_result_t res[20];
        run_concurrently(fx, 20, free_trial_child, phone[round], NULL, res);
        int ok = 0, cooldown = 0;
        for (int i = 0; i < 20; i++) {
            if (res[i].rc == STORE_OK) {
                ok++;
            } else {
                assert_int_equal(res[i].rc, STORE_ERR_COOLDOWN);
                assert_true(res[i].value > 0 && res[i].value <= 86400);
                cooldown++;
            }
        }
        assert_int_equal(ok, 1);
        assert_int_equal(cooldown, 19);
        assert_int_equal(query_int(fx->db, "SELECT count(*) FROM bookings b JOIN users u ON u.id = b.user_id"
                                           " WHERE u.phone = '%s' AND b.plan = 'free_trial'", phone[round]), 1);
        assert_int_equal(query_int(fx->db, "SELECT count(*) FROM call_queue q JOIN bookings b ON b.id = q.booking_id"
                                           " JOIN users u ON u.id = b.user_id WHERE u.phone = '%s'", phone[round]), 1);
        assert_int_equal(query_int(fx->db, "SELECT count(*) FROM users WHERE phone = '%s'", phone[round]), 1);
    }
}

static void test_values_the_schema_refuses_create_nothing(void **state) {
    fx_t *fx = *state;
    char phone[24];
    next_phone(fx, phone, sizeof phone);
    char long_name[120];
    memset(long_name, 'x', sizeof long_name - 1);
    long_name[sizeof long_name - 1] = '\0';
    char long_msg[520];
    memset(long_msg, 'm', sizeof long_msg - 1);
    long_msg[sizeof long_msg - 1] = '\0';

    struct {
        const char *field, *value;
    } cases[] = {
        {"phone", "5551234567"}, {"phone", "+0123456789"}, {"name", ""}, {"name", long_name},
        {"message", long_msg}, {"plan", "gold"}, {"payment_method", "paypal"}, {"payment_method", "none"},
        {"scheduled_for", "next tuesday"}, {"scheduled_for", "2026-13-01T00:00:00Z"}, {"email", "a"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        booking_new_t in = new_booking(phone, "standard", "stripe");
        if (strcmp(cases[i].field, "phone") == 0) in.phone = cases[i].value;
        if (strcmp(cases[i].field, "name") == 0) in.name = cases[i].value;
        if (strcmp(cases[i].field, "message") == 0) in.message = cases[i].value;
        if (strcmp(cases[i].field, "plan") == 0) in.plan = cases[i].value;
        if (strcmp(cases[i].field, "payment_method") == 0) in.payment_method = cases[i].value;
        if (strcmp(cases[i].field, "scheduled_for") == 0) in.scheduled_for = cases[i].value;
        if (strcmp(cases[i].field, "email") == 0) in.email = cases[i].value;
        booking_created_t c;
        int rc = bookings_create(fx->db, &in, &c, NULL);
        if (rc != STORE_ERR_INVALID) fail_msg("%s=%.20s: rc %d, want invalid", cases[i].field, cases[i].value, rc);
    }
    assert_int_equal(query_int(fx->db, "SELECT count(*) FROM bookings"), 0);
    assert_int_equal(query_int(fx->db, "SELECT count(*) FROM users"), 0);
    assert_int_equal(query_int(fx->db, "SELECT count(*) FROM payments"), 0);
}

// ---- checkout --------------------------------------------------------------------------------------

static void test_checkout_created_moves_pending_to_pending_payment_once(void **state) {
    fx_t *fx = *state;
    char id[STORE_UUID_LEN];
    make_pending(fx, "premium", "cryptomus", id);
    booking_checkout_t co = {"cryptomus", id, "62f88b36-a9d5-4fa6-aa5d-4d5d7e9b9f2a",
                             "https://pay.cryptomus.test/pay/62f88b36", 1900000000};
    booking_checkout_t wrong_provider = co;
    wrong_provider.provider = "stripe";
    booking_event_t ev;
    assert_int_equal(bookings_checkout_created(fx->db, id, &wrong_provider, &ev), STORE_ERR_CONFLICT);
    assert_int_equal(bookings_checkout_created(fx->db, id, &co, &ev), STORE_OK);
    assert_int_equal(ev.seq, 2);
    assert_string_equal(ev.status, "pending_payment");

    payment_t p;
    assert_int_equal(payments_get(fx->db, id, &p), STORE_OK);
    assert_string_equal(p.session_id, id);
    assert_string_equal(p.invoice_uuid, "62f88b36-a9d5-4fa6-aa5d-4d5d7e9b9f2a");
    assert_string_equal(p.checkout_url, "https://pay.cryptomus.test/pay/62f88b36");
    assert_string_equal(p.expires_at, "2030-03-17T17:46:40.000Z");
    payment_clear(&p);

    // A retry with the same session changes nothing; another session is a conflict.
    assert_int_equal(bookings_checkout_created(fx->db, id, &co, &ev), STORE_OK);
    assert_int_equal(ev.seq, 0);
    booking_checkout_t other = co;
    other.session_id = "another-order";
    assert_int_equal(bookings_checkout_created(fx->db, id, &other, &ev), STORE_ERR_CONFLICT);
    assert_int_equal(query_int(fx->db, "SELECT count(*) FROM booking_events WHERE booking_id = '%s'", id), 2);

    // Another booking cannot take the same session id.
    char id2[STORE_UUID_LEN];
    make_pending(fx, "premium", "cryptomus", id2);
    other.session_id = id;
    other.invoice_uuid = NULL;
    assert_int_equal(bookings_checkout_created(fx->db, id2, &other, &ev), STORE_ERR_CONFLICT);
    assert_booking_status(fx->db, id2, "pending");

    // Not found: unknown, malformed, a free trial (no payment).
    assert_int_equal(bookings_checkout_created(fx->db, "00000000-0000-4000-8000-000000000000", &co, &ev),
                     STORE_ERR_NOT_FOUND);
    assert_int_equal(bookings_checkout_created(fx->db, "x'; DROP TABLE bookings; --", &co, &ev), STORE_ERR_NOT_FOUND);
    char phone[24];
    next_phone(fx, phone, sizeof phone);
    booking_new_t in = new_booking(phone, "free_trial", NULL);
    booking_created_t c;
    assert_int_equal(bookings_create(fx->db, &in, &c, NULL), STORE_OK);
    assert_int_equal(bookings_checkout_created(fx->db, c.id, &co, &ev), STORE_ERR_NOT_FOUND);
}

static void test_checkout_failure_makes_a_pending_booking_payment_failed(void **state) {
    fx_t *fx = *state;
    char id[STORE_UUID_LEN];
    make_pending(fx, "standard", "stripe", id);
    booking_event_t ev;
    assert_int_equal(bookings_checkout_failed(fx->db, id, "provider_unavailable", &ev), STORE_OK);
    assert_int_equal(ev.seq, 2);
    assert_string_equal(ev.status, "payment_failed");
    payment_t p;
    assert_int_equal(payments_get(fx->db, id, &p), STORE_OK);
    assert_string_equal(p.status, "failed");
    assert_string_equal(p.error_message, "provider_unavailable");
    payment_clear(&p);
    assert_int_equal(bookings_checkout_failed(fx->db, id, "again", &ev), STORE_OK);
    assert_int_equal(ev.seq, 0);

    char id2[STORE_UUID_LEN], session[64];
    make_awaiting(fx, id2, session);
    assert_int_equal(bookings_checkout_failed(fx->db, id2, "late", &ev), STORE_ERR_CONFLICT);
    assert_booking_status(fx->db, id2, "pending_payment");
}

// ---- webhooks ----------------------------------------------------------------------------------------

typedef struct {
    const char *booking_id;
    const char *session;
} paid_target_t;

static child_result_t paid_child(db_t *db, int index, void *arg) {
    const paid_target_t *t = arg;
    child_result_t r = {0, 0, ""};
    int applied = 0, duplicates = 0;
    for (int i = 0; i < 5; i++) {
        payment_event_t ev = stripe_event("evt_paid_1", "checkout.session.completed", t->booking_id, t->session);
        ev.payment_intent = "pi_test_1";
        payment_result_t out;
        r.rc = payments_apply_paid(db, &ev, 1500, "usd", 3, &out);
        if (r.rc != STORE_OK) return r;
        if (out.outcome == PAYMENT_APPLIED) applied++;
        else if (out.outcome == PAYMENT_DUPLICATE) duplicates++;
        else r.rc = -100 - (int)out.outcome;
    }
    r.value = applied * 1000 + duplicates;
    return r;
}

static void test_paid_event_delivered_fifty_times_moves_the_booking_once(void **state) {
    fx_t *fx = *state;
    char id[STORE_UUID_LEN], session[64];
    make_awaiting(fx, id, session);
    paid_target_t t = {id, session};
    child_result_t res[10];
    run_concurrently(fx, 10, paid_child, &t, NULL, res);   // 10 processes x 5 deliveries
    int applied = 0, duplicates = 0;
    for (int i = 0; i < 10; i++) {
        assert_int_equal(res[i].rc, STORE_OK);
        applied += res[i].value / 1000;
        duplicates += res[i].value % 1000;
    }
    assert_int_equal(applied, 1);
    assert_int_equal(duplicates, 49);

    assert_booking_status(fx->db, id, "queued");
    assert_int_equal(queue_rows(fx->db, id), 1);
    assert_int_equal(query_int(fx->db, "SELECT count(*) FROM booking_events WHERE booking_id = '%s'", id), 4);
    assert_int_equal(query_int(fx->db, "SELECT count(*) FROM webhook_events"), 1);
    assert_query_str(fx->db, "applied", "SELECT outcome FROM webhook_events WHERE event_id = 'evt_paid_1'");
    assert_query_str(fx->db, id, "SELECT booking_id FROM webhook_events WHERE event_id = 'evt_paid_1'");
    payment_t p;
    assert_int_equal(payments_get(fx->db, id, &p), STORE_OK);
    assert_string_equal(p.status, "paid");
    assert_string_equal(p.payment_intent, "pi_test_1");
    assert_int_not_equal(p.paid_at[0], '\0');
    payment_clear(&p);

    // Sequentially too, reporting what the caller publishes.
    char id2[STORE_UUID_LEN], session2[64];
    make_awaiting(fx, id2, session2);
    payment_result_t r;
    assert_int_equal(apply_paid(fx->db, stripe_event("evt_paid_2", "checkout.session.completed", NULL, session2), &r),
                     PAYMENT_APPLIED);
    assert_string_equal(r.booking_id, id2);
    assert_string_equal(r.previous_status, "pending_payment");
    assert_string_equal(r.status, "queued");
    assert_string_equal(r.payment_status, "paid");
    assert_int_equal(r.nevents, 2);
    assert_int_equal(r.events[0].seq, 3);
    assert_string_equal(r.events[0].status, "confirmed");
    assert_int_equal(r.events[1].seq, 4);
    assert_string_equal(r.events[1].status, "queued");
    assert_true(r.enqueued);
    assert_string_equal(payment_outcome_metric(r.outcome), "applied");
    for (int i = 0; i < 49; i++) {
        payment_result_t d;
        assert_int_equal(apply_paid(fx->db, stripe_event("evt_paid_2", "checkout.session.completed", NULL, session2), &d),
                         PAYMENT_DUPLICATE);
        assert_int_equal(d.nevents, 0);
        assert_false(d.enqueued);
        assert_string_equal(payment_outcome_metric(d.outcome), "duplicate");
    }
    assert_int_equal(queue_rows(fx->db, id2), 1);
    assert_int_equal(query_int(fx->db, "SELECT max(seq) FROM booking_events WHERE booking_id = '%s'", id2), 4);

    // Another event saying the same (async_payment_succeeded after completed): already applied.
    assert_int_equal(apply_paid(fx->db, stripe_event("evt_paid_3", "checkout.session.async_payment_succeeded", id2, NULL), &r),
                     PAYMENT_ALREADY_APPLIED);
    assert_string_equal(payment_outcome_metric(r.outcome), "ignored");
    assert_int_equal(r.nevents, 0);
    assert_int_equal(queue_rows(fx->db, id2), 1);
}

// Every order of: completed, expired, and a redelivery of each (24 orders, a booking each).
static void test_completed_and_expired_in_every_order(void **state) {
    fx_t *fx = *state;
    // 0, 2: checkout.session.completed (the same event twice); 1, 3: checkout.session.expired.
    int runs = 0;
    for (int code = 0; code < 256; code++) {
        int perm[4] = {code & 3, (code >> 2) & 3, (code >> 4) & 3, (code >> 6) & 3};
        unsigned seen = 0;
        for (int k = 0; k < 4; k++) seen |= 1u << perm[k];
        if (seen != 15) continue;   // not a permutation

        char id[STORE_UUID_LEN], session[64];
        make_awaiting(fx, id, session);
        char ev_c[64], ev_e[64];
        snprintf(ev_c, sizeof ev_c, "evt_c_%d", runs);
        snprintf(ev_e, sizeof ev_e, "evt_e_%d", runs);
        bool completed_first = perm[0] % 2 == 0;
        int applied = 0, duplicates = 0, refund_needed = 0, already = 0;
        for (int k = 0; k < 4; k++) {
            payment_outcome_t o;
            if (perm[k] % 2 == 0) {
                payment_event_t ev = stripe_event(ev_c, "checkout.session.completed", id, session);
                ev.payment_intent = "pi_order";
                o = apply_paid(fx->db, ev, NULL);
            } else {
                o = apply_expired(fx->db, stripe_event(ev_e, "checkout.session.expired", id, session));
            }
            applied += o == PAYMENT_APPLIED;
            duplicates += o == PAYMENT_DUPLICATE;
            refund_needed += o == PAYMENT_REFUND_NEEDED;
            already += o == PAYMENT_ALREADY_APPLIED;
        }
        assert_int_equal(applied, 1);
        assert_int_equal(duplicates, 2);
        if (completed_first) {
            assert_int_equal(already, 1);   // the expiry after the payment
            assert_booking_status(fx->db, id, "queued");
            assert_payment_status(fx->db, id, "paid");
            assert_int_equal(queue_rows(fx->db, id), 1);
            assert_int_equal(refund_needed, 0);
            assert_query_str(fx->db, "ignored", "SELECT outcome FROM webhook_events WHERE event_id = '%s'", ev_e);
        } else {
            // Expired first: the money that arrives after is kept paid and flagged for a refund.
            assert_booking_status(fx->db, id, "cancelled");
            assert_payment_status(fx->db, id, "paid");
            assert_int_equal(queue_rows(fx->db, id), 0);
            assert_int_equal(refund_needed, 1);
        }
        assert_int_equal(query_int(fx->db, "SELECT count(*) FROM webhook_events WHERE event_id IN ('%s', '%s')", ev_c,
                                   ev_e), 2);
        runs++;
    }
    assert_int_equal(runs, 24);
}

typedef struct {
    char id[STORE_UUID_LEN];
    char session[64];
} race_booking_t;

// Child 2k delivers booking k's completed event, child 2k+1 its expired event, all at once.
static child_result_t race_child(db_t *db, int index, void *arg) {
    const race_booking_t *b = &((const race_booking_t *)arg)[index / 2];
    char evid[64];
    snprintf(evid, sizeof evid, "evt_race_%d", index);
    payment_event_t ev = stripe_event(evid, index % 2 ? "checkout.session.expired" : "checkout.session.completed",
                                      b->id, b->session);
    payment_result_t r;
    child_result_t out = {0, 0, ""};
    out.rc = index % 2 ? payments_apply_expired(db, &ev, &r) : payments_apply_paid(db, &ev, 1500, "usd", 3, &r);
    out.value = (int)r.outcome;
    return out;
}

static void test_completed_and_expired_at_once_apply_one_after_the_other(void **state) {
    fx_t *fx = *state;
    enum { N = 12 };
    race_booking_t b[N];
    for (int k = 0; k < N; k++) make_awaiting(fx, b[k].id, b[k].session);
    child_result_t res[2 * N];
    run_concurrently(fx, 2 * N, race_child, b, NULL, res);
    for (int k = 0; k < N; k++) {
        child_result_t paid = res[2 * k], expired = res[2 * k + 1];
        assert_int_equal(paid.rc, STORE_OK);
        assert_int_equal(expired.rc, STORE_OK);
        booking_view_t v;
        assert_int_equal(bookings_get(fx->db, b[k].id, &v), STORE_OK);
        assert_payment_status(fx->db, b[k].id, "paid");
        if (strcmp(v.status, "queued") == 0) {   // the payment won
            assert_int_equal(paid.value, PAYMENT_APPLIED);
            assert_int_equal(expired.value, PAYMENT_ALREADY_APPLIED);
            assert_int_equal(v.seq, 4);
            assert_int_equal(queue_rows(fx->db, b[k].id), 1);
        } else {                                  // the expiry won
            assert_string_equal(v.status, "cancelled");
            assert_int_equal(expired.value, PAYMENT_APPLIED);
            assert_int_equal(paid.value, PAYMENT_REFUND_NEEDED);
            assert_int_equal(v.seq, 3);
            assert_int_equal(queue_rows(fx->db, b[k].id), 0);
        }
    }
}

static void test_expired_then_completed_is_cancelled_and_needs_a_refund(void **state) {
    fx_t *fx = *state;
    char id[STORE_UUID_LEN], session[64];
    make_awaiting(fx, id, session);
    payment_result_t r;
    assert_int_equal(payments_apply_expired(fx->db, &(payment_event_t){.provider = "stripe", .event_id = "evt_x1",
                                                                        .event_type = "checkout.session.expired",
                                                                        .session_id = session},
                                            &r),
                     STORE_OK);
    assert_int_equal(r.outcome, PAYMENT_APPLIED);
    assert_int_equal(r.nevents, 1);
    assert_string_equal(r.events[0].status, "cancelled");
    assert_payment_status(fx->db, id, "expired");

    payment_event_t ev = stripe_event("evt_x2", "checkout.session.completed", id, session);
    ev.payment_intent = "pi_late";
    assert_int_equal(apply_paid(fx->db, ev, &r), PAYMENT_REFUND_NEEDED);
    assert_string_equal(payment_outcome_metric(r.outcome), "applied");
    assert_string_equal(r.status, "cancelled");
    assert_string_equal(r.payment_status, "paid");
    assert_string_equal(r.payment_intent, "pi_late");
    assert_int_equal(r.nevents, 0);
    assert_false(r.enqueued);
    assert_int_equal(queue_rows(fx->db, id), 0);

    // The sweep sees money held on a cancelled booking until the refund begins.
    payment_refund_t *due = NULL;
    size_t n = 0;
    assert_int_equal(payments_refunds_due(fx->db, 10, &due, &n), STORE_OK);
    assert_int_equal(n, 1);
    assert_string_equal(due[0].booking_id, id);
    assert_string_equal(due[0].payment_intent, "pi_late");
    free(due);

    payment_refund_t f;
    assert_int_equal(payments_refund_begin(fx->db, id, &f), STORE_OK);
    assert_true(f.started);
    assert_string_equal(f.payment_status, "refund_pending");
    assert_string_equal(f.provider, "stripe");
    assert_string_equal(f.payment_intent, "pi_late");
    assert_int_equal(f.amount_cents, 1500);
    assert_int_equal(payments_refunds_due(fx->db, 10, &due, &n), STORE_OK);
    assert_int_equal(n, 0);
    assert_null(due);

    // The same money reported again (another event id) is not refunded twice.
    ev.event_id = "evt_x3";
    assert_int_equal(apply_paid(fx->db, ev, &r), PAYMENT_ALREADY_APPLIED);
    assert_payment_status(fx->db, id, "refund_pending");
}

static void test_async_payment_failure_and_late_money(void **state) {
    fx_t *fx = *state;
    char id[STORE_UUID_LEN], session[64];
    make_awaiting(fx, id, session);
    // checkout.session.completed with payment_status unpaid: recorded, the booking waits.
    payment_event_t info = stripe_event("evt_a1", "checkout.session.completed", id, session);
    info.payment_intent = "pi_async";
    info.provider_status = "unpaid";
    payment_result_t r;
    assert_int_equal(payments_apply_info(fx->db, &info, &r), STORE_OK);
    assert_int_equal(r.outcome, PAYMENT_RECORDED);
    assert_string_equal(payment_outcome_metric(r.outcome), "ignored");
    assert_string_equal(r.status, "pending_payment");
    assert_string_equal(r.payment_intent, "pi_async");

    payment_event_t failed = stripe_event("evt_a2", "checkout.session.async_payment_failed", id, session);
    assert_int_equal(payments_apply_failed(fx->db, &failed, "async_payment_failed", &r), STORE_OK);
    assert_int_equal(r.outcome, PAYMENT_APPLIED);
    assert_string_equal(r.status, "payment_failed");
    assert_string_equal(r.payment_status, "failed");
    assert_int_equal(r.nevents, 1);
    assert_int_equal(r.events[0].seq, 3);
    assert_string_equal(r.events[0].status, "payment_failed");

    failed.event_id = "evt_a3";
    assert_int_equal(payments_apply_failed(fx->db, &failed, "again", &r), STORE_OK);
    assert_int_equal(r.outcome, PAYMENT_ALREADY_APPLIED);
    assert_int_equal(payments_apply_expired(fx->db, &(payment_event_t){.provider = "stripe", .event_id = "evt_a4",
                                                                        .event_type = "checkout.session.expired",
                                                                        .session_id = session},
                                            &r),
                     STORE_OK);
    assert_int_equal(r.outcome, PAYMENT_ALREADY_APPLIED);
    assert_booking_status(fx->db, id, "payment_failed");

    // Money after a failure is refunded, never kept: found by the payment intent alone.
    payment_event_t late = {.provider = "stripe", .event_id = "evt_a5", .event_type = "charge.succeeded",
                            .payment_intent = "pi_async"};
    assert_int_equal(apply_paid(fx->db, late, &r), PAYMENT_REFUND_NEEDED);
    assert_string_equal(r.booking_id, id);
    assert_booking_status(fx->db, id, "payment_failed");
    assert_payment_status(fx->db, id, "paid");
}

static void test_events_for_unknown_targets_are_recorded_and_change_nothing(void **state) {
    fx_t *fx = *state;
    char id[STORE_UUID_LEN], session[64];
    make_awaiting(fx, id, session);
    payment_result_t r;
    memset(&r, 0, sizeof r);
    payment_event_t ev = stripe_event("evt_u1", "checkout.session.completed", "00000000-0000-4000-8000-000000000000",
                                      "cs_unknown");
    assert_int_equal(apply_paid(fx->db, ev, &r), PAYMENT_UNKNOWN_TARGET);
    assert_string_equal(payment_outcome_metric(r.outcome), "unknown_target");
    assert_string_equal(r.booking_id, "");
    assert_query_str(fx->db, "unknown_target", "SELECT outcome FROM webhook_events WHERE event_id = 'evt_u1'");
    assert_int_equal(apply_paid(fx->db, ev, &r), PAYMENT_DUPLICATE);

    // A malformed booking id and no other reference; the right booking under another provider.
    ev = stripe_event("evt_u2", "checkout.session.completed", "not-a-uuid", NULL);
    assert_int_equal(apply_paid(fx->db, ev, &r), PAYMENT_UNKNOWN_TARGET);
    ev = (payment_event_t){.provider = "cryptomus", .event_id = "inv:paid", .event_type = "paid", .booking_id = id,
                           .session_id = id};
    assert_int_equal(apply_paid(fx->db, ev, &r), PAYMENT_UNKNOWN_TARGET);
    assert_booking_status(fx->db, id, "pending_payment");
    assert_int_equal(queue_rows(fx->db, id), 0);

    // Refused input: nothing recorded.
    ev.provider = "vapi";
    assert_int_equal(payments_apply_paid(fx->db, &ev, -1, NULL, 3, &r), STORE_ERR_INVALID);
    ev.provider = "stripe";
    ev.event_id = "";
    assert_int_equal(payments_apply_paid(fx->db, &ev, -1, NULL, 3, &r), STORE_ERR_INVALID);
    assert_int_equal(query_int(fx->db, "SELECT count(*) FROM webhook_events"), 3);
}

static void test_cryptomus_invoice_paid_and_lookups(void **state) {
    fx_t *fx = *state;
    char id[STORE_UUID_LEN];
    make_pending(fx, "standard", "cryptomus", id);
    const char *invoice = "62f88b36-a9d5-4fa6-aa5d-4d5d7e9b9f2a";
    booking_checkout_t co = {"cryptomus", id, invoice, "https://pay.cryptomus.test/pay/x", 0};
    booking_event_t bev;
    assert_int_equal(bookings_checkout_created(fx->db, id, &co, &bev), STORE_OK);

    payment_event_t process = {.provider = "cryptomus", .event_id = "62f88b36:process", .event_type = "process",
                               .provider_status = "process", .invoice_uuid = invoice};
    payment_result_t r;
    assert_int_equal(payments_apply_info(fx->db, &process, &r), STORE_OK);
    assert_int_equal(r.outcome, PAYMENT_RECORDED);

    // paid_over, a different amount string converted by the caller: applied, the difference noted.
    payment_event_t paid = {.provider = "cryptomus", .event_id = "62f88b36:paid_over", .event_type = "paid_over",
                            .provider_status = "paid_over", .invoice_uuid = invoice};
    assert_int_equal(payments_apply_paid(fx->db, &paid, 1600, "USD", 2, &r), STORE_OK);
    assert_int_equal(r.outcome, PAYMENT_APPLIED);
    assert_string_equal(r.status, "queued");
    assert_int_equal(query_int(fx->db, "SELECT max_retries FROM call_queue WHERE booking_id = '%s'", id), 2);

    payment_t p;
    assert_int_equal(payments_find_by_invoice(fx->db, invoice, &p), STORE_OK);
    assert_string_equal(p.booking_id, id);
    assert_string_equal(p.status, "paid");
    assert_string_equal(p.provider_status, "paid_over");
    assert_string_equal(p.expires_at, "");
    assert_non_null(strstr(p.error_message, "1600"));
    payment_clear(&p);
    assert_int_equal(payments_find_by_session(fx->db, "cryptomus", id, &p), STORE_OK);
    assert_string_equal(p.invoice_uuid, invoice);
    payment_clear(&p);
    assert_int_equal(payments_find_by_session(fx->db, "stripe", id, &p), STORE_ERR_NOT_FOUND);
    assert_int_equal(payments_find_by_invoice(fx->db, "nope", &p), STORE_ERR_NOT_FOUND);

    char id2[STORE_UUID_LEN], session[64];
    make_awaiting(fx, id2, session);
    payment_event_t sev = stripe_event("evt_l1", "checkout.session.completed", id2, session);
    sev.payment_intent = "pi_lookup";
    assert_int_equal(apply_paid(fx->db, sev, NULL), PAYMENT_APPLIED);
    assert_int_equal(payments_find_by_payment_intent(fx->db, "pi_lookup", &p), STORE_OK);
    assert_string_equal(p.booking_id, id2);
    assert_string_equal(p.session_id, session);
    assert_string_equal(p.checkout_url, "https://checkout.stripe.test/c/pay");
    payment_clear(&p);
    assert_int_equal(payments_find_by_payment_intent(fx->db, "pi_none", &p), STORE_ERR_NOT_FOUND);
}

// ---- cancel and refunds -------------------------------------------------------------------------------

static void test_cancel_before_payment_expires_the_checkout(void **state) {
    fx_t *fx = *state;
    char id[STORE_UUID_LEN], session[64];
    make_awaiting(fx, id, session);
    booking_cancel_t c;
    assert_int_equal(bookings_cancel(fx->db, id, &c), STORE_OK);
    assert_string_equal(c.previous_status, "pending_payment");
    assert_false(c.already_cancelled);
    assert_int_equal(c.event.seq, 3);
    assert_string_equal(c.event.status, "cancelled");
    assert_true(c.has_payment);
    assert_string_equal(c.payment_status, "cancelled");
    assert_false(c.refund_needed);
    assert_true(c.expire_checkout);
    assert_string_equal(c.session_id, session);

    assert_int_equal(bookings_cancel(fx->db, id, &c), STORE_OK);
    assert_true(c.already_cancelled);
    assert_int_equal(c.event.seq, 0);
    assert_false(c.refund_needed);
    assert_int_equal(query_int(fx->db, "SELECT count(*) FROM booking_events WHERE booking_id = '%s'", id), 3);

    // The customer paid at the provider just before the checkout was expired: refund.
    payment_result_t r;
    assert_int_equal(apply_paid(fx->db, stripe_event("evt_cx", "checkout.session.completed", id, session), &r),
                     PAYMENT_REFUND_NEEDED);
}

static void test_cancel_after_payment_needs_a_refund(void **state) {
    fx_t *fx = *state;
    char id[STORE_UUID_LEN], session[64];
    make_awaiting(fx, id, session);
    payment_event_t ev = stripe_event("evt_r1", "checkout.session.completed", id, session);
    ev.payment_intent = "pi_refund";
    assert_int_equal(apply_paid(fx->db, ev, NULL), PAYMENT_APPLIED);

    booking_cancel_t c;
    assert_int_equal(bookings_cancel(fx->db, id, &c), STORE_OK);
    assert_string_equal(c.previous_status, "queued");
    assert_true(c.refund_needed);
    assert_false(c.expire_checkout);
    assert_string_equal(c.payment_status, "paid");
    assert_string_equal(c.provider, "stripe");
    assert_string_equal(c.payment_intent, "pi_refund");
    assert_query_str(fx->db, "cancelled", "SELECT status FROM call_queue WHERE booking_id = '%s'", id);

    payment_refund_t f;
    assert_int_equal(payments_refund_begin(fx->db, id, &f), STORE_OK);
    assert_true(f.started);
    assert_int_equal(payments_refund_begin(fx->db, id, &f), STORE_OK);   // idempotent
    assert_false(f.started);
    assert_string_equal(f.payment_status, "refund_pending");
    assert_int_equal(payments_refund_result(fx->db, id, "re_1", "refund_pending"), STORE_OK);
    assert_int_equal(payments_refund_result(fx->db, id, "re_1", "bogus"), STORE_ERR_INVALID);
    assert_int_equal(payments_refund_result(fx->db, id, NULL, "refunded"), STORE_OK);
    assert_int_equal(payments_refund_result(fx->db, id, NULL, "refunded"), STORE_OK);
    assert_int_equal(payments_refund_result(fx->db, id, NULL, "refund_failed"), STORE_ERR_CONFLICT);
    payment_t p;
    assert_int_equal(payments_get(fx->db, id, &p), STORE_OK);
    assert_string_equal(p.status, "refunded");
    assert_string_equal(p.refund_id, "re_1");
    assert_int_not_equal(p.refunded_at[0], '\0');
    payment_clear(&p);
    assert_int_equal(payments_refund_begin(fx->db, id, &f), STORE_OK);
    assert_false(f.started);
    assert_string_equal(f.payment_status, "refunded");

    assert_int_equal(bookings_cancel(fx->db, id, &c), STORE_OK);
    assert_true(c.already_cancelled);
    assert_false(c.refund_needed);
    assert_string_equal(c.payment_status, "refunded");

    // A refund that failed can be begun again.
    char id2[STORE_UUID_LEN], s2[64];
    make_awaiting(fx, id2, s2);
    assert_int_equal(apply_paid(fx->db, stripe_event("evt_r2", "checkout.session.completed", id2, s2), NULL),
                     PAYMENT_APPLIED);
    assert_int_equal(bookings_cancel(fx->db, id2, &c), STORE_OK);
    assert_int_equal(payments_refund_begin(fx->db, id2, &f), STORE_OK);
    assert_string_equal(f.payment_intent, "");   // not known yet: the caller retrieves the session
    assert_int_equal(payments_set_payment_intent(fx->db, id2, "pi_found"), STORE_OK);
    assert_int_equal(payments_refund_result(fx->db, id2, NULL, "refund_failed"), STORE_OK);
    assert_int_equal(payments_refund_begin(fx->db, id2, &f), STORE_OK);
    assert_true(f.started);
    assert_string_equal(f.payment_intent, "pi_found");

    // Never paid: nothing to refund.
    char id3[STORE_UUID_LEN];
    make_pending(fx, "standard", "stripe", id3);
    assert_int_equal(payments_refund_begin(fx->db, id3, &f), STORE_ERR_CONFLICT);
    assert_int_equal(payments_refund_result(fx->db, id3, NULL, "refunded"), STORE_ERR_CONFLICT);
    assert_int_equal(payments_refund_begin(fx->db, "00000000-0000-4000-8000-000000000000", &f), STORE_ERR_NOT_FOUND);
}

static void test_cancel_of_a_paid_cryptomus_booking_requires_a_manual_refund(void **state) {
    fx_t *fx = *state;
    char id[STORE_UUID_LEN];
    make_pending(fx, "standard", "cryptomus", id);
    booking_checkout_t co = {"cryptomus", id, "inv-1", "https://pay.cryptomus.test/pay/1", 0};
    booking_event_t bev;
    assert_int_equal(bookings_checkout_created(fx->db, id, &co, &bev), STORE_OK);
    payment_event_t paid = {.provider = "cryptomus", .event_id = "inv-1:paid", .event_type = "paid",
                            .session_id = id};
    payment_result_t r;
    assert_int_equal(payments_apply_paid(fx->db, &paid, 1500, "usd", 3, &r), STORE_OK);
    assert_int_equal(r.outcome, PAYMENT_APPLIED);
    booking_cancel_t c;
    assert_int_equal(bookings_cancel(fx->db, id, &c), STORE_OK);
    assert_true(c.refund_needed);
    assert_string_equal(c.provider, "cryptomus");
    assert_int_equal(payments_mark_refund_required(fx->db, id), STORE_OK);
    assert_int_equal(payments_mark_refund_required(fx->db, id), STORE_OK);
    assert_payment_status(fx->db, id, "refund_required");
    payment_refund_t f;
    assert_int_equal(payments_refund_begin(fx->db, id, &f), STORE_OK);
    assert_false(f.started);
    assert_string_equal(f.payment_status, "refund_required");

    char id2[STORE_UUID_LEN];
    make_pending(fx, "standard", "cryptomus", id2);
    assert_int_equal(payments_mark_refund_required(fx->db, id2), STORE_ERR_CONFLICT);
}

static void test_cancel_is_too_late_from_initiating_on(void **state) {
    fx_t *fx = *state;
    char phone[24];
    next_phone(fx, phone, sizeof phone);
    booking_new_t in = new_booking(phone, "free_trial", NULL);
    booking_created_t c;
    assert_int_equal(bookings_create(fx->db, &in, &c, NULL), STORE_OK);
    booking_cancel_t k;
    assert_int_equal(bookings_cancel(fx->db, c.id, &k), STORE_OK);   // a queued free trial
    assert_false(k.has_payment);
    assert_false(k.refund_needed);
    assert_string_equal(k.previous_status, "queued");
    assert_query_str(fx->db, "cancelled", "SELECT status FROM call_queue WHERE booking_id = '%s'", c.id);

    const char *too_late[] = {"initiating", "calling", "completed", "failed"};
    for (size_t i = 0; i < sizeof too_late / sizeof too_late[0]; i++) {
        char id[STORE_UUID_LEN], session[64];
        make_awaiting(fx, id, session);
        char evid[32];
        snprintf(evid, sizeof evid, "evt_tl_%zu", i);
        assert_int_equal(apply_paid(fx->db, stripe_event(evid, "checkout.session.completed", id, session), NULL),
                         PAYMENT_APPLIED);
        char sql[256];
        snprintf(sql, sizeof sql, "UPDATE bookings SET status = 'initiating' WHERE id = '%s'", id);
        exec_ok(fx->db, "%s", sql);
        if (i > 0) {
            snprintf(sql, sizeof sql, "UPDATE bookings SET status = 'calling' WHERE id = '%s'", id);
            exec_ok(fx->db, "%s", sql);
        }
        if (i > 1) {
            snprintf(sql, sizeof sql, "UPDATE bookings SET status = '%s' WHERE id = '%s'", too_late[i], id);
            exec_ok(fx->db, "%s", sql);
        }
        booking_cancel_t untouched, out;
        memset(&untouched, 0x5a, sizeof untouched);
        out = untouched;
        assert_int_equal(bookings_cancel(fx->db, id, &out), STORE_ERR_TOO_LATE);
        assert_memory_equal(&out, &untouched, sizeof out);
        assert_booking_status(fx->db, id, too_late[i]);
        assert_query_str(fx->db, "queued", "SELECT status FROM call_queue WHERE booking_id = '%s'", id);
    }

    char id[STORE_UUID_LEN];
    make_pending(fx, "standard", "stripe", id);
    booking_event_t ev;
    assert_int_equal(bookings_checkout_failed(fx->db, id, NULL, &ev), STORE_OK);
    assert_int_equal(bookings_cancel(fx->db, id, &k), STORE_ERR_TOO_LATE);
    assert_int_equal(bookings_cancel(fx->db, "00000000-0000-4000-8000-000000000000", &k), STORE_ERR_NOT_FOUND);
    assert_int_equal(bookings_cancel(fx->db, "nope", &k), STORE_ERR_NOT_FOUND);
}

// ---- history, reads, reconciliation -------------------------------------------------------------------

static void test_status_history_is_numbered_in_order(void **state) {
    fx_t *fx = *state;
    char id[STORE_UUID_LEN], session[64];
    make_awaiting(fx, id, session);
    assert_int_equal(apply_paid(fx->db, stripe_event("evt_h1", "checkout.session.completed", id, session), NULL),
                     PAYMENT_APPLIED);
    booking_event_t *evs = NULL;
    size_t n = 0;
    assert_int_equal(bookings_events(fx->db, id, 0, &evs, &n), STORE_OK);
    assert_int_equal(n, 4);
    const char *want[] = {"pending", "pending_payment", "confirmed", "queued"};
    regex_t re;
    assert_int_equal(regcomp(&re, "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{3}Z$", REG_EXTENDED), 0);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(evs[i].seq, (int)i + 1);
        assert_string_equal(evs[i].status, want[i]);
        assert_int_equal(regexec(&re, evs[i].at, 0, NULL, 0), 0);
        if (i > 0) assert_true(strcmp(evs[i - 1].at, evs[i].at) <= 0);
    }
    regfree(&re);
    free(evs);

    assert_int_equal(bookings_events(fx->db, id, 2, &evs, &n), STORE_OK);
    assert_int_equal(n, 2);
    assert_int_equal(evs[0].seq, 3);
    assert_string_equal(evs[1].status, "queued");
    free(evs);
    assert_int_equal(bookings_events(fx->db, id, 4, &evs, &n), STORE_OK);
    assert_int_equal(n, 0);
    assert_null(evs);
    assert_int_equal(bookings_events(fx->db, "00000000-0000-4000-8000-000000000000", 0, &evs, &n), STORE_OK);
    assert_int_equal(n, 0);

    booking_view_t v;
    assert_int_equal(bookings_get(fx->db, id, &v), STORE_OK);
    assert_string_equal(v.id, id);
    assert_string_equal(v.plan, "standard");
    assert_string_equal(v.status, "queued");
    assert_int_equal(v.seq, 4);
    assert_string_equal(v.payment_method, "stripe");
    assert_string_equal(v.scheduled_for, "");
    assert_int_equal(v.price_cents, 1500);
    assert_int_equal(v.duration_seconds, 600);
    assert_int_equal(v.priority, 20);
    assert_int_equal(strlen(v.created_at), 24);
    assert_int_equal(bookings_get(fx->db, "00000000-0000-4000-8000-000000000000", &v), STORE_ERR_NOT_FOUND);
    assert_int_equal(bookings_get(fx->db, "", &v), STORE_ERR_NOT_FOUND);
}

static void test_reconciliation_lists_stale_unpaid_bookings_in_turn(void **state) {
    fx_t *fx = *state;
    char stale_awaiting[STORE_UUID_LEN], s1[64], stale_pending[STORE_UUID_LEN], fresh[STORE_UUID_LEN], s3[64],
        paid[STORE_UUID_LEN], s4[64];
    make_awaiting(fx, stale_awaiting, s1);
    make_pending(fx, "premium", "cryptomus", stale_pending);
    make_awaiting(fx, fresh, s3);
    make_awaiting(fx, paid, s4);
    assert_int_equal(apply_paid(fx->db, stripe_event("evt_rc", "checkout.session.completed", paid, s4), NULL),
                     PAYMENT_APPLIED);
    char sql[512];
    snprintf(sql, sizeof sql, "UPDATE bookings SET created_at = now() - interval '10 minutes' WHERE id IN ('%s', '%s')",
             stale_awaiting, paid);
    exec_ok(fx->db, "%s", sql);
    snprintf(sql, sizeof sql, "UPDATE bookings SET created_at = now() - interval '20 minutes' WHERE id = '%s'",
             stale_pending);
    exec_ok(fx->db, "%s", sql);

    booking_unpaid_t *list = NULL;
    size_t n = 0;
    assert_int_equal(bookings_pending_payment_older_than(fx->db, 300, 10, &list, &n), STORE_OK);
    assert_int_equal(n, 2);
    assert_string_equal(list[0].booking_id, stale_pending);   // oldest first
    assert_string_equal(list[0].status, "pending");
    assert_string_equal(list[0].provider, "cryptomus");
    assert_string_equal(list[0].session_id, "");
    assert_int_equal(list[0].amount_cents, 4900);
    assert_true(list[0].age_s >= 1199 && list[0].age_s <= 1300);
    assert_string_equal(list[1].booking_id, stale_awaiting);
    assert_string_equal(list[1].status, "pending_payment");
    assert_string_equal(list[1].provider, "stripe");
    assert_string_equal(list[1].session_id, s1);
    assert_string_equal(list[1].expires_at, "2030-03-17T17:46:40.000Z");
    free(list);

    // Just checked: not again until older_than_s has passed since.
    assert_int_equal(bookings_pending_payment_older_than(fx->db, 300, 10, &list, &n), STORE_OK);
    assert_int_equal(n, 0);
    assert_null(list);
    exec_ok(fx->db, "UPDATE payments SET checked_at = now() - interval '6 minutes'");
    assert_int_equal(bookings_pending_payment_older_than(fx->db, 300, 1, &list, &n), STORE_OK);
    assert_int_equal(n, 1);
    free(list);
    assert_int_equal(bookings_pending_payment_older_than(fx->db, 300, 10, &list, &n), STORE_OK);
    assert_int_equal(n, 1);   // the other one, now
    free(list);

    // What reconciliation then applies goes through the same functions as a webhook.
    exec_ok(fx->db, "UPDATE payments SET checked_at = NULL");
    payment_event_t rec = stripe_event("reconcile:paid", "reconcile", NULL, s1);
    assert_int_equal(apply_paid(fx->db, rec, NULL), PAYMENT_APPLIED);
    assert_int_equal(apply_paid(fx->db, stripe_event("evt_late", "checkout.session.completed", stale_awaiting, s1), NULL),
                     PAYMENT_ALREADY_APPLIED);
    assert_int_equal(bookings_pending_payment_older_than(fx->db, 300, 10, &list, &n), STORE_OK);
    assert_int_equal(n, 1);
    assert_string_equal(list[0].booking_id, stale_pending);
    free(list);
}

// ---- idempotency keys -----------------------------------------------------------------------------

static child_result_t idem_child(db_t *db, int index, void *arg) {
    idem_result_t r;
    child_result_t out = {0, 0, ""};
    out.rc = idem_begin(db, arg, "hash-a", &r);
    if (out.rc == STORE_OK) {
        out.value = (int)r.state;
        idem_result_clear(&r);
    }
    return out;
}

static void test_idempotency_key_states(void **state) {
    fx_t *fx = *state;
    idem_result_t r;
    assert_int_equal(idem_begin(fx->db, "key-1", "hash-a", &r), STORE_OK);
    assert_int_equal(r.state, IDEM_NEW);
    assert_int_equal(idem_begin(fx->db, "key-1", "hash-a", &r), STORE_OK);
    assert_int_equal(r.state, IDEM_IN_PROGRESS);
    assert_int_equal(idem_begin(fx->db, "key-1", "hash-b", &r), STORE_OK);
    assert_int_equal(r.state, IDEM_MISMATCH);

    char id[STORE_UUID_LEN];
    make_pending(fx, "standard", "stripe", id);
    const char body[] = "{\"booking_id\":\"x\",\"name\":\"\xc3\x89lodie\"}\0tail\xff";
    assert_int_equal(idem_finish(fx->db, "key-1", 201, body, sizeof body, id), STORE_OK);
    assert_int_equal(idem_finish(fx->db, "key-1", 201, body, sizeof body, id), STORE_ERR_NOT_FOUND);
    assert_int_equal(idem_begin(fx->db, "key-1", "hash-a", &r), STORE_OK);
    assert_int_equal(r.state, IDEM_DONE);
    assert_int_equal(r.status, 201);
    assert_int_equal(r.body_len, sizeof body);
    assert_memory_equal(r.body, body, sizeof body);
    assert_string_equal(r.booking_id, id);
    idem_result_clear(&r);
    assert_null(r.body);
    assert_int_equal(idem_begin(fx->db, "key-1", "hash-b", &r), STORE_OK);
    assert_int_equal(r.state, IDEM_MISMATCH);
    assert_int_equal(idem_abort(fx->db, "key-1"), STORE_OK);   // a finished key stays
    assert_int_equal(idem_begin(fx->db, "key-1", "hash-a", &r), STORE_OK);
    assert_int_equal(r.state, IDEM_DONE);
    idem_result_clear(&r);

    // Aborted: the retry runs afresh. An empty body and no booking are fine.
    assert_int_equal(idem_begin(fx->db, "key-2", "hash-a", &r), STORE_OK);
    assert_int_equal(idem_abort(fx->db, "key-2"), STORE_OK);
    assert_int_equal(idem_begin(fx->db, "key-2", "hash-b", &r), STORE_OK);
    assert_int_equal(r.state, IDEM_NEW);
    assert_int_equal(idem_finish(fx->db, "key-2", 409, "", 0, NULL), STORE_OK);
    assert_int_equal(idem_begin(fx->db, "key-2", "hash-b", &r), STORE_OK);
    assert_int_equal(r.state, IDEM_DONE);
    assert_int_equal(r.status, 409);
    assert_int_equal(r.body_len, 0);
    assert_string_equal(r.booking_id, "");
    idem_result_clear(&r);

    // Abandoned in progress (the process died): taken over. Older than 24 hours: forgotten.
    assert_int_equal(idem_begin(fx->db, "key-3", "hash-a", &r), STORE_OK);
    exec_ok(fx->db, "UPDATE idempotency_keys SET created_at = now() - interval '10 minutes' WHERE key = 'key-3'");
    assert_int_equal(idem_begin(fx->db, "key-3", "hash-a", &r), STORE_OK);
    assert_int_equal(r.state, IDEM_NEW);
    exec_ok(fx->db, "UPDATE idempotency_keys SET created_at = now() - interval '25 hours' WHERE key = 'key-1'");
    assert_int_equal(idem_begin(fx->db, "key-1", "hash-b", &r), STORE_OK);
    assert_int_equal(r.state, IDEM_NEW);

    // Refused: too long, empty, bad status, unknown booking.
    char long_key[260];
    memset(long_key, 'k', 256);
    long_key[256] = '\0';
    assert_int_equal(idem_begin(fx->db, long_key, "hash-a", &r), STORE_ERR_INVALID);
    long_key[255] = '\0';
    assert_int_equal(idem_begin(fx->db, long_key, "hash-a", &r), STORE_OK);
    assert_int_equal(r.state, IDEM_NEW);
    assert_int_equal(idem_begin(fx->db, "", "hash-a", &r), STORE_ERR_INVALID);
    assert_int_equal(idem_finish(fx->db, "key-3", 42, "x", 1, NULL), STORE_ERR_INVALID);
    assert_int_equal(idem_finish(fx->db, "key-3", 201, "x", 1, "00000000-0000-4000-8000-000000000000"), STORE_ERR_INVALID);
    assert_int_equal(idem_finish(fx->db, "nope", 201, "x", 1, NULL), STORE_ERR_NOT_FOUND);

    // Ten at once with one new key: exactly one proceeds.
    child_result_t res[10];
    run_concurrently(fx, 10, idem_child, "key-race", NULL, res);
    int fresh = 0, running = 0;
    for (int i = 0; i < 10; i++) {
        assert_int_equal(res[i].rc, STORE_OK);
        if (res[i].value == IDEM_NEW) fresh++;
        if (res[i].value == IDEM_IN_PROGRESS) running++;
    }
    assert_int_equal(fresh, 1);
    assert_int_equal(running, 9);

    // Purge: only what is older than asked.
    exec_ok(fx->db, "UPDATE idempotency_keys SET created_at = now() - interval '2 days' WHERE key = 'key-2'");
    int64_t deleted = -1;
    assert_int_equal(idem_purge(fx->db, 86400, &deleted), STORE_OK);
    assert_int_equal(deleted, 1);
    assert_int_equal(query_int(fx->db, "SELECT count(*) FROM idempotency_keys WHERE key = 'key-2'"), 0);
    assert_int_equal(query_int(fx->db, "SELECT count(*) FROM idempotency_keys"), 4);
}

static void test_webhook_events_purge_keeps_recent_events(void **state) {
    fx_t *fx = *state;
    payment_result_t r;
    for (int i = 0; i < 3; i++) {
        char evid[16];
        snprintf(evid, sizeof evid, "evt_p%d", i);
        payment_event_t ev = stripe_event(evid, "checkout.session.completed", NULL, "cs_none");
        assert_int_equal(payments_apply_info(fx->db, &ev, &r), STORE_OK);
        assert_int_equal(r.outcome, PAYMENT_UNKNOWN_TARGET);
    }
    exec_ok(fx->db, "UPDATE webhook_events SET received_at = now() - interval '8 days' WHERE event_id <> 'evt_p2'");
    int64_t deleted = -1;
    assert_int_equal(webhook_events_purge(fx->db, 7 * 86400, &deleted), STORE_OK);
    assert_int_equal(deleted, 2);
    assert_int_equal(query_int(fx->db, "SELECT count(*) FROM webhook_events"), 1);
    assert_int_equal(webhook_events_purge(fx->db, 7 * 86400, NULL), STORE_OK);
}

static void test_functions_report_a_database_that_is_down(void **state) {
    fx_t *fx = *state;
    db_t *db = db_new("postgresql:///nope?host=/nonexistent&port=1", &LG);
    assert_non_null(db);
    char phone[24];
    next_phone(fx, phone, sizeof phone);
    booking_new_t in = new_booking(phone, "standard", "stripe");
    booking_created_t c;
    assert_int_equal(bookings_create(db, &in, &c, NULL), STORE_ERR_DB);
    payment_event_t ev = stripe_event("evt_down", "checkout.session.completed", NULL, "cs");
    payment_result_t r;
    assert_int_equal(payments_apply_paid(db, &ev, -1, NULL, 3, &r), STORE_ERR_DB);
    idem_result_t ir;
    assert_int_equal(idem_begin(db, "k", "h", &ir), STORE_ERR_DB);
    booking_cancel_t k;
    assert_int_equal(bookings_cancel(db, "00000000-0000-4000-8000-000000000000", &k), STORE_ERR_DB);
    assert_string_equal(store_err_name(STORE_ERR_DB), "db");
    assert_string_equal(store_err_name(STORE_ERR_TOO_LATE), "too_late");
    db_destroy(&db);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_paid_booking_starts_pending_with_a_pending_payment, setup, teardown),
        cmocka_unit_test_setup_teardown(test_free_trial_is_queued_once_per_phone_per_day, setup, teardown),
        cmocka_unit_test_setup_teardown(test_twenty_simultaneous_free_trials_for_one_phone_make_one_booking, setup, teardown),
        cmocka_unit_test_setup_teardown(test_values_the_schema_refuses_create_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_checkout_created_moves_pending_to_pending_payment_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_checkout_failure_makes_a_pending_booking_payment_failed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_paid_event_delivered_fifty_times_moves_the_booking_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_completed_and_expired_in_every_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_completed_and_expired_at_once_apply_one_after_the_other, setup, teardown),
        cmocka_unit_test_setup_teardown(test_expired_then_completed_is_cancelled_and_needs_a_refund, setup, teardown),
        cmocka_unit_test_setup_teardown(test_async_payment_failure_and_late_money, setup, teardown),
        cmocka_unit_test_setup_teardown(test_events_for_unknown_targets_are_recorded_and_change_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cryptomus_invoice_paid_and_lookups, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_before_payment_expires_the_checkout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_after_payment_needs_a_refund, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_of_a_paid_cryptomus_booking_requires_a_manual_refund, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_is_too_late_from_initiating_on, setup, teardown),
        cmocka_unit_test_setup_teardown(test_status_history_is_numbered_in_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reconciliation_lists_stale_unpaid_bookings_in_turn, setup, teardown),
        cmocka_unit_test_setup_teardown(test_idempotency_key_states, setup, teardown),
        cmocka_unit_test_setup_teardown(test_webhook_events_purge_keeps_recent_events, setup, teardown),
        cmocka_unit_test_setup_teardown(test_functions_report_a_database_that_is_down, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
