// cmd/sweetyctl.c — the operator's tool (CONTRACT.md, "Programs").
//
//   sweetyctl [-c FILE] <subcommand> [options]
// Exit codes: 0 success, 1 a failure explained on stderr, 2 bad usage.
// Subcommands are a table: name, usage line, handler. Each handler gets the loaded configuration
// and its own arguments.
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bus/trace_client.h"
#include "common/util.h"
#include "conf/config.h"
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

static const ctl_command_t commands[] = {
    {"migrate", "migrate", cmd_migrate},
    {"plan set", "plan set KEY [--price-cents N] [--duration-seconds N] [--assistant-id ID] [--currency usd]",
     cmd_plan_set},
    {"trace", "trace [--topic PREFIX] [--count N] [--timeout SECONDS]", cmd_trace},
    {"booking show", "booking show ID [--json]", cmd_booking_show},
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
