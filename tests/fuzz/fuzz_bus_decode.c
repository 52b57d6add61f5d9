// tests/fuzz/fuzz_bus_decode.c — the msgpack bus decoder (bus/bus.c, bus_decode) for every message
// type of bus/messages.def, and what is done with a decoded message: re-encoding it and printing
// it as trace JSON.
//
// Input: "<topic>\0<msgpack body>", as the two frames of a bus message (frame 0, the topic, has no
// NUL of its own). The seed corpus is written by the real encoder (fuzz_gen_seeds). A body the
// decoder accepts must encode again (what one side accepts the other accepts too, bus.c) and
// decode back to the same message.
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bus/bus.h"
#include "tests/fuzz/fuzz.h"

#define TOPIC_MAX 64

static void print_json(const bus_msg_t *msg, bool mask) {
    json_t *j = bus_msg_to_json(msg, mask);
    FUZZ_CHECK(j != NULL);
    char *text = json_dumps(j, JSON_COMPACT);
    FUZZ_CHECK(text != NULL);
    free(text);
    json_decref(j);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const uint8_t *nul = memchr(data, '\0', size < TOPIC_MAX + 1 ? size : TOPIC_MAX + 1);
    if (!nul) return 0;
    const char *topic = (const char *)data;
    const uint8_t *body = nul + 1;
    size_t blen = size - (size_t)(body - data);

    static bus_msg_t msg, again;   // several KiB each: kept off the stack
    memset(&msg, 0, sizeof msg);
    int rc = bus_decode(topic, body, blen, &msg);
    if (rc != BUS_OK) {
        FUZZ_CHECK(rc < 0 && bus_strerror(rc) != NULL);
        bus_msg_t untouched;
        memset(&untouched, 0, sizeof untouched);
        FUZZ_CHECK(memcmp(&msg, &untouched, sizeof msg) == 0);   // "on error *msg is untouched"
        return 0;
    }
    FUZZ_CHECK(msg.type == bus_type_from_topic(topic));
    FUZZ_CHECK(strcmp(bus_type_topic(msg.type), topic) == 0);
    print_json(&msg, true);
    print_json(&msg, false);

    char *buf = NULL;
    size_t len = 0;
    FUZZ_CHECK(bus_encode(&msg, &buf, &len) == BUS_OK);
    memset(&again, 0, sizeof again);
    FUZZ_CHECK(bus_decode(topic, buf, len, &again) == BUS_OK);
    FUZZ_CHECK(memcmp(&msg, &again, sizeof msg) == 0);
    free(buf);
    return 0;
}
