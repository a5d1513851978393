/* The tenant gate (see gate.h and docs/gate.md): endpoint classes, Docker and Kubernetes request
 * rules, learning from answers, and the spawn allow lists. Per-run state; no globals. */
#include "gate.h"
#include "notify.h"
#include "promql.h"
#include "sha256.h"
#include "engine_int.h"

#include <cjson/cJSON.h>
#include <fnmatch.h>
#include <lauxlib.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define FIXED_PATH   "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#define MAX_SEGS     16
#define MAX_PARAMS   16
#define MAX_LEARNED  16384 /* containers, exec ids, namespaces, API resources: each */
#define MAX_SUBS     32
#define DOCKER_LABEL "rbl.tenant"
#define KUBE_LABEL   "rbl.io/tenant"

enum {
  L_NONE,
  L_DOCKER_INSPECT,
  L_DOCKER_LIST,
  L_DOCKER_EXEC,
  L_KUBE_DISC,
  L_KUBE_NS,
  L_KUBE_NS_OBJ,  /* GET of a Namespace object: its version and tenant label (before-state) */
  L_KUBE_NS_PATCH /* PATCH of a Namespace: the answer shows the label after (its effect) */
};
enum { DISC_API, DISC_APIS, DISC_LIST };

typedef struct strlist {
  char **v;
  size_t n;
} strlist;

typedef struct tenant_cfg {
  char *name;
  int has_ns; /* the config lists its namespaces: that list is authoritative */
  strlist ns;
} tenant_cfg;

typedef struct owned { /* a docker container or exec id and the tenant it belongs to */
  char id[65];
  char *tenant;
} owned;

typedef struct kres { /* an API resource seen in discovery */
  char *group, *version, *resource;
  int namespaced;
  strlist subs;
} kres;

typedef struct kns {
  char *tenant, *ns;
} kns;

/* A Namespace as the gate last read it (GET answer), and the one patch body approved for it: a
 * dry run of exactly these bytes, pinned to rv, left the tenant label as it was. */
typedef struct nsread {
  char ns[64];
  char rv[64];
  int has_label;
  char label[254];
  char approved[65]; /* SHA-256 hex of the approved body, or "" */
} nsread;

struct rbl_gate {
  char *label_docker, *label_kube, *prom_url, *path_env;
  char *prom_label;    /* the tenant label of metrics (prom.tenant_label, default "tenant") */
  int prom_unscoped;   /* prom.unscoped = true: a call bound to no tenant may query unscoped */
  strlist run_tenants; /* the tenants this run is authorised for (--tenant), for prom sets */
  lua_State *notify_L; /* the engine's state: notification destinations are read from it */
  char *docker_socket; /* unix endpoint, or NULL */
  char *docker_http, *docker_https; /* tcp endpoint bases, or NULL */
  char *kube_base, *kube_plugin;    /* bound once */
  char *lease_base, *lease_ns;      /* "kube-lease": serve.ha's API server and namespace */
  strlist exec_allow, allow_subs, allow_cw;
  strlist exec_env;  /* environment names every exec may set (beyond the base list) */
  strlist prog_env;  /* "PROGRAM\nNAME": names one program may set */
  strlist prog_argv; /* "PROGRAM\nGLOB\nGLOB...": a program with rules runs only with an argv
                        matching one of them */
  int allow_label_change;
  tenant_cfg *tenants;
  size_t ntenants;
  owned *ctr, *exe;
  size_t nctr, nexe;
  kres *res;
  size_t nres;
  kns *ns;
  size_t nns;
  nsread *nsr;
  size_t nnsr;
};

/* ---- small helpers ---- */

__attribute__((format(printf, 3, 4))) static int refuse(char *why, size_t n, const char *fmt, ...) {
  char tmp[900];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(tmp, sizeof tmp, fmt, ap);
  va_end(ap);
  if (why && n) snprintf(why, n, "gate: %s", tmp);
  return -1;
}

static int sl_add(strlist *l, const char *s) {
  char **v = realloc(l->v, (l->n + 1) * sizeof *v);
  if (!v) return -1;
  l->v = v;
  if (!(v[l->n] = strdup(s))) return -1;
  l->n++;
  return 0;
}

static int sl_has(const strlist *l, const char *s, size_t n) {
  for (size_t i = 0; i < l->n; i++)
    if (strlen(l->v[i]) == n && !memcmp(l->v[i], s, n)) return 1;
  return 0;
}

static void sl_free(strlist *l) {
  for (size_t i = 0; i < l->n; i++)
    free(l->v[i]);
  free(l->v);
  l->v = NULL;
  l->n = 0;
}

static int seq(const char *s, size_t n, const char *lit) {
  return strlen(lit) == n && !memcmp(s, lit, n);
}

static int is_hex64(const char *s, size_t n) {
  if (n != 64) return 0;
  for (size_t i = 0; i < n; i++)
    if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) return 0;
  return 1;
}

static int is_method(const char *m, const char *want) { return m && !strcmp(m, want); }
static int is_read(const char *m) { return is_method(m, "GET") || is_method(m, "HEAD"); }

static const char *label_docker(const rbl_gate *g) {
  return g->label_docker ? g->label_docker : DOCKER_LABEL;
}
static const char *label_kube(const rbl_gate *g) {
  return g->label_kube ? g->label_kube : KUBE_LABEL;
}

/* ---- life and configuration ---- */

rbl_gate *rbl_gate_new(void) { return calloc(1, sizeof(rbl_gate)); }

void rbl_gate_free(rbl_gate *g) {
  if (!g) return;
  free(g->label_docker);
  free(g->label_kube);
  free(g->prom_url);
  free(g->prom_label);
  sl_free(&g->run_tenants);
  free(g->path_env);
  free(g->docker_socket);
  free(g->docker_http);
  free(g->docker_https);
  free(g->kube_base);
  free(g->kube_plugin);
  free(g->lease_base);
  free(g->lease_ns);
  free(g->nsr);
  sl_free(&g->exec_allow);
  sl_free(&g->exec_env);
  sl_free(&g->prog_env);
  sl_free(&g->prog_argv);
  sl_free(&g->allow_subs);
  sl_free(&g->allow_cw);
  for (size_t i = 0; i < g->ntenants; i++) {
    free(g->tenants[i].name);
    sl_free(&g->tenants[i].ns);
  }
  free(g->tenants);
  for (size_t i = 0; i < g->nctr; i++)
    free(g->ctr[i].tenant);
  free(g->ctr);
  for (size_t i = 0; i < g->nexe; i++)
    free(g->exe[i].tenant);
  free(g->exe);
  for (size_t i = 0; i < g->nres; i++) {
    free(g->res[i].group);
    free(g->res[i].version);
    free(g->res[i].resource);
    sl_free(&g->res[i].subs);
  }
  free(g->res);
  for (size_t i = 0; i < g->nns; i++) {
    free(g->ns[i].tenant);
    free(g->ns[i].ns);
  }
  free(g->ns);
  free(g);
}

/* host:port (or [v6]:port) only: what follows the scheme of an endpoint base. */
static int clean_authority(const char *s, size_t n) {
  if (n == 0 || n > 255) return 0;
  for (size_t i = 0; i < n; i++) {
    char c = s[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
          c == '-' || c == ':' || c == '[' || c == ']'))
      return 0;
  }
  return 1;
}

static void set_docker_host(rbl_gate *g, const char *raw) {
  free(g->docker_socket);
  free(g->docker_http);
  free(g->docker_https);
  g->docker_socket = g->docker_http = g->docker_https = NULL;
  if (!strncmp(raw, "unix://", 7)) {
    if (raw[7] == '/') g->docker_socket = strdup(raw + 7);
    return;
  }
  const char *hp = NULL;
  if (!strncmp(raw, "tcp://", 6)) hp = raw + 6;
  if (!strncmp(raw, "http://", 7)) hp = raw + 7;
  if (!strncmp(raw, "https://", 8)) hp = raw + 8;
  if (!hp) return;
  size_t n = strlen(hp);
  if (n && hp[n - 1] == '/') n--;
  if (!clean_authority(hp, n)) return;
  char buf[300];
  snprintf(buf, sizeof buf, "http://%.*s", (int)n, hp);
  g->docker_http = strdup(buf);
  snprintf(buf, sizeof buf, "https://%.*s", (int)n, hp);
  g->docker_https = strdup(buf);
}

static int set_str(char **slot, const char *v) {
  free(*slot);
  *slot = v ? strdup(v) : NULL;
  return 0;
}

int rbl_gate_set(rbl_gate *g, const char *key, const char *value) {
  if (!strcmp(key, "labels.docker")) return set_str(&g->label_docker, value);
  if (!strcmp(key, "labels.kube")) return set_str(&g->label_kube, value);
  if (!strcmp(key, "prom.url")) return set_str(&g->prom_url, value);
  if (!strcmp(key, "prom.tenant_label")) return set_str(&g->prom_label, value);
  if (!strcmp(key, "prom.unscoped")) {
    g->prom_unscoped = value && !strcmp(value, "1");
    return 0;
  }
  if (!strcmp(key, "path")) return set_str(&g->path_env, value);
  if (!strcmp(key, "kube.allow_tenant_label_change")) {
    g->allow_label_change = value && !strcmp(value, "1");
    return 0;
  }
  if (!strcmp(key, "docker.host")) {
    set_docker_host(g, value ? value : "unix:///var/run/docker.sock");
    return 0;
  }
  return -1;
}

int rbl_gate_add(rbl_gate *g, const char *list, const char *value) {
  if (!strcmp(list, "exec.allow")) return sl_add(&g->exec_allow, value);
  if (!strcmp(list, "exec.env")) return sl_add(&g->exec_env, value);
  if (!strcmp(list, "exec.program.env") && strchr(value, '\n')) return sl_add(&g->prog_env, value);
  if (!strcmp(list, "exec.program.argv") && strchr(value, '\n'))
    return sl_add(&g->prog_argv, value);
  if (!strcmp(list, "kube.allow_subresources")) return sl_add(&g->allow_subs, value);
  if (!strcmp(list, "kube.allow_cluster_writes")) return sl_add(&g->allow_cw, value);
  if (!strcmp(list, "run.tenants")) return sl_add(&g->run_tenants, value);
  return -1;
}

int rbl_gate_add_tenant(rbl_gate *g, const char *tenant, int has_ns, const char *const *ns,
                        size_t nns) {
  tenant_cfg *t = realloc(g->tenants, (g->ntenants + 1) * sizeof *t);
  if (!t) return -1;
  g->tenants = t;
  tenant_cfg *c = &g->tenants[g->ntenants++];
  memset(c, 0, sizeof *c);
  c->name = strdup(tenant);
  c->has_ns = has_ns;
  for (size_t i = 0; i < nns; i++)
    if (sl_add(&c->ns, ns[i]) != 0) return -1;
  return c->name ? 0 : -1;
}

/* ---- learned facts ---- */

static owned *owned_find(owned *v, size_t n, const char *id) {
  for (size_t i = 0; i < n; i++)
    if (!strcmp(v[i].id, id)) return &v[i];
  return NULL;
}

/* Records id -> tenant (the latest answer wins). Bounded: past the cap nothing more is learned,
 * so requests for what was not learned stay refused. */
static void owned_put(owned **v, size_t *n, const char *id, const char *tenant) {
  owned *o = owned_find(*v, *n, id);
  if (o) {
    char *t = strdup(tenant);
    if (!t) return;
    free(o->tenant);
    o->tenant = t;
    return;
  }
  if (*n >= MAX_LEARNED) return;
  owned *nv = realloc(*v, (*n + 1) * sizeof *nv);
  if (!nv) return;
  *v = nv;
  snprintf(nv[*n].id, sizeof nv[*n].id, "%s", id);
  if ((nv[*n].tenant = strdup(tenant))) (*n)++;
}

static void owned_drop(owned *v, size_t *n, const char *id) {
  owned *o = owned_find(v, *n, id);
  if (!o) return;
  free(o->tenant);
  *o = v[--*n];
}

static const tenant_cfg *tenant_of(const rbl_gate *g, const char *t) {
  for (size_t i = 0; i < g->ntenants; i++)
    if (!strcmp(g->tenants[i].name, t)) return &g->tenants[i];
  return NULL;
}

static int ns_owned(const rbl_gate *g, const char *tenant, const char *ns, size_t n) {
  const tenant_cfg *tc = tenant_of(g, tenant);
  if (tc && tc->has_ns) return sl_has(&tc->ns, ns, n);
  for (size_t i = 0; i < g->nns; i++)
    if (!strcmp(g->ns[i].tenant, tenant) && seq(ns, n, g->ns[i].ns)) return 1;
  return 0;
}

static void ns_learn(rbl_gate *g, const char *tenant, const char *ns) {
  const tenant_cfg *tc = tenant_of(g, tenant);
  if ((tc && tc->has_ns) || ns_owned(g, tenant, ns, strlen(ns)) || g->nns >= MAX_LEARNED) return;
  kns *v = realloc(g->ns, (g->nns + 1) * sizeof *v);
  if (!v) return;
  g->ns = v;
  v[g->nns].tenant = strdup(tenant);
  v[g->nns].ns = strdup(ns);
  if (v[g->nns].tenant && v[g->nns].ns)
    g->nns++;
  else {
    free(v[g->nns].tenant);
    free(v[g->nns].ns);
  }
}

static kres *res_find(const rbl_gate *g, const char *grp, size_t gl, const char *ver, size_t vl,
                      const char *r, size_t rl) {
  for (size_t i = 0; i < g->nres; i++) {
    kres *e = &g->res[i];
    if (seq(grp, gl, e->group) && seq(ver, vl, e->version) && seq(r, rl, e->resource)) return e;
  }
  return NULL;
}

static kres *res_put(rbl_gate *g, const char *grp, const char *ver, const char *r, int namespaced) {
  kres *e = res_find(g, grp, strlen(grp), ver, strlen(ver), r, strlen(r));
  if (e) {
    e->namespaced = namespaced;
    return e;
  }
  if (g->nres >= MAX_LEARNED) return NULL;
  kres *v = realloc(g->res, (g->nres + 1) * sizeof *v);
  if (!v) return NULL;
  g->res = v;
  e = &v[g->nres];
  memset(e, 0, sizeof *e);
  e->group = strdup(grp);
  e->version = strdup(ver);
  e->resource = strdup(r);
  e->namespaced = namespaced;
  if (!e->group || !e->version || !e->resource) {
    free(e->group);
    free(e->version);
    free(e->resource);
    return NULL;
  }
  g->nres++;
  return e;
}

static void res_sub(kres *e, const char *sub) {
  if (e && e->subs.n < MAX_SUBS && !sl_has(&e->subs, sub, strlen(sub))) sl_add(&e->subs, sub);
}

/* A resource or subresource name as discovery gives it: lower case, digits, '-', '.'. */
static int clean_name(const char *s) {
  if (!s || !*s || strlen(s) > 253) return 0;
  for (const char *p = s; *p; p++)
    if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-' || *p == '.')) return 0;
  return !strstr(s, "..") && strcmp(s, ".") != 0;
}

/* ---- URL parsing ---- */

typedef struct seg {
  const char *p;
  size_t n;
} seg;

typedef struct param {
  const char *key; /* into the decode buffer, NUL-terminated */
  const char *val;
} param;

typedef struct parsed {
  seg segs[MAX_SEGS];
  int nseg;
  param params[MAX_PARAMS];
  int nparam;
  char *qbuf; /* decoded query, owned */
} parsed;

/* Splits rest ("/a/b?q") into clean path segments and decoded, unique query parameters. */
static int parse_rest(const char *rest, size_t len, parsed *out, char *why, size_t wn) {
  memset(out, 0, sizeof *out);
  const char *q = memchr(rest, '?', len);
  size_t plen = q ? (size_t)(q - rest) : len;
  if (plen == 0 || rest[0] != '/') return refuse(why, wn, "the request path is empty");
  if (memchr(rest, '%', plen))
    return refuse(why, wn, "percent-encoding in the request path (%.*s)", (int)plen, rest);
  size_t i = 1;
  if (plen == 1) return refuse(why, wn, "the request path is /");
  while (i <= plen) {
    const char *s = rest + i;
    const char *e = memchr(s, '/', plen - i);
    size_t n = e ? (size_t)(e - s) : plen - i;
    if (n == 0) return refuse(why, wn, "an empty segment (//) in the request path");
    if (seq(s, n, ".") || seq(s, n, "..") || memmem(s, n, "..", 2))
      return refuse(why, wn, "a dot segment in the request path (%.*s)", (int)plen, rest);
    if (out->nseg == MAX_SEGS) return refuse(why, wn, "too many path segments");
    out->segs[out->nseg].p = s;
    out->segs[out->nseg++].n = n;
    i += n + 1;
    if (!e) break;
  }
  if (rest[plen - 1] == '/') return refuse(why, wn, "an empty segment (trailing /) in the path");
  if (!q) return 0;
  size_t ql = len - plen - 1;
  if (ql == 0) return refuse(why, wn, "an empty query string");
  out->qbuf = malloc(ql + 2);
  if (!out->qbuf) return refuse(why, wn, "out of memory");
  char *d = out->qbuf;
  const char *p = q + 1, *end = rest + len;
  while (p <= end) {
    const char *amp = memchr(p, '&', (size_t)(end - p));
    const char *pe = amp ? amp : end;
    if (pe == p) return refuse(why, wn, "an empty query parameter");
    if (out->nparam == MAX_PARAMS) return refuse(why, wn, "too many query parameters");
    const char *eq = memchr(p, '=', (size_t)(pe - p));
    const char *ke = eq ? eq : pe;
    param *pr = &out->params[out->nparam];
    pr->key = d;
    for (const char *k = p; k < ke; k++) {
      if (!((*k >= 'a' && *k <= 'z') || (*k >= 'A' && *k <= 'Z') || (*k >= '0' && *k <= '9') ||
            *k == '_'))
        return refuse(why, wn, "query parameter name %.*s is not a plain word", (int)(ke - p), p);
      *d++ = *k;
    }
    *d++ = 0;
    if (!*pr->key) return refuse(why, wn, "a query parameter without a name");
    for (int k = 0; k < out->nparam; k++)
      if (!strcmp(out->params[k].key, pr->key))
        return refuse(why, wn, "query parameter %s is repeated", pr->key);
    pr->val = d;
    for (const char *v = eq ? eq + 1 : pe; v < pe; v++) {
      unsigned char c = (unsigned char)*v;
      if (c == '%') {
        static const char hex[] = "0123456789abcdefABCDEF";
        if (pe - v < 3 || !v[1] || !v[2] || !strchr(hex, v[1]) || !strchr(hex, v[2]))
          return refuse(why, wn, "a malformed percent escape in query parameter %s", pr->key);
        char h[3] = {v[1], v[2], 0};
        c = (unsigned char)strtol(h, NULL, 16);
        v += 2;
      } else if (c == '+') {
        c = ' ';
      }
      /* a multi-line value (a PromQL query) keeps its tab and line breaks; nothing else */
      if ((c < 0x20 && c != '\t' && c != '\n' && c != '\r') || c == 0x7f)
        return refuse(why, wn, "a control character in query parameter %s", pr->key);
      *d++ = (char)c;
    }
    *d++ = 0;
    out->nparam++;
    if (!amp) break;
    p = amp + 1;
  }
  return 0;
}

static const char *param_of(const parsed *p, const char *key) {
  for (int i = 0; i < p->nparam; i++)
    if (!strcmp(p->params[i].key, key)) return p->params[i].val;
  return NULL;
}

/* Bytes a URL may hold at all: printable ASCII without space, backslash, '#' or ';'. */
static int url_hygiene(const char *url, size_t len, char *why, size_t wn) {
  if (strlen(url) != len) return refuse(why, wn, "a NUL byte in the URL");
  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)url[i];
    if (c <= 0x20 || c >= 0x7f)
      return refuse(why, wn, "a control, space or non-ASCII byte in the URL");
    if (c == '\\' || c == '#' || c == ';')
      return refuse(why, wn, "'%c' in the URL (fragment or path smuggling)", c);
  }
  return 0;
}

static int has_base(const char *url, size_t len, const char *base, const char **rest) {
  size_t bl = base ? strlen(base) : 0;
  if (!bl || len <= bl || memcmp(url, base, bl) != 0 || url[bl] != '/') return 0;
  *rest = url + bl;
  return 1;
}

/* ---- Docker ---- */

static int clean_ref(const char *s, size_t n) {
  if (n == 0 || n > 128 || s[0] == '.' || s[0] == '-' || memmem(s, n, "..", 2)) return 0;
  for (size_t i = 0; i < n; i++) {
    char c = s[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
          c == '.' || c == '-'))
      return 0;
  }
  return 1;
}

static int flag_value(const char *v) {
  return !strcmp(v, "0") || !strcmp(v, "1") || !strcmp(v, "true") || !strcmp(v, "false");
}

static int digits(const char *v) {
  if (!*v || strlen(v) > 9) return 0;
  for (; *v; v++)
    if (*v < '0' || *v > '9') return 0;
  return 1;
}

/* GET /containers/json: filters must pin the tenant label to the call's tenant. */
static int docker_list(const rbl_gate *g, const parsed *p, const char *tenant, char *why,
                       size_t wn) {
  for (int i = 0; i < p->nparam; i++) {
    const char *k = p->params[i].key, *v = p->params[i].val;
    if (!strcmp(k, "filters")) continue;
    if ((!strcmp(k, "all") || !strcmp(k, "size")) && flag_value(v)) continue;
    if (!strcmp(k, "limit") && digits(v)) continue;
    return refuse(why, wn, "docker: container list parameter %s=%s is not allowed", k, v);
  }
  const char *f = param_of(p, "filters");
  if (!f) return refuse(why, wn, "docker: a container list without a %s filter", label_docker(g));
  cJSON *j = cJSON_Parse(f);
  int ok = 0, pinned = 0;
  const char *key = label_docker(g);
  size_t kl = strlen(key);
  char want[512];
  snprintf(want, sizeof want, "%s=%s", key, tenant);
  if (cJSON_IsObject(j) && j->child && !j->child->next && j->child->string &&
      !strcmp(j->child->string, "label") && cJSON_IsArray(j->child)) {
    ok = 1;
    cJSON *e;
    cJSON_ArrayForEach(e, j->child) {
      if (!cJSON_IsString(e) || !e->valuestring) {
        ok = 0;
        break;
      }
      const char *s = e->valuestring;
      for (const char *c = s; *c; c++)
        if ((unsigned char)*c <= 0x20 || (unsigned char)*c >= 0x7f) ok = 0;
      size_t klen = strcspn(s, "=");
      if (klen == kl && !memcmp(s, key, kl)) {
        if (strcmp(s, want) != 0) ok = 0;
        pinned++;
      }
    }
  }
  cJSON_Delete(j);
  if (!ok || pinned != 1)
    return refuse(why, wn, "docker: the container list must filter on exactly label %s", want);
  return 0;
}

static int docker_rule(rbl_gate *g, const rbl_gate_req *r, const parsed *p, rbl_gate_ticket *t,
                       char *why, size_t wn) {
  const seg *s = p->segs;
  int n = p->nseg;
  /* an optional /v1.NN version prefix */
  if (n > 0 && s[0].n >= 2 && s[0].p[0] == 'v') {
    const char *c = s[0].p + 1, *e = s[0].p + s[0].n;
    int dots = 0, ok = 1;
    for (; c < e; c++)
      if (*c == '.')
        dots++;
      else if (*c < '0' || *c > '9')
        ok = 0;
    if (ok && dots == 1 && s[0].p[1] != '.' && s[0].p[s[0].n - 1] != '.') {
      s++;
      n--;
    }
  }
  if (n == 0) return refuse(why, wn, "docker: cannot classify the request");
  const char *m = r->method, *tenant = r->tenant;
  if (n == 1 && (seq(s[0].p, s[0].n, "_ping") || seq(s[0].p, s[0].n, "version") ||
                 seq(s[0].p, s[0].n, "info"))) {
    if (!is_read(m)) return refuse(why, wn, "docker: %s /%.*s", m, (int)s[0].n, s[0].p);
    if (p->nparam) return refuse(why, wn, "docker: parameters on /%.*s", (int)s[0].n, s[0].p);
    return 0;
  }
  if (!tenant)
    return refuse(why, wn,
                  "docker: a request bound to no tenant may only read /_ping, /version "
                  "and /info");
  if (seq(s[0].p, s[0].n, "containers") && n == 2 && seq(s[1].p, s[1].n, "json")) {
    if (!is_method(m, "GET")) return refuse(why, wn, "docker: %s /containers/json", m);
    if (docker_list(g, p, tenant, why, wn) != 0) return -1;
    t->learn = L_DOCKER_LIST;
    return 0;
  }
  if (seq(s[0].p, s[0].n, "containers") && n >= 2) {
    const seg *x = &s[1];
    if (n == 3 && seq(s[2].p, s[2].n, "json") && is_method(m, "GET")) {
      /* the resolution read: any clean reference; the answer is checked in rbl_gate_answer */
      if (!clean_ref(x->p, x->n))
        return refuse(why, wn, "docker: container reference %.*s is not a clean name or id",
                      (int)(x->n > 130 ? 130 : x->n), x->p);
      for (int i = 0; i < p->nparam; i++)
        if (strcmp(p->params[i].key, "size") != 0 || !flag_value(p->params[i].val))
          return refuse(why, wn, "docker: parameter %s on a container inspect", p->params[i].key);
      t->learn = L_DOCKER_INSPECT;
      snprintf(t->ref, sizeof t->ref, "%.*s", (int)x->n, x->p);
      return 0;
    }
    if (!is_hex64(x->p, x->n))
      return refuse(why, wn,
                    "docker: %s /containers/%.*s/...: an effect must address a full "
                    "64-hex container id (names and prefixes never reach an effect)",
                    m, (int)(x->n > 130 ? 130 : x->n), x->p);
    char id[65];
    snprintf(id, sizeof id, "%.*s", (int)x->n, x->p);
    owned *o = owned_find(g->ctr, g->nctr, id);
    if (!o)
      return refuse(why, wn,
                    "docker: container %.12s was not seen in the daemon's answers of "
                    "this run with label %s=%s",
                    id, label_docker(g), tenant);
    if (strcmp(o->tenant, tenant) != 0)
      return refuse(why, wn, "docker: container %.12s belongs to tenant %s, not %s", id, o->tenant,
                    tenant);
    if (n == 3 && seq(s[2].p, s[2].n, "exec") && is_method(m, "POST")) t->learn = L_DOCKER_EXEC;
    return 0;
  }
  if (seq(s[0].p, s[0].n, "exec") && n == 3 &&
      ((seq(s[2].p, s[2].n, "start") && is_method(m, "POST")) ||
       (seq(s[2].p, s[2].n, "json") && is_method(m, "GET")))) {
    char id[65];
    if (!is_hex64(s[1].p, s[1].n)) return refuse(why, wn, "docker: exec id is not 64 hex digits");
    snprintf(id, sizeof id, "%.*s", (int)s[1].n, s[1].p);
    owned *o = owned_find(g->exe, g->nexe, id);
    if (!o || strcmp(o->tenant, tenant) != 0)
      return refuse(why, wn,
                    "docker: exec %.12s was not created by this run for a container of "
                    "tenant %s",
                    id, tenant);
    if (p->nparam) return refuse(why, wn, "docker: parameters on /exec/%.12s", id);
    return 0;
  }
  return refuse(why, wn, "docker: %s %.*s...: not a request rbl makes (refused)", m, (int)s[0].n,
                s[0].p);
}

/* ---- Kubernetes ---- */

static const char *const DANGEROUS_SUBS[] = {"exec",  "attach",   "portforward",         "proxy",
                                             "token", "eviction", "ephemeralcontainers", "binding",
                                             NULL};
static const char *const READ_PARAMS[] = {
    "labelSelector",   "fieldSelector",  "limit",      "continue",
    "resourceVersion", "timeoutSeconds", "watch",      "allowWatchBookmarks",
    "pretty",          "container",      "tailLines",  "sinceSeconds",
    "previous",        "timestamps",     "limitBytes", NULL};
static const char *const WRITE_PARAMS[] = {"dryRun", "fieldManager", "fieldValidation",
                                           "force",  "pretty",       NULL};
static const char *const DELETE_PARAMS[] = {"dryRun", "propagationPolicy", "gracePeriodSeconds",
                                            "pretty", NULL};

static int in_list(const char *const *l, const char *s) {
  for (; *l; l++)
    if (!strcmp(*l, s)) return 1;
  return 0;
}

static int kube_params(const char *m, const parsed *p, char *why, size_t wn) {
  const char *const *allow = is_read(m)               ? READ_PARAMS
                             : is_method(m, "DELETE") ? DELETE_PARAMS
                                                      : WRITE_PARAMS;
  for (int i = 0; i < p->nparam; i++) {
    const char *k = p->params[i].key;
    if (!in_list(allow, k))
      return refuse(why, wn, "kube: query parameter %s is not allowed on %s", k, m);
    if (!strcmp(k, "fieldSelector") && strstr(p->params[i].val, "metadata.namespace"))
      return refuse(why, wn, "kube: a fieldSelector on metadata.namespace");
  }
  return 0;
}

/* A field selector term on a namespace field (involvedObject.namespace, regarding.namespace...)
 * must pin the request's own namespace: an events list must not be steered at other objects. */
static int field_ns_pinned(const parsed *p, const seg *ns, char *why, size_t wn) {
  const char *sel = param_of(p, "fieldSelector");
  if (!sel) return 0;
  while (*sel) {
    size_t tl = strcspn(sel, ",");
    const char *op = NULL;
    for (size_t i = 0; i < tl; i++)
      if (sel[i] == '=' || sel[i] == '!') {
        op = sel + i;
        break;
      }
    size_t kl = op ? (size_t)(op - sel) : tl;
    static const char suffix[] = ".namespace";
    size_t sl = sizeof suffix - 1;
    if (kl >= sl && !memcmp(sel + kl - sl, suffix, sl)) {
      const char *v = op;
      if (v && v[0] == '=' && v[1] == '=')
        v += 2;
      else if (v && v[0] == '=')
        v += 1;
      else
        v = NULL;
      size_t vl = v ? tl - (size_t)(v - sel) : 0;
      if (!v || vl != ns->n || memcmp(v, ns->p, vl) != 0)
        return refuse(why, wn, "kube: fieldSelector %.*s names another namespace than %.*s",
                      (int)(tl > 200 ? 200 : tl), sel, (int)ns->n, ns->p);
    }
    sel += tl;
    if (*sel == ',') sel++;
  }
  return 0;
}

static int dangerous_sub(const rbl_gate *g, const seg *sub, char *why, size_t wn) {
  for (const char *const *d = DANGEROUS_SUBS; *d; d++)
    if (seq(sub->p, sub->n, *d) && !sl_has(&g->allow_subs, sub->p, sub->n))
      return refuse(why, wn, "kube: subresource %s is not allowed (config kube.allow_subresources)",
                    *d);
  return 0;
}

/* Segments of a DNS label or a resource/object name (no encoding can reach here). */
static int ns_label(const seg *s) {
  if (s->n == 0 || s->n > 63) return 0;
  for (size_t i = 0; i < s->n; i++) {
    char c = s->p[i];
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-')) return 0;
  }
  return s->p[0] != '-' && s->p[s->n - 1] != '-';
}

/* ---- the tenant label of a Namespace: decided by the patch's effect ----
 * A PATCH of a Namespace may change its tenant label (an ownership transfer) in ways no reading
 * of the patch can settle (strategic-merge directives: $patch replace/delete/merge, $retainKeys,
 * $setElementOrder, $deleteFromPrimitiveList; JSON patch move/copy; duplicate keys). So the gate
 * decides by effect: the patch must first go out as a dry run (dryRun=All) pinned to the version
 * the gate saw in its GET answer (a resourceVersion precondition in the body); the dry run's answer
 * must show the label as it was; only then may exactly the same bytes be sent for real (once).
 * The real answer is checked again. */

static nsread *nsr_find(rbl_gate *g, const char *ns, size_t n) {
  for (size_t i = 0; i < g->nnsr; i++)
    if (seq(ns, n, g->nsr[i].ns)) return &g->nsr[i];
  return NULL;
}

static nsread *nsr_put(rbl_gate *g, const char *ns) {
  nsread *r = nsr_find(g, ns, strlen(ns));
  if (r) return r;
  if (g->nnsr >= MAX_LEARNED || strlen(ns) >= sizeof r->ns) return NULL;
  nsread *v = realloc(g->nsr, (g->nnsr + 1) * sizeof *v);
  if (!v) return NULL;
  g->nsr = v;
  r = &v[g->nnsr++];
  memset(r, 0, sizeof *r);
  snprintf(r->ns, sizeof r->ns, "%s", ns);
  return r;
}

static int name_cmp(const void *a, const void *b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Does any object in v hold a member name twice? (The gate's parser keeps the first, the API
 * server's the last: the two would read different patches.) */
static int has_dup_names(const cJSON *v, int depth) {
  if (depth > 64) return 1;
  if (cJSON_IsObject(v)) {
    size_t n = 0;
    for (const cJSON *c = v->child; c; c = c->next)
      n++;
    const char **names = n ? malloc(n * sizeof *names) : NULL;
    if (n && !names) return 1;
    size_t i = 0;
    for (const cJSON *c = v->child; c; c = c->next)
      names[i++] = c->string ? c->string : "";
    if (n > 1) qsort(names, n, sizeof *names, name_cmp); /* qsort(NULL, 0) is UB */
    int dup = 0;
    for (i = 1; i < n && !dup; i++)
      dup = !strcmp(names[i - 1], names[i]);
    free(names);
    if (dup) return 1;
  }
  for (const cJSON *c = v ? v->child : NULL; c; c = c->next)
    if (has_dup_names(c, depth + 1)) return 1;
  return 0;
}

/* The resourceVersion the body pins: metadata.resourceVersion of a merge or strategic patch, or
 * the value of a first "test" op on /metadata/resourceVersion of a JSON patch. */
static const char *pinned_rv(const cJSON *j) {
  if (cJSON_IsArray(j)) {
    const cJSON *op = j->child;
    const char *o = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(op, "op"));
    const char *path = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(op, "path"));
    if (o && path && !strcmp(o, "test") && !strcmp(path, "/metadata/resourceVersion"))
      return cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(op, "value"));
    return NULL;
  }
  const cJSON *md = cJSON_GetObjectItemCaseSensitive(j, "metadata");
  return cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(md, "resourceVersion"));
}

static void body_sha(const char *body, size_t len, char out[65]) {
  unsigned char md[32];
  rbl_sha256(body ? body : "", body ? len : 0, md);
  static const char hex[] = "0123456789abcdef";
  for (int i = 0; i < 32; i++) {
    out[2 * i] = hex[md[i] >> 4];
    out[2 * i + 1] = hex[md[i] & 15];
  }
  out[64] = 0;
}

/* May this PATCH of the owned Namespace ns go out? Fills the ticket to check its answer. */
static int kube_ns_patch(rbl_gate *g, const rbl_gate_req *r, const parsed *p, const seg *ns,
                         rbl_gate_ticket *t, char *why, size_t wn) {
  int dry = param_of(p, "dryRun") && !strcmp(param_of(p, "dryRun"), "All");
  nsread *st = nsr_find(g, ns->p, ns->n);
  char sha[65];
  body_sha(r->body, r->body_len, sha);
  if (!st)
    return refuse(why, wn,
                  "kube: namespace %.*s: a patch of a Namespace needs the object read first (GET), "
                  "so that its tenant label can be compared before and after",
                  (int)ns->n, ns->p);
  if (!dry) {
    if (strcmp(st->approved, sha) != 0)
      return refuse(why, wn,
                    "kube: namespace %.*s: this patch was not first sent as a dry run "
                    "(dryRun=All) that left the tenant label %s as it was; it is not sent",
                    (int)ns->n, ns->p, label_kube(g));
    st->approved[0] = 0; /* once */
  } else {
    cJSON *j = r->body ? cJSON_ParseWithLength(r->body, r->body_len) : NULL;
    const char *rv = j ? pinned_rv(j) : NULL;
    int dup = j && has_dup_names(j, 0);
    int rc = 0;
    if (!j || !(cJSON_IsObject(j) || cJSON_IsArray(j)))
      rc = refuse(why, wn, "kube: namespace %.*s: a patch the gate cannot read", (int)ns->n, ns->p);
    else if (dup)
      rc = refuse(why, wn,
                  "kube: namespace %.*s: the patch holds a member name twice (the server would "
                  "apply another patch than the one checked)",
                  (int)ns->n, ns->p);
    else if (!rv || strcmp(rv, st->rv) != 0)
      rc = refuse(why, wn,
                  "kube: namespace %.*s: the patch must pin the version read (resourceVersion "
                  "%s; a json patch: a first test op on /metadata/resourceVersion)",
                  (int)ns->n, ns->p, st->rv);
    cJSON_Delete(j);
    if (rc) return rc;
  }
  t->learn = L_KUBE_NS_PATCH;
  snprintf(t->ref, sizeof t->ref, "%.*s", (int)ns->n, ns->p);
  snprintf(t->group, sizeof t->group, "%s", sha);
  snprintf(t->version, sizeof t->version, "%s", dry ? "dry" : "real");
  return 0;
}

/* The tenant label of a Namespace object (an API answer). */
static int ns_label_of(const rbl_gate *g, const cJSON *obj, const char **value) {
  const cJSON *md = cJSON_GetObjectItemCaseSensitive(obj, "metadata");
  const cJSON *lb = cJSON_GetObjectItemCaseSensitive(md, "labels");
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(lb, label_kube(g));
  *value = cJSON_GetStringValue(v);
  return *value != NULL;
}

static void answer_ns_obj(rbl_gate *g, const rbl_gate_ticket *t, long status, const cJSON *j) {
  const cJSON *md = cJSON_GetObjectItemCaseSensitive(j, "metadata");
  const char *name = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(md, "name"));
  const char *rv = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(md, "resourceVersion"));
  if (status != 200 || !name || strcmp(name, t->ref) != 0 || !rv) return;
  nsread *st = nsr_put(g, name);
  if (!st) return;
  const char *label;
  snprintf(st->rv, sizeof st->rv, "%s", rv);
  st->has_label = ns_label_of(g, j, &label);
  snprintf(st->label, sizeof st->label, "%s", st->has_label ? label : "");
  st->approved[0] = 0; /* a new read: earlier approvals were for another version */
}

static int answer_ns_patch(rbl_gate *g, const rbl_gate_ticket *t, long status, const cJSON *j,
                           char *why, size_t wn) {
  nsread *st = nsr_find(g, t->ref, strlen(t->ref));
  if (!st) return 0;
  if (status != 200) {
    st->approved[0] = 0;
    return 0;
  }
  const char *after;
  int has = cJSON_IsObject(j) && ns_label_of(g, j, &after);
  int same = cJSON_IsObject(j) && has == st->has_label && (!has || !strcmp(after, st->label));
  int dry = !strcmp(t->version, "dry");
  if (!same) {
    st->approved[0] = 0;
    return refuse(why, wn,
                  "kube: the patch of namespace %s %s the tenant label %s (%s%.100s%s before, "
                  "%s%.100s%s after)%s (config kube.allow_tenant_label_change)",
                  t->ref, dry ? "would change" : "changed", label_kube(g),
                  st->has_label ? "\"" : "", st->has_label ? st->label : "absent",
                  st->has_label ? "\"" : "", has ? "\"" : "", has ? after : "absent",
                  has ? "\"" : "", dry ? ": not sent (its dry run showed it)" : "");
  }
  if (dry)
    snprintf(st->approved, sizeof st->approved, "%.64s", t->group);
  else {
    const char *rv = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(j, "metadata"), "resourceVersion"));
    if (rv) snprintf(st->rv, sizeof st->rv, "%s", rv);
  }
  return 0;
}

/* ---- PATCH: the patch type the API server will apply decides what the body means ----
 * The same bytes are a JSON patch, a merge patch or a strategic merge patch depending on the
 * Content-Type alone, so the gate reads it as the API server does (the one header, cut at its
 * first ';', compared exactly: k8s.io/apiserver's patch handler) and checks the body by that
 * type. Only the three types rbl sends pass; server-side apply (YAML) and anything else do not.
 * For every object but the Namespace (whose tenant label is decided by effect, below) the body
 * may not touch metadata.namespace, nor the tenant label unless kube.allow_tenant_label_change. */

enum { PATCH_JSON = 1, PATCH_MERGE, PATCH_STRATEGIC };

/* The value of header line h when it is Content-Type ("Name: value"; curl sends "Name;" as the
 * header with an empty value): 1 with *v and *vn set, 0 for another header, -1 when the name is
 * Content-Type with white space around it (a name the API server's parser would refuse). */
static int header_ctype(const char *h, const char **v, size_t *vn) {
  size_t n = strcspn(h, ":;");
  if (!h[n]) return 0; /* curl sends neither kind */
  size_t a = 0, b = n;
  while (a < b && (h[a] == ' ' || h[a] == '\t'))
    a++;
  while (b > a && (h[b - 1] == ' ' || h[b - 1] == '\t'))
    b--;
  if (b - a != 12 || strncasecmp(h + a, "content-type", 12) != 0) return 0;
  if (a != 0 || b != n) return -1;
  const char *s = h[n] == ':' ? h + n + 1 : h + n + 1 + strlen(h + n + 1);
  size_t len = strlen(s);
  while (len && (*s == ' ' || *s == '\t'))
    s++, len--;
  while (len && (s[len - 1] == ' ' || s[len - 1] == '\t'))
    len--;
  *v = s;
  *vn = len;
  return 1;
}

/* The patch type of a PATCH request, or -1 (refused). */
static int patch_type(const rbl_gate_req *r, char *why, size_t wn) {
  const char *v = NULL, *cv;
  size_t vn = 0, cn;
  int count = 0;
  for (size_t i = 0; i < r->nheaders; i++) {
    int k = r->headers[i] ? header_ctype(r->headers[i], &cv, &cn) : 0;
    if (k < 0) return refuse(why, wn, "kube: a PATCH with a malformed Content-Type header name");
    if (k > 0 && count++ == 0) v = cv, vn = cn;
  }
  if (count > 1) return refuse(why, wn, "kube: a PATCH with %d Content-Type headers", count);
  if (!v || vn == 0)
    return refuse(why, wn,
                  "kube: a PATCH without a Content-Type (the patch type decides what the body "
                  "does)");
  const char *semi = memchr(v, ';', vn);
  size_t mn = semi && semi > v ? (size_t)(semi - v) : vn;
  if (seq(v, mn, "application/json-patch+json")) return PATCH_JSON;
  if (seq(v, mn, "application/merge-patch+json")) return PATCH_MERGE;
  if (seq(v, mn, "application/strategic-merge-patch+json")) return PATCH_STRATEGIC;
  return refuse(why, wn,
                "kube: a PATCH of type %.*s: only json-patch, merge-patch and "
                "strategic-merge-patch (+json) bodies are checked and sent",
                (int)(vn > 80 ? 80 : vn), v);
}

/* Does the JSON pointer p (RFC 6901) name the member at segs[0..nseg), one above it or one
 * inside it? 1 yes, 0 no, -1 a malformed pointer. */
static int ptr_touches(const char *p, const char *const *segs, int nseg) {
  if (!*p) return 1; /* the whole object */
  if (*p != '/') return -1;
  for (int i = 0;; i++) {
    if (!*p) return 1;       /* ends above (or at) the member */
    if (i == nseg) return 1; /* goes inside it */
    p++;
    char part[512];
    size_t k = 0;
    for (; *p && *p != '/'; p++) {
      char c = *p;
      if (c == '~') {
        if (p[1] != '0' && p[1] != '1') return -1;
        c = *++p == '0' ? '~' : '/';
      }
      if (k + 1 >= sizeof part) return 0; /* longer than any member it is compared with */
      part[k++] = c;
    }
    part[k] = 0;
    if (strcmp(part, segs[i]) != 0) return 0;
  }
}

/* Does a JSON patch op's pointer touch metadata.namespace or (unless allowed) the tenant label? */
static int json_op_ok(const rbl_gate *g, const char *what, const char *p, char *why, size_t wn) {
  const char *nsp[] = {"metadata", "namespace"};
  const char *lab[] = {"metadata", "labels", label_kube(g)};
  int a = ptr_touches(p, nsp, 2), b = g->allow_label_change ? 0 : ptr_touches(p, lab, 3);
  if (a < 0 || b < 0)
    return refuse(why, wn, "kube: a json patch %s that is not a JSON pointer", what);
  if (a) return refuse(why, wn, "kube: a json patch %s %.100s reaches metadata.namespace", what, p);
  if (b)
    return refuse(why, wn,
                  "kube: a json patch %s %.100s reaches the tenant label %s (config "
                  "kube.allow_tenant_label_change)",
                  what, p, label_kube(g));
  return 0;
}

static int json_patch_ok(const rbl_gate *g, const cJSON *j, char *why, size_t wn) {
  static const char *const ops[] = {"add", "remove", "replace", "move", "copy", "test", NULL};
  const cJSON *op;
  cJSON_ArrayForEach(op, j) {
    const char *o = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(op, "op"));
    const char *path = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(op, "path"));
    const char *from = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(op, "from"));
    if (!cJSON_IsObject(op) || !o || !path || !in_list(ops, o))
      return refuse(why, wn, "kube: a json patch operation the gate cannot read");
    int mv = !strcmp(o, "move"), cp = !strcmp(o, "copy");
    if ((mv || cp) && !from) return refuse(why, wn, "kube: a json patch %s without from", o);
    if (!strcmp(o, "test")) continue;
    if (json_op_ok(g, "path", path, why, wn) != 0) return -1;
    if (mv && json_op_ok(g, "from", from, why, wn) != 0) return -1; /* a move removes from */
  }
  return 0;
}

/* A strategic-merge directive ($patch, $retainKeys, $setElementOrder/..., ...) among o's
 * members: its effect on them is not what a reading of the members says. */
static const char *directive_in(const cJSON *o) {
  for (const cJSON *c = cJSON_IsObject(o) ? o->child : NULL; c; c = c->next)
    if (c->string && c->string[0] == '$') return c->string;
  return NULL;
}

static int merge_patch_ok(const rbl_gate *g, const cJSON *j, int strategic, const seg *ns,
                          char *why, size_t wn) {
  const cJSON *md = cJSON_GetObjectItemCaseSensitive(j, "metadata");
  const cJSON *lb = cJSON_GetObjectItemCaseSensitive(md, "labels");
  const cJSON *nsv = cJSON_GetObjectItemCaseSensitive(md, "namespace");
  const char *d = strategic ? directive_in(j) : NULL;
  if (!d && strategic) d = directive_in(md);
  if (!d && strategic && !g->allow_label_change) d = directive_in(lb);
  if (d)
    return refuse(why, wn,
                  "kube: a strategic merge patch with %.60s at the top, in metadata or in its "
                  "labels (it decides what happens to metadata.namespace and the tenant label)",
                  d);
  if (md && !cJSON_IsObject(md))
    return refuse(why, wn, "kube: a merge patch whose metadata is not an object (null removes it)");
  if (nsv && !(ns && cJSON_IsString(nsv) && seq(ns->p, ns->n, nsv->valuestring)))
    return refuse(why, wn, "kube: a merge patch that sets metadata.namespace");
  if (g->allow_label_change) return 0;
  if (lb && !cJSON_IsObject(lb))
    return refuse(why, wn,
                  "kube: a merge patch whose metadata.labels is not an object (null removes the "
                  "tenant label %s)",
                  label_kube(g));
  if (cJSON_GetObjectItemCaseSensitive(lb, label_kube(g)))
    return refuse(why, wn,
                  "kube: a merge patch that sets the tenant label %s (config "
                  "kube.allow_tenant_label_change)",
                  label_kube(g));
  return 0;
}

/* Any PATCH: its type, a body of that type's shape the gate reads as the server will (JSON, no
 * member name twice), and, unless the target is the Namespace object (ns_obj), nothing that
 * reaches metadata.namespace or the tenant label. ns: the request's namespace, or NULL. */
static int kube_patch_ok(const rbl_gate *g, const rbl_gate_req *r, const seg *ns, int ns_obj,
                         char *why, size_t wn) {
  int type = patch_type(r, why, wn);
  if (type < 0) return -1;
  cJSON *j = r->body ? cJSON_ParseWithLength(r->body, r->body_len) : NULL;
  int rc = 0;
  if (!j)
    rc = refuse(why, wn, "kube: a patch the gate cannot read (not JSON)");
  else if (type == PATCH_JSON ? !cJSON_IsArray(j) : !cJSON_IsObject(j))
    rc = refuse(why, wn, "kube: a %s body that is not %s",
                type == PATCH_JSON ? "json patch" : "merge patch",
                type == PATCH_JSON ? "an array of operations" : "an object");
  else if (has_dup_names(j, 0))
    rc = refuse(why, wn,
                "kube: the patch holds a member name twice (the server would apply another patch "
                "than the one checked)");
  else if (!ns_obj && type == PATCH_JSON)
    rc = json_patch_ok(g, j, why, wn);
  else if (!ns_obj)
    rc = merge_patch_ok(g, j, type == PATCH_STRATEGIC, ns, why, wn);
  cJSON_Delete(j);
  return rc;
}

/* POST selfsubjectaccessreviews: the question's namespace, when it names one, is owned. */
static int kube_ssar(const rbl_gate *g, const rbl_gate_req *r, char *why, size_t wn) {
  cJSON *j = r->body ? cJSON_ParseWithLength(r->body, r->body_len) : NULL;
  cJSON *spec = cJSON_GetObjectItemCaseSensitive(j, "spec");
  cJSON *ra = cJSON_GetObjectItemCaseSensitive(spec, "resourceAttributes");
  cJSON *ns = cJSON_GetObjectItemCaseSensitive(ra, "namespace");
  int rc = 0;
  if (!cJSON_IsObject(spec))
    rc = refuse(why, wn, "kube: a SelfSubjectAccessReview the gate cannot read");
  else if (ns && !cJSON_IsString(ns))
    rc = refuse(why, wn, "kube: a SelfSubjectAccessReview with a malformed namespace");
  else if (ns && ns->valuestring[0] &&
           !ns_owned(g, r->tenant, ns->valuestring, strlen(ns->valuestring)))
    rc = refuse(why, wn, "kube: namespace %.63s does not belong to tenant %s", ns->valuestring,
                r->tenant);
  cJSON_Delete(j);
  return rc;
}

static int kube_rule(rbl_gate *g, const rbl_gate_req *r, const parsed *p, rbl_gate_ticket *t,
                     char *why, size_t wn) {
  const seg *s = p->segs;
  int n = p->nseg;
  const char *m = r->method, *tenant = r->tenant;
  static const char *const methods[] = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", NULL};
  if (!in_list(methods, m)) return refuse(why, wn, "kube: method %s", m);
  if (kube_params(m, p, why, wn) != 0) return -1;
  int api = seq(s[0].p, s[0].n, "api"), apis = seq(s[0].p, s[0].n, "apis");
  /* discovery and cluster facts: no tenant needed */
  if (is_read(m)) {
    if ((n == 1 && seq(s[0].p, s[0].n, "version")) || seq(s[0].p, s[0].n, "openapi")) return 0;
    if ((api || apis) && n <= (api ? 2 : 3)) {
      if (n == 1) {
        t->learn = L_KUBE_DISC;
        t->ref[0] = api ? DISC_API : DISC_APIS;
      } else if (n == (api ? 2 : 3)) {
        t->learn = L_KUBE_DISC;
        t->ref[0] = DISC_LIST;
        snprintf(t->group, sizeof t->group, "%.*s", api ? 0 : (int)s[1].n, api ? "" : s[1].p);
        snprintf(t->version, sizeof t->version, "%.*s", (int)s[n - 1].n, s[n - 1].p);
      }
      return 0;
    }
  }
  if (!api && !apis) return refuse(why, wn, "kube: cannot classify %.*s", (int)s[0].n, s[0].p);
  if (!tenant)
    return refuse(why, wn,
                  "kube: a request bound to no tenant may only read discovery, /version "
                  "and /openapi");
  const seg *grp = api ? NULL : &s[1], *ver = api ? &s[1] : &s[2];
  const seg *rest = s + (api ? 2 : 3);
  int rn = n - (api ? 2 : 3);
  const char *gp = grp ? grp->p : "";
  size_t gl = grp ? grp->n : 0;
  if (rn <= 0) return refuse(why, wn, "kube: %s on an API group", m);
  /* kube.can_i: a question about the caller's own permissions */
  if (is_method(m, "POST") && rn == 1 && seq(gp, gl, "authorization.k8s.io") &&
      seq(ver->p, ver->n, "v1") && seq(rest[0].p, rest[0].n, "selfsubjectaccessreviews"))
    return kube_ssar(g, r, why, wn);
  int core_ns = api && seq(rest[0].p, rest[0].n, "namespaces");
  if (core_ns && rn == 1 && is_method(m, "GET")) {
    const char *sel = param_of(p, "labelSelector");
    char want[512];
    snprintf(want, sizeof want, "%s=%s", label_kube(g), tenant);
    if (sel && !strcmp(sel, want)) {
      t->learn = L_KUBE_NS;
      return 0;
    }
  }
  if (core_ns && rn == 2) { /* the Namespace object itself */
    if (!ns_owned(g, tenant, rest[1].p, rest[1].n))
      return refuse(why, wn, "kube: namespace %.*s does not belong to tenant %s",
                    (int)(rest[1].n > 63 ? 63 : rest[1].n), rest[1].p, tenant);
    if (is_read(m)) {
      if (is_method(m, "GET")) {
        t->learn = L_KUBE_NS_OBJ;
        snprintf(t->ref, sizeof t->ref, "%.*s", (int)rest[1].n, rest[1].p);
      }
      return 0;
    }
    if (is_method(m, "PATCH")) {
      if (kube_patch_ok(g, r, NULL, 1, why, wn) != 0) return -1;
      return g->allow_label_change ? 0 : kube_ns_patch(g, r, p, &rest[1], t, why, wn);
    }
    if (!sl_has(&g->allow_cw, "namespaces", 10))
      return refuse(why, wn,
                    "kube: %s of namespace %.*s: a cluster-scoped write (config "
                    "kube.allow_cluster_writes)",
                    m, (int)rest[1].n, rest[1].p);
    return 0;
  }
  if (seq(rest[0].p, rest[0].n, "namespaces") && rn >= 3) { /* a namespaced resource */
    const seg *ns = &rest[1], *res = &rest[2];
    if (rn > 5) return refuse(why, wn, "kube: cannot classify a path this deep");
    if (!ns_label(ns)) return refuse(why, wn, "kube: namespace segment is not a DNS label");
    if (!ns_owned(g, tenant, ns->p, ns->n))
      return refuse(why, wn, "kube: namespace %.*s does not belong to tenant %s", (int)ns->n, ns->p,
                    tenant);
    kres *e = res_find(g, gp, gl, ver->p, ver->n, res->p, res->n);
    if (!e || !e->namespaced)
      return refuse(why, wn,
                    "kube: cannot classify %.*s in %.*s%s%.*s (not a namespaced resource "
                    "seen in discovery)",
                    (int)res->n, res->p, (int)gl, gp, gl ? "/" : "", (int)ver->n, ver->p);
    if (field_ns_pinned(p, ns, why, wn) != 0) return -1;
    if (rn == 5) {
      if (dangerous_sub(g, &rest[4], why, wn) != 0) return -1;
      if (!sl_has(&e->subs, rest[4].p, rest[4].n))
        return refuse(why, wn, "kube: cannot classify subresource %.*s/%.*s", (int)res->n, res->p,
                      (int)rest[4].n, rest[4].p);
      if (seq(rest[4].p, rest[4].n, "log") && !is_read(m))
        return refuse(why, wn, "kube: %s of a log subresource (logs are only read)", m);
    }
    return is_method(m, "PATCH") ? kube_patch_ok(g, r, ns, 0, why, wn) : 0;
  }
  /* a resource addressed without a namespace */
  const seg *res = &rest[0];
  if (rn > 3) return refuse(why, wn, "kube: cannot classify a path this deep");
  kres *e = res_find(g, gp, gl, ver->p, ver->n, res->p, res->n);
  if (!e)
    return refuse(why, wn, "kube: cannot classify %.*s in %.*s%s%.*s (not seen in discovery)",
                  (int)res->n, res->p, (int)gl, gp, gl ? "/" : "", (int)ver->n, ver->p);
  if (e->namespaced)
    return refuse(why, wn, "kube: %.*s is namespaced; addressed across all namespaces", (int)res->n,
                  res->p);
  if (rn == 3) {
    if (dangerous_sub(g, &rest[2], why, wn) != 0) return -1;
    if (!sl_has(&e->subs, rest[2].p, rest[2].n))
      return refuse(why, wn, "kube: cannot classify subresource %.*s/%.*s", (int)res->n, res->p,
                    (int)rest[2].n, rest[2].p);
  }
  if (!is_read(m) && !sl_has(&g->allow_cw, res->p, res->n))
    return refuse(why, wn,
                  "kube: %s of cluster-scoped %.*s is a cluster-scoped write (config "
                  "kube.allow_cluster_writes)",
                  m, (int)res->n, res->p);
  return is_method(m, "PATCH") ? kube_patch_ok(g, r, NULL, 0, why, wn) : 0;
}

/* ---- kube-lease: serve.ha's Leases, one namespace, nothing else (src/serve/lease.lua) ----
 * GET and PUT of /apis/coordination.k8s.io/v1/namespaces/<ns>/leases/<name>, POST of the
 * collection; no query; a body is a Lease named by the path (PUT) in the bound namespace. */
static int lease_name_ok(const char *s, size_t n) {
  if (n == 0 || n > 253 || s[0] == '.' || s[0] == '-' || s[n - 1] == '.' || s[n - 1] == '-')
    return 0;
  for (size_t i = 0; i < n; i++)
    if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '-' ||
          s[i] == '.'))
      return 0;
  return 1;
}

static int lease_rule(const rbl_gate *g, const rbl_gate_req *r, const parsed *p, char *why,
                      size_t wn) {
  const seg *s = p->segs;
  int n = p->nseg;
  const char *m = r->method;
  int get = is_method(m, "GET"), post = is_method(m, "POST"), put = is_method(m, "PUT");
  if (!get && !post && !put)
    return refuse(why, wn, "kube-lease: method %s (only GET, POST and PUT of Leases)", m);
  if (p->nparam || p->qbuf) return refuse(why, wn, "kube-lease: a query on a Lease request");
  if (n < 6 || n > 7 || !seq(s[0].p, s[0].n, "apis") ||
      !seq(s[1].p, s[1].n, "coordination.k8s.io") || !seq(s[2].p, s[2].n, "v1") ||
      !seq(s[3].p, s[3].n, "namespaces") || !seq(s[5].p, s[5].n, "leases"))
    return refuse(why, wn,
                  "kube-lease: only /apis/coordination.k8s.io/v1/namespaces/%s/leases[/NAME] "
                  "may be reached",
                  g->lease_ns);
  if (!seq(s[4].p, s[4].n, g->lease_ns))
    return refuse(why, wn, "kube-lease: namespace %.*s is not the lease namespace %s",
                  (int)(s[4].n > 63 ? 63 : s[4].n), s[4].p, g->lease_ns);
  if (n == 7 && !lease_name_ok(s[6].p, s[6].n))
    return refuse(why, wn, "kube-lease: %.*s is not a Lease name", (int)(s[6].n > 63 ? 63 : s[6].n),
                  s[6].p);
  if (post ? n != 6 : n != 7)
    return refuse(why, wn, "kube-lease: %s %s", m,
                  post ? "of a named Lease (create on the collection)"
                       : "of the collection (only named Leases are read and updated)");
  if (get) return r->body && r->body_len ? refuse(why, wn, "kube-lease: a GET with a body") : 0;
  cJSON *j = r->body ? cJSON_ParseWithLength(r->body, r->body_len) : NULL;
  cJSON *md = cJSON_GetObjectItemCaseSensitive(j, "metadata");
  const char *av = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, "apiVersion"));
  const char *kind = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, "kind"));
  cJSON *ns = cJSON_GetObjectItemCaseSensitive(md, "namespace");
  const char *name = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(md, "name"));
  int rc = 0;
  if (!cJSON_IsObject(j) || !cJSON_IsObject(md) || !av || !kind ||
      strcmp(av, "coordination.k8s.io/v1") != 0 || strcmp(kind, "Lease") != 0)
    rc = refuse(why, wn, "kube-lease: the body is not a coordination.k8s.io/v1 Lease");
  else if (ns && (!cJSON_IsString(ns) || strcmp(ns->valuestring, g->lease_ns) != 0))
    rc = refuse(why, wn, "kube-lease: the body names a namespace other than %s", g->lease_ns);
  else if (!name || !lease_name_ok(name, strlen(name)))
    rc = refuse(why, wn, "kube-lease: the body names no valid Lease name");
  else if (put && !seq(s[6].p, s[6].n, name))
    rc = refuse(why, wn, "kube-lease: the body names Lease %.63s, the path %.*s", name,
                (int)(s[6].n > 63 ? 63 : s[6].n), s[6].p);
  cJSON_Delete(j);
  return rc;
}

/* ---- Prometheus: reads of the HTTP API, every query scoped (src/families/prom/promql.c) ---- */

static int prom_rule(const rbl_gate *g, const rbl_gate_req *r, const parsed *p, char *why,
                     size_t wn) {
  static const char *const params[] = {"query", "time", "start", "end", "step", "timeout", NULL};
  if (!is_read(r->method)) return refuse(why, wn, "prom: only reads are sent to Prometheus");
  int q =
      p->nseg == 3 && seq(p->segs[0].p, p->segs[0].n, "api") &&
      seq(p->segs[1].p, p->segs[1].n, "v1") &&
      (seq(p->segs[2].p, p->segs[2].n, "query") || seq(p->segs[2].p, p->segs[2].n, "query_range"));
  int info = p->nseg == 4 && seq(p->segs[0].p, p->segs[0].n, "api") &&
             seq(p->segs[1].p, p->segs[1].n, "v1") && seq(p->segs[2].p, p->segs[2].n, "status") &&
             seq(p->segs[3].p, p->segs[3].n, "buildinfo");
  if (!q && !info) return refuse(why, wn, "prom: not a query endpoint of the Prometheus API");
  for (int i = 0; i < p->nparam; i++)
    if (!in_list(params, p->params[i].key))
      return refuse(why, wn, "prom: query parameter %s is not one rbl sends", p->params[i].key);
  if (info) return p->nparam == 0 ? 0 : refuse(why, wn, "prom: parameters on buildinfo");
  const char *expr = param_of(p, "query");
  if (!expr) return refuse(why, wn, "prom: a query request without a query");
  const char *label = g->prom_label ? g->prom_label : "tenant";
  char w1[300] = "", w2[300] = "";
  if (r->tenant) { /* exactly its own series: label="t", or the set {t} of prom.tenants */
    const char *one[1] = {r->tenant};
    if (rbl_promql_check(expr, label, r->tenant, w1, sizeof w1) == 0 ||
        rbl_promql_check_set(expr, label, one, 1, w2, sizeof w2) == 0)
      return 0;
    return refuse(why, wn, "prom: the query is not scoped to tenant %s: %s", r->tenant, w1);
  }
  if (g->prom_unscoped)
    return rbl_promql_parse(expr, w1, sizeof w1) == 0 ? 0 : refuse(why, wn, "prom: %s", w1);
  if (g->run_tenants.n > 0 &&
      rbl_promql_check_set(expr, label, (const char *const *)g->run_tenants.v, g->run_tenants.n, w1,
                           sizeof w1) == 0)
    return 0;
  return refuse(why, wn,
                "prom: a call bound to no tenant may only query the run's tenants as a set "
                "(or the config sets prom.unscoped = true): %s",
                w1);
}

/* ---- the request decision ---- */

int rbl_gate_http(rbl_gate *g, const rbl_gate_req *r, rbl_gate_ticket *t, char *why, size_t wn) {
  memset(t, 0, sizeof *t);
  if (!r->method || !r->url) return refuse(why, wn, "a request without method or URL");
  if (r->tenant) {
    if (strlen(r->tenant) >= sizeof t->tenant) return refuse(why, wn, "tenant name too long");
    snprintf(t->tenant, sizeof t->tenant, "%s", r->tenant);
  }
  if (url_hygiene(r->url, r->url_len, why, wn) != 0) return -1;
  const char *rest = NULL;
  int cls = 0; /* 1 docker, 2 kube, 3 prom */
  if (r->unix_socket) {
    if (!g->docker_socket || strcmp(r->unix_socket, g->docker_socket) != 0)
      return refuse(why, wn,
                    "cannot classify a request to unix socket %s (not the Docker "
                    "endpoint)",
                    r->unix_socket);
    if (!has_base(r->url, r->url_len, "http://docker", &rest) &&
        !has_base(r->url, r->url_len, "http://localhost", &rest))
      return refuse(why, wn, "cannot classify URL %.*s on the Docker socket", (int)r->url_len,
                    r->url);
    cls = 1;
  } else {
    const char *lrest = NULL;
    /* serve.ha's lease requests are bound to no tenant; on the lease server such a request is
       a Lease request and nothing else */
    if (!r->tenant && has_base(r->url, r->url_len, g->lease_base, &lrest)) {
      parsed lp;
      int lrc = parse_rest(lrest, r->url_len - (size_t)(lrest - r->url), &lp, why, wn);
      if (lrc == 0) lrc = lease_rule(g, r, &lp, why, wn);
      free(lp.qbuf);
      t->learn = L_NONE;
      return lrc;
    }
    int k = has_base(r->url, r->url_len, g->kube_base, &rest);
    const char *drest = NULL;
    int d = has_base(r->url, r->url_len, g->docker_http, &drest) ||
            has_base(r->url, r->url_len, g->docker_https, &drest);
    if (k && d) return refuse(why, wn, "the URL matches both the Docker and Kubernetes endpoints");
    if (d) rest = drest;
    cls = k ? 2 : d ? 1 : 0;
    const char *prest = NULL;
    if (!cls && has_base(r->url, r->url_len, g->prom_url, &prest)) {
      rest = prest;
      cls = 3;
    }
    /* notify: a POST to exactly a destination the config names (src/families/notify) */
    if (!cls && g->notify_L) {
      char *u = strndup(r->url, r->url_len);
      char w[300];
      int ok = u && rbl_notify_allowed(g->notify_L, r->method, u, w, sizeof w) == 0;
      free(u);
      if (ok) return 0;
    }
    if (!cls) {
      int shown = (int)strcspn(r->url, "?");
      return refuse(why, wn, "cannot classify %s %.*s (no bound endpoint matches)", r->method,
                    shown > 200 ? 200 : shown, r->url);
    }
  }
  parsed p;
  int rc = parse_rest(rest, r->url_len - (size_t)(rest - r->url), &p, why, wn);
  if (rc == 0)
    rc = cls == 1   ? docker_rule(g, r, &p, t, why, wn)
         : cls == 2 ? kube_rule(g, r, &p, t, why, wn)
                    : prom_rule(g, r, &p, why, wn);
  free(p.qbuf);
  if (rc != 0) t->learn = L_NONE;
  return rc;
}

/* ---- answers ---- */

static const char *label_in(cJSON *labels, const char *key) {
  cJSON *v = cJSON_GetObjectItemCaseSensitive(labels, key);
  return cJSON_IsString(v) ? v->valuestring : NULL;
}

static int answer_inspect(rbl_gate *g, const rbl_gate_ticket *t, long status, cJSON *j,
                          const char *body, size_t len, char *why, size_t wn) {
  if (status != 200) {
    /* dockerd 20.10 answers 500 "Multiple IDs found with provided prefix" */
    cJSON *m = cJSON_GetObjectItemCaseSensitive(j, "message");
    const char *msg = cJSON_GetStringValue(m);
    if (msg && strcasestr(msg, "multiple ids found"))
      return refuse(why, wn,
                    "container reference \"%s\" is ambiguous: it is a prefix of several "
                    "container ids (the daemon says: %.200s); use the name or the full id",
                    t->ref, msg);
    return 0; /* not found, daemon errors: nothing learned, host Lua reports them */
  }
  cJSON *id = cJSON_GetObjectItemCaseSensitive(j, "Id");
  const char *ids = cJSON_GetStringValue(id);
  if (!ids || !is_hex64(ids, strlen(ids)))
    return refuse(why, wn, "the daemon's answer for container %s holds no valid id", t->ref);
  if (is_hex64(t->ref, strlen(t->ref)) && strcmp(ids, t->ref) != 0)
    return refuse(why, wn, "the daemon answered for container %.12s when asked for %.12s", ids,
                  t->ref);
  cJSON *cfg = cJSON_GetObjectItemCaseSensitive(j, "Config");
  const char *owner = label_in(cJSON_GetObjectItemCaseSensitive(cfg, "Labels"), label_docker(g));
  if (!owner || strcmp(owner, t->tenant) != 0) {
    owned_drop(g->ctr, &g->nctr, ids);
    if (owner) owned_put(&g->ctr, &g->nctr, ids, owner);
    if (owner)
      return refuse(why, wn, "container %s belongs to tenant %.63s, not %s", t->ref, owner,
                    t->tenant);
    return refuse(why, wn, "container %s belongs to no tenant (no %s label), not %s", t->ref,
                  label_docker(g), t->tenant);
  }
  owned_put(&g->ctr, &g->nctr, ids, owner);
  return 0;
}

static int answer_list(rbl_gate *g, const rbl_gate_ticket *t, long status, cJSON *j, char *why,
                       size_t wn) {
  if (status != 200 || !cJSON_IsArray(j)) return 0;
  cJSON *c;
  cJSON_ArrayForEach(c, j) {
    const char *id = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(c, "Id"));
    const char *owner = label_in(cJSON_GetObjectItemCaseSensitive(c, "Labels"), label_docker(g));
    if (!id || !is_hex64(id, strlen(id))) continue;
    if (!owner || strcmp(owner, t->tenant) != 0)
      return refuse(why, wn,
                    "the daemon's container list for tenant %s holds container %.12s of "
                    "%s",
                    t->tenant, id, owner ? owner : "no tenant");
    owned_put(&g->ctr, &g->nctr, id, owner);
  }
  return 0;
}

static void learn_aggregated(rbl_gate *g, const rbl_gate_ticket *t, cJSON *j) {
  cJSON *item;
  cJSON_ArrayForEach(item, cJSON_GetObjectItemCaseSensitive(j, "items")) {
    const char *grp = "";
    if (t->ref[0] == DISC_APIS) {
      grp = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(
          cJSON_GetObjectItemCaseSensitive(item, "metadata"), "name"));
      if (!clean_name(grp)) continue;
    }
    cJSON *v;
    cJSON_ArrayForEach(v, cJSON_GetObjectItemCaseSensitive(item, "versions")) {
      const char *ver = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(v, "version"));
      if (!clean_name(ver)) continue;
      cJSON *rs;
      cJSON_ArrayForEach(rs, cJSON_GetObjectItemCaseSensitive(v, "resources")) {
        const char *name = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(rs, "resource"));
        const char *scope = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(rs, "scope"));
        if (!clean_name(name) || !scope) continue;
        kres *e = res_put(g, grp, ver, name, !strcmp(scope, "Namespaced"));
        cJSON *sr;
        cJSON_ArrayForEach(sr, cJSON_GetObjectItemCaseSensitive(rs, "subresources")) {
          const char *sub =
              cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(sr, "subresource"));
          if (clean_name(sub)) res_sub(e, sub);
        }
      }
    }
  }
}

static void learn_list(rbl_gate *g, const rbl_gate_ticket *t, cJSON *j) {
  const char *gv = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, "groupVersion"));
  char want[330];
  if (t->group[0])
    snprintf(want, sizeof want, "%s/%s", t->group, t->version);
  else
    snprintf(want, sizeof want, "%s", t->version);
  if (gv && strcmp(gv, want) != 0) return; /* an answer about another group teaches nothing */
  cJSON *rs;
  /* two passes: resources first, then their subresources ("pods/exec") */
  for (int pass = 0; pass < 2; pass++) {
    cJSON_ArrayForEach(rs, cJSON_GetObjectItemCaseSensitive(j, "resources")) {
      const char *name = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(rs, "name"));
      cJSON *nsd = cJSON_GetObjectItemCaseSensitive(rs, "namespaced");
      if (!name || strlen(name) > 253) continue;
      const char *slash = strchr(name, '/');
      char base[254];
      snprintf(base, sizeof base, "%.*s", (int)(slash ? (size_t)(slash - name) : strlen(name)),
               name);
      if (!clean_name(base)) continue;
      if (pass == 0 && !slash && cJSON_IsBool(nsd))
        res_put(g, t->group, t->version, base, cJSON_IsTrue(nsd));
      if (pass == 1 && slash && clean_name(slash + 1) && !strchr(slash + 1, '/'))
        res_sub(res_find(g, t->group, strlen(t->group), t->version, strlen(t->version), base,
                         strlen(base)),
                slash + 1);
    }
  }
}

static void learn_namespaces(rbl_gate *g, const rbl_gate_ticket *t, cJSON *j) {
  cJSON *item;
  cJSON_ArrayForEach(item, cJSON_GetObjectItemCaseSensitive(j, "items")) {
    cJSON *md = cJSON_GetObjectItemCaseSensitive(item, "metadata");
    const char *name = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(md, "name"));
    const char *owner = label_in(cJSON_GetObjectItemCaseSensitive(md, "labels"), label_kube(g));
    seg s = {name, name ? strlen(name) : 0};
    if (name && ns_label(&s) && owner && !strcmp(owner, t->tenant)) ns_learn(g, t->tenant, name);
  }
}

int rbl_gate_answer(rbl_gate *g, const rbl_gate_ticket *t, long status, const char *body,
                    size_t len, char *why, size_t wn) {
  if (!t || t->learn == L_NONE) return 0;
  cJSON *j = body ? cJSON_ParseWithLength(body, len) : NULL;
  int rc = 0;
  switch (t->learn) {
  case L_DOCKER_INSPECT: rc = answer_inspect(g, t, status, j, body, len, why, wn); break;
  case L_DOCKER_LIST: rc = answer_list(g, t, status, j, why, wn); break;
  case L_DOCKER_EXEC: {
    const char *id = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, "Id"));
    if (status == 201 && id && is_hex64(id, strlen(id)))
      owned_put(&g->exe, &g->nexe, id, t->tenant);
    break;
  }
  case L_KUBE_DISC:
    if (status != 200 || !cJSON_IsObject(j)) break;
    if (t->ref[0] == DISC_LIST)
      learn_list(g, t, j);
    else
      learn_aggregated(g, t, j);
    break;
  case L_KUBE_NS:
    if (status == 200) learn_namespaces(g, t, j);
    break;
  case L_KUBE_NS_OBJ: answer_ns_obj(g, t, status, j); break;
  case L_KUBE_NS_PATCH: rc = answer_ns_patch(g, t, status, j, why, wn); break;
  }
  cJSON_Delete(j);
  return rc;
}

/* ---- binding and spawning ---- */

static int clean_base(const char *u) {
  const char *hp = !strncmp(u, "https://", 8) ? u + 8 : !strncmp(u, "http://", 7) ? u + 7 : NULL;
  if (!hp) return 0;
  size_t al = strcspn(hp, "/");
  if (!clean_authority(hp, al)) return 0;
  const char *path = hp + al;
  for (const char *c = path; *c; c++)
    if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
          *c == '-' || *c == '_' || *c == '.' || *c == '~' || *c == '/'))
      return 0;
  return !strstr(path, "//") && !strstr(path, "/.");
}

int rbl_gate_bind(rbl_gate *g, const char *cls, const char *value, char *why, size_t wn) {
  char **slot;
  char v[1024];
  if (!value || strlen(value) >= sizeof v) return refuse(why, wn, "bind %s: no value", cls);
  snprintf(v, sizeof v, "%s", value);
  if (!strcmp(cls, "kube")) {
    size_t n = strlen(v);
    while (n > 0 && v[n - 1] == '/')
      v[--n] = 0;
    if (!clean_base(v))
      return refuse(why, wn, "kube: server URL %.200s is not a plain http(s)://host:port[/path]",
                    value);
    slot = &g->kube_base;
  } else if (!strcmp(cls, "kube-lease")) { /* "BASE NAMESPACE" */
    char *sp = strchr(v, ' ');
    if (!sp) return refuse(why, wn, "kube-lease: bind \"SERVER NAMESPACE\"");
    *sp = 0;
    size_t n = strlen(v);
    while (n > 0 && v[n - 1] == '/')
      v[--n] = 0;
    seg nsg = {sp + 1, strlen(sp + 1)};
    if (!clean_base(v))
      return refuse(why, wn,
                    "kube-lease: server URL %.200s is not a plain http(s)://host:port[/path]", v);
    if (!ns_label(&nsg))
      return refuse(why, wn, "kube-lease: lease namespace %.63s is not a DNS label", sp + 1);
    if (g->lease_base) {
      if (!strcmp(g->lease_base, v) && !strcmp(g->lease_ns, sp + 1)) return 0;
      return refuse(why, wn, "kube-lease is bound to %s %s; %s %s refused", g->lease_base,
                    g->lease_ns, v, sp + 1);
    }
    g->lease_base = strdup(v);
    g->lease_ns = strdup(sp + 1);
    return g->lease_base && g->lease_ns ? 0 : refuse(why, wn, "out of memory");
  } else if (!strcmp(cls, "kube-plugin")) {
    if (v[0] != '/')
      return refuse(why, wn, "kube: credential plugin %s is not an absolute path", v);
    slot = &g->kube_plugin;
  } else {
    return refuse(why, wn, "bind: unknown endpoint class %s", cls);
  }
  if (*slot) {
    if (!strcmp(*slot, v)) return 0;
    return refuse(why, wn, "%s is bound to %s for this run; %s refused", cls, *slot, v);
  }
  *slot = strdup(v);
  return *slot ? 0 : refuse(why, wn, "out of memory");
}

static const char *base_name(const char *p) {
  const char *s = strrchr(p, '/');
  return s ? s + 1 : p;
}

/* Does candidate name the same file as path (whose realpath is rp), under the same name? */
static int same_program(const char *cand, const char *path, const char *rp) {
  char rc[PATH_MAX];
  return realpath(cand, rc) && !strcmp(rc, rp) && !strcmp(base_name(cand), base_name(path));
}

/* Does the allow-list entry a (an absolute path, or a bare name searched in the fixed PATH and
 * then the process PATH) name the program at path (whose realpath is rp)? */
static int entry_names(const rbl_gate *g, const char *a, const char *path, const char *rp) {
  if (strchr(a, '/')) return a[0] == '/' && same_program(a, path, rp);
  char dirs[8192];
  snprintf(dirs, sizeof dirs, "%s:%s", FIXED_PATH, g->path_env ? g->path_env : "");
  for (char *save = NULL, *d = strtok_r(dirs, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
    char cand[PATH_MAX];
    if (d[0] != '/') continue; /* relative PATH entries never count */
    if ((size_t)snprintf(cand, sizeof cand, "%s/%s", d, a) >= sizeof cand) continue;
    if (same_program(cand, path, rp)) return 1;
  }
  return 0;
}

int rbl_gate_spawn(rbl_gate *g, int cls, const char *path, char *why, size_t wn) {
  if (!path || path[0] != '/')
    return refuse(why, wn, "program %s is not an absolute path", path ? path : "(none)");
  char rp[PATH_MAX];
  if (!realpath(path, rp)) return refuse(why, wn, "program %s cannot be resolved", path);
  if (cls == RBL_GATE_KUBE_PLUGIN) {
    if (!g->kube_plugin || strcmp(g->kube_plugin, path) != 0)
      return refuse(why, wn, "credential plugin %s is not the one the kubeconfig names (%s)", path,
                    g->kube_plugin ? g->kube_plugin : "none bound");
    return 0;
  }
  for (size_t i = 0; i < g->exec_allow.n; i++)
    if (entry_names(g, g->exec_allow.v[i], path, rp)) return 0;
  return refuse(why, wn, "program %s is not on the exec allow list", path);
}

/* Names every exec may set: locale, time zone, terminal. None of them makes a program load code.
 */
static const char *const BASE_ENV[] = {"LANG",        "LANGUAGE", "LC_ALL",     "LC_CTYPE",
                                       "LC_COLLATE",  "LC_TIME",  "LC_NUMERIC", "LC_MONETARY",
                                       "LC_MESSAGES", "TZ",       "TERM",       "NO_COLOR"};

/* Does a "PROGRAM\n..." rule apply to the program at path? *rest points past the newline. */
static int rule_for(const rbl_gate *g, const char *rule, const char *path, const char *rp,
                    const char **rest) {
  const char *nl = strchr(rule, '\n');
  char prog[PATH_MAX];
  if (!nl || (size_t)(nl - rule) >= sizeof prog) return 0;
  memcpy(prog, rule, (size_t)(nl - rule));
  prog[nl - rule] = 0;
  *rest = nl + 1;
  return entry_names(g, prog, path, rp);
}

/* One argv rule: newline-separated globs, one per argument after the program; a last glob "..."
 * matches any remaining arguments (also none). */
static int argv_matches(const char *globs, char *const *argv) {
  size_t i = 1;
  for (const char *p = globs; *globs;) { /* "" is the rule of no arguments */
    const char *nl = strchr(p, '\n');
    size_t n = nl ? (size_t)(nl - p) : strlen(p);
    char glob[4096];
    if (n >= sizeof glob) return 0;
    memcpy(glob, p, n);
    glob[n] = 0;
    if (!nl && !strcmp(glob, "...")) return 1;
    if (!argv[i] || fnmatch(glob, argv[i], 0) != 0) return 0;
    i++;
    if (!nl) break;
    p = nl + 1;
  }
  return argv[i] == NULL;
}

int rbl_gate_spawn_exec(rbl_gate *g, const char *path, char *const *argv, char *const *env,
                        char *why, size_t wn) {
  if (rbl_gate_spawn(g, RBL_GATE_EXEC, path, why, wn) != 0) return -1;
  char rp[PATH_MAX];
  if (!realpath(path, rp)) return refuse(why, wn, "program %s cannot be resolved", path);
  for (size_t k = 0; env && env[k]; k++) {
    const char *eq = strchr(env[k], '=');
    size_t n = eq ? (size_t)(eq - env[k]) : strlen(env[k]);
    int ok = sl_has(&g->exec_env, env[k], n);
    for (size_t i = 0; !ok && i < sizeof BASE_ENV / sizeof *BASE_ENV; i++)
      ok = seq(env[k], n, BASE_ENV[i]);
    for (size_t i = 0; !ok && i < g->prog_env.n; i++) {
      const char *name;
      ok = rule_for(g, g->prog_env.v[i], path, rp, &name) && seq(env[k], n, name);
    }
    if (!ok)
      return refuse(why, wn,
                    "exec %s: environment variable %.*s is not on the allow list (the child "
                    "environment is PATH, LANG and allowed names only; to allow it, add it to "
                    "exec.env, or to exec.programs[\"%s\"].env, in the config)",
                    path, (int)(n > 200 ? 200 : n), env[k], path);
  }
  int rules = 0;
  for (size_t i = 0; i < g->prog_argv.n; i++) {
    const char *globs;
    if (!rule_for(g, g->prog_argv.v[i], path, rp, &globs)) continue;
    rules++;
    if (argv && argv_matches(globs, argv)) return 0;
  }
  if (rules)
    return refuse(why, wn,
                  "exec %s: the arguments match none of the %d argv rule(s) the config gives "
                  "for this program (exec.programs[\"%s\"].argv)",
                  path, rules, path);
  return 0;
}

/* ---- the engine's gate, configured from rbl.config (raw reads: no metamethod runs) ---- */

/* config[sect][k] == true sets the gate's flag key to "1". */
static void cfg_flag(lua_State *L, rbl_gate *g, int cfg, const char *sect, const char *k,
                     const char *key) {
  rbl__raw_field(L, cfg, sect);
  if (rbl__raw_field(L, -1, k) == LUA_TBOOLEAN && lua_toboolean(L, -1)) rbl_gate_set(g, key, "1");
  lua_pop(L, 2);
}

static void cfg_string(lua_State *L, rbl_gate *g, int cfg, const char *sect, const char *k,
                       const char *key) {
  rbl__raw_field(L, cfg, sect);
  if (rbl__raw_field(L, -1, k) == LUA_TSTRING && lua_rawlen(L, -1) > 0)
    rbl_gate_set(g, key, lua_tostring(L, -1));
  lua_pop(L, 2);
}

static void cfg_list(lua_State *L, rbl_gate *g, int cfg, const char *sect, const char *k,
                     const char *key) {
  rbl__raw_field(L, cfg, sect);
  if (rbl__raw_field(L, -1, k) == LUA_TTABLE) {
    lua_Integer n = (lua_Integer)lua_rawlen(L, -1);
    for (lua_Integer i = 1; i <= n; i++) {
      if (lua_rawgeti(L, -1, i) == LUA_TSTRING) rbl_gate_add(g, key, lua_tostring(L, -1));
      lua_pop(L, 1);
    }
  }
  lua_pop(L, 2);
}

/* One argv rule (the table at the top of the stack) as "PROGRAM\nGLOB\nGLOB...". A glob that
 * holds a newline cannot be encoded: the rule then becomes one no argv matches (refused, never
 * widened). Returns a malloc'd string or NULL. */
static char *cfg_argv_rule(lua_State *L, const char *prog) {
  size_t cap = strlen(prog) + 2, len = 0;
  char *r = malloc(cap);
  if (!r) return NULL;
  len = (size_t)sprintf(r, "%s\n", prog);
  for (lua_Integer k = 1; lua_rawgeti(L, -1, k) == LUA_TSTRING; k++) {
    size_t n;
    const char *glob = lua_tolstring(L, -1, &n);
    if (memchr(glob, '\n', n) || strlen(glob) != n) glob = "\n\n", n = 2; /* never matches */
    char *t = realloc(r, cap = len + n + 2);
    if (!t) {
      free(r);
      lua_pop(L, 1);
      return NULL;
    }
    r = t;
    if (k > 1) r[len++] = '\n';
    memcpy(r + len, glob, n);
    r[len += n] = 0;
    lua_pop(L, 1);
  }
  lua_pop(L, 1); /* what ended the rule */
  return r;
}

/* exec.programs = { [PROGRAM] = { env = {NAME...}, argv = { {GLOB...}... } } } ->
 * "exec.program.env" / "exec.program.argv" entries. */
static void cfg_programs(lua_State *L, rbl_gate *g, int cfg) {
  int top = lua_gettop(L);
  rbl__raw_field(L, cfg, "exec");
  if (rbl__raw_field(L, -1, "programs") == LUA_TTABLE) {
    int progs = lua_gettop(L);
    lua_pushnil(L);
    while (lua_next(L, progs)) {
      int spec = lua_gettop(L);
      if (lua_type(L, -2) == LUA_TSTRING && lua_istable(L, spec)) {
        const char *prog = lua_tostring(L, -2);
        if (rbl__raw_field(L, spec, "env") == LUA_TTABLE)
          for (lua_Integer i = 1; lua_rawgeti(L, -1, i) == LUA_TSTRING; i++) {
            lua_pushfstring(L, "%s\n%s", prog, lua_tostring(L, -1));
            rbl_gate_add(g, "exec.program.env", lua_tostring(L, -1));
            lua_pop(L, 2);
          }
        lua_settop(L, spec);
        if (rbl__raw_field(L, spec, "argv") == LUA_TTABLE)
          for (lua_Integer i = 1; lua_rawgeti(L, spec + 1, i) == LUA_TTABLE; i++) {
            char *rule = cfg_argv_rule(L, prog);
            if (rule) rbl_gate_add(g, "exec.program.argv", rule);
            free(rule);
          }
      }
      lua_settop(L, spec - 1); /* keep the key */
    }
  }
  lua_settop(L, top);
}

/* The namespaces list at the top of the stack -> a tenant with an authoritative list. */
static void cfg_tenant(lua_State *L, rbl_gate *g, const char *name, int has_ns) {
  const char *ns[256];
  size_t n = 0;
  if (has_ns) {
    lua_Integer len = (lua_Integer)lua_rawlen(L, -1);
    for (lua_Integer i = 1; i <= len && n < 256; i++) {
      lua_rawgeti(L, -1, i);
      if (lua_type(L, -1) == LUA_TSTRING) ns[n++] = lua_tostring(L, -1);
      lua_pop(L, 1); /* the string stays alive in the table */
    }
  }
  rbl_gate_add_tenant(g, name, has_ns, ns, n);
}

static void cfg_tenants(lua_State *L, rbl_gate *g, int cfg) {
  if (rbl__raw_field(L, cfg, "tenants") != LUA_TTABLE) {
    lua_pop(L, 1);
    return;
  }
  int t = lua_gettop(L);
  lua_pushnil(L);
  while (lua_next(L, t)) {
    if (lua_type(L, -2) == LUA_TNUMBER && lua_type(L, -1) == LUA_TSTRING) {
      rbl_gate_add_tenant(g, lua_tostring(L, -1), 0, NULL, 0);
    } else if (lua_type(L, -2) == LUA_TSTRING) {
      const char *name = lua_tostring(L, -2);
      int has = 0;
      if (lua_istable(L, -1)) {
        if (rbl__raw_field(L, -1, "namespaces") == LUA_TTABLE)
          has = 1;
        else {
          lua_pop(L, 1);
          lua_pushvalue(L, -1);
          has = lua_rawlen(L, -1) > 0;
        }
        cfg_tenant(L, g, name, has);
        lua_pop(L, 1);
      } else {
        rbl_gate_add_tenant(g, name, 0, NULL, 0);
      }
    }
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
}

rbl_gate *rbl_gate_of(lua_State *L) {
  rbl_engine *e = rbl_engine_of(L);
  if (e->gate) return e->gate;
  rbl_gate *g = rbl_gate_new();
  if (!g) {
    luaL_error(L, "out of memory");
    return NULL;
  }
  lua_getfield(L, LUA_REGISTRYINDEX, "rbl.config");
  int cfg = lua_gettop(L);
  cfg_string(L, g, cfg, "labels", "docker", "labels.docker");
  cfg_string(L, g, cfg, "labels", "kube", "labels.kube");
  cfg_string(L, g, cfg, "prom", "url", "prom.url");
  cfg_string(L, g, cfg, "prom", "tenant_label", "prom.tenant_label");
  cfg_flag(L, g, cfg, "prom", "unscoped", "prom.unscoped");
  /* the run's authorised tenants, as C resolved them from --tenant (src/cli/tenants.c) */
  if (lua_getfield(L, LUA_REGISTRYINDEX, "rbl.tenants") == LUA_TTABLE) {
    for (lua_Integer i = 1; lua_rawgeti(L, -1, i) == LUA_TSTRING; i++) {
      rbl_gate_add(g, "run.tenants", lua_tostring(L, -1));
      lua_pop(L, 1);
    }
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  g->notify_L = e->L;
  cfg_list(L, g, cfg, "exec", "allow", "exec.allow");
  cfg_list(L, g, cfg, "exec", "env", "exec.env");
  cfg_programs(L, g, cfg);
  cfg_list(L, g, cfg, "kube", "allow_subresources", "kube.allow_subresources");
  cfg_list(L, g, cfg, "kube", "allow_cluster_writes", "kube.allow_cluster_writes");
  cfg_flag(L, g, cfg, "kube", "allow_tenant_label_change", "kube.allow_tenant_label_change");
  cfg_tenants(L, g, cfg);
  /* the Docker endpoint as docker.lua computes it: $DOCKER_HOST, config docker.host, default */
  const char *dh = getenv("DOCKER_HOST");
  if (dh && *dh) {
    rbl_gate_set(g, "docker.host", dh);
  } else {
    rbl__raw_field(L, cfg, "docker");
    if (rbl__raw_field(L, -1, "host") == LUA_TSTRING)
      rbl_gate_set(g, "docker.host", lua_tostring(L, -1));
    else
      rbl_gate_set(g, "docker.host", NULL);
    lua_pop(L, 2);
  }
  rbl_gate_set(g, "path", getenv("PATH"));
  lua_settop(L, cfg - 1);
  e->gate = g;
  return g;
}
