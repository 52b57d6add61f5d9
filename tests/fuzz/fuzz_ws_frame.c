// tests/fuzz/fuzz_ws_frame.c — the JSON of a client's WebSocket message on /ws
// (realtime/ws.c, ws_parse_client_frame and ws_parse_client_frame_any) and the status token it
// carries (common/token.c).
//
// Input: the text of one message (ws.c caps them at 4 KiB before parsing). The seed corpus holds
// subscribe messages with tokens issued under FUZZ_TOKEN_SECRET at FUZZ_NOW (fuzz_gen_seeds), so
// mutations start from frames that are accepted. An accepted frame must name a booking id of 1–36
// characters that the token was issued for, and an after_seq in range.
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "realtime/ws_frame.h"
#include "tests/fuzz/fuzz.h"

#define WS_RX_MAX 4096   // ws.c's bound on a client message

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > WS_RX_MAX) return 0;
    ws_subscribe_t sub;
    memset(&sub, 0x5a, sizeof sub);
    int rc = ws_parse_client_frame((const char *)data, size, FUZZ_TOKEN_SECRET, FUZZ_NOW, &sub);
    FUZZ_CHECK(rc == WS_FRAME_SUBSCRIBE || rc == WS_FRAME_BAD_REQUEST || rc == WS_FRAME_UNAUTHORIZED);
    if (rc == WS_FRAME_SUBSCRIBE) {
        size_t n = strnlen(sub.booking_id, sizeof sub.booking_id);
        FUZZ_CHECK(n >= 1 && n <= TOKEN_BID_MAX);
        FUZZ_CHECK(sub.after_seq >= 0 && sub.after_seq < INT32_MAX);
    }
    // The same frame under another secret or with no secret is never accepted.
    int other = ws_parse_client_frame((const char *)data, size, "another secret", FUZZ_NOW, &sub);
    FUZZ_CHECK(other != WS_FRAME_SUBSCRIBE);
    FUZZ_CHECK(ws_parse_client_frame((const char *)data, size, NULL, FUZZ_NOW, &sub) != WS_FRAME_SUBSCRIBE);
    FUZZ_CHECK((rc == WS_FRAME_BAD_REQUEST) == (other == WS_FRAME_BAD_REQUEST));
    // During a rotation the same secret second in the list gives the same answer, and says so.
    static const char *const rotation[] = {"another secret", FUZZ_TOKEN_SECRET, NULL};
    int matched = 7;
    FUZZ_CHECK(ws_parse_client_frame_any((const char *)data, size, rotation, FUZZ_NOW, &sub, &matched) == rc);
    FUZZ_CHECK(matched == (rc == WS_FRAME_SUBSCRIBE ? 1 : -1));
    return 0;
}
