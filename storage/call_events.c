// storage/call_events.c — queries on call_events (see call_events.h). The partition logic itself is
// the SQL function sweety_ensure_call_event_partitions (migrations/0001_schema.sql), so the
// migration and the scheduler's hourly run share one implementation.
#include "storage/call_events.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>

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
