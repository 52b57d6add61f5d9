// realtime/api_routes.c — the /api/* routes of the HTTP actor: GET /api/plans, POST /api/bookings,
// GET /api/bookings/{id}, POST /api/bookings/{id}/cancel (CONTRACT.md, "HTTP API").
//
// What is checked here, at the edge, so that nothing invalid ever reaches the payments actor:
// rate limit, media type, Idempotency-Key syntax and the whole booking body (booking_request.h)
// for creation; the status token (common/token.h) for reading and cancelling. A request that
// passes is handed to payments (http_forward) and its answer passed through as it is. The plans
// list is the one answer kept here, for HTTP_PLANS_CACHE_MS, as every page load asks for it.
//
// A missing, malformed, expired or foreign token and a wrong id all get the same 404 as an unknown
// booking (payments answers an unknown one with the same code): existence is not revealed.
//
// Runs on the HTTP actor's service thread (http_internal.h).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/token.h"
#include "realtime/booking_request.h"
#include "realtime/http_internal.h"

#define BOOKINGS_PREFIX "/api/bookings/"
#define CANCEL_SUFFIX "/cancel"

void http_plans_cache_store(http_t *self, const char *body, size_t len) {
    char *copy = malloc(len + 1);
    if (!copy) return;
    memcpy(copy, body, len);
    copy[len] = '\0';
    free(self->plans_body);
    self->plans_body = copy;
    self->plans_len = len;
    self->plans_until_ms = http_monotonic_ms() + HTTP_PLANS_CACHE_MS;
}

void route_plans(http_t *self, struct lws *wsi, session_t *s) {
    if (self->plans_body && http_monotonic_ms() < self->plans_until_ms) {
        http_respond_json_text(s, 200, self->plans_body, self->plans_len);
        return;
    }
    bus_msg_t msg;
    bus_msg_init(&msg, BUS_PLANS_GET);
    http_forward(self, wsi, s, &msg, PENDING_PLANS);
}

// Copies src into a bus string field; the sizes were checked by booking_request_parse and the
// static assertions below, so this never cuts.
#define COPY_FIELD(dst, src) snprintf((dst), sizeof(dst), "%s", (src))

_Static_assert(sizeof(((bus_booking_create_t *)0)->name) >= sizeof(((booking_request_t *)0)->name), "name");
_Static_assert(sizeof(((bus_booking_create_t *)0)->phone) >= sizeof(((booking_request_t *)0)->phone), "phone");
_Static_assert(sizeof(((bus_booking_create_t *)0)->email) >= sizeof(((booking_request_t *)0)->email), "email");
_Static_assert(sizeof(((bus_booking_create_t *)0)->plan) >= sizeof(((booking_request_t *)0)->plan), "plan");
_Static_assert(sizeof(((bus_booking_create_t *)0)->message) >= sizeof(((booking_request_t *)0)->message), "message");
_Static_assert(sizeof(((bus_booking_create_t *)0)->payment_method) >= sizeof(((booking_request_t *)0)->payment_method),
               "payment_method");
_Static_assert(sizeof(((bus_booking_create_t *)0)->idem_key) > HTTP_IDEM_KEY_MAX, "idem_key");
_Static_assert(sizeof(((bus_booking_create_t *)0)->request_hash) >= 65, "request_hash");

void route_bookings(http_t *self, struct lws *wsi, session_t *s) {
    // Every attempt counts against the limit, valid or not: invalid ones are how a form is probed.
    if (!http_rate_allow(self, self->rl_booking, wsi, self->cfg->http_booking_rate_per_min)) {
        http_respond_error(s, 429, "rate_limited", "too many booking requests from this address; try again in a minute",
                           NULL);
        return;
    }
    if (!s->json_body) {
        http_respond_error(s, 415, "unsupported_media_type", "the body must be sent as application/json", NULL);
        return;
    }
    if (s->idem_present && !s->idem_valid) {
        http_respond_error(s, 400, "invalid_idempotency_key",
                           "Idempotency-Key must be 1 to 255 printable ASCII characters", NULL);
        return;
    }
    const char *body = s->body ? s->body : "";
    booking_request_t req;
    api_error_t err;
    if (booking_request_parse(body, s->body_len, (int64_t)time(NULL), &req, &err) != 0) {
        http_respond_api_error(s, &err);
        return;
    }
    bus_msg_t msg;
    bus_msg_init(&msg, BUS_BOOKING_CREATE);
    bus_booking_create_t *c = &msg.u.booking_create;
    if (s->idem_valid) {   // the hash only tells a retry from another request under the same key
        COPY_FIELD(c->idem_key, s->idem_key);
        booking_request_hash(body, s->body_len, c->request_hash);
    }
    COPY_FIELD(c->name, req.name);
    COPY_FIELD(c->phone, req.phone);
    COPY_FIELD(c->email, req.email);
    COPY_FIELD(c->plan, req.plan);
    COPY_FIELD(c->message, req.message);
    COPY_FIELD(c->payment_method, req.payment_method);
    c->scheduled_for = req.scheduled_for;
    http_forward(self, wsi, s, &msg, PENDING_BOOKING);
}

static void respond_no_booking(session_t *s) {
    http_respond_error(s, 404, "not_found", "no such booking", NULL);
}

// The token must be ours, unexpired, and name exactly the booking in the path.
static bool token_matches(http_t *self, const session_t *s, const char *id, size_t id_len, char bid[37]) {
    if (!s->bearer || id_len == 0 || id_len > TOKEN_BID_MAX) return false;
    if (http_token_verify(self, s->bearer, id, id_len) != 0) return false;
    memcpy(bid, id, id_len);
    bid[id_len] = '\0';
    return true;
}

void route_booking_item(http_t *self, struct lws *wsi, session_t *s) {
    const char *id = s->path + strlen(BOOKINGS_PREFIX);
    const char *slash = strchr(id, '/');
    size_t id_len = slash ? (size_t)(slash - id) : strlen(id);
    bool cancel = slash && strcmp(slash, CANCEL_SUFFIX) == 0;
    if ((slash && !cancel) || id_len == 0) {
        s->label = "/api/*";
        http_respond_error(s, 404, "not_found", "no such endpoint", NULL);
        return;
    }
    s->label = cancel ? "/api/bookings/{id}/cancel" : "/api/bookings/{id}";
    int m = s->head ? LWSHUMETH_GET : s->method;
    int want = cancel ? LWSHUMETH_POST : LWSHUMETH_GET;
    if (m != want) {
        http_respond_method_not_allowed(s, METHOD_BIT(want));
        return;
    }
    char bid[37];
    if (!token_matches(self, s, id, id_len, bid)) {
        respond_no_booking(s);
        return;
    }
    bus_msg_t msg;
    // A cancel's body, if any (at most 16 KiB, already read), is ignored.
    if (cancel) {
        bus_msg_init(&msg, BUS_BOOKING_CANCEL);
        COPY_FIELD(msg.u.booking_cancel.booking_id, bid);
    } else {
        bus_msg_init(&msg, BUS_BOOKING_GET);
        COPY_FIELD(msg.u.booking_get.booking_id, bid);
    }
    http_forward(self, wsi, s, &msg, PENDING_BOOKING);
}
