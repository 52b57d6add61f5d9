// bus/bus.c — the message catalogue, its msgpack codec and its trace JSON.
//
// Everything here is generated from bus/messages.def: each BUS_MESSAGE line becomes a table of
// field descriptors (name, kind, offset in its struct, size), and one encoder, one decoder and one
// JSON printer walk those tables. Adding a message to messages.def is all it takes; nothing here
// names a message.
//
// Body on the wire: a msgpack array [BUS_WIRE_VERSION, from, ts_us, field1, field2 ...].
//
// Encoding uses msgpack-c's packer, writing into the caller's buffer (bus_encode_to: no malloc
// per message; BUS_BODY_MAX, derived from messages.def, bounds every body). Decoding reads the
// body directly, in two passes and without allocating: scan_body first walks it once and checks
// that it is exactly one well-formed msgpack object (every container fits in the bytes that
// remain, every length is in bounds), so that a truncated or padded body is BUS_E_FORMAT whatever
// its fields hold; then unpack_body reads the fields it expects in order and stops at the first
// one of the wrong type, with no bounds checks left to make. (msgpack-c's own unpacker built an
// object tree in an 8 KiB zone for every message: a malloc and a free per message in profiles,
// and it allocates an array's storage as soon as it reads its header, which is why scan_body
// came first in the first place.) The decoder never trusts its input. Strings must be valid
// UTF-8 without NUL bytes (they become C strings and JSON strings), both when encoding and when
// decoding, so what one side accepts the other side accepts too.
//
// Pure functions: no sockets, no state; safe on any thread.
#include "bus/bus.h"

#include <assert.h>
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
    size_t topic_len;
    const field_desc_t *(*fields)(size_t *count);
    size_t size;   // of its struct: what a decoder writes of bus_msg_t.u
} type_desc_t;

static const type_desc_t types[BUS_TYPE_COUNT] = {
    [BUS_NONE] = {NULL, 0, NULL, 0},
#define BUS_MESSAGE(ID, topic, name, fields) \
    [BUS_##ID] = {topic, sizeof(topic) - 1, fields_of_##name, sizeof(bus_##name##_t)},
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
    size_t n = strnlen(topic, BUS_TOPIC_MAX);
    for (int t = BUS_NONE + 1; t < BUS_TYPE_COUNT; t++)   // lengths first: a decoder asks per message
        if (types[t].topic_len == n && memcmp(types[t].topic, topic, n) == 0) return (bus_type_t)t;
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

// True when every byte is 0x01..0x7f (most of our strings: ids, statuses), eight at a time, with
// no branch per word: a byte with its high bit set, or a zero byte, leaves a bit in `bad`.
static bool plain_ascii(const unsigned char *s, size_t n) {
    uint64_t bad = 0, w;
    size_t i = 0;
    for (; n - i >= 8; i += 8) {
        memcpy(&w, s + i, sizeof w);
        bad |= (w | ((w - ALL_BYTES(0x01)) & ~w)) & ALL_BYTES(0x80);
    }
    if (i < n && n >= 8) {   // the tail, as the last eight bytes (overlapping what was checked)
        memcpy(&w, s + n - 8, sizeof w);
        bad |= (w | ((w - ALL_BYTES(0x01)) & ~w)) & ALL_BYTES(0x80);
    } else {
        for (; i < n; i++) bad |= (uint64_t)(s[i] == 0 || s[i] >= 0x80);
    }
    return bad == 0;
}

// Strict UTF-8: no overlong forms, no surrogates, nothing above U+10FFFF, no NUL.
static bool text_valid(const unsigned char *s, size_t n) {
    if (plain_ascii(s, n)) return true;
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

// The packer's output: the caller's buffer, never grown (BUS_BODY_MAX bounds every body).
typedef struct {
    unsigned char *data;
    size_t size;
    size_t len;
} out_buf_t;

static int out_write(void *data, const char *buf, size_t len) {
    out_buf_t *out = data;
    if (len > out->size - out->len) return -1;
    memcpy(out->data + out->len, buf, len);
    out->len += len;
    return 0;
}

int bus_encode_to(const bus_msg_t *msg, void *buf, size_t size, size_t *len) {
    assert(msg && buf && len);
    if (!type_valid(msg->type)) return BUS_E_TOPIC;
    size_t nfields;
    const field_desc_t *fields = types[msg->type].fields(&nfields);
    const char *base = (const char *)&msg->u;

    out_buf_t out = {buf, size, 0};
    msgpack_packer pk;
    msgpack_packer_init(&pk, &out, out_write);
    // A write refused for want of room is reported as BUS_E_NOMEM by the packing helpers; with
    // the caller's buffer that means "too small".
    int rc = BUS_OK;
    if (msgpack_pack_array(&pk, 3 + nfields) != 0 || msgpack_pack_int(&pk, BUS_WIRE_VERSION) != 0)
        rc = BUS_E_NOMEM;
    if (rc == BUS_OK) rc = pack_text(&pk, msg->from, sizeof msg->from);
    if (rc == BUS_OK && msgpack_pack_int64(&pk, msg->ts_us) != 0) rc = BUS_E_NOMEM;
    for (size_t i = 0; rc == BUS_OK && i < nfields; i++) rc = pack_field(&pk, &fields[i], base);
    if (rc == BUS_E_NOMEM) rc = BUS_E_RANGE;
    if (rc == BUS_OK) *len = out.len;
    return rc;
}

int bus_encode(const bus_msg_t *msg, char **buf, size_t *len) {
    assert(msg && buf && len);
    unsigned char body[BUS_BODY_MAX];
    size_t n;
    int rc = bus_encode_to(msg, body, sizeof body, &n);
    if (rc != BUS_OK) return rc;
    char *copy = malloc(n);
    if (!copy) return BUS_E_NOMEM;
    memcpy(copy, body, n);
    *buf = copy;
    *len = n;
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

// One msgpack object of a body that scan_body accepted: every length in it is within the body,
// so the reader needs no bounds checks. Containers are entered (the cursor stops at their first
// element); the decoder stops at the first value of a type it does not expect, so nothing is
// ever skipped.
typedef enum { VAL_OTHER, VAL_UINT, VAL_NINT, VAL_STR, VAL_BOOL, VAL_ARRAY } val_kind_t;

typedef struct {
    val_kind_t kind;
    uint64_t u;                 // VAL_UINT; VAL_ARRAY: element count
    int64_t i;                  // VAL_NINT
    const unsigned char *str;   // VAL_STR
    size_t len;                 // VAL_STR
    bool b;                     // VAL_BOOL
} val_t;

// A signed msgpack integer: as msgpack-c does, one that is not negative counts as unsigned.
static void signed_val(val_t *v, int64_t x) {
    if (x < 0) {
        v->kind = VAL_NINT;
        v->i = x;
    } else {
        v->kind = VAL_UINT;
        v->u = (uint64_t)x;
    }
}

static void str_val(val_t *v, const unsigned char **p, size_t lenbytes) {
    v->kind = VAL_STR;
    v->len = (size_t)read_be(*p, lenbytes);
    v->str = *p + lenbytes;
    *p = v->str + v->len;
}

static void read_val(const unsigned char **p, val_t *v) {
    unsigned char b = *(*p)++;
    v->kind = VAL_OTHER;
    if (b <= 0x7f) {
        v->kind = VAL_UINT;
        v->u = b;
    } else if (b >= 0xe0) {
        signed_val(v, (int8_t)b);
    } else if (b >= 0xa0 && b <= 0xbf) {
        v->kind = VAL_STR;
        v->len = b & 0x1fu;
        v->str = *p;
        *p += v->len;
    } else if (b >= 0x90 && b <= 0x9f) {
        v->kind = VAL_ARRAY;
        v->u = b & 0x0fu;
    } else {
        switch (b) {
        case 0xc2: case 0xc3: v->kind = VAL_BOOL; v->b = b == 0xc3; break;
        case 0xcc: v->kind = VAL_UINT; v->u = read_be(*p, 1); *p += 1; break;
        case 0xcd: v->kind = VAL_UINT; v->u = read_be(*p, 2); *p += 2; break;
        case 0xce: v->kind = VAL_UINT; v->u = read_be(*p, 4); *p += 4; break;
        case 0xcf: v->kind = VAL_UINT; v->u = read_be(*p, 8); *p += 8; break;
        case 0xd0: signed_val(v, (int8_t)read_be(*p, 1)); *p += 1; break;
        case 0xd1: signed_val(v, (int16_t)read_be(*p, 2)); *p += 2; break;
        case 0xd2: signed_val(v, (int32_t)read_be(*p, 4)); *p += 4; break;
        case 0xd3: signed_val(v, (int64_t)read_be(*p, 8)); *p += 8; break;
        case 0xd9: str_val(v, p, 1); break;
        case 0xda: str_val(v, p, 2); break;
        case 0xdb: str_val(v, p, 4); break;
        case 0xdc: v->kind = VAL_ARRAY; v->u = read_be(*p, 2); *p += 2; break;
        case 0xdd: v->kind = VAL_ARRAY; v->u = read_be(*p, 4); *p += 4; break;
        default: break;   // nil, float, bin, ext, map: never what a field holds
        }
    }
}

static int unpack_text(const val_t *v, char *dst, size_t size) {
    if (v->kind != VAL_STR) return BUS_E_TYPE;
    size_t n = v->len;
    if (n >= size) return BUS_E_RANGE;
    if (n > 0) {
        if (!text_valid(v->str, n)) return BUS_E_TYPE;
        memcpy(dst, v->str, n);
    }
    dst[n] = '\0';
    return BUS_OK;
}

static int unpack_i64(const val_t *v, int64_t *out) {
    if (v->kind == VAL_UINT) {
        if (v->u > (uint64_t)INT64_MAX) return BUS_E_RANGE;
        *out = (int64_t)v->u;
        return BUS_OK;
    }
    if (v->kind == VAL_NINT) {
        *out = v->i;
        return BUS_OK;
    }
    return BUS_E_TYPE;
}

static int unpack_field(const val_t *v, const field_desc_t *f, char *base) {
    char *p = base + f->offset;
    switch (f->kind) {
    case FIELD_STR:
    case FIELD_PII:
        return unpack_text(v, p, f->size);
    case FIELD_I64: {
        int64_t x;
        int rc = unpack_i64(v, &x);
        if (rc == BUS_OK) memcpy(p, &x, sizeof x);
        return rc;
    }
    case FIELD_BOOL: {
        if (v->kind != VAL_BOOL) return BUS_E_TYPE;
        memcpy(p, &v->b, sizeof v->b);
        return BUS_OK;
    }
    }
    return BUS_E_TYPE;
}

// Decodes a body scan_body accepted into *out (which may be left half-filled on error).
static int unpack_body(const unsigned char *p, bus_type_t type, bus_msg_t *out) {
    size_t nfields;
    const field_desc_t *fields = types[type].fields(&nfields);
    val_t v;
    read_val(&p, &v);
    if (v.kind != VAL_ARRAY || v.u == 0) return BUS_E_FORMAT;
    uint64_t items = v.u;

    // The version comes first: a newer sender may well have a different number of fields.
    read_val(&p, &v);
    if (v.kind == VAL_NINT) return BUS_E_VERSION;
    if (v.kind != VAL_UINT) return BUS_E_TYPE;
    if (v.u != BUS_WIRE_VERSION) return BUS_E_VERSION;
    if (items != 3 + nfields) return BUS_E_FORMAT;

    // Only the header and this type's member: the whole union is several KiB (http.reply).
    memset(out, 0, offsetof(bus_msg_t, u) + types[type].size);
    out->type = type;
    read_val(&p, &v);
    int rc = unpack_text(&v, out->from, sizeof out->from);
    if (rc == BUS_OK) {
        read_val(&p, &v);
        rc = unpack_i64(&v, &out->ts_us);
    }
    char *base = (char *)&out->u;
    for (size_t i = 0; rc == BUS_OK && i < nfields; i++) {
        read_val(&p, &v);
        rc = unpack_field(&v, &fields[i], base);
    }
    return rc;
}

int bus_decode(const char *topic, const void *buf, size_t len, bus_msg_t *msg) {
    assert(msg);
    bus_type_t type = bus_type_from_topic(topic);
    if (type == BUS_NONE) return BUS_E_TOPIC;
    if (!buf || len == 0 || !scan_body(buf, len)) return BUS_E_FORMAT;
    bus_msg_t tmp;
    int rc = unpack_body(buf, type, &tmp);
    if (rc == BUS_OK) memcpy(msg, &tmp, offsetof(bus_msg_t, u) + types[type].size);
    return rc;
}

// ---- trace batches ----------------------------------------------------------------------------

int bus_batch_next(const void *batch, size_t len, size_t *pos, bus_record_t *rec) {
    assert(pos && rec);
    const unsigned char *p = batch;
    size_t at = *pos;
    if (at >= len) return 0;
    if (len - at < BUS_TRACE_RECORD_HEAD) return BUS_E_FORMAT;
    size_t tl = p[at];
    if (tl == 0 || tl > BUS_TRACE_TOPIC_MAX || len - at - BUS_TRACE_RECORD_HEAD < tl) return BUS_E_FORMAT;
    size_t bl = (size_t)read_be(p + at + 1 + tl, 4);
    size_t head = BUS_TRACE_RECORD_HEAD + tl;
    if (len - at - head < bl) return BUS_E_FORMAT;
    rec->topic = p + at + 1;
    rec->topic_len = tl;
    rec->body = p + at + head;
    rec->body_len = bl;
    *pos = at + head + bl;
    return 1;
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
