// bench/wsload.c — a WebSocket load client for benchmarks 2 and 3: opens N connections to
// sweetyd's /ws, subscribes each to a booking, holds them, and prints what happened as JSON.
//
//   wsload --port PORT (--booking ID --token TOKEN | --subs FILE) [--host 127.0.0.1]
//          [--connections 1000] [--sources 1] [--source-first 1] [--rate 2000] [--inflight 256]
//          [--open-timeout 10] [--hold 30] [--after-seq 0]
//
// FILE holds one "booking_id token" pair a line; connection i subscribes to pair i mod count (any
// number of connections may watch one booking; the server allows 16 subscriptions a connection,
// one is used here). Connection i binds its source address to 127.0.0.(first + i mod sources), so
// more connections than one address has ephemeral ports (~28,000) can be held. Connections are
// started at most `rate` a second with at most `inflight` not yet subscribed at once.
//
// Phases. Opening: until every connection is subscribed or has failed (connect error, refused
// upgrade, an error frame, or no `subscribed` within open-timeout); then one line on stdout:
//   {"phase":"ready","connections":N,"opened":…,"subscribed":…,"failed":…,"closed_by_server":…,…}
// Holding: `hold` seconds, or until SIGTERM/SIGINT; then {"phase":"done",…} and every connection is
// closed by us. Parameters go to stderr. Exit 0 when the run completed (whatever the counts), 1 on
// a set-up failure, 2 on bad usage.
//
// Threading: one thread, the lws service loop; lws is touched nowhere else. A signal only sets a flag.
// The process's own open-file limit (20,000 here) bounds one wsload: run several for more.
#include <errno.h>
#include <libwebsockets.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#define SOURCES_MAX 64
#define TICK_MS 10
#define SCAN_EVERY_MS 200
#define SUB_MAX 512

enum { C_IDLE, C_CONNECTING, C_SUBSCRIBING, C_SUBSCRIBED, C_FAILED, C_CLOSED };

typedef struct {
    struct lws *wsi;
    int64_t started_ms;
    int sub;               // index into the booking list
    uint8_t state;
    bool sent;             // the subscribe frame went out
    bool was_open;         // the upgrade succeeded
    bool closing_by_us;
} conn_t;

typedef struct {
    char *booking_id;
    char *token;
} sub_t;

typedef struct {
    const char *host;
    int port;
    int connections;
    int sources, source_first;
    int rate, inflight;
    int open_timeout_s, hold_s;
    int after_seq;
    sub_t *subs;
    int nsubs;
} opts_t;

typedef struct {
    opts_t o;
    struct lws_context *lws;
    lws_sorted_usec_list_t tick;
    conn_t *conns;
    char sources[SOURCES_MAX][16];
    int next;              // next connection to start
    int pending;           // started, not yet subscribed nor failed
    bool finishing;        // we are closing everything: closes are ours
    // counts
    long opened, subscribed, failed, failed_connect, failed_timeout, failed_refused, closed_by_server;
    long status_frames, error_frames, other_frames;
    int64_t t_start_ms, t_ready_ms;
    char last_error[128];
} load_t;

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig) {
    (void)sig;
    stop_requested = 1;
}

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

// ---- connection outcomes -------------------------------------------------------------------------

static void conn_failed(load_t *L, conn_t *c, long *bucket, const char *why) {
    if (c->state == C_CONNECTING || c->state == C_SUBSCRIBING) L->pending--;
    c->state = C_FAILED;
    L->failed++;
    if (bucket) (*bucket)++;
    if (why) snprintf(L->last_error, sizeof L->last_error, "%s", why);
}

static void on_frame(load_t *L, conn_t *c, const char *in, size_t len) {
    if (memmem(in, len, "\"type\":\"subscribed\"", 19)) {
        if (c->state == C_SUBSCRIBING) {
            c->state = C_SUBSCRIBED;
            L->pending--;
            L->subscribed++;
        }
    } else if (memmem(in, len, "\"type\":\"status\"", 15)) {
        L->status_frames++;
    } else if (memmem(in, len, "\"type\":\"error\"", 14)) {
        L->error_frames++;
        if (c->state == C_SUBSCRIBING) conn_failed(L, c, &L->failed_refused, "error frame");
    } else {
        L->other_frames++;
    }
}

static int callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len) {
    (void)user;
    conn_t *c = lws_get_opaque_user_data(wsi);
    load_t *L = lws_context_user(lws_get_context(wsi));
    switch (reason) {
    case LWS_CALLBACK_CLIENT_ESTABLISHED:
        if (!c) break;
        c->was_open = true;
        L->opened++;
        if (c->state == C_CONNECTING) c->state = C_SUBSCRIBING;
        lws_callback_on_writable(wsi);
        break;
    case LWS_CALLBACK_CLIENT_CONNECTION_ERROR:
        if (!c) break;
        c->wsi = NULL;
        lws_set_opaque_user_data(wsi, NULL);
        if (c->state == C_CONNECTING || c->state == C_SUBSCRIBING) {
            char why[96];
            snprintf(why, sizeof why, "connect: %.*s", in ? (int)(len < 80 ? len : 80) : 1,
                     in ? (const char *)in : "-");
            conn_failed(L, c, &L->failed_connect, why);
        }
        break;
    case LWS_CALLBACK_CLIENT_WRITEABLE: {
        if (!c || c->sent || c->closing_by_us) {
            if (c && c->closing_by_us) return -1;
            break;
        }
        const sub_t *s = &L->o.subs[c->sub];
        char buf[LWS_PRE + SUB_MAX + 256];
        int n = snprintf(buf + LWS_PRE, sizeof buf - LWS_PRE,
                         "{\"type\":\"subscribe\",\"booking_id\":\"%s\",\"token\":\"%s\",\"after_seq\":%d}",
                         s->booking_id, s->token, L->o.after_seq);
        if (n < 0 || (size_t)n >= sizeof buf - LWS_PRE) return -1;
        if (lws_write(wsi, (unsigned char *)buf + LWS_PRE, (size_t)n, LWS_WRITE_TEXT) < n) return -1;
        c->sent = true;
        break;
    }
    case LWS_CALLBACK_CLIENT_RECEIVE:
        if (c) on_frame(L, c, in, len);
        break;
    case LWS_CALLBACK_CLIENT_CLOSED:
    case LWS_CALLBACK_WSI_DESTROY:   // also for a wsi lws gives up on without another callback
        if (!c) break;
        c->wsi = NULL;
        lws_set_opaque_user_data(wsi, NULL);
        if (c->state == C_CONNECTING || c->state == C_SUBSCRIBING) {
            conn_failed(L, c, &L->failed_refused, "closed before subscribed");
        } else if (c->state == C_SUBSCRIBED) {
            if (!c->closing_by_us && !L->finishing) L->closed_by_server++;
            c->state = C_CLOSED;
        }
        break;
    default:
        break;
    }
    return 0;
}

static const struct lws_protocols protocols[] = {
    {.name = "wsload", .callback = callback, .rx_buffer_size = 1024},
    {.name = NULL, .callback = NULL},
};

// ---- driving ------------------------------------------------------------------------------------

static void start_one(load_t *L, int i) {
    conn_t *c = &L->conns[i];
    c->state = C_CONNECTING;
    c->started_ms = now_ms();
    c->sub = i % L->o.nsubs;
    L->pending++;
    struct lws_client_connect_info ci;
    memset(&ci, 0, sizeof ci);
    ci.context = L->lws;
    ci.address = L->o.host;
    ci.port = L->o.port;
    ci.path = "/ws";
    ci.host = L->o.host;
    ci.iface = L->sources[i % L->o.sources];
    ci.protocol = NULL;
    ci.local_protocol_name = "wsload";
    ci.opaque_user_data = c;
    ci.pwsi = &c->wsi;
    if (!lws_client_connect_via_info(&ci) && c->state == C_CONNECTING)
        conn_failed(L, c, &L->failed_connect, "connect: lws_client_connect_via_info");
}

// Starts as many connections as the rate and the in-flight bound allow now.
static void pace(load_t *L, int64_t now) {
    int64_t allowed = (now - L->t_start_ms + 1) * L->o.rate / 1000 + 1;
    while (L->next < L->o.connections && L->next < allowed && L->pending < L->o.inflight) start_one(L, L->next++);
}

// Connections still not subscribed after open-timeout are given up.
static void expire(load_t *L, int64_t now) {
    int64_t limit = (int64_t)L->o.open_timeout_s * 1000;
    for (int i = 0; i < L->next; i++) {
        conn_t *c = &L->conns[i];
        if ((c->state != C_CONNECTING && c->state != C_SUBSCRIBING) || now - c->started_ms < limit) continue;
        conn_failed(L, c, &L->failed_timeout, "no subscribed frame within open-timeout");
        if (c->wsi) {
            c->closing_by_us = true;
            lws_set_timeout(c->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
        }
    }
}

static void on_tick(lws_sorted_usec_list_t *sul) {
    (void)sul;
}

static void service_once(load_t *L) {
    lws_sul_schedule(L->lws, 0, &L->tick, on_tick, TICK_MS * LWS_US_PER_MS);
    lws_service(L->lws, 0);
}

static long held(const load_t *L) {
    long n = 0;
    for (int i = 0; i < L->next; i++)
        if (L->conns[i].state == C_SUBSCRIBED) n++;
    return n;
}

static void print_stats(const load_t *L, const char *phase) {
    int64_t now = now_ms();
    printf("{\"phase\":\"%s\",\"connections\":%d,\"started\":%d,\"opened\":%ld,\"subscribed\":%ld,\"held\":%ld,"
           "\"failed\":%ld,\"failed_connect\":%ld,\"failed_refused\":%ld,\"failed_timeout\":%ld,"
           "\"closed_by_server\":%ld,\"status_frames\":%ld,\"error_frames\":%ld,\"open_s\":%.3f,\"elapsed_s\":%.3f,"
           "\"last_error\":\"",
           phase, L->o.connections, L->next, L->opened, L->subscribed, held(L), L->failed, L->failed_connect,
           L->failed_refused, L->failed_timeout, L->closed_by_server, L->status_frames, L->error_frames,
           (double)((L->t_ready_ms ? L->t_ready_ms : now) - L->t_start_ms) / 1000.0,
           (double)(now - L->t_start_ms) / 1000.0);
    for (const char *p = L->last_error; *p; p++)   // JSON-safe: lws error texts are plain ASCII
        if (*p != '"' && *p != '\\' && (unsigned char)*p >= 0x20) putchar(*p);
    printf("\"}\n");
    fflush(stdout);
}

// ---- options ------------------------------------------------------------------------------------

static int usage(void) {
    fprintf(stderr,
            "usage: wsload --port PORT (--booking ID --token TOKEN | --subs FILE) [--host 127.0.0.1]\n"
            "              [--connections 1000] [--sources 1] [--source-first 1] [--rate 2000] [--inflight 256]\n"
            "              [--open-timeout 10] [--hold 30] [--after-seq 0]\n");
    return 2;
}

static int add_sub(opts_t *o, const char *id, const char *token) {
    if (strlen(id) + strlen(token) > SUB_MAX) return -1;
    sub_t *s = realloc(o->subs, (size_t)(o->nsubs + 1) * sizeof *s);
    if (!s) return -1;
    o->subs = s;
    s[o->nsubs].booking_id = strdup(id);
    s[o->nsubs].token = strdup(token);
    if (!s[o->nsubs].booking_id || !s[o->nsubs].token) {
        free(s[o->nsubs].booking_id);
        free(s[o->nsubs].token);
        return -1;
    }
    o->nsubs++;
    return 0;
}

static int read_subs(opts_t *o, const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "wsload: cannot open %s: %s\n", path, strerror(errno));
        return -1;
    }
    char line[SUB_MAX + 64], id[128], token[SUB_MAX + 1];
    int rc = 0;
    while (rc == 0 && fgets(line, sizeof line, f))
        if (sscanf(line, "%127s %512s", id, token) == 2) rc = add_sub(o, id, token);
    fclose(f);
    return rc;
}

static void free_subs(opts_t *o) {
    for (int i = 0; i < o->nsubs; i++) {
        free(o->subs[i].booking_id);
        free(o->subs[i].token);
    }
    free(o->subs);
    o->subs = NULL;
    o->nsubs = 0;
}

static bool int_arg(const char *text, int min, int max, int *out) {
    char *end;
    errno = 0;
    long v = strtol(text, &end, 10);
    if (errno || *end || v < min || v > max) return false;
    *out = (int)v;
    return true;
}

static int parse(int argc, char **argv, opts_t *o) {
    const char *booking = NULL, *token = NULL, *file = NULL;
    *o = (opts_t){.host = "127.0.0.1", .connections = 1000, .sources = 1, .source_first = 1, .rate = 2000,
                  .inflight = 256, .open_timeout_s = 10, .hold_s = 30};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        bool ok = v != NULL;
        if (!ok) return -1;
        if (!strcmp(a, "--port")) ok = int_arg(v, 1, 65535, &o->port);
        else if (!strcmp(a, "--host")) o->host = v;
        else if (!strcmp(a, "--booking")) booking = v;
        else if (!strcmp(a, "--token")) token = v;
        else if (!strcmp(a, "--subs")) file = v;
        else if (!strcmp(a, "--connections")) ok = int_arg(v, 1, 1000000, &o->connections);
        else if (!strcmp(a, "--sources")) ok = int_arg(v, 1, SOURCES_MAX, &o->sources);
        else if (!strcmp(a, "--source-first")) ok = int_arg(v, 1, 254, &o->source_first);
        else if (!strcmp(a, "--rate")) ok = int_arg(v, 1, 1000000, &o->rate);
        else if (!strcmp(a, "--inflight")) ok = int_arg(v, 1, 100000, &o->inflight);
        else if (!strcmp(a, "--open-timeout")) ok = int_arg(v, 1, 3600, &o->open_timeout_s);
        else if (!strcmp(a, "--hold")) ok = int_arg(v, 0, 86400, &o->hold_s);
        else if (!strcmp(a, "--after-seq")) ok = int_arg(v, 0, 1000000, &o->after_seq);
        else return -1;
        if (!ok) return -1;
        i++;
    }
    if (!o->port || (!file && (!booking || !token)) || o->source_first + o->sources - 1 > 254) return -1;
    if (file && read_subs(o, file) != 0) return -3;
    if (booking && token && add_sub(o, booking, token) != 0) return -3;
    if (o->nsubs == 0) return -1;
    return 0;
}

int main(int argc, char **argv) {
    load_t L;
    memset(&L, 0, sizeof L);
    int prc = parse(argc, argv, &L.o);
    if (prc != 0) {
        free_subs(&L.o);
        return prc == -1 ? usage() : 1;
    }
    opts_t *o = &L.o;
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);   // best effort: the connect errors say if it was needed
    }
    getrlimit(RLIMIT_NOFILE, &rl);
    fprintf(stderr,
            "wsload: host=%s port=%d connections=%d bookings=%d sources=127.0.0.%d..127.0.0.%d rate=%d/s "
            "inflight=%d open_timeout_s=%d hold_s=%d after_seq=%d fd_limit=%llu\n",
            o->host, o->port, o->connections, o->nsubs, o->source_first, o->source_first + o->sources - 1, o->rate,
            o->inflight, o->open_timeout_s, o->hold_s, o->after_seq, (unsigned long long)rl.rlim_cur);
    for (int i = 0; i < o->sources; i++) snprintf(L.sources[i], sizeof L.sources[i], "127.0.0.%d", o->source_first + i);

    L.conns = calloc((size_t)o->connections, sizeof *L.conns);
    if (!L.conns) {
        free_subs(o);
        return 1;
    }
    lws_set_log_level(LLL_ERR, NULL);
    struct lws_context_creation_info info;
    memset(&info, 0, sizeof info);   // lws 4.1: no lws_context_info_defaults
    info.port = CONTEXT_PORT_NO_LISTEN;
    info.protocols = protocols;
    info.user = &L;
    info.timeout_secs = (unsigned)o->open_timeout_s + 5;   // our own open-timeout acts first
    L.lws = lws_create_context(&info);
    if (!L.lws) {
        fprintf(stderr, "wsload: lws_create_context failed\n");
        free(L.conns);
        free_subs(o);
        return 1;
    }
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    signal(SIGPIPE, SIG_IGN);

    L.t_start_ms = now_ms();
    int64_t next_scan = L.t_start_ms + SCAN_EVERY_MS;
    while (!stop_requested && (L.next < o->connections || L.pending > 0)) {
        int64_t now = now_ms();
        pace(&L, now);
        if (now >= next_scan) {
            expire(&L, now);
            next_scan = now + SCAN_EVERY_MS;
        }
        service_once(&L);
    }
    L.t_ready_ms = now_ms();
    print_stats(&L, "ready");
    int64_t hold_end = L.t_ready_ms + (int64_t)o->hold_s * 1000;
    while (!stop_requested && now_ms() < hold_end) service_once(&L);
    print_stats(&L, "done");

    L.finishing = true;
    for (int i = 0; i < L.next; i++)
        if (L.conns[i].wsi) lws_set_opaque_user_data(L.conns[i].wsi, NULL);
    lws_sul_cancel(&L.tick);
    lws_context_destroy(L.lws);
    free(L.conns);
    free_subs(o);
    return 0;
}
