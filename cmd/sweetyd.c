// cmd/sweetyd.c — the daemon's entry point: arguments, configuration, then the supervisor.
//
//   sweetyd [-c FILE]                   run until SIGTERM/SIGINT, drain, exit 0
//   sweetyd --check-config [-c FILE]    validate the configuration, exit 0 or 1
//   sweetyd --version
#include <curl/curl.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>

#include "actors/supervisor.h"
#include "conf/config.h"
#include "realtime/http.h"

#define SWEETY_VERSION "0.1.0"

// Descriptors the daemon holds besides its clients' connections: measured 80 at idle (ZeroMQ's 53
// eventfds — a mailbox per socket and per context —, 8 PostgreSQL connections, the listener, the
// trace socket, pipes, the log), plus room for the providers' HTTP connections curl keeps, a
// database reconnect and a few trace clients. The http actor refuses connections that would eat into it.

// Every connection is a descriptor, so the open-file soft limit is raised to the hard limit before
// any thread starts (lws sizes its tables from it when the http actor creates its context). Returns
// 0, or -1 when it could not be raised (the daemon then runs with the limit it has).
static int raise_fd_limit(const logger_t *log) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) {
        log_warn(log, "fd_limit", "error=getrlimit errno=%d", errno);
        return -1;
    }
    int rc = 0;
    if (rl.rlim_cur < rl.rlim_max) {
        struct rlimit want = {.rlim_cur = rl.rlim_max, .rlim_max = rl.rlim_max};
        if (setrlimit(RLIMIT_NOFILE, &want) == 0) {
            rl = want;
        } else {
            log_warn(log, "fd_limit_not_raised", "soft=%llu hard=%llu errno=%d", (unsigned long long)rl.rlim_cur,
                     (unsigned long long)rl.rlim_max, errno);
            rc = -1;
        }
    }
    if (rl.rlim_cur == RLIM_INFINITY) {
        log_info(log, "fd_limit", "soft=unlimited hard=unlimited connections_max=unlimited reserve=%d", SWEETY_FD_RESERVE);
        return rc;
    }
    unsigned long long soft = (unsigned long long)rl.rlim_cur;
    log_info(log, "fd_limit", "soft=%llu hard=%llu connections_max=%llu reserve=%d", soft,
             rl.rlim_max == RLIM_INFINITY ? soft : (unsigned long long)rl.rlim_max,
             soft > SWEETY_FD_RESERVE ? soft - SWEETY_FD_RESERVE : 0ULL, SWEETY_FD_RESERVE);
    return rc;
}

static int usage(void) {
    fprintf(stderr, "usage: sweetyd [-c FILE] [--check-config] | --version\n");
    return 2;
}

int main(int argc, char **argv) {
    const char *path = NULL;
    int check_only = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--version") == 0) {
            printf("sweetyd %s\n", SWEETY_VERSION);
            return 0;
        } else if (strcmp(argv[i], "--check-config") == 0) {
            check_only = 1;
        } else if (strcmp(argv[i], "-c") == 0 && i + 1 < argc) {
            path = argv[++i];
        } else {
            return usage();
        }
    }
    logger_t log = {SLOG_INFO, "main"};
    config_t cfg;
    char err[CONFIG_ERR_MAX];
    if (config_load(&cfg, path, &log, err, sizeof err) != 0 ||
        config_require(&cfg, config_daemon_required, err, sizeof err) != 0) {
        fprintf(stderr, "sweetyd: configuration error: %s\n", err);
        if (check_only) config_clear(&cfg);
        return 1;
    }
    if (check_only) {
        printf("configuration ok\n");
        config_clear(&cfg);
        return 0;
    }
    raise_fd_limit(&log);                    // failure is logged; the daemon runs with what it has
    curl_global_init(CURL_GLOBAL_DEFAULT);   // before any thread starts (actors use libcurl)
    int rc = supervisor_run(&cfg);
    curl_global_cleanup();
    config_clear(&cfg);
    return rc;
}
