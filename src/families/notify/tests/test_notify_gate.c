/* The notify family's C half: the gate's decision for notification requests (only POST, only
 * to a destination the config names, secrets resolved as secret() does), the secret resolver
 * and the webhook signature (RFC 4231 test vector). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <lauxlib.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "notify.h"

static char secret_file[64];

/* rbl.config = {secrets = {HOOK_URL = file}, notify = {channels = {...}}} */
static lua_State *state(void) {
  lua_State *L = luaL_newstate();
  luaL_openlibs(L);
  char src[1024];
  snprintf(src, sizeof src,
           "return { secrets = { HOOK_URL = '%s' }, notify = { channels = {"
           " oncall = { type = 'slack', webhook = 'T_NOTIFY_SLACK' },"
           " pager = { type = 'pagerduty', routing_key = 'T_NOTIFY_PD' },"
           " pager2 = { type = 'pagerduty', routing_key = 'T_NOTIFY_PD', url = "
           "'http://127.0.0.1:9/pd' },"
           " hook = { type = 'webhook', webhook = 'HOOK_URL', hmac_key = 'K' } } } }",
           secret_file);
  assert_int_equal(luaL_dostring(L, src), 0);
  lua_setfield(L, LUA_REGISTRYINDEX, "rbl.config");
  return L;
}

static int setup(void **st) {
  snprintf(secret_file, sizeof secret_file, "/tmp/rbl-notify-test-XXXXXX");
  int fd = mkstemp(secret_file);
  assert_true(fd >= 0);
  const char *v = "https://hooks.example.com/from-file\n";
  assert_int_equal(write(fd, v, strlen(v)), (ssize_t)strlen(v));
  close(fd);
  setenv("T_NOTIFY_SLACK", "https://hooks.slack.com/services/T1/B1/xyz", 1);
  return 0;
}

static int teardown(void **st) {
  unlink(secret_file);
  return 0;
}

static void allowed(void **st) {
  lua_State *L = state();
  char why[200];
  int top = lua_gettop(L);
  assert_int_equal(
      rbl_notify_allowed(L, "POST", "https://hooks.slack.com/services/T1/B1/xyz", why, sizeof why),
      0);
  assert_int_equal(rbl_notify_allowed(L, "POST", RBL_NOTIFY_PAGERDUTY_URL, why, sizeof why), 0);
  assert_int_equal(rbl_notify_allowed(L, "POST", "http://127.0.0.1:9/pd", why, sizeof why), 0);
  /* the secret file's contents, one trailing newline stripped */
  assert_int_equal(
      rbl_notify_allowed(L, "POST", "https://hooks.example.com/from-file", why, sizeof why), 0);
  assert_int_equal(lua_gettop(L), top);
  lua_close(L);
}

static void refused(void **st) {
  lua_State *L = state();
  char why[200];
  const char *slack = "https://hooks.slack.com/services/T1/B1/xyz";
  assert_int_equal(rbl_notify_allowed(L, "GET", slack, why, sizeof why), -1);
  assert_int_equal(rbl_notify_allowed(L, "PUT", slack, why, sizeof why), -1);
  assert_int_equal(
      rbl_notify_allowed(L, "POST", "https://hooks.slack.com/services/T1/B1/xyzz", why, sizeof why),
      -1);
  assert_null(strstr(why, "hooks.slack.com")); /* never the destination in the reason */
  assert_int_equal(rbl_notify_allowed(L, "POST", "https://evil.example.com/", why, sizeof why), -1);
  assert_int_equal(
      rbl_notify_allowed(L, "POST", "https://hooks.example.com/from-file\n", why, sizeof why), -1);
  assert_int_equal(rbl_notify_allowed(L, "POST", "", why, sizeof why), -1);
  /* a secret that does not resolve names no destination */
  unsetenv("T_NOTIFY_SLACK");
  assert_int_equal(rbl_notify_allowed(L, "POST", slack, why, sizeof why), -1);
  setenv("T_NOTIFY_SLACK", slack, 1);
  lua_close(L);
  /* no config at all */
  L = luaL_newstate();
  assert_int_equal(rbl_notify_allowed(L, "POST", RBL_NOTIFY_PAGERDUTY_URL, why, sizeof why), -1);
  lua_close(L);
}

static void secrets(void **st) {
  lua_State *L = state();
  char why[200];
  size_t len = 0;
  char *v = rbl_notify_secret(L, "HOOK_URL", &len, why, sizeof why);
  assert_non_null(v);
  assert_string_equal(v, "https://hooks.example.com/from-file");
  assert_int_equal(len, strlen(v));
  free(v);
  v = rbl_notify_secret(L, "T_NOTIFY_SLACK", &len, why, sizeof why);
  assert_string_equal(v, "https://hooks.slack.com/services/T1/B1/xyz");
  free(v);
  assert_null(rbl_notify_secret(L, "T_NOTIFY_NOPE", &len, why, sizeof why));
  assert_null(rbl_notify_secret(L, "bad-name", &len, why, sizeof why));
  assert_null(rbl_notify_secret(L, "", &len, why, sizeof why));
  lua_close(L);
}

static void hmac_vector(void **st) {
  char out[65];
  const char *msg = "what do ya want for nothing?";
  assert_int_equal(rbl_notify_hmac_hex("Jefe", 4, msg, strlen(msg), out), 0);
  assert_string_equal(out, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(allowed), cmocka_unit_test(refused),
                                     cmocka_unit_test(secrets), cmocka_unit_test(hmac_vector)};
  return cmocka_run_group_tests(tests, setup, teardown);
}
