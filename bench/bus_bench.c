// bench/bus_bench.c — benchmark 5: the bus between two actors, against raw libzmq inproc.
//
// What a command between two actors really goes through in sweetyd (bus/endpoint.c, actors/actor.c),
// and what this program runs, all in one process on one ZeroMQ context, as the supervisor wires it:
//   sender   a thread with its own bus endpoint. It holds a call.assigned (three UUIDs and an
//            attempt, what the scheduler hands the dialer), sets the booking id and calls
//            bus_send_to(): stamp, msgpack encode, [topic, body] PUSHed to the receiver's inbox, and
//            a copy appended to the endpoint's batch of trace copies, which goes to the broker when
//            it is full or a millisecond old, and (latency runs, paced) before the sender sleeps,
//            as an actor's loop flushes it before it waits.
//   broker   the real bus broker (bus_broker_new), which keeps every trace copy in its ring; the
//            run checks that it recorded every copy (broker STATS before and after).
//   receiver a real actor (actor_run with a spec of its own): its zloop wakes on the inbox,
//            bus_endpoint_recv() takes both frames and decodes them, and the on_command handler
//            sees the message, as the dialer sees call.assigned.
// Also measured, for the record: the same command without the trace copy (bus_send_raw on a PUSH
// to the inbox: codec and actor loop alone, two threads), the event path (booking.status through
// bus_publish -> broker PULL -> broker PUB -> the receiver's SUB), and libzmq doing the same socket
// work as a command without our code as bus_send_to did before trace copies were batched ("same
// frames": [topic, the encoded body] PUSH/PULL plus a copy of each to a third thread that keeps it
// in a ring, blocking receives, no codec, no actor loop).
// Reference (the row's): raw libzmq inproc PUSH/PULL between two threads, empty one-frame messages,
// blocking zmq_send / zmq_recv, the same counts and pacing.
//
// Throughput: the sender sends as fast as the sockets let it (PUSH blocks at the high-water mark);
// the figure is measured messages / (last one handled by the receiver - first one sent). The CPU
// time of the whole process per message is printed too: with more busy threads than CPUs it is
// what bounds the rate. Latency: the sender paces messages at a fixed rate well below saturation
// (open loop, absolute deadlines, timer slack 1 ns) and notes each send time (monotonic ns) just
// before bus_send_to; the receiver's handler notes when it sees the decoded message. The message's
// sequence number travels in its booking id (the last 12 hex digits of a v4-looking UUID), so
// every latency is matched to its send. Warm-up messages (not counted) connect the sockets first.
//
// Usage: bus_bench [--quick] [--messages N] [--latency-messages N] [--rate N] [--results FILE]
//                  [--only raw|frames|command|direct|event]   (one path, for profiling; no result)
// Prints its parameters and figures, and one line "result: {json}" per figure (ids 5 and 5b), which
// it also appends to the file named by --results or $BENCH_RESULTS.
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#include "actors/actor.h"
#include "bus/broker.h"
#include "bus/bus.h"
#include "conf/config.h"

#define RX_NAME "bench-rx"
#define WARMUP 2000
#define WARM_FLAG (INT64_C(1) << 44)   // in the sequence number: a warm-up message
#define WAIT_MAX_MS 120000
#define RAW_HWM 1000                   // as a command target's PUSH and a PULL inbox
#define TRACE_HWM 1000                 // as an endpoint's trace PUSH
#define TRACE_RX_HWM 100000            // as the broker's PULL
#define TRACE_RING 4096                // as trace.keep's default

typedef enum { PATH_RAW, PATH_FRAMES, PATH_COMMAND, PATH_DIRECT, PATH_EVENT, PATH_COUNT } path_t;

static const char *const path_names[PATH_COUNT] = {
    [PATH_RAW] = "libzmq inproc PUSH/PULL, empty messages",
    [PATH_FRAMES] = "libzmq, a command's frames + trace copy",
    [PATH_COMMAND] = "bus_send_to -> actor inbox (call.assigned)",
    [PATH_DIRECT] = "the same without the trace copy (bus_send_raw)",
    [PATH_EVENT] = "bus_publish -> broker -> SUB (booking.status)",
};
static const char *const path_short[PATH_COUNT] = {"raw", "frames", "command", "direct", "event"};
static const char *const path_label[PATH_COUNT] = {"reference", "libzmq", "bus", "bus, 2 threads", "bus (event)"};

// What the sender and the receiver share during one run. Written by main between runs only
// (the threads of a run are started after and joined or waited for before).
typedef struct {
    int64_t count;                  // measured messages
    int64_t *send_ns;               // latency runs: send time of message i (sender writes)
    int64_t *lat_ns;                // latency runs: latency of message i (receiver writes)
    atomic_int_fast64_t warm;       // warm-up messages seen
    atomic_int_fast64_t received;   // measured messages seen
    atomic_int_fast64_t last_ns;    // when the last measured message was seen
    atomic_int_fast64_t bad;        // a sequence number out of range or going backwards
    int64_t next_seq;               // receiver only: the lowest sequence number still to come
} run_t;

// actor_spec_t handlers get no argument of ours: the receiving actor finds the current run here.
// Set by main before the receiver starts; the run_t itself lives as long as the program.
static run_t *current_run;

static int64_t clock_ns(clockid_t id) {
    struct timespec ts;
    clock_gettime(id, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int64_t now_ns(void) { return clock_ns(CLOCK_MONOTONIC); }

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

// Called on the receiving thread for every message (seq -1: the message carries none, it is the
// next one: PUSH/PULL keeps order and drops nothing).
static void rx_seen(run_t *run, int64_t seq, int64_t t) {
    if (seq >= 0 && (seq & WARM_FLAG)) {
        atomic_fetch_add_explicit(&run->warm, 1, memory_order_relaxed);
        return;
    }
    int64_t i = seq >= 0 ? seq : run->next_seq;
    if (i < run->next_seq || i >= run->count) {   // a gap (a dropped event) is only a loss
        atomic_fetch_add_explicit(&run->bad, 1, memory_order_relaxed);
        return;
    }
    run->next_seq = i + 1;
    if (run->lat_ns) run->lat_ns[i] = t - run->send_ns[i];
    atomic_store_explicit(&run->last_ns, t, memory_order_relaxed);
    atomic_fetch_add_explicit(&run->received, 1, memory_order_release);
}

// ---- the messages ---------------------------------------------------------------------------

// The booking id carries the sequence number in its last 12 hex digits (written in place: the
// other fields stay as they were filled once, like a scheduler filling from a row it holds).
static void set_seq(char id[37], int64_t seq) {
    static const char hex[] = "0123456789abcdef";
    uint64_t v = (uint64_t)seq;
    for (int i = 35; i >= 24; i--, v >>= 4) id[i] = hex[v & 15];
}

static int64_t seq_of_uuid(const char *id) {
    if (strnlen(id, 37) != 36) return -2;
    int64_t v = 0;
    for (int i = 24; i < 36; i++) {
        char c = id[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (d < 0) return -2;
        v = v << 4 | d;
    }
    return v;
}

static void init_message(bus_msg_t *msg, bus_type_t type) {
    bus_msg_init(msg, type);
    const char *booking = "5b0e1a2c-7c1e-4b2a-9f3d-000000000000";
    if (type == BUS_CALL_ASSIGNED) {
        bus_call_assigned_t *c = &msg->u.call_assigned;
        snprintf(c->booking_id, sizeof c->booking_id, "%s", booking);
        snprintf(c->agent_id, sizeof c->agent_id, "3f2b8c4e-51d0-4a7e-8e19-6b0c2d9a7f41");
        snprintf(c->account_id, sizeof c->account_id, "a9d4e2f1-0c3b-4e58-b7a6-1d2e3f4a5b6c");
        c->attempt = 1;
    } else {
        bus_booking_status_t *b = &msg->u.booking_status;
        snprintf(b->booking_id, sizeof b->booking_id, "%s", booking);
        b->seq = 3;
        snprintf(b->status, sizeof b->status, "initiating");
        b->at = 1763700000000000;
    }
}

// ---- the receiving actor ----------------------------------------------------------------------

static int rx_on_message(actor_ctx_t *ctx, void *state, const bus_msg_t *msg) {
    int64_t t = now_ns();
    const char *id = msg->type == BUS_CALL_ASSIGNED   ? msg->u.call_assigned.booking_id
                     : msg->type == BUS_BOOKING_STATUS ? msg->u.booking_status.booking_id
                                                       : NULL;
    if (id) rx_seen(current_run, seq_of_uuid(id), t);
    return 0;
}

static const actor_spec_t rx_spec = {
    .name = RX_NAME,
    .subscriptions = (const char *const[]){"booking.status", NULL},
    .on_event = rx_on_message,
    .on_command = rx_on_message,
};

// ---- senders --------------------------------------------------------------------------------

typedef struct {
    path_t path;
    run_t *run;
    double rate;        // messages/s; 0: as fast as possible
    int64_t t0_ns;      // out: just before the first measured send
    int failed;         // out: sends that failed; -1: the run could not start
    int64_t sent;       // out: messages sent through the bus endpoint, warm-up included
    uint64_t trace_dropped;   // out: trace copies the endpoint had to drop
    int id;             // libzmq runs: names their inproc endpoints (a name is freed a moment after)
} sender_t;

static zsock_t *raw_push(const char *endpoint, int hwm) {
    zsock_t *push = zsock_new(ZMQ_PUSH);
    if (push) zsock_set_sndhwm(push, hwm);
    if (push && zsock_connect(push, "%s", endpoint) != 0) zsock_destroy(&push);
    return push;
}

// Waits until the receiver has seen `n` warm-up messages (or a while has passed). 0 or -1.
static int wait_warm(run_t *run, int64_t n) {
    int64_t deadline = now_ns() + (int64_t)WAIT_MAX_MS * 1000000;
    while (atomic_load(&run->warm) < n) {
        if (now_ns() > deadline) return -1;
        sleep_ms(1);
    }
    return 0;
}

// Open-loop pacing: message i is due at t0 + i / rate.
static void pace(int64_t t0, double rate, int64_t i) {
    if (rate <= 0) return;
    int64_t due = t0 + (int64_t)((double)i * 1e9 / rate);
    struct timespec ts = {due / 1000000000, due % 1000000000};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
    }
}

// `direct`: a PUSH to the receiver's inbox for PATH_DIRECT (bus_send_raw: the codec and the same
// frames as bus_send_to, no trace copy; the sender stamps the message as bus_send_to would).
static int bus_send_one(sender_t *s, bus_endpoint_t *ep, zsock_t *direct, bus_msg_t *msg, int64_t seq) {
    if (s->path == PATH_COMMAND) {
        set_seq(msg->u.call_assigned.booking_id, seq);
        return bus_send_to(ep, RX_NAME, msg, -1);
    }
    if (s->path == PATH_DIRECT) {
        set_seq(msg->u.call_assigned.booking_id, seq);
        msg->ts_us = (now_ns() / 1000);
        return bus_send_raw(direct, msg);
    }
    set_seq(msg->u.booking_status.booking_id, seq);
    return bus_publish(ep, msg);
}

static void *bus_sender(void *arg) {
    sender_t *s = arg;
    run_t *run = s->run;
    prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
    bus_endpoint_t *ep = bus_endpoint_new("bench-tx", NULL);
    zsock_t *direct = s->path == PATH_DIRECT ? raw_push(BUS_INBOX_PREFIX RX_NAME, RAW_HWM) : NULL;
    if (!ep || (s->path == PATH_DIRECT && !direct)) {
        zsock_destroy(&direct);
        bus_endpoint_destroy(&ep);
        s->failed = -1;
        return NULL;
    }
    bus_msg_t msg;
    init_message(&msg, s->path == PATH_EVENT ? BUS_BOOKING_STATUS : BUS_CALL_ASSIGNED);
    snprintf(msg.from, sizeof msg.from, "bench-tx");
    // Warm-up. Events: a SUB's subscription reaches the broker's PUB a moment after connecting,
    // and PUB drops until then, so the first warm-up is repeated until one arrives.
    int64_t w = 0;
    if (s->path == PATH_EVENT) {
        while (atomic_load(&run->warm) == 0 && w < WAIT_MAX_MS) {
            bus_send_one(s, ep, direct, &msg, WARM_FLAG | w++);
            sleep_ms(1);
        }
    }
    int64_t first = atomic_load(&run->warm);
    for (int64_t i = 0; i < WARMUP; i++) bus_send_one(s, ep, direct, &msg, WARM_FLAG | (w + i));
    bus_endpoint_flush(ep);
    if (wait_warm(run, first + WARMUP) != 0) s->failed = -1;

    s->t0_ns = now_ns();
    for (int64_t i = 0; i < run->count && s->failed >= 0; i++) {
        if (s->rate > 0) bus_endpoint_flush(ep);   // about to sleep: what an actor's loop does
        pace(s->t0_ns, s->rate, i);
        if (run->send_ns) run->send_ns[i] = now_ns();
        if (bus_send_one(s, ep, direct, &msg, i) != 0) s->failed++;
    }
    s->sent = w + WARMUP + run->count;
    zsock_destroy(&direct);
    bus_endpoint_flush(ep);
    s->trace_dropped = bus_endpoint_trace_dropped(ep);
    bus_endpoint_destroy(&ep);
    return NULL;
}

// ---- libzmq alone -----------------------------------------------------------------------------
// raw:    [empty] PUSH -> PULL.
// frames: [topic, body] PUSH -> PULL, and a copy PUSHed without waiting to a third thread that
//         copies each message into a ring of TRACE_RING slots, as the broker does.

typedef struct {
    void *pull;
    run_t *run;
    int frames;   // per message: 1 or 2
} raw_rx_t;

static int recv_frames(void *pull, zmq_msg_t *frame, int frames) {
    for (int f = 0; f < frames; f++)
        if (zmq_msg_recv(frame, pull, 0) == -1) return -1;
    return 0;
}

static void *raw_receiver(void *arg) {
    raw_rx_t *r = arg;
    zmq_msg_t frame;
    zmq_msg_init(&frame);
    for (int64_t i = 0; i < WARMUP && recv_frames(r->pull, &frame, r->frames) == 0; i++)
        atomic_fetch_add(&r->run->warm, 1);
    for (int64_t i = 0; i < r->run->count && recv_frames(r->pull, &frame, r->frames) == 0; i++)
        rx_seen(r->run, -1, now_ns());
    zmq_msg_close(&frame);
    return NULL;
}

// The third thread of "frames": takes [topic, body] until a one-frame message, keeps a copy of each.
static void *raw_tracer(void *arg) {
    void *pull = arg;
    unsigned char(*ring)[256] = calloc(TRACE_RING, sizeof *ring);
    zmq_msg_t topic, body;
    zmq_msg_init(&topic);
    zmq_msg_init(&body);
    for (uint64_t n = 0; ring; n++) {
        if (zmq_msg_recv(&topic, pull, 0) == -1 || !zmq_msg_more(&topic)) break;
        if (zmq_msg_recv(&body, pull, 0) == -1) break;
        size_t tl = zmq_msg_size(&topic), bl = zmq_msg_size(&body);
        if (tl + bl <= sizeof ring[0]) {
            memcpy(ring[n % TRACE_RING], zmq_msg_data(&topic), tl);
            memcpy(ring[n % TRACE_RING] + tl, zmq_msg_data(&body), bl);
        }
    }
    zmq_msg_close(&topic);
    zmq_msg_close(&body);
    free(ring);
    return NULL;
}

typedef struct {
    void *push, *trace;
    const char *topic;
    const char *body;
    size_t body_len;
} raw_out_t;

static int raw_send_one(const raw_out_t *o) {
    if (!o->trace) return zmq_send(o->push, NULL, 0, 0) == -1 ? -1 : 0;
    if (zmq_send(o->push, o->topic, strlen(o->topic), ZMQ_SNDMORE) == -1) return -1;
    if (zmq_send(o->push, o->body, o->body_len, 0) == -1) return -1;
    if (zmq_send(o->trace, o->topic, strlen(o->topic), ZMQ_SNDMORE | ZMQ_DONTWAIT) != -1)
        zmq_send(o->trace, o->body, o->body_len, ZMQ_DONTWAIT);
    return 0;
}

static void *raw_sender(void *arg) {
    sender_t *s = arg;
    run_t *run = s->run;
    prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
    char name[64], trace_name[64];
    snprintf(name, sizeof name, "inproc://bench-raw-%d", s->id);
    snprintf(trace_name, sizeof trace_name, "inproc://bench-raw-trace-%d", s->id);
    zsock_t *push = raw_push(name, RAW_HWM);
    zsock_t *trace = s->path == PATH_FRAMES ? raw_push(trace_name, TRACE_HWM) : NULL;
    bus_msg_t msg;
    init_message(&msg, BUS_CALL_ASSIGNED);
    snprintf(msg.from, sizeof msg.from, "bench-tx");
    char *body = NULL;
    size_t len = 0;
    if (!push || (s->path == PATH_FRAMES && (!trace || bus_encode(&msg, &body, &len) != BUS_OK))) {
        s->failed = -1;
    } else {
        raw_out_t o = {zsock_resolve(push), trace ? zsock_resolve(trace) : NULL, bus_type_topic(msg.type), body, len};
        for (int64_t i = 0; i < WARMUP; i++) raw_send_one(&o);
        if (wait_warm(run, WARMUP) != 0) s->failed = -1;
        s->t0_ns = now_ns();
        for (int64_t i = 0; i < run->count && s->failed >= 0; i++) {
            pace(s->t0_ns, s->rate, i);
            if (run->send_ns) run->send_ns[i] = now_ns();
            if (raw_send_one(&o) != 0) s->failed++;
        }
        if (trace) zmq_send(zsock_resolve(trace), "", 0, 0);   // ends the tracer
    }
    free(body);
    zsock_destroy(&trace);
    zsock_destroy(&push);
    return NULL;
}

// ---- one run ----------------------------------------------------------------------------------

typedef struct {
    double msgs_per_s;
    double cpu_ns_per_msg;   // CPU time of the whole process (every thread) per measured message
    double p50_us, p90_us, p99_us, p999_us, max_us;
    int64_t lost;   // measured messages never seen (events: the PUB dropped them)
    int64_t bad;
    int64_t trace_missing;   // commands whose trace copy the broker did not record (must be 0)
    bool ok;
} result_t;

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static double pct_us(const int64_t *sorted, int64_t n, double p) {
    if (n == 0) return 0;
    int64_t k = (int64_t)(p * (double)(n - 1) + 0.5);
    return (double)sorted[k] / 1000.0;
}

// Waits until the receiver has seen every measured message, or until it makes no progress for
// a second (events may be dropped), or the overall limit.
static void wait_received(run_t *run) {
    int64_t deadline = now_ns() + (int64_t)WAIT_MAX_MS * 1000000, seen = -1, since = now_ns();
    while (atomic_load_explicit(&run->received, memory_order_acquire) < run->count && now_ns() < deadline) {
        int64_t r = atomic_load(&run->received);
        if (r != seen) {
            seen = r;
            since = now_ns();
        } else if (now_ns() - since > 1000000000) {
            break;
        }
        sleep_ms(1);
    }
}

static int run_reset(run_t *run, int64_t count, bool latency) {
    free(run->send_ns);
    free(run->lat_ns);
    run->count = count;
    run->send_ns = latency ? calloc((size_t)count, sizeof *run->send_ns) : NULL;
    run->lat_ns = latency ? calloc((size_t)count, sizeof *run->lat_ns) : NULL;
    atomic_store(&run->warm, 0);
    atomic_store(&run->received, 0);
    atomic_store(&run->last_ns, 0);
    atomic_store(&run->bad, 0);
    run->next_seq = 0;
    return latency && (!run->send_ns || !run->lat_ns) ? -1 : 0;
}

// The libzmq-only threads of a run: receiver (and tracer), with their sockets.
typedef struct {
    zsock_t *pull, *trace_pull;
    pthread_t rx, tracer;
    bool rx_started, tracer_started;
    raw_rx_t args;
} raw_side_t;

static int raw_side_start(raw_side_t *r, path_t path, run_t *run, int id) {
    memset(r, 0, sizeof *r);
    r->pull = zsock_new(ZMQ_PULL);
    if (!r->pull) return -1;
    zsock_set_rcvhwm(r->pull, RAW_HWM);
    if (zsock_bind(r->pull, "inproc://bench-raw-%d", id) != 0) return -1;
    if (path == PATH_FRAMES) {
        r->trace_pull = zsock_new(ZMQ_PULL);
        if (!r->trace_pull) return -1;
        zsock_set_rcvhwm(r->trace_pull, TRACE_RX_HWM);
        if (zsock_bind(r->trace_pull, "inproc://bench-raw-trace-%d", id) != 0) return -1;
        r->tracer_started = pthread_create(&r->tracer, NULL, raw_tracer, zsock_resolve(r->trace_pull)) == 0;
        if (!r->tracer_started) return -1;
    }
    r->args = (raw_rx_t){zsock_resolve(r->pull), run, path == PATH_FRAMES ? 2 : 1};
    r->rx_started = pthread_create(&r->rx, NULL, raw_receiver, &r->args) == 0;
    return r->rx_started ? 0 : -1;
}

// After the sender: PUSH/PULL drops nothing, so the receiver ends once it has every message, and
// the tracer on the sender's last one-frame message.
static void raw_side_stop(raw_side_t *r) {
    if (r->rx_started) pthread_join(r->rx, NULL);
    if (r->tracer_started) pthread_join(r->tracer, NULL);
    zsock_destroy(&r->trace_pull);
    zsock_destroy(&r->pull);
}

// Messages the broker has taken in so far (events and trace copies), after taking what is queued.
static int64_t broker_in(zactor_t *broker) {
    uint64_t in = 0, published = 0, clients = 0;
    if (zstr_send(broker, "STATS") != 0 || zsock_recv(broker, "888", &in, &published, &clients) != 0) return -1;
    return (int64_t)in;
}

static result_t run_one(path_t path, run_t *run, zactor_t *broker, int64_t count, double rate) {
    static int runs;
    result_t res = {0};
    bool latency = rate > 0, raw = path == PATH_RAW || path == PATH_FRAMES;
    if (run_reset(run, count, latency) != 0) return res;
    raw_side_t side;
    if (raw && raw_side_start(&side, path, run, ++runs) != 0) {
        fprintf(stderr, "bus_bench: cannot set up the libzmq run\n");
        exit(1);   // threads may be blocked on sockets: nothing to unwind safely
    }
    sender_t s = {.path = path, .run = run, .rate = rate, .id = runs};
    int64_t in0 = raw ? 0 : broker_in(broker);
    int64_t cpu0 = clock_ns(CLOCK_PROCESS_CPUTIME_ID);
    pthread_t tx;
    if (pthread_create(&tx, NULL, raw ? raw_sender : bus_sender, &s) != 0) {
        fprintf(stderr, "bus_bench: cannot start a thread\n");
        exit(1);
    }
    pthread_join(tx, NULL);
    if (s.failed >= 0) wait_received(run);
    if (raw) raw_side_stop(&side);

    int64_t got = atomic_load(&run->received);
    res.cpu_ns_per_msg = got > 0 ? (double)(clock_ns(CLOCK_PROCESS_CPUTIME_ID) - cpu0) / (double)got : 0;
    res.lost = count - got;
    res.bad = atomic_load(&run->bad);
    // Every command's trace copy (every event) reached the broker: the sender flushed and is gone.
    if (path == PATH_COMMAND || path == PATH_EVENT) res.trace_missing = s.sent - (broker_in(broker) - in0);
    res.ok = s.failed == 0 && got > 0 && res.trace_missing == 0 && s.trace_dropped == 0;
    int64_t elapsed = atomic_load(&run->last_ns) - s.t0_ns;
    res.msgs_per_s = elapsed > 0 ? (double)got * 1e9 / (double)elapsed : 0;
    if (latency && got > 0) {
        // lost (event) messages keep 0 and are left out: only those seen are sorted
        int64_t n = 0;
        for (int64_t i = 0; i < count; i++)
            if (run->lat_ns[i] > 0) run->lat_ns[n++] = run->lat_ns[i];
        qsort(run->lat_ns, (size_t)n, sizeof *run->lat_ns, cmp_i64);
        res.p50_us = pct_us(run->lat_ns, n, 0.50);
        res.p90_us = pct_us(run->lat_ns, n, 0.90);
        res.p99_us = pct_us(run->lat_ns, n, 0.99);
        res.p999_us = pct_us(run->lat_ns, n, 0.999);
        res.max_us = n > 0 ? (double)run->lat_ns[n - 1] / 1000.0 : 0;
    }
    return res;
}

// ---- output -----------------------------------------------------------------------------------

static void print_tput(path_t path, const result_t *r) {
    printf("  %-12s %-46s %10.0f msg/s  %5.2f µs CPU/msg%s", path_label[path], path_names[path], r->msgs_per_s,
           r->cpu_ns_per_msg / 1000.0, r->ok ? "" : "  (FAILED)");
    if (r->lost || r->bad) printf("  lost=%" PRId64 " bad=%" PRId64, r->lost, r->bad);
    if (r->trace_missing) printf("  not traced=%" PRId64, r->trace_missing);
    printf("\n");
}

static void print_lat(path_t path, const result_t *r) {
    printf("  %-12s %-46s p50 %6.1f  p90 %6.1f  p99 %7.1f  p99.9 %7.1f  max %8.1f µs%s", path_label[path],
           path_names[path], r->p50_us, r->p90_us, r->p99_us, r->p999_us, r->max_us, r->ok ? "" : "  (FAILED)");
    if (r->trace_missing) printf("  not traced=%" PRId64, r->trace_missing);
    printf("\n");
}

// Figures for the results, to `places` decimals.
static double rnd(double v, int places) {
    double scale = 1;
    for (int i = 0; i < places; i++) scale *= 10;
    return (double)(int64_t)(v * scale + (v < 0 ? -0.5 : 0.5)) / scale;
}

static json_t *lat_json(const result_t *r) {
    return json_pack("{s:f,s:f,s:f,s:f,s:f}", "p50_us", rnd(r->p50_us, 1), "p90_us", rnd(r->p90_us, 1), "p99_us",
                     rnd(r->p99_us, 1), "p999_us", rnd(r->p999_us, 1), "max_us", rnd(r->max_us, 1));
}

// Prints "result: <json>" (as bench/lib.sh's bench_result does) and appends the line to `file`
// when one is given. Takes obj.
static int put_result(const char *file, json_t *obj) {
    char *line = obj ? json_dumps(obj, JSON_COMPACT | JSON_REAL_PRECISION(12)) : NULL;
    json_decref(obj);
    if (!line) return -1;
    printf("result: %s\n", line);
    int rc = 0;
    if (file) {
        FILE *f = fopen(file, "a");
        rc = f && fprintf(f, "%s\n", line) > 0 ? 0 : -1;
        if (f && fclose(f) != 0) rc = -1;
    }
    free(line);
    return rc;
}

typedef struct {
    bool quick;
    int64_t messages;
    int64_t lat_messages;
    double rate;
    const char *results;
    int only;   // -1, or the one path to run (profiling): nothing is appended to the results
} options_t;

static int parse_args(int argc, char **argv, options_t *o) {
    const char *q = getenv("BENCH_QUICK");
    o->quick = q && strcmp(q, "1") == 0;
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--quick") == 0) o->quick = true;
    o->messages = o->quick ? 500000 : 2000000;
    o->lat_messages = o->quick ? 50000 : 200000;
    o->rate = 20000;
    o->only = -1;
    o->results = getenv("BENCH_RESULTS");
    if (o->results && !*o->results) o->results = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--quick") == 0) continue;
        if (!v) return -1;
        if (strcmp(a, "--messages") == 0) {
            o->messages = strtoll(v, NULL, 10);
        } else if (strcmp(a, "--latency-messages") == 0) {
            o->lat_messages = strtoll(v, NULL, 10);
        } else if (strcmp(a, "--rate") == 0) {
            o->rate = strtod(v, NULL);
        } else if (strcmp(a, "--results") == 0) {
            o->results = v;
        } else if (strcmp(a, "--only") == 0) {
            o->only = -2;
            for (int p = 0; p < PATH_COUNT; p++)
                if (strcmp(v, path_short[p]) == 0) o->only = p;
        } else {
            return -1;
        }
        i++;
    }
    return o->messages > 0 && o->lat_messages > 0 && o->rate > 0 && o->only >= -1 ? 0 : -1;
}

static double load_average(void) {
    double load = -1;
    FILE *f = fopen("/proc/loadavg", "r");
    if (f && fscanf(f, "%lf", &load) != 1) load = -1;
    if (f) fclose(f);
    return load;
}

static json_t *params_json(const options_t *o, double load) {
    return json_pack("{s:s,s:I,s:I,s:f,s:i,s:f,s:s,s:s,s:s}", "mode", o->quick ? "quick" : "full",
                     "messages", (json_int_t)o->messages, "latency_messages", (json_int_t)o->lat_messages,
                     "latency_rate_per_s", rnd(o->rate, 0), "cpus", (int)sysconf(_SC_NPROCESSORS_ONLN),
                     "loadavg_1min_at_start", rnd(load, 2), "message", "call.assigned (3 UUIDs, attempt), 136-byte body",
                     "path", path_names[PATH_COMMAND], "latency_method",
                     "one way, open loop at a fixed rate: send time just before bus_send_to to the decoded message "
                     "in the receiving actor's handler");
}

static int report(const options_t *o, double load, const result_t *tput, const result_t *lat) {
    const result_t *raw_t = &tput[PATH_RAW], *cmd_t = &tput[PATH_COMMAND];
    const result_t *raw_l = &lat[PATH_RAW], *cmd_l = &lat[PATH_COMMAND];
    bool tput_met = cmd_t->ok && cmd_t->msgs_per_s >= 1e6;
    bool lat_met = cmd_l->ok && cmd_l->p99_us <= 50;
    double ratio_t = raw_t->msgs_per_s > 0 ? cmd_t->msgs_per_s / raw_t->msgs_per_s : 0;
    double ratio_l = raw_l->p99_us > 0 ? cmd_l->p99_us / raw_l->p99_us : 0;
    printf("figure 5:  %.0f messages/s (target >= 1,000,000: %s), %.3f of libzmq's %.0f; "
           "libzmq doing the same socket work: %.0f; without the trace copy: %.0f\n",
           cmd_t->msgs_per_s, tput_met ? "met" : "MISSED", ratio_t, raw_t->msgs_per_s, tput[PATH_FRAMES].msgs_per_s,
           tput[PATH_DIRECT].msgs_per_s);
    printf("figure 5b: p99 %.1f µs (target <= 50 µs: %s), libzmq p99 %.1f µs\n", cmd_l->p99_us,
           lat_met ? "met" : "MISSED", raw_l->p99_us);

    const result_t *frames = &tput[PATH_FRAMES], *direct = &tput[PATH_DIRECT], *event = &tput[PATH_EVENT];
    json_t *extra_t = json_pack(
        "{s:f,s:f,s:f,s:f,s:f,s:f,s:f,s:f,s:I}", "cpu_us_per_msg", rnd(cmd_t->cpu_ns_per_msg / 1000.0, 2),
        "without_trace_copy_msgs_per_s", rnd(direct->msgs_per_s, 0), "without_trace_copy_cpu_us_per_msg",
        rnd(direct->cpu_ns_per_msg / 1000.0, 2), "reference_cpu_us_per_msg", rnd(raw_t->cpu_ns_per_msg / 1000.0, 2),
        "libzmq_same_frames_msgs_per_s", rnd(frames->msgs_per_s, 0), "libzmq_same_frames_cpu_us_per_msg",
        rnd(frames->cpu_ns_per_msg / 1000.0, 2), "event_path_msgs_per_s", rnd(event->msgs_per_s, 0),
        "event_path_cpu_us_per_msg", rnd(event->cpu_ns_per_msg / 1000.0, 2), "event_path_dropped_by_pub",
        (json_int_t)event->lost);
    json_t *t = json_pack("{s:i,s:s,s:f,s:s,s:f,s:s,s:s,s:f,s:s,s:b,s:o,s:o}", "id", 5, "figure",
                          "bus throughput between two actors (msgpack encode + send + receive + decode)",
                          "value", rnd(cmd_t->msgs_per_s, 0), "unit", "messages/s", "reference",
                          rnd(raw_t->msgs_per_s, 0), "ref_unit", "messages/s", "ref_name",
                          "libzmq inproc PUSH/PULL, empty messages", "ratio", rnd(ratio_t, 4), "target",
                          "≥ 1,000,000 messages/s", "met", tput_met, "params", params_json(o, load), "extra", extra_t);
    json_t *extra_l = json_pack("{s:o,s:o,s:o,s:o,s:o}", "latency_us", lat_json(cmd_l), "reference_latency_us",
                                lat_json(raw_l), "libzmq_same_frames_latency_us", lat_json(&lat[PATH_FRAMES]),
                                "without_trace_copy_latency_us", lat_json(&lat[PATH_DIRECT]),
                                "event_path_latency_us", lat_json(&lat[PATH_EVENT]));
    json_t *l = json_pack("{s:s,s:s,s:f,s:s,s:f,s:s,s:s,s:f,s:s,s:b,s:o,s:o}", "id", "5b", "figure",
                          "bus latency between two actors, p99 (one way, encode to decoded)", "value",
                          rnd(cmd_l->p99_us, 1), "unit", "µs", "reference", rnd(raw_l->p99_us, 1), "ref_unit", "µs",
                          "ref_name", "libzmq inproc PUSH/PULL, empty messages, p99", "ratio", rnd(ratio_l, 3),
                          "target", "p99 ≤ 50 µs", "met", lat_met, "params", params_json(o, load), "extra", extra_l);
    if (put_result(o->results, t) != 0 || put_result(o->results, l) != 0) {
        fprintf(stderr, "bus_bench: cannot append to %s\n", o->results);
        return -1;
    }
    return 0;
}

int main(int argc, char **argv) {
    options_t o;
    if (parse_args(argc, argv, &o) != 0) {
        fprintf(stderr, "usage: bus_bench [--quick] [--messages N] [--latency-messages N] [--rate N] "
                        "[--results FILE] [--only raw|frames|command|direct|event]\n");
        return 2;
    }
    zsys_init();
    zsys_set_linger(100);
    zsys_handler_set(NULL);
    double load = load_average();

    printf("b5 bus: %s mode, %" PRId64 " messages for throughput, %" PRId64 " at %.0f/s for latency, %ld CPUs, "
           "load average %.2f\n",
           o.quick ? "quick" : "full", o.messages, o.lat_messages, o.rate, sysconf(_SC_NPROCESSORS_ONLN), load);
    printf("  measured: a sender thread's bus_send_to(call.assigned) -> a receiving actor (actor_run: zloop, "
           "bus_endpoint_recv, on_command), the real broker taking the trace copies\n");

    static run_t run;
    current_run = &run;
    bus_broker_args_t bargs = {.trace_endpoint = NULL, .keep = TRACE_RING, .log = {SLOG_WARN, "bus"}};
    zactor_t *broker = bus_broker_new(&bargs);
    config_t cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.log_level = SLOG_WARN;
    actor_args_t rx_args = {.spec = &rx_spec, .cfg = &cfg};
    logger_t log = {SLOG_WARN, "bench"};
    zactor_t *rx = broker ? actor_start(actor_run, &rx_args, RX_NAME, &log) : NULL;
    if (!rx) {
        fprintf(stderr, "bus_bench: cannot start the broker or the receiving actor\n");
        zactor_destroy(&broker);
        return 1;
    }
    zstr_send(broker, "STARTUP-DONE");

    result_t tput[PATH_COUNT] = {{0}}, lat[PATH_COUNT] = {{0}};
    printf("throughput\n");
    for (int p = 0; p < PATH_COUNT; p++) {
        if (o.only >= 0 && o.only != p) continue;
        tput[p] = run_one((path_t)p, &run, broker, o.messages, 0);
        print_tput((path_t)p, &tput[p]);
    }
    printf("latency (one way, %.0f msg/s)\n", o.rate);
    for (int p = 0; p < PATH_COUNT; p++) {
        if (o.only >= 0 && o.only != p) continue;
        lat[p] = run_one((path_t)p, &run, broker, o.lat_messages, o.rate);
        print_lat((path_t)p, &lat[p]);
    }
    run_reset(&run, 0, false);
    zactor_destroy(&rx);
    zactor_destroy(&broker);
    if (o.only >= 0) return 0;   // a partial run (for profiling) reports nothing

    bool ok = true;
    for (int p = 0; p < PATH_COUNT; p++) ok = ok && (p == PATH_EVENT || (tput[p].ok && lat[p].ok));
    return report(&o, load, tput, lat) == 0 && ok ? 0 : 1;
}
