// realtime/cidr.h — a list of IPv4/IPv6 CIDR blocks and a membership test, for address-based
// access rules such as http.metrics_from ("127.0.0.0/8,::1/128").
//
// Parsed once at start (inet_pton, no name resolution); matching is a few byte compares and never
// allocates. An IPv4-mapped IPv6 address (::ffff:a.b.c.d), which a dual-stack listener reports for
// IPv4 clients, is matched as the IPv4 address a.b.c.d; a mapped block in the list
// (::ffff:10.0.0.0/104) is likewise stored as its IPv4 block (10.0.0.0/8).
// A value is immutable after cidr_list_new, so it could be shared read-only between threads.
#ifndef SWEETY_CIDR_H
#define SWEETY_CIDR_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#define CIDR_LIST_MAX 64

typedef struct cidr_list_t cidr_list_t;

// Parses a comma-separated list of "address/prefix" or bare addresses (a bare address is a /32 or
// /128); blanks around items are ignored; an empty string gives an empty list (matches nothing).
// Host bits past the prefix are ignored. On a malformed item returns NULL and writes a message
// naming it into err (when err is not NULL).
cidr_list_t *cidr_list_new(const char *spec, char *err, size_t errlen);
void cidr_list_destroy(cidr_list_t **self_p);

size_t cidr_list_size(const cidr_list_t *self);

// True when the address (AF_INET or AF_INET6 sockaddr) lies in one of the blocks.
bool cidr_list_match(const cidr_list_t *self, const struct sockaddr *sa, socklen_t salen);
// Same for a numeric address in text form ("10.1.2.3", "::1"); false when it does not parse.
bool cidr_list_match_text(const cidr_list_t *self, const char *address);

#endif
