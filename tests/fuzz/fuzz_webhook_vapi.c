// tests/fuzz/fuzz_webhook_vapi.c — VAPI server messages (realtime/webhook_parse.c,
// vapi_event_parse): status updates, end-of-call reports and every other type.
//
// Input: the raw body. An accepted message must have a type; status-update and end-of-call-report
// a call id; status-update a status; a duration, when there is one, is never negative.
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "realtime/webhook_parse.h"
#include "tests/fuzz/fuzz.h"

#define TERMINATED(field) FUZZ_CHECK(memchr((field), '\0', sizeof(field)) != NULL)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    vapi_event_t ev;
    api_error_t err;
    memset(&ev, 0x5a, sizeof ev);
    if (vapi_event_parse((const char *)data, size, &ev, &err) != 0) {
        FUZZ_CHECK(err.http_status == 400 || err.http_status == 413);
        return 0;
    }
    TERMINATED(ev.type);
    TERMINATED(ev.call_id);
    TERMINATED(ev.status);
    TERMINATED(ev.ended_reason);
    TERMINATED(ev.recording_url);
    TERMINATED(ev.booking_id);
    FUZZ_CHECK(ev.type[0] != '\0');
    bool status_update = !strcmp(ev.type, "status-update");
    bool report = !strcmp(ev.type, "end-of-call-report");
    if (status_update || report) FUZZ_CHECK(ev.call_id[0] != '\0');
    if (status_update) FUZZ_CHECK(ev.status[0] != '\0');
    if (ev.has_duration) FUZZ_CHECK(report && ev.duration_ms >= 0);
    return 0;
}
