// tests/unit/test_httpc.c — actors/httpc.c against a scripted HTTP server in the test process.
//
// Each test runs a zloop with one httpc on the test's thread, and a tiny HTTP/1.1 server on plain
// sockets in other threads (one thread per connection, every answer `Connection: close`). The URL
// path is the script: "/s/<step>,<step>,…/<name>" answers the n-th request for that path with the
// n-th step (the last one repeats). A step is "[w<ms>:]<status>[f|t|k]", "big" (2 MiB with a
// Content-Length), "bigc" (2 MiB, no length) or "close" (hang up without answering); "w" waits
// before answering, f/t add `Stripe-Should-Retry: false/true`, k keeps the connection open (the
// next request on it is read and answered by its own script). Every answer carries
// `Request-Id: req_<name>_<n>`. The server records what it received (method, path, Idempotency-Key,
// body length). Tests wait for completions with a deadline, never by sleeping.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
// cmocka after the standard headers it needs
#include <cmocka.h>

#include <arpa/inet.h>
#include <curl/curl.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "actors/httpc.h"
#include "common/util.h"
#include "tests/unit/script_server.h"

// ---- the scripted server ----------------------------------------------------------------------

#define STUB_MAX_WORKERS 512
#define STUB_MAX_SEEN 1024
#define STUB_MAX_PATHS 256

typedef struct {
    char method[8];
    char path[192];
    char idem[128];
    size_t body_len;
    int hit;
} seen_t;

typedef struct {
    int lfd, port;
    int stop[2];
    pthread_t acceptor;
    pthread_mutex_t mu;
    pthread_t workers[STUB_MAX_WORKERS];
    size_t nworkers;
    seen_t seen[STUB_MAX_SEEN];
    size_t nseen;
    struct {
        char path[192];
        int hits;
    } paths[STUB_MAX_PATHS];
    size_t npaths;
} stub_t;

typedef struct {
    stub_t *stub;
    int fd;
} conn_t;

static bool stub_stopping(stub_t *s, int wait_ms) {   // waits up to wait_ms for the stop signal
    struct pollfd p = {.fd = s->stop[0], .events = POLLIN};
    return poll(&p, 1, wait_ms) > 0;
}

// The step for hit `hit` of a script path, copied into step ("200" when the path is no script).
static void script_step(const char *path, int hit, char *step, size_t size, char *name, size_t nsize) {
    snprintf(step, size, "200");
    snprintf(name, nsize, "x");
    if (strncmp(path, "/s/", 3) != 0) return;
    const char *steps = path + 3, *slash = strchr(steps, '/');
    if (!slash) return;
    size_t nl = strcspn(slash + 1, "?/");
    snprintf(name, nsize, "%.*s", (int)nl, slash + 1);
    int i = 0;
    const char *p = steps;
    while (p < slash) {
        const char *end = memchr(p, ',', (size_t)(slash - p));
        if (!end) end = slash;
        snprintf(step, size, "%.*s", (int)(end - p), p);
        if (i == hit || end == slash) return;
        i++;
        p = end + 1;
    }
}

static void *stub_worker(void *arg) {
    conn_t *c = arg;
    stub_t *s = c->stub;
    int fd = c->fd;
    free(c);
    char buf[16384];
next_request:;
    size_t len = 0;
    char *end = script_read_head(fd, s->stop[0], buf, sizeof buf, &len);
    if (!end) goto out;
    *end = '\0';
    char method[8] = "", path[192] = "", value[128];
    sscanf(buf, "%7s %191s", method, path);
    size_t want = 0;
    if (header_value(buf, "Content-Length", value, sizeof value)) want = strtoul(value, NULL, 10);
    size_t have = len - (size_t)(end + 4 - buf);
    while (have < want) {   // read (and drop) the body
        char sink[4096];
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 5000) <= 0) goto out;
        ssize_t n = recv(fd, sink, sizeof sink, 0);
        if (n <= 0) goto out;
        have += (size_t)n;
    }

    pthread_mutex_lock(&s->mu);
    size_t pi = 0;
    while (pi < s->npaths && strcmp(s->paths[pi].path, path) != 0) pi++;
    if (pi == s->npaths && s->npaths < STUB_MAX_PATHS) snprintf(s->paths[s->npaths++].path, sizeof s->paths[0].path, "%s", path);
    int hit = pi < STUB_MAX_PATHS ? s->paths[pi].hits++ : 0;
    if (s->nseen < STUB_MAX_SEEN) {
        seen_t *r = &s->seen[s->nseen++];
        snprintf(r->method, sizeof r->method, "%s", method);
        snprintf(r->path, sizeof r->path, "%s", path);
        header_value(buf, "Idempotency-Key", r->idem, sizeof r->idem);
        r->body_len = want;
        r->hit = hit;
    }
    pthread_mutex_unlock(&s->mu);

    char step[32], name[64];
    script_step(path, hit, step, sizeof step, name, sizeof name);
    const char *st = step;
    if (st[0] == 'w') {
        int ms = atoi(st + 1);
        const char *colon = strchr(st, ':');
        st = colon ? colon + 1 : "200";
        if (stub_stopping(s, ms)) goto out;
    }
    if (strcmp(st, "close") == 0) goto out;
    char head[512];
    if (strcmp(st, "big") == 0 || strcmp(st, "bigc") == 0) {
        size_t big = 2 * 1024 * 1024;
        int n = snprintf(head, sizeof head, "HTTP/1.1 200 OK\r\nRequest-Id: req_%s_%d\r\nConnection: close\r\n", name, hit);
        if (strcmp(st, "big") == 0) n += snprintf(head + n, sizeof head - (size_t)n, "Content-Length: %zu\r\n", big);
        snprintf(head + n, sizeof head - (size_t)n, "\r\n");
        send_all(fd, head, strlen(head));
        char *chunk = malloc(65536);
        memset(chunk, 'x', 65536);
        for (size_t sent = 0; sent < big; sent += 65536) send_all(fd, chunk, 65536);
        free(chunk);
        goto out;
    }
    int status = atoi(st);
    char last = st[strlen(st) - 1];
    char body[128];
    int blen = snprintf(body, sizeof body, "{\"hit\":%d}", hit);
    snprintf(head, sizeof head,
             "HTTP/1.1 %d Scripted\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
             "Request-Id: req_%s_%d\r\n%sConnection: %s\r\n\r\n",
             status, blen, name, hit,
             last == 'f' ? "Stripe-Should-Retry: false\r\n" : last == 't' ? "Stripe-Should-Retry: true\r\n" : "",
             last == 'k' ? "keep-alive" : "close");
    send_all(fd, head, strlen(head));
    send_all(fd, body, (size_t)blen);
    if (last == 'k') goto next_request;   // the connection stays open for the client's next request
out:
    shutdown(fd, SHUT_WR);
    close(fd);
    return NULL;
}

static void *stub_acceptor(void *arg) {
    stub_t *s = arg;
    for (;;) {
        struct pollfd p[2] = {{.fd = s->lfd, .events = POLLIN}, {.fd = s->stop[0], .events = POLLIN}};
        if (poll(p, 2, -1) < 0 || p[1].revents) break;
        int fd = accept(s->lfd, NULL, NULL);
        if (fd < 0) continue;
        conn_t *c = malloc(sizeof *c);
        pthread_mutex_lock(&s->mu);
        bool room = c && s->nworkers < STUB_MAX_WORKERS;
        if (room) {
            *c = (conn_t){.stub = s, .fd = fd};
            if (pthread_create(&s->workers[s->nworkers], NULL, stub_worker, c) == 0) s->nworkers++;
            else room = false;
        }
        pthread_mutex_unlock(&s->mu);
        if (!room) {
            free(c);
            close(fd);
        }
    }
    return NULL;
}

static int stub_start(stub_t *s) {
    memset(s, 0, sizeof *s);
    pthread_mutex_init(&s->mu, NULL);
    if (script_listen(&s->lfd, &s->port, s->stop, 256) != 0) return -1;
    return pthread_create(&s->acceptor, NULL, stub_acceptor, s) == 0 ? 0 : -1;
}

static void stub_stop(stub_t *s) {
    script_signal_stop(s->stop);
    pthread_join(s->acceptor, NULL);
    pthread_mutex_lock(&s->mu);
    size_t n = s->nworkers;
    pthread_mutex_unlock(&s->mu);
    for (size_t i = 0; i < n; i++) pthread_join(s->workers[i], NULL);
    script_close(s->lfd, s->stop);
    pthread_mutex_destroy(&s->mu);
}

static int stub_hits(stub_t *s, const char *path) {
    int hits = 0;
    pthread_mutex_lock(&s->mu);
    for (size_t i = 0; i < s->npaths; i++)
        if (strcmp(s->paths[i].path, path) == 0) hits = s->paths[i].hits;
    pthread_mutex_unlock(&s->mu);
    return hits;
}

// ---- fixture ----------------------------------------------------------------------------------

#define MAX_RESULTS 64

typedef struct fx fx_t;

typedef struct {
    fx_t *fx;
    bool called;
    long status;
    int transport_error, attempts, should_retry;
    char request_id[64];
    char body[256];
    size_t body_len;
    int64_t elapsed_ms;
    int submit_during_callback;   // what httpc_submit answered from inside the callback (when tried)
} result_t;

struct fx {
    stub_t stub;
    zloop_t *loop;
    httpc_t *http;
    logger_t lg;
    int done_count, expect;
    int64_t deadline, stop_after;
    int ticks;
    result_t results[MAX_RESULTS];
    char base[64];
    // test_destroy_* only
    bool destroyed;
    bool resubmit_in_callback;
    int64_t seen_at;
    size_t in_flight_before;
};

static int setup(void **state) {
    fx_t *fx = calloc(1, sizeof *fx);
    assert_non_null(fx);
    assert_int_equal(stub_start(&fx->stub), 0);
    fx->loop = zloop_new();
    assert_non_null(fx->loop);
    zloop_set_nonstop(fx->loop, true);
    fx->lg = (logger_t){.level = SLOG_INFO, .who = "test"};
    fx->http = httpc_new(fx->loop, &fx->lg);
    assert_non_null(fx->http);
    httpc_set_backoff(fx->http, 20, 200);
    snprintf(fx->base, sizeof fx->base, "http://127.0.0.1:%d", fx->stub.port);
    for (int i = 0; i < MAX_RESULTS; i++) fx->results[i].fx = fx;
    *state = fx;
    return 0;
}

static int teardown(void **state) {
    fx_t *fx = *state;
    httpc_destroy(&fx->http);
    zloop_destroy(&fx->loop);
    stub_stop(&fx->stub);
    free(fx);
    return 0;
}

static void on_done(void *arg, const httpc_response_t *r) {
    result_t *res = arg;
    fx_t *fx = res->fx;
    assert_false(res->called);   // exactly once
    res->called = true;
    res->status = r->status;
    res->transport_error = r->transport_error;
    res->attempts = r->attempts;
    res->should_retry = r->stripe_should_retry;
    res->elapsed_ms = r->elapsed_ms;
    memcpy(res->request_id, r->request_id, sizeof res->request_id);
    assert_int_equal(r->body[r->body_len], '\0');
    res->body_len = r->body_len;
    snprintf(res->body, sizeof res->body, "%.*s", (int)(r->body_len < 255 ? r->body_len : 255), r->body);
    if (fx->resubmit_in_callback) {
        httpc_request_t again = {.method = "GET", .url = fx->base};
        res->submit_during_callback = httpc_submit(fx->http, &again, on_done, &fx->results[MAX_RESULTS - 1]);
    }
    fx->done_count++;
}

static int on_check(zloop_t *loop, int timer_id, void *arg) {
    fx_t *fx = arg;
    fx->ticks++;
    int64_t now = util_monotonic_ms();
    if (fx->stop_after && now >= fx->stop_after) return -1;
    if (!fx->stop_after && fx->done_count >= fx->expect) return -1;
    return now > fx->deadline ? -1 : 0;
}

// Runs the loop until `expect` requests completed or timeout_ms passed (each test runs it once).
static void run_until_done(fx_t *fx, int expect, int timeout_ms) {
    fx->expect = expect;
    fx->deadline = util_monotonic_ms() + timeout_ms;
    int id = zloop_timer(fx->loop, 5, 0, on_check, fx);
    zloop_start(fx->loop);
    zloop_timer_end(fx->loop, id);
}

static void submit(fx_t *fx, int i, const char *method, const char *path, const char *const *headers,
                   const char *body, bool retryable, int max_attempts, int timeout_ms) {
    char url[256];
    snprintf(url, sizeof url, "%s%s", fx->base, path);
    httpc_request_t req = {
        .method = method,
        .url = url,
        .headers = headers,
        .body = body,
        .body_len = body ? strlen(body) : 0,
        .timeout_ms = timeout_ms,
        .max_attempts = max_attempts,
        .retryable = retryable,
        .log_name = "test.request",
    };
    assert_int_equal(httpc_submit(fx->http, &req, on_done, &fx->results[i]), 0);
    assert_false(fx->results[i].called);   // never from inside httpc_submit
}

// ---- tests ------------------------------------------------------------------------------------

static void test_500_twice_then_200_retries_with_the_same_idempotency_key(void **state) {
    fx_t *fx = *state;
    const char *headers[] = {"Idempotency-Key: checkout-abc", "Content-Type: application/x-www-form-urlencoded", NULL};
    submit(fx, 0, "POST", "/s/500,500,200/a", headers, "x=1&y=2", true, 3, 0);
    assert_int_equal(httpc_in_flight(fx->http), 1);
    run_until_done(fx, 1, 10000);
    result_t *r = &fx->results[0];
    assert_true(r->called);
    assert_int_equal(r->transport_error, 0);
    assert_int_equal(r->status, 200);
    assert_int_equal(r->attempts, 3);
    assert_string_equal(r->body, "{\"hit\":2}");
    assert_true(r->elapsed_ms >= 16 + 32);   // two waits of at least 0.8 × 20 ms and 0.8 × 40 ms
    assert_int_equal(httpc_in_flight(fx->http), 0);
    assert_int_equal(stub_hits(&fx->stub, "/s/500,500,200/a"), 3);
    int seen = 0;
    for (size_t i = 0; i < fx->stub.nseen; i++) {
        if (strcmp(fx->stub.seen[i].path, "/s/500,500,200/a") != 0) continue;
        seen++;
        assert_string_equal(fx->stub.seen[i].method, "POST");
        assert_string_equal(fx->stub.seen[i].idem, "checkout-abc");
        assert_int_equal(fx->stub.seen[i].body_len, 7);
    }
    assert_int_equal(seen, 3);
}

static void test_429_with_should_retry_false_is_not_retried(void **state) {
    fx_t *fx = *state;
    submit(fx, 0, "POST", "/s/429f,200/b", NULL, "a=1", true, 3, 0);
    run_until_done(fx, 1, 10000);
    assert_int_equal(fx->results[0].status, 429);
    assert_int_equal(fx->results[0].attempts, 1);
    assert_int_equal(fx->results[0].should_retry, 0);
    assert_int_equal(stub_hits(&fx->stub, "/s/429f,200/b"), 1);
}

static void test_429_409_and_503_without_header_are_retried(void **state) {
    fx_t *fx = *state;
    submit(fx, 0, "POST", "/s/429,200/c1", NULL, "a=1", true, 3, 0);
    submit(fx, 1, "POST", "/s/409,200/c2", NULL, "a=1", true, 3, 0);
    submit(fx, 2, "GET", "/s/503,200/c3", NULL, NULL, true, 3, 0);
    run_until_done(fx, 3, 10000);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(fx->results[i].status, 200);
        assert_int_equal(fx->results[i].attempts, 2);
        assert_int_equal(fx->results[i].should_retry, -1);
    }
}

static void test_should_retry_true_forces_a_retry_and_plain_400_is_final(void **state) {
    fx_t *fx = *state;
    submit(fx, 0, "POST", "/s/400t,200/d", NULL, "a=1", true, 3, 0);
    submit(fx, 1, "POST", "/s/400,200/e", NULL, "a=1", true, 3, 0);
    submit(fx, 2, "POST", "/s/500f,200/e2", NULL, "a=1", true, 3, 0);
    run_until_done(fx, 3, 10000);
    assert_int_equal(fx->results[0].status, 200);
    assert_int_equal(fx->results[0].attempts, 2);
    assert_int_equal(fx->results[1].status, 400);
    assert_int_equal(fx->results[1].attempts, 1);
    assert_int_equal(fx->results[2].status, 500);   // Stripe-Should-Retry: false beats the 5xx rule
    assert_int_equal(fx->results[2].attempts, 1);
    assert_int_equal(stub_hits(&fx->stub, "/s/400,200/e"), 1);
}

static void test_attempts_stop_at_max_attempts(void **state) {
    fx_t *fx = *state;
    submit(fx, 0, "POST", "/s/500/f", NULL, "a=1", true, 4, 0);
    submit(fx, 1, "POST", "/s/500,200/g", NULL, "a=1", false, 4, 0);   // not retryable: once
    run_until_done(fx, 2, 10000);
    assert_int_equal(fx->results[0].status, 500);
    assert_int_equal(fx->results[0].attempts, 4);
    assert_int_equal(stub_hits(&fx->stub, "/s/500/f"), 4);
    assert_int_equal(fx->results[1].status, 500);
    assert_int_equal(fx->results[1].attempts, 1);
    assert_int_equal(stub_hits(&fx->stub, "/s/500,200/g"), 1);
}

static void test_answer_slower_than_timeout_is_a_transport_error(void **state) {
    fx_t *fx = *state;
    submit(fx, 0, "GET", "/s/w3000:200/h1", NULL, NULL, false, 0, 300);
    submit(fx, 1, "GET", "/s/w3000:200/h2", NULL, NULL, true, 2, 300);
    run_until_done(fx, 2, 10000);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(fx->results[i].transport_error, CURLE_OPERATION_TIMEDOUT);
        assert_int_equal(fx->results[i].status, 0);
        assert_true(fx->results[i].elapsed_ms < 2500);
    }
    assert_int_equal(fx->results[0].attempts, 1);
    assert_int_equal(fx->results[1].attempts, 2);
    assert_int_equal(stub_hits(&fx->stub, "/s/w3000:200/h2"), 2);
}

static void test_hang_up_without_answer_is_retried(void **state) {
    fx_t *fx = *state;
    submit(fx, 0, "POST", "/s/close,200/hu", NULL, "a=1", true, 3, 0);
    run_until_done(fx, 1, 10000);
    assert_int_equal(fx->results[0].transport_error, 0);
    assert_int_equal(fx->results[0].status, 200);
    assert_int_equal(fx->results[0].attempts, 2);
}

// libcurl silently sends a request again when a reused keep-alive connection dies before any
// answer; the server may well have acted on the first copy. A request that is not retryable must
// therefore never travel on a reused connection: one copy reaches the server, however it ends.
static void test_request_that_is_not_retryable_never_reuses_a_connection(void **state) {
    fx_t *fx = *state;
    submit(fx, 0, "GET", "/s/200k/warm", NULL, NULL, true, 1, 0);   // leaves an idle connection
    run_until_done(fx, 1, 10000);
    assert_int_equal(fx->results[0].status, 200);
    submit(fx, 1, "POST", "/s/close/call", NULL, "a=1", false, 0, 0);
    run_until_done(fx, 2, 10000);
    assert_true(fx->results[1].called);
    assert_int_equal(fx->results[1].status, 0);
    assert_int_not_equal(fx->results[1].transport_error, 0);
    assert_int_equal(fx->results[1].attempts, 1);
    assert_int_equal(stub_hits(&fx->stub, "/s/close/call"), 1);
    // a retryable request still reuses the idle connection (answered on the kept one)
    submit(fx, 2, "GET", "/s/200k/warm", NULL, NULL, true, 1, 0);
    run_until_done(fx, 3, 10000);
    assert_int_equal(fx->results[2].status, 200);
}

static void test_connection_refused_fails_after_every_attempt(void **state) {
    fx_t *fx = *state;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &al), 0);
    close(fd);   // nobody listens there now
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/x", ntohs(a.sin_port));
    httpc_request_t req = {.method = "POST", .url = url, .body = "a", .body_len = 1, .retryable = true, .max_attempts = 3};
    assert_int_equal(httpc_submit(fx->http, &req, on_done, &fx->results[0]), 0);
    run_until_done(fx, 1, 10000);
    assert_true(fx->results[0].called);
    assert_int_equal(fx->results[0].transport_error, CURLE_COULDNT_CONNECT);
    assert_int_equal(fx->results[0].status, 0);
    assert_int_equal(fx->results[0].attempts, 3);
}

static void test_request_id_of_the_last_answer_is_captured(void **state) {
    fx_t *fx = *state;
    submit(fx, 0, "GET", "/s/200/rid", NULL, NULL, true, 3, 0);
    submit(fx, 1, "GET", "/s/500,201/rid2", NULL, NULL, true, 3, 0);
    run_until_done(fx, 2, 10000);
    assert_string_equal(fx->results[0].request_id, "req_rid_0");
    assert_int_equal(fx->results[1].status, 201);
    assert_string_equal(fx->results[1].request_id, "req_rid2_1");
}

static void test_body_over_the_cap_is_an_error_not_retried(void **state) {
    fx_t *fx = *state;
    submit(fx, 0, "GET", "/s/big/i", NULL, NULL, true, 3, 0);    // Content-Length says 2 MiB
    submit(fx, 1, "GET", "/s/bigc/j", NULL, NULL, true, 3, 0);   // no length: the cap trips mid-body
    run_until_done(fx, 2, 10000);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(fx->results[i].transport_error, CURLE_FILESIZE_EXCEEDED);
        assert_int_equal(fx->results[i].attempts, 1);
        assert_true(fx->results[i].body_len <= HTTPC_BODY_MAX);
    }
}

static void test_fifty_concurrent_requests_complete_without_blocking_the_loop(void **state) {
    fx_t *fx = *state;
    char paths[50][32];
    int64_t t0 = util_monotonic_ms();
    for (int i = 0; i < 50; i++) {
        snprintf(paths[i], sizeof paths[i], "/s/w300:200/k%d", i);
        submit(fx, i, "GET", paths[i], NULL, NULL, true, 3, 0);
    }
    assert_int_equal(httpc_in_flight(fx->http), 50);
    run_until_done(fx, 50, 10000);
    int64_t took = util_monotonic_ms() - t0;
    for (int i = 0; i < 50; i++) {
        assert_true(fx->results[i].called);
        assert_int_equal(fx->results[i].status, 200);
        assert_int_equal(fx->results[i].attempts, 1);
    }
    assert_int_equal(httpc_in_flight(fx->http), 0);
    assert_true(took < 5000);        // one after the other would take 15 s
    assert_true(fx->ticks >= 15);    // the 5 ms check timer kept running while they waited
}

static void test_destroy_before_the_loop_ran_completes_requests_as_aborted(void **state) {
    fx_t *fx = *state;
    submit(fx, 0, "GET", "/s/200/o1", NULL, NULL, true, 3, 0);
    submit(fx, 1, "POST", "/s/200/o2", NULL, "a=1", false, 0, 0);
    assert_int_equal(httpc_in_flight(fx->http), 2);
    fx->resubmit_in_callback = true;
    httpc_destroy(&fx->http);
    assert_null(fx->http);
    for (int i = 0; i < 2; i++) {
        assert_true(fx->results[i].called);
        assert_int_equal(fx->results[i].transport_error, CURLE_ABORTED_BY_CALLBACK);
        assert_int_equal(fx->results[i].status, 0);
        assert_int_equal(fx->results[i].submit_during_callback, -1);   // refused while destroying
    }
    assert_false(fx->results[MAX_RESULTS - 1].called);
    // the loop may still hold the dead client's timers: running it must do nothing (ASan watches)
    fx->stop_after = util_monotonic_ms() + 100;
    fx->deadline = util_monotonic_ms() + 10000;
    int id = zloop_timer(fx->loop, 5, 0, on_check, fx);
    zloop_start(fx->loop);
    zloop_timer_end(fx->loop, id);
    assert_int_equal(stub_hits(&fx->stub, "/s/200/o1"), 0);
}

// Destroys the client 100 ms after the server answered the 500 of "/s/500/m" (whose retry then
// waits 8..12 s), from inside this timer handler, and lets the loop run 150 ms more.
static int destroy_when_one_waits(zloop_t *loop, int timer_id, void *arg) {
    fx_t *fx = arg;
    int64_t now = util_monotonic_ms();
    if (fx->destroyed) return 0;
    if (stub_hits(&fx->stub, "/s/500/m") < 1) return 0;
    if (!fx->seen_at) fx->seen_at = now;
    if (now - fx->seen_at < 100) return 0;
    fx->in_flight_before = httpc_in_flight(fx->http);
    fx->resubmit_in_callback = true;
    httpc_destroy(&fx->http);
    fx->destroyed = true;
    fx->stop_after = now + 150;
    return 0;
}

static void test_destroy_inside_a_timer_handler_aborts_running_and_waiting_requests(void **state) {
    fx_t *fx = *state;
    httpc_set_backoff(fx->http, 10000, 10000);
    for (int i = 0; i < 5; i++) {
        char path[32];
        snprintf(path, sizeof path, "/s/w5000:200/n%d", i);
        submit(fx, i, "GET", path, NULL, NULL, true, 3, 0);
    }
    submit(fx, 5, "POST", "/s/500/m", NULL, "a=1", true, 3, 0);
    zloop_timer(fx->loop, 5, 0, destroy_when_one_waits, fx);
    run_until_done(fx, 1000, 10000);   // ends through stop_after (or the deadline)
    assert_true(fx->destroyed);
    assert_null(fx->http);
    assert_int_equal(fx->in_flight_before, 6);
    for (int i = 0; i < 6; i++) {
        assert_true(fx->results[i].called);
        assert_int_equal(fx->results[i].transport_error, CURLE_ABORTED_BY_CALLBACK);
        assert_int_equal(fx->results[i].status, 0);
        assert_int_equal(fx->results[i].attempts, 1);
        assert_int_equal(fx->results[i].submit_during_callback, -1);
    }
    assert_int_equal(stub_hits(&fx->stub, "/s/500/m"), 1);
    assert_true(util_monotonic_ms() < fx->deadline);
}

static void test_log_line_names_the_request_without_url_headers_or_body(void **state) {
    fx_t *fx = *state;
    char tmpl[] = "/tmp/test_httpc_log_XXXXXX";
    int logfd = mkstemp(tmpl);
    assert_true(logfd >= 0);
    unlink(tmpl);
    int saved = dup(STDERR_FILENO);
    dup2(logfd, STDERR_FILENO);

    char url[256];
    snprintf(url, sizeof url, "%s/s/500,200/secretpath?key=sk_live_QUERY", fx->base);
    const char *headers[] = {"Authorization: Bearer sk_test_HEADER", NULL};
    const char *body = "customer_email=ann%40example.com";
    httpc_request_t req = {.method = "POST", .url = url, .headers = headers, .body = body, .body_len = strlen(body),
                           .retryable = true, .log_name = "test.logcheck"};
    assert_int_equal(httpc_submit(fx->http, &req, on_done, &fx->results[0]), 0);
    run_until_done(fx, 1, 10000);

    dup2(saved, STDERR_FILENO);
    close(saved);
    char out[8192];
    ssize_t n = pread(logfd, out, sizeof out - 1, 0);
    close(logfd);
    assert_true(n > 0);
    out[n] = '\0';
    assert_non_null(strstr(out, "event=http_out name=test.logcheck method=POST status=200 attempts=2 ms="));
    assert_non_null(strstr(out, "request_id=req_secretpath_1"));
    assert_null(strstr(out, "sk_live"));
    assert_null(strstr(out, "sk_test"));
    assert_null(strstr(out, "secretpath?"));
    assert_null(strstr(out, "ann"));
    assert_null(strstr(out, "127.0.0.1"));
    // exactly one line for the request
    int lines = 0;
    for (char *p = out; (p = strstr(p, "event=http_out ")); p++) lines++;
    assert_int_equal(lines, 1);
}

static void test_submit_refuses_malformed_requests(void **state) {
    fx_t *fx = *state;
    httpc_request_t no_url = {.method = "GET"};
    httpc_request_t no_method = {.url = fx->base};
    httpc_request_t lower = {.method = "get", .url = fx->base};
    httpc_request_t body_len_without_body = {.method = "POST", .url = fx->base, .body_len = 3};
    assert_int_equal(httpc_submit(fx->http, &no_url, on_done, &fx->results[0]), -1);
    assert_int_equal(httpc_submit(fx->http, &no_method, on_done, &fx->results[0]), -1);
    assert_int_equal(httpc_submit(fx->http, &lower, on_done, &fx->results[0]), -1);
    assert_int_equal(httpc_submit(fx->http, &body_len_without_body, on_done, &fx->results[0]), -1);
    assert_int_equal(httpc_in_flight(fx->http), 0);
    assert_false(fx->results[0].called);
}

static void test_retry_policy_table(void **state) {
    (void)state;
    // network errors
    assert_true(httpc_should_retry(0, CURLE_COULDNT_CONNECT, -1));
    assert_true(httpc_should_retry(0, CURLE_OPERATION_TIMEDOUT, -1));
    assert_true(httpc_should_retry(0, CURLE_GOT_NOTHING, -1));
    assert_false(httpc_should_retry(0, CURLE_FILESIZE_EXCEEDED, -1));
    assert_false(httpc_should_retry(0, CURLE_URL_MALFORMAT, -1));
    assert_false(httpc_should_retry(0, CURLE_PEER_FAILED_VERIFICATION, -1));
    // statuses
    assert_false(httpc_should_retry(200, 0, -1));
    assert_false(httpc_should_retry(200, 0, 1));
    assert_true(httpc_should_retry(409, 0, -1));
    assert_true(httpc_should_retry(429, 0, -1));
    assert_true(httpc_should_retry(500, 0, -1));
    assert_true(httpc_should_retry(503, 0, -1));
    assert_false(httpc_should_retry(400, 0, -1));
    assert_false(httpc_should_retry(401, 0, -1));
    assert_false(httpc_should_retry(404, 0, -1));
    // Stripe-Should-Retry decides when present
    assert_false(httpc_should_retry(429, 0, 0));
    assert_false(httpc_should_retry(500, 0, 0));
    assert_true(httpc_should_retry(400, 0, 1));
}

static void test_backoff_doubles_is_capped_and_jitters_20_percent(void **state) {
    (void)state;
    assert_int_equal(httpc_backoff_ms(500, 5000, 1, 0), 400);
    assert_int_equal(httpc_backoff_ms(500, 5000, 1, UINT32_MAX), 600);
    assert_int_equal(httpc_backoff_ms(500, 5000, 1, UINT32_MAX / 2), 500);
    assert_int_equal(httpc_backoff_ms(500, 5000, 2, UINT32_MAX / 2), 1000);
    assert_int_equal(httpc_backoff_ms(500, 5000, 3, UINT32_MAX / 2), 2000);
    assert_int_equal(httpc_backoff_ms(500, 5000, 4, UINT32_MAX / 2), 4000);
    assert_int_equal(httpc_backoff_ms(500, 5000, 5, UINT32_MAX / 2), 5000);
    assert_int_equal(httpc_backoff_ms(500, 5000, 40, 0), 4000);
    assert_int_equal(httpc_backoff_ms(500, 5000, 40, UINT32_MAX), 6000);
    for (int i = 0; i < 1000; i++) {
        uint32_t r;
        assert_int_equal(util_random_bytes(&r, sizeof r), 0);
        int d = httpc_backoff_ms(500, 5000, 2, r);
        assert_true(d >= 800 && d <= 1200);
    }
}

int main(void) {
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_retry_policy_table),
        cmocka_unit_test(test_backoff_doubles_is_capped_and_jitters_20_percent),
        cmocka_unit_test_setup_teardown(test_500_twice_then_200_retries_with_the_same_idempotency_key, setup, teardown),
        cmocka_unit_test_setup_teardown(test_429_with_should_retry_false_is_not_retried, setup, teardown),
        cmocka_unit_test_setup_teardown(test_429_409_and_503_without_header_are_retried, setup, teardown),
        cmocka_unit_test_setup_teardown(test_should_retry_true_forces_a_retry_and_plain_400_is_final, setup, teardown),
        cmocka_unit_test_setup_teardown(test_attempts_stop_at_max_attempts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_answer_slower_than_timeout_is_a_transport_error, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hang_up_without_answer_is_retried, setup, teardown),
        cmocka_unit_test_setup_teardown(test_request_that_is_not_retryable_never_reuses_a_connection, setup, teardown),
        cmocka_unit_test_setup_teardown(test_connection_refused_fails_after_every_attempt, setup, teardown),
        cmocka_unit_test_setup_teardown(test_request_id_of_the_last_answer_is_captured, setup, teardown),
        cmocka_unit_test_setup_teardown(test_body_over_the_cap_is_an_error_not_retried, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fifty_concurrent_requests_complete_without_blocking_the_loop, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_destroy_before_the_loop_ran_completes_requests_as_aborted, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_destroy_inside_a_timer_handler_aborts_running_and_waiting_requests,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_log_line_names_the_request_without_url_headers_or_body, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_submit_refuses_malformed_requests, setup, teardown),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return failed;
}
