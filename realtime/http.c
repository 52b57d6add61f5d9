// realtime/http.c — the HTTP actor: the lws server, its routes, /healthz and /metrics, and the
// hand-over of API and webhook requests to the payments actor (VAPI's to the dialer).
//
// Threading. Everything in this file runs on one thread, the czmq actor thread, which runs the
// libwebsockets service loop; no lws call is made from anywhere else. The loop is libev's (epoll),
// which this thread creates and turns (lws's "foreign loop"), or lws's own poll() loop when libev
// is not available (see "the event loop" below). Debian's lws 4.1.6 has no external-poll hook, so
// ZeroMQ is brought into lws's loop instead: the ZMQ_FD of the actor pipe, of our bus SUB socket
// and of our inbox are dup()'d and adopted as raw file descriptors on a private protocol
// ("sweety-bus"). A ZMQ_FD is not a readiness fd but an edge-like "something changed" signal, so
// when one fires we receive from that socket without waiting until a receive finds nothing, which
// also re-arms its ZMQ_FD (a whole message is queued or none is, so no receive ever blocks). An
// edge can be consumed by our own use of a socket (a send on the pipe, say), so a 100 ms lws_sul
// timer re-checks all three sockets as a backstop. We adopt dups because lws closes an adopted
// descriptor when it frees the wsi, and ZeroMQ must keep its own.
//
// Requests. Routes are a table: path (exact or prefix), the bounded label used in metrics,
// accepted methods, handler, body limit, flags. A handler either fills in the session's response
// (status, type, body) or hands the request to another actor (http_forward) and leaves it parked;
// the response is written from LWS_CALLBACK_HTTP_WRITEABLE — headers in one turn, then the body in
// chunks, the last one LWS_WRITE_HTTP_FINAL — and the transaction is then completed (keep-alive)
// or the connection closed. Request bodies are accumulated up to the route's limit (16 KiB, 256 KiB
// for webhooks, 1 MiB for VAPI's) in LWS_CALLBACK_HTTP_BODY and the route runs at
// HTTP_BODY_COMPLETION; a larger declared body is answered 413 at once and the connection closed.
// The request headers a route needs (Origin, Content-Type, Authorization, Idempotency-Key,
// Stripe-Signature; X-Vapi-Secret, x-signature, x-timestamp) are copied into the session when the
// request arrives, so nothing depends on lws keeping them. Every request ends in one log line
// (event=http_request) and one count in sweety_http_requests_total. A WebSocket upgrade on /ws
// (from the allowed Origin, or none) becomes a WebSocket session served by ws.c on this same
// protocol and thread; any other upgrade is hung up on, and a plain GET /ws gets 426.
//
// Hand-over. The work behind /api/* and /webhooks/* is done by the payments actor (/webhooks/vapi:
// by the dialer). A request gets an id from the pending table (pending.h), its command goes to
// that actor's inbox (bus_send_to, at most HTTP_SEND_TIMEOUT_MS), and the connection waits.
// HTTP_REPLY on our inbox names the id; its status and body (a complete JSON document) become the
// response, and lws_callback_on_writable sends it. A client that leaves first turns its entry into an orphan (the reply is then still
// accounted, never written); no reply within reply_timeout_ms is a 503; a full table is a 503.
// CORS for /api/*: the one allowed origin gets Access-Control-Allow-Origin (and preflights their
// Allow-* headers); other origins get none, so browsers refuse the answer.
//
// State. Health (the last db.state), metrics counters, the pending table, the rate limiters, the
// plans cache, the bus endpoint and the lws objects live in one http_t (http_internal.h), reachable
// from lws callbacks through the context's user pointer. Nothing here is global except lws's
// process-wide log settings.
//
// Shutdown. "$TERM" on the pipe: new connections are refused and new requests get 503; requests in
// flight (also those waiting for payments) get up to HTTP_DRAIN_MS to finish; those still waiting
// then get 503 and a last HTTP_DRAIN_GRACE_MS to be written; then the lws context is destroyed
// (closing the listening socket and every connection) and the bus endpoint with it.
// (lws_context_deprecate would close the listener early, but lws 4.1 then raises SIGINT in the
// whole process once the context is idle.)
#include "realtime/http.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <libwebsockets.h>
#include <netdb.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#ifdef SWEETY_HAVE_LIBEV
#include <ev.h>
#endif

#include "bus/bus.h"
#include "common/token.h"
#include "common/util.h"
#include "realtime/cidr.h"
#include "realtime/http_internal.h"
#include "realtime/web_files.h"
#include "realtime/webhook_verify.h"

#define HTTP_METRICS_FROM_DEFAULT "127.0.0.0/8,::1/128"
#define HTTP_HEADER_MAX 8192             // all request headers of one request
#define HTTP_HEADER_POOL 32              // requests parsing headers at the same time
#define HTTP_CHUNK 4096                  // response bytes per writeable turn
#define HTTP_DRAIN_MS 4000               // how long $TERM waits for requests in flight
#define HTTP_HEADERS_MAX 2048            // our response headers fit in this
#define HTTP_INLINE_BODY_MAX 4096        // bodies up to this go out with the headers
#define HTTP_DRAIN_GRACE_MS 500          // then to write the 503s of requests still waiting
#define HTTP_WS_CLOSE_MS 2000            // $TERM: how long WebSockets get to take their 1001
#define HTTP_KEEPALIVE_S 5
#define HTTP_TIMEOUT_S 20
#define BUS_PROTOCOL "sweety-bus"
#define BUS_BACKSTOP_US (100 * 1000)     // re-check the ZeroMQ sockets at least this often
#define BUS_AGAIN_US 1000                // ... or this soon when a pump stopped at its budget
#define BUS_PUMP_BUDGET 512              // messages per socket per wake-up
#define LOG_PATH_MAX 200

static const char *const webhook_providers[PROVIDER_COUNT] = {"stripe", "cryptomus", "vapi"};
static const char *const webhook_outcomes[OUTCOME_COUNT] = {
    "applied", "duplicate", "ignored", "unknown_target", "bad_signature", "rate_limited",
    "invalid_payload", "unavailable"};
static const char *const upstream_failures[UPSTREAM_COUNT] = {"send_failed", "table_full", "timeout"};
static const char *const secret_keys[SECRET_COUNT] = {"stripe.webhook_secret", "cryptomus.payment_key",
                                                      "vapi.webhook_secret", "vapi.webhook_hmac_secret",
                                                      "security.token_secret"};
static const char *const secret_which[2] = {"current", "previous"};

// ---- routes ---------------------------------------------------------------------------------

static void route_healthz(http_t *self, struct lws *wsi, session_t *s);
static void route_metrics(http_t *self, struct lws *wsi, session_t *s);
static void route_ws_plain(http_t *self, struct lws *wsi, session_t *s);
static void route_api_not_found(http_t *self, struct lws *wsi, session_t *s);
static void route_page(http_t *self, struct lws *wsi, session_t *s);

#define GET_ METHOD_BIT(LWSHUMETH_GET)
#define POST_ METHOD_BIT(LWSHUMETH_POST)

// First match wins.
static const route_t routes[] = {
    {"/healthz", false, "/healthz", GET_, route_healthz, 0, 0},
    {"/metrics", false, "/metrics", GET_, route_metrics, 0, 0},
    {"/ws", false, "/ws", GET_, route_ws_plain, 0, 0},
    {"/api/plans", false, "/api/plans", GET_, route_plans, 0, ROUTE_API},
    {"/api/bookings", false, "/api/bookings", POST_, route_bookings, 0, ROUTE_API},
    // {id} (GET) and {id}/cancel (POST): the handler tells them apart and sets the precise label
    {"/api/bookings/", true, "/api/bookings/{id}", GET_ | POST_, route_booking_item, 0, ROUTE_API},
    {"/webhooks/stripe", false, "/webhooks/stripe", POST_, route_webhook_stripe, HTTP_WEBHOOK_BODY_MAX, 0},
    {"/webhooks/cryptomus", false, "/webhooks/cryptomus", POST_, route_webhook_cryptomus, HTTP_WEBHOOK_BODY_MAX, 0},
    {"/webhooks/vapi", false, "/webhooks/vapi", POST_, route_webhook_vapi, HTTP_VAPI_BODY_MAX, 0},
    {"/api", false, "/api/*", 0, route_api_not_found, 0, ROUTE_API},
    {"/api/", true, "/api/*", 0, route_api_not_found, 0, ROUTE_API},
};
static const route_t route_fallback = {"/", true, "other", 0, route_page, 0, 0};

static const char *const method_names[] = {"GET", "POST", "OPTIONS", "PUT", "PATCH",
                                           "DELETE", "CONNECT", "HEAD", ":path"};

static int64_t monotonic_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t http_monotonic_ms(void) {
    return monotonic_us() / 1000;
}

static http_t *http_of(struct lws *wsi) {
    return lws_context_user(lws_get_context(wsi));
}

// ---- lws's own log lines --------------------------------------------------------------------

// lws hands over "[2024/01/02 03:04:05:6789] E: text\n"; we keep the text, in our line format.
// Runs on whichever thread lws logs from, which is only ever the service thread.
static void http_lws_log(int level, const char *line) {
    static const logger_t lws_logger = {.level = SLOG_WARN, .who = HTTP_ACTOR_NAME};
    const char *text = line;
    const char *bracket = strstr(line, "] ");
    if (line[0] == '[' && bracket) {
        text = bracket + 2;
        if (text[0] && text[1] == ':' && text[2] == ' ') text += 3;
    }
    char clean[512];
    size_t n = 0;
    for (; *text && n < sizeof clean - 1; text++) {
        unsigned char c = (unsigned char)*text;
        if (c == '\n' || c == '\r') continue;
        clean[n++] = (c == '"' || c < 0x20) ? '\'' : (char)c;
    }
    clean[n] = '\0';
    log_event(&lws_logger, (level & LLL_ERR) ? SLOG_ERROR : SLOG_WARN, "lws", "msg=\"%s\"", clean);
}

// ---- metrics --------------------------------------------------------------------------------

// What the http actor subscribes to: only what it acts on. Every other topic (booking.created,
// queue.enqueued, call.* ...) would wake this thread and be decoded here for nothing. The
// broadcaster publishes realtime.resync and sends realtime.status to our inbox (either way works
// here); booking.status is subscribed to only while a WebSocket watches (http_watch_statuses).
static const char *const bus_subscriptions[] = {"actor.", "db.state", "realtime.", NULL};
#define BUS_STATUS_TOPIC "booking.status"

// Whether a message of this type can reach the http actor: a subscribed topic, or one sent to its
// inbox.
static bool http_receives(bus_type_t type) {
    if (type == BUS_HTTP_REPLY || type == BUS_WS_EVENTS || type == BUS_BOOKING_STATUS) return true;
    const char *topic = bus_type_topic(type);
    for (size_t i = 0; topic && bus_subscriptions[i]; i++)
        if (strncmp(topic, bus_subscriptions[i], strlen(bus_subscriptions[i])) == 0) return true;
    return false;
}

void http_watch_statuses(http_t *self, bool on) {
    if (!self->bus) return;
    if (on) zsock_set_subscribe(bus_endpoint_events(self->bus), BUS_STATUS_TOPIC);
    else zsock_set_unsubscribe(bus_endpoint_events(self->bus), BUS_STATUS_TOPIC);
    log_debug(&self->log, "status_subscription", "on=%s", on ? "true" : "false");
}

static void count_request(http_t *self, const char *label, int status) {
    for (size_t i = 0; i < self->request_count; i++) {
        request_count_t *r = &self->requests[i];
        if (r->label == label && r->status == status) {
            r->count++;
            return;
        }
    }
    if (self->request_count == METRICS_REQUESTS_MAX) return;   // bounded; cannot happen with our routes
    self->requests[self->request_count++] = (request_count_t){label, status, 1};
}

static void actor_seen(http_t *self, const char *name, bool up) {
    for (size_t i = 0; i < self->actor_count; i++) {
        if (strcmp(self->actors[i].name, name) == 0) {
            self->actors[i].up = up;
            return;
        }
    }
    if (self->actor_count == METRICS_ACTORS_MAX) return;
    actor_seen_t *a = &self->actors[self->actor_count++];
    snprintf(a->name, sizeof a->name, "%s", name);
    a->up = up;
}

// Prometheus label value: backslash, double quote and newline escaped.
static void prom_label_value(FILE *f, const char *v) {
    for (; *v; v++) {
        if (*v == '\\') fputs("\\\\", f);
        else if (*v == '"') fputs("\\\"", f);
        else if (*v == '\n') fputs("\\n", f);
        else fputc(*v, f);
    }
}

static void prom_family(FILE *f, const char *name, const char *type, const char *help) {
    fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static int metrics_render(const http_t *self, char **out, size_t *len) {
    char *buf = NULL;
    size_t size = 0;
    FILE *f = open_memstream(&buf, &size);
    if (!f) return -1;

    prom_family(f, "sweety_bus_messages_total", "counter", "Bus messages received by the http actor, by topic.");
    for (int t = BUS_NONE + 1; t < BUS_TYPE_COUNT; t++)
        if (http_receives((bus_type_t)t))
            fprintf(f, "sweety_bus_messages_total{topic=\"%s\"} %" PRIu64 "\n", bus_type_topic((bus_type_t)t),
                    self->bus_messages[t]);

    prom_family(f, "sweety_bus_malformed_total", "counter", "Bus messages dropped because they did not decode.");
    fprintf(f, "sweety_bus_malformed_total %" PRIu64 "\n", bus_endpoint_malformed(self->bus));

    prom_family(f, "sweety_actor_up", "gauge", "1 after actor.started (or an actor.pong), 0 after actor.stopped.");
    for (size_t i = 0; i < self->actor_count; i++) {
        fputs("sweety_actor_up{actor=\"", f);
        prom_label_value(f, self->actors[i].name);
        fprintf(f, "\"} %d\n", self->actors[i].up ? 1 : 0);
    }

    prom_family(f, "sweety_db_up", "gauge", "1 while the database is reachable (last db.state).");
    fprintf(f, "sweety_db_up %d\n", self->db_known && self->db_up ? 1 : 0);
    prom_family(f, "sweety_db_reconnects_total", "counter", "Database reconnections (from db.state).");
    fprintf(f, "sweety_db_reconnects_total %" PRId64 "\n", self->db_reconnects);

    prom_family(f, "sweety_http_refused_connections_total", "counter",
                "Connections closed at once because the open-file limit was near.");
    fprintf(f, "sweety_http_refused_connections_total{reason=\"fd_limit\"} %" PRIu64 "\n", self->refused_fd_limit);
    prom_family(f, "sweety_http_requests_total", "counter", "HTTP requests answered, by route and status.");
    for (size_t i = 0; i < self->request_count; i++) {
        const request_count_t *r = &self->requests[i];
        fprintf(f, "sweety_http_requests_total{path=\"%s\",status=\"%d\"} %" PRIu64 "\n", r->label, r->status,
                r->count);
    }

    prom_family(f, "sweety_webhooks_total", "counter", "Webhook requests by provider and outcome.");
    for (size_t p = 0; p < PROVIDER_COUNT; p++)
        for (size_t o = 0; o < OUTCOME_COUNT; o++)
            if (self->webhooks[p][o])
                fprintf(f, "sweety_webhooks_total{provider=\"%s\",outcome=\"%s\"} %" PRIu64 "\n",
                        webhook_providers[p], webhook_outcomes[o], self->webhooks[p][o]);

    prom_family(f, "sweety_http_pending", "gauge", "Requests waiting for an answer from another actor.");
    fprintf(f, "sweety_http_pending %zu\n", pending_count(self->pending));
    prom_family(f, "sweety_http_upstream_failures_total", "counter",
                "Requests answered 503 because the actor behind them could not take or answer them.");
    for (size_t i = 0; i < UPSTREAM_COUNT; i++)
        fprintf(f, "sweety_http_upstream_failures_total{reason=\"%s\"} %" PRIu64 "\n", upstream_failures[i],
                self->upstream_failures[i]);

    prom_family(f, "sweety_secret_matches_total", "counter",
                "Requests verified with the current or, during a rotation, the previous value of a secret.");
    for (size_t k = 0; k < SECRET_COUNT; k++)
        for (size_t w = 0; w < 2; w++)
            fprintf(f, "sweety_secret_matches_total{key=\"%s\",which=\"%s\"} %" PRIu64 "\n", secret_keys[k],
                    secret_which[w], self->secret_matches[k][w]);

    ws_metrics(self, f);

    if (fclose(f) != 0) {
        free(buf);
        return -1;
    }
    *out = buf;
    *len = size;
    return 0;
}

// ---- responses ------------------------------------------------------------------------------

static const char oom_body[] = "{\"error\":{\"code\":\"internal\",\"message\":\"out of memory\"}}";

static const char json_content_type[] = "application/json; charset=utf-8";

void http_respond(session_t *s, int status, const char *content_type, char *body, size_t len, bool no_store) {
    free(s->resp_owned);
    s->resp_owned = body;
    s->responding = true;
    s->no_store = no_store;
    if (!body) {
        s->status = 500;
        s->content_type = json_content_type;
        s->resp = oom_body;
        s->resp_len = sizeof oom_body - 1;
        return;
    }
    s->status = status;
    s->content_type = content_type;
    s->resp = body;
    s->resp_len = len;
}

void http_respond_static(session_t *s, int status, const char *content_type, const char *body, size_t len) {
    free(s->resp_owned);
    s->resp_owned = NULL;
    s->responding = true;
    s->no_store = false;
    s->status = status;
    s->content_type = content_type;
    s->resp = body;
    s->resp_len = len;
}

void http_respond_json_text(session_t *s, int status, const char *json, size_t len) {
    char *copy = malloc(len + 1);
    if (copy) {
        memcpy(copy, json, len);
        copy[len] = '\0';
    }
    http_respond(s, status, json_content_type, copy, len, true);
}

void http_respond_api_error(session_t *s, const api_error_t *e) {
    char *text = api_error_json(e);
    http_respond(s, e->http_status, json_content_type, text, text ? strlen(text) : 0, true);
}

void http_respond_error(session_t *s, int status, const char *code, const char *message, const char *field) {
    api_error_t e;
    api_error_set(&e, status, code, field, message);
    http_respond_api_error(s, &e);
}

static void allow_header(session_t *s, unsigned methods) {
    size_t n = 0;
    s->allow[0] = '\0';
    for (int m = LWSHUMETH_GET; m <= LWSHUMETH_HEAD; m++) {
        if (!(methods & METHOD_BIT(m))) continue;
        int w = snprintf(s->allow + n, sizeof s->allow - n, "%s%s", n ? ", " : "", method_names[m]);
        if (w < 0 || (size_t)w >= sizeof s->allow - n) break;
        n += (size_t)w;
    }
}

void http_respond_method_not_allowed(session_t *s, unsigned methods) {
    // a GET route answers HEAD too
    allow_header(s, methods | ((methods & METHOD_BIT(LWSHUMETH_GET)) ? METHOD_BIT(LWSHUMETH_HEAD) : 0));
    char msg[96];
    snprintf(msg, sizeof msg, "%s is not allowed here; allowed: %s", s->method >= 0 ? method_names[s->method] : "-",
             s->allow);
    http_respond_error(s, 405, "method_not_allowed", msg, NULL);
}

// ---- the log line ---------------------------------------------------------------------------

// A path as it may appear in a key=value log line: bytes outside printable ASCII, quotes and
// backslashes are percent-encoded; long paths are cut and marked with "...".
static void log_safe_path(const char *in, char *out, size_t size) {
    static const char hex[] = "0123456789ABCDEF";
    size_t n = 0;
    for (; in && *in; in++) {
        unsigned char c = (unsigned char)*in;
        bool plain = c > 0x20 && c < 0x7f && c != '"' && c != '\\';
        size_t need = plain ? 1 : 3;
        if (n + need + 4 > size) {
            memcpy(out + n, "...", 3);
            n += 3;
            break;
        }
        if (plain) {
            out[n++] = (char)c;
        } else {
            out[n++] = '%';
            out[n++] = hex[c >> 4];
            out[n++] = hex[c & 15];
        }
    }
    out[n] = '\0';
}

// ---- sessions -------------------------------------------------------------------------------

static void session_begin(http_t *self, session_t *s) {
    memset(s, 0, sizeof *s);
    s->active = true;
    s->t0_us = monotonic_us();
    s->method = -1;
    s->route = &route_fallback;
    s->label = route_fallback.label;
    s->body_max = HTTP_BODY_MAX;
    self->inflight++;
}

// Ends the transaction (if one is active: log line, and a metrics count when it was answered) and
// frees what the session holds. A request still waiting for another actor's answer becomes an
// orphan in the pending table (its answer will be accounted, not written). Safe on an idle session.
static void session_end(http_t *self, session_t *s, bool aborted) {
    if (s->request_id > 0) pending_orphan(self->pending, s->request_id);
    if (s->active) {
        char path[LOG_PATH_MAX + 4];
        log_safe_path(s->path, path, sizeof path);
        double ms = (double)(monotonic_us() - s->t0_us) / 1000.0;
        const char *method = s->method >= 0 ? method_names[s->method] : "-";
        if (aborted) {
            log_info(&self->log, "http_request", "method=%s path=%s status=%d ms=%.2f aborted=1", method,
                     path[0] ? path : "-", s->responding ? s->status : 0, ms);
        } else {
            log_info(&self->log, "http_request", "method=%s path=%s status=%d ms=%.2f", method,
                     path[0] ? path : "-", s->status, ms);
            count_request(self, s->label, s->status);
        }
        self->inflight--;
    }
    free(s->path);
    free(s->body);
    free(s->resp_owned);
    free(s->bearer);
    free(s->stripe_signature);
    free(s->vapi_secret);
    free(s->vapi_signature);
    free(s->vapi_timestamp);
    memset(s, 0, sizeof *s);
}

static const route_t *route_find(const char *path) {
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        const route_t *r = &routes[i];
        if (r->prefix ? strncmp(path, r->path, strlen(r->path)) == 0 : strcmp(path, r->path) == 0) return r;
    }
    return &route_fallback;
}

// OPTIONS on an /api/* route. The Access-Control-Allow-* headers go out only for the allowed
// origin (write_headers); anyone else gets a bare 204 and the browser refuses the real request.
static void answer_preflight(session_t *s) {
    free(s->resp_owned);
    s->resp_owned = NULL;
    s->preflight = true;
    s->responding = true;
    s->no_store = false;
    s->status = 204;
    s->content_type = NULL;
    s->resp = "";
    s->resp_len = 0;
}

static void dispatch(http_t *self, struct lws *wsi, session_t *s) {
    const route_t *r = s->route;
    int m = s->head ? LWSHUMETH_GET : s->method;   // HEAD is answered like GET, without the body
    if ((r->flags & ROUTE_API) && m == LWSHUMETH_OPTIONS && r->handler != route_api_not_found) {
        answer_preflight(s);
        return;
    }
    if (r->methods && !(r->methods & METHOD_BIT(m))) {
        http_respond_method_not_allowed(s, r->methods);
        return;
    }
    r->handler(self, wsi, s);
}

static int start_response(struct lws *wsi, session_t *s) {
    lws_callback_on_writable(wsi);
    return 0;
}

// Content-Length of the request: 0 when absent. -1 when present but not a number.
static int request_content_length(struct lws *wsi, int64_t *out) {
    *out = 0;
    if (lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_CONTENT_LENGTH) <= 0) return 0;
    char text[32];
    if (lws_hdr_copy(wsi, text, sizeof text, WSI_TOKEN_HTTP_CONTENT_LENGTH) < 0) return -1;
    return util_parse_int64(text, 0, INT64_MAX, out);
}

// A known header's value as a malloc'ed string; NULL when absent, empty or longer than max.
static char *header_dup(struct lws *wsi, enum lws_token_indexes token, int max) {
    int n = lws_hdr_total_length(wsi, token);
    if (n <= 0 || n > max) return NULL;
    char *v = malloc((size_t)n + 1);
    if (v && lws_hdr_copy(wsi, v, n + 1, token) < 0) {
        free(v);
        v = NULL;
    }
    return v;
}

// The same for a header lws does not know; name in lower case with its colon ("stripe-signature:"):
// lws 4.1 stores the names of such headers lower-cased, whatever case the client sent.
// *present (may be NULL) tells whether the header came at all, even too long.
static char *custom_header_dup(struct lws *wsi, const char *name, int max, bool *present) {
    int nlen = (int)strlen(name);
    int n = lws_hdr_custom_length(wsi, name, nlen);
    if (n < 0) return NULL;
    if (present) *present = true;
    if (n > max) return NULL;
    char *v = malloc((size_t)n + 1);
    if (v && lws_hdr_custom_copy(wsi, v, n + 1, name, nlen) < 0) {
        free(v);
        v = NULL;
    }
    return v;
}

// "application/json", any case, alone or followed by parameters ("; charset=utf-8").
static bool is_json_media_type(const char *v) {
    if (!v) return false;
    while (*v == ' ' || *v == '\t') v++;
    static const char json[] = "application/json";
    if (strncasecmp(v, json, sizeof json - 1) != 0) return false;
    v += sizeof json - 1;
    while (*v == ' ' || *v == '\t') v++;
    return *v == '\0' || *v == ';';
}

static bool origin_allowed(const http_t *self, const char *origin) {
    return origin && self->cors_origin[0] && strcasecmp(origin, self->cors_origin) == 0;
}

// Printable ASCII, 1..HTTP_IDEM_KEY_MAX characters.
static bool idem_key_valid(const char *k) {
    size_t n = 0;
    for (; k[n]; n++)
        if ((unsigned char)k[n] < 0x20 || (unsigned char)k[n] > 0x7e) return false;
    return n >= 1 && n <= HTTP_IDEM_KEY_MAX;
}

// Copies what the routes need from the request headers into the session.
static void capture_headers(http_t *self, struct lws *wsi, session_t *s) {
    s->api = (s->route->flags & ROUTE_API) != 0;
    if (s->api) {
        char *origin = header_dup(wsi, WSI_TOKEN_ORIGIN, (int)sizeof self->cors_origin);
        s->cors_allowed = origin_allowed(self, origin);
        free(origin);
    }
    char *type = header_dup(wsi, WSI_TOKEN_HTTP_CONTENT_TYPE, 256);
    s->json_body = is_json_media_type(type);
    free(type);

    char *auth = header_dup(wsi, WSI_TOKEN_HTTP_AUTHORIZATION, TOKEN_MAX_LEN + 32);
    if (auth && strncasecmp(auth, "Bearer ", 7) == 0) {
        const char *t = auth + 7;
        while (*t == ' ') t++;
        size_t n = strlen(t);
        while (n > 0 && t[n - 1] == ' ') n--;
        if (n > 0 && n <= TOKEN_MAX_LEN) s->bearer = strndup(t, n);
    }
    free(auth);

    char *idem = custom_header_dup(wsi, "idempotency-key:", HTTP_IDEM_KEY_MAX, &s->idem_present);
    if (idem && idem_key_valid(idem)) {
        s->idem_valid = true;
        snprintf(s->idem_key, sizeof s->idem_key, "%s", idem);
    }
    free(idem);

    s->stripe_signature = custom_header_dup(wsi, "stripe-signature:", WEBHOOK_HEADER_MAX, NULL);
    if (s->route->handler == route_webhook_vapi) {
        s->vapi_secret = custom_header_dup(wsi, "x-vapi-secret:", WEBHOOK_HEADER_MAX, NULL);
        s->vapi_signature = custom_header_dup(wsi, "x-signature:", WEBHOOK_HEADER_MAX, NULL);
        s->vapi_timestamp = custom_header_dup(wsi, "x-timestamp:", 64, NULL);
    }
}

static void respond_too_large(session_t *s) {
    char msg[96];
    snprintf(msg, sizeof msg, "the request body is larger than %zu KiB", s->body_max / 1024);
    http_respond_error(s, 413, "too_large", msg, NULL);
}

// LWS_CALLBACK_HTTP: the request line and headers are in.
static int on_http_request(http_t *self, struct lws *wsi, session_t *s) {
    session_end(self, s, true);   // a previous transaction left unanswered: should not happen
    session_begin(self, s);

    char *uri = NULL;
    int ulen = 0;
    s->method = lws_http_get_uri_and_method(wsi, &uri, &ulen);
    if (s->method < 0 || s->method > LWSHUMETH_HEAD) s->method = -1;
    s->head = s->method == LWSHUMETH_HEAD;
    s->path = (s->method >= 0 && uri && ulen >= 0) ? strndup(uri, (size_t)ulen) : strdup("");
    if (!s->path) {
        http_respond(s, 500, NULL, NULL, 0, true);
        s->close_after = true;
        return start_response(wsi, s);
    }
    s->route = route_find(s->path);
    s->label = s->route->label;
    s->body_max = s->route->body_max ? s->route->body_max : HTTP_BODY_MAX;
    capture_headers(self, wsi, s);

    if (s->method < 0) {
        s->close_after = true;
        http_respond_error(s, 400, "bad_request", "unsupported request method", NULL);
        return start_response(wsi, s);
    }
    if (self->terminating) {
        s->close_after = true;
        http_respond_error(s, 503, "unavailable", "the server is shutting down", NULL);
        return start_response(wsi, s);
    }
    // Bodies: only with a Content-Length, at most the route's limit. An answer given before a
    // declared body is read closes the connection: the unread bytes would be taken for the next
    // request.
    int64_t clen = 0;
    if (lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_TRANSFER_ENCODING) > 0) {
        s->close_after = true;
        http_respond_error(s, 411, "length_required", "request bodies need a Content-Length", NULL);
        return start_response(wsi, s);
    }
    if (request_content_length(wsi, &clen) != 0) {
        s->close_after = true;
        http_respond_error(s, 400, "bad_request", "invalid Content-Length", NULL);
        return start_response(wsi, s);
    }
    if (clen > (int64_t)s->body_max) {
        s->close_after = true;
        respond_too_large(s);
        return start_response(wsi, s);
    }
    if (clen > 0) {
        s->expect_body = true;   // the route runs at LWS_CALLBACK_HTTP_BODY_COMPLETION
        return 0;
    }
    dispatch(self, wsi, s);
    return start_response(wsi, s);
}

static int on_http_body(session_t *s, const void *in, size_t len) {
    if (!s->active || !s->expect_body || s->body_too_large) return 0;
    if (len > s->body_max - s->body_len) {
        s->body_too_large = true;
        free(s->body);
        s->body = NULL;
        s->body_len = 0;
        return 0;
    }
    char *body = realloc(s->body, s->body_len + len + 1);
    if (!body) return -1;
    memcpy(body + s->body_len, in, len);
    s->body_len += len;
    body[s->body_len] = '\0';
    s->body = body;
    return 0;
}

static int on_http_body_complete(http_t *self, struct lws *wsi, session_t *s) {
    if (!s->active || s->responding || s->request_id > 0) return 0;
    if (s->body_too_large) respond_too_large(s);
    else dispatch(self, wsi, s);
    return start_response(wsi, s);
}

static int add_header(struct lws *wsi, const char *name, const char *value, unsigned char **p, unsigned char *end) {
    return lws_add_http_header_by_name(wsi, (const unsigned char *)name, (const unsigned char *)value,
                                       (int)strlen(value), p, end);
}

// Pages and assets: only our own origin may supply scripts, styles, fonts, images and connections
// (the WebSocket included: 'self' covers ws: on the same host), nobody may frame us, and no
// referrer beyond our origin leaves for another site (the checkout page).
static const char page_csp[] =
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'; object-src 'none'";

static int write_page_headers(const session_t *s, struct lws *wsi, unsigned char **p, unsigned char *end) {
    if (s->etag && add_header(wsi, "etag:", s->etag, p, end)) return -1;
    if (s->cache_control && add_header(wsi, "cache-control:", s->cache_control, p, end)) return -1;
    return add_header(wsi, "content-security-policy:", page_csp, p, end) ||
                   add_header(wsi, "referrer-policy:", "strict-origin-when-cross-origin", p, end) ||
                   add_header(wsi, "x-frame-options:", "DENY", p, end) ||
                   add_header(wsi, "permissions-policy:", "camera=(), microphone=(), geolocation=(), payment=()", p,
                              end)
               ? -1
               : 0;
}

// Writes the status line and headers; a body that fits in the same buffer goes out with them, in
// one write (most answers: JSON, small pages), saving a write and a turn of the loop per request.
// Returns 1 when the body went too, 0 when only the headers did, -1 on error.
static int write_headers(http_t *self, struct lws *wsi, session_t *s) {
    unsigned char buf[LWS_PRE + HTTP_HEADERS_MAX + HTTP_INLINE_BODY_MAX];
    unsigned char *start = buf + LWS_PRE, *p = start, *end = buf + sizeof buf - 1;
    if (s->status == 204 || s->status == 304) {
        // no Content-Type, no Content-Length (RFC 9110 §8.6, §15.4.5)
        if (lws_add_http_header_status(wsi, (unsigned)s->status, &p, end)) return -1;
    } else if (lws_add_http_common_headers(wsi, (unsigned)s->status, s->content_type, s->resp_len, &p, end)) {
        return -1;
    }
    if (add_header(wsi, "x-content-type-options:", "nosniff", &p, end)) return -1;
    if (s->no_store && add_header(wsi, "cache-control:", "no-store", &p, end)) return -1;
    if (s->allow[0] && add_header(wsi, "allow:", s->allow, &p, end)) return -1;
    if (s->static_headers && write_page_headers(s, wsi, &p, end) != 0) return -1;
    if (s->api) {
        if (add_header(wsi, "vary:", "Origin", &p, end)) return -1;
        if (s->cors_allowed && add_header(wsi, "access-control-allow-origin:", self->cors_origin, &p, end))
            return -1;
        if (s->cors_allowed && s->preflight) {
            char age[16];
            snprintf(age, sizeof age, "%d", HTTP_CORS_MAX_AGE_S);
            if (add_header(wsi, "access-control-allow-methods:", "GET, POST, OPTIONS", &p, end) ||
                add_header(wsi, "access-control-allow-headers:", "Content-Type, Authorization, Idempotency-Key", &p,
                           end) ||
                add_header(wsi, "access-control-max-age:", age, &p, end))
                return -1;
        }
    }
    if (s->close_after && add_header(wsi, "connection:", "close", &p, end)) return -1;
    if (!s->head && s->resp_len > 0 && s->resp_len <= HTTP_INLINE_BODY_MAX) {
        if (lws_finalize_http_header(wsi, &p, end) || s->resp_len > (size_t)(end - p)) return -1;
        memcpy(p, s->resp, s->resp_len);
        p += s->resp_len;
        int n = (int)(p - start);
        if (lws_write(wsi, start, (size_t)n, LWS_WRITE_HTTP_HEADERS) != n) return -1;
        s->resp_sent = s->resp_len;
        return 1;
    }
    return lws_finalize_write_http_header(wsi, start, &p, end) ? -1 : 0;
}

// The answer is out: account for it, then keep the connection for the next request or close it.
static int finish_response(http_t *self, struct lws *wsi, session_t *s) {
    bool close_now = s->close_after;
    session_end(self, s, false);
    if (close_now) return -1;
    return lws_http_transaction_completed(wsi) ? -1 : 0;
}

static int on_http_writeable(http_t *self, struct lws *wsi, session_t *s) {
    if (!s->active || !s->responding) return 0;
    if (!s->headers_sent) {
        int written = write_headers(self, wsi, s);
        if (written < 0) return -1;
        s->headers_sent = true;
        if (written == 1 || s->head || s->resp_len == 0) return finish_response(self, wsi, s);
        lws_callback_on_writable(wsi);
        return 0;
    }
    unsigned char buf[LWS_PRE + HTTP_CHUNK];
    size_t left = s->resp_len - s->resp_sent;
    size_t n = left > HTTP_CHUNK ? HTTP_CHUNK : left;
    bool last = n == left;
    memcpy(buf + LWS_PRE, s->resp + s->resp_sent, n);
    if (lws_write(wsi, buf + LWS_PRE, n, last ? LWS_WRITE_HTTP_FINAL : LWS_WRITE_HTTP) != (int)n) return -1;
    s->resp_sent += n;
    if (!last) {
        lws_callback_on_writable(wsi);
        return 0;
    }
    return finish_response(self, wsi, s);
}

// ---- handing requests to other actors ---------------------------------------------------------

void http_count_webhook(http_t *self, webhook_provider_t provider, webhook_outcome_t outcome) {
    if ((unsigned)provider < PROVIDER_COUNT && (unsigned)outcome < OUTCOME_COUNT) self->webhooks[provider][outcome]++;
}

void http_count_secret(http_t *self, secret_use_t use, int matched) {
    if ((unsigned)use >= SECRET_COUNT || matched < 0 || matched > 1) return;
    self->secret_matches[use][matched]++;
    if (matched == 1) log_debug(&self->log, "secret_previous_matched", "key=%s", secret_keys[use]);
}

int http_token_verify(http_t *self, const char *token, const char *id, size_t id_len) {
    int matched = -1;
    char bid[37];
    if (!token || token_signer_verify(self->token_signer, token, (int64_t)time(NULL), bid, &matched) != 0) return -1;
    if (strlen(bid) != id_len || memcmp(bid, id, id_len) != 0) return -1;   // another booking's token
    http_count_secret(self, SECRET_TOKEN, matched);
    return 0;
}

static bool kind_is_webhook(int kind, webhook_provider_t *provider) {
    if (kind < PENDING_WEBHOOK_BASE || kind >= PENDING_WEBHOOK_BASE + PROVIDER_COUNT) return false;
    *provider = (webhook_provider_t)(kind - PENDING_WEBHOOK_BASE);
    return true;
}

// The actor a pending request of this kind waits for.
static const char *kind_target(int kind) {
    return kind == PENDING_WEBHOOK_BASE + PROVIDER_VAPI ? HTTP_DIALER_ACTOR : HTTP_PAYMENTS_ACTOR;
}

// One line a second at most: a payments actor that is down would otherwise log once per request.
static void upstream_failed(http_t *self, upstream_failure_t why, const char *target, const char *route_label) {
    self->upstream_failures[why]++;
    int64_t now = http_monotonic_ms();
    if (now - self->upstream_log_ms < 1000) {
        self->upstream_suppressed++;
        return;
    }
    log_warn(&self->log, "upstream_failed", "target=%s reason=%s route=%s suppressed=%" PRIu64, target,
             upstream_failures[why], route_label ? route_label : "-", self->upstream_suppressed);
    self->upstream_log_ms = now;
    self->upstream_suppressed = 0;
}

static void respond_unavailable(session_t *s) {
    http_respond_error(s, 503, "unavailable", "the service is temporarily unavailable, try again later", NULL);
}

static bool set_request_id(bus_msg_t *msg, int64_t id) {
    switch (msg->type) {
    case BUS_PLANS_GET: msg->u.plans_get.request_id = id; return true;
    case BUS_BOOKING_CREATE: msg->u.booking_create.request_id = id; return true;
    case BUS_BOOKING_GET: msg->u.booking_get.request_id = id; return true;
    case BUS_BOOKING_CANCEL: msg->u.booking_cancel.request_id = id; return true;
    case BUS_PAYMENT_WEBHOOK: msg->u.payment_webhook.request_id = id; return true;
    case BUS_VAPI_WEBHOOK: msg->u.vapi_webhook.request_id = id; return true;
    default: return false;
    }
}

bool http_forward(http_t *self, struct lws *wsi, session_t *s, bus_msg_t *msg, int kind) {
    webhook_provider_t provider;
    const char *target = msg->type == BUS_VAPI_WEBHOOK ? HTTP_DIALER_ACTOR : HTTP_PAYMENTS_ACTOR;
    int64_t id = pending_add(self->pending, wsi, kind, http_monotonic_ms() + self->reply_timeout_ms);
    if (id < 0) {
        upstream_failed(self, UPSTREAM_TABLE_FULL, target, s->label);
        if (kind_is_webhook(kind, &provider)) http_count_webhook(self, provider, OUTCOME_UNAVAILABLE);
        respond_unavailable(s);
        return false;
    }
    bool known = set_request_id(msg, id);
    assert(known);   // only request messages are forwarded
    (void)known;
    int rc = bus_send_to(self->bus, target, msg, HTTP_SEND_TIMEOUT_MS);
    if (rc != 0) {
        pending_take(self->pending, id, NULL, NULL);
        upstream_failed(self, UPSTREAM_SEND_FAILED, target, s->label);
        if (kind_is_webhook(kind, &provider)) http_count_webhook(self, provider, OUTCOME_UNAVAILABLE);
        respond_unavailable(s);
        return false;
    }
    s->request_id = id;
    // lws must not time the connection out while it waits: our own deadline answers first.
    lws_set_timeout(wsi, PENDING_TIMEOUT_USER_OK, (int)(self->reply_timeout_ms / 1000) + 10);
    return true;
}

// The answer to a request that is still waiting becomes its response.
static void deliver(http_t *self, struct lws *wsi, int64_t id, int status, const char *body, size_t len) {
    session_t *s = lws_wsi_user(wsi);
    if (!s || !s->active || s->request_id != id || s->responding) return;   // cannot happen; be safe
    s->request_id = 0;
    if (status >= 200 && status <= 599) http_respond_json_text(s, status, body, len);
    else http_respond_error(s, 502, "bad_gateway", "the service gave an invalid answer", NULL);
    lws_set_timeout(wsi, NO_PENDING_TIMEOUT, 0);
    lws_callback_on_writable(wsi);
}

// The outcome payments names (applied, duplicate, ignored, unknown_target); without a name, a 5xx
// is "unavailable" (not stored) and a 4xx "invalid_payload" (payments refused to record it).
// OUTCOME_COUNT: nothing to count.
static webhook_outcome_t outcome_from_reply(const bus_http_reply_t *r) {
    for (size_t i = 0; i < OUTCOME_COUNT; i++)
        if (strcmp(r->outcome, webhook_outcomes[i]) == 0) return (webhook_outcome_t)i;
    if (r->status >= 500) return OUTCOME_UNAVAILABLE;
    if (r->status >= 400) return OUTCOME_INVALID_PAYLOAD;
    return OUTCOME_COUNT;
}

static void on_http_reply(http_t *self, const bus_http_reply_t *r) {
    void *owner = NULL;
    int kind = 0;
    if (!pending_take(self->pending, r->request_id, &owner, &kind)) {
        log_debug(&self->log, "late_reply", "request_id=%" PRId64 " status=%" PRId64, r->request_id, r->status);
        return;
    }
    size_t len = strnlen(r->body, sizeof r->body);
    webhook_provider_t provider;
    if (kind_is_webhook(kind, &provider)) http_count_webhook(self, provider, outcome_from_reply(r));
    if (kind == PENDING_PLANS && r->status == 200) http_plans_cache_store(self, r->body, len);
    if (owner) deliver(self, owner, r->request_id, (int)r->status, r->body, len);
}

static void on_reply_expired(void *arg, int64_t id, void *owner, int kind) {
    http_t *self = arg;
    webhook_provider_t provider;
    if (kind_is_webhook(kind, &provider)) http_count_webhook(self, provider, OUTCOME_UNAVAILABLE);
    upstream_failed(self, UPSTREAM_TIMEOUT, kind_target(kind), NULL);
    if (!owner) return;
    session_t *s = lws_wsi_user(owner);
    if (!s || !s->active || s->request_id != id) return;
    s->request_id = 0;
    respond_unavailable(s);
    lws_set_timeout(owner, NO_PENDING_TIMEOUT, 0);
    lws_callback_on_writable(owner);
}

static void on_drain_expired(void *arg, int64_t id, void *owner, int kind) {
    http_t *self = arg;
    webhook_provider_t provider;
    if (kind_is_webhook(kind, &provider)) http_count_webhook(self, provider, OUTCOME_UNAVAILABLE);
    if (!owner) return;
    session_t *s = lws_wsi_user(owner);
    if (!s || !s->active || s->request_id != id) return;
    s->request_id = 0;
    s->close_after = true;
    http_respond_error(s, 503, "unavailable", "the server is shutting down", NULL);
    lws_callback_on_writable(owner);
}

// The source address as a rate-limit key: family, then the IPv4 address or the IPv6 /64.
static size_t peer_key(struct lws *wsi, unsigned char key[RATELIMIT_KEY_MAX]) {
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    int fd = (int)lws_get_socket_fd(wsi);
    if (fd < 0 || getpeername(fd, (struct sockaddr *)&ss, &len) != 0) return 0;
    if (ss.ss_family == AF_INET) {
        key[0] = 4;
        memcpy(key + 1, &((struct sockaddr_in *)&ss)->sin_addr, 4);
        return 5;
    }
    if (ss.ss_family == AF_INET6) {
        const unsigned char *a = ((struct sockaddr_in6 *)&ss)->sin6_addr.s6_addr;
        static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        if (memcmp(a, mapped, sizeof mapped) == 0) {
            key[0] = 4;
            memcpy(key + 1, a + 12, 4);
            return 5;
        }
        key[0] = 6;
        memcpy(key + 1, a, 8);
        return 9;
    }
    return 0;
}

bool http_rate_allow(http_t *self, ratelimit_t *rl, struct lws *wsi, int64_t limit_per_min) {
    unsigned char key[RATELIMIT_KEY_MAX];
    size_t n = peer_key(wsi, key);
    if (n == 0 || !rl) return true;
    return ratelimit_allow(rl, key, n, limit_per_min, http_monotonic_ms());
}

// ---- routes ---------------------------------------------------------------------------------

// Two fixed answers, sent from static text: load balancers poll this often (b6 measured building
// them with jansson at ~15 % of the request).
static const char health_ok[] = "{\"status\":\"ok\",\"db\":\"ok\"}";
static const char health_down[] = "{\"status\":\"degraded\",\"db\":\"down\"}";

static void route_healthz(http_t *self, struct lws *wsi, session_t *s) {
    if (self->db_known && self->db_up)
        http_respond_static(s, 200, json_content_type, health_ok, sizeof health_ok - 1);
    else
        http_respond_static(s, 503, json_content_type, health_down, sizeof health_down - 1);
    s->no_store = true;   // a health answer is never reused from a cache
}

static bool peer_in(const cidr_list_t *acl, struct lws *wsi) {
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    int fd = (int)lws_get_socket_fd(wsi);
    if (fd < 0 || getpeername(fd, (struct sockaddr *)&ss, &len) != 0) return false;
    return cidr_list_match(acl, (const struct sockaddr *)&ss, len);
}

static void route_metrics(http_t *self, struct lws *wsi, session_t *s) {
    if (!peer_in(self->metrics_acl, wsi)) {
        http_respond_error(s, 403, "forbidden", "metrics are not available from this address", NULL);
        return;
    }
    char *text = NULL;
    size_t len = 0;
    if (metrics_render(self, &text, &len) != 0) text = NULL;
    http_respond(s, 200, "text/plain; version=0.0.4; charset=utf-8", text, len, true);
}

// A plain GET on the WebSocket path (upgrades are handled in LWS_CALLBACK_HTTP_CONFIRM_UPGRADE).
static void route_ws_plain(http_t *self, struct lws *wsi, session_t *s) {
    http_respond_error(s, 426, "upgrade_required", "this endpoint speaks WebSocket only", NULL);
}

static void route_api_not_found(http_t *self, struct lws *wsi, session_t *s) {
    http_respond_error(s, 404, "not_found", "no such endpoint", NULL);
}

// GET and HEAD of anything that is not an API route: a page or an asset from web_root, or the 404
// page. A file whose ETag the client already holds is answered 304 without a body.
static void route_page(http_t *self, struct lws *wsi, session_t *s) {
    s->static_headers = true;
    if (s->method != LWSHUMETH_GET && s->method != LWSHUMETH_HEAD) {
        http_respond_method_not_allowed(s, METHOD_BIT(LWSHUMETH_GET));
        return;
    }
    const web_file_t *f = web_files_find(self->web, s->path);
    int status = 200;
    if (!f) {
        f = web_files_not_found(self->web);
        status = 404;
    } else if (f->page) {
        s->label = "page";
    } else {
        s->label = "asset";
    }
    s->etag = f->etag;
    s->cache_control = f->cache_control;
    if (status == 200) {
        char *inm = header_dup(wsi, WSI_TOKEN_HTTP_IF_NONE_MATCH, 1024);
        bool fresh = web_etag_matches(inm, f->etag);
        free(inm);
        if (fresh) {
            http_respond_static(s, 304, f->content_type, "", 0);
            return;
        }
    }
    http_respond_static(s, status, f->content_type, f->body, f->len);
}

// ---- lws protocol callbacks -----------------------------------------------------------------

// A new connection is closed at once while draining, and when its descriptor is within
// SWEETY_FD_RESERVE of the open-file limit: those last descriptors stay for the database, curl and
// ZeroMQ, and accept() never reaches EMFILE (lws would then retry it in a busy loop).
static int refuse_connection(http_t *self, const struct lws_filter_network_conn_args *conn) {
    if (self->terminating) return 1;
    if (conn && self->fd_ceiling > 0 && (int64_t)conn->accept_fd >= self->fd_ceiling) {
        self->refused_fd_limit++;
        int64_t now = monotonic_us() / 1000;
        if (now - self->fd_limit_log_ms >= 1000) {   // one line a second at most
            log_warn(&self->log, "connection_refused", "reason=fd_limit fd=%d ceiling=%" PRId64 " refused=%" PRIu64,
                     (int)conn->accept_fd, self->fd_ceiling, self->refused_fd_limit);
            self->fd_limit_log_ms = now;
        }
        return 1;
    }
    return 0;
}

static int http_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len) {
    http_t *self = http_of(wsi);
    session_t *s = user;
    switch (reason) {
    case LWS_CALLBACK_FILTER_NETWORK_CONNECTION:
        return refuse_connection(self, user);
    case LWS_CALLBACK_HTTP:
        return s ? on_http_request(self, wsi, s) : -1;
    case LWS_CALLBACK_HTTP_BODY:
        return s ? on_http_body(s, in, len) : -1;
    case LWS_CALLBACK_HTTP_BODY_COMPLETION:
        return s ? on_http_body_complete(self, wsi, s) : -1;
    case LWS_CALLBACK_HTTP_WRITEABLE:
        return s ? on_http_writeable(self, wsi, s) : 0;
    case LWS_CALLBACK_HTTP_CONFIRM_UPGRADE:
        return ws_confirm_upgrade(self, wsi, in);
    case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION:
        return ws_filter(self, wsi);
    case LWS_CALLBACK_ESTABLISHED:
        return ws_established(self, wsi, s);
    case LWS_CALLBACK_RECEIVE:
        return ws_receive(self, wsi, s, in, len);
    case LWS_CALLBACK_RECEIVE_PONG:
        ws_pong(s);
        return 0;
    case LWS_CALLBACK_SERVER_WRITEABLE:
        return ws_writeable(self, wsi, s);
    case LWS_CALLBACK_CLOSED:
        ws_closed(self, s);
        return 0;
    case LWS_CALLBACK_CLOSED_HTTP:
    case LWS_CALLBACK_HTTP_DROP_PROTOCOL:
        if (s && !s->ws) session_end(self, s, true);
        return 0;
    default:
        break;
    }
    return lws_callback_http_dummy(wsi, reason, user, in, len);
}

// ---- the bus side ---------------------------------------------------------------------------

static void answer_ping(http_t *self, const bus_actor_ping_t *ping) {
    if (strcmp(ping->target, HTTP_ACTOR_NAME) != 0 && strcmp(ping->target, "*") != 0) return;
    bus_msg_t pong;
    bus_msg_init(&pong, BUS_ACTOR_PONG);
    snprintf(pong.u.actor_pong.actor, sizeof pong.u.actor_pong.actor, "%s", HTTP_ACTOR_NAME);
    pong.u.actor_pong.nonce = ping->nonce;
    if (bus_publish(self->bus, &pong) != 0) log_warn(&self->log, "pong_failed", NULL);
}

static void on_bus_message(http_t *self, const bus_msg_t *msg, bool from_sub) {
    if (msg->type > BUS_NONE && msg->type < BUS_TYPE_COUNT) self->bus_messages[msg->type]++;
    switch (msg->type) {
    case BUS_DB_STATE:
        if (!self->db_known || self->db_up != msg->u.db_state.up)
            log_info(&self->log, "db_state", "up=%s reconnects=%" PRId64, msg->u.db_state.up ? "true" : "false",
                     msg->u.db_state.reconnects);
        self->db_known = true;
        self->db_up = msg->u.db_state.up;
        self->db_reconnects = msg->u.db_state.reconnects;
        break;
    case BUS_ACTOR_STARTED:
        actor_seen(self, msg->u.actor_started.actor, true);
        break;
    case BUS_ACTOR_STOPPED:
        actor_seen(self, msg->u.actor_stopped.actor, false);
        break;
    case BUS_ACTOR_PING:
        answer_ping(self, &msg->u.actor_ping);
        break;
    case BUS_ACTOR_PONG:
        // The supervisor starts http last, so the actor.started of the others came before our SUB
        // existed; its ping round after start-up shows them to us instead.
        actor_seen(self, msg->u.actor_pong.actor, true);
        break;
    case BUS_HTTP_REPLY:
        if (!from_sub) on_http_reply(self, &msg->u.http_reply);   // answers come to our inbox only
        break;
    case BUS_BOOKING_STATUS:
        if (from_sub)
            ws_on_status(self, msg->u.booking_status.booking_id, msg->u.booking_status.seq,
                         msg->u.booking_status.status, msg->u.booking_status.at);
        break;
    case BUS_REALTIME_STATUS:   // the broadcaster sends these to our inbox (one hop less than the broker)
        ws_on_status(self, msg->u.realtime_status.booking_id, msg->u.realtime_status.seq,
                     msg->u.realtime_status.status, msg->u.realtime_status.at);
        break;
    case BUS_REALTIME_RESYNC:
        ws_on_resync(self);
        break;
    case BUS_WS_EVENTS:
        if (!from_sub) ws_on_events(self, &msg->u.ws_events);   // answers come to our inbox only
        break;
    default:
        break;
    }
}

// Receives what one bus socket holds, at most BUS_PUMP_BUDGET messages, without waiting: a
// receive that finds nothing (BUS_E_AGAIN) has also re-armed the socket's ZMQ_FD. True when the
// budget ran out (more may be waiting).
static bool pump_socket(http_t *self, zsock_t *sock, bool from_sub) {
    for (int i = 0; i < BUS_PUMP_BUDGET; i++) {
        bus_msg_t msg;
        int rc = bus_endpoint_recv_nowait(self->bus, sock, &msg);
        if (rc == BUS_E_AGAIN) return false;
        if (rc == BUS_E_SOCKET) {   // interrupted, or the context is going away: the backstop retries
            log_debug(&self->log, "bus_recv_failed", "errno=%d", errno);
            return false;
        }
        if (rc != 0) {
            log_warn(&self->log, "bus_message_dropped", "error=%s", bus_strerror(rc));
            continue;
        }
        on_bus_message(self, &msg, from_sub);
    }
    return true;
}

static void begin_shutdown(http_t *self) {
    if (self->terminating) return;
    self->terminating = true;
    self->drain_deadline_us = monotonic_us() + (int64_t)HTTP_DRAIN_MS * 1000;
    self->ws_deadline_us = monotonic_us() + (int64_t)HTTP_WS_CLOSE_MS * 1000;
    log_info(&self->log, "http_draining", "inflight=%d websockets=%zu", self->inflight, ws_open_count(self));
    ws_shutdown(self);
}

static void pump_pipe(http_t *self) {
    while (!self->terminating && (zsock_events(self->pipe) & ZMQ_POLLIN)) {
        zmsg_t *msg = zmsg_recv(self->pipe);
        if (!msg) return;
        char *command = zmsg_popstr(msg);
        if (command && streq(command, "$TERM")) begin_shutdown(self);
        else log_warn(&self->log, "unknown_command", "command=%.32s", command ? command : "-");
        zstr_free(&command);
        zmsg_destroy(&msg);
    }
}

// Drains one of the three sockets. True if it may still hold messages.
static bool pump_one(http_t *self, int which) {
    bus_endpoint_flush(self->bus);   // trace copies of the commands sent since (bus_send_to): before the loop waits
    switch (which) {
    case HTTP_BUS_PIPE: pump_pipe(self); return false;
    case HTTP_BUS_EVENTS: return pump_socket(self, bus_endpoint_events(self->bus), true);
    case HTTP_BUS_INBOX: return pump_socket(self, bus_endpoint_inbox(self->bus), false);
    default: return false;
    }
}

// Drains the pipe, the SUB socket and the inbox. True if a socket may still hold messages.
static bool pump_all(http_t *self) {
    bool more = false;
    for (int i = 0; i < HTTP_BUS_FDS; i++) more |= pump_one(self, i);
    return more;
}

static void on_backstop(lws_sorted_usec_list_t *sul);

static void schedule_backstop(http_t *self, bool soon) {
    lws_sul_schedule(self->ctx, 0, &self->backstop, on_backstop, soon ? BUS_AGAIN_US : BUS_BACKSTOP_US);
}

static void on_backstop(lws_sorted_usec_list_t *sul) {
    http_t *self = lws_container_of(sul, http_t, backstop);
    bool more = pump_all(self);
    pending_expire(self->pending, http_monotonic_ms(), on_reply_expired, self);
    ws_tick(self);
    schedule_backstop(self, more);
}

// One of the ZMQ_FDs fired: only that socket is drained (its edge is its own; each socket has its
// own mailbox), the others wait for their own edge or the backstop.
static int bus_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len) {
    if (reason != LWS_CALLBACK_RAW_RX_FILE) return 0;
    http_t *self = http_of(wsi);
    int which = 0;
    while (which < HTTP_BUS_FDS && self->bus_wsi[which] != wsi) which++;
    bool more = which < HTTP_BUS_FDS ? pump_one(self, which) : pump_all(self);
    if (more) schedule_backstop(self, true);
    return 0;
}

static const struct lws_protocols protocols[] = {
    // rx_buffer_size: each WebSocket keeps a receive buffer this big for its life (lws's default is
    // 4096); a client frame (≤ WS_RX_MAX) larger than it arrives in pieces, which ws.c assembles.
    // tx_packet_size: what one send may carry; without it lws would cap sends at rx_buffer_size.
    {.name = "http", .callback = http_callback, .per_session_data_size = sizeof(session_t), .rx_buffer_size = 1024,
     .tx_packet_size = HTTP_CHUNK},
    {.name = BUS_PROTOCOL, .callback = bus_callback},
    {.name = NULL, .callback = NULL},
};

// ---- set-up and tear-down -------------------------------------------------------------------

// Turns the configured host into what lws binds: a numeric address, or NULL for every address.
// ipv4_only is set for IPv4 addresses (then lws must not open an IPv6 socket).
static int listen_address(const char *host, char *buf, size_t size, const char **iface, bool *ipv4_only) {
    *iface = NULL;
    *ipv4_only = false;
    if (!host || !*host || strcmp(host, "*") == 0 || strcmp(host, "::") == 0 || strcmp(host, "[::]") == 0) return 0;
    if (strcmp(host, "0.0.0.0") == 0) {
        *ipv4_only = true;
        return 0;
    }
    size_t len = strlen(host);
    if (host[0] == '[' && len > 2 && host[len - 1] == ']') {
        host++;
        len -= 2;
    }
    if (len >= size) return -1;
    memcpy(buf, host, len);
    buf[len] = '\0';
    unsigned char addr[16];
    if (inet_pton(AF_INET, buf, addr) == 1) {
        *ipv4_only = true;
        *iface = buf;
        return 0;
    }
    if (inet_pton(AF_INET6, buf, addr) == 1) {
        *iface = buf;
        return 0;
    }
    struct addrinfo hints, *res = NULL;   // a host name: bind its first address
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_ADDRCONFIG;
    if (getaddrinfo(buf, NULL, &hints, &res) != 0 || !res) return -1;
    int rc = -1;
    if (res->ai_family == AF_INET &&
        inet_ntop(AF_INET, &((struct sockaddr_in *)res->ai_addr)->sin_addr, buf, (socklen_t)size)) {
        *ipv4_only = true;
        rc = 0;
    } else if (res->ai_family == AF_INET6 &&
               inet_ntop(AF_INET6, &((struct sockaddr_in6 *)res->ai_addr)->sin6_addr, buf, (socklen_t)size)) {
        rc = 0;
    }
    freeaddrinfo(res);
    if (rc == 0) *iface = buf;
    return rc;
}

// ---- the event loop ---------------------------------------------------------------------------
//
// lws 4.1's own loop is poll(): every wake-up passes every descriptor to the kernel and back, and
// with 1,000 WebSockets that is most of this thread's CPU and a few hundred microseconds on every
// hop of a status push (bench/README.md, "2"). With libev (epoll) a wake-up costs what is ready.
// The loop is ours ("foreign" to lws), so this thread still runs one turn at a time and checks its
// drain state between turns, as with lws_service(). Built without libev, or when lws's libev
// plugin (Debian: libwebsockets-evlib-ev) cannot be loaded, lws's poll() loop is used.

static const char *event_loop_name(const http_t *self) {
#ifdef SWEETY_HAVE_LIBEV
    if (self->evloop) return ev_backend(self->evloop) == EVBACKEND_EPOLL ? "libev-epoll" : "libev";
#endif
    return "poll";
}

static void evloop_destroy(http_t *self) {
#ifdef SWEETY_HAVE_LIBEV
    if (self->evloop) ev_loop_destroy(self->evloop);
#endif
    self->evloop = NULL;
}

// The lws context, on a libev loop when possible.
static struct lws_context *create_context(http_t *self, struct lws_context_creation_info *info) {
#ifdef SWEETY_HAVE_LIBEV
    self->evloop = ev_loop_new(EVFLAG_AUTO | EVFLAG_NOSIGMASK);
    if (self->evloop) {
        void *loops[1] = {self->evloop};
        info->options |= LWS_SERVER_OPTION_LIBEV;
        info->foreign_loops = loops;
        struct lws_context *ctx = lws_create_context(info);
        info->options &= ~(uint64_t)LWS_SERVER_OPTION_LIBEV;
        info->foreign_loops = NULL;
        if (ctx) return ctx;
        evloop_destroy(self);
    }
    log_warn(&self->log, "event_loop_fallback", "loop=poll reason=libev_unavailable");
#endif
    return lws_create_context(info);
}

// One turn of the loop: waits for something to happen (a descriptor, a timer) and serves it.
static int run_once(http_t *self) {
#ifdef SWEETY_HAVE_LIBEV
    if (self->evloop) {
        ev_run(self->evloop, EVRUN_ONCE);
        return 0;
    }
#endif
    return lws_service(self->ctx, 0) < 0 ? -1 : 0;
}

static int http_listen(http_t *self) {
    const config_t *cfg = self->cfg;
    char addr[INET6_ADDRSTRLEN + 64];
    const char *iface = NULL;
    bool ipv4_only = false;
    if (listen_address(cfg->http_listen_host, addr, sizeof addr, &iface, &ipv4_only) != 0) {
        log_error(&self->log, "listen_failed", "host=%s port=%d error=unresolvable_host",
                  cfg->http_listen_host ? cfg->http_listen_host : "-", cfg->http_listen_port);
        return -1;
    }

    struct lws_context_creation_info info;
    memset(&info, 0, sizeof info);   // lws 4.1 has no lws_context_info_defaults
    info.options = LWS_SERVER_OPTION_EXPLICIT_VHOSTS;
    info.user = self;
    info.server_string = "sweetyd";
    info.max_http_header_data = HTTP_HEADER_MAX;
    info.max_http_header_pool = HTTP_HEADER_POOL;
    info.count_threads = 1;
    self->ctx = create_context(self, &info);
    if (!self->ctx) {
        log_error(&self->log, "listen_failed", "error=lws_create_context");
        return -1;
    }

    memset(&info, 0, sizeof info);
    info.vhost_name = "sweety";
    info.port = cfg->http_listen_port;
    info.iface = iface;
    info.protocols = protocols;
    info.options = LWS_SERVER_OPTION_FAIL_UPON_UNABLE_TO_BIND | (ipv4_only ? LWS_SERVER_OPTION_DISABLE_IPV6 : 0);
    info.keepalive_timeout = HTTP_KEEPALIVE_S;
    info.timeout_secs = HTTP_TIMEOUT_S;
    // No lws validity timers (its default policy: a ping after 300 s idle, hang up at 310 s): ws.c
    // pings on its own timer, and lws re-sorts a connection's validity timer into one list of every
    // connection's on each frame received, which costs O(connections) a frame.
    static const lws_retry_bo_t no_validity_timers = {.secs_since_valid_ping = 0, .secs_since_valid_hangup = 0};
    info.retry_and_idle_policy = &no_validity_timers;
    self->vhost = lws_create_vhost(self->ctx, &info);
    if (!self->vhost) {
        log_error(&self->log, "listen_failed", "host=%s port=%d", iface ? iface : "*", cfg->http_listen_port);
        return -1;
    }
    log_info(&self->log, "http_listening", "host=%s port=%d event_loop=%s", iface ? iface : "*",
             lws_get_vhost_listen_port(self->vhost), event_loop_name(self));
    return 0;
}

// Brings one ZeroMQ socket's ZMQ_FD (a dup of it) into lws's loop as bus_wsi[which].
static int adopt_zmq_socket(http_t *self, zsock_t *sock, int which) {
    int fd = fcntl((int)zsock_fd(sock), F_DUPFD_CLOEXEC, 0);
    if (fd < 0) return -1;
    lws_sock_file_fd_type desc;
    memset(&desc, 0, sizeof desc);
    desc.filefd = fd;
    // On failure lws has closed fd.
    self->bus_wsi[which] = lws_adopt_descriptor_vhost(self->vhost, LWS_ADOPT_RAW_FILE_DESC, desc, BUS_PROTOCOL, NULL);
    return self->bus_wsi[which] ? 0 : -1;
}

static void http_destroy(http_t **self_p) {
    http_t *self = *self_p;
    if (!self) return;
    if (self->ctx) {
        lws_sul_cancel(&self->backstop);
        lws_context_destroy(self->ctx);   // closes the listener, every connection and the adopted fds
        self->ctx = NULL;
    }
    evloop_destroy(self);   // after the context: lws stops its watchers on it
    // after the context: closing a connection orphans its pending entry
    pending_destroy(&self->pending);
    ws_state_destroy(self);
    ratelimit_destroy(&self->rl_booking);
    for (size_t i = 0; i < PROVIDER_COUNT; i++) ratelimit_destroy(&self->rl_webhook[i]);
    free(self->plans_body);
    bus_endpoint_destroy(&self->bus);
    cidr_list_destroy(&self->metrics_acl);
    web_files_destroy(&self->web);
    token_signer_destroy(&self->token_signer);
    free(self);
    *self_p = NULL;
}

static http_t *http_new(zsock_t *pipe, const http_args_t *args) {
    http_t *self = calloc(1, sizeof *self);
    if (!self) return NULL;
    self->pipe = pipe;
    self->cfg = args->cfg;
    self->log = args->log;
    self->reply_timeout_ms = args->reply_timeout_ms > 0 ? args->reply_timeout_ms : HTTP_REPLY_TIMEOUT_MS_DEFAULT;
    const char *origin = self->cfg->http_cors_origin;
    if (origin && strlen(origin) < sizeof self->cors_origin) {
        size_t n = strlen(origin);
        while (n > 0 && origin[n - 1] == '/') n--;   // an Origin header never ends in "/"
        memcpy(self->cors_origin, origin, n);
        self->cors_origin[n] = '\0';
    } else if (origin) {
        log_warn(&self->log, "config_ignored", "key=http.cors_origin reason=too_long");
    }
    self->pending = pending_new(HTTP_PENDING_MAX);
    self->rl_booking = ratelimit_new(HTTP_RATELIMIT_KEYS);
    bool limiters = self->rl_booking != NULL;
    for (size_t i = 0; i < PROVIDER_COUNT; i++) {
        self->rl_webhook[i] = ratelimit_new(HTTP_RATELIMIT_KEYS);
        limiters = limiters && self->rl_webhook[i];
    }
    if (!self->pending || !limiters || ws_state_new(self) != 0) {
        log_error(&self->log, "out_of_memory", NULL);
        goto fail;
    }
    // Keyed once here rather than per token (HMAC setup cost several times the hashing). An empty
    // current secret gives a signer that refuses every token, as token_verify_any did.
    const char *const token_secrets[] = {
        self->cfg->security_token_secret ? self->cfg->security_token_secret : "",
        self->cfg->security_token_secret_previous, NULL};
    self->token_signer = token_signer_new(token_secrets);
    if (!self->token_signer) {
        log_error(&self->log, "token_signer_failed", NULL);
        goto fail;
    }

    const char *from = self->cfg->http_metrics_from ? self->cfg->http_metrics_from : HTTP_METRICS_FROM_DEFAULT;
    char err[256];
    self->metrics_acl = cidr_list_new(from, err, sizeof err);
    if (!self->metrics_acl) {
        log_error(&self->log, "config_invalid", "key=http.metrics_from error=\"%s\"", err);
        goto fail;
    }
    if (web_files_load(self->cfg->http_web_root, &self->log, &self->web) != 0) goto fail;
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur > 2 * SWEETY_FD_RESERVE)
        self->fd_ceiling = (int64_t)rl.rlim_cur - SWEETY_FD_RESERVE;
    self->bus = bus_endpoint_new(HTTP_ACTOR_NAME, bus_subscriptions);
    if (!self->bus) {
        log_error(&self->log, "bus_endpoint_failed", NULL);
        goto fail;
    }
    lws_set_log_level(LLL_ERR | LLL_WARN, http_lws_log);
    if (http_listen(self) != 0) goto fail;
    if (adopt_zmq_socket(self, self->pipe, HTTP_BUS_PIPE) != 0 ||
        adopt_zmq_socket(self, bus_endpoint_events(self->bus), HTTP_BUS_EVENTS) != 0 ||
        adopt_zmq_socket(self, bus_endpoint_inbox(self->bus), HTTP_BUS_INBOX) != 0) {
        log_error(&self->log, "adopt_failed", "errno=%d", errno);
        goto fail;
    }
    schedule_backstop(self, false);
    // On an event library lws (re)arms its timer watcher after serving a descriptor; this first
    // wake-up arms it for the backstop even if nothing arrives.
    if (self->evloop) lws_cancel_service(self->ctx);
    actor_seen(self, HTTP_ACTOR_NAME, true);
    return self;
fail:
    http_destroy(&self);
    return NULL;
}

// Start handshake: the signal (consumed by zactor_new), then "READY" or "FAILED" for actor_start().
static void report_start(zsock_t *pipe, bool ok) {
    zsock_signal(pipe, ok ? 0 : (byte)-1);
    zstr_send(pipe, ok ? "READY" : "FAILED");
}

void http_actor(zsock_t *pipe, void *args) {
    http_t *self = http_new(pipe, args);
    if (!self) {
        report_start(pipe, false);
        return;
    }
    log_info(&self->log, "actor_started", NULL);
    report_start(pipe, true);
    pump_all(self);   // our sends on the pipe may have consumed its edge

    while (true) {
        if (run_once(self) < 0) {
            log_error(&self->log, "lws_service_failed", NULL);
            break;
        }
        if (!self->terminating) continue;
        int64_t now = monotonic_us();
        bool ws_waiting = ws_open_count(self) > 0 && now < self->ws_deadline_us;
        if (self->inflight <= 0 && !ws_waiting) break;
        if (self->inflight <= 0) continue;
        if (now < self->drain_deadline_us) continue;
        if (self->drain_answered) break;
        // Requests still waiting for payments get a 503 and a moment to have it written.
        self->drain_answered = true;
        pending_expire(self->pending, INT64_MAX, on_drain_expired, self);
        self->drain_deadline_us = now + (int64_t)HTTP_DRAIN_GRACE_MS * 1000;
    }
    if (self->inflight > 0) log_warn(&self->log, "http_drain_timeout", "inflight=%d", self->inflight);
    if (ws_open_count(self) > 0) log_warn(&self->log, "ws_close_timeout", "websockets=%zu", ws_open_count(self));
    http_destroy(&self);
    log_info(&((const http_args_t *)args)->log, "actor_stopped", NULL);
}
