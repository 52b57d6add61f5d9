// tests/unit/script_server.h — the plumbing of the scripted HTTP servers that unit tests run in
// their own process (test_httpc.c, test_vapi_client.c), header-only so that tests/CMakeLists.txt
// needs no new source: a listening socket on 127.0.0.1 with a stop pipe, reading a request head,
// finding a header, sending a whole buffer. What a server answers (its script) stays in each test.
#ifndef SWEETY_TESTS_UNIT_SCRIPT_SERVER_H
#define SWEETY_TESTS_UNIT_SCRIPT_SERVER_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <stddef.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

static inline void send_all(int fd, const char *buf, size_t len) {
    while (len) {
        ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
        if (n <= 0) return;
        buf += n;
        len -= (size_t)n;
    }
}

// Copies header `name`'s value (case-insensitive name, leading blanks skipped, cut to size) from a
// request head into out. out, or NULL when the head has no such header (out is then "").
static inline const char *header_value(const char *head, const char *name, char *out, size_t size) {
    size_t nl = strlen(name);
    out[0] = '\0';
    for (const char *l = strstr(head, "\r\n"); l && l[2]; l = strstr(l + 2, "\r\n")) {
        const char *h = l + 2;
        if (strncasecmp(h, name, nl) == 0 && h[nl] == ':') {
            h += nl + 1;
            while (*h == ' ') h++;
            size_t n = strcspn(h, "\r\n");
            if (n >= size) n = size - 1;
            memcpy(out, h, n);
            out[n] = '\0';
            return out;
        }
    }
    return NULL;
}

// Opens the stop pipe and a socket listening on 127.0.0.1 at a free port (in *port). 0 or -1.
static inline int script_listen(int *lfd, int *port, int stop[2], int backlog) {
    if (pipe(stop) != 0) return -1;
    *lfd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(*lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    if (bind(*lfd, (struct sockaddr *)&a, sizeof a) != 0 || listen(*lfd, backlog) != 0 ||
        getsockname(*lfd, (struct sockaddr *)&a, &al) != 0)
        return -1;
    *port = ntohs(a.sin_port);
    return 0;
}

// Tells the server's threads to stop (they poll stop[0]).
static inline void script_signal_stop(int stop[2]) {
    ssize_t w = write(stop[1], "x", 1);
    (void)w;
}

// Closes what script_listen opened.
static inline void script_close(int lfd, int stop[2]) {
    close(lfd);
    close(stop[0]);
    close(stop[1]);
}

// Reads from fd into buf (NUL-terminated, *len bytes) until the end of the request head, giving
// up after 5 s of silence, on EOF, when buf is full or when stop_fd becomes readable. The "\r\n\r\n"
// that ends the head, or NULL.
static inline char *script_read_head(int fd, int stop_fd, char *buf, size_t size, size_t *len) {
    char *end = NULL;
    *len = 0;
    buf[0] = '\0';
    while (!end && *len < size - 1) {
        struct pollfd p[2] = {{.fd = fd, .events = POLLIN}, {.fd = stop_fd, .events = POLLIN}};
        if (poll(p, 2, 5000) <= 0 || p[1].revents) return NULL;
        ssize_t n = recv(fd, buf + *len, size - 1 - *len, 0);
        if (n <= 0) return NULL;
        *len += (size_t)n;
        buf[*len] = '\0';
        end = strstr(buf, "\r\n\r\n");
    }
    return end;
}

#endif
