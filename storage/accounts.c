// storage/accounts.c — queries on vapi_accounts and vapi_agents (see accounts.h).
//
// Keys travel as bytea in hex text form ('\x...') both ways, so the text-parameter path of
// db_exec_prepared carries them and no bytea escaping rules are involved. The hex text of a sealed
// key is ciphertext, not a secret, but it is still never logged (db.c logs no parameters).
#include "storage/accounts.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "storage/store_sql.h"

// "\x" + lowercase hex of n bytes, malloc'ed; NULL when out of memory.
static char *bytea_hex(const unsigned char *p, size_t n) {
    static const char digits[] = "0123456789abcdef";
    char *s = malloc(2 + 2 * n + 1);
    if (!s) return NULL;
    s[0] = '\\';
    s[1] = 'x';
    for (size_t i = 0; i < n; i++) {
        s[2 + 2 * i] = digits[p[i] >> 4];
        s[3 + 2 * i] = digits[p[i] & 0x0f];
    }
    s[2 + 2 * n] = '\0';
    return s;
}

static int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

// Plain hex text (encode(..., 'hex')) into a malloc'ed buffer. 0 or -1.
static int unhex(const char *hex, unsigned char **out, size_t *n) {
    size_t len = strlen(hex);
    if (len % 2 != 0) return -1;
    unsigned char *buf = malloc(len / 2 + 1);
    if (!buf) return -1;
    for (size_t i = 0; i < len / 2; i++) {
        int hi = hex_value(hex[2 * i]), lo = hex_value(hex[2 * i + 1]);
        if (hi < 0 || lo < 0) {
            free(buf);
            return -1;
        }
        buf[i] = (unsigned char)(hi << 4 | lo);
    }
    *out = buf;
    *n = len / 2;
    return 0;
}

// ---- accounts ------------------------------------------------------------------------------------

int accounts_add(db_t *db, const char *name, const unsigned char *key_enc, size_t key_len,
                 const unsigned char nonce[CRYPTO_NONCE_LEN], const char *phone_number_id, int max_concurrent,
                 char id_out[STORE_UUID_LEN]) {
    assert(db && id_out);
    if (!name || !key_enc || !nonce || key_len == 0 || key_len > ACCOUNT_KEY_ENC_MAX || max_concurrent < 0 ||
        !store_len_ok(phone_number_id, STORE_REF_MAX - 1, true))
        return STORE_ERR_INVALID;
    char *enc = bytea_hex(key_enc, key_len);
    char *iv = bytea_hex(nonce, CRYPTO_NONCE_LEN);
    if (!enc || !iv) {
        free(enc);
        free(iv);
        return STORE_ERR_DB;
    }
    char maxc[16];
    snprintf(maxc, sizeof maxc, "%d", max_concurrent);
    const char *params[] = {name, enc, iv, phone_number_id, maxc};
    char sqlstate[6];
    PGresult *res = db_exec_prepared(db, "accounts_add",
                                     "INSERT INTO vapi_accounts (name, api_key_enc, api_key_nonce, phone_number_id,"
                                     " max_concurrent) VALUES ($1, $2::bytea, $3::bytea, $4, $5::integer) RETURNING id",
                                     5, params, sqlstate);
    free(enc);
    free(iv);
    if (!res) return store_rc_from_sqlstate(sqlstate);
    int rc = PQntuples(res) == 1 ? STORE_OK : STORE_ERR_DB;
    if (rc == STORE_OK) store_copy(id_out, STORE_UUID_LEN, res, 0, 0);
    PQclear(res);
    return rc;
}

static void account_from_row(const PGresult *res, int r, void *elem) {
    account_row_t *a = elem;
    store_copy(a->id, sizeof a->id, res, r, 0);
    store_copy(a->name, sizeof a->name, res, r, 1);
    store_copy(a->phone_number_id, sizeof a->phone_number_id, res, r, 2);
    a->max_concurrent = (int)store_int64(res, r, 3);
    a->active_calls = (int)store_int64(res, r, 4);
    a->enabled = strcmp(PQgetvalue(res, r, 5), "t") == 0;
    store_copy(a->held_until, sizeof a->held_until, res, r, 6);
}

int accounts_list(db_t *db, account_row_t **out, size_t *n) {
    assert(db && out && n);
    PGresult *res = db_exec_prepared(
        db, "accounts_list",
        "SELECT id, name, phone_number_id, max_concurrent, active_calls, enabled,"
        " " SQL_RFC3339("CASE WHEN held_until > now() THEN held_until END")
        " FROM vapi_accounts ORDER BY created_at, id",
        0, NULL, NULL);
    void *list = NULL;
    int rc = store_rows(res, sizeof **out, account_from_row, &list, n);
    if (rc == STORE_OK) *out = list;
    return rc;
}

int accounts_disable(db_t *db, const char *account_id) {
    assert(db);
    if (!store_is_uuid(account_id)) return STORE_ERR_NOT_FOUND;
    const char *params[] = {account_id};
    PGresult *res = db_exec_prepared(db, "accounts_disable",
                                     "UPDATE vapi_accounts SET enabled = false WHERE id = $1::uuid RETURNING id", 1,
                                     params, NULL);
    if (!res) return STORE_ERR_DB;
    int rc = PQntuples(res) == 1 ? STORE_OK : STORE_ERR_NOT_FOUND;
    PQclear(res);
    return rc;
}

void account_key_clear(account_key_t *key) {
    if (!key) return;
    free(key->sealed);
    memset(key, 0, sizeof *key);
}

int accounts_get_key(db_t *db, const char *account_id, account_key_t *out) {
    assert(db && out);
    if (!store_is_uuid(account_id)) return STORE_ERR_NOT_FOUND;
    const char *params[] = {account_id};
    PGresult *res = db_exec_prepared(db, "accounts_get_key",
                                     "SELECT encode(api_key_enc, 'hex'), encode(api_key_nonce, 'hex')"
                                     " FROM vapi_accounts WHERE id = $1::uuid",
                                     1, params, NULL);
    if (!res) return STORE_ERR_DB;
    if (PQntuples(res) != 1) {
        PQclear(res);
        return STORE_ERR_NOT_FOUND;
    }
    unsigned char *e = NULL, *iv = NULL;
    size_t elen = 0, ivlen = 0;
    int rc = STORE_ERR_DB;
    if (unhex(PQgetvalue(res, 0, 0), &e, &elen) == 0 && unhex(PQgetvalue(res, 0, 1), &iv, &ivlen) == 0 &&
        ivlen == CRYPTO_NONCE_LEN) {
        account_key_t k = {.sealed = e, .sealed_len = elen};
        memcpy(k.nonce, iv, CRYPTO_NONCE_LEN);
        *out = k;
        e = NULL;
        rc = STORE_OK;
    }
    free(e);
    free(iv);
    PQclear(res);
    return rc;
}

// One row of the rekey scan: write back what fn gave, if anything. STORE_OK or an error.
static int rekey_row(db_t *db, account_rekey_fn fn, void *arg, const char *id, const char *enc_hex,
                     const char *nonce_hex, bool *changed) {
    unsigned char *e = NULL, *iv = NULL;
    size_t elen = 0, ivlen = 0;
    if (unhex(enc_hex, &e, &elen) != 0 || unhex(nonce_hex, &iv, &ivlen) != 0 || ivlen != CRYPTO_NONCE_LEN) {
        free(e);
        free(iv);
        return STORE_ERR_INVALID;
    }
    account_key_t in = {.sealed = e, .sealed_len = elen};
    memcpy(in.nonce, iv, CRYPTO_NONCE_LEN);
    free(iv);
    unsigned char *out = NULL, nonce[CRYPTO_NONCE_LEN];
    size_t out_len = 0;
    int r = fn(arg, id, &in, &out, &out_len, nonce);
    account_key_clear(&in);
    if (r < 0) return STORE_ERR_INVALID;
    *changed = r > 0;
    if (r == 0) return STORE_OK;
    if (!out || out_len == 0 || out_len > ACCOUNT_KEY_ENC_MAX) {
        free(out);
        return STORE_ERR_INVALID;
    }
    char *enc = bytea_hex(out, out_len);
    char *ivh = bytea_hex(nonce, CRYPTO_NONCE_LEN);
    free(out);
    int rc = STORE_ERR_DB;
    if (enc && ivh) {
        const char *params[] = {id, enc, ivh};
        PGresult *res = db_exec_prepared(db, "accounts_rekey_set",
                                         "UPDATE vapi_accounts SET api_key_enc = $2::bytea, api_key_nonce = $3::bytea"
                                         " WHERE id = $1::uuid",
                                         3, params, NULL);
        if (res) rc = STORE_OK;
        PQclear(res);
    }
    free(enc);
    free(ivh);
    return rc;
}

int accounts_rekey(db_t *db, account_rekey_fn fn, void *arg, size_t *changed, size_t *total,
                   char failed_id[STORE_UUID_LEN]) {
    assert(db && fn && changed && total && failed_id);
    if (db_begin(db) != 0) return STORE_ERR_DB;
    PGresult *res = db_exec_prepared(db, "accounts_rekey_scan",
                                     "SELECT id, encode(api_key_enc, 'hex'), encode(api_key_nonce, 'hex')"
                                     " FROM vapi_accounts ORDER BY id FOR UPDATE",
                                     0, NULL, NULL);
    if (!res) {
        db_rollback(db);
        return STORE_ERR_DB;
    }
    int rc = STORE_OK;
    size_t n = (size_t)PQntuples(res), done = 0;
    for (size_t i = 0; i < n && rc == STORE_OK; i++) {
        bool replaced = false;
        rc = rekey_row(db, fn, arg, PQgetvalue(res, (int)i, 0), PQgetvalue(res, (int)i, 1),
                       PQgetvalue(res, (int)i, 2), &replaced);
        if (rc == STORE_ERR_INVALID) store_copy(failed_id, STORE_UUID_LEN, res, (int)i, 0);
        done += replaced;
    }
    PQclear(res);
    if (rc != STORE_OK) {
        db_rollback(db);
        return rc;
    }
    if (db_commit(db) != 0) return STORE_ERR_DB;
    *changed = done;
    *total = n;
    return STORE_OK;
}

int accounts_hold(db_t *db, const char *account_id, int seconds) {
    assert(db);
    if (!store_is_uuid(account_id)) return STORE_ERR_NOT_FOUND;
    if (seconds <= 0) return STORE_ERR_INVALID;
    char secs[16];
    snprintf(secs, sizeof secs, "%d", seconds);
    const char *params[] = {account_id, secs};
    PGresult *res = db_exec_prepared(
        db, "accounts_hold",
        "UPDATE vapi_accounts SET held_until = GREATEST(held_until, now() + make_interval(secs => $2::integer))"
        " WHERE id = $1::uuid RETURNING id",
        2, params, NULL);
    if (!res) return STORE_ERR_DB;
    int rc = PQntuples(res) == 1 ? STORE_OK : STORE_ERR_NOT_FOUND;
    PQclear(res);
    return rc;
}

// ---- agents --------------------------------------------------------------------------------------

int agents_add(db_t *db, const char *account_id, const char *plan, int max_concurrent, const char *assistant_id,
               int priority, char id_out[STORE_UUID_LEN]) {
    assert(db && id_out);
    if (!store_is_uuid(account_id)) return STORE_ERR_NOT_FOUND;
    if (!plan || max_concurrent < 0 || (assistant_id && !store_len_ok(assistant_id, STORE_REF_MAX - 1, true)))
        return STORE_ERR_INVALID;
    char maxc[16], prio[16];
    snprintf(maxc, sizeof maxc, "%d", max_concurrent);
    snprintf(prio, sizeof prio, "%d", priority);
    const char *params[] = {account_id, plan, maxc, assistant_id, prio};
    char sqlstate[6];
    PGresult *res = db_exec_prepared(db, "agents_add",
                                     "INSERT INTO vapi_agents (account_id, plan, max_concurrent, assistant_id, priority)"
                                     " VALUES ($1::uuid, $2::plan_key, $3::integer, $4, $5::integer) RETURNING id",
                                     5, params, sqlstate);
    if (!res) {
        // 23503: the account does not exist (plans always do: an unknown key fails the cast, 22P02).
        return strcmp(sqlstate, "23503") == 0 ? STORE_ERR_NOT_FOUND : store_rc_from_sqlstate(sqlstate);
    }
    int rc = PQntuples(res) == 1 ? STORE_OK : STORE_ERR_DB;
    if (rc == STORE_OK) store_copy(id_out, STORE_UUID_LEN, res, 0, 0);
    PQclear(res);
    return rc;
}

static void agent_from_row(const PGresult *res, int r, void *elem) {
    agent_row_t *a = elem;
    store_copy(a->id, sizeof a->id, res, r, 0);
    store_copy(a->account_id, sizeof a->account_id, res, r, 1);
    store_copy(a->plan, sizeof a->plan, res, r, 2);
    store_copy(a->assistant_id, sizeof a->assistant_id, res, r, 3);
    a->own_assistant = strcmp(PQgetvalue(res, r, 4), "t") == 0;
    a->max_concurrent = (int)store_int64(res, r, 5);
    a->active_calls = (int)store_int64(res, r, 6);
    a->priority = (int)store_int64(res, r, 7);
    a->enabled = strcmp(PQgetvalue(res, r, 8), "t") == 0;
}

int agents_list(db_t *db, agent_row_t **out, size_t *n) {
    assert(db && out && n);
    PGresult *res = db_exec_prepared(
        db, "agents_list",
        "SELECT a.id, a.account_id, a.plan::text, COALESCE(a.assistant_id, p.vapi_assistant_id),"
        " a.assistant_id IS NOT NULL, a.max_concurrent, a.active_calls, a.priority, a.enabled"
        " FROM vapi_agents a JOIN plans p ON p.key = a.plan JOIN vapi_accounts c ON c.id = a.account_id"
        " ORDER BY c.created_at, c.id, a.created_at, a.id",
        0, NULL, NULL);
    void *list = NULL;
    int rc = store_rows(res, sizeof **out, agent_from_row, &list, n);
    if (rc == STORE_OK) *out = list;
    return rc;
}
