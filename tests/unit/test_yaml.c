/* Tests for src/core/yaml.c (YAML -> cJSON) and the path confinement of src/families/drift/drift.c.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <lauxlib.h>
#include <lualib.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "drift.h"
#include "rbl.h"
#include "yaml.h"

static cJSON *parse_ok(const char *src) {
  char err[256];
  cJSON *docs = rbl_yaml_parse(src, strlen(src), err, sizeof err);
  if (!docs) fail_msg("parse failed: %s", err);
  return docs;
}

static void parse_fails(const char *src, const char *want) {
  char err[256];
  cJSON *docs = rbl_yaml_parse(src, strlen(src), err, sizeof err);
  if (docs) {
    char *s = cJSON_PrintUnformatted(docs);
    cJSON_Delete(docs);
    fail_msg("expected an error containing '%s', got %s", want, s);
  }
  if (!strstr(err, want)) fail_msg("error '%s' does not contain '%s'", err, want);
}

static void assert_json(const cJSON *j, const char *want) {
  char *s = cJSON_PrintUnformatted(j);
  assert_non_null(s);
  assert_string_equal(s, want);
  cJSON_free(s);
}

static void test_multi_doc(void **state) {
  (void)state;
  cJSON *d = parse_ok("a: 1\n---\nb: [x, 2]\n---\n- 3\n...\n");
  assert_json(d, "[{\"a\":1},{\"b\":[\"x\",2]},[3]]");
  cJSON_Delete(d);
  d = parse_ok("");
  assert_json(d, "[]");
  cJSON_Delete(d);
  d = parse_ok("# only a comment\n");
  assert_json(d, "[]");
  cJSON_Delete(d);
  d = parse_ok("---\n---\nk: v\n"); /* an empty document is null */
  assert_json(d, "[null,{\"k\":\"v\"}]");
  cJSON_Delete(d);
}

static void test_types(void **state) {
  (void)state;
  cJSON *d =
      parse_ok("n1: null\nn2: ~\nn3:\nn4: Null\nt: true\nf: False\ny: yes\nno: no\n"
               "i: 42\nneg: -7\nplus: +3\nhex: 0x1F\noct: 0o17\nfl: 1.5\ndot: .5\nexp: 1e3\n"
               "ver: 1.10\ninf: .inf\nq1: \"123\"\nq2: 'true'\nq3: \"\"\nstr: !!str 42\n"
               "word: 30s\nport: \"8080\"\nblock: |\n  line1\n  line2\nfolded: >\n  a\n  b\n");
  assert_json(d, "[{\"n1\":null,\"n2\":null,\"n3\":null,\"n4\":null,\"t\":true,\"f\":false,"
                 "\"y\":\"yes\",\"no\":\"no\",\"i\":42,\"neg\":-7,\"plus\":3,\"hex\":31,\"oct\":15,"
                 "\"fl\":1.5,\"dot\":0.5,\"exp\":1000,\"ver\":1.1,\"inf\":\".inf\",\"q1\":\"123\","
                 "\"q2\":\"true\",\"q3\":\"\",\"str\":\"42\",\"word\":\"30s\",\"port\":\"8080\","
                 "\"block\":\"line1\\nline2\\n\",\"folded\":\"a b\\n\"}]");
  cJSON_Delete(d);
}

static void test_anchors_aliases(void **state) {
  (void)state;
  cJSON *d = parse_ok("base: &b {cpu: 1, mem: 2}\n"
                      "copy: *b\n"
                      "list: &l [a, b]\n"
                      "again: *l\n"
                      "scalar: &s hello\n"
                      "s2: *s\n"
                      "merged:\n  <<: *b\n  mem: 4\n"
                      "multi:\n  <<: [*b, {extra: true}]\n");
  assert_json(
      d, "[{\"base\":{\"cpu\":1,\"mem\":2},\"copy\":{\"cpu\":1,\"mem\":2},\"list\":[\"a\",\"b\"],"
         "\"again\":[\"a\",\"b\"],\"scalar\":\"hello\",\"s2\":\"hello\","
         "\"merged\":{\"cpu\":1,\"mem\":4},\"multi\":{\"cpu\":1,\"mem\":2,\"extra\":true}}]");
  cJSON_Delete(d);
  /* anchors are per document */
  parse_fails("a: &x 1\n---\nb: *x\n", "unknown alias *x");
}

static void test_alias_bomb(void **state) {
  (void)state;
  const char *bomb =
      "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n"
      "b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n"
      "c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
      "d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\n"
      "e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\n"
      "f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\n"
      "g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\n"
      "h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]\n"
      "i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]\n";
  parse_fails(bomb, "more than 1000000 nodes");
  /* the error names where the cap was hit */
  parse_fails(bomb, "line ");
}

static void test_errors_have_positions(void **state) {
  (void)state;
  parse_fails("a: 1\nb: [1, 2\nc: 3\n", "line ");
  parse_fails("a: 1\n  b: 2\n", "line 2, column ");
  parse_fails("k: v\nlist:\n  - *missing\n", "line 3, column 5: unknown alias *missing");
  parse_fails("? [a, b]\n: v\n", "line 1, column 3: only scalar mapping keys");
  char deep[2000];
  memset(deep, '[', 300);
  memset(deep + 300, ']', 300);
  deep[600] = '\0';
  parse_fails(deep, "nested deeper than 256");
}

static void test_duplicate_keys_last_wins(void **state) {
  (void)state;
  cJSON *d = parse_ok("a: 1\na: 2\n");
  assert_json(d, "[{\"a\":2}]");
  cJSON_Delete(d);
}

/* The multi-document manifests the drift tests describe (src/families/drift/tests/k8s). */
static void test_manifest_fixture(void **state) {
  (void)state;
  char path[PATH_MAX], err[256], *buf;
  size_t len;
  snprintf(path, sizeof path, "%s/src/families/drift/tests/k8s/manifests.yaml", RBL_SOURCE_DIR);
  assert_int_equal(rbl_iac_read_file(path, &buf, &len, err, sizeof err), 0);
  cJSON *docs = rbl_yaml_parse(buf, len, err, sizeof err);
  free(buf);
  if (!docs) fail_msg("%s", err);
  assert_int_equal(cJSON_GetArraySize(docs), 4); /* the trailing "---" is an empty document */
  assert_true(cJSON_IsNull(cJSON_GetArrayItem(docs, 3)));
  cJSON *cm = cJSON_GetArrayItem(docs, 0);
  assert_json(cJSON_GetObjectItem(cm, "data"),
              "{\"max_connections\":\"500\",\"idle_timeout\":\"30s\",\"min_idle\":\"10\"}");
  cJSON *dep = cJSON_GetArrayItem(docs, 1);
  cJSON *labels = cJSON_GetObjectItem(cJSON_GetObjectItem(dep, "metadata"), "labels");
  assert_json(labels, "{\"app.kubernetes.io/name\":\"db-pool\",\"tenant\":\"prod-tenant-7\"}");
  cJSON *c0 = cJSON_GetArrayItem(
      cJSON_GetObjectItem(
          cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetObjectItem(dep, "spec"), "template"),
                              "spec"),
          "containers"),
      0);
  cJSON *port = cJSON_GetArrayItem(cJSON_GetObjectItem(c0, "ports"), 0);
  assert_json(port, "{\"containerPort\":6432,\"name\":\"pgbouncer\",\"protocol\":\"TCP\"}");
  assert_json(cJSON_GetObjectItem(c0, "args"), "[\"--verbose\",\"/etc/pgbouncer/pgbouncer.ini\"]");
  cJSON_Delete(docs);
}

/* ---- rbl_iac_resolve ---- */

typedef struct fixture {
  char root[PATH_MAX]; /* tmp/ */
  char base[PATH_MAX]; /* tmp/rb: the runbook directory */
} fixture;

static void write_file(const char *path, const char *text) {
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  fputs(text, f);
  fclose(f);
}

static int setup_dirs(void **state) {
  fixture *fx = calloc(1, sizeof *fx);
  char tmpl[] = "/tmp/rbl-iac-XXXXXX";
  if (!fx || !mkdtemp(tmpl)) return -1;
  snprintf(fx->root, sizeof fx->root, "%s", tmpl);
  snprintf(fx->base, sizeof fx->base, "%s/rb", tmpl);
  char p[PATH_MAX + 64];
  if (mkdir(fx->base, 0700)) return -1;
  snprintf(p, sizeof p, "%s/infra", fx->base);
  if (mkdir(p, 0700)) return -1;
  snprintf(p, sizeof p, "%s/infra/state.json", fx->base);
  write_file(p, "{\"a\":1}");
  snprintf(p, sizeof p, "%s/secret.json", fx->root);
  write_file(p, "{\"secret\":1}");
  /* rb/out -> ../secret.json (outside), rb/in -> infra/state.json (inside) */
  snprintf(p, sizeof p, "%s/out", fx->base);
  if (symlink("../secret.json", p)) return -1;
  snprintf(p, sizeof p, "%s/in", fx->base);
  if (symlink("infra/state.json", p)) return -1;
  snprintf(p, sizeof p, "%s/etc", fx->base);
  if (symlink("/etc", p)) return -1;
  /* rb-evil: a sibling whose name shares rb's prefix */
  snprintf(p, sizeof p, "%s/rb-evil", fx->root);
  if (mkdir(p, 0700)) return -1;
  snprintf(p, sizeof p, "%s/rb-evil/x.json", fx->root);
  write_file(p, "{}");
  *state = fx;
  return 0;
}

static int teardown_dirs(void **state) {
  fixture *fx = *state;
  char cmd[PATH_MAX + 32];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", fx->root);
  int rc = system(cmd);
  free(fx);
  return rc == 0 ? 0 : -1;
}

static int resolve(fixture *fx, const char *rel, char *out, char *err) {
  return rbl_iac_resolve(fx->base, rel, out, PATH_MAX, err, 512);
}

static void test_resolve_inside(void **state) {
  fixture *fx = *state;
  char out[PATH_MAX], err[512], want[PATH_MAX + 32];
  snprintf(want, sizeof want, "%s/infra/state.json", fx->base);
  assert_int_equal(resolve(fx, "infra/state.json", out, err), 0);
  assert_string_equal(out, want);
  assert_int_equal(resolve(fx, "./infra//./state.json", out, err), 0);
  assert_string_equal(out, want);
  assert_int_equal(resolve(fx, "infra/../infra/state.json", out, err), 0);
  assert_string_equal(out, want);
  assert_int_equal(resolve(fx, "in", out, err), 0); /* symlink staying inside */
  assert_string_equal(out, want);
}

static void test_resolve_escapes(void **state) {
  fixture *fx = *state;
  char out[PATH_MAX], err[512];
  assert_int_equal(resolve(fx, "../secret.json", out, err), RBL_EREFUSED);
  assert_non_null(strstr(err, "iac: ../secret.json: path escapes the runbook directory "));
  assert_non_null(strstr(err, "/rb"));
  assert_int_equal(resolve(fx, "infra/../../secret.json", out, err), RBL_EREFUSED);
  assert_int_equal(resolve(fx, "../rb-evil/x.json", out, err), RBL_EREFUSED);
  assert_int_equal(resolve(fx, "..", out, err), RBL_EREFUSED);
  assert_int_equal(resolve(fx, "/etc/passwd", out, err), RBL_EINVAL);
  assert_non_null(strstr(err, "absolute paths are not allowed"));
  assert_int_equal(resolve(fx, "out", out, err), RBL_EREFUSED); /* symlink to outside */
  assert_non_null(strstr(err, "iac: out: path escapes"));
  assert_int_equal(resolve(fx, "etc/passwd", out, err), RBL_EREFUSED);
  assert_int_equal(resolve(fx, "", out, err), RBL_EINVAL);
  assert_int_equal(resolve(fx, ".", out, err), RBL_EINVAL);
  assert_int_equal(resolve(fx, "missing.json", out, err), RBL_ENOTFOUND);
}

static void test_read_file(void **state) {
  fixture *fx = *state;
  char path[PATH_MAX + 32], err[512], *buf;
  size_t len;
  snprintf(path, sizeof path, "%s/infra/state.json", fx->base);
  assert_int_equal(rbl_iac_read_file(path, &buf, &len, err, sizeof err), 0);
  assert_int_equal(len, 7);
  assert_string_equal(buf, "{\"a\":1}");
  free(buf);
  assert_int_equal(rbl_iac_read_file(fx->base, &buf, &len, err, sizeof err), RBL_EINVAL);
  /* a sparse file one byte over the 64 MiB cap */
  snprintf(path, sizeof path, "%s/big.json", fx->base);
  write_file(path, "");
  assert_int_equal(truncate(path, (off_t)RBL_IAC_MAX_FILE + 1), 0);
  assert_int_equal(rbl_iac_read_file(path, &buf, &len, err, sizeof err), RBL_ETOOBIG);
  assert_non_null(strstr(err, "64 MiB"));
  assert_null(buf);
}

/* A path with a NUL byte is refused before anything is looked up. */
static void test_nul_byte(void **state) {
  (void)state;
  lua_State *L = luaL_newstate();
  luaL_openlibs(L);
  luaL_requiref(L, "iacc", luaopen_rbl_drift_c, 1);
  lua_pop(L, 1);
  const char *chunk = "local ok, e = pcall(iacc.read_json, 'state.json\\0/../../etc/passwd')\n"
                      "assert(not ok) return tostring(e)";
  assert_int_equal(luaL_dostring(L, chunk), LUA_OK);
  assert_non_null(strstr(lua_tostring(L, -1), "NUL byte"));
  lua_close(L);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_multi_doc),
      cmocka_unit_test(test_types),
      cmocka_unit_test(test_anchors_aliases),
      cmocka_unit_test(test_alias_bomb),
      cmocka_unit_test(test_errors_have_positions),
      cmocka_unit_test(test_duplicate_keys_last_wins),
      cmocka_unit_test(test_manifest_fixture),
      cmocka_unit_test(test_nul_byte),
      cmocka_unit_test_setup_teardown(test_resolve_inside, setup_dirs, teardown_dirs),
      cmocka_unit_test_setup_teardown(test_resolve_escapes, setup_dirs, teardown_dirs),
      cmocka_unit_test_setup_teardown(test_read_file, setup_dirs, teardown_dirs),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
