// realtime/http_internal.h — what the files of the HTTP actor share: its state (http_t), one
// connection's state (session_t), the route table entry, and the helpers the route files use to
// answer or to hand a request to another actor. Private to realtime/: http.h is the public face.
//
// Files: http.c (the lws server, sessions, writing responses, the bus side, /healthz, /metrics,
// pages), api_routes.c (/api/*), webhook_routes.c (/webhooks/*), pending.c (requests waiting for
// an answer), ratelimit.c (per-address limits).
//
// Threading: everything declared here is used on the actor's one thread, the lws service thread.
#ifndef SWEETY_HTTP_INTERNAL_H
#define SWEETY_HTTP_INTERNAL_H

#include <libwebsockets.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "bus/bus.h"
#include "common/log.h"
#include "common/token.h"
#include "conf/config.h"
#include "realtime/api_error.h"
#include "realtime/cidr.h"
#include "realtime/pending.h"
#include "realtime/ratelimit.h"

#define HTTP_ACTOR_NAME "http"
#define HTTP_PAYMENTS_ACTOR "payments"        // serves plans, bookings and payment webhooks
#define HTTP_DIALER_ACTOR "dialer"            // serves VAPI server messages (vapi.webhook)
#define HTTP_BODY_MAX (16 * 1024)             // default request body limit (413 too_large)
#define HTTP_WEBHOOK_BODY_MAX (256 * 1024)    // body limit of the provider webhook routes
#define HTTP_VAPI_BODY_MAX (1024 * 1024)      // ... but /webhooks/vapi: end-of-call reports carry transcripts
#define HTTP_SEND_TIMEOUT_MS 200              // a command that cannot be queued this fast: 503
#define HTTP_PENDING_MAX 4096                 // requests waiting for an answer; more: 503
#define HTTP_REPLY_TIMEOUT_MS_DEFAULT 30000   // no answer within this: 503
#define HTTP_RATELIMIT_KEYS 8192              // addresses remembered per limited endpoint
#define HTTP_PLANS_CACHE_MS 1000              // GET /api/plans answers are reused this long
#define HTTP_IDEM_KEY_MAX 255
#define HTTP_CORS_MAX_AGE_S 600

// Webhook metrics: sweety_webhooks_total{provider,outcome}. The first four outcomes come from the
// serving actor's reply (payments, or the dialer for VAPI); the others are decided here at the edge
// (and `ignored` too, for VAPI message types nobody acts on).
typedef enum { PROVIDER_STRIPE, PROVIDER_CRYPTOMUS, PROVIDER_VAPI, PROVIDER_COUNT } webhook_provider_t;
typedef enum {
    OUTCOME_APPLIED,
    OUTCOME_DUPLICATE,
    OUTCOME_IGNORED,
    OUTCOME_UNKNOWN_TARGET,
    OUTCOME_BAD_SIGNATURE,     // also a stale timestamp
    OUTCOME_RATE_LIMITED,
    OUTCOME_INVALID_PAYLOAD,   // verified, but not an event we can read
    OUTCOME_UNAVAILABLE,       // not stored: payments unreachable, late, or answered 5xx
    OUTCOME_COUNT
} webhook_outcome_t;

// What a pending request was, so its answer can be accounted even when the client is gone.
typedef enum {
    PENDING_PLANS = 1,
    PENDING_BOOKING,                  // create, get, cancel: passed through as they are
    PENDING_WEBHOOK_BASE = 16,        // + webhook_provider_t
} pending_kind_t;

// Secrets that can have a previous value during a rotation; sweety_secret_matches_total{key,which}
// counts which of the two a request was verified with, so an operator sees when the previous one is
// no longer used and can be removed (docs/SECURITY.md).
typedef enum {
    SECRET_STRIPE_WEBHOOK,      // stripe.webhook_secret
    SECRET_CRYPTOMUS_PAYMENT,   // cryptomus.payment_key (webhooks)
    SECRET_VAPI_WEBHOOK,        // vapi.webhook_secret
    SECRET_VAPI_HMAC,           // vapi.webhook_hmac_secret
    SECRET_TOKEN,               // security.token_secret
    SECRET_COUNT
} secret_use_t;

// Why a request could not be handed over (sweety_http_upstream_failures_total{reason}).
typedef enum { UPSTREAM_SEND_FAILED, UPSTREAM_TABLE_FULL, UPSTREAM_TIMEOUT, UPSTREAM_COUNT } upstream_failure_t;

#define METRICS_ACTORS_MAX 64
#define METRICS_REQUESTS_MAX 128

typedef struct {
    char name[32];
    bool up;
} actor_seen_t;

typedef struct {
    const char *label;   // a route's label (static string)
    int status;
    uint64_t count;
} request_count_t;

// The ZeroMQ sockets whose ZMQ_FD the lws loop watches (http.c): the actor pipe, the bus SUB, the
// inbox.
enum { HTTP_BUS_PIPE, HTTP_BUS_EVENTS, HTTP_BUS_INBOX, HTTP_BUS_FDS };

typedef struct http_t {
    const config_t *cfg;
    logger_t log;
    zsock_t *pipe;
    bus_endpoint_t *bus;
    cidr_list_t *metrics_acl;
    struct lws_context *ctx;
    struct lws_vhost *vhost;
    void *evloop;              // the libev loop lws runs on (epoll); NULL: lws's own poll() loop
    struct lws *bus_wsi[HTTP_BUS_FDS];   // the adopted ZMQ_FDs, to tell which socket woke us
    lws_sorted_usec_list_t backstop;
    bool terminating;          // $TERM received: draining
    int64_t drain_deadline_us;
    bool drain_answered;       // the drain deadline passed: requests still waiting were answered 503
    int inflight;              // transactions begun and not yet answered
    // requests handed to other actors
    pending_t *pending;
    int64_t reply_timeout_ms;
    int64_t upstream_log_ms;   // last upstream-failure log line (at most one a second)
    uint64_t upstream_suppressed;
    // per-address limits: POST /api/bookings, and each webhook endpoint
    ratelimit_t *rl_booking;
    ratelimit_t *rl_webhook[PROVIDER_COUNT];
    // the allowed CORS origin (http.cors_origin without a trailing "/"), "" when none
    char cors_origin[512];
    // GET /api/plans cache
    char *plans_body;
    size_t plans_len;
    int64_t plans_until_ms;
    // health, from db.state
    bool db_known, db_up;
    int64_t db_reconnects;
    // metrics
    uint64_t bus_messages[BUS_TYPE_COUNT];   // received by this actor (SUB and inbox), by type
    actor_seen_t actors[METRICS_ACTORS_MAX];
    size_t actor_count;
    request_count_t requests[METRICS_REQUESTS_MAX];
    size_t request_count;
    uint64_t webhooks[PROVIDER_COUNT][OUTCOME_COUNT];
    uint64_t upstream_failures[UPSTREAM_COUNT];
    uint64_t secret_matches[SECRET_COUNT][2];   // [use][0 current, 1 previous]
    // WebSocket connections and their subscriptions (ws.c)
    struct ws_state *ws;
    int64_t ws_deadline_us;    // $TERM: how long to wait for WebSockets to close
    // pages and assets from http.web_root (web_files.c)
    struct web_files *web;
    // security.token_secret (issuing) and security.token_secret_previous, keyed once for the
    // status tokens this thread checks (http_token_verify, WebSocket subscribe). The config is
    // read-only for the process lifetime and a rotation restarts sweetyd, so it never needs
    // rebuilding; the signer is not thread safe, and only this actor's thread uses it.
    token_signer_t *token_signer;
    // connections refused near the open-file limit (refuse_connection)
    int64_t fd_ceiling;        // descriptors at or above this are refused; 0: no limit known
    uint64_t refused_fd_limit;
    int64_t fd_limit_log_ms;
} http_t;

typedef struct route_t route_t;

// One HTTP connection's state, allocated (zeroed) by lws. With keep-alive it serves one
// transaction after another; session_end() returns it to all-zero between them.
typedef struct {
    bool active;               // a transaction is in progress
    int64_t t0_us;
    int method;                // LWSHUMETH_*, -1 when lws could not tell
    bool head;
    char *path;                // decoded path without the query string
    const route_t *route;
    const char *label;         // metrics label (the route's, or a more precise static one)
    // request headers, captured when the request line and headers are in
    bool api;                  // an /api/* route: CORS applies (Vary: Origin)
    bool cors_allowed;         // Origin equals http.cors_origin
    bool json_body;            // Content-Type is application/json (parameters allowed)
    char *bearer;              // Authorization: Bearer <token>, NULL when absent or not Bearer
    bool idem_present, idem_valid;
    char idem_key[HTTP_IDEM_KEY_MAX + 1];
    char *stripe_signature;    // Stripe-Signature, NULL when absent or too long
    char *vapi_secret;         // X-Vapi-Secret, the same
    char *vapi_signature;      // x-signature (VAPI HMAC credential), the same
    char *vapi_timestamp;      // x-timestamp, the same
    // request body
    size_t body_max;
    bool expect_body;
    bool body_too_large;
    char *body;
    size_t body_len;
    // waiting for another actor's answer (0: not waiting)
    int64_t request_id;
    // response
    bool responding;           // status, type and body are set
    bool headers_sent;
    bool no_store;
    bool close_after;
    bool preflight;            // a CORS preflight: add the Access-Control-Allow-* headers
    int status;
    const char *content_type;
    char allow[64];
    bool static_headers;       // a page or asset: ETag, Cache-Control, CSP and the other page headers
    const char *etag;          // static responses: the file's (owned by the web_files set)
    const char *cache_control;
    const char *resp;          // points into resp_owned, or at a static string
    char *resp_owned;
    size_t resp_len, resp_sent;
    // after a WebSocket upgrade: the connection's state (ws.c); the fields above are then unused
    struct ws_conn *ws;
} session_t;

typedef void (*route_fn)(http_t *self, struct lws *wsi, session_t *s);

#define ROUTE_API 1u           // under /api: CORS headers and OPTIONS preflight

struct route_t {
    const char *path;
    bool prefix;               // path is a prefix ("/api/") rather than the whole path
    const char *label;         // metrics label: bounded set, never the raw path
    unsigned methods;          // accepted methods (METHOD_BIT); 0 = any
    route_fn handler;
    size_t body_max;           // request body limit; 0 = HTTP_BODY_MAX
    unsigned flags;            // ROUTE_*
};

#define METHOD_BIT(m) (1u << (m))

// ---- answering (http.c) ---------------------------------------------------------------------

// Sets the response. Takes ownership of body (malloc'ed); a NULL body means an allocation failed:
// the answer becomes 500.
void http_respond(session_t *s, int status, const char *content_type, char *body, size_t len, bool no_store);
// A body the session does not own and that outlives it (a page or asset held by the web_files set).
void http_respond_static(session_t *s, int status, const char *content_type, const char *body, size_t len);
// A JSON document given as text (copied), Content-Type application/json; charset=utf-8, no-store.
void http_respond_json_text(session_t *s, int status, const char *json, size_t len);
// The contract's error shape, built by api_error_json: {"error":{"code","field"?,"message"}}.
void http_respond_error(session_t *s, int status, const char *code, const char *message, const char *field);
void http_respond_api_error(session_t *s, const api_error_t *e);
// 405 method_not_allowed with an Allow header listing `methods`.
void http_respond_method_not_allowed(session_t *s, unsigned methods);

// Hands msg (its request_id is filled in here) to the actor that serves it — VAPI_WEBHOOK to the
// dialer, PLANS_GET, BOOKING_* and PAYMENT_WEBHOOK to payments — and parks the request until
// HTTP_REPLY, the client leaving, or the reply timeout. On failure the session gets 503
// unavailable and false is returned.
bool http_forward(http_t *self, struct lws *wsi, session_t *s, bus_msg_t *msg, int kind);

// Counts one request of this connection's source address against `rl`. IPv4 addresses (also
// IPv4-mapped IPv6) count one by one, IPv6 addresses by their /64 (what one client controls).
// false: over the limit. An address that cannot be read is allowed.
bool http_rate_allow(http_t *self, ratelimit_t *rl, struct lws *wsi, int64_t limit_per_min);

void http_count_webhook(http_t *self, webhook_provider_t provider, webhook_outcome_t outcome);

// Counts a request verified with the current (matched 0) or the previous (1) value of a secret;
// the previous one also gets a debug log line (naming the key, never the secret). Other values of
// matched (no match) count nothing.
void http_count_secret(http_t *self, secret_use_t use, int matched);

// A status token for booking id[0..id_len), checked against security.token_secret and, during a
// rotation, security.token_secret_previous (self->token_signer, common/token.h); counted with
// http_count_secret.
// 0 when it is valid and names exactly that booking, else -1.
int http_token_verify(http_t *self, const char *token, const char *id, size_t id_len);

int64_t http_monotonic_ms(void);

// ---- routes (api_routes.c, webhook_routes.c) --------------------------------------------------

void route_plans(http_t *self, struct lws *wsi, session_t *s);
void route_bookings(http_t *self, struct lws *wsi, session_t *s);
void route_booking_item(http_t *self, struct lws *wsi, session_t *s);   // GET {id}, POST {id}/cancel
void route_webhook_stripe(http_t *self, struct lws *wsi, session_t *s);
void route_webhook_cryptomus(http_t *self, struct lws *wsi, session_t *s);
void route_webhook_vapi(http_t *self, struct lws *wsi, session_t *s);

// A 200 answer to PLANS_GET arrived: keep it for HTTP_PLANS_CACHE_MS (api_routes.c).
void http_plans_cache_store(http_t *self, const char *body, size_t len);

// booking.status is subscribed to only while some WebSocket watches a booking (ws.c calls this when
// the first subscription comes and the last goes): otherwise every booking made would wake this
// thread for nothing. A status published before the subscription reaches the broker is still
// delivered by the broadcaster's realtime.status (the database's NOTIFY) or by the replay.
void http_watch_statuses(http_t *self, bool on);

// ---- WebSockets (ws.c) ------------------------------------------------------------------------

int ws_state_new(http_t *self);
void ws_state_destroy(http_t *self);
// LWS_CALLBACK_HTTP_CONFIRM_UPGRADE: 0 accept, 1 refused with 403 already sent, -1 hang up.
int ws_confirm_upgrade(http_t *self, struct lws *wsi, const char *proto);
// LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION: 0 accept (no Origin, or the allowed one), 1 refuse.
int ws_filter(http_t *self, struct lws *wsi);
int ws_established(http_t *self, struct lws *wsi, session_t *s);
int ws_receive(http_t *self, struct lws *wsi, session_t *s, const void *in, size_t len);
int ws_writeable(http_t *self, struct lws *wsi, session_t *s);
void ws_pong(session_t *s);
void ws_closed(http_t *self, session_t *s);
// A committed status change (booking.status or realtime.status), a replay page, a LISTEN resync.
void ws_on_status(http_t *self, const char *booking_id, int64_t seq, const char *status, int64_t at_us);
void ws_on_events(http_t *self, const bus_ws_events_t *e);
void ws_on_resync(http_t *self);
// Replay retries and pings; cheap to call often (does its work once a second).
void ws_tick(http_t *self);
// $TERM: every connection is closed with 1001.
void ws_shutdown(http_t *self);
size_t ws_open_count(const http_t *self);
void ws_metrics(const http_t *self, FILE *f);

#endif
