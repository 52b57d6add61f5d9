// bus/bus.h — the message bus: catalogue, msgpack codec, trace JSON, and each actor's endpoint.
//
// Wire format (STYLE.md): frame 0 is the topic string (subscribers filter by prefix without
// decoding), frame 1 the msgpack body: an array [BUS_WIRE_VERSION, from, ts_us, field1, field2 ...]
// in the order messages.def lists the fields. Messages are value structs: no heap pointer crosses a
// thread. Decoders never trust their input: any mismatch is an error code, never a crash.
//
// Topology (all inproc, one ZeroMQ context per process):
//   every endpoint PUSHes what it publishes to the broker (BUS_IN, PULL): PUSH never drops;
//   the broker republishes on BUS_OUT (PUB) to every endpoint's SUB, filtered by topic prefix,
//   and keeps/serves the trace (bus/broker.h);
//   commands that must not be lost go PUSH -> the target actor's own PULL inbox (BUS_INBOX_PREFIX +
//   actor name), and a copy is kept for the trace: each endpoint collects the copies of its
//   commands in a batch, which travels to the broker on the same PUSH as its events (one message
//   [BUS_TRACE_BATCH, records], recorded by the broker, never republished). One queue per sender,
//   so the trace keeps each sender's order, events and commands together.
#ifndef SWEETY_BUS_H
#define SWEETY_BUS_H

#include <czmq.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#define BUS_WIRE_VERSION 1
#define BUS_FROM_MAX 24

#define BUS_IN "inproc://sweety-bus-in"
#define BUS_OUT "inproc://sweety-bus-out"
#define BUS_INBOX_PREFIX "inproc://sweety-actor-"
#define BUS_TRACE_BATCH "$trace"   // frame 0 of a batch of trace copies (no topic starts with '$')

// ---- the catalogue -------------------------------------------------------------------------
#define F_STR(n, sz) char n[sz];
#define F_PII(n, sz) char n[sz];
#define F_I64(n) int64_t n;
#define F_BOOL(n) bool n;
#define BUS_MESSAGE(ID, topic, name, fields) typedef struct { fields } bus_##name##_t;
#include "bus/messages.def"
#undef BUS_MESSAGE
#undef F_STR
#undef F_PII
#undef F_I64
#undef F_BOOL

// The largest body any message of the catalogue can encode to (every string at its longest,
// every header at its widest): what a caller's buffer for bus_encode_to needs at most.
#define F_STR(n, sz) +(sz) + 4
#define F_PII(n, sz) +(sz) + 4
#define F_I64(n) +9
#define F_BOOL(n) +1
#define BUS_MESSAGE(ID, topic, name, fields) char name[5 + 1 + (BUS_FROM_MAX + 4) + 9 fields];
typedef union {
#include "bus/messages.def"
} bus_body_sizes_t;
#undef BUS_MESSAGE
#undef F_STR
#undef F_PII
#undef F_I64
#undef F_BOOL
#define BUS_BODY_MAX (sizeof(bus_body_sizes_t))

typedef enum {
    BUS_NONE = 0,
#define BUS_MESSAGE(ID, topic, name, fields) BUS_##ID,
#include "bus/messages.def"
#undef BUS_MESSAGE
    BUS_TYPE_COUNT
} bus_type_t;

typedef struct {
    bus_type_t type;
    char from[BUS_FROM_MAX];   // sending actor's name, filled by bus_publish / bus_send_to
    int64_t ts_us;             // send time, filled by bus_publish / bus_send_to
    union {
#define BUS_MESSAGE(ID, topic, name, fields) bus_##name##_t name;
#include "bus/messages.def"
#undef BUS_MESSAGE
    } u;
} bus_msg_t;

// Error codes (negative) returned by the codec.
enum {
    BUS_OK = 0,
    BUS_E_TOPIC = -1,     // unknown topic
    BUS_E_FORMAT = -2,    // not msgpack, truncated, wrong array length
    BUS_E_VERSION = -3,   // unsupported wire version
    BUS_E_TYPE = -4,      // a field of the wrong msgpack type
    BUS_E_RANGE = -5,     // a string too long for its field
    BUS_E_NOMEM = -6,
    BUS_E_SOCKET = -7,    // ZeroMQ send/recv failed
    BUS_E_AGAIN = -8,     // nothing waiting (bus_endpoint_recv_nowait)
};

const char *bus_type_topic(bus_type_t type);      // "booking.status"; NULL for an invalid type
bus_type_t bus_type_from_topic(const char *topic); // BUS_NONE when unknown
const char *bus_strerror(int code);

// Initialises *msg as an empty message of the given type.
void bus_msg_init(bus_msg_t *msg, bus_type_t type);

// Encodes the body (frame 1). On success *buf is malloc'ed (caller frees) and 0 is returned.
int bus_encode(const bus_msg_t *msg, char **buf, size_t *len);
// The same into the caller's buffer of `size` bytes (BUS_BODY_MAX always suffices; a smaller one
// may give BUS_E_RANGE); nothing allocated. 0 and *len, or a BUS_E_* code.
int bus_encode_to(const bus_msg_t *msg, void *buf, size_t size, size_t *len);
// Decodes a body received under `topic`. On error *msg is untouched. On success type, from, ts_us
// and the type's member of u are set; the rest of the union is left as it was.
int bus_decode(const char *topic, const void *buf, size_t len, bus_msg_t *msg);

// Trace JSON: {"ts":"RFC3339 ms","topic":...,"from":...,"body":{...}}; F_PII fields masked when
// mask is true (phones keep country hint and last 3 digits, emails their domain, other PII "***").
// Returns a new reference, or NULL on allocation failure.
json_t *bus_msg_to_json(const bus_msg_t *msg, bool mask);

// ---- trace batches -------------------------------------------------------------------------
// The body of a [BUS_TRACE_BATCH, body] message: records one after the other, each
// u8 topic length (1..BUS_TRACE_TOPIC_MAX), topic bytes, u32 body length (big-endian), body bytes.
#define BUS_TRACE_TOPIC_MAX 63
#define BUS_TRACE_RECORD_HEAD 5   // the two lengths
typedef struct {
    const unsigned char *topic;
    size_t topic_len;
    const unsigned char *body;
    size_t body_len;
} bus_record_t;
// Reads the record at *pos of a batch of `len` bytes: 1 (and *pos moved past it), 0 at the end,
// BUS_E_FORMAT when the bytes at *pos are not a whole record (a batch is never trusted).
int bus_batch_next(const void *batch, size_t len, size_t *pos, bus_record_t *rec);

// ---- sending and receiving (raw sockets) ----------------------------------------------------
// Sends [topic, body] on any socket. Fills nothing: from/ts_us must already be set.
int bus_send_raw(zsock_t *sock, const bus_msg_t *msg);
// Receives one [topic, body] message and decodes it. Malformed input returns an error code
// (the frames are consumed either way).
int bus_recv(zsock_t *sock, bus_msg_t *msg);

// ---- an actor's endpoint --------------------------------------------------------------------
typedef struct bus_endpoint_t bus_endpoint_t;

// Creates the sockets of one actor named `name` (at most BUS_FROM_MAX-1 chars): a PUSH to the
// broker, a SUB subscribed to each prefix in `subscriptions` (NULL-terminated; NULL = none),
// a PULL inbox bound at BUS_INBOX_PREFIX<name>. Must be called on the thread that will use it.
bus_endpoint_t *bus_endpoint_new(const char *name, const char *const *subscriptions);
void bus_endpoint_destroy(bus_endpoint_t **self_p);

// Publishes an event: sets from/ts_us, pushes to the broker. 0 or a BUS_E_* code.
int bus_publish(bus_endpoint_t *self, bus_msg_t *msg);
// Sends a command to actor `target`'s inbox (reliable: blocks at most timeout_ms while the inbox
// is full, then fails with BUS_E_SOCKET), and a copy to the trace. 0 or a BUS_E_* code.
//
// The body goes zero-copy (from a slab the endpoint fills, bus/endpoint.c). The trace copy joins
// this endpoint's batch, which goes to the broker on the same socket as the endpoint's events (so
// in the order they were sent) when it holds BUS_TRACE_BATCH_MAX copies, when a command finds it
// older than BUS_TRACE_BATCH_AGE_US, before the next bus_publish, on bus_endpoint_flush and on
// bus_endpoint_destroy. An endpoint's owner calls bus_endpoint_flush before its thread waits
// (actors/actor.c does), so a trace client sees a command within about a millisecond. Trace
// copies are best effort: a batch the broker cannot take at once (100,000 messages behind) is
// dropped and counted.
int bus_send_to(bus_endpoint_t *self, const char *target, bus_msg_t *msg, int timeout_ms);
#define BUS_TRACE_BATCH_MAX 128
#define BUS_TRACE_BATCH_AGE_US 1000

// Sends the trace copies waiting in this endpoint's batch, if any. 0, or BUS_E_SOCKET when they
// had to be dropped.
int bus_endpoint_flush(bus_endpoint_t *self);
// Trace copies waiting in the batch (for tests and for callers that flush lazily).
size_t bus_endpoint_trace_pending(const bus_endpoint_t *self);
// Copies dropped because the broker could not take them (for metrics and tests).
uint64_t bus_endpoint_trace_dropped(const bus_endpoint_t *self);
// Called, on the endpoint's thread, whenever a trace copy starts a new batch (NULL: nobody):
// lets a loop arrange to flush soon when it is not about to flush anyway (actors/actor.c arms a
// one-shot timer for copies sent from callbacks it does not run itself).
void bus_endpoint_on_trace_pending(bus_endpoint_t *self, void (*fn)(void *arg), void *arg);

zsock_t *bus_endpoint_events(bus_endpoint_t *self);   // SUB: poll it, then bus_recv
zsock_t *bus_endpoint_inbox(bus_endpoint_t *self);    // PULL: poll it, then bus_recv
const char *bus_endpoint_name(const bus_endpoint_t *self);
// Count of messages received that failed to decode (dropped). For metrics and tests.
uint64_t bus_endpoint_malformed(const bus_endpoint_t *self);
// Receives from either socket of this endpoint, counting malformed input. 0 or BUS_E_*.
int bus_endpoint_recv(bus_endpoint_t *self, zsock_t *which, bus_msg_t *msg);
// The same without waiting: BUS_E_AGAIN when no message is queued. Lets an actor take what has
// queued up in one wake-up of its loop instead of one zmq_poll round (several system calls) each.
int bus_endpoint_recv_nowait(bus_endpoint_t *self, zsock_t *which, bus_msg_t *msg);

#endif
