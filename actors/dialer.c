// actors/dialer.c — the dialer actor: places outbound calls through VAPI (POST /call) for the
// assignments the scheduler makes, many in flight at once, applies VAPI's server messages, and
// settles every call exactly once (what initiate-vapi-call, handle-vapi-webhook and handle_call_end
// did in the earlier design).
//
// It alone decrypts account keys (AES-256-GCM under security.master_key, or during a rotation
// security.master_key_previous), only for the request that needs one, and wipes them afterwards.
// The customer's number is read from the database for the request and never logged nor put on the
// bus.
//
// Settling (storage/dispatch.h, dispatch_settle) is the one place capacity is released; it does
// nothing for a call already settled, so any number of end messages, lookups and monitor
// endings release a call once. How a call ended decides what follows:
//   - a normal end (customer or assistant hung up, max duration...): completed;
//   - not delivered (busy, no answer, voicemail, failed to connect, a provider or VAPI fault): back
//     to the queue after min(retry_base_s * 2^attempt, retry_max_s) ±20 %, until max_retries; then
//     failed (the payments actor refunds a paid booking);
//   - over VAPI's concurrency limit, or another account-side start error: back to the queue without
//     counting an attempt, and the account rests for scheduler.account_hold_s.
//
// A dial whose answer was lost (timeout, or this process died mid-request) is never simply dialled
// again: its lease expires and the dialer first looks for it at VAPI by its name
// ("booking <id> #<attempt>"); only when VAPI never saw it does it go back to the queue.
//
// Owns: its PostgreSQL connection, an outbound HTTP client, the VAPI client. Talks to: scheduler
// (call.assigned), http (vapi.webhook, answered with http.reply), duration-monitor (call.lookup),
// everyone (booking.status, call.started, call.event, call.ended, call.retry, capacity.changed).
#include "actors/dialer.h"

#include <openssl/crypto.h>
#include <string.h>
#include <unistd.h>

#include "actors/dispatch_events.h"
#include "actors/httpc.h"
#include "actors/vapi_client.h"
#include "common/crypto.h"
#include "common/util.h"
#include "storage/accounts.h"
#include "storage/dispatch.h"

#define DIALER_TIMER_MS 1000
#define LEASE_BATCH 32
#define DIAL_BATCH 64              // call.assigned loaded from the database in one query
#define KEY_CACHE 8                // sealed account keys kept for the length of one batch
#define START_BATCH 64             // accepted calls recorded in one statement
#define START_WAIT_MS 5            // ... gathered this long (VAPI's first message comes ~100 ms later)
#define HOOK_BATCH 64              // ringing / in-progress messages applied in one statement
// ... gathered while the loop drains its inbox: a 0 ms timer runs once the loop has taken what the
// inbox held, so a burst becomes one statement while a lone message is not held back (a 2 ms wait
// added 2 ms to every `calling` push in b2).
#define HOOK_WAIT_MS 0
#define CONCURRENCY_RETRY_S 1      // a requeue without an attempt waits at least this long
#define UNAVAILABLE_RETRY_S 5      // VAPI unreachable: try the call again after this long
#define CLOCK_SKEW_MS 60000        // between our clock and VAPI's createdAt, when looking a call up

typedef struct dialer dialer_t;

// A batch the loop applies once its timer fires (wait_ms 0: when the loop has taken what its
// sockets held). Each is a member of its dialer, which outlives the timer.
typedef struct {
    dialer_t *self;
    int wait_ms;
    bool armed;                      // the timer is set
    void (*flush)(dialer_t *self);
} deferred_t;

struct dialer {
    actor_ctx_t *ctx;
    httpc_t *http;
    vapi_client_t *vapi;
    unsigned char master_key[CRYPTO_KEY_LEN];
    unsigned char master_key_previous[CRYPTO_KEY_LEN];   // security.master_key_previous (rotation)
    bool has_previous;
    char owner[64];   // this instance's name on the leases it takes over
    char pending[DIAL_BATCH][STORE_UUID_LEN];   // bookings handed over (call.assigned), not yet loaded
    size_t npending;
    deferred_t dials;                            // dial_flush
    struct start_item *starts;                   // calls VAPI accepted, not yet recorded (START_BATCH)
    size_t nstarts;
    deferred_t start_records;                    // start_flush
    bus_vapi_webhook_t *hooks;                   // ringing / in-progress not yet applied (HOOK_BATCH)
    size_t nhooks;
    deferred_t hook_applies;                     // hook_flush
};

// A batch applied from the loop a moment later (see defer); `flush` may also be called at once.
static int on_deferred_due(zloop_t *loop, int timer_id, void *arg) {
    deferred_t *d = arg;
    d->armed = false;
    d->flush(d->self);
    return 0;
}

// Arms d's one-shot timer unless it is armed already; without a timer, flushes at once.
static void defer(dialer_t *self, deferred_t *d) {
    if (d->armed) return;
    if (zloop_timer(self->ctx->loop, d->wait_ms, 1, on_deferred_due, d) != -1) d->armed = true;
    else d->flush(self);
}

// A call VAPI accepted, to record (dispatch_started) and announce (call.started).
typedef struct start_item {
    char booking_id[STORE_UUID_LEN];
    int64_t claim;
    char agent_id[STORE_UUID_LEN];
    int attempt;
    char call_id[64];
    char control_url[512];   // a secret: wiped once used
} start_item_t;

// The sealed keys (ciphertext: not a secret in itself) of the accounts one batch of dials uses,
// so a batch reads each once. Each request still opens its key and wipes it after sending.
typedef struct {
    struct {
        char account_id[STORE_UUID_LEN];
        account_key_t key;
    } slot[KEY_CACHE];
    size_t n;
} key_cache_t;

static void key_cache_clear(key_cache_t *cache) {
    for (size_t i = 0; i < cache->n; i++) account_key_clear(&cache->slot[i].key);
    cache->n = 0;
}

// ---- how a call ended -------------------------------------------------------------------------

static bool starts_with(const char *s, const char *prefix) { return strncmp(s, prefix, strlen(prefix)) == 0; }

// providers.md §2.5: the reasons that mean the customer was not reached.
static bool not_delivered(const char *reason) {
    static const char *const reasons[] = {
        "customer-did-not-answer", "customer-busy", "voicemail", "twilio-failed-to-connect-call",
        "twilio-reported-customer-misdialed", "vonage-rejected", "vonage-failed-to-connect-call",
        "call.in-progress.error-sip-outbound-call-failed-to-connect",
        "call.in-progress.error-assistant-did-not-receive-customer-audio", "worker-shutdown",
        "phone-call-provider-closed-websocket", "assistant-not-found", "assistant-not-valid", NULL};
    for (size_t i = 0; reasons[i]; i++)
        if (strcmp(reason, reasons[i]) == 0) return true;
    return strstr(reason, "fault") != NULL || starts_with(reason, "pipeline-error") || starts_with(reason, "call.start.error");
}

static dispatch_outcome_t outcome_of(const char *reason) {
    if (starts_with(reason, "call.start.error-subscription")) return DISPATCH_REQUEUE_NO_ATTEMPT;
    return not_delivered(reason) ? DISPATCH_RETRY : DISPATCH_COMPLETED;
}

// min(base * 2^attempt, max), then ±20 % jitter (CONTRACT.md, statuses).
static int retry_delay_s(const config_t *cfg, int attempt) {
    int64_t delay = cfg->scheduler_retry_base_s;
    for (int i = 0; i < attempt && delay < cfg->scheduler_retry_max_s; i++) delay *= 2;
    if (delay > cfg->scheduler_retry_max_s) delay = cfg->scheduler_retry_max_s;
    uint32_t rnd = 0;
    util_random_bytes(&rnd, sizeof rnd);
    double factor = 0.8 + 0.4 * ((double)rnd / (double)UINT32_MAX);
    int s = (int)((double)delay * factor + 0.5);
    return s < 1 ? 1 : s;
}

// ---- settling ---------------------------------------------------------------------------------

// What a settle needs beyond the outcome; zero for "unknown".
typedef struct {
    const char *booking_id;      // for a try without a call id
    int64_t claim;               // that try (0: whichever is outstanding)
    const char *call_id;         // the call, when VAPI gave one
    const char *reason;
    int duration_s;              // -1: unknown
    int64_t cost_micros;
    const char *recording_url;
    int attempt;                 // retries made before this try (for the backoff)
    int delay_s;                 // requeue delay; 0: the backoff (retry) or CONCURRENCY_RETRY_S
    bool hold;                   // rest the account (over-concurrency, account-side errors)
} settle_args_t;

// Settles a try (by call id, or by booking and claim for one that never got a call id) and
// publishes what changed. Returns the store code; *state (may be NULL) what happened.
static int settle(dialer_t *self, dispatch_outcome_t outcome, const settle_args_t *a, dispatch_state_t *state) {
    bool by_call = a->call_id && *a->call_id;
    int delay = a->delay_s > 0 ? a->delay_s
                : outcome == DISPATCH_RETRY ? retry_delay_s(self->ctx->cfg, a->attempt)
                                            : CONCURRENCY_RETRY_S;
    // with both ids, an end that arrives before its start was recorded still settles its try
    dispatch_settle_t in = {.vapi_call_id = by_call ? a->call_id : NULL,
                            .booking_id = a->booking_id && *a->booking_id ? a->booking_id : NULL,
                            .claim = by_call ? 0 : a->claim,
                            .outcome = outcome,
                            .ended_reason = a->reason,
                            .duration_s = a->duration_s,
                            .cost_micros = a->cost_micros,
                            .recording_url = a->recording_url && *a->recording_url ? a->recording_url : NULL,
                            .retry_delay_s = delay,
                            .hold_account_s = a->hold ? (int)self->ctx->cfg->scheduler_account_hold_s : 0};
    dispatch_settled_t res;
    int rc = dispatch_settle(self->ctx->db, &in, &res);
    if (rc == STORE_OK && res.state != DISPATCH_ALREADY_SETTLED)
        dispatch_publish_settled(self->ctx, res.vapi_call_id, a->reason, &res);
    if (rc == STORE_OK && state) *state = res.state;
    return rc;
}

// Settles the try of assignment `a` that never got a call id.
static void settle_try(dialer_t *self, const dispatch_assignment_t *a, dispatch_outcome_t outcome, const char *reason,
                       int delay_s, bool hold) {
    settle_args_t args = {.booking_id = a->booking_id, .claim = a->claim, .reason = reason, .duration_s = -1,
                          .attempt = a->attempt, .delay_s = delay_s, .hold = hold};
    settle(self, outcome, &args, NULL);
}

// ---- placing a call ---------------------------------------------------------------------------

typedef struct {
    dialer_t *self;
    dispatch_assignment_t a;
} dial_job_t;

// The sealed key of an account: from the cache (may be NULL), else read (and kept in the cache
// when it has room; otherwise *tmp holds it and the caller clears it). NULL when unreadable.
static const account_key_t *sealed_key(dialer_t *self, key_cache_t *cache, const char *account_id,
                                       account_key_t *tmp) {
    for (size_t i = 0; cache && i < cache->n; i++)
        if (strcmp(cache->slot[i].account_id, account_id) == 0) return &cache->slot[i].key;
    account_key_t *dst = cache && cache->n < KEY_CACHE ? &cache->slot[cache->n].key : tmp;
    if (accounts_get_key(self->ctx->db, account_id, dst) != STORE_OK) return NULL;
    if (dst != tmp) snprintf(cache->slot[cache->n++].account_id, STORE_UUID_LEN, "%s", account_id);
    return dst;
}

// Decrypts the account's key into *key (wipe with crypto_secret_free). 0 or -1.
static int account_key(dialer_t *self, key_cache_t *cache, const char *account_id, char **key, size_t *len) {
    account_key_t tmp = {0};
    const account_key_t *enc = sealed_key(self, cache, account_id, &tmp);
    if (!enc) return -1;
    unsigned char *plain = NULL;
    size_t n = 0;
    int rc = crypto_open(self->master_key, enc->sealed, enc->sealed_len, enc->nonce, &plain, &n);
    // During a master key rotation, a key not yet re-encrypted (sweetyctl account rekey) opens
    // with the previous master key. Nothing is ever sealed with it.
    if (rc != 0 && self->has_previous) {
        rc = crypto_open(self->master_key_previous, enc->sealed, enc->sealed_len, enc->nonce, &plain, &n);
        if (rc == 0)
            log_info(&self->ctx->log, "account_key_previous_master", "account=%s msg=\"run sweetyctl account rekey\"",
                     account_id);
    }
    account_key_clear(&tmp);
    if (rc != 0) {
        log_error(&self->ctx->log, "account_key_unreadable", "account=%s", account_id);
        return -1;
    }
    *key = (char *)plain;   // crypto_open NUL-terminates what it opens
    *len = n;
    return 0;
}

static void on_orphan_ended(void *arg, const vapi_outcome_t *outcome) {
    (void)arg;
    (void)outcome;
}

static void announce_start(dialer_t *self, const start_item_t *it) {
    bus_msg_t msg;
    bus_msg_init(&msg, BUS_CALL_STARTED);
    snprintf(msg.u.call_started.booking_id, sizeof msg.u.call_started.booking_id, "%s", it->booking_id);
    snprintf(msg.u.call_started.call_id, sizeof msg.u.call_started.call_id, "%s", it->call_id);
    snprintf(msg.u.call_started.agent_id, sizeof msg.u.call_started.agent_id, "%s", it->agent_id);
    actor_publish(self->ctx, &msg);
    log_info(&self->ctx->log, "call_started", "booking=%s attempt=%d", it->booking_id, it->attempt);
}

// Records one accepted call on its own, whatever the case (a repeat, a call no longer wanted ...).
static void record_start(dialer_t *self, const start_item_t *it) {
    dispatch_start_t st;
    int rc = dispatch_started(self->ctx->db, it->booking_id, it->claim, it->call_id,
                              it->control_url[0] ? it->control_url : NULL, &st);
    if (rc == STORE_ERR_CONFLICT) {
        // The try was requeued meanwhile (or another call holds it): this call must not go on.
        log_warn(&self->ctx->log, "call_not_wanted", "booking=%s", it->booking_id);
        if (it->control_url[0]) vapi_call_end(self->vapi, it->control_url, on_orphan_ended, NULL);
        return;
    }
    if (rc != STORE_OK) {
        // Not recorded for now: the lease expires and the lookup finds the call at VAPI.
        log_warn(&self->ctx->log, "call_start_not_recorded", "booking=%s rc=%s", it->booking_id, store_err_name(rc));
        return;
    }
    if (st.outcome == DISPATCH_STARTED) announce_start(self, it);
}

static void start_item_fill(start_item_t *it, const dispatch_assignment_t *a, const vapi_call_t *call) {
    snprintf(it->booking_id, sizeof it->booking_id, "%s", a->booking_id);
    it->claim = a->claim;
    snprintf(it->agent_id, sizeof it->agent_id, "%s", a->agent_id);
    it->attempt = a->attempt;
    snprintf(it->call_id, sizeof it->call_id, "%s", call->id);
    snprintf(it->control_url, sizeof it->control_url, "%s", call->control_url);
}

static void call_started(dialer_t *self, const dispatch_assignment_t *a, const vapi_call_t *call) {
    start_item_t it;
    start_item_fill(&it, a, call);
    record_start(self, &it);
    OPENSSL_cleanse(&it, sizeof it);
}

// Records the calls accepted since the last batch in one statement; those it leaves (the
// uncommon cases) one by one.
static void start_flush(dialer_t *self) {
    size_t n = self->nstarts;
    self->nstarts = 0;
    if (n == 0) return;
    dispatch_start_in_t in[START_BATCH];
    dispatch_start_t out[START_BATCH];
    bool recorded[START_BATCH];
    for (size_t i = 0; i < n; i++) {
        const start_item_t *it = &self->starts[i];
        in[i] = (dispatch_start_in_t){.booking_id = it->booking_id, .claim = it->claim, .vapi_call_id = it->call_id,
                                      .control_url = it->control_url[0] ? it->control_url : NULL};
    }
    if (dispatch_started_many(self->ctx->db, in, n, out, recorded) != STORE_OK) memset(recorded, 0, sizeof recorded);
    for (size_t i = 0; i < n; i++) {
        if (recorded[i]) announce_start(self, &self->starts[i]);
        else record_start(self, &self->starts[i]);
    }
    OPENSSL_cleanse(self->starts, n * sizeof *self->starts);
}

// VAPI accepted the call of assignment a: it is recorded with the others accepted within
// START_WAIT_MS (a burst of dials brings a burst of answers), or before the next VAPI message.
static void start_later(dialer_t *self, const dispatch_assignment_t *a, const vapi_call_t *call) {
    if (self->nstarts == START_BATCH) start_flush(self);
    start_item_fill(&self->starts[self->nstarts++], a, call);
    defer(self, &self->start_records);
}

static void on_call_created(void *arg, const vapi_outcome_t *outcome, const vapi_call_t *call) {
    dial_job_t *job = arg;
    dialer_t *self = job->self;
    const dispatch_assignment_t *a = &job->a;
    switch (outcome->kind) {
    case VAPI_OK:
        start_later(self, a, call);
        if (call && call->concurrency_blocked)   // created but will not connect: its `ended` settles it
            log_info(&self->ctx->log, "call_concurrency_blocked", "booking=%s", a->booking_id);
        break;
    case VAPI_CONCURRENCY:
    case VAPI_ACCOUNT_ERROR:
        settle_try(self, a, DISPATCH_REQUEUE_NO_ATTEMPT,
                   outcome->kind == VAPI_CONCURRENCY ? "call.start.error-subscription-concurrency-limit-reached"
                                                     : "account-error",
                   0, true);
        break;
    case VAPI_REJECTED:
        settle_try(self, a, DISPATCH_RETRY, "call-rejected", 0, false);
        break;
    case VAPI_UNAVAILABLE:
    case VAPI_BAD_RESPONSE:
        if (outcome->maybe_created) {
            // VAPI may have the call: leave the row to the lease lookup rather than dial twice.
            log_warn(&self->ctx->log, "call_answer_lost", "booking=%s result=%s", a->booking_id,
                     vapi_result_name(outcome->kind));
        } else {
            settle_try(self, a, DISPATCH_REQUEUE_NO_ATTEMPT, "vapi-unavailable", UNAVAILABLE_RETRY_S, false);
        }
        break;
    }
    dispatch_assignment_clear(&job->a);
    free(job);
}

// Places the call of one loaded assignment, unless it was placed already.
static void dial_one(dialer_t *self, const dispatch_assignment_t *a, key_cache_t *cache) {
    if (strcmp(a->queue_status, "dialing") != 0 || a->vapi_call_id[0]) return;   // already placed
    dial_job_t *job = calloc(1, sizeof *job);
    if (!job) return;   // the lease covers it
    job->self = self;
    job->a = *a;
    char *key = NULL;
    size_t key_len = 0;
    if (account_key(self, cache, job->a.account_id, &key, &key_len) != 0) {
        settle_try(self, &job->a, DISPATCH_REQUEUE_NO_ATTEMPT, "account-error", 0, true);
        dispatch_assignment_clear(&job->a);
        free(job);
        return;
    }
    vapi_create_params_t p = {.api_key = key, .assistant_id = job->a.assistant_id,
                              .phone_number_id = job->a.phone_number_id, .customer_number = job->a.phone,
                              .booking_id = job->a.booking_id, .attempt = job->a.attempt + 1,
                              .max_duration_s = job->a.max_duration_s};
    int rc = vapi_call_create(self->vapi, &p, on_call_created, job);
    crypto_secret_free(key, key_len);   // httpc copied what it sends
    if (rc != 0) {
        settle_try(self, &job->a, DISPATCH_RETRY, "call-request-invalid", 0, false);
        dispatch_assignment_clear(&job->a);
        free(job);
    }
}

// Loads what was handed over since the last batch in one query, then places those calls.
// Bookings no longer ours (settled, cancelled) are not loaded; when the database is down, the
// leases cover them.
static void dial_flush(dialer_t *self) {
    size_t count = self->npending;
    self->npending = 0;
    if (count == 0) return;
    const char *ids[DIAL_BATCH];
    for (size_t i = 0; i < count; i++) ids[i] = self->pending[i];
    dispatch_assignment_t *rows = NULL;
    size_t n = 0;
    if (dispatch_load_many(self->ctx->db, ids, count, &rows, &n) != STORE_OK) {
        log_warn(&self->ctx->log, "assignments_unreadable", "count=%zu", count);
        return;
    }
    key_cache_t cache = {.n = 0};
    for (size_t i = 0; i < n; i++) dial_one(self, &rows[i], &cache);
    key_cache_clear(&cache);
    dispatch_assignments_free(&rows, n);
}

// call.assigned: the booking joins the batch, which is loaded once the loop has taken what its
// inbox holds (a claim hands over up to 64 calls at once).
static void dial(dialer_t *self, const char *booking_id) {
    if (self->npending == DIAL_BATCH) dial_flush(self);
    snprintf(self->pending[self->npending++], STORE_UUID_LEN, "%s", booking_id);
    defer(self, &self->dials);
}

// ---- lost answers and quiet calls ---------------------------------------------------------------

typedef struct {
    dialer_t *self;
    dispatch_assignment_t a;
} find_job_t;

static void on_call_found(void *arg, const vapi_outcome_t *outcome, const vapi_call_t *call) {
    find_job_t *job = arg;
    dialer_t *self = job->self;
    if (outcome->kind == VAPI_OK && call) {
        call_started(self, &job->a, call);   // VAPI has it: adopt it, its messages settle it
    } else if (outcome->kind == VAPI_OK || outcome->not_found) {
        dispatch_settled_t res;
        if (dispatch_requeue_lost(self->ctx->db, job->a.booking_id, job->a.claim, &res) == STORE_OK &&
            res.state != DISPATCH_ALREADY_SETTLED) {
            dispatch_publish_settled(self->ctx, NULL, "call-never-placed", &res);
            log_info(&self->ctx->log, "lost_dial_requeued", "booking=%s", job->a.booking_id);
        }
    }   // otherwise VAPI did not answer: the next sweep asks again
    dispatch_assignment_clear(&job->a);
    free(job);
}

// Dials whose answer never came (this or another instance died mid-request, or the answer was
// lost): look for the call at VAPI before anything is dialled again.
static void recover_expired_leases(dialer_t *self) {
    dispatch_assignment_t *rows = NULL;
    size_t n = 0;
    if (dispatch_expired_leases(self->ctx->db, self->owner, (int)self->ctx->cfg->scheduler_lease_s, LEASE_BATCH, &rows,
                                &n) != STORE_OK)
        return;
    key_cache_t cache = {.n = 0};
    for (size_t i = 0; i < n; i++) {
        find_job_t *job = calloc(1, sizeof *job);
        char *key = NULL;
        size_t key_len = 0;
        if (!job || account_key(self, &cache, rows[i].account_id, &key, &key_len) != 0) {
            free(job);
            continue;
        }
        job->self = self;
        job->a = rows[i];
        memset(&rows[i], 0, sizeof rows[i]);   // ownership moved to the job
        // The call, if VAPI made one, was created between the claim and the end of its lease (the
        // POST times out well before): that window ± a minute of clock skew, however late the sweep.
        int64_t lease_ms = (int64_t)self->ctx->cfg->scheduler_lease_s * 1000;
        int rc = vapi_call_find_window(self->vapi, key, job->a.phone_number_id, job->a.dial_started_ms - CLOCK_SKEW_MS,
                                       job->a.dial_started_ms + lease_ms + CLOCK_SKEW_MS, job->a.booking_id,
                                       job->a.attempt + 1, on_call_found, job);
        crypto_secret_free(key, key_len);
        if (rc != 0) {
            dispatch_assignment_clear(&job->a);
            free(job);
        }
    }
    key_cache_clear(&cache);
    dispatch_assignments_free(&rows, n);
}

typedef struct {
    dialer_t *self;
    char booking_id[37];
    char call_id[64];
    int attempt;
} lookup_job_t;

static void on_call_looked_up(void *arg, const vapi_outcome_t *outcome, const vapi_call_t *call) {
    lookup_job_t *job = arg;
    dialer_t *self = job->self;
    if (outcome->kind == VAPI_OK && call && strcmp(call->status, "ended") == 0) {
        const char *reason = call->ended_reason[0] ? call->ended_reason : "unknown";
        settle_args_t args = {.call_id = job->call_id, .reason = reason, .cost_micros = call->cost_micros,
                              .recording_url = call->recording_url, .attempt = job->attempt,
                              .duration_s = call->started_at_ms > 0 && call->ended_at_ms > call->started_at_ms
                                                ? (int)((call->ended_at_ms - call->started_at_ms) / 1000)
                                                : -1,
                              .hold = outcome_of(reason) == DISPATCH_REQUEUE_NO_ATTEMPT};
        settle(self, outcome_of(reason), &args, NULL);
    } else if (outcome->kind == VAPI_OK && call) {
        dispatch_touch(self->ctx->db, job->call_id);   // still going: VAPI was only quiet
    } else if (outcome->not_found) {
        settle_args_t args = {.call_id = job->call_id, .reason = "call-not-found", .duration_s = -1,
                              .attempt = job->attempt};
        settle(self, DISPATCH_RETRY, &args, NULL);
    }
    free(job);
}

static void on_call_lookup(dialer_t *self, const bus_call_lookup_t *req) {
    dispatch_assignment_t a;
    if (dispatch_load(self->ctx->db, req->booking_id, &a) != STORE_OK) return;
    char *key = NULL;
    size_t key_len = 0;
    lookup_job_t *job = calloc(1, sizeof *job);
    if (job && account_key(self, NULL, a.account_id, &key, &key_len) == 0) {
        *job = (lookup_job_t){.self = self, .attempt = a.attempt};
        snprintf(job->booking_id, sizeof job->booking_id, "%s", req->booking_id);
        snprintf(job->call_id, sizeof job->call_id, "%s", req->call_id);
        if (vapi_call_get(self->vapi, key, req->call_id, on_call_looked_up, job) == 0) job = NULL;
        crypto_secret_free(key, key_len);
    }
    free(job);
    dispatch_assignment_clear(&a);
}

// ---- VAPI server messages -----------------------------------------------------------------------

static void publish_call_event(dialer_t *self, const bus_vapi_webhook_t *w, const char *booking_id) {
    bus_msg_t msg;
    bus_msg_init(&msg, BUS_CALL_EVENT);
    bus_call_event_t *e = &msg.u.call_event;
    snprintf(e->booking_id, sizeof e->booking_id, "%s", booking_id);
    snprintf(e->call_id, sizeof e->call_id, "%s", w->call_id);
    snprintf(e->event_type, sizeof e->event_type, "%s", w->type);
    snprintf(e->status, sizeof e->status, "%s", w->status);
    actor_publish(self->ctx, &msg);
}

// Retries made before the outstanding try of a booking (for the backoff); 0 when unknown.
static int attempt_of(dialer_t *self, const char *booking_id) {
    dispatch_assignment_t a;
    if (!booking_id[0] || dispatch_load(self->ctx->db, booking_id, &a) != STORE_OK) return 0;
    int attempt = a.attempt;
    dispatch_assignment_clear(&a);
    return attempt;
}

static void apply_webhook(dialer_t *self, const bus_vapi_webhook_t *w) {
    int rc = STORE_OK;
    const char *outcome = "applied";
    bool ended = strcmp(w->type, "end-of-call-report") == 0 ||
                 (strcmp(w->type, "status-update") == 0 && strcmp(w->status, "ended") == 0);
    if (ended) {
        const char *reason = w->ended_reason[0] ? w->ended_reason : "unknown";
        int duration = w->duration_ms > 0 ? (int)(w->duration_ms / 1000) : -1;
        dispatch_outcome_t kind = outcome_of(reason);
        settle_args_t args = {.call_id = w->call_id, .booking_id = w->booking_id, .reason = reason,
                              .duration_s = duration,
                              .cost_micros = w->cost_micros, .recording_url = w->recording_url,
                              // only a retry's backoff needs it: one query less for every normal end
                              .attempt = kind == DISPATCH_RETRY ? attempt_of(self, w->booking_id) : 0,
                              .hold = kind == DISPATCH_REQUEUE_NO_ATTEMPT};
        dispatch_state_t state = DISPATCH_ALREADY_SETTLED;
        rc = settle(self, kind, &args, &state);
        if (rc == STORE_OK && state == DISPATCH_ALREADY_SETTLED) {
            outcome = "duplicate";
            if (strcmp(w->type, "end-of-call-report") == 0)   // what the report adds to an ended call
                dispatch_report(self->ctx->db, w->call_id, duration, w->cost_micros, reason,
                                w->recording_url[0] ? w->recording_url : NULL);
        }
        if (rc == STORE_ERR_NOT_FOUND) outcome = "unknown_target";
    } else if (strcmp(w->type, "status-update") == 0 &&
               (strcmp(w->status, "ringing") == 0 || strcmp(w->status, "in-progress") == 0)) {
        dispatch_calling_t res;
        rc = dispatch_calling(self->ctx->db, w->call_id, w->booking_id[0] ? w->booking_id : NULL, &res);
        if (rc == STORE_OK) actor_publish_status(self->ctx, res.booking_id, &res.event);
        if (rc == STORE_ERR_NOT_FOUND) outcome = "unknown_target";
    } else {
        rc = dispatch_touch(self->ctx->db, w->call_id);
        outcome = rc == STORE_ERR_NOT_FOUND ? "unknown_target" : "ignored";
    }
    if (rc == STORE_ERR_DB) {
        actor_reply(self->ctx, w->request_id, 503, "unavailable",
                    "{\"error\":{\"code\":\"unavailable\",\"message\":\"not stored, deliver again\"}}");
        return;
    }
    actor_reply(self->ctx, w->request_id, 200, outcome, "{}");
    if (rc == STORE_OK) publish_call_event(self, w, w->booking_id);
}

static bool is_calling_update(const bus_vapi_webhook_t *w) {
    return strcmp(w->type, "status-update") == 0 &&
           (strcmp(w->status, "ringing") == 0 || strcmp(w->status, "in-progress") == 0);
}

// Applies the ringing / in-progress messages gathered since the last batch in one statement (a
// burst of dials brings two of them a call), the calls accepted before them first so that they
// find their calls recorded; what the statement leaves (an event before its start, an unknown
// call, a database error) goes the single way.
static void hook_flush(dialer_t *self) {
    start_flush(self);
    size_t n = self->nhooks;
    self->nhooks = 0;
    if (n == 0) return;
    const char *ids[HOOK_BATCH];
    dispatch_calling_t out[HOOK_BATCH];
    bool found[HOOK_BATCH];
    for (size_t i = 0; i < n; i++) ids[i] = self->hooks[i].call_id;
    if (dispatch_calling_many(self->ctx->db, ids, n, out, found) != STORE_OK) memset(found, 0, sizeof found);
    for (size_t i = 0; i < n; i++) {
        const bus_vapi_webhook_t *w = &self->hooks[i];
        if (!found[i]) {
            apply_webhook(self, w);
            continue;
        }
        actor_publish_status(self->ctx, out[i].booking_id, &out[i].event);
        actor_reply(self->ctx, w->request_id, 200, "applied", "{}");
        publish_call_event(self, w, w->booking_id);
    }
}

// A verified VAPI server message. Ringing and in-progress are gathered until the loop has drained
// the inbox (HOOK_WAIT_MS, hook_flush); anything else first lets those before it be applied, so
// that each call's messages take effect in the order they came.
static void on_vapi_webhook(dialer_t *self, const bus_vapi_webhook_t *w) {
    if (!is_calling_update(w)) {
        hook_flush(self);
        apply_webhook(self, w);
        return;
    }
    if (self->nhooks == HOOK_BATCH) hook_flush(self);
    self->hooks[self->nhooks++] = *w;
    defer(self, &self->hook_applies);
}

// ---- the actor ----------------------------------------------------------------------------------

static int dialer_on_command(actor_ctx_t *ctx, void *state, const bus_msg_t *msg) {
    dialer_t *self = state;
    switch (msg->type) {
    case BUS_CALL_ASSIGNED: dial(self, msg->u.call_assigned.booking_id); break;
    case BUS_VAPI_WEBHOOK: on_vapi_webhook(self, &msg->u.vapi_webhook); break;
    case BUS_CALL_LOOKUP: on_call_lookup(self, &msg->u.call_lookup); break;
    default: break;
    }
    return 0;
}

static int dialer_on_timer(actor_ctx_t *ctx, void *state) {
    if (db_ensure(ctx->db) == 0) recover_expired_leases(state);
    return 0;
}

static int dialer_create(actor_ctx_t *ctx, void **state) {
    dialer_t *self = calloc(1, sizeof *self);
    if (!self) return -1;
    self->ctx = ctx;
    self->dials = (deferred_t){.self = self, .wait_ms = 0, .flush = dial_flush};
    self->start_records = (deferred_t){.self = self, .wait_ms = START_WAIT_MS, .flush = start_flush};
    self->hook_applies = (deferred_t){.self = self, .wait_ms = HOOK_WAIT_MS, .flush = hook_flush};
    char host[32] = "host";
    gethostname(host, sizeof host - 1);
    snprintf(self->owner, sizeof self->owner, "%s:%d:dialer", host, (int)getpid());
    if (crypto_master_key_decode(ctx->cfg->security_master_key, self->master_key) != 0) {
        free(self);
        return -1;
    }
    if (ctx->cfg->security_master_key_previous) {
        if (crypto_master_key_decode(ctx->cfg->security_master_key_previous, self->master_key_previous) != 0) {
            OPENSSL_cleanse(self->master_key, sizeof self->master_key);
            free(self);
            return -1;
        }
        self->has_previous = true;
    }
    self->starts = calloc(START_BATCH, sizeof *self->starts);
    self->hooks = calloc(HOOK_BATCH, sizeof *self->hooks);
    self->http = self->starts && self->hooks ? httpc_new(ctx->loop, &ctx->log) : NULL;
    vapi_config_t vc = {.api_base = ctx->cfg->vapi_api_base, .public_url = ctx->cfg->http_public_url,
                        .webhook_secret = ctx->cfg->vapi_webhook_secret};
    self->vapi = self->http ? vapi_client_new(self->http, &vc, &ctx->log) : NULL;
    if (!self->vapi) {
        httpc_destroy(&self->http);
        free(self->starts);
        free(self->hooks);
        OPENSSL_cleanse(self->master_key, sizeof self->master_key);
        OPENSSL_cleanse(self->master_key_previous, sizeof self->master_key_previous);
        free(self);
        return -1;
    }
    *state = self;
    return 0;
}

static void dialer_destroy(actor_ctx_t *ctx, void **state) {
    dialer_t *self = *state;
    if (!self) return;
    hook_flush(self);             // calls accepted and messages received, not yet recorded
    vapi_client_destroy(&self->vapi);
    httpc_destroy(&self->http);   // dials in flight complete as lost answers: the lease lookup settles them
    free(self->starts);
    free(self->hooks);
    OPENSSL_cleanse(self->master_key, sizeof self->master_key);
    OPENSSL_cleanse(self->master_key_previous, sizeof self->master_key_previous);
    free(self);
    *state = NULL;
}

const actor_spec_t dialer_actor_spec = {
    .name = "dialer",
    .needs_db = true,
    .timer_ms = DIALER_TIMER_MS,
    .create = dialer_create,
    .destroy = dialer_destroy,
    .on_command = dialer_on_command,
    .on_timer = dialer_on_timer,
};
