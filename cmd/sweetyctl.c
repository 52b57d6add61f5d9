// cmd/sweetyctl.c — the operator's tool (CONTRACT.md, "Programs").
//
//   sweetyctl [-c FILE] <subcommand> [options]
// Exit codes: 0 success, 1 a failure explained on stderr, 2 bad usage.
// Subcommands are a table: name, usage line, handler. Each handler gets the loaded configuration
// and its own arguments.
#include <ctype.h>
#include <getopt.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bus/trace_client.h"
#include "common/crypto.h"
#include "common/util.h"
#include "conf/config.h"
#include "storage/accounts.h"
#include "storage/bookings.h"
#include "storage/db.h"
#include "storage/payments.h"
#include "storage/queue.h"
#include "storage/migrate.h"
#include "storage/plans.h"

#define CTL_OK 0
#define CTL_FAIL 1
#define CTL_USAGE 2

typedef struct {
    const config_t *cfg;
    logger_t log;
} ctl_t;

typedef struct {
    const char *name;      // "migrate", "plan set", ...
    const char *usage;
    int (*run)(ctl_t *ctl, int argc, char **argv);
} ctl_command_t;

static db_t *ctl_connect(ctl_t *ctl) {
    db_t *db = db_new(ctl->cfg->db_url, &ctl->log);
    if (db && db_wait(db, 10000) == 0) return db;
    fprintf(stderr, "sweetyctl: cannot connect to the database (db.url)\n");
    db_destroy(&db);
    return NULL;
}

static int cmd_migrate(ctl_t *ctl, int argc, char **argv) {
    if (argc != 1) return CTL_USAGE;
    db_t *db = ctl_connect(ctl);
    if (!db) return CTL_FAIL;
    int applied = 0;
    char err[512];
    int rc = migrate_apply(db, &ctl->log, &applied, err, sizeof err);
    db_destroy(&db);
    if (rc != 0) {
        fprintf(stderr, "sweetyctl: migrate: %s\n", err);
        return CTL_FAIL;
    }
    printf("migrations applied: %d\n", applied);
    return CTL_OK;
}

static int cmd_plan_set(ctl_t *ctl, int argc, char **argv) {
    static const struct option opts[] = {{"price-cents", required_argument, NULL, 'p'},
                                         {"duration-seconds", required_argument, NULL, 'd'},
                                         {"assistant-id", required_argument, NULL, 'a'},
                                         {"currency", required_argument, NULL, 'c'},
                                         {NULL, 0, NULL, 0}};
    plan_update_t upd = {0};
    int64_t v;
    int opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (opt) {
        case 'p':
            if (util_parse_int64(optarg, 0, 100000000, &v) != 0) return CTL_USAGE;
            upd.set_price = true;
            upd.price_cents = v;
            break;
        case 'd':
            if (util_parse_int64(optarg, 10, 43200, &v) != 0) return CTL_USAGE;
            upd.set_duration = true;
            upd.duration_seconds = (int)v;
            break;
        case 'a': upd.assistant_id = optarg; break;
        case 'c': upd.currency = optarg; break;
        default: return CTL_USAGE;
        }
    }
    if (optind != argc - 1) return CTL_USAGE;
    const char *key = argv[optind];
    db_t *db = ctl_connect(ctl);
    if (!db) return CTL_FAIL;
    int rc = plans_set(db, key, &upd);
    db_destroy(&db);
    if (rc == -2) {
        fprintf(stderr, "sweetyctl: unknown plan '%s' (free_trial, standard, extended, premium)\n", key);
        return CTL_FAIL;
    }
    if (rc != 0) {
        fprintf(stderr, "sweetyctl: plan set failed\n");
        return CTL_FAIL;
    }
    printf("plan %s updated\n", key);
    return CTL_OK;
}

static int cmd_trace(ctl_t *ctl, int argc, char **argv) {
    static const struct option opts[] = {{"topic", required_argument, NULL, 't'},
                                         {"count", required_argument, NULL, 'n'},
                                         {"timeout", required_argument, NULL, 'w'},
                                         {NULL, 0, NULL, 0}};
    const char *topic = "";
    int64_t count = 0, timeout_s = 0;
    int opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (opt) {
        case 't': topic = optarg; break;
        case 'n':
            if (util_parse_int64(optarg, 1, INT64_MAX, &count) != 0) return CTL_USAGE;
            break;
        case 'w':
            if (util_parse_int64(optarg, 1, 86400, &timeout_s) != 0) return CTL_USAGE;
            break;
        default: return CTL_USAGE;
        }
    }
    if (optind != argc) return CTL_USAGE;
    int rc = trace_client_run(ctl->cfg->trace_endpoint, topic, count, (int)timeout_s * 1000, stdout);
    if (rc == 1) fprintf(stderr, "sweetyctl: trace: no message for %lld s\n", (long long)timeout_s);
    return rc == 0 ? CTL_OK : CTL_FAIL;
}

// Strips a --json flag from argv (accepted anywhere after the subcommand). Returns whether it was there.
static bool take_json_flag(int *argc, char **argv) {
    bool found = false;
    int out = 0;
    for (int i = 0; i < *argc; i++) {
        if (strcmp(argv[i], "--json") == 0)
            found = true;
        else
            argv[out++] = argv[i];
    }
    *argc = out;
    return found;
}

// Prints one JSON document: compact with --json, indented for people otherwise. Takes doc.
static int print_json(json_t *doc, bool compact) {
    if (!doc) {
        fprintf(stderr, "sweetyctl: out of memory\n");
        return CTL_FAIL;
    }
    char *text = json_dumps(doc, compact ? JSON_COMPACT : JSON_INDENT(2));
    json_decref(doc);
    if (!text) return CTL_FAIL;
    puts(text);
    free(text);
    return CTL_OK;
}

static json_t *str_or_null(const char *s) { return s && *s ? json_string(s) : json_null(); }

static json_t *booking_json(const booking_view_t *b) {
    return json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:o, s:I, s:s, s:i}", "id", b->id, "status", b->status, "plan",
                     b->plan, "payment_method", b->payment_method, "created_at", b->created_at, "updated_at",
                     b->updated_at, "scheduled_for", str_or_null(b->scheduled_for), "price_cents",
                     (json_int_t)b->price_cents, "currency", b->currency, "duration_seconds", b->duration_seconds);
}

static json_t *payment_json(const payment_t *p) {
    return json_pack("{s:s, s:s, s:I, s:s, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:s, s:s}", "provider", p->provider,
                     "status", p->status, "amount_cents", (json_int_t)p->amount_cents, "currency", p->currency,
                     "session_id", str_or_null(p->session_id), "payment_intent", str_or_null(p->payment_intent),
                     "invoice_uuid", str_or_null(p->invoice_uuid), "refund_id", str_or_null(p->refund_id), "paid_at",
                     str_or_null(p->paid_at), "refunded_at", str_or_null(p->refunded_at), "error",
                     str_or_null(p->error_message), "created_at", p->created_at, "updated_at", p->updated_at);
}

static json_t *queue_json(const queue_entry_t *q) {
    return json_pack("{s:s, s:s, s:i, s:i, s:i, s:s, s:o, s:o, s:o}", "status", q->status, "plan", q->plan,
                     "priority", q->priority, "attempt", q->attempt, "max_retries", q->max_retries, "next_attempt_at",
                     q->next_attempt_at, "agent_id", str_or_null(q->agent_id), "account_id", str_or_null(q->account_id),
                     "vapi_call_id", str_or_null(q->vapi_call_id));
}

// booking show ID: the booking, its payment, its queue entry and its history. No personal data:
// operators look bookings up by id.
static int cmd_booking_show(ctl_t *ctl, int argc, char **argv) {
    bool compact = take_json_flag(&argc, argv);
    if (argc != 2) return CTL_USAGE;
    db_t *db = ctl_connect(ctl);
    if (!db) return CTL_FAIL;
    booking_view_t b;
    int rc = bookings_get(db, argv[1], &b);
    if (rc != STORE_OK) {
        db_destroy(&db);
        fprintf(stderr, "sweetyctl: %s\n", rc == STORE_ERR_NOT_FOUND ? "no such booking" : "database error");
        return CTL_FAIL;
    }
    json_t *doc = json_pack("{s:o}", "booking", booking_json(&b));
    payment_t p = {0};
    json_object_set_new(doc, "payment", payments_get(db, b.id, &p) == STORE_OK ? payment_json(&p) : json_null());
    payment_clear(&p);
    queue_entry_t q;
    json_object_set_new(doc, "queue", queue_get(db, b.id, &q) == STORE_OK ? queue_json(&q) : json_null());
    booking_event_t *events = NULL;
    size_t n = 0;
    json_t *list = json_array();
    if (bookings_events(db, b.id, 0, &events, &n) == STORE_OK)
        for (size_t i = 0; i < n; i++)
            json_array_append_new(list, json_pack("{s:i, s:s, s:s}", "seq", events[i].seq, "status", events[i].status,
                                                  "at", events[i].at));
    free(events);
    json_object_set_new(doc, "events", list);
    db_destroy(&db);
    return print_json(doc, compact);
}

// ---- aligned tables for people -----------------------------------------------------------------

#define TABLE_MAX_COLS 10

typedef struct {
    size_t ncols;
    size_t nrows;        // header included
    size_t cap;
    char **cells;        // nrows * ncols strings, malloc'ed
    bool oom;
} table_t;

static void table_add(table_t *t, const char *const *row) {
    if (t->oom) return;
    if (t->nrows == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 16;
        char **grown = realloc(t->cells, cap * t->ncols * sizeof *grown);
        if (!grown) {
            t->oom = true;
            return;
        }
        t->cells = grown;
        t->cap = cap;
    }
    for (size_t c = 0; c < t->ncols; c++) {
        char *copy = strdup(row[c] ? row[c] : "");
        if (!copy) t->oom = true;
        t->cells[t->nrows * t->ncols + c] = copy;
    }
    t->nrows++;
}

// Prints the table with each column as wide as its widest cell (two spaces between), then frees it.
static int table_print(table_t *t) {
    int rc = t->oom ? CTL_FAIL : CTL_OK;
    size_t width[TABLE_MAX_COLS] = {0};
    for (size_t r = 0; r < t->nrows && !t->oom; r++)
        for (size_t c = 0; c < t->ncols; c++) {
            size_t w = strlen(t->cells[r * t->ncols + c]);
            if (w > width[c]) width[c] = w;
        }
    for (size_t r = 0; r < t->nrows && !t->oom; r++) {
        for (size_t c = 0; c < t->ncols; c++) {
            const char *cell = t->cells[r * t->ncols + c];
            if (c + 1 == t->ncols)
                printf("%s\n", cell);
            else
                printf("%-*s  ", (int)width[c], cell);
        }
    }
    for (size_t i = 0; i < t->nrows * t->ncols; i++) free(t->cells[i]);
    free(t->cells);
    if (rc != CTL_OK) fprintf(stderr, "sweetyctl: out of memory\n");
    return rc;
}

static const char *yes_no(bool b) { return b ? "yes" : "no"; }

static const char *or_dash(const char *s) { return s && *s ? s : "-"; }

// ---- accounts and agents ---------------------------------------------------------------------------

// Why an account or agent could not be stored, for the operator.
static int store_failure(const char *what, int rc) {
    const char *why = rc == STORE_ERR_NOT_FOUND ? "not found"
                      : rc == STORE_ERR_INVALID ? "a value was refused (check lengths and numbers)"
                                                : "database error";
    fprintf(stderr, "sweetyctl: %s: %s\n", what, why);
    return CTL_FAIL;
}

// True for an environment variable's name ([A-Za-z_][A-Za-z0-9_]*). A key pasted where the name
// belongs (the option can be abbreviated to --api-key) fails this, and is then never echoed.
static bool env_name_ok(const char *s) {
    if (!s || !(isalpha((unsigned char)*s) || *s == '_')) return false;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && *s != '_') return false;
    return true;
}

// The VAPI key from the environment, without surrounding white space; malloc'ed, or NULL with a
// message. Neither the value nor the variable's name is printed (the name might be a key typed
// into the wrong place).
static char *api_key_from_env(const char *var, size_t *len) {
    const char *value = getenv(var);
    if (!value || !*value) {
        fprintf(stderr, "sweetyctl: the environment variable named by --api-key-env is not set or empty\n");
        return NULL;
    }
    while (isspace((unsigned char)*value)) value++;
    size_t n = strlen(value);
    while (n > 0 && isspace((unsigned char)value[n - 1])) n--;
    for (size_t i = 0; i < n; i++) {
        if (iscntrl((unsigned char)value[i]) || value[i] == ' ') {
            fprintf(stderr, "sweetyctl: the key contains white space or control characters\n");
            return NULL;
        }
    }
    if (n == 0 || n > 1024) {
        fprintf(stderr, "sweetyctl: the key is empty or longer than 1024 bytes\n");
        return NULL;
    }
    char *key = strndup(value, n);
    if (!key) fprintf(stderr, "sweetyctl: out of memory\n");
    *len = n;
    return key;
}

// account add --name NAME --api-key-env VAR --phone-number-id ID --max-concurrent N
static int cmd_account_add(ctl_t *ctl, int argc, char **argv) {
    static const struct option opts[] = {{"name", required_argument, NULL, 'n'},
                                         {"api-key-env", required_argument, NULL, 'k'},
                                         {"phone-number-id", required_argument, NULL, 'p'},
                                         {"max-concurrent", required_argument, NULL, 'm'},
                                         {NULL, 0, NULL, 0}};
    const char *name = NULL, *env = NULL, *phone_number_id = NULL;
    int64_t max_concurrent = -1;
    int opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (opt) {
        case 'n': name = optarg; break;
        case 'k': env = optarg; break;
        case 'p': phone_number_id = optarg; break;
        case 'm':
            if (util_parse_int64(optarg, 0, 100000, &max_concurrent) != 0) return CTL_USAGE;
            break;
        default: return CTL_USAGE;
        }
    }
    if (optind != argc || !name || !env || !phone_number_id || max_concurrent < 0) return CTL_USAGE;
    if (!env_name_ok(env)) {
        fprintf(stderr, "sweetyctl: --api-key-env takes the NAME of an environment variable holding the key\n");
        return CTL_USAGE;
    }
    char err[CONFIG_ERR_MAX];
    if (config_require(ctl->cfg, (const char *const[]){"security.master_key", NULL}, err, sizeof err) != 0) {
        fprintf(stderr, "sweetyctl: configuration error: %s\n", err);
        return CTL_FAIL;
    }
    unsigned char master[CRYPTO_KEY_LEN];
    if (crypto_master_key_decode(ctl->cfg->security_master_key, master) != 0) {
        fprintf(stderr, "sweetyctl: security.master_key is not base64 of 32 bytes\n");
        return CTL_FAIL;
    }
    size_t key_len = 0;
    char *key = api_key_from_env(env, &key_len);
    if (!key) {
        OPENSSL_cleanse(master, sizeof master);
        return CTL_FAIL;
    }
    unsigned char *sealed = NULL, nonce[CRYPTO_NONCE_LEN];
    size_t sealed_len = 0;
    int rc = crypto_seal(master, key, key_len, &sealed, &sealed_len, nonce);
    OPENSSL_cleanse(master, sizeof master);
    crypto_secret_free(key, key_len);
    if (rc != 0) {
        fprintf(stderr, "sweetyctl: could not encrypt the key\n");
        return CTL_FAIL;
    }
    db_t *db = ctl_connect(ctl);
    if (!db) {
        free(sealed);
        return CTL_FAIL;
    }
    char id[STORE_UUID_LEN];
    rc = accounts_add(db, name, sealed, sealed_len, nonce, phone_number_id, (int)max_concurrent, id);
    free(sealed);
    db_destroy(&db);
    if (rc != STORE_OK) return store_failure("account add", rc);
    printf("%s\n", id);
    return CTL_OK;
}

// The master keys of a rekey: every stored key must open with one of them.
typedef struct {
    unsigned char current[CRYPTO_KEY_LEN];
    unsigned char previous[CRYPTO_KEY_LEN];
    bool has_previous;
} rekey_keys_t;

// account_rekey_fn: a key that opens with the current master key stays as it is (so a second run
// changes nothing); one that opens with the previous master key is sealed again with the current.
static int rekey_one(void *arg, const char *account_id, const account_key_t *in, unsigned char **out,
                     size_t *out_len, unsigned char nonce_out[CRYPTO_NONCE_LEN]) {
    const rekey_keys_t *k = arg;
    unsigned char *plain = NULL;
    size_t plain_len = 0;
    if (crypto_open(k->current, in->sealed, in->sealed_len, in->nonce, &plain, &plain_len) == 0) {
        crypto_secret_free(plain, plain_len);
        return 0;
    }
    if (!k->has_previous ||
        crypto_open(k->previous, in->sealed, in->sealed_len, in->nonce, &plain, &plain_len) != 0)
        return -1;
    int rc = crypto_seal(k->current, plain, plain_len, out, out_len, nonce_out);
    crypto_secret_free(plain, plain_len);
    return rc == 0 ? 1 : -1;
}

// account rekey: every stored VAPI key re-encrypted under security.master_key, in one transaction.
static int cmd_account_rekey(ctl_t *ctl, int argc, char **argv) {
    if (argc != 1) return CTL_USAGE;
    char err[CONFIG_ERR_MAX];
    if (config_require(ctl->cfg, (const char *const[]){"security.master_key", NULL}, err, sizeof err) != 0) {
        fprintf(stderr, "sweetyctl: configuration error: %s\n", err);
        return CTL_FAIL;
    }
    rekey_keys_t keys = {0};
    int rc = crypto_master_key_decode(ctl->cfg->security_master_key, keys.current);
    if (rc == 0 && ctl->cfg->security_master_key_previous) {
        rc = crypto_master_key_decode(ctl->cfg->security_master_key_previous, keys.previous);
        keys.has_previous = true;
    }
    if (rc != 0) {
        OPENSSL_cleanse(&keys, sizeof keys);
        fprintf(stderr, "sweetyctl: security.master_key(_previous) is not base64 of 32 bytes\n");
        return CTL_FAIL;
    }
    db_t *db = ctl_connect(ctl);
    if (!db) {
        OPENSSL_cleanse(&keys, sizeof keys);
        return CTL_FAIL;
    }
    size_t changed = 0, total = 0;
    char failed[STORE_UUID_LEN] = "";
    rc = accounts_rekey(db, rekey_one, &keys, &changed, &total, failed);
    OPENSSL_cleanse(&keys, sizeof keys);
    db_destroy(&db);
    if (rc == STORE_ERR_INVALID) {
        fprintf(stderr,
                "sweetyctl: account rekey: the key of account %s opens with neither security.master_key nor "
                "security.master_key_previous; nothing was changed\n",
                failed[0] ? failed : "-");
        return CTL_FAIL;
    }
    if (rc != STORE_OK) return store_failure("account rekey", rc);
    printf("accounts rekeyed: %zu of %zu (the others were already under security.master_key)\n", changed, total);
    return CTL_OK;
}

static int cmd_account_list(ctl_t *ctl, int argc, char **argv) {
    bool json = take_json_flag(&argc, argv);
    if (argc != 1) return CTL_USAGE;
    db_t *db = ctl_connect(ctl);
    if (!db) return CTL_FAIL;
    account_row_t *rows = NULL;
    size_t n = 0;
    int rc = accounts_list(db, &rows, &n);
    db_destroy(&db);
    if (rc != STORE_OK) return store_failure("account list", rc);
    if (json) {
        json_t *list = json_array();
        for (size_t i = 0; i < n && list; i++)
            json_array_append_new(list, json_pack("{s:s, s:s, s:s, s:i, s:i, s:b}", "id", rows[i].id, "name",
                                                  rows[i].name, "phone_number_id", rows[i].phone_number_id,
                                                  "max_concurrent", rows[i].max_concurrent, "active_calls",
                                                  rows[i].active_calls, "enabled", rows[i].enabled));
        free(rows);
        return print_json(list, true);
    }
    table_t t = {.ncols = 7};
    table_add(&t, (const char *const[]){"ID", "NAME", "PHONE_NUMBER_ID", "MAX_CONCURRENT", "ACTIVE_CALLS", "ENABLED",
                                        "HELD_UNTIL"});
    for (size_t i = 0; i < n; i++) {
        char maxc[16], active[16];
        snprintf(maxc, sizeof maxc, "%d", rows[i].max_concurrent);
        snprintf(active, sizeof active, "%d", rows[i].active_calls);
        table_add(&t, (const char *const[]){rows[i].id, rows[i].name, rows[i].phone_number_id, maxc, active,
                                            yes_no(rows[i].enabled), or_dash(rows[i].held_until)});
    }
    free(rows);
    return table_print(&t);
}

static int cmd_account_disable(ctl_t *ctl, int argc, char **argv) {
    if (argc != 2) return CTL_USAGE;
    db_t *db = ctl_connect(ctl);
    if (!db) return CTL_FAIL;
    int rc = accounts_disable(db, argv[1]);
    db_destroy(&db);
    if (rc == STORE_ERR_NOT_FOUND) {
        fprintf(stderr, "sweetyctl: no such account '%s'\n", argv[1]);
        return CTL_FAIL;
    }
    if (rc != STORE_OK) return store_failure("account disable", rc);
    printf("account %s disabled\n", argv[1]);
    return CTL_OK;
}

// agent add --account ID --plan KEY --max-concurrent N [--assistant-id ID] [--priority N]
static int cmd_agent_add(ctl_t *ctl, int argc, char **argv) {
    static const struct option opts[] = {{"account", required_argument, NULL, 'a'},
                                         {"plan", required_argument, NULL, 'p'},
                                         {"max-concurrent", required_argument, NULL, 'm'},
                                         {"assistant-id", required_argument, NULL, 's'},
                                         {"priority", required_argument, NULL, 'r'},
                                         {NULL, 0, NULL, 0}};
    const char *account = NULL, *plan = NULL, *assistant = NULL;
    int64_t max_concurrent = -1, priority = 0;
    int opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (opt) {
        case 'a': account = optarg; break;
        case 'p': plan = optarg; break;
        case 'm':
            if (util_parse_int64(optarg, 0, 100000, &max_concurrent) != 0) return CTL_USAGE;
            break;
        case 's': assistant = optarg; break;
        case 'r':
            if (util_parse_int64(optarg, -1000000, 1000000, &priority) != 0) return CTL_USAGE;
            break;
        default: return CTL_USAGE;
        }
    }
    if (optind != argc || !account || !plan || max_concurrent < 0) return CTL_USAGE;
    if (!plan_key_valid(plan)) {
        fprintf(stderr, "sweetyctl: unknown plan '%s' (free_trial, standard, extended, premium)\n", plan);
        return CTL_FAIL;
    }
    db_t *db = ctl_connect(ctl);
    if (!db) return CTL_FAIL;
    char id[STORE_UUID_LEN];
    int rc = agents_add(db, account, plan, (int)max_concurrent, assistant, (int)priority, id);
    db_destroy(&db);
    if (rc == STORE_ERR_NOT_FOUND) {
        fprintf(stderr, "sweetyctl: no such account '%s'\n", account);
        return CTL_FAIL;
    }
    if (rc != STORE_OK) return store_failure("agent add", rc);
    printf("%s\n", id);
    return CTL_OK;
}

static int cmd_agent_list(ctl_t *ctl, int argc, char **argv) {
    bool json = take_json_flag(&argc, argv);
    if (argc != 1) return CTL_USAGE;
    db_t *db = ctl_connect(ctl);
    if (!db) return CTL_FAIL;
    agent_row_t *rows = NULL;
    size_t n = 0;
    int rc = agents_list(db, &rows, &n);
    db_destroy(&db);
    if (rc != STORE_OK) return store_failure("agent list", rc);
    if (json) {
        json_t *list = json_array();
        for (size_t i = 0; i < n && list; i++)
            json_array_append_new(list, json_pack("{s:s, s:s, s:s, s:o, s:i, s:i, s:i, s:b}", "id", rows[i].id,
                                                  "account_id", rows[i].account_id, "plan", rows[i].plan,
                                                  "assistant_id", str_or_null(rows[i].assistant_id), "max_concurrent",
                                                  rows[i].max_concurrent, "active_calls", rows[i].active_calls,
                                                  "priority", rows[i].priority, "enabled", rows[i].enabled));
        free(rows);
        return print_json(list, true);
    }
    table_t t = {.ncols = 8};
    table_add(&t, (const char *const[]){"ID", "ACCOUNT_ID", "PLAN", "ASSISTANT_ID", "MAX_CONCURRENT", "ACTIVE_CALLS",
                                        "PRIORITY", "ENABLED"});
    for (size_t i = 0; i < n; i++) {
        char maxc[16], active[16], prio[16];
        snprintf(maxc, sizeof maxc, "%d", rows[i].max_concurrent);
        snprintf(active, sizeof active, "%d", rows[i].active_calls);
        snprintf(prio, sizeof prio, "%d", rows[i].priority);
        table_add(&t, (const char *const[]){rows[i].id, rows[i].account_id, rows[i].plan, or_dash(rows[i].assistant_id),
                                            maxc, active, prio, yes_no(rows[i].enabled)});
    }
    free(rows);
    return table_print(&t);
}

// queue: the calls still to make or in progress.
static int cmd_queue(ctl_t *ctl, int argc, char **argv) {
    bool json = take_json_flag(&argc, argv);
    if (argc != 1) return CTL_USAGE;
    db_t *db = ctl_connect(ctl);
    if (!db) return CTL_FAIL;
    queue_entry_t *rows = NULL;
    size_t n = 0;
    int rc = queue_list_open(db, &rows, &n);
    db_destroy(&db);
    if (rc != STORE_OK) return store_failure("queue", rc);
    if (json) {
        json_t *list = json_array();
        for (size_t i = 0; i < n && list; i++)
            json_array_append_new(list, json_pack("{s:s, s:s, s:s, s:i, s:i, s:s, s:o}", "booking_id",
                                                  rows[i].booking_id, "status", rows[i].status, "plan", rows[i].plan,
                                                  "priority", rows[i].priority, "attempt", rows[i].attempt,
                                                  "next_attempt_at", rows[i].next_attempt_at, "agent_id",
                                                  str_or_null(rows[i].agent_id)));
        free(rows);
        return print_json(list, true);
    }
    table_t t = {.ncols = 8};
    table_add(&t, (const char *const[]){"BOOKING_ID", "STATUS", "PLAN", "PRIORITY", "ATTEMPT", "MAX_RETRIES",
                                        "NEXT_ATTEMPT_AT", "AGENT_ID"});
    for (size_t i = 0; i < n; i++) {
        char prio[16], attempt[16], retries[16];
        snprintf(prio, sizeof prio, "%d", rows[i].priority);
        snprintf(attempt, sizeof attempt, "%d", rows[i].attempt);
        snprintf(retries, sizeof retries, "%d", rows[i].max_retries);
        table_add(&t, (const char *const[]){rows[i].booking_id, rows[i].status, rows[i].plan, prio, attempt, retries,
                                            rows[i].next_attempt_at, or_dash(rows[i].agent_id)});
    }
    free(rows);
    return table_print(&t);
}

static const ctl_command_t commands[] = {
    {"migrate", "migrate", cmd_migrate},
    {"plan set", "plan set KEY [--price-cents N] [--duration-seconds N] [--assistant-id ID] [--currency usd]",
     cmd_plan_set},
    {"trace", "trace [--topic PREFIX] [--count N] [--timeout SECONDS]", cmd_trace},
    {"booking show", "booking show ID [--json]", cmd_booking_show},
    {"account add", "account add --name NAME --api-key-env VAR --phone-number-id ID --max-concurrent N",
     cmd_account_add},
    {"account list", "account list [--json]", cmd_account_list},
    {"account disable", "account disable ID", cmd_account_disable},
    {"account rekey", "account rekey", cmd_account_rekey},
    {"agent add", "agent add --account ID --plan KEY --max-concurrent N [--assistant-id ID] [--priority N]",
     cmd_agent_add},
    {"agent list", "agent list [--json]", cmd_agent_list},
    {"queue", "queue [--json]", cmd_queue},
};

static int usage(void) {
    fprintf(stderr, "usage: sweetyctl [-c FILE] <command>\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) fprintf(stderr, "  %s\n", commands[i].usage);
    return CTL_USAGE;
}

// Finds the command whose words ("plan set") match the leading arguments; *consumed = words used.
static const ctl_command_t *find_command(int argc, char **argv, int *consumed) {
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
        char words[64];
        snprintf(words, sizeof words, "%s", commands[i].name);
        int n = 0;
        bool match = true;
        for (char *save = NULL, *w = strtok_r(words, " ", &save); w; w = strtok_r(NULL, " ", &save), n++)
            if (n >= argc || strcmp(argv[n], w) != 0) match = false;
        if (match) {
            *consumed = n;
            return &commands[i];
        }
    }
    return NULL;
}

int main(int argc, char **argv) {
    const char *path = NULL;
    int i = 1;
    while (i < argc && argv[i][0] == '-') {
        if (strcmp(argv[i], "-c") == 0 && i + 1 < argc) {
            path = argv[i + 1];
            i += 2;
        } else {
            return usage();
        }
    }
    int consumed = 0;
    const ctl_command_t *cmd = find_command(argc - i, argv + i, &consumed);
    if (!cmd) return usage();
    logger_t log = {SLOG_WARN, "sweetyctl"};
    config_t cfg;
    char err[CONFIG_ERR_MAX];
    if (config_load(&cfg, path, &log, err, sizeof err) != 0) {
        fprintf(stderr, "sweetyctl: configuration error: %s\n", err);
        return CTL_FAIL;
    }
    log.level = cfg.log_level > SLOG_WARN ? cfg.log_level : SLOG_WARN;
    ctl_t ctl = {.cfg = &cfg, .log = log};
    // The handler sees its last command word as argv[0], like a program of its own.
    int first = i + consumed - 1;
    int rc = cmd->run(&ctl, argc - first, argv + first);
    if (rc == CTL_USAGE) fprintf(stderr, "usage: sweetyctl %s\n", cmd->usage);
    config_clear(&cfg);
    return rc;
}
