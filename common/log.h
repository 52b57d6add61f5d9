// common/log.h — one line per event on stderr, key=value, no personal data.
//
// A logger_t is a small value each actor (or library object) keeps: its level and the name that
// appears as actor=... There is no global logger: whoever creates a thread hands it a logger_t.
// Lines are written with a single write(2) so lines from different threads never interleave.
#ifndef SWEETY_LOG_H
#define SWEETY_LOG_H

#include <stdarg.h>

typedef enum { SLOG_DEBUG = 0, SLOG_INFO = 1, SLOG_WARN = 2, SLOG_ERROR = 3 } log_level_t;

typedef struct {
    log_level_t level;   // lines below this level are dropped
    const char *who;     // static string: actor or component name
} logger_t;

// Parses "debug", "info", "warn", "error". Returns 0, or -1 for anything else.
int log_level_parse(const char *text, log_level_t *out);
const char *log_level_name(log_level_t level);

// Writes: ts=<RFC3339 ms> level=<l> actor=<who> event=<event> <fmt...>
// fmt holds the remaining key=value pairs (may be NULL). Values must not contain personal data.
void log_event(const logger_t *lg, log_level_t level, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
void log_eventv(const logger_t *lg, log_level_t level, const char *event, const char *fmt, va_list ap);

#define log_debug(lg, ev, ...) log_event((lg), SLOG_DEBUG, (ev), __VA_ARGS__)
#define log_info(lg, ev, ...)  log_event((lg), SLOG_INFO, (ev), __VA_ARGS__)
#define log_warn(lg, ev, ...)  log_event((lg), SLOG_WARN, (ev), __VA_ARGS__)
#define log_error(lg, ev, ...) log_event((lg), SLOG_ERROR, (ev), __VA_ARGS__)

#endif
