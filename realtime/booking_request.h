// realtime/booking_request.h — the body of POST /api/bookings, parsed and validated
// (CONTRACT.md, "POST /api/bookings") into a value struct with fixed-size buffers.
//
// Called by the HTTP actor on its service thread once the whole body is in (size and media type
// already checked there). Pure: no I/O, no globals, bounded work for any input, so it is also a
// fuzz target. Error messages never repeat what the client sent.
#ifndef SWEETY_BOOKING_REQUEST_H
#define SWEETY_BOOKING_REQUEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "realtime/api_error.h"

#define BOOKING_BODY_MAX (16 * 1024)    // CONTRACT: 413 too_large above
#define BOOKING_NAME_MAX_CHARS 100
#define BOOKING_MESSAGE_MAX_CHARS 500
#define BOOKING_EMAIL_MAX 254
#define BOOKING_SCHEDULE_SKEW_S 60                      // "not in the past", with clock skew
#define BOOKING_SCHEDULE_AHEAD_S (30 * 24 * 3600)      // at most 30 days ahead

typedef struct {
    char name[BOOKING_NAME_MAX_CHARS * 4 + 1];         // UTF-8, 1–100 code points
    char phone[17];                                    // "+" and 8–15 digits
    char email[BOOKING_EMAIL_MAX + 1];                 // "" when not given
    char plan[16];                                     // free_trial | standard | extended | premium
    char message[BOOKING_MESSAGE_MAX_CHARS * 4 + 1];   // "" when not given
    char payment_method[16];                           // stripe | cryptomus | none (free_trial)
    int64_t scheduled_for;                             // epoch seconds, 0 when not given
} booking_request_t;

// Parses and validates body[0..len). now_s: the current time, epoch seconds (for scheduled_for).
// Returns 0 and fills *out; or -1 and fills *err (http_status 400, or 413 above
// BOOKING_BODY_MAX) leaving *out untouched. Codes: invalid_json, invalid_name, invalid_phone,
// invalid_email, invalid_plan, message_too_long, invalid_scheduled_for, invalid_payment_method,
// too_large. Fields are checked in the order name, phone, email, plan, message, scheduled_for,
// payment_method; the first failure is reported.
int booking_request_parse(const char *body, size_t len, int64_t now_s, booking_request_t *out,
                          api_error_t *err);

// Lowercase hex SHA-256 of the raw body (for comparing an Idempotency-Key's first request).
// hex is "" in the (practically impossible) case OpenSSL fails; treat "" as "different".
void booking_request_hash(const char *body, size_t len, char hex[65]);

// Number of code points in s[0..len) if it is valid UTF-8 (shortest form, no surrogates, at most
// U+10FFFF), else -1. *has_control (may be NULL) tells whether a C0 control, DEL or a C1 control
// (U+0080–U+009F) occurs.
long booking_utf8_count(const char *s, size_t len, bool *has_control);

// The pragmatic checks used above, exposed for tests and for other edges that take the same data.
bool booking_phone_valid(const char *s, size_t len);
bool booking_email_valid(const char *s, size_t len);

#endif
