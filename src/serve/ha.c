/* serve.ha: replicas coordinate through one coordination.k8s.io/v1 Lease per alert group
 * (docs/serve.md, "Across replicas"). The Lease protocol is host Lua (lua/rbl/lease.lua) in the
 * lease agent, a child `rbl serve --lease-agent` (agent.c) that keeps one engine alive and so
 * resolves the cluster exactly as kube.* does; this file drives it from serve's loop over a pipe,
 * one JSON line per request, answers in order.
 *
 * A queued run starts only once it holds its Lease (rbl_serve_ha_may_start). Held, it is renewed
 * every lease_seconds/3; a run whose Lease was lost, or not renewed for lease_seconds (counted
 * from when the last successful renewal was sent), is canceled (SIGINT). A run whose Lease
 * another replica holds stands by and asks again at every tick: when the holder ends it, the run
 * ends "elsewhere"; when the holder stops renewing for its leaseDurationSeconds (judged by the
 * agent from when it last saw the resourceVersion change), the Lease is taken over in state
 * interrupted and the run ends "interrupted" without running. */
#include "serve.h"
#include "audit.h"
#include "sha256.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { OP_INIT, OP_ACQUIRE, OP_RENEW, OP_RELEASE, OP_FORGET };
static const char *const op_names[] = {"init", "acquire", "renew", "release", "forget"};

typedef struct ha_op {
  int kind;
  char run[48]; /* the run it is for ("" for init) */
  double sent;  /* monotonic seconds */
  struct ha_op *next;
} ha_op;

typedef struct srv_ha {
  srv_state *S;
  uv_process_t proc;
  uv_pipe_t in, out; /* the agent's stdin (we write) and stdout (we read) */
  int alive;         /* the process runs and its pipes are open */
  int ready;         /* init answered ok */
  int stopping;
  char *buf;
  size_t len, cap;
  ha_op *head, *tail;
  uv_timer_t tick, restart;
  char init_err[1200];
  int init_answered;
  double last_complaint;
  int nhandles;  /* handles still to be closed */
  int proc_open; /* the process handle is not closed yet */
  int serving;   /* past the start-up: a failed init is retried, not fatal */
} srv_ha;

static double mono(void) { return (double)uv_hrtime() / 1e9; }

/* rbl-<16 hex of SHA-256(incident)>, "/resolved" appended for a resolved run's own Lease. */
static void lease_name(const srv_run *r, char out[40]) {
  char in[80];
  snprintf(in, sizeof in, "%s%s", r->incident, r->resolved ? "/resolved" : "");
  unsigned char d[32];
  rbl_sha256(in, strlen(in), d);
  static const char hx[] = "0123456789abcdef";
  memcpy(out, "rbl-", 4);
  for (int i = 0; i < 8; i++) {
    out[4 + 2 * i] = hx[d[i] >> 4];
    out[5 + 2 * i] = hx[d[i] & 15];
  }
  out[20] = 0;
}

static srv_run *run_by_id(srv_state *S, const char *id) {
  for (srv_run *r = S->runs; r; r = r->next)
    if (!strcmp(r->id, id)) return r;
  return NULL;
}

/* At most one complaint line per lease period (an API server that is down would flood stderr). */
static void complain(srv_ha *h, const char *fmt, const char *a, const char *b) {
  double now = mono();
  if (now - h->last_complaint < h->S->cfg.ha_seconds / 3) return;
  h->last_complaint = now;
  fprintf(stderr, "rbl serve: ha: ");
  fprintf(stderr, fmt, a, b);
  fputc('\n', stderr);
}

static void write_done(uv_write_t *w, int status) {
  free(w->data);
  free(w);
}

static int send_op(srv_ha *h, int kind, srv_run *r, cJSON *req) {
  if (!h->alive || (kind != OP_INIT && !h->ready)) {
    cJSON_Delete(req);
    return -1;
  }
  ha_op *op = calloc(1, sizeof *op);
  cJSON_AddStringToObject(req, "op", op_names[kind]);
  char *line = cJSON_PrintUnformatted(req);
  cJSON_Delete(req);
  uv_write_t *w = malloc(sizeof *w);
  size_t n = line ? strlen(line) : 0;
  char *buf = line ? realloc(line, n + 2) : NULL;
  if (!op || !w || !buf) {
    free(op);
    free(w);
    free(buf ? buf : line);
    return -1;
  }
  buf[n] = '\n';
  buf[n + 1] = 0;
  w->data = buf;
  uv_buf_t b = uv_buf_init(buf, (unsigned)(n + 1));
  if (uv_write(w, (uv_stream_t *)&h->in, &b, 1, write_done) != 0) {
    free(buf);
    free(w);
    free(op);
    return -1;
  }
  op->kind = kind;
  op->sent = mono();
  if (r) {
    snprintf(op->run, sizeof op->run, "%s", r->id);
    r->ha_busy = 1;
    r->ha_sent = op->sent;
  }
  if (h->tail)
    h->tail->next = op;
  else
    h->head = op;
  h->tail = op;
  return 0;
}

static cJSON *req_for(srv_state *S, const srv_run *r) {
  cJSON *q = cJSON_CreateObject();
  char name[40];
  lease_name(r, name);
  cJSON_AddStringToObject(q, "name", name);
  cJSON_AddStringToObject(q, "incident", r->incident);
  cJSON_AddStringToObject(q, "run", r->id);
  cJSON_AddNumberToObject(q, "cooldown", S->cfg.routes[r->route].cooldown);
  return q;
}

static void note_ha(srv_state *S, const char *what, const srv_run *r, const char *holder,
                    const char *prev_run) {
  cJSON *rec = cJSON_CreateObject();
  char name[40];
  lease_name(r, name);
  cJSON_AddStringToObject(rec, "kind", "serve_ha");
  cJSON_AddStringToObject(rec, "what", what);
  cJSON_AddStringToObject(rec, "run", r->id);
  cJSON_AddStringToObject(rec, "incident", r->incident);
  cJSON_AddStringToObject(rec, "lease", name);
  cJSON_AddStringToObject(rec, "namespace", S->cfg.ha_namespace);
  cJSON_AddStringToObject(rec, "identity", S->cfg.ha_identity);
  if (holder) cJSON_AddStringToObject(rec, "holder", holder);
  if (prev_run && prev_run[0]) cJSON_AddStringToObject(rec, "holder_run", prev_run);
  rbl_serve_note(S, rec);
}

static void cancel_run(srv_state *S, srv_run *r, const char *why) {
  if (r->state != R_RUNNING || r->ha_cancel) return;
  r->ha_cancel = 1;
  fprintf(stderr,
          "rbl serve: run %s: %s: canceling it (SIGINT: the step is canceled and rolled "
          "back)\n",
          r->id, why);
  note_ha(S, why, r, NULL, NULL);
  if (r->proc_open) uv_process_kill(&r->proc, SIGINT);
}

static const char *sval(const cJSON *j, const char *k) {
  const char *v = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, k));
  return v ? v : "";
}

static void on_answer(srv_ha *h, ha_op *op, const cJSON *a) {
  srv_state *S = h->S;
  const char *err = a ? cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(a, "error")) : NULL;
  if (!a) err = "no answer (the lease agent stopped)";
  if (op->kind == OP_INIT) {
    h->init_answered = 1;
    if (err) {
      snprintf(h->init_err, sizeof h->init_err, "%s", err);
      if (h->serving && h->alive) { /* a restarted agent that cannot start: try again later */
        fprintf(stderr, "rbl serve: ha: the lease agent cannot start: %s\n", err);
        uv_process_kill(&h->proc, SIGTERM);
      }
      return;
    }
    h->ready = 1;
    fprintf(stderr,
            "rbl serve: ha: Leases in namespace %s on %s (context %s), identity %s, "
            "lease %g s\n",
            S->cfg.ha_namespace, sval(a, "server"), sval(a, "context"), S->cfg.ha_identity,
            S->cfg.ha_seconds);
    return;
  }
  srv_run *r = op->run[0] ? run_by_id(S, op->run) : NULL;
  if (r) r->ha_busy = 0;
  const char *res = a ? sval(a, "result") : "";
  if (op->kind == OP_ACQUIRE) {
    if (r && r->state == R_DONE && !err && !strcmp(res, "acquired")) {
      /* it ended while asking (its alert resolved): give the Lease back at once */
      r->ha = HA_HELD;
      rbl_serve_ha_run_ended(S, r);
      return;
    }
    if (!r || r->state != R_QUEUED || (r->ha != HA_ASKING && r->ha != HA_STANDBY)) return;
    if (err) {
      r->ha = r->ha == HA_STANDBY ? HA_STANDBY : HA_NONE;
      complain(h, "cannot take a Lease (runs wait): %s%s", err, "");
      return;
    }
    snprintf(r->ha_holder, sizeof r->ha_holder, "%s", sval(a, "holder"));
    snprintf(r->ha_prev_run, sizeof r->ha_prev_run, "%s", sval(a, "run"));
    if (!strcmp(res, "acquired")) {
      r->ha = HA_HELD;
      r->ha_ok = op->sent;
      note_ha(S, "acquired", r, NULL, NULL);
      rbl_serve_schedule(S);
    } else if (!strcmp(res, "held")) {
      if (r->ha != HA_STANDBY)
        fprintf(stderr,
                "rbl serve: run %s: incident %s is held by %s (another replica): standing "
                "by\n",
                r->id, r->incident, r->ha_holder);
      r->ha = HA_STANDBY;
    } else if (!strcmp(res, "elsewhere")) {
      r->ha = HA_ELSEWHERE;
      fprintf(stderr, "rbl serve: run %s: incident %s ran on %s (state %s): not run here\n", r->id,
              r->incident, r->ha_holder, sval(a, "state"));
      note_ha(S, "elsewhere", r, r->ha_holder, r->ha_prev_run);
      rbl_serve_run_end(S, r, "elsewhere");
    } else if (!strcmp(res, "takeover")) {
      r->ha = HA_TAKEOVER;
      S->m.ha_takeovers++;
      fprintf(stderr,
              "rbl serve: run %s: %s stopped renewing the Lease of incident %s mid-run "
              "(its run %s): took the Lease over, marked the run interrupted; not re-run, "
              "its writes not replayed (its own replica appends interrupted to its chain "
              "when it comes back)\n",
              r->id, r->ha_holder, r->incident, r->ha_prev_run[0] ? r->ha_prev_run : "?");
      note_ha(S, "takeover", r, r->ha_holder, r->ha_prev_run);
      rbl_serve_run_end(S, r, "interrupted");
    } else {
      r->ha = HA_NONE;
      complain(h, "an answer the server does not know: %s%s", res, "");
    }
    return;
  }
  if (op->kind == OP_RENEW) {
    if (!r || r->ha != HA_HELD) return;
    if (err) {
      complain(h, "cannot renew a Lease: %s%s", err, "");
      r->ha_sent = 0; /* try again at the next tick, not a full period later */
      return;
    }
    if (!strcmp(res, "renewed")) {
      r->ha_ok = op->sent;
    } else {
      snprintf(r->ha_holder, sizeof r->ha_holder, "%s", sval(a, "holder"));
      S->m.ha_lost++;
      r->ha = HA_LOST;
      if (r->state == R_RUNNING) {
        char why[300];
        snprintf(why, sizeof why, "lost the Lease of incident %s to %s", r->incident, r->ha_holder);
        cancel_run(S, r, why);
      } else {
        r->ha = HA_NONE; /* not started: ask again */
      }
    }
    return;
  }
  if (op->kind == OP_RELEASE && err) complain(h, "cannot release a Lease: %s%s", err, "");
}

static void agent_gone(srv_ha *h);

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
  srv_ha *h = s->data;
  if (n < 0) {
    free(b->base);
    agent_gone(h);
    return;
  }
  if (n > 0) {
    if (h->len + (size_t)n + 1 > h->cap) {
      size_t cap = (h->len + (size_t)n + 1) * 2;
      char *nb = cap <= 4 * 1024 * 1024 ? realloc(h->buf, cap) : NULL;
      if (!nb) {
        free(b->base);
        fprintf(stderr, "rbl serve: ha: the lease agent's answer is too long: stopping it\n");
        uv_process_kill(&h->proc, SIGKILL);
        return;
      }
      h->buf = nb;
      h->cap = cap;
    }
    memcpy(h->buf + h->len, b->base, (size_t)n);
    h->len += (size_t)n;
  }
  free(b->base);
  char *nl;
  while (h->len && (nl = memchr(h->buf, '\n', h->len))) {
    *nl = 0;
    ha_op *op = h->head;
    if (op) {
      h->head = op->next;
      if (!h->head) h->tail = NULL;
      cJSON *a = cJSON_Parse(h->buf);
      on_answer(h, op, cJSON_IsObject(a) ? a : NULL);
      cJSON_Delete(a);
      free(op);
    }
    size_t used = (size_t)(nl - h->buf) + 1;
    memmove(h->buf, nl + 1, h->len - used);
    h->len -= used;
  }
}

static void on_alloc(uv_handle_t *hd, size_t sz, uv_buf_t *b) {
  b->base = malloc(65536);
  b->len = b->base ? 65536 : 0;
}

static void handle_closed(uv_handle_t *hd) {
  srv_ha *h = hd->data;
  h->nhandles--;
}

static int agent_spawn(srv_ha *h);

static void restart_cb(uv_timer_t *t) {
  srv_ha *h = t->data;
  if (h->stopping || h->alive) return;
  if (h->proc_open) { /* the old agent closed its pipes but has not exited yet */
    uv_process_kill(&h->proc, SIGKILL);
    uv_timer_start(&h->restart, restart_cb, 1000, 0);
    return;
  }
  if (agent_spawn(h) != 0) {
    uv_timer_start(&h->restart, restart_cb, 5000, 0);
    return;
  }
  cJSON *q = cJSON_CreateObject();
  cJSON_AddStringToObject(q, "namespace", h->S->cfg.ha_namespace);
  cJSON_AddStringToObject(q, "identity", h->S->cfg.ha_identity);
  cJSON_AddNumberToObject(q, "seconds", h->S->cfg.ha_seconds);
  send_op(h, OP_INIT, NULL, q);
}

/* The agent's pipes closed or it exited: every request in flight fails; a new agent comes in
 * 2 s (held runs are canceled meanwhile if their Leases go unrenewed for lease_seconds). */
static void agent_gone(srv_ha *h) {
  if (!h->alive) return;
  h->alive = 0;
  h->ready = 0;
  uv_close((uv_handle_t *)&h->in, handle_closed);
  uv_close((uv_handle_t *)&h->out, handle_closed);
  h->len = 0;
  while (h->head) {
    ha_op *op = h->head;
    h->head = op->next;
    on_answer(h, op, NULL);
    free(op);
  }
  h->tail = NULL;
  if (!h->stopping) {
    fprintf(stderr, "rbl serve: ha: the lease agent stopped; starting a new one in 2 s\n");
    uv_timer_start(&h->restart, restart_cb, 2000, 0);
  }
}

static void proc_closed(uv_handle_t *hd) {
  srv_ha *h = hd->data;
  h->proc_open = 0;
}

static void on_agent_exit(uv_process_t *p, int64_t status, int sig) {
  srv_ha *h = p->data;
  agent_gone(h);
  uv_close((uv_handle_t *)p, proc_closed);
}

static int agent_spawn(srv_ha *h) {
  srv_state *S = h->S;
  uv_pipe_init(S->loop, &h->in, 0);
  uv_pipe_init(S->loop, &h->out, 0);
  h->in.data = h->out.data = h->proc.data = h;
  h->nhandles += 2;
  char *args[] = {S->self_exe, "serve", "--lease-agent", S->cfg.config_path, NULL};
  uv_stdio_container_t stdio[3];
  stdio[0].flags = UV_CREATE_PIPE | UV_READABLE_PIPE;
  stdio[0].data.stream = (uv_stream_t *)&h->in;
  stdio[1].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
  stdio[1].data.stream = (uv_stream_t *)&h->out;
  stdio[2].flags = UV_INHERIT_FD;
  stdio[2].data.fd = 2;
  uv_process_options_t o;
  memset(&o, 0, sizeof o);
  o.file = S->self_exe;
  o.args = args;
  o.exit_cb = on_agent_exit;
  o.stdio = stdio;
  o.stdio_count = 3;
  o.flags = UV_PROCESS_DETACHED; /* a terminal's Ctrl-C is serve's */
  int rc = uv_spawn(S->loop, &h->proc, &o);
  h->proc_open = 1;
  if (rc != 0) {
    fprintf(stderr, "rbl serve: ha: cannot start the lease agent: %s\n", uv_strerror(rc));
    uv_close((uv_handle_t *)&h->proc, proc_closed);
    uv_close((uv_handle_t *)&h->in, handle_closed);
    uv_close((uv_handle_t *)&h->out, handle_closed);
    return -1;
  }
  uv_unref((uv_handle_t *)&h->proc);
  uv_unref((uv_handle_t *)&h->in);
  uv_unref((uv_handle_t *)&h->out);
  h->alive = 1;
  uv_read_start((uv_stream_t *)&h->out, on_alloc, on_read);
  return 0;
}

/* Every lease_seconds/6: renewals and standby polls go out every lease_seconds/3; a running
 * run whose last successful renewal was sent more than 2/3 of lease_seconds ago is canceled (the
 * renew deadline, as client-go's leader election keeps one below the lease duration), so it stops
 * before any other replica can judge its Lease expired. */
static void tick_cb(uv_timer_t *t) {
  srv_ha *h = t->data;
  srv_state *S = h->S;
  double now = mono(), L = S->cfg.ha_seconds;
  for (srv_run *r = S->runs; r; r = r->next) {
    if (r->state == R_DONE) continue;
    if (r->ha == HA_HELD) {
      if (r->state == R_RUNNING && now - r->ha_ok > L * 2 / 3) {
        char why[200];
        snprintf(why, sizeof why, "no renewal of the Lease of incident %s succeeded for %.1f s",
                 r->incident, now - r->ha_ok);
        cancel_run(S, r, why);
      }
      if (!r->ha_busy && now - r->ha_sent >= L / 3 - 0.05) send_op(h, OP_RENEW, r, req_for(S, r));
    } else if (r->ha == HA_STANDBY && r->state == R_QUEUED && !r->ha_busy &&
               now - r->ha_sent >= L / 3 - 0.05) {
      send_op(h, OP_ACQUIRE, r, req_for(S, r));
    }
  }
  rbl_serve_schedule(S); /* runs whose acquire failed ask again */
}

static void wake_cb(uv_timer_t *t) {}

int rbl_serve_ha_start(srv_state *S) {
  if (!S->cfg.ha) return 0;
  srv_ha *h = calloc(1, sizeof *h);
  if (!h) return -1;
  h->S = S;
  S->ha = h;
  uv_timer_init(S->loop, &h->tick);
  uv_timer_init(S->loop, &h->restart);
  h->tick.data = h->restart.data = h;
  h->nhandles += 2;
  if (agent_spawn(h) != 0) return -1;
  cJSON *q = cJSON_CreateObject();
  cJSON_AddStringToObject(q, "namespace", S->cfg.ha_namespace);
  cJSON_AddStringToObject(q, "identity", S->cfg.ha_identity);
  cJSON_AddNumberToObject(q, "seconds", S->cfg.ha_seconds);
  if (send_op(h, OP_INIT, NULL, q) != 0) {
    fprintf(stderr, "rbl serve: ha: cannot talk to the lease agent\n");
    return -1;
  }
  /* wait for the first answer, bounded: the kubeconfig may run a credential plugin */
  uv_ref((uv_handle_t *)&h->out);
  uv_timer_start(&h->restart, wake_cb, 60000, 0); /* bounds the wait below */
  double end = mono() + 60;
  while (!h->init_answered && h->alive && mono() < end)
    uv_run(S->loop, UV_RUN_ONCE);
  uv_timer_stop(&h->restart);
  if (h->alive) uv_unref((uv_handle_t *)&h->out);
  if (!h->ready) {
    fprintf(stderr, "rbl serve: serve.ha: %s\n",
            h->init_err[0] ? h->init_err
                           : "the lease agent did not answer within 60 s (see its message above)");
    return -1;
  }
  h->serving = 1;
  uint64_t every = (uint64_t)(S->cfg.ha_seconds * 1000 / 6);
  uv_timer_start(&h->tick, tick_cb, every, every);
  uv_unref((uv_handle_t *)&h->tick);
  uv_unref((uv_handle_t *)&h->restart);
  return 0;
}

int rbl_serve_ha_may_start(srv_state *S, srv_run *r) {
  srv_ha *h = S->ha;
  if (!h) return 1;
  if (r->ha == HA_HELD) return 1;
  if (r->ha == HA_NONE && !r->ha_busy && h->ready) {
    r->ha = HA_ASKING;
    if (send_op(h, OP_ACQUIRE, r, req_for(S, r)) != 0) r->ha = HA_NONE;
  }
  return 0;
}

void rbl_serve_ha_run_ended(srv_state *S, srv_run *r) {
  srv_ha *h = S->ha;
  if (!h) return;
  if (r->ha == HA_HELD) {
    cJSON *q = req_for(S, r);
    cJSON_AddStringToObject(q, "outcome", r->outcome);
    r->ha = HA_RELEASED;
    if (send_op(h, OP_RELEASE, r, q) != 0)
      complain(h, "cannot release the Lease of incident %s: %s", r->incident,
               "the lease agent is not running (the Lease expires)");
  } else if (r->ha != HA_NONE && r->ha != HA_RELEASED) {
    send_op(h, OP_FORGET, r, req_for(S, r));
  }
}

int rbl_serve_ha_busy(srv_state *S) { return S->ha && S->ha->alive && S->ha->head != NULL; }

void rbl_serve_ha_stop(srv_state *S) {
  srv_ha *h = S->ha;
  if (!h) return;
  h->stopping = 1;
  uv_timer_stop(&h->tick);
  uv_timer_stop(&h->restart);
  uv_close((uv_handle_t *)&h->tick, handle_closed);
  uv_close((uv_handle_t *)&h->restart, handle_closed);
  if (h->alive) {
    uv_process_kill(&h->proc, SIGTERM);
    agent_gone(h);
  }
}

/* After the loop's last run: the handles are closed. */
void rbl_serve_ha_free(srv_state *S) {
  srv_ha *h = S->ha;
  if (!h) return;
  while (h->head) {
    ha_op *op = h->head;
    h->head = op->next;
    free(op);
  }
  free(h->buf);
  free(h);
  S->ha = NULL;
}

cJSON *rbl_serve_ha_json(srv_state *S, const srv_run *r) {
  if (!S->ha) return NULL;
  static const char *const st[] = {"none",     "asking", "held",      "standby",
                                   "released", "lost",   "elsewhere", "takeover"};
  cJSON *o = cJSON_CreateObject();
  char name[40];
  lease_name(r, name);
  cJSON_AddStringToObject(o, "lease", name);
  cJSON_AddStringToObject(o, "namespace", S->cfg.ha_namespace);
  cJSON_AddStringToObject(o, "state", st[r->ha]);
  if (r->ha == HA_STANDBY || r->ha == HA_ELSEWHERE || r->ha == HA_TAKEOVER || r->ha == HA_LOST)
    cJSON_AddStringToObject(o, "holder", r->ha_holder);
  if (r->ha == HA_TAKEOVER) {
    cJSON *t = cJSON_AddObjectToObject(o, "interrupted_by_takeover");
    cJSON_AddStringToObject(t, "holder", r->ha_holder);
    cJSON_AddStringToObject(t, "holder_run", r->ha_prev_run);
  }
  return o;
}
