// actors/actor.h — the shape every business actor shares (STYLE.md, "An actor, in outline").
//
// An actor file (payments.c, scheduler.c, ...) describes itself with an actor_spec_t: its name, the
// topics it subscribes to, whether it needs its own PostgreSQL connection, a periodic timer, and
// its handlers. actor_run() is the czmq actor body that builds the common state (logger, bus
// endpoint, database connection), signals ready, loops in a zloop until $TERM, and tears down.
// Every actor answers `actor.ping` addressed to its name (or "*") with `actor.pong`. The loop hands
// the trace copies of the commands an actor sends (bus_send_to) to the broker before it waits,
// including those sent from callbacks the actor registers on ctx->loop itself (within 1 ms).
#ifndef SWEETY_ACTOR_H
#define SWEETY_ACTOR_H

#include <czmq.h>
#include <stdbool.h>

#include "bus/bus.h"
#include "common/log.h"
#include "conf/config.h"
#include "storage/bookings.h"
#include "storage/db.h"

// What an actor's handlers get: everything here is owned by actor_run on the actor's thread.
typedef struct {
    const config_t *cfg;     // read-only, shared by all threads, never written after start
    logger_t log;
    bus_endpoint_t *bus;
    db_t *db;                // this thread's own connection; NULL unless spec->needs_db
    zloop_t *loop;           // the actor's loop (for httpc and extra timers)
} actor_ctx_t;

typedef struct {
    const char *name;                     // as in CONTRACT.md: "payments", "dialer", ...
    const char *const *subscriptions;     // extra topic prefixes (NULL-terminated) or NULL
    bool needs_db;
    int timer_ms;                         // period of on_timer; 0 = none
    // Builds the actor's own state (may be NULL if it keeps none). Returns 0 or -1 (start fails).
    int (*create)(actor_ctx_t *ctx, void **state);
    void (*destroy)(actor_ctx_t *ctx, void **state);
    // Handlers return 0; -1 stops the actor (a bug or an unrecoverable local fault).
    int (*on_event)(actor_ctx_t *ctx, void *state, const bus_msg_t *msg);    // published events
    int (*on_command)(actor_ctx_t *ctx, void *state, const bus_msg_t *msg);  // inbox commands
    int (*on_timer)(actor_ctx_t *ctx, void *state);
} actor_spec_t;

typedef struct {
    const actor_spec_t *spec;
    const config_t *cfg;
} actor_args_t;

// The start handshake every actor of ours follows (czmq's zactor_new ignores the signal's
// status): zsock_signal(pipe, 0) once the pipe is served, then one string, "READY" or "FAILED"
// (after which a failed actor returns). actor_start() runs zactor_new and waits for that string
// (60 s at most); it returns NULL, having logged it, when the actor did not become ready.
void actor_report_start(zsock_t *pipe, bool ok);
zactor_t *actor_start(zactor_fn *fn, void *args, const char *name, const logger_t *log);

// Publishes an event from this actor; a failure is logged (the database stays the truth).
void actor_publish(actor_ctx_t *ctx, bus_msg_t *msg);
// Publishes booking.status for a status change storage/ reports (nothing when ev->seq is 0).
void actor_publish_status(actor_ctx_t *ctx, const char *booking_id, const booking_event_t *ev);

// Answers the http actor's request request_id with an HTTP status and a complete JSON body;
// `outcome` ("" when none) is what /metrics counts for webhooks.
void actor_reply(actor_ctx_t *ctx, int64_t request_id, int status, const char *outcome, const char *body);

// czmq actor body for actors described by an actor_spec_t: actor_start(actor_run, &args, ...).
// args must outlive the actor.
void actor_run(zsock_t *pipe, void *args);

#endif
