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

static double cfg_number(lua_State *L, const char *section, const char *key, double def) {
  lua_getfield(L, LUA_REGISTRYINDEX, "rbl.config");
  lua_getfield(L, -1, section);
  double v = def;
  if (lua_istable(L, -1)) {
    lua_getfield(L, -1, key);
    if (lua_isnumber(L, -1)) v = lua_tonumber(L, -1);
    lua_pop(L, 1);
  }
  lua_pop(L, 2);
  return v;
}

void rbl__apply_limits(rbl_engine *e) {
  lua_State *L = e->L;
  rbl_limits *l = &e->limits;
  l->memory = (size_t)cfg_number(L, "limits", "memory_mb", (double)(l->memory >> 20)) << 20;
  l->step_timeout = cfg_number(L, "limits", "step_timeout", l->step_timeout);
  l->run_timeout = cfg_number(L, "limits", "run_timeout", l->run_timeout);
  l->output = (size_t)cfg_number(L, "limits", "output_kb", (double)(l->output >> 10)) << 10;
  l->exec_output = (size_t)cfg_number(L, "limits", "exec_output_kb", (double)(l->exec_output >> 10))
                   << 10;
  double hc = cfg_number(L, "limits", "http_connections", (double)l->http_connections);
  l->http_connections = hc < 1 ? 1 : hc > 256 ? 256 : (int)hc;
  if (l->memory < (8u << 20)) l->memory = 8u << 20;
  e->mem_cap = l->memory;
}
