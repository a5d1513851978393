/* Cost of one yield/resume round trip through the engine's scheduler (the path sleep(0) takes,
 * without the timer and the audit): a C function parks its task and is woken at once. */
#include "engine_int.h"
#include "sandbox.h"

#include <lauxlib.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>

void rbl__open_modules(lua_State *L);

static int push_none(lua_State *L, void *ud) { return 0; }

/* yield_now(): parks and immediately schedules its own resume. */
static int l_yield_now(lua_State *L) {
  rbl_wait *w = rbl_wait_new(L, push_none, NULL, NULL);
  rbl_task *t = rbl__task_of(L);
  t->wait = w;
  t->state = TASK_WAITING;
  rbl_wait_done(w);
  return rbl_wait_yield(L, w);
}

int main(int argc, char **argv) {
  long n = argc > 1 ? atol(argv[1]) : 1000000;
  rbl_limits lim;
  rbl__default_limits(&lim);
  rbl_engine *e = rbl__engine_new(&lim);
  luaL_openlibs(e->L);
  rbl__open_modules(e->L);
  rbl_sandbox_init(e->L);
  lua_register(e->L, "yield_now", l_yield_now);
  luaL_loadstring(e->L, "local n = ... for i = 1, n do yield_now() end return 'done'");
  lua_pushinteger(e->L, n);
  uint64_t t0 = uv_hrtime();
  int st = rbl__engine_run(e, 1);
  uint64_t t1 = uv_hrtime();
  if (st != LUA_OK) {
    fprintf(stderr, "bench failed: %s\n", lua_tostring(e->L, -1));
    return 1;
  }
  printf("yield/resume round trip: %.3f us (%ld round trips in %.1f ms; goal <= 2 us)\n",
         (double)(t1 - t0) / 1e3 / (double)n, n, (double)(t1 - t0) / 1e6);
  rbl__engine_free(e);
  return 0;
}
