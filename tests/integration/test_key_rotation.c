// tests/integration/test_key_rotation.c — rotating every key without downtime (docs/SECURITY.md,
// "Rotating keys"), against the real sweetyd, sweetyctl, PostgreSQL and sweety-sandbox, in the
// order an operator follows:
//   1. before: one set of keys; a VAPI account is added (its key sealed under master key A), a
//      call is placed, a paid booking is left waiting for its payment with its status token;
//   2. during: every key has a new value and the old one as `_previous` (a restart, as in a rolling
//      restart): the old status token still reads and subscribes, the Stripe event signed with the
//      old secret is accepted, VAPI messages under the old shared or HMAC secret and Cryptomus
//      webhooks under the old payment key are accepted, the account key still opens (previous
//      master key) so calls go on; `sweetyctl account rekey` seals it under B (a second run
//      changes nothing); /metrics says which secrets matched;
//   3. after: the `_previous` values are removed; the old ones are refused, calls still work
//      (the key now opens with B alone).
// And `account rekey` refuses, changing nothing, when a key opens with neither master key.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <curl/curl.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <time.h>
#include <unistd.h>

#include "common/crypto.h"
#include "tests/harness/wsclient.h"
#include "tests/integration/client.h"
#include "tests/integration/daemon.h"
#include "tests/integration/sandbox.h"

#define VAPI_KEY "vapi_rotation_key_0001"
#define VAPI_KEY_2 "vapi_rotation_key_0002"
#define MASTER_A_RAW "rotation-master-key-A-0123456789"   // 32 bytes each
#define MASTER_A "cm90YXRpb24tbWFzdGVyLWtleS1BLTAxMjM0NTY3ODk="
#define MASTER_B_RAW "rotation-master-key-B-0123456789"
#define MASTER_B "cm90YXRpb24tbWFzdGVyLWtleS1CLTAxMjM0NTY3ODk="
#define MASTER_C "cm90YXRpb24tbWFzdGVyLWtleS1DLTAxMjM0NTY3ODk="
#define TOKEN_OLD "token-secret-before-rotation"
#define TOKEN_NEW "token-secret-after-rotation"
#define STRIPE_NEW "whsec_after_rotation_secret"
#define VAPI_OLD "vapi-secret-before-rotation"
#define VAPI_NEW "vapi-secret-after-rotation"
#define HMAC_OLD "vapi-hmac-before-rotation"
#define HMAC_NEW "vapi-hmac-after-rotation"
#define CRYPTOMUS_OLD "cryptomusKeyBeforeRotation"   // the previous payment key (webhooks only)

typedef enum { BEFORE, DURING, AFTER } phase_t;

typedef struct {
    test_daemon_t d;
    test_sandbox_t sb;
    client_booked_t waiting;   // booked before the rotation, paid during it
    char account[40], second[40];
} fixture_t;

static fixture_t *F;

// ---- helpers ------------------------------------------------------------------------------------

static int write_config(phase_t phase) {
    char text[4096];
    const test_sandbox_t *s = &F->sb;
    snprintf(text, sizeof text,
             "[db]\nurl = %s\n"
             "[http]\nlisten = 127.0.0.1:%d\npublic_url = %s\nbooking_rate_per_min = 100000\n"
             "webhook_rate_per_min = 100000\n"
             "[log]\nlevel = debug\n"
             "[stripe]\napi_base = %s\nsecret_key = " SANDBOX_STRIPE_KEY "\nwebhook_secret = %s\n%s"
             "[cryptomus]\napi_base = %s\nmerchant = " SANDBOX_CRYPTOMUS_MERCHANT "\npayment_key = " SANDBOX_CRYPTOMUS_KEY
             "\n%s"
             "[vapi]\napi_base = %s\nwebhook_secret = %s\n%swebhook_hmac_secret = %s\n%s"
             "[security]\nmaster_key = %s\n%stoken_secret = %s\n%s"
             "[trace]\nendpoint = ipc://%s/trace\n",
             F->d.db_url, F->d.port, F->d.base_url, s->url, phase == BEFORE ? SANDBOX_STRIPE_WHSEC : STRIPE_NEW,
             phase == DURING ? "webhook_secret_previous = " SANDBOX_STRIPE_WHSEC "\n" : "", s->url,
             phase == DURING ? "payment_key_previous = " CRYPTOMUS_OLD "\n" : "", s->url,
             phase == BEFORE ? VAPI_OLD : VAPI_NEW, phase == DURING ? "webhook_secret_previous = " VAPI_OLD "\n" : "",
             phase == BEFORE ? HMAC_OLD : HMAC_NEW, phase == DURING ? "webhook_hmac_secret_previous = " HMAC_OLD "\n" : "",
             phase == BEFORE ? MASTER_A : MASTER_B, phase == DURING ? "master_key_previous = " MASTER_A "\n" : "",
             phase == BEFORE ? TOKEN_OLD : TOKEN_NEW, phase == DURING ? "token_secret_previous = " TOKEN_OLD "\n" : "",
             F->d.dir);
    return harness_write_file(F->d.conf, text);
}

// The sandbox signs Stripe events and VAPI messages with the given secrets.
static int sandbox_start(const char *stripe_whsec, const char *vapi_hmac) {
    test_sandbox_t *s = &F->sb;
    char bin[512], listen[64], hook[128];
    if (harness_bin_path("sweety-sandbox", bin, sizeof bin) != 0) return -1;
    snprintf(listen, sizeof listen, "127.0.0.1:%d", s->port);
    snprintf(hook, sizeof hook, "%s/webhooks/stripe", F->d.base_url);
    const char *argv[] = {bin, "--listen", listen, "--public-url", s->url, "--stripe-secret-key", SANDBOX_STRIPE_KEY,
                          "--stripe-webhook-secret", stripe_whsec, "--stripe-webhook-url", hook,
                          "--cryptomus-merchant", SANDBOX_CRYPTOMUS_MERCHANT, "--cryptomus-payment-key",
                          SANDBOX_CRYPTOMUS_KEY, "--webhook-retry-ms", "200,400,800,1600", "--vapi-hmac-secret",
                          vapi_hmac, "--vapi-key", VAPI_KEY ":10", "--vapi-default-outcome", "answer:1", NULL};
    s->proc = harness_proc_spawn(argv, NULL, s->log);
    if (!s->proc) return -1;
    char health[128];
    snprintf(health, sizeof health, "%s/_sandbox/health", s->url);
    return harness_http_wait_status(health, 200, 20000);
}

static void restart_daemon(phase_t phase) {
    if (F->d.proc) assert_int_equal(test_daemon_stop(&F->d, 10000), 0);
    assert_int_equal(write_config(phase), 0);
    assert_int_equal(test_daemon_start(&F->d), 0);
}

static int ctl(const char *const *args, char *out_line, size_t size, char **err_out) {
    char *out = NULL, *err = NULL;
    int rc = test_daemon_ctl(&F->d, args, &out, &err);
    if (rc != 0 && !err_out) fprintf(stderr, "sweetyctl %s %s: %s\n", args[0], args[1] ? args[1] : "", err ? err : "");
    if (out_line) {
        snprintf(out_line, size, "%s", out ? out : "");
        out_line[strcspn(out_line, "\n")] = '\0';
    }
    if (err_out)
        *err_out = err;
    else
        free(err);
    free(out);
    return rc;
}

static int add_account(const char *name, const char *key, char *id, size_t size) {
    setenv("SWEETY_TEST_ROTATION_KEY", key, 1);
    int rc = ctl((const char *const[]){"account", "add", "--name", name, "--api-key-env", "SWEETY_TEST_ROTATION_KEY",
                                       "--phone-number-id", "pn_rot", "--max-concurrent", "4", NULL},
                 id, size, NULL);
    unsetenv("SWEETY_TEST_ROTATION_KEY");
    return rc;
}

// The account's stored key opens with the raw master key given (and then is VAPI_KEY or key).
static bool opens_with(const char *account, const char *master_raw, const char *key) {
    char sql[256], enc[1024] = "", nonce[64] = "";
    snprintf(sql, sizeof sql, "SELECT encode(api_key_enc, 'hex') FROM vapi_accounts WHERE id = '%s'", account);
    assert_int_equal(harness_pg_query(F->d.db_url, sql, enc, sizeof enc), 0);
    snprintf(sql, sizeof sql, "SELECT encode(api_key_nonce, 'hex') FROM vapi_accounts WHERE id = '%s'", account);
    assert_int_equal(harness_pg_query(F->d.db_url, sql, nonce, sizeof nonce), 0);
    unsigned char sealed[512], iv[CRYPTO_NONCE_LEN];
    size_t len = strlen(enc) / 2;
    assert_true(len > 0 && strlen(nonce) == 2 * CRYPTO_NONCE_LEN);
    for (size_t i = 0; i < len; i++) sscanf(enc + 2 * i, "%2hhx", &sealed[i]);
    for (size_t i = 0; i < CRYPTO_NONCE_LEN; i++) sscanf(nonce + 2 * i, "%2hhx", &iv[i]);
    unsigned char *plain = NULL;
    size_t plain_len = 0;
    if (crypto_open((const unsigned char *)master_raw, sealed, len, iv, &plain, &plain_len) != 0) return false;
    bool same = strcmp((char *)plain, key) == 0;
    crypto_secret_free(plain, plain_len);
    return same;
}

static void free_trial_completes(void) {
    char phone[20];
    client_new_phone(phone, sizeof phone);
    client_booked_t b;
    assert_int_equal(client_book_into(&F->d, "free_trial", NULL, phone, &b), 201);
    assert_int_equal(client_wait_status(&F->d, b.id, b.token, "completed", 30000), 0);
}

static long get_booking(const client_booked_t *b) {
    json_t *j = NULL;
    long st = 0;
    client_get_booking(&F->d, b->id, b->token, &j, &st);
    json_decref(j);
    return st;
}

static bool ws_done(void *arg) {
    const wsc_t *c = arg;
    return wsc_is_closed(c) || wsc_count(c) > 0;
}

// Subscribes with the booking's token; returns the first frame's "type" ("subscribed", "error").
static void ws_subscribe(const client_booked_t *b, char *type, size_t size, int *close_code) {
    wsc_ctx_t *ws = wsc_ctx_new();
    wsc_t *c = wsc_connect(ws, F->d.port, "/ws", NULL);
    for (int i = 0; i < 500 && !wsc_is_open(c) && !wsc_is_closed(c); i++) wsc_service(ws, 10);
    assert_true(wsc_is_open(c));
    char sub[1400];
    snprintf(sub, sizeof sub, "{\"type\":\"subscribe\",\"booking_id\":\"%s\",\"token\":\"%s\",\"after_seq\":0}", b->id,
             b->token);
    assert_int_equal(wsc_send(c, sub), 0);
    assert_int_equal(wsc_wait(ws, ws_done, c, 10000), 0);
    json_t *j = wsc_count(c) ? json_loads(wsc_msg(c, 0), 0, NULL) : NULL;
    snprintf(type, size, "%s", json_string_value(json_object_get(j, "type")) ? json_string_value(json_object_get(j, "type")) : "");
    json_decref(j);
    if (close_code) {
        for (int i = 0; i < 500 && !wsc_is_closed(c); i++) wsc_service(ws, 10);
        *close_code = wsc_close_code(c);
    }
    wsc_ctx_destroy(&ws);
}

// A VAPI server message about a call we never placed (verified: 200, unknown target), sent with
// the given shared secret and signed with the given HMAC secret.
static long vapi_post(const char *secret, const char *hmac_secret) {
    const char *body = "{\"message\":{\"type\":\"status-update\",\"status\":\"ringing\",\"call\":{\"id\":"
                       "\"9d1c2b9e-1d2a-4f43-9a57-0c4f1f0d9e99\"}}}";
    char ts[32], payload[512], hex[65], sig[128], tsh[64], sec[128];
    snprintf(ts, sizeof ts, "%lld", (long long)time(NULL));
    snprintf(payload, sizeof payload, "%s.%s", ts, body);
    unsigned char mac[32];
    unsigned int maclen = 0;
    HMAC(EVP_sha256(), hmac_secret, (int)strlen(hmac_secret), (const unsigned char *)payload, strlen(payload), mac,
         &maclen);
    for (int i = 0; i < 32; i++) sprintf(hex + 2 * i, "%02x", mac[i]);
    snprintf(sig, sizeof sig, "x-signature: %s", hex);
    snprintf(tsh, sizeof tsh, "x-timestamp: %s", ts);
    snprintf(sec, sizeof sec, "X-Vapi-Secret: %s", secret);
    const char *headers[] = {"Content-Type: application/json", sec, sig, tsh, NULL};
    return client_api(&F->d, "POST", "/webhooks/vapi", body, headers, NULL, NULL);
}

// A Cryptomus webhook for an invoice we do not know, signed (md5(base64(body) + key)) with key.
static long cryptomus_post(const char *key) {
    const char *unsigned_body = "{\"type\":\"payment\",\"uuid\":\"3f1c2b9e-1d2a-4f43-9a57-0c4f1f0d9e98\","
                                "\"order_id\":\"00000000-0000-4000-8000-00000000abcd\",\"amount\":\"15.00\","
                                "\"is_final\":true,\"status\":\"paid\",\"currency\":\"USD\"}";
    size_t n = strlen(unsigned_body);
    unsigned char b64[512];
    EVP_EncodeBlock(b64, (const unsigned char *)unsigned_body, (int)n);
    char text[1024];
    snprintf(text, sizeof text, "%s%s", (char *)b64, key);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    EVP_Digest(text, strlen(text), md, &mdlen, EVP_md5(), NULL);
    char hex[33], body[1024];
    for (int i = 0; i < 16; i++) sprintf(hex + 2 * i, "%02x", md[i]);
    snprintf(body, sizeof body, "%.*s,\"sign\":\"%s\"}", (int)(n - 1), unsigned_body, hex);
    return client_api(&F->d, "POST", "/webhooks/cryptomus", body, CLIENT_JSON_HDR, NULL, NULL);
}

// The value of one sample of /metrics, -1 when absent.
static long long metric(const char *sample) {
    char *raw = NULL;
    client_api(&F->d, "GET", "/metrics", NULL, NULL, NULL, &raw);
    char needle[256];
    snprintf(needle, sizeof needle, "\n%s ", sample);
    const char *p = raw ? strstr(raw, needle) : NULL;
    long long v = p ? strtoll(p + strlen(needle), NULL, 10) : -1;
    free(raw);
    return v;
}

#define MATCHES(key, which) "sweety_secret_matches_total{key=\"" key "\",which=\"" which "\"}"

// ---- set-up -------------------------------------------------------------------------------------

static int setup(void **state) {
    static fixture_t f;
    F = &f;
    srand((unsigned)getpid());
    test_daemon_t *d = &f.d;
    if (harness_tmpdir(d->dir, sizeof d->dir) != 0) return -1;
    if (harness_pg_create_db("sweety", d->db_url, sizeof d->db_url) != 0) return -1;
    d->port = harness_free_port();
    snprintf(d->conf, sizeof d->conf, "%s/sweetyd.conf", d->dir);
    snprintf(d->log, sizeof d->log, "%s/sweetyd.log", d->dir);
    snprintf(d->base_url, sizeof d->base_url, "http://127.0.0.1:%d", d->port);
    test_sandbox_reserve(&f.sb, d->dir);
    if (write_config(BEFORE) != 0 || sandbox_start(SANDBOX_STRIPE_WHSEC, HMAC_OLD) != 0) return -1;
    *state = &f;
    return 0;
}

static int teardown(void **state) {
    fixture_t *f = *state;
    if (!f) return -1;
    int code = f->d.proc ? test_daemon_stop(&f->d, 10000) : 0;
    test_sandbox_stop(&f->sb);
    if (code != 0) fprintf(stderr, "sweetyd exited %d\n", code);
    test_daemon_cleanup(&f->d);
    return code == 0 ? 0 : -1;
}

// ---- tests --------------------------------------------------------------------------------------

static void test_before_the_rotation_calls_use_the_key_sealed_under_master_key_a(void **state) {
    restart_daemon(BEFORE);   // migrates
    assert_int_equal(add_account("rotation", VAPI_KEY, F->account, sizeof F->account), 0);
    assert_true(opens_with(F->account, MASTER_A_RAW, VAPI_KEY));
    const char *plans[] = {"free_trial", "standard"};
    for (size_t i = 0; i < 2; i++) {
        char assistant[32];
        snprintf(assistant, sizeof assistant, "asst_%s", plans[i]);
        assert_int_equal(ctl((const char *const[]){"plan", "set", plans[i], "--duration-seconds", "30", "--assistant-id",
                                                   assistant, NULL},
                             NULL, 0, NULL),
                         0);
        assert_int_equal(ctl((const char *const[]){"agent", "add", "--account", F->account, "--plan", plans[i],
                                                   "--max-concurrent", "2", NULL},
                             NULL, 0, NULL),
                         0);
    }
    free_trial_completes();
    char phone[20];
    client_new_phone(phone, sizeof phone);
    assert_int_equal(client_book_into(&F->d, "standard", "stripe", phone, &F->waiting), 201);
    assert_int_equal(get_booking(&F->waiting), 200);
}

static void test_during_the_rotation_old_and_new_secrets_are_both_accepted(void **state) {
    restart_daemon(DURING);
    // The status token signed with the old secret still reads and subscribes.
    assert_int_equal(get_booking(&F->waiting), 200);
    char type[32];
    ws_subscribe(&F->waiting, type, sizeof type, NULL);
    assert_string_equal(type, "subscribed");
    // Stripe still signs with the old secret: the payment is accepted; the call is placed with the
    // account key, still sealed under the previous master key; VAPI's messages carry the new shared
    // secret (given with the call) and the old HMAC signature.
    assert_int_equal(test_sandbox_complete(&F->sb, F->waiting.session, "{\"payment_status\":\"paid\"}"), 200);
    assert_int_equal(client_wait_status(&F->d, F->waiting.id, F->waiting.token, "completed", 30000), 0);
    free_trial_completes();
    // A call placed before the rotation still sends the old shared secret; Cryptomus may still sign
    // with the old payment key. Either is accepted, a third value is not.
    assert_int_equal(vapi_post(VAPI_OLD, HMAC_NEW), 200);
    assert_int_equal(vapi_post(VAPI_NEW, HMAC_OLD), 200);
    assert_int_equal(vapi_post("vapi-secret-of-nobody", HMAC_NEW), 401);
    assert_int_equal(vapi_post(VAPI_NEW, "vapi-hmac-of-nobody"), 401);
    assert_int_equal(cryptomus_post(CRYPTOMUS_OLD), 200);
    assert_int_equal(cryptomus_post(SANDBOX_CRYPTOMUS_KEY), 200);
    assert_int_equal(cryptomus_post("cryptomusKeyOfNobody"), 400);

    // The operator sees which secrets are still in use.
    assert_true(metric(MATCHES("stripe.webhook_secret", "previous")) >= 1);
    assert_true(metric(MATCHES("security.token_secret", "previous")) >= 2);
    assert_true(metric(MATCHES("vapi.webhook_secret", "previous")) >= 1);
    assert_true(metric(MATCHES("vapi.webhook_secret", "current")) >= 2);
    assert_true(metric(MATCHES("vapi.webhook_hmac_secret", "previous")) >= 2);
    assert_true(metric(MATCHES("vapi.webhook_hmac_secret", "current")) >= 1);
    assert_int_equal(metric(MATCHES("cryptomus.payment_key", "previous")), 1);
    assert_int_equal(metric(MATCHES("cryptomus.payment_key", "current")), 1);
    char *log = harness_read_file(F->d.log);
    assert_non_null(strstr(log, "event=account_key_previous_master"));
    assert_non_null(strstr(log, "event=secret_previous_matched key=stripe.webhook_secret"));
    assert_null(strstr(log, MASTER_A));
    assert_null(strstr(log, TOKEN_OLD));
    assert_null(strstr(log, VAPI_OLD));
    free(log);

    // Re-encrypt the stored keys under the new master key: once, and a second run changes nothing.
    char out[256];
    assert_int_equal(ctl((const char *const[]){"account", "rekey", NULL}, out, sizeof out, NULL), 0);
    assert_string_equal(out, "accounts rekeyed: 1 of 1 (the others were already under security.master_key)");
    assert_true(opens_with(F->account, MASTER_B_RAW, VAPI_KEY));
    assert_false(opens_with(F->account, MASTER_A_RAW, VAPI_KEY));
    // A key added now is sealed under the new master key.
    char *second = F->second;
    assert_int_equal(add_account("rotation-2", VAPI_KEY_2, second, sizeof F->second), 0);
    assert_true(opens_with(second, MASTER_B_RAW, VAPI_KEY_2));
    char before[1024], after[1024];
    assert_int_equal(harness_pg_query(F->d.db_url, "SELECT string_agg(encode(api_key_enc, 'hex'), ',' ORDER BY id)"
                                                   " FROM vapi_accounts", before, sizeof before), 0);
    assert_int_equal(ctl((const char *const[]){"account", "rekey", NULL}, out, sizeof out, NULL), 0);
    assert_string_equal(out, "accounts rekeyed: 0 of 2 (the others were already under security.master_key)");
    assert_int_equal(harness_pg_query(F->d.db_url, "SELECT string_agg(encode(api_key_enc, 'hex'), ',' ORDER BY id)"
                                                   " FROM vapi_accounts", after, sizeof after), 0);
    assert_string_equal(before, after);
    assert_int_equal(ctl((const char *const[]){"account", "disable", second, NULL}, NULL, 0, NULL), 0);
    free_trial_completes();   // and calls go on, with the re-encrypted key
}

static void test_after_the_rotation_only_the_new_secrets_work(void **state) {
    // Stripe and the VAPI HMAC credential now sign with the new secrets only.
    test_sandbox_stop(&F->sb);
    assert_int_equal(sandbox_start(STRIPE_NEW, HMAC_NEW), 0);
    restart_daemon(AFTER);
    // The old token is refused (404, 4401) ...
    assert_int_equal(get_booking(&F->waiting), 404);
    char type[32];
    int code = 0;
    ws_subscribe(&F->waiting, type, sizeof type, &code);
    assert_string_equal(type, "error");
    assert_int_equal(code, 4401);
    // ... and so are the old webhook secrets.
    assert_int_equal(vapi_post(VAPI_OLD, HMAC_NEW), 401);
    assert_int_equal(vapi_post(VAPI_NEW, HMAC_OLD), 401);
    assert_int_equal(vapi_post(VAPI_NEW, HMAC_NEW), 200);
    assert_int_equal(cryptomus_post(CRYPTOMUS_OLD), 400);
    // The key opens with the new master key alone: calls go on, paid ones through the new
    // Stripe secret.
    free_trial_completes();
    char phone[20];
    client_new_phone(phone, sizeof phone);
    client_booked_t b;
    assert_int_equal(client_book_into(&F->d, "standard", "stripe", phone, &b), 201);
    assert_int_equal(test_sandbox_complete(&F->sb, b.session, "{\"payment_status\":\"paid\"}"), 200);
    assert_int_equal(client_wait_status(&F->d, b.id, b.token, "completed", 30000), 0);
    assert_int_equal(metric(MATCHES("stripe.webhook_secret", "previous")), 0);
    assert_int_equal(metric(MATCHES("security.token_secret", "previous")), 0);
    assert_true(metric(MATCHES("stripe.webhook_secret", "current")) >= 1);
    char *log = harness_read_file(F->d.log);
    const char *last_start = log;
    for (const char *p = log; (p = strstr(p, "event=started listen=")); p++) last_start = p;
    assert_true(last_start != log);
    assert_null(strstr(last_start, "event=secret_previous_matched"));   // nothing since the restart
    assert_null(strstr(last_start, "event=account_key_previous_master"));
    free(log);
}

static void test_rekey_refuses_a_key_it_cannot_open_and_changes_nothing(void **state) {
    char before[1024], after[1024];
    const char *sql = "SELECT string_agg(encode(api_key_enc, 'hex') || encode(api_key_nonce, 'hex'), ',' ORDER BY id)"
                      " FROM vapi_accounts";
    assert_int_equal(harness_pg_query(F->d.db_url, sql, before, sizeof before), 0);
    // A master key that is neither the one the keys are under, nor given as the previous one.
    char conf[700], text[1024], bin[512];
    snprintf(conf, sizeof conf, "%s/other-master.conf", F->d.dir);
    snprintf(text, sizeof text, "[db]\nurl = %s\n[security]\nmaster_key = " MASTER_C "\nmaster_key_previous = " MASTER_A
             "\n", F->d.db_url);
    assert_int_equal(harness_write_file(conf, text), 0);
    assert_int_equal(harness_bin_path("sweetyctl", bin, sizeof bin), 0);
    const char *argv[] = {bin, "-c", conf, "account", "rekey", NULL};
    char *out = NULL, *err = NULL;
    assert_int_equal(harness_run(argv, NULL, 60000, &out, &err), 1);
    assert_true(strstr(err, F->account) || strstr(err, F->second));   // the first in id order
    assert_non_null(strstr(err, "nothing was changed"));
    assert_null(strstr(err, MASTER_C));
    free(out);
    free(err);
    assert_int_equal(harness_pg_query(F->d.db_url, sql, after, sizeof after), 0);
    assert_string_equal(before, after);
    assert_true(opens_with(F->account, MASTER_B_RAW, VAPI_KEY));
    // Without any master key it says which key is missing.
    snprintf(text, sizeof text, "[db]\nurl = %s\n", F->d.db_url);
    assert_int_equal(harness_write_file(conf, text), 0);
    assert_int_equal(harness_run(argv, NULL, 60000, &out, &err), 1);
    assert_non_null(strstr(err, "security.master_key"));
    free(out);
    free(err);
    assert_int_equal(harness_run((const char *const[]){bin, "-c", conf, "account", "rekey", "extra", NULL}, NULL, 60000,
                                 NULL, NULL),
                     2);
}

int main(void) {
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_before_the_rotation_calls_use_the_key_sealed_under_master_key_a),
        cmocka_unit_test(test_during_the_rotation_old_and_new_secrets_are_both_accepted),
        cmocka_unit_test(test_after_the_rotation_only_the_new_secrets_work),
        cmocka_unit_test(test_rekey_refuses_a_key_it_cannot_open_and_changes_nothing),
    };
    int failed = cmocka_run_group_tests_name("key_rotation", tests, setup, teardown);
    curl_global_cleanup();
    return failed;
}
