// tests/integration/sandbox.h — starts sweety-sandbox for a daemon test and drives its control API.
// Header-only; pairs with daemon.h. The sandbox's secrets below are what the daemon's configuration
// (sandbox_daemon_conf) names, so the two agree.
#ifndef SWEETY_TEST_SANDBOX_H
#define SWEETY_TEST_SANDBOX_H

#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "tests/harness/harness.h"

#define SANDBOX_STRIPE_KEY "sk_test_sweety_0123456789"
#define SANDBOX_STRIPE_WHSEC "whsec_sweety_test_secret"
#define SANDBOX_CRYPTOMUS_MERCHANT "8b03432e-385b-4670-8d06-064591096795"
#define SANDBOX_CRYPTOMUS_KEY "cryptomusTestPaymentKey42"
#define SANDBOX_VAPI_SECRET "vapi-server-secret-for-tests"

typedef struct {
    int port;
    char url[64];
    char log[600];
    harness_proc_t *proc;
} test_sandbox_t;

// Picks the sandbox's port; call before test_daemon_prepare so the daemon's configuration can name it.
static inline void test_sandbox_reserve(test_sandbox_t *s, const char *dir) {
    memset(s, 0, sizeof *s);
    s->port = harness_free_port();
    snprintf(s->url, sizeof s->url, "http://127.0.0.1:%d", s->port);
    snprintf(s->log, sizeof s->log, "%s/sandbox.log", dir);
}

// The [stripe] and [cryptomus] sections pointing a daemon at this sandbox, plus `more`.
static inline void test_sandbox_daemon_conf(const test_sandbox_t *s, const char *more, char *out, size_t size) {
    snprintf(out, size,
             "[stripe]\napi_base = %s\nsecret_key = " SANDBOX_STRIPE_KEY "\nwebhook_secret = " SANDBOX_STRIPE_WHSEC "\n"
             "[cryptomus]\napi_base = %s\nmerchant = " SANDBOX_CRYPTOMUS_MERCHANT "\npayment_key = " SANDBOX_CRYPTOMUS_KEY "\n"
             "[vapi]\napi_base = %s\nwebhook_secret = " SANDBOX_VAPI_SECRET "\n%s",
             s->url, s->url, s->url, more ? more : "");
}

static inline int test_sandbox_start(test_sandbox_t *s, const char *daemon_url) {
    char bin[512], listen[64], hook[128];
    if (harness_bin_path("sweety-sandbox", bin, sizeof bin) != 0) return -1;
    snprintf(listen, sizeof listen, "127.0.0.1:%d", s->port);
    snprintf(hook, sizeof hook, "%s/webhooks/stripe", daemon_url);
    const char *argv[] = {bin, "--listen", listen, "--public-url", s->url, "--stripe-secret-key", SANDBOX_STRIPE_KEY,
                          "--stripe-webhook-secret", SANDBOX_STRIPE_WHSEC, "--stripe-webhook-url", hook,
                          "--cryptomus-merchant", SANDBOX_CRYPTOMUS_MERCHANT, "--cryptomus-payment-key",
                          SANDBOX_CRYPTOMUS_KEY, "--webhook-retry-ms", "200,400,800,1600", "--vapi-webhook-secret",
                          SANDBOX_VAPI_SECRET, NULL};
    s->proc = harness_proc_spawn(argv, NULL, s->log);
    if (!s->proc) return -1;
    char health[128];
    snprintf(health, sizeof health, "%s/_sandbox/health", s->url);
    return harness_http_wait_status(health, 200, 20000);
}

static inline void test_sandbox_stop(test_sandbox_t *s) {
    if (!s->proc) return;
    harness_proc_kill(s->proc, SIGTERM);
    harness_proc_wait(s->proc, 5000, NULL);
    harness_proc_destroy(&s->proc);
}

// Calls the sandbox (control API or provider API) and returns the HTTP status; *out (may be NULL)
// receives the parsed JSON answer (json_decref it).
static inline long test_sandbox_call(const test_sandbox_t *s, const char *method, const char *path, const char *json,
                                     json_t **out) {
    char url[512];
    snprintf(url, sizeof url, "%s%s", s->url, path);
    const char *headers[] = {"Content-Type: application/json", NULL};
    harness_http_t r;
    harness_http(method, url, json, headers, &r);
    if (out) *out = json_loads(r.body ? r.body : "", 0, NULL);
    long status = r.status;
    harness_http_clear(&r);
    return status;
}

// The customer completes Stripe Checkout session `session` ("{\"payment_status\":\"paid\"}" ...).
static inline long test_sandbox_complete(const test_sandbox_t *s, const char *session, const char *json) {
    char path[256];
    snprintf(path, sizeof path, "/_sandbox/stripe/sessions/%.200s/complete", session);
    return test_sandbox_call(s, "POST", path, json, NULL);
}

// Cryptomus invoice `uuid` takes `status` ("paid", "cancel" ...), as its hosted page would set it.
static inline long test_sandbox_invoice_status(const test_sandbox_t *s, const char *uuid, const char *status) {
    char path[256], body[64];
    snprintf(path, sizeof path, "/_sandbox/cryptomus/invoices/%.180s/status", uuid);
    snprintf(body, sizeof body, "{\"status\":\"%.40s\"}", status);
    return test_sandbox_call(s, "POST", path, body, NULL);
}

#endif
