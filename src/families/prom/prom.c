/* rbl.prom.c: the PromQL scoper (promql.c) for src/families/prom/prom.lua. The rewrite happens
 * here, in C, when the request is built: prom.lua sends exactly the string scope() returns. */
#include "prom.h"
#include "promql.h"

#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>

#define MAX_SET 4096 /* tenants in one scope_set */

static const char *query_arg(lua_State *L, int idx) {
  size_t len;
  const char *q = luaL_checklstring(L, idx, &len);
  if (strlen(q) != len) luaL_argerror(L, idx, "the query contains a NUL byte");
  return q;
}

static int push_fail(lua_State *L, int rc, const char *why) {
  lua_pushnil(L);
  lua_pushstring(L, rc == RBL_PROMQL_ESCOPE ? "scope" : "syntax");
  lua_pushstring(L, why);
  return 3;
}

/* The list at idx as a malloc'd array of strings kept alive by the list (strings only). */
static const char **tenant_list(lua_State *L, int idx, size_t *n) {
  luaL_checktype(L, idx, LUA_TTABLE);
  lua_Integer len = luaL_len(L, idx);
  if (len < 0 || len > MAX_SET) luaL_argerror(L, idx, "too many tenants");
  const char **ts = calloc((size_t)len + 1, sizeof *ts);
  if (!ts) luaL_error(L, "out of memory");
  for (lua_Integer i = 1; i <= len; i++) {
    if (lua_rawgeti(L, idx, i) != LUA_TSTRING) {
      free(ts);
      luaL_argerror(L, idx, "tenant names must be strings");
    }
    ts[i - 1] = lua_tostring(L, -1); /* still referenced by the list */
    lua_pop(L, 1);
  }
  *n = (size_t)len;
  return ts;
}

static int l_scope(lua_State *L) {
  const char *q = query_arg(L, 1);
  const char *label = luaL_checkstring(L, 2);
  const char *tenant = luaL_checkstring(L, 3);
  char why[512], *out = NULL;
  int rc = rbl_promql_scope(q, label, tenant, &out, why, sizeof why);
  if (rc) return push_fail(L, rc, why);
  lua_pushstring(L, out);
  free(out);
  return 1;
}

static int l_scope_set(lua_State *L) {
  const char *q = query_arg(L, 1);
  const char *label = luaL_checkstring(L, 2);
  size_t n;
  const char **ts = tenant_list(L, 3, &n);
  char why[512], *out = NULL;
  int rc = rbl_promql_scope_set(q, label, ts, n, &out, why, sizeof why);
  free(ts);
  if (rc) return push_fail(L, rc, why);
  lua_pushstring(L, out);
  free(out);
  return 1;
}

static int l_check(lua_State *L) {
  const char *q = query_arg(L, 1);
  const char *label = luaL_checkstring(L, 2);
  const char *tenant = luaL_checkstring(L, 3);
  char why[512];
  int rc = rbl_promql_check(q, label, tenant, why, sizeof why);
  if (rc) return push_fail(L, rc, why);
  lua_pushboolean(L, 1);
  return 1;
}

static int l_check_set(lua_State *L) {
  const char *q = query_arg(L, 1);
  const char *label = luaL_checkstring(L, 2);
  size_t n;
  const char **ts = tenant_list(L, 3, &n);
  char why[512];
  int rc = rbl_promql_check_set(q, label, ts, n, why, sizeof why);
  free(ts);
  if (rc) return push_fail(L, rc, why);
  lua_pushboolean(L, 1);
  return 1;
}

static int l_parse(lua_State *L) {
  const char *q = query_arg(L, 1);
  char why[512];
  int rc = rbl_promql_parse(q, why, sizeof why);
  if (rc) return push_fail(L, rc, why);
  lua_pushboolean(L, 1);
  return 1;
}

static const luaL_Reg funcs[] = {{"scope", l_scope}, {"scope_set", l_scope_set},
                                 {"check", l_check}, {"check_set", l_check_set},
                                 {"parse", l_parse}, {NULL, NULL}};

int luaopen_rbl_prom_c(lua_State *L) {
  luaL_newlib(L, funcs);
  lua_pushinteger(L, RBL_PROMQL_MAX_LEN);
  lua_setfield(L, -2, "MAX_LEN");
  return 1;
}
