// realtime/booking_request.c — POST /api/bookings body → booking_request_t (see the header).
//
// jansson does the JSON (it already refuses invalid UTF-8 and "\u0000"); everything else is checked
// here byte by byte, so the rules are exactly CONTRACT.md's and do not depend on a library's idea of
// an email address. Choices where CONTRACT.md is silent:
// - an optional field that is null or "" counts as absent (web forms send empty inputs);
// - duplicate keys make the body invalid_json (which of two "phone" values would we take?);
// - the name loses leading/trailing spaces (U+0020) before it is counted; all-space is invalid;
// - the message may hold any valid UTF-8 except NUL, newlines included (it is free text; there is
//   no error code for its content);
// - payment_method is not looked at all (value or type) for free_trial: it becomes "none".
#include "realtime/booking_request.h"

#include <openssl/evp.h>
#include <string.h>

long booking_utf8_count(const char *str, size_t len, bool *has_control) {
    const unsigned char *s = (const unsigned char *)str;
    bool control = false;
    long count = 0;
    if (!s && len) return -1;
    for (size_t i = 0; i < len; count++) {
        unsigned char c = s[i];
        uint32_t cp;
        size_t n;
        if (c < 0x80) {
            cp = c;
            n = 1;
        } else if (c >= 0xC2 && c <= 0xDF) {
            cp = c & 0x1F;
            n = 2;
        } else if (c >= 0xE0 && c <= 0xEF) {
            cp = c & 0x0F;
            n = 3;
        } else if (c >= 0xF0 && c <= 0xF4) {
            cp = c & 0x07;
            n = 4;
        } else {
            return -1;   // continuation byte as lead, overlong 2-byte lead (C0/C1), or > F4
        }
        if (n > len - i) return -1;
        for (size_t k = 1; k < n; k++) {
            if ((s[i + k] & 0xC0) != 0x80) return -1;
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
            (cp >= 0xD800 && cp <= 0xDFFF))
            return -1;
        if (cp < 0x20 || cp == 0x7F || (cp >= 0x80 && cp <= 0x9F)) control = true;
        i += n;
    }
    if (has_control) *has_control = control;
    return count;
}

bool booking_phone_valid(const char *s, size_t len) {
    if (!s || len < 9 || len > 16 || s[0] != '+' || s[1] < '1' || s[1] > '9') return false;
    for (size_t i = 2; i < len; i++)
        if (s[i] < '0' || s[i] > '9') return false;
    return true;
}

static bool is_alnum(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

// RFC 5322 atext (dot-atom without quoting, comments or IP literals).
static bool is_atext(char c) {
    return is_alnum(c) || (c && strchr("!#$%&'*+/=?^_`{|}~-", c) != NULL);
}

bool booking_email_valid(const char *s, size_t len) {
    if (!s || len < 3 || len > BOOKING_EMAIL_MAX) return false;
    const char *at = memchr(s, '@', len);
    if (!at || memchr(at + 1, '@', len - (size_t)(at - s) - 1)) return false;
    size_t local = (size_t)(at - s);
    if (local < 1 || local > 64 || s[0] == '.' || s[local - 1] == '.') return false;
    for (size_t i = 0; i < local; i++) {
        if (s[i] == '.') {
            if (s[i + 1] == '.') return false;
        } else if (!is_atext(s[i])) {
            return false;
        }
    }
    const char *d = at + 1;
    size_t dlen = len - local - 1;
    if (dlen < 3 || dlen > 253) return false;
    size_t labels = 0, start = 0;
    for (size_t i = 0; i <= dlen; i++) {
        if (i < dlen && d[i] != '.') {
            if (!is_alnum(d[i]) && d[i] != '-') return false;
            continue;
        }
        size_t n = i - start;   // label d[start..i)
        if (n < 1 || n > 63 || d[start] == '-' || d[i - 1] == '-') return false;
        labels++;
        start = i + 1;
    }
    return labels >= 2;
}

static const char *const plans[] = {"free_trial", "standard", "extended", "premium", NULL};

// A member that is absent, null or "" is "not given".
static bool given(const json_t *v) {
    return v && !json_is_null(v) && !(json_is_string(v) && json_string_length(v) == 0);
}

static int fail(api_error_t *err, int status, const char *code, const char *field, const char *msg) {
    api_error_set(err, status, code, field, msg);
    return -1;
}

static int check_name(const json_t *v, booking_request_t *r, api_error_t *err) {
    static const char msg[] = "name must be 1 to 100 characters, without control characters";
    if (!json_is_string(v)) return fail(err, 400, "invalid_name", "name", msg);
    const char *s = json_string_value(v);
    size_t len = json_string_length(v);
    while (len && s[0] == ' ') s++, len--;
    while (len && s[len - 1] == ' ') len--;
    bool control = false;
    long chars = booking_utf8_count(s, len, &control);
    if (chars < 1 || chars > BOOKING_NAME_MAX_CHARS || control || len >= sizeof r->name)
        return fail(err, 400, "invalid_name", "name", msg);
    memcpy(r->name, s, len);
    r->name[len] = '\0';
    return 0;
}

static int check_phone(const json_t *v, booking_request_t *r, api_error_t *err) {
    if (!json_is_string(v) || !booking_phone_valid(json_string_value(v), json_string_length(v)))
        return fail(err, 400, "invalid_phone", "phone",
                    "phone must be E.164, like +15551234567");
    memcpy(r->phone, json_string_value(v), json_string_length(v) + 1);
    return 0;
}

static int check_email(const json_t *v, booking_request_t *r, api_error_t *err) {
    if (!given(v)) return 0;
    if (!json_is_string(v) || !booking_email_valid(json_string_value(v), json_string_length(v)))
        return fail(err, 400, "invalid_email", "email", "email must be a valid address, like ann@example.com");
    memcpy(r->email, json_string_value(v), json_string_length(v) + 1);
    return 0;
}

static int check_plan(const json_t *v, booking_request_t *r, api_error_t *err) {
    const char *s = json_is_string(v) ? json_string_value(v) : NULL;
    for (int i = 0; s && plans[i]; i++) {
        if (strlen(plans[i]) == json_string_length(v) && !strcmp(s, plans[i])) {
            memcpy(r->plan, plans[i], strlen(plans[i]) + 1);
            return 0;
        }
    }
    return fail(err, 400, "invalid_plan", "plan",
                "plan must be one of free_trial, standard, extended, premium");
}

static int check_message(const json_t *v, booking_request_t *r, api_error_t *err) {
    static const char msg[] = "message must be text of at most 500 characters";
    if (!given(v)) return 0;
    if (!json_is_string(v)) return fail(err, 400, "message_too_long", "message", msg);
    size_t len = json_string_length(v);
    long chars = booking_utf8_count(json_string_value(v), len, NULL);
    if (chars < 0 || chars > BOOKING_MESSAGE_MAX_CHARS || len >= sizeof r->message)
        return fail(err, 400, "message_too_long", "message", msg);
    memcpy(r->message, json_string_value(v), len + 1);
    return 0;
}

static int check_scheduled_for(const json_t *v, int64_t now_s, booking_request_t *r,
                               api_error_t *err) {
    static const char msg[] =
        "scheduled_for must be an RFC3339 time, not in the past and at most 30 days ahead";
    if (!given(v)) return 0;
    int64_t ms;
    if (!json_is_string(v) ||
        api_rfc3339_parse_ms(json_string_value(v), json_string_length(v), &ms) != 0)
        return fail(err, 400, "invalid_scheduled_for", "scheduled_for", msg);
    int64_t t = ms / 1000 - (ms % 1000 < 0);   // floor
    if (t < now_s - BOOKING_SCHEDULE_SKEW_S || t > now_s + BOOKING_SCHEDULE_AHEAD_S)
        return fail(err, 400, "invalid_scheduled_for", "scheduled_for", msg);
    r->scheduled_for = t;
    return 0;
}

static int check_payment_method(const json_t *v, booking_request_t *r, api_error_t *err) {
    if (!strcmp(r->plan, "free_trial")) {
        strcpy(r->payment_method, "none");
        return 0;
    }
    if (!given(v)) {
        strcpy(r->payment_method, "stripe");
        return 0;
    }
    const char *s = json_is_string(v) ? json_string_value(v) : "";
    size_t len = json_is_string(v) ? json_string_length(v) : 0;
    if ((len == 6 && !strcmp(s, "stripe")) || (len == 9 && !strcmp(s, "cryptomus"))) {
        memcpy(r->payment_method, s, len + 1);
        return 0;
    }
    return fail(err, 400, "invalid_payment_method", "payment_method",
                "payment_method must be stripe or cryptomus");
}

int booking_request_parse(const char *body, size_t len, int64_t now_s, booking_request_t *out,
                          api_error_t *err) {
    if (len > BOOKING_BODY_MAX)
        return fail(err, 413, "too_large", "", "the request body is larger than 16 KiB");
    json_t *root = api_json_loadb(body, len, JSON_REJECT_DUPLICATES);
    if (!json_is_object(root)) {
        json_decref(root);
        return fail(err, 400, "invalid_json", "", "the body must be a JSON object");
    }
    booking_request_t r;
    memset(&r, 0, sizeof r);
    int rc = -1;
    if (check_name(json_object_get(root, "name"), &r, err) == 0 &&
        check_phone(json_object_get(root, "phone"), &r, err) == 0 &&
        check_email(json_object_get(root, "email"), &r, err) == 0 &&
        check_plan(json_object_get(root, "plan"), &r, err) == 0 &&
        check_message(json_object_get(root, "message"), &r, err) == 0 &&
        check_scheduled_for(json_object_get(root, "scheduled_for"), now_s, &r, err) == 0 &&
        check_payment_method(json_object_get(root, "payment_method"), &r, err) == 0) {
        *out = r;
        rc = 0;
    }
    json_decref(root);
    return rc;
}

void booking_request_hash(const char *body, size_t len, char hex[65]) {
    static const char digits[] = "0123456789abcdef";
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    hex[0] = '\0';
    if (!body && len) return;
    if (EVP_Digest(body ? body : "", len, md, &mdlen, EVP_sha256(), NULL) != 1 || mdlen != 32) return;
    for (unsigned int i = 0; i < mdlen; i++) {
        hex[2 * i] = digits[md[i] >> 4];
        hex[2 * i + 1] = digits[md[i] & 15];
    }
    hex[64] = '\0';
}
