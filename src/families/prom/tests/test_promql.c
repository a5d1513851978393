/* The PromQL scoper (src/families/prom/promql.c): rewrites and refusals on adversarial queries,
 * the check the gate runs, and a mutation fuzz that must never crash, and whose every accepted
 * rewrite must pass the check. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "promql.h"

typedef struct {
  const char *in, *out;
} rw;

/* Rewrites for tenant t1 (label "tenant"). */
static const rw rewrites[] = {
    {"up", "up{tenant=\"t1\"}"},
    {"up{job=\"a\"}", "up{tenant=\"t1\",job=\"a\"}"},
    {"up{job=\"a\",}", "up{tenant=\"t1\",job=\"a\",}"},
    {"{__name__=~\"x.*\"}", "{tenant=\"t1\",__name__=~\"x.*\"}"},
    {"up {job=\"a\"}", "up {tenant=\"t1\",job=\"a\"}"},
    {"up{tenant=\"t1\"}", "up{tenant=\"t1\"}"},
    {"up{job=\"a\", tenant='t1'}", "up{job=\"a\", tenant=\"t1\"}"},
    {"up{tenant=`t1`}", "up{tenant=\"t1\"}"},
    {"up{tenant=\"t\\x31\"}", "up{tenant=\"t1\"}"},
    {"up{tenant=\"\\u0074\\U00000031\"}", "up{tenant=\"t1\"}"},
    {"up{tenant=\"\\1641\"}", "up{tenant=\"t1\"}"},
    {"up{\"tenant\"=\"t1\"}", "up{tenant=\"t1\"}"},
    {"sum by (job) (rate(x{code=~\"5..\"}[5m]))",
     "sum by (job) (rate(x{tenant=\"t1\",code=~\"5..\"}[5m]))"},
    {"sum(rate(x[5m])) without (a)", "sum(rate(x{tenant=\"t1\"}[5m])) without (a)"},
    {"SUM BY (a) (x)", "SUM BY (a) (x{tenant=\"t1\"})"},
    {"a or b unless c", "a{tenant=\"t1\"} or b{tenant=\"t1\"} unless c{tenant=\"t1\"}"},
    {"a and on(x) group_left(y) b", "a{tenant=\"t1\"} and on(x) group_left(y) b{tenant=\"t1\"}"},
    {"a * ignoring(x) group_right b",
     "a{tenant=\"t1\"} * ignoring(x) group_right b{tenant=\"t1\"}"},
    {"a > bool 3", "a{tenant=\"t1\"} > bool 3"},
    {"max_over_time(rate(x[5m])[30m:1m])", "max_over_time(rate(x{tenant=\"t1\"}[5m])[30m:1m])"},
    {"x[1h30m:] offset -5m", "x{tenant=\"t1\"}[1h30m:] offset -5m"},
    {"x offset 5m @ 100", "x{tenant=\"t1\"} offset 5m @ 100"},
    {"x @ start() offset 1m", "x{tenant=\"t1\"} @ start() offset 1m"},
    {"x @ -1.5e3", "x{tenant=\"t1\"} @ -1.5e3"},
    {"topk(3, x)", "topk(3, x{tenant=\"t1\"})"},
    {"count_values(\"v\", x)", "count_values(\"v\", x{tenant=\"t1\"})"},
    {"quantile(0.9, x) by (le)", "quantile(0.9, x{tenant=\"t1\"}) by (le)"},
    {"label_replace(x, \"dst\", \"$1\", \"tenant\", \"(.*)\")",
     "label_replace(x{tenant=\"t1\"}, \"dst\", \"$1\", \"tenant\", \"(.*)\")"},
    {"histogram_quantile(0.9, sum by (le) (rate(h_bucket[5m])))",
     "histogram_quantile(0.9, sum by (le) (rate(h_bucket{tenant=\"t1\"}[5m])))"},
    {"1 + 2 * 3 ^ 2 ^ -1", "1 + 2 * 3 ^ 2 ^ -1"},
    {"vector(1) + time()", "vector(1) + time()"},
    {"Inf", "Inf"},
    {"-NaN", "-NaN"},
    {"0x1F + .5 + 5. + 1e-3", "0x1F + .5 + 5. + 1e-3"},
    {"\"a string\"", "\"a string\""},
    {"sum", "sum{tenant=\"t1\"}"}, /* Prometheus reads a keyword here as a metric name */
    {"by + offset", "by{tenant=\"t1\"} + offset{tenant=\"t1\"}"},
    {"job:rate5m:sum", "job:rate5m:sum{tenant=\"t1\"}"},
    {"up # comment {tenant=\"t2\"}\n+ x",
     "up{tenant=\"t1\"} # comment {tenant=\"t2\"}\n+ x{tenant=\"t1\"}"},
    {"up{a=\"é✓\"}", "up{tenant=\"t1\",a=\"é✓\"}"},
    {"up{a=\"x\\\"}y\"}", "up{tenant=\"t1\",a=\"x\\\"}y\"}"},
    {"up{a=`x\"}`}", "up{tenant=\"t1\",a=`x\"}`}"},
    {"{\"my.metric\"}", "{tenant=\"t1\",\"my.metric\"}"},
    {"sum without () (x)", "sum without () (x{tenant=\"t1\"})"},
    {"a - - b", "a{tenant=\"t1\"} - - b{tenant=\"t1\"}"},
    {"(a)[5m:1m]", "(a{tenant=\"t1\"})[5m:1m]"},
    {"a atan2 b", "a{tenant=\"t1\"} atan2 b{tenant=\"t1\"}"},
    {"rate(x[300])", "rate(x{tenant=\"t1\"}[300])"},
};

/* Refused: 2 = ESCOPE (another tenant), 1 = ESYNTAX. */
typedef struct {
  const char *in;
  int rc;
} rf;

static const rf refusals[] = {
    {"up{tenant=\"t2\"}", RBL_PROMQL_ESCOPE},
    {"up{tenant=~\"t.*\"}", RBL_PROMQL_ESCOPE},
    {"up{tenant=~\"t1\"}", RBL_PROMQL_ESCOPE},
    {"up{tenant!=\"t2\"}", RBL_PROMQL_ESCOPE},
    {"up{tenant!~\"t2\"}", RBL_PROMQL_ESCOPE},
    {"up{tenant=\"\"}", RBL_PROMQL_ESCOPE},
    {"up{\"tenant\"=\"t2\"}", RBL_PROMQL_ESCOPE},
    {"up{tenant=\"t\\x32\"}", RBL_PROMQL_ESCOPE},
    {"up{tenant=\"t1 \"}", RBL_PROMQL_ESCOPE},
    {"up{tenant=\"T1\"}", RBL_PROMQL_ESCOPE},
    {"sum(rate(x{tenant=\"t2\"}[5m]))", RBL_PROMQL_ESCOPE},
    {"a or b{tenant=\"t2\"}", RBL_PROMQL_ESCOPE},
    {"max_over_time(x{tenant=\"t2\"}[5m:1m])", RBL_PROMQL_ESCOPE},
    {"a * on(x) group_left b{tenant=~\".+\"}", RBL_PROMQL_ESCOPE},
    {"label_replace(x, \"tenant\", \"t2\", \"\", \"\")", RBL_PROMQL_ESCOPE},
    {"label_join(x, 'tenant', \",\", \"a\")", RBL_PROMQL_ESCOPE},
    {"count_values(\"tenant\", x)", RBL_PROMQL_ESCOPE},
    {"up{tenant=\"t1\", tenant=\"t1\"}", RBL_PROMQL_ESYNTAX},
    {"info(up)", RBL_PROMQL_ESYNTAX},
    {"", RBL_PROMQL_ESYNTAX},
    {"   # only a comment", RBL_PROMQL_ESYNTAX},
    {"{}", RBL_PROMQL_ESYNTAX},
    {"up{", RBL_PROMQL_ESYNTAX},
    {"up{a}", RBL_PROMQL_ESYNTAX},
    {"up{a=b}", RBL_PROMQL_ESYNTAX},
    {"up{a=\"b\"", RBL_PROMQL_ESYNTAX},
    {"up{a=\"b\\\"}", RBL_PROMQL_ESYNTAX},
    {"up{a=\"b\\q\"}", RBL_PROMQL_ESYNTAX},
    {"up{a=\"b\\'\"}", RBL_PROMQL_ESYNTAX},
    {"up{a=\"b\\x4\"}", RBL_PROMQL_ESYNTAX},
    {"up{a=\"b\\ud800\"}", RBL_PROMQL_ESYNTAX},
    {"up{a=\"b\\400\"}", RBL_PROMQL_ESYNTAX},
    {"up{a=\"b\nc\"}", RBL_PROMQL_ESYNTAX},
    {"up{a=\"\xff\"}", RBL_PROMQL_ESYNTAX},
    {"up{a=\"\xc0\xaf\"}", RBL_PROMQL_ESYNTAX},
    {"up{a=\"\xed\xa0\x80\"}", RBL_PROMQL_ESYNTAX},
    {"sum(up", RBL_PROMQL_ESYNTAX},
    {"sum()", RBL_PROMQL_ESYNTAX},
    {"up)", RBL_PROMQL_ESYNTAX},
    {"up[5m", RBL_PROMQL_ESYNTAX},
    {"up[[5m]]", RBL_PROMQL_ESYNTAX},
    {"up[5x]", RBL_PROMQL_ESYNTAX},
    {"up offset", RBL_PROMQL_ESYNTAX},
    {"up @", RBL_PROMQL_ESYNTAX},
    {"up +", RBL_PROMQL_ESYNTAX},
    {"up = 1", RBL_PROMQL_ESYNTAX},
    {"up ! 1", RBL_PROMQL_ESYNTAX},
    {"up ; x", RBL_PROMQL_ESYNTAX},
    {"nan{a=\"b\"}", RBL_PROMQL_ESYNTAX},
    {"1x", RBL_PROMQL_ESYNTAX},
    {"5mx", RBL_PROMQL_ESYNTAX},
    {"a * on(x) group_left (b)", RBL_PROMQL_ESYNTAX}, /* (b) is the label list, as in Prometheus */
    {"sum by (a) (x) by (b)", RBL_PROMQL_ESYNTAX},
    {"up{a:b=\"c\"}", RBL_PROMQL_ESYNTAX},
    {"up{a=\"b\" or c=\"d\"}", RBL_PROMQL_ESYNTAX},
    {"x[5m+1m]", RBL_PROMQL_ESYNTAX},
    {"`unterminated", RBL_PROMQL_ESYNTAX},
    {"up\x01", RBL_PROMQL_ESYNTAX},
};

static void test_rewrites(void **state) {
  (void)state;
  char why[256];
  for (size_t i = 0; i < sizeof rewrites / sizeof *rewrites; i++) {
    char *out = NULL;
    int rc = rbl_promql_scope(rewrites[i].in, "tenant", "t1", &out, why, sizeof why);
    if (rc != 0) fail_msg("scope(%s) = %d: %s", rewrites[i].in, rc, why);
    if (strcmp(out, rewrites[i].out) != 0)
      fail_msg("scope(%s)\n  got  %s\n  want %s", rewrites[i].in, out, rewrites[i].out);
    if (rbl_promql_check(out, "tenant", "t1", why, sizeof why) != 0)
      fail_msg("check(%s): %s", out, why);
    if (rbl_promql_check(out, "tenant", "t2", why, sizeof why) == 0 && strchr(out, '{'))
      fail_msg("check(%s) accepts t2", out);
    free(out);
  }
}

static void test_refusals(void **state) {
  (void)state;
  char why[256];
  for (size_t i = 0; i < sizeof refusals / sizeof *refusals; i++) {
    char *out = (char *)1;
    int rc = rbl_promql_scope(refusals[i].in, "tenant", "t1", &out, why, sizeof why);
    if (rc != refusals[i].rc)
      fail_msg("scope(%s) = %d (%s), want %d", refusals[i].in, rc, rc ? why : "ok", refusals[i].rc);
    assert_null(out);
    assert_true(strlen(why) > 0);
    assert_int_not_equal(rbl_promql_check(refusals[i].in, "tenant", "t1", why, sizeof why), 0);
  }
}

static void test_check(void **state) {
  (void)state;
  char why[256];
  assert_int_equal(rbl_promql_check("up{tenant=\"t1\"}", "tenant", "t1", why, sizeof why), 0);
  assert_int_equal(rbl_promql_check("sum(a{tenant=\"t1\"}) or b{x=\"y\",tenant=\"t1\"}", "tenant",
                                    "t1", why, sizeof why),
                   0);
  assert_int_equal(rbl_promql_check("1 + vector(2)", "tenant", "t1", why, sizeof why), 0);
  assert_int_equal(rbl_promql_check("up", "tenant", "t1", why, sizeof why), RBL_PROMQL_ESCOPE);
  assert_int_equal(rbl_promql_check("a{tenant=\"t1\"} or b", "tenant", "t1", why, sizeof why),
                   RBL_PROMQL_ESCOPE);
  assert_non_null(strstr(why, "no tenant matcher"));
  assert_int_equal(rbl_promql_check("up{tenant=\"t2\"}", "tenant", "t1", why, sizeof why),
                   RBL_PROMQL_ESCOPE);
  assert_int_equal(rbl_promql_check("up{tenant=\"t1\"}", "team", "t1", why, sizeof why),
                   RBL_PROMQL_ESCOPE);
  assert_int_not_equal(rbl_promql_check("up{tenant=\"t1\"}", "tenant", NULL, why, sizeof why), 0);
  assert_int_not_equal(rbl_promql_check("up{tenant=\"t1\"}", "bad-label", "t1", why, sizeof why),
                       0);
  assert_int_not_equal(rbl_promql_check(NULL, "tenant", "t1", why, sizeof why), 0);
  /* a tenant name with quotes and backslashes is quoted so it stays one string */
  char *out = NULL;
  assert_int_equal(rbl_promql_scope("up", "tenant", "a\"b\\c", &out, why, sizeof why), 0);
  assert_string_equal(out, "up{tenant=\"a\\\"b\\\\c\"}");
  assert_int_equal(rbl_promql_check(out, "tenant", "a\"b\\c", why, sizeof why), 0);
  free(out);
  assert_int_not_equal(rbl_promql_scope("up", "tenant", "a\nb", &out, why, sizeof why), 0);
  assert_int_not_equal(rbl_promql_scope("up", "tenant", "", &out, why, sizeof why), 0);
  /* another label name */
  assert_int_equal(rbl_promql_scope("up{tenant=\"x\"}", "team", "t1", &out, why, sizeof why), 0);
  assert_string_equal(out, "up{team=\"t1\",tenant=\"x\"}");
  free(out);
}

static void test_sets(void **state) {
  (void)state;
  char why[256], *out = NULL;
  const char *ts[] = {"t1", "t.2", "a|b"};
  assert_int_equal(
      rbl_promql_scope_set("sum(x) or y{tenant=\"t.2\"}", "tenant", ts, 3, &out, why, sizeof why),
      0);
  assert_string_equal(out, "sum(x{tenant=~\"t1|t\\\\.2|a\\\\|b\"}) or y{tenant=\"t.2\"}");
  assert_int_equal(rbl_promql_check_set(out, "tenant", ts, 3, why, sizeof why), 0);
  assert_int_not_equal(rbl_promql_check_set(out, "tenant", ts, 2, why, sizeof why), 0);
  assert_int_not_equal(rbl_promql_check(out, "tenant", "t1", why, sizeof why), 0);
  free(out);
  assert_int_equal(rbl_promql_scope_set("y{tenant=\"t9\"}", "tenant", ts, 3, &out, why, sizeof why),
                   RBL_PROMQL_ESCOPE);
  assert_int_equal(
      rbl_promql_scope_set("y{tenant=~\"t1\"}", "tenant", ts, 3, &out, why, sizeof why),
      RBL_PROMQL_ESCOPE);
  assert_int_equal(rbl_promql_scope_set("y", "tenant", ts, 0, &out, why, sizeof why),
                   RBL_PROMQL_ESCOPE);
  assert_int_not_equal(rbl_promql_check_set("y{tenant=~\"t.2\"}", "tenant", ts, 3, why, sizeof why),
                       0); /* unescaped . is a regex, not the name t.2 */
  assert_int_not_equal(
      rbl_promql_check_set("y{tenant=~\"t1|.*\"}", "tenant", ts, 3, why, sizeof why), 0);
  assert_int_not_equal(rbl_promql_check_set("y{tenant=~\"t1|\"}", "tenant", ts, 3, why, sizeof why),
                       0);
}

static void test_limits(void **state) {
  (void)state;
  char why[256], *out = NULL;
  size_t n = RBL_PROMQL_MAX_LEN + 10;
  char *big = malloc(n + 1);
  memset(big, ' ', n);
  big[0] = 'x';
  big[n] = '\0';
  assert_int_equal(rbl_promql_scope(big, "tenant", "t1", &out, why, sizeof why),
                   RBL_PROMQL_ESYNTAX);
  assert_non_null(strstr(why, "longer"));
  /* deep nesting: refused, not a stack overflow */
  size_t d = 10000;
  char *deep = malloc(2 * d + 2);
  memset(deep, '(', d);
  deep[d] = 'x';
  memset(deep + d + 1, ')', d);
  deep[2 * d + 1] = '\0';
  assert_int_equal(rbl_promql_scope(deep, "tenant", "t1", &out, why, sizeof why),
                   RBL_PROMQL_ESYNTAX);
  assert_non_null(strstr(why, "nested"));
  memset(deep, '-', 2 * d + 1);
  deep[2 * d] = 'x';
  assert_int_equal(rbl_promql_parse(deep, why, sizeof why), RBL_PROMQL_ESYNTAX);
  for (size_t i = 0; i < 2 * d; i += 2)
    deep[i] = 'a', deep[i + 1] = '^';
  deep[2 * d] = 'a';
  assert_int_equal(rbl_promql_parse(deep, why, sizeof why), RBL_PROMQL_ESYNTAX);
  /* many selectors: a long but flat query rewrites */
  size_t k = 0;
  for (; k + 4 < 4000;) {
    memcpy(big + k, k ? "+a" : " a", 2);
    k += 2;
  }
  big[k] = '\0';
  assert_int_equal(rbl_promql_scope(big + 1, "tenant", "t1", &out, why, sizeof why), 0);
  assert_int_equal(rbl_promql_check(out, "tenant", "t1", why, sizeof why), 0);
  free(out);
  /* near the limit: the rewrite would pass it, so it is refused (the check could not pass it) */
  for (; k + 4 < RBL_PROMQL_MAX_LEN;) {
    memcpy(big + k, "+a", 2);
    k += 2;
  }
  big[k] = '\0';
  assert_int_equal(rbl_promql_scope(big + 1, "tenant", "t1", &out, why, sizeof why),
                   RBL_PROMQL_ESYNTAX);
  assert_non_null(strstr(why, "scoped query would be longer"));
  assert_null(out);
  free(big);
  free(deep);
  /* a tiny why buffer is still terminated */
  char w1[1];
  assert_int_not_equal(rbl_promql_check("up", "tenant", "t1", w1, 1), 0);
  assert_int_equal(w1[0], '\0');
}

/* xorshift, seeded: reproducible */
static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint64_t rnd(void) {
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return rng;
}

static void test_fuzz(void **state) {
  (void)state;
  static const char *const seeds[] = {
      "sum by (job) (rate(http_requests_total{code=~\"5..\",tenant=\"t1\"}[5m] offset 1m))",
      "max_over_time(rate(x[5m])[30m:1m]) > bool on(a) group_left(b) y{z!~'q'} @ start()",
      "{__name__=~\"x.*\"} or topk(3, count_values(\"v\", a)) unless -b ^ 2 # c\n",
      "label_replace(up{a=`x\\y`}, \"d\", \"$1\", \"s\", \"(.*)\") / ignoring(x) vector(1)",
      "histogram_quantile(0.9, sum(rate(h_bucket{\"tenant\"=\"t1\"}[5m])) by (le)) atan2 Inf",
  };
  static const char pieces[] = "(){}[],:@=!~<>+-*/%^\"'`\\# \n.0123456789eExXmsabtenant_";
  char why[256];
  char buf[512];
  long accepted = 0;
  for (int iter = 0; iter < 200000; iter++) {
    const char *s = seeds[rnd() % (sizeof seeds / sizeof *seeds)];
    size_t n = strlen(s);
    memcpy(buf, s, n);
    int muts = 1 + (int)(rnd() % 4);
    for (int m = 0; m < muts; m++) {
      size_t at = n ? rnd() % n : 0;
      switch (rnd() % 5) {
      case 0: buf[at] = pieces[rnd() % (sizeof pieces - 1)]; break;
      case 1: buf[at] = (char)(rnd() % 256); break;
      case 2:
        if (n > 1) {
          memmove(buf + at, buf + at + 1, n - at - 1);
          n--;
        }
        break;
      case 3:
        if (n + 1 < sizeof buf) {
          memmove(buf + at + 1, buf + at, n - at);
          buf[at] = pieces[rnd() % (sizeof pieces - 1)];
          n++;
        }
        break;
      default: n = at; break; /* truncate */
      }
    }
    buf[n] = '\0';
    char *out = NULL;
    int rc = rbl_promql_scope(buf, "tenant", "t1", &out, why, sizeof why);
    if (rc == 0) {
      accepted++;
      if (rbl_promql_check(out, "tenant", "t1", why, sizeof why) != 0)
        fail_msg("accepted rewrite fails the check:\n  in  %s\n  out %s\n  %s", buf, out, why);
      char *again = NULL;
      if (rbl_promql_scope(out, "tenant", "t1", &again, why, sizeof why) != 0 ||
          strcmp(again, out) != 0)
        fail_msg("rewrite is not a fixed point:\n  in  %s\n  out %s", out, again ? again : why);
      free(again);
      free(out);
    } else {
      assert_null(out);
      assert_true(rc == RBL_PROMQL_ESYNTAX || rc == RBL_PROMQL_ESCOPE);
    }
    rbl_promql_check(buf, "tenant", "t1", why, sizeof why);
    const char *ts[] = {"t1", "t2"};
    if (rbl_promql_scope_set(buf, "tenant", ts, 2, &out, why, sizeof why) == 0) {
      if (rbl_promql_check_set(out, "tenant", ts, 2, why, sizeof why) != 0)
        fail_msg("accepted set rewrite fails the set check: %s -> %s: %s", buf, out, why);
      free(out);
    }
  }
  printf("fuzz: %ld of 200000 mutations parsed and were rewritten\n", accepted);
  assert_true(accepted > 1000);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_rewrites), cmocka_unit_test(test_refusals),
      cmocka_unit_test(test_check),    cmocka_unit_test(test_sets),
      cmocka_unit_test(test_limits),   cmocka_unit_test(test_fuzz),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
