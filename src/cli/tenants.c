/* --tenant: literal names or globs over the tenants the config knows; the result is the
 * registry's rbl.tenants, and the root task's binding when there is exactly one. */
#include "audit.h"
#include "cli.h"
#include "engine_int.h"
#include "json.h"
#include "rbl.h"
#include "sandbox.h"
#include "session.h"

#include <fnmatch.h>
#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>

static int valid_tenant(const char *s) {
  size_t n = strlen(s);
  if (n == 0 || n > 63) return 0;
  for (size_t i = 0; i < n; i++) {
    char c = s[i];
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-')) return 0;
  }
  return s[0] != '-' && s[n - 1] != '-';
}

static int known_tenants(lua_State *L) {
  lua_getfield(L, LUA_REGISTRYINDEX, "rbl.config");
  lua_getfield(L, -1, "tenants");
  lua_remove(L, -2);
  lua_newtable(L);
  if (lua_istable(L, -2)) {
    int n = 0;
    lua_pushnil(L);
    while (lua_next(L, -3)) {
      const char *name = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : lua_tostring(L, -1);
      if (name) {
        lua_pushstring(L, name);
        lua_rawseti(L, -4, ++n);
      }
      lua_pop(L, 1);
    }
  }
  lua_remove(L, -2);
  return (int)lua_rawlen(L, -1);
}

int rbl__resolve_tenants(rbl_engine *e, rbl_run_opts *o) {
  lua_State *L = e->L;
  int nknown = known_tenants(L);
  int known = lua_gettop(L);
  lua_newtable(L);
  int out = lua_gettop(L), n = 0;
  for (int i = 0; i < o->ntenants; i++) {
    const char *t = o->tenants[i];
    int matched = 0;
    if (strpbrk(t, "*?[")) {
      for (int k = 1; k <= nknown; k++) {
        lua_rawgeti(L, known, k);
        const char *name = lua_tostring(L, -1);
        if (fnmatch(t, name, 0) == 0) {
          lua_pushvalue(L, -1);
          lua_rawget(L, out);
          int dup = !lua_isnil(L, -1);
          lua_pop(L, 1);
          if (!dup) {
            lua_pushvalue(L, -1);
            lua_rawseti(L, out, ++n);
            lua_pushvalue(L, -1);
            lua_pushboolean(L, 1);
            lua_rawset(L, out);
          }
          matched = 1;
        }
        lua_pop(L, 1);
      }
      if (!matched) return rbl__fail(2, "--tenant '%s' matches no tenant the config knows", t);
      continue;
    }
    if (!valid_tenant(t))
      return rbl__fail(2, "--tenant '%s': not a valid tenant name (a-z, 0-9, '-', at most 63)", t);
    if (nknown > 0) {
      int found = 0;
      for (int k = 1; k <= nknown && !found; k++) {
        lua_rawgeti(L, known, k);
        found = !strcmp(lua_tostring(L, -1), t);
        lua_pop(L, 1);
      }
      if (!found) return rbl__fail(2, "unknown tenant '%s' (not in the config's tenants)", t);
    }
    lua_pushstring(L, t);
    lua_rawget(L, out);
    int dup = !lua_isnil(L, -1);
    lua_pop(L, 1);
    if (dup) continue;
    lua_pushstring(L, t);
    lua_rawseti(L, out, ++n);
    lua_pushstring(L, t);
    lua_pushboolean(L, 1);
    lua_rawset(L, out);
  }
  /* Keep only the array part. */
  lua_createtable(L, n, 0);
  for (int i = 1; i <= n; i++) {
    lua_rawgeti(L, out, i);
    lua_rawseti(L, -2, i);
  }
  if (n == 1) {
    lua_rawgeti(L, -1, 1);
    e->root.tenant = strdup(lua_tostring(L, -1));
    lua_pop(L, 1);
  }
  lua_setfield(L, LUA_REGISTRYINDEX, "rbl.tenants");
  lua_settop(L, known - 1);
  return 0;
}
