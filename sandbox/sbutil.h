// sandbox/sbutil.h — small helpers the sandbox's modules share: ids in the providers' formats, a
// growable pointer array, a string builder, HTML escaping, decimal amounts and clocks.
//
// Nothing here keeps state; every function is safe on any thread.
#ifndef SWEETY_SANDBOX_SBUTIL_H
#define SWEETY_SANDBOX_SBUTIL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

// ---- growable array of pointers ----------------------------------------------------------------
typedef struct {
    void **items;
    size_t len, cap;
} sb_vec_t;

int sb_vec_push(sb_vec_t *v, void *item);                   // 0, or -1 when out of memory
void sb_vec_remove(sb_vec_t *v, size_t index);              // shifts the rest down, does not free
void sb_vec_clear(sb_vec_t *v, void (*free_item)(void *));  // frees items (when given) and the array

// ---- string builder ----------------------------------------------------------------------------
typedef struct {
    char *data;     // always NUL-terminated once anything was added
    size_t len, cap;
    bool failed;    // an allocation failed: the content is incomplete
} sb_buf_t;

void sb_buf_add(sb_buf_t *b, const char *s, size_t n);
void sb_buf_puts(sb_buf_t *b, const char *s);
void sb_buf_printf(sb_buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
// Hands the text over (malloc'ed, never NULL unless allocation failed) and empties the builder.
char *sb_buf_take(sb_buf_t *b, size_t *len);
void sb_buf_free(sb_buf_t *b);

// ---- ids, time, text ---------------------------------------------------------------------------
// prefix followed by n random characters from [0-9A-Za-z], e.g. ("cs_test_", 24). out must hold
// strlen(prefix) + n + 1 bytes; a shorter buffer gets a truncated id.
void sb_random_id(const char *prefix, size_t n, char *out, size_t size);
// 2 * nbytes random lowercase hex digits.
void sb_random_hex(size_t nbytes, char *out, size_t size);
int64_t sb_now_s(void);    // wall clock, unix seconds
int64_t sb_mono_ms(void);  // monotonic milliseconds

// HTML-escapes & < > " ' (malloc'ed; NULL only when out of memory).
char *sb_html_escape(const char *text);
bool sb_is_http_url(const char *text);   // "http://x" or "https://x" without spaces or controls

// ---- decimal amounts ---------------------------------------------------------------------------
// Parses a plain non-negative decimal ("15", "15.00", "0.00012345"; at most 8 decimals, no sign,
// no exponent) into units of 1e-8. *decimals gets the number of digits after the point. 0 or -1.
int sb_decimal_parse(const char *text, int64_t *out_e8, int *decimals);
// Formats units of 1e-8 with exactly `decimals` digits (0..8) after the point, rounding down.
void sb_decimal_format(int64_t e8, int decimals, char *out, size_t size);

#endif
