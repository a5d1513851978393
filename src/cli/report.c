/* The report (--report), the run_end record that closes a run's part of the chain, and the
 * run's end on the --progress json stream. */
#include "audit.h"
#include "cli.h"
#include "engine_int.h"
#include "json.h"
#include "rbl.h"
#include "sandbox.h"
#include "session.h"

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>
#include <lauxlib.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* --plan-out FILE: the plan document of a dry run that resolved (stack: book, report). A dry run
 * that did not resolve writes no plan: it would not show everything the real run would do. */
static int write_plan(run_ctx *c, const char *killed) {
  lua_State *L = c->e->L;
  lua_getfield(L, -1, "outcome");
  int resolved = !killed && lua_tostring(L, -1) && !strcmp(lua_tostring(L, -1), "resolved");
  lua_pop(L, 1);
  if (!resolved) {
    rbl__fail(0,
              "plan not written to %s: the dry run did not resolve, so it cannot show what the "
              "real run would do",
              c->o->plan_out);
    return -1;
  }
  lua_getglobal(L, "require");
  lua_pushliteral(L, "rbl.runbook");
  lua_call(L, 1, 1);
  lua_getfield(L, -1, "plan_document");
  lua_remove(L, -2);
  lua_pushvalue(L, -3); /* book */
  lua_getfield(L, LUA_REGISTRYINDEX, "rbl.info");
  if (lua_pcall(L, 2, 1, 0) != LUA_OK) {
    rbl__fail(0, "plan: %s", luaL_tolstring(L, -1, NULL));
    lua_pop(L, 2);
    return -1;
  }
  char err[128];
  cJSON *doc = rbl_json_from_lua(L, -1, RBL_JSON_REDACT | RBL_JSON_EXACT_NUMBERS, err, sizeof err);
  lua_pop(L, 1);
  rbl__mask_json(c->e, doc);
  char *txt = doc ? cJSON_Print(doc) : NULL;
  cJSON_Delete(doc);
  FILE *f = txt ? fopen(c->o->plan_out, "w") : NULL;
  int rc = 0;
  if (!f || fputs(txt, f) < 0 || fputc('\n', f) < 0 || fclose(f) != 0) {
    rbl__fail(0, "plan %s: %s", c->o->plan_out, txt ? strerror(errno) : err);
    rc = -1;
  } else {
    rbl__progress(c->e, "rbl: plan written to %s", c->o->plan_out);
  }
  cJSON_free(txt);
  return rc;
}

/* info.runbook_id (the one id run_start recorded) and info.runbook_path, for runbook.report. */
static void report_info(run_ctx *c) {
  lua_State *L = c->e->L;
  lua_getfield(L, LUA_REGISTRYINDEX, "rbl.info");
  if (!lua_istable(L, -1)) {
    lua_pop(L, 1);
    return;
  }
  lua_pushstring(L, c->runbook_id[0] ? c->runbook_id : c->default_id);
  lua_setfield(L, -2, "runbook_id");
  char real[PATH_MAX];
  if (c->o->file && strcmp(c->o->file, "(repl)") != 0) {
    lua_pushstring(L, realpath(c->o->file, real) ? real : c->o->file);
    lua_setfield(L, -2, "runbook_path");
  }
  lua_pop(L, 1);
}

/* Calls runbook.report(book, info, killed): leaves the report table on the stack, or returns
 * -1 with nothing pushed. Stack: book on top. */
static int report_build(run_ctx *c, const char *killed) {
  lua_State *L = c->e->L;
  report_info(c);
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
  return 0;
}

/* Writes text to path atomically: a temporary file beside it, synced, then renamed over it. On any
 * failure the temporary file is removed and path is left as it was (never half a report).
 * Returns 0, or -1 with errno set. */
static int write_atomic(const char *path, const char *text, size_t len) {
  char tmp[4200];
  if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp-%ld", path, (long)getpid()) >= sizeof tmp) {
    errno = ENAMETOOLONG;
    return -1;
  }
  int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) return -1;
  for (size_t off = 0; off < len;) {
    ssize_t w = write(fd, text + off, len - off);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      int e = w < 0 ? errno : EIO;
      close(fd);
      unlink(tmp);
      errno = e;
      return -1;
    }
    off += (size_t)w;
  }
  if (fsync(fd) != 0 || close(fd) != 0 || rename(tmp, path) != 0) {
    int e = errno;
    unlink(tmp);
    errno = e;
    return -1;
  }
  return 0;
}

static int report_save(run_ctx *c) {
  lua_State *L = c->e->L;
  char err[128];
  /* numbers exactly: integers digit for digit (to 2^63), doubles that round-trip */
  cJSON *rep = rbl_json_from_lua(L, -1, RBL_JSON_REDACT | RBL_JSON_EXACT_NUMBERS, err, sizeof err);
  rbl__mask_json(c->e, rep);
  char *txt = rep ? cJSON_Print(rep) : NULL;
  cJSON_Delete(rep);
  int rc = 0;
  size_t n = txt ? strlen(txt) : 0;
  if (txt) txt[n] = '\n'; /* cJSON_Print's NUL becomes the final newline */
  if (!txt || write_atomic(c->o->report_path, txt, n + 1) != 0) {
    rbl__fail(0, "report %s could not be written: %s (the run's record is the audit chain)",
              c->o->report_path, txt ? strerror(errno) : err);
    rc = -1;
  }
  cJSON_free(txt);
  return rc;
}

/* The run's end for --progress json: outcome, exit code, the failure and the final head. */
static void report_progress_end(run_ctx *c, int code) {
  lua_State *L = c->e->L;
  if (!c->e->progress_json) return;
  cJSON *ev = cJSON_CreateObject();
  cJSON_AddStringToObject(ev, "event", "run_end");
  cJSON_AddStringToObject(ev, "incident", c->incident);
  cJSON_AddStringToObject(ev, "run", c->run_id);
  lua_getfield(L, -1, "outcome");
  cJSON_AddStringToObject(ev, "outcome", lua_tostring(L, -1) ? lua_tostring(L, -1) : "failed");
  lua_pop(L, 1);
  cJSON_AddNumberToObject(ev, "exit_code", code);
  char err[64];
  lua_getfield(L, -1, "failure");
  if (lua_istable(L, -1))
    cJSON_AddItemToObject(
        ev, "failure",
        rbl_json_from_lua(L, -1, RBL_JSON_REDACT | RBL_JSON_EXACT_NUMBERS, err, sizeof err));
  lua_pop(L, 1);
  lua_getfield(L, -1, "total_execution_time_ms");
  cJSON_AddNumberToObject(ev, "total_execution_time_ms", lua_tonumber(L, -1));
  lua_pop(L, 1);
  if (c->e->audit) cJSON_AddStringToObject(ev, "audit_chain", rbl_audit_head(c->e->audit));
  rbl__progress_event(c->e, ev);
}

int rbl__write_report(run_ctx *c, const char *killed) {
  lua_State *L = c->e->L;
  /* stack: book */
  if (report_build(c, killed) != 0) return -1;
  lua_getfield(L, -1, "outcome");
  const char *outcome = lua_tostring(L, -1) ? lua_tostring(L, -1) : "failed";
  int code = rbl__exit_code_for(c->e, strcmp(outcome, "refused") == 0 ? "failed" : outcome);
  cJSON *end = cJSON_CreateObject();
  cJSON_AddStringToObject(end, "kind", "run_end");
  cJSON_AddStringToObject(end, "outcome", outcome);
  lua_pop(L, 1);
  if (rbl__chain_changed(c->e, end)) {
    c->chain_changed = 1;
    code = 4;
    lua_pushstring(L, cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(end, "chain_changed")));
    lua_setfield(L, -2, "audit_chain_changed");
  }
  cJSON_AddNumberToObject(end, "exit_code", code);
  if (killed) cJSON_AddStringToObject(end, "reason", killed);
  rbl__audit(c->e, end);
  /* audit_chain is the chain's final head: signed now (a signature record, with --sign-key). */
  if (c->e->audit && rbl_audit_seal(c->e->audit) == 0) {
    lua_pushstring(L, rbl_audit_head(c->e->audit));
    lua_setfield(L, -2, "audit_chain");
  }
  c->plan_failed = c->o->plan_out && write_plan(c, killed) != 0;
  int rc = 0;
  if (c->o->report_path && report_save(c) != 0) rc = -1;
  report_progress_end(c, c->chain_changed ? 4 : rbl__exit_code_for(c->e, outcome));
  lua_pop(L, 1);
  return rc;
}
