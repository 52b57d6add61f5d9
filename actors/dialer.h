// actors/dialer.h — the dialer actor. See dialer.c for what it owns and who talks to it.
#ifndef SWEETY_ACTOR_DIALER_H
#define SWEETY_ACTOR_DIALER_H

#include "actors/actor.h"

extern const actor_spec_t dialer_actor_spec;

#endif
