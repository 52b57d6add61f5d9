// cmd/sweetyd.c — the daemon's entry point: arguments, configuration, then the supervisor.
//
//   sweetyd [-c FILE]                   run until SIGTERM/SIGINT, drain, exit 0
//   sweetyd --check-config [-c FILE]    validate the configuration, exit 0 or 1
//   sweetyd --version
#include <curl/curl.h>
#include <stdio.h>
#include <string.h>

#include "actors/supervisor.h"
#include "conf/config.h"

#define SWEETY_VERSION "0.1.0"

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
    curl_global_init(CURL_GLOBAL_DEFAULT);   // before any thread starts (actors use libcurl)
    int rc = supervisor_run(&cfg);
    curl_global_cleanup();
    config_clear(&cfg);
    return rc;
}
