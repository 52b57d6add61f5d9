// bus/trace_client.c — the client side of the trace: `sweetyctl trace` and tests.
//
// A DEALER connects to the broker's ROUTER (bus/broker.h) and sends ["SUB", prefix]. The broker
// answers with [topic, body] messages (what it has kept, then live ones) and, when it checks for
// departed clients, a one-frame "PING" that we ignore. Each message is decoded and printed as one
// compact JSON line with personal fields masked; a message that does not decode is skipped with a
// note on stderr (its topic only, never its body). Runs on the caller's thread until `count`
// messages, the idle timeout, or Ctrl-C (czmq's signal handler sets zsys_interrupted).
#include "bus/trace_client.h"

#include <errno.h>
#include <string.h>

#include "bus/bus.h"
#include "common/util.h"

#define POLL_SLICE_MS 100
#define TOPIC_MAX 64

// The topic as printable ASCII for a diagnostic line.
static void topic_for_humans(zframe_t *frame, char *buf, size_t size) {
    size_t n = zframe_size(frame);
    if (n >= size) n = size - 1;
    const unsigned char *p = zframe_data(frame);
    for (size_t i = 0; i < n; i++) buf[i] = (p[i] >= 0x20 && p[i] < 0x7f) ? (char)p[i] : '?';
    buf[n] = '\0';
}

// Returns 1 when a line was written, 0 when the message was skipped, -1 when `out` failed.
static int print_message(zmsg_t *msg, FILE *out) {
    if (zmsg_size(msg) == 1 && zframe_streq(zmsg_first(msg), "PING")) return 0;
    if (zmsg_size(msg) != 2) {
        fprintf(stderr, "trace: skipped a message of %zu frames\n", zmsg_size(msg));
        return 0;
    }
    zframe_t *topic_frame = zmsg_first(msg);
    zframe_t *body = zmsg_next(msg);
    char topic[TOPIC_MAX];
    size_t n = zframe_size(topic_frame);
    int rc = BUS_E_TOPIC;
    bus_msg_t decoded;
    if (n < sizeof topic && !memchr(zframe_data(topic_frame), 0, n)) {
        memcpy(topic, zframe_data(topic_frame), n);
        topic[n] = '\0';
        rc = bus_decode(topic, zframe_data(body), zframe_size(body), &decoded);
    }
    if (rc != BUS_OK) {
        topic_for_humans(topic_frame, topic, sizeof topic);
        fprintf(stderr, "trace: skipped a message on topic \"%s\": %s\n", topic, bus_strerror(rc));
        return 0;
    }
    json_t *json = bus_msg_to_json(&decoded, true);
    char *line = json ? json_dumps(json, JSON_COMPACT) : NULL;
    json_decref(json);
    if (!line) {
        fprintf(stderr, "trace: out of memory\n");
        return 0;
    }
    int ok = fputs(line, out) >= 0 && fputc('\n', out) != EOF && fflush(out) == 0;
    free(line);
    return ok ? 1 : -1;
}

int trace_client_run(const char *endpoint, const char *topic_prefix, int64_t count,
                     int idle_timeout_ms, FILE *out) {
    if (!endpoint || !*endpoint || !out) {
        fprintf(stderr, "trace: no endpoint to connect to\n");
        return -1;
    }
    if (topic_prefix && strlen(topic_prefix) >= TOPIC_MAX) {
        fprintf(stderr, "trace: a topic prefix is at most %d characters\n", TOPIC_MAX - 1);
        return -1;
    }
    zsock_t *sock = zsock_new(ZMQ_DEALER);
    if (!sock) {
        fprintf(stderr, "trace: cannot create a socket\n");
        return -1;
    }
    zsock_set_linger(sock, 0);
    zsock_set_sndtimeo(sock, 1000);
    if (zmq_connect(zsock_resolve(sock), endpoint) != 0) {
        fprintf(stderr, "trace: cannot connect to %s: %s\n", endpoint, zmq_strerror(errno));
        zsock_destroy(&sock);
        return -1;
    }
    if (zsock_send(sock, "ss", "SUB", topic_prefix ? topic_prefix : "") != 0) {
        fprintf(stderr, "trace: cannot subscribe at %s: %s\n", endpoint, zmq_strerror(errno));
        zsock_destroy(&sock);
        return -1;
    }

    int64_t printed = 0;
    int64_t last_seen = util_monotonic_ms();
    int rc = 0;
    while (!zsys_interrupted) {
        long slice = POLL_SLICE_MS;
        if (idle_timeout_ms > 0) {
            int64_t left = last_seen + idle_timeout_ms - util_monotonic_ms();
            if (left <= 0) {
                rc = 1;
                break;
            }
            if (left < slice) slice = (long)left;
        }
        zmq_pollitem_t item = {zsock_resolve(sock), 0, ZMQ_POLLIN, 0};
        int ready = zmq_poll(&item, 1, slice);
        if (ready == -1) {
            if (errno == EINTR) continue;
            fprintf(stderr, "trace: %s\n", zmq_strerror(errno));
            rc = -1;
            break;
        }
        if (ready == 0) continue;
        zmsg_t *msg = zmsg_recv(sock);
        if (!msg) continue;   // interrupted
        last_seen = util_monotonic_ms();
        int written = print_message(msg, out);
        zmsg_destroy(&msg);
        if (written < 0) {
            fprintf(stderr, "trace: cannot write the output: %s\n", strerror(errno));
            rc = -1;
            break;
        }
        printed += written;
        if (count > 0 && printed >= count) break;
    }
    zsock_destroy(&sock);
    return rc;
}
