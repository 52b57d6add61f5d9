// tests/fuzz/fuzz.h — what the libFuzzer targets share: the fixed clock and secrets they run with
// (so a given input always takes the same path), and FUZZ_CHECK for the properties they assert
// beyond "no crash" (an abort is a finding like any sanitizer report).
//
// The seed generator (fuzz_gen_seeds.c) includes this too: tokens and signatures in the seed corpus
// are made with the same secrets and clock as the targets check them with.
#ifndef SWEETY_FUZZ_H
#define SWEETY_FUZZ_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

// 2023-11-14T22:13:20Z + 100 s: after the Stripe test vectors' t=1700000000 (providers.md §1.7),
// well inside their 300 s tolerance, so the vectors verify.
#define FUZZ_NOW 1700000100

#define FUZZ_TOKEN_SECRET "fuzz-token-secret-0123456789abcdef"
#define FUZZ_TOKEN_TTL_S (7 * 24 * 3600)

#define FUZZ_STRIPE_SECRET "whsec_test_secret"      // providers.md §1.7
#define FUZZ_STRIPE_SECRET_OLD "whsec_abc"          // a second one, as during a rotation
#define FUZZ_CRYPTOMUS_KEY "testPaymentKey123"      // providers.md §3.5
#define FUZZ_VAPI_SECRET "vapi-fuzz-secret"

#define FUZZ_CHECK(cond)                                                                      \
    do {                                                                                      \
        if (!(cond)) {                                                                        \
            fprintf(stderr, "%s:%d: FUZZ_CHECK failed: %s\n", __FILE__, __LINE__, #cond);     \
            abort();                                                                          \
        }                                                                                     \
    } while (0)

#endif
