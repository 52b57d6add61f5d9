// actors/vapi_client.c — VAPI requests and answers; see vapi_client.h.
//
// Bodies are compact JSON written by jansson (members in our order). Ids that go into a URL are
// checked against a plain token alphabet first and query values are percent-encoded, so nothing
// read from the database or from VAPI can change a path or add a parameter; values that go into a
// header (the key) or become a URL (the control URL) are checked to be printable ASCII without
// spaces, so they cannot add a header line.
//
// Reading answers follows webhook_parse's rule: a field of the wrong type or too long for its
// buffer reads as absent, never truncated; only a call without a usable id is unreadable.
#include "actors/vapi_client.h"

#include <assert.h>
#include <curl/curl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "realtime/api_error.h"

#define VAPI_TOKEN_MAX 64        // assistant, phone number, booking and call ids
#define VAPI_KEY_MAX 512
#define VAPI_URL_MAX 2048

struct vapi_client_t {
    httpc_t *http;
    logger_t log;
    char *api_base;
    char *server_url;            // <public_url>/webhooks/vapi
    char *webhook_secret;        // NULL when not configured
    int timeout_ms;
    int max_attempts;
    int find_limit;              // 1..VAPI_FIND_LIMIT
    int find_max_pages;          // >= 1
};

const char *vapi_result_name(vapi_result_t kind) {
    switch (kind) {
    case VAPI_OK: return "ok";
    case VAPI_CONCURRENCY: return "concurrency";
    case VAPI_ACCOUNT_ERROR: return "account_error";
    case VAPI_REJECTED: return "rejected";
    case VAPI_UNAVAILABLE: return "unavailable";
    case VAPI_BAD_RESPONSE: return "bad_response";
    }
    return "unknown";
}

// ---- checks -------------------------------------------------------------------------------------

static char *dup_trimmed(const char *s) {   // copy without trailing '/'
    size_t n = strlen(s);
    while (n && s[n - 1] == '/') n--;
    return strndup(s, n);
}

// [A-Za-z0-9_-], 1..max characters.
static bool is_token(const char *s, size_t max) {
    size_t n = 0;
    if (!s) return false;
    for (; s[n]; n++) {
        char c = s[n];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
        if (!ok || n >= max) return false;
    }
    return n > 0;
}

// Printable ASCII without spaces, 1..max characters: safe in a header value or as a URL.
static bool is_visible(const char *s, size_t max) {
    size_t n = 0;
    if (!s) return false;
    for (; s[n]; n++) {
        unsigned char c = (unsigned char)s[n];
        if (c <= 0x20 || c >= 0x7f || n >= max) return false;
    }
    return n > 0;
}

// "+" then 8..15 digits, the first not 0 (CONTRACT.md's phone rule; VAPI enforces E.164).
static bool is_e164(const char *s) {
    if (!s || s[0] != '+' || s[1] < '1' || s[1] > '9') return false;
    size_t n = 0;
    for (const char *p = s + 1; *p; p++, n++)
        if (*p < '0' || *p > '9') return false;
    return n >= 8 && n <= 15;
}

int vapi_call_name(const char *booking_id, int attempt, char *buf, size_t size) {
    if (!is_token(booking_id, VAPI_TOKEN_MAX) || attempt <= 0 || !buf || size == 0) return -1;
    char name[128];
    int n = snprintf(name, sizeof name, "booking %s #%d", booking_id, attempt);
    if (n > VAPI_NAME_MAX) n = snprintf(name, sizeof name, "%s #%d", booking_id, attempt);
    if (n < 0 || n > VAPI_NAME_MAX || (size_t)n >= size) return -1;
    memcpy(buf, name, (size_t)n + 1);
    return 0;
}

// ---- prepare ------------------------------------------------------------------------------------

static void prepared_init(const vapi_client_t *self, httpc_prepared_t *out, const char *method, const char *log_name,
                          bool retryable) {
    memset(out, 0, sizeof *out);
    out->method = method;
    out->log_name = log_name;
    out->retryable = retryable;
    out->max_attempts = self->max_attempts;
}

static int add_auth(httpc_prepared_t *out, const char *api_key) {
    if (!is_visible(api_key, VAPI_KEY_MAX)) return -1;
    return httpc_prepared_add_header(out, "Authorization: Bearer %s", api_key);
}

// Takes body (a jansson value) and sets it as out's JSON body.
static int set_json_body(httpc_prepared_t *out, json_t *body) {
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    if (!text) return -1;
    out->body = text;
    out->body_len = strlen(text);
    return httpc_prepared_add_header(out, "Content-Type: application/json");
}

static int finish(httpc_prepared_t *out, int rc) {
    if (rc != 0 || !out->url) {
        httpc_prepared_clear(out);
        return -1;
    }
    return 0;
}

// One object member; a NULL value (allocation failed) makes the whole body fail.
static bool put(json_t *obj, const char *key, json_t *value) {
    return obj && value && json_object_set_new(obj, key, value) == 0;
}

static json_t *create_body(const vapi_client_t *self, const vapi_create_params_t *p, const char *name) {
    json_t *root = json_object(), *customer = json_object(), *over = json_object(), *vars = json_object(),
           *meta = json_object(), *server = json_object(), *messages = json_array(), *monitor = json_object();
    bool ok = root && customer && over && vars && meta && server && messages && monitor;
    ok = ok && json_array_append_new(messages, json_string("status-update")) == 0 &&
         json_array_append_new(messages, json_string("end-of-call-report")) == 0 &&
         json_array_append_new(messages, json_string("hang")) == 0;
    ok = ok && put(customer, "number", json_string(p->customer_number));
    ok = ok && put(vars, "booking_id", json_string(p->booking_id));
    ok = ok && put(meta, "booking_id", json_string(p->booking_id)) && put(meta, "attempt", json_integer(p->attempt));
    ok = ok && put(server, "url", json_string(self->server_url)) &&
         put(server, "timeoutSeconds", json_integer(VAPI_SERVER_TIMEOUT_S));
    if (ok && self->webhook_secret) ok = put(server, "secret", json_string(self->webhook_secret));
    ok = ok && put(monitor, "controlEnabled", json_true());
    ok = ok && put(root, "assistantId", json_string(p->assistant_id)) &&
         put(root, "phoneNumberId", json_string(p->phone_number_id)) && put(root, "customer", json_incref(customer)) &&
         put(root, "name", json_string(name));
    ok = ok && put(over, "maxDurationSeconds", json_integer(p->max_duration_s)) &&
         put(over, "metadata", json_incref(meta)) && put(over, "variableValues", json_incref(vars)) &&
         put(over, "server", json_incref(server)) && put(over, "serverMessages", json_incref(messages)) &&
         put(over, "monitorPlan", json_incref(monitor)) && put(root, "assistantOverrides", json_incref(over));
    json_decref(customer);
    json_decref(over);
    json_decref(vars);
    json_decref(meta);
    json_decref(server);
    json_decref(messages);
    json_decref(monitor);
    if (!ok) {
        json_decref(root);
        return NULL;
    }
    return root;
}

int vapi_prepare_create(const vapi_client_t *self, const vapi_create_params_t *p, httpc_prepared_t *out) {
    assert(self && p && out);
    prepared_init(self, out, "POST", "vapi.call_create", false);
    out->retry_unsent = true;
    char name[VAPI_NAME_MAX + 1];
    if (!is_token(p->assistant_id, VAPI_TOKEN_MAX) || !is_token(p->phone_number_id, VAPI_TOKEN_MAX) ||
        !is_e164(p->customer_number) || vapi_call_name(p->booking_id, p->attempt, name, sizeof name) != 0 ||
        p->max_duration_s < VAPI_MAX_DURATION_MIN_S || p->max_duration_s > VAPI_MAX_DURATION_MAX_S)
        return -1;
    if (asprintf(&out->url, "%s/call", self->api_base) < 0) out->url = NULL;
    int rc = add_auth(out, p->api_key);
    if (rc == 0) rc = set_json_body(out, create_body(self, p, name));
    return finish(out, rc);
}

int vapi_prepare_get(const vapi_client_t *self, const char *api_key, const char *call_id, httpc_prepared_t *out) {
    assert(self && out);
    prepared_init(self, out, "GET", "vapi.call_get", true);
    if (!is_token(call_id, VAPI_TOKEN_MAX - 1)) return -1;
    if (asprintf(&out->url, "%s/call/%s", self->api_base, call_id) < 0) out->url = NULL;
    return finish(out, add_auth(out, api_key));
}

// epoch ms → percent-encoded ISO-8601 with ms (curl_free it); NULL when out of range or no memory.
static char *iso_param(int64_t ms) {
    if (ms < 0 || ms > INT64_MAX / 1000) return NULL;
    char iso[40];
    util_rfc3339_ms(ms * 1000, iso, sizeof iso);
    return curl_easy_escape(NULL, iso, 0);
}

// One page of a find: calls of the number created after after_ms and, when before_ms > 0, before
// before_ms. Takes its settings as values, not the client, because later pages are built after the
// client may have been destroyed.
static int prepare_list(const char *api_base, int max_attempts, const char *api_key, const char *phone_number_id,
                        int64_t after_ms, int64_t before_ms, int limit, httpc_prepared_t *out) {
    memset(out, 0, sizeof *out);
    out->method = "GET";
    out->log_name = "vapi.call_find";
    out->retryable = true;
    out->max_attempts = max_attempts;
    if (!is_token(phone_number_id, VAPI_TOKEN_MAX) || limit < 1 || limit > VAPI_FIND_LIMIT || before_ms < 0) return -1;
    char *after = iso_param(after_ms);
    char *before = before_ms > 0 ? iso_param(before_ms) : NULL;
    int rc = -1;
    if (after && (before || before_ms == 0)) {
        if (asprintf(&out->url, "%s/call?createdAtGt=%s%s%s&phoneNumberId=%s&limit=%d", api_base, after,
                     before ? "&createdAtLt=" : "", before ? before : "", phone_number_id, limit) < 0)
            out->url = NULL;
        rc = add_auth(out, api_key);
    }
    curl_free(after);
    curl_free(before);
    return finish(out, rc);
}

int vapi_prepare_find(const vapi_client_t *self, const char *api_key, const char *phone_number_id,
                      int64_t created_after_ms, httpc_prepared_t *out) {
    assert(self && out);
    return prepare_list(self->api_base, self->max_attempts, api_key, phone_number_id, created_after_ms, 0,
                        self->find_limit, out);
}

int vapi_prepare_end(const vapi_client_t *self, const char *control_url, httpc_prepared_t *out) {
    assert(self && out);
    prepared_init(self, out, "POST", "vapi.call_end", true);
    if (!is_visible(control_url, VAPI_URL_MAX) ||
        (strncmp(control_url, "https://", 8) != 0 && strncmp(control_url, "http://", 7) != 0))
        return -1;
    out->url = strdup(control_url);
    return finish(out, set_json_body(out, json_pack("{s:s}", "type", "end-call")));
}

// ---- parse --------------------------------------------------------------------------------------

// String member `key` into dst when it is a string that fits; "" otherwise. true when copied.
static bool get_str(const json_t *obj, const char *key, char *dst, size_t size) {
    dst[0] = '\0';
    const json_t *v = json_object_get(obj, key);
    if (!json_is_string(v) || json_string_length(v) >= size) return false;
    memcpy(dst, json_string_value(v), json_string_length(v) + 1);
    return true;
}

static int64_t get_time_ms(const json_t *obj, const char *key) {
    const json_t *v = json_object_get(obj, key);
    int64_t ms = 0;
    if (!json_is_string(v) || api_rfc3339_parse_ms(json_string_value(v), json_string_length(v), &ms) != 0) return 0;
    return ms;
}

static int64_t get_count(const json_t *obj, const char *key) {
    const json_t *v = json_object_get(obj, key);
    if (json_is_integer(v) && json_integer_value(v) >= 0) return (int64_t)json_integer_value(v);
    if (json_is_real(v) && json_real_value(v) >= 0 && json_real_value(v) < 1e15) return (int64_t)json_real_value(v);
    return -1;
}

// USD as a JSON number → millionths of a dollar; -1 when absent, negative or absurd.
static int64_t get_micros(const json_t *obj, const char *key) {
    const json_t *v = json_object_get(obj, key);
    if (!json_is_number(v)) return -1;
    double usd = json_number_value(v);
    if (!(usd >= 0 && usd <= 1e9)) return -1;
    return (int64_t)(usd * 1e6 + 0.5);
}

// Reads a Call object. 0, or -1 when it has no usable id.
static int read_call(const json_t *obj, vapi_call_t *c) {
    memset(c, 0, sizeof *c);
    c->cost_micros = -1;
    c->concurrency_limit = -1;
    c->remaining_concurrent = -1;
    if (!json_is_object(obj) || !get_str(obj, "id", c->id, sizeof c->id) || !c->id[0]) {
        memset(c, 0, sizeof *c);
        return -1;
    }
    get_str(obj, "name", c->name, sizeof c->name);
    get_str(obj, "status", c->status, sizeof c->status);
    get_str(obj, "endedReason", c->ended_reason, sizeof c->ended_reason);
    get_str(obj, "phoneNumberId", c->phone_number_id, sizeof c->phone_number_id);
    get_str(json_object_get(obj, "monitor"), "controlUrl", c->control_url, sizeof c->control_url);
    c->created_at_ms = get_time_ms(obj, "createdAt");
    c->started_at_ms = get_time_ms(obj, "startedAt");
    c->ended_at_ms = get_time_ms(obj, "endedAt");
    c->cost_micros = get_micros(obj, "cost");
    if (!get_str(json_object_get(obj, "artifact"), "recordingUrl", c->recording_url, sizeof c->recording_url))
        get_str(obj, "recordingUrl", c->recording_url, sizeof c->recording_url);
    const json_t *limits = json_object_get(obj, "subscriptionLimits");
    c->concurrency_blocked = json_is_true(json_object_get(limits, "concurrencyBlocked"));
    c->concurrency_limit = get_count(limits, "concurrencyLimit");
    c->remaining_concurrent = get_count(limits, "remainingConcurrentCalls");
    return 0;
}

// Keeps [A-Za-z0-9_.-]; any other character becomes '_'.
static void copy_safe(char *dst, size_t size, const char *src) {
    size_t n = 0;
    for (; src && *src && n + 1 < size; src++) {
        char c = *src;
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
                  c == '-' || c == '.';
        dst[n++] = ok ? c : '_';
    }
    dst[n] = '\0';
}

// NestJS error bodies: {"message": string | string[], "error": "Bad Request", "statusCode": 400};
// also {"error":"Over Concurrency Limit"}. Fills error and message; true when either mentions
// concurrency.
static bool read_error(const httpc_response_t *r, vapi_outcome_t *o) {
    json_t *root = api_json_loadb(r->body, r->body_len, 0);
    bool concurrency = false;
    const char *err = json_string_value(json_object_get(root, "error"));
    if (err) {
        copy_safe(o->error, sizeof o->error, err);
        concurrency = strcasestr(err, "concurrency") != NULL;
    }
    const json_t *m = json_object_get(root, "message");
    size_t n = 0;
    if (json_is_string(m)) {
        snprintf(o->message, sizeof o->message, "%s", json_string_value(m));
        concurrency = concurrency || strcasestr(json_string_value(m), "concurrency");
    } else if (json_is_array(m)) {
        size_t i;
        const json_t *item;
        json_array_foreach(m, i, item) {
            const char *s = json_string_value(item);
            if (!s) continue;
            concurrency = concurrency || strcasestr(s, "concurrency");
            if (n + 1 < sizeof o->message) {
                int w = snprintf(o->message + n, sizeof o->message - n, "%s%s", n ? "; " : "", s);
                if (w > 0) n += (size_t)w;
                if (n >= sizeof o->message) n = sizeof o->message - 1;
            }
        }
    }
    json_decref(root);
    return concurrency;
}

static void classify(const httpc_response_t *r, vapi_outcome_t *o, bool create) {
    memset(o, 0, sizeof *o);
    o->http_status = r->status;
    o->attempts = r->attempts;
    o->pages = 1;
    o->transport_error = r->transport_error;
    long s = r->status;
    if (r->transport_error) {
        if (r->transport_error == CURLE_FILESIZE_EXCEEDED && s >= 200 && s < 300) {
            o->kind = VAPI_BAD_RESPONSE;   // it answered, too much to read
        } else {
            o->kind = VAPI_UNAVAILABLE;
        }
        o->maybe_created = create && !httpc_nothing_sent(r->transport_error);
        return;
    }
    if (s >= 200 && s < 300) {
        o->kind = VAPI_OK;
        return;
    }
    if (s == 401 || s == 402 || s == 403) {
        o->kind = VAPI_ACCOUNT_ERROR;
    } else if (s == 429) {
        o->kind = VAPI_UNAVAILABLE;   // the rate limiter refuses before any work
    } else if (s >= 500 || s == 0) {
        o->kind = VAPI_UNAVAILABLE;
        o->maybe_created = create;
    } else if (s >= 400) {
        o->kind = VAPI_REJECTED;
    } else {   // 1xx/3xx: not an answer of VAPI's API (something in between)
        o->kind = VAPI_BAD_RESPONSE;
        o->maybe_created = create;
    }
    o->not_found = s == 404;
    if (s >= 400 && read_error(r, o) && create && s == 400) o->kind = VAPI_CONCURRENCY;
}

// A 2xx whose body is one Call.
static void parse_one(const httpc_response_t *resp, vapi_outcome_t *out, vapi_call_t *call, bool *has_call) {
    json_t *root = api_json_loadb(resp->body, resp->body_len, 0);
    if (read_call(root, call) == 0) *has_call = true;
    else out->kind = VAPI_BAD_RESPONSE;
    json_decref(root);
}

void vapi_parse_create(const httpc_response_t *resp, vapi_outcome_t *out, vapi_call_t *call, bool *has_call) {
    classify(resp, out, true);
    memset(call, 0, sizeof *call);
    *has_call = false;
    if (out->kind != VAPI_OK) return;
    parse_one(resp, out, call, has_call);
    if (out->kind == VAPI_BAD_RESPONSE) out->maybe_created = true;   // created, but we cannot tell its id
    else if (call->concurrency_blocked) out->kind = VAPI_CONCURRENCY;
}

void vapi_parse_get(const httpc_response_t *resp, vapi_outcome_t *out, vapi_call_t *call, bool *has_call) {
    classify(resp, out, false);
    memset(call, 0, sizeof *call);
    *has_call = false;
    if (out->kind == VAPI_OK) parse_one(resp, out, call, has_call);
}

void vapi_parse_find(const httpc_response_t *resp, const char *name, vapi_outcome_t *out, vapi_call_t *call,
                     bool *has_call) {
    vapi_find_page_t page;
    vapi_parse_find_page(resp, name, out, call, has_call, &page);
}

void vapi_parse_find_page(const httpc_response_t *resp, const char *name, vapi_outcome_t *out, vapi_call_t *call,
                          bool *has_call, vapi_find_page_t *page) {
    classify(resp, out, false);
    memset(call, 0, sizeof *call);
    memset(page, 0, sizeof *page);
    *has_call = false;
    if (out->kind != VAPI_OK) return;
    json_t *root = api_json_loadb(resp->body, resp->body_len, 0);
    const json_t *list = json_is_array(root) ? root : json_object_get(root, "results");
    if (!json_is_array(list)) {
        out->kind = VAPI_BAD_RESPONSE;
        json_decref(root);
        return;
    }
    size_t i;
    const json_t *item;
    vapi_call_t c;
    page->count = json_array_size(list);
    json_array_foreach(list, i, item) {
        // An undated item does not move the page boundary: it was either listed already or will be
        // on a later page (the filters still hold for it).
        int64_t at = get_time_ms(item, "createdAt");
        if (at > 0 && page->oldest_ms > 0 && at > page->oldest_ms) page->unsorted = true;
        if (at > 0 && (page->oldest_ms == 0 || at < page->oldest_ms)) page->oldest_ms = at;
        if (at > page->newest_ms) page->newest_ms = at;
        const char *n = json_string_value(json_object_get(item, "name"));
        if (!n || !name || strcmp(n, name) != 0 || read_call(item, &c) != 0) continue;
        if (!*has_call || c.created_at_ms > call->created_at_ms) {
            *call = c;
            *has_call = true;
        }
    }
    json_decref(root);
}

void vapi_parse_end(const httpc_response_t *resp, vapi_outcome_t *out) {
    classify(resp, out, false);
}

// ---- calls --------------------------------------------------------------------------------------

typedef enum { OP_CREATE, OP_GET, OP_FIND, OP_END } op_t;

static const char *const op_names[] = {"create", "get", "find", "end"};

typedef struct {
    logger_t log;
    op_t op;
    vapi_call_fn *call_done;
    vapi_end_fn *end_done;
    void *arg;
} pending_call_t;

static void log_outcome(const logger_t *log, op_t op_id, const vapi_outcome_t *o) {
    const char *op = op_names[op_id];
    switch (o->kind) {
    case VAPI_CONCURRENCY:
        log_info(log, "vapi_concurrency", "op=%s status=%ld error=%s", op, o->http_status, o->error);
        break;
    case VAPI_ACCOUNT_ERROR:
    case VAPI_REJECTED:
        log_warn(log, "vapi_rejected", "op=%s kind=%s status=%ld error=%s", op, vapi_result_name(o->kind),
                 o->http_status, o->error);
        break;
    case VAPI_BAD_RESPONSE:
        log_warn(log, "vapi_bad_response", "op=%s status=%ld maybe_created=%d", op, o->http_status,
                 o->maybe_created);
        break;
    default: break;
    }
}

static void on_done(void *arg, const httpc_response_t *resp) {
    pending_call_t *c = arg;
    vapi_outcome_t o = {0};   // every case sets it; gcc -O3 cannot tell
    vapi_call_t call;
    bool has_call = false;
    switch (c->op) {
    case OP_CREATE: vapi_parse_create(resp, &o, &call, &has_call); break;
    case OP_GET: vapi_parse_get(resp, &o, &call, &has_call); break;
    case OP_FIND:   // not used: a find completes in on_find_page
    case OP_END: vapi_parse_end(resp, &o); break;
    }
    log_outcome(&c->log, c->op, &o);
    if (c->op == OP_END) c->end_done(c->arg, &o);
    else c->call_done(c->arg, &o, has_call ? &call : NULL);
    explicit_bzero(call.control_url, sizeof call.control_url);
    free(c);
}

static int submit(vapi_client_t *self, httpc_prepared_t *req, int prep_rc, op_t op, vapi_call_fn *call_done,
                  vapi_end_fn *end_done, void *arg) {
    if (prep_rc != 0) return -1;
    pending_call_t *c = calloc(1, sizeof *c);
    int rc = -1;
    if (c) {
        *c = (pending_call_t){.log = self->log, .op = op, .call_done = call_done, .end_done = end_done, .arg = arg};
        rc = httpc_submit_prepared(self->http, req, 0, self->timeout_ms, on_done, c);
        if (rc != 0) free(c);
    }
    httpc_prepared_clear(req);
    return rc;
}

int vapi_call_create(vapi_client_t *self, const vapi_create_params_t *p, vapi_call_fn *done, void *arg) {
    assert(self && p && done);
    httpc_prepared_t req;
    int rc = vapi_prepare_create(self, p, &req);
    return submit(self, &req, rc, OP_CREATE, done, NULL, arg);
}

int vapi_call_get(vapi_client_t *self, const char *api_key, const char *call_id, vapi_call_fn *done, void *arg) {
    assert(self && done);
    httpc_prepared_t req;
    int rc = vapi_prepare_get(self, api_key, call_id, &req);
    return submit(self, &req, rc, OP_GET, done, NULL, arg);
}

// A find in progress: its own copies of everything a later page needs, because the client may be
// destroyed while the find runs (the httpc may not: it completes or cancels every request).
typedef struct {
    logger_t log;
    httpc_t *http;
    char *api_base;
    char *api_key;                  // wiped before it is freed
    char phone_number_id[VAPI_TOKEN_MAX + 1];
    char name[VAPI_NAME_MAX + 1];   // the call looked for
    int64_t created_after_ms;
    int64_t before_ms;              // the next page: createdAt < before_ms; 0 = no upper bound
    int limit;                      // the next page's size
    int pages;                      // requests made so far
    int max_pages;
    int attempts;                   // summed over the pages
    int timeout_ms;
    int max_attempts;
    vapi_call_fn *done;
    void *arg;
} find_t;

static void find_free(find_t *f) {
    if (f->api_key) explicit_bzero(f->api_key, strlen(f->api_key));
    free(f->api_key);
    free(f->api_base);
    free(f);
}

static void on_find_page(void *arg, const httpc_response_t *resp);

// Sends the next page. 0, or -1 (nothing sent, on_find_page will not run for it).
static int find_submit(find_t *f) {
    httpc_prepared_t req;
    if (prepare_list(f->api_base, f->max_attempts, f->api_key, f->phone_number_id, f->created_after_ms, f->before_ms,
                     f->limit, &req) != 0)
        return -1;
    int rc = httpc_submit_prepared(f->http, &req, 0, f->timeout_ms, on_find_page, f);
    httpc_prepared_clear(&req);
    if (rc == 0) f->pages++;
    return rc;
}

// The window was not searched to its end: report it as unavailable, never as "no such call", so
// the dialer asks again later instead of dialling a second time.
static void find_incomplete(const find_t *f, vapi_outcome_t *o, const char *why) {
    log_warn(&f->log, "vapi_find_incomplete", "op=find reason=%s pages=%d limit=%d", why, f->pages, f->limit);
    o->kind = VAPI_UNAVAILABLE;
}

// After a page was read: asks for the next one when the answer is not final. true when a request is
// in flight again (done must not be called yet); false when *o is the answer.
static bool find_next(find_t *f, const httpc_response_t *resp, vapi_outcome_t *o, bool has_call,
                      const vapi_find_page_t *page) {
    // Too large to read (HTTPC_BODY_MAX): the same page again, with fewer calls per page.
    bool too_large = o->kind == VAPI_BAD_RESPONSE && resp->transport_error == CURLE_FILESIZE_EXCEEDED;
    if (too_large && f->limit > 1 && f->pages < f->max_pages) {
        f->limit /= 2;
        return find_submit(f) == 0;   // if not sent, the bad response stands (the dialer asks again)
    }
    // Found, an error, or a page that was not full (VAPI had no more calls: "no such call" is true).
    if (o->kind != VAPI_OK || has_call || page->count < (size_t)f->limit) return false;
    // A full page without the call: older calls remain. The next page ends just after this one's
    // oldest call: createdAtLt=oldest+1 ms rather than createdAtLe=oldest, because VAPI may keep
    // createdAt finer than the millisecond it prints, and Le would then drop the rest of that
    // millisecond. That strictly narrows the window only when the page spans more than one
    // millisecond and VAPI applied the previous bound.
    if (page->oldest_ms == 0 || page->oldest_ms == page->newest_ms ||
        (f->before_ms > 0 && page->oldest_ms + 1 >= f->before_ms)) {
        find_incomplete(f, o, "no_progress");
        return false;
    }
    // Paging by the oldest createdAt skips nothing only if VAPI listed newest first (as documented):
    // from a page in another order, calls newer than its oldest may still be unlisted.
    if (page->unsorted) {
        find_incomplete(f, o, "unsorted");
        return false;
    }
    if (f->pages >= f->max_pages) {
        find_incomplete(f, o, "page_bound");
        return false;
    }
    f->before_ms = page->oldest_ms + 1;
    if (find_submit(f) == 0) return true;
    find_incomplete(f, o, "not_sent");
    return false;
}

static void on_find_page(void *arg, const httpc_response_t *resp) {
    find_t *f = arg;
    vapi_outcome_t o;
    vapi_call_t call;
    bool has_call = false;
    vapi_find_page_t page;
    vapi_parse_find_page(resp, f->name, &o, &call, &has_call, &page);
    f->attempts += o.attempts;
    if (f->pages > 1) o.not_found = false;   // the list exists: a later 404 says nothing of the call
    bool more = find_next(f, resp, &o, has_call, &page);
    if (!more) {
        o.attempts = f->attempts;
        o.pages = f->pages;
        log_outcome(&f->log, OP_FIND, &o);
        f->done(f->arg, &o, has_call ? &call : NULL);
    }
    explicit_bzero(call.control_url, sizeof call.control_url);
    if (!more) find_free(f);
}

int vapi_call_find(vapi_client_t *self, const char *api_key, const char *phone_number_id, int64_t created_after_ms,
                   const char *booking_id, int attempt, vapi_call_fn *done, void *arg) {
    return vapi_call_find_window(self, api_key, phone_number_id, created_after_ms, 0, booking_id, attempt, done, arg);
}

int vapi_call_find_window(vapi_client_t *self, const char *api_key, const char *phone_number_id,
                          int64_t created_after_ms, int64_t created_before_ms, const char *booking_id, int attempt,
                          vapi_call_fn *done, void *arg) {
    assert(self && done);
    if (created_before_ms < 0 || (created_before_ms > 0 && created_before_ms <= created_after_ms)) return -1;
    find_t *f = calloc(1, sizeof *f);
    if (!f) return -1;
    *f = (find_t){.log = self->log, .http = self->http, .created_after_ms = created_after_ms,
                  .before_ms = created_before_ms, .limit = self->find_limit, .max_pages = self->find_max_pages,
                  .timeout_ms = self->timeout_ms, .max_attempts = self->max_attempts, .done = done, .arg = arg};
    f->api_base = strdup(self->api_base);
    f->api_key = api_key ? strdup(api_key) : NULL;
    bool ok = f->api_base && f->api_key && vapi_call_name(booking_id, attempt, f->name, sizeof f->name) == 0 &&
              is_token(phone_number_id, VAPI_TOKEN_MAX);
    if (ok) snprintf(f->phone_number_id, sizeof f->phone_number_id, "%s", phone_number_id);
    if (!ok || find_submit(f) != 0) {
        find_free(f);
        return -1;
    }
    return 0;
}

int vapi_call_end(vapi_client_t *self, const char *control_url, vapi_end_fn *done, void *arg) {
    assert(self && done);
    httpc_prepared_t req;
    int rc = vapi_prepare_end(self, control_url, &req);
    return submit(self, &req, rc, OP_END, NULL, done, arg);
}

vapi_client_t *vapi_client_new(httpc_t *http, const vapi_config_t *cfg, const logger_t *lg) {
    assert(http && cfg && lg);
    if (!cfg->api_base || !cfg->api_base[0] || !cfg->public_url || !cfg->public_url[0]) return NULL;
    vapi_client_t *self = calloc(1, sizeof *self);
    if (!self) return NULL;
    self->http = http;
    self->log = *lg;
    self->api_base = dup_trimmed(cfg->api_base);
    char *public_url = dup_trimmed(cfg->public_url);
    if (public_url && asprintf(&self->server_url, "%s/webhooks/vapi", public_url) < 0) self->server_url = NULL;
    free(public_url);
    bool secret_ok = true;
    if (cfg->webhook_secret && cfg->webhook_secret[0]) {
        self->webhook_secret = strdup(cfg->webhook_secret);
        secret_ok = self->webhook_secret != NULL;
    }
    self->timeout_ms = cfg->timeout_ms;
    self->max_attempts = cfg->max_attempts;
    self->find_limit = cfg->find_limit > 0 && cfg->find_limit <= VAPI_FIND_LIMIT ? cfg->find_limit : VAPI_FIND_LIMIT;
    self->find_max_pages = cfg->find_max_pages > 0 ? cfg->find_max_pages : VAPI_FIND_MAX_PAGES;
    if (!self->api_base || !self->server_url || !secret_ok) vapi_client_destroy(&self);
    return self;
}

void vapi_client_destroy(vapi_client_t **self_p) {
    assert(self_p);
    vapi_client_t *self = *self_p;
    if (!self) return;
    if (self->webhook_secret) explicit_bzero(self->webhook_secret, strlen(self->webhook_secret));
    free(self->webhook_secret);
    free(self->api_base);
    free(self->server_url);
    free(self);
    *self_p = NULL;
}
