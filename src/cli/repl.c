/* rbl repl: the same primitives, gate and audit as rbl run, one line at a time. */
#include "audit.h"
#include "cli.h"
#include "engine_int.h"
#include "json.h"
#include "rbl.h"
#include "sandbox.h"
#include "session.h"
#include "textesc.h"

#include <dlfcn.h>
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Line editing from Debian's libedit, loaded only for an interactive REPL (linking it cost every
 * rbl start three more libraries); without it the prompt still works, unedited. */
static char *(*el_readline)(const char *prompt);
static int (*el_add_history)(const char *line);

static void load_libedit(void) {
  static int tried;
  if (tried) return;
  tried = 1;
  void *lib = dlopen("libedit.so.2", RTLD_NOW | RTLD_LOCAL);
  void *r = lib ? dlsym(lib, "readline") : NULL, *a = lib ? dlsym(lib, "add_history") : NULL;
  if (r && a) {
    memcpy(&el_readline, &r, sizeof r);
    memcpy(&el_add_history, &a, sizeof a);
  }
}

static char *repl_read(const char *prompt) {
  if (isatty(0)) {
    load_libedit();
    if (el_readline) return el_readline(prompt);
    fputs(prompt, stdout);
    fflush(stdout);
  }
  char *line = NULL;
  size_t cap = 0;
  ssize_t n = getline(&line, &cap, stdin);
  if (n < 0) {
    free(line);
    return NULL;
  }
  if (n > 0 && line[n - 1] == '\n') line[n - 1] = 0;
  return line;
}

/* Evaluates one line (as an expression first, then as a statement) in the session's env at
 * stack index 1. Returns the line's exit status: 0 ok, 1 error, 2 syntax, 3/4 killed. */
static int repl_eval(rbl_engine *e, const char *line) {
  lua_State *L = e->L;
  size_t len = strlen(line);
  char *expr = malloc(len + 8);
  if (!expr) return 1;
  memcpy(expr, "return ", 7);
  memcpy(expr + 7, line, len + 1);
  int st = rbl_sandbox_load(L, expr, len + 7, "=repl", 1);
  free(expr);
  if (st != LUA_OK) {
    lua_pop(L, 1);
    st = rbl_sandbox_load(L, line, len, "=repl", 1);
  }
  if (st != LUA_OK) {
    size_t elen;
    const char *msg = lua_tolstring(L, -1, &elen);
    char *safe = rbl_escape_ctl(msg ? msg : "?", msg ? elen : 1, RBL_ESC_KEEP_NL, NULL);
    fprintf(stderr, "%s\n", safe ? safe : "syntax error");
    free(safe);
    lua_settop(L, 1);
    return 2;
  }
  cJSON *rec = cJSON_CreateObject();
  cJSON_AddStringToObject(rec, "kind", "repl");
  cJSON_AddStringToObject(rec, "line", line);
  rbl__audit(e, rec);
  lua_getglobal(L, "require");
  lua_pushliteral(L, "rbl.repl");
  lua_call(L, 1, 1);
  lua_getfield(L, -1, "line");
  lua_remove(L, -2);
  lua_insert(L, -2); /* line, chunk */
  st = rbl__engine_run(e, 1);
  size_t olen;
  const char *out = luaL_tolstring(L, -1, &olen);
  char *m = rbl__mask(e, out, olen, &olen);
  FILE *to = st == LUA_OK ? stdout : stderr;
  if (st != LUA_OK) { /* the message, not the traceback */
    const char *nl = memchr(m ? m : out, '\n', olen);
    if (nl) olen = (size_t)(nl - (m ? m : out));
  }
  /* a value or an error is data: its control characters (C0, DEL, C1) cannot drive the terminal */
  char *safe = olen ? rbl_escape_ctl(m ? m : out, olen, RBL_ESC_KEEP_NL, &olen) : NULL;
  if (olen && safe) fprintf(to, "%s%.*s\n", st == LUA_OK ? "" : "error: ", (int)olen, safe);
  fflush(to);
  free(safe);
  free(m);
  lua_settop(L, 1);
  if (e->killed) return e->killed == RBL_KILL_AUDIT ? 4 : 3;
  return st == LUA_OK ? 0 : 1;
}

int rbl_cmd_repl(rbl_run_opts *o) {
  run_ctx c;
  memset(&c, 0, sizeof c);
  c.o = o;
  o->file = "(repl)";
  rbl__sha256_hex("", 0, c.sha);
  if (rbl__init_identity(&c) != 0) return 2;
  snprintf(c.default_id, sizeof c.default_id, "repl");
  rbl_engine *e = c.e = rbl__setup_engine(o);
  if (!e) return rbl__fail(2, "out of memory");
  /* iac.* and require read only under --dir; without it (not the working directory) nothing */
  e->runbook_dir = o->dir ? strdup(o->dir) : NULL;
  lua_State *L = e->L;
  int rc = rbl__load_config(e, o->config_path);
  if (!rc) rbl__apply_limits(e);
  if (!rc) rc = rbl__resolve_tenants(e, o);
  if (!rc) rbl__push_info(&c);
  if (!rc) rc = rbl__open_audit(&c);
  if (!rc) {
    lua_getglobal(L, "require");
    lua_pushliteral(L, "rbl.entry");
    lua_call(L, 1, 1);
    lua_getfield(L, -1, "prepare");
    lua_pushliteral(L, "repl");
    if (lua_pcall(L, 1, 3, 0) != LUA_OK) /* -> book, extras, lazy */
      rc = rbl__fail(2, "internal: %s", luaL_tolstring(L, -1, NULL));
  }
  if (rc) {
    rbl__engine_free(e);
    return rc;
  }
  rbl_sandbox_push_env_lazy(L); /* entry, book, env */
  lua_replace(L, 1);
  lua_settop(L, 1); /* env */
  rbl__audit(e, rbl__run_start_record(&c));
  rbl_audit_sync(e->audit);
  char prompt[128];
  snprintf(prompt, sizeof prompt, "rbl(%s)> ", e->root.tenant ? e->root.tenant : "*");
  if (isatty(0))
    fprintf(stderr, "rbl repl: tenant %s, incident %s, audit %s. Ctrl-D ends.\n",
            e->root.tenant ? e->root.tenant : "(several)", c.incident, c.audit_path);
  int code = 0;
  char *line;
  while (!e->killed && (line = repl_read(prompt)) != NULL) {
    if (*line) {
      if (isatty(0) && el_add_history) el_add_history(line);
      code = repl_eval(e, line);
    }
    free(line);
  }
  e->ended = 1;
  cJSON *end = cJSON_CreateObject();
  cJSON_AddStringToObject(end, "kind", "run_end");
  cJSON_AddStringToObject(end, "outcome", e->killed ? "refused" : "ended");
  if (e->killed) cJSON_AddStringToObject(end, "reason", e->kill_msg);
  if (rbl__chain_changed(e, end)) code = 4;
  rbl__audit(e, end);
  if (e->killed) rbl__fail(0, "session stopped: %s", e->kill_msg);
  if (rbl_audit_close(e->audit) != 0 && code != 4) {
    rbl__fail(0, "audit: %s", rbl_audit_error(e->audit));
    code = 4;
  }
  e->audit = NULL;
  rbl__engine_free(e);
  return code;
}
