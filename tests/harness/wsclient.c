// tests/harness/wsclient.c — see wsclient.h. Runs on the test thread only (lws is not thread-safe).
#include "tests/harness/wsclient.h"

#include <libwebsockets.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct out_frame {
    struct out_frame *next;
    size_t len;
    unsigned char data[];
} out_frame_t;

struct wsc {
    wsc_ctx_t *ctx;
    struct lws *wsi;
    wsc_t *next;
    bool open, closed, failed, want_close;
    int close_code, http_status;
    out_frame_t *out_head, *out_tail;
    char *rx;
    size_t rx_len;
    char **msgs;
    size_t nmsgs, cap;
};

struct wsc_ctx {
    struct lws_context *lws;
    wsc_t *conns;
    lws_sorted_usec_list_t tick;   // lws 4.1 ignores lws_service's timeout: a timer bounds each wait
};

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void keep_msg(wsc_t *c) {
    if (c->nmsgs == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 16;
        char **m = realloc(c->msgs, cap * sizeof *m);
        if (!m) return;
        c->msgs = m;
        c->cap = cap;
    }
    c->msgs[c->nmsgs++] = c->rx ? c->rx : strdup("");
    c->rx = NULL;
    c->rx_len = 0;
}

static int callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len) {
    wsc_t *c = lws_get_opaque_user_data(wsi);
    switch (reason) {
    case LWS_CALLBACK_CLIENT_ESTABLISHED:
        if (c) {
            c->open = true;
            if (c->out_head || c->want_close) lws_callback_on_writable(wsi);
        }
        break;
    case LWS_CALLBACK_CLIENT_CONNECTION_ERROR:
        if (c) {
            c->failed = c->closed = true;
            c->open = false;
            c->http_status = (int)lws_http_client_http_response(wsi);
            c->wsi = NULL;
        }
        break;
    case LWS_CALLBACK_CLIENT_RECEIVE:
        if (!c) break;
        {
            char *rx = realloc(c->rx, c->rx_len + len + 1);
            if (!rx) return -1;
            memcpy(rx + c->rx_len, in, len);
            c->rx = rx;
            c->rx_len += len;
            rx[c->rx_len] = '\0';
        }
        if (lws_is_final_fragment(wsi) && lws_remaining_packet_payload(wsi) == 0) keep_msg(c);
        break;
    case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
        if (c && len >= 2) c->close_code = ((const unsigned char *)in)[0] << 8 | ((const unsigned char *)in)[1];
        break;
    case LWS_CALLBACK_CLIENT_WRITEABLE:
        if (!c) break;
        if (c->out_head) {
            out_frame_t *f = c->out_head;
            if (lws_write(wsi, f->data + LWS_PRE, f->len, LWS_WRITE_TEXT) < (int)f->len) return -1;
            c->out_head = f->next;
            if (!c->out_head) c->out_tail = NULL;
            free(f);
            if (c->out_head || c->want_close) lws_callback_on_writable(wsi);
            break;
        }
        if (c->want_close) {
            lws_close_reason(wsi, LWS_CLOSE_STATUS_NORMAL, (unsigned char *)"bye", 3);
            return -1;
        }
        break;
    case LWS_CALLBACK_CLIENT_CLOSED:
        if (c) {
            c->closed = true;
            c->open = false;
            c->wsi = NULL;
        }
        break;
    default:
        break;
    }
    return 0;
}

static const struct lws_protocols protocols[] = {
    {.name = "sweety-test-client", .callback = callback, .rx_buffer_size = 4096},
    {.name = NULL, .callback = NULL},
};

wsc_ctx_t *wsc_ctx_new(void) {
    wsc_ctx_t *self = calloc(1, sizeof *self);
    if (!self) return NULL;
    lws_set_log_level(LLL_ERR, NULL);
    struct lws_context_creation_info info;
    memset(&info, 0, sizeof info);
    info.port = CONTEXT_PORT_NO_LISTEN;
    info.options = LWS_SERVER_OPTION_JUST_USE_RAW_ORIGIN;   // send the Origin exactly as given
    info.protocols = protocols;
    self->lws = lws_create_context(&info);
    if (!self->lws) {
        free(self);
        return NULL;
    }
    return self;
}

static void conn_free(wsc_t *c) {
    while (c->out_head) {
        out_frame_t *f = c->out_head;
        c->out_head = f->next;
        free(f);
    }
    for (size_t i = 0; i < c->nmsgs; i++) free(c->msgs[i]);
    free(c->msgs);
    free(c->rx);
    free(c);
}

void wsc_ctx_destroy(wsc_ctx_t **self_p) {
    wsc_ctx_t *self = *self_p;
    if (!self) return;
    for (wsc_t *c = self->conns; c; c = c->next)
        if (c->wsi) lws_set_opaque_user_data(c->wsi, NULL);
    lws_sul_cancel(&self->tick);
    lws_context_destroy(self->lws);
    while (self->conns) {
        wsc_t *c = self->conns;
        self->conns = c->next;
        conn_free(c);
    }
    free(self);
    *self_p = NULL;
}

wsc_t *wsc_connect(wsc_ctx_t *ctx, int port, const char *path, const char *origin) {
    wsc_t *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->ctx = ctx;
    struct lws_client_connect_info i;
    memset(&i, 0, sizeof i);
    i.context = ctx->lws;
    i.address = "127.0.0.1";
    i.port = port;
    i.path = path;
    i.host = "127.0.0.1";
    i.origin = origin;
    i.opaque_user_data = c;
    i.pwsi = &c->wsi;
    c->next = ctx->conns;
    ctx->conns = c;
    if (!lws_client_connect_via_info(&i)) {
        c->failed = c->closed = true;
        c->wsi = NULL;
    }
    return c;
}

int wsc_send(wsc_t *c, const char *text) {
    if (c->closed) return -1;
    size_t len = strlen(text);
    out_frame_t *f = malloc(sizeof *f + LWS_PRE + len);
    if (!f) return -1;
    f->next = NULL;
    f->len = len;
    memcpy(f->data + LWS_PRE, text, len);
    if (c->out_tail) c->out_tail->next = f;
    else c->out_head = f;
    c->out_tail = f;
    if (c->open && c->wsi) lws_callback_on_writable(c->wsi);
    return 0;
}

void wsc_close(wsc_t *c) {
    c->want_close = true;
    if (c->open && c->wsi) lws_callback_on_writable(c->wsi);
}

void wsc_rx_enable(wsc_t *c, bool enable) {
    if (c->wsi) lws_rx_flow_control(c->wsi, enable ? 1 : 0);
}

static void on_tick(lws_sorted_usec_list_t *sul) {
    (void)sul;
}

// One turn of the service loop, at most about 10 ms long.
static void service_once(wsc_ctx_t *ctx) {
    lws_sul_schedule(ctx->lws, 0, &ctx->tick, on_tick, 10 * LWS_US_PER_MS);
    lws_service(ctx->lws, 0);
}

void wsc_service(wsc_ctx_t *ctx, int ms) {
    int64_t end = now_ms() + ms;
    do {
        service_once(ctx);
    } while (now_ms() < end);
}

int wsc_wait(wsc_ctx_t *ctx, bool (*done)(void *arg), void *arg, int timeout_ms) {
    int64_t end = now_ms() + timeout_ms;
    while (!done(arg)) {
        if (now_ms() >= end) return -1;
        service_once(ctx);
    }
    return 0;
}

bool wsc_is_open(const wsc_t *c) { return c->open && !c->closed; }
bool wsc_is_closed(const wsc_t *c) { return c->closed; }
bool wsc_failed(const wsc_t *c) { return c->failed; }
int wsc_close_code(const wsc_t *c) { return c->close_code; }
int wsc_http_status(const wsc_t *c) { return c->http_status; }
size_t wsc_count(const wsc_t *c) { return c->nmsgs; }
const char *wsc_msg(const wsc_t *c, size_t i) { return i < c->nmsgs ? c->msgs[i] : NULL; }
