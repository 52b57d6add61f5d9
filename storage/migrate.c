// storage/migrate.c — applies the embedded migrations (see migrate.h).
//
// Safety comes from a session-level advisory lock on a fixed key, held from before the first read
// of schema_migrations until after the last migration committed: two migrators on the same database
// (sweetyd starting on two hosts, sweetyctl migrate run twice) queue on the lock, and the second
// then sees every version recorded and applies nothing. Each migration and its schema_migrations
// row commit together, so a failed migration leaves nothing behind and is retried next time.
// Advisory locks are per database, so migrators of different databases never wait for each other.
//
// If the connection drops while the lock is held, the server releases the lock; db_t would
// reconnect silently on the next statement, so every step first checks that the connection is
// still the one that took the lock.
#include "storage/migrate.h"

#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"

#define MIGRATE_MIN_SERVER_VERSION 150000

extern const migration_t sweety_embedded_migrations[];
extern const size_t sweety_embedded_migrations_count;

const migration_t *migrate_embedded(size_t *count) {
    if (count) *count = sweety_embedded_migrations_count;
    return sweety_embedded_migrations;
}

typedef struct {
    db_t *db;
    const logger_t *lg;
    uint64_t conn_generation;   // db_reconnects() when the lock was taken
    char *err;
    size_t errlen;
} migrator_t;

static int fail(migrator_t *m, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(migrator_t *m, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    if (m->err && m->errlen) vsnprintf(m->err, m->errlen, fmt, ap);
    va_end(ap);
    log_error(m->lg, "migrate.failed", "error=\"%s\"", m->err ? m->err : "");
    return -1;
}

static bool same_connection(migrator_t *m) {
    return db_is_up(m->db) && db_reconnects(m->db) == m->conn_generation;
}

// 1-based line of a 1-based character position in UTF-8 text, 0 if unknown.
static int line_of(const char *text, size_t len, int position) {
    if (position <= 0) return 0;
    int line = 1, chars = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)text[i];
        if ((c & 0xC0) == 0x80) continue;
        if (++chars >= position) return line;
        if (c == '\n') line++;
    }
    return line;
}

static int ensure_table(migrator_t *m) {
    PGresult *res = db_exec(m->db, "SELECT to_regclass('schema_migrations') IS NOT NULL", NULL);
    if (!res) return fail(m, "cannot look for schema_migrations: %s", db_last_error(m->db, NULL));
    bool exists = PQntuples(res) == 1 && strcmp(PQgetvalue(res, 0, 0), "t") == 0;
    PQclear(res);
    if (exists) return 0;
    if (db_begin(m->db) != 0) return fail(m, "cannot begin: %s", db_last_error(m->db, NULL));
    if (db_command(m->db,
                   "CREATE TABLE schema_migrations ("
                   " version integer PRIMARY KEY,"
                   " name text NOT NULL,"
                   " checksum text NOT NULL,"
                   " applied_at timestamptz NOT NULL DEFAULT now());"
                   "ALTER TABLE schema_migrations ENABLE ROW LEVEL SECURITY") != 0 ||
        db_commit(m->db) != 0) {
        db_rollback(m->db);
        return fail(m, "cannot create schema_migrations: %s", db_last_error(m->db, NULL));
    }
    log_info(m->lg, "migrate.created_table", "table=schema_migrations");
    return 0;
}

static const migration_t *find_embedded(int version) {
    for (size_t i = 0; i < sweety_embedded_migrations_count; i++)
        if (sweety_embedded_migrations[i].version == version) return &sweety_embedded_migrations[i];
    return NULL;
}

// Reads schema_migrations, checks every recorded checksum, and marks in `done` (indexed like the
// embedded table) the migrations already applied.
static int check_applied(migrator_t *m, bool *done) {
    PGresult *res = db_exec(m->db, "SELECT version, checksum FROM schema_migrations ORDER BY version", NULL);
    if (!res) return fail(m, "cannot read schema_migrations: %s", db_last_error(m->db, NULL));
    int rc = 0;
    for (int r = 0; r < PQntuples(res) && rc == 0; r++) {
        int version = atoi(PQgetvalue(res, r, 0));
        const char *checksum = PQgetvalue(res, r, 1);
        const migration_t *mg = find_embedded(version);
        if (!mg) {
            log_warn(m->lg, "migrate.unknown_version",
                     "version=%d message=\"applied by a newer binary; left alone\"", version);
            continue;
        }
        if (strcmp(mg->checksum, checksum) != 0) {
            rc = fail(m,
                      "migration %04d_%s was applied with checksum %.12s but this binary has %.12s: "
                      "an applied migration must never be edited",
                      mg->version, mg->name, checksum, mg->checksum);
            break;
        }
        done[mg - sweety_embedded_migrations] = true;
    }
    PQclear(res);
    return rc;
}

static int apply_one(migrator_t *m, const migration_t *mg) {
    if (!same_connection(m)) return fail(m, "connection lost while migrating; nothing more applied");
    int64_t started = util_monotonic_ms();
    if (db_begin(m->db) != 0)
        return fail(m, "migration %04d_%s: cannot begin: %s", mg->version, mg->name, db_last_error(m->db, NULL));
    // A statement_timeout meant for the application (ALTER ROLE ... SET) must not cut a migration.
    if (db_command(m->db, "SET LOCAL statement_timeout = 0") != 0) {
        db_rollback(m->db);
        return fail(m, "migration %04d_%s: %s", mg->version, mg->name, db_last_error(m->db, NULL));
    }
    char sqlstate[6];
    PGresult *res = db_exec(m->db, mg->sql, sqlstate);
    if (!res) {
        int pos = 0;
        const char *msg = db_last_error(m->db, &pos);
        int line = line_of(mg->sql, mg->sql_len, pos);
        int rc = line > 0 ? fail(m, "migration %04d_%s failed at line %d: %s (SQLSTATE %s)", mg->version,
                                 mg->name, line, msg, sqlstate)
                          : fail(m, "migration %04d_%s failed: %s (SQLSTATE %s)", mg->version, mg->name,
                                 msg, sqlstate);
        db_rollback(m->db);
        return rc;
    }
    PQclear(res);
    char version[16];
    snprintf(version, sizeof version, "%d", mg->version);
    const char *params[] = {version, mg->name, mg->checksum};
    res = db_exec_prepared(m->db, "migrate_record",
                           "INSERT INTO schema_migrations (version, name, checksum, applied_at) "
                           "VALUES ($1::integer, $2, $3, now())",
                           3, params, NULL);
    if (!res) {
        int rc = fail(m, "migration %04d_%s: cannot record it: %s", mg->version, mg->name,
                      db_last_error(m->db, NULL));
        db_rollback(m->db);
        return rc;
    }
    PQclear(res);
    if (!same_connection(m) || db_commit(m->db) != 0)
        return fail(m, "migration %04d_%s: commit failed: %s", mg->version, mg->name, db_last_error(m->db, NULL));
    log_info(m->lg, "migrate.applied", "version=%d name=%s checksum=%.12s ms=%lld", mg->version, mg->name,
             mg->checksum, (long long)(util_monotonic_ms() - started));
    return 0;
}

static int run_locked(migrator_t *m, int *applied) {
    if (ensure_table(m) != 0) return -1;
    size_t n = sweety_embedded_migrations_count;
    bool *done = calloc(n ? n : 1, sizeof *done);
    if (!done) return fail(m, "out of memory");
    int rc = check_applied(m, done);
    int count = 0;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        if (done[i]) continue;
        rc = apply_one(m, &sweety_embedded_migrations[i]);
        if (rc == 0) count++;
    }
    free(done);
    if (rc == 0) *applied = count;
    return rc;
}

int migrate_apply(db_t *db, const logger_t *lg, int *applied, char *err, size_t errlen) {
    assert(db && lg);
    for (size_t i = 1; i < sweety_embedded_migrations_count; i++)
        assert(sweety_embedded_migrations[i - 1].version < sweety_embedded_migrations[i].version);
    migrator_t m = {.db = db, .lg = lg, .err = err, .errlen = errlen};
    if (err && errlen) err[0] = '\0';

    if (db_ensure(db) != 0) return fail(&m, "database unavailable: %s", db_last_error(db, NULL));
    int server = PQserverVersion(db_conn(db));
    if (server < MIGRATE_MIN_SERVER_VERSION)
        return fail(&m, "PostgreSQL 15 or newer is required (server version %d)", server);

    int64_t waited = util_monotonic_ms();
    PGresult *res = db_exec(db, "SELECT pg_advisory_lock(" MIGRATE_LOCK_KEY ")", NULL);
    if (!res) return fail(&m, "cannot take the migration lock: %s", db_last_error(db, NULL));
    PQclear(res);
    m.conn_generation = db_reconnects(db);
    waited = util_monotonic_ms() - waited;
    if (waited > 100) log_info(lg, "migrate.lock_waited", "ms=%lld", (long long)waited);

    int count = 0;
    int rc = run_locked(&m, &count);

    if (same_connection(&m)) {
        res = db_exec(db, "SELECT pg_advisory_unlock(" MIGRATE_LOCK_KEY ")", NULL);
        PQclear(res);   // on failure the lock goes with the session
    }
    if (rc != 0) return -1;
    log_info(lg, "migrate.done", "applied=%d known=%zu", count, sweety_embedded_migrations_count);
    if (applied) *applied = count;
    return 0;
}
