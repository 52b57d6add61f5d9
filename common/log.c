// common/log.c — see log.h.
#include "common/log.h"
#include "common/util.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

static const char *const level_names[] = {"debug", "info", "warn", "error"};

int log_level_parse(const char *text, log_level_t *out) {
    for (int i = 0; i < 4; i++) {
        if (text && strcmp(text, level_names[i]) == 0) {
            *out = (log_level_t)i;
            return 0;
        }
    }
    return -1;
}

const char *log_level_name(log_level_t level) {
    return (level >= SLOG_DEBUG && level <= SLOG_ERROR) ? level_names[level] : "info";
}

void log_eventv(const logger_t *lg, log_level_t level, const char *event, const char *fmt, va_list ap) {
    if (lg && level < lg->level) return;
    char line[2048];
    char ts[40];
    util_rfc3339_ms(util_now_us(), ts, sizeof ts);
    int n = snprintf(line, sizeof line, "ts=%s level=%s actor=%s event=%s", ts, log_level_name(level),
                     lg && lg->who ? lg->who : "main", event);
    if (n < 0) return;
    if ((size_t)n < sizeof line - 2 && fmt && *fmt) {
        line[n++] = ' ';
        int m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
        if (m > 0) n += m;
    }
    if ((size_t)n > sizeof line - 2) n = (int)sizeof line - 2;   // truncated: keep one line
    line[n++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, (size_t)n);
    (void)w;
}

void log_event(const logger_t *lg, log_level_t level, const char *event, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    log_eventv(lg, level, event, fmt, ap);
    va_end(ap);
}
