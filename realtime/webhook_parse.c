// realtime/webhook_parse.c — see webhook_parse.h. Field names: providers.md §1.6 (Stripe),
// §3.4 (Cryptomus), §2.6 (VAPI).
#include "realtime/webhook_parse.h"

#include <string.h>

#include "realtime/webhook_verify.h"

// Copies a string member into buf[size]; "" (and false) when absent, not a string, or too long.
static bool get_str(const json_t *obj, const char *key, char *buf, size_t size) {
    json_t *v = json_object_get(obj, key);
    buf[0] = '\0';
    if (!json_is_string(v) || json_string_length(v) >= size) return false;
    memcpy(buf, json_string_value(v), json_string_length(v) + 1);
    return true;
}

static bool get_int(const json_t *obj, const char *key, int64_t *out) {
    json_t *v = json_object_get(obj, key);
    if (!json_is_integer(v)) return false;
    *out = json_integer_value(v);
    return true;
}

static bool get_bool(const json_t *obj, const char *key, bool *out) {
    json_t *v = json_object_get(obj, key);
    if (!json_is_boolean(v)) return false;
    *out = json_is_true(v);
    return true;
}

static int fail(api_error_t *err, const char *code, const char *field, const char *msg) {
    api_error_set(err, 400, code, field, msg);
    return -1;
}

// Loads an object body or fails with the shared error codes.
static json_t *load_object(const char *body, size_t len, api_error_t *err) {
    if (len > WEBHOOK_BODY_MAX) {
        api_error_set(err, 413, "too_large", "", "the webhook body is too large");
        return NULL;
    }
    json_t *root = api_json_loadb(body, len, 0);
    if (!json_is_object(root)) {
        json_decref(root);
        fail(err, "invalid_json", "", "the body must be a JSON object");
        return NULL;
    }
    return root;
}

static bool has_prefix(const char *s, const char *prefix) {
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

// ---------------------------------------------------------------------------------------- Stripe

int stripe_event_parse(const char *body, size_t len, stripe_event_t *out, api_error_t *err) {
    json_t *root = load_object(body, len, err);
    if (!root) return -1;
    stripe_event_t ev;
    memset(&ev, 0, sizeof ev);
    int rc = -1;
    if (!get_str(root, "id", ev.id, sizeof ev.id) || !ev.id[0]) {
        fail(err, "invalid_payload", "id", "the event has no usable id");
        goto done;
    }
    if (!get_str(root, "type", ev.type, sizeof ev.type) || !ev.type[0]) {
        fail(err, "invalid_payload", "type", "the event has no usable type");
        goto done;
    }
    get_int(root, "created", &ev.created);
    get_bool(root, "livemode", &ev.livemode);
    if (has_prefix(ev.type, "checkout.session.")) ev.kind = STRIPE_KIND_CHECKOUT_SESSION;
    else if (!strcmp(ev.type, "charge.refunded")) ev.kind = STRIPE_KIND_CHARGE_REFUNDED;
    else if (has_prefix(ev.type, "refund.")) ev.kind = STRIPE_KIND_REFUND;
    if (ev.kind == STRIPE_KIND_OTHER) {
        rc = 0;
        goto done;
    }

    json_t *obj = json_object_get(json_object_get(root, "data"), "object");
    if (!json_is_object(obj)) {
        fail(err, "invalid_payload", "data.object", "the event has no data.object");
        goto done;
    }
    if (!get_str(obj, "id", ev.object_id, sizeof ev.object_id) || !ev.object_id[0]) {
        fail(err, "invalid_payload", "data.object.id", "the event's object has no usable id");
        goto done;
    }
    get_str(obj, "status", ev.status, sizeof ev.status);
    get_str(json_object_get(obj, "metadata"), "booking_id", ev.booking_id, sizeof ev.booking_id);
    json_t *pi = json_object_get(obj, "payment_intent");
    if (json_is_object(pi)) get_str(pi, "id", ev.payment_intent, sizeof ev.payment_intent);
    else get_str(obj, "payment_intent", ev.payment_intent, sizeof ev.payment_intent);

    if (ev.kind == STRIPE_KIND_CHECKOUT_SESSION) {
        get_str(obj, "payment_status", ev.payment_status, sizeof ev.payment_status);
        get_str(obj, "client_reference_id", ev.client_reference_id, sizeof ev.client_reference_id);
        ev.has_amount_total = get_int(obj, "amount_total", &ev.amount_total);
        get_str(obj, "currency", ev.currency, sizeof ev.currency);
    } else if (ev.kind == STRIPE_KIND_CHARGE_REFUNDED) {
        ev.has_amount_refunded = get_int(obj, "amount_refunded", &ev.amount_refunded);
        get_bool(obj, "refunded", &ev.refunded);
        get_str(obj, "currency", ev.currency, sizeof ev.currency);
    }
    rc = 0;
done:
    if (rc == 0) *out = ev;
    json_decref(root);
    return rc;
}

// ------------------------------------------------------------------------------------- Cryptomus

// "15", "15.00": what Cryptomus sends; anything else reads as absent.
static void get_decimal(const json_t *obj, const char *key, char *buf, size_t size) {
    if (!get_str(obj, key, buf, size)) return;
    size_t i = 0, int_digits = 0, frac_digits = 0;
    while (buf[i] >= '0' && buf[i] <= '9') i++, int_digits++;
    if (buf[i] == '.') {
        i++;
        while (buf[i] >= '0' && buf[i] <= '9') i++, frac_digits++;
        if (frac_digits == 0) int_digits = 0;
    }
    if (int_digits == 0 || buf[i] != '\0') buf[0] = '\0';
}

int cryptomus_event_parse(const char *body, size_t len, cryptomus_event_t *out, api_error_t *err) {
    json_t *root = load_object(body, len, err);
    if (!root) return -1;
    cryptomus_event_t ev;
    memset(&ev, 0, sizeof ev);
    int rc = -1;
    if (!get_str(root, "uuid", ev.uuid, sizeof ev.uuid) || !ev.uuid[0]) {
        fail(err, "invalid_payload", "uuid", "the webhook has no usable uuid");
        goto done;
    }
    if (!get_str(root, "order_id", ev.order_id, sizeof ev.order_id) || !ev.order_id[0]) {
        fail(err, "invalid_payload", "order_id", "the webhook has no usable order_id");
        goto done;
    }
    if (!get_str(root, "status", ev.status, sizeof ev.status) || !ev.status[0]) {
        fail(err, "invalid_payload", "status", "the webhook has no usable status");
        goto done;
    }
    get_str(root, "type", ev.type, sizeof ev.type);
    ev.has_is_final = get_bool(root, "is_final", &ev.is_final);
    get_decimal(root, "amount", ev.amount, sizeof ev.amount);
    get_decimal(root, "payment_amount", ev.payment_amount, sizeof ev.payment_amount);
    get_decimal(root, "merchant_amount", ev.merchant_amount, sizeof ev.merchant_amount);
    get_str(root, "currency", ev.currency, sizeof ev.currency);
    get_str(root, "payer_currency", ev.payer_currency, sizeof ev.payer_currency);
    get_str(root, "additional_data", ev.additional_data, sizeof ev.additional_data);
    get_str(root, "txid", ev.txid, sizeof ev.txid);
    *out = ev;
    rc = 0;
done:
    json_decref(root);
    return rc;
}

int webhook_decimal_cents(const char *text, int64_t *out) {
    if (!text || !out) return -1;
    const char *p = text;
    int64_t units = 0;
    int ndigits = 0;
    for (; *p >= '0' && *p <= '9'; p++) {
        if (++ndigits > 15) return -1;
        units = units * 10 + (*p - '0');
    }
    if (ndigits == 0) return -1;
    int64_t cents = 0;
    if (*p == '.') {
        p++;
        int nfrac = 0;
        for (; *p >= '0' && *p <= '9'; p++, nfrac++)
            if (nfrac < 2) cents = cents * 10 + (*p - '0');
        if (nfrac == 0) return -1;
        if (nfrac == 1) cents *= 10;
    }
    if (*p != '\0') return -1;
    *out = units * 100 + cents;
    return 0;
}

// ------------------------------------------------------------------------------------------ VAPI

static bool get_time_ms(const json_t *obj, const char *key, int64_t *out) {
    json_t *v = json_object_get(obj, key);
    return json_is_string(v) && api_rfc3339_parse_ms(json_string_value(v), json_string_length(v), out) == 0;
}

// A count of milliseconds given as a JSON number; refuses what does not fit comfortably.
static bool number_ms(const json_t *v, double scale, int64_t *out) {
    if (!json_is_number(v)) return false;
    double x = json_number_value(v) * scale;
    if (!(x >= -9e15 && x <= 9e15)) return false;   // also false for NaN
    *out = (int64_t)(x < 0 ? x - 0.5 : x + 0.5);
    return true;
}

int vapi_event_parse(const char *body, size_t len, vapi_event_t *out, api_error_t *err) {
    json_t *root = load_object(body, len, err);
    if (!root) return -1;
    vapi_event_t ev;
    memset(&ev, 0, sizeof ev);
    int rc = -1;
    json_t *msg = json_object_get(root, "message");
    if (!json_is_object(msg)) {
        fail(err, "invalid_payload", "message", "the body has no message object");
        goto done;
    }
    if (!get_str(msg, "type", ev.type, sizeof ev.type) || !ev.type[0]) {
        fail(err, "invalid_payload", "message.type", "the message has no usable type");
        goto done;
    }
    bool status_update = !strcmp(ev.type, "status-update");
    bool report = !strcmp(ev.type, "end-of-call-report");
    json_t *call = json_object_get(msg, "call");
    get_str(call, "id", ev.call_id, sizeof ev.call_id);
    if ((status_update || report) && !ev.call_id[0]) {
        fail(err, "invalid_payload", "message.call.id", "the message has no usable call id");
        goto done;
    }
    get_str(msg, "status", ev.status, sizeof ev.status);
    if (status_update && !ev.status[0]) {
        fail(err, "invalid_payload", "message.status", "the status update has no usable status");
        goto done;
    }
    if (!get_str(msg, "endedReason", ev.ended_reason, sizeof ev.ended_reason))
        get_str(call, "endedReason", ev.ended_reason, sizeof ev.ended_reason);
    ev.has_started_at = get_time_ms(msg, "startedAt", &ev.started_at_ms) ||
                        get_time_ms(call, "startedAt", &ev.started_at_ms);
    ev.has_ended_at = get_time_ms(msg, "endedAt", &ev.ended_at_ms) ||
                      get_time_ms(call, "endedAt", &ev.ended_at_ms);
    json_t *cost = json_object_get(msg, "cost");
    if (!json_is_number(cost)) cost = json_object_get(call, "cost");
    if (json_is_number(cost)) {
        ev.cost = json_number_value(cost);
        ev.has_cost = true;
    }
    if (!get_str(json_object_get(msg, "artifact"), "recordingUrl", ev.recording_url,
                 sizeof ev.recording_url))
        get_str(msg, "recordingUrl", ev.recording_url, sizeof ev.recording_url);
    get_str(json_object_get(json_object_get(call, "assistantOverrides"), "metadata"), "booking_id",
            ev.booking_id, sizeof ev.booking_id);
    ev.has_timestamp = number_ms(json_object_get(msg, "timestamp"), 1.0, &ev.timestamp_ms);
    if (report) {
        if (ev.has_started_at && ev.has_ended_at && ev.ended_at_ms >= ev.started_at_ms) {
            ev.duration_ms = ev.ended_at_ms - ev.started_at_ms;
            ev.has_duration = true;
        } else if (number_ms(json_object_get(msg, "durationSeconds"), 1000.0, &ev.duration_ms) &&
                   ev.duration_ms >= 0) {
            ev.has_duration = true;
        } else {
            ev.duration_ms = 0;
        }
    }
    *out = ev;
    rc = 0;
done:
    json_decref(root);
    return rc;
}
