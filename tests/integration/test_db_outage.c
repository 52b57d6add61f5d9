// tests/integration/test_db_outage.c — PostgreSQL stopped under a running sweetyd: /healthz turns
// 503 with "db":"down", and once PostgreSQL is back it is 200 again by itself, the daemon never
// restarted. Uses a private cluster so the shared one keeps serving the other tests.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "tests/integration/daemon.h"

static void test_healthz_follows_database_outage_without_restart(void **state) {
    harness_pg_cluster_t *pg = harness_pg_cluster_new();
    assert_non_null(pg);
    char db_url[512];
    assert_int_equal(harness_pg_cluster_create_db(pg, "sweety", db_url, sizeof db_url), 0);
    test_daemon_t d;
    assert_int_equal(test_daemon_prepare(&d, db_url, NULL), 0);
    assert_int_equal(test_daemon_start(&d), 0);
    pid_t pid = harness_proc_pid(d.proc);

    char url[128];
    snprintf(url, sizeof url, "%s/healthz", d.base_url);
    assert_int_equal(harness_pg_cluster_stop(pg), 0);
    assert_int_equal(harness_http_wait_status(url, 503, 15000), 0);
    harness_http_t r;
    assert_int_equal(harness_http("GET", url, NULL, NULL, &r), 0);
    assert_non_null(strstr(r.body, "\"db\":\"down\""));
    harness_http_clear(&r);

    assert_int_equal(harness_pg_cluster_start(pg), 0);
    assert_int_equal(harness_http_wait_status(url, 200, 20000), 0);
    assert_int_equal(harness_proc_pid(d.proc), pid);
    assert_int_equal(harness_proc_kill(d.proc, 0), 0);   // still the same, running process

    assert_int_equal(test_daemon_stop(&d, 10000), 0);
    test_daemon_cleanup(&d);
    harness_pg_cluster_destroy(&pg);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_healthz_follows_database_outage_without_restart),
    };
    return cmocka_run_group_tests_name("db_outage", tests, NULL, NULL);
}
