/* Every rbl module, C and embedded Lua, preloaded into a state from one table (linit's pattern). */
#include "engine_int.h"
#include "families.h"
#include "http.h"
#include "json.h"
#include "host.h"
#include "proc.h"
#include "strpat.h"

#include <lauxlib.h>
#include <lualib.h>
#include <string.h>

static const luaL_Reg c_modules[] = {{"rbl.host", luaopen_rbl_host},
                                     {"rbl.json", luaopen_rbl_json},
                                     {"rbl.proc", luaopen_rbl_proc},
                                     {"rbl.http", luaopen_rbl_http},
                                     {"rbl.strpat", luaopen_rbl_strpat},
                                     {"rbl.families", luaopen_rbl_families},
                                     {NULL, NULL}};

struct rbl_embedded {
  const char *name;
  const char *src;
  size_t len;
};
extern const struct rbl_embedded rbl_embedded_lua[];

static int load_embedded(lua_State *L) {
  const struct rbl_embedded *m = lua_touserdata(L, lua_upvalueindex(1));
  char chunk[96];
  snprintf(chunk, sizeof chunk, "=[rbl]/%s.lua", m->name + 4);
  /* rbl's own modules only, compiled at build time (cmake/embed_lua.c): the one place that
   * accepts bytecode; runbooks and their modules load as text only (sandbox.c) */
  if (luaL_loadbufferx(L, m->src, m->len, chunk, "b") != LUA_OK) return lua_error(L);
  lua_pushstring(L, m->name);
  lua_call(L, 1, 1);
  return 1;
}

void rbl__open_modules(lua_State *L) {
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  for (const luaL_Reg *r = c_modules; r->name; r++) {
    lua_pushcfunction(L, r->func);
    lua_setfield(L, -2, r->name);
  }
  for (const rbl_family *f = rbl_families; f->name; f++) {
    if (!f->open_c) continue;
    const char *key = lua_pushfstring(L, "rbl.%s.c", f->name);
    lua_pushcfunction(L, f->open_c);
    lua_setfield(L, -3, key);
    lua_pop(L, 1); /* the name */
  }
  for (const struct rbl_embedded *m = rbl_embedded_lua; m->name; m++) {
    lua_pushlightuserdata(L, (void *)m);
    lua_pushcclosure(L, load_embedded, 1);
    lua_setfield(L, -2, m->name);
  }
  lua_pop(L, 1);
  /* Host code must find only rbl's own modules: no files, no C libraries. */
  lua_getglobal(L, "package");
  lua_pushliteral(L, "");
  lua_setfield(L, -2, "path");
  lua_pushliteral(L, "");
  lua_setfield(L, -2, "cpath");
  lua_pop(L, 1);
}
