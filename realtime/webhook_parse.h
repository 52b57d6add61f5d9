// realtime/webhook_parse.h — the facts the payments and dispatch actors need from a provider
// webhook whose signature has already been checked (webhook_verify.h), copied into value structs
// with fixed-size buffers so they can be put in a bus message as they are.
//
// Nothing in a body is trusted to have the documented type: a field of the wrong type, or a string
// too long for its buffer, reads as absent ("" / has_* false) and is never truncated; only the few
// fields without which the event cannot be handled at all make the parse fail (400,
// invalid_json / invalid_payload, field named). Unknown event types parse fine.
//
// Called by the HTTP actor on its service thread. Pure: no I/O, no globals, bounded work.
#ifndef SWEETY_WEBHOOK_PARSE_H
#define SWEETY_WEBHOOK_PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "realtime/api_error.h"

// -------------------------------------------------------------------------------------- Stripe

typedef enum {
    STRIPE_KIND_OTHER = 0,          // any other type: only id and type are filled
    STRIPE_KIND_CHECKOUT_SESSION,   // checkout.session.*
    STRIPE_KIND_CHARGE_REFUNDED,    // charge.refunded
    STRIPE_KIND_REFUND,             // refund.*
} stripe_kind_t;

typedef struct {
    char id[128];                  // evt_…            (required)
    char type[96];                 // checkout.session.completed … (required)
    stripe_kind_t kind;
    int64_t created;               // event creation, unix s; 0 when absent
    bool livemode;
    char object_id[128];           // data.object.id: cs_… / ch_… / re_… (required for known kinds)
    // checkout.session.*
    char payment_status[32];       // paid | unpaid | no_payment_required
    char status[32];               // session: open | complete | expired; refund: pending | succeeded | …
    char payment_intent[128];      // id (string, or the id of an expanded object); "" when null
    char client_reference_id[201];
    char booking_id[64];           // data.object.metadata.booking_id
    int64_t amount_total;          // minor units
    bool has_amount_total;
    char currency[8];              // lowercase ISO code as Stripe sends it
    // charge.refunded (payment_intent above)
    int64_t amount_refunded;
    bool has_amount_refunded;
    bool refunded;
} stripe_event_t;

// 0, or -1 with *err: invalid_json (not a JSON object), invalid_payload (field "id", "type",
// "data.object" or "data.object.id" missing or unusable), too_large (over WEBHOOK_BODY_MAX).
int stripe_event_parse(const char *body, size_t len, stripe_event_t *out, api_error_t *err);

// ----------------------------------------------------------------------------------- Cryptomus

typedef struct {
    char type[16];               // payment | wallet
    char uuid[64];               // invoice uuid          (required)
    char order_id[129];          // our booking id        (required)
    char status[32];             // paid, paid_over, cancel, … (required)
    bool is_final;
    bool has_is_final;
    char amount[32];             // decimal strings as sent ("15.00"); "" when absent or not decimal
    char payment_amount[32];
    char merchant_amount[32];
    char currency[16];
    char payer_currency[16];
    char additional_data[256];
    char txid[160];
} cryptomus_event_t;

// 0, or -1 with *err: invalid_json, invalid_payload ("uuid", "order_id", "status"), too_large.
int cryptomus_event_parse(const char *body, size_t len, cryptomus_event_t *out, api_error_t *err);

// A decimal amount as Cryptomus writes it ("15", "15.5", "15.00") in minor units (1500): digits,
// then optionally "." and at least one digit; decimals past the second are dropped (truncated).
// 0, or -1 (out untouched) for anything else: empty, a sign, an exponent, more than 15 digits
// before the point.
int webhook_decimal_cents(const char *text, int64_t *out);

// ---------------------------------------------------------------------------------------- VAPI

typedef struct {
    char type[48];               // message.type (required)
    char call_id[64];            // message.call.id (required for status-update, end-of-call-report)
    char status[32];             // message.status (status-update; required there)
    char ended_reason[128];      // message.endedReason, else message.call.endedReason
    int64_t started_at_ms;       // message.startedAt, else message.call.startedAt (epoch ms)
    bool has_started_at;
    int64_t ended_at_ms;         // message.endedAt, else message.call.endedAt
    bool has_ended_at;
    double cost;                 // USD; message.cost, else message.call.cost
    bool has_cost;
    char recording_url[1024];    // message.artifact.recordingUrl, else message.recordingUrl
    char booking_id[64];         // message.call.assistantOverrides.metadata.booking_id
    int64_t timestamp_ms;        // message.timestamp
    bool has_timestamp;
    int64_t duration_ms;         // end-of-call-report: endedAt − startedAt, else durationSeconds
    bool has_duration;
} vapi_event_t;

// 0, or -1 with *err: invalid_json, invalid_payload ("message", "message.type", "message.call.id",
// "message.status"), too_large.
int vapi_event_parse(const char *body, size_t len, vapi_event_t *out, api_error_t *err);

#endif
