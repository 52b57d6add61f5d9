// storage/bookings.h — bookings, their users and their status history (tables users, bookings,
// booking_events, and the rows of payments and call_queue a booking's own transitions touch).
//
// Used by the http actor (POST /api/bookings, GET /api/bookings/{id}, cancel), the payments actor
// (checkout created or failed, reconciliation) and sweetyctl. Each function is one query or one
// transaction; status changes go through the schema's trigger, which numbers them in
// booking_events and NOTIFYs sweety_booking_status at commit. Functions that change a status hand
// back the history row they wrote (booking_event_t), so the caller can publish booking.status on
// the bus after the call returns.
//
// Return codes are those of storage/store.h; outputs are written only on STORE_OK (and, for
// bookings_create, *retry_after_s on STORE_ERR_COOLDOWN). Booking ids that are not UUIDs are
// reported as STORE_ERR_NOT_FOUND.
#ifndef SWEETY_BOOKINGS_H
#define SWEETY_BOOKINGS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "storage/db.h"
#include "storage/store.h"

// Free trials: one per phone number per this many seconds.
#define BOOKINGS_FREE_TRIAL_COOLDOWN_S 86400

// One entry of a booking's status history.
typedef struct {
    int seq;                        // 1, 2, 3 ... per booking
    char status[STORE_STATUS_MAX];
    char at[STORE_TS_MAX];          // RFC3339 UTC with milliseconds
} booking_event_t;

typedef struct {
    const char *name;               // 1..100 characters
    const char *phone;              // E.164
    const char *email;              // NULL: none given (a stored email is kept)
    const char *plan;               // free_trial | standard | extended | premium
    const char *message;            // NULL or at most 500 characters
    const char *payment_method;     // stripe | cryptomus; ignored (stored as none) for free_trial
    const char *scheduled_for;      // NULL or RFC3339; validated (future, <= 30 days) by the caller
    int max_retries;                // scheduler.max_retries, stored on the free trial's queue row
} booking_new_t;

typedef struct {
    char id[STORE_UUID_LEN];
    char user_id[STORE_UUID_LEN];
    char status[STORE_STATUS_MAX];  // queued (free_trial) or pending (paid plans)
    int seq;                        // 1
    char created_at[STORE_TS_MAX];
    char plan[STORE_KEY_MAX];
    int64_t price_cents;
    char currency[STORE_CURRENCY_MAX];
    int duration_seconds;
    char payment_method[STORE_KEY_MAX];   // stripe | cryptomus | none
} booking_created_t;

// One transaction: upserts the user by phone (name and email updated), then
//   free_trial: locks the user row; refuses when the phone had a free trial in the last 24 hours
//     (so of any number of simultaneous requests for one phone exactly one wins); records the trial,
//     inserts the booking as `queued` and its call_queue row (priority of the plan, first attempt at
//     scheduled_for or now);
//   paid plans: inserts the booking as `pending` and its payments row (provider = payment_method,
//     amount and currency of the plan, status pending).
// STORE_OK; STORE_ERR_COOLDOWN with *retry_after_s (may be NULL) in 1..86400; STORE_ERR_INVALID
// for a value the schema refuses (phone, name, email, message length, scheduled_for text, unknown
// plan or payment method); STORE_ERR_DB.
int bookings_create(db_t *db, const booking_new_t *in, booking_created_t *out, int *retry_after_s);

typedef struct {
    const char *provider;           // stripe | cryptomus: must be the booking's payment provider
    const char *session_id;         // Stripe cs_..., or the Cryptomus order_id (<= 255 bytes)
    const char *invoice_uuid;       // Cryptomus invoice uuid; NULL for Stripe
    const char *checkout_url;       // where the customer pays
    int64_t expires_at;             // unix seconds; 0 when unknown
} booking_checkout_t;

// The checkout exists at the provider: pending -> pending_payment, and the payment row gets the
// provider ids, the URL and the expiry, in one transaction. *ev receives the status change; when the
// same session was already recorded (a retry) nothing changes and ev->seq is 0.
// STORE_OK; STORE_ERR_NOT_FOUND (no booking, or no payment: a free trial); STORE_ERR_CONFLICT (not
// pending, another provider, or another session already recorded; when the booking was cancelled
// meanwhile, the caller expires the checkout it just created); STORE_ERR_INVALID (an id longer
// than 255 bytes or missing); STORE_ERR_DB.
int bookings_checkout_created(db_t *db, const char *booking_id, const booking_checkout_t *co, booking_event_t *ev);

// The checkout could not be created (provider unreachable or refused): pending -> payment_failed,
// payment -> failed with `reason` (may be NULL; no personal data). Already payment_failed: STORE_OK
// with ev->seq 0. STORE_ERR_NOT_FOUND; STORE_ERR_CONFLICT (any other status); STORE_ERR_DB.
int bookings_checkout_failed(db_t *db, const char *booking_id, const char *reason, booking_event_t *ev);

typedef struct {
    char id[STORE_UUID_LEN];
    char user_id[STORE_UUID_LEN];
    char plan[STORE_KEY_MAX];
    char status[STORE_STATUS_MAX];
    int seq;                             // the latest status's seq
    char payment_method[STORE_KEY_MAX];  // stripe | cryptomus | none
    char created_at[STORE_TS_MAX];
    char updated_at[STORE_TS_MAX];
    char scheduled_for[STORE_TS_MAX];    // "" when not scheduled
    int64_t price_cents;                 // the plan's current price
    char currency[STORE_CURRENCY_MAX];
    int duration_seconds;
    int priority;
} booking_view_t;

// STORE_OK; STORE_ERR_NOT_FOUND; STORE_ERR_DB.
int bookings_get(db_t *db, const char *booking_id, booking_view_t *out);

// The status history with seq > after_seq, oldest first. *out is a malloc'ed array of *n entries
// (NULL when *n is 0) for the caller to free(). An unknown booking has no history: STORE_OK, *n 0.
int bookings_events(db_t *db, const char *booking_id, int after_seq, booking_event_t **out, size_t *n);

// A paid booking whose payment may need checking with the provider.
typedef struct {
    char booking_id[STORE_UUID_LEN];
    char status[STORE_STATUS_MAX];       // pending_payment, or pending (checkout never recorded)
    char provider[STORE_KEY_MAX];
    char session_id[STORE_REF_MAX];      // "" for pending
    char invoice_uuid[STORE_REF_MAX];
    char payment_intent[STORE_REF_MAX];
    int64_t amount_cents;
    char currency[STORE_CURRENCY_MAX];
    char created_at[STORE_TS_MAX];
    char expires_at[STORE_TS_MAX];       // checkout expiry, "" when unknown
    int64_t age_s;                       // seconds since the booking was created
} booking_unpaid_t;

// For reconciliation: bookings still pending_payment or pending, created more than older_than_s
// seconds ago and not returned by this function in the last older_than_s seconds, oldest check
// first, at most `limit`. The rows returned are stamped as checked (payments.checked_at) in the
// same statement, with SKIP LOCKED, so two daemons never check the same booking at once and a
// long backlog is worked through in turn. *out: malloc'ed array of *n (free()), NULL when empty.
// STORE_OK; STORE_ERR_DB.
int bookings_pending_payment_older_than(db_t *db, int older_than_s, int limit, booking_unpaid_t **out, size_t *n);

typedef struct {
    char booking_id[STORE_UUID_LEN];
    char previous_status[STORE_STATUS_MAX];   // "cancelled" when it already was
    bool already_cancelled;                   // nothing changed (a repeated cancel)
    booking_event_t event;                    // the change to cancelled; seq 0 when already cancelled
    bool has_payment;                         // false for a free trial
    char provider[STORE_KEY_MAX];
    char payment_status[STORE_STATUS_MAX];    // after the cancel (payment_status enum)
    bool refund_needed;                       // money was taken and not yet refunded (payment `paid`)
    bool expire_checkout;                     // an unpaid checkout may still be open at the provider
    char session_id[STORE_REF_MAX];
    char invoice_uuid[STORE_REF_MAX];
    char payment_intent[STORE_REF_MAX];
} booking_cancel_t;

// POST /api/bookings/{id}/cancel, one transaction: while pending, pending_payment, confirmed or
// queued -> cancelled; its call_queue row (if any, and not yet done) -> cancelled; an unpaid payment
// -> cancelled. A paid payment stays `paid` and refund_needed is set: the caller refunds
// (payments_refund_begin). Already cancelled: STORE_OK with already_cancelled (refund state in
// payment_status). STORE_ERR_TOO_LATE from initiating on and for completed, failed and
// payment_failed; STORE_ERR_NOT_FOUND; STORE_ERR_DB.
int bookings_cancel(db_t *db, const char *booking_id, booking_cancel_t *out);

#endif
