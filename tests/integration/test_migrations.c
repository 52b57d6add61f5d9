// tests/integration/test_migrations.c — the schema migrations, the plans queries and the db_t
// connection object, against real PostgreSQL databases (a fresh database per test on the shared
// test cluster; one test starts a private cluster to prove that roles, which are cluster-wide, can
// be created by two databases' migrations at once).
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "storage/call_events.h"
#include "storage/db.h"
#include "storage/migrate.h"
#include "storage/plans.h"
#include "tests/harness/harness.h"

static const logger_t LG = {SLOG_WARN, "test"};

static const char *const TABLES[] = {
    "schema_migrations", "users", "plans", "bookings", "booking_events", "payments", "vapi_accounts",
    "vapi_agents", "call_queue", "active_calls", "call_events", "webhook_events", "idempotency_keys",
};

// ---- helpers -----------------------------------------------------------------------------------

// First column of the first row, malloc'ed ("" when there is no row); NULL when the query failed.
static char *query1(db_t *db, const char *sql) {
    PGresult *res = db_exec(db, sql, NULL);
    if (!res) return NULL;
    char *v = strdup(PQntuples(res) > 0 && PQnfields(res) > 0 ? PQgetvalue(res, 0, 0) : "");
    PQclear(res);
    return v;
}

static long long query_int(db_t *db, const char *sql) {
    char *v = query1(db, sql);
    if (!v) fail_msg("query failed: %s: %s", sql, db_last_error(db, NULL));
    long long n = atoll(v);
    free(v);
    return n;
}

static void exec_ok(db_t *db, const char *sql) {
    if (db_command(db, sql) != 0) fail_msg("statement failed: %s: %s", sql, db_last_error(db, NULL));
}

static void exec_fails_with(db_t *db, const char *sql, const char *want_sqlstate) {
    char sqlstate[6];
    PGresult *res = db_exec(db, sql, sqlstate);
    if (res) {
        PQclear(res);
        fail_msg("statement should have failed with %s: %s", want_sqlstate, sql);
    }
    assert_string_equal(sqlstate, want_sqlstate);
}

static db_t *connect_url(const char *url) {
    db_t *db = db_new(url, &LG);
    assert_non_null(db);
    assert_int_equal(db_wait(db, 10000), 0);
    return db;
}

static db_t *fresh_db(char *url, size_t size) {
    assert_int_equal(harness_pg_create_db("migr", url, size), 0);
    return connect_url(url);
}

static size_t embedded_count(void) {
    size_t n = 0;
    migrate_embedded(&n);
    return n;
}

static void migrate_ok(db_t *db, int want_applied) {
    char err[512] = "";
    int applied = -1;
    int rc = migrate_apply(db, &LG, &applied, err, sizeof err);
    if (rc != 0) fail_msg("migrate_apply: %s", err);
    if (want_applied >= 0) assert_int_equal(applied, want_applied);
}

static db_t *migrated_db(char *url, size_t size) {
    db_t *db = fresh_db(url, size);
    migrate_ok(db, (int)embedded_count());
    return db;
}

// Everything about the schema that a second migration must leave alone, as sorted text lines.
static char *schema_dump(db_t *db) {
    char *dump = query1(db,
        "SELECT string_agg(line, E'\\n' ORDER BY line) FROM ("
        " SELECT format('col %s.%s %s %s %s', table_name, column_name, udt_name, is_nullable, column_default) AS line"
        "   FROM information_schema.columns WHERE table_schema = current_schema()"
        " UNION ALL SELECT format('rel %s %s %s %s', relname, relkind, relrowsecurity, relacl)"
        "   FROM pg_class WHERE relnamespace = current_schema()::regnamespace"
        " UNION ALL SELECT format('con %s %s', conname, pg_get_constraintdef(oid))"
        "   FROM pg_constraint WHERE connamespace = current_schema()::regnamespace"
        " UNION ALL SELECT format('idx %s', indexdef) FROM pg_indexes WHERE schemaname = current_schema()"
        " UNION ALL SELECT format('pol %s %s %s %s', tablename, policyname, roles, cmd)"
        "   FROM pg_policies WHERE schemaname = current_schema()"
        " UNION ALL SELECT format('trg %s %s', tgrelid::regclass, tgname) FROM pg_trigger WHERE NOT tgisinternal"
        " UNION ALL SELECT format('fn %s %s', proname, md5(prosrc)) FROM pg_proc"
        "   WHERE pronamespace = current_schema()::regnamespace"
        " UNION ALL SELECT format('mig %s %s %s %s', version, name, checksum, applied_at) FROM schema_migrations"
        " UNION ALL SELECT format('plan %s %s %s %s', key, price_cents, duration_seconds, updated_at) FROM plans"
        ") s");
    assert_non_null(dump);
    return dump;
}

// Redirects stderr (fd 2) into a temporary file until capture_end, which returns what was written.
typedef struct {
    int saved;
    char path[64];
} capture_t;

static void capture_start(capture_t *c) {
    snprintf(c->path, sizeof c->path, "/tmp/test_migrations_stderr_XXXXXX");
    int fd = mkstemp(c->path);
    assert_true(fd >= 0);
    fflush(stderr);
    c->saved = dup(STDERR_FILENO);
    assert_true(c->saved >= 0);
    assert_true(dup2(fd, STDERR_FILENO) >= 0);
    close(fd);
}

static char *capture_end(capture_t *c) {
    fflush(stderr);
    dup2(c->saved, STDERR_FILENO);
    close(c->saved);
    char *text = harness_read_file(c->path);
    unlink(c->path);
    assert_non_null(text);
    return text;
}

// A child process that connects, says it is ready, waits for the go, migrates, reports the number
// applied and exits 0 on success.
typedef struct {
    pid_t pid;
    int ready_r, go_w, result_r;
} migrator_child_t;

static void migrator_spawn(const char *url, migrator_child_t *c) {
    int ready[2], go[2], result[2];
    assert_int_equal(pipe(ready), 0);
    assert_int_equal(pipe(go), 0);
    assert_int_equal(pipe(result), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(ready[0]);
        close(go[1]);
        close(result[0]);
        db_t *db = db_new(url, &LG);
        bool ok = db && db_wait(db, 10000) == 0;
        char b = ok ? 'r' : 'x';
        if (write(ready[1], &b, 1) != 1 || read(go[0], &b, 1) != 1) _exit(3);
        int applied = -1;
        char err[512] = "";
        int rc = ok ? migrate_apply(db, &LG, &applied, err, sizeof err) : -1;
        if (rc != 0) fprintf(stderr, "migrator child %d: %s\n", (int)getpid(), err);
        if (write(result[1], &applied, sizeof applied) != (ssize_t)sizeof applied) rc = -1;
        db_destroy(&db);
        _exit(rc == 0 ? 0 : 1);
    }
    close(ready[1]);
    close(go[0]);
    close(result[1]);
    c->pid = pid;
    c->ready_r = ready[0];
    c->go_w = go[1];
    c->result_r = result[0];
}

// Starts every child at once (after all connected); returns the sum of the numbers they applied
// and checks that each exited 0.
static int migrators_run(migrator_child_t *kids, int n, int *max_applied) {
    for (int i = 0; i < n; i++) {
        char b = 0;
        assert_int_equal(read(kids[i].ready_r, &b, 1), 1);
        assert_int_equal(b, 'r');
    }
    for (int i = 0; i < n; i++) assert_int_equal(write(kids[i].go_w, "g", 1), 1);
    int sum = 0;
    *max_applied = 0;
    for (int i = 0; i < n; i++) {
        int status = 0;
        assert_int_equal(waitpid(kids[i].pid, &status, 0), kids[i].pid);
        assert_true(WIFEXITED(status));
        assert_int_equal(WEXITSTATUS(status), 0);
        int applied = -1;
        assert_int_equal(read(kids[i].result_r, &applied, sizeof applied), (ssize_t)sizeof applied);
        sum += applied;
        if (applied > *max_applied) *max_applied = applied;
        close(kids[i].ready_r);
        close(kids[i].go_w);
        close(kids[i].result_r);
    }
    return sum;
}

// ---- migrations --------------------------------------------------------------------------------

static void test_migrate_creates_whole_schema_on_empty_database(void **state) {
    char url[512];
    db_t *db = fresh_db(url, sizeof url);
    size_t n = embedded_count();
    assert_true(n >= 1);
    migrate_ok(db, (int)n);

    char sql[256];
    for (size_t i = 0; i < sizeof TABLES / sizeof TABLES[0]; i++) {
        snprintf(sql, sizeof sql, "SELECT to_regclass('%s') IS NOT NULL", TABLES[i]);
        char *v = query1(db, sql);
        assert_non_null(v);
        if (strcmp(v, "t") != 0) fail_msg("table %s missing", TABLES[i]);
        free(v);
    }
    // Row-level security on every table and partition of the schema, none forgotten.
    assert_int_equal(query_int(db, "SELECT count(*) FROM pg_class WHERE relnamespace = current_schema()::regnamespace"
                                   " AND relkind IN ('r','p') AND NOT relrowsecurity"), 0);
    assert_true(query_int(db, "SELECT count(*) FROM pg_class WHERE relnamespace = current_schema()::regnamespace"
                              " AND relkind IN ('r','p')") >= 13);
    assert_int_equal(query_int(db, "SELECT count(*) FROM schema_migrations"), (long long)n);

    // Four plans, priced and ordered as seeded.
    assert_int_equal(query_int(db, "SELECT count(*) FROM plans"), 4);
    assert_int_equal(query_int(db, "SELECT price_cents FROM plans WHERE key = 'free_trial'"), 0);
    assert_int_equal(query_int(db, "SELECT duration_seconds FROM plans WHERE key = 'free_trial'"), 120);
    assert_int_equal(query_int(db, "SELECT count(*) FROM plans WHERE currency = 'usd'"), 4);

    // Both roles, without login.
    assert_int_equal(query_int(db, "SELECT count(*) FROM pg_roles WHERE rolname IN ('sweety_app','sweety_reporting')"
                                   " AND NOT rolcanlogin"), 2);

    // call_events partitions: this UTC month and two ahead, plus the default one.
    assert_int_equal(query_int(db,
        "SELECT count(*) FROM generate_series(0, 2) AS i JOIN pg_inherits h"
        "  ON h.inhrelid = to_regclass('call_events_' || to_char(date_trunc('month', now() AT TIME ZONE 'UTC')"
        "     + make_interval(months => i), 'YYYYMM'))"
        " WHERE h.inhparent = 'call_events'::regclass"), 3);
    assert_int_equal(query_int(db, "SELECT count(*) FROM pg_inherits WHERE inhparent = 'call_events'::regclass"
                                   " AND inhrelid = 'call_events_default'::regclass"), 1);
    db_destroy(&db);
}

static void test_second_migration_applies_nothing_and_changes_nothing(void **state) {
    char url[512];
    db_t *db = migrated_db(url, sizeof url);
    char *before = schema_dump(db);
    migrate_ok(db, 0);
    db_destroy(&db);
    // A new connection, like a second process.
    db = connect_url(url);
    migrate_ok(db, 0);
    char *after = schema_dump(db);
    assert_string_equal(before, after);
    free(before);
    free(after);
    db_destroy(&db);
}

static void test_concurrent_migrators_both_succeed_and_apply_each_version_once(void **state) {
    char url[512];
    db_t *db = fresh_db(url, sizeof url);
    size_t n = embedded_count();
    migrator_child_t kids[2];
    migrator_spawn(url, &kids[0]);
    migrator_spawn(url, &kids[1]);
    int max_applied = 0;
    int sum = migrators_run(kids, 2, &max_applied);
    assert_int_equal(sum, (int)n);          // one applied everything, the other nothing
    assert_int_equal(max_applied, (int)n);
    assert_int_equal(query_int(db, "SELECT count(*) FROM schema_migrations"), (long long)n);
    assert_int_equal(query_int(db, "SELECT count(DISTINCT version) FROM schema_migrations"), (long long)n);
    assert_int_equal(query_int(db, "SELECT count(*) FROM plans"), 4);
    migrate_ok(db, 0);
    db_destroy(&db);
}

static void test_two_new_databases_of_a_fresh_cluster_migrate_at_once(void **state) {
    // Roles are cluster-wide: on a cluster that has never seen them, both migrations try to create them.
    harness_pg_cluster_t *pg = harness_pg_cluster_new();
    assert_non_null(pg);
    char url_a[512], url_b[512];
    assert_int_equal(harness_pg_cluster_create_db(pg, "sweety_a", url_a, sizeof url_a), 0);
    assert_int_equal(harness_pg_cluster_create_db(pg, "sweety_b", url_b, sizeof url_b), 0);
    migrator_child_t kids[2];
    migrator_spawn(url_a, &kids[0]);
    migrator_spawn(url_b, &kids[1]);
    int max_applied = 0;
    int sum = migrators_run(kids, 2, &max_applied);
    assert_int_equal(sum, 2 * (int)embedded_count());   // different databases: both apply everything
    db_t *db = connect_url(url_b);
    assert_int_equal(query_int(db, "SELECT count(*) FROM pg_roles WHERE rolname IN ('sweety_app','sweety_reporting')"), 2);
    assert_int_equal(query_int(db, "SELECT count(*) FROM plans"), 4);
    db_destroy(&db);
    harness_pg_cluster_destroy(&pg);
}

static void test_tampered_checksum_is_refused(void **state) {
    char url[512];
    db_t *db = migrated_db(url, sizeof url);
    exec_ok(db, "UPDATE schema_migrations SET checksum = repeat('0', 64) WHERE version = 1");
    char err[512] = "";
    int applied = 42;
    assert_int_equal(migrate_apply(db, &LG, &applied, err, sizeof err), -1);
    assert_int_equal(applied, 42);   // untouched on failure
    assert_non_null(strstr(err, "checksum"));
    assert_non_null(strstr(err, "0001_schema"));
    // The refusal released the lock: another session can take it at once.
    db_t *other = connect_url(url);
    char *got = query1(other, "SELECT pg_try_advisory_lock(" MIGRATE_LOCK_KEY ")");
    assert_non_null(got);
    assert_string_equal(got, "t");
    free(got);
    db_destroy(&other);
    db_destroy(&db);
}

static void test_embedded_migrations_carry_sha256_of_their_sql(void **state) {
    size_t n = 0;
    const migration_t *m = migrate_embedded(&n);
    assert_true(n >= 1);
    assert_int_equal(m[0].version, 1);
    assert_string_equal(m[0].name, "schema");
    assert_int_equal(strlen(m[0].checksum), 64);
    assert_int_equal(strlen(m[0].sql), m[0].sql_len);
    assert_non_null(strstr(m[0].sql, "CREATE TABLE bookings"));
    for (size_t i = 1; i < n; i++) assert_true(m[i - 1].version < m[i].version);
}

// ---- plans ---------------------------------------------------------------------------------------

static void assert_plan(const plan_t *p, const char *key, const char *name, int64_t price, int duration, int priority) {
    assert_string_equal(p->key, key);
    assert_string_equal(p->name, name);
    assert_int_equal(p->price_cents, price);
    assert_string_equal(p->currency, "usd");
    assert_int_equal(p->duration_seconds, duration);
    assert_int_equal(p->priority, priority);
}

static void test_plans_list_returns_seeded_plans_in_price_order(void **state) {
    char url[512];
    db_t *db = migrated_db(url, sizeof url);
    plan_t *plans = NULL;
    size_t n = 0;
    assert_int_equal(plans_list(db, &plans, &n), 0);
    assert_int_equal(n, 4);
    assert_plan(&plans[0], "free_trial", "Free trial", 0, 120, 10);
    assert_plan(&plans[1], "standard", "Standard", 1500, 600, 20);
    assert_plan(&plans[2], "extended", "Extended", 2900, 1200, 30);
    assert_plan(&plans[3], "premium", "Premium", 4900, 1800, 40);
    for (size_t i = 0; i < n; i++) assert_null(plans[i].assistant_id);
    assert_true(plans[3].priority > plans[2].priority && plans[2].priority > plans[1].priority &&
                plans[1].priority > plans[0].priority);
    plans_free(&plans, n);
    assert_null(plans);
    db_destroy(&db);
}

static void test_plans_set_changes_given_fields_and_refuses_bad_ones(void **state) {
    char url[512];
    db_t *db = migrated_db(url, sizeof url);

    // A daemon listening for configuration changes hears about it.
    db_t *listener = connect_url(url);
    exec_ok(listener, "LISTEN sweety_config");

    plan_update_t upd = {.set_price = true, .price_cents = 1999, .set_duration = true, .duration_seconds = 900,
                         .assistant_id = "asst_123", .currency = "EUR"};
    assert_int_equal(plans_set(db, "standard", &upd), 0);
    plan_t p;
    assert_int_equal(plans_get(db, "standard", &p), 0);
    assert_int_equal(p.price_cents, 1999);
    assert_int_equal(p.duration_seconds, 900);
    assert_string_equal(p.assistant_id, "asst_123");
    assert_string_equal(p.currency, "eur");
    assert_string_equal(p.name, "Standard");
    plan_clear(&p);

    PGconn *lc = db_conn(listener);
    assert_non_null(lc);
    PGnotify *note = NULL;
    for (int64_t until = harness_now_ms() + 5000; !note && harness_now_ms() < until;) {
        assert_int_equal(PQconsumeInput(lc), 1);
        note = PQnotifies(lc);
        if (!note) harness_sleep_ms(20);
    }
    assert_non_null(note);
    assert_string_equal(note->relname, "sweety_config");
    assert_string_equal(note->extra, "plans");
    PQfreemem(note);
    db_destroy(&listener);

    // Only the assistant, then clearing it: the rest stays.
    plan_update_t only_assistant = {.assistant_id = "asst_456"};
    assert_int_equal(plans_set(db, "premium", &only_assistant), 0);
    assert_int_equal(plans_get(db, "premium", &p), 0);
    assert_string_equal(p.assistant_id, "asst_456");
    assert_int_equal(p.price_cents, 4900);
    plan_clear(&p);
    plan_update_t clear_assistant = {.assistant_id = ""};
    assert_int_equal(plans_set(db, "premium", &clear_assistant), 0);
    assert_int_equal(plans_get(db, "premium", &p), 0);
    assert_null(p.assistant_id);
    plan_clear(&p);

    // Unknown key; values the schema refuses. Nothing changes.
    plan_update_t price = {.set_price = true, .price_cents = 100};
    assert_int_equal(plans_set(db, "gold", &price), -2);
    assert_int_equal(plans_get(db, "gold", &p), -2);
    assert_int_equal(plans_set(db, "free_trial", &price), -3);       // the free trial stays free
    plan_update_t negative = {.set_price = true, .price_cents = -5};
    assert_int_equal(plans_set(db, "extended", &negative), -3);
    plan_update_t zero = {.set_price = true, .price_cents = 0};
    assert_int_equal(plans_set(db, "extended", &zero), -3);          // a paid plan costs something
    plan_update_t huge = {.set_price = true, .price_cents = INT64_C(1) << 40};
    assert_int_equal(plans_set(db, "extended", &huge), -3);
    plan_update_t short_call = {.set_duration = true, .duration_seconds = 5};
    assert_int_equal(plans_set(db, "extended", &short_call), -3);
    plan_update_t bad_currency = {.currency = "dollars"};
    assert_int_equal(plans_set(db, "extended", &bad_currency), -3);
    assert_int_equal(plans_get(db, "extended", &p), 0);
    assert_plan(&p, "extended", "Extended", 2900, 1200, 30);
    plan_clear(&p);
    assert_int_equal(plans_get(db, "free_trial", &p), 0);
    assert_int_equal(p.price_cents, 0);
    plan_clear(&p);

    assert_true(plan_key_valid("premium"));
    assert_false(plan_key_valid("gold"));
    assert_false(plan_key_valid(NULL));
    db_destroy(&db);
}

// ---- roles, row-level security, schema behaviour ------------------------------------------------

static void test_reporting_role_reads_plans_but_not_personal_columns(void **state) {
    char url[512];
    db_t *db = migrated_db(url, sizeof url);
    exec_ok(db, "INSERT INTO users (phone, name) VALUES ('+15551234567', 'Ann')");
    exec_ok(db, "INSERT INTO bookings (user_id, plan, payment_method, message)"
                " SELECT id, 'standard', 'stripe', 'hello' FROM users");

    exec_ok(db, "SET ROLE sweety_reporting");
    exec_fails_with(db, "SELECT phone FROM users", "42501");
    exec_fails_with(db, "SELECT name FROM users", "42501");
    exec_fails_with(db, "SELECT message FROM bookings", "42501");
    exec_fails_with(db, "SELECT * FROM bookings", "42501");
    exec_fails_with(db, "SELECT api_key_enc FROM vapi_accounts", "42501");
    exec_fails_with(db, "SELECT response_body FROM idempotency_keys", "42501");
    exec_fails_with(db, "UPDATE plans SET price_cents = 1", "42501");
    assert_int_equal(query_int(db, "SELECT count(*) FROM plans"), 4);
    assert_int_equal(query_int(db, "SELECT count(*) FROM (SELECT id, plan, status, created_at FROM bookings) b"), 1);
    assert_int_equal(query_int(db, "SELECT count(*) FROM (SELECT booking_id, status, attempt FROM call_queue) q"), 0);
    exec_fails_with(db, "SELECT last_error FROM call_queue", "42501");
    assert_int_equal(query_int(db, "SELECT count(*) FROM webhook_events"), 0);
    exec_ok(db, "RESET ROLE");

    // The application role reads and writes everything, through its policies.
    exec_ok(db, "SET ROLE sweety_app");
    assert_int_equal(query_int(db, "SELECT count(*) FROM users WHERE phone = '+15551234567'"), 1);
    exec_ok(db, "INSERT INTO users (phone, name, email) VALUES ('+15557654321', 'Bob', 'bob@example.com')");
    exec_ok(db, "INSERT INTO webhook_events (provider, event_id, type, outcome) VALUES ('stripe', 'evt_1', 'x', 'applied')");
    exec_fails_with(db, "INSERT INTO webhook_events (provider, event_id, type) VALUES ('stripe', 'evt_1', 'x')", "23505");
    exec_ok(db, "RESET ROLE");
    db_destroy(&db);
}

static void test_booking_status_changes_are_numbered_and_never_go_backwards(void **state) {
    char url[512];
    db_t *db = migrated_db(url, sizeof url);
    exec_ok(db, "SET ROLE sweety_app");
    exec_ok(db, "INSERT INTO users (phone, name) VALUES ('+15551234567', 'Ann')");
    exec_ok(db, "INSERT INTO bookings (id, user_id, plan, payment_method, status_seq)"
                " SELECT '00000000-0000-4000-8000-000000000001', id, 'standard', 'stripe', 77 FROM users");
    const char *steps[] = {"pending_payment", "confirmed", "queued", "initiating", "queued",
                           "initiating", "calling", "completed"};
    char sql[256];
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) {
        snprintf(sql, sizeof sql, "UPDATE bookings SET status = '%s' WHERE id = '00000000-0000-4000-8000-000000000001'",
                 steps[i]);
        exec_ok(db, sql);
    }
    exec_ok(db, "UPDATE bookings SET status = 'completed', call_duration_s = 42"
                " WHERE id = '00000000-0000-4000-8000-000000000001'");   // same status: no new event
    assert_int_equal(query_int(db, "SELECT status_seq FROM bookings"), 9);
    char *history = query1(db, "SELECT string_agg(seq || ':' || status, ',' ORDER BY seq) FROM booking_events");
    assert_non_null(history);
    assert_string_equal(history, "1:pending,2:pending_payment,3:confirmed,4:queued,5:initiating,6:queued,"
                                 "7:initiating,8:calling,9:completed");
    free(history);
    assert_int_equal(query_int(db, "SELECT count(*) FROM booking_events e1 JOIN booking_events e2"
                                   " ON e2.booking_id = e1.booking_id AND e2.seq = e1.seq + 1 WHERE e2.at < e1.at"), 0);

    // A final status never changes; statuses never go backwards apart from a retry.
    exec_fails_with(db, "UPDATE bookings SET status = 'failed'", "SW001");
    exec_ok(db, "INSERT INTO bookings (id, user_id, plan, payment_method, status)"
                " SELECT '00000000-0000-4000-8000-000000000002', id, 'free_trial', 'none', 'queued' FROM users");
    exec_fails_with(db, "UPDATE bookings SET status = 'pending_payment' WHERE id = '00000000-0000-4000-8000-000000000002'",
                    "SW001");
    exec_ok(db, "UPDATE bookings SET status = 'cancelled' WHERE id = '00000000-0000-4000-8000-000000000002'");
    assert_int_equal(query_int(db, "SELECT status_seq FROM bookings WHERE id = '00000000-0000-4000-8000-000000000002'"), 2);

    // A free trial is never paid, a paid plan always is.
    exec_fails_with(db, "INSERT INTO bookings (user_id, plan, payment_method) SELECT id, 'free_trial', 'stripe' FROM users",
                    "23514");
    exec_fails_with(db, "INSERT INTO bookings (user_id, plan, payment_method) SELECT id, 'premium', 'none' FROM users",
                    "23514");
    exec_fails_with(db, "INSERT INTO users (phone, name) VALUES ('5551234567', 'Bad')", "23514");
    exec_ok(db, "RESET ROLE");
    db_destroy(&db);
}

static void test_capacity_counters_stay_within_their_limits(void **state) {
    char url[512];
    db_t *db = migrated_db(url, sizeof url);
    exec_ok(db, "INSERT INTO vapi_accounts (id, name, api_key_enc, api_key_nonce, phone_number_id, max_concurrent)"
                " VALUES ('00000000-0000-4000-8000-0000000000a1', 'main', '\\x01', '\\x02', 'pn_1', 2)");
    exec_ok(db, "INSERT INTO vapi_agents (account_id, plan, max_concurrent)"
                " VALUES ('00000000-0000-4000-8000-0000000000a1', 'standard', 1)");
    exec_ok(db, "UPDATE vapi_accounts SET active_calls = 2");
    exec_fails_with(db, "UPDATE vapi_accounts SET active_calls = 3", "23514");
    exec_fails_with(db, "UPDATE vapi_accounts SET active_calls = -1", "23514");
    exec_ok(db, "UPDATE vapi_agents SET active_calls = 1");
    exec_fails_with(db, "UPDATE vapi_agents SET active_calls = 2", "23514");
    db_destroy(&db);
}

static void test_call_event_partitions_are_made_ahead_and_take_rows_from_default(void **state) {
    char url[512];
    db_t *db = migrated_db(url, sizeof url);
    exec_ok(db, "INSERT INTO users (phone, name) VALUES ('+15551234567', 'Ann')");
    exec_ok(db, "INSERT INTO bookings (id, user_id, plan, payment_method)"
                " SELECT '00000000-0000-4000-8000-000000000001', id, 'standard', 'stripe' FROM users");
    // Now goes to this month's partition; five months ahead has none yet: the default takes it.
    exec_ok(db, "INSERT INTO call_events (booking_id, event_type) VALUES ('00000000-0000-4000-8000-000000000001', 'now')");
    exec_ok(db, "INSERT INTO call_events (booking_id, event_type, event_time) VALUES"
                " ('00000000-0000-4000-8000-000000000001', 'later', now() + interval '5 months')");
    char *where = query1(db, "SELECT tableoid::regclass::text FROM call_events WHERE event_type = 'now'");
    char *expect = query1(db, "SELECT 'call_events_' || to_char(now() AT TIME ZONE 'UTC', 'YYYYMM')");
    assert_string_equal(where, expect);
    free(where);
    free(expect);
    where = query1(db, "SELECT tableoid::regclass::text FROM call_events WHERE event_type = 'later'");
    assert_string_equal(where, "call_events_default");
    free(where);

    int created = -1;
    assert_int_equal(call_events_ensure_partitions(db, 6, &created), 0);
    assert_int_equal(created, 4);   // months 3, 4, 5 and 6
    where = query1(db, "SELECT tableoid::regclass::text FROM call_events WHERE event_type = 'later'");
    expect = query1(db, "SELECT 'call_events_' || to_char((now() + interval '5 months') AT TIME ZONE 'UTC', 'YYYYMM')");
    assert_string_equal(where, expect);
    free(where);
    free(expect);
    assert_int_equal(query_int(db, "SELECT count(*) FROM call_events_default"), 0);
    assert_int_equal(query_int(db, "SELECT count(*) FROM call_events"), 2);
    assert_int_equal(query_int(db, "SELECT count(*) FROM pg_class WHERE relname LIKE 'call_events_2%'"
                                   " AND relkind = 'r' AND NOT relrowsecurity"), 0);
    assert_int_equal(call_events_ensure_partitions(db, 6, &created), 0);
    assert_int_equal(created, 0);

    // The application role may run it too (SECURITY DEFINER); the reporting role may not.
    exec_ok(db, "SET ROLE sweety_app");
    assert_int_equal(call_events_ensure_partitions(db, 7, &created), 0);
    assert_int_equal(created, 1);
    exec_ok(db, "SET ROLE sweety_reporting");
    exec_fails_with(db, "SELECT sweety_ensure_call_event_partitions(8)", "42501");
    exec_ok(db, "RESET ROLE");
    db_destroy(&db);
}

// ---- db_t ------------------------------------------------------------------------------------------

static void test_db_reconnects_and_prepares_again_after_its_backend_is_killed(void **state) {
    char url[512];
    db_t *db = migrated_db(url, sizeof url);
    db_t *admin = connect_url(url);
    plan_t *plans = NULL;
    size_t n = 0;
    assert_int_equal(plans_list(db, &plans, &n), 0);   // "plans_list" prepared on this connection
    plans_free(&plans, n);
    assert_int_equal(db_ping(db), 0);
    assert_int_equal(db_reconnects(db), 0);

    char sql[128];
    snprintf(sql, sizeof sql, "SELECT pg_terminate_backend(%d)", PQbackendPID(db_conn(db)));
    exec_ok(admin, sql);
    assert_int_equal(plans_list(db, &plans, &n), -1);   // the dead connection is noticed...
    assert_false(db_is_up(db));
    assert_int_equal(plans_list(db, &plans, &n), 0);    // ...and replaced, the statement prepared again
    assert_int_equal(n, 4);
    plans_free(&plans, n);
    assert_true(db_is_up(db));
    assert_int_equal(db_reconnects(db), 1);

    // Lost inside a transaction: no statement runs on a new connection until the rollback.
    assert_int_equal(db_begin(db), 0);
    exec_ok(db, "UPDATE plans SET name = 'Changed' WHERE key = 'premium'");
    snprintf(sql, sizeof sql, "SELECT pg_terminate_backend(%d)", PQbackendPID(db_conn(db)));
    exec_ok(admin, sql);
    PGresult *res = db_exec(db, "SELECT 1", NULL);   // the server's goodbye, whatever its SQLSTATE
    assert_null(res);
    exec_fails_with(db, "SELECT 1", "08006");        // not silently run outside the transaction
    exec_fails_with(db, "SELECT 1", "08006");
    assert_int_equal(db_commit(db), -1);
    assert_int_equal(query_int(db, "SELECT count(*) FROM plans WHERE name = 'Changed'"), 0);
    assert_int_equal(db_reconnects(db), 2);

    // A COMMIT that the server turns into a ROLLBACK is a failure.
    assert_int_equal(db_begin(db), 0);
    exec_fails_with(db, "SELECT 1/0", "22012");
    assert_int_equal(db_commit(db), -1);
    assert_int_equal(db_begin(db), 0);
    db_rollback(db);
    assert_int_equal(db_ping(db), 0);

    // Prepared statements dropped behind our back are prepared again.
    exec_ok(db, "DEALLOCATE ALL");
    assert_int_equal(plans_list(db, &plans, &n), 0);
    plans_free(&plans, n);
    assert_int_equal(db_reconnects(db), 2);

    db_disconnect(db);
    assert_false(db_is_up(db));
    assert_null(db_conn(db));
    assert_int_equal(db_ensure(db), 0);
    assert_int_equal(db_reconnects(db), 3);
    db_destroy(&admin);
    db_destroy(&db);
}

static void test_db_unreachable_backs_off_and_never_logs_the_password(void **state) {
    const logger_t lg = {SLOG_DEBUG, "test"};
    capture_t cap;
    capture_start(&cap);
    db_t *db = db_new("postgresql://sweety:s3cretpw@/sweety?host=/nonexistent-sweety-dir&port=1", &lg);
    int64_t t0 = util_monotonic_ms();
    int first = db_ensure(db);
    int again = db_ensure(db);   // inside the backoff: no second attempt
    int waited = db_wait(db, 1300);
    int64_t took = util_monotonic_ms() - t0;
    bool up = db_is_up(db);
    char sqlstate[6] = "x";
    PGresult *res = db_exec(db, "SELECT 1", sqlstate);
    int ping = db_ping(db);
    db_destroy(&db);
    db_t *bad = db_new("postgresql://sweety:s3%zzpw@/sweety", &lg);   // not even a valid URI
    int bad_rc = db_ensure(bad);
    db_destroy(&bad);
    char *log = capture_end(&cap);

    assert_int_equal(first, -1);
    assert_int_equal(again, -1);
    assert_int_equal(waited, -1);
    assert_true(took >= 1300 && took < 4000);
    assert_false(up);
    assert_null(res);
    assert_string_equal(sqlstate, "08006");
    assert_int_equal(ping, -1);
    assert_int_equal(bad_rc, -1);
    // Attempts at 0, 250, 750 ms (then 1750 is past the deadline): three lines, with the delays doubling.
    assert_non_null(strstr(log, "attempt=1 retry_in_ms=250"));
    assert_non_null(strstr(log, "attempt=2 retry_in_ms=500"));
    assert_non_null(strstr(log, "attempt=3 retry_in_ms=1000"));
    assert_null(strstr(log, "attempt=4"));
    assert_non_null(strstr(log, "host=\"/nonexistent-sweety-dir\""));
    assert_non_null(strstr(log, "db.invalid_url"));
    assert_null(strstr(log, "s3cret"));
    assert_null(strstr(log, "s3%zz"));
    free(log);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_embedded_migrations_carry_sha256_of_their_sql),
        cmocka_unit_test(test_migrate_creates_whole_schema_on_empty_database),
        cmocka_unit_test(test_second_migration_applies_nothing_and_changes_nothing),
        cmocka_unit_test(test_concurrent_migrators_both_succeed_and_apply_each_version_once),
        cmocka_unit_test(test_two_new_databases_of_a_fresh_cluster_migrate_at_once),
        cmocka_unit_test(test_tampered_checksum_is_refused),
        cmocka_unit_test(test_plans_list_returns_seeded_plans_in_price_order),
        cmocka_unit_test(test_plans_set_changes_given_fields_and_refuses_bad_ones),
        cmocka_unit_test(test_reporting_role_reads_plans_but_not_personal_columns),
        cmocka_unit_test(test_booking_status_changes_are_numbered_and_never_go_backwards),
        cmocka_unit_test(test_capacity_counters_stay_within_their_limits),
        cmocka_unit_test(test_call_event_partitions_are_made_ahead_and_take_rows_from_default),
        cmocka_unit_test(test_db_reconnects_and_prepares_again_after_its_backend_is_killed),
        cmocka_unit_test(test_db_unreachable_backs_off_and_never_logs_the_password),
    };
    return cmocka_run_group_tests_name("migrations", tests, NULL, NULL);
}
