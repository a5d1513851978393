/* rbl check: loads each runbook with every primitive inert, then checks its structure. */
#include "audit.h"
#include "cli.h"
#include "engine_int.h"
#include "json.h"
#include "rbl.h"
#include "sandbox.h"
#include "session.h"

#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int check_one(const char *file) {
  rbl_run_opts o;
  memset(&o, 0, sizeof o);
  o.file = file;
  o.quiet = 1;
  run_ctx c;
  memset(&c, 0, sizeof c);
  c.o = &o;
  char err[512];
  c.src = rbl__read_file(file, RUNBOOK_MAX, &c.srclen, err, sizeof err);
  if (!c.src) return rbl__fail(2, "%s", err);
  rbl__gen_run_id(c.run_id);
  snprintf(c.incident, sizeof c.incident, "check");
  rbl__default_id_of(file, c.default_id);
  rbl_engine *e = c.e = rbl__setup_engine(&o);
  e->check_mode = 1;
  e->runbook_dir = rbl__dir_of(file);
  lua_State *L = e->L;
  lua_newtable(L);
  lua_setfield(L, LUA_REGISTRYINDEX, "rbl.config");
  lua_createtable(L, 1, 0);
  lua_pushliteral(L, "check");
  lua_rawseti(L, -2, 1);
  lua_setfield(L, LUA_REGISTRYINDEX, "rbl.tenants");
  e->root.tenant = strdup("check");
  rbl__push_info(&c);
  int rc = rbl__load_runbook(&c);
  if (!rc) {
    lua_getglobal(L, "require");
    lua_pushliteral(L, "rbl.entry");
    lua_call(L, 1, 1);
    lua_getfield(L, -1, "check");
    lua_remove(L, -2);
    lua_insert(L, -3); /* main, check, book, chunk */
    lua_remove(L, -4);
    int st = rbl__engine_run(e, 2);
    const char *msg = lua_tostring(L, -1);
    if (st != LUA_OK || (msg && *msg)) {
      fprintf(stderr, "%s: %s\n", file, st != LUA_OK ? luaL_tolstring(L, -1, NULL) : msg);
      rc = 2;
    } else {
      printf("%s: ok\n", file);
    }
  }
  rbl__engine_free(e);
  free(c.src);
  return rc;
}

int rbl_cmd_check(int argc, char **argv) {
  int rc = 0;
  for (int i = 0; i < argc; i++)
    if (check_one(argv[i]) != 0) rc = 2;
  return rc;
}
