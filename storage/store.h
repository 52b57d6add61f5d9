// storage/store.h — what every query module of storage/ shares with its callers: the return codes
// and the sizes of the fixed buffers that results are copied into.
//
// Every query function returns STORE_OK (0) or one of the negative codes below and leaves its
// outputs untouched when it fails. The codes keep one meaning across modules (plans.h already
// uses -1, -2 and -3 this way), so a caller can map them to HTTP answers in one place.
#ifndef SWEETY_STORE_H
#define SWEETY_STORE_H

#define STORE_OK 0
#define STORE_ERR_DB (-1)         // the database is unreachable, or failed in a way the caller cannot fix
#define STORE_ERR_NOT_FOUND (-2)  // no such row (a malformed id counts as not found)
#define STORE_ERR_INVALID (-3)    // a value the schema refuses (length, format, unknown key)
#define STORE_ERR_CONFLICT (-4)   // the row's current state does not allow this change
#define STORE_ERR_COOLDOWN (-5)   // a free trial for this phone number in the last 24 hours
#define STORE_ERR_TOO_LATE (-6)   // the booking is past the point where it can be cancelled

// "db", "not_found", "invalid", "conflict", "cooldown", "too_late", "ok", or "unknown".
const char *store_err_name(int rc);

#define STORE_UUID_LEN 37     // 36 characters + NUL
#define STORE_STATUS_MAX 16   // longest enum value ("pending_payment") + NUL
#define STORE_KEY_MAX 16      // plan keys, providers, payment methods
#define STORE_TS_MAX 32       // "2026-11-21T20:31:00.123Z" (RFC3339, UTC, milliseconds)
#define STORE_CURRENCY_MAX 4  // "usd"
#define STORE_REF_MAX 256     // provider ids (session, order, invoice, payment intent, refund): at most 255 bytes

#endif
