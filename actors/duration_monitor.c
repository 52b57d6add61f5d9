// actors/duration_monitor.c — the duration-monitor actor: ends calls that run past their plan's
// length plus scheduler.grace_s, and settles calls VAPI has gone quiet about (GET /call/{id}).
//
// Owns: its PostgreSQL connection. Talks to: dialer and VAPI webhook handling (call.started,
// call.ended).
#include "actors/duration_monitor.h"

const actor_spec_t duration_monitor_actor_spec = {
    .name = "duration-monitor",
    .subscriptions = (const char *const[]){"call.", NULL},
    .needs_db = true,
};
