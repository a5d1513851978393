/* rbl run --resume AUDIT: verifies the chain from one read as `rbl audit verify` does
 * (rbl_audit_verify_file) and only then takes, from the records it verified, the incident,
 * tenants, params and runbook of its last run (a failed rbl run) to continue with. Where the run
 * continues is lua/rbl/partial.lua's decision. */
#include "audit.h"
#include "cli.h"
#include "json.h"
#include "rbl.h"
#include "session.h"

#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>

static const char *str_of(const cJSON *o, const char *k) {
  return cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(o, k));
}

/* What lua/rbl/partial.lua reads of a step or intent record: kind, step, status, prim, and the
 * args of an exec (their read_only flag); the rest is left out so a large run stays small. */
static cJSON *slim(const cJSON *r) {
  static const char *const keep[] = {"kind", "step", "status", "prim", NULL};
  cJSON *o = cJSON_CreateObject();
  const char *prim = str_of(r, "prim");
  for (int i = 0; o && keep[i]; i++) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(r, keep[i]);
    if (v) cJSON_AddItemToObject(o, keep[i], cJSON_Duplicate(v, 1));
  }
  if (o && prim && (!strcmp(prim, "exec") || !strcmp(prim, "docker_exec"))) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(r, "args");
    if (v) cJSON_AddItemToObject(o, "args", cJSON_Duplicate(v, 1));
  }
  return o ? o : cJSON_CreateNull();
}

/* The last run of the verified records: its run_start, run_end (NULL if it crashed; both point
 * into recs) and its step and intent records in order (a new array). Runs are contiguous: the
 * chain is locked by the run writing it. */
static int last_run(const cJSON *recs, const cJSON **start, const cJSON **end, cJSON **steps) {
  const char *cur = "";
  const cJSON *r;
  *start = *end = NULL;
  *steps = cJSON_CreateArray();
  cJSON_ArrayForEach(r, recs) {
    const char *kind = str_of(r, "kind"), *run = str_of(r, "run");
    if (!kind || !run || !*steps) continue;
    if (strcmp(run, cur) != 0) { /* a new run: forget the previous one */
      cur = run;
      *start = *end = NULL;
      cJSON_Delete(*steps);
      *steps = cJSON_CreateArray();
    }
    if (!strcmp(kind, "run_start") && !*start)
      *start = r;
    else if (!strcmp(kind, "run_end"))
      *end = r;
    else if ((!strcmp(kind, "step") || !strcmp(kind, "intent")) && *steps)
      cJSON_AddItemToArray(*steps, slim(r));
  }
  return *steps ? 0 : -1;
}

/* What the run_start of the run to resume must say; -> 0, or the exit status after a message. */
static int check_resumable(const char *chain, const cJSON *start, const cJSON *end) {
  const char *run = str_of(start, "run");
  const cJSON *argv = cJSON_GetObjectItemCaseSensitive(start, "argv");
  const char *cmd = cJSON_GetStringValue(cJSON_GetArrayItem(argv, 1));
  if (!cmd || strcmp(cmd, "run") != 0)
    return rbl__fail(2,
                     "resume %s: its last run %s is `rbl %s`, not a failed rbl run; a resume "
                     "continues only the last run on the chain",
                     chain, run, cmd ? cmd : "?");
  if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(start, "dry_run")))
    return rbl__fail(2,
                     "resume %s: run %s was a dry run: nothing was applied to continue; run the "
                     "runbook for real",
                     chain, run);
  const char *outcome = end ? str_of(end, "outcome") : NULL;
  if (outcome && !strcmp(outcome, "resolved"))
    return rbl__fail(2, "resume %s: run %s resolved: nothing to resume", chain, run);
  if (outcome && strcmp(outcome, "failed") != 0)
    return rbl__fail(2,
                     "resume %s: run %s ended %s: only a failed run is resumed (a refusal or a "
                     "limit is fixed first, then the runbook run again)",
                     chain, run, outcome);
  if (!cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(start, "params")))
    return rbl__fail(2,
                     "resume %s: run %s recorded no params (written by an older rbl): run the "
                     "runbook again with its --param",
                     chain, run);
  return 0;
}

/* Tenants and params of the run into o (strdup'd: rbl__resume_free frees them). */
static int take_tenants_params(const char *chain, const cJSON *start, rbl_run_opts *o) {
  const cJSON *t, *ts = cJSON_GetObjectItemCaseSensitive(start, "tenants");
  cJSON_ArrayForEach(t, ts) {
    const char *name = cJSON_GetStringValue(t);
    if (!name || strpbrk(name, "*?[") || o->ntenants >= 64)
      return rbl__fail(2, "resume %s: the run's tenants are not a list of tenant names", chain);
    o->tenants[o->ntenants++] = strdup(name);
  }
  if (o->ntenants == 0) return rbl__fail(2, "resume %s: the run names no tenant", chain);
  const cJSON *kv;
  cJSON_ArrayForEach(kv, cJSON_GetObjectItemCaseSensitive(start, "params")) {
    if (!cJSON_IsString(kv) || !kv->string[0] || strchr(kv->string, '=') || o->nparams >= 128)
      return rbl__fail(2, "resume %s: the run's params are not NAME: string pairs", chain);
    size_t n = strlen(kv->string) + strlen(kv->valuestring) + 2;
    char *s = malloc(n);
    if (!s) return rbl__fail(2, "out of memory");
    snprintf(s, n, "%s=%s", kv->string, kv->valuestring);
    o->params[o->nparams++] = s;
  }
  return 0;
}

/* The run's own step selection (run_start.select) is kept: a step it skipped on request stays
 * skipped. Names are strdup'd into o (rbl__resume_free frees them). */
static int take_select(const char *chain, const cJSON *start, rbl_run_opts *o) {
  const cJSON *sel = cJSON_GetObjectItemCaseSensitive(start, "select"), *v;
  if (!sel) return 0;
  cJSON_ArrayForEach(v, cJSON_GetObjectItemCaseSensitive(sel, "only")) {
    if (!cJSON_IsString(v) || o->nonly >= 64)
      return rbl__fail(2, "resume %s: bad select.only", chain);
    o->only[o->nonly++] = strdup(v->valuestring);
  }
  cJSON_ArrayForEach(v, cJSON_GetObjectItemCaseSensitive(sel, "skip")) {
    if (!cJSON_IsString(v) || o->nskip >= 64)
      return rbl__fail(2, "resume %s: bad select.skip", chain);
    o->skip[o->nskip++] = strdup(v->valuestring);
  }
  const char *from = str_of(sel, "from");
  if (from) o->from = strdup(from);
  return 0;
}

/* The runbook: FILE if given, else the path the run recorded; its SHA-256 must be the one the
 * run recorded, so the resumed steps are the same code. */
static int take_runbook(const char *chain, const cJSON *start, rbl_run_opts *o) {
  const cJSON *rb = cJSON_GetObjectItemCaseSensitive(start, "runbook");
  const char *path = str_of(rb, "path"), *sha = str_of(rb, "sha256");
  if (!path || !sha) return rbl__fail(2, "resume %s: the run names no runbook", chain);
  if (!o->file) o->file = strdup(path);
  char now[72];
  if (rbl__sha256_file(o->file, now) != 0)
    return rbl__fail(
        2, "resume %s: cannot read the runbook %s (give its path: rbl run FILE --resume %s)", chain,
        o->file, chain);
  if (strcmp(now, sha) != 0)
    return rbl__fail(2,
                     "resume %s: runbook %s changed since run %s (%s recorded, %s now): refusing "
                     "to resume other code; run it afresh",
                     chain, o->file, str_of(start, "run"), sha, now);
  return 0;
}

int rbl__resume_prepare(rbl_run_opts *o, rbl_resume *r) {
  char err[768];
  const char *chain = o->resume;
  memset(r, 0, sizeof *r);
  r->file_given = o->file != NULL;
  rbl_audit_verified ver;
  int v = rbl_audit_verify_file(chain, o->audit_key, NULL, &ver, err, sizeof err);
  if (v == 2) return rbl__fail(2, "resume: cannot use the chain: %s", err);
  if (v != 0)
    return rbl__fail(2, "resume %s: the chain does not verify (%s): refusing to trust it", chain,
                     err);
  const cJSON *start, *end;
  int rc = last_run(ver.records, &start, &end, &r->records);
  if (rc != 0) rc = rbl__fail(2, "out of memory");
  if (!rc && !start) rc = rbl__fail(2, "resume %s: its last run has no run_start record", chain);
  if (!rc) rc = check_resumable(chain, start, end);
  if (!rc) rc = take_tenants_params(chain, start, o);
  if (!rc) rc = take_select(chain, start, o);
  if (!rc) rc = take_runbook(chain, start, o);
  if (!rc) {
    r->run = strdup(str_of(start, "run") ? str_of(start, "run") : "?");
    const char *inc = str_of(start, "incident");
    r->incident = strdup(inc ? inc : "?");
    o->incident = r->incident;
    if (!o->audit_path) o->audit_path = chain;
  }
  cJSON_Delete(ver.records);
  cJSON_Delete(ver.notes);
  return rc;
}

/* info.resume = {run = id, records = {...}} for lua/rbl/partial.lua. */
void rbl__resume_push(lua_State *L, const rbl_resume *r) {
  lua_createtable(L, 0, 2);
  lua_pushstring(L, r->run);
  lua_setfield(L, -2, "run");
  rbl_json_push(L, r->records);
  lua_setfield(L, -2, "records");
}

void rbl__resume_free(rbl_run_opts *o, rbl_resume *r) {
  if (!o->resume) return;
  for (int i = 0; i < o->ntenants; i++)
    free((char *)o->tenants[i]);
  for (int i = 0; i < o->nparams; i++)
    free((char *)o->params[i]);
  for (int i = 0; i < o->nonly; i++)
    free((char *)o->only[i]);
  for (int i = 0; i < o->nskip; i++)
    free((char *)o->skip[i]);
  free((char *)o->from);
  if (!r->file_given) free((char *)o->file);
  free(r->run);
  free(r->incident);
  cJSON_Delete(r->records);
}
