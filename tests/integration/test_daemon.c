// tests/integration/test_daemon.c — the real sweetyd against a real PostgreSQL: start-up, health,
// trace replay for a late client, metrics, unknown API paths, configuration checks, and the drain
// on SIGTERM. (The PostgreSQL outage test lives in test_db_outage.c: it needs its own cluster.)
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "tests/integration/daemon.h"

static const char *const actors[] = {"payments", "scheduler", "dialer", "duration-monitor",
                                     "realtime-broadcaster", "http"};

static int setup(void **state) {
    static test_daemon_t d;
    if (test_daemon_prepare(&d, NULL, NULL) != 0 || test_daemon_start(&d) != 0) return -1;
    *state = &d;
    return 0;
}

static int teardown(void **state) {
    test_daemon_t *d = *state;
    test_daemon_stop(d, 10000);
    test_daemon_cleanup(d);
    return 0;
}

static void test_healthz_is_ok_with_database_up(void **state) {
    test_daemon_t *d = *state;
    char url[128];
    snprintf(url, sizeof url, "%s/healthz", d->base_url);
    harness_http_t r;
    assert_int_equal(harness_http("GET", url, NULL, NULL, &r), 0);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "\"status\":\"ok\""));
    assert_non_null(strstr(r.body, "\"db\":\"ok\""));
    harness_http_clear(&r);
}

static void test_late_trace_client_sees_every_actor_started(void **state) {
    test_daemon_t *d = *state;
    char *out = NULL, *err = NULL;
    const char *args[] = {"trace", "--topic", "actor.started", "--count", "6", "--timeout", "20", NULL};
    int rc = test_daemon_ctl(d, args, &out, &err);
    if (rc != 0) fprintf(stderr, "trace stderr: %s\n", err);
    assert_int_equal(rc, 0);
    for (size_t i = 0; i < sizeof actors / sizeof actors[0]; i++) {
        char want[96];
        snprintf(want, sizeof want, "\"body\":{\"actor\":\"%s\"}", actors[i]);
        if (!strstr(out, want)) fprintf(stderr, "missing %s in:\n%s\n", want, out);
        assert_non_null(strstr(out, want));
    }
    assert_non_null(strstr(out, "\"topic\":\"actor.started\""));
    assert_non_null(strstr(out, "\"from\":\"supervisor\""));
    free(out);
    free(err);
}

static void test_trace_shows_live_messages_after_history(void **state) {
    test_daemon_t *d = *state;
    // db.state is published at least every 5 s: a client asking for more than the history holds
    // must see live ones arrive.
    char *out = NULL, *err = NULL;
    const char *args[] = {"trace", "--topic", "db.state", "--count", "3", "--timeout", "20", NULL};
    assert_int_equal(test_daemon_ctl(d, args, &out, &err), 0);
    assert_non_null(strstr(out, "\"up\":true"));
    free(out);
    free(err);
}

static void test_metrics_has_the_required_families(void **state) {
    test_daemon_t *d = *state;
    char url[128];
    snprintf(url, sizeof url, "%s/metrics", d->base_url);
    harness_http_t r;
    assert_int_equal(harness_http("GET", url, NULL, NULL, &r), 0);
    assert_int_equal(r.status, 200);
    const char *families[] = {"sweety_bus_messages_total{topic=\"actor.started\"}", "sweety_actor_up{actor=\"dialer\"} 1",
                              "sweety_http_requests_total{", "sweety_db_reconnects_total"};
    for (size_t i = 0; i < sizeof families / sizeof families[0]; i++) {
        if (!strstr(r.body, families[i])) fprintf(stderr, "missing %s in:\n%s\n", families[i], r.body);
        assert_non_null(strstr(r.body, families[i]));
    }
    harness_http_clear(&r);
}

static void test_unknown_api_path_is_json_404(void **state) {
    test_daemon_t *d = *state;
    char url[128];
    snprintf(url, sizeof url, "%s/api/no-such-thing", d->base_url);
    harness_http_t r;
    assert_int_equal(harness_http("GET", url, NULL, NULL, &r), 0);
    assert_int_equal(r.status, 404);
    assert_non_null(strstr(r.body, "\"code\":\"not_found\""));
    assert_non_null(strstr(r.headers, "application/json"));
    harness_http_clear(&r);
}

static void test_migrate_again_applies_nothing_and_plan_set_changes_price(void **state) {
    test_daemon_t *d = *state;
    char *out = NULL, *err = NULL;
    const char *migrate[] = {"migrate", NULL};
    assert_int_equal(test_daemon_ctl(d, migrate, &out, &err), 0);
    assert_non_null(strstr(out, "applied: 0"));
    free(out);
    free(err);
    const char *set[] = {"plan", "set", "standard", "--price-cents", "1999", "--duration-seconds", "900", NULL};
    assert_int_equal(test_daemon_ctl(d, set, &out, &err), 0);
    free(out);
    free(err);
    char got[64];
    assert_int_equal(harness_pg_query(d->db_url, "SELECT price_cents || '/' || duration_seconds FROM plans WHERE key='standard'",
                                      got, sizeof got), 0);
    assert_string_equal(got, "1999/900");
    const char *bad[] = {"plan", "set", "platinum", "--price-cents", "1", NULL};
    assert_int_equal(test_daemon_ctl(d, bad, &out, &err), 1);
    free(out);
    free(err);
    const char *usage[] = {"plan", "set", "standard", "--price-cents", "lots", NULL};
    assert_int_equal(test_daemon_ctl(d, usage, &out, &err), 2);
    free(out);
    free(err);
}

static void test_sigterm_drains_and_exits_zero_within_10s(void **state) {
    test_daemon_t d;
    assert_int_equal(test_daemon_prepare(&d, NULL, NULL), 0);
    assert_int_equal(test_daemon_start(&d), 0);
    int64_t t0 = harness_now_ms();
    int code = test_daemon_stop(&d, 10000);
    int64_t took = harness_now_ms() - t0;
    if (code != 0) {
        char *log = harness_read_file(d.log);
        fprintf(stderr, "exit %d after %lld ms; log:\n%s\n", code, (long long)took, log ? log : "");
        free(log);
    }
    assert_int_equal(code, 0);
    assert_true(took < 10000);
    char *log = harness_read_file(d.log);
    assert_non_null(strstr(log, "event=stopped"));
    free(log);
    test_daemon_cleanup(&d);
}

static int check_config(const char *conf_text, char **err) {
    char dir[512], path[600], bin[512];
    if (harness_tmpdir(dir, sizeof dir) != 0 || harness_bin_path("sweetyd", bin, sizeof bin) != 0) return -1;
    snprintf(path, sizeof path, "%s/x.conf", dir);
    harness_write_file(path, conf_text);
    const char *argv[] = {bin, "--check-config", "-c", path, NULL};
    char *out = NULL;
    int rc = harness_run(argv, NULL, 10000, &out, err);
    free(out);
    harness_rmtree(dir);
    return rc;
}

static void test_check_config_accepts_good_and_names_bad_keys(void **state) {
    const char *good = "[security]\nmaster_key = MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\ntoken_secret = t\n";
    char *err = NULL;
    assert_int_equal(check_config(good, &err), 0);
    free(err);

    char bad[512];
    snprintf(bad, sizeof bad, "%s[http]\nlisten = 127.0.0.1:8080\nbogus = 1\n", good);
    assert_int_equal(check_config(bad, &err), 1);
    assert_non_null(strstr(err, "bogus"));
    assert_non_null(strstr(err, ":6"));   // the line number
    free(err);

    assert_int_equal(check_config("[security]\ntoken_secret = t\n", &err), 1);
    assert_non_null(strstr(err, "security.master_key"));
    free(err);

    snprintf(bad, sizeof bad, "%s[scheduler]\nmax_retries = many\n", good);
    assert_int_equal(check_config(bad, &err), 1);
    assert_non_null(strstr(err, "scheduler.max_retries"));
    free(err);
}

static void test_version_prints_and_exits_zero(void **state) {
    char bin[512];
    assert_int_equal(harness_bin_path("sweetyd", bin, sizeof bin), 0);
    const char *argv[] = {bin, "--version", NULL};
    char *out = NULL, *err = NULL;
    assert_int_equal(harness_run(argv, NULL, 10000, &out, &err), 0);
    assert_non_null(strstr(out, "sweetyd "));
    free(out);
    free(err);
}

int main(void) {
    const struct CMUnitTest shared[] = {
        cmocka_unit_test(test_healthz_is_ok_with_database_up),
        cmocka_unit_test(test_late_trace_client_sees_every_actor_started),
        cmocka_unit_test(test_trace_shows_live_messages_after_history),
        cmocka_unit_test(test_metrics_has_the_required_families),
        cmocka_unit_test(test_unknown_api_path_is_json_404),
        cmocka_unit_test(test_migrate_again_applies_nothing_and_plan_set_changes_price),
    };
    const struct CMUnitTest alone[] = {
        cmocka_unit_test(test_sigterm_drains_and_exits_zero_within_10s),
        cmocka_unit_test(test_check_config_accepts_good_and_names_bad_keys),
        cmocka_unit_test(test_version_prints_and_exits_zero),
    };
    int failed = cmocka_run_group_tests_name("daemon", shared, setup, teardown);
    failed += cmocka_run_group_tests_name("daemon_lifecycle", alone, NULL, NULL);
    return failed;
}
