// realtime/pending.c — see pending.h.
#include "realtime/pending.h"

#include <assert.h>
#include <stdlib.h>

#define NIL UINT32_MAX
#define SLOT_MASK ((int64_t)PENDING_CAPACITY_MAX - 1)

typedef struct {
    int64_t id;            // 0 while free
    void *owner;
    int kind;
    int64_t deadline_ms;
    uint32_t prev, next;   // the in-use list (insertion order) or, for free slots, the free list
} slot_t;

struct pending_t {
    slot_t *slots;
    size_t capacity, count;
    uint32_t head, tail;   // in-use list: oldest first
    uint32_t free_head;
    int64_t generation;
};

pending_t *pending_new(size_t capacity) {
    if (capacity == 0 || capacity > PENDING_CAPACITY_MAX) return NULL;
    pending_t *self = calloc(1, sizeof *self);
    if (!self) return NULL;
    self->slots = calloc(capacity, sizeof *self->slots);
    if (!self->slots) {
        free(self);
        return NULL;
    }
    self->capacity = capacity;
    self->head = self->tail = NIL;
    for (size_t i = 0; i < capacity; i++) self->slots[i].next = i + 1 < capacity ? (uint32_t)(i + 1) : NIL;
    self->free_head = 0;
    return self;
}

void pending_destroy(pending_t **self_p) {
    assert(self_p);
    pending_t *self = *self_p;
    if (!self) return;
    free(self->slots);
    free(self);
    *self_p = NULL;
}

int64_t pending_add(pending_t *self, void *owner, int kind, int64_t deadline_ms) {
    assert(self);
    if (self->free_head == NIL) return -1;
    uint32_t i = self->free_head;
    slot_t *s = &self->slots[i];
    self->free_head = s->next;
    self->generation++;
    s->id = (self->generation << PENDING_SLOT_BITS) | (int64_t)i;
    s->owner = owner;
    s->kind = kind;
    s->deadline_ms = deadline_ms;
    s->next = NIL;
    s->prev = self->tail;
    if (self->tail != NIL) self->slots[self->tail].next = i;
    else self->head = i;
    self->tail = i;
    self->count++;
    return s->id;
}

static slot_t *find(pending_t *self, int64_t id) {
    if (id <= 0) return NULL;
    int64_t i = id & SLOT_MASK;
    if ((size_t)i >= self->capacity || self->slots[i].id != id) return NULL;
    return &self->slots[i];
}

static void release(pending_t *self, uint32_t i) {
    slot_t *s = &self->slots[i];
    if (s->prev != NIL) self->slots[s->prev].next = s->next;
    else self->head = s->next;
    if (s->next != NIL) self->slots[s->next].prev = s->prev;
    else self->tail = s->prev;
    s->id = 0;
    s->owner = NULL;
    s->prev = NIL;
    s->next = self->free_head;
    self->free_head = i;
    self->count--;
}

bool pending_take(pending_t *self, int64_t id, void **owner, int *kind) {
    assert(self);
    slot_t *s = find(self, id);
    if (!s) return false;
    if (owner) *owner = s->owner;
    if (kind) *kind = s->kind;
    release(self, (uint32_t)(s - self->slots));
    return true;
}

void pending_orphan(pending_t *self, int64_t id) {
    assert(self);
    slot_t *s = find(self, id);
    if (s) s->owner = NULL;
}

size_t pending_expire(pending_t *self, int64_t now_ms, pending_expired_fn cb, void *arg) {
    assert(self);
    size_t n = 0;
    while (self->head != NIL && self->slots[self->head].deadline_ms <= now_ms) {
        uint32_t i = self->head;
        slot_t s = self->slots[i];
        release(self, i);
        n++;
        if (cb) cb(arg, s.id, s.owner, s.kind);
    }
    return n;
}

size_t pending_count(const pending_t *self) {
    assert(self);
    return self->count;
}

size_t pending_capacity(const pending_t *self) {
    assert(self);
    return self->capacity;
}
