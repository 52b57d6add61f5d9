// tests/integration/receiver.h — what the provider-sandbox tests (test_sandbox.c,
// test_sandbox_vapi.c) share, header-only so that tests/CMakeLists.txt needs no new source:
//
//   - the webhook receiver: a listening socket on 127.0.0.1 read with plain accept/recv on a
//     thread, which records every request (path, head, Stripe-Signature, body, the body parsed as
//     JSON when it is JSON) and answers 200, or 500 to the first `fail_first` requests;
//   - the sandbox fixture: a temporary directory, the sweety-sandbox process and its log, and a
//     teardown that requires a clean exit on SIGTERM;
//   - small JSON helpers (parse, jstr, jget).
//
// Define RECEIVER_MAX_RECEIVED before including to change how many requests are recorded.
#ifndef SWEETY_TESTS_INTEGRATION_RECEIVER_H
#define SWEETY_TESTS_INTEGRATION_RECEIVER_H

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>

#include "tests/harness/harness.h"

#ifndef RECEIVER_MAX_RECEIVED
#define RECEIVER_MAX_RECEIVED 256
#endif

// ---- webhook receiver ----------------------------------------------------------------------------
typedef struct {
    char path[256];
    char stripe_signature[256];
    char *head;   // request line and headers
    char *body;
    size_t body_len;
    json_t *json;   // the parsed body, or NULL
    int answered;   // status we sent back
} received_t;

typedef struct {
    int fd, port, stop_pipe[2];
    pthread_t thread;
    pthread_mutex_t mu;
    received_t items[RECEIVER_MAX_RECEIVED];
    int n;
    int fail_first;   // answer 500 to this many requests first
} receiver_t;

// Reads one HTTP/1.1 request (headers, then Content-Length bytes). 0 or -1.
static inline int read_request(int fd, char **head_out, char **body_out, size_t *body_len) {
    size_t cap = 8192, len = 0;
    char *buf = malloc(cap);
    char *hdr_end = NULL;
    long content_length = 0;
    for (;;) {
        if (!hdr_end) {
            hdr_end = len >= 4 ? memmem(buf, len, "\r\n\r\n", 4) : NULL;
            if (hdr_end) {
                *hdr_end = '\0';
                const char *cl = strcasestr(buf, "\r\ncontent-length:");
                content_length = cl ? strtol(cl + 17, NULL, 10) : 0;
                *hdr_end = '\r';
            }
        }
        if (hdr_end && len >= (size_t)(hdr_end + 4 - buf) + (size_t)content_length) break;
        if (len + 4096 + 1 > cap) {
            cap *= 2;
            buf = realloc(buf, cap);
            if (hdr_end) hdr_end = NULL;   // re-found on the next pass (buf moved)
            continue;
        }
        struct pollfd p = {fd, POLLIN, 0};
        if (poll(&p, 1, 5000) <= 0) break;
        ssize_t n = recv(fd, buf + len, cap - len - 1, 0);
        if (n <= 0) break;
        len += (size_t)n;
    }
    if (!hdr_end) {
        free(buf);
        return -1;
    }
    size_t head_len = (size_t)(hdr_end - buf);
    *head_out = strndup(buf, head_len);
    *body_len = len - head_len - 4;
    *body_out = malloc(*body_len + 1);
    memcpy(*body_out, hdr_end + 4, *body_len);
    (*body_out)[*body_len] = '\0';
    free(buf);
    return 0;
}

static inline void header_value(const char *head, const char *name, char *out, size_t size) {
    out[0] = '\0';
    char pattern[80];
    snprintf(pattern, sizeof pattern, "\r\n%s:", name);
    const char *h = strcasestr(head, pattern);
    if (!h) return;
    h += strlen(pattern);
    while (*h == ' ') h++;
    size_t n = strcspn(h, "\r\n");
    snprintf(out, size, "%.*s", (int)n, h);
}

static inline void *receiver_thread(void *arg) {
    receiver_t *rx = arg;
    for (;;) {
        struct pollfd p[2] = {{rx->fd, POLLIN, 0}, {rx->stop_pipe[0], POLLIN, 0}};
        if (poll(p, 2, -1) < 0 && errno != EINTR) break;
        if (p[1].revents) break;
        if (!(p[0].revents & POLLIN)) continue;
        int c = accept4(rx->fd, NULL, NULL, SOCK_CLOEXEC);
        if (c < 0) continue;
        char *head = NULL, *body = NULL;
        size_t body_len = 0;
        if (read_request(c, &head, &body, &body_len) == 0) {
            pthread_mutex_lock(&rx->mu);
            int status = rx->fail_first > 0 ? 500 : 200;
            if (rx->fail_first > 0) rx->fail_first--;
            if (rx->n < RECEIVER_MAX_RECEIVED) {
                received_t *r = &rx->items[rx->n];
                sscanf(head, "%*s %255s", r->path);
                header_value(head, "Stripe-Signature", r->stripe_signature, sizeof r->stripe_signature);
                r->head = head;
                r->body = body;
                r->body_len = body_len;
                r->json = json_loadb(body, body_len, 0, NULL);
                r->answered = status;
                head = body = NULL;
                rx->n++;
            }
            pthread_mutex_unlock(&rx->mu);
            char answer[160];
            int n = snprintf(answer, sizeof answer, "HTTP/1.1 %d %s\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                             status, status == 200 ? "OK" : "Internal Server Error");
            ssize_t w = send(c, answer, (size_t)n, MSG_NOSIGNAL);
            (void)w;
        }
        free(head);
        free(body);
        close(c);
    }
    return NULL;
}

static inline int receiver_start(receiver_t *rx) {
    memset(rx, 0, sizeof *rx);
    pthread_mutex_init(&rx->mu, NULL);
    rx->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof addr;
    if (rx->fd < 0 || bind(rx->fd, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(rx->fd, 64) != 0 ||
        getsockname(rx->fd, (struct sockaddr *)&addr, &alen) != 0 || pipe2(rx->stop_pipe, O_CLOEXEC) != 0)
        return -1;
    rx->port = ntohs(addr.sin_port);
    return pthread_create(&rx->thread, NULL, receiver_thread, rx) == 0 ? 0 : -1;
}

static inline void receiver_stop(receiver_t *rx) {
    ssize_t w = write(rx->stop_pipe[1], "x", 1);
    (void)w;
    pthread_join(rx->thread, NULL);
    close(rx->fd);
    close(rx->stop_pipe[0]);
    close(rx->stop_pipe[1]);
    for (int i = 0; i < rx->n; i++) {
        free(rx->items[i].head);
        free(rx->items[i].body);
        json_decref(rx->items[i].json);
    }
    pthread_mutex_destroy(&rx->mu);
}

static inline int receiver_count(receiver_t *rx) {
    pthread_mutex_lock(&rx->mu);
    int n = rx->n;
    pthread_mutex_unlock(&rx->mu);
    return n;
}

// Waits until at least `want` requests arrived. 0 or -1 on timeout.
static inline int receiver_wait(receiver_t *rx, int want, int timeout_ms) {
    int64_t deadline = harness_now_ms() + timeout_ms;
    while (receiver_count(rx) < want) {
        if (harness_now_ms() > deadline) return -1;
        harness_sleep_ms(20);
    }
    return 0;
}

// ---- the sandbox fixture -------------------------------------------------------------------------
typedef struct {
    char dir[512], log[600], base[64];
    int port;
    harness_proc_t *proc;
    receiver_t rx;
} fixture_t;

static inline void dump_log(const fixture_t *f) {
    char *log = harness_read_file(f->log);
    fprintf(stderr, "---- sandbox log ----\n%s\n---------------------\n", log ? log : "(none)");
    free(log);
}

// A new fixture: temporary directory, receiver started, log path, a free port and the base URL
// (the sandbox is not started yet). NULL on failure.
static inline fixture_t *fixture_new(void) {
    fixture_t *f = calloc(1, sizeof *f);
    if (!f || harness_tmpdir(f->dir, sizeof f->dir) != 0 || receiver_start(&f->rx) != 0) return NULL;
    snprintf(f->log, sizeof f->log, "%s/sandbox.log", f->dir);
    f->port = harness_free_port();
    snprintf(f->base, sizeof f->base, "http://127.0.0.1:%d", f->port);
    return f;
}

// Starts sweety-sandbox with argv and env and waits until /_sandbox/health answers 200. 0 or -1
// (the log dumped).
static inline int fixture_spawn(fixture_t *f, const char *const *argv, const char *const *env) {
    f->proc = harness_proc_spawn(argv, env, f->log);
    char url[128];
    snprintf(url, sizeof url, "%s/_sandbox/health", f->base);
    if (!f->proc || harness_http_wait_status(url, 200, 10000) != 0) {
        dump_log(f);
        return -1;
    }
    return 0;
}

// SIGTERM must end the sandbox with status 0 (under ASan: also without leaks).
static inline int teardown(void **state) {
    fixture_t *f = *state;
    int rc = 0, status = 0;
    harness_proc_kill(f->proc, SIGTERM);
    if (harness_proc_wait(f->proc, 10000, &status) != 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "sweety-sandbox did not exit cleanly on SIGTERM (status %d)\n", status);
        dump_log(f);
        rc = -1;
    }
    harness_proc_destroy(&f->proc);
    receiver_stop(&f->rx);
    harness_rmtree(f->dir);
    free(f);
    return rc;
}

// ---- JSON helpers --------------------------------------------------------------------------------
static inline json_t *parse(const char *text) {
    json_t *j = json_loads(text ? text : "", JSON_DECODE_ANY, NULL);
    if (!j) fprintf(stderr, "not JSON: %s\n", text ? text : "(null)");
    return j;
}

// The member at a dotted path ("a.b.c"), or NULL.
static inline const json_t *jget(const json_t *j, const char *path) {
    char key[64];
    const json_t *cur = j;
    for (const char *p = path; cur && *p;) {
        size_t n = strcspn(p, ".");
        snprintf(key, sizeof key, "%.*s", (int)n, p);
        cur = json_object_get(cur, key);
        p += n + (p[n] == '.');
    }
    return cur;
}

// The string at a dotted path ("a.b.c"), or NULL.
static inline const char *jstr(const json_t *j, const char *path) { return json_string_value(jget(j, path)); }

#endif
