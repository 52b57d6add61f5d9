// tests/unit/test_config.c — conf/config.c: defaults, the INI file, SWEETY_* overrides, *_file
// secrets, validation and config_require (CONTRACT.md, "Configuration").
//
// Each test runs in its own mkdtemp directory (also the working directory, so the default
// "conf/sweetyd.conf" is absent unless a test writes it) with every SWEETY_* configuration variable
// removed from the environment, and puts both back afterwards.
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "conf/config.h"

extern char **environ;

#define MASTER_KEY_OK "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="   // bytes 0..31
#define MASTER_KEY_16 "AAECAwQFBgcICQoLDA0ODw=="                       // 16 bytes
#define MASTER_KEY_33 "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8g"   // 33 bytes
#define MASTER_KEY_OTHER "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8="   // bytes 32..63

typedef struct {
    char dir[PATH_MAX];
    char old_cwd[PATH_MAX];
    char example[PATH_MAX];   // the shipped conf/sweetyd.conf, "" when not found
    config_t cfg;
    char err[CONFIG_ERR_MAX];
} fixture_t;

static const logger_t quiet = {SLOG_INFO, "test_config"};

// Removes every SWEETY_* variable except the harness's own (SWEETY_TEST_*, BIN_DIR, SOURCE_DIR).
static void clear_sweety_env(void) {
    for (;;) {
        char name[256] = "";
        for (char **e = environ; e && *e; e++) {
            if (strncmp(*e, "SWEETY_", 7) != 0 || strncmp(*e, "SWEETY_TEST_", 12) == 0 ||
                strncmp(*e, "SWEETY_BIN_DIR=", 15) == 0 || strncmp(*e, "SWEETY_SOURCE_DIR=", 18) == 0)
                continue;
            size_t n = strcspn(*e, "=");
            if (n >= sizeof name) n = sizeof name - 1;
            memcpy(name, *e, n);
            name[n] = '\0';
            break;
        }
        if (!name[0]) return;
        unsetenv(name);
    }
}

static void find_example(fixture_t *f) {
    f->example[0] = '\0';
    const char *src = getenv("SWEETY_SOURCE_DIR");
    char path[PATH_MAX];
    if (src) {
        snprintf(path, sizeof path, "%s/conf/sweetyd.conf", src);
    } else {
        // __FILE__ is .../tests/unit/test_config.c
        snprintf(path, sizeof path, "%s", __FILE__);
        char *cut = strstr(path, "tests/unit/test_config.c");
        if (!cut) return;
        snprintf(cut, sizeof path - (size_t)(cut - path), "conf/sweetyd.conf");
    }
    if (!realpath(path, f->example)) f->example[0] = '\0';
}

static int setup(void **state) {
    fixture_t *f = calloc(1, sizeof *f);
    if (!f) return -1;
    if (!getcwd(f->old_cwd, sizeof f->old_cwd)) return -1;
    find_example(f);
    snprintf(f->dir, sizeof f->dir, "/tmp/test_config.XXXXXX");
    if (!mkdtemp(f->dir) || chdir(f->dir) != 0) return -1;
    clear_sweety_env();
    *state = f;
    return 0;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st; (void)flag; (void)ftw;
    return remove(path);
}

static int teardown(void **state) {
    fixture_t *f = *state;
    config_clear(&f->cfg);
    clear_sweety_env();
    unsetenv("SWEETY_TEST_CONFIG_PROBE");
    if (chdir(f->old_cwd) != 0) return -1;
    nftw(f->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(f);
    return 0;
}

static void write_file(const char *name, const char *content) {
    FILE *fp = fopen(name, "w");
    assert_non_null(fp);
    assert_int_equal(fwrite(content, 1, strlen(content), fp), strlen(content));
    assert_int_equal(fclose(fp), 0);
}

static int load(fixture_t *f, const char *path) {
    return config_load(&f->cfg, path, &quiet, f->err, sizeof f->err);
}

// Loads `content` from x.conf and expects success.
static void load_ok(fixture_t *f, const char *content) {
    write_file("x.conf", content);
    int rc = load(f, "x.conf");
    if (rc != 0) fail_msg("unexpected error: %s", f->err);
}

// Loads `content` from x.conf and expects an error mentioning every string in the NULL-ended list.
static void load_fails(fixture_t *f, const char *content, ...) {
    write_file("x.conf", content);
    int rc = load(f, "x.conf");
    if (rc == 0) fail_msg("expected an error for:\n%s", content);
    va_list ap;
    va_start(ap, content);
    for (const char *want; (want = va_arg(ap, const char *)) != NULL;)
        if (!strstr(f->err, want)) fail_msg("error \"%s\" does not mention \"%s\"", f->err, want);
    va_end(ap);
    assert_null(f->cfg.db_url);   // a failed load leaves the config cleared
}

static void assert_defaults(const config_t *c) {
    assert_string_equal(c->db_url, "postgresql:///sweety");
    assert_int_equal(c->db_pool, 8);
    assert_true(c->db_migrate);
    assert_string_equal(c->http_listen, "127.0.0.1:8080");
    assert_string_equal(c->http_listen_host, "127.0.0.1");
    assert_int_equal(c->http_listen_port, 8080);
    assert_string_equal(c->http_public_url, "http://127.0.0.1:8080");
    assert_string_equal(c->http_cors_origin, "http://127.0.0.1:8080");
    assert_int_equal(c->http_webhook_rate_per_min, 100);
    assert_int_equal(c->http_booking_rate_per_min, 30);
    assert_string_equal(c->http_metrics_from, "127.0.0.0/8,::1/128");
    assert_string_equal(c->http_web_root, "web");
    assert_int_equal(c->log_level, SLOG_INFO);
    assert_string_equal(c->stripe_api_base, "https://api.stripe.com");
    assert_null(c->stripe_secret_key);
    assert_null(c->stripe_webhook_secret);
    assert_int_equal(c->stripe_tolerance_s, 300);
    assert_string_equal(c->cryptomus_api_base, "https://api.cryptomus.com");
    assert_null(c->cryptomus_merchant);
    assert_null(c->cryptomus_payment_key);
    assert_string_equal(c->vapi_api_base, "https://api.vapi.ai");
    assert_null(c->vapi_webhook_secret);
    assert_null(c->vapi_webhook_hmac_secret);
    assert_null(c->security_master_key);
    assert_null(c->security_token_secret);
    assert_null(c->stripe_webhook_secret_previous);
    assert_null(c->cryptomus_payment_key_previous);
    assert_null(c->vapi_webhook_secret_previous);
    assert_null(c->vapi_webhook_hmac_secret_previous);
    assert_null(c->security_master_key_previous);
    assert_null(c->security_token_secret_previous);
    assert_int_equal(c->security_token_ttl_s, 604800);
    assert_int_equal(c->scheduler_max_retries, 3);
    assert_int_equal(c->scheduler_grace_s, 15);
    assert_int_equal(c->scheduler_retry_base_s, 30);
    assert_int_equal(c->scheduler_retry_max_s, 600);
    assert_string_equal(c->trace_endpoint, "ipc:///tmp/sweetyd-trace");
    assert_int_equal(c->trace_keep, 4096);
}

// --- where values come from ----------------------------------------------------------------------

static void test_defaults_apply_when_the_default_file_is_missing(void **state) {
    fixture_t *f = *state;
    assert_int_equal(load(f, NULL), 0);
    assert_defaults(&f->cfg);
}

static void test_named_file_that_does_not_exist_is_an_error(void **state) {
    fixture_t *f = *state;
    assert_int_equal(load(f, "nope.conf"), -1);
    assert_non_null(strstr(f->err, "nope.conf"));
    assert_null(f->cfg.db_url);
}

static void test_default_file_is_read_from_the_working_directory(void **state) {
    fixture_t *f = *state;
    assert_int_equal(mkdir("conf", 0700), 0);
    write_file("conf/sweetyd.conf", "[db]\npool = 3\n");
    assert_int_equal(load(f, NULL), 0);
    assert_int_equal(f->cfg.db_pool, 3);
    config_clear(&f->cfg);
    write_file("conf/sweetyd.conf", "[db]\nbogus = 3\n");
    assert_int_equal(load(f, NULL), -1);
    assert_non_null(strstr(f->err, "conf/sweetyd.conf:2"));
}

static void test_file_values_are_read(void **state) {
    fixture_t *f = *state;
    load_ok(f,
            "\xEF\xBB\xBF# a comment\n"
            "; another comment\n"
            "\n"
            "  [ db ]  \n"
            "url=postgresql://u@db/sweety\n"
            "\tpool   =   12  \r\n"
            "migrate = off\n"
            "[http]\n"
            "listen = [::1]:9090\n"
            "public_url = \"https://book.example.com\"\n"
            "metrics_from = 10.0.0.0/8 , fd00::/8\n"
            "web_root = \"  /srv/web  \"\n"
            "[log]\n"
            "level = debug\n"
            "[cryptomus]\n"
            "merchant = m-123\n"
            "[security]\n"
            "token_secret = tok # not a comment\n"
            "[scheduler]\n"
            "retry_base_s = 5\n"
            "retry_max_s = 5\n"
            "[trace]\n"
            "endpoint = tcp://127.0.0.1:5999\n"
            "keep = 1000\n");
    config_t *c = &f->cfg;
    assert_string_equal(c->db_url, "postgresql://u@db/sweety");
    assert_int_equal(c->db_pool, 12);
    assert_false(c->db_migrate);
    assert_string_equal(c->http_listen, "[::1]:9090");
    assert_string_equal(c->http_listen_host, "::1");
    assert_int_equal(c->http_listen_port, 9090);
    assert_string_equal(c->http_public_url, "https://book.example.com");
    assert_string_equal(c->http_cors_origin, "https://book.example.com");   // follows public_url
    assert_string_equal(c->http_metrics_from, "10.0.0.0/8 , fd00::/8");
    assert_string_equal(c->http_web_root, "  /srv/web  ");
    assert_int_equal(c->log_level, SLOG_DEBUG);
    assert_string_equal(c->cryptomus_merchant, "m-123");
    assert_string_equal(c->security_token_secret, "tok # not a comment");
    assert_int_equal(c->scheduler_retry_base_s, 5);
    assert_int_equal(c->scheduler_retry_max_s, 5);
    assert_string_equal(c->trace_endpoint, "tcp://127.0.0.1:5999");
    assert_int_equal(c->trace_keep, 1000);
    assert_int_equal(c->stripe_tolerance_s, 300);   // untouched keys keep their defaults
}

static void test_booleans_accept_every_spelling(void **state) {
    fixture_t *f = *state;
    const char *yes[] = {"true", "yes", "on", "1", "TRUE", "Yes"};
    const char *no[] = {"false", "no", "off", "0", "False", "OFF"};
    char text[64];
    for (size_t i = 0; i < 6; i++) {
        snprintf(text, sizeof text, "[db]\nmigrate = %s\n", no[i]);
        load_ok(f, text);
        assert_false(f->cfg.db_migrate);
        config_clear(&f->cfg);
        snprintf(text, sizeof text, "[db]\nmigrate = %s\n", yes[i]);
        load_ok(f, text);
        assert_true(f->cfg.db_migrate);
        config_clear(&f->cfg);
    }
    load_fails(f, "[db]\nmigrate = maybe\n", "x.conf:2", "db.migrate", NULL);
}

static void test_environment_beats_the_file(void **state) {
    fixture_t *f = *state;
    setenv("SWEETY_DB_URL", "postgresql://env/sweety", 1);
    setenv("SWEETY_HTTP_WEBHOOK_RATE_PER_MIN", "7", 1);
    setenv("SWEETY_HTTP_PUBLIC_URL", "https://env.example.com", 1);
    load_ok(f, "[db]\nurl = postgresql://file/sweety\npool = 2\n[http]\nwebhook_rate_per_min = 9\n");
    assert_string_equal(f->cfg.db_url, "postgresql://env/sweety");
    assert_int_equal(f->cfg.http_webhook_rate_per_min, 7);
    assert_int_equal(f->cfg.db_pool, 2);   // not overridden
    assert_string_equal(f->cfg.http_cors_origin, "https://env.example.com");
}

static void test_every_key_has_an_environment_override(void **state) {
    fixture_t *f = *state;
    static const char *const vars[][2] = {
        {"SWEETY_DB_URL", "postgresql:///other"},
        {"SWEETY_DB_POOL", "4"},
        {"SWEETY_DB_MIGRATE", "no"},
        {"SWEETY_HTTP_LISTEN", "0.0.0.0:80"},
        {"SWEETY_HTTP_PUBLIC_URL", "https://p.example.com"},
        {"SWEETY_HTTP_CORS_ORIGIN", "https://c.example.com"},
        {"SWEETY_HTTP_WEBHOOK_RATE_PER_MIN", "1000000"},
        {"SWEETY_HTTP_BOOKING_RATE_PER_MIN", "1"},
        {"SWEETY_HTTP_METRICS_FROM", "0.0.0.0/0"},
        {"SWEETY_HTTP_WEB_ROOT", "/srv/web"},
        {"SWEETY_LOG_LEVEL", "error"},
        {"SWEETY_STRIPE_API_BASE", "http://127.0.0.1:12111"},
        {"SWEETY_STRIPE_SECRET_KEY", "sk_test_1"},
        {"SWEETY_STRIPE_WEBHOOK_SECRET", "whsec_1"},
        {"SWEETY_STRIPE_WEBHOOK_SECRET_PREVIOUS", "whsec_0"},
        {"SWEETY_STRIPE_TOLERANCE_S", "0"},
        {"SWEETY_CRYPTOMUS_API_BASE", "http://localhost:1"},
        {"SWEETY_CRYPTOMUS_MERCHANT", "merchant-1"},
        {"SWEETY_CRYPTOMUS_PAYMENT_KEY", "pay-1"},
        {"SWEETY_CRYPTOMUS_PAYMENT_KEY_PREVIOUS", "pay-0"},
        {"SWEETY_VAPI_API_BASE", "http://[::1]:8/v"},
        {"SWEETY_VAPI_WEBHOOK_SECRET", "vs-1"},
        {"SWEETY_VAPI_WEBHOOK_SECRET_PREVIOUS", "vs-0"},
        {"SWEETY_VAPI_WEBHOOK_HMAC_SECRET", "vh-1"},
        {"SWEETY_VAPI_WEBHOOK_HMAC_SECRET_PREVIOUS", "vh-0"},
        {"SWEETY_SECURITY_MASTER_KEY", MASTER_KEY_OK},
        {"SWEETY_SECURITY_MASTER_KEY_PREVIOUS", MASTER_KEY_OTHER},
        {"SWEETY_SECURITY_TOKEN_SECRET", "ts-1"},
        {"SWEETY_SECURITY_TOKEN_SECRET_PREVIOUS", "ts-0"},
        {"SWEETY_SECURITY_TOKEN_TTL_S", "60"},
        {"SWEETY_SCHEDULER_MAX_RETRIES", "100"},
        {"SWEETY_SCHEDULER_GRACE_S", "3600"},
        {"SWEETY_SCHEDULER_RETRY_BASE_S", "86400"},
        {"SWEETY_SCHEDULER_RETRY_MAX_S", "86400"},
        {"SWEETY_TRACE_ENDPOINT", "inproc://trace"},
        {"SWEETY_TRACE_KEEP", "1000000"},
    };
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) setenv(vars[i][0], vars[i][1], 1);
    assert_int_equal(load(f, NULL), 0);
    config_t *c = &f->cfg;
    assert_string_equal(c->db_url, "postgresql:///other");
    assert_int_equal(c->db_pool, 4);
    assert_false(c->db_migrate);
    assert_string_equal(c->http_listen_host, "0.0.0.0");
    assert_int_equal(c->http_listen_port, 80);
    assert_string_equal(c->http_public_url, "https://p.example.com");
    assert_string_equal(c->http_cors_origin, "https://c.example.com");
    assert_int_equal(c->http_webhook_rate_per_min, 1000000);
    assert_int_equal(c->http_booking_rate_per_min, 1);
    assert_string_equal(c->http_metrics_from, "0.0.0.0/0");
    assert_string_equal(c->http_web_root, "/srv/web");
    assert_int_equal(c->log_level, SLOG_ERROR);
    assert_string_equal(c->stripe_api_base, "http://127.0.0.1:12111");
    assert_string_equal(c->stripe_secret_key, "sk_test_1");
    assert_string_equal(c->stripe_webhook_secret, "whsec_1");
    assert_int_equal(c->stripe_tolerance_s, 0);
    assert_string_equal(c->cryptomus_api_base, "http://localhost:1");
    assert_string_equal(c->cryptomus_merchant, "merchant-1");
    assert_string_equal(c->cryptomus_payment_key, "pay-1");
    assert_string_equal(c->vapi_api_base, "http://[::1]:8/v");
    assert_string_equal(c->vapi_webhook_secret, "vs-1");
    assert_string_equal(c->vapi_webhook_hmac_secret, "vh-1");
    assert_string_equal(c->security_master_key, MASTER_KEY_OK);
    assert_string_equal(c->security_token_secret, "ts-1");
    assert_string_equal(c->stripe_webhook_secret_previous, "whsec_0");
    assert_string_equal(c->cryptomus_payment_key_previous, "pay-0");
    assert_string_equal(c->vapi_webhook_secret_previous, "vs-0");
    assert_string_equal(c->vapi_webhook_hmac_secret_previous, "vh-0");
    assert_string_equal(c->security_master_key_previous, MASTER_KEY_OTHER);
    assert_string_equal(c->security_token_secret_previous, "ts-0");
    assert_int_equal(c->security_token_ttl_s, 60);
    assert_int_equal(c->scheduler_max_retries, 100);
    assert_int_equal(c->scheduler_grace_s, 3600);
    assert_int_equal(c->scheduler_retry_base_s, 86400);
    assert_int_equal(c->scheduler_retry_max_s, 86400);
    assert_string_equal(c->trace_endpoint, "inproc://trace");
    assert_int_equal(c->trace_keep, 1000000);
}

// --- secrets -------------------------------------------------------------------------------------

static void test_secret_file_content_is_the_value_without_its_trailing_newline(void **state) {
    fixture_t *f = *state;
    write_file("stripe.key", "sk_live_abc\n");
    write_file("token.key", "tok\r\n");
    write_file("hmac.key", "two\n\n");        // only one newline is stripped
    write_file("master.key", MASTER_KEY_OK);  // no newline at all
    write_file("cr.key", "pay\r");            // a lone "\r" is content
    setenv("SWEETY_SECURITY_MASTER_KEY_FILE", "master.key", 1);
    load_ok(f, "[stripe]\nsecret_key_file = stripe.key\n"
               "[security]\ntoken_secret_file = token.key\n"
               "[vapi]\nwebhook_hmac_secret_file = hmac.key\n"
               "[cryptomus]\npayment_key_file = cr.key\n");
    assert_string_equal(f->cfg.stripe_secret_key, "sk_live_abc");
    assert_string_equal(f->cfg.security_token_secret, "tok");
    assert_string_equal(f->cfg.vapi_webhook_hmac_secret, "two\n");
    assert_string_equal(f->cfg.security_master_key, MASTER_KEY_OK);
    assert_string_equal(f->cfg.cryptomus_payment_key, "pay\r");
}

static void test_secret_and_secret_file_together_are_an_error(void **state) {
    fixture_t *f = *state;
    write_file("k", "from-file\n");
    // both in the file
    load_fails(f, "[stripe]\nsecret_key = s3cr3t-value\nsecret_key_file = k\n", "stripe.secret_key",
               "x.conf:2", "x.conf:3", NULL);
    assert_null(strstr(f->err, "s3cr3t-value"));
    // the value in the file, the file in the environment
    setenv("SWEETY_STRIPE_SECRET_KEY_FILE", "k", 1);
    load_fails(f, "[stripe]\nsecret_key = s3cr3t-value\n", "stripe.secret_key",
               "SWEETY_STRIPE_SECRET_KEY_FILE", NULL);
    assert_null(strstr(f->err, "s3cr3t-value"));
    // both in the environment
    setenv("SWEETY_STRIPE_SECRET_KEY", "s3cr3t-value", 1);
    load_fails(f, "", "SWEETY_STRIPE_SECRET_KEY", "SWEETY_STRIPE_SECRET_KEY_FILE", NULL);
    assert_null(strstr(f->err, "s3cr3t-value"));
    // the value in the environment, the file in the file
    unsetenv("SWEETY_STRIPE_SECRET_KEY_FILE");
    load_fails(f, "[stripe]\nsecret_key_file = k\n", "stripe.secret_key", "x.conf:2", NULL);
    assert_null(strstr(f->err, "s3cr3t-value"));
}

static void test_empty_environment_value_unsets_a_secret_from_the_file(void **state) {
    fixture_t *f = *state;
    write_file("k", "from-file\n");
    setenv("SWEETY_STRIPE_SECRET_KEY", "", 1);
    load_ok(f, "[stripe]\nsecret_key = in-file\nsecret_key_file = \n");
    assert_null(f->cfg.stripe_secret_key);
    config_clear(&f->cfg);
    load_ok(f, "[stripe]\nsecret_key = in-file\n[vapi]\nwebhook_secret_file = k\n");
    assert_null(f->cfg.stripe_secret_key);
    assert_string_equal(f->cfg.vapi_webhook_secret, "from-file");
}

static void test_unreadable_secret_file_names_the_key(void **state) {
    fixture_t *f = *state;
    load_fails(f, "[vapi]\nwebhook_secret_file = /nonexistent/secret\n", "x.conf:2",
               "vapi.webhook_secret_file", "/nonexistent/secret", NULL);
    setenv("SWEETY_SECURITY_TOKEN_SECRET_FILE", "missing.key", 1);
    load_fails(f, "", "SWEETY_SECURITY_TOKEN_SECRET_FILE", "security.token_secret_file", NULL);
    setenv("SWEETY_SECURITY_TOKEN_SECRET_FILE", ".", 1);   // a directory
    load_fails(f, "", "security.token_secret_file", NULL);
}

static void test_oversized_secret_file_is_an_error(void **state) {
    fixture_t *f = *state;
    char *big = malloc(70 * 1024 + 1);
    assert_non_null(big);
    memset(big, 'a', 70 * 1024);
    big[70 * 1024] = '\0';
    write_file("big.key", big);
    free(big);
    load_fails(f, "[security]\ntoken_secret_file = big.key\n", "security.token_secret_file", NULL);
}

static void test_master_key_must_be_base64_of_32_bytes(void **state) {
    fixture_t *f = *state;
    load_ok(f, "[security]\nmaster_key = " MASTER_KEY_OK "\n");
    assert_string_equal(f->cfg.security_master_key, MASTER_KEY_OK);
    config_clear(&f->cfg);

    const char *bad[] = {"not base64 at all!", MASTER_KEY_16, MASTER_KEY_33,
                         "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8",   // missing padding
                         "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaG=wdHh8=",  // '=' inside
                         "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxw-Hh8="}; // URL-safe alphabet
    char text[256];
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(text, sizeof text, "[security]\nmaster_key = %s\n", bad[i]);
        load_fails(f, text, "x.conf:2", "security.master_key", NULL);
        assert_null(strstr(f->err, bad[i]));   // never echo a secret
    }
    setenv("SWEETY_SECURITY_MASTER_KEY", MASTER_KEY_16, 1);
    load_fails(f, "", "SWEETY_SECURITY_MASTER_KEY", "security.master_key", NULL);
}

// The previous master key (a rotation) follows the same rule, and also comes from a file.
static void test_previous_master_key_must_be_base64_of_32_bytes_too(void **state) {
    fixture_t *f = *state;
    write_file("old.key", MASTER_KEY_OTHER "\n");
    load_ok(f, "[security]\nmaster_key = " MASTER_KEY_OK "\nmaster_key_previous_file = old.key\n");
    assert_string_equal(f->cfg.security_master_key_previous, MASTER_KEY_OTHER);
    config_clear(&f->cfg);
    load_fails(f, "[security]\nmaster_key_previous = " MASTER_KEY_16 "\n", "x.conf:2", "security.master_key_previous",
               NULL);
    assert_null(strstr(f->err, MASTER_KEY_16));
}

static void test_config_require_reports_a_missing_secret(void **state) {
    fixture_t *f = *state;
    assert_int_equal(load(f, NULL), 0);
    assert_int_equal(config_require(&f->cfg, config_daemon_required, f->err, sizeof f->err), -1);
    assert_non_null(strstr(f->err, "security.master_key"));
    assert_non_null(strstr(f->err, "SWEETY_SECURITY_MASTER_KEY"));
    config_clear(&f->cfg);

    setenv("SWEETY_SECURITY_MASTER_KEY", MASTER_KEY_OK, 1);
    assert_int_equal(load(f, NULL), 0);
    assert_int_equal(config_require(&f->cfg, config_daemon_required, f->err, sizeof f->err), -1);
    assert_non_null(strstr(f->err, "security.token_secret"));
    config_clear(&f->cfg);

    setenv("SWEETY_SECURITY_TOKEN_SECRET", "tok", 1);
    assert_int_equal(load(f, NULL), 0);
    assert_int_equal(config_require(&f->cfg, config_daemon_required, f->err, sizeof f->err), 0);
    const char *more[] = {"stripe.secret_key", NULL};
    assert_int_equal(config_require(&f->cfg, more, f->err, sizeof f->err), -1);
    assert_non_null(strstr(f->err, "stripe.secret_key"));
    const char *nums[] = {"db.url", "db.pool", NULL};
    assert_int_equal(config_require(&f->cfg, nums, f->err, sizeof f->err), 0);
}

static void test_config_require_checks_the_master_key_format(void **state) {
    fixture_t *f = *state;
    config_t c;
    memset(&c, 0, sizeof c);
    c.security_master_key = (char *)MASTER_KEY_16;   // built by hand: config_load would refuse it
    c.security_token_secret = (char *)"tok";
    assert_int_equal(config_require(&c, config_daemon_required, f->err, sizeof f->err), -1);
    assert_non_null(strstr(f->err, "security.master_key"));
    assert_null(strstr(f->err, MASTER_KEY_16));
    c.security_master_key = (char *)"";
    assert_int_equal(config_require(&c, config_daemon_required, f->err, sizeof f->err), -1);
    assert_string_equal(config_daemon_required[0], "security.master_key");
    assert_string_equal(config_daemon_required[1], "security.token_secret");
    assert_null(config_daemon_required[2]);
}

// --- the file's shape ----------------------------------------------------------------------------

static void test_unknown_key_is_an_error_naming_file_and_line(void **state) {
    fixture_t *f = *state;
    load_fails(f, "[db]\nurl = postgresql:///x\n\n# c\npoool = 3\n", "x.conf:5", "db.poool", NULL);
    load_fails(f, "[db]\nmigrate_file = x\n", "x.conf:2", "db.migrate_file", NULL);  // only secrets
}

static void test_unknown_section_is_an_error(void **state) {
    fixture_t *f = *state;
    load_fails(f, "[db]\npool = 3\n[database]\nurl = x\n", "x.conf:3", "database", NULL);
}

static void test_malformed_lines_are_errors(void **state) {
    fixture_t *f = *state;
    load_fails(f, "[db]\npool 3\n", "x.conf:2", NULL);
    load_fails(f, "[db\npool = 3\n", "x.conf:1", NULL);
    load_fails(f, "[db]\n= 3\n", "x.conf:2", NULL);
    load_fails(f, "pool = 3\n", "x.conf:1", "pool", NULL);                 // before any section
    load_fails(f, "[db]\nurl = \"postgresql:///x\n", "x.conf:2", "db.url", NULL);   // open quote
}

static void test_duplicate_key_is_an_error(void **state) {
    fixture_t *f = *state;
    load_fails(f, "[db]\npool = 3\n[http]\nlisten = 1.2.3.4:5\n[db]\npool = 4\n", "x.conf:6", "db.pool",
               "line 2", NULL);
}

static void test_size_limits(void **state) {
    fixture_t *f = *state;
    size_t n = 5000;
    char *text = malloc(n + 64);
    assert_non_null(text);
    strcpy(text, "[db]\nurl = ");
    size_t at = strlen(text);
    memset(text + at, 'a', n);
    strcpy(text + at + n, "\n");
    load_fails(f, text, "x.conf:2", NULL);
    free(text);

    size_t big = 1024 * 1024 + 64;   // comments only, just over 1 MiB (a multiple of 64)
    text = malloc(big + 1);
    assert_non_null(text);
    for (size_t i = 0; i < big; i += 64) {
        memset(text + i, '#', 63);
        text[i + 63] = '\n';
    }
    text[big] = '\0';
    load_fails(f, text, "x.conf", NULL);
    free(text);
}

// --- values --------------------------------------------------------------------------------------

static void test_bad_integers_are_errors(void **state) {
    fixture_t *f = *state;
    const char *bad[] = {"abc", "1.5", "12x", "0x10", "+5", "", "99999999999999999999"};
    char text[128];
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(text, sizeof text, "[db]\npool = %s\n", bad[i]);
        load_fails(f, text, "x.conf:2", "db.pool", NULL);
    }
    setenv("SWEETY_SCHEDULER_GRACE_S", "ten", 1);
    load_fails(f, "", "SWEETY_SCHEDULER_GRACE_S", "scheduler.grace_s", NULL);
}

static void test_out_of_range_values_are_errors(void **state) {
    fixture_t *f = *state;
    load_fails(f, "[db]\npool = 0\n", "x.conf:2", "db.pool", NULL);
    load_fails(f, "[db]\npool = 1001\n", "db.pool", NULL);
    load_fails(f, "[http]\nbooking_rate_per_min = 0\n", "http.booking_rate_per_min", NULL);
    load_fails(f, "[http]\nwebhook_rate_per_min = 1000001\n", "http.webhook_rate_per_min", NULL);
    load_fails(f, "[stripe]\ntolerance_s = -1\n", "stripe.tolerance_s", NULL);
    load_fails(f, "[security]\ntoken_ttl_s = 59\n", "security.token_ttl_s", NULL);
    load_fails(f, "[scheduler]\nmax_retries = 101\n", "scheduler.max_retries", NULL);
    load_fails(f, "[scheduler]\ngrace_s = 3601\n", "scheduler.grace_s", NULL);
    load_fails(f, "[scheduler]\nretry_base_s = 0\n", "scheduler.retry_base_s", NULL);
    load_fails(f, "[scheduler]\nretry_base_s = 60\nretry_max_s = 59\n", "x.conf:3", "scheduler.retry_max_s",
               NULL);
    load_fails(f, "[scheduler]\nretry_base_s = 700\n", "scheduler.retry_max_s", NULL);   // default 600
    load_fails(f, "[trace]\nkeep = 999\n", "trace.keep", NULL);
}

static void test_bad_log_level_is_an_error(void **state) {
    fixture_t *f = *state;
    load_fails(f, "[log]\nlevel = verbose\n", "x.conf:2", "log.level", NULL);
    setenv("SWEETY_LOG_LEVEL", "warning", 1);
    load_fails(f, "", "SWEETY_LOG_LEVEL", "log.level", NULL);
    setenv("SWEETY_LOG_LEVEL", "warn", 1);
    assert_int_equal(load(f, NULL), 0);
    assert_int_equal(f->cfg.log_level, SLOG_WARN);
}

static void test_listen_address_forms(void **state) {
    fixture_t *f = *state;
    static const struct { const char *text, *host; int port; } good[] = {
        {"0.0.0.0:80", "0.0.0.0", 80},
        {"localhost:65535", "localhost", 65535},
        {"sweety-web_1.internal:1", "sweety-web_1.internal", 1},
        {"[::]:8443", "::", 8443},
        {"[fe80::1]:9000", "fe80::1", 9000},
    };
    char text[128];
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        snprintf(text, sizeof text, "[http]\nlisten = %s\n", good[i].text);
        load_ok(f, text);
        assert_string_equal(f->cfg.http_listen, good[i].text);
        assert_string_equal(f->cfg.http_listen_host, good[i].host);
        assert_int_equal(f->cfg.http_listen_port, good[i].port);
        config_clear(&f->cfg);
    }
    const char *bad[] = {"127.0.0.1", ":8080", "127.0.0.1:", "127.0.0.1:0", "127.0.0.1:65536",
                         "127.0.0.1:80x", "::1:80", "[::1]80", "[::1:80", "[nothex]:80", "300.1.1.1:80",
                         "-bad.host:80", "a b:80"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(text, sizeof text, "[http]\nlisten = %s\n", bad[i]);
        load_fails(f, text, "x.conf:2", "http.listen", "host:port", NULL);
    }
}

static void test_bad_urls_are_errors(void **state) {
    fixture_t *f = *state;
    const char *bad[] = {"ftp://example.com", "api.stripe.com", "http://", "https:///path",
                         "http://host:99999", "http://a b.com", "http://user@host", "http://[::1",
                         "mailto:x@y"};
    char text[128];
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(text, sizeof text, "[stripe]\napi_base = %s\n", bad[i]);
        load_fails(f, text, "x.conf:2", "stripe.api_base", NULL);
    }
    load_fails(f, "[http]\npublic_url = localhost:8080\n", "http.public_url", NULL);
    load_fails(f, "[http]\ncors_origin = *\n", "http.cors_origin", NULL);
    setenv("SWEETY_VAPI_API_BASE", "vapi", 1);
    load_fails(f, "", "SWEETY_VAPI_API_BASE", "vapi.api_base", NULL);
    unsetenv("SWEETY_VAPI_API_BASE");
    load_ok(f, "[cryptomus]\napi_base = HTTPS://api.cryptomus.com:443/v1?x=1#y\n");
}

static void test_metrics_from_must_be_cidrs(void **state) {
    fixture_t *f = *state;
    load_ok(f, "[http]\nmetrics_from = 10.0.0.0/8, 192.168.1.7 ,::/0,2001:db8::/32, ::ffff:10.0.0.0/104\n");
    config_clear(&f->cfg);
    load_ok(f, "[http]\nmetrics_from =\n");   // nobody may read /metrics
    assert_string_equal(f->cfg.http_metrics_from, "");
    config_clear(&f->cfg);
    char many[65 * 16] = "";
    for (int i = 0; i < 65; i++) {
        char item[16];
        snprintf(item, sizeof item, "%s10.0.0.%d", i ? "," : "", i);
        strcat(many, item);
    }
    setenv("SWEETY_HTTP_METRICS_FROM", many, 1);   // more blocks than realtime/cidr.h holds
    load_fails(f, "", "SWEETY_HTTP_METRICS_FROM", "http.metrics_from", NULL);
    unsetenv("SWEETY_HTTP_METRICS_FROM");
    const char *bad[] = {"10.0.0.0/33", "::1/129", "foo/8", "10.0.0.0/8,", ",10.0.0.0/8",
                         "10.0.0.0/-1", "10.0.0.0/", "1.2.3/8", "10.0.0.0/8;::1/128", " , ", "10.0.0.0/8 10.1.0.0/16"};
    char text[128];
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(text, sizeof text, "[http]\nmetrics_from = %s\n", bad[i]);
        load_fails(f, text, "x.conf:2", "http.metrics_from", NULL);
    }
}

static void test_trace_endpoint_must_be_a_zeromq_endpoint(void **state) {
    fixture_t *f = *state;
    load_fails(f, "[trace]\nendpoint = /tmp/sweetyd-trace\n", "x.conf:2", "trace.endpoint", NULL);
    load_fails(f, "[trace]\nendpoint = ipc://\n", "trace.endpoint", NULL);
    load_fails(f, "[trace]\nendpoint = udp://1.2.3.4:5\n", "trace.endpoint", NULL);
}

static void test_required_strings_must_not_be_empty(void **state) {
    fixture_t *f = *state;
    load_fails(f, "[db]\nurl =\n", "x.conf:2", "db.url", NULL);
    load_fails(f, "[http]\nweb_root = \"\"\n", "http.web_root", NULL);
    load_ok(f, "[cryptomus]\nmerchant =\n");
    assert_null(f->cfg.cryptomus_merchant);
}

// --- the environment's noise ---------------------------------------------------------------------

static void test_unknown_sweety_variable_is_a_warning_not_an_error(void **state) {
    fixture_t *f = *state;
    setenv("SWEETY_DB_URLL", "postgresql:///typo", 1);
    setenv("SWEETY_TEST_CONFIG_PROBE", "harness", 1);
    setenv("SWEETY_STRIPE_SECRET_KEY_FILES", "secret-looking-value", 1);
    bool set_bin_dir = getenv("SWEETY_BIN_DIR") == NULL;
    if (set_bin_dir) setenv("SWEETY_BIN_DIR", "/nowhere", 1);

    fflush(stderr);
    int saved = dup(STDERR_FILENO);
    assert_true(saved >= 0);
    int fd = open("stderr.txt", O_RDWR | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    assert_true(dup2(fd, STDERR_FILENO) >= 0);
    int rc = load(f, NULL);
    fflush(stderr);
    assert_true(dup2(saved, STDERR_FILENO) >= 0);
    close(saved);
    if (set_bin_dir) unsetenv("SWEETY_BIN_DIR");

    char out[4096];
    ssize_t n = pread(fd, out, sizeof out - 1, 0);
    close(fd);
    assert_true(n >= 0);
    out[n] = '\0';
    if (rc != 0) fail_msg("unexpected error: %s", f->err);
    assert_defaults(&f->cfg);
    assert_non_null(strstr(out, "level=warn"));
    assert_non_null(strstr(out, "SWEETY_DB_URLL"));
    assert_non_null(strstr(out, "SWEETY_STRIPE_SECRET_KEY_FILES"));
    assert_null(strstr(out, "secret-looking-value"));   // names only, never values
    assert_null(strstr(out, "SWEETY_TEST_CONFIG_PROBE"));
    assert_null(strstr(out, "SWEETY_BIN_DIR"));
}

// --- the shipped example -------------------------------------------------------------------------

static void test_shipped_example_loads_to_the_defaults_and_lists_every_key(void **state) {
    fixture_t *f = *state;
    if (!f->example[0]) skip();
    assert_int_equal(load(f, f->example), 0);
    assert_defaults(&f->cfg);

    FILE *fp = fopen(f->example, "r");
    assert_non_null(fp);
    static char text[64 * 1024];
    size_t n = fread(text, 1, sizeof text - 1, fp);
    fclose(fp);
    text[n] = '\0';
    static const char *const documented[] = {
        "[db]", "\nurl = ", "\npool = ", "\nmigrate = ", "[http]", "\nlisten = ", "\npublic_url = ",
        "# cors_origin = ", "\nwebhook_rate_per_min = ", "\nbooking_rate_per_min = ", "\nmetrics_from = ",
        "\nweb_root = ", "[log]", "\nlevel = ", "[stripe]", "\napi_base = https://api.stripe.com",
        "# secret_key = ", "# secret_key_file = ", "# webhook_secret = ", "# webhook_secret_file = ",
        "\ntolerance_s = ", "[cryptomus]", "\napi_base = https://api.cryptomus.com", "# merchant = ",
        "# payment_key = ", "# payment_key_file = ", "[vapi]", "\napi_base = https://api.vapi.ai",
        "# webhook_hmac_secret = ", "# webhook_hmac_secret_file = ", "[security]", "# master_key = ",
        "# master_key_file = ", "# token_secret = ", "# token_secret_file = ", "\ntoken_ttl_s = ",
        "# webhook_secret_previous = ", "# webhook_secret_previous_file = ", "# payment_key_previous = ",
        "# payment_key_previous_file = ", "# webhook_hmac_secret_previous = ",
        "# webhook_hmac_secret_previous_file = ", "# master_key_previous = ", "# master_key_previous_file = ",
        "# token_secret_previous = ", "# token_secret_previous_file = ",
        "[scheduler]", "\nmax_retries = ", "\ngrace_s = ", "\nretry_base_s = ", "\nretry_max_s = ",
        "[trace]", "\nendpoint = ", "\nkeep = ",
    };
    for (size_t i = 0; i < sizeof documented / sizeof documented[0]; i++)
        if (!strstr(text, documented[i])) fail_msg("conf/sweetyd.conf does not show \"%s\"", documented[i]);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_defaults_apply_when_the_default_file_is_missing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_named_file_that_does_not_exist_is_an_error, setup, teardown),
        cmocka_unit_test_setup_teardown(test_default_file_is_read_from_the_working_directory, setup, teardown),
        cmocka_unit_test_setup_teardown(test_file_values_are_read, setup, teardown),
        cmocka_unit_test_setup_teardown(test_booleans_accept_every_spelling, setup, teardown),
        cmocka_unit_test_setup_teardown(test_environment_beats_the_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_every_key_has_an_environment_override, setup, teardown),
        cmocka_unit_test_setup_teardown(test_secret_file_content_is_the_value_without_its_trailing_newline,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_secret_and_secret_file_together_are_an_error, setup, teardown),
        cmocka_unit_test_setup_teardown(test_empty_environment_value_unsets_a_secret_from_the_file, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_unreadable_secret_file_names_the_key, setup, teardown),
        cmocka_unit_test_setup_teardown(test_oversized_secret_file_is_an_error, setup, teardown),
        cmocka_unit_test_setup_teardown(test_master_key_must_be_base64_of_32_bytes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_previous_master_key_must_be_base64_of_32_bytes_too, setup, teardown),
        cmocka_unit_test_setup_teardown(test_config_require_reports_a_missing_secret, setup, teardown),
        cmocka_unit_test_setup_teardown(test_config_require_checks_the_master_key_format, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unknown_key_is_an_error_naming_file_and_line, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unknown_section_is_an_error, setup, teardown),
        cmocka_unit_test_setup_teardown(test_malformed_lines_are_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_duplicate_key_is_an_error, setup, teardown),
        cmocka_unit_test_setup_teardown(test_size_limits, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_integers_are_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_out_of_range_values_are_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_log_level_is_an_error, setup, teardown),
        cmocka_unit_test_setup_teardown(test_listen_address_forms, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_urls_are_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_metrics_from_must_be_cidrs, setup, teardown),
        cmocka_unit_test_setup_teardown(test_trace_endpoint_must_be_a_zeromq_endpoint, setup, teardown),
        cmocka_unit_test_setup_teardown(test_required_strings_must_not_be_empty, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unknown_sweety_variable_is_a_warning_not_an_error, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_shipped_example_loads_to_the_defaults_and_lists_every_key, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
