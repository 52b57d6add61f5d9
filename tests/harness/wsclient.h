// tests/harness/wsclient.h — a WebSocket test client on libwebsockets' client API. One wsc_ctx_t
// is one lws context, serviced only by the test thread that calls wsc_service/wsc_wait; it holds
// any number of connections (1,000 and more, given the file-descriptor limit). Every text frame a
// connection receives is kept, in order, for the test to inspect.
#ifndef SWEETY_TEST_WSCLIENT_H
#define SWEETY_TEST_WSCLIENT_H

#include <stdbool.h>
#include <stddef.h>

typedef struct wsc_ctx wsc_ctx_t;
typedef struct wsc wsc_t;

wsc_ctx_t *wsc_ctx_new(void);
void wsc_ctx_destroy(wsc_ctx_t **self_p);   // closes and frees every connection

// Starts connecting to ws://127.0.0.1:port/path; origin NULL sends no Origin header. NULL on an
// immediate failure. The connection belongs to the context.
wsc_t *wsc_connect(wsc_ctx_t *ctx, int port, const char *path, const char *origin);
// Queues one text frame (copied).
int wsc_send(wsc_t *c, const char *text);
// Client-initiated close (code 1000).
void wsc_close(wsc_t *c);
// false: stop reading from the socket (the server's frames pile up in the kernel and at the server).
void wsc_rx_enable(wsc_t *c, bool enable);

// Services the context for about ms milliseconds.
void wsc_service(wsc_ctx_t *ctx, int ms);
// Services until done(arg) or the timeout; 0 when done.
int wsc_wait(wsc_ctx_t *ctx, bool (*done)(void *arg), void *arg, int timeout_ms);

bool wsc_is_open(const wsc_t *c);       // the upgrade succeeded and it is not closed
bool wsc_is_closed(const wsc_t *c);     // closed, or the connection failed
bool wsc_failed(const wsc_t *c);        // the connection or upgrade failed
int wsc_close_code(const wsc_t *c);     // code of the server's close frame; 0 when none came
int wsc_http_status(const wsc_t *c);    // the HTTP status of a refused upgrade; 0 when unknown
size_t wsc_count(const wsc_t *c);       // text frames received
const char *wsc_msg(const wsc_t *c, size_t i);

#endif
