// actors/stripe_client.c — Stripe requests and answers; see stripe_client.h.
//
// Form bodies follow stripe-node's encoding (providers.md §1.1): bracket paths for nested keys,
// explicit array indexes, keys sent literally (they are our constants), values percent-encoded
// with curl_easy_escape, which leaves only [A-Za-z0-9-._~] as is (space → %20, and !*()' encoded,
// like encodeURIComponent plus those four). Ids that go into a URL path are checked against
// Stripe's id alphabet first, so nothing from outside can change the path.
#include "actors/stripe_client.h"

#include <assert.h>
#include <curl/curl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "realtime/api_error.h"

struct stripe_client_t {
    httpc_t *http;
    logger_t log;
    char *api_base;
    char *secret_key;
    char *public_url;
    int timeout_ms;
    int max_attempts;
};

// ---- small helpers ----------------------------------------------------------------------------

static char *dup_trimmed(const char *s) {   // copy without trailing '/'
    size_t n = strlen(s);
    while (n && s[n - 1] == '/') n--;
    return strndup(s, n);
}

static bool is_token(const char *s, size_t max, bool dash) {
    size_t n = 0;
    if (!s) return false;
    for (; s[n]; n++) {
        char c = s[n];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
                  (dash && c == '-');
        if (!ok || n >= max) return false;
    }
    return n > 0;
}

static bool is_booking_id(const char *s) { return is_token(s, 64, true); }
static bool is_stripe_id(const char *s) { return is_token(s, 255, false); }

typedef struct {
    char *buf;
    size_t len, cap;
    bool failed;
} form_t;

static void form_append(form_t *f, const char *s, size_t n) {
    if (f->failed) return;
    if (f->len + n + 1 > f->cap) {
        size_t cap = f->cap ? f->cap : 512;
        while (cap < f->len + n + 1) cap *= 2;
        char *b = realloc(f->buf, cap);
        if (!b) {
            f->failed = true;
            return;
        }
        f->buf = b;
        f->cap = cap;
    }
    memcpy(f->buf + f->len, s, n);
    f->len += n;
    f->buf[f->len] = '\0';
}

// Appends "&key=value" (no '&' for the first pair), value percent-encoded.
static void form_add(form_t *f, const char *key, const char *value) {
    if (f->len) form_append(f, "&", 1);
    form_append(f, key, strlen(key));
    form_append(f, "=", 1);
    char *esc = curl_easy_escape(NULL, value, (int)strlen(value));
    if (!esc) {
        f->failed = true;
        return;
    }
    form_append(f, esc, strlen(esc));
    curl_free(esc);
}

static void form_add_int(form_t *f, const char *key, int64_t v) {
    char num[24];
    snprintf(num, sizeof num, "%lld", (long long)v);
    form_add(f, key, num);
}

// Common headers; with idem_prefix, also "Idempotency-Key: <idem_prefix>-<idem_id>".
static int add_headers(const stripe_client_t *self, httpc_prepared_t *out, const char *idem_prefix,
                       const char *idem_id, bool form) {
    if (httpc_prepared_add_header(out, "Authorization: Bearer %s", self->secret_key) != 0) return -1;
    if (httpc_prepared_add_header(out, "Stripe-Version: %s", STRIPE_API_VERSION) != 0) return -1;
    if (idem_prefix && httpc_prepared_add_header(out, "Idempotency-Key: %s-%s", idem_prefix, idem_id) != 0) return -1;
    if (form && httpc_prepared_add_header(out, "Content-Type: application/x-www-form-urlencoded") != 0) return -1;
    return 0;
}

static int finish_prepared(const stripe_client_t *self, httpc_prepared_t *out, const char *method,
                           const char *log_name, form_t *f, int rc) {
    out->method = method;
    out->log_name = log_name;
    out->retryable = true;
    out->max_attempts = self->max_attempts;
    if (f) {
        if (f->failed) rc = -1;
        if (!f->buf) form_append(f, "", 0);
        out->body = f->buf;
        out->body_len = f->len;
        if (!out->body) rc = -1;
    }
    if (!out->url) rc = -1;
    if (rc != 0) httpc_prepared_clear(out);
    return rc;
}

// ---- prepare ----------------------------------------------------------------------------------

int stripe_prepare_checkout(const stripe_client_t *self, const stripe_checkout_params_t *p, httpc_prepared_t *out) {
    assert(self && p && out);
    memset(out, 0, sizeof *out);
    if (!is_booking_id(p->booking_id) || p->amount_cents <= 0 || !p->currency || strlen(p->currency) != 3 ||
        !p->product_name || !p->product_name[0])
        return -1;
    char currency[4];
    for (int i = 0; i < 3; i++) {
        char c = p->currency[i];
        if (c >= 'A' && c <= 'Z') c = (char)(c - 'A' + 'a');
        if (c < 'a' || c > 'z') return -1;
        currency[i] = c;
    }
    currency[3] = '\0';
    int64_t now = p->now_s > 0 ? p->now_s : (int64_t)time(NULL);

    char *success = NULL, *cancel = NULL;
    int rc = 0;
    if (asprintf(&success, "%s/booking-confirmation?booking=%s", self->public_url, p->booking_id) < 0) success = NULL;
    if (asprintf(&cancel, "%s/", self->public_url) < 0) cancel = NULL;
    if (!success || !cancel) rc = -1;

    form_t f = {0};
    if (rc == 0) {
        form_add(&f, "mode", "payment");
        form_add(&f, "line_items[0][price_data][currency]", currency);
        form_add_int(&f, "line_items[0][price_data][unit_amount]", p->amount_cents);
        form_add(&f, "line_items[0][price_data][product_data][name]", p->product_name);
        form_add(&f, "line_items[0][quantity]", "1");
        form_add(&f, "success_url", success);
        form_add(&f, "cancel_url", cancel);
        form_add(&f, "client_reference_id", p->booking_id);
        form_add(&f, "metadata[booking_id]", p->booking_id);
        form_add(&f, "payment_intent_data[metadata][booking_id]", p->booking_id);
        if (p->customer_email && p->customer_email[0]) form_add(&f, "customer_email", p->customer_email);
        form_add_int(&f, "expires_at", now + STRIPE_CHECKOUT_TTL_S);
    }
    free(success);
    free(cancel);
    if (asprintf(&out->url, "%s/v1/checkout/sessions", self->api_base) < 0) out->url = NULL;
    if (rc == 0) rc = add_headers(self, out, "checkout", p->booking_id, true);
    return finish_prepared(self, out, "POST", "stripe.checkout_create", &f, rc);
}

int stripe_prepare_retrieve(const stripe_client_t *self, const char *session_id, bool expand_payment_intent,
                            httpc_prepared_t *out) {
    assert(self && out);
    memset(out, 0, sizeof *out);
    if (!is_stripe_id(session_id)) return -1;
    if (asprintf(&out->url, "%s/v1/checkout/sessions/%s%s", self->api_base, session_id,
                 expand_payment_intent ? "?expand%5B%5D=payment_intent" : "") < 0)
        out->url = NULL;
    int rc = add_headers(self, out, NULL, NULL, false);
    return finish_prepared(self, out, "GET", "stripe.session_retrieve", NULL, rc);
}

int stripe_prepare_expire(const stripe_client_t *self, const char *session_id, httpc_prepared_t *out) {
    assert(self && out);
    memset(out, 0, sizeof *out);
    if (!is_stripe_id(session_id)) return -1;
    if (asprintf(&out->url, "%s/v1/checkout/sessions/%s/expire", self->api_base, session_id) < 0) out->url = NULL;
    int rc = add_headers(self, out, "expire", session_id, true);
    form_t f = {0};
    return finish_prepared(self, out, "POST", "stripe.session_expire", &f, rc);
}

int stripe_prepare_refund(const stripe_client_t *self, const char *payment_intent, const char *booking_id,
                          httpc_prepared_t *out) {
    assert(self && out);
    memset(out, 0, sizeof *out);
    if (!is_stripe_id(payment_intent) || !is_booking_id(booking_id)) return -1;
    form_t f = {0};
    form_add(&f, "payment_intent", payment_intent);
    form_add(&f, "reason", "requested_by_customer");
    form_add(&f, "metadata[booking_id]", booking_id);
    if (asprintf(&out->url, "%s/v1/refunds", self->api_base) < 0) out->url = NULL;
    int rc = add_headers(self, out, "refund", booking_id, true);
    return finish_prepared(self, out, "POST", "stripe.refund_create", &f, rc);
}

// ---- parse ------------------------------------------------------------------------------------

// Keeps characters that are safe in a key=value log line; others become '_'.
static void copy_code(char *dst, size_t size, const char *src) {
    size_t n = 0;
    for (; src && *src && n + 1 < size; src++) {
        char c = *src;
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
                  c == '-' || c == '.' || c == '[' || c == ']';
        dst[n++] = ok ? c : '_';
    }
    dst[n] = '\0';
}

// String member `key` into dst. Missing or null → "" (an error only when required); a value too
// long for dst or of another type is an error.
static int get_str(const json_t *obj, const char *key, char *dst, size_t size, bool required) {
    dst[0] = '\0';
    const json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v)) return required ? -1 : 0;
    if (!json_is_string(v) || json_string_length(v) >= size) return -1;
    memcpy(dst, json_string_value(v), json_string_length(v) + 1);
    return (required && !dst[0]) ? -1 : 0;
}

static int get_int(const json_t *obj, const char *key, int64_t *out) {
    const json_t *v = json_object_get(obj, key);
    *out = -1;
    if (!v || json_is_null(v)) return 0;
    if (!json_is_integer(v)) return -1;
    *out = (int64_t)json_integer_value(v);
    return 0;
}

// A reference that is either an id string, null, or the expanded object ({"id":…,"status":…}).
static int get_ref(const json_t *obj, const char *key, char *id, size_t idsize, char *status, size_t stsize) {
    const json_t *v = json_object_get(obj, key);
    id[0] = '\0';
    if (status) status[0] = '\0';
    if (!v || json_is_null(v)) return 0;
    if (json_is_string(v)) return get_str(obj, key, id, idsize, false);
    if (!json_is_object(v)) return -1;
    if (get_str(v, "id", id, idsize, true) != 0) return -1;
    if (status && get_str(v, "status", status, stsize, false) != 0) status[0] = '\0';
    return 0;
}

static void classify(const httpc_response_t *r, stripe_outcome_t *o) {
    memset(o, 0, sizeof *o);
    o->http_status = r->status;
    o->attempts = r->attempts;
    memcpy(o->request_id, r->request_id, sizeof o->request_id);
    o->request_id[sizeof o->request_id - 1] = '\0';
    if (r->transport_error) {
        o->kind = r->transport_error == CURLE_FILESIZE_EXCEEDED ? PROVIDER_BAD_RESPONSE : PROVIDER_UNAVAILABLE;
        return;
    }
    long s = r->status;
    if (s >= 200 && s < 300) o->kind = PROVIDER_OK;
    else if (s == 409 || s == 429 || s >= 500 || s == 0) o->kind = PROVIDER_UNAVAILABLE;
    else o->kind = PROVIDER_REJECTED;
    o->not_found = s == 404;
    if (o->kind == PROVIDER_OK) return;
    json_t *root = api_json_loadb(r->body, r->body_len, 0);
    const json_t *err = json_object_get(root, "error");
    if (json_is_object(err)) {
        copy_code(o->error_type, sizeof o->error_type, json_string_value(json_object_get(err, "type")));
        copy_code(o->error_code, sizeof o->error_code, json_string_value(json_object_get(err, "code")));
        copy_code(o->error_param, sizeof o->error_param, json_string_value(json_object_get(err, "param")));
        const char *m = json_string_value(json_object_get(err, "message"));
        snprintf(o->error_message, sizeof o->error_message, "%s", m ? m : "");
    }
    json_decref(root);
}

static json_t *load_object(const httpc_response_t *r, const char *object) {
    json_t *root = api_json_loadb(r->body, r->body_len, 0);
    const char *got = json_string_value(json_object_get(root, "object"));
    if (!json_is_object(root) || (got && strcmp(got, object) != 0)) {
        json_decref(root);
        return NULL;
    }
    return root;
}

void stripe_parse_session(const httpc_response_t *resp, stripe_outcome_t *out, stripe_session_t *s) {
    classify(resp, out);
    memset(s, 0, sizeof *s);
    if (out->kind != PROVIDER_OK) return;
    json_t *root = load_object(resp, "checkout.session");
    int rc = root ? 0 : -1;
    if (rc == 0) {
        rc |= get_str(root, "id", s->id, sizeof s->id, true);
        rc |= get_str(root, "url", s->url, sizeof s->url, false);
        rc |= get_int(root, "expires_at", &s->expires_at);
        rc |= get_str(root, "status", s->status, sizeof s->status, false);
        rc |= get_str(root, "payment_status", s->payment_status, sizeof s->payment_status, false);
        rc |= get_ref(root, "payment_intent", s->payment_intent, sizeof s->payment_intent, s->payment_intent_status,
                      sizeof s->payment_intent_status);
        rc |= get_str(root, "client_reference_id", s->client_reference_id, sizeof s->client_reference_id, false);
        rc |= get_int(root, "amount_total", &s->amount_total);
        rc |= get_str(root, "currency", s->currency, sizeof s->currency, false);
    }
    json_decref(root);
    if (rc != 0) {
        out->kind = PROVIDER_BAD_RESPONSE;
        memset(s, 0, sizeof *s);
    }
}

void stripe_parse_refund(const httpc_response_t *resp, stripe_outcome_t *out, stripe_refund_t *f) {
    classify(resp, out);
    memset(f, 0, sizeof *f);
    if (out->kind != PROVIDER_OK) return;
    json_t *root = load_object(resp, "refund");
    int rc = root ? 0 : -1;
    if (rc == 0) {
        rc |= get_str(root, "id", f->id, sizeof f->id, true);
        rc |= get_str(root, "status", f->status, sizeof f->status, true);
        rc |= get_int(root, "amount", &f->amount);
        rc |= get_ref(root, "payment_intent", f->payment_intent, sizeof f->payment_intent, NULL, 0);
    }
    json_decref(root);
    if (rc != 0) {
        out->kind = PROVIDER_BAD_RESPONSE;
        memset(f, 0, sizeof *f);
    }
}

// ---- calls ------------------------------------------------------------------------------------

typedef struct {
    logger_t log;
    const char *op;
    stripe_session_fn *session_done;
    stripe_refund_fn *refund_done;
    void *arg;
} call_t;

static void log_outcome(const call_t *c, const stripe_outcome_t *o) {
    if (o->kind == PROVIDER_REJECTED)
        log_warn(&c->log, "stripe_rejected", "op=%s status=%ld type=%s code=%s param=%s request_id=%s", c->op,
                 o->http_status, o->error_type, o->error_code, o->error_param, o->request_id);
    else if (o->kind == PROVIDER_BAD_RESPONSE)
        log_warn(&c->log, "stripe_bad_response", "op=%s status=%ld request_id=%s", c->op, o->http_status,
                 o->request_id);
}

static void on_session_done(void *arg, const httpc_response_t *resp) {
    call_t *c = arg;
    stripe_outcome_t o;
    stripe_session_t s;
    stripe_parse_session(resp, &o, &s);
    log_outcome(c, &o);
    c->session_done(c->arg, &o, o.kind == PROVIDER_OK ? &s : NULL);
    free(c);
}

static void on_refund_done(void *arg, const httpc_response_t *resp) {
    call_t *c = arg;
    stripe_outcome_t o;
    stripe_refund_t f;
    stripe_parse_refund(resp, &o, &f);
    log_outcome(c, &o);
    c->refund_done(c->arg, &o, o.kind == PROVIDER_OK ? &f : NULL);
    free(c);
}

static int submit(stripe_client_t *self, httpc_prepared_t *req, int prep_rc, const char *op,
                  stripe_session_fn *sdone, stripe_refund_fn *rdone, void *arg) {
    if (prep_rc != 0) return -1;
    call_t *c = calloc(1, sizeof *c);
    int rc = -1;
    if (c) {
        *c = (call_t){.log = self->log, .op = op, .session_done = sdone, .refund_done = rdone, .arg = arg};
        rc = httpc_submit_prepared(self->http, req, 0, self->timeout_ms, sdone ? on_session_done : on_refund_done, c);
        if (rc != 0) free(c);
    }
    httpc_prepared_clear(req);
    return rc;
}

int stripe_checkout_create(stripe_client_t *self, const stripe_checkout_params_t *p, stripe_session_fn *done,
                           void *arg) {
    assert(self && p && done);
    httpc_prepared_t req;
    int rc = stripe_prepare_checkout(self, p, &req);
    return submit(self, &req, rc, "checkout_create", done, NULL, arg);
}

int stripe_session_retrieve(stripe_client_t *self, const char *session_id, bool expand_payment_intent,
                            stripe_session_fn *done, void *arg) {
    assert(self && done);
    httpc_prepared_t req;
    int rc = stripe_prepare_retrieve(self, session_id, expand_payment_intent, &req);
    return submit(self, &req, rc, "session_retrieve", done, NULL, arg);
}

int stripe_session_expire(stripe_client_t *self, const char *session_id, stripe_session_fn *done, void *arg) {
    assert(self && done);
    httpc_prepared_t req;
    int rc = stripe_prepare_expire(self, session_id, &req);
    return submit(self, &req, rc, "session_expire", done, NULL, arg);
}

int stripe_refund_create(stripe_client_t *self, const char *payment_intent, const char *booking_id,
                         stripe_refund_fn *done, void *arg) {
    assert(self && done);
    httpc_prepared_t req;
    int rc = stripe_prepare_refund(self, payment_intent, booking_id, &req);
    return submit(self, &req, rc, "refund_create", NULL, done, arg);
}

stripe_client_t *stripe_client_new(httpc_t *http, const stripe_config_t *cfg, const logger_t *lg) {
    assert(http && cfg && lg);
    if (!cfg->api_base || !cfg->api_base[0] || !cfg->secret_key || !cfg->secret_key[0] || !cfg->public_url ||
        !cfg->public_url[0])
        return NULL;
    stripe_client_t *self = calloc(1, sizeof *self);
    if (!self) return NULL;
    self->http = http;
    self->log = *lg;
    self->api_base = dup_trimmed(cfg->api_base);
    self->secret_key = strdup(cfg->secret_key);
    self->public_url = dup_trimmed(cfg->public_url);
    self->timeout_ms = cfg->timeout_ms;
    self->max_attempts = cfg->max_attempts;
    if (!self->api_base || !self->secret_key || !self->public_url) stripe_client_destroy(&self);
    return self;
}

void stripe_client_destroy(stripe_client_t **self_p) {
    assert(self_p);
    stripe_client_t *self = *self_p;
    if (!self) return;
    if (self->secret_key) explicit_bzero(self->secret_key, strlen(self->secret_key));
    free(self->secret_key);
    free(self->api_base);
    free(self->public_url);
    free(self);
    *self_p = NULL;
}
