/* The sandbox: an allow-list of globals, read-only library proxies, and the wrappers
 * (pcall, coroutine, print, load, require) that keep a killed run from running on. */
#include "sandbox.h"
#include "textesc.h"
#include "engine_int.h"
#include "strpat.h"

#include <lauxlib.h>
#include <lualib.h>
#include <limits.h>
#include "sha256.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MODULE_MAX (4u << 20)

/* ---- the hook: deadlines and kills reach pure-Lua loops ---- */

static void count_hook(lua_State *L, lua_Debug *ar) { rbl__poll_limits(L); }

void rbl__sandbox_hook(lua_State *co) {
  rbl_engine *e = rbl__task_of(co)->e;
  lua_sethook(co, count_hook, LUA_MASKCOUNT, (int)e->limits.instructions_per_check);
}

static int strpat_poll(lua_State *L) {
  rbl__poll_limits(L);
  return 0;
}

/* A pcall'd kill is re-raised: nothing in the runbook can swallow it. */
static int must_rethrow(lua_State *L) {
  rbl_task *t = rbl__task_of(L);
  return t->e->killed || t->timed_out || (t->deadline && uv_hrtime() > t->deadline) ||
         (t->e->deadline_hit && !t->grace); /* stopped by the run deadline (rollback's grace) */
}

static int finish_pcall(lua_State *L, int status, lua_KContext extra) {
  if (status != LUA_OK && status != LUA_YIELD) {
    if (must_rethrow(L)) return lua_error(L);
    lua_pushboolean(L, 0);
    lua_pushvalue(L, -2);
    return 2;
  }
  return lua_gettop(L) - (int)extra;
}

static int sb_pcall(lua_State *L) {
  luaL_checkany(L, 1);
  lua_pushboolean(L, 1);
  lua_insert(L, 1);
  int status = lua_pcallk(L, lua_gettop(L) - 2, LUA_MULTRET, 0, 0, finish_pcall);
  return finish_pcall(L, status, 0);
}

/* The message handler runs where the error was raised: for a kill or a timeout that is inside
 * the count hook, where Lua has hooks disabled, so a looping handler could never be stopped
 * (xpcall(error, function() while true do end end) hung rbl). Kills skip the handler. */
static int xpcall_msgh(lua_State *L) {
  if (must_rethrow(L)) return 1;
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_insert(L, 1);
  lua_call(L, lua_gettop(L) - 1, 1);
  return 1;
}

static int sb_xpcall(lua_State *L) {
  int n = lua_gettop(L);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  lua_pushvalue(L, 2);
  lua_pushcclosure(L, xpcall_msgh, 1);
  lua_replace(L, 2);
  lua_pushboolean(L, 1);
  lua_pushvalue(L, 1);
  lua_rotate(L, 3, 2); /* f, handler, true, f, args... -> handler at 2 */
  int status = lua_pcallk(L, n - 2, LUA_MULTRET, 2, 2, finish_pcall);
  return finish_pcall(L, status, 2);
}

/* ---- coroutines: bound to the creating task, kills propagate ---- */

static int sb_co_create(lua_State *L) {
  luaL_checktype(L, 1, LUA_TFUNCTION);
  lua_State *co = lua_newthread(L);
  *(rbl_task **)lua_getextraspace(co) = rbl__task_of(L);
  /* Remember it as ours: only these may be resumed or closed from the sandbox. */
  lua_getfield(L, LUA_REGISTRYINDEX, "rbl.cothreads");
  lua_pushvalue(L, -2);
  lua_pushboolean(L, 1);
  lua_rawset(L, -3);
  lua_pop(L, 1);
  lua_pushvalue(L, 1);
  lua_xmove(L, co, 1);
  return 1;
}

/* A task's own thread (coroutine.running() in a task) is driven by the engine only: resuming
 * or closing it from the runbook would run its wait continuation early (the wait is freed while
 * its timer or request still points at it). A sandbox coroutine outlives the task that created
 * it, so it is rebound to the task that drives it now (its old task may have been freed). */
static int own_thread(lua_State *L, int idx) {
  lua_State *co = lua_tothread(L, idx);
  idx = lua_absindex(L, idx);
  lua_getfield(L, LUA_REGISTRYINDEX, "rbl.cothreads");
  lua_pushvalue(L, idx);
  int ours = lua_rawget(L, -2) != LUA_TNIL;
  lua_pop(L, 2);
  if (ours) *(rbl_task **)lua_getextraspace(co) = rbl__task_of(L);
  return ours;
}

static int resume_into(lua_State *L, int coidx, int narg) {
  int nres;
  lua_State *co = lua_tothread(L, coidx);
  if (!own_thread(L, coidx)) {
    lua_pushliteral(L, "cannot resume a coroutine not created by coroutine.create/wrap");
    return -1;
  }
  if (lua_status(co) == LUA_OK && lua_gettop(co) == 0) {
    lua_pushliteral(L, "cannot resume dead coroutine");
    return -1;
  }
  if (!lua_checkstack(co, narg)) {
    lua_pushliteral(L, "too many arguments to resume");
    return -1;
  }
  lua_xmove(L, co, narg);
  int st = lua_resume(co, L, narg, &nres);
  if (st == LUA_OK || st == LUA_YIELD) {
    if (!lua_checkstack(L, nres + 1)) {
      lua_pop(co, nres);
      lua_pushliteral(L, "too many results to resume");
      return -1;
    }
    lua_xmove(co, L, nres);
    return nres;
  }
  lua_xmove(co, L, 1);
  return -1;
}

static int sb_co_resume(lua_State *L) {
  lua_State *co = lua_tothread(L, 1);
  luaL_argexpected(L, co, 1, "coroutine");
  int r = resume_into(L, 1, lua_gettop(L) - 1);
  if (r < 0) {
    if (must_rethrow(L)) return lua_error(L);
    lua_pushboolean(L, 0);
    lua_insert(L, -2);
    return 2;
  }
  lua_pushboolean(L, 1);
  lua_insert(L, -(r + 1));
  return r + 1;
}

static int wrap_aux(lua_State *L) {
  int r = resume_into(L, lua_upvalueindex(1), lua_gettop(L));
  if (r < 0) return lua_error(L);
  return r;
}

/* Calls upvalue 1 with the arguments and returns what it returns. A (false, err) result that
 * carries a kill or timeout is raised again: coroutine.close runs the coroutine's pending
 * __close handlers and hands back what one raised, and (like pcall) it does not get to swallow
 * a kill; the polled library functions go through the same call. */
static int call_upvalue(lua_State *L) {
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_insert(L, 1);
  lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
  /* close runs the coroutine's pending __close handlers: a kill or timeout raised in one comes
   * back as (false, err). Like pcall, close does not get to swallow it. */
  if (lua_gettop(L) >= 2 && lua_isboolean(L, 1) && !lua_toboolean(L, 1) && must_rethrow(L)) {
    lua_settop(L, 2);
    return lua_error(L);
  }
  return lua_gettop(L);
}

static int sb_co_close(lua_State *L) {
  lua_State *co = lua_tothread(L, 1);
  luaL_argexpected(L, co, 1, "coroutine");
  if (!own_thread(L, 1))
    return luaL_error(L, "cannot close a coroutine not created by coroutine.create/wrap");
  return call_upvalue(L);
}

static int sb_co_wrap(lua_State *L) {
  sb_co_create(L);
  lua_pushcclosure(L, wrap_aux, 1);
  return 1;
}

/* ---- print: bounded, escaped, masked ---- */

static int sb_print(lua_State *L) {
  rbl_engine *e = rbl_engine_of(L);
  int n = lua_gettop(L);
  /* Convert first: luaL_tolstring pushes, and a luaL_Buffer needs a balanced stack between
   * its operations (interleaving them corrupted the output and freed the buffer's box). */
  for (int i = 1; i <= n; i++) {
    luaL_tolstring(L, i, NULL);
    lua_replace(L, i);
  }
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  for (int i = 1; i <= n; i++) {
    size_t len;
    const char *s = lua_tolstring(L, i, &len);
    size_t elen;
    char *esc = rbl_escape_ctl(s, len, RBL_ESC_KEEP_NL, &elen); /* C0, DEL and C1 */
    if (!esc) luaL_error(L, "out of memory");
    luaL_addlstring(&b, esc, elen);
    free(esc);
    if (i < n) luaL_addchar(&b, '\t');
  }
  luaL_addchar(&b, '\n');
  luaL_pushresult(&b);
  size_t len;
  const char *out = lua_tolstring(L, -1, &len);
  if (e->printed + len > e->limits.output) {
    rbl__kill(e, RBL_KILL_LIMIT, "output limit of %zu bytes exceeded", e->limits.output);
    rbl__poll_limits(L);
  }
  e->printed += len;
  if (e->silent) return 0;
  size_t mlen;
  char *m = rbl__mask(e, out, len, &mlen);
  if (fwrite(m ? m : out, 1, m ? mlen : len, stdout) == 0 && len) { /* stdout closed */
  }
  fflush(stdout);
  free(m);
  return 0;
}

/* ---- load and require: text only, into the sandbox ---- */

int rbl_sandbox_load(lua_State *L, const char *buf, size_t len, const char *chunkname,
                     int env_idx) {
  env_idx = lua_absindex(L, env_idx);
  if (len > 0 && buf[0] == LUA_SIGNATURE[0]) {
    lua_pushfstring(L, "%s: binary chunks are not allowed", chunkname);
    return LUA_ERRSYNTAX;
  }
  int st = luaL_loadbufferx(L, buf, len, chunkname, "t");
  if (st != LUA_OK) return st;
  lua_pushvalue(L, env_idx);
  if (!lua_setupvalue(L, -2, 1)) lua_pop(L, 1);
  return LUA_OK;
}

static int sb_load(lua_State *L) {
  size_t len;
  const char *s = lua_tolstring(L, 1, &len);
  if (!s) return luaL_argerror(L, 1, "only strings can be loaded in the sandbox");
  const char *name = luaL_optstring(L, 2, "=(load)");
  const char *mode = luaL_optstring(L, 3, "t");
  if (strchr(mode, 'b') && !strchr(mode, 't')) {
    luaL_pushfail(L);
    lua_pushliteral(L, "binary chunks are not allowed");
    return 2;
  }
  int env = lua_isnone(L, 4) ? lua_upvalueindex(1) : 4;
  if (rbl_sandbox_load(L, s, len, name, env) != LUA_OK) {
    luaL_pushfail(L);
    lua_insert(L, -2);
    return 2;
  }
  return 1;
}

static int read_module(lua_State *L, const char *dir, const char *name, char *path, size_t plen) {
  const char *p;
  for (p = name; *p; p++) {
    if (!(*p == '.' || *p == '_' || (*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'z') ||
          (*p >= 'A' && *p <= 'Z')))
      return luaL_error(L, "require: bad module name '%s'", name);
  }
  if (!*name || name[0] == '.' || strstr(name, "..") || p[-1] == '.')
    return luaL_error(L, "require: bad module name '%s'", name);
  char rel[PATH_MAX];
  snprintf(rel, sizeof rel, "%s", name);
  for (char *q = rel; *q; q++)
    if (*q == '.') *q = '/';
  char want[PATH_MAX], real[PATH_MAX], realdir[PATH_MAX];
  if (!dir)
    return luaL_error(L, "require: no directory to read modules from (rbl repl: give --dir DIR)");
  if (realpath(dir, realdir) && !strcmp(realdir, "/"))
    return luaL_error(L,
                      "require: the runbook directory is /, which would confine nothing: put the "
                      "runbook in a directory of its own");
  if (snprintf(want, sizeof want, "%s/%s.lua", dir, rel) >= (int)sizeof want)
    return luaL_error(L, "require: module name too long");
  if (!realpath(want, real) || !realpath(dir, realdir))
    return luaL_error(L, "require: module '%s' not found (looked for %s)", name, want);
  size_t dl = strlen(realdir);
  if (strncmp(real, realdir, dl) != 0 || real[dl] != '/')
    return luaL_error(L, "require: module '%s' resolves outside the runbook directory", name);
  snprintf(path, plen, "%s", real);
  FILE *f = fopen(real, "rb");
  if (!f) return luaL_error(L, "require: cannot open %s", real);
  luaL_Buffer b;
  char *buf = luaL_buffinitsize(L, &b, MODULE_MAX + 1);
  size_t n = fread(buf, 1, MODULE_MAX + 1, f);
  fclose(f);
  if (n > MODULE_MAX) return luaL_error(L, "require: %s is larger than 4 MiB", real);
  luaL_pushresultsize(&b, n);
  return 1;
}

static void audit_module(lua_State *L, const char *name, const char *path, const char *src,
                         size_t len) {
  unsigned char md[32];
  char hex[80] = "sha256:";
  rbl_sha256(src, len, md);
  for (unsigned i = 0; i < 32; i++)
    snprintf(hex + 7 + 2 * i, 3, "%02x", md[i]);
  cJSON *rec = cJSON_CreateObject();
  cJSON_AddStringToObject(rec, "kind", "module");
  cJSON_AddStringToObject(rec, "name", name);
  cJSON_AddStringToObject(rec, "path", path);
  cJSON_AddStringToObject(rec, "sha256", hex);
  rbl__audit(rbl_engine_of(L), rec);
}

static int require_k(lua_State *L, int status, lua_KContext ctx) {
  /* stack: name, loaded, result */
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    lua_pushboolean(L, 1);
  }
  lua_pushvalue(L, -1);
  lua_setfield(L, 2, lua_tostring(L, 1));
  return 1;
}

/* upvalue 1: the sandbox env; 2: the loaded table. */
static int sb_require(lua_State *L) {
  const char *name = luaL_checkstring(L, 1);
  lua_settop(L, 1);
  lua_pushvalue(L, lua_upvalueindex(2));
  if (lua_getfield(L, 2, name) != LUA_TNIL) return 1;
  lua_pop(L, 1);
  char path[PATH_MAX];
  rbl_engine *e = rbl_engine_of(L);
  read_module(L, rbl_engine_runbook_dir(e), name, path, sizeof path);
  size_t len;
  const char *src = lua_tolstring(L, -1, &len);
  audit_module(L, name, path, src, len);
  char chunk[PATH_MAX + 2];
  snprintf(chunk, sizeof chunk, "@%s", path);
  if (rbl_sandbox_load(L, src, len, chunk, lua_upvalueindex(1)) != LUA_OK) return lua_error(L);
  lua_remove(L, -2);
  lua_pushstring(L, name);
  lua_callk(L, 1, 1, 0, require_k);
  return require_k(L, LUA_OK, 0);
}

/* ---- guards on raw access and metatables ---- */

static int is_protected(lua_State *L, int idx) {
  lua_getfield(L, LUA_REGISTRYINDEX, "rbl.protected");
  lua_pushvalue(L, idx);
  int p = lua_rawget(L, -2) != LUA_TNIL;
  lua_pop(L, 2);
  return p;
}

static int sb_rawset(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  if (is_protected(L, 1)) return luaL_error(L, "attempt to modify a read-only table");
  luaL_checkany(L, 2);
  luaL_checkany(L, 3);
  lua_settop(L, 3);
  lua_rawset(L, 1);
  return 1;
}

static int sb_setmetatable(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  if (is_protected(L, 1)) return luaL_error(L, "cannot change a protected metatable");
  luaL_argexpected(L, lua_isnoneornil(L, 2) || lua_istable(L, 2), 2, "nil or table");
  if (luaL_getmetafield(L, 1, "__metatable") != LUA_TNIL)
    return luaL_error(L, "cannot change a protected metatable");
  /* A finalizer runs whenever the collector gets to it: in host code, after the run's end or
   * in lua_close, on a thread with no hook (an endless __gc hung rbl). Any non-nil __gc marks
   * the object, so the field is checked raw, whatever its type. */
  if (lua_istable(L, 2)) {
    lua_pushliteral(L, "__gc");
    int gc = lua_rawget(L, 2) != LUA_TNIL;
    lua_pop(L, 1);
    if (gc) return luaL_error(L, "finalizers (__gc) are not allowed in runbooks");
  }
  lua_settop(L, 2);
  if (lua_istable(L, 2)) { /* a metatable the runbook set: getmetatable may give it back */
    lua_getfield(L, LUA_REGISTRYINDEX, "rbl.usermt");
    lua_pushvalue(L, 2);
    lua_pushboolean(L, 1);
    lua_rawset(L, -3);
    lua_pop(L, 1);
  }
  lua_setmetatable(L, 1);
  return 1;
}

/* getmetatable: __metatable if set, the metatable itself only when the runbook set it. Host
 * metatables (rbl.error, the json array/object markers, drift lists...) are shared with host
 * code: handing them out let a runbook add __index/__tostring/__gc that host code then ran. */
static int sb_getmetatable(lua_State *L) {
  luaL_checkany(L, 1);
  if (!lua_getmetatable(L, 1)) {
    lua_pushnil(L);
    return 1;
  }
  if (luaL_getmetafield(L, 1, "__metatable") != LUA_TNIL) return 1;
  lua_getfield(L, LUA_REGISTRYINDEX, "rbl.usermt");
  lua_pushvalue(L, -2);
  int mine = lua_rawget(L, -2) != LUA_TNIL;
  lua_pop(L, 2);
  if (!mine) lua_pushliteral(L, "protected");
  return 1;
}

static int sb_collectgarbage(lua_State *L) {
  const char *opt = luaL_optstring(L, 1, "collect");
  if (!strcmp(opt, "count")) {
    lua_pushnumber(L, (double)lua_gc(L, LUA_GCCOUNT, 0) + lua_gc(L, LUA_GCCOUNTB, 0) / 1024.0);
    return 1;
  }
  if (!strcmp(opt, "collect") || !strcmp(opt, "step")) {
    lua_gc(L, LUA_GCCOLLECT, 0);
    lua_pushinteger(L, 0);
    return 1;
  }
  return luaL_argerror(L, 1, "only \"count\", \"collect\" and \"step\" are allowed");
}

/* ---- library loops that never reach the hook ----
 * A C loop runs no Lua instruction, so neither the count hook nor the run timer stops it.
 * string.rep("", math.maxinteger) and table.insert/remove/move over a huge __len or range
 * iterated ~2^63 times on nothing: these versions poll the limits as they go. */

static int sb_str_rep(lua_State *L) {
  size_t l, lsep;
  luaL_checklstring(L, 1, &l);
  lua_Integer n = luaL_checkinteger(L, 2);
  luaL_optlstring(L, 3, "", &lsep);
  if (n > 0 && l == 0 && lsep == 0) { /* n empty copies: the only case not bounded by memory */
    lua_pushliteral(L, "");
    return 1;
  }
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_insert(L, 1);
  lua_call(L, lua_gettop(L) - 1, 1);
  return 1;
}

#define POLL_EVERY(i)                                                                              \
  do {                                                                                             \
    if (((i)&1023) == 0) rbl__poll_limits(L);                                                      \
  } while (0)

static int sb_tinsert(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_Integer e = luaL_len(L, 1);
  e = (lua_Integer)((lua_Unsigned)e + 1u); /* first empty element */
  lua_Integer pos;
  switch (lua_gettop(L)) {
  case 2: pos = e; break;
  case 3:
    pos = luaL_checkinteger(L, 2);
    luaL_argcheck(L, (lua_Unsigned)pos - 1u < (lua_Unsigned)e, 2, "position out of bounds");
    for (lua_Integer i = e; i > pos; i--) {
      POLL_EVERY(i);
      lua_geti(L, 1, i - 1);
      lua_seti(L, 1, i);
    }
    break;
  default: return luaL_error(L, "wrong number of arguments to 'insert'");
  }
  lua_seti(L, 1, pos);
  return 0;
}

static int sb_tremove(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_Integer size = luaL_len(L, 1);
  lua_Integer pos = luaL_optinteger(L, 2, size);
  if (pos != size)
    luaL_argcheck(L, (lua_Unsigned)pos - 1u <= (lua_Unsigned)size, 2, "position out of bounds");
  lua_geti(L, 1, pos);
  for (; pos < size; pos++) {
    POLL_EVERY(pos);
    lua_geti(L, 1, pos + 1);
    lua_seti(L, 1, pos);
  }
  lua_pushnil(L);
  lua_seti(L, 1, pos);
  return 1;
}

static int sb_tmove(lua_State *L) {
  lua_Integer f = luaL_checkinteger(L, 2);
  lua_Integer e = luaL_checkinteger(L, 3);
  lua_Integer t = luaL_checkinteger(L, 4);
  int tt = !lua_isnoneornil(L, 5) ? 5 : 1;
  luaL_checktype(L, 1, LUA_TTABLE);
  luaL_checktype(L, tt, LUA_TTABLE);
  if (e >= f) {
    luaL_argcheck(L, f > 0 || e < LUA_MAXINTEGER + f, 3, "too many elements to move");
    lua_Integer n = e - f + 1;
    luaL_argcheck(L, t <= LUA_MAXINTEGER - n + 1, 4, "destination wrap around");
    if (t > e || t > f || (tt != 1 && !lua_compare(L, 1, tt, LUA_OPEQ))) {
      for (lua_Integer i = 0; i < n; i++) {
        POLL_EVERY(i);
        lua_geti(L, 1, f + i);
        lua_seti(L, tt, t + i);
      }
    } else {
      for (lua_Integer i = n - 1; i >= 0; i--) {
        POLL_EVERY(i);
        lua_geti(L, 1, f + i);
        lua_seti(L, tt, t + i);
      }
    }
  }
  lua_pushvalue(L, tt);
  return 1;
}

/* A C function that does work in proportion to its input (string.upper of 200 MiB) runs no
 * Lua instruction, and a loop of a few hundred such calls stays under one count-hook period:
 * these poll the limits on every call. upvalue 1: the library's function. */
static int sb_polled(lua_State *L) {
  rbl__poll_limits(L);
  return call_upvalue(L);
}

/* table.sort compares in C: O(n log n) steps without a hook. The comparator (the runbook's,
 * or <) is called through this one, which polls every 1024 comparisons. upvalues: the
 * runbook's comparator or nil, the comparison counter. */
static int sort_lt(lua_State *L) {
  lua_Integer n = lua_tointeger(L, lua_upvalueindex(2)) + 1;
  lua_pushinteger(L, n);
  lua_replace(L, lua_upvalueindex(2));
  if ((n & 1023) == 0) rbl__poll_limits(L);
  if (lua_isnil(L, lua_upvalueindex(1))) {
    lua_pushboolean(L, lua_compare(L, 1, 2, LUA_OPLT));
    return 1;
  }
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_insert(L, 1);
  lua_call(L, 2, 1);
  return 1;
}

/* upvalue 1: the library's table.sort. */
static int sb_tsort(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  if (!lua_isnoneornil(L, 2)) luaL_checktype(L, 2, LUA_TFUNCTION);
  lua_settop(L, 2);
  rbl__poll_limits(L);
  lua_pushinteger(L, 0);
  lua_pushcclosure(L, sort_lt, 2); /* the comparator (or nil) and the counter */
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_insert(L, 1);
  lua_call(L, 2, 0);
  return 0;
}

/* Replaces each named function of the table on top with a polling wrapper. */
static void wrap_polled(lua_State *L, const char *const *names) {
  for (const char *const *n = names; *n; n++) {
    lua_getfield(L, -1, *n);
    lua_pushcclosure(L, sb_polled, 1);
    lua_setfield(L, -2, *n);
  }
}

/* ---- read-only proxies ---- */

static int ro_newindex(lua_State *L) {
  if (lua_type(L, 2) == LUA_TSTRING)
    return luaL_error(L, "attempt to modify read-only field '%s'", lua_tostring(L, 2));
  return luaL_error(L, "attempt to modify a read-only table");
}

/* upvalue 1: the backing table. */
static int ro_next(lua_State *L) {
  lua_settop(L, 2);
  if (lua_next(L, lua_upvalueindex(1))) return 2;
  lua_pushnil(L);
  return 1;
}

/* The backing table stays hidden: returning it as the iteration state (next, backing, nil)
 * let `local _, raw = pairs(string)` rewrite the string methods host code uses. */
static int ro_pairs(lua_State *L) {
  lua_getmetatable(L, 1);
  lua_getfield(L, -1, "__index");
  lua_pushcclosure(L, ro_next, 1);
  lua_pushvalue(L, 1);
  lua_pushnil(L);
  return 3;
}

static int ro_len(lua_State *L) {
  lua_getmetatable(L, 1);
  lua_getfield(L, -1, "__index");
  lua_pushinteger(L, (lua_Integer)lua_rawlen(L, -1));
  return 1;
}

void rbl__protect(lua_State *L, int idx) {
  idx = lua_absindex(L, idx);
  lua_getfield(L, LUA_REGISTRYINDEX, "rbl.protected");
  lua_pushvalue(L, idx);
  lua_pushboolean(L, 1);
  lua_rawset(L, -3);
  lua_pop(L, 1);
}

static int has_metatable(lua_State *L, int idx) {
  if (!lua_getmetatable(L, idx)) return 0;
  lua_pop(L, 1);
  return 1;
}

/* Replaces the table on top with a read-only proxy of it (recursively for sub-tables). */
static void make_readonly(lua_State *L, int depth) {
  int t = lua_gettop(L);
  luaL_checkstack(L, 8, "read-only proxy");
  if (depth < 8) {
    lua_pushnil(L);
    while (lua_next(L, t)) {
      if (lua_type(L, -1) == LUA_TTABLE && !has_metatable(L, -1)) {
        make_readonly(L, depth + 1);
        lua_pushvalue(L, -2);
        lua_insert(L, -2);
        lua_rawset(L, t);
      } else {
        lua_pop(L, 1);
      }
    }
  }
  lua_newtable(L); /* the proxy */
  lua_createtable(L, 0, 5);
  lua_pushvalue(L, t);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, ro_newindex);
  lua_setfield(L, -2, "__newindex");
  lua_pushcfunction(L, ro_pairs);
  lua_setfield(L, -2, "__pairs");
  lua_pushcfunction(L, ro_len);
  lua_setfield(L, -2, "__len");
  lua_pushliteral(L, "read-only");
  lua_setfield(L, -2, "__metatable");
  lua_setmetatable(L, -2);
  rbl__protect(L, -1);
  lua_replace(L, t);
}

/* ---- building the environment ---- */

static const char *const base_globals[] = {
    "_G",           "_VERSION", "assert", "collectgarbage", "coroutine", "error",
    "getmetatable", "ipairs",   "load",   "math",           "next",      "os",
    "pairs",        "pcall",    "print",  "rawequal",       "rawget",    "rawlen",
    "rawset",       "require",  "select", "setmetatable",   "string",    "table",
    "tonumber",     "tostring", "type",   "utf8",           "xpcall",    NULL};

static void copy_fields(lua_State *L, const char *lib, const char *const *names) {
  lua_newtable(L);
  lua_getglobal(L, lib);
  for (; *names; names++) {
    lua_getfield(L, -1, *names);
    lua_setfield(L, -3, *names);
  }
  lua_pop(L, 1);
}

static void set_copy(lua_State *L, int G, const char *name) {
  lua_getglobal(L, name);
  lua_setfield(L, G, name);
}

static const char *const string_names[] = {"byte",   "char",     "format", "len",     "lower",
                                           "pack",   "packsize", "rep",    "reverse", "sub",
                                           "unpack", "upper",    NULL};
static const char *const table_names[] = {"concat", "insert", "move",   "pack",
                                          "remove", "sort",   "unpack", NULL};
static const char *const math_names[] = {
    "abs",       "ceil", "cos",    "deg",        "exp",  "floor",      "fmod",
    "huge",      "log",  "max",    "maxinteger", "min",  "mininteger", "modf",
    "pi",        "rad",  "random", "randomseed", "sin",  "sqrt",       "tan",
    "tointeger", "type", "ult",    "acos",       "asin", "atan",       NULL};
static const char *const utf8_names[] = {"char", "charpattern", "codepoint", "codes",
                                         "len",  "offset",      NULL};
static const char *const os_names[] = {"clock", "date", "difftime", "time", NULL};
static const char *const co_names[] = {"close", "isyieldable", "running", "status", "yield", NULL};

/* The string functions that are rbl's budgeted patterns (strpat.c), not Lua's. */
static const char *const string_pat_names[] = {"find", "match", "gmatch", "gsub", NULL};
/* The coroutine functions the sandbox wraps (the kill and task rules). */
static const luaL_Reg co_wrapped[] = {
    {"create", sb_co_create}, {"wrap", sb_co_wrap}, {"resume", sb_co_resume}, {NULL, NULL}};

static void each_member(const char *lib, const char *const *names, const luaL_Reg *funcs,
                        void (*fn)(const char *name, void *ud), void *ud) {
  char buf[64];
  for (; names && *names; names++) {
    snprintf(buf, sizeof buf, "%s.%s", lib, *names);
    fn(buf, ud);
  }
  for (; funcs && funcs->name; funcs++) {
    snprintf(buf, sizeof buf, "%s.%s", lib, funcs->name);
    fn(buf, ud);
  }
}

void rbl_sandbox_each_name(void (*fn)(const char *name, void *ud), void *ud) {
  for (const char *const *n = base_globals; *n; n++)
    fn(*n, ud);
  each_member("string", string_names, NULL, fn, ud);
  each_member("string", string_pat_names, NULL, fn, ud);
  each_member("table", table_names, NULL, fn, ud);
  each_member("math", math_names, NULL, fn, ud);
  each_member("utf8", utf8_names, NULL, fn, ud);
  each_member("os", os_names, NULL, fn, ud);
  each_member("coroutine", co_names, co_wrapped, fn, ud);
}

/* Families loaded on first touch (entry.lua): `lazy` maps each name of a family not loaded yet
 * to a host function that loads the family and returns its globals, which go into G like the
 * eager ones (tables as read-only proxies). */
static void lazy_load(lua_State *L, int G, int lazy, int key) {
  luaL_checkstack(L, 8, "lazy global");
  lua_pushvalue(L, key);
  if (lua_rawget(L, lazy) != LUA_TFUNCTION) {
    lua_pop(L, 1);
    return;
  }
  lua_pushvalue(L, key);
  lua_call(L, 1, 1);
  int t = lua_gettop(L);
  if (lua_istable(L, t)) {
    lua_pushnil(L);
    while (lua_next(L, t)) {
      if (lua_type(L, -1) == LUA_TTABLE && !has_metatable(L, -1)) make_readonly(L, 0);
      lua_pushvalue(L, -2);
      lua_insert(L, -2);
      lua_rawset(L, G);
    }
  }
  lua_pop(L, 1);
}

/* Loads every family still pending (pairs(_G) lists what a runbook can reach: all of it). */
static void lazy_load_all(lua_State *L, int G, int lazy) {
  if (!lua_istable(L, lazy)) return;
  for (;;) {
    lua_pushnil(L);
    if (!lua_next(L, lazy)) return;
    lua_pop(L, 1); /* the loader; the key stays */
    int top = lua_gettop(L);
    lazy_load(L, G, lazy, top);
    lua_pushvalue(L, top); /* a loader that did not clear its names must not loop forever */
    lua_pushnil(L);
    lua_rawset(L, lazy);
    lua_settop(L, top - 1);
  }
}

/* upvalue 1: G (read-only names), 2: U (the runbook's own globals), 3: lazy (or nil). */
static int env_newindex(lua_State *L) {
  if (lua_type(L, 2) == LUA_TSTRING && !strcmp(lua_tostring(L, 2), "tenant"))
    return luaL_error(L, "attempt to assign to read-only global 'tenant'");
  if (lua_istable(L, lua_upvalueindex(3))) {
    lua_pushvalue(L, 2);
    if (lua_rawget(L, lua_upvalueindex(3)) != LUA_TNIL)
      return luaL_error(L, "attempt to assign to read-only global '%s'",
                        luaL_tolstring(L, 2, NULL));
    lua_pop(L, 1);
  }
  lua_pushvalue(L, 2);
  if (lua_rawget(L, lua_upvalueindex(1)) != LUA_TNIL) {
    return luaL_error(L, "attempt to assign to read-only global '%s'", luaL_tolstring(L, 2, NULL));
  }
  lua_pop(L, 1);
  lua_settop(L, 3);
  lua_rawset(L, lua_upvalueindex(2));
  return 0;
}

/* G's __index; upvalue 1: lazy (or nil). */
static int g_index(lua_State *L) {
  if (lua_type(L, 2) == LUA_TSTRING && !strcmp(lua_tostring(L, 2), "tenant")) {
    const char *t = rbl_task_tenant(L);
    if (t)
      lua_pushstring(L, t);
    else
      lua_pushnil(L);
    return 1;
  }
  if (!lua_istable(L, lua_upvalueindex(1)) || lua_type(L, 2) != LUA_TSTRING) return 0;
  lua_settop(L, 2);
  lua_pushvalue(L, lua_upvalueindex(1));
  lazy_load(L, 1, 3, 2);
  lua_settop(L, 2);
  lua_rawget(L, 1);
  return 1;
}

/* pairs(_G): the read-only globals (G, upvalue 1) and the runbook's own (U, upvalue 2), as one
 * snapshot, so what a runbook can reach is also what it can list. */
static int env_pairs(lua_State *L) {
  lazy_load_all(L, lua_upvalueindex(1), lua_upvalueindex(3));
  lua_newtable(L);
  for (int up = 1; up <= 2; up++) {
    lua_pushnil(L);
    while (lua_next(L, lua_upvalueindex(up))) {
      lua_pushvalue(L, -2);
      lua_insert(L, -2);
      lua_rawset(L, -4);
    }
  }
  const char *t = rbl_task_tenant(L);
  if (t) {
    lua_pushstring(L, t);
    lua_setfield(L, -2, "tenant");
  }
  lua_getglobal(L, "next");
  lua_insert(L, -2);
  lua_pushnil(L);
  return 3;
}

static void push_lib(lua_State *L, int G, const char *name, const char *const *names) {
  copy_fields(L, name, names);
  make_readonly(L, 0);
  lua_setfield(L, G, name);
}

static void push_coroutine_lib(lua_State *L, int G) {
  copy_fields(L, "coroutine", co_names);
  luaL_setfuncs(L, co_wrapped, 0);
  lua_getfield(L, -1, "close");
  lua_pushcclosure(L, sb_co_close, 1);
  lua_setfield(L, -2, "close");
  make_readonly(L, 0);
  lua_setfield(L, G, "coroutine");
}

void rbl_sandbox_push_env(lua_State *L) {
  lua_pushnil(L);
  rbl_sandbox_push_env_lazy(L);
}

void rbl_sandbox_push_env_lazy(lua_State *L) {
  int lazy = lua_gettop(L);
  int extras = lazy - 1;
  lua_newtable(L);
  int G = lua_gettop(L);
  static const char *const base[] = {"assert", "error",    "ipairs",   "next", "pairs",
                                     "select", "tonumber", "tostring", "type", "rawequal",
                                     "rawlen", "rawget",   "_VERSION", NULL};
  for (const char *const *n = base; *n; n++)
    set_copy(L, G, *n);
  static const luaL_Reg wrapped[] = {{"pcall", sb_pcall},
                                     {"xpcall", sb_xpcall},
                                     {"print", sb_print},
                                     {"rawset", sb_rawset},
                                     {"setmetatable", sb_setmetatable},
                                     {"getmetatable", sb_getmetatable},
                                     {"collectgarbage", sb_collectgarbage},
                                     {NULL, NULL}};
  for (const luaL_Reg *r = wrapped; r->name; r++) {
    lua_pushcfunction(L, r->func);
    lua_setfield(L, G, r->name);
  }
  lua_getfield(L, LUA_REGISTRYINDEX, "rbl.stringlib");
  lua_setfield(L, G, "string"); /* already a protected proxy */
  copy_fields(L, "table", table_names);
  static const luaL_Reg tpolled[] = {
      {"insert", sb_tinsert}, {"remove", sb_tremove}, {"move", sb_tmove}, {NULL, NULL}};
  for (const luaL_Reg *r = tpolled; r->name; r++) {
    lua_pushcfunction(L, r->func);
    lua_setfield(L, -2, r->name);
  }
  static const char *const tlinear[] = {"concat", "unpack", NULL};
  wrap_polled(L, tlinear);
  lua_getfield(L, -1, "sort");
  lua_pushcclosure(L, sb_tsort, 1);
  lua_setfield(L, -2, "sort");
  make_readonly(L, 0);
  lua_setfield(L, G, "table");
  push_lib(L, G, "math", math_names);
  copy_fields(L, "utf8", utf8_names);
  static const char *const ulinear[] = {"char", "codepoint", "len", "offset", NULL};
  wrap_polled(L, ulinear);
  make_readonly(L, 0);
  lua_setfield(L, G, "utf8");
  push_lib(L, G, "os", os_names);
  push_coroutine_lib(L, G);
  if (lua_istable(L, extras)) {
    lua_pushnil(L);
    while (lua_next(L, extras)) {
      if (lua_type(L, -1) == LUA_TTABLE && !has_metatable(L, -1)) make_readonly(L, 0);
      lua_pushvalue(L, -2);
      lua_insert(L, -2);
      lua_rawset(L, G);
    }
  }
  /* E (what _ENV is) stays empty: reads fall to U then G, writes go to U. */
  lua_newtable(L); /* U */
  int U = lua_gettop(L);
  lua_createtable(L, 0, 1);
  lua_pushvalue(L, G);
  lua_setfield(L, -2, "__index");
  lua_setmetatable(L, U);
  lua_newtable(L); /* E */
  int E = lua_gettop(L);
  lua_createtable(L, 0, 4);
  lua_pushvalue(L, U);
  lua_setfield(L, -2, "__index");
  lua_pushvalue(L, G);
  lua_pushvalue(L, U);
  lua_pushvalue(L, lazy);
  lua_pushcclosure(L, env_newindex, 3);
  lua_setfield(L, -2, "__newindex");
  lua_pushvalue(L, G);
  lua_pushvalue(L, U);
  lua_pushvalue(L, lazy);
  lua_pushcclosure(L, env_pairs, 3);
  lua_setfield(L, -2, "__pairs");
  lua_pushliteral(L, "sandbox");
  lua_setfield(L, -2, "__metatable");
  lua_setmetatable(L, E);
  lua_pushvalue(L, E);
  lua_setfield(L, G, "_G");
  lua_pushvalue(L, E);
  lua_pushcclosure(L, sb_load, 1);
  lua_setfield(L, G, "load");
  lua_pushvalue(L, E);
  lua_newtable(L);
  lua_pushcclosure(L, sb_require, 2);
  lua_setfield(L, G, "require");
  /* `tenant` is the calling task's binding, so it is computed, not stored. */
  lua_createtable(L, 0, 2);
  lua_pushvalue(L, lazy);
  lua_pushcclosure(L, g_index, 1);
  lua_setfield(L, -2, "__index");
  lua_pushliteral(L, "sandbox");
  lua_setfield(L, -2, "__metatable");
  lua_setmetatable(L, G);
  rbl__protect(L, G);
  rbl__protect(L, E);
  lua_replace(L, extras);
  lua_settop(L, extras);
}

void rbl_sandbox_init(lua_State *L) {
  lua_newtable(L);
  lua_newtable(L);
  lua_pushliteral(L, "k");
  lua_setfield(L, -2, "__mode");
  lua_setmetatable(L, -2);
  lua_setfield(L, LUA_REGISTRYINDEX, "rbl.protected");
  lua_newtable(L); /* the coroutines the sandbox created (weak keys) */
  lua_newtable(L);
  lua_pushliteral(L, "k");
  lua_setfield(L, -2, "__mode");
  lua_setmetatable(L, -2);
  lua_setfield(L, LUA_REGISTRYINDEX, "rbl.cothreads");
  lua_newtable(L); /* metatables the runbook set (weak keys) */
  lua_newtable(L);
  lua_pushliteral(L, "k");
  lua_setfield(L, -2, "__mode");
  lua_setmetatable(L, -2);
  lua_setfield(L, LUA_REGISTRYINDEX, "rbl.usermt");
  /* One string table for the sandbox and for string methods: budgeted patterns, no dump. */
  copy_fields(L, "string", string_names);
  luaL_requiref(L, "rbl.strpat", luaopen_rbl_strpat, 0);
  for (const char *const *n = string_pat_names; *n; n++) {
    lua_getfield(L, -1, *n);
    lua_setfield(L, -3, *n);
  }
  lua_pop(L, 1);
  lua_getfield(L, -1, "rep");
  lua_pushcclosure(L, sb_str_rep, 1);
  lua_setfield(L, -2, "rep");
  static const char *const slinear[] = {"rep", "upper", "lower", "reverse", "format", "byte",
                                        "sub", "char",  "pack",  "unpack",  NULL};
  wrap_polled(L, slinear);
  rbl_strpat_set_poll(strpat_poll);
  lua_pushvalue(L, -1);
  make_readonly(L, 0);
  lua_setfield(L, LUA_REGISTRYINDEX, "rbl.stringlib");
  /* stack: methods. The shared string metatable indexes them and is locked. */
  lua_createtable(L, 0, 2);
  lua_pushvalue(L, -2);
  lua_setfield(L, -2, "__index");
  lua_pushliteral(L, "locked");
  lua_setfield(L, -2, "__metatable");
  lua_pushliteral(L, "");
  lua_pushvalue(L, -2);
  lua_setmetatable(L, -2);
  lua_pop(L, 3);
}
