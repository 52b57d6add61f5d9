// storage/payments.h — payments rows, provider webhooks and refunds (tables payments,
// webhook_events, and the booking and call_queue changes a payment causes).
//
// Used by the payments actor (webhooks, reconciliation, refunds) and by sweetyctl. Each webhook
// is applied in ONE transaction that first records the provider's event id in webhook_events
// (INSERT ... ON CONFLICT DO NOTHING): an event id seen before changes nothing and reports
// PAYMENT_DUPLICATE; otherwise the booking and payment are locked (booking row first, as
// storage/bookings.c does) and the event applied, so concurrent deliveries of one event, and of
// different events for one booking, are serialized by the database. Reconciliation applies what
// it learns from the provider through the same functions, with an event id of its own making
// (for instance "reconcile:<session id>:paid"): a later webhook for the same fact then finds the
// booking already moved and reports PAYMENT_ALREADY_APPLIED.
//
// Return codes are those of storage/store.h; outputs are written only on STORE_OK.
#ifndef SWEETY_PAYMENTS_H
#define SWEETY_PAYMENTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "storage/bookings.h"
#include "storage/db.h"
#include "storage/store.h"

typedef enum {
    PAYMENT_APPLIED = 0,       // the booking moved (paid: -> confirmed -> queued; failed; expired)
    PAYMENT_DUPLICATE,         // this provider event id was recorded before: nothing changed
    PAYMENT_ALREADY_APPLIED,   // the booking is already where (or past where) this event would move it
    PAYMENT_REFUND_NEEDED,     // money arrived for a cancelled / payment_failed / failed booking:
                               // the payment is recorded paid, the booking unchanged; refund it
    PAYMENT_RECORDED,          // an informational event (payments_apply_info): recorded only
    PAYMENT_UNKNOWN_TARGET,    // no booking or payment matches what the event names: recorded only
} payment_outcome_t;

// The /metrics outcome: applied (APPLIED, REFUND_NEEDED), duplicate, ignored (ALREADY_APPLIED,
// RECORDED), unknown_target.
const char *payment_outcome_metric(payment_outcome_t outcome);
// "applied", "duplicate", "already_applied", "refund_needed", "recorded", "unknown_target".
const char *payment_outcome_name(payment_outcome_t outcome);

// A provider event, as the webhook handler or the reconciler extracted it. The target is the
// payment of `provider` matching booking_id, else session_id, else invoice_uuid, else
// payment_intent (the first of them that is given and matches). Give every reference the event
// carries: a booking whose checkout was never recorded (still pending) is found by booking_id only
// (Stripe client_reference_id; for Cryptomus, the order_id when order ids are booking ids).
typedef struct {
    const char *provider;         // stripe | cryptomus
    const char *event_id;         // 1..255 bytes: Stripe event id; Cryptomus "<uuid>:<status>"
    const char *event_type;       // checkout.session.completed, paid, ... (stored in webhook_events.type)
    const char *provider_status;  // raw provider status stored on the payment (may be NULL)
    const char *booking_id;       // client_reference_id / metadata.booking_id (may be NULL or malformed)
    const char *session_id;       // Stripe cs_..., Cryptomus order_id (may be NULL)
    const char *invoice_uuid;     // Cryptomus invoice uuid (may be NULL); stored when paid
    const char *payment_intent;   // Stripe pi_... (may be NULL); stored when given
} payment_event_t;

typedef struct {
    payment_outcome_t outcome;
    char booking_id[STORE_UUID_LEN];             // "" for DUPLICATE and UNKNOWN_TARGET
    char previous_status[STORE_STATUS_MAX];      // booking status before the event
    char status[STORE_STATUS_MAX];               // booking status after it
    char payment_status[STORE_STATUS_MAX];       // payment status after it
    char provider[STORE_KEY_MAX];
    booking_event_t events[2];                   // status changes made, oldest first: publish them
    size_t nevents;
    bool enqueued;                               // a call_queue row was inserted: publish queue.enqueued
    char session_id[STORE_REF_MAX];
    char invoice_uuid[STORE_REF_MAX];
    char payment_intent[STORE_REF_MAX];
    int64_t amount_cents;                        // what the booking costs (payments.amount_cents)
    char currency[STORE_CURRENCY_MAX];
} payment_result_t;

// Money arrived (Stripe checkout.session.completed with payment_status paid, or
// async_payment_succeeded; Cryptomus paid / paid_over). Booking pending or pending_payment ->
// confirmed -> queued, its call_queue row inserted (max_retries from scheduler.max_retries), the
// payment -> paid with paid_at, payment_intent and invoice_uuid: APPLIED. Booking cancelled,
// payment_failed or failed: payment -> paid (unless a refund already began), REFUND_NEEDED.
// Booking confirmed or later: ALREADY_APPLIED (the payment intent is still stored).
// amount_cents (< 0: unknown) and currency (NULL: unknown), when they differ from what the booking
// costs, are noted in payments.error_message; the provider's verdict decides.
// STORE_OK; STORE_ERR_INVALID (event id missing or too long, unknown provider); STORE_ERR_DB.
int payments_apply_paid(db_t *db, const payment_event_t *ev, int64_t amount_cents, const char *currency,
                        int max_retries, payment_result_t *out);

// The payment failed (Stripe async_payment_failed; Cryptomus fail, system_fail, wrong_amount):
// pending / pending_payment -> payment_failed, payment -> failed: APPLIED; otherwise
// ALREADY_APPLIED. `reason` (may be NULL) goes to payments.error_message.
int payments_apply_failed(db_t *db, const payment_event_t *ev, const char *reason, payment_result_t *out);

// The checkout expired or was cancelled unpaid (Stripe checkout.session.expired; Cryptomus cancel):
// pending / pending_payment -> cancelled, payment -> expired: APPLIED; otherwise ALREADY_APPLIED
// (an expiry after the payment leaves the booking paid).
int payments_apply_expired(db_t *db, const payment_event_t *ev, payment_result_t *out);

// Records an event that changes no status (Cryptomus process / confirm_check, Stripe completed
// but unpaid, refund notices): RECORDED or UNKNOWN_TARGET. A given payment_intent is stored.
int payments_apply_info(db_t *db, const payment_event_t *ev, payment_result_t *out);

// ---- refunds ---------------------------------------------------------------------------------------

typedef struct {
    char booking_id[STORE_UUID_LEN];
    char provider[STORE_KEY_MAX];
    char payment_status[STORE_STATUS_MAX];   // after the call
    bool started;                            // this call moved the payment paid -> refund_pending
    char session_id[STORE_REF_MAX];
    char invoice_uuid[STORE_REF_MAX];
    char payment_intent[STORE_REF_MAX];      // "" when not known yet (Stripe: retrieve the session)
    char refund_id[STORE_REF_MAX];
    int64_t amount_cents;
    char currency[STORE_CURRENCY_MAX];
} payment_refund_t;

// Starts a refund: payment paid or refund_failed -> refund_pending (started = true). Also STORE_OK,
// unchanged, when it is already refund_pending, refunded or refund_required: the caller sends the
// refund to the provider only while payment_status is refund_pending (with an idempotency key per
// booking, so a repeat is harmless). STORE_ERR_CONFLICT when the payment was never paid;
// STORE_ERR_NOT_FOUND; STORE_ERR_DB.
int payments_refund_begin(db_t *db, const char *booking_id, payment_refund_t *out);

// What the provider answered about the refund: status refund_pending (created, not settled),
// refunded or refund_failed; refund_id (may be NULL) is stored. Allowed from refund_pending and
// refund_failed, and refunded -> refunded (a repeat). STORE_OK; STORE_ERR_INVALID (another status);
// STORE_ERR_CONFLICT (not in a refund state); STORE_ERR_NOT_FOUND; STORE_ERR_DB.
int payments_refund_result(db_t *db, const char *booking_id, const char *refund_id, const char *status);

// The provider has no refund API (Cryptomus): paid, refund_pending or refund_failed ->
// refund_required, for an operator to refund by hand (idempotent). STORE_OK; STORE_ERR_CONFLICT;
// STORE_ERR_NOT_FOUND; STORE_ERR_DB.
int payments_mark_refund_required(db_t *db, const char *booking_id);

// Stores the Stripe payment intent learnt later (retrieving a completed session) when none is
// stored yet. STORE_OK; STORE_ERR_NOT_FOUND; STORE_ERR_INVALID; STORE_ERR_DB.
int payments_set_payment_intent(db_t *db, const char *booking_id, const char *payment_intent);

// Money held for bookings that will not get their call (booking cancelled, payment_failed or
// failed): payments still paid (a crash between "refund needed" and payments_refund_begin), and
// refunds begun but never acknowledged by the provider (refund_pending without a refund_id, unchanged
// for 30 s: the request failed or the daemon died waiting for it; send it again, same
// Idempotency-Key). At most `limit`, oldest first; *out malloc'ed array of *n (free()), NULL when empty.
int payments_refunds_due(db_t *db, int limit, payment_refund_t **out, size_t *n);

// ---- lookups ---------------------------------------------------------------------------------------

typedef struct {
    char id[STORE_UUID_LEN];
    char booking_id[STORE_UUID_LEN];
    char provider[STORE_KEY_MAX];
    char status[STORE_STATUS_MAX];
    int64_t amount_cents;
    char currency[STORE_CURRENCY_MAX];
    char session_id[STORE_REF_MAX];
    char payment_intent[STORE_REF_MAX];
    char invoice_uuid[STORE_REF_MAX];
    char refund_id[STORE_REF_MAX];
    char *provider_status;   // malloc'ed or NULL
    char *checkout_url;      // malloc'ed or NULL
    char *error_message;     // malloc'ed or NULL
    char expires_at[STORE_TS_MAX];   // "" when unknown
    char paid_at[STORE_TS_MAX];
    char refunded_at[STORE_TS_MAX];
    char created_at[STORE_TS_MAX];
    char updated_at[STORE_TS_MAX];
} payment_t;

void payment_clear(payment_t *p);

// Each: STORE_OK (release with payment_clear); STORE_ERR_NOT_FOUND; STORE_ERR_DB.
int payments_get(db_t *db, const char *booking_id, payment_t *out);
// provider stripe: the Checkout Session id; provider cryptomus: our order_id.
int payments_find_by_session(db_t *db, const char *provider, const char *session_id, payment_t *out);
int payments_find_by_invoice(db_t *db, const char *invoice_uuid, payment_t *out);
int payments_find_by_payment_intent(db_t *db, const char *payment_intent, payment_t *out);

#endif
