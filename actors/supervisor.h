// actors/supervisor.h — runs the daemon: migrations, the bus broker, every actor in order, the
// database health probe, and the orderly drain on SIGTERM/SIGINT. Runs on the main thread.
#ifndef SWEETY_SUPERVISOR_H
#define SWEETY_SUPERVISOR_H

#include "conf/config.h"

// Returns the process exit code: 0 after a clean drain, 1 when start-up failed.
int supervisor_run(const config_t *cfg);

#endif
