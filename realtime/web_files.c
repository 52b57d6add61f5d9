// realtime/web_files.c — see web_files.h.
#include "realtime/web_files.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

struct web_files {
    web_file_t *files;       // sorted by url
    size_t count, cap;
    size_t bytes;
    web_file_t not_found;    // 404.html, or the built-in page
};

static const char builtin_404[] =
    "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
    "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>Page not found</title></head>\n"
    "<body><h1>Page not found</h1><p>There is nothing at this address.</p>"
    "<p><a href=\"/\">Go to the start page</a></p></body></html>\n";

static const char cache_revalidate[] = "no-cache";
static const char cache_week[] = "public, max-age=604800";

typedef struct {
    const char *ext;
    const char *type;
    const char *cache;
} media_t;

static const media_t media[] = {
    {".html", "text/html; charset=utf-8", cache_revalidate},
    {".css", "text/css; charset=utf-8", cache_revalidate},
    {".js", "text/javascript; charset=utf-8", cache_revalidate},
    {".mjs", "text/javascript; charset=utf-8", cache_revalidate},
    {".txt", "text/plain; charset=utf-8", cache_revalidate},
    {".xml", "application/xml; charset=utf-8", cache_revalidate},
    {".webmanifest", "application/manifest+json", cache_revalidate},
    {".svg", "image/svg+xml", cache_week},
    {".png", "image/png", cache_week},
    {".ico", "image/x-icon", cache_week},
    {".woff2", "font/woff2", cache_week},
    {".woff", "font/woff", cache_week},
};

static const media_t *media_of(const char *name) {
    const char *dot = strrchr(name, '.');
    if (!dot || dot == name) return NULL;
    for (size_t i = 0; i < sizeof media / sizeof media[0]; i++)
        if (strcasecmp(dot, media[i].ext) == 0) return &media[i];
    return NULL;
}

const char *web_content_type(const char *name) {
    const media_t *m = media_of(name);
    return m ? m->type : NULL;
}

static bool skipped_name(const char *name) {
    return name[0] == '.' || strcmp(name, "node_modules") == 0 || strcmp(name, "package.json") == 0 ||
           strcmp(name, "package-lock.json") == 0;
}

static void etag_of(const char *body, size_t len, char out[WEB_ETAG_LEN + 1]) {
    static const char hex[] = "0123456789abcdef";
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (EVP_Digest(body, len, md, &mdlen, EVP_sha256(), NULL) != 1 || mdlen < 16) memset(md, 0, 16);
    out[0] = '"';
    for (int i = 0; i < 16; i++) {
        out[1 + 2 * i] = hex[md[i] >> 4];
        out[2 + 2 * i] = hex[md[i] & 15];
    }
    out[33] = '"';
    out[34] = '\0';
}

// Reads a regular file of at most WEB_FILE_MAX bytes. 0 ok; -1 error (errno-ish reason in *why).
static int read_file_at(int dirfd, const char *name, char **body, size_t *len, const char **why) {
    int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        *why = strerror(errno);
        return -1;
    }
    struct stat st;
    int rc = -1;
    char *buf = NULL;
    size_t got = 0;
    if (fstat(fd, &st) != 0) {
        *why = strerror(errno);
    } else if (!S_ISREG(st.st_mode)) {
        *why = "not a regular file";
    } else if (st.st_size < 0 || (uint64_t)st.st_size > WEB_FILE_MAX) {
        *why = "larger than the limit for one file";
    } else if (!(buf = malloc((size_t)st.st_size + 1))) {
        *why = "out of memory";
    } else {
        size_t size = (size_t)st.st_size;
        while (got < size) {
            ssize_t r = read(fd, buf + got, size - got);
            if (r < 0 && errno == EINTR) continue;
            if (r <= 0) break;
            got += (size_t)r;
        }
        if (got == size) {
            buf[got] = '\0';
            rc = 0;
        } else {
            *why = "short read";
        }
    }
    close(fd);
    if (rc != 0) {
        free(buf);
        return -1;
    }
    *body = buf;
    *len = got;
    return 0;
}

// The URL of a file at rel (its path under the root, without a leading "/"); NULL for 404.html at
// the top (kept aside) or on allocation failure (*oom set).
static char *url_of(const char *rel, bool page, bool *oom) {
    *oom = false;
    if (!page) {
        char *u = NULL;
        if (asprintf(&u, "/%s", rel) < 0) *oom = true;
        return *oom ? NULL : u;
    }
    size_t n = strlen(rel) - strlen(".html");
    const char *base = strrchr(rel, '/');
    base = base ? base + 1 : rel;
    char *u = NULL;
    if (strcmp(base, "index.html") == 0) n -= strlen("index");   // "help/index.html" → "/help/"
    if (asprintf(&u, "/%.*s", (int)n, rel) < 0) {
        *oom = true;
        return NULL;
    }
    return u;
}

static int add_file(web_files_t *self, char *url, char *body, size_t len, const media_t *m) {
    if (self->count == WEB_FILES_MAX) return -1;
    if (self->count == self->cap) {
        size_t cap = self->cap ? self->cap * 2 : 32;
        web_file_t *f = realloc(self->files, cap * sizeof *f);
        if (!f) return -1;
        self->files = f;
        self->cap = cap;
    }
    web_file_t *f = &self->files[self->count++];
    *f = (web_file_t){.url = url, .body = body, .len = len, .content_type = m->type, .cache_control = m->cache,
                      .page = strcmp(m->ext, ".html") == 0};
    etag_of(body, len, f->etag);
    self->bytes += len;
    return 0;
}

static int load_dir(web_files_t *self, int dirfd, const char *rel, int depth, const logger_t *log);

// One directory entry. 0 ok (also when skipped), -1 error (logged).
static int load_entry(web_files_t *self, int dirfd, const char *rel, const char *name, int depth, const logger_t *log) {
    if (skipped_name(name)) return 0;
    char path[1024];
    int n = snprintf(path, sizeof path, "%s%s%s", rel, rel[0] ? "/" : "", name);
    if (n < 0 || (size_t)n >= sizeof path) {
        log_error(log, "web.load_failed", "file=\"%s/%s\" reason=\"path too long\"", rel, name);
        return -1;
    }
    struct stat st;
    if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
        log_error(log, "web.load_failed", "file=\"%s\" reason=\"%s\"", path, strerror(errno));
        return -1;
    }
    if (S_ISDIR(st.st_mode)) {
        if (depth >= WEB_DEPTH_MAX) {
            log_error(log, "web.load_failed", "file=\"%s\" reason=\"folders nested too deep\"", path);
            return -1;
        }
        int sub = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
        if (sub < 0) {
            log_error(log, "web.load_failed", "file=\"%s\" reason=\"%s\"", path, strerror(errno));
            return -1;
        }
        return load_dir(self, sub, path, depth + 1, log);   // closes sub
    }
    const media_t *m = media_of(name);
    if (!S_ISREG(st.st_mode) || !m) return 0;   // links, sockets, unknown extensions: not published

    char *body = NULL;
    size_t len = 0;
    const char *why = "";
    if (read_file_at(dirfd, name, &body, &len, &why) != 0) {
        log_error(log, "web.load_failed", "file=\"%s\" reason=\"%s\"", path, why);
        return -1;
    }
    if (self->bytes + len > WEB_TOTAL_MAX) {
        free(body);
        log_error(log, "web.load_failed", "file=\"%s\" reason=\"the pages together exceed %u MiB\"", path,
                  WEB_TOTAL_MAX >> 20);
        return -1;
    }
    bool page = strcmp(m->ext, ".html") == 0;
    if (page && strcmp(path, "404.html") == 0) {
        self->not_found.body = body;
        self->not_found.len = len;
        etag_of(body, len, self->not_found.etag);
        return 0;
    }
    bool oom = false;
    char *url = url_of(path, page, &oom);
    if (!url || add_file(self, url, body, len, m) != 0) {
        free(url);
        free(body);
        log_error(log, "web.load_failed", "file=\"%s\" reason=\"%s\"", path,
                  self->count == WEB_FILES_MAX ? "too many files" : "out of memory");
        return -1;
    }
    return 0;
}

// Loads the directory open at dirfd (rel: its path under the root) and closes dirfd.
static int load_dir(web_files_t *self, int dirfd, const char *rel, int depth, const logger_t *log) {
    DIR *d = fdopendir(dirfd);
    if (!d) {
        close(dirfd);
        log_error(log, "web.load_failed", "file=\"%s\" reason=\"%s\"", rel, strerror(errno));
        return -1;
    }
    int rc = 0;
    struct dirent *e;
    while (rc == 0 && (e = readdir(d)) != NULL) rc = load_entry(self, dirfd, rel, e->d_name, depth, log);
    closedir(d);
    return rc;
}

static int by_url(const void *a, const void *b) {
    return strcmp(((const web_file_t *)a)->url, ((const web_file_t *)b)->url);
}

int web_files_load(const char *root, const logger_t *log, web_files_t **out) {
    *out = NULL;
    web_files_t *self = calloc(1, sizeof *self);
    if (!self) return -1;
    self->not_found = (web_file_t){.url = NULL, .content_type = media[0].type, .cache_control = cache_revalidate,
                                   .page = true};
    int dirfd = root && *root ? open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC) : -1;
    if (dirfd < 0) {
        log_warn(log, "web.missing", "root=\"%s\" reason=\"%s\" effect=\"every page is the built-in 404\"",
                 root ? root : "", root && *root ? strerror(errno) : "not configured");
    } else if (load_dir(self, dirfd, "", 0, log) != 0) {
        web_files_destroy(&self);
        return -1;
    }
    if (!self->not_found.body) {
        self->not_found.body = strdup(builtin_404);
        if (!self->not_found.body) {
            web_files_destroy(&self);
            return -1;
        }
        self->not_found.len = sizeof builtin_404 - 1;
        etag_of(self->not_found.body, self->not_found.len, self->not_found.etag);
    }
    if (self->count > 1) qsort(self->files, self->count, sizeof *self->files, by_url);
    log_info(log, "web.loaded", "root=\"%s\" files=%zu bytes=%zu", root ? root : "", self->count, self->bytes);
    *out = self;
    return 0;
}

void web_files_destroy(web_files_t **pself) {
    web_files_t *self = pself ? *pself : NULL;
    if (!self) return;
    for (size_t i = 0; i < self->count; i++) {
        free(self->files[i].url);
        free(self->files[i].body);
    }
    free(self->files);
    free(self->not_found.body);
    free(self);
    *pself = NULL;
}

const web_file_t *web_files_find(const web_files_t *self, const char *url) {
    if (!self || !url || self->count == 0) return NULL;
    web_file_t key = {.url = (char *)url};
    return bsearch(&key, self->files, self->count, sizeof *self->files, by_url);
}

const web_file_t *web_files_not_found(const web_files_t *self) { return &self->not_found; }
size_t web_files_count(const web_files_t *self) { return self ? self->count : 0; }
size_t web_files_bytes(const web_files_t *self) { return self ? self->bytes : 0; }

// The next entity tag of a list: skips separators, an optional W/ prefix, returns the quoted tag
// (quotes included) in *tag/*len and the rest of the list; NULL at the end or on a malformed list.
static const char *next_etag(const char *p, const char **tag, size_t *len) {
    while (*p == ' ' || *p == '\t' || *p == ',') p++;
    if (!*p) return NULL;
    if (p[0] == 'W' && p[1] == '/') p += 2;
    if (*p != '"') return NULL;
    const char *end = strchr(p + 1, '"');
    if (!end) return NULL;
    *tag = p;
    *len = (size_t)(end - p) + 1;
    return end + 1;
}

bool web_etag_matches(const char *inm, const char *etag) {
    if (!inm || !etag) return false;
    const char *p = inm;
    while (*p == ' ' || *p == '\t') p++;
    if (p[0] == '*' && (p[1] == '\0' || p[1] == ' ')) return true;
    size_t elen = strlen(etag);
    const char *tag;
    size_t len;
    while ((p = next_etag(p, &tag, &len)) != NULL)
        if (len == elen && memcmp(tag, etag, len) == 0) return true;
    return false;
}
