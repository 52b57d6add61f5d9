// sandbox/stripe.h — the simulated Stripe: Checkout Sessions, PaymentIntents, Charges and Refunds
// in memory, the hosted checkout page, Idempotency-Key handling and signed webhook events, as far
// as providers.md §1 describes the subset SweetyOnCall uses.
//
// Runs on the lws service thread (through the sb_provider_t table); events go to webhooks.c.
#ifndef SWEETY_SANDBOX_STRIPE_H
#define SWEETY_SANDBOX_STRIPE_H

#include "common/log.h"
#include "sandbox/provider.h"
#include "sandbox/webhooks.h"

#define STRIPE_DEFAULT_API_VERSION "2026-10-28.endive"

typedef struct {
    const char *secret_key;       // required: "sk_test_…"
    const char *webhook_secret;   // required: "whsec_…"; signs every event
    const char *webhook_url;      // NULL: events are recorded but not delivered
    const char *public_url;       // base URL of the hosted pages ("http://127.0.0.1:12111")
    const char *api_version;      // events' api_version; NULL: STRIPE_DEFAULT_API_VERSION
    const char *refund_status;    // "succeeded" (NULL) or "pending"
    webhooks_t *webhooks;         // borrowed
    logger_t log;
} stripe_config_t;

typedef struct stripe_t stripe_t;

stripe_t *stripe_new(const stripe_config_t *cfg);   // copies the strings; NULL when out of memory
void stripe_destroy(stripe_t **self_p);
sb_provider_t stripe_provider(stripe_t *self);

#endif
