/* SHA-256 (FIPS 180-4) in plain C: the audit chain's hash, the runbook's and modules' digests.
 * rbl's own so a run that needs no other cryptography never initialises OpenSSL (its provider
 * set-up was a large part of start-up); tests/unit/test_sha256.c checks it against OpenSSL. */
#ifndef RBL_SHA256_H
#define RBL_SHA256_H

#include <stddef.h>
#include <stdint.h>

typedef struct rbl_sha256_ctx {
  uint32_t h[8];
  uint64_t bytes; /* total length so far */
  unsigned char block[64];
  size_t used; /* bytes in block */
} rbl_sha256_ctx;

void rbl_sha256_init(rbl_sha256_ctx *c);
void rbl_sha256_update(rbl_sha256_ctx *c, const void *data, size_t len);
void rbl_sha256_final(rbl_sha256_ctx *c, unsigned char out[32]);
/* Tests: on != 0 uses the portable C code even where the CPU has SHA extensions. */
void rbl_sha256_portable(int on);
/* One call: out = SHA-256(data). */
void rbl_sha256(const void *data, size_t len, unsigned char out[32]);

#endif
