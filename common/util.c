// common/util.c — see util.h.
#include "common/util.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int64_t util_now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t util_monotonic_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void util_rfc3339_ms(int64_t epoch_us, char *buf, size_t size) {
    time_t secs = (time_t)(epoch_us / 1000000);
    int ms = (int)((epoch_us % 1000000) / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    snprintf(buf, size, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ms);
}

int util_random_bytes(void *buf, size_t n) {
    return RAND_bytes(buf, (int)n) == 1 ? 0 : -1;
}

int util_uuid_v4(char *buf, size_t size) {
    unsigned char b[16];
    if (size < 37 || util_random_bytes(b, sizeof b) != 0) return -1;
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
    snprintf(buf, size,
             "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
             b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13],
             b[14], b[15]);
    return 0;
}

bool util_consttime_equal(const void *a, size_t alen, const void *b, size_t blen) {
    if (alen != blen) return false;
    return CRYPTO_memcmp(a, b, alen) == 0;
}

void util_mask_phone(const char *phone, char *out, size_t size) {
    size_t len = phone ? strlen(phone) : 0;
    if (size == 0) return;
    if (len < 6 || len + 1 > size) {
        snprintf(out, size, "***");
        return;
    }
    // keep the leading '+' and first digit (country hint) and the last 3 digits; only ASCII is
    // kept, so a byte of a multi-byte character is never cut off from the rest (invalid UTF-8)
    for (size_t i = 0; i < len; i++)
        out[i] = (i < 2 || i >= len - 3) && (unsigned char)phone[i] < 0x80 ? phone[i] : '*';
    out[len] = '\0';
}

void util_mask_email(const char *email, char *out, size_t size) {
    const char *at = email ? strchr(email, '@') : NULL;
    if (size == 0) return;
    if (!at || at == email || strlen(at) + 5 > size) {
        snprintf(out, size, "***");
        return;
    }
    snprintf(out, size, "%c***%s", (unsigned char)email[0] < 0x80 ? email[0] : '*', at);
}

int util_parse_int64(const char *text, int64_t min, int64_t max, int64_t *out) {
    if (!text || !*text) return -1;
    errno = 0;
    char *end = NULL;
    long long v = strtoll(text, &end, 10);
    if (errno != 0 || !end || *end != '\0' || v < min || v > max) return -1;
    *out = (int64_t)v;
    return 0;
}
