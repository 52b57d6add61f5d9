// bus/bus.c — the message catalogue, its msgpack codec and its trace JSON.
//
// Everything here is generated from bus/messages.def: each BUS_MESSAGE line becomes a table of
// field descriptors (name, kind, offset in its struct, size), and one encoder, one decoder and one
// JSON printer walk those tables. Adding a message to messages.def is all it takes; nothing here
// names a message.
//
// Body on the wire: a msgpack array [BUS_WIRE_VERSION, from, ts_us, field1, field2 ...].
//
// The decoder never trusts its input. msgpack-c allocates an array's element storage as soon as it
// reads the array's header, so a 5-byte body announcing 4 billion elements would ask for ~100 GB.
// Before handing a body to msgpack-c we therefore walk it once (scan_body): every container must
// fit in the bytes that remain, every length must be in bounds, and the body must hold exactly one
// object. What msgpack-c then builds is bounded by the size of the body. Strings must be valid
// UTF-8 without NUL bytes (they become C strings and JSON strings), both when encoding and when
// decoding, so what one side accepts the other side accepts too.
//
// Pure functions: no sockets, no state; safe on any thread.
#include "bus/bus.h"

#include <assert.h>
// msgpack_sbuffer (inline in its header) first allocates this much: a body is a few hundred bytes
// (its own default, 8 KiB, is past malloc's per-thread cache and showed in profiles); the rare
// large body (http.reply, ws.events) grows by doubling.
#define MSGPACK_SBUFFER_INIT_SIZE 256
#include <msgpack.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"

// ---- the catalogue, as tables ----------------------------------------------------------------

typedef enum { FIELD_STR, FIELD_PII, FIELD_I64, FIELD_BOOL } field_kind_t;

typedef struct {
    const char *name;
    field_kind_t kind;
    size_t offset;   // within the message's struct (every union member starts at msg->u)
    size_t size;     // buffer size for strings (at most size-1 bytes + NUL)
} field_desc_t;

// One function per message returns its field table. The block-scope typedef gives the F_* macros
// a fixed name for the struct they describe, so offsetof works inside the static initialiser.
#define F_STR(n, sz) {#n, FIELD_STR, offsetof(msg_struct_t, n), (sz)},
#define F_PII(n, sz) {#n, FIELD_PII, offsetof(msg_struct_t, n), (sz)},
#define F_I64(n) {#n, FIELD_I64, offsetof(msg_struct_t, n), sizeof(int64_t)},
#define F_BOOL(n) {#n, FIELD_BOOL, offsetof(msg_struct_t, n), sizeof(bool)},
#define BUS_MESSAGE(ID, topic, name, fields)                                   \
    static const field_desc_t *fields_of_##name(size_t *count) {              \
        typedef bus_##name##_t msg_struct_t;                                   \
        static const field_desc_t table[] = {fields};                          \
        *count = sizeof table / sizeof table[0];                               \
        return table;                                                          \
    }
#include "bus/messages.def"
#undef BUS_MESSAGE
#undef F_STR
#undef F_PII
#undef F_I64
#undef F_BOOL

typedef struct {
    const char *topic;
    const field_desc_t *(*fields)(size_t *count);
    size_t size;   // of its struct: what a decoder writes of bus_msg_t.u
} type_desc_t;

static const type_desc_t types[BUS_TYPE_COUNT] = {
    [BUS_NONE] = {NULL, NULL, 0},
#define BUS_MESSAGE(ID, topic, name, fields) [BUS_##ID] = {topic, fields_of_##name, sizeof(bus_##name##_t)},
#include "bus/messages.def"
#undef BUS_MESSAGE
};

#define BUS_TOPIC_MAX 64   // longer topics are unknown by definition

static bool type_valid(bus_type_t type) {
    return type > BUS_NONE && type < BUS_TYPE_COUNT;
}

const char *bus_type_topic(bus_type_t type) {
    return type_valid(type) ? types[type].topic : NULL;
}

bus_type_t bus_type_from_topic(const char *topic) {
    if (!topic) return BUS_NONE;
    for (int t = BUS_NONE + 1; t < BUS_TYPE_COUNT; t++)   // first bytes first: a decoder asks per message
        if (types[t].topic[0] == topic[0] && strcmp(types[t].topic, topic) == 0) return (bus_type_t)t;
    return BUS_NONE;
}

const char *bus_strerror(int code) {
    switch (code) {
    case BUS_OK: return "ok";
    case BUS_E_TOPIC: return "unknown topic";
    case BUS_E_FORMAT: return "malformed body";
    case BUS_E_VERSION: return "unsupported wire version";
    case BUS_E_TYPE: return "field of the wrong type";
    case BUS_E_RANGE: return "value out of range";
    case BUS_E_NOMEM: return "out of memory";
    case BUS_E_SOCKET: return "socket error";
    case BUS_E_AGAIN: return "no message waiting";
    default: return "unknown error";
    }
}

void bus_msg_init(bus_msg_t *msg, bus_type_t type) {
    assert(msg);
    assert(type >= BUS_NONE && type < BUS_TYPE_COUNT);
    memset(msg, 0, sizeof *msg);
    msg->type = type;
}

// ---- strings ----------------------------------------------------------------------------------

#define ALL_BYTES(b) (UINT64_C(0x0101010101010101) * (b))

// Strict UTF-8: no overlong forms, no surrogates, nothing above U+10FFFF, no NUL.
static bool text_valid(const unsigned char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        if (n - i >= 8) {   // ASCII fast path: eight bytes at once while all are 0x01..0x7f
            uint64_t w;
            memcpy(&w, s + i, sizeof w);
            bool high = (w & ALL_BYTES(0x80)) != 0;
            bool nul = ((w - ALL_BYTES(0x01)) & ~w & ALL_BYTES(0x80)) != 0;
            if (!high && !nul) {
                i += 8;
                continue;
            }
        }
        unsigned char c = s[i];
        if (c == 0) return false;
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t extra;
        uint32_t cp;
        if (c >= 0xc2 && c <= 0xdf) {
            extra = 1;
            cp = c & 0x1f;
        } else if (c >= 0xe0 && c <= 0xef) {
            extra = 2;
            cp = c & 0x0f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            extra = 3;
            cp = c & 0x07;
        } else {
            return false;
        }
        if (n - i <= extra) return false;
        for (size_t k = 1; k <= extra; k++) {
            unsigned char cc = s[i + k];
            if ((cc & 0xc0) != 0x80) return false;
            cp = (cp << 6) | (cc & 0x3f);
        }
        if ((extra == 2 && cp < 0x800) || (extra == 3 && cp < 0x10000)) return false;
        if (cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return false;
        i += extra + 1;
    }
    return true;
}

// A string field of `size` bytes as it sits in a struct: 0 and its length, or a BUS_E_* code.
static int field_text(const char *s, size_t size, size_t *len) {
    size_t n = strnlen(s, size);
    if (n == size) return BUS_E_RANGE;   // no NUL inside the field
    if (!text_valid((const unsigned char *)s, n)) return BUS_E_TYPE;
    *len = n;
    return BUS_OK;
}

// ---- encoding ---------------------------------------------------------------------------------

static int pack_text(msgpack_packer *pk, const char *s, size_t size) {
    size_t n;
    int rc = field_text(s, size, &n);
    if (rc != BUS_OK) return rc;
    if (msgpack_pack_str(pk, n) != 0 || msgpack_pack_str_body(pk, s, n) != 0) return BUS_E_NOMEM;
    return BUS_OK;
}

static int pack_field(msgpack_packer *pk, const field_desc_t *f, const char *base) {
    const char *p = base + f->offset;
    switch (f->kind) {
    case FIELD_STR:
    case FIELD_PII:
        return pack_text(pk, p, f->size);
    case FIELD_I64: {
        int64_t v;
        memcpy(&v, p, sizeof v);
        return msgpack_pack_int64(pk, v) == 0 ? BUS_OK : BUS_E_NOMEM;
    }
    case FIELD_BOOL: {
        bool v;
        memcpy(&v, p, sizeof v);
        return (v ? msgpack_pack_true(pk) : msgpack_pack_false(pk)) == 0 ? BUS_OK : BUS_E_NOMEM;
    }
    }
    return BUS_E_TYPE;
}

int bus_encode(const bus_msg_t *msg, char **buf, size_t *len) {
    assert(msg && buf && len);
    if (!type_valid(msg->type)) return BUS_E_TOPIC;
    size_t nfields;
    const field_desc_t *fields = types[msg->type].fields(&nfields);
    const char *base = (const char *)&msg->u;

    msgpack_sbuffer sbuf;
    msgpack_sbuffer_init(&sbuf);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sbuf, msgpack_sbuffer_write);

    int rc = BUS_OK;
    if (msgpack_pack_array(&pk, 3 + nfields) != 0 || msgpack_pack_int(&pk, BUS_WIRE_VERSION) != 0)
        rc = BUS_E_NOMEM;
    if (rc == BUS_OK) rc = pack_text(&pk, msg->from, sizeof msg->from);
    if (rc == BUS_OK && msgpack_pack_int64(&pk, msg->ts_us) != 0) rc = BUS_E_NOMEM;
    for (size_t i = 0; rc == BUS_OK && i < nfields; i++) rc = pack_field(&pk, &fields[i], base);

    if (rc != BUS_OK) {
        msgpack_sbuffer_destroy(&sbuf);
        return rc;
    }
    *len = sbuf.size;
    *buf = msgpack_sbuffer_release(&sbuf);
    return BUS_OK;
}

// ---- decoding ---------------------------------------------------------------------------------

static uint64_t read_be(const unsigned char *p, size_t n) {
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) v = (v << 8) | p[i];
    return v;
}

// Walks one msgpack object spanning exactly [buf, buf+len) without building anything. Counts the
// objects still to read instead of recursing: an array of n adds n, a map of n adds 2n, and since
// each object takes at least one byte, more pending objects than remaining bytes is an error.
static bool scan_body(const unsigned char *buf, size_t len) {
    size_t pos = 0;
    uint64_t pending = 1;
    while (pending > 0) {
        if (pos >= len) return false;
        unsigned char b = buf[pos++];
        pending--;
        uint64_t skip = 0;       // payload bytes after the header
        uint64_t children = 0;   // objects this one contains
        size_t lenbytes = 0;     // size of a length field following the type byte
        if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3) {
            // fixint, nil, bool: the type byte is all
        } else if (b >= 0x80 && b <= 0x8f) {
            children = 2u * (b & 0x0fu);
        } else if (b >= 0x90 && b <= 0x9f) {
            children = b & 0x0fu;
        } else if (b >= 0xa0 && b <= 0xbf) {
            skip = b & 0x1fu;
        } else {
            switch (b) {
            case 0xc4: case 0xd9: lenbytes = 1; break;                 // bin8, str8
            case 0xc5: case 0xda: lenbytes = 2; break;                 // bin16, str16
            case 0xc6: case 0xdb: lenbytes = 4; break;                 // bin32, str32
            case 0xc7: lenbytes = 1; skip = 1; break;                  // ext8 (+type byte)
            case 0xc8: lenbytes = 2; skip = 1; break;                  // ext16
            case 0xc9: lenbytes = 4; skip = 1; break;                  // ext32
            case 0xca: skip = 4; break;                                // float32
            case 0xcb: skip = 8; break;                                // float64
            case 0xcc: case 0xd0: skip = 1; break;                     // (u)int8
            case 0xcd: case 0xd1: skip = 2; break;                     // (u)int16
            case 0xce: case 0xd2: skip = 4; break;                     // (u)int32
            case 0xcf: case 0xd3: skip = 8; break;                     // (u)int64
            case 0xd4: skip = 2; break;                                // fixext1
            case 0xd5: skip = 3; break;                                // fixext2
            case 0xd6: skip = 5; break;                                // fixext4
            case 0xd7: skip = 9; break;                                // fixext8
            case 0xd8: skip = 17; break;                               // fixext16
            case 0xdc: case 0xde: lenbytes = 2; break;                 // array16, map16
            case 0xdd: case 0xdf: lenbytes = 4; break;                 // array32, map32
            default: return false;                                     // 0xc1: never used
            }
            if (lenbytes) {
                if (len - pos < lenbytes) return false;
                uint64_t n = read_be(buf + pos, lenbytes);
                pos += lenbytes;
                if (b == 0xdc || b == 0xdd) children = n;
                else if (b == 0xde || b == 0xdf) children = 2 * n;
                else skip += n;
            }
        }
        if (skip > len - pos) return false;
        pos += (size_t)skip;
        pending += children;
        if (pending > len - pos) return false;
    }
    return pos == len;
}

static int unpack_text(const msgpack_object *o, char *dst, size_t size) {
    if (o->type != MSGPACK_OBJECT_STR) return BUS_E_TYPE;
    size_t n = o->via.str.size;
    if (n >= size) return BUS_E_RANGE;
    if (n > 0) {
        if (!text_valid((const unsigned char *)o->via.str.ptr, n)) return BUS_E_TYPE;
        memcpy(dst, o->via.str.ptr, n);
    }
    dst[n] = '\0';
    return BUS_OK;
}

static int unpack_i64(const msgpack_object *o, int64_t *out) {
    if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
        if (o->via.u64 > (uint64_t)INT64_MAX) return BUS_E_RANGE;
        *out = (int64_t)o->via.u64;
        return BUS_OK;
    }
    if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
        *out = o->via.i64;
        return BUS_OK;
    }
    return BUS_E_TYPE;
}

static int unpack_field(const msgpack_object *o, const field_desc_t *f, char *base) {
    char *p = base + f->offset;
    switch (f->kind) {
    case FIELD_STR:
    case FIELD_PII:
        return unpack_text(o, p, f->size);
    case FIELD_I64: {
        int64_t v;
        int rc = unpack_i64(o, &v);
        if (rc == BUS_OK) memcpy(p, &v, sizeof v);
        return rc;
    }
    case FIELD_BOOL: {
        if (o->type != MSGPACK_OBJECT_BOOLEAN) return BUS_E_TYPE;
        bool v = o->via.boolean;
        memcpy(p, &v, sizeof v);
        return BUS_OK;
    }
    }
    return BUS_E_TYPE;
}

static int unpack_body(const msgpack_object *root, bus_type_t type, bus_msg_t *out) {
    size_t nfields;
    const field_desc_t *fields = types[type].fields(&nfields);
    if (root->type != MSGPACK_OBJECT_ARRAY || root->via.array.size == 0) return BUS_E_FORMAT;
    const msgpack_object *items = root->via.array.ptr;

    // The version comes first: a newer sender may well have a different number of fields.
    const msgpack_object *v = &items[0];
    if (v->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) return BUS_E_VERSION;
    if (v->type != MSGPACK_OBJECT_POSITIVE_INTEGER) return BUS_E_TYPE;
    if (v->via.u64 != BUS_WIRE_VERSION) return BUS_E_VERSION;
    if (root->via.array.size != 3 + nfields) return BUS_E_FORMAT;

    // Only the header and this type's member: the whole union is several KiB (http.reply).
    memset(out, 0, offsetof(bus_msg_t, u) + types[type].size);
    out->type = type;
    int rc = unpack_text(&items[1], out->from, sizeof out->from);
    if (rc == BUS_OK) rc = unpack_i64(&items[2], &out->ts_us);
    char *base = (char *)&out->u;
    for (size_t i = 0; rc == BUS_OK && i < nfields; i++) rc = unpack_field(&items[3 + i], &fields[i], base);
    return rc;
}

int bus_decode(const char *topic, const void *buf, size_t len, bus_msg_t *msg) {
    assert(msg);
    bus_type_t type = bus_type_from_topic(topic);
    if (type == BUS_NONE) return BUS_E_TOPIC;
    if (!buf || len == 0 || !scan_body(buf, len)) return BUS_E_FORMAT;

    msgpack_unpacked unpacked;
    msgpack_unpacked_init(&unpacked);
    size_t off = 0;
    msgpack_unpack_return ur = msgpack_unpack_next(&unpacked, buf, len, &off);
    int rc;
    if (ur == MSGPACK_UNPACK_NOMEM_ERROR) {
        rc = BUS_E_NOMEM;
    } else if (ur != MSGPACK_UNPACK_SUCCESS || off != len) {
        rc = BUS_E_FORMAT;   // e.g. nested deeper than msgpack-c's stack
    } else {
        bus_msg_t tmp;
        rc = unpack_body(&unpacked.data, type, &tmp);
        if (rc == BUS_OK) memcpy(msg, &tmp, offsetof(bus_msg_t, u) + types[type].size);
    }
    msgpack_unpacked_destroy(&unpacked);
    return rc;
}

// ---- trace JSON -------------------------------------------------------------------------------

// A string value for JSON; a message built in memory (not decoded) may hold anything.
static json_t *json_text(const char *s, size_t size) {
    size_t n;
    if (field_text(s, size, &n) != BUS_OK) return json_string("<invalid>");
    return json_stringn(s, n);
}

static json_t *json_pii(const field_desc_t *f, const char *s, bool mask) {
    if (!mask) return json_text(s, f->size);
    size_t n;
    if (field_text(s, f->size, &n) != BUS_OK) return json_string("***");
    if (n == 0) return json_string("");   // nothing to hide
    char masked[512];
    if (strstr(f->name, "phone")) util_mask_phone(s, masked, sizeof masked);
    else if (strstr(f->name, "email")) util_mask_email(s, masked, sizeof masked);
    else snprintf(masked, sizeof masked, "***");
    return json_string(masked);
}

static json_t *json_field(const field_desc_t *f, const char *base, bool mask) {
    const char *p = base + f->offset;
    switch (f->kind) {
    case FIELD_STR: return json_text(p, f->size);
    case FIELD_PII: return json_pii(f, p, mask);
    case FIELD_I64: {
        int64_t v;
        memcpy(&v, p, sizeof v);
        return json_integer((json_int_t)v);
    }
    case FIELD_BOOL: {
        bool v;
        memcpy(&v, p, sizeof v);
        return json_boolean(v);
    }
    }
    return json_null();
}

json_t *bus_msg_to_json(const bus_msg_t *msg, bool mask) {
    assert(msg);
    if (!type_valid(msg->type)) return NULL;
    size_t nfields;
    const field_desc_t *fields = types[msg->type].fields(&nfields);
    const char *base = (const char *)&msg->u;

    // gmtime cannot represent every int64: keep the clock within years 1970..9999.
    int64_t ts = msg->ts_us;
    if (ts < 0) ts = 0;
    if (ts > INT64_C(253402300799999999)) ts = INT64_C(253402300799999999);
    char when[40];
    util_rfc3339_ms(ts, when, sizeof when);

    json_t *body = json_object();
    json_t *root = json_object();
    bool ok = body && root;
    for (size_t i = 0; ok && i < nfields; i++)
        ok = json_object_set_new(body, fields[i].name, json_field(&fields[i], base, mask)) == 0;
    ok = ok && json_object_set_new(root, "ts", json_string(when)) == 0;
    ok = ok && json_object_set_new(root, "topic", json_string(types[msg->type].topic)) == 0;
    ok = ok && json_object_set_new(root, "from", json_text(msg->from, sizeof msg->from)) == 0;
    if (ok) {
        ok = json_object_set_new(root, "body", body) == 0;
        body = NULL;   // set_new took it, even on failure
    }
    json_decref(body);
    if (!ok) {
        json_decref(root);
        return NULL;
    }
    return root;
}
