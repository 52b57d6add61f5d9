// storage/store_sql.c — helpers shared by the query modules (see store_sql.h and store.h).
#include "storage/store_sql.h"

#include <assert.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *store_err_name(int rc) {
    switch (rc) {
    case STORE_OK: return "ok";
    case STORE_ERR_DB: return "db";
    case STORE_ERR_NOT_FOUND: return "not_found";
    case STORE_ERR_INVALID: return "invalid";
    case STORE_ERR_CONFLICT: return "conflict";
    case STORE_ERR_COOLDOWN: return "cooldown";
    case STORE_ERR_TOO_LATE: return "too_late";
    default: return "unknown";
    }
}

int store_rc_from_sqlstate(const char sqlstate[6]) {
    if (!sqlstate || !*sqlstate) return STORE_ERR_DB;
    if (strcmp(sqlstate, "SW001") == 0) return STORE_ERR_CONFLICT;
    // 23502 not_null, 23514 check: a value the schema refuses. 23505 (unique) and 23503 (foreign
    // key) depend on other rows, so each caller decides what they mean.
    if (strcmp(sqlstate, "23502") == 0 || strcmp(sqlstate, "23514") == 0) return STORE_ERR_INVALID;
    // Class 22: data exceptions (bad timestamp, invalid enum or uuid text, invalid UTF-8, overflow).
    if (strncmp(sqlstate, "22", 2) == 0) return STORE_ERR_INVALID;
    return STORE_ERR_DB;
}

bool store_is_uuid(const char *s) {
    if (!s || strlen(s) != 36) return false;
    for (int i = 0; i < 36; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (s[i] != '-') return false;
        } else if (!isxdigit((unsigned char)s[i])) {
            return false;
        }
    }
    return true;
}

bool store_len_ok(const char *s, size_t max, bool required) {
    if (!s) return !required;
    size_t n = strlen(s);
    return n <= max && (!required || n > 0);
}

void store_copy(char *dst, size_t size, const PGresult *res, int r, int c) {
    if (size == 0) return;
    snprintf(dst, size, "%s", PQgetisnull(res, r, c) ? "" : PQgetvalue(res, r, c));
}

char *store_dup(const PGresult *res, int r, int c, bool *oom) {
    if (PQgetisnull(res, r, c)) return NULL;
    char *s = strdup(PQgetvalue(res, r, c));
    if (!s) *oom = true;
    return s;
}

int64_t store_int64(const PGresult *res, int r, int c) {
    return PQgetisnull(res, r, c) ? 0 : strtoll(PQgetvalue(res, r, c), NULL, 10);
}

int store_abort(db_t *db, int rc) {
    db_rollback(db);
    return rc;
}

int store_booking_move(db_t *db, const char *booking_id, const char *status, booking_event_t *ev) {
    assert(db && booking_id && status && ev);
    const char *params[] = {booking_id, status};
    char sqlstate[6];
    PGresult *res = db_exec_prepared(db, "store_booking_move",
                                     "UPDATE bookings SET status = $2::booking_status WHERE id = $1::uuid"
                                     " RETURNING status_seq",
                                     2, params, sqlstate);
    if (!res) return store_rc_from_sqlstate(sqlstate);
    if (PQntuples(res) != 1) {
        PQclear(res);
        return STORE_ERR_NOT_FOUND;
    }
    char seq[16];
    store_copy(seq, sizeof seq, res, 0, 0);
    PQclear(res);
    const char *p2[] = {booking_id, seq};
    res = db_exec_prepared(db, "store_booking_move_event",
                           "SELECT seq, status::text, " SQL_RFC3339("at") " FROM booking_events"
                           " WHERE booking_id = $1::uuid AND seq = $2::integer",
                           2, p2, NULL);
    if (!res) return STORE_ERR_DB;
    if (PQntuples(res) != 1) {
        PQclear(res);
        return STORE_ERR_DB;
    }
    ev->seq = atoi(PQgetvalue(res, 0, 0));
    store_copy(ev->status, sizeof ev->status, res, 0, 1);
    store_copy(ev->at, sizeof ev->at, res, 0, 2);
    PQclear(res);
    return STORE_OK;
}

int store_queue_insert(db_t *db, const char *booking_id, int max_retries, bool *inserted) {
    assert(db && booking_id && inserted);
    char retries[16];
    snprintf(retries, sizeof retries, "%d", max_retries);
    const char *params[] = {booking_id, retries};
    char sqlstate[6];
    PGresult *res = db_exec_prepared(
        db, "store_queue_insert",
        "INSERT INTO call_queue (booking_id, plan, priority, max_retries, next_attempt_at)"
        " SELECT b.id, b.plan, p.priority, $2::integer, COALESCE(b.scheduled_for, now())"
        "   FROM bookings b JOIN plans p ON p.key = b.plan WHERE b.id = $1::uuid"
        " ON CONFLICT (booking_id) DO NOTHING RETURNING id",
        2, params, sqlstate);
    if (!res) return store_rc_from_sqlstate(sqlstate);
    *inserted = PQntuples(res) == 1;
    PQclear(res);
    return STORE_OK;
}

int store_rows(PGresult *res, size_t elem_size, store_row_fn row, void **list, size_t *n) {
    if (!res) return STORE_ERR_DB;
    int rows = PQntuples(res);
    unsigned char *out = NULL;
    if (rows > 0) {
        out = calloc((size_t)rows, elem_size);
        if (!out) {
            PQclear(res);
            return STORE_ERR_DB;
        }
        for (int r = 0; r < rows; r++) row(res, r, out + (size_t)r * elem_size);
    }
    PQclear(res);
    *list = out;
    *n = (size_t)rows;
    return STORE_OK;
}
