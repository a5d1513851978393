/* rbl serve: the command. Loads the config, locks and replays the spool, listens, answers the
 * endpoints, and stops on SIGTERM by letting runs finish up to a deadline. */
#include "audit.h"
#include "serve.h"
#include "ossl_dl.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static const char *const usage =
    "usage: rbl serve --config FILE [--listen ADDR:PORT]\n"
    "\n"
    "Takes Alertmanager webhooks (payload version 4) and runs the runbook a route names for the\n"
    "alert's tenant, once per alert group, each run a child `rbl run` with its own audit chain.\n"
    "Accepted alerts are synced to the spool before the answer; a restart replays the spool.\n"
    "With serve.ha, replicas take one Kubernetes Lease per alert group (namespace\n"
    "serve.ha.lease_namespace), so an alert runs once across replicas.\n"
    "\n"
    "  --config FILE       config file with a serve = {...} table (see docs/serve.md)\n"
    "  --listen ADDR:PORT  address to listen on (default serve.listen, else 127.0.0.1:9095)\n"
    "  --lease-agent FILE  internal: serve.ha's lease agent, which rbl serve starts itself\n"
    "\n"
    "endpoints: POST /v1/alertmanager, GET /healthz, GET /metrics, GET /v1/runs,\n"
    "           POST /v1/pause, POST /v1/resume (bearer token but /healthz and /metrics),\n"
    "           GET|POST /v1/runs/ID/approve (a token from serve.approve_tokens: answers a\n"
    "           run waiting for approval; its runs are not given --yes)\n"
    "SIGTERM stops accepting, lets runs finish for serve.drain_timeout seconds, then\n"
    "interrupts them; queued runs stay in the spool.\n"
    "exit status: 0 stopped cleanly, 1 the spool failed, 2 usage or config error (with\n"
    "serve.ha also: the cluster cannot be resolved or refuses reading Leases)\n";

/* An answer waiting for the spool to sync. */
typedef struct srv_pending {
  srv_conn *c;
  uint64_t seq;
  int status;
  char *body;
  struct srv_pending *next;
} srv_pending;

static void respond_json(srv_conn *c, int st, cJSON *j) {
  char *s = cJSON_PrintUnformatted(j);
  cJSON_Delete(j);
  if (!s) {
    rbl_srv_respond(c, 500, NULL, "{\"error\":\"out of memory\"}\n", 26);
    return;
  }
  size_t n = strlen(s);
  char *b = malloc(n + 2);
  if (b) {
    memcpy(b, s, n);
    b[n] = '\n';
  }
  rbl_srv_respond(c, st, NULL, b ? b : s, b ? n + 1 : n);
  free(b);
  cJSON_free(s);
}

static void respond_error(srv_conn *c, int st, const char *msg) {
  cJSON *j = cJSON_CreateObject();
  cJSON_AddStringToObject(j, "error", msg);
  respond_json(c, st, j);
}

void rbl_serve_respond_json(srv_conn *c, int st, cJSON *j) { respond_json(c, st, j); }

void rbl_serve_token_digest(const char *tok, size_t len, unsigned char out[32]) {
  unsigned n = 0;
  EVP_Digest(tok, len, out, &n, EVP_sha256(), NULL);
}

/* Bearer token compared in constant time (digests of both, so the length leaks nothing). */
static int authorized(srv_state *S, const srv_request *r) {
  const char *a = r->authorization;
  if (!a || strncasecmp(a, "Bearer ", 7) != 0) return 0;
  a += 7;
  while (*a == ' ')
    a++;
  unsigned char d1[32], d2[32];
  rbl_serve_token_digest(a, strlen(a), d1);
  rbl_serve_token_digest(S->cfg.token, S->cfg.token_len, d2);
  return CRYPTO_memcmp(d1, d2, 32) == 0;
}

void rbl_serve_note(srv_state *S, cJSON *rec) {
  if (!S->chain) {
    cJSON_Delete(rec);
    return;
  }
  if (rbl_audit_append(S->chain, rec) < 0 || rbl_audit_sync(S->chain) != 0)
    fprintf(stderr, "rbl serve: %s\n", rbl_audit_error(S->chain));
}

static void flush_pending(srv_state *S) {
  srv_pending **pp = &S->pending;
  while (*pp) {
    srv_pending *p = *pp;
    if (!S->spool.failed && p->seq > S->spool.synced) {
      pp = &p->next;
      continue;
    }
    *pp = p->next;
    if (S->spool.failed && p->seq > S->spool.synced) {
      S->m.refused_unavailable++;
      char msg[4500];
      snprintf(msg, sizeof msg, "not accepted: %s", S->spool.err);
      respond_error(p->c, 503, msg);
    } else
      rbl_srv_respond(p->c, p->status, NULL, p->body, strlen(p->body));
    free(p->body);
    free(p);
  }
}

static void on_synced(srv_spool *sp) {
  srv_state *S = sp->ud;
  if (sp->failed) fprintf(stderr, "rbl serve: %s: no alert is accepted any more\n", sp->err);
  flush_pending(S);
  rbl_serve_compact(S);
  rbl_serve_schedule(S);
}

static void answer_after_sync(srv_state *S, srv_conn *c, int st, cJSON *j) {
  if (S->spool.seq <= S->spool.synced) {
    respond_json(c, st, j);
    rbl_serve_schedule(S);
    return;
  }
  srv_pending *p = calloc(1, sizeof *p);
  char *s = cJSON_PrintUnformatted(j);
  cJSON_Delete(j);
  size_t n = s ? strlen(s) : 0;
  if (p && s && (p->body = malloc(n + 2))) {
    memcpy(p->body, s, n);
    p->body[n] = '\n';
    p->body[n + 1] = 0;
  }
  cJSON_free(s); /* cJSON's allocation: never mixed with the malloc'd bodies freed with free() */
  if (!p || !p->body) {
    free(p);
    rbl_srv_respond(c, 503, NULL, "{\"error\":\"out of memory\"}\n", 26);
    return;
  }
  p->c = c;
  p->seq = S->spool.seq;
  p->status = st;
  p->next = S->pending;
  S->pending = p;
  rbl_serve_spool_kick(&S->spool);
}

static void handle_alertmanager(srv_state *S, srv_conn *c, const srv_request *r) {
  if (S->draining) {
    S->m.refused_unavailable++;
    respond_error(c, 503, "rbl serve is shutting down: retry against another replica or later");
    return;
  }
  if (S->spool.failed) {
    S->m.refused_unavailable++;
    char msg[4500];
    snprintf(msg, sizeof msg, "not accepted: %s", S->spool.err);
    respond_error(c, 503, msg);
    return;
  }
  const char *endp = NULL;
  cJSON *p = cJSON_ParseWithLengthOpts(r->body, r->body_len, &endp, 0);
  if (!p) {
    char msg[200];
    snprintf(msg, sizeof msg, "the body is not valid JSON (near byte %ld)",
             endp ? (long)(endp - r->body) : 0L);
    respond_error(c, 400, msg);
    return;
  }
  cJSON *out = NULL;
  int st = rbl_serve_decide(S, p, &out);
  cJSON_Delete(p);
  if (st == 400) {
    respond_json(c, st, out);
    return;
  }
  answer_after_sync(S, c, st, out);
}

static void handle_pause(srv_state *S, srv_conn *c, const srv_request *r, int pause) {
  cJSON *b = r->body_len ? cJSON_ParseWithLength(r->body, r->body_len) : NULL;
  const char *by = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(b, "by"));
  const char *why = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(b, "reason"));
  if (r->body_len && !cJSON_IsObject(b)) {
    cJSON_Delete(b);
    respond_error(c, 400,
                  "the body must be empty or a JSON object {\"by\": NAME, \"reason\": TEXT}");
    return;
  }
  cJSON *rec = cJSON_CreateObject();
  cJSON_AddStringToObject(rec, "kind", pause ? "pause" : "resume");
  cJSON_AddStringToObject(rec, "by", by && strlen(by) < 256 ? by : "(not given)");
  if (why) cJSON_AddStringToObject(rec, "reason", strlen(why) < 1024 ? why : "(too long)");
  cJSON_AddStringToObject(rec, "peer", r->peer);
  cJSON_AddStringToObject(rec, "auth", "serve.token_file bearer token");
  rbl_serve_note(S, rec);
  cJSON *sp = cJSON_CreateObject();
  cJSON_AddStringToObject(sp, "k", pause ? "pause" : "resume");
  cJSON_AddNumberToObject(sp, "t", rbl_serve_now());
  rbl_serve_spool_append(&S->spool, sp);
  char who[65];
  size_t k = 0;
  for (const char *q = by ? by : r->peer; *q && k < sizeof who - 1; q++) /* no control characters */
    who[k++] = (unsigned char)*q < 0x20 || *q == 0x7f ? '?' : *q;
  who[k] = 0;
  cJSON_Delete(b);
  S->paused = pause;
  fprintf(stderr, "rbl serve: %s by %s\n", pause ? "paused" : "resumed", who);
  cJSON *j = cJSON_CreateObject();
  cJSON_AddBoolToObject(j, "paused", S->paused);
  cJSON_AddNumberToObject(j, "queued", S->queued);
  cJSON_AddNumberToObject(j, "in_flight", S->in_flight);
  answer_after_sync(S, c, 200, j);
}

static void metric(char **buf, size_t *len, size_t *cap, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void metric(char **buf, size_t *len, size_t *cap, const char *fmt, ...) {
  va_list ap;
  for (;;) {
    va_start(ap, fmt);
    int n = vsnprintf(*buf ? *buf + *len : NULL, *buf ? *cap - *len : 0, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if (*buf && *len + (size_t)n < *cap) {
      *len += (size_t)n;
      return;
    }
    size_t nc = (*cap ? *cap * 2 : 8192) + (size_t)n;
    char *nb = realloc(*buf, nc);
    if (!nb) return;
    *buf = nb;
    *cap = nc;
  }
}

static void handle_metrics(srv_state *S, srv_conn *c) {
  static const double b[SRV_NBUCKET] = {1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600};
  char *o = NULL;
  size_t len = 0, cap = 0;
  srv_metrics *m = &S->m;
#define C(name, help, val)                                                                         \
  metric(&o, &len, &cap, "# HELP " name " " help "\n# TYPE " name " counter\n" name " %llu\n",     \
         (unsigned long long)(val))
  C("rbl_serve_alerts_received_total", "Alerts in accepted webhook payloads.", m->received);
  C("rbl_serve_alerts_accepted_total", "Alerts whose group started a run (queued).", m->accepted);
  C("rbl_serve_alerts_deduplicated_total", "Alerts whose group's run is in flight or cooling down.",
    m->deduplicated);
  C("rbl_serve_alerts_resolved_total", "Resolved alerts recorded.", m->resolved);
  C("rbl_serve_alerts_unrouted_total", "Alerts no route matched.", m->unrouted);
  metric(&o, &len, &cap,
         "# HELP rbl_serve_alerts_refused_total Alerts refused, by reason.\n"
         "# TYPE rbl_serve_alerts_refused_total counter\n"
         "rbl_serve_alerts_refused_total{reason=\"unknown_tenant\"} %llu\n"
         "rbl_serve_alerts_refused_total{reason=\"max_runs_per_hour\"} %llu\n"
         "rbl_serve_alerts_refused_total{reason=\"queue_full\"} %llu\n"
         "rbl_serve_alerts_refused_total{reason=\"unavailable\"} %llu\n",
         (unsigned long long)m->refused_tenant, (unsigned long long)m->refused_brake,
         (unsigned long long)m->refused_queue, (unsigned long long)m->refused_unavailable);
  C("rbl_serve_runs_started_total", "Runs started.", m->started);
  C("rbl_serve_runs_succeeded_total", "Runs that ended resolved (exit 0).", m->succeeded);
  C("rbl_serve_runs_failed_total", "Runs that ended otherwise (failed, refused, error, killed).",
    m->failed);
  C("rbl_serve_runs_interrupted_total",
    "Runs marked interrupted (a restart found them mid-run, or serve.ha took their Lease over).",
    m->interrupted);
  C("rbl_serve_runs_elsewhere_total", "serve.ha: runs another replica ran (not run here).",
    m->elsewhere);
  C("rbl_serve_ha_takeovers_total",
    "serve.ha: Leases taken over from a replica that stopped renewing mid-run.", m->ha_takeovers);
  C("rbl_serve_ha_leases_lost_total", "serve.ha: held Leases another replica took.", m->ha_lost);
  C("rbl_serve_runs_canceled_total", "Queued runs canceled because their alert resolved.",
    m->canceled);
  C("rbl_serve_requests_unauthorized_total", "Requests refused with 401.", m->refused_auth);
  C("rbl_serve_spool_refused_entries_total", "Spool entries refused on read-back.", m->spool_bad);
#undef C
  metric(&o, &len, &cap,
         "# HELP rbl_serve_runs_in_flight Runs running now.\n# TYPE rbl_serve_runs_in_flight "
         "gauge\nrbl_serve_runs_in_flight %d\n"
         "# HELP rbl_serve_runs_queued Accepted runs waiting to start.\n# TYPE "
         "rbl_serve_runs_queued gauge\nrbl_serve_runs_queued %d\n"
         "# HELP rbl_serve_paused 1 while paused (POST /v1/pause).\n# TYPE rbl_serve_paused "
         "gauge\nrbl_serve_paused %d\n",
         S->in_flight, S->queued, S->paused);
  metric(&o, &len, &cap,
         "# HELP rbl_serve_run_duration_seconds Duration of runs, start to exit.\n"
         "# TYPE rbl_serve_run_duration_seconds histogram\n");
  for (int i = 0; i < SRV_NBUCKET; i++)
    metric(&o, &len, &cap, "rbl_serve_run_duration_seconds_bucket{le=\"%g\"} %llu\n", b[i],
           (unsigned long long)m->hist[i]);
  metric(&o, &len, &cap,
         "rbl_serve_run_duration_seconds_bucket{le=\"+Inf\"} %llu\n"
         "rbl_serve_run_duration_seconds_sum %.6f\nrbl_serve_run_duration_seconds_count %llu\n",
         (unsigned long long)m->dur_count, m->dur_sum, (unsigned long long)m->dur_count);
  rbl_srv_respond(c, 200, "text/plain; version=0.0.4; charset=utf-8", o ? o : "", len);
  free(o);
}

static void handler(void *ud, srv_conn *c, const srv_request *r) {
  srv_state *S = ud;
  int get = !strcmp(r->method, "GET"), post = !strcmp(r->method, "POST");
  const char *path = r->path;
  char clean[2048];
  snprintf(clean, sizeof clean, "%s", path);
  char *q = strchr(clean, '?');
  if (q) *q = 0;
  if (!strcmp(clean, "/healthz")) {
    if (!get) return respond_error(c, 405, "use GET");
    int ok = !S->spool.failed && !S->draining;
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "status", ok ? "ok" : S->draining ? "draining" : "spool_failed");
    if (S->spool.failed) cJSON_AddStringToObject(j, "error", S->spool.err);
    cJSON_AddBoolToObject(j, "paused", S->paused);
    return respond_json(c, ok ? 200 : 503, j);
  }
  if (!strcmp(clean, "/metrics")) {
    if (!get) return respond_error(c, 405, "use GET");
    return handle_metrics(S, c);
  }
  if (!strncmp(clean, "/v1/runs/", 9)) return rbl_serve_handle_approve(S, c, r, clean + 9);
  int known = !strcmp(clean, "/v1/alertmanager") || !strcmp(clean, "/v1/runs") ||
              !strcmp(clean, "/v1/pause") || !strcmp(clean, "/v1/resume");
  if (!known) return respond_error(c, 404, "no such endpoint (see rbl help serve)");
  /* GET /v1/runs also for approvers (they need the run ids); nothing else. */
  int reader = get && !strcmp(clean, "/v1/runs") && rbl_serve_approver(S, r) >= 0;
  if (!reader && !authorized(S, r)) {
    S->m.refused_auth++;
    return respond_error(
        c, 401, "missing or wrong bearer token (Authorization: Bearer <serve.token_file>)");
  }
  if (!strcmp(clean, "/v1/alertmanager")) {
    if (!post) return respond_error(c, 405, "use POST");
    return handle_alertmanager(S, c, r);
  }
  if (!strcmp(clean, "/v1/runs")) {
    if (!get) return respond_error(c, 405, "use GET");
    return respond_json(c, 200, rbl_serve_runs_json(S));
  }
  if (!post) return respond_error(c, 405, "use POST");
  handle_pause(S, c, r, !strcmp(clean, "/v1/pause"));
}

/* ---- lifecycle ---- */

static void finish(srv_state *S) {
  uv_signal_stop(&S->sigterm);
  uv_signal_stop(&S->sigint);
  uv_timer_stop(&S->drain_timer);
  uv_stop(S->loop);
}

static void drain_check(srv_state *S) {
  if (S->draining && S->in_flight == 0 && !S->spool.syncing && !S->pending && !S->approving &&
      !rbl_serve_ha_busy(S))
    finish(S);
}

static void drain_timer_cb(uv_timer_t *t) {
  srv_state *S = t->data;
  if (S->drain_phase == 0 && S->in_flight > 0) {
    /* The deadline passed: interrupt the runs (as Ctrl-C: cancel the step, roll back). */
    fprintf(stderr, "rbl serve: drain deadline passed: interrupting %d run(s)\n", S->in_flight);
    rbl_serve_signal_runs(S, SIGINT);
    S->drain_phase = 1;
    uv_timer_start(&S->drain_timer, drain_timer_cb, 15000, 0);
    return;
  }
  /* Still running 15 s after the interrupt: killed below; a restart marks them interrupted. */
  finish(S);
}

static void on_signal(uv_signal_t *h, int sig) {
  srv_state *S = h->data;
  if (S->draining) {
    if (sig == SIGINT) {
      fprintf(stderr, "rbl serve: second signal: interrupting runs now\n");
      rbl_serve_signal_runs(S, SIGINT);
    }
    return;
  }
  fprintf(stderr,
          "rbl serve: %s: no new alerts; %d run(s) get %gs to finish; %d queued stay in "
          "the spool\n",
          sig == SIGTERM ? "SIGTERM" : "SIGINT", S->in_flight, S->cfg.drain_timeout, S->queued);
  S->draining = 1;
  rbl_srv_http_stop(&S->http);
  uv_timer_start(&S->drain_timer, drain_timer_cb, (uint64_t)(S->cfg.drain_timeout * 1000), 0);
}

static void idle_check(uv_check_t *h) {
  srv_state *S = h->data;
  drain_check(S);
}

static int mkdirs(const char *dir) {
  char p[4300];
  snprintf(p, sizeof p, "%s", dir);
  for (char *s = p + 1; *s; s++) {
    if (*s != '/') continue;
    *s = 0;
    if (mkdir(p, 0750) != 0 && errno != EEXIST) return -1;
    *s = '/';
  }
  return mkdir(p, 0750) != 0 && errno != EEXIST ? -1 : 0;
}

static int open_spool_dir(srv_state *S) {
  char p[4200];
  const char *sub[] = {"", "/audit", "/runs"};
  for (int i = 0; i < 3; i++) {
    snprintf(p, sizeof p, "%s%s", S->cfg.spool, sub[i]);
    if (mkdirs(p) != 0) {
      fprintf(stderr, "rbl serve: spool directory %s: %s\n", p, strerror(errno));
      return -1;
    }
  }
  snprintf(p, sizeof p, "%s/lock", S->cfg.spool);
  S->lock_fd = open(p, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (S->lock_fd < 0 || flock(S->lock_fd, LOCK_EX | LOCK_NB) != 0) {
    fprintf(stderr,
            "rbl serve: spool %s is in use by another rbl serve (one process per spool; give "
            "each replica its own)\n",
            S->cfg.spool);
    return -1;
  }
  rbl_audit_opts o = {
      .path = NULL, .incident = "rbl-serve", .run = S->instance, .hmac_key_file = S->cfg.audit_key};
  snprintf(p, sizeof p, "%s/serve.jsonl", S->cfg.spool);
  o.path = p;
  char err[512];
  if (rbl_audit_open(&S->chain, &o, err, sizeof err) != 0) {
    fprintf(stderr, "rbl serve: %s\n", err);
    return -1;
  }
  return 0;
}

static int parse_args(int argc, char **argv, const char **config, const char **listen) {
  for (int i = 0; i < argc; i++) {
    const char *a = argv[i], *v = NULL;
    const char *eq = strchr(a, '=');
    char name[32];
    if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
      fputs(usage, stdout);
      return 0;
    }
    if (eq && eq - a < (long)sizeof name && !strncmp(a, "--", 2)) {
      memcpy(name, a, (size_t)(eq - a));
      name[eq - a] = 0;
      a = name;
      v = eq + 1;
    } else if (i + 1 < argc)
      v = argv[i + 1], i += (!strcmp(a, "--config") || !strcmp(a, "--listen"));
    if (!strcmp(a, "--config") || !strcmp(a, "--listen")) {
      if (!v) {
        fprintf(stderr, "rbl serve: option %s needs a value\nTry 'rbl help serve'.\n", a);
        return 2;
      }
      *(!strcmp(a, "--config") ? config : listen) = v;
    } else {
      fprintf(stderr, "rbl serve: unknown argument '%s'\nTry 'rbl help serve'.\n", argv[i]);
      return 2;
    }
  }
  if (!*config) {
    fprintf(stderr, "rbl serve: --config FILE is required\nTry 'rbl help serve'.\n");
    return 2;
  }
  return -1;
}

void rbl_serve_usage(void) { fputs(usage, stdout); }

static void close_walk(uv_handle_t *h, void *arg) {
  if (!uv_is_closing(h)) uv_close(h, NULL);
}

/* Frees what the state owns; the loop is closed and every handle's close callback has run. */
static void state_free(srv_state *S) {
  for (srv_pending *p = S->pending, *n; p; p = n) { /* their connections are closed: freed here */
    n = p->next;
    rbl_srv_respond(p->c, 503, NULL, "", 0);
    free(p->body);
    free(p);
  }
  for (srv_run *r = S->runs, *n; r; r = n) {
    n = r->next;
    cJSON_Delete(r->params);
    free(r);
  }
  for (int i = 0; i < SRV_HASH; i++)
    for (srv_incident *x = S->inc[i], *n; x; x = n) {
      n = x->next;
      free(x);
    }
  for (int i = 0; i < S->cfg.nroutes; i++)
    free(S->route_starts[i]);
  free(S->route_starts);
  free(S->route_nstarts);
  if (S->spool.fd >= 0) close(S->spool.fd);
  free(S->spool.path);
  rbl_serve_config_free(&S->cfg);
  if (S->lock_fd >= 0) close(S->lock_fd);
  free(S);
}

int rbl_cmd_serve(int argc, char **argv) {
  const char *config = NULL, *listen = NULL;
  /* serve.ha's lease agent, started by rbl serve itself (ha.c, agent.c) */
  if (argc == 2 && !strcmp(argv[0], "--lease-agent")) return rbl_serve_lease_agent(argv[1]);
  int rc = parse_args(argc, argv, &config, &listen);
  if (rc >= 0) return rc;
  char why[320]; /* OpenSSL (TLS, digests, the token check) is loaded on first use: now */
  if (rbl_ossl_load(why, sizeof why) != 0) {
    fprintf(stderr, "rbl serve: %s\n", why);
    return 2;
  }
  srv_state *S = calloc(1, sizeof *S);
  if (!S) return 2;
  S->lock_fd = -1;
  if (rbl_serve_config_load(&S->cfg, config, listen) != 0) {
    rbl_serve_config_free(&S->cfg);
    free(S);
    return 2;
  }
  size_t sz = sizeof S->self_exe;
  if (uv_exepath(S->self_exe, &sz) != 0) {
    fprintf(stderr, "rbl serve: cannot find its own executable\n");
    rbl_serve_config_free(&S->cfg);
    free(S);
    return 2;
  }
  S->route_starts = calloc((size_t)S->cfg.nroutes, sizeof *S->route_starts);
  S->route_nstarts = calloc((size_t)S->cfg.nroutes, sizeof *S->route_nstarts);
  snprintf(S->instance, sizeof S->instance, "serve-%d-%ld", (int)getpid(), (long)time(NULL));
  uv_loop_t loop;
  uv_loop_init(&loop);
  loop.data = S;
  S->loop = &loop;
  S->spool.loop = &loop;
  S->spool.on_synced = on_synced;
  S->spool.ud = S;
  S->spool.fd = -1;
  rc = open_spool_dir(S);
  if (!rc) {
    cJSON *rec = cJSON_CreateObject();
    cJSON_AddStringToObject(rec, "kind", "serve_start");
    cJSON_AddStringToObject(rec, "config", S->cfg.config_path);
    cJSON_AddStringToObject(rec, "listen", S->cfg.listen);
    cJSON_AddStringToObject(rec, "rbl_version", RBL_VERSION);
    rbl_serve_note(S, rec);
    rc = rbl_serve_replay(S);
  }
  if (!rc && S->cfg.ha && rbl_serve_ha_start(S) != 0) rc = -1;
  char err[512];
  S->http.max_body = S->cfg.max_body;
  S->http.handler = handler;
  S->http.body_cap = rbl_serve_approve_body_cap;
  S->http.ud = S;
  if (!rc && S->cfg.tls_cert &&
      rbl_srv_http_tls(&S->http, S->cfg.tls_cert, S->cfg.tls_key, err, sizeof err) != 0) {
    fprintf(stderr, "rbl serve: config: %s\n", err);
    rc = -1;
  }
  if (!rc && rbl_srv_http_listen(&S->http, &loop, S->cfg.listen, err, sizeof err) != 0) {
    fprintf(stderr, "rbl serve: %s\n", err);
    rc = -1;
  }
  if (rc) {
    rbl_audit_close(S->chain);
    rbl_serve_ha_stop(S);
    uv_walk(&loop, close_walk, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    rbl_srv_http_free(&S->http);
    rbl_serve_ha_free(S);
    state_free(S);
    return 2;
  }
  fprintf(stderr, "rbl serve: listening on %s (port %d, %s), spool %s, %d route(s)%s\n",
          S->cfg.listen, rbl_srv_http_port(&S->http), S->http.tls ? "TLS" : "plain HTTP",
          S->cfg.spool, S->cfg.nroutes, S->paused ? ", PAUSED (POST /v1/resume)" : "");
  uv_signal_init(&loop, &S->sigterm);
  uv_signal_init(&loop, &S->sigint);
  S->sigterm.data = S->sigint.data = S;
  uv_signal_start(&S->sigterm, on_signal, SIGTERM);
  uv_signal_start(&S->sigint, on_signal, SIGINT);
  uv_timer_init(&loop, &S->drain_timer);
  S->drain_timer.data = S;
  uv_check_t check;
  uv_check_init(&loop, &check);
  check.data = S;
  uv_check_start(&check, idle_check);
  rbl_serve_schedule(S);
  uv_run(&loop, UV_RUN_DEFAULT);
  /* Stopped: interrupt what still runs (drain deadline), record the stop, close. */
  rbl_serve_signal_runs(S, SIGKILL);
  int failed = S->spool.failed;
  if (!failed) rbl_serve_spool_sync_now(&S->spool);
  cJSON *rec = cJSON_CreateObject();
  cJSON_AddStringToObject(rec, "kind", "run_end");
  cJSON_AddStringToObject(rec, "outcome", "ended");
  cJSON_AddNumberToObject(rec, "queued", S->queued);
  cJSON_AddNumberToObject(rec, "in_flight", S->in_flight);
  rbl_serve_note(S, rec);
  rbl_audit_close(S->chain);
  S->chain = NULL; /* an approval answer still on the thread pool records nothing now */
  fprintf(stderr, "rbl serve: stopped; %d queued run(s) stay in the spool\n", S->queued);
  rbl_srv_http_close_all(&S->http);
  rbl_serve_ha_stop(S);
  uv_walk(&loop, close_walk, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
  rbl_srv_http_free(&S->http);
  rbl_serve_ha_free(S);
  state_free(S);
  return failed ? 1 : 0;
}

/* A run serve started dies with serve (PR_SET_PDEATHSIG: SIGINT, so the running step is
 * canceled and rolled back as with Ctrl-C); a restart then finds it on its chain. */
void rbl_serve_child_init(void) {
  const char *p = getenv("RBL_SERVE_PARENT");
  if (!p) return;
  char *end = NULL;
  long want = strtol(p, &end, 10);
  int kill9 = end && *end == 'K'; /* serve.ha: no rollback by an orphan after its lease expired */
  unsetenv("RBL_SERVE_PARENT");
  prctl(PR_SET_PDEATHSIG, kill9 ? SIGKILL : SIGINT);
  if (want > 0 && getppid() != (pid_t)want) {
    fputs("rbl: the rbl serve that started this run has stopped; not starting\n", stderr);
    _exit(2);
  }
}
