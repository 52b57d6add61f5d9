// storage/notify.c — see notify.h.
#include "storage/notify.h"

#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "storage/db.h"

#define NOTIFY_CHANNELS_MAX 8

struct notify_t {
    db_t *db;
    logger_t log;
    char *channels[NOTIFY_CHANNELS_MAX + 1];
    bool listening;   // LISTEN issued on the current connection
};

notify_t *notify_new(const char *url, const logger_t *lg, const char *const *channels) {
    notify_t *self = calloc(1, sizeof *self);
    if (!self) return NULL;
    self->log = *lg;
    self->db = db_new(url, lg);
    bool ok = self->db != NULL;
    for (size_t i = 0; ok && channels && channels[i] && i < NOTIFY_CHANNELS_MAX; i++)
        ok = (self->channels[i] = strdup(channels[i])) != NULL;
    if (!ok) notify_destroy(&self);
    return self;
}

void notify_destroy(notify_t **self_p) {
    notify_t *self = *self_p;
    if (!self) return;
    for (size_t i = 0; self->channels[i]; i++) free(self->channels[i]);
    db_destroy(&self->db);
    free(self);
    *self_p = NULL;
}

static int listen_all(notify_t *self) {
    PGconn *conn = db_conn(self->db);
    for (size_t i = 0; conn && self->channels[i]; i++) {
        char *ident = PQescapeIdentifier(conn, self->channels[i], strlen(self->channels[i]));
        if (!ident) return -1;
        char sql[160];
        snprintf(sql, sizeof sql, "LISTEN %s", ident);
        PQfreemem(ident);
        if (db_command(self->db, sql) != 0) return -1;
    }
    return conn ? 0 : -1;
}

int notify_ensure(notify_t *self) {
    if (self->listening && db_is_up(self->db)) return 0;
    self->listening = false;
    if (db_ensure(self->db) != 0) return -1;
    if (listen_all(self) != 0) {
        db_disconnect(self->db);
        return -1;
    }
    self->listening = true;
    log_info(&self->log, "listening", NULL);
    return 1;
}

int notify_fd(notify_t *self) {
    PGconn *conn = self->listening ? db_conn(self->db) : NULL;
    return conn ? PQsocket(conn) : -1;
}

int notify_drain(notify_t *self, notify_fn *fn, void *arg) {
    PGconn *conn = self->listening ? db_conn(self->db) : NULL;
    if (!conn || PQconsumeInput(conn) == 0 || PQstatus(conn) != CONNECTION_OK) {
        log_warn(&self->log, "listen_connection_lost", NULL);
        self->listening = false;
        db_disconnect(self->db);
        return -1;
    }
    PGnotify *n;
    while ((n = PQnotifies(conn)) != NULL) {
        fn(arg, n->relname, n->extra ? n->extra : "");
        PQfreemem(n);
    }
    return 0;
}
