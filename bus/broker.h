// bus/broker.h — the bus broker actor: receives every published message (BUS_IN), republishes it
// to subscribers (BUS_OUT), receives on the same socket the batched copies of the commands actors
// send each other inbox to inbox (recorded, not republished), and serves the trace.
//
// Trace: a ZeroMQ ROUTER bound at trace.endpoint. A client (bus/trace_client.h) connects a DEALER
// and sends one frame "SUB" then a frame with a topic prefix ("" for all). The broker answers with
// the messages it has kept, oldest first — the start-up messages (everything up to the supervisor's
// "startup done" command, pinned, up to BUS_TRACE_STARTUP_MAX) and then the last `keep` ones — then
// live messages as they pass. Each message to a client is [topic, body]. A client that goes away
// or cannot keep up is dropped; the bus itself never waits for a trace client.
//
// Order: the broker keeps each sender's messages, events and commands alike, in the order that
// sender sent them (one queue per sender: its publish PUSH carries its batches too). A command
// reaches the trace when its sender's batch does: at once when the sender next publishes, else
// when the batch fills up or ages (bus/bus.h, bus_send_to), at the latest when the sender's loop
// is about to wait (about a millisecond); interleaving between different senders follows arrival.
#ifndef SWEETY_BROKER_H
#define SWEETY_BROKER_H

#include <czmq.h>
#include <stdint.h>

#include "common/log.h"

#define BUS_TRACE_STARTUP_MAX 256
#define BUS_TRACE_CLIENTS_MAX 32

typedef struct {
    const char *trace_endpoint;   // e.g. "ipc:///tmp/sweetyd-trace"
    int64_t keep;                 // ring size, >= 1000
    logger_t log;
} bus_broker_args_t;

// czmq actor: zactor_new(bus_broker_actor, &args). Signals 0 on the pipe once all sockets are
// bound (including the trace endpoint), or -1 if a bind failed (then returns).
// Pipe commands: "$TERM"; "STARTUP-DONE" (stops pinning start-up messages);
// "STATS" -> replies with a picture "888" (messages in, published, trace clients).
// Both STARTUP-DONE and STATS first take in every message already queued to the broker, so what a
// thread published (or flushed: bus_endpoint_flush) before the command was sent is pinned /
// counted; "messages in" counts every event and every trace copy. Messages published after it
// may be pinned too until the broker has handled it; a STATS round trip after STARTUP-DONE is a
// barrier when that matters (tests).
void bus_broker_actor(zsock_t *pipe, void *args);

// Starts bus_broker_actor and returns it once its sockets are bound, or NULL (after a log line
// naming the endpoint) when a bind failed: zactor_new alone cannot tell, as it discards the status
// the actor signals. Destroy with zactor_destroy.
zactor_t *bus_broker_new(const bus_broker_args_t *args);

#endif
