// actors/httpc.c — libcurl multi on a czmq zloop; see httpc.h for the contract.
//
// How the two event systems meet (the "multi_socket" style of curl's hiperfifo example):
//   - curl tells us which sockets it wants watched (CURLMOPT_SOCKETFUNCTION); each becomes a zloop
//     poller on the raw fd (zmq_pollitem_t .socket = NULL, .fd = s). A change of interest (IN → IN|OUT)
//     is an end + re-register, since zloop has no "modify".
//   - curl tells us when it next needs a call (CURLMOPT_TIMERFUNCTION); that is one one-shot zloop
//     timer, replaced whenever curl changes its mind.
//   - on socket activity or timer expiry we call curl_multi_socket_action() and then harvest the
//     finished transfers with curl_multi_info_read(). A finished attempt either completes the
//     request (its `done` runs) or waits on a one-shot zloop timer and is added to the multi again.
//
// Two zloop facts shape the code. zloop_timer_end() only marks a timer (it is removed after the
// current pass), so a cancelled timer can still fire once: every timer handler checks that its id
// is still the one we want. And a handler's arg is a raw pointer: httpc objects are kept in a
// per-thread list of live instances, so a poller or timer that outlives its httpc does nothing.
#include "actors/httpc.h"

#include <assert.h>
#include <curl/curl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/util.h"

typedef struct transfer_t transfer_t;

struct transfer_t {
    transfer_t *prev, *next;
    CURL *easy;
    struct curl_slist *headers;
    char method[16];
    char log_name[64];
    char *url;
    char *body;                 // NULL when the request has none
    size_t body_len;
    bool retryable;
    bool retry_unsent;
    int max_attempts;
    int attempts;
    int retry_timer;            // zloop timer id while waiting for a retry, else -1
    bool in_multi;
    int64_t started_ms;
    httpc_done_fn *done;
    void *arg;
    // the current attempt
    char *rbuf;
    size_t rlen, rcap;
    bool too_large;
    char request_id[64];
    int should_retry;
    long status;
    int error;
};

struct httpc_t {
    zloop_t *loop;
    logger_t log;
    CURLM *multi;
    int curl_timer;             // zloop timer standing for curl's timeout, -1 when none
    transfer_t *head;           // every request not yet completed
    size_t count;
    int base_ms, cap_ms;
    bool destroying;
    int in_callback;            // depth of `done` calls running now
    int *fds;                   // sockets registered with the loop
    size_t nfds, capfds;
    httpc_t *next_live;
};

// ---- live instances of this thread ------------------------------------------------------------

static __thread httpc_t *live_head;

static void live_add(httpc_t *self) {
    self->next_live = live_head;
    live_head = self;
}

static void live_remove(httpc_t *self) {
    for (httpc_t **p = &live_head; *p; p = &(*p)->next_live) {
        if (*p == self) {
            *p = self->next_live;
            return;
        }
    }
}

static bool live_has(const httpc_t *self) {
    for (const httpc_t *h = live_head; h; h = h->next_live)
        if (h == self) return true;
    return false;
}

// ---- policy -----------------------------------------------------------------------------------

static bool transport_error_retryable(int code) {
    switch (code) {
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_CONNECT:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
        return true;
    default:   // bad URL, certificate problems, a body over the cap, cancellation: the same again
        return false;
    }
}

bool httpc_nothing_sent(int transport_error) {
    return transport_error == CURLE_COULDNT_RESOLVE_HOST || transport_error == CURLE_COULDNT_CONNECT;
}

bool httpc_should_retry(long status, int transport_error, int stripe_should_retry) {
    if (transport_error != 0) return transport_error_retryable(transport_error);
    if (status >= 200 && status < 300) return false;
    if (stripe_should_retry == 1) return true;
    if (stripe_should_retry == 0) return false;
    return status == 409 || status == 429 || status >= 500;
}

int httpc_backoff_ms(int base_ms, int cap_ms, int retry, uint32_t rnd) {
    if (base_ms < 1) base_ms = 1;
    if (cap_ms < base_ms) cap_ms = base_ms;
    int64_t d = base_ms;
    for (int i = 1; i < retry && d < cap_ms; i++) d *= 2;
    if (d > cap_ms) d = cap_ms;
    double f = 0.8 + 0.4 * ((double)rnd / (double)UINT32_MAX);
    int ms = (int)((double)d * f + 0.5);
    return ms < 1 ? 1 : ms;
}

static int retry_delay(const httpc_t *self, int retry) {
    uint32_t rnd = UINT32_MAX / 2;
    if (util_random_bytes(&rnd, sizeof rnd) != 0) rnd = UINT32_MAX / 2;
    return httpc_backoff_ms(self->base_ms, self->cap_ms, retry, rnd);
}

const char *provider_outcome_name(provider_outcome_t kind) {
    switch (kind) {
    case PROVIDER_OK: return "ok";
    case PROVIDER_UNAVAILABLE: return "unavailable";
    case PROVIDER_REJECTED: return "rejected";
    case PROVIDER_BAD_RESPONSE: return "bad_response";
    }
    return "unknown";
}

// ---- curl callbacks (run inside curl_multi_socket_action / add / remove) ------------------------

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *userdata) {
    transfer_t *t = userdata;
    size_t n = size * nmemb;
    if (n > HTTPC_BODY_MAX - t->rlen) {
        t->too_large = true;
        return 0;   // CURLE_WRITE_ERROR, reported as CURLE_FILESIZE_EXCEEDED
    }
    if (t->rlen + n + 1 > t->rcap) {
        size_t cap = t->rcap ? t->rcap : 4096;
        while (cap < t->rlen + n + 1) cap *= 2;
        char *b = realloc(t->rbuf, cap);
        if (!b) return 0;
        t->rbuf = b;
        t->rcap = cap;
    }
    memcpy(t->rbuf + t->rlen, ptr, n);
    t->rlen += n;
    t->rbuf[t->rlen] = '\0';
    return n;
}

// When line (len bytes, "Name: value\r\n") is header `name`, points *val at its trimmed value.
static bool header_match(const char *line, size_t len, const char *name, const char **val, size_t *vlen) {
    size_t nl = strlen(name);
    if (len <= nl || line[nl] != ':' || strncasecmp(line, name, nl) != 0) return false;
    const char *v = line + nl + 1, *end = line + len;
    while (v < end && (*v == ' ' || *v == '\t')) v++;
    while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' ' || end[-1] == '\t')) end--;
    *val = v;
    *vlen = (size_t)(end - v);
    return true;
}

static size_t on_header(char *buf, size_t size, size_t nitems, void *userdata) {
    transfer_t *t = userdata;
    size_t len = size * nitems;
    const char *v;
    size_t vl;
    if (len >= 5 && memcmp(buf, "HTTP/", 5) == 0) {   // a new answer (1xx before the real one)
        t->request_id[0] = '\0';
        t->should_retry = -1;
    } else if (header_match(buf, len, "Request-Id", &v, &vl)) {
        size_t n = 0;
        for (size_t i = 0; i < vl && n + 1 < sizeof t->request_id; i++) {
            char c = v[i];
            if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-')
                t->request_id[n++] = c;
        }
        t->request_id[n] = '\0';
    } else if (header_match(buf, len, "Stripe-Should-Retry", &v, &vl)) {
        if (vl == 4 && strncasecmp(v, "true", 4) == 0) t->should_retry = 1;
        else if (vl == 5 && strncasecmp(v, "false", 5) == 0) t->should_retry = 0;
    }
    return len;
}

static int on_socket_ready(zloop_t *loop, zmq_pollitem_t *item, void *arg);
static int on_curl_timer(zloop_t *loop, int timer_id, void *arg);

static void fd_forget(httpc_t *self, int fd) {
    for (size_t i = 0; i < self->nfds; i++) {
        if (self->fds[i] == fd) {
            self->fds[i] = self->fds[--self->nfds];
            return;
        }
    }
}

static int fd_remember(httpc_t *self, int fd) {
    for (size_t i = 0; i < self->nfds; i++)
        if (self->fds[i] == fd) return 0;
    if (self->nfds == self->capfds) {
        size_t cap = self->capfds ? self->capfds * 2 : 16;
        int *f = realloc(self->fds, cap * sizeof *f);
        if (!f) return -1;
        self->fds = f;
        self->capfds = cap;
    }
    self->fds[self->nfds++] = fd;
    return 0;
}

static int on_curl_socket(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp) {
    httpc_t *self = userp;
    zmq_pollitem_t item = {.socket = NULL, .fd = s};
    zloop_poller_end(self->loop, &item);
    fd_forget(self, s);
    if (what == CURL_POLL_REMOVE || self->destroying) return 0;
    item.events = (short)(((what & CURL_POLL_IN) ? ZMQ_POLLIN : 0) | ((what & CURL_POLL_OUT) ? ZMQ_POLLOUT : 0));
    if (item.events == 0) return 0;
    if (fd_remember(self, s) != 0 || zloop_poller(self->loop, &item, on_socket_ready, self) != 0) {
        fd_forget(self, s);
        log_error(&self->log, "http_out_poller_failed", NULL);
        return -1;
    }
    zloop_poller_set_tolerant(self->loop, &item);   // errors are curl's to report, per transfer
    return 0;
}

static int on_curl_timeout(CURLM *multi, long timeout_ms, void *userp) {
    httpc_t *self = userp;
    if (self->curl_timer >= 0) {
        zloop_timer_end(self->loop, self->curl_timer);
        self->curl_timer = -1;
    }
    if (timeout_ms < 0 || self->destroying) return 0;
    self->curl_timer = zloop_timer(self->loop, (size_t)timeout_ms, 1, on_curl_timer, self);
    return self->curl_timer < 0 ? -1 : 0;
}

// ---- completing requests ----------------------------------------------------------------------

static void transfer_free(transfer_t *t) {
    if (!t) return;
    if (t->easy) curl_easy_cleanup(t->easy);
    for (struct curl_slist *h = t->headers; h; h = h->next) explicit_bzero(h->data, strlen(h->data));
    curl_slist_free_all(t->headers);
    free(t->url);
    if (t->body) explicit_bzero(t->body, t->body_len);
    free(t->body);
    free(t->rbuf);
    free(t);
}

static void list_unlink(httpc_t *self, transfer_t *t) {
    if (t->prev) t->prev->next = t->next;
    else self->head = t->next;
    if (t->next) t->next->prev = t->prev;
    t->prev = t->next = NULL;
    self->count--;
}

static void log_finished(httpc_t *self, const transfer_t *t, int64_t ms) {
    char extra[128] = "";
    int n = 0;
    if (t->error) n += snprintf(extra + n, sizeof extra - (size_t)n, " curl_code=%d", t->error);
    if (t->request_id[0]) snprintf(extra + n, sizeof extra - (size_t)n, " request_id=%s", t->request_id);
    bool bad = t->error != 0 || t->status >= 500 || t->status == 0;
    log_event(&self->log, bad ? SLOG_WARN : SLOG_INFO, "http_out", "name=%s method=%s status=%ld attempts=%d ms=%lld%s",
              t->log_name, t->method, t->status, t->attempts, (long long)ms, extra);
}

static void finish(httpc_t *self, transfer_t *t) {
    list_unlink(self, t);
    httpc_response_t resp = {
        .status = t->status,
        .body = t->rbuf ? t->rbuf : "",
        .body_len = t->rlen,
        .transport_error = t->error,
        .attempts = t->attempts,
        .stripe_should_retry = t->should_retry,
        .elapsed_ms = util_monotonic_ms() - t->started_ms,
    };
    memcpy(resp.request_id, t->request_id, sizeof resp.request_id);
    log_finished(self, t, resp.elapsed_ms);
    self->in_callback++;
    t->done(t->arg, &resp);
    self->in_callback--;
    transfer_free(t);
}

static void reset_attempt(transfer_t *t) {
    t->rlen = 0;
    if (t->rbuf) t->rbuf[0] = '\0';
    t->too_large = false;
    t->request_id[0] = '\0';
    t->should_retry = -1;
    t->status = 0;
    t->error = 0;
}

static int start_attempt(httpc_t *self, transfer_t *t) {
    reset_attempt(t);
    if (curl_multi_add_handle(self->multi, t->easy) != CURLM_OK) return -1;
    t->in_multi = true;
    t->attempts++;
    return 0;
}

static int on_retry_timer(zloop_t *loop, int timer_id, void *arg) {
    httpc_t *self = arg;
    if (!live_has(self)) return 0;
    transfer_t *t = self->head;
    while (t && t->retry_timer != timer_id) t = t->next;
    if (!t) return 0;   // cancelled earlier in this pass
    t->retry_timer = -1;
    if (start_attempt(self, t) != 0) {
        t->error = CURLE_OUT_OF_MEMORY;
        finish(self, t);
    }
    return 0;
}

static void attempt_finished(httpc_t *self, transfer_t *t, CURLcode rc) {
    long status = 0;
    curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &status);
    t->status = status;
    t->error = t->too_large ? CURLE_FILESIZE_EXCEEDED : (int)rc;
    bool again = t->retryable ? httpc_should_retry(t->status, t->error, t->should_retry)
                              : t->retry_unsent && httpc_nothing_sent(t->error);
    if (again && t->attempts < t->max_attempts && !self->destroying) {
        int delay = retry_delay(self, t->attempts);
        t->retry_timer = zloop_timer(self->loop, (size_t)delay, 1, on_retry_timer, self);
        if (t->retry_timer >= 0) {
            log_debug(&self->log, "http_out_retry", "name=%s status=%ld curl_code=%d attempt=%d delay_ms=%d",
                      t->log_name, t->status, t->error, t->attempts, delay);
            return;
        }
    }
    finish(self, t);
}

static void harvest(httpc_t *self) {
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(self->multi, &left))) {
        if (m->msg != CURLMSG_DONE) continue;
        CURL *easy = m->easy_handle;
        CURLcode rc = m->data.result;   // m is invalid once the handle is removed
        char *priv = NULL;
        curl_easy_getinfo(easy, CURLINFO_PRIVATE, &priv);
        transfer_t *t = (transfer_t *)priv;
        curl_multi_remove_handle(self->multi, easy);
        t->in_multi = false;
        attempt_finished(self, t, rc);
    }
}

// zloop's clock (ms, floored) and curl's (µs) disagree by up to a millisecond, so a timer can fire
// a hair before curl considers its deadline reached; curl then does nothing and, its deadline being
// unchanged, does not ask for a new timer. Ask it directly whenever no timer is pending.
static void ensure_timer(httpc_t *self) {
    if (self->curl_timer >= 0 || self->destroying) return;
    long ms = -1;
    if (curl_multi_timeout(self->multi, &ms) != CURLM_OK || ms < 0) return;
    self->curl_timer = zloop_timer(self->loop, (size_t)(ms < 1 ? 1 : ms), 1, on_curl_timer, self);
}

static void socket_action(httpc_t *self, curl_socket_t s, int mask) {
    int running = 0;
    curl_multi_socket_action(self->multi, s, mask, &running);
    harvest(self);
    ensure_timer(self);
}

static int on_socket_ready(zloop_t *loop, zmq_pollitem_t *item, void *arg) {
    httpc_t *self = arg;
    if (!live_has(self)) return 0;
    int mask = 0;
    if (item->revents & ZMQ_POLLIN) mask |= CURL_CSELECT_IN;
    if (item->revents & ZMQ_POLLOUT) mask |= CURL_CSELECT_OUT;
    if (item->revents & ZMQ_POLLERR) mask |= CURL_CSELECT_ERR;
    socket_action(self, item->fd, mask);
    return 0;
}

static int on_curl_timer(zloop_t *loop, int timer_id, void *arg) {
    httpc_t *self = arg;
    if (!live_has(self) || timer_id != self->curl_timer) return 0;   // replaced or cancelled
    self->curl_timer = -1;
    socket_action(self, CURL_SOCKET_TIMEOUT, 0);
    return 0;
}

// ---- public -----------------------------------------------------------------------------------

httpc_t *httpc_new(zloop_t *loop, const logger_t *lg) {
    assert(loop && lg);
    httpc_t *self = calloc(1, sizeof *self);
    if (!self) return NULL;
    self->loop = loop;
    self->log = *lg;
    self->curl_timer = -1;
    self->base_ms = HTTPC_DEFAULT_BACKOFF_BASE_MS;
    self->cap_ms = HTTPC_DEFAULT_BACKOFF_CAP_MS;
    self->multi = curl_multi_init();
    if (!self->multi) {
        free(self);
        return NULL;
    }
    curl_multi_setopt(self->multi, CURLMOPT_SOCKETFUNCTION, on_curl_socket);
    curl_multi_setopt(self->multi, CURLMOPT_SOCKETDATA, self);
    curl_multi_setopt(self->multi, CURLMOPT_TIMERFUNCTION, on_curl_timeout);
    curl_multi_setopt(self->multi, CURLMOPT_TIMERDATA, self);
    live_add(self);
    return self;
}

void httpc_destroy(httpc_t **self_p) {
    assert(self_p);
    httpc_t *self = *self_p;
    if (!self) return;
    assert(!self->in_callback && "httpc_destroy from inside a done callback");
    self->destroying = true;
    while (self->head) {
        transfer_t *t = self->head;
        if (t->in_multi) {
            curl_multi_remove_handle(self->multi, t->easy);
            t->in_multi = false;
        }
        if (t->retry_timer >= 0) {
            zloop_timer_end(self->loop, t->retry_timer);
            t->retry_timer = -1;
        }
        t->status = 0;
        t->error = CURLE_ABORTED_BY_CALLBACK;
        finish(self, t);
    }
    curl_multi_cleanup(self->multi);
    if (self->curl_timer >= 0) zloop_timer_end(self->loop, self->curl_timer);
    for (size_t i = 0; i < self->nfds; i++) {
        zmq_pollitem_t item = {.socket = NULL, .fd = self->fds[i]};
        zloop_poller_end(self->loop, &item);
    }
    free(self->fds);
    live_remove(self);
    free(self);
    *self_p = NULL;
}

size_t httpc_in_flight(const httpc_t *self) {
    return self ? self->count : 0;
}

void httpc_set_backoff(httpc_t *self, int base_ms, int cap_ms) {
    assert(self);
    if (base_ms > 0) self->base_ms = base_ms;
    if (cap_ms > 0) self->cap_ms = cap_ms;
}

static void copy_token(char *dst, size_t size, const char *src, const char *fallback) {
    size_t n = 0;
    for (const char *s = src ? src : fallback; *s && n + 1 < size; s++) {
        char c = *s;
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
                  c == '-' || c == '.';
        dst[n++] = ok ? c : '_';
    }
    dst[n] = '\0';
}

static int setup_easy(transfer_t *t, const httpc_request_t *req) {
    CURL *e = t->easy;
    bool has_expect = false;
    for (size_t i = 0; req->headers && req->headers[i]; i++) {
        if (strncasecmp(req->headers[i], "Expect:", 7) == 0) has_expect = true;
        struct curl_slist *h = curl_slist_append(t->headers, req->headers[i]);
        if (!h) return -1;
        t->headers = h;
    }
    if (!has_expect) {   // no "Expect: 100-continue" round trip: our bodies are small
        struct curl_slist *h = curl_slist_append(t->headers, "Expect:");
        if (!h) return -1;
        t->headers = h;
    }
    int connect_ms = req->connect_timeout_ms > 0 ? req->connect_timeout_ms : HTTPC_DEFAULT_CONNECT_TIMEOUT_MS;
    int total_ms = req->timeout_ms > 0 ? req->timeout_ms : HTTPC_DEFAULT_TIMEOUT_MS;
    int rc = CURLE_OK;   // OR of every setopt result: any failure makes it non-zero
    rc |= curl_easy_setopt(e, CURLOPT_URL, t->url);
    rc |= curl_easy_setopt(e, CURLOPT_PRIVATE, (char *)t);
    rc |= curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    rc |= curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    rc |= curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
    rc |= curl_easy_setopt(e, CURLOPT_USERAGENT, "sweetyoncall/0.1");
    rc |= curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)connect_ms);
    rc |= curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)total_ms);
    rc |= curl_easy_setopt(e, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)HTTPC_BODY_MAX);
    rc |= curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    rc |= curl_easy_setopt(e, CURLOPT_WRITEDATA, t);
    rc |= curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    rc |= curl_easy_setopt(e, CURLOPT_HEADERDATA, t);
    rc |= curl_easy_setopt(e, CURLOPT_HTTPHEADER, t->headers);
    // libcurl sends a request again, silently, when a reused keep-alive connection dies before any
    // answer byte; the server may have acted on the first copy (a VAPI call placed twice). A request
    // that must not be repeated therefore always opens its own connection, where curl never resends.
    if (!req->retryable) rc |= curl_easy_setopt(e, CURLOPT_FRESH_CONNECT, 1L);
    if (strcmp(t->method, "GET") == 0) {
        rc |= curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
    } else if (strcmp(t->method, "HEAD") == 0) {
        rc |= curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
    } else {
        if (strcmp(t->method, "POST") == 0) rc |= curl_easy_setopt(e, CURLOPT_POST, 1L);
        else rc |= curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, t->method);
        if (t->body || strcmp(t->method, "POST") == 0) {
            rc |= curl_easy_setopt(e, CURLOPT_POSTFIELDS, t->body ? t->body : "");
            rc |= curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)t->body_len);
        }
    }
    return rc == CURLE_OK ? 0 : -1;
}

int httpc_submit(httpc_t *self, const httpc_request_t *req, httpc_done_fn *done, void *arg) {
    assert(self && req && done);
    if (self->destroying || !req->method || !req->method[0] || strlen(req->method) >= 16 || !req->url ||
        !req->url[0] || (!req->body && req->body_len))
        return -1;
    transfer_t *t = calloc(1, sizeof *t);
    if (!t) return -1;
    for (size_t i = 0; req->method[i]; i++) {
        char c = req->method[i];
        if (c < 'A' || c > 'Z') {
            free(t);
            return -1;
        }
        t->method[i] = c;
    }
    copy_token(t->log_name, sizeof t->log_name, req->log_name, "http");
    t->retry_timer = -1;
    t->should_retry = -1;
    t->retryable = req->retryable;
    t->retry_unsent = req->retry_unsent;
    t->max_attempts = !req->retryable && !req->retry_unsent ? 1
                      : req->max_attempts > 0              ? req->max_attempts
                                                           : HTTPC_DEFAULT_MAX_ATTEMPTS;
    t->done = done;
    t->arg = arg;
    t->started_ms = util_monotonic_ms();
    t->url = strdup(req->url);
    t->body_len = req->body ? req->body_len : 0;
    if (req->body) {
        t->body = malloc(t->body_len + 1);
        if (t->body) {
            memcpy(t->body, req->body, t->body_len);
            t->body[t->body_len] = '\0';
        }
    }
    t->easy = curl_easy_init();
    if (!t->url || (req->body && !t->body) || !t->easy || setup_easy(t, req) != 0) {
        transfer_free(t);
        return -1;
    }
    t->next = self->head;
    if (self->head) self->head->prev = t;
    self->head = t;
    self->count++;
    if (start_attempt(self, t) != 0) {
        list_unlink(self, t);
        transfer_free(t);
        return -1;
    }
    return 0;
}

// ---- prepared requests ------------------------------------------------------------------------

int httpc_prepared_add_header(httpc_prepared_t *p, const char *fmt, ...) {
    size_t n = 0;
    while (n < HTTPC_PREPARED_MAX_HEADERS && p->headers[n]) n++;
    if (n == HTTPC_PREPARED_MAX_HEADERS) return -1;
    va_list ap;
    va_start(ap, fmt);
    char *h = NULL;
    int rc = vasprintf(&h, fmt, ap);
    va_end(ap);
    if (rc < 0) return -1;
    p->headers[n] = h;
    p->headers[n + 1] = NULL;
    return 0;
}

const char *httpc_prepared_header(const httpc_prepared_t *p, const char *name) {
    size_t nl = strlen(name);
    for (size_t i = 0; i < HTTPC_PREPARED_MAX_HEADERS && p->headers[i]; i++) {
        const char *h = p->headers[i];
        if (strncasecmp(h, name, nl) == 0 && h[nl] == ':') {
            h += nl + 1;
            while (*h == ' ') h++;
            return h;
        }
    }
    return NULL;
}

void httpc_prepared_clear(httpc_prepared_t *p) {
    if (!p) return;
    for (size_t i = 0; i < HTTPC_PREPARED_MAX_HEADERS && p->headers[i]; i++) {
        explicit_bzero(p->headers[i], strlen(p->headers[i]));
        free(p->headers[i]);
    }
    free(p->url);
    if (p->body) explicit_bzero(p->body, p->body_len);
    free(p->body);
    memset(p, 0, sizeof *p);
}

int httpc_submit_prepared(httpc_t *self, const httpc_prepared_t *p, int connect_timeout_ms, int timeout_ms,
                          httpc_done_fn *done, void *arg) {
    httpc_request_t req = {
        .method = p->method,
        .url = p->url,
        .headers = (const char *const *)p->headers,
        .body = p->body,
        .body_len = p->body ? p->body_len : 0,
        .connect_timeout_ms = connect_timeout_ms,
        .timeout_ms = timeout_ms,
        .max_attempts = p->max_attempts,
        .retryable = p->retryable,
        .log_name = p->log_name,
        .retry_unsent = p->retry_unsent,
    };
    return httpc_submit(self, &req, done, arg);
}
