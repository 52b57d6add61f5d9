// actors/scheduler.c — the scheduler actor: claims due calls from the queue and hands each to the
// dialer with an agent that has room (what process-call-queue and get_available_agent did in the
// earlier design).
//
// A claim is one transaction (storage/dispatch.h): due rows are locked FOR UPDATE SKIP LOCKED, an
// agent and its account are picked and their counters raised only while below their maximum, the
// booking becomes `initiating`, and the row gets a lease in this instance's name. So several
// sweetyd processes on one database never take the same row, and never exceed a limit together.
//
// Wakes: on queue.enqueued (this instance), on a NOTIFY of a booking becoming `queued` (any
// instance, through its own LISTEN connection), and every second as a backstop — that sweep also
// catches retries whose time has come, holds that ran out, and capacity another instance gave
// back without a status change. A claim reports which plans still have an agent with room; until
// capacity changes, a booking of a plan without room wakes nothing (a claim for it could only
// fail, and during a burst of bookings with every agent busy or disabled each one cost a claim
// transaction). What can bring capacity: capacity.changed from the dialer or the duration monitor
// (a call of this instance ended), a NOTIFY of a booking completed, failed or cancelled (a call of
// another instance ended), a NOTIFY on sweety_config (an operator changed accounts, agents or
// plans), and the sweep (holds that ran out; another instance's call requeued, whose NOTIFY
// `queued` is not told apart from a new booking). Hourly: call_events partitions ahead, old queue
// rows.
//
// Owns: its PostgreSQL connection and its LISTEN connection. Talks to: the dialer (call.assigned,
// a command to its inbox), everyone (booking.status, capacity.changed, call.assigned copies).
#include "actors/scheduler.h"

#include <jansson.h>
#include <string.h>
#include <unistd.h>

#include "actors/dispatch_events.h"
#include "common/util.h"
#include "storage/call_events.h"
#include "storage/dispatch.h"
#include "storage/notify.h"

#define SCHEDULER_SWEEP_MS 1000
#define CLAIM_BATCH 64
#define CLAIM_ROUNDS_MAX 16          // per wake-up; then the loop comes round and it continues
#define WAKE_COALESCE_MS 5            // wake-ups within this share one claim round
#define HOURLY_MS (3600 * 1000)
#define PARTITION_MONTHS_AHEAD 2

typedef struct {
    actor_ctx_t *ctx;
    char owner[64];                  // this instance's name on the leases it takes
    notify_t *listen;
    zmq_pollitem_t listen_item;
    bool listen_registered;
    int64_t next_hourly_ms;
    bool round_armed;                // a claim round is already due from the loop (dispatch_soon)
    dispatch_room_t room;            // what the last claim left: which plans have an agent with room
    bool room_known;                 // false: claim on any wake-up (at start, after a failed claim)
} scheduler_t;

// ---- which wake-ups can lead to a claim ---------------------------------------------------------

// False only when the last claim found that no agent of `plan` has room (NULL: any plan).
static bool may_have_room(const scheduler_t *self, const char *plan) {
    if (!self->room_known) return true;
    bool listed = false;
    for (size_t i = 0; i < self->room.nplans; i++) {
        if (self->room.plans[i].room && (!plan || strcmp(self->room.plans[i].plan, plan) == 0)) return true;
        listed = listed || (plan && strcmp(self->room.plans[i].plan, plan) == 0);
    }
    return plan && !listed;   // a plan the claim did not report: try
}

// True when the last claim left some plan without room: only then can more capacity matter.
static bool short_of_room(const scheduler_t *self) {
    if (!self->room_known) return true;
    for (size_t i = 0; i < self->room.nplans; i++)
        if (!self->room.plans[i].room) return true;
    return false;
}

// Hands one claimed call to the dialer. A lost hand-over is not lost work: the lease expires and
// the dialer's sweep looks the call up and dials it (storage/dispatch.h).
static void hand_to_dialer(scheduler_t *self, const dispatch_assignment_t *a) {
    bus_msg_t msg;
    bus_msg_init(&msg, BUS_CALL_ASSIGNED);
    bus_call_assigned_t *c = &msg.u.call_assigned;
    snprintf(c->booking_id, sizeof c->booking_id, "%s", a->booking_id);
    snprintf(c->agent_id, sizeof c->agent_id, "%s", a->agent_id);
    snprintf(c->account_id, sizeof c->account_id, "%s", a->account_id);
    c->attempt = a->attempt;
    if (bus_send_to(self->ctx->bus, "dialer", &msg, 2000) != 0)
        log_warn(&self->ctx->log, "hand_over_failed", "booking=%s", a->booking_id);
}

static void dispatch_round(scheduler_t *self);

static int on_round_due(zloop_t *loop, int timer_id, void *arg) {
    scheduler_t *self = arg;
    self->round_armed = false;
    dispatch_round(self);
    return 0;
}

// A claim round in ms from the loop, shared by everything that asks before it runs: a burst of
// bookings (a queue.enqueued and a NOTIFY each) costs one claim transaction, not two per booking.
static void dispatch_soon(scheduler_t *self, size_t ms) {
    if (self->round_armed) return;
    if (zloop_timer(self->ctx->loop, ms, 1, on_round_due, self) != -1) self->round_armed = true;
    else dispatch_round(self);
}

// Claims until nothing more fits or is due, at most CLAIM_ROUNDS_MAX batches per call. When it stops
// at that bound with more due, it continues at once from the loop (a one-shot timer) rather than at
// the next sweep: the loop serves the pipe and the other sockets in between, and a backlog is not
// held to CLAIM_ROUNDS_MAX * CLAIM_BATCH claims a second.
static void dispatch_round(scheduler_t *self) {
    if (db_ensure(self->ctx->db) != 0) return;
    for (int round = 0; round < CLAIM_ROUNDS_MAX; round++) {
        dispatch_assignment_t *claims = NULL;
        size_t n = 0;
        int rc = dispatch_claim_ex(self->ctx->db, self->owner, (int)self->ctx->cfg->scheduler_lease_s, CLAIM_BATCH,
                                   &claims, &n, &self->room);
        self->room_known = rc == STORE_OK;
        if (rc != STORE_OK) {
            log_warn(&self->ctx->log, "claim_failed", "rc=%s", store_err_name(rc));
            return;
        }
        for (size_t i = 0; i < n; i++) {
            actor_publish_status(self->ctx, claims[i].booking_id, &claims[i].event);
            dispatch_publish_capacity(self->ctx, claims[i].account_id, claims[i].agent_id, claims[i].account_active,
                                      claims[i].agent_active);
            hand_to_dialer(self, &claims[i]);
            log_info(&self->ctx->log, "call_assigned", "booking=%s agent=%s attempt=%d", claims[i].booking_id,
                     claims[i].agent_id, claims[i].attempt);
        }
        dispatch_assignments_free(&claims, n);
        if (n < CLAIM_BATCH) return;
    }
    dispatch_soon(self, 1);
}

// Capacity may have been given back or added: the next wake-up claims whatever the plan.
static void capacity_changed(scheduler_t *self) {
    if (!short_of_room(self)) return;   // nothing waits for room
    self->room_known = false;
    dispatch_soon(self, WAKE_COALESCE_MS);
}

// ---- wake-ups from other instances ------------------------------------------------------------

// A booking's status is one its call, if it had one, ended in: its capacity was given back.
static bool ends_a_call(const char *status) {
    return strcmp(status, "completed") == 0 || strcmp(status, "failed") == 0 || strcmp(status, "cancelled") == 0;
}

static void on_notification(void *arg, const char *channel, const char *payload) {
    scheduler_t *self = arg;
    if (strcmp(channel, "sweety_config") == 0) {
        self->room_known = false;   // accounts, agents or plans changed: room is unknown
        dispatch_soon(self, WAKE_COALESCE_MS);
        return;
    }
    // Most notifications are calls starting (initiating, calling) of this or another instance:
    // only a status this wake-up cares about is worth parsing.
    if (!strstr(payload, "queued") && !strstr(payload, "completed") && !strstr(payload, "failed") &&
        !strstr(payload, "cancelled"))
        return;
    json_t *j = json_loads(payload, 0, NULL);
    const char *status = json_string_value(json_object_get(j, "status"));
    if (status && strcmp(status, "queued") == 0) {
        // A new booking, or a call of another instance back in the queue: that one gave capacity
        // back, but it is not told apart from the many new bookings of a burst; the sweep finds it.
        if (may_have_room(self, NULL)) dispatch_soon(self, WAKE_COALESCE_MS);
    } else if (status && ends_a_call(status)) {
        capacity_changed(self);
    }
    json_decref(j);
}

static int on_listen_input(zloop_t *loop, zmq_pollitem_t *item, void *arg) {
    scheduler_t *self = arg;
    if (notify_drain(self->listen, on_notification, self) != 0) {
        zloop_poller_end(loop, &self->listen_item);
        self->listen_registered = false;
    }
    return 0;
}

// Keeps the LISTEN connection up and its socket in the loop; after a reconnect, a sweep makes good
// what was notified while it was down.
static void keep_listening(scheduler_t *self) {
    int rc = notify_ensure(self->listen);
    if (rc < 0 && self->listen_registered) {
        zloop_poller_end(self->ctx->loop, &self->listen_item);
        self->listen_registered = false;
    }
    if (rc == 1) {
        if (self->listen_registered) zloop_poller_end(self->ctx->loop, &self->listen_item);
        self->listen_item = (zmq_pollitem_t){.socket = NULL, .fd = notify_fd(self->listen), .events = ZMQ_POLLIN};
        self->listen_registered = zloop_poller(self->ctx->loop, &self->listen_item, on_listen_input, self) == 0;
    }
}

// ---- housekeeping -------------------------------------------------------------------------------

static void hourly(scheduler_t *self) {
    int created = 0;
    if (call_events_ensure_partitions(self->ctx->db, PARTITION_MONTHS_AHEAD, &created) == 0 && created > 0)
        log_info(&self->ctx->log, "partitions_created", "count=%d", created);
    int64_t deleted = 0;
    if (dispatch_purge_finished(self->ctx->db, 86400, &deleted) == STORE_OK && deleted > 0)
        log_info(&self->ctx->log, "queue_purged", "rows=%lld", (long long)deleted);
}

static int scheduler_on_timer(actor_ctx_t *ctx, void *state) {
    scheduler_t *self = state;
    keep_listening(self);
    dispatch_round(self);
    int64_t now = util_monotonic_ms();
    if (now >= self->next_hourly_ms && db_is_up(ctx->db)) {
        self->next_hourly_ms = now + HOURLY_MS;
        hourly(self);
    }
    return 0;
}

static int scheduler_on_event(actor_ctx_t *ctx, void *state, const bus_msg_t *msg) {
    scheduler_t *self = state;
    if (msg->type == BUS_QUEUE_ENQUEUED && may_have_room(self, msg->u.queue_enqueued.plan))
        dispatch_soon(self, WAKE_COALESCE_MS);
    // Our own claims announce capacity taken; the others (dialer, duration monitor) capacity given back.
    if (msg->type == BUS_CAPACITY_CHANGED && strcmp(msg->from, bus_endpoint_name(ctx->bus)) != 0)
        capacity_changed(self);
    return 0;
}

static int scheduler_create(actor_ctx_t *ctx, void **state) {
    scheduler_t *self = calloc(1, sizeof *self);
    if (!self) return -1;
    self->ctx = ctx;
    char host[32] = "host";
    gethostname(host, sizeof host - 1);
    unsigned char rnd[4] = {0};
    util_random_bytes(rnd, sizeof rnd);
    snprintf(self->owner, sizeof self->owner, "%s:%d:%02x%02x%02x%02x", host, (int)getpid(), rnd[0], rnd[1], rnd[2],
             rnd[3]);
    self->listen = notify_new(ctx->cfg->db_url, &ctx->log,
                              (const char *const[]){"sweety_booking_status", "sweety_config", NULL});
    if (!self->listen) {
        free(self);
        return -1;
    }
    *state = self;
    return 0;
}

static void scheduler_destroy(actor_ctx_t *ctx, void **state) {
    scheduler_t *self = *state;
    if (!self) return;
    if (self->listen_registered) zloop_poller_end(ctx->loop, &self->listen_item);
    notify_destroy(&self->listen);
    free(self);
    *state = NULL;
}

const actor_spec_t scheduler_actor_spec = {
    .name = "scheduler",
    .subscriptions = (const char *const[]){"queue.enqueued", "capacity.changed", NULL},
    .needs_db = true,
    .timer_ms = SCHEDULER_SWEEP_MS,
    .create = scheduler_create,
    .destroy = scheduler_destroy,
    .on_event = scheduler_on_event,
    .on_timer = scheduler_on_timer,
};
