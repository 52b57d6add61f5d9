// tests/unit/test_booking_request.c — realtime/booking_request.c and realtime/api_error.c: the
// body of POST /api/bookings against every rule and error code of CONTRACT.md, UTF-8, E.164,
// email and RFC3339 edges, and the JSON error shape.
//
// NOW is 2023-11-14T22:13:20Z (1700000000); expected epoch values were computed with
// `date -u -d … +%s`, the body hash with `sha256sum`.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
// cmocka after the standard headers it needs
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "realtime/api_error.h"
#include "realtime/booking_request.h"

#define NOW 1700000000LL

static const char valid_body[] =
    "{\"name\":\"Ann\",\"phone\":\"+15551234567\",\"email\":\"ann@example.com\",\"plan\":\"standard\","
    "\"message\":\"hello\",\"payment_method\":\"cryptomus\",\"scheduled_for\":\"2023-11-15T10:00:00Z\"}";

static int parse(const char *body, booking_request_t *r, api_error_t *e) {
    memset(e, 0, sizeof *e);
    return booking_request_parse(body, strlen(body), NOW, r, e);
}

// Expects the body to fail with http 400 and `code`, naming `field`.
static void expect_error(const char *body, const char *code, const char *field) {
    booking_request_t r;
    api_error_t e;
    memset(&r, 0x5A, sizeof r);
    booking_request_t before = r;
    assert_int_equal(parse(body, &r, &e), -1);
    assert_string_equal(e.code, code);
    assert_string_equal(e.field, field);
    assert_int_equal(e.http_status, 400);
    assert_true(strlen(e.message) > 0);
    assert_memory_equal(&r, &before, sizeof r);   // untouched on failure
}

// A body with the base fields and one member replaced/added ("KEY":VALUE as raw JSON).
static char *body_with(const char *name_json, const char *phone_json, const char *extra) {
    char *b = NULL;
    if (asprintf(&b, "{\"name\":%s,\"phone\":%s,\"plan\":\"standard\"%s%s}", name_json, phone_json,
                 extra && *extra ? "," : "", extra ? extra : "") < 0)
        abort();
    return b;
}

static void expect_ok_with(const char *extra, booking_request_t *r) {
    char *b = body_with("\"Ann\"", "\"+15551234567\"", extra);
    api_error_t e;
    int rc = parse(b, r, &e);
    if (rc != 0) fail_msg("unexpected %s for %s", e.code, b);
    free(b);
}

static void expect_error_with(const char *extra, const char *code, const char *field) {
    char *b = body_with("\"Ann\"", "\"+15551234567\"", extra);
    expect_error(b, code, field);
    free(b);
}

static char *repeat(const char *unit, int n) {
    size_t ul = strlen(unit);
    char *s = malloc(ul * (size_t)n + 1);
    assert_non_null(s);
    for (int i = 0; i < n; i++) memcpy(s + ul * (size_t)i, unit, ul);
    s[ul * (size_t)n] = '\0';
    return s;
}

// ------------------------------------------------------------------------------ the happy paths

static void test_valid_body_fills_every_field(void **state) {
    (void)state;
    booking_request_t r;
    api_error_t e;
    assert_int_equal(parse(valid_body, &r, &e), 0);
    assert_string_equal(r.name, "Ann");
    assert_string_equal(r.phone, "+15551234567");
    assert_string_equal(r.email, "ann@example.com");
    assert_string_equal(r.plan, "standard");
    assert_string_equal(r.message, "hello");
    assert_string_equal(r.payment_method, "cryptomus");
    assert_int_equal(r.scheduled_for, 1700042400);
}

static void test_minimal_body_defaults_to_stripe_and_no_schedule(void **state) {
    (void)state;
    booking_request_t r;
    api_error_t e;
    assert_int_equal(parse("{\"name\":\"Ann\",\"phone\":\"+15551234567\",\"plan\":\"premium\"}", &r, &e), 0);
    assert_string_equal(r.email, "");
    assert_string_equal(r.message, "");
    assert_string_equal(r.payment_method, "stripe");
    assert_int_equal(r.scheduled_for, 0);
}

static void test_null_and_empty_optional_fields_count_as_absent(void **state) {
    (void)state;
    booking_request_t r;
    expect_ok_with("\"email\":null,\"message\":null,\"scheduled_for\":null,\"payment_method\":null", &r);
    assert_string_equal(r.payment_method, "stripe");
    expect_ok_with("\"email\":\"\",\"message\":\"\",\"scheduled_for\":\"\",\"payment_method\":\"\"", &r);
    assert_string_equal(r.email, "");
    assert_int_equal(r.scheduled_for, 0);
}

static void test_unknown_fields_are_ignored(void **state) {
    (void)state;
    booking_request_t r;
    expect_ok_with("\"utm\":{\"a\":[1,2,{\"b\":null}]},\"x\":true", &r);
    assert_string_equal(r.name, "Ann");
}

static void test_every_plan_key_is_accepted(void **state) {
    (void)state;
    const char *keys[] = {"free_trial", "standard", "extended", "premium"};
    for (int i = 0; i < 4; i++) {
        char b[160];
        snprintf(b, sizeof b, "{\"name\":\"A\",\"phone\":\"+15551234567\",\"plan\":\"%s\"}", keys[i]);
        booking_request_t r;
        api_error_t e;
        assert_int_equal(parse(b, &r, &e), 0);
        assert_string_equal(r.plan, keys[i]);
    }
}

static void test_free_trial_forces_payment_method_none_whatever_was_sent(void **state) {
    (void)state;
    const char *bodies[] = {
        "{\"name\":\"A\",\"phone\":\"+15551234567\",\"plan\":\"free_trial\"}",
        "{\"name\":\"A\",\"phone\":\"+15551234567\",\"plan\":\"free_trial\",\"payment_method\":\"stripe\"}",
        "{\"name\":\"A\",\"phone\":\"+15551234567\",\"plan\":\"free_trial\",\"payment_method\":\"paypal\"}",
        "{\"name\":\"A\",\"phone\":\"+15551234567\",\"plan\":\"free_trial\",\"payment_method\":7}",
    };
    for (size_t i = 0; i < sizeof bodies / sizeof *bodies; i++) {
        booking_request_t r;
        api_error_t e;
        assert_int_equal(parse(bodies[i], &r, &e), 0);
        assert_string_equal(r.payment_method, "none");
    }
}

// ----------------------------------------------------------------------------------- invalid_json

static void test_not_a_json_object_is_invalid_json(void **state) {
    (void)state;
    const char *bodies[] = {"", "not json", "[]", "[{\"name\":\"Ann\"}]", "\"str\"", "42", "null",
                            "true", "{", "{\"name\":\"Ann\",}", "{\"name\":\"Ann\"} trailing",
                            "{'name':'Ann'}"};
    for (size_t i = 0; i < sizeof bodies / sizeof *bodies; i++) expect_error(bodies[i], "invalid_json", "");
}

static void test_null_body_is_invalid_json(void **state) {
    (void)state;
    booking_request_t r;
    api_error_t e;
    assert_int_equal(booking_request_parse(NULL, 0, NOW, &r, &e), -1);
    assert_string_equal(e.code, "invalid_json");
}

static void test_duplicate_keys_are_invalid_json(void **state) {
    (void)state;
    expect_error("{\"name\":\"Ann\",\"phone\":\"+15551234567\",\"phone\":\"+15550000000\",\"plan\":\"standard\"}",
                 "invalid_json", "");
}

static void test_invalid_utf8_anywhere_is_invalid_json(void **state) {
    (void)state;
    // the body is not UTF-8, so it is not JSON (RFC 8259 §8.1); jansson refuses it
    expect_error("{\"name\":\"An\xff\",\"phone\":\"+15551234567\",\"plan\":\"standard\"}", "invalid_json", "");
    expect_error("{\"name\":\"\xc0\xaf\",\"phone\":\"+15551234567\",\"plan\":\"standard\"}", "invalid_json", "");
    expect_error("{\"name\":\"\xed\xa0\x80\",\"phone\":\"+15551234567\",\"plan\":\"standard\"}", "invalid_json", "");
    // a lone surrogate written as an escape is not a character either
    expect_error("{\"name\":\"\\ud800\",\"phone\":\"+15551234567\",\"plan\":\"standard\"}", "invalid_json", "");
}

static void test_embedded_nul_is_invalid_json(void **state) {
    (void)state;
    expect_error("{\"name\":\"A\\u0000B\",\"phone\":\"+15551234567\",\"plan\":\"standard\"}", "invalid_json", "");
    static const char raw[] = "{\"name\":\"A\0B\",\"phone\":\"+15551234567\",\"plan\":\"standard\"}";
    booking_request_t r;
    api_error_t e;
    assert_int_equal(booking_request_parse(raw, sizeof raw - 1, NOW, &r, &e), -1);
    assert_string_equal(e.code, "invalid_json");
}

static void test_deep_nesting_is_refused_without_recursing(void **state) {
    (void)state;
    char *open = repeat("[", 5000), *close = repeat("]", 5000);
    char *b = NULL;
    assert_true(asprintf(&b, "{\"name\":\"Ann\",\"phone\":\"+15551234567\",\"plan\":\"standard\",\"x\":%s%s}",
                         open, close) > 0);
    expect_error(b, "invalid_json", "");
    free(b);
    // depth within the bound is fine
    free(open);
    free(close);
    open = repeat("[", 60);
    close = repeat("]", 60);
    assert_true(asprintf(&b, "\"x\":%s%s", open, close) > 0);
    booking_request_t r;
    expect_ok_with(b, &r);
    free(b);
    free(open);
    free(close);
}

static void test_body_over_16_kib_is_too_large(void **state) {
    (void)state;
    char *big = malloc(BOOKING_BODY_MAX + 1);
    assert_non_null(big);
    memset(big, ' ', BOOKING_BODY_MAX + 1);
    memcpy(big, valid_body, sizeof valid_body - 1);
    booking_request_t r;
    api_error_t e;
    assert_int_equal(booking_request_parse(big, BOOKING_BODY_MAX + 1, NOW, &r, &e), -1);
    assert_string_equal(e.code, "too_large");
    assert_int_equal(e.http_status, 413);
    // exactly 16 KiB is fine (trailing whitespace is valid JSON)
    assert_int_equal(booking_request_parse(big, BOOKING_BODY_MAX, NOW, &r, &e), 0);
    free(big);
}

// ----------------------------------------------------------------------------------- invalid_name

static void test_name_missing_empty_or_wrong_type_is_invalid_name(void **state) {
    (void)state;
    expect_error("{\"phone\":\"+15551234567\",\"plan\":\"standard\"}", "invalid_name", "name");
    const char *names[] = {"\"\"", "null", "42", "true", "[\"Ann\"]", "{\"first\":\"Ann\"}", "\"   \""};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        char *b = body_with(names[i], "\"+15551234567\"", NULL);
        expect_error(b, "invalid_name", "name");
        free(b);
    }
}

static void test_name_counts_characters_not_bytes(void **state) {
    (void)state;
    const char *units[] = {"a", "\xc3\xa9" /* é */, "\xe4\xb8\xad" /* 中 */, "\xf0\x9f\x98\x80" /* 😀 */};
    for (size_t i = 0; i < sizeof units / sizeof *units; i++) {
        char *n100 = repeat(units[i], 100), *n101 = repeat(units[i], 101);
        char *q100 = NULL, *q101 = NULL;
        assert_true(asprintf(&q100, "\"%s\"", n100) > 0 && asprintf(&q101, "\"%s\"", n101) > 0);
        char *b = body_with(q100, "\"+15551234567\"", NULL);
        booking_request_t r;
        api_error_t e;
        assert_int_equal(parse(b, &r, &e), 0);
        assert_string_equal(r.name, n100);
        free(b);
        b = body_with(q101, "\"+15551234567\"", NULL);
        expect_error(b, "invalid_name", "name");
        free(b);
        free(n100), free(n101), free(q100), free(q101);
    }
}

static void test_name_written_with_escapes_counts_decoded_characters(void **state) {
    (void)state;
    char *n = repeat("\\u00e9", 100);   // 100 × é as JSON escapes: 600 bytes of text
    char *q = NULL;
    assert_true(asprintf(&q, "\"%s\"", n) > 0);
    char *b = body_with(q, "\"+15551234567\"", NULL);
    booking_request_t r;
    api_error_t e;
    assert_int_equal(parse(b, &r, &e), 0);
    assert_int_equal(strlen(r.name), 200);
    free(n), free(q), free(b);
}

static void test_name_with_control_characters_is_invalid(void **state) {
    (void)state;
    const char *names[] = {"\"A\\u0007B\"", "\"A\\tB\"", "\"A\\nB\"", "\"A\\u001fB\"",
                           "\"A\\u007fB\"" /* DEL */, "\"A\\u0085B\"" /* NEL, C1 */,
                           ("\"A\xc2\x9f" "B\"") /* U+009F raw */, "\"\\r\""};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        char *b = body_with(names[i], "\"+15551234567\"", NULL);
        expect_error(b, "invalid_name", "name");
        free(b);
    }
    // U+00A0 (just past C1) is an ordinary character
    char *b = body_with("\"A\\u00a0B\"", "\"+15551234567\"", NULL);
    booking_request_t r;
    api_error_t e;
    assert_int_equal(parse(b, &r, &e), 0);
    free(b);
}

static void test_name_is_trimmed_of_surrounding_spaces(void **state) {
    (void)state;
    char *b = body_with("\"  Ann Lee  \"", "\"+15551234567\"", NULL);
    booking_request_t r;
    api_error_t e;
    assert_int_equal(parse(b, &r, &e), 0);
    assert_string_equal(r.name, "Ann Lee");
    free(b);
    // 100 characters plus surrounding spaces still fits
    char *n = repeat("\xc3\xa9", 100), *q = NULL;
    assert_true(asprintf(&q, "\"   %s   \"", n) > 0);
    b = body_with(q, "\"+15551234567\"", NULL);
    assert_int_equal(parse(b, &r, &e), 0);
    assert_string_equal(r.name, n);
    free(b), free(n), free(q);
}

static void test_utf8_counter_refuses_malformed_sequences(void **state) {
    (void)state;
    static const struct {
        const char *s;
        long expect;
    } cases[] = {
        {"", 0},
        {"abc", 3},
        {"\xc3\xa9\xe4\xb8\xad\xf0\x9f\x98\x80", 3},
        {"\xf4\x8f\xbf\xbf", 1},        // U+10FFFF, the last code point
        {"\xef\xbf\xbf", 1},            // U+FFFF
        {"\x80", -1},                   // lone continuation byte
        {"\xc0\x80", -1},               // overlong NUL
        {"\xc1\xbf", -1},               // overlong
        {"\xe0\x80\x80", -1},           // overlong 3-byte
        {"\xe0\x9f\xbf", -1},           // overlong U+07FF
        {"\xf0\x8f\xbf\xbf", -1},       // overlong U+FFFF
        {"\xed\xa0\x80", -1},           // U+D800 surrogate
        {"\xed\xbf\xbf", -1},           // U+DFFF surrogate
        {"\xf4\x90\x80\x80", -1},       // U+110000
        {"\xf5\x80\x80\x80", -1},       // lead byte beyond F4
        {"\xff", -1},
        {"\xe2\x82", -1},               // truncated
        {"a\xc3", -1},                  // truncated at the end
        {"\xe2\x28\xa1", -1},           // bad continuation
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        long got = booking_utf8_count(cases[i].s, strlen(cases[i].s), NULL);
        if (got != cases[i].expect) fail_msg("case %zu: got %ld, want %ld", i, got, cases[i].expect);
    }
    bool control = true;
    assert_int_equal(booking_utf8_count("ok", 2, &control), 2);
    assert_false(control);
    assert_int_equal(booking_utf8_count("a\x7f", 2, &control), 2);
    assert_true(control);
    assert_int_equal(booking_utf8_count("\xc2\x80", 2, &control), 1);   // U+0080, C1
    assert_true(control);
    assert_int_equal(booking_utf8_count("a\0b", 3, &control), 3);
    assert_true(control);
}

// ---------------------------------------------------------------------------------- invalid_phone

static void test_phone_e164_edges(void **state) {
    (void)state;
    static const struct {
        const char *phone;
        bool ok;
    } cases[] = {
        {"\"+1234567\"", false},           // 7 digits
        {"\"+12345678\"", true},           // 8 digits
        {"\"+123456789012345\"", true},    // 15 digits
        {"\"+1234567890123456\"", false},  // 16 digits
        {"\"+0123456789\"", false},        // first digit 0
        {"\"15551234567\"", false},        // no +
        {"\"++15551234567\"", false},
        {"\"+1 555 123 4567\"", false},
        {"\"+1-555-123-4567\"", false},
        {"\"+1555123456a\"", false},
        {"\"+\"", false},
        {"\"\"", false},
        {"\" +15551234567\"", false},
        {"\"+15551234567 \"", false},
        {"\"+\\u0661\\u0662\\u0663\\u0664\\u0665\\u0666\\u0667\\u0668\"", false},   // Arabic-Indic digits
        {"15551234567", false},            // a number, not a string
        {"null", false},
        {"[\"+15551234567\"]", false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char *b = body_with("\"Ann\"", cases[i].phone, NULL);
        if (cases[i].ok) {
            booking_request_t r;
            api_error_t e;
            if (parse(b, &r, &e) != 0) fail_msg("%s refused", cases[i].phone);
        } else {
            expect_error(b, "invalid_phone", "phone");
        }
        free(b);
    }
    expect_error("{\"name\":\"Ann\",\"plan\":\"standard\"}", "invalid_phone", "phone");
}

// ---------------------------------------------------------------------------------- invalid_email

static void test_email_accepts_ordinary_addresses(void **state) {
    (void)state;
    const char *ok[] = {"ann@example.com", "a@b.co", "first.last+tag@sub.example.co.uk",
                        "o'brien@example.ie", "x_y-z@ex-ample.com", "A!#$%&'*+/=?^_`{|}~-@example.com",
                        "ann@123.example", "ANN@EXAMPLE.COM"};
    for (size_t i = 0; i < sizeof ok / sizeof *ok; i++)
        if (!booking_email_valid(ok[i], strlen(ok[i]))) fail_msg("%s refused", ok[i]);
    booking_request_t r;
    expect_ok_with("\"email\":\"first.last+tag@sub.example.co.uk\"", &r);
    assert_string_equal(r.email, "first.last+tag@sub.example.co.uk");
}

static void test_email_refuses_malformed_addresses(void **state) {
    (void)state;
    char local65[80], label64[100], label64_addr[120];
    memset(local65, 'a', 65);
    strcpy(local65 + 65, "@example.com");
    memset(label64, 'b', 64);
    strcpy(label64 + 64, ".com");
    snprintf(label64_addr, sizeof label64_addr, "a@%s", label64);
    const char *bad[] = {"annexample.com", "ann@@example.com", "a@b@example.com", "@example.com",
                         "ann@", "ann@example", "ann@.example.com", "ann@example.com.",
                         "ann@example..com", "ann@-example.com", "ann@example-.com", "ann@exa_mple.com",
                         ".ann@example.com", "ann.@example.com", "an..n@example.com",
                         "ann lee@example.com", "ann@exa mple.com", "\"ann\"@example.com",
                         "ann@[127.0.0.1]", "ann(comment)@example.com", "j\xc3\xb6rg@example.com",
                         "ann@b\xc3\xbc" "cher.de", local65, label64_addr, "a@b"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        if (booking_email_valid(bad[i], strlen(bad[i]))) fail_msg("%s accepted", bad[i]);
    // local part of exactly 64, label of exactly 63, total 254 pass
    char local64[80];
    memset(local64, 'a', 64);
    strcpy(local64 + 64, "@example.com");
    assert_true(booking_email_valid(local64, strlen(local64)));
    char label63[80];
    strcpy(label63, "a@");
    memset(label63 + 2, 'b', 63);
    strcpy(label63 + 65, ".com");
    assert_true(booking_email_valid(label63, strlen(label63)));
    // through the parser: errors name the field
    expect_error_with("\"email\":\"annexample.com\"", "invalid_email", "email");
    expect_error_with("\"email\":\"ann@example\"", "invalid_email", "email");
    expect_error_with("\"email\":42", "invalid_email", "email");
    expect_error_with("\"email\":true", "invalid_email", "email");
    expect_error_with("\"email\":[\"ann@example.com\"]", "invalid_email", "email");
}

static void test_email_of_254_characters_passes_and_255_fails(void **state) {
    (void)state;
    char addr[300];
    memset(addr, 'a', 64);
    addr[64] = '@';
    size_t p = 65;
    // labels of 60 'd' separated by dots, ending with ".com", total 254
    while (254 - p > 4 + 61) {
        memset(addr + p, 'd', 60);
        p += 60;
        addr[p++] = '.';
    }
    size_t fill = 254 - 4 - p;
    memset(addr + p, 'e', fill);
    p += fill;
    strcpy(addr + p, ".com");
    assert_int_equal(strlen(addr), 254);
    assert_true(booking_email_valid(addr, 254));
    char *extra = NULL;
    assert_true(asprintf(&extra, "\"email\":\"%s\"", addr) > 0);
    booking_request_t r;
    expect_ok_with(extra, &r);
    assert_string_equal(r.email, addr);
    free(extra);
    // one more character in the last label: 255
    memmove(addr + 250, addr + 249, 6);
    addr[249] = 'e';
    assert_int_equal(strlen(addr), 255);
    assert_false(booking_email_valid(addr, 255));
}

// ----------------------------------------------------------------------------------- invalid_plan

static void test_unknown_or_missing_plan_is_invalid_plan(void **state) {
    (void)state;
    expect_error("{\"name\":\"Ann\",\"phone\":\"+15551234567\"}", "invalid_plan", "plan");
    const char *plans[] = {"\"gold\"", "\"Standard\"", "\"standard \"", "\"\"", "1", "null",
                           "[\"standard\"]", "\"free-trial\""};
    for (size_t i = 0; i < sizeof plans / sizeof *plans; i++) {
        char *b = NULL;
        assert_true(asprintf(&b, "{\"name\":\"Ann\",\"phone\":\"+15551234567\",\"plan\":%s}", plans[i]) > 0);
        expect_error(b, "invalid_plan", "plan");
        free(b);
    }
}

// -------------------------------------------------------------------------------- message_too_long

static void test_message_of_500_characters_passes_and_501_fails(void **state) {
    (void)state;
    const char *units[] = {"m", "\xc3\xa9", "\xf0\x9f\x98\x80"};
    for (size_t i = 0; i < 3; i++) {
        char *m500 = repeat(units[i], 500), *m501 = repeat(units[i], 501), *x = NULL;
        assert_true(asprintf(&x, "\"message\":\"%s\"", m500) > 0);
        booking_request_t r;
        expect_ok_with(x, &r);
        assert_string_equal(r.message, m500);
        free(x);
        assert_true(asprintf(&x, "\"message\":\"%s\"", m501) > 0);
        expect_error_with(x, "message_too_long", "message");
        free(x), free(m500), free(m501);
    }
}

static void test_message_may_hold_newlines(void **state) {
    (void)state;
    booking_request_t r;
    expect_ok_with("\"message\":\"line one\\nline two\\ttabbed\"", &r);
    assert_string_equal(r.message, "line one\nline two\ttabbed");
}

static void test_message_of_wrong_type_is_refused(void **state) {
    (void)state;
    expect_error_with("\"message\":42", "message_too_long", "message");
    expect_error_with("\"message\":{\"text\":\"hi\"}", "message_too_long", "message");
}

// ------------------------------------------------------------------------------ invalid_scheduled_for

static int64_t scheduled(const char *when) {
    char *x = NULL;
    if (asprintf(&x, "\"scheduled_for\":\"%s\"", when) < 0) abort();
    booking_request_t r;
    expect_ok_with(x, &r);
    free(x);
    return r.scheduled_for;
}

static void expect_bad_schedule(const char *json_value) {
    char *x = NULL;
    if (asprintf(&x, "\"scheduled_for\":%s", json_value) < 0) abort();
    expect_error_with(x, "invalid_scheduled_for", "scheduled_for");
    free(x);
}

static void test_scheduled_for_accepts_rfc3339_with_offsets_and_fractions(void **state) {
    (void)state;
    assert_int_equal(scheduled("2023-11-15T10:00:00Z"), 1700042400);
    assert_int_equal(scheduled("2023-11-15T12:00:00+02:00"), 1700042400);
    assert_int_equal(scheduled("2023-11-14T20:00:00-05:00"), 1700010000);
    assert_int_equal(scheduled("2023-11-15T10:00:00.999999999Z"), 1700042400);
    assert_int_equal(scheduled("2023-11-15T10:00:00.5+00:00"), 1700042400);
    assert_int_equal(scheduled("2023-11-15t10:00:00z"), 1700042400);
}

static void test_scheduled_for_past_and_future_bounds(void **state) {
    (void)state;
    // now itself, and 60 s in the past (clock skew), pass; 61 s in the past fails
    assert_int_equal(scheduled("2023-11-14T22:13:20Z"), NOW);
    assert_int_equal(scheduled("2023-11-14T22:12:20Z"), NOW - 60);
    expect_bad_schedule("\"2023-11-14T22:12:19Z\"");
    expect_bad_schedule("\"2020-01-01T00:00:00Z\"");
    expect_bad_schedule("\"1969-12-31T23:59:59Z\"");
    // exactly 30 days ahead passes; 30 days + 1 s fails, also when written with an offset
    assert_int_equal(scheduled("2023-12-14T22:13:20Z"), 1702592000);
    assert_int_equal(scheduled("2023-12-14T22:13:20.999Z"), 1702592000);
    expect_bad_schedule("\"2023-12-14T22:13:21Z\"");
    expect_bad_schedule("\"2023-12-15T00:13:21+02:00\"");
    expect_bad_schedule("\"2024-02-29T12:00:00Z\"");
    expect_bad_schedule("\"9999-12-31T23:59:59Z\"");
}

static void test_scheduled_for_refuses_what_is_not_rfc3339(void **state) {
    (void)state;
    const char *bad[] = {"\"2023-11-15\"", "\"2023-11-15T10:00:00\"", "\"2023-11-15 10:00:00Z\"",
                         "\"2023-11-15T10:00Z\"", "\"2023-11-15T10:00:00+0200\"", "\"2023-11-15T10:00:00+02\"",
                         "\"2023-11-15T10:00:00.Z\"", "\"2023-11-15T10:00:00.1234567890Z\"",
                         "\"2023-11-31T10:00:00Z\"", "\"2023-02-29T10:00:00Z\"", "\"2023-13-01T10:00:00Z\"",
                         "\"2023-11-15T24:00:00Z\"", "\"2023-11-15T10:60:00Z\"", "\"2023-11-15T10:00:61Z\"",
                         "\"2023-11-15T10:00:00+24:00\"", "\"2023-11-15T10:00:00+02:60\"",
                         "\"+2023-11-15T10:00:00Z\"", "\"2023-11-15T10:00:00ZZ\"", "\" 2023-11-15T10:00:00Z\"",
                         "\"1700042400\"", "1700042400", "true", "[\"2023-11-15T10:00:00Z\"]",
                         "\"2023-1１-15T10:00:00Z\""};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) expect_bad_schedule(bad[i]);
}

static void test_rfc3339_parser_values(void **state) {
    (void)state;
    int64_t ms;
    assert_int_equal(api_rfc3339_parse_ms("2024-01-01T12:05:30.250Z", 24, &ms), 0);
    assert_int_equal(ms, 1704110730250LL);
    assert_int_equal(api_rfc3339_parse_ms("2024-01-01T12:00:00.000Z", 24, &ms), 0);
    assert_int_equal(ms, 1704110400000LL);
    assert_int_equal(api_rfc3339_parse_ms("1970-01-01T00:00:00Z", 20, &ms), 0);
    assert_int_equal(ms, 0);
    assert_int_equal(api_rfc3339_parse_ms("1969-12-31T23:59:59Z", 20, &ms), 0);
    assert_int_equal(ms, -1000);
    assert_int_equal(api_rfc3339_parse_ms("2024-02-29T12:00:00Z", 20, &ms), 0);
    assert_int_equal(ms, 1709208000000LL);
    assert_int_equal(api_rfc3339_parse_ms("2000-02-29T00:00:00Z", 20, &ms), 0);   // 400-year leap
    assert_int_equal(api_rfc3339_parse_ms("1900-02-29T00:00:00Z", 20, &ms), -1);  // 100-year non-leap
    // a leap second rolls into the next minute
    assert_int_equal(api_rfc3339_parse_ms("2016-12-31T23:59:60Z", 20, &ms), 0);
    assert_int_equal(ms, 1483228800000LL);
    assert_int_equal(api_rfc3339_parse_ms("2024-01-01T12:00:00Z", 19, &ms), -1);   // cut short
    assert_int_equal(api_rfc3339_parse_ms(NULL, 20, &ms), -1);
}

// ------------------------------------------------------------------------- invalid_payment_method

static void test_payment_method_values(void **state) {
    (void)state;
    booking_request_t r;
    expect_ok_with("\"payment_method\":\"stripe\"", &r);
    assert_string_equal(r.payment_method, "stripe");
    expect_ok_with("\"payment_method\":\"cryptomus\"", &r);
    assert_string_equal(r.payment_method, "cryptomus");
    const char *bad[] = {"\"paypal\"", "\"Stripe\"", "\"stripe \"", "\"none\"", "1", "true",
                         "[\"stripe\"]", "{\"m\":\"stripe\"}"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char *x = NULL;
        assert_true(asprintf(&x, "\"payment_method\":%s", bad[i]) > 0);
        expect_error_with(x, "invalid_payment_method", "payment_method");
        free(x);
    }
}

// ---------------------------------------------------------------------------------- errors overall

static void test_first_invalid_field_in_contract_order_is_reported(void **state) {
    (void)state;
    expect_error("{\"name\":\"\",\"phone\":\"bad\",\"plan\":\"gold\"}", "invalid_name", "name");
    expect_error("{\"name\":\"Ann\",\"phone\":\"bad\",\"plan\":\"gold\"}", "invalid_phone", "phone");
    expect_error("{\"name\":\"Ann\",\"phone\":\"+15551234567\",\"email\":\"x\",\"plan\":\"gold\"}",
                 "invalid_email", "email");
}

static void test_error_messages_never_repeat_the_input(void **state) {
    (void)state;
    const char *bodies[] = {
        "{\"name\":\"Secretname\\u0007\",\"phone\":\"+15551234567\",\"plan\":\"standard\"}",
        "{\"name\":\"Ann\",\"phone\":\"+99912345678901234\",\"plan\":\"standard\"}",
        "{\"name\":\"Ann\",\"phone\":\"+15551234567\",\"email\":\"secret@nowhere\",\"plan\":\"standard\"}",
        "{\"name\":\"Ann\",\"phone\":\"+15551234567\",\"plan\":\"secretplan\"}",
        "{\"name\":\"Ann\",\"phone\":\"+15551234567\",\"plan\":\"standard\",\"payment_method\":\"secretpm\"}",
        "{\"name\":\"Ann\",\"phone\":\"+15551234567\",\"plan\":\"standard\",\"scheduled_for\":\"secret\"}",
    };
    for (size_t i = 0; i < sizeof bodies / sizeof *bodies; i++) {
        booking_request_t r;
        api_error_t e;
        assert_int_equal(parse(bodies[i], &r, &e), -1);
        assert_null(strstr(e.message, "ecret"));
        assert_null(strstr(e.message, "99912345678901234"));
        char *j = api_error_json(&e);
        assert_non_null(j);
        assert_null(strstr(j, "ecret"));
        free(j);
    }
}

static void test_output_is_untouched_on_failure(void **state) {
    (void)state;
    expect_error("{\"name\":\"Ann\",\"phone\":\"+15551234567\",\"plan\":\"standard\",\"payment_method\":\"x\"}",
                 "invalid_payment_method", "payment_method");
}

// ------------------------------------------------------------------------------------- api_error

static void test_api_error_json_has_the_contract_shape(void **state) {
    (void)state;
    api_error_t e;
    api_error_set(&e, 400, "invalid_phone", "phone", "phone must be E.164, like +15551234567");
    char *j = api_error_json(&e);
    assert_string_equal(j, "{\"error\":{\"code\":\"invalid_phone\",\"field\":\"phone\","
                           "\"message\":\"phone must be E.164, like +15551234567\"}}");
    free(j);
    api_error_set(&e, 400, "invalid_json", "", "the body must be a JSON object");
    j = api_error_json(&e);
    assert_string_equal(j, "{\"error\":{\"code\":\"invalid_json\",\"message\":\"the body must be a JSON object\"}}");
    free(j);
    assert_null(api_error_json(NULL));
}

static void test_api_error_json_extra_adds_members_inside_error(void **state) {
    (void)state;
    api_error_t e;
    api_error_set(&e, 409, "free_trial_cooldown", NULL, "one free trial per phone number per 24 hours");
    json_t *extra = json_pack("{s:I,s:s}", "retry_after_s", (json_int_t)3600, "code", "overridden");
    char *j = api_error_json_extra(&e, extra);
    assert_string_equal(j, "{\"error\":{\"code\":\"free_trial_cooldown\",\"message\":\"one free trial per "
                           "phone number per 24 hours\",\"retry_after_s\":3600}}");
    free(j);
    json_decref(extra);
}

static void test_api_error_set_cuts_long_texts_on_character_boundaries(void **state) {
    (void)state;
    api_error_t e;
    char *longmsg = repeat("\xc3\xa9", 200);   // 400 bytes
    api_error_set(&e, 400, "x", "f", longmsg);
    assert_true(strlen(e.message) < sizeof e.message);
    assert_true(booking_utf8_count(e.message, strlen(e.message), NULL) > 0);
    char *j = api_error_json(&e);
    assert_non_null(j);
    free(j);
    free(longmsg);
    api_error_set(NULL, 400, "x", NULL, NULL);   // harmless
}

// ----------------------------------------------------------------------------------------- hash

static void test_hash_is_sha256_of_the_raw_body(void **state) {
    (void)state;
    char hex[65];
    const char *b = "{\"name\":\"Ann\",\"phone\":\"+15551234567\",\"plan\":\"standard\"}";
    booking_request_hash(b, strlen(b), hex);
    assert_string_equal(hex, "dffcd6f9b1e141dcc649f421825aa74602ffa95421b768afc644001c244bdc79");
    booking_request_hash("", 0, hex);
    assert_string_equal(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    booking_request_hash(NULL, 0, hex);
    assert_string_equal(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    // a different byte, even insignificant whitespace, is a different body
    const char *b2 = "{\"name\":\"Ann\", \"phone\":\"+15551234567\",\"plan\":\"standard\"}";
    char hex2[65];
    booking_request_hash(b2, strlen(b2), hex2);
    assert_string_not_equal(hex, hex2);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_body_fills_every_field),
        cmocka_unit_test(test_minimal_body_defaults_to_stripe_and_no_schedule),
        cmocka_unit_test(test_null_and_empty_optional_fields_count_as_absent),
        cmocka_unit_test(test_unknown_fields_are_ignored),
        cmocka_unit_test(test_every_plan_key_is_accepted),
        cmocka_unit_test(test_free_trial_forces_payment_method_none_whatever_was_sent),
        cmocka_unit_test(test_not_a_json_object_is_invalid_json),
        cmocka_unit_test(test_null_body_is_invalid_json),
        cmocka_unit_test(test_duplicate_keys_are_invalid_json),
        cmocka_unit_test(test_invalid_utf8_anywhere_is_invalid_json),
        cmocka_unit_test(test_embedded_nul_is_invalid_json),
        cmocka_unit_test(test_deep_nesting_is_refused_without_recursing),
        cmocka_unit_test(test_body_over_16_kib_is_too_large),
        cmocka_unit_test(test_name_missing_empty_or_wrong_type_is_invalid_name),
        cmocka_unit_test(test_name_counts_characters_not_bytes),
        cmocka_unit_test(test_name_written_with_escapes_counts_decoded_characters),
        cmocka_unit_test(test_name_with_control_characters_is_invalid),
        cmocka_unit_test(test_name_is_trimmed_of_surrounding_spaces),
        cmocka_unit_test(test_utf8_counter_refuses_malformed_sequences),
        cmocka_unit_test(test_phone_e164_edges),
        cmocka_unit_test(test_email_accepts_ordinary_addresses),
        cmocka_unit_test(test_email_refuses_malformed_addresses),
        cmocka_unit_test(test_email_of_254_characters_passes_and_255_fails),
        cmocka_unit_test(test_unknown_or_missing_plan_is_invalid_plan),
        cmocka_unit_test(test_message_of_500_characters_passes_and_501_fails),
        cmocka_unit_test(test_message_may_hold_newlines),
        cmocka_unit_test(test_message_of_wrong_type_is_refused),
        cmocka_unit_test(test_scheduled_for_accepts_rfc3339_with_offsets_and_fractions),
        cmocka_unit_test(test_scheduled_for_past_and_future_bounds),
        cmocka_unit_test(test_scheduled_for_refuses_what_is_not_rfc3339),
        cmocka_unit_test(test_rfc3339_parser_values),
        cmocka_unit_test(test_payment_method_values),
        cmocka_unit_test(test_first_invalid_field_in_contract_order_is_reported),
        cmocka_unit_test(test_error_messages_never_repeat_the_input),
        cmocka_unit_test(test_output_is_untouched_on_failure),
        cmocka_unit_test(test_api_error_json_has_the_contract_shape),
        cmocka_unit_test(test_api_error_json_extra_adds_members_inside_error),
        cmocka_unit_test(test_api_error_set_cuts_long_texts_on_character_boundaries),
        cmocka_unit_test(test_hash_is_sha256_of_the_raw_body),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
