// sandbox/sbutil.c — see sbutil.h.
#include "sandbox/sbutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/util.h"

int sb_vec_push(sb_vec_t *v, void *item) {
    if (v->len == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 16;
        void **bigger = realloc(v->items, cap * sizeof *bigger);
        if (!bigger) return -1;
        v->items = bigger;
        v->cap = cap;
    }
    v->items[v->len++] = item;
    return 0;
}

void sb_vec_remove(sb_vec_t *v, size_t index) {
    if (index >= v->len) return;
    memmove(&v->items[index], &v->items[index + 1], (v->len - index - 1) * sizeof *v->items);
    v->len--;
}

void sb_vec_clear(sb_vec_t *v, void (*free_item)(void *)) {
    for (size_t i = 0; free_item && i < v->len; i++) free_item(v->items[i]);
    free(v->items);
    v->items = NULL;
    v->len = v->cap = 0;
}

static bool buf_reserve(sb_buf_t *b, size_t extra) {
    if (b->failed) return false;
    if (b->len + extra + 1 <= b->cap) return true;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra + 1) cap *= 2;
    char *bigger = realloc(b->data, cap);
    if (!bigger) {
        b->failed = true;
        return false;
    }
    b->data = bigger;
    b->cap = cap;
    return true;
}

void sb_buf_add(sb_buf_t *b, const char *s, size_t n) {
    if (!buf_reserve(b, n)) return;
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
}

void sb_buf_puts(sb_buf_t *b, const char *s) { sb_buf_add(b, s, strlen(s)); }

void sb_buf_printf(sb_buf_t *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || !buf_reserve(b, (size_t)n)) return;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

char *sb_buf_take(sb_buf_t *b, size_t *len) {
    if (b->failed) {
        sb_buf_free(b);
        return NULL;
    }
    char *out = b->data ? b->data : strdup("");
    if (len) *len = b->data ? b->len : 0;
    b->data = NULL;
    b->len = b->cap = 0;
    return out;
}

void sb_buf_free(sb_buf_t *b) {
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
    b->failed = false;
}

void sb_random_id(const char *prefix, size_t n, char *out, size_t size) {
    static const char alphabet[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    if (size == 0) return;
    size_t p = strlen(prefix);
    if (p >= size) p = size - 1;
    memcpy(out, prefix, p);
    unsigned char rnd[64];
    size_t i = 0;
    while (i < n && p + i < size - 1) {
        size_t chunk = n - i < sizeof rnd ? n - i : sizeof rnd;
        if (util_random_bytes(rnd, chunk) != 0) memset(rnd, 0, chunk);
        for (size_t k = 0; k < chunk && p + i < size - 1; k++, i++)
            out[p + i] = alphabet[rnd[k] % (sizeof alphabet - 1)];
    }
    out[p + i] = '\0';
}

void sb_random_hex(size_t nbytes, char *out, size_t size) {
    static const char hex[] = "0123456789abcdef";
    if (size == 0) return;
    size_t o = 0;
    for (size_t i = 0; i < nbytes && o + 2 < size; i++) {
        unsigned char c = 0;
        if (util_random_bytes(&c, 1) != 0) c = 0;
        out[o++] = hex[c >> 4];
        out[o++] = hex[c & 15];
    }
    out[o] = '\0';
}

int64_t sb_now_s(void) { return util_now_us() / 1000000; }

int64_t sb_mono_ms(void) { return util_monotonic_ms(); }

char *sb_html_escape(const char *text) {
    sb_buf_t b = {0};
    for (const char *s = text ? text : ""; *s; s++) {
        switch (*s) {
        case '&': sb_buf_puts(&b, "&amp;"); break;
        case '<': sb_buf_puts(&b, "&lt;"); break;
        case '>': sb_buf_puts(&b, "&gt;"); break;
        case '"': sb_buf_puts(&b, "&quot;"); break;
        case '\'': sb_buf_puts(&b, "&#39;"); break;
        default: sb_buf_add(&b, s, 1);
        }
    }
    return sb_buf_take(&b, NULL);
}

bool sb_is_http_url(const char *text) {
    if (!text) return false;
    const char *rest = NULL;
    if (strncmp(text, "http://", 7) == 0)
        rest = text + 7;
    else if (strncmp(text, "https://", 8) == 0)
        rest = text + 8;
    if (!rest || !*rest || *rest == '/') return false;
    for (const unsigned char *s = (const unsigned char *)text; *s; s++)
        if (*s <= ' ' || *s == 0x7f) return false;
    return true;
}

int sb_decimal_parse(const char *text, int64_t *out_e8, int *decimals) {
    if (!text || !*text) return -1;
    int64_t whole = 0, frac = 0;
    int nfrac = 0;
    const char *s = text;
    if (*s < '0' || *s > '9') return -1;
    for (; *s >= '0' && *s <= '9'; s++) {
        if (whole > 99999999999LL) return -1;   // keeps whole * 1e8 inside int64
        whole = whole * 10 + (*s - '0');
    }
    if (*s == '.') {
        s++;
        if (*s < '0' || *s > '9') return -1;
        for (; *s >= '0' && *s <= '9'; s++) {
            if (++nfrac > 8) return -1;
            frac = frac * 10 + (*s - '0');
        }
    }
    if (*s) return -1;
    for (int i = nfrac; i < 8; i++) frac *= 10;
    *out_e8 = whole * 100000000LL + frac;
    if (decimals) *decimals = nfrac;
    return 0;
}

void sb_decimal_format(int64_t e8, int decimals, char *out, size_t size) {
    if (decimals < 0) decimals = 0;
    if (decimals > 8) decimals = 8;
    if (e8 < 0) e8 = 0;
    int64_t whole = e8 / 100000000LL, frac = e8 % 100000000LL;
    for (int i = decimals; i < 8; i++) frac /= 10;
    if (decimals == 0)
        snprintf(out, size, "%lld", (long long)whole);
    else
        snprintf(out, size, "%lld.%0*lld", (long long)whole, decimals, (long long)frac);
}
