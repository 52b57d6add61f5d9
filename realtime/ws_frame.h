// realtime/ws_frame.h — the JSON of a client's WebSocket frame on /ws (CONTRACT.md, "WebSocket
// /ws"): {"type":"subscribe","booking_id":"…","token":"…","after_seq":N}, read and authorized.
//
// Pure: no I/O, no globals, no libwebsockets; bounded work for any input (the caller has already
// capped a message at 4 KiB). Called by ws.c on the http actor's service thread for every complete
// text message, and by the fuzz target tests/fuzz/fuzz_ws_frame.c.
#ifndef SWEETY_WS_FRAME_H
#define SWEETY_WS_FRAME_H

#include <stddef.h>
#include <stdint.h>

#include "common/token.h"

#define WS_FRAME_SUBSCRIBE 0          // *out filled
#define WS_FRAME_BAD_REQUEST (-1)     // not JSON, not a subscribe, or a field missing / of the wrong type
#define WS_FRAME_UNAUTHORIZED (-2)    // the token is not a valid one for booking_id at now_s

typedef struct {
    char booking_id[TOKEN_BID_MAX + 1];   // 1–TOKEN_BID_MAX bytes, the token's "bid"
    int64_t after_seq;                    // 0 when absent or null; else 0 ≤ after_seq < INT32_MAX
} ws_subscribe_t;

// Parses text[0..len) (duplicate keys refused) and checks its token with token_verify(secret,
// token, now_s). WS_FRAME_SUBSCRIBE and *out filled, or WS_FRAME_BAD_REQUEST /
// WS_FRAME_UNAUTHORIZED with *out untouched. A NULL secret counts as "" (nothing verifies).
int ws_parse_client_frame(const char *text, size_t len, const char *secret, int64_t now_s,
                          ws_subscribe_t *out);

// The same with a NULL-terminated list of token secrets (security.token_secret, then the previous
// one during a rotation: token_verify_any). *matched (may be NULL): the index of the secret that
// verified the token, -1 unless WS_FRAME_SUBSCRIBE.
int ws_parse_client_frame_any(const char *text, size_t len, const char *const *secrets, int64_t now_s,
                              ws_subscribe_t *out, int *matched);

// The same with the secrets already keyed in a token_signer_t (the http actor's, one per thread:
// no HMAC setup per message). A NULL signer verifies nothing (WS_FRAME_UNAUTHORIZED at best).
int ws_parse_client_frame_signer(const char *text, size_t len, token_signer_t *signer, int64_t now_s,
                                 ws_subscribe_t *out, int *matched);

#endif
