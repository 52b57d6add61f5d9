// storage/payments.c — webhook application, refunds and lookups on payments (see payments.h).
//
// One webhook, one transaction:
//   1. INSERT INTO webhook_events ... ON CONFLICT DO NOTHING: no row back means the event id was
//      recorded before (or is being recorded by a concurrent delivery, which we then wait for);
//      roll back and report PAYMENT_DUPLICATE.
//   2. Find the payment the event names and lock its booking and payment rows (FOR UPDATE OF b, p).
//      Different events for one booking are thereby applied one after the other, each seeing the
//      state the previous one committed.
//   3. Decide from the booking's status (the table in payments.h), change the payment, move the
//      booking through the schema's trigger (which refuses any backward move: a bug here would
//      abort the transaction rather than corrupt a booking), insert the call_queue row.
//   4. Store the outcome and the booking on the webhook_events row, commit.
#include "storage/payments.h"

#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "storage/store_sql.h"

typedef enum { EV_PAID, EV_FAILED, EV_EXPIRED, EV_INFO } ev_kind_t;

const char *payment_outcome_metric(payment_outcome_t outcome) {
    switch (outcome) {
    case PAYMENT_APPLIED:
    case PAYMENT_REFUND_NEEDED: return "applied";
    case PAYMENT_DUPLICATE: return "duplicate";
    case PAYMENT_ALREADY_APPLIED:
    case PAYMENT_RECORDED: return "ignored";
    case PAYMENT_UNKNOWN_TARGET: return "unknown_target";
    }
    return "ignored";
}

const char *payment_outcome_name(payment_outcome_t outcome) {
    switch (outcome) {
    case PAYMENT_APPLIED: return "applied";
    case PAYMENT_DUPLICATE: return "duplicate";
    case PAYMENT_ALREADY_APPLIED: return "already_applied";
    case PAYMENT_REFUND_NEEDED: return "refund_needed";
    case PAYMENT_RECORDED: return "recorded";
    case PAYMENT_UNKNOWN_TARGET: return "unknown_target";
    }
    return "unknown";
}

// What webhook_events.outcome records for each outcome.
static const char *stored_outcome(payment_outcome_t outcome) {
    const char *m = payment_outcome_metric(outcome);
    return strcmp(m, "duplicate") == 0 ? "ignored" : m;
}

static bool is_provider(const char *p) {
    return p && (strcmp(p, "stripe") == 0 || strcmp(p, "cryptomus") == 0);
}

static bool status_in(const char *status, const char *const *list, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (strcmp(status, list[i]) == 0) return true;
    return false;
}

static bool booking_unpaid(const char *status) {
    return strcmp(status, "pending") == 0 || strcmp(status, "pending_payment") == 0;
}

static bool booking_dead(const char *status) {
    static const char *const dead[] = {"cancelled", "payment_failed", "failed"};
    return status_in(status, dead, 3);
}

// A reference the event gives, or NULL when it cannot match anything we store.
static const char *ref_or_null(const char *s) {
    return s && *s && strlen(s) < STORE_REF_MAX ? s : NULL;
}

// The row the snapshot queries return, in this column order.
#define SNAPSHOT_COLUMNS                                                                             \
    "b.id, b.status::text, p.id, p.status::text, p.provider::text, p.session_id, p.invoice_uuid,"   \
    " p.payment_intent_id, p.amount_cents, p.currency"

typedef struct {
    char booking_id[STORE_UUID_LEN];
    char booking_status[STORE_STATUS_MAX];
    char payment_id[STORE_UUID_LEN];
    char payment_status[STORE_STATUS_MAX];
    char provider[STORE_KEY_MAX];
    char session_id[STORE_REF_MAX];
    char invoice_uuid[STORE_REF_MAX];
    char payment_intent[STORE_REF_MAX];
    int64_t amount_cents;
    char currency[STORE_CURRENCY_MAX];
} snapshot_t;

static void snapshot_from_row(const PGresult *res, snapshot_t *s) {
    memset(s, 0, sizeof *s);
    store_copy(s->booking_id, sizeof s->booking_id, res, 0, 0);
    store_copy(s->booking_status, sizeof s->booking_status, res, 0, 1);
    store_copy(s->payment_id, sizeof s->payment_id, res, 0, 2);
    store_copy(s->payment_status, sizeof s->payment_status, res, 0, 3);
    store_copy(s->provider, sizeof s->provider, res, 0, 4);
    store_copy(s->session_id, sizeof s->session_id, res, 0, 5);
    store_copy(s->invoice_uuid, sizeof s->invoice_uuid, res, 0, 6);
    store_copy(s->payment_intent, sizeof s->payment_intent, res, 0, 7);
    s->amount_cents = store_int64(res, 0, 8);
    store_copy(s->currency, sizeof s->currency, res, 0, 9);
}

// Finds and locks the payment the event names. STORE_OK, STORE_ERR_NOT_FOUND or STORE_ERR_DB.
static int lock_target(db_t *db, const payment_event_t *ev, snapshot_t *s) {
    const char *booking_id = store_is_uuid(ev->booking_id) ? ev->booking_id : NULL;
    const char *params[] = {ev->provider, booking_id, ref_or_null(ev->session_id), ref_or_null(ev->invoice_uuid),
                            ref_or_null(ev->payment_intent)};
    if (!params[1] && !params[2] && !params[3] && !params[4]) return STORE_ERR_NOT_FOUND;
    PGresult *res = db_exec_prepared(
        db, "payments_lock_target",
        "SELECT " SNAPSHOT_COLUMNS " FROM payments p JOIN bookings b ON b.id = p.booking_id"
        " WHERE p.provider = $1::payment_provider"
        "   AND (p.booking_id = $2::uuid OR p.session_id = $3 OR p.invoice_uuid = $4 OR p.payment_intent_id = $5)"
        " ORDER BY (p.booking_id = $2::uuid) IS TRUE DESC, (p.session_id = $3) IS TRUE DESC,"
        "          (p.invoice_uuid = $4) IS TRUE DESC"
        " LIMIT 1 FOR UPDATE OF b, p",
        5, params, NULL);
    if (!res) return STORE_ERR_DB;
    int rc = PQntuples(res) == 1 ? STORE_OK : STORE_ERR_NOT_FOUND;
    if (rc == STORE_OK) snapshot_from_row(res, s);
    PQclear(res);
    return rc;
}

static int reload(db_t *db, const char *booking_id, snapshot_t *s) {
    const char *params[] = {booking_id};
    PGresult *res = db_exec_prepared(db, "payments_reload",
                                     "SELECT " SNAPSHOT_COLUMNS " FROM payments p JOIN bookings b ON b.id = p.booking_id"
                                     " WHERE p.booking_id = $1::uuid",
                                     1, params, NULL);
    if (!res) return STORE_ERR_DB;
    int rc = PQntuples(res) == 1 ? STORE_OK : STORE_ERR_DB;
    if (rc == STORE_OK) snapshot_from_row(res, s);
    PQclear(res);
    return rc;
}

// Sets the payment's status (NULL: unchanged) and what the event tells about it.
static int update_payment(db_t *db, const snapshot_t *s, const char *status, const payment_event_t *ev,
                          const char *error_message) {
    const char *params[] = {s->payment_id, status, ev->provider_status, ref_or_null(ev->payment_intent),
                            ref_or_null(ev->invoice_uuid), error_message};
    PGresult *res = db_exec_prepared(
        db, "payments_update_from_event",
        "UPDATE payments SET status = COALESCE($2::payment_status, status),"
        " paid_at = CASE WHEN $2 = 'paid' THEN COALESCE(paid_at, now()) ELSE paid_at END,"
        " provider_status = COALESCE(left($3, 100), provider_status),"
        " payment_intent_id = COALESCE($4, payment_intent_id),"
        " invoice_uuid = COALESCE(invoice_uuid, $5),"
        " error_message = COALESCE(left($6, 500), error_message)"
        " WHERE id = $1::uuid",
        6, params, NULL);
    if (!res) return STORE_ERR_DB;
    PQclear(res);
    return STORE_OK;
}

static int record_outcome(db_t *db, const char *event_row, payment_outcome_t outcome, const char *booking_id) {
    const char *params[] = {event_row, stored_outcome(outcome), booking_id && *booking_id ? booking_id : NULL};
    PGresult *res = db_exec_prepared(db, "payments_record_outcome",
                                     "UPDATE webhook_events SET outcome = $2::webhook_outcome, booking_id = $3::uuid"
                                     " WHERE id = $1::bigint",
                                     3, params, NULL);
    if (!res) return STORE_ERR_DB;
    PQclear(res);
    return STORE_OK;
}

// "provider reported 1400 USD, the booking costs 1500 usd", or NULL when they agree or are unknown.
static const char *amount_note(const snapshot_t *s, int64_t amount_cents, const char *currency, char *buf, size_t size) {
    bool amount_differs = amount_cents >= 0 && amount_cents != s->amount_cents;
    bool currency_differs = currency && strcasecmp(currency, s->currency) != 0;
    if (!amount_differs && !currency_differs) return NULL;
    char cur[8];
    snprintf(cur, sizeof cur, "%s", currency ? currency : "?");
    if (amount_cents >= 0)
        snprintf(buf, size, "provider reported %" PRId64 " %s, the booking costs %" PRId64 " %s", amount_cents, cur,
                 s->amount_cents, s->currency);
    else
        snprintf(buf, size, "provider reported currency %s, the booking costs %" PRId64 " %s", cur, s->amount_cents,
                 s->currency);
    return buf;
}

// Applies one event of `kind` to the locked target; fills r->outcome, r->events, r->enqueued.
static int apply_to_target(db_t *db, ev_kind_t kind, const payment_event_t *ev, const snapshot_t *s,
                           int64_t amount_cents, const char *currency, int max_retries, const char *reason,
                           payment_result_t *r) {
    int rc = STORE_OK;
    const char *bs = s->booking_status;
    const char *ps = s->payment_status;
    static const char *const refund_states[] = {"refund_pending", "refunded", "refund_failed", "refund_required"};
    switch (kind) {
    case EV_PAID: {
        char note_buf[160];
        const char *note = amount_note(s, amount_cents, currency, note_buf, sizeof note_buf);
        if (booking_unpaid(bs)) {
            rc = update_payment(db, s, "paid", ev, note);
            if (rc == STORE_OK) rc = store_booking_move(db, s->booking_id, "confirmed", &r->events[r->nevents]);
            if (rc == STORE_OK) r->nevents++;
            if (rc == STORE_OK) rc = store_booking_move(db, s->booking_id, "queued", &r->events[r->nevents]);
            if (rc == STORE_OK) r->nevents++;
            if (rc == STORE_OK) rc = store_queue_insert(db, s->booking_id, max_retries, &r->enqueued);
            r->outcome = PAYMENT_APPLIED;
        } else if (booking_dead(bs)) {
            if (status_in(ps, refund_states, 4)) {
                rc = update_payment(db, s, NULL, ev, NULL);
                r->outcome = PAYMENT_ALREADY_APPLIED;
            } else {
                rc = update_payment(db, s, "paid", ev, note);
                r->outcome = PAYMENT_REFUND_NEEDED;
            }
        } else {
            // confirmed or later: paid already. Keep a payment intent we did not know yet.
            rc = update_payment(db, s, strcmp(ps, "pending") == 0 ? "paid" : NULL, ev, NULL);
            r->outcome = PAYMENT_ALREADY_APPLIED;
        }
        break;
    }
    case EV_FAILED:
    case EV_EXPIRED:
        if (booking_unpaid(bs)) {
            bool failed = kind == EV_FAILED;
            const char *pay_status = strcmp(ps, "pending") == 0 ? (failed ? "failed" : "expired") : NULL;
            rc = update_payment(db, s, pay_status, ev, failed ? reason : NULL);
            if (rc == STORE_OK)
                rc = store_booking_move(db, s->booking_id, failed ? "payment_failed" : "cancelled", &r->events[r->nevents]);
            if (rc == STORE_OK) r->nevents++;
            r->outcome = PAYMENT_APPLIED;
        } else {
            r->outcome = PAYMENT_ALREADY_APPLIED;
        }
        break;
    case EV_INFO:
        if (ref_or_null(ev->payment_intent) && !s->payment_intent[0]) rc = update_payment(db, s, NULL, ev, NULL);
        r->outcome = PAYMENT_RECORDED;
        break;
    }
    return rc;
}

static int apply_event(db_t *db, ev_kind_t kind, const payment_event_t *ev, int64_t amount_cents,
                       const char *currency, int max_retries, const char *reason, payment_result_t *out) {
    assert(db && ev && out);
    if (!is_provider(ev->provider) || !store_len_ok(ev->event_id, 255, true)) return STORE_ERR_INVALID;
    if (kind == EV_PAID && max_retries < 0) return STORE_ERR_INVALID;

    payment_result_t r;
    memset(&r, 0, sizeof r);
    if (db_begin(db) != 0) return STORE_ERR_DB;
    const char *params[] = {ev->provider, ev->event_id, ev->event_type ? ev->event_type : ""};
    char sqlstate[6];
    PGresult *res = db_exec_prepared(db, "payments_event_insert",
                                     "INSERT INTO webhook_events (provider, event_id, type)"
                                     " VALUES ($1::webhook_provider, $2, $3)"
                                     " ON CONFLICT (provider, event_id) DO NOTHING RETURNING id",
                                     3, params, sqlstate);
    if (!res) return store_abort(db, store_rc_from_sqlstate(sqlstate));
    if (PQntuples(res) == 0) {
        PQclear(res);
        db_rollback(db);
        r.outcome = PAYMENT_DUPLICATE;
        snprintf(r.provider, sizeof r.provider, "%s", ev->provider);
        *out = r;
        return STORE_OK;
    }
    char event_row[24];
    store_copy(event_row, sizeof event_row, res, 0, 0);
    PQclear(res);

    snapshot_t s;
    int rc = lock_target(db, ev, &s);
    if (rc == STORE_ERR_NOT_FOUND) {
        r.outcome = PAYMENT_UNKNOWN_TARGET;
        snprintf(r.provider, sizeof r.provider, "%s", ev->provider);
        rc = record_outcome(db, event_row, r.outcome, NULL);
        if (rc != STORE_OK) return store_abort(db, rc);
        if (db_commit(db) != 0) return STORE_ERR_DB;
        *out = r;
        return STORE_OK;
    }
    if (rc != STORE_OK) return store_abort(db, rc);

    snprintf(r.previous_status, sizeof r.previous_status, "%s", s.booking_status);
    rc = apply_to_target(db, kind, ev, &s, amount_cents, currency, max_retries, reason, &r);
    if (rc == STORE_OK) rc = record_outcome(db, event_row, r.outcome, s.booking_id);
    if (rc == STORE_OK) rc = reload(db, s.booking_id, &s);
    // A status change the schema refuses here is our bug, not the caller's: report a db error.
    if (rc != STORE_OK) return store_abort(db, STORE_ERR_DB);
    if (db_commit(db) != 0) return STORE_ERR_DB;

    snprintf(r.booking_id, sizeof r.booking_id, "%s", s.booking_id);
    snprintf(r.status, sizeof r.status, "%s", s.booking_status);
    snprintf(r.payment_status, sizeof r.payment_status, "%s", s.payment_status);
    snprintf(r.provider, sizeof r.provider, "%s", s.provider);
    snprintf(r.session_id, sizeof r.session_id, "%s", s.session_id);
    snprintf(r.invoice_uuid, sizeof r.invoice_uuid, "%s", s.invoice_uuid);
    snprintf(r.payment_intent, sizeof r.payment_intent, "%s", s.payment_intent);
    r.amount_cents = s.amount_cents;
    snprintf(r.currency, sizeof r.currency, "%s", s.currency);
    *out = r;
    return STORE_OK;
}

int payments_apply_paid(db_t *db, const payment_event_t *ev, int64_t amount_cents, const char *currency,
                        int max_retries, payment_result_t *out) {
    return apply_event(db, EV_PAID, ev, amount_cents, currency, max_retries, NULL, out);
}

int payments_apply_failed(db_t *db, const payment_event_t *ev, const char *reason, payment_result_t *out) {
    return apply_event(db, EV_FAILED, ev, -1, NULL, 0, reason, out);
}

int payments_apply_expired(db_t *db, const payment_event_t *ev, payment_result_t *out) {
    return apply_event(db, EV_EXPIRED, ev, -1, NULL, 0, NULL, out);
}

int payments_apply_info(db_t *db, const payment_event_t *ev, payment_result_t *out) {
    return apply_event(db, EV_INFO, ev, -1, NULL, 0, NULL, out);
}

// ---- refunds ---------------------------------------------------------------------------------------

#define REFUND_COLUMNS                                                                                   \
    "p.booking_id, p.provider::text, p.status::text, p.session_id, p.invoice_uuid, p.payment_intent_id," \
    " p.refund_id, p.amount_cents, p.currency"

static void refund_from_row(const PGresult *res, int r, payment_refund_t *f) {
    memset(f, 0, sizeof *f);
    store_copy(f->booking_id, sizeof f->booking_id, res, r, 0);
    store_copy(f->provider, sizeof f->provider, res, r, 1);
    store_copy(f->payment_status, sizeof f->payment_status, res, r, 2);
    store_copy(f->session_id, sizeof f->session_id, res, r, 3);
    store_copy(f->invoice_uuid, sizeof f->invoice_uuid, res, r, 4);
    store_copy(f->payment_intent, sizeof f->payment_intent, res, r, 5);
    store_copy(f->refund_id, sizeof f->refund_id, res, r, 6);
    f->amount_cents = store_int64(res, r, 7);
    store_copy(f->currency, sizeof f->currency, res, r, 8);
}

int payments_refund_begin(db_t *db, const char *booking_id, payment_refund_t *out) {
    assert(db && booking_id && out);
    if (!store_is_uuid(booking_id)) return STORE_ERR_NOT_FOUND;
    if (db_begin(db) != 0) return STORE_ERR_DB;
    const char *params[] = {booking_id};
    PGresult *res = db_exec_prepared(db, "payments_refund_lock",
                                     "SELECT " REFUND_COLUMNS " FROM payments p WHERE p.booking_id = $1::uuid FOR UPDATE",
                                     1, params, NULL);
    if (!res) return store_abort(db, STORE_ERR_DB);
    if (PQntuples(res) != 1) {
        PQclear(res);
        return store_abort(db, STORE_ERR_NOT_FOUND);
    }
    payment_refund_t f;
    refund_from_row(res, 0, &f);
    PQclear(res);
    static const char *const startable[] = {"paid", "refund_failed"};
    static const char *const begun[] = {"refund_pending", "refunded", "refund_required"};
    if (status_in(f.payment_status, begun, 3)) {
        db_rollback(db);
        *out = f;
        return STORE_OK;
    }
    if (!status_in(f.payment_status, startable, 2)) return store_abort(db, STORE_ERR_CONFLICT);
    res = db_exec_prepared(db, "payments_refund_begin",
                           "UPDATE payments SET status = 'refund_pending' WHERE booking_id = $1::uuid", 1, params, NULL);
    if (!res) return store_abort(db, STORE_ERR_DB);
    PQclear(res);
    if (db_commit(db) != 0) return STORE_ERR_DB;
    snprintf(f.payment_status, sizeof f.payment_status, "refund_pending");
    f.started = true;
    *out = f;
    return STORE_OK;
}

// 0 rows changed by a conditional UPDATE: STORE_ERR_CONFLICT when the payment exists, else NOT_FOUND.
static int conflict_or_missing(db_t *db, const char *booking_id) {
    const char *params[] = {booking_id};
    PGresult *res = db_exec_prepared(db, "payments_exists", "SELECT 1 FROM payments WHERE booking_id = $1::uuid", 1,
                                     params, NULL);
    if (!res) return STORE_ERR_DB;
    int rc = PQntuples(res) == 1 ? STORE_ERR_CONFLICT : STORE_ERR_NOT_FOUND;
    PQclear(res);
    return rc;
}

int payments_refund_result(db_t *db, const char *booking_id, const char *refund_id, const char *status) {
    assert(db && booking_id && status);
    if (!store_is_uuid(booking_id)) return STORE_ERR_NOT_FOUND;
    static const char *const results[] = {"refund_pending", "refunded", "refund_failed"};
    if (!status_in(status, results, 3) || !store_len_ok(refund_id, STORE_REF_MAX - 1, false)) return STORE_ERR_INVALID;
    const char *params[] = {booking_id, status, refund_id};
    PGresult *res = db_exec_prepared(
        db, "payments_refund_result",
        "UPDATE payments SET status = $2::payment_status, refund_id = COALESCE($3, refund_id),"
        " refunded_at = CASE WHEN $2 = 'refunded' THEN COALESCE(refunded_at, now()) ELSE refunded_at END"
        " WHERE booking_id = $1::uuid"
        "   AND (status IN ('refund_pending', 'refund_failed') OR (status = 'refunded' AND $2 = 'refunded'))"
        " RETURNING id",
        3, params, NULL);
    if (!res) return STORE_ERR_DB;
    int changed = PQntuples(res);
    PQclear(res);
    return changed == 1 ? STORE_OK : conflict_or_missing(db, booking_id);
}

int payments_mark_refund_required(db_t *db, const char *booking_id) {
    assert(db && booking_id);
    if (!store_is_uuid(booking_id)) return STORE_ERR_NOT_FOUND;
    const char *params[] = {booking_id};
    PGresult *res = db_exec_prepared(
        db, "payments_mark_refund_required",
        "UPDATE payments SET status = 'refund_required' WHERE booking_id = $1::uuid"
        "   AND status IN ('paid', 'refund_pending', 'refund_failed', 'refund_required') RETURNING id",
        1, params, NULL);
    if (!res) return STORE_ERR_DB;
    int changed = PQntuples(res);
    PQclear(res);
    return changed == 1 ? STORE_OK : conflict_or_missing(db, booking_id);
}

int payments_set_payment_intent(db_t *db, const char *booking_id, const char *payment_intent) {
    assert(db && booking_id);
    if (!store_is_uuid(booking_id)) return STORE_ERR_NOT_FOUND;
    if (!store_len_ok(payment_intent, STORE_REF_MAX - 1, true)) return STORE_ERR_INVALID;
    const char *params[] = {booking_id, payment_intent};
    PGresult *res = db_exec_prepared(db, "payments_set_payment_intent",
                                     "UPDATE payments SET payment_intent_id = COALESCE(payment_intent_id, $2)"
                                     " WHERE booking_id = $1::uuid RETURNING id",
                                     2, params, NULL);
    if (!res) return STORE_ERR_DB;
    int rc = PQntuples(res) == 1 ? STORE_OK : STORE_ERR_NOT_FOUND;
    PQclear(res);
    return rc;
}

static void refund_row(const PGresult *res, int r, void *elem) { refund_from_row(res, r, elem); }

// A refund begun (refund_pending) that the provider never acknowledged (no refund_id) and that has
// not moved for this long was lost: its request failed, or the daemon died before the answer. It
// is due again; the same Idempotency-Key makes Stripe replay a refund that did go through. Longer
// than one refund request with its retries (payments' 8 s timeout, 3 attempts).
#define REFUND_RESEND_AFTER_S "30"

int payments_refunds_due(db_t *db, int limit, payment_refund_t **out, size_t *n) {
    assert(db && out && n && limit > 0);
    char lim[16];
    snprintf(lim, sizeof lim, "%d", limit);
    const char *params[] = {lim};
    PGresult *res = db_exec_prepared(
        db, "payments_refunds_due",
        "SELECT " REFUND_COLUMNS " FROM bookings b JOIN payments p ON p.booking_id = b.id"
        " WHERE b.status IN ('cancelled', 'payment_failed', 'failed')"
        "   AND (p.status = 'paid' OR (p.status = 'refund_pending' AND p.refund_id IS NULL"
        "        AND p.updated_at < now() - interval '" REFUND_RESEND_AFTER_S " seconds'))"
        " ORDER BY b.updated_at LIMIT $1::integer",
        1, params, NULL);
    void *list = NULL;
    int rc = store_rows(res, sizeof **out, refund_row, &list, n);
    if (rc == STORE_OK) *out = list;
    return rc;
}

// ---- lookups ---------------------------------------------------------------------------------------

#define PAYMENT_COLUMNS                                                                                      \
    "id, booking_id, provider::text, status::text, amount_cents, currency, session_id, payment_intent_id,"   \
    " invoice_uuid, refund_id, provider_status, checkout_url, error_message, " SQL_RFC3339("expires_at") "," \
    " " SQL_RFC3339("paid_at") ", " SQL_RFC3339("refunded_at") ", " SQL_RFC3339("created_at") ","           \
    " " SQL_RFC3339("updated_at")

void payment_clear(payment_t *p) {
    if (!p) return;
    free(p->provider_status);
    free(p->checkout_url);
    free(p->error_message);
    memset(p, 0, sizeof *p);
}

static int payment_from_result(PGresult *res, payment_t *out) {
    if (PQntuples(res) != 1) {
        PQclear(res);
        return STORE_ERR_NOT_FOUND;
    }
    payment_t p;
    memset(&p, 0, sizeof p);
    store_copy(p.id, sizeof p.id, res, 0, 0);
    store_copy(p.booking_id, sizeof p.booking_id, res, 0, 1);
    store_copy(p.provider, sizeof p.provider, res, 0, 2);
    store_copy(p.status, sizeof p.status, res, 0, 3);
    p.amount_cents = store_int64(res, 0, 4);
    store_copy(p.currency, sizeof p.currency, res, 0, 5);
    store_copy(p.session_id, sizeof p.session_id, res, 0, 6);
    store_copy(p.payment_intent, sizeof p.payment_intent, res, 0, 7);
    store_copy(p.invoice_uuid, sizeof p.invoice_uuid, res, 0, 8);
    store_copy(p.refund_id, sizeof p.refund_id, res, 0, 9);
    bool oom = false;
    p.provider_status = store_dup(res, 0, 10, &oom);
    p.checkout_url = store_dup(res, 0, 11, &oom);
    p.error_message = store_dup(res, 0, 12, &oom);
    store_copy(p.expires_at, sizeof p.expires_at, res, 0, 13);
    store_copy(p.paid_at, sizeof p.paid_at, res, 0, 14);
    store_copy(p.refunded_at, sizeof p.refunded_at, res, 0, 15);
    store_copy(p.created_at, sizeof p.created_at, res, 0, 16);
    store_copy(p.updated_at, sizeof p.updated_at, res, 0, 17);
    PQclear(res);
    if (oom) {
        payment_clear(&p);
        return STORE_ERR_DB;
    }
    *out = p;
    return STORE_OK;
}

int payments_get(db_t *db, const char *booking_id, payment_t *out) {
    assert(db && booking_id && out);
    if (!store_is_uuid(booking_id)) return STORE_ERR_NOT_FOUND;
    const char *params[] = {booking_id};
    PGresult *res = db_exec_prepared(db, "payments_get",
                                     "SELECT " PAYMENT_COLUMNS " FROM payments WHERE booking_id = $1::uuid", 1,
                                     params, NULL);
    return res ? payment_from_result(res, out) : STORE_ERR_DB;
}

int payments_find_by_session(db_t *db, const char *provider, const char *session_id, payment_t *out) {
    assert(db && provider && session_id && out);
    if (!is_provider(provider) || !ref_or_null(session_id)) return STORE_ERR_NOT_FOUND;
    const char *params[] = {provider, session_id};
    PGresult *res = db_exec_prepared(db, "payments_find_by_session",
                                     "SELECT " PAYMENT_COLUMNS " FROM payments"
                                     " WHERE provider = $1::payment_provider AND session_id = $2",
                                     2, params, NULL);
    return res ? payment_from_result(res, out) : STORE_ERR_DB;
}

int payments_find_by_invoice(db_t *db, const char *invoice_uuid, payment_t *out) {
    assert(db && invoice_uuid && out);
    if (!ref_or_null(invoice_uuid)) return STORE_ERR_NOT_FOUND;
    const char *params[] = {invoice_uuid};
    PGresult *res = db_exec_prepared(db, "payments_find_by_invoice",
                                     "SELECT " PAYMENT_COLUMNS " FROM payments WHERE invoice_uuid = $1", 1, params,
                                     NULL);
    return res ? payment_from_result(res, out) : STORE_ERR_DB;
}

int payments_find_by_payment_intent(db_t *db, const char *payment_intent, payment_t *out) {
    assert(db && payment_intent && out);
    if (!ref_or_null(payment_intent)) return STORE_ERR_NOT_FOUND;
    const char *params[] = {payment_intent};
    // Not unique in the schema; a payment intent belongs to one session, so at most one row in practice.
    PGresult *res = db_exec_prepared(db, "payments_find_by_payment_intent",
                                     "SELECT " PAYMENT_COLUMNS " FROM payments WHERE payment_intent_id = $1"
                                     " ORDER BY created_at DESC LIMIT 1",
                                     1, params, NULL);
    return res ? payment_from_result(res, out) : STORE_ERR_DB;
}
