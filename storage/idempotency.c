// storage/idempotency.c — queries on idempotency_keys, and the purge of webhook_events (see
// idempotency.h).
//
// idem_begin is one transaction: drop the key's row when it has expired (older than 24 h) or was
// abandoned in progress, then INSERT ... ON CONFLICT DO NOTHING. A concurrent request with the same
// key blocks on the unique index until the first one's transaction commits, then finds the row
// and reports IN_PROGRESS, so exactly one request gets NEW. Bodies travel as hex text both ways:
// they are stored as bytea and come back byte for byte whatever they contain.
#include "storage/idempotency.h"

#include <assert.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "storage/store_sql.h"

#define STR_(x) #x
#define STR(x) STR_(x)

#define IDEM_HASH_MAX 128

void idem_result_clear(idem_result_t *r) {
    if (!r) return;
    free(r->body);
    memset(r, 0, sizeof *r);
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

// "\x" followed by the hex of the bytes: bytea's text input form.
static char *bytea_hex(const void *data, size_t len) {
    static const char digits[] = "0123456789abcdef";
    char *out = malloc(2 * len + 3);
    if (!out) return NULL;
    out[0] = '\\';
    out[1] = 'x';
    const unsigned char *p = data;
    for (size_t i = 0; i < len; i++) {
        out[2 + 2 * i] = digits[p[i] >> 4];
        out[3 + 2 * i] = digits[p[i] & 15];
    }
    out[2 + 2 * len] = '\0';
    return out;
}

// Plain hex (encode(x, 'hex')) -> malloc'ed bytes plus a NUL. 0 or -1.
static int unhex(const char *hex, unsigned char **out, size_t *len) {
    size_t n = strlen(hex);
    if (n % 2) return -1;
    unsigned char *buf = malloc(n / 2 + 1);
    if (!buf) return -1;
    for (size_t i = 0; i < n / 2; i++) {
        int hi = hexval(hex[2 * i]), lo = hexval(hex[2 * i + 1]);
        if (hi < 0 || lo < 0) {
            free(buf);
            return -1;
        }
        buf[i] = (unsigned char)(hi << 4 | lo);
    }
    buf[n / 2] = '\0';
    *out = buf;
    *len = n / 2;
    return 0;
}

// One attempt. STORE_OK with *r filled, STORE_ERR_NOT_FOUND when the row vanished between the
// insert and the read (an abort or purge in between: try again), or an error.
static int begin_once(db_t *db, const char *key, const char *request_hash, idem_result_t *r) {
    if (db_begin(db) != 0) return STORE_ERR_DB;
    const char *params[] = {key, request_hash};
    char sqlstate[6];
    PGresult *res = db_exec_prepared(
        db, "idem_drop_stale",
        "DELETE FROM idempotency_keys WHERE key = $1"
        " AND (created_at < now() - make_interval(secs => " STR(IDEM_TTL_S) ")"
        "      OR (status = 'in_progress' AND created_at < now() - make_interval(secs => " STR(IDEM_STALE_S) ")))",
        1, params, sqlstate);
    if (!res) return store_abort(db, store_rc_from_sqlstate(sqlstate));
    PQclear(res);
    res = db_exec_prepared(db, "idem_insert",
                           "INSERT INTO idempotency_keys (key, request_hash) VALUES ($1, $2)"
                           " ON CONFLICT (key) DO NOTHING RETURNING key",
                           2, params, sqlstate);
    if (!res) return store_abort(db, store_rc_from_sqlstate(sqlstate));
    bool inserted = PQntuples(res) == 1;
    PQclear(res);
    if (inserted) {
        if (db_commit(db) != 0) return STORE_ERR_DB;
        memset(r, 0, sizeof *r);
        r->state = IDEM_NEW;
        return STORE_OK;
    }
    res = db_exec_prepared(db, "idem_read",
                           "SELECT request_hash = $2, status::text, response_status, encode(response_body, 'hex'),"
                           " booking_id FROM idempotency_keys WHERE key = $1",
                           2, params, NULL);
    if (!res) return store_abort(db, STORE_ERR_DB);
    db_rollback(db);
    if (PQntuples(res) != 1) {
        PQclear(res);
        return STORE_ERR_NOT_FOUND;
    }
    idem_result_t x;
    memset(&x, 0, sizeof x);
    if (strcmp(PQgetvalue(res, 0, 0), "t") != 0) {
        x.state = IDEM_MISMATCH;
    } else if (strcmp(PQgetvalue(res, 0, 1), "done") != 0) {
        x.state = IDEM_IN_PROGRESS;
    } else {
        x.state = IDEM_DONE;
        x.status = atoi(PQgetvalue(res, 0, 2));
        store_copy(x.booking_id, sizeof x.booking_id, res, 0, 4);
        if (unhex(PQgetvalue(res, 0, 3), &x.body, &x.body_len) != 0) {
            PQclear(res);
            return STORE_ERR_DB;
        }
    }
    PQclear(res);
    *r = x;
    return STORE_OK;
}

int idem_begin(db_t *db, const char *key, const char *request_hash, idem_result_t *out) {
    assert(db && out);
    // The schema counts characters (1..255); 4 bytes a character at most. It checks the rest.
    if (!store_len_ok(key, 4 * IDEM_KEY_MAX, true) || !store_len_ok(request_hash, IDEM_HASH_MAX, true))
        return STORE_ERR_INVALID;
    int rc = STORE_ERR_NOT_FOUND;
    for (int attempt = 0; attempt < 3 && rc == STORE_ERR_NOT_FOUND; attempt++)
        rc = begin_once(db, key, request_hash, out);
    return rc == STORE_ERR_NOT_FOUND ? STORE_ERR_DB : rc;
}

int idem_finish(db_t *db, const char *key, int status, const void *body, size_t len, const char *booking_id) {
    assert(db && key && (body || len == 0));
    if (status < 100 || status > 599) return STORE_ERR_INVALID;
    if (booking_id && !store_is_uuid(booking_id)) return STORE_ERR_INVALID;
    char *hex = bytea_hex(body ? body : "", len);
    if (!hex) return STORE_ERR_DB;
    char st[16];
    snprintf(st, sizeof st, "%d", status);
    const char *params[] = {key, st, hex, booking_id};
    char sqlstate[6];
    PGresult *res = db_exec_prepared(
        db, "idem_finish",
        "UPDATE idempotency_keys SET status = 'done', response_status = $2::smallint, response_body = $3::bytea,"
        " booking_id = $4::uuid WHERE key = $1 AND status = 'in_progress' RETURNING key",
        4, params, sqlstate);
    free(hex);
    if (!res) {
        // 23503: the booking named does not exist.
        return strcmp(sqlstate, "23503") == 0 ? STORE_ERR_INVALID : store_rc_from_sqlstate(sqlstate);
    }
    int rc = PQntuples(res) == 1 ? STORE_OK : STORE_ERR_NOT_FOUND;
    PQclear(res);
    return rc;
}

int idem_abort(db_t *db, const char *key) {
    assert(db && key);
    const char *params[] = {key};
    PGresult *res = db_exec_prepared(db, "idem_abort",
                                     "DELETE FROM idempotency_keys WHERE key = $1 AND status = 'in_progress'", 1,
                                     params, NULL);
    if (!res) return STORE_ERR_DB;
    PQclear(res);
    return STORE_OK;
}

static int purge(db_t *db, const char *name, const char *sql, int older_than_s, int64_t *deleted) {
    assert(db && older_than_s >= 0);
    char age[16];
    snprintf(age, sizeof age, "%d", older_than_s);
    const char *params[] = {age};
    PGresult *res = db_exec_prepared(db, name, sql, 1, params, NULL);
    if (!res) return STORE_ERR_DB;
    if (deleted) *deleted = strtoll(PQcmdTuples(res), NULL, 10);
    PQclear(res);
    return STORE_OK;
}

int idem_purge(db_t *db, int older_than_s, int64_t *deleted) {
    return purge(db, "idem_purge",
                 "DELETE FROM idempotency_keys WHERE created_at < now() - make_interval(secs => $1::integer)",
                 older_than_s, deleted);
}

int webhook_events_purge(db_t *db, int older_than_s, int64_t *deleted) {
    return purge(db, "webhook_events_purge",
                 "DELETE FROM webhook_events WHERE received_at < now() - make_interval(secs => $1::integer)",
                 older_than_s, deleted);
}
