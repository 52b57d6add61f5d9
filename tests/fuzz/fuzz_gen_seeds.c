// tests/fuzz/fuzz_gen_seeds.c — writes the seeds that only the project's own code can make:
//   fuzz_gen_seeds bus_decode DIR   every message of bus/messages.def, encoded by the real
//                                   encoder (a typical one and one with edge values per type), as
//                                   "<topic>\0<body>" (fuzz_bus_decode's input)
//   fuzz_gen_seeds ws_frame DIR     subscribe frames with status tokens issued under
//                                   FUZZ_TOKEN_SECRET around FUZZ_NOW (valid, expired, for another
//                                   booking, ...)
// The committed corpora hold its output; run_fuzzer.sh also runs it into the working copy of the
// corpus before every run, so the fuzzers start from what the current code encodes even after the
// catalogue changed.
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bus/bus.h"
#include "common/token.h"
#include "tests/fuzz/fuzz.h"

static const char *out_dir;

static int write_seed(const char *name, const void *a, size_t alen, const void *b, size_t blen) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", out_dir, name);
    FILE *f = fopen(path, "wb");
    if (!f) {
        perror(path);
        return -1;
    }
    bool ok = fwrite(a, 1, alen, f) == alen && (blen == 0 || fwrite(b, 1, blen, f) == blen);
    if (fclose(f) != 0) ok = false;
    if (!ok) fprintf(stderr, "%s: write failed\n", path);
    return ok ? 0 : -1;
}

// ---- bus messages ------------------------------------------------------------------------------

typedef struct {
    char kind;   // 's' string, 'p' personal string, 'i' int64, 'b' bool
    size_t size;
    size_t offset;
    const char *name;
} gfield_t;

#define MAX_FIELDS 32

static size_t fields_of(bus_type_t type, gfield_t *out) {
    size_t n = 0;
    switch (type) {
#define F_STR(f, sz) out[n++] = (gfield_t){'s', (sz), offsetof(msg_struct_t, f), #f};
#define F_PII(f, sz) out[n++] = (gfield_t){'p', (sz), offsetof(msg_struct_t, f), #f};
#define F_I64(f) out[n++] = (gfield_t){'i', 0, offsetof(msg_struct_t, f), #f};
#define F_BOOL(f) out[n++] = (gfield_t){'b', 0, offsetof(msg_struct_t, f), #f};
#define BUS_MESSAGE(ID, topic, name, fields) \
    case BUS_##ID: {                         \
        typedef bus_##name##_t msg_struct_t; \
        fields break;                        \
    }
#include "bus/messages.def"
#undef BUS_MESSAGE
#undef F_STR
#undef F_PII
#undef F_I64
#undef F_BOOL
    default:
        break;
    }
    if (n > MAX_FIELDS) abort();   // raise MAX_FIELDS for a bigger message
    return n;
}

// A value such a field holds in real traffic, chosen by its name.
static const char *typical_text(const char *name) {
    static const struct {
        const char *part, *value;
    } table[] = {
        {"booking_id", "0f8fad5b-d9cb-469f-a165-70867728950e"},
        {"order_id", "0f8fad5b-d9cb-469f-a165-70867728950e"},
        {"agent_id", "7c9e6679-7425-40de-944b-e07fc1f90ae7"},
        {"account_id", "16fd2706-8baf-433b-82eb-8c7fada847da"},
        {"call_id", "call_6b0e1f5c2d8a4e3f9b7c"},
        {"checkout_id", "cs_test_a1b2c3d4e5f6g7h8i9j0"},
        {"object_id", "cs_test_a1b2c3d4e5f6g7h8i9j0"},
        {"payment_intent", "pi_3OdFq2LkdIwHu7ix0s1Y2Z3a"},
        {"refund_id", "re_3OdFq2LkdIwHu7ix0abcdefg"},
        {"event_id", "evt_1OdFq2LkdIwHu7ixQWERTY12"},
        {"event_type", "checkout.session.completed"},
        {"payment_status", "paid"},
        {"status", "confirmed"},
        {"plan", "standard"},
        {"payment_method", "stripe"},
        {"provider", "stripe"},
        {"currency", "usd"},
        {"outcome", "applied"},
        {"ended_reason", "customer-ended-call"},
        {"reason", "customer-did-not-answer"},
        {"type", "end-of-call-report"},
        {"recording_url", "https://storage.vapi.ai/rec-6b0e1f5c.wav"},
        {"idem_key", "idem-2f1c7b9e-5a4d-4c3b-9e8f-7a6b5c4d3e2f"},
        {"request_hash", "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"},
        {"phone", "+15551234567"},
        {"email", "ann@example.com"},
        {"name", "Ann Example"},
        {"message", "Please call after 6 pm.\nThanks!"},
        {"body", "{\"booking_id\":\"0f8fad5b-d9cb-469f-a165-70867728950e\",\"status\":\"pending_payment\"}"},
        {"events", "[{\"seq\":1,\"status\":\"pending_payment\",\"at\":\"2023-11-14T22:13:20.000Z\"},"
                   "{\"seq\":2,\"status\":\"confirmed\",\"at\":\"2023-11-14T22:14:02.517Z\"}]"},
        {"actor", "scheduler"},
        {"target", "dialer"},
    };
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++)
        if (strstr(name, table[i].part)) return table[i].value;
    return "x";
}

static int64_t typical_int(const char *name) {
    if (strstr(name, "duration")) return strstr(name, "_ms") ? 600000 : 600;
    if (strstr(name, "_ms")) return INT64_C(1700000100000);
    if (!strcmp(name, "at") || !strcmp(name, "not_before")) return INT64_C(1700000100000000);
    if (strstr(name, "delay")) return 60;
    if (strstr(name, "request_id") || strstr(name, "nonce")) return 42;
    if (strstr(name, "cents")) return 1500;
    if (strstr(name, "micros")) return 420000;
    if (!strcmp(name, "status")) return 200;
    return 3;
}

// Fills one string field of `size` bytes with size-1 bytes of valid UTF-8 (two-byte characters,
// padded with ASCII), the longest the decoder accepts.
static void fill_longest(char *dst, size_t size) {
    size_t i = 0;
    while (i + 2 < size) {
        dst[i++] = (char)0xC3;
        dst[i++] = (char)0xA9;   // é
    }
    while (i + 1 < size) dst[i++] = 'z';
    dst[i] = '\0';
}

static int write_message(bus_type_t type, bool edge) {
    gfield_t f[MAX_FIELDS];
    size_t n = fields_of(type, f);
    static bus_msg_t msg;
    bus_msg_init(&msg, type);
    snprintf(msg.from, sizeof msg.from, "%s", edge ? "" : "http");
    msg.ts_us = edge ? INT64_MIN : INT64_C(1700000100123456);
    char *base = (char *)&msg.u;
    for (size_t i = 0; i < n; i++) {
        char *p = base + f[i].offset;
        if (f[i].kind == 's' || f[i].kind == 'p') {
            if (edge && i % 2 == 0) fill_longest(p, f[i].size);
            else if (edge) p[0] = '\0';
            else snprintf(p, f[i].size, "%s", typical_text(f[i].name));
        } else if (f[i].kind == 'i') {
            int64_t v = edge ? (i % 2 ? INT64_MAX : -1) : typical_int(f[i].name);
            memcpy(p, &v, sizeof v);
        } else {
            bool v = !edge;
            memcpy(p, &v, sizeof v);
        }
    }
    char *body = NULL;
    size_t len = 0;
    int rc = bus_encode(&msg, &body, &len);
    if (rc != BUS_OK) {
        fprintf(stderr, "%s: bus_encode: %s\n", bus_type_topic(type), bus_strerror(rc));
        return -1;
    }
    const char *topic = bus_type_topic(type);
    char name[128];
    snprintf(name, sizeof name, "%s%s.msgpack", topic, edge ? "-edge" : "");
    rc = write_seed(name, topic, strlen(topic) + 1, body, len);
    free(body);
    return rc;
}

static int gen_bus(void) {
    int rc = 0;
    for (int t = BUS_NONE + 1; t < BUS_TYPE_COUNT; t++)
        if (write_message((bus_type_t)t, false) != 0 || write_message((bus_type_t)t, true) != 0) rc = -1;
    return rc;
}

// ---- WebSocket frames --------------------------------------------------------------------------

static int frame(const char *name, const char *fmt, const char *bid, const char *token) {
    char text[2048];
    int n = snprintf(text, sizeof text, fmt, bid, token);
    if (n < 0 || (size_t)n >= sizeof text) return -1;
    return write_seed(name, text, (size_t)n, "", 0);
}

static int gen_ws(void) {
    const char *bid = "0f8fad5b-d9cb-469f-a165-70867728950e";
    char tok[256], old[256], other[256], ahead[256], short_tok[256];
    if (token_issue(FUZZ_TOKEN_SECRET, bid, FUZZ_NOW - 3600, FUZZ_TOKEN_TTL_S, tok, sizeof tok) != 0 ||
        token_issue(FUZZ_TOKEN_SECRET, bid, FUZZ_NOW - 2 * FUZZ_TOKEN_TTL_S, FUZZ_TOKEN_TTL_S, old, sizeof old) != 0 ||
        token_issue(FUZZ_TOKEN_SECRET, "bk_42", FUZZ_NOW, FUZZ_TOKEN_TTL_S, other, sizeof other) != 0 ||
        token_issue(FUZZ_TOKEN_SECRET, bid, FUZZ_NOW + 3600, FUZZ_TOKEN_TTL_S, ahead, sizeof ahead) != 0 ||
        token_issue(FUZZ_TOKEN_SECRET, "b", FUZZ_NOW, 1, short_tok, sizeof short_tok) != 0) {
        fprintf(stderr, "token_issue failed\n");
        return -1;
    }
    int rc = 0;
    rc |= frame("subscribe", "{\"type\":\"subscribe\",\"booking_id\":\"%s\",\"token\":\"%s\",\"after_seq\":0}", bid, tok);
    rc |= frame("subscribe-after-seq", "{\"type\":\"subscribe\",\"booking_id\":\"%s\",\"token\":\"%s\",\"after_seq\":7}",
                bid, tok);
    rc |= frame("subscribe-no-after-seq", "{\"booking_id\":\"%s\",\"token\":\"%s\",\"type\":\"subscribe\"}", bid, tok);
    rc |= frame("subscribe-null-after-seq",
                "{\"type\":\"subscribe\",\"booking_id\":\"%s\",\"token\":\"%s\",\"after_seq\":null}", bid, tok);
    rc |= frame("subscribe-pretty", "{\n  \"type\": \"subscribe\",\n  \"booking_id\": \"%s\",\n  \"token\": \"%s\",\n"
                "  \"after_seq\": 2147483646\n}\n", bid, tok);
    rc |= frame("subscribe-extra-member",
                "{\"type\":\"subscribe\",\"booking_id\":\"%s\",\"token\":\"%s\",\"after_seq\":1,\"x\":[1,{\"y\":null}]}",
                bid, tok);
    rc |= frame("subscribe-short-bid", "{\"type\":\"subscribe\",\"booking_id\":\"%s\",\"token\":\"%s\"}", "b", short_tok);
    rc |= frame("token-expired", "{\"type\":\"subscribe\",\"booking_id\":\"%s\",\"token\":\"%s\",\"after_seq\":0}", bid, old);
    rc |= frame("token-other-booking", "{\"type\":\"subscribe\",\"booking_id\":\"%s\",\"token\":\"%s\"}", bid, other);
    rc |= frame("token-iat-ahead", "{\"type\":\"subscribe\",\"booking_id\":\"%s\",\"token\":\"%s\"}", bid, ahead);
    rc |= frame("after-seq-negative", "{\"type\":\"subscribe\",\"booking_id\":\"%s\",\"token\":\"%s\",\"after_seq\":-1}",
                bid, tok);
    rc |= frame("after-seq-real", "{\"type\":\"subscribe\",\"booking_id\":\"%s\",\"token\":\"%s\",\"after_seq\":1.5}", bid,
                tok);
    rc |= frame("duplicate-key",
                "{\"type\":\"subscribe\",\"booking_id\":\"%s\",\"token\":\"%s\",\"type\":\"subscribe\"}", bid, tok);
    rc |= frame("type-unknown", "{\"type\":\"unsubscribe\",\"booking_id\":\"%s\",\"token\":\"%s\"}", bid, tok);
    return rc ? -1 : 0;
}

int main(int argc, char **argv) {
    if (argc != 3 || (strcmp(argv[1], "bus_decode") != 0 && strcmp(argv[1], "ws_frame") != 0)) {
        fprintf(stderr, "usage: %s bus_decode|ws_frame DIR\n", argv[0]);
        return 2;
    }
    out_dir = argv[2];
    return (strcmp(argv[1], "bus_decode") == 0 ? gen_bus() : gen_ws()) == 0 ? 0 : 1;
}
