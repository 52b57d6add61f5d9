// bus/endpoint.c — one actor's sockets on the bus, and sending/receiving [topic, body] messages.
//
// An endpoint owns, all on the thread that created it:
//   publish  PUSH -> BUS_IN (the broker). PUSH never drops; a large high-water mark absorbs bursts.
//   events   SUB  <- BUS_OUT, subscribed to the prefixes the actor asked for.
//   inbox    PULL bound at BUS_INBOX_PREFIX<name>: commands other actors send with bus_send_to.
//   trace    PUSH -> BUS_TRACE: a best-effort copy of each command for `sweetyctl trace`
//            (sent without waiting; dropped when the broker is behind).
//   targets  one PUSH per command target, created on first use and kept.
//
// inproc endpoints are not reconnected by ZeroMQ: if a target actor is restarted, the PUSH we hold
// still points at its old, closed inbox and a send times out. We then forget that socket, so the
// next command to the same target connects afresh. Likewise an inproc name is released a moment
// after its socket closes (the reaper thread does it), so binding an inbox retries briefly.
#include "bus/bus.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/util.h"

#define PUBLISH_HWM 100000
#define PUBLISH_TIMEOUT_MS 5000   // the broker is gone or wedged: fail rather than hang forever
#define PUSH_LINGER_MS 100
#define BIND_RETRY_MS 2000
#define TOPIC_MAX 64

static const logger_t bus_log = {SLOG_INFO, "bus"};

struct bus_endpoint_t {
    char name[BUS_FROM_MAX];
    zsock_t *publish;
    zsock_t *events;
    zsock_t *inbox;
    zsock_t *trace;
    zhashx_t *targets;   // target name -> zsock_t* (PUSH)
    uint64_t malformed;
};

// ---- raw send / receive -----------------------------------------------------------------------

// Sends [topic, body]. Multi-part messages are atomic in ZeroMQ: if the first frame is accepted,
// so is the second, so flags (ZMQ_DONTWAIT) only matter for the first.
static int send_frames(zsock_t *sock, const char *topic, const char *body, size_t len, int flags) {
    void *h = zsock_resolve(sock);
    if (zmq_send(h, topic, strlen(topic), ZMQ_SNDMORE | flags) == -1) return BUS_E_SOCKET;
    int rc;
    do {
        rc = zmq_send(h, body, len, flags);
    } while (rc == -1 && errno == EINTR);
    return rc == -1 ? BUS_E_SOCKET : BUS_OK;
}

static int send_msg(zsock_t *sock, const bus_msg_t *msg, int flags) {
    char *body;
    size_t len;
    int rc = bus_encode(msg, &body, &len);
    if (rc != BUS_OK) return rc;
    rc = send_frames(sock, bus_type_topic(msg->type), body, len, flags);
    free(body);
    return rc;
}

int bus_send_raw(zsock_t *sock, const bus_msg_t *msg) {
    assert(sock && msg);
    return send_msg(sock, msg, 0);
}

// Receives the next frame of a message already started (never blocks for long, but may be
// interrupted by a signal).
static int recv_more(void *h, zmq_msg_t *frame) {
    int rc;
    do {
        rc = zmq_msg_recv(frame, h, 0);
    } while (rc == -1 && errno == EINTR);
    return rc;
}

// Receives and decodes one message; `flags` (ZMQ_DONTWAIT) apply to its first frame only.
static int recv_msg(zsock_t *sock, bus_msg_t *msg, int flags) {
    void *h = zsock_resolve(sock);
    zmq_msg_t topic, body;
    zmq_msg_init(&topic);
    zmq_msg_init(&body);
    int rc = BUS_OK;
    size_t frames = 0;

    if (zmq_msg_recv(&topic, h, flags) == -1) {
        rc = (flags & ZMQ_DONTWAIT) && errno == EAGAIN ? BUS_E_AGAIN : BUS_E_SOCKET;
        zmq_msg_close(&topic);
        zmq_msg_close(&body);
        return rc;
    }
    frames = 1;
    if (zmq_msg_more(&topic)) {
        if (recv_more(h, &body) == -1) rc = BUS_E_SOCKET;
        else frames = 2;
    }
    // Consume whatever else belongs to this message.
    bool more = frames == 2 && zmq_msg_more(&body);
    while (more && rc == BUS_OK) {
        zmq_msg_t extra;
        zmq_msg_init(&extra);
        if (recv_more(h, &extra) == -1) rc = BUS_E_SOCKET;
        else frames++;
        more = zmq_msg_more(&extra);
        zmq_msg_close(&extra);
    }

    if (rc == BUS_OK && frames != 2) rc = BUS_E_FORMAT;
    if (rc == BUS_OK) {
        char name[TOPIC_MAX];
        size_t n = zmq_msg_size(&topic);
        if (n >= sizeof name || memchr(zmq_msg_data(&topic), 0, n)) {
            rc = BUS_E_TOPIC;
        } else {
            memcpy(name, zmq_msg_data(&topic), n);
            name[n] = '\0';
            rc = bus_decode(name, zmq_msg_data(&body), zmq_msg_size(&body), msg);
        }
    }
    zmq_msg_close(&topic);
    zmq_msg_close(&body);
    return rc;
}

int bus_recv(zsock_t *sock, bus_msg_t *msg) {
    assert(sock && msg);
    return recv_msg(sock, msg, 0);
}

// ---- endpoint ---------------------------------------------------------------------------------

static void destroy_target(void **item) {
    zsock_t *sock = *item;
    zsock_destroy(&sock);
    *item = NULL;
}

// Binds, retrying while the name is still held by a socket that is being closed.
static int bind_retrying(zsock_t *sock, const char *endpoint) {
    int64_t deadline = util_monotonic_ms() + BIND_RETRY_MS;
    while (zmq_bind(zsock_resolve(sock), endpoint) != 0) {
        if (errno != EADDRINUSE || util_monotonic_ms() >= deadline) return -1;
        zclock_sleep(5);
    }
    return 0;
}

static zsock_t *new_push(const char *endpoint, int hwm, int linger) {
    zsock_t *sock = zsock_new(ZMQ_PUSH);
    if (!sock) return NULL;
    zsock_set_sndhwm(sock, hwm);
    zsock_set_linger(sock, linger);
    if (zsock_connect(sock, "%s", endpoint) != 0) zsock_destroy(&sock);
    return sock;
}

bus_endpoint_t *bus_endpoint_new(const char *name, const char *const *subscriptions) {
    assert(name);
    size_t n = strlen(name);
    if (n == 0 || n >= BUS_FROM_MAX) {
        log_error(&bus_log, "endpoint_name_invalid", "length=%zu", n);
        return NULL;
    }
    bus_endpoint_t *self = calloc(1, sizeof *self);
    if (!self) return NULL;
    memcpy(self->name, name, n + 1);

    self->publish = new_push(BUS_IN, PUBLISH_HWM, PUSH_LINGER_MS);
    self->trace = new_push(BUS_TRACE, 1000, 0);
    self->events = zsock_new(ZMQ_SUB);
    self->inbox = zsock_new(ZMQ_PULL);
    self->targets = zhashx_new();
    bool ok = self->publish && self->trace && self->events && self->inbox && self->targets;
    if (ok) {
        zhashx_set_destructor(self->targets, destroy_target);
        zsock_set_sndtimeo(self->publish, PUBLISH_TIMEOUT_MS);
        zsock_set_linger(self->events, 0);
        zsock_set_linger(self->inbox, 0);
        zsock_set_rcvhwm(self->events, PUBLISH_HWM);
        ok = zsock_connect(self->events, "%s", BUS_OUT) == 0;
        for (size_t i = 0; ok && subscriptions && subscriptions[i]; i++)
            zsock_set_subscribe(self->events, subscriptions[i]);
    }
    if (ok) {
        char inbox[sizeof BUS_INBOX_PREFIX + BUS_FROM_MAX];
        snprintf(inbox, sizeof inbox, "%s%s", BUS_INBOX_PREFIX, name);
        if (bind_retrying(self->inbox, inbox) != 0) {
            log_error(&bus_log, "inbox_bind_failed", "endpoint=%s error=\"%s\"", inbox, zmq_strerror(errno));
            ok = false;
        }
    }
    if (!ok) bus_endpoint_destroy(&self);
    return self;
}

void bus_endpoint_destroy(bus_endpoint_t **self_p) {
    assert(self_p);
    bus_endpoint_t *self = *self_p;
    if (!self) return;
    zhashx_destroy(&self->targets);
    zsock_destroy(&self->publish);
    zsock_destroy(&self->trace);
    zsock_destroy(&self->events);
    zsock_destroy(&self->inbox);
    free(self);
    *self_p = NULL;
}

static void stamp(bus_endpoint_t *self, bus_msg_t *msg) {
    memcpy(msg->from, self->name, sizeof msg->from);
    msg->ts_us = util_now_us();
}

int bus_publish(bus_endpoint_t *self, bus_msg_t *msg) {
    assert(self && msg);
    stamp(self, msg);
    return send_msg(self->publish, msg, 0);
}

static zsock_t *target_socket(bus_endpoint_t *self, const char *target) {
    zsock_t *sock = zhashx_lookup(self->targets, target);
    if (sock) return sock;
    char inbox[sizeof BUS_INBOX_PREFIX + BUS_FROM_MAX];
    snprintf(inbox, sizeof inbox, "%s%s", BUS_INBOX_PREFIX, target);
    sock = new_push(inbox, 1000, PUSH_LINGER_MS);
    if (sock) zhashx_insert(self->targets, target, sock);
    return sock;
}

int bus_send_to(bus_endpoint_t *self, const char *target, bus_msg_t *msg, int timeout_ms) {
    assert(self && target && msg);
    size_t n = strlen(target);
    if (n == 0 || n >= BUS_FROM_MAX) return BUS_E_RANGE;
    stamp(self, msg);
    char *body;
    size_t len;
    int rc = bus_encode(msg, &body, &len);
    if (rc != BUS_OK) return rc;
    const char *topic = bus_type_topic(msg->type);

    zsock_t *sock = target_socket(self, target);
    if (!sock) {
        rc = BUS_E_SOCKET;
    } else {
        zsock_set_sndtimeo(sock, timeout_ms < 0 ? -1 : timeout_ms);
        rc = send_frames(sock, topic, body, len, 0);
        if (rc != BUS_OK) {
            // Full, or the target's inbox was closed under us: reconnect next time.
            log_warn(&bus_log, "command_not_delivered", "from=%s target=%s topic=%s", self->name, target, topic);
            zhashx_delete(self->targets, target);
        }
    }
    if (rc == BUS_OK) send_frames(self->trace, topic, body, len, ZMQ_DONTWAIT);   // best effort
    free(body);
    return rc;
}

zsock_t *bus_endpoint_events(bus_endpoint_t *self) {
    assert(self);
    return self->events;
}

zsock_t *bus_endpoint_inbox(bus_endpoint_t *self) {
    assert(self);
    return self->inbox;
}

const char *bus_endpoint_name(const bus_endpoint_t *self) {
    assert(self);
    return self->name;
}

uint64_t bus_endpoint_malformed(const bus_endpoint_t *self) {
    assert(self);
    return self->malformed;
}

static int endpoint_recv(bus_endpoint_t *self, zsock_t *which, bus_msg_t *msg, int flags) {
    assert(self && msg);
    assert(which == self->events || which == self->inbox);
    int rc = recv_msg(which, msg, flags);
    if (rc != BUS_OK && rc != BUS_E_SOCKET && rc != BUS_E_AGAIN) {
        self->malformed++;
        log_warn(&bus_log, "malformed_message", "endpoint=%s error=\"%s\"", self->name, bus_strerror(rc));
    }
    return rc;
}

int bus_endpoint_recv(bus_endpoint_t *self, zsock_t *which, bus_msg_t *msg) {
    return endpoint_recv(self, which, msg, 0);
}

int bus_endpoint_recv_nowait(bus_endpoint_t *self, zsock_t *which, bus_msg_t *msg) {
    return endpoint_recv(self, which, msg, ZMQ_DONTWAIT);
}
