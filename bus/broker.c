// bus/broker.c — the bus broker actor: fan-out of published messages, and the trace.
//
// Sockets (all owned by the actor thread):
//   in       PULL bound at BUS_IN: every endpoint PUSHes what it publishes here, and the batches
//            of trace copies of the commands it sent inbox to inbox ([BUS_TRACE_BATCH, records],
//            bus/bus.h): one queue per sender, so each sender's messages are recorded in order.
//   out      PUB  bound at BUS_OUT: every event from `in` is republished here, unchanged; the
//            batches are recorded only.
//   router   ROUTER bound at trace.endpoint: `sweetyctl trace` clients (DEALER) connect here.
//
// What the trace keeps is raw frames (topic + msgpack body): the broker never decodes. Messages
// that arrive before the supervisor sends "STARTUP-DONE" are pinned (up to BUS_TRACE_STARTUP_MAX,
// the rest go to the ring) so a late client still sees every actor.started; afterwards they go to a
// ring of the last `keep` messages. Pinned messages always precede ring messages in time.
//
// Trace clients follow the lws_ring model: each client has a tail (a position in the pinned list,
// then a sequence number in the ring) and the broker pushes to it, without ever waiting, as far as
// its ZeroMQ queue allows. When the queue is full (EAGAIN) the client stays behind and is retried
// on the next message or after a short poll timeout; when the ring overwrites the client's tail
// the client could not keep up and is dropped, as is a client that is gone (EHOSTUNREACH, thanks
// to ZMQ_ROUTER_MANDATORY). So a replay of thousands of messages never overflows a client, and a
// stuck client never holds up the bus or grows memory beyond the ring and its HWM.
//
// ZeroMQ unlinks an existing ipc socket file when binding (which would steal the path from a
// running daemon) and leaves its own file behind when closing: we check the path before binding
// (ipc_path_usable) and remove our own file, and only ours, when stopping.
//
// A client that sends SUB again (for example after reconnecting with the same identity, which
// ZMQ_ROUTER_HANDOVER allows) starts over from the oldest kept message.
#include "bus/broker.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "bus/bus.h"
#include "common/util.h"

#define BUS_HWM 100000
#define TRACE_CLIENT_HWM 10000
#define BEHIND_RETRY_MS 20
#define DRAIN_BATCH 1000
#define BIND_RETRY_MS 2000
#define ROUTING_ID_MAX 256
#define PREFIX_MAX 256
#define KEEP_DEFAULT 1000
#define KEEP_MAX 10000000

typedef struct {
    size_t topic_len;
    size_t body_len;
    size_t capacity;        // bytes data[] can hold (a ring slot's entry is reused when it fits)
    unsigned char data[];   // topic bytes, then body bytes
} entry_t;

typedef struct {
    bool used;
    unsigned char id[ROUTING_ID_MAX];
    size_t id_len;
    char prefix[PREFIX_MAX];
    size_t prefix_len;
    size_t pin_next;     // next index in the pinned list
    uint64_t ring_next;  // next ring sequence number, once the pinned list is done
    bool behind;         // has kept messages it has not been sent yet
} client_t;

typedef struct {
    zsock_t *pipe;
    zsock_t *in, *out, *router;
    logger_t log;
    char *trace_endpoint;
    bool owns_file;          // we bound an ipc socket file: remove it when we stop
    dev_t file_dev;
    ino_t file_ino;

    entry_t *pinned[BUS_TRACE_STARTUP_MAX];
    size_t pinned_count;
    bool startup_done;

    entry_t **ring;          // `keep` slots; sequence s lives in slot s % keep
    uint64_t keep;
    uint64_t ring_end;       // sequence number of the next message the ring will take

    client_t clients[BUS_TRACE_CLIENTS_MAX];
    size_t client_count;

    uint64_t msgs_in;        // received on `in`: events, and trace copies (each one counts)
    uint64_t msgs_published; // republished on `out`
    bool terminated;
} broker_t;

// ---- set-up -----------------------------------------------------------------------------------

// The file path of an ipc endpoint; NULL for other transports, abstract names and wildcards.
static const char *ipc_path(const char *endpoint) {
    if (strncmp(endpoint, "ipc://", 6) != 0) return NULL;
    const char *path = endpoint + 6;
    return (path[0] == '\0' || path[0] == '@' || path[0] == '*') ? NULL : path;
}

// libzmq unlinks an existing ipc socket file before binding, which would silently steal the path
// from another live daemon. So: refuse when something answers on it, or when it is not a socket
// at all; remove it only when nobody is listening (a stale file left by a crash). A daemon starting
// in the very same instant can still race us; the window is small and this is an operator tool.
static int ipc_path_usable(const char *endpoint, const logger_t *log) {
    const char *path = ipc_path(endpoint);   // NULL: not ipc, or abstract, or a wildcard
    if (!path) return 0;
    struct stat st;
    if (lstat(path, &st) != 0) return 0;   // absent: free (other errors: bind will say)
    if (!S_ISSOCK(st.st_mode)) {
        log_error(log, "bind_failed", "endpoint=%s error=\"exists and is not a socket\"", endpoint);
        return -1;
    }
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    if (strlen(path) >= sizeof sa.sun_path) return 0;   // bind will fail and say so
    memcpy(sa.sun_path, path, strlen(path) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return 0;
    int rc = connect(fd, (struct sockaddr *)&sa, sizeof sa);
    int err = errno;
    close(fd);
    if (rc != 0 && err == ENOENT) return 0;   // vanished meanwhile
    if (rc != 0 && err == ECONNREFUSED) {
        log_info(log, "stale_socket_removed", "endpoint=%s", endpoint);
        unlink(path);
        return 0;
    }
    log_error(log, "bind_failed", "endpoint=%s error=\"in use by another process\"", endpoint);
    return -1;
}

// An inproc name is released by ZeroMQ's reaper shortly after its previous socket closed (a
// broker restarted in the same process): retry briefly. Other transports fail at once.
static int bind_endpoint(zsock_t *sock, const char *endpoint, const logger_t *log) {
    bool inproc = strncmp(endpoint, "inproc://", 9) == 0;
    int64_t deadline = util_monotonic_ms() + BIND_RETRY_MS;
    while (zmq_bind(zsock_resolve(sock), endpoint) != 0) {
        if (inproc && errno == EADDRINUSE && util_monotonic_ms() < deadline) {
            zclock_sleep(5);
            continue;
        }
        log_error(log, "bind_failed", "endpoint=%s error=\"%s\"", endpoint, zmq_strerror(errno));
        return -1;
    }
    return 0;
}

// ZeroMQ leaves the socket file of a bound ipc endpoint behind; remember which file is ours so
// that stopping removes it, and only it (never a file another daemon has put there since).
static void remember_file(broker_t *self) {
    const char *path = ipc_path(self->trace_endpoint);
    struct stat st;
    if (path && lstat(path, &st) == 0 && S_ISSOCK(st.st_mode)) {
        self->owns_file = true;
        self->file_dev = st.st_dev;
        self->file_ino = st.st_ino;
    }
}

static void remove_file(broker_t *self) {
    const char *path = self->owns_file ? ipc_path(self->trace_endpoint) : NULL;
    struct stat st;
    if (path && lstat(path, &st) == 0 && st.st_dev == self->file_dev && st.st_ino == self->file_ino)
        unlink(path);
}

static zsock_t *new_socket(int type, int linger) {
    zsock_t *sock = zsock_new(type);
    if (sock) zsock_set_linger(sock, linger);
    return sock;
}

static void broker_destroy(broker_t **self_p) {
    broker_t *self = *self_p;
    if (!self) return;
    zsock_destroy(&self->router);
    remove_file(self);
    zsock_destroy(&self->out);
    zsock_destroy(&self->in);
    for (size_t i = 0; i < self->pinned_count; i++) free(self->pinned[i]);
    if (self->ring)
        for (uint64_t i = 0; i < self->keep; i++) free(self->ring[i]);
    free(self->ring);
    free(self->trace_endpoint);
    free(self);
    *self_p = NULL;
}

static broker_t *broker_new(zsock_t *pipe, const bus_broker_args_t *args) {
    broker_t *self = calloc(1, sizeof *self);
    if (!self) return NULL;
    self->pipe = pipe;
    self->log = args->log;
    if (!self->log.who) self->log.who = "bus-broker";
    self->keep = args->keep > 0 ? (uint64_t)args->keep : KEEP_DEFAULT;
    if (self->keep > KEEP_MAX) self->keep = KEEP_MAX;
    self->ring = calloc((size_t)self->keep, sizeof *self->ring);
    self->trace_endpoint = args->trace_endpoint ? strdup(args->trace_endpoint) : NULL;
    if (!self->ring || (args->trace_endpoint && !self->trace_endpoint)) {
        log_error(&self->log, "broker_start_failed", "error=\"out of memory\"");
        broker_destroy(&self);
        return NULL;
    }

    // The trace endpoint first: it is the one likely to be taken (by another daemon), and failing
    // on it must leave the process's inproc names untouched.
    if (self->trace_endpoint && *self->trace_endpoint) {
        self->router = new_socket(ZMQ_ROUTER, 0);
        bool ok = self->router != NULL;
        if (ok) {
            zsock_set_router_mandatory(self->router, 1);
            zsock_set_router_handover(self->router, 1);
            zsock_set_sndhwm(self->router, TRACE_CLIENT_HWM);
            ok = ipc_path_usable(self->trace_endpoint, &self->log) == 0 &&
                 bind_endpoint(self->router, self->trace_endpoint, &self->log) == 0;
        }
        if (ok) remember_file(self);
        if (!ok) {
            broker_destroy(&self);
            return NULL;
        }
    }
    self->in = new_socket(ZMQ_PULL, 0);
    self->out = new_socket(ZMQ_PUB, 0);
    bool ok = self->in && self->out;
    if (ok) {
        zsock_set_rcvhwm(self->in, BUS_HWM);
        zsock_set_sndhwm(self->out, BUS_HWM);
        ok = bind_endpoint(self->in, BUS_IN, &self->log) == 0 && bind_endpoint(self->out, BUS_OUT, &self->log) == 0;
    }
    if (!ok) broker_destroy(&self);
    return self;
}

// ---- trace clients ----------------------------------------------------------------------------

static uint64_t ring_start(const broker_t *self) {
    return self->ring_end > self->keep ? self->ring_end - self->keep : 0;
}

static bool entry_matches(const entry_t *e, const client_t *c) {
    return e->topic_len >= c->prefix_len && memcmp(e->data, c->prefix, c->prefix_len) == 0;
}

static void client_drop(broker_t *self, client_t *c, const char *reason) {
    c->used = false;
    self->client_count--;
    log_event(&self->log, strcmp(reason, "gone") == 0 ? SLOG_INFO : SLOG_WARN, "trace_client_dropped",
              "reason=%s clients=%zu", reason, self->client_count);
}

// 0 sent, else the errno of the failed send (EAGAIN: the client's queue is full).
static int client_send(broker_t *self, client_t *c, const void *frame, size_t len) {
    void *h = zsock_resolve(self->router);
    if (zmq_send(h, c->id, c->id_len, ZMQ_SNDMORE | ZMQ_DONTWAIT) == -1) return errno;
    zmq_send(h, frame, len, ZMQ_DONTWAIT);
    return 0;
}

static int client_send_entry(broker_t *self, client_t *c, const entry_t *e) {
    void *h = zsock_resolve(self->router);
    if (zmq_send(h, c->id, c->id_len, ZMQ_SNDMORE | ZMQ_DONTWAIT) == -1) return errno;
    // The routing frame was accepted: the rest of the message is too (multi-part is atomic).
    zmq_send(h, e->data, e->topic_len, ZMQ_SNDMORE | ZMQ_DONTWAIT);
    zmq_send(h, e->data + e->topic_len, e->body_len, ZMQ_DONTWAIT);
    return 0;
}

// Sends the client what it has not had yet, as far as its queue allows. False if it was dropped.
static bool client_pump(broker_t *self, client_t *c) {
    while (c->pin_next < self->pinned_count) {
        const entry_t *e = self->pinned[c->pin_next];
        if (entry_matches(e, c)) {
            int err = client_send_entry(self, c, e);
            if (err == EAGAIN) return (c->behind = true);
            if (err != 0) {
                client_drop(self, c, "gone");
                return false;
            }
        }
        c->pin_next++;
    }
    if (c->ring_next < ring_start(self)) {
        client_drop(self, c, "too_slow");
        return false;
    }
    while (c->ring_next < self->ring_end) {
        const entry_t *e = self->ring[c->ring_next % self->keep];
        if (entry_matches(e, c)) {
            int err = client_send_entry(self, c, e);
            if (err == EAGAIN) return (c->behind = true);
            if (err != 0) {
                client_drop(self, c, "gone");
                return false;
            }
        }
        c->ring_next++;
    }
    c->behind = false;
    return true;
}

static void pump_all(broker_t *self) {
    if (self->client_count == 0) return;
    for (size_t i = 0; i < BUS_TRACE_CLIENTS_MAX; i++)
        if (self->clients[i].used) client_pump(self, &self->clients[i]);
}

static bool any_behind(const broker_t *self) {
    for (size_t i = 0; i < BUS_TRACE_CLIENTS_MAX; i++)
        if (self->clients[i].used && self->clients[i].behind) return true;
    return false;
}

// With every slot taken, frees the slots of clients that have gone away (a one-frame "PING" to
// each: a departed peer fails with EHOSTUNREACH; a live one ignores it).
static void reap_departed(broker_t *self) {
    for (size_t i = 0; i < BUS_TRACE_CLIENTS_MAX; i++) {
        client_t *c = &self->clients[i];
        if (c->used && client_send(self, c, "PING", 4) == EHOSTUNREACH) client_drop(self, c, "gone");
    }
}

static client_t *client_slot(broker_t *self, const unsigned char *id, size_t id_len) {
    client_t *free_slot = NULL;
    for (size_t i = 0; i < BUS_TRACE_CLIENTS_MAX; i++) {
        client_t *c = &self->clients[i];
        if (c->used && c->id_len == id_len && memcmp(c->id, id, id_len) == 0) return c;
        if (!c->used && !free_slot) free_slot = c;
    }
    return free_slot;
}

static void client_subscribe(broker_t *self, zframe_t *id, zframe_t *prefix) {
    size_t id_len = zframe_size(id), prefix_len = zframe_size(prefix);
    if (id_len == 0 || id_len > ROUTING_ID_MAX || prefix_len >= PREFIX_MAX) {
        log_warn(&self->log, "trace_request_invalid", "prefix_bytes=%zu", prefix_len);
        return;
    }
    client_t *c = client_slot(self, zframe_data(id), id_len);
    if (!c) {
        reap_departed(self);
        c = client_slot(self, zframe_data(id), id_len);
    }
    if (!c) {
        log_warn(&self->log, "trace_client_refused", "clients=%zu max=%d", self->client_count,
                 BUS_TRACE_CLIENTS_MAX);
        return;
    }
    if (!c->used) {
        c->used = true;
        self->client_count++;
        memcpy(c->id, zframe_data(id), id_len);
        c->id_len = id_len;
    }
    if (prefix_len) memcpy(c->prefix, zframe_data(prefix), prefix_len);
    c->prefix[prefix_len] = '\0';
    c->prefix_len = prefix_len;
    c->pin_next = 0;
    c->ring_next = ring_start(self);
    c->behind = true;
    log_info(&self->log, "trace_client_subscribed", "clients=%zu", self->client_count);
    client_pump(self, c);
}

static void on_trace_request(broker_t *self) {
    zmsg_t *msg = zmsg_recv(self->router);
    if (!msg) return;
    zframe_t *id = zmsg_first(msg);
    zframe_t *cmd = zmsg_next(msg);
    zframe_t *prefix = zmsg_next(msg);
    if (zmsg_size(msg) == 3 && zframe_streq(cmd, "SUB"))
        client_subscribe(self, id, prefix);
    else
        log_warn(&self->log, "trace_request_invalid", "frames=%zu", zmsg_size(msg));
    zmsg_destroy(&msg);
}

// ---- the bus ----------------------------------------------------------------------------------

// Copies a message into `old` (an entry leaving the ring, or NULL), which is reused when it is big
// enough and reallocated otherwise: the ring turns over once per message, and a malloc and a free
// for each showed in profiles. NULL when out of memory, `old` then untouched.
static entry_t *entry_fill(entry_t *old, const void *topic, size_t tl, const void *body, size_t bl) {
    entry_t *e = old;
    if (!e || e->capacity < tl + bl) {
        e = realloc(old, sizeof *e + tl + bl);
        if (!e) return NULL;
        e->capacity = tl + bl;
    }
    e->topic_len = tl;
    e->body_len = bl;
    if (tl) memcpy(e->data, topic, tl);
    if (bl) memcpy(e->data + tl, body, bl);
    return e;
}

// Keeps one message for the trace and sends it on to the clients that are waiting for it.
static void record(broker_t *self, const void *topic, size_t tl, const void *body, size_t bl) {
    self->msgs_in++;
    bool pin = !self->startup_done && self->pinned_count < BUS_TRACE_STARTUP_MAX;
    entry_t **slot = pin ? &self->pinned[self->pinned_count] : &self->ring[self->ring_end % self->keep];
    entry_t *e = entry_fill(pin ? NULL : *slot, topic, tl, body, bl);
    if (!e) {
        log_error(&self->log, "trace_record_failed", "error=\"out of memory\"");
        return;
    }
    *slot = e;
    if (pin) self->pinned_count++;
    else self->ring_end++;
    pump_all(self);
}

// The trace copies of one endpoint's commands, in the order it sent them. A malformed batch (it
// never comes from our endpoints) keeps what came before the fault, and is logged.
static void record_batch(broker_t *self, zmq_msg_t *batch) {
    const void *data = zmq_msg_data(batch);
    size_t len = zmq_msg_size(batch), pos = 0;
    bus_record_t r;
    int rc;
    while ((rc = bus_batch_next(data, len, &pos, &r)) == 1) record(self, r.topic, r.topic_len, r.body, r.body_len);
    if (rc != 0) {
        self->msgs_in++;
        log_warn(&self->log, "trace_batch_malformed", "offset=%zu bytes=%zu", pos, len);
    }
}

static bool is_batch(zmq_msg_t *topic) {
    return zmq_msg_size(topic) == sizeof BUS_TRACE_BATCH - 1 &&
           memcmp(zmq_msg_data(topic), BUS_TRACE_BATCH, sizeof BUS_TRACE_BATCH - 1) == 0;
}

// Takes one waiting message from `in` without blocking: an event is recorded for the trace and
// republished, a batch of trace copies is recorded. False when nothing was waiting.
static bool take_one(broker_t *self) {
    void *h = zsock_resolve(self->in);
    zmq_msg_t topic, body;
    zmq_msg_init(&topic);
    zmq_msg_init(&body);
    if (zmq_msg_recv(&topic, h, ZMQ_DONTWAIT) == -1) {
        zmq_msg_close(&topic);
        zmq_msg_close(&body);
        return false;
    }
    bool well_formed = zmq_msg_more(&topic) && zmq_msg_recv(&body, h, 0) != -1 && !zmq_msg_more(&body);
    if (!well_formed) {
        // Not [topic, body]: consume the rest, drop it.
        bool more = zmq_msg_more(&topic) && zmq_msg_more(&body);
        while (more) {
            zmq_msg_t extra;
            zmq_msg_init(&extra);
            more = zmq_msg_recv(&extra, h, 0) != -1 && zmq_msg_more(&extra);
            zmq_msg_close(&extra);
        }
        self->msgs_in++;
        log_warn(&self->log, "bus_message_malformed", "reason=\"not two frames\"");
    } else if (is_batch(&topic)) {
        record_batch(self, &body);
    } else {
        // recorded before sending: a sent zmq_msg_t is emptied
        record(self, zmq_msg_data(&topic), zmq_msg_size(&topic), zmq_msg_data(&body), zmq_msg_size(&body));
        void *out = zsock_resolve(self->out);
        if (zmq_msg_send(&topic, out, ZMQ_SNDMORE | ZMQ_DONTWAIT) != -1 && zmq_msg_send(&body, out, ZMQ_DONTWAIT) != -1)
            self->msgs_published++;
    }
    zmq_msg_close(&topic);
    zmq_msg_close(&body);
    return true;
}

// Takes up to `limit` waiting messages (a bound, so the pipe and the trace clients are served).
static void drain(broker_t *self, size_t limit) {
    size_t n = 0;
    while (n < limit && take_one(self)) n++;
}

// ---- the pipe ---------------------------------------------------------------------------------

static void on_pipe(broker_t *self) {
    zmsg_t *msg = zmsg_recv(self->pipe);
    if (!msg) {
        self->terminated = true;   // interrupted or the context is going away
        return;
    }
    char *command = zmsg_popstr(msg);
    if (!command) {
        log_warn(&self->log, "pipe_command_unknown", "command=(none)");
    } else if (streq(command, "$TERM")) {
        self->terminated = true;
    } else if (streq(command, "STARTUP-DONE")) {
        // Whatever was sent before this command (on any thread that then told the supervisor)
        // is already queued on our sockets: pin it before closing the start-up window.
        drain(self, 2 * BUS_HWM);
        self->startup_done = true;
        log_info(&self->log, "trace_startup_done", "pinned=%zu", self->pinned_count);
    } else if (streq(command, "STATS")) {
        drain(self, 2 * BUS_HWM);
        zsock_send(self->pipe, "888", self->msgs_in, self->msgs_published, (uint64_t)self->client_count);
    } else {
        log_warn(&self->log, "pipe_command_unknown", "command=%s", command);
    }
    free(command);
    zmsg_destroy(&msg);
}

// ---- the actor --------------------------------------------------------------------------------

static void broker_loop(broker_t *self) {
    zmq_pollitem_t items[] = {
        {zsock_resolve(self->pipe), 0, ZMQ_POLLIN, 0},
        {zsock_resolve(self->in), 0, ZMQ_POLLIN, 0},
        {self->router ? zsock_resolve(self->router) : NULL, 0, ZMQ_POLLIN, 0},
    };
    int nitems = self->router ? 3 : 2;
    while (!self->terminated) {
        long timeout = any_behind(self) ? BEHIND_RETRY_MS : -1;
        if (zmq_poll(items, nitems, timeout) == -1) {
            if (errno == EINTR) continue;   // a signal for the process: $TERM decides when we stop
            log_error(&self->log, "poll_failed", "error=\"%s\"", zmq_strerror(errno));
            break;
        }
        // The pipe first: a command sent after some messages should not wait behind later ones.
        if (items[0].revents & ZMQ_POLLIN) {
            on_pipe(self);
            if (self->terminated) break;
        }
        if (items[1].revents & ZMQ_POLLIN) drain(self, DRAIN_BATCH);
        if (nitems == 3 && items[2].revents & ZMQ_POLLIN) {
            for (int i = 0; i < DRAIN_BATCH && (zsock_events(self->router) & ZMQ_POLLIN); i++)
                on_trace_request(self);
        }
        if (any_behind(self)) pump_all(self);
    }
}

static void broker_run(zsock_t *pipe, const bus_broker_args_t *args, int *status) {
    broker_t *self = broker_new(pipe, args);
    if (status) *status = self ? 0 : -1;
    zsock_signal(pipe, self ? 0 : (byte)-1);
    if (!self) return;
    log_info(&self->log, "broker_started", "trace_endpoint=%s keep=%" PRIu64,
             self->trace_endpoint ? self->trace_endpoint : "(none)", self->keep);
    broker_loop(self);
    log_info(&self->log, "broker_stopped", "messages_in=%" PRIu64 " published=%" PRIu64,
             self->msgs_in, self->msgs_published);
    broker_destroy(&self);
}

void bus_broker_actor(zsock_t *pipe, void *args) {
    assert(args);
    broker_run(pipe, args, NULL);
}

typedef struct {
    bus_broker_args_t args;
    int status;
} broker_start_t;

static void broker_start_actor(zsock_t *pipe, void *arg) {
    broker_start_t *start = arg;
    broker_run(pipe, &start->args, &start->status);   // touches *start only before signalling
}

zactor_t *bus_broker_new(const bus_broker_args_t *args) {
    assert(args);
    broker_start_t start = {*args, -1};
    zactor_t *actor = zactor_new(broker_start_actor, &start);
    if (actor && start.status != 0) zactor_destroy(&actor);
    return actor;
}
