// conf/config.c — loads sweetyd's configuration (CONTRACT.md, "Configuration").
//
// Three layers, each overriding the one before: the built-in defaults, the INI file, and the
// environment (SWEETY_<SECTION>_<KEY>). Every key is declared once, in `keys[]` below, with its
// kind, default and range; the parser, the environment lookup, validation and config_require all
// walk that one table, so adding a key is one line there plus one field in config_t.
//
// Loading happens in two passes. The first collects raw text: the file's values (pointing into the
// file buffer, with their line numbers) and the environment's (pointing into environ, with the
// variable's name). The second resolves each key (environment wins over file wins over default),
// reads `*_file` secrets, validates, and copies the result into a config_t built on the side, which
// replaces the caller's only when everything succeeded. Errors name the key and where its value came
// from ("conf/x.conf:12" or "env SWEETY_HTTP_LISTEN"), never a secret's value.
//
// Unset optional strings (secrets, cryptomus.merchant) are NULL in config_t; an empty value counts as
// unset. Runs on the main thread before any other thread exists; there is no global mutable state.
#include "conf/config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/util.h"

extern char **environ;

#define CONFIG_DEFAULT_PATH "conf/sweetyd.conf"
#define CONFIG_MAX_FILE     (1024 * 1024)   // the INI file
#define CONFIG_MAX_LINE     4096            // one line of it, without the newline
#define CONFIG_MAX_SECRET   (64 * 1024)     // a *_file secret
#define CONFIG_ENV_PREFIX   "SWEETY_"
#define MASTER_KEY_BYTES    32
#define CIDRS_MAX           64              // blocks in http.metrics_from (CIDR_LIST_MAX)

const char *const config_daemon_required[] = {"security.master_key", "security.token_secret", NULL};

typedef enum {
    K_STR,       // string with a default, must not be empty
    K_OPTSTR,    // optional string: NULL when unset or empty
    K_SECRET,    // optional string that also has k_file; NULL when unset or empty
    K_INT,       // int64_t within [min, max]
    K_BOOL,      // bool
    K_LEVEL,     // log_level_t
    K_LISTEN,    // host:port, also fills http_listen_host/http_listen_port
    K_URL,       // http:// or https:// with a host
    K_CIDRS,     // comma-separated CIDRs
    K_ENDPOINT,  // ZeroMQ endpoint: ipc://, tcp://, inproc://
} key_kind_t;

enum {
    F_MASTER_KEY = 1 << 0,    // base64 of exactly 32 bytes when set
    F_DEFAULT_PUBLIC = 1 << 1,  // default: the value of http.public_url
};

typedef struct {
    const char *section;
    const char *name;
    key_kind_t kind;
    size_t off;          // offset of the field in config_t
    const char *def;     // default as text; NULL: none
    int64_t min, max;    // K_INT only
    unsigned flags;
} key_def_t;

#define FIELD(f) offsetof(config_t, f)

// Order matters where a key depends on an earlier one (cors_origin on public_url).
static const key_def_t keys[] = {
    {"db", "url", K_STR, FIELD(db_url), "postgresql:///sweety", 0, 0, 0},
    {"db", "pool", K_INT, FIELD(db_pool), "8", 1, 1000, 0},
    {"db", "migrate", K_BOOL, FIELD(db_migrate), "true", 0, 0, 0},
    {"http", "listen", K_LISTEN, FIELD(http_listen), "127.0.0.1:8080", 0, 0, 0},
    {"http", "public_url", K_URL, FIELD(http_public_url), "http://127.0.0.1:8080", 0, 0, 0},
    {"http", "cors_origin", K_URL, FIELD(http_cors_origin), NULL, 0, 0, F_DEFAULT_PUBLIC},
    {"http", "webhook_rate_per_min", K_INT, FIELD(http_webhook_rate_per_min), "100", 1, 1000000, 0},
    {"http", "booking_rate_per_min", K_INT, FIELD(http_booking_rate_per_min), "30", 1, 1000000, 0},
    {"http", "metrics_from", K_CIDRS, FIELD(http_metrics_from), "127.0.0.0/8,::1/128", 0, 0, 0},
    {"http", "web_root", K_STR, FIELD(http_web_root), "web", 0, 0, 0},
    {"log", "level", K_LEVEL, FIELD(log_level), "info", 0, 0, 0},
    {"stripe", "api_base", K_URL, FIELD(stripe_api_base), "https://api.stripe.com", 0, 0, 0},
    {"stripe", "secret_key", K_SECRET, FIELD(stripe_secret_key), NULL, 0, 0, 0},
    {"stripe", "webhook_secret", K_SECRET, FIELD(stripe_webhook_secret), NULL, 0, 0, 0},
    {"stripe", "webhook_secret_previous", K_SECRET, FIELD(stripe_webhook_secret_previous), NULL, 0, 0, 0},
    {"stripe", "tolerance_s", K_INT, FIELD(stripe_tolerance_s), "300", 0, 86400, 0},
    {"cryptomus", "api_base", K_URL, FIELD(cryptomus_api_base), "https://api.cryptomus.com", 0, 0, 0},
    {"cryptomus", "merchant", K_OPTSTR, FIELD(cryptomus_merchant), NULL, 0, 0, 0},
    {"cryptomus", "payment_key", K_SECRET, FIELD(cryptomus_payment_key), NULL, 0, 0, 0},
    {"cryptomus", "payment_key_previous", K_SECRET, FIELD(cryptomus_payment_key_previous), NULL, 0, 0, 0},
    {"vapi", "api_base", K_URL, FIELD(vapi_api_base), "https://api.vapi.ai", 0, 0, 0},
    {"vapi", "webhook_secret", K_SECRET, FIELD(vapi_webhook_secret), NULL, 0, 0, 0},
    {"vapi", "webhook_secret_previous", K_SECRET, FIELD(vapi_webhook_secret_previous), NULL, 0, 0, 0},
    {"vapi", "webhook_hmac_secret", K_SECRET, FIELD(vapi_webhook_hmac_secret), NULL, 0, 0, 0},
    {"vapi", "webhook_hmac_secret_previous", K_SECRET, FIELD(vapi_webhook_hmac_secret_previous), NULL, 0, 0, 0},
    {"security", "master_key", K_SECRET, FIELD(security_master_key), NULL, 0, 0, F_MASTER_KEY},
    {"security", "master_key_previous", K_SECRET, FIELD(security_master_key_previous), NULL, 0, 0, F_MASTER_KEY},
    {"security", "token_secret", K_SECRET, FIELD(security_token_secret), NULL, 0, 0, 0},
    {"security", "token_secret_previous", K_SECRET, FIELD(security_token_secret_previous), NULL, 0, 0, 0},
    {"security", "token_ttl_s", K_INT, FIELD(security_token_ttl_s), "604800", 60, 31536000, 0},
    {"scheduler", "max_retries", K_INT, FIELD(scheduler_max_retries), "3", 0, 100, 0},
    {"scheduler", "grace_s", K_INT, FIELD(scheduler_grace_s), "15", 0, 3600, 0},
    {"scheduler", "retry_base_s", K_INT, FIELD(scheduler_retry_base_s), "30", 1, 86400, 0},
    {"scheduler", "retry_max_s", K_INT, FIELD(scheduler_retry_max_s), "600", 1, 86400, 0},
    {"scheduler", "lease_s", K_INT, FIELD(scheduler_lease_s), "60", 2, 3600, 0},
    {"scheduler", "account_hold_s", K_INT, FIELD(scheduler_account_hold_s), "30", 1, 3600, 0},
    {"scheduler", "stale_call_s", K_INT, FIELD(scheduler_stale_call_s), "300", 2, 86400, 0},
    {"payments", "reconcile_after_s", K_INT, FIELD(payments_reconcile_after_s), "180", 1, 86400, 0},
    {"payments", "reconcile_every_s", K_INT, FIELD(payments_reconcile_every_s), "15", 1, 3600, 0},
    {"trace", "endpoint", K_ENDPOINT, FIELD(trace_endpoint), "ipc:///tmp/sweetyd-trace", 0, 0, 0},
    {"trace", "keep", K_INT, FIELD(trace_keep), "4096", 1000, 1000000, 0},
};

#define NKEYS (sizeof keys / sizeof keys[0])

// Variables the test harness sets for its own use; never reported as unknown.
static bool env_ignored(const char *name, size_t len) {
    static const char *const exact[] = {"SWEETY_BIN_DIR", "SWEETY_SOURCE_DIR"};
    if (len >= 12 && strncmp(name, "SWEETY_TEST_", 12) == 0) return true;
    for (size_t i = 0; i < sizeof exact / sizeof exact[0]; i++)
        if (strlen(exact[i]) == len && strncmp(name, exact[i], len) == 0) return true;
    return false;
}

// One layer's view of one key (or of a secret's k_file twin).
typedef struct {
    const char *file_val;   // points into the file buffer; NULL: not in the file
    int file_line;
    const char *env_val;    // points into environ; NULL: not in the environment
    char env_name[64];
} raw_t;

typedef struct {
    raw_t val[NKEYS];
    raw_t file[NKEYS];      // the k_file twin; used for K_SECRET only
    const char *path;       // the config file, for messages
    char where[NKEYS][128]; // where each resolved value came from, for checks across keys
} layers_t;

static void seterr(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void seterr(char *err, size_t errlen, const char *fmt, ...) {
    if (!err || errlen == 0) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

// --- small parsers --------------------------------------------------------------------------------

static char *trim(char *s) {
    while (*s == ' ' || *s == '\t') s++;
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t')) s[--n] = '\0';
    return s;
}

static bool all_digits(const char *s, size_t n) {
    if (n == 0) return false;
    for (size_t i = 0; i < n; i++)
        if (!isdigit((unsigned char)s[i])) return false;
    return true;
}

// A whole number: optional '-', then digits, nothing else (no spaces, no '+', no "0x").
static bool is_whole_number(const char *s) {
    if (*s == '-') s++;
    return all_digits(s, strlen(s));
}

static int parse_bool(const char *s, bool *out) {
    static const char *const yes[] = {"true", "yes", "on", "1"};
    static const char *const no[] = {"false", "no", "off", "0"};
    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(s, yes[i]) == 0) { *out = true; return 0; }
        if (strcasecmp(s, no[i]) == 0) { *out = false; return 0; }
    }
    return -1;
}

static int parse_port(const char *s, size_t n) {
    if (!all_digits(s, n) || n > 5) return -1;
    int port = 0;
    for (size_t i = 0; i < n; i++) port = port * 10 + (s[i] - '0');
    return (port >= 1 && port <= 65535) ? port : -1;
}

// An IPv4 address, or a host name (labels of letters, digits, '_' and '-', no '-' at either end).
static bool valid_host(const char *h, size_t n) {
    if (n == 0 || n > 253) return false;
    char buf[256];
    memcpy(buf, h, n);
    buf[n] = '\0';
    bool digits_and_dots = strspn(buf, "0123456789.") == n;
    if (digits_and_dots) {
        struct in_addr a;
        return inet_pton(AF_INET, buf, &a) == 1;
    }
    size_t label = 0;
    for (size_t i = 0; i <= n; i++) {
        char c = buf[i];
        if (c == '.' || c == '\0') {
            if (label == 0 || label > 63 || buf[i - 1] == '-') return false;
            label = 0;
        } else if (isalnum((unsigned char)c) || c == '-' || c == '_') {   // '_': container names
            if (label == 0 && c == '-') return false;
            label++;
        } else {
            return false;
        }
    }
    return true;
}

static bool valid_v6(const char *h, size_t n) {
    char buf[INET6_ADDRSTRLEN + 1];
    if (n == 0 || n >= sizeof buf) return false;
    memcpy(buf, h, n);
    buf[n] = '\0';
    struct in6_addr a;
    return inet_pton(AF_INET6, buf, &a) == 1;
}

// "host:port" or "[v6]:port". On success *host is a new string (brackets removed).
static int parse_listen(const char *s, char **host, int *port) {
    const char *h, *p;
    size_t hn;
    if (*s == '[') {
        const char *close = strchr(s, ']');
        if (!close || close[1] != ':') return -1;
        h = s + 1;
        hn = (size_t)(close - h);
        if (!valid_v6(h, hn)) return -1;
        p = close + 2;
    } else {
        const char *colon = strrchr(s, ':');
        if (!colon) return -1;
        h = s;
        hn = (size_t)(colon - s);
        if (memchr(h, ':', hn) || !valid_host(h, hn)) return -1;
        p = colon + 1;
    }
    int pn = parse_port(p, strlen(p));
    if (pn < 0) return -1;
    char *copy = strndup(h, hn);
    if (!copy) return -1;
    *host = copy;
    *port = pn;
    return 0;
}

// http(s)://host[:port][/path][?query][#fragment]; no user info, no spaces or control characters.
static bool valid_url(const char *s) {
    for (const char *c = s; *c; c++)
        if ((unsigned char)*c <= 0x20 || *c == 0x7f) return false;
    const char *rest;
    if (strncasecmp(s, "http://", 7) == 0) rest = s + 7;
    else if (strncasecmp(s, "https://", 8) == 0) rest = s + 8;
    else return false;
    size_t an = strcspn(rest, "/?#");
    if (an == 0 || memchr(rest, '@', an)) return false;
    const char *port = NULL;
    if (rest[0] == '[') {
        const char *close = memchr(rest, ']', an);
        if (!close || !valid_v6(rest + 1, (size_t)(close - rest - 1))) return false;
        if (close + 1 < rest + an) {
            if (close[1] != ':') return false;
            port = close + 2;
        }
    } else {
        const char *colon = memchr(rest, ':', an);
        size_t hn = colon ? (size_t)(colon - rest) : an;
        if (!valid_host(rest, hn)) return false;
        if (colon) port = colon + 1;
    }
    if (port && parse_port(port, (size_t)(rest + an - port)) < 0) return false;
    return true;
}

// "address/prefix" or a bare address (a /32 or /128), as realtime/cidr.c reads them.
static bool valid_cidr(const char *s, size_t n) {
    const char *slash = memchr(s, '/', n);
    size_t an = slash ? (size_t)(slash - s) : n, pn = slash ? n - an - 1 : 0;
    char addr[INET6_ADDRSTRLEN + 1];
    if (an == 0 || an >= sizeof addr || (slash && (!all_digits(slash + 1, pn) || pn > 3))) return false;
    memcpy(addr, s, an);
    addr[an] = '\0';
    int prefix = 0;   // a bare address takes the family's full length, always in range
    for (size_t i = 0; i < pn; i++) prefix = prefix * 10 + (slash[1 + i] - '0');
    unsigned char buf[sizeof(struct in6_addr)];
    if (inet_pton(AF_INET, addr, buf) == 1) return prefix <= 32;
    if (inet_pton(AF_INET6, addr, buf) == 1) return prefix <= 128;
    return false;
}

// Comma-separated; an empty list is allowed (nobody matches). At most CIDRS_MAX blocks, the limit
// of realtime/cidr.h.
static bool valid_cidrs(const char *s) {
    if (*s == '\0') return true;
    for (int count = 1; count <= CIDRS_MAX; count++) {
        size_t n = strcspn(s, ",");
        const char *b = s, *e = s + n;
        while (b < e && (*b == ' ' || *b == '\t')) b++;
        while (e > b && (e[-1] == ' ' || e[-1] == '\t')) e--;
        if (!valid_cidr(b, (size_t)(e - b))) return false;
        if (s[n] == '\0') return true;
        s += n + 1;
    }
    return false;
}

static bool valid_endpoint(const char *s) {
    static const char *const schemes[] = {"ipc://", "tcp://", "inproc://"};
    for (size_t i = 0; i < 3; i++) {
        size_t n = strlen(schemes[i]);
        if (strncmp(s, schemes[i], n) == 0) return s[n] != '\0';
    }
    return false;
}

// Standard base64 (with padding) of exactly 32 bytes. The syntax is checked here because
// EVP_DecodeBlock tolerates '=' anywhere and leading/trailing white space; the decoding is OpenSSL's.
static bool valid_master_key(const char *s) {
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t n = strlen(s);
    size_t body = strspn(s, alphabet);
    size_t pad = n - body;
    if (n == 0 || n % 4 != 0 || n > 64 || pad > 2 || strspn(s + body, "=") != pad) return false;
    unsigned char out[64];
    int got = EVP_DecodeBlock(out, (const unsigned char *)s, (int)n);
    OPENSSL_cleanse(out, sizeof out);
    return got >= 0 && (size_t)got - pad == MASTER_KEY_BYTES;
}

// --- files ---------------------------------------------------------------------------------------

// Reads at most `limit` bytes of path into a NUL-terminated buffer. -1 with errno set, or with
// errno = EFBIG when the file is larger than limit.
static int read_file(const char *path, size_t limit, char **out, size_t *outlen) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    struct stat st;
    if (fstat(fd, &st) != 0) goto fail;
    if (S_ISDIR(st.st_mode)) { errno = EISDIR; goto fail; }
    char *buf = malloc(limit + 2);
    if (!buf) goto fail;
    size_t len = 0;
    for (;;) {
        ssize_t r = read(fd, buf + len, limit + 1 - len);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) { int e = errno; free(buf); errno = e; goto fail; }
        if (r == 0) break;
        len += (size_t)r;
        if (len > limit) { free(buf); errno = EFBIG; goto fail; }
    }
    close(fd);
    buf[len] = '\0';
    *out = buf;
    *outlen = len;
    return 0;
fail:;
    int e = errno;
    close(fd);
    errno = e;
    return -1;
}

// --- pass 1: collect the layers ------------------------------------------------------------------

static int find_key(const char *section, const char *name, bool *is_file) {
    size_t nl = strlen(name);
    for (size_t i = 0; i < NKEYS; i++) {
        if (strcmp(keys[i].section, section) != 0) continue;
        if (strcmp(keys[i].name, name) == 0) { *is_file = false; return (int)i; }
        size_t kl = strlen(keys[i].name);
        if (keys[i].kind == K_SECRET && nl == kl + 5 && strncmp(name, keys[i].name, kl) == 0 &&
            strcmp(name + kl, "_file") == 0) {
            *is_file = true;
            return (int)i;
        }
    }
    return -1;
}

static bool known_section(const char *s) {
    for (size_t i = 0; i < NKEYS; i++)
        if (strcmp(keys[i].section, s) == 0) return true;
    return false;
}

// Parses the INI text in place; values in `ly` point into buf.
static int parse_ini(layers_t *ly, char *buf, size_t len, char *err, size_t errlen) {
    const char *path = ly->path;
    if (memchr(buf, '\0', len)) {
        seterr(err, errlen, "%s: contains a NUL byte", path);
        return -1;
    }
    if (len >= 3 && memcmp(buf, "\xEF\xBB\xBF", 3) == 0) buf += 3;   // UTF-8 byte order mark
    const char *section = NULL;
    int lineno = 0;
    char *line = buf;
    while (line && *line) {
        lineno++;
        char *nl = strchr(line, '\n');
        char *next = nl ? nl + 1 : NULL;
        size_t n = nl ? (size_t)(nl - line) : strlen(line);
        if (n > 0 && line[n - 1] == '\r') n--;
        if (n > CONFIG_MAX_LINE) {
            seterr(err, errlen, "%s:%d: line longer than %d bytes", path, lineno, CONFIG_MAX_LINE);
            return -1;
        }
        line[n] = '\0';
        char *s = trim(line);
        line = next;
        if (*s == '\0' || *s == '#' || *s == ';') continue;
        if (*s == '[') {
            size_t sl = strlen(s);
            if (s[sl - 1] != ']') {
                seterr(err, errlen, "%s:%d: expected [section]", path, lineno);
                return -1;
            }
            s[sl - 1] = '\0';
            char *name = trim(s + 1);
            if (!known_section(name)) {
                seterr(err, errlen, "%s:%d: unknown section [%.64s]", path, lineno, name);
                return -1;
            }
            section = name;
            continue;
        }
        char *eq = strchr(s, '=');
        if (!eq) {
            seterr(err, errlen, "%s:%d: expected [section], key = value, or a # comment", path, lineno);
            return -1;
        }
        *eq = '\0';
        char *key = trim(s), *value = trim(eq + 1);
        if (*key == '\0') {
            seterr(err, errlen, "%s:%d: missing key before '='", path, lineno);
            return -1;
        }
        if (!section) {
            seterr(err, errlen, "%s:%d: %.64s: key outside any [section]", path, lineno, key);
            return -1;
        }
        bool is_file = false;
        int k = find_key(section, key, &is_file);
        if (k < 0) {
            seterr(err, errlen, "%s:%d: unknown key %s.%.64s", path, lineno, section, key);
            return -1;
        }
        const char *shown = is_file ? "_file" : "";
        if (*value == '"') {
            size_t vl = strlen(value);
            if (vl < 2 || value[vl - 1] != '"') {
                seterr(err, errlen, "%s:%d: %s.%s%s: unterminated quote", path, lineno, section,
                       keys[k].name, shown);
                return -1;
            }
            value[vl - 1] = '\0';
            value++;
        }
        raw_t *r = is_file ? &ly->file[k] : &ly->val[k];
        if (r->file_val) {
            seterr(err, errlen, "%s:%d: %s.%s%s: duplicate key (first set at line %d)", path, lineno,
                   section, keys[k].name, shown, r->file_line);
            return -1;
        }
        r->file_val = value;
        r->file_line = lineno;
    }
    return 0;
}

static int load_file(layers_t *ly, const char *path, bool named, char **buf, size_t *len, char *err,
                     size_t errlen) {
    if (read_file(path, CONFIG_MAX_FILE, buf, len) != 0) {
        if (errno == ENOENT && !named) return 0;   // the default file is optional
        if (errno == EFBIG)
            seterr(err, errlen, "%s: larger than %d bytes", path, CONFIG_MAX_FILE);
        else
            seterr(err, errlen, "%s: cannot read: %s", path, strerror(errno));
        return -1;
    }
    return parse_ini(ly, *buf, *len, err, errlen);
}

static void env_name(char *out, size_t size, const key_def_t *k, bool is_file) {
    snprintf(out, size, CONFIG_ENV_PREFIX "%s_%s%s", k->section, k->name, is_file ? "_FILE" : "");
    for (char *c = out; *c; c++) *c = (char)toupper((unsigned char)*c);
}

static void load_env(layers_t *ly, const logger_t *lg) {
    for (size_t i = 0; i < NKEYS; i++) {
        env_name(ly->val[i].env_name, sizeof ly->val[i].env_name, &keys[i], false);
        ly->val[i].env_val = getenv(ly->val[i].env_name);
        if (keys[i].kind == K_SECRET) {
            env_name(ly->file[i].env_name, sizeof ly->file[i].env_name, &keys[i], true);
            ly->file[i].env_val = getenv(ly->file[i].env_name);
        }
    }
    // Anything else that looks like ours is probably a typo: say so, but carry on.
    for (char **e = environ; e && *e; e++) {
        const char *var = *e;
        if (strncmp(var, CONFIG_ENV_PREFIX, strlen(CONFIG_ENV_PREFIX)) != 0) continue;
        size_t n = strcspn(var, "=");
        if (env_ignored(var, n)) continue;
        bool known = false;
        for (size_t i = 0; i < NKEYS && !known; i++) {
            known = (strlen(ly->val[i].env_name) == n && strncmp(var, ly->val[i].env_name, n) == 0) ||
                    (keys[i].kind == K_SECRET && strlen(ly->file[i].env_name) == n &&
                     strncmp(var, ly->file[i].env_name, n) == 0);
        }
        if (!known)
            log_warn(lg, "config_unknown_env", "var=%.*s msg=\"not a configuration key, ignored\"",
                     (int)(n > 128 ? 128 : n), var);
    }
}

// --- pass 2: resolve, validate, store ------------------------------------------------------------

// The effective value of one layer pair (environment over file) and where it came from.
static const char *pick(const raw_t *r, const char *path, char *where, size_t size) {
    if (r->env_val) {
        snprintf(where, size, "env %s", r->env_name);
        return r->env_val;
    }
    if (r->file_val) {
        snprintf(where, size, "%s:%d", path, r->file_line);
        return r->file_val;
    }
    snprintf(where, size, "default");
    return NULL;
}

static int store_value(config_t *cfg, const key_def_t *k, const char *v, const char *where, char *err,
                       size_t errlen) {
    char *base = (char *)cfg + k->off;
    const char *sec = k->section, *name = k->name;

    if (v && *v == '\0' && (k->kind == K_OPTSTR || k->kind == K_SECRET)) v = NULL;
    if (v && *v == '\0' && k->kind != K_CIDRS) {   // an empty CIDR list lets nobody in
        seterr(err, errlen, "%s: %s.%s: must not be empty", where, sec, name);
        return -1;
    }
    switch (k->kind) {
    case K_INT: {
        int64_t x;
        if (!is_whole_number(v)) {
            seterr(err, errlen, "%s: %s.%s: expected a whole number, got \"%.64s\"", where, sec, name, v);
            return -1;
        }
        if (util_parse_int64(v, k->min, k->max, &x) != 0) {
            seterr(err, errlen, "%s: %s.%s: must be between %lld and %lld, got %.64s", where, sec, name,
                   (long long)k->min, (long long)k->max, v);
            return -1;
        }
        *(int64_t *)base = x;
        return 0;
    }
    case K_BOOL:
        if (parse_bool(v, (bool *)base) != 0) {
            seterr(err, errlen, "%s: %s.%s: expected true/false, yes/no, on/off or 1/0, got \"%.64s\"",
                   where, sec, name, v);
            return -1;
        }
        return 0;
    case K_LEVEL:
        if (log_level_parse(v, (log_level_t *)base) != 0) {
            seterr(err, errlen, "%s: %s.%s: expected debug, info, warn or error, got \"%.64s\"", where, sec,
                   name, v);
            return -1;
        }
        return 0;
    case K_LISTEN:
        if (parse_listen(v, &cfg->http_listen_host, &cfg->http_listen_port) != 0) {
            seterr(err, errlen, "%s: %s.%s: expected host:port or [ipv6]:port with port 1..65535, got "
                   "\"%.128s\"", where, sec, name, v);
            return -1;
        }
        break;
    case K_URL:
        if (!valid_url(v)) {
            seterr(err, errlen, "%s: %s.%s: expected an http:// or https:// URL with a host, got \"%.128s\"",
                   where, sec, name, v);
            return -1;
        }
        break;
    case K_CIDRS:
        if (!valid_cidrs(v)) {
            seterr(err, errlen, "%s: %s.%s: expected comma-separated CIDRs like 127.0.0.0/8,::1/128 (at most 64), got "
                   "\"%.128s\"", where, sec, name, v);
            return -1;
        }
        break;
    case K_ENDPOINT:
        if (!valid_endpoint(v)) {
            seterr(err, errlen, "%s: %s.%s: expected an ipc://, tcp:// or inproc:// endpoint, got \"%.128s\"",
                   where, sec, name, v);
            return -1;
        }
        break;
    case K_SECRET:
        if (v && (k->flags & F_MASTER_KEY) && !valid_master_key(v)) {
            seterr(err, errlen, "%s: %s.%s: must be base64 of exactly %d bytes (e.g. from `openssl rand "
                   "-base64 32`)", where, sec, name, MASTER_KEY_BYTES);
            return -1;
        }
        break;
    case K_STR:
    case K_OPTSTR:
        break;
    }
    if (!v) return 0;
    char *copy = strdup(v);
    if (!copy) {
        seterr(err, errlen, "%s.%s: out of memory", sec, name);
        return -1;
    }
    *(char **)base = copy;
    return 0;
}

// A secret's value: k, or the content of the file named by k_file. Never both.
static int resolve_secret(config_t *cfg, const layers_t *ly, size_t i, char *err, size_t errlen) {
    const key_def_t *k = &keys[i];
    char where_v[128], where_f[128];
    const char *v = pick(&ly->val[i], ly->path, where_v, sizeof where_v);
    const char *f = pick(&ly->file[i], ly->path, where_f, sizeof where_f);
    bool has_v = v && *v, has_f = f && *f;
    if (has_v && has_f) {
        seterr(err, errlen, "%s: %s.%s: also set as %s.%s_file (%s); set only one of them", where_v,
               k->section, k->name, k->section, k->name, where_f);
        return -1;
    }
    if (!has_f) return store_value(cfg, k, v, where_v, err, errlen);

    char *content = NULL;
    size_t len = 0;
    if (read_file(f, CONFIG_MAX_SECRET, &content, &len) != 0) {
        if (errno == EFBIG)
            seterr(err, errlen, "%s: %s.%s_file: %.256s is larger than %d bytes", where_f, k->section,
                   k->name, f, CONFIG_MAX_SECRET);
        else
            seterr(err, errlen, "%s: %s.%s_file: cannot read %.256s: %s", where_f, k->section, k->name, f,
                   strerror(errno));
        return -1;
    }
    int rc = 0;
    if (memchr(content, '\0', len)) {
        seterr(err, errlen, "%s: %s.%s_file: %.256s contains a NUL byte", where_f, k->section, k->name, f);
        rc = -1;
    } else {
        if (len > 0 && content[len - 1] == '\n') {   // one "\n" or "\r\n", no more
            content[--len] = '\0';
            if (len > 0 && content[len - 1] == '\r') content[--len] = '\0';
        }
        char where[200];
        snprintf(where, sizeof where, "%s (file %.64s)", where_f, f);
        rc = store_value(cfg, k, content, where, err, errlen);
    }
    OPENSSL_cleanse(content, len);
    free(content);
    return rc;
}

static size_t key_index(const char *section, const char *name) {
    for (size_t i = 0; i < NKEYS; i++)
        if (strcmp(keys[i].section, section) == 0 && strcmp(keys[i].name, name) == 0) return i;
    abort();   // a typo in this file
}

static int resolve(config_t *cfg, layers_t *ly, char *err, size_t errlen) {
    for (size_t i = 0; i < NKEYS; i++) {
        const key_def_t *k = &keys[i];
        if (k->kind == K_SECRET) {
            if (resolve_secret(cfg, ly, i, err, errlen) != 0) return -1;
            continue;
        }
        char *where = ly->where[i];
        const char *v = pick(&ly->val[i], ly->path, where, sizeof ly->where[i]);
        if (!v && (k->flags & F_DEFAULT_PUBLIC)) {
            v = cfg->http_public_url;
            snprintf(where, sizeof ly->where[i], "default (http.public_url)");
        }
        if (!v) v = k->def;
        if (store_value(cfg, k, v, where, err, errlen) != 0) return -1;
    }
    if (cfg->scheduler_retry_max_s < cfg->scheduler_retry_base_s) {
        seterr(err, errlen, "%s: scheduler.retry_max_s: must be at least scheduler.retry_base_s (%lld, from %s), "
               "got %lld", ly->where[key_index("scheduler", "retry_max_s")], (long long)cfg->scheduler_retry_base_s,
               ly->where[key_index("scheduler", "retry_base_s")], (long long)cfg->scheduler_retry_max_s);
        return -1;
    }
    return 0;
}

// --- public API ----------------------------------------------------------------------------------

int config_load(config_t *cfg, const char *path, const logger_t *lg, char *err, size_t errlen) {
    seterr(err, errlen, "%s", "");
    config_t tmp;
    memset(&tmp, 0, sizeof tmp);
    layers_t *ly = calloc(1, sizeof *ly);
    if (!ly) {
        seterr(err, errlen, "config: out of memory");
        memset(cfg, 0, sizeof *cfg);
        return -1;
    }
    ly->path = path ? path : CONFIG_DEFAULT_PATH;
    char *buf = NULL;
    size_t buflen = 0;
    int rc = load_file(ly, ly->path, path != NULL, &buf, &buflen, err, errlen);
    if (rc == 0) {
        load_env(ly, lg);
        rc = resolve(&tmp, ly, err, errlen);
    }
    if (buf) {
        OPENSSL_cleanse(buf, buflen);   // the file may hold secrets
        free(buf);
    }
    free(ly);
    if (rc != 0) {
        config_clear(&tmp);
        memset(cfg, 0, sizeof *cfg);
        return -1;
    }
    *cfg = tmp;
    return 0;
}

int config_require(const config_t *cfg, const char *const *names, char *err, size_t errlen) {
    for (; names && *names; names++) {
        const char *full = *names;
        const char *dot = strchr(full, '.');
        const key_def_t *k = NULL;
        for (size_t i = 0; dot && i < NKEYS && !k; i++) {
            if (strlen(keys[i].section) == (size_t)(dot - full) &&
                strncmp(keys[i].section, full, (size_t)(dot - full)) == 0 && strcmp(keys[i].name, dot + 1) == 0)
                k = &keys[i];
        }
        if (!k) {
            seterr(err, errlen, "%s: not a configuration key", full);
            return -1;
        }
        if (k->kind != K_STR && k->kind != K_OPTSTR && k->kind != K_SECRET && k->kind != K_URL &&
            k->kind != K_LISTEN && k->kind != K_CIDRS && k->kind != K_ENDPOINT)
            continue;   // numbers, booleans and levels always have a value
        const char *v = *(char *const *)((const char *)cfg + k->off);
        char env[64];
        env_name(env, sizeof env, k, false);
        if (!v || !*v) {
            if (k->kind == K_SECRET)
                seterr(err, errlen, "%s: required but not set (set it in the configuration file, or %s, or "
                       "%s_FILE naming a file that holds it)", full, env, env);
            else
                seterr(err, errlen, "%s: required but not set (set it in the configuration file or %s)", full,
                       env);
            return -1;
        }
        if ((k->flags & F_MASTER_KEY) && !valid_master_key(v)) {
            seterr(err, errlen, "%s: must be base64 of exactly %d bytes (e.g. from `openssl rand -base64 32`)",
                   full, MASTER_KEY_BYTES);
            return -1;
        }
    }
    return 0;
}

void config_clear(config_t *cfg) {
    if (!cfg) return;
    for (size_t i = 0; i < NKEYS; i++) {
        if (keys[i].kind == K_INT || keys[i].kind == K_BOOL || keys[i].kind == K_LEVEL) continue;
        char **field = (char **)((char *)cfg + keys[i].off);
        if (*field && keys[i].kind == K_SECRET) OPENSSL_cleanse(*field, strlen(*field));
        free(*field);
    }
    free(cfg->http_listen_host);
    memset(cfg, 0, sizeof *cfg);
}
