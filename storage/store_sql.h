// storage/store_sql.h — helpers the query modules of storage/ share; not for use outside storage/.
//
// Mapping of SQLSTATEs to the STORE_ERR_* codes, copying result columns into fixed buffers, the
// SQL expression that formats a timestamp as RFC3339, and the one status change every module
// makes the same way (UPDATE bookings, then read back the history row the trigger wrote).
#ifndef SWEETY_STORE_SQL_H
#define SWEETY_STORE_SQL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "storage/bookings.h"
#include "storage/db.h"
#include "storage/store.h"

// SQL: timestamptz expression -> "YYYY-MM-DDTHH:MM:SS.mmmZ" (text, NULL stays NULL).
#define SQL_RFC3339(expr) "to_char((" expr ") AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"

// STORE_ERR_* for a failed statement's SQLSTATE: class 23 check/not-null and data exceptions
// (class 22) -> INVALID, SW001 (refused status change) -> CONFLICT, anything else -> DB.
int store_rc_from_sqlstate(const char sqlstate[6]);

// True when s is a UUID in its canonical text form (8-4-4-4-12 hex digits).
bool store_is_uuid(const char *s);

// True when s is NULL or at most max bytes long (and, when non-NULL and required, non-empty).
bool store_len_ok(const char *s, size_t max, bool required);

// Copies column c of row r into dst (size bytes, always NUL-terminated; NULL becomes "").
void store_copy(char *dst, size_t size, const PGresult *res, int r, int c);
// Column c of row r, malloc'ed; NULL for SQL NULL. *oom is set when the copy failed.
char *store_dup(const PGresult *res, int r, int c, bool *oom);
int64_t store_int64(const PGresult *res, int r, int c);

// Fills one element of a list from row r of a result.
typedef void (*store_row_fn)(const PGresult *res, int r, void *elem);
// Maps every row of res with `row` into a calloc'ed array of elem_size-byte elements (NULL when
// there is no row), and clears res. STORE_OK with *list and *n set; STORE_ERR_DB when res is NULL
// or out of memory (*list and *n untouched).
int store_rows(PGresult *res, size_t elem_size, store_row_fn row, void **list, size_t *n);

// Rolls back the transaction the caller opened and returns rc (for `return store_abort(db, rc);`).
int store_abort(db_t *db, int rc);

// Inside a transaction: sets bookings.status and fills *ev with the history row the trigger wrote
// (seq, status, at). STORE_OK; STORE_ERR_CONFLICT when the schema refused the change (SW001; the
// transaction is then aborted and must be rolled back); STORE_ERR_NOT_FOUND; STORE_ERR_DB.
int store_booking_move(db_t *db, const char *booking_id, const char *status, booking_event_t *ev);

// Inside a transaction: inserts the booking's call_queue row (its plan's priority, first attempt at
// scheduled_for or now) unless it already has one (call_queue_booking_id_key: one row per booking,
// ever); *inserted tells which. STORE_OK; STORE_ERR_INVALID (max_retries < 0); STORE_ERR_DB.
int store_queue_insert(db_t *db, const char *booking_id, int max_retries, bool *inserted);

#endif
