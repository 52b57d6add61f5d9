// tests/unit/test_http.c — the HTTP actor, in-process and over real HTTP (libcurl): the bus broker
// and the http actor run as czmq actors on a free port of 127.0.0.1 (or ::1), a test endpoint
// publishes bus messages, and curl checks /healthz, /metrics, the error shapes and keep-alive.
// Also the CIDR list behind http.metrics_from.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
// cmocka after the standard headers it needs
#include <cmocka.h>

#include <arpa/inet.h>
#include <curl/curl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <dirent.h>
#include <jansson.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tests/unit/curl_reply.h"
#include "bus/broker.h"
#include "bus/bus.h"
#include "conf/config.h"
#include "realtime/cidr.h"
#include "realtime/http.h"
#include "tests/harness/harness.h"

#define WAIT_MS 5000

typedef struct {
    char tmpdir[64];
    char trace[128];
    bus_broker_args_t broker_args;
    zactor_t *broker;
    bus_endpoint_t *ep;      // the test's own endpoint: publishes what other actors would
    config_t cfg;
    http_args_t http_args;
    zactor_t *http;
    int port;
    char base[80];           // "http://127.0.0.1:PORT"
} fixture_t;


// ---- helpers --------------------------------------------------------------------------------

// A port nobody listens on right now: bind port 0 on the address the server will use, read it
// back, close. ("::" is dual-stack, so its port is free for IPv4 too.)
static int free_port(const char *host) {
    int family = strchr(host, ':') ? AF_INET6 : AF_INET;
    int fd = socket(family, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    socklen_t len;
    if (family == AF_INET) {
        struct sockaddr_in *in = (struct sockaddr_in *)&ss;
        in->sin_family = AF_INET;
        inet_pton(AF_INET, host, &in->sin_addr);
        len = sizeof *in;
    } else {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
        in6->sin6_family = AF_INET6;
        inet_pton(AF_INET6, host, &in6->sin6_addr);
        len = sizeof *in6;
    }
    int port = -1;
    if (bind(fd, (struct sockaddr *)&ss, len) == 0 && getsockname(fd, (struct sockaddr *)&ss, &len) == 0)
        port = ntohs(family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port : ((struct sockaddr_in6 *)&ss)->sin6_port);
    close(fd);
    return port;
}

// One request on handle h (reused handles keep their connection). method NULL = GET.
static void request(CURL *h, const char *method, const char *url, const char *body, size_t body_len,
                    struct curl_slist *headers, reply_t *r) {
    memset(r, 0, sizeof *r);
    curl_easy_reset(h);
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 5000L);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, r);
    if (headers) curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
    if (method && strcmp(method, "HEAD") == 0) {
        curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
    } else if (method && strcmp(method, "POST") == 0) {
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, body ? body : "");
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)body_len);
    } else if (method) {
        curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    }
    r->rc = curl_easy_perform(h);
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r->status);
    curl_easy_getinfo(h, CURLINFO_NUM_CONNECTS, &r->connects);
}

static void get(fixture_t *f, CURL *h, const char *path, reply_t *r) {
    char url[256];
    snprintf(url, sizeof url, "%s%s", f->base, path);
    request(h, NULL, url, NULL, 0, NULL, r);
}

static long get_status(fixture_t *f, const char *path) {
    CURL *h = curl_easy_init();
    reply_t r;
    get(f, h, path, &r);
    long status = r.rc == CURLE_OK ? r.status : -1;
    reply_clear(&r);
    curl_easy_cleanup(h);
    return status;
}

static bool has_header(const reply_t *r, const char *line) {
    return strcasestr(r->headers, line) != NULL;
}

// The error object's code, from {"error":{"code":...}}; "" when the body is not that shape.
static void error_code(const reply_t *r, char *out, size_t size) {
    out[0] = '\0';
    json_t *root = r->body ? json_loads(r->body, 0, NULL) : NULL;
    const char *code = json_string_value(json_object_get(json_object_get(root, "error"), "code"));
    const char *message = json_string_value(json_object_get(json_object_get(root, "error"), "message"));
    if (code && message) snprintf(out, size, "%s", code);
    json_decref(root);
}

static void publish_db_state(fixture_t *f, bool up, int64_t reconnects) {
    bus_msg_t msg;
    bus_msg_init(&msg, BUS_DB_STATE);
    msg.u.db_state.up = up;
    msg.u.db_state.reconnects = reconnects;
    assert_int_equal(bus_publish(f->ep, &msg), 0);
}

static void publish_actor(fixture_t *f, const char *name, bool started) {
    bus_msg_t msg;
    bus_msg_init(&msg, started ? BUS_ACTOR_STARTED : BUS_ACTOR_STOPPED);
    snprintf(msg.u.actor_started.actor, sizeof msg.u.actor_started.actor, "%s", name);
    assert_int_equal(bus_publish(f->ep, &msg), 0);
}

// Publishes db.state until /healthz answers `want` (a late SUB may miss the first ones).
static bool healthz_becomes(fixture_t *f, bool up, long want) {
    int64_t deadline = zclock_mono() + WAIT_MS;
    while (zclock_mono() < deadline) {
        publish_db_state(f, up, 0);
        if (get_status(f, "/healthz") == want) return true;
        zclock_sleep(20);
    }
    return false;
}

// GETs /metrics until its body contains `needle`.
static bool metrics_show(fixture_t *f, const char *needle) {
    int64_t deadline = zclock_mono() + WAIT_MS;
    CURL *h = curl_easy_init();
    bool found = false;
    while (!found && zclock_mono() < deadline) {
        reply_t r;
        get(f, h, "/metrics", &r);
        found = r.status == 200 && r.body && strstr(r.body, needle);
        reply_clear(&r);
        if (!found) zclock_sleep(20);
    }
    curl_easy_cleanup(h);
    return found;
}

// Starts the http actor with the fixture's config. true when it reported READY.
static bool http_start(fixture_t *f) {
    f->http_args = (http_args_t){.cfg = &f->cfg, .log = {.level = SLOG_WARN, .who = "http"}};
    f->http = zactor_new(http_actor, &f->http_args);
    if (!f->http) return false;
    zsock_set_rcvtimeo(zactor_sock(f->http), 10000);
    char *status = zstr_recv(f->http);
    bool ready = status && strcmp(status, "READY") == 0;
    zstr_free(&status);
    zsock_set_rcvtimeo(zactor_sock(f->http), -1);
    return ready;
}

static void http_config(fixture_t *f, const char *host, const char *metrics_from) {
    int family = strchr(host, ':') ? AF_INET6 : AF_INET;
    f->port = free_port(host);
    assert_true(f->port > 0);
    f->cfg.http_listen_host = (char *)host;
    f->cfg.http_listen_port = f->port;
    f->cfg.http_metrics_from = (char *)metrics_from;
    const char *connect_host = strcmp(host, "::") == 0 ? "127.0.0.1" : host;
    snprintf(f->base, sizeof f->base, family == AF_INET6 && strcmp(host, "::") != 0 ? "http://[%s]:%d" : "http://%s:%d",
             connect_host, f->port);
}

// Another process may take the free port before the actor binds it: then try another one.
static void http_start_on(fixture_t *f, const char *host, const char *metrics_from) {
    for (int attempt = 0; attempt < 3; attempt++) {
        http_config(f, host, metrics_from);
        if (http_start(f)) return;
        zactor_destroy(&f->http);
    }
    fail_msg("the http actor did not start on %s", host);
}

static int count_open_fds(void) {
    DIR *d = opendir("/proc/self/fd");
    int n = 0;
    if (!d) return -1;
    while (readdir(d)) n++;
    closedir(d);
    return n;
}

// ---- fixture --------------------------------------------------------------------------------

static int setup(void **state) {
    fixture_t *f = calloc(1, sizeof *f);
    if (!f) return -1;
    snprintf(f->tmpdir, sizeof f->tmpdir, "/tmp/test_http.XXXXXX");
    if (!mkdtemp(f->tmpdir)) return -1;
    snprintf(f->trace, sizeof f->trace, "ipc://%s/trace", f->tmpdir);
    f->broker_args = (bus_broker_args_t){.trace_endpoint = f->trace, .keep = 1000,
                                         .log = {.level = SLOG_WARN, .who = "broker"}};
    f->broker = bus_broker_new(&f->broker_args);   // bus_broker_actor, waited for until bound
    if (!f->broker) return -1;
    f->ep = bus_endpoint_new("test", NULL);
    if (!f->ep) return -1;
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fixture_t *f = *state;
    zactor_destroy(&f->http);
    bus_endpoint_destroy(&f->ep);
    zactor_destroy(&f->broker);
    char path[256];
    snprintf(path, sizeof path, "%s/404.html", f->tmpdir);
    unlink(path);
    snprintf(path, sizeof path, "%s/trace", f->tmpdir);
    unlink(path);
    rmdir(f->tmpdir);
    free(f);
    return 0;
}

// ---- tests ----------------------------------------------------------------------------------

static void test_healthz_follows_db_state(void **state) {
    fixture_t *f = *state;
    http_start_on(f, "127.0.0.1", NULL);
    CURL *h = curl_easy_init();
    reply_t r;

    get(f, h, "/healthz", &r);   // no db.state yet: degraded
    assert_int_equal(r.rc, CURLE_OK);
    assert_int_equal(r.status, 503);
    assert_string_equal(r.body, "{\"status\":\"degraded\",\"db\":\"down\"}");
    assert_true(has_header(&r, "Content-Type: application/json; charset=utf-8"));
    assert_true(has_header(&r, "X-Content-Type-Options: nosniff"));
    assert_true(has_header(&r, "Cache-Control: no-store"));
    reply_clear(&r);

    assert_true(healthz_becomes(f, true, 200));
    get(f, h, "/healthz", &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "{\"status\":\"ok\",\"db\":\"ok\"}");
    reply_clear(&r);

    get(f, h, "/healthz?verbose=1", &r);   // the query string does not change the route
    assert_int_equal(r.status, 200);
    reply_clear(&r);

    assert_true(healthz_becomes(f, false, 503));
    get(f, h, "/healthz", &r);
    assert_string_equal(r.body, "{\"status\":\"degraded\",\"db\":\"down\"}");
    reply_clear(&r);
    curl_easy_cleanup(h);
}

static void test_metrics_has_families_and_counts_requests(void **state) {
    fixture_t *f = *state;
    http_start_on(f, "127.0.0.1", NULL);   // default metrics_from: 127.0.0.0/8,::1/128
    assert_int_equal(get_status(f, "/healthz"), 503);
    assert_int_equal(get_status(f, "/healthz"), 503);
    assert_int_equal(get_status(f, "/api/nope"), 404);

    // A SUB may join late: repeat until seen. One publisher's messages arrive in order, so once
    // the later one shows, the earlier one has been handled too.
    int64_t deadline = zclock_mono() + WAIT_MS;
    bool seen = false;
    while (!seen && zclock_mono() < deadline) {
        publish_actor(f, "payments", true);
        publish_db_state(f, false, 3);
        seen = metrics_show(f, "sweety_db_reconnects_total 3\n");
    }
    assert_true(seen);

    CURL *h = curl_easy_init();
    reply_t r;
    get(f, h, "/metrics", &r);
    assert_int_equal(r.status, 200);
    assert_true(has_header(&r, "Content-Type: text/plain; version=0.0.4"));
    const char *expected[] = {
        "# TYPE sweety_bus_messages_total counter\n",
        "sweety_bus_messages_total{topic=\"actor.started\"} ",
        "sweety_bus_messages_total{topic=\"booking.status\"} 0\n",
        "# TYPE sweety_actor_up gauge\n",
        "sweety_actor_up{actor=\"payments\"} 1\n",
        "# TYPE sweety_http_requests_total counter\n",
        "sweety_http_requests_total{path=\"/healthz\",status=\"503\"} 2\n",
        "sweety_http_requests_total{path=\"/api/*\",status=\"404\"} 1\n",
        "sweety_http_requests_total{path=\"/metrics\",status=\"200\"} ",
        "sweety_db_reconnects_total 3\n",
        "sweety_db_up 0\n",
        "sweety_bus_malformed_total 0\n",
        "# TYPE sweety_webhooks_total counter\n",
    };
    for (size_t i = 0; i < sizeof expected / sizeof expected[0]; i++) {
        if (!strstr(r.body, expected[i])) fail_msg("missing in /metrics: %s\n%s", expected[i], r.body);
    }
    assert_null(strstr(r.body, "sweety_webhooks_total{"));   // ready, but empty for now
    reply_clear(&r);

    deadline = zclock_mono() + WAIT_MS;
    seen = false;
    while (!seen && zclock_mono() < deadline) {
        publish_actor(f, "payments", false);
        seen = metrics_show(f, "sweety_actor_up{actor=\"payments\"} 0");
    }
    assert_true(seen);

    // Actors started before http are known from their answer to the supervisor's ping.
    deadline = zclock_mono() + WAIT_MS;
    seen = false;
    while (!seen && zclock_mono() < deadline) {
        bus_msg_t pong;
        bus_msg_init(&pong, BUS_ACTOR_PONG);
        snprintf(pong.u.actor_pong.actor, sizeof pong.u.actor_pong.actor, "dialer");
        assert_int_equal(bus_publish(f->ep, &pong), 0);
        seen = metrics_show(f, "sweety_actor_up{actor=\"dialer\"} 1");
    }
    assert_true(seen);
    assert_true(metrics_show(f, "sweety_actor_up{actor=\"http\"} 1"));
    curl_easy_cleanup(h);
}

// sweety_bus_messages_total counts what the http actor receives: the topics it subscribes to and
// what comes to its inbox. Events it has no use for (booking.created, queue.enqueued) never reach
// it, nor booking.status while no WebSocket watches a booking.
static void test_metrics_count_only_what_the_http_actor_receives(void **state) {
    fixture_t *f = *state;
    http_start_on(f, "127.0.0.1", NULL);
    bus_msg_t msg;
    bus_msg_init(&msg, BUS_REALTIME_STATUS);   // as the broadcaster sends it: to the inbox
    snprintf(msg.u.realtime_status.booking_id, sizeof msg.u.realtime_status.booking_id, "b-1");
    msg.u.realtime_status.seq = 1;
    snprintf(msg.u.realtime_status.status, sizeof msg.u.realtime_status.status, "queued");
    assert_int_equal(bus_send_to(f->ep, "http", &msg, 1000), 0);

    int64_t deadline = zclock_mono() + WAIT_MS;
    bool seen = false;
    for (int64_t n = 1; !seen && zclock_mono() < deadline; n++) {
        bus_msg_init(&msg, BUS_BOOKING_CREATED);
        assert_int_equal(bus_publish(f->ep, &msg), 0);
        bus_msg_init(&msg, BUS_QUEUE_ENQUEUED);
        assert_int_equal(bus_publish(f->ep, &msg), 0);
        bus_msg_init(&msg, BUS_BOOKING_STATUS);
        assert_int_equal(bus_publish(f->ep, &msg), 0);
        publish_db_state(f, true, n);   // published last: once it is counted, the others were handled
        char needle[64];
        snprintf(needle, sizeof needle, "sweety_db_reconnects_total %lld\n", (long long)n);
        seen = metrics_show(f, needle);
    }
    assert_true(seen);
    assert_true(metrics_show(f, "sweety_bus_messages_total{topic=\"realtime.status\"} 1\n"));   // the inbox
    CURL *h = curl_easy_init();
    reply_t r;
    get(f, h, "/metrics", &r);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "sweety_bus_messages_total{topic=\"db.state\"} "));
    assert_non_null(strstr(r.body, "sweety_bus_messages_total{topic=\"booking.status\"} 0\n"));
    assert_null(strstr(r.body, "topic=\"booking.created\""));
    assert_null(strstr(r.body, "topic=\"queue.enqueued\""));
    reply_clear(&r);
    curl_easy_cleanup(h);
}

static void test_metrics_forbidden_outside_metrics_from(void **state) {
    fixture_t *f = *state;
    http_start_on(f, "127.0.0.1", "10.0.0.0/8, 192.168.0.0/16");
    CURL *h = curl_easy_init();
    reply_t r;
    char code[64];
    get(f, h, "/metrics", &r);
    assert_int_equal(r.status, 403);
    error_code(&r, code, sizeof code);
    assert_string_equal(code, "forbidden");
    assert_true(has_header(&r, "Content-Type: application/json; charset=utf-8"));
    reply_clear(&r);
    assert_int_equal(get_status(f, "/healthz"), 503);   // other routes unaffected
    curl_easy_cleanup(h);
}

static void test_metrics_over_ipv6_and_mapped_ipv4(void **state) {
    fixture_t *f = *state;
    if (free_port("::1") < 0) skip();   // no IPv6 here

    http_start_on(f, "::1", NULL);   // ::1/128 is in the default list
    assert_int_equal(get_status(f, "/metrics"), 200);
    zactor_destroy(&f->http);

    http_start_on(f, "::1", "127.0.0.0/8");
    assert_int_equal(get_status(f, "/metrics"), 403);
    zactor_destroy(&f->http);

    // A dual-stack listener sees 127.0.0.1 as ::ffff:127.0.0.1, which counts as IPv4.
    http_start_on(f, "::", "127.0.0.0/8");
    assert_int_equal(get_status(f, "/metrics"), 200);
}

static void test_unknown_api_path_is_json_404(void **state) {
    fixture_t *f = *state;
    http_start_on(f, "127.0.0.1", NULL);
    CURL *h = curl_easy_init();
    reply_t r;
    char code[64];
    const char *paths[] = {"/api/nope", "/api", "/api/plans/../x", "/api/x?y=1"};
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        get(f, h, paths[i], &r);
        assert_int_equal(r.status, 404);
        error_code(&r, code, sizeof code);
        assert_string_equal(code, "not_found");
        assert_true(has_header(&r, "Content-Type: application/json; charset=utf-8"));
        assert_true(has_header(&r, "Cache-Control: no-store"));
        reply_clear(&r);
    }
    get(f, h, "/api/nope", &r);
    assert_string_equal(r.body, "{\"error\":{\"code\":\"not_found\",\"message\":\"no such endpoint\"}}");
    reply_clear(&r);
    curl_easy_cleanup(h);
}

static void test_unknown_page_is_html_404(void **state) {
    fixture_t *f = *state;
    http_start_on(f, "127.0.0.1", NULL);   // no web_root: the built-in page
    CURL *h = curl_easy_init();
    reply_t r;
    get(f, h, "/nothing", &r);
    assert_int_equal(r.status, 404);
    assert_true(has_header(&r, "Content-Type: text/html; charset=utf-8"));
    assert_non_null(strstr(r.body, "<html"));
    reply_clear(&r);
    zactor_destroy(&f->http);

    char path[256];
    snprintf(path, sizeof path, "%s/404.html", f->tmpdir);
    FILE *page = fopen(path, "w");
    assert_non_null(page);
    fputs("<html><body>our own 404</body></html>\n", page);
    fclose(page);
    f->cfg.http_web_root = f->tmpdir;
    http_start_on(f, "127.0.0.1", NULL);
    get(f, h, "/no/such/page", &r);
    assert_int_equal(r.status, 404);
    assert_string_equal(r.body, "<html><body>our own 404</body></html>\n");
    reply_clear(&r);
    f->cfg.http_web_root = NULL;
    curl_easy_cleanup(h);
}

static void write_site_file(const char *root, const char *rel, const char *text) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", root, rel);
    for (char *p = path + strlen(root) + 1; (p = strchr(p, '/')) != NULL; p++) {   // parent folders
        *p = '\0';
        mkdir(path, 0700);
        *p = '/';
    }
    FILE *file = fopen(path, "w");
    assert_non_null(file);
    fputs(text, file);
    fclose(file);
}

// The ETag header's value, quotes included, into out ("" when absent).
static void etag_of_reply(const reply_t *r, char *out, size_t size) {
    out[0] = '\0';
    const char *e = strcasestr(r->headers, "\netag: ");
    if (!e) return;
    e += strlen("\netag: ");
    size_t n = strcspn(e, "\r\n");
    snprintf(out, size, "%.*s", (int)n, e);
}

static void test_pages_and_assets_from_web_root(void **state) {
    fixture_t *f = *state;
    char root[300];
    snprintf(root, sizeof root, "%s/site", f->tmpdir);
    mkdir(root, 0700);
    write_site_file(root, "index.html", "<html>home</html>");
    write_site_file(root, "waiting.html", "<html>waiting</html>");
    write_site_file(root, "404.html", "<html>lost</html>");
    write_site_file(root, "assets/css/site.css", "body{}");
    write_site_file(root, "assets/fonts/a.woff2", "wOF2");
    write_site_file(root, ".secret.js", "x");
    write_site_file(root, "node_modules/x/index.js", "x");
    write_site_file(root, "package.json", "{}");
    write_site_file(root, "notes.md", "# not published");
    f->cfg.http_web_root = root;
    http_start_on(f, "127.0.0.1", NULL);
    CURL *h = curl_easy_init();
    reply_t r;

    get(f, h, "/", &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "<html>home</html>");
    assert_true(has_header(&r, "Content-Type: text/html; charset=utf-8"));
    assert_true(has_header(&r, "Cache-Control: no-cache"));
    assert_true(has_header(&r, "Content-Security-Policy: default-src 'self'; script-src 'self'"));
    assert_true(has_header(&r, "frame-ancestors 'none'"));
    assert_true(has_header(&r, "X-Frame-Options: DENY"));
    assert_true(has_header(&r, "Referrer-Policy: strict-origin-when-cross-origin"));
    assert_true(has_header(&r, "X-Content-Type-Options: nosniff"));
    char etag[64];
    etag_of_reply(&r, etag, sizeof etag);
    assert_int_equal(strlen(etag), 34);
    reply_clear(&r);

    // the same ETag again: 304 without a body; another: the page
    char inm[96];
    snprintf(inm, sizeof inm, "If-None-Match: W/\"nope\", %s", etag);
    struct curl_slist *hdr = curl_slist_append(NULL, inm);
    char url[256];
    snprintf(url, sizeof url, "%s/", f->base);
    request(h, NULL, url, NULL, 0, hdr, &r);
    curl_slist_free_all(hdr);
    assert_int_equal(r.status, 304);
    assert_int_equal(r.len, 0);
    assert_true(has_header(&r, etag));
    reply_clear(&r);
    hdr = curl_slist_append(NULL, "If-None-Match: \"0123\"");
    request(h, NULL, url, NULL, 0, hdr, &r);
    curl_slist_free_all(hdr);
    assert_int_equal(r.status, 200);
    reply_clear(&r);

    get(f, h, "/waiting", &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "<html>waiting</html>");
    reply_clear(&r);
    get(f, h, "/assets/css/site.css", &r);
    assert_int_equal(r.status, 200);
    assert_true(has_header(&r, "Content-Type: text/css; charset=utf-8"));
    reply_clear(&r);
    get(f, h, "/assets/fonts/a.woff2", &r);
    assert_int_equal(r.status, 200);
    assert_true(has_header(&r, "Content-Type: font/woff2"));
    assert_true(has_header(&r, "Cache-Control: public, max-age=604800"));
    reply_clear(&r);

    // not published: page files by their own names, dot files, npm folders and manifests, unknown types
    const char *hidden[] = {"/index.html", "/waiting.html", "/404.html", "/404", "/.secret.js",
                            "/node_modules/x/index.js", "/package.json", "/notes.md", "/assets/css/", "/waiting/"};
    for (size_t i = 0; i < sizeof hidden / sizeof hidden[0]; i++) {
        get(f, h, hidden[i], &r);
        assert_int_equal(r.status, 404);
        assert_string_equal(r.body, "<html>lost</html>");
        assert_true(has_header(&r, "Content-Security-Policy:"));
        reply_clear(&r);
    }

    // HEAD: the headers of GET, no body; POST: 405 with Allow
    request(h, "HEAD", url, NULL, 0, NULL, &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.len, 0);
    assert_true(has_header(&r, "Content-Length: 17"));
    reply_clear(&r);
    request(h, "POST", url, "x", 1, NULL, &r);
    assert_int_equal(r.status, 405);
    assert_true(has_header(&r, "Allow: GET, HEAD"));
    reply_clear(&r);

    curl_easy_cleanup(h);
    zactor_destroy(&f->http);
    f->cfg.http_web_root = NULL;
    harness_rmtree(root);
}

static void test_wrong_method_on_known_route_is_405(void **state) {
    fixture_t *f = *state;
    http_start_on(f, "127.0.0.1", NULL);
    CURL *h = curl_easy_init();
    reply_t r;
    char url[128], code[64];
    snprintf(url, sizeof url, "%s/healthz", f->base);
    request(h, "POST", url, "{}", 2, NULL, &r);
    assert_int_equal(r.status, 405);
    error_code(&r, code, sizeof code);
    assert_string_equal(code, "method_not_allowed");
    assert_true(has_header(&r, "Allow: GET"));
    reply_clear(&r);
    request(h, "DELETE", url, NULL, 0, NULL, &r);
    assert_int_equal(r.status, 405);
    reply_clear(&r);
    curl_easy_cleanup(h);
}

static void test_request_body_over_16k_is_413(void **state) {
    fixture_t *f = *state;
    http_start_on(f, "127.0.0.1", NULL);
    size_t len = 20 * 1024;
    char *body = malloc(len);
    assert_non_null(body);
    memset(body, 'a', len);
    CURL *h = curl_easy_init();
    reply_t r;
    char url[128], code[64];
    snprintf(url, sizeof url, "%s/api/bookings", f->base);
    struct curl_slist *headers = curl_slist_append(NULL, "Expect:");   // send the body at once
    headers = curl_slist_append(headers, "Content-Type: application/json");
    request(h, "POST", url, body, len, headers, &r);
    assert_int_equal(r.rc, CURLE_OK);
    assert_int_equal(r.status, 413);
    error_code(&r, code, sizeof code);
    assert_string_equal(code, "too_large");
    reply_clear(&r);

    // Exactly 16 KiB is read in full, then judged by the route (not JSON: 400 invalid_json).
    request(h, "POST", url, body, 16 * 1024, headers, &r);
    assert_int_equal(r.status, 400);
    error_code(&r, code, sizeof code);
    assert_string_equal(code, "invalid_json");
    reply_clear(&r);
    curl_slist_free_all(headers);
    curl_easy_cleanup(h);
    free(body);
}

static void test_keep_alive_serves_many_requests_on_one_connection(void **state) {
    fixture_t *f = *state;
    http_start_on(f, "127.0.0.1", NULL);
    CURL *h = curl_easy_init();
    reply_t r;
    char url[128];
    long total_connects = 0;
    const char *paths[] = {"/healthz", "/metrics", "/api/nope", "/nothing", "/healthz", "/metrics"};
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        get(f, h, paths[i], &r);
        assert_int_equal(r.rc, CURLE_OK);
        assert_true(r.status == 200 || r.status == 404 || r.status == 503);
        total_connects += r.connects;
        reply_clear(&r);
    }
    // A POST with a small body (read in full, then 405) keeps the connection too, and so does HEAD.
    snprintf(url, sizeof url, "%s/healthz", f->base);
    request(h, "POST", url, "{\"a\":1}", 7, NULL, &r);
    assert_int_equal(r.status, 405);
    total_connects += r.connects;
    reply_clear(&r);
    request(h, "HEAD", url, NULL, 0, NULL, &r);
    assert_int_equal(r.rc, CURLE_OK);
    assert_int_equal(r.status, 503);
    assert_int_equal(r.len, 0);
    total_connects += r.connects;
    reply_clear(&r);
    get(f, h, "/healthz", &r);
    assert_int_equal(r.status, 503);
    total_connects += r.connects;
    reply_clear(&r);
    assert_int_equal(total_connects, 1);

    char needle[96];
    snprintf(needle, sizeof needle, "sweety_http_requests_total{path=\"other\",status=\"404\"} 1\n");
    assert_true(metrics_show(f, needle));
    curl_easy_cleanup(h);
}

// Sessions themselves are tested end to end in tests/integration/test_realtime.c.
static void test_websocket_upgrade_only_on_ws_and_never_from_a_foreign_origin(void **state) {
    fixture_t *f = *state;
    http_start_on(f, "127.0.0.1", NULL);
    CURL *h = curl_easy_init();
    reply_t r;
    char url[128], code[64];
    snprintf(url, sizeof url, "%s/ws", f->base);
    get(f, h, "/ws", &r);   // a plain GET
    assert_int_equal(r.status, 426);
    error_code(&r, code, sizeof code);
    assert_string_equal(code, "upgrade_required");
    reply_clear(&r);
    struct curl_slist *headers = curl_slist_append(NULL, "Connection: Upgrade");
    headers = curl_slist_append(headers, "Upgrade: websocket");
    headers = curl_slist_append(headers, "Sec-WebSocket-Version: 13");
    headers = curl_slist_append(headers, "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==");
    struct curl_slist *foreign = curl_slist_append(NULL, "Origin: http://evil.example");
    for (struct curl_slist *l = headers; l; l = l->next) foreign = curl_slist_append(foreign, l->data);
    request(h, NULL, url, NULL, 0, foreign, &r);
    assert_int_equal(r.status, 403);
    reply_clear(&r);
    char other[128];
    snprintf(other, sizeof other, "%s/api/plans", f->base);
    request(h, NULL, other, NULL, 0, headers, &r);
    assert_true(r.rc != CURLE_OK || r.status != 101);
    reply_clear(&r);
    curl_slist_free_all(foreign);
    curl_slist_free_all(headers);
    curl_easy_cleanup(h);
    assert_int_equal(get_status(f, "/healthz"), 503);   // still serving
}

static void test_answers_ping_with_pong(void **state) {
    fixture_t *f = *state;
    http_start_on(f, "127.0.0.1", NULL);
    bus_endpoint_t *watcher = bus_endpoint_new("watcher", (const char *[]){"actor.pong", NULL});
    assert_non_null(watcher);
    zpoller_t *poller = zpoller_new(bus_endpoint_events(watcher), NULL);
    int64_t deadline = zclock_mono() + WAIT_MS;
    bool ponged = false;
    while (!ponged && zclock_mono() < deadline) {
        bus_msg_t ping;
        bus_msg_init(&ping, BUS_ACTOR_PING);
        snprintf(ping.u.actor_ping.target, sizeof ping.u.actor_ping.target, "http");
        ping.u.actor_ping.nonce = 42;
        if (bus_publish(f->ep, &ping) != 0) break;
        if (zpoller_wait(poller, 100)) {
            bus_msg_t pong;
            if (bus_endpoint_recv(watcher, bus_endpoint_events(watcher), &pong) == 0 && pong.type == BUS_ACTOR_PONG)
                ponged = strcmp(pong.u.actor_pong.actor, "http") == 0 && pong.u.actor_pong.nonce == 42;
        }
    }
    zpoller_destroy(&poller);
    bus_endpoint_destroy(&watcher);
    assert_true(ponged);
}

static void test_start_fails_when_port_is_taken(void **state) {
    fixture_t *f = *state;
    http_config(f, "127.0.0.1", NULL);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in in = {.sin_family = AF_INET, .sin_port = htons((uint16_t)f->port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(fd, (struct sockaddr *)&in, sizeof in), 0);
    assert_int_equal(listen(fd, 4), 0);
    assert_false(http_start(f));
    zactor_destroy(&f->http);
    close(fd);

    f->cfg.http_metrics_from = "10.0.0.0/33";   // a bad list fails the start too
    assert_false(http_start(f));
    zactor_destroy(&f->http);
    f->cfg.http_metrics_from = NULL;
}

// Near the open-file limit new connections are closed at once (the last SWEETY_FD_RESERVE
// descriptors stay for the daemon's own use), and the server goes on answering once some are freed.
// The test's own sockets share the process's descriptor table with the server, as they count here.
static void test_connections_near_the_fd_limit_are_refused(void **state) {
    fixture_t *f = *state;
    struct rlimit saved;
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &saved), 0);
    struct rlimit low = {.rlim_cur = 3 * SWEETY_FD_RESERVE, .rlim_max = saved.rlim_max};
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &low), 0);
    http_start_on(f, "127.0.0.1", NULL);   // reads the limit when it starts

    enum { CLIENTS = 2 * SWEETY_FD_RESERVE };
    int fds[CLIENTS];
    int opened = 0;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)f->port)};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    for (; opened < CLIENTS; opened++) {
        fds[opened] = socket(AF_INET, SOCK_STREAM, 0);
        if (fds[opened] < 0) break;
        if (connect(fds[opened], (struct sockaddr *)&sa, sizeof sa) != 0) {
            close(fds[opened]);
            break;
        }
    }
    assert_true(opened > SWEETY_FD_RESERVE / 2);
    // the server closes what it refused: a read on those sees the end of the stream
    int closed = 0;
    for (int tries = 0; tries < 50 && closed == 0; tries++) {
        usleep(100 * 1000);
        for (int i = 0; i < opened; i++) {
            char c;
            ssize_t r = recv(fds[i], &c, 1, MSG_DONTWAIT);
            if (r == 0) closed++;
        }
    }
    assert_true(closed > 0);
    for (int i = 0; i < opened; i++) close(fds[i]);
    assert_int_equal(get_status(f, "/healthz"), 503);   // answers again (no db.state yet: 503)
    char needle[64];
    snprintf(needle, sizeof needle, "sweety_http_refused_connections_total{reason=\"fd_limit\"} ");
    assert_true(metrics_show(f, needle));
    zactor_destroy(&f->http);
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &saved), 0);
}

static void test_stop_is_clean_and_releases_descriptors(void **state) {
    fixture_t *f = *state;
    int before = count_open_fds();
    http_start_on(f, "127.0.0.1", NULL);
    CURL *h = curl_easy_init();   // leave a keep-alive connection open across the stop
    reply_t r;
    get(f, h, "/healthz", &r);
    assert_int_equal(r.status, 503);
    reply_clear(&r);
    zactor_destroy(&f->http);
    curl_easy_cleanup(h);
    // ZeroMQ frees a closed socket (and its eventfd) in its reaper thread once the bound peer has
    // acknowledged the pipe's end, which the broker's PUB does when it next sends: keep traffic
    // flowing while waiting.
    int64_t deadline = zclock_mono() + WAIT_MS;
    while (count_open_fds() > before && zclock_mono() < deadline) {
        publish_db_state(f, false, 0);
        zclock_sleep(10);
    }
    // <=: a socket of an earlier test may be reaped meanwhile too; a leak would leave more, not fewer
    assert_true(count_open_fds() <= before);
    assert_int_not_equal(get_status(f, "/healthz"), 503);   // nobody listens any more

    http_start_on(f, "127.0.0.1", NULL);   // and the actor can start again (inbox name freed)
    assert_int_equal(get_status(f, "/healthz"), 503);
}

static void test_cidr_list_parses_and_matches(void **state) {
    char err[128];
    cidr_list_t *l = cidr_list_new("127.0.0.0/8, ::1/128,10.1.2.3, 2001:db8::/32,::ffff:192.168.0.0/112", err, sizeof err);
    assert_non_null(l);
    assert_int_equal(cidr_list_size(l), 5);
    assert_true(cidr_list_match_text(l, "127.0.0.1"));
    assert_true(cidr_list_match_text(l, "127.255.255.254"));
    assert_false(cidr_list_match_text(l, "128.0.0.1"));
    assert_true(cidr_list_match_text(l, "::1"));
    assert_false(cidr_list_match_text(l, "::2"));
    assert_true(cidr_list_match_text(l, "10.1.2.3"));
    assert_false(cidr_list_match_text(l, "10.1.2.4"));
    assert_true(cidr_list_match_text(l, "2001:db8:ffff::1"));
    assert_false(cidr_list_match_text(l, "2001:db9::1"));
    assert_true(cidr_list_match_text(l, "::ffff:127.0.0.1"));    // mapped counts as IPv4
    assert_true(cidr_list_match_text(l, "192.168.7.7"));         // mapped block stored as IPv4
    assert_false(cidr_list_match_text(l, "192.169.0.1"));
    assert_false(cidr_list_match_text(l, "not an address"));
    cidr_list_destroy(&l);
    assert_null(l);

    l = cidr_list_new("10.0.0.1/8", err, sizeof err);   // host bits ignored
    assert_non_null(l);
    assert_true(cidr_list_match_text(l, "10.200.0.1"));
    cidr_list_destroy(&l);

    l = cidr_list_new("0.0.0.0/0", err, sizeof err);
    assert_true(cidr_list_match_text(l, "8.8.8.8"));
    assert_false(cidr_list_match_text(l, "::2"));
    cidr_list_destroy(&l);

    l = cidr_list_new("", err, sizeof err);   // empty: nobody
    assert_non_null(l);
    assert_false(cidr_list_match_text(l, "127.0.0.1"));
    cidr_list_destroy(&l);

    const char *bad[] = {"10.0.0.0/33", "::1/129", "10.0.0.0/", "10.0.0/8", "10.0.0.0/8,", ",10.0.0.0/8",
                         "localhost", "10.0.0.0/-1", "10.0.0.0/8/8", "1.2.3.4 5"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = '\0';
        l = cidr_list_new(bad[i], err, sizeof err);
        if (l) fail_msg("accepted: %s", bad[i]);
        assert_true(err[0] != '\0');
    }
}

int main(void) {
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cidr_list_parses_and_matches),
        cmocka_unit_test_setup_teardown(test_healthz_follows_db_state, setup, teardown),
        cmocka_unit_test_setup_teardown(test_metrics_count_only_what_the_http_actor_receives, setup, teardown),
        cmocka_unit_test_setup_teardown(test_metrics_has_families_and_counts_requests, setup, teardown),
        cmocka_unit_test_setup_teardown(test_metrics_forbidden_outside_metrics_from, setup, teardown),
        cmocka_unit_test_setup_teardown(test_metrics_over_ipv6_and_mapped_ipv4, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unknown_api_path_is_json_404, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unknown_page_is_html_404, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pages_and_assets_from_web_root, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wrong_method_on_known_route_is_405, setup, teardown),
        cmocka_unit_test_setup_teardown(test_request_body_over_16k_is_413, setup, teardown),
        cmocka_unit_test_setup_teardown(test_keep_alive_serves_many_requests_on_one_connection, setup, teardown),
        cmocka_unit_test_setup_teardown(test_websocket_upgrade_only_on_ws_and_never_from_a_foreign_origin, setup, teardown),
        cmocka_unit_test_setup_teardown(test_answers_ping_with_pong, setup, teardown),
        cmocka_unit_test_setup_teardown(test_start_fails_when_port_is_taken, setup, teardown),
        cmocka_unit_test_setup_teardown(test_connections_near_the_fd_limit_are_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stop_is_clean_and_releases_descriptors, setup, teardown),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return failed;
}
