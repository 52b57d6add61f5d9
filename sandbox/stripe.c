// sandbox/stripe.c — see stripe.h.
//
// What it checks, as Stripe does: the secret key (Bearer or Basic), the form content type, every
// parameter name (unknown ones are refused, so a typo in the daemon fails here rather than being
// silently ignored), required parameters with Stripe's own error messages, and the
// Idempotency-Key rules of providers.md §1.2: validation runs first and its failures are not
// stored; a successful result is stored with the parameters' fingerprint and replayed byte for
// byte (Idempotent-Replayed: true); the same key with other parameters is an idempotency_error;
// a key whose first request is still in flight (a delay fault holds its answer) gets 409.
//
// State: one account's objects in arrays (linear search is fine at test scale). Each object keeps
// its public JSON (`obj`), which is what the API returns and what events carry, plus what Stripe
// keeps internally (the PaymentIntent metadata of a session, refunds still pending, …).
//
// Flows: the hosted page (/pay/{id}) or the control API completes a session (paid, or unpaid then
// async succeeded/failed), expires it, or settles a pending refund; each state change emits the
// event Stripe would send. Everything runs on the lws service thread.
#include "sandbox/stripe.h"

#include <ctype.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/util.h"
#include "sandbox/sbutil.h"

#define IDEMPOTENCY_TTL_S (24 * 3600)
#define EXPIRY_GRACE_S 60   // slack on the 30 min .. 24 h expires_at window (clock skew, retries)

typedef struct {
    char id[80];
    json_t *obj;           // checkout.session
    json_t *pi_metadata;   // payment_intent_data[metadata]
    char *pi_description;
    json_t *line_items;    // [{description, quantity, unit_amount, amount_total}], shown with expand[]=line_items
    char *product_name;    // first line item's, for the page
    char pi_id[40];
} session_t;

typedef struct {
    char id[40];
    json_t *obj;   // payment_intent
    char session_id[80];
} intent_t;

typedef struct {
    char id[40];
    json_t *obj;              // charge
    int64_t pending_refunds;  // amount in refunds still pending
} charge_t;

typedef struct {
    char id[40];
    json_t *obj;   // refund
    char charge_id[40];
} refund_t;

typedef struct {
    char *key, *fingerprint, *body;
    size_t body_len;
    int status;
    int64_t created_s;
    int64_t ready_at_ms;   // monotonic: before this the first request is still "in flight"
    char request_id[32];
} idem_t;

struct stripe_t {
    char *secret_key, *webhook_secret, *webhook_url, *public_url, *api_version, *refund_status;
    webhooks_t *webhooks;
    logger_t log;
    sb_vec_t sessions, intents, charges, refunds, idem;
};

// ---- small helpers -------------------------------------------------------------------------------
static void session_free(void *p) {
    session_t *s = p;
    json_decref(s->obj);
    json_decref(s->pi_metadata);
    json_decref(s->line_items);
    free(s->pi_description);
    free(s->product_name);
    free(s);
}

static void object_free_intent(void *p) {
    intent_t *o = p;
    json_decref(o->obj);
    free(o);
}

static void object_free_charge(void *p) {
    charge_t *o = p;
    json_decref(o->obj);
    free(o);
}

static void object_free_refund(void *p) {
    refund_t *o = p;
    json_decref(o->obj);
    free(o);
}

static void idem_free(void *p) {
    idem_t *e = p;
    free(e->key);
    free(e->fingerprint);
    free(e->body);
    free(e);
}

static session_t *find_session(stripe_t *self, const char *id) {
    for (size_t i = 0; id && i < self->sessions.len; i++) {
        session_t *s = self->sessions.items[i];
        if (strcmp(s->id, id) == 0) return s;
    }
    return NULL;
}

static intent_t *find_intent(stripe_t *self, const char *id) {
    for (size_t i = 0; id && i < self->intents.len; i++) {
        intent_t *o = self->intents.items[i];
        if (strcmp(o->id, id) == 0) return o;
    }
    return NULL;
}

static charge_t *find_charge(stripe_t *self, const char *id) {
    for (size_t i = 0; id && i < self->charges.len; i++) {
        charge_t *o = self->charges.items[i];
        if (strcmp(o->id, id) == 0) return o;
    }
    return NULL;
}

static refund_t *find_refund(stripe_t *self, const char *id) {
    for (size_t i = 0; id && i < self->refunds.len; i++) {
        refund_t *o = self->refunds.items[i];
        if (strcmp(o->id, id) == 0) return o;
    }
    return NULL;
}

static const char *str_of(const json_t *obj, const char *key) { return json_string_value(json_object_get(obj, key)); }

static json_int_t int_of(const json_t *obj, const char *key) { return json_integer_value(json_object_get(obj, key)); }

static bool starts_with(const char *s, const char *prefix) { return strncmp(s, prefix, strlen(prefix)) == 0; }

// Stripe's error body: {"error":{"code"?,"doc_url"?,"message","param"?,"type"}}.
static void stripe_error(sb_response_t *resp, int status, const char *type, const char *code, const char *param,
                         const char *fmt, ...) __attribute__((format(printf, 6, 7)));
static void stripe_error(sb_response_t *resp, int status, const char *type, const char *code, const char *param,
                         const char *fmt, ...) {
    char message[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, sizeof message, fmt, ap);
    va_end(ap);
    json_t *err = json_object();
    if (code) {
        char doc[160];
        snprintf(doc, sizeof doc, "https://stripe.com/docs/error-codes/%s", code);
        json_object_set_new(err, "code", json_string(code));
        json_object_set_new(err, "doc_url", json_string(doc));
    }
    json_object_set_new(err, "message", json_string(message));
    if (param) json_object_set_new(err, "param", json_string(param));
    json_object_set_new(err, "type", json_string(type));
    sb_respond_json(resp, status, json_pack("{s:o}", "error", err));
}

static void missing_param(sb_response_t *resp, const char *param) {
    stripe_error(resp, 400, "invalid_request_error", "parameter_missing", param, "Missing required param: %s.", param);
}

// A required string parameter: answers 400 (missing, or an empty string, which Stripe reads as an
// attempt to unset it) and returns NULL when it is not usable.
static const char *require_param(const json_t *p, const char *key, sb_response_t *resp) {
    const char *v = str_of(p, key);
    if (!v) {
        missing_param(resp, key);
        return NULL;
    }
    if (!*v) {
        stripe_error(resp, 400, "invalid_request_error", "parameter_missing", key,
                     "You passed an empty string for '%s'. We assume empty values are an attempt to unset a "
                     "parameter; however '%s' cannot be unset. You should remove '%s' from your request or "
                     "supply a non-empty value.",
                     key, key, key);
        return NULL;
    }
    return v;
}

// An integer parameter within [min, max]. 0 = valid (*out set), -1 = answered 400.
static int int_param(const char *key, const char *text, int64_t min, int64_t max, int64_t *out, sb_response_t *resp) {
    int64_t v;
    if (util_parse_int64(text, INT64_MIN, INT64_MAX, &v) != 0) {
        stripe_error(resp, 400, "invalid_request_error", "parameter_invalid_integer", key, "Invalid integer: %s", text);
        return -1;
    }
    if (v < min) {
        stripe_error(resp, 400, "invalid_request_error", "parameter_invalid_integer", key,
                     "This value must be greater than or equal to %lld.", (long long)min);
        return -1;
    }
    if (v > max) {
        stripe_error(resp, 400, "invalid_request_error", "parameter_invalid_integer", key,
                     "This value must be less than or equal to %lld.", (long long)max);
        return -1;
    }
    *out = v;
    return 0;
}

// Pattern match for parameter names: '#' matches an array index, '*' a hash key (no brackets).
static bool name_matches(const char *pattern, const char *name) {
    while (*pattern) {
        if (*pattern == '#') {
            if (!isdigit((unsigned char)*name)) return false;
            while (isdigit((unsigned char)*name)) name++;
            pattern++;
        } else if (*pattern == '*') {
            if (!*name || *name == '[' || *name == ']') return false;
            while (*name && *name != '[' && *name != ']') name++;
            pattern++;
        } else {
            if (*pattern != *name) return false;
            pattern++;
            name++;
        }
    }
    return *name == '\0';
}

// Refuses any parameter that matches none of `allowed` ("Received unknown parameter").
static bool known_params(const json_t *p, const char *const *allowed, sb_response_t *resp) {
    const char *key;
    json_t *value;
    json_object_foreach((json_t *)p, key, value) {
        bool ok = false;
        for (size_t i = 0; allowed[i] && !ok; i++) ok = name_matches(allowed[i], key);
        if (!ok) {
            stripe_error(resp, 400, "invalid_request_error", "parameter_unknown", key, "Received unknown parameter: %s",
                         key);
            return false;
        }
    }
    return true;
}

// Collects "<prefix>[key]" parameters into an object with Stripe's metadata limits. NULL = answered 400.
static json_t *collect_metadata(const json_t *p, const char *prefix, sb_response_t *resp) {
    json_t *meta = json_object();
    size_t plen = strlen(prefix);
    const char *key;
    json_t *value;
    json_object_foreach((json_t *)p, key, value) {
        if (strncmp(key, prefix, plen) != 0 || key[plen] != '[') continue;
        const char *k = key + plen + 1;
        size_t klen = strlen(k);
        if (klen < 2 || k[klen - 1] != ']' || memchr(k, '[', klen - 1) || memchr(k, ']', klen - 1)) continue;
        klen--;
        const char *v = json_string_value(value);
        if (klen > 40) {
            stripe_error(resp, 400, "invalid_request_error", "parameter_invalid_string_blank", key,
                         "Metadata keys can have a maximum length of 40 characters.");
            json_decref(meta);
            return NULL;
        }
        if (v && strlen(v) > 500) {
            stripe_error(resp, 400, "invalid_request_error", "parameter_invalid_string_blank", key,
                         "Metadata values can have a maximum length of 500 characters.");
            json_decref(meta);
            return NULL;
        }
        if (v && *v) json_object_setn_new(meta, k, klen, json_string(v));
    }
    if (json_object_size(meta) > 50) {
        stripe_error(resp, 400, "invalid_request_error", NULL, prefix,
                     "Metadata can have a maximum of 50 key-value pairs.");
        json_decref(meta);
        return NULL;
    }
    return meta;
}

// ---- events --------------------------------------------------------------------------------------
// Emits `type` with a snapshot of `object`. `req` is the API request that caused it (NULL when the
// customer or the clock did); `previous` is data.previous_attributes for *.updated events.
static void emit_event(stripe_t *self, const char *type, const json_t *object, const json_t *previous,
                       const sb_request_t *req) {
    char id[40];
    sb_random_id("evt_", 24, id, sizeof id);
    json_t *data = json_pack("{s:o}", "object", json_deep_copy(object));
    if (data && previous) json_object_set_new(data, "previous_attributes", json_deep_copy(previous));
    json_t *ev = json_pack("{s:s,s:s,s:s,s:I,s:o,s:b,s:i,s:{s:s?,s:s?},s:s}", "id", id, "object", "event",
                           "api_version", self->api_version, "created", (json_int_t)sb_now_s(), "data", data,
                           "livemode", 0, "pending_webhooks", 1, "request", "id", req ? req->request_id : NULL,
                           "idempotency_key", req ? req->idempotency_key : NULL, "type", type);
    char *body = ev ? json_dumps(ev, JSON_COMPACT) : NULL;
    json_decref(ev);
    if (!body) {
        log_error(&self->log, "event_lost", "type=%s reason=out_of_memory", type);
        return;
    }
    webhook_event_t w = {.provider = "stripe", .id = id, .type = type, .url = self->webhook_url,
                         .body = body, .body_len = strlen(body), .stripe_secret = self->webhook_secret};
    webhooks_emit(self->webhooks, &w);
    free(body);
}

// ---- authentication ------------------------------------------------------------------------------
// Checks the secret key (Bearer, or Basic with the key as user name). Answers 401 and returns
// false when it is missing or wrong.
static bool authorized(stripe_t *self, const sb_request_t *req, sb_response_t *resp) {
    const char *auth = req->authorization;
    if (!auth || !*auth) {
        stripe_error(resp, 401, "invalid_request_error", NULL, NULL,
                     "You did not provide an API key. You need to provide your API key in the Authorization "
                     "header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY'). See "
                     "https://stripe.com/docs/api#authentication for details, or we can help at "
                     "https://support.stripe.com/.");
        sb_response_header(resp, "WWW-Authenticate", "Bearer realm=\"Stripe\"");
        return false;
    }
    char key[512] = "";
    if (strncasecmp(auth, "Bearer ", 7) == 0) {
        snprintf(key, sizeof key, "%s", auth + 7);
    } else if (strncasecmp(auth, "Basic ", 6) == 0) {
        const char *b64 = auth + 6;
        size_t n = strlen(b64);
        unsigned char decoded[400];
        if (n > 0 && n % 4 == 0 && n / 4 * 3 < sizeof decoded) {
            int m = EVP_DecodeBlock(decoded, (const unsigned char *)b64, (int)n);
            if (m > 0) {
                if (b64[n - 1] == '=') m--;
                if (b64[n - 2] == '=') m--;
                const unsigned char *colon = memchr(decoded, ':', (size_t)m);
                size_t ulen = colon ? (size_t)(colon - decoded) : (size_t)m;
                if (ulen < sizeof key && !memchr(decoded, '\0', ulen)) {
                    memcpy(key, decoded, ulen);
                    key[ulen] = '\0';
                }
            }
        }
    }
    size_t klen = strlen(key);
    while (klen > 0 && key[klen - 1] == ' ') key[--klen] = '\0';
    if (klen && util_consttime_equal(key, klen, self->secret_key, strlen(self->secret_key))) return true;
    char redacted[64];
    if (klen > 12)
        snprintf(redacted, sizeof redacted, "%.8s%s%s", key, "************", key + klen - 4);
    else
        snprintf(redacted, sizeof redacted, "%s", klen ? "****" : "");
    stripe_error(resp, 401, "invalid_request_error", "api_key_invalid", NULL, "Invalid API Key provided: %s", redacted);
    sb_response_header(resp, "WWW-Authenticate", "Bearer realm=\"Stripe\"");
    return false;
}

// ---- idempotency ---------------------------------------------------------------------------------
typedef void (*operation_fn)(stripe_t *self, const sb_request_t *req, const json_t *params, const char *id,
                             sb_response_t *resp);

static char *fingerprint(const sb_request_t *req, const json_t *params) {
    char *canon = json_dumps(params, JSON_COMPACT | JSON_SORT_KEYS);
    if (!canon) return NULL;
    size_t n = strlen(req->method) + strlen(req->path) + strlen(canon) + 3;
    char *fp = malloc(n);
    if (fp) snprintf(fp, n, "%s %s %s", req->method, req->path, canon);
    free(canon);
    return fp;
}

static void prune_idempotency(stripe_t *self) {
    int64_t cutoff = sb_now_s() - IDEMPOTENCY_TTL_S;
    for (size_t i = 0; i < self->idem.len;) {
        idem_t *e = self->idem.items[i];
        if (e->created_s < cutoff) {
            idem_free(e);
            sb_vec_remove(&self->idem, i);
        } else {
            i++;
        }
    }
}

// Runs `op` under the Idempotency-Key rules (providers.md §1.2).
static void idempotent(stripe_t *self, const sb_request_t *req, const json_t *params, const char *id, operation_fn op,
                       sb_response_t *resp) {
    const char *key = req->idempotency_key;
    if (!key) {
        op(self, req, params, id, resp);
        return;
    }
    if (!*key || strlen(key) > 255) {
        stripe_error(resp, 400, "invalid_request_error", NULL, NULL,
                     "Invalid idempotency key: keys must be between 1 and 255 characters long.");
        return;
    }
    prune_idempotency(self);
    char *fp = fingerprint(req, params);
    if (!fp) {
        stripe_error(resp, 500, "api_error", NULL, NULL, "Out of memory.");
        return;
    }
    for (size_t i = 0; i < self->idem.len; i++) {
        idem_t *e = self->idem.items[i];
        if (strcmp(e->key, key) != 0) continue;
        if (strcmp(e->fingerprint, fp) != 0) {
            stripe_error(resp, 400, "idempotency_error", NULL, NULL,
                         "Keys for idempotent requests can only be used with the same parameters they were first "
                         "used with. Try using a key other than '%s' if you meant to execute a different request.",
                         key);
        } else if (sb_mono_ms() < e->ready_at_ms) {
            stripe_error(resp, 409, "idempotency_error", "idempotency_key_in_use", NULL,
                         "There is currently another in-progress request using this Stripe-Idempotency-Key (that "
                         "probably means you submitted twice, and the other request is still going through): %s. "
                         "Please try again later.",
                         key);
        } else {
            sb_respond_bytes(resp, e->status, "application/json", e->body, e->body_len);
            sb_response_header(resp, "Idempotent-Replayed", "true");
            sb_response_header(resp, "Original-Request", e->request_id);
        }
        free(fp);
        return;
    }
    op(self, req, params, id, resp);
    // Validation failures (4xx) are not stored: the endpoint never began executing.
    if ((resp->status >= 200 && resp->status < 300) || resp->status >= 500) {
        idem_t *e = calloc(1, sizeof *e);
        if (e && (e->key = strdup(key)) && (e->body = malloc(resp->body_len + 1))) {
            e->fingerprint = fp;
            fp = NULL;
            memcpy(e->body, resp->body ? resp->body : "", resp->body_len);
            e->body[resp->body_len] = '\0';
            e->body_len = resp->body_len;
            e->status = resp->status;
            e->created_s = sb_now_s();
            e->ready_at_ms = sb_mono_ms() + (req->delay_ms > 0 ? req->delay_ms : 0);
            snprintf(e->request_id, sizeof e->request_id, "%s", req->request_id);
            if (sb_vec_push(&self->idem, e) != 0) idem_free(e);
        } else if (e) {
            idem_free(e);
        }
    }
    free(fp);
}

// ---- object views --------------------------------------------------------------------------------
// Refuses expand[N] values other than `allowed` (NULL-terminated). Answers 400 and returns false.
static bool valid_expands(const json_t *params, const char *const *allowed, sb_response_t *resp) {
    const char *key;
    json_t *value;
    json_object_foreach((json_t *)params, key, value) {
        if (!name_matches("expand[#]", key)) continue;
        const char *what = json_string_value(value);
        bool ok = false;
        for (size_t i = 0; allowed && allowed[i] && what && !ok; i++) ok = strcmp(allowed[i], what) == 0;
        if (!ok) {
            stripe_error(resp, 400, "invalid_request_error", NULL, key, "This property cannot be expanded (%s).",
                         what ? what : "");
            return false;
        }
    }
    return true;
}

static bool wants_expand(const json_t *params, const char *what) {
    const char *key;
    json_t *value;
    json_object_foreach((json_t *)params, key, value) {
        if (name_matches("expand[#]", key) && json_string_value(value) && strcmp(json_string_value(value), what) == 0)
            return true;
    }
    return false;
}

static const char *const session_expands[] = {"payment_intent", "line_items", NULL};

// The session as the API returns it, with expand[] applied (params already checked by valid_expands).
static json_t *session_view(stripe_t *self, const session_t *s, const json_t *params) {
    json_t *view = json_deep_copy(s->obj);
    if (!view || !params) return view;
    if (wants_expand(params, "payment_intent")) {
        intent_t *pi = find_intent(self, s->pi_id);
        if (pi) json_object_set_new(view, "payment_intent", json_deep_copy(pi->obj));
    }
    if (wants_expand(params, "line_items")) {
        char url[160];
        snprintf(url, sizeof url, "/v1/checkout/sessions/%s/line_items", s->id);
        json_object_set_new(view, "line_items", json_pack("{s:s,s:O,s:b,s:s}", "object", "list", "data",
                                                          s->line_items, "has_more", 0, "url", url));
    }
    return view;
}

static bool zero_decimal(const char *currency) {
    static const char *const zero[] = {"bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg",
                                       "rwf", "ugx", "vnd", "vuv", "xaf", "xof", "xpf", NULL};
    for (size_t i = 0; zero[i]; i++)
        if (strcmp(zero[i], currency) == 0) return true;
    return false;
}

static void format_amount(int64_t minor, const char *currency, char *out, size_t size) {
    char upper[8] = "";
    for (size_t i = 0; currency[i] && i < sizeof upper - 1; i++) {
        upper[i] = (char)toupper((unsigned char)currency[i]);
        upper[i + 1] = '\0';
    }
    if (zero_decimal(currency))
        snprintf(out, size, "%lld %s", (long long)minor, upper);
    else
        snprintf(out, size, "%lld.%02lld %s", (long long)(minor / 100), (long long)(minor % 100), upper);
}

// ---- checkout sessions ---------------------------------------------------------------------------
static const char *const session_params[] = {
    "mode", "success_url", "cancel_url", "client_reference_id", "customer_email", "expires_at", "locale",
    "submit_type", "billing_address_collection", "customer_creation", "metadata[*]",
    "payment_intent_data[metadata][*]", "payment_intent_data[description]", "payment_intent_data[receipt_email]",
    "payment_intent_data[statement_descriptor]", "payment_intent_data[statement_descriptor_suffix]",
    "payment_method_types[#]", "expand[#]", "line_items[#][quantity]", "line_items[#][price]",
    "line_items[#][price_data][currency]", "line_items[#][price_data][unit_amount]",
    "line_items[#][price_data][product_data][name]", "line_items[#][price_data][product_data][description]",
    "line_items[#][price_data][product_data][metadata][*]", "phone_number_collection[enabled]", NULL};

static const char *const payment_method_types[] = {
    "acss_debit", "affirm", "afterpay_clearpay", "alipay", "amazon_pay", "au_becs_debit", "bacs_debit",
    "bancontact", "blik", "boleto", "card", "cashapp", "customer_balance", "eps", "fpx", "giropay", "grabpay",
    "ideal", "klarna", "konbini", "link", "mobilepay", "multibanco", "oxxo", "p24", "paynow", "paypal", "pix",
    "promptpay", "revolut_pay", "sepa_debit", "sofort", "swish", "twint", "us_bank_account", "wechat_pay", "zip",
    NULL};

static bool has_param_prefix(const json_t *p, const char *prefix) {
    const char *key;
    json_t *value;
    size_t n = strlen(prefix);
    json_object_foreach((json_t *)p, key, value) {
        if (strncmp(key, prefix, n) == 0 && (key[n] == '\0' || key[n] == '[')) return true;
    }
    return false;
}

static bool valid_email(const char *s) {
    const char *at = strchr(s, '@');
    if (!at || at == s || strchr(at + 1, '@') || !strchr(at + 1, '.') || strlen(s) > 512) return false;
    for (const unsigned char *c = (const unsigned char *)s; *c; c++)
        if (*c <= ' ' || *c == 0x7f) return false;
    return at[1] != '.' && s[strlen(s) - 1] != '.';
}

static void create_session(stripe_t *self, const sb_request_t *req, const json_t *p, const char *unused,
                           sb_response_t *resp) {
    (void)unused;
    (void)req;
    if (!known_params(p, session_params, resp) || !valid_expands(p, session_expands, resp)) return;
    const char *mode = require_param(p, "mode", resp);
    if (!mode) return;
    if (strcmp(mode, "payment") != 0) {
        if (strcmp(mode, "setup") == 0 || strcmp(mode, "subscription") == 0)
            stripe_error(resp, 400, "invalid_request_error", NULL, "mode",
                         "The sandbox implements only mode=payment (got %s).", mode);
        else
            stripe_error(resp, 400, "invalid_request_error", "parameter_invalid_empty", "mode",
                         "Invalid mode: must be one of payment, setup, or subscription");
        return;
    }
    // line items: line_items[0..n-1], no gaps
    int n_items = 0;
    for (; n_items < 100; n_items++) {
        char prefix[32];
        snprintf(prefix, sizeof prefix, "line_items[%d]", n_items);
        if (!has_param_prefix(p, prefix)) break;
    }
    if (n_items == 0) {
        stripe_error(resp, 400, "invalid_request_error", "parameter_missing", "line_items",
                     "Missing required param: line_items.");
        return;
    }
    {
        const char *key;
        json_t *value;
        json_object_foreach((json_t *)p, key, value) {
            int idx;
            if (sscanf(key, "line_items[%d]", &idx) == 1 && (idx < 0 || idx >= n_items)) {
                stripe_error(resp, 400, "invalid_request_error", NULL, "line_items",
                             "Invalid array: line_items must be indexed from 0 without gaps.");
                return;
            }
        }
    }
    char currency[8] = "";
    int64_t total = 0;
    char *product_name = NULL;
    json_t *line_items = json_array();
    for (int i = 0; i < n_items; i++) {
        char k_price[48], k_pd[48], k_cur[64], k_amt[64], k_name[80], k_qty[48];
        snprintf(k_price, sizeof k_price, "line_items[%d][price]", i);
        snprintf(k_pd, sizeof k_pd, "line_items[%d][price_data]", i);
        snprintf(k_cur, sizeof k_cur, "line_items[%d][price_data][currency]", i);
        snprintf(k_amt, sizeof k_amt, "line_items[%d][price_data][unit_amount]", i);
        snprintf(k_name, sizeof k_name, "line_items[%d][price_data][product_data][name]", i);
        snprintf(k_qty, sizeof k_qty, "line_items[%d][quantity]", i);
        const char *price = str_of(p, k_price);
        if (price) {
            stripe_error(resp, 400, "invalid_request_error", "resource_missing", k_price, "No such price: '%s'", price);
            goto fail;
        }
        if (!has_param_prefix(p, k_pd)) {
            missing_param(resp, k_pd);
            goto fail;
        }
        const char *cur = require_param(p, k_cur, resp);
        if (!cur) goto fail;
        char lower[8] = "";
        bool cur_ok = strlen(cur) == 3;
        for (int c = 0; cur_ok && c < 3; c++) {
            cur_ok = isalpha((unsigned char)cur[c]);
            lower[c] = (char)tolower((unsigned char)cur[c]);
        }
        if (!cur_ok) {
            stripe_error(resp, 400, "invalid_request_error", NULL, k_cur, "Invalid currency: %s.", cur);
            goto fail;
        }
        if (currency[0] && strcmp(currency, lower) != 0) {
            stripe_error(resp, 400, "invalid_request_error", NULL, k_cur,
                         "All line items must use the same currency (%s).", currency);
            goto fail;
        }
        snprintf(currency, sizeof currency, "%s", lower);
        const char *amt_text = require_param(p, k_amt, resp);
        int64_t amount, qty;
        if (!amt_text || int_param(k_amt, amt_text, 1, 99999999, &amount, resp) != 0) goto fail;
        const char *name = require_param(p, k_name, resp);
        if (!name) goto fail;
        const char *qty_text = require_param(p, k_qty, resp);
        if (!qty_text || int_param(k_qty, qty_text, 1, 999999, &qty, resp) != 0) goto fail;
        if (!product_name) product_name = strdup(name);
        total += amount * qty;
        json_array_append_new(line_items, json_pack("{s:s,s:I,s:I,s:I}", "description", name, "quantity",
                                                    (json_int_t)qty, "unit_amount", (json_int_t)amount,
                                                    "amount_total", (json_int_t)(amount * qty)));
    }
    if (total > 99999999) {
        stripe_error(resp, 400, "invalid_request_error", "amount_too_large", NULL,
                     "The Checkout Session's total amount due must be no more than 999,999.99.");
        goto fail;
    }
    if (!zero_decimal(currency) && total < 50) {
        stripe_error(resp, 400, "invalid_request_error", "amount_too_small", NULL,
                     "The Checkout Session's total amount due must add up to at least 0.50 %s.", currency);
        goto fail;
    }
    const char *success_url = require_param(p, "success_url", resp);
    if (!success_url) goto fail;
    if (!sb_is_http_url(success_url) || strlen(success_url) > 5000) {
        stripe_error(resp, 400, "invalid_request_error", "url_invalid", "success_url", "Not a valid URL");
        goto fail;
    }
    const char *cancel_url = require_param(p, "cancel_url", resp);
    if (!cancel_url) goto fail;
    if (!sb_is_http_url(cancel_url) || strlen(cancel_url) > 5000) {
        stripe_error(resp, 400, "invalid_request_error", "url_invalid", "cancel_url", "Not a valid URL");
        goto fail;
    }
    const char *client_ref = str_of(p, "client_reference_id");
    if (client_ref && strlen(client_ref) > 200) {
        stripe_error(resp, 400, "invalid_request_error", "parameter_invalid_string_blank", "client_reference_id",
                     "Invalid string: client_reference_id must be at most 200 characters.");
        goto fail;
    }
    if (client_ref && !*client_ref) client_ref = NULL;
    const char *email = str_of(p, "customer_email");
    if (email && *email && !valid_email(email)) {
        stripe_error(resp, 400, "invalid_request_error", "email_invalid", "customer_email",
                     "Invalid email address: %s", email);
        goto fail;
    }
    if (email && !*email) email = NULL;
    int64_t now = sb_now_s(), expires_at = now + 86400;
    const char *exp_text = str_of(p, "expires_at");
    if (exp_text) {
        if (int_param("expires_at", exp_text, 0, INT64_MAX, &expires_at, resp) != 0) goto fail;
        if (expires_at < now + 1800 - EXPIRY_GRACE_S) {
            stripe_error(resp, 400, "invalid_request_error", NULL, "expires_at",
                         "The `expires_at` timestamp must be at least 30 minutes from Checkout Session creation.");
            goto fail;
        }
        if (expires_at > now + 86400 + EXPIRY_GRACE_S) {
            stripe_error(resp, 400, "invalid_request_error", NULL, "expires_at",
                         "The `expires_at` timestamp must be less than 24 hours from Checkout Session creation.");
            goto fail;
        }
    }
    json_t *pmt = json_array();
    for (int i = 0;; i++) {
        char k[40];
        snprintf(k, sizeof k, "payment_method_types[%d]", i);
        const char *t = str_of(p, k);
        if (!t) break;
        bool ok = false;
        for (size_t j = 0; payment_method_types[j] && !ok; j++) ok = strcmp(payment_method_types[j], t) == 0;
        if (!ok) {
            stripe_error(resp, 400, "invalid_request_error", NULL, k, "Invalid %s: must be a known payment method type",
                         k);
            json_decref(pmt);
            goto fail;
        }
        json_array_append_new(pmt, json_string(t));
    }
    if (json_array_size(pmt) == 0) json_array_append_new(pmt, json_string("card"));
    json_t *metadata = collect_metadata(p, "metadata", resp);
    json_t *pi_metadata = metadata ? collect_metadata(p, "payment_intent_data[metadata]", resp) : NULL;
    if (!metadata || !pi_metadata) {
        json_decref(metadata);
        json_decref(pmt);
        goto fail;
    }
    session_t *s = calloc(1, sizeof *s);
    if (!s) {
        json_decref(metadata);
        json_decref(pi_metadata);
        json_decref(pmt);
        stripe_error(resp, 500, "api_error", NULL, NULL, "Out of memory.");
        goto fail;
    }
    sb_random_id("cs_test_", 58, s->id, sizeof s->id);
    char url[600];
    snprintf(url, sizeof url, "%s/pay/%s", self->public_url, s->id);
    s->obj = json_pack("{s:s,s:s,s:n,s:n,s:I,s:I,s:s,s:s?,s:I,s:s,s:n,s:n,s:s?,s:I,s:b,s:o,s:s,s:n,s:o,s:s,s:s,s:s,s:s}",
                       "id", s->id, "object", "checkout.session", "after_expiration", "allow_promotion_codes",
                       "amount_subtotal", (json_int_t)total, "amount_total", (json_int_t)total, "cancel_url",
                       cancel_url, "client_reference_id", client_ref, "created", (json_int_t)now, "currency",
                       currency, "customer", "customer_details", "customer_email", email, "expires_at",
                       (json_int_t)expires_at, "livemode", 0, "metadata", metadata, "mode", "payment",
                       "payment_intent", "payment_method_types", pmt, "payment_status", "unpaid", "status", "open",
                       "success_url", success_url, "url", url);
    s->pi_metadata = pi_metadata;
    const char *pi_desc = str_of(p, "payment_intent_data[description]");
    s->pi_description = pi_desc && *pi_desc ? strdup(pi_desc) : NULL;
    s->product_name = product_name;
    product_name = NULL;
    s->line_items = line_items;
    line_items = NULL;
    if (!s->obj || sb_vec_push(&self->sessions, s) != 0) {
        session_free(s);
        stripe_error(resp, 500, "api_error", NULL, NULL, "Out of memory.");
        goto fail;
    }
    sb_respond_json(resp, 200, session_view(self, s, p));
    log_info(&self->log, "checkout_session_created", "id=%s amount=%lld currency=%s", s->id, (long long)total,
             currency);
fail:
    free(product_name);
    json_decref(line_items);
}

// ---- session state changes (shared by the API, the hosted page and the control API) ----------------
static charge_t *create_charge(stripe_t *self, intent_t *pi) {
    charge_t *ch = calloc(1, sizeof *ch);
    if (!ch) return NULL;
    sb_random_id("ch_", 24, ch->id, sizeof ch->id);
    json_int_t amount = int_of(pi->obj, "amount");
    ch->obj = json_pack("{s:s,s:s,s:I,s:I,s:I,s:b,s:I,s:s,s:b,s:O,s:b,s:s,s:b,s:s}", "id", ch->id, "object", "charge",
                        "amount", amount, "amount_captured", amount, "amount_refunded", (json_int_t)0, "captured", 1,
                        "created", (json_int_t)sb_now_s(), "currency", str_of(pi->obj, "currency"), "livemode", 0,
                        "metadata", json_object_get(pi->obj, "metadata"), "paid", 1, "payment_intent", pi->id,
                        "refunded", 0, "status", "succeeded");
    if (!ch->obj || sb_vec_push(&self->charges, ch) != 0) {
        object_free_charge(ch);
        return NULL;
    }
    json_object_set_new(pi->obj, "latest_charge", json_string(ch->id));
    json_object_set_new(pi->obj, "amount_received", json_integer(amount));
    json_object_set_new(pi->obj, "status", json_string("succeeded"));
    return ch;
}

// Completes an open session as the customer would: `paid` false means a delayed method
// (payment_status stays unpaid until the async outcome). 0, or -1 when not open.
static int session_complete(stripe_t *self, session_t *s, bool paid) {
    if (strcmp(str_of(s->obj, "status"), "open") != 0) return -1;
    intent_t *pi = calloc(1, sizeof *pi);
    if (!pi) return -1;
    sb_random_id("pi_", 24, pi->id, sizeof pi->id);
    snprintf(pi->session_id, sizeof pi->session_id, "%s", s->id);
    pi->obj = json_pack("{s:s,s:s,s:I,s:I,s:s,s:I,s:s,s:s?,s:n,s:b,s:O,s:O,s:s}", "id", pi->id, "object",
                        "payment_intent", "amount", int_of(s->obj, "amount_total"), "amount_received", (json_int_t)0,
                        "capture_method", "automatic", "created", (json_int_t)sb_now_s(), "currency",
                        str_of(s->obj, "currency"), "description", s->pi_description, "latest_charge", "livemode", 0,
                        "metadata", s->pi_metadata, "payment_method_types",
                        json_object_get(s->obj, "payment_method_types"), "status", "processing");
    if (!pi->obj || sb_vec_push(&self->intents, pi) != 0) {
        object_free_intent(pi);
        return -1;
    }
    if (paid && !create_charge(self, pi)) return -1;
    snprintf(s->pi_id, sizeof s->pi_id, "%s", pi->id);
    json_object_set_new(s->obj, "status", json_string("complete"));
    json_object_set_new(s->obj, "payment_status", json_string(paid ? "paid" : "unpaid"));
    json_object_set_new(s->obj, "payment_intent", json_string(pi->id));
    json_object_set_new(s->obj, "url", json_null());
    json_object_set_new(s->obj, "customer_details",
                        json_pack("{s:s?,s:n,s:n}", "email", str_of(s->obj, "customer_email"), "name", "phone"));
    log_info(&self->log, "checkout_session_completed", "id=%s payment_intent=%s payment_status=%s", s->id, pi->id,
             paid ? "paid" : "unpaid");
    emit_event(self, "checkout.session.completed", s->obj, NULL, NULL);
    return 0;
}

// The outcome of a delayed payment method. 0, or -1 unless the session is complete and unpaid.
static int session_async_outcome(stripe_t *self, session_t *s, bool succeeded) {
    intent_t *pi = find_intent(self, s->pi_id);
    if (!pi || strcmp(str_of(s->obj, "status"), "complete") != 0 ||
        strcmp(str_of(s->obj, "payment_status"), "unpaid") != 0 || strcmp(str_of(pi->obj, "status"), "processing") != 0)
        return -1;
    if (succeeded) {
        if (!create_charge(self, pi)) return -1;
        json_object_set_new(s->obj, "payment_status", json_string("paid"));
    } else {
        json_object_set_new(pi->obj, "status", json_string("requires_payment_method"));
    }
    log_info(&self->log, "checkout_session_async", "id=%s outcome=%s", s->id, succeeded ? "succeeded" : "failed");
    emit_event(self, succeeded ? "checkout.session.async_payment_succeeded" : "checkout.session.async_payment_failed",
               s->obj, NULL, NULL);
    return 0;
}

static int session_expire(stripe_t *self, session_t *s, const sb_request_t *req) {
    if (strcmp(str_of(s->obj, "status"), "open") != 0) return -1;
    json_object_set_new(s->obj, "status", json_string("expired"));
    json_object_set_new(s->obj, "url", json_null());
    log_info(&self->log, "checkout_session_expired", "id=%s", s->id);
    emit_event(self, "checkout.session.expired", s->obj, NULL, req);
    return 0;
}

static void retrieve_session(stripe_t *self, const sb_request_t *req, const json_t *p, const char *id,
                             sb_response_t *resp) {
    (void)req;
    session_t *s = find_session(self, id);
    if (!s) {
        stripe_error(resp, 404, "invalid_request_error", "resource_missing", "session",
                     "No such checkout.session: '%s'", id);
        return;
    }
    if (!valid_expands(p, session_expands, resp)) return;
    sb_respond_json(resp, 200, session_view(self, s, p));
}

static void expire_session(stripe_t *self, const sb_request_t *req, const json_t *p, const char *id,
                           sb_response_t *resp) {
    static const char *const allowed[] = {"expand[#]", NULL};
    if (!known_params(p, allowed, resp) || !valid_expands(p, session_expands, resp)) return;
    session_t *s = find_session(self, id);
    if (!s) {
        stripe_error(resp, 404, "invalid_request_error", "resource_missing", "session",
                     "No such checkout.session: '%s'", id);
        return;
    }
    if (session_expire(self, s, req) != 0) {
        stripe_error(resp, 400, "invalid_request_error", "checkout_session_unexpirable", NULL,
                     "Only Checkout Sessions with a status in [\"open\"] can be expired. This Checkout Session "
                     "has a status of \"%s\".",
                     str_of(s->obj, "status"));
        return;
    }
    sb_respond_json(resp, 200, session_view(self, s, p));
}

// ---- payment intents and refunds -----------------------------------------------------------------
static void retrieve_intent(stripe_t *self, const sb_request_t *req, const json_t *p, const char *id,
                            sb_response_t *resp) {
    (void)req;
    intent_t *pi = find_intent(self, id);
    if (!pi) {
        stripe_error(resp, 404, "invalid_request_error", "resource_missing", "intent", "No such payment_intent: '%s'",
                     id);
        return;
    }
    if (!valid_expands(p, NULL, resp)) return;
    sb_respond_json(resp, 200, json_deep_copy(pi->obj));
}

static void retrieve_refund(stripe_t *self, const sb_request_t *req, const json_t *p, const char *id,
                            sb_response_t *resp) {
    (void)req;
    refund_t *re = find_refund(self, id);
    if (!re) {
        stripe_error(resp, 404, "invalid_request_error", "resource_missing", "refund", "No such refund: '%s'", id);
        return;
    }
    if (!valid_expands(p, NULL, resp)) return;
    sb_respond_json(resp, 200, json_deep_copy(re->obj));
}

// Applies a refund that succeeded to its charge and emits charge.refunded.
static void charge_apply_refund(stripe_t *self, charge_t *ch, int64_t amount, const sb_request_t *req) {
    json_int_t refunded = int_of(ch->obj, "amount_refunded") + amount;
    json_object_set_new(ch->obj, "amount_refunded", json_integer(refunded));
    json_object_set_new(ch->obj, "refunded", json_boolean(refunded >= int_of(ch->obj, "amount")));
    emit_event(self, "charge.refunded", ch->obj, NULL, req);
}

static void create_refund(stripe_t *self, const sb_request_t *req, const json_t *p, const char *unused,
                          sb_response_t *resp) {
    (void)unused;
    static const char *const allowed[] = {"payment_intent", "charge", "amount", "reason", "metadata[*]",
                                          "instructions_email", "expand[#]", NULL};
    if (!known_params(p, allowed, resp) || !valid_expands(p, NULL, resp)) return;
    const char *pi_id = str_of(p, "payment_intent"), *ch_id = str_of(p, "charge");
    if ((!pi_id || !*pi_id) && (!ch_id || !*ch_id)) {
        missing_param(resp, "payment_intent");
        return;
    }
    charge_t *ch = NULL;
    intent_t *pi = NULL;
    if (pi_id && *pi_id) {
        pi = find_intent(self, pi_id);
        if (!pi) {
            stripe_error(resp, 400, "invalid_request_error", "resource_missing", "payment_intent",
                         "No such payment_intent: '%s'", pi_id);
            return;
        }
        ch = find_charge(self, str_of(pi->obj, "latest_charge"));
        if (!ch) {
            stripe_error(resp, 400, "invalid_request_error", "charge_not_refundable", "payment_intent",
                         "This PaymentIntent (%s) does not have a successful charge to refund.", pi_id);
            return;
        }
        if (ch_id && *ch_id && strcmp(ch_id, ch->id) != 0) {
            stripe_error(resp, 400, "invalid_request_error", NULL, "charge",
                         "The charge %s does not belong to the PaymentIntent %s.", ch_id, pi_id);
            return;
        }
    } else {
        ch = find_charge(self, ch_id);
        if (!ch) {
            stripe_error(resp, 400, "invalid_request_error", "resource_missing", "charge", "No such charge: '%s'",
                         ch_id);
            return;
        }
    }
    char ch_id_copy[40];
    snprintf(ch_id_copy, sizeof ch_id_copy, "%s", ch->id);
    const char *currency = str_of(ch->obj, "currency");
    int64_t remaining = int_of(ch->obj, "amount") - int_of(ch->obj, "amount_refunded") - ch->pending_refunds;
    if (remaining <= 0) {
        stripe_error(resp, 400, "invalid_request_error", "charge_already_refunded", NULL,
                     "Charge %s has already been refunded.", ch->id);
        return;
    }
    int64_t amount = remaining;
    const char *amount_text = str_of(p, "amount");
    if (amount_text) {
        if (int_param("amount", amount_text, 1, INT64_MAX, &amount, resp) != 0) return;
        if (amount > remaining) {
            char want[48], left[48];
            format_amount(amount, currency, want, sizeof want);
            format_amount(remaining, currency, left, sizeof left);
            stripe_error(resp, 400, "invalid_request_error", "amount_too_large", "amount",
                         "Refund amount (%s) is greater than unrefunded amount on charge (%s)", want, left);
            return;
        }
    }
    const char *reason = str_of(p, "reason");
    if (reason && *reason && strcmp(reason, "duplicate") != 0 && strcmp(reason, "fraudulent") != 0 &&
        strcmp(reason, "requested_by_customer") != 0) {
        stripe_error(resp, 400, "invalid_request_error", NULL, "reason",
                     "Invalid reason: must be one of duplicate, fraudulent, or requested_by_customer");
        return;
    }
    if (reason && !*reason) reason = NULL;
    json_t *metadata = collect_metadata(p, "metadata", resp);
    if (!metadata) return;
    refund_t *re = calloc(1, sizeof *re);
    if (!re) {
        json_decref(metadata);
        stripe_error(resp, 500, "api_error", NULL, NULL, "Out of memory.");
        return;
    }
    bool pending = strcmp(self->refund_status, "pending") == 0;
    sb_random_id("re_", 24, re->id, sizeof re->id);
    snprintf(re->charge_id, sizeof re->charge_id, "%s", ch_id_copy);
    re->obj = json_pack("{s:s,s:s,s:I,s:n,s:s,s:I,s:s,s:o,s:s?,s:s?,s:n,s:s}", "id", re->id, "object", "refund",
                        "amount", (json_int_t)amount, "balance_transaction", "charge", ch_id_copy, "created",
                        (json_int_t)sb_now_s(), "currency", currency, "metadata", metadata, "payment_intent",
                        str_of(ch->obj, "payment_intent"), "reason", reason, "receipt_number", "status",
                        pending ? "pending" : "succeeded");
    if (!re->obj || sb_vec_push(&self->refunds, re) != 0) {
        object_free_refund(re);
        stripe_error(resp, 500, "api_error", NULL, NULL, "Out of memory.");
        return;
    }
    log_info(&self->log, "refund_created", "id=%s charge=%s amount=%lld status=%s", re->id, ch_id_copy,
             (long long)amount, pending ? "pending" : "succeeded");
    sb_respond_json(resp, 200, json_deep_copy(re->obj));
    emit_event(self, "refund.created", re->obj, NULL, req);
    if (pending)
        ch->pending_refunds += amount;
    else
        charge_apply_refund(self, ch, amount, req);
}

// Settles a pending refund (control API): "succeeded" or "failed". 0, or -1 when not pending.
static int refund_settle(stripe_t *self, refund_t *re, bool succeeded) {
    charge_t *ch = find_charge(self, re->charge_id);
    if (!ch || strcmp(str_of(re->obj, "status"), "pending") != 0) return -1;
    json_int_t amount = int_of(re->obj, "amount");
    ch->pending_refunds -= amount;
    json_t *previous = json_pack("{s:s}", "status", "pending");
    json_object_set_new(re->obj, "status", json_string(succeeded ? "succeeded" : "failed"));
    if (!succeeded) json_object_set_new(re->obj, "failure_reason", json_string("expired_or_canceled_card"));
    emit_event(self, "refund.updated", re->obj, previous, NULL);
    json_decref(previous);
    if (succeeded)
        charge_apply_refund(self, ch, amount, NULL);
    else
        emit_event(self, "refund.failed", re->obj, NULL, NULL);
    log_info(&self->log, "refund_settled", "id=%s status=%s", re->id, succeeded ? "succeeded" : "failed");
    return 0;
}

// ---- hosted checkout page ------------------------------------------------------------------------
static char *replace_all(const char *text, const char *what, const char *with) {
    sb_buf_t b = {0};
    size_t wl = strlen(what);
    for (const char *s = text; *s;) {
        const char *hit = strstr(s, what);
        if (!hit) {
            sb_buf_puts(&b, s);
            break;
        }
        sb_buf_add(&b, s, (size_t)(hit - s));
        sb_buf_puts(&b, with);
        s = hit + wl;
    }
    return sb_buf_take(&b, NULL);
}

// GET /pay/{id}, POST /pay/{id}/complete, POST /pay/{id}/cancel. No authentication: a browser.
static void hosted_page(stripe_t *self, const sb_request_t *req, sb_response_t *resp) {
    const char *rest = req->path + strlen("/pay/");
    const char *slash = strchr(rest, '/');
    char id[96];
    snprintf(id, sizeof id, "%.*s", slash ? (int)(slash - rest) : (int)strlen(rest), rest);
    const char *action = slash ? slash + 1 : "";
    bool post = strcmp(req->method, "POST") == 0;
    session_t *s = find_session(self, id);
    if (!s) {
        sb_respond_page(resp, 404, "Checkout session not found", "<p>This checkout link is not valid.</p>");
        return;
    }
    const char *status = str_of(s->obj, "status");
    if (!*action && !post) {
        if (strcmp(status, "open") != 0) {
            char inner[200];
            snprintf(inner, sizeof inner, "<p data-testid=\"status\">This checkout session is %s.</p>", status);
            sb_respond_page(resp, 410, "Checkout session no longer available", inner);
            return;
        }
        char amount[64];
        format_amount(int_of(s->obj, "amount_total"), str_of(s->obj, "currency"), amount, sizeof amount);
        char *eid = sb_html_escape(s->id), *ebase = sb_html_escape(self->public_url);
        sb_buf_t b = {0};
        sb_buf_printf(&b,
                      "<p class=\"amount\" data-testid=\"amount\">%s</p>"
                      "<form method=\"post\" action=\"%s/pay/%s/complete\">"
                      "<button class=\"primary\" id=\"pay\" data-testid=\"pay\" type=\"submit\">Pay</button></form>"
                      "<form method=\"post\" action=\"%s/pay/%s/cancel\">"
                      "<button id=\"cancel\" data-testid=\"cancel\" type=\"submit\">Cancel</button></form>",
                      amount, ebase ? ebase : "", eid ? eid : "", ebase ? ebase : "", eid ? eid : "");
        free(eid);
        free(ebase);
        char *inner = sb_buf_take(&b, NULL);
        sb_respond_page(resp, 200, s->product_name ? s->product_name : "Checkout", inner ? inner : "");
        free(inner);
        return;
    }
    if (post && strcmp(action, "complete") == 0) {
        if (session_complete(self, s, true) != 0) {
            char inner[200];
            snprintf(inner, sizeof inner, "<p data-testid=\"status\">This checkout session is %s.</p>", status);
            sb_respond_page(resp, 409, "Payment not possible", inner);
            return;
        }
        char *target = replace_all(str_of(s->obj, "success_url"), "{CHECKOUT_SESSION_ID}", s->id);
        sb_respond_redirect(resp, target ? target : str_of(s->obj, "success_url"));
        free(target);
        return;
    }
    if (post && strcmp(action, "cancel") == 0) {   // like Stripe: the session stays open
        sb_respond_redirect(resp, str_of(s->obj, "cancel_url"));
        return;
    }
    sb_respond_page(resp, 404, "Not found", "<p>Unknown checkout action.</p>");
}

// ---- API dispatch ---------------------------------------------------------------------------------
// Matches "<prefix><id><suffix>" where id is non-empty and has no '/'. Copies the id.
static bool path_id(const char *path, const char *prefix, const char *suffix, char *id, size_t size) {
    if (!starts_with(path, prefix)) return false;
    const char *start = path + strlen(prefix);
    const char *end = strchr(start, '/');
    if (!end) end = start + strlen(start);
    if (end == start || strcmp(end, suffix) != 0 || (size_t)(end - start) >= size) return false;
    memcpy(id, start, (size_t)(end - start));
    id[end - start] = '\0';
    return true;
}

static bool valid_api_version(const char *v) {
    int y, m, d, n = 0;
    if (sscanf(v, "%4d-%2d-%2d%n", &y, &m, &d, &n) != 3 || n != 10) return false;
    if (y < 2011 || m < 1 || m > 12 || d < 1 || d > 31) return false;
    if (v[10] == '\0') return true;
    if (v[10] != '.' || !v[11]) return false;
    for (const char *s = v + 11; *s; s++)
        if (!islower((unsigned char)*s)) return false;
    return true;
}

static bool stripe_owns(const char *path) { return starts_with(path, "/v1/") || starts_with(path, "/pay/"); }

static void stripe_handle(void *vself, const sb_request_t *req, sb_response_t *resp) {
    stripe_t *self = vself;
    if (starts_with(req->path, "/pay/")) {
        hosted_page(self, req, resp);
        return;
    }
    if (!authorized(self, req, resp)) return;
    if (req->stripe_version && !valid_api_version(req->stripe_version)) {
        stripe_error(resp, 400, "invalid_request_error", NULL, NULL, "Invalid Stripe API version: %s",
                     req->stripe_version);
        return;
    }
    sb_response_header(resp, "Stripe-Version", req->stripe_version ? req->stripe_version : self->api_version);
    bool post = strcmp(req->method, "POST") == 0, get = strcmp(req->method, "GET") == 0;
    if (post && !req->form && sb_content_type_is(req, "application/x-www-form-urlencoded")) {
        stripe_error(resp, 400, "invalid_request_error", NULL, NULL,
                     "Invalid request: the body is not valid application/x-www-form-urlencoded.");
        return;
    }
    if (post && !req->form) {
        stripe_error(resp, 400, "invalid_request_error", NULL, NULL,
                     "Invalid request: unsupported Content-Type %s. If error persists and you need assistance, "
                     "please contact support@stripe.com.",
                     req->content_type ? req->content_type : "(none)");
        return;
    }
    if (post && req->idempotency_key) sb_response_header(resp, "Idempotency-Key", req->idempotency_key);
    json_t *empty = json_object();
    const json_t *params = post ? req->form : (req->query ? req->query : empty);
    char id[96];
    const char *path = req->path;
    if (post && strcmp(path, "/v1/checkout/sessions") == 0)
        idempotent(self, req, params, NULL, create_session, resp);
    else if (get && path_id(path, "/v1/checkout/sessions/", "", id, sizeof id))
        retrieve_session(self, req, params, id, resp);
    else if (post && path_id(path, "/v1/checkout/sessions/", "/expire", id, sizeof id))
        idempotent(self, req, params, id, expire_session, resp);
    else if (post && strcmp(path, "/v1/refunds") == 0)
        idempotent(self, req, params, NULL, create_refund, resp);
    else if (get && path_id(path, "/v1/refunds/", "", id, sizeof id))
        retrieve_refund(self, req, params, id, resp);
    else if (get && path_id(path, "/v1/payment_intents/", "", id, sizeof id))
        retrieve_intent(self, req, params, id, resp);
    else
        stripe_error(resp, 404, "invalid_request_error", NULL, NULL,
                     "Unrecognized request URL (%s: %s). Please see https://stripe.com/docs or we can help at "
                     "https://support.stripe.com/.",
                     req->method, path);
    json_decref(empty);
}

static void stripe_fault(int status, sb_response_t *resp) {
    if (status == 429)
        stripe_error(resp, 429, "invalid_request_error", "rate_limit", NULL,
                     "Request rate limit exceeded. Learn more about rate limits here "
                     "https://stripe.com/docs/rate-limits.");
    else if (status >= 500)
        stripe_error(resp, status, "api_error", NULL, NULL, "An unknown error occurred");
    else
        stripe_error(resp, status, "invalid_request_error", NULL, NULL, "Injected fault (sandbox).");
}

// ---- control API (/_sandbox/stripe/…) -------------------------------------------------------------
static void stripe_control(void *vself, const char *sub, const sb_request_t *req, sb_response_t *resp) {
    stripe_t *self = vself;
    bool post = strcmp(req->method, "POST") == 0;
    const json_t *body = json_is_object(req->json) ? req->json : NULL;
    if (post && req->body_len > 0 && !body) {
        sb_respond_error(resp, 400, "the body must be a JSON object");
        return;
    }
    char id[96];
    if (!post && strcmp(sub, "/sessions") == 0) {
        json_t *list = json_array();
        for (size_t i = 0; i < self->sessions.len; i++)
            json_array_append_new(list, session_view(self, self->sessions.items[i], NULL));
        sb_respond_json(resp, 200, json_pack("{s:o}", "sessions", list));
    } else if (!post && strcmp(sub, "/refunds") == 0) {
        json_t *list = json_array();
        for (size_t i = 0; i < self->refunds.len; i++)
            json_array_append_new(list, json_deep_copy(((refund_t *)self->refunds.items[i])->obj));
        sb_respond_json(resp, 200, json_pack("{s:o}", "refunds", list));
    } else if (post && path_id(sub, "/sessions/", "/complete", id, sizeof id)) {
        session_t *s = find_session(self, id);
        const char *ps = str_of(body, "payment_status"), *then = str_of(body, "then");
        if (!s) {
            sb_respond_error(resp, 404, "no such session: %s", id);
            return;
        }
        if ((ps && strcmp(ps, "paid") != 0 && strcmp(ps, "unpaid") != 0) ||
            (then && strcmp(then, "async_succeeded") != 0 && strcmp(then, "async_failed") != 0)) {
            sb_respond_error(resp, 400, "payment_status is paid|unpaid, then is async_succeeded|async_failed|null");
            return;
        }
        bool paid = ps ? strcmp(ps, "paid") == 0 : !then;   // "then" alone implies unpaid
        if (paid && then) {
            sb_respond_error(resp, 400, "\"then\" needs payment_status unpaid");
            return;
        }
        bool open = strcmp(str_of(s->obj, "status"), "open") == 0;
        if (open) {
            if (session_complete(self, s, paid) != 0) {
                sb_respond_error(resp, 500, "could not complete the session");
                return;
            }
        } else if (!then) {
            sb_respond_error(resp, 409, "the session is %s", str_of(s->obj, "status"));
            return;
        }
        if (then && session_async_outcome(self, s, strcmp(then, "async_succeeded") == 0) != 0) {
            sb_respond_error(resp, 409, "the session is not waiting for an async payment");
            return;
        }
        sb_respond_json(resp, 200, json_pack("{s:b,s:o}", "ok", 1, "session", session_view(self, s, NULL)));
    } else if (post && path_id(sub, "/sessions/", "/expire_now", id, sizeof id)) {
        session_t *s = find_session(self, id);
        if (!s) {
            sb_respond_error(resp, 404, "no such session: %s", id);
        } else if (session_expire(self, s, NULL) != 0) {
            sb_respond_error(resp, 409, "the session is %s", str_of(s->obj, "status"));
        } else {
            sb_respond_json(resp, 200, json_pack("{s:b,s:o}", "ok", 1, "session", session_view(self, s, NULL)));
        }
    } else if (post && path_id(sub, "/refunds/", "/status", id, sizeof id)) {
        refund_t *re = find_refund(self, id);
        const char *st = str_of(body, "status");
        if (!re) {
            sb_respond_error(resp, 404, "no such refund: %s", id);
        } else if (!st || (strcmp(st, "succeeded") != 0 && strcmp(st, "failed") != 0)) {
            sb_respond_error(resp, 400, "status is succeeded|failed");
        } else if (refund_settle(self, re, strcmp(st, "succeeded") == 0) != 0) {
            sb_respond_error(resp, 409, "the refund is %s", str_of(re->obj, "status"));
        } else {
            sb_respond_json(resp, 200, json_pack("{s:b,s:O}", "ok", 1, "refund", re->obj));
        }
    } else if (strcmp(sub, "/config") == 0) {
        if (post) {
            const char *rs = str_of(body, "refund_status");
            json_t *url = json_object_get(body, "webhook_url");
            if (rs && strcmp(rs, "succeeded") != 0 && strcmp(rs, "pending") != 0) {
                sb_respond_error(resp, 400, "refund_status is succeeded|pending");
                return;
            }
            if (url && !json_is_null(url) && !sb_is_http_url(json_string_value(url))) {
                sb_respond_error(resp, 400, "webhook_url must be an http(s) URL or null");
                return;
            }
            char *new_rs = rs ? strdup(rs) : NULL;
            char *new_url = url && json_is_string(url) ? strdup(json_string_value(url)) : NULL;
            if ((rs && !new_rs) || (url && json_is_string(url) && !new_url)) {
                free(new_rs);
                free(new_url);
                sb_respond_error(resp, 500, "out of memory");
                return;
            }
            if (rs) {
                free(self->refund_status);
                self->refund_status = new_rs;
            }
            if (url) {
                free(self->webhook_url);
                self->webhook_url = new_url;
            }
        }
        sb_respond_json(resp, 200, json_pack("{s:s,s:s?,s:s}", "refund_status", self->refund_status, "webhook_url",
                                             self->webhook_url, "api_version", self->api_version));
    } else {
        sb_respond_error(resp, 404, "unknown control path /_sandbox/stripe%s", sub);
    }
}

// ---- lifecycle -----------------------------------------------------------------------------------
static void stripe_tick(void *vself, int64_t now_s) {
    stripe_t *self = vself;
    for (size_t i = 0; i < self->sessions.len; i++) {
        session_t *s = self->sessions.items[i];
        if (strcmp(str_of(s->obj, "status"), "open") == 0 && int_of(s->obj, "expires_at") <= now_s)
            session_expire(self, s, NULL);
    }
}

static void stripe_reset(void *vself) {
    stripe_t *self = vself;
    sb_vec_clear(&self->sessions, session_free);
    sb_vec_clear(&self->intents, object_free_intent);
    sb_vec_clear(&self->charges, object_free_charge);
    sb_vec_clear(&self->refunds, object_free_refund);
    sb_vec_clear(&self->idem, idem_free);
}

stripe_t *stripe_new(const stripe_config_t *cfg) {
    stripe_t *self = calloc(1, sizeof *self);
    if (!self) return NULL;
    self->secret_key = strdup(cfg->secret_key ? cfg->secret_key : "");
    self->webhook_secret = strdup(cfg->webhook_secret ? cfg->webhook_secret : "");
    self->webhook_url = cfg->webhook_url && *cfg->webhook_url ? strdup(cfg->webhook_url) : NULL;
    self->public_url = strdup(cfg->public_url ? cfg->public_url : "");
    self->api_version = strdup(cfg->api_version ? cfg->api_version : STRIPE_DEFAULT_API_VERSION);
    self->refund_status = strdup(cfg->refund_status ? cfg->refund_status : "succeeded");
    self->webhooks = cfg->webhooks;
    self->log = cfg->log;
    if (!self->secret_key || !self->webhook_secret || !self->public_url || !self->api_version ||
        !self->refund_status || (cfg->webhook_url && *cfg->webhook_url && !self->webhook_url)) {
        stripe_destroy(&self);
        return NULL;
    }
    return self;
}

void stripe_destroy(stripe_t **self_p) {
    stripe_t *self = *self_p;
    if (!self) return;
    stripe_reset(self);
    free(self->secret_key);
    free(self->webhook_secret);
    free(self->webhook_url);
    free(self->public_url);
    free(self->api_version);
    free(self->refund_status);
    free(self);
    *self_p = NULL;
}

sb_provider_t stripe_provider(stripe_t *self) {
    return (sb_provider_t){.name = "stripe",
                           .owns = stripe_owns,
                           .handle = stripe_handle,
                           .control = stripe_control,
                           .fault = stripe_fault,
                           .tick = stripe_tick,
                           .reset = stripe_reset,
                           .self = self};
}
