// actors/broadcaster.c — the realtime-broadcaster actor: carries committed status changes to the
// browsers watching them, on this instance and (through PostgreSQL LISTEN/NOTIFY) on others.
//
// Two jobs, both for the http actor, which owns the WebSocket connections and their
// subscriptions (realtime/ws.c) but never touches the database:
// - ws.replay (a command to our inbox): reads a booking's history after a seq and answers with
//   ws.events to the http actor's inbox, a compact JSON array of {seq,status,at} per message,
//   paginated (`more`) so each fits the message's 4000-byte field.
// - LISTEN sweety_booking_status on a connection of its own (polled in our zloop, as the
//   scheduler does): every NOTIFY, whichever instance committed the change, becomes a
//   realtime.status (same fields as booking.status; the http actor drops duplicates by seq), sent
//   straight to the http actor's inbox, its only reader: one thread hop from the database to the
//   WebSockets instead of two through the broker (the trace still gets its copy). Only bookings
//   some WebSocket of this instance asked about are sent (see "Watched bookings" below): a booking
//   nobody watches would wake the http actor for nothing.
//   After the LISTEN connection comes back, realtime.resync tells the http actor to re-read
//   every subscription from the database, which makes good what was notified while it was down.
//
// Watched bookings. Every WebSocket subscription starts with a ws.replay for its booking (and asks
// again after a gap or a resync), so the bookings named by ws.replay are the ones the http actor
// may be watching. A booking enters the set when its ws.replay arrives, before its history is read:
// a status committed before that read is in the replay, and a NOTIFY handled after it is sent. It
// leaves the set with its final status (completed, failed, cancelled, payment_failed never change
// again), or at once when its replay already ends in one. The set holds at most WATCH_MAX
// bookings; past that every status is sent, as if all were watched, so a full set costs work,
// never a lost status.
//
// Owns: its PostgreSQL connection and its LISTEN connection. Talks to: the http actor.
#include "actors/broadcaster.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "realtime/api_error.h"
#include "storage/notify.h"

#define BROADCASTER_TIMER_MS 1000
#define BROADCASTER_CHANNEL "sweety_booking_status"
#define REPLY_TIMEOUT_MS 1000
#define HTTP_ACTOR "http"
#define STATUS_TIMEOUT_MS 0     // the http actor's inbox is full: the status is dropped, as a PUB would
#define WATCH_MAX 65536         // bookings remembered as watched; past that every status is sent

typedef struct {
    actor_ctx_t *ctx;
    notify_t *listen;
    zmq_pollitem_t listen_item;
    bool listen_registered;
    int64_t connects;       // successful (re)connects of the LISTEN connection
    zhashx_t *watched;      // booking id -> (non-NULL marker): bookings a ws.replay named
    bool watch_all;         // the set overflowed: every status is sent
    uint64_t dropped;       // statuses the http actor's full inbox refused since the last log line
    int64_t drop_log_ms;
} broadcaster_t;

// ---- watched bookings -----------------------------------------------------------------------------

static void watch(broadcaster_t *self, const char *booking_id) {
    if (self->watch_all || zhashx_lookup(self->watched, booking_id)) return;
    if (zhashx_size(self->watched) >= WATCH_MAX) {
        self->watch_all = true;
        zhashx_purge(self->watched);
        log_warn(&self->ctx->log, "watch_set_full", "bookings=%d effect=\"every status is sent\"", WATCH_MAX);
        return;
    }
    zhashx_insert(self->watched, booking_id, self);   // the value is only a marker
}

static bool is_final(const char *status) {
    static const char *const final[] = {"completed", "failed", "cancelled", "payment_failed"};
    for (size_t i = 0; i < sizeof final / sizeof final[0]; i++)
        if (strcmp(status, final[i]) == 0) return true;
    return false;
}

// Whether the http actor wants this status; a final status also ends the watch.
static bool wanted(broadcaster_t *self, const char *booking_id, const char *status) {
    if (self->watch_all) return true;
    if (!zhashx_lookup(self->watched, booking_id)) return false;
    if (is_final(status)) zhashx_delete(self->watched, booking_id);
    return true;
}

// ---- replays ------------------------------------------------------------------------------------

static void send_page(actor_ctx_t *ctx, const bus_ws_replay_t *r, const char *events, bool more) {
    bus_msg_t msg;
    bus_msg_init(&msg, BUS_WS_EVENTS);
    bus_ws_events_t *e = &msg.u.ws_events;
    e->request_id = r->request_id;
    snprintf(e->booking_id, sizeof e->booking_id, "%s", r->booking_id);
    e->more = more;
    snprintf(e->events, sizeof e->events, "%s", events);
    if (bus_send_to(ctx->bus, HTTP_ACTOR, &msg, REPLY_TIMEOUT_MS) != 0)
        log_warn(&ctx->log, "replay_reply_failed", "request_id=%lld", (long long)r->request_id);
}

// Whether a booking's history ends in a final status, after which no status can follow: ev[0..n)
// are its events after seq `after`; with none, the one at `after` is read.
static bool ends_final(actor_ctx_t *ctx, const char *booking_id, int after, const booking_event_t *ev, size_t n) {
    if (n > 0) return is_final(ev[n - 1].status);
    if (after <= 0) return false;
    booking_event_t *last = NULL;
    size_t m = 0;
    bool final = bookings_events(ctx->db, booking_id, after - 1, &last, &m) == STORE_OK && m > 0 &&
                 is_final(last[m - 1].status);
    free(last);
    return final;
}

// Answers one ws.replay. Nothing is sent when the database cannot be read: the http actor asks
// again a little later. True when the booking's history ends in a final status.
static bool replay(actor_ctx_t *ctx, const bus_ws_replay_t *r) {
    if (db_ensure(ctx->db) != 0) return false;
    booking_event_t *ev = NULL;
    size_t n = 0;
    int after = r->after_seq < 0 ? 0 : r->after_seq > INT32_MAX ? INT32_MAX : (int)r->after_seq;
    if (bookings_events(ctx->db, r->booking_id, after, &ev, &n) != STORE_OK) {
        log_warn(&ctx->log, "replay_failed", "booking=%s", r->booking_id);
        return false;
    }
    char page[sizeof ((bus_ws_events_t *)0)->events];
    size_t len = 0;
    page[len++] = '[';
    for (size_t i = 0; i < n; i++) {
        char item[160];
        int w = snprintf(item, sizeof item, "%s{\"seq\":%d,\"status\":\"%s\",\"at\":\"%s\"}", len > 1 ? "," : "",
                         ev[i].seq, ev[i].status, ev[i].at);
        if (w < 0 || (size_t)w >= sizeof item) continue;   // cannot happen: bounded fields
        if (len + (size_t)w + 2 > sizeof page) {            // room for "]" and the NUL
            page[len++] = ']';
            page[len] = '\0';
            send_page(ctx, r, page, true);
            len = 0;
            page[len++] = '[';
            w = snprintf(item, sizeof item, "{\"seq\":%d,\"status\":\"%s\",\"at\":\"%s\"}", ev[i].seq, ev[i].status,
                         ev[i].at);
        }
        memcpy(page + len, item, (size_t)w);
        len += (size_t)w;
    }
    page[len++] = ']';
    page[len] = '\0';
    send_page(ctx, r, page, false);
    bool final = ends_final(ctx, r->booking_id, after, ev, n);
    free(ev);
    return final;
}

static int broadcaster_on_command(actor_ctx_t *ctx, void *state, const bus_msg_t *msg) {
    if (msg->type != BUS_WS_REPLAY) return 0;
    broadcaster_t *self = state;
    const char *id = msg->u.ws_replay.booking_id;
    watch(self, id);   // before the history is read
    // A booking already final never changes again: nothing to watch (the page waiting on a
    // completed booking would otherwise stay in the set for good).
    if (replay(ctx, &msg->u.ws_replay)) zhashx_delete(self->watched, id);
    return 0;
}

// ---- notifications from every instance ------------------------------------------------------------

// One line a second at most: an http actor far behind would otherwise log once per status.
static void status_dropped(broadcaster_t *self) {
    self->dropped++;
    int64_t now = util_monotonic_ms();
    if (now - self->drop_log_ms < 1000) return;
    log_warn(&self->ctx->log, "status_not_delivered", "dropped=%llu reason=http_inbox_full",
             (unsigned long long)self->dropped);
    self->drop_log_ms = now;
    self->dropped = 0;
}

static void on_notification(void *arg, const char *channel, const char *payload) {
    broadcaster_t *self = arg;
    json_t *j = json_loads(payload, 0, NULL);
    const char *id = json_string_value(json_object_get(j, "booking_id"));
    const char *status = json_string_value(json_object_get(j, "status"));
    const char *at = json_string_value(json_object_get(j, "at"));
    json_t *seq = json_object_get(j, "seq");
    bus_msg_t msg;
    bus_msg_init(&msg, BUS_REALTIME_STATUS);
    bus_realtime_status_t *s = &msg.u.realtime_status;
    int64_t at_ms = 0;
    if (!id || !status || !at || !json_is_integer(seq) || json_integer_value(seq) <= 0 || strlen(id) >= sizeof s->booking_id ||
        strlen(status) >= sizeof s->status || api_rfc3339_parse_ms(at, strlen(at), &at_ms) != 0) {
        log_warn(&self->ctx->log, "notification_ignored", "channel=%s", channel);
        json_decref(j);
        return;
    }
    if (!wanted(self, id, status)) {
        json_decref(j);
        return;
    }
    snprintf(s->booking_id, sizeof s->booking_id, "%s", id);
    snprintf(s->status, sizeof s->status, "%s", status);
    s->seq = json_integer_value(seq);
    s->at = at_ms * 1000;
    json_decref(j);
    // A status lost here is made good by the subscriber's gap detection (the next seq) or by the
    // booking.status of the instance that committed it.
    if (bus_send_to(self->ctx->bus, HTTP_ACTOR, &msg, STATUS_TIMEOUT_MS) != 0) status_dropped(self);
}

static int on_listen_input(zloop_t *loop, zmq_pollitem_t *item, void *arg) {
    broadcaster_t *self = arg;
    if (notify_drain(self->listen, on_notification, self) != 0) {
        zloop_poller_end(loop, &self->listen_item);
        self->listen_registered = false;
    }
    return 0;
}

// Keeps the LISTEN connection up and its socket in the loop; after a reconnect (not the first
// connect) publishes realtime.resync.
static void keep_listening(broadcaster_t *self) {
    int rc = notify_ensure(self->listen);
    if (rc < 0 && self->listen_registered) {
        zloop_poller_end(self->ctx->loop, &self->listen_item);
        self->listen_registered = false;
    }
    if (rc != 1) return;
    if (self->listen_registered) zloop_poller_end(self->ctx->loop, &self->listen_item);
    self->listen_item = (zmq_pollitem_t){.socket = NULL, .fd = notify_fd(self->listen), .events = ZMQ_POLLIN};
    self->listen_registered = zloop_poller(self->ctx->loop, &self->listen_item, on_listen_input, self) == 0;
    if (self->connects++ > 0) {
        bus_msg_t msg;
        bus_msg_init(&msg, BUS_REALTIME_RESYNC);
        msg.u.realtime_resync.reconnects = self->connects - 1;
        actor_publish(self->ctx, &msg);
        log_info(&self->ctx->log, "listen_resync", "reconnects=%lld", (long long)(self->connects - 1));
    }
}

static int broadcaster_on_timer(actor_ctx_t *ctx, void *state) {
    keep_listening(state);
    return 0;
}

static int broadcaster_create(actor_ctx_t *ctx, void **state) {
    broadcaster_t *self = calloc(1, sizeof *self);
    if (!self) return -1;
    self->ctx = ctx;
    self->watched = zhashx_new();
    self->listen = notify_new(ctx->cfg->db_url, &ctx->log, (const char *const[]){BROADCASTER_CHANNEL, NULL});
    if (!self->listen || !self->watched) {
        notify_destroy(&self->listen);
        zhashx_destroy(&self->watched);
        free(self);
        return -1;
    }
    *state = self;
    keep_listening(self);   // failure is not fatal: the timer retries
    return 0;
}

static void broadcaster_destroy(actor_ctx_t *ctx, void **state) {
    broadcaster_t *self = *state;
    if (!self) return;
    if (self->listen_registered) zloop_poller_end(ctx->loop, &self->listen_item);
    notify_destroy(&self->listen);
    zhashx_destroy(&self->watched);
    free(self);
    *state = NULL;
}

const actor_spec_t broadcaster_actor_spec = {
    .name = "realtime-broadcaster",
    .needs_db = true,
    .timer_ms = BROADCASTER_TIMER_MS,
    .create = broadcaster_create,
    .destroy = broadcaster_destroy,
    .on_command = broadcaster_on_command,
    .on_timer = broadcaster_on_timer,
};
