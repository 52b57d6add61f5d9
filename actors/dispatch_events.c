// actors/dispatch_events.c — see dispatch_events.h.
#include "actors/dispatch_events.h"

#include <stdio.h>

void dispatch_publish_capacity(actor_ctx_t *ctx, const char *account_id, const char *agent_id, int64_t account_active,
                               int64_t agent_active) {
    bus_msg_t msg;
    bus_msg_init(&msg, BUS_CAPACITY_CHANGED);
    bus_capacity_changed_t *c = &msg.u.capacity_changed;
    snprintf(c->account_id, sizeof c->account_id, "%s", account_id);
    snprintf(c->agent_id, sizeof c->agent_id, "%s", agent_id);
    c->account_active = account_active;
    c->agent_active = agent_active;
    actor_publish(ctx, &msg);
}

void dispatch_publish_settled(actor_ctx_t *ctx, const char *call_id, const char *reason, const dispatch_settled_t *res) {
    for (size_t i = 0; i < res->nevents; i++) actor_publish_status(ctx, res->booking_id, &res->events[i]);
    bus_msg_t msg;
    bus_msg_init(&msg, BUS_CALL_ENDED);
    bus_call_ended_t *e = &msg.u.call_ended;
    snprintf(e->booking_id, sizeof e->booking_id, "%s", res->booking_id);
    snprintf(e->call_id, sizeof e->call_id, "%.*s", (int)sizeof e->call_id - 1, call_id ? call_id : "");
    snprintf(e->ended_reason, sizeof e->ended_reason, "%.*s", (int)sizeof e->ended_reason - 1, reason ? reason : "");
    snprintf(e->outcome, sizeof e->outcome, "%s", dispatch_state_name(res->state));
    e->duration_s = res->duration_s > 0 ? res->duration_s : 0;
    actor_publish(ctx, &msg);
    if (res->state == DISPATCH_REQUEUED) {
        bus_msg_init(&msg, BUS_CALL_RETRY);
        bus_call_retry_t *r = &msg.u.call_retry;
        snprintf(r->booking_id, sizeof r->booking_id, "%s", res->booking_id);
        r->attempt = res->attempt;
        r->delay_s = res->retry_delay_s;
        snprintf(r->reason, sizeof r->reason, "%.*s", (int)sizeof r->reason - 1, reason ? reason : "");
        actor_publish(ctx, &msg);
    }
    dispatch_publish_capacity(ctx, res->account_id, res->agent_id, res->account_active, res->agent_active);
    log_info(&ctx->log, "call_settled", "booking=%s state=%s reason=%s attempt=%d", res->booking_id,
             dispatch_state_name(res->state), reason ? reason : "-", res->attempt);
}
