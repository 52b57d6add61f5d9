// actors/actor.c — the common actor loop; see actor.h. Runs on the actor's own thread.
//
// Trace copies (bus/bus.h, bus_send_to): the commands an actor sends are copied into its
// endpoint's batch, which has to reach the broker before the actor waits for long. The loop
// flushes it after every turn it runs a handler of the spec (messages, timer); for commands sent
// from callbacks the actor registered on the loop itself (outbound HTTP answers, its own timers),
// the endpoint tells us when a batch starts and a one-shot timer flushes it a millisecond later.
#include "actors/actor.h"

#include <string.h>

#include "common/util.h"
#include "realtime/api_error.h"

#define DRAIN_MAX 64       // messages one socket may hand over per wake-up of the loop
#define TRACE_FLUSH_MS 1   // trace copies sent from the actor's own callbacks wait at most this

typedef struct {
    const actor_spec_t *spec;
    actor_ctx_t ctx;
    void *state;
    zsock_t *pipe;
    bool in_handler;      // running a handler of the spec: the loop flushes after it
    bool flush_armed;     // the one-shot flush timer is set
} actor_run_t;

void actor_publish(actor_ctx_t *ctx, bus_msg_t *msg) {
    if (bus_publish(ctx->bus, msg) != 0) log_warn(&ctx->log, "publish_failed", "topic=%s", bus_type_topic(msg->type));
}

void actor_publish_status(actor_ctx_t *ctx, const char *booking_id, const booking_event_t *ev) {
    if (ev->seq <= 0) return;
    bus_msg_t msg;
    bus_msg_init(&msg, BUS_BOOKING_STATUS);
    bus_booking_status_t *s = &msg.u.booking_status;
    snprintf(s->booking_id, sizeof s->booking_id, "%s", booking_id);
    s->seq = ev->seq;
    snprintf(s->status, sizeof s->status, "%s", ev->status);
    int64_t at_ms = 0;
    s->at = api_rfc3339_parse_ms(ev->at, strlen(ev->at), &at_ms) == 0 ? at_ms * 1000 : util_now_us();
    actor_publish(ctx, &msg);
}

void actor_reply(actor_ctx_t *ctx, int64_t request_id, int status, const char *outcome, const char *body) {
    bus_msg_t msg;
    bus_msg_init(&msg, BUS_HTTP_REPLY);
    bus_http_reply_t *r = &msg.u.http_reply;
    r->request_id = request_id;
    r->status = status;
    snprintf(r->outcome, sizeof r->outcome, "%s", outcome ? outcome : "");
    if (strlen(body) >= sizeof r->body) {   // never expected: our bodies are small
        log_error(&ctx->log, "reply_too_large", "request_id=%lld", (long long)request_id);
        r->status = 500;
        snprintf(r->body, sizeof r->body, "{\"error\":{\"code\":\"internal\",\"message\":\"answer too large\"}}");
    } else {
        memcpy(r->body, body, strlen(body) + 1);
    }
    if (bus_send_to(ctx->bus, "http", &msg, 1000) != 0)
        log_warn(&ctx->log, "reply_failed", "request_id=%lld", (long long)request_id);
}

void actor_report_start(zsock_t *pipe, bool ok) {
    zsock_signal(pipe, 0);
    zstr_send(pipe, ok ? "READY" : "FAILED");
}

zactor_t *actor_start(zactor_fn *fn, void *args, const char *name, const logger_t *log) {
    zactor_t *actor = zactor_new(fn, args);
    if (!actor) return NULL;
    zsock_set_rcvtimeo(zactor_sock(actor), 60000);
    char *status = zstr_recv(actor);
    bool ready = status && strcmp(status, "READY") == 0;
    zstr_free(&status);
    zsock_set_rcvtimeo(zactor_sock(actor), -1);
    if (!ready) {
        log_error(log, "actor_failed_to_start", "name=%s", name);
        zactor_destroy(&actor);
    }
    return actor;
}

static int on_pipe(zloop_t *loop, zsock_t *pipe, void *arg) {
    char *command = zstr_recv(pipe);
    if (!command) return -1;   // interrupted
    int rc = strcmp(command, "$TERM") == 0 ? -1 : 0;
    zstr_free(&command);
    return rc;
}

static void answer_ping(actor_run_t *self, const bus_actor_ping_t *ping) {
    if (strcmp(ping->target, self->spec->name) != 0 && strcmp(ping->target, "*") != 0) return;
    bus_msg_t pong;
    bus_msg_init(&pong, BUS_ACTOR_PONG);
    snprintf(pong.u.actor_pong.actor, sizeof pong.u.actor_pong.actor, "%s", self->spec->name);
    pong.u.actor_pong.nonce = ping->nonce;
    if (bus_publish(self->ctx.bus, &pong) != 0) log_warn(&self->ctx.log, "pong_failed", NULL);
}

typedef int (*handler_fn)(actor_ctx_t *ctx, void *state, const bus_msg_t *msg);

// Handles the message zloop woke us for, then up to DRAIN_MAX - 1 more already queued on the same
// socket, without waiting: each zloop round is a zmq_poll, several system calls, which would
// otherwise be paid per message. The bound keeps the pipe ($TERM), timers and the other socket
// served. Malformed messages are counted and dropped (bus_endpoint_recv*).
static int drain(actor_run_t *self, zsock_t *sock, handler_fn handler) {
    bus_msg_t msg;
    int rc = bus_endpoint_recv(self->ctx.bus, sock, &msg);
    for (int n = 1; rc != BUS_E_SOCKET && rc != BUS_E_AGAIN; n++) {
        if (rc == BUS_OK && msg.type == BUS_ACTOR_PING) answer_ping(self, &msg.u.actor_ping);
        else if (rc == BUS_OK && handler && handler(&self->ctx, self->state, &msg) != 0) return -1;
        if (n == DRAIN_MAX) break;
        rc = bus_endpoint_recv_nowait(self->ctx.bus, sock, &msg);
    }
    return 0;
}

// Runs the spec's handlers for what one socket holds, then hands the trace copies of the commands
// they sent to the broker: the loop may wait next.
static int serve(actor_run_t *self, zsock_t *sock, handler_fn handler) {
    self->in_handler = true;
    int rc = drain(self, sock, handler);
    self->in_handler = false;
    bus_endpoint_flush(self->ctx.bus);
    return rc;
}

static int on_events(zloop_t *loop, zsock_t *sock, void *arg) {
    actor_run_t *self = arg;
    return serve(self, sock, self->spec->on_event);
}

static int on_inbox(zloop_t *loop, zsock_t *sock, void *arg) {
    actor_run_t *self = arg;
    return serve(self, sock, self->spec->on_command);
}

static int on_timer(zloop_t *loop, int timer_id, void *arg) {
    actor_run_t *self = arg;
    self->in_handler = true;
    int rc = self->spec->on_timer(&self->ctx, self->state);
    self->in_handler = false;
    bus_endpoint_flush(self->ctx.bus);
    return rc;
}

static int on_flush_timer(zloop_t *loop, int timer_id, void *arg) {
    actor_run_t *self = arg;
    self->flush_armed = false;
    bus_endpoint_flush(self->ctx.bus);
    return 0;
}

// The endpoint started a batch of trace copies. Outside the spec's handlers (which flush when they
// return), a command came from a callback of the actor's own: flush a millisecond from now.
static void on_trace_pending(void *arg) {
    actor_run_t *self = arg;
    if (self->in_handler || self->flush_armed) return;
    if (zloop_timer(self->ctx.loop, TRACE_FLUSH_MS, 1, on_flush_timer, self) == -1) {
        bus_endpoint_flush(self->ctx.bus);   // no timer: send it now rather than late
        return;
    }
    self->flush_armed = true;
}

// Subscriptions: actor.ping plus the spec's own prefixes.
static bus_endpoint_t *endpoint_for(const actor_spec_t *spec) {
    const char *subs[32];
    size_t n = 0;
    subs[n++] = "actor.ping";
    for (size_t i = 0; spec->subscriptions && spec->subscriptions[i] && n < 31; i++)
        subs[n++] = spec->subscriptions[i];
    subs[n] = NULL;
    return bus_endpoint_new(spec->name, subs);
}

static void teardown(actor_run_t *self) {
    if (self->spec->destroy) self->spec->destroy(&self->ctx, &self->state);
    db_destroy(&self->ctx.db);
    bus_endpoint_destroy(&self->ctx.bus);
    zloop_destroy(&self->ctx.loop);
}

static int setup(actor_run_t *self, const actor_args_t *args) {
    self->spec = args->spec;
    self->ctx.cfg = args->cfg;
    self->ctx.log = (logger_t){.level = args->cfg->log_level, .who = args->spec->name};
    self->ctx.bus = endpoint_for(self->spec);
    if (!self->ctx.bus) return -1;
    self->ctx.loop = zloop_new();
    if (!self->ctx.loop) return -1;
    bus_endpoint_on_trace_pending(self->ctx.bus, on_trace_pending, self);
    if (self->spec->needs_db) {
        self->ctx.db = db_new(args->cfg->db_url, &self->ctx.log);
        if (!self->ctx.db) return -1;
        db_ensure(self->ctx.db);   // failure is not fatal: reconnects with backoff on use
    }
    if (self->spec->create && self->spec->create(&self->ctx, &self->state) != 0) return -1;
    return 0;
}

void actor_run(zsock_t *pipe, void *args) {
    actor_run_t self = {.pipe = pipe};
    if (setup(&self, args) != 0) {
        log_error(&self.ctx.log, "actor_start_failed", NULL);
        teardown(&self);
        actor_report_start(pipe, false);
        return;
    }
    zloop_t *loop = self.ctx.loop;
    zloop_reader(loop, pipe, on_pipe, &self);
    zloop_reader(loop, bus_endpoint_events(self.ctx.bus), on_events, &self);
    zloop_reader(loop, bus_endpoint_inbox(self.ctx.bus), on_inbox, &self);
    if (self.spec->timer_ms > 0 && self.spec->on_timer)
        zloop_timer(loop, (size_t)self.spec->timer_ms, 0, on_timer, &self);
    zloop_set_nonstop(loop, true);   // stop on $TERM only, not on the process-wide interrupt flag
    log_info(&self.ctx.log, "actor_started", NULL);
    actor_report_start(pipe, true);
    zloop_start(loop);
    teardown(&self);
    log_info(&self.ctx.log, "actor_stopped", NULL);
}
