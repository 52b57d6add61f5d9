// storage/call_events.h — the call_events table family (partitioned by UTC month).
#ifndef SWEETY_CALL_EVENTS_H
#define SWEETY_CALL_EVENTS_H

#include "storage/db.h"

// Creates the call_events partitions for the current UTC month and `months_ahead` months after it
// where missing (moving rows that had landed in the default partition). Meant to run hourly.
// Returns 0 and sets *created (may be NULL) to the number of partitions made, or -1.
int call_events_ensure_partitions(db_t *db, int months_ahead, int *created);

// Records one thing VAPI told us about a call (or we did to it): event_type non-empty (at most 100
// bytes: "status-update", "end-of-call-report", "call.started", ...), vapi_call_id and status may
// be NULL, details_json a JSON object's text or NULL for {} (it may hold a transcript: personal
// data, readable by sweety_app only). One statement, so it can also run inside a caller's
// transaction. Returns the storage/store.h codes: STORE_OK; STORE_ERR_NOT_FOUND (no such booking,
// or an id that is not a UUID); STORE_ERR_INVALID (empty or long event type, details that are not
// a JSON object); STORE_ERR_DB.
int call_events_add(db_t *db, const char *booking_id, const char *vapi_call_id, const char *event_type,
                    const char *status, const char *details_json);

#endif
