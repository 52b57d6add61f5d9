// bus/endpoint.c — one actor's sockets on the bus, and sending/receiving [topic, body] messages.
//
// An endpoint owns, all on the thread that created it:
//   publish  PUSH -> BUS_IN (the broker). PUSH never drops; a large high-water mark absorbs bursts.
//            It also carries the batches of trace copies (below).
//   events   SUB  <- BUS_OUT, subscribed to the prefixes the actor asked for.
//   inbox    PULL bound at BUS_INBOX_PREFIX<name>: commands other actors send with bus_send_to.
//   targets  one PUSH per command target, created on first use and kept, and the slab the
//            bodies of the commands to it are sent from (zero-copy, below).
//   body     the buffer every message is encoded into (BUS_BODY_MAX bytes: no malloc per send).
//   batch    the trace copies of the commands sent and not yet handed to the broker.
//
// Trace copies. The trace must see every command, but a command goes inbox to inbox, past the
// broker. Sending a copy of each to the broker as a message of its own cost as much again as the
// command (benchmark 5: the broker's thread woke for every copy, a poll, a receive and a free
// each, on two cores shared by three busy threads). So the copies are appended to a batch
// (records of bus_batch_next's format) that goes to the broker as one message on the publish
// PUSH: when it holds BUS_TRACE_BATCH_MAX copies or would outgrow its buffer, when a command finds
// it older than BUS_TRACE_BATCH_AGE_US, before any event is published (so the broker records each
// sender's messages in the order they were sent), and when the owner calls bus_endpoint_flush
// (before its loop waits). A batch is sent without waiting; one the broker cannot take (its queue
// full) is dropped and counted: the trace is best effort, the bus never waits for it.
//
// inproc endpoints are not reconnected by ZeroMQ: if a target actor is restarted, the PUSH we hold
// still points at its old, closed inbox and a send times out. We then forget that socket, so the
// next command to the same target connects afresh. Likewise an inproc name is released a moment
// after its socket closes (the reaper thread does it), so binding an inbox retries briefly.
#include "bus/bus.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/util.h"

#define PUBLISH_HWM 100000
#define PUBLISH_TIMEOUT_MS 5000   // the broker is gone or wedged: fail rather than hang forever
#define PUSH_LINGER_MS 100
#define BIND_RETRY_MS 2000
#define TOPIC_MAX 64
#define BATCH_BYTES 32768
#define SLAB_BYTES 16384
#define RECORD_MAX (BUS_TRACE_RECORD_HEAD + BUS_TRACE_TOPIC_MAX + BUS_BODY_MAX)

_Static_assert(BATCH_BYTES >= 2 * RECORD_MAX, "a batch holds at least two of the largest records");
_Static_assert(TOPIC_MAX > BUS_TRACE_TOPIC_MAX, "every topic fits a trace record");

static const logger_t bus_log = {SLOG_INFO, "bus"};

typedef struct slab_t slab_t;

typedef struct {
    zsock_t *sock;    // PUSH to the target's inbox
    int timeout_ms;   // the send timeout last set on it (setting it costs a call per command)
    slab_t *slab;     // where the bodies of the next commands to it go (see "zero-copy" below)
} target_t;

struct bus_endpoint_t {
    char name[BUS_FROM_MAX];
    zsock_t *publish;
    zsock_t *events;
    zsock_t *inbox;
    zhashx_t *targets;            // target name -> target_t*
    target_t *last;               // the target of the last command (most go to the same one)
    char last_name[BUS_FROM_MAX];
    unsigned char *body;          // BUS_BODY_MAX bytes
    unsigned char *batch;         // BATCH_BYTES bytes, allocated with the first command
    size_t batch_len;             // bytes used
    size_t batch_count;           // records in it
    int64_t batch_since_us;       // ts_us of its first record
    void (*on_pending)(void *arg);
    void *pending_arg;
    uint64_t malformed;
    uint64_t trace_dropped;       // copies lost (the broker's queue was full)
    bool dropping;                // the last batch was lost
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

int bus_send_raw(zsock_t *sock, const bus_msg_t *msg) {
    assert(sock && msg);
    unsigned char body[BUS_BODY_MAX];
    size_t len;
    int rc = bus_encode_to(msg, body, sizeof body, &len);
    if (rc != BUS_OK) return rc;
    return send_frames(sock, bus_type_topic(msg->type), (const char *)body, len, 0);
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

// ---- command bodies, zero-copy ----------------------------------------------------------------
// A command's body is handed to ZeroMQ as it lies (zmq_msg_init_data, no message of its own), in a slab:
// a block the endpoint fills, one body after the other, with what it sends to one target. Each
// message in flight holds a reference to its slab, and so does the target while it fills it;
// ZeroMQ drops the message's reference (body_done) on whichever thread is done with it (the
// receiving actor's, or its reaper's), and the last reference frees the slab.
//
// Why: with a body copied into a zmq message of its own, every command was malloc'ed on the
// sender's thread and freed on the receiver's, and glibc makes that free take the lock of the
// sender's arena, against the sender's next malloc: with the two threads on the two cores, a
// quarter of a command's CPU time went to malloc, free and the futex calls of that lock
// (benchmark 5, bench/README.md). A slab is one malloc and one free for a hundred commands or so.
// The reference count is the one thing two threads write (atomically: ZeroMQ's own refcounted
// messages work the same way); the bytes are written before their message is sent, read after.
struct slab_t {
    atomic_uint refs;
    size_t used;
    size_t size;
    unsigned char data[];
};

static void slab_drop(slab_t *slab) {
    if (atomic_fetch_sub_explicit(&slab->refs, 1, memory_order_acq_rel) == 1) free(slab);
}

// The owner's reference: the target's current slab.
static void slab_release(slab_t **slab_p) {
    if (*slab_p) slab_drop(*slab_p);
    *slab_p = NULL;
}

// ZeroMQ's free function for a body: any thread.
static void body_done(void *data, void *hint) {
    (void)data;
    slab_drop(hint);
}

// Room for `len` bytes in the target's slab, starting a new slab when the current one is full.
// NULL when out of memory.
static unsigned char *slab_room(slab_t **slab_p, size_t len) {
    slab_t *slab = *slab_p;
    if (!slab || slab->size - slab->used < len) {
        size_t size = len > SLAB_BYTES ? len : SLAB_BYTES;
        slab_t *fresh = malloc(sizeof *fresh + size);
        if (!fresh) return NULL;
        atomic_init(&fresh->refs, 1);
        fresh->used = 0;
        fresh->size = size;
        slab_release(slab_p);
        *slab_p = slab = fresh;
    }
    unsigned char *room = slab->data + slab->used;
    slab->used += len;
    return room;
}

// Sends [topic, body] to a target, the body from the target's slab.
static int send_command(target_t *t, const char *topic, const unsigned char *body, size_t len) {
    unsigned char *copy = slab_room(&t->slab, len);
    if (!copy) return BUS_E_NOMEM;
    memcpy(copy, body, len);
    void *h = zsock_resolve(t->sock);
    if (zmq_send(h, topic, strlen(topic), ZMQ_SNDMORE) == -1) return BUS_E_SOCKET;
    // The topic frame was accepted: so is the body (multi-part messages are atomic).
    zmq_msg_t frame;
    atomic_fetch_add_explicit(&t->slab->refs, 1, memory_order_relaxed);
    if (zmq_msg_init_data(&frame, copy, len, body_done, t->slab) != 0) {
        slab_drop(t->slab);
        return BUS_E_NOMEM;
    }
    int rc;
    do {
        rc = zmq_msg_send(&frame, h, 0);
    } while (rc == -1 && errno == EINTR);
    if (rc == -1) zmq_msg_close(&frame);   // not sent: its reference goes now
    return rc == -1 ? BUS_E_SOCKET : BUS_OK;
}

// ---- endpoint ---------------------------------------------------------------------------------

static void destroy_target(void **item) {
    target_t *target = *item;
    zsock_destroy(&target->sock);
    slab_release(&target->slab);
    free(target);
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
    self->events = zsock_new(ZMQ_SUB);
    self->inbox = zsock_new(ZMQ_PULL);
    self->targets = zhashx_new();
    self->body = malloc(BUS_BODY_MAX);
    bool ok = self->publish && self->events && self->inbox && self->targets && self->body;
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
    if (self->publish) bus_endpoint_flush(self);   // the publish socket lingers: it gets there
    zhashx_destroy(&self->targets);
    zsock_destroy(&self->publish);
    zsock_destroy(&self->events);
    zsock_destroy(&self->inbox);
    free(self->batch);
    free(self->body);
    free(self);
    *self_p = NULL;
}

static void stamp(bus_endpoint_t *self, bus_msg_t *msg) {
    memcpy(msg->from, self->name, sizeof msg->from);
    msg->ts_us = util_now_us();
}

// ---- trace copies -----------------------------------------------------------------------------

int bus_endpoint_flush(bus_endpoint_t *self) {
    assert(self);
    if (self->batch_count == 0) return BUS_OK;
    int rc = send_frames(self->publish, BUS_TRACE_BATCH, (const char *)self->batch, self->batch_len, ZMQ_DONTWAIT);
    // Logged when dropping starts and when it stops, not for every batch while the broker is behind.
    if (rc != BUS_OK && !self->dropping)
        log_warn(&bus_log, "trace_copies_dropped", "endpoint=%s copies=%zu", self->name, self->batch_count);
    else if (rc == BUS_OK && self->dropping)
        log_info(&bus_log, "trace_copies_resumed", "endpoint=%s dropped=%" PRIu64, self->name, self->trace_dropped);
    self->dropping = rc != BUS_OK;
    if (rc != BUS_OK) self->trace_dropped += self->batch_count;
    self->batch_len = 0;
    self->batch_count = 0;
    return rc;
}

size_t bus_endpoint_trace_pending(const bus_endpoint_t *self) {
    assert(self);
    return self->batch_count;
}

uint64_t bus_endpoint_trace_dropped(const bus_endpoint_t *self) {
    assert(self);
    return self->trace_dropped;
}

void bus_endpoint_on_trace_pending(bus_endpoint_t *self, void (*fn)(void *arg), void *arg) {
    assert(self);
    self->on_pending = fn;
    self->pending_arg = arg;
}

static void put_be32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

// Appends the copy of a command just sent (its topic, and its body still in self->body); sends
// the batch when it is full or old. `now_us` is the command's ts_us.
static void trace_copy(bus_endpoint_t *self, const char *topic, size_t body_len, int64_t now_us) {
    size_t tl = strlen(topic);
    size_t need = BUS_TRACE_RECORD_HEAD + tl + body_len;
    assert(tl > 0 && tl <= BUS_TRACE_TOPIC_MAX && need <= RECORD_MAX);
    if (!self->batch && !(self->batch = malloc(BATCH_BYTES))) {
        log_error(&bus_log, "trace_copy_dropped", "endpoint=%s error=\"out of memory\"", self->name);
        self->trace_dropped++;
        return;
    }
    if (need > BATCH_BYTES - self->batch_len) bus_endpoint_flush(self);
    unsigned char *p = self->batch + self->batch_len;
    p[0] = (unsigned char)tl;
    memcpy(p + 1, topic, tl);
    put_be32(p + 1 + tl, (uint32_t)body_len);
    memcpy(p + BUS_TRACE_RECORD_HEAD + tl, self->body, body_len);
    self->batch_len += need;
    if (self->batch_count++ == 0) self->batch_since_us = now_us;
    int64_t age = now_us - self->batch_since_us;   // negative when the clock was set back
    if (self->batch_count >= BUS_TRACE_BATCH_MAX || age >= BUS_TRACE_BATCH_AGE_US || age < 0)
        bus_endpoint_flush(self);
    else if (self->batch_count == 1 && self->on_pending)
        self->on_pending(self->pending_arg);
}

// ---- sending ----------------------------------------------------------------------------------

int bus_publish(bus_endpoint_t *self, bus_msg_t *msg) {
    assert(self && msg);
    stamp(self, msg);
    size_t len;
    int rc = bus_encode_to(msg, self->body, BUS_BODY_MAX, &len);
    if (rc != BUS_OK) return rc;
    bus_endpoint_flush(self);   // the trace copies of earlier commands go first
    return send_frames(self->publish, bus_type_topic(msg->type), (const char *)self->body, len, 0);
}

static target_t *remember_target(bus_endpoint_t *self, const char *name, target_t *target) {
    self->last = target;
    memcpy(self->last_name, name, strlen(name) + 1);   // bus_send_to checked its length
    return target;
}

static target_t *target_for(bus_endpoint_t *self, const char *name) {
    if (self->last && strcmp(self->last_name, name) == 0) return self->last;
    target_t *target = zhashx_lookup(self->targets, name);
    if (target) return remember_target(self, name, target);
    char inbox[sizeof BUS_INBOX_PREFIX + BUS_FROM_MAX];
    snprintf(inbox, sizeof inbox, "%s%s", BUS_INBOX_PREFIX, name);
    target = calloc(1, sizeof *target);
    if (target) target->sock = new_push(inbox, 1000, PUSH_LINGER_MS);
    if (target && target->sock) {
        target->timeout_ms = -2;   // not set yet
        zhashx_insert(self->targets, name, target);
        return remember_target(self, name, target);
    }
    free(target);
    return NULL;
}

int bus_send_to(bus_endpoint_t *self, const char *target, bus_msg_t *msg, int timeout_ms) {
    assert(self && target && msg);
    size_t n = strlen(target);
    if (n == 0 || n >= BUS_FROM_MAX) return BUS_E_RANGE;
    stamp(self, msg);
    size_t len;
    int rc = bus_encode_to(msg, self->body, BUS_BODY_MAX, &len);
    if (rc != BUS_OK) return rc;
    const char *topic = bus_type_topic(msg->type);

    target_t *t = target_for(self, target);
    if (!t) return BUS_E_SOCKET;
    int timeout = timeout_ms < 0 ? -1 : timeout_ms;
    if (t->timeout_ms != timeout) {
        zsock_set_sndtimeo(t->sock, timeout);
        t->timeout_ms = timeout;
    }
    rc = send_command(t, topic, self->body, len);
    if (rc != BUS_OK) {
        // Full, or the target's inbox was closed under us: reconnect next time.
        log_warn(&bus_log, "command_not_delivered", "from=%s target=%s topic=%s", self->name, target, topic);
        self->last = NULL;
        zhashx_delete(self->targets, target);
        return rc;
    }
    trace_copy(self, topic, len, msg->ts_us);
    return BUS_OK;
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
