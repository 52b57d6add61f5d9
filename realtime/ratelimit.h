// realtime/ratelimit.h — requests per minute per key (a client address), in bounded memory.
//
// Sliding-window estimate (the "two fixed windows" scheme): each key keeps the count of the current
// calendar minute and of the one before; a request is allowed when
//     previous × (share of the previous minute still inside the last 60 s) + current + 1 <= limit.
// This never lets more than about `limit` through in any 60 s (no double burst at a minute boundary
// as a plain fixed window allows) and needs two counters per key. Refused requests are not counted,
// so a client that keeps hammering gets through again at the rate the limit allows.
//
// Memory: at most max_keys entries, allocated once. When a new key finds the table full, the least
// recently seen key is forgotten. That only loses information when more than max_keys distinct
// addresses are active within two minutes, when per-address limits have stopped meaning much anyway.
//
// Pure data structure: no I/O, no clocks (callers pass the time), not thread-safe (the HTTP actor
// keeps one per limited endpoint, on its service thread).
#ifndef SWEETY_RATELIMIT_H
#define SWEETY_RATELIMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define RATELIMIT_KEY_MAX 32

typedef struct ratelimit_t ratelimit_t;

// max_keys >= 1. NULL when out of memory or max_keys is 0.
ratelimit_t *ratelimit_new(size_t max_keys);
void ratelimit_destroy(ratelimit_t **self_p);

// Counts one request of `key` (key_len 1..RATELIMIT_KEY_MAX bytes) at now_ms (any clock that does
// not go backwards; milliseconds). true: allowed (and counted); false: over the limit.
// A limit_per_min <= 0 (or absurdly large, > 2^40) means unlimited: nothing is recorded.
bool ratelimit_allow(ratelimit_t *self, const void *key, size_t key_len, int64_t limit_per_min, int64_t now_ms);

size_t ratelimit_size(const ratelimit_t *self);        // keys currently remembered
uint64_t ratelimit_evictions(const ratelimit_t *self); // keys forgotten because the table was full

#endif
