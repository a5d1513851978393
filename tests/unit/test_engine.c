/* Unit tests of the engine: the sandbox allow-list and guards, the allocator cap, and the
 * async bridge (waits, cancel hooks, group timeouts, deadlock detection). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "engine_int.h"
#include "rbl.h"
#include "audit.h"
#include "sandbox.h"

#include <lauxlib.h>
#include <lualib.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <unistd.h>

void rbl__open_modules(lua_State *L);

static int cancels, pushes;

static rbl_engine *engine(size_t mem_mb) {
  rbl_limits lim;
  rbl__default_limits(&lim);
  if (mem_mb) lim.memory = mem_mb << 20;
  rbl_engine *e = rbl__engine_new(&lim);
  assert_non_null(e);
  luaL_openlibs(e->L);
  rbl__open_modules(e->L);
  rbl_sandbox_init(e->L);
  return e;
}

/* Runs src in a fresh sandbox env as the main task; returns the status, result on top. */
static int run_sandboxed(rbl_engine *e, const char *src) {
  lua_State *L = e->L;
  lua_pushnil(L);
  rbl_sandbox_push_env(L);
  assert_int_equal(rbl_sandbox_load(L, src, strlen(src), "=test", -1), LUA_OK);
  lua_remove(L, -2);
  return rbl__engine_run(e, 0);
}

static void collect_name(const char *name, void *ud) {
  luaL_Buffer *b = ud;
  if (strchr(name, '.')) return; /* members: reached through their library */
  luaL_addstring(b, name);
  luaL_addchar(b, ' ');
}

static void test_env_is_exactly_the_allow_list(void **state) {
  rbl_engine *e = engine(0);
  lua_State *L = e->L;
  /* The walk happens from inside: the runbook's view is what counts. pairs(_G) lists every
   * global (no families are loaded here), and equals the sandbox's own list. */
  int st = run_sandboxed(e, "local names = {} for k in pairs(_G) do names[#names+1] = k end "
                            "table.sort(names) return table.concat(names, ' ') .. ' '");
  assert_int_equal(st, LUA_OK);
  const char *got = lua_tostring(L, -1);
  lua_State *T = luaL_newstate();
  luaL_openlibs(T);
  luaL_loadstring(T, "local t = {} for w in (...):gmatch('%S+') do t[#t+1] = w end "
                     "table.sort(t) return table.concat(t, ' ') .. ' '");
  luaL_Buffer b;
  luaL_buffinit(T, &b);
  rbl_sandbox_each_name(collect_name, &b);
  luaL_pushresult(&b);
  assert_int_equal(lua_pcall(T, 1, 1, 0), LUA_OK);
  assert_string_equal(got, lua_tostring(T, -1));
  lua_close(T);
  static const char *const absent[] = {"io",       "debug",      "package",   "dofile",
                                       "loadfile", "os.execute", "os.getenv", "string.dump",
                                       "os.exit",  NULL};
  for (const char *const *n = absent; *n; n++) {
    char src[160];
    snprintf(src, sizeof src, "return (function() return %s end)() == nil", *n);
    rbl__engine_free(e);
    e = engine(0);
    int rs = run_sandboxed(e, src);
    assert_true(rs != LUA_OK || lua_toboolean(e->L, -1));
  }
  rbl__engine_free(e);
}

/* The one error object: a vocabulary name is kept, any other becomes "failed" and says so. */
static void test_error_codes_come_from_the_vocabulary(void **state) {
  lua_State *L = luaL_newstate();
  rbl__push_error(L, "not_found", "gone");
  lua_getfield(L, -1, "code");
  assert_string_equal(lua_tostring(L, -1), "not_found");
  lua_settop(L, 0);
  rbl__push_error(L, "not found", "gone"); /* the old, spaced spelling is not a code */
  lua_getfield(L, -1, "code");
  assert_string_equal(lua_tostring(L, -1), "failed");
  lua_getfield(L, -2, "message");
  assert_non_null(strstr(lua_tostring(L, -1), "bug in rbl: unknown error code 'not found'"));
  lua_settop(L, 0);
  assert_string_equal(rbl_err_name(RBL_ENOTFOUND), "not_found");
  assert_int_equal(rbl_err_from_name("not_found"), RBL_ENOTFOUND);
  assert_int_equal(rbl_err_from_name("nope"), 0);
  for (int c = RBL_ENOMEM; c >= RBL_EUNAVAIL; c--) /* every code has a name that maps back */
    assert_int_not_equal(rbl_err_from_name(rbl_err_name(c)), 0);
  lua_close(L);
}

static void expect_error(const char *src, const char *needle) {
  rbl_engine *e = engine(0);
  int st = run_sandboxed(e, src);
  assert_int_not_equal(st, LUA_OK);
  const char *msg = luaL_tolstring(e->L, -1, NULL);
  if (!strstr(msg, needle)) fail_msg("'%s' gave '%s', wanted '%s'", src, msg, needle);
  rbl__engine_free(e);
}

static void test_globals_and_libraries_are_read_only(void **state) {
  expect_error("string.format = nil", "read-only");
  expect_error("rawset(string, 'x', 1)", "read-only");
  expect_error("rawset(_G, 'print', 1)", "read-only");
  expect_error("rawset(_ENV, 'x', 1)", "read-only");
  expect_error("print = nil", "read-only global 'print'");
  expect_error("tenant = 'other'", "read-only global 'tenant'");
  expect_error("setmetatable(_G, {})", "protected metatable");
  expect_error("getmetatable('').__index = {}", "index");
  expect_error("load(string.dump(print))", "dump");
  expect_error("assert(load('\\27Lua'))", "binary");
  expect_error("collectgarbage('stop')", "only");
}

static void test_own_globals_work(void **state) {
  rbl_engine *e = engine(0);
  assert_int_equal(run_sandboxed(e, "x = 41 x = x + 1 return x + ('a'):len() - 1"), LUA_OK);
  assert_int_equal(lua_tointeger(e->L, -1), 42);
  rbl__engine_free(e);
}

static void test_allocator_cap_kills_even_under_pcall(void **state) {
  rbl_engine *e = engine(8);
  int st = run_sandboxed(e, "local t = {} pcall(function() for i = 1, 1e9 do t[i] = "
                            "('x'):rep(1000) .. i end end) return 'survived'");
  assert_int_not_equal(st, LUA_OK);
  assert_int_equal(e->killed, RBL_KILL_LIMIT);
  assert_non_null(strstr(e->kill_msg, "memory limit"));
  assert_true(e->mem <= e->mem_cap);
  rbl__engine_free(e);
}

/* A wait that completes from a timer after `ms`, counting push and cancel calls. */
typedef struct tw {
  uv_timer_t timer;
  rbl_wait *wait;
} tw;
static void tw_close(uv_handle_t *h) { free(h->data); }
static void tw_fire(uv_timer_t *t) {
  tw *op = t->data;
  uv_close((uv_handle_t *)t, tw_close);
  rbl_wait_done(op->wait);
}
static void tw_cancel(void *ud) {
  tw *op = ud;
  cancels++;
  if (!uv_is_closing((uv_handle_t *)&op->timer)) uv_close((uv_handle_t *)&op->timer, tw_close);
}
static int tw_push(lua_State *L, void *ud) {
  pushes++;
  lua_pushliteral(L, "woke");
  return 1;
}
static int l_wait_ms(lua_State *L) {
  tw *op = malloc(sizeof *op);
  uv_timer_init(rbl_engine_loop(rbl_engine_of(L)), &op->timer);
  op->timer.data = op;
  uv_timer_start(&op->timer, tw_fire, (uint64_t)luaL_checkinteger(L, 1), 0);
  op->wait = rbl_wait_new(L, tw_push, tw_cancel, op);
  return rbl_wait_yield(L, op->wait);
}
static int l_never(lua_State *L) {
  rbl_wait *w = rbl_wait_new(L, NULL, NULL, NULL);
  return rbl_wait_yield(L, w);
}

static rbl_engine *bridge_engine(void) {
  rbl_engine *e = engine(0);
  lua_register(e->L, "wait_ms", l_wait_ms);
  lua_register(e->L, "never", l_never);
  lua_getglobal(e->L, "require");
  lua_pushliteral(e->L, "rbl.host");
  lua_call(e->L, 1, 1);
  lua_getfield(e->L, -1, "run_all");
  lua_setglobal(e->L, "run_all");
  lua_pop(e->L, 1);
  cancels = pushes = 0;
  return e;
}

static int run_host(rbl_engine *e, const char *src) {
  assert_int_equal(luaL_loadstring(e->L, src), LUA_OK);
  return rbl__engine_run(e, 0);
}

static void test_waits_resume_with_pushed_values(void **state) {
  rbl_engine *e = bridge_engine();
  assert_int_equal(run_host(e, "local a = wait_ms(1) local b = wait_ms(0) return a .. b"), LUA_OK);
  assert_string_equal(lua_tostring(e->L, -1), "wokewoke");
  assert_int_equal(pushes, 2);
  assert_int_equal(cancels, 0);
  rbl__engine_free(e);
}

static void test_group_runs_concurrently_and_keeps_order(void **state) {
  rbl_engine *e = bridge_engine();
  uint64_t t0 = uv_hrtime();
  int st = run_host(
      e, "local fns = {} for i = 1, 50 do fns[i] = function() wait_ms(50) return i end end "
         "local r, errs, n = run_all(fns, {concurrency = 50}) return r[1] + r[50] + n");
  assert_int_equal(st, LUA_OK);
  assert_int_equal(lua_tointeger(e->L, -1), 51);
  assert_true(uv_hrtime() - t0 < 1000000000ull); /* 50 x 50 ms in well under a second */
  rbl__engine_free(e);
}

static void test_group_timeout_cancels_each_wait_once(void **state) {
  rbl_engine *e = bridge_engine();
  int st = run_host(
      e, "local fns = {} for i = 1, 5 do fns[i] = function() wait_ms(10000) end end "
         "local r, errs, n = run_all(fns, {timeout = 0.05}) return n .. ' ' .. errs[1].code");
  assert_int_equal(st, LUA_OK);
  assert_string_equal(lua_tostring(e->L, -1), "5 timeout");
  assert_int_equal(cancels, 5);
  assert_int_equal(pushes, 0);
  rbl__engine_free(e);
}

static void test_nested_cancel_reaches_grandchildren(void **state) {
  rbl_engine *e = bridge_engine();
  int st =
      run_host(e, "local r, errs, n = run_all({function() run_all({function() wait_ms(10000) end, "
                  "function() wait_ms(10000) end}) end}, {timeout = 0.05}) return n");
  assert_int_equal(st, LUA_OK);
  assert_int_equal(cancels, 2);
  rbl__engine_free(e);
}

static void test_deadlock_is_detected(void **state) {
  rbl_engine *e = bridge_engine();
  int st = run_host(e, "never() return 'unreachable'");
  assert_int_not_equal(st, LUA_OK);
  assert_int_equal(e->killed, RBL_KILL_LIMIT);
  assert_non_null(strstr(e->kill_msg, "deadlock"));
  rbl__engine_free(e);
}

static void test_waiting_inside_a_user_coroutine_is_refused(void **state) {
  rbl_engine *e = bridge_engine();
  assert_int_equal(run_host(e, "local ok, err = coroutine.resume(coroutine.create(function() "
                               "return wait_ms(1) end)) return tostring(err)"),
                   LUA_OK);
  /* Host coroutines share the check: a wait needs the scheduler's own task. */
  assert_non_null(strstr(lua_tostring(e->L, -1), "coroutine"));
  rbl__engine_free(e);
}

/* Every string cJSON allocates goes back through cJSON_free (its hooks count it against the run's
 * budget, src/core/budget.c): one freed with free() stays charged for ever, one malloc'd and
 * handed to cJSON is released without having been charged. Either way the count drifts. */
static void test_cjson_strings_settle_the_budget(void **state) {
  (void)state;
  rbl_engine *e = engine(0);
  char pad[8192];
  memset(pad, 'x', sizeof pad - 1);
  pad[sizeof pad - 1] = 0;
  cJSON *hold = cJSON_CreateString(pad); /* so that a release never below zero still shows */
  e->secrets = malloc(sizeof *e->secrets);
  assert_non_null(e->secrets);
  e->secrets[e->nsecrets++] = strdup("hunter2-the-secret");
  size_t before = e->ext;
  /* masking replaces a string of a cJSON tree (host.c, rbl__mask_json) */
  cJSON *rec = cJSON_CreateObject();
  cJSON_AddStringToObject(rec, "out", "token=hunter2-the-secret and more text");
  rbl__mask_json(e, rec);
  assert_string_equal(cJSON_GetObjectItem(rec, "out")->valuestring,
                      "token=[redacted] and more text");
  cJSON_Delete(rec);
  assert_int_equal(e->ext, before);
  /* rbl audit show, in JSON and as a timeline (audit_show.c prints with cJSON_Print*) */
  char path[] = "/tmp/rbl-test-budget-XXXXXX";
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  const char *chain =
      "{\"kind\":\"run_start\",\"run\":\"r1\",\"incident\":\"i\",\"ts\":\"2026-01-01T00:00:00."
      "000Z\","
      "\"tenants\":[\"t1\"]}\n"
      "{\"kind\":\"intent\",\"run\":\"r1\",\"call\":1,\"prim\":\"drift_compare\",\"ts\":"
      "\"2026-01-01T00:00:00.001Z\",\"args\":[{\"n\":9007199254740992}]}\n"
      "not json\n";
  assert_int_equal(write(fd, chain, strlen(chain)), (int)strlen(chain));
  close(fd);
  fflush(stdout);
  int out = dup(1), devnull = open("/dev/null", O_WRONLY);
  assert_true(out >= 0 && devnull >= 0);
  dup2(devnull, 1);
  char *json_argv[] = {"show", path, "--json", NULL};
  char *text_argv[] = {"show", path, NULL};
  int rc1 = rbl_audit_show_main(3, json_argv);
  int rc2 = rbl_audit_show_main(2, text_argv);
  fflush(stdout);
  dup2(out, 1);
  close(out);
  close(devnull);
  unlink(path);
  assert_int_equal(rc1, 0);
  assert_int_equal(rc2, 0);
  assert_int_equal(e->ext, before);
  cJSON_Delete(hold);
  rbl__engine_free(e);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_env_is_exactly_the_allow_list),
      cmocka_unit_test(test_globals_and_libraries_are_read_only),
      cmocka_unit_test(test_own_globals_work),
      cmocka_unit_test(test_allocator_cap_kills_even_under_pcall),
      cmocka_unit_test(test_waits_resume_with_pushed_values),
      cmocka_unit_test(test_group_runs_concurrently_and_keeps_order),
      cmocka_unit_test(test_group_timeout_cancels_each_wait_once),
      cmocka_unit_test(test_nested_cancel_reaches_grandchildren),
      cmocka_unit_test(test_deadlock_is_detected),
      cmocka_unit_test(test_waiting_inside_a_user_coroutine_is_refused),
      cmocka_unit_test(test_error_codes_come_from_the_vocabulary),
      cmocka_unit_test(test_cjson_strings_settle_the_budget),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
