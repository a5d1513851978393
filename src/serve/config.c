/* rbl serve's config: the serve table of the config file (evaluated in the same sandbox as for
 * rbl run), checked once at start into plain C structs; and route matching. */
#include "audit.h"
#include "cli.h"
#include "engine_int.h"
#include "serve.h"
#include "session.h"
#include "ossl_dl.h"

#include <errno.h>
#include <fcntl.h>
#include <lauxlib.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static int cfail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int cfail(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("rbl serve: config: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  return 2;
}

static int valid_label_name(const char *s) {
  if (!s || !*s || strlen(s) > 128) return 0;
  for (const char *p = s; *p; p++)
    if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || *p == '_' ||
          (p > s && *p >= '0' && *p <= '9')))
      return 0;
  return 1;
}

/* Absolute path of p, relative paths taken from the config file's directory. */
static char *abs_from(const char *dir, const char *p) {
  char buf[4096];
  if (p[0] == '/')
    snprintf(buf, sizeof buf, "%s", p);
  else
    snprintf(buf, sizeof buf, "%s/%s", dir, p);
  return strdup(buf);
}

static const char *opt_str(lua_State *L, int t, const char *k) {
  lua_getfield(L, t, k);
  const char *s = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
  lua_pop(L, 1); /* the string stays alive: t holds it */
  return s;
}

/* A number field: def when absent; -1 (after printing) when not a number in [lo, hi]. */
static double opt_num(lua_State *L, int t, const char *where, const char *k, double def, double lo,
                      double hi, int *bad) {
  lua_getfield(L, t, k);
  double v = def;
  if (!lua_isnil(L, -1)) {
    if (lua_type(L, -1) != LUA_TNUMBER || lua_tonumber(L, -1) < lo || lua_tonumber(L, -1) > hi) {
      cfail("%s.%s must be a number from %g to %g", where, k, lo, hi);
      *bad = 1;
    } else
      v = lua_tonumber(L, -1);
  }
  lua_pop(L, 1);
  return v;
}

/* A bearer token file (what: the config key, for messages): a regular file of at most 4 KiB,
 * chmod 600, at least 16 printable characters; trailing newlines dropped. */
static int read_token(const char *what, const char *path, char **out, size_t *outlen) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return cfail("%s %s: %s", what, path, strerror(errno));
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size > 4096) {
    close(fd);
    return cfail("%s %s: not a regular file of at most 4 KiB", what, path);
  }
  if (st.st_mode & 077) {
    close(fd);
    return cfail("%s %s is readable by group or others (mode %04o); run: chmod 600 %s", what, path,
                 (unsigned)(st.st_mode & 07777), path);
  }
  char buf[4097];
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n < 0) return cfail("%s %s: %s", what, path, strerror(errno));
  while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' '))
    n--;
  buf[n] = 0;
  if (n < 16) return cfail("%s %s: the token must be at least 16 characters", what, path);
  for (ssize_t i = 0; i < n; i++)
    if ((unsigned char)buf[i] <= 0x20 || (unsigned char)buf[i] >= 0x7f)
      return cfail("%s %s: the token must be printable ASCII without spaces", what, path);
  *out = strdup(buf);
  *outlen = (size_t)n;
  OPENSSL_cleanse(buf, sizeof buf);
  return *out ? 0 : cfail("out of memory");
}

/* serve.approve_tokens = { NAME = FILE, ... }: who may answer approvals over HTTP. Only digests
 * are kept. Each token must differ from the webhook token and from the others. */
static int load_approve_tokens(srv_config *c, lua_State *L, int s, const char *dir) {
  lua_getfield(L, s, "approve_tokens");
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    return 0;
  }
  if (!lua_istable(L, -1))
    return cfail("serve.approve_tokens must be a table of NAME = \"token file\"");
  int t = lua_gettop(L);
  lua_pushnil(L);
  while (lua_next(L, t)) {
    const char *name = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
    int ok = name && *name && strlen(name) <= 64 && lua_type(L, -1) == LUA_TSTRING;
    for (const char *q = name; ok && *q; q++)
      ok = (*q >= 'a' && *q <= 'z') || (*q >= 'A' && *q <= 'Z') || (*q >= '0' && *q <= '9') ||
           *q == '-' || *q == '_' || *q == '.' || *q == '@';
    if (!ok)
      return cfail("serve.approve_tokens wants NAME = \"token file\" pairs (NAME: at most 64 of "
                   "a-z A-Z 0-9 - _ . @)");
    char what[96], *tok = NULL;
    size_t tlen = 0;
    snprintf(what, sizeof what, "serve.approve_tokens.%s", name);
    char *path = abs_from(dir, lua_tostring(L, -1));
    int rc = read_token(what, path, &tok, &tlen);
    free(path);
    if (rc) return rc;
    srv_token *n = realloc(c->approve_tokens, (size_t)(c->napprove + 1) * sizeof *n);
    if (!n) {
      free(tok);
      return cfail("out of memory");
    }
    c->approve_tokens = n;
    srv_token *k = &c->approve_tokens[c->napprove];
    k->name = strdup(name);
    rbl_serve_token_digest(tok, tlen, k->digest);
    int same_hook = tlen == c->token_len && CRYPTO_memcmp(tok, c->token, tlen) == 0;
    OPENSSL_cleanse(tok, tlen);
    free(tok);
    c->napprove++;
    if (same_hook)
      return cfail("%s is the same token as serve.token_file: the webhook token must not be able "
                   "to approve writes; give approvers their own token",
                   what);
    for (int i = 0; i < c->napprove - 1; i++)
      if (!CRYPTO_memcmp(c->approve_tokens[i].digest, k->digest, 32))
        return cfail("%s and serve.approve_tokens.%s hold the same token: each name needs its own "
                     "(the token says who approved)",
                     what, c->approve_tokens[i].name);
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  return 0;
}

static int load_tenants(srv_config *c, lua_State *L, int cfg) {
  lua_getfield(L, cfg, "tenants");
  if (!lua_istable(L, -1)) {
    lua_pop(L, 1);
    return cfail("rbl serve needs the config's tenants list: an alert may only name a tenant the "
                 "config knows");
  }
  int t = lua_gettop(L);
  lua_pushnil(L);
  while (lua_next(L, t)) {
    const char *name = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : lua_tostring(L, -1);
    if (name) {
      char **n = realloc(c->tenants, (size_t)(c->ntenants + 1) * sizeof *n);
      if (!n) return cfail("out of memory");
      c->tenants = n;
      c->tenants[c->ntenants++] = strdup(name);
    }
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  if (c->ntenants == 0) return cfail("tenants is empty");
  return 0;
}

static int load_matches(srv_route *r, lua_State *L, int rt, const char *field, int is_re) {
  lua_getfield(L, rt, field);
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    return 0;
  }
  if (!lua_istable(L, -1))
    return cfail("route %s: %s must be a table of label = value", r->name, field);
  int t = lua_gettop(L);
  lua_pushnil(L);
  while (lua_next(L, t)) {
    if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TSTRING ||
        !valid_label_name(lua_tostring(L, -2)))
      return cfail("route %s: %s wants label names mapped to strings", r->name, field);
    srv_match *n = realloc(r->match, (size_t)(r->nmatch + 1) * sizeof *n);
    if (!n) return cfail("out of memory");
    r->match = n;
    srv_match *m = &r->match[r->nmatch];
    memset(m, 0, sizeof *m);
    m->label = strdup(lua_tostring(L, -2));
    m->value = strdup(lua_tostring(L, -1));
    m->is_re = is_re;
    if (is_re) {
      /* Anchored like Alertmanager's matchers: the whole value must match. */
      size_t len = strlen(m->value) + 8;
      char *pat = malloc(len);
      snprintf(pat, len, "^(%s)$", m->value);
      int rc = regcomp(&m->re, pat, REG_EXTENDED | REG_NOSUB);
      free(pat);
      if (rc) {
        char e[128];
        regerror(rc, &m->re, e, sizeof e);
        cfail("route %s: match_re.%s = '%s': %s", r->name, m->label, m->value, e);
        regfree(&m->re);
        free(m->label);
        free(m->value);
        return 2;
      }
    }
    r->nmatch++;
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  return 0;
}

static int load_route(srv_config *c, srv_route *r, lua_State *L, int rt, int idx, const char *dir,
                      const char *def_tenant_label) {
  char where[64];
  const char *name = opt_str(L, rt, "name");
  if (name) {
    for (const char *p = name; *p; p++)
      if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-' || *p == '_'))
        return cfail("serve.routes[%d].name '%s': use a-z, 0-9, '-' and '_'", idx, name);
    r->name = strdup(name);
  } else {
    snprintf(where, sizeof where, "route-%d", idx);
    r->name = strdup(where);
  }
  snprintf(where, sizeof where, "serve.routes[%d]", idx);
  const char *rb = opt_str(L, rt, "runbook");
  if (!rb) return cfail("%s: runbook is required (the runbook file this route runs)", where);
  r->runbook = abs_from(dir, rb);
  if (access(r->runbook, R_OK) != 0)
    return cfail("%s.runbook %s: %s", where, r->runbook, strerror(errno));
  const char *rr = opt_str(L, rt, "resolved_runbook");
  if (rr) {
    r->resolved_runbook = abs_from(dir, rr);
    if (access(r->resolved_runbook, R_OK) != 0)
      return cfail("%s.resolved_runbook %s: %s", where, r->resolved_runbook, strerror(errno));
  }
  const char *tl = opt_str(L, rt, "tenant_label");
  r->tenant_label = strdup(tl ? tl : def_tenant_label);
  if (!valid_label_name(r->tenant_label))
    return cfail("%s.tenant_label '%s' is not a label name", where, r->tenant_label);
  if (load_matches(r, L, rt, "match", 0) || load_matches(r, L, rt, "match_re", 1)) return 2;
  if (r->nmatch == 0)
    return cfail("%s: match or match_re must name at least one label (a route that matches every "
                 "alert is almost always a mistake)",
                 where);
  lua_getfield(L, rt, "params");
  if (lua_istable(L, -1)) {
    int t = lua_gettop(L);
    lua_pushnil(L);
    while (lua_next(L, t)) {
      if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TSTRING ||
          !valid_label_name(lua_tostring(L, -2)) || !valid_label_name(lua_tostring(L, -1)))
        return cfail("%s.params wants PARAM = \"label\" pairs (identifiers)", where);
      srv_param *n = realloc(r->params, (size_t)(r->nparams + 1) * sizeof *n);
      if (!n) return cfail("out of memory");
      r->params = n;
      memset(&r->params[r->nparams], 0, sizeof r->params[r->nparams]);
      r->params[r->nparams].name = strdup(lua_tostring(L, -2));
      r->params[r->nparams].label = strdup(lua_tostring(L, -1));
      r->nparams++;
      lua_pop(L, 1);
    }
  } else if (!lua_isnil(L, -1))
    return cfail("%s.params must be a table", where);
  lua_pop(L, 1);
  int bad = 0;
  r->cooldown = opt_num(L, rt, where, "cooldown", 600, 0, 86400 * 7, &bad);
  r->max_runs_per_hour = (int)opt_num(L, rt, where, "max_runs_per_hour", 4, 1, 100000, &bad);
  r->concurrency = (int)opt_num(L, rt, where, "concurrency", 1, 1, 1000, &bad);
  (void)c;
  return bad ? 2 : 0;
}

static int load_serve(srv_config *c, lua_State *L, int cfg, const char *dir) {
  lua_getfield(L, cfg, "serve");
  if (!lua_istable(L, -1)) return cfail("no serve = {...} table (see docs/serve.md)");
  int s = lua_gettop(L);
  lua_getfield(L, s, "ha");
  if (lua_istable(L, -1)) {
    int h = lua_gettop(L), bad = 0;
    const char *ns = opt_str(L, h, "lease_namespace");
    if (!ns) ns = "rbl-system";
    size_t nl = strlen(ns);
    int ok = nl > 0 && nl <= 63 && ns[0] != '-' && ns[nl - 1] != '-';
    for (const char *p = ns; ok && *p; p++)
      ok = (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-';
    if (!ok)
      return cfail("serve.ha.lease_namespace '%s' is not a namespace name (a DNS label: a-z, 0-9, "
                   "'-', at most 63)",
                   ns);
    c->ha_namespace = strdup(ns);
    c->ha_seconds = opt_num(L, h, "serve.ha", "lease_seconds", 15, 3, 3600, &bad);
    if (bad) return 2;
    const char *id = opt_str(L, h, "identity");
    char def[300];
    if (!id) {
      char host[256] = "";
      if (gethostname(host, sizeof host - 1) != 0 || !host[0]) snprintf(host, sizeof host, "rbl");
      snprintf(def, sizeof def, "%.200s-%d", host, (int)getpid());
      id = def;
    }
    size_t il = strlen(id);
    ok = il > 0 && il <= 128;
    for (const char *p = id; ok && *p; p++)
      ok = *p > 0x20 && *p < 0x7f && *p != '"' && *p != '\\';
    if (!ok)
      return cfail("serve.ha.identity '%s': use 1 to 128 printable characters without spaces or "
                   "quotes (default: host name and pid)",
                   id);
    c->ha_identity = strdup(id);
    c->ha = 1;
  } else if (!lua_isnil(L, -1))
    return cfail("serve.ha must be a table { lease_namespace = ..., lease_seconds = ..., "
                 "identity = ... }");
  lua_pop(L, 1);
  const char *tf = opt_str(L, s, "token_file");
  if (!tf) return cfail("serve.token_file is required (the bearer token Alertmanager sends)");
  char *tpath = abs_from(dir, tf);
  int rc = read_token("serve.token_file", tpath, &c->token, &c->token_len);
  free(tpath);
  if (!rc) rc = load_approve_tokens(c, L, s, dir);
  if (rc) return rc;
  const char *sp = opt_str(L, s, "spool");
  c->spool = abs_from(dir, sp ? sp : "spool");
  size_t sl = strlen(c->spool);
  while (sl > 1 && c->spool[sl - 1] == '/')
    c->spool[--sl] = 0;
  if (!c->listen) {
    const char *l = opt_str(L, s, "listen");
    c->listen = strdup(l ? l : "127.0.0.1:9095");
  }
  int bad = 0;
  c->max_concurrent = (int)opt_num(L, s, "serve", "max_concurrent", 8, 1, 1000, &bad);
  c->max_queued = (int)opt_num(L, s, "serve", "max_queued", 1000, 1, 1000000, &bad);
  c->max_body = (size_t)opt_num(L, s, "serve", "max_body_kb", 1024, 1, 65536, &bad) * 1024;
  c->drain_timeout = opt_num(L, s, "serve", "drain_timeout", 30, 0, 86400, &bad);
  c->compact_bytes =
      (size_t)opt_num(L, s, "serve", "spool_compact_kb", 65536, 16, 200 * 1024, &bad) * 1024;
  if (bad) return 2;
  const char *ak = opt_str(L, s, "audit_key");
  if (ak) {
    c->audit_key = abs_from(dir, ak);
    unsigned char *key = NULL;
    size_t klen = 0;
    char kerr[600];
    if (rbl_audit_load_key(c->audit_key, &key, &klen, kerr, sizeof kerr) != 0)
      return cfail("serve.audit_key: %s", kerr);
    OPENSSL_cleanse(key, klen);
    free(key);
  }
  lua_getfield(L, s, "tls");
  if (lua_istable(L, -1)) {
    int t = lua_gettop(L);
    const char *cert = opt_str(L, t, "cert"), *key = opt_str(L, t, "key");
    if (!cert || !key) return cfail("serve.tls needs both cert and key (PEM files)");
    c->tls_cert = abs_from(dir, cert);
    c->tls_key = abs_from(dir, key);
  } else if (!lua_isnil(L, -1))
    return cfail("serve.tls must be a table { cert = FILE, key = FILE }");
  lua_pop(L, 1);
  const char *orr = opt_str(L, s, "on_restart");
  if (orr && strcmp(orr, "interrupt") && strcmp(orr, "rerun"))
    return cfail("serve.on_restart must be \"interrupt\" (default) or \"rerun\", not '%s'", orr);
  c->on_restart_rerun = orr && !strcmp(orr, "rerun");
  const char *def_tl = "tenant";
  lua_getfield(L, cfg, "prom");
  if (lua_istable(L, -1)) {
    const char *p = opt_str(L, lua_gettop(L), "tenant_label");
    if (p) def_tl = p;
  }
  lua_getfield(L, s, "routes");
  if (!lua_istable(L, -1) || lua_rawlen(L, -1) == 0)
    return cfail("serve.routes must be a non-empty list of routes");
  int rt = lua_gettop(L);
  c->nroutes = (int)lua_rawlen(L, rt);
  c->routes = calloc((size_t)c->nroutes, sizeof *c->routes);
  if (!c->routes) return cfail("out of memory");
  for (int i = 0; i < c->nroutes; i++) {
    lua_rawgeti(L, rt, i + 1);
    if (!lua_istable(L, -1)) return cfail("serve.routes[%d] is not a table", i + 1);
    rc = load_route(c, &c->routes[i], L, lua_gettop(L), i + 1, dir, def_tl);
    if (rc) return rc;
    for (int j = 0; j < i; j++)
      if (!strcmp(c->routes[j].name, c->routes[i].name))
        return cfail("two routes are named '%s'", c->routes[i].name);
    lua_pop(L, 1);
  }
  return 0;
}

/* `rbl check FILE` in a child (the same binary): a route's runbook must load before serve takes
 * alerts for it. 0, or 2 after the check's own message. */
static int check_runbook(const char *where, const char *file) {
  char self[4096];
  ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
  if (n <= 0) return 0;
  self[n] = 0;
  fflush(stderr);
  pid_t pid = fork();
  if (pid < 0) return cfail("%s: cannot check %s: %s", where, file, strerror(errno));
  if (pid == 0) {
    int devnull = open("/dev/null", O_WRONLY);
    if (devnull >= 0) dup2(devnull, 1); /* its findings go to stderr */
    execl(self, self, "check", file, (char *)NULL);
    _exit(127);
  }
  int st = 0;
  while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {}
  if (WIFEXITED(st) && WEXITSTATUS(st) == 0) return 0;
  return cfail("%s: the runbook %s does not pass `rbl check` (above)", where, file);
}

/* One parameter line of `rbl run FILE --help` after its name: "TYPE[, required][, default X]
 * [, one of A, B]" and, after two spaces, the description. -> {type, required, choices}. */
static cJSON *parse_decl(const char *rest) {
  char buf[1024];
  snprintf(buf, sizeof buf, "%s", rest);
  buf[strcspn(buf, "\n")] = 0;
  char *desc = strstr(buf, "  ");
  if (desc) *desc = 0;
  cJSON *d = cJSON_CreateObject();
  char *sep = strstr(buf, ", ");
  if (sep) *sep = 0;
  cJSON_AddStringToObject(d, "type", buf);
  if (!sep) return d;
  char *more = sep + 2;
  if (!strncmp(more, "required", 8) && (more[8] == 0 || more[8] == ','))
    cJSON_AddBoolToObject(d, "required", 1);
  char *one = !strncmp(more, "one of ", 7) ? more : strstr(more, ", one of ");
  if (one) {
    one += one == more ? 7 : 9; /* "one of " is the last field: its choices are ", "-separated */
    cJSON *ch = cJSON_AddArrayToObject(d, "choices");
    for (char *p = one;;) {
      char *c = strstr(p, ", ");
      if (c) *c = 0;
      cJSON_AddItemToArray(ch, cJSON_CreateString(p));
      if (!c) break;
      p = c + 2;
    }
  }
  return d;
}

/* The parameters FILE declares, from `rbl run FILE --help` (a child of the same binary): one
 * "  NAME  TYPE..." line each under the "parameters" heading. Returns {name: decl} (parse_decl),
 * or NULL when the help could not be read. */
static cJSON *declared_params(const char *file) {
  char self[4096];
  ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
  int fds[2];
  if (n <= 0 || pipe(fds) != 0) return NULL;
  self[n] = 0;
  fflush(stderr);
  pid_t pid = fork();
  if (pid < 0) {
    close(fds[0]);
    close(fds[1]);
    return NULL;
  }
  if (pid == 0) {
    dup2(fds[1], 1);
    close(fds[0]);
    int devnull = open("/dev/null", O_WRONLY);
    if (devnull >= 0) dup2(devnull, 2);
    execl(self, self, "run", file, "--help", (char *)NULL);
    _exit(127);
  }
  close(fds[1]);
  FILE *f = fdopen(fds[0], "r");
  char line[1024];
  cJSON *out = cJSON_CreateObject();
  int in = 0;
  while (f && out && fgets(line, sizeof line, f)) {
    if (!strncmp(line, "parameters", 10)) {
      in = 1;
      continue;
    }
    if (in && line[0] != ' ') in = 0;
    if (!in) continue;
    char name[130];
    int used = 0;
    if (sscanf(line, " %129s %n", name, &used) != 1 || !used) continue;
    cJSON_AddItemToObject(out, name, parse_decl(line + used));
  }
  if (f)
    fclose(f);
  else
    close(fds[0]);
  int st = 0;
  while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {}
  if (!(WIFEXITED(st) && WEXITSTATUS(st) == 0)) {
    cJSON_Delete(out);
    return NULL;
  }
  return out;
}

/* Every param the route passes must be one the runbook declares, and every parameter the runbook
 * requires must be one the route passes. Keeps each declaration in decl[which]. */
static int check_params(const char *where, srv_route *r, const char *file, int which) {
  cJSON *decl = declared_params(file);
  if (!decl)
    return cfail("%s: cannot read the parameters %s declares (rbl run FILE --help)", where, file);
  char names[2048] = "";
  const cJSON *d;
  cJSON_ArrayForEach(d, decl) {
    size_t l = strlen(names);
    snprintf(names + l, sizeof names - l, " %s", d->string);
  }
  int rc = 0;
  for (int i = 0; i < r->nparams && !rc; i++) {
    d = cJSON_GetObjectItemCaseSensitive(decl, r->params[i].name);
    if (!d)
      rc = cfail("%s.params.%s: the runbook %s declares no parameter '%s' (it declares:%s)", where,
                 r->params[i].name, file, r->params[i].name, names[0] ? names : " none");
    else
      r->params[i].decl[which] = cJSON_Duplicate(d, 1);
  }
  cJSON_ArrayForEach(d, decl) {
    if (rc || !cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(d, "required"))) continue;
    int mapped = 0;
    for (int i = 0; i < r->nparams; i++)
      mapped |= !strcmp(r->params[i].name, d->string);
    if (!mapped)
      rc = cfail("%s: the runbook %s requires the parameter '%s' and the route maps no label to "
                 "it: add params = { %s = \"LABEL\" } (every run would refuse to start)",
                 where, file, d->string, d->string);
  }
  cJSON_Delete(decl);
  return rc;
}

/* As lua/rbl/params.lua converts a --param: a number is what Lua's tonumber takes (finite), a
 * boolean one of true/yes/1/false/no/0, and a value with choices one of them. */
const char *rbl_serve_param_refused(const cJSON *decl, const char *v) {
  if (!decl) return NULL;
  const char *type = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(decl, "type"));
  double num = 0;
  if (type && !strcmp(type, "number")) {
    char *end = NULL;
    errno = 0;
    num = strtod(v, &end);
    while (end && (*end == ' ' || *end == '\t'))
      end++;
    if (!*v || !end || *end || num != num || num - num != 0) return "is not a number";
  } else if (type && !strcmp(type, "boolean")) {
    static const char *const ok[] = {"true", "yes", "1", "false", "no", "0"};
    int found = 0;
    for (int i = 0; i < 6; i++)
      found |= !strcmp(v, ok[i]);
    if (!found) return "is not a boolean (true/false, yes/no, 1/0)";
    return NULL;
  }
  const cJSON *ch = cJSON_GetObjectItemCaseSensitive(decl, "choices"), *c;
  if (!cJSON_IsArray(ch)) return NULL;
  cJSON_ArrayForEach(c, ch) {
    const char *s = cJSON_GetStringValue(c);
    if (!s) continue;
    if (type && !strcmp(type, "number") ? strtod(s, NULL) == num : !strcmp(s, v)) return NULL;
  }
  return "is not one of the runbook's choices";
}

int rbl_serve_config_load(srv_config *c, const char *path, const char *listen) {
  memset(c, 0, sizeof *c);
  char real[4096];
  if (!path) return cfail("--config FILE is required");
  if (!realpath(path, real)) return cfail("%s: %s", path, strerror(errno));
  c->config_path = strdup(real);
  if (listen) c->listen = strdup(listen);
  rbl_run_opts o;
  memset(&o, 0, sizeof o);
  o.quiet = 1;
  rbl_engine *e = rbl__setup_engine(&o);
  if (!e) return cfail("out of memory");
  int rc = rbl__load_config(e, c->config_path);
  if (!rc) {
    lua_State *L = e->L;
    lua_getfield(L, LUA_REGISTRYINDEX, "rbl.config");
    int cfg = lua_gettop(L);
    char *dir = rbl__dir_of(c->config_path);
    rc = load_tenants(c, L, cfg);
    if (!rc) rc = load_serve(c, L, cfg, dir);
    free(dir);
  }
  rbl__engine_free(e);
  for (int i = 0; !rc && i < c->nroutes; i++) {
    char where[64];
    snprintf(where, sizeof where, "serve.routes[%d]", i + 1);
    rc = check_runbook(where, c->routes[i].runbook);
    if (!rc) rc = check_params(where, &c->routes[i], c->routes[i].runbook, 0);
    if (!rc && c->routes[i].resolved_runbook)
      rc = check_runbook(where, c->routes[i].resolved_runbook);
    if (!rc && c->routes[i].resolved_runbook)
      rc = check_params(where, &c->routes[i], c->routes[i].resolved_runbook, 1);
  }
  return rc;
}

void rbl_serve_config_free(srv_config *c) {
  for (int i = 0; i < c->nroutes; i++) {
    srv_route *r = &c->routes[i];
    for (int j = 0; j < r->nmatch; j++) {
      if (r->match[j].is_re) regfree(&r->match[j].re);
      free(r->match[j].label);
      free(r->match[j].value);
    }
    for (int j = 0; j < r->nparams; j++) {
      free(r->params[j].name);
      free(r->params[j].label);
      cJSON_Delete(r->params[j].decl[0]);
      cJSON_Delete(r->params[j].decl[1]);
    }
    free(r->match);
    free(r->params);
    free(r->name);
    free(r->runbook);
    free(r->resolved_runbook);
    free(r->tenant_label);
  }
  free(c->routes);
  for (int i = 0; i < c->ntenants; i++)
    free(c->tenants[i]);
  free(c->tenants);
  free(c->config_path);
  free(c->listen);
  if (c->token) OPENSSL_cleanse(c->token, c->token_len);
  free(c->token);
  for (int i = 0; i < c->napprove; i++)
    free(c->approve_tokens[i].name);
  free(c->approve_tokens);
  free(c->spool);
  free(c->tls_cert);
  free(c->audit_key);
  free(c->tls_key);
  free(c->ha_namespace);
  free(c->ha_identity);
  memset(c, 0, sizeof *c);
}

int rbl_serve_route_matches(const srv_route *r, const cJSON *labels) {
  for (int i = 0; i < r->nmatch; i++) {
    const srv_match *m = &r->match[i];
    const char *v = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(labels, m->label));
    if (!v) v = ""; /* as Alertmanager: a missing label is the empty value */
    if (m->is_re ? regexec(&m->re, v, 0, NULL, 0) != 0 : strcmp(v, m->value) != 0) return 0;
  }
  return 1;
}

int rbl_serve_tenant_known(const srv_config *c, const char *t) {
  for (int i = 0; i < c->ntenants; i++)
    if (!strcmp(c->tenants[i], t)) return 1;
  return 0;
}
