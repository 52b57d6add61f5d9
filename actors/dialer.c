// actors/dialer.c — the dialer actor: places outbound calls through VAPI (POST /call) for the
// assignments the scheduler makes, many in flight at once, and reports how each request went.
//
// Owns: its PostgreSQL connection (it alone decrypts account keys, only when it needs them).
// Talks to: scheduler (call.assigned), duration-monitor and realtime (call.started).
#include "actors/dialer.h"

const actor_spec_t dialer_actor_spec = {
    .name = "dialer",
    .subscriptions = (const char *const[]){"call.assigned", NULL},
    .needs_db = true,
};
