// storage/call_events.c — queries on call_events (see call_events.h). The partition logic itself is
// the SQL function sweety_ensure_call_event_partitions (migrations/0001_schema.sql), so the
// migration and the scheduler's hourly run share one implementation.
#include "storage/call_events.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "storage/store_sql.h"

int call_events_ensure_partitions(db_t *db, int months_ahead, int *created) {
    assert(db && months_ahead >= 0);
    char n[16];
    snprintf(n, sizeof n, "%d", months_ahead);
    const char *params[] = {n};
    PGresult *res = db_exec_prepared(db, "call_events_ensure_partitions",
                                     "SELECT sweety_ensure_call_event_partitions($1::integer)", 1, params, NULL);
    if (!res) return -1;
    int made = PQntuples(res) == 1 ? atoi(PQgetvalue(res, 0, 0)) : 0;
    PQclear(res);
    if (created) *created = made;
    return 0;
}

int call_events_add(db_t *db, const char *booking_id, const char *vapi_call_id, const char *event_type,
                    const char *status, const char *details_json) {
    assert(db);
    if (!store_is_uuid(booking_id)) return STORE_ERR_NOT_FOUND;
    if (!store_len_ok(event_type, 100, true) || !store_len_ok(vapi_call_id, STORE_REF_MAX - 1, false) ||
        !store_len_ok(status, 100, false))
        return STORE_ERR_INVALID;
    const char *params[] = {booking_id, vapi_call_id, event_type, status, details_json ? details_json : "{}"};
    char sqlstate[6];
    PGresult *res = db_exec_prepared(db, "call_events_add",
                                     "INSERT INTO call_events (booking_id, vapi_call_id, event_type, status, details)"
                                     " SELECT $1::uuid, $2, $3, $4, d FROM (SELECT $5::jsonb AS d) j"
                                     " WHERE jsonb_typeof(d) = 'object'"
                                     " RETURNING id",
                                     5, params, sqlstate);
    if (!res) return strcmp(sqlstate, "23503") == 0 ? STORE_ERR_NOT_FOUND : store_rc_from_sqlstate(sqlstate);
    int rc = PQntuples(res) == 1 ? STORE_OK : STORE_ERR_INVALID;
    PQclear(res);
    return rc;
}
