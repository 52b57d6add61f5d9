// tests/integration/test_dispatch_storage.c — the dispatch transactions (storage/dispatch.h) and
// the account and agent queries (storage/accounts.h) against a real PostgreSQL: a fresh, migrated
// database per test on the shared test cluster. Races are real: the concurrent tests fork
// processes, each with its own connection, released together through a pipe, while the parent
// samples the tables for a limit ever exceeded.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/crypto.h"
#include "common/log.h"
#include "storage/accounts.h"
#include "storage/bookings.h"
#include "storage/call_events.h"
#include "storage/db.h"
#include "storage/dispatch.h"
#include "storage/migrate.h"
#include "storage/payments.h"
#include "storage/store.h"
#include "tests/harness/harness.h"
#include "tests/integration/storage_fixture.h"

static const unsigned char TEST_KEY[CRYPTO_KEY_LEN] = "0123456789abcdef0123456789abcdef";

// ---- helpers -----------------------------------------------------------------------------------

static int setup(void **state) {
    fx_t *fx = fixture_open("stdisp");
    // Every plan has an assistant unless a test says otherwise.
    exec_ok(fx->db, "UPDATE plans SET vapi_assistant_id = 'asst_' || key::text");
    *state = fx;
    return 0;
}

static void next_phone(fx_t *fx, char *buf, size_t size) { snprintf(buf, size, "+1666%07d", ++fx->phones); }

static void add_account(fx_t *fx, const char *name, int max_concurrent, char id[STORE_UUID_LEN]) {
    unsigned char *sealed = NULL, nonce[CRYPTO_NONCE_LEN];
    size_t len = 0;
    char key[64];
    snprintf(key, sizeof key, "vapi-key-of-%s", name);
    assert_int_equal(crypto_seal(TEST_KEY, key, strlen(key), &sealed, &len, nonce), 0);
    assert_int_equal(accounts_add(fx->db, name, sealed, len, nonce, "pn_test", max_concurrent, id), STORE_OK);
    free(sealed);
}

static void add_agent(fx_t *fx, const char *account, const char *plan, int max_concurrent, int priority,
                      const char *assistant, char id[STORE_UUID_LEN]) {
    assert_int_equal(agents_add(fx->db, account, plan, max_concurrent, assistant, priority, id), STORE_OK);
}

// A booking in status queued with its call_queue row: a free trial directly, a paid plan through
// a paid Stripe event. scheduled_for may be NULL.
static void make_queued_at(fx_t *fx, const char *plan, int max_retries, const char *scheduled_for,
                           char id[STORE_UUID_LEN]) {
    char phone[24];
    next_phone(fx, phone, sizeof phone);
    bool free_trial = strcmp(plan, "free_trial") == 0;
    booking_new_t in = {.name = "Ann Example", .phone = phone, .plan = plan,
                        .payment_method = free_trial ? NULL : "stripe", .scheduled_for = scheduled_for,
                        .max_retries = max_retries};
    booking_created_t c;
    assert_int_equal(bookings_create(fx->db, &in, &c, NULL), STORE_OK);
    snprintf(id, STORE_UUID_LEN, "%s", c.id);
    if (free_trial) return;
    char evid[32];
    snprintf(evid, sizeof evid, "evt_disp_%d", ++fx->events);
    payment_event_t ev = {.provider = "stripe", .event_id = evid, .event_type = "checkout.session.completed",
                          .provider_status = "paid", .booking_id = c.id};
    payment_result_t r;
    assert_int_equal(payments_apply_paid(fx->db, &ev, -1, NULL, max_retries, &r), STORE_OK);
    assert_int_equal(r.outcome, PAYMENT_APPLIED);
    assert_string_equal(r.status, "queued");
}

static void make_queued(fx_t *fx, const char *plan, char id[STORE_UUID_LEN]) {
    make_queued_at(fx, plan, 3, NULL, id);
}

static const char *booking_status(fx_t *fx, const char *id, char buf[STORE_STATUS_MAX]) {
    char *v = query1(fx->db, "SELECT status FROM bookings WHERE id = '%s'", id);
    snprintf(buf, STORE_STATUS_MAX, "%s", v);
    free(v);
    return buf;
}

#define assert_booking_status(fx, id, want)                          \
    do {                                                             \
        char st_[STORE_STATUS_MAX];                                  \
        assert_string_equal(booking_status((fx), (id), st_), (want)); \
    } while (0)

// The booking's statuses, oldest first, joined with ">".
static char *history(fx_t *fx, const char *id) {
    return query1(fx->db, "SELECT string_agg(status::text, '>' ORDER BY seq) FROM booking_events WHERE booking_id = '%s'",
                  id);
}

#define assert_history(fx, id, want)    \
    do {                                \
        char *h_ = history((fx), (id)); \
        assert_string_equal(h_, (want)); \
        free(h_);                       \
    } while (0)

static void assert_capacity_consistent(fx_t *fx) {
    bool ok = false;
    assert_int_equal(dispatch_capacity_check(fx->db, &ok), STORE_OK);
    if (!ok) fail_msg("capacity counters disagree with the calls in progress");
}

static long long agent_active(fx_t *fx, const char *agent) {
    return query_int(fx->db, "SELECT active_calls FROM vapi_agents WHERE id = '%s'", agent);
}

static long long account_active(fx_t *fx, const char *account) {
    return query_int(fx->db, "SELECT active_calls FROM vapi_accounts WHERE id = '%s'", account);
}

// Claims with a generous lease; returns how many were claimed (assignments in *out, owned by the caller).
static size_t claim(fx_t *fx, int limit, dispatch_assignment_t **out) {
    size_t n = 99;
    *out = NULL;
    assert_int_equal(dispatch_claim(fx->db, "test-owner", 60, limit, out, &n), STORE_OK);
    return n;
}

static size_t claim_count(fx_t *fx, int limit) {
    dispatch_assignment_t *a = NULL;
    size_t n = claim(fx, limit, &a);
    dispatch_assignments_free(&a, n);
    return n;
}

// Claims exactly one call and returns it.
static dispatch_assignment_t claim_one(fx_t *fx) {
    dispatch_assignment_t *a = NULL;
    assert_int_equal(claim(fx, 1, &a), 1);
    dispatch_assignment_t one = a[0];
    dispatch_assignments_free(&a, 1);
    return one;
}

static void start(fx_t *fx, const dispatch_assignment_t *a, char call_id[64]) {
    snprintf(call_id, 64, "call-%d-%.8s", ++fx->calls, a->booking_id);
    dispatch_start_t s;
    assert_int_equal(dispatch_started(fx->db, a->booking_id, a->claim, call_id, "https://control.example/x", &s),
                     STORE_OK);
    assert_int_equal(s.outcome, DISPATCH_STARTED);
}

static dispatch_settled_t settle_call(fx_t *fx, const char *call_id, dispatch_outcome_t outcome, int delay_s) {
    dispatch_settle_t in = {.vapi_call_id = call_id, .outcome = outcome, .ended_reason = "customer-ended-call",
                            .duration_s = 42, .cost_micros = 123400, .recording_url = "https://rec.example/1.wav",
                            .retry_delay_s = delay_s};
    dispatch_settled_t out;
    memset(&out, 0x5a, sizeof out);
    assert_int_equal(dispatch_settle(fx->db, &in, &out), STORE_OK);
    return out;
}

// ---- accounts and agents --------------------------------------------------------------------------

static void test_accounts_store_the_sealed_key_and_list_capacity(void **state) {
    fx_t *fx = *state;
    char a1[STORE_UUID_LEN], a2[STORE_UUID_LEN], g1[STORE_UUID_LEN], g2[STORE_UUID_LEN];
    add_account(fx, "first", 3, a1);
    add_account(fx, "second", 1, a2);

    account_key_t k;
    assert_int_equal(accounts_get_key(fx->db, a1, &k), STORE_OK);
    unsigned char *plain = NULL;
    size_t plain_len = 0;
    assert_int_equal(crypto_open(TEST_KEY, k.sealed, k.sealed_len, k.nonce, &plain, &plain_len), 0);
    assert_string_equal((char *)plain, "vapi-key-of-first");
    crypto_secret_free(plain, plain_len);
    account_key_clear(&k);
    assert_null(k.sealed);
    assert_int_equal(accounts_get_key(fx->db, "00000000-0000-4000-8000-000000000000", &k), STORE_ERR_NOT_FOUND);
    assert_int_equal(accounts_get_key(fx->db, "nope", &k), STORE_ERR_NOT_FOUND);
    // The table holds no plaintext.
    assert_int_equal(query_int(fx->db, "SELECT count(*) FROM vapi_accounts WHERE position('vapi-key'::bytea IN api_key_enc) > 0"), 0);

    add_agent(fx, a1, "premium", 2, 5, NULL, g1);
    add_agent(fx, a2, "standard", 1, 0, "asst_own", g2);
    char g[STORE_UUID_LEN];
    assert_int_equal(agents_add(fx->db, "00000000-0000-4000-8000-000000000000", "premium", 1, NULL, 0, g),
                     STORE_ERR_NOT_FOUND);
    assert_int_equal(agents_add(fx->db, a1, "gold", 1, NULL, 0, g), STORE_ERR_INVALID);
    assert_int_equal(agents_add(fx->db, a1, "premium", -1, NULL, 0, g), STORE_ERR_INVALID);
    assert_int_equal(agents_add(fx->db, a1, "premium", 1, "", 0, g), STORE_ERR_INVALID);

    account_row_t *accounts = NULL;
    size_t n = 0;
    assert_int_equal(accounts_list(fx->db, &accounts, &n), STORE_OK);
    assert_int_equal(n, 2);
    assert_string_equal(accounts[0].id, a1);
    assert_string_equal(accounts[0].name, "first");
    assert_string_equal(accounts[0].phone_number_id, "pn_test");
    assert_int_equal(accounts[0].max_concurrent, 3);
    assert_int_equal(accounts[0].active_calls, 0);
    assert_true(accounts[0].enabled);
    assert_string_equal(accounts[0].held_until, "");
    free(accounts);

    assert_int_equal(accounts_hold(fx->db, a2, 60), STORE_OK);
    assert_int_equal(accounts_hold(fx->db, a2, 0), STORE_ERR_INVALID);
    assert_int_equal(accounts_disable(fx->db, a1), STORE_OK);
    assert_int_equal(accounts_disable(fx->db, a1), STORE_OK);
    assert_int_equal(accounts_disable(fx->db, "00000000-0000-4000-8000-000000000000"), STORE_ERR_NOT_FOUND);
    assert_int_equal(accounts_list(fx->db, &accounts, &n), STORE_OK);
    assert_false(accounts[0].enabled);
    assert_true(accounts[1].held_until[0] != '\0');
    free(accounts);

    agent_row_t *agents = NULL;
    assert_int_equal(agents_list(fx->db, &agents, &n), STORE_OK);
    assert_int_equal(n, 2);
    assert_string_equal(agents[0].id, g1);
    assert_string_equal(agents[0].assistant_id, "asst_premium");   // the plan's
    assert_false(agents[0].own_assistant);
    assert_int_equal(agents[0].priority, 5);
    assert_string_equal(agents[1].assistant_id, "asst_own");
    assert_true(agents[1].own_assistant);
    free(agents);

    unsigned char nonce[CRYPTO_NONCE_LEN] = {0};
    char id[STORE_UUID_LEN];
    assert_int_equal(accounts_add(fx->db, "", (const unsigned char *)"x", 1, nonce, "pn", 1, id), STORE_ERR_INVALID);
    assert_int_equal(accounts_add(fx->db, "x", (const unsigned char *)"x", 1, nonce, "", 1, id), STORE_ERR_INVALID);
    assert_int_equal(accounts_add(fx->db, "x", (const unsigned char *)"x", 1, nonce, "pn", -1, id), STORE_ERR_INVALID);
}

// ---- claims ---------------------------------------------------------------------------------------

static void test_claim_takes_premium_first_then_age_and_fills_the_assignment(void **state) {
    fx_t *fx = *state;
    char acct[STORE_UUID_LEN], g[STORE_UUID_LEN], own[STORE_UUID_LEN];
    add_account(fx, "main", 50, acct);
    add_agent(fx, acct, "free_trial", 10, 0, NULL, g);
    add_agent(fx, acct, "standard", 10, 0, NULL, g);
    add_agent(fx, acct, "extended", 10, 0, NULL, g);
    add_agent(fx, acct, "premium", 10, 0, "asst_own_premium", own);
    char free1[STORE_UUID_LEN], std[STORE_UUID_LEN], prem1[STORE_UUID_LEN], ext[STORE_UUID_LEN], prem2[STORE_UUID_LEN];
    make_queued(fx, "free_trial", free1);
    make_queued(fx, "standard", std);
    make_queued(fx, "premium", prem1);
    make_queued(fx, "extended", ext);
    make_queued(fx, "premium", prem2);

    dispatch_assignment_t *a = NULL;
    assert_int_equal(claim(fx, 2, &a), 2);   // the limit holds
    assert_string_equal(a[0].booking_id, prem1);
    assert_string_equal(a[1].booking_id, prem2);
    dispatch_assignment_t p = a[0];
    dispatch_assignments_free(&a, 2);
    assert_null(a);
    assert_string_equal(p.plan, "premium");
    assert_string_equal(p.agent_id, own);
    assert_string_equal(p.account_id, acct);
    assert_string_equal(p.assistant_id, "asst_own_premium");
    assert_string_equal(p.phone_number_id, "pn_test");
    assert_int_equal(p.max_duration_s, 1800);
    assert_int_equal(p.attempt, 0);
    assert_int_equal(p.max_retries, 3);
    assert_int_equal(p.claim, 1);
    assert_string_equal(p.queue_status, "dialing");
    assert_string_equal(p.vapi_call_id, "");
    assert_string_equal(p.lease_owner, "test-owner");
    assert_true(p.dial_started_ms > 1700000000000LL);
    assert_true(strstr(p.phone, "+1666") == p.phone);
    assert_string_equal(p.event.status, "initiating");
    assert_int_equal(p.event.seq, 4);   // pending, confirmed, queued, initiating
    assert_int_equal(p.agent_active, 1);
    assert_int_equal(p.account_active, 1);
    assert_query_str(fx->db, "dialing", "SELECT status FROM call_queue WHERE booking_id = '%s'", prem1);
    assert_query_str(fx->db, "test-owner", "SELECT lease_owner FROM call_queue WHERE booking_id = '%s'", prem1);
    assert_history(fx, prem1, "pending>confirmed>queued>initiating");

    assert_int_equal(claim(fx, 10, &a), 3);
    assert_string_equal(a[0].booking_id, ext);
    assert_string_equal(a[1].booking_id, std);
    assert_string_equal(a[2].booking_id, free1);
    assert_string_equal(a[2].assistant_id, "asst_free_trial");
    assert_int_equal(a[2].max_duration_s, 120);
    assert_int_equal(a[2].event.seq, 2);
    assert_int_equal(a[2].account_active, 5);
    dispatch_assignments_free(&a, 3);
    assert_int_equal(claim_count(fx, 10), 0);
    assert_int_equal(account_active(fx, acct), 5);
    assert_capacity_consistent(fx);

    // dispatch_load gives the same assignment back.
    dispatch_assignment_t l;
    assert_int_equal(dispatch_load(fx->db, prem1, &l), STORE_OK);
    assert_string_equal(l.agent_id, own);
    assert_string_equal(l.assistant_id, "asst_own_premium");
    assert_string_equal(l.phone, p.phone);
    assert_int_equal(l.claim, 1);
    assert_string_equal(l.queue_status, "dialing");
    dispatch_assignment_clear(&l);
    assert_int_equal(l.phone[0], 0);
    assert_int_equal(dispatch_load(fx->db, "00000000-0000-4000-8000-000000000000", &l), STORE_ERR_NOT_FOUND);

    assert_int_equal(dispatch_claim(fx->db, "", 60, 1, &a, &(size_t){0}), STORE_ERR_INVALID);
    assert_int_equal(dispatch_claim(fx->db, "o", 0, 1, &a, &(size_t){0}), STORE_ERR_INVALID);
    assert_int_equal(dispatch_claim(fx->db, "o", 60, 0, &a, &(size_t){0}), STORE_ERR_INVALID);
}

static void test_scheduled_for_is_respected(void **state) {
    fx_t *fx = *state;
    char acct[STORE_UUID_LEN], g[STORE_UUID_LEN], later[STORE_UUID_LEN], now_id[STORE_UUID_LEN];
    add_account(fx, "main", 5, acct);
    add_agent(fx, acct, "free_trial", 5, 0, NULL, g);
    char when[40];
    time_t t = time(NULL) + 3600;
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", gmtime(&t));
    make_queued_at(fx, "free_trial", 3, when, later);
    make_queued(fx, "free_trial", now_id);
    dispatch_assignment_t *a = NULL;
    assert_int_equal(claim(fx, 10, &a), 1);
    assert_string_equal(a[0].booking_id, now_id);
    dispatch_assignments_free(&a, 1);
    assert_int_equal(claim_count(fx, 10), 0);
    assert_booking_status(fx, later, "queued");
    exec_ok(fx->db, "UPDATE call_queue SET next_attempt_at = now() - interval '1 second' WHERE booking_id = '%s'", later);
    assert_int_equal(claim(fx, 10, &a), 1);
    assert_string_equal(a[0].booking_id, later);
    dispatch_assignments_free(&a, 1);
}

static void test_no_agent_with_room_leaves_the_call_queued(void **state) {
    fx_t *fx = *state;
    char acct[STORE_UUID_LEN], g[STORE_UUID_LEN], off[STORE_UUID_LEN], prem[STORE_UUID_LEN], std1[STORE_UUID_LEN],
        std2[STORE_UUID_LEN], std3[STORE_UUID_LEN], ft[STORE_UUID_LEN];
    add_account(fx, "main", 10, acct);
    make_queued(fx, "premium", prem);
    make_queued(fx, "standard", std1);
    make_queued(fx, "standard", std2);
    make_queued(fx, "standard", std3);
    make_queued(fx, "free_trial", ft);
    // No agent at all; then agents that cannot be used: disabled, no room, no assistant anywhere.
    assert_int_equal(claim_count(fx, 10), 0);
    add_agent(fx, acct, "premium", 5, 0, NULL, off);
    exec_ok(fx->db, "UPDATE vapi_agents SET enabled = false WHERE id = '%s'", off);
    add_agent(fx, acct, "premium", 0, 0, NULL, g);
    exec_ok(fx->db, "UPDATE plans SET vapi_assistant_id = NULL WHERE key = 'free_trial'");
    add_agent(fx, acct, "free_trial", 5, 0, NULL, g);
    assert_int_equal(claim_count(fx, 10), 0);
    assert_booking_status(fx, prem, "queued");
    assert_query_str(fx->db, "queued", "SELECT status FROM call_queue WHERE booking_id = '%s'", prem);

    // One standard agent with room for one: the first standard row gets it, the others of its
    // plan wait, and a plan further down the order is still served in the same claim.
    add_agent(fx, acct, "standard", 1, 0, NULL, g);
    add_agent(fx, acct, "free_trial", 1, 0, "asst_own", g);
    dispatch_assignment_t *a = NULL;
    assert_int_equal(claim(fx, 10, &a), 2);
    assert_string_equal(a[0].booking_id, std1);
    assert_string_equal(a[1].booking_id, ft);
    assert_string_equal(a[1].agent_id, g);
    dispatch_assignments_free(&a, 2);
    assert_booking_status(fx, std2, "queued");
    assert_booking_status(fx, std3, "queued");
    assert_booking_status(fx, prem, "queued");
    assert_capacity_consistent(fx);
}

static void test_held_or_disabled_accounts_are_skipped(void **state) {
    fx_t *fx = *state;
    char a1[STORE_UUID_LEN], a2[STORE_UUID_LEN], g1[STORE_UUID_LEN], g2[STORE_UUID_LEN], b[STORE_UUID_LEN];
    add_account(fx, "one", 5, a1);
    add_account(fx, "two", 1, a2);
    add_agent(fx, a1, "free_trial", 5, 10, NULL, g1);   // preferred: higher priority
    add_agent(fx, a2, "free_trial", 5, 0, NULL, g2);
    for (int i = 0; i < 4; i++) make_queued(fx, "free_trial", b);
    assert_int_equal(accounts_hold(fx->db, a1, 300), STORE_OK);
    dispatch_assignment_t *a = NULL;
    assert_int_equal(claim(fx, 10, &a), 1);   // account two has room for one
    assert_string_equal(a[0].account_id, a2);
    dispatch_assignments_free(&a, 1);
    assert_int_equal(claim_count(fx, 10), 0);
    // The hold passes.
    exec_ok(fx->db, "UPDATE vapi_accounts SET held_until = now() - interval '1 second' WHERE id = '%s'", a1);
    assert_int_equal(claim(fx, 1, &a), 1);
    assert_string_equal(a[0].account_id, a1);
    dispatch_assignments_free(&a, 1);
    assert_int_equal(accounts_disable(fx->db, a1), STORE_OK);
    assert_int_equal(claim_count(fx, 10), 0);
    assert_int_equal(query_int(fx->db, "SELECT count(*) FROM call_queue WHERE status = 'queued'"), 2);
    assert_capacity_consistent(fx);
}

static void test_agent_priority_first_then_least_loaded(void **state) {
    fx_t *fx = *state;
    char a1[STORE_UUID_LEN], a2[STORE_UUID_LEN], hi[STORE_UUID_LEN], lo1[STORE_UUID_LEN], lo2[STORE_UUID_LEN],
        b[STORE_UUID_LEN];
    add_account(fx, "one", 10, a1);
    add_account(fx, "two", 10, a2);
    add_agent(fx, a1, "standard", 2, 9, NULL, hi);
    add_agent(fx, a1, "standard", 5, 1, NULL, lo1);
    add_agent(fx, a2, "standard", 5, 1, NULL, lo2);
    for (int i = 0; i < 6; i++) make_queued(fx, "standard", b);
    dispatch_assignment_t *a = NULL;
    assert_int_equal(claim(fx, 6, &a), 6);
    assert_string_equal(a[0].agent_id, hi);
    assert_string_equal(a[1].agent_id, hi);
    // hi is full (account one now has 2 calls): lo1 and lo2 tie on their own load, lo2's account is
    // less loaded; then they alternate.
    assert_string_equal(a[2].agent_id, lo2);
    assert_string_equal(a[3].agent_id, lo1);
    assert_string_equal(a[4].agent_id, lo2);
    assert_string_equal(a[5].agent_id, lo1);
    assert_int_equal(a[5].agent_active, 2);
    assert_int_equal(a[5].account_active, 4);
    dispatch_assignments_free(&a, 6);
    assert_int_equal(agent_active(fx, hi), 2);
    assert_int_equal(account_active(fx, a2), 2);
    assert_capacity_consistent(fx);
}

// ---- concurrency ----------------------------------------------------------------------------------

typedef struct {
    const char *agents[4];
    int agent_max[4];
    const char *accounts[2];
    int account_max[2];
    int violations;     // samples that saw more tries in progress than a limit allows
    int samples;
} limits_t;

static int agent_index(const limits_t *l, const char *id) {
    for (int i = 0; i < 4; i++)
        if (strcmp(l->agents[i], id) == 0) return i;
    return -1;
}

static int account_index(const limits_t *l, const char *id) {
    for (int i = 0; i < 2; i++)
        if (strcmp(l->accounts[i], id) == 0) return i;
    return -1;
}

// One worker: claims, starts, settles (some as retries, without delay), again and again.
static child_result_t claim_worker(db_t *db, int index, void *arg) {
    const limits_t *lim = arg;
    child_result_t r = {0, 0, ""};
    dispatch_assignment_t held[64];
    size_t nheld = 0;
    char owner[32];
    snprintf(owner, sizeof owner, "worker-%d", index);
    for (int iter = 0; iter < 6; iter++) {
        dispatch_assignment_t *a = NULL;
        size_t n = 0;
        int rc = dispatch_claim(db, owner, 60, 3, &a, &n);
        if (rc != STORE_OK) {
            r.rc = -1;
            snprintf(r.why, sizeof r.why, "claim: %s", store_err_name(rc));
            return r;
        }
        for (size_t i = 0; i < n; i++) {
            int ag = agent_index(lim, a[i].agent_id), ac = account_index(lim, a[i].account_id);
            if (ag < 0 || ac < 0 || a[i].agent_active > lim->agent_max[ag] || a[i].account_active > lim->account_max[ac] ||
                a[i].agent_active < 1 || a[i].account_active < 1) {
                r.rc = -1;
                snprintf(r.why, sizeof r.why, "counters past a limit: agent %d account %d", a[i].agent_active,
                         a[i].account_active);
                return r;
            }
            char call[64];
            snprintf(call, sizeof call, "call-%.8s-%lld", a[i].booking_id, (long long)a[i].claim);
            dispatch_start_t s;
            rc = dispatch_started(db, a[i].booking_id, a[i].claim, call, NULL, &s);
            if (rc != STORE_OK || s.outcome != DISPATCH_STARTED) {
                r.rc = -1;
                snprintf(r.why, sizeof r.why, "started: %s (a row claimed twice?)", store_err_name(rc));
                return r;
            }
            if (nheld < 64) held[nheld++] = a[i];
        }
        dispatch_assignments_free(&a, n);
        // Settle what is held, half of it each round.
        size_t keep = nheld / 2;
        while (nheld > keep) {
            dispatch_assignment_t *x = &held[--nheld];
            char call[64];
            snprintf(call, sizeof call, "call-%.8s-%lld", x->booking_id, (long long)x->claim);
            bool retry = (x->booking_id[0] + x->attempt) % 4 == 0 && x->attempt < 2;
            dispatch_settle_t in = {.vapi_call_id = call, .outcome = retry ? DISPATCH_RETRY : DISPATCH_COMPLETED,
                                    .ended_reason = retry ? "customer-busy" : "customer-ended-call", .duration_s = 5};
            dispatch_settled_t s;
            rc = dispatch_settle(db, &in, &s);
            if (rc != STORE_OK || s.state == DISPATCH_ALREADY_SETTLED) {
                r.rc = -1;
                snprintf(r.why, sizeof r.why, "settle: %s", store_err_name(rc));
                return r;
            }
            if (s.state == DISPATCH_DONE) r.value++;
        }
    }
    while (nheld > 0) {
        dispatch_assignment_t *x = &held[--nheld];
        char call[64];
        snprintf(call, sizeof call, "call-%.8s-%lld", x->booking_id, (long long)x->claim);
        dispatch_settle_t in = {.vapi_call_id = call, .outcome = DISPATCH_COMPLETED, .duration_s = 5};
        dispatch_settled_t s;
        int rc = dispatch_settle(db, &in, &s);
        if (rc != STORE_OK || s.state != DISPATCH_DONE) {
            r.rc = -1;
            snprintf(r.why, sizeof r.why, "final settle: %s", store_err_name(rc));
            return r;
        }
        r.value++;
    }
    return r;
}

// While the workers run: no agent or account ever has more tries in progress than its limit.
static void sample_limits(fx_t *fx, void *arg) {
    limits_t *lim = arg;
    PGresult *res = db_exec(fx->db,
                            "SELECT agent_id::text, account_id::text, count(*) FROM call_queue"
                            " WHERE status IN ('dialing', 'active') GROUP BY GROUPING SETS ((agent_id), (account_id))",
                            NULL);
    if (!res) fail_msg("sample failed: %s", db_last_error(fx->db, NULL));
    for (int r = 0; r < PQntuples(res); r++) {
        int count = atoi(PQgetvalue(res, r, 2));
        if (!PQgetisnull(res, r, 0)) {
            int i = agent_index(lim, PQgetvalue(res, r, 0));
            if (i < 0 || count > lim->agent_max[i]) lim->violations++;
        } else if (!PQgetisnull(res, r, 1)) {
            int i = account_index(lim, PQgetvalue(res, r, 1));
            if (i < 0 || count > lim->account_max[i]) lim->violations++;
        }
    }
    PQclear(res);
    lim->samples++;
}

static void test_four_claimers_never_exceed_limits_with_two_accounts_and_four_agents(void **state) {
    fx_t *fx = *state;
    char acc[2][STORE_UUID_LEN], ag[4][STORE_UUID_LEN];
    add_account(fx, "a", 3, acc[0]);
    add_account(fx, "b", 2, acc[1]);
    add_agent(fx, acc[0], "free_trial", 2, 0, NULL, ag[0]);
    add_agent(fx, acc[0], "free_trial", 2, 0, NULL, ag[1]);
    add_agent(fx, acc[1], "free_trial", 1, 0, NULL, ag[2]);
    add_agent(fx, acc[1], "free_trial", 3, 0, NULL, ag[3]);
    limits_t lim = {.agents = {ag[0], ag[1], ag[2], ag[3]}, .agent_max = {2, 2, 1, 3},
                    .accounts = {acc[0], acc[1]}, .account_max = {3, 2}};
    char ids[50][STORE_UUID_LEN];
    for (int i = 0; i < 50; i++) make_queued(fx, "free_trial", ids[i]);

    int completed = 0;
    for (int round = 0; round < 40 && completed < 50; round++) {
        child_result_t res[4];
        run_concurrently(fx, 4, claim_worker, &lim, sample_limits, res);
        for (int i = 0; i < 4; i++) {
            if (res[i].rc != 0) fail_msg("worker %d: %s", i, res[i].why);
            completed += res[i].value;
        }
        // Between rounds every call was settled: nothing is in progress, all counters are back to 0.
        assert_capacity_consistent(fx);
        assert_int_equal(query_int(fx->db, "SELECT coalesce(sum(active_calls), 0) FROM vapi_agents"), 0);
        assert_int_equal(query_int(fx->db, "SELECT coalesce(sum(active_calls), 0) FROM vapi_accounts"), 0);
        assert_int_equal(query_int(fx->db, "SELECT count(*) FROM active_calls"), 0);
    }
    assert_int_equal(lim.violations, 0);
    assert_true(lim.samples > 0);
    if (getenv("SWEETY_TEST_VERBOSE")) fprintf(stderr, "samples=%d\n", lim.samples);
    assert_int_equal(completed, 50);
    assert_int_equal(query_int(fx->db, "SELECT count(*) FROM bookings WHERE status = 'completed'"), 50);
    assert_int_equal(query_int(fx->db, "SELECT count(*) FROM call_queue WHERE status = 'done'"), 50);
    // Each try started exactly one call: one call.started per claim, one settle per call.
    assert_int_equal(query_int(fx->db, "SELECT count(*) FROM call_events WHERE event_type = 'call.started'"),
                     query_int(fx->db, "SELECT sum(claim_seq) FROM call_queue"));
    assert_int_equal(query_int(fx->db, "SELECT count(*) FROM call_events WHERE event_type = 'call.settled'"),
                     query_int(fx->db, "SELECT count(*) FROM call_events WHERE event_type = 'call.started'"));
    // Histories never skip a step: every initiating follows a queued.
    assert_int_equal(query_int(fx->db,
                               "SELECT count(*) FROM booking_events e JOIN booking_events p"
                               " ON p.booking_id = e.booking_id AND p.seq = e.seq - 1"
                               " WHERE e.status = 'initiating' AND p.status <> 'queued'"),
                     0);
}

// ---- settle ---------------------------------------------------------------------------------------

static void test_settle_completes_once_and_again_changes_nothing(void **state) {
    fx_t *fx = *state;
    char acct[STORE_UUID_LEN], g[STORE_UUID_LEN], b[STORE_UUID_LEN];
    add_account(fx, "main", 2, acct);
    add_agent(fx, acct, "standard", 2, 0, NULL, g);
    make_queued(fx, "standard", b);
    dispatch_assignment_t a = claim_one(fx);
    char call[64];
    start(fx, &a, call);
    assert_query_str(fx->db, "active", "SELECT status FROM call_queue WHERE booking_id = '%s'", b);
    assert_query_str(fx->db, call, "SELECT vapi_call_id FROM active_calls WHERE booking_id = '%s'", b);
    assert_query_str(fx->db, "https://control.example/x", "SELECT control_url FROM active_calls WHERE booking_id = '%s'", b);
    assert_query_str(fx->db, "600", "SELECT max_duration_s FROM active_calls WHERE booking_id = '%s'", b);
    assert_query_str(fx->db, "", "SELECT lease_owner FROM call_queue WHERE booking_id = '%s'", b);
    // Starting again with the same id changes nothing.
    dispatch_start_t st;
    assert_int_equal(dispatch_started(fx->db, b, a.claim, call, NULL, &st), STORE_OK);
    assert_int_equal(st.outcome, DISPATCH_ALREADY_STARTED);
    assert_int_equal(dispatch_started(fx->db, b, a.claim, "another-call", NULL, &st), STORE_ERR_CONFLICT);

    dispatch_calling_t c;
    assert_int_equal(dispatch_calling(fx->db, call, NULL, &c), STORE_OK);
    assert_string_equal(c.booking_id, b);
    assert_string_equal(c.event.status, "calling");
    assert_int_equal(query_int(fx->db, "SELECT count(*) FROM active_calls WHERE calling_at IS NOT NULL"), 1);
    assert_int_equal(dispatch_calling(fx->db, call, NULL, &c), STORE_OK);
    assert_int_equal(c.event.seq, 0);   // only the first ringing moves the booking
    assert_int_equal(dispatch_touch(fx->db, call), STORE_OK);
    assert_int_equal(dispatch_calling(fx->db, "unknown-call", NULL, &c), STORE_ERR_NOT_FOUND);
    assert_int_equal(dispatch_touch(fx->db, "unknown-call"), STORE_ERR_NOT_FOUND);

    dispatch_settled_t s = settle_call(fx, call, DISPATCH_COMPLETED, 0);
    assert_int_equal(s.state, DISPATCH_DONE);
    assert_string_equal(dispatch_state_name(s.state), "completed");
    assert_string_equal(s.booking_id, b);
    assert_string_equal(s.vapi_call_id, call);
    assert_string_equal(s.agent_id, g);
    assert_string_equal(s.account_id, acct);
    assert_int_equal(s.agent_active, 0);
    assert_int_equal(s.account_active, 0);
    assert_string_equal(s.queue_status, "done");
    assert_string_equal(s.booking_status, "completed");
    assert_int_equal(s.nevents, 1);
    assert_string_equal(s.events[0].status, "completed");
    assert_int_equal(s.duration_s, 42);
    assert_false(s.refund_due);
    assert_history(fx, b, "pending>confirmed>queued>initiating>calling>completed");
    assert_query_str(fx->db, "42", "SELECT call_duration_s FROM bookings WHERE id = '%s'", b);
    assert_query_str(fx->db, "0.1234", "SELECT call_cost FROM bookings WHERE id = '%s'", b);
    assert_query_str(fx->db, "customer-ended-call", "SELECT ended_reason FROM bookings WHERE id = '%s'", b);
    assert_query_str(fx->db, "https://rec.example/1.wav", "SELECT recording_url FROM bookings WHERE id = '%s'", b);
    assert_query_str(fx->db, call, "SELECT vapi_call_id FROM bookings WHERE id = '%s'", b);
    assert_int_equal(query_int(fx->db, "SELECT count(*) FROM active_calls"), 0);
    assert_query_str(fx->db, "completed",
                     "SELECT details->>'outcome' FROM call_events WHERE booking_id = '%s' AND event_type = 'call.settled'", b);

    // Again, by call id: nothing changes. A ringing or a touch for the ended call is ignored.
    dispatch_settled_t again = settle_call(fx, call, DISPATCH_COMPLETED, 0);
    assert_int_equal(again.state, DISPATCH_ALREADY_SETTLED);
    assert_int_equal(again.nevents, 0);
    assert_string_equal(again.booking_id, b);
    assert_string_equal(again.booking_status, "completed");
    again = settle_call(fx, call, DISPATCH_RETRY, 0);
    assert_int_equal(again.state, DISPATCH_ALREADY_SETTLED);
    assert_int_equal(agent_active(fx, g), 0);
    assert_int_equal(account_active(fx, acct), 0);
    assert_history(fx, b, "pending>confirmed>queued>initiating>calling>completed");
    assert_int_equal(dispatch_calling(fx->db, call, NULL, &c), STORE_OK);
    assert_int_equal(c.event.seq, 0);
    assert_int_equal(query_int(fx->db, "SELECT count(*) FROM call_events WHERE event_type = 'call.settled'"), 1);

    dispatch_settle_t unknown = {.vapi_call_id = "never-placed", .outcome = DISPATCH_COMPLETED};
    assert_int_equal(dispatch_settle(fx->db, &unknown, &s), STORE_ERR_NOT_FOUND);
    dispatch_settle_t nokey = {.outcome = DISPATCH_COMPLETED};
    assert_int_equal(dispatch_settle(fx->db, &nokey, &s), STORE_ERR_INVALID);
    dispatch_settle_t bad = {.vapi_call_id = call, .outcome = 17};
    assert_int_equal(dispatch_settle(fx->db, &bad, &s), STORE_ERR_INVALID);
    assert_capacity_consistent(fx);
}

static child_result_t settle_worker(db_t *db, int index, void *arg) {
    const char *call = arg;
    dispatch_settle_t in = {.vapi_call_id = call, .outcome = DISPATCH_COMPLETED, .duration_s = 9};
    dispatch_settled_t s;
    int rc = dispatch_settle(db, &in, &s);
    child_result_t r = {rc, rc == STORE_OK && s.state == DISPATCH_DONE ? 1 : 0, ""};
    return r;
}

static void test_ten_simultaneous_ends_release_once(void **state) {
    fx_t *fx = *state;
    char acct[STORE_UUID_LEN], g[STORE_UUID_LEN], b[STORE_UUID_LEN];
    add_account(fx, "main", 1, acct);
    add_agent(fx, acct, "free_trial", 1, 0, NULL, g);
    make_queued(fx, "free_trial", b);
    dispatch_assignment_t a = claim_one(fx);
    char call[64];
    start(fx, &a, call);
    child_result_t res[10];
    run_concurrently(fx, 10, settle_worker, call, NULL, res);
    int released = 0;
    for (int i = 0; i < 10; i++) {
        assert_int_equal(res[i].rc, STORE_OK);
        released += res[i].value;
    }
    assert_int_equal(released, 1);
    assert_int_equal(agent_active(fx, g), 0);
    assert_int_equal(account_active(fx, acct), 0);
    assert_history(fx, b, "queued>initiating>calling>completed");
    assert_capacity_consistent(fx);
}

static void test_retries_count_attempts_until_failed_and_paid_bookings_need_a_refund(void **state) {
    fx_t *fx = *state;
    char acct[STORE_UUID_LEN], g[STORE_UUID_LEN], b[STORE_UUID_LEN];
    add_account(fx, "main", 1, acct);
    add_agent(fx, acct, "extended", 1, 0, NULL, g);
    make_queued_at(fx, "extended", 2, NULL, b);   // two retries after the first call

    for (int attempt = 0; attempt <= 2; attempt++) {
        dispatch_assignment_t a = claim_one(fx);
        assert_string_equal(a.booking_id, b);
        assert_int_equal(a.attempt, attempt);
        assert_int_equal(a.claim, attempt + 1);
        char call[64];
        start(fx, &a, call);
        dispatch_settle_t in = {.vapi_call_id = call, .outcome = DISPATCH_RETRY, .ended_reason = "customer-busy",
                                .duration_s = 0, .retry_delay_s = 120};
        dispatch_settled_t s;
        assert_int_equal(dispatch_settle(fx->db, &in, &s), STORE_OK);
        assert_int_equal(agent_active(fx, g), 0);
        assert_int_equal(s.agent_active, 0);
        if (attempt < 2) {
            assert_int_equal(s.state, DISPATCH_REQUEUED);
            assert_int_equal(s.attempt, attempt + 1);
            assert_int_equal(s.retry_delay_s, 120);
            assert_string_equal(s.queue_status, "queued");
            assert_string_equal(s.booking_status, "queued");
            assert_true(s.next_attempt_at[0] != '\0');
            assert_int_equal(s.nevents, 1);
            assert_string_equal(s.events[0].status, "queued");
            assert_query_str(fx->db, "", "SELECT coalesce(agent_id::text, '') || coalesce(vapi_call_id, '') ||"
                             " coalesce(lease_owner, '') FROM call_queue WHERE booking_id = '%s'", b);
            assert_query_str(fx->db, "customer-busy", "SELECT last_error FROM call_queue WHERE booking_id = '%s'", b);
            // Not before its time.
            assert_int_equal(claim_count(fx, 5), 0);
            exec_ok(fx->db, "UPDATE call_queue SET next_attempt_at = now() WHERE booking_id = '%s'", b);
        } else {
            assert_int_equal(s.state, DISPATCH_FAILED);
            assert_int_equal(s.attempt, 2);
            assert_string_equal(s.queue_status, "failed");
            assert_string_equal(s.booking_status, "failed");
            assert_true(s.refund_due);
        }
    }
    assert_history(fx, b,
                   "pending>confirmed>queued>initiating>queued>initiating>queued>initiating>failed");
    assert_int_equal(claim_count(fx, 5), 0);
    // The payments actor's refund sweep finds it.
    payment_refund_t *due = NULL;
    size_t n = 0;
    assert_int_equal(payments_refunds_due(fx->db, 10, &due, &n), STORE_OK);
    assert_int_equal(n, 1);
    assert_string_equal(due[0].booking_id, b);
    free(due);
    assert_capacity_consistent(fx);
}

static void test_fail_gives_up_at_once(void **state) {
    fx_t *fx = *state;
    char acct[STORE_UUID_LEN], g[STORE_UUID_LEN], b[STORE_UUID_LEN];
    add_account(fx, "main", 1, acct);
    add_agent(fx, acct, "free_trial", 1, 0, NULL, g);
    make_queued(fx, "free_trial", b);
    dispatch_assignment_t a = claim_one(fx);
    dispatch_settle_t in = {.booking_id = b, .claim = a.claim, .outcome = DISPATCH_FAIL, .ended_reason = "call-rejected"};
    dispatch_settled_t s;
    assert_int_equal(dispatch_settle(fx->db, &in, &s), STORE_OK);
    assert_int_equal(s.state, DISPATCH_FAILED);
    assert_false(s.refund_due);   // a free trial
    assert_history(fx, b, "queued>initiating>failed");
    assert_capacity_consistent(fx);
}

static void test_requeue_without_attempt_keeps_the_count_and_holds_the_account(void **state) {
    fx_t *fx = *state;
    char a1[STORE_UUID_LEN], a2[STORE_UUID_LEN], g1[STORE_UUID_LEN], g2[STORE_UUID_LEN], b[STORE_UUID_LEN];
    add_account(fx, "one", 2, a1);
    add_agent(fx, a1, "premium", 2, 0, NULL, g1);
    make_queued(fx, "premium", b);
    dispatch_assignment_t a = claim_one(fx);
    // VAPI refused the start (over concurrency): no call id. Settled by booking and claim.
    dispatch_settle_t in = {.booking_id = b, .claim = a.claim, .outcome = DISPATCH_REQUEUE_NO_ATTEMPT,
                            .ended_reason = "call.start.error-subscription-concurrency-limit-reached",
                            .duration_s = -1, .retry_delay_s = 0, .hold_account_s = 300};
    dispatch_settled_t s;
    assert_int_equal(dispatch_settle(fx->db, &in, &s), STORE_OK);
    assert_int_equal(s.state, DISPATCH_REQUEUED);
    assert_int_equal(s.attempt, 0);
    assert_true(s.account_held);
    assert_int_equal(s.account_active, 0);
    assert_string_equal(s.booking_status, "queued");
    assert_query_str(fx->db, "0", "SELECT attempt FROM call_queue WHERE booking_id = '%s'", b);
    assert_int_equal(query_int(fx->db, "SELECT count(*) FROM vapi_accounts WHERE held_until > now() + interval '200 s'"), 1);
    assert_query_str(fx->db, "call.start.error-subscription-concurrency-limit-reached",
                     "SELECT hold_reason FROM vapi_accounts WHERE id = '%s'", a1);
    // The same report again (same claim) changes nothing.
    assert_int_equal(dispatch_settle(fx->db, &in, &s), STORE_OK);
    assert_int_equal(s.state, DISPATCH_ALREADY_SETTLED);
    // The held account takes nothing; another one does.
    assert_int_equal(claim_count(fx, 5), 0);
    add_account(fx, "two", 1, a2);
    add_agent(fx, a2, "premium", 1, 0, NULL, g2);
    dispatch_assignment_t again = claim_one(fx);
    assert_string_equal(again.account_id, a2);
    assert_int_equal(again.attempt, 0);
    assert_int_equal(again.claim, 2);
    // A late report about the first try (claim 1) does not touch the second.
    in.hold_account_s = 0;
    assert_int_equal(dispatch_settle(fx->db, &in, &s), STORE_OK);
    assert_int_equal(s.state, DISPATCH_ALREADY_SETTLED);
    assert_int_equal(account_active(fx, a2), 1);
    assert_history(fx, b, "pending>confirmed>queued>initiating>queued>initiating");
    assert_capacity_consistent(fx);
}

// ---- webhooks ahead of the dialer ----------------------------------------------------------------

static void test_events_that_arrive_before_the_start_is_recorded(void **state) {
    fx_t *fx = *state;
    char acct[STORE_UUID_LEN], g[STORE_UUID_LEN], b1[STORE_UUID_LEN], b2[STORE_UUID_LEN];
    add_account(fx, "main", 2, acct);
    add_agent(fx, acct, "standard", 2, 0, NULL, g);
    make_queued(fx, "standard", b1);
    make_queued(fx, "standard", b2);
    dispatch_assignment_t a1 = claim_one(fx), a2 = claim_one(fx);

    // Ringing before dispatch_started: found through the booking id, the call id noted.
    dispatch_calling_t c;
    assert_int_equal(dispatch_calling(fx->db, "early-call", NULL, &c), STORE_ERR_NOT_FOUND);
    assert_int_equal(dispatch_calling(fx->db, "early-call", b1, &c), STORE_OK);
    assert_string_equal(c.event.status, "calling");
    assert_query_str(fx->db, "early-call", "SELECT vapi_call_id FROM call_queue WHERE booking_id = '%s'", b1);
    // A lost dial is not requeued once a webhook named its call.
    dispatch_settled_t s;
    assert_int_equal(dispatch_requeue_lost(fx->db, b1, a1.claim, &s), STORE_OK);
    assert_int_equal(s.state, DISPATCH_ALREADY_SETTLED);
    dispatch_start_t st;
    assert_int_equal(dispatch_started(fx->db, b1, a1.claim, "early-call", NULL, &st), STORE_OK);
    assert_int_equal(st.outcome, DISPATCH_STARTED);
    assert_int_equal(query_int(fx->db, "SELECT count(*) FROM active_calls WHERE booking_id = '%s' AND calling_at IS NOT NULL", b1), 1);

    // The end before dispatch_started: settled through the booking id; the start then finds it ended.
    dispatch_settle_t in = {.vapi_call_id = "quick-call", .booking_id = b2, .outcome = DISPATCH_RETRY,
                            .ended_reason = "customer-did-not-answer", .duration_s = 0, .retry_delay_s = 30};
    assert_int_equal(dispatch_settle(fx->db, &in, &s), STORE_OK);
    assert_int_equal(s.state, DISPATCH_REQUEUED);
    assert_int_equal(s.attempt, 1);
    assert_int_equal(dispatch_started(fx->db, b2, a2.claim, "quick-call", NULL, &st), STORE_OK);
    assert_int_equal(st.outcome, DISPATCH_ALREADY_ENDED);
    assert_int_equal(query_int(fx->db, "SELECT count(*) FROM active_calls WHERE booking_id = '%s'", b2), 0);
    in.booking_id = NULL;
    assert_int_equal(dispatch_settle(fx->db, &in, &s), STORE_OK);
    assert_int_equal(s.state, DISPATCH_ALREADY_SETTLED);
    assert_int_equal(agent_active(fx, g), 1);
    assert_capacity_consistent(fx);

    // Completed straight from initiating (the ringing was lost): calling is recorded on the way.
    make_queued(fx, "standard", b2);
    dispatch_assignment_t a3 = claim_one(fx);
    char call[64];
    start(fx, &a3, call);
    s = settle_call(fx, call, DISPATCH_COMPLETED, 0);
    assert_int_equal(s.nevents, 2);
    assert_string_equal(s.events[0].status, "calling");
    assert_string_equal(s.events[1].status, "completed");
    assert_int_equal(s.events[1].seq, s.events[0].seq + 1);
}

// ---- batches (the dialer's bursts) ----------------------------------------------------------------

static bool room_of(const dispatch_room_t *r, const char *plan) {
    for (size_t i = 0; i < r->nplans; i++)
        if (strcmp(r->plans[i].plan, plan) == 0) return r->plans[i].room;
    fail_msg("plan %s not reported", plan);
    return false;
}

static void test_claim_reports_which_plans_keep_room(void **state) {
    fx_t *fx = *state;
    char acct[STORE_UUID_LEN], off[STORE_UUID_LEN], g[STORE_UUID_LEN], b[STORE_UUID_LEN];
    add_account(fx, "main", 10, acct);
    add_account(fx, "off", 10, off);
    add_agent(fx, acct, "standard", 1, 0, NULL, g);
    add_agent(fx, acct, "premium", 5, 0, NULL, g);
    add_agent(fx, off, "free_trial", 5, 0, NULL, g);
    assert_int_equal(accounts_disable(fx->db, off), STORE_OK);
    make_queued(fx, "standard", b);
    make_queued(fx, "free_trial", b);

    dispatch_room_t room;
    memset(&room, 0x5a, sizeof room);
    dispatch_assignment_t *a = NULL;
    size_t n = 0;
    assert_int_equal(dispatch_claim_ex(fx->db, "o", 60, 10, &a, &n, &room), STORE_OK);
    assert_int_equal(n, 1);   // the standard row; the free trial has no usable agent
    dispatch_assignments_free(&a, n);
    assert_int_equal(room.nplans, 4);
    assert_false(room_of(&room, "standard"));   // its one agent is full now
    assert_true(room_of(&room, "premium"));
    assert_false(room_of(&room, "free_trial"));   // its account is disabled
    assert_false(room_of(&room, "extended"));     // no agent at all

    // Nothing usable at all: no row is read, nothing changes.
    exec_ok(fx->db, "UPDATE vapi_accounts SET enabled = false");
    assert_int_equal(dispatch_claim_ex(fx->db, "o", 60, 10, &a, &n, &room), STORE_OK);
    assert_int_equal(n, 0);
    assert_null(a);
    for (size_t i = 0; i < room.nplans; i++) assert_false(room.plans[i].room);
    assert_int_equal(query_int(fx->db, "SELECT count(*) FROM call_queue WHERE status = 'queued'"), 1);
    assert_capacity_consistent(fx);
}

// One account and one standard agent (room for 10), `count` standard bookings queued and claimed.
static dispatch_assignment_t *claimed_standard(fx_t *fx, int count, char acct[STORE_UUID_LEN], char agent[STORE_UUID_LEN]) {
    add_account(fx, "main", 10, acct);
    add_agent(fx, acct, "standard", 10, 0, NULL, agent);
    for (int i = 0; i < count; i++) {
        char id[STORE_UUID_LEN];
        make_queued(fx, "standard", id);
    }
    dispatch_assignment_t *a = NULL;
    assert_int_equal(claim(fx, 10, &a), count);
    return a;
}

static void test_load_many_gives_the_outstanding_tries(void **state) {
    fx_t *fx = *state;
    char acct[STORE_UUID_LEN], g[STORE_UUID_LEN], b1[STORE_UUID_LEN], b2[STORE_UUID_LEN], b3[STORE_UUID_LEN];
    add_account(fx, "main", 10, acct);
    add_agent(fx, acct, "standard", 10, 0, NULL, g);
    make_queued(fx, "standard", b1);
    make_queued(fx, "standard", b2);
    dispatch_assignment_t *a = NULL;
    assert_int_equal(claim(fx, 10, &a), 2);
    dispatch_assignment_t first = a[0];
    dispatch_assignments_free(&a, 2);
    make_queued(fx, "standard", b3);   // queued: no try outstanding
    char call[64];
    start(fx, &first, call);           // b1 active, b2 dialing

    const char *ids[] = {b1, b2, b3, "not-a-uuid", "00000000-0000-4000-8000-000000000000", b2};
    dispatch_assignment_t *rows = NULL;
    size_t n = 99;
    assert_int_equal(dispatch_load_many(fx->db, ids, 6, &rows, &n), STORE_OK);
    assert_int_equal(n, 2);
    for (size_t i = 0; i < n; i++) {
        dispatch_assignment_t l;
        assert_int_equal(dispatch_load(fx->db, rows[i].booking_id, &l), STORE_OK);
        assert_memory_equal(&l, &rows[i], sizeof l);   // the same as one by one
        dispatch_assignment_clear(&l);
        bool is_b1 = strcmp(rows[i].booking_id, b1) == 0;
        assert_true(is_b1 || strcmp(rows[i].booking_id, b2) == 0);
        assert_string_equal(rows[i].queue_status, is_b1 ? "active" : "dialing");
        assert_true(strstr(rows[i].phone, "+1666") == rows[i].phone);
    }
    dispatch_assignments_free(&rows, n);
    assert_int_equal(dispatch_load_many(fx->db, ids + 3, 2, &rows, &n), STORE_OK);
    assert_int_equal(n, 0);
    assert_null(rows);
}

static void test_started_many_records_the_common_starts_and_leaves_the_rest(void **state) {
    fx_t *fx = *state;
    char acct[STORE_UUID_LEN], g[STORE_UUID_LEN];
    dispatch_assignment_t *a = claimed_standard(fx, 4, acct, g);
    // b0: common; b1: an older claim (a late answer); b2: started already (a repeat); b3: common,
    // named twice in the batch; a control URL that needs quoting in an array.
    char call2[64];
    start(fx, &a[2], call2);
    const char *url = "https://control.example/x?a=\"1\",{b}\\";
    dispatch_start_in_t in[] = {
        {.booking_id = a[0].booking_id, .claim = a[0].claim, .vapi_call_id = "many-0", .control_url = url},
        {.booking_id = a[1].booking_id, .claim = a[1].claim + 1, .vapi_call_id = "many-1"},
        {.booking_id = a[2].booking_id, .claim = a[2].claim, .vapi_call_id = call2},
        {.booking_id = a[3].booking_id, .claim = 0, .vapi_call_id = "many-3"},
        {.booking_id = a[3].booking_id, .claim = 0, .vapi_call_id = "many-3"},
    };
    dispatch_start_t out[5];
    bool recorded[5];
    assert_int_equal(dispatch_started_many(fx->db, in, 5, out, recorded), STORE_OK);
    assert_true(recorded[0]);
    assert_false(recorded[1]);
    assert_false(recorded[2]);
    assert_true(recorded[3]);
    assert_false(recorded[4]);   // once per booking: the second goes the single way
    assert_int_equal(out[0].outcome, DISPATCH_STARTED);
    assert_string_equal(out[0].agent_id, g);
    assert_string_equal(out[0].account_id, acct);
    assert_query_str(fx->db, url, "SELECT control_url FROM active_calls WHERE booking_id = '%s'", a[0].booking_id);
    assert_query_str(fx->db, "many-0", "SELECT vapi_call_id FROM bookings WHERE id = '%s'", a[0].booking_id);
    assert_query_str(fx->db, "active", "SELECT status FROM call_queue WHERE booking_id = '%s'", a[3].booking_id);
    assert_query_str(fx->db, "dialing", "SELECT status FROM call_queue WHERE booking_id = '%s'", a[1].booking_id);
    assert_int_equal(query_int(fx->db, "SELECT count(*) FROM call_events WHERE event_type = 'call.started'"
                                       " AND (details->>'claim')::int = 1 AND vapi_call_id = 'many-3'"), 1);
    // What the batch left, one by one: the repeat and the late answer are told apart.
    dispatch_start_t st;
    assert_int_equal(dispatch_started(fx->db, a[2].booking_id, a[2].claim, call2, NULL, &st), STORE_OK);
    assert_int_equal(st.outcome, DISPATCH_ALREADY_STARTED);
    assert_int_equal(dispatch_started(fx->db, a[1].booking_id, a[1].claim + 1, "many-1", NULL, &st),
                     STORE_ERR_CONFLICT);
    assert_int_equal(dispatch_started(fx->db, a[3].booking_id, 0, "many-3", NULL, &st), STORE_OK);
    assert_int_equal(st.outcome, DISPATCH_ALREADY_STARTED);
    dispatch_assignments_free(&a, 4);
    assert_int_equal(dispatch_started_many(fx->db, in, 0, out, recorded), STORE_OK);
    assert_capacity_consistent(fx);
}

static void test_calling_many_moves_each_booking_once(void **state) {
    fx_t *fx = *state;
    char acct[STORE_UUID_LEN], g[STORE_UUID_LEN];
    dispatch_assignment_t *a = claimed_standard(fx, 3, acct, g);
    char c0[64], c1[64];
    start(fx, &a[0], c0);
    start(fx, &a[1], c1);
    dispatch_calling_t one;
    assert_int_equal(dispatch_calling(fx->db, c1, NULL, &one), STORE_OK);   // b1 calling already
    // ringing and in-progress of c0 in one batch, c1 again, a call not started (a[2]), an unknown one
    const char *calls[] = {c0, c0, c1, "never-started", "unknown"};
    dispatch_calling_t out[5];
    bool found[5];
    assert_int_equal(dispatch_calling_many(fx->db, calls, 5, out, found), STORE_OK);
    assert_true(found[0] && found[1] && found[2]);
    assert_false(found[3] || found[4]);
    assert_string_equal(out[0].booking_id, a[0].booking_id);
    assert_string_equal(out[0].event.status, "calling");
    assert_true(out[0].event.at[0] != '\0');
    assert_int_equal(out[1].event.seq, 0);   // the booking moved once
    assert_int_equal(out[2].event.seq, 0);   // it was calling already
    assert_history(fx, a[0].booking_id, "pending>confirmed>queued>initiating>calling");
    assert_int_equal(query_int(fx->db, "SELECT count(*) FROM active_calls WHERE calling_at IS NOT NULL"), 2);
    assert_query_str(fx->db, "initiating", "SELECT status FROM bookings WHERE id = '%s'", a[2].booking_id);
    dispatch_assignments_free(&a, 3);
}

// ---- crash recovery ---------------------------------------------------------------------------------

static void test_expired_leases_are_handed_out_once_and_resolved(void **state) {
    fx_t *fx = *state;
    char acct[STORE_UUID_LEN], g[STORE_UUID_LEN], b[STORE_UUID_LEN];
    add_account(fx, "main", 1, acct);
    add_agent(fx, acct, "free_trial", 1, 0, NULL, g);
    make_queued(fx, "free_trial", b);
    dispatch_assignment_t *a = NULL;
    size_t n = 0;
    assert_int_equal(dispatch_claim(fx->db, "dead-dialer", 30, 1, &a, &n), STORE_OK);
    assert_int_equal(n, 1);
    int64_t claim1 = a[0].claim;
    dispatch_assignments_free(&a, n);

    dispatch_assignment_t *lost = NULL;
    assert_int_equal(dispatch_expired_leases(fx->db, "rescuer", 30, 10, &lost, &n), STORE_OK);
    assert_int_equal(n, 0);   // not expired yet
    exec_ok(fx->db, "UPDATE call_queue SET lease_until = now() - interval '1 second' WHERE booking_id = '%s'", b);
    assert_int_equal(dispatch_expired_leases(fx->db, "rescuer", 30, 10, &lost, &n), STORE_OK);
    assert_int_equal(n, 1);
    assert_string_equal(lost[0].booking_id, b);
    assert_string_equal(lost[0].lease_owner, "dead-dialer");
    assert_int_equal(lost[0].claim, claim1);
    assert_string_equal(lost[0].account_id, acct);
    assert_string_equal(lost[0].phone_number_id, "pn_test");
    assert_string_equal(lost[0].queue_status, "dialing");
    assert_true(lost[0].dial_started_ms > 0);
    dispatch_assignments_free(&lost, n);
    assert_query_str(fx->db, "rescuer", "SELECT lease_owner FROM call_queue WHERE booking_id = '%s'", b);
    // Re-leased: a second rescuer does not get it.
    assert_int_equal(dispatch_expired_leases(fx->db, "other", 30, 10, &lost, &n), STORE_OK);
    assert_int_equal(n, 0);

    // Looked up, no call: released and queued again without counting an attempt.
    dispatch_settled_t s;
    assert_int_equal(dispatch_requeue_lost(fx->db, b, claim1, &s), STORE_OK);
    assert_int_equal(s.state, DISPATCH_REQUEUED);
    assert_int_equal(s.attempt, 0);
    assert_int_equal(s.agent_active, 0);
    assert_string_equal(s.booking_status, "queued");
    assert_int_equal(dispatch_requeue_lost(fx->db, b, claim1, &s), STORE_OK);
    assert_int_equal(s.state, DISPATCH_ALREADY_SETTLED);

    // Claimed again, lost again, and this time the lookup finds the call: adopted.
    dispatch_assignment_t second = claim_one(fx);
    assert_int_equal(second.claim, claim1 + 1);
    exec_ok(fx->db, "UPDATE call_queue SET lease_until = now() - interval '1 second' WHERE booking_id = '%s'", b);
    assert_int_equal(dispatch_expired_leases(fx->db, "rescuer", 30, 10, &lost, &n), STORE_OK);
    assert_int_equal(n, 1);
    dispatch_assignments_free(&lost, n);
    // A stale answer for the first try does nothing.
    assert_int_equal(dispatch_requeue_lost(fx->db, b, claim1, &s), STORE_OK);
    assert_int_equal(s.state, DISPATCH_ALREADY_SETTLED);
    dispatch_start_t st;
    assert_int_equal(dispatch_started(fx->db, b, claim1, "found-call", NULL, &st), STORE_ERR_CONFLICT);
    assert_int_equal(dispatch_started(fx->db, b, second.claim, "found-call", NULL, &st), STORE_OK);
    assert_int_equal(st.outcome, DISPATCH_STARTED);
    assert_int_equal(dispatch_requeue_lost(fx->db, b, 0, &s), STORE_OK);   // active now: not lost
    assert_int_equal(s.state, DISPATCH_ALREADY_SETTLED);
    assert_int_equal(dispatch_expired_leases(fx->db, "rescuer", 30, 10, &lost, &n), STORE_OK);
    assert_int_equal(n, 0);
    dispatch_assignment_t loaded;
    assert_int_equal(dispatch_load(fx->db, b, &loaded), STORE_OK);
    assert_string_equal(loaded.queue_status, "active");
    assert_string_equal(loaded.vapi_call_id, "found-call");
    assert_int_equal(dispatch_requeue_lost(fx->db, "00000000-0000-4000-8000-000000000000", 0, &s), STORE_ERR_NOT_FOUND);
    assert_history(fx, b, "queued>initiating>queued>initiating");
    assert_capacity_consistent(fx);
}

// ---- the duration monitor ---------------------------------------------------------------------------

static void test_overdue_and_quiet_calls_are_found_and_taken_in_turn(void **state) {
    fx_t *fx = *state;
    char acct[STORE_UUID_LEN], g[STORE_UUID_LEN], b1[STORE_UUID_LEN], b2[STORE_UUID_LEN];
    add_account(fx, "main", 5, acct);
    add_agent(fx, acct, "free_trial", 5, 0, NULL, g);
    make_queued(fx, "free_trial", b1);
    make_queued(fx, "free_trial", b2);
    dispatch_assignment_t a1 = claim_one(fx), a2 = claim_one(fx);
    char c1[64], c2[64];
    start(fx, &a1, c1);
    start(fx, &a2, c2);
    dispatch_calling_t c;
    assert_int_equal(dispatch_calling(fx->db, c1, NULL, &c), STORE_OK);

    dispatch_overdue_t *over = NULL;
    size_t n = 0;
    assert_int_equal(dispatch_overdue(fx->db, 15, 10, &over, &n), STORE_OK);
    assert_int_equal(n, 0);
    // c1 has been calling for the plan's 120 s plus 15 s grace plus a little; c2 never rang.
    exec_ok(fx->db, "UPDATE active_calls SET calling_at = now() - interval '140 seconds' WHERE vapi_call_id = '%s'", c1);
    exec_ok(fx->db, "UPDATE active_calls SET started_at = now() - interval '1 hour' WHERE vapi_call_id = '%s'", c2);
    assert_int_equal(dispatch_overdue(fx->db, 15, 10, &over, &n), STORE_OK);
    assert_int_equal(n, 1);
    assert_string_equal(over[0].booking_id, b1);
    assert_string_equal(over[0].vapi_call_id, c1);
    assert_string_equal(over[0].control_url, "https://control.example/x");
    assert_string_equal(over[0].account_id, acct);
    assert_int_equal(over[0].max_duration_s, 120);
    assert_true(over[0].calling_s >= 139 && over[0].calling_s <= 150);
    free(over);
    // Taken: not returned again until DISPATCH_RECHECK_S passed.
    assert_int_equal(dispatch_overdue(fx->db, 15, 10, &over, &n), STORE_OK);
    assert_int_equal(n, 0);
    exec_ok(fx->db, "UPDATE active_calls SET end_requested_at = now() - interval '1 minute'");
    assert_int_equal(dispatch_overdue(fx->db, 15, 10, &over, &n), STORE_OK);
    assert_int_equal(n, 1);
    free(over);
    exec_ok(fx->db, "UPDATE active_calls SET end_requested_at = NULL");
    assert_int_equal(dispatch_overdue(fx->db, 30, 10, &over, &n), STORE_OK);   // more grace: not yet
    assert_int_equal(n, 0);
    // a quiet-call lookup of the same call does not hide it from the overdue sweep (0004)
    exec_ok(fx->db, "UPDATE active_calls SET monitor_at = now()");
    assert_int_equal(dispatch_overdue(fx->db, 15, 10, &over, &n), STORE_OK);
    assert_int_equal(n, 1);
    free(over);

    // Quiet: no event for 60 s.
    exec_ok(fx->db, "UPDATE active_calls SET monitor_at = NULL, last_event_at = now() - interval '100 seconds'");
    assert_int_equal(dispatch_touch(fx->db, c2), STORE_OK);
    dispatch_quiet_t *quiet = NULL;
    assert_int_equal(dispatch_quiet(fx->db, 60, 10, &quiet, &n), STORE_OK);
    assert_int_equal(n, 1);
    assert_string_equal(quiet[0].vapi_call_id, c1);
    assert_string_equal(quiet[0].account_id, acct);
    free(quiet);
    assert_int_equal(dispatch_quiet(fx->db, 60, 10, &quiet, &n), STORE_OK);
    assert_int_equal(n, 0);
    assert_int_equal(dispatch_quiet(fx->db, -1, 10, &quiet, &n), STORE_ERR_INVALID);
    assert_int_equal(dispatch_overdue(fx->db, 0, 0, &over, &n), STORE_ERR_INVALID);

    // The monitor ends c1 and settles it; the late report fills in what it learnt.
    dispatch_settle_t in = {.vapi_call_id = c1, .outcome = DISPATCH_COMPLETED, .ended_reason = "exceeded-plan-duration",
                            .duration_s = 140};
    dispatch_settled_t s;
    assert_int_equal(dispatch_settle(fx->db, &in, &s), STORE_OK);
    assert_int_equal(s.state, DISPATCH_DONE);
    assert_int_equal(dispatch_report(fx->db, c1, 141, 250000, "max-duration", "https://rec.example/c1"), STORE_OK);
    assert_query_str(fx->db, "140", "SELECT call_duration_s FROM bookings WHERE id = '%s'", b1);
    assert_query_str(fx->db, "0.2500", "SELECT call_cost FROM bookings WHERE id = '%s'", b1);
    assert_query_str(fx->db, "exceeded-plan-duration", "SELECT ended_reason FROM bookings WHERE id = '%s'", b1);
    assert_query_str(fx->db, "https://rec.example/c1", "SELECT recording_url FROM bookings WHERE id = '%s'", b1);
    assert_int_equal(dispatch_report(fx->db, "never-placed", 1, 1, NULL, NULL), STORE_ERR_NOT_FOUND);
    assert_capacity_consistent(fx);
}

// ---- odds and ends --------------------------------------------------------------------------------

static void test_capacity_check_notices_a_wrong_counter(void **state) {
    fx_t *fx = *state;
    char acct[STORE_UUID_LEN], g[STORE_UUID_LEN], b[STORE_UUID_LEN];
    add_account(fx, "main", 2, acct);
    add_agent(fx, acct, "free_trial", 2, 0, NULL, g);
    make_queued(fx, "free_trial", b);
    dispatch_assignment_t a = claim_one(fx);
    assert_capacity_consistent(fx);
    bool ok = true;
    exec_ok(fx->db, "UPDATE vapi_agents SET active_calls = 2 WHERE id = '%s'", g);
    assert_int_equal(dispatch_capacity_check(fx->db, &ok), STORE_OK);
    assert_false(ok);
    exec_ok(fx->db, "UPDATE vapi_agents SET active_calls = 1 WHERE id = '%s'", g);
    exec_ok(fx->db, "UPDATE vapi_accounts SET active_calls = 0 WHERE id = '%s'", acct);
    assert_int_equal(dispatch_capacity_check(fx->db, &ok), STORE_OK);
    assert_false(ok);
    // A release never takes a counter below zero.
    dispatch_settle_t in = {.booking_id = b, .claim = a.claim, .outcome = DISPATCH_FAIL};
    dispatch_settled_t s;
    assert_int_equal(dispatch_settle(fx->db, &in, &s), STORE_OK);
    assert_int_equal(s.account_active, 0);
    assert_int_equal(s.agent_active, 0);
}

static void test_call_events_and_purge(void **state) {
    fx_t *fx = *state;
    char acct[STORE_UUID_LEN], g[STORE_UUID_LEN], b[STORE_UUID_LEN];
    add_account(fx, "main", 2, acct);
    add_agent(fx, acct, "free_trial", 2, 0, NULL, g);
    make_queued(fx, "free_trial", b);
    assert_int_equal(call_events_add(fx->db, b, "c-1", "status-update", "ringing", "{\"x\":1}"), STORE_OK);
    assert_int_equal(call_events_add(fx->db, b, NULL, "note", NULL, NULL), STORE_OK);
    assert_int_equal(call_events_add(fx->db, b, NULL, "note", NULL, "[1]"), STORE_ERR_INVALID);
    assert_int_equal(call_events_add(fx->db, b, NULL, "note", NULL, "{not json"), STORE_ERR_INVALID);
    assert_int_equal(call_events_add(fx->db, b, NULL, "", NULL, NULL), STORE_ERR_INVALID);
    assert_int_equal(call_events_add(fx->db, "00000000-0000-4000-8000-000000000000", NULL, "note", NULL, NULL),
                     STORE_ERR_NOT_FOUND);
    assert_int_equal(call_events_add(fx->db, "nope", NULL, "note", NULL, NULL), STORE_ERR_NOT_FOUND);
    assert_query_str(fx->db, "1", "SELECT details->>'x' FROM call_events WHERE booking_id = '%s' AND status = 'ringing'", b);

    dispatch_assignment_t a = claim_one(fx);
    char call[64];
    start(fx, &a, call);
    settle_call(fx, call, DISPATCH_COMPLETED, 0);
    int64_t deleted = -1;
    assert_int_equal(dispatch_purge_finished(fx->db, 3600, &deleted), STORE_OK);
    assert_int_equal(deleted, 0);
    // updated_at is the touch trigger's: put it back in time with the trigger off.
    exec_ok(fx->db, "ALTER TABLE call_queue DISABLE TRIGGER call_queue_touch");
    exec_ok(fx->db, "UPDATE call_queue SET updated_at = now() - interval '2 hours'");
    exec_ok(fx->db, "ALTER TABLE call_queue ENABLE TRIGGER call_queue_touch");
    assert_int_equal(dispatch_purge_finished(fx->db, 3600, &deleted), STORE_OK);
    assert_int_equal(deleted, 1);
    // The call stays known after its queue row is gone.
    dispatch_settled_t s = settle_call(fx, call, DISPATCH_COMPLETED, 0);
    assert_int_equal(s.state, DISPATCH_ALREADY_SETTLED);
    assert_string_equal(s.booking_id, b);
    assert_int_equal(dispatch_purge_finished(fx->db, -1, NULL), STORE_ERR_INVALID);
}

static void test_functions_report_a_database_that_is_down(void **state) {
    (void)state;
    db_t *db = db_new("postgresql:///nope?host=/nonexistent&port=1", &LG);
    assert_non_null(db);
    dispatch_assignment_t *a = NULL;
    size_t n = 0;
    assert_int_equal(dispatch_claim(db, "o", 30, 5, &a, &n), STORE_ERR_DB);
    dispatch_settle_t in = {.vapi_call_id = "c", .outcome = DISPATCH_COMPLETED};
    dispatch_settled_t s;
    assert_int_equal(dispatch_settle(db, &in, &s), STORE_ERR_DB);
    assert_int_equal(dispatch_started(db, "00000000-0000-4000-8000-000000000000", 0, "c", NULL, NULL), STORE_ERR_DB);
    bool ok;
    assert_int_equal(dispatch_capacity_check(db, &ok), STORE_ERR_DB);
    account_row_t *rows = NULL;
    assert_int_equal(accounts_list(db, &rows, &n), STORE_ERR_DB);
    db_destroy(&db);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_accounts_store_the_sealed_key_and_list_capacity, setup, teardown),
        cmocka_unit_test_setup_teardown(test_claim_takes_premium_first_then_age_and_fills_the_assignment, setup, teardown),
        cmocka_unit_test_setup_teardown(test_scheduled_for_is_respected, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_agent_with_room_leaves_the_call_queued, setup, teardown),
        cmocka_unit_test_setup_teardown(test_held_or_disabled_accounts_are_skipped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_agent_priority_first_then_least_loaded, setup, teardown),
        cmocka_unit_test_setup_teardown(test_four_claimers_never_exceed_limits_with_two_accounts_and_four_agents, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_settle_completes_once_and_again_changes_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ten_simultaneous_ends_release_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retries_count_attempts_until_failed_and_paid_bookings_need_a_refund, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_fail_gives_up_at_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_requeue_without_attempt_keeps_the_count_and_holds_the_account, setup, teardown),
        cmocka_unit_test_setup_teardown(test_events_that_arrive_before_the_start_is_recorded, setup, teardown),
        cmocka_unit_test_setup_teardown(test_claim_reports_which_plans_keep_room, setup, teardown),
        cmocka_unit_test_setup_teardown(test_load_many_gives_the_outstanding_tries, setup, teardown),
        cmocka_unit_test_setup_teardown(test_started_many_records_the_common_starts_and_leaves_the_rest, setup, teardown),
        cmocka_unit_test_setup_teardown(test_calling_many_moves_each_booking_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_expired_leases_are_handed_out_once_and_resolved, setup, teardown),
        cmocka_unit_test_setup_teardown(test_overdue_and_quiet_calls_are_found_and_taken_in_turn, setup, teardown),
        cmocka_unit_test_setup_teardown(test_capacity_check_notices_a_wrong_counter, setup, teardown),
        cmocka_unit_test_setup_teardown(test_call_events_and_purge, setup, teardown),
        cmocka_unit_test_setup_teardown(test_functions_report_a_database_that_is_down, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
