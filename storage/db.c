// storage/db.c — one PostgreSQL connection with lazy connect, backoff and per-connection
// prepared statements (see db.h).
//
// Owned by exactly one thread; nothing here is global. The object remembers which statement names
// it has prepared on the *current* PGconn; when the connection breaks (PQstatus turns bad, a ping
// times out, or the caller asks via db_disconnect) the connection is closed, the list is emptied,
// and the next call reconnects (at once the first time, then after 250 ms, 500 ms, ... capped at
// 5 s) and re-prepares each statement the first time it is used again.
//
// The URL is never logged: only host/port/dbname taken apart by PQconninfoParse. libpq's own
// connection error text is logged (flattened to one line) except when the URL itself could not be
// parsed, because then the message may quote part of it, password included.
//
// A transaction that loses its connection is not silently continued on a new one: after db_begin,
// a lost connection makes every statement fail (SQLSTATE 08006) until db_rollback/db_commit.
#include "storage/db.h"

#include <assert.h>
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/util.h"

#define DB_BACKOFF_FIRST_MS 250
#define DB_BACKOFF_MAX_MS 5000
#define DB_CONNECT_TIMEOUT_S "3"
#define DB_PING_TIMEOUT_MS 2000
#define DB_SQLSTATE_CONN "08006"   // connection_failure: what callers see while the db is down

typedef struct {
    char *name;
    char *sql;
} db_stmt_t;

struct db_t {
    char *url;
    logger_t lg;
    char target[320];         // "host=... port=... db=..." for logs; never the password
    bool url_parse_failed;    // then libpq's messages may quote the URL: do not log them

    PGconn *conn;             // NULL while down
    bool ever_connected;
    uint64_t reconnects;
    int backoff_ms;           // delay applied after the next failed attempt
    int64_t next_try_ms;      // monotonic; no connect attempt before this
    unsigned failures;        // consecutive failed attempts

    db_stmt_t *stmts;         // prepared on `conn`
    size_t nstmts, capstmts;

    bool tx_open;             // between db_begin and db_commit/db_rollback
    bool tx_broken;           // the connection was lost inside that transaction

    char last_error[512];     // primary message of the last failed statement
    int last_error_pos;       // its statement position (1-based characters), 0 if none
};

// Copies `in` into `out` as one line: control characters become spaces, double quotes become
// single quotes, runs of spaces collapse, trailing spaces are dropped.
static void one_line(const char *in, char *out, size_t size) {
    size_t n = 0;
    bool space = false;
    if (size == 0) return;
    for (const char *p = in ? in : ""; *p && n + 1 < size; p++) {
        unsigned char c = (unsigned char)*p;
        if (c < 0x20 || c == 0x7f || c == ' ') {
            space = n > 0;
            continue;
        }
        if (space && n + 2 < size) out[n++] = ' ';
        space = false;
        out[n++] = c == '"' ? '\'' : (char)c;
    }
    out[n] = '\0';
}

static void describe_target(db_t *self) {
    char *err = NULL;
    PQconninfoOption *opts = PQconninfoParse(self->url, &err);
    if (!opts) {
        self->url_parse_failed = true;
        snprintf(self->target, sizeof self->target, "host=? db=?");
        PQfreemem(err);
        return;
    }
    const char *host = NULL, *port = NULL, *dbname = NULL, *hostaddr = NULL;
    for (PQconninfoOption *o = opts; o->keyword; o++) {
        if (!o->val || !*o->val) continue;
        if (strcmp(o->keyword, "host") == 0) host = o->val;
        else if (strcmp(o->keyword, "hostaddr") == 0) hostaddr = o->val;
        else if (strcmp(o->keyword, "port") == 0) port = o->val;
        else if (strcmp(o->keyword, "dbname") == 0) dbname = o->val;
    }
    char h[128], p[32], d[96];
    one_line(host ? host : hostaddr ? hostaddr : "default", h, sizeof h);
    one_line(port ? port : "default", p, sizeof p);
    one_line(dbname ? dbname : "default", d, sizeof d);
    snprintf(self->target, sizeof self->target, "host=\"%s\" port=%s db=\"%s\"", h, p, d);
    PQconninfoFree(opts);
}

static void on_notice(void *arg, const PGresult *res) {
    db_t *self = arg;
    char msg[256];
    one_line(PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY), msg, sizeof msg);
    const char *sev = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
    log_debug(&self->lg, "db.notice", "severity=%s message=\"%s\"", sev ? sev : "?", msg);
}

db_t *db_new(const char *url, const logger_t *lg) {
    assert(url && lg);
    db_t *self = calloc(1, sizeof *self);
    if (!self) return NULL;
    self->url = strdup(url);
    if (!self->url) {
        free(self);
        return NULL;
    }
    self->lg = *lg;
    self->backoff_ms = DB_BACKOFF_FIRST_MS;
    self->next_try_ms = 0;
    describe_target(self);
    if (self->url_parse_failed)
        log_error(&self->lg, "db.invalid_url", "message=\"db.url is not a valid libpq URI or conninfo\"");
    return self;
}

static void forget_statements(db_t *self) {
    for (size_t i = 0; i < self->nstmts; i++) {
        free(self->stmts[i].name);
        free(self->stmts[i].sql);
    }
    self->nstmts = 0;
}

// Closes the connection; the next db_ensure may reconnect at once.
static void mark_down(db_t *self, const char *reason) {
    if (!self->conn) return;
    log_warn(&self->lg, "db.disconnected", "%s reason=%s", self->target, reason);
    PQfinish(self->conn);
    self->conn = NULL;
    forget_statements(self);
    if (self->tx_open) self->tx_broken = true;
    self->backoff_ms = DB_BACKOFF_FIRST_MS;
    self->next_try_ms = util_monotonic_ms();
}

void db_destroy(db_t **self_p) {
    if (!self_p || !*self_p) return;
    db_t *self = *self_p;
    if (self->conn) {
        log_info(&self->lg, "db.closed", "%s", self->target);
        PQfinish(self->conn);
    }
    forget_statements(self);
    free(self->stmts);
    free(self->url);
    free(self);
    *self_p = NULL;
}

static int connect_now(db_t *self) {
    // expand_dbname=1 turns the URL into its parameters; keywords after it override it, so the
    // connect timeout always applies. The fallback name shows up in pg_stat_activity.
    const char *const keys[] = {"dbname", "connect_timeout", "fallback_application_name", NULL};
    const char *const vals[] = {self->url, DB_CONNECT_TIMEOUT_S, "sweety", NULL};
    PGconn *conn = PQconnectdbParams(keys, vals, 1);
    if (conn && PQstatus(conn) == CONNECTION_OK) {
        PQsetNoticeReceiver(conn, on_notice, self);
        self->conn = conn;
        if (self->ever_connected) self->reconnects++;
        self->ever_connected = true;
        self->failures = 0;
        self->backoff_ms = DB_BACKOFF_FIRST_MS;
        log_info(&self->lg, "db.connected", "%s server_version=%d reconnects=%llu", self->target,
                 PQserverVersion(conn), (unsigned long long)self->reconnects);
        return 0;
    }
    char msg[320];
    if (!conn) snprintf(msg, sizeof msg, "out of memory");
    else if (self->url_parse_failed) snprintf(msg, sizeof msg, "invalid db.url");
    else one_line(PQerrorMessage(conn), msg, sizeof msg);
    PQfinish(conn);
    self->failures++;
    int delay = self->backoff_ms;
    self->next_try_ms = util_monotonic_ms() + delay;
    self->backoff_ms = delay * 2 > DB_BACKOFF_MAX_MS ? DB_BACKOFF_MAX_MS : delay * 2;
    log_warn(&self->lg, "db.connect_failed", "%s attempt=%u retry_in_ms=%d error=\"%s\"", self->target,
             self->failures, delay, msg);
    return -1;
}

int db_ensure(db_t *self) {
    assert(self);
    if (self->conn) {
        if (PQstatus(self->conn) == CONNECTION_OK) return 0;
        mark_down(self, "connection_bad");
    }
    if (util_monotonic_ms() < self->next_try_ms) return -1;
    return connect_now(self);
}

static void sleep_ms(int64_t ms) {
    if (ms <= 0) return;
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

int db_wait(db_t *self, int timeout_ms) {
    assert(self);
    int64_t deadline = util_monotonic_ms() + (timeout_ms > 0 ? timeout_ms : 0);
    for (;;) {
        if (db_ensure(self) == 0) return 0;
        int64_t now = util_monotonic_ms();
        if (now >= deadline) return -1;
        int64_t until = self->next_try_ms < deadline ? self->next_try_ms : deadline;
        sleep_ms(until - now);
    }
}

bool db_is_up(const db_t *self) {
    return self && self->conn && PQstatus(self->conn) == CONNECTION_OK;
}

uint64_t db_reconnects(const db_t *self) {
    return self ? self->reconnects : 0;
}

static void set_sqlstate(char sqlstate[6], const char *code) {
    if (!sqlstate) return;
    snprintf(sqlstate, 6, "%s", code ? code : "");
}

static void remember_error(db_t *self, const PGresult *res, const char *fallback) {
    const char *primary = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    one_line(primary ? primary : fallback, self->last_error, sizeof self->last_error);
    const char *pos = res ? PQresultErrorField(res, PG_DIAG_STATEMENT_POSITION) : NULL;
    self->last_error_pos = pos ? atoi(pos) : 0;
}

// Checks a result. Returns it when it succeeded; otherwise records and logs the error, frees the
// result, marks a broken connection down, and returns NULL.
static PGresult *check_result(db_t *self, PGresult *res, const char *what, char sqlstate[6]) {
    ExecStatusType st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    if (res && (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK)) {
        set_sqlstate(sqlstate, "");
        return res;
    }
    bool broken = !self->conn || PQstatus(self->conn) != CONNECTION_OK;
    const char *code = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    if (!code || !*code) code = broken ? DB_SQLSTATE_CONN : "XX000";
    set_sqlstate(sqlstate, code);
    char conn_msg[256];
    one_line(self->conn ? PQerrorMessage(self->conn) : "no connection", conn_msg, sizeof conn_msg);
    remember_error(self, res, conn_msg);
    // Constraint violations (class 23) and refused status transitions (SW001, raised by the
    // schema's triggers) are answers callers act on, not faults.
    log_level_t level = strncmp(code, "23", 2) == 0 || strncmp(code, "SW", 2) == 0 ? SLOG_DEBUG : SLOG_WARN;
    log_event(&self->lg, level, "db.error", "statement=%s sqlstate=%s message=\"%s\"", what, code,
              self->last_error);
    PQclear(res);
    if (broken) mark_down(self, "query_failed");
    return NULL;
}

// Common entry for every statement: the connection must be up, and not lost inside a transaction.
static int ready(db_t *self, const char *what, char sqlstate[6]) {
    if (self->tx_broken) {
        set_sqlstate(sqlstate, DB_SQLSTATE_CONN);
        snprintf(self->last_error, sizeof self->last_error, "connection lost inside a transaction");
        self->last_error_pos = 0;
        log_debug(&self->lg, "db.error", "statement=%s sqlstate=%s message=\"%s\"", what,
                  DB_SQLSTATE_CONN, self->last_error);
        return -1;
    }
    if (db_ensure(self) != 0) {
        set_sqlstate(sqlstate, DB_SQLSTATE_CONN);
        snprintf(self->last_error, sizeof self->last_error, "database unavailable");
        self->last_error_pos = 0;
        return -1;
    }
    return 0;
}

static db_stmt_t *find_statement(db_t *self, const char *name) {
    for (size_t i = 0; i < self->nstmts; i++)
        if (strcmp(self->stmts[i].name, name) == 0) return &self->stmts[i];
    return NULL;
}

static int remember_statement(db_t *self, const char *name, const char *sql) {
    if (self->nstmts == self->capstmts) {
        size_t cap = self->capstmts ? self->capstmts * 2 : 16;
        db_stmt_t *grown = realloc(self->stmts, cap * sizeof *grown);
        if (!grown) return -1;
        self->stmts = grown;
        self->capstmts = cap;
    }
    db_stmt_t s = {strdup(name), strdup(sql)};
    if (!s.name || !s.sql) {
        free(s.name);
        free(s.sql);
        return -1;
    }
    self->stmts[self->nstmts++] = s;
    return 0;
}

static void forget_statement(db_t *self, const char *name) {
    for (size_t i = 0; i < self->nstmts; i++) {
        if (strcmp(self->stmts[i].name, name) != 0) continue;
        free(self->stmts[i].name);
        free(self->stmts[i].sql);
        self->stmts[i] = self->stmts[--self->nstmts];
        return;
    }
}

static bool is_missing_statement(const PGresult *res) {
    const char *code = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    return res && PQresultStatus(res) == PGRES_FATAL_ERROR && code && strcmp(code, "26000") == 0;
}

PGresult *db_exec_prepared(db_t *self, const char *name, const char *sql, int nparams,
                           const char *const *params, char sqlstate[6]) {
    assert(self && name && sql && nparams >= 0);
    if (ready(self, name, sqlstate) != 0) return NULL;
    db_stmt_t *known = find_statement(self, name);
    if (known) {
        assert(strcmp(known->sql, sql) == 0 && "one statement name, one SQL text");
    } else {
        PGresult *res = check_result(self, PQprepare(self->conn, name, sql, nparams, NULL), name, sqlstate);
        if (!res) return NULL;
        PQclear(res);
        if (remember_statement(self, name, sql) != 0) {
            // Out of memory: the statement exists server-side but we cannot track it. Start over.
            set_sqlstate(sqlstate, "53200");
            mark_down(self, "out_of_memory");
            return NULL;
        }
    }
    PGresult *res = PQexecPrepared(self->conn, name, nparams, params, NULL, NULL, 0);
    if (known && is_missing_statement(res)) {
        // Gone server-side (DEALLOCATE/DISCARD ALL, a pooler handing us another session): forget
        // it, and outside a transaction (which this error has not aborted) prepare it again now.
        forget_statement(self, name);
        log_info(&self->lg, "db.reprepare", "statement=%s", name);
        if (PQtransactionStatus(self->conn) == PQTRANS_IDLE) {
            PQclear(res);
            return db_exec_prepared(self, name, sql, nparams, params, sqlstate);
        }
    }
    return check_result(self, res, name, sqlstate);
}

PGresult *db_exec(db_t *self, const char *sql, char sqlstate[6]) {
    assert(self && sql);
    if (ready(self, "(simple)", sqlstate) != 0) return NULL;
    return check_result(self, PQexec(self->conn, sql), "(simple)", sqlstate);
}

int db_command(db_t *self, const char *sql) {
    PGresult *res = db_exec(self, sql, NULL);
    if (!res) return -1;
    PQclear(res);
    return 0;
}

int db_begin(db_t *self) {
    assert(self && !self->tx_open && "db_begin inside a transaction");
    if (db_command(self, "BEGIN") != 0) return -1;
    self->tx_open = true;
    self->tx_broken = false;
    return 0;
}

int db_commit(db_t *self) {
    assert(self);
    bool broken = self->tx_broken;
    self->tx_broken = false;
    if (broken) {
        self->tx_open = false;
        snprintf(self->last_error, sizeof self->last_error, "connection lost inside the transaction");
        self->last_error_pos = 0;
        return -1;
    }
    PGresult *res = db_exec(self, "COMMIT", NULL);
    self->tx_open = false;
    if (!res) return -1;
    // COMMIT of a transaction that already failed answers "ROLLBACK" with status COMMAND_OK.
    int rc = strcmp(PQcmdStatus(res), "COMMIT") == 0 ? 0 : -1;
    if (rc != 0) {
        snprintf(self->last_error, sizeof self->last_error, "transaction was rolled back");
        self->last_error_pos = 0;
    }
    PQclear(res);
    return rc;
}

void db_rollback(db_t *self) {
    assert(self);
    self->tx_open = false;
    self->tx_broken = false;
    // Whatever began the transaction (db_begin or a "BEGIN" sent by hand), end it.
    if (!db_is_up(self) || PQtransactionStatus(self->conn) == PQTRANS_IDLE) return;
    PGresult *res = PQexec(self->conn, "ROLLBACK");
    if (!res || PQresultStatus(res) != PGRES_COMMAND_OK) {
        if (PQstatus(self->conn) != CONNECTION_OK) mark_down(self, "rollback_failed");
    }
    PQclear(res);
}

// "SELECT 1" with a client-side deadline: a server that stopped answering must not hang the caller
// (the health endpoint) any longer than DB_PING_TIMEOUT_MS.
int db_ping(db_t *self) {
    assert(self);
    if (ready(self, "ping", NULL) != 0) return -1;
    int64_t deadline = util_monotonic_ms() + DB_PING_TIMEOUT_MS;
    if (!PQsendQuery(self->conn, "SELECT 1")) {
        mark_down(self, "ping_send_failed");
        return -1;
    }
    bool ok = true;
    while (PQisBusy(self->conn)) {
        int64_t left = deadline - util_monotonic_ms();
        if (left <= 0) {
            ok = false;
            break;
        }
        struct pollfd pfd = {.fd = PQsocket(self->conn), .events = POLLIN};
        int pr = poll(&pfd, 1, (int)left);
        if (pr < 0 && errno != EINTR) {
            ok = false;
            break;
        }
        if (pr > 0 && !PQconsumeInput(self->conn)) {
            ok = false;
            break;
        }
    }
    if (!ok) {
        mark_down(self, "ping_timeout");
        return -1;
    }
    int rc = 0;
    PGresult *res;
    while ((res = PQgetResult(self->conn)) != NULL) {
        if (PQresultStatus(res) != PGRES_TUPLES_OK) rc = -1;
        PQclear(res);
    }
    if (rc != 0) mark_down(self, "ping_failed");
    return rc;
}

PGconn *db_conn(db_t *self) {
    assert(self);
    return db_is_up(self) ? self->conn : NULL;
}

void db_disconnect(db_t *self) {
    assert(self);
    mark_down(self, "requested");
}

const char *db_last_error(const db_t *self, int *position) {
    assert(self);
    if (position) *position = self->last_error_pos;
    return self->last_error;
}
