// tests/integration/storage_fixture.h — what the storage query tests (test_dispatch_storage.c,
// test_storage_bookings.c) share, header-only so that tests/CMakeLists.txt needs no new source: a
// fresh, migrated database per test on the shared test cluster, SQL helpers that fail the test on
// an error, and forked workers, each with its own connection, released together through a pipe.
//
// Include after <cmocka.h> (and the standard headers it needs).
#ifndef SWEETY_TESTS_INTEGRATION_STORAGE_FIXTURE_H
#define SWEETY_TESTS_INTEGRATION_STORAGE_FIXTURE_H

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/log.h"
#include "storage/db.h"
#include "storage/migrate.h"
#include "tests/harness/harness.h"

static const logger_t LG = {SLOG_ERROR, "test"};

typedef struct {
    char url[512];
    db_t *db;
    int phones;   // numbers handed out by next_phone
    int events;
    int calls;
} fx_t;

// ---- database ----------------------------------------------------------------------------------

static inline db_t *connect_url(const char *url) {
    db_t *db = db_new(url, &LG);
    assert_non_null(db);
    assert_int_equal(db_wait(db, 10000), 0);
    return db;
}

// A new fixture on a fresh database named after `prefix`, migrated to the latest version.
static inline fx_t *fixture_open(const char *prefix) {
    fx_t *fx = calloc(1, sizeof *fx);
    assert_non_null(fx);
    assert_int_equal(harness_pg_create_db(prefix, fx->url, sizeof fx->url), 0);
    fx->db = connect_url(fx->url);
    char err[512] = "";
    if (migrate_apply(fx->db, &LG, NULL, err, sizeof err) != 0) fail_msg("migrate_apply: %s", err);
    return fx;
}

static inline int teardown(void **state) {
    fx_t *fx = *state;
    db_destroy(&fx->db);
    free(fx);
    return 0;
}

static inline void exec_ok(db_t *db, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static inline void exec_ok(db_t *db, const char *fmt, ...) {
    char sql[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(sql, sizeof sql, fmt, ap);
    va_end(ap);
    if (db_command(db, sql) != 0) fail_msg("statement failed: %s: %s", sql, db_last_error(db, NULL));
}

static inline char *query1(db_t *db, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
// First column of the first row, malloc'ed ("" when there is no row or it is NULL).
static inline char *query1(db_t *db, const char *fmt, ...) {
    char sql[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(sql, sizeof sql, fmt, ap);
    va_end(ap);
    PGresult *res = db_exec(db, sql, NULL);
    if (!res) fail_msg("query failed: %s: %s", sql, db_last_error(db, NULL));
    char *v = strdup(PQntuples(res) > 0 && PQnfields(res) > 0 ? PQgetvalue(res, 0, 0) : "");
    PQclear(res);
    return v;
}

#define query_int(db, ...)                    \
    ({                                        \
        char *v_ = query1((db), __VA_ARGS__); \
        long long n_ = atoll(v_);             \
        free(v_);                             \
        n_;                                   \
    })

#define assert_query_str(db, want, ...)       \
    do {                                      \
        char *v_ = query1((db), __VA_ARGS__); \
        assert_string_equal(v_, (want));      \
        free(v_);                             \
    } while (0)

// ---- forked workers ------------------------------------------------------------------------------

typedef struct {
    int rc;      // 0 (STORE_OK) when every check in the child held
    int value;
    char why[120];
} child_result_t;

typedef child_result_t (*child_fn_t)(db_t *db, int index, void *arg);
typedef void (*sample_fn_t)(fx_t *fx, void *arg);

// Runs fn in n child processes, each with its own connection, all released at once after every
// child has connected; while they run, sample(fx, arg) (when not NULL) is called every few
// milliseconds. Results in out[0..n-1]; a child without a connection reports rc -1
// (STORE_ERR_DB).
static inline void run_concurrently(fx_t *fx, int n, child_fn_t fn, void *arg, sample_fn_t sample,
                                    child_result_t *out) {
    int ready[2], go[2], result[2];
    assert_int_equal(pipe(ready), 0);
    assert_int_equal(pipe(go), 0);
    assert_int_equal(pipe(result), 0);
    pid_t pids[64];
    assert_true(n <= 64);
    for (int i = 0; i < n; i++) {
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            close(ready[0]);
            close(go[1]);
            close(result[0]);
            db_t *db = db_new(fx->url, &LG);
            char b = db && db_wait(db, 10000) == 0 ? 'r' : 'x';
            if (write(ready[1], &b, 1) != 1) _exit(3);
            if (read(go[0], &b, 1) != 0) _exit(4);   // EOF: the parent closed the pipe, go
            struct {
                int index;
                child_result_t r;
            } msg = {i, {-1, 0, "no connection"}};
            if (db) msg.r = fn(db, i, arg);
            db_destroy(&db);
            if (write(result[1], &msg, sizeof msg) != (ssize_t)sizeof msg) _exit(5);
            _exit(0);
        }
        pids[i] = pid;
    }
    close(ready[1]);
    close(go[0]);
    close(result[1]);
    for (int i = 0; i < n; i++) {
        char b = 0;
        assert_int_equal(read(ready[0], &b, 1), 1);
        assert_int_equal(b, 'r');
    }
    close(go[1]);   // every child's read() returns at once
    int running = n;
    int64_t deadline = harness_now_ms() + 120000;
    while (running > 0) {
        for (int i = 0; i < n; i++) {
            if (pids[i] <= 0) continue;
            int status = 0;
            pid_t got = waitpid(pids[i], &status, WNOHANG);
            if (got == pids[i]) {
                assert_true(WIFEXITED(status));
                assert_int_equal(WEXITSTATUS(status), 0);
                pids[i] = 0;
                running--;
            }
        }
        if (sample) sample(fx, arg);
        if (harness_now_ms() > deadline) fail_msg("workers did not finish");
        if (running > 0) harness_sleep_ms(3);
    }
    for (int i = 0; i < n; i++) {
        struct {
            int index;
            child_result_t r;
        } msg;
        assert_int_equal(read(result[0], &msg, sizeof msg), (ssize_t)sizeof msg);
        assert_true(msg.index >= 0 && msg.index < n);
        out[msg.index] = msg.r;
    }
    close(ready[0]);
    close(result[0]);
}

#endif
