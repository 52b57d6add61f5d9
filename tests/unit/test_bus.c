// tests/unit/test_bus.c — the bus: the catalogue's codec (every message type, generated from
// bus/messages.def so a new type is covered the day it is added), hostile bodies, the trace JSON,
// and the real sockets: endpoints through a running broker, inboxes, the trace served on an ipc
// endpoint in a temporary directory, and the batches of trace copies (each sender's order kept,
// flushed by the actor loop before it waits). Tests wait for conditions with deadlines, never sleep.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <msgpack.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "actors/actor.h"
#include "bus/broker.h"
#include "bus/bus.h"
#include "bus/trace_client.h"
#include "common/util.h"

#define WAIT_MS 5000

// ---- the catalogue, seen from the test --------------------------------------------------------

typedef struct {
    char kind;   // 's' string, 'p' personal string, 'i' int64, 'b' bool
    size_t size;
    const char *name;
} tfield_t;

#define MAX_FIELDS 32

static void add_field(tfield_t *out, size_t *n, char kind, size_t size, const char *name) {
    assert_true(*n < MAX_FIELDS);   // raise MAX_FIELDS for a bigger message
    out[(*n)++] = (tfield_t){kind, size, name};
}

static size_t catalogue_fields(bus_type_t type, tfield_t *out) {
    size_t n = 0;
    switch (type) {
#define F_STR(f, sz) add_field(out, &n, 's', (sz), #f);
#define F_PII(f, sz) add_field(out, &n, 'p', (sz), #f);
#define F_I64(f) add_field(out, &n, 'i', 0, #f);
#define F_BOOL(f) add_field(out, &n, 'b', 0, #f);
#define BUS_MESSAGE(ID, topic, name, fields) \
    case BUS_##ID:                           \
        fields break;
#include "bus/messages.def"
#undef BUS_MESSAGE
#undef F_STR
#undef F_PII
#undef F_I64
#undef F_BOOL
    default:
        fail_msg("not a message type: %d", type);
    }
    return n;
}

// variant 0: strings at their maximum length, extreme integers; 1: empty strings, zeros;
// 2: multi-byte UTF-8 up to the maximum length, small negative integers.
// noinline: at -O3 GCC inlines this into every field and then misjudges the bounds (a false
// -Wstringop-overflow).
__attribute__((noinline)) static void fill_text(char *buf, size_t size, int variant, int k) {
    memset(buf, 0, size);
    if (variant == 1) return;
    size_t pairs = (size - 1) / 2;   // variant 2: as many "é" (two bytes) as fit, then one 'z'
    for (size_t i = 0; i + 1 < size; i++) {
        if (variant == 0) buf[i] = (char)('a' + (k + (int)i) % 26);
        else buf[i] = i < 2 * pairs ? (i % 2 ? '\xa9' : '\xc3') : 'z';
    }
}

static int64_t sample_i64(int variant, int k) {
    if (variant == 0) return k % 2 ? INT64_MIN : INT64_MAX;
    if (variant == 1) return 0;
    return -1 - k;
}

static void fill_message(bus_msg_t *msg, bus_type_t type, int variant) {
    bus_msg_init(msg, type);
    fill_text(msg->from, sizeof msg->from, variant, 7);
    msg->ts_us = variant == 0 ? INT64_MAX : 1795291860123456;
    int k = 0;
    switch (type) {
#define F_STR(f, sz) fill_text(m->f, sizeof m->f, variant, k++);
#define F_PII(f, sz) fill_text(m->f, sizeof m->f, variant, k++);
#define F_I64(f) m->f = sample_i64(variant, k++);
#define F_BOOL(f) m->f = ((variant + k++) % 2) == 0;
#define BUS_MESSAGE(ID, topic, name, fields) \
    case BUS_##ID: {                         \
        bus_##name##_t *m = &msg->u.name;    \
        fields break;                        \
    }
#include "bus/messages.def"
#undef BUS_MESSAGE
#undef F_STR
#undef F_PII
#undef F_I64
#undef F_BOOL
    default:
        fail_msg("not a message type: %d", type);
    }
    (void)k;
}

static void assert_same_message(const bus_msg_t *a, const bus_msg_t *b) {
    assert_int_equal(a->type, b->type);
    assert_string_equal(a->from, b->from);
    assert_true(a->ts_us == b->ts_us);
    switch (a->type) {
#define F_STR(f, sz) assert_string_equal(x->f, y->f);
#define F_PII(f, sz) assert_string_equal(x->f, y->f);
#define F_I64(f) assert_true(x->f == y->f);
#define F_BOOL(f) assert_true(x->f == y->f);
#define BUS_MESSAGE(ID, topic, name, fields)                          \
    case BUS_##ID: {                                                  \
        const bus_##name##_t *x = &a->u.name, *y = &b->u.name;        \
        fields break;                                                 \
    }
#include "bus/messages.def"
#undef BUS_MESSAGE
#undef F_STR
#undef F_PII
#undef F_I64
#undef F_BOOL
    default:
        fail_msg("not a message type: %d", a->type);
    }
}

// ---- bodies packed by hand, to break them on purpose -------------------------------------------

enum { WRONG_NONE = -1 };

typedef struct {
    int64_t version;
    int extra_items;          // added to the array length announced (and packed)
    int long_field;           // index of a string field packed one byte too long, or -1
    int wrong_field;          // index of a field packed with a wrong type, or -1 (-2: from, -3: ts)
    int wrong_kind;           // which wrong type (see pack_wrong)
} craft_t;

static craft_t craft_ok(void) {
    return (craft_t){BUS_WIRE_VERSION, 0, -1, WRONG_NONE, 0};
}

#define WRONG_KINDS 6

// A value whose msgpack type is not `expected` ('s', 'i' or 'b'); kinds cycle through a few.
static void pack_wrong(msgpack_packer *pk, char expected, int kind) {
    static const char *const for_string[] = {"int", "nil", "bin", "array", "bool", "float"};
    static const char *const for_int[] = {"str", "nil", "float", "bool", "map", "bin"};
    static const char *const for_bool[] = {"int", "str", "nil", "array", "float", "map"};
    const char *what = expected == 's' ? for_string[kind] : expected == 'i' ? for_int[kind] : for_bool[kind];
    if (!strcmp(what, "int")) msgpack_pack_int(pk, 1);
    else if (!strcmp(what, "nil")) msgpack_pack_nil(pk);
    else if (!strcmp(what, "bin")) {
        msgpack_pack_bin(pk, 1);
        msgpack_pack_bin_body(pk, "x", 1);
    } else if (!strcmp(what, "array")) msgpack_pack_array(pk, 0);
    else if (!strcmp(what, "map")) msgpack_pack_map(pk, 0);
    else if (!strcmp(what, "bool")) msgpack_pack_true(pk);
    else if (!strcmp(what, "float")) msgpack_pack_double(pk, 1.5);
    else {
        msgpack_pack_str(pk, 1);
        msgpack_pack_str_body(pk, "1", 1);
    }
}

static void pack_string_of(msgpack_packer *pk, size_t len) {
    char *s = malloc(len + 1);
    assert_non_null(s);
    memset(s, 'q', len);
    msgpack_pack_str(pk, len);
    msgpack_pack_str_body(pk, s, len);
    free(s);
}

static void craft_body(bus_type_t type, const craft_t *c, msgpack_sbuffer *sbuf) {
    tfield_t f[MAX_FIELDS];
    size_t n = catalogue_fields(type, f);
    msgpack_sbuffer_init(sbuf);
    msgpack_packer pk;
    msgpack_packer_init(&pk, sbuf, msgpack_sbuffer_write);
    int64_t items = (int64_t)(3 + n) + c->extra_items;
    msgpack_pack_array(&pk, (size_t)items);
    int64_t packed = 0;
    if (packed++ < items) msgpack_pack_int64(&pk, c->version);
    if (packed++ < items) {
        if (c->wrong_field == -2) pack_wrong(&pk, 's', c->wrong_kind);
        else pack_string_of(&pk, 4);
    }
    if (packed++ < items) {
        if (c->wrong_field == -3) pack_wrong(&pk, 'i', c->wrong_kind);
        else msgpack_pack_int64(&pk, 1795291860123456);
    }
    for (size_t i = 0; i < n && packed < items; i++, packed++) {
        char kind = f[i].kind == 'p' ? 's' : f[i].kind;
        if ((int)i == c->wrong_field) pack_wrong(&pk, kind, c->wrong_kind);
        else if (kind == 's') pack_string_of(&pk, (int)i == c->long_field ? f[i].size : f[i].size - 1);
        else if (kind == 'i') msgpack_pack_int64(&pk, 42);
        else msgpack_pack_true(&pk);
    }
    for (; packed < items; packed++) msgpack_pack_int(&pk, 0);
}

static int decode_crafted(bus_type_t type, craft_t c) {
    msgpack_sbuffer sbuf;
    craft_body(type, &c, &sbuf);
    bus_msg_t msg;
    memset(&msg, 0xa5, sizeof msg);
    bus_msg_t before = msg;
    int rc = bus_decode(bus_type_topic(type), sbuf.data, sbuf.size, &msg);
    if (rc != BUS_OK) assert_memory_equal(&msg, &before, sizeof msg);   // untouched on error
    msgpack_sbuffer_destroy(&sbuf);
    return rc;
}

// ---- codec tests ------------------------------------------------------------------------------

static void test_every_message_type_round_trips(void **state) {
    (void)state;
    for (int t = BUS_NONE + 1; t < BUS_TYPE_COUNT; t++) {
        assert_non_null(bus_type_topic(t));
        assert_int_equal(bus_type_from_topic(bus_type_topic(t)), t);
        for (int variant = 0; variant < 3; variant++) {
            bus_msg_t in, out;
            fill_message(&in, t, variant);
            char *buf = NULL;
            size_t len = 0;
            assert_int_equal(bus_encode(&in, &buf, &len), BUS_OK);
            assert_non_null(buf);
            memset(&out, 0, sizeof out);
            assert_int_equal(bus_decode(bus_type_topic(t), buf, len, &out), BUS_OK);
            assert_same_message(&in, &out);
            free(buf);
        }
    }
    assert_null(bus_type_topic(BUS_NONE));
    assert_null(bus_type_topic(BUS_TYPE_COUNT));
}

static void test_hand_packed_body_decodes(void **state) {
    (void)state;
    for (int t = BUS_NONE + 1; t < BUS_TYPE_COUNT; t++) assert_int_equal(decode_crafted(t, craft_ok()), BUS_OK);
}

static void test_string_one_byte_too_long_is_refused(void **state) {
    (void)state;
    for (int t = BUS_NONE + 1; t < BUS_TYPE_COUNT; t++) {
        tfield_t f[MAX_FIELDS];
        size_t n = catalogue_fields(t, f);
        for (size_t i = 0; i < n; i++) {
            if (f[i].kind != 's' && f[i].kind != 'p') continue;
            craft_t c = craft_ok();
            c.long_field = (int)i;
            assert_int_equal(decode_crafted(t, c), BUS_E_RANGE);
        }
    }
    // the sender's side: a field without its NUL is refused, never truncated
    bus_msg_t msg;
    bus_msg_init(&msg, BUS_BOOKING_CREATED);
    memset(msg.u.booking_created.plan, 'x', sizeof msg.u.booking_created.plan);
    char *buf = NULL;
    size_t len = 0;
    assert_int_equal(bus_encode(&msg, &buf, &len), BUS_E_RANGE);
    assert_null(buf);
    bus_msg_init(&msg, BUS_ACTOR_STARTED);
    memset(msg.from, 'x', sizeof msg.from);
    assert_int_equal(bus_encode(&msg, &buf, &len), BUS_E_RANGE);
}

static void test_wrong_field_types_are_refused(void **state) {
    (void)state;
    for (int t = BUS_NONE + 1; t < BUS_TYPE_COUNT; t++) {
        tfield_t f[MAX_FIELDS];
        size_t n = catalogue_fields(t, f);
        for (int i = -3; i < (int)n; i++) {
            if (i == -1) continue;
            for (int kind = 0; kind < WRONG_KINDS; kind++) {
                craft_t c = craft_ok();
                c.wrong_field = i;
                c.wrong_kind = kind;
                assert_int_equal(decode_crafted(t, c), BUS_E_TYPE);
            }
        }
    }
}

static void test_wrong_version_is_refused(void **state) {
    (void)state;
    craft_t c = craft_ok();
    c.version = BUS_WIRE_VERSION + 1;
    assert_int_equal(decode_crafted(BUS_BOOKING_STATUS, c), BUS_E_VERSION);
    c.extra_items = 2;   // a newer version may have other fields: still a version error
    assert_int_equal(decode_crafted(BUS_BOOKING_STATUS, c), BUS_E_VERSION);
    c = craft_ok();
    c.version = 0;
    assert_int_equal(decode_crafted(BUS_BOOKING_STATUS, c), BUS_E_VERSION);
    c.version = -1;
    assert_int_equal(decode_crafted(BUS_BOOKING_STATUS, c), BUS_E_VERSION);
}

static void test_wrong_array_length_is_refused(void **state) {
    (void)state;
    for (int t = BUS_NONE + 1; t < BUS_TYPE_COUNT; t++) {
        craft_t c = craft_ok();
        c.extra_items = -1;
        assert_int_equal(decode_crafted(t, c), BUS_E_FORMAT);
        c.extra_items = 1;
        assert_int_equal(decode_crafted(t, c), BUS_E_FORMAT);
    }
    bus_msg_t msg;
    const char *topic = bus_type_topic(BUS_ACTOR_STARTED);
    assert_int_equal(bus_decode(topic, "\x90", 1, &msg), BUS_E_FORMAT);          // []
    assert_int_equal(bus_decode(topic, "\x80", 1, &msg), BUS_E_FORMAT);          // {}
    assert_int_equal(bus_decode(topic, "\x01", 1, &msg), BUS_E_FORMAT);          // 1
    assert_int_equal(bus_decode(topic, "\xa1x", 2, &msg), BUS_E_FORMAT);         // "x"
    assert_int_equal(bus_decode(topic, "", 0, &msg), BUS_E_FORMAT);
    assert_int_equal(bus_decode(topic, NULL, 0, &msg), BUS_E_FORMAT);
}

static void test_unknown_topic_is_refused(void **state) {
    (void)state;
    bus_msg_t msg;
    fill_message(&msg, BUS_BOOKING_STATUS, 1);
    char *buf;
    size_t len;
    assert_int_equal(bus_encode(&msg, &buf, &len), BUS_OK);
    const char *bad[] = {"", "booking", "booking.statu", "booking.status.x", "Booking.status", "nope"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(bus_decode(bad[i], buf, len, &msg), BUS_E_TOPIC);
        assert_int_equal(bus_type_from_topic(bad[i]), BUS_NONE);
    }
    assert_int_equal(bus_decode(NULL, buf, len, &msg), BUS_E_TOPIC);
    free(buf);
    bus_msg_init(&msg, BUS_NONE);
    assert_int_equal(bus_encode(&msg, &buf, &len), BUS_E_TOPIC);
    assert_string_equal(bus_strerror(BUS_E_RANGE), "value out of range");
}

static void test_truncated_bodies_are_refused(void **state) {
    (void)state;
    for (int t = BUS_NONE + 1; t < BUS_TYPE_COUNT; t++) {
        for (int variant = 0; variant < 3; variant += 2) {
            bus_msg_t msg;
            fill_message(&msg, t, variant);
            char *buf;
            size_t len;
            assert_int_equal(bus_encode(&msg, &buf, &len), BUS_OK);
            for (size_t cut = 0; cut < len; cut++) {
                char *copy = malloc(cut ? cut : 1);   // exact size: ASan sees any over-read
                assert_non_null(copy);
                memcpy(copy, buf, cut);
                assert_int_equal(bus_decode(bus_type_topic(t), copy, cut, &msg), BUS_E_FORMAT);
                free(copy);
            }
            // trailing garbage, and two bodies back to back
            char *longer = malloc(2 * len);
            assert_non_null(longer);
            memcpy(longer, buf, len);
            longer[len] = 0x01;
            assert_int_equal(bus_decode(bus_type_topic(t), longer, len + 1, &msg), BUS_E_FORMAT);
            memcpy(longer + len, buf, len);
            assert_int_equal(bus_decode(bus_type_topic(t), longer, 2 * len, &msg), BUS_E_FORMAT);
            free(longer);
            free(buf);
        }
    }
}

static void test_strings_must_be_utf8_without_nul(void **state) {
    (void)state;
    bus_msg_t msg;
    char *buf = NULL;
    size_t len;
    bus_msg_init(&msg, BUS_ACTOR_STARTED);
    strcpy(msg.u.actor_started.actor, "bad\xff");
    assert_int_equal(bus_encode(&msg, &buf, &len), BUS_E_TYPE);
    strcpy(msg.u.actor_started.actor, "\xed\xa0\x80");   // a surrogate
    assert_int_equal(bus_encode(&msg, &buf, &len), BUS_E_TYPE);
    strcpy(msg.u.actor_started.actor, "caf\xc3\xa9");
    assert_int_equal(bus_encode(&msg, &buf, &len), BUS_OK);
    free(buf);

    const char *topic = bus_type_topic(BUS_ACTOR_STARTED);
    // [1, "a", 0, "x\0y"] and [1, "a", 0, "\xc0\x80"] (overlong NUL)
    assert_int_equal(bus_decode(topic, "\x94\x01\xa1" "a" "\x00\xa3x\x00y", 9, &msg), BUS_E_TYPE);
    assert_int_equal(bus_decode(topic, "\x94\x01\xa1" "a" "\x00\xa2\xc0\x80", 8, &msg), BUS_E_TYPE);
    assert_int_equal(bus_decode(topic, "\x94\x01\xa1" "a" "\x00\xa2\xc3\xa9", 8, &msg), BUS_OK);
    assert_string_equal(msg.u.actor_started.actor, "\xc3\xa9");
}

static void test_integers_beyond_int64_are_refused(void **state) {
    (void)state;
    bus_msg_t msg;
    const char *topic = bus_type_topic(BUS_ACTOR_PING);
    // [1, "a", 0, "t", uint64 max]
    const char body[] = "\x95\x01\xa1" "a" "\x00\xa1t\xcf\xff\xff\xff\xff\xff\xff\xff\xff";
    assert_int_equal(bus_decode(topic, body, sizeof body - 1, &msg), BUS_E_RANGE);
    const char ok[] = "\x95\x01\xa1" "a" "\x00\xa1t\xd3\x80\x00\x00\x00\x00\x00\x00\x00";   // int64 min
    assert_int_equal(bus_decode(topic, ok, sizeof ok - 1, &msg), BUS_OK);
    assert_true(msg.u.actor_ping.nonce == INT64_MIN);
}

static uint64_t rng_next(uint64_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static void decode_anything(const unsigned char *data, size_t len, bus_type_t type) {
    bus_msg_t msg;
    memset(&msg, 0x5a, sizeof msg);
    unsigned char *copy = malloc(len ? len : 1);
    assert_non_null(copy);
    if (len) memcpy(copy, data, len);
    int rc = bus_decode(bus_type_topic(type), copy, len, &msg);
    free(copy);
    assert_true(rc <= 0 && rc >= BUS_E_NOMEM);
    if (rc == BUS_OK) {
        assert_true(strnlen(msg.from, sizeof msg.from) < sizeof msg.from);
        json_t *json = bus_msg_to_json(&msg, true);
        assert_non_null(json);
        json_decref(json);
    }
}

static void test_random_garbage_never_crashes(void **state) {
    (void)state;
    static const unsigned char hostile[][16] = {
        {0xdd, 0xff, 0xff, 0xff, 0xff},                             // array of 4 billion
        {0xdf, 0xff, 0xff, 0xff, 0xff},                             // map of 4 billion pairs
        {0x94, 0x01, 0xa1, 'a', 0x00, 0xdd, 0xff, 0xff, 0xff, 0xff},  // nested huge array
        {0x94, 0x01, 0xa1, 'a', 0x00, 0xdb, 0xff, 0xff, 0xff, 0xff, 'x'},  // huge string
        {0x94, 0x01, 0xa1, 'a', 0x00, 0xc6, 0x7f, 0xff, 0xff, 0xff},  // huge bin
        {0x94, 0x01, 0xa1, 'a', 0x00, 0xc9, 0xff, 0xff, 0xff, 0xff, 0x01},  // huge ext
        {0xc1},
    };
    for (size_t i = 0; i < sizeof hostile / sizeof hostile[0]; i++)
        for (int t = BUS_NONE + 1; t < BUS_TYPE_COUNT; t++) decode_anything(hostile[i], 16, t), decode_anything(hostile[i], 11, t);

    unsigned char deep[300];
    memset(deep, 0x91, sizeof deep);
    deep[sizeof deep - 1] = 0x01;
    decode_anything(deep, sizeof deep, BUS_ACTOR_STARTED);

    uint64_t seed = 0x9e3779b97f4a7c15u;
    unsigned char buf[96];
    for (int round = 0; round < 200000; round++) {
        size_t len = rng_next(&seed) % sizeof buf;
        for (size_t i = 0; i < len; i++) {
            uint64_t r = rng_next(&seed);
            // bias towards msgpack type bytes so the parser goes deep
            buf[i] = (r & 3) == 0 ? (unsigned char)(0x90 + (r >> 8) % 0x70) : (unsigned char)(r >> 16);
        }
        decode_anything(buf, len, (bus_type_t)(1 + rng_next(&seed) % (BUS_TYPE_COUNT - 1)));
    }
    // mutations of valid bodies
    for (int t = BUS_NONE + 1; t < BUS_TYPE_COUNT; t++) {
        bus_msg_t msg;
        fill_message(&msg, t, 2);
        char *body;
        size_t len;
        assert_int_equal(bus_encode(&msg, &body, &len), BUS_OK);
        for (int round = 0; round < 5000; round++) {
            unsigned char *m = malloc(len);
            assert_non_null(m);
            memcpy(m, body, len);
            int flips = 1 + (int)(rng_next(&seed) % 3);
            for (int k = 0; k < flips; k++) m[rng_next(&seed) % len] = (unsigned char)rng_next(&seed);
            decode_anything(m, len, t);
            free(m);
        }
        free(body);
    }
}

// ---- trace JSON -------------------------------------------------------------------------------

static void test_trace_json_masks_personal_data(void **state) {
    (void)state;
    bus_msg_t msg;
    bus_msg_init(&msg, BUS_BOOKING_CREATED);
    strcpy(msg.from, "http");
    msg.ts_us = 1795291860123456;
    bus_booking_created_t *b = &msg.u.booking_created;
    strcpy(b->booking_id, "4b0c7a4e-2f0e-4b8e-9d6a-0c1f2e3d4c5b");
    strcpy(b->plan, "standard");
    strcpy(b->status, "pending_payment");
    strcpy(b->payment_method, "stripe");
    strcpy(b->phone, "+15551234567");

    char ts[40];
    util_rfc3339_ms(msg.ts_us, ts, sizeof ts);
    char expected[512];
    snprintf(expected, sizeof expected,
             "{\"ts\":\"%s\",\"topic\":\"booking.created\",\"from\":\"http\",\"body\":{\"booking_id\":"
             "\"4b0c7a4e-2f0e-4b8e-9d6a-0c1f2e3d4c5b\",\"plan\":\"standard\",\"status\":"
             "\"pending_payment\",\"payment_method\":\"stripe\",\"phone\":\"+1*******567\"}}",
             ts);
    json_t *json = bus_msg_to_json(&msg, true);
    assert_non_null(json);
    char *line = json_dumps(json, JSON_COMPACT);
    assert_string_equal(line, expected);
    assert_null(strstr(line, "5551234"));
    assert_int_equal(strlen(ts), 24);
    free(line);
    json_decref(json);

    json = bus_msg_to_json(&msg, false);
    assert_string_equal(json_string_value(json_object_get(json_object_get(json, "body"), "phone")),
                        "+15551234567");
    json_decref(json);

    // integers and booleans keep their JSON types
    bus_msg_init(&msg, BUS_DB_STATE);
    msg.u.db_state.up = true;
    msg.u.db_state.reconnects = -3;
    json = bus_msg_to_json(&msg, true);
    assert_true(json_is_true(json_object_get(json_object_get(json, "body"), "up")));
    assert_int_equal(json_integer_value(json_object_get(json_object_get(json, "body"), "reconnects")), -3);
    json_decref(json);
}

// ---- sockets: helpers -------------------------------------------------------------------------

static const logger_t test_log = {SLOG_WARN, "test-broker"};

static zactor_t *start_broker(const char *trace_endpoint, int64_t keep) {
    bus_broker_args_t args = {trace_endpoint, keep, test_log};
    zactor_t *broker = bus_broker_new(&args);
    assert_non_null(broker);
    return broker;
}

typedef struct {
    uint64_t in, published, clients;
} stats_t;

static stats_t broker_stats(zactor_t *broker) {
    stats_t s = {0, 0, 0};
    assert_int_equal(zstr_send(broker, "STATS"), 0);
    assert_int_equal(zsock_recv(broker, "888", &s.in, &s.published, &s.clients), 0);
    return s;
}

static bool wait_for_clients(zactor_t *broker, uint64_t clients) {
    int64_t deadline = util_monotonic_ms() + WAIT_MS;
    while (util_monotonic_ms() < deadline) {
        if (broker_stats(broker).clients == clients) return true;
        zclock_sleep(5);
    }
    return false;
}

static bool readable(zsock_t *sock, int timeout_ms) {
    zmq_pollitem_t item = {zsock_resolve(sock), 0, ZMQ_POLLIN, 0};
    return zmq_poll(&item, 1, timeout_ms) == 1;
}

static void make_temp_dir(char *dir, size_t size) {
    snprintf(dir, size, "/tmp/test-bus-XXXXXX");
    assert_non_null(mkdtemp(dir));
}

// The broker's ipc socket file is removed by ZeroMQ's I/O thread shortly after the broker stops.
static void wait_gone(const char *path) {
    int64_t deadline = util_monotonic_ms() + WAIT_MS;
    while (access(path, F_OK) == 0 && util_monotonic_ms() < deadline) zclock_sleep(5);
    assert_int_equal(access(path, F_OK), -1);
}

static void remove_temp_dir(const char *dir) {
    char path[160];
    snprintf(path, sizeof path, "%s/trace", dir);
    wait_gone(path);
    assert_int_equal(rmdir(dir), 0);
}

// A broker with its trace socket in a fresh temporary folder (ipc://<dir>/trace).
typedef struct {
    char dir[64];
    char endpoint[128];
    zactor_t *broker;
} traced_bus_t;

static void traced_bus_start(traced_bus_t *tb, int64_t keep) {
    make_temp_dir(tb->dir, sizeof tb->dir);
    snprintf(tb->endpoint, sizeof tb->endpoint, "ipc://%s/trace", tb->dir);
    tb->broker = start_broker(tb->endpoint, keep);
}

// Stops the broker (which removes its socket file), then the folder.
static void traced_bus_stop(traced_bus_t *tb) {
    zactor_destroy(&tb->broker);
    remove_temp_dir(tb->dir);
}

static void publish_status(bus_endpoint_t *ep, int64_t seq) {
    bus_msg_t msg;
    bus_msg_init(&msg, BUS_BOOKING_STATUS);
    strcpy(msg.u.booking_status.booking_id, "4b0c7a4e-2f0e-4b8e-9d6a-0c1f2e3d4c5b");
    msg.u.booking_status.seq = seq;
    strcpy(msg.u.booking_status.status, "queued");
    msg.u.booking_status.at = util_now_us();
    assert_int_equal(bus_publish(ep, &msg), BUS_OK);
    assert_string_equal(msg.from, bus_endpoint_name(ep));
}

static void publish_started(bus_endpoint_t *ep, const char *actor) {
    bus_msg_t msg;
    bus_msg_init(&msg, BUS_ACTOR_STARTED);
    snprintf(msg.u.actor_started.actor, sizeof msg.u.actor_started.actor, "%s", actor);
    assert_int_equal(bus_publish(ep, &msg), BUS_OK);
}

// ---- endpoints through a running broker ------------------------------------------------------

static void test_published_event_reaches_subscriber_through_broker(void **state) {
    (void)state;
    zactor_t *broker = start_broker(NULL, 1000);
    const char *const subs[] = {"booking.", NULL};
    bus_endpoint_t *sub = bus_endpoint_new("sub-b", subs);
    bus_endpoint_t *pub = bus_endpoint_new("pub-a", NULL);
    assert_non_null(sub);
    assert_non_null(pub);

    // A subscription reaches the publisher asynchronously: publish until one arrives.
    int64_t deadline = util_monotonic_ms() + WAIT_MS;
    bus_msg_t got;
    bool received = false;
    for (int64_t seq = 1; !received && util_monotonic_ms() < deadline; seq++) {
        publish_status(pub, seq);
        if (readable(bus_endpoint_events(sub), 20)) {
            assert_int_equal(bus_endpoint_recv(sub, bus_endpoint_events(sub), &got), BUS_OK);
            received = true;
        }
    }
    assert_true(received);
    assert_int_equal(got.type, BUS_BOOKING_STATUS);
    assert_string_equal(got.from, "pub-a");
    assert_true(got.ts_us > 0);
    assert_string_equal(got.u.booking_status.status, "queued");

    // Drain what the warm-up left, then: a topic outside the prefix is filtered out.
    while (readable(bus_endpoint_events(sub), 0)) bus_endpoint_recv(sub, bus_endpoint_events(sub), &got);
    publish_started(pub, "x");
    publish_status(pub, 999);
    assert_true(readable(bus_endpoint_events(sub), WAIT_MS));
    assert_int_equal(bus_endpoint_recv(sub, bus_endpoint_events(sub), &got), BUS_OK);
    assert_int_equal(got.type, BUS_BOOKING_STATUS);
    assert_true(got.u.booking_status.seq == 999);
    assert_int_equal(bus_endpoint_malformed(sub), 0);

    stats_t s = broker_stats(broker);
    assert_true(s.in >= 3 && s.published == s.in && s.clients == 0);

    bus_endpoint_destroy(&pub);
    bus_endpoint_destroy(&sub);
    assert_null(pub);
    zactor_destroy(&broker);
}

static void test_send_to_delivers_to_inbox_and_trace(void **state) {
    (void)state;
    zactor_t *broker = start_broker(NULL, 1000);
    bus_endpoint_t *a = bus_endpoint_new("cmd-a", NULL);
    bus_endpoint_t *b = bus_endpoint_new("cmd-b", NULL);
    assert_non_null(a);
    assert_non_null(b);
    uint64_t in_before = broker_stats(broker).in;

    bus_msg_t msg;
    bus_msg_init(&msg, BUS_ACTOR_PING);
    strcpy(msg.u.actor_ping.target, "cmd-b");
    msg.u.actor_ping.nonce = 77;
    assert_int_equal(bus_send_to(a, "cmd-b", &msg, 1000), BUS_OK);
    assert_true(readable(bus_endpoint_inbox(b), WAIT_MS));
    bus_msg_t got;
    assert_int_equal(bus_endpoint_recv(b, bus_endpoint_inbox(b), &got), BUS_OK);
    assert_int_equal(got.type, BUS_ACTOR_PING);
    assert_string_equal(got.from, "cmd-a");
    assert_true(got.u.actor_ping.nonce == 77);

    // the copy for the trace waits in the sender's batch until it is flushed, then reaches the
    // broker, and is not republished
    assert_int_equal(bus_endpoint_trace_pending(a), 1);
    assert_int_equal(bus_endpoint_flush(a), BUS_OK);
    assert_int_equal(bus_endpoint_trace_pending(a), 0);
    stats_t s = broker_stats(broker);
    assert_true(s.in == in_before + 1);
    assert_true(s.published == in_before);
    assert_int_equal(bus_endpoint_trace_dropped(a), 0);

    // a command to an actor whose inbox does not exist yet waits for it
    assert_int_equal(bus_send_to(a, "cmd-late", &msg, 1000), BUS_OK);
    bus_endpoint_t *late = bus_endpoint_new("cmd-late", NULL);
    assert_non_null(late);
    assert_true(readable(bus_endpoint_inbox(late), WAIT_MS));
    assert_int_equal(bus_endpoint_recv(late, bus_endpoint_inbox(late), &got), BUS_OK);
    assert_string_equal(got.from, "cmd-a");

    // bad target names
    assert_int_equal(bus_send_to(a, "", &msg, 10), BUS_E_RANGE);
    assert_int_equal(bus_send_to(a, "a-name-much-too-long-for-an-actor", &msg, 10), BUS_E_RANGE);

    bus_endpoint_destroy(&late);
    bus_endpoint_destroy(&b);
    bus_endpoint_destroy(&a);
    zactor_destroy(&broker);
}

static void test_full_inbox_times_out(void **state) {
    (void)state;
    // A broker takes the trace copies: without one they would wait in ZeroMQ for the next broker
    // this process starts (an inproc connect made before the bind), and pollute later tests.
    zactor_t *broker = start_broker(NULL, 1000);
    bus_endpoint_t *a = bus_endpoint_new("full-a", NULL);
    bus_endpoint_t *b = bus_endpoint_new("full-b", NULL);   // never reads
    assert_non_null(a);
    assert_non_null(b);
    bus_msg_t msg;
    bus_msg_init(&msg, BUS_ACTOR_PING);
    int rc = BUS_OK;
    int sent = 0;
    int64_t failed_after = 0;
    for (; sent < 100000 && rc == BUS_OK; sent++) {
        int64_t t0 = util_monotonic_ms();
        rc = bus_send_to(a, "full-b", &msg, 50);
        failed_after = util_monotonic_ms() - t0;
    }
    assert_int_equal(rc, BUS_E_SOCKET);
    assert_true(sent > 1);
    assert_true(failed_after >= 40 && failed_after < 2000);
    // what was queued is still there
    bus_msg_t got;
    assert_true(readable(bus_endpoint_inbox(b), 0));
    assert_int_equal(bus_endpoint_recv(b, bus_endpoint_inbox(b), &got), BUS_OK);
    bus_endpoint_destroy(&b);
    bus_endpoint_destroy(&a);
    zactor_destroy(&broker);
}

static void test_malformed_input_is_counted_and_dropped(void **state) {
    (void)state;
    bus_endpoint_t *ep = bus_endpoint_new("malformed", NULL);
    assert_non_null(ep);
    zsock_t *raw = zsock_new_push(">" BUS_INBOX_PREFIX "malformed");
    assert_non_null(raw);
    bus_msg_t got;
    zsock_send(raw, "sb", "booking.status", "\xc1", (size_t)1);
    zstr_send(raw, "one frame only");
    zsock_send(raw, "sb", "no.such.topic", "\x90", (size_t)1);
    zsock_send(raw, "sbs", "booking.status", "\x90", (size_t)1, "third");
    bus_msg_init(&got, BUS_ACTOR_STARTED);
    strcpy(got.u.actor_started.actor, "ok");
    got.ts_us = 5;
    assert_int_equal(bus_send_raw(raw, &got), BUS_OK);

    int expected[] = {BUS_E_FORMAT, BUS_E_FORMAT, BUS_E_TOPIC, BUS_E_FORMAT, BUS_OK};
    for (size_t i = 0; i < sizeof expected / sizeof expected[0]; i++) {
        assert_true(readable(bus_endpoint_inbox(ep), WAIT_MS));
        assert_int_equal(bus_endpoint_recv(ep, bus_endpoint_inbox(ep), &got), expected[i]);
    }
    assert_string_equal(got.u.actor_started.actor, "ok");
    assert_int_equal(bus_endpoint_malformed(ep), 4);
    zsock_destroy(&raw);
    bus_endpoint_destroy(&ep);
}

static void test_endpoint_name_is_checked(void **state) {
    (void)state;
    assert_null(bus_endpoint_new("", NULL));
    assert_null(bus_endpoint_new("a-name-much-too-long-for-an-actor", NULL));
}

// ---- the trace --------------------------------------------------------------------------------

typedef struct {
    const char *endpoint;
    const char *prefix;
    int64_t count;
    int idle_ms;
    FILE *out;
    int rc;
} trace_job_t;

static void *trace_job_run(void *arg) {
    trace_job_t *job = arg;
    job->rc = trace_client_run(job->endpoint, job->prefix, job->count, job->idle_ms, job->out);
    return NULL;
}

// Reads the client's output: one JSON object a line.
static size_t read_lines(FILE *f, json_t **lines, size_t max) {
    rewind(f);
    char *line = NULL;
    size_t cap = 0, n = 0;
    while (getline(&line, &cap, f) > 0) {
        assert_true(n < max);
        json_error_t err;
        lines[n] = json_loads(line, 0, &err);
        assert_non_null(lines[n]);
        n++;
    }
    free(line);
    return n;
}

static const char *line_topic(json_t *line) {
    return json_string_value(json_object_get(line, "topic"));
}

static json_int_t line_seq(json_t *line) {
    return json_integer_value(json_object_get(json_object_get(line, "body"), "seq"));
}

static void test_trace_replays_startup_then_last_kept_then_live(void **state) {
    (void)state;
    const int64_t keep = 20;
    traced_bus_t tb;
    traced_bus_start(&tb, keep);
    bus_endpoint_t *ep = bus_endpoint_new("supervisor", NULL);
    assert_non_null(ep);

    // start-up: five actors announce themselves, then the supervisor closes the window
    char name[16];
    for (int i = 0; i < 5; i++) {
        snprintf(name, sizeof name, "a%d", i);
        publish_started(ep, name);
    }
    assert_int_equal(zstr_send(tb.broker, "STARTUP-DONE"), 0);
    assert_int_equal(broker_stats(tb.broker).in, 5);   // a round trip: the window is closed now

    // then more than `keep` messages; one of the last is a body that does not decode
    for (int64_t seq = 1; seq <= 45; seq++) publish_status(ep, seq);
    assert_int_equal(broker_stats(tb.broker).in, 50);
    zsock_t *raw = zsock_new_push(">" BUS_IN);
    assert_non_null(raw);
    zsock_send(raw, "sb", "booking.status", "\x93\x01", (size_t)2);
    int64_t deadline = util_monotonic_ms() + WAIT_MS;
    while (broker_stats(tb.broker).in != 51 && util_monotonic_ms() < deadline) zclock_sleep(5);
    assert_true(broker_stats(tb.broker).in == 51);
    for (int64_t seq = 46; seq <= 50; seq++) publish_status(ep, seq);

    // a client connecting now: 5 pinned + the last 20 (one undecodable) + 3 live ones
    FILE *out = tmpfile();
    assert_non_null(out);
    trace_job_t job = {tb.endpoint, "", 5 + 19 + 3, WAIT_MS, out, -2};
    pthread_t thread;
    assert_int_equal(pthread_create(&thread, NULL, trace_job_run, &job), 0);
    assert_true(wait_for_clients(tb.broker, 1));
    for (int64_t seq = 51; seq <= 53; seq++) publish_status(ep, seq);
    pthread_join(thread, NULL);
    assert_int_equal(job.rc, 0);

    json_t *lines[64];
    size_t n = read_lines(out, lines, 64);
    assert_int_equal(n, 27);
    for (size_t i = 0; i < 5; i++) {
        assert_string_equal(line_topic(lines[i]), "actor.started");
        snprintf(name, sizeof name, "a%zu", i);
        assert_string_equal(json_string_value(json_object_get(json_object_get(lines[i], "body"), "actor")), name);
        assert_string_equal(json_string_value(json_object_get(lines[i], "from")), "supervisor");
        const char *ts = json_string_value(json_object_get(lines[i], "ts"));
        assert_true(ts && strlen(ts) == 24 && ts[10] == 'T' && ts[23] == 'Z');
    }
    for (size_t i = 5; i < n; i++) {
        assert_string_equal(line_topic(lines[i]), "booking.status");
        assert_int_equal(line_seq(lines[i]), 32 + (json_int_t)(i - 5));   // 32..53, in order
    }
    for (size_t i = 0; i < n; i++) json_decref(lines[i]);
    fclose(out);

    // a filtered client sees only its prefix, then stops when nothing more comes
    out = tmpfile();
    assert_non_null(out);
    assert_int_equal(trace_client_run(tb.endpoint, "actor.", 0, 300, out), 1);
    n = read_lines(out, lines, 64);
    assert_int_equal(n, 5);
    for (size_t i = 0; i < n; i++) {
        assert_string_equal(line_topic(lines[i]), "actor.started");
        json_decref(lines[i]);
    }
    fclose(out);

    // a client that subscribes again gets the replay again
    zsock_t *dealer = zsock_new(ZMQ_DEALER);
    assert_non_null(dealer);
    zsock_set_identity(dealer, "same-client");
    assert_int_equal(zsock_connect(dealer, "%s", tb.endpoint), 0);
    for (int round = 0; round < 2; round++) {
        assert_int_equal(zsock_send(dealer, "ss", "SUB", "actor."), 0);
        for (int i = 0; i < 5; i++) {
            assert_true(readable(dealer, WAIT_MS));
            char *topic = NULL;
            zframe_t *body = NULL;
            assert_int_equal(zsock_recv(dealer, "sf", &topic, &body), 0);
            assert_string_equal(topic, "actor.started");
            bus_msg_t msg;
            assert_int_equal(bus_decode(topic, zframe_data(body), zframe_size(body), &msg), BUS_OK);
            snprintf(name, sizeof name, "a%d", i);
            assert_string_equal(msg.u.actor_started.actor, name);
            zstr_free(&topic);
            zframe_destroy(&body);
        }
    }
    zsock_destroy(&dealer);

    zsock_destroy(&raw);
    bus_endpoint_destroy(&ep);
    traced_bus_stop(&tb);
}

static void test_trace_client_limit_and_departed_clients(void **state) {
    (void)state;
    traced_bus_t tb;
    traced_bus_start(&tb, 1000);
    bus_endpoint_t *ep = bus_endpoint_new("limits", NULL);
    assert_non_null(ep);
    publish_started(ep, "limits");

    zsock_t *clients[BUS_TRACE_CLIENTS_MAX];
    for (int i = 0; i < BUS_TRACE_CLIENTS_MAX; i++) {
        clients[i] = zsock_new(ZMQ_DEALER);
        assert_non_null(clients[i]);
        assert_int_equal(zsock_connect(clients[i], "%s", tb.endpoint), 0);
        assert_int_equal(zsock_send(clients[i], "ss", "SUB", ""), 0);
    }
    assert_true(wait_for_clients(tb.broker, BUS_TRACE_CLIENTS_MAX));
    for (int i = 0; i < BUS_TRACE_CLIENTS_MAX; i++) {   // each got the replay
        assert_true(readable(clients[i], WAIT_MS));
        zmsg_t *m = zmsg_recv(clients[i]);
        assert_int_equal(zmsg_size(m), 2);
        zmsg_destroy(&m);
    }

    // one too many: the broker checks who is still there (a PING to each), then refuses it
    zsock_t *extra = zsock_new(ZMQ_DEALER);
    assert_non_null(extra);
    assert_int_equal(zsock_connect(extra, "%s", tb.endpoint), 0);
    assert_int_equal(zsock_send(extra, "ss", "SUB", ""), 0);
    assert_true(readable(clients[0], WAIT_MS));
    char *ping = zstr_recv(clients[0]);
    assert_string_equal(ping, "PING");
    zstr_free(&ping);
    assert_int_equal(broker_stats(tb.broker).clients, BUS_TRACE_CLIENTS_MAX);
    assert_false(readable(extra, 0));

    // one leaves: the next attempt takes its place
    zsock_destroy(&clients[5]);
    bool accepted = false;
    int64_t deadline = util_monotonic_ms() + WAIT_MS;
    while (!accepted && util_monotonic_ms() < deadline) {
        assert_int_equal(zsock_send(extra, "ss", "SUB", ""), 0);
        while (readable(extra, 50)) {
            zmsg_t *m = zmsg_recv(extra);
            if (zmsg_size(m) == 2) accepted = true;
            zmsg_destroy(&m);
        }
    }
    assert_true(accepted);
    assert_int_equal(broker_stats(tb.broker).clients, BUS_TRACE_CLIENTS_MAX);

    zsock_destroy(&extra);
    for (int i = 0; i < BUS_TRACE_CLIENTS_MAX; i++) zsock_destroy(&clients[i]);
    bus_endpoint_destroy(&ep);
    traced_bus_stop(&tb);
}

static void test_slow_trace_client_never_blocks_the_bus(void **state) {
    (void)state;
    traced_bus_t tb;
    traced_bus_start(&tb, 1000);
    const char *const subs[] = {"booking.", NULL};
    bus_endpoint_t *sub = bus_endpoint_new("slow-sub", subs);
    bus_endpoint_t *pub = bus_endpoint_new("slow-pub", NULL);
    assert_non_null(sub);
    assert_non_null(pub);

    zsock_t *lazy = zsock_new(ZMQ_DEALER);   // subscribes, then never reads
    assert_non_null(lazy);
    zsock_set_rcvhwm(lazy, 10);
    assert_int_equal(zsock_connect(lazy, "%s", tb.endpoint), 0);
    assert_int_equal(zsock_send(lazy, "ss", "SUB", ""), 0);
    assert_true(wait_for_clients(tb.broker, 1));

    // keep publishing (and reading as a normal subscriber) until the lazy client is dropped
    int64_t deadline = util_monotonic_ms() + 30000;
    int64_t seq = 0;
    uint64_t seen = 0;
    bus_msg_t got;
    while (broker_stats(tb.broker).clients != 0 && util_monotonic_ms() < deadline) {
        for (int i = 0; i < 2000; i++) publish_status(pub, ++seq);
        while (readable(bus_endpoint_events(sub), 0)) {
            assert_int_equal(bus_endpoint_recv(sub, bus_endpoint_events(sub), &got), BUS_OK);
            seen++;
        }
    }
    assert_int_equal(broker_stats(tb.broker).clients, 0);
    assert_true(seen > 0);

    zsock_destroy(&lazy);
    bus_endpoint_destroy(&pub);
    bus_endpoint_destroy(&sub);
    traced_bus_stop(&tb);
}

// ---- trace copies: batches, order, flushing ----------------------------------------------------

// A trace client of our own (a DEALER, as trace_client.c connects), subscribed to `prefix`.
static zsock_t *trace_subscribe(const char *endpoint, const char *prefix) {
    zsock_t *dealer = zsock_new(ZMQ_DEALER);
    assert_non_null(dealer);
    zsock_set_linger(dealer, 0);
    assert_int_equal(zsock_connect(dealer, "%s", endpoint), 0);
    assert_int_equal(zsock_send(dealer, "ss", "SUB", prefix), 0);
    return dealer;
}

// The next message the trace sends (PINGs skipped), decoded; false when none came in time.
static bool next_traced(zsock_t *dealer, int timeout_ms, bus_msg_t *msg) {
    int64_t deadline = util_monotonic_ms() + timeout_ms;
    while (readable(dealer, (int)(deadline - util_monotonic_ms() > 0 ? deadline - util_monotonic_ms() : 0))) {
        zmsg_t *m = zmsg_recv(dealer);
        assert_non_null(m);
        if (zmsg_size(m) == 1) {   // PING
            zmsg_destroy(&m);
            continue;
        }
        assert_int_equal(zmsg_size(m), 2);
        char *topic = zmsg_popstr(m);
        zframe_t *body = zmsg_pop(m);
        assert_int_equal(bus_decode(topic, zframe_data(body), zframe_size(body), msg), BUS_OK);
        zstr_free(&topic);
        zframe_destroy(&body);
        zmsg_destroy(&m);
        return true;
    }
    return false;
}

static int send_ping(bus_endpoint_t *from, const char *target, int64_t nonce) {
    bus_msg_t msg;
    bus_msg_init(&msg, BUS_ACTOR_PING);
    snprintf(msg.u.actor_ping.target, sizeof msg.u.actor_ping.target, "%s", target);
    msg.u.actor_ping.nonce = nonce;
    return bus_send_to(from, target, &msg, 1000);
}

// The number a traced message carries: a command's nonce, an event's seq.
static int64_t traced_number(const bus_msg_t *msg) {
    if (msg->type == BUS_ACTOR_PING) return msg->u.actor_ping.nonce;
    if (msg->type == BUS_BOOKING_STATUS) return msg->u.booking_status.seq;
    fail_msg("unexpected topic %s in the trace", bus_type_topic(msg->type));
    return -1;
}

static void drain_inbox(bus_endpoint_t *ep) {
    bus_msg_t got;
    zsock_t *inbox = bus_endpoint_inbox(ep);
    while (readable(inbox, 0)) assert_int_equal(bus_endpoint_recv(ep, inbox, &got), BUS_OK);
}

static void test_trace_batches_copies_until_full_old_or_flushed(void **state) {
    (void)state;
    zactor_t *broker = start_broker(NULL, 1000);
    bus_endpoint_t *a = bus_endpoint_new("batch-a", NULL);
    bus_endpoint_t *b = bus_endpoint_new("batch-b", NULL);   // where the commands go
    assert_non_null(a);
    assert_non_null(b);
    uint64_t in;

    // full: the copy that fills the batch sends it (a batch that aged meanwhile, on a busy
    // machine, went early: then the round is tried again)
    bool filled = false;
    for (int round = 0; round < 50 && !filled; round++) {
        drain_inbox(b);
        for (int i = 1; i < BUS_TRACE_BATCH_MAX; i++) assert_int_equal(send_ping(a, "batch-b", i), BUS_OK);
        filled = bus_endpoint_trace_pending(a) == BUS_TRACE_BATCH_MAX - 1;
        if (!filled) {
            assert_int_equal(bus_endpoint_flush(a), BUS_OK);
            continue;
        }
        assert_int_equal(send_ping(a, "batch-b", BUS_TRACE_BATCH_MAX), BUS_OK);
        assert_int_equal(bus_endpoint_trace_pending(a), 0);
    }
    assert_true(filled);
    in = broker_stats(broker).in;

    // old: a command finding the batch older than BUS_TRACE_BATCH_AGE_US sends it
    assert_int_equal(send_ping(a, "batch-b", 1), BUS_OK);
    int64_t t0 = util_now_us();
    while (util_now_us() - t0 <= BUS_TRACE_BATCH_AGE_US) zclock_sleep(1);
    assert_int_equal(send_ping(a, "batch-b", 2), BUS_OK);
    assert_int_equal(bus_endpoint_trace_pending(a), 0);
    in += 2;
    assert_true(broker_stats(broker).in == in);

    // publishing: the copies go first, then the event; flushing an empty batch sends nothing
    assert_int_equal(send_ping(a, "batch-b", 3), BUS_OK);
    publish_status(a, 4);
    assert_int_equal(bus_endpoint_trace_pending(a), 0);
    in += 2;
    assert_true(broker_stats(broker).in == in);
    assert_int_equal(bus_endpoint_flush(a), BUS_OK);
    assert_true(broker_stats(broker).in == in);

    // destroying the endpoint sends what is left
    assert_int_equal(send_ping(a, "batch-b", 5), BUS_OK);
    assert_int_equal(bus_endpoint_trace_dropped(a), 0);
    bus_endpoint_destroy(&a);
    int64_t deadline = util_monotonic_ms() + WAIT_MS;
    while (broker_stats(broker).in != in + 1 && util_monotonic_ms() < deadline) zclock_sleep(5);
    assert_true(broker_stats(broker).in == in + 1);

    bus_endpoint_destroy(&b);
    zactor_destroy(&broker);
}

static void test_trace_keeps_each_senders_order(void **state) {
    (void)state;
    traced_bus_t tb;
    traced_bus_start(&tb, 1000);
    bus_endpoint_t *a = bus_endpoint_new("order-a", NULL);
    bus_endpoint_t *b = bus_endpoint_new("order-b", NULL);
    bus_endpoint_t *other = bus_endpoint_new("order-other", NULL);
    assert_non_null(a);
    assert_non_null(b);
    assert_non_null(other);
    assert_int_equal(zstr_send(tb.broker, "STARTUP-DONE"), 0);

    // commands and events from one sender, mixed, across more than one full batch, while another
    // sender publishes in between; then a client that connects late and reads everything
    const int64_t n = 3 * BUS_TRACE_BATCH_MAX + 17;
    for (int64_t i = 1; i <= n; i++) {
        if (i % 7 == 0) publish_status(a, i);
        else assert_int_equal(send_ping(a, "order-b", i), BUS_OK);
        if (i % 50 == 0) publish_status(other, -i);
    }
    assert_int_equal(bus_endpoint_flush(a), BUS_OK);
    zsock_t *dealer = trace_subscribe(tb.endpoint, "");
    int64_t expect = 1;
    bus_msg_t msg;
    while (expect <= n && next_traced(dealer, WAIT_MS, &msg)) {
        if (strcmp(msg.from, "order-other") == 0) continue;
        assert_string_equal(msg.from, "order-a");
        assert_true(traced_number(&msg) == expect);
        assert_int_equal(msg.type, expect % 7 == 0 ? BUS_BOOKING_STATUS : BUS_ACTOR_PING);
        expect++;
    }
    assert_true(expect == n + 1);

    // live: a command flushed reaches a connected client at once (the other sender's last events
    // may still come: queues of different senders interleave as they arrive)
    assert_int_equal(send_ping(a, "order-b", n + 1), BUS_OK);
    while (next_traced(dealer, 50, &msg)) assert_string_equal(msg.from, "order-other");   // a's: batched
    assert_int_equal(bus_endpoint_flush(a), BUS_OK);
    assert_true(next_traced(dealer, WAIT_MS, &msg));
    assert_string_equal(msg.from, "order-a");
    assert_true(traced_number(&msg) == n + 1);

    zsock_destroy(&dealer);
    bus_endpoint_destroy(&other);
    bus_endpoint_destroy(&b);
    bus_endpoint_destroy(&a);
    traced_bus_stop(&tb);
}

// Appends one trace record to `batch` (bus_batch_next's format).
static size_t put_record(unsigned char *batch, size_t at, const char *topic, const void *body, size_t len) {
    size_t tl = strlen(topic);
    batch[at] = (unsigned char)tl;
    memcpy(batch + at + 1, topic, tl);
    batch[at + 1 + tl] = (unsigned char)(len >> 24);
    batch[at + 2 + tl] = (unsigned char)(len >> 16);
    batch[at + 3 + tl] = (unsigned char)(len >> 8);
    batch[at + 4 + tl] = (unsigned char)len;
    memcpy(batch + at + 5 + tl, body, len);
    return at + 5 + tl + len;
}

static void test_trace_batches_are_never_trusted(void **state) {
    (void)state;
    unsigned char batch[256];
    size_t len = put_record(batch, 0, "actor.ping", "\x91\x01", 2);
    len = put_record(batch, len, "x", "", 0);
    size_t pos = 0;
    bus_record_t r;
    assert_int_equal(bus_batch_next(batch, len, &pos, &r), 1);
    assert_true(r.topic_len == 10 && memcmp(r.topic, "actor.ping", 10) == 0 && r.body_len == 2);
    assert_int_equal(bus_batch_next(batch, len, &pos, &r), 1);
    assert_true(r.topic_len == 1 && r.body_len == 0);
    assert_int_equal(bus_batch_next(batch, len, &pos, &r), 0);
    for (size_t cut = 1; cut < len; cut++) {   // every truncation is refused, never read past
        pos = 0;
        int rc;
        while ((rc = bus_batch_next(batch, cut, &pos, &r)) == 1) {
        }
        if (cut != 17) assert_int_equal(rc, BUS_E_FORMAT);   // 17: the first record exactly
    }
    unsigned char bad[] = {0, 'a', 0, 0, 0, 0};   // empty topic
    pos = 0;
    assert_int_equal(bus_batch_next(bad, sizeof bad, &pos, &r), BUS_E_FORMAT);
    bad[0] = 1;
    bad[5] = 1;   // a body longer than the batch
    pos = 0;
    assert_int_equal(bus_batch_next(bad, sizeof bad, &pos, &r), BUS_E_FORMAT);

    // through the broker: the good record before the fault is kept, nothing is republished
    zactor_t *broker = start_broker(NULL, 1000);
    stats_t before = broker_stats(broker);
    zsock_t *raw = zsock_new_push(">" BUS_IN);
    assert_non_null(raw);
    assert_int_equal(zsock_send(raw, "sb", BUS_TRACE_BATCH, batch, len - 1), 0);
    int64_t deadline = util_monotonic_ms() + WAIT_MS;
    while (broker_stats(broker).in != before.in + 2 && util_monotonic_ms() < deadline) zclock_sleep(5);
    stats_t after = broker_stats(broker);
    assert_true(after.in == before.in + 2);   // one record, one malformed rest
    assert_true(after.published == before.published);
    zsock_destroy(&raw);
    zactor_destroy(&broker);
}

// An actor (actors/actor.c) that sends a command for each command it handles, and one from a
// timer of its own (a callback the loop runs, not one of the spec's handlers).
static int relay_on_command(actor_ctx_t *ctx, void *state, const bus_msg_t *msg) {
    (void)state;
    bus_msg_t out;
    bus_msg_init(&out, BUS_ACTOR_PING);
    snprintf(out.u.actor_ping.target, sizeof out.u.actor_ping.target, "relay-sink");
    out.u.actor_ping.nonce = msg->type == BUS_CALL_LOOKUP ? 100 : -1;
    return bus_send_to(ctx->bus, "relay-sink", &out, 1000) == BUS_OK ? 0 : -1;
}

static int relay_own_timer(zloop_t *loop, int timer_id, void *arg) {
    actor_ctx_t *ctx = arg;
    bus_msg_t out;
    bus_msg_init(&out, BUS_ACTOR_PING);
    snprintf(out.u.actor_ping.target, sizeof out.u.actor_ping.target, "relay-sink");
    out.u.actor_ping.nonce = 200;
    return bus_send_to(ctx->bus, "relay-sink", &out, 1000) == BUS_OK ? 0 : -1;
}

static int relay_create(actor_ctx_t *ctx, void **state) {
    *state = NULL;
    return zloop_timer(ctx->loop, 300, 1, relay_own_timer, ctx) == -1 ? -1 : 0;
}

static const actor_spec_t relay_spec = {
    .name = "relay",
    .create = relay_create,
    .on_command = relay_on_command,
};

static void test_actor_loop_flushes_trace_copies_before_waiting(void **state) {
    (void)state;
    traced_bus_t tb;
    traced_bus_start(&tb, 1000);
    bus_endpoint_t *sink = bus_endpoint_new("relay-sink", NULL);
    bus_endpoint_t *test = bus_endpoint_new("relay-test", NULL);
    assert_non_null(sink);
    assert_non_null(test);
    config_t cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.log_level = SLOG_WARN;
    actor_args_t args = {.spec = &relay_spec, .cfg = &cfg};
    zactor_t *relay = actor_start(actor_run, &args, "relay", &test_log);
    assert_non_null(relay);
    zsock_t *dealer = trace_subscribe(tb.endpoint, "actor.ping");
    assert_true(wait_for_clients(tb.broker, 1));

    // a command the relay sends from its handler: traced without anything else happening
    bus_msg_t msg;
    bus_msg_init(&msg, BUS_CALL_LOOKUP);
    assert_int_equal(bus_send_to(test, "relay", &msg, 1000), BUS_OK);
    bool handler_copy = false, timer_copy = false;
    while ((!handler_copy || !timer_copy) && next_traced(dealer, WAIT_MS, &msg)) {
        assert_string_equal(msg.from, "relay");
        handler_copy |= msg.u.actor_ping.nonce == 100;
        timer_copy |= msg.u.actor_ping.nonce == 200;   // the relay's own timer, 300 ms after start
    }
    assert_true(handler_copy && timer_copy);
    assert_true(readable(bus_endpoint_inbox(sink), WAIT_MS));

    zsock_destroy(&dealer);
    zactor_destroy(&relay);
    bus_endpoint_destroy(&test);
    bus_endpoint_destroy(&sink);
    traced_bus_stop(&tb);
}

// A listening AF_UNIX socket at `path`, as another daemon would have. Returns its fd.
static int listen_unix(const char *path) {
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    assert_true(strlen(path) < sizeof sa.sun_path);
    memcpy(sa.sun_path, path, strlen(path) + 1);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(listen(fd, 4), 0);
    return fd;
}

static bool someone_listens(const char *path) {
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    assert_true(strlen(path) < sizeof sa.sun_path);
    memcpy(sa.sun_path, path, strlen(path) + 1);
    bool ok = connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
    close(fd);
    return ok;
}

static void test_trace_endpoint_in_use_is_not_hijacked(void **state) {
    (void)state;
    char dir[64], path[128], endpoint[160];
    make_temp_dir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/trace", dir);
    snprintf(endpoint, sizeof endpoint, "ipc://%s", path);
    bus_broker_args_t args = {endpoint, 1000, test_log};

    // another live daemon: refused, and its socket still works
    int fd = listen_unix(path);
    zactor_t *broker = bus_broker_new(&args);
    assert_null(broker);
    assert_true(someone_listens(path));

    // the same file left behind by a crash: taken over
    close(fd);
    assert_int_equal(access(path, F_OK), 0);
    broker = bus_broker_new(&args);
    assert_non_null(broker);
    zactor_destroy(&broker);
    wait_gone(path);

    // not a socket at all: refused, left alone
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("precious", f);
    fclose(f);
    assert_null(bus_broker_new(&args));
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_true(S_ISREG(st.st_mode) && st.st_size == 8);
    unlink(path);

    // a malformed endpoint fails too, with the broker's inproc names left free
    args.trace_endpoint = "nonsense://x";
    assert_null(bus_broker_new(&args));
    broker = start_broker(NULL, 1000);
    zactor_destroy(&broker);
    remove_temp_dir(dir);
}

static void test_trace_client_reports_errors_and_idle(void **state) {
    (void)state;
    FILE *out = tmpfile();
    assert_non_null(out);
    assert_int_equal(trace_client_run("nonsense://x", "", 1, 100, out), -1);
    assert_int_equal(trace_client_run(NULL, "", 1, 100, out), -1);
    char prefix[100];
    memset(prefix, 'p', sizeof prefix - 1);
    prefix[sizeof prefix - 1] = '\0';
    assert_int_equal(trace_client_run("ipc:///tmp/test-bus-nobody-here", prefix, 1, 100, out), -1);
    // nobody there: idle timeout
    assert_int_equal(trace_client_run("ipc:///tmp/test-bus-nobody-here", NULL, 1, 100, out), 1);
    fclose(out);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_message_type_round_trips),
        cmocka_unit_test(test_hand_packed_body_decodes),
        cmocka_unit_test(test_string_one_byte_too_long_is_refused),
        cmocka_unit_test(test_wrong_field_types_are_refused),
        cmocka_unit_test(test_wrong_version_is_refused),
        cmocka_unit_test(test_wrong_array_length_is_refused),
        cmocka_unit_test(test_unknown_topic_is_refused),
        cmocka_unit_test(test_truncated_bodies_are_refused),
        cmocka_unit_test(test_strings_must_be_utf8_without_nul),
        cmocka_unit_test(test_integers_beyond_int64_are_refused),
        cmocka_unit_test(test_random_garbage_never_crashes),
        cmocka_unit_test(test_trace_json_masks_personal_data),
        cmocka_unit_test(test_published_event_reaches_subscriber_through_broker),
        cmocka_unit_test(test_send_to_delivers_to_inbox_and_trace),
        cmocka_unit_test(test_full_inbox_times_out),
        cmocka_unit_test(test_malformed_input_is_counted_and_dropped),
        cmocka_unit_test(test_endpoint_name_is_checked),
        cmocka_unit_test(test_trace_replays_startup_then_last_kept_then_live),
        cmocka_unit_test(test_trace_client_limit_and_departed_clients),
        cmocka_unit_test(test_slow_trace_client_never_blocks_the_bus),
        cmocka_unit_test(test_trace_batches_copies_until_full_old_or_flushed),
        cmocka_unit_test(test_trace_keeps_each_senders_order),
        cmocka_unit_test(test_trace_batches_are_never_trusted),
        cmocka_unit_test(test_actor_loop_flushes_trace_copies_before_waiting),
        cmocka_unit_test(test_trace_endpoint_in_use_is_not_hijacked),
        cmocka_unit_test(test_trace_client_reports_errors_and_idle),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
