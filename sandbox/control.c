// sandbox/control.c — see control.h.
//
// The journal is a jansson array of entries, oldest first, capped at MAX_JOURNAL (the oldest are
// forgotten). Each entry is what a test wants to assert on: provider, method, path, query, the
// headers that matter (the Idempotency-Key itself; only whether Authorization and sign were
// present), the decoded fields (form or JSON), the status we answered and any fault applied.
#include "sandbox/control.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/util.h"
#include "sandbox/sbutil.h"

#define MAX_JOURNAL 10000
#define MAX_FAULTS 1000

typedef struct {
    int id;
    char *provider, *path_prefix;
    char method[8];   // "" matches any
    int status;
    int64_t delay_ms;
    bool drop, after;
    int remaining;
} fault_rule_t;

struct control_t {
    const sb_provider_t *providers;   // borrowed, n_providers entries
    size_t n_providers;
    webhooks_t *webhooks;             // borrowed
    logger_t log;
    sb_vec_t faults;                  // fault_rule_t*, in the order they were added
    json_t *journal;
    int next_fault_id;
    json_int_t next_seq;
};

static void fault_free(void *p) {
    fault_rule_t *f = p;
    free(f->provider);
    free(f->path_prefix);
    free(f);
}

control_t *control_new(const sb_provider_t *providers, size_t n_providers, webhooks_t *webhooks, logger_t log) {
    control_t *self = calloc(1, sizeof *self);
    if (!self) return NULL;
    self->providers = providers;
    self->n_providers = n_providers;
    self->webhooks = webhooks;
    self->log = log;
    self->journal = json_array();
    if (!self->journal) {
        free(self);
        return NULL;
    }
    return self;
}

void control_destroy(control_t **self_p) {
    control_t *self = *self_p;
    if (!self) return;
    sb_vec_clear(&self->faults, fault_free);
    json_decref(self->journal);
    free(self);
    *self_p = NULL;
}

static bool starts_with(const char *s, const char *prefix) { return strncmp(s, prefix, strlen(prefix)) == 0; }

static const char *query_of(const sb_request_t *req, const char *name) {
    const char *v = json_string_value(json_object_get(req->query, name));
    return v && *v ? v : NULL;
}

// ---- faults --------------------------------------------------------------------------------------
sb_fault_t control_take_fault(control_t *self, const char *provider, const sb_request_t *req) {
    sb_fault_t out = {0};
    for (size_t i = 0; i < self->faults.len; i++) {
        fault_rule_t *f = self->faults.items[i];
        if (strcmp(f->provider, provider) != 0 || !starts_with(req->path, f->path_prefix)) continue;
        if (f->method[0] && strcasecmp(f->method, req->method) != 0) continue;
        out = (sb_fault_t){.active = true, .id = f->id, .status = f->status, .delay_ms = f->delay_ms,
                           .drop = f->drop, .after = f->after};
        if (--f->remaining <= 0) {
            fault_free(f);
            sb_vec_remove(&self->faults, i);
        }
        break;
    }
    return out;
}

static json_t *fault_json(const fault_rule_t *f) {
    return json_pack("{s:i,s:s,s:s,s:s?,s:i,s:I,s:b,s:s,s:i}", "id", f->id, "provider", f->provider, "path_prefix",
                     f->path_prefix, "method", f->method[0] ? f->method : NULL, "status", f->status, "delay_ms",
                     (json_int_t)f->delay_ms, "drop", f->drop, "when", f->after ? "after" : "before", "remaining",
                     f->remaining);
}

static void add_fault(control_t *self, const json_t *body, sb_response_t *resp) {
    const char *provider = json_string_value(json_object_get(body, "provider"));
    const char *prefix = json_string_value(json_object_get(body, "path_prefix"));
    const char *method = json_string_value(json_object_get(body, "method"));
    const char *when = json_string_value(json_object_get(body, "when"));
    json_t *jstatus = json_object_get(body, "status"), *jdelay = json_object_get(body, "delay_ms"),
           *jdrop = json_object_get(body, "drop"), *jcount = json_object_get(body, "count");
    bool known = false;
    for (size_t i = 0; provider && i < self->n_providers; i++) known = known || strcmp(provider, self->providers[i].name) == 0;
    if (!known) {
        sb_respond_error(resp, 400, "provider must name a simulated provider (stripe, cryptomus, vapi)");
        return;
    }
    if (prefix && prefix[0] != '/') {
        sb_respond_error(resp, 400, "path_prefix must start with /");
        return;
    }
    if ((jstatus && (!json_is_integer(jstatus) || json_integer_value(jstatus) < 100 || json_integer_value(jstatus) > 599)) ||
        (jdelay && (!json_is_integer(jdelay) || json_integer_value(jdelay) < 0 || json_integer_value(jdelay) > 600000)) ||
        (jdrop && !json_is_boolean(jdrop)) ||
        (jcount && (!json_is_integer(jcount) || json_integer_value(jcount) < 1 || json_integer_value(jcount) > 100000)) ||
        (method && strlen(method) >= 8) || (when && strcmp(when, "before") != 0 && strcmp(when, "after") != 0)) {
        sb_respond_error(resp, 400,
                         "status 100..599, delay_ms 0..600000, drop boolean, count 1..100000, when before|after");
        return;
    }
    if (!jstatus && !json_integer_value(jdelay) && !json_is_true(jdrop)) {
        sb_respond_error(resp, 400, "a fault needs status, delay_ms or drop");
        return;
    }
    if (self->faults.len >= MAX_FAULTS) {
        sb_respond_error(resp, 409, "too many fault rules");
        return;
    }
    fault_rule_t *f = calloc(1, sizeof *f);
    if (!f || !(f->provider = strdup(provider)) || !(f->path_prefix = strdup(prefix ? prefix : "/"))) {
        if (f) fault_free(f);
        sb_respond_error(resp, 500, "out of memory");
        return;
    }
    f->id = ++self->next_fault_id;
    snprintf(f->method, sizeof f->method, "%s", method ? method : "");
    f->status = jstatus ? (int)json_integer_value(jstatus) : 0;
    f->delay_ms = json_integer_value(jdelay);
    f->drop = json_is_true(jdrop);
    f->after = when && strcmp(when, "after") == 0;
    f->remaining = jcount ? (int)json_integer_value(jcount) : 1;
    if (sb_vec_push(&self->faults, f) != 0) {
        fault_free(f);
        sb_respond_error(resp, 500, "out of memory");
        return;
    }
    log_info(&self->log, "fault_added", "id=%d provider=%s path_prefix=%s status=%d delay_ms=%lld drop=%d count=%d",
             f->id, f->provider, f->path_prefix, f->status, (long long)f->delay_ms, f->drop, f->remaining);
    sb_respond_json(resp, 200, json_pack("{s:b,s:o}", "ok", 1, "fault", fault_json(f)));
}

// ---- journal -------------------------------------------------------------------------------------
void control_record(control_t *self, const char *provider, const sb_request_t *req, int status, const sb_fault_t *fault) {
    char ts[40];
    util_rfc3339_ms(util_now_us(), ts, sizeof ts);
    const char *auth = req->authorization;
    const char *scheme = !auth ? NULL : strncasecmp(auth, "Bearer ", 7) == 0 ? "Bearer"
                                    : strncasecmp(auth, "Basic ", 6) == 0   ? "Basic"
                                                                            : "other";
    json_t *headers = json_pack("{s:s?,s:b,s:s?,s:s?,s:s?,s:s?,s:b}", "idempotency-key", req->idempotency_key,
                                "authorization", auth != NULL, "authorization-scheme", scheme, "content-type",
                                req->content_type, "stripe-version", req->stripe_version, "merchant", req->merchant,
                                "sign", req->sign != NULL);
    json_t *fields = req->form ? json_deep_copy(req->form) : req->json ? json_deep_copy(req->json) : json_null();
    json_t *entry = json_pack("{s:I,s:s,s:s,s:s,s:s,s:s,s:O,s:o,s:o,s:i}", "seq", ++self->next_seq, "time", ts,
                              "request_id", req->request_id, "provider", provider, "method", req->method, "path",
                              req->path, "query", req->query ? req->query : json_object(), "headers", headers,
                              "fields", fields, "status", status);
    if (!entry) return;
    if (!req->form && !req->json && req->body_len > 0)
        json_object_set_new(entry, "body", json_stringn_nocheck(req->body, req->body_len > 4096 ? 4096 : req->body_len));
    if (fault && fault->active)
        json_object_set_new(entry, "fault", json_pack("{s:i,s:i,s:I,s:b,s:s}", "id", fault->id, "status", fault->status,
                                                      "delay_ms", (json_int_t)fault->delay_ms, "drop", fault->drop,
                                                      "when", fault->after ? "after" : "before"));
    else
        json_object_set_new(entry, "fault", json_null());
    if (json_array_size(self->journal) >= MAX_JOURNAL) json_array_remove(self->journal, 0);
    json_array_append_new(self->journal, entry);
}

static void list_requests(control_t *self, const sb_request_t *req, sb_response_t *resp) {
    const char *provider = query_of(req, "provider"), *path = query_of(req, "path"),
               *prefix = query_of(req, "path_prefix"), *method = query_of(req, "method");
    json_t *list = json_array();
    size_t i;
    json_t *e;
    json_array_foreach(self->journal, i, e) {
        const char *p = json_string_value(json_object_get(e, "path"));
        if (provider && strcmp(provider, json_string_value(json_object_get(e, "provider"))) != 0) continue;
        if (path && strcmp(path, p) != 0) continue;
        if (prefix && !starts_with(p, prefix)) continue;
        if (method && strcasecmp(method, json_string_value(json_object_get(e, "method"))) != 0) continue;
        json_array_append(list, e);
    }
    sb_respond_json(resp, 200, json_pack("{s:I,s:o}", "count", (json_int_t)json_array_size(list), "requests", list));
}

// ---- routing -------------------------------------------------------------------------------------
void control_handle(control_t *self, const sb_request_t *req, sb_response_t *resp) {
    const char *path = req->path;
    bool post = strcmp(req->method, "POST") == 0, get = strcmp(req->method, "GET") == 0;
    json_t *empty = json_object();
    const json_t *body = json_is_object(req->json) ? req->json : empty;
    if (post && req->body_len > 0 && !json_is_object(req->json)) {
        sb_respond_error(resp, 400, "the body must be a JSON object");
    } else if (get && strcmp(path, "/_sandbox/health") == 0) {
        sb_respond_json(resp, 200, json_pack("{s:s}", "status", "ok"));
    } else if (get && strcmp(path, "/_sandbox/requests") == 0) {
        list_requests(self, req, resp);
    } else if (post && strcmp(path, "/_sandbox/faults") == 0) {
        add_fault(self, body, resp);
    } else if (get && strcmp(path, "/_sandbox/faults") == 0) {
        json_t *list = json_array();
        for (size_t i = 0; i < self->faults.len; i++) json_array_append_new(list, fault_json(self->faults.items[i]));
        sb_respond_json(resp, 200, json_pack("{s:o}", "faults", list));
    } else if (post && strcmp(path, "/_sandbox/faults/clear") == 0) {
        sb_vec_clear(&self->faults, fault_free);
        sb_respond_json(resp, 200, json_pack("{s:b}", "ok", 1));
    } else if (get && strcmp(path, "/_sandbox/webhooks") == 0) {
        sb_respond_json(resp, 200, webhooks_list(self->webhooks, query_of(req, "provider"), query_of(req, "type")));
    } else if (post && strcmp(path, "/_sandbox/webhooks") == 0) {
        const char *mode = json_string_value(json_object_get(body, "mode"));
        json_t *jc = json_object_get(body, "concurrency");
        int concurrency = json_is_integer(jc) ? (int)json_integer_value(jc) : 0;
        if ((!mode && !jc) || (jc && (concurrency < 1 || concurrency > 64)) ||
            webhooks_set_mode(self->webhooks, mode, concurrency) != 0)
            sb_respond_error(resp, 400, "mode is normal|hold|drop; concurrency 1..64");
        else
            sb_respond_json(resp, 200, json_pack("{s:b}", "ok", 1));
    } else if (post && strcmp(path, "/_sandbox/webhooks/release") == 0) {
        const char *order = json_string_value(json_object_get(body, "order"));
        json_t *jd = json_object_get(body, "duplicates");
        int dups = jd ? (json_is_integer(jd) ? (int)json_integer_value(jd) : 0) : 1;
        size_t released = 0;
        if (webhooks_release(self->webhooks, order, dups, &released) != 0)
            sb_respond_error(resp, 400, "order is fifo|reverse|shuffle; duplicates 1..1000");
        else
            sb_respond_json(resp, 200, json_pack("{s:b,s:I}", "ok", 1, "released", (json_int_t)released));
    } else if (post && strcmp(path, "/_sandbox/webhooks/redeliver") == 0) {
        const char *id = json_string_value(json_object_get(body, "id"));
        json_t *jt = json_object_get(body, "times");
        int times = jt ? (json_is_integer(jt) ? (int)json_integer_value(jt) : 0) : 1;
        if (!id || webhooks_redeliver(self->webhooks, id, times) != 0)
            sb_respond_error(resp, 404, "no deliverable event with that id (times 1..1000)");
        else
            sb_respond_json(resp, 200, json_pack("{s:b}", "ok", 1));
    } else if (post && strcmp(path, "/_sandbox/reset") == 0) {
        for (size_t i = 0; i < self->n_providers; i++) self->providers[i].reset(self->providers[i].self);
        webhooks_reset(self->webhooks);
        sb_vec_clear(&self->faults, fault_free);
        json_array_clear(self->journal);
        log_info(&self->log, "reset", NULL);
        sb_respond_json(resp, 200, json_pack("{s:b}", "ok", 1));
    } else {
        bool done = false;
        for (size_t i = 0; i < self->n_providers && !done; i++) {
            char prefix[64];
            snprintf(prefix, sizeof prefix, "/_sandbox/%s/", self->providers[i].name);
            if (starts_with(path, prefix)) {
                self->providers[i].control(self->providers[i].self, path + strlen(prefix) - 1, req, resp);
                done = true;
            }
        }
        if (!done) sb_respond_error(resp, 404, "unknown control path %s", path);
    }
    json_decref(empty);
}
