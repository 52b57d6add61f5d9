// realtime/ws.c — the WebSocket side of the http actor: /ws sessions, their subscriptions, and
// the delivery of booking status changes to them in order, without gaps or repeats.
//
// Protocol: CONTRACT.md "WebSocket /ws". Text frames, one JSON object each; the client subscribes
// with a booking's status token; the server answers `subscribed`, replays the history after the
// client's after_seq, then sends each new status.
//
// Threading: everything here runs on the http actor's one thread, the lws service thread, as its
// bus messages do (they are received on the same thread, see http.c), so nothing here needs a
// lock and nothing wakes lws from elsewhere. Writes happen only in LWS_CALLBACK_SERVER_WRITEABLE.
//
// Ordering. Every subscription keeps next_seq, the seq it must send next. A status for its booking
// — booking.status from this instance's actors, realtime.status from the broadcaster's NOTIFY
// (any instance), or a page of a replay — with seq == next_seq is queued and next_seq advances;
// a smaller seq is a duplicate and dropped; a larger one is a gap: it is dropped too (its seq
// remembered) and the history after next_seq - 1 is asked from the realtime-broadcaster
// (ws.replay → ws.events, the http actor never reads the database). A replay that ends while a
// newer seq was seen asks again. A replay unanswered for REPLAY_RETRY_MS is asked again, so a
// database outage only delays. realtime.resync (the broadcaster's LISTEN came back) replays every
// subscription.
//
// Subscriptions are found by booking id through a hash of intrusive lists (booking → subscribers),
// so a status reaches its watchers without a scan of every connection.
//
// Bounds. A message from the client is at most WS_RX_MAX bytes; a connection holds at most
// WS_SUBS_MAX subscriptions; its send queue at most WS_QUEUE_FRAMES frames / WS_QUEUE_BYTES bytes:
// a client that does not read is closed (1008, reason slow_consumer), its queue freed at once.
// Liveness: a ping every WS_PING_S; a client that has not answered the previous one by then is
// dropped. Shutdown: every connection gets close code 1001 (http.c waits a moment for them).
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/token.h"
#include "common/util.h"
#include "realtime/http_internal.h"
#include "realtime/ws_frame.h"

#define WS_PATH "/ws"
#define WS_SUBS_MAX 16
#define WS_RX_MAX 4096
#define WS_QUEUE_FRAMES 256
#define WS_QUEUE_BYTES (256 * 1024)
#define WS_PING_S 30
#define WS_BUCKETS 4096
#define WS_TICK_MS 1000
#define REPLAY_RETRY_MS 3000
#define REPLAY_TARGET "realtime-broadcaster"
#define WS_KILL_AFTER_S 2            // a close that cannot be written (client not reading) in time

enum { CLOSE_CLIENT, CLOSE_UNAUTHORIZED, CLOSE_BAD_REQUEST, CLOSE_SLOW_CONSUMER, CLOSE_PING_TIMEOUT, CLOSE_SHUTDOWN,
       CLOSE_REASONS };
static const char *const close_reasons[CLOSE_REASONS] = {"client", "unauthorized", "bad_request",
                                                         "slow_consumer", "ping_timeout", "shutdown"};

typedef struct ws_frame {
    struct ws_frame *next;
    size_t len;
    unsigned char data[];   // LWS_PRE bytes, then the text
} ws_frame_t;

typedef struct ws_conn ws_conn_t;

typedef struct ws_sub {
    ws_conn_t *conn;
    struct ws_sub *bnext, *bprev;   // the booking's bucket
    bool used;
    char booking_id[TOKEN_BID_MAX + 1];
    int64_t next_seq;
    int64_t gap_seen;               // largest seq dropped as a gap while waiting for a replay
    int64_t replay_id;              // 0: none asked
    bool replay_pending;
    int64_t replay_sent_ms;
} ws_sub_t;

struct ws_conn {
    struct lws *wsi;
    ws_conn_t *prev, *next;
    ws_sub_t subs[WS_SUBS_MAX];
    int nsubs;
    ws_frame_t *head, *tail;
    size_t qframes, qbytes;
    char *rx;
    size_t rx_len;
    bool rx_too_large;
    int close_code;                 // 0: open
    int close_reason;               // CLOSE_* counted when the connection ends
    bool ping_due, ping_outstanding;
    int64_t ping_sent_ms;
    int64_t next_ping_ms;           // this connection's next ping (spread over the period, see ws_established)
};

struct ws_state {
    ws_conn_t *conns;
    size_t nconns, nsubs;
    ws_sub_t *buckets[WS_BUCKETS];
    int64_t next_replay_id;
    int64_t next_tick_ms;
    uint64_t established;           // connections so far: spreads their pings
    uint64_t closed[CLOSE_REASONS];
};

// ---- set-up --------------------------------------------------------------------------------------

int ws_state_new(http_t *self) {
    self->ws = calloc(1, sizeof *self->ws);
    return self->ws ? 0 : -1;
}

void ws_state_destroy(http_t *self) {
    free(self->ws);   // connections are gone with the lws context (ws_closed ran for each)
    self->ws = NULL;
}

size_t ws_open_count(const http_t *self) {
    return self->ws ? self->ws->nconns : 0;
}

void ws_metrics(const http_t *self, FILE *f) {
    const struct ws_state *st = self->ws;
    fprintf(f, "# HELP sweety_ws_connections Open WebSocket connections.\n# TYPE sweety_ws_connections gauge\n");
    fprintf(f, "sweety_ws_connections %zu\n", st ? st->nconns : 0);
    fprintf(f, "# HELP sweety_ws_subscriptions Booking subscriptions of open WebSocket connections.\n"
               "# TYPE sweety_ws_subscriptions gauge\n");
    fprintf(f, "sweety_ws_subscriptions %zu\n", st ? st->nsubs : 0);
    fprintf(f, "# HELP sweety_ws_closed_total WebSocket connections closed, by reason.\n"
               "# TYPE sweety_ws_closed_total counter\n");
    for (int i = 0; i < CLOSE_REASONS; i++)
        fprintf(f, "sweety_ws_closed_total{reason=\"%s\"} %" PRIu64 "\n", close_reasons[i], st ? st->closed[i] : 0);
}

// ---- the booking → subscribers map ---------------------------------------------------------------

static size_t bucket_of(const char *id) {
    uint32_t h = 2166136261u;
    for (; *id; id++) h = (h ^ (unsigned char)*id) * 16777619u;
    return h % WS_BUCKETS;
}

static void map_add(struct ws_state *st, ws_sub_t *sub) {
    ws_sub_t **head = &st->buckets[bucket_of(sub->booking_id)];
    sub->bprev = NULL;
    sub->bnext = *head;
    if (*head) (*head)->bprev = sub;
    *head = sub;
    st->nsubs++;
}

static void map_remove(struct ws_state *st, ws_sub_t *sub) {
    if (sub->bprev) sub->bprev->bnext = sub->bnext;
    else st->buckets[bucket_of(sub->booking_id)] = sub->bnext;
    if (sub->bnext) sub->bnext->bprev = sub->bprev;
    sub->bnext = sub->bprev = NULL;
    st->nsubs--;
}

// ---- the send queue ------------------------------------------------------------------------------

static void queue_free(ws_conn_t *c) {
    while (c->head) {
        ws_frame_t *f = c->head;
        c->head = f->next;
        free(f);
    }
    c->tail = NULL;
    c->qframes = c->qbytes = 0;
}

// Starts closing with `code`. A connection already closing keeps its first code.
static void conn_close(ws_conn_t *c, int code, int reason) {
    if (c->close_code) return;
    c->close_code = code;
    c->close_reason = reason;
    lws_callback_on_writable(c->wsi);
    // A client that does not read never makes us writable: then it is dropped without a close frame.
    lws_set_timeout(c->wsi, PENDING_TIMEOUT_USER_OK, WS_KILL_AFTER_S);
}

static void conn_slow(http_t *self, ws_conn_t *c) {
    log_info(&self->log, "ws_slow_consumer", "queued=%zu bytes=%zu", c->qframes, c->qbytes);
    queue_free(c);
    conn_close(c, LWS_CLOSE_STATUS_POLICY_VIOLATION, CLOSE_SLOW_CONSUMER);
}

static void send_text(http_t *self, ws_conn_t *c, const char *text, size_t len) {
    if (c->close_code) return;
    if (c->qframes + 1 > WS_QUEUE_FRAMES || c->qbytes + len > WS_QUEUE_BYTES) {
        conn_slow(self, c);
        return;
    }
    ws_frame_t *f = malloc(sizeof *f + LWS_PRE + len);
    if (!f) {
        conn_slow(self, c);
        return;
    }
    f->next = NULL;
    f->len = len;
    memcpy(f->data + LWS_PRE, text, len);
    if (c->tail) c->tail->next = f;
    else c->head = f;
    c->tail = f;
    c->qframes++;
    c->qbytes += len;
    lws_callback_on_writable(c->wsi);
}

static void send_error(http_t *self, ws_conn_t *c, const char *code) {
    char text[96];
    int n = snprintf(text, sizeof text, "{\"type\":\"error\",\"code\":\"%s\"}", code);
    send_text(self, c, text, (size_t)n);
}

static void send_status(http_t *self, ws_sub_t *sub, int64_t seq, const char *status, const char *at) {
    char text[256];
    int n = snprintf(text, sizeof text, "{\"type\":\"status\",\"booking_id\":\"%s\",\"seq\":%" PRId64
                     ",\"status\":\"%s\",\"at\":\"%s\"}", sub->booking_id, seq, status, at);
    if (n > 0 && (size_t)n < sizeof text) send_text(self, sub->conn, text, (size_t)n);
}

// ---- ordering ------------------------------------------------------------------------------------

static void ask_replay(http_t *self, ws_sub_t *sub) {
    struct ws_state *st = self->ws;
    sub->replay_id = ++st->next_replay_id;
    sub->replay_pending = true;
    sub->replay_sent_ms = http_monotonic_ms();
    sub->gap_seen = 0;
    bus_msg_t msg;
    bus_msg_init(&msg, BUS_WS_REPLAY);
    msg.u.ws_replay.request_id = sub->replay_id;
    snprintf(msg.u.ws_replay.booking_id, sizeof msg.u.ws_replay.booking_id, "%s", sub->booking_id);
    msg.u.ws_replay.after_seq = sub->next_seq - 1;
    // Never block the service loop: a full inbox is retried by the tick, a second from now.
    if (bus_send_to(self->bus, REPLAY_TARGET, &msg, 0) != 0) sub->replay_sent_ms -= REPLAY_RETRY_MS - 1000;
}

static void deliver(http_t *self, ws_sub_t *sub, int64_t seq, const char *status, const char *at) {
    if (seq < sub->next_seq) return;   // seen already
    if (seq == sub->next_seq) {
        send_status(self, sub, seq, status, at);
        sub->next_seq++;
        return;
    }
    if (seq > sub->gap_seen) sub->gap_seen = seq;   // a gap: the replay brings it, in order
    if (!sub->replay_pending) ask_replay(self, sub);
}

void ws_on_status(http_t *self, const char *booking_id, int64_t seq, const char *status, int64_t at_us) {
    if (!self->ws || seq <= 0 || self->ws->nsubs == 0) return;
    char at[40] = "";
    for (ws_sub_t *sub = self->ws->buckets[bucket_of(booking_id)], *next; sub; sub = next) {
        next = sub->bnext;   // delivering may close the connection, never frees a subscription here
        if (strcmp(sub->booking_id, booking_id) != 0) continue;
        if (!at[0]) util_rfc3339_ms(at_us, at, sizeof at);   // only for a status someone watches
        deliver(self, sub, seq, status, at);
    }
}

void ws_on_events(http_t *self, const bus_ws_events_t *e) {
    if (!self->ws) return;
    ws_sub_t *sub = self->ws->buckets[bucket_of(e->booking_id)];
    while (sub && !(sub->replay_id == e->request_id && strcmp(sub->booking_id, e->booking_id) == 0)) sub = sub->bnext;
    if (!sub || !sub->replay_pending) return;   // superseded, or its connection left
    json_t *arr = json_loads(e->events, 0, NULL);
    size_t i;
    json_t *ev;
    json_array_foreach(arr, i, ev) {
        json_t *seq = json_object_get(ev, "seq");
        const char *status = json_string_value(json_object_get(ev, "status"));
        const char *at = json_string_value(json_object_get(ev, "at"));
        if (!json_is_integer(seq) || !status || !at) continue;
        int64_t s = json_integer_value(seq);
        if (s != sub->next_seq) {
            if (s > sub->next_seq && s > sub->gap_seen) sub->gap_seen = s;   // cannot happen: the history has none
            continue;
        }
        send_status(self, sub, s, status, at);
        sub->next_seq++;
    }
    json_decref(arr);
    if (e->more) return;
    sub->replay_pending = false;
    if (sub->gap_seen >= sub->next_seq) ask_replay(self, sub);   // something newer came meanwhile
}

void ws_on_resync(http_t *self) {
    if (!self->ws) return;
    for (ws_conn_t *c = self->ws->conns; c; c = c->next)
        for (int i = 0; i < WS_SUBS_MAX; i++)
            if (c->subs[i].used && !c->close_code) ask_replay(self, &c->subs[i]);
}

// ---- client messages -----------------------------------------------------------------------------

static ws_sub_t *sub_find(ws_conn_t *c, const char *booking_id) {
    for (int i = 0; i < WS_SUBS_MAX; i++)
        if (c->subs[i].used && strcmp(c->subs[i].booking_id, booking_id) == 0) return &c->subs[i];
    return NULL;
}

// See ws_frame.h: the parsing and the token check of a client message, without the connection.
int ws_parse_client_frame(const char *text, size_t len, const char *secret, int64_t now_s,
                          ws_subscribe_t *out) {
    const char *const secrets[] = {secret ? secret : "", NULL};
    return ws_parse_client_frame_any(text, len, secrets, now_s, out, NULL);
}

// The frame read, and its token checked with the signer when there is one, else with the secrets.
static int parse_client_frame(const char *text, size_t len, token_signer_t *signer, const char *const *secrets,
                              int64_t now_s, ws_subscribe_t *out, int *matched) {
    if (matched) *matched = -1;
    json_t *j = api_json_loadb(text, len, JSON_REJECT_DUPLICATES);
    const char *type = json_string_value(json_object_get(j, "type"));
    json_t *bid = json_object_get(j, "booking_id");
    json_t *tok = json_object_get(j, "token");
    json_t *after = json_object_get(j, "after_seq");
    bool ok = json_is_object(j) && type && strcmp(type, "subscribe") == 0 && json_is_string(bid) &&
              json_string_length(bid) >= 1 && json_string_length(bid) <= TOKEN_BID_MAX && json_is_string(tok) &&
              (!after || json_is_null(after) || (json_is_integer(after) && json_integer_value(after) >= 0 &&
                                                 json_integer_value(after) < INT32_MAX));
    if (!ok) {
        json_decref(j);
        return WS_FRAME_BAD_REQUEST;
    }
    ws_subscribe_t r;
    snprintf(r.booking_id, sizeof r.booking_id, "%s", json_string_value(bid));
    r.after_seq = json_is_integer(after) ? json_integer_value(after) : 0;
    char token_bid[37];
    const char *token = json_string_value(tok);
    bool authorized = json_string_length(tok) <= TOKEN_MAX_LEN &&
                      (signer ? token_signer_verify(signer, token, now_s, token_bid, matched)
                              : token_verify_any(secrets, token, now_s, token_bid, matched)) == 0 &&
                      strcmp(token_bid, r.booking_id) == 0;
    json_decref(j);
    if (!authorized) {
        if (matched) *matched = -1;   // a good token for another booking
        return WS_FRAME_UNAUTHORIZED;
    }
    *out = r;
    return WS_FRAME_SUBSCRIBE;
}

int ws_parse_client_frame_any(const char *text, size_t len, const char *const *secrets, int64_t now_s,
                              ws_subscribe_t *out, int *matched) {
    return parse_client_frame(text, len, NULL, secrets, now_s, out, matched);
}

int ws_parse_client_frame_signer(const char *text, size_t len, token_signer_t *signer, int64_t now_s,
                                 ws_subscribe_t *out, int *matched) {
    if (!signer) {   // NULL would mean "use the secrets" to parse_client_frame: refuse the token instead
        const char *const none[] = {NULL};
        return parse_client_frame(text, len, NULL, none, now_s, out, matched);
    }
    return parse_client_frame(text, len, signer, NULL, now_s, out, matched);
}

static void on_message(http_t *self, ws_conn_t *c, const char *text, size_t len) {
    ws_subscribe_t req;
    // security.token_secret_previous (in the signer): tokens signed before a rotation still
    // subscribe until they expire
    int matched = -1;
    int rc = ws_parse_client_frame_signer(text, len, self->token_signer, (int64_t)time(NULL), &req, &matched);
    if (rc == WS_FRAME_SUBSCRIBE) http_count_secret(self, SECRET_TOKEN, matched);
    if (rc == WS_FRAME_BAD_REQUEST) {
        send_error(self, c, "bad_request");
        conn_close(c, 4400, CLOSE_BAD_REQUEST);
        return;
    }
    if (rc != WS_FRAME_SUBSCRIBE) {
        send_error(self, c, "unauthorized");
        conn_close(c, 4401, CLOSE_UNAUTHORIZED);
        return;
    }
    const char *booking_id = req.booking_id;
    int64_t after_seq = req.after_seq;
    ws_sub_t *sub = sub_find(c, booking_id);
    if (!sub) {
        if (c->nsubs >= WS_SUBS_MAX) {
            send_error(self, c, "too_many_subscriptions");
            return;
        }
        for (int i = 0; i < WS_SUBS_MAX && !sub; i++)
            if (!c->subs[i].used) sub = &c->subs[i];
        if (!sub) {   // nsubs counts used slots, so one is free: a bug if not
            send_error(self, c, "too_many_subscriptions");
            return;
        }
        memset(sub, 0, sizeof *sub);
        sub->used = true;
        sub->conn = c;
        snprintf(sub->booking_id, sizeof sub->booking_id, "%s", booking_id);
        map_add(self->ws, sub);
        c->nsubs++;
        if (self->ws->nsubs == 1) http_watch_statuses(self, true);   // before the replay is asked
    }
    char frame[128];
    int n = snprintf(frame, sizeof frame, "{\"type\":\"subscribed\",\"booking_id\":\"%s\"}", booking_id);
    send_text(self, c, frame, (size_t)n);
    sub->next_seq = after_seq + 1;
    ask_replay(self, sub);   // a new replay_id: pages of an earlier replay are ignored
}

// ---- lws callbacks -------------------------------------------------------------------------------

// LWS_CALLBACK_HTTP_CONFIRM_UPGRADE. Only a WebSocket upgrade on /ws, and only from the allowed
// origin when the client names one (a browser always does): otherwise 403.
int ws_confirm_upgrade(http_t *self, struct lws *wsi, const char *proto) {
    if (self->terminating || !proto || strcmp(proto, "websocket") != 0) return -1;
    char path[16] = "";
    if (lws_hdr_total_length(wsi, WSI_TOKEN_GET_URI) >= (int)sizeof path ||
        lws_hdr_copy(wsi, path, sizeof path, WSI_TOKEN_GET_URI) < 0 || strcmp(path, WS_PATH) != 0) {
        log_info(&self->log, "ws_refused", "reason=path");
        return -1;
    }
    if (ws_filter(self, wsi) != 0) {
        log_info(&self->log, "ws_refused", "reason=origin");
        if (lws_return_http_status(wsi, HTTP_STATUS_FORBIDDEN, NULL)) return -1;
        return 1;
    }
    return 0;
}

// LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION (and the check above): 0 to accept.
int ws_filter(http_t *self, struct lws *wsi) {
    int n = lws_hdr_total_length(wsi, WSI_TOKEN_ORIGIN);
    if (n <= 0) return 0;   // not a browser: the token is what protects a subscription
    char origin[sizeof self->cors_origin];
    if (n >= (int)sizeof origin || lws_hdr_copy(wsi, origin, sizeof origin, WSI_TOKEN_ORIGIN) < 0) return 1;
    return self->cors_origin[0] && strcasecmp(origin, self->cors_origin) == 0 ? 0 : 1;
}

int ws_established(http_t *self, struct lws *wsi, session_t *s) {
    if (!s || !self->ws) return -1;
    ws_conn_t *c = calloc(1, sizeof *c);
    if (!c) return -1;
    c->wsi = wsi;
    c->next = self->ws->conns;
    if (c->next) c->next->prev = c;
    self->ws->conns = c;
    self->ws->nconns++;
    s->ws = c;
    // The first ping comes half a period to a whole one after the upgrade, at a point that moves
    // with each new connection (a golden-ratio walk), so that thousands of connections opened
    // together are not all pinged in the same tick every period.
    int64_t period = (int64_t)WS_PING_S * 1000;
    int64_t spread = (int64_t)((self->ws->established++ * 2654435761u) % (uint64_t)(period / 2));
    c->next_ping_ms = http_monotonic_ms() + period / 2 + spread;
    lws_set_timeout(wsi, NO_PENDING_TIMEOUT, 0);
    if (self->terminating) conn_close(c, LWS_CLOSE_STATUS_GOINGAWAY, CLOSE_SHUTDOWN);
    return 0;
}

int ws_receive(http_t *self, struct lws *wsi, session_t *s, const void *in, size_t len) {
    ws_conn_t *c = s ? s->ws : NULL;
    if (!c) return -1;
    if (c->close_code) return 0;   // closing: the rest is ignored
    if (lws_frame_is_binary(wsi)) c->rx_too_large = true;   // not ours: bad_request once complete
    if (!c->rx_too_large && len <= WS_RX_MAX - c->rx_len) {
        char *rx = realloc(c->rx, c->rx_len + len + 1);
        if (!rx) return -1;
        memcpy(rx + c->rx_len, in, len);
        c->rx = rx;
        c->rx_len += len;
        c->rx[c->rx_len] = '\0';
    } else {
        c->rx_too_large = true;
    }
    if (!lws_is_final_fragment(wsi) || lws_remaining_packet_payload(wsi) > 0) return 0;
    if (c->rx_too_large) {
        send_error(self, c, "bad_request");
        conn_close(c, 4400, CLOSE_BAD_REQUEST);
    } else {
        on_message(self, c, c->rx ? c->rx : "", c->rx_len);
    }
    free(c->rx);
    c->rx = NULL;
    c->rx_len = 0;
    c->rx_too_large = false;
    return 0;
}

void ws_pong(session_t *s) {
    if (s && s->ws) s->ws->ping_outstanding = false;
}

int ws_writeable(http_t *self, struct lws *wsi, session_t *s) {
    ws_conn_t *c = s ? s->ws : NULL;
    if (!c) return -1;
    if (c->ping_due && !c->close_code) {
        unsigned char buf[LWS_PRE + 8];
        c->ping_due = false;
        c->ping_outstanding = true;
        c->ping_sent_ms = http_monotonic_ms();
        // lws 4.1 never reports a pong with an empty payload (no LWS_CALLBACK_RECEIVE_PONG), so
        // the ping carries one byte, which the client's pong echoes back.
        buf[LWS_PRE] = 'p';
        if (lws_write(wsi, buf + LWS_PRE, 1, LWS_WRITE_PING) < 0) return -1;
        if (c->head || c->close_code) lws_callback_on_writable(wsi);
        return 0;
    }
    if (c->head) {
        ws_frame_t *f = c->head;
        if (lws_write(wsi, f->data + LWS_PRE, f->len, LWS_WRITE_TEXT) < (int)f->len) return -1;
        c->head = f->next;
        if (!c->head) c->tail = NULL;
        c->qframes--;
        c->qbytes -= f->len;
        free(f);
        if (c->head || c->close_code) lws_callback_on_writable(wsi);
        return 0;
    }
    if (c->close_code) {
        const char *why = close_reasons[c->close_reason];
        lws_close_reason(wsi, (enum lws_close_status)c->close_code, (unsigned char *)why, strlen(why));
        return -1;
    }
    return 0;
}

// LWS_CALLBACK_CLOSED: the connection is gone; its subscriptions and queue go with it.
void ws_closed(http_t *self, session_t *s) {
    ws_conn_t *c = s ? s->ws : NULL;
    if (!c || !self->ws) return;
    struct ws_state *st = self->ws;
    size_t had = st->nsubs;
    for (int i = 0; i < WS_SUBS_MAX; i++)
        if (c->subs[i].used) map_remove(st, &c->subs[i]);
    if (had > 0 && st->nsubs == 0) http_watch_statuses(self, false);
    if (c->prev) c->prev->next = c->next;
    else st->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    st->nconns--;
    st->closed[c->close_code ? c->close_reason : CLOSE_CLIENT]++;
    queue_free(c);
    free(c->rx);
    free(c);
    s->ws = NULL;
}

// ---- time ----------------------------------------------------------------------------------------

void ws_tick(http_t *self) {
    struct ws_state *st = self->ws;
    if (!st) return;
    int64_t now = http_monotonic_ms();
    if (now < st->next_tick_ms) return;
    st->next_tick_ms = now + WS_TICK_MS;
    for (ws_conn_t *c = st->conns; c; c = c->next) {
        if (c->close_code) continue;
        for (int i = 0; i < WS_SUBS_MAX; i++) {
            ws_sub_t *sub = &c->subs[i];
            if (sub->used && sub->replay_pending && now - sub->replay_sent_ms >= REPLAY_RETRY_MS) ask_replay(self, sub);
        }
        if (now < c->next_ping_ms) continue;
        c->next_ping_ms = now + (int64_t)WS_PING_S * 1000;
        if (c->ping_outstanding) {
            log_info(&self->log, "ws_ping_timeout", NULL);
            c->close_code = LWS_CLOSE_STATUS_GOINGAWAY;   // counted as ping_timeout; no close frame
            c->close_reason = CLOSE_PING_TIMEOUT;
            lws_set_timeout(c->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
            continue;
        }
        c->ping_due = true;
        lws_callback_on_writable(c->wsi);
    }
}

void ws_shutdown(http_t *self) {
    if (!self->ws) return;
    for (ws_conn_t *c = self->ws->conns; c; c = c->next) {
        queue_free(c);
        conn_close(c, LWS_CLOSE_STATUS_GOINGAWAY, CLOSE_SHUTDOWN);
    }
}
