// sandbox/vapi.h — the simulated VAPI: outbound calls (POST /call, GET /call, GET /call/{id}), the
// per-key concurrency limit with VAPI's three over-limit answers, live call control
// (POST <monitor.controlUrl> {"type":"end-call"}), and each call's life played as server messages
// (status-update, end-of-call-report) on a timeline a test chooses per customer number
// (providers.md §2, sandbox/README.md "VAPI").
//
// Runs on the lws service thread (through the sb_provider_t table); the timelines are driven by
// main.c's timer through `next_due_ms`/`run_due`; messages go to webhooks.c.
#ifndef SWEETY_SANDBOX_VAPI_H
#define SWEETY_SANDBOX_VAPI_H

#include <stddef.h>

#include "common/log.h"
#include "sandbox/provider.h"
#include "sandbox/webhooks.h"

#define VAPI_DEFAULT_LIMIT 10   // concurrent calls per key (VAPI's default per account)

typedef struct {
    // Private keys the API accepts, each "KEY[:LIMIT]"; an entry may also hold several, comma-separated.
    const char *const *keys;
    size_t n_keys;
    const char *public_url;        // base of monitor.controlUrl ("http://127.0.0.1:12111")
    const char *server_url;        // where messages go when a call names no assistantOverrides.server.url
    const char *webhook_secret;    // X-Vapi-Secret when a call names no server.secret
    const char *hmac_secret;       // non-NULL: messages also carry x-timestamp and x-signature
    // The rest are option texts, checked by vapi_new (NULL: the default).
    const char *webhook_retries;   // retries of a failed message, 0..10 (VAPI's default backoffPlan: 0)
    const char *concurrency_mode;  // "400" (default), "blocked" or "ended"
    const char *default_outcome;   // timeline of calls without a script (default "answer:2")
    const char *timescale;         // multiplies every simulated duration, 0.001..100 (default 1)
    webhooks_t *webhooks;          // borrowed
    logger_t log;
} vapi_config_t;

typedef struct vapi_t vapi_t;

// Copies what it needs. NULL with a message in `error` when a value is invalid; NULL with an
// empty `error` when out of memory.
vapi_t *vapi_new(const vapi_config_t *cfg, char *error, size_t error_size);
void vapi_destroy(vapi_t **self_p);
sb_provider_t vapi_provider(vapi_t *self);

#endif
