/* rbl run and rbl check: config, tenants, audit start, the runbook's main task, the report. */
#include "audit.h"
#include "cli.h"
#include "engine_int.h"
#include "json.h"
#include "rbl.h"
#include "sandbox.h"

#include <errno.h>
#include <fnmatch.h>
#include <lauxlib.h>
#include <lualib.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <editline/readline.h>

#define RUNBOOK_MAX (4u << 20)

void rbl__open_modules(lua_State *L);

static int fail(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(int code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("rbl: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  return code;
}

static char *read_file(const char *path, size_t cap, size_t *len, char *err, size_t errlen) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    snprintf(err, errlen, "%s: %s", path, strerror(errno));
    return NULL;
  }
  char *buf = malloc(cap + 1);
  size_t n = buf ? fread(buf, 1, cap + 1, f) : 0;
  int rerr = ferror(f);
  fclose(f);
  if (!buf || rerr || n > cap) {
    snprintf(err, errlen, "%s: %s", path,
             !buf   ? "out of memory"
             : rerr ? "read error"
                    : "file too large");
    free(buf);
    return NULL;
  }
  buf[n] = 0;
  *len = n;
  return buf;
}

static void sha256_hex(const char *data, size_t len, char out[72]) {
  unsigned char md[32];
  unsigned int n = 0;
  EVP_Digest(data, len, md, &n, EVP_sha256(), NULL);
  strcpy(out, "sha256:");
  for (unsigned i = 0; i < n; i++)
    snprintf(out + 7 + 2 * i, 3, "%02x", md[i]);
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

static int valid_tenant(const char *s) {
  size_t n = strlen(s);
  if (n == 0 || n > 63) return 0;
  for (size_t i = 0; i < n; i++) {
    char c = s[i];
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-')) return 0;
  }
  return s[0] != '-' && s[n - 1] != '-';
}

/* ---- config: a Lua file, sandboxed, returning (or setting) the settings ---- */

static uint64_t config_deadline;
static void config_hook(lua_State *L, lua_Debug *ar) {
  if (uv_hrtime() > config_deadline) luaL_error(L, "config took longer than 5 s");
}

static int load_config(rbl_engine *e, const char *path) {
  lua_State *L = e->L;
  if (!path) path = getenv("RBL_CONFIG");
  if (!path || !*path) {
    lua_newtable(L);
    lua_setfield(L, LUA_REGISTRYINDEX, "rbl.config");
    return 0;
  }
  char err[512];
  size_t len;
  char *src = read_file(path, RUNBOOK_MAX, &len, err, sizeof err);
  if (!src) return fail(2, "config %s", err);
  lua_pushnil(L);
  rbl_sandbox_push_env(L);
  char chunk[600];
  snprintf(chunk, sizeof chunk, "@%s", path);
  int st = rbl_sandbox_load(L, src, len, chunk, -1);
  free(src);
  if (st != LUA_OK) return fail(2, "config: %s", lua_tostring(L, -1));
  config_deadline = uv_hrtime() + 5000000000ull;
  lua_sethook(L, config_hook, LUA_MASKCOUNT, 1000);
  st = lua_pcall(L, 0, 1, 0);
  lua_sethook(L, NULL, 0, 0);
  if (st != LUA_OK) return fail(2, "config: %s", luaL_tolstring(L, -1, NULL));
  if (!lua_istable(L, -1)) {
    /* No table returned: the globals the file set are the config. Read them raw through
     * the environment's own-globals table by iterating with the generic pairs. */
    lua_pop(L, 1);
    lua_newtable(L);
    static const char *const keys[] = {"tenants", "exec",    "limits",     "labels", "docker",
                                       "kube",    "secrets", "namespaces", NULL};
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

static void apply_limits(rbl_engine *e) {
  lua_State *L = e->L;
  rbl_limits *l = &e->limits;
  l->memory = (size_t)cfg_number(L, "limits", "memory_mb", (double)(l->memory >> 20)) << 20;
  l->step_timeout = cfg_number(L, "limits", "step_timeout", l->step_timeout);
  l->run_timeout = cfg_number(L, "limits", "run_timeout", l->run_timeout);
  l->output = (size_t)cfg_number(L, "limits", "output_kb", (double)(l->output >> 10)) << 10;
  l->exec_output = (size_t)cfg_number(L, "limits", "exec_output_kb", (double)(l->exec_output >> 10))
                   << 10;
  if (l->memory < (8u << 20)) l->memory = 8u << 20;
  e->mem_cap = l->memory;
}

/* ---- tenants: literal names or globs over the tenants the config knows ---- */

static int known_tenants(lua_State *L) {
  lua_getfield(L, LUA_REGISTRYINDEX, "rbl.config");
  lua_getfield(L, -1, "tenants");
  lua_remove(L, -2);
  lua_newtable(L);
  if (lua_istable(L, -2)) {
    int n = 0;
    lua_pushnil(L);
    while (lua_next(L, -3)) {
      const char *name = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : lua_tostring(L, -1);
      if (name) {
        lua_pushstring(L, name);
        lua_rawseti(L, -4, ++n);
      }
      lua_pop(L, 1);
    }
  }
  lua_remove(L, -2);
  return (int)lua_rawlen(L, -1);
}

static int resolve_tenants(rbl_engine *e, rbl_run_opts *o) {
  lua_State *L = e->L;
  int nknown = known_tenants(L);
  int known = lua_gettop(L);
  lua_newtable(L);
  int out = lua_gettop(L), n = 0;
  for (int i = 0; i < o->ntenants; i++) {
    const char *t = o->tenants[i];
    int matched = 0;
    if (strpbrk(t, "*?[")) {
      for (int k = 1; k <= nknown; k++) {
        lua_rawgeti(L, known, k);
        const char *name = lua_tostring(L, -1);
        if (fnmatch(t, name, 0) == 0) {
          lua_pushvalue(L, -1);
          lua_rawget(L, out);
          int dup = !lua_isnil(L, -1);
          lua_pop(L, 1);
          if (!dup) {
            lua_pushvalue(L, -1);
            lua_rawseti(L, out, ++n);
            lua_pushvalue(L, -1);
            lua_pushboolean(L, 1);
            lua_rawset(L, out);
          }
          matched = 1;
        }
        lua_pop(L, 1);
      }
      if (!matched) return fail(2, "--tenant '%s' matches no tenant the config knows", t);
      continue;
    }
    if (!valid_tenant(t))
      return fail(2, "--tenant '%s': not a valid tenant name (a-z, 0-9, '-', at most 63)", t);
    if (nknown > 0) {
      int found = 0;
      for (int k = 1; k <= nknown && !found; k++) {
        lua_rawgeti(L, known, k);
        found = !strcmp(lua_tostring(L, -1), t);
        lua_pop(L, 1);
      }
      if (!found) return fail(2, "unknown tenant '%s' (not in the config's tenants)", t);
    }
    lua_pushstring(L, t);
    lua_rawget(L, out);
    int dup = !lua_isnil(L, -1);
    lua_pop(L, 1);
    if (dup) continue;
    lua_pushstring(L, t);
    lua_rawseti(L, out, ++n);
    lua_pushstring(L, t);
    lua_pushboolean(L, 1);
    lua_rawset(L, out);
  }
  /* Keep only the array part. */
  lua_createtable(L, n, 0);
  for (int i = 1; i <= n; i++) {
    lua_rawgeti(L, out, i);
    lua_rawseti(L, -2, i);
  }
  if (n == 1) {
    lua_rawgeti(L, -1, 1);
    e->root.tenant = strdup(lua_tostring(L, -1));
    lua_pop(L, 1);
  }
  lua_setfield(L, LUA_REGISTRYINDEX, "rbl.tenants");
  lua_settop(L, known - 1);
  return 0;
}

/* ---- state setup ---- */

static void gen_run_id(char out[40]) {
  unsigned char r[8];
  if (RAND_bytes(r, sizeof r) != 1) {
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

typedef struct run_ctx {
  rbl_run_opts *o;
  rbl_engine *e;
  char run_id[40];
  char incident[160];
  char started[32];
  char sha[72];
  char *src;
  size_t srclen;
  char default_id[128];
  char audit_path[4096];
  const char *cmd; /* the subcommand the run_start record names; NULL: "run" */
} run_ctx;

static void push_info(run_ctx *c) {
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
  lua_setfield(L, LUA_REGISTRYINDEX, "rbl.info");
}

static int open_audit(run_ctx *c) {
  rbl_run_opts *o = c->o;
  if (o->audit_path)
    snprintf(c->audit_path, sizeof c->audit_path, "%s", o->audit_path);
  else
    snprintf(c->audit_path, sizeof c->audit_path, "audit/%s.jsonl", c->incident);
  if (mkdir_parent(c->audit_path) != 0)
    return fail(4, "audit: cannot create the directory of %s: %s", c->audit_path, strerror(errno));
  rbl_audit_opts ao = {.path = c->audit_path,
                       .incident = c->incident,
                       .run = c->run_id,
                       .hmac_key_file = o->audit_key,
                       .sign_key_file = o->sign_key};
  char err[512];
  int rc = rbl_audit_open(&c->e->audit, &ao, err, sizeof err);
  if (rc != 0) return fail(rc == RBL_EINVAL || rc == RBL_EDENIED ? 2 : 4, "%s", err);
  return 0;
}

static cJSON *run_start_record(run_ctx *c) {
  cJSON *r = cJSON_CreateObject();
  cJSON_AddStringToObject(r, "kind", "run_start");
  lua_State *L = c->e->L;
  lua_getfield(L, LUA_REGISTRYINDEX, "rbl.tenants");
  char err[64];
  cJSON_AddItemToObject(r, "tenants", rbl_json_from_lua(L, -1, 0, err, sizeof err));
  lua_pop(L, 1);
  cJSON *rb = cJSON_AddObjectToObject(r, "runbook");
  cJSON_AddStringToObject(rb, "id", c->default_id);
  char real[4096];
  cJSON_AddStringToObject(rb, "path", realpath(c->o->file, real) ? real : c->o->file);
  cJSON_AddStringToObject(rb, "sha256", c->sha);
  cJSON_AddStringToObject(r, "rbl_version", RBL_VERSION);
  char host[256] = "?";
  gethostname(host, sizeof host - 1);
  cJSON_AddStringToObject(r, "host", host);
  struct passwd *pw = getpwuid(getuid());
  cJSON_AddStringToObject(r, "user", pw ? pw->pw_name : "?");
  cJSON *argv = cJSON_AddArrayToObject(r, "argv");
  cJSON_AddItemToArray(argv, cJSON_CreateString("rbl"));
  cJSON_AddItemToArray(argv, cJSON_CreateString(c->cmd ? c->cmd : "run"));
  for (int i = 0; i < c->o->argc; i++)
    cJSON_AddItemToArray(argv, cJSON_CreateString(c->o->argv[i]));
  cJSON_AddBoolToObject(r, "dry_run", c->o->dry_run);
  cJSON_AddStringToObject(r, "started_at", c->started);
  return r;
}

/* Builds the book, the sandbox env and the chunk; leaves runbook.main, book, chunk on the stack. */
static int load_runbook(run_ctx *c) {
  lua_State *L = c->e->L;
  lua_getglobal(L, "require");
  lua_pushliteral(L, "rbl.entry");
  if (lua_pcall(L, 1, 1, 0) != LUA_OK) return fail(2, "internal: %s", lua_tostring(L, -1));
  lua_getfield(L, -1, "prepare");
  lua_pushstring(L, c->default_id);
  if (lua_pcall(L, 1, 2, 0) != LUA_OK) /* -> book, extras */
    return fail(2, "internal: %s", luaL_tolstring(L, -1, NULL));
  rbl_sandbox_push_env(L); /* extras -> env */
  char chunk[4200];
  snprintf(chunk, sizeof chunk, "@%s", c->o->file);
  if (rbl_sandbox_load(L, c->src, c->srclen, chunk, -1) != LUA_OK)
    return fail(2, "%s", lua_tostring(L, -1));
  lua_remove(L, -2); /* env */
  /* stack: entry, book, chunk */
  lua_getfield(L, -3, "main");
  lua_insert(L, -3); /* entry, main, book, chunk */
  lua_remove(L, -4);
  return 0;
}

static int write_report(run_ctx *c, const char *killed) {
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
    fail(0, "report: %s", luaL_tolstring(L, -1, NULL));
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
      fail(0, "report %s: %s", c->o->report_path, txt ? strerror(errno) : err);
      rc = -1;
    }
    cJSON_free(txt);
  }
  lua_pop(L, 1);
  return rc;
}

static rbl_engine *setup_engine(rbl_run_opts *o) {
  rbl_limits lim;
  rbl__default_limits(&lim);
  rbl_engine *e = rbl__engine_new(&lim);
  if (!e) return NULL;
  lua_State *L = e->L;
  luaL_openlibs(L);
  rbl__open_modules(L);
  rbl_sandbox_init(L);
  e->dry_run = o->dry_run;
  e->quiet = o->quiet;
  e->color = isatty(2) && !getenv("NO_COLOR");
  return e;
}

static int exit_code_for(rbl_engine *e, const char *outcome) {
  if (e->killed == RBL_KILL_AUDIT) return 4;
  if (e->killed) return 3;
  return outcome && !strcmp(outcome, "resolved") ? 0 : 1;
}

static void default_id_of(const char *file, char out[128]) {
  const char *base = strrchr(file, '/');
  base = base ? base + 1 : file;
  snprintf(out, 128, "%s", base);
  char *dot = strrchr(out, '.');
  if (dot && dot != out) *dot = 0;
}

static char *dir_of(const char *file) {
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
static int init_identity(run_ctx *c) {
  gen_run_id(c->run_id);
  const char *inc = c->o->incident;
  if (inc && !valid_id(inc, 128))
    return fail(2, "--incident '%s': use letters, digits, '.', '_' and '-' (at most 128)", inc);
  snprintf(c->incident, sizeof c->incident, "%s", inc ? inc : c->run_id);
  iso_now(c->started);
  return 0;
}

static int prepare_run(run_ctx *c) {
  rbl_engine *e = c->e = setup_engine(c->o);
  if (!e) return fail(2, "out of memory");
  e->runbook_dir = dir_of(c->o->file);
  int rc = load_config(e, c->o->config_path);
  if (!rc) apply_limits(e);
  if (!rc) rc = resolve_tenants(e, c->o);
  if (!rc) push_info(c);
  return rc;
}

/* Drives a prepared run to its end: stack [main, book, arg] and an open audit chain. Writes
 * run_start, runs main(book, arg) as the main task, writes the report and run_end, closes the
 * chain and frees the engine. Returns the exit status. */
static int drive_run(run_ctx *c) {
  rbl_engine *e = c->e;
  rbl_run_opts *o = c->o;
  rbl__audit(e, run_start_record(c));
  if (!e->killed && rbl_audit_sync(e->audit) != 0)
    rbl__kill(e, RBL_KILL_AUDIT, "%s", rbl_audit_error(e->audit));
  rbl__progress(e, "rbl: %s  tenant %s  incident %s%s", c->default_id,
                e->root.tenant ? e->root.tenant : "(several)", c->incident,
                o->dry_run ? "  [dry run]" : "");
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
      fail(0, "internal error: %s", luaL_tolstring(L, -1, NULL));
  }
  lua_settop(L, 1);
  e->ended = 1;
  const char *killed = e->killed ? e->kill_msg : NULL;
  if (killed) fail(0, "run stopped: %s", killed);
  write_report(c, killed);
  int code = exit_code_for(e, outcome);
  if (e->audit && rbl_audit_close(e->audit) != 0 && code != 4) {
    fail(0, "audit: %s", rbl_audit_error(e->audit));
    code = 4;
  }
  e->audit = NULL;
  rbl__progress(e, "rbl: %s (exit %d)", killed ? "stopped" : outcome ? outcome : "failed", code);
  rbl__engine_free(e);
  return code;
}

int rbl_cmd_run(rbl_run_opts *o) {
  run_ctx c;
  memset(&c, 0, sizeof c);
  c.o = o;
  char err[512];
  c.src = read_file(o->file, RUNBOOK_MAX, &c.srclen, err, sizeof err);
  if (!c.src) return fail(2, "cannot read runbook %s", err);
  sha256_hex(c.src, c.srclen, c.sha);
  if (init_identity(&c) != 0) {
    free(c.src);
    return 2;
  }
  default_id_of(o->file, c.default_id);
  int rc = prepare_run(&c);
  rbl_engine *e = c.e;
  if (!e) {
    free(c.src);
    return rc;
  }
  if (!rc) rc = load_runbook(&c);
  if (!rc) rc = open_audit(&c);
  if (rc) {
    rbl__engine_free(e);
    free(c.src);
    return rc;
  }
  rc = drive_run(&c);
  free(c.src);
  return rc;
}

/* ---- rbl check ---- */

static int check_one(const char *file) {
  rbl_run_opts o;
  memset(&o, 0, sizeof o);
  o.file = file;
  o.quiet = 1;
  run_ctx c;
  memset(&c, 0, sizeof c);
  c.o = &o;
  char err[512];
  c.src = read_file(file, RUNBOOK_MAX, &c.srclen, err, sizeof err);
  if (!c.src) return fail(2, "%s", err);
  gen_run_id(c.run_id);
  snprintf(c.incident, sizeof c.incident, "check");
  default_id_of(file, c.default_id);
  rbl_engine *e = c.e = setup_engine(&o);
  e->check_mode = 1;
  e->runbook_dir = dir_of(file);
  lua_State *L = e->L;
  lua_newtable(L);
  lua_setfield(L, LUA_REGISTRYINDEX, "rbl.config");
  lua_createtable(L, 1, 0);
  lua_pushliteral(L, "check");
  lua_rawseti(L, -2, 1);
  lua_setfield(L, LUA_REGISTRYINDEX, "rbl.tenants");
  e->root.tenant = strdup("check");
  push_info(&c);
  int rc = load_runbook(&c);
  if (!rc) {
    lua_getglobal(L, "require");
    lua_pushliteral(L, "rbl.entry");
    lua_call(L, 1, 1);
    lua_getfield(L, -1, "check");
    lua_remove(L, -2);
    lua_insert(L, -3); /* main, check, book, chunk */
    lua_remove(L, -4);
    int st = rbl__engine_run(e, 2);
    const char *msg = lua_tostring(L, -1);
    if (st != LUA_OK || (msg && *msg)) {
      fprintf(stderr, "%s: %s\n", file, st != LUA_OK ? luaL_tolstring(L, -1, NULL) : msg);
      rc = 2;
    } else {
      printf("%s: ok\n", file);
    }
  }
  rbl__engine_free(e);
  free(c.src);
  return rc;
}

int rbl_cmd_check(int argc, char **argv) {
  int rc = 0;
  for (int i = 0; i < argc; i++)
    if (check_one(argv[i]) != 0) rc = 2;
  return rc;
}

/* ---- rbl repl ---- */

static char *repl_read(const char *prompt) {
  if (isatty(0)) return readline(prompt);
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
    fprintf(stderr, "%s\n", lua_tostring(L, -1));
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
  if (olen) fprintf(to, "%s%.*s\n", st == LUA_OK ? "" : "error: ", (int)olen, m ? m : out);
  fflush(to);
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
  sha256_hex("", 0, c.sha);
  if (init_identity(&c) != 0) return 2;
  snprintf(c.default_id, sizeof c.default_id, "repl");
  rbl_engine *e = c.e = setup_engine(o);
  if (!e) return fail(2, "out of memory");
  char cwd[4096];
  e->runbook_dir = strdup(getcwd(cwd, sizeof cwd) ? cwd : ".");
  lua_State *L = e->L;
  int rc = load_config(e, o->config_path);
  if (!rc) apply_limits(e);
  if (!rc) rc = resolve_tenants(e, o);
  if (!rc) push_info(&c);
  if (!rc) rc = open_audit(&c);
  if (!rc) {
    lua_getglobal(L, "require");
    lua_pushliteral(L, "rbl.entry");
    lua_call(L, 1, 1);
    lua_getfield(L, -1, "prepare");
    lua_pushliteral(L, "repl");
    if (lua_pcall(L, 1, 2, 0) != LUA_OK) rc = fail(2, "internal: %s", luaL_tolstring(L, -1, NULL));
  }
  if (rc) {
    rbl__engine_free(e);
    return rc;
  }
  rbl_sandbox_push_env(L); /* entry, book, env */
  lua_replace(L, 1);
  lua_settop(L, 1); /* env */
  rbl__audit(e, run_start_record(&c));
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
      if (isatty(0)) add_history(line);
      code = repl_eval(e, line);
    }
    free(line);
  }
  e->ended = 1;
  cJSON *end = cJSON_CreateObject();
  cJSON_AddStringToObject(end, "kind", "run_end");
  cJSON_AddStringToObject(end, "outcome", e->killed ? "refused" : "ended");
  if (e->killed) cJSON_AddStringToObject(end, "reason", e->kill_msg);
  rbl__audit(e, end);
  if (e->killed) fail(0, "session stopped: %s", e->kill_msg);
  if (rbl_audit_close(e->audit) != 0 && code != 4) {
    fail(0, "audit: %s", rbl_audit_error(e->audit));
    code = 4;
  }
  e->audit = NULL;
  rbl__engine_free(e);
  return code;
}

/* ---- embedded runs: a host module's main as the run (rbl rollback) ---- */

static int sha256_file(const char *path, char out[72]) {
  FILE *f = fopen(path, "rb");
  if (!f) return -1;
  EVP_MD_CTX *md = EVP_MD_CTX_new();
  unsigned char buf[65536], dig[32];
  unsigned int n = 0;
  size_t got;
  EVP_DigestInit_ex(md, EVP_sha256(), NULL);
  while ((got = fread(buf, 1, sizeof buf, f)) > 0)
    EVP_DigestUpdate(md, buf, got);
  int bad = ferror(f);
  fclose(f);
  EVP_DigestFinal_ex(md, dig, &n);
  EVP_MD_CTX_free(md);
  strcpy(out, "sha256:");
  for (unsigned i = 0; i < n; i++)
    snprintf(out + 7 + 2 * i, 3, "%02x", dig[i]);
  return bad ? -1 : 0;
}

/* require(host_module).prepare(arg) -> book; leaves main, book, arg on the stack. */
static int load_embedded_main(run_ctx *c, const char *host_module, const char *arg) {
  lua_State *L = c->e->L;
  lua_getglobal(L, "require");
  lua_pushstring(L, host_module);
  if (lua_pcall(L, 1, 1, 0) != LUA_OK) return fail(2, "internal: %s", lua_tostring(L, -1));
  lua_getfield(L, -1, "prepare");
  lua_pushstring(L, arg);
  if (lua_pcall(L, 1, 1, 0) != LUA_OK) return fail(2, "%s", luaL_tolstring(L, -1, NULL));
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
  if (sha256_file(o->file, c.sha) != 0)
    return fail(2, "cannot read %s: %s", o->file, strerror(errno));
  if (init_identity(&c) != 0) return 2;
  const char *dot = strrchr(host_module, '.');
  snprintf(c.default_id, sizeof c.default_id, "%s", dot ? dot + 1 : host_module);
  char *suffix = strstr(c.default_id, "_main");
  if (suffix && suffix[5] == 0) *suffix = 0; /* rbl.rollback_main -> "rollback" */
  c.cmd = c.default_id;
  int rc = prepare_run(&c);
  rbl_engine *e = c.e;
  if (!e) return rc;
  if (!rc) rc = load_embedded_main(&c, host_module, arg);
  if (!rc) rc = open_audit(&c);
  if (rc) {
    rbl__engine_free(e);
    return rc;
  }
  return drive_run(&c);
}
