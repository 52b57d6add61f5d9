// actors/scheduler.c — the scheduler actor: claims queued calls (FOR UPDATE SKIP LOCKED, with a
// lease), picks an agent with free capacity and hands the call to the dialer; sweeps every second
// as a backstop for lost wake-ups (what pg_cron did in the earlier design).
//
// Owns: its PostgreSQL connection. Talks to: payments (queue.enqueued), dialer (call.assigned).
#include "actors/scheduler.h"

const actor_spec_t scheduler_actor_spec = {
    .name = "scheduler",
    .subscriptions = (const char *const[]){"queue.enqueued", NULL},
    .needs_db = true,
};
