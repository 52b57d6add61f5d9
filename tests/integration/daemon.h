// tests/integration/daemon.h — starts the real sweetyd for a test: its own database, port, trace
// endpoint and configuration file in a temporary folder. Header-only helpers shared by the
// integration tests (each test file is its own program).
#ifndef SWEETY_TEST_DAEMON_H
#define SWEETY_TEST_DAEMON_H

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/harness/harness.h"

typedef struct {
    char dir[512];
    char conf[600];
    char log[600];
    char base_url[64];
    char db_url[512];
    int port;
    harness_proc_t *proc;
} test_daemon_t;

// Writes the configuration for a daemon on db_url (NULL: a fresh database on the shared cluster).
// `extra` is appended to the file (more [sections]) and may be NULL.
static inline int test_daemon_prepare(test_daemon_t *d, const char *db_url, const char *extra) {
    memset(d, 0, sizeof *d);
    if (harness_tmpdir(d->dir, sizeof d->dir) != 0) return -1;
    if (db_url)
        snprintf(d->db_url, sizeof d->db_url, "%s", db_url);
    else if (harness_pg_create_db("sweety", d->db_url, sizeof d->db_url) != 0)
        return -1;
    d->port = harness_free_port();
    snprintf(d->conf, sizeof d->conf, "%s/sweetyd.conf", d->dir);
    snprintf(d->log, sizeof d->log, "%s/sweetyd.log", d->dir);
    snprintf(d->base_url, sizeof d->base_url, "http://127.0.0.1:%d", d->port);
    char text[4096];
    snprintf(text, sizeof text,
             "[db]\nurl = %s\n"
             "[http]\nlisten = 127.0.0.1:%d\npublic_url = %s\n"
             "[log]\nlevel = debug\n"
             "[security]\nmaster_key = MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\n"
             "token_secret = test-token-secret-0123456789abcdef\n"
             "[trace]\nendpoint = ipc://%s/trace\n%s",
             d->db_url, d->port, d->base_url, d->dir, extra ? extra : "");
    return harness_write_file(d->conf, text);
}

static inline int test_daemon_start(test_daemon_t *d) {
    char bin[512];
    if (harness_bin_path("sweetyd", bin, sizeof bin) != 0) return -1;
    const char *argv[] = {bin, "-c", d->conf, NULL};
    d->proc = harness_proc_spawn(argv, NULL, d->log);
    if (!d->proc) return -1;
    char url[128];
    snprintf(url, sizeof url, "%s/healthz", d->base_url);
    if (harness_http_wait_status(url, 200, 60000) != 0) {
        char *log = harness_read_file(d->log);
        fprintf(stderr, "sweetyd did not become healthy; its log:\n%s\n", log ? log : "(none)");
        free(log);
        return -1;
    }
    return 0;
}

// SIGTERM, then waits up to timeout_ms. Returns the exit code, or -1 if it did not exit normally.
static inline int test_daemon_stop(test_daemon_t *d, int timeout_ms) {
    if (!d->proc) return -1;
    harness_proc_kill(d->proc, SIGTERM);
    int status = 0;
    int rc = harness_proc_wait(d->proc, timeout_ms, &status);
    harness_proc_destroy(&d->proc);
    if (rc != 0) return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static inline void test_daemon_cleanup(test_daemon_t *d) {
    harness_proc_destroy(&d->proc);
    if (getenv("SWEETY_TEST_KEEP")) return;
    if (d->dir[0]) harness_rmtree(d->dir);
}

// Runs sweetyctl with this daemon's configuration. Returns its exit code; output in *out/*err.
static inline int test_daemon_ctl(test_daemon_t *d, const char *const *args, char **out, char **err) {
    char bin[512];
    if (harness_bin_path("sweetyctl", bin, sizeof bin) != 0) return -1;
    const char *argv[32] = {bin, "-c", d->conf};
    int n = 3;
    for (int i = 0; args[i] && n < 31; i++) argv[n++] = args[i];
    argv[n] = NULL;
    return harness_run(argv, NULL, 60000, out, err);
}

#endif
