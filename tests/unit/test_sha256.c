/* src/core/sha256.c, rbl's SHA-256 for the audit chain: the FIPS 180-4 examples, then a
 * differential test against OpenSSL's SHA-256 over every length 0..1100 and random splits
 * of the input into update() calls (block boundaries, 55/56/64-byte padding edges). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/evp.h>

#include "sha256.h"

static void hex(const unsigned char *md, char out[65]) {
  for (int i = 0; i < 32; i++)
    snprintf(out + 2 * i, 3, "%02x", md[i]);
}

static void test_vectors(void **state) {
  (void)state;
  static const struct {
    const char *in, *want;
  } v[] = {
      {"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
      {"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
      {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
       "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
  };
  for (size_t i = 0; i < sizeof v / sizeof *v; i++) {
    unsigned char md[32];
    char h[65];
    rbl_sha256(v[i].in, strlen(v[i].in), md);
    hex(md, h);
    assert_string_equal(h, v[i].want);
  }
  /* one million 'a' (FIPS 180-2 appendix B.3), fed in uneven pieces */
  rbl_sha256_ctx c;
  rbl_sha256_init(&c);
  char a[1001];
  memset(a, 'a', sizeof a);
  for (int i = 0; i < 1000; i++)
    rbl_sha256_update(&c, a, i % 2 ? 999 : 1001);
  unsigned char md[32];
  char h[65];
  rbl_sha256_final(&c, md);
  hex(md, h);
  assert_string_equal(h, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

static void test_against_openssl(void **state) {
  (void)state;
  unsigned char buf[1100];
  unsigned seed = 12345;
  for (size_t i = 0; i < sizeof buf; i++)
    buf[i] = (unsigned char)(rand_r(&seed) & 0xff);
  for (size_t n = 0; n <= sizeof buf; n++) {
    unsigned char want[32], got[32], got2[32];
    unsigned int wl = 0;
    assert_int_equal(EVP_Digest(buf, n, want, &wl, EVP_sha256(), NULL), 1);
    rbl_sha256(buf, n, got);
    assert_memory_equal(got, want, 32);
    /* the same bytes in random pieces */
    rbl_sha256_ctx c;
    rbl_sha256_init(&c);
    size_t off = 0;
    while (off < n) {
      size_t k = (size_t)(rand_r(&seed) % 130);
      if (k > n - off) k = n - off;
      rbl_sha256_update(&c, buf + off, k);
      off += k;
    }
    rbl_sha256_final(&c, got2);
    assert_memory_equal(got2, want, 32);
  }
}

/* Both implementations: the SHA-extension one where the CPU has it, and the portable one. */
static int portable(void **state) {
  (void)state;
  rbl_sha256_portable(1);
  return 0;
}

static int native(void **state) {
  (void)state;
  rbl_sha256_portable(0);
  return 0;
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup(test_vectors, native),
      cmocka_unit_test_setup(test_against_openssl, native),
      cmocka_unit_test_setup(test_vectors, portable),
      cmocka_unit_test_setup(test_against_openssl, portable),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
