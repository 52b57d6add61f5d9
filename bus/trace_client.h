// bus/trace_client.h — the client side of the trace (used by `sweetyctl trace` and tests).
#ifndef SWEETY_TRACE_CLIENT_H
#define SWEETY_TRACE_CLIENT_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

// Connects to `endpoint`, subscribes to `topic_prefix` ("" or NULL = all), and writes one JSON line
// per message to `out` (personal fields masked), oldest first. Stops after `count` messages
// (count <= 0: until interrupted), or when no message arrives for `idle_timeout_ms` (<= 0: never).
// Returns 0 when it stopped after `count` messages or by interruption, 1 on idle timeout, -1 on
// error (message on stderr).
int trace_client_run(const char *endpoint, const char *topic_prefix, int64_t count,
                     int idle_timeout_ms, FILE *out);

#endif
