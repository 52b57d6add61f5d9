// storage/dispatch.h — the transactions of call dispatch: the scheduler claims queued calls and
// takes capacity for them, the dialer and the VAPI webhook handling record how each call goes, and
// every end releases the capacity exactly once (tables call_queue, active_calls, vapi_agents,
// vapi_accounts counters, bookings, call_events).
//
// The life of one try at a call ("claim"):
//   queued --dispatch_claim--> dialing (lease, agent and account counters +1, booking initiating)
//     --dispatch_started--> active (active_calls row; the VAPI call id is known)
//     --dispatch_calling--> (booking calling: VAPI said ringing / in-progress)
//     --dispatch_settle--> done | queued (retry, or requeue without an attempt) | failed
//                          (counters -1, active_calls row gone)
// A dialer that died mid-request leaves a `dialing` row whose lease runs out:
//   dispatch_expired_leases hands it to a dialer (re-leased), which looks the call up at VAPI, then
//   reports dispatch_started (found) or dispatch_requeue_lost (not found).
// Each claim bumps call_queue.claim_seq; reports about a try that has no call id yet quote that
// number (dispatch_assignment_t.claim), so an answer about an earlier try never lands on a later one.
//
// Every function is one transaction, safe with several sweetyd processes on one database. Lock
// order everywhere: booking, then its queue row, then its active_calls row, then the account, then
// the agent; a statement that locks several bookings, accounts or agents locks them in id order.
// Claims are serialized among themselves by a transaction-level advisory lock (a claim reads the
// counters, assigns in memory, then takes the capacity: another claim in between would make it
// start over), and take the queue rows with FOR UPDATE SKIP LOCKED. Counters change only here, by
// conditional UPDATEs (WHERE active_calls < max_concurrent), and the schema's CHECK (active_calls
// BETWEEN 0 AND max_concurrent) backs that up.
//
// The dialer's bursts have batch forms (dispatch_load_many, dispatch_started_many,
// dispatch_calling_many): one statement for the common case of many calls, the same rows written
// as one by one; what a batch leaves (a repeat, a conflict, an early event) goes the single way.
//
// Return codes are those of storage/store.h; outputs are written only on STORE_OK. Ids that are
// not UUIDs are reported as STORE_ERR_NOT_FOUND.
#ifndef SWEETY_DISPATCH_H
#define SWEETY_DISPATCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "storage/bookings.h"
#include "storage/db.h"
#include "storage/store.h"

#define DISPATCH_OWNER_MAX 128      // lease owner names ("host:pid:dialer"), bytes incl. NUL
#define DISPATCH_PHONE_MAX 20       // E.164 + NUL
#define DISPATCH_URL_MAX 1024       // control URLs and recording URLs, bytes incl. NUL
#define DISPATCH_REASON_MAX 256     // ended reasons kept (longer ones are cut at a character boundary)
#define DISPATCH_RECHECK_S 20       // dispatch_overdue / dispatch_quiet return one call again only after this

// ---- the scheduler --------------------------------------------------------------------------------

typedef struct {
    char booking_id[STORE_UUID_LEN];
    char queue_id[STORE_UUID_LEN];
    int64_t claim;                         // this try's number: quote it in dispatch_started & co.
    char agent_id[STORE_UUID_LEN];
    char account_id[STORE_UUID_LEN];
    int attempt;                           // 0 for the first call, then the retries made before this one
    int max_retries;
    char plan[STORE_KEY_MAX];
    char assistant_id[STORE_REF_MAX];      // the agent's, else the plan's (never empty: see dispatch_claim)
    char phone_number_id[STORE_REF_MAX];   // the account's
    int max_duration_s;                    // the plan's length: maxDurationSeconds
    char phone[DISPATCH_PHONE_MAX];        // the customer's number: personal data, never logged or published
    char queue_status[STORE_STATUS_MAX];   // dialing (claim, expired lease) | active (dispatch_load of a started call)
    char vapi_call_id[STORE_REF_MAX];      // "" until known (a webhook may name it before the start is recorded)
    char lease_owner[DISPATCH_OWNER_MAX];  // dispatch_expired_leases: the owner whose lease ran out
    char lease_until[STORE_TS_MAX];
    char dial_started_at[STORE_TS_MAX];    // when this try was claimed
    int64_t dial_started_ms;               // the same, epoch milliseconds (0 when unknown)
    booking_event_t event;                 // dispatch_claim: the move to initiating (publish it); else seq 0
    int agent_active;                      // counters right after this assignment (capacity.changed);
    int account_active;                    // dispatch_load / expired leases: their current values
} dispatch_assignment_t;

// Wipes an assignment (it holds the customer's number). NULL is fine.
void dispatch_assignment_clear(dispatch_assignment_t *a);
// Wipes and frees an array of n assignments, and sets *list_p to NULL.
void dispatch_assignments_free(dispatch_assignment_t **list_p, size_t n);

// One transaction: takes up to `limit` due call_queue rows (status queued, next_attempt_at <= now(),
// booking queued) by priority, highest first, then age, FOR UPDATE SKIP LOCKED, and gives each an
// agent for its plan: enabled, in an enabled account that is not held, with an assistant id (its
// own or the plan's), the agent and the account both below their limits; the agent of highest
// priority first, then the least loaded (agent's calls, then account's), then the oldest. Both
// counters are raised with conditional UPDATEs (one per claim for all the accounts, one for all the
// agents), so they never pass their limits however many claims run; a claim whose capacity changed
// under it (an operator, a hold) starts again. A row for which no agent has room stays queued, and
// so do the later rows of its plan; rows of a plan without room are not even read. An assigned row:
// queue -> dialing (agent, account, lease_owner = owner, lease_until = now() + lease_s,
// dial_started_at, claim + 1), booking -> initiating.
// *out: malloc'ed array of *n assignments in claim order (dispatch_assignments_free), NULL when *n is 0.
// STORE_OK; STORE_ERR_INVALID (owner empty or too long, lease_s or limit <= 0); STORE_ERR_DB.
int dispatch_claim(db_t *db, const char *owner, int lease_s, int limit, dispatch_assignment_t **out, size_t *n);

#define DISPATCH_PLANS_MAX 16   // plans a dispatch_room_t reports (the schema has 4; more are claimed
                                // all the same, but not reported)

// What a claim leaves for the next: for each plan, whether one of its agents still has room (as
// the claim saw the counters: a call that ended meanwhile may have made more). The scheduler runs
// no claim for a booking of a plan without room until capacity changes.
typedef struct {
    size_t nplans;
    struct {
        char plan[STORE_KEY_MAX];
        bool room;
    } plans[DISPATCH_PLANS_MAX];
} dispatch_room_t;

// dispatch_claim, and *room (may be NULL) on STORE_OK.
int dispatch_claim_ex(db_t *db, const char *owner, int lease_s, int limit, dispatch_assignment_t **out, size_t *n,
                      dispatch_room_t *room);

// Hourly housekeeping: deletes call_queue rows that ended (done, failed, cancelled) more than
// older_than_s seconds ago. Their bookings keep the outcome and history; ended calls stay known
// through bookings and call_events. *deleted (may be NULL) receives the count.
// STORE_OK; STORE_ERR_INVALID (older_than_s < 0); STORE_ERR_DB.
int dispatch_purge_finished(db_t *db, int older_than_s, int64_t *deleted);

// ---- the dialer -----------------------------------------------------------------------------------

// The outstanding try of a booking (queue row dialing or active) with all a dialer needs: agent,
// account, assistant, phone number id, the customer's number, plan length, claim, call id.
// Only a row that is `dialing` with no vapi_call_id is still to be dialled; an active one is
// for lookups. STORE_OK (release with dispatch_assignment_clear); STORE_ERR_NOT_FOUND (no try
// outstanding: settled, requeued, cancelled); STORE_ERR_DB.
int dispatch_load(db_t *db, const char *booking_id, dispatch_assignment_t *out);

// dispatch_load for several bookings in one query (the dialer loads what the scheduler handed it
// in one go). Bookings without a try outstanding, and ids that are not UUIDs, are left out.
// *out: malloc'ed array of *n, in no particular order (dispatch_assignments_free), NULL when empty.
// STORE_OK; STORE_ERR_DB.
int dispatch_load_many(db_t *db, const char *const *booking_ids, size_t count, dispatch_assignment_t **out,
                       size_t *n);

typedef enum {
    DISPATCH_STARTED = 0,        // recorded now: publish call.started
    DISPATCH_ALREADY_STARTED,    // this call was recorded before (a repeat): nothing changed
    DISPATCH_ALREADY_ENDED,      // this call was already settled (its end arrived first): nothing changed
} dispatch_start_outcome_t;

typedef struct {
    dispatch_start_outcome_t outcome;
    char booking_id[STORE_UUID_LEN];
    char agent_id[STORE_UUID_LEN];
    char account_id[STORE_UUID_LEN];
    int attempt;
} dispatch_start_t;

// VAPI accepted the call of try `claim` (0: whichever try is dialling). One transaction: queue
// dialing -> active with the call id, lease cleared; an active_calls row (agent, account, call id,
// control_url, started_at = the claim's time, last_event_at = now(), max_duration_s = the plan's
// length, calling_at = now() when the booking is already calling); bookings.vapi_call_id; a
// call_events row "call.started". Idempotent for the same call id.
// control_url may be NULL (< DISPATCH_URL_MAX bytes); it ends the call, so it is a secret.
// out may be NULL. STORE_OK with the outcome; STORE_ERR_CONFLICT when the row is not dialing this
// try (it was requeued meanwhile, or another call holds it): the caller ends the call it just
// placed; STORE_ERR_NOT_FOUND (no booking or queue row); STORE_ERR_INVALID; STORE_ERR_DB.
int dispatch_started(db_t *db, const char *booking_id, int64_t claim, const char *vapi_call_id,
                     const char *control_url, dispatch_start_t *out);

typedef struct {
    const char *booking_id;
    int64_t claim;               // as for dispatch_started
    const char *vapi_call_id;
    const char *control_url;     // may be NULL
} dispatch_start_in_t;

// Several dispatch_started in one statement, for the common case only: the try is still dialing
// that claim and no other call is noted on it. recorded[i] tells which items were recorded
// (out[i] then filled, outcome DISPATCH_STARTED); nothing changed for the others, which the caller
// hands to dispatch_started one by one (it tells a repeat, a conflict, an invalid item apart).
// STORE_OK; STORE_ERR_DB (nothing recorded).
int dispatch_started_many(db_t *db, const dispatch_start_in_t *items, size_t n, dispatch_start_t *out,
                          bool *recorded);

typedef struct {
    char booking_id[STORE_UUID_LEN];
    booking_event_t event;       // the move to calling; seq 0 when nothing changed
} dispatch_calling_t;

// VAPI reported the call ringing or in progress. One transaction: booking initiating -> calling
// (only the first time), active_calls.calling_at = now() if unset (the duration monitor's clock),
// last_event_at = now(). The call is found by its id; booking_id (may be NULL: the metadata VAPI
// echoes) finds a call whose start the dialer has not recorded yet, and the call id is then noted
// on the queue row. A call that has ended already: STORE_OK, seq 0.
// STORE_OK; STORE_ERR_NOT_FOUND (a call we do not know); STORE_ERR_INVALID; STORE_ERR_DB.
int dispatch_calling(db_t *db, const char *vapi_call_id, const char *booking_id, dispatch_calling_t *out);

// dispatch_calling for several calls in one statement, for the common case only: the call is
// recorded on its queue row (started), which is dialing or active. found[i] tells which were
// (out[i] then filled; a call named twice moves its booking once: the event is on the first);
// nothing changed for the others, which the caller hands to dispatch_calling one by one.
// STORE_OK; STORE_ERR_DB (nothing changed).
int dispatch_calling_many(db_t *db, const char *const *vapi_call_ids, size_t n, dispatch_calling_t *out,
                          bool *found);

// Any event for an active call: last_event_at = now(). STORE_OK; STORE_ERR_NOT_FOUND (not active); STORE_ERR_DB.
int dispatch_touch(db_t *db, const char *vapi_call_id);

typedef enum {
    DISPATCH_COMPLETED = 0,          // the call took place: queue done, booking completed
    DISPATCH_RETRY,                  // not delivered (busy, no answer, voicemail, fault, other 4xx):
                                     // counts an attempt; queued again while retries are left, else failed
    DISPATCH_REQUEUE_NO_ATTEMPT,     // over-concurrency or an account-side start error: queued again,
                                     // no attempt counted, the account held for hold_account_s
    DISPATCH_FAIL,                   // give up now, whatever retries are left: failed
} dispatch_outcome_t;

// "completed", "retry", "requeue_no_attempt", "fail".
const char *dispatch_outcome_name(dispatch_outcome_t outcome);

typedef struct {
    const char *vapi_call_id;    // the call; NULL for a try that never got one
    const char *booking_id;      // NULL when vapi_call_id is given and recorded; else the booking
    int64_t claim;               // with a booking id: the try being settled (0: whichever is outstanding)
    dispatch_outcome_t outcome;
    const char *ended_reason;    // may be NULL; stored on the booking, the queue row and in call_events
    int duration_s;              // < 0: unknown
    int64_t cost_micros;         // millionths of a US dollar; <= 0: unknown (a later report may fill it)
    const char *recording_url;   // may be NULL (< DISPATCH_URL_MAX bytes)
    int retry_delay_s;           // RETRY and REQUEUE_NO_ATTEMPT: next_attempt_at = now() + this (>= 0)
    int hold_account_s;          // REQUEUE_NO_ATTEMPT: hold the account this long (0: no hold)
} dispatch_settle_t;

typedef enum {
    DISPATCH_ALREADY_SETTLED = 0,        // nothing changed: this try was settled before
    DISPATCH_DONE,                       // queue done, booking completed
    DISPATCH_REQUEUED,                   // queued again (a retry, or without an attempt): call.retry
    DISPATCH_FAILED,                     // queue and booking failed
    DISPATCH_CLOSED,                     // the booking was final already (cancelled ...): the row just ended
} dispatch_state_t;

// "already_settled", "completed", "requeued", "failed", "closed" (call.ended's outcome).
const char *dispatch_state_name(dispatch_state_t state);

typedef struct {
    dispatch_state_t state;
    char booking_id[STORE_UUID_LEN];
    char vapi_call_id[STORE_REF_MAX];    // "" when none
    char agent_id[STORE_UUID_LEN];       // whose capacity was released ("" when none)
    char account_id[STORE_UUID_LEN];
    int agent_active;                    // counters after the release (capacity.changed); -1 when none
    int account_active;
    bool account_held;
    char queue_status[STORE_STATUS_MAX]; // done | queued | failed (| cancelled, for a booking that was)
    char booking_status[STORE_STATUS_MAX];
    int attempt;                         // after the settle (a RETRY that requeues counts one)
    int max_retries;
    int duration_s;                      // as given (-1: unknown)
    int retry_delay_s;                   // when requeued: the delay applied; 0 otherwise
    char next_attempt_at[STORE_TS_MAX];  // when requeued; "" otherwise
    booking_event_t events[2];           // status changes written, oldest first: publish them
    size_t nevents;
    bool refund_due;                     // the booking failed and its payment is paid: refund it
} dispatch_settled_t;

// The end of a try, the ONE place capacity is released. One transaction: locks the booking and its
// queue row; when the row is not dialing/active for this call (or this claim), reports
// DISPATCH_ALREADY_SETTLED and changes nothing. Otherwise deletes the active_calls row, decrements the
// account's and the agent's counters (never below zero), stores the call id, duration, cost, ended
// reason and recording URL on the booking, adds a call_events row "call.settled", and by outcome:
//   COMPLETED: queue done, booking completed (initiating -> calling -> completed when VAPI's
//     ringing never reached us: two events);
//   RETRY: attempt < max_retries: queue queued with attempt + 1, next_attempt_at = now() +
//     retry_delay_s, agent/account/lease/call id cleared, booking queued; else queue and booking
//     failed (refund_due when paid: payments_refunds_due also finds it);
//   REQUEUE_NO_ATTEMPT: like a retry without counting one, and the account held (accounts_hold);
//   FAIL: queue and booking failed.
// A booking already final (it should not be) keeps its status; the queue row then ends too.
// STORE_OK (see state); STORE_ERR_NOT_FOUND (a call or booking we do not know);
// STORE_ERR_INVALID (no key, bad outcome, negative delay, over-long text); STORE_ERR_DB.
int dispatch_settle(db_t *db, const dispatch_settle_t *in, dispatch_settled_t *out);

// Fills in what an end-of-call report adds after the call was settled by someone else (the
// duration monitor): duration, cost, ended reason, recording URL on the booking whose latest call
// this is, where still unknown. Changes no status and no capacity.
// STORE_OK; STORE_ERR_NOT_FOUND; STORE_ERR_INVALID; STORE_ERR_DB.
int dispatch_report(db_t *db, const char *vapi_call_id, int duration_s, int64_t cost_micros, const char *ended_reason,
                    const char *recording_url);

// ---- crash recovery ---------------------------------------------------------------------------------

// Tries still `dialing` whose lease ran out (their dialer died, or its request outlived the lease):
// the answer to POST /call was lost, so the call may or may not exist. Each row returned is leased
// to `owner` for lease_s more seconds in the same statement (SKIP LOCKED), so one dialer looks it
// up; it then reports dispatch_started (the call exists) or dispatch_requeue_lost (it does not).
// The assignments come as dispatch_load gives them (lease_owner: the previous owner; look for calls
// created from about dial_started_ms, named for booking_id and attempt). Oldest lease first, at
// most `limit`. *out: malloc'ed array of *n (dispatch_assignments_free), NULL when empty.
// STORE_OK; STORE_ERR_INVALID; STORE_ERR_DB.
int dispatch_expired_leases(db_t *db, const char *owner, int lease_s, int limit, dispatch_assignment_t **out,
                            size_t *n);

// A lost try whose call VAPI does not know: its capacity released and the row queued again at
// once WITHOUT counting an attempt (the customer was never called). Only while the row is still
// dialing try `claim` (0: any) and no webhook has named its call; otherwise
// DISPATCH_ALREADY_SETTLED and nothing changes.
// STORE_OK; STORE_ERR_NOT_FOUND; STORE_ERR_DB.
int dispatch_requeue_lost(db_t *db, const char *booking_id, int64_t claim, dispatch_settled_t *out);

// ---- the duration monitor ---------------------------------------------------------------------------

typedef struct {
    char booking_id[STORE_UUID_LEN];
    char vapi_call_id[STORE_REF_MAX];
    char control_url[DISPATCH_URL_MAX];   // a secret: never logged
    char account_id[STORE_UUID_LEN];
    char calling_at[STORE_TS_MAX];        // "" when never calling
    int calling_s;                        // seconds since calling_at (0 when never calling)
    char last_event_at[STORE_TS_MAX];
    int max_duration_s;
} dispatch_call_ref_t;

typedef dispatch_call_ref_t dispatch_overdue_t;
typedef dispatch_call_ref_t dispatch_quiet_t;

// Active calls past their plan's length plus grace_s, counted from calling_at, oldest first, at
// most `limit`: for the monitor to end them. Quiet: active calls with no event for quiet_s seconds
// (since the start when there was none), for it to look them up (GET /call/{id}). A call returned
// is stamped and not returned again, by any daemon, for DISPATCH_RECHECK_S seconds (SKIP LOCKED:
// two monitors never take one call at once). *out: malloc'ed array of *n (free(); it holds control
// URLs), NULL when empty.
// STORE_OK; STORE_ERR_INVALID (negative seconds, limit <= 0); STORE_ERR_DB.
int dispatch_overdue(db_t *db, int grace_s, int limit, dispatch_call_ref_t **out, size_t *n);
int dispatch_quiet(db_t *db, int quiet_s, int limit, dispatch_call_ref_t **out, size_t *n);

// ---- checks -----------------------------------------------------------------------------------------

// For tests and operators: *ok = every agent's and account's active_calls equals the number of its
// tries in progress (queue rows dialing or active), and equals its active_calls rows plus its
// dialing rows. One statement, one snapshot. STORE_OK; STORE_ERR_DB.
int dispatch_capacity_check(db_t *db, bool *ok);

#endif
