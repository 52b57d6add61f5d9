// realtime/ratelimit.c — see ratelimit.h. A fixed array of entries, a chained hash on top (FNV-1a)
// and a doubly linked list in order of last use, so lookup, insert and eviction are all O(1).
#include "realtime/ratelimit.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#define NIL UINT32_MAX
#define WINDOW_MS 60000

typedef struct {
    uint8_t key[RATELIMIT_KEY_MAX];
    uint8_t key_len;              // 0: entry unused
    int64_t minute;               // calendar minute (now_ms / WINDOW_MS) of `current`
    int64_t current, previous;    // requests counted in that minute and the one before
    uint32_t chain;               // next entry in the same bucket
    uint32_t older, newer;        // use order
} entry_t;

struct ratelimit_t {
    entry_t *entries;
    uint32_t *buckets;
    size_t capacity, used, bucket_mask;
    uint32_t oldest, newest;
    uint64_t evictions;
};

static uint32_t hash(const void *key, size_t len) {
    const uint8_t *p = key;
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= 16777619u;
    }
    return h;
}

ratelimit_t *ratelimit_new(size_t max_keys) {
    if (max_keys == 0 || max_keys >= NIL / 2) return NULL;
    ratelimit_t *self = calloc(1, sizeof *self);
    if (!self) return NULL;
    size_t nbuckets = 1;
    while (nbuckets < max_keys * 2) nbuckets <<= 1;
    self->entries = calloc(max_keys, sizeof *self->entries);
    self->buckets = malloc(nbuckets * sizeof *self->buckets);
    if (!self->entries || !self->buckets) {
        ratelimit_destroy(&self);
        return NULL;
    }
    for (size_t i = 0; i < nbuckets; i++) self->buckets[i] = NIL;
    self->capacity = max_keys;
    self->bucket_mask = nbuckets - 1;
    self->oldest = self->newest = NIL;
    return self;
}

void ratelimit_destroy(ratelimit_t **self_p) {
    assert(self_p);
    ratelimit_t *self = *self_p;
    if (!self) return;
    free(self->entries);
    free(self->buckets);
    free(self);
    *self_p = NULL;
}

static void unlink_use(ratelimit_t *self, uint32_t i) {
    entry_t *e = &self->entries[i];
    if (e->older != NIL) self->entries[e->older].newer = e->newer;
    else self->oldest = e->newer;
    if (e->newer != NIL) self->entries[e->newer].older = e->older;
    else self->newest = e->older;
    e->older = e->newer = NIL;
}

static void link_newest(ratelimit_t *self, uint32_t i) {
    entry_t *e = &self->entries[i];
    e->older = self->newest;
    e->newer = NIL;
    if (self->newest != NIL) self->entries[self->newest].newer = i;
    else self->oldest = i;
    self->newest = i;
}

static void unlink_bucket(ratelimit_t *self, uint32_t i) {
    entry_t *e = &self->entries[i];
    uint32_t *p = &self->buckets[hash(e->key, e->key_len) & self->bucket_mask];
    while (*p != NIL && *p != i) p = &self->entries[*p].chain;
    if (*p == i) *p = e->chain;
    e->chain = NIL;
}

static uint32_t lookup(ratelimit_t *self, const void *key, size_t len, uint32_t h) {
    for (uint32_t i = self->buckets[h & self->bucket_mask]; i != NIL; i = self->entries[i].chain) {
        const entry_t *e = &self->entries[i];
        if (e->key_len == len && memcmp(e->key, key, len) == 0) return i;
    }
    return NIL;
}

static uint32_t insert(ratelimit_t *self, const void *key, size_t len, uint32_t h) {
    uint32_t i;
    if (self->used < self->capacity) {
        i = (uint32_t)self->used++;
    } else {
        i = self->oldest;   // full: forget the key seen least recently
        unlink_use(self, i);
        unlink_bucket(self, i);
        self->evictions++;
    }
    entry_t *e = &self->entries[i];
    memset(e, 0, sizeof *e);
    memcpy(e->key, key, len);
    e->key_len = (uint8_t)len;
    e->minute = INT64_MIN;
    uint32_t *bucket = &self->buckets[h & self->bucket_mask];
    e->chain = *bucket;
    *bucket = i;
    link_newest(self, i);
    return i;
}

bool ratelimit_allow(ratelimit_t *self, const void *key, size_t key_len, int64_t limit_per_min, int64_t now_ms) {
    assert(self && key && key_len > 0 && key_len <= RATELIMIT_KEY_MAX);
    if (limit_per_min <= 0 || limit_per_min > INT64_MAX / WINDOW_MS / 4) return true;
    if (now_ms < 0) now_ms = 0;
    uint32_t h = hash(key, key_len);
    uint32_t i = lookup(self, key, key_len, h);
    if (i == NIL) {
        i = insert(self, key, key_len, h);
    } else {
        unlink_use(self, i);
        link_newest(self, i);
    }
    entry_t *e = &self->entries[i];
    int64_t minute = now_ms / WINDOW_MS;
    if (minute != e->minute) {
        e->previous = minute == e->minute + 1 ? e->current : 0;
        e->current = 0;
        e->minute = minute;
    }
    // previous × (WINDOW − elapsed)/WINDOW + current + 1 <= limit, in integers (all terms are small:
    // counts never exceed the limit, which the configuration caps far below 2^40).
    int64_t elapsed = now_ms % WINDOW_MS;
    if (e->previous * (WINDOW_MS - elapsed) + (e->current + 1) * WINDOW_MS > limit_per_min * WINDOW_MS) return false;
    e->current++;
    return true;
}

size_t ratelimit_size(const ratelimit_t *self) {
    assert(self);
    return self->used;
}

uint64_t ratelimit_evictions(const ratelimit_t *self) {
    assert(self);
    return self->evictions;
}
