// actors/dispatch_events.h — what the dispatch actors (scheduler, dialer, duration-monitor)
// publish after storage/dispatch.h committed a change, in one place so every path announces a
// settled call the same way. Runs on the calling actor's thread.
#ifndef SWEETY_DISPATCH_EVENTS_H
#define SWEETY_DISPATCH_EVENTS_H

#include "actors/actor.h"
#include "storage/dispatch.h"

// capacity.changed for an agent and its account, with their counters after the change.
void dispatch_publish_capacity(actor_ctx_t *ctx, const char *account_id, const char *agent_id, int64_t account_active,
                               int64_t agent_active);

// After a settle that changed something: booking.status for each status written, call.ended,
// call.retry when the call went back to the queue, capacity.changed, and one log line.
// call_id and reason may be NULL.
void dispatch_publish_settled(actor_ctx_t *ctx, const char *call_id, const char *reason, const dispatch_settled_t *res);

#endif
