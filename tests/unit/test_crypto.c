// tests/unit/test_crypto.c — common/crypto.c: AES-256-GCM sealing of secrets at rest.
//
// The known-answer vectors are test cases 13 and 14 of the GCM specification (McGrew & Viega,
// "The Galois/Counter Mode of Operation", AES-256, zero key and IV), checked independently with
// Python's cryptography package (AESGCM(bytes(32)).encrypt(bytes(12), ..., None)).
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
// cmocka after the standard headers it needs
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/crypto.h"

// base64 of "0123456789abcdef0123456789abcdef" (the test daemons' master key).
#define MASTER_B64 "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
#define SECRET "vapi-private-key-5f0c2a9e-7d41-4b3a-9c55-0e8f1d2b6a77"

static void unhex(const char *hex, unsigned char *out, size_t n) {
    for (size_t i = 0; i < n; i++) {
        unsigned v = 0;
        assert_int_equal(sscanf(hex + 2 * i, "%2x", &v), 1);
        out[i] = (unsigned char)v;
    }
}

static void master(unsigned char key[CRYPTO_KEY_LEN]) {
    assert_int_equal(crypto_master_key_decode(MASTER_B64, key), 0);
}

static void test_seal_then_open_gives_the_plaintext_back(void **state) {
    unsigned char key[CRYPTO_KEY_LEN], nonce[CRYPTO_NONCE_LEN];
    master(key);
    unsigned char *sealed = NULL;
    size_t sealed_len = 0;
    assert_int_equal(crypto_seal(key, SECRET, strlen(SECRET), &sealed, &sealed_len, nonce), 0);
    assert_int_equal(sealed_len, strlen(SECRET) + CRYPTO_TAG_LEN);
    assert_null(memmem(sealed, sealed_len, SECRET, strlen(SECRET)));
    unsigned char *plain = NULL;
    size_t plain_len = 0;
    assert_int_equal(crypto_open(key, sealed, sealed_len, nonce, &plain, &plain_len), 0);
    assert_int_equal(plain_len, strlen(SECRET));
    assert_string_equal((char *)plain, SECRET);   // NUL-terminated for the caller's convenience
    crypto_secret_free(plain, plain_len);
    free(sealed);
}

static void test_empty_value_round_trips(void **state) {
    unsigned char key[CRYPTO_KEY_LEN], nonce[CRYPTO_NONCE_LEN];
    master(key);
    unsigned char *sealed = NULL, *plain = NULL;
    size_t sealed_len = 0, plain_len = 99;
    assert_int_equal(crypto_seal(key, NULL, 0, &sealed, &sealed_len, nonce), 0);
    assert_int_equal(sealed_len, CRYPTO_TAG_LEN);
    assert_int_equal(crypto_open(key, sealed, sealed_len, nonce, &plain, &plain_len), 0);
    assert_int_equal(plain_len, 0);
    assert_string_equal((char *)plain, "");
    crypto_secret_free(plain, plain_len);
    free(sealed);
}

static void test_known_answers_from_the_gcm_specification(void **state) {
    unsigned char key[CRYPTO_KEY_LEN] = {0}, nonce[CRYPTO_NONCE_LEN] = {0};
    unsigned char tc13[16], tc14[32];
    unhex("530f8afbc74536b9a963b4f1c4cb738b", tc13, sizeof tc13);
    unhex("cea7403d4d606b6e074ec5d3baf39d18d0d1c8a799996bf0265b98b5d48ab919", tc14, sizeof tc14);
    unsigned char *plain = NULL;
    size_t plain_len = 0;
    assert_int_equal(crypto_open(key, tc13, sizeof tc13, nonce, &plain, &plain_len), 0);
    assert_int_equal(plain_len, 0);
    crypto_secret_free(plain, plain_len);
    assert_int_equal(crypto_open(key, tc14, sizeof tc14, nonce, &plain, &plain_len), 0);
    assert_int_equal(plain_len, 16);
    static const unsigned char zeros[16] = {0};
    assert_memory_equal(plain, zeros, 16);
    crypto_secret_free(plain, plain_len);
}

static void test_changing_any_byte_of_ciphertext_tag_or_nonce_fails(void **state) {
    unsigned char key[CRYPTO_KEY_LEN], nonce[CRYPTO_NONCE_LEN];
    master(key);
    unsigned char *sealed = NULL;
    size_t sealed_len = 0;
    assert_int_equal(crypto_seal(key, SECRET, strlen(SECRET), &sealed, &sealed_len, nonce), 0);
    unsigned char *plain = (unsigned char *)"untouched";
    size_t plain_len = 12345;
    for (size_t i = 0; i < sealed_len; i++) {   // ciphertext bytes, then the 16 tag bytes
        for (int bit = 0; bit < 8; bit += 7) {
            sealed[i] ^= (unsigned char)(1u << bit);
            assert_int_equal(crypto_open(key, sealed, sealed_len, nonce, &plain, &plain_len), -1);
            sealed[i] ^= (unsigned char)(1u << bit);
        }
    }
    for (size_t i = 0; i < CRYPTO_NONCE_LEN; i++) {
        nonce[i] ^= 0x01;
        assert_int_equal(crypto_open(key, sealed, sealed_len, nonce, &plain, &plain_len), -1);
        nonce[i] ^= 0x01;
    }
    // Shortened (a tag byte lost) or lengthened input fails too.
    assert_int_equal(crypto_open(key, sealed, sealed_len - 1, nonce, &plain, &plain_len), -1);
    unsigned char *longer = malloc(sealed_len + 1);
    assert_non_null(longer);
    memcpy(longer, sealed, sealed_len);
    longer[sealed_len] = 0;
    assert_int_equal(crypto_open(key, longer, sealed_len + 1, nonce, &plain, &plain_len), -1);
    assert_int_equal(crypto_open(key, sealed, CRYPTO_TAG_LEN - 1, nonce, &plain, &plain_len), -1);
    // Outputs untouched on failure.
    assert_string_equal((char *)plain, "untouched");
    assert_int_equal(plain_len, 12345);
    // And the unchanged input still opens.
    assert_int_equal(crypto_open(key, sealed, sealed_len, nonce, &plain, &plain_len), 0);
    crypto_secret_free(plain, plain_len);
    free(longer);
    free(sealed);
}

static void test_another_key_fails(void **state) {
    unsigned char key[CRYPTO_KEY_LEN], other[CRYPTO_KEY_LEN], nonce[CRYPTO_NONCE_LEN];
    master(key);
    memcpy(other, key, sizeof other);
    other[31] ^= 0x80;
    unsigned char *sealed = NULL, *plain = NULL;
    size_t sealed_len = 0, plain_len = 0;
    assert_int_equal(crypto_seal(key, SECRET, strlen(SECRET), &sealed, &sealed_len, nonce), 0);
    assert_int_equal(crypto_open(other, sealed, sealed_len, nonce, &plain, &plain_len), -1);
    assert_null(plain);
    free(sealed);
}

static void test_two_seals_of_one_value_differ(void **state) {
    unsigned char key[CRYPTO_KEY_LEN], n1[CRYPTO_NONCE_LEN], n2[CRYPTO_NONCE_LEN];
    master(key);
    unsigned char *s1 = NULL, *s2 = NULL;
    size_t l1 = 0, l2 = 0;
    assert_int_equal(crypto_seal(key, SECRET, strlen(SECRET), &s1, &l1, n1), 0);
    assert_int_equal(crypto_seal(key, SECRET, strlen(SECRET), &s2, &l2, n2), 0);
    assert_int_equal(l1, l2);
    assert_memory_not_equal(n1, n2, CRYPTO_NONCE_LEN);
    assert_memory_not_equal(s1, s2, l1);
    // Each opens only with its own nonce.
    unsigned char *plain = NULL;
    size_t plain_len = 0;
    assert_int_equal(crypto_open(key, s1, l1, n2, &plain, &plain_len), -1);
    assert_int_equal(crypto_open(key, s2, l2, n2, &plain, &plain_len), 0);
    crypto_secret_free(plain, plain_len);
    free(s1);
    free(s2);
}

static void test_master_key_must_be_base64_of_32_bytes(void **state) {
    unsigned char key[CRYPTO_KEY_LEN];
    memset(key, 0xAA, sizeof key);
    assert_int_equal(crypto_master_key_decode(MASTER_B64, key), 0);
    assert_memory_equal(key, "0123456789abcdef0123456789abcdef", 32);

    unsigned char untouched[CRYPTO_KEY_LEN];
    memset(untouched, 0x55, sizeof untouched);
    static const char *const bad[] = {
        "",
        "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY",          // padding missing
        "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZQ==",         // 31 bytes
        "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWZn",         // 33 bytes
        " MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",        // white space
        "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\n",
        "MDEyMzQ1Njc4OW=iY2RlZjAxMjM0NTY3ODlhYmNkZWY=",         // '=' inside
        "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY-",         // base64url alphabet
        "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWYMDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        unsigned char k[CRYPTO_KEY_LEN];
        memcpy(k, untouched, sizeof k);
        assert_int_equal(crypto_master_key_decode(bad[i], k), -1);
        assert_memory_equal(k, untouched, sizeof k);
    }
    assert_int_equal(crypto_master_key_decode(NULL, key), -1);
}

static void test_bad_arguments_are_refused(void **state) {
    unsigned char key[CRYPTO_KEY_LEN] = {0}, nonce[CRYPTO_NONCE_LEN];
    unsigned char *out = NULL;
    size_t out_len = 0;
    assert_int_equal(crypto_seal(key, NULL, 5, &out, &out_len, nonce), -1);
    assert_int_equal(crypto_seal(key, "x", CRYPTO_MAX_PLAIN + 1, &out, &out_len, nonce), -1);
    assert_null(out);
    assert_int_equal(crypto_open(key, NULL, 20, nonce, &out, &out_len), -1);
    crypto_secret_free(NULL, 10);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_seal_then_open_gives_the_plaintext_back),
        cmocka_unit_test(test_empty_value_round_trips),
        cmocka_unit_test(test_known_answers_from_the_gcm_specification),
        cmocka_unit_test(test_changing_any_byte_of_ciphertext_tag_or_nonce_fails),
        cmocka_unit_test(test_another_key_fails),
        cmocka_unit_test(test_two_seals_of_one_value_differ),
        cmocka_unit_test(test_master_key_must_be_base64_of_32_bytes),
        cmocka_unit_test(test_bad_arguments_are_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
