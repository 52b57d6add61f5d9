// tests/unit/test_webhook_parse.c — realtime/webhook_parse.c: Stripe, Cryptomus and VAPI webhook
// bodies (shapes from providers.md §1.6, §3.4/§3.5, §2.6) into fixed-size structs; wrong types read
// as absent, missing essentials fail. Ends with a deterministic mutation run over every edge
// parser and verifier (a cheap stand-in until the fuzz targets exist; run it under ASan).
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
// cmocka after the standard headers it needs
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/token.h"
#include "realtime/booking_request.h"
#include "realtime/webhook_parse.h"
#include "realtime/webhook_verify.h"

// ------------------------------------------------------------------------------------- Stripe

static const char st_completed[] =
    "{\"id\":\"evt_1\",\"object\":\"event\",\"api_version\":\"2026-10-28.endive\",\"created\":1700000000,"
    "\"livemode\":false,\"type\":\"checkout.session.completed\",\"data\":{\"object\":{"
    "\"id\":\"cs_test_a1\",\"object\":\"checkout.session\",\"payment_status\":\"paid\",\"status\":\"complete\","
    "\"payment_intent\":\"pi_123\",\"client_reference_id\":\"0b6e4c1e-5a57-4f4e-9d2a-3c1f7e2b9a10\","
    "\"metadata\":{\"booking_id\":\"0b6e4c1e-5a57-4f4e-9d2a-3c1f7e2b9a10\"},\"amount_total\":1500,"
    "\"currency\":\"usd\",\"url\":null}}}";

static void stripe_ok(const char *body, stripe_event_t *ev) {
    api_error_t e;
    memset(&e, 0, sizeof e);
    int rc = stripe_event_parse(body, strlen(body), ev, &e);
    if (rc != 0) fail_msg("refused: %s %s", e.code, e.field);
}

static void stripe_fails(const char *body, const char *code, const char *field) {
    stripe_event_t ev;
    memset(&ev, 0x33, sizeof ev);
    stripe_event_t before = ev;
    api_error_t e;
    assert_int_equal(stripe_event_parse(body, strlen(body), &ev, &e), -1);
    assert_string_equal(e.code, code);
    assert_string_equal(e.field, field);
    assert_int_equal(e.http_status, 400);
    assert_memory_equal(&ev, &before, sizeof ev);
}

static void test_stripe_checkout_session_completed(void **state) {
    (void)state;
    stripe_event_t ev;
    stripe_ok(st_completed, &ev);
    assert_string_equal(ev.id, "evt_1");
    assert_string_equal(ev.type, "checkout.session.completed");
    assert_int_equal(ev.kind, STRIPE_KIND_CHECKOUT_SESSION);
    assert_int_equal(ev.created, 1700000000);
    assert_false(ev.livemode);
    assert_string_equal(ev.object_id, "cs_test_a1");
    assert_string_equal(ev.payment_status, "paid");
    assert_string_equal(ev.status, "complete");
    assert_string_equal(ev.payment_intent, "pi_123");
    assert_string_equal(ev.client_reference_id, "0b6e4c1e-5a57-4f4e-9d2a-3c1f7e2b9a10");
    assert_string_equal(ev.booking_id, "0b6e4c1e-5a57-4f4e-9d2a-3c1f7e2b9a10");
    assert_true(ev.has_amount_total);
    assert_int_equal(ev.amount_total, 1500);
    assert_string_equal(ev.currency, "usd");
}

static void test_stripe_payment_intent_as_null_or_expanded_object(void **state) {
    (void)state;
    stripe_event_t ev;
    stripe_ok("{\"id\":\"evt_2\",\"type\":\"checkout.session.expired\",\"data\":{\"object\":{\"id\":\"cs_2\","
              "\"payment_status\":\"unpaid\",\"status\":\"expired\",\"payment_intent\":null}}}",
              &ev);
    assert_string_equal(ev.payment_intent, "");
    assert_string_equal(ev.status, "expired");
    assert_false(ev.has_amount_total);
    assert_string_equal(ev.booking_id, "");
    stripe_ok("{\"id\":\"evt_3\",\"type\":\"checkout.session.async_payment_succeeded\",\"data\":{\"object\":{"
              "\"id\":\"cs_3\",\"payment_intent\":{\"id\":\"pi_9\",\"object\":\"payment_intent\","
              "\"status\":\"succeeded\"}}}}",
              &ev);
    assert_string_equal(ev.payment_intent, "pi_9");
    assert_int_equal(ev.kind, STRIPE_KIND_CHECKOUT_SESSION);
}

static void test_stripe_charge_refunded(void **state) {
    (void)state;
    stripe_event_t ev;
    stripe_ok("{\"id\":\"evt_4\",\"type\":\"charge.refunded\",\"data\":{\"object\":{\"id\":\"ch_1\","
              "\"object\":\"charge\",\"payment_intent\":\"pi_123\",\"amount_refunded\":1500,\"refunded\":true,"
              "\"currency\":\"usd\",\"metadata\":{\"booking_id\":\"bk_42\"}}}}",
              &ev);
    assert_int_equal(ev.kind, STRIPE_KIND_CHARGE_REFUNDED);
    assert_string_equal(ev.object_id, "ch_1");
    assert_string_equal(ev.payment_intent, "pi_123");
    assert_true(ev.has_amount_refunded);
    assert_int_equal(ev.amount_refunded, 1500);
    assert_true(ev.refunded);
    assert_string_equal(ev.booking_id, "bk_42");
}

static void test_stripe_refund_events(void **state) {
    (void)state;
    const char *types[] = {"refund.created", "refund.updated", "refund.failed"};
    for (int i = 0; i < 3; i++) {
        char *b = NULL;
        assert_true(asprintf(&b, "{\"id\":\"evt_r%d\",\"type\":\"%s\",\"data\":{\"object\":{\"id\":\"re_1\","
                                 "\"object\":\"refund\",\"status\":\"%s\",\"payment_intent\":\"pi_123\","
                                 "\"amount\":1500,\"metadata\":{\"booking_id\":\"bk_42\"}}}}",
                             i, types[i], i == 2 ? "failed" : "succeeded") > 0);
        stripe_event_t ev;
        stripe_ok(b, &ev);
        assert_int_equal(ev.kind, STRIPE_KIND_REFUND);
        assert_string_equal(ev.object_id, "re_1");
        assert_string_equal(ev.status, i == 2 ? "failed" : "succeeded");
        assert_string_equal(ev.payment_intent, "pi_123");
        assert_string_equal(ev.booking_id, "bk_42");
        free(b);
    }
}

static void test_stripe_unknown_types_parse_with_id_and_type(void **state) {
    (void)state;
    stripe_event_t ev;
    stripe_ok("{\"id\":\"evt_5\",\"type\":\"payment_intent.payment_failed\",\"data\":{\"object\":{\"id\":\"pi_1\"}}}",
              &ev);
    assert_int_equal(ev.kind, STRIPE_KIND_OTHER);
    assert_string_equal(ev.type, "payment_intent.payment_failed");
    assert_string_equal(ev.object_id, "");
    stripe_ok("{\"id\":\"evt_6\",\"type\":\"customer.created\"}", &ev);
    assert_int_equal(ev.kind, STRIPE_KIND_OTHER);
    // "charge.refunded.x" and "checkout.sessionX" are not the known kinds
    stripe_ok("{\"id\":\"evt_7\",\"type\":\"charge.refund.updated\"}", &ev);
    assert_int_equal(ev.kind, STRIPE_KIND_OTHER);
    stripe_ok("{\"id\":\"evt_8\",\"type\":\"checkout.sessions\"}", &ev);
    assert_int_equal(ev.kind, STRIPE_KIND_OTHER);
}

static void test_stripe_wrong_types_read_as_absent(void **state) {
    (void)state;
    char longref[400];
    memset(longref, 'r', 250);
    longref[250] = '\0';
    char *b = NULL;
    assert_true(asprintf(&b, "{\"id\":\"evt_9\",\"type\":\"checkout.session.completed\",\"created\":\"yesterday\","
                             "\"livemode\":\"true\",\"data\":{\"object\":{\"id\":\"cs_9\",\"payment_status\":1,"
                             "\"status\":[\"complete\"],\"payment_intent\":42,\"client_reference_id\":\"%s\","
                             "\"metadata\":\"booking_id=bk\",\"amount_total\":\"1500\",\"currency\":{\"c\":\"usd\"}}}}",
                         longref) > 0);
    stripe_event_t ev;
    stripe_ok(b, &ev);
    assert_int_equal(ev.created, 0);
    assert_false(ev.livemode);
    assert_string_equal(ev.payment_status, "");
    assert_string_equal(ev.status, "");
    assert_string_equal(ev.payment_intent, "");
    assert_string_equal(ev.client_reference_id, "");   // too long: absent, never truncated
    assert_string_equal(ev.booking_id, "");
    assert_false(ev.has_amount_total);
    assert_string_equal(ev.currency, "");
    free(b);
    stripe_ok("{\"id\":\"evt_10\",\"type\":\"charge.refunded\",\"data\":{\"object\":{\"id\":\"ch_1\","
              "\"amount_refunded\":15.5,\"refunded\":\"true\"}}}",
              &ev);
    assert_false(ev.has_amount_refunded);
    assert_false(ev.refunded);
}

static void test_stripe_missing_essentials_fail(void **state) {
    (void)state;
    stripe_fails("{\"type\":\"checkout.session.completed\"}", "invalid_payload", "id");
    stripe_fails("{\"id\":\"\",\"type\":\"checkout.session.completed\"}", "invalid_payload", "id");
    stripe_fails("{\"id\":7,\"type\":\"checkout.session.completed\"}", "invalid_payload", "id");
    stripe_fails("{\"id\":\"evt_1\"}", "invalid_payload", "type");
    stripe_fails("{\"id\":\"evt_1\",\"type\":null}", "invalid_payload", "type");
    stripe_fails("{\"id\":\"evt_1\",\"type\":\"checkout.session.completed\"}", "invalid_payload", "data.object");
    stripe_fails("{\"id\":\"evt_1\",\"type\":\"checkout.session.completed\",\"data\":{\"object\":[]}}",
                 "invalid_payload", "data.object");
    stripe_fails("{\"id\":\"evt_1\",\"type\":\"charge.refunded\",\"data\":[{\"object\":{}}]}", "invalid_payload",
                 "data.object");
    stripe_fails("{\"id\":\"evt_1\",\"type\":\"refund.updated\",\"data\":{\"object\":{\"status\":\"succeeded\"}}}",
                 "invalid_payload", "data.object.id");
    char id[200];
    memset(id, 'e', 150);
    id[150] = '\0';
    char *b = NULL;
    assert_true(asprintf(&b, "{\"id\":\"%s\",\"type\":\"customer.created\"}", id) > 0);
    stripe_fails(b, "invalid_payload", "id");
    free(b);
}

static void test_stripe_not_json_objects_fail(void **state) {
    (void)state;
    const char *bad[] = {"", "[]", "null", "\"evt\"", "{", "{\"id\":\"evt_1\",\"type\":\"x\"} x"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) stripe_fails(bad[i], "invalid_json", "");
    stripe_event_t ev;
    api_error_t e;
    assert_int_equal(stripe_event_parse(NULL, 0, &ev, &e), -1);
    assert_string_equal(e.code, "invalid_json");
    assert_int_equal(stripe_event_parse(st_completed, WEBHOOK_BODY_MAX + 1, &ev, &e), -1);
    assert_string_equal(e.code, "too_large");
    assert_int_equal(e.http_status, 413);
}

// ---------------------------------------------------------------------------------- Cryptomus

static const char cm_webhook[] =
    "{\"type\":\"payment\",\"uuid\":\"62f88b36-a9d5-4fa6-aa5d-4d5d7e9b9f2a\",\"order_id\":\"bk_42\","
    "\"amount\":\"15.00\",\"payment_amount\":\"15.00\",\"merchant_amount\":\"14.70\",\"is_final\":true,"
    "\"status\":\"paid\",\"currency\":\"USD\",\"additional_data\":\"https:\\/\\/x.example\\/a\","
    "\"sign\":\"d56b3f51f75c1b6b13801b4daa34211c\"}";

static void cm_ok(const char *body, cryptomus_event_t *ev) {
    api_error_t e;
    int rc = cryptomus_event_parse(body, strlen(body), ev, &e);
    if (rc != 0) fail_msg("refused: %s %s", e.code, e.field);
}

static void cm_fails(const char *body, const char *code, const char *field) {
    cryptomus_event_t ev;
    api_error_t e;
    assert_int_equal(cryptomus_event_parse(body, strlen(body), &ev, &e), -1);
    assert_string_equal(e.code, code);
    assert_string_equal(e.field, field);
}

static void test_cryptomus_providers_webhook_parses(void **state) {
    (void)state;
    cryptomus_event_t ev;
    cm_ok(cm_webhook, &ev);
    assert_string_equal(ev.type, "payment");
    assert_string_equal(ev.uuid, "62f88b36-a9d5-4fa6-aa5d-4d5d7e9b9f2a");
    assert_string_equal(ev.order_id, "bk_42");
    assert_string_equal(ev.status, "paid");
    assert_true(ev.has_is_final);
    assert_true(ev.is_final);
    assert_string_equal(ev.amount, "15.00");
    assert_string_equal(ev.payment_amount, "15.00");
    assert_string_equal(ev.merchant_amount, "14.70");
    assert_string_equal(ev.currency, "USD");
    assert_string_equal(ev.additional_data, "https://x.example/a");
    assert_string_equal(ev.txid, "");
}

static void test_cryptomus_optional_fields_and_odd_types(void **state) {
    (void)state;
    cryptomus_event_t ev;
    cm_ok("{\"uuid\":\"u\",\"order_id\":\"o\",\"status\":\"check\",\"is_final\":false,\"amount\":15,"
          "\"payment_amount\":null,\"merchant_amount\":\"14,70\",\"txid\":\"0xabc\",\"payer_currency\":\"USDT\"}",
          &ev);
    assert_true(ev.has_is_final);
    assert_false(ev.is_final);
    assert_string_equal(ev.amount, "");
    assert_string_equal(ev.payment_amount, "");
    assert_string_equal(ev.merchant_amount, "");
    assert_string_equal(ev.txid, "0xabc");
    assert_string_equal(ev.payer_currency, "USDT");
    const char *amounts[] = {"\"1e3\"", "\".5\"", "\"15.\"", "\"-1.00\"", "\" 15.00\"", "\"15.00.0\"", "\"\""};
    for (size_t i = 0; i < sizeof amounts / sizeof *amounts; i++) {
        char *b = NULL;
        assert_true(asprintf(&b, "{\"uuid\":\"u\",\"order_id\":\"o\",\"status\":\"paid\",\"amount\":%s}", amounts[i]) > 0);
        cm_ok(b, &ev);
        if (ev.amount[0]) fail_msg("amount %s read as %s", amounts[i], ev.amount);
        free(b);
    }
    cm_ok("{\"uuid\":\"u\",\"order_id\":\"o\",\"status\":\"paid\",\"is_final\":\"true\",\"amount\":\"0.000001\"}", &ev);
    assert_false(ev.has_is_final);
    assert_string_equal(ev.amount, "0.000001");
}

static void test_cryptomus_missing_essentials_fail(void **state) {
    (void)state;
    cm_fails("{\"order_id\":\"o\",\"status\":\"paid\"}", "invalid_payload", "uuid");
    cm_fails("{\"uuid\":\"u\",\"status\":\"paid\"}", "invalid_payload", "order_id");
    cm_fails("{\"uuid\":\"u\",\"order_id\":42,\"status\":\"paid\"}", "invalid_payload", "order_id");
    cm_fails("{\"uuid\":\"u\",\"order_id\":\"o\"}", "invalid_payload", "status");
    cm_fails("{\"uuid\":\"u\",\"order_id\":\"o\",\"status\":\"\"}", "invalid_payload", "status");
    cm_fails("[]", "invalid_json", "");
    cm_fails("{\"uuid\":", "invalid_json", "");
}

// --------------------------------------------------------------------------------------- VAPI

static void vapi_ok(const char *body, vapi_event_t *ev) {
    api_error_t e;
    int rc = vapi_event_parse(body, strlen(body), ev, &e);
    if (rc != 0) fail_msg("refused: %s %s", e.code, e.field);
}

static void vapi_fails(const char *body, const char *code, const char *field) {
    vapi_event_t ev;
    api_error_t e;
    assert_int_equal(vapi_event_parse(body, strlen(body), &ev, &e), -1);
    assert_string_equal(e.code, code);
    assert_string_equal(e.field, field);
}

static void test_vapi_status_update(void **state) {
    (void)state;
    vapi_event_t ev;
    vapi_ok("{\"message\":{\"type\":\"status-update\",\"status\":\"ringing\",\"timestamp\":1704110400000,"
            "\"call\":{\"id\":\"call_1\",\"type\":\"outboundPhoneCall\",\"assistantOverrides\":"
            "{\"maxDurationSeconds\":300,\"metadata\":{\"booking_id\":\"bk_42\"}}}}}",
            &ev);
    assert_string_equal(ev.type, "status-update");
    assert_string_equal(ev.call_id, "call_1");
    assert_string_equal(ev.status, "ringing");
    assert_string_equal(ev.booking_id, "bk_42");
    assert_true(ev.has_timestamp);
    assert_int_equal(ev.timestamp_ms, 1704110400000LL);
    assert_string_equal(ev.ended_reason, "");
    assert_false(ev.has_duration);
    assert_false(ev.has_cost);
    vapi_ok("{\"message\":{\"type\":\"status-update\",\"status\":\"ended\",\"endedReason\":"
            "\"call.start.error-subscription-concurrency-limit-reached\",\"call\":{\"id\":\"call_1\"},"
            "\"timestamp\":1704110400000.0}}",
            &ev);
    assert_string_equal(ev.status, "ended");
    assert_string_equal(ev.ended_reason, "call.start.error-subscription-concurrency-limit-reached");
    assert_true(ev.has_timestamp);
    assert_int_equal(ev.timestamp_ms, 1704110400000LL);
    assert_string_equal(ev.booking_id, "");
}

static void test_vapi_end_of_call_report_takes_duration_from_timestamps(void **state) {
    (void)state;
    vapi_event_t ev;
    vapi_ok("{\"message\":{\"type\":\"end-of-call-report\",\"endedReason\":\"customer-ended-call\",\"cost\":0.42,"
            "\"startedAt\":\"2024-01-01T12:00:00.000Z\",\"endedAt\":\"2024-01-01T12:05:30.250Z\","
            "\"durationSeconds\":999,"
            "\"artifact\":{\"recordingUrl\":\"https://storage.vapi.ai/rec-1.wav\",\"transcript\":\"AI: hi\"},"
            "\"analysis\":{\"summary\":\"ok\"},\"call\":{\"id\":\"call_1\",\"assistantOverrides\":{\"metadata\":"
            "{\"booking_id\":\"bk_42\"}}},\"timestamp\":1704110731000}}",
            &ev);
    assert_string_equal(ev.type, "end-of-call-report");
    assert_string_equal(ev.ended_reason, "customer-ended-call");
    assert_true(ev.has_cost);
    assert_true(ev.cost > 0.4199 && ev.cost < 0.4201);
    assert_true(ev.has_started_at && ev.has_ended_at);
    assert_int_equal(ev.started_at_ms, 1704110400000LL);
    assert_int_equal(ev.ended_at_ms, 1704110730250LL);
    assert_true(ev.has_duration);
    assert_int_equal(ev.duration_ms, 330250);
    assert_string_equal(ev.recording_url, "https://storage.vapi.ai/rec-1.wav");
    assert_string_equal(ev.booking_id, "bk_42");
}

static void test_vapi_end_of_call_report_falls_back_to_duration_seconds(void **state) {
    (void)state;
    vapi_event_t ev;
    vapi_ok("{\"message\":{\"type\":\"end-of-call-report\",\"endedReason\":\"customer-busy\",\"durationSeconds\":45.5,"
            "\"recordingUrl\":\"https://old.example/r.wav\",\"call\":{\"id\":\"c2\"}}}",
            &ev);
    assert_true(ev.has_duration);
    assert_int_equal(ev.duration_ms, 45500);
    assert_string_equal(ev.recording_url, "https://old.example/r.wav");
    // only one of the two timestamps: durationSeconds wins
    vapi_ok("{\"message\":{\"type\":\"end-of-call-report\",\"startedAt\":\"2024-01-01T12:00:00Z\","
            "\"durationSeconds\":12,\"call\":{\"id\":\"c2\"}}}",
            &ev);
    assert_true(ev.has_started_at);
    assert_false(ev.has_ended_at);
    assert_int_equal(ev.duration_ms, 12000);
    // ended before started is not a duration
    vapi_ok("{\"message\":{\"type\":\"end-of-call-report\",\"startedAt\":\"2024-01-01T12:00:00Z\","
            "\"endedAt\":\"2024-01-01T11:00:00Z\",\"call\":{\"id\":\"c2\"}}}",
            &ev);
    assert_false(ev.has_duration);
    // neither: no duration; negative or absurd durationSeconds: none
    vapi_ok("{\"message\":{\"type\":\"end-of-call-report\",\"call\":{\"id\":\"c2\"}}}", &ev);
    assert_false(ev.has_duration);
    vapi_ok("{\"message\":{\"type\":\"end-of-call-report\",\"durationSeconds\":-3,\"call\":{\"id\":\"c2\"}}}", &ev);
    assert_false(ev.has_duration);
    vapi_ok("{\"message\":{\"type\":\"end-of-call-report\",\"durationSeconds\":1e300,\"call\":{\"id\":\"c2\"}}}", &ev);
    assert_false(ev.has_duration);
    vapi_ok("{\"message\":{\"type\":\"end-of-call-report\",\"durationSeconds\":\"45\",\"call\":{\"id\":\"c2\"}}}", &ev);
    assert_false(ev.has_duration);
}

static void test_vapi_takes_times_and_reason_from_the_call_when_absent_above(void **state) {
    (void)state;
    vapi_event_t ev;
    vapi_ok("{\"message\":{\"type\":\"end-of-call-report\",\"call\":{\"id\":\"c3\",\"startedAt\":"
            "\"2024-01-01T12:00:00Z\",\"endedAt\":\"2024-01-01T12:01:00+00:00\",\"endedReason\":\"voicemail\","
            "\"cost\":1}}}",
            &ev);
    assert_int_equal(ev.duration_ms, 60000);
    assert_string_equal(ev.ended_reason, "voicemail");
    assert_true(ev.has_cost);
    assert_true(ev.cost == 1.0);
}

static void test_vapi_wrong_types_read_as_absent(void **state) {
    (void)state;
    char url[1200];
    memcpy(url, "https://x/", 10);
    memset(url + 10, 'u', 1100);
    url[1110] = '\0';
    char *b = NULL;
    assert_true(asprintf(&b, "{\"message\":{\"type\":\"end-of-call-report\",\"cost\":\"0.42\",\"timestamp\":\"now\","
                             "\"startedAt\":1704110400,\"endedAt\":\"yesterday\",\"endedReason\":7,"
                             "\"artifact\":{\"recordingUrl\":\"%s\"},\"call\":{\"id\":\"c4\",\"assistantOverrides\":"
                             "{\"metadata\":{\"booking_id\":42}}}}}",
                         url) > 0);
    vapi_event_t ev;
    vapi_ok(b, &ev);
    assert_false(ev.has_cost);
    assert_false(ev.has_timestamp);
    assert_false(ev.has_started_at);
    assert_false(ev.has_ended_at);
    assert_string_equal(ev.ended_reason, "");
    assert_string_equal(ev.recording_url, "");
    assert_string_equal(ev.booking_id, "");
    free(b);
}

static void test_vapi_other_message_types_need_no_call(void **state) {
    (void)state;
    vapi_event_t ev;
    vapi_ok("{\"message\":{\"type\":\"assistant-request\"}}", &ev);
    assert_string_equal(ev.type, "assistant-request");
    assert_string_equal(ev.call_id, "");
    vapi_ok("{\"message\":{\"type\":\"hang\",\"call\":{\"id\":\"c5\"}}}", &ev);
    assert_string_equal(ev.call_id, "c5");
}

static void test_vapi_missing_essentials_fail(void **state) {
    (void)state;
    vapi_fails("{}", "invalid_payload", "message");
    vapi_fails("{\"message\":\"status-update\"}", "invalid_payload", "message");
    vapi_fails("{\"message\":{}}", "invalid_payload", "message.type");
    vapi_fails("{\"message\":{\"type\":5}}", "invalid_payload", "message.type");
    vapi_fails("{\"message\":{\"type\":\"status-update\",\"status\":\"ringing\"}}", "invalid_payload", "message.call.id");
    vapi_fails("{\"message\":{\"type\":\"status-update\",\"status\":\"ringing\",\"call\":{\"id\":7}}}",
               "invalid_payload", "message.call.id");
    vapi_fails("{\"message\":{\"type\":\"end-of-call-report\",\"call\":{}}}", "invalid_payload", "message.call.id");
    vapi_fails("{\"message\":{\"type\":\"status-update\",\"call\":{\"id\":\"c1\"}}}", "invalid_payload",
               "message.status");
    vapi_fails("{\"message\":{\"type\":\"status-update\",\"status\":null,\"call\":{\"id\":\"c1\"}}}",
               "invalid_payload", "message.status");
    vapi_fails("[{\"message\":{}}]", "invalid_json", "");
}

// ------------------------------------------------------------------------- robustness, all edges

static uint64_t rng = 0x9E3779B97F4A7C15ULL;
static uint64_t next_rand(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static void run_all(const char *buf, size_t len) {
    api_error_t e;
    booking_request_t br;
    stripe_event_t se;
    cryptomus_event_t ce;
    vapi_event_t ve;
    char hex[65];
    booking_request_parse(buf, len, 1700000000, &br, &e);
    booking_request_hash(buf, len, hex);
    stripe_event_parse(buf, len, &se, &e);
    cryptomus_event_parse(buf, len, &ce, &e);
    vapi_event_parse(buf, len, &ve, &e);
    cryptomus_signature_verify(buf, len, "k");
    const char *const secrets[] = {"whsec_x", NULL};
    stripe_signature_verify("t=1700000000,v1=00", buf, len, secrets, 1700000000, 300);
    // text inputs: NUL-terminated copies
    char *s = malloc(len + 1);
    memcpy(s, buf, len);
    s[len] = '\0';
    char bid[37];
    token_verify("secret", s, 1700000000, bid);
    stripe_signature_verify(s, "{}", 2, secrets, 1700000000, 300);
    vapi_hmac_verify(s, s, buf, len, "secret", 1700000000);
    vapi_secret_verify(s, "secret");
    int64_t ms;
    api_rfc3339_parse_ms(s, len, &ms);
    free(s);
}

static void test_mutated_inputs_never_crash_any_edge_parser(void **state) {
    (void)state;
    const char *seeds[] = {
        st_completed, cm_webhook,
        "{\"name\":\"Ann\",\"phone\":\"+15551234567\",\"email\":\"ann@example.com\",\"plan\":\"standard\","
        "\"message\":\"hi\",\"payment_method\":\"stripe\",\"scheduled_for\":\"2023-11-15T10:00:00.5+02:00\"}",
        "{\"message\":{\"type\":\"end-of-call-report\",\"startedAt\":\"2024-01-01T12:00:00.000Z\","
        "\"endedAt\":\"2024-01-01T12:05:30.250Z\",\"durationSeconds\":45.5,\"call\":{\"id\":\"c\"}}}",
        "t=1700000000,v1=d1e4aa90551919f198c22ba0a9691b35338d4b631d54ce1f1465e93b1d41c430,v0=ab",
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJiaWQiOiJiayJ9.JUpDwIFj5ixicf7o0w59eIC3WqCN8DT0Ipzo26EEmEs",
    };
    static const char interesting[] = "{}[]\":,\\.-+eE019TZz \x00\x7f\x80\xc3\xa9\xff";
    char buf[2048];
    for (size_t si = 0; si < sizeof seeds / sizeof *seeds; si++) {
        size_t seedlen = strlen(seeds[si]);
        for (int round = 0; round < 1500; round++) {
            size_t len = seedlen;
            memcpy(buf, seeds[si], len);
            int edits = 1 + (int)(next_rand() % 4);
            for (int k = 0; k < edits; k++) {
                uint64_t r = next_rand();
                size_t pos = len ? (size_t)(r >> 8) % len : 0;
                switch (r % 4) {
                case 0:   // overwrite with an interesting byte
                    if (len) buf[pos] = interesting[(r >> 40) % (sizeof interesting - 1)];
                    break;
                case 1:   // delete
                    if (len) {
                        memmove(buf + pos, buf + pos + 1, len - pos - 1);
                        len--;
                    }
                    break;
                case 2:   // insert
                    if (len < sizeof buf - 1) {
                        memmove(buf + pos + 1, buf + pos, len - pos);
                        buf[pos] = interesting[(r >> 40) % (sizeof interesting - 1)];
                        len++;
                    }
                    break;
                default:   // truncate
                    len = pos;
                    break;
                }
            }
            run_all(buf, len);
        }
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stripe_checkout_session_completed),
        cmocka_unit_test(test_stripe_payment_intent_as_null_or_expanded_object),
        cmocka_unit_test(test_stripe_charge_refunded),
        cmocka_unit_test(test_stripe_refund_events),
        cmocka_unit_test(test_stripe_unknown_types_parse_with_id_and_type),
        cmocka_unit_test(test_stripe_wrong_types_read_as_absent),
        cmocka_unit_test(test_stripe_missing_essentials_fail),
        cmocka_unit_test(test_stripe_not_json_objects_fail),
        cmocka_unit_test(test_cryptomus_providers_webhook_parses),
        cmocka_unit_test(test_cryptomus_optional_fields_and_odd_types),
        cmocka_unit_test(test_cryptomus_missing_essentials_fail),
        cmocka_unit_test(test_vapi_status_update),
        cmocka_unit_test(test_vapi_end_of_call_report_takes_duration_from_timestamps),
        cmocka_unit_test(test_vapi_end_of_call_report_falls_back_to_duration_seconds),
        cmocka_unit_test(test_vapi_takes_times_and_reason_from_the_call_when_absent_above),
        cmocka_unit_test(test_vapi_wrong_types_read_as_absent),
        cmocka_unit_test(test_vapi_other_message_types_need_no_call),
        cmocka_unit_test(test_vapi_missing_essentials_fail),
        cmocka_unit_test(test_mutated_inputs_never_crash_any_edge_parser),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
