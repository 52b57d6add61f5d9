// tests/integration/client.h — what the integration tests do as a client of a running sweetyd:
// API calls, booking, waiting for a status, reading a booking's history, querying its database.
// Header-only; pairs with daemon.h.
#ifndef SWEETY_TEST_CLIENT_H
#define SWEETY_TEST_CLIENT_H

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/integration/daemon.h"

static const char *const CLIENT_JSON_HDR[] __attribute__((unused)) = {"Content-Type: application/json", NULL};

// Calls the daemon's HTTP API; returns the status. *out (may be NULL) gets the parsed JSON, *raw
// (may be NULL) the body text (free it).
static inline long client_api(const test_daemon_t *d, const char *method, const char *path, const char *body,
                              const char *const *headers, json_t **out, char **raw) {
    char url[256];
    snprintf(url, sizeof url, "%s%s", d->base_url, path);
    harness_http_t r;
    harness_http(method, url, body, headers, &r);
    if (out) *out = json_loads(r.body, 0, NULL);
    if (raw) *raw = strdup(r.body);
    long status = r.status;
    harness_http_clear(&r);
    return status;
}

// A fresh E.164 number: +1555 and 7 digits.
static inline void client_new_phone(char *out, size_t size) {
    static unsigned counter;
    unsigned r = (unsigned)(harness_now_ms() * 7919u) ^ (unsigned)rand() ^ (++counter * 104729u);
    snprintf(out, size, "+1555%07u", r % 10000000u);
}

// Books `plan` for `phone` (method NULL: the default). Returns the HTTP status; *out the answer.
static inline long client_book(const test_daemon_t *d, const char *plan, const char *method, const char *phone,
                               json_t **out) {
    char body[512];
    snprintf(body, sizeof body,
             "{\"name\":\"Zoe Quartermaine\",\"phone\":\"%s\",\"email\":\"zoe.q@example.org\",\"plan\":\"%s\"%s%s%s}",
             phone, plan, method ? ",\"payment_method\":\"" : "", method ? method : "", method ? "\"" : "");
    return client_api(d, "POST", "/api/bookings", body, CLIENT_JSON_HDR, out, NULL);
}

static inline int64_t client_query_int(const test_daemon_t *d, const char *sql) {
    char out[64] = "";
    if (harness_pg_query(d->db_url, sql, out, sizeof out) != 0) return -1;
    return strtoll(out, NULL, 10);
}

static inline void client_get_booking(const test_daemon_t *d, const char *id, const char *token, json_t **out,
                                      long *status) {
    char path[128], auth[1100];
    snprintf(path, sizeof path, "/api/bookings/%.64s", id);
    snprintf(auth, sizeof auth, "Authorization: Bearer %.1000s", token);
    const char *headers[] = {auth, NULL};
    *status = client_api(d, "GET", path, NULL, headers, out, NULL);
}

// Polls GET /api/bookings/{id} until its status is `want`. 0 or -1.
static inline int client_wait_status(const test_daemon_t *d, const char *id, const char *token, const char *want,
                                     int timeout_ms) {
    int64_t deadline = harness_now_ms() + timeout_ms;
    char last[32] = "";
    while (harness_now_ms() < deadline) {
        json_t *j = NULL;
        long st = 0;
        client_get_booking(d, id, token, &j, &st);
        const char *s = json_string_value(json_object_get(j, "status"));
        snprintf(last, sizeof last, "%s", s ? s : "?");
        json_decref(j);
        if (st == 200 && strcmp(last, want) == 0) return 0;
        harness_sleep_ms(50);
    }
    fprintf(stderr, "booking %s: wanted %s, last %s\n", id, want, last);
    return -1;
}

// The statuses of a booking's history joined with commas; "BADSEQ" marks a gap in seq.
static inline void client_history(const test_daemon_t *d, const char *id, const char *token, char *out, size_t size) {
    json_t *j = NULL;
    long st = 0;
    client_get_booking(d, id, token, &j, &st);
    out[0] = '\0';
    size_t i;
    json_t *ev;
    json_array_foreach(json_object_get(j, "events"), i, ev) {
        if (json_integer_value(json_object_get(ev, "seq")) != (json_int_t)i + 1)
            strncat(out, "BADSEQ,", size - strlen(out) - 1);
        strncat(out, json_string_value(json_object_get(ev, "status")), size - strlen(out) - 1);
        strncat(out, ",", size - strlen(out) - 1);
    }
    if (*out) out[strlen(out) - 1] = '\0';
    json_decref(j);
}

typedef struct {
    char id[40];
    char token[1024];
    char checkout[512];
    char session[128];   // Stripe cs_... or Cryptomus invoice uuid (the checkout URL's last segment)
} client_booked_t;

// Books and fills *b from the 201 answer. Returns the HTTP status.
static inline long client_book_into(const test_daemon_t *d, const char *plan, const char *method, const char *phone,
                                    client_booked_t *b) {
    json_t *j = NULL;
    long st = client_book(d, plan, method, phone, &j);
    memset(b, 0, sizeof *b);
    const char *v;
    if ((v = json_string_value(json_object_get(j, "booking_id")))) snprintf(b->id, sizeof b->id, "%s", v);
    if ((v = json_string_value(json_object_get(j, "status_token")))) snprintf(b->token, sizeof b->token, "%s", v);
    if ((v = json_string_value(json_object_get(j, "checkout_url")))) {
        snprintf(b->checkout, sizeof b->checkout, "%s", v);
        snprintf(b->session, sizeof b->session, "%s", strrchr(b->checkout, '/') + 1);
    }
    json_decref(j);
    return st;
}

#endif
