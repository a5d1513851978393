/* test_strpat.c: cmocka unit tests for rbl_strpat (semantics spot checks and the step budget/poll
 * hook). */
#define _POSIX_C_SOURCE 200809L

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <signal.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "strpat.h"

static int g_polls;       /* poll calls seen */
static int g_poll_limit;  /* raise once this many polls happened; 0 = never */
static int g_poll_pushes; /* junk the poll fn leaves on the stack */

static int test_poll(lua_State *L) {
  int i;
  g_polls++;
  for (i = 0; i < g_poll_pushes; i++)
    lua_pushinteger(L, i);
  if (g_poll_limit > 0 && g_polls >= g_poll_limit)
    return luaL_error(L, "rbl: step budget exhausted");
  return 0;
}

static int setup(void **state) {
  lua_State *L = luaL_newstate();
  if (L == NULL) return -1;
  luaL_openlibs(L);
  luaopen_rbl_strpat(L);
  lua_setglobal(L, "P");
  g_polls = 0;
  g_poll_limit = 0;
  g_poll_pushes = 0;
  rbl_strpat_set_poll(NULL);
  *state = L;
  return 0;
}

static int teardown(void **state) {
  rbl_strpat_set_poll(NULL);
  lua_close(*state);
  return 0;
}

/* Runs a chunk that must return true; fails the test with its message. */
static void lua_ok(lua_State *L, const char *chunk) {
  int top = lua_gettop(L);
  if (luaL_dostring(L, chunk) != LUA_OK)
    fail_msg("chunk failed: %s\n%s", lua_tostring(L, -1), chunk);
  if (!lua_toboolean(L, top + 1)) fail_msg("chunk returned false: %s", chunk);
  lua_settop(L, top);
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void test_find_basics(void **state) {
  lua_State *L = *state;
  lua_ok(L, "local a, b = P.find('hello world', 'o w') return a == 5 and b == 7");
  lua_ok(L, "local a, b, c = P.find('key=val', '(%w+)=') return a == 1 and b == 4 and c == 'key'");
  lua_ok(L, "return P.find('a+b', '+', 1, true) == 2");
  lua_ok(L, "return P.find('abc', 'b', 10) == nil");
  lua_ok(L, "return P.find('abc', '', 4) == 4");
  lua_ok(L, "return P.find('abc', '^b') == nil and P.find('abc', '^b', 2) == 2");
  lua_ok(L, "return P.find(12345, 34) == 3");
}

static void test_match_and_captures(void **state) {
  lua_State *L = *state;
  lua_ok(L, "local a, b = P.match('x = 10', '(%w+)%s*=%s*(%d+)') return a == 'x' and b == '10'");
  lua_ok(L, "local a, b = P.match('hello', '()ll()') return a == 3 and b == 5");
  lua_ok(L, "return P.match('f(a(b)c)d', '%b()') == '(a(b)c)'");
  lua_ok(L, "return P.match('THE (quick) fox', '%f[%a]%a+', 5) == 'quick'");
  lua_ok(L, "return P.match('abab', '(ab)%1') == 'ab'");
  lua_ok(L, "return P.match('a\\0b', '%z') == '\\0'");
  lua_ok(L, "return P.match('x\\0y\\0z', '\\0(.)\\0') == 'y'");
}

static void test_gmatch_and_gsub(void **state) {
  lua_State *L = *state;
  lua_ok(L, "local t = {} for k, v in P.gmatch('a=1, b=2', '(%w+)=(%w+)') do t[#t+1] = k .. v end "
            "return table.concat(t, ',') == 'a1,b2'");
  lua_ok(L, "local n = 0 for _ in P.gmatch('abc', '%a', 2) do n = n + 1 end return n == 2");
  lua_ok(L, "local s, n = P.gsub('hello world', '(%w+)', '<%1>') return s == '<hello> <world>' and "
            "n == 2");
  lua_ok(L, "local s, n = P.gsub('abc', '%w', {a = 'A', b = false}) return s == 'Abc' and n == 3");
  lua_ok(L, "local s = P.gsub('abc', '%w', function(c) if c == 'b' then return nil end return "
            "c:upper() end) "
            "return s == 'AbC'");
  lua_ok(L, "local s, n = P.gsub('aaa', 'a', 'b', 2) return s == 'bba' and n == 2");
  lua_ok(L, "local s, n = P.gsub('abc', '', '-') return s == '-a-b-c-' and n == 4");
}

static void test_errors(void **state) {
  lua_State *L = *state;
  lua_ok(L,
         "local ok, e = pcall(P.find, 'a', 'a%') return not ok and e:find('ends with', 1, true)");
  lua_ok(
      L,
      "local ok, e = pcall(P.find, 'a', '[a') return not ok and e:find(\"missing ']'\", 1, true)");
  lua_ok(L, "local ok, e = pcall(P.match, 'a', '%1') return not ok and e:find('invalid capture "
            "index', 1, true)");
  lua_ok(L, "local ok, e = pcall(P.match, 'a', 'a)') return not ok and e:find('invalid pattern "
            "capture', 1, true)");
  lua_ok(L, "local ok, e = pcall(P.match, 'a', string.rep('(', 33)) return not ok and e:find('too "
            "many captures', 1, true)");
  lua_ok(L, "local ok, e = pcall(P.gsub, 'a', 'a', '%') return not ok and e:find('replacement "
            "string', 1, true)");
  lua_ok(L, "local ok, e = pcall(P.gsub, 'a', 'a', function() return {} end) "
            "return not ok and e:find('invalid replacement value (a table)', 1, true)");
}

/* Deep patterns must hit "pattern too complex", not blow the C stack. */
static void test_depth_bounded(void **state) {
  lua_State *L = *state;
  lua_ok(L, "local ok, e = pcall(P.match, string.rep('a', 1e4), string.rep('a?', 1e4)) "
            "return not ok and e:find('pattern too complex', 1, true)");
  lua_ok(L, "local ok, e = pcall(P.match, string.rep('a', 1e4), string.rep('a-', 5e3) .. 'b') "
            "return not ok and e:find('pattern too complex', 1, true)");
  /* Long subjects with linear patterns do not recurse per character. */
  lua_ok(L, "return #P.match(string.rep('ab', 1e6), '[ab]*') == 2e6");
  lua_ok(L, "return P.find(string.rep('a', 1e6) .. 'b', 'a-b') == 1");
}

/* The point of the module: a catastrophic pattern stops via the poll fn. */
static void test_catastrophic_stops(void **state) {
  lua_State *L = *state;
  double t0;
  g_poll_limit = 1000;
  rbl_strpat_set_poll(test_poll);
  alarm(60); /* a hang kills the test instead of stalling CI */
  t0 = now_s();
  lua_ok(L, "local ok, e = pcall(P.find, string.rep('a', 1e5), '.-.-.-.-.-.-.-b') "
            "return not ok and e:find('step budget exhausted', 1, true) ~= nil");
  alarm(0);
  assert_int_equal(g_polls, 1000);
  assert_true(now_s() - t0 < 10.0);
}

/* Polls happen every RBL_STRPAT_POLL_INTERVAL steps, in every function. */
static void test_poll_cadence(void **state) {
  lua_State *L = *state;
  rbl_strpat_set_poll(test_poll);
  /* ~1e6 single-char steps for '%d' scanning a 1e6-char subject. */
  lua_ok(L, "return P.find(string.rep('a', 1e6), '%d') == nil");
  assert_true(g_polls >= 1000000 / RBL_STRPAT_POLL_INTERVAL - 1);
  assert_true(g_polls <= 3 * (1000000 / RBL_STRPAT_POLL_INTERVAL) + 1);

  g_polls = 0;
  lua_ok(L, "return P.find('short', 's%a+') == 1");
  assert_int_equal(g_polls, 0);

  g_polls = 0;
  g_poll_limit = 3;
  lua_ok(L, "local ok = pcall(P.gsub, string.rep('a', 1e5), '.-b', 'x') return not ok");
  g_polls = 0;
  lua_ok(L,
         "local ok = pcall(function() for _ in P.gmatch(string.rep('a', 1e5), '.-b') do end end) "
         "return not ok");
  g_polls = 0;
  lua_ok(L, "local ok = pcall(P.match, string.rep('a', 1e5), '(.-)%1b') return not ok");
}

/* Junk left by the poll fn is dropped, even with a gsub buffer in flight. */
static void test_poll_stack_hygiene(void **state) {
  lua_State *L = *state;
  g_poll_pushes = 5;
  rbl_strpat_set_poll(test_poll);
  lua_ok(L, "local s = string.rep('ab', 3e4) "
            "local r, n = P.gsub(s, '%w', function(c) return c:upper() end) "
            "return r == s:upper() and n == 6e4");
  assert_true(g_polls > 0);
}

/* With no poll fn set, the budget never interrupts anything. */
static void test_no_poll_no_limit(void **state) {
  lua_State *L = *state;
  lua_ok(L, "return P.find(string.rep('a', 150), '.-.-.-b') == nil");
  assert_int_equal(g_polls, 0);
}

/* A gmatch iterator stopped by the budget resumes cleanly afterwards. */
static void test_gmatch_resumes_after_poll_error(void **state) {
  lua_State *L = *state;
  lua_ok(L, "it = P.gmatch(string.rep('a', 3e4) .. 'b' .. 'cd', '.-b') return true");
  g_poll_limit = 1;
  rbl_strpat_set_poll(test_poll);
  lua_ok(L, "return not pcall(it)");
  rbl_strpat_set_poll(NULL);
  lua_ok(L, "return it() == string.rep('a', 3e4) .. 'b' and it() == nil");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_find_basics, setup, teardown),
      cmocka_unit_test_setup_teardown(test_match_and_captures, setup, teardown),
      cmocka_unit_test_setup_teardown(test_gmatch_and_gsub, setup, teardown),
      cmocka_unit_test_setup_teardown(test_errors, setup, teardown),
      cmocka_unit_test_setup_teardown(test_depth_bounded, setup, teardown),
      cmocka_unit_test_setup_teardown(test_catastrophic_stops, setup, teardown),
      cmocka_unit_test_setup_teardown(test_poll_cadence, setup, teardown),
      cmocka_unit_test_setup_teardown(test_poll_stack_hygiene, setup, teardown),
      cmocka_unit_test_setup_teardown(test_no_poll_no_limit, setup, teardown),
      cmocka_unit_test_setup_teardown(test_gmatch_resumes_after_poll_error, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
