// storage/dispatch.c — claims, starts, settles and recovery of calls (see dispatch.h).
//
// Locking, once more, because every deadlock argument rests on it: a transaction here locks the
// booking row and its queue row together (FOR UPDATE OF b, q), then touches the active_calls row,
// then the account, then the agent. bookings.c (cancel) and payments.c lock the booking first too.
// A claim locks queue rows and bookings with SKIP LOCKED (it never waits for them), then all the
// accounts it takes capacity on, in id order, then the agents, in id order; claims take one
// advisory transaction lock first and run one at a time. A settle holds at most one account and
// one agent, always the account first, so it cannot close a cycle with a claim. The batch forms
// lock their bookings (with their queue rows) in id order and wait for no other booking. The
// monitor's stamping statements take active_calls rows with SKIP LOCKED and nothing else.
//
// "Known calls": a call id stays findable after its try was settled through bookings.vapi_call_id
// (the latest call) and call_events (every call: dispatch_started writes "call.started"). That is
// how a repeated end (already settled) is told apart from a call we never placed (not found).
#include "storage/dispatch.h"

#include <assert.h>
#include <inttypes.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <stddef.h>
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
//
// Set-based: one claim costs the same handful of statements whether it takes one row or 64. It
// reads every usable agent with its account once, fetches the due rows of the plans that have
// room, assigns agents in memory (the same choice, row by row, that a per-row query would make),
// then takes the capacity with one conditional UPDATE for the accounts and one for the agents
// (each agent and account row gets one new version per claim, not one per call: they are the
// hottest rows of the database, and every reader walks their dead versions until vacuum), and
// moves the rows and bookings with one statement. A conditional UPDATE that matches fewer rows than
// expected means the capacity changed under the claim (an operator, a hold): it starts again.

#define CLAIM_TRIES 3          // attempts of a claim whose capacity changed under it
#define CLAIM_AGENTS_MAX 1024  // usable agents one claim considers (the first by priority)

// A usable agent as the claim read it. active: its counter as read plus what this claim gave it.
typedef struct {
    char id[STORE_UUID_LEN];
    char plan[STORE_KEY_MAX];
    char assistant_id[STORE_REF_MAX];   // its own, else its plan's
    int priority;
    int active;
    int max;
    size_t account;                     // index in claim_t.accounts
    int taken;                          // calls this claim gave it
    int final;                          // its counter after this claim's UPDATE
} claim_agent_t;

typedef struct {
    char id[STORE_UUID_LEN];
    char phone_number_id[STORE_REF_MAX];
    int active;
    int max;
    int taken;
    int final;
} claim_account_t;

typedef struct {
    char queue_id[STORE_UUID_LEN];
    char booking_id[STORE_UUID_LEN];
    char plan[STORE_KEY_MAX];
    int attempt;
    int max_retries;
    char phone[DISPATCH_PHONE_MAX];
    int duration_seconds;
    int agent;                          // index in claim_t.agents; -1: no agent with room
} due_row_t;

typedef struct {
    claim_agent_t *agents;
    size_t nagents;
    claim_account_t *accounts;
    size_t naccounts;
    char (*plans)[STORE_KEY_MAX];       // every plan
    size_t nplans;
    due_row_t *rows;
    size_t nrows;
} claim_t;

static void claim_clear(claim_t *c) {
    free(c->agents);
    free(c->accounts);
    free(c->plans);
    if (c->rows) OPENSSL_cleanse(c->rows, c->nrows * sizeof *c->rows);
    free(c->rows);
    memset(c, 0, sizeof *c);
}

// "{a,b,c}": a PostgreSQL array literal of items that need no quoting (UUIDs, plan keys, numbers).
// malloc'ed; NULL when out of memory.
static char *array_literal(const char *const *items, size_t n) {
    size_t len = 3;
    for (size_t i = 0; i < n; i++) len += strlen(items[i]) + 1;
    char *out = malloc(len);
    if (!out) return NULL;
    size_t at = 0;
    out[at++] = '{';
    for (size_t i = 0; i < n; i++) {
        size_t l = strlen(items[i]);
        if (i > 0) out[at++] = ',';
        memcpy(out + at, items[i], l);
        at += l;
    }
    out[at++] = '}';
    out[at] = '\0';
    return out;
}

// The same for numbers.
static char *int_array_literal(const int *values, size_t n) {
    num_t *nums = n > 0 ? calloc(n, sizeof *nums) : NULL;
    const char **items = n > 0 ? calloc(n, sizeof *items) : NULL;
    char *out = NULL;
    if (n == 0 || (nums && items)) {
        for (size_t i = 0; i < n; i++) {
            nums[i] = num(values[i]);
            items[i] = nums[i].text;
        }
        out = array_literal(items, n);
    }
    free(nums);
    free(items);
    return out;
}

// The same for any text: every element double-quoted (backslash before " and \\); NULL items
// become NULL. malloc'ed; NULL when out of memory.
static char *text_array_literal(const char *const *items, size_t n) {
    size_t len = 3;
    for (size_t i = 0; i < n; i++) len += items[i] ? 2 * strlen(items[i]) + 3 : 5;
    char *out = malloc(len);
    if (!out) return NULL;
    size_t at = 0;
    out[at++] = '{';
    for (size_t i = 0; i < n; i++) {
        if (i > 0) out[at++] = ',';
        if (!items[i]) {
            memcpy(out + at, "NULL", 4);
            at += 4;
            continue;
        }
        out[at++] = '"';
        for (const char *c = items[i]; *c; c++) {
            if (*c == '"' || *c == '\\') out[at++] = '\\';
            out[at++] = *c;
        }
        out[at++] = '"';
    }
    out[at++] = '}';
    out[at] = '\0';
    return out;
}

static size_t account_index(claim_t *c, const PGresult *res, int r) {
    const char *id = PQgetvalue(res, r, 6);
    for (size_t i = 0; i < c->naccounts; i++)
        if (strcmp(c->accounts[i].id, id) == 0) return i;
    claim_account_t *x = &c->accounts[c->naccounts];
    copy_str(x->id, sizeof x->id, id);
    store_copy(x->phone_number_id, sizeof x->phone_number_id, res, r, 7);
    x->active = (int)store_int64(res, r, 8);
    x->max = (int)store_int64(res, r, 9);
    return c->naccounts++;
}

// Every plan, and the usable agents (enabled, in an enabled account that is not held, both below
// their limits, an assistant to call with: the agent's or its plan's) with their accounts, the
// agent of highest priority first, then the oldest. No row is locked: the UPDATEs check again.
static int claim_read_capacity(db_t *db, claim_t *c) {
    PGresult *res = db_exec_prepared(
        db, "dispatch_claim_capacity",
        "SELECT p.key::text, a.id, COALESCE(a.assistant_id, p.vapi_assistant_id), a.priority, a.active_calls,"
        " a.max_concurrent, c.id, c.phone_number_id, c.active_calls, c.max_concurrent"
        " FROM plans p LEFT JOIN (vapi_agents a JOIN vapi_accounts c ON c.id = a.account_id)"
        "   ON a.plan = p.key AND a.enabled AND c.enabled AND (c.held_until IS NULL OR c.held_until <= now())"
        "  AND a.active_calls < a.max_concurrent AND c.active_calls < c.max_concurrent"
        "  AND COALESCE(a.assistant_id, p.vapi_assistant_id) IS NOT NULL"
        " ORDER BY a.priority DESC NULLS LAST, a.created_at, a.id",
        0, NULL, NULL);
    if (!res) return STORE_ERR_DB;
    int rows = PQntuples(res);
    size_t cap = rows < CLAIM_AGENTS_MAX ? (size_t)rows : CLAIM_AGENTS_MAX;
    c->agents = cap > 0 ? calloc(cap, sizeof *c->agents) : NULL;
    c->accounts = cap > 0 ? calloc(cap, sizeof *c->accounts) : NULL;
    c->plans = rows > 0 ? calloc((size_t)rows, sizeof *c->plans) : NULL;   // each plan has a row
    if ((cap > 0 && (!c->agents || !c->accounts)) || (rows > 0 && !c->plans)) {
        PQclear(res);
        return STORE_ERR_DB;
    }
    for (int r = 0; r < rows; r++) {
        const char *plan = PQgetvalue(res, r, 0);
        bool known = false;
        for (size_t i = 0; i < c->nplans && !known; i++) known = strcmp(c->plans[i], plan) == 0;
        if (!known) copy_str(c->plans[c->nplans++], STORE_KEY_MAX, plan);
        if (PQgetisnull(res, r, 1) || c->nagents == cap) continue;
        claim_agent_t *g = &c->agents[c->nagents++];
        copy_str(g->plan, sizeof g->plan, plan);
        store_copy(g->id, sizeof g->id, res, r, 1);
        store_copy(g->assistant_id, sizeof g->assistant_id, res, r, 2);
        g->priority = (int)store_int64(res, r, 3);
        g->active = (int)store_int64(res, r, 4);
        g->max = (int)store_int64(res, r, 5);
        g->account = account_index(c, res, r);
    }
    PQclear(res);
    return STORE_OK;
}

static bool agent_has_room(const claim_t *c, const claim_agent_t *g) {
    const claim_account_t *x = &c->accounts[g->account];
    return g->active < g->max && x->active < x->max;
}

// How many calls of `plan` the agents could still take (an upper bound: agents share accounts),
// at most limit.
static int plan_room(const claim_t *c, const char *plan, int limit) {
    int64_t room = 0;
    for (size_t i = 0; i < c->nagents && room < limit; i++) {
        const claim_agent_t *g = &c->agents[i];
        const claim_account_t *x = &c->accounts[g->account];
        if (strcmp(g->plan, plan) != 0 || !agent_has_room(c, g)) continue;
        int a = g->max - g->active, b = x->max - x->active;
        room += a < b ? a : b;
    }
    return room < limit ? (int)room : limit;
}

// The due rows of the plans with room (status queued, next_attempt_at <= now(), booking queued),
// by priority, highest first, then age: for each plan at most what its agents can take, through
// call_queue_due_idx, so rows of a plan without room are never read; FOR UPDATE SKIP LOCKED.
// The booking's status is compared as text: as `b.status = 'queued'` it matches the index
// bookings_open_status_idx, and with statistics from before a burst of bookings the planner
// joined every queue row to a scan of every queued booking through it.
static int claim_due_rows(db_t *db, claim_t *c, int limit) {
    const char **plans = c->nplans > 0 ? calloc(c->nplans, sizeof *plans) : NULL;
    int *rooms = c->nplans > 0 ? calloc(c->nplans, sizeof *rooms) : NULL;
    if (c->nplans > 0 && (!plans || !rooms)) {
        free(plans);
        free(rooms);
        return STORE_ERR_DB;
    }
    size_t n = 0;
    for (size_t i = 0; i < c->nplans; i++) {
        int room = plan_room(c, c->plans[i], limit);
        if (room == 0) continue;
        plans[n] = c->plans[i];
        rooms[n++] = room;
    }
    char *plan_arr = n > 0 ? array_literal(plans, n) : NULL, *room_arr = n > 0 ? int_array_literal(rooms, n) : NULL;
    free(plans);
    free(rooms);
    if (n == 0) return STORE_OK;
    num_t lim = num(limit);
    const char *params[] = {lim.text, plan_arr, room_arr};
    PGresult *res = plan_arr && room_arr ? db_exec_prepared(
        db, "dispatch_claim_due",
        "SELECT d.id, d.booking_id, d.plan::text, d.attempt, d.max_retries, d.phone, d.duration_seconds"
        " FROM unnest($2::plan_key[], $3::integer[]) AS op(plan, room)"
        " CROSS JOIN LATERAL ("
        "   SELECT q.id, q.booking_id, q.plan, q.attempt, q.max_retries, u.phone, p.duration_seconds, q.priority,"
        "          q.created_at"
        "     FROM call_queue q JOIN bookings b ON b.id = q.booking_id JOIN users u ON u.id = b.user_id"
        "     JOIN plans p ON p.key = q.plan"
        "    WHERE q.status = 'queued' AND q.plan = op.plan AND q.next_attempt_at <= now()"
        "      AND b.status::text = 'queued'"
        "    ORDER BY q.priority DESC, q.created_at, q.id"
        "    LIMIT LEAST(op.room, $1::integer) FOR UPDATE OF q, b SKIP LOCKED) d"
        " ORDER BY d.priority DESC, d.created_at, d.id LIMIT $1::integer",
        3, params, NULL) : NULL;
    free(plan_arr);
    free(room_arr);
    if (!res) return STORE_ERR_DB;
    int rows = PQntuples(res);
    c->rows = rows > 0 ? calloc((size_t)rows, sizeof *c->rows) : NULL;
    if (rows > 0 && !c->rows) {
        PQclear(res);
        return STORE_ERR_DB;
    }
    c->nrows = (size_t)rows;
    for (int r = 0; r < rows; r++) {
        due_row_t *d = &c->rows[r];
        store_copy(d->queue_id, sizeof d->queue_id, res, r, 0);
        store_copy(d->booking_id, sizeof d->booking_id, res, r, 1);
        store_copy(d->plan, sizeof d->plan, res, r, 2);
        d->attempt = (int)store_int64(res, r, 3);
        d->max_retries = (int)store_int64(res, r, 4);
        store_copy(d->phone, sizeof d->phone, res, r, 5);
        d->duration_seconds = (int)store_int64(res, r, 6);
        d->agent = -1;
    }
    PQclear(res);
    return STORE_OK;
}

// x before y: higher priority, then fewer calls of its own, then fewer on its account, then the
// order the agents were read in (oldest first).
static bool agent_before(const claim_t *c, const claim_agent_t *x, const claim_agent_t *y) {
    if (x->priority != y->priority) return x->priority > y->priority;
    if (x->active != y->active) return x->active < y->active;
    return c->accounts[x->account].active < c->accounts[y->account].active;
}

// Gives each row, in claim order, the best agent of its plan that still has room. Returns how many
// rows got one.
static size_t claim_assign(claim_t *c) {
    size_t count = 0;
    for (size_t r = 0; r < c->nrows; r++) {
        due_row_t *d = &c->rows[r];
        int best = -1;
        for (size_t i = 0; i < c->nagents; i++) {
            const claim_agent_t *g = &c->agents[i];
            if (strcmp(g->plan, d->plan) != 0 || !agent_has_room(c, g)) continue;
            if (best < 0 || agent_before(c, g, &c->agents[best])) best = (int)i;
        }
        if (best < 0) continue;
        claim_agent_t *g = &c->agents[best];
        g->active++;
        g->taken++;
        c->accounts[g->account].active++;
        c->accounts[g->account].taken++;
        d->agent = best;
        count++;
    }
    return count;
}

// Runs one of the two capacity UPDATEs with its arrays and records the counters it returns in
// *finals (matched by id). STORE_OK; STORE_ERR_CONFLICT when a row no longer qualified; STORE_ERR_DB.
static int take_rows(db_t *db, const char *name, const char *sql, const char *const *params, int nparams,
                     size_t expected, const char *const *ids, int *finals) {
    PGresult *res = db_exec_prepared(db, name, sql, nparams, params, NULL);
    if (!res) return STORE_ERR_DB;
    int rc = (size_t)PQntuples(res) == expected ? STORE_OK : STORE_ERR_CONFLICT;
    for (int r = 0; r < PQntuples(res) && rc == STORE_OK; r++)
        for (size_t i = 0; i < expected; i++)
            if (strcmp(ids[i], PQgetvalue(res, r, 0)) == 0) finals[i] = (int)store_int64(res, r, 1);
    PQclear(res);
    return rc;
}

// The accounts' counters, then the agents' (the lock order of storage/dispatch.c), each raised by
// what the claim gave them, only while still usable and within their limits; the rows are locked
// in id order first, so two transactions that lock several of them never wait on each other.
static int claim_take_capacity(db_t *db, claim_t *c) {
    size_t n = c->naccounts > c->nagents ? c->naccounts : c->nagents;
    const char **ids = n > 0 ? calloc(n, sizeof *ids) : NULL, **accs = n > 0 ? calloc(n, sizeof *accs) : NULL,
               **plans = n > 0 ? calloc(n, sizeof *plans) : NULL;
    int *taken = n > 0 ? calloc(n, sizeof *taken) : NULL, *finals = n > 0 ? calloc(n, sizeof *finals) : NULL;
    size_t *which = n > 0 ? calloc(n, sizeof *which) : NULL;
    int rc = n == 0 || (ids && accs && plans && taken && finals && which) ? STORE_OK : STORE_ERR_DB;
    char *a1 = NULL, *a2 = NULL, *a3 = NULL, *a4 = NULL;

    size_t k = 0;
    for (size_t i = 0; rc == STORE_OK && i < c->naccounts; i++) {
        if (c->accounts[i].taken == 0) continue;
        ids[k] = c->accounts[i].id;
        taken[k] = c->accounts[i].taken;
        which[k++] = i;
    }
    if (rc == STORE_OK && k > 0) {
        a1 = array_literal(ids, k);
        a2 = int_array_literal(taken, k);
        const char *params[] = {a1, a2};
        rc = !a1 || !a2 ? STORE_ERR_DB : take_rows(
            db, "dispatch_claim_accounts",
            "WITH d AS (SELECT * FROM unnest($1::uuid[], $2::integer[]) AS d(id, n)),"
            " l AS MATERIALIZED (SELECT c.id FROM vapi_accounts c JOIN d ON d.id = c.id ORDER BY c.id"
            "   FOR NO KEY UPDATE OF c)"
            " UPDATE vapi_accounts c SET active_calls = c.active_calls + d.n FROM d, l"
            " WHERE c.id = d.id AND l.id = c.id AND c.enabled AND (c.held_until IS NULL OR c.held_until <= now())"
            "   AND c.active_calls + d.n <= c.max_concurrent"
            " RETURNING c.id, c.active_calls",
            params, 2, k, ids, finals);
        for (size_t i = 0; rc == STORE_OK && i < k; i++) c->accounts[which[i]].final = finals[i];
    }

    k = 0;
    for (size_t i = 0; rc == STORE_OK && i < c->nagents; i++) {
        if (c->agents[i].taken == 0) continue;
        ids[k] = c->agents[i].id;
        taken[k] = c->agents[i].taken;
        accs[k] = c->accounts[c->agents[i].account].id;
        plans[k] = c->agents[i].plan;
        which[k++] = i;
    }
    if (rc == STORE_OK && k > 0) {
        free(a1);
        free(a2);
        a1 = array_literal(ids, k);
        a2 = int_array_literal(taken, k);
        a3 = array_literal(accs, k);
        a4 = array_literal(plans, k);
        const char *params[] = {a1, a2, a3, a4};
        rc = !a1 || !a2 || !a3 || !a4 ? STORE_ERR_DB : take_rows(
            db, "dispatch_claim_agents",
            "WITH d AS (SELECT * FROM unnest($1::uuid[], $2::integer[], $3::uuid[], $4::plan_key[])"
            "   AS d(id, n, account, plan)),"
            " l AS MATERIALIZED (SELECT a.id FROM vapi_agents a JOIN d ON d.id = a.id ORDER BY a.id"
            "   FOR NO KEY UPDATE OF a)"
            " UPDATE vapi_agents a SET active_calls = a.active_calls + d.n FROM d, l"
            " WHERE a.id = d.id AND l.id = a.id AND a.account_id = d.account AND a.plan = d.plan AND a.enabled"
            "   AND a.active_calls + d.n <= a.max_concurrent"
            " RETURNING a.id, a.active_calls",
            params, 4, k, ids, finals);
        for (size_t i = 0; rc == STORE_OK && i < k; i++) c->agents[which[i]].final = finals[i];
    }
    free(a1);
    free(a2);
    free(a3);
    free(a4);
    free(ids);
    free(accs);
    free(plans);
    free(taken);
    free(finals);
    free(which);
    return rc;
}

// Fills the assignment of row d (its agent given) from what the claim knows.
static void claim_fill(const claim_t *c, const due_row_t *d, const char *owner, dispatch_assignment_t *a) {
    const claim_agent_t *g = &c->agents[d->agent];
    const claim_account_t *x = &c->accounts[g->account];
    copy_str(a->booking_id, sizeof a->booking_id, d->booking_id);
    copy_str(a->queue_id, sizeof a->queue_id, d->queue_id);
    copy_str(a->agent_id, sizeof a->agent_id, g->id);
    copy_str(a->account_id, sizeof a->account_id, x->id);
    a->attempt = d->attempt;
    a->max_retries = d->max_retries;
    copy_str(a->plan, sizeof a->plan, d->plan);
    copy_str(a->assistant_id, sizeof a->assistant_id, g->assistant_id);
    copy_str(a->phone_number_id, sizeof a->phone_number_id, x->phone_number_id);
    a->max_duration_s = d->duration_seconds;
    copy_str(a->phone, sizeof a->phone, d->phone);
    copy_str(a->queue_status, sizeof a->queue_status, "dialing");
    copy_str(a->lease_owner, sizeof a->lease_owner, owner);
}

// Moves the assigned rows to dialing (lease, agent, account, claim + 1) and their bookings to
// initiating, in one statement, and fills *list (count assignments, claim order) with the rows'
// new values. The status events are read afterwards (read_events): the trigger's rows are
// not visible to the statement that wrote them.
static int claim_mark(db_t *db, const claim_t *c, const char *owner, int lease_s, dispatch_assignment_t *list,
                      size_t count) {
    const char **qids = calloc(count, sizeof *qids), **agents = calloc(count, sizeof *agents),
               **accounts = calloc(count, sizeof *accounts);
    char *a1 = NULL, *a2 = NULL, *a3 = NULL;
    int rc = qids && agents && accounts ? STORE_OK : STORE_ERR_DB;
    for (size_t i = 0; rc == STORE_OK && i < count; i++) {
        qids[i] = list[i].queue_id;
        agents[i] = list[i].agent_id;
        accounts[i] = list[i].account_id;
    }
    if (rc == STORE_OK) {
        a1 = array_literal(qids, count);
        a2 = array_literal(agents, count);
        a3 = array_literal(accounts, count);
    }
    num_t lease = num(lease_s);
    const char *params[] = {a1, a2, a3, owner, lease.text};
    PGresult *res = rc == STORE_OK && a1 && a2 && a3 ? db_exec_prepared(
        db, "dispatch_claim_mark",
        "WITH d AS (SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[]) AS d(id, agent, account)),"
        " q AS (UPDATE call_queue q SET status = 'dialing', agent_id = d.agent, account_id = d.account,"
        "   lease_owner = $4, lease_until = now() + make_interval(secs => $5::integer), dial_started_at = now(),"
        "   claim_seq = q.claim_seq + 1, vapi_call_id = NULL"
        "   FROM d WHERE q.id = d.id AND q.status = 'queued'"
        "   RETURNING q.id, q.booking_id, q.claim_seq, q.lease_until, q.dial_started_at),"
        " b AS (UPDATE bookings b SET status = 'initiating' FROM q WHERE b.id = q.booking_id"
        "   RETURNING b.id, b.status_seq)"
        " SELECT q.id, q.claim_seq, " SQL_RFC3339("q.lease_until") ", " SQL_RFC3339("q.dial_started_at") ","
        " floor(extract(epoch FROM q.dial_started_at) * 1000)::bigint, b.status_seq"
        " FROM q JOIN b ON b.id = q.booking_id",
        5, params, NULL) : NULL;
    free(a1);
    free(a2);
    free(a3);
    free(qids);
    free(agents);
    free(accounts);
    if (!res) return STORE_ERR_DB;
    rc = (size_t)PQntuples(res) == count ? STORE_OK : STORE_ERR_DB;
    for (int r = 0; r < PQntuples(res) && rc == STORE_OK; r++) {
        const char *qid = PQgetvalue(res, r, 0);
        for (size_t i = 0; i < count; i++) {
            dispatch_assignment_t *a = &list[i];
            if (strcmp(a->queue_id, qid) != 0) continue;
            a->claim = store_int64(res, r, 1);
            store_copy(a->lease_until, sizeof a->lease_until, res, r, 2);
            store_copy(a->dial_started_at, sizeof a->dial_started_at, res, r, 3);
            a->dial_started_ms = store_int64(res, r, 4);
            a->event.seq = (int)store_int64(res, r, 5);
        }
    }
    PQclear(res);
    return rc;
}

// The booking_events rows a batch wrote, in one statement. items is an array of count structs of
// `stride` bytes, each holding a booking id (char[], at id_at) and a booking_event_t (at event_at)
// whose seq the caller set; status and at are filled in for the rows found. STORE_OK when every
// row was read, STORE_ERR_NOT_FOUND when some were not, STORE_ERR_DB when the query failed.
static int read_events(db_t *db, void *items, size_t stride, size_t count, size_t id_at, size_t event_at) {
    const char **ids = calloc(count, sizeof *ids);
    int *seqs = calloc(count, sizeof *seqs);
    char *a1 = NULL, *a2 = NULL;
    if (ids && seqs) {
        for (size_t i = 0; i < count; i++) {
            char *item = (char *)items + i * stride;
            ids[i] = item + id_at;
            seqs[i] = ((booking_event_t *)(item + event_at))->seq;
        }
        a1 = array_literal(ids, count);
        a2 = int_array_literal(seqs, count);
    }
    free(ids);
    free(seqs);
    const char *params[] = {a1, a2};
    PGresult *res = a1 && a2 ? db_exec_prepared(db, "dispatch_read_events",
                                                "SELECT e.booking_id, e.status::text, " SQL_RFC3339("e.at")
                                                " FROM unnest($1::uuid[], $2::integer[]) AS k(id, seq)"
                                                " JOIN booking_events e ON e.booking_id = k.id AND e.seq = k.seq",
                                                2, params, NULL)
                             : NULL;
    free(a1);
    free(a2);
    if (!res) return STORE_ERR_DB;
    int rc = (size_t)PQntuples(res) == count ? STORE_OK : STORE_ERR_NOT_FOUND;
    for (int r = 0; r < PQntuples(res); r++)
        for (size_t i = 0; i < count; i++) {
            char *item = (char *)items + i * stride;
            if (strcmp(item + id_at, PQgetvalue(res, r, 0)) != 0) continue;
            booking_event_t *e = (booking_event_t *)(item + event_at);
            store_copy(e->status, sizeof e->status, res, r, 1);
            store_copy(e->at, sizeof e->at, res, r, 2);
        }
    PQclear(res);
    return rc;
}

// The counters right after each assignment, in claim order: what the UPDATEs returned, less what
// later rows of the same claim took.
static void claim_counters(const claim_t *c, dispatch_assignment_t *list, size_t count) {
    int *agent_seen = c->nagents > 0 ? calloc(c->nagents, sizeof *agent_seen) : NULL;
    int *account_seen = c->naccounts > 0 ? calloc(c->naccounts, sizeof *account_seen) : NULL;
    size_t k = 0;
    for (size_t r = 0; r < c->nrows && k < count; r++) {
        const due_row_t *d = &c->rows[r];
        if (d->agent < 0) continue;
        const claim_agent_t *g = &c->agents[d->agent];
        const claim_account_t *x = &c->accounts[g->account];
        int ga = agent_seen ? ++agent_seen[d->agent] : g->taken;
        int xa = account_seen ? ++account_seen[g->account] : x->taken;
        list[k].agent_active = g->final - g->taken + ga;
        list[k].account_active = x->final - x->taken + xa;
        k++;
    }
    free(agent_seen);
    free(account_seen);
}

// What the claim leaves: for each plan, whether an agent still has room.
static void claim_room(const claim_t *c, dispatch_room_t *room) {
    memset(room, 0, sizeof *room);
    for (size_t p = 0; p < c->nplans && p < DISPATCH_PLANS_MAX; p++) {   // the others: "try" for the scheduler
        copy_str(room->plans[p].plan, sizeof room->plans[p].plan, c->plans[p]);
        for (size_t i = 0; i < c->nagents && !room->plans[p].room; i++)
            room->plans[p].room = strcmp(c->agents[i].plan, c->plans[p]) == 0 && agent_has_room(c, &c->agents[i]);
    }
    room->nplans = c->nplans < DISPATCH_PLANS_MAX ? c->nplans : DISPATCH_PLANS_MAX;
}

// One claim transaction. STORE_ERR_CONFLICT: the capacity changed under it (rolled back; try again).
static int claim_once(db_t *db, const char *owner, int lease_s, int limit, dispatch_assignment_t **out, size_t *n,
                      dispatch_room_t *room) {
    if (db_begin(db) != 0) return STORE_ERR_DB;
    PGresult *res = db_exec(db, "SELECT pg_advisory_xact_lock(" DISPATCH_CLAIM_LOCK_KEY ")", NULL);
    if (!res) return store_abort(db, STORE_ERR_DB);
    PQclear(res);
    claim_t c;
    memset(&c, 0, sizeof c);
    int rc = claim_read_capacity(db, &c);
    if (rc == STORE_OK) rc = claim_due_rows(db, &c, limit);
    size_t count = rc == STORE_OK ? claim_assign(&c) : 0;
    dispatch_assignment_t *list = count > 0 ? calloc(count, sizeof *list) : NULL;
    if (count > 0 && !list) rc = STORE_ERR_DB;
    for (size_t r = 0, k = 0; rc == STORE_OK && r < c.nrows; r++)
        if (c.rows[r].agent >= 0) claim_fill(&c, &c.rows[r], owner, &list[k++]);
    if (rc == STORE_OK && count > 0) rc = claim_take_capacity(db, &c);
    if (rc == STORE_OK && count > 0) rc = claim_mark(db, &c, owner, lease_s, list, count);
    if (rc == STORE_OK && count > 0) rc = read_events(db, list, sizeof *list, count, offsetof(dispatch_assignment_t, booking_id),
                                                     offsetof(dispatch_assignment_t, event)) == STORE_OK
                                             ? STORE_OK
                                             : STORE_ERR_DB;
    if (rc == STORE_OK) claim_counters(&c, list, count);
    // A refused status change (SW001) would be a bug here, not the caller's: a db error.
    if (rc != STORE_OK || db_commit(db) != 0) {
        db_rollback(db);
        dispatch_assignments_free(&list, count);
        claim_clear(&c);
        return rc == STORE_ERR_CONFLICT ? rc : STORE_ERR_DB;
    }
    if (room) claim_room(&c, room);
    claim_clear(&c);
    *out = list;
    *n = count;
    return STORE_OK;
}

int dispatch_claim_ex(db_t *db, const char *owner, int lease_s, int limit, dispatch_assignment_t **out, size_t *n,
                      dispatch_room_t *room) {
    assert(db && out && n);
    if (!store_len_ok(owner, DISPATCH_OWNER_MAX - 1, true) || lease_s <= 0 || limit <= 0) return STORE_ERR_INVALID;
    int rc = STORE_ERR_CONFLICT;
    for (int i = 0; i < CLAIM_TRIES && rc == STORE_ERR_CONFLICT; i++)
        rc = claim_once(db, owner, lease_s, limit, out, n, room);
    return rc == STORE_ERR_CONFLICT ? STORE_ERR_DB : rc;
}

int dispatch_claim(db_t *db, const char *owner, int lease_s, int limit, dispatch_assignment_t **out, size_t *n) {
    return dispatch_claim_ex(db, owner, lease_s, limit, out, n, NULL);
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

// The status is compared as text: as `q.status IN (...)` it matches the partial index
// call_queue_lease_idx, and with statistics from a queue that is almost all `done` the planner
// read every try in progress through it to find one booking (0.7 ms a call with 400 in flight,
// bench/b4-dispatch) instead of the one entry of call_queue_booking_id_key.
#define LOAD_WHERE_OPEN " AND q.status::text IN ('dialing', 'active')"

int dispatch_load(db_t *db, const char *booking_id, dispatch_assignment_t *out) {
    assert(db && out);
    if (!store_is_uuid(booking_id)) return STORE_ERR_NOT_FOUND;
    const char *params[] = {booking_id};
    PGresult *res = db_exec_prepared(db, "dispatch_load",
                                     "SELECT " ASSIGNMENT_COLUMNS("q.lease_owner", "q.lease_until")
                                     " FROM call_queue q" ASSIGNMENT_JOINS
                                     " WHERE q.booking_id = $1::uuid" LOAD_WHERE_OPEN,
                                     1, params, NULL);
    if (!res) return STORE_ERR_DB;
    int rc = PQntuples(res) == 1 ? STORE_OK : STORE_ERR_NOT_FOUND;
    if (rc == STORE_OK) assignment_row(res, 0, out);
    PQclear(res);
    return rc;
}

// Every row of res (taken: cleared here) as a new list of assignments; res NULL is a database error.
static int assignment_rows(PGresult *res, dispatch_assignment_t **out, size_t *n) {
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

int dispatch_load_many(db_t *db, const char *const *booking_ids, size_t count, dispatch_assignment_t **out,
                       size_t *n) {
    assert(db && out && n && (booking_ids || count == 0));
    const char **ids = count > 0 ? calloc(count, sizeof *ids) : NULL;
    if (count > 0 && !ids) return STORE_ERR_DB;
    size_t k = 0;
    for (size_t i = 0; i < count; i++)
        if (store_is_uuid(booking_ids[i])) ids[k++] = booking_ids[i];   // others cannot be found
    if (k == 0) {
        free(ids);
        *out = NULL;
        *n = 0;
        return STORE_OK;
    }
    char *arr = array_literal(ids, k);
    free(ids);
    const char *params[] = {arr};
    PGresult *res = arr ? db_exec_prepared(db, "dispatch_load_many",
                                           "SELECT " ASSIGNMENT_COLUMNS("q.lease_owner", "q.lease_until")
                                           " FROM call_queue q" ASSIGNMENT_JOINS
                                           " WHERE q.booking_id = ANY($1::uuid[])" LOAD_WHERE_OPEN,
                                           1, params, NULL)
                        : NULL;
    free(arr);
    return assignment_rows(res, out, n);
}

static bool url_ok(const char *url) { return store_len_ok(url, DISPATCH_URL_MAX - 1, false); }

// The items dispatch_started_many can take: valid, and one per booking (two starts of one booking
// in one statement would write its rows twice). *take[i] says which; returns how many.
static size_t starts_to_take(const dispatch_start_in_t *items, size_t n, bool *take) {
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        const dispatch_start_in_t *it = &items[i];
        take[i] = store_is_uuid(it->booking_id) && store_len_ok(it->vapi_call_id, STORE_REF_MAX - 1, true) &&
                  url_ok(it->control_url) && it->claim >= 0 && utf8_ok(it->vapi_call_id) &&
                  (!it->control_url || utf8_ok(it->control_url));
        for (size_t j = 0; j < i && take[i]; j++)
            take[i] = !take[j] || strcmp(items[j].booking_id, it->booking_id) != 0;
        k += take[i];
    }
    return k;
}

int dispatch_started_many(db_t *db, const dispatch_start_in_t *items, size_t n, dispatch_start_t *out,
                          bool *recorded) {
    assert(db && (items || n == 0) && out && recorded);
    for (size_t i = 0; i < n; i++) recorded[i] = false;
    bool *take = n > 0 ? calloc(n, sizeof *take) : NULL;
    const char **ids = n > 0 ? calloc(n, sizeof *ids) : NULL, **calls = n > 0 ? calloc(n, sizeof *calls) : NULL,
               **urls = n > 0 ? calloc(n, sizeof *urls) : NULL;
    num_t *claims = n > 0 ? calloc(n, sizeof *claims) : NULL;
    const char **claim_txt = n > 0 ? calloc(n, sizeof *claim_txt) : NULL;
    if (n > 0 && (!take || !ids || !calls || !urls || !claims || !claim_txt)) {
        free(take);
        free(ids);
        free(calls);
        free(urls);
        free(claims);
        free(claim_txt);
        return STORE_ERR_DB;
    }
    size_t k = starts_to_take(items, n, take), at = 0;
    for (size_t i = 0; i < n; i++) {
        if (!take[i]) continue;
        ids[at] = items[i].booking_id;
        calls[at] = items[i].vapi_call_id;
        urls[at] = items[i].control_url;
        claims[at] = num(items[i].claim);
        claim_txt[at] = claims[at].text;
        at++;
    }
    char *a1 = k > 0 ? array_literal(ids, k) : NULL, *a2 = k > 0 ? array_literal(claim_txt, k) : NULL;
    char *a3 = k > 0 ? text_array_literal(calls, k) : NULL, *a4 = k > 0 ? text_array_literal(urls, k) : NULL;
    const char *params[] = {a1, a2, a3, a4};
    // The bookings and their rows are locked in id order (two batches never wait on each other).
    PGresult *res = a1 && a2 && a3 && a4 ? db_exec_prepared(
        db, "dispatch_started_many",
        "WITH d AS (SELECT * FROM unnest($1::uuid[], $2::bigint[], $3::text[], $4::text[])"
        "   AS d(booking_id, claim, call_id, control_url)),"
        " l AS MATERIALIZED ("
        "  SELECT b.id, b.status::text AS booking_status, q.id AS queue_id, q.agent_id, q.account_id, q.attempt,"
        "         q.claim_seq, q.dial_started_at, p.duration_seconds, d.call_id, d.control_url"
        "    FROM d JOIN bookings b ON b.id = d.booking_id JOIN call_queue q ON q.booking_id = b.id"
        "    JOIN plans p ON p.key = q.plan"
        "   WHERE q.status::text = 'dialing' AND (d.claim = 0 OR q.claim_seq = d.claim)"
        "     AND (q.vapi_call_id IS NULL OR q.vapi_call_id = d.call_id)"
        "   ORDER BY b.id FOR UPDATE OF b, q),"
        " qu AS (UPDATE call_queue q SET status = 'active', vapi_call_id = l.call_id, lease_owner = NULL,"
        "   lease_until = NULL FROM l WHERE q.id = l.queue_id RETURNING q.id),"
        " ac AS (INSERT INTO active_calls (booking_id, agent_id, account_id, vapi_call_id, control_url, started_at,"
        "   calling_at, last_event_at, max_duration_s)"
        "   SELECT l.id, l.agent_id, l.account_id, l.call_id, l.control_url, COALESCE(l.dial_started_at, now()),"
        "     CASE WHEN l.booking_status = 'calling' THEN now() END, now(), l.duration_seconds FROM l"
        "   ON CONFLICT (booking_id) DO UPDATE SET agent_id = EXCLUDED.agent_id, account_id = EXCLUDED.account_id,"
        "    vapi_call_id = EXCLUDED.vapi_call_id, control_url = EXCLUDED.control_url,"
        "    started_at = EXCLUDED.started_at, calling_at = EXCLUDED.calling_at,"
        "    last_event_at = EXCLUDED.last_event_at, max_duration_s = EXCLUDED.max_duration_s, monitor_at = NULL,"
        "    end_requested_at = NULL"
        "   RETURNING booking_id),"
        " bu AS (UPDATE bookings b SET vapi_call_id = l.call_id FROM l WHERE b.id = l.id RETURNING b.id),"
        " ev AS (INSERT INTO call_events (booking_id, vapi_call_id, event_type, status, details)"
        "   SELECT l.id, l.call_id, 'call.started', 'started',"
        "     jsonb_build_object('attempt', l.attempt, 'claim', l.claim_seq) FROM l RETURNING booking_id)"
        " SELECT l.id, l.agent_id, l.account_id, l.attempt FROM l",
        4, params, NULL) : NULL;
    free(a1);
    free(a2);
    if (a3) OPENSSL_cleanse(a3, strlen(a3));
    if (a4) OPENSSL_cleanse(a4, strlen(a4));   // control URLs end calls: secrets
    free(a3);
    free(a4);
    free(ids);
    free(calls);
    free(urls);
    free(claims);
    free(claim_txt);
    int rc = res || k == 0 ? STORE_OK : STORE_ERR_DB;
    for (int r = 0; res && r < PQntuples(res); r++) {
        const char *bid = PQgetvalue(res, r, 0);
        for (size_t i = 0; i < n; i++) {
            if (!take[i] || strcmp(items[i].booking_id, bid) != 0) continue;
            dispatch_start_t *s = &out[i];
            memset(s, 0, sizeof *s);
            s->outcome = DISPATCH_STARTED;
            copy_str(s->booking_id, sizeof s->booking_id, bid);
            store_copy(s->agent_id, sizeof s->agent_id, res, r, 1);
            store_copy(s->account_id, sizeof s->account_id, res, r, 2);
            s->attempt = (int)store_int64(res, r, 3);
            recorded[i] = true;
        }
    }
    PQclear(res);
    free(take);
    return rc;
}

// The common start in one statement (one round trip instead of seven), as a batch of one: the try is still dialing this claim and no other call is noted on it. The booking and its
// queue row are locked first (the WITH's FOR UPDATE, rechecked on their latest versions), then
// everything is written as the transaction below writes it. 1: recorded (*s filled); 0: not the
// common case (nothing changed: the transaction below decides); -1: a database error, which the
// transaction below meets again and reports.
static int started_at_once(db_t *db, const char *booking_id, int64_t claim, const char *vapi_call_id,
                           const char *control_url, dispatch_start_t *s) {
    dispatch_start_in_t in = {.booking_id = booking_id, .claim = claim, .vapi_call_id = vapi_call_id,
                              .control_url = control_url};
    bool recorded = false;
    if (dispatch_started_many(db, &in, 1, s, &recorded) != STORE_OK) return -1;
    return recorded ? 1 : 0;
}

int dispatch_started(db_t *db, const char *booking_id, int64_t claim, const char *vapi_call_id,
                     const char *control_url, dispatch_start_t *out) {
    assert(db);
    if (!store_is_uuid(booking_id)) return STORE_ERR_NOT_FOUND;
    if (!store_len_ok(vapi_call_id, STORE_REF_MAX - 1, true) || !url_ok(control_url) || claim < 0)
        return STORE_ERR_INVALID;
    dispatch_start_t quick;
    memset(&quick, 0, sizeof quick);
    copy_str(quick.booking_id, sizeof quick.booking_id, booking_id);
    if (started_at_once(db, booking_id, claim, vapi_call_id, control_url, &quick) == 1) {
        quick.outcome = DISPATCH_STARTED;
        if (out) *out = quick;
        return STORE_OK;
    }
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

// The common ringing / in-progress in one statement: the call is recorded on its queue row, which
// is dialing or active; or (booking_id given) its start is not recorded yet and the booking's row
// is still dialing with no call noted, and the call id is noted on it (as the transaction below
// does for an early event). Locks the booking and the row as the transaction below does, then
// notes the event on the active_calls row and moves an initiating booking to calling. 1: done (*c
// filled, its event read back when the booking moved); 0: not the common case (nothing changed);
// -1: a database error (the transaction below meets it again and reports it).
static int calling_at_once(db_t *db, const char *vapi_call_id, const char *booking_id, dispatch_calling_t *c) {
    const char *params[] = {vapi_call_id, booking_id};
    PGresult *res = db_exec_prepared(
        db, "dispatch_calling_at_once",
        "WITH l AS MATERIALIZED ("
        "  SELECT b.id, b.status::text AS booking_status, q.id AS queue_id, q.vapi_call_id IS NULL AS early"
        "    FROM bookings b JOIN call_queue q ON q.booking_id = b.id"
        "   WHERE (q.vapi_call_id = $1 AND q.status::text IN ('dialing', 'active'))"
        "      OR (q.booking_id = $2::uuid AND q.vapi_call_id IS NULL AND q.status::text = 'dialing')"
        "   FOR UPDATE OF b, q),"
        " qe AS (UPDATE call_queue q SET vapi_call_id = $1 FROM l WHERE q.id = l.queue_id AND l.early RETURNING q.id),"
        " ac AS (UPDATE active_calls a SET calling_at = COALESCE(a.calling_at, now()), last_event_at = now()"
        "   FROM l WHERE a.booking_id = l.id RETURNING a.booking_id),"
        " mv AS (UPDATE bookings b SET status = 'calling' FROM l WHERE b.id = l.id AND l.booking_status = 'initiating'"
        "   RETURNING b.status_seq)"
        " SELECT l.id, (SELECT status_seq FROM mv) FROM l",
        2, params, NULL);
    if (!res) return -1;
    if (PQntuples(res) != 1) {
        PQclear(res);
        return 0;
    }
    memset(c, 0, sizeof *c);
    store_copy(c->booking_id, sizeof c->booking_id, res, 0, 0);
    char seq[16];
    store_copy(seq, sizeof seq, res, 0, 1);
    PQclear(res);
    if (!seq[0]) return 1;
    // The move is committed: read back the history row its trigger wrote, to publish it.
    const char *p2[] = {c->booking_id, seq};
    res = db_exec_prepared(db, "dispatch_calling_event",
                           "SELECT seq, status::text, " SQL_RFC3339("at") " FROM booking_events"
                           " WHERE booking_id = $1::uuid AND seq = $2::integer",
                           2, p2, NULL);
    if (res && PQntuples(res) == 1) {
        c->event.seq = (int)store_int64(res, 0, 0);
        store_copy(c->event.status, sizeof c->event.status, res, 0, 1);
        store_copy(c->event.at, sizeof c->event.at, res, 0, 2);
    }
    PQclear(res);   // a failed read loses the bus copy only: the NOTIFY and the history have it
    return 1;
}

int dispatch_calling_many(db_t *db, const char *const *vapi_call_ids, size_t n, dispatch_calling_t *out,
                          bool *found) {
    assert(db && (vapi_call_ids || n == 0) && out && found);
    const char **ids = n > 0 ? calloc(n, sizeof *ids) : NULL;
    if (n > 0 && !ids) return STORE_ERR_DB;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        found[i] = false;
        memset(&out[i], 0, sizeof out[i]);
        if (store_len_ok(vapi_call_ids[i], STORE_REF_MAX - 1, true) && utf8_ok(vapi_call_ids[i]))
            ids[k++] = vapi_call_ids[i];
    }
    char *arr = k > 0 ? text_array_literal(ids, k) : NULL;
    free(ids);
    if (k == 0) return STORE_OK;
    const char *params[] = {arr};
    // As calling_at_once for calls recorded on their queue rows, many at once: the bookings and
    // their rows are locked in id order.
    PGresult *res = arr ? db_exec_prepared(
        db, "dispatch_calling_many",
        "WITH d AS (SELECT DISTINCT call_id FROM unnest($1::text[]) AS d(call_id)),"
        " l AS MATERIALIZED ("
        "  SELECT b.id, b.status::text AS booking_status, q.vapi_call_id AS call_id"
        "    FROM d JOIN call_queue q ON q.vapi_call_id = d.call_id JOIN bookings b ON b.id = q.booking_id"
        "   WHERE q.status::text IN ('dialing', 'active')"
        "   ORDER BY b.id FOR UPDATE OF b, q),"
        " ac AS (UPDATE active_calls a SET calling_at = COALESCE(a.calling_at, now()), last_event_at = now()"
        "   FROM l WHERE a.booking_id = l.id RETURNING a.booking_id),"
        " mv AS (UPDATE bookings b SET status = 'calling' FROM l WHERE b.id = l.id AND l.booking_status = 'initiating'"
        "   RETURNING b.id, b.status_seq)"
        " SELECT l.call_id, l.id, mv.status_seq FROM l LEFT JOIN mv ON mv.id = l.id",
        1, params, NULL) : NULL;
    free(arr);
    if (!res) return STORE_ERR_DB;
    int rows = PQntuples(res);
    dispatch_calling_t *moved = rows > 0 ? calloc((size_t)rows, sizeof *moved) : NULL;
    size_t nmoved = 0;
    for (int r = 0; r < rows; r++) {
        const char *call = PQgetvalue(res, r, 0);
        bool first = true;
        for (size_t i = 0; i < n; i++) {
            if (strcmp(vapi_call_ids[i], call) != 0) continue;
            found[i] = true;
            store_copy(out[i].booking_id, sizeof out[i].booking_id, res, r, 1);
            if (first && !PQgetisnull(res, r, 2)) out[i].event.seq = (int)store_int64(res, r, 2);   // the move: once
            first = false;
        }
        if (moved && !PQgetisnull(res, r, 2)) {
            store_copy(moved[nmoved].booking_id, sizeof moved[nmoved].booking_id, res, r, 1);
            moved[nmoved++].event.seq = (int)store_int64(res, r, 2);
        }
    }
    PQclear(res);
    // The moves are committed; a failed read loses their bus copies only (the NOTIFY and the
    // history have them): their seq is then cleared so nothing half-filled is published.
    // rows that were read are used even when some were not (those lose their bus copy only)
    bool read = nmoved == 0 || read_events(db, moved, sizeof *moved, nmoved, offsetof(dispatch_calling_t, booking_id),
                                                  offsetof(dispatch_calling_t, event)) != STORE_ERR_DB;
    for (size_t i = 0; i < n; i++) {
        if (out[i].event.seq == 0) continue;
        bool filled = false;
        for (size_t m = 0; read && m < nmoved && !filled; m++) {
            if (strcmp(moved[m].booking_id, out[i].booking_id) != 0 || !moved[m].event.at[0]) continue;
            out[i].event = moved[m].event;
            filled = true;
        }
        if (!filled) memset(&out[i].event, 0, sizeof out[i].event);
    }
    free(moved);
    return STORE_OK;
}

int dispatch_calling(db_t *db, const char *vapi_call_id, const char *booking_id, dispatch_calling_t *out) {
    assert(db && out);
    if (!store_len_ok(vapi_call_id, STORE_REF_MAX - 1, true)) return STORE_ERR_INVALID;
    if (booking_id && !store_is_uuid(booking_id)) booking_id = NULL;   // hostile metadata: ignore it
    if (calling_at_once(db, vapi_call_id, booking_id, out) == 1) return STORE_OK;
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

// The history row a status change of this transaction wrote (seq as text).
static int read_event(db_t *db, const char *booking_id, const char *seq, booking_event_t *ev) {
    const char *params[] = {booking_id, seq};
    PGresult *res = db_exec_prepared(db, "dispatch_read_event",
                                     "SELECT seq, status::text, " SQL_RFC3339("at") " FROM booking_events"
                                     " WHERE booking_id = $1::uuid AND seq = $2::integer",
                                     2, params, NULL);
    if (!res) return STORE_ERR_DB;
    int rc = PQntuples(res) == 1 ? STORE_OK : STORE_ERR_DB;
    if (rc == STORE_OK) {
        ev->seq = (int)store_int64(res, 0, 0);
        store_copy(ev->status, sizeof ev->status, res, 0, 1);
        store_copy(ev->at, sizeof ev->at, res, 0, 2);
    }
    PQclear(res);
    return rc;
}

// The booking at the end of a try: its new status (target; NULL: none, it is final already), and
// unless `in` is NULL (a lost dial) what the call left: call id, duration, cost, ended reason,
// recording. One UPDATE for both: a second UPDATE of the row this transaction just wrote would
// check its foreign keys again and write one more version of it. Completed straight from
// initiating (the ringing never reached us) moves through calling first. Appends the events.
// STORE_OK; STORE_ERR_INVALID (a value the schema refuses); STORE_ERR_DB (also a refused status
// change: the booking is somewhere a call cannot be, our bug).
static int settle_booking(db_t *db, const char *bid, char status[STORE_STATUS_MAX], const char *target,
                          const dispatch_settle_t *in, const char *call_id, const char *reason, booking_event_t *events,
                          size_t *nevents) {
    int rc = STORE_OK;
    if (target && strcmp(target, "completed") == 0 && strcmp(status, "initiating") == 0)
        rc = move(db, bid, status, "calling", events, nevents);
    if (rc != STORE_OK) return STORE_ERR_DB;
    bool moves = target && strcmp(status, target) != 0;
    if (!in) return moves && move(db, bid, status, target, events, nevents) != STORE_OK ? STORE_ERR_DB : STORE_OK;
    num_t dur = num(in->duration_s), cost = num(in->cost_micros);
    const char *params[] = {bid, call_id[0] ? call_id : NULL, in->duration_s >= 0 ? dur.text : NULL,
                            in->cost_micros > 0 ? cost.text : NULL, reason, utf8_or_null(in->recording_url),
                            moves ? target : NULL};
    char sqlstate[6];
    PGresult *res = db_exec_prepared(db, "dispatch_settle_booking",
                                     "UPDATE bookings SET status = COALESCE($7::booking_status, status),"
                                     " vapi_call_id = COALESCE($2, vapi_call_id),"
                                     " call_duration_s = $3::integer, call_cost = $4::numeric / 1000000,"
                                     " ended_reason = left($5, " STR(DISPATCH_REASON_MAX) "), recording_url = $6"
                                     " WHERE id = $1::uuid RETURNING status_seq",
                                     7, params, sqlstate);
    if (!res) {
        rc = store_rc_from_sqlstate(sqlstate);
        return rc == STORE_ERR_INVALID ? rc : STORE_ERR_DB;
    }
    char seq[16] = "";
    if (PQntuples(res) == 1) store_copy(seq, sizeof seq, res, 0, 0);
    PQclear(res);
    if (!seq[0]) return STORE_ERR_DB;   // the row was locked: it cannot be gone
    if (!moves) return STORE_OK;
    if (read_event(db, bid, seq, &events[*nevents]) != STORE_OK) return STORE_ERR_DB;
    (*nevents)++;
    snprintf(status, STORE_STATUS_MAX, "%s", target);
    return STORE_OK;
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
    rc = settle_booking(db, bid, status, booking_to, lost_only ? NULL : in, s.vapi_call_id, reason, s.events,
                        &s.nevents);
    if (rc != STORE_OK) return store_abort(db, rc);

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
    return assignment_rows(res, out, n);
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
