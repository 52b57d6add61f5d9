// storage/idempotency.h — the Idempotency-Key record of POST /api/bookings (table
// idempotency_keys), and the purge of both idempotency records (idempotency_keys, webhook_events).
//
// Used by the http actor: idem_begin before doing anything, then idem_finish with the exact answer
// (status and body bytes), or idem_abort when the attempt failed in a way that must not be
// replayed (503 while the database was down, for instance). A key lives 24 hours: past that a
// request with it counts as new, and idem_purge deletes it.
//
// Return codes are those of storage/store.h; outputs are written only on STORE_OK.
#ifndef SWEETY_IDEMPOTENCY_H
#define SWEETY_IDEMPOTENCY_H

#include <stddef.h>
#include <stdint.h>

#include "storage/db.h"
#include "storage/store.h"

#define IDEM_KEY_MAX 255            // characters (CONTRACT: at most 255)
#define IDEM_TTL_S 86400            // a key is remembered this long
// A key still in_progress this long after it was taken belonged to a request that died with its
// process (the daemon was killed mid-request): the next request with the key takes it over instead
// of getting 409 for a day. Longer than any request runs, checkout creation with its retries included.
#define IDEM_STALE_S 300

typedef enum {
    IDEM_NEW,           // the key is ours now (in_progress): handle the request, then idem_finish
    IDEM_IN_PROGRESS,   // another request with this key is running: 409 idempotency_in_progress
    IDEM_MISMATCH,      // the key was used with a different request: 422 idempotency_key_reused
    IDEM_DONE,          // answer with status and body, byte for byte
} idem_state_t;

typedef struct {
    idem_state_t state;
    int status;                     // IDEM_DONE: the HTTP status stored
    unsigned char *body;            // IDEM_DONE: malloc'ed copy of the body (NUL-terminated for
    size_t body_len;                //   convenience; body_len excludes it), else NULL
    char booking_id[STORE_UUID_LEN];// IDEM_DONE: the booking the first request made, "" if none
} idem_result_t;

void idem_result_clear(idem_result_t *r);

// request_hash: the caller's digest of the request (e.g. hex SHA-256 of the body), at most 128
// bytes. STORE_OK; STORE_ERR_INVALID (empty or too long key or hash, invalid UTF-8); STORE_ERR_DB.
int idem_begin(db_t *db, const char *key, const char *request_hash, idem_result_t *out);

// Stores the answer of the request that holds the key (status 100..599; booking_id may be NULL).
// STORE_OK; STORE_ERR_NOT_FOUND (the key is not in progress: aborted, purged or finished);
// STORE_ERR_INVALID; STORE_ERR_DB.
int idem_finish(db_t *db, const char *key, int status, const void *body, size_t len, const char *booking_id);

// Forgets an in-progress key so a retry runs afresh. A finished key is left alone. STORE_OK
// (also when there was nothing to delete); STORE_ERR_DB.
int idem_abort(db_t *db, const char *key);

// Deletes keys created more than older_than_s seconds ago; *deleted (may be NULL) gets the count.
int idem_purge(db_t *db, int older_than_s, int64_t *deleted);

// Deletes webhook_events received more than older_than_s seconds ago (a provider redelivers for
// days at most: Stripe up to 3 days, so keep them longer than that). *deleted may be NULL.
int webhook_events_purge(db_t *db, int older_than_s, int64_t *deleted);

#endif
