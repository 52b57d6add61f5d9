// tests/fuzz/fuzz_config.c — the configuration loader (conf/config.c, config_load): the INI
// parser, value validation (numbers, booleans, listen addresses, URLs, CIDR lists, endpoints, the
// master key) and *_file secrets, then config_require and config_clear.
//
// Input: the text of a configuration file. config_load only reads files, so each input is written
// to a private temporary folder ($TMPDIR, else /dev/shm, else /tmp; made once, removed at exit) and
// loaded from there. The SWEETY_*
// environment is cleared first, so only the input decides the outcome.
//
// *_file secrets: "@/" in the input stands for that private folder, which holds a few prepared
// secret files (see make_files). So that the fuzzer never opens anything else (a FIFO or
// /dev/stdin would block it), an input is skipped when a line whose key part holds "_file" has a
// value other than "" or "@/<name without slash>".
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "conf/config.h"
#include "tests/fuzz/fuzz.h"

extern char **environ;

static char dir[PATH_MAX];        // the private folder
static char conf_path[PATH_MAX];  // dir/fuzz.conf

static const struct {
    const char *name;
    const char *content;
    size_t len;
} files[] = {
    {"mk", "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n", 45},   // base64 of 32 bytes
    {"mk16", "AAECAwQFBgcICQoLDA0ODw==", 24},                          // 16 bytes only
    {"secret", "s3cr3t\r\n", 8},
    {"nl2", "s3cr3t\n\n", 8},
    {"empty", "", 0},
    {"nul", "ab\0cd", 5},
};

// A new file each time: rewriting one in place (O_TRUNC) makes ext4 flush it on close, which slows
// the fuzzer down a hundredfold when the folder is on disk.
static void write_file(const char *path, const void *data, size_t len) {
    unlink(path);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    FUZZ_CHECK(fd >= 0);
    const char *p = data;
    while (len > 0) {
        ssize_t w = write(fd, p, len);
        if (w < 0 && errno == EINTR) continue;
        FUZZ_CHECK(w > 0);
        p += w;
        len -= (size_t)w;
    }
    FUZZ_CHECK(close(fd) == 0);
}

static void remove_all(void) {
    char path[PATH_MAX + 32];
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, files[i].name);
        unlink(path);
    }
    snprintf(path, sizeof path, "%s/big", dir);
    unlink(path);
    snprintf(path, sizeof path, "%s/folder", dir);
    rmdir(path);
    unlink(conf_path);
    rmdir(dir);
}

static void make_files(void) {
    char path[PATH_MAX + 32];
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, files[i].name);
        write_file(path, files[i].content, files[i].len);
    }
    static char big[64 * 1024 + 1];   // one byte over the limit of a secret file
    memset(big, 'x', sizeof big);
    snprintf(path, sizeof path, "%s/big", dir);
    write_file(path, big, sizeof big);
    snprintf(path, sizeof path, "%s/folder", dir);
    FUZZ_CHECK(mkdir(path, 0700) == 0);
}

static void clear_sweety_env(void) {
    for (;;) {
        char name[256] = "";
        for (char **e = environ; e && *e; e++) {
            if (strncmp(*e, "SWEETY_", 7) != 0) continue;
            size_t n = strcspn(*e, "=");
            if (n >= sizeof name) n = sizeof name - 1;
            memcpy(name, *e, n);
            name[n] = '\0';
            break;
        }
        if (!name[0]) return;
        unsetenv(name);
    }
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    clear_sweety_env();
    const char *tmp = getenv("TMPDIR");
    struct stat st;
    if (!tmp || !*tmp) tmp = stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode) && access("/dev/shm", W_OK) == 0
                                 ? "/dev/shm"   // memory: no disk I/O per input
                                 : "/tmp";
    snprintf(dir, sizeof dir, "%s/sweety-fuzz-config-XXXXXX", tmp);
    FUZZ_CHECK(mkdtemp(dir) != NULL);
    snprintf(conf_path, sizeof conf_path, "%s/fuzz.conf", dir);
    make_files();
    atexit(remove_all);
    return 0;
}

// Whether every line with "_file" before its '=' names "" or "@/<name>" (no other '/').
static bool secret_files_safe(const uint8_t *data, size_t size) {
    const char *p = (const char *)data, *end = p + size;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *line_end = nl ? nl : end;
        const char *eq = memchr(p, '=', (size_t)(line_end - p));
        bool file_key = false;
        for (const char *k = p; eq && k + 5 <= eq; k++)
            if (memcmp(k, "_file", 5) == 0) file_key = true;
        if (file_key) {
            const char *v = eq + 1, *ve = line_end;
            while (v < ve && (*v == ' ' || *v == '\t' || *v == '"')) v++;
            while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t' || ve[-1] == '\r' || ve[-1] == '"')) ve--;
            if (v < ve) {
                if (ve - v < 3 || v[0] != '@' || v[1] != '/' || memchr(v + 2, '/', (size_t)(ve - v - 2)))
                    return false;
            }
        }
        p = line_end + 1;
    }
    return true;
}

// The input with every "@/" replaced by "<dir>/".
static char *expand(const uint8_t *data, size_t size, size_t *out_len) {
    size_t dl = strlen(dir), count = 0;
    for (size_t i = 0; i + 1 < size; i++)
        if (data[i] == '@' && data[i + 1] == '/') count++;
    char *out = malloc(size + count * dl + 1);
    FUZZ_CHECK(out != NULL);
    size_t o = 0;
    for (size_t i = 0; i < size; i++) {
        if (data[i] == '@' && i + 1 < size && data[i + 1] == '/') {
            memcpy(out + o, dir, dl);
            o += dl;
            continue;   // the '/' follows
        }
        out[o++] = (char)data[i];
    }
    *out_len = o;
    return out;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!secret_files_safe(data, size)) return 0;
    size_t len;
    char *text = expand(data, size, &len);
    write_file(conf_path, text, len);
    free(text);

    static const logger_t quiet = {SLOG_ERROR, "fuzz_config"};
    config_t cfg, zero;
    memset(&cfg, 0, sizeof cfg);
    memset(&zero, 0, sizeof zero);
    char err[CONFIG_ERR_MAX] = "";
    if (config_load(&cfg, conf_path, &quiet, err, sizeof err) != 0) {
        FUZZ_CHECK(err[0] != '\0');
        FUZZ_CHECK(memcmp(&cfg, &zero, sizeof cfg) == 0);   // "*cfg is then left cleared"
        return 0;
    }
    FUZZ_CHECK(cfg.db_url && cfg.db_url[0] && cfg.http_listen && cfg.http_listen_host && cfg.http_public_url &&
               cfg.http_cors_origin && cfg.http_metrics_from && cfg.http_web_root && cfg.stripe_api_base &&
               cfg.cryptomus_api_base && cfg.vapi_api_base && cfg.trace_endpoint);
    FUZZ_CHECK(cfg.http_listen_port >= 1 && cfg.http_listen_port <= 65535);
    FUZZ_CHECK(cfg.db_pool >= 1 && cfg.trace_keep >= 1000);
    FUZZ_CHECK(cfg.scheduler_retry_max_s >= cfg.scheduler_retry_base_s);
    FUZZ_CHECK(!cfg.security_master_key || cfg.security_master_key[0]);
    char rerr[CONFIG_ERR_MAX] = "";
    if (config_require(&cfg, config_daemon_required, rerr, sizeof rerr) != 0) FUZZ_CHECK(rerr[0] != '\0');
    config_clear(&cfg);
    FUZZ_CHECK(memcmp(&cfg, &zero, sizeof cfg) == 0);
    return 0;
}
