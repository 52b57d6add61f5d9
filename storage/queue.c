// storage/queue.c — see queue.h.
#include "storage/queue.h"

#include <stdlib.h>
#include <string.h>

#include "storage/store_sql.h"

#define QUEUE_COLUMNS                                                                                   \
    "id, booking_id, plan::text, priority, status::text, attempt, max_retries, "                       \
    SQL_RFC3339("next_attempt_at") ", agent_id, account_id, vapi_call_id, " SQL_RFC3339("created_at") \
    ", " SQL_RFC3339("updated_at")

static void queue_row(const PGresult *res, int r, queue_entry_t *q) {
    memset(q, 0, sizeof *q);
    store_copy(q->id, sizeof q->id, res, r, 0);
    store_copy(q->booking_id, sizeof q->booking_id, res, r, 1);
    store_copy(q->plan, sizeof q->plan, res, r, 2);
    q->priority = (int)store_int64(res, r, 3);
    store_copy(q->status, sizeof q->status, res, r, 4);
    q->attempt = (int)store_int64(res, r, 5);
    q->max_retries = (int)store_int64(res, r, 6);
    store_copy(q->next_attempt_at, sizeof q->next_attempt_at, res, r, 7);
    store_copy(q->agent_id, sizeof q->agent_id, res, r, 8);
    store_copy(q->account_id, sizeof q->account_id, res, r, 9);
    store_copy(q->vapi_call_id, sizeof q->vapi_call_id, res, r, 10);
    store_copy(q->created_at, sizeof q->created_at, res, r, 11);
    store_copy(q->updated_at, sizeof q->updated_at, res, r, 12);
}

int queue_get(db_t *db, const char *booking_id, queue_entry_t *out) {
    if (!store_is_uuid(booking_id)) return STORE_ERR_NOT_FOUND;
    const char *params[] = {booking_id};
    PGresult *res = db_exec_prepared(db, "queue_get", "SELECT " QUEUE_COLUMNS " FROM call_queue WHERE booking_id = $1",
                                     1, params, NULL);
    if (!res) return STORE_ERR_DB;
    int rc = PQntuples(res) == 1 ? STORE_OK : STORE_ERR_NOT_FOUND;
    if (rc == STORE_OK) queue_row(res, 0, out);
    PQclear(res);
    return rc;
}

static void queue_list_row(const PGresult *res, int r, void *elem) { queue_row(res, r, elem); }

int queue_list_open(db_t *db, queue_entry_t **out, size_t *n) {
    PGresult *res = db_exec_prepared(db, "queue_list_open",
                                     "SELECT " QUEUE_COLUMNS " FROM call_queue"
                                     " WHERE status IN ('queued', 'claimed', 'dialing', 'active')"
                                     " ORDER BY priority DESC, created_at, id",
                                     0, NULL, NULL);
    void *list = NULL;
    int rc = store_rows(res, sizeof **out, queue_list_row, &list, n);
    if (rc == STORE_OK) *out = list;
    return rc;
}
