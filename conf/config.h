// conf/config.h — sweetyd's configuration: the INI file, SWEETY_<SECTION>_<KEY> overrides, *_file
// secrets, defaults, validation (CONTRACT.md, "Configuration").
//
// Loaded once in main (or sweetyctl) before any thread starts; afterwards the config_t is read-only
// and handed to actors by const pointer, so no thread ever writes it.
#ifndef SWEETY_CONFIG_H
#define SWEETY_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/log.h"

#define CONFIG_ERR_MAX 512

// Strings with a default are never NULL. Optional strings (the secrets, cryptomus_merchant) are NULL
// when unset; an empty value counts as unset.
typedef struct {
    // [db]
    char *db_url;
    int64_t db_pool;
    bool db_migrate;
    // [http]
    char *http_listen;          // "host:port"
    char *http_listen_host;     // derived from http_listen
    int http_listen_port;       // derived from http_listen
    char *http_public_url;
    char *http_cors_origin;     // defaults to http_public_url
    int64_t http_webhook_rate_per_min;
    int64_t http_booking_rate_per_min;
    char *http_metrics_from;    // comma-separated CIDRs
    char *http_web_root;        // folder of static pages; default "web" next to the binary's source
    // [log]
    log_level_t log_level;
    // [stripe]
    char *stripe_api_base;
    char *stripe_secret_key;      // secret
    char *stripe_webhook_secret;  // secret
    char *stripe_webhook_secret_previous;   // secret: also accepted on webhooks during a rotation
    int64_t stripe_tolerance_s;
    // [cryptomus]
    char *cryptomus_api_base;
    char *cryptomus_merchant;
    char *cryptomus_payment_key;  // secret
    char *cryptomus_payment_key_previous;   // secret: also accepted on webhooks during a rotation
    // [vapi]
    char *vapi_api_base;
    char *vapi_webhook_secret;       // secret
    char *vapi_webhook_secret_previous;        // secret: also accepted during a rotation
    char *vapi_webhook_hmac_secret;  // secret
    char *vapi_webhook_hmac_secret_previous;   // secret: also accepted during a rotation
    // [security]
    char *security_master_key;    // secret, base64 of 32 bytes (required by sweetyd)
    char *security_master_key_previous;   // secret, base64 of 32 bytes: only ever decrypts (rotation)
    char *security_token_secret;  // secret (required by sweetyd)
    char *security_token_secret_previous; // secret: tokens it signed verify until they expire (rotation)
    int64_t security_token_ttl_s;
    // [scheduler]
    int64_t scheduler_max_retries;
    int64_t scheduler_grace_s;
    int64_t scheduler_retry_base_s;
    int64_t scheduler_retry_max_s;
    int64_t scheduler_lease_s;          // a claimed call not handed to VAPI by then is looked up again
    int64_t scheduler_account_hold_s;   // an account over VAPI's concurrency limit rests this long
    int64_t scheduler_stale_call_s;     // an active call silent this long is looked up at VAPI
    // [payments]
    int64_t payments_reconcile_after_s;   // a booking unpaid this long is checked with its provider
    int64_t payments_reconcile_every_s;   // how often the reconciliation sweep runs
    // [trace]
    char *trace_endpoint;
    int64_t trace_keep;           // messages kept for late trace clients (>= 1000)
} config_t;

// Loads defaults, then the file, then the environment.
// path: the file named with -c, or NULL for the default "conf/sweetyd.conf" (a missing default file
// is not an error; a missing named file is). Warnings (unknown SWEETY_* variables) go to `lg`.
// On failure returns -1 and writes a message naming the key (and file:line when it came from the
// file) into err; *cfg is then left cleared. *cfg's previous contents are not freed: pass a zeroed
// or cleared config.
int config_load(config_t *cfg, const char *path, const logger_t *lg, char *err, size_t errlen);

// Checks that each named key ("security.master_key", ...) has a non-empty value, and for
// security.master_key that it is base64 of exactly 32 bytes. NULL-terminated list. 0 or -1 + err.
int config_require(const config_t *cfg, const char *const *keys, char *err, size_t errlen);

// The keys sweetyd itself cannot run without.
extern const char *const config_daemon_required[];

// Frees every string; safe on a zeroed or already-cleared config.
void config_clear(config_t *cfg);

#endif
