// storage/plans.c — queries on plans (see plans.h). Rows become plan_t values here; no PGresult
// leaves this file.
#include "storage/plans.h"

#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PLAN_COLUMNS "key::text, name, price_cents, currency, duration_seconds, vapi_assistant_id, priority"

static const char *const plan_keys[] = {"free_trial", "standard", "extended", "premium"};

bool plan_key_valid(const char *key) {
    for (size_t i = 0; key && i < sizeof plan_keys / sizeof plan_keys[0]; i++)
        if (strcmp(key, plan_keys[i]) == 0) return true;
    return false;
}

void plan_clear(plan_t *plan) {
    if (!plan) return;
    free(plan->name);
    free(plan->assistant_id);
    memset(plan, 0, sizeof *plan);
}

void plans_free(plan_t **plans_p, size_t n) {
    if (!plans_p || !*plans_p) return;
    for (size_t i = 0; i < n; i++) plan_clear(&(*plans_p)[i]);
    free(*plans_p);
    *plans_p = NULL;
}

// Maps row r (PLAN_COLUMNS order) into *p. 0 or -1 (out of memory; *p is then cleared).
static int plan_from_row(const PGresult *res, int r, plan_t *p) {
    memset(p, 0, sizeof *p);
    snprintf(p->key, sizeof p->key, "%s", PQgetvalue(res, r, 0));
    p->name = strdup(PQgetvalue(res, r, 1));
    p->price_cents = strtoll(PQgetvalue(res, r, 2), NULL, 10);
    snprintf(p->currency, sizeof p->currency, "%s", PQgetvalue(res, r, 3));
    p->duration_seconds = atoi(PQgetvalue(res, r, 4));
    if (!PQgetisnull(res, r, 5)) p->assistant_id = strdup(PQgetvalue(res, r, 5));
    p->priority = atoi(PQgetvalue(res, r, 6));
    if (!p->name || (!PQgetisnull(res, r, 5) && !p->assistant_id)) {
        plan_clear(p);
        return -1;
    }
    return 0;
}

int plans_list(db_t *db, plan_t **out, size_t *n) {
    assert(db && out && n);
    PGresult *res = db_exec_prepared(db, "plans_list",
                                     "SELECT " PLAN_COLUMNS " FROM plans ORDER BY price_cents, key", 0, NULL, NULL);
    if (!res) return -1;
    int rows = PQntuples(res);
    plan_t *plans = calloc(rows > 0 ? (size_t)rows : 1, sizeof *plans);
    if (!plans) {
        PQclear(res);
        return -1;
    }
    for (int r = 0; r < rows; r++) {
        if (plan_from_row(res, r, &plans[r]) != 0) {
            plans_free(&plans, (size_t)r);
            PQclear(res);
            return -1;
        }
    }
    PQclear(res);
    *out = plans;
    *n = (size_t)rows;
    return 0;
}

int plans_get(db_t *db, const char *key, plan_t *out) {
    assert(db && key && out);
    const char *params[] = {key};
    PGresult *res = db_exec_prepared(db, "plans_get",
                                     "SELECT " PLAN_COLUMNS " FROM plans WHERE key::text = $1", 1, params, NULL);
    if (!res) return -1;
    plan_t p;
    int rc = PQntuples(res) == 1 ? plan_from_row(res, 0, &p) : -2;
    PQclear(res);
    if (rc == 0) *out = p;
    return rc;
}

int plans_set(db_t *db, const char *key, const plan_update_t *upd) {
    assert(db && key && upd);
    char price[24], duration[16];
    snprintf(price, sizeof price, "%" PRId64, upd->price_cents);
    snprintf(duration, sizeof duration, "%d", upd->duration_seconds);
    const char *params[] = {
        key,
        upd->set_price ? price : NULL,
        upd->set_duration ? duration : NULL,
        upd->assistant_id,
        upd->currency,
    };
    char sqlstate[6];
    PGresult *res = db_exec_prepared(
        db, "plans_set",
        "UPDATE plans SET"
        " price_cents = COALESCE($2::integer, price_cents),"
        " duration_seconds = COALESCE($3::integer, duration_seconds),"
        " vapi_assistant_id = CASE WHEN $4::text IS NULL THEN vapi_assistant_id ELSE NULLIF($4::text, '') END,"
        " currency = COALESCE(lower($5::text), currency)"
        " WHERE key::text = $1 RETURNING key",
        5, params, sqlstate);
    if (!res) {
        // 23514 check_violation, 22003 numeric_value_out_of_range (a price beyond integer)
        if (strcmp(sqlstate, "23514") == 0 || strcmp(sqlstate, "22003") == 0) return -3;
        return -1;
    }
    int rc = PQntuples(res) == 1 ? 0 : -2;
    PQclear(res);
    return rc;
}
