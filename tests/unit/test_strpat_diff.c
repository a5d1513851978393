/* test_strpat_diff.c: runs strpat_diff.lua, which compares rbl_strpat against stock string
 * functions. */
#include <stdio.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "strpat.h"

int main(int argc, char **argv) {
  const char *script = argc > 1 ? argv[1] : "tests/unit/strpat_diff.lua";
  lua_State *L = luaL_newstate();
  int rc;
  if (L == NULL) {
    fprintf(stderr, "cannot create Lua state\n");
    return 1;
  }
  luaL_openlibs(L);
  luaopen_rbl_strpat(L);
  lua_setglobal(L, "P");
  rc = luaL_dofile(L, script);
  if (rc != LUA_OK) fprintf(stderr, "strpat_diff: %s\n", lua_tostring(L, -1));
  lua_close(L);
  return rc == LUA_OK ? 0 : 1;
}
