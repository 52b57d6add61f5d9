// sandbox/cryptomus.c — see cryptomus.h.
//
// Checks, as Cryptomus does: the `merchant` header, the `sign` header as md5(base64(raw body) +
// payment key) over the bytes exactly as received (a client that signs one serialisation and
// sends another fails here, as it would in production), a JSON body (Laravel reads fields only
// from an application/json body, so a missing Content-Type ends in "validation.required"), and
// the documented field rules, answered 422 {"state":1,"errors":{field:["validation.rule"]}}.
// An order_id that already exists returns the existing invoice (Cryptomus' own idempotency).
//
// Webhooks are built the way Cryptomus' PHP builds them (sign.c): PHP json_encode text with "\/"
// and "sign" appended last. Amounts are decimal strings handled in units of 1e-8, never floats.
#include "sandbox/cryptomus.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/util.h"
#include "sandbox/sbutil.h"
#include "sandbox/sign.h"

typedef struct {
    char uuid[40];
    char *order_id;
    json_t *obj;   // the payment object as /v1/payment and /v1/payment/info return it
    char *url_callback, *url_return, *url_success;
    int64_t amount_e8;
    int decimals;   // digits after the point in amounts we format (at least 2)
    char txid[72], address[40], transfer_id[40];
} invoice_t;

struct cryptomus_t {
    char *merchant, *payment_key, *public_url;
    webhooks_t *webhooks;
    logger_t log;
    sb_vec_t invoices;   // invoice_t*
};

static const char *const statuses[] = {"process", "check", "confirm_check", "paid", "paid_over", "wrong_amount",
                                       "wrong_amount_waiting", "fail", "cancel", "system_fail", "refund_process",
                                       "refund_fail", "refund_paid", "locked", NULL};
static const char *const final_statuses[] = {"paid", "paid_over", "wrong_amount", "fail", "cancel", "system_fail",
                                             "refund_fail", "refund_paid", NULL};

static bool in_list(const char *const *list, const char *s) {
    for (size_t i = 0; s && list[i]; i++)
        if (strcmp(list[i], s) == 0) return true;
    return false;
}

static void invoice_free(void *p) {
    invoice_t *inv = p;
    free(inv->order_id);
    json_decref(inv->obj);
    free(inv->url_callback);
    free(inv->url_return);
    free(inv->url_success);
    free(inv);
}

static invoice_t *find_uuid(cryptomus_t *self, const char *uuid) {
    for (size_t i = 0; uuid && i < self->invoices.len; i++) {
        invoice_t *inv = self->invoices.items[i];
        if (strcmp(inv->uuid, uuid) == 0) return inv;
    }
    return NULL;
}

static invoice_t *find_order(cryptomus_t *self, const char *order_id) {
    for (size_t i = 0; order_id && i < self->invoices.len; i++) {
        invoice_t *inv = self->invoices.items[i];
        if (strcmp(inv->order_id, order_id) == 0) return inv;
    }
    return NULL;
}

static const char *str_of(const json_t *obj, const char *key) { return json_string_value(json_object_get(obj, key)); }

static bool starts_with(const char *s, const char *prefix) { return strncmp(s, prefix, strlen(prefix)) == 0; }

static void iso_time(int64_t t, char *out, size_t size) {
    time_t tt = (time_t)t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    strftime(out, size, "%Y-%m-%dT%H:%M:%S+00:00", &tm);
}

static void cm_message(sb_response_t *resp, int status, const char *message) {
    sb_respond_json(resp, status, json_pack("{s:i,s:s}", "state", 1, "message", message));
}

static void add_error(json_t *errors, const char *field, const char *rule) {
    json_t *list = json_object_get(errors, field);
    if (!list) {
        list = json_array();
        json_object_set_new(errors, field, list);
    }
    json_array_append_new(list, json_string(rule));
}

// ---- field rules (Laravel's names) -----------------------------------------------------------------
static bool present(const json_t *v) {
    return v && !json_is_null(v) && !(json_is_string(v) && json_string_length(v) == 0);
}

static void rule_string(json_t *errors, const json_t *in, const char *field, bool required, size_t min, size_t max) {
    const json_t *v = json_object_get(in, field);
    if (!present(v)) {
        if (required) add_error(errors, field, "validation.required");
        return;
    }
    if (!json_is_string(v)) {
        add_error(errors, field, "validation.string");
        return;
    }
    size_t n = json_string_length(v);
    if (n < min) add_error(errors, field, "validation.min.string");
    if (n > max) add_error(errors, field, "validation.max.string");
}

static void rule_url(json_t *errors, const json_t *in, const char *field, bool required, size_t max) {
    const json_t *v = json_object_get(in, field);
    if (!present(v)) {
        if (required) add_error(errors, field, "validation.required");
        return;
    }
    if (!json_is_string(v) || !sb_is_http_url(json_string_value(v))) {
        add_error(errors, field, "validation.url");
        return;
    }
    size_t n = json_string_length(v);
    if (n < 6) add_error(errors, field, "validation.min.string");
    if (n > max) add_error(errors, field, "validation.max.string");
}

static bool alpha_dash(const char *s) {
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && *s != '_' && *s != '-') return false;
    return true;
}

// An amount given as a decimal string (documented) or a JSON number (PHP's "numeric" accepts it).
static int amount_of(const json_t *v, int64_t *e8, int *decimals) {
    if (json_is_string(v)) return sb_decimal_parse(json_string_value(v), e8, decimals);
    char text[64];
    if (json_is_integer(v))
        snprintf(text, sizeof text, "%lld", (long long)json_integer_value(v));
    else if (json_is_real(v))
        snprintf(text, sizeof text, "%.8f", json_real_value(v));
    else
        return -1;
    if (sb_decimal_parse(text, e8, decimals) != 0) return -1;
    if (json_is_real(v)) *decimals = 2;
    return 0;
}

// ---- invoices and their webhooks -------------------------------------------------------------------
// What the payer paid for an invoice that reaches `status`, in units of 1e-8.
static int64_t paid_for(const invoice_t *inv, const char *status) {
    if (strcmp(status, "paid_over") == 0) return inv->amount_e8 + inv->amount_e8 / 10;
    if (strncmp(status, "wrong_amount", 12) == 0) return inv->amount_e8 / 2;
    if (strcmp(status, "check") == 0 || strcmp(status, "fail") == 0 || strcmp(status, "cancel") == 0 ||
        strcmp(status, "system_fail") == 0)
        return 0;
    return inv->amount_e8;
}

static json_t *amount_json(int64_t e8, int decimals) {
    char text[48];
    sb_decimal_format(e8, decimals, text, sizeof text);
    return json_string(text);
}

// Webhook fields in Cryptomus' order (providers.md §3.4), without "sign".
static json_t *webhook_fields(const invoice_t *inv, const char *status) {
    int64_t paid = paid_for(inv, status), commission = paid / 50, merchant = paid - commission;
    int d = inv->decimals;
    json_t *additional = json_object_get(inv->obj, "additional_data");
    json_t *o = json_object();
    json_object_set_new(o, "type", json_string("payment"));
    json_object_set_new(o, "uuid", json_string(inv->uuid));
    json_object_set_new(o, "order_id", json_string(inv->order_id));
    json_object_set_new(o, "amount", amount_json(inv->amount_e8, d));
    json_object_set_new(o, "payment_amount", amount_json(paid, d));
    json_object_set_new(o, "payment_amount_usd", amount_json(paid, 2));
    json_object_set_new(o, "merchant_amount", amount_json(merchant, d));
    json_object_set_new(o, "commission", amount_json(commission, d));
    json_object_set_new(o, "is_final", json_boolean(in_list(final_statuses, status)));
    json_object_set_new(o, "status", json_string(status));
    json_object_set_new(o, "from", json_null());
    json_object_set_new(o, "wallet_address_uuid", json_null());
    json_object_set_new(o, "network", paid ? json_string("tron") : json_null());
    json_object_set_new(o, "currency", json_string(str_of(inv->obj, "currency")));
    json_object_set_new(o, "payer_currency", json_string("USDT"));
    json_object_set_new(o, "payer_amount", amount_json(paid, d));
    json_object_set_new(o, "payer_amount_exchange_rate", json_string("1"));
    json_object_set_new(o, "transfer_id", paid ? json_string(inv->transfer_id) : json_null());
    json_object_set_new(o, "additional_data", additional ? json_incref(additional) : json_null());
    json_object_set_new(o, "txid", paid ? json_string(inv->txid) : json_null());
    return o;
}

static void emit_webhook(cryptomus_t *self, const invoice_t *inv, const char *status, const char *url) {
    json_t *fields = webhook_fields(inv, status);
    size_t len = 0;
    char *body = fields ? sb_cryptomus_webhook_body(fields, self->payment_key, &len) : NULL;
    json_decref(fields);
    if (!body) {
        log_error(&self->log, "webhook_lost", "uuid=%s reason=out_of_memory", inv->uuid);
        return;
    }
    char id[48], type[48];
    sb_random_id("cmevt_", 20, id, sizeof id);
    snprintf(type, sizeof type, "payment.%s", status);
    webhook_event_t ev = {.provider = "cryptomus", .id = id, .type = type, .url = url, .body = body, .body_len = len};
    webhooks_emit(self->webhooks, &ev);
    free(body);
}

// Moves an invoice to `status`, updates what the API shows and sends the webhook.
static void invoice_set_status(cryptomus_t *self, invoice_t *inv, const char *status) {
    int64_t paid = paid_for(inv, status);
    int d = inv->decimals;
    char now[40];
    iso_time(sb_now_s(), now, sizeof now);
    json_t *o = inv->obj;
    json_object_set_new(o, "payment_status", json_string(status));
    json_object_set_new(o, "status", json_string(status));
    json_object_set_new(o, "is_final", json_boolean(in_list(final_statuses, status)));
    json_object_set_new(o, "payment_amount", paid ? amount_json(paid, d) : json_null());
    json_object_set_new(o, "payer_amount", paid ? amount_json(paid, d) : json_null());
    json_object_set_new(o, "payer_currency", paid ? json_string("USDT") : json_null());
    json_object_set_new(o, "merchant_amount", paid ? amount_json(paid - paid / 50, d) : json_null());
    json_object_set_new(o, "network", paid ? json_string("tron") : json_null());
    json_object_set_new(o, "address", paid ? json_string(inv->address) : json_null());
    json_object_set_new(o, "txid", paid ? json_string(inv->txid) : json_null());
    json_object_set_new(o, "updated_at", json_string(now));
    log_info(&self->log, "invoice_status", "uuid=%s status=%s", inv->uuid, status);
    if (inv->url_callback) emit_webhook(self, inv, status, inv->url_callback);
}

// ---- API -----------------------------------------------------------------------------------------
// The merchant header and the signature over the raw body. Answers 401 and returns false.
static bool authorized(cryptomus_t *self, const sb_request_t *req, sb_response_t *resp) {
    if (!req->merchant || !util_consttime_equal(req->merchant, strlen(req->merchant), self->merchant,
                                                strlen(self->merchant))) {
        cm_message(resp, 401, "Merchant not found");
        return false;
    }
    char expected[SB_MD5_HEX_SIZE];
    if (!req->sign || sb_cryptomus_sign(self->payment_key, req->body ? req->body : "", req->body_len, expected) != 0 ||
        !util_consttime_equal(req->sign, strlen(req->sign), expected, strlen(expected))) {
        cm_message(resp, 401, "Invalid Sign");
        return false;
    }
    return true;
}

static void respond_validation(sb_response_t *resp, json_t *errors, const sb_request_t *req) {
    json_t *body = json_pack("{s:i,s:o}", "state", 1, "errors", errors);
    if (!sb_content_type_is(req, "application/json"))
        json_object_set_new(body, "message", json_string("The request body is read only as application/json."));
    sb_respond_json(resp, 422, body);
}

static json_t *invoice_view(const invoice_t *inv) { return json_deep_copy(inv->obj); }

static void create_invoice(cryptomus_t *self, const sb_request_t *req, const json_t *in, sb_response_t *resp) {
    json_t *errors = json_object();
    const json_t *amount = json_object_get(in, "amount");
    int64_t amount_e8 = 0;
    int decimals = 2;
    if (!present(amount))
        add_error(errors, "amount", "validation.required");
    else if (amount_of(amount, &amount_e8, &decimals) != 0)
        add_error(errors, "amount", "validation.numeric");
    else if (amount_e8 <= 0)
        add_error(errors, "amount", "validation.gt.numeric");
    rule_string(errors, in, "currency", true, 1, 10);
    const json_t *order = json_object_get(in, "order_id");
    if (!present(order)) {
        add_error(errors, "order_id", "validation.required");
    } else if (!json_is_string(order)) {
        add_error(errors, "order_id", "validation.string");
    } else {
        if (!alpha_dash(json_string_value(order))) add_error(errors, "order_id", "validation.alpha_dash");
        if (json_string_length(order) > 128) add_error(errors, "order_id", "validation.max.string");
    }
    rule_url(errors, in, "url_callback", false, 255);
    rule_url(errors, in, "url_return", false, 255);
    rule_url(errors, in, "url_success", false, 255);
    const json_t *lifetime = json_object_get(in, "lifetime");
    int64_t life = 3600;
    if (present(lifetime)) {
        if (json_is_integer(lifetime))
            life = json_integer_value(lifetime);
        else if (!json_is_string(lifetime) || util_parse_int64(json_string_value(lifetime), 0, INT64_MAX, &life) != 0)
            life = -1;
        if (life < 0)
            add_error(errors, "lifetime", "validation.integer");
        else if (life < 300 || life > 43200)
            add_error(errors, "lifetime", "validation.between.numeric");
    }
    rule_string(errors, in, "additional_data", false, 0, 255);
    if (json_object_size(errors) > 0) {
        respond_validation(resp, errors, req);
        return;
    }
    json_decref(errors);
    const char *order_id = json_string_value(order);
    invoice_t *inv = find_order(self, order_id);
    if (inv) {   // Cryptomus' built-in idempotency: the existing invoice
        sb_respond_json(resp, 200, json_pack("{s:i,s:o}", "state", 0, "result", invoice_view(inv)));
        return;
    }
    inv = calloc(1, sizeof *inv);
    if (!inv || util_uuid_v4(inv->uuid, sizeof inv->uuid) != 0 || !(inv->order_id = strdup(order_id))) {
        if (inv) invoice_free(inv);
        cm_message(resp, 500, "Server Error");
        return;
    }
    inv->amount_e8 = amount_e8;
    inv->decimals = decimals < 2 ? 2 : decimals;
    sb_random_hex(32, inv->txid, sizeof inv->txid);
    sb_random_id("T", 33, inv->address, sizeof inv->address);
    util_uuid_v4(inv->transfer_id, sizeof inv->transfer_id);
    const char *cb = str_of(in, "url_callback"), *ret = str_of(in, "url_return"), *ok = str_of(in, "url_success");
    inv->url_callback = cb && *cb ? strdup(cb) : NULL;
    inv->url_return = ret && *ret ? strdup(ret) : NULL;
    inv->url_success = ok && *ok ? strdup(ok) : NULL;
    int64_t now = sb_now_s();
    char created[40], url[600];
    iso_time(now, created, sizeof created);
    snprintf(url, sizeof url, "%s/crypto/%s", self->public_url, inv->uuid);
    const char *additional = str_of(in, "additional_data");
    char amount_text[48];   // a string amount is echoed as given; a number is formatted
    if (json_is_string(amount))
        snprintf(amount_text, sizeof amount_text, "%s", json_string_value(amount));
    else
        sb_decimal_format(amount_e8, inv->decimals, amount_text, sizeof amount_text);
    char currency[16];
    snprintf(currency, sizeof currency, "%s", str_of(in, "currency"));
    for (char *c = currency; *c; c++) *c = (char)toupper((unsigned char)*c);
    inv->obj = json_pack("{s:s,s:s,s:s,s:n,s:n,s:n,s:s,s:n,s:s,s:n,s:n,s:n,s:n,s:n,s:s,s:s,s:I,s:s,s:b,s:s?,s:s,s:s}",
                         "uuid", inv->uuid, "order_id", inv->order_id, "amount", amount_text, "payment_amount",
                         "payer_amount", "discount_percent", "discount", "0.00", "payer_currency", "currency",
                         currency, "merchant_amount", "network", "address", "from", "txid", "payment_status",
                         "check", "url", url, "expired_at", (json_int_t)(now + life), "status", "check", "is_final", 0,
                         "additional_data", additional, "created_at", created, "updated_at", created);
    if (!inv->obj || (cb && *cb && !inv->url_callback) || sb_vec_push(&self->invoices, inv) != 0) {
        invoice_free(inv);
        cm_message(resp, 500, "Server Error");
        return;
    }
    log_info(&self->log, "invoice_created", "uuid=%s amount=%s currency=%s lifetime=%lld", inv->uuid, amount_text,
             currency, (long long)life);
    sb_respond_json(resp, 200, json_pack("{s:i,s:o}", "state", 0, "result", invoice_view(inv)));
}

static void payment_info(cryptomus_t *self, const sb_request_t *req, const json_t *in, sb_response_t *resp) {
    const json_t *uuid = json_object_get(in, "uuid"), *order = json_object_get(in, "order_id");
    if (!present(uuid) && !present(order)) {
        json_t *errors = json_object();
        add_error(errors, "uuid", "validation.required_without");
        add_error(errors, "order_id", "validation.required_without");
        respond_validation(resp, errors, req);
        return;
    }
    invoice_t *inv = present(order) ? find_order(self, json_string_value(order)) : find_uuid(self, json_string_value(uuid));
    if (!inv) {
        cm_message(resp, 404, "Payment not found");
        return;
    }
    sb_respond_json(resp, 200, json_pack("{s:i,s:o}", "state", 0, "result", invoice_view(inv)));
}

// POST /v1/test-webhook/payment: a signed webhook for an existing invoice (or made-up data),
// nothing saved (providers.md §3.4).
static void test_webhook(cryptomus_t *self, const sb_request_t *req, const json_t *in, sb_response_t *resp) {
    json_t *errors = json_object();
    rule_url(errors, in, "url_callback", true, 150);
    rule_string(errors, in, "currency", true, 1, 10);
    rule_string(errors, in, "network", true, 1, 32);
    rule_string(errors, in, "uuid", false, 1, 64);
    rule_string(errors, in, "order_id", false, 1, 32);
    const char *status = str_of(in, "status");
    if (present(json_object_get(in, "status")) && !in_list(statuses, status)) add_error(errors, "status", "validation.in");
    if (json_object_size(errors) > 0) {
        respond_validation(resp, errors, req);
        return;
    }
    json_decref(errors);
    if (!status || !*status) status = "paid";
    const char *uuid = str_of(in, "uuid"), *order_id = str_of(in, "order_id");
    invoice_t *inv = order_id && *order_id ? find_order(self, order_id) : NULL;
    if (!inv && uuid && *uuid) inv = find_uuid(self, uuid);
    invoice_t fake = {0};
    if (!inv) {   // made-up invoice data, as Cryptomus does for an unknown one
        if (uuid && *uuid)
            snprintf(fake.uuid, sizeof fake.uuid, "%.39s", uuid);
        else
            util_uuid_v4(fake.uuid, sizeof fake.uuid);
        char rnd[24];
        sb_random_id("", 12, rnd, sizeof rnd);
        fake.order_id = strdup(order_id && *order_id ? order_id : rnd);
        fake.amount_e8 = 1000000000LL;   // 10.00
        fake.decimals = 2;
        sb_random_hex(32, fake.txid, sizeof fake.txid);
        util_uuid_v4(fake.transfer_id, sizeof fake.transfer_id);
        fake.obj = json_pack("{s:s}", "currency", str_of(in, "currency"));
        if (!fake.order_id || !fake.obj) {
            free(fake.order_id);
            json_decref(fake.obj);
            cm_message(resp, 500, "Server Error");
            return;
        }
        inv = &fake;
    }
    emit_webhook(self, inv, status, str_of(in, "url_callback"));
    free(fake.order_id);
    json_decref(fake.obj);
    sb_respond_json(resp, 200, json_pack("{s:i,s:[]}", "state", 0, "result"));
}

// ---- hosted payment page -------------------------------------------------------------------------
// GET /crypto/{uuid}; POST /crypto/{uuid}/{paid|paid_over|wrong_amount|cancel|fail}.
static void hosted_page(cryptomus_t *self, const sb_request_t *req, sb_response_t *resp) {
    const char *rest = req->path + strlen("/crypto/");
    const char *slash = strchr(rest, '/');
    char uuid[64];
    snprintf(uuid, sizeof uuid, "%.*s", slash ? (int)(slash - rest) : (int)strlen(rest), rest);
    const char *action = slash ? slash + 1 : "";
    bool post = strcmp(req->method, "POST") == 0;
    invoice_t *inv = find_uuid(self, uuid);
    if (!inv) {
        sb_respond_page(resp, 404, "Invoice not found", "<p>This payment link is not valid.</p>");
        return;
    }
    const char *status = str_of(inv->obj, "status");
    bool final = in_list(final_statuses, status);
    if (!post && !*action) {
        char *eid = sb_html_escape(inv->uuid), *ebase = sb_html_escape(self->public_url);
        char *eamount = sb_html_escape(str_of(inv->obj, "amount")), *ecur = sb_html_escape(str_of(inv->obj, "currency"));
        sb_buf_t b = {0};
        sb_buf_printf(&b, "<p class=\"amount\" data-testid=\"amount\">%s %s</p><p data-testid=\"status\">Status: %s</p>",
                      eamount ? eamount : "", ecur ? ecur : "", status);
        if (!final) {
            static const char *const buttons[][3] = {{"paid", "Pay", "primary"},
                                                     {"wrong_amount", "Pay less", ""},
                                                     {"cancel", "Cancel", ""},
                                                     {"fail", "Fail", ""}};
            for (size_t i = 0; i < 4; i++)
                sb_buf_printf(&b,
                              "<form method=\"post\" action=\"%s/crypto/%s/%s\"><button class=\"%s\" id=\"%s\" "
                              "data-testid=\"%s\" type=\"submit\">%s</button></form>",
                              ebase ? ebase : "", eid ? eid : "", buttons[i][0], buttons[i][2], buttons[i][0],
                              buttons[i][0], buttons[i][1]);
        }
        free(eid);
        free(ebase);
        free(eamount);
        free(ecur);
        char *inner = sb_buf_take(&b, NULL);
        sb_respond_page(resp, 200, "Cryptomus invoice", inner ? inner : "");
        free(inner);
        return;
    }
    static const char *const page_actions[] = {"paid", "paid_over", "wrong_amount", "cancel", "fail", NULL};
    if (!post || !in_list(page_actions, action)) {
        sb_respond_page(resp, 404, "Not found", "<p>Unknown payment action.</p>");
        return;
    }
    if (final) {
        char inner[160];
        snprintf(inner, sizeof inner, "<p data-testid=\"status\">This invoice is final (%s).</p>", status);
        sb_respond_page(resp, 409, "Invoice closed", inner);
        return;
    }
    invoice_set_status(self, inv, action);
    bool paid = strncmp(action, "paid", 4) == 0;
    const char *target = paid ? inv->url_success : strcmp(action, "cancel") == 0 ? inv->url_return : NULL;
    if (target) {
        sb_respond_redirect(resp, target);
    } else {
        char inner[160];
        snprintf(inner, sizeof inner, "<p data-testid=\"status\">Status: %s</p>", action);
        sb_respond_page(resp, 200, "Cryptomus invoice", inner);
    }
}

// ---- dispatch ------------------------------------------------------------------------------------
static bool cryptomus_owns(const char *path) {
    return strcmp(path, "/v1/payment") == 0 || starts_with(path, "/v1/payment/") ||
           starts_with(path, "/v1/test-webhook/") || starts_with(path, "/crypto/");
}

static void cryptomus_handle(void *vself, const sb_request_t *req, sb_response_t *resp) {
    cryptomus_t *self = vself;
    if (starts_with(req->path, "/crypto/")) {
        hosted_page(self, req, resp);
        return;
    }
    bool known = strcmp(req->path, "/v1/payment") == 0 || strcmp(req->path, "/v1/payment/info") == 0 ||
                 strcmp(req->path, "/v1/test-webhook/payment") == 0;
    if (!known) {
        cm_message(resp, 404, "Not found");
        return;
    }
    if (strcmp(req->method, "POST") != 0) {
        char message[160];
        snprintf(message, sizeof message, "The %s method is not supported for this route. Supported methods: POST.",
                 req->method);
        cm_message(resp, 405, message);
        return;
    }
    if (!authorized(self, req, resp)) return;
    // Laravel reads the fields of a JSON body only; anything else validates as empty input.
    json_t *empty = json_object();
    const json_t *in = empty;
    if (sb_content_type_is(req, "application/json") && req->body_len > 0) {
        if (!json_is_object(req->json)) {
            json_decref(empty);
            cm_message(resp, 400, "The request body is not a JSON object.");
            return;
        }
        in = req->json;
    }
    if (strcmp(req->path, "/v1/payment") == 0)
        create_invoice(self, req, in, resp);
    else if (strcmp(req->path, "/v1/payment/info") == 0)
        payment_info(self, req, in, resp);
    else
        test_webhook(self, req, in, resp);
    json_decref(empty);
}

static void cryptomus_fault(int status, sb_response_t *resp) {
    cm_message(resp, status, status == 429 ? "Too Many Attempts." : status >= 500 ? "Server Error" : "Injected fault");
}

// ---- control API (/_sandbox/cryptomus/…) -----------------------------------------------------------
static void cryptomus_control(void *vself, const char *sub, const sb_request_t *req, sb_response_t *resp) {
    cryptomus_t *self = vself;
    bool post = strcmp(req->method, "POST") == 0;
    const json_t *body = json_is_object(req->json) ? req->json : NULL;
    if (!post && strcmp(sub, "/invoices") == 0) {
        json_t *list = json_array();
        for (size_t i = 0; i < self->invoices.len; i++) json_array_append_new(list, invoice_view(self->invoices.items[i]));
        sb_respond_json(resp, 200, json_pack("{s:o}", "invoices", list));
        return;
    }
    const char *prefix = "/invoices/", *suffix = "/status";
    size_t sl = strlen(sub), pl = strlen(prefix), xl = strlen(suffix);
    if (post && starts_with(sub, prefix) && sl > pl + xl && strcmp(sub + sl - xl, suffix) == 0) {
        char uuid[64];
        snprintf(uuid, sizeof uuid, "%.*s", (int)(sl - pl - xl), sub + pl);
        invoice_t *inv = find_uuid(self, uuid);
        const char *status = str_of(body, "status");
        if (!inv) {
            sb_respond_error(resp, 404, "no such invoice: %s", uuid);
        } else if (!in_list(statuses, status)) {
            sb_respond_error(resp, 400, "status must be a Cryptomus payment status (paid, cancel, fail, …)");
        } else {
            invoice_set_status(self, inv, status);   // any status, even after a final one (late money)
            sb_respond_json(resp, 200, json_pack("{s:b,s:o}", "ok", 1, "invoice", invoice_view(inv)));
        }
        return;
    }
    sb_respond_error(resp, 404, "unknown control path /_sandbox/cryptomus%s", sub);
}

// ---- lifecycle -----------------------------------------------------------------------------------
static void cryptomus_tick(void *vself, int64_t now_s) {
    cryptomus_t *self = vself;
    for (size_t i = 0; i < self->invoices.len; i++) {
        invoice_t *inv = self->invoices.items[i];
        if (!in_list(final_statuses, str_of(inv->obj, "status")) &&
            json_integer_value(json_object_get(inv->obj, "expired_at")) <= now_s)
            invoice_set_status(self, inv, "cancel");   // expired unpaid
    }
}

static void cryptomus_reset(void *vself) {
    cryptomus_t *self = vself;
    sb_vec_clear(&self->invoices, invoice_free);
}

cryptomus_t *cryptomus_new(const cryptomus_config_t *cfg) {
    cryptomus_t *self = calloc(1, sizeof *self);
    if (!self) return NULL;
    self->merchant = strdup(cfg->merchant ? cfg->merchant : "");
    self->payment_key = strdup(cfg->payment_key ? cfg->payment_key : "");
    self->public_url = strdup(cfg->public_url ? cfg->public_url : "");
    self->webhooks = cfg->webhooks;
    self->log = cfg->log;
    if (!self->merchant || !self->payment_key || !self->public_url) cryptomus_destroy(&self);
    return self;
}

void cryptomus_destroy(cryptomus_t **self_p) {
    cryptomus_t *self = *self_p;
    if (!self) return;
    cryptomus_reset(self);
    free(self->merchant);
    free(self->payment_key);
    free(self->public_url);
    free(self);
    *self_p = NULL;
}

sb_provider_t cryptomus_provider(cryptomus_t *self) {
    return (sb_provider_t){.name = "cryptomus",
                           .owns = cryptomus_owns,
                           .handle = cryptomus_handle,
                           .control = cryptomus_control,
                           .fault = cryptomus_fault,
                           .tick = cryptomus_tick,
                           .reset = cryptomus_reset,
                           .self = self};
}
