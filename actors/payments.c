// actors/payments.c — the payments actor: creates checkouts with Stripe and Cryptomus, applies
// verified provider webhooks, reconciles bookings whose webhook never came, issues refunds.
//
// Owns: its PostgreSQL connection and its outbound HTTP transfers. Talks to: the http actor
// (booking and webhook commands), the scheduler (queue.enqueued after a confirmed payment).
// The foundation issue gives it its place in the process; its behaviour comes with the payments issue.
#include "actors/payments.h"

const actor_spec_t payments_actor_spec = {
    .name = "payments",
    .needs_db = true,
};
