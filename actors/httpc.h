// actors/httpc.h — the one outbound HTTP client (STYLE.md, "Outbound HTTP in one place").
//
// A libcurl multi handle driven by the czmq zloop of the actor that owns it: curl's sockets are
// zloop pollers, curl's timeout is a zloop timer, and so are the waits between retries. Nothing
// blocks the actor's thread; no other thread is involved (DNS uses curl's own resolver).
//
// Thread: everything here runs on the thread that runs the zloop given to httpc_new, and only there.
// Process set-up: main() calls curl_global_init() before starting any thread, and
// curl_global_cleanup() after the last one ended.
//
// Lifetime: httpc_destroy() before zloop_destroy() of its loop, and never from inside one of its
// own `done` callbacks. It may be called from any zloop handler or after zloop_start() returned.
// Every request still in flight or waiting for a retry then completes at once: its `done` runs,
// inside httpc_destroy(), with transport_error = CURLE_ABORTED_BY_CALLBACK and status 0, so a
// caller can always release what it attached to `arg`. httpc_submit() refuses work from then on.
//
// Retries (requests marked `retryable` only, with the same method, URL, headers and body — so the
// same Idempotency-Key): after a network error, a 409, a 429 or a status >= 500, unless the
// answer carries `Stripe-Should-Retry: false`; `Stripe-Should-Retry: true` forces one. Waits of
// base·2^(n-1) ms capped at cap ms, each ±20 % (defaults 500 ms and 5 s), up to max_attempts.
// A request that must not be sent twice (no idempotency at the provider) may still be marked
// `retry_unsent`: it is then retried, with the same waits, only after an error that proves no
// request left this host (httpc_nothing_sent: the name did not resolve, the connection was refused).
// A request not marked `retryable` always travels on a new connection: libcurl itself resends a
// request whose reused keep-alive connection died before answering, which could repeat it.
//
// Logging: one line per finished request, `event=http_out name=<log_name> method=.. status=..
// attempts=.. ms=..` plus `curl_code=..` when no answer came and `request_id=..` when the answer
// had one. URLs, headers and bodies are never logged (they carry keys and personal data).
#ifndef SWEETY_HTTPC_H
#define SWEETY_HTTPC_H

#include <czmq.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/log.h"

#define HTTPC_BODY_MAX (1024 * 1024)          // larger answers fail with CURLE_FILESIZE_EXCEEDED
#define HTTPC_DEFAULT_CONNECT_TIMEOUT_MS 5000
#define HTTPC_DEFAULT_TIMEOUT_MS 20000        // per attempt, connection included
#define HTTPC_DEFAULT_MAX_ATTEMPTS 3          // for retryable requests that leave it at 0
#define HTTPC_DEFAULT_BACKOFF_BASE_MS 500
#define HTTPC_DEFAULT_BACKOFF_CAP_MS 5000

typedef struct httpc_t httpc_t;

typedef struct {
    const char *method;              // "GET", "POST", "DELETE", ...
    const char *url;
    const char *const *headers;      // "Name: value" strings, NULL-terminated; may be NULL
    const char *body;                // may be NULL (no body); sent as is for any method but GET
    size_t body_len;
    int connect_timeout_ms;          // 0 = HTTPC_DEFAULT_CONNECT_TIMEOUT_MS
    int timeout_ms;                  // per attempt; 0 = HTTPC_DEFAULT_TIMEOUT_MS
    int max_attempts;                // retryable only: 0 = HTTPC_DEFAULT_MAX_ATTEMPTS
    bool retryable;                  // safe to send again (idempotent, or has an Idempotency-Key)
    const char *log_name;            // static text for the log line, e.g. "stripe.checkout_create"
    bool retry_unsent;               // not retryable, but sent again while no attempt left this host
                                     // (max_attempts applies as for retryable; 0 = the default)
} httpc_request_t;

typedef struct {
    long status;                     // HTTP status of the last attempt; 0 when none came
    char *body;                      // the last answer's body, NUL-terminated (body[body_len] == 0)
    size_t body_len;
    char request_id[64];             // `Request-Id` header of the last answer ("" if none); only
                                     // [A-Za-z0-9_-] characters are kept
    int transport_error;             // CURLcode of the last attempt, 0 when an answer came
    int attempts;                    // attempts made, >= 1 (0 only when cancelled before any)
    int stripe_should_retry;         // `Stripe-Should-Retry` of the last answer: 1 true, 0 false, -1 absent
    int64_t elapsed_ms;              // from httpc_submit to completion, retries included
} httpc_response_t;

// Called once per submitted request, on the loop's thread, never from inside httpc_submit.
// The response and its body are valid during the call only.
typedef void(httpc_done_fn)(void *arg, const httpc_response_t *resp);

// NULL when curl cannot be set up. lg is copied (lg->who must be a static string).
httpc_t *httpc_new(zloop_t *loop, const logger_t *lg);
void httpc_destroy(httpc_t **self_p);

// Copies everything in req. 0, or -1 (nothing will be called) when the request is malformed
// (no method or URL), curl refuses it, or the client is being destroyed.
int httpc_submit(httpc_t *self, const httpc_request_t *req, httpc_done_fn *done, void *arg);

// Requests submitted and not yet completed (running or waiting for a retry).
size_t httpc_in_flight(const httpc_t *self);

// Changes the retry waits (tests use a few ms). Values <= 0 keep the current ones.
void httpc_set_backoff(httpc_t *self, int base_ms, int cap_ms);

// ---- the retry policy, exposed for tests ------------------------------------------------------

// Whether an attempt that ended so deserves another (attempts left aside): transport_error is a
// CURLcode (0 when an answer came), stripe_should_retry as in httpc_response_t.
bool httpc_should_retry(long status, int transport_error, int stripe_should_retry);

// Whether a transport error (a CURLcode) proves that the request never left this host: the name
// did not resolve or the connection was refused. Any other failure may have reached the server.
bool httpc_nothing_sent(int transport_error);

// The wait before retry number `retry` (1 = the first retry): min(base·2^(retry-1), cap), scaled
// by a factor in [0.8, 1.2] taken from rnd (0 → 0.8, UINT32_MAX → 1.2).
int httpc_backoff_ms(int base_ms, int cap_ms, int retry, uint32_t rnd);

// ---- requests built by the provider clients ---------------------------------------------------

// How a call to a provider ended, as stripe_client and cryptomus_client report it.
typedef enum {
    PROVIDER_OK = 0,
    PROVIDER_UNAVAILABLE,    // no answer, or 409/429/5xx after every attempt, or cancelled
    PROVIDER_REJECTED,       // the provider refused the request (another 4xx, Cryptomus state != 0)
    PROVIDER_BAD_RESPONSE,   // an answer we cannot read (2xx that does not parse, body too large)
} provider_outcome_t;

const char *provider_outcome_name(provider_outcome_t kind);   // "ok", "unavailable", ...

#define HTTPC_PREPARED_MAX_HEADERS 8

// A request with owned strings, built by a client's prepare function and inspected by tests;
// httpc_submit_prepared() sends it. Clear with httpc_prepared_clear() (wipes header values,
// which hold keys, and the body, which may hold a secret; httpc wipes its own copies too).
typedef struct {
    const char *method;                                   // static text
    char *url;
    char *headers[HTTPC_PREPARED_MAX_HEADERS + 1];        // "Name: value", NULL-terminated
    char *body;                                           // NUL-terminated; NULL for none
    size_t body_len;
    bool retryable;
    int max_attempts;
    const char *log_name;                                 // static text
    bool retry_unsent;                                    // as in httpc_request_t
} httpc_prepared_t;

// Appends a header built from fmt. 0, or -1 when out of memory or full.
int httpc_prepared_add_header(httpc_prepared_t *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
// Value of header `name` (case-insensitive), or NULL.
const char *httpc_prepared_header(const httpc_prepared_t *p, const char *name);
void httpc_prepared_clear(httpc_prepared_t *p);
// httpc_submit() of p with the given timeouts (0 = defaults). p may be cleared right after.
int httpc_submit_prepared(httpc_t *self, const httpc_prepared_t *p, int connect_timeout_ms, int timeout_ms,
                          httpc_done_fn *done, void *arg);

#endif
