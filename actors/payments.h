// actors/payments.h — the payments actor. See payments.c for what it owns and who talks to it.
#ifndef SWEETY_ACTOR_PAYMENTS_H
#define SWEETY_ACTOR_PAYMENTS_H

#include "actors/actor.h"

extern const actor_spec_t payments_actor_spec;

#endif
