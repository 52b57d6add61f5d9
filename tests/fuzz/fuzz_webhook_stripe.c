// tests/fuzz/fuzz_webhook_stripe.c — Stripe event bodies (realtime/webhook_parse.c,
// stripe_event_parse), as they arrive once their signature has been checked.
//
// Input: the raw body. An accepted event must hold what webhook_parse.h promises: NUL-terminated
// fields, a non-empty id and type, the kind its type names, and an object id for every known kind.
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "realtime/webhook_parse.h"
#include "tests/fuzz/fuzz.h"

#define TERMINATED(field) FUZZ_CHECK(memchr((field), '\0', sizeof(field)) != NULL)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    stripe_event_t ev;
    api_error_t err;
    memset(&ev, 0x5a, sizeof ev);
    if (stripe_event_parse((const char *)data, size, &ev, &err) != 0) {
        FUZZ_CHECK(err.http_status == 400 || err.http_status == 413);
        return 0;
    }
    TERMINATED(ev.id);
    TERMINATED(ev.type);
    TERMINATED(ev.object_id);
    TERMINATED(ev.payment_status);
    TERMINATED(ev.status);
    TERMINATED(ev.payment_intent);
    TERMINATED(ev.client_reference_id);
    TERMINATED(ev.booking_id);
    TERMINATED(ev.currency);
    FUZZ_CHECK(ev.id[0] && ev.type[0]);
    stripe_kind_t expect = STRIPE_KIND_OTHER;
    if (!strncmp(ev.type, "checkout.session.", 17)) expect = STRIPE_KIND_CHECKOUT_SESSION;
    else if (!strcmp(ev.type, "charge.refunded")) expect = STRIPE_KIND_CHARGE_REFUNDED;
    else if (!strncmp(ev.type, "refund.", 7)) expect = STRIPE_KIND_REFUND;
    FUZZ_CHECK(ev.kind == expect);
    if (ev.kind != STRIPE_KIND_OTHER) FUZZ_CHECK(ev.object_id[0] != '\0');
    return 0;
}
