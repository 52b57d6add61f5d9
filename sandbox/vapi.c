// sandbox/vapi.c — see vapi.h.
//
// What it checks, as VAPI does (providers.md §2): the private key (`Authorization: Bearer`), the
// CreateCallDTO with NestJS whitelist validation (an unknown property "should not exist", so a
// misspelt field in the daemon fails here instead of being ignored; the messages come back as an
// array, `{"message":[…],"error":"Bad Request","statusCode":400}`), then the checks VAPI makes
// after validation (an assistant, a phone number, a customer; their message is a string), then the
// key's concurrency limit. Real properties the sandbox does not simulate (squads, batches,
// schedulePlan, …) are refused with a message saying so.
//
// State: keys (each is its own org: its own calls, limit and counters), calls, scripts. A call
// holds a concurrency slot from its 201 until it ends. Over the limit, the configured form is used:
// "400" (no call), "blocked" (201 with concurrencyBlocked and the call already ended) or "ended"
// (201 as usual, then an ended status-update). None of them takes a slot or a script step.
//
// Timeline: each call is a small state machine (queued → ringing → in-progress → ended, then the
// end-of-call-report) whose next step is due at `next_ms`; main.c's timer calls run_due(). Each
// step sends its server message through webhooks.c, with X-Vapi-Secret and (when configured) the
// HMAC headers, to the call's assistantOverrides.server.url or the sandbox-wide server URL. Every
// duration is multiplied by the timescale (maxDurationSeconds too).
//
// Everything runs on the lws service thread.
#include "sandbox/vapi.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "common/util.h"
#include "sandbox/sbutil.h"

#define MAX_KEYS 1000
#define MAX_CALLS 50000        // past this, the oldest finished calls are forgotten
#define MAX_SCRIPTS 10000
#define MAX_SCRIPT_STEPS 100
#define DEFAULT_MAX_DURATION_S 600
#define COST_PER_MINUTE 0.10
#define CONCURRENCY_REASON "call.start.error-subscription-concurrency-limit-reached"
#define DEFAULT_CONTROL_END_REASON "manually-canceled"

// The timeline, in ms before the timescale.
#define RING_MS 100         // queued → ringing
#define ANSWER_MS 100       // ringing → in-progress
#define BUSY_MS 200         // ringing → ended customer-busy
#define NO_ANSWER_MS 500    // ringing → ended customer-did-not-answer
#define VOICEMAIL_MS 300    // in-progress → ended voicemail
#define FAIL_MS 100         // queued → ended twilio-failed-to-connect-call (never rings)
#define FAULT_MS 500        // in-progress → ended …vapifault-worker-died (default of fault:S)
#define ANSWER_DEFAULT_MS 2000
#define REPORT_MS 100       // ended → end-of-call-report ("after post-processing")
#define OVER_LIMIT_MS 100   // "ended" form: the queued call ends this long after its 201

// Rounding of the non-negative values used here, without libm.
static int64_t round_nonneg(double v) { return v <= 0 ? 0 : (int64_t)(v + 0.5); }
static double round4(double v) { return (double)round_nonneg(v * 1e4) / 1e4; }

// ---- outcomes ------------------------------------------------------------------------------------
typedef enum {
    OUT_ANSWER,
    OUT_BUSY,
    OUT_NO_ANSWER,
    OUT_VOICEMAIL,
    OUT_FAIL,
    OUT_NEVER_ENDS,
    OUT_STUCK,
    OUT_LOST_END,
    OUT_FAULT
} outcome_kind_t;

typedef struct {
    outcome_kind_t kind;
    int64_t ms;      // answer, lost-end, fault: how long the call stays in progress
    char text[32];   // as a test wrote it
} outcome_t;

static const struct {
    const char *name;
    outcome_kind_t kind;
    int64_t default_ms;   // -1: takes no ":S"
} outcome_names[] = {
    {"answer", OUT_ANSWER, ANSWER_DEFAULT_MS},     {"busy", OUT_BUSY, -1},
    {"no-answer", OUT_NO_ANSWER, -1},              {"voicemail", OUT_VOICEMAIL, -1},
    {"fail", OUT_FAIL, -1},                        {"never-ends", OUT_NEVER_ENDS, -1},
    {"stuck", OUT_STUCK, -1},                      {"lost-end", OUT_LOST_END, ANSWER_DEFAULT_MS},
    {"fault", OUT_FAULT, FAULT_MS},
};

// "answer:3", "busy", "lost-end:0.5", … 0 or -1.
static int outcome_parse(const char *text, outcome_t *out) {
    if (!text || strlen(text) >= sizeof out->text) return -1;
    const char *colon = strchr(text, ':');
    size_t nlen = colon ? (size_t)(colon - text) : strlen(text);
    for (size_t i = 0; i < sizeof outcome_names / sizeof outcome_names[0]; i++) {
        if (strlen(outcome_names[i].name) != nlen || strncmp(text, outcome_names[i].name, nlen) != 0) continue;
        outcome_t o = {.kind = outcome_names[i].kind, .ms = outcome_names[i].default_ms};
        if (colon) {
            char *end = NULL;
            double s = strtod(colon + 1, &end);
            if (outcome_names[i].default_ms < 0 || !colon[1] || *end || !(s >= 0 && s <= 86400)) return -1;
            o.ms = round_nonneg(s * 1000);
        }
        snprintf(o.text, sizeof o.text, "%s", text);
        *out = o;
        return 0;
    }
    return -1;
}

// ---- state ---------------------------------------------------------------------------------------
typedef enum { MODE_400, MODE_BLOCKED, MODE_ENDED } over_mode_t;
static const char *const mode_names[] = {"400", "blocked", "ended"};

typedef struct {
    over_mode_t mode;
    outcome_t default_outcome;
    double timescale;
    char *server_url, *webhook_secret, *hmac_secret;
    int webhook_retries;
    char control_end_reason[80];
} settings_t;

typedef struct {
    char *key;
    int limit;
    bool from_option;     // survives a reset
    char org_id[40];
    int active, peak, created, rejected;
} vkey_t;

typedef struct {
    char number[48];
    outcome_t steps[MAX_SCRIPT_STEPS];
    size_t n, used;
} script_t;

typedef enum { PH_QUEUED, PH_RINGING, PH_IN_PROGRESS, PH_ENDED } phase_t;
static const char *const phase_names[] = {"queued", "ringing", "in-progress", "ended"};

typedef struct {
    char id[40], provider_call_id[40];
    vkey_t *key;
    json_t *req;             // the CreateCallDTO as received, without server.secret
    char number[48];
    outcome_t outcome;
    phase_t phase;
    int64_t next_ms;         // sb_mono_ms() of the next step; -1: none
    bool report_pending;     // the next step sends the end-of-call-report
    const char *end_reason;  // what the in-progress step ends with
    bool counts;             // holds one of its key's concurrency slots
    bool over_limit;         // created over the limit ("blocked" or "ended" form)
    bool silent_end;         // lost-end: the end messages are never sent
    int64_t created_us, updated_us, started_us, ended_us;   // wall clock; 0: not yet
    int64_t max_ms;          // maxDurationSeconds after the timescale
    char ended_reason[80];
    const char *ended_by;    // "timeline", "max-duration", "control", "concurrency", "sandbox"
    int control_requests;
    json_t *messages;        // what was sent: ["status-update:ringing", …, "end-of-call-report"]
    char *server_url, *secret;
    json_t *server_headers;  // assistantOverrides.server.headers, or NULL
    int retries;             // -1: the sandbox-wide --vapi-webhook-retries
    int64_t timeout_ms;      // 0: the sandbox-wide timeout
    bool want_status, want_report;
    bool control_enabled, listen_enabled;
    double cost;
} call_t;

struct vapi_t {
    settings_t cfg, initial;   // initial: from the options, restored by a reset
    char *public_url;
    webhooks_t *webhooks;
    logger_t log;
    sb_vec_t keys;      // vkey_t*
    sb_vec_t calls;     // call_t*, oldest first
    sb_vec_t scripts;   // script_t*
};

static void settings_free(settings_t *s) {
    free(s->server_url);
    free(s->webhook_secret);
    free(s->hmac_secret);
    s->server_url = s->webhook_secret = s->hmac_secret = NULL;
}

static int settings_copy(settings_t *dst, const settings_t *src) {
    settings_t t = *src;
    t.server_url = src->server_url ? strdup(src->server_url) : NULL;
    t.webhook_secret = src->webhook_secret ? strdup(src->webhook_secret) : NULL;
    t.hmac_secret = src->hmac_secret ? strdup(src->hmac_secret) : NULL;
    if ((src->server_url && !t.server_url) || (src->webhook_secret && !t.webhook_secret) ||
        (src->hmac_secret && !t.hmac_secret)) {
        settings_free(&t);
        return -1;
    }
    settings_free(dst);
    *dst = t;
    return 0;
}

static void key_free(void *p) {
    vkey_t *k = p;
    free(k->key);
    free(k);
}

static void call_free(void *p) {
    call_t *c = p;
    json_decref(c->req);
    json_decref(c->messages);
    json_decref(c->server_headers);
    free(c->server_url);
    free(c->secret);
    free(c);
}

// ---- small helpers -------------------------------------------------------------------------------
static bool starts_with(const char *s, const char *prefix) { return strncmp(s, prefix, strlen(prefix)) == 0; }

static const char *str_of(const json_t *obj, const char *key) { return json_string_value(json_object_get(obj, key)); }

static void iso_time(int64_t us, char *out, size_t size) { util_rfc3339_ms(us, out, size); }

static int64_t now_ms_wall(void) { return util_now_us() / 1000; }

static int64_t scaled(const vapi_t *self, int64_t ms) {
    return round_nonneg((double)ms * self->cfg.timescale);
}

static void key_suffix(const char *key, char out[8]) {
    size_t n = strlen(key);
    snprintf(out, 8, "%s", n > 4 ? key + n - 4 : key);
}

static bool nonempty(const char *s) { return s && *s; }

static bool is_uuid(const char *s) {
    if (!s || strlen(s) != 36) return false;
    for (int i = 0; i < 36; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (s[i] != '-') return false;
        } else if (!isxdigit((unsigned char)s[i])) {
            return false;
        }
    }
    return true;
}

static bool is_e164(const char *s) {
    if (s[0] != '+' || s[1] < '1' || s[1] > '9') return false;
    size_t n = 1;
    for (const char *p = s + 1; *p; p++, n++)
        if (!isdigit((unsigned char)*p)) return false;
    return n >= 3 && n <= 16;   // "+" then 2 to 15 digits
}

// "2026-05-01", "2026-05-01T12:00:00", with ".fff…" and "Z" or "±hh:mm". 0 or -1.
static int parse_iso8601(const char *s, int64_t *out_us) {
    int y, mo, d, h = 0, mi = 0, sec = 0, n = 0;
    if (!s || sscanf(s, "%4d-%2d-%2d%n", &y, &mo, &d, &n) != 3 || n != 10) return -1;
    const char *p = s + 10;
    int64_t frac_us = 0;
    int tz_s = 0;
    if (*p == 'T' || *p == 't' || *p == ' ') {
        int k = 0;
        if (sscanf(p + 1, "%2d:%2d:%2d%n", &h, &mi, &sec, &k) != 3 || k != 8) return -1;
        p += 1 + k;
        if (*p == '.') {
            p++;
            int digits = 0;
            int64_t scale = 100000;
            for (; isdigit((unsigned char)*p); p++, digits++) {
                frac_us += (*p - '0') * scale;
                scale /= 10;
            }
            if (digits == 0) return -1;
        }
        if (*p == 'Z' || *p == 'z') {
            p++;
        } else if (*p == '+' || *p == '-') {
            int th, tm, k2 = 0, sign = *p == '-' ? -1 : 1;
            if (sscanf(p + 1, "%2d:%2d%n", &th, &tm, &k2) != 2 || k2 != 5 || th > 23 || tm > 59) return -1;
            tz_s = sign * (th * 3600 + tm * 60);
            p += 1 + k2;
        }
    }
    if (*p || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60) return -1;
    struct tm tm = {.tm_year = y - 1900, .tm_mon = mo - 1, .tm_mday = d, .tm_hour = h, .tm_min = mi, .tm_sec = sec};
    time_t t = timegm(&tm);
    *out_us = ((int64_t)t - tz_s) * 1000000 + frac_us;
    return 0;
}

static const char *reason_phrase(int status) {
    switch (status) {
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 409: return "Conflict";
    case 429: return "Too Many Requests";
    case 500: return "Internal Server Error";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return status >= 500 ? "Internal Server Error" : "Bad Request";
    }
}

// NestJS's error body: {"message": string | [strings], "error": "<reason>", "statusCode": N}. Steals message.
static void nest_error(sb_response_t *resp, int status, json_t *message) {
    sb_respond_json(resp, status, json_pack("{s:o,s:s,s:i}", "message", message ? message : json_string(""), "error",
                                            reason_phrase(status), "statusCode", status));
}

static void nest_errorf(sb_response_t *resp, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void nest_errorf(sb_response_t *resp, int status, const char *fmt, ...) {
    char message[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, sizeof message, fmt, ap);
    va_end(ap);
    nest_error(resp, status, json_string(message));
}

static void msg_add(json_t *errors, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void msg_add(json_t *errors, const char *fmt, ...) {
    char message[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, sizeof message, fmt, ap);
    va_end(ap);
    json_array_append_new(errors, json_string(message));
}

// ---- keys, scripts, calls ------------------------------------------------------------------------
static vkey_t *find_key(vapi_t *self, const char *key) {
    for (size_t i = 0; key && i < self->keys.len; i++) {
        vkey_t *k = self->keys.items[i];
        if (util_consttime_equal(k->key, strlen(k->key), key, strlen(key))) return k;
    }
    return NULL;
}

// Adds a key or changes the limit of a known one. NULL when out of memory or full.
static vkey_t *add_key(vapi_t *self, const char *key, int limit, bool from_option) {
    vkey_t *k = find_key(self, key);
    if (k) {
        k->limit = limit;
        k->from_option = k->from_option || from_option;
        return k;
    }
    if (self->keys.len >= MAX_KEYS || !(k = calloc(1, sizeof *k))) return NULL;
    k->key = strdup(key);
    k->limit = limit;
    k->from_option = from_option;
    if (!k->key || util_uuid_v4(k->org_id, sizeof k->org_id) != 0 || sb_vec_push(&self->keys, k) != 0) {
        key_free(k);
        return NULL;
    }
    return k;
}

// "KEY[:LIMIT][,KEY[:LIMIT]…]". 0 or -1 (message in error).
static int add_key_specs(vapi_t *self, const char *text, char *error, size_t size) {
    char *copy = strdup(text ? text : ""), *save = NULL;
    if (!copy) return -1;
    int rc = 0;
    for (char *tok = strtok_r(copy, ",", &save); tok && rc == 0; tok = strtok_r(NULL, ",", &save)) {
        char *colon = strrchr(tok, ':');
        int64_t limit = VAPI_DEFAULT_LIMIT;
        if (colon) {
            *colon = '\0';
            if (util_parse_int64(colon + 1, 0, 100000, &limit) != 0) {
                snprintf(error, size, "--vapi-key is KEY[:LIMIT] with LIMIT 0..100000");
                rc = -1;
                break;
            }
        }
        if (!*tok || strpbrk(tok, " \t\r\n")) {
            snprintf(error, size, "--vapi-key needs a key without spaces");
            rc = -1;
        } else if (!add_key(self, tok, (int)limit, true)) {
            rc = -1;
        }
    }
    free(copy);
    return rc;
}

static script_t *find_script(vapi_t *self, const char *number) {
    for (size_t i = 0; number && i < self->scripts.len; i++) {
        script_t *s = self->scripts.items[i];
        if (strcmp(s->number, number) == 0) return s;
    }
    return NULL;
}

// The next outcome for a call to `number`: its script's next step (the last repeats), else the default.
static outcome_t next_outcome(vapi_t *self, const char *number) {
    script_t *s = find_script(self, number);
    if (!s || s->n == 0) return self->cfg.default_outcome;
    size_t i = s->used < s->n ? s->used : s->n - 1;
    s->used++;
    return s->steps[i];
}

static call_t *find_call(vapi_t *self, const char *id) {
    for (size_t i = 0; id && i < self->calls.len; i++) {
        call_t *c = self->calls.items[i];
        if (strcmp(c->id, id) == 0) return c;
    }
    return NULL;
}

static void forget_old_calls(vapi_t *self) {
    for (size_t i = 0; self->calls.len >= MAX_CALLS && i < self->calls.len;) {
        call_t *c = self->calls.items[i];
        if (c->phase == PH_ENDED && !c->report_pending) {
            call_free(c);
            sb_vec_remove(&self->calls, i);
        } else {
            i++;
        }
    }
}

// ---- the Call object -----------------------------------------------------------------------------
static void call_urls(const vapi_t *self, const call_t *c, char *control, size_t csize, char *listen, size_t lsize) {
    snprintf(control, csize, "%s/vapi-control/%s/control", self->public_url, c->id);
    const char *rest = self->public_url;
    const char *scheme = "ws";
    if (starts_with(rest, "https://")) {
        scheme = "wss";
        rest += 8;
    } else if (starts_with(rest, "http://")) {
        rest += 7;
    }
    snprintf(listen, lsize, "%s://%s/vapi-control/%s/listen", scheme, rest, c->id);
}

static json_t *call_json(const vapi_t *self, const call_t *c) {
    char created[40], updated[40], t[40], control[600], listen[600];
    iso_time(c->created_us, created, sizeof created);
    iso_time(c->updated_us, updated, sizeof updated);
    json_t *o = json_pack("{s:s,s:s,s:s,s:s,s:s,s:s}", "id", c->id, "orgId", c->key->org_id, "createdAt", created,
                          "updatedAt", updated, "type", "outboundPhoneCall", "status", phase_names[c->phase]);
    if (!o) return NULL;
    if (c->phase == PH_ENDED) json_object_set_new(o, "endedReason", json_string(c->ended_reason));
    json_object_set_new(o, "phoneCallProvider", json_string("twilio"));
    json_object_set_new(o, "phoneCallProviderId", json_string(c->provider_call_id));
    json_object_set_new(o, "phoneCallTransport", json_string("pstn"));
    static const char *const echoed[] = {"phoneNumberId", "assistantId", "assistant", "assistantOverrides", "customer",
                                         "name"};
    for (size_t i = 0; i < sizeof echoed / sizeof echoed[0]; i++) {
        json_t *v = json_object_get(c->req, echoed[i]);
        if (v) json_object_set_new(o, echoed[i], json_deep_copy(v));
    }
    if (c->started_us) {
        iso_time(c->started_us, t, sizeof t);
        json_object_set_new(o, "startedAt", json_string(t));
    }
    if (c->ended_us) {
        iso_time(c->ended_us, t, sizeof t);
        json_object_set_new(o, "endedAt", json_string(t));
    }
    if (c->phase == PH_ENDED) {
        double k = c->cost;
        json_object_set_new(o, "cost", json_real(c->cost));
        json_object_set_new(o, "costBreakdown",
                            json_pack("{s:f,s:f,s:f,s:f,s:f,s:f}", "transport", round4(k * 0.4), "stt",
                                      round4(k * 0.1), "llm", round4(k * 0.2), "tts",
                                      round4(k * 0.15), "vapi", round4(k * 0.15), "total", k));
        json_t *artifact = json_object();
        if (c->started_us) {
            char rec[600];
            snprintf(rec, sizeof rec, "%s/vapi-recordings/%s-mono.wav", self->public_url, c->id);
            json_object_set_new(artifact, "recordingUrl", json_string(rec));
            snprintf(rec, sizeof rec, "%s/vapi-recordings/%s-stereo.wav", self->public_url, c->id);
            json_object_set_new(artifact, "stereoRecordingUrl", json_string(rec));
            json_object_set_new(artifact, "transcript",
                                json_string("AI: Hello, this is your Sweety call.\nUser: Hi!\n"
                                            "AI: Thank you, goodbye.\n"));
        } else {
            json_object_set_new(artifact, "transcript", json_string(""));
        }
        json_object_set_new(artifact, "messages", json_array());
        json_object_set_new(o, "artifact", artifact);
        json_object_set_new(o, "analysis", json_object());
    }
    call_urls(self, c, control, sizeof control, listen, sizeof listen);
    json_t *monitor = json_object();
    if (c->listen_enabled) json_object_set_new(monitor, "listenUrl", json_string(listen));
    if (c->control_enabled) json_object_set_new(monitor, "controlUrl", json_string(control));
    json_object_set_new(o, "monitor", monitor);
    return o;
}

// What GET /_sandbox/vapi/calls shows of a call.
static json_t *call_view(const vapi_t *self, const call_t *c) {
    char created[40], ended[40], suffix[8];
    iso_time(c->created_us, created, sizeof created);
    if (c->ended_us) iso_time(c->ended_us, ended, sizeof ended);
    key_suffix(c->key->key, suffix);
    json_t *meta = json_object_get(json_object_get(c->req, "assistantOverrides"), "metadata");
    const char *server_url = c->server_url ? c->server_url : self->cfg.server_url;
    return json_pack("{s:s,s:s,s:s,s:s,s:s?,s:s,s:s,s:s?,s:s?,s:b,s:b,s:i,s:O,s:o,s:s?}", "id", c->id, "key_suffix",
                     suffix,
                     "number", c->number, "status", phase_names[c->phase], "endedReason",
                     c->phase == PH_ENDED ? c->ended_reason : NULL, "outcome", c->outcome.text, "created", created,
                     "ended", c->ended_us ? ended : NULL, "ended_by", c->ended_by, "ended_by_control",
                     c->ended_by && strcmp(c->ended_by, "control") == 0, "over_limit", c->over_limit,
                     "control_requests", c->control_requests, "messages", c->messages, "metadata",
                     meta ? json_deep_copy(meta) : json_null(), "server_url", server_url);
}

// ---- server messages -----------------------------------------------------------------------------
// Sends {"message":{"timestamp","type",…fields…,"call","customer"}} for `c`. Steals `fields`.
static void emit(vapi_t *self, call_t *c, const char *type, const char *label, json_t *fields) {
    bool wanted = strcmp(type, "status-update") == 0 ? c->want_status : c->want_report;
    if (!wanted || !fields) {
        json_decref(fields);
        return;
    }
    json_t *msg = json_pack("{s:I,s:s}", "timestamp", (json_int_t)now_ms_wall(), "type", type);
    json_object_update(msg, fields);
    json_decref(fields);
    json_object_set_new(msg, "call", call_json(self, c));
    json_t *customer = json_object_get(c->req, "customer");
    if (customer) json_object_set_new(msg, "customer", json_deep_copy(customer));
    json_t *envelope = json_pack("{s:o}", "message", msg);
    char *body = envelope ? json_dumps(envelope, JSON_COMPACT) : NULL;
    json_decref(envelope);
    if (!body) {
        log_error(&self->log, "message_lost", "call=%s type=%s reason=out_of_memory", c->id, type);
        return;
    }
    // Headers: the secret (the call's server.secret, else the sandbox's), then server.headers.
    const char *headers[34] = {0};
    char lines[33][600];
    size_t nh = 0;
    const char *secret = c->secret ? c->secret : self->cfg.webhook_secret;
    if (secret) {
        snprintf(lines[nh], sizeof lines[nh], "X-Vapi-Secret: %s", secret);
        headers[nh] = lines[nh];
        nh++;
    }
    const char *hname;
    json_t *hval;
    json_object_foreach(c->server_headers, hname, hval) {
        if (nh >= 33) break;
        snprintf(lines[nh], sizeof lines[nh], "%s: %s", hname, json_string_value(hval));
        headers[nh] = lines[nh];
        nh++;
    }
    char id[48];
    sb_random_id("vapimsg_", 20, id, sizeof id);
    webhook_event_t w = {.provider = "vapi",
                         .id = id,
                         .type = type,
                         .url = c->server_url ? c->server_url : self->cfg.server_url,
                         .body = body,
                         .body_len = strlen(body),
                         .headers = headers,
                         .hmac_secret = self->cfg.hmac_secret,
                         .own_retries = true,
                         .max_retries = c->retries >= 0 ? c->retries : self->cfg.webhook_retries,
                         .timeout_ms = c->timeout_ms};
    webhooks_emit(self->webhooks, &w);
    free(body);
    json_array_append_new(c->messages, json_string(label));
}

static void emit_status(vapi_t *self, call_t *c) {
    char label[64];
    snprintf(label, sizeof label, "status-update:%s", phase_names[c->phase]);
    json_t *fields = json_pack("{s:s}", "status", phase_names[c->phase]);
    if (fields && c->phase == PH_ENDED) json_object_set_new(fields, "endedReason", json_string(c->ended_reason));
    emit(self, c, "status-update", label, fields);
}

static void emit_report(vapi_t *self, call_t *c) {
    json_t *call = call_json(self, c);   // its artifact, cost and times are the report's
    json_t *fields = json_pack("{s:s,s:f,s:[]}", "endedReason", c->ended_reason, "cost", c->cost, "costs");
    if (fields && call) {
        static const char *const copied[] = {"startedAt", "endedAt", "artifact", "analysis"};
        for (size_t i = 0; i < sizeof copied / sizeof copied[0]; i++) {
            json_t *v = json_object_get(call, copied[i]);
            if (v) json_object_set(fields, copied[i], v);
        }
        if (!json_object_get(fields, "startedAt")) json_object_set_new(fields, "startedAt", json_null());
    }
    json_decref(call);
    emit(self, c, "end-of-call-report", "end-of-call-report", fields);
}

// ---- the timeline --------------------------------------------------------------------------------
static void set_phase(vapi_t *self, call_t *c, phase_t phase) {
    c->phase = phase;
    c->updated_us = util_now_us();
    if (phase == PH_IN_PROGRESS) c->started_us = c->updated_us;
    emit_status(self, c);
}

// Ends the call (once): frees its slot, sends status-update ended now and the report shortly
// after, unless its end messages are lost (lost-end).
static void end_call(vapi_t *self, call_t *c, const char *reason, const char *by) {
    if (c->phase == PH_ENDED) return;
    c->phase = PH_ENDED;
    c->ended_us = c->updated_us = util_now_us();
    snprintf(c->ended_reason, sizeof c->ended_reason, "%s", reason);
    c->ended_by = by;
    double seconds = c->started_us ? (double)(c->ended_us - c->started_us) / 1e6 : 0;
    c->cost = round4(seconds * COST_PER_MINUTE / 60);
    if (c->counts) {
        c->key->active--;
        c->counts = false;
    }
    c->next_ms = -1;
    c->report_pending = false;
    char masked[48];
    util_mask_phone(c->number, masked, sizeof masked);
    log_info(&self->log, "vapi_call_ended", "id=%s number=%s reason=%s by=%s silent=%d", c->id, masked, reason, by,
             c->silent_end);
    if (c->silent_end) return;
    emit_status(self, c);
    c->report_pending = true;
    c->next_ms = sb_mono_ms() + scaled(self, REPORT_MS);
}

// One step of the call's timeline (its next_ms has come).
static void step(vapi_t *self, call_t *c, int64_t now) {
    c->next_ms = -1;
    if (c->report_pending) {
        c->report_pending = false;
        emit_report(self, c);
        return;
    }
    outcome_kind_t kind = c->outcome.kind;
    switch (c->phase) {
    case PH_QUEUED:
        if (c->over_limit) {
            end_call(self, c, CONCURRENCY_REASON, "concurrency");
        } else if (kind == OUT_FAIL) {
            end_call(self, c, "twilio-failed-to-connect-call", "timeline");
        } else {
            set_phase(self, c, PH_RINGING);
            int64_t ring_ms = kind == OUT_BUSY ? BUSY_MS : kind == OUT_NO_ANSWER ? NO_ANSWER_MS : ANSWER_MS;
            c->next_ms = now + scaled(self, ring_ms);
        }
        break;
    case PH_RINGING: {
        if (kind == OUT_BUSY) {
            end_call(self, c, "customer-busy", "timeline");
            break;
        }
        if (kind == OUT_NO_ANSWER) {
            end_call(self, c, "customer-did-not-answer", "timeline");
            break;
        }
        set_phase(self, c, PH_IN_PROGRESS);
        int64_t run = -1;
        c->end_reason = "customer-ended-call";
        if (kind == OUT_ANSWER || kind == OUT_LOST_END) {
            run = scaled(self, c->outcome.ms);
        } else if (kind == OUT_VOICEMAIL) {
            run = scaled(self, VOICEMAIL_MS);
            c->end_reason = "voicemail";
        } else if (kind == OUT_FAULT) {
            run = scaled(self, c->outcome.ms);
            c->end_reason = "call.in-progress.error-vapifault-worker-died";
        } else if (kind == OUT_NEVER_ENDS) {
            run = c->max_ms;
        }
        if (run >= c->max_ms && kind != OUT_STUCK) {   // VAPI enforces maxDurationSeconds
            run = c->max_ms;
            c->end_reason = "exceeded-max-duration";
        }
        c->next_ms = run < 0 ? -1 : now + run;
        break;
    }
    case PH_IN_PROGRESS:
        end_call(self, c, c->end_reason,
                 strcmp(c->end_reason, "exceeded-max-duration") == 0 ? "max-duration" : "timeline");
        break;
    case PH_ENDED:
        break;
    }
}

static int64_t vapi_next_due_ms(void *vself) {
    vapi_t *self = vself;
    int64_t next = -1;
    for (size_t i = 0; i < self->calls.len; i++) {
        const call_t *c = self->calls.items[i];
        if (c->next_ms >= 0 && (next < 0 || c->next_ms < next)) next = c->next_ms;
    }
    return next;
}

static void vapi_run_due(void *vself, int64_t now_ms) {
    vapi_t *self = vself;
    for (size_t i = 0; i < self->calls.len; i++) {
        call_t *c = self->calls.items[i];
        for (int guard = 0; c->next_ms >= 0 && c->next_ms <= now_ms && guard < 8; guard++) step(self, c, now_ms);
    }
}

// ---- validation of POST /call (NestJS whitelist style) -------------------------------------------
static const char *const top_allowed[] = {"name", "assistantId", "assistant", "assistantOverrides", "phoneNumberId",
                                          "customer", NULL};
// Real CreateCallDTO properties the sandbox does not play.
static const char *const top_unsimulated[] = {"customers", "schedulePlan", "transport", "squadId", "squad",
                                              "workflowId", "workflow", "workflowOverrides", "phoneNumber",
                                              "customerId", NULL};
static const char *const customer_allowed[] = {"number", "name", "extension", "sipUri", "email", "externalId",
                                               "numberE164CheckEnabled", NULL};
static const char *const overrides_allowed[] = {
    "transcriber", "model", "voice", "firstMessage", "firstMessageInterruptionsEnabled", "firstMessageMode",
    "voicemailDetection", "clientMessages", "serverMessages", "maxDurationSeconds", "backgroundSound",
    "modelOutputInMessagesEnabled", "transportConfigurations", "observabilityPlan", "credentials", "credentialIds",
    "hooks", "variableValues", "name", "voicemailMessage", "endCallMessage", "endCallPhrases", "compliancePlan",
    "metadata", "backgroundSpeechDenoisingPlan", "analysisPlan", "artifactPlan", "startSpeakingPlan",
    "stopSpeakingPlan", "monitorPlan", "server", "keypadInputPlan", "silenceTimeoutSeconds", NULL};
static const char *const server_allowed[] = {"url", "timeoutSeconds", "secret", "credentialId", "headers",
                                             "backoffPlan", "staticIpAddressesEnabled", NULL};
static const char *const backoff_allowed[] = {"type", "maxRetries", "baseDelaySeconds", "excludedStatusCodes", NULL};
static const char *const monitor_allowed[] = {"listenEnabled", "listenAuthenticationEnabled", "controlEnabled",
                                              "controlAuthenticationEnabled", NULL};
static const char *const server_message_types[] = {
    "conversation-update", "end-of-call-report", "function-call", "hang", "language-change-detected",
    "language-changed", "model-output", "phone-call-control", "speech-update", "status-update", "transcript",
    "transcript[transcriptType=\"final\"]", "tool-calls", "transfer-destination-request", "handoff-destination-request",
    "transfer-update", "user-interrupted", "voice-input", "voice-request", "assistant-request",
    "knowledge-base-request", "call.endpointing.request", "assistant.started", "assistant.speechStarted",
    "call.deleted", "call.delete.failed", "chat.created", "chat.deleted", "session.created", "session.updated",
    "session.deleted", NULL};

static bool in_list(const char *const *list, const char *s) {
    for (size_t i = 0; list[i]; i++)
        if (strcmp(list[i], s) == 0) return true;
    return false;
}

static void check_unknown(json_t *errors, const json_t *obj, const char *prefix, const char *const *allowed) {
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)obj, key, v) {
        if (!in_list(allowed, key)) msg_add(errors, "%sproperty %s should not exist", prefix, key);
    }
}

// A nested DTO: must be an object when present. Returns it, or NULL.
static const json_t *nested(json_t *errors, const json_t *parent, const char *key, const char *path) {
    const json_t *v = json_object_get(parent, key);
    if (v && !json_is_object(v)) {
        msg_add(errors, "nested property %s must be either object or array", path);
        return NULL;
    }
    return v;
}

static void check_string(json_t *errors, const json_t *parent, const char *key, const char *path, size_t max) {
    const json_t *v = json_object_get(parent, key);
    if (!v) return;
    if (!json_is_string(v))
        msg_add(errors, "%s must be a string", path);
    else if (max && json_string_length(v) > max)
        msg_add(errors, "%s must be shorter than or equal to %zu characters", path, max);
}

static void check_bool(json_t *errors, const json_t *parent, const char *key, const char *path) {
    const json_t *v = json_object_get(parent, key);
    if (v && !json_is_boolean(v)) msg_add(errors, "%s must be a boolean value", path);
}

static void check_number(json_t *errors, const json_t *parent, const char *key, const char *path, double min,
                         double max) {
    const json_t *v = json_object_get(parent, key);
    if (!v) return;
    if (!json_is_number(v)) {
        msg_add(errors, "%s must be a number conforming to the specified constraints", path);
        return;
    }
    double d = json_number_value(v);
    if (d < min) msg_add(errors, "%s must not be less than %g", path, min);
    if (d > max) msg_add(errors, "%s must not be greater than %g", path, max);
}

static void check_object(json_t *errors, const json_t *parent, const char *key, const char *path) {
    const json_t *v = json_object_get(parent, key);
    if (v && !json_is_object(v)) msg_add(errors, "%s must be an object", path);
}

static json_t *validate_create(const json_t *body) {
    json_t *errors = json_array();
    check_unknown(errors, body, "", top_allowed);
    check_string(errors, body, "name", "name", 40);
    // The OpenAPI gives these as plain strings (no uuid format); the sandbox knows no assistants or numbers.
    check_string(errors, body, "assistantId", "assistantId", 0);
    check_string(errors, body, "phoneNumberId", "phoneNumberId", 0);
    check_object(errors, body, "assistant", "assistant");

    const json_t *customer = nested(errors, body, "customer", "customer");
    if (customer) {
        check_unknown(errors, customer, "customer.", customer_allowed);
        const json_t *num = json_object_get(customer, "number");
        const char *n = json_string_value(num);
        if (num && !n) {
            msg_add(errors, "customer.number must be a string");
        } else if (n) {
            size_t len = strlen(n);
            if (len < 3) msg_add(errors, "customer.number must be longer than or equal to 3 characters");
            if (len > 40) msg_add(errors, "customer.number must be shorter than or equal to 40 characters");
            if (len >= 3 && len <= 40 && !json_is_false(json_object_get(customer, "numberE164CheckEnabled")) &&
                !is_e164(n))
                msg_add(errors, "customer.number must be a valid phone number in the E.164 format. Hot tip, you may "
                                "be missing the country code (Eg. US: +1).");
        }
        check_string(errors, customer, "name", "customer.name", 40);
        check_string(errors, customer, "extension", "customer.extension", 10);
        check_string(errors, customer, "sipUri", "customer.sipUri", 0);
        check_string(errors, customer, "email", "customer.email", 0);
        check_string(errors, customer, "externalId", "customer.externalId", 40);
        check_bool(errors, customer, "numberE164CheckEnabled", "customer.numberE164CheckEnabled");
    }

    const json_t *ov = nested(errors, body, "assistantOverrides", "assistantOverrides");
    if (ov) {
        check_unknown(errors, ov, "assistantOverrides.", overrides_allowed);
        check_number(errors, ov, "maxDurationSeconds", "assistantOverrides.maxDurationSeconds", 10, 43200);
        check_object(errors, ov, "metadata", "assistantOverrides.metadata");
        check_object(errors, ov, "variableValues", "assistantOverrides.variableValues");
        const json_t *sm = json_object_get(ov, "serverMessages");
        if (sm && !json_is_array(sm)) {
            msg_add(errors, "assistantOverrides.serverMessages must be an array");
        } else if (sm) {
            size_t i;
            json_t *v;
            bool bad = false;
            json_array_foreach(sm, i, v) {
                bad = bad || !json_is_string(v) || !in_list(server_message_types, json_string_value(v));
            }
            if (bad) {
                sb_buf_t b = {0};
                for (size_t k = 0; server_message_types[k]; k++)
                    sb_buf_printf(&b, "%s%s", k ? ", " : "", server_message_types[k]);
                msg_add(errors,
                        "each value in assistantOverrides.serverMessages must be one of the following values: %s",
                        b.data ? b.data : "");
                sb_buf_free(&b);
            }
        }
        const json_t *server = nested(errors, ov, "server", "assistantOverrides.server");
        if (server) {
            check_unknown(errors, server, "assistantOverrides.server.", server_allowed);
            const json_t *url = json_object_get(server, "url");
            if (url && !sb_is_http_url(json_string_value(url)))
                msg_add(errors, "assistantOverrides.server.url must be a URL address");
            check_number(errors, server, "timeoutSeconds", "assistantOverrides.server.timeoutSeconds", 1, 300);
            check_string(errors, server, "secret", "assistantOverrides.server.secret", 0);
            check_string(errors, server, "credentialId", "assistantOverrides.server.credentialId", 0);
            const json_t *headers = json_object_get(server, "headers");
            if (headers) {
                bool ok = json_is_object(headers) && json_object_size(headers) <= 32;
                const char *hk;
                json_t *hv;
                json_object_foreach((json_t *)headers, hk, hv) {
                    const char *s = json_string_value(hv);
                    ok = ok && s && !strpbrk(s, "\r\n") && *hk && strlen(hk) < 64 && strlen(s) < 500 &&
                         strspn(hk, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") == strlen(hk);
                }
                if (!ok) msg_add(errors, "assistantOverrides.server.headers must be an object of header strings");
            }
            const json_t *bp = nested(errors, server, "backoffPlan", "assistantOverrides.server.backoffPlan");
            if (bp) {
                check_unknown(errors, bp, "assistantOverrides.server.backoffPlan.", backoff_allowed);
                check_number(errors, bp, "maxRetries", "assistantOverrides.server.backoffPlan.maxRetries", 0, 10);
                check_number(errors, bp, "baseDelaySeconds", "assistantOverrides.server.backoffPlan.baseDelaySeconds",
                             0, 10);
            }
        }
        const json_t *mp = nested(errors, ov, "monitorPlan", "assistantOverrides.monitorPlan");
        if (mp) {
            check_unknown(errors, mp, "assistantOverrides.monitorPlan.", monitor_allowed);
            for (size_t i = 0; monitor_allowed[i]; i++) {
                char path[96];
                snprintf(path, sizeof path, "assistantOverrides.monitorPlan.%s", monitor_allowed[i]);
                check_bool(errors, mp, monitor_allowed[i], path);
            }
        }
    }
    return errors;
}

// ---- the API -------------------------------------------------------------------------------------
// The key from `Authorization: Bearer <key>`; 401 and NULL when it is missing or unknown.
static vkey_t *authorize(vapi_t *self, const sb_request_t *req, sb_response_t *resp) {
    const char *auth = req->authorization;
    vkey_t *k = NULL;
    if (auth && strncasecmp(auth, "Bearer ", 7) == 0) {
        const char *token = auth + 7;
        while (*token == ' ') token++;
        k = *token ? find_key(self, token) : NULL;
    }
    if (!k)
        nest_error(resp, 401,
                   json_string("Invalid Key. Hot tip, you may be using the private key instead of the public key, "
                               "or vice versa."));
    return k;
}

static json_t *subscription_limits(const vkey_t *k, bool blocked) {
    int remaining = k->limit - k->active;
    return json_pack("{s:b,s:i,s:i}", "concurrencyBlocked", blocked, "concurrencyLimit", k->limit,
                     "remainingConcurrentCalls", remaining > 0 && !blocked ? remaining : 0);
}

static void create_call(vapi_t *self, vkey_t *key, const sb_request_t *req, sb_response_t *resp) {
    if (req->body_len > 0 && !req->json && sb_content_type_is(req, "application/json")) {
        json_error_t jerr;
        json_t *probe = json_loadb(req->body, req->body_len, 0, &jerr);
        json_decref(probe);
        nest_errorf(resp, 400, "Unexpected token in JSON at position %d", jerr.position);
        return;
    }
    // Like Express, only an application/json body is read; anything else validates as {}.
    json_t *empty = json_object();
    const json_t *body = sb_content_type_is(req, "application/json") && json_is_object(req->json) ? req->json : empty;
    json_t *errors = validate_create(body);
    if (json_array_size(errors) > 0) {
        nest_error(resp, 400, errors);
        json_decref(empty);
        return;
    }
    json_decref(errors);
    const char *unsimulated = NULL;
    for (size_t i = 0; top_unsimulated[i] && !unsimulated; i++)
        if (json_object_get(body, top_unsimulated[i])) unsimulated = top_unsimulated[i];
    const json_t *customer = json_object_get(body, "customer");
    const char *number = str_of(customer, "number");
    if (unsimulated)
        nest_errorf(resp, 400, "sweety-sandbox does not simulate `%s` (a real VAPI property)", unsimulated);
    else if (!nonempty(str_of(body, "assistantId")) && !json_object_get(body, "assistant"))
        nest_errorf(resp, 400, "Couldn't Get Assistant. Need Either `assistant` Or `assistantId`.");
    else if (!nonempty(str_of(body, "phoneNumberId")))
        nest_errorf(resp, 400, "Couldn't Get Phone Number. Need Either `phoneNumberId` Or `phoneNumber`.");
    else if (!customer || !number)
        nest_errorf(resp, 400, "Couldn't Get Customer. Need `customer.number` (the sandbox dials numbers only).");
    if (resp->status) {
        json_decref(empty);
        return;
    }

    bool over = key->active >= key->limit;
    if (over) {
        key->rejected++;
        if (self->cfg.mode == MODE_400) {
            char masked[48];
            util_mask_phone(number, masked, sizeof masked);
            log_info(&self->log, "vapi_over_limit", "number=%s limit=%d active=%d form=400", masked, key->limit,
                     key->active);
            nest_error(resp, 400, json_string("Over Concurrency Limit"));
            json_decref(empty);
            return;
        }
    }
    forget_old_calls(self);
    call_t *c = calloc(1, sizeof *c);
    if (!c) {
        json_decref(empty);
        nest_error(resp, 500, json_string("Internal server error"));
        return;
    }
    util_uuid_v4(c->id, sizeof c->id);
    char hex[33];   // a Twilio CallSid: "CA" + 32 hex digits
    sb_random_hex(16, hex, sizeof hex);
    snprintf(c->provider_call_id, sizeof c->provider_call_id, "CA%s", hex);
    c->key = key;
    c->req = json_deep_copy(body);
    c->messages = json_array();
    snprintf(c->number, sizeof c->number, "%s", number);
    c->created_us = c->updated_us = util_now_us() / 1000 * 1000;   // ms, as printed (createdAtGt compares)
    c->next_ms = -1;
    c->retries = -1;
    json_t *ov = json_object_get(c->req, "assistantOverrides");
    json_t *server = json_object_get(ov, "server");
    const char *url = str_of(server, "url"), *secret = str_of(server, "secret");
    c->server_url = url ? strdup(url) : NULL;
    c->secret = secret ? strdup(secret) : NULL;
    json_t *headers = json_object_get(server, "headers");
    c->server_headers = headers ? json_deep_copy(headers) : NULL;
    json_t *bp = json_object_get(server, "backoffPlan");
    if (json_is_number(json_object_get(bp, "maxRetries")))
        c->retries = (int)json_number_value(json_object_get(bp, "maxRetries"));
    if (json_is_number(json_object_get(server, "timeoutSeconds")))
        c->timeout_ms = (int64_t)(json_number_value(json_object_get(server, "timeoutSeconds")) * 1000);
    if (server) json_object_del(server, "secret");   // not echoed back
    json_t *sm = json_object_get(ov, "serverMessages");
    c->want_status = c->want_report = true;
    if (sm) {
        c->want_status = c->want_report = false;
        size_t i;
        json_t *v;
        json_array_foreach(sm, i, v) {
            c->want_status = c->want_status || strcmp(json_string_value(v), "status-update") == 0;
            c->want_report = c->want_report || strcmp(json_string_value(v), "end-of-call-report") == 0;
        }
    }
    json_t *mp = json_object_get(ov, "monitorPlan");
    c->control_enabled = !json_is_false(json_object_get(mp, "controlEnabled"));
    c->listen_enabled = !json_is_false(json_object_get(mp, "listenEnabled"));
    json_t *jmax = json_object_get(ov, "maxDurationSeconds");
    double max_s = json_is_number(jmax) ? json_number_value(jmax) : DEFAULT_MAX_DURATION_S;
    c->max_ms = scaled(self, round_nonneg(max_s * 1000));
    if (!c->req || !c->messages || (url && !c->server_url) || (secret && !c->secret) ||
        (headers && !c->server_headers) || sb_vec_push(&self->calls, c) != 0) {
        call_free(c);
        json_decref(empty);
        nest_error(resp, 500, json_string("Internal server error"));
        return;
    }
    key->created++;
    bool blocked = false;
    if (over) {
        c->over_limit = true;
        snprintf(c->outcome.text, sizeof c->outcome.text, "over-limit:%s", mode_names[self->cfg.mode]);
        if (self->cfg.mode == MODE_BLOCKED) {
            blocked = true;
            end_call(self, c, CONCURRENCY_REASON, "concurrency");   // "arriving immediately"
        } else {
            c->next_ms = sb_mono_ms() + scaled(self, OVER_LIMIT_MS);
        }
    } else {
        c->outcome = next_outcome(self, number);
        c->silent_end = c->outcome.kind == OUT_LOST_END;
        c->counts = true;
        if (++key->active > key->peak) key->peak = key->active;
        c->next_ms = sb_mono_ms() + scaled(self, c->outcome.kind == OUT_FAIL ? FAIL_MS : RING_MS);
    }
    char masked[48];
    util_mask_phone(number, masked, sizeof masked);
    log_info(&self->log, "vapi_call_created", "id=%s number=%s outcome=%s active=%d limit=%d", c->id, masked,
             c->outcome.text, key->active, key->limit);
    json_t *out = call_json(self, c);
    if (out) json_object_set_new(out, "subscriptionLimits", subscription_limits(key, blocked));
    sb_respond_json(resp, 201, out);
    json_decref(empty);
}

static const char *const list_allowed[] = {"id", "assistantId", "phoneNumberId", "limit", "createdAtGt",
                                           "createdAtLt", "createdAtGe", "createdAtLe", "updatedAtGt", "updatedAtLt",
                                           "updatedAtGe", "updatedAtLe", NULL};

// GET /call: the key's calls, newest first, with VAPI's filters.
static void list_calls(vapi_t *self, vkey_t *key, const sb_request_t *req, sb_response_t *resp) {
    json_t *errors = json_array();
    check_unknown(errors, req->query, "", list_allowed);
    int64_t bounds[8];
    bool have[8] = {false};
    for (int i = 0; i < 8; i++) {
        const char *name = list_allowed[4 + i];
        const char *v = str_of(req->query, name);
        if (v && parse_iso8601(v, &bounds[i]) != 0)
            msg_add(errors, "%s must be a valid ISO 8601 date string", name);
        else
            have[i] = v != NULL;
    }
    int64_t limit = 100;
    const char *lim = str_of(req->query, "limit");
    if (lim) {
        char *end = NULL;
        double d = strtod(lim, &end);
        if (!*lim || *end)
            msg_add(errors, "limit must be a number conforming to the specified constraints");
        else if (d < 0)
            msg_add(errors, "limit must not be less than 0");
        else if (d > 1000)
            msg_add(errors, "limit must not be greater than 1000");
        else
            limit = (int64_t)d;
    }
    const char *id = str_of(req->query, "id"), *aid = str_of(req->query, "assistantId"),
               *pid = str_of(req->query, "phoneNumberId");
    if (json_array_size(errors) > 0) {
        nest_error(resp, 400, errors);
        return;
    }
    json_decref(errors);
    json_t *list = json_array();
    for (size_t i = self->calls.len; i-- > 0 && (int64_t)json_array_size(list) < limit;) {
        const call_t *c = self->calls.items[i];
        if (c->key != key) continue;
        if (id && strcmp(id, c->id) != 0) continue;
        if (aid && (!str_of(c->req, "assistantId") || strcmp(aid, str_of(c->req, "assistantId")) != 0)) continue;
        if (pid && (!str_of(c->req, "phoneNumberId") || strcmp(pid, str_of(c->req, "phoneNumberId")) != 0)) continue;
        int64_t at[2] = {c->created_us, c->updated_us};
        bool ok = true;
        for (int k = 0; k < 8 && ok; k++) {
            if (!have[k]) continue;
            int64_t v = at[k / 4], b = bounds[k];
            switch (k % 4) {
            case 0: ok = v > b; break;    // Gt
            case 1: ok = v < b; break;    // Lt
            case 2: ok = v >= b; break;   // Ge
            default: ok = v <= b; break;  // Le
            }
        }
        if (ok) json_array_append_new(list, call_json(self, c));
    }
    sb_respond_json(resp, 200, list);
}

// POST <monitor.controlUrl>: live call control.
static void control_call(vapi_t *self, const sb_request_t *req, sb_response_t *resp) {
    const char *rest = req->path + strlen("/vapi-control/");
    const char *slash = strchr(rest, '/');
    char id[48] = "";
    if (slash && (size_t)(slash - rest) < sizeof id) snprintf(id, sizeof id, "%.*s", (int)(slash - rest), rest);
    if (!slash || strcmp(slash, "/control") != 0 || strcmp(req->method, "POST") != 0) {
        nest_errorf(resp, 404, "Cannot %s %s", req->method, req->path);
        return;
    }
    call_t *c = find_call(self, id);
    if (!c || !c->control_enabled) {
        nest_error(resp, 404, json_string("Call not found"));
        return;
    }
    c->control_requests++;
    const json_t *body = json_is_object(req->json) ? req->json : NULL;
    const char *type = str_of(body, "type");
    static const char *const types[] = {"say", "add-message", "control", "end-call", "transfer", "handoff", NULL};
    if (!type || !in_list(types, type)) {
        json_t *m = json_array();
        msg_add(m, "type must be one of the following values: say, add-message, control, end-call, transfer, handoff");
        nest_error(resp, 400, m);
        return;
    }
    if (c->phase == PH_ENDED) {
        nest_error(resp, 400, json_string("Call has already ended"));
        return;
    }
    log_info(&self->log, "vapi_control", "id=%s type=%s", c->id, type);
    if (strcmp(type, "end-call") == 0)
        end_call(self, c, self->cfg.control_end_reason, "control");
    else if (strcmp(type, "say") == 0 && json_is_true(json_object_get(body, "endCallAfterSpoken")))
        end_call(self, c, "assistant-ended-call-after-message-spoken", "control");
    sb_respond_json(resp, 200, json_pack("{s:b}", "success", 1));
}

static bool vapi_owns(const char *path) {
    return strcmp(path, "/call") == 0 || starts_with(path, "/call/") || starts_with(path, "/vapi-control/");
}

static void vapi_handle(void *vself, const sb_request_t *req, sb_response_t *resp) {
    vapi_t *self = vself;
    const char *path = req->path;
    bool post = strcmp(req->method, "POST") == 0, get = strcmp(req->method, "GET") == 0;
    if (starts_with(path, "/vapi-control/")) {
        control_call(self, req, resp);
        return;
    }
    const char *id = starts_with(path, "/call/") ? path + 6 : NULL;
    if (!((post || get) && strcmp(path, "/call") == 0) && !(get && id && *id && !strchr(id, '/'))) {
        nest_errorf(resp, 404, "Cannot %s %s", req->method, path);
        return;
    }
    vkey_t *key = authorize(self, req, resp);
    if (!key) return;
    if (post) {
        create_call(self, key, req, resp);
    } else if (!id) {
        list_calls(self, key, req, resp);
    } else if (!is_uuid(id)) {
        nest_error(resp, 400, json_string("Validation failed (uuid is expected)"));
    } else {
        call_t *c = find_call(self, id);
        if (!c || c->key != key)
            nest_error(resp, 404, json_string("Call not found"));
        else
            sb_respond_json(resp, 200, call_json(self, c));
    }
}

static void vapi_fault(int status, sb_response_t *resp) {
    if (status == 429)
        nest_error(resp, 429, json_string("Rate limit exceeded"));
    else if (status >= 500)   // NestJS's body for an unhandled exception
        sb_respond_json(resp, status, json_pack("{s:i,s:s}", "statusCode", status, "message", "Internal server error"));
    else
        nest_error(resp, status, json_string("Injected fault (sandbox)."));
}

// ---- control API (/_sandbox/vapi/…) --------------------------------------------------------------
static json_t *settings_json(const settings_t *s) {
    return json_pack("{s:s,s:s,s:f,s:s?,s:b,s:b,s:i,s:s}", "concurrency_mode", mode_names[s->mode], "default_outcome",
                     s->default_outcome.text, "timescale", s->timescale, "server_url", s->server_url,
                     "webhook_secret_set", s->webhook_secret != NULL, "hmac_secret_set", s->hmac_secret != NULL,
                     "webhook_retries", s->webhook_retries, "control_end_reason", s->control_end_reason);
}

// A string setting that may be null (unset). 0, 1 (absent) or -1 (wrong type).
static int nullable_string(const json_t *body, const char *key, const char **out) {
    json_t *v = json_object_get(body, key);
    if (!v) return 1;
    if (json_is_null(v)) {
        *out = NULL;
        return 0;
    }
    if (!json_is_string(v) || !*json_string_value(v)) return -1;
    *out = json_string_value(v);
    return 0;
}

static void set_config(vapi_t *self, const json_t *body, sb_response_t *resp) {
    settings_t s = {0};
    if (settings_copy(&s, &self->cfg) != 0) {
        sb_respond_error(resp, 500, "out of memory");
        return;
    }
    json_t *jm = json_object_get(body, "concurrency_mode"), *jo = json_object_get(body, "default_outcome"),
           *jt = json_object_get(body, "timescale"), *jr = json_object_get(body, "webhook_retries"),
           *je = json_object_get(body, "control_end_reason");
    const char *err = NULL;
    if (jm) {
        const char *m = json_is_integer(jm) && json_integer_value(jm) == 400 ? "400" : json_string_value(jm);
        int found = -1;
        for (int i = 0; m && i < 3; i++)
            if (strcmp(m, mode_names[i]) == 0) found = i;
        if (found < 0) err = "concurrency_mode is \"400\", \"blocked\" or \"ended\"";
        else s.mode = (over_mode_t)found;
    }
    if (!err && jo && outcome_parse(json_string_value(jo), &s.default_outcome) != 0)
        err = "default_outcome is an outcome (answer:S, busy, no-answer, voicemail, fail, never-ends, stuck, "
              "lost-end:S, fault[:S])";
    if (!err && jt) {
        if (!json_is_number(jt) || json_number_value(jt) < 0.001 || json_number_value(jt) > 100)
            err = "timescale is a number in 0.001..100";
        else
            s.timescale = json_number_value(jt);
    }
    if (!err && jr) {
        if (!json_is_integer(jr) || json_integer_value(jr) < 0 || json_integer_value(jr) > 10)
            err = "webhook_retries is 0..10";
        else
            s.webhook_retries = (int)json_integer_value(jr);
    }
    if (!err && je) {
        const char *r = json_string_value(je);
        if (!r || !*r || strlen(r) >= sizeof s.control_end_reason)
            err = "control_end_reason is a non-empty string";
        else
            snprintf(s.control_end_reason, sizeof s.control_end_reason, "%s", r);
    }
    struct {
        const char *key;
        char **slot;
    } strings[] = {
        {"server_url", &s.server_url}, {"webhook_secret", &s.webhook_secret}, {"hmac_secret", &s.hmac_secret}};
    for (size_t i = 0; !err && i < 3; i++) {
        const char *v = NULL;
        int rc = nullable_string(body, strings[i].key, &v);
        if (rc < 0 || (rc == 0 && i == 0 && v && !sb_is_http_url(v))) {
            err = "server_url is an http(s) URL or null; webhook_secret and hmac_secret are strings or null";
        } else if (rc == 0) {
            free(*strings[i].slot);
            *strings[i].slot = v ? strdup(v) : NULL;
            if (v && !*strings[i].slot) err = "out of memory";
        }
    }
    if (err) {
        settings_free(&s);
        sb_respond_error(resp, 400, "%s", err);
        return;
    }
    settings_free(&self->cfg);
    self->cfg = s;
    log_info(&self->log, "vapi_config", "concurrency_mode=%s default_outcome=%s timescale=%g", mode_names[s.mode],
             s.default_outcome.text, s.timescale);
    sb_respond_json(resp, 200, settings_json(&self->cfg));
}

static void set_script(vapi_t *self, const json_t *body, sb_response_t *resp) {
    const char *number = str_of(body, "number");
    json_t *outcomes = json_object_get(body, "outcomes");
    if (!number || !*number || strlen(number) >= sizeof((script_t *)0)->number ||
        (outcomes && !json_is_array(outcomes) && !json_is_null(outcomes)) ||
        json_array_size(outcomes) > MAX_SCRIPT_STEPS) {
        sb_respond_error(resp, 400, "number is a string; outcomes an array of at most %d outcomes (or null)",
                         MAX_SCRIPT_STEPS);
        return;
    }
    script_t parsed = {0};
    snprintf(parsed.number, sizeof parsed.number, "%s", number);
    size_t i;
    json_t *v;
    json_array_foreach(outcomes, i, v) {
        if (outcome_parse(json_string_value(v), &parsed.steps[parsed.n++]) != 0) {
            sb_respond_error(resp, 400, "outcomes[%zu] is not an outcome (answer:S, busy, no-answer, voicemail, fail, "
                                        "never-ends, stuck, lost-end:S, fault[:S])", i);
            return;
        }
    }
    script_t *s = find_script(self, number);
    if (!s) {
        if (parsed.n == 0) {
            sb_respond_json(resp, 200, json_pack("{s:b,s:s,s:[]}", "ok", 1, "number", number, "outcomes"));
            return;
        }
        if (self->scripts.len >= MAX_SCRIPTS || !(s = malloc(sizeof *s)) || sb_vec_push(&self->scripts, s) != 0) {
            free(s);
            sb_respond_error(resp, 500, "out of memory or too many scripts");
            return;
        }
    }
    *s = parsed;   // a new script starts again from its first outcome
    json_t *list = json_array();
    for (size_t k = 0; k < s->n; k++) json_array_append_new(list, json_string(s->steps[k].text));
    sb_respond_json(resp, 200, json_pack("{s:b,s:s,s:o}", "ok", 1, "number", number, "outcomes", list));
}

static json_t *stats_json(const vapi_t *self) {
    json_t *keys = json_array();
    for (size_t i = 0; i < self->keys.len; i++) {
        const vkey_t *k = self->keys.items[i];
        char suffix[8];
        key_suffix(k->key, suffix);
        json_array_append_new(keys, json_pack("{s:s,s:s,s:i,s:i,s:i,s:i,s:i,s:b}", "key_suffix", suffix, "org_id",
                                              k->org_id, "limit", k->limit, "active", k->active, "peak", k->peak,
                                              "created", k->created, "rejected", k->rejected, "from_option",
                                              k->from_option));
    }
    return json_pack("{s:o}", "keys", keys);
}

static bool path_id(const char *path, const char *prefix, const char *suffix, char *out, size_t size) {
    size_t pl = strlen(prefix), sl = strlen(suffix), n = strlen(path);
    if (n <= pl + sl || strncmp(path, prefix, pl) != 0 || strcmp(path + n - sl, suffix) != 0) return false;
    size_t idl = n - pl - sl;
    if (idl >= size || memchr(path + pl, '/', idl)) return false;
    memcpy(out, path + pl, idl);
    out[idl] = '\0';
    return true;
}

static void vapi_control(void *vself, const char *sub, const sb_request_t *req, sb_response_t *resp) {
    vapi_t *self = vself;
    bool post = strcmp(req->method, "POST") == 0;
    json_t *empty = json_object();
    const json_t *body = json_is_object(req->json) ? req->json : empty;
    char id[64];
    if (post && req->body_len > 0 && !json_is_object(req->json)) {
        sb_respond_error(resp, 400, "the body must be a JSON object");
    } else if (post && strcmp(sub, "/keys") == 0) {
        const char *key = str_of(body, "key");
        json_t *jl = json_object_get(body, "limit");
        if (!key || !*key || strlen(key) > 200 || strpbrk(key, " \t\r\n") ||
            (jl && (!json_is_integer(jl) || json_integer_value(jl) < 0 || json_integer_value(jl) > 100000))) {
            sb_respond_error(resp, 400, "key is a string without spaces; limit 0..100000 (default %d)",
                             VAPI_DEFAULT_LIMIT);
        } else {
            vkey_t *k = add_key(self, key, jl ? (int)json_integer_value(jl) : VAPI_DEFAULT_LIMIT, false);
            char suffix[8];
            if (!k) {
                sb_respond_error(resp, 500, "out of memory or too many keys");
            } else {
                key_suffix(k->key, suffix);
                sb_respond_json(resp, 200, json_pack("{s:b,s:s,s:s,s:i}", "ok", 1, "key_suffix", suffix, "org_id",
                                                     k->org_id, "limit", k->limit));
            }
        }
    } else if (!post && (strcmp(sub, "/stats") == 0 || strcmp(sub, "/keys") == 0)) {
        sb_respond_json(resp, 200, stats_json(self));
    } else if (strcmp(sub, "/config") == 0) {
        if (post)
            set_config(self, body, resp);
        else
            sb_respond_json(resp, 200, settings_json(&self->cfg));
    } else if (post && strcmp(sub, "/script") == 0) {
        set_script(self, body, resp);
    } else if (!post && strcmp(sub, "/scripts") == 0) {
        json_t *list = json_array();
        for (size_t i = 0; i < self->scripts.len; i++) {
            const script_t *s = self->scripts.items[i];
            json_t *steps = json_array();
            for (size_t k = 0; k < s->n; k++) json_array_append_new(steps, json_string(s->steps[k].text));
            json_array_append_new(list, json_pack("{s:s,s:o,s:I}", "number", s->number, "outcomes", steps, "used",
                                                  (json_int_t)s->used));
        }
        sb_respond_json(resp, 200, json_pack("{s:o}", "scripts", list));
    } else if (!post && strcmp(sub, "/calls") == 0) {
        const char *number = str_of(req->query, "number");
        json_t *list = json_array();
        for (size_t i = 0; i < self->calls.len; i++) {
            const call_t *c = self->calls.items[i];
            if (number && *number && strcmp(number, c->number) != 0) continue;
            json_array_append_new(list, call_view(self, c));
        }
        sb_respond_json(resp, 200, json_pack("{s:o}", "calls", list));
    } else if (!post && path_id(sub, "/calls/", "", id, sizeof id)) {
        call_t *c = find_call(self, id);
        if (!c)
            sb_respond_error(resp, 404, "no such call: %s", id);
        else
            sb_respond_json(resp, 200,
                            json_pack("{s:o,s:o}", "sandbox", call_view(self, c), "call", call_json(self, c)));
    } else if (post && path_id(sub, "/calls/", "/end", id, sizeof id)) {
        call_t *c = find_call(self, id);
        const char *reason = str_of(body, "reason");
        json_t *silent = json_object_get(body, "silent");
        if (!c) {
            sb_respond_error(resp, 404, "no such call: %s", id);
        } else if ((json_object_get(body, "reason") && (!reason || !*reason || strlen(reason) >= 80)) ||
                   (silent && !json_is_boolean(silent))) {
            sb_respond_error(resp, 400, "reason is a non-empty string; silent a boolean");
        } else if (c->phase == PH_ENDED) {
            sb_respond_error(resp, 409, "the call has already ended");
        } else {
            if (json_is_true(silent)) c->silent_end = true;
            end_call(self, c, reason ? reason : "customer-ended-call", "sandbox");
            sb_respond_json(resp, 200, json_pack("{s:b,s:o}", "ok", 1, "call", call_view(self, c)));
        }
    } else {
        sb_respond_error(resp, 404, "unknown control path /_sandbox/vapi%s", sub);
    }
    json_decref(empty);
}

// ---- lifecycle -----------------------------------------------------------------------------------
static void vapi_reset(void *vself) {
    vapi_t *self = vself;
    sb_vec_clear(&self->calls, call_free);
    sb_vec_clear(&self->scripts, free);
    for (size_t i = 0; i < self->keys.len;) {
        vkey_t *k = self->keys.items[i];
        if (!k->from_option) {
            key_free(k);
            sb_vec_remove(&self->keys, i);
            continue;
        }
        k->active = k->peak = k->created = k->rejected = 0;
        i++;
    }
    if (settings_copy(&self->cfg, &self->initial) != 0) log_error(&self->log, "vapi_reset", "reason=out_of_memory");
}

vapi_t *vapi_new(const vapi_config_t *cfg, char *error, size_t error_size) {
    if (error_size) error[0] = '\0';
    settings_t s = {.mode = MODE_400, .timescale = 1, .webhook_retries = 0};
    snprintf(s.control_end_reason, sizeof s.control_end_reason, "%s", DEFAULT_CONTROL_END_REASON);
    outcome_parse("answer:2", &s.default_outcome);
    const char *bad = NULL;
    if (cfg->concurrency_mode) {
        int found = -1;
        for (int i = 0; i < 3; i++)
            if (strcmp(cfg->concurrency_mode, mode_names[i]) == 0) found = i;
        if (found < 0) bad = "--vapi-concurrency-mode is 400, blocked or ended";
        s.mode = found < 0 ? MODE_400 : (over_mode_t)found;
    }
    if (!bad && cfg->default_outcome && outcome_parse(cfg->default_outcome, &s.default_outcome) != 0)
        bad = "--vapi-default-outcome is answer:S, busy, no-answer, voicemail, fail, never-ends, stuck, lost-end:S "
              "or fault[:S]";
    if (!bad && cfg->timescale) {
        char *end = NULL;
        double t = strtod(cfg->timescale, &end);
        if (!*cfg->timescale || *end || !(t >= 0.001 && t <= 100))
            bad = "--vapi-timescale is a number in 0.001..100";
        else
            s.timescale = t;
    }
    int64_t retries = 0;
    if (!bad && cfg->webhook_retries && util_parse_int64(cfg->webhook_retries, 0, 10, &retries) != 0)
        bad = "--vapi-webhook-retries is 0..10";
    s.webhook_retries = (int)retries;
    if (!bad && cfg->server_url && *cfg->server_url && !sb_is_http_url(cfg->server_url))
        bad = "--vapi-server-url must be an http(s) URL";
    if (bad) {
        snprintf(error, error_size, "%s", bad);
        return NULL;
    }
    vapi_t *self = calloc(1, sizeof *self);
    if (!self) return NULL;
    self->cfg = s;
    self->webhooks = cfg->webhooks;
    self->log = cfg->log;
    self->public_url = strdup(cfg->public_url ? cfg->public_url : "");
    self->cfg.server_url = cfg->server_url && *cfg->server_url ? strdup(cfg->server_url) : NULL;
    self->cfg.webhook_secret = cfg->webhook_secret && *cfg->webhook_secret ? strdup(cfg->webhook_secret) : NULL;
    self->cfg.hmac_secret = cfg->hmac_secret && *cfg->hmac_secret ? strdup(cfg->hmac_secret) : NULL;
    bool ok = self->public_url && (!cfg->server_url || !*cfg->server_url || self->cfg.server_url) &&
              (!cfg->webhook_secret || !*cfg->webhook_secret || self->cfg.webhook_secret) &&
              (!cfg->hmac_secret || !*cfg->hmac_secret || self->cfg.hmac_secret) &&
              settings_copy(&self->initial, &self->cfg) == 0;
    for (size_t i = 0; ok && i < cfg->n_keys; i++) ok = add_key_specs(self, cfg->keys[i], error, error_size) == 0;
    if (!ok) {
        vapi_destroy(&self);
        return NULL;
    }
    return self;
}

void vapi_destroy(vapi_t **self_p) {
    vapi_t *self = *self_p;
    if (!self) return;
    sb_vec_clear(&self->calls, call_free);
    sb_vec_clear(&self->scripts, free);
    sb_vec_clear(&self->keys, key_free);
    settings_free(&self->cfg);
    settings_free(&self->initial);
    free(self->public_url);
    free(self);
    *self_p = NULL;
}

sb_provider_t vapi_provider(vapi_t *self) {
    return (sb_provider_t){.name = "vapi",
                           .owns = vapi_owns,
                           .handle = vapi_handle,
                           .control = vapi_control,
                           .fault = vapi_fault,
                           .tick = NULL,
                           .next_due_ms = vapi_next_due_ms,
                           .run_due = vapi_run_due,
                           .reset = vapi_reset,
                           .self = self};
}
