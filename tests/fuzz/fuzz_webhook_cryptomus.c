// tests/fuzz/fuzz_webhook_cryptomus.c — Cryptomus webhook bodies (realtime/webhook_parse.c,
// cryptomus_event_parse and webhook_decimal_cents on the amounts it keeps).
//
// Input: the raw body. An accepted body must have uuid, order_id and status; every amount kept must
// be a decimal Cryptomus writes ("15", "15.00") and convert to cents unless it has more than 15
// integer digits.
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "realtime/webhook_parse.h"
#include "tests/fuzz/fuzz.h"

#define TERMINATED(field) FUZZ_CHECK(memchr((field), '\0', sizeof(field)) != NULL)

static void check_amount(const char *s) {
    if (!s[0]) return;
    size_t i = 0, ints = 0;
    while (s[i] >= '0' && s[i] <= '9') i++, ints++;
    FUZZ_CHECK(ints > 0);
    if (s[i] == '.') {
        i++;
        FUZZ_CHECK(s[i] >= '0' && s[i] <= '9');
        while (s[i] >= '0' && s[i] <= '9') i++;
    }
    FUZZ_CHECK(s[i] == '\0');
    int64_t cents = -1;
    int rc = webhook_decimal_cents(s, &cents);
    FUZZ_CHECK(rc == (ints > 15 ? -1 : 0));
    if (rc == 0) FUZZ_CHECK(cents >= 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    cryptomus_event_t ev;
    api_error_t err;
    memset(&ev, 0x5a, sizeof ev);
    if (cryptomus_event_parse((const char *)data, size, &ev, &err) != 0) {
        FUZZ_CHECK(err.http_status == 400 || err.http_status == 413);
        return 0;
    }
    TERMINATED(ev.type);
    TERMINATED(ev.uuid);
    TERMINATED(ev.order_id);
    TERMINATED(ev.status);
    TERMINATED(ev.amount);
    TERMINATED(ev.payment_amount);
    TERMINATED(ev.merchant_amount);
    TERMINATED(ev.currency);
    TERMINATED(ev.payer_currency);
    TERMINATED(ev.additional_data);
    TERMINATED(ev.txid);
    FUZZ_CHECK(ev.uuid[0] && ev.order_id[0] && ev.status[0]);
    check_amount(ev.amount);
    check_amount(ev.payment_amount);
    check_amount(ev.merchant_amount);
    return 0;
}
