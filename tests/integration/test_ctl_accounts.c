// tests/integration/test_ctl_accounts.c — the real sweetyctl for operators' capacity commands:
// account add|list|disable, agent add|list and queue, with and without --json (CONTRACT.md,
// "Programs"), against a fresh migrated database and a configuration holding a master key.
// The VAPI key goes in through an environment variable only, and must be stored encrypted.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/crypto.h"
#include "common/log.h"
#include "storage/bookings.h"
#include "storage/db.h"
#include "storage/dispatch.h"
#include "tests/integration/daemon.h"

#define API_KEY "vapi-priv-7e1d5c3a-0b9f-4f62-a8d4-2c6e9b1f3a57"
// test_daemon_prepare's master key: base64 of this.
#define MASTER_RAW "0123456789abcdef0123456789abcdef"

static const logger_t LG = {SLOG_ERROR, "test"};

static int setup(void **state) {
    test_daemon_t *d = calloc(1, sizeof *d);
    if (!d || test_daemon_prepare(d, NULL, NULL) != 0) return -1;
    char *out = NULL, *err = NULL;
    int rc = test_daemon_ctl(d, (const char *const[]){"migrate", NULL}, &out, &err);
    if (rc != 0) fprintf(stderr, "migrate: %s\n", err ? err : "");
    free(out);
    free(err);
    if (rc != 0) return -1;
    setenv("TEST_VAPI_KEY", API_KEY, 1);
    *state = d;
    return 0;
}

static int teardown(void **state) {
    test_daemon_t *d = *state;
    test_daemon_cleanup(d);
    free(d);
    unsetenv("TEST_VAPI_KEY");
    return 0;
}

// Runs sweetyctl; returns its exit code and keeps stdout in *out (caller frees; may be NULL).
static int ctl(test_daemon_t *d, const char *const *args, char **out) {
    char *o = NULL, *e = NULL;
    int rc = test_daemon_ctl(d, args, &o, &e);
    // Whatever the command, the key never reaches its output.
    if (o) assert_null(strstr(o, API_KEY));
    if (e) assert_null(strstr(e, API_KEY));
    if (getenv("SWEETY_TEST_VERBOSE") && e && *e) fprintf(stderr, "sweetyctl stderr: %s", e);
    free(e);
    if (out)
        *out = o;
    else
        free(o);
    return rc;
}

static bool is_uuid_line(const char *s) {
    if (!s || strlen(s) != 37 || s[36] != '\n') return false;
    for (int i = 0; i < 36; i++) {
        bool dash = i == 8 || i == 13 || i == 18 || i == 23;
        if (dash ? s[i] != '-' : !strchr("0123456789abcdef", s[i])) return false;
    }
    return true;
}

static void add_account(test_daemon_t *d, const char *name, const char *max, char id[STORE_UUID_LEN]) {
    char *out = NULL;
    int rc = ctl(d, (const char *const[]){"account", "add", "--name", name, "--api-key-env", "TEST_VAPI_KEY",
                                          "--phone-number-id", "pn_123", "--max-concurrent", max, NULL},
                 &out);
    assert_int_equal(rc, 0);
    assert_true(is_uuid_line(out));   // the id alone on stdout
    snprintf(id, STORE_UUID_LEN, "%.36s", out);
    free(out);
}

static void add_agent(test_daemon_t *d, const char *const *args, char id[STORE_UUID_LEN]) {
    const char *argv[16] = {"agent", "add"};
    int n = 2;
    for (int i = 0; args[i] && n < 15; i++) argv[n++] = args[i];
    argv[n] = NULL;
    char *out = NULL;
    assert_int_equal(ctl(d, argv, &out), 0);
    assert_true(is_uuid_line(out));
    snprintf(id, STORE_UUID_LEN, "%.36s", out);
    free(out);
}

static json_t *ctl_json(test_daemon_t *d, const char *const *args) {
    char *out = NULL;
    assert_int_equal(ctl(d, args, &out), 0);
    json_error_t jerr;
    json_t *doc = json_loads(out, 0, &jerr);
    if (!doc) fail_msg("not JSON (%s): %s", jerr.text, out);
    // One document, compact, on one line.
    assert_ptr_equal(strchr(out, '\n'), out + strlen(out) - 1);
    free(out);
    return doc;
}

// The object has exactly these keys.
static void assert_keys(json_t *obj, const char *const *keys) {
    assert_true(json_is_object(obj));
    size_t n = 0;
    for (; keys[n]; n++)
        if (!json_object_get(obj, keys[n])) fail_msg("missing key %s", keys[n]);
    assert_int_equal(json_object_size(obj), n);
}

// ---- accounts --------------------------------------------------------------------------------------

static void test_account_add_stores_the_key_only_encrypted(void **state) {
    test_daemon_t *d = *state;
    char id[STORE_UUID_LEN];
    add_account(d, "Main account", "3", id);

    char sql[512], hex[1024] = "", nonce_hex[64] = "", count[32] = "";
    snprintf(sql, sizeof sql, "SELECT encode(api_key_enc, 'hex') FROM vapi_accounts WHERE id = '%s'", id);
    assert_int_equal(harness_pg_query(d->db_url, sql, hex, sizeof hex), 0);
    snprintf(sql, sizeof sql, "SELECT encode(api_key_nonce, 'hex') FROM vapi_accounts WHERE id = '%s'", id);
    assert_int_equal(harness_pg_query(d->db_url, sql, nonce_hex, sizeof nonce_hex), 0);
    assert_int_equal(strlen(nonce_hex), 2 * CRYPTO_NONCE_LEN);
    assert_int_equal(strlen(hex), 2 * (strlen(API_KEY) + CRYPTO_TAG_LEN));
    // Neither the key's bytes nor any long piece of them appear in the row, in any form.
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM vapi_accounts v WHERE position(convert_to('%.12s', 'UTF8') IN api_key_enc) > 0"
             " OR position('%.12s' IN v::text) > 0 OR position(encode(convert_to('%.12s', 'UTF8'), 'hex') IN v::text) > 0",
             &API_KEY[5], &API_KEY[5], &API_KEY[5]);
    assert_int_equal(harness_pg_query(d->db_url, sql, count, sizeof count), 0);
    assert_string_equal(count, "0");

    // And it opens with the configured master key to exactly the key from the environment.
    unsigned char sealed[512], nonce[CRYPTO_NONCE_LEN];
    size_t len = strlen(hex) / 2;
    for (size_t i = 0; i < len; i++) sscanf(hex + 2 * i, "%2hhx", &sealed[i]);
    for (size_t i = 0; i < CRYPTO_NONCE_LEN; i++) sscanf(nonce_hex + 2 * i, "%2hhx", &nonce[i]);
    unsigned char *plain = NULL;
    size_t plain_len = 0;
    assert_int_equal(crypto_open((const unsigned char *)MASTER_RAW, sealed, len, nonce, &plain, &plain_len), 0);
    assert_string_equal((char *)plain, API_KEY);
    crypto_secret_free(plain, plain_len);

    // A second account with the same key gets another nonce and ciphertext.
    char id2[STORE_UUID_LEN];
    add_account(d, "Second", "1", id2);
    assert_string_not_equal(id, id2);
    snprintf(sql, sizeof sql, "SELECT count(DISTINCT api_key_enc) || ':' || count(DISTINCT api_key_nonce) FROM vapi_accounts");
    assert_int_equal(harness_pg_query(d->db_url, sql, count, sizeof count), 0);
    assert_string_equal(count, "2:2");
}

static void test_account_add_refuses_bad_input(void **state) {
    test_daemon_t *d = *state;
    // The key itself where the variable's name belongs (getopt lets --api-key stand for
    // --api-key-env): refused as bad usage, and not echoed (ctl() checks every output).
    assert_int_equal(ctl(d, (const char *const[]){"account", "add", "--name", "x", "--api-key", API_KEY,
                                                  "--phone-number-id", "p", "--max-concurrent", "1", NULL},
                         NULL),
                     2);
    assert_int_equal(ctl(d, (const char *const[]){"account", "add", "--name", "x", "--api-key-env", "TEST_NO_SUCH_VAR",
                                                  "--phone-number-id", "p", "--max-concurrent", "1", NULL},
                         NULL),
                     1);
    assert_int_equal(ctl(d, (const char *const[]){"account", "add", "--name", "x", "--api-key-env", "TEST_VAPI_KEY",
                                                  "--phone-number-id", "p", NULL},
                         NULL),
                     2);
    assert_int_equal(ctl(d, (const char *const[]){"account", "add", "--name", "x", "--api-key-env", "TEST_VAPI_KEY",
                                                  "--phone-number-id", "p", "--max-concurrent", "-1", NULL},
                         NULL),
                     2);
    assert_int_equal(ctl(d, (const char *const[]){"account", "add", "--name", "", "--api-key-env", "TEST_VAPI_KEY",
                                                  "--phone-number-id", "p", "--max-concurrent", "1", NULL},
                         NULL),
                     1);
    // Without a master key in the configuration: refused, nothing stored.
    char conf[700];
    snprintf(conf, sizeof conf, "%s/nokey.conf", d->dir);
    char text[1024];
    snprintf(text, sizeof text, "[db]\nurl = %s\n", d->db_url);
    assert_int_equal(harness_write_file(conf, text), 0);
    char bin[512];
    assert_int_equal(harness_bin_path("sweetyctl", bin, sizeof bin), 0);
    char *out = NULL, *err = NULL;
    const char *argv[] = {bin, "-c", conf, "account", "add", "--name", "x", "--api-key-env", "TEST_VAPI_KEY",
                          "--phone-number-id", "p", "--max-concurrent", "1", NULL};
    assert_int_equal(harness_run(argv, NULL, 60000, &out, &err), 1);
    assert_non_null(strstr(err, "security.master_key"));
    free(out);
    free(err);
    char count[16];
    assert_int_equal(harness_pg_query(d->db_url, "SELECT count(*) FROM vapi_accounts", count, sizeof count), 0);
    assert_string_equal(count, "0");
}

static void test_account_list_and_disable(void **state) {
    test_daemon_t *d = *state;
    char a1[STORE_UUID_LEN], a2[STORE_UUID_LEN];
    add_account(d, "First", "3", a1);
    add_account(d, "Second one", "10", a2);

    json_t *list = ctl_json(d, (const char *const[]){"account", "list", "--json", NULL});
    assert_true(json_is_array(list));
    assert_int_equal(json_array_size(list), 2);
    static const char *const keys[] = {"id", "name", "phone_number_id", "max_concurrent", "active_calls", "enabled", NULL};
    json_t *first = json_array_get(list, 0);
    assert_keys(first, keys);
    assert_string_equal(json_string_value(json_object_get(first, "id")), a1);
    assert_string_equal(json_string_value(json_object_get(first, "name")), "First");
    assert_string_equal(json_string_value(json_object_get(first, "phone_number_id")), "pn_123");
    assert_true(json_is_integer(json_object_get(first, "max_concurrent")));
    assert_int_equal(json_integer_value(json_object_get(first, "max_concurrent")), 3);
    assert_int_equal(json_integer_value(json_object_get(first, "active_calls")), 0);
    assert_true(json_is_true(json_object_get(first, "enabled")));
    json_decref(list);

    assert_int_equal(ctl(d, (const char *const[]){"account", "disable", a1, NULL}, NULL), 0);
    assert_int_equal(ctl(d, (const char *const[]){"account", "disable", "00000000-0000-4000-8000-000000000000", NULL},
                         NULL),
                     1);
    assert_int_equal(ctl(d, (const char *const[]){"account", "disable", NULL}, NULL), 2);
    list = ctl_json(d, (const char *const[]){"account", "list", "--json", NULL});
    assert_true(json_is_false(json_object_get(json_array_get(list, 0), "enabled")));
    assert_true(json_is_true(json_object_get(json_array_get(list, 1), "enabled")));
    json_decref(list);

    // For people: a header and aligned columns.
    char *out = NULL;
    assert_int_equal(ctl(d, (const char *const[]){"account", "list", NULL}, &out), 0);
    char *line2 = strchr(out, '\n');
    assert_non_null(line2);
    line2++;
    char *line3 = strchr(line2, '\n');
    assert_non_null(line3);
    line3++;
    assert_true(strncmp(out, "ID", 2) == 0);
    ptrdiff_t name_col = strstr(out, "NAME") - out;
    ptrdiff_t phone_col = strstr(out, "PHONE_NUMBER_ID") - out;
    assert_int_equal(strstr(line2, "First") - line2, name_col);
    assert_int_equal(strstr(line3, "Second one") - line3, name_col);
    assert_int_equal(strstr(line2, "pn_123") - line2, phone_col);
    assert_int_equal(strstr(line3, "pn_123") - line3, phone_col);
    free(out);
}

// ---- agents ----------------------------------------------------------------------------------------

static void test_agent_add_and_list(void **state) {
    test_daemon_t *d = *state;
    char acct[STORE_UUID_LEN], g1[STORE_UUID_LEN], g2[STORE_UUID_LEN];
    add_account(d, "Main", "4", acct);
    add_agent(d, (const char *const[]){"--account", acct, "--plan", "premium", "--max-concurrent", "2", NULL}, g1);
    add_agent(d, (const char *const[]){"--account", acct, "--plan", "standard", "--max-concurrent", "1",
                                       "--assistant-id", "asst_own", "--priority", "7", NULL},
              g2);
    assert_int_equal(ctl(d, (const char *const[]){"agent", "add", "--account", acct, "--plan", "gold",
                                                  "--max-concurrent", "1", NULL},
                         NULL),
                     1);
    assert_int_equal(ctl(d, (const char *const[]){"agent", "add", "--account", "00000000-0000-4000-8000-000000000000",
                                                  "--plan", "premium", "--max-concurrent", "1", NULL},
                         NULL),
                     1);
    assert_int_equal(ctl(d, (const char *const[]){"agent", "add", "--account", acct, "--plan", "premium", NULL}, NULL),
                     2);
    assert_int_equal(ctl(d, (const char *const[]){"agent", "add", "--account", acct, "--plan", "premium",
                                                  "--max-concurrent", "1", "--priority", "high", NULL},
                         NULL),
                     2);

    json_t *list = ctl_json(d, (const char *const[]){"agent", "list", "--json", NULL});
    assert_int_equal(json_array_size(list), 2);
    static const char *const keys[] = {"id", "account_id", "plan", "assistant_id", "max_concurrent",
                                       "active_calls", "priority", "enabled", NULL};
    json_t *a = json_array_get(list, 0), *b = json_array_get(list, 1);
    assert_keys(a, keys);
    assert_keys(b, keys);
    assert_string_equal(json_string_value(json_object_get(a, "id")), g1);
    assert_string_equal(json_string_value(json_object_get(a, "account_id")), acct);
    assert_string_equal(json_string_value(json_object_get(a, "plan")), "premium");
    assert_true(json_is_null(json_object_get(a, "assistant_id")));   // neither the agent nor the plan has one
    assert_int_equal(json_integer_value(json_object_get(a, "max_concurrent")), 2);
    assert_int_equal(json_integer_value(json_object_get(a, "active_calls")), 0);
    assert_int_equal(json_integer_value(json_object_get(a, "priority")), 0);
    assert_true(json_is_true(json_object_get(a, "enabled")));
    assert_string_equal(json_string_value(json_object_get(b, "assistant_id")), "asst_own");
    assert_int_equal(json_integer_value(json_object_get(b, "priority")), 7);
    json_decref(list);

    // Without an assistant of its own, the agent uses its plan's.
    assert_int_equal(ctl(d, (const char *const[]){"plan", "set", "premium", "--assistant-id", "asst_premium", NULL}, NULL),
                     0);
    list = ctl_json(d, (const char *const[]){"agent", "list", "--json", NULL});
    assert_string_equal(json_string_value(json_object_get(json_array_get(list, 0), "assistant_id")), "asst_premium");
    json_decref(list);

    char *out = NULL;
    assert_int_equal(ctl(d, (const char *const[]){"agent", "list", NULL}, &out), 0);
    assert_true(strncmp(out, "ID", 2) == 0);
    assert_non_null(strstr(out, "asst_own"));
    assert_non_null(strstr(out, "ACTIVE_CALLS"));
    free(out);
}

// ---- queue -----------------------------------------------------------------------------------------

static void test_queue_lists_waiting_and_running_calls(void **state) {
    test_daemon_t *d = *state;
    json_t *list = ctl_json(d, (const char *const[]){"queue", "--json", NULL});
    assert_true(json_is_array(list));
    assert_int_equal(json_array_size(list), 0);
    json_decref(list);

    char acct[STORE_UUID_LEN], agent[STORE_UUID_LEN];
    add_account(d, "Main", "4", acct);
    add_agent(d, (const char *const[]){"--account", acct, "--plan", "free_trial", "--max-concurrent", "1",
                                       "--assistant-id", "asst_ft", NULL},
              agent);
    db_t *db = db_new(d->db_url, &LG);
    assert_non_null(db);
    assert_int_equal(db_wait(db, 10000), 0);
    char ids[2][STORE_UUID_LEN];
    for (int i = 0; i < 2; i++) {
        char phone[24];
        snprintf(phone, sizeof phone, "+1777000000%d", i);
        booking_new_t in = {.name = "Ann", .phone = phone, .plan = "free_trial", .max_retries = 3};
        booking_created_t c;
        assert_int_equal(bookings_create(db, &in, &c, NULL), STORE_OK);
        snprintf(ids[i], STORE_UUID_LEN, "%s", c.id);
    }
    dispatch_assignment_t *a = NULL;
    size_t n = 0;
    assert_int_equal(dispatch_claim(db, "test", 60, 5, &a, &n), STORE_OK);
    assert_int_equal(n, 1);
    dispatch_assignments_free(&a, n);
    db_destroy(&db);

    list = ctl_json(d, (const char *const[]){"queue", "--json", NULL});
    assert_int_equal(json_array_size(list), 2);
    static const char *const keys[] = {"booking_id", "status", "plan", "priority", "attempt", "next_attempt_at",
                                       "agent_id", NULL};
    json_t *first = json_array_get(list, 0), *second = json_array_get(list, 1);
    assert_keys(first, keys);
    assert_keys(second, keys);
    assert_string_equal(json_string_value(json_object_get(first, "booking_id")), ids[0]);
    assert_string_equal(json_string_value(json_object_get(first, "status")), "dialing");
    assert_string_equal(json_string_value(json_object_get(first, "plan")), "free_trial");
    assert_int_equal(json_integer_value(json_object_get(first, "priority")), 10);
    assert_int_equal(json_integer_value(json_object_get(first, "attempt")), 0);
    assert_string_equal(json_string_value(json_object_get(first, "agent_id")), agent);
    assert_true(json_is_string(json_object_get(first, "next_attempt_at")));
    assert_string_equal(json_string_value(json_object_get(second, "status")), "queued");
    assert_true(json_is_null(json_object_get(second, "agent_id")));
    json_decref(list);

    list = ctl_json(d, (const char *const[]){"account", "list", "--json", NULL});
    assert_int_equal(json_integer_value(json_object_get(json_array_get(list, 0), "active_calls")), 1);
    json_decref(list);

    char *out = NULL;
    assert_int_equal(ctl(d, (const char *const[]){"queue", NULL}, &out), 0);
    assert_true(strncmp(out, "BOOKING_ID", 10) == 0);
    assert_non_null(strstr(out, ids[1]));
    free(out);
    assert_int_equal(ctl(d, (const char *const[]){"queue", "extra", NULL}, NULL), 2);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_account_add_stores_the_key_only_encrypted, setup, teardown),
        cmocka_unit_test_setup_teardown(test_account_add_refuses_bad_input, setup, teardown),
        cmocka_unit_test_setup_teardown(test_account_list_and_disable, setup, teardown),
        cmocka_unit_test_setup_teardown(test_agent_add_and_list, setup, teardown),
        cmocka_unit_test_setup_teardown(test_queue_lists_waiting_and_running_calls, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
