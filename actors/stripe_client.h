// actors/stripe_client.h — the Stripe calls the payments actor makes (providers.md §1), over httpc.
//
// Each call is split in two halves that tests can drive separately: a prepare function that
// builds the exact request (URL, headers, form body — values percent-encoded by curl_easy_escape,
// bracketed keys literal as stripe-node sends them) and a parse function that turns an
// httpc_response_t into an outcome and a struct. The submit functions glue them to httpc.
//
// Every POST carries an Idempotency-Key derived from what it acts on (checkout-<booking>,
// expire-<session>, refund-<booking>) and is retryable: a retry, now or after a restart, cannot
// make a second session or a second refund. Requests carry `Stripe-Version: STRIPE_API_VERSION`.
//
// Thread: the thread of the httpc it is given. Logs: httpc's `http_out` line per call, plus
// `stripe_rejected` with Stripe's error type, code and param (never its message, which may quote
// the request's personal data).
#ifndef SWEETY_STRIPE_CLIENT_H
#define SWEETY_STRIPE_CLIENT_H

#include <stdbool.h>
#include <stdint.h>

#include "actors/httpc.h"
#include "common/log.h"

// The API version every request pins (the one stripe-node 23.1.0 pins, providers.md §1.1). Object
// shapes we read (session, refund, error) are stable across recent versions.
#define STRIPE_API_VERSION "2026-10-28.endive"

// Checkout Sessions live at least 30 minutes at Stripe; ask for 31 so clock skew cannot refuse it.
#define STRIPE_CHECKOUT_TTL_S 1860

typedef struct stripe_client_t stripe_client_t;

typedef struct {
    const char *api_base;     // "https://api.stripe.com" (no trailing slash needed)
    const char *secret_key;   // "sk_test_…"
    const char *public_url;   // our http.public_url, for success/cancel URLs
    int timeout_ms;           // per attempt; 0 = httpc's default
    int max_attempts;         // 0 = httpc's default
} stripe_config_t;

// How a call ended. On PROVIDER_REJECTED the error_* fields hold Stripe's error object.
typedef struct {
    provider_outcome_t kind;
    long http_status;          // 0 when no answer came
    int attempts;
    bool not_found;            // 404 (resource_missing)
    char request_id[64];
    char error_type[40];       // "invalid_request_error", "idempotency_error", ...
    char error_code[64];       // "resource_missing", "parameter_unknown", ... ("" if none)
    char error_param[64];
    char error_message[256];   // may echo the request: never log it
} stripe_outcome_t;

typedef struct {
    char id[128];              // cs_…
    char url[2048];            // hosted page; "" once the session is no longer open
    int64_t expires_at;        // unix seconds
    char status[16];           // open | complete | expired
    char payment_status[24];   // paid | unpaid | no_payment_required
    char payment_intent[128];  // pi_… or "" (null until the customer pays)
    char payment_intent_status[32];   // when expanded, else ""
    char client_reference_id[128];
    int64_t amount_total;      // -1 when absent
    char currency[8];
} stripe_session_t;

typedef struct {
    char id[128];              // re_…
    char status[24];           // pending | requires_action | succeeded | failed | canceled
    int64_t amount;            // -1 when absent
    char payment_intent[128];
} stripe_refund_t;

typedef struct {
    const char *booking_id;      // uuid; [A-Za-z0-9_-], 1..64 characters
    int64_t amount_cents;        // > 0
    const char *currency;        // three letters, any case (sent lowercase)
    const char *product_name;    // shown on the checkout page
    const char *customer_email;  // NULL or "" to leave out
    int64_t now_s;               // clock for expires_at; 0 = time(NULL)
} stripe_checkout_params_t;

// `session` / `refund` is NULL unless outcome->kind == PROVIDER_OK; both valid during the call only.
typedef void(stripe_session_fn)(void *arg, const stripe_outcome_t *outcome, const stripe_session_t *session);
typedef void(stripe_refund_fn)(void *arg, const stripe_outcome_t *outcome, const stripe_refund_t *refund);

// Copies cfg (NULL when a field is missing). `http` must outlive the client; the client may be
// destroyed while its calls are in flight (they keep what they need).
stripe_client_t *stripe_client_new(httpc_t *http, const stripe_config_t *cfg, const logger_t *lg);
void stripe_client_destroy(stripe_client_t **self_p);

// Each returns 0 (done will be called exactly once, later) or -1 (invalid arguments or httpc refused;
// done will not be called).
int stripe_checkout_create(stripe_client_t *self, const stripe_checkout_params_t *p, stripe_session_fn *done,
                           void *arg);
int stripe_session_retrieve(stripe_client_t *self, const char *session_id, bool expand_payment_intent,
                            stripe_session_fn *done, void *arg);
int stripe_session_expire(stripe_client_t *self, const char *session_id, stripe_session_fn *done, void *arg);
// A full refund of payment_intent, reason requested_by_customer, metadata[booking_id].
int stripe_refund_create(stripe_client_t *self, const char *payment_intent, const char *booking_id,
                         stripe_refund_fn *done, void *arg);

// ---- the two halves, exposed for tests -------------------------------------------------------

// Build the exact request into *out (cleared first; clear it with httpc_prepared_clear). 0 or -1.
int stripe_prepare_checkout(const stripe_client_t *self, const stripe_checkout_params_t *p, httpc_prepared_t *out);
int stripe_prepare_retrieve(const stripe_client_t *self, const char *session_id, bool expand_payment_intent,
                            httpc_prepared_t *out);
int stripe_prepare_expire(const stripe_client_t *self, const char *session_id, httpc_prepared_t *out);
int stripe_prepare_refund(const stripe_client_t *self, const char *payment_intent, const char *booking_id,
                          httpc_prepared_t *out);

// Classify resp into *out; on a 2xx parse the object (outputs zeroed first). A 2xx whose body is not
// the expected object becomes PROVIDER_BAD_RESPONSE.
void stripe_parse_session(const httpc_response_t *resp, stripe_outcome_t *out, stripe_session_t *session);
void stripe_parse_refund(const httpc_response_t *resp, stripe_outcome_t *out, stripe_refund_t *refund);

#endif
