// common/util.h — small helpers every module needs: clocks, RFC3339, random ids, masking.
#ifndef SWEETY_UTIL_H
#define SWEETY_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

int64_t util_now_us(void);        // wall clock, microseconds since the epoch
int64_t util_monotonic_ms(void);  // monotonic clock, milliseconds

// "2026-11-21T20:31:00.123Z". buf needs 32 bytes at least.
void util_rfc3339_ms(int64_t epoch_us, char *buf, size_t size);

// Fills buf with n cryptographically random bytes (OpenSSL). Returns 0 or -1.
int util_random_bytes(void *buf, size_t n);

// Random UUID v4, lowercase, 36 characters + NUL (buf needs 37 bytes). Returns 0 or -1.
int util_uuid_v4(char *buf, size_t size);

// Constant-time equality of two byte strings (false when lengths differ).
bool util_consttime_equal(const void *a, size_t alen, const void *b, size_t blen);

// Masks personal data for logs and traces:
//   phone "+15551234567" -> "+1*******567"; email "ann@example.com" -> "a***@example.com";
//   anything else -> "***". Output is always NUL-terminated.
void util_mask_phone(const char *phone, char *out, size_t size);
void util_mask_email(const char *email, char *out, size_t size);

// Parses a base-10 integer that must fill the whole string, within [min, max]. 0 or -1.
int util_parse_int64(const char *text, int64_t min, int64_t max, int64_t *out);

#endif
