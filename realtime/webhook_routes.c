// realtime/webhook_routes.c — POST /webhooks/stripe and POST /webhooks/cryptomus: rate limit,
// signature over the raw body (webhook_verify.h), parse (webhook_parse.h), then PAYMENT_WEBHOOK
// to the payments actor, whose answer is passed through. POST /webhooks/vapi the same way, with
// VAPI's secret header (and HMAC signature when configured), VAPI_WEBHOOK and the dialer.
//
// Nothing is believed before the signature checks out, and nothing reaches payments unless it did.
// The answer is 2xx only when payments says so, that is after it stored the event: anything else
// (payments unreachable, slow, failing) is non-2xx, so the provider delivers the event again.
// A request refused here is counted in sweety_webhooks_total under bad_signature (also a stale
// timestamp), rate_limited or invalid_payload (verified but unreadable); the outcome of the others
// comes with payments' answer (http.c).
//
// Event fields that do not fit their bus field are sent as absent, as webhook_parse does for its
// own buffers (never cut: a cut id would name something else) — except the event id, type and
// object id, without which the event cannot be recorded: those make the request invalid_payload.
//
// VAPI sends many kinds of server messages (providers.md §2.6). Only status-update,
// end-of-call-report and hang go to the dialer; every other verified message is answered 200 {}
// at once and counted `ignored`. That includes the ones that expect an answer (assistant-request,
// tool-calls, transfer-destination-request, knowledge-base-request): our assistants, tools and
// transfers are configured at VAPI, and we ask for only those three types in serverMessages, so
// such a message reaching us is a misconfiguration that an empty answer makes harmless. A VAPI
// request that fails its secret or signature is 401 bad_secret (CONTRACT.md), counted
// bad_signature like the others.
//
// Rotation: each provider's secret may have a `_previous` value (conf/sweetyd.conf); a request
// signed with either is accepted, both are always checked (webhook_verify.h, *_any), and
// sweety_secret_matches_total{key,which} tells which one it was.
//
// Runs on the HTTP actor's service thread (http_internal.h).
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "realtime/http_internal.h"
#include "realtime/webhook_parse.h"
#include "realtime/webhook_verify.h"

// Copies src into dst[size] when it fits; otherwise dst is "" and false is returned.
static bool fit(char *dst, size_t size, const char *src) {
    size_t n = strlen(src);
    if (n >= size) {
        dst[0] = '\0';
        return false;
    }
    memcpy(dst, src, n + 1);
    return true;
}
#define FIT(dst, src) fit((dst), sizeof(dst), (src))

static bool limited(http_t *self, struct lws *wsi, session_t *s, webhook_provider_t provider) {
    if (http_rate_allow(self, self->rl_webhook[provider], wsi, self->cfg->http_webhook_rate_per_min)) return false;
    http_count_webhook(self, provider, OUTCOME_RATE_LIMITED);
    http_respond_error(s, 429, "rate_limited", "too many webhook requests from this address", NULL);
    return true;
}

static void not_configured(http_t *self, session_t *s, webhook_provider_t provider) {
    http_count_webhook(self, provider, OUTCOME_UNAVAILABLE);
    http_respond_error(s, 503, "unavailable", "this webhook is not configured", NULL);
}

static void bad_signature(http_t *self, session_t *s, webhook_provider_t provider, bool stale) {
    http_count_webhook(self, provider, OUTCOME_BAD_SIGNATURE);
    if (stale) http_respond_error(s, 400, "stale_timestamp", "the signature timestamp is outside the tolerance", NULL);
    else http_respond_error(s, 400, "bad_signature", "the signature does not match", NULL);
}

static void invalid_payload(http_t *self, session_t *s, webhook_provider_t provider, const char *field) {
    http_count_webhook(self, provider, OUTCOME_INVALID_PAYLOAD);
    http_respond_error(s, 400, "invalid_payload", "the event could not be read", field);
}

void route_webhook_stripe(http_t *self, struct lws *wsi, session_t *s) {
    const config_t *cfg = self->cfg;
    if (limited(self, wsi, s, PROVIDER_STRIPE)) return;
    if (!cfg->stripe_webhook_secret || !*cfg->stripe_webhook_secret) {
        not_configured(self, s, PROVIDER_STRIPE);
        return;
    }
    const char *body = s->body ? s->body : "";
    const char *const secrets[] = {cfg->stripe_webhook_secret, cfg->stripe_webhook_secret_previous, NULL};
    int matched = -1;
    int rc = stripe_signature_verify_any(s->stripe_signature, body, s->body_len, secrets, (int64_t)time(NULL),
                                         cfg->stripe_tolerance_s, &matched);
    if (rc != WEBHOOK_OK) {
        bad_signature(self, s, PROVIDER_STRIPE, rc == WEBHOOK_STALE_TIMESTAMP);
        return;
    }
    http_count_secret(self, SECRET_STRIPE_WEBHOOK, matched);
    stripe_event_t ev;
    api_error_t err;
    if (stripe_event_parse(body, s->body_len, &ev, &err) != 0) {
        invalid_payload(self, s, PROVIDER_STRIPE, err.field);
        return;
    }

    bus_msg_t msg;
    bus_msg_init(&msg, BUS_PAYMENT_WEBHOOK);
    bus_payment_webhook_t *w = &msg.u.payment_webhook;
    FIT(w->provider, "stripe");
    const char *unusable = !FIT(w->event_id, ev.id)            ? "id"
                           : !FIT(w->event_type, ev.type)        ? "type"
                           : !FIT(w->object_id, ev.object_id)    ? "data.object.id"
                                                                 : NULL;
    if (unusable) {
        invalid_payload(self, s, PROVIDER_STRIPE, unusable);
        return;
    }
    // the booking: client_reference_id, else metadata.booking_id
    if (!ev.client_reference_id[0] || !FIT(w->booking_id, ev.client_reference_id)) FIT(w->booking_id, ev.booking_id);
    FIT(w->payment_status, ev.payment_status);
    FIT(w->status, ev.status);
    FIT(w->payment_intent, ev.payment_intent);
    if (ev.has_amount_total) w->amount_cents = ev.amount_total;
    else if (ev.has_amount_refunded) w->amount_cents = ev.amount_refunded;
    FIT(w->currency, ev.currency);
    if (ev.kind == STRIPE_KIND_REFUND) FIT(w->refund_id, ev.object_id);
    http_forward(self, wsi, s, &msg, PENDING_WEBHOOK_BASE + PROVIDER_STRIPE);
}

void route_webhook_cryptomus(http_t *self, struct lws *wsi, session_t *s) {
    const config_t *cfg = self->cfg;
    if (limited(self, wsi, s, PROVIDER_CRYPTOMUS)) return;
    if (!cfg->cryptomus_payment_key || !*cfg->cryptomus_payment_key) {
        not_configured(self, s, PROVIDER_CRYPTOMUS);
        return;
    }
    const char *body = s->body ? s->body : "";
    const char *const keys[] = {cfg->cryptomus_payment_key, cfg->cryptomus_payment_key_previous, NULL};
    int matched = -1;
    if (cryptomus_signature_verify_any(body, s->body_len, keys, &matched) != WEBHOOK_OK) {
        bad_signature(self, s, PROVIDER_CRYPTOMUS, false);
        return;
    }
    http_count_secret(self, SECRET_CRYPTOMUS_PAYMENT, matched);
    cryptomus_event_t ev;
    api_error_t err;
    if (cryptomus_event_parse(body, s->body_len, &ev, &err) != 0) {
        invalid_payload(self, s, PROVIDER_CRYPTOMUS, err.field);
        return;
    }

    bus_msg_t msg;
    bus_msg_init(&msg, BUS_PAYMENT_WEBHOOK);
    bus_payment_webhook_t *w = &msg.u.payment_webhook;
    FIT(w->provider, "cryptomus");
    // Cryptomus has no event id: one invoice reports each status once (providers.md §3.4), so the
    // pair (uuid, status) identifies the event.
    int n = snprintf(w->event_id, sizeof w->event_id, "%s:%s", ev.uuid, ev.status);
    if (n < 0 || (size_t)n >= sizeof w->event_id || !FIT(w->object_id, ev.uuid)) {
        invalid_payload(self, s, PROVIDER_CRYPTOMUS, "uuid");
        return;
    }
    FIT(w->event_type, ev.type[0] ? ev.type : "payment");
    FIT(w->order_id, ev.order_id);
    FIT(w->booking_id, ev.order_id);   // our order_id is the booking id
    FIT(w->status, ev.status);
    w->is_final = ev.is_final;
    int64_t cents = 0;
    if (webhook_decimal_cents(ev.amount, &cents) == 0) w->amount_cents = cents;
    FIT(w->currency, ev.currency);
    http_forward(self, wsi, s, &msg, PENDING_WEBHOOK_BASE + PROVIDER_CRYPTOMUS);
}

// ---- VAPI -----------------------------------------------------------------------------------------

static void vapi_unauthorized(http_t *self, session_t *s, bool stale) {
    http_count_webhook(self, PROVIDER_VAPI, OUTCOME_BAD_SIGNATURE);
    http_respond_error(s, 401, "bad_secret",
                       stale ? "the signature timestamp is outside the tolerance"
                             : "the webhook secret or signature does not match",
                       NULL);
}

// The message types the dialer acts on.
static bool vapi_forwarded_type(const char *type) {
    return strcmp(type, "status-update") == 0 || strcmp(type, "end-of-call-report") == 0 || strcmp(type, "hang") == 0;
}

// USD → millionths of a dollar; 0 when absent or not a plausible cost.
static int64_t cost_micros(const vapi_event_t *ev) {
    if (!ev->has_cost || !(ev->cost >= 0 && ev->cost <= 1e9)) return 0;
    return (int64_t)(ev->cost * 1e6 + 0.5);
}

void route_webhook_vapi(http_t *self, struct lws *wsi, session_t *s) {
    const config_t *cfg = self->cfg;
    if (limited(self, wsi, s, PROVIDER_VAPI)) return;
    if (!cfg->vapi_webhook_secret || !*cfg->vapi_webhook_secret) {
        not_configured(self, s, PROVIDER_VAPI);
        return;
    }
    const char *body = s->body ? s->body : "";
    const char *const secrets[] = {cfg->vapi_webhook_secret, cfg->vapi_webhook_secret_previous, NULL};
    int matched = -1, hmac_matched = -1;
    if (vapi_secret_verify_any(s->vapi_secret, secrets, &matched) != WEBHOOK_OK) {
        vapi_unauthorized(self, s, false);
        return;
    }
    // The HMAC credential is required only while its current secret is set; its previous one alone
    // does not turn the check on.
    if (cfg->vapi_webhook_hmac_secret && *cfg->vapi_webhook_hmac_secret) {
        const char *const hmac_secrets[] = {cfg->vapi_webhook_hmac_secret, cfg->vapi_webhook_hmac_secret_previous,
                                            NULL};
        int rc = vapi_hmac_verify_any(s->vapi_signature, s->vapi_timestamp, body, s->body_len, hmac_secrets,
                                      (int64_t)time(NULL), &hmac_matched);
        if (rc != WEBHOOK_OK) {
            vapi_unauthorized(self, s, rc == WEBHOOK_STALE_TIMESTAMP);
            return;
        }
    }
    http_count_secret(self, SECRET_VAPI_WEBHOOK, matched);
    http_count_secret(self, SECRET_VAPI_HMAC, hmac_matched);
    vapi_event_t ev;
    api_error_t err;
    if (vapi_event_parse(body, s->body_len, &ev, &err) != 0) {
        invalid_payload(self, s, PROVIDER_VAPI, err.field);
        return;
    }
    if (!vapi_forwarded_type(ev.type)) {
        http_count_webhook(self, PROVIDER_VAPI, OUTCOME_IGNORED);
        http_respond_json_text(s, 200, "{}", 2);
        return;
    }

    bus_msg_t msg;
    bus_msg_init(&msg, BUS_VAPI_WEBHOOK);
    bus_vapi_webhook_t *w = &msg.u.vapi_webhook;
    // a call id for all three; a status that fits for a status-update
    bool status_fits = FIT(w->status, ev.status);
    const char *unusable = !ev.call_id[0] || !FIT(w->call_id, ev.call_id) ? "message.call.id"
                           : !FIT(w->type, ev.type)                          ? "message.type"
                           : !status_fits && !strcmp(ev.type, "status-update") ? "message.status"
                                                                               : NULL;
    if (unusable) {
        invalid_payload(self, s, PROVIDER_VAPI, unusable);
        return;
    }
    // VAPI's longest ended reasons are provider-fault names whose meaning is in their prefix
    // (call.in-progress.error-vapifault-…): cut to the bus field rather than dropped.
    snprintf(w->ended_reason, sizeof w->ended_reason, "%.*s", (int)sizeof w->ended_reason - 1, ev.ended_reason);
    FIT(w->booking_id, ev.booking_id);
    if (ev.has_started_at) w->started_at_ms = ev.started_at_ms;
    if (ev.has_ended_at) w->ended_at_ms = ev.ended_at_ms;
    if (ev.has_duration) w->duration_ms = ev.duration_ms;
    w->cost_micros = cost_micros(&ev);
    FIT(w->recording_url, ev.recording_url);
    if (ev.has_timestamp) w->timestamp_ms = ev.timestamp_ms;
    http_forward(self, wsi, s, &msg, PENDING_WEBHOOK_BASE + PROVIDER_VAPI);
}
