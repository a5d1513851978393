/* The setup every command that runs Lua shares: the run's identity, the engine, the info table,
 * the audit chain and its run_start record, loading the runbook, and driving a run to its end. */
#include "audit.h"
#include "cli.h"
#include "engine_int.h"
#include "json.h"
#include "rbl.h"
#include "sandbox.h"
#include "budget.h"
#include "session.h"
#include "sha256.h"

#include <errno.h>
#include <lauxlib.h>
#include <lualib.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int rbl__fail(int code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("rbl: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  return code;
}

char *rbl__read_file(const char *path, size_t cap, size_t *len, char *err, size_t errlen) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    snprintf(err, errlen, "%s: %s", path, strerror(errno));
    return NULL;
  }
  char *buf = malloc(cap + 1);
  errno = 0;
  size_t n = buf ? fread(buf, 1, cap + 1, f) : 0;
  int rerr = ferror(f) ? (errno ? errno : EIO) : 0;
  fclose(f);
  if (!buf || rerr || n > cap) {
    snprintf(err, errlen, "%s: %s", path,
             !buf   ? "out of memory"
             : rerr ? strerror(rerr)
                    : "file too large");
    free(buf);
    return NULL;
  }
  buf[n] = 0;
  *len = n;
  return buf;
}

void rbl__sha256_hex(const char *data, size_t len, char out[72]) {
  unsigned char md[32];
  rbl_sha256(data, len, md);
  strcpy(out, "sha256:");
  rbl_audit_hex(md, 32, out + 7);
}

int rbl__sha256_file(const char *path, char out[72]) {
  FILE *f = fopen(path, "rb");
  if (!f) return -1;
  rbl_sha256_ctx c;
  unsigned char buf[65536], dig[32];
  size_t got;
  rbl_sha256_init(&c);
  while ((got = fread(buf, 1, sizeof buf, f)) > 0)
    rbl_sha256_update(&c, buf, got);
  int bad = ferror(f);
  fclose(f);
  rbl_sha256_final(&c, dig);
  strcpy(out, "sha256:");
  rbl_audit_hex(dig, 32, out + 7);
  return bad ? -1 : 0;
}

static int valid_id(const char *s, int maxlen) {
  int n = 0;
  if (!s[0] || s[0] == '.' || s[0] == '-') return 0;
  for (; *s; s++, n++) {
    char c = *s;
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
          c == '_' || c == '.'))
      return 0;
  }
  return n <= maxlen;
}

void rbl__gen_run_id(char out[40]) {
  unsigned char r[8];
  if (getrandom(r, sizeof r, GRND_NONBLOCK) != (ssize_t)sizeof r) {
    uint64_t x = uv_hrtime() ^ (uint64_t)getpid();
    memcpy(r, &x, sizeof r);
  }
  time_t now = time(NULL);
  struct tm tm;
  gmtime_r(&now, &tm);
  char ts[20];
  strftime(ts, sizeof ts, "%Y%m%dT%H%M%SZ", &tm);
  snprintf(out, 40, "run-%s-%02x%02x%02x%02x", ts, r[0], r[1], r[2], r[3]);
}

static void iso_now(char out[32]) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  struct tm tm;
  gmtime_r(&ts.tv_sec, &tm);
  strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static int mkdir_parent(const char *path) {
  char dir[4096];
  snprintf(dir, sizeof dir, "%s", path);
  char *slash = strrchr(dir, '/');
  if (!slash || slash == dir) return 0;
  *slash = 0;
  for (char *p = dir + 1; *p; p++) {
    if (*p == '/') {
      *p = 0;
      if (mkdir(dir, 0750) != 0 && errno != EEXIST) return -1;
      *p = '/';
    }
  }
  if (mkdir(dir, 0750) != 0 && errno != EEXIST) return -1;
  return 0;
}

/* The user running rbl (the run's info and its run_start record): looked up once, since each
 * getpwuid reads the name service's configuration and /etc/passwd again. */
static const char *user_name(void) {
  static char name[256];
  if (!name[0]) {
    struct passwd *pw = getpwuid(getuid());
    snprintf(name, sizeof name, "%s", pw && pw->pw_name ? pw->pw_name : "?");
  }
  return name;
}

static void push_names(lua_State *L, const char *const *names, int n, const char *field) {
  if (n == 0) return; /* absent, not an empty table (which the report would write as {}) */
  lua_createtable(L, n, 0);
  for (int i = 0; i < n; i++) {
    lua_pushstring(L, names[i]);
    lua_rawseti(L, -2, i + 1);
  }
  lua_setfield(L, -2, field);
}

/* info.select = {only = {...}, from = name, skip = {...}} when any was given. */
static void push_select(lua_State *L, const rbl_run_opts *o) {
  if (!o->nonly && !o->nskip && !o->from) return;
  lua_createtable(L, 0, 3);
  push_names(L, o->only, o->nonly, "only");
  push_names(L, o->skip, o->nskip, "skip");
  if (o->from) {
    lua_pushstring(L, o->from);
    lua_setfield(L, -2, "from");
  }
  lua_setfield(L, -2, "select");
}

void rbl__push_info(run_ctx *c) {
  lua_State *L = c->e->L;
  lua_createtable(L, 0, 12);
  lua_pushstring(L, c->incident);
  lua_setfield(L, -2, "incident");
  lua_pushstring(L, c->run_id);
  lua_setfield(L, -2, "run");
  lua_pushstring(L, c->started);
  lua_setfield(L, -2, "started_at");
  lua_pushnumber(L, (double)uv_hrtime() / 1e6);
  lua_setfield(L, -2, "t0_ms");
  lua_pushboolean(L, c->o->dry_run);
  lua_setfield(L, -2, "dry_run");
  lua_pushstring(L, c->sha);
  lua_setfield(L, -2, "runbook_sha256");
  if (c->plan_text) { /* --plan FILE: checked by the DSL before anything runs */
    lua_pushlstring(L, c->plan_text, c->plan_len);
    lua_setfield(L, -2, "plan_text");
    lua_pushstring(L, c->o->plan_in);
    lua_setfield(L, -2, "plan_path");
  }
  lua_pushstring(L, c->default_id);
  lua_setfield(L, -2, "default_id");
  lua_getfield(L, LUA_REGISTRYINDEX, "rbl.tenants");
  lua_pushvalue(L, -1);
  lua_setfield(L, -3, "tenants");
  /* tenant_label: the one tenant, or the list joined with commas */
  char label[4096] = "";
  size_t used = 0;
  lua_Integer n = (lua_Integer)lua_rawlen(L, -1);
  for (lua_Integer i = 1; i <= n; i++) {
    lua_rawgeti(L, -1, i);
    used += (size_t)snprintf(label + used, used < sizeof label ? sizeof label - used : 0, "%s%s",
                             i > 1 ? "," : "", lua_tostring(L, -1));
    lua_pop(L, 1);
    if (used >= sizeof label) break;
  }
  lua_pushstring(L, label);
  lua_setfield(L, -3, "tenant_label");
  lua_pop(L, 1);
  lua_createtable(L, 0, c->o->nparams);
  for (int i = 0; i < c->o->nparams; i++) {
    const char *kv = c->o->params[i], *eq = strchr(kv, '=');
    lua_pushlstring(L, kv, (size_t)(eq - kv));
    lua_pushstring(L, eq + 1);
    lua_rawset(L, -3);
  }
  lua_setfield(L, -2, "cli_params");
  push_select(L, c->o);
  if (c->resume) {
    rbl__resume_push(L, c->resume);
    lua_setfield(L, -2, "resume");
  }
  lua_pushboolean(L, c->o->yes);
  lua_setfield(L, -2, "yes");
  lua_pushstring(L, user_name());
  lua_setfield(L, -2, "user");
  lua_setfield(L, LUA_REGISTRYINDEX, "rbl.info");
}

int rbl__open_audit(run_ctx *c) {
  rbl_run_opts *o = c->o;
  if (o->audit_path)
    snprintf(c->audit_path, sizeof c->audit_path, "%s", o->audit_path);
  else
    snprintf(c->audit_path, sizeof c->audit_path, "audit/%s.jsonl", c->incident);
  if (mkdir_parent(c->audit_path) != 0)
    return rbl__fail(4, "audit: cannot create the directory of %s: %s", c->audit_path,
                     strerror(errno));
  /* A key file that is not there is the operator's mistake (exit 2), not a chain that could
   * not be written (4). */
  const char *keys[2][2] = {{"--audit-key", o->audit_key}, {"--sign-key", o->sign_key}};
  for (int k = 0; k < 2; k++)
    if (keys[k][1] && access(keys[k][1], R_OK) != 0)
      return rbl__fail(2, "%s %s: %s (give the path of the key file)", keys[k][0], keys[k][1],
                       strerror(errno));
  rbl_audit_opts ao = {.path = c->audit_path,
                       .incident = c->incident,
                       .run = c->run_id,
                       .hmac_key_file = o->audit_key,
                       .sign_key_file = o->sign_key};
  char err[512];
  int rc = rbl_audit_open(&c->e->audit, &ao, err, sizeof err);
  if (rc != 0) return rbl__fail(rc == RBL_EINVAL || rc == RBL_EDENIED ? 2 : 4, "%s", err);
  /* approvals reach this run through a socket beside its chain (docs/approvals.md) */
  char sock[128];
  if (rbl__approval_sock_path(c->audit_path, sock) == 0) {
    free(c->e->approval_sock);
    c->e->approval_sock = strdup(sock);
  }
  free(c->e->approval_incident);
  free(c->e->approval_run);
  free(c->e->approval_audit);
  c->e->approval_incident = strdup(c->incident);
  c->e->approval_run = strdup(c->run_id);
  c->e->approval_audit = strdup(c->audit_path);
  return 0;
}

/* The approval socket of the chain at audit_path: "<dir>/.<name>.approve" beside it, or, when
 * that path is too long for a unix socket, /tmp/rbl-approve-<first 16 hex of the SHA-256 of the
 * chain's real path>. Both `rbl run` and `rbl approve` derive it the same way. */
int rbl__approval_sock_path(const char *audit_path, char out[128]) {
  char real[4096];
  if (!realpath(audit_path, real)) return -1;
  char *slash = strrchr(real, '/');
  if (!slash) return -1;
  *slash = 0;
  int n = snprintf(out, 128, "%s/.%s.approve", real[0] ? real : "", slash + 1);
  *slash = '/';
  if (n > 0 && n < 100) return 0;
  char sha[72];
  rbl__sha256_hex(real, strlen(real), sha);
  snprintf(out, 128, "/tmp/rbl-approve-%.16s", sha + 7);
  return 0;
}

/* The run's --param pairs (what --resume runs again with), its step selection, and the run
 * it resumes. */
static void run_start_partial(run_ctx *c, cJSON *r) {
  rbl_run_opts *o = c->o;
  cJSON *ps = cJSON_AddObjectToObject(r, "params");
  for (int i = 0; i < o->nparams; i++) {
    const char *kv = o->params[i], *eq = strchr(kv, '=');
    char name[256];
    snprintf(name, sizeof name, "%.*s", (int)(eq - kv), kv);
    cJSON_DeleteItemFromObjectCaseSensitive(ps, name); /* the last --param wins, as in info */
    cJSON_AddStringToObject(ps, name, eq + 1);
  }
  if (o->nonly || o->nskip || o->from) {
    cJSON *sel = cJSON_AddObjectToObject(r, "select");
    cJSON_AddItemToObject(sel, "only", cJSON_CreateStringArray(o->only, o->nonly));
    cJSON_AddItemToObject(sel, "skip", cJSON_CreateStringArray(o->skip, o->nskip));
    if (o->from) cJSON_AddStringToObject(sel, "from", o->from);
  }
  if (c->resume) {
    cJSON *rs = cJSON_AddObjectToObject(r, "resumes");
    cJSON_AddStringToObject(rs, "run", c->resume->run);
  }
}

cJSON *rbl__run_start_record(run_ctx *c) {
  cJSON *r = cJSON_CreateObject();
  cJSON_AddStringToObject(r, "kind", "run_start");
  lua_State *L = c->e->L;
  lua_getfield(L, LUA_REGISTRYINDEX, "rbl.tenants");
  char err[64];
  cJSON_AddItemToObject(r, "tenants", rbl_json_from_lua(L, -1, 0, err, sizeof err));
  lua_pop(L, 1);
  cJSON *rb = cJSON_AddObjectToObject(r, "runbook");
  if (!c->runbook_id[0])
    snprintf(c->runbook_id, sizeof c->runbook_id, "%s",
             c->e->runbook_id[0] ? c->e->runbook_id : c->default_id);
  cJSON_AddStringToObject(rb, "id", c->runbook_id);
  char real[4096];
  cJSON_AddStringToObject(rb, "path", realpath(c->o->file, real) ? real : c->o->file);
  cJSON_AddStringToObject(rb, "sha256", c->sha);
  cJSON_AddStringToObject(r, "rbl_version", RBL_VERSION);
  char host[256] = "?";
  gethostname(host, sizeof host - 1);
  cJSON_AddStringToObject(r, "host", host);
  cJSON_AddStringToObject(r, "user", user_name());
  cJSON *argv = cJSON_AddArrayToObject(r, "argv");
  cJSON_AddItemToArray(argv, cJSON_CreateString("rbl"));
  cJSON_AddItemToArray(argv, cJSON_CreateString(c->cmd ? c->cmd : "run"));
  for (int i = 0; i < c->o->argc; i++)
    cJSON_AddItemToArray(argv, cJSON_CreateString(c->o->argv[i]));
  cJSON_AddBoolToObject(r, "dry_run", c->o->dry_run);
  cJSON_AddStringToObject(r, "started_at", c->started);
  run_start_partial(c, r);
  return r;
}

/* Builds the book, the sandbox env and the chunk; leaves runbook.main, book, chunk on the stack. */
int rbl__load_runbook(run_ctx *c) {
  lua_State *L = c->e->L;
  /* rbl's own modules: what they allocate stays alive, so a collection here is wasted work */
  lua_gc(L, LUA_GCSTOP);
  lua_getglobal(L, "require");
  lua_pushliteral(L, "rbl.entry");
  int st = lua_pcall(L, 1, 1, 0);
  lua_gc(L, LUA_GCRESTART);
  if (st != LUA_OK) return rbl__fail(2, "internal: %s", lua_tostring(L, -1));
  lua_getfield(L, -1, "prepare");
  lua_pushstring(L, c->default_id);
  if (lua_pcall(L, 1, 3, 0) != LUA_OK) /* -> book, extras, lazy */
    return rbl__fail(2, "internal: %s", luaL_tolstring(L, -1, NULL));
  rbl_sandbox_push_env_lazy(L); /* extras, lazy -> env */
  char chunk[4200];
  snprintf(chunk, sizeof chunk, "@%s", c->o->file);
  if (rbl_sandbox_load(L, c->src, c->srclen, chunk, -1) != LUA_OK)
    return rbl__fail(2, "%s", lua_tostring(L, -1));
  lua_remove(L, -2); /* env */
  /* stack: entry, book, chunk */
  lua_getfield(L, -3, "main");
  lua_insert(L, -3); /* entry, main, book, chunk */
  lua_remove(L, -4);
  return 0;
}

rbl_engine *rbl__setup_engine(rbl_run_opts *o) {
  rbl_limits lim;
  rbl__default_limits(&lim);
  rbl_engine *e = rbl__engine_new(&lim);
  if (!e) return NULL;
  lua_State *L = e->L;
  lua_gc(L, LUA_GCSTOP); /* the standard library and rbl's tables: all of it stays alive */
  luaL_openlibs(L);
  rbl__open_modules(L);
  rbl_sandbox_init(L);
  lua_gc(L, LUA_GCRESTART);
  e->dry_run = o->dry_run;
  e->quiet = o->quiet;
  e->progress_json = o->progress_json;
  e->color = isatty(2) && !getenv("NO_COLOR");
  return e;
}

int rbl__exit_code_for(rbl_engine *e, const char *outcome) {
  if (e->killed == RBL_KILL_AUDIT) return 4;
  if (e->killed || e->deadline_hit) return 3; /* stopped by its deadline, rolled back or not */
  return outcome && !strcmp(outcome, "resolved") ? 0 : 1;
}

void rbl__default_id_of(const char *file, char out[128]) {
  const char *base = strrchr(file, '/');
  base = base ? base + 1 : file;
  snprintf(out, 128, "%s", base);
  char *dot = strrchr(out, '.');
  if (dot && dot != out) *dot = 0;
}

char *rbl__dir_of(const char *file) {
  char real[4096];
  if (!realpath(file, real)) return strdup(".");
  char *slash = strrchr(real, '/');
  if (slash == real)
    slash[1] = 0;
  else if (slash)
    *slash = 0;
  return strdup(real);
}

/* The setup every run shares: engine, config and limits, tenants, the info table. On failure
 * returns the exit status (c->e is NULL when even the engine could not be made). */
/* The run's identity: its id, the incident (validated: it names the chain file) and the start
 * time. Returns 0, or the exit status after printing why. */
int rbl__init_identity(run_ctx *c) {
  rbl__gen_run_id(c->run_id);
  const char *inc = c->o->incident;
  if (inc && !valid_id(inc, 128))
    return rbl__fail(2, "--incident '%s': use letters, digits, '.', '_' and '-' (at most 128)",
                     inc);
  snprintf(c->incident, sizeof c->incident, "%s", inc ? inc : c->run_id);
  iso_now(c->started);
  return 0;
}

int rbl__prepare_run(run_ctx *c) {
  rbl_engine *e = c->e = rbl__setup_engine(c->o);
  if (!e) return rbl__fail(2, "out of memory");
  e->runbook_dir = rbl__dir_of(c->o->file);
  int rc = rbl__load_config(e, c->o->config_path);
  if (!rc) rc = rbl__apply_limits(e);
  if (!rc) rc = rbl__resolve_tenants(e, c->o);
  if (!rc) rbl__push_info(c);
  return rc;
}

int rbl__chain_changed(rbl_engine *e, cJSON *end) {
  char msg[1200];
  if (!e->audit || !rbl_audit_changed(e->audit, msg, sizeof msg)) return 0;
  rbl__fail(0,
            "the audit chain was changed by someone else while this run held it: %s; its "
            "records after that point cannot be trusted: run rbl audit verify on it",
            msg);
  cJSON_AddStringToObject(end, "chain_changed", msg);
  return 1;
}

/* Drives a prepared run to its end: stack [main, book, arg] and an open audit chain. Writes
 * run_start, runs main(book, arg) as the main task, writes the report and run_end, closes the
 * chain and frees the engine. Returns the exit status. */
/* The run's run_start record, built when its first record is written: by then the top-level
 * code has declared runbook{} (it comes before any primitive call), so the chain, the progress
 * and the report name one runbook id, runbook{}'s. */
static cJSON *drive_start_record(void *ud) {
  run_ctx *c = ud;
  rbl_engine *e = c->e;
  cJSON *r = rbl__run_start_record(c);
  if (e->progress_json) {
    cJSON *ev = cJSON_CreateObject();
    cJSON_AddStringToObject(ev, "event", "run_start");
    cJSON_AddStringToObject(ev, "incident", c->incident);
    cJSON_AddStringToObject(ev, "run", c->run_id);
    cJSON_AddStringToObject(ev, "runbook_id", c->runbook_id);
    cJSON_AddItemToObject(ev, "tenants",
                          cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(r, "tenants"), 1));
    cJSON_AddBoolToObject(ev, "dry_run", c->o->dry_run);
    cJSON_AddStringToObject(ev, "audit", c->audit_path);
    rbl__progress_event(e, ev);
  } else {
    rbl__progress(e, "rbl: %s  tenant %s  incident %s%s", c->runbook_id,
                  e->root.tenant ? e->root.tenant : "(several)", c->incident,
                  c->o->dry_run ? "  [dry run]" : "");
  }
  if (!c->confirm) return r;
  /* the question asked before the run follows run_start at once, before any other record */
  rbl__audit(e, r);
  rbl__confirm_records(c);
  return NULL;
}

int rbl__drive_run(run_ctx *c) {
  rbl_engine *e = c->e;
  e->start_record = drive_start_record;
  e->start_ud = c;
  /* the chain is writable before anything runs; a new file's directory sync goes on beside the
   * run until the first intent's sync (or the end) waits for it */
  if (rbl_audit_sync_written(e->audit) != 0)
    rbl__kill(e, RBL_KILL_AUDIT, "%s", rbl_audit_error(e->audit));
  lua_State *L = e->L;
  lua_pushvalue(L, -2); /* keep the book below: main, book, chunk, book */
  lua_insert(L, -4);
  const char *outcome = NULL;
  char outbuf[32] = "";
  if (!e->killed) {
    int st = rbl__engine_run(e, 2);
    if (st == LUA_OK && lua_tostring(L, -1)) {
      snprintf(outbuf, sizeof outbuf, "%s", lua_tostring(L, -1));
      outcome = outbuf;
    } else if (!e->killed)
      rbl__fail(0, "internal error: %s", luaL_tolstring(L, -1, NULL));
  }
  lua_settop(L, 1);
  lua_getfield(L, 1, "usage_error"); /* --param / step names wrong, found only during the run */
  int usage = lua_isstring(L, -1) && !e->killed && !e->deadline_hit;
  if (usage) rbl__fail(0, "%s", lua_tostring(L, -1));
  lua_pop(L, 1);
  e->ended = 1;
  rbl_budget_unbind(e); /* the report and run_end are the host's, not the runbook's, memory */
  /* a run stopped by its deadline whose rollback ran in the grace is reported as stopped */
  const char *killed = e->killed ? e->kill_msg : e->deadline_hit ? e->deadline_msg : NULL;
  if (killed) { /* the reason may quote a request: masked like every text that leaves */
    char *m = rbl__mask(e, killed, strlen(killed), NULL);
    rbl__fail(0, "run stopped: %s", m ? m : killed);
    free(m);
  }
  int report_failed = rbl__write_report(c, killed) != 0;
  int code = usage ? 2 : rbl__exit_code_for(e, outcome);
  if (c->plan_failed && code == 0) code = 1; /* the plan asked for was not written */
  if (c->chain_changed) code = 4;
  if (report_failed && code != 3 && code != 2) code = 4; /* a report asked for, not written */
  if (e->audit && rbl_audit_close(e->audit) != 0 && code != 4) {
    rbl__fail(0, "audit: %s", rbl_audit_error(e->audit));
    code = 4;
  }
  e->audit = NULL;
  if (!e->progress_json) /* json: report.c wrote the run_end event */
    rbl__progress(e, "rbl: %s (exit %d)", killed ? "stopped" : outcome ? outcome : "failed", code);
  rbl__engine_free_at_exit(e); /* the command returns to main, which exits */
  return code;
}
