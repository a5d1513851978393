/* rbl serve's decisions and runs: routing an Alertmanager payload, dedup, cooldown, the brake,
 * the queue, the per-target lock, spawning each run as a child `rbl run`, and the spool replay. */
#include "audit.h"
#include "rbl.h"
#include "serve.h"
#include "ossl_dl.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static const double buckets[SRV_NBUCKET] = {1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600};

double rbl_serve_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static unsigned hash_str(const char *s) {
  unsigned h = 2166136261u;
  for (; *s; s++)
    h = (h ^ (unsigned char)*s) * 16777619u;
  return h % SRV_HASH;
}

static srv_incident *incident_get(srv_state *S, const char *id, int create) {
  unsigned h = hash_str(id);
  for (srv_incident *i = S->inc[h]; i; i = i->next)
    if (!strcmp(i->id, id)) return i;
  if (!create) return NULL;
  srv_incident *i = calloc(1, sizeof *i);
  if (!i) return NULL;
  snprintf(i->id, sizeof i->id, "%s", id);
  i->next = S->inc[h];
  S->inc[h] = i;
  return i;
}

/* The incident of an alert group for one route and tenant: stable across re-sends. */
static void incident_id(const char *group_key, const char *route, const char *tenant,
                        char out[64]) {
  EVP_MD_CTX *c = EVP_MD_CTX_new();
  unsigned char md[32];
  unsigned n = 0;
  EVP_DigestInit_ex(c, EVP_sha256(), NULL);
  EVP_DigestUpdate(c, group_key, strlen(group_key));
  EVP_DigestUpdate(c, "\n", 1);
  EVP_DigestUpdate(c, route, strlen(route));
  EVP_DigestUpdate(c, "\n", 1);
  EVP_DigestUpdate(c, tenant, strlen(tenant));
  EVP_DigestFinal_ex(c, md, &n);
  EVP_MD_CTX_free(c);
  char hex[17];
  for (int i = 0; i < 8; i++)
    snprintf(hex + 2 * i, 3, "%02x", md[i]);
  snprintf(out, 64, "am-%s-%s", tenant, hex);
}

static void new_run_id(char out[48]) {
  unsigned char r[6];
  if (RAND_bytes(r, sizeof r) != 1) memset(r, 0, sizeof r);
  time_t now = time(NULL);
  struct tm tm;
  gmtime_r(&now, &tm);
  char ts[20];
  strftime(ts, sizeof ts, "%Y%m%dT%H%M%SZ", &tm);
  snprintf(out, 48, "sr-%s-%02x%02x%02x%02x%02x%02x", ts, r[0], r[1], r[2], r[3], r[4], r[5]);
}

/* Runs accepted for route r within the last hour (the brake). */
static int route_hour_count(srv_state *S, int r, double now) {
  int n = 0;
  double *a = S->route_starts[r];
  for (int i = 0; i < S->route_nstarts[r]; i++)
    if (now - a[i] < 3600) a[n++] = a[i];
  S->route_nstarts[r] = n;
  return n;
}

static void route_count_add(srv_state *S, int r, double t) {
  int n = S->route_nstarts[r];
  double *a = realloc(S->route_starts[r], (size_t)(n + 1) * sizeof *a);
  if (!a) return;
  a[n] = t;
  S->route_starts[r] = a;
  S->route_nstarts[r] = n + 1;
}

static void run_free(srv_run *r) {
  cJSON_Delete(r->params);
  free(r);
}

/* How long ended runs still decide something: the longest cooldown, at least the brake's hour. */
static double horizon(const srv_state *S) {
  double h = 3600;
  for (int i = 0; i < S->cfg.nroutes; i++)
    if (S->cfg.routes[i].cooldown > h) h = S->cfg.routes[i].cooldown;
  return h;
}

/* Keeps the list bounded: ended runs beyond 1000 are dropped, oldest first, once they are past
 * the horizon (within it they decide cooldowns and the brake, and compaction writes them). The
 * brake bounds how many runs fit in the horizon. */
static void runs_trim(srv_state *S) {
  srv_run **pp = &S->runs, *prev = NULL;
  double old = rbl_serve_now() - horizon(S);
  while (S->nruns_done > 1000 && *pp) {
    srv_run *r = *pp;
    if (r->state == R_DONE && !r->proc_open && r->ended_at < old) {
      *pp = r->next;
      if (S->runs_tail == r) S->runs_tail = prev;
      run_free(r);
      S->nruns_done--;
      continue;
    }
    prev = r;
    pp = &r->next;
  }
}

/* Forgets incidents with nothing queued or running whose last run ended longer ago than the
 * longest cooldown: they no longer decide anything, and the table stays bounded. */
static void incidents_prune(srv_state *S, double now) {
  double maxcd = 0;
  for (int i = 0; i < S->cfg.nroutes; i++)
    if (S->cfg.routes[i].cooldown > maxcd) maxcd = S->cfg.routes[i].cooldown;
  for (int h = 0; h < SRV_HASH; h++) {
    for (srv_incident **pp = &S->inc[h]; *pp;) {
      srv_incident *i = *pp;
      if (!i->active && !i->active_res && now - i->last_end > maxcd + 3600) {
        *pp = i->next;
        free(i);
      } else
        pp = &i->next;
    }
  }
}

static srv_run *run_new(srv_state *S, const char *incident, int route, const char *tenant,
                        cJSON *params, int resolved, double now) {
  srv_run *r = calloc(1, sizeof *r);
  if (!r) return NULL;
  new_run_id(r->id);
  snprintf(r->incident, sizeof r->incident, "%s", incident);
  r->route = route;
  snprintf(r->tenant, sizeof r->tenant, "%s", tenant);
  r->params = params ? params : cJSON_CreateObject();
  r->resolved = resolved;
  r->state = R_QUEUED;
  r->accepted_at = now;
  if (S->runs_tail)
    S->runs_tail->next = r;
  else
    S->runs = r;
  S->runs_tail = r;
  S->queued++;
  return r;
}

static cJSON *accept_record(srv_state *S, const srv_run *r, const char *group_key) {
  cJSON *rec = cJSON_CreateObject();
  cJSON_AddStringToObject(rec, "k", "accept");
  cJSON_AddStringToObject(rec, "run", r->id);
  cJSON_AddStringToObject(rec, "incident", r->incident);
  cJSON_AddStringToObject(rec, "route", S->cfg.routes[r->route].name);
  cJSON_AddStringToObject(rec, "tenant", r->tenant);
  cJSON_AddItemToObject(rec, "params", cJSON_Duplicate(r->params, 1));
  cJSON_AddBoolToObject(rec, "resolved", r->resolved);
  if (group_key) cJSON_AddStringToObject(rec, "group_key", group_key);
  cJSON_AddNumberToObject(rec, "t", r->accepted_at);
  return rec;
}

static void end_record(srv_state *S, srv_run *r) {
  if (S->replaying) return; /* appended after the spool is rewritten */
  cJSON *rec = cJSON_CreateObject();
  cJSON_AddStringToObject(rec, "k", "end");
  cJSON_AddStringToObject(rec, "run", r->id);
  cJSON_AddStringToObject(rec, "incident", r->incident);
  cJSON_AddStringToObject(rec, "outcome", r->outcome);
  cJSON_AddNumberToObject(rec, "exit", r->exit_code);
  cJSON_AddBoolToObject(rec, "resolved", r->resolved);
  cJSON_AddNumberToObject(rec, "t", r->ended_at);
  rbl_serve_spool_append(&S->spool, rec);
  rbl_serve_spool_kick(&S->spool);
}

static void run_finish(srv_state *S, srv_run *r, const char *outcome, double now) {
  int was_running = r->state == R_RUNNING;
  if (r->state == R_QUEUED) S->queued--;
  if (was_running) {
    S->in_flight--;
    S->cfg.routes[r->route].in_flight--;
  }
  r->state = R_DONE;
  r->ended_at = now;
  snprintf(r->outcome, sizeof r->outcome, "%s", outcome);
  srv_incident *inc = incident_get(S, r->incident, 1);
  if (inc) {
    if (inc->active == r) inc->active = NULL;
    if (inc->active_res == r) inc->active_res = NULL;
    /* serve.ha: an incident another replica ran, or whose run was taken over, cools down too */
    if (!r->resolved && (was_running || r->ha == HA_ELSEWHERE || r->ha == HA_TAKEOVER))
      inc->last_end = now;
  }
  if (!strcmp(outcome, "succeeded"))
    S->m.succeeded++;
  else if (!strcmp(outcome, "interrupted"))
    S->m.interrupted++;
  else if (!strcmp(outcome, "canceled"))
    S->m.canceled++;
  else if (!strcmp(outcome, "elsewhere"))
    S->m.elsewhere++;
  else
    S->m.failed++;
  if (was_running && r->started_at > 0) {
    double d = now - r->started_at;
    for (int i = 0; i < SRV_NBUCKET; i++)
      if (d <= buckets[i]) S->m.hist[i]++;
    S->m.dur_sum += d;
    S->m.dur_count++;
  }
  end_record(S, r);
  rbl_serve_ha_run_ended(S, r);
  S->nruns_done++;
  if (!S->replaying)
    fprintf(stderr, "rbl serve: run %s %s (incident %s, exit %d, %.1f s)\n", r->id, outcome,
            r->incident, r->exit_code, r->started_at > 0 ? now - r->started_at : 0.0);
}

void rbl_serve_run_end(srv_state *S, srv_run *r, const char *outcome) {
  run_finish(S, r, outcome, rbl_serve_now());
  runs_trim(S);
}

/* ---- deciding a payload ---- */

typedef struct unit {
  int route;
  char tenant[64];
  int firing, nalerts;
  cJSON *params;
  cJSON *alertnames;
} unit;

static int bad_request(cJSON **out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int bad_request(cJSON **out, const char *fmt, ...) {
  char msg[600];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  *out = cJSON_CreateObject();
  cJSON_AddStringToObject(*out, "error", msg);
  return 400;
}

static int valid_value(const char *v) {
  size_t n = strlen(v);
  if (n > 1024) return 0;
  for (size_t i = 0; i < n; i++)
    if ((unsigned char)v[i] < 0x20 || v[i] == 0x7f) return 0;
  return 1;
}

/* Checks the payload's shape. 0 or 400 with *out set. */
static int check_payload(const cJSON *p, cJSON **out) {
  if (!cJSON_IsObject(p)) return bad_request(out, "the body is not a JSON object");
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(p, "version");
  if (!cJSON_IsString(v) || strcmp(v->valuestring, "4") != 0)
    return bad_request(out,
                       "payload version %s: rbl serve takes the Alertmanager webhook payload "
                       "version \"4\" (point an Alertmanager webhook_config at /v1/alertmanager)",
                       cJSON_IsString(v) ? v->valuestring : "missing");
  const cJSON *gk = cJSON_GetObjectItemCaseSensitive(p, "groupKey");
  if (!cJSON_IsString(gk) || !gk->valuestring[0] || strlen(gk->valuestring) > 4096)
    return bad_request(out, "groupKey is missing, empty or longer than 4096 bytes");
  const cJSON *alerts = cJSON_GetObjectItemCaseSensitive(p, "alerts");
  int n = cJSON_IsArray(alerts) ? cJSON_GetArraySize(alerts) : -1;
  if (n < 1 || n > 10000) return bad_request(out, "alerts must be a list of 1 to 10000 alerts");
  int i = 0;
  const cJSON *a;
  cJSON_ArrayForEach(a, alerts) {
    i++;
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(a, "status");
    const cJSON *labels = cJSON_GetObjectItemCaseSensitive(a, "labels");
    if (!cJSON_IsObject(a) || !cJSON_IsString(st) ||
        (strcmp(st->valuestring, "firing") && strcmp(st->valuestring, "resolved")))
      return bad_request(out, "alerts[%d]: status must be \"firing\" or \"resolved\"", i - 1);
    if (!cJSON_IsObject(labels) || !labels->child)
      return bad_request(out, "alerts[%d] has no labels (missing labels)", i - 1);
    const cJSON *l;
    cJSON_ArrayForEach(l, labels) {
      if (!cJSON_IsString(l) || !valid_value(l->valuestring) || strlen(l->string) > 128)
        return bad_request(out,
                           "alerts[%d].labels.%.64s: label values must be strings of at most "
                           "1024 bytes without control characters",
                           i - 1, l->string);
    }
  }
  return 0;
}

/* Routes each alert and groups them into units (route, tenant). 0 or 400. */
static int build_units(srv_state *S, const cJSON *alerts, unit *u, int *nu, cJSON *results,
                       uint64_t *unrouted, cJSON **out) {
  int i = -1;
  const cJSON *a;
  cJSON_ArrayForEach(a, alerts) {
    i++;
    const cJSON *labels = cJSON_GetObjectItemCaseSensitive(a, "labels");
    const char *an = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(labels, "alertname"));
    int firing = !strcmp(cJSON_GetObjectItemCaseSensitive(a, "status")->valuestring, "firing");
    int r = -1;
    for (int k = 0; k < S->cfg.nroutes && r < 0; k++)
      if (rbl_serve_route_matches(&S->cfg.routes[k], labels)) r = k;
    if (r < 0) {
      (*unrouted)++;
      continue;
    }
    srv_route *rt = &S->cfg.routes[r];
    const char *t =
        cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(labels, rt->tenant_label));
    if (!t || !*t)
      return bad_request(out,
                         "alerts[%d] (%s) matches route %s but has no label '%s' to take the "
                         "tenant from (missing labels)",
                         i, an ? an : "?", rt->name, rt->tenant_label);
    int k;
    for (k = 0; k < *nu; k++)
      if (u[k].route == r && !strcmp(u[k].tenant, t)) break;
    if (k == *nu) {
      if (*nu >= 64) return bad_request(out, "one payload spans more than 64 route/tenant pairs");
      memset(&u[k], 0, sizeof u[k]);
      u[k].route = r;
      snprintf(u[k].tenant, sizeof u[k].tenant, "%s", t);
      if (strlen(t) >= sizeof u[k].tenant) u[k].tenant[0] = '\x01'; /* too long: unknown */
      u[k].alertnames = cJSON_CreateArray();
      (*nu)++;
    }
    unit *un = &u[k];
    un->nalerts++;
    if (an && cJSON_GetArraySize(un->alertnames) < 16)
      cJSON_AddItemToArray(un->alertnames, cJSON_CreateString(an));
    /* Params come from the first firing alert of the unit (else the first alert). */
    if (!un->params || (firing && !un->firing)) {
      cJSON *params = cJSON_CreateObject();
      for (int p = 0; p < rt->nparams; p++) {
        const char *v =
            cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(labels, rt->params[p].label));
        if (!v) {
          cJSON_Delete(params);
          return bad_request(out,
                             "alerts[%d] (%s) has no label '%s', which route %s maps to the "
                             "runbook parameter %s (missing labels)",
                             i, an ? an : "?", rt->params[p].label, rt->name, rt->params[p].name);
        }
        cJSON_AddStringToObject(params, rt->params[p].name, v);
      }
      cJSON_Delete(un->params);
      un->params = params;
    }
    if (firing) un->firing = 1;
  }
  (void)results;
  return 0;
}

static void note(srv_state *S, const char *kind, const char *incident, const char *tenant,
                 const char *route, const char *why, int nalerts) {
  cJSON *rec = cJSON_CreateObject();
  cJSON_AddStringToObject(rec, "k", kind);
  if (incident) cJSON_AddStringToObject(rec, "incident", incident);
  cJSON_AddStringToObject(rec, "tenant", tenant);
  cJSON_AddStringToObject(rec, "route", route);
  cJSON_AddStringToObject(rec, "why", why);
  cJSON_AddNumberToObject(rec, "alerts", nalerts);
  cJSON_AddNumberToObject(rec, "t", rbl_serve_now());
  rbl_serve_spool_append(&S->spool, rec);
}

static int worse(int a, int b) {
  static const int order[] = {200, 403, 429, 503};
  int ia = 0, ib = 0;
  for (int i = 0; i < 4; i++) {
    if (order[i] == a) ia = i;
    if (order[i] == b) ib = i;
  }
  return ib > ia ? b : a;
}

/* One unit's decision; adds a result object and returns the unit's HTTP status. */
static int decide_unit(srv_state *S, unit *u, const char *group_key, cJSON *results, double now) {
  srv_route *rt = &S->cfg.routes[u->route];
  cJSON *res = cJSON_CreateObject();
  cJSON_AddItemToArray(results, res);
  cJSON_AddStringToObject(res, "route", rt->name);
  cJSON_AddStringToObject(res, "tenant", u->tenant[0] == '\x01' ? "(too long)" : u->tenant);
  cJSON_AddNumberToObject(res, "alerts", u->nalerts);
  cJSON_AddItemToObject(res, "alertnames", u->alertnames);
  u->alertnames = NULL;
  const char *decision, *why = "";
  char whybuf[160];
  int st = 200;
  if (!rbl_serve_tenant_known(&S->cfg, u->tenant)) {
    /* An alert cannot widen scope: the tenant must be one the config knows. */
    S->m.refused_tenant += (uint64_t)u->nalerts;
    note(S, "refuse", NULL, u->tenant[0] == '\x01' ? "(too long)" : u->tenant, rt->name,
         "unknown tenant", u->nalerts);
    cJSON_AddStringToObject(res, "decision", "refused");
    cJSON_AddStringToObject(res, "reason",
                            "unknown tenant: not in the config's tenants (an alert cannot widen "
                            "scope)");
    fprintf(stderr, "rbl serve: refused: tenant %s is not in the config's tenants (route %s)\n",
            u->tenant[0] == '\x01' ? "(too long)" : u->tenant, rt->name);
    return 403;
  }
  char inc_id[64];
  incident_id(group_key, rt->name, u->tenant, inc_id);
  cJSON_AddStringToObject(res, "incident", inc_id);
  srv_incident *inc = incident_get(S, inc_id, 1);
  if (!inc) {
    cJSON_AddStringToObject(res, "decision", "refused");
    cJSON_AddStringToObject(res, "reason", "out of memory");
    S->m.refused_unavailable += (uint64_t)u->nalerts;
    return 503;
  }
  if (!u->firing) {
    S->m.resolved += (uint64_t)u->nalerts;
    decision = "resolved";
    if (inc->active && inc->active->state == R_QUEUED) {
      /* Resolved before its run started: the remediation is no longer wanted. */
      srv_run *r = inc->active;
      run_finish(S, r, "canceled", now);
      why = "the queued run was canceled";
    }
    if (rt->resolved_runbook && !inc->resolved_handled && !inc->active_res) {
      srv_run *r = run_new(S, inc_id, u->route, u->tenant, u->params, 1, now);
      u->params = NULL;
      if (r) {
        inc->active_res = r;
        inc->resolved_handled = 1;
        r->accept_seq = rbl_serve_spool_append(&S->spool, accept_record(S, r, group_key));
        cJSON_AddStringToObject(res, "run", r->id);
        why = "the route's resolved_runbook runs";
      }
    }
    note(S, "resolved", inc_id, u->tenant, rt->name, why, u->nalerts);
  } else if (inc->active) {
    S->m.deduplicated += (uint64_t)u->nalerts;
    decision = "deduplicated";
    why = inc->active->state == R_RUNNING ? "its run is in flight" : "its run is queued";
    cJSON_AddStringToObject(res, "run", inc->active->id);
    note(S, "dedup", inc_id, u->tenant, rt->name, why, u->nalerts);
  } else if (inc->last_end > 0 && now - inc->last_end < rt->cooldown) {
    S->m.deduplicated += (uint64_t)u->nalerts;
    decision = "deduplicated";
    snprintf(whybuf, sizeof whybuf, "within the route's cooldown (%.1f s left)",
             rt->cooldown - (now - inc->last_end));
    why = whybuf;
    note(S, "dedup", inc_id, u->tenant, rt->name, why, u->nalerts);
  } else if (route_hour_count(S, u->route, now) >= rt->max_runs_per_hour) {
    S->m.refused_brake += (uint64_t)u->nalerts;
    decision = "refused";
    snprintf(whybuf, sizeof whybuf, "route %s reached max_runs_per_hour (%d): the brake holds",
             rt->name, rt->max_runs_per_hour);
    why = whybuf;
    note(S, "refuse", inc_id, u->tenant, rt->name, why, u->nalerts);
    st = 429;
  } else if (S->queued >= S->cfg.max_queued) {
    S->m.refused_queue += (uint64_t)u->nalerts;
    decision = "refused";
    why = "the queue is full (serve.max_queued): retry later";
    note(S, "refuse", inc_id, u->tenant, rt->name, why, u->nalerts);
    st = 429;
  } else {
    srv_run *r = run_new(S, inc_id, u->route, u->tenant, u->params, 0, now);
    u->params = NULL;
    if (!r) {
      S->m.refused_unavailable += (uint64_t)u->nalerts;
      cJSON_AddStringToObject(res, "decision", "refused");
      cJSON_AddStringToObject(res, "reason", "out of memory");
      return 503;
    }
    S->m.accepted += (uint64_t)u->nalerts;
    inc->active = r;
    inc->resolved_handled = 0;
    route_count_add(S, u->route, now);
    r->accept_seq = rbl_serve_spool_append(&S->spool, accept_record(S, r, group_key));
    decision = "accepted";
    cJSON_AddStringToObject(res, "run", r->id);
  }
  cJSON_AddStringToObject(res, "decision", decision);
  fprintf(stderr, "rbl serve: %s: incident %s, tenant %s, route %s, %d alert(s)%s%s\n", decision,
          inc_id, u->tenant, rt->name, u->nalerts, *why ? ": " : "", why);
  if (*why) cJSON_AddStringToObject(res, "reason", why);
  return st;
}

int rbl_serve_decide(srv_state *S, const cJSON *p, cJSON **out) {
  int st = check_payload(p, out);
  if (st) return st;
  const cJSON *alerts = cJSON_GetObjectItemCaseSensitive(p, "alerts");
  const char *gk = cJSON_GetObjectItemCaseSensitive(p, "groupKey")->valuestring;
  unit u[64];
  int nu = 0;
  uint64_t unrouted = 0;
  cJSON *results = cJSON_CreateArray();
  st = build_units(S, alerts, u, &nu, results, &unrouted, out);
  /* Params are checked against what the runbook that would run declares (type, choices), so a
   * value the child would refuse is a 400 naming it, not a run that ends in error. */
  for (int i = 0; i < nu && !st; i++) {
    const srv_route *rt = &S->cfg.routes[u[i].route];
    int which = u[i].firing ? 0 : 1;
    if (!u[i].firing && !rt->resolved_runbook) continue;
    for (int k = 0; k < rt->nparams && !st; k++) {
      const char *v =
          cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(u[i].params, rt->params[k].name));
      const char *why = v ? rbl_serve_param_refused(rt->params[k].decl[which], v) : NULL;
      if (why) {
        const cJSON *ch = cJSON_GetObjectItemCaseSensitive(rt->params[k].decl[which], "choices");
        char *chs = cJSON_IsArray(ch) ? cJSON_PrintUnformatted(ch) : NULL;
        st = bad_request(out,
                         "label '%s' = '%.200s' %s for the runbook parameter %s of route %s "
                         "(%s%s%s): nothing was run",
                         rt->params[k].label, v, why, rt->params[k].name, rt->name,
                         cJSON_GetStringValue(
                             cJSON_GetObjectItemCaseSensitive(rt->params[k].decl[which], "type")),
                         chs ? ", one of " : "", chs ? chs : "");
        cJSON_free(chs);
      }
    }
  }
  if (st) {
    for (int i = 0; i < nu; i++) {
      cJSON_Delete(u[i].params);
      cJSON_Delete(u[i].alertnames);
    }
    cJSON_Delete(results);
    return st;
  }
  S->m.received += (uint64_t)cJSON_GetArraySize(alerts);
  if (++S->decisions % 4096 == 0) incidents_prune(S, rbl_serve_now());
  S->m.unrouted += unrouted;
  if (unrouted) note(S, "unrouted", NULL, "", "", "no route matches", (int)unrouted);
  double now = rbl_serve_now();
  st = 200;
  for (int i = 0; i < nu; i++) {
    st = worse(st, decide_unit(S, &u[i], gk, results, now));
    cJSON_Delete(u[i].params);
    cJSON_Delete(u[i].alertnames);
  }
  *out = cJSON_CreateObject();
  cJSON_AddStringToObject(*out, "group_key", gk);
  if (unrouted) cJSON_AddNumberToObject(*out, "unrouted", (double)unrouted);
  cJSON_AddItemToObject(*out, "results", results);
  return st;
}

/* ---- running ---- */

static const char *outcome_of(int64_t exit_status, int term_signal) {
  if (term_signal) return "killed";
  switch (exit_status) {
  case 0: return "succeeded";
  case 1: return "failed";
  case 2: return "error";
  case 3: return "refused";
  case 4: return "audit_failed";
  default: return "failed";
  }
}

static void proc_closed(uv_handle_t *h) {
  srv_run *r = h->data;
  r->proc_open = 0;
}

static void on_exit_cb(uv_process_t *p, int64_t exit_status, int term_signal) {
  srv_run *r = p->data;
  srv_state *S = p->loop->data;
  r->exit_code = (int)exit_status;
  r->term_signal = term_signal;
  run_finish(S, r, outcome_of(exit_status, term_signal), rbl_serve_now());
  uv_close((uv_handle_t *)p, proc_closed);
  runs_trim(S);
  rbl_serve_schedule(S);
}

static void run_paths(srv_state *S, const srv_run *r, char *chain, char *report, char *log,
                      size_t n) {
  snprintf(chain, n, "%s/audit/%s.jsonl", S->cfg.spool, r->incident);
  snprintf(report, n, "%s/runs/%s.json", S->cfg.spool, r->id);
  snprintf(log, n, "%s/runs/%s.log", S->cfg.spool, r->id);
}

static int run_start(srv_state *S, srv_run *r) {
  srv_route *rt = &S->cfg.routes[r->route];
  char chain[4200], report[4200], logp[4200], ppid[32];
  run_paths(S, r, chain, report, logp, sizeof chain);
  const char *argv[64 + 2 * 64];
  char *pstr[64];
  int n = 0, np = 0;
  argv[n++] = S->self_exe;
  argv[n++] = "run";
  argv[n++] = r->resolved ? rt->resolved_runbook : rt->runbook;
  argv[n++] = "--tenant";
  argv[n++] = r->tenant;
  argv[n++] = "--incident";
  argv[n++] = r->incident;
  argv[n++] = "--config";
  argv[n++] = S->cfg.config_path;
  argv[n++] = "--audit";
  argv[n++] = chain;
  argv[n++] = "--report";
  argv[n++] = report;
  if (S->cfg.audit_key) {
    argv[n++] = "--audit-key";
    argv[n++] = S->cfg.audit_key;
  }
  /* No --yes: a step that asks for approval waits for a person (rbl approve, or
   * POST /v1/runs/ID/approve) and fails closed at its timeout; an alert approves nothing. */
  argv[n++] = "--quiet";
  const cJSON *p;
  cJSON_ArrayForEach(p, r->params) {
    if (np >= 64) break;
    size_t len = strlen(p->string) + strlen(p->valuestring) + 2;
    pstr[np] = malloc(len);
    if (!pstr[np]) break;
    snprintf(pstr[np], len, "%s=%s", p->string, p->valuestring);
    argv[n++] = "--param";
    argv[n++] = pstr[np++];
  }
  argv[n] = NULL;
  /* The environment, plus the marker that makes the child die with serve (PR_SET_PDEATHSIG). */
  size_t ne = 0;
  while (environ[ne])
    ne++;
  char **env = calloc(ne + 2, sizeof *env);
  size_t k = 0;
  for (size_t i = 0; env && i < ne; i++)
    if (strncmp(environ[i], "RBL_SERVE_PARENT=", 17) != 0) env[k++] = environ[i];
  /* serve.ha: "K" makes the child die by SIGKILL with serve (docs/serve.md, "Across replicas") */
  snprintf(ppid, sizeof ppid, "RBL_SERVE_PARENT=%d%s", (int)getpid(), S->cfg.ha ? "K" : "");
  if (env) env[k++] = ppid;
  int logfd = open(logp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
  uv_stdio_container_t stdio[3];
  stdio[0].flags = UV_IGNORE;
  stdio[1].flags = stdio[2].flags = logfd >= 0 ? UV_INHERIT_FD : UV_IGNORE;
  stdio[1].data.fd = stdio[2].data.fd = logfd;
  uv_process_options_t o;
  memset(&o, 0, sizeof o);
  o.file = S->self_exe;
  o.args = (char **)argv;
  o.env = env;
  o.exit_cb = on_exit_cb;
  o.stdio = stdio;
  o.stdio_count = 3;
  o.flags = UV_PROCESS_DETACHED; /* own session: a terminal's Ctrl-C is serve's to handle */
  r->proc.data = r;
  int rc = env ? uv_spawn(S->loop, &r->proc, &o) : UV_ENOMEM;
  if (logfd >= 0) close(logfd);
  free(env);
  for (int i = 0; i < np; i++)
    free(pstr[i]);
  if (rc == 0) {
    r->proc_open = 1;
    r->pid = r->proc.pid;
    fprintf(stderr, "rbl serve: run %s started (pid %d): %s for tenant %s, incident %s\n", r->id,
            r->pid, r->resolved ? rt->resolved_runbook : rt->runbook, r->tenant, r->incident);
  } else {
    /* uv_spawn failed: the handle is initialised and must be closed all the same. */
    fprintf(stderr, "rbl serve: run %s: cannot start %s: %s\n", r->id, S->self_exe,
            uv_strerror(rc));
    r->proc_open = 1;
    uv_close((uv_handle_t *)&r->proc, proc_closed);
  }
  return rc;
}

static int target_locked(srv_state *S, const srv_run *r) {
  const srv_route *rt = &S->cfg.routes[r->route];
  const char *rb = r->resolved ? rt->resolved_runbook : rt->runbook;
  for (srv_run *o = S->runs; o; o = o->next) {
    if (o->state != R_RUNNING) continue;
    const srv_route *ort = &S->cfg.routes[o->route];
    const char *orb = o->resolved ? ort->resolved_runbook : ort->runbook;
    if (!strcmp(o->tenant, r->tenant) && !strcmp(orb, rb)) return 1;
  }
  return 0;
}

void rbl_serve_schedule(srv_state *S) {
  if (S->paused || S->draining || S->spool.failed) return;
  for (srv_run *r = S->runs; r && S->in_flight < S->cfg.max_concurrent; r = r->next) {
    if (r->state != R_QUEUED || r->accept_seq == 0 || r->accept_seq > S->spool.synced) continue;
    srv_route *rt = &S->cfg.routes[r->route];
    if (rt->in_flight >= rt->concurrency || target_locked(S, r)) continue;
    if (!rbl_serve_ha_may_start(S, r)) continue; /* serve.ha: only while holding its Lease */
    cJSON *rec = cJSON_CreateObject();
    cJSON_AddStringToObject(rec, "k", "start");
    cJSON_AddStringToObject(rec, "run", r->id);
    cJSON_AddNumberToObject(rec, "t", rbl_serve_now());
    if (!rbl_serve_spool_append(&S->spool, rec)) return;
    rbl_serve_spool_kick(&S->spool);
    S->queued--;
    r->state = R_RUNNING;
    r->started_at = rbl_serve_now();
    S->in_flight++;
    rt->in_flight++;
    S->m.started++;
    if (run_start(S, r) != 0) {
      r->exit_code = -1;
      run_finish(S, r, "error", rbl_serve_now());
    }
  }
}

void rbl_serve_signal_runs(srv_state *S, int sig) {
  for (srv_run *r = S->runs; r; r = r->next)
    if (r->state == R_RUNNING && r->proc_open) uv_process_kill(&r->proc, sig);
}

static cJSON *run_json(srv_state *S, const srv_run *r) {
  static const char *const st[] = {"queued", "running", "done"};
  cJSON *o = cJSON_CreateObject();
  const srv_route *rt = &S->cfg.routes[r->route];
  char chain[4200], report[4200], logp[4200];
  run_paths(S, r, chain, report, logp, sizeof chain);
  cJSON_AddStringToObject(o, "id", r->id);
  cJSON_AddStringToObject(o, "incident", r->incident);
  cJSON_AddStringToObject(o, "route", rt->name);
  cJSON_AddStringToObject(o, "tenant", r->tenant);
  cJSON_AddStringToObject(o, "runbook", r->resolved ? rt->resolved_runbook : rt->runbook);
  cJSON_AddStringToObject(o, "alert", r->resolved ? "resolved" : "firing");
  cJSON_AddItemToObject(o, "params", cJSON_Duplicate(r->params, 1));
  cJSON_AddStringToObject(o, "state", st[r->state]);
  if (r->state == R_DONE) {
    cJSON_AddStringToObject(o, "outcome", r->outcome);
    cJSON_AddNumberToObject(o, "exit_code", r->exit_code);
  }
  cJSON_AddNumberToObject(o, "accepted_at", r->accepted_at);
  if (r->started_at > 0) cJSON_AddNumberToObject(o, "started_at", r->started_at);
  if (r->ended_at > 0) cJSON_AddNumberToObject(o, "ended_at", r->ended_at);
  if (r->state == R_RUNNING) cJSON_AddNumberToObject(o, "pid", r->pid);
  cJSON *ha = rbl_serve_ha_json(S, r);
  if (ha) cJSON_AddItemToObject(o, "ha", ha);
  cJSON_AddStringToObject(o, "audit", chain);
  cJSON_AddStringToObject(o, "report", report);
  cJSON_AddStringToObject(o, "log", logp);
  return o;
}

cJSON *rbl_serve_runs_json(srv_state *S) {
  cJSON *o = cJSON_CreateObject();
  cJSON_AddBoolToObject(o, "paused", S->paused);
  cJSON_AddBoolToObject(o, "draining", S->draining);
  cJSON_AddNumberToObject(o, "queued", S->queued);
  cJSON_AddNumberToObject(o, "in_flight", S->in_flight);
  cJSON *a = cJSON_AddArrayToObject(o, "runs");
  for (srv_run *r = S->runs; r; r = r->next)
    cJSON_AddItemToArray(a, run_json(S, r));
  return o;
}

/* ---- replay ---- */

/* What a run's chain says about the run serve started with report path marker, read back through
 * the chain verifier (hostile until verified): 0 no run_start names it, 1 started (child run id in
 * child), 2 ended (outcome, exit code), 3 the chain does not verify (why in outcome). */
static int chain_state(const char *chain, const char *key, const char *marker, char *child,
                       size_t cl, char *outcome, size_t ol, int *exit_code) {
  if (access(chain, F_OK) != 0) return 0;
  rbl_audit_verified v;
  memset(&v, 0, sizeof v);
  char msg[600];
  int rc = rbl_audit_verify_file(chain, key, NULL, &v, msg, sizeof msg);
  if (rc != 0) {
    snprintf(outcome, ol, "%s", msg);
    cJSON_Delete(v.records);
    cJSON_Delete(v.notes);
    return 3;
  }
  int state = 0;
  const cJSON *rec;
  cJSON_ArrayForEach(rec, v.records) {
    const char *kind = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(rec, "kind"));
    const char *run = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(rec, "run"));
    if (!kind || !run) continue;
    if (state == 0 && !strcmp(kind, "run_start")) {
      const cJSON *a;
      cJSON_ArrayForEach(a, cJSON_GetObjectItemCaseSensitive(rec, "argv")) {
        if (cJSON_IsString(a) && !strcmp(a->valuestring, marker)) {
          state = 1;
          *exit_code = -1;
          snprintf(child, cl, "%s", run);
          break;
        }
      }
    } else if (state == 1 && !strcmp(kind, "run_end") && !strcmp(run, child)) {
      state = 2;
      const char *oc = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(rec, "outcome"));
      snprintf(outcome, ol, "%s", oc && !strcmp(oc, "resolved") ? "succeeded" : "failed");
      const cJSON *ec = cJSON_GetObjectItemCaseSensitive(rec, "exit_code");
      if (cJSON_IsNumber(ec)) *exit_code = ec->valueint;
    }
  }
  cJSON_Delete(v.records);
  cJSON_Delete(v.notes);
  return state;
}

/* Appends the interrupted record to the run's own chain; waits for the dying child's lock. */
static int mark_interrupted(srv_state *S, const srv_run *r, const char *chain, const char *child) {
  rbl_audit *a = NULL;
  char err[512] = "";
  rbl_audit_opts o = {
      .path = chain, .incident = r->incident, .run = child, .hmac_key_file = S->cfg.audit_key};
  for (int i = 0; i < 100; i++) {
    int rc = rbl_audit_open(&a, &o, err, sizeof err);
    if (rc == 0) break;
    if (rc != RBL_ELOCKED) break;
    usleep(100000);
  }
  if (!a) {
    fprintf(stderr, "rbl serve: run %s: cannot mark it interrupted on %s: %s\n", r->id, chain, err);
    return -1;
  }
  cJSON *rec = cJSON_CreateObject();
  cJSON_AddStringToObject(rec, "kind", "interrupted");
  cJSON_AddStringToObject(rec, "by", "rbl serve");
  cJSON_AddStringToObject(rec, "serve_run", r->id);
  cJSON_AddStringToObject(rec, "policy", S->cfg.on_restart_rerun ? "rerun" : "interrupt");
  cJSON_AddStringToObject(rec, "message",
                          "the serve process running this run stopped before the run ended; "
                          "its writes may have applied in part and are not replayed");
  int64_t seq = rbl_audit_append(a, rec);
  int rc = seq >= 0 ? rbl_audit_sync(a) : -1;
  rbl_audit_close(a);
  return rc == 0 ? 0 : -1;
}

typedef struct replay {
  srv_state *S;
  cJSON *runs; /* run id -> {accept, start, end} */
  cJSON *keep;
  uint64_t last_seq;
  int paused;
  int bad;
} replay;

static void replay_bad(void *ud, size_t line, const char *why, const char *head) {
  replay *rp = ud;
  rp->bad++;
  rp->S->m.spool_bad++;
  fprintf(stderr, "rbl serve: spool line %zu refused: %s: %.80s\n", line, why, head);
  cJSON *rec = cJSON_CreateObject();
  cJSON_AddStringToObject(rec, "kind", "spool_refused");
  cJSON_AddNumberToObject(rec, "line", (double)line);
  cJSON_AddStringToObject(rec, "reason", why);
  cJSON_AddStringToObject(rec, "head", head);
  rbl_serve_note(rp->S, rec);
}

static int str_ok(const cJSON *rec, const char *k, size_t max) {
  const char *v = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(rec, k));
  return v && *v && strlen(v) < max && !strchr(v, '/') && strcmp(v, "..") && strcmp(v, ".");
}

static void replay_rec(void *ud, const cJSON *rec) {
  replay *rp = ud;
  const char *k = cJSON_GetObjectItemCaseSensitive(rec, "k")->valuestring;
  rp->last_seq = (uint64_t)cJSON_GetObjectItemCaseSensitive(rec, "seq")->valuedouble;
  if (!strcmp(k, "pause") || !strcmp(k, "resume")) {
    rp->paused = !strcmp(k, "pause");
    cJSON_DeleteItemFromObjectCaseSensitive(rp->keep, "pause");
    cJSON_AddItemToObject(rp->keep, "pause", cJSON_Duplicate(rec, 1));
    return;
  }
  if (strcmp(k, "accept") && strcmp(k, "start") && strcmp(k, "end")) return; /* notes */
  /* Hostile until checked: ids become file names, so they must be plain. */
  const cJSON *t = cJSON_GetObjectItemCaseSensitive(rec, "t");
  if (!str_ok(rec, "run", 48) || !cJSON_IsNumber(t)) {
    replay_bad(rp, 0, "entry with a malformed run id or time", k);
    return;
  }
  const char *id = cJSON_GetObjectItemCaseSensitive(rec, "run")->valuestring;
  cJSON *e = cJSON_GetObjectItemCaseSensitive(rp->runs, id);
  if (!strcmp(k, "accept")) {
    const cJSON *params = cJSON_GetObjectItemCaseSensitive(rec, "params");
    int ok = str_ok(rec, "incident", 64) && str_ok(rec, "tenant", 64) &&
             str_ok(rec, "route", 128) && cJSON_IsObject(params) && !e;
    const cJSON *p;
    cJSON_ArrayForEach(p, params) ok = ok && cJSON_IsString(p);
    if (!ok) {
      replay_bad(rp, 0, "accept entry with malformed fields (or a repeated run id)", id);
      return;
    }
    e = cJSON_AddObjectToObject(rp->runs, id);
    cJSON_AddItemToObject(e, "accept", cJSON_Duplicate(rec, 1));
    return;
  }
  if (!e) {
    replay_bad(rp, 0, "start/end entry of a run the spool never accepted", id);
    return;
  }
  int is_end = !strcmp(k, "end");
  if (cJSON_GetObjectItemCaseSensitive(e, "end") ||
      (is_end && !cJSON_IsString(cJSON_GetObjectItemCaseSensitive(rec, "outcome")))) {
    replay_bad(rp, 0, "an entry after the run's end, or a malformed end", id);
    return;
  }
  /* A second start: a restart found the run never began and started it again. */
  cJSON_DeleteItemFromObjectCaseSensitive(e, k);
  cJSON_AddItemToObject(e, k, cJSON_Duplicate(rec, 1));
}

static int route_index(srv_state *S, const char *name) {
  for (int i = 0; i < S->cfg.nroutes; i++)
    if (!strcmp(S->cfg.routes[i].name, name)) return i;
  return -1;
}

static void replay_note(srv_state *S, const char *run, const char *what) {
  fprintf(stderr, "rbl serve: replay: run %s: %s\n", run, what);
  cJSON *rec = cJSON_CreateObject();
  cJSON_AddStringToObject(rec, "kind", "replay");
  cJSON_AddStringToObject(rec, "serve_run", run);
  cJSON_AddStringToObject(rec, "decision", what);
  rbl_serve_note(S, rec);
}

/* One run the spool knows: rebuilt as ended history, or re-queued, or interrupted. */
static void replay_run(srv_state *S, const cJSON *e, cJSON *keep, double now, double horizon) {
  const cJSON *acc = cJSON_GetObjectItemCaseSensitive(e, "accept");
  const cJSON *start = cJSON_GetObjectItemCaseSensitive(e, "start");
  const cJSON *end = cJSON_GetObjectItemCaseSensitive(e, "end");
  const char *route = cJSON_GetObjectItemCaseSensitive(acc, "route")->valuestring;
  int ri = route_index(S, route);
  const char *id = cJSON_GetObjectItemCaseSensitive(acc, "run")->valuestring;
  double at = cJSON_GetObjectItemCaseSensitive(acc, "t")->valuedouble;
  int resolved = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(acc, "resolved"));
  const char *tenant = cJSON_GetObjectItemCaseSensitive(acc, "tenant")->valuestring;
  if (ri < 0 || !rbl_serve_tenant_known(&S->cfg, tenant) ||
      (resolved && !S->cfg.routes[ri].resolved_runbook)) {
    if (!end) replay_note(S, id, "dropped: its route or tenant is no longer in the config");
    return;
  }
  srv_run *r =
      run_new(S, cJSON_GetObjectItemCaseSensitive(acc, "incident")->valuestring, ri, tenant,
              cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(acc, "params"), 1), resolved, at);
  if (!r) return;
  snprintf(r->id, sizeof r->id, "%s", id);
  srv_incident *inc = incident_get(S, r->incident, 1);
  if (!resolved && now - at < 3600) route_count_add(S, ri, at);
  if (end) {
    S->queued--;
    r->state = R_DONE;
    r->ended_at = cJSON_GetObjectItemCaseSensitive(end, "t")->valuedouble;
    if (start) r->started_at = cJSON_GetObjectItemCaseSensitive(start, "t")->valuedouble;
    snprintf(r->outcome, sizeof r->outcome, "%s",
             cJSON_GetObjectItemCaseSensitive(end, "outcome")->valuestring);
    const cJSON *ex = cJSON_GetObjectItemCaseSensitive(end, "exit");
    r->exit_code = cJSON_IsNumber(ex) ? ex->valueint : 0;
    if (inc && !resolved && start && r->ended_at > inc->last_end) inc->last_end = r->ended_at;
    S->nruns_done++;
    if (r->ended_at >= horizon) {
      cJSON_AddItemToArray(keep, cJSON_Duplicate(acc, 1));
      if (start) cJSON_AddItemToArray(keep, cJSON_Duplicate(start, 1));
      cJSON_AddItemToArray(keep, cJSON_Duplicate(end, 1));
    }
    return;
  }
  cJSON_AddItemToArray(keep, cJSON_Duplicate(acc, 1));
  if (start) cJSON_AddItemToArray(keep, cJSON_Duplicate(start, 1));
  char chain[4200], report[4200], logp[4200], child[64] = "", outcome[600] = "";
  run_paths(S, r, chain, report, logp, sizeof chain);
  int ec = -1;
  int cs = chain_state(chain, S->cfg.audit_key, report, child, sizeof child, outcome,
                       sizeof outcome, &ec);
  if (inc) {
    if (resolved)
      inc->active_res = r;
    else
      inc->active = r;
  }
  r->accept_seq = 1; /* durable: it was read back from the spool */
  if (cs == 0) {
    replay_note(S, id,
                start ? "started but its run never began (no run_start): starts now"
                      : "accepted, not started: starts now");
    return;
  }
  if (cs == 3) {
    /* Nothing it says can be trusted: never re-run on its word. */
    char note[700];
    snprintf(note, sizeof note,
             "its chain does not verify (%.560s): not re-run, marked interrupted", outcome);
    replay_note(S, id, note);
    S->queued--;
    r->state = R_RUNNING;
    S->in_flight++;
    S->cfg.routes[ri].in_flight++;
    r->exit_code = -1;
    run_finish(S, r, "interrupted", now);
    return;
  }
  /* It began: it will not be started again as if new. */
  r->started_at = start ? cJSON_GetObjectItemCaseSensitive(start, "t")->valuedouble : at;
  if (cs == 2) {
    replay_note(S, id, "ended before the restart (its chain has run_end): recorded");
    S->queued--;
    r->state = R_RUNNING; /* so run_finish books it like any ended run */
    S->in_flight++;
    S->cfg.routes[ri].in_flight++;
    r->exit_code = ec;
    run_finish(S, r, outcome, now);
    return;
  }
  mark_interrupted(S, r, chain, child);
  if (S->cfg.on_restart_rerun) {
    replay_note(S, id, "interrupted mid-run: marked on its chain; on_restart = rerun: a new run");
    S->queued--;
    r->state = R_DONE;
    snprintf(r->outcome, sizeof r->outcome, "interrupted");
    r->ended_at = now;
    S->nruns_done++;
    S->m.interrupted++;
    srv_run *n = run_new(S, r->incident, ri, tenant, cJSON_Duplicate(r->params, 1), resolved, now);
    if (n) {
      if (inc && resolved) inc->active_res = n;
      if (inc && !resolved) inc->active = n;
      n->accept_seq = 0; /* appended after the rewrite */
    }
    return;
  }
  replay_note(S, id,
              "interrupted mid-run: marked on its chain, not re-run (on_restart = interrupt)");
  r->exit_code = -1;
  S->queued--;
  r->state = R_RUNNING;
  S->in_flight++;
  S->cfg.routes[ri].in_flight++;
  run_finish(S, r, "interrupted", now);
}

static cJSON *rec_seq(cJSON *rec, uint64_t *seq) {
  cJSON_AddNumberToObject(rec, "seq", (double)++*seq);
  return rec;
}

void rbl_serve_compact(srv_state *S) {
  srv_spool *sp = &S->spool;
  if (sp->failed || sp->syncing || sp->synced != sp->seq || S->pending ||
      sp->bytes < S->cfg.compact_bytes)
    return;
  double now = rbl_serve_now(), old = now - horizon(S);
  uint64_t seq = 0;
  cJSON *recs = cJSON_CreateArray();
  if (S->paused) {
    cJSON *p = cJSON_CreateObject();
    cJSON_AddStringToObject(p, "k", "pause");
    cJSON_AddNumberToObject(p, "t", now);
    cJSON_AddItemToArray(recs, rec_seq(p, &seq));
  }
  for (srv_run *r = S->runs; r; r = r->next) {
    if (r->state == R_DONE && r->ended_at < old) continue;
    cJSON_AddItemToArray(recs, rec_seq(accept_record(S, r, NULL), &seq));
    uint64_t aseq = seq;
    if (r->started_at > 0) {
      cJSON *st = cJSON_CreateObject();
      cJSON_AddStringToObject(st, "k", "start");
      cJSON_AddStringToObject(st, "run", r->id);
      cJSON_AddNumberToObject(st, "t", r->started_at);
      cJSON_AddItemToArray(recs, rec_seq(st, &seq));
    }
    if (r->state == R_DONE) {
      cJSON *e = cJSON_CreateObject();
      cJSON_AddStringToObject(e, "k", "end");
      cJSON_AddStringToObject(e, "run", r->id);
      cJSON_AddStringToObject(e, "incident", r->incident);
      cJSON_AddStringToObject(e, "outcome", r->outcome);
      cJSON_AddNumberToObject(e, "exit", r->exit_code);
      cJSON_AddBoolToObject(e, "resolved", r->resolved);
      cJSON_AddNumberToObject(e, "t", r->ended_at);
      cJSON_AddItemToArray(recs, rec_seq(e, &seq));
    }
    if (r->state == R_QUEUED) r->accept_seq = aseq;
  }
  size_t before = sp->bytes;
  if (rbl_serve_spool_rewrite(sp, sp->path, recs, seq) != 0) {
    /* The old file is intact (the rename did not happen) unless the error came after it. */
    fprintf(stderr, "rbl serve: spool compaction failed: %s\n", sp->err);
    sp->failed = 1;
  } else
    fprintf(stderr, "rbl serve: spool compacted: %zu -> %zu bytes, %llu entries\n", before,
            sp->bytes, (unsigned long long)seq);
  cJSON_Delete(recs);
}

int rbl_serve_replay(srv_state *S) {
  char path[4200], err[512];
  snprintf(path, sizeof path, "%s/spool.log", S->cfg.spool);
  replay rp = {.S = S, .runs = cJSON_CreateObject(), .keep = cJSON_CreateObject()};
  if (rbl_serve_spool_read(path, replay_rec, replay_bad, &rp, err, sizeof err) != 0) {
    fprintf(stderr, "rbl serve: %s\n", err);
    cJSON_Delete(rp.runs);
    cJSON_Delete(rp.keep);
    return -1;
  }
  double now = rbl_serve_now(), maxcd = 3600;
  for (int i = 0; i < S->cfg.nroutes; i++)
    if (S->cfg.routes[i].cooldown > maxcd) maxcd = S->cfg.routes[i].cooldown;
  /* The compacted spool: the pause state, open runs, history within the longest cooldown or the
   * last hour. Replay's own decisions are appended after it (S->replaying holds them back). */
  cJSON *keep = cJSON_CreateArray();
  const cJSON *pause = cJSON_GetObjectItemCaseSensitive(rp.keep, "pause");
  if (pause) cJSON_AddItemToArray(keep, cJSON_Duplicate(pause, 1));
  S->paused = rp.paused;
  S->replaying = 1;
  const cJSON *e;
  cJSON_ArrayForEach(e, rp.runs) replay_run(S, e, keep, now, now - maxcd);
  S->replaying = 0;
  int rc = rbl_serve_spool_rewrite(&S->spool, path, keep, rp.last_seq);
  for (srv_run *r = S->runs; rc == 0 && r; r = r->next) {
    if (r->state == R_DONE && r->ended_at >= now) end_record(S, r);
    if (r->state == R_QUEUED && r->accept_seq == 0)
      r->accept_seq = rbl_serve_spool_append(&S->spool, accept_record(S, r, NULL));
  }
  if (rc == 0 && rbl_serve_spool_sync_now(&S->spool) != 0) rc = -1;
  if (rc) fprintf(stderr, "rbl serve: %s\n", S->spool.err);
  cJSON_Delete(rp.runs);
  cJSON_Delete(rp.keep);
  cJSON_Delete(keep);
  if (rp.bad)
    fprintf(stderr, "rbl serve: %d spool entr%s refused (recorded on %s/serve.jsonl)\n", rp.bad,
            rp.bad == 1 ? "y" : "ies", S->cfg.spool);
  return rc;
}
