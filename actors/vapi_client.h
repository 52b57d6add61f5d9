// actors/vapi_client.h — the VAPI calls the dialer and the duration monitor make (providers.md §2),
// over httpc.
//
// Like stripe_client: a prepare half that builds the exact request (URL, headers, JSON body) and a
// parse half that turns an httpc_response_t into an outcome and a call, both exposed for tests, and
// call functions that glue them to httpc.
//
// Keys. VAPI keys belong to accounts, not to the client: every call that needs one takes it as an
// argument, copies it into the request's Authorization header only, and httpc wipes that copy when
// the request completes (a find also keeps one copy for its later pages, wiped when it ends). Keys, control URLs (a control URL can end a live call without any key),
// request bodies (phone numbers) and VAPI's error messages (they may quote the request) are never
// logged.
//
// Retries. VAPI has no idempotency key, so POST /call is never sent twice automatically — except
// after an error that proves no request left this host (name not resolved, connection refused),
// see httpc `retry_unsent`. When the answer to a create is lost after the request may have left
// (a timeout, a dropped connection, a 5xx, a 2xx we cannot read), the outcome says `maybe_created`
// and the caller must look the call up with vapi_call_find() before dialling that attempt again;
// every call is named after its booking and attempt for that reason (vapi_call_name). Reads (get,
// find) and end-call are retried by httpc like any idempotent request.
//
// Thread: the thread of the httpc it is given. Logs: httpc's `http_out` line per call, plus
// `vapi_rejected` / `vapi_bad_response` with the operation, the HTTP status and VAPI's `error`
// text (a fixed phrase such as "Bad Request", reduced to safe characters), never `message`.
#ifndef SWEETY_VAPI_CLIENT_H
#define SWEETY_VAPI_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "actors/httpc.h"
#include "common/log.h"

#define VAPI_NAME_MAX 40                 // CreateCallDTO.name: at most 40 characters at VAPI
#define VAPI_SERVER_TIMEOUT_S 20         // assistantOverrides.server.timeoutSeconds
#define VAPI_FIND_LIMIT 1000             // GET /call?limit= of vapi_call_find's pages: VAPI's maximum,
                                         // so a busy number needs as few round trips as possible
#define VAPI_FIND_MAX_PAGES 40           // requests one vapi_call_find makes before it gives up (unavailable)
#define VAPI_MAX_DURATION_MIN_S 10       // maxDurationSeconds bounds at VAPI
#define VAPI_MAX_DURATION_MAX_S 43200

typedef struct vapi_client_t vapi_client_t;

typedef struct {
    const char *api_base;        // "https://api.vapi.ai" (a trailing "/" is ignored)
    const char *public_url;      // our http.public_url: server messages go to <public_url>/webhooks/vapi
    const char *webhook_secret;  // vapi.webhook_secret, sent as server.secret so VAPI sends it back in
                                 // X-Vapi-Secret (providers.md §2.7); NULL or "" to leave it out
    int timeout_ms;              // per attempt; 0 = httpc's default
    int max_attempts;            // 0 = httpc's default (also bounds the unsent retries of a create)
    int find_limit;              // vapi_call_find's page size; 0 (or more than VAPI_FIND_LIMIT) =
                                 // VAPI_FIND_LIMIT. Tests use a few.
    int find_max_pages;          // 0 = VAPI_FIND_MAX_PAGES
} vapi_config_t;

typedef enum {
    VAPI_OK = 0,
    VAPI_CONCURRENCY,       // over the account's concurrency limit: a 400 whose message or error
                            // mentions concurrency, or a 201 with subscriptionLimits.concurrencyBlocked
    VAPI_ACCOUNT_ERROR,     // 401, 402, 403: the key or the account is at fault, not the booking
    VAPI_REJECTED,          // another 4xx: VAPI refused this request (404 sets not_found)
    VAPI_UNAVAILABLE,       // no answer, a 429 or a 5xx (after every attempt, for retryable calls)
    VAPI_BAD_RESPONSE,      // an answer we cannot read (a 2xx that does not parse, a body too large)
} vapi_result_t;

const char *vapi_result_name(vapi_result_t kind);   // "ok", "concurrency", "account_error", ...

typedef struct {
    vapi_result_t kind;
    long http_status;          // 0 when no answer came
    int attempts;              // find: summed over its pages
    int pages;                 // find: list requests made (1 for the other calls)
    int transport_error;       // CURLcode of the last attempt, 0 when an answer came
    bool not_found;            // 404
    bool maybe_created;        // create only: the call may exist at VAPI although we have no id (the
                               // request may have arrived: timeout, dropped connection, 5xx, an
                               // unreadable 2xx). false when nothing was sent (connection refused,
                               // name not resolved), for a 429 (refused before any work) and for
                               // every answer that says what happened
    char error[64];            // VAPI's "error" ("Bad Request", ...), reduced to [A-Za-z0-9_.-]
                               // (any other character becomes "_"): safe to log
    char message[256];         // VAPI's "message" (an array's items joined with "; "): may quote
                               // the request (a phone number): never log it
} vapi_outcome_t;

typedef struct {
    char id[64];                    // the call id (required in every parsed call)
    char name[VAPI_NAME_MAX + 1];   // "" when absent or longer than VAPI allows
    char status[24];                // scheduled | queued | ringing | in-progress | forwarding | ended
    char ended_reason[128];
    char phone_number_id[64];
    char control_url[512];          // monitor.controlUrl: a secret, never log it ("" when absent)
    int64_t created_at_ms;          // epoch ms; 0 when absent (also started/ended)
    int64_t started_at_ms;
    int64_t ended_at_ms;
    int64_t cost_micros;            // cost in millionths of a US dollar; -1 when absent
    char recording_url[1024];       // artifact.recordingUrl, else recordingUrl; "" when absent/too long
    bool concurrency_blocked;       // subscriptionLimits.concurrencyBlocked
    int64_t concurrency_limit;      // subscriptionLimits.concurrencyLimit, -1 when absent
    int64_t remaining_concurrent;   // subscriptionLimits.remainingConcurrentCalls, -1 when absent
} vapi_call_t;

typedef struct {
    const char *api_key;            // the account's private key: used for this request only
    const char *assistant_id;       // [A-Za-z0-9_-], 1..64
    const char *phone_number_id;    // [A-Za-z0-9_-], 1..64
    const char *customer_number;    // E.164: "+" then 8..15 digits, the first not 0
    const char *booking_id;         // [A-Za-z0-9_-], 1..64
    int attempt;                    // 1, 2, ... (0 or less is refused)
    int max_duration_s;             // VAPI_MAX_DURATION_MIN_S..VAPI_MAX_DURATION_MAX_S
} vapi_create_params_t;

// Every call's done is called exactly once, later, on the httpc's thread. `call` is valid during the
// call only; it is non-NULL when a call object was read: for VAPI_OK, and for VAPI_CONCURRENCY when
// the refusal came as a 201 carrying a call. vapi_call_find() reports "no such call" as VAPI_OK with
// call NULL.
typedef void(vapi_call_fn)(void *arg, const vapi_outcome_t *outcome, const vapi_call_t *call);
typedef void(vapi_end_fn)(void *arg, const vapi_outcome_t *outcome);

// Copies cfg; NULL when api_base or public_url is missing. `http` must outlive the client; the
// client may be destroyed while its calls are in flight (they keep what they need).
vapi_client_t *vapi_client_new(httpc_t *http, const vapi_config_t *cfg, const logger_t *lg);
void vapi_client_destroy(vapi_client_t **self_p);

// The name a booking's attempt is dialled under, which vapi_call_find() looks for:
// "booking <booking_id> #<attempt>", or "<booking_id> #<attempt>" when that is longer than VAPI's
// 40 characters (a UUID booking id: 36 characters). 0, or -1 when even that does not fit or the
// arguments are invalid.
int vapi_call_name(const char *booking_id, int attempt, char *buf, size_t size);

// Each returns 0 (done will be called exactly once, later) or -1 (invalid arguments or httpc
// refused; done will not be called).

// POST {api_base}/call. Not retried, except while no request left this host.
int vapi_call_create(vapi_client_t *self, const vapi_create_params_t *p, vapi_call_fn *done, void *arg);
// GET {api_base}/call/{call_id}. Retried.
int vapi_call_get(vapi_client_t *self, const char *api_key, const char *call_id, vapi_call_fn *done, void *arg);
// Looks for the call named vapi_call_name(booking_id, attempt) (the newest when several) among the
// number's calls created after created_after_ms: GET {api_base}/call?createdAtGt=<ISO-8601>
// &phoneNumberId=<id>&limit=<find_limit>, newest first, then page by page towards older calls with
// the same filters plus createdAtLt=<the oldest createdAt of the previous page + 1 ms> (so calls
// sharing that millisecond are read again rather than skipped; reading one twice is harmless). Each
// page is retried like any read. A page too large to read (HTTPC_BODY_MAX) is asked again with half
// the limit. Pass a created_after a little before the dial (clock skew).
//
// What the dialer must be able to trust (it dials the attempt again on "no such call"):
//   - VAPI_OK with a call: found;
//   - VAPI_OK with call NULL ("no such call"): only after a page that was not full, i.e. VAPI
//     listed every call of the number in the window and none has the name;
//   - VAPI_UNAVAILABLE with http_status 2xx and transport_error 0: the window was not searched to
//     the end: find_max_pages requests were made, or a full page could not lead further (all its
//     calls share one createdAt, none is dated, VAPI ignored createdAtLt, or the page was not
//     newest first, so paging by its oldest createdAt could skip calls), or the next page could
//     not be sent (httpc shutting down). Not "no such call":
//     the dialer's on_call_found treats every kind but VAPI_OK/not_found as "ask again at the next
//     sweep", which never dials twice. Logged as vapi_find_incomplete reason=...;
//   - any other outcome of a page, as for vapi_call_get; not_found (404) is kept for the first page
//     only (the dialer treats it as "no such call"); a 404 on a later page proves nothing.
// The key is copied for the later pages and wiped when done has been called. Retried.
int vapi_call_find(vapi_client_t *self, const char *api_key, const char *phone_number_id, int64_t created_after_ms,
                   const char *booking_id, int attempt, vapi_call_fn *done, void *arg);
// vapi_call_find limited to calls created before created_before_ms too (createdAtLt on the first
// page; 0 = no limit, as vapi_call_find). Why: without it the window runs up to now, so on a busy
// number it grows with every later sweep and may outgrow find_max_pages for good; a caller that
// knows when the dial ended (plus clock skew) keeps it the size of the dial. -1 as well when
// created_before_ms is not after created_after_ms.
int vapi_call_find_window(vapi_client_t *self, const char *api_key, const char *phone_number_id,
                          int64_t created_after_ms, int64_t created_before_ms, const char *booking_id, int attempt,
                          vapi_call_fn *done, void *arg);
// POST <control_url> {"type":"end-call"} (live call control, providers.md §2.3; no key). Retried.
int vapi_call_end(vapi_client_t *self, const char *control_url, vapi_end_fn *done, void *arg);

// ---- the two halves, exposed for tests -------------------------------------------------------

// Build the exact request into *out (cleared first; clear it with httpc_prepared_clear). 0 or -1.
int vapi_prepare_create(const vapi_client_t *self, const vapi_create_params_t *p, httpc_prepared_t *out);
int vapi_prepare_get(const vapi_client_t *self, const char *api_key, const char *call_id, httpc_prepared_t *out);
// vapi_prepare_find builds the first page of a find (find_limit calls, no createdAtLt).
int vapi_prepare_find(const vapi_client_t *self, const char *api_key, const char *phone_number_id,
                      int64_t created_after_ms, httpc_prepared_t *out);
int vapi_prepare_end(const vapi_client_t *self, const char *control_url, httpc_prepared_t *out);

// Classify resp into *out and read the call (outputs zeroed first). *has_call tells whether `call`
// holds one. parse_create applies the concurrency forms and sets maybe_created; parse_get reads
// one call; parse_find reads a list (a JSON array, or an object with a "results" array) and picks
// the newest call whose name equals `name` (*has_call false when none does); parse_end classifies.
void vapi_parse_create(const httpc_response_t *resp, vapi_outcome_t *out, vapi_call_t *call, bool *has_call);
void vapi_parse_get(const httpc_response_t *resp, vapi_outcome_t *out, vapi_call_t *call, bool *has_call);
void vapi_parse_find(const httpc_response_t *resp, const char *name, vapi_outcome_t *out, vapi_call_t *call,
                     bool *has_call);

// What vapi_call_find needs of a page to decide whether to ask for the next one.
typedef struct {
    size_t count;        // items in the list, readable or not (a full page has `limit` of them)
    int64_t oldest_ms;   // the oldest and newest createdAt among the items; 0 when none is dated
    int64_t newest_ms;
    bool unsorted;       // a dated item is newer than one before it (VAPI lists newest first)
} vapi_find_page_t;

// vapi_parse_find, plus *page (zeroed first).
void vapi_parse_find_page(const httpc_response_t *resp, const char *name, vapi_outcome_t *out, vapi_call_t *call,
                          bool *has_call, vapi_find_page_t *page);
void vapi_parse_end(const httpc_response_t *resp, vapi_outcome_t *out);

#endif
