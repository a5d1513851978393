/* The audit chain: writer, reopen/continue, tamper suite, MAC, Ed25519, torn tail, lock, full disk.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>

#include "audit.h"
#include "rbl.h"

static char dir[64];
static char out[1 << 16]; /* the captured output of the last run_cli */

static const char *P(const char *name) {
  static char bufs[64][256]; /* each test asks for fewer than 64 paths */
  static int i;
  char *b = bufs[i++ & 63];
  snprintf(b, 256, "%s/%s", dir, name);
  return b;
}

static int setup(void **state) {
  strcpy(dir, "/tmp/rbl-audit-XXXXXX");
  return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state) {
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  return system(cmd) == 0 ? 0 : -1;
}

/* ---- files ---- */

static char *slurp(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  assert_non_null(f);
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  rewind(f);
  char *s = malloc((size_t)n + 1);
  assert_int_equal(fread(s, 1, (size_t)n, f), (size_t)n);
  fclose(f);
  s[n] = '\0';
  *len = (size_t)n;
  return s;
}

static void spit(const char *path, const char *data, size_t len, int mode) {
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
  assert_true(fd >= 0);
  fchmod(fd, (mode_t)mode);
  assert_int_equal(write(fd, data, len), (ssize_t)len);
  close(fd);
}

/* Splits a file into its lines (each with its '\n'); returns the count. */
static int split(const char *data, size_t len, char ***lines) {
  int n = 0, cap = 16;
  char **l = malloc(sizeof *l * (size_t)cap);
  const char *p = data, *end = data + len;
  while (p < end) {
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    size_t k = nl ? (size_t)(nl - p) + 1 : (size_t)(end - p);
    if (n == cap) l = realloc(l, sizeof *l * (size_t)(cap *= 2));
    l[n] = strndup(p, k);
    n++;
    p += k;
  }
  *lines = l;
  return n;
}

static void join_to(const char *path, char **lines, int n) {
  FILE *f = fopen(path, "wb");
  for (int i = 0; i < n; i++)
    fputs(lines[i], f);
  fclose(f);
}

static void free_lines(char **l, int n) {
  for (int i = 0; i < n; i++)
    free(l[i]);
  free(l);
}

/* ---- writing chains ---- */

static rbl_audit *open_chain(const char *path, const char *inc, const char *run, const char *key,
                             const char *sign) {
  rbl_audit_opts o = {
      .path = path, .incident = inc, .run = run, .hmac_key_file = key, .sign_key_file = sign};
  rbl_audit *a = NULL;
  char err[512] = "";
  int rc = rbl_audit_open(&a, &o, err, sizeof err);
  if (rc != 0) fail_msg("open %s: %d %s", path, rc, err);
  return a;
}

static int64_t add(rbl_audit *a, const char *kind, const char *field, const char *value) {
  cJSON *r = cJSON_CreateObject();
  cJSON_AddStringToObject(r, "kind", kind);
  if (field) cJSON_AddStringToObject(r, field, value);
  return rbl_audit_append(a, r);
}

static void add_call(rbl_audit *a, int call, const char *status) {
  cJSON *r = cJSON_CreateObject();
  cJSON_AddStringToObject(r, "kind", "intent");
  cJSON_AddNumberToObject(r, "call", call);
  cJSON_AddStringToObject(r, "prim", "kube_patch");
  cJSON_AddStringToObject(r, "tenant", "prod-tenant-7");
  cJSON *t = cJSON_AddObjectToObject(r, "target");
  cJSON_AddStringToObject(t, "kind", "configmap");
  cJSON_AddStringToObject(t, "name", "db-pool-config");
  cJSON_AddItemToObject(r, "args",
                        cJSON_Parse("{\"patch\":{\"data\":{\"max_connections\":\"500\"}}}"));
  assert_true(rbl_audit_append(a, r) >= 0);
  if (!status) return;
  r = cJSON_CreateObject();
  cJSON_AddStringToObject(r, "kind", "result");
  cJSON_AddNumberToObject(r, "call", call);
  cJSON_AddStringToObject(r, "status", status);
  cJSON_AddNumberToObject(r, "duration_ms", 12 + call);
  if (strcmp(status, "error") == 0)
    cJSON_AddItemToObject(r, "error",
                          cJSON_Parse("{\"code\":\"conflict\",\"message\":\"changed\\u001b[2J\"}"));
  assert_true(rbl_audit_append(a, r) >= 0);
}

static void add_start(rbl_audit *a) {
  cJSON *r = cJSON_Parse(
      "{\"kind\":\"run_start\",\"tenants\":[\"prod-tenant-7\"],\"runbook\":{\"id\":\"db-conn\","
      "\"path\":\"runbooks/"
      "db.lua\",\"sha256\":\"sha256:00\"},\"modules\":[],\"rbl_version\":\"0.1.0\","
      "\"host\":\"ops-1\",\"user\":\"alice\",\"argv\":[\"rbl\",\"run\"],\"dry_run\":false}");
  assert_true(rbl_audit_append(a, r) >= 0);
}

/* One finished run of 2 + ncalls*2 + ncalls/10 + ncalls/7-ish records. */
static void write_run(const char *path, const char *inc, const char *run, int ncalls,
                      const char *key, const char *sign) {
  rbl_audit *a = open_chain(path, inc, run, key, sign);
  add_start(a);
  for (int i = 0; i < ncalls; i++) {
    if (i % 10 == 0) {
      cJSON *s = cJSON_CreateObject();
      cJSON_AddStringToObject(s, "kind", "step");
      cJSON_AddStringToObject(s, "step", "remediate");
      cJSON_AddNumberToObject(s, "index", i / 10 + 1);
      cJSON_AddStringToObject(s, "status", "running");
      assert_true(rbl_audit_append(a, s) >= 0);
    }
    add_call(a, i + 1, i % 5 == 4 ? "error" : "ok");
    if (i % 7 == 0) assert_true(add(a, "log", "message", "pool at 97%\x07 of max") >= 0);
  }
  cJSON *e = cJSON_Parse("{\"kind\":\"run_end\",\"outcome\":\"resolved\",\"exit_code\":0}");
  assert_true(rbl_audit_append(a, e) >= 0);
  assert_int_equal(rbl_audit_sync(a), 0);
  assert_int_equal(rbl_audit_close(a), 0);
}

/* Runs rbl_audit_main with stdout and stderr captured into out[]. */
static int cli(const char *first, ...) {
  char *argv[16];
  int argc = 0;
  va_list ap;
  va_start(ap, first);
  for (const char *a = first; a && argc < 15; a = va_arg(ap, const char *))
    argv[argc++] = (char *)a;
  va_end(ap);
  argv[argc] = NULL;
  fflush(stdout);
  fflush(stderr);
  static char capture[256];
  if (!capture[0]) snprintf(capture, sizeof capture, "%s/cli.out", dir);
  int fd = open(capture, O_RDWR | O_CREAT | O_TRUNC, 0600), so = dup(1), se = dup(2);
  dup2(fd, 1);
  dup2(fd, 2);
  int rc = rbl_audit_main(argc, argv);
  fflush(stdout);
  fflush(stderr);
  dup2(so, 1);
  dup2(se, 2);
  close(so);
  close(se);
  ssize_t n = pread(fd, out, sizeof out - 1, 0);
  out[n > 0 ? n : 0] = '\0';
  close(fd);
  return rc;
}

#define assert_out(s)                                                                              \
  do {                                                                                             \
    if (!strstr(out, (s))) fail_msg("output lacks \"%s\":\n%s", (s), out);                         \
  } while (0)

static void verify_expect(const char *path, int want_rc, const char *want) {
  int rc = cli("verify", path, NULL);
  if (rc != want_rc) fail_msg("verify %s: exit %d, want %d:\n%s", path, rc, want_rc, out);
  if (want) assert_out(want);
}

/* ---- basic writing ---- */

static void test_write_reopen_continue(void **state) {
  const char *path = P("cont.jsonl");
  char gen[RBL_AUDIT_HASH_LEN + 1], want[128];
  write_run(path, "INC-1", "run-a", 3, NULL, NULL);
  rbl_audit *a = open_chain(path, "INC-1", "run-b", NULL, NULL);
  int64_t seq = add(a, "log", "message", "second run");
  char head[RBL_AUDIT_HASH_LEN + 1];
  strcpy(head, rbl_audit_head(a));
  assert_int_equal(rbl_audit_close(a), 0);
  size_t len;
  char *data = slurp(path, &len), **lines;
  int n = split(data, len, &lines);
  assert_int_equal(seq, n - 1);
  for (int i = 0; i < n; i++) {
    cJSON *j = cJSON_Parse(lines[i]);
    assert_int_equal(cJSON_GetObjectItem(j, "seq")->valueint, i);
    assert_string_equal(cJSON_GetObjectItem(j, "incident")->valuestring, "INC-1");
    const char *ts = cJSON_GetObjectItem(j, "ts")->valuestring;
    assert_int_equal(strlen(ts), 24);
    assert_true(ts[10] == 'T' && ts[19] == '.' && ts[23] == 'Z');
    if (i == 0) {
      rbl_audit_genesis("INC-1", gen);
      assert_string_equal(cJSON_GetObjectItem(j, "prev")->valuestring, gen);
    }
    if (i == n - 1) assert_string_equal(cJSON_GetObjectItem(j, "hash")->valuestring, head);
    cJSON_Delete(j);
  }
  free_lines(lines, n);
  free(data);
  snprintf(want, sizeof want, "intact: %d records, 2 run(s), head %s", n, head);
  verify_expect(path, 0, want);
  assert_out("run run-b (line");
  assert_out("unfinished (crashed?)"); /* run-b wrote no run_end */
}

static void test_writer_fields(void **state) {
  const char *path = P("audit/fields.jsonl"); /* the directory is created */
  rbl_audit *a = open_chain(path, "INC-F", "r", NULL, NULL);
  cJSON *r =
      cJSON_Parse("{\"kind\":\"log\",\"seq\":99,\"hash\":\"x\",\"prev\":\"y\",\"message\":\"m\"}");
  assert_int_equal(rbl_audit_append(a, r), 0);
  assert_int_equal(rbl_audit_append(a, cJSON_CreateArray()),
                   RBL_EINVAL); /* no kind: refused, not fatal */
  cJSON *bad = cJSON_CreateObject();
  cJSON_AddStringToObject(bad, "kind", "log");
  cJSON_AddNumberToObject(bad, "x", 1.0 / 0.0);
  assert_int_equal(rbl_audit_append(a, bad), RBL_EINVAL);
  assert_int_equal(add(a, "log", "message", "after"), 1);
  assert_int_equal(rbl_audit_close(a), 0);
  assert_int_equal(rbl_audit_close(NULL), 0);
  verify_expect(path, 0, "intact: 2 records");
}

static void test_incident_mismatch_refused(void **state) {
  const char *path = P("mism.jsonl");
  write_run(path, "INC-A", "r1", 1, NULL, NULL);
  rbl_audit_opts o = {.path = path, .incident = "INC-B", .run = "r2"};
  rbl_audit *a = NULL;
  char err[512];
  assert_int_equal(rbl_audit_open(&a, &o, err, sizeof err), RBL_EINVAL);
  assert_non_null(strstr(err, "belongs to incident INC-A"));
  assert_non_null(strstr(err, "give --incident INC-A to continue it, or another --audit path"));
}

/* ---- tamper suite ---- */

static size_t base_chain(const char *path, const char *inc) {
  write_run(path, inc, "run-1", 80, NULL, NULL); /* 80 calls: ~200 records */
  size_t len;
  free(slurp(path, &len));
  return len;
}

static void test_tamper_flip_every_7th(void **state) {
  const char *path = P("flip.jsonl"), *bad = P("flip-bad.jsonl");
  base_chain(path, "INC-T");
  size_t len;
  char *data = slurp(path, &len), want[64];
  verify_expect(path, 0, "intact: ");
  int checked = 0;
  for (size_t pos = 0; pos < len; pos += 7) {
    int line = 1;
    for (size_t i = 0; i < pos; i++)
      line += data[i] == '\n';
    data[pos] ^= 0x01;
    spit(bad, data, len, 0600);
    data[pos] ^= 0x01;
    snprintf(want, sizeof want, "BROKEN at line %d", line);
    int rc = cli("verify", bad, NULL);
    if (rc != 1 || !strstr(out, want))
      fail_msg("flip at byte %zu (line %d): exit %d\n%s", pos, line, rc, out);
    checked++;
  }
  assert_true(checked > 1000);
  free(data);
}

static void edit_lines(const char *src, const char *dst, void (*fn)(char **, int *)) {
  size_t len;
  char *data = slurp(src, &len), **l;
  int n = split(data, len, &l);
  int n0 = n;
  char **m = malloc(sizeof *m * (size_t)(n + 4));
  memcpy(m, l, sizeof *m * (size_t)n);
  fn(m, &n);
  join_to(dst, m, n);
  free(m);
  free_lines(l, n0); /* edits add only aliases and literals */
  free(data);
}

/* Line numbers below are 1-based; records are lines. */
static void del50(char **l, int *n) {
  memmove(&l[49], &l[50], sizeof *l * (size_t)(*n - 50));
  (*n)--;
}
static void swap60(char **l, int *n) {
  char *t = l[59];
  l[59] = l[60];
  l[60] = t;
}
static void dup80(char **l, int *n) {
  memmove(&l[81], &l[80], sizeof *l * (size_t)(*n - 80));
  l[80] = l[79];
  (*n)++;
}
static void garbage_mid(char **l, int *n) {
  memmove(&l[41], &l[40], sizeof *l * (size_t)(*n - 40));
  l[40] = (char *)"this is not a record\n";
  (*n)++;
}
static void garbage_end(char **l, int *n) { l[(*n)++] = (char *)"{\"oops\n"; }
static void truncate10(char **l, int *n) { *n -= 10; }

static void test_tamper_delete_swap_dup(void **state) {
  const char *path = P("t.jsonl"), *bad = P("t-bad.jsonl");
  base_chain(path, "INC-T");
  edit_lines(path, bad, del50);
  verify_expect(bad, 1, "BROKEN at line 50, seq 50: missing: record seq 49 was deleted");
  edit_lines(path, bad, swap60);
  verify_expect(bad, 1, "BROKEN at line 60, seq 60: reordered");
  edit_lines(path, bad, dup80);
  verify_expect(bad, 1, "BROKEN at line 81, seq 79: duplicated: a copy of line 80");
  assert_int_equal(cli("verify", bad, "--json", NULL), 1);
  cJSON *j = cJSON_Parse(out);
  assert_non_null(j);
  cJSON *e = cJSON_GetObjectItem(j, "error");
  assert_string_equal(cJSON_GetObjectItem(e, "reason")->valuestring, "duplicated");
  assert_int_equal(cJSON_GetObjectItem(e, "line")->valueint, 81);
  assert_false(cJSON_IsTrue(cJSON_GetObjectItem(j, "intact")));
  cJSON_Delete(j);
}

static char *line_of(const char *path, int lineno) {
  size_t len;
  char *data = slurp(path, &len), **l;
  int n = split(data, len, &l);
  assert_true(lineno <= n);
  char *r = strdup(l[lineno - 1]);
  free_lines(l, n);
  free(data);
  return r;
}

static void test_tamper_insert_and_splice(void **state) {
  const char *path = P("s.jsonl"), *other = P("s-other.jsonl"), *foreign = P("s-foreign.jsonl");
  const char *bad = P("s-bad.jsonl");
  base_chain(path, "INC-S");
  base_chain(other, "INC-S");       /* same incident, another chain */
  base_chain(foreign, "INC-OTHER"); /* another incident */
  size_t len;
  char *data = slurp(path, &len);
  /* insert line 100 of the other chain (seq 99, valid hash) before line 100 */
  char *ins = line_of(other, 100);
  char *at = data;
  for (int i = 1; i < 100; i++)
    at = strchr(at, '\n') + 1;
  FILE *f = fopen(bad, "wb");
  fwrite(data, 1, (size_t)(at - data), f);
  fputs(ins, f);
  fputs(at, f);
  fclose(f);
  verify_expect(bad, 1, "BROKEN at line 100, seq 99: modified: prev does not match");
  /* replace line 30 by the foreign incident's line 30 */
  char *fl = line_of(foreign, 30);
  at = data;
  for (int i = 1; i < 30; i++)
    at = strchr(at, '\n') + 1;
  char *next = strchr(at, '\n') + 1;
  f = fopen(bad, "wb");
  fwrite(data, 1, (size_t)(at - data), f);
  fputs(fl, f);
  fputs(next, f);
  fclose(f);
  verify_expect(bad, 1, "BROKEN at line 30, seq 29: wrong incident");
  free(ins);
  free(fl);
  free(data);
}

static void test_truncation_head(void **state) {
  const char *path = P("h.jsonl"), *bad = P("h-bad.jsonl");
  base_chain(path, "INC-H");
  size_t len;
  char *data = slurp(path, &len);
  char *last = strrchr(data, '\n');
  *last = '\0';
  cJSON *j = cJSON_Parse(strrchr(data, '\n') + 1);
  char head[80], mid[80];
  strcpy(head, cJSON_GetObjectItem(j, "hash")->valuestring);
  cJSON_Delete(j);
  char *l20 = line_of(path, 20);
  j = cJSON_Parse(l20);
  strcpy(mid, cJSON_GetObjectItem(j, "hash")->valuestring);
  cJSON_Delete(j);
  free(l20);
  free(data);
  edit_lines(path, bad, truncate10);
  verify_expect(bad, 0, "intact: ");
  assert_int_equal(cli("verify", bad, "--head", head, NULL), 1);
  assert_out("truncated: head ");
  assert_out("not reached");
  assert_int_equal(cli("verify", path, "--head", head, NULL), 0);
  assert_int_equal(cli("verify", bad, "--head", mid, NULL), 0);
  assert_out("chain continues after it");
  assert_int_equal(cli("verify", bad, "--head", "sha256:nothex", NULL), 2);
}

static void test_garbage(void **state) {
  const char *path = P("g.jsonl"), *bad = P("g-bad.jsonl");
  base_chain(path, "INC-G");
  edit_lines(path, bad, garbage_mid);
  verify_expect(bad, 1, "BROKEN at line 41: corrupt: line 41 is not a JSON record");
  edit_lines(path, bad, garbage_end);
  verify_expect(bad, 1, "corrupt");
}

/* ---- torn tail ---- */

static void test_torn_tail(void **state) {
  const char *path = P("torn.jsonl"), *other = P("torn-other.jsonl");
  write_run(path, "INC-X", "run-1", 3, NULL, NULL);
  write_run(other, "INC-X", "zz", 3, NULL, NULL);
  size_t n0;
  free(slurp(path, &n0));
  char *half = line_of(other, 2);
  half[strlen(half) / 2] = '\0';
  int fd = open(path, O_WRONLY | O_APPEND);
  assert_int_equal(write(fd, half, strlen(half)), (ssize_t)strlen(half));
  close(fd);
  verify_expect(path, 0, "torn tail (crash during write)");
  assert_out("intact: ");
  /* the next run seals the torn bytes and continues from the last good record */
  rbl_audit *a = open_chain(path, "INC-X", "run-2", NULL, NULL);
  add_start(a);
  add_call(a, 1, "ok");
  assert_int_equal(rbl_audit_close(a), 0);
  verify_expect(path, 0, "torn write at line");
  assert_out("intact: ");
  size_t len;
  char *data = slurp(path, &len);
  assert_memory_equal(data + n0, half, strlen(half)); /* torn bytes left as they were */
  assert_int_equal(data[n0 + strlen(half)], '\n');
  free(data);
  /* a second crash: torn again, then a run whose first write was torn too */
  fd = open(path, O_WRONLY | O_APPEND);
  assert_int_equal(write(fd, half, 10), 10);
  assert_int_equal(write(fd, "\n{\"seq\":", 8), 8);
  close(fd);
  verify_expect(path, 0, "torn tail");
  a = open_chain(path, "INC-X", "run-3", NULL, NULL);
  add_call(a, 2, NULL);
  assert_int_equal(rbl_audit_close(a), 0);
  verify_expect(path, 0, "unfinished (crashed?)");
  assert_out("1 intent(s) without a result (their effect may have happened), first call 2");
  /* removing sealed torn bytes, or altering them, is caught */
  data = slurp(path, &len);
  char *t = strstr(data, half);
  t[3] ^= 0x01;
  spit(P("torn-bad.jsonl"), data, len, 0600);
  verify_expect(P("torn-bad.jsonl"), 1, "corrupt");
  free(data);
  free(half);
}

static void test_torn_first_write(void **state) {
  const char *path = P("torn0.jsonl");
  spit(path, "{\"kind\":\"run_st", 15, 0600);
  verify_expect(path, 0, "torn tail");
  rbl_audit *a = open_chain(path, "INC-0", "r", NULL, NULL);
  assert_int_equal(add(a, "log", "message", "x"), 0);
  assert_int_equal(rbl_audit_close(a), 0);
  verify_expect(path, 0, "intact: 1 records");
}

/* ---- MAC and signatures ---- */

static void test_hmac(void **state) {
  const char *key = P("hmac.key"), *wrong = P("wrong.key"), *path = P("mac.jsonl"),
             *loose = P("loose.key");
  spit(key, "0123456789abcdef0123456789abcdef", 32, 0600);
  spit(wrong, "0123456789abcdef0123456789abcdeX", 32, 0600);
  write_run(path, "INC-M", "r", 5, key, NULL);
  assert_int_equal(cli("verify", path, "--key", key, NULL), 0);
  assert_out("intact: ");
  /* the mac is HMAC-SHA256(key, canonical form without hash and mac), computed independently */
  char *l3 = line_of(path, 3);
  cJSON *j = cJSON_Parse(l3);
  char want[80] = "hmac-sha256:";
  strcpy(want + 12, cJSON_GetObjectItem(j, "mac")->valuestring + 12);
  cJSON_DeleteItemFromObject(j, "mac");
  cJSON_DeleteItemFromObject(j, "hash");
  char *canon = rbl_jcs_string(j, NULL);
  unsigned char md[32];
  unsigned mdlen = 0;
  HMAC(EVP_sha256(), "0123456789abcdef0123456789abcdef", 32, (unsigned char *)canon, strlen(canon),
       md, &mdlen);
  char hex[65];
  rbl_audit_hex(md, 32, hex);
  assert_string_equal(want + 12, hex);
  free(canon);
  free(l3);
  cJSON_Delete(j);
  assert_int_equal(cli("verify", path, "--key", wrong, NULL), 1);
  assert_out("BROKEN at line 1, seq 0: bad MAC");
  assert_int_equal(cli("verify", path, NULL), 0);
  assert_out("not checked (no --key)");
  /* a record rewritten with a fresh hash but no key: the MAC gives it away */
  spit(loose, "k", 1, 0644);
  assert_int_equal(cli("verify", path, "--key", loose, NULL), 2);
  assert_out("chmod 600");
  rbl_audit_opts o = {.path = P("x.jsonl"), .incident = "I", .run = "r", .hmac_key_file = loose};
  rbl_audit *a = NULL;
  char err[512] = "";
  assert_int_equal(rbl_audit_open(&a, &o, err, sizeof err), RBL_EDENIED);
  assert_non_null(strstr(err, "readable by group or others"));
  assert_null(a);
}

static void write_ed25519(const char *priv, const char *pub) {
  EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
  assert_non_null(k);
  FILE *f = fopen(priv, "w");
  fchmod(fileno(f), 0600);
  assert_int_equal(PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL), 1);
  fclose(f);
  f = fopen(pub, "w");
  assert_int_equal(PEM_write_PUBKEY(f, k), 1);
  fclose(f);
  EVP_PKEY_free(k);
}

static void test_ed25519(void **state) {
  const char *priv = P("ed.pem"), *pub = P("ed.pub"), *priv2 = P("ed2.pem"), *pub2 = P("ed2.pub");
  const char *path = P("signed.jsonl"), *key = P("m.key"), *maconly = P("maconly.jsonl");
  write_ed25519(priv, pub);
  write_ed25519(priv2, pub2);
  write_run(path, "INC-E", "r1", 4, NULL, priv);
  write_run(path, "INC-E", "r2", 4, NULL, priv);
  assert_int_equal(cli("verify", path, "--pubkey", pub, NULL), 0);
  assert_out("intact: ");
  assert_out("2 run(s)");
  assert_int_equal(cli("verify", path, "--pubkey", pub2, NULL), 1);
  assert_out("bad signature: signed by another key");
  assert_int_equal(cli("verify", path, NULL), 0);
  assert_out("signature record(s); not checked (no --pubkey)");
  /* only MAC'd: rejected when a pubkey is given */
  spit(key, "secret-secret-secret", 20, 0600);
  write_run(maconly, "INC-E", "r1", 2, key, NULL);
  assert_int_equal(cli("verify", maconly, "--key", key, "--pubkey", pub, NULL), 1);
  assert_out("unsigned: run r1");
  /* a forged signature (valid hash, wrong sig bytes) */
  size_t len;
  char *data = slurp(path, &len);
  char *sig = strstr(data, "\"sig\":\"") + 7;
  sig[5] = sig[5] == 'A' ? 'B' : 'A';
  spit(P("forged.jsonl"), data, len, 0600);
  assert_int_equal(cli("verify", P("forged.jsonl"), "--pubkey", pub, NULL), 1);
  free(data);
  /* an unsigned run appended after the signed ones */
  write_run(path, "INC-E", "r3", 1, NULL, NULL);
  assert_int_equal(cli("verify", path, "--pubkey", pub, NULL), 1);
  assert_out("unsigned: run r3");
  assert_int_equal(cli("verify", path, "--pubkey", P("nope.pub"), NULL), 2);
}

/* ---- lock, full disk ---- */

static void test_lock(void **state) {
  const char *path = P("lock.jsonl");
  rbl_audit *a = open_chain(path, "INC-L", "r1", NULL, NULL);
  rbl_audit_opts o = {.path = path, .incident = "INC-L", .run = "r2"};
  rbl_audit *b = NULL;
  char err[512] = "", want[64];
  assert_int_equal(rbl_audit_open(&b, &o, err, sizeof err), RBL_ELOCKED);
  assert_null(b);
  assert_non_null(strstr(err, "is locked by another run"));
  snprintf(want, sizeof want, "(pid %ld)", (long)getpid());
  if (!strstr(err, want)) fail_msg("no pid in: %s", err);
  assert_int_equal(rbl_audit_close(a), 0);
  assert_int_equal(rbl_audit_open(&b, &o, err, sizeof err), 0);
  assert_int_equal(rbl_audit_close(b), 0);
}

static void test_full_disk(void **state) {
  const char *mnt = P("tmpfs");
  mkdir(mnt, 0700);
  if (geteuid() != 0 || mount("tmpfs", mnt, "tmpfs", 0, "size=64k") != 0) {
    print_message("SKIP: the full-disk test needs root and mount(2) of a tmpfs: %s\n",
                  strerror(errno));
    skip();
  }
  char path[300], err[512];
  snprintf(path, sizeof path, "%s/INC-D.jsonl", mnt);
  rbl_audit *a = open_chain(path, "INC-D", "r", NULL, NULL);
  char big[2048];
  memset(big, 'x', sizeof big - 1);
  big[sizeof big - 1] = '\0';
  int64_t rc = 0;
  for (int i = 0; i < 1000 && rc >= 0; i++)
    rc = add(a, "log", "message", big);
  assert_int_equal(rc, RBL_ENOSPC);
  snprintf(err, sizeof err, "audit: %s: No space left on device", path);
  assert_string_equal(rbl_audit_error(a), err);
  assert_int_equal(add(a, "log", "message", "x"), RBL_ENOSPC); /* failed for good */
  assert_int_equal(rbl_audit_sync(a), RBL_ENOSPC);
  assert_int_equal(rbl_audit_close(a), RBL_ENOSPC);
  /* what reached the disk still verifies: at worst a torn tail */
  assert_int_equal(cli("verify", path, NULL), 0);
  umount2(mnt, MNT_DETACH);
}

/* ---- CLI ---- */

static void test_cli_usage(void **state) {
  char *none[] = {NULL};
  assert_int_equal(cli("--help", NULL), 0);
  assert_out("usage: rbl audit verify");
  assert_int_equal(cli("verify", "--help", NULL), 0);
  assert_out("--pubkey");
  assert_int_equal(cli("show", "--help", NULL), 0);
  assert_out("usage: rbl audit show");
  assert_int_equal(cli("verify", NULL), 2);
  assert_int_equal(cli("verify", P("missing.jsonl"), NULL), 2);
  assert_out("No such file");
  assert_int_equal(cli("verify", "a", "--bogus", NULL), 2);
  assert_int_equal(cli("frob", NULL), 2);
  assert_int_equal(rbl_audit_main(0, none), 2);
}

static void test_show(void **state) {
  const char *path = P("show.jsonl");
  write_run(path, "INC-SHOW", "run-1", 5, NULL, NULL);
  rbl_audit *a = open_chain(path, "INC-SHOW", "run-2", NULL, NULL);
  add_start(a);
  cJSON *r =
      cJSON_Parse("{\"kind\":\"refused\",\"prim\":\"kube_patch\",\"tenant\":\"prod-tenant-8\","
                  "\"reason\":\"namespace prod-tenant-8 is outside tenant prod-tenant-7\"}");
  assert_true(rbl_audit_append(a, r) >= 0);
  add_call(a, 9, NULL);
  assert_int_equal(rbl_audit_close(a), 0);
  assert_int_equal(cli("show", path, NULL), 0);
  assert_out("=== run run-1  incident INC-SHOW");
  assert_out("runbook: db-conn (runbooks/db.lua");
  assert_out("by alice on ops-1");
  assert_out("step 1 remediate: running");
  assert_out("call 1 kube_patch configmap/db-pool-config [prod-tenant-7]  ok 13ms");
  assert_out("ERROR 17ms conflict: changed\\x1b[2J"); /* control characters escaped */
  assert_out("log: pool at 97%\\x07 of max");
  assert_out("outcome: resolved (exit 0)");
  assert_out("!! REFUSED kube_patch [prod-tenant-8]: namespace prod-tenant-8 is outside");
  assert_out("NO RESULT");
  assert_out("outcome: UNFINISHED");
  assert_null(strchr(out, '\x1b'));
  assert_int_equal(cli("show", path, "--json", NULL), 0);
  cJSON *j = cJSON_Parse(out);
  assert_non_null(j);
  cJSON *runs = cJSON_GetObjectItem(j, "runs");
  assert_int_equal(cJSON_GetArraySize(runs), 2);
  assert_true(cJSON_IsTrue(cJSON_GetObjectItem(cJSON_GetArrayItem(runs, 0), "finished")));
  assert_false(cJSON_IsTrue(cJSON_GetObjectItem(cJSON_GetArrayItem(runs, 1), "finished")));
  cJSON_Delete(j);
}

/* docs/audit.md, "Writing" and "Hash and MAC": the modes a new chain gets, the key file's refusal
 * in its documented words, the 1 MiB bound on torn bytes, and verify --json's shape. */
static void test_documented_details(void **state) {
  (void)state;
  mode_t old = umask(022);
  const char *sub = P("new-audit-dir"), *path = P("new-audit-dir/c.jsonl");
  rbl_audit *a = open_chain(path, "INC-D", "r", NULL, NULL);
  add_start(a);
  assert_int_equal(rbl_audit_close(a), 0);
  umask(old);
  struct stat sd, sf;
  assert_int_equal(stat(sub, &sd), 0);
  assert_int_equal(stat(path, &sf), 0);
  assert_int_equal(sd.st_mode & 07777, 0750);
  assert_int_equal(sf.st_mode & 07777, 0600);
  /* the key file's refusal, word for word */
  const char *loose = P("loose644.key");
  spit(loose, "k", 1, 0644);
  rbl_audit_opts o = {.path = P("k.jsonl"), .incident = "I", .run = "r", .hmac_key_file = loose};
  rbl_audit *b = NULL;
  char err[1024] = "", want[1024];
  assert_int_equal(rbl_audit_open(&b, &o, err, sizeof err), RBL_EDENIED);
  snprintf(
      want, sizeof want,
      "audit key %s is readable by group or others (mode 0644): refusing it; run: chmod 600 %s",
      loose, loose);
  if (!strstr(err, want)) fail_msg("got: %s\nwant: %s", err, want);
  /* up to 1 MiB of non-record bytes at the end is a torn write; more is refused */
  for (int over = 0; over <= 1; over++) {
    const char *torn = over ? P("torn-over.jsonl") : P("torn-max.jsonl");
    write_run(torn, "INC-D", "r1", 1, NULL, NULL);
    size_t n = (1u << 20) + (size_t)over;
    char *junk = malloc(n);
    memset(junk, 'x', n);
    int fd = open(torn, O_WRONLY | O_APPEND);
    assert_int_equal(write(fd, junk, n), (ssize_t)n);
    close(fd);
    free(junk);
    rbl_audit_opts t = {.path = torn, .incident = "INC-D", .run = "r2"};
    b = NULL;
    err[0] = 0;
    int rc = rbl_audit_open(&b, &t, err, sizeof err);
    if (over) {
      assert_int_equal(rc, RBL_EINVAL);
      assert_null(b);
      assert_non_null(strstr(err, "more than 1 MiB at the end is not audit records"));
    } else {
      if (rc != 0) fail_msg("1 MiB of torn bytes refused: %s", err);
      assert_true(add(b, "log", "message", "after") > 0); /* seq continues */
      assert_int_equal(rbl_audit_close(b), 0);
      verify_expect(torn, 0, "torn write at line");
    }
  }
  /* verify --json of an intact chain: path, intact, records, runs, head, notes; no error */
  assert_int_equal(cli("verify", path, "--json", NULL), 0);
  cJSON *j = cJSON_Parse(out);
  assert_non_null(j);
  assert_string_equal(cJSON_GetObjectItem(j, "path")->valuestring, path);
  assert_true(cJSON_IsTrue(cJSON_GetObjectItem(j, "intact")));
  assert_int_equal(cJSON_GetObjectItem(j, "records")->valueint, 1);
  assert_int_equal(cJSON_GetObjectItem(j, "runs")->valueint, 1);
  assert_non_null(strstr(cJSON_GetObjectItem(j, "head")->valuestring, "sha256:"));
  assert_true(cJSON_IsArray(cJSON_GetObjectItem(j, "notes")));
  assert_null(cJSON_GetObjectItem(j, "error"));
  cJSON_Delete(j);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_write_reopen_continue),
      cmocka_unit_test(test_writer_fields),
      cmocka_unit_test(test_incident_mismatch_refused),
      cmocka_unit_test(test_tamper_flip_every_7th),
      cmocka_unit_test(test_tamper_delete_swap_dup),
      cmocka_unit_test(test_tamper_insert_and_splice),
      cmocka_unit_test(test_truncation_head),
      cmocka_unit_test(test_garbage),
      cmocka_unit_test(test_torn_tail),
      cmocka_unit_test(test_torn_first_write),
      cmocka_unit_test(test_hmac),
      cmocka_unit_test(test_ed25519),
      cmocka_unit_test(test_lock),
      cmocka_unit_test(test_full_disk),
      cmocka_unit_test(test_cli_usage),
      cmocka_unit_test(test_show),
      cmocka_unit_test(test_documented_details),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
