// actors/broadcaster.c — the realtime-broadcaster actor: carries committed status changes to the
// browsers watching them, on this instance and (through PostgreSQL LISTEN/NOTIFY) on others.
//
// Owns: its PostgreSQL connection (the LISTEN connection). Talks to: the http actor, which owns
// the WebSocket connections.
#include "actors/broadcaster.h"

const actor_spec_t broadcaster_actor_spec = {
    .name = "realtime-broadcaster",
    .subscriptions = (const char *const[]){"booking.status", NULL},
    .needs_db = true,
};
