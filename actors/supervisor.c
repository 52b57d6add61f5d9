// actors/supervisor.c — see supervisor.h.
//
// Start order: migrations (unless db.migrate = false), the bus broker (so every later message is
// traced), then payments, scheduler, dialer, duration-monitor, realtime-broadcaster, and http last,
// so no request is taken before the actors that serve it are up. Each start is announced as
// actor.started; a ping round trip then proves every actor is wired to the bus, and the broker is
// told start-up is over (the trace keeps start-up messages pinned for late clients).
//
// While running, the supervisor probes the database every second on its own connection and
// publishes db.state on every change and at least every 5 s; /healthz answers from it.
//
// Stop order is the reverse, http first: it stops taking requests and closes WebSockets with 1001
// while the actors behind it are still there to finish in-flight work.
#include "actors/supervisor.h"

#include <czmq.h>
#include <signal.h>
#include <string.h>

#include "actors/actor.h"
#include "actors/broadcaster.h"
#include "actors/dialer.h"
#include "actors/duration_monitor.h"
#include "actors/payments.h"
#include "actors/scheduler.h"
#include "bus/broker.h"
#include "common/util.h"
#include "realtime/http.h"
#include "storage/migrate.h"

#define SUPERVISOR_MAX_ACTORS 8
#define PING_TIMEOUT_MS 5000
#define DB_STATE_REPEAT_MS 5000
#define MIGRATE_WAIT_MS 30000

typedef struct {
    const char *name;
    zactor_t *actor;
} running_t;

typedef struct {
    const config_t *cfg;
    logger_t log;
    db_t *db;
    zactor_t *broker;
    bus_endpoint_t *bus;
    running_t running[SUPERVISOR_MAX_ACTORS];
    size_t count;
    actor_args_t actor_args[SUPERVISOR_MAX_ACTORS];
    http_args_t http_args;
    bus_broker_args_t broker_args;
    bool db_up_published;
    int64_t db_state_at_ms;
} supervisor_t;

static void publish_actor_event(supervisor_t *self, bus_type_t type, const char *name) {
    bus_msg_t msg;
    bus_msg_init(&msg, type);
    // actor.started and actor.stopped have the same single field
    snprintf(msg.u.actor_started.actor, sizeof msg.u.actor_started.actor, "%s", name);
    if (bus_publish(self->bus, &msg) != 0) log_warn(&self->log, "publish_failed", "topic=%s", bus_type_topic(type));
}

static int start_one(supervisor_t *self, const char *name, zactor_fn *fn, void *args) {
    zactor_t *actor = actor_start(fn, args, name, &self->log);
    if (!actor) return -1;
    self->running[self->count++] = (running_t){.name = name, .actor = actor};
    publish_actor_event(self, BUS_ACTOR_STARTED, name);
    return 0;
}

static int start_actors(supervisor_t *self) {
    const actor_spec_t *specs[] = {&payments_actor_spec, &scheduler_actor_spec, &dialer_actor_spec,
                                   &duration_monitor_actor_spec, &broadcaster_actor_spec};
    for (size_t i = 0; i < sizeof specs / sizeof specs[0]; i++) {
        self->actor_args[i] = (actor_args_t){.spec = specs[i], .cfg = self->cfg};
        if (start_one(self, specs[i]->name, actor_run, &self->actor_args[i]) != 0) return -1;
    }
    self->http_args = (http_args_t){.cfg = self->cfg, .log = {self->cfg->log_level, "http"}};
    return start_one(self, "http", http_actor, &self->http_args);
}

static void stop_actors(supervisor_t *self) {
    while (self->count > 0) {
        running_t *r = &self->running[--self->count];
        int64_t t0 = util_monotonic_ms();
        zactor_destroy(&r->actor);
        publish_actor_event(self, BUS_ACTOR_STOPPED, r->name);
        log_info(&self->log, "actor_drained", "name=%s ms=%lld", r->name, (long long)(util_monotonic_ms() - t0));
    }
}

// Pings every actor until each has answered (pings repeat: a subscription may still be settling).
static int ping_all(supervisor_t *self) {
    bool answered[SUPERVISOR_MAX_ACTORS] = {false};
    size_t missing = self->count;
    int64_t deadline = util_monotonic_ms() + PING_TIMEOUT_MS;
    zpoller_t *poller = zpoller_new(bus_endpoint_events(self->bus), NULL);
    int64_t nonce = util_now_us();
    while (missing > 0 && util_monotonic_ms() < deadline && !zsys_interrupted) {
        bus_msg_t ping;
        bus_msg_init(&ping, BUS_ACTOR_PING);
        snprintf(ping.u.actor_ping.target, sizeof ping.u.actor_ping.target, "*");
        ping.u.actor_ping.nonce = nonce;
        bus_publish(self->bus, &ping);
        int64_t round_end = util_monotonic_ms() + 200;
        while (missing > 0 && util_monotonic_ms() < round_end) {
            if (!zpoller_wait(poller, 50)) continue;
            bus_msg_t msg;
            if (bus_endpoint_recv(self->bus, bus_endpoint_events(self->bus), &msg) != 0) continue;
            if (msg.type != BUS_ACTOR_PONG || msg.u.actor_pong.nonce != nonce) continue;
            for (size_t i = 0; i < self->count; i++) {
                if (!answered[i] && strcmp(self->running[i].name, msg.u.actor_pong.actor) == 0) {
                    answered[i] = true;
                    missing--;
                }
            }
        }
    }
    zpoller_destroy(&poller);
    for (size_t i = 0; i < self->count; i++)
        if (!answered[i]) log_error(&self->log, "actor_no_pong", "name=%s", self->running[i].name);
    return missing == 0 ? 0 : -1;
}

static void probe_database(supervisor_t *self) {
    bool up = db_ping(self->db) == 0;
    int64_t now = util_monotonic_ms();
    if (up == self->db_up_published && now - self->db_state_at_ms < DB_STATE_REPEAT_MS) return;
    if (up != self->db_up_published) log_info(&self->log, up ? "db_up" : "db_down", NULL);
    bus_msg_t msg;
    bus_msg_init(&msg, BUS_DB_STATE);
    msg.u.db_state.up = up;
    msg.u.db_state.reconnects = (int64_t)db_reconnects(self->db);
    if (bus_publish(self->bus, &msg) == 0) {
        self->db_up_published = up;
        self->db_state_at_ms = now;
    }
}

static int run_migrations(supervisor_t *self) {
    if (!self->cfg->db_migrate) return 0;
    if (db_wait(self->db, MIGRATE_WAIT_MS) != 0) {
        log_error(&self->log, "migrate_failed", "reason=database_unreachable");
        return -1;
    }
    int applied = 0;
    char err[512];
    if (migrate_apply(self->db, &self->log, &applied, err, sizeof err) != 0) {
        log_error(&self->log, "migrate_failed", "reason=\"%s\"", err);
        return -1;
    }
    log_info(&self->log, "migrated", "applied=%d", applied);
    return 0;
}

static int start(supervisor_t *self) {
    self->db = db_new(self->cfg->db_url, &self->log);
    if (!self->db || run_migrations(self) != 0) return -1;
    self->broker_args = (bus_broker_args_t){
        .trace_endpoint = self->cfg->trace_endpoint, .keep = self->cfg->trace_keep, .log = {self->cfg->log_level, "bus"}};
    self->broker = bus_broker_new(&self->broker_args);
    if (!self->broker) return -1;
    self->bus = bus_endpoint_new("supervisor", (const char *const[]){"actor.pong", NULL});
    if (!self->bus || start_actors(self) != 0 || ping_all(self) != 0) return -1;
    zstr_send(self->broker, "STARTUP-DONE");
    probe_database(self);
    log_info(&self->log, "started", "listen=%s actors=%zu", self->cfg->http_listen, self->count);
    return 0;
}

static void run(supervisor_t *self) {
    zpoller_t *poller = zpoller_new(bus_endpoint_events(self->bus), NULL);
    while (!zsys_interrupted) {
        if (zpoller_wait(poller, 1000)) {
            bus_msg_t msg;   // late pongs and the like: read so the socket never fills
            bus_endpoint_recv(self->bus, bus_endpoint_events(self->bus), &msg);
        }
        if (zpoller_terminated(poller)) break;
        probe_database(self);
    }
    zpoller_destroy(&poller);
}

static void shutdown_all(supervisor_t *self) {
    stop_actors(self);
    bus_endpoint_destroy(&self->bus);
    zactor_destroy(&self->broker);
    db_destroy(&self->db);
}

int supervisor_run(const config_t *cfg) {
    supervisor_t self = {.cfg = cfg, .log = {cfg->log_level, "supervisor"}};
    signal(SIGPIPE, SIG_IGN);
    zsys_init();
    zsys_set_linger(100);
    int rc = start(&self);
    if (rc == 0) {
        run(&self);
        log_info(&self.log, "draining", NULL);
    }
    int64_t t0 = util_monotonic_ms();
    shutdown_all(&self);
    log_info(&self.log, rc == 0 ? "stopped" : "start_failed", "drain_ms=%lld", (long long)(util_monotonic_ms() - t0));
    return rc == 0 ? 0 : 1;
}
