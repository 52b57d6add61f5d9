// storage/plans.h — the plans table: the four offers, their prices, lengths and VAPI assistants.
#ifndef SWEETY_PLANS_H
#define SWEETY_PLANS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "storage/db.h"

#define PLAN_KEY_MAX 16      // "free_trial" + NUL fits
#define PLAN_CURRENCY_MAX 4  // ISO 4217, lowercase

typedef struct {
    char key[PLAN_KEY_MAX];          // free_trial | standard | extended | premium
    char *name;                      // "Standard"
    int64_t price_cents;
    char currency[PLAN_CURRENCY_MAX];// "usd"
    int duration_seconds;
    char *assistant_id;              // VAPI assistant id, NULL when not set
    int priority;                    // queue priority: premium > extended > standard > free_trial
} plan_t;

// Fields to change; the others stay as they are.
typedef struct {
    bool set_price;
    int64_t price_cents;
    bool set_duration;
    int duration_seconds;
    const char *assistant_id;        // NULL: unchanged; "": cleared (agents fall back to none)
    const char *currency;            // NULL: unchanged; stored lowercase
} plan_update_t;

// True for the four plan keys.
bool plan_key_valid(const char *key);

// All plans, cheapest first (then by key). On success *out is an array of *n plans to release with
// plans_free. 0, or -1 on a database error (outputs untouched).
int plans_list(db_t *db, plan_t **out, size_t *n);
void plans_free(plan_t **plans_p, size_t n);

// One plan by key. 0; -2 for an unknown key; -1 on a database error. Release with plan_clear.
int plans_get(db_t *db, const char *key, plan_t *out);
void plan_clear(plan_t *plan);

// Applies an update. 0; -2 unknown key; -3 a value the schema refuses (negative or, for a paid
// plan, zero price; a non-zero free trial price; duration outside 10..43200 s; currency not three
// letters); -1 on a database error.
int plans_set(db_t *db, const char *key, const plan_update_t *upd);

#endif
