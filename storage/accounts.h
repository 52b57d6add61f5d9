// storage/accounts.h — VAPI accounts and agents (tables vapi_accounts, vapi_agents): the capacity
// operators register with sweetyctl, and the account's encrypted key the dialer opens.
//
// An account is one VAPI organisation key with its outbound phone number and a concurrency limit;
// an agent is the use of an account for one plan, with a limit of its own and, optionally, its own
// assistant (otherwise the plan's). The counters (active_calls) are changed only by
// storage/dispatch.c, in the transactions that assign and release calls; nothing here writes them.
// The key arrives here already sealed (common/crypto.h): storage never sees a plaintext key.
//
// Return codes are those of storage/store.h; outputs are written only on STORE_OK. Ids that are
// not UUIDs are reported as STORE_ERR_NOT_FOUND.
#ifndef SWEETY_ACCOUNTS_H
#define SWEETY_ACCOUNTS_H

#include <stdbool.h>
#include <stddef.h>

#include "common/crypto.h"
#include "storage/db.h"
#include "storage/store.h"

#define ACCOUNT_NAME_MAX 401   // 100 characters of up to 4 bytes + NUL
#define ACCOUNT_KEY_ENC_MAX 4096   // sealed key bytes accepted (ciphertext + tag)

typedef struct {
    char id[STORE_UUID_LEN];
    char name[ACCOUNT_NAME_MAX];
    char phone_number_id[STORE_REF_MAX];
    int max_concurrent;
    int active_calls;
    bool enabled;
    char held_until[STORE_TS_MAX];   // "" when not held (or the hold has passed)
} account_row_t;

typedef struct {
    char id[STORE_UUID_LEN];
    char account_id[STORE_UUID_LEN];
    char plan[STORE_KEY_MAX];
    char assistant_id[STORE_REF_MAX];   // effective: the agent's, else the plan's; "" when neither
    bool own_assistant;                 // the agent has an assistant id of its own
    int max_concurrent;
    int active_calls;
    int priority;
    bool enabled;
} agent_row_t;

// Inserts an account (enabled, no calls). key_enc/key_len: crypto_seal's output; nonce: its nonce.
// name 1..100 characters, phone_number_id 1..255 bytes, max_concurrent >= 0.
// STORE_OK and id_out; STORE_ERR_INVALID (a value the schema refuses); STORE_ERR_DB.
int accounts_add(db_t *db, const char *name, const unsigned char *key_enc, size_t key_len,
                 const unsigned char nonce[CRYPTO_NONCE_LEN], const char *phone_number_id, int max_concurrent,
                 char id_out[STORE_UUID_LEN]);

// Every account, oldest first. *out: malloc'ed array of *n (free()), NULL when empty. STORE_OK; STORE_ERR_DB.
int accounts_list(db_t *db, account_row_t **out, size_t *n);

// enabled = false: no new calls are assigned to it; calls in progress run to their end.
// Idempotent. STORE_OK; STORE_ERR_NOT_FOUND; STORE_ERR_DB.
int accounts_disable(db_t *db, const char *account_id);

// An account's key as stored: crypto_seal's output and nonce (ciphertext, not a secret in itself).
typedef struct {
    unsigned char *sealed;                  // malloc'ed, sealed_len bytes
    size_t sealed_len;
    unsigned char nonce[CRYPTO_NONCE_LEN];
} account_key_t;

void account_key_clear(account_key_t *key);

// The sealed key of an account, for the dialer to open (crypto_open) right before a request.
// STORE_OK (release with account_key_clear); STORE_ERR_NOT_FOUND; STORE_ERR_DB (also for a stored
// nonce that is not CRYPTO_NONCE_LEN bytes).
int accounts_get_key(db_t *db, const char *account_id, account_key_t *out);

// What accounts_rekey asks of its caller for each account's sealed key: 0 to leave it as it is,
// 1 to replace it (*out, malloc'ed, of *out_len bytes, and nonce_out: crypto_seal's output), or
// -1 when it cannot (then nothing at all is changed). Plaintext never reaches storage/.
typedef int (*account_rekey_fn)(void *arg, const char *account_id, const account_key_t *sealed, unsigned char **out,
                                size_t *out_len, unsigned char nonce_out[CRYPTO_NONCE_LEN]);

// Re-encrypts stored keys (sweetyctl account rekey): in one transaction, every account's row is
// locked (FOR UPDATE, in id order) and handed to fn, and the keys it replaces are written back.
// STORE_OK with *changed (keys replaced) and *total (accounts); STORE_ERR_INVALID when fn failed
// for an account (its id in failed_id; everything rolled back); STORE_ERR_DB.
int accounts_rekey(db_t *db, account_rekey_fn fn, void *arg, size_t *changed, size_t *total,
                   char failed_id[STORE_UUID_LEN]);

// Holds the account back (VAPI over-concurrency, account-side start errors): no call is assigned
// to it until now() + seconds. An existing longer hold is kept. seconds > 0.
// STORE_OK; STORE_ERR_NOT_FOUND; STORE_ERR_INVALID (seconds <= 0); STORE_ERR_DB.
int accounts_hold(db_t *db, const char *account_id, int seconds);

// Inserts an agent of account_id for plan (one of the four keys). assistant_id NULL: the plan's.
// STORE_OK and id_out; STORE_ERR_NOT_FOUND (no such account); STORE_ERR_INVALID (unknown plan,
// max_concurrent < 0, empty assistant id); STORE_ERR_DB.
int agents_add(db_t *db, const char *account_id, const char *plan, int max_concurrent, const char *assistant_id,
               int priority, char id_out[STORE_UUID_LEN]);

// Every agent, by account then oldest first. *out: malloc'ed array of *n (free()), NULL when
// empty. STORE_OK; STORE_ERR_DB.
int agents_list(db_t *db, agent_row_t **out, size_t *n);

#endif
