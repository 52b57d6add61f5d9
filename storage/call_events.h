// storage/call_events.h — the call_events table family (partitioned by UTC month).
#ifndef SWEETY_CALL_EVENTS_H
#define SWEETY_CALL_EVENTS_H

#include "storage/db.h"

// Creates the call_events partitions for the current UTC month and `months_ahead` months after it
// where missing (moving rows that had landed in the default partition). Meant to run hourly.
// Returns 0 and sets *created (may be NULL) to the number of partitions made, or -1.
int call_events_ensure_partitions(db_t *db, int months_ahead, int *created);

#endif
