/* RFC 8785 canonicalization (src/core/jcs.c) against tests/audit/jcs_vectors.json. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <cjson/cJSON.h>

#include "audit.h"
#include "jcs.h"
#include "rbl.h"

static cJSON *vectors;

static char *slurp(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  rewind(f);
  char *s = malloc((size_t)n + 1);
  if (s && fread(s, 1, (size_t)n, f) != (size_t)n) n = 0;
  fclose(f);
  if (s) s[n] = '\0';
  return s;
}

static int load(void **state) {
  char *s = slurp("tests/audit/jcs_vectors.json");
  vectors = s ? cJSON_Parse(s) : NULL;
  free(s);
  return vectors ? 0 : -1;
}

static int unload(void **state) {
  cJSON_Delete(vectors);
  return 0;
}

static void test_canonical(void **state) {
  cJSON *c;
  int n = 0;
  cJSON_ArrayForEach(c, cJSON_GetObjectItem(vectors, "canonical")) {
    const char *in = cJSON_GetObjectItem(c, "input")->valuestring;
    const char *want = cJSON_GetObjectItem(c, "output")->valuestring;
    cJSON *j = cJSON_Parse(in);
    assert_non_null(j);
    char *got = rbl_jcs_string(j, NULL);
    if (!got || strcmp(got, want) != 0)
      fail_msg("%s:\n got  %s\n want %s", cJSON_GetObjectItem(c, "name")->valuestring, got, want);
    free(got);
    cJSON_Delete(j);
    n++;
  }
  assert_true(n >= 7);
}

static void test_numbers(void **state) {
  cJSON *c;
  int n = 0;
  cJSON_ArrayForEach(c, cJSON_GetObjectItem(vectors, "numbers")) {
    uint64_t bits = strtoull(cJSON_GetObjectItem(c, "bits")->valuestring, NULL, 16);
    const cJSON *want = cJSON_GetObjectItem(c, "output");
    double d;
    char out[32];
    memcpy(&d, &bits, 8);
    int len = rbl_jcs_number(d, out);
    if (cJSON_IsNull(want)) {
      assert_int_equal(len, RBL_EINVAL);
    } else {
      assert_true(len > 0);
      assert_string_equal(out, want->valuestring);
      assert_int_equal(len, (int)strlen(out));
    }
    n++;
  }
  assert_true(n >= 27);
}

static int unhex(const char *h, char *out) {
  size_t n = strlen(h) / 2;
  for (size_t i = 0; i < n; i++) {
    unsigned v;
    sscanf(h + 2 * i, "%2x", &v);
    out[i] = (char)v;
  }
  out[n] = '\0';
  return (int)n;
}

static void test_invalid(void **state) {
  cJSON *c;
  cJSON_ArrayForEach(c, cJSON_GetObjectItem(vectors, "invalid")) {
    char raw[256];
    const cJSON *in = cJSON_GetObjectItem(c, "input");
    const char *text = in ? in->valuestring : raw;
    if (!in) unhex(cJSON_GetObjectItem(c, "input_hex")->valuestring, raw);
    cJSON *j = cJSON_Parse(text);
    assert_non_null(j);
    rbl_jcs_buf b = {0};
    rbl_jcs_buf_put(&b, "keep", 4);
    if (rbl_jcs_append(&b, j) != RBL_EINVAL)
      fail_msg("accepted: %s", cJSON_GetObjectItem(c, "name")->valuestring);
    assert_int_equal(b.len, 4); /* a failed append leaves the buffer as it was */
    rbl_jcs_buf_free(&b);
    cJSON_Delete(j);
  }
}

static void test_records(void **state) {
  cJSON *c, *g = cJSON_GetObjectItem(vectors, "genesis");
  char gen[RBL_AUDIT_HASH_LEN + 1], hash[RBL_AUDIT_HASH_LEN + 1];
  rbl_audit_genesis(cJSON_GetObjectItem(g, "incident")->valuestring, gen);
  assert_string_equal(gen, cJSON_GetObjectItem(g, "prev")->valuestring);
  rbl_audit_hasher *h = rbl_audit_hasher_new(NULL, 0);
  cJSON_ArrayForEach(c, cJSON_GetObjectItem(vectors, "records")) {
    cJSON *rec = cJSON_GetObjectItem(c, "record");
    char *canon = rbl_jcs_string(rec, NULL);
    assert_string_equal(canon, cJSON_GetObjectItem(c, "canonical")->valuestring);
    rbl_jcs_piece all = {0, strlen(canon)};
    assert_int_equal(rbl_audit_hasher_run(h, canon, &all, 1, hash, NULL), 0);
    assert_string_equal(hash, cJSON_GetObjectItem(c, "hash")->valuestring);
    free(canon);
    /* the line with hash: omitting hash/mac gives back the hashed bytes */
    cJSON *line = cJSON_Parse(cJSON_GetObjectItem(c, "line")->valuestring);
    static const char *const omit[] = {"hash", "mac"};
    rbl_jcs_buf b = {0};
    rbl_jcs_piece p[8];
    size_t np = 0;
    assert_int_equal(rbl_jcs_append_omit(&b, line, omit, 2, p, &np), 0);
    assert_string_equal(b.data, cJSON_GetObjectItem(c, "line")->valuestring);
    assert_int_equal(rbl_audit_hasher_run(h, b.data, p, np, hash, NULL), 0);
    assert_string_equal(hash, cJSON_GetObjectItem(c, "hash")->valuestring);
    rbl_jcs_buf_free(&b);
    cJSON_Delete(line);
  }
  rbl_audit_hasher_free(h);
}

/* Omitting members at every position (first, middle, last, adjacent, all) matches a
 * canonicalization of the object without them. */
static void test_omit_pieces(void **state) {
  static const char *const keys[] = {"a", "b", "c", "d"};
  for (unsigned mask = 0; mask < 16; mask++) {
    cJSON *full = cJSON_CreateObject(), *part = cJSON_CreateObject();
    const char *omit[4];
    size_t nomit = 0;
    for (int i = 0; i < 4; i++) {
      cJSON_AddNumberToObject(full, keys[i], i);
      if (mask & (1u << i))
        omit[nomit++] = keys[i];
      else
        cJSON_AddNumberToObject(part, keys[i], i);
    }
    rbl_jcs_buf b = {0}, joined = {0};
    rbl_jcs_piece p[16];
    size_t np = 0;
    assert_int_equal(rbl_jcs_append_omit(&b, full, omit, nomit, p, &np), 0);
    for (size_t i = 0; i < np; i++)
      rbl_jcs_buf_put(&joined, b.data + p[i].off, p[i].len);
    char *want = rbl_jcs_string(part, NULL);
    assert_string_equal(joined.data, want);
    free(want);
    rbl_jcs_buf_free(&b);
    rbl_jcs_buf_free(&joined);
    cJSON_Delete(full);
    cJSON_Delete(part);
  }
}

/* The vector lines, written as a file, are a chain `rbl audit verify` accepts. */
static void test_records_verify(void **state) {
  char path[] = "/tmp/rbl-jcs-vectors-XXXXXX";
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  FILE *f = fdopen(fd, "w");
  cJSON *c;
  cJSON_ArrayForEach(c, cJSON_GetObjectItem(vectors, "records"))
      fprintf(f, "%s\n", cJSON_GetObjectItem(c, "line")->valuestring);
  fclose(f);
  char *argv[] = {"verify", path, NULL};
  assert_int_equal(rbl_audit_main(2, argv), 0);
  unlink(path);
}

static void test_keycmp(void **state) {
  assert_true(rbl_jcs_keycmp("a", "b") < 0);
  assert_true(rbl_jcs_keycmp("a", "ab") < 0);
  assert_true(rbl_jcs_keycmp("\xf0\x9f\x98\x80", "\xef\xac\xb3") <
              0); /* U+1F600 < U+FB33 in UTF-16 */
  assert_true(rbl_jcs_keycmp("\xed\x9f\xbf", "\xf0\x90\x80\x80") < 0); /* U+D7FF < U+10000 */
  assert_int_equal(rbl_jcs_keycmp("same", "same"), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_canonical),      cmocka_unit_test(test_numbers),
      cmocka_unit_test(test_invalid),        cmocka_unit_test(test_records),
      cmocka_unit_test(test_omit_pieces),    cmocka_unit_test(test_keycmp),
      cmocka_unit_test(test_records_verify),
  };
  return cmocka_run_group_tests(tests, load, unload);
}
