// actors/broadcaster.h — the realtime-broadcaster actor. See broadcaster.c for what it owns and who talks to it.
#ifndef SWEETY_ACTOR_BROADCASTER_H
#define SWEETY_ACTOR_BROADCASTER_H

#include "actors/actor.h"

extern const actor_spec_t broadcaster_actor_spec;

#endif
