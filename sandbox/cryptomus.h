// sandbox/cryptomus.h — the simulated Cryptomus merchant API (providers.md §3): invoices in memory,
// request signatures checked over the exact bytes received, the hosted payment page, status
// changes and their signed webhooks, and the documented test-webhook call.
//
// Runs on the lws service thread (through the sb_provider_t table); webhooks go to webhooks.c.
#ifndef SWEETY_SANDBOX_CRYPTOMUS_H
#define SWEETY_SANDBOX_CRYPTOMUS_H

#include "common/log.h"
#include "sandbox/provider.h"
#include "sandbox/webhooks.h"

typedef struct {
    const char *merchant;      // required: the merchant uuid expected in the `merchant` header
    const char *payment_key;   // required: signs requests and webhooks
    const char *public_url;    // base URL of the hosted pages
    webhooks_t *webhooks;      // borrowed
    logger_t log;
} cryptomus_config_t;

typedef struct cryptomus_t cryptomus_t;

cryptomus_t *cryptomus_new(const cryptomus_config_t *cfg);   // copies the strings; NULL when out of memory
void cryptomus_destroy(cryptomus_t **self_p);
sb_provider_t cryptomus_provider(cryptomus_t *self);

#endif
