/* rbl repl: the same primitives, gate and audit as rbl run, one chunk at a time, with line
 * editing (libedit), completion, multi-line chunks, history that never holds a secret, and a
 * refused call that costs one line. Formatting, completion and help: lua/rbl/repl.lua. */
#include "audit.h"
#include "cli.h"
#include "engine_int.h"
#include "json.h"
#include "rbl.h"
#include "sandbox.h"
#include "session.h"
#include "textesc.h"

#include <dlfcn.h>
#include <editline/readline.h> /* types only: libedit is loaded with dlopen */
#include <errno.h>
#include <fcntl.h>
#include <lauxlib.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define REPL_HISTORY_MAX 1000

/* readline's callbacks take no user data: the session they complete for. Set while the
 * session reads a line, NULL otherwise. */
static rbl_engine *repl_engine;

/* Line editing from Debian's libedit, loaded only for an interactive REPL (linking it cost every
 * rbl start three more libraries); without it the prompt still works, unedited. readline and
 * add_history are needed for editing; completion and the history file use the rest if found. */
static struct {
  char *(*readline)(const char *prompt);
  int (*add_history)(const char *line);
  HIST_ENTRY *(*history_get)(int);
  char **(*completion_matches)(const char *, rl_compentry_func_t *);
  rl_completion_func_t **attempted_completion_function;
  int *completion_append_character, *attempted_completion_over, *history_base, *history_length;
  const char **basic_word_break_characters, **readline_name;
  char **completer_word_break_characters;
} el;

static void *el_sym(void *lib, const char *name) { return lib ? dlsym(lib, name) : NULL; }

static void load_libedit(void) {
  static int tried;
  if (tried) return;
  tried = 1;
  void *lib = dlopen("libedit.so.2", RTLD_NOW | RTLD_LOCAL);
  void *r = el_sym(lib, "readline"), *a = el_sym(lib, "add_history");
  void *h = el_sym(lib, "history_get"), *m = el_sym(lib, "rl_completion_matches");
  if (!r || !a) return;
  memcpy(&el.readline, &r, sizeof r);
  memcpy(&el.add_history, &a, sizeof a);
  if (h) memcpy(&el.history_get, &h, sizeof h);
  if (m) memcpy(&el.completion_matches, &m, sizeof m);
  el.attempted_completion_function = el_sym(lib, "rl_attempted_completion_function");
  el.completion_append_character = el_sym(lib, "rl_completion_append_character");
  el.attempted_completion_over = el_sym(lib, "rl_attempted_completion_over");
  el.history_base = el_sym(lib, "history_base");
  el.history_length = el_sym(lib, "history_length");
  el.basic_word_break_characters = el_sym(lib, "rl_basic_word_break_characters");
  el.completer_word_break_characters = el_sym(lib, "rl_completer_word_break_characters");
  el.readline_name = el_sym(lib, "rl_readline_name");
}

static void el_history(const char *line) {
  if (el.add_history) el.add_history(line);
}

/* ---- rbl.docs: the embedded doc pages (help()) ---- */

struct rbl_embedded_doc {
  const char *path;
  const char *text;
  size_t len;
};
extern const struct rbl_embedded_doc rbl_embedded_docs[];

static int l_docs_get(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  for (const struct rbl_embedded_doc *d = rbl_embedded_docs; d->path; d++) {
    if (strcmp(d->path, path) == 0) return lua_pushlstring(L, d->text, d->len), 1;
  }
  return lua_pushnil(L), 1;
}

static int luaopen_rbl_docs(lua_State *L) {
  static const luaL_Reg funcs[] = {{"get", l_docs_get}, {NULL, NULL}};
  luaL_newlib(L, funcs);
  return 1;
}

/* Calls repl.FN with nargs arguments on the stack; leaves one result (or the error). */
static int repl_lua(lua_State *L, const char *fn, int nargs) {
  lua_getglobal(L, "require");
  lua_pushliteral(L, "rbl.repl");
  lua_call(L, 1, 1);
  lua_getfield(L, -1, fn);
  lua_remove(L, -2);
  lua_insert(L, -1 - nargs);
  return lua_pcall(L, nargs, 1, 0);
}

/* Writes text to f with control characters escaped (line breaks and tabs kept): results may
 * hold what a remote system sent, and they must not drive the terminal. Secrets masked. */
static void repl_print(rbl_engine *e, FILE *f, const char *prefix, const char *s, size_t len) {
  size_t mlen = len, olen = 0;
  char *m = rbl__mask(e, s, len, &mlen);
  /* C0, DEL, C1 and invalid UTF-8 escaped; line breaks and tabs kept */
  char *safe = rbl_escape_ctl(m ? m : s, mlen, RBL_ESC_KEEP_NL, &olen);
  fprintf(f, "%s%.*s\n", prefix, (int)olen, safe ? safe : "(out of memory)");
  fflush(f);
  free(safe);
  free(m);
}

/* ---- history: one entry per line (\\ and line breaks escaped), 0600, secrets masked ---- */

static void repl_history_path(char *out, size_t n) {
  const char *p = getenv("RBL_HISTORY");
  if (p && *p) {
    snprintf(out, n, "%s", p);
    return;
  }
  const char *home = getenv("HOME");
  if (!home || !*home) {
    struct passwd *pw = getpwuid(getuid());
    home = pw ? pw->pw_dir : "/";
  }
  snprintf(out, n, "%s/.rbl_history", home);
}

static void repl_history_load(const char *path) {
  FILE *f = fopen(path, "re");
  if (!f) return;
  struct stat st;
  if (fstat(fileno(f), &st) == 0 && (st.st_mode & 077)) {
    fprintf(stderr, "rbl repl: %s was readable by others: now 0600\n", path);
    fchmod(fileno(f), 0600);
  }
  char *line = NULL;
  size_t cap = 0;
  ssize_t n;
  while ((n = getline(&line, &cap, f)) > 0) {
    if (line[n - 1] == '\n') line[--n] = 0;
    char *o = line;
    for (char *p = line; *p; p++) {
      if (*p == '\\' && p[1] == 'n')
        *o++ = '\n', p++;
      else if (*p == '\\' && p[1] == '\\')
        *o++ = '\\', p++;
      else
        *o++ = *p;
    }
    *o = 0;
    if (*line) el_history(line);
  }
  free(line);
  fclose(f);
}

/* Rewrites the history file with the last entries, each masked with every secret the session
 * registered (a value typed before secret() named it is masked too). */
static void repl_history_save(rbl_engine *e, const char *path) {
  if (!el.history_get || !el.history_base || !el.history_length) return;
  char tmp[4200];
  snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid());
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) return;
  fchmod(fd, 0600);
  FILE *f = fdopen(fd, "w");
  if (!f) {
    close(fd);
    unlink(tmp);
    return;
  }
  int len = *el.history_length, base = *el.history_base;
  int from = len > REPL_HISTORY_MAX ? len - REPL_HISTORY_MAX : 0;
  for (int i = from; i < len; i++) {
    HIST_ENTRY *h = el.history_get(base + i);
    if (!h || !h->line) continue;
    size_t mlen = strlen(h->line);
    char *m = rbl__mask(e, h->line, mlen, &mlen);
    const char *s = m ? m : h->line;
    for (size_t k = 0; k < mlen; k++) {
      if (s[k] == '\n')
        fputs("\\n", f);
      else if (s[k] == '\\')
        fputs("\\\\", f);
      else
        fputc(s[k], f);
    }
    fputc('\n', f);
    free(m);
  }
  if (fclose(f) != 0 || rename(tmp, path) != 0) unlink(tmp);
}

/* ---- completion ---- */

static char **repl_matches; /* the candidates of the current completion, freed as consumed */
static int repl_match_i;

static char *repl_generator(const char *text, int state) {
  if (!state) {
    for (int i = repl_matches ? repl_match_i : 0; repl_matches && repl_matches[i]; i++)
      free(repl_matches[i]);
    free(repl_matches);
    repl_matches = NULL;
    repl_match_i = 0;
    lua_State *L = repl_engine ? repl_engine->L : NULL;
    if (!L) return NULL;
    int top = lua_gettop(L);
    lua_pushvalue(L, 1); /* env */
    lua_pushstring(L, text);
    if (repl_lua(L, "complete", 2) == LUA_OK && lua_istable(L, -1)) {
      size_t n = lua_rawlen(L, -1);
      repl_matches = calloc(n + 1, sizeof *repl_matches);
      for (size_t i = 0; repl_matches && i < n; i++) {
        lua_rawgeti(L, -1, (lua_Integer)i + 1);
        repl_matches[i] = strdup(lua_tostring(L, -1) ? lua_tostring(L, -1) : "");
        lua_pop(L, 1);
      }
    }
    lua_settop(L, top);
  }
  if (!repl_matches || !repl_matches[repl_match_i]) return NULL;
  return repl_matches[repl_match_i++]; /* readline frees it */
}

static char **repl_complete(const char *text, int start, int end) {
  (void)start;
  (void)end;
  if (el.attempted_completion_over) *el.attempted_completion_over = 1; /* never file names */
  return el.completion_matches(text, repl_generator);
}

/* ---- reading and compiling ---- */

static char *repl_read(const char *prompt, int tty) {
  if (tty && el.readline) return el.readline(prompt);
  if (tty) {
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

enum { REPL_OK, REPL_INCOMPLETE, REPL_SYNTAX };

/* Compiles buf in the session's env (stack index 1): as an expression first ("=expr" or a bare
 * expression: its value prints), then as statements. A chunk whose error is at <eof> is
 * incomplete, the way lua.c decides it. Leaves the chunk, or the message, on the stack. */
static int repl_compile(lua_State *L, const char *buf, int *is_expr) {
  const char *src = buf[0] == '=' ? buf + 1 : buf;
  size_t len = strlen(src);
  char *expr = malloc(len + 8);
  if (!expr) return lua_pushliteral(L, "out of memory"), REPL_SYNTAX;
  memcpy(expr, "return ", 7);
  memcpy(expr + 7, src, len + 1);
  int st = rbl_sandbox_load(L, expr, len + 7, "=repl", 1);
  free(expr);
  *is_expr = st == LUA_OK;
  if (st == LUA_OK) return REPL_OK;
  lua_pop(L, 1);
  if (buf[0] == '=') src = buf; /* "=x y": report the statement's error */
  st = rbl_sandbox_load(L, src, strlen(src), "=repl", 1);
  if (st == LUA_OK) return REPL_OK;
  size_t mlen;
  const char *msg = lua_tolstring(L, -1, &mlen);
  if (st == LUA_ERRSYNTAX && msg && mlen >= 5 && strcmp(msg + mlen - 5, "<eof>") == 0)
    return lua_pop(L, 1), REPL_INCOMPLETE;
  return REPL_SYNTAX;
}

/* The "repl" record of a typed chunk or command: before it runs. */
static void repl_record(rbl_engine *e, const char *line, const char *error) {
  cJSON *rec = cJSON_CreateObject();
  cJSON_AddStringToObject(rec, "kind", "repl");
  cJSON_AddStringToObject(rec, "line", line);
  if (e->root.tenant) cJSON_AddStringToObject(rec, "tenant", e->root.tenant);
  if (error) cJSON_AddStringToObject(rec, "error", error);
  rbl__audit(e, rec);
}

/* After a line was refused or hit a limit: the session goes on (a broken chain does not). */
static int repl_after_kill(rbl_engine *e) {
  int code = e->killed == RBL_KILL_AUDIT ? 4 : 3;
  /* one line: the message already says "... refused: why" */
  repl_print(e, stderr, strstr(e->kill_msg, "refused") ? "" : "stopped: ", e->kill_msg,
             strlen(e->kill_msg));
  if (code == 4) return code;
  e->killed = RBL_KILL_NONE;
  e->kill_msg[0] = 0;
  lua_gc(e->L, LUA_GCCOLLECT);
  return code;
}

/* Runs the compiled chunk on the stack. Returns the line's status: 0 ok, 1 error, 3/4 killed. */
static int repl_eval(rbl_engine *e, const char *text, int is_expr) {
  lua_State *L = e->L;
  repl_record(e, text, NULL);
  lua_getglobal(L, "require");
  lua_pushliteral(L, "rbl.repl");
  lua_call(L, 1, 1);
  lua_getfield(L, -1, "line");
  lua_remove(L, -2);
  lua_insert(L, -2); /* line, chunk */
  lua_pushvalue(L, 1);
  lua_pushstring(L, text);
  lua_pushboolean(L, is_expr);
  int st = rbl__engine_run(e, 4);
  if (e->killed) {
    lua_settop(L, 1);
    return repl_after_kill(e);
  }
  size_t olen;
  const char *out = luaL_tolstring(L, -1, &olen);
  if (st != LUA_OK) {
    lua_getglobal(L, "require"); /* the message and the runbook's frames, not rbl's */
    lua_pushliteral(L, "rbl.report");
    lua_call(L, 1, 1);
    lua_getfield(L, -1, "clean_traceback");
    lua_pushvalue(L, -3);
    if (lua_pcall(L, 1, 1, 0) == LUA_OK) out = lua_tolstring(L, -1, &olen);
  }
  if (olen) repl_print(e, st == LUA_OK ? stdout : stderr, st == LUA_OK ? "" : "error: ", out, olen);
  lua_settop(L, 1);
  return st == LUA_OK ? 0 : 1;
}

/* ---- commands ---- */

static void repl_prompt(rbl_engine *e, run_ctx *c, char *out, size_t n) {
  snprintf(out, n, "rbl %s @ %s> ", e->root.tenant ? e->root.tenant : "(all tenants)", c->incident);
}

/* :tenant [NAME|-]: binds the session to one of its authorised tenants, audited. */
static int repl_tenant(rbl_engine *e, const char *arg) {
  lua_State *L = e->L;
  lua_getfield(L, LUA_REGISTRYINDEX, "rbl.tenants");
  int n = (int)lua_rawlen(L, -1), found = 0;
  if (!*arg) {
    printf("tenants:");
    for (int i = 1; i <= n; i++) {
      lua_rawgeti(L, -1, i);
      const char *t = lua_tostring(L, -1);
      printf(" %s%s", t, e->root.tenant && t && !strcmp(t, e->root.tenant) ? " (bound)" : "");
      lua_pop(L, 1);
    }
    printf("\n");
    lua_pop(L, 1);
    return 0;
  }
  for (int i = 1; i <= n && !found; i++) {
    lua_rawgeti(L, -1, i);
    found = lua_tostring(L, -1) && !strcmp(lua_tostring(L, -1), arg);
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  if (!strcmp(arg, "-") && n > 1) {
    free(e->root.tenant);
    e->root.tenant = NULL;
  } else if (!found) {
    fprintf(stderr,
            "error: %s is not a tenant of this session (:tenant lists them; start "
            "rbl repl with --tenant %s to add it)\n",
            arg, arg);
    return 1;
  } else {
    free(e->root.tenant);
    e->root.tenant = strdup(arg);
  }
  char line[600];
  snprintf(line, sizeof line, ":tenant %s", arg);
  repl_record(e, line, NULL);
  lua_pushstring(L, line);
  repl_lua(L, "note", 1); /* for :save */
  lua_settop(L, 1);
  printf("tenant %s\n", e->root.tenant ? e->root.tenant : "(none bound: every authorised tenant)");
  return e->killed ? repl_after_kill(e) : 0;
}

/* :save FILE: the successful lines as a runbook skeleton; never over an existing file. */
static int repl_save(rbl_engine *e, run_ctx *c, const char *file) {
  lua_State *L = e->L;
  if (!*file) return fprintf(stderr, "error: :save needs a FILE\n"), 1;
  char id[128];
  rbl__default_id_of(file, id);
  for (char *p = id; *p; p++)
    if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
          *p == '-' || *p == '_' || *p == '.'))
      *p = '-';
  lua_pushstring(L, id);
  lua_pushstring(L, c->incident);
  lua_pushstring(L, e->root.tenant);
  if (repl_lua(L, "skeleton", 3) != LUA_OK) {
    fprintf(stderr, "error: %s\n", lua_tostring(L, -1));
    lua_settop(L, 1);
    return 1;
  }
  size_t len;
  const char *text = lua_tolstring(L, -1, &len);
  char *m = rbl__mask(e, text, len, &len);
  int fd = open(file, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  int rc = 0;
  if (fd < 0 || write(fd, m ? m : text, len) != (ssize_t)len) {
    fprintf(stderr, "error: :save %s: %s%s\n", file, strerror(errno),
            errno == EEXIST ? " (choose another name: :save never overwrites)" : "");
    rc = 1;
  } else {
    printf("saved %s: review it, then rbl check %s\n", file, file);
  }
  if (fd >= 0) close(fd);
  free(m);
  lua_settop(L, 1);
  return rc;
}

static const char *repl_arg(const char *line, size_t cmdlen) {
  const char *a = line + cmdlen;
  while (*a == ' ' || *a == '\t')
    a++;
  return a;
}

static int repl_is(const char *line, const char *cmd) {
  size_t n = strlen(cmd);
  return !strncmp(line, cmd, n) && (line[n] == 0 || line[n] == ' ' || line[n] == '\t');
}

/* A ':' command. Returns its status; *quit set by :quit. */
static int repl_command(rbl_engine *e, run_ctx *c, const char *line, int *quit) {
  lua_State *L = e->L;
  if (repl_is(line, ":quit") || repl_is(line, ":q") || repl_is(line, ":exit")) return *quit = 1, 0;
  if (repl_is(line, ":tenant")) return repl_tenant(e, repl_arg(line, 7));
  if (repl_is(line, ":save")) return repl_save(e, c, repl_arg(line, 5));
  if (repl_is(line, ":json")) {
    lua_pushstring(L, repl_arg(line, 5));
    if (repl_lua(L, "json_command", 1) == LUA_OK && lua_tostring(L, -1))
      repl_print(e, stdout, "", lua_tostring(L, -1), strlen(lua_tostring(L, -1)));
    lua_settop(L, 1);
    return 0;
  }
  if (repl_is(line, ":help") || repl_is(line, ":h")) {
    lua_getglobal(L, "require");
    lua_pushliteral(L, "rbl.repl");
    lua_call(L, 1, 1);
    lua_getfield(L, -1, "COMMANDS");
    puts(lua_tostring(L, -1) ? lua_tostring(L, -1) : "");
    lua_settop(L, 1);
    return 0;
  }
  fprintf(stderr, "error: unknown command %s (:help lists them)\n", line);
  return 1;
}

/* help() and help(x) in the session's env: from the families registry and its doc pages. */
static int l_help(lua_State *L) {
  lua_settop(L, 1);
  lua_pushvalue(L, lua_upvalueindex(1)); /* env */
  lua_insert(L, 1);
  if (repl_lua(L, "help", 2) != LUA_OK) return lua_error(L);
  return 1;
}

/* The session's engine, config, tenants, chain and env (stack index 1). Returns 0 or the
 * exit status. */
static int repl_setup(run_ctx *c) {
  rbl_engine *e = c->e;
  lua_State *L = e->L;
  /* iac.* and require read only under --dir; without it (not the working directory) nothing */
  e->runbook_dir = c->o->dir ? strdup(c->o->dir) : NULL;
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  lua_pushcfunction(L, luaopen_rbl_docs);
  lua_setfield(L, -2, "rbl.docs");
  lua_pop(L, 1);
  int rc = rbl__load_config(e, c->o->config_path);
  if (!rc) rc = rbl__apply_limits(e);
  if (!rc) rc = rbl__resolve_tenants(e, c->o);
  if (!rc) rbl__push_info(c);
  if (!rc) rc = rbl__open_audit(c);
  if (rc) return rc;
  lua_getglobal(L, "require");
  lua_pushliteral(L, "rbl.entry");
  lua_call(L, 1, 1);
  lua_getfield(L, -1, "prepare");
  lua_pushliteral(L, "repl");
  if (lua_pcall(L, 1, 3, 0) != LUA_OK) /* -> book, extras, lazy */
    return rbl__fail(2, "internal: %s", luaL_tolstring(L, -1, NULL));
  rbl_sandbox_push_env_lazy(L); /* entry, book, env */
  lua_replace(L, 1);
  lua_settop(L, 1);           /* env */
  lua_pushliteral(L, "help"); /* a plain global of the session, like _ */
  lua_pushvalue(L, 1);
  lua_pushcclosure(L, l_help, 1);
  lua_rawset(L, 1);
  return 0;
}

static void repl_banner(rbl_engine *e, run_ctx *c) {
  lua_State *L = e->L;
  fprintf(stderr, "rbl repl %s: tenant %s, incident %s, audit %s\n", RBL_VERSION,
          e->root.tenant ? e->root.tenant : "(several: :tenant NAME binds one)", c->incident,
          c->audit_path);
  if (repl_lua(L, "banner", 0) == LUA_OK && lua_tostring(L, -1))
    repl_print(e, stderr, "", lua_tostring(L, -1), strlen(lua_tostring(L, -1)));
  lua_settop(L, 1);
  fprintf(stderr, "help() lists the primitives, :help the commands; Tab completes; Ctrl-D ends.\n");
}

int rbl_cmd_repl(rbl_run_opts *o) {
  run_ctx c;
  memset(&c, 0, sizeof c);
  c.o = o;
  c.cmd = "repl";
  o->file = "(repl)";
  rbl__sha256_hex("", 0, c.sha);
  if (rbl__init_identity(&c) != 0) return 2;
  snprintf(c.default_id, sizeof c.default_id, "repl");
  rbl_engine *e = c.e = rbl__setup_engine(o);
  if (!e) return rbl__fail(2, "out of memory");
  int rc = repl_setup(&c);
  if (rc) {
    rbl__engine_free(e);
    return rc;
  }
  lua_State *L = e->L;
  rbl__audit(e, rbl__run_start_record(&c));
  rbl_audit_sync(e->audit);
  int tty = isatty(0);
  char hist[4096] = "";
  if (tty) {
    load_libedit();
    repl_history_path(hist, sizeof hist);
    static char breaks[] = " \t\n\"\\'`@$><=;|&{(,+-*/%^#~[]}"; /* not . and : */
    if (el.readline_name) *el.readline_name = "rbl";
    if (el.completion_matches && el.attempted_completion_function) {
      *el.attempted_completion_function = repl_complete;
      if (el.completion_append_character) /* "kube.get(" is complete without a space */
        *el.completion_append_character = '\0';
      if (el.basic_word_break_characters) *el.basic_word_break_characters = breaks;
      if (el.completer_word_break_characters) *el.completer_word_break_characters = breaks;
    }
    repl_history_load(hist);
    repl_banner(e, &c);
  }
  int code = 0, quit = 0;
  char prompt[256], *line;
  char *buf = NULL;
  size_t blen = 0;
  while (!quit && e->killed != RBL_KILL_AUDIT) {
    repl_prompt(e, &c, prompt, sizeof prompt);
    repl_engine = e;
    line = repl_read(buf ? ">> " : prompt, tty);
    repl_engine = NULL;
    if (!line) break;
    size_t ll = strlen(line);
    char *nb = realloc(buf, blen + ll + 2);
    if (!nb) break;
    buf = nb;
    if (blen) buf[blen++] = '\n';
    memcpy(buf + blen, line, ll + 1);
    blen += ll;
    free(line);
    if (blen == strspn(buf, " \t\n")) { /* nothing typed */
      free(buf), buf = NULL, blen = 0;
      continue;
    }
    if (buf[0] == ':') {
      if (tty) el_history(buf);
      code = repl_command(e, &c, buf, &quit);
    } else {
      int is_expr = 0, st = repl_compile(L, buf, &is_expr);
      if (st == REPL_INCOMPLETE) continue;
      if (tty) el_history(buf);
      if (st == REPL_SYNTAX) {
        repl_record(e, buf, "syntax");
        repl_print(e, stderr, "error: ", lua_tostring(L, -1), strlen(lua_tostring(L, -1)));
        lua_settop(L, 1);
        code = 2;
      } else {
        code = repl_eval(e, buf, is_expr);
      }
    }
    free(buf), buf = NULL, blen = 0;
  }
  free(buf);
  if (tty) repl_history_save(e, hist);
  e->ended = 1;
  cJSON *end = cJSON_CreateObject();
  cJSON_AddStringToObject(end, "kind", "run_end");
  cJSON_AddStringToObject(end, "outcome", e->killed ? "refused" : "ended");
  if (e->killed) cJSON_AddStringToObject(end, "reason", e->kill_msg);
  if (rbl__chain_changed(e, end)) code = 4; /* someone else changed the chain meanwhile */
  cJSON_AddNumberToObject(end, "exit_code", code);
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
