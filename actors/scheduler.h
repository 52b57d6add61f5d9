// actors/scheduler.h — the scheduler actor. See scheduler.c for what it owns and who talks to it.
#ifndef SWEETY_ACTOR_SCHEDULER_H
#define SWEETY_ACTOR_SCHEDULER_H

#include "actors/actor.h"

extern const actor_spec_t scheduler_actor_spec;

#endif
