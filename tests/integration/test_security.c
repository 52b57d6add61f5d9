// tests/integration/test_security.c — issue 8 ("Security") against the real sweetyd, a real
// PostgreSQL and sweety-sandbox (docs/SECURITY.md names the controls proven here):
//   - row-level security on every table, with policies; the daemon runs as a LOGIN role that is
//     only a member of sweety_app (not the owner, so RLS applies to it), and a LOGIN role granted
//     sweety_reporting reads the reporting columns and is refused every personal or secret one;
//   - VAPI keys stored only encrypted (a pg_dump of the whole database holds none in clear);
//   - one paid booking from checkout to a completed call with distinctive personal data and
//     distinctive secrets everywhere, after which none of them is found in the daemon's log, the
//     `sweetyctl trace` output, any HTTP answer (error answers included: 400, 401, 404, 405,
//     413, 415) or WebSocket frame the test received;
//   - CORS for the configured origin only; the security headers on the real pages of web/;
//     oversized request headers, URLs and header counts get a clean refusal, never a crash or a
//     hang; status tokens expire (security.token_ttl_s = 60).
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <curl/curl.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <poll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "common/crypto.h"
#include "tests/harness/wsclient.h"
#include "tests/integration/client.h"
#include "tests/integration/daemon.h"
#include "tests/integration/sandbox.h"

// ---- what must never leak ------------------------------------------------------------------------
#define P_NAME "Philippa Quenby-Ashworth"
#define P_NAME_PART "Quenby-Ashworth"
#define P_EMAIL "philippa.quenby@example.net"
#define P_EMAIL_LOCAL "philippa.quenby"
#define P_PHONE "+447700900461"
#define P_PHONE_DIGITS "447700900461"
#define P_MESSAGE "Please call about the Zanzibar lighthouse at dusk"
#define P_MESSAGE_WORD "Zanzibar"

#define S_STRIPE_KEY "sk_test_sec9Qm4StripeApiKey"
#define S_STRIPE_WHSEC "whsec_sec7Lp2StripeHookSecret"
#define S_STRIPE_WHSEC_PREV "whsec_sec5Rt8StripeHookPrevious"
#define S_CM_MERCHANT "1c7e5a2b-3d4f-4a6b-8c9d-0e1f2a3b4c5d"
#define S_CM_KEY "sec3Vb6CryptomusPaymentKey"
#define S_CM_KEY_PREV "sec1Nx4CryptomusPaymentPrev"
#define S_VAPI_SECRET "sec8Wd3VapiServerSecret"
#define S_VAPI_SECRET_PREV "sec2Hy7VapiServerPrevious"
#define S_VAPI_HMAC "sec6Kc1VapiHmacSecret"
#define S_VAPI_HMAC_PREV "sec4Zq9VapiHmacPrevious"
#define S_VAPI_KEY "vapi_sec0Ju5PrivateApiKey"
#define S_MASTER_RAW "secMasterKey-0123456789abcdefghi"       // 32 bytes
#define S_MASTER "c2VjTWFzdGVyS2V5LTAxMjM0NTY3ODlhYmNkZWZnaGk="   // base64 of S_MASTER_RAW
#define S_MASTER_PREV_RAW "secPreviousKey-0123456789abcdefg"  // 32 bytes
#define S_MASTER_PREV "c2VjUHJldmlvdXNLZXktMDEyMzQ1Njc4OWFiY2RlZmc="
#define S_TOKEN_SECRET "sec5Gf2TokenSigningSecret"
#define S_TOKEN_SECRET_PREV "sec9Pl3TokenSigningPrevious"

#define CORS_ORIGIN "https://book.sweety-sec.example"
#define TOKEN_TTL_S 60

static const char *const personal[] = {P_NAME, P_NAME_PART, P_EMAIL, P_EMAIL_LOCAL, P_PHONE, P_PHONE_DIGITS,
                                       P_MESSAGE_WORD, NULL};
static const char *const secrets[] = {S_STRIPE_KEY, S_STRIPE_WHSEC, S_STRIPE_WHSEC_PREV, S_CM_KEY, S_CM_KEY_PREV,
                                      S_VAPI_SECRET, S_VAPI_SECRET_PREV, S_VAPI_HMAC, S_VAPI_HMAC_PREV, S_VAPI_KEY,
                                      S_MASTER, S_MASTER_RAW, S_MASTER_PREV, S_MASTER_PREV_RAW, S_TOKEN_SECRET,
                                      S_TOKEN_SECRET_PREV, NULL};

typedef struct {
    char *data;
    size_t len;
} text_t;

typedef struct {
    test_daemon_t d;
    test_sandbox_t sb;
    char owner_url[512];   // the database owner: migrations, pg_dump, catalog checks
    char app_role[64], rep_role[64];
    char app_url[512], rep_url[512];
    char ttl_id[40], ttl_token[1024];
    text_t seen;           // every HTTP answer (status line, headers, body), WebSocket frame and sweetyctl output
} fixture_t;

static fixture_t *F;

// ---- small helpers ---------------------------------------------------------------------------------

static void text_add(text_t *t, const char *label, const char *s, size_t n) {
    size_t need = t->len + strlen(label) + n + 4;
    char *grown = realloc(t->data, need);
    assert_non_null(grown);
    t->data = grown;
    t->len += (size_t)sprintf(t->data + t->len, "%s\n", label);
    memcpy(t->data + t->len, s, n);
    t->len += n;
    t->data[t->len++] = '\n';
    t->data[t->len] = '\0';
}

static void seen(const char *label, const char *s) {
    if (s) text_add(&F->seen, label, s, strlen(s));
}

// Every place one of `needles` occurs in `hay` (labelled `where`), printed; the count returned.
static int leaks(const char *where, const char *hay, size_t len, const char *const *needles) {
    int found = 0;
    for (size_t i = 0; needles[i]; i++) {
        size_t n = strlen(needles[i]);
        for (size_t at = 0; at + n <= len; at++) {
            if (memcmp(hay + at, needles[i], n) != 0) continue;
            size_t from = at > 60 ? at - 60 : 0, to = at + n + 20 < len ? at + n + 20 : len;
            fprintf(stderr, "LEAK in %s: \"%s\" near: %.*s\n", where, needles[i], (int)(to - from), hay + from);
            found++;
            break;
        }
    }
    return found;
}

static int leaks_str(const char *where, const char *hay, const char *const *needles) {
    return hay ? leaks(where, hay, strlen(hay), needles) : 0;
}

// One request to the daemon; the answer (status, headers, body) joins F->seen. Returns the status;
// *out (may be NULL) the body parsed as JSON, *headers (may be NULL) the raw headers (free them).
static long api(const char *method, const char *path, const char *body, const char *const *hdrs, json_t **out,
                char **headers) {
    char url[2048];
    snprintf(url, sizeof url, "%s%s", F->d.base_url, path);
    harness_http_t r;
    harness_http(method, url, body, hdrs, &r);
    char label[2200];
    snprintf(label, sizeof label, "== %s %.1900s -> %ld", method, path, r.status);
    seen(label, r.headers);
    seen("-- body", r.body);
    if (out) *out = json_loads(r.body, 0, NULL);
    if (headers) *headers = strdup(r.headers);
    long status = r.status;
    harness_http_clear(&r);
    return status;
}

static const char *error_code(json_t *j) {
    return json_string_value(json_object_get(json_object_get(j, "error"), "code"));
}

static bool has_header(const char *headers, const char *line) {
    return headers && strcasestr(headers, line) != NULL;
}

// sweetyctl with the daemon's configuration; stdout and stderr join F->seen. Returns its exit code.
static int ctl(const char *const *args, char **out_kept) {
    char *out = NULL, *err = NULL;
    int rc = test_daemon_ctl(&F->d, args, &out, &err);
    seen("== sweetyctl stdout", out);
    seen("== sweetyctl stderr", err);
    if (rc != 0) fprintf(stderr, "sweetyctl %s %s: exit %d: %s\n", args[0], args[1] ? args[1] : "", rc, err ? err : "");
    if (out_kept)
        *out_kept = out;
    else
        free(out);
    free(err);
    return rc;
}

// Runs one SQL statement on url. Returns the SQLSTATE ("00000" on success, "conn" when the
// connection failed); the first value of the first row goes to out (may be NULL).
static const char *sql_on(const char *url, const char *sql, char *out, size_t outsize, char state[8]) {
    PGconn *conn = PQconnectdb(url);
    snprintf(state, 8, "conn");
    if (out && outsize) out[0] = '\0';
    if (PQstatus(conn) == CONNECTION_OK) {
        PGresult *res = PQexec(conn, sql);
        ExecStatusType st = PQresultStatus(res);
        if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
            snprintf(state, 8, "00000");
            if (out && outsize && st == PGRES_TUPLES_OK && PQntuples(res) > 0 && !PQgetisnull(res, 0, 0))
                snprintf(out, outsize, "%s", PQgetvalue(res, 0, 0));
        } else {
            const char *s = PQresultErrorField(res, PG_DIAG_SQLSTATE);
            snprintf(state, 8, "%s", s ? s : "?");
        }
        PQclear(res);
    } else {
        fprintf(stderr, "connect: %s", PQerrorMessage(conn));
    }
    PQfinish(conn);
    return state;
}

#define assert_sql_ok(url, sql, out, size)                                                            \
    do {                                                                                             \
        char st_[8];                                                                                 \
        if (strcmp(sql_on((url), (sql), (out), (size), st_), "00000") != 0)                          \
            fail_msg("%s: SQLSTATE %s", (sql), st_);                                                 \
    } while (0)

#define assert_sql_refused(url, sql)                                                                  \
    do {                                                                                             \
        char st_[8];                                                                                 \
        if (strcmp(sql_on((url), (sql), NULL, 0, st_), "42501") != 0)                                \
            fail_msg("%s: expected 42501 (insufficient privilege), got %s", (sql), st_);             \
    } while (0)

// "<dbname>" of a libpq URL "postgresql:///<dbname>?...".
static void db_name(const char *url, char *out, size_t size) {
    const char *p = strstr(url, ":///");
    p = p ? p + 4 : url;
    size_t n = strcspn(p, "?");
    snprintf(out, size, "%.*s", (int)n, p);
}

static void role_url(const char *role, char *out, size_t size) {
    char db[128];
    db_name(F->owner_url, db, sizeof db);
    snprintf(out, size, "postgresql:///%s?host=%s&port=%s&user=%s", db, getenv("SWEETY_TEST_PG_HOST"),
             getenv("SWEETY_TEST_PG_PORT"), role);
}

// ---- the sandbox, with this file's secrets ---------------------------------------------------------

static int sandbox_start(test_sandbox_t *s, const char *daemon_url) {
    char bin[512], listen[64], hook[128];
    if (harness_bin_path("sweety-sandbox", bin, sizeof bin) != 0) return -1;
    snprintf(listen, sizeof listen, "127.0.0.1:%d", s->port);
    snprintf(hook, sizeof hook, "%s/webhooks/stripe", daemon_url);
    const char *argv[] = {bin, "--listen", listen, "--public-url", s->url, "--stripe-secret-key", S_STRIPE_KEY,
                          "--stripe-webhook-secret", S_STRIPE_WHSEC, "--stripe-webhook-url", hook,
                          "--cryptomus-merchant", S_CM_MERCHANT, "--cryptomus-payment-key", S_CM_KEY,
                          "--webhook-retry-ms", "200,400,800,1600", "--vapi-webhook-secret", S_VAPI_SECRET,
                          "--vapi-hmac-secret", S_VAPI_HMAC, "--vapi-key", S_VAPI_KEY ":10",
                          "--vapi-default-outcome", "answer:1", NULL};
    s->proc = harness_proc_spawn(argv, NULL, s->log);
    if (!s->proc) return -1;
    char health[128];
    snprintf(health, sizeof health, "%s/_sandbox/health", s->url);
    return harness_http_wait_status(health, 200, 20000);
}

// ---- set-up ------------------------------------------------------------------------------------------

static int write_config(fixture_t *f) {
    const char *src = getenv("SWEETY_SOURCE_DIR");
    char text[8192];
    snprintf(text, sizeof text,
             "[db]\nurl = %s\nmigrate = false\n"
             "[http]\nlisten = 127.0.0.1:%d\npublic_url = %s\ncors_origin = " CORS_ORIGIN "\n"
             "booking_rate_per_min = 100000\nwebhook_rate_per_min = 100000\nweb_root = %s/web\n"
             "[log]\nlevel = debug\n"
             "[stripe]\napi_base = %s\nsecret_key = " S_STRIPE_KEY "\nwebhook_secret = " S_STRIPE_WHSEC "\n"
             "webhook_secret_previous = " S_STRIPE_WHSEC_PREV "\n"
             "[cryptomus]\napi_base = %s\nmerchant = " S_CM_MERCHANT "\npayment_key = " S_CM_KEY "\n"
             "payment_key_previous = " S_CM_KEY_PREV "\n"
             "[vapi]\napi_base = %s\nwebhook_secret = " S_VAPI_SECRET "\nwebhook_secret_previous = " S_VAPI_SECRET_PREV
             "\nwebhook_hmac_secret = " S_VAPI_HMAC "\nwebhook_hmac_secret_previous = " S_VAPI_HMAC_PREV "\n"
             "[security]\nmaster_key = " S_MASTER "\nmaster_key_previous = " S_MASTER_PREV "\n"
             "token_secret = " S_TOKEN_SECRET "\ntoken_secret_previous = " S_TOKEN_SECRET_PREV "\n"
             "token_ttl_s = %d\n"
             "[trace]\nendpoint = ipc://%s/trace\n",
             f->app_url, f->d.port, f->d.base_url, src ? src : ".", f->sb.url, f->sb.url, f->sb.url, TOKEN_TTL_S,
             f->d.dir);
    return harness_write_file(f->d.conf, text);
}

static int setup(void **state) {
    static fixture_t f;
    F = &f;
    test_daemon_t *d = &f.d;
    if (harness_tmpdir(d->dir, sizeof d->dir) != 0) return -1;
    if (harness_pg_create_db("sweety", f.owner_url, sizeof f.owner_url) != 0) return -1;
    d->port = harness_free_port();
    snprintf(d->conf, sizeof d->conf, "%s/sweetyd.conf", d->dir);
    snprintf(d->log, sizeof d->log, "%s/sweetyd.log", d->dir);
    snprintf(d->base_url, sizeof d->base_url, "http://127.0.0.1:%d", d->port);
    test_sandbox_reserve(&f.sb, d->dir);
    snprintf(f.app_role, sizeof f.app_role, "sweety_sec_app_%d", (int)getpid());
    snprintf(f.rep_role, sizeof f.rep_role, "sweety_sec_rep_%d", (int)getpid());
    role_url(f.app_role, f.app_url, sizeof f.app_url);
    role_url(f.rep_role, f.rep_url, sizeof f.rep_url);
    snprintf(d->db_url, sizeof d->db_url, "%s", f.owner_url);   // client_query_int and the like: the owner
    if (write_config(&f) != 0) return -1;

    // Migrations as the owner; then two LOGIN roles that are only members of the migrations' roles.
    char bin[512], env_url[600];
    if (harness_bin_path("sweetyctl", bin, sizeof bin) != 0) return -1;
    snprintf(env_url, sizeof env_url, "SWEETY_DB_URL=%s", f.owner_url);
    const char *migrate[] = {bin, "-c", d->conf, "migrate", NULL};
    const char *env[] = {env_url, NULL};
    if (harness_run(migrate, env, 60000, NULL, NULL) != 0) return -1;
    char sql[256];
    snprintf(sql, sizeof sql, "CREATE ROLE %s LOGIN IN ROLE sweety_app", f.app_role);
    if (harness_pg_query(f.owner_url, sql, NULL, 0) != 0) return -1;
    snprintf(sql, sizeof sql, "CREATE ROLE %s LOGIN IN ROLE sweety_reporting", f.rep_role);
    if (harness_pg_query(f.owner_url, sql, NULL, 0) != 0) return -1;

    if (sandbox_start(&f.sb, d->base_url) != 0) return -1;
    // Capacity, as the operator sets it up (as the application role: sweetyctl needs no more).
    setenv("SWEETY_TEST_SEC_VAPI_KEY", S_VAPI_KEY, 1);
    char *out = NULL;
    int rc = ctl((const char *const[]){"account", "add", "--name", "sec-account", "--api-key-env",
                                       "SWEETY_TEST_SEC_VAPI_KEY", "--phone-number-id", "pn_sec_1", "--max-concurrent",
                                       "4", NULL},
                 &out);
    unsetenv("SWEETY_TEST_SEC_VAPI_KEY");
    char account[40] = "";
    if (out) snprintf(account, sizeof account, "%.36s", out);
    free(out);
    if (rc != 0 ||
        ctl((const char *const[]){"plan", "set", "standard", "--duration-seconds", "30", "--assistant-id",
                                  "asst_sec_standard", NULL},
            NULL) != 0 ||
        ctl((const char *const[]){"agent", "add", "--account", account, "--plan", "standard", "--max-concurrent", "2",
                                  NULL},
            NULL) != 0)
        return -1;
    if (test_daemon_start(d) != 0) return -1;

    // A booking whose token test_status_tokens_expire waits out at the end of the run.
    char body[512];
    snprintf(body, sizeof body, "{\"name\":\"Ttl Tester\",\"phone\":\"+15559870001\",\"plan\":\"standard\"}");
    json_t *j = NULL;
    if (api("POST", "/api/bookings", body, CLIENT_JSON_HDR, &j, NULL) != 201) return -1;
    snprintf(f.ttl_id, sizeof f.ttl_id, "%s", json_string_value(json_object_get(j, "booking_id")));
    snprintf(f.ttl_token, sizeof f.ttl_token, "%s", json_string_value(json_object_get(j, "status_token")));
    json_decref(j);
    *state = &f;
    return 0;
}

static int teardown(void **state) {
    fixture_t *f = *state;
    if (!f) return -1;
    int code = test_daemon_stop(&f->d, 10000);
    test_sandbox_stop(&f->sb);
    if (code != 0) fprintf(stderr, "sweetyd exited %d\n", code);
    // The roles are cluster-wide: drop them (their database goes with the cluster).
    char sql[256];
    snprintf(sql, sizeof sql, "DROP OWNED BY %s, %s", f->app_role, f->rep_role);
    harness_pg_query(f->owner_url, sql, NULL, 0);
    snprintf(sql, sizeof sql, "DROP ROLE IF EXISTS %s, %s", f->app_role, f->rep_role);
    char admin[512];
    snprintf(admin, sizeof admin, "postgresql:///postgres?host=%s&port=%s&user=postgres", getenv("SWEETY_TEST_PG_HOST"),
             getenv("SWEETY_TEST_PG_PORT"));
    harness_pg_query(admin, sql, NULL, 0);
    test_daemon_cleanup(&f->d);
    free(f->seen.data);
    return code == 0 ? 0 : -1;
}

// ---- row-level security and roles --------------------------------------------------------------------

static void test_every_table_has_row_level_security_and_a_policy(void **state) {
    char out[2048];
    // Sanity: the query below sees the schema (13 tables and call_events' partitions at least).
    assert_sql_ok(F->owner_url,
                  "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                  " WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p')",
                  out, sizeof out);
    assert_true(atoi(out) >= 16);
    assert_sql_ok(F->owner_url,
                  "SELECT coalesce(string_agg(c.relname, ','), '') FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                  " WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p') AND NOT c.relrowsecurity",
                  out, sizeof out);
    if (out[0]) fail_msg("tables without row-level security: %s", out);
    // Every table that is not a partition has a policy for the application role.
    assert_sql_ok(F->owner_url,
                  "SELECT coalesce(string_agg(c.relname, ','), '') FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                  " WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p') AND NOT c.relispartition"
                  " AND NOT EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = c.oid"
                  "   AND (SELECT oid FROM pg_roles WHERE rolname = 'sweety_app') = ANY (p.polroles))",
                  out, sizeof out);
    if (out[0]) fail_msg("tables without a policy for sweety_app: %s", out);
    // Partitions (call_events_*) are reached through their parent only: RLS on, no privileges.
    assert_sql_ok(F->owner_url,
                  "SELECT coalesce(string_agg(c.relname, ','), '') FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                  " WHERE n.nspname = current_schema() AND c.relispartition"
                  " AND (has_table_privilege('sweety_app', c.oid, 'SELECT, INSERT, UPDATE, DELETE')"
                  "   OR has_table_privilege('sweety_reporting', c.oid, 'SELECT'))",
                  out, sizeof out);
    if (out[0]) fail_msg("partitions readable directly: %s", out);
    assert_sql_refused(F->app_url, "SELECT count(*) FROM call_events_default");
    // Neither role, nor our login roles, can bypass row-level security.
    char sql[512];
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM pg_roles WHERE rolname IN ('sweety_app', 'sweety_reporting', '%s', '%s')"
             " AND NOT rolsuper AND NOT rolbypassrls",
             F->app_role, F->rep_role);
    assert_sql_ok(F->owner_url, sql, out, sizeof out);
    assert_string_equal(out, "4");
}

// The columns that hold personal data or secrets (CONTRACT.md "Database", 0001_schema.sql).
static const char *const personal_columns[] = {
    "users.id", "users.phone", "users.name", "users.email", "bookings.message", "bookings.recording_url",
    "bookings.error_message", "bookings.vapi_call_id", "payments.session_id", "payments.checkout_url",
    "payments.payment_intent_id", "payments.invoice_uuid", "payments.refund_id", "payments.error_message",
    "vapi_accounts.api_key_enc", "vapi_accounts.api_key_nonce", "active_calls.control_url",
    "active_calls.vapi_call_id", "call_events.details", "call_events.vapi_call_id", "call_queue.last_error",
    "call_queue.vapi_call_id", "idempotency_keys.key", "idempotency_keys.response_body",
    "idempotency_keys.request_hash", NULL};

static void test_reporting_login_role_sees_no_personal_columns(void **state) {
    // Each personal or secret column is refused to a LOGIN role granted sweety_reporting ...
    for (size_t i = 0; personal_columns[i]; i++) {
        char table[64], sql[256];
        const char *dot = strchr(personal_columns[i], '.');
        snprintf(table, sizeof table, "%.*s", (int)(dot - personal_columns[i]), personal_columns[i]);
        snprintf(sql, sizeof sql, "SELECT %s FROM %s LIMIT 1", dot + 1, table);
        assert_sql_refused(F->rep_url, sql);
    }
    assert_sql_refused(F->rep_url, "SELECT * FROM bookings");
    assert_sql_refused(F->rep_url, "SELECT count(*) FROM users");
    assert_sql_refused(F->rep_url, "SELECT * FROM vapi_accounts");
    // ... and so is every write.
    assert_sql_refused(F->rep_url, "UPDATE plans SET price_cents = 1");
    assert_sql_refused(F->rep_url, "DELETE FROM booking_events");
    assert_sql_refused(F->rep_url,
                       "INSERT INTO webhook_events (provider, event_id, type) VALUES ('stripe', 'evt_rep', 'x')");

    // The catalogue agrees: no personal column is granted, no privilege but SELECT at all.
    char out[2048], sql[4096];
    size_t n = (size_t)snprintf(sql, sizeof sql,
                                "SELECT coalesce(string_agg(c.relname || '.' || a.attname, ','), '') FROM pg_class c"
                                " JOIN pg_namespace ns ON ns.oid = c.relnamespace JOIN pg_attribute a ON a.attrelid = c.oid"
                                " WHERE ns.nspname = current_schema() AND c.relkind IN ('r', 'p', 'v', 'm')"
                                " AND a.attnum > 0 AND NOT a.attisdropped"
                                " AND has_column_privilege('sweety_reporting', c.oid, a.attnum, 'SELECT')"
                                " AND (a.attname IN ('phone', 'email', 'message', 'details', 'transcript')"
                                "   OR c.relname || '.' || a.attname IN (");
    for (size_t i = 0; personal_columns[i]; i++)
        n += (size_t)snprintf(sql + n, sizeof sql - n, "%s'%s'", i ? ", " : "", personal_columns[i]);
    snprintf(sql + n, sizeof sql - n, "))");
    assert_sql_ok(F->owner_url, sql, out, sizeof out);
    if (out[0]) fail_msg("personal columns granted to sweety_reporting: %s", out);
    assert_sql_ok(F->owner_url,
                  "SELECT count(*) FROM information_schema.table_privileges"
                  " WHERE grantee = 'sweety_reporting' AND privilege_type <> 'SELECT'",
                  out, sizeof out);
    assert_string_equal(out, "0");

    // What reporting is for works: bookings, payments, calls and their outcomes, without who.
    assert_sql_ok(F->rep_url,
                  "SELECT count(*) FROM (SELECT id, user_id, plan, status, payment_method, scheduled_for, status_seq,"
                  " call_duration_s, call_cost, ended_reason, created_at, updated_at FROM bookings) b",
                  out, sizeof out);
    assert_true(atoi(out) >= 2);
    assert_sql_ok(F->rep_url,
                  "SELECT count(*) FROM (SELECT id, booking_id, provider, amount_cents, currency, status, paid_at,"
                  " refunded_at, expires_at FROM payments) p WHERE status = 'paid'",
                  out, sizeof out);
    assert_true(atoi(out) >= 1);
    assert_sql_ok(F->rep_url, "SELECT count(*) FROM booking_events WHERE status = 'completed'", out, sizeof out);
    assert_true(atoi(out) >= 1);
    assert_sql_ok(F->rep_url, "SELECT count(*) FROM (SELECT id, booking_id, event_time, event_type, status FROM call_events) e",
                  out, sizeof out);
    assert_true(atoi(out) >= 1);
    assert_sql_ok(F->rep_url, "SELECT count(*) FROM (SELECT id, name, max_concurrent, active_calls, enabled FROM vapi_accounts) a",
                  out, sizeof out);
    assert_string_equal(out, "1");
    assert_sql_ok(F->rep_url, "SELECT count(*) FROM plans", out, sizeof out);
    assert_string_equal(out, "4");
    assert_sql_ok(F->rep_url, "SELECT count(*) FROM (SELECT booking_id, status, attempt FROM call_queue) q", out,
                  sizeof out);
    assert_true(atoi(out) >= 1);
    assert_sql_ok(F->rep_url, "SELECT count(*) FROM webhook_events", out, sizeof out);
    assert_true(atoi(out) >= 1);
}

static void test_app_login_role_reads_and_writes_under_row_level_security(void **state) {
    char out[256], sql[512];
    // The daemon itself runs as the application LOGIN role (db.url), and got the booking above
    // through: its connections are that role's.
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND usename = '%s'",
             F->app_role);
    assert_sql_ok(F->owner_url, sql, out, sizeof out);
    assert_true(atoi(out) >= 2);
    // It reads and writes every table through its policies ...
    assert_sql_ok(F->app_url,
                  "WITH u AS (INSERT INTO users (phone, name, email) VALUES ('+15550009999', 'App Role', 'a@example.com')"
                  "  RETURNING id),"
                  " b AS (INSERT INTO bookings (user_id, plan, payment_method, message) SELECT id, 'free_trial', 'none', 'hi'"
                  "  FROM u RETURNING id)"
                  " SELECT count(*) FROM b",
                  out, sizeof out);
    assert_string_equal(out, "1");
    assert_sql_ok(F->app_url,
                  "SELECT count(*) FROM bookings b JOIN users u ON u.id = b.user_id JOIN booking_events e ON e.booking_id = b.id"
                  " WHERE u.phone = '+15550009999' AND b.message = 'hi'",
                  out, sizeof out);
    assert_string_equal(out, "1");
    assert_sql_ok(F->app_url, "UPDATE users SET email = 'b@example.com' WHERE phone = '+15550009999' RETURNING email", out,
                  sizeof out);
    assert_string_equal(out, "b@example.com");
    assert_sql_ok(F->app_url,
                  "WITH d AS (DELETE FROM bookings WHERE user_id IN (SELECT id FROM users WHERE phone = '+15550009999')"
                  " RETURNING 1) SELECT count(*) FROM d",
                  out, sizeof out);
    assert_string_equal(out, "1");
    assert_sql_ok(F->app_url, "DELETE FROM users WHERE phone = '+15550009999'", NULL, 0);
    assert_sql_ok(F->app_url, "SELECT count(*) FROM vapi_accounts", out, sizeof out);
    assert_string_equal(out, "1");
    assert_sql_ok(F->app_url, "SELECT count(*) FROM idempotency_keys", NULL, 0);
    // ... but owns nothing: it cannot turn row-level security off or change the schema.
    assert_sql_refused(F->app_url, "ALTER TABLE users DISABLE ROW LEVEL SECURITY");
    assert_sql_refused(F->app_url, "ALTER TABLE bookings NO FORCE ROW LEVEL SECURITY");
    assert_sql_refused(F->app_url, "DROP POLICY users_app_all ON users");
    assert_sql_refused(F->app_url, "TRUNCATE webhook_events");
}

// ---- keys at rest ------------------------------------------------------------------------------------

static char *hex_of(const char *s) {
    size_t n = strlen(s);
    char *h = malloc(2 * n + 1);
    for (size_t i = 0; i < n; i++) sprintf(h + 2 * i, "%02x", (unsigned char)s[i]);
    return h;
}

static void test_provider_keys_are_stored_only_encrypted(void **state) {
    // A dump of the whole database, as a leaked backup would be.
    const char *pgbin = getenv("SWEETY_TEST_PG_BIN");
    char pg_dump[512];
    snprintf(pg_dump, sizeof pg_dump, "%s/pg_dump", pgbin && *pgbin ? pgbin : "/usr/lib/postgresql/15/bin");
    if (access(pg_dump, X_OK) != 0) snprintf(pg_dump, sizeof pg_dump, "pg_dump");
    const char *argv[] = {pg_dump, "--data-only", "--no-owner", "-d", F->owner_url, NULL};
    char *dump = NULL, *err = NULL;
    assert_int_equal(harness_run(argv, NULL, 60000, &dump, &err), 0);
    free(err);
    assert_non_null(strstr(dump, "COPY public.vapi_accounts"));   // the table is in it ...
    assert_non_null(strstr(dump, "sec-account"));
    char *key_hex = hex_of(S_VAPI_KEY);
    char *key_part_hex = hex_of(&S_VAPI_KEY[8]);
    const char *needles[] = {S_VAPI_KEY, &S_VAPI_KEY[8], key_hex, key_part_hex, NULL};
    int n = leaks("pg_dump", dump, strlen(dump), needles);   // ... but no key, in text or bytea hex
    n += leaks("pg_dump", dump, strlen(dump), secrets);      // nor any other secret
    free(key_hex);
    free(key_part_hex);
    free(dump);
    assert_int_equal(n, 0);

    // It is there, sealed: it opens with the master key, to exactly the key given to sweetyctl.
    char enc[1024], nonce[64];
    assert_sql_ok(F->owner_url, "SELECT encode(api_key_enc, 'hex') FROM vapi_accounts", enc, sizeof enc);
    assert_sql_ok(F->owner_url, "SELECT encode(api_key_nonce, 'hex') FROM vapi_accounts", nonce, sizeof nonce);
    unsigned char sealed[512], iv[CRYPTO_NONCE_LEN];
    size_t len = strlen(enc) / 2;
    for (size_t i = 0; i < len; i++) sscanf(enc + 2 * i, "%2hhx", &sealed[i]);
    for (size_t i = 0; i < CRYPTO_NONCE_LEN; i++) sscanf(nonce + 2 * i, "%2hhx", &iv[i]);
    unsigned char *plain = NULL;
    size_t plain_len = 0;
    assert_int_equal(crypto_open((const unsigned char *)S_MASTER_RAW, sealed, len, iv, &plain, &plain_len), 0);
    assert_string_equal((char *)plain, S_VAPI_KEY);
    crypto_secret_free(plain, plain_len);
}

// ---- no personal data, no secret, anywhere the outside sees ----------------------------------------

static bool ws_has(void *arg) {
    const wsc_t *c = arg;
    for (size_t i = 0; i < wsc_count(c); i++)
        if (strstr(wsc_msg(c, i), "\"completed\"")) return true;
    return false;
}

static bool file_has(const char *path, const char *needle) {
    char *s = harness_read_file(path);
    bool found = s && strstr(s, needle);
    free(s);
    return found;
}

static void test_paid_booking_leaks_no_personal_data_or_secret(void **state) {
    // `sweetyctl trace`, from before the booking to after the call.
    char bin[512], trace_out[700];
    assert_int_equal(harness_bin_path("sweetyctl", bin, sizeof bin), 0);
    snprintf(trace_out, sizeof trace_out, "%s/trace.out", F->d.dir);
    const char *trace_argv[] = {bin, "-c", F->d.conf, "trace", NULL};
    harness_proc_t *trace = harness_proc_spawn(trace_argv, NULL, trace_out);
    assert_non_null(trace);
    int64_t deadline = harness_now_ms() + 10000;
    while (!file_has(trace_out, "actor.started") && harness_now_ms() < deadline) harness_sleep_ms(50);
    assert_true(file_has(trace_out, "actor.started"));

    // The booking: the customer pays on Stripe's page, the call is placed and ends.
    const char *const hdrs[] = {"Content-Type: application/json", "Origin: " CORS_ORIGIN, NULL};
    char body[1024];
    snprintf(body, sizeof body,
             "{\"name\":\"" P_NAME "\",\"phone\":\"" P_PHONE "\",\"email\":\"" P_EMAIL "\",\"plan\":\"standard\","
             "\"message\":\"" P_MESSAGE "\",\"payment_method\":\"stripe\"}");
    json_t *j = NULL;
    assert_int_equal(api("POST", "/api/bookings", body, hdrs, &j, NULL), 201);
    client_booked_t b;
    memset(&b, 0, sizeof b);
    snprintf(b.id, sizeof b.id, "%s", json_string_value(json_object_get(j, "booking_id")));
    snprintf(b.token, sizeof b.token, "%s", json_string_value(json_object_get(j, "status_token")));
    snprintf(b.checkout, sizeof b.checkout, "%s", json_string_value(json_object_get(j, "checkout_url")));
    snprintf(b.session, sizeof b.session, "%s", strrchr(b.checkout, '/') + 1);
    json_decref(j);

    wsc_ctx_t *ws = wsc_ctx_new();
    wsc_t *c = wsc_connect(ws, F->d.port, "/ws", CORS_ORIGIN);
    for (int i = 0; i < 500 && !wsc_is_open(c) && !wsc_is_closed(c); i++) wsc_service(ws, 10);
    assert_true(wsc_is_open(c));
    char sub[1400];
    snprintf(sub, sizeof sub, "{\"type\":\"subscribe\",\"booking_id\":\"%s\",\"token\":\"%s\",\"after_seq\":0}", b.id,
             b.token);
    assert_int_equal(wsc_send(c, sub), 0);

    assert_int_equal(test_sandbox_complete(&F->sb, b.session, "{\"payment_status\":\"paid\"}"), 200);
    char auth[1100], path[128];
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", b.token);
    snprintf(path, sizeof path, "/api/bookings/%s", b.id);
    const char *const auth_hdrs[] = {auth, NULL};
    const char *status = "";
    deadline = harness_now_ms() + 40000;
    while (harness_now_ms() < deadline) {
        assert_int_equal(api("GET", path, NULL, auth_hdrs, &j, NULL), 200);
        status = json_string_value(json_object_get(j, "status"));
        bool done = status && strcmp(status, "completed") == 0;
        status = done ? "completed" : "";
        json_decref(j);
        if (done) break;
        wsc_service(ws, 100);
    }
    assert_string_equal(status, "completed");
    assert_int_equal(api("GET", path, NULL, auth_hdrs, &j, NULL), 200);
    char h[256] = "";
    size_t k;
    json_t *ev;
    json_array_foreach(json_object_get(j, "events"), k, ev) {
        strcat(h, k ? "," : "");
        strncat(h, json_string_value(json_object_get(ev, "status")), sizeof h - strlen(h) - 20);
    }
    json_decref(j);
    assert_string_equal(h, "pending,pending_payment,confirmed,queued,initiating,calling,completed");
    assert_int_equal(wsc_wait(ws, ws_has, c, 10000), 0);
    for (size_t i = 0; i < wsc_count(c); i++) seen("== ws frame", wsc_msg(c, i));
    wsc_ctx_destroy(&ws);

    // Error answers, each carrying the personal data in its request.
    struct {
        const char *body;
        long status;
        const char *code;
    } bad[] = {
        {"{\"name\":\"" P_NAME "\",\"phone\":\"" P_PHONE "\",\"email\":\"" P_EMAIL "@\",\"plan\":\"standard\"}", 400,
         "invalid_email"},
        {"{\"name\":\"" P_NAME "\",\"phone\":\"" P_PHONE "0000000\",\"email\":\"" P_EMAIL "\",\"plan\":\"standard\"}",
         400, "invalid_phone"},
        {"{\"name\":\"" P_NAME "\\u0001\",\"phone\":\"" P_PHONE "\",\"plan\":\"standard\"}", 400, "invalid_name"},
        {"{\"name\":\"" P_NAME "\",\"phone\":\"" P_PHONE "\",\"plan\":\"" P_EMAIL "\"}", 400, "invalid_plan"},
        {"{\"name\":\"" P_NAME "\",\"phone\":\"" P_PHONE "\",\"plan\":\"standard\",\"scheduled_for\":\"" P_PHONE "\"}",
         400, "invalid_scheduled_for"},
        {"{\"name\":\"" P_NAME "\",\"phone\":\"" P_PHONE "\",\"plan\":\"standard\",\"payment_method\":\"" P_EMAIL "\"}",
         400, "invalid_payment_method"},
        {"{\"name\":\"" P_NAME "\",\"phone\":\"" P_PHONE "\",\"email\":\"" P_EMAIL "\" \"plan\":}", 400, "invalid_json"},
        {"{\"name\":\"" P_NAME "\",\"name\":\"" P_EMAIL "\"}", 400, "invalid_json"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        long st = api("POST", "/api/bookings", bad[i].body, hdrs, &j, NULL);
        if (st != bad[i].status || !error_code(j) || strcmp(error_code(j), bad[i].code) != 0)
            fail_msg("case %zu: %ld %s", i, st, error_code(j) ? error_code(j) : "-");
        json_decref(j);
    }
    char message[700];
    snprintf(message, sizeof message, "{\"name\":\"" P_NAME "\",\"phone\":\"" P_PHONE "\",\"plan\":\"standard\",\"message\":\"");
    for (int i = 0; i < 70; i++) strcat(message, P_MESSAGE_WORD);
    strcat(message, "\"}");
    assert_int_equal(api("POST", "/api/bookings", message, hdrs, &j, NULL), 400);
    assert_string_equal(error_code(j), "message_too_long");
    json_decref(j);
    const char *const text_hdr[] = {"Content-Type: text/plain", NULL};
    assert_int_equal(api("POST", "/api/bookings", body, text_hdr, NULL, NULL), 415);
    char *big = malloc(20000);
    snprintf(big, 20000, "{\"name\":\"" P_NAME "\",\"phone\":\"" P_PHONE "\",\"message\":\"%0*d\"}", 18000, 7);
    assert_int_equal(api("POST", "/api/bookings", big, hdrs, NULL, NULL), 413);
    free(big);
    // Status and cancel with the wrong token, or none; unknown endpoints and pages; wrong methods.
    const char *const wrong_auth[] = {"Authorization: Bearer " S_TOKEN_SECRET, NULL};
    assert_int_equal(api("GET", path, NULL, wrong_auth, NULL, NULL), 404);
    assert_int_equal(api("GET", path, NULL, NULL, NULL, NULL), 404);
    snprintf(path, sizeof path, "/api/bookings/%s/cancel", b.id);
    assert_int_equal(api("POST", path, NULL, wrong_auth, NULL, NULL), 404);
    assert_int_equal(api("POST", path, NULL, auth_hdrs, &j, NULL), 409);   // too late: completed
    json_decref(j);
    assert_int_equal(api("GET", "/api/nope", NULL, NULL, NULL, NULL), 404);
    assert_int_equal(api("GET", "/nope", NULL, NULL, NULL, NULL), 404);
    assert_int_equal(api("DELETE", "/api/plans", NULL, NULL, NULL, NULL), 405);
    // Forged webhooks: a bad Stripe signature, a bad Cryptomus sign, a wrong VAPI secret (401).
    char hook[512];
    snprintf(hook, sizeof hook,
             "{\"id\":\"evt_sec_1\",\"type\":\"checkout.session.completed\",\"data\":{\"object\":{\"id\":\"cs_x\","
             "\"customer_details\":{\"name\":\"" P_NAME "\",\"email\":\"" P_EMAIL "\",\"phone\":\"" P_PHONE "\"}}}}");
    const char *const stripe_bad[] = {"Content-Type: application/json", "Stripe-Signature: t=1,v1=" S_TOKEN_SECRET, NULL};
    assert_int_equal(api("POST", "/webhooks/stripe", hook, stripe_bad, &j, NULL), 400);
    assert_string_equal(error_code(j), "bad_signature");
    json_decref(j);
    char cm_hook[512];
    snprintf(cm_hook, sizeof cm_hook,
             "{\"type\":\"payment\",\"uuid\":\"u1\",\"order_id\":\"%s\",\"status\":\"paid\",\"additional_data\":\"" P_EMAIL
             "\",\"sign\":\"0123456789abcdef0123456789abcdef\"}",
             b.id);
    assert_int_equal(api("POST", "/webhooks/cryptomus", cm_hook, CLIENT_JSON_HDR, &j, NULL), 400);
    assert_string_equal(error_code(j), "bad_signature");
    json_decref(j);
    char vapi_hook[512];
    snprintf(vapi_hook, sizeof vapi_hook,
             "{\"message\":{\"type\":\"status-update\",\"status\":\"ended\",\"call\":{\"id\":\"c1\","
             "\"customer\":{\"number\":\"" P_PHONE "\",\"name\":\"" P_NAME "\"}}}}");
    const char *const vapi_bad[] = {"Content-Type: application/json", "X-Vapi-Secret: " S_VAPI_SECRET "x", NULL};
    assert_int_equal(api("POST", "/webhooks/vapi", vapi_hook, vapi_bad, &j, NULL), 401);
    assert_string_equal(error_code(j), "bad_secret");
    json_decref(j);
    const char *const vapi_no_hmac[] = {"Content-Type: application/json", "X-Vapi-Secret: " S_VAPI_SECRET, NULL};
    assert_int_equal(api("POST", "/webhooks/vapi", vapi_hook, vapi_no_hmac, &j, NULL), 401);
    json_decref(j);
    api("GET", "/healthz", NULL, NULL, NULL, NULL);
    api("GET", "/metrics", NULL, NULL, NULL, NULL);
    api("GET", "/api/plans", NULL, hdrs, NULL, NULL);
    // What the operator sees of it.
    ctl((const char *const[]){"booking", "show", b.id, "--json", NULL}, NULL);
    ctl((const char *const[]){"account", "list", NULL}, NULL);
    ctl((const char *const[]){"queue", "--json", NULL}, NULL);

    // The trace: stopped, and read whole (it writes and flushes one line per message).
    harness_sleep_ms(500);   // the last webhooks' bus messages
    harness_proc_kill(trace, SIGTERM);
    assert_int_equal(harness_proc_wait(trace, 5000, NULL), 0);
    harness_proc_destroy(&trace);
    char *trace_text = harness_read_file(trace_out);
    char *log = harness_read_file(F->d.log);
    assert_non_null(trace_text);
    assert_non_null(log);
    assert_non_null(strstr(trace_text, "booking.created"));   // it did see the booking ...
    assert_non_null(strstr(trace_text, b.id));
    assert_non_null(strstr(trace_text, "call.ended"));
    assert_non_null(strstr(log, b.id));                       // ... and so did the log

    int n = 0;
    n += leaks_str("the daemon's log", log, personal);
    n += leaks_str("the daemon's log", log, secrets);
    n += leaks_str("sweetyctl trace", trace_text, personal);
    n += leaks_str("sweetyctl trace", trace_text, secrets);
    n += leaks("HTTP answers, WebSocket frames, sweetyctl output", F->seen.data, F->seen.len, personal);
    n += leaks("HTTP answers, WebSocket frames, sweetyctl output", F->seen.data, F->seen.len, secrets);
    free(trace_text);
    free(log);
    assert_int_equal(n, 0);
}

// ---- the HTTP edge ---------------------------------------------------------------------------------

static void test_cors_answers_only_the_configured_origin(void **state) {
    struct {
        const char *origin;
        bool allowed;
    } cases[] = {{CORS_ORIGIN, true}, {"https://evil.example", false}, {"http://127.0.0.1", false}, {NULL, false}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char origin[256], *headers = NULL;
        snprintf(origin, sizeof origin, "Origin: %s", cases[i].origin ? cases[i].origin : "");
        const char *const simple[] = {cases[i].origin ? origin : NULL, NULL};
        assert_int_equal(api("GET", "/api/plans", NULL, simple, NULL, &headers), 200);
        assert_int_equal(has_header(headers, "Access-Control-Allow-Origin: " CORS_ORIGIN "\r\n"), cases[i].allowed);
        assert_int_equal(has_header(headers, "Access-Control-Allow-Origin"), cases[i].allowed);
        assert_true(has_header(headers, "Vary: Origin"));
        free(headers);
        const char *const preflight[] = {cases[i].origin ? origin : "X-None: 1", "Access-Control-Request-Method: POST",
                                         "Access-Control-Request-Headers: content-type", NULL};
        assert_int_equal(api("OPTIONS", "/api/bookings", NULL, preflight, NULL, &headers), 204);
        assert_int_equal(has_header(headers, "Access-Control-Allow-Origin: " CORS_ORIGIN "\r\n"), cases[i].allowed);
        assert_int_equal(has_header(headers, "Access-Control-Allow-Methods"), cases[i].allowed);
        free(headers);
    }
    // The daemon's own public_url is not the configured origin: its WebSocket upgrade is refused too.
    wsc_ctx_t *ws = wsc_ctx_new();
    wsc_t *other = wsc_connect(ws, F->d.port, "/ws", F->d.base_url);
    wsc_t *good = wsc_connect(ws, F->d.port, "/ws", CORS_ORIGIN);
    for (int i = 0; i < 500 && !(wsc_is_closed(other) && wsc_is_open(good)); i++) wsc_service(ws, 10);
    assert_true(wsc_failed(other));
    assert_int_equal(wsc_http_status(other), 403);
    assert_true(wsc_is_open(good));
    wsc_ctx_destroy(&ws);
}

static void test_pages_carry_the_security_headers(void **state) {
    const char *pages[] = {"/", "/waiting", "/booking-confirmation", "/no-such-page"};
    for (size_t i = 0; i < sizeof pages / sizeof pages[0]; i++) {
        char *headers = NULL;
        long st = api("GET", pages[i], NULL, NULL, NULL, &headers);
        assert_int_equal(st, i == 3 ? 404 : 200);
        assert_true(has_header(headers, "Content-Type: text/html"));
        assert_true(has_header(headers, "Content-Security-Policy: default-src 'self'"));
        assert_true(has_header(headers, "frame-ancestors 'none'"));
        assert_true(has_header(headers, "object-src 'none'"));
        assert_true(has_header(headers, "X-Content-Type-Options: nosniff"));
        assert_true(has_header(headers, "Referrer-Policy: strict-origin-when-cross-origin"));
        assert_true(has_header(headers, "X-Frame-Options: DENY"));
        free(headers);
    }
    // API answers: never cached, never sniffed.
    char *headers = NULL;
    assert_int_equal(api("GET", "/api/plans", NULL, NULL, NULL, &headers), 200);
    assert_true(has_header(headers, "X-Content-Type-Options: nosniff"));
    assert_true(has_header(headers, "Cache-Control: no-store"));
    free(headers);
}

// Sends data on a new connection and reads until the server closes it (or timeout_ms). Returns the
// status of the HTTP answer, 0 when the connection was closed without one, -1 when it stayed open.
static int raw_exchange(const char *data, size_t len, int timeout_ms) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)F->d.port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    size_t off = 0;
    while (off < len) {
        ssize_t w = send(fd, data + off, len - off, MSG_NOSIGNAL);
        if (w <= 0) break;   // the server may close before reading everything
        off += (size_t)w;
    }
    char buf[4096];
    size_t got = 0;
    int64_t deadline = harness_now_ms() + timeout_ms;
    int rc = -1;
    while (harness_now_ms() < deadline) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 100) <= 0) continue;
        ssize_t r = recv(fd, buf + got, sizeof buf - 1 - got, 0);
        if (r <= 0) {
            buf[got] = '\0';
            rc = strncmp(buf, "HTTP/1.1 ", 9) == 0 ? atoi(buf + 9) : 0;
            break;
        }
        got += (size_t)r;
        if (got == sizeof buf - 1) got = 0;   // keep reading to the end; the status line was seen
    }
    close(fd);
    return rc;
}

static void test_oversized_headers_and_urls_are_refused_cleanly(void **state) {
    // A client that never finishes its headers is dropped (lws's header timeout), not kept forever.
    int slow = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)F->d.port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(connect(slow, (struct sockaddr *)&a, sizeof a), 0);
    const char partial[] = "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ";
    assert_int_equal(send(slow, partial, sizeof partial - 1, MSG_NOSIGNAL), (ssize_t)(sizeof partial - 1));
    int64_t slow_since = harness_now_ms();

    size_t size = 64 * 1024;
    char *req = malloc(size);
    struct {
        const char *what;
        int kind;   // 0: one 9000-byte header, 1: a 9000-byte URL, 2: 1500 small headers, 3: 600 Cookie headers
    } cases[] = {{"one header of 9000 bytes", 0}, {"a URL of 9000 bytes", 1}, {"1500 headers", 2}, {"600 cookies", 3}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t n = 0;
        if (cases[i].kind == 1) {
            n += (size_t)snprintf(req + n, size - n, "GET /");
            memset(req + n, 'a', 9000);
            n += 9000;
            n += (size_t)snprintf(req + n, size - n, " HTTP/1.1\r\nHost: x\r\n");
        } else {
            n += (size_t)snprintf(req + n, size - n, "GET /api/plans HTTP/1.1\r\nHost: x\r\n");
        }
        if (cases[i].kind == 0) {
            n += (size_t)snprintf(req + n, size - n, "X-Big: ");
            memset(req + n, 'b', 9000);
            n += 9000;
            n += (size_t)snprintf(req + n, size - n, "\r\n");
        }
        for (int k = 0; cases[i].kind == 2 && k < 1500; k++) n += (size_t)snprintf(req + n, size - n, "x%d: y\r\n", k);
        for (int k = 0; cases[i].kind == 3 && k < 600; k++) n += (size_t)snprintf(req + n, size - n, "Cookie: c=%d\r\n", k);
        n += (size_t)snprintf(req + n, size - n, "Connection: close\r\n\r\n");
        int st = raw_exchange(req, n, 15000);
        // refused: the connection closed without an answer, or a 4xx; never served, never left open
        if (!(st == 0 || (st >= 400 && st < 500))) fail_msg("%s: answer %d", cases[i].what, st);
        assert_int_equal(harness_http_wait_status(F->d.base_url, 200, 1), 0);   // and the daemon is fine
    }
    // Headers of a normal size are served: 6000 bytes in all is well inside the limit.
    size_t n = (size_t)snprintf(req, size, "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Fine: ");
    memset(req + n, 'c', 6000);
    n += 6000;
    n += (size_t)snprintf(req + n, size - n, "\r\nConnection: close\r\n\r\n");
    assert_int_equal(raw_exchange(req, n, 5000), 200);
    free(req);

    // The slow client: closed by the server within lws's timeouts (10 s for headers, 20 s idle).
    char buf[64];
    struct pollfd p = {.fd = slow, .events = POLLIN};
    int64_t deadline = slow_since + 25000;
    ssize_t r = 1;
    while (harness_now_ms() < deadline && r != 0) {
        if (poll(&p, 1, 200) > 0) r = recv(slow, buf, sizeof buf, 0);
        if (r < 0) r = 0;
    }
    close(slow);
    assert_int_equal(r, 0);
    char health[128];
    snprintf(health, sizeof health, "%s/healthz", F->d.base_url);
    assert_int_equal(harness_http_wait_status(health, 200, 2000), 0);
    char *log = harness_read_file(F->d.log);
    assert_null(strstr(log, "bbbbbbbbbbbbbbbbbbbb"));   // what the client sent is not copied to the log
    free(log);
}

// ---- status tokens expire ---------------------------------------------------------------------------

// The "exp" and "iat" claims of a token, decoded here.
static void token_times(const char *token, long long *iat, long long *exp) {
    const char *p = strchr(token, '.') + 1;
    size_t n = strcspn(p, ".");
    char b64[1024];
    snprintf(b64, sizeof b64, "%.*s", (int)n, p);
    for (char *c = b64; *c; c++) *c = *c == '-' ? '+' : *c == '_' ? '/' : *c;
    while (strlen(b64) % 4) strcat(b64, "=");
    unsigned char json[1024];
    int len = EVP_DecodeBlock(json, (unsigned char *)b64, (int)strlen(b64));
    assert_true(len > 0);
    json[len] = '\0';
    json_t *j = json_loads((char *)json, JSON_DISABLE_EOF_CHECK, NULL);
    assert_non_null(j);
    *iat = json_integer_value(json_object_get(j, "iat"));
    *exp = json_integer_value(json_object_get(j, "exp"));
    json_decref(j);
}

static bool ws_closed(void *arg) {
    return wsc_is_closed(arg);
}

static void test_status_tokens_expire(void **state) {
    long long iat = 0, exp = 0;
    token_times(F->ttl_token, &iat, &exp);
    assert_int_equal(exp - iat, TOKEN_TTL_S);   // security.token_ttl_s
    char auth[1100], path[128];
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", F->ttl_token);
    snprintf(path, sizeof path, "/api/bookings/%s", F->ttl_id);
    const char *const hdrs[] = {auth, NULL};
    if ((long long)time(NULL) < exp - 2) assert_int_equal(api("GET", path, NULL, hdrs, NULL, NULL), 200);
    while ((long long)time(NULL) <= exp) harness_sleep_ms(200);   // the rest of the run took most of it
    json_t *j = NULL;
    assert_int_equal(api("GET", path, NULL, hdrs, &j, NULL), 404);
    assert_string_equal(error_code(j), "not_found");
    json_decref(j);
    snprintf(path, sizeof path, "/api/bookings/%s/cancel", F->ttl_id);
    assert_int_equal(api("POST", path, NULL, hdrs, NULL, NULL), 404);

    wsc_ctx_t *ws = wsc_ctx_new();
    wsc_t *c = wsc_connect(ws, F->d.port, "/ws", NULL);
    for (int i = 0; i < 500 && !wsc_is_open(c) && !wsc_is_closed(c); i++) wsc_service(ws, 10);
    assert_true(wsc_is_open(c));
    char sub[1400];
    snprintf(sub, sizeof sub, "{\"type\":\"subscribe\",\"booking_id\":\"%s\",\"token\":\"%s\",\"after_seq\":0}",
             F->ttl_id, F->ttl_token);
    assert_int_equal(wsc_send(c, sub), 0);
    assert_int_equal(wsc_wait(ws, ws_closed, c, 10000), 0);
    assert_int_equal(wsc_close_code(c), 4401);
    assert_non_null(strstr(wsc_msg(c, wsc_count(c) - 1), "unauthorized"));
    wsc_ctx_destroy(&ws);
}

int main(void) {
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_table_has_row_level_security_and_a_policy),
        cmocka_unit_test(test_paid_booking_leaks_no_personal_data_or_secret),
        cmocka_unit_test(test_reporting_login_role_sees_no_personal_columns),
        cmocka_unit_test(test_app_login_role_reads_and_writes_under_row_level_security),
        cmocka_unit_test(test_provider_keys_are_stored_only_encrypted),
        cmocka_unit_test(test_cors_answers_only_the_configured_origin),
        cmocka_unit_test(test_pages_carry_the_security_headers),
        cmocka_unit_test(test_oversized_headers_and_urls_are_refused_cleanly),
        cmocka_unit_test(test_status_tokens_expire),
    };
    int failed = cmocka_run_group_tests_name("security", tests, setup, teardown);
    curl_global_cleanup();
    return failed;
}
