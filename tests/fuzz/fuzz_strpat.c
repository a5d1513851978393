/* Budgeted Lua patterns (src/core/strpat.c) against stock Lua 5.4's: input = pattern NUL subject.
 * Each call gets a step budget (the poll raises after it); within it, find, match and gsub give
 * exactly stock Lua's results, errors included. */
#include "fuzz.h"
#include "strpat.h"

#include <string.h>

static int polls;
static int budget_poll(lua_State *L) {
  if (++polls > 25) return luaL_error(L, "fuzz budget");
  return 0;
}

/* stack: f_ours, f_stock, args... -> pushes nothing; compares results as strings */
static const char prog[] =
    "local ours, stock, s, p = ...\n"
    "local function pack(ok, ...) return { ok = ok, n = select('#', ...), ... } end\n"
    "for _, name in ipairs { 'find', 'match', 'gsub' } do\n"
    "  local a = pack(pcall(ours[name], s, p, name == 'gsub' and '<%0>' or nil))\n"
    "  if not a.ok and tostring(a[1]):find('fuzz budget', 1, true) then return end\n"
    "  local b = pack(pcall(stock[name], s, p, name == 'gsub' and '<%0>' or nil))\n"
    "  assert(a.ok == b.ok, name .. ': ours ' .. tostring(a[1]) .. ' / stock ' .. tostring(b[1]))\n"
    "  if a.ok then\n"
    "    assert(a.n == b.n, name .. ': result count')\n"
    "    for i = 1, a.n do assert(a[i] == b[i], name .. ': result ' .. i .. ': ' ..\n"
    "      tostring(a[i]) .. ' / ' .. tostring(b[i])) end\n"
    "  end\n"
    "end\n";

int LLVMFuzzerTestOneInput(const unsigned char *d, size_t n) {
  static lua_State *L;
  if (!L) {
    L = luaL_newstate();
    luaL_openlibs(L);
    rbl_strpat_set_poll(budget_poll);
  }
  const unsigned char *nul = memchr(d, 0, n);
  size_t plen = nul ? (size_t)(nul - d) : n;
  if (plen > 64)
    return 0; /* stock Lua's backtracking is polynomial in the subject, degree the quantifiers */
  const char *subj = nul ? (const char *)nul + 1 : "";
  size_t slen = nul ? n - plen - 1 : 0;
  if (slen > 256) slen = 256;
  polls = 0;
  if (luaL_loadstring(L, prog) != LUA_OK) abort();
  luaL_requiref(L, "rbl.strpat", luaopen_rbl_strpat, 0);
  lua_getglobal(L, "string");
  lua_pushlstring(L, subj, slen);
  lua_pushlstring(L, (const char *)d, plen);
  int rc = lua_pcall(L, 4, 0, 0);
  FUZZ_CHECK(rc == LUA_OK, "%s", lua_tostring(L, -1));
  lua_settop(L, 0);
  return 0;
}
