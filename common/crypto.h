// common/crypto.h — secrets at rest: AES-256-GCM under security.master_key (OpenSSL EVP).
//
// Used by sweetyctl (account add: seals a VAPI private key) and by the dialer (opens it right
// before a request, then wipes it). Every value gets its own random 96-bit nonce; the sealed form
// is ciphertext || 16-byte tag, stored beside its nonce (vapi_accounts.api_key_enc, api_key_nonce).
// Opening checks the tag, so a changed byte of ciphertext, tag or nonce, or another key, fails.
// Pure functions, any thread. Plaintext copies made here are wiped (OPENSSL_cleanse) before free.
#ifndef SWEETY_CRYPTO_H
#define SWEETY_CRYPTO_H

#include <stddef.h>

#define CRYPTO_KEY_LEN 32
#define CRYPTO_NONCE_LEN 12
#define CRYPTO_TAG_LEN 16
#define CRYPTO_MAX_PLAIN (1u << 20)   // longer values are refused

// Encrypts len bytes of plain (len may be 0; plain may then be NULL). On success returns 0,
// *out is a malloc'ed buffer of *out_len = len + CRYPTO_TAG_LEN bytes (ciphertext then tag) and
// nonce[] holds the fresh random nonce. -1 on failure (outputs untouched).
int crypto_seal(const unsigned char key[CRYPTO_KEY_LEN], const void *plain, size_t len, unsigned char **out,
                size_t *out_len, unsigned char nonce[CRYPTO_NONCE_LEN]);

// Decrypts and authenticates what crypto_seal produced. On success returns 0 and *plain is a
// malloc'ed buffer of *plain_len bytes plus a terminating NUL (not counted), to be released with
// crypto_secret_free(*plain, *plain_len). -1 when the tag does not match (tampered data, wrong key
// or nonce), the input is shorter than a tag, or on an OpenSSL failure (outputs untouched).
int crypto_open(const unsigned char key[CRYPTO_KEY_LEN], const unsigned char *sealed, size_t sealed_len,
                const unsigned char nonce[CRYPTO_NONCE_LEN], unsigned char **plain, size_t *plain_len);

// Wipes the first len bytes of p, then frees it. NULL is fine.
void crypto_secret_free(void *p, size_t len);

// Decodes security.master_key: standard base64 with padding (no white space) of exactly 32 bytes,
// OpenSSL's decoder. 0, or -1 for anything else (key untouched).
int crypto_master_key_decode(const char *b64, unsigned char key[CRYPTO_KEY_LEN]);

#endif
