// actors/cryptomus_client.h — the Cryptomus calls the payments actor makes (providers.md §3), over httpc.
//
// Like stripe_client: a prepare half (the exact bytes and headers) and a parse half (outcome and
// payment object), exposed for tests, glued to httpc by the call functions.
//
// Bodies are JSON written the way PHP's json_encode writes it — compact, members in our order,
// "/" as "\/", non-ASCII as \uXXXX — and `sign` is md5(base64(those exact bytes) + payment key)
// (realtime/webhook_verify.h, cryptomus_sign). Both calls are retryable: an invoice is idempotent
// by order_id (the booking id: an existing one is returned), and payment info only reads.
//
// Thread: the thread of the httpc it is given. Logs: httpc's `http_out` line per call, plus
// `cryptomus_rejected` with the HTTP status, state and validation rule names (never `message`).
#ifndef SWEETY_CRYPTOMUS_CLIENT_H
#define SWEETY_CRYPTOMUS_CLIENT_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "actors/httpc.h"
#include "common/log.h"

#define CRYPTOMUS_INVOICE_LIFETIME_S 3600

typedef struct cryptomus_client_t cryptomus_client_t;

typedef struct {
    const char *api_base;     // "https://api.cryptomus.com"
    const char *merchant;     // merchant uuid (the `merchant` header)
    const char *payment_key;  // payment API key (signs requests)
    const char *public_url;   // our http.public_url: callback, return and success URLs
    int timeout_ms;           // per attempt; 0 = httpc's default
    int max_attempts;         // 0 = httpc's default
} cryptomus_config_t;

typedef struct {
    provider_outcome_t kind;
    long http_status;          // 0 when no answer came
    int attempts;
    bool not_found;            // "Payment not found" (or a 404)
    int state;                 // the answer's "state" (0 = success), -1 when absent
    char message[256];         // "message" of a refusal; may echo the request: never log it
    char errors[256];          // a 422's rules as "field:validation.rule,…" (names only)
} cryptomus_outcome_t;

typedef struct {
    char uuid[64];
    char order_id[136];
    char amount[40];           // as Cryptomus wrote it, e.g. "15.00"
    char currency[16];
    char payer_currency[16];
    char payment_amount[40];
    char url[512];             // https://pay.cryptomus.com/pay/<uuid>
    int64_t expired_at;        // unix seconds; -1 when absent
    char status[32];           // "status" (or "payment_status"): check, paid, cancel, ...
    bool is_final;
    char additional_data[256];
} cryptomus_payment_t;

typedef struct {
    const char *booking_id;    // becomes order_id and additional_data; [A-Za-z0-9_-], 1..128
    int64_t amount_cents;      // > 0; sent as a decimal string ("15.00")
    const char *currency;      // 3 to 10 letters, any case (sent uppercase): "usd", "USDT"
    int lifetime_s;            // 0 = CRYPTOMUS_INVOICE_LIFETIME_S; else 300..43200
} cryptomus_invoice_params_t;

// `payment` is NULL unless outcome->kind == PROVIDER_OK; both valid during the call only.
typedef void(cryptomus_payment_fn)(void *arg, const cryptomus_outcome_t *outcome, const cryptomus_payment_t *payment);

// Copies cfg (NULL when a field is missing). `http` must outlive the client; the client may be
// destroyed while its calls are in flight.
cryptomus_client_t *cryptomus_client_new(httpc_t *http, const cryptomus_config_t *cfg, const logger_t *lg);
void cryptomus_client_destroy(cryptomus_client_t **self_p);

// 0 (done is called exactly once, later) or -1 (invalid arguments or httpc refused; no call).
int cryptomus_invoice_create(cryptomus_client_t *self, const cryptomus_invoice_params_t *p,
                             cryptomus_payment_fn *done, void *arg);
int cryptomus_payment_info(cryptomus_client_t *self, const char *order_id, cryptomus_payment_fn *done, void *arg);

// ---- the two halves, exposed for tests -------------------------------------------------------

int cryptomus_prepare_invoice(const cryptomus_client_t *self, const cryptomus_invoice_params_t *p,
                              httpc_prepared_t *out);
int cryptomus_prepare_info(const cryptomus_client_t *self, const char *order_id, httpc_prepared_t *out);
void cryptomus_parse_payment(const httpc_response_t *resp, cryptomus_outcome_t *out, cryptomus_payment_t *payment);

// "15.00" from 1500 into buf. 0, or -1 for a negative amount or a small buffer.
int cryptomus_amount_from_cents(int64_t cents, char *buf, size_t size);
// PHP json_encode text of v (compact, "\/", \uxxxx in lowercase hex), malloc'ed; NULL on failure.
char *cryptomus_json_encode(const json_t *v);

#endif
