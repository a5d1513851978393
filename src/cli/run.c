/* rbl run, and embedded runs (a host module's main run as a run: rbl rollback). */
#include "audit.h"
#include "cli.h"
#include "engine_int.h"
#include "json.h"
#include "rbl.h"
#include "sandbox.h"
#include "session.h"

#include <errno.h>
#include <lauxlib.h>
#include <pwd.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* On a terminal, a run for several tenants (or a --tenant glob) asks once before anything runs,
 * listing them, unless --yes or --dry-run. The question and its answer (who, which tenants,
 * yes or no) go into the chain after run_start and into the report's approvals; "no" (anything
 * but "yes") runs nothing and ends the run failed (exit 1). Returns 0, or an exit status. */
static int confirm_tenants(run_ctx *c) {
  rbl_run_opts *o = c->o;
  if (o->yes || o->dry_run || !isatty(0) || !isatty(2)) return 0;
  int glob = 0;
  for (int i = 0; i < o->ntenants; i++)
    glob |= strpbrk(o->tenants[i], "*?[") != NULL;
  lua_State *L = c->e->L;
  lua_getfield(L, LUA_REGISTRYINDEX, "rbl.tenants");
  int n = (int)lua_rawlen(L, -1);
  if (n <= 1 && !glob) {
    lua_pop(L, 1);
    return 0;
  }
  c->confirm_tenants = cJSON_CreateArray();
  if (!c->confirm_tenants) return rbl__fail(2, "out of memory");
  fprintf(stderr, "rbl: %s is about to run for %d tenant%s:", o->file, n, n == 1 ? "" : "s");
  for (int i = 1; i <= n; i++) {
    lua_rawgeti(L, -1, i);
    fprintf(stderr, "%s %s", i > 1 ? "," : "", lua_tostring(L, -1));
    cJSON_AddItemToArray(c->confirm_tenants, cJSON_CreateString(lua_tostring(L, -1)));
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  fprintf(stderr, "\ntype 'yes' to run for all of them: ");
  char line[64];
  c->confirm = fgets(line, sizeof line, stdin) && strcmp(line, "yes\n") == 0 ? 1 : -1;
  if (c->confirm < 0) rbl__fail(0, "not confirmed: nothing runs (--yes answers this question)");
  /* runbook.main sees the answer (info.tenant_confirm): the report's approvals; "no" runs nothing
   */
  lua_getfield(L, LUA_REGISTRYINDEX, "rbl.info");
  lua_createtable(L, 0, 4);
  lua_pushstring(L, c->confirm > 0 ? "granted" : "denied");
  lua_setfield(L, -2, "outcome");
  lua_getfield(L, -2, "user");
  lua_setfield(L, -2, "by");
  lua_createtable(L, n, 0);
  for (int i = 0; i < n; i++) {
    lua_pushstring(L, cJSON_GetArrayItem(c->confirm_tenants, i)->valuestring);
    lua_rawseti(L, -2, i + 1);
  }
  lua_setfield(L, -2, "tenants");
  lua_setfield(L, -2, "tenant_confirm");
  lua_pop(L, 1);
  return 0;
}

void rbl__confirm_records(run_ctx *c) {
  if (!c->confirm) return;
  int n = cJSON_GetArraySize(c->confirm_tenants);
  struct passwd *pw = getpwuid(getuid());
  cJSON *req = cJSON_CreateObject();
  cJSON_AddStringToObject(req, "kind", "approval_request");
  cJSON_AddNumberToObject(req, "request", 0);
  char msg[160];
  snprintf(msg, sizeof msg, "run %s for %d tenant%s (asked once before the run)", c->o->file, n,
           n == 1 ? "" : "s");
  cJSON_AddStringToObject(req, "message", msg);
  cJSON_AddItemToObject(req, "tenants", cJSON_Duplicate(c->confirm_tenants, 1));
  cJSON_AddNumberToObject(req, "approvers", 1);
  rbl__audit(c->e, req);
  cJSON *ans = cJSON_CreateObject();
  cJSON_AddStringToObject(ans, "kind", c->confirm > 0 ? "approval_grant" : "approval_denial");
  cJSON_AddNumberToObject(ans, "request", 0);
  cJSON_AddItemToObject(ans, "tenants", cJSON_Duplicate(c->confirm_tenants, 1));
  cJSON_AddStringToObject(ans, "by", pw ? pw->pw_name : "?");
  cJSON_AddNumberToObject(ans, "uid", (double)getuid());
  cJSON_AddStringToObject(ans, "via", "tty");
  if (c->confirm < 0) cJSON_AddStringToObject(ans, "reason", "the answer was not 'yes'");
  rbl__audit(c->e, ans);
}

/* rbl run FILE --help: the runbook's parameters and steps, nothing run. */
static int runbook_help(run_ctx *c) {
  rbl__default_id_of(c->o->file, c->default_id);
  snprintf(c->incident, sizeof c->incident, "help");
  rbl__gen_run_id(c->run_id);
  return rbl__preflight(c);
}

/* The preflight can only find something wrong when the command line names params or steps, or
 * the runbook may declare a required parameter; otherwise a plain run skips its cost (about a
 * quarter of a no-op run's CPU). A declaration the text hides is still checked by the run. */
static int preflight_needed(const run_ctx *c) {
  const rbl_run_opts *o = c->o;
  return o->nparams || o->nonly || o->nskip || o->from || o->resume || o->plan_in ||
         memmem(c->src, c->srclen, "required", 8) != NULL;
}

static int run_file(run_ctx *c) {
  rbl_run_opts *o = c->o;
  char err[512];
  c->src = rbl__read_file(o->file, RUNBOOK_MAX, &c->srclen, err, sizeof err);
  if (!c->src) return rbl__fail(2, "cannot read runbook %s", err);
  rbl__sha256_hex(c->src, c->srclen, c->sha);
  if (o->help) return runbook_help(c);
  if (o->plan_in) {
    c->plan_text = rbl__read_file(o->plan_in, 16u << 20, &c->plan_len, err, sizeof err);
    if (!c->plan_text)
      return rbl__fail(2, "cannot read the plan %s (write one with --dry-run --plan-out FILE)",
                       err);
  }
  /* a run of a plan joins the plan's incident (its chain) unless --incident says otherwise */
  char plan_incident[160] = "";
  if (c->plan_text && !o->incident) {
    cJSON *doc = cJSON_ParseWithLength(c->plan_text, c->plan_len);
    const char *inc = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(doc, "incident"));
    if (inc) {
      snprintf(plan_incident, sizeof plan_incident, "%s", inc);
      o->incident = plan_incident;
    }
    cJSON_Delete(doc);
  }
  if (rbl__init_identity(c) != 0) return 2;
  rbl__default_id_of(o->file, c->default_id);
  int rc = rbl__prepare_run(c);
  rbl_engine *e = c->e;
  if (!e) return rc;
  if (!rc && preflight_needed(c)) {
    rc = rbl__preflight(c);
    lua_getfield(e->L, LUA_REGISTRYINDEX, "rbl.info"); /* the declared id, if it found one */
    lua_pushstring(e->L, c->default_id);
    lua_setfield(e->L, -2, "default_id");
    lua_pop(e->L, 1);
  }
  if (!rc) rc = confirm_tenants(c);
  if (!rc) rc = rbl__load_runbook(c);
  if (!rc) rc = rbl__open_audit(c);
  if (rc) {
    rbl__engine_free(e);
    return rc;
  }
  e->grace_ok = 1; /* runbook.main rolls back after the run deadline, within the grace */
  return rbl__drive_run(c);
}

int rbl_cmd_run(rbl_run_opts *o) {
  run_ctx c;
  rbl_resume resume;
  memset(&c, 0, sizeof c);
  c.o = o;
  int rc = 0;
  if (o->resume) {
    c.resume = &resume;
    rc = rbl__resume_prepare(o, &resume);
  }
  if (!rc) rc = run_file(&c);
  free(c.src);
  if (o->resume) rbl__resume_free(o, &resume);
  free(c.plan_text);
  cJSON_Delete(c.confirm_tenants);
  return rc;
}

/* require(host_module).prepare(arg) -> book; leaves main, book, arg on the stack. */
static int load_embedded_main(run_ctx *c, const char *host_module, const char *arg) {
  lua_State *L = c->e->L;
  lua_getglobal(L, "require");
  lua_pushstring(L, host_module);
  if (lua_pcall(L, 1, 1, 0) != LUA_OK) return rbl__fail(2, "internal: %s", lua_tostring(L, -1));
  lua_getfield(L, -1, "prepare");
  lua_pushstring(L, arg);
  if (lua_pcall(L, 1, 1, 0) != LUA_OK) return rbl__fail(2, "%s", luaL_tolstring(L, -1, NULL));
  lua_getfield(L, -2, "main"); /* mod, book, main */
  lua_insert(L, -2);           /* mod, main, book */
  lua_remove(L, -3);
  lua_pushstring(L, arg); /* main, book, arg */
  return 0;
}

/* Runs require(host_module).main(book, arg) as the main task, with config, tenants, audit chain,
 * report and exit status exactly as rbl run sets them up; prepare(arg) builds the book (the
 * report's trace) and may fail with a usage error (exit 2). o->file names what the run_start
 * record binds (its SHA-256 is taken from the file). */
int rbl__run_embedded(rbl_run_opts *o, const char *host_module, const char *arg) {
  run_ctx c;
  memset(&c, 0, sizeof c);
  c.o = o;
  if (rbl__sha256_file(o->file, c.sha) != 0)
    return rbl__fail(2, "cannot read %s: %s", o->file, strerror(errno));
  if (rbl__init_identity(&c) != 0) return 2;
  const char *dot = strrchr(host_module, '.');
  snprintf(c.default_id, sizeof c.default_id, "%s", dot ? dot + 1 : host_module);
  char *suffix = strstr(c.default_id, "_main");
  if (suffix && suffix[5] == 0) *suffix = 0; /* rbl.rollback_main -> "rollback" */
  c.cmd = c.default_id;
  int rc = rbl__prepare_run(&c);
  rbl_engine *e = c.e;
  if (!e) return rc;
  if (!rc) rc = load_embedded_main(&c, host_module, arg);
  if (!rc) rc = rbl__open_audit(&c);
  if (rc) {
    rbl__engine_free(e);
    return rc;
  }
  return rbl__drive_run(&c);
}
