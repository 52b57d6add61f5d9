// tests/unit/curl_reply.h — collecting a libcurl answer (status, body, headers) in unit tests that
// talk to an in-process HTTP actor. Header-only.
#ifndef SWEETY_TEST_CURL_REPLY_H
#define SWEETY_TEST_CURL_REPLY_H

#include <curl/curl.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    CURLcode rc;
    long status;
    char *body;              // malloc'ed, NUL-terminated
    size_t len;
    char headers[8192];      // raw response headers (cut at the buffer's size)
    size_t hlen;
    long connects;           // new connections curl opened for this request
} reply_t;

// CURLOPT_WRITEFUNCTION with CURLOPT_WRITEDATA = reply_t *.
static inline size_t on_body(char *data, size_t size, size_t n, void *arg) {
    reply_t *r = arg;
    size_t add = size * n;
    char *body = realloc(r->body, r->len + add + 1);
    if (!body) return 0;
    memcpy(body + r->len, data, add);
    r->len += add;
    body[r->len] = '\0';
    r->body = body;
    return add;
}

// CURLOPT_HEADERFUNCTION with CURLOPT_HEADERDATA = reply_t *.
static inline size_t on_header(char *data, size_t size, size_t n, void *arg) {
    reply_t *r = arg;
    size_t add = size * n;
    if (r->hlen + add < sizeof r->headers) {
        memcpy(r->headers + r->hlen, data, add);
        r->hlen += add;
        r->headers[r->hlen] = '\0';
    }
    return add;
}

static inline void reply_clear(reply_t *r) {
    free(r->body);
    memset(r, 0, sizeof *r);
}

#endif
