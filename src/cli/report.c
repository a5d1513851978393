/* The report (--report) and the run_end record that closes a run's part of the chain. */
#include "audit.h"
#include "cli.h"
#include "engine_int.h"
#include "json.h"
#include "rbl.h"
#include "sandbox.h"
#include "session.h"

#include <errno.h>
#include <lauxlib.h>
#include <stdio.h>
#include <string.h>

int rbl__write_report(run_ctx *c, const char *killed) {
  lua_State *L = c->e->L;
  /* stack: book */
  lua_getglobal(L, "require");
  lua_pushliteral(L, "rbl.runbook");
  lua_call(L, 1, 1);
  lua_getfield(L, -1, "report");
  lua_remove(L, -2);
  lua_pushvalue(L, -2);
  lua_getfield(L, LUA_REGISTRYINDEX, "rbl.info");
  if (killed)
    lua_pushstring(L, killed);
  else
    lua_pushnil(L);
  if (lua_pcall(L, 3, 1, 0) != LUA_OK) {
    rbl__fail(0, "report: %s", luaL_tolstring(L, -1, NULL));
    lua_pop(L, 2);
    return -1;
  }
  if (c->e->audit) {
    lua_pushstring(L, rbl_audit_head(c->e->audit));
    lua_setfield(L, -2, "audit_chain");
  }
  lua_getfield(L, -1, "outcome");
  cJSON *end = cJSON_CreateObject();
  cJSON_AddStringToObject(end, "kind", "run_end");
  cJSON_AddStringToObject(end, "outcome", lua_tostring(L, -1) ? lua_tostring(L, -1) : "failed");
  lua_pop(L, 1);
  if (killed) cJSON_AddStringToObject(end, "reason", killed);
  rbl__audit(c->e, end);
  if (c->e->audit) {
    rbl_audit_sync(c->e->audit);
    lua_pushstring(L, rbl_audit_head(c->e->audit));
    lua_setfield(L, -2, "audit_chain");
  }
  int rc = 0;
  if (c->o->report_path) {
    char err[128];
    cJSON *rep = rbl_json_from_lua(L, -1, RBL_JSON_REDACT, err, sizeof err);
    rbl__mask_json(c->e, rep);
    char *txt = rep ? cJSON_Print(rep) : NULL;
    cJSON_Delete(rep);
    FILE *f = txt ? fopen(c->o->report_path, "w") : NULL;
    if (!f || fputs(txt, f) < 0 || fputc('\n', f) < 0 || fclose(f) != 0) {
      rbl__fail(0, "report %s: %s", c->o->report_path, txt ? strerror(errno) : err);
      rc = -1;
    }
    cJSON_free(txt);
  }
  lua_pop(L, 1);
  return rc;
}
