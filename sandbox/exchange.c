// sandbox/exchange.c — see exchange.h.
#include "sandbox/exchange.h"

#include <curl/curl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "sandbox/sbutil.h"

void sb_request_clear(sb_request_t *req) {
    free(req->path);
    json_decref(req->query);
    free(req->body);
    json_decref(req->form);
    json_decref(req->json);
    free(req->authorization);
    free(req->content_type);
    free(req->idempotency_key);
    free(req->stripe_version);
    free(req->merchant);
    free(req->sign);
    memset(req, 0, sizeof *req);
}

bool sb_content_type_is(const sb_request_t *req, const char *mime) {
    if (!req->content_type) return false;
    const char *ct = req->content_type;
    while (*ct == ' ') ct++;
    size_t n = strlen(mime);
    if (strncasecmp(ct, mime, n) != 0) return false;
    return ct[n] == '\0' || ct[n] == ';' || ct[n] == ' ';
}

void sb_request_decode_body(sb_request_t *req) {
    json_decref(req->form);
    json_decref(req->json);
    req->form = req->json = NULL;
    if (req->body_len == 0 || sb_content_type_is(req, "application/x-www-form-urlencoded"))
        req->form = sb_form_decode(req->body ? req->body : "", req->body_len);
    if (req->body_len > 0)   // whatever the content type: the control API is lenient, providers check it
        req->json = json_loadb(req->body, req->body_len, JSON_DECODE_ANY, NULL);
}

// Decodes one component: '+' means a space in form encoding, then %XX via curl_easy_unescape.
static char *form_unescape(const char *s, size_t n) {
    char *plus = strndup(s, n);
    if (!plus) return NULL;
    for (char *p = plus; *p; p++)
        if (*p == '+') *p = ' ';
    for (const char *p = plus; *p; p++) {   // a '%' must start a valid escape
        if (*p == '%') {
            const char *h = p + 1;
            bool ok = h[0] && h[1] && strchr("0123456789abcdefABCDEF", h[0]) && strchr("0123456789abcdefABCDEF", h[1]);
            if (!ok) {
                free(plus);
                return NULL;
            }
        }
    }
    int outlen = 0;
    char *dec = curl_easy_unescape(NULL, plus, 0, &outlen);
    free(plus);
    if (!dec) return NULL;
    char *out = NULL;
    if (memchr(dec, '\0', (size_t)outlen) == NULL) out = strndup(dec, (size_t)outlen);   // no NULs inside
    curl_free(dec);
    return out;
}

json_t *sb_form_decode(const char *text, size_t len) {
    json_t *obj = json_object();
    if (!obj) return NULL;
    size_t i = 0;
    while (i < len) {
        size_t end = i;
        while (end < len && text[end] != '&') end++;
        if (end > i) {
            const char *eq = memchr(text + i, '=', end - i);
            size_t klen = eq ? (size_t)(eq - (text + i)) : end - i;
            char *key = form_unescape(text + i, klen);
            char *val = eq ? form_unescape(eq + 1, (size_t)(text + end - eq - 1)) : strdup("");
            if (!key || !val || !*key) {
                free(key);
                free(val);
                json_decref(obj);
                return NULL;
            }
            size_t kl = strlen(key);
            if (kl >= 2 && strcmp(key + kl - 2, "[]") == 0) {   // "a[]" -> next free "a[N]"
                char *indexed = malloc(kl + 24);
                if (!indexed) {
                    free(key);
                    free(val);
                    json_decref(obj);
                    return NULL;
                }
                for (int n = 0;; n++) {
                    snprintf(indexed, kl + 24, "%.*s[%d]", (int)(kl - 2), key, n);
                    if (!json_object_get(obj, indexed)) break;
                }
                free(key);
                key = indexed;
            }
            json_object_set_new(obj, key, json_string(val));
            free(key);
            free(val);
        }
        i = end + 1;
    }
    return obj;
}

void sb_response_clear(sb_response_t *resp) {
    free(resp->body);
    for (int i = 0; i < resp->n_headers; i++) {
        free(resp->headers[i].name);
        free(resp->headers[i].value);
    }
    memset(resp, 0, sizeof *resp);
}

void sb_respond_take(sb_response_t *resp, int status, const char *content_type, char *body, size_t len) {
    free(resp->body);
    resp->status = status;
    resp->content_type = content_type;
    resp->body = body;
    resp->body_len = body ? len : 0;
}

void sb_respond_bytes(sb_response_t *resp, int status, const char *content_type, const char *body, size_t len) {
    char *copy = malloc(len + 1);
    if (copy) {
        memcpy(copy, body, len);
        copy[len] = '\0';
    }
    sb_respond_take(resp, copy ? status : 500, content_type, copy, copy ? len : 0);
}

void sb_respond_json(sb_response_t *resp, int status, json_t *obj) {
    char *text = obj ? json_dumps(obj, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    json_decref(obj);
    if (!text) {
        sb_respond_bytes(resp, 500, "application/json", "{\"error\":\"out of memory\"}", 25);
        return;
    }
    sb_respond_take(resp, status, "application/json", text, strlen(text));
}

void sb_respond_redirect(sb_response_t *resp, const char *location) {
    sb_respond_take(resp, 303, "text/plain", NULL, 0);
    sb_response_header(resp, "Location", location);
}

void sb_response_header(sb_response_t *resp, const char *name, const char *value) {
    for (int i = 0; i < resp->n_headers; i++) {
        if (strcasecmp(resp->headers[i].name, name) == 0) {
            char *v = strdup(value);
            if (!v) return;
            free(resp->headers[i].value);
            resp->headers[i].value = v;
            return;
        }
    }
    if (resp->n_headers >= SB_MAX_HEADERS) return;
    char *n = strdup(name), *v = strdup(value);
    if (!n || !v) {
        free(n);
        free(v);
        return;
    }
    resp->headers[resp->n_headers].name = n;
    resp->headers[resp->n_headers].value = v;
    resp->n_headers++;
}

const char *sb_response_get_header(const sb_response_t *resp, const char *name) {
    for (int i = 0; i < resp->n_headers; i++)
        if (strcasecmp(resp->headers[i].name, name) == 0) return resp->headers[i].value;
    return NULL;
}

void sb_respond_error(sb_response_t *resp, int status, const char *fmt, ...) {
    char message[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, sizeof message, fmt, ap);
    va_end(ap);
    sb_respond_json(resp, status, json_pack("{s:s}", "error", message));
}

void sb_respond_page(sb_response_t *resp, int status, const char *title, const char *inner_html) {
    char *t = sb_html_escape(title);
    sb_buf_t b = {0};
    sb_buf_printf(&b,
                  "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                  "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
                  "<title>%s</title><style>"
                  "body{font-family:system-ui,sans-serif;background:#f4f5f7;margin:0;padding:3rem 1rem}"
                  "main{max-width:26rem;margin:auto;background:#fff;border-radius:12px;padding:2rem;"
                  "box-shadow:0 2px 12px rgba(0,0,0,.08)}"
                  ".badge{display:inline-block;background:#ffde92;color:#6b4a00;border-radius:4px;"
                  "padding:.1rem .5rem;font-size:.75rem;font-weight:600}"
                  ".amount{font-size:2rem;font-weight:700;margin:.5rem 0 1.5rem}"
                  "form{display:inline-block;margin:.25rem .5rem .25rem 0}"
                  "button{font-size:1rem;padding:.6rem 1.4rem;border-radius:6px;border:1px solid #ccc;"
                  "background:#fff;cursor:pointer}button.primary{background:#635bff;color:#fff;border-color:#635bff}"
                  "</style></head><body><main><span class=\"badge\">TEST MODE &middot; sweety-sandbox</span>"
                  "<h1>%s</h1>%s</main></body></html>\n",
                  t ? t : "", t ? t : "", inner_html ? inner_html : "");
    free(t);
    size_t len = 0;
    char *html = sb_buf_take(&b, &len);
    if (html)
        sb_respond_take(resp, status, "text/html; charset=utf-8", html, len);
    else
        sb_respond_error(resp, 500, "out of memory");
}
