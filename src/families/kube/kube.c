/* rbl.kube.c: YAML, file, base64 and time helpers for kubeconfig loading, and the exec
 * credential plugin runner (uv_spawn, yields; not an audited exec: it only fetches a token). */
#include "kube.h"
#include "budget.h"
#include "gate.h"
#include "proc.h"
#include "engine_int.h"
#include "json.h"
#include "yaml.h"
#include "ossl_dl.h"

#include <errno.h>
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#define KUBEC_FILE_MAX (8u << 20)
#define KUBEC_OUT_MAX  (1u << 20)

extern char **environ;

/* kubec.parse_yaml(text) -> array of documents | nil, "line L, column C: why" */
static int kubec_parse_yaml(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  char err[256];
  rbl_budget_parse_begin();
  cJSON *docs = rbl_yaml_parse(s, len, err, sizeof err);
  rbl_budget_parse_end();
  if (!docs) {
    rbl__poll_limits(L); /* out of the memory budget: raises */
    luaL_pushfail(L);
    lua_pushstring(L, err);
    return 2;
  }
  return rbl_json_push_free(L, docs);
}

/* kubec.read_file(path) -> contents, mtime_ns | nil, message */
static int kubec_read_file(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  FILE *f = fopen(path, "rb");
  struct stat st;
  if (!f || fstat(fileno(f), &st) != 0) {
    int e = errno;
    if (f) fclose(f);
    luaL_pushfail(L);
    lua_pushfstring(L, "%s: %s", path, strerror(e));
    return 2;
  }
  if (!S_ISREG(st.st_mode) || (size_t)st.st_size > KUBEC_FILE_MAX) {
    fclose(f);
    luaL_pushfail(L);
    lua_pushfstring(L, "%s: %s", path,
                    S_ISREG(st.st_mode) ? "file too large" : "not a regular file");
    return 2;
  }
  luaL_Buffer b;
  char *p = luaL_buffinitsize(L, &b, (size_t)st.st_size + 1);
  size_t n = fread(p, 1, (size_t)st.st_size + 1, f);
  int bad = ferror(f);
  fclose(f);
  if (bad) {
    luaL_pushfail(L);
    lua_pushfstring(L, "%s: read error", path);
    return 2;
  }
  luaL_pushresultsize(&b, n);
  lua_pushinteger(L, (lua_Integer)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec);
  return 2;
}

/* kubec.stat(path) -> mtime_ns, size | nil, message: cheap check whether a token file rotated */
static int kubec_stat(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  struct stat st;
  if (stat(path, &st) != 0) {
    luaL_pushfail(L);
    lua_pushfstring(L, "%s: %s", path, strerror(errno));
    return 2;
  }
  lua_pushinteger(L, (lua_Integer)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec);
  lua_pushinteger(L, (lua_Integer)st.st_size);
  return 2;
}

/* kubec.b64decode(s) -> bytes | nil, message (whitespace ignored, padding required) */
static int kubec_b64decode(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  luaL_Buffer clean;
  luaL_buffinit(L, &clean);
  for (size_t i = 0; i < len; i++)
    if (s[i] != ' ' && s[i] != '\n' && s[i] != '\r' && s[i] != '\t') luaL_addchar(&clean, s[i]);
  luaL_pushresult(&clean);
  size_t n;
  const char *c = lua_tolstring(L, -1, &n);
  if (n % 4 != 0) {
    luaL_pushfail(L);
    lua_pushliteral(L, "invalid base64 (length not a multiple of 4)");
    return 2;
  }
  char why[320];
  if (n && rbl_ossl_load(why, sizeof why) != 0) return luaL_error(L, "base64: %s", why);
  unsigned char *out = malloc(n / 4 * 3 + 1);
  if (!out) return luaL_error(L, "not enough memory");
  int got = n ? EVP_DecodeBlock(out, (const unsigned char *)c, (int)n) : 0;
  if (got < 0) {
    free(out);
    luaL_pushfail(L);
    lua_pushliteral(L, "invalid base64");
    return 2;
  }
  if (n >= 1 && c[n - 1] == '=') got--; /* EVP_DecodeBlock counts padding as zero bytes */
  if (n >= 2 && c[n - 2] == '=') got--;
  lua_pushlstring(L, (const char *)out, (size_t)got);
  free(out);
  return 1;
}

/* kubec.parse_time("2026-01-17T03:42:15Z" or with an offset / fraction) -> epoch seconds | nil */
static int kubec_parse_time(lua_State *L) {
  const char *s = luaL_checkstring(L, 1);
  struct tm tm;
  memset(&tm, 0, sizeof tm);
  const char *p = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
  if (!p) {
    luaL_pushfail(L);
    return 1;
  }
  if (*p == '.') {
    p++;
    while (*p >= '0' && *p <= '9')
      p++;
  }
  long off = 0;
  if (*p == '+' || *p == '-') {
    int hh = 0, mm = 0;
    if (sscanf(p + 1, "%2d:%2d", &hh, &mm) != 2) {
      luaL_pushfail(L);
      return 1;
    }
    off = (hh * 3600L + mm * 60L) * (*p == '-' ? -1 : 1);
  } else if (*p != 'Z' && *p != 'z') {
    luaL_pushfail(L);
    return 1;
  }
  lua_pushinteger(L, (lua_Integer)timegm(&tm) - off);
  return 1;
}

/* ---- the credential plugin runner ---- */

/* Builds argv (from the array at idx) or env (this process's environment overlaid with the
 * map at idx) as a NULL-terminated vector of strings kept alive in a table at the stack top. */
static const char **ks_vector(lua_State *L, int idx, int is_env) {
  lua_newtable(L);
  int keep = lua_gettop(L);
  lua_Integer n = 0;
  if (is_env) {
    for (char **e = environ; *e; e++) {
      const char *eq = strchr(*e, '=');
      if (!eq) continue;
      lua_pushlstring(L, *e, (size_t)(eq - *e));
      lua_pushstring(L, eq + 1);
      lua_rawset(L, keep);
    }
    if (lua_istable(L, idx)) {
      lua_pushnil(L);
      while (lua_next(L, idx)) {
        if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TSTRING ||
            strchr(lua_tostring(L, -2), '='))
          luaL_error(L, "kubec.spawn: env must map names to strings");
        lua_pushvalue(L, -2);
        lua_insert(L, -2);
        lua_rawset(L, keep);
      }
    }
    lua_newtable(L); /* keep, list */
    lua_pushnil(L);
    while (lua_next(L, keep)) {
      lua_pushfstring(L, "%s=%s", lua_tostring(L, -2), lua_tostring(L, -1));
      lua_rawseti(L, keep + 1, ++n);
      lua_pop(L, 1);
    }
    lua_replace(L, keep);
  } else {
    lua_Integer len = (lua_Integer)lua_rawlen(L, idx);
    for (lua_Integer i = 1; i <= len; i++) {
      if (lua_rawgeti(L, idx, i) != LUA_TSTRING)
        luaL_error(L, "kubec.spawn: argv must hold strings");
      lua_rawseti(L, keep, ++n);
    }
  }
  const char **v = lua_newuserdatauv(L, (size_t)(n + 1) * sizeof(char *), 0);
  for (lua_Integer i = 1; i <= n; i++) {
    lua_rawgeti(L, keep, i);
    v[i - 1] = lua_tostring(L, -1); /* anchored by the table */
    lua_pop(L, 1);
  }
  v[n] = NULL;
  lua_rawseti(L, keep, n + 1); /* anchor the vector too */
  return v;
}

/* kubec.spawn(path, argv, env, {timeout = s}) -> {exit_code, stdout, stderr}; yields.
 * The plugin inherits this process's environment plus env; stdin is at EOF. */
static int kubec_spawn(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  double timeout = 60;
  if (lua_istable(L, 4)) {
    lua_getfield(L, 4, "timeout");
    timeout = luaL_optnumber(L, -1, 60);
    lua_pop(L, 1);
  }
  lua_settop(L, 3);
  const char **argv = ks_vector(L, 2, 0);
  const char **env = ks_vector(L, 3, 1);
  rbl_proc_spec spec = {.what = "credential plugin",
                        .prim = "kube",
                        .gate_class = RBL_GATE_KUBE_PLUGIN,
                        .path = path,
                        .argv = (char *const *)argv,
                        .env = (char *const *)env,
                        .timeout = timeout,
                        .output_cap = KUBEC_OUT_MAX};
  return rbl_proc_spawn(L, &spec);
}

/* kubec.bind_plugin(path): binds, once per run, the credential plugin the kubeconfig names; the
 * gate spawns no other plugin (a different second binding is refused). */
static int kubec_bind_plugin(lua_State *L) {
  char why[1024];
  if (rbl_gate_bind(rbl_gate_of(L), "kube-plugin", luaL_checkstring(L, 1), why, sizeof why) != 0)
    return rbl_refuse(L, "kube", "%s", why);
  return 0;
}

static const luaL_Reg kubec_funcs[] = {{"parse_yaml", kubec_parse_yaml},
                                       {"read_file", kubec_read_file},
                                       {"stat", kubec_stat},
                                       {"b64decode", kubec_b64decode},
                                       {"parse_time", kubec_parse_time},
                                       {"spawn", kubec_spawn},
                                       {"bind_plugin", kubec_bind_plugin},
                                       {NULL, NULL}};

int luaopen_rbl_kube_c(lua_State *L) {
  luaL_newlib(L, kubec_funcs);
  return 1;
}
