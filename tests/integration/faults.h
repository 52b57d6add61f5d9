// tests/integration/faults.h — what the fault scenarios (tests/integration/test_faults_*.c, issue 8)
// share: a stack of real processes (PostgreSQL, sweety-sandbox, one or two sweetyd), a load
// generator thread (free trials, Stripe and Cryptomus payments completed in the sandbox so real
// webhooks flow, scripted VAPI calls, cancels), and THE invariant check every scenario ends with.
// Header-only, like daemon.h / sandbox.h / client.h, whose helpers it builds on. See
// tests/faults/README.md for the scenarios and their knobs.
//
// The invariant check (faults_check) reads the sandbox first and the database second, so that
// anything the sandbox saw answered 2xx was committed before the database is read. It sorts what
// it finds into
//   hard violations: never allowed, at any moment — a booking history that moves backwards or on
//     from a final status; capacity counters that differ from the tries in progress and the
//     active_calls rows; one attempt of a booking dialled twice at VAPI, more calls than attempts,
//     two calls of a booking live at once; a Stripe payment refunded twice or more than it was;
//     a webhook answered 2xx whose event is not in webhook_events (Stripe, Cryptomus) or whose
//     call end left the call active (VAPI); a booking answered 201 that is not in the database;
//     a completed (served) booking whose money went back;
//   soft violations: what must hold once the system is quiet — every booking final or
//     legitimately waiting (a `pending` whose checkout request died, younger than the daemon's
//     10-minute abandon; a `pending_payment` whose checkout is still open and unpaid at the
//     provider; a `queued` booking scheduled more than a minute ahead); money kept on a booking
//     that will not get its call (payment still paid, a refund the provider never received, a
//     failed refund); money paid at the provider that our database does not know; a VAPI call
//     still live, or one our database never heard of; a 502 answer whose booking is not
//     payment_failed.
// faults_converge() repeats the check until there is no violation (a hard one fails at once)
// and prints what it found and the scenario's numbers.
//
// Runs on the test's main thread, except faults_load_* whose worker is its own thread: that
// thread only speaks HTTP (its own curl handles) and touches the load's list under its mutex.
#ifndef SWEETY_TEST_FAULTS_H
#define SWEETY_TEST_FAULTS_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <curl/curl.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tests/integration/client.h"
#include "tests/integration/daemon.h"
#include "tests/integration/sandbox.h"

// ---- parameters -------------------------------------------------------------------------------

// The scenarios' knobs are SWEETY_FAULT_* variables. sweetyd warns about any SWEETY_* variable
// that is not one of its keys, and children inherit the environment: faults_env_capture() (first
// thing in main) moves them out of the environment into this table.
#define FAULTS_MAX_ENV 32
static char faults_env[FAULTS_MAX_ENV][256];

static inline void faults_env_capture(void) {
    extern char **environ;
    int n = 0;
    for (bool again = true; again;) {
        again = false;
        for (char **e = environ; *e; e++) {
            if (strncmp(*e, "SWEETY_FAULT_", 13) != 0 || !strchr(*e, '=')) continue;
            if (n < FAULTS_MAX_ENV) snprintf(faults_env[n++], sizeof faults_env[0], "%s", *e);
            char name[128];
            snprintf(name, sizeof name, "%.*s", (int)(strchr(*e, '=') - *e), *e);
            unsetenv(name);
            again = true;   // environ changed under us: start over
            break;
        }
    }
}

static inline const char *faults_getenv(const char *name) {
    size_t len = strlen(name);
    for (int i = 0; i < FAULTS_MAX_ENV && faults_env[i][0]; i++)
        if (strncmp(faults_env[i], name, len) == 0 && faults_env[i][len] == '=') return faults_env[i] + len + 1;
    return getenv(name);
}

// An integer from the environment within [min, max], else `def`.
static inline long faults_env_long(const char *name, long def, long min, long max) {
    const char *v = faults_getenv(name);
    if (!v || !*v) return def;
    char *end = NULL;
    long n = strtol(v, &end, 10);
    if (!end || *end || n < min || n > max) {
        fprintf(stderr, "faults: ignoring %s=%s (allowed %ld..%ld), using %ld\n", name, v, min, max, def);
        return def;
    }
    return n;
}

// SWEETY_FAULT_SEED, else one from the clock and pid; printed so a run can be repeated.
static inline unsigned faults_seed(const char *scenario) {
    unsigned seed = (unsigned)faults_env_long("SWEETY_FAULT_SEED", 0, 0, 0x7fffffffL);
    if (!seed) seed = (unsigned)(time(NULL) ^ ((unsigned)getpid() << 16)) & 0x7fffffffu;
    if (!seed) seed = 1;
    printf("[faults] %s: seed %u (repeat with SWEETY_FAULT_SEED=%u)\n", scenario, seed, seed);
    fflush(stdout);
    return seed;
}

// xorshift32: the scenarios' only randomness, so a seed replays the same choices.
static inline unsigned faults_rand(unsigned *state) {
    unsigned x = *state ? *state : 0x9e3779b9u;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    *state = x;
    return x;
}

static inline int faults_rand_between(unsigned *state, int lo, int hi) {
    return hi <= lo ? lo : lo + (int)(faults_rand(state) % (unsigned)(hi - lo + 1));
}

// ---- a growable text buffer --------------------------------------------------------------------

typedef struct {
    char *p;
    size_t len, cap;
} faults_buf_t;

static inline void faults_buf_printf(faults_buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static inline void faults_buf_printf(faults_buf_t *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char tmp[1024];
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    size_t add = (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1;
    if (b->len + add + 1 > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 4096;
        while (cap < b->len + add + 1) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) return;
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, tmp, add);
    b->len += add;
    b->p[b->len] = '\0';
}

static inline void faults_buf_free(faults_buf_t *b) {
    free(b->p);
    memset(b, 0, sizeof *b);
}

// ---- a watchdog: a scenario that overruns still leaves no process behind ------------------------
// ctest kills a test at its TIMEOUT (300 s) without giving it a chance to clean up, and the
// harness starts every child in its own process group, so a killed test would leave sweetyd, the
// sandbox and a private PostgreSQL running. SIGALRM (armed below the ctest limit) kills them.

#define FAULTS_MAX_PIDS 8
static volatile sig_atomic_t faults_pids[FAULTS_MAX_PIDS];   // 0: free slot
static volatile sig_atomic_t faults_postmaster;               // a private cluster's postmaster

static void faults_watchdog_fire(int sig) {
    (void)sig;
    static const char msg[] = "\n[faults] watchdog: the scenario overran its time; killing its processes\n";
    ssize_t w = write(STDERR_FILENO, msg, sizeof msg - 1);
    (void)w;
    for (int i = 0; i < FAULTS_MAX_PIDS; i++)
        if (faults_pids[i] > 0) kill((pid_t)faults_pids[i], SIGKILL);
    if (faults_postmaster > 0) kill((pid_t)faults_postmaster, SIGQUIT);   // immediate shutdown
    _exit(1);
}

// `seconds`: the scenario's own estimate (285 under ctest's 300 s, more for the long runs);
// SWEETY_FAULT_WATCHDOG_S overrides it.
static inline void faults_watchdog_arm(long seconds) {
    seconds = faults_env_long("SWEETY_FAULT_WATCHDOG_S", seconds, 10, 7 * 86400);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = faults_watchdog_fire;
    sigaction(SIGALRM, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    alarm((unsigned)seconds);
}

static inline void faults_watch(int slot, harness_proc_t *p) {
    if (slot >= 0 && slot < FAULTS_MAX_PIDS) faults_pids[slot] = p ? (sig_atomic_t)harness_proc_pid(p) : 0;
}

// ---- the stack ---------------------------------------------------------------------------------

#define FAULTS_MAX_DAEMONS 2
#define FAULTS_PLAN_SECONDS 10

typedef struct {
    int daemons;              // 1 or 2 sweetyd on one database
    bool private_pg;          // a cluster of its own (the scenario stops it), else the shared one
    int vapi_limit;           // the VAPI key's and the account's concurrency
    int agent_limit;          // each plan's agent
    const char *outcome;      // the sandbox's default VAPI outcome
    const char *extra_conf;   // appended to sweetyd's configuration (may be NULL)
} faults_opts_t;

typedef struct {
    faults_opts_t o;
    harness_pg_cluster_t *pg;
    test_sandbox_t sb;
    test_daemon_t d[FAULTS_MAX_DAEMONS];
    char vapi_key[64];
    char account[40];
} faults_stack_t;

// Quick retries and sweeps, so crashes and lost messages are made good within seconds.
#define FAULTS_CONF_BASE                                                                   \
    "[http]\nbooking_rate_per_min = 1000000\nwebhook_rate_per_min = 1000000\n"            \
    "[scheduler]\nmax_retries = 2\nretry_base_s = 1\nretry_max_s = 2\ngrace_s = 1\n"       \
    "stale_call_s = 3\nlease_s = 3\naccount_hold_s = 1\n"
#define FAULTS_CONF_RECONCILE "[payments]\nreconcile_after_s = 2\nreconcile_every_s = 1\n"

static inline long faults_sandbox(faults_stack_t *st, const char *method, const char *path, const char *json,
                                  json_t **out) {
    return test_sandbox_call(&st->sb, method, path, json, out);
}

static inline int faults_ctl(faults_stack_t *st, const char *const *args, char *line, size_t size) {
    char *out = NULL, *err = NULL;
    int rc = test_daemon_ctl(&st->d[0], args, &out, &err);
    if (rc != 0) fprintf(stderr, "sweetyctl %s %s: %s\n", args[0], args[1] ? args[1] : "", err ? err : "");
    if (line && out) {
        snprintf(line, size, "%s", out);
        line[strcspn(line, "\n")] = '\0';
    }
    free(out);
    free(err);
    return rc;
}

// Remembers a private cluster's postmaster for the watchdog (its pid file's first line).
static inline void faults_note_postmaster(faults_stack_t *st) {
    if (!st->pg) return;
    const char *host = strstr(st->d[0].db_url, "host=");
    if (!host) return;
    char dir[512], path[600];
    snprintf(dir, sizeof dir, "%.*s", (int)strcspn(host + 5, "&"), host + 5);
    snprintf(path, sizeof path, "%s/data/postmaster.pid", dir);
    char *text = harness_read_file(path);
    faults_postmaster = text ? (sig_atomic_t)atoi(text) : 0;
    free(text);
}

static inline int faults_daemon_start(faults_stack_t *st, int i) {
    int rc = test_daemon_start(&st->d[i]);
    faults_watch(1 + i, st->d[i].proc);
    return rc;
}

// SIGKILL, reaped. 0 or -1.
static inline int faults_daemon_kill9(faults_stack_t *st, int i) {
    test_daemon_t *d = &st->d[i];
    if (!d->proc || harness_proc_kill(d->proc, SIGKILL) != 0) return -1;
    int status = 0;
    int rc = harness_proc_wait(d->proc, 10000, &status);
    harness_proc_destroy(&d->proc);
    faults_watch(1 + i, NULL);
    return rc;
}

// Starts everything; 0 or -1 (what was started is stopped by faults_stack_stop).
static inline int faults_stack_start(faults_stack_t *st, const faults_opts_t *o) {
    memset(st, 0, sizeof *st);
    st->o = *o;
    if (st->o.daemons < 1 || st->o.daemons > FAULTS_MAX_DAEMONS) st->o.daemons = 1;
    if (st->o.vapi_limit <= 0) st->o.vapi_limit = 8;
    if (st->o.agent_limit <= 0) st->o.agent_limit = 4;
    if (!st->o.outcome) st->o.outcome = "answer:2";
    char db_url[512] = "";
    if (st->o.private_pg) {
        st->pg = harness_pg_cluster_new();
        if (!st->pg || harness_pg_cluster_create_db(st->pg, "sweety", db_url, sizeof db_url) != 0) return -1;
    }
    char dir[512];
    if (harness_tmpdir(dir, sizeof dir) != 0) return -1;
    test_sandbox_reserve(&st->sb, dir);
    harness_rmtree(dir);
    char more[1024], extra[2048];
    snprintf(more, sizeof more, "%s%s", FAULTS_CONF_BASE, o->extra_conf ? o->extra_conf : FAULTS_CONF_RECONCILE);
    test_sandbox_daemon_conf(&st->sb, more, extra, sizeof extra);
    if (test_daemon_prepare(&st->d[0], db_url[0] ? db_url : NULL, extra) != 0) return -1;
    for (int i = 1; i < st->o.daemons; i++)
        if (test_daemon_prepare(&st->d[i], st->d[0].db_url, extra) != 0) return -1;
    faults_note_postmaster(st);
    snprintf(st->sb.log, sizeof st->sb.log, "%s/sandbox.log", st->d[0].dir);
    int sb = test_sandbox_start(&st->sb, st->d[0].base_url);
    faults_watch(0, st->sb.proc);
    if (sb != 0) return -1;
    for (int i = 0; i < st->o.daemons; i++)
        if (faults_daemon_start(st, i) != 0) return -1;

    snprintf(st->vapi_key, sizeof st->vapi_key, "vapi_key_faults_%d", (int)getpid());
    char body[256];
    snprintf(body, sizeof body, "{\"key\":\"%s\",\"limit\":%d}", st->vapi_key, st->o.vapi_limit);
    if (faults_sandbox(st, "POST", "/_sandbox/vapi/keys", body, NULL) != 200) return -1;
    snprintf(body, sizeof body, "{\"default_outcome\":\"%s\"}", st->o.outcome);
    if (faults_sandbox(st, "POST", "/_sandbox/vapi/config", body, NULL) != 200) return -1;
    setenv("SWEETY_TEST_VAPI_KEY", st->vapi_key, 1);
    char lim[16];
    snprintf(lim, sizeof lim, "%d", st->o.vapi_limit);
    const char *add[] = {"account", "add", "--name", "faults", "--api-key-env", "SWEETY_TEST_VAPI_KEY",
                         "--phone-number-id", "pn_faults", "--max-concurrent", lim, NULL};
    int rc = faults_ctl(st, add, st->account, sizeof st->account);
    unsetenv("SWEETY_TEST_VAPI_KEY");
    if (rc != 0) return -1;
    static const char *const plans[] = {"free_trial", "standard", "extended", "premium"};
    char secs[16], alim[16];
    snprintf(secs, sizeof secs, "%d", FAULTS_PLAN_SECONDS);
    snprintf(alim, sizeof alim, "%d", st->o.agent_limit);
    for (size_t i = 0; i < 4; i++) {
        char assistant[40];
        snprintf(assistant, sizeof assistant, "asst_faults_%s", plans[i]);
        const char *set[] = {"plan", "set", plans[i], "--duration-seconds", secs, "--assistant-id", assistant, NULL};
        const char *agent[] = {"agent", "add", "--account", st->account, "--plan", plans[i], "--max-concurrent", alim,
                               NULL};
        if (faults_ctl(st, set, NULL, 0) != 0 || faults_ctl(st, agent, NULL, 0) != 0) return -1;
    }
    printf("[faults] stack: %d sweetyd on %s PostgreSQL, VAPI limit %d, agents %d per plan, calls %s\n",
           st->o.daemons, st->pg ? "a private" : "the shared", st->o.vapi_limit, st->o.agent_limit, st->o.outcome);
    fflush(stdout);
    return 0;
}

// Stops what runs (SIGTERM: a daemon must drain and exit 0) and removes every folder. Returns 0
// when every sweetyd still running exited 0.
static inline int faults_stack_stop(faults_stack_t *st) {
    int bad = 0;
    for (int i = 0; i < FAULTS_MAX_DAEMONS; i++) {
        if (!st->d[i].proc) continue;
        int code = test_daemon_stop(&st->d[i], 15000);
        faults_watch(1 + i, NULL);
        if (code != 0) {
            fprintf(stderr, "[faults] sweetyd #%d exited %d on SIGTERM (log: %s)\n", i, code, st->d[i].log);
            bad++;
        }
    }
    test_sandbox_stop(&st->sb);
    faults_watch(0, NULL);
    for (int i = FAULTS_MAX_DAEMONS - 1; i >= 0; i--) test_daemon_cleanup(&st->d[i]);
    if (st->pg) harness_pg_cluster_destroy(&st->pg);
    faults_postmaster = 0;
    return bad ? -1 : 0;
}

// ---- HTTP for the load thread (its own handles; the harness' have a 10 s limit) ---------------------

typedef struct {
    char *p;
    size_t len;
} faults_body_t;

static size_t faults_body_write(char *ptr, size_t size, size_t nmemb, void *userdata) {
    faults_body_t *b = userdata;
    size_t n = size * nmemb;
    char *bigger = realloc(b->p, b->len + n + 1);
    if (!bigger) return 0;
    b->p = bigger;
    memcpy(b->p + b->len, ptr, n);
    b->len += n;
    b->p[b->len] = '\0';
    return n;
}

// Returns the status (0: no answer); *out (may be NULL) gets the parsed JSON answer.
static inline long faults_http(const char *method, const char *url, const char *body, const char *const *headers,
                               long timeout_ms, json_t **out) {
    if (out) *out = NULL;
    CURL *curl = curl_easy_init();
    if (!curl) return 0;
    faults_body_t b = {0};
    struct curl_slist *list = NULL;
    for (int i = 0; headers && headers[i]; i++) list = curl_slist_append(list, headers[i]);
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method);
    if (body) {
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    }
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, list);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, faults_body_write);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, 3000L);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    long status = 0;
    if (curl_easy_perform(curl) == CURLE_OK) curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(list);
    curl_easy_cleanup(curl);
    if (out && b.p) *out = json_loads(b.p, 0, NULL);
    free(b.p);
    return status;
}

// ---- the load generator -----------------------------------------------------------------------
// One thread plays the customers: it books (as a client with an Idempotency-Key that tries again,
// on whichever daemon is up, while it gets no answer), and pays in the sandbox a moment later, as
// a person on the checkout page would — also while the booking client waits for a dead daemon, so
// webhooks run into kills and outages as well.

typedef enum {
    FL_FREE,            // free trial, answered
    FL_FREE_RETRY,      // free trial: busy, then answered (one retry)
    FL_FREE_FAIL,       // free trial never answered: failed after the retries (no money involved)
    FL_STRIPE,          // paid with Stripe Checkout, answered
    FL_STRIPE_ASYNC,    // Stripe: completed unpaid, then async_payment_succeeded
    FL_STRIPE_BUSY,     // paid, never answered: failed, refunded
    FL_STRIPE_CANCEL,   // paid, then cancelled by the customer at once: refunded (or too late: called)
    FL_STRIPE_UNPAID,   // checkout left open: legitimately waiting
    FL_STRIPE_EXPIRE,   // checkout expired: cancelled
    FL_CRYPTO,          // paid with Cryptomus, answered
    FL_CRYPTO_FAIL,     // Cryptomus wrong_amount: payment_failed
    FL_CRYPTO_LATE,     // Cryptomus cancelled, then paid anyway: refund_required
    FL_SCHEDULED,       // paid, scheduled two hours ahead: legitimately waiting in the queue
    FL_KINDS
} faults_kind_t;

static const char *const faults_kind_names[FL_KINDS] = {
    "free", "free_retry", "free_fail", "stripe", "stripe_async", "stripe_busy", "stripe_cancel",
    "stripe_unpaid", "stripe_expire", "crypto", "crypto_fail", "crypto_late", "scheduled"};

// Out of 100.
static const int faults_kind_weights[FL_KINDS] = {30, 8, 4, 22, 5, 5, 5, 3, 3, 8, 2, 2, 3};

typedef struct {
    char id[40];
    char phone[20];
    char token[512];
    char session[128];   // Stripe cs_… or Cryptomus invoice uuid
    faults_kind_t kind;
    long status;         // the booking request's final answer (0: none within the client's patience)
    long pay_status;     // the sandbox's answer to paying (0: not paid)
    long cancel_status;  // the cancel's answer (0: not cancelled)
    int tries;           // booking requests sent (same Idempotency-Key)
} faults_booking_t;

typedef struct {
    size_t idx;          // into the load's list
    int64_t due_ms;
} faults_due_t;

typedef struct {
    faults_stack_t *st;
    unsigned rng;
    int pause_min_ms, pause_max_ms;
    int phone_tag;                    // two digits in every number, per scenario
    int weights[FL_KINDS];            // the mix, out of 100
    atomic_int targets;               // bit i: daemon i takes requests
    atomic_bool stop;
    pthread_t thread;
    bool running, paying;
    faults_due_t *due;                // payments to make (the load thread's own)
    size_t ndue, capdue;
    pthread_mutex_t mu;               // guards what follows
    faults_booking_t *b;
    size_t n, cap;
    int requests, retried, answered_201, answered_502, abandoned, unanswered, paid, cancels;
} faults_load_t;

static inline bool faults_load_stopping(faults_load_t *L) { return atomic_load(&L->stop); }

static inline void faults_load_pay_due(faults_load_t *L, bool all);

// Waits ms, making the payments that fall due meanwhile.
static inline void faults_load_nap(faults_load_t *L, int ms) {
    int64_t until = harness_now_ms() + ms;
    while (!faults_load_stopping(L)) {
        faults_load_pay_due(L, false);
        int64_t left = until - harness_now_ms();
        if (left <= 0) break;
        harness_sleep_ms(left < 50 ? (int)left : 50);
    }
}

// The daemon to use for try number `pick` (round robin over the live ones).
static inline test_daemon_t *faults_load_target(faults_load_t *L, unsigned pick) {
    int mask = atomic_load(&L->targets);
    int live[FAULTS_MAX_DAEMONS], n = 0;
    for (int i = 0; i < L->st->o.daemons; i++)
        if (mask & (1 << i)) live[n++] = i;
    return n ? &L->st->d[live[pick % (unsigned)n]] : &L->st->d[0];
}

static inline faults_kind_t faults_pick_kind(unsigned *rng, const int *weights) {
    int r = (int)(faults_rand(rng) % 100u), acc = 0;
    for (int k = 0; k < FL_KINDS; k++) {
        acc += weights[k];
        if (r < acc) return (faults_kind_t)k;
    }
    return FL_FREE;
}

// The booking request as a client with an Idempotency-Key does it: again on no answer or a 5xx
// other than 502, to whichever daemon is up, for up to 45 s; a 409 idempotency_in_progress means
// the first try died inside a daemon (the key is held 300 s): the client gives up.
static inline void faults_load_book(faults_load_t *L, faults_booking_t *b, const char *body, const char *key) {
    char hdr_key[128];
    snprintf(hdr_key, sizeof hdr_key, "Idempotency-Key: %s", key);
    const char *headers[] = {"Content-Type: application/json", hdr_key, NULL};
    int64_t deadline = harness_now_ms() + 45000;
    unsigned pick = faults_rand(&L->rng);
    for (;;) {
        test_daemon_t *d = faults_load_target(L, pick++);
        char url[160];
        snprintf(url, sizeof url, "%s/api/bookings", d->base_url);
        json_t *j = NULL;
        long st = faults_http("POST", url, body, headers, 40000, &j);
        b->tries++;
        const char *code = json_string_value(json_object_get(json_object_get(j, "error"), "code"));
        bool in_progress = st == 409 && code && strcmp(code, "idempotency_in_progress") == 0;
        if (st == 201) {
            const char *v;
            if ((v = json_string_value(json_object_get(j, "booking_id")))) snprintf(b->id, sizeof b->id, "%s", v);
            if ((v = json_string_value(json_object_get(j, "status_token")))) snprintf(b->token, sizeof b->token, "%s", v);
            if ((v = json_string_value(json_object_get(j, "checkout_url"))) && strrchr(v, '/'))
                snprintf(b->session, sizeof b->session, "%s", strrchr(v, '/') + 1);
        }
        json_decref(j);
        if (st == 201 || st == 502 || (st >= 400 && st < 500 && !in_progress)) {
            b->status = st;
            return;
        }
        if (in_progress || faults_load_stopping(L) || harness_now_ms() >= deadline) {
            b->status = in_progress ? 409 : 0;
            return;
        }
        faults_load_nap(L, 300);
    }
}

// POST /api/bookings/{id}/cancel until it is answered (200, or 409 too_late once the call started).
static inline long faults_load_cancel(faults_load_t *L, const faults_booking_t *b) {
    char auth[600];
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", b->token);
    const char *headers[] = {auth, NULL};
    int64_t deadline = harness_now_ms() + 30000;
    unsigned pick = faults_rand(&L->rng);
    for (;;) {
        char url[200];
        snprintf(url, sizeof url, "%s/api/bookings/%s/cancel", faults_load_target(L, pick++)->base_url, b->id);
        long st = faults_http("POST", url, NULL, headers, 40000, NULL);
        if ((st >= 200 && st < 500) || faults_load_stopping(L) || harness_now_ms() >= deadline) return st;
        harness_sleep_ms(300);
    }
}

static inline long faults_load_sandbox(faults_load_t *L, const char *path, const char *json) {
    char url[400];
    snprintf(url, sizeof url, "%s%s", L->st->sb.url, path);
    const char *headers[] = {"Content-Type: application/json", NULL};
    return faults_http("POST", url, json, headers, 10000, NULL);
}

// What the customer of booking `idx` does at the provider (and, for FL_STRIPE_CANCEL, then at ours).
static inline void faults_load_pay(faults_load_t *L, size_t idx) {
    pthread_mutex_lock(&L->mu);
    faults_booking_t b = L->b[idx];
    pthread_mutex_unlock(&L->mu);
    char path[256];
    const char *how = NULL;
    switch (b.kind) {
    case FL_STRIPE:
    case FL_STRIPE_BUSY:
    case FL_STRIPE_CANCEL:
    case FL_SCHEDULED: how = "{\"payment_status\":\"paid\"}"; break;
    case FL_STRIPE_ASYNC: how = "{\"payment_status\":\"unpaid\",\"then\":\"async_succeeded\"}"; break;
    default: break;
    }
    if (how) {
        b.pay_status = test_sandbox_complete(&L->st->sb, b.session, how) == 200 ? 200 : 0;
    } else if (b.kind == FL_STRIPE_EXPIRE) {
        snprintf(path, sizeof path, "/_sandbox/stripe/sessions/%s/expire_now", b.session);
        faults_load_sandbox(L, path, "{}");
    } else if (b.kind == FL_CRYPTO || b.kind == FL_CRYPTO_FAIL || b.kind == FL_CRYPTO_LATE) {
        snprintf(path, sizeof path, "/_sandbox/cryptomus/invoices/%s/status", b.session);
        if (b.kind == FL_CRYPTO_FAIL) {
            faults_load_sandbox(L, path, "{\"status\":\"wrong_amount\"}");
        } else {
            if (b.kind == FL_CRYPTO_LATE) {
                faults_load_sandbox(L, path, "{\"status\":\"cancel\"}");
                harness_sleep_ms(200);
            }
            b.pay_status = faults_load_sandbox(L, path, "{\"status\":\"paid\"}") == 200 ? 200 : 0;
        }
    }
    if (b.kind == FL_STRIPE_CANCEL && b.pay_status == 200) b.cancel_status = faults_load_cancel(L, &b);
    pthread_mutex_lock(&L->mu);
    L->b[idx].pay_status = b.pay_status;
    L->b[idx].cancel_status = b.cancel_status;
    L->paid += b.pay_status == 200;
    L->cancels += b.cancel_status == 200;
    pthread_mutex_unlock(&L->mu);
}

// Makes the payments that are due (all of them when `all`).
static inline void faults_load_pay_due(faults_load_t *L, bool all) {
    if (L->paying) return;   // not from inside a payment's own waits
    L->paying = true;
    for (size_t i = 0; i < L->ndue;) {
        if (all || L->due[i].due_ms <= harness_now_ms()) {
            size_t idx = L->due[i].idx;
            L->due[i] = L->due[--L->ndue];
            faults_load_pay(L, idx);
        } else {
            i++;
        }
    }
    L->paying = false;
}

static inline void faults_load_one(faults_load_t *L) {
    faults_booking_t b;
    memset(&b, 0, sizeof b);
    b.kind = faults_pick_kind(&L->rng, L->weights);
    pthread_mutex_lock(&L->mu);
    size_t seq = L->n;
    pthread_mutex_unlock(&L->mu);
    snprintf(b.phone, sizeof b.phone, "+17%02d%08zu", L->phone_tag % 100, seq);
    const char *script = b.kind == FL_FREE_RETRY    ? "[\"busy\",\"answer:2\"]"
                         : b.kind == FL_FREE_FAIL   ? "[\"no-answer\"]"
                         : b.kind == FL_STRIPE_BUSY ? "[\"busy\"]"
                                                    : NULL;
    if (script) {
        char json[200];
        snprintf(json, sizeof json, "{\"number\":\"%s\",\"outcomes\":%s}", b.phone, script);
        faults_load_sandbox(L, "/_sandbox/vapi/script", json);
    }
    bool free_trial = b.kind == FL_FREE || b.kind == FL_FREE_RETRY || b.kind == FL_FREE_FAIL;
    bool crypto = b.kind == FL_CRYPTO || b.kind == FL_CRYPTO_FAIL || b.kind == FL_CRYPTO_LATE;
    static const char *const paid_plans[] = {"standard", "extended", "premium"};
    const char *plan = free_trial ? "free_trial" : paid_plans[faults_rand(&L->rng) % 3];
    char scheduled[80] = "";
    if (b.kind == FL_SCHEDULED) {
        time_t at = time(NULL) + 7200;
        struct tm tm;
        gmtime_r(&at, &tm);
        strftime(scheduled, sizeof scheduled, ",\"scheduled_for\":\"%Y-%m-%dT%H:%M:%SZ\"", &tm);
    }
    char body[512], key[64];
    snprintf(body, sizeof body,
             "{\"name\":\"Fault Tester\",\"phone\":\"%s\",\"email\":\"faults@example.org\",\"plan\":\"%s\","
             "\"payment_method\":\"%s\"%s}",
             b.phone, plan, crypto ? "cryptomus" : "stripe", scheduled);
    snprintf(key, sizeof key, "faults-%d-%zu-%u", L->phone_tag, seq, faults_rand(&L->rng));
    faults_load_book(L, &b, body, key);

    pthread_mutex_lock(&L->mu);
    if (L->n == L->cap) {
        size_t cap = L->cap ? L->cap * 2 : 256;
        faults_booking_t *more = realloc(L->b, cap * sizeof *more);
        if (more) {
            L->b = more;
            L->cap = cap;
        }
    }
    size_t idx = L->n;
    bool kept = L->n < L->cap;
    if (kept) L->b[L->n++] = b;
    L->requests += b.tries;
    L->retried += b.tries > 1;
    L->answered_201 += b.status == 201;
    L->answered_502 += b.status == 502;
    L->abandoned += b.status == 409;
    L->unanswered += b.status == 0;
    pthread_mutex_unlock(&L->mu);

    // the customer pays (or lets the checkout expire) a moment later
    if (kept && b.status == 201 && b.session[0] && b.kind != FL_STRIPE_UNPAID) {
        if (L->ndue == L->capdue) {
            size_t cap = L->capdue ? L->capdue * 2 : 64;
            faults_due_t *more = realloc(L->due, cap * sizeof *more);
            if (!more) return;
            L->due = more;
            L->capdue = cap;
        }
        L->due[L->ndue++] = (faults_due_t){idx, harness_now_ms() + faults_rand_between(&L->rng, 0, 1500)};
    }
}

static void *faults_load_main(void *arg) {
    faults_load_t *L = arg;
    while (!faults_load_stopping(L)) {
        faults_load_one(L);
        faults_load_nap(L, faults_rand_between(&L->rng, L->pause_min_ms, L->pause_max_ms));
    }
    faults_load_pay_due(L, true);   // the customers who were about to pay still do
    return NULL;
}

// Starts the load against every daemon of the stack; `weights` (FL_KINDS numbers adding up to
// 100, or NULL for faults_kind_weights) is the mix. 0 or -1.
static inline int faults_load_start(faults_load_t *L, faults_stack_t *st, unsigned seed, int phone_tag,
                                    int pause_min_ms, int pause_max_ms, const int *weights) {
    memset(L, 0, sizeof *L);
    memcpy(L->weights, weights ? weights : faults_kind_weights, sizeof L->weights);
    L->st = st;
    L->rng = seed ? seed : 1;
    L->phone_tag = phone_tag;
    L->pause_min_ms = pause_min_ms;
    L->pause_max_ms = pause_max_ms;
    atomic_init(&L->targets, (1 << st->o.daemons) - 1);
    atomic_init(&L->stop, false);
    pthread_mutex_init(&L->mu, NULL);
    if (pthread_create(&L->thread, NULL, faults_load_main, L) != 0) return -1;
    L->running = true;
    printf("[faults] load: one booking every %d..%d ms (free trials, Stripe, Cryptomus, cancels, scripted calls),"
           " paid 0..1.5 s later\n",
           pause_min_ms, pause_max_ms);
    fflush(stdout);
    return 0;
}

// Stops the load: the booking in progress is given up at its next retry, due payments are made.
static inline void faults_load_stop(faults_load_t *L) {
    if (!L->running) return;
    atomic_store(&L->stop, true);
    pthread_join(L->thread, NULL);
    L->running = false;
}

static inline void faults_load_free(faults_load_t *L) {
    faults_load_stop(L);
    if (L->st) pthread_mutex_destroy(&L->mu);
    free(L->b);
    free(L->due);
    memset(L, 0, sizeof *L);
}

static inline void faults_load_print(faults_load_t *L) {
    pthread_mutex_lock(&L->mu);
    int per_kind[FL_KINDS] = {0};
    for (size_t i = 0; i < L->n; i++) per_kind[L->b[i].kind]++;
    printf("[faults] load: %zu bookings tried (%d requests; %d bookings retried with the same Idempotency-Key): "
           "%d created, %d answered 502, %d abandoned (409 in progress), %d unanswered; %d paid at the provider, "
           "%d cancelled\n",
           L->n, L->requests, L->retried, L->answered_201, L->answered_502, L->abandoned, L->unanswered, L->paid,
           L->cancels);
    printf("[faults] load mix:");
    for (int k = 0; k < FL_KINDS; k++) printf(" %s=%d", faults_kind_names[k], per_kind[k]);
    printf("\n");
    pthread_mutex_unlock(&L->mu);
    fflush(stdout);
}

// ---- the invariant check ------------------------------------------------------------------------

typedef struct {
    char id[40], status[20], plan[16], phone[24];
    char pprov[12], pstatus[20], session[128], pi[128], invoice[80];
    long amount;
    char qstatus[12];
    int attempt, max_retries;
    bool scheduled_ahead;   // queued row not due for more than a minute
    int age_s;
} faults_row_t;

typedef struct {
    int hard, soft;
    faults_buf_t text;       // the violations, one a line (the first ones)
    int lines;
    // what the scenario amounted to
    int bookings, final, waiting;
    int by_status[10];
    int paid, refunded, refund_pending, refund_required, payments;
    int vapi_calls, vapi_bookings, vapi_multi_calls;
    int wh_events[3], wh_deliveries[3], wh_non2xx[3];
    int stored_events;
    int stripe_refunds;
} faults_report_t;

static const char *const faults_statuses[10] = {"pending", "pending_payment", "payment_failed", "confirmed", "queued",
                                                "initiating", "calling", "completed", "failed", "cancelled"};
static const char *const faults_wh_providers[3] = {"stripe", "cryptomus", "vapi"};

static inline void faults_report_free(faults_report_t *r) { faults_buf_free(&r->text); }

static inline void faults_violation(faults_report_t *r, bool hard, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static inline void faults_violation(faults_report_t *r, bool hard, const char *fmt, ...) {
    if (hard) r->hard++;
    else r->soft++;
    if (r->lines >= 60) return;
    r->lines++;
    char line[900];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    faults_buf_printf(&r->text, "  %s %s\n", hard ? "[always]" : "[at rest]", line);
}

static inline bool faults_is_final(const char *s) {
    return !strcmp(s, "completed") || !strcmp(s, "failed") || !strcmp(s, "cancelled") || !strcmp(s, "payment_failed");
}

static inline bool faults_is_dead(const char *s) {
    return !strcmp(s, "failed") || !strcmp(s, "cancelled") || !strcmp(s, "payment_failed");
}

// A sorted string index: key -> pointer, for the joins between the sandbox and the database.
typedef struct {
    const char *key;
    const void *val;
} faults_kv_t;

typedef struct {
    faults_kv_t *e;
    size_t n, cap;
} faults_index_t;

static int faults_kv_cmp(const void *a, const void *b) {
    return strcmp(((const faults_kv_t *)a)->key, ((const faults_kv_t *)b)->key);
}

static inline void faults_index_add(faults_index_t *x, const char *key, const void *val) {
    if (!key || !*key) return;
    if (x->n == x->cap) {
        size_t cap = x->cap ? x->cap * 2 : 256;
        faults_kv_t *e = realloc(x->e, cap * sizeof *e);
        if (!e) return;
        x->e = e;
        x->cap = cap;
    }
    x->e[x->n++] = (faults_kv_t){key, val};
}

static inline void faults_index_sort(faults_index_t *x) {
    if (x->n) qsort(x->e, x->n, sizeof *x->e, faults_kv_cmp);
}

static inline const void *faults_index_get(const faults_index_t *x, const char *key) {
    if (!key || !*key || !x->n) return NULL;
    faults_kv_t k = {key, NULL};
    const faults_kv_t *hit = bsearch(&k, x->e, x->n, sizeof *x->e, faults_kv_cmp);
    return hit ? hit->val : NULL;
}

static const char faults_mark = 1;   // a set's value: present

static inline void faults_index_free(faults_index_t *x) {
    free(x->e);
    memset(x, 0, sizeof *x);
}

// Runs a query; every row's columns go to `row` (ncols of them). -1 on failure (message in r).
static inline int faults_sql_rows(PGconn *c, const char *sql, faults_report_t *r,
                                  void (*row)(void *ctx, PGresult *res, int i), void *ctx) {
    PGresult *res = PQexec(c, sql);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        faults_violation(r, false, "query failed: %s", PQerrorMessage(c));
        PQclear(res);
        return -1;
    }
    for (int i = 0; i < PQntuples(res); i++) row(ctx, res, i);
    PQclear(res);
    return 0;
}

typedef struct {
    faults_row_t *rows;
    size_t n, cap;
} faults_rows_t;

static void faults_row_collect(void *ctx, PGresult *res, int i) {
    faults_rows_t *R = ctx;
    if (R->n == R->cap) {
        size_t cap = R->cap ? R->cap * 2 : 256;
        faults_row_t *more = realloc(R->rows, cap * sizeof *more);
        if (!more) return;
        R->rows = more;
        R->cap = cap;
    }
    faults_row_t *w = &R->rows[R->n++];
    memset(w, 0, sizeof *w);
#define FAULTS_COPY(field, col) snprintf(w->field, sizeof w->field, "%s", PQgetvalue(res, i, col))
    FAULTS_COPY(id, 0);
    FAULTS_COPY(status, 1);
    FAULTS_COPY(plan, 2);
    FAULTS_COPY(phone, 3);
    FAULTS_COPY(pprov, 4);
    FAULTS_COPY(pstatus, 5);
    FAULTS_COPY(session, 6);
    FAULTS_COPY(pi, 7);
    FAULTS_COPY(invoice, 8);
    w->amount = atol(PQgetvalue(res, i, 9));
    FAULTS_COPY(qstatus, 10);
    w->attempt = atoi(PQgetvalue(res, i, 11));
    w->max_retries = atoi(PQgetvalue(res, i, 12));
    w->scheduled_ahead = strcmp(PQgetvalue(res, i, 13), "t") == 0;
    w->age_s = atoi(PQgetvalue(res, i, 14));
#undef FAULTS_COPY
}

typedef struct {
    faults_report_t *r;
    bool hard;
} faults_lines_ctx_t;

static void faults_line_collect(void *ctx, PGresult *res, int i) {
    faults_lines_ctx_t *c = ctx;
    faults_violation(c->r, c->hard, "%s", PQgetvalue(res, i, 0));
}

typedef struct {
    char **v;
    size_t n, cap;
} faults_strs_t;

static void faults_str_collect(void *ctx, PGresult *res, int i) {
    faults_strs_t *S = ctx;
    if (S->n == S->cap) {
        size_t cap = S->cap ? S->cap * 2 : 256;
        char **more = realloc(S->v, cap * sizeof *more);
        if (!more) return;
        S->v = more;
        S->cap = cap;
    }
    S->v[S->n++] = strdup(PQgetvalue(res, i, 0));
}

static inline void faults_strs_free(faults_strs_t *S) {
    for (size_t i = 0; i < S->n; i++) free(S->v[i]);
    free(S->v);
    memset(S, 0, sizeof *S);
}

// Every booking with its payment and queue row.
#define FAULTS_SQL_ROWS                                                                                          \
    "SELECT b.id, b.status, b.plan, u.phone, coalesce(p.provider::text, ''), coalesce(p.status::text, ''),"     \
    " coalesce(p.session_id, ''), coalesce(p.payment_intent_id, ''), coalesce(p.invoice_uuid, ''),"             \
    " coalesce(p.amount_cents, 0), coalesce(q.status::text, ''), coalesce(q.attempt, -1),"                      \
    " coalesce(q.max_retries, -1), coalesce(q.status = 'queued' AND q.next_attempt_at > now() + interval '60 s', false),"\
    " extract(epoch FROM now() - b.created_at)::int"                                                             \
    " FROM bookings b JOIN users u ON u.id = b.user_id LEFT JOIN payments p ON p.booking_id = b.id"               \
    " LEFT JOIN call_queue q ON q.booking_id = b.id"

// Histories: numbered 1, 2, 3 …; never backwards except initiating/calling -> queued (a retry);
// nothing after a final status; the last one is the booking's status. The ranks are CONTRACT.md's
// order of the normal paths, written here independently of the schema's own trigger.
#define FAULTS_SQL_HISTORY                                                                                      \
    "WITH k(s, r) AS (VALUES ('pending',0),('pending_payment',1),('confirmed',2),('queued',3),"                  \
    "  ('initiating',4),('calling',5),('completed',9),('failed',9),('cancelled',9),('payment_failed',9)),"      \
    " e AS (SELECT e.booking_id, e.seq, e.status::text AS s, k.r,"                                               \
    "  row_number() OVER w AS rn, lag(e.status::text) OVER w AS prev, lag(k.r) OVER w AS prev_r"                \
    "  FROM booking_events e JOIN k ON k.s = e.status::text WINDOW w AS (PARTITION BY e.booking_id ORDER BY e.seq))"\
    " SELECT 'booking ' || booking_id || ': ' || coalesce(prev, '(start)') || ' -> ' || s || ' at seq ' || seq"  \
    "  || CASE WHEN seq <> rn THEN ' (seq gap)' ELSE ' (backwards or after a final status)' END FROM e"          \
    " WHERE seq <> rn OR (prev IS NOT NULL AND (prev_r = 9 OR (r <= prev_r"                                       \
    "   AND NOT (s = 'queued' AND prev IN ('initiating', 'calling')))))"                                           \
    "   OR (prev IS NULL AND s NOT IN ('pending', 'queued'))"                                                      \
    " UNION ALL SELECT 'booking ' || b.id || ' is ' || b.status || ' (seq ' || b.status_seq || ') but its history ends with '"\
    "  || coalesce(l.status::text, 'nothing') || ' (seq ' || coalesce(l.seq, 0) || ')' FROM bookings b"            \
    "  LEFT JOIN LATERAL (SELECT seq, status FROM booking_events x WHERE x.booking_id = b.id ORDER BY seq DESC LIMIT 1) l ON true"\
    "  WHERE l.status IS DISTINCT FROM b.status OR l.seq IS DISTINCT FROM b.status_seq"

// Counters: every agent's and account's active_calls equals its tries in progress (queue rows
// dialing or active), and its active_calls rows equal its active queue rows. One statement, one
// snapshot.
#define FAULTS_SQL_CAPACITY                                                                                      \
    "WITH t AS (SELECT agent_id, account_id, status FROM call_queue WHERE status IN ('dialing', 'active'))"      \
    " SELECT 'agent ' || a.id || ' counts ' || a.active_calls || ' calls; tries in progress: '"                  \
    "  || (SELECT count(*) FROM t WHERE t.agent_id = a.id) || ', active_calls rows: '"                            \
    "  || (SELECT count(*) FROM active_calls c WHERE c.agent_id = a.id) FROM vapi_agents a"                        \
    "  WHERE a.active_calls <> (SELECT count(*) FROM t WHERE t.agent_id = a.id)"                                  \
    "   OR (SELECT count(*) FROM active_calls c WHERE c.agent_id = a.id)"                                          \
    "      <> (SELECT count(*) FROM t WHERE t.agent_id = a.id AND t.status = 'active')"                           \
    " UNION ALL SELECT 'account ' || x.id || ' counts ' || x.active_calls || ' calls; tries in progress: '"        \
    "  || (SELECT count(*) FROM t WHERE t.account_id = x.id) || ', active_calls rows: '"                          \
    "  || (SELECT count(*) FROM active_calls c WHERE c.account_id = x.id) FROM vapi_accounts x"                    \
    "  WHERE x.active_calls <> (SELECT count(*) FROM t WHERE t.account_id = x.id)"                                \
    "   OR (SELECT count(*) FROM active_calls c WHERE c.account_id = x.id)"                                        \
    "      <> (SELECT count(*) FROM t WHERE t.account_id = x.id AND t.status = 'active')"                         \
    " UNION ALL SELECT 'active_calls row of booking ' || c.booking_id || ' but its queue row is '"                 \
    "  || coalesce(q.status::text, 'missing') FROM active_calls c LEFT JOIN call_queue q ON q.booking_id = c.booking_id"\
    "  WHERE q.status IS DISTINCT FROM 'active'"

typedef struct {
    bool quiet;                    // also the invariants that hold only at rest
    faults_load_t *load;           // the bookings the load made (may be NULL)
} faults_check_opts_t;

static inline json_t *faults_sandbox_get(faults_stack_t *st, const char *path, faults_report_t *r) {
    json_t *j = NULL;
    long code = faults_sandbox(st, "GET", path, NULL, &j);
    if (code != 200 || !j) {
        faults_violation(r, false, "sandbox GET %s answered %ld", path, code);
        json_decref(j);
        return NULL;
    }
    return j;
}

static inline const char *faults_jstr(const json_t *o, const char *k) {
    const char *v = json_string_value(json_object_get(o, k));
    return v ? v : "";
}

// The VAPI part: calls at the sandbox against attempts and rows in the database.
static inline void faults_check_calls(const json_t *calls, const faults_index_t *by_id, const faults_index_t *known,
                                      bool quiet, faults_report_t *r) {
    faults_index_t per_booking = {0};
    size_t i;
    json_t *c;
    json_array_foreach(calls, i, c) {
        if (json_is_true(json_object_get(c, "over_limit"))) continue;
        r->vapi_calls++;
        const json_t *meta = json_object_get(c, "metadata");
        const char *bid = faults_jstr(meta, "booking_id");
        const char *id = faults_jstr(c, "id");
        if (!*bid) {
            faults_violation(r, true, "VAPI call %s carries no booking id", id);
            continue;
        }
        faults_index_add(&per_booking, bid, c);
        if (quiet && strcmp(faults_jstr(c, "status"), "ended") != 0)
            faults_violation(r, false, "VAPI call %s of booking %s is still %s", id, bid, faults_jstr(c, "status"));
        if (quiet && !faults_index_get(known, id))
            faults_violation(r, false, "VAPI call %s (booking %s, attempt %lld, ended by %s) is unknown to the database",
                             id, bid, (long long)json_integer_value(json_object_get(meta, "attempt")),
                             faults_jstr(c, "ended_by"));
    }
    faults_index_sort(&per_booking);
    for (size_t a = 0; a < per_booking.n;) {
        size_t b = a;
        while (b < per_booking.n && strcmp(per_booking.e[b].key, per_booking.e[a].key) == 0) b++;
        const char *bid = per_booking.e[a].key;
        size_t n = b - a;
        r->vapi_bookings++;
        r->vapi_multi_calls += n > 1;
        const faults_row_t *row = faults_index_get(by_id, bid);
        if (!row) {
            faults_violation(r, true, "VAPI has %zu call(s) for booking %s, which the database does not have", n, bid);
        } else if (row->attempt >= 0 && n > (size_t)row->attempt + 1) {
            faults_violation(r, true, "booking %s: %zu calls at VAPI but only %d attempt(s) recorded", bid, n,
                             row->attempt + 1);
        }
        for (size_t x = a; x < b; x++) {
            const json_t *cx = per_booking.e[x].val;
            json_int_t ax = json_integer_value(json_object_get(json_object_get(cx, "metadata"), "attempt"));
            for (size_t y = x + 1; y < b; y++) {
                const json_t *cy = per_booking.e[y].val;
                json_int_t ay = json_integer_value(json_object_get(json_object_get(cy, "metadata"), "attempt"));
                if (ax == ay)
                    faults_violation(r, true, "booking %s: attempt %lld dialled twice (calls %s and %s)", bid,
                                     (long long)ax, faults_jstr(cx, "id"), faults_jstr(cy, "id"));
                // live at once: each created before the other ended (ISO times, one format: compare as text)
                const char *cxs = faults_jstr(cx, "created"), *cxe = faults_jstr(cx, "ended");
                const char *cys = faults_jstr(cy, "created"), *cye = faults_jstr(cy, "ended");
                bool x_before_y_ended = !*cye || strcmp(cxs, cye) < 0;
                bool y_before_x_ended = !*cxe || strcmp(cys, cxe) < 0;
                if (x_before_y_ended && y_before_x_ended)
                    faults_violation(r, true, "booking %s: calls %s and %s were live at the same time", bid,
                                     faults_jstr(cx, "id"), faults_jstr(cy, "id"));
            }
        }
        a = b;
    }
    faults_index_free(&per_booking);
}

// The webhooks part: what the sandbox saw answered 2xx was stored.
static inline void faults_check_webhooks(const json_t *events, const faults_index_t *stored, const faults_index_t *active,
                                         faults_report_t *r) {
    size_t i;
    json_t *ev;
    json_array_foreach(events, i, ev) {
        const char *prov = faults_jstr(ev, "provider");
        int p = !strcmp(prov, "stripe") ? 0 : !strcmp(prov, "cryptomus") ? 1 : !strcmp(prov, "vapi") ? 2 : -1;
        if (p < 0) continue;
        json_int_t delivered = json_integer_value(json_object_get(ev, "delivered"));
        json_int_t attempts = json_integer_value(json_object_get(ev, "attempts"));
        r->wh_events[p]++;
        r->wh_deliveries[p] += (int)attempts;
        r->wh_non2xx[p] += (int)(attempts - delivered);
        if (delivered <= 0) continue;
        json_t *body = json_loads(faults_jstr(ev, "body"), 0, NULL);
        char key[300] = "";
        if (p == 0) {
            snprintf(key, sizeof key, "stripe/%s", faults_jstr(body, "id"));
        } else if (p == 1) {
            snprintf(key, sizeof key, "cryptomus/%s:%s", faults_jstr(body, "uuid"), faults_jstr(body, "status"));
        } else {
            const json_t *msg = json_object_get(body, "message");
            const char *type = faults_jstr(msg, "type");
            const char *call = faults_jstr(json_object_get(msg, "call"), "id");
            bool ended = !strcmp(type, "end-of-call-report") ||
                         (!strcmp(type, "status-update") && !strcmp(faults_jstr(msg, "status"), "ended"));
            if (ended && faults_index_get(active, call))
                faults_violation(r, true, "VAPI %s for call %s was answered 2xx, yet the call is still active", type, call);
        }
        if (p < 2 && !faults_index_get(stored, key))
            faults_violation(r, true, "%s event %s (%s) was answered 2xx but is not in webhook_events", prov,
                             strchr(key, '/') + 1, faults_jstr(ev, "type"));
        json_decref(body);
    }
}

// The one invariant check. Fills *r (faults_report_free it); returns r->hard + r->soft.
static inline int faults_check(faults_stack_t *st, const faults_check_opts_t *o, faults_report_t *r) {
    memset(r, 0, sizeof *r);
    // 1. the sandbox first: whatever it saw acknowledged was committed before we read the database
    json_t *webhooks = faults_sandbox_get(st, "/_sandbox/webhooks", r);
    json_t *calls_doc = faults_sandbox_get(st, "/_sandbox/vapi/calls", r);
    json_t *sessions_doc = faults_sandbox_get(st, "/_sandbox/stripe/sessions", r);
    json_t *refunds_doc = faults_sandbox_get(st, "/_sandbox/stripe/refunds", r);
    json_t *invoices_doc = faults_sandbox_get(st, "/_sandbox/cryptomus/invoices", r);
    faults_booking_t *made = NULL;
    size_t nmade = 0;
    if (o->load && o->load->st) {
        pthread_mutex_lock(&o->load->mu);
        nmade = o->load->n;
        made = nmade ? malloc(nmade * sizeof *made) : NULL;
        if (made) memcpy(made, o->load->b, nmade * sizeof *made);
        else nmade = 0;
        pthread_mutex_unlock(&o->load->mu);
    }

    // 2. the database
    PGconn *c = PQconnectdb(st->d[0].db_url);
    faults_rows_t R = {0};
    faults_strs_t stored_s = {0}, known_s = {0}, active_s = {0};
    if (PQstatus(c) != CONNECTION_OK) {
        faults_violation(r, false, "database unreachable: %s", PQerrorMessage(c));
    } else {
        faults_lines_ctx_t hard = {r, true};
        faults_sql_rows(c, FAULTS_SQL_HISTORY, r, faults_line_collect, &hard);
        faults_sql_rows(c, FAULTS_SQL_CAPACITY, r, faults_line_collect, &hard);
        faults_sql_rows(c, FAULTS_SQL_ROWS, r, faults_row_collect, &R);
        faults_sql_rows(c, "SELECT provider::text || '/' || event_id FROM webhook_events", r, faults_str_collect,
                        &stored_s);
        faults_sql_rows(c,
                        "SELECT vapi_call_id FROM call_events WHERE vapi_call_id IS NOT NULL"
                        " UNION SELECT vapi_call_id FROM bookings WHERE vapi_call_id IS NOT NULL"
                        " UNION SELECT vapi_call_id FROM call_queue WHERE vapi_call_id IS NOT NULL"
                        " UNION SELECT vapi_call_id FROM active_calls WHERE vapi_call_id IS NOT NULL",
                        r, faults_str_collect, &known_s);
        faults_sql_rows(c, "SELECT vapi_call_id FROM active_calls WHERE vapi_call_id IS NOT NULL", r,
                        faults_str_collect, &active_s);
    }
    PQfinish(c);
    r->stored_events = (int)stored_s.n;

    faults_index_t by_id = {0}, by_phone = {0}, stored = {0}, known = {0}, active = {0}, sessions = {0}, invoices = {0},
                   refunds = {0};
    for (size_t i = 0; i < R.n; i++) {
        faults_index_add(&by_id, R.rows[i].id, &R.rows[i]);
        faults_index_add(&by_phone, R.rows[i].phone, &R.rows[i]);
    }
    for (size_t i = 0; i < stored_s.n; i++) faults_index_add(&stored, stored_s.v[i], &faults_mark);
    for (size_t i = 0; i < known_s.n; i++) faults_index_add(&known, known_s.v[i], &faults_mark);
    for (size_t i = 0; i < active_s.n; i++) faults_index_add(&active, active_s.v[i], &faults_mark);
    size_t i;
    json_t *x;
    json_array_foreach(json_object_get(sessions_doc, "sessions"), i, x) faults_index_add(&sessions, faults_jstr(x, "id"), x);
    json_array_foreach(json_object_get(invoices_doc, "invoices"), i, x) faults_index_add(&invoices, faults_jstr(x, "uuid"), x);
    json_array_foreach(json_object_get(refunds_doc, "refunds"), i, x) {
        faults_index_add(&refunds, faults_jstr(x, "payment_intent"), x);
        r->stripe_refunds++;
    }
    faults_index_sort(&by_id);
    faults_index_sort(&by_phone);
    faults_index_sort(&stored);
    faults_index_sort(&known);
    faults_index_sort(&active);
    faults_index_sort(&sessions);
    faults_index_sort(&invoices);
    faults_index_sort(&refunds);

    // 3. webhooks and calls (always)
    faults_check_webhooks(json_object_get(webhooks, "events"), &stored, &active, r);
    faults_check_calls(json_object_get(calls_doc, "calls"), &by_id, &known, o->quiet, r);

    // 4. Stripe refunds: at most one per payment, never more than was paid (always)
    faults_index_t by_pi = {0};
    for (size_t k = 0; k < R.n; k++) faults_index_add(&by_pi, R.rows[k].pi, &R.rows[k]);
    faults_index_sort(&by_pi);
    for (size_t a = 0; a < refunds.n;) {
        size_t b = a;
        json_int_t sum = 0;
        while (b < refunds.n && strcmp(refunds.e[b].key, refunds.e[a].key) == 0)
            sum += json_integer_value(json_object_get(refunds.e[b++].val, "amount"));
        const char *pi = refunds.e[a].key ? refunds.e[a].key : "?";
        const faults_row_t *w = faults_index_get(&by_pi, pi);
        if (b - a > 1) faults_violation(r, true, "payment %s refunded %zu times at Stripe", pi, b - a);
        if (w && sum > w->amount)
            faults_violation(r, true, "booking %s: %lld refunded of %ld paid", w->id, (long long)sum, w->amount);
        a = b;
    }
    faults_index_free(&by_pi);

    // 5. every booking and its money
    for (size_t k = 0; k < R.n; k++) {
        const faults_row_t *w = &R.rows[k];
        r->bookings++;
        for (int s = 0; s < 10; s++)
            if (!strcmp(w->status, faults_statuses[s])) r->by_status[s]++;
        bool stripe = !strcmp(w->pprov, "stripe");
        if (w->pprov[0]) r->payments++;
        r->paid += !strcmp(w->pstatus, "paid");
        r->refunded += !strcmp(w->pstatus, "refunded");
        r->refund_pending += !strcmp(w->pstatus, "refund_pending");
        r->refund_required += !strcmp(w->pstatus, "refund_required");
        const json_t *refund = stripe && w->pi[0] ? faults_index_get(&refunds, w->pi) : NULL;
        bool money_back = !strcmp(w->pstatus, "refunded") || !strcmp(w->pstatus, "refund_pending") ||
                          !strcmp(w->pstatus, "refund_required") || refund;
        if (!strcmp(w->status, "completed") && money_back)
            faults_violation(r, true, "booking %s was served (completed) and refunded (%s)", w->id, w->pstatus);
        if (!o->quiet) continue;

        // at rest: final, or legitimately waiting
        if (faults_is_final(w->status)) {
            r->final++;
        } else if (!strcmp(w->status, "pending") && w->age_s < 600) {
            r->waiting++;   // its checkout request died with a daemon; given up at 10 minutes
        } else if (!strcmp(w->status, "pending_payment")) {
            const json_t *s = stripe ? faults_index_get(&sessions, w->session) : NULL;
            const json_t *inv = !stripe ? faults_index_get(&invoices, w->invoice) : NULL;
            bool open = stripe ? s && !strcmp(faults_jstr(s, "status"), "open")
                               : inv && !json_is_true(json_object_get(inv, "is_final"));
            if (open && !strcmp(w->pstatus, "pending")) r->waiting++;
            else
                faults_violation(r, false, "booking %s is pending_payment, payment %s, checkout %s", w->id, w->pstatus,
                                 stripe ? (s ? faults_jstr(s, "status") : "unknown to Stripe")
                                        : (inv ? faults_jstr(inv, "status") : "unknown to Cryptomus"));
        } else if (!strcmp(w->status, "queued") && w->scheduled_ahead) {
            r->waiting++;
        } else {
            faults_violation(r, false, "booking %s is still %s (queue %s, attempt %d)", w->id, w->status,
                             w->qstatus[0] ? w->qstatus : "-", w->attempt);
        }
        // at rest: money on a booking that will not get its call went back
        if (faults_is_dead(w->status) && !strcmp(w->pstatus, "paid"))
            faults_violation(r, false, "booking %s is %s but its payment is still paid (no refund begun)", w->id,
                             w->status);
        if (!strcmp(w->pstatus, "refund_pending") && stripe && !refund)
            faults_violation(r, false, "booking %s: refund_pending, but Stripe never received a refund", w->id);
        if (!strcmp(w->pstatus, "refund_failed"))
            faults_violation(r, false, "booking %s: its refund failed", w->id);
        if ((!strcmp(w->pstatus, "paid") || money_back) && (!strcmp(w->status, "pending") || !strcmp(w->status, "pending_payment")))
            faults_violation(r, false, "booking %s is %s with its payment %s", w->id, w->status, w->pstatus);
    }

    if (o->quiet) {
        // money at the providers that we do not know about
        json_array_foreach(json_object_get(sessions_doc, "sessions"), i, x) {
            if (strcmp(faults_jstr(x, "payment_status"), "paid") != 0) continue;
            const faults_row_t *w = faults_index_get(&by_id, faults_jstr(x, "client_reference_id"));
            if (!w || !strcmp(w->pstatus, "pending") || !strcmp(w->pstatus, "failed") || !strcmp(w->pstatus, "expired"))
                faults_violation(r, false, "Stripe session %s was paid; booking %s has payment %s", faults_jstr(x, "id"),
                                 faults_jstr(x, "client_reference_id"), w ? w->pstatus : "(no booking)");
        }
        json_array_foreach(json_object_get(invoices_doc, "invoices"), i, x) {
            const char *s = faults_jstr(x, "status");
            if (strcmp(s, "paid") != 0 && strcmp(s, "paid_over") != 0) continue;
            const faults_row_t *w = faults_index_get(&by_id, faults_jstr(x, "order_id"));
            if (!w || !strcmp(w->pstatus, "pending") || !strcmp(w->pstatus, "failed") || !strcmp(w->pstatus, "expired"))
                faults_violation(r, false, "Cryptomus invoice %s was paid; booking %s has payment %s",
                                 faults_jstr(x, "uuid"), faults_jstr(x, "order_id"), w ? w->pstatus : "(no booking)");
        }
    }

    // 6. what the load was told
    for (size_t k = 0; k < nmade; k++) {
        const faults_booking_t *b = &made[k];
        if (b->status == 201 && !faults_index_get(&by_id, b->id))
            faults_violation(r, true, "booking %s was answered 201 but is not in the database", b->id);
        if (o->quiet && b->status == 502) {
            const faults_row_t *w = faults_index_get(&by_phone, b->phone);
            if (!w || strcmp(w->status, "payment_failed") != 0)
                faults_violation(r, false, "a booking answered 502 is %s, not payment_failed", w ? w->status : "missing");
        }
    }

    free(made);
    faults_index_free(&by_id);
    faults_index_free(&by_phone);
    faults_index_free(&stored);
    faults_index_free(&known);
    faults_index_free(&active);
    faults_index_free(&sessions);
    faults_index_free(&invoices);
    faults_index_free(&refunds);
    faults_strs_free(&stored_s);
    faults_strs_free(&known_s);
    faults_strs_free(&active_s);
    free(R.rows);
    json_decref(webhooks);
    json_decref(calls_doc);
    json_decref(sessions_doc);
    json_decref(refunds_doc);
    json_decref(invoices_doc);
    return r->hard + r->soft;
}

static inline void faults_report_print(const char *scenario, const faults_report_t *r) {
    printf("[faults] %s: %d bookings (", scenario, r->bookings);
    for (int s = 0, first = 1; s < 10; s++)
        if (r->by_status[s]) {
            printf("%s%s %d", first ? "" : ", ", faults_statuses[s], r->by_status[s]);
            first = 0;
        }
    printf("); %d final, %d legitimately waiting\n", r->final, r->waiting);
    printf("[faults] %s: %d payments (paid %d, refunded %d, refund pending %d, refund required %d); "
           "%d refunds at Stripe\n",
           scenario, r->payments, r->paid, r->refunded, r->refund_pending, r->refund_required, r->stripe_refunds);
    printf("[faults] %s: VAPI %d calls for %d bookings (%d bookings called more than once, by retries)\n", scenario,
           r->vapi_calls, r->vapi_bookings, r->vapi_multi_calls);
    printf("[faults] %s: webhooks (events / deliveries / non-2xx):", scenario);
    for (int p = 0; p < 3; p++)
        printf(" %s %d/%d/%d", faults_wh_providers[p], r->wh_events[p], r->wh_deliveries[p], r->wh_non2xx[p]);
    printf("; %d events in webhook_events\n", r->stored_events);
    fflush(stdout);
}

// Fails the test at once on a hard violation; otherwise repeats the check until nothing is left
// or timeout_ms passes (then fails, listing what is left). Prints the numbers.
static inline void faults_converge(faults_stack_t *st, faults_load_t *load, const char *scenario, int timeout_ms,
                                   faults_report_t *out) {
    int64_t start = harness_now_ms(), deadline = start + timeout_ms;
    faults_check_opts_t o = {.quiet = true, .load = load};
    for (;;) {
        faults_report_t r;
        faults_check(st, &o, &r);
        bool done = r.hard + r.soft == 0;
        if (r.hard || done || harness_now_ms() >= deadline) {
            faults_report_print(scenario, &r);
            if (!done) {
                printf("[faults] %s: %d violation(s) that must never happen, %d still there after %lld ms:\n%s",
                       scenario, r.hard, r.soft, (long long)(harness_now_ms() - start), r.text.p ? r.text.p : "");
                fflush(stdout);
            } else {
                printf("[faults] %s: every invariant holds (at rest after %lld ms)\n", scenario,
                       (long long)(harness_now_ms() - start));
                fflush(stdout);
            }
            if (out) *out = r;
            else faults_report_free(&r);
            if (!done) fail_msg("%s: the invariants do not hold (see above)", scenario);
            return;
        }
        faults_report_free(&r);
        harness_sleep_ms(1000);
    }
}

// The always-true part, at any moment (during load, right after a restart). Fails on a violation.
static inline void faults_assert_always(faults_stack_t *st, faults_load_t *load, const char *when) {
    faults_check_opts_t o = {.quiet = false, .load = load};
    faults_report_t r;
    faults_check(st, &o, &r);
    if (r.hard) {
        printf("[faults] %s: %d violation(s) that must never happen:\n%s", when, r.hard, r.text.p ? r.text.p : "");
        fflush(stdout);
        faults_report_free(&r);
        fail_msg("%s: an invariant broke", when);
    }
    faults_report_free(&r);
}


// ---- what every scenario's set-up, tear-down and main share ---------------------------------------

// The watchdog (watchdog_s), then the stack; on failure everything started is stopped again.
static inline int faults_setup_stack(faults_stack_t *stack, const faults_opts_t *o, long watchdog_s) {
    faults_watchdog_arm(watchdog_s);
    if (faults_stack_start(stack, o) != 0) {
        faults_stack_stop(stack);
        return -1;
    }
    return 0;
}

static inline int faults_teardown_stack(faults_stack_t *stack, faults_load_t *load) {
    faults_load_free(load);
    return faults_stack_stop(stack);
}

// A scenario's main(): the environment captured, curl set up, the group run.
static inline int faults_run_group(const char *name, const struct CMUnitTest *tests, size_t count,
                                   CMFixtureFunction setup, CMFixtureFunction teardown) {
    faults_env_capture();
    curl_global_init(CURL_GLOBAL_DEFAULT);
    int failed = _cmocka_run_group_tests(name, tests, count, setup, teardown);
    curl_global_cleanup();
    return failed;
}

#endif
