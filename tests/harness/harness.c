// tests/harness/harness.c — see harness.h. Runs on the test's main thread only.
#include "tests/harness/harness.h"

#include <curl/curl.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

int64_t harness_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void harness_sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

// ---- files and ports -------------------------------------------------------------------------
int harness_tmpdir(char *path, size_t size) {
    const char *base = getenv("TMPDIR");
    if (!base || !*base) base = "/tmp";
    if (snprintf(path, size, "%s/sweety-test-XXXXXX", base) >= (int)size) return -1;
    return mkdtemp(path) ? 0 : -1;
}

void harness_rmtree(const char *path) {
    DIR *dir = opendir(path);
    if (!dir) {
        unlink(path);
        return;
    }
    struct dirent *ent;
    while ((ent = readdir(dir))) {
        if (!strcmp(ent->d_name, ".") || !strcmp(ent->d_name, "..")) continue;
        char child[4096];
        snprintf(child, sizeof child, "%s/%s", path, ent->d_name);
        struct stat st;
        if (lstat(child, &st) == 0 && S_ISDIR(st.st_mode))
            harness_rmtree(child);
        else
            unlink(child);
    }
    closedir(dir);
    rmdir(path);
}

int harness_free_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof addr;
    int port = -1;
    if (bind(fd, (struct sockaddr *)&addr, sizeof addr) == 0 &&
        getsockname(fd, (struct sockaddr *)&addr, &len) == 0)
        port = ntohs(addr.sin_port);
    close(fd);
    return port;
}

int harness_write_file(const char *path, const char *content) {
    FILE *f = fopen(path, "w");
    if (!f) return -1;
    int rc = fputs(content, f) < 0 ? -1 : 0;
    if (fclose(f) != 0) rc = -1;
    return rc;
}

char *harness_read_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    size_t n;
    while (buf && (n = fread(buf + len, 1, cap - len - 1, f)) > 0) {
        len += n;
        if (cap - len - 1 == 0) {
            char *bigger = realloc(buf, cap * 2);
            if (!bigger) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = bigger;
            cap *= 2;
        }
    }
    fclose(f);
    if (buf) buf[len] = '\0';
    return buf;
}

int harness_bin_path(const char *name, char *path, size_t size) {
    const char *dir = getenv("SWEETY_BIN_DIR");
    if (!dir) {
        fprintf(stderr, "harness: SWEETY_BIN_DIR is not set (run tests through ctest)\n");
        return -1;
    }
    return snprintf(path, size, "%s/%s", dir, name) < (int)size ? 0 : -1;
}

// ---- child processes -------------------------------------------------------------------------
struct harness_proc_t {
    pid_t pid;
    bool reaped;
};

static char **merged_env(const char *const *extra) {
    size_t n = 0, m = 0;
    while (environ[n]) n++;
    while (extra && extra[m]) m++;
    char **env = calloc(n + m + 1, sizeof *env);
    if (!env) return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        // an extra "K=V" replaces the inherited K
        const char *eq = strchr(environ[i], '=');
        size_t klen = eq ? (size_t)(eq - environ[i]) + 1 : strlen(environ[i]);
        bool replaced = false;
        for (size_t j = 0; j < m && !replaced; j++) replaced = strncmp(extra[j], environ[i], klen) == 0;
        if (!replaced) env[k++] = environ[i];
    }
    for (size_t j = 0; j < m; j++) env[k++] = (char *)extra[j];
    env[k] = NULL;
    return env;
}

static pid_t spawn_redirected(const char *const *argv, const char *const *env, int out_fd, int err_fd) {
    char **envp = merged_env(env);
    if (!envp) return -1;
    pid_t pid = fork();
    if (pid == 0) {
        setpgid(0, 0);
        int devnull = open("/dev/null", O_RDONLY);
        if (devnull >= 0) dup2(devnull, STDIN_FILENO);
        if (out_fd >= 0) dup2(out_fd, STDOUT_FILENO);
        if (err_fd >= 0) dup2(err_fd, STDERR_FILENO);
        execve(argv[0], (char *const *)argv, envp);
        fprintf(stderr, "harness: exec %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    free(envp);
    return pid;
}

harness_proc_t *harness_proc_spawn(const char *const *argv, const char *const *env, const char *log_path) {
    int fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) return NULL;
    harness_proc_t *self = calloc(1, sizeof *self);
    if (self) self->pid = spawn_redirected(argv, env, fd, fd);
    close(fd);
    if (self && self->pid < 0) {
        free(self);
        return NULL;
    }
    return self;
}

pid_t harness_proc_pid(const harness_proc_t *self) { return self->pid; }

int harness_proc_kill(harness_proc_t *self, int sig) {
    if (self->reaped) return -1;
    return kill(self->pid, sig);
}

int harness_proc_wait(harness_proc_t *self, int timeout_ms, int *status) {
    int64_t deadline = harness_now_ms() + timeout_ms;
    for (;;) {
        int st = 0;
        pid_t r = waitpid(self->pid, &st, WNOHANG);
        if (r == self->pid) {
            self->reaped = true;
            if (status) *status = st;
            return 0;
        }
        if (r < 0 || harness_now_ms() >= deadline) return -1;
        harness_sleep_ms(10);
    }
}

void harness_proc_destroy(harness_proc_t **self_p) {
    harness_proc_t *self = *self_p;
    if (!self) return;
    if (!self->reaped) {
        kill(self->pid, SIGKILL);
        waitpid(self->pid, NULL, 0);
    }
    free(self);
    *self_p = NULL;
}

// Reads both pipes until the child closes them or the deadline passes.
static int drain_pipes(int fds[2], char *bufs[2], size_t lens[2], int64_t deadline) {
    size_t caps[2] = {0, 0};
    int open_count = 2;
    while (open_count > 0) {
        struct pollfd pfd[2] = {{fds[0], POLLIN, 0}, {fds[1], POLLIN, 0}};
        int wait = (int)(deadline - harness_now_ms());
        if (wait <= 0 || poll(pfd, 2, wait) <= 0) return -1;
        for (int i = 0; i < 2; i++) {
            if (fds[i] < 0 || !(pfd[i].revents & (POLLIN | POLLHUP))) continue;
            if (lens[i] + 4096 + 1 > caps[i]) {
                caps[i] = caps[i] ? caps[i] * 2 : 8192;
                char *bigger = realloc(bufs[i], caps[i]);
                if (!bigger) return -1;
                bufs[i] = bigger;
            }
            ssize_t n = read(fds[i], bufs[i] + lens[i], 4096);
            if (n <= 0) {
                close(fds[i]);
                fds[i] = -1;
                pfd[i].fd = -1;
                open_count--;
            } else {
                lens[i] += (size_t)n;
            }
        }
    }
    return 0;
}

int harness_run(const char *const *argv, const char *const *env, int timeout_ms, char **out, char **err) {
    int po[2], pe[2];
    if (pipe2(po, O_CLOEXEC) != 0) return -1;
    if (pipe2(pe, O_CLOEXEC) != 0) {
        close(po[0]);
        close(po[1]);
        return -1;
    }
    pid_t pid = spawn_redirected(argv, env, po[1], pe[1]);
    close(po[1]);
    close(pe[1]);
    int fds[2] = {po[0], pe[0]};
    char *bufs[2] = {NULL, NULL};
    size_t lens[2] = {0, 0};
    int64_t deadline = harness_now_ms() + timeout_ms;
    int drained = pid > 0 ? drain_pipes(fds, bufs, lens, deadline) : -1;
    for (int i = 0; i < 2; i++)
        if (fds[i] >= 0) close(fds[i]);
    int status = 0, rc = -1;
    if (pid > 0) {
        if (drained != 0) kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        if (drained == 0 && WIFEXITED(status)) rc = WEXITSTATUS(status);
    }
    char **dst[2] = {out, err};
    for (int i = 0; i < 2; i++) {
        if (bufs[i]) bufs[i][lens[i]] = '\0';
        if (dst[i])
            *dst[i] = bufs[i] ? bufs[i] : strdup("");
        else
            free(bufs[i]);
    }
    return rc;
}

// ---- databases -------------------------------------------------------------------------------
static int pg_exec_on(const char *conninfo, const char *sql, char *out, size_t outsize) {
    PGconn *conn = PQconnectdb(conninfo);
    int rc = -1;
    if (PQstatus(conn) != CONNECTION_OK) {
        fprintf(stderr, "harness: connect: %s", PQerrorMessage(conn));
    } else {
        PGresult *res = PQexec(conn, sql);
        ExecStatusType st = PQresultStatus(res);
        if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
            rc = 0;
            if (out && outsize) {
                const char *v = (st == PGRES_TUPLES_OK && PQntuples(res) > 0) ? PQgetvalue(res, 0, 0) : "";
                snprintf(out, outsize, "%s", v);
            }
        } else {
            fprintf(stderr, "harness: %s: %s", sql, PQerrorMessage(conn));
        }
        PQclear(res);
    }
    PQfinish(conn);
    return rc;
}

int harness_pg_query(const char *url, const char *sql, char *out, size_t outsize) {
    return pg_exec_on(url, sql, out, outsize);
}

static int pg_url(const char *host, const char *port, const char *user, const char *db, char *url, size_t size) {
    int n = snprintf(url, size, "postgresql:///%s?host=%s&port=%s&user=%s", db, host, port, user);
    return n > 0 && (size_t)n < size ? 0 : -1;
}

int harness_pg_create_db(const char *prefix, char *url, size_t urlsize) {
    const char *host = getenv("SWEETY_TEST_PG_HOST");
    const char *port = getenv("SWEETY_TEST_PG_PORT");
    const char *user = getenv("SWEETY_TEST_PG_USER");
    if (!host || !port) {
        fprintf(stderr, "harness: SWEETY_TEST_PG_HOST/PORT not set (run through scripts/test)\n");
        return -1;
    }
    if (!user) user = "postgres";
    static const char hex[] = "0123456789abcdef";
    unsigned char rnd[4];
    int fd = open("/dev/urandom", O_RDONLY);
    if (fd < 0 || read(fd, rnd, sizeof rnd) != (ssize_t)sizeof rnd) {
        if (fd >= 0) close(fd);
        return -1;
    }
    close(fd);
    char name[96];
    snprintf(name, sizeof name, "%s_%d_%c%c%c%c%c%c%c%c", prefix, (int)getpid(), hex[rnd[0] >> 4],
             hex[rnd[0] & 15], hex[rnd[1] >> 4], hex[rnd[1] & 15], hex[rnd[2] >> 4], hex[rnd[2] & 15],
             hex[rnd[3] >> 4], hex[rnd[3] & 15]);
    char admin[512], sql[160];
    if (pg_url(host, port, user, "postgres", admin, sizeof admin) != 0) return -1;
    snprintf(sql, sizeof sql, "CREATE DATABASE \"%s\"", name);
    if (pg_exec_on(admin, sql, NULL, 0) != 0) return -1;
    return pg_url(host, port, user, name, url, urlsize);
}

struct harness_pg_cluster_t {
    char dir[512];
    char port[16];
    char bindir[256];
};

// Runs a PostgreSQL tool as the unprivileged "postgres" user when we are root (PostgreSQL refuses
// to run as root), directly otherwise.
static int pg_tool(const harness_pg_cluster_t *self, const char *const *args) {
    const char *argv[24];
    int n = 0;
    char tool[512];
    snprintf(tool, sizeof tool, "%s/%s", self->bindir, args[0]);
    if (geteuid() == 0) {
        argv[n++] = "/usr/sbin/runuser";
        argv[n++] = "-u";
        argv[n++] = "postgres";
        argv[n++] = "--";
    }
    argv[n++] = tool;
    for (int i = 1; args[i] && n < 23; i++) argv[n++] = args[i];
    argv[n] = NULL;
    char *out = NULL, *err = NULL;
    int rc = harness_run(argv, NULL, 120000, &out, &err);
    if (rc != 0) fprintf(stderr, "harness: %s failed (%d): %s%s\n", args[0], rc, out ? out : "", err ? err : "");
    free(out);
    free(err);
    return rc == 0 ? 0 : -1;
}

harness_pg_cluster_t *harness_pg_cluster_new(void) {
    harness_pg_cluster_t *self = calloc(1, sizeof *self);
    if (!self) return NULL;
    const char *bindir = getenv("SWEETY_TEST_PG_BIN");
    snprintf(self->bindir, sizeof self->bindir, "%s", bindir ? bindir : "/usr/lib/postgresql/15/bin");
    snprintf(self->port, sizeof self->port, "%d", harness_free_port());
    if (harness_tmpdir(self->dir, sizeof self->dir) != 0) {
        free(self);
        return NULL;
    }
    if (geteuid() == 0) {
        struct passwd *pw = getpwnam("postgres");
        if (!pw || chown(self->dir, pw->pw_uid, pw->pw_gid) != 0) {
            fprintf(stderr, "harness: no postgres user to own the cluster\n");
            harness_rmtree(self->dir);
            free(self);
            return NULL;
        }
    }
    char data[600];
    snprintf(data, sizeof data, "%s/data", self->dir);
    const char *initdb[] = {"initdb", "-D", data, "-A", "trust", "-U", "postgres", "--no-sync", NULL};
    if (pg_tool(self, initdb) != 0 || harness_pg_cluster_start(self) != 0) {
        harness_rmtree(self->dir);
        free(self);
        return NULL;
    }
    return self;
}

int harness_pg_cluster_start(harness_pg_cluster_t *self) {
    char data[600], logf[600], opts[900];
    snprintf(data, sizeof data, "%s/data", self->dir);
    snprintf(logf, sizeof logf, "%s/postgres.log", self->dir);
    snprintf(opts, sizeof opts, "-k %s -p %s -c listen_addresses='' -c fsync=off", self->dir, self->port);
    const char *args[] = {"pg_ctl", "-D", data, "-o", opts, "-l", logf, "-w", "start", NULL};
    return pg_tool(self, args);
}

int harness_pg_cluster_stop(harness_pg_cluster_t *self) {
    char data[600];
    snprintf(data, sizeof data, "%s/data", self->dir);
    const char *args[] = {"pg_ctl", "-D", data, "-m", "fast", "-w", "stop", NULL};
    return pg_tool(self, args);
}

int harness_pg_cluster_create_db(harness_pg_cluster_t *self, const char *name, char *url, size_t urlsize) {
    char admin[700];
    if (pg_url(self->dir, self->port, "postgres", "postgres", admin, sizeof admin) != 0) return -1;
    if (strcmp(name, "postgres") != 0) {
        char sql[200];
        snprintf(sql, sizeof sql, "CREATE DATABASE \"%s\"", name);
        if (pg_exec_on(admin, sql, NULL, 0) != 0) return -1;
    }
    return pg_url(self->dir, self->port, "postgres", name, url, urlsize);
}

void harness_pg_cluster_destroy(harness_pg_cluster_t **self_p) {
    harness_pg_cluster_t *self = *self_p;
    if (!self) return;
    harness_pg_cluster_stop(self);
    harness_rmtree(self->dir);
    free(self);
    *self_p = NULL;
}

// ---- HTTP -------------------------------------------------------------------------------------
typedef struct {
    char *data;
    size_t len;
} growbuf_t;

static size_t growbuf_write(char *ptr, size_t size, size_t nmemb, void *userdata) {
    growbuf_t *b = userdata;
    size_t n = size * nmemb;
    char *bigger = realloc(b->data, b->len + n + 1);
    if (!bigger) return 0;
    b->data = bigger;
    memcpy(b->data + b->len, ptr, n);
    b->len += n;
    b->data[b->len] = '\0';
    return n;
}

int harness_http(const char *method, const char *url, const char *body, const char *const *headers,
                 harness_http_t *resp) {
    memset(resp, 0, sizeof *resp);
    CURL *curl = curl_easy_init();
    if (!curl) return -1;
    growbuf_t b = {0}, h = {0};
    struct curl_slist *list = NULL;
    for (int i = 0; headers && headers[i]; i++) list = curl_slist_append(list, headers[i]);
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method);
    if (body) {
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    }
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, list);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, growbuf_write);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, growbuf_write);
    curl_easy_setopt(curl, CURLOPT_HEADERDATA, &h);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, 10000L);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    CURLcode rc = curl_easy_perform(curl);
    if (rc == CURLE_OK) curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &resp->status);
    curl_slist_free_all(list);
    curl_easy_cleanup(curl);
    resp->body = b.data ? b.data : strdup("");
    resp->body_len = b.len;
    resp->headers = h.data ? h.data : strdup("");
    return rc == CURLE_OK ? 0 : -1;
}

void harness_http_clear(harness_http_t *resp) {
    free(resp->body);
    free(resp->headers);
    memset(resp, 0, sizeof *resp);
}

int harness_http_wait_status(const char *url, long want_status, int timeout_ms) {
    int64_t deadline = harness_now_ms() + timeout_ms;
    for (;;) {
        harness_http_t r;
        harness_http("GET", url, NULL, NULL, &r);
        long got = r.status;
        harness_http_clear(&r);
        if (got == want_status) return 0;
        if (harness_now_ms() >= deadline) return -1;
        harness_sleep_ms(50);
    }
}
