// bench/push_latency.c — benchmark 2's measuring client: the time from just before sweetyd
// receives a VAPI status-update webhook to the moment a subscribed WebSocket client reads the
// `status` frame it causes, through the daemon's real paths.
//
//   push_latency --port PORT --sandbox-port SBPORT --db-url URL --vapi-secret-file FILE
//                [--samples 100] [--warmup 4] [--timeout-s 150] [--samples-out FILE]
//
// For each booking, one after the other: book a free trial (POST /api/bookings, a phone number of
// its own), subscribe a WebSocket to it, wait until sweetyd has dialled it at the sandbox's VAPI
// (its call_queue row is `active` with the call id, read from PostgreSQL), then two samples:
//   calling   — a `status-update` `ringing` for that call (booking initiating → calling)
//   completed — a `status-update` `ended`, endedReason customer-ended-call (calling → completed)
// Each is one HTTP request (X-Vapi-Secret, the body VAPI sends, booking id in the call's
// assistantOverrides.metadata) written on a connection opened beforehand; the clock starts just
// before the write and stops in the WebSocket receive callback of the frame with that status. The
// webhook must be answered 200. The call is then ended at the sandbox without messages (it would
// hold one of the key's concurrency slots). The sandbox must not send VAPI messages itself (the
// caller sets its webhook mode to drop). The first `warmup` bookings' samples are not counted.
//
// --samples-out writes every counted sample as a line "<kind> <ms> <s since the start>", in order.
// Prints one JSON line on stdout: samples, p50/p90/p99/max/mean in ms for all and per kind, errors.
// Progress and parameters go to stderr. Exit 0 when at least one sample was taken, 1 otherwise
// (set-up failure or nothing measured), 2 on bad usage.
//
// Threading: one thread; lws (the WebSocket) is serviced only between the blocking steps, and a
// status frame that arrives during one is kept with its arrival time by the receive callback.
#include <errno.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <libwebsockets.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "tests/harness/harness.h"

#define TICK_MS 5
#define STEP_TIMEOUT_MS 10000
#define SECRET_MAX 512

enum { KIND_CALLING, KIND_COMPLETED, KINDS };
static const char *const kind_status[KINDS] = {"calling", "completed"};
static const char *const kind_vapi[KINDS] = {"ringing", "ended"};

typedef struct {
    int port, sb_port;
    const char *db_url;
    const char *samples_out;
    char secret[SECRET_MAX + 1];
    int samples, warmup, timeout_s;
} opts_t;

// The measuring WebSocket of the booking under test.
typedef struct {
    struct lws *wsi;
    bool open, failed, closed, subscribed;
    char sub_frame[1024];
    bool sent;
    char want[16];          // the status whose frame stops the clock
    int64_t got_us;         // when it arrived (0: not yet)
    char last_status[16];
} probe_t;

typedef struct {
    opts_t o;
    struct lws_context *lws;
    lws_sorted_usec_list_t tick;
    PGconn *pg;
    double *lat_ms[KINDS];
    double *at_s[KINDS];    // when each sample was taken, s since the start
    int n[KINDS];
    int64_t start_us;
    int errors;
    char last_error[160];
} bench_t;

static int64_t now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void fail(bench_t *B, const char *what) {
    B->errors++;
    snprintf(B->last_error, sizeof B->last_error, "%s", what);
    fprintf(stderr, "push_latency: %s\n", what);
}

// ---- the WebSocket -----------------------------------------------------------------------------

// Pulls `"status":"…"` out of a status frame (frames are compact JSON written by ws.c).
static void frame_status(const char *in, size_t len, char *out, size_t size) {
    out[0] = '\0';
    const char *p = memmem(in, len, "\"status\":\"", 10);
    if (!p) return;
    p += 10;
    size_t i = 0;
    while (p + i < in + len && p[i] != '"' && i + 1 < size) {
        out[i] = p[i];
        i++;
    }
    out[i] = '\0';
}

static int callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len) {
    (void)user;
    probe_t *p = lws_get_opaque_user_data(wsi);
    switch (reason) {
    case LWS_CALLBACK_CLIENT_ESTABLISHED:
        if (!p) break;
        p->open = true;
        lws_callback_on_writable(wsi);
        break;
    case LWS_CALLBACK_CLIENT_WRITEABLE: {
        if (!p || p->sent) break;
        unsigned char buf[LWS_PRE + sizeof p->sub_frame];
        size_t n = strlen(p->sub_frame);
        memcpy(buf + LWS_PRE, p->sub_frame, n);
        if (lws_write(wsi, buf + LWS_PRE, n, LWS_WRITE_TEXT) < (int)n) return -1;
        p->sent = true;
        break;
    }
    case LWS_CALLBACK_CLIENT_RECEIVE: {
        if (!p) break;
        int64_t t = now_us();
        if (memmem(in, len, "\"type\":\"subscribed\"", 19)) {
            p->subscribed = true;
        } else if (memmem(in, len, "\"type\":\"status\"", 15)) {
            frame_status(in, len, p->last_status, sizeof p->last_status);
            if (!p->got_us && p->want[0] && strcmp(p->last_status, p->want) == 0) p->got_us = t;
        } else if (memmem(in, len, "\"type\":\"error\"", 14)) {
            p->failed = true;
        }
        break;
    }
    case LWS_CALLBACK_CLIENT_CONNECTION_ERROR:
    case LWS_CALLBACK_CLIENT_CLOSED:
    case LWS_CALLBACK_WSI_DESTROY:
        if (!p) break;
        if (reason == LWS_CALLBACK_CLIENT_CONNECTION_ERROR) p->failed = true;
        p->closed = true;
        p->wsi = NULL;
        lws_set_opaque_user_data(wsi, NULL);
        break;
    default:
        break;
    }
    return 0;
}

static const struct lws_protocols protocols[] = {
    {.name = "push-latency", .callback = callback, .rx_buffer_size = 4096},
    {.name = NULL, .callback = NULL},
};

static void on_tick(lws_sorted_usec_list_t *sul) {
    (void)sul;
}

static void service_once(bench_t *B) {
    lws_sul_schedule(B->lws, 0, &B->tick, on_tick, TICK_MS * LWS_US_PER_MS);
    lws_service(B->lws, 0);
}

// Services lws until done(p) or timeout_ms; 0 when done.
static int service_until(bench_t *B, probe_t *p, bool (*done)(const probe_t *), int timeout_ms) {
    int64_t end = now_us() + (int64_t)timeout_ms * 1000;
    while (!done(p)) {
        if (p->closed || now_us() >= end) return -1;
        service_once(B);
    }
    return 0;
}

static bool is_subscribed(const probe_t *p) { return p->subscribed; }
static bool has_frame(const probe_t *p) { return p->got_us != 0; }

static int probe_open(bench_t *B, probe_t *p, const char *booking_id, const char *token) {
    memset(p, 0, sizeof *p);
    int n = snprintf(p->sub_frame, sizeof p->sub_frame,
                     "{\"type\":\"subscribe\",\"booking_id\":\"%s\",\"token\":\"%s\",\"after_seq\":0}", booking_id, token);
    if (n < 0 || (size_t)n >= sizeof p->sub_frame) return -1;
    struct lws_client_connect_info ci;
    memset(&ci, 0, sizeof ci);
    ci.context = B->lws;
    ci.address = "127.0.0.1";
    ci.port = B->o.port;
    ci.path = "/ws";
    ci.host = "127.0.0.1";
    ci.local_protocol_name = "push-latency";
    ci.opaque_user_data = p;
    ci.pwsi = &p->wsi;
    if (!lws_client_connect_via_info(&ci)) return -1;
    return service_until(B, p, is_subscribed, STEP_TIMEOUT_MS);
}

static void probe_close(bench_t *B, probe_t *p) {
    if (p->wsi) {
        lws_set_opaque_user_data(p->wsi, NULL);
        lws_set_timeout(p->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
        p->wsi = NULL;
    }
    for (int i = 0; i < 3; i++) service_once(B);   // let the close go out
}

// ---- HTTP ----------------------------------------------------------------------------------------

static int connect_local(int port) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static int write_all(int fd, const char *buf, size_t len) {
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return -1;
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

// Reads the answer of a `Connection: close` request until EOF (bounded); its HTTP status or -1.
static int read_status(int fd, int timeout_ms) {
    char buf[4096];
    size_t len = 0;
    int64_t end = now_us() + (int64_t)timeout_ms * 1000;
    for (;;) {
        int left = (int)((end - now_us()) / 1000);
        if (left <= 0) break;
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        if (poll(&pfd, 1, left) <= 0) break;
        ssize_t n = read(fd, buf + len, sizeof buf - 1 - len);
        if (n <= 0) break;
        len += (size_t)n;
        if (len == sizeof buf - 1) break;
    }
    buf[len] = '\0';
    int status = -1;
    if (sscanf(buf, "HTTP/1.%*d %d", &status) != 1) return -1;
    return status;
}

// POST url with a JSON body; the answer's status, its body in *body (malloc'ed) when asked.
static long http_json(const char *method, const char *url, const char *json, char **body) {
    static const char *const headers[] = {"Content-Type: application/json", NULL};
    harness_http_t r;
    long status = harness_http(method, url, json, headers, &r) == 0 ? r.status : 0;
    if (body) {
        *body = r.body;
        r.body = NULL;
    }
    harness_http_clear(&r);
    return status;
}

// ---- one booking -------------------------------------------------------------------------------

typedef struct {
    char id[64];
    char token[600];
    char call_id[128];
} booking_t;

static int book(bench_t *B, int i, booking_t *bk) {
    char url[128], json[256];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/api/bookings", B->o.port);
    // +1555 2 then 7 digits: a number of its own per booking (the free-trial cooldown is per number)
    snprintf(json, sizeof json, "{\"name\":\"Bench Two\",\"phone\":\"+15552%07d\",\"plan\":\"free_trial\"}", i);
    char *body = NULL;
    long status = http_json("POST", url, json, &body);
    json_t *j = body ? json_loads(body, 0, NULL) : NULL;
    free(body);
    const char *id = json_string_value(json_object_get(j, "booking_id"));
    const char *token = json_string_value(json_object_get(j, "status_token"));
    int rc = -1;
    if (status == 201 && id && token && strlen(id) < sizeof bk->id && strlen(token) < sizeof bk->token) {
        snprintf(bk->id, sizeof bk->id, "%s", id);
        snprintf(bk->token, sizeof bk->token, "%s", token);
        rc = 0;
    } else {
        char why[96];
        snprintf(why, sizeof why, "POST /api/bookings answered %ld", status);
        fail(B, why);
    }
    json_decref(j);
    return rc;
}

// Waits until the dialer has recorded the call it placed for the booking (call_queue active).
static int wait_dialled(bench_t *B, booking_t *bk) {
    const char *params[] = {bk->id};
    int64_t end = now_us() + (int64_t)STEP_TIMEOUT_MS * 1000;
    while (now_us() < end) {
        PGresult *res = PQexecParams(B->pg,
                                     "SELECT vapi_call_id FROM call_queue WHERE booking_id = $1::uuid"
                                     " AND status = 'active' AND vapi_call_id IS NOT NULL",
                                     1, NULL, params, NULL, NULL, 0);
        bool found = PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1;
        if (found) snprintf(bk->call_id, sizeof bk->call_id, "%s", PQgetvalue(res, 0, 0));
        bool bad = PQresultStatus(res) != PGRES_TUPLES_OK;
        PQclear(res);
        if (bad) {
            fail(B, "call_queue query failed");
            return -1;
        }
        if (found) return 0;
        for (int i = 0; i < 4; i++) service_once(B);   // ~20 ms, the WebSocket kept read
    }
    fail(B, "the booking was not dialled in time");
    return -1;
}

// One sample: the webhook for `kind`, timed to its status frame. Its latency in ms, or -1.
static double sample(bench_t *B, probe_t *p, const booking_t *bk, int kind) {
    int64_t ts_ms = (int64_t)time(NULL) * 1000;
    char body[1024];
    int blen = snprintf(body, sizeof body,
                        "{\"message\":{\"timestamp\":%lld,\"type\":\"status-update\",\"status\":\"%s\"%s,"
                        "\"call\":{\"id\":\"%s\",\"type\":\"outboundPhoneCall\",\"status\":\"%s\"%s,"
                        "\"assistantOverrides\":{\"metadata\":{\"booking_id\":\"%s\",\"attempt\":0}}}}}",
                        (long long)ts_ms, kind_vapi[kind],
                        kind == KIND_COMPLETED ? ",\"endedReason\":\"customer-ended-call\"" : "", bk->call_id,
                        kind_vapi[kind], kind == KIND_COMPLETED ? ",\"endedReason\":\"customer-ended-call\"" : "",
                        bk->id);
    char req[1024 + SECRET_MAX + 256];
    int rlen = snprintf(req, sizeof req,
                        "POST /webhooks/vapi HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: application/json\r\n"
                        "X-Vapi-Secret: %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s",
                        B->o.port, B->o.secret, blen, body);
    if (blen < 0 || (size_t)blen >= sizeof body || rlen < 0 || (size_t)rlen >= sizeof req) {
        fail(B, "webhook request too long");
        return -1;
    }
    int fd = connect_local(B->o.port);
    if (fd < 0) {
        fail(B, "cannot connect for the webhook");
        return -1;
    }
    for (int i = 0; i < 2; i++) service_once(B);   // nothing pending on the WebSocket before the clock starts
    snprintf(p->want, sizeof p->want, "%s", kind_status[kind]);
    p->got_us = 0;
    int64_t t0 = now_us();
    if (write_all(fd, req, (size_t)rlen) != 0) {
        close(fd);
        fail(B, "webhook write failed");
        return -1;
    }
    int rc = service_until(B, p, has_frame, STEP_TIMEOUT_MS);
    int status = read_status(fd, STEP_TIMEOUT_MS);
    close(fd);
    if (rc != 0) {
        char why[96];
        snprintf(why, sizeof why, "no %s frame within %d ms (webhook answered %d)", kind_status[kind], STEP_TIMEOUT_MS,
                 status);
        fail(B, why);
        return -1;
    }
    if (status != 200) {
        char why[64];
        snprintf(why, sizeof why, "webhook answered %d", status);
        fail(B, why);
        return -1;
    }
    return (double)(p->got_us - t0) / 1000.0;
}

// The call ends at the sandbox without messages, freeing its concurrency slot.
static void end_call_silently(bench_t *B, const booking_t *bk) {
    char url[256];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/_sandbox/vapi/calls/%s/end", B->o.sb_port, bk->call_id);
    long status = http_json("POST", url, "{\"reason\":\"customer-ended-call\",\"silent\":true}", NULL);
    if (status != 200) fail(B, "sandbox call end failed");
}

// ---- results -----------------------------------------------------------------------------------

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

// Nearest-rank percentile of sorted v[0..n).
static double pct(const double *v, int n, double q) {
    if (n <= 0) return 0;
    int k = (int)(q * n + 0.999999);
    if (k < 1) k = 1;
    if (k > n) k = n;
    return v[k - 1];
}

static void print_stats(const char *name, double *v, int n, bool last) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    double sum = 0;
    for (int i = 0; i < n; i++) sum += v[i];
    printf("\"%s\":{\"samples\":%d,\"p50_ms\":%.3f,\"p90_ms\":%.3f,\"p99_ms\":%.3f,\"max_ms\":%.3f,\"mean_ms\":%.3f}%s",
           name, n, pct(v, n, 0.50), pct(v, n, 0.90), pct(v, n, 0.99), n ? v[n - 1] : 0, n ? sum / n : 0,
           last ? "" : ",");
}

// Books, measures and prints the JSON line; 0 when at least one sample was taken.
static int measure(bench_t *B, int bookings) {
    int64_t deadline = now_us() + (int64_t)B->o.timeout_s * 1000000;
    int taken = 0;
    for (int i = 0; i < bookings + B->o.warmup && now_us() < deadline && B->errors < 20; i++) {
        booking_t bk;
        memset(&bk, 0, sizeof bk);
        probe_t p;
        if (book(B, i, &bk) != 0) continue;
        if (probe_open(B, &p, bk.id, bk.token) != 0) {
            fail(B, "the WebSocket did not subscribe");
            probe_close(B, &p);
            continue;
        }
        if (wait_dialled(B, &bk) == 0) {
            double lat[KINDS], at[KINDS];
            bool ok = true;
            for (int k = 0; k < KINDS && ok; k++) {
                at[k] = (double)(now_us() - B->start_us) / 1e6;
                ok = (lat[k] = sample(B, &p, &bk, k)) >= 0;
            }
            end_call_silently(B, &bk);
            if (ok && i >= B->o.warmup) {
                for (int k = 0; k < KINDS; k++) {
                    B->at_s[k][B->n[k]] = at[k];
                    B->lat_ms[k][B->n[k]++] = lat[k];
                }
                taken++;
                if (taken % 25 == 0) fprintf(stderr, "push_latency: %d bookings measured\n", taken);
            }
        }
        probe_close(B, &p);
    }

    if (B->o.samples_out) {
        FILE *f = fopen(B->o.samples_out, "w");
        if (!f) {
            fprintf(stderr, "push_latency: cannot write %s\n", B->o.samples_out);
        } else {
            for (int i = 0; i < B->n[0] || i < B->n[1]; i++)
                for (int k = 0; k < KINDS; k++)
                    if (i < B->n[k]) fprintf(f, "%s %.3f %.3f\n", kind_status[k], B->lat_ms[k][i], B->at_s[k][i]);
            fclose(f);
        }
    }
    int total = B->n[0] + B->n[1];
    double *all = malloc((size_t)(total ? total : 1) * sizeof *all);
    if (!all) return 1;
    memcpy(all, B->lat_ms[0], (size_t)B->n[0] * sizeof *all);
    memcpy(all + B->n[0], B->lat_ms[1], (size_t)B->n[1] * sizeof *all);
    printf("{");
    print_stats("all", all, total, false);
    print_stats("calling", B->lat_ms[0], B->n[0], false);
    print_stats("completed", B->lat_ms[1], B->n[1], true);
    printf(",\"errors\":%d,\"last_error\":\"", B->errors);
    for (const char *c = B->last_error; *c; c++)
        if (*c != '"' && *c != '\\') putchar(*c);
    printf("\"}\n");
    free(all);
    return total > 0 ? 0 : 1;
}

// ---- options -----------------------------------------------------------------------------------

static int usage(void) {
    fprintf(stderr, "usage: push_latency --port PORT --sandbox-port SBPORT --db-url URL --vapi-secret-file FILE\n"
                    "                    [--samples 100] [--warmup 4] [--timeout-s 150] [--samples-out FILE]\n");
    return 2;
}

static bool int_arg(const char *text, int min, int max, int *out) {
    char *end;
    errno = 0;
    long v = strtol(text, &end, 10);
    if (errno || *end || v < min || v > max) return false;
    *out = (int)v;
    return true;
}

static int read_secret(const char *path, char *out, size_t size) {
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    size_t n = fread(out, 1, size - 1, f);
    fclose(f);
    out[n] = '\0';
    while (n > 0 && (out[n - 1] == '\n' || out[n - 1] == '\r')) out[--n] = '\0';
    return n > 0 && strpbrk(out, "\r\n") == NULL ? 0 : -1;
}

static int parse(int argc, char **argv, opts_t *o) {
    const char *secret_file = NULL;
    *o = (opts_t){.samples = 100, .warmup = 4, .timeout_s = 150};
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *a = argv[i], *v = argv[i + 1];
        bool ok = true;
        if (!strcmp(a, "--port")) ok = int_arg(v, 1, 65535, &o->port);
        else if (!strcmp(a, "--sandbox-port")) ok = int_arg(v, 1, 65535, &o->sb_port);
        else if (!strcmp(a, "--db-url")) o->db_url = v;
        else if (!strcmp(a, "--vapi-secret-file")) secret_file = v;
        else if (!strcmp(a, "--samples")) ok = int_arg(v, 2, 100000, &o->samples);
        else if (!strcmp(a, "--warmup")) ok = int_arg(v, 0, 1000, &o->warmup);
        else if (!strcmp(a, "--timeout-s")) ok = int_arg(v, 1, 3600, &o->timeout_s);
        else if (!strcmp(a, "--samples-out")) o->samples_out = v;
        else return -1;
        if (!ok) return -1;
    }
    if (argc % 2 != 1 || !o->port || !o->sb_port || !o->db_url || !secret_file) return -1;
    if (read_secret(secret_file, o->secret, sizeof o->secret) != 0) {
        fprintf(stderr, "push_latency: cannot read a one-line secret from %s\n", secret_file);
        return -3;
    }
    return 0;
}

int main(int argc, char **argv) {
    bench_t B;
    memset(&B, 0, sizeof B);
    int prc = parse(argc, argv, &B.o);
    if (prc != 0) return prc == -1 ? usage() : 1;
    const opts_t *o = &B.o;
    int bookings = (o->samples + KINDS - 1) / KINDS;
    fprintf(stderr, "push_latency: port=%d sandbox_port=%d samples=%d (%d bookings x %d) warmup_bookings=%d timeout_s=%d\n",
            o->port, o->sb_port, bookings * KINDS, bookings, KINDS, o->warmup, o->timeout_s);

    for (int k = 0; k < KINDS; k++) {
        B.lat_ms[k] = calloc((size_t)bookings, sizeof(double));
        B.at_s[k] = calloc((size_t)bookings, sizeof(double));
    }
    B.start_us = now_us();
    B.pg = PQconnectdb(o->db_url);
    lws_set_log_level(LLL_ERR, NULL);
    struct lws_context_creation_info info;
    memset(&info, 0, sizeof info);   // lws 4.1: no lws_context_info_defaults
    info.port = CONTEXT_PORT_NO_LISTEN;
    info.protocols = protocols;
    B.lws = lws_create_context(&info);
    int rc = 1;
    if (!B.lat_ms[0] || !B.lat_ms[1] || !B.at_s[0] || !B.at_s[1] || !B.lws || PQstatus(B.pg) != CONNECTION_OK)
        fprintf(stderr, "push_latency: set-up failed (%s)\n",
                PQstatus(B.pg) != CONNECTION_OK ? "database connection" : "memory or lws context");
    else
        rc = measure(&B, bookings);
    if (B.lws) {
        lws_sul_cancel(&B.tick);
        lws_context_destroy(B.lws);
    }
    PQfinish(B.pg);
    for (int k = 0; k < KINDS; k++) {
        free(B.lat_ms[k]);
        free(B.at_s[k]);
    }
    return rc;
}
