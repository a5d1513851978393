/* Before a run starts: the runbook's declarations (runbook{} params, the steps), read by
 * evaluating its top-level code with every primitive inert (as rbl check does), and the command
 * line checked against them: a wrong --param or step name is exit 2 before anything runs or is
 * audited. Also `rbl run FILE --help`, which prints the declared parameters. */
#include "cli.h"
#include "engine_int.h"
#include "rbl.h"
#include "session.h"

#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PREFLIGHT_MEMORY  (64u << 20)
#define PREFLIGHT_SECONDS 2.0

/* A check-mode engine for c's runbook, with c's info (params, selection, resume). */
static int preflight_engine(run_ctx *c, rbl_run_opts *quiet) {
  rbl_engine *e = c->e = rbl__setup_engine(quiet);
  if (!e) return rbl__fail(2, "out of memory");
  e->check_mode = 1;
  e->silent = 1;
  /* Bounded below any run's own limits: a runbook that exceeds them here is simply not checked
   * ahead, and meets the run's real limits (exit 3) when it runs. */
  e->limits.memory = e->limits.memory < PREFLIGHT_MEMORY ? e->limits.memory : PREFLIGHT_MEMORY;
  e->limits.run_timeout = PREFLIGHT_SECONDS;
  e->runbook_dir = rbl__dir_of(c->o->file);
  lua_State *L = e->L;
  lua_newtable(L);
  lua_setfield(L, LUA_REGISTRYINDEX, "rbl.config");
  lua_createtable(L, 1, 0);
  lua_pushliteral(L, "check");
  lua_rawseti(L, -2, 1);
  lua_setfield(L, LUA_REGISTRYINDEX, "rbl.tenants");
  e->root.tenant = strdup("check");
  rbl__push_info(c);
  return rbl__load_runbook(c);
}

int rbl__preflight(run_ctx *c) {
  rbl_run_opts quiet = *c->o;
  quiet.quiet = 1;
  quiet.dry_run = 0;
  rbl_engine *real = c->e;
  int rc = preflight_engine(c, &quiet);
  rbl_engine *e = c->e;
  c->e = real;
  if (!e) return rc;
  lua_State *L = e->L;
  if (!rc) { /* stack: main, book, chunk -> preflight, book, chunk, help */
    lua_getglobal(L, "require");
    lua_pushliteral(L, "rbl.entry");
    lua_call(L, 1, 1);
    lua_getfield(L, -1, "preflight");
    lua_remove(L, -2);
    lua_replace(L, -4);
    lua_pushboolean(L, c->o->help);
    int st = rbl__engine_run(e, 3);
    const char *msg = st == LUA_OK ? lua_tostring(L, -1) : NULL;
    if (e->killed && c->o->help)
      rc = rbl__fail(2, "%s: its top-level code cannot be evaluated without running it (%s)",
                     c->o->file, e->kill_msg);
    else if (e->killed || st != LUA_OK)
      rc = 0; /* stopped by a limit: the run checks its declarations itself, as it makes them */
    else if (c->o->help)
      fputs(msg ? msg : "", stdout);
    else if (msg && *msg)
      rc = rbl__fail(2, "%s", msg);
  }
  /* the id runbook{} declares: what run_start, the header and the report name even when the
   * run stops before its own runbook{} (a plan that no longer holds) */
  if (!rc && e->runbook_id[0]) snprintf(c->default_id, sizeof c->default_id, "%s", e->runbook_id);
  rbl__engine_free(e);
  return rc;
}
