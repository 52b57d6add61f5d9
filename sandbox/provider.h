// sandbox/provider.h — what main.c and control.c need to know about a simulated provider. Each
// provider is one file pair (stripe.c, cryptomus.c, vapi.c) that fills in this table; main.c
// lists the tables and routes by them, so adding a provider touches no other module.
//
// Every function runs on the lws service thread.
#ifndef SWEETY_SANDBOX_PROVIDER_H
#define SWEETY_SANDBOX_PROVIDER_H

#include <stdbool.h>
#include <stdint.h>

#include "sandbox/exchange.h"

typedef struct {
    // "stripe": the name used in logs, the request journal and faults, and the optional mount
    // prefix ("/stripe/v1/..." is the same as "/v1/...", for an api_base with a path).
    const char *name;
    // Does this (unmounted) path belong to the provider? Providers are asked in table order.
    bool (*owns)(const char *path);
    // Answers one request to the provider's API or hosted pages.
    void (*handle)(void *self, const sb_request_t *req, sb_response_t *resp);
    // Test control under /_sandbox/<name>/…; `subpath` is what follows that prefix ("/sessions/x/expire_now").
    void (*control)(void *self, const char *subpath, const sb_request_t *req, sb_response_t *resp);
    // Fills resp with the provider's own error body for an injected fault status (500, 429, …).
    void (*fault)(int status, sb_response_t *resp);
    void (*tick)(void *self, int64_t now_s);   // once a second: expiries (NULL: none)
    // Optional (NULL when unused), for timelines finer than `tick`: `next_due_ms` gives the
    // sb_mono_ms() time of the provider's next timed action, or -1 for none; main.c calls
    // `run_due` once that time has come (on one lws_sul timer), and asks again after every
    // request and every run. The provider itself never touches lws.
    int64_t (*next_due_ms)(void *self);
    void (*run_due)(void *self, int64_t now_ms);
    void (*reset)(void *self);                 // forget every object
    void *self;
} sb_provider_t;

#endif
