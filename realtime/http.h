// realtime/http.h — the HTTP + WebSocket actor: the only code that touches libwebsockets.
//
// One thread runs the lws service loop. Its bus sockets (endpoint SUB + inbox) and its czmq pipe are
// adopted into that loop as raw file descriptors (ZMQ_FD), so bus messages and HTTP events are
// handled on the same thread and no lws call is ever made from another thread.
#ifndef SWEETY_HTTP_H
#define SWEETY_HTTP_H

#include <czmq.h>

#include "common/log.h"
#include "conf/config.h"

// Descriptors kept back from connections: database connections, ZeroMQ sockets, curl, the trace
// endpoint, a reconnect or two (about 80 at idle, measured). sweetyd logs limit − this as the
// connections it allows, and the http actor refuses connections beyond it.
#define SWEETY_FD_RESERVE 128

typedef struct {
    const config_t *cfg;        // read-only for the process lifetime
    logger_t log;
    int64_t reply_timeout_ms;   // how long a request waits for the payments actor; 0 = 30000
} http_args_t;

// czmq actor: zactor_new(http_actor, &args) (args must outlive it). Signals 0 once listening on
// cfg->http_listen (-1 if the port cannot be bound, the address list in http.metrics_from is
// malformed or the bus endpoint cannot be made), then sends "READY" or "FAILED" (a failed actor
// then returns): zactor_new swallows the signal's status, so callers wait for that string, as
// actor_start() in actors/actor.h does.
// Answers actor.ping (target "http" or "*") with actor.pong.
// Serves /api/* and /webhooks/{stripe,cryptomus} by validating at the edge and handing the work to
// the "payments" actor's inbox (PLANS_GET, BOOKING_CREATE/GET/CANCEL, PAYMENT_WEBHOOK, each with a
// request_id); payments answers with HTTP_REPLY {request_id, status, outcome, body} on the inbox of
// "http", and that status and body are the response.
// On $TERM: stops accepting, finishes in-flight requests (bounded), closes WebSockets with 1001.
void http_actor(zsock_t *pipe, void *args);

#endif
