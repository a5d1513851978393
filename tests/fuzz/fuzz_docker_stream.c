/* The Docker stream demuxer (src/families/docker/docker.c) against a reference walk of the
 * frame format: the same bytes consumed, the same payloads in order, payloads inside the input,
 * a malformed header reported at its offset. */
#include "fuzz.h"
#include "docker.h"

#include <string.h>

typedef struct {
  const unsigned char *d;
  size_t n, off; /* the reference walk's position */
} acc;

/* The next frame with a payload, by the format: 8-byte header {stream, 0, 0, 0, size BE32}. */
static int ref_next(acc *a, int *stream, size_t *at, size_t *size) {
  while (a->n - a->off >= 8) {
    const unsigned char *h = a->d + a->off;
    size_t sz = (size_t)h[4] << 24 | (size_t)h[5] << 16 | (size_t)h[6] << 8 | (size_t)h[7];
    if (h[0] > 3 || h[1] || h[2] || h[3] || a->n - a->off - 8 < sz) return 0;
    a->off += 8 + sz;
    if (sz) {
      *stream = h[0], *at = a->off - sz, *size = sz;
      return 1;
    }
  }
  return 0;
}

static void sink(void *ud, int stream, const char *p, size_t n) {
  acc *a = ud;
  int rs;
  size_t at, size;
  FUZZ_CHECK(ref_next(a, &rs, &at, &size), "a payload the format does not have");
  FUZZ_CHECK(rs == stream && (const unsigned char *)p == a->d + at && n == size,
             "payload differs: stream %d/%d, offset %zu/%zu, size %zu/%zu", stream, rs,
             (size_t)((const unsigned char *)p - a->d), at, n, size);
}

int LLVMFuzzerTestOneInput(const unsigned char *d, size_t n) {
  acc a = {d, n, 0};
  size_t bad = (size_t)-1;
  ssize_t used = rbl_docker_demux((const char *)d, n, sink, &a, &bad);
  int rs;
  size_t at, size;
  FUZZ_CHECK(!ref_next(&a, &rs, &at, &size), "a payload was not delivered");
  if (used < 0) {
    FUZZ_CHECK(bad == a.off && n - bad >= 8, "malformed at %zu, the walk stopped at %zu", bad,
               a.off);
    const unsigned char *h = d + bad;
    FUZZ_CHECK(h[0] > 3 || h[1] || h[2] || h[3], "a well-formed header refused at %zu", bad);
    return 0;
  }
  FUZZ_CHECK((size_t)used == a.off, "consumed %zd, the format says %zu", used, a.off);
  return 0;
}
