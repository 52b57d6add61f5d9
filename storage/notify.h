// storage/notify.h — a PostgreSQL LISTEN connection of its own (STYLE.md: LISTEN needs its own
// connection polled on PQsocket()), with reconnects and re-LISTEN after each.
//
// Thread: the one that created it. The owner polls notify_fd() in its loop; after a reconnect the
// descriptor changes (notify_ensure returns 1) and anything notified while the connection was down
// is lost, so the owner re-reads what it needs from the tables then.
#ifndef SWEETY_NOTIFY_H
#define SWEETY_NOTIFY_H

#include "common/log.h"

typedef struct notify_t notify_t;

// channels: NULL-terminated list of channel names (copied). Does not connect yet.
notify_t *notify_new(const char *url, const logger_t *lg, const char *const *channels);
void notify_destroy(notify_t **self_p);

// Connects and LISTENs if needed (with the backoff of storage/db.h). Returns 1 when it has just
// (re)connected, 0 when it was already up, -1 while down.
int notify_ensure(notify_t *self);
// The socket to poll for input, -1 while down.
int notify_fd(notify_t *self);

typedef void(notify_fn)(void *arg, const char *channel, const char *payload);
// Reads what arrived and calls fn for each notification. 0, or -1 when the connection broke
// (it is then marked down; call notify_ensure later).
int notify_drain(notify_t *self, notify_fn *fn, void *arg);

#endif
