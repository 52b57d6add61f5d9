// realtime/pending.h — the HTTP actor's table of requests waiting for an answer from another actor
// (request_id → the waiting connection, what kind of request it was, its deadline).
//
// A request id is (generation << PENDING_SLOT_BITS) | slot: the slot makes lookup O(1) without
// hashing, the generation (a counter that only grows) makes every id unique for the lifetime of the
// table, so an answer that arrives after its entry was freed and its slot reused is recognised as
// late and ignored. Entries form a list in insertion order; as every entry gets the same timeout,
// that is deadline order too, so expiry only ever looks at the head.
//
// A client that goes away before its answer leaves an orphan: the entry stays (owner NULL) until the
// answer or the deadline, so the answer can still be accounted (metrics, caches) and the table
// still bounds the work handed to other actors.
//
// Pure data structure: no I/O, no clocks (callers pass the time), not thread-safe (the HTTP actor
// uses it on its service thread only).
#ifndef SWEETY_PENDING_H
#define SWEETY_PENDING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PENDING_SLOT_BITS 16
#define PENDING_CAPACITY_MAX (1u << PENDING_SLOT_BITS)

typedef struct pending_t pending_t;

// capacity: 1 .. PENDING_CAPACITY_MAX entries in flight. NULL on a bad capacity or no memory.
pending_t *pending_new(size_t capacity);
void pending_destroy(pending_t **self_p);

// A new entry. Returns its id (> 0), or -1 when the table is full.
int64_t pending_add(pending_t *self, void *owner, int kind, int64_t deadline_ms);

// Removes the entry `id` and reports its owner (NULL for an orphan) and kind. false when there is no
// such entry (never issued, expired, already answered): a late answer.
bool pending_take(pending_t *self, int64_t id, void **owner, int *kind);

// The owner went away: keep the entry, forget the owner. No effect on an unknown id.
void pending_orphan(pending_t *self, int64_t id);

// Removes every entry whose deadline is <= now_ms (all of them when now_ms is INT64_MAX), oldest
// first, calling cb for each (owner NULL for orphans). Returns how many were removed.
typedef void (*pending_expired_fn)(void *arg, int64_t id, void *owner, int kind);
size_t pending_expire(pending_t *self, int64_t now_ms, pending_expired_fn cb, void *arg);

size_t pending_count(const pending_t *self);
size_t pending_capacity(const pending_t *self);

#endif
