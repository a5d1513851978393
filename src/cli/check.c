/* rbl check: a linter. Each runbook is parsed, checked statically against the families
 * registry (unknown globals and fields, with did-you-mean: lua/rbl/lint.lua), then loaded with
 * every primitive inert and its structure checked. A config file is recognised and checked as
 * one (its keys, with did-you-mean). */
#include "audit.h"
#include "cli.h"
#include "engine_int.h"
#include "families.h"
#include "json.h"
#include "rbl.h"
#include "sandbox.h"
#include "session.h"

#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const config_keys[] = {"tenants", "exec",    "limits", "labels", "docker",
                                          "kube",    "secrets", "prom",   "notify", "serve"};

static void check_add_name(const char *name, void *ud) {
  lua_State *L = ud;
  lua_pushstring(L, name);
  lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
}

/* Pushes the list of every name a runbook can reach: the sandbox's base names and the
 * families registry's globals (what `rbl check --list-globals` prints). */
static void check_push_known(lua_State *L) {
  lua_newtable(L);
  rbl_sandbox_each_name(check_add_name, L);
  for (const rbl_family *f = rbl_families; f->name; f++) {
    const char *s = f->globals;
    while (*s) {
      s += strspn(s, " ");
      size_t n = strcspn(s, " ");
      if (!n) break;
      lua_pushlstring(L, s, n);
      lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
      s += n;
    }
  }
}

/* Calls lint.FN(src, arg...) with nargs more arguments already on the stack; leaves the result. */
static int check_lint_call(lua_State *L, const char *fn, const char *src, size_t len, int nargs) {
  lua_getglobal(L, "require");
  lua_pushliteral(L, "rbl.lint");
  lua_call(L, 1, 1);
  lua_getfield(L, -1, fn);
  lua_remove(L, -2);
  lua_pushlstring(L, src, len);
  for (int i = 0; i < nargs; i++)
    lua_pushvalue(L, -2 - nargs);
  int st = lua_pcall(L, 1 + nargs, 1, 0);
  for (int i = 0; i < nargs; i++)
    lua_remove(L, -2);
  return st;
}

/* Prints the static problems of a runbook as file:line: message. Returns their count. */
static int check_static(lua_State *L, const char *file, const char *src, size_t len) {
  check_push_known(L);
  if (check_lint_call(L, "check", src, len, 1) != LUA_OK) {
    fprintf(stderr, "%s: internal: %s\n", file, lua_tostring(L, -1));
    lua_pop(L, 1);
    return 1;
  }
  int n = (int)lua_rawlen(L, -1);
  for (int i = 1; i <= n; i++) {
    lua_rawgeti(L, -1, i);
    lua_getfield(L, -1, "line");
    lua_getfield(L, -2, "message");
    fprintf(stderr, "%s:%d: %s\n", file, (int)lua_tointeger(L, -2), lua_tostring(L, -1));
    lua_pop(L, 3);
  }
  lua_pop(L, 1);
  return n;
}

/* A config file: loads it as rbl run would and checks its top-level keys. */
static int check_config(rbl_engine *e, const char *file) {
  lua_State *L = e->L;
  if (rbl__load_config(e, file) != 0) return 2;
  int bad = rbl__apply_limits(e) != 0; /* each limit a number in its range, no unknown key */
  lua_getfield(L, LUA_REGISTRYINDEX, "rbl.config");
  lua_pushnil(L);
  while (lua_next(L, -2)) {
    size_t i = 0, n = sizeof config_keys / sizeof *config_keys;
    const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
    while (k && i < n && strcmp(k, config_keys[i]) != 0)
      i++;
    if (!k || i == n) {
      lua_getglobal(L, "require");
      lua_pushliteral(L, "rbl.lint");
      lua_call(L, 1, 1);
      lua_getfield(L, -1, "suggest");
      lua_pushstring(L, k ? k : "?");
      lua_createtable(L, (int)n, 0);
      for (size_t j = 0; j < n; j++) {
        lua_pushstring(L, config_keys[j]);
        lua_rawseti(L, -2, (lua_Integer)j + 1);
      }
      lua_call(L, 2, 1);
      const char *s = lua_tostring(L, -1);
      fprintf(stderr, "%s: config: unknown key '%s'%s%s%s\n", file, k ? k : "(not a string)",
              s ? " (did you mean '" : "", s ? s : "", s ? "'?)" : "");
      lua_pop(L, 2);
      bad = 1;
    }
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  if (!bad) printf("%s: ok (config)\n", file);
  return bad ? 2 : 0;
}

static int check_is_config(lua_State *L, const char *src, size_t len) {
  if (check_lint_call(L, "is_config", src, len, 0) != LUA_OK) {
    lua_pop(L, 1);
    return 0;
  }
  int yes = lua_toboolean(L, -1);
  lua_pop(L, 1);
  return yes;
}

/* Evaluates the top-level code with inert primitives, then checks the structure. */
static int check_structure(run_ctx *c, const char *file) {
  lua_State *L = c->e->L;
  lua_getglobal(L, "require");
  lua_pushliteral(L, "rbl.entry");
  lua_call(L, 1, 1);
  lua_getfield(L, -1, "check");
  lua_remove(L, -2);
  lua_insert(L, -3); /* main, check, book, chunk */
  lua_remove(L, -4);
  int st = rbl__engine_run(c->e, 2);
  const char *msg = lua_tostring(L, -1);
  if (st != LUA_OK || (msg && *msg)) {
    fprintf(stderr, "%s: %s\n", file, st != LUA_OK ? luaL_tolstring(L, -1, NULL) : msg);
    return 2;
  }
  return 0;
}

static int check_one(const char *file, const char *config) {
  rbl_run_opts o;
  memset(&o, 0, sizeof o);
  o.file = file;
  o.quiet = 1;
  run_ctx c;
  memset(&c, 0, sizeof c);
  c.o = &o;
  char err[512];
  c.src = rbl__read_file(file, RUNBOOK_MAX, &c.srclen, err, sizeof err);
  if (!c.src) return rbl__fail(2, "%s", err);
  rbl__gen_run_id(c.run_id);
  snprintf(c.incident, sizeof c.incident, "check");
  rbl__default_id_of(file, c.default_id);
  rbl_engine *e = c.e = rbl__setup_engine(&o);
  e->check_mode = 1;
  e->limits.run_timeout = 10; /* top-level code with inert primitives: bounded like a run */
  e->runbook_dir = rbl__dir_of(file);
  lua_State *L = e->L;
  int rc = 0;
  if (check_is_config(L, c.src, c.srclen)) {
    rc = check_config(e, file);
    goto done;
  }
  if (config) {
    rc = rbl__load_config(e, config);
    if (rc) goto done;
  } else {
    lua_newtable(L);
    lua_setfield(L, LUA_REGISTRYINDEX, "rbl.config");
  }
  lua_createtable(L, 1, 0);
  lua_pushliteral(L, "check");
  lua_rawseti(L, -2, 1);
  lua_setfield(L, LUA_REGISTRYINDEX, "rbl.tenants");
  e->root.tenant = strdup("check");
  rbl__push_info(&c);
  rc = rbl__load_runbook(&c); /* syntax errors, as file:line */
  if (!rc && check_static(L, file, c.src, c.srclen) > 0) rc = 2;
  if (!rc) rc = check_structure(&c, file);
  if (!rc) printf("%s: ok\n", file);
done:
  rbl__engine_free(e);
  free(c.src);
  return rc;
}

int rbl_cmd_check(int argc, char **argv) {
  int rc = 0, files = 0;
  const char *config = NULL;
  for (int i = 0; i < argc; i++) {
    if (!strcmp(argv[i], "--config") || !strncmp(argv[i], "--config=", 9)) {
      config = argv[i][8] == '=' ? argv[i] + 9 : (i + 1 < argc ? argv[++i] : NULL);
      if (!config) return rbl__fail(2, "check: --config needs a FILE");
      int crc = check_one(config, NULL); /* the config itself is checked too */
      if (crc) return crc;
    } else if (argv[i][0] == '-' && argv[i][1]) {
      fprintf(stderr, "rbl check: unknown option '%s'\nTry 'rbl help check'.\n", argv[i]);
      return 2;
    }
  }
  for (int i = 0; i < argc; i++) {
    if (!strcmp(argv[i], "--config")) {
      i++;
      continue;
    }
    if (argv[i][0] == '-' && argv[i][1]) continue;
    files++;
    if (check_one(argv[i], config) != 0) rc = 2;
  }
  if (!files && !config) return rbl__fail(2, "check: missing FILE");
  return rc;
}
