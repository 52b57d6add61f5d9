// storage/bookings.c — queries on bookings, users and booking_events (see bookings.h).
//
// Atomicity: every function that changes more than one row runs one transaction and locks the
// booking row first (SELECT ... FOR UPDATE OF b) before it touches the booking's payment or queue
// rows. storage/payments.c locks in the same order (booking, then payment), so the two never wait
// on each other in a cycle. Status changes are plain UPDATEs of bookings.status: the schema's
// trigger numbers them, writes booking_events, refuses illegal moves (SW001) and NOTIFYs.
//
// The free-trial rule lives here, in the database: after the user upsert (which already holds the
// user row's lock until commit) the row is read again FOR UPDATE, so simultaneous requests for one
// phone queue up on that row and each sees the last_free_trial the one before it committed. The
// check uses clock_timestamp(), not now(): a waiting transaction's now() is older than the
// winner's, which would make the elapsed time negative.
#include "storage/bookings.h"

#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "storage/store_sql.h"

#define STR_(x) #x
#define STR(x) STR_(x)

static bool is_final_or_later(const char *status) {
    static const char *const later[] = {"initiating", "calling", "completed", "failed", "payment_failed"};
    for (size_t i = 0; i < sizeof later / sizeof later[0]; i++)
        if (strcmp(status, later[i]) == 0) return true;
    return false;
}

// ---- create --------------------------------------------------------------------------------------

typedef struct {
    int64_t price_cents;
    char currency[STORE_CURRENCY_MAX];
    int duration_seconds;
    int priority;
} plan_terms_t;

static int load_plan(db_t *db, const char *plan, plan_terms_t *t) {
    const char *params[] = {plan};
    PGresult *res = db_exec_prepared(db, "bookings_plan_terms",
                                     "SELECT price_cents, currency, duration_seconds, priority FROM plans"
                                     " WHERE key::text = $1",
                                     1, params, NULL);
    if (!res) return STORE_ERR_DB;
    if (PQntuples(res) != 1) {
        PQclear(res);
        return STORE_ERR_INVALID;
    }
    t->price_cents = store_int64(res, 0, 0);
    store_copy(t->currency, sizeof t->currency, res, 0, 1);
    t->duration_seconds = atoi(PQgetvalue(res, 0, 2));
    t->priority = atoi(PQgetvalue(res, 0, 3));
    PQclear(res);
    return STORE_OK;
}

static int upsert_user(db_t *db, const booking_new_t *in, char user_id[STORE_UUID_LEN]) {
    const char *params[] = {in->phone, in->name, in->email};
    char sqlstate[6];
    PGresult *res = db_exec_prepared(db, "bookings_upsert_user",
                                     "INSERT INTO users (phone, name, email) VALUES ($1, $2, $3)"
                                     " ON CONFLICT (phone) DO UPDATE"
                                     " SET name = EXCLUDED.name, email = COALESCE(EXCLUDED.email, users.email)"
                                     " RETURNING id",
                                     3, params, sqlstate);
    if (!res) return store_rc_from_sqlstate(sqlstate);
    int rc = PQntuples(res) == 1 ? STORE_OK : STORE_ERR_DB;
    if (rc == STORE_OK) store_copy(user_id, STORE_UUID_LEN, res, 0, 0);
    PQclear(res);
    return rc;
}

// Takes the user's free trial, or returns STORE_ERR_COOLDOWN with the seconds left.
static int take_free_trial(db_t *db, const char *user_id, int *retry_after_s) {
    const char *params[] = {user_id};
    PGresult *res = db_exec_prepared(
        db, "bookings_free_trial_check",
        "SELECT CASE WHEN last_free_trial > clock_timestamp() - make_interval(secs => " STR(BOOKINGS_FREE_TRIAL_COOLDOWN_S) ")"
        " THEN GREATEST(1, LEAST(" STR(BOOKINGS_FREE_TRIAL_COOLDOWN_S) ", ceil(" STR(BOOKINGS_FREE_TRIAL_COOLDOWN_S)
        " - extract(epoch FROM clock_timestamp() - last_free_trial))))::integer END"
        " FROM users WHERE id = $1::uuid FOR UPDATE",
        1, params, NULL);
    if (!res) return STORE_ERR_DB;
    if (PQntuples(res) != 1) {
        PQclear(res);
        return STORE_ERR_DB;
    }
    if (!PQgetisnull(res, 0, 0)) {
        int left = atoi(PQgetvalue(res, 0, 0));
        PQclear(res);
        if (retry_after_s) *retry_after_s = left;
        return STORE_ERR_COOLDOWN;
    }
    PQclear(res);
    res = db_exec_prepared(db, "bookings_free_trial_take",
                           "UPDATE users SET last_free_trial = now() WHERE id = $1::uuid", 1, params, NULL);
    if (!res) return STORE_ERR_DB;
    PQclear(res);
    return STORE_OK;
}

int bookings_create(db_t *db, const booking_new_t *in, booking_created_t *out, int *retry_after_s) {
    assert(db && in && out);
    if (!in->name || !in->phone || !in->plan) return STORE_ERR_INVALID;
    bool free_trial = strcmp(in->plan, "free_trial") == 0;
    const char *method = "none";
    if (!free_trial) {
        method = in->payment_method ? in->payment_method : "stripe";
        if (strcmp(method, "stripe") != 0 && strcmp(method, "cryptomus") != 0) return STORE_ERR_INVALID;
    }

    if (db_begin(db) != 0) return STORE_ERR_DB;
    plan_terms_t plan;
    int rc = load_plan(db, in->plan, &plan);
    if (rc != STORE_OK) return store_abort(db, rc);
    booking_created_t c;
    memset(&c, 0, sizeof c);
    rc = upsert_user(db, in, c.user_id);
    if (rc != STORE_OK) return store_abort(db, rc);
    if (free_trial) {
        int left = 0;
        rc = take_free_trial(db, c.user_id, &left);
        if (rc != STORE_OK) {
            db_rollback(db);
            if (rc == STORE_ERR_COOLDOWN && retry_after_s) *retry_after_s = left;
            return rc;
        }
    }

    const char *params[] = {c.user_id, in->plan, free_trial ? "queued" : "pending", method, in->message,
                            in->scheduled_for};
    char sqlstate[6];
    PGresult *res = db_exec_prepared(
        db, "bookings_insert",
        "INSERT INTO bookings (user_id, plan, status, payment_method, message, scheduled_for)"
        " VALUES ($1::uuid, $2::plan_key, $3::booking_status, $4::payment_method, $5, $6::timestamptz)"
        " RETURNING id, status::text, status_seq, " SQL_RFC3339("created_at"),
        6, params, sqlstate);
    if (!res) return store_abort(db, store_rc_from_sqlstate(sqlstate));
    if (PQntuples(res) != 1) {
        PQclear(res);
        return store_abort(db, STORE_ERR_DB);
    }
    store_copy(c.id, sizeof c.id, res, 0, 0);
    store_copy(c.status, sizeof c.status, res, 0, 1);
    c.seq = atoi(PQgetvalue(res, 0, 2));
    store_copy(c.created_at, sizeof c.created_at, res, 0, 3);
    PQclear(res);

    if (free_trial) {
        bool inserted = false;
        rc = store_queue_insert(db, c.id, in->max_retries, &inserted);
        if (rc != STORE_OK) return store_abort(db, rc);
    } else {
        char amount[24];
        snprintf(amount, sizeof amount, "%" PRId64, plan.price_cents);
        const char *pp[] = {c.id, method, amount, plan.currency};
        res = db_exec_prepared(db, "bookings_insert_payment",
                               "INSERT INTO payments (booking_id, provider, amount_cents, currency)"
                               " VALUES ($1::uuid, $2::payment_provider, $3::integer, $4)",
                               4, pp, sqlstate);
        if (!res) return store_abort(db, store_rc_from_sqlstate(sqlstate));
        PQclear(res);
    }
    if (db_commit(db) != 0) return STORE_ERR_DB;

    snprintf(c.plan, sizeof c.plan, "%s", in->plan);
    c.price_cents = plan.price_cents;
    snprintf(c.currency, sizeof c.currency, "%s", plan.currency);
    c.duration_seconds = plan.duration_seconds;
    snprintf(c.payment_method, sizeof c.payment_method, "%s", method);
    *out = c;
    return STORE_OK;
}

// ---- checkout ------------------------------------------------------------------------------------

// Locks the booking and its payment. *st, *provider, *session_id receive their values ("" when
// the booking has no payment). STORE_OK or STORE_ERR_NOT_FOUND / STORE_ERR_DB.
static int lock_booking_payment(db_t *db, const char *booking_id, char st[STORE_STATUS_MAX],
                                char provider[STORE_KEY_MAX], char session_id[STORE_REF_MAX], bool *has_payment) {
    const char *params[] = {booking_id};
    PGresult *res = db_exec_prepared(db, "bookings_lock_with_payment",
                                     "SELECT b.status::text, p.provider::text, p.session_id, p.id IS NOT NULL"
                                     " FROM bookings b LEFT JOIN payments p ON p.booking_id = b.id"
                                     " WHERE b.id = $1::uuid FOR UPDATE OF b",
                                     1, params, NULL);
    if (!res) return STORE_ERR_DB;
    if (PQntuples(res) != 1) {
        PQclear(res);
        return STORE_ERR_NOT_FOUND;
    }
    store_copy(st, STORE_STATUS_MAX, res, 0, 0);
    store_copy(provider, STORE_KEY_MAX, res, 0, 1);
    store_copy(session_id, STORE_REF_MAX, res, 0, 2);
    *has_payment = strcmp(PQgetvalue(res, 0, 3), "t") == 0;
    PQclear(res);
    return STORE_OK;
}

int bookings_checkout_created(db_t *db, const char *booking_id, const booking_checkout_t *co, booking_event_t *ev) {
    assert(db && booking_id && co && ev);
    if (!store_is_uuid(booking_id)) return STORE_ERR_NOT_FOUND;
    if (!co->provider || !store_len_ok(co->session_id, STORE_REF_MAX - 1, true) ||
        !store_len_ok(co->invoice_uuid, STORE_REF_MAX - 1, false))
        return STORE_ERR_INVALID;

    if (db_begin(db) != 0) return STORE_ERR_DB;
    char st[STORE_STATUS_MAX], provider[STORE_KEY_MAX], session[STORE_REF_MAX];
    bool has_payment = false;
    int rc = lock_booking_payment(db, booking_id, st, provider, session, &has_payment);
    if (rc != STORE_OK) return store_abort(db, rc);
    if (!has_payment) return store_abort(db, STORE_ERR_NOT_FOUND);
    if (strcmp(provider, co->provider) != 0) return store_abort(db, STORE_ERR_CONFLICT);
    if (strcmp(st, "pending") != 0) {
        // A retry after the change was made: same session, nothing to do.
        rc = strcmp(st, "pending_payment") == 0 && strcmp(session, co->session_id) == 0 ? STORE_OK : STORE_ERR_CONFLICT;
        db_rollback(db);
        if (rc == STORE_OK) memset(ev, 0, sizeof *ev);
        return rc;
    }

    char expires[24];
    snprintf(expires, sizeof expires, "%" PRId64, co->expires_at);
    const char *params[] = {booking_id, co->session_id, co->invoice_uuid, co->checkout_url, expires};
    char sqlstate[6];
    PGresult *res = db_exec_prepared(
        db, "bookings_checkout_created",
        "UPDATE payments SET session_id = $2, invoice_uuid = COALESCE($3, invoice_uuid), checkout_url = $4,"
        " expires_at = CASE WHEN $5::bigint > 0 THEN to_timestamp($5::bigint) END"
        " WHERE booking_id = $1::uuid",
        5, params, sqlstate);
    if (!res) {
        // 23505: another payment already holds this session or invoice id.
        rc = strcmp(sqlstate, "23505") == 0 ? STORE_ERR_CONFLICT : store_rc_from_sqlstate(sqlstate);
        return store_abort(db, rc);
    }
    PQclear(res);
    booking_event_t e;
    rc = store_booking_move(db, booking_id, "pending_payment", &e);
    if (rc != STORE_OK) return store_abort(db, rc);
    if (db_commit(db) != 0) return STORE_ERR_DB;
    *ev = e;
    return STORE_OK;
}

int bookings_checkout_failed(db_t *db, const char *booking_id, const char *reason, booking_event_t *ev) {
    assert(db && booking_id && ev);
    if (!store_is_uuid(booking_id)) return STORE_ERR_NOT_FOUND;
    if (db_begin(db) != 0) return STORE_ERR_DB;
    char st[STORE_STATUS_MAX], provider[STORE_KEY_MAX], session[STORE_REF_MAX];
    bool has_payment = false;
    int rc = lock_booking_payment(db, booking_id, st, provider, session, &has_payment);
    if (rc != STORE_OK) return store_abort(db, rc);
    if (strcmp(st, "pending") != 0) {
        rc = strcmp(st, "payment_failed") == 0 ? STORE_OK : STORE_ERR_CONFLICT;
        db_rollback(db);
        if (rc == STORE_OK) memset(ev, 0, sizeof *ev);
        return rc;
    }
    const char *params[] = {booking_id, reason};
    PGresult *res = db_exec_prepared(db, "bookings_checkout_failed",
                                     "UPDATE payments SET status = 'failed', error_message = left($2, 500)"
                                     " WHERE booking_id = $1::uuid AND status = 'pending'",
                                     2, params, NULL);
    if (!res) return store_abort(db, STORE_ERR_DB);
    PQclear(res);
    booking_event_t e;
    rc = store_booking_move(db, booking_id, "payment_failed", &e);
    if (rc != STORE_OK) return store_abort(db, rc);
    if (db_commit(db) != 0) return STORE_ERR_DB;
    *ev = e;
    return STORE_OK;
}

// ---- reads ---------------------------------------------------------------------------------------

int bookings_get(db_t *db, const char *booking_id, booking_view_t *out) {
    assert(db && booking_id && out);
    if (!store_is_uuid(booking_id)) return STORE_ERR_NOT_FOUND;
    const char *params[] = {booking_id};
    PGresult *res = db_exec_prepared(
        db, "bookings_get",
        "SELECT b.id, b.user_id, b.plan::text, b.status::text, b.status_seq, b.payment_method::text, "
        SQL_RFC3339("b.created_at") ", " SQL_RFC3339("b.updated_at") ", " SQL_RFC3339("b.scheduled_for") ","
        " p.price_cents, p.currency, p.duration_seconds, p.priority"
        " FROM bookings b JOIN plans p ON p.key = b.plan WHERE b.id = $1::uuid",
        1, params, NULL);
    if (!res) return STORE_ERR_DB;
    if (PQntuples(res) != 1) {
        PQclear(res);
        return STORE_ERR_NOT_FOUND;
    }
    booking_view_t v;
    memset(&v, 0, sizeof v);
    store_copy(v.id, sizeof v.id, res, 0, 0);
    store_copy(v.user_id, sizeof v.user_id, res, 0, 1);
    store_copy(v.plan, sizeof v.plan, res, 0, 2);
    store_copy(v.status, sizeof v.status, res, 0, 3);
    v.seq = atoi(PQgetvalue(res, 0, 4));
    store_copy(v.payment_method, sizeof v.payment_method, res, 0, 5);
    store_copy(v.created_at, sizeof v.created_at, res, 0, 6);
    store_copy(v.updated_at, sizeof v.updated_at, res, 0, 7);
    store_copy(v.scheduled_for, sizeof v.scheduled_for, res, 0, 8);
    v.price_cents = store_int64(res, 0, 9);
    store_copy(v.currency, sizeof v.currency, res, 0, 10);
    v.duration_seconds = atoi(PQgetvalue(res, 0, 11));
    v.priority = atoi(PQgetvalue(res, 0, 12));
    PQclear(res);
    *out = v;
    return STORE_OK;
}

static void event_from_row(const PGresult *res, int r, void *elem) {
    booking_event_t *ev = elem;
    ev->seq = atoi(PQgetvalue(res, r, 0));
    store_copy(ev->status, sizeof ev->status, res, r, 1);
    store_copy(ev->at, sizeof ev->at, res, r, 2);
}

int bookings_events(db_t *db, const char *booking_id, int after_seq, booking_event_t **out, size_t *n) {
    assert(db && booking_id && out && n);
    if (!store_is_uuid(booking_id)) {
        *out = NULL;
        *n = 0;
        return STORE_OK;
    }
    char after[16];
    snprintf(after, sizeof after, "%d", after_seq);
    const char *params[] = {booking_id, after};
    PGresult *res = db_exec_prepared(db, "bookings_events",
                                     "SELECT seq, status::text, " SQL_RFC3339("at") " FROM booking_events"
                                     " WHERE booking_id = $1::uuid AND seq > $2::integer ORDER BY seq",
                                     2, params, NULL);
    void *list = NULL;
    int rc = store_rows(res, sizeof **out, event_from_row, &list, n);
    if (rc == STORE_OK) *out = list;
    return rc;
}

static void unpaid_from_row(const PGresult *res, int r, void *elem) {
    booking_unpaid_t *u = elem;
    store_copy(u->booking_id, sizeof u->booking_id, res, r, 0);
    store_copy(u->status, sizeof u->status, res, r, 1);
    store_copy(u->provider, sizeof u->provider, res, r, 2);
    store_copy(u->session_id, sizeof u->session_id, res, r, 3);
    store_copy(u->invoice_uuid, sizeof u->invoice_uuid, res, r, 4);
    store_copy(u->payment_intent, sizeof u->payment_intent, res, r, 5);
    u->amount_cents = store_int64(res, r, 6);
    store_copy(u->currency, sizeof u->currency, res, r, 7);
    store_copy(u->created_at, sizeof u->created_at, res, r, 8);
    store_copy(u->expires_at, sizeof u->expires_at, res, r, 9);
    u->age_s = store_int64(res, r, 10);
}

int bookings_pending_payment_older_than(db_t *db, int older_than_s, int limit, booking_unpaid_t **out, size_t *n) {
    assert(db && out && n && older_than_s >= 0 && limit > 0);
    char age[16], lim[16];
    snprintf(age, sizeof age, "%d", older_than_s);
    snprintf(lim, sizeof lim, "%d", limit);
    const char *params[] = {age, lim};
    PGresult *res = db_exec_prepared(
        db, "bookings_pending_payment_older_than",
        "WITH due AS ("
        "  SELECT p.id FROM payments p JOIN bookings b ON b.id = p.booking_id"
        "   WHERE b.status IN ('pending', 'pending_payment') AND p.status = 'pending'"
        "     AND b.created_at < now() - make_interval(secs => $1::integer)"
        "     AND (p.checked_at IS NULL OR p.checked_at < now() - make_interval(secs => $1::integer))"
        "   ORDER BY p.checked_at NULLS FIRST, b.created_at"
        "   LIMIT $2::integer FOR UPDATE OF p SKIP LOCKED),"
        " stamped AS ("
        "  UPDATE payments p SET checked_at = now() FROM due WHERE p.id = due.id"
        "  RETURNING p.booking_id, p.provider, p.session_id, p.invoice_uuid, p.payment_intent_id,"
        "            p.amount_cents, p.currency, p.expires_at)"
        " SELECT b.id, b.status::text, s.provider::text, s.session_id, s.invoice_uuid, s.payment_intent_id,"
        "        s.amount_cents, s.currency, " SQL_RFC3339("b.created_at") ", " SQL_RFC3339("s.expires_at") ","
        "        floor(extract(epoch FROM now() - b.created_at))::bigint"
        "   FROM stamped s JOIN bookings b ON b.id = s.booking_id ORDER BY b.created_at",
        2, params, NULL);
    void *list = NULL;
    int rc = store_rows(res, sizeof **out, unpaid_from_row, &list, n);
    if (rc == STORE_OK) *out = list;
    return rc;
}

// ---- cancel --------------------------------------------------------------------------------------

int bookings_cancel(db_t *db, const char *booking_id, booking_cancel_t *out) {
    assert(db && booking_id && out);
    if (!store_is_uuid(booking_id)) return STORE_ERR_NOT_FOUND;
    if (db_begin(db) != 0) return STORE_ERR_DB;
    const char *params[] = {booking_id};
    PGresult *res = db_exec_prepared(
        db, "bookings_cancel_lock",
        "SELECT b.id, b.status::text, p.id IS NOT NULL, p.provider::text, p.status::text, p.session_id,"
        " p.invoice_uuid, p.payment_intent_id"
        " FROM bookings b LEFT JOIN payments p ON p.booking_id = b.id WHERE b.id = $1::uuid FOR UPDATE OF b",
        1, params, NULL);
    if (!res) return store_abort(db, STORE_ERR_DB);
    if (PQntuples(res) != 1) {
        PQclear(res);
        return store_abort(db, STORE_ERR_NOT_FOUND);
    }
    booking_cancel_t c;
    memset(&c, 0, sizeof c);
    store_copy(c.booking_id, sizeof c.booking_id, res, 0, 0);
    store_copy(c.previous_status, sizeof c.previous_status, res, 0, 1);
    c.has_payment = strcmp(PQgetvalue(res, 0, 2), "t") == 0;
    store_copy(c.provider, sizeof c.provider, res, 0, 3);
    store_copy(c.payment_status, sizeof c.payment_status, res, 0, 4);
    store_copy(c.session_id, sizeof c.session_id, res, 0, 5);
    store_copy(c.invoice_uuid, sizeof c.invoice_uuid, res, 0, 6);
    store_copy(c.payment_intent, sizeof c.payment_intent, res, 0, 7);
    PQclear(res);

    if (strcmp(c.previous_status, "cancelled") == 0) {
        db_rollback(db);
        c.already_cancelled = true;
        c.refund_needed = strcmp(c.payment_status, "paid") == 0;
        *out = c;
        return STORE_OK;
    }
    if (is_final_or_later(c.previous_status)) return store_abort(db, STORE_ERR_TOO_LATE);

    int rc = store_booking_move(db, booking_id, "cancelled", &c.event);
    if (rc != STORE_OK) return store_abort(db, rc == STORE_ERR_CONFLICT ? STORE_ERR_TOO_LATE : rc);
    res = db_exec_prepared(db, "bookings_cancel_queue",
                           "UPDATE call_queue SET status = 'cancelled', lease_owner = NULL, lease_until = NULL"
                           " WHERE booking_id = $1::uuid AND status NOT IN ('done', 'failed', 'cancelled')",
                           1, params, NULL);
    if (!res) return store_abort(db, STORE_ERR_DB);
    PQclear(res);
    if (c.has_payment) {
        bool was_unpaid = strcmp(c.payment_status, "pending") == 0;
        res = db_exec_prepared(db, "bookings_cancel_payment",
                               "UPDATE payments SET status = CASE WHEN status = 'pending'"
                               " THEN 'cancelled'::payment_status ELSE status END"
                               " WHERE booking_id = $1::uuid RETURNING status::text",
                               1, params, NULL);
        if (!res) return store_abort(db, STORE_ERR_DB);
        if (PQntuples(res) == 1) store_copy(c.payment_status, sizeof c.payment_status, res, 0, 0);
        PQclear(res);
        c.expire_checkout = was_unpaid && c.session_id[0] != '\0';
        c.refund_needed = strcmp(c.payment_status, "paid") == 0;
    }
    if (db_commit(db) != 0) return STORE_ERR_DB;
    *out = c;
    return STORE_OK;
}
