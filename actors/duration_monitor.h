// actors/duration_monitor.h — the duration-monitor actor. See duration_monitor.c for what it owns and who talks to it.
#ifndef SWEETY_ACTOR_DURATION_MONITOR_H
#define SWEETY_ACTOR_DURATION_MONITOR_H

#include "actors/actor.h"

extern const actor_spec_t duration_monitor_actor_spec;

#endif
