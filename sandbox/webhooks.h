// sandbox/webhooks.h — the outbound webhook queue: records every event the simulated providers
// generate and delivers it (HTTP POST) with retries, or holds, drops, reorders and duplicates
// deliveries when a test asks for it.
//
// Threads: webhooks_new() starts one delivery thread that owns a libcurl multi handle and never
// touches libwebsockets. The other functions are called on the lws service thread; they share the
// queue and the event records with the delivery thread under one mutex, and wake it with
// curl_multi_wakeup(). Bodies and URLs are copied in, so callers keep ownership of theirs.
#ifndef SWEETY_SANDBOX_WEBHOOKS_H
#define SWEETY_SANDBOX_WEBHOOKS_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/log.h"

#define WEBHOOKS_MAX_RETRIES 16

typedef struct {
    int64_t timeout_ms;                          // per attempt (connect + answer)
    int64_t retry_ms[WEBHOOKS_MAX_RETRIES];      // delay before retry 1, 2, …
    size_t n_retry;                              // attempts = 1 + n_retry
    int concurrency;                             // deliveries in flight at once (1 keeps the order)
    logger_t log;
} webhooks_config_t;

typedef struct webhooks_t webhooks_t;

typedef struct {
    const char *provider;       // "stripe", "cryptomus", "vapi"
    const char *id;             // the event's id (unique: used by redeliver)
    const char *type;           // "checkout.session.completed", "payment/paid", …
    const char *url;            // NULL or "": recorded, never delivered
    const char *body;           // exact bytes to POST
    size_t body_len;
    const char *stripe_secret;  // non-NULL: sign each attempt with Stripe-Signature (t = now)
    // VAPI-style deliveries (all optional):
    const char *const *headers; // extra "Name: value" lines sent as they are, NULL-terminated
    const char *hmac_secret;    // non-NULL: each attempt gets x-timestamp (ms) and x-signature, the hex
                                // HMAC-SHA256 of "<x-timestamp>.<body>" (VAPI's HMAC credential defaults)
    bool own_retries;           // true: this event gets `max_retries` retries instead of the sandbox-wide count
    int max_retries;
    int64_t timeout_ms;         // > 0: per attempt, instead of the sandbox-wide timeout
} webhook_event_t;

webhooks_t *webhooks_new(const webhooks_config_t *cfg);   // NULL if the thread cannot start
void webhooks_destroy(webhooks_t **self_p);                 // stops the thread; in-flight attempts are abandoned

// Records the event and, depending on the mode, queues its delivery, holds it or drops it.
void webhooks_emit(webhooks_t *self, const webhook_event_t *event);
// mode "normal" | "hold" | "drop"; concurrency > 0 changes how many deliveries run at once.
int webhooks_set_mode(webhooks_t *self, const char *mode, int concurrency);
// Queues every held event, in order "fifo" | "reverse" | "shuffle", each `duplicates` times
// (fifo/reverse: in rounds e1 e2 e1 e2; shuffle: all copies shuffled). Sets *released. 0 or -1.
int webhooks_release(webhooks_t *self, const char *order, int duplicates, size_t *released);
// Queues `times` more deliveries of the event with this id. 0, or -1 when unknown or without URL.
int webhooks_redeliver(webhooks_t *self, const char *id, int times);
// {"mode":…, "concurrency":N, "events":[{seq,id,provider,type,url,state,attempts,delivered,failed,
// last_status,last_error,created,body}]} filtered by provider and type when given.
json_t *webhooks_list(webhooks_t *self, const char *provider, const char *type);
void webhooks_reset(webhooks_t *self);   // forgets every event, queued delivery and the mode

#endif
