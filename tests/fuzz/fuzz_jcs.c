/* JCS (src/core/jcs.c, RFC 8785): the canonical form of any JSON value parses back and is its
 * own canonical form; every finite double's canonical number reads back as the same double. */
#include "fuzz.h"
#include "jcs.h"

#include <math.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const unsigned char *d, size_t n) {
  if (n >= sizeof(double)) {
    double v;
    memcpy(&v, d, sizeof v);
    char num[64];
    if (isfinite(v) && rbl_jcs_number(v, num) == 0) {
      char *end;
      double back = strtod(num, &end);
      FUZZ_CHECK(*end == '\0' && (back == v || (v == 0 && back == 0)), "%.17g -> %s", v, num);
    }
  }
  cJSON *j = cJSON_ParseWithLength((const char *)d, n);
  if (!j) return 0;
  size_t len1 = 0, len2 = 0;
  char *c1 = rbl_jcs_string(j, &len1);
  cJSON_Delete(j);
  if (!c1) return 0; /* not representable (non-finite number, invalid UTF-8) */
  cJSON *k = cJSON_ParseWithLength(c1, len1);
  FUZZ_CHECK(k != NULL, "canonical form does not parse: %s", c1);
  char *c2 = rbl_jcs_string(k, &len2);
  cJSON_Delete(k);
  FUZZ_CHECK(c2 && len1 == len2 && memcmp(c1, c2, len1) == 0, "not idempotent: %s", c1);
  free(c1);
  free(c2);
  return 0;
}
