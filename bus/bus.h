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
//   actor name), and a copy goes to the broker's BUS_TRACE socket so the trace sees them too.
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
#define BUS_TRACE "inproc://sweety-bus-trace"
#define BUS_INBOX_PREFIX "inproc://sweety-actor-"

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
// Decodes a body received under `topic`. On error *msg is untouched. On success type, from, ts_us
// and the type's member of u are set; the rest of the union is left as it was.
int bus_decode(const char *topic, const void *buf, size_t len, bus_msg_t *msg);

// Trace JSON: {"ts":"RFC3339 ms","topic":...,"from":...,"body":{...}}; F_PII fields masked when
// mask is true (phones keep country hint and last 3 digits, emails their domain, other PII "***").
// Returns a new reference, or NULL on allocation failure.
json_t *bus_msg_to_json(const bus_msg_t *msg, bool mask);

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
int bus_send_to(bus_endpoint_t *self, const char *target, bus_msg_t *msg, int timeout_ms);

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
