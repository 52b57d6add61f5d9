// realtime/api_error.c — see api_error.h.
#include "realtime/api_error.h"

#include <stdbool.h>
#include <string.h>

// Copies src into dst[size], cut on a UTF-8 character boundary so the result stays valid text.
static void copy_text(char *dst, size_t size, const char *src) {
    if (size == 0) return;
    size_t n = src ? strlen(src) : 0;
    if (n >= size) {
        n = size - 1;
        // back off continuation bytes, then the lead byte of the character they belonged to
        while (n > 0 && ((unsigned char)src[n] & 0xC0) == 0x80) n--;
    }
    if (n) memcpy(dst, src, n);
    dst[n] = '\0';
}

void api_error_set(api_error_t *e, int http_status, const char *code, const char *field,
                   const char *message) {
    if (!e) return;
    e->http_status = http_status;
    copy_text(e->code, sizeof e->code, code);
    copy_text(e->field, sizeof e->field, field);
    copy_text(e->message, sizeof e->message, message);
}

// jansson refuses invalid UTF-8 in json_string(); an api_error_t filled by hand could hold some.
static json_t *text(const char *s, size_t size) {
    size_t n = strnlen(s, size);
    json_t *v = json_stringn(s, n);
    return v ? v : json_string("");
}

char *api_error_json_extra(const api_error_t *e, const json_t *extra) {
    if (!e) return NULL;
    json_t *inner = json_object();
    json_t *outer = json_object();
    if (!inner || !outer) goto fail;
    if (json_object_set_new(inner, "code", text(e->code, sizeof e->code)) != 0) goto fail;
    if (strnlen(e->field, sizeof e->field) > 0 &&
        json_object_set_new(inner, "field", text(e->field, sizeof e->field)) != 0)
        goto fail;
    if (json_object_set_new(inner, "message", text(e->message, sizeof e->message)) != 0) goto fail;
    if (json_is_object(extra)) {
        const char *key;
        json_t *value;
        // json_object_foreach wants a non-const object; we only read it
        json_object_foreach((json_t *)extra, key, value) {
            if (!strcmp(key, "code") || !strcmp(key, "field") || !strcmp(key, "message")) continue;
            if (json_object_set(inner, key, value) != 0) goto fail;
        }
    }
    if (json_object_set_new(outer, "error", inner) != 0) {
        inner = NULL;   // set_new consumed it even on failure
        goto fail;
    }
    char *out = json_dumps(outer, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(outer);
    return out;
fail:
    json_decref(inner);
    json_decref(outer);
    return NULL;
}

char *api_error_json(const api_error_t *e) {
    return api_error_json_extra(e, NULL);
}

// Exact on valid JSON. On invalid JSON it may count brackets inside broken strings, which only
// matters for input jansson refuses anyway.
static bool depth_ok(const char *buf, size_t len, int max) {
    int depth = 0;
    bool in_string = false;
    for (size_t i = 0; i < len; i++) {
        char c = buf[i];
        if (in_string) {
            if (c == '\\') i++;
            else if (c == '"') in_string = false;
        } else if (c == '"') {
            in_string = true;
        } else if (c == '[' || c == '{') {
            if (++depth > max) return false;
        } else if (c == ']' || c == '}') {
            depth--;
        }
    }
    return true;
}

json_t *api_json_loadb(const char *buf, size_t len, size_t flags) {
    if (!buf || !depth_ok(buf, len, API_JSON_MAX_DEPTH)) return NULL;
    json_error_t jerr;
    return json_loadb(buf, len, flags, &jerr);
}

static bool digits(const char *s, int n, int *out) {
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return false;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return true;
}

static bool leap(int y) {
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil).
static int64_t days_from_civil(int64_t y, int m, int d) {
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

int api_rfc3339_parse_ms(const char *s, size_t len, int64_t *out_ms) {
    static const int mdays[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    // "YYYY-MM-DDTHH:MM:SS" + ".fffffffff" + "+hh:mm" is at most 35 characters
    if (!s || !out_ms || len < 20 || len > 35) return -1;
    int year, mon, day, hour, min, sec;
    if (!digits(s, 4, &year) || s[4] != '-' || !digits(s + 5, 2, &mon) || s[7] != '-' ||
        !digits(s + 8, 2, &day) || (s[10] != 'T' && s[10] != 't') || !digits(s + 11, 2, &hour) ||
        s[13] != ':' || !digits(s + 14, 2, &min) || s[16] != ':' || !digits(s + 17, 2, &sec))
        return -1;
    if (mon < 1 || mon > 12 || day < 1 || hour > 23 || min > 59 || sec > 60) return -1;
    if (day > mdays[mon - 1] + (mon == 2 && leap(year))) return -1;
    size_t i = 19;
    int ms = 0;
    if (s[i] == '.') {
        size_t start = ++i;
        while (i < len && s[i] >= '0' && s[i] <= '9') {
            if (i - start < 3) ms = ms * 10 + (s[i] - '0');
            i++;
        }
        size_t nfrac = i - start;
        if (nfrac == 0 || nfrac > 9) return -1;
        for (size_t k = nfrac; k < 3; k++) ms *= 10;
    }
    if (i >= len) return -1;
    int offset_s = 0;
    if ((s[i] == 'Z' || s[i] == 'z') && i + 1 == len) {
        offset_s = 0;
    } else if ((s[i] == '+' || s[i] == '-') && i + 6 == len) {
        int oh, om;
        if (!digits(s + i + 1, 2, &oh) || s[i + 3] != ':' || !digits(s + i + 4, 2, &om) ||
            oh > 23 || om > 59)
            return -1;
        offset_s = (oh * 3600 + om * 60) * (s[i] == '-' ? -1 : 1);
    } else {
        return -1;
    }
    int64_t secs = days_from_civil(year, mon, day) * 86400 + hour * 3600 + min * 60 + sec - offset_s;
    *out_ms = secs * 1000 + ms;
    return 0;
}
