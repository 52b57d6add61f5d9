// storage/db.h — one PostgreSQL connection, owned by one thread (libpq is not shared across threads).
//
// Connects lazily, reconnects with exponential backoff (250 ms doubling to 5 s, never blocking
// longer than one connect attempt with connect_timeout=3), re-prepares statements after a
// reconnect. All SQL text lives under storage/: other folders call the one-function-per-query
// modules (storage/plans.h, ...), never libpq directly.
#ifndef SWEETY_DB_H
#define SWEETY_DB_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/log.h"

typedef struct db_t db_t;

// Creates the object; does not connect. url is copied. lg is copied (its `who` must be static).
db_t *db_new(const char *url, const logger_t *lg);
void db_destroy(db_t **self_p);

// Makes sure the connection is up: returns 0 if it is (connecting or reconnecting now if the
// backoff allows), -1 if it is down (and then does not retry before the backoff elapses).
int db_ensure(db_t *self);
// Like db_ensure but retries until `timeout_ms` passes. 0 or -1.
int db_wait(db_t *self, int timeout_ms);
bool db_is_up(const db_t *self);
// Successful connections after the first one.
uint64_t db_reconnects(const db_t *self);
// Runs "SELECT 1" with a 2 s deadline (kept on the client side, so a server that stopped
// answering counts too); marks the connection down on failure. 0 or -1.
int db_ping(db_t *self);

// Executes a prepared statement, preparing it on this connection first if needed. Text params.
// Returns a result with status COMMAND_OK or TUPLES_OK (caller PQclear()s it), or NULL on error
// (logged; a broken connection is marked down). `sqlstate`, when non-NULL, receives the SQLSTATE
// of a failed statement (6 bytes incl. NUL) or "" ; "08006" while the database is unreachable
// or after the connection was lost inside a transaction (until db_rollback).
PGresult *db_exec_prepared(db_t *self, const char *name, const char *sql, int nparams,
                           const char *const *params, char sqlstate[6]);
// Executes SQL without parameters (migrations, BEGIN/COMMIT). Same result rules.
PGresult *db_exec(db_t *self, const char *sql, char sqlstate[6]);
// Convenience: runs a command, discards the result. 0 or -1.
int db_command(db_t *self, const char *sql);

// db_commit fails (-1) when the server rolled the transaction back instead (a statement in it
// failed) or the connection was lost inside it. db_rollback is safe to call in any state.
int db_begin(db_t *self);
int db_commit(db_t *self);
void db_rollback(db_t *self);

// The raw connection, for storage/ internals only (LISTEN sockets, COPY). NULL while down.
PGconn *db_conn(db_t *self);

// Closes the connection now (for instance after PQconsumeInput failed on a LISTEN socket); the
// next db_ensure reconnects at once. Statements are re-prepared as they are used.
void db_disconnect(db_t *self);
// The primary message of the last failed statement ("" if none), one line, for error reports.
// `position`, when non-NULL, receives its 1-based character position in the SQL text or 0.
const char *db_last_error(const db_t *self, int *position);

#endif
