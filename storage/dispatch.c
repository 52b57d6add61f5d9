// storage/dispatch.c — claims, starts, settles and recovery of calls (see dispatch.h).
//
// Locking, once more, because every deadlock argument rests on it: a transaction here locks the
// booking row and its queue row together (FOR UPDATE OF b, q), then touches the active_calls row,
// then the account, then the agent. bookings.c (cancel) and payments.c lock the booking first too.
// A claim locks queue rows and bookings with SKIP LOCKED (it never waits for them), then accounts
// and agents; several claims at once would each lock accounts in the order their rows happen to
// need them, so claims take one advisory transaction lock first and run one at a time. A settle
// holds at most one account and one agent, always the account first, so it cannot close a cycle
// with a claim. The monitor's stamping statements take active_calls rows with SKIP LOCKED and
// nothing else.
//
// "Known calls": a call id stays findable after its try was settled through bookings.vapi_call_id
// (the latest call) and call_events (every call: dispatch_started writes "call.started"). That is
// how a repeated end (already settled) is told apart from a call we never placed (not found).
#include "storage/dispatch.h"

#include <assert.h>
#include <inttypes.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "storage/call_events.h"
#include "storage/store_sql.h"

// 'SWEETYDC' read as a big-endian 64-bit integer: one claim at a time per database.
#define DISPATCH_CLAIM_LOCK_KEY "6005344792192042051"

#define STR_(x) #x
#define STR(x) STR_(x)

typedef struct {
    char text[24];
} num_t;

static num_t num(int64_t v) {
    num_t n;
    snprintf(n.text, sizeof n.text, "%" PRId64, v);
    return n;
}

static bool is_final(const char *status) {
    static const char *const final[] = {"completed", "failed", "cancelled", "payment_failed"};
    for (size_t i = 0; i < sizeof final / sizeof final[0]; i++)
        if (strcmp(status, final[i]) == 0) return true;
    return false;
}

const char *dispatch_outcome_name(dispatch_outcome_t outcome) {
    switch (outcome) {
    case DISPATCH_COMPLETED: return "completed";
    case DISPATCH_RETRY: return "retry";
    case DISPATCH_REQUEUE_NO_ATTEMPT: return "requeue_no_attempt";
    case DISPATCH_FAIL: return "fail";
    }
    return "unknown";
}

const char *dispatch_state_name(dispatch_state_t state) {
    switch (state) {
    case DISPATCH_ALREADY_SETTLED: return "already_settled";
    case DISPATCH_DONE: return "completed";
    case DISPATCH_REQUEUED: return "requeued";
    case DISPATCH_FAILED: return "failed";
    case DISPATCH_CLOSED: return "closed";
    }
    return "unknown";
}

void dispatch_assignment_clear(dispatch_assignment_t *a) {
    if (a) OPENSSL_cleanse(a, sizeof *a);
}

void dispatch_assignments_free(dispatch_assignment_t **list_p, size_t n) {
    if (!list_p || !*list_p) return;
    OPENSSL_cleanse(*list_p, n * sizeof **list_p);
    free(*list_p);
    *list_p = NULL;
}

// ---- shared steps ----------------------------------------------------------------------------------

// The booking and its queue row, locked.
typedef struct {
    char booking_status[STORE_STATUS_MAX];
    char queue_id[STORE_UUID_LEN];
    char queue_status[STORE_STATUS_MAX];
    int attempt;
    int max_retries;
    int64_t claim;
    char vapi_call_id[STORE_REF_MAX];
    char agent_id[STORE_UUID_LEN];
    char account_id[STORE_UUID_LEN];
    int duration_seconds;   // the plan's
    char dial_started_at[STORE_TS_MAX];
} locked_t;

// STORE_OK; STORE_ERR_NOT_FOUND (no booking or no queue row); STORE_ERR_DB.
static int lock_booking_queue(db_t *db, const char *booking_id, locked_t *l) {
    const char *params[] = {booking_id};
    PGresult *res = db_exec_prepared(
        db, "dispatch_lock",
        "SELECT b.status::text, q.id, q.status::text, q.attempt, q.max_retries, q.claim_seq, q.vapi_call_id,"
        " q.agent_id, q.account_id, p.duration_seconds, " SQL_RFC3339("q.dial_started_at")
        " FROM bookings b JOIN call_queue q ON q.booking_id = b.id JOIN plans p ON p.key = q.plan"
        " WHERE b.id = $1::uuid FOR UPDATE OF b, q",
        1, params, NULL);
    if (!res) return STORE_ERR_DB;
    if (PQntuples(res) != 1) {
        PQclear(res);
        return STORE_ERR_NOT_FOUND;
    }
    memset(l, 0, sizeof *l);
    store_copy(l->booking_status, sizeof l->booking_status, res, 0, 0);
    store_copy(l->queue_id, sizeof l->queue_id, res, 0, 1);
    store_copy(l->queue_status, sizeof l->queue_status, res, 0, 2);
    l->attempt = (int)store_int64(res, 0, 3);
    l->max_retries = (int)store_int64(res, 0, 4);
    l->claim = store_int64(res, 0, 5);
    store_copy(l->vapi_call_id, sizeof l->vapi_call_id, res, 0, 6);
    store_copy(l->agent_id, sizeof l->agent_id, res, 0, 7);
    store_copy(l->account_id, sizeof l->account_id, res, 0, 8);
    l->duration_seconds = (int)store_int64(res, 0, 9);
    store_copy(l->dial_started_at, sizeof l->dial_started_at, res, 0, 10);
    PQclear(res);
    return STORE_OK;
}

// The booking whose queue row carries this call id now. STORE_OK; STORE_ERR_NOT_FOUND; STORE_ERR_DB.
static int booking_of_current_call(db_t *db, const char *call_id, char bid[STORE_UUID_LEN]) {
    const char *params[] = {call_id};
    PGresult *res = db_exec_prepared(db, "dispatch_booking_of_call",
                                     "SELECT booking_id FROM call_queue WHERE vapi_call_id = $1", 1, params, NULL);
    if (!res) return STORE_ERR_DB;
    int rc = PQntuples(res) == 1 ? STORE_OK : STORE_ERR_NOT_FOUND;
    if (rc == STORE_OK) store_copy(bid, STORE_UUID_LEN, res, 0, 0);
    PQclear(res);
    return rc;
}

// The booking a call id was ever recorded for (see "known calls" above).
static int booking_of_known_call(db_t *db, const char *call_id, char bid[STORE_UUID_LEN]) {
    const char *params[] = {call_id};
    PGresult *res = db_exec_prepared(
        db, "dispatch_booking_of_known_call",
        "SELECT booking_id FROM (SELECT id AS booking_id FROM bookings WHERE vapi_call_id = $1"
        " UNION ALL SELECT booking_id FROM call_events WHERE vapi_call_id = $1) k LIMIT 1",
        1, params, NULL);
    if (!res) return STORE_ERR_DB;
    int rc = PQntuples(res) == 1 ? STORE_OK : STORE_ERR_NOT_FOUND;
    if (rc == STORE_OK) store_copy(bid, STORE_UUID_LEN, res, 0, 0);
    PQclear(res);
    return rc;
}

// Moves the booking when its status differs, appending the event. STORE_OK or the move's error.
static int move(db_t *db, const char *booking_id, char status[STORE_STATUS_MAX], const char *target,
                booking_event_t *events, size_t *nevents) {
    if (strcmp(status, target) == 0) return STORE_OK;
    int rc = store_booking_move(db, booking_id, target, &events[*nevents]);
    if (rc != STORE_OK) return rc;
    (*nevents)++;
    snprintf(status, STORE_STATUS_MAX, "%s", target);
    return STORE_OK;
}

// Gives back one unit of the account's and the agent's capacity (never below zero). *account_active
// and *agent_active receive the counters after it, -1 for an id that is empty or gone.
static int release_capacity(db_t *db, const char *account_id, const char *agent_id, int *account_active,
                            int *agent_active) {
    *account_active = -1;
    *agent_active = -1;
    if (account_id[0]) {
        const char *params[] = {account_id};
        PGresult *res = db_exec_prepared(db, "dispatch_release_account",
                                         "UPDATE vapi_accounts SET active_calls = GREATEST(active_calls - 1, 0)"
                                         " WHERE id = $1::uuid RETURNING active_calls",
                                         1, params, NULL);
        if (!res) return STORE_ERR_DB;
        if (PQntuples(res) == 1) *account_active = (int)store_int64(res, 0, 0);
        PQclear(res);
    }
    if (agent_id[0]) {
        const char *params[] = {agent_id};
        PGresult *res = db_exec_prepared(db, "dispatch_release_agent",
                                         "UPDATE vapi_agents SET active_calls = GREATEST(active_calls - 1, 0)"
                                         " WHERE id = $1::uuid RETURNING active_calls",
                                         1, params, NULL);
        if (!res) return STORE_ERR_DB;
        if (PQntuples(res) == 1) *agent_active = (int)store_int64(res, 0, 0);
        PQclear(res);
    }
    return STORE_OK;
}

static void copy_str(char *dst, size_t size, const char *src) {
    snprintf(dst, size, "%s", src ? src : "");
}

// True when s is well-formed UTF-8 (PostgreSQL refuses anything else in text and jsonb, and a
// settle must not fail on a provider's odd string: such a value is dropped instead).
static bool utf8_ok(const char *s) {
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        int extra;
        unsigned cp;
        if (*p < 0x80) {
            p++;
            continue;
        } else if ((*p & 0xE0) == 0xC0) {
            extra = 1;
            cp = *p & 0x1F;
        } else if ((*p & 0xF0) == 0xE0) {
            extra = 2;
            cp = *p & 0x0F;
        } else if ((*p & 0xF8) == 0xF0) {
            extra = 3;
            cp = *p & 0x07;
        } else {
            return false;
        }
        p++;
        for (int i = 0; i < extra; i++, p++) {
            if ((*p & 0xC0) != 0x80) return false;
            cp = cp << 6 | (*p & 0x3F);
        }
        static const unsigned min[] = {0, 0x80, 0x800, 0x10000};
        if (cp < min[extra] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    }
    return true;
}

static const char *utf8_or_null(const char *s) { return s && utf8_ok(s) ? s : NULL; }

// ---- claim -----------------------------------------------------------------------------------------

// An agent's capacity is usable: the agent and its account enabled, the account not held, both
// below their limits, an assistant to call with. (Aliases: a agent, c account, ap the agent's plan.)
#define AGENT_AVAILABLE                                                                          \
    " a.enabled AND c.enabled AND (c.held_until IS NULL OR c.held_until <= now())"               \
    " AND a.active_calls < a.max_concurrent AND c.active_calls < c.max_concurrent"               \
    " AND COALESCE(a.assistant_id, ap.vapi_assistant_id) IS NOT NULL"

typedef struct {
    char queue_id[STORE_UUID_LEN];
    char booking_id[STORE_UUID_LEN];
    char plan[STORE_KEY_MAX];
    int attempt;
    int max_retries;
    char phone[DISPATCH_PHONE_MAX];
    int duration_seconds;
} due_row_t;

// Two things keep this query linear in the backlog whatever the planner's statistics say. Seen with
// statistics from before a burst of bookings (they say almost nothing is queued, so the planner
// expects one queue row and any nested loop looks cheap), bench/b4-dispatch:
//  - the booking's status is compared as text: as `b.status = 'queued'` it matches the index
//    bookings_open_status_idx, and the planner joined every queue row to a scan of every queued
//    booking through it; as text only the primary key reaches the booking, one probe per row;
//  - which plans have an agent with room is worked out once (a materialized CTE) instead of an
//    EXISTS per queue row: the account and agent rows are updated by every claim and settle and
//    carry many dead versions until vacuum, so each look at them was tens of microseconds.
// With 3000 queued this query took 210 ms per claim batch, now a few ms.
static int claim_due_rows(db_t *db, int limit, due_row_t **rows, int *nrows) {
    num_t lim = num(limit);
    const char *params[] = {lim.text};
    PGresult *res = db_exec_prepared(
        db, "dispatch_claim_due",
        "WITH open_plans AS MATERIALIZED ("
        "    SELECT DISTINCT a.plan FROM vapi_agents a JOIN vapi_accounts c ON c.id = a.account_id"
        "    JOIN plans ap ON ap.key = a.plan WHERE" AGENT_AVAILABLE ")"
        " SELECT q.id, q.booking_id, q.plan::text, q.attempt, q.max_retries, u.phone, p.duration_seconds"
        " FROM call_queue q JOIN bookings b ON b.id = q.booking_id JOIN users u ON u.id = b.user_id"
        " JOIN plans p ON p.key = q.plan"
        " WHERE q.status = 'queued' AND q.next_attempt_at <= now() AND b.status::text = 'queued'"
        "   AND q.plan IN (SELECT plan FROM open_plans)"
        " ORDER BY q.priority DESC, q.created_at, q.id"
        " LIMIT $1::integer FOR UPDATE OF q, b SKIP LOCKED",
        1, params, NULL);
    if (!res) return STORE_ERR_DB;
    int n = PQntuples(res);
    due_row_t *list = n > 0 ? calloc((size_t)n, sizeof *list) : NULL;
    if (n > 0 && !list) {
        PQclear(res);
        return STORE_ERR_DB;
    }
    for (int r = 0; r < n; r++) {
        store_copy(list[r].queue_id, sizeof list[r].queue_id, res, r, 0);
        store_copy(list[r].booking_id, sizeof list[r].booking_id, res, r, 1);
        store_copy(list[r].plan, sizeof list[r].plan, res, r, 2);
        list[r].attempt = (int)store_int64(res, r, 3);
        list[r].max_retries = (int)store_int64(res, r, 4);
        store_copy(list[r].phone, sizeof list[r].phone, res, r, 5);
        list[r].duration_seconds = (int)store_int64(res, r, 6);
    }
    PQclear(res);
    *rows = list;
    *nrows = n;
    return STORE_OK;
}

// Takes one unit of capacity on the best agent for the plan. STORE_OK with a filled in (agent,
// account, assistant, phone number id, counters); STORE_ERR_NOT_FOUND when none has room.
static int take_agent(db_t *db, const char *plan, dispatch_assignment_t *a) {
    const char *params[] = {plan};
    PGresult *cands = db_exec_prepared(
        db, "dispatch_candidates",
        "SELECT a.id, a.account_id, COALESCE(a.assistant_id, ap.vapi_assistant_id), c.phone_number_id"
        " FROM vapi_agents a JOIN vapi_accounts c ON c.id = a.account_id JOIN plans ap ON ap.key = a.plan"
        " WHERE a.plan = $1::plan_key AND" AGENT_AVAILABLE
        " ORDER BY a.priority DESC, a.active_calls, c.active_calls, a.created_at, a.id",
        1, params, NULL);
    if (!cands) return STORE_ERR_DB;
    int rc = STORE_ERR_NOT_FOUND;
    for (int i = 0; i < PQntuples(cands) && rc == STORE_ERR_NOT_FOUND; i++) {
        const char *agent = PQgetvalue(cands, i, 0), *account = PQgetvalue(cands, i, 1);
        const char *pa[] = {account};
        PGresult *res = db_exec_prepared(
            db, "dispatch_take_account",
            "UPDATE vapi_accounts SET active_calls = active_calls + 1"
            " WHERE id = $1::uuid AND enabled AND active_calls < max_concurrent"
            "   AND (held_until IS NULL OR held_until <= now()) RETURNING active_calls",
            1, pa, NULL);
        if (!res) {
            rc = STORE_ERR_DB;
            break;
        }
        bool got_account = PQntuples(res) == 1;
        int account_active = got_account ? (int)store_int64(res, 0, 0) : 0;
        PQclear(res);
        if (!got_account) continue;
        const char *pg[] = {agent, account};
        res = db_exec_prepared(db, "dispatch_take_agent",
                               "UPDATE vapi_agents SET active_calls = active_calls + 1"
                               " WHERE id = $1::uuid AND account_id = $2::uuid AND enabled"
                               "   AND active_calls < max_concurrent RETURNING active_calls",
                               2, pg, NULL);
        if (!res) {
            rc = STORE_ERR_DB;
            break;
        }
        bool got_agent = PQntuples(res) == 1;
        int agent_active = got_agent ? (int)store_int64(res, 0, 0) : 0;
        PQclear(res);
        if (!got_agent) {
            // The agent filled up or was disabled since the candidates were read: give the
            // account's unit back (we hold its row lock) and try the next candidate.
            res = db_exec_prepared(db, "dispatch_untake_account",
                                   "UPDATE vapi_accounts SET active_calls = active_calls - 1 WHERE id = $1::uuid",
                                   1, pa, NULL);
            if (!res) {
                rc = STORE_ERR_DB;
                break;
            }
            PQclear(res);
            continue;
        }
        copy_str(a->agent_id, sizeof a->agent_id, agent);
        copy_str(a->account_id, sizeof a->account_id, account);
        store_copy(a->assistant_id, sizeof a->assistant_id, cands, i, 2);
        store_copy(a->phone_number_id, sizeof a->phone_number_id, cands, i, 3);
        a->agent_active = agent_active;
        a->account_active = account_active;
        rc = STORE_OK;
    }
    PQclear(cands);
    return rc;
}

int dispatch_claim(db_t *db, const char *owner, int lease_s, int limit, dispatch_assignment_t **out, size_t *n) {
    assert(db && out && n);
    if (!store_len_ok(owner, DISPATCH_OWNER_MAX - 1, true) || lease_s <= 0 || limit <= 0) return STORE_ERR_INVALID;
    if (db_begin(db) != 0) return STORE_ERR_DB;
    PGresult *res = db_exec(db, "SELECT pg_advisory_xact_lock(" DISPATCH_CLAIM_LOCK_KEY ")", NULL);
    if (!res) return store_abort(db, STORE_ERR_DB);
    PQclear(res);

    due_row_t *rows = NULL;
    int nrows = 0;
    int rc = claim_due_rows(db, limit, &rows, &nrows);
    if (rc != STORE_OK) return store_abort(db, rc);
    dispatch_assignment_t *list = nrows > 0 ? calloc((size_t)nrows, sizeof *list) : NULL;
    if (nrows > 0 && !list) {
        free(rows);
        return store_abort(db, STORE_ERR_DB);
    }
    size_t count = 0;
    char full[8][STORE_KEY_MAX];   // plans found without room: their later rows cannot fit either
    size_t nfull = 0;
    num_t lease = num(lease_s);
    for (int i = 0; i < nrows && rc == STORE_OK; i++) {
        const due_row_t *d = &rows[i];
        bool skip = false;
        for (size_t f = 0; f < nfull; f++) skip = skip || strcmp(full[f], d->plan) == 0;
        if (skip) continue;
        dispatch_assignment_t *a = &list[count];
        rc = take_agent(db, d->plan, a);
        if (rc == STORE_ERR_NOT_FOUND) {
            if (nfull < sizeof full / sizeof full[0]) copy_str(full[nfull++], STORE_KEY_MAX, d->plan);
            rc = STORE_OK;
            continue;
        }
        if (rc != STORE_OK) break;
        const char *pq[] = {d->queue_id, a->agent_id, a->account_id, owner, lease.text};
        res = db_exec_prepared(
            db, "dispatch_claim_row",
            "UPDATE call_queue SET status = 'dialing', agent_id = $2::uuid, account_id = $3::uuid,"
            " lease_owner = $4, lease_until = now() + make_interval(secs => $5::integer),"
            " dial_started_at = now(), claim_seq = claim_seq + 1, vapi_call_id = NULL"
            " WHERE id = $1::uuid RETURNING claim_seq, " SQL_RFC3339("lease_until") ", " SQL_RFC3339("dial_started_at") ","
            " floor(extract(epoch FROM dial_started_at) * 1000)::bigint",
            5, pq, NULL);
        if (!res) {
            rc = STORE_ERR_DB;
            break;
        }
        if (PQntuples(res) != 1) {
            PQclear(res);
            rc = STORE_ERR_DB;
            break;
        }
        a->claim = store_int64(res, 0, 0);
        store_copy(a->lease_until, sizeof a->lease_until, res, 0, 1);
        store_copy(a->dial_started_at, sizeof a->dial_started_at, res, 0, 2);
        a->dial_started_ms = store_int64(res, 0, 3);
        PQclear(res);
        copy_str(a->queue_status, sizeof a->queue_status, "dialing");
        copy_str(a->lease_owner, sizeof a->lease_owner, owner);
        rc = store_booking_move(db, d->booking_id, "initiating", &a->event);
        if (rc != STORE_OK) break;
        copy_str(a->booking_id, sizeof a->booking_id, d->booking_id);
        copy_str(a->queue_id, sizeof a->queue_id, d->queue_id);
        copy_str(a->plan, sizeof a->plan, d->plan);
        copy_str(a->phone, sizeof a->phone, d->phone);
        a->attempt = d->attempt;
        a->max_retries = d->max_retries;
        a->max_duration_s = d->duration_seconds;
        count++;
    }
    OPENSSL_cleanse(rows, (size_t)nrows * sizeof *rows);
    free(rows);
    // A refused status change (SW001) would be a bug here, not the caller's: report it as a db error.
    if (rc != STORE_OK || db_commit(db) != 0) {
        db_rollback(db);
        dispatch_assignments_free(&list, (size_t)nrows);
        return STORE_ERR_DB;
    }
    if (count == 0) dispatch_assignments_free(&list, (size_t)nrows);
    *out = list;
    *n = count;
    return STORE_OK;
}

int dispatch_purge_finished(db_t *db, int older_than_s, int64_t *deleted) {
    assert(db);
    if (older_than_s < 0) return STORE_ERR_INVALID;
    num_t age = num(older_than_s);
    const char *params[] = {age.text};
    PGresult *res = db_exec_prepared(db, "dispatch_purge_finished",
                                     "DELETE FROM call_queue WHERE status IN ('done', 'failed', 'cancelled')"
                                     " AND updated_at < now() - make_interval(secs => $1::integer)",
                                     1, params, NULL);
    if (!res) return STORE_ERR_DB;
    if (deleted) *deleted = strtoll(PQcmdTuples(res), NULL, 10);
    PQclear(res);
    return STORE_OK;
}

// ---- load, started, calling, touch ------------------------------------------------------------------

// An assignment as stored: q call_queue, u users, p the row's plan, a agent, c account. The lease
// columns are given as expressions (dispatch_expired_leases reports the previous owner).
#define ASSIGNMENT_COLUMNS(owner, until)                                                                         \
    "q.booking_id, q.id, q.claim_seq, q.agent_id, q.account_id, q.attempt, q.max_retries, q.plan::text,"       \
    " COALESCE(a.assistant_id, p.vapi_assistant_id), c.phone_number_id, p.duration_seconds, u.phone,"          \
    " q.status::text, q.vapi_call_id, " owner ", " SQL_RFC3339(until) ", " SQL_RFC3339("q.dial_started_at") "," \
    " floor(extract(epoch FROM q.dial_started_at) * 1000)::bigint, a.active_calls, c.active_calls"
#define ASSIGNMENT_JOINS                                                                                         \
    " JOIN bookings b ON b.id = q.booking_id JOIN users u ON u.id = b.user_id JOIN plans p ON p.key = q.plan" \
    " LEFT JOIN vapi_agents a ON a.id = q.agent_id LEFT JOIN vapi_accounts c ON c.id = q.account_id"

static void assignment_row(const PGresult *res, int r, dispatch_assignment_t *x) {
    memset(x, 0, sizeof *x);
    store_copy(x->booking_id, sizeof x->booking_id, res, r, 0);
    store_copy(x->queue_id, sizeof x->queue_id, res, r, 1);
    x->claim = store_int64(res, r, 2);
    store_copy(x->agent_id, sizeof x->agent_id, res, r, 3);
    store_copy(x->account_id, sizeof x->account_id, res, r, 4);
    x->attempt = (int)store_int64(res, r, 5);
    x->max_retries = (int)store_int64(res, r, 6);
    store_copy(x->plan, sizeof x->plan, res, r, 7);
    store_copy(x->assistant_id, sizeof x->assistant_id, res, r, 8);
    store_copy(x->phone_number_id, sizeof x->phone_number_id, res, r, 9);
    x->max_duration_s = (int)store_int64(res, r, 10);
    store_copy(x->phone, sizeof x->phone, res, r, 11);
    store_copy(x->queue_status, sizeof x->queue_status, res, r, 12);
    store_copy(x->vapi_call_id, sizeof x->vapi_call_id, res, r, 13);
    store_copy(x->lease_owner, sizeof x->lease_owner, res, r, 14);
    store_copy(x->lease_until, sizeof x->lease_until, res, r, 15);
    store_copy(x->dial_started_at, sizeof x->dial_started_at, res, r, 16);
    x->dial_started_ms = store_int64(res, r, 17);
    x->agent_active = (int)store_int64(res, r, 18);
    x->account_active = (int)store_int64(res, r, 19);
}

int dispatch_load(db_t *db, const char *booking_id, dispatch_assignment_t *out) {
    assert(db && out);
    if (!store_is_uuid(booking_id)) return STORE_ERR_NOT_FOUND;
    const char *params[] = {booking_id};
    PGresult *res = db_exec_prepared(db, "dispatch_load",
                                     "SELECT " ASSIGNMENT_COLUMNS("q.lease_owner", "q.lease_until")
                                     " FROM call_queue q" ASSIGNMENT_JOINS
                                     " WHERE q.booking_id = $1::uuid AND q.status IN ('dialing', 'active')",
                                     1, params, NULL);
    if (!res) return STORE_ERR_DB;
    int rc = PQntuples(res) == 1 ? STORE_OK : STORE_ERR_NOT_FOUND;
    if (rc == STORE_OK) assignment_row(res, 0, out);
    PQclear(res);
    return rc;
}

static bool url_ok(const char *url) { return store_len_ok(url, DISPATCH_URL_MAX - 1, false); }

int dispatch_started(db_t *db, const char *booking_id, int64_t claim, const char *vapi_call_id,
                     const char *control_url, dispatch_start_t *out) {
    assert(db);
    if (!store_is_uuid(booking_id)) return STORE_ERR_NOT_FOUND;
    if (!store_len_ok(vapi_call_id, STORE_REF_MAX - 1, true) || !url_ok(control_url) || claim < 0)
        return STORE_ERR_INVALID;
    if (db_begin(db) != 0) return STORE_ERR_DB;
    locked_t l;
    int rc = lock_booking_queue(db, booking_id, &l);
    if (rc != STORE_OK) return store_abort(db, rc);

    dispatch_start_t s;
    memset(&s, 0, sizeof s);
    copy_str(s.booking_id, sizeof s.booking_id, booking_id);
    copy_str(s.agent_id, sizeof s.agent_id, l.agent_id);
    copy_str(s.account_id, sizeof s.account_id, l.account_id);
    s.attempt = l.attempt;
    bool same_call = strcmp(l.vapi_call_id, vapi_call_id) == 0;
    if (strcmp(l.queue_status, "active") == 0 && same_call) {
        db_rollback(db);
        s.outcome = DISPATCH_ALREADY_STARTED;
        if (out) *out = s;
        return STORE_OK;
    }
    bool ours = strcmp(l.queue_status, "dialing") == 0 && (claim == 0 || claim == l.claim) &&
                (l.vapi_call_id[0] == '\0' || same_call);
    if (!ours) {
        char known[STORE_UUID_LEN];
        rc = booking_of_known_call(db, vapi_call_id, known);
        db_rollback(db);
        if (rc == STORE_ERR_DB) return rc;
        if (rc == STORE_OK && strcmp(known, booking_id) == 0) {
            s.outcome = DISPATCH_ALREADY_ENDED;
            if (out) *out = s;
            return STORE_OK;
        }
        return STORE_ERR_CONFLICT;
    }

    char sqlstate[6];
    const char *pq[] = {l.queue_id, vapi_call_id};
    PGresult *res = db_exec_prepared(db, "dispatch_started_queue",
                                     "UPDATE call_queue SET status = 'active', vapi_call_id = $2,"
                                     " lease_owner = NULL, lease_until = NULL WHERE id = $1::uuid",
                                     2, pq, sqlstate);
    if (!res) return store_abort(db, strcmp(sqlstate, "23505") == 0 ? STORE_ERR_CONFLICT : STORE_ERR_DB);
    PQclear(res);
    num_t dur = num(l.duration_seconds);
    const char *pa[] = {booking_id, l.agent_id, l.account_id, vapi_call_id, control_url, dur.text};
    res = db_exec_prepared(
        db, "dispatch_started_active",
        "INSERT INTO active_calls (booking_id, agent_id, account_id, vapi_call_id, control_url, started_at,"
        "  calling_at, last_event_at, max_duration_s)"
        " SELECT b.id, $2::uuid, $3::uuid, $4, $5,"
        "  COALESCE(q.dial_started_at, now()), CASE WHEN b.status = 'calling' THEN now() END, now(), $6::integer"
        " FROM bookings b JOIN call_queue q ON q.booking_id = b.id WHERE b.id = $1::uuid"
        " ON CONFLICT (booking_id) DO UPDATE SET agent_id = EXCLUDED.agent_id, account_id = EXCLUDED.account_id,"
        "  vapi_call_id = EXCLUDED.vapi_call_id, control_url = EXCLUDED.control_url,"
        "  started_at = EXCLUDED.started_at, calling_at = EXCLUDED.calling_at,"
        "  last_event_at = EXCLUDED.last_event_at, max_duration_s = EXCLUDED.max_duration_s, monitor_at = NULL,"
        "  end_requested_at = NULL",
        6, pa, sqlstate);
    if (!res) return store_abort(db, strcmp(sqlstate, "23505") == 0 ? STORE_ERR_CONFLICT : STORE_ERR_DB);
    PQclear(res);
    const char *pb[] = {booking_id, vapi_call_id};
    res = db_exec_prepared(db, "dispatch_started_booking",
                           "UPDATE bookings SET vapi_call_id = $2 WHERE id = $1::uuid", 2, pb, NULL);
    if (!res) return store_abort(db, STORE_ERR_DB);
    PQclear(res);
    char details[64];
    snprintf(details, sizeof details, "{\"attempt\":%d,\"claim\":%" PRId64 "}", l.attempt, l.claim);
    rc = call_events_add(db, booking_id, vapi_call_id, "call.started", "started", details);
    if (rc != STORE_OK) return store_abort(db, STORE_ERR_DB);
    if (db_commit(db) != 0) return STORE_ERR_DB;
    s.outcome = DISPATCH_STARTED;
    if (out) *out = s;
    return STORE_OK;
}

int dispatch_calling(db_t *db, const char *vapi_call_id, const char *booking_id, dispatch_calling_t *out) {
    assert(db && out);
    if (!store_len_ok(vapi_call_id, STORE_REF_MAX - 1, true)) return STORE_ERR_INVALID;
    if (booking_id && !store_is_uuid(booking_id)) booking_id = NULL;   // hostile metadata: ignore it
    if (db_begin(db) != 0) return STORE_ERR_DB;
    char bid[STORE_UUID_LEN];
    int rc = booking_of_current_call(db, vapi_call_id, bid);
    bool by_call = rc == STORE_OK;
    if (rc == STORE_ERR_DB) return store_abort(db, rc);
    if (!by_call) {
        if (booking_id) {
            copy_str(bid, sizeof bid, booking_id);
        } else {
            rc = booking_of_known_call(db, vapi_call_id, bid);
            db_rollback(db);
            if (rc != STORE_OK) return rc;
            dispatch_calling_t c;
            memset(&c, 0, sizeof c);
            copy_str(c.booking_id, sizeof c.booking_id, bid);
            *out = c;
            return STORE_OK;
        }
    }
    locked_t l;
    rc = lock_booking_queue(db, bid, &l);
    if (rc != STORE_OK) return store_abort(db, rc);
    bool open = strcmp(l.queue_status, "dialing") == 0 || strcmp(l.queue_status, "active") == 0;
    bool ours = strcmp(l.vapi_call_id, vapi_call_id) == 0;
    bool early = !ours && open && l.vapi_call_id[0] == '\0' && strcmp(l.queue_status, "dialing") == 0;
    dispatch_calling_t c;
    memset(&c, 0, sizeof c);
    copy_str(c.booking_id, sizeof c.booking_id, bid);
    if (!open || (!ours && !early)) {
        // An ended call (a late event), or one this booking never had.
        char known[STORE_UUID_LEN];
        rc = booking_of_known_call(db, vapi_call_id, known);
        db_rollback(db);
        if (rc != STORE_OK) return rc;
        copy_str(c.booking_id, sizeof c.booking_id, known);
        *out = c;
        return STORE_OK;
    }
    if (early) {
        // The start is not recorded yet: note the call id so dispatch_started and the end find it.
        char sqlstate[6];
        const char *pq[] = {l.queue_id, vapi_call_id};
        PGresult *res = db_exec_prepared(db, "dispatch_calling_early",
                                         "UPDATE call_queue SET vapi_call_id = $2 WHERE id = $1::uuid", 2, pq,
                                         sqlstate);
        if (!res) return store_abort(db, strcmp(sqlstate, "23505") == 0 ? STORE_ERR_NOT_FOUND : STORE_ERR_DB);
        PQclear(res);
    }
    if (strcmp(l.booking_status, "initiating") == 0) {
        rc = store_booking_move(db, bid, "calling", &c.event);
        if (rc != STORE_OK) return store_abort(db, STORE_ERR_DB);
    }
    const char *pa[] = {bid};
    PGresult *res = db_exec_prepared(db, "dispatch_calling_active",
                                     "UPDATE active_calls SET calling_at = COALESCE(calling_at, now()),"
                                     " last_event_at = now() WHERE booking_id = $1::uuid",
                                     1, pa, NULL);
    if (!res) return store_abort(db, STORE_ERR_DB);
    PQclear(res);
    if (db_commit(db) != 0) return STORE_ERR_DB;
    *out = c;
    return STORE_OK;
}

int dispatch_touch(db_t *db, const char *vapi_call_id) {
    assert(db);
    if (!store_len_ok(vapi_call_id, STORE_REF_MAX - 1, true)) return STORE_ERR_NOT_FOUND;
    const char *params[] = {vapi_call_id};
    PGresult *res = db_exec_prepared(db, "dispatch_touch",
                                     "UPDATE active_calls SET last_event_at = now() WHERE vapi_call_id = $1"
                                     " RETURNING booking_id",
                                     1, params, NULL);
    if (!res) return STORE_ERR_DB;
    int rc = PQntuples(res) == 1 ? STORE_OK : STORE_ERR_NOT_FOUND;
    PQclear(res);
    return rc;
}

// ---- settle ------------------------------------------------------------------------------------------

// The call_events details of a settle: what a reader of the history wants, no personal data.
static char *settle_details(const dispatch_settle_t *in, const locked_t *l, bool requeued) {
    json_t *d = json_object();
    if (!d) return NULL;
    json_object_set_new(d, "outcome", json_string(dispatch_outcome_name(in->outcome)));
    const char *reason = utf8_or_null(in->ended_reason);
    if (reason) {
        size_t len = strnlen(reason, DISPATCH_REASON_MAX - 1);
        while (len > 0 && (reason[len] & 0xC0) == 0x80) len--;   // cut between characters
        json_object_set_new(d, "ended_reason", json_stringn(reason, len));
    }
    if (in->duration_s >= 0) json_object_set_new(d, "duration_s", json_integer(in->duration_s));
    if (in->cost_micros > 0) json_object_set_new(d, "cost_micros", json_integer(in->cost_micros));
    json_object_set_new(d, "attempt", json_integer(l->attempt));
    json_object_set_new(d, "claim", json_integer(l->claim));
    json_object_set_new(d, "requeued", json_boolean(requeued));
    char *text = json_dumps(d, JSON_COMPACT);
    json_decref(d);
    return text;
}

// Validates what a settle is given. STORE_OK or STORE_ERR_INVALID / STORE_ERR_NOT_FOUND.
static int settle_check(const dispatch_settle_t *in) {
    if (!in->vapi_call_id && !in->booking_id) return STORE_ERR_INVALID;
    if (in->booking_id && !store_is_uuid(in->booking_id)) return STORE_ERR_NOT_FOUND;
    if (in->vapi_call_id && !store_len_ok(in->vapi_call_id, STORE_REF_MAX - 1, true)) return STORE_ERR_INVALID;
    if (!url_ok(in->recording_url) || in->retry_delay_s < 0 || in->hold_account_s < 0 || in->claim < 0)
        return STORE_ERR_INVALID;
    if (in->outcome < DISPATCH_COMPLETED || in->outcome > DISPATCH_FAIL) return STORE_ERR_INVALID;
    return STORE_OK;
}

// Nothing to settle: the try is over. Rolls back and fills the answer from what is there now.
static int settle_none(db_t *db, const char *bid, const locked_t *l, dispatch_settled_t *out) {
    db_rollback(db);
    dispatch_settled_t s;
    memset(&s, 0, sizeof s);
    s.state = DISPATCH_ALREADY_SETTLED;
    copy_str(s.booking_id, sizeof s.booking_id, bid);
    s.agent_active = s.account_active = -1;
    s.duration_s = -1;
    if (l) {
        copy_str(s.vapi_call_id, sizeof s.vapi_call_id, l->vapi_call_id);
        copy_str(s.queue_status, sizeof s.queue_status, l->queue_status);
        copy_str(s.booking_status, sizeof s.booking_status, l->booking_status);
        s.attempt = l->attempt;
        s.max_retries = l->max_retries;
    }
    *out = s;
    return STORE_OK;
}

// The queue status that matches a booking that is final already.
static const char *queue_status_for_final(const char *booking_status) {
    if (strcmp(booking_status, "completed") == 0) return "done";
    if (strcmp(booking_status, "failed") == 0) return "failed";
    return "cancelled";
}

static int settle_core(db_t *db, const dispatch_settle_t *in, bool lost_only, dispatch_settled_t *out) {
    int rc = settle_check(in);
    if (rc != STORE_OK) return rc;
    if (db_begin(db) != 0) return STORE_ERR_DB;

    char bid[STORE_UUID_LEN] = "";
    bool by_call = false;
    if (in->vapi_call_id) {
        rc = booking_of_current_call(db, in->vapi_call_id, bid);
        if (rc == STORE_ERR_DB) return store_abort(db, rc);
        by_call = rc == STORE_OK;
    }
    if (!by_call) {
        if (!in->booking_id) {
            // Not on any queue row: settled before (known) or never ours.
            rc = booking_of_known_call(db, in->vapi_call_id, bid);
            if (rc != STORE_OK) return store_abort(db, rc);
            return settle_none(db, bid, NULL, out);
        }
        copy_str(bid, sizeof bid, in->booking_id);
    }
    locked_t l;
    rc = lock_booking_queue(db, bid, &l);
    if (rc == STORE_ERR_NOT_FOUND && in->vapi_call_id) {
        // No queue row (purged): a call we placed once is settled already.
        rc = booking_of_known_call(db, in->vapi_call_id, bid);
        if (rc == STORE_OK) return settle_none(db, bid, NULL, out);
    }
    if (rc != STORE_OK) return store_abort(db, rc);

    // A lost try is requeued only while nothing says its call exists (a webhook may have named it).
    bool open = strcmp(l.queue_status, "dialing") == 0 ? !(lost_only && l.vapi_call_id[0])
                                                       : !lost_only && strcmp(l.queue_status, "active") == 0;
    bool match = in->claim == 0 || in->claim == l.claim;
    if (in->vapi_call_id) {
        // The queue row carries this call, or it is still dialing without a call id and the
        // caller named the booking (an end that arrived before the start was recorded).
        match = match && (strcmp(l.vapi_call_id, in->vapi_call_id) == 0 ||
                          (l.vapi_call_id[0] == '\0' && strcmp(l.queue_status, "dialing") == 0));
    }
    if (!open || !match) {
        if (in->vapi_call_id && strcmp(l.vapi_call_id, in->vapi_call_id) != 0) {
            char known[STORE_UUID_LEN];
            rc = booking_of_known_call(db, in->vapi_call_id, known);
            if (rc != STORE_OK) return store_abort(db, rc);
        }
        return settle_none(db, bid, &l, out);
    }

    dispatch_settled_t s;
    memset(&s, 0, sizeof s);
    copy_str(s.booking_id, sizeof s.booking_id, bid);
    copy_str(s.vapi_call_id, sizeof s.vapi_call_id, in->vapi_call_id ? in->vapi_call_id : l.vapi_call_id);
    copy_str(s.agent_id, sizeof s.agent_id, l.agent_id);
    copy_str(s.account_id, sizeof s.account_id, l.account_id);
    s.max_retries = l.max_retries;
    s.attempt = l.attempt;
    s.duration_s = in->duration_s < 0 ? -1 : in->duration_s;

    // Release: the active_calls row and one unit of capacity, exactly once (the queue row leaves
    // dialing/active below, in this transaction).
    const char *pb[] = {bid};
    PGresult *res = db_exec_prepared(db, "dispatch_settle_active",
                                     "DELETE FROM active_calls WHERE booking_id = $1::uuid", 1, pb, NULL);
    if (!res) return store_abort(db, STORE_ERR_DB);
    PQclear(res);
    rc = release_capacity(db, l.account_id, l.agent_id, &s.account_active, &s.agent_active);
    if (rc != STORE_OK) return store_abort(db, rc);

    const char *reason = utf8_or_null(in->ended_reason);
    if (!lost_only) {
        num_t dur = num(in->duration_s), cost = num(in->cost_micros);
        const char *pc[] = {bid, s.vapi_call_id[0] ? s.vapi_call_id : NULL, in->duration_s >= 0 ? dur.text : NULL,
                            in->cost_micros > 0 ? cost.text : NULL, reason, utf8_or_null(in->recording_url)};
        char sqlstate[6];
        res = db_exec_prepared(db, "dispatch_settle_booking",
                               "UPDATE bookings SET vapi_call_id = COALESCE($2, vapi_call_id),"
                               " call_duration_s = $3::integer, call_cost = $4::numeric / 1000000,"
                               " ended_reason = left($5, " STR(DISPATCH_REASON_MAX) "), recording_url = $6"
                               " WHERE id = $1::uuid",
                               6, pc, sqlstate);
        if (!res) return store_abort(db, store_rc_from_sqlstate(sqlstate));
        PQclear(res);
    }

    // Where the try leads.
    const char *queue_to = NULL, *booking_to = NULL;
    bool requeue = false;
    int attempt = l.attempt;
    switch (in->outcome) {
    case DISPATCH_COMPLETED:
        queue_to = "done";
        booking_to = "completed";
        break;
    case DISPATCH_RETRY:
        if (l.attempt < l.max_retries) {
            requeue = true;
            attempt = l.attempt + 1;
        } else {
            queue_to = booking_to = "failed";
        }
        break;
    case DISPATCH_REQUEUE_NO_ATTEMPT: requeue = true; break;
    case DISPATCH_FAIL: queue_to = booking_to = "failed"; break;
    }
    if (requeue) booking_to = "queued";
    if (is_final(l.booking_status)) {
        requeue = false;
        queue_to = queue_status_for_final(l.booking_status);
        booking_to = NULL;
    }

    char status[STORE_STATUS_MAX];
    copy_str(status, sizeof status, l.booking_status);
    if (booking_to) {
        if (strcmp(booking_to, "completed") == 0 && strcmp(status, "initiating") == 0)
            rc = move(db, bid, status, "calling", s.events, &s.nevents);
        if (rc == STORE_OK) rc = move(db, bid, status, booking_to, s.events, &s.nevents);
        // A refusal (SW001) means the booking is somewhere a call cannot be: our bug.
        if (rc != STORE_OK) return store_abort(db, STORE_ERR_DB);
    }

    if (requeue) {
        num_t att = num(attempt), delay = num(in->retry_delay_s);
        const char *pq[] = {l.queue_id, att.text, delay.text, reason};
        res = db_exec_prepared(
            db, "dispatch_settle_requeue",
            "UPDATE call_queue SET status = 'queued', attempt = $2::integer,"
            " next_attempt_at = now() + make_interval(secs => $3::integer), agent_id = NULL, account_id = NULL,"
            " lease_owner = NULL, lease_until = NULL, vapi_call_id = NULL, dial_started_at = NULL,"
            " last_error = COALESCE(left($4, 500), last_error)"
            " WHERE id = $1::uuid RETURNING " SQL_RFC3339("next_attempt_at"),
            4, pq, NULL);
        if (!res) return store_abort(db, STORE_ERR_DB);
        if (PQntuples(res) == 1) store_copy(s.next_attempt_at, sizeof s.next_attempt_at, res, 0, 0);
        PQclear(res);
        copy_str(s.queue_status, sizeof s.queue_status, "queued");
        s.state = DISPATCH_REQUEUED;
        s.retry_delay_s = in->retry_delay_s;
    } else {
        const char *pq[] = {l.queue_id, queue_to, s.vapi_call_id[0] ? s.vapi_call_id : NULL,
                            strcmp(queue_to, "done") == 0 ? NULL : reason};
        char sqlstate[6];
        res = db_exec_prepared(db, "dispatch_settle_end",
                               "UPDATE call_queue SET status = $2::queue_status, lease_owner = NULL, lease_until = NULL,"
                               " vapi_call_id = COALESCE($3, vapi_call_id), last_error = COALESCE(left($4, 500), last_error)"
                               " WHERE id = $1::uuid",
                               4, pq, sqlstate);
        if (!res) return store_abort(db, strcmp(sqlstate, "23505") == 0 ? STORE_ERR_CONFLICT : STORE_ERR_DB);
        PQclear(res);
        copy_str(s.queue_status, sizeof s.queue_status, queue_to);
        s.state = !booking_to ? DISPATCH_CLOSED : strcmp(queue_to, "done") == 0 ? DISPATCH_DONE : DISPATCH_FAILED;
    }
    s.attempt = attempt;
    copy_str(s.booking_status, sizeof s.booking_status, status);

    if (in->outcome == DISPATCH_REQUEUE_NO_ATTEMPT && in->hold_account_s > 0 && l.account_id[0]) {
        num_t hold = num(in->hold_account_s);
        const char *ph[] = {l.account_id, hold.text, reason ? reason : dispatch_outcome_name(in->outcome)};
        res = db_exec_prepared(
            db, "dispatch_settle_hold",
            "UPDATE vapi_accounts SET held_until = GREATEST(held_until, now() + make_interval(secs => $2::integer)),"
            " hold_reason = left($3, 200) WHERE id = $1::uuid RETURNING id",
            3, ph, NULL);
        if (!res) return store_abort(db, STORE_ERR_DB);
        s.account_held = PQntuples(res) == 1;
        PQclear(res);
    }

    char *details = settle_details(in, &l, requeue);
    if (!details) return store_abort(db, STORE_ERR_DB);
    rc = call_events_add(db, bid, s.vapi_call_id[0] ? s.vapi_call_id : NULL, lost_only ? "call.lost" : "call.settled",
                         dispatch_outcome_name(in->outcome), details);
    free(details);
    if (rc != STORE_OK) return store_abort(db, STORE_ERR_DB);

    if (strcmp(status, "failed") == 0 && booking_to) {
        res = db_exec_prepared(db, "dispatch_settle_paid",
                               "SELECT status = 'paid' FROM payments WHERE booking_id = $1::uuid", 1, pb, NULL);
        if (!res) return store_abort(db, STORE_ERR_DB);
        s.refund_due = PQntuples(res) == 1 && strcmp(PQgetvalue(res, 0, 0), "t") == 0;
        PQclear(res);
    }
    if (db_commit(db) != 0) return STORE_ERR_DB;
    *out = s;
    return STORE_OK;
}

int dispatch_settle(db_t *db, const dispatch_settle_t *in, dispatch_settled_t *out) {
    assert(db && in && out);
    return settle_core(db, in, false, out);
}

int dispatch_requeue_lost(db_t *db, const char *booking_id, int64_t claim, dispatch_settled_t *out) {
    assert(db && out);
    if (!store_is_uuid(booking_id)) return STORE_ERR_NOT_FOUND;
    dispatch_settle_t in = {
        .booking_id = booking_id, .claim = claim, .outcome = DISPATCH_REQUEUE_NO_ATTEMPT,
        .ended_reason = "lost: no such call at VAPI", .duration_s = -1,
    };
    return settle_core(db, &in, true, out);
}

int dispatch_report(db_t *db, const char *vapi_call_id, int duration_s, int64_t cost_micros, const char *ended_reason,
                    const char *recording_url) {
    assert(db);
    if (!store_len_ok(vapi_call_id, STORE_REF_MAX - 1, true)) return STORE_ERR_NOT_FOUND;
    if (!url_ok(recording_url)) return STORE_ERR_INVALID;
    num_t dur = num(duration_s), cost = num(cost_micros);
    const char *params[] = {vapi_call_id, duration_s >= 0 ? dur.text : NULL, cost_micros > 0 ? cost.text : NULL,
                            utf8_or_null(ended_reason), utf8_or_null(recording_url)};
    char sqlstate[6];
    PGresult *res = db_exec_prepared(
        db, "dispatch_report",
        "UPDATE bookings SET call_duration_s = COALESCE(call_duration_s, $2::integer),"
        " call_cost = COALESCE(call_cost, $3::numeric / 1000000),"
        " ended_reason = COALESCE(ended_reason, left($4, " STR(DISPATCH_REASON_MAX) ")),"
        " recording_url = COALESCE(recording_url, $5)"
        " WHERE vapi_call_id = $1 RETURNING id",
        5, params, sqlstate);
    if (!res) return store_rc_from_sqlstate(sqlstate);
    int rc = PQntuples(res) >= 1 ? STORE_OK : STORE_ERR_NOT_FOUND;
    PQclear(res);
    return rc;
}

// ---- recovery ------------------------------------------------------------------------------------------

int dispatch_expired_leases(db_t *db, const char *owner, int lease_s, int limit, dispatch_assignment_t **out,
                            size_t *n) {
    assert(db && out && n);
    if (!store_len_ok(owner, DISPATCH_OWNER_MAX - 1, true) || lease_s <= 0 || limit <= 0) return STORE_ERR_INVALID;
    num_t lease = num(lease_s), lim = num(limit);
    const char *params[] = {owner, lease.text, lim.text};
    // The outer SELECT sees call_queue as it was before the UPDATE (one snapshot), so the new
    // lease comes from the UPDATE's RETURNING and the previous owner from the locked row.
    PGresult *res = db_exec_prepared(
        db, "dispatch_expired_leases",
        "WITH due AS ("
        "  SELECT id, lease_owner FROM call_queue"
        "   WHERE status = 'dialing' AND lease_until < now()"
        "   ORDER BY lease_until LIMIT $3::integer FOR UPDATE SKIP LOCKED),"
        " leased AS ("
        "  UPDATE call_queue q SET lease_owner = $1, lease_until = now() + make_interval(secs => $2::integer)"
        "  FROM due WHERE q.id = due.id RETURNING q.id, q.lease_until, due.lease_owner AS previous_owner)"
        " SELECT " ASSIGNMENT_COLUMNS("l.previous_owner", "l.lease_until")
        " FROM leased l JOIN call_queue q ON q.id = l.id" ASSIGNMENT_JOINS
        " ORDER BY q.lease_until",
        3, params, NULL);
    if (!res) return STORE_ERR_DB;
    int rows = PQntuples(res);
    dispatch_assignment_t *list = rows > 0 ? calloc((size_t)rows, sizeof *list) : NULL;
    if (rows > 0 && !list) {
        PQclear(res);
        return STORE_ERR_DB;
    }
    for (int r = 0; r < rows; r++) assignment_row(res, r, &list[r]);
    PQclear(res);
    *out = list;
    *n = (size_t)rows;
    return STORE_OK;
}

// ---- monitor ----------------------------------------------------------------------------------------------

static int call_refs(PGresult *res, dispatch_call_ref_t **out, size_t *n) {
    int rows = PQntuples(res);
    dispatch_call_ref_t *list = rows > 0 ? calloc((size_t)rows, sizeof *list) : NULL;
    if (rows > 0 && !list) {
        PQclear(res);
        return STORE_ERR_DB;
    }
    for (int r = 0; r < rows; r++) {
        dispatch_call_ref_t *c = &list[r];
        store_copy(c->booking_id, sizeof c->booking_id, res, r, 0);
        store_copy(c->vapi_call_id, sizeof c->vapi_call_id, res, r, 1);
        store_copy(c->control_url, sizeof c->control_url, res, r, 2);
        store_copy(c->account_id, sizeof c->account_id, res, r, 3);
        store_copy(c->calling_at, sizeof c->calling_at, res, r, 4);
        store_copy(c->last_event_at, sizeof c->last_event_at, res, r, 5);
        c->max_duration_s = (int)store_int64(res, r, 6);
        c->calling_s = (int)store_int64(res, r, 7);
    }
    PQclear(res);
    *out = list;
    *n = (size_t)rows;
    return STORE_OK;
}

#define CALL_REF_RETURNING                                                                                     \
    " RETURNING a.booking_id, a.vapi_call_id, a.control_url, a.account_id, " SQL_RFC3339("a.calling_at") ", " \
    SQL_RFC3339("a.last_event_at") ", a.max_duration_s,"                                                      \
    " COALESCE(floor(extract(epoch FROM now() - a.calling_at)), 0)::integer"

#define NOT_RECENTLY(col) " AND (" col " IS NULL OR " col " <= now() - interval '" STR(DISPATCH_RECHECK_S) " seconds')"

int dispatch_overdue(db_t *db, int grace_s, int limit, dispatch_call_ref_t **out, size_t *n) {
    assert(db && out && n);
    if (grace_s < 0 || limit <= 0) return STORE_ERR_INVALID;
    num_t grace = num(grace_s), lim = num(limit);
    const char *params[] = {grace.text, lim.text};
    PGresult *res = db_exec_prepared(
        db, "dispatch_overdue",
        "WITH due AS ("
        "  SELECT booking_id FROM active_calls"
        "   WHERE calling_at IS NOT NULL"
        "     AND calling_at + make_interval(secs => max_duration_s + $1::integer) < now()"
        NOT_RECENTLY("end_requested_at")
        "   ORDER BY calling_at LIMIT $2::integer FOR UPDATE SKIP LOCKED)"
        " UPDATE active_calls a SET end_requested_at = now() FROM due WHERE a.booking_id = due.booking_id"
        CALL_REF_RETURNING,
        2, params, NULL);
    if (!res) return STORE_ERR_DB;
    return call_refs(res, out, n);
}

int dispatch_quiet(db_t *db, int quiet_s, int limit, dispatch_call_ref_t **out, size_t *n) {
    assert(db && out && n);
    if (quiet_s < 0 || limit <= 0) return STORE_ERR_INVALID;
    num_t quiet = num(quiet_s), lim = num(limit);
    const char *params[] = {quiet.text, lim.text};
    PGresult *res = db_exec_prepared(
        db, "dispatch_quiet",
        "WITH due AS ("
        "  SELECT booking_id FROM active_calls"
        "   WHERE COALESCE(last_event_at, started_at) < now() - make_interval(secs => $1::integer)"
        NOT_RECENTLY("monitor_at")
        "   ORDER BY COALESCE(last_event_at, started_at) LIMIT $2::integer FOR UPDATE SKIP LOCKED)"
        " UPDATE active_calls a SET monitor_at = now() FROM due WHERE a.booking_id = due.booking_id"
        CALL_REF_RETURNING,
        2, params, NULL);
    if (!res) return STORE_ERR_DB;
    return call_refs(res, out, n);
}

// ---- checks -----------------------------------------------------------------------------------------------

int dispatch_capacity_check(db_t *db, bool *ok) {
    assert(db && ok);
    PGresult *res = db_exec_prepared(
        db, "dispatch_capacity_check",
        "WITH tries AS ("
        "  SELECT agent_id, account_id, status FROM call_queue WHERE status IN ('dialing', 'active')),"
        " agents AS ("
        "  SELECT a.active_calls,"
        "   (SELECT count(*) FROM tries t WHERE t.agent_id = a.id) AS in_progress,"
        "   (SELECT count(*) FROM active_calls c WHERE c.agent_id = a.id)"
        "   + (SELECT count(*) FROM tries t WHERE t.agent_id = a.id AND t.status = 'dialing') AS rows_plus_dialing"
        "  FROM vapi_agents a),"
        " accounts AS ("
        "  SELECT c.active_calls,"
        "   (SELECT count(*) FROM tries t WHERE t.account_id = c.id) AS in_progress,"
        "   (SELECT count(*) FROM active_calls x WHERE x.account_id = c.id)"
        "   + (SELECT count(*) FROM tries t WHERE t.account_id = c.id AND t.status = 'dialing') AS rows_plus_dialing"
        "  FROM vapi_accounts c)"
        " SELECT (SELECT count(*) FROM agents WHERE active_calls <> in_progress OR active_calls <> rows_plus_dialing)"
        "      + (SELECT count(*) FROM accounts WHERE active_calls <> in_progress OR active_calls <> rows_plus_dialing)",
        0, NULL, NULL);
    if (!res) return STORE_ERR_DB;
    bool good = PQntuples(res) == 1 && store_int64(res, 0, 0) == 0;
    PQclear(res);
    *ok = good;
    return STORE_OK;
}
