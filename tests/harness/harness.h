// tests/harness/harness.h — what integration tests need to drive real processes: a PostgreSQL
// database of their own, free ports, child processes with captured output, HTTP requests.
//
// scripts/test starts one private PostgreSQL cluster for the whole run and exports
// SWEETY_TEST_PG_HOST (socket directory), SWEETY_TEST_PG_PORT and SWEETY_TEST_PG_USER. Tests that
// must stop PostgreSQL start a private cluster of their own (harness_pg_cluster_*), never the shared one.
#ifndef SWEETY_HARNESS_H
#define SWEETY_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

// ---- databases -------------------------------------------------------------------------------
// Creates a fresh database "<prefix>_<pid>_<n>" on the shared test cluster and writes its libpq URL.
// 0 or -1 (message on stderr, e.g. when the SWEETY_TEST_PG_* variables are missing).
int harness_pg_create_db(const char *prefix, char *url, size_t urlsize);
// Runs one SQL statement on `url`; when `out` is given, the first column of the first row is
// copied there ("" when no row). 0 or -1.
int harness_pg_query(const char *url, const char *sql, char *out, size_t outsize);

// A private cluster (initdb in a temporary folder owned by an unprivileged user, own port).
typedef struct harness_pg_cluster_t harness_pg_cluster_t;
harness_pg_cluster_t *harness_pg_cluster_new(void);         // initdb + start; NULL on failure
int harness_pg_cluster_stop(harness_pg_cluster_t *self);    // pg_ctl stop -m fast
int harness_pg_cluster_start(harness_pg_cluster_t *self);   // pg_ctl start (same port)
// URL of database "postgres" on it, or of a database created with harness_pg_cluster_create_db.
int harness_pg_cluster_create_db(harness_pg_cluster_t *self, const char *name, char *url, size_t urlsize);
void harness_pg_cluster_destroy(harness_pg_cluster_t **self_p);   // stop + remove the folder

// ---- files and ports -------------------------------------------------------------------------
// Creates a temporary folder (mkdtemp under $TMPDIR or /tmp) and writes its path. 0 or -1.
int harness_tmpdir(char *path, size_t size);
void harness_rmtree(const char *path);
int harness_free_port(void);                                 // a free TCP port on 127.0.0.1
int harness_write_file(const char *path, const char *content);
char *harness_read_file(const char *path);                   // malloc'ed, NULL if unreadable
// Path of a built program: "$SWEETY_BIN_DIR/<name>" (SWEETY_BIN_DIR is set by ctest). 0 or -1.
int harness_bin_path(const char *name, char *path, size_t size);

// ---- child processes -------------------------------------------------------------------------
typedef struct harness_proc_t harness_proc_t;
// Starts argv[0] with argv, the current environment plus `env` ("K=V" strings, NULL-terminated,
// may be NULL). stdout and stderr both go to `log_path` (appended). NULL on failure.
harness_proc_t *harness_proc_spawn(const char *const *argv, const char *const *env, const char *log_path);
pid_t harness_proc_pid(const harness_proc_t *self);
int harness_proc_kill(harness_proc_t *self, int sig);
// Waits up to timeout_ms for exit. Returns 0 and the wait status in *status when it exited, -1 on
// timeout (the process keeps running).
int harness_proc_wait(harness_proc_t *self, int timeout_ms, int *status);
// Kills (SIGKILL) if still running, reaps, frees.
void harness_proc_destroy(harness_proc_t **self_p);
// Runs a program to completion (timeout_ms), capturing stdout into *out (malloc'ed, may be NULL)
// and stderr into *err (malloc'ed, may be NULL). Returns the exit code, or -1 on failure/timeout.
int harness_run(const char *const *argv, const char *const *env, int timeout_ms, char **out, char **err);

// ---- HTTP -------------------------------------------------------------------------------------
typedef struct {
    long status;       // 0 when the request failed
    char *body;        // malloc'ed, NUL-terminated
    size_t body_len;
    char *headers;     // raw response headers, malloc'ed
} harness_http_t;
// method "GET"/"POST"; body may be NULL; headers NULL-terminated "Name: value" list or NULL.
int harness_http(const char *method, const char *url, const char *body, const char *const *headers,
                 harness_http_t *resp);
void harness_http_clear(harness_http_t *resp);
// Polls GET url until it answers `want_status` or timeout_ms passes. 0 or -1.
int harness_http_wait_status(const char *url, long want_status, int timeout_ms);

// ---- waiting ----------------------------------------------------------------------------------
int64_t harness_now_ms(void);   // monotonic
// Sleeps a short step; used only inside wait-for-condition loops.
void harness_sleep_ms(int ms);

#endif
