// realtime/api_error.h — what every edge module (booking_request, webhook_parse, ...) shares:
// the error value they fill in and its JSON shape, plus the two parsing helpers all of them need
// (a depth-bounded JSON loader and an RFC3339 timestamp parser).
//
// The error shape is CONTRACT.md's: {"error":{"code":"…","field":"…","message":"…"}}, "field"
// omitted when empty. Messages are fixed texts chosen by us: they never quote the request, so no
// personal data can leak into a response or a log line built from them.
//
// Pure functions: no I/O, no globals; callable from any thread.
#ifndef SWEETY_API_ERROR_H
#define SWEETY_API_ERROR_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    int http_status;     // 400, 413, ...
    char code[48];       // stable machine code: "invalid_phone"
    char field[32];      // request field concerned, "" when none
    char message[160];   // fixed human text, never echoes input
} api_error_t;

// Fills *e (any argument string may be NULL → ""); texts longer than the buffers are cut.
// A NULL e is allowed and does nothing, so callers may pass err=NULL when they only need the code.
void api_error_set(api_error_t *e, int http_status, const char *code, const char *field,
                   const char *message);

// {"error":{"code":…,"field":…,"message":…}} as a malloc'ed, NUL-terminated compact JSON string
// (the caller frees it); NULL when out of memory.
char *api_error_json(const api_error_t *e);

// The same, with every member of the JSON object `extra` (not stolen; may be NULL) appended inside
// "error", e.g. {"retry_after_s": 3600}. Members named code, field or message are ignored.
char *api_error_json_extra(const api_error_t *e, const json_t *extra);

// Deepest nesting of arrays/objects api_json_loadb accepts. Our own inputs are flat; provider
// webhooks nest about 8 levels. jansson's own limit (2048, recursive) is far above what we want.
#define API_JSON_MAX_DEPTH 64

// json_loadb(buf, len, flags) after an O(len) pre-scan that refuses nesting deeper than
// API_JSON_MAX_DEPTH (bounds the parser's recursion). NULL for any failure (also buf NULL).
// jansson itself refuses invalid UTF-8 and, without JSON_ALLOW_NUL, "\u0000" in strings.
json_t *api_json_loadb(const char *buf, size_t len, size_t flags);

// RFC3339 date-time "2026-11-21T20:31:00Z", "…T20:31:00.123456+02:00" (T/t, Z/z, offset ±hh:mm,
// 1–9 fractional digits, seconds 00–60, real calendar days, years 0000–9999) to epoch
// milliseconds, fraction truncated. The text is s[0..len). 0, or -1 when not RFC3339.
int api_rfc3339_parse_ms(const char *s, size_t len, int64_t *out_ms);

#endif
