/* The PromQL scoper (src/families/prom/promql.c): whatever the expression, a scoped result
 * parses, passes the gate's check for its tenant and not for another (when it has a selector),
 * and scoping it again changes nothing. The same for a set of tenants. */
#include "fuzz.h"
#include "promql.h"

#include <string.h>

int LLVMFuzzerTestOneInput(const unsigned char *d, size_t n) {
  char expr[4200], why[512];
  if (n >= sizeof expr) n = sizeof expr - 1;
  memcpy(expr, d, n);
  expr[n] = '\0';
  char *out = NULL, *again = NULL;
  if (rbl_promql_scope(expr, "tenant", "t1", &out, why, sizeof why) == 0) {
    FUZZ_CHECK(rbl_promql_parse(out, why, sizeof why) == 0, "%s -> %s: %s", expr, out, why);
    FUZZ_CHECK(rbl_promql_check(out, "tenant", "t1", why, sizeof why) == 0, "%s -> %s: %s", expr,
               out, why);
    FUZZ_CHECK(rbl_promql_scope(out, "tenant", "t1", &again, why, sizeof why) == 0 &&
                   strcmp(again, out) == 0,
               "not idempotent: %s -> %s -> %s", expr, out, again ? again : why);
    /* t2's check passes only an expression without selectors, which t2's scoping keeps */
    if (rbl_promql_check(out, "tenant", "t2", why, sizeof why) == 0) {
      char *t2 = NULL;
      FUZZ_CHECK(rbl_promql_scope(out, "tenant", "t2", &t2, why, sizeof why) == 0 &&
                     strcmp(t2, out) == 0,
                 "t2's check passes %s", out);
      free(t2);
    }
    free(out);
    free(again);
    out = again = NULL;
  }
  const char *const set[] = {"t1", "t2"};
  if (rbl_promql_scope_set(expr, "tenant", set, 2, &out, why, sizeof why) == 0) {
    FUZZ_CHECK(rbl_promql_check_set(out, "tenant", set, 2, why, sizeof why) == 0, "%s -> %s: %s",
               expr, out, why);
    const char *const other[] = {"t3"};
    if (rbl_promql_check_set(out, "tenant", other, 1, why, sizeof why) == 0) {
      char *t3 = NULL;
      FUZZ_CHECK(rbl_promql_scope_set(out, "tenant", other, 1, &t3, why, sizeof why) == 0 &&
                     strcmp(t3, out) == 0,
                 "t3's check passes %s", out);
      free(t3);
    }
    free(out);
  }
  rbl_promql_check(expr, "tenant", "t1", why, sizeof why); /* the gate sees raw input too */
  return 0;
}
