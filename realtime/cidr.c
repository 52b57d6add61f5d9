// realtime/cidr.c — see cidr.h. Addresses are kept in network byte order: 4 bytes for IPv4 blocks,
// 16 for IPv6 ones, so a match is "the first `prefix` bits are equal".
#include "realtime/cidr.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    int family;              // AF_INET or AF_INET6
    unsigned char addr[16];  // network order; only the first 4 bytes for AF_INET
    unsigned prefix;         // 0..32 or 0..128
} cidr_t;

struct cidr_list_t {
    size_t count;
    cidr_t items[CIDR_LIST_MAX];
};

static const unsigned char v4_mapped_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

static bool prefix_equal(const unsigned char *a, const unsigned char *b, unsigned bits) {
    unsigned whole = bits / 8, rest = bits % 8;
    if (whole && memcmp(a, b, whole) != 0) return false;
    if (rest == 0) return true;
    unsigned char mask = (unsigned char)(0xff << (8 - rest));
    return (a[whole] & mask) == (b[whole] & mask);
}

static void clear_host_bits(unsigned char *addr, size_t len, unsigned bits) {
    for (size_t i = 0; i < len; i++) {
        unsigned start = (unsigned)i * 8;
        if (start >= bits) addr[i] = 0;
        else if (start + 8 > bits) addr[i] &= (unsigned char)(0xff << (8 - (bits - start)));
    }
}

static int parse_prefix(const char *text, unsigned max, unsigned *out) {
    if (!*text || strlen(text) > 3) return -1;
    unsigned v = 0;
    for (const char *c = text; *c; c++) {
        if (*c < '0' || *c > '9') return -1;
        v = v * 10 + (unsigned)(*c - '0');
    }
    if (v > max) return -1;
    *out = v;
    return 0;
}

// Parses one trimmed item into *out. 0 or -1.
static int parse_item(const char *item, cidr_t *out) {
    char addr[INET6_ADDRSTRLEN + 1];
    const char *slash = strchr(item, '/');
    size_t alen = slash ? (size_t)(slash - item) : strlen(item);
    if (alen == 0 || alen >= sizeof addr) return -1;
    memcpy(addr, item, alen);
    addr[alen] = '\0';

    cidr_t c;
    memset(&c, 0, sizeof c);
    unsigned max;
    if (inet_pton(AF_INET, addr, c.addr) == 1) {
        c.family = AF_INET;
        max = 32;
    } else if (inet_pton(AF_INET6, addr, c.addr) == 1) {
        c.family = AF_INET6;
        max = 128;
    } else {
        return -1;
    }
    c.prefix = max;
    if (slash && parse_prefix(slash + 1, max, &c.prefix) != 0) return -1;

    if (c.family == AF_INET6 && c.prefix >= 96 && memcmp(c.addr, v4_mapped_prefix, 12) == 0) {
        memmove(c.addr, c.addr + 12, 4);
        memset(c.addr + 4, 0, 12);
        c.family = AF_INET;
        c.prefix -= 96;
    }
    clear_host_bits(c.addr, c.family == AF_INET ? 4 : 16, c.prefix);
    *out = c;
    return 0;
}

cidr_list_t *cidr_list_new(const char *spec, char *err, size_t errlen) {
    cidr_list_t *self = calloc(1, sizeof *self);
    if (!self) {
        if (err) snprintf(err, errlen, "out of memory");
        return NULL;
    }
    const char *p = spec ? spec : "";
    while (*p) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        const char *s = p, *e = p + len;
        while (s < e && (*s == ' ' || *s == '\t')) s++;
        while (e > s && (e[-1] == ' ' || e[-1] == '\t')) e--;
        char item[128];
        size_t ilen = (size_t)(e - s);
        if (ilen == 0 || ilen >= sizeof item) {
            if (err) snprintf(err, errlen, "empty or overlong address block in '%.100s'", spec);
            cidr_list_destroy(&self);
            return NULL;
        }
        memcpy(item, s, ilen);
        item[ilen] = '\0';
        if (self->count == CIDR_LIST_MAX) {
            if (err) snprintf(err, errlen, "more than %d address blocks", CIDR_LIST_MAX);
            cidr_list_destroy(&self);
            return NULL;
        }
        if (parse_item(item, &self->items[self->count]) != 0) {
            if (err) snprintf(err, errlen, "not an address or address/prefix: '%s'", item);
            cidr_list_destroy(&self);
            return NULL;
        }
        self->count++;
        if (!comma) break;
        p = comma + 1;
        if (!*p) {   // trailing comma
            if (err) snprintf(err, errlen, "empty address block in '%.100s'", spec);
            cidr_list_destroy(&self);
            return NULL;
        }
    }
    return self;
}

void cidr_list_destroy(cidr_list_t **self_p) {
    if (!self_p || !*self_p) return;
    free(*self_p);
    *self_p = NULL;
}

size_t cidr_list_size(const cidr_list_t *self) {
    return self ? self->count : 0;
}

static bool match_bytes(const cidr_list_t *self, int family, const unsigned char *addr) {
    for (size_t i = 0; i < self->count; i++) {
        const cidr_t *c = &self->items[i];
        if (c->family == family && prefix_equal(addr, c->addr, c->prefix)) return true;
    }
    return false;
}

bool cidr_list_match(const cidr_list_t *self, const struct sockaddr *sa, socklen_t salen) {
    if (!self || !sa) return false;
    if (sa->sa_family == AF_INET && salen >= (socklen_t)sizeof(struct sockaddr_in)) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        return match_bytes(self, AF_INET, (const unsigned char *)&in->sin_addr);
    }
    if (sa->sa_family == AF_INET6 && salen >= (socklen_t)sizeof(struct sockaddr_in6)) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        const unsigned char *b = (const unsigned char *)&in6->sin6_addr;
        if (memcmp(b, v4_mapped_prefix, 12) == 0) return match_bytes(self, AF_INET, b + 12);
        return match_bytes(self, AF_INET6, b);
    }
    return false;
}

bool cidr_list_match_text(const cidr_list_t *self, const char *address) {
    if (!address) return false;
    struct sockaddr_in in;
    struct sockaddr_in6 in6;
    memset(&in, 0, sizeof in);
    memset(&in6, 0, sizeof in6);
    if (inet_pton(AF_INET, address, &in.sin_addr) == 1) {
        in.sin_family = AF_INET;
        return cidr_list_match(self, (const struct sockaddr *)&in, sizeof in);
    }
    if (inet_pton(AF_INET6, address, &in6.sin6_addr) == 1) {
        in6.sin6_family = AF_INET6;
        return cidr_list_match(self, (const struct sockaddr *)&in6, sizeof in6);
    }
    return false;
}
