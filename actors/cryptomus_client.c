// actors/cryptomus_client.c — Cryptomus requests and answers; see cryptomus_client.h.
//
// The signature covers the body bytes exactly as sent, so the body is serialised once, signed,
// and those same bytes are what httpc sends (and sends again on a retry).
#include "actors/cryptomus_client.h"

#include <assert.h>
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "realtime/api_error.h"
#include "realtime/webhook_verify.h"

struct cryptomus_client_t {
    httpc_t *http;
    logger_t log;
    char *api_base;
    char *merchant;
    char *payment_key;
    char *public_url;
    int timeout_ms;
    int max_attempts;
};

static char *dup_trimmed(const char *s) {   // copy without trailing '/'
    size_t n = strlen(s);
    while (n && s[n - 1] == '/') n--;
    return strndup(s, n);
}

static bool is_order_id(const char *s) {   // Cryptomus alpha_dash, 1..128
    size_t n = 0;
    if (!s) return false;
    for (; s[n]; n++) {
        char c = s[n];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
        if (!ok || n >= 128) return false;
    }
    return n > 0;
}

int cryptomus_amount_from_cents(int64_t cents, char *buf, size_t size) {
    if (cents < 0) return -1;
    int n = snprintf(buf, size, "%lld.%02lld", (long long)(cents / 100), (long long)(cents % 100));
    return (n < 0 || (size_t)n >= size) ? -1 : 0;
}

char *cryptomus_json_encode(const json_t *v) {
    char *s = json_dumps(v, JSON_COMPACT | JSON_ESCAPE_SLASH | JSON_ENSURE_ASCII | JSON_ENCODE_ANY);
    if (!s) return NULL;
    // jansson writes \u00E9, PHP writes \u00e9: lowercase the hex digits of every \u escape.
    for (char *p = s; *p; p++) {
        if (*p != '\\') continue;
        p++;   // the escaped character; an escaped backslash is skipped whole
        if (*p == 'u') {
            for (int i = 1; i <= 4 && p[i]; i++)
                if (p[i] >= 'A' && p[i] <= 'F') p[i] = (char)(p[i] - 'A' + 'a');
        }
        if (!*p) break;
    }
    return s;
}

// Signs body and fills out's method, URL and headers; takes ownership of body (even on failure).
static int prepare_signed(const cryptomus_client_t *self, const char *path, char *body, const char *log_name,
                          httpc_prepared_t *out) {
    memset(out, 0, sizeof *out);
    out->method = "POST";
    out->log_name = log_name;
    out->retryable = true;
    out->max_attempts = self->max_attempts;
    out->body = body;
    if (!body) return -1;
    out->body_len = strlen(body);
    char sign[33];
    cryptomus_sign(body, out->body_len, self->payment_key, sign);
    int rc = sign[0] ? 0 : -1;
    if (asprintf(&out->url, "%s%s", self->api_base, path) < 0) out->url = NULL;
    if (!out->url) rc = -1;
    if (rc == 0) rc = httpc_prepared_add_header(out, "merchant: %s", self->merchant);
    if (rc == 0) rc = httpc_prepared_add_header(out, "sign: %s", sign);
    if (rc == 0) rc = httpc_prepared_add_header(out, "Content-Type: application/json");
    if (rc != 0) httpc_prepared_clear(out);
    return rc;
}

int cryptomus_prepare_invoice(const cryptomus_client_t *self, const cryptomus_invoice_params_t *p,
                              httpc_prepared_t *out) {
    assert(self && p && out);
    memset(out, 0, sizeof *out);
    int lifetime = p->lifetime_s ? p->lifetime_s : CRYPTOMUS_INVOICE_LIFETIME_S;
    char amount[32], currency[11];
    size_t clen = p->currency ? strlen(p->currency) : 0;
    if (!is_order_id(p->booking_id) || p->amount_cents <= 0 || clen < 3 || clen > 10 || lifetime < 300 ||
        lifetime > 43200 || cryptomus_amount_from_cents(p->amount_cents, amount, sizeof amount) != 0)
        return -1;
    for (size_t i = 0; i < clen; i++) {
        char c = p->currency[i];
        if (c >= 'a' && c <= 'z') c = (char)(c - 'a' + 'A');
        if (c < 'A' || c > 'Z') return -1;
        currency[i] = c;
    }
    currency[clen] = '\0';
    char *callback = NULL, *ret = NULL, *success = NULL;
    if (asprintf(&callback, "%s/webhooks/cryptomus", self->public_url) < 0) callback = NULL;
    if (asprintf(&ret, "%s/", self->public_url) < 0) ret = NULL;
    if (asprintf(&success, "%s/booking-confirmation?booking=%s", self->public_url, p->booking_id) < 0) success = NULL;
    char *body = NULL;
    json_t *o = json_object();
    if (o && callback && ret && success) {
        int rc = 0;
        rc |= json_object_set_new(o, "amount", json_string(amount));
        rc |= json_object_set_new(o, "currency", json_string(currency));
        rc |= json_object_set_new(o, "order_id", json_string(p->booking_id));
        rc |= json_object_set_new(o, "url_callback", json_string(callback));
        rc |= json_object_set_new(o, "url_return", json_string(ret));
        rc |= json_object_set_new(o, "url_success", json_string(success));
        rc |= json_object_set_new(o, "lifetime", json_integer(lifetime));
        rc |= json_object_set_new(o, "additional_data", json_string(p->booking_id));
        if (rc == 0) body = cryptomus_json_encode(o);
    }
    json_decref(o);
    free(callback);
    free(ret);
    free(success);
    return prepare_signed(self, "/v1/payment", body, "cryptomus.invoice_create", out);
}

int cryptomus_prepare_info(const cryptomus_client_t *self, const char *order_id, httpc_prepared_t *out) {
    assert(self && out);
    memset(out, 0, sizeof *out);
    if (!is_order_id(order_id)) return -1;
    json_t *o = json_pack("{s:s}", "order_id", order_id);
    char *body = o ? cryptomus_json_encode(o) : NULL;
    json_decref(o);
    return prepare_signed(self, "/v1/payment/info", body, "cryptomus.payment_info", out);
}

// ---- parse ------------------------------------------------------------------------------------

// Appends src to dst at *n: names keep [A-Za-z0-9_.-] (others become '_'), separators go as is.
static void copy_rule(char *dst, size_t size, size_t *n, const char *src, bool separator) {
    for (; src && *src && *n + 1 < size; src++) {
        char c = *src;
        bool ok = separator || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '_' || c == '-' || c == '.';
        dst[(*n)++] = ok ? c : '_';
    }
    dst[*n] = '\0';
}

// {"field":["validation.rule",…],…} → "field:validation.rule,…"
static void summarize_errors(const json_t *errors, char *dst, size_t size) {
    size_t n = 0;
    dst[0] = '\0';
    const char *field;
    const json_t *rules;
    json_object_foreach((json_t *)errors, field, rules) {
        size_t i;
        const json_t *rule;
        json_array_foreach(rules, i, rule) {
            if (n) copy_rule(dst, size, &n, ",", true);
            copy_rule(dst, size, &n, field, false);
            copy_rule(dst, size, &n, ":", true);
            copy_rule(dst, size, &n, json_string_value(rule), false);
        }
        if (!json_is_array(rules)) {
            if (n) copy_rule(dst, size, &n, ",", true);
            copy_rule(dst, size, &n, field, false);
        }
    }
}

// A string member (numbers are written out) into dst; missing/null → "". -1 if it does not fit.
static int get_text(const json_t *obj, const char *key, char *dst, size_t size, bool required) {
    const json_t *v = json_object_get(obj, key);
    int n = 0;
    dst[0] = '\0';
    if (!v || json_is_null(v)) return required ? -1 : 0;
    if (json_is_string(v)) {
        if (json_string_length(v) >= size) return -1;
        memcpy(dst, json_string_value(v), json_string_length(v) + 1);
        n = (int)json_string_length(v);
    } else if (json_is_integer(v)) {
        n = snprintf(dst, size, "%lld", (long long)json_integer_value(v));
    } else if (json_is_real(v)) {
        n = snprintf(dst, size, "%.17g", json_real_value(v));
    } else {
        return -1;
    }
    if (n < 0 || (size_t)n >= size) return -1;
    return (required && !dst[0]) ? -1 : 0;
}

static int64_t get_epoch(const json_t *obj, const char *key) {
    const json_t *v = json_object_get(obj, key);
    if (json_is_integer(v)) return (int64_t)json_integer_value(v);
    if (json_is_string(v)) {
        char *end = NULL;
        long long x = strtoll(json_string_value(v), &end, 10);
        if (end && end != json_string_value(v) && *end == '\0') return (int64_t)x;
    }
    return -1;
}

static int parse_payment(const json_t *r, cryptomus_payment_t *p) {
    int rc = 0;
    if (!json_is_object(r)) return -1;
    rc |= get_text(r, "uuid", p->uuid, sizeof p->uuid, true);
    rc |= get_text(r, "order_id", p->order_id, sizeof p->order_id, false);
    rc |= get_text(r, "amount", p->amount, sizeof p->amount, false);
    rc |= get_text(r, "currency", p->currency, sizeof p->currency, false);
    rc |= get_text(r, "payer_currency", p->payer_currency, sizeof p->payer_currency, false);
    rc |= get_text(r, "payment_amount", p->payment_amount, sizeof p->payment_amount, false);
    rc |= get_text(r, "url", p->url, sizeof p->url, false);
    rc |= get_text(r, "status", p->status, sizeof p->status, false);
    if (!p->status[0]) rc |= get_text(r, "payment_status", p->status, sizeof p->status, false);
    if (get_text(r, "additional_data", p->additional_data, sizeof p->additional_data, false) != 0)
        p->additional_data[0] = '\0';   // ours is short; someone else's long text is not our problem
    p->expired_at = get_epoch(r, "expired_at");
    const json_t *fin = json_object_get(r, "is_final");
    p->is_final = json_is_true(fin) || (json_is_integer(fin) && json_integer_value(fin) != 0);
    return rc;
}

void cryptomus_parse_payment(const httpc_response_t *resp, cryptomus_outcome_t *out, cryptomus_payment_t *payment) {
    memset(out, 0, sizeof *out);
    memset(payment, 0, sizeof *payment);
    payment->expired_at = -1;
    out->http_status = resp->status;
    out->attempts = resp->attempts;
    out->state = -1;
    if (resp->transport_error) {
        out->kind = resp->transport_error == CURLE_FILESIZE_EXCEEDED ? PROVIDER_BAD_RESPONSE : PROVIDER_UNAVAILABLE;
        return;
    }
    long s = resp->status;
    json_t *root = api_json_loadb(resp->body, resp->body_len, 0);
    const json_t *state = json_object_get(root, "state");
    if (json_is_integer(state)) out->state = (int)json_integer_value(state);
    const char *msg = json_string_value(json_object_get(root, "message"));
    if (msg) snprintf(out->message, sizeof out->message, "%s", msg);
    const json_t *errors = json_object_get(root, "errors");
    if (json_is_object(errors)) summarize_errors(errors, out->errors, sizeof out->errors);
    out->not_found = s == 404 || (msg && strcasestr(msg, "not found"));

    if (s >= 200 && s < 300) {
        if (out->state == 0) {
            out->kind = parse_payment(json_object_get(root, "result"), payment) == 0 ? PROVIDER_OK : PROVIDER_BAD_RESPONSE;
        } else {
            out->kind = out->state > 0 ? PROVIDER_REJECTED : PROVIDER_BAD_RESPONSE;
        }
    } else if (s == 409 || s == 429 || s >= 500 || s == 0) {
        out->kind = PROVIDER_UNAVAILABLE;
    } else {
        out->kind = PROVIDER_REJECTED;
    }
    if (out->kind != PROVIDER_OK) {
        memset(payment, 0, sizeof *payment);
        payment->expired_at = -1;
    }
    json_decref(root);
}

// ---- calls ------------------------------------------------------------------------------------

typedef struct {
    logger_t log;
    const char *op;
    cryptomus_payment_fn *done;
    void *arg;
} call_t;

static void on_done(void *arg, const httpc_response_t *resp) {
    call_t *c = arg;
    cryptomus_outcome_t o;
    cryptomus_payment_t p;
    cryptomus_parse_payment(resp, &o, &p);
    if (o.kind == PROVIDER_REJECTED)
        log_warn(&c->log, "cryptomus_rejected", "op=%s status=%ld state=%d not_found=%d errors=%s", c->op,
                 o.http_status, o.state, o.not_found ? 1 : 0, o.errors[0] ? o.errors : "-");
    else if (o.kind == PROVIDER_BAD_RESPONSE)
        log_warn(&c->log, "cryptomus_bad_response", "op=%s status=%ld", c->op, o.http_status);
    c->done(c->arg, &o, o.kind == PROVIDER_OK ? &p : NULL);
    free(c);
}

static int submit(cryptomus_client_t *self, httpc_prepared_t *req, int prep_rc, const char *op,
                  cryptomus_payment_fn *done, void *arg) {
    if (prep_rc != 0) return -1;
    call_t *c = calloc(1, sizeof *c);
    int rc = -1;
    if (c) {
        *c = (call_t){.log = self->log, .op = op, .done = done, .arg = arg};
        rc = httpc_submit_prepared(self->http, req, 0, self->timeout_ms, on_done, c);
        if (rc != 0) free(c);
    }
    httpc_prepared_clear(req);
    return rc;
}

int cryptomus_invoice_create(cryptomus_client_t *self, const cryptomus_invoice_params_t *p,
                             cryptomus_payment_fn *done, void *arg) {
    assert(self && p && done);
    httpc_prepared_t req;
    int rc = cryptomus_prepare_invoice(self, p, &req);
    return submit(self, &req, rc, "invoice_create", done, arg);
}

int cryptomus_payment_info(cryptomus_client_t *self, const char *order_id, cryptomus_payment_fn *done, void *arg) {
    assert(self && done);
    httpc_prepared_t req;
    int rc = cryptomus_prepare_info(self, order_id, &req);
    return submit(self, &req, rc, "payment_info", done, arg);
}

cryptomus_client_t *cryptomus_client_new(httpc_t *http, const cryptomus_config_t *cfg, const logger_t *lg) {
    assert(http && cfg && lg);
    if (!cfg->api_base || !cfg->api_base[0] || !cfg->merchant || !cfg->merchant[0] || !cfg->payment_key ||
        !cfg->payment_key[0] || !cfg->public_url || !cfg->public_url[0])
        return NULL;
    cryptomus_client_t *self = calloc(1, sizeof *self);
    if (!self) return NULL;
    self->http = http;
    self->log = *lg;
    self->api_base = dup_trimmed(cfg->api_base);
    self->merchant = strdup(cfg->merchant);
    self->payment_key = strdup(cfg->payment_key);
    self->public_url = dup_trimmed(cfg->public_url);
    self->timeout_ms = cfg->timeout_ms;
    self->max_attempts = cfg->max_attempts;
    if (!self->api_base || !self->merchant || !self->payment_key || !self->public_url)
        cryptomus_client_destroy(&self);
    return self;
}

void cryptomus_client_destroy(cryptomus_client_t **self_p) {
    assert(self_p);
    cryptomus_client_t *self = *self_p;
    if (!self) return;
    if (self->payment_key) explicit_bzero(self->payment_key, strlen(self->payment_key));
    free(self->payment_key);
    free(self->merchant);
    free(self->api_base);
    free(self->public_url);
    free(self);
    *self_p = NULL;
}
