/* The config file: a Lua file run in the sandbox (5 s budget) that returns, or sets, the
 * settings; kept in the registry as rbl.config. And the limits it sets. */
#include "audit.h"
#include "cli.h"
#include "engine_int.h"
#include "json.h"
#include "rbl.h"
#include "sandbox.h"
#include "session.h"

#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>

static uint64_t config_deadline;
static void config_hook(lua_State *L, lua_Debug *ar) {
  if (uv_hrtime() > config_deadline) luaL_error(L, "config took longer than 5 s");
}

int rbl__load_config(rbl_engine *e, const char *path) {
  lua_State *L = e->L;
  if (!path) path = getenv("RBL_CONFIG");
  if (!path || !*path) {
    lua_newtable(L);
    lua_setfield(L, LUA_REGISTRYINDEX, "rbl.config");
    return 0;
  }
  char err[512];
  size_t len;
  char *src = rbl__read_file(path, RUNBOOK_MAX, &len, err, sizeof err);
  if (!src) return rbl__fail(2, "config %s", err);
  lua_pushnil(L);
  rbl_sandbox_push_env(L);
  char chunk[600];
  snprintf(chunk, sizeof chunk, "@%s", path);
  int st = rbl_sandbox_load(L, src, len, chunk, -1);
  free(src);
  if (st != LUA_OK) return rbl__fail(2, "config: %s", lua_tostring(L, -1));
  config_deadline = uv_hrtime() + 5000000000ull;
  lua_sethook(L, config_hook, LUA_MASKCOUNT, 1000);
  st = lua_pcall(L, 0, 1, 0);
  lua_sethook(L, NULL, 0, 0);
  if (st != LUA_OK) return rbl__fail(2, "config: %s", luaL_tolstring(L, -1, NULL));
  if (!lua_istable(L, -1)) {
    /* No table returned: the globals the file set are the config. Read them raw through
     * the environment's own-globals table by iterating with the generic pairs. */
    lua_pop(L, 1);
    lua_newtable(L);
    static const char *const keys[] = {"tenants", "exec", "limits", "labels", "docker", "kube",
                                       "secrets", "prom", "notify", "serve",  NULL};
    for (const char *const *k = keys; *k; k++) {
      lua_getfield(L, -2, *k);
      lua_setfield(L, -2, *k);
    }
  }
  lua_setfield(L, LUA_REGISTRYINDEX, "rbl.config");
  lua_pop(L, 1); /* env */
  return 0;
}

/* The limits a config may set: each a number within [lo, hi] (integer: a whole number). */
static const struct {
  const char *key, *unit;
  double lo, hi;
  int integer;
} limit_keys[] = {
    {"memory_mb", "MiB", 1, 1048576, 0},         {"step_timeout", "seconds", 0.001, 1e8, 0},
    {"run_timeout", "seconds", 0.001, 1e8, 0},   {"output_kb", "KiB", 1, 1073741824, 0},
    {"exec_output_kb", "KiB", 1, 1073741824, 0}, {"http_connections", "requests", 1, 256, 1},
    {"rollback_grace", "seconds", 0, 3600, 0},
};
#define NLIMITS (sizeof limit_keys / sizeof *limit_keys)

/* Reads config.limits: absent keys keep their defaults (vals[] holds them on entry); a value
 * that is not a number in range, or an unknown key (a typo would silently drop a safety limit),
 * is exit 2 naming the key, what it got and what it takes. */
static int read_limits(lua_State *L, double vals[NLIMITS]) {
  lua_getfield(L, LUA_REGISTRYINDEX, "rbl.config");
  lua_getfield(L, -1, "limits");
  int rc = 0;
  if (lua_isnil(L, -1)) goto done;
  if (!lua_istable(L, -1)) {
    rc =
        rbl__fail(2, "config: limits must be a table (limits = { memory_mb = 256, ... }), got a %s",
                  luaL_typename(L, -1));
    goto done;
  }
  lua_pushnil(L);
  while (!rc && lua_next(L, -2)) {
    const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
    size_t i = 0;
    while (k && i < NLIMITS && strcmp(k, limit_keys[i].key) != 0)
      i++;
    if (!k || i == NLIMITS) {
      rc = rbl__fail(2,
                     "config: unknown key limits.%s; the limits are memory_mb, step_timeout, "
                     "run_timeout, rollback_grace, output_kb, exec_output_kb and http_connections "
                     "(docs/config.md)",
                     k ? k : "(not a string)");
      break;
    }
    int isnum = lua_type(L, -1) == LUA_TNUMBER;
    double v = isnum ? lua_tonumber(L, -1) : 0;
    if (!isnum || !(v >= limit_keys[i].lo && v <= limit_keys[i].hi) ||
        (limit_keys[i].integer && v != (double)(long long)v)) {
      const char *got = isnum ? lua_pushfstring(L, "%f", v) : luaL_tolstring(L, -1, NULL);
      rc = rbl__fail(2, "config: limits.%s must be %s from %g to %g %s, got %s%s%s", k,
                     limit_keys[i].integer ? "a whole number" : "a number", limit_keys[i].lo,
                     limit_keys[i].hi, limit_keys[i].unit, isnum ? "" : "'", got, isnum ? "" : "'");
      lua_pop(L, 1);
    } else {
      vals[i] = v;
    }
    lua_pop(L, 1);
  }
  if (rc) lua_pop(L, 1); /* the key lua_next left */
done:
  lua_pop(L, 2);
  return rc;
}

int rbl__apply_limits(rbl_engine *e) {
  lua_State *L = e->L;
  rbl_limits *l = &e->limits;
  double v[NLIMITS] = {(double)(l->memory >> 20),
                       l->step_timeout,
                       l->run_timeout,
                       (double)(l->output >> 10),
                       (double)(l->exec_output >> 10),
                       (double)l->http_connections,
                       l->rollback_grace};
  int rc = read_limits(L, v);
  if (rc) return rc;
  l->memory = (size_t)v[0] << 20;
  l->step_timeout = v[1];
  l->run_timeout = v[2];
  l->output = (size_t)v[3] << 10;
  l->exec_output = (size_t)v[4] << 10;
  l->http_connections = (int)v[5];
  l->rollback_grace = v[6];
  if (l->memory < (8u << 20)) l->memory = 8u << 20; /* the floor the Lua state itself needs */
  e->mem_cap = l->memory;
  return 0;
}
