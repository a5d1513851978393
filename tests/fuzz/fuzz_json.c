/* json.decode / json.encode (src/core/json.c) over the real module: decoding never crashes, and
 * what decodes survives encode and decode again unchanged (key order aside: Lua tables). */
#include "fuzz.h"
#include "json.h"

static const char prog[] =
    "local json, s = ...\n"
    "local function same(x, y, d)\n"
    "  if type(x) ~= type(y) then return false end\n"
    "  if type(x) ~= 'table' then return x == y or (x ~= x and y ~= y) end\n"
    "  if json.is_array(x) ~= json.is_array(y) then return false end\n"
    "  for k, v in pairs(x) do if not same(v, y[k], d + 1) then return false end end\n"
    "  for k in pairs(y) do if x[k] == nil then return false end end\n"
    "  return true\n"
    "end\n"
    "local v = json.decode(s)\n"
    "if v == nil then return end\n"
    "local a = json.encode(v)\n"
    "if a == nil then return end\n" /* inf, a NUL inside a string: encode refuses, says why */
    "local w = json.decode(a)\n"
    "assert(w ~= nil, 'encode output does not decode: ' .. a)\n"
    "assert(same(v, w, 0), 'the value changed through encode/decode: ' .. a)\n";

int LLVMFuzzerTestOneInput(const unsigned char *d, size_t n) {
  rbl_engine *e = fuzz_engine();
  lua_State *L = e->L;
  int top = lua_gettop(L);
  if (luaL_loadstring(L, prog) != LUA_OK) abort();
  luaL_requiref(L, "rbl.fuzz.json", luaopen_rbl_json, 0); /* the C module json.* is */
  lua_pushlstring(L, (const char *)d, n);
  int rc = lua_pcall(L, 2, 1, 0);
  FUZZ_CHECK(rc == LUA_OK, "%s", lua_tostring(L, -1));
  lua_settop(L, top);
  lua_gc(L, LUA_GCCOLLECT, 0);
  fuzz_reset(e);
  return 0;
}
