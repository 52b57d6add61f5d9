// sandbox/exchange.h — one HTTP exchange as the provider modules see it: a decoded request and
// the response they fill in. This is the codec between libwebsockets (main.c, the only code that
// touches lws) and the provider logic (stripe.c, cryptomus.c, control.c), which therefore never
// see a wsi and can be read, and tested, as plain functions of a request.
//
// Everything here runs on the lws service thread.
#ifndef SWEETY_SANDBOX_EXCHANGE_H
#define SWEETY_SANDBOX_EXCHANGE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SB_BODY_MAX (64 * 1024)   // larger request bodies get 413
#define SB_MAX_HEADERS 10

typedef struct {
    char method[8];
    char *path;             // decoded path without the query or the optional "/<provider>" mount
    json_t *query;          // decoded query parameters: object of strings ("a[]" becomes "a[0]", …)
    char *body;             // raw bytes exactly as received, NUL-terminated (may contain NULs)
    size_t body_len;
    json_t *form;           // the body decoded as application/x-www-form-urlencoded, or NULL
    json_t *json;           // the body parsed as JSON, or NULL
    // the headers that matter (NULL when absent)
    char *authorization, *content_type, *idempotency_key, *stripe_version, *merchant, *sign;
    bool loopback;          // the peer is 127.0.0.0/8 or ::1
    char request_id[32];    // "req_…", also sent back as the Request-Id header
    int64_t delay_ms;       // > 0 when a fault holds the answer back: the request is "in flight"
} sb_request_t;

void sb_request_clear(sb_request_t *req);
// Fills req->form (form content type, or an empty body) and req->json (any body that parses as
// JSON, whatever its content type) from req->body.
void sb_request_decode_body(sb_request_t *req);
bool sb_content_type_is(const sb_request_t *req, const char *mime);   // case-insensitive, params ignored

// Decodes "a=1&b%5Bc%5D=x+y" into {"a":"1","b[c]":"x y"} with curl_easy_unescape. Keys ending in
// "[]" get explicit indexes in order ("expand[]" -> "expand[0]", "expand[1]"). A repeated key keeps
// its last value. NULL when the text is not valid form encoding.
json_t *sb_form_decode(const char *text, size_t len);

typedef struct {
    char *name;   // as sent, e.g. "Request-Id"
    char *value;
} sb_header_t;

typedef struct {
    int status;                 // 0 until a handler answered
    const char *content_type;   // static string
    char *body;
    size_t body_len;
    sb_header_t headers[SB_MAX_HEADERS];
    int n_headers;
} sb_response_t;

void sb_response_clear(sb_response_t *resp);
// Each sb_respond_* replaces whatever the response held (headers are kept).
void sb_respond_json(sb_response_t *resp, int status, json_t *obj);   // steals obj; compact JSON
void sb_respond_bytes(sb_response_t *resp, int status, const char *content_type, const char *body, size_t len);
void sb_respond_take(sb_response_t *resp, int status, const char *content_type, char *body, size_t len);
void sb_respond_redirect(sb_response_t *resp, const char *location);   // 303 See Other
void sb_response_header(sb_response_t *resp, const char *name, const char *value);   // copies both
// {"error":"<message>"}: the control API's error shape.
void sb_respond_error(sb_response_t *resp, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
// A small HTML page (the hosted checkout pages): `title` is escaped, `inner_html` is used as is.
void sb_respond_page(sb_response_t *resp, int status, const char *title, const char *inner_html);
const char *sb_response_get_header(const sb_response_t *resp, const char *name);

#endif
