// sandbox/main.c — sweety-sandbox: simulates the providers (Stripe, Cryptomus, VAPI) for the tests
// and the demo. sweetyd reaches it only through its configurable api_base URLs, so
// this program speaks the providers' real HTTP APIs and checks our requests as they would.
//
// This file owns the process: options (command line or SANDBOX_* environment), the libwebsockets
// HTTP server, routing, the per-connection state machine (read body, answer, answer late, drop)
// and shutdown. It is the only file that touches lws; the providers and the control API are
// plain functions of an sb_request_t (exchange.h).
//
// Threads: the lws service thread (main) runs everything except webhook deliveries, which run on
// the delivery thread of webhooks.c and never call lws. SIGTERM/SIGINT are blocked in every
// thread and read from a signalfd adopted into the lws loop, so shutdown happens on the service
// thread without a global flag.
//
// Routing: "/_sandbox/…" is the control API (loopback peers only). Any other path belongs to the
// first provider whose `owns` accepts it, or to the provider named by a "/<name>" mount prefix
// (so stripe.api_base may be "http://127.0.0.1:PORT/stripe"). Before a provider sees a request,
// the fault rules are consulted (control.h): answer with an error status, answer late (the
// connection waits on an lws_sul timer while the loop keeps serving others), or close.
//
// Timers: a once-a-second tick (expiries), and one more lws_sul that fires when the earliest
// provider timeline step is due (VAPI's calls); it is re-armed after every request and every run.
#include <errno.h>
#include <getopt.h>
#include <libwebsockets.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <curl/curl.h>

#include "common/log.h"
#include "common/util.h"
#include "sandbox/control.h"
#include "sandbox/cryptomus.h"
#include "sandbox/exchange.h"
#include "sandbox/sbutil.h"
#include "sandbox/stripe.h"
#include "sandbox/vapi.h"
#include "sandbox/webhooks.h"

#define SANDBOX_VERSION "0.1.0"
#define MAX_PROVIDERS 4
#define WRITE_CHUNK 16384
#define MAX_VAPI_KEY_OPTIONS 64

// ---- options -------------------------------------------------------------------------------------
typedef struct {
    char *listen, *public_url;
    char *stripe_secret_key, *stripe_webhook_secret, *stripe_webhook_url, *stripe_api_version, *stripe_refund_status;
    char *cryptomus_merchant, *cryptomus_payment_key;
    char *webhook_retry_ms, *webhook_timeout_ms, *webhook_concurrency;
    char *vapi_key;   // the environment's value; the command line's go to vapi_keys
    char *vapi_server_url, *vapi_webhook_secret, *vapi_hmac_secret, *vapi_webhook_retries;
    char *vapi_concurrency_mode, *vapi_default_outcome, *vapi_timescale;
    char *log_level;
    const char *vapi_keys[MAX_VAPI_KEY_OPTIONS];   // every --vapi-key (repeatable), or the environment's
    size_t n_vapi_keys;
} options_t;

typedef struct {
    const char *name;   // long option; the environment variable is SANDBOX_<NAME> with '-' as '_'
    size_t offset;      // of the char* in options_t
    const char *help;
} option_spec_t;

#define OPT(field) offsetof(options_t, field)
static const option_spec_t option_specs[] = {
    {"listen", OPT(listen), "HOST:PORT to listen on (default 127.0.0.1:12111)"},
    {"public-url", OPT(public_url), "base URL of the hosted pages (default http://HOST:PORT)"},
    {"stripe-secret-key", OPT(stripe_secret_key), "required: the sk_test_... key requests must carry"},
    {"stripe-webhook-secret", OPT(stripe_webhook_secret), "required: whsec_... signing secret for events"},
    {"stripe-webhook-url", OPT(stripe_webhook_url), "where Stripe events are POSTed (none: recorded only)"},
    {"stripe-api-version", OPT(stripe_api_version), "api_version of events (default " STRIPE_DEFAULT_API_VERSION ")"},
    {"stripe-refund-status", OPT(stripe_refund_status), "succeeded (default) or pending"},
    {"cryptomus-merchant", OPT(cryptomus_merchant), "required: merchant uuid expected in the merchant header"},
    {"cryptomus-payment-key", OPT(cryptomus_payment_key), "required: payment API key (request and webhook signs)"},
    {"webhook-retry-ms", OPT(webhook_retry_ms), "delays before each retry, comma-separated (default 500,1000,2000)"},
    {"webhook-timeout-ms", OPT(webhook_timeout_ms), "per delivery attempt (default 10000)"},
    {"webhook-concurrency", OPT(webhook_concurrency), "deliveries in flight at once (default 1: keeps the order)"},
    {"vapi-key", OPT(vapi_key), "KEY[:LIMIT] a VAPI private key and its concurrency limit (default 10); repeatable"},
    {"vapi-server-url", OPT(vapi_server_url), "where VAPI messages go when a call names no server.url"},
    {"vapi-webhook-secret", OPT(vapi_webhook_secret), "X-Vapi-Secret of messages when a call names no server.secret"},
    {"vapi-hmac-secret", OPT(vapi_hmac_secret), "also sign messages: x-timestamp (ms), x-signature (hex HMAC-SHA256)"},
    {"vapi-webhook-retries", OPT(vapi_webhook_retries), "retries of a failed VAPI message (default 0, as VAPI)"},
    {"vapi-concurrency-mode", OPT(vapi_concurrency_mode), "over the limit: 400 (default), blocked or ended"},
    {"vapi-default-outcome", OPT(vapi_default_outcome), "timeline of unscripted calls (default answer:2)"},
    {"vapi-timescale", OPT(vapi_timescale), "multiplies every VAPI duration (default 1)"},
    {"log-level", OPT(log_level), "debug, info (default), warn, error"},
};
#define N_OPTIONS (sizeof option_specs / sizeof option_specs[0])

static char **option_slot(options_t *o, size_t i) { return (char **)((char *)o + option_specs[i].offset); }

static void usage(FILE *out) {
    fprintf(out, "usage: sweety-sandbox [--OPTION VALUE]...\n\nEvery option can also be given as the environment "
                 "variable SANDBOX_<OPTION> (upper case, '-' as '_');\nthe command line wins.\n\n");
    for (size_t i = 0; i < N_OPTIONS; i++) fprintf(out, "  --%-24s %s\n", option_specs[i].name, option_specs[i].help);
    fprintf(out, "  --%-24s %s\n  --%-24s %s\n", "help", "this text", "version", "print the version");
}

// "stripe-secret-key" -> "SANDBOX_STRIPE_SECRET_KEY"
static void env_name(const char *option, char *out, size_t size) {
    size_t k = (size_t)snprintf(out, size, "SANDBOX_");
    for (const char *s = option; *s && k < size - 1; s++)
        out[k++] = *s == '-' ? '_' : (char)(*s >= 'a' && *s <= 'z' ? *s - 32 : *s);
    out[k] = '\0';
}

// Environment first, then the command line. Returns 0, 1 (help/version printed) or 2 (bad usage).
static int options_parse(options_t *o, int argc, char **argv) {
    for (size_t i = 0; i < N_OPTIONS; i++) {
        char env[64];
        env_name(option_specs[i].name, env, sizeof env);
        const char *v = getenv(env);
        if (v && *v) *option_slot(o, i) = (char *)v;
    }
    if (o->vapi_key) o->vapi_keys[o->n_vapi_keys++] = o->vapi_key;   // "K1:2,K2" in one variable
    bool cli_keys = false;
    struct option longopts[N_OPTIONS + 3];
    for (size_t i = 0; i < N_OPTIONS; i++) longopts[i] = (struct option){option_specs[i].name, required_argument, NULL, (int)i};
    longopts[N_OPTIONS] = (struct option){"help", no_argument, NULL, 'h'};
    longopts[N_OPTIONS + 1] = (struct option){"version", no_argument, NULL, 'V'};
    longopts[N_OPTIONS + 2] = (struct option){NULL, 0, NULL, 0};
    int c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        if (c == 'h') {
            usage(stdout);
            return 1;
        }
        if (c == 'V') {
            printf("sweety-sandbox %s\n", SANDBOX_VERSION);
            return 1;
        }
        if (c < 0 || (size_t)c >= N_OPTIONS) {
            fprintf(stderr, "sweety-sandbox: unknown option or missing value: %s\n", argv[optind - 1]);
            usage(stderr);
            return 2;
        }
        if (option_specs[c].offset == OPT(vapi_key)) {   // repeatable: the command line's replace the environment's
            if (!cli_keys) o->n_vapi_keys = 0;
            cli_keys = true;
            if (o->n_vapi_keys >= MAX_VAPI_KEY_OPTIONS) {
                fprintf(stderr, "sweety-sandbox: at most %d --%s\n", MAX_VAPI_KEY_OPTIONS, option_specs[c].name);
                return 2;
            }
            o->vapi_keys[o->n_vapi_keys++] = optarg;
        }
        *option_slot(o, (size_t)c) = optarg;
    }
    if (optind < argc) {
        fprintf(stderr, "sweety-sandbox: unexpected argument: %s\n", argv[optind]);
        return 2;
    }
    return 0;
}

// ---- process state -------------------------------------------------------------------------------
typedef struct {
    struct lws_context *context;
    logger_t log;
    webhooks_t *webhooks;
    stripe_t *stripe;
    cryptomus_t *cryptomus;
    vapi_t *vapi;
    control_t *control;
    sb_provider_t providers[MAX_PROVIDERS];   // asked in this order
    size_t n_providers;
    lws_sorted_usec_list_t tick;
    lws_sorted_usec_list_t timers;   // the providers' next timeline step
    bool stop;
} app_t;

// One HTTP connection's current exchange (lws allocates it; zeroed between exchanges).
typedef struct {
    struct lws *wsi;
    sb_request_t req;
    sb_response_t resp;
    const char *route;    // provider name, "control" or "none", for the log line
    sb_fault_t fault;
    bool active;          // an exchange started and was not finished
    bool too_large;
    bool answered;        // resp is final: write it when writable
    bool drop_now;        // close instead of writing
    bool headers_sent;
    size_t body_off;
    int64_t started_ms;
    lws_sorted_usec_list_t sul;   // answers late (delay faults)
} pss_t;

static void pss_reset(pss_t *pss) {
    lws_sul_cancel(&pss->sul);
    sb_request_clear(&pss->req);
    sb_response_clear(&pss->resp);
    struct lws *wsi = pss->wsi;
    memset(pss, 0, sizeof *pss);
    pss->wsi = wsi;
}

// Copies a path or value for a log line: at most 200 bytes, anything unusual as '?'.
static void log_safe(const char *in, char *out, size_t size) {
    size_t i = 0;
    for (; in && in[i] && i < size - 1 && i < 200; i++)
        out[i] = (in[i] > ' ' && in[i] < 0x7f && in[i] != '"') ? in[i] : '?';
    out[i] = '\0';
}

static void log_exchange(app_t *app, pss_t *pss, int status, const char *outcome) {
    char path[208];
    log_safe(pss->req.path, path, sizeof path);
    const char *fault = !pss->fault.active ? "" : pss->fault.drop ? " fault=drop" : pss->fault.status ? " fault=status" : " fault=delay";
    log_info(&app->log, "request", "route=%s method=%s path=%s status=%d ms=%lld request_id=%s%s%s%s",
             pss->route ? pss->route : "none", pss->req.method[0] ? pss->req.method : "?", path, status,
             (long long)(sb_mono_ms() - pss->started_ms), pss->req.request_id, fault, outcome ? " outcome=" : "",
             outcome ? outcome : "");
}

// ---- reading the request -------------------------------------------------------------------------
static char *header_dup(struct lws *wsi, enum lws_token_indexes token) {
    int n = lws_hdr_total_length(wsi, token);
    if (n <= 0) return NULL;
    char *buf = malloc((size_t)n + 1);
    if (buf && lws_hdr_copy(wsi, buf, n + 1, token) < 0) {
        free(buf);
        buf = NULL;
    }
    return buf;
}

static char *custom_header_dup(struct lws *wsi, const char *name_colon) {
    int nlen = (int)strlen(name_colon);
    int n = lws_hdr_custom_length(wsi, name_colon, nlen);
    if (n < 0) return NULL;
    char *buf = malloc((size_t)n + 1);
    if (buf && lws_hdr_custom_copy(wsi, buf, n + 1, name_colon, nlen) < 0) {
        free(buf);
        buf = NULL;
    }
    return buf;
}

// lws has already split and decoded the query arguments; "a[]" keys get indexes as in forms.
static json_t *read_query(struct lws *wsi) {
    json_t *q = json_object();
    char frag[2048];
    for (int i = 0; q; i++) {
        int n = lws_hdr_copy_fragment(wsi, frag, sizeof frag, WSI_TOKEN_HTTP_URI_ARGS, i);
        if (n < 0) break;
        char *eq = strchr(frag, '=');
        if (eq) *eq = '\0';
        if (!frag[0]) continue;
        char key[2100];
        size_t kl = strlen(frag);
        if (kl >= 2 && strcmp(frag + kl - 2, "[]") == 0) {
            for (int k = 0;; k++) {
                snprintf(key, sizeof key, "%.*s[%d]", (int)(kl - 2), frag, k);
                if (!json_object_get(q, key)) break;
            }
        } else {
            snprintf(key, sizeof key, "%s", frag);
        }
        json_object_set_new(q, key, json_string(eq ? eq + 1 : ""));
    }
    return q;
}

static const struct {
    enum lws_token_indexes token;
    const char *name;
} methods[] = {{WSI_TOKEN_GET_URI, "GET"},     {WSI_TOKEN_POST_URI, "POST"},   {WSI_TOKEN_PUT_URI, "PUT"},
               {WSI_TOKEN_PATCH_URI, "PATCH"}, {WSI_TOKEN_DELETE_URI, "DELETE"}, {WSI_TOKEN_OPTIONS_URI, "OPTIONS"},
               {WSI_TOKEN_HEAD_URI, "HEAD"}};

static bool is_loopback(struct lws *wsi) {
    char peer[128] = "";
    lws_get_peer_simple(wsi, peer, sizeof peer);
    return strncmp(peer, "127.", 4) == 0 || strcmp(peer, "::1") == 0 || strncmp(peer, "::ffff:127.", 11) == 0;
}

// Fills pss->req from the request line and headers. 0, or -1 when out of memory.
static int read_request(pss_t *pss, struct lws *wsi, const char *uri) {
    sb_request_t *req = &pss->req;
    snprintf(req->method, sizeof req->method, "?");
    for (size_t i = 0; i < sizeof methods / sizeof methods[0]; i++)
        if (lws_hdr_total_length(wsi, methods[i].token) > 0) snprintf(req->method, sizeof req->method, "%s", methods[i].name);
    req->path = strdup(uri && *uri ? uri : "/");
    req->query = read_query(wsi);
    req->authorization = header_dup(wsi, WSI_TOKEN_HTTP_AUTHORIZATION);
    req->content_type = header_dup(wsi, WSI_TOKEN_HTTP_CONTENT_TYPE);
    req->idempotency_key = custom_header_dup(wsi, "idempotency-key:");
    req->stripe_version = custom_header_dup(wsi, "stripe-version:");
    req->merchant = custom_header_dup(wsi, "merchant:");
    req->sign = custom_header_dup(wsi, "sign:");
    req->loopback = is_loopback(wsi);
    sb_random_id("req_", 14, req->request_id, sizeof req->request_id);
    return req->path && req->query ? 0 : -1;
}

// ---- answering -----------------------------------------------------------------------------------
static const sb_provider_t *route_provider(app_t *app, sb_request_t *req) {
    for (size_t i = 0; i < app->n_providers; i++) {   // explicit mount: "/stripe/v1/…"
        size_t n = strlen(app->providers[i].name);
        if (req->path[0] == '/' && strncmp(req->path + 1, app->providers[i].name, n) == 0 && req->path[n + 1] == '/') {
            memmove(req->path, req->path + n + 1, strlen(req->path + n + 1) + 1);
            return &app->providers[i];
        }
    }
    for (size_t i = 0; i < app->n_providers; i++)
        if (app->providers[i].owns(req->path)) return &app->providers[i];
    return NULL;
}

static void on_delay_done(lws_sorted_usec_list_t *sul) {
    pss_t *pss = lws_container_of(sul, pss_t, sul);
    if (pss->fault.drop) pss->drop_now = true;
    pss->answered = true;
    lws_callback_on_writable(pss->wsi);
}

// The request is complete: decide the answer (runs the provider unless a fault says otherwise).
// Returns what the lws callback must return.
static int dispatch(app_t *app, pss_t *pss) {
    sb_request_t *req = &pss->req;
    sb_response_t *resp = &pss->resp;
    if (pss->too_large) {
        pss->route = "none";
        sb_respond_error(resp, 413, "request body larger than %d bytes", SB_BODY_MAX);
    } else {
        sb_request_decode_body(req);
        if (strcmp(req->path, "/_sandbox") == 0 || strncmp(req->path, "/_sandbox/", 10) == 0) {
            pss->route = "control";
            if (!req->loopback)
                sb_respond_error(resp, 403, "the control API answers loopback clients only");
            else
                control_handle(app->control, req, resp);
        } else {
            const sb_provider_t *p = route_provider(app, req);
            if (!p) {
                pss->route = "none";
                sb_respond_error(resp, 404, "no simulated provider serves this path");
            } else {
                pss->route = p->name;
                pss->fault = control_take_fault(app->control, p->name, req);
                req->delay_ms = pss->fault.delay_ms;
                bool execute = !(pss->fault.status || pss->fault.drop) || pss->fault.after;
                if (execute) p->handle(p->self, req, resp);
                if (pss->fault.status) {
                    sb_response_clear(resp);
                    p->fault(pss->fault.status, resp);
                }
                control_record(app->control, p->name, req, pss->fault.drop ? 0 : resp->status, &pss->fault);
            }
        }
    }
    if (resp->status == 0) sb_respond_error(resp, 500, "no answer");
    sb_response_header(resp, "Request-Id", req->request_id);
    if (pss->fault.delay_ms > 0) {
        lws_set_timeout(pss->wsi, NO_PENDING_TIMEOUT, 0);
        lws_sul_schedule(app->context, 0, &pss->sul, on_delay_done, pss->fault.delay_ms * LWS_US_PER_MS);
        return 0;
    }
    if (pss->fault.drop) {
        log_exchange(app, pss, 0, "dropped");
        pss_reset(pss);
        return -1;
    }
    pss->answered = true;
    lws_callback_on_writable(pss->wsi);
    return 0;
}

// ---- provider timelines (service thread) ---------------------------------------------------------
static void on_timers(lws_sorted_usec_list_t *sul);

// Schedules `timers` for the earliest step any provider has due (or leaves it idle).
static void rearm_timers(app_t *app) {
    int64_t next = -1;
    for (size_t i = 0; i < app->n_providers; i++) {
        if (!app->providers[i].next_due_ms) continue;
        int64_t due = app->providers[i].next_due_ms(app->providers[i].self);
        if (due >= 0 && (next < 0 || due < next)) next = due;
    }
    lws_sul_cancel(&app->timers);
    if (next < 0 || !app->context) return;
    int64_t delay = next - sb_mono_ms();
    if (delay < 0) delay = 0;
    lws_sul_schedule(app->context, 0, &app->timers, on_timers, (lws_usec_t)delay * LWS_US_PER_MS);
}

static void on_timers(lws_sorted_usec_list_t *sul) {
    app_t *app = lws_container_of(sul, app_t, timers);
    int64_t now = sb_mono_ms();
    for (size_t i = 0; i < app->n_providers; i++)
        if (app->providers[i].run_due) app->providers[i].run_due(app->providers[i].self, now);
    rearm_timers(app);
}

// Writes the headers, then the body in chunks, one lws_write per WRITEABLE callback.
static int write_response(app_t *app, pss_t *pss) {
    struct lws *wsi = pss->wsi;
    sb_response_t *resp = &pss->resp;
    if (!pss->answered) return 0;
    if (pss->drop_now) {
        log_exchange(app, pss, 0, "dropped");
        pss_reset(pss);
        return -1;
    }
    if (!pss->headers_sent) {
        unsigned char buf[LWS_PRE + 4096];
        unsigned char *start = buf + LWS_PRE, *p = start, *end = buf + sizeof buf - 1;
        if (lws_add_http_common_headers(wsi, (unsigned int)resp->status,
                                        resp->content_type ? resp->content_type : "text/plain", resp->body_len, &p, end))
            return -1;
        for (int i = 0; i < resp->n_headers; i++) {
            char name[64];
            size_t k = 0;
            for (const char *s = resp->headers[i].name; *s && k < sizeof name - 2; s++)
                name[k++] = (char)(*s >= 'A' && *s <= 'Z' ? *s + 32 : *s);
            name[k++] = ':';
            name[k] = '\0';
            const char *v = resp->headers[i].value;
            if (lws_add_http_header_by_name(wsi, (const unsigned char *)name, (const unsigned char *)v, (int)strlen(v),
                                            &p, end))
                return -1;
        }
        if (lws_finalize_write_http_header(wsi, start, &p, end)) return -1;
        pss->headers_sent = true;
        if (resp->body_len > 0) {
            lws_callback_on_writable(wsi);
            return 0;
        }
    } else if (pss->body_off < resp->body_len) {
        unsigned char buf[LWS_PRE + WRITE_CHUNK];
        size_t n = resp->body_len - pss->body_off;
        if (n > WRITE_CHUNK) n = WRITE_CHUNK;
        memcpy(buf + LWS_PRE, resp->body + pss->body_off, n);
        bool last = pss->body_off + n == resp->body_len;
        if (lws_write(wsi, buf + LWS_PRE, n, last ? LWS_WRITE_HTTP_FINAL : LWS_WRITE_HTTP) != (int)n) return -1;
        pss->body_off += n;
        if (!last) {
            lws_callback_on_writable(wsi);
            return 0;
        }
    }
    log_exchange(app, pss, resp->status, NULL);
    pss_reset(pss);
    return lws_http_transaction_completed(wsi) ? -1 : 0;
}

static int callback_http(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len) {
    pss_t *pss = user;
    app_t *app = lws_context_user(lws_get_context(wsi));
    switch (reason) {
    case LWS_CALLBACK_HTTP: {
        pss_reset(pss);
        pss->wsi = wsi;
        pss->active = true;
        pss->started_ms = sb_mono_ms();
        if (read_request(pss, wsi, in) != 0) return -1;
        char *cl_text = header_dup(wsi, WSI_TOKEN_HTTP_CONTENT_LENGTH);
        int64_t content_length = 0;
        bool bad_length = cl_text && util_parse_int64(cl_text, 0, INT64_MAX, &content_length) != 0;
        free(cl_text);
        if (bad_length || (!cl_text && lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_TRANSFER_ENCODING) > 0)) {
            pss->route = "none";
            sb_respond_error(&pss->resp, bad_length ? 400 : 411, "a request body needs a valid Content-Length");
            sb_response_header(&pss->resp, "Request-Id", pss->req.request_id);
            pss->answered = true;
            lws_callback_on_writable(wsi);
            return 0;
        }
        if (content_length > 0) return 0;   // the body follows: LWS_CALLBACK_HTTP_BODY…
        int rc = dispatch(app, pss);
        rearm_timers(app);
        return rc;
    }
    case LWS_CALLBACK_HTTP_BODY:
        if (!pss->active || pss->answered || pss->too_large || len == 0) return 0;
        if (pss->req.body_len + len > SB_BODY_MAX) {
            pss->too_large = true;   // keep reading, discard, answer 413 at the end
            return 0;
        }
        {
            char *bigger = realloc(pss->req.body, pss->req.body_len + len + 1);
            if (!bigger) return -1;
            pss->req.body = bigger;
            memcpy(pss->req.body + pss->req.body_len, in, len);
            pss->req.body_len += len;
            pss->req.body[pss->req.body_len] = '\0';
        }
        return 0;
    case LWS_CALLBACK_HTTP_BODY_COMPLETION: {
        if (!pss->active || pss->answered) return 0;
        int rc = dispatch(app, pss);
        rearm_timers(app);
        return rc;
    }
    case LWS_CALLBACK_HTTP_WRITEABLE:
        if (!pss->active) return 0;
        return write_response(app, pss);
    case LWS_CALLBACK_HTTP_DROP_PROTOCOL:
    case LWS_CALLBACK_CLOSED_HTTP:
        if (pss && pss->active) {
            if (!pss->headers_sent) log_exchange(app, pss, 0, "client_closed");
            pss_reset(pss);
        }
        return 0;
    default:
        break;
    }
    return lws_callback_http_dummy(wsi, reason, user, in, len);
}

// ---- signals and the once-a-second tick ----------------------------------------------------------
static int callback_signals(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len) {
    (void)user;
    (void)in;
    (void)len;
    if (reason == LWS_CALLBACK_RAW_RX_FILE) {
        app_t *app = lws_context_user(lws_get_context(wsi));
        struct signalfd_siginfo si;
        ssize_t n = read(lws_get_socket_fd(wsi), &si, sizeof si);
        if (n == (ssize_t)sizeof si) {
            log_info(&app->log, "signal", "signal=%s", strsignal((int)si.ssi_signo));
            app->stop = true;
        }
    }
    return 0;
}

static void on_tick(lws_sorted_usec_list_t *sul) {
    app_t *app = lws_container_of(sul, app_t, tick);
    int64_t now = sb_now_s();
    for (size_t i = 0; i < app->n_providers; i++)
        if (app->providers[i].tick) app->providers[i].tick(app->providers[i].self, now);
    lws_sul_schedule(app->context, 0, &app->tick, on_tick, LWS_US_PER_SEC);
    rearm_timers(app);
}

static const struct lws_protocols protocols[] = {
    {"http", callback_http, sizeof(pss_t), 0, 0, NULL, 0},
    {"sb-signals", callback_signals, 0, 0, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

// ---- main ----------------------------------------------------------------------------------------
static int parse_listen(const char *listen, char *host, size_t hsize, int *port) {
    const char *colon = strrchr(listen, ':');
    int64_t p;
    if (!colon || colon == listen || (size_t)(colon - listen) >= hsize ||
        util_parse_int64(colon + 1, 1, 65535, &p) != 0)
        return -1;
    memcpy(host, listen, (size_t)(colon - listen));
    host[colon - listen] = '\0';
    *port = (int)p;
    return 0;
}

static int parse_retry_list(const char *text, webhooks_config_t *wc) {
    wc->n_retry = 0;
    if (!text || !*text || strcmp(text, "none") == 0) return 0;
    char *copy = strdup(text), *save = NULL;
    if (!copy) return -1;
    int rc = 0;
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        int64_t v;
        if (wc->n_retry >= WEBHOOKS_MAX_RETRIES || util_parse_int64(tok, 0, 3600000, &v) != 0) {
            rc = -1;
            break;
        }
        wc->retry_ms[wc->n_retry++] = v;
    }
    free(copy);
    return rc;
}

static int run(const options_t *o) {
    logger_t log = {SLOG_INFO, "sandbox"};
    if (o->log_level && log_level_parse(o->log_level, &log.level) != 0) {
        fprintf(stderr, "sweety-sandbox: --log-level must be debug, info, warn or error\n");
        return 2;
    }
    char host[128];
    int port;
    const char *listen = o->listen ? o->listen : "127.0.0.1:12111";
    if (parse_listen(listen, host, sizeof host, &port) != 0) {
        fprintf(stderr, "sweety-sandbox: --listen must be HOST:PORT (got %s)\n", listen);
        return 2;
    }
    const struct {
        const char *value, *name;
    } required[] = {{o->stripe_secret_key, "stripe-secret-key"},
                    {o->stripe_webhook_secret, "stripe-webhook-secret"},
                    {o->cryptomus_merchant, "cryptomus-merchant"},
                    {o->cryptomus_payment_key, "cryptomus-payment-key"}};
    for (size_t i = 0; i < sizeof required / sizeof required[0]; i++) {
        if (!required[i].value || !*required[i].value) {
            char env[64];
            env_name(required[i].name, env, sizeof env);
            fprintf(stderr, "sweety-sandbox: --%s (or %s) is required\n", required[i].name, env);
            return 2;
        }
    }
    if (o->stripe_refund_status && strcmp(o->stripe_refund_status, "succeeded") != 0 &&
        strcmp(o->stripe_refund_status, "pending") != 0) {
        fprintf(stderr, "sweety-sandbox: --stripe-refund-status must be succeeded or pending\n");
        return 2;
    }
    if (o->stripe_webhook_url && *o->stripe_webhook_url && !sb_is_http_url(o->stripe_webhook_url)) {
        fprintf(stderr, "sweety-sandbox: --stripe-webhook-url must be an http(s) URL\n");
        return 2;
    }
    webhooks_config_t wc = {.timeout_ms = 10000, .retry_ms = {500, 1000, 2000}, .n_retry = 3, .concurrency = 1};
    wc.log = (logger_t){log.level, "sandbox-webhooks"};
    int64_t v;
    if ((o->webhook_retry_ms && parse_retry_list(o->webhook_retry_ms, &wc) != 0) ||
        (o->webhook_timeout_ms && util_parse_int64(o->webhook_timeout_ms, 100, 600000, &wc.timeout_ms) != 0) ||
        (o->webhook_concurrency && util_parse_int64(o->webhook_concurrency, 1, 64, &v) != 0)) {
        fprintf(stderr, "sweety-sandbox: --webhook-retry-ms is a list of 0..3600000 (at most %d), --webhook-timeout-ms "
                        "100..600000, --webhook-concurrency 1..64\n",
                WEBHOOKS_MAX_RETRIES);
        return 2;
    }
    if (o->webhook_concurrency) wc.concurrency = (int)v;
    char public_url[512];
    snprintf(public_url, sizeof public_url, "%s", o->public_url && *o->public_url ? o->public_url : "");
    if (!public_url[0]) snprintf(public_url, sizeof public_url, "http://%s:%d", host, port);
    size_t pl = strlen(public_url);
    while (pl > 0 && public_url[pl - 1] == '/') public_url[--pl] = '\0';
    if (!sb_is_http_url(public_url)) {
        fprintf(stderr, "sweety-sandbox: --public-url must be an http(s) URL\n");
        return 2;
    }

    // SIGTERM/SIGINT go to a signalfd read on the service thread; block them before any thread starts.
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);
    int sfd = signalfd(-1, &sigs, SFD_CLOEXEC | SFD_NONBLOCK);
    if (sfd < 0) {
        fprintf(stderr, "sweety-sandbox: signalfd: %s\n", strerror(errno));
        return 1;
    }

    app_t app = {.log = log};
    int rc = 1;
    app.webhooks = webhooks_new(&wc);
    stripe_config_t sc = {.secret_key = o->stripe_secret_key, .webhook_secret = o->stripe_webhook_secret,
                          .webhook_url = o->stripe_webhook_url, .public_url = public_url,
                          .api_version = o->stripe_api_version, .refund_status = o->stripe_refund_status,
                          .webhooks = app.webhooks, .log = {log.level, "sandbox-stripe"}};
    cryptomus_config_t cc = {.merchant = o->cryptomus_merchant, .payment_key = o->cryptomus_payment_key,
                             .public_url = public_url, .webhooks = app.webhooks, .log = {log.level, "sandbox-cryptomus"}};
    vapi_config_t vc = {.keys = o->vapi_keys, .n_keys = o->n_vapi_keys, .public_url = public_url,
                        .server_url = o->vapi_server_url, .webhook_secret = o->vapi_webhook_secret,
                        .hmac_secret = o->vapi_hmac_secret, .webhook_retries = o->vapi_webhook_retries,
                        .concurrency_mode = o->vapi_concurrency_mode, .default_outcome = o->vapi_default_outcome,
                        .timescale = o->vapi_timescale, .webhooks = app.webhooks,
                        .log = {log.level, "sandbox-vapi"}};
    char vapi_error[200] = "";
    if (app.webhooks) {
        app.stripe = stripe_new(&sc);
        app.cryptomus = cryptomus_new(&cc);
        app.vapi = vapi_new(&vc, vapi_error, sizeof vapi_error);
    }
    if (vapi_error[0]) {
        fprintf(stderr, "sweety-sandbox: %s\n", vapi_error);
        rc = 2;
        goto out;
    }
    if (app.stripe && app.cryptomus && app.vapi) {
        // Order matters: Cryptomus' few /v1/payment… paths before Stripe's catch-all /v1/.
        app.providers[app.n_providers++] = cryptomus_provider(app.cryptomus);
        app.providers[app.n_providers++] = stripe_provider(app.stripe);
        app.providers[app.n_providers++] = vapi_provider(app.vapi);
        app.control = control_new(app.providers, app.n_providers, app.webhooks, log);
    }
    if (!app.control) {
        fprintf(stderr, "sweety-sandbox: out of memory or no delivery thread\n");
        goto out;
    }

    lws_set_log_level(LLL_ERR | LLL_WARN, NULL);
    struct lws_context_creation_info info;
    memset(&info, 0, sizeof info);   // lws 4.1.6 has no lws_context_info_defaults
    info.port = port;
    info.iface = host;
    info.protocols = protocols;
    info.user = &app;
    info.max_http_header_data = 8192;
    info.keepalive_timeout = 30;
    info.timeout_secs = 30;
    info.options = LWS_SERVER_OPTION_DISABLE_IPV6;
    app.context = lws_create_context(&info);
    if (!app.context) {
        fprintf(stderr, "sweety-sandbox: cannot listen on %s:%d\n", host, port);
        goto out;
    }
    struct lws_vhost *vh = lws_get_vhost_by_name(app.context, "default");
    lws_sock_file_fd_type fd;
    fd.filefd = sfd;
    if (!vh || !lws_adopt_descriptor_vhost(vh, LWS_ADOPT_RAW_FILE_DESC, fd, "sb-signals", NULL)) {
        fprintf(stderr, "sweety-sandbox: cannot watch signals\n");
        goto out;
    }
    sfd = -1;   // lws owns it now
    lws_sul_schedule(app.context, 0, &app.tick, on_tick, LWS_US_PER_SEC);
    log_info(&log, "listening", "listen=%s:%d public_url=%s stripe_webhook_url=%s vapi_keys=%zu vapi_server_url=%s",
             host, port, public_url, o->stripe_webhook_url ? o->stripe_webhook_url : "none", o->n_vapi_keys,
             o->vapi_server_url ? o->vapi_server_url : "none");
    printf("sandbox listening on http://%s:%d\n", host, port);
    fflush(stdout);
    while (!app.stop)
        if (lws_service(app.context, 0) < 0) break;
    rc = 0;
    log_info(&log, "stopping", NULL);

out:
    if (app.context) {
        lws_sul_cancel(&app.tick);
        lws_sul_cancel(&app.timers);
        lws_context_destroy(app.context);
    }
    if (sfd >= 0) close(sfd);
    control_destroy(&app.control);
    stripe_destroy(&app.stripe);
    cryptomus_destroy(&app.cryptomus);
    vapi_destroy(&app.vapi);
    webhooks_destroy(&app.webhooks);
    return rc;
}

int main(int argc, char **argv) {
    options_t o = {0};
    int prc = options_parse(&o, argc, argv);
    if (prc == 1) return 0;
    if (prc == 2) return 2;
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(stderr, "sweety-sandbox: curl_global_init failed\n");
        return 1;
    }
    int rc = run(&o);
    curl_global_cleanup();
    return rc;
}
