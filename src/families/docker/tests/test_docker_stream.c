/* The Docker multiplexed stream demuxer and the container reference check. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "docker.h"
#include "rbl.h"

typedef struct sink {
  char *buf[4];
  size_t len[4];
  int frames;
} sink;

static void collect(void *ud, int stream, const char *p, size_t n) {
  sink *s = ud;
  s->buf[stream] = realloc(s->buf[stream], s->len[stream] + n);
  memcpy(s->buf[stream] + s->len[stream], p, n);
  s->len[stream] += n;
  s->frames++;
}

static void sink_free(sink *s) {
  for (int i = 0; i < 4; i++)
    free(s->buf[i]);
}

static size_t frame(char *out, int stream, const char *p, size_t n) {
  out[0] = (char)stream;
  out[1] = out[2] = out[3] = 0;
  out[4] = (char)(n >> 24);
  out[5] = (char)(n >> 16);
  out[6] = (char)(n >> 8);
  out[7] = (char)n;
  memcpy(out + 8, p, n);
  return 8 + n;
}

static void test_frames(void **state) {
  char buf[256];
  size_t n = 0;
  n += frame(buf + n, 1, "out\n", 4);
  n += frame(buf + n, 2, "e\0r\n", 4); /* binary: a NUL inside */
  n += frame(buf + n, 1, "", 0);
  n += frame(buf + n, 1, "more", 4);
  sink s = {0};
  size_t bad = 0;
  assert_int_equal(rbl_docker_demux(buf, n, collect, &s, &bad), (ssize_t)n);
  assert_int_equal(s.len[1], 8);
  assert_memory_equal(s.buf[1], "out\nmore", 8);
  assert_int_equal(s.len[2], 4);
  assert_memory_equal(s.buf[2], "e\0r\n", 4);
  assert_int_equal(s.frames, 3); /* empty frames are skipped */
  sink_free(&s);
}

static void test_incomplete(void **state) {
  char buf[64];
  size_t n = frame(buf, 1, "abcdef", 6);
  n += frame(buf + n, 2, "xyz", 3);
  for (size_t cut = 0; cut < n; cut++) {
    sink s = {0};
    ssize_t used = rbl_docker_demux(buf, cut, collect, &s, NULL);
    assert_true(used == 0 || used == 14);
    assert_true((size_t)used <= cut);
    sink_free(&s);
  }
}

static void test_malformed(void **state) {
  char buf[32];
  size_t n = frame(buf, 1, "ok", 2);
  n += frame(buf + n, 7, "??", 2);
  sink s = {0};
  size_t bad = 0;
  assert_int_equal(rbl_docker_demux(buf, n, collect, &s, &bad), RBL_EPROTO);
  assert_int_equal(bad, 10);
  sink_free(&s);
  frame(buf, 1, "ok", 2);
  buf[2] = 1; /* reserved bytes must be zero */
  assert_int_equal(rbl_docker_demux(buf, 10, collect, &s, &bad), RBL_EPROTO);
  assert_int_equal(bad, 0);
}

static void test_large(void **state) {
  enum { SZ = 5 << 20, CH = 32768 };
  char *payload = malloc(SZ), *buf = malloc(SZ + (SZ / CH + 1) * 8);
  for (size_t i = 0; i < SZ; i++)
    payload[i] = (char)(i * 2654435761u >> 13);
  size_t n = 0;
  for (size_t off = 0; off < SZ; off += CH)
    n += frame(buf + n, off / CH % 3 == 2 ? 2 : 1, payload + off, CH);
  sink s = {0};
  assert_int_equal(rbl_docker_demux(buf, n, collect, &s, NULL), (ssize_t)n);
  assert_int_equal(s.len[1] + s.len[2], SZ);
  size_t o1 = 0, o2 = 0;
  for (size_t off = 0; off < SZ; off += CH) {
    if (off / CH % 3 == 2) {
      assert_memory_equal(s.buf[2] + o2, payload + off, CH);
      o2 += CH;
    } else {
      assert_memory_equal(s.buf[1] + o1, payload + off, CH);
      o1 += CH;
    }
  }
  sink_free(&s);
  free(payload);
  free(buf);
}

static void test_check_ref(void **state) {
  const char *why;
  assert_int_equal(rbl_docker_check_ref("web-1", 5, &why), 0);
  assert_int_equal(rbl_docker_check_ref("0123abcd", 8, &why), 0);
  assert_int_equal(rbl_docker_check_ref("a.b_c-d", 7, &why), 0);
  const char *badrefs[] = {"", "a/b", "..", "x..y", "../etc", "a\nb", "a\x7f"};
  for (size_t i = 0; i < sizeof badrefs / sizeof *badrefs; i++)
    assert_int_equal(rbl_docker_check_ref(badrefs[i], strlen(badrefs[i]), &why), RBL_EINVAL);
  assert_int_equal(rbl_docker_check_ref("a\0b", 3, &why), RBL_EINVAL);
  assert_string_equal(why, "holds a NUL byte");
  char longref[130];
  memset(longref, 'a', sizeof longref);
  assert_int_equal(rbl_docker_check_ref(longref, 128, &why), 0);
  assert_int_equal(rbl_docker_check_ref(longref, 129, &why), RBL_EINVAL);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_frames),    cmocka_unit_test(test_incomplete),
      cmocka_unit_test(test_malformed), cmocka_unit_test(test_large),
      cmocka_unit_test(test_check_ref),
  };
  return cmocka_run_group_tests_name("docker_stream", tests, NULL, NULL);
}
