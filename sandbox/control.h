// sandbox/control.h — the test control API under /_sandbox/ (loopback only, no auth) and what it
// keeps: the journal of provider requests and the fault rules. Provider-specific controls
// (/_sandbox/stripe/…, /_sandbox/cryptomus/…, /_sandbox/vapi/…) go to the provider's own `control`.
//
//   GET  /_sandbox/health                      {"status":"ok"}
//   GET  /_sandbox/requests?provider=&path=&path_prefix=&method=
//   POST /_sandbox/faults                      {"provider","path_prefix","method"?,"status"?,"delay_ms"?,
//                                               "drop"?,"count"?,"when":"before"|"after"}
//   GET  /_sandbox/faults    POST /_sandbox/faults/clear
//   GET  /_sandbox/webhooks?provider=&type=    POST /_sandbox/webhooks {"mode","concurrency"?}
//   POST /_sandbox/webhooks/release {"order","duplicates"}   POST /_sandbox/webhooks/redeliver {"id","times"}
//   POST /_sandbox/reset
//
// Runs on the lws service thread.
#ifndef SWEETY_SANDBOX_CONTROL_H
#define SWEETY_SANDBOX_CONTROL_H

#include <stdbool.h>
#include <stdint.h>

#include "common/log.h"
#include "sandbox/exchange.h"
#include "sandbox/provider.h"
#include "sandbox/webhooks.h"

typedef struct control_t control_t;

// A fault to apply to one request. With when=before (the default) a status or drop answers
// before the provider sees the request (a load balancer or rate limiter: nothing executes, no
// idempotency record); with when=after the request executes, then the answer is replaced.
// delay_ms holds the answer back; the request counts as in flight meanwhile.
typedef struct {
    bool active;
    int id;
    int status;         // 0: the provider's real answer
    int64_t delay_ms;
    bool drop;          // close the connection instead of answering
    bool after;
} sb_fault_t;

control_t *control_new(const sb_provider_t *providers, size_t n_providers, webhooks_t *webhooks, logger_t log);
void control_destroy(control_t **self_p);

// Answers a request under /_sandbox/ (the caller checked the peer is loopback).
void control_handle(control_t *self, const sb_request_t *req, sb_response_t *resp);
// The next fault rule matching this provider request, consumed; .active false when none.
sb_fault_t control_take_fault(control_t *self, const char *provider, const sb_request_t *req);
// Adds a provider request and its answer to the journal.
void control_record(control_t *self, const char *provider, const sb_request_t *req, int status, const sb_fault_t *fault);

#endif
