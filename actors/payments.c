// actors/payments.c — the payments actor: serves the booking API's requests (create, read,
// cancel, plans), creates checkouts with Stripe and Cryptomus, applies verified provider webhooks,
// reconciles bookings whose webhook never came, and issues refunds.
//
// Owns: its PostgreSQL connection, its outbound HTTP client (libcurl multi on this actor's zloop)
// and the provider clients. Talks to: the http actor (requests arrive in our inbox, answers go to
// its inbox as http.reply), and everyone else through published events (booking.created,
// booking.status, payment.checkout_created, payment.event, queue.enqueued).
//
// Every state change is committed in PostgreSQL first (storage/ does each in one transaction);
// events are published after the commit. A lost message or a crash may delay work (the
// reconciliation sweep and the refund sweep pick it up again) but never does it twice: checkouts
// and refunds carry idempotency keys derived from the booking id, webhooks are deduplicated by
// event id in the same transaction that applies them.
#include "actors/payments.h"

#include <jansson.h>
#include <string.h>
#include <time.h>

#include "actors/cryptomus_client.h"
#include "actors/httpc.h"
#include "actors/stripe_client.h"
#include "common/token.h"
#include "common/util.h"
#include "realtime/api_error.h"
#include "storage/bookings.h"
#include "storage/idempotency.h"
#include "storage/payments.h"
#include "storage/plans.h"

#define PAYMENTS_TIMER_MS 1000
#define PENDING_CHECKOUT_ABANDON_S 600   // a `pending` booking older than this lost its request
#define RECONCILE_BATCH 20
#define PURGE_EVERY_MS (3600 * 1000)
#define WEBHOOK_EVENTS_KEEP_S (30 * 86400)
#define PROVIDER_TIMEOUT_MS 8000

typedef struct {
    actor_ctx_t *ctx;
    httpc_t *http;
    stripe_client_t *stripe;          // NULL when Stripe is not configured
    cryptomus_client_t *cryptomus;    // NULL when Cryptomus is not configured
    token_signer_t *signer;           // security.token_secret keyed once: issues every status token
    int64_t next_reconcile_ms;
    int64_t next_purge_ms;
} payments_t;

// ---- answering the http actor ----------------------------------------------------------------

// Takes ownership of `body`.
static void reply_json(payments_t *self, int64_t request_id, int status, const char *outcome, json_t *body) {
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    if (!text) {
        actor_reply(self->ctx, request_id, 500, outcome, "{\"error\":{\"code\":\"internal\",\"message\":\"out of memory\"}}");
        return;
    }
    actor_reply(self->ctx, request_id, status, outcome, text);
    free(text);
}

static char *error_text(int status, const char *code, const char *message, const json_t *extra) {
    api_error_t e;
    api_error_set(&e, status, code, NULL, message);
    return extra ? api_error_json_extra(&e, extra) : api_error_json(&e);
}

static void reply_error(payments_t *self, int64_t request_id, int status, const char *code, const char *message) {
    char *text = error_text(status, code, message, NULL);
    actor_reply(self->ctx, request_id, status, "", text ? text : "{}");
    free(text);
}

static void reply_unavailable(payments_t *self, int64_t request_id) {
    reply_error(self, request_id, 503, "unavailable", "the service is temporarily unavailable, try again");
}

// ---- publishing ---------------------------------------------------------------------------------

static void publish_enqueued(payments_t *self, const char *booking_id, const char *plan) {
    bus_msg_t msg;
    bus_msg_init(&msg, BUS_QUEUE_ENQUEUED);
    snprintf(msg.u.queue_enqueued.booking_id, sizeof msg.u.queue_enqueued.booking_id, "%s", booking_id);
    snprintf(msg.u.queue_enqueued.plan, sizeof msg.u.queue_enqueued.plan, "%s", plan ? plan : "");
    actor_publish(self->ctx, &msg);
}

// ---- plans ----------------------------------------------------------------------------------------

static void on_plans_get(payments_t *self, const bus_plans_get_t *req) {
    plan_t *plans = NULL;
    size_t n = 0;
    if (plans_list(self->ctx->db, &plans, &n) != 0) {
        reply_unavailable(self, req->request_id);
        return;
    }
    json_t *list = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(list, json_pack("{s:s, s:s, s:I, s:s, s:i}", "key", plans[i].key, "name",
                                              plans[i].name ? plans[i].name : plans[i].key, "price_cents",
                                              (json_int_t)plans[i].price_cents, "currency", plans[i].currency,
                                              "duration_seconds", plans[i].duration_seconds));
    plans_free(&plans, n);
    reply_json(self, req->request_id, 200, "", json_pack("{s:o}", "plans", list));
}

// ---- creating a booking -----------------------------------------------------------------------------

// A booking request that waits for its provider's checkout.
typedef struct {
    payments_t *self;
    int64_t request_id;
    char idem_key[256];
    booking_created_t created;
} create_job_t;

// Sends the answer and, with an Idempotency-Key, stores it so a retry gets the same bytes.
static void finish_create(payments_t *self, int64_t request_id, const char *idem_key, int status, const char *body,
                          const char *booking_id) {
    if (idem_key && *idem_key) {
        if (status >= 500 && status != 502)
            idem_abort(self->ctx->db, idem_key);   // not an answer to replay: let the retry run again
        else if (idem_finish(self->ctx->db, idem_key, status, body, strlen(body), booking_id) != 0)
            log_warn(&self->ctx->log, "idempotency_finish_failed", "request_id=%lld", (long long)request_id);
    }
    actor_reply(self->ctx, request_id, status, "", body);
}

static int issue_token(payments_t *self, const char *booking_id, char *token, size_t size) {
    return token_signer_issue(self->signer, booking_id, (int64_t)time(NULL), self->ctx->cfg->security_token_ttl_s,
                              token, size);
}

// 201 for a created booking: status_token always, checkout_url for paid plans.
static void answer_created(payments_t *self, int64_t request_id, const char *idem_key, const char *booking_id,
                           const char *status, const char *checkout_url) {
    char token[1024];
    if (issue_token(self, booking_id, token, sizeof token) != 0) {
        char *err = error_text(500, "internal", "could not issue a status token", NULL);
        finish_create(self, request_id, idem_key, 500, err ? err : "{}", booking_id);
        free(err);
        return;
    }
    json_t *body = json_pack("{s:s, s:s, s:s}", "booking_id", booking_id, "status", status, "status_token", token);
    if (checkout_url) json_object_set_new(body, "checkout_url", json_string(checkout_url));
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    finish_create(self, request_id, idem_key, 201, text ? text : "{}", booking_id);
    free(text);
}

static void checkout_failed(create_job_t *job, const char *reason) {
    payments_t *self = job->self;
    booking_event_t ev = {0};
    if (bookings_checkout_failed(self->ctx->db, job->created.id, reason, &ev) == STORE_OK)
        actor_publish_status(self->ctx, job->created.id, &ev);
    log_warn(&self->ctx->log, "checkout_failed", "booking=%s provider=%s reason=%s", job->created.id,
             job->created.payment_method, reason);
    char *err = error_text(502, "provider_unavailable", "the payment provider could not be reached, try again later",
                           NULL);
    finish_create(self, job->request_id, job->idem_key, 502, err ? err : "{}", job->created.id);
    free(err);
}

static void checkout_created(create_job_t *job, const booking_checkout_t *co, const char *checkout_id) {
    payments_t *self = job->self;
    booking_event_t ev = {0};
    int rc = bookings_checkout_created(self->ctx->db, job->created.id, co, &ev);
    if (rc != STORE_OK) {
        // The booking moved meanwhile (cancelled) or the database is down: never leave a half-made
        // booking behind. The reconciliation sweep settles a `pending` booking we could not mark.
        log_warn(&self->ctx->log, "checkout_record_failed", "booking=%s rc=%s", job->created.id, store_err_name(rc));
        if (rc == STORE_ERR_DB) {
            finish_create(self, job->request_id, job->idem_key, 503,
                          "{\"error\":{\"code\":\"unavailable\",\"message\":\"the service is temporarily unavailable, try again\"}}",
                          job->created.id);
            return;
        }
        checkout_failed(job, "checkout_not_recorded");
        return;
    }
    actor_publish_status(self->ctx, job->created.id, &ev);
    bus_msg_t msg;
    bus_msg_init(&msg, BUS_PAYMENT_CHECKOUT_CREATED);
    bus_payment_checkout_created_t *c = &msg.u.payment_checkout_created;
    snprintf(c->booking_id, sizeof c->booking_id, "%s", job->created.id);
    snprintf(c->provider, sizeof c->provider, "%s", co->provider);
    snprintf(c->checkout_id, sizeof c->checkout_id, "%s", checkout_id);
    c->amount_cents = job->created.price_cents;
    snprintf(c->currency, sizeof c->currency, "%s", job->created.currency);
    actor_publish(self->ctx, &msg);
    answer_created(self, job->request_id, job->idem_key, job->created.id, "pending_payment", co->checkout_url);
}

static void on_stripe_checkout(void *arg, const stripe_outcome_t *outcome, const stripe_session_t *session) {
    create_job_t *job = arg;
    if (outcome->kind == PROVIDER_OK && session && session->id[0] && session->url[0]) {
        booking_checkout_t co = {.provider = "stripe", .session_id = session->id, .checkout_url = session->url,
                                 .expires_at = session->expires_at};
        checkout_created(job, &co, session->id);
    } else {
        checkout_failed(job, provider_outcome_name(outcome->kind));
    }
    free(job);
}

static void on_cryptomus_invoice(void *arg, const cryptomus_outcome_t *outcome, const cryptomus_payment_t *payment) {
    create_job_t *job = arg;
    if (outcome->kind == PROVIDER_OK && payment && payment->uuid[0] && payment->url[0]) {
        booking_checkout_t co = {.provider = "cryptomus", .session_id = job->created.id, .invoice_uuid = payment->uuid,
                                 .checkout_url = payment->url,
                                 .expires_at = payment->expired_at > 0 ? payment->expired_at : 0};
        checkout_created(job, &co, payment->uuid);
    } else {
        checkout_failed(job, provider_outcome_name(outcome->kind));
    }
    free(job);
}

// Starts the provider's checkout for a paid booking; the answer is sent when it completes.
static void start_checkout(payments_t *self, const bus_booking_create_t *req, const booking_created_t *created) {
    create_job_t *job = calloc(1, sizeof *job);
    if (!job) {
        reply_unavailable(self, req->request_id);
        return;
    }
    *job = (create_job_t){.self = self, .request_id = req->request_id, .created = *created};
    snprintf(job->idem_key, sizeof job->idem_key, "%s", req->idem_key);
    int rc = -1;
    if (strcmp(created->payment_method, "stripe") == 0 && self->stripe) {
        char product[64];
        snprintf(product, sizeof product, "AI phone call (%s)", created->plan);
        stripe_checkout_params_t p = {.booking_id = created->id, .amount_cents = created->price_cents,
                                      .currency = created->currency, .product_name = product,
                                      .customer_email = req->email[0] ? req->email : NULL};
        rc = stripe_checkout_create(self->stripe, &p, on_stripe_checkout, job);
    } else if (strcmp(created->payment_method, "cryptomus") == 0 && self->cryptomus) {
        cryptomus_invoice_params_t p = {.booking_id = created->id, .amount_cents = created->price_cents,
                                        .currency = created->currency};
        rc = cryptomus_invoice_create(self->cryptomus, &p, on_cryptomus_invoice, job);
    }
    if (rc != 0) {
        checkout_failed(job, self->stripe || self->cryptomus ? "request_refused" : "provider_not_configured");
        free(job);
    }
}

static void publish_created(payments_t *self, const booking_created_t *created, const char *phone) {
    bus_msg_t msg;
    bus_msg_init(&msg, BUS_BOOKING_CREATED);
    bus_booking_created_t *c = &msg.u.booking_created;
    snprintf(c->booking_id, sizeof c->booking_id, "%s", created->id);
    snprintf(c->plan, sizeof c->plan, "%s", created->plan);
    snprintf(c->status, sizeof c->status, "%s", created->status);
    snprintf(c->payment_method, sizeof c->payment_method, "%s", created->payment_method);
    snprintf(c->phone, sizeof c->phone, "%s", phone);
    actor_publish(self->ctx, &msg);
    booking_event_t first = {.seq = created->seq};
    snprintf(first.status, sizeof first.status, "%s", created->status);
    snprintf(first.at, sizeof first.at, "%s", created->created_at);
    actor_publish_status(self->ctx, created->id, &first);
}

// Answers a repeated Idempotency-Key without doing the work again. Returns true when answered.
static bool answer_from_idempotency(payments_t *self, const bus_booking_create_t *req) {
    if (!req->idem_key[0]) return false;
    idem_result_t r = {0};
    if (idem_begin(self->ctx->db, req->idem_key, req->request_hash, &r) != STORE_OK) {
        reply_unavailable(self, req->request_id);
        return true;
    }
    bool answered = true;
    switch (r.state) {
    case IDEM_NEW: answered = false; break;
    case IDEM_DONE: actor_reply(self->ctx, req->request_id, r.status, "", (const char *)r.body); break;
    case IDEM_IN_PROGRESS:
        reply_error(self, req->request_id, 409, "idempotency_in_progress",
                    "a request with this Idempotency-Key is still being processed");
        break;
    case IDEM_MISMATCH:
        reply_error(self, req->request_id, 422, "idempotency_key_reused",
                    "this Idempotency-Key was used with a different request");
        break;
    }
    idem_result_clear(&r);
    return answered;
}

static void on_booking_create(payments_t *self, const bus_booking_create_t *req) {
    if (answer_from_idempotency(self, req)) return;
    char scheduled[40] = "";
    if (req->scheduled_for > 0) util_rfc3339_ms(req->scheduled_for * 1000000, scheduled, sizeof scheduled);
    booking_new_t in = {.name = req->name, .phone = req->phone, .email = req->email[0] ? req->email : NULL,
                        .plan = req->plan, .message = req->message[0] ? req->message : NULL,
                        .payment_method = req->payment_method, .scheduled_for = scheduled[0] ? scheduled : NULL,
                        .max_retries = (int)self->ctx->cfg->scheduler_max_retries};
    booking_created_t created;
    int retry_after_s = 0;
    int rc = bookings_create(self->ctx->db, &in, &created, &retry_after_s);
    if (rc == STORE_ERR_COOLDOWN) {
        json_t *extra = json_pack("{s:i}", "retry_after_s", retry_after_s);
        char *text = error_text(409, "free_trial_cooldown", "this number had a free trial in the last 24 hours", extra);
        json_decref(extra);
        finish_create(self, req->request_id, req->idem_key, 409, text ? text : "{}", NULL);
        free(text);
        return;
    }
    if (rc != STORE_OK) {
        if (rc == STORE_ERR_INVALID) {
            char *text = error_text(400, "invalid_request", "the booking was refused as invalid", NULL);
            finish_create(self, req->request_id, req->idem_key, 400, text ? text : "{}", NULL);
            free(text);
        } else {
            if (req->idem_key[0]) idem_abort(self->ctx->db, req->idem_key);
            reply_unavailable(self, req->request_id);
        }
        return;
    }
    publish_created(self, &created, req->phone);
    log_info(&self->ctx->log, "booking_created", "booking=%s plan=%s status=%s", created.id, created.plan,
             created.status);
    if (strcmp(created.status, "queued") == 0) {
        publish_enqueued(self, created.id, created.plan);
        answer_created(self, req->request_id, req->idem_key, created.id, "queued", NULL);
    } else {
        start_checkout(self, req, &created);
    }
}

// ---- reading a booking ------------------------------------------------------------------------------

static json_t *events_json(const booking_event_t *events, size_t n) {
    json_t *list = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(list, json_pack("{s:i, s:s, s:s}", "seq", events[i].seq, "status", events[i].status,
                                              "at", events[i].at));
    return list;
}

static void on_booking_get(payments_t *self, const bus_booking_get_t *req) {
    booking_view_t view;
    int rc = bookings_get(self->ctx->db, req->booking_id, &view);
    if (rc == STORE_ERR_NOT_FOUND) {
        reply_error(self, req->request_id, 404, "not_found", "no such booking");
        return;
    }
    booking_event_t *events = NULL;
    size_t n = 0;
    if (rc != STORE_OK || bookings_events(self->ctx->db, req->booking_id, 0, &events, &n) != STORE_OK) {
        reply_unavailable(self, req->request_id);
        return;
    }
    json_t *body = json_pack("{s:s, s:s, s:s, s:s, s:o, s:o}", "booking_id", view.id, "status", view.status, "plan",
                             view.plan, "created_at", view.created_at, "scheduled_for",
                             view.scheduled_for[0] ? json_string(view.scheduled_for) : json_null(), "events",
                             events_json(events, n));
    free(events);
    reply_json(self, req->request_id, 200, "", body);
}

// ---- refunds -------------------------------------------------------------------------------------------

// A refund under way; `request_id` > 0 when a cancel request waits for its outcome.
typedef struct {
    payments_t *self;
    int64_t request_id;
    char booking_id[STORE_UUID_LEN];
} refund_job_t;

static void answer_cancel(payments_t *self, int64_t request_id, const char *booking_id, const char *refund) {
    if (request_id <= 0) return;
    reply_json(self, request_id, 200, "",
               json_pack("{s:s, s:s, s:s}", "booking_id", booking_id, "status", "cancelled", "refund", refund));
}

static void on_stripe_refund(void *arg, const stripe_outcome_t *outcome, const stripe_refund_t *refund) {
    refund_job_t *job = arg;
    payments_t *self = job->self;
    const char *answer = "pending";
    if (outcome->kind == PROVIDER_OK && refund) {
        bool done = strcmp(refund->status, "succeeded") == 0;
        bool failed = strcmp(refund->status, "failed") == 0 || strcmp(refund->status, "canceled") == 0;
        const char *status = done ? "refunded" : failed ? "refund_failed" : "refund_pending";
        if (payments_refund_result(self->ctx->db, job->booking_id, refund->id, status) != STORE_OK)
            log_warn(&self->ctx->log, "refund_record_failed", "booking=%s", job->booking_id);
        answer = done ? "succeeded" : "pending";
        log_info(&self->ctx->log, "refund_requested", "booking=%s refund_status=%s", job->booking_id, refund->status);
    } else {
        // Left in refund_pending: the refund sweep asks again (same Idempotency-Key).
        log_warn(&self->ctx->log, "refund_request_failed", "booking=%s outcome=%s", job->booking_id,
                 provider_outcome_name(outcome->kind));
    }
    answer_cancel(self, job->request_id, job->booking_id, answer);
    free(job);
}

static void refund_with_intent(refund_job_t *job, const char *payment_intent) {
    if (stripe_refund_create(job->self->stripe, payment_intent, job->booking_id, on_stripe_refund, job) != 0) {
        answer_cancel(job->self, job->request_id, job->booking_id, "pending");
        free(job);
    }
}

// Current API versions create sessions without a payment intent: learn it from the completed
// session before refunding (CONTRACT.md, provider notes).
static void on_session_for_refund(void *arg, const stripe_outcome_t *outcome, const stripe_session_t *session) {
    refund_job_t *job = arg;
    if (outcome->kind == PROVIDER_OK && session && session->payment_intent[0]) {
        payments_set_payment_intent(job->self->ctx->db, job->booking_id, session->payment_intent);
        refund_with_intent(job, session->payment_intent);
        return;
    }
    log_warn(&job->self->ctx->log, "refund_no_payment_intent", "booking=%s", job->booking_id);
    answer_cancel(job->self, job->request_id, job->booking_id, "pending");
    free(job);
}

// Refunds a paid booking in full. Answers request_id (if > 0) with the refund state.
static void start_refund(payments_t *self, const char *booking_id, int64_t request_id) {
    payment_refund_t r;
    int rc = payments_refund_begin(self->ctx->db, booking_id, &r);
    if (rc != STORE_OK) {
        log_warn(&self->ctx->log, "refund_begin_failed", "booking=%s rc=%s", booking_id, store_err_name(rc));
        answer_cancel(self, request_id, booking_id, rc == STORE_ERR_DB ? "pending" : "none");
        return;
    }
    if (strcmp(r.provider, "cryptomus") == 0 || !self->stripe) {
        // Cryptomus: no refund API we can rely on (providers.md); an operator refunds by hand.
        payments_mark_refund_required(self->ctx->db, booking_id);
        log_warn(&self->ctx->log, "refund_required", "booking=%s provider=%s", booking_id, r.provider);
        answer_cancel(self, request_id, booking_id, "required");
        return;
    }
    if (strcmp(r.payment_status, "refunded") == 0) {
        answer_cancel(self, request_id, booking_id, "succeeded");
        return;
    }
    if (strcmp(r.payment_status, "refund_pending") != 0) {
        answer_cancel(self, request_id, booking_id, "pending");
        return;
    }
    refund_job_t *job = calloc(1, sizeof *job);
    if (!job) {
        answer_cancel(self, request_id, booking_id, "pending");
        return;
    }
    *job = (refund_job_t){.self = self, .request_id = request_id};
    snprintf(job->booking_id, sizeof job->booking_id, "%s", booking_id);
    if (r.payment_intent[0])
        refund_with_intent(job, r.payment_intent);
    else if (stripe_session_retrieve(self->stripe, r.session_id, true, on_session_for_refund, job) != 0) {
        answer_cancel(self, request_id, booking_id, "pending");
        free(job);
    }
}

// ---- cancelling a booking -----------------------------------------------------------------------------

static void on_session_expired(void *arg, const stripe_outcome_t *outcome, const stripe_session_t *session) {
    // Fire and forget: an open session that cannot be expired expires by itself within 30 minutes,
    // and money that arrives for a cancelled booking is refunded.
    (void)arg;
    (void)outcome;
    (void)session;
}

static const char *refund_state_of(const char *payment_status) {
    if (strcmp(payment_status, "refunded") == 0) return "succeeded";
    if (strcmp(payment_status, "refund_pending") == 0 || strcmp(payment_status, "refund_failed") == 0) return "pending";
    if (strcmp(payment_status, "refund_required") == 0) return "required";
    return "none";
}

static void on_booking_cancel(payments_t *self, const bus_booking_cancel_t *req) {
    booking_cancel_t c;
    int rc = bookings_cancel(self->ctx->db, req->booking_id, &c);
    if (rc == STORE_ERR_NOT_FOUND) {
        reply_error(self, req->request_id, 404, "not_found", "no such booking");
        return;
    }
    if (rc == STORE_ERR_TOO_LATE) {
        reply_error(self, req->request_id, 409, "too_late", "the call is already being placed or the booking is over");
        return;
    }
    if (rc != STORE_OK) {
        reply_unavailable(self, req->request_id);
        return;
    }
    if (c.already_cancelled) {
        answer_cancel(self, req->request_id, req->booking_id, refund_state_of(c.payment_status));
        return;
    }
    actor_publish_status(self->ctx, req->booking_id, &c.event);
    log_info(&self->ctx->log, "booking_cancelled", "booking=%s previous=%s", req->booking_id, c.previous_status);
    if (c.expire_checkout && strcmp(c.provider, "stripe") == 0 && self->stripe && c.session_id[0])
        stripe_session_expire(self->stripe, c.session_id, on_session_expired, NULL);
    if (c.refund_needed)
        start_refund(self, req->booking_id, req->request_id);
    else
        answer_cancel(self, req->request_id, req->booking_id, "none");
}

// ---- provider events (webhooks and reconciliation) ----------------------------------------------------

typedef enum { EVENT_PAID, EVENT_FAILED, EVENT_EXPIRED, EVENT_REFUND, EVENT_INFO } event_kind_t;

static event_kind_t stripe_event_kind(const char *type, const char *payment_status) {
    if (strcmp(type, "checkout.session.completed") == 0)
        return strcmp(payment_status, "paid") == 0 ? EVENT_PAID : EVENT_INFO;
    if (strcmp(type, "checkout.session.async_payment_succeeded") == 0) return EVENT_PAID;
    if (strcmp(type, "checkout.session.async_payment_failed") == 0) return EVENT_FAILED;
    if (strcmp(type, "checkout.session.expired") == 0) return EVENT_EXPIRED;
    if (strcmp(type, "charge.refunded") == 0 || strncmp(type, "refund.", 7) == 0) return EVENT_REFUND;
    return EVENT_INFO;
}

static event_kind_t cryptomus_event_kind(const char *status) {
    if (strcmp(status, "paid") == 0 || strcmp(status, "paid_over") == 0) return EVENT_PAID;
    if (strcmp(status, "fail") == 0 || strcmp(status, "system_fail") == 0 || strcmp(status, "wrong_amount") == 0)
        return EVENT_FAILED;
    if (strcmp(status, "cancel") == 0) return EVENT_EXPIRED;
    return EVENT_INFO;
}

static int apply_event(payments_t *self, event_kind_t kind, const payment_event_t *ev, int64_t amount_cents,
                       const char *currency, payment_result_t *out) {
    db_t *db = self->ctx->db;
    switch (kind) {
    case EVENT_PAID:
        return payments_apply_paid(db, ev, amount_cents, currency, (int)self->ctx->cfg->scheduler_max_retries, out);
    case EVENT_FAILED: return payments_apply_failed(db, ev, ev->provider_status, out);
    case EVENT_EXPIRED: return payments_apply_expired(db, ev, out);
    default: return payments_apply_info(db, ev, out);
    }
}

// What follows a committed event: publish its status changes, queue, refund if money came late.
static void after_event(payments_t *self, const payment_event_t *ev, const payment_result_t *res) {
    for (size_t i = 0; i < res->nevents; i++) actor_publish_status(self->ctx, res->booking_id, &res->events[i]);
    if (res->enqueued) publish_enqueued(self, res->booking_id, NULL);
    bus_msg_t msg;
    bus_msg_init(&msg, BUS_PAYMENT_EVENT);
    bus_payment_event_t *p = &msg.u.payment_event;
    snprintf(p->booking_id, sizeof p->booking_id, "%s", res->booking_id);
    snprintf(p->provider, sizeof p->provider, "%s", ev->provider);
    snprintf(p->event_id, sizeof p->event_id, "%s", ev->event_id);
    snprintf(p->event_type, sizeof p->event_type, "%s", ev->event_type);
    snprintf(p->outcome, sizeof p->outcome, "%s", payment_outcome_name(res->outcome));
    actor_publish(self->ctx, &msg);
    log_info(&self->ctx->log, "payment_event", "provider=%s type=%s booking=%s outcome=%s", ev->provider,
             ev->event_type, res->booking_id[0] ? res->booking_id : "-", payment_outcome_name(res->outcome));
    if (res->outcome == PAYMENT_REFUND_NEEDED) start_refund(self, res->booking_id, 0);
}

// A refund notice from Stripe: record what it says about the refund's final state.
static void record_refund_notice(payments_t *self, const bus_payment_webhook_t *w) {
    if (!w->payment_intent[0]) return;
    payment_t p = {0};
    if (payments_find_by_payment_intent(self->ctx->db, w->payment_intent, &p) != STORE_OK) return;
    const char *status = NULL;
    if (strcmp(w->event_type, "charge.refunded") == 0 || strcmp(w->status, "succeeded") == 0)
        status = "refunded";
    else if (strcmp(w->status, "failed") == 0 || strcmp(w->status, "canceled") == 0)
        status = "refund_failed";
    if (status) payments_refund_result(self->ctx->db, p.booking_id, w->refund_id[0] ? w->refund_id : NULL, status);
    payment_clear(&p);
}

static void on_payment_webhook(payments_t *self, const bus_payment_webhook_t *w) {
    bool stripe = strcmp(w->provider, "stripe") == 0;
    event_kind_t kind = stripe ? stripe_event_kind(w->event_type, w->payment_status) : cryptomus_event_kind(w->status);
    payment_event_t ev = {.provider = w->provider, .event_id = w->event_id, .event_type = w->event_type,
                          .provider_status = w->status[0] ? w->status : NULL,
                          .booking_id = w->booking_id[0] ? w->booking_id : NULL,
                          .session_id = stripe ? (strncmp(w->object_id, "cs_", 3) == 0 ? w->object_id : NULL)
                                               : (w->order_id[0] ? w->order_id : NULL),
                          .invoice_uuid = !stripe && w->object_id[0] ? w->object_id : NULL,
                          .payment_intent = w->payment_intent[0] ? w->payment_intent : NULL};
    payment_result_t res;
    int rc = apply_event(self, kind, &ev, w->amount_cents > 0 ? w->amount_cents : -1,
                         w->currency[0] ? w->currency : NULL, &res);
    if (rc != STORE_OK) {
        // Not stored: answer non-2xx so the provider delivers it again.
        log_warn(&self->ctx->log, "webhook_not_stored", "provider=%s rc=%s", w->provider, store_err_name(rc));
        if (rc == STORE_ERR_INVALID)
            reply_error(self, w->request_id, 400, "invalid_payload", "the event could not be recorded");
        else
            reply_unavailable(self, w->request_id);
        return;
    }
    if (kind == EVENT_REFUND && res.outcome != PAYMENT_DUPLICATE) record_refund_notice(self, w);
    actor_reply(self->ctx, w->request_id, 200, payment_outcome_metric(res.outcome), "{\"received\":true}");
    after_event(self, &ev, &res);
}

// ---- reconciliation: bookings whose webhook never came -------------------------------------------------

typedef struct {
    payments_t *self;
    booking_unpaid_t unpaid;
} reconcile_job_t;

static void reconcile_apply(payments_t *self, const booking_unpaid_t *u, event_kind_t kind, const char *object,
                            const char *status, const char *payment_intent, const char *invoice_uuid) {
    if (kind == EVENT_INFO) return;
    char event_id[300];
    snprintf(event_id, sizeof event_id, "reconcile:%s:%s", object, status);
    payment_event_t ev = {.provider = u->provider, .event_id = event_id, .event_type = "reconcile",
                          .provider_status = status, .booking_id = u->booking_id,
                          .session_id = u->session_id[0] ? u->session_id : NULL,
                          .invoice_uuid = invoice_uuid && *invoice_uuid ? invoice_uuid : NULL,
                          .payment_intent = payment_intent && *payment_intent ? payment_intent : NULL};
    payment_result_t res;
    if (apply_event(self, kind, &ev, -1, NULL, &res) == STORE_OK) after_event(self, &ev, &res);
}

static void on_reconcile_session(void *arg, const stripe_outcome_t *outcome, const stripe_session_t *session) {
    reconcile_job_t *job = arg;
    if (outcome->kind == PROVIDER_OK && session) {
        event_kind_t kind = EVENT_INFO;
        const char *status = session->status;
        if (strcmp(session->payment_status, "paid") == 0) {
            kind = EVENT_PAID;
            status = "paid";
        } else if (strcmp(session->status, "expired") == 0) {
            kind = EVENT_EXPIRED;
        }
        reconcile_apply(job->self, &job->unpaid, kind, session->id, status, session->payment_intent, NULL);
    }
    free(job);
}

static void on_reconcile_invoice(void *arg, const cryptomus_outcome_t *outcome, const cryptomus_payment_t *payment) {
    reconcile_job_t *job = arg;
    if (outcome->kind == PROVIDER_OK && payment)
        reconcile_apply(job->self, &job->unpaid, cryptomus_event_kind(payment->status), payment->uuid, payment->status,
                        NULL, payment->uuid);
    free(job);
}

static void reconcile_one(payments_t *self, const booking_unpaid_t *u) {
    if (strcmp(u->status, "pending") == 0) {
        // The request that was creating its checkout never finished (a crash): the customer never
        // got a checkout URL, so nobody can pay it.
        if (u->age_s < PENDING_CHECKOUT_ABANDON_S) return;
        booking_event_t ev = {0};
        if (bookings_checkout_failed(self->ctx->db, u->booking_id, "checkout_abandoned", &ev) == STORE_OK)
            actor_publish_status(self->ctx, u->booking_id, &ev);
        return;
    }
    reconcile_job_t *job = calloc(1, sizeof *job);
    if (!job) return;
    *job = (reconcile_job_t){.self = self, .unpaid = *u};
    int rc = -1;
    if (strcmp(u->provider, "stripe") == 0 && self->stripe && u->session_id[0])
        rc = stripe_session_retrieve(self->stripe, u->session_id, false, on_reconcile_session, job);
    else if (strcmp(u->provider, "cryptomus") == 0 && self->cryptomus)
        rc = cryptomus_payment_info(self->cryptomus, u->booking_id, on_reconcile_invoice, job);
    if (rc != 0) free(job);
}

static void reconcile(payments_t *self) {
    booking_unpaid_t *unpaid = NULL;
    size_t n = 0;
    if (bookings_pending_payment_older_than(self->ctx->db, (int)self->ctx->cfg->payments_reconcile_after_s,
                                            RECONCILE_BATCH, &unpaid, &n) == STORE_OK) {
        for (size_t i = 0; i < n; i++) reconcile_one(self, &unpaid[i]);
        free(unpaid);
    }
    payment_refund_t *due = NULL;
    if (payments_refunds_due(self->ctx->db, RECONCILE_BATCH, &due, &n) == STORE_OK) {
        for (size_t i = 0; i < n; i++) start_refund(self, due[i].booking_id, 0);
        free(due);
    }
}

static void purge(payments_t *self) {
    int64_t deleted = 0;
    idem_purge(self->ctx->db, IDEM_TTL_S, &deleted);
    webhook_events_purge(self->ctx->db, WEBHOOK_EVENTS_KEEP_S, &deleted);
}

// ---- the actor ---------------------------------------------------------------------------------------------

static int payments_on_timer(actor_ctx_t *ctx, void *state) {
    payments_t *self = state;
    int64_t now = util_monotonic_ms();
    if (db_ensure(ctx->db) != 0) return 0;
    if (now >= self->next_reconcile_ms) {
        self->next_reconcile_ms = now + ctx->cfg->payments_reconcile_every_s * 1000;
        reconcile(self);
    }
    if (now >= self->next_purge_ms) {
        self->next_purge_ms = now + PURGE_EVERY_MS;
        purge(self);
    }
    return 0;
}

static int payments_on_command(actor_ctx_t *ctx, void *state, const bus_msg_t *msg) {
    payments_t *self = state;
    switch (msg->type) {
    case BUS_PLANS_GET: on_plans_get(self, &msg->u.plans_get); break;
    case BUS_BOOKING_CREATE: on_booking_create(self, &msg->u.booking_create); break;
    case BUS_BOOKING_GET: on_booking_get(self, &msg->u.booking_get); break;
    case BUS_BOOKING_CANCEL: on_booking_cancel(self, &msg->u.booking_cancel); break;
    case BUS_PAYMENT_WEBHOOK: on_payment_webhook(self, &msg->u.payment_webhook); break;
    default: log_debug(&ctx->log, "unexpected_command", "topic=%s", bus_type_topic(msg->type)); break;
    }
    return 0;
}

static int payments_create(actor_ctx_t *ctx, void **state) {
    payments_t *self = calloc(1, sizeof *self);
    if (!self) return -1;
    self->ctx = ctx;
    self->http = httpc_new(ctx->loop, &ctx->log);
    if (!self->http) {
        free(self);
        return -1;
    }
    const config_t *cfg = ctx->cfg;
    const char *secrets[] = {cfg->security_token_secret ? cfg->security_token_secret : "", NULL};
    self->signer = token_signer_new(secrets);
    if (!self->signer) {
        httpc_destroy(&self->http);
        free(self);
        return -1;
    }
    if (cfg->stripe_secret_key) {
        stripe_config_t sc = {.api_base = cfg->stripe_api_base, .secret_key = cfg->stripe_secret_key,
                              .public_url = cfg->http_public_url, .timeout_ms = PROVIDER_TIMEOUT_MS};
        self->stripe = stripe_client_new(self->http, &sc, &ctx->log);
    }
    if (cfg->cryptomus_merchant && cfg->cryptomus_payment_key) {
        cryptomus_config_t cc = {.api_base = cfg->cryptomus_api_base, .merchant = cfg->cryptomus_merchant,
                                 .payment_key = cfg->cryptomus_payment_key, .public_url = cfg->http_public_url,
                                 .timeout_ms = PROVIDER_TIMEOUT_MS};
        self->cryptomus = cryptomus_client_new(self->http, &cc, &ctx->log);
    }
    log_info(&ctx->log, "providers", "stripe=%s cryptomus=%s", self->stripe ? "on" : "off",
             self->cryptomus ? "on" : "off");
    *state = self;
    return 0;
}

static void payments_destroy(actor_ctx_t *ctx, void **state) {
    payments_t *self = *state;
    if (!self) return;
    // In-flight provider calls complete (cancelled) inside httpc_destroy and free their jobs;
    // their database work is picked up again by reconciliation after a restart.
    stripe_client_destroy(&self->stripe);
    cryptomus_client_destroy(&self->cryptomus);
    httpc_destroy(&self->http);
    token_signer_destroy(&self->signer);
    free(self);
    *state = NULL;
}

const actor_spec_t payments_actor_spec = {
    .name = "payments",
    .needs_db = true,
    .timer_ms = PAYMENTS_TIMER_MS,
    .create = payments_create,
    .destroy = payments_destroy,
    .on_command = payments_on_command,
    .on_timer = payments_on_timer,
};
