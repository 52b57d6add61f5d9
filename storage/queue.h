// storage/queue.h — the call queue (table call_queue): what the scheduler claims and the dialer
// works on. Read side for operators now (sweetyctl booking show / queue); the claim and settle
// queries join it with the dispatch work.
//
// Return codes are those of storage/store.h; outputs are written only on STORE_OK.
#ifndef SWEETY_QUEUE_H
#define SWEETY_QUEUE_H

#include <stddef.h>
#include <stdint.h>

#include "storage/db.h"
#include "storage/store.h"

typedef struct {
    char id[STORE_UUID_LEN];
    char booking_id[STORE_UUID_LEN];
    char plan[STORE_KEY_MAX];
    int priority;
    char status[STORE_STATUS_MAX];   // queued | claimed | dialing | active | done | failed | cancelled
    int attempt;
    int max_retries;
    char next_attempt_at[STORE_TS_MAX];
    char agent_id[STORE_UUID_LEN];   // "" when none
    char account_id[STORE_UUID_LEN];
    char vapi_call_id[STORE_REF_MAX];
    char created_at[STORE_TS_MAX];
    char updated_at[STORE_TS_MAX];
} queue_entry_t;

// The queue row of one booking. STORE_OK; STORE_ERR_NOT_FOUND (none, e.g. unpaid); STORE_ERR_DB.
int queue_get(db_t *db, const char *booking_id, queue_entry_t *out);

// The calls still to make or in progress (status queued, claimed, dialing or active), in the order
// the scheduler takes them: priority (highest first), then age. *out: malloc'ed array of *n
// (free()), NULL when empty. STORE_OK; STORE_ERR_DB.
int queue_list_open(db_t *db, queue_entry_t **out, size_t *n);

#endif
