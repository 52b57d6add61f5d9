// tests/fuzz/fuzz_booking_request.c — the body of POST /api/bookings (realtime/booking_request.c).
//
// Input: the raw request body. Beyond "no crash, no leak", an accepted body must satisfy every rule
// CONTRACT.md states for the fields it produced, and a refused one must carry a 400/413 error that
// renders as JSON.
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "realtime/booking_request.h"
#include "tests/fuzz/fuzz.h"

static bool terminated(const char *s, size_t size) {
    return memchr(s, '\0', size) != NULL;
}

static void check_accepted(const booking_request_t *r) {
    FUZZ_CHECK(terminated(r->name, sizeof r->name) && terminated(r->phone, sizeof r->phone) &&
               terminated(r->email, sizeof r->email) && terminated(r->plan, sizeof r->plan) &&
               terminated(r->message, sizeof r->message) &&
               terminated(r->payment_method, sizeof r->payment_method));
    size_t nlen = strlen(r->name);
    bool control = true;
    long chars = booking_utf8_count(r->name, nlen, &control);
    FUZZ_CHECK(chars >= 1 && chars <= BOOKING_NAME_MAX_CHARS && !control);
    FUZZ_CHECK(r->name[0] != ' ' && r->name[nlen - 1] != ' ');
    FUZZ_CHECK(booking_phone_valid(r->phone, strlen(r->phone)));
    FUZZ_CHECK(r->email[0] == '\0' || booking_email_valid(r->email, strlen(r->email)));
    bool free_trial = !strcmp(r->plan, "free_trial");
    FUZZ_CHECK(free_trial || !strcmp(r->plan, "standard") || !strcmp(r->plan, "extended") ||
               !strcmp(r->plan, "premium"));
    long mchars = booking_utf8_count(r->message, strlen(r->message), NULL);
    FUZZ_CHECK(mchars >= 0 && mchars <= BOOKING_MESSAGE_MAX_CHARS);
    if (free_trial) FUZZ_CHECK(!strcmp(r->payment_method, "none"));
    else FUZZ_CHECK(!strcmp(r->payment_method, "stripe") || !strcmp(r->payment_method, "cryptomus"));
    FUZZ_CHECK(r->scheduled_for == 0 || (r->scheduled_for >= FUZZ_NOW - BOOKING_SCHEDULE_SKEW_S &&
                                         r->scheduled_for <= FUZZ_NOW + BOOKING_SCHEDULE_AHEAD_S));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    booking_request_t r;
    api_error_t err;
    memset(&r, 0x5a, sizeof r);
    memset(&err, 0, sizeof err);
    if (booking_request_parse((const char *)data, size, FUZZ_NOW, &r, &err) == 0) {
        check_accepted(&r);
    } else {
        FUZZ_CHECK(err.http_status == 400 || err.http_status == 413);
        FUZZ_CHECK(err.code[0] != '\0');
        char *json = api_error_json(&err);
        FUZZ_CHECK(json != NULL);
        free(json);
    }
    char hex[65];
    booking_request_hash((const char *)data, size, hex);
    FUZZ_CHECK(strlen(hex) == 64);
    return 0;
}
