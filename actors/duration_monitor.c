// actors/duration_monitor.c — the duration-monitor actor: ends calls that run past their plan's
// length plus scheduler.grace_s (its clock starts when the booking became `calling`), and has the
// dialer look up calls VAPI has gone quiet about (what check-call-durations and
// cleanup_inactive_call did in the earlier design).
//
// Ending a call uses VAPI's live call control URL (providers.md §2.3), which needs no account key;
// the call is then settled as completed in the same step, so a late `ended` message from VAPI finds
// it settled and changes nothing. Looking a call up needs the account's key, which only the dialer
// decrypts, so quiet calls are handed to the dialer (call.lookup).
//
// Owns: its PostgreSQL connection and an outbound HTTP client. Talks to: the dialer (call.lookup),
// everyone (booking.status, call.ended, capacity.changed).
#include "actors/duration_monitor.h"

#include <string.h>

#include "actors/dispatch_events.h"
#include "actors/httpc.h"
#include "actors/vapi_client.h"
#include "common/util.h"
#include "storage/dispatch.h"

#define MONITOR_TICK_MS 1000
#define MONITOR_BATCH 100
#define QUIET_CHECK_MS 5000
#define ENDING_MAX 256   // calls being ended at once (their end-call requests in flight)

typedef struct {
    actor_ctx_t *ctx;
    httpc_t *http;
    vapi_client_t *vapi;
    char ending[ENDING_MAX][STORE_REF_MAX];   // call ids with an end-call request in flight: asked once
    size_t nending;
    int64_t next_quiet_ms;
} monitor_t;

static bool is_ending(monitor_t *self, const char *call_id) {
    for (size_t i = 0; i < self->nending; i++)
        if (strcmp(self->ending[i], call_id) == 0) return true;
    return false;
}

static void forget_ending(monitor_t *self, const char *call_id) {
    for (size_t i = 0; i < self->nending; i++) {
        if (strcmp(self->ending[i], call_id) == 0) {
            memmove(self->ending[i], self->ending[self->nending - 1], sizeof self->ending[i]);
            self->nending--;
            return;
        }
    }
}

typedef struct {
    monitor_t *self;
    dispatch_overdue_t call;
} end_job_t;

// Settles an overdue call as completed once VAPI was asked to end it (whatever it answered: a call
// that cannot be ended through its control URL has ended already or will be ended by VAPI's own
// maxDurationSeconds, which the dialer set to the plan's length).
static void on_end_call(void *arg, const vapi_outcome_t *outcome) {
    end_job_t *job = arg;
    monitor_t *self = job->self;
    dispatch_settled_t res;
    dispatch_settle_t in = {.vapi_call_id = job->call.vapi_call_id, .outcome = DISPATCH_COMPLETED,
                            .ended_reason = "exceeded-plan-duration", .duration_s = job->call.calling_s,
                            .cost_micros = -1};
    if (dispatch_settle(self->ctx->db, &in, &res) == STORE_OK && res.state != DISPATCH_ALREADY_SETTLED) {
        dispatch_publish_settled(self->ctx, job->call.vapi_call_id, in.ended_reason, &res);
        log_info(&self->ctx->log, "call_ended_by_monitor", "booking=%s control=%s", job->call.booking_id,
                 outcome && outcome->kind == VAPI_OK ? "ok" : "failed");
    }
    forget_ending(self, job->call.vapi_call_id);
    free(job);
}

static void end_overdue_calls(monitor_t *self) {
    dispatch_overdue_t *calls = NULL;
    size_t n = 0;
    if (dispatch_overdue(self->ctx->db, (int)self->ctx->cfg->scheduler_grace_s, MONITOR_BATCH, &calls, &n) != STORE_OK)
        return;
    for (size_t i = 0; i < n && self->nending < ENDING_MAX; i++) {
        if (is_ending(self, calls[i].vapi_call_id)) continue;
        end_job_t *job = calloc(1, sizeof *job);
        if (!job) break;
        *job = (end_job_t){.self = self, .call = calls[i]};
        snprintf(self->ending[self->nending++], sizeof self->ending[0], "%s", calls[i].vapi_call_id);
        if (vapi_call_end(self->vapi, calls[i].control_url, on_end_call, job) != 0) on_end_call(job, NULL);
    }
    free(calls);
}

static void look_up_quiet_calls(monitor_t *self) {
    dispatch_quiet_t *calls = NULL;
    size_t n = 0;
    if (dispatch_quiet(self->ctx->db, (int)self->ctx->cfg->scheduler_stale_call_s, MONITOR_BATCH, &calls, &n) != STORE_OK)
        return;
    for (size_t i = 0; i < n; i++) {
        bus_msg_t msg;
        bus_msg_init(&msg, BUS_CALL_LOOKUP);
        snprintf(msg.u.call_lookup.booking_id, sizeof msg.u.call_lookup.booking_id, "%s", calls[i].booking_id);
        snprintf(msg.u.call_lookup.call_id, sizeof msg.u.call_lookup.call_id, "%.*s",
                 (int)sizeof msg.u.call_lookup.call_id - 1, calls[i].vapi_call_id);
        if (bus_send_to(self->ctx->bus, "dialer", &msg, 1000) != 0)
            log_warn(&self->ctx->log, "lookup_hand_over_failed", "booking=%s", calls[i].booking_id);
    }
    free(calls);
}

static int monitor_on_timer(actor_ctx_t *ctx, void *state) {
    monitor_t *self = state;
    if (db_ensure(ctx->db) != 0) return 0;
    end_overdue_calls(self);
    int64_t now = util_monotonic_ms();
    if (now >= self->next_quiet_ms) {
        self->next_quiet_ms = now + QUIET_CHECK_MS;
        look_up_quiet_calls(self);
    }
    return 0;
}

static int monitor_create(actor_ctx_t *ctx, void **state) {
    monitor_t *self = calloc(1, sizeof *self);
    if (!self) return -1;
    self->ctx = ctx;
    self->http = httpc_new(ctx->loop, &ctx->log);
    vapi_config_t vc = {.api_base = ctx->cfg->vapi_api_base, .public_url = ctx->cfg->http_public_url};
    self->vapi = self->http ? vapi_client_new(self->http, &vc, &ctx->log) : NULL;
    if (!self->vapi) {
        httpc_destroy(&self->http);
        free(self);
        return -1;
    }
    *state = self;
    return 0;
}

static void monitor_destroy(actor_ctx_t *ctx, void **state) {
    monitor_t *self = *state;
    if (!self) return;
    vapi_client_destroy(&self->vapi);
    httpc_destroy(&self->http);   // in-flight end-calls complete (cancelled) and settle or not: the
                                  // next start's monitor finds those calls overdue again
    free(self);
    *state = NULL;
}

const actor_spec_t duration_monitor_actor_spec = {
    .name = "duration-monitor",
    .needs_db = true,
    .timer_ms = MONITOR_TICK_MS,
    .create = monitor_create,
    .destroy = monitor_destroy,
    .on_timer = monitor_on_timer,
};
