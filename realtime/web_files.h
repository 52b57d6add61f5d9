// realtime/web_files.h — the web pages and their assets, read from http.web_root once at start and
// served from memory by the HTTP actor.
//
// URL of a file: its path under the root, except that a page (NAME.html) is reached without its
// extension ("waiting.html" → "/waiting", "index.html" → "/", "help/index.html" → "/help/"), and
// "404.html" is not reachable at all: it is the answer for every unknown path. Skipped: names that
// start with ".", "node_modules", the npm manifests, symbolic links, and any file whose extension
// has no content type below (so sources, maps and notes in the folder are never published).
//
// Each file gets a strong ETag (SHA-256 of its bytes, first 128 bits) and a Cache-Control policy:
// pages, scripts and styles are revalidated on every use ("no-cache", then a 304 when the ETag
// still matches) so that a deploy never mixes old and new modules; fonts and images are kept a week.
//
// Not thread-safe; the HTTP actor's one thread owns the set.
#ifndef SWEETY_WEB_FILES_H
#define SWEETY_WEB_FILES_H

#include <stdbool.h>
#include <stddef.h>

#include "common/log.h"

#define WEB_FILE_MAX (4u * 1024 * 1024)       // one file at most
#define WEB_TOTAL_MAX (64u * 1024 * 1024)     // all files together at most
#define WEB_FILES_MAX 2048                    // files at most
#define WEB_DEPTH_MAX 8                       // folder depth at most
#define WEB_ETAG_LEN 34                       // "\"" + 32 hex + "\""

typedef struct {
    char *url;                   // "/", "/waiting", "/assets/css/site.css"
    char *body;
    size_t len;
    const char *content_type;    // static string
    const char *cache_control;   // static string
    char etag[WEB_ETAG_LEN + 1];
    bool page;                   // an HTML document
} web_file_t;

typedef struct web_files web_files_t;

// Reads every servable file under root. A missing root gives an empty set (every path is then the
// built-in 404 page) and a warning; an unreadable file, a file over WEB_FILE_MAX or a set over the
// limits is an error (-1, logged): a daemon should not start with half its pages.
int web_files_load(const char *root, const logger_t *log, web_files_t **out);
void web_files_destroy(web_files_t **self);

// The file at this URL path (no query string), or NULL.
const web_file_t *web_files_find(const web_files_t *self, const char *url);
// The 404 page: root/404.html when present, else a built-in one. Never NULL.
const web_file_t *web_files_not_found(const web_files_t *self);
size_t web_files_count(const web_files_t *self);
size_t web_files_bytes(const web_files_t *self);

// Whether an If-None-Match header value (a list of entity tags, or "*") matches etag, with the weak
// comparison RFC 9110 §13.1.2 prescribes for GET.
bool web_etag_matches(const char *if_none_match, const char *etag);

// The content type for a file name by its extension, or NULL when it is not served.
const char *web_content_type(const char *name);

#endif
