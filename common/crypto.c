// common/crypto.c — AES-256-GCM sealing of secrets at rest (see crypto.h).
//
// The EVP calls follow OpenSSL's GCM example: set the IV length before the key and IV, no
// additional authenticated data, the tag fetched after EncryptFinal and set before DecryptFinal
// (which is what checks it). A nonce is never reused under one key because each is 96 random bits
// from RAND_bytes, per value; the number of values sealed under one master key (a handful of
// accounts) stays many orders of magnitude below the birthday bound.
#include "common/crypto.h"

#include <limits.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdlib.h>
#include <string.h>

int crypto_seal(const unsigned char key[CRYPTO_KEY_LEN], const void *plain, size_t len, unsigned char **out,
                size_t *out_len, unsigned char nonce[CRYPTO_NONCE_LEN]) {
    if (!key || !out || !out_len || !nonce || (len > 0 && !plain) || len > CRYPTO_MAX_PLAIN) return -1;
    unsigned char iv[CRYPTO_NONCE_LEN];
    if (RAND_bytes(iv, sizeof iv) != 1) return -1;
    unsigned char *buf = malloc(len + CRYPTO_TAG_LEN);
    if (!buf) return -1;
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    int ok = ctx != NULL;
    int n = 0, fin = 0;
    ok = ok && EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL) == 1;
    ok = ok && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, CRYPTO_NONCE_LEN, NULL) == 1;
    ok = ok && EVP_EncryptInit_ex(ctx, NULL, NULL, key, iv) == 1;
    if (ok && len > 0) ok = EVP_EncryptUpdate(ctx, buf, &n, plain, (int)len) == 1;
    ok = ok && EVP_EncryptFinal_ex(ctx, buf + n, &fin) == 1;
    ok = ok && (size_t)(n + fin) == len;
    ok = ok && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, CRYPTO_TAG_LEN, buf + len) == 1;
    EVP_CIPHER_CTX_free(ctx);
    if (!ok) {
        free(buf);
        return -1;
    }
    memcpy(nonce, iv, sizeof iv);
    *out = buf;
    *out_len = len + CRYPTO_TAG_LEN;
    return 0;
}

int crypto_open(const unsigned char key[CRYPTO_KEY_LEN], const unsigned char *sealed, size_t sealed_len,
                const unsigned char nonce[CRYPTO_NONCE_LEN], unsigned char **plain, size_t *plain_len) {
    if (!key || !sealed || !nonce || !plain || !plain_len) return -1;
    if (sealed_len < CRYPTO_TAG_LEN || sealed_len - CRYPTO_TAG_LEN > CRYPTO_MAX_PLAIN) return -1;
    size_t len = sealed_len - CRYPTO_TAG_LEN;
    unsigned char *buf = malloc(len + 1);
    if (!buf) return -1;
    unsigned char tag[CRYPTO_TAG_LEN];
    memcpy(tag, sealed + len, sizeof tag);
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    int ok = ctx != NULL;
    int n = 0, fin = 0;
    ok = ok && EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL) == 1;
    ok = ok && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, CRYPTO_NONCE_LEN, NULL) == 1;
    ok = ok && EVP_DecryptInit_ex(ctx, NULL, NULL, key, nonce) == 1;
    if (ok && len > 0) ok = EVP_DecryptUpdate(ctx, buf, &n, sealed, (int)len) == 1;
    ok = ok && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, CRYPTO_TAG_LEN, tag) == 1;
    // The tag is checked here: a mismatch returns <= 0 and the bytes decrypted so far are wiped.
    ok = ok && EVP_DecryptFinal_ex(ctx, buf + n, &fin) == 1;
    ok = ok && (size_t)(n + fin) == len;
    EVP_CIPHER_CTX_free(ctx);
    if (!ok) {
        crypto_secret_free(buf, len);
        return -1;
    }
    buf[len] = '\0';
    *plain = buf;
    *plain_len = len;
    return 0;
}

void crypto_secret_free(void *p, size_t len) {
    if (!p) return;
    OPENSSL_cleanse(p, len);
    free(p);
}

int crypto_master_key_decode(const char *b64, unsigned char key[CRYPTO_KEY_LEN]) {
    static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    if (!b64 || !key) return -1;
    // EVP_DecodeBlock tolerates white space and stray '=': check the syntax first.
    size_t n = strlen(b64);
    size_t body = strspn(b64, alphabet);
    size_t pad = n - body;
    if (n == 0 || n % 4 != 0 || n > 64 || pad > 2 || strspn(b64 + body, "=") != pad) return -1;
    unsigned char out[64];
    int got = EVP_DecodeBlock(out, (const unsigned char *)b64, (int)n);
    int rc = -1;
    if (got >= 0 && (size_t)got >= pad && (size_t)got - pad == CRYPTO_KEY_LEN) {
        memcpy(key, out, CRYPTO_KEY_LEN);
        rc = 0;
    }
    OPENSSL_cleanse(out, sizeof out);
    return rc;
}
