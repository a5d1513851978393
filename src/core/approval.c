/* Approvals: a run waiting for people (approve(), a step's approve field). One unix socket beside
 * the run's audit chain serves `rbl approve` (and whatever forwards to it, docs/approvals.md);
 * on a terminal the operator may also confirm by typing the tenant's name. Every request,
 * grant, denial and timeout is an audit record. */
#include "engine_int.h"
#include "json.h"
#include "rbl.h"

#include <errno.h>
#include <lauxlib.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_LINE  8192
#define MAX_NAMES 32

typedef struct appr_req appr_req;
typedef struct appr_conn appr_conn;

struct appr_req {
  rbl_engine *e;
  int id;
  char *message, *tenant, *step, *plan_hash, *change;
  int needed, ngranted;
  char *names[MAX_NAMES];
  rbl_wait *wait;
  uv_timer_t *timer;   /* freed in its close callback */
  const char *outcome; /* "granted" | "denied" | "timeout" */
  char *denied_by, *reason;
  appr_req *next;
};

struct rbl_approval {
  rbl_engine *e;
  uv_pipe_t server;
  int listening;
  char path[128];
  appr_req *reqs;
  int next_id;
  uv_tty_t *tty;    /* reading the operator's answer, while a request waits */
  appr_conn *conns; /* open connections: closed with the approval, never left dangling */
  char ttybuf[256];
  size_t ttylen;
};

struct appr_conn {
  uv_pipe_t pipe;
  rbl_approval *a; /* NULL once the approval closed: the connection is closing too */
  appr_conn *next, **prevp;
  char buf[MAX_LINE];
  size_t len;
  unsigned uid;
  int has_uid;
};

static void free_close_cb(uv_handle_t *h) { free(h); }
static void server_close_cb(uv_handle_t *h) { free(h->data); }

static void req_free(appr_req *r) {
  free(r->message);
  free(r->tenant);
  free(r->step);
  free(r->plan_hash);
  free(r->change);
  free(r->denied_by);
  free(r->reason);
  for (int i = 0; i < r->ngranted; i++)
    free(r->names[i]);
  if (r->timer) uv_close((uv_handle_t *)r->timer, free_close_cb);
  free(r);
}

static void unlink_req(rbl_approval *a, appr_req *r) {
  for (appr_req **p = &a->reqs; *p; p = &(*p)->next)
    if (*p == r) {
      *p = r->next;
      return;
    }
}

static void audit_event(rbl_engine *e, const char *kind, appr_req *r, const char *by, int has_uid,
                        unsigned uid, const char *via, const char *seen, const char *reason,
                        const cJSON *fw) {
  cJSON *rec = cJSON_CreateObject();
  cJSON_AddStringToObject(rec, "kind", kind);
  cJSON_AddNumberToObject(rec, "request", r->id);
  if (r->tenant) cJSON_AddStringToObject(rec, "tenant", r->tenant);
  if (r->step) cJSON_AddStringToObject(rec, "step", r->step);
  if (by) cJSON_AddStringToObject(rec, "by", by);
  if (has_uid) cJSON_AddNumberToObject(rec, "uid", uid);
  if (via) cJSON_AddStringToObject(rec, "via", via);
  if (seen) cJSON_AddStringToObject(rec, "plan_hash_seen", seen);
  if (reason) cJSON_AddStringToObject(rec, "reason", reason);
  if (fw) cJSON_AddItemToObject(rec, "forwarded", cJSON_Duplicate(fw, 1));
  if (!strcmp(kind, "approval_request")) {
    cJSON_AddStringToObject(rec, "message", r->message);
    cJSON_AddNumberToObject(rec, "approvers", r->needed);
    if (r->plan_hash) cJSON_AddStringToObject(rec, "plan_hash", r->plan_hash);
    if (r->change) cJSON_AddStringToObject(rec, "change", r->change);
  }
  rbl__audit(e, rec);
}

static void tty_stop(rbl_approval *a);

/* The request is decided: wake its task (the push function returns the outcome). */
static void req_finish(appr_req *r, const char *outcome) {
  if (r->outcome) return;
  r->outcome = outcome;
  if (r->timer) uv_timer_stop(r->timer);
  rbl_approval *a = r->e->approval;
  if (a && a->reqs == r && !r->next) tty_stop(a);
  if (a) unlink_req(a, r);
  if (r->wait) rbl_wait_done(r->wait);
}

static int grant(appr_req *r, const char *name, int has_uid, unsigned uid, const char *via,
                 const char *seen, const char *reason, const cJSON *fw, char *why, size_t whylen) {
  for (int i = 0; i < r->ngranted; i++)
    if (!strcmp(r->names[i], name)) {
      snprintf(why, whylen,
               "%s already approved request %d: approvers = %d means %d distinct people", name,
               r->id, r->needed, r->needed);
      return -1;
    }
  if (r->ngranted < MAX_NAMES) r->names[r->ngranted++] = strdup(name);
  audit_event(r->e, "approval_grant", r, name, has_uid, uid, via, seen, reason, fw);
  rbl__progress(r->e, "rbl: approved by %s (%s), %d of %d", name, via, r->ngranted, r->needed);
  if (r->ngranted >= r->needed) req_finish(r, "granted");
  return 0;
}

static void deny(appr_req *r, const char *name, int has_uid, unsigned uid, const char *via,
                 const char *seen, const char *reason, const cJSON *fw) {
  audit_event(r->e, "approval_denial", r, name, has_uid, uid, via, seen, reason, fw);
  rbl__progress(r->e, "rbl: denied by %s (%s)%s%s", name, via, reason ? ": " : "",
                reason ? reason : "");
  free(r->denied_by);
  r->denied_by = strdup(name);
  free(r->reason);
  r->reason = reason ? strdup(reason) : NULL;
  req_finish(r, "denied");
}

/* ---- the terminal: the operator types the tenant's name ---- */

static void tty_close_cb(uv_handle_t *h) { free(h); }

static void tty_stop(rbl_approval *a) {
  if (!a->tty) return;
  uv_read_stop((uv_stream_t *)a->tty);
  uv_close((uv_handle_t *)a->tty, tty_close_cb);
  a->tty = NULL;
}

static void tty_alloc(uv_handle_t *h, size_t sugg, uv_buf_t *buf) {
  static char chunk[256];
  (void)h;
  (void)sugg;
  buf->base = chunk;
  buf->len = sizeof chunk;
}

static void tty_prompt(appr_req *r) {
  char line[512];
  int n = snprintf(line, sizeof line, "type the tenant's name (%s) to approve, or 'no' to deny: ",
                   r->tenant ? r->tenant : "?");
  if (write(2, line, (size_t)n) < 0) { /* nothing to report to */
  }
}

static void tty_line(rbl_approval *a, const char *s) {
  appr_req *r = a->reqs;
  if (!r) return;
  struct passwd *pw = getpwuid(getuid());
  const char *who = pw ? pw->pw_name : "?";
  char why[256];
  if (r->tenant && !strcmp(s, r->tenant)) {
    if (grant(r, who, 1, (unsigned)getuid(), "tty", r->plan_hash, NULL, NULL, why, sizeof why) !=
        0) {
      rbl__progress(a->e, "rbl: %s", why);
      tty_prompt(r);
    } else if (!r->outcome) {
      tty_prompt(r);
    }
  } else if (!strcmp(s, "no") || !strcmp(s, "n")) {
    deny(r, who, 1, (unsigned)getuid(), "tty", r->plan_hash, "denied at the terminal", NULL);
  } else {
    rbl__progress(a->e, "rbl: '%s' is not the tenant's name", s);
    tty_prompt(r);
  }
}

static void tty_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  rbl_approval *a = s->data;
  if (n < 0) { /* the terminal went away: socket approvals may still come */
    tty_stop(a);
    return;
  }
  for (ssize_t i = 0; i < n; i++) {
    char ch = buf->base[i];
    if (ch == '\n' || ch == '\r') {
      a->ttybuf[a->ttylen] = 0;
      a->ttylen = 0;
      tty_line(a, a->ttybuf);
      if (!a->tty) return;
    } else if (a->ttylen < sizeof a->ttybuf - 1) {
      a->ttybuf[a->ttylen++] = ch;
    }
  }
}

static int tty_start(rbl_approval *a) {
  if (a->tty) return 0;
  if (!isatty(0) || !isatty(2)) return -1;
  a->tty = calloc(1, sizeof *a->tty);
  if (!a->tty || uv_tty_init(&a->e->loop, a->tty, 0, 1) != 0) {
    free(a->tty);
    a->tty = NULL;
    return -1;
  }
  a->tty->data = a;
  a->ttylen = 0;
  uv_read_start((uv_stream_t *)a->tty, tty_alloc, tty_read);
  return 0;
}

/* ---- the socket: rbl approve ---- */

static void conn_close_cb(uv_handle_t *h) {
  appr_conn *c = h->data;
  if (c->a) { /* unlink from the approval's list */
    *c->prevp = c->next;
    if (c->next) c->next->prevp = c->prevp;
  }
  free(c);
}

static void conn_close(appr_conn *c) {
  if (!uv_is_closing((uv_handle_t *)&c->pipe)) uv_close((uv_handle_t *)&c->pipe, conn_close_cb);
}

static void write_cb(uv_write_t *w, int status) {
  (void)status;
  free(w->data);
  free(w);
}

static void reply(appr_conn *c, cJSON *obj) {
  char *txt = cJSON_PrintUnformatted(obj);
  cJSON_Delete(obj);
  if (!txt) return;
  size_t n = strlen(txt);
  char *buf = malloc(n + 2);
  if (buf) {
    memcpy(buf, txt, n);
    buf[n] = '\n';
    buf[n + 1] = 0;
  }
  cJSON_free(txt);
  if (!buf) return;
  uv_write_t *w = malloc(sizeof *w);
  if (!w) {
    free(buf);
    return;
  }
  w->data = buf;
  uv_buf_t b = uv_buf_init(buf, (unsigned)(n + 1));
  if (uv_write(w, (uv_stream_t *)&c->pipe, &b, 1, write_cb) != 0) {
    free(buf);
    free(w);
  }
}

static cJSON *req_json(appr_req *r) {
  cJSON *o = cJSON_CreateObject();
  cJSON_AddNumberToObject(o, "id", r->id);
  cJSON_AddStringToObject(o, "message", r->message);
  if (r->tenant) cJSON_AddStringToObject(o, "tenant", r->tenant);
  if (r->step) cJSON_AddStringToObject(o, "step", r->step);
  if (r->plan_hash) cJSON_AddStringToObject(o, "plan_hash", r->plan_hash);
  if (r->change) cJSON_AddStringToObject(o, "change", r->change);
  cJSON_AddNumberToObject(o, "approvers", r->needed);
  cJSON *g = cJSON_AddArrayToObject(o, "approved_by");
  for (int i = 0; i < r->ngranted; i++)
    cJSON_AddItemToArray(g, cJSON_CreateString(r->names[i]));
  return o;
}

static cJSON *err_reply(const char *fmt, const char *arg) {
  char msg[512];
  snprintf(msg, sizeof msg, fmt, arg);
  cJSON *o = cJSON_CreateObject();
  cJSON_AddBoolToObject(o, "ok", 0);
  cJSON_AddStringToObject(o, "error", msg);
  return o;
}

static void handle_line(appr_conn *c, const char *line) {
  rbl_approval *a = c->a;
  cJSON *in = cJSON_Parse(line);
  const char *op = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(in, "op"));
  if (!in || !op) {
    reply(c, err_reply("not a request: send one JSON object per line with \"op\"%s", ""));
    cJSON_Delete(in);
    return;
  }
  if (!strcmp(op, "status")) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddBoolToObject(o, "ok", 1);
    cJSON_AddStringToObject(o, "incident", a->e->approval_incident);
    cJSON_AddStringToObject(o, "run", a->e->approval_run);
    cJSON *list = cJSON_AddArrayToObject(o, "pending");
    for (appr_req *r = a->reqs; r; r = r->next)
      cJSON_AddItemToArray(list, req_json(r));
    reply(c, o);
    cJSON_Delete(in);
    return;
  }
  if (strcmp(op, "approve") && strcmp(op, "deny")) {
    reply(c, err_reply("unknown op '%s' (status, approve, deny)", op));
    cJSON_Delete(in);
    return;
  }
  const cJSON *jid = cJSON_GetObjectItemCaseSensitive(in, "id");
  appr_req *r = NULL;
  int npending = 0;
  for (appr_req *p = a->reqs; p; p = p->next) {
    npending++;
    if (cJSON_IsNumber(jid) && p->id == (int)jid->valuedouble) r = p;
  }
  if (!cJSON_IsNumber(jid) && npending == 1) r = a->reqs;
  if (!r) {
    reply(c, err_reply(npending ? "no pending request with that id%s"
                                : "no approval is pending in this run%s",
                       ""));
    cJSON_Delete(in);
    return;
  }
  const char *seen = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(in, "plan_hash"));
  if (r->plan_hash && seen && strcmp(seen, r->plan_hash) != 0) {
    reply(c, err_reply("the request's plan changed: it is %s now; look again (rbl approve shows "
                       "it) before deciding",
                       r->plan_hash));
    cJSON_Delete(in);
    return;
  }
  /* forwarded: who passed the answer on (rbl serve: its name, the token's name, the peer);
   * recorded verbatim with the answer, so it must be small and plain. */
  const cJSON *fw = cJSON_GetObjectItemCaseSensitive(in, "forwarded"), *f;
  int fw_ok = !fw || (cJSON_IsObject(fw) && cJSON_GetArraySize(fw) <= 8);
  cJSON_ArrayForEach(f, fw) fw_ok = fw_ok && cJSON_IsString(f) && strlen(f->valuestring) <= 256;
  if (!fw_ok) {
    reply(c,
          err_reply("forwarded must be an object of at most 8 strings of at most 256 bytes%s", ""));
    cJSON_Delete(in);
    return;
  }
  const char *as = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(in, "as"));
  const char *reason = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(in, "reason"));
  char who[160];
  struct passwd *pw = c->has_uid ? getpwuid((uid_t)c->uid) : NULL;
  snprintf(who, sizeof who, "%s", as && *as ? as : pw ? pw->pw_name : "?");
  cJSON *req = req_json(r);
  if (!strcmp(op, "deny")) {
    deny(r, who, c->has_uid, c->uid, "socket", seen, reason, fw);
  } else {
    char why[256];
    if (grant(r, who, c->has_uid, c->uid, "socket", seen, reason, fw, why, sizeof why) != 0) {
      cJSON_Delete(req);
      reply(c, err_reply("%s", why));
      cJSON_Delete(in);
      return;
    }
  }
  cJSON *o = cJSON_CreateObject();
  cJSON_AddBoolToObject(o, "ok", 1);
  cJSON_AddStringToObject(o, "decision", !strcmp(op, "deny") ? "denied" : "approved");
  cJSON_AddStringToObject(o, "by", who);
  cJSON_AddItemToObject(o, "request", req);
  cJSON_AddStringToObject(o, "outcome", r->outcome ? r->outcome : "waiting");
  reply(c, o);
  cJSON_Delete(in);
}

static void conn_alloc(uv_handle_t *h, size_t sugg, uv_buf_t *buf) {
  appr_conn *c = h->data;
  (void)sugg;
  buf->base = c->buf + c->len;
  buf->len = sizeof c->buf - c->len - 1;
}

static void conn_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  appr_conn *c = s->data;
  (void)buf;
  if (!c->a || n < 0 || (n == 0 && c->len >= sizeof c->buf - 1)) {
    conn_close(c);
    return;
  }
  c->len += (size_t)n;
  c->buf[c->len] = 0;
  char *nl;
  while (c->a && !uv_is_closing((uv_handle_t *)&c->pipe) && (nl = memchr(c->buf, '\n', c->len))) {
    *nl = 0;
    handle_line(c, c->buf);
    size_t used = (size_t)(nl - c->buf) + 1;
    memmove(c->buf, c->buf + used, c->len - used);
    c->len -= used;
  }
  if (c->len >= sizeof c->buf - 1) conn_close(c);
}

static void on_connect(uv_stream_t *server, int status) {
  rbl_approval *a = server->data;
  if (status < 0) return;
  appr_conn *c = calloc(1, sizeof *c);
  if (!c) return;
  c->a = a;
  c->next = a->conns;
  if (a->conns) a->conns->prevp = &c->next;
  c->prevp = &a->conns;
  a->conns = c;
  uv_pipe_init(&a->e->loop, &c->pipe, 0);
  c->pipe.data = c;
  if (uv_accept(server, (uv_stream_t *)&c->pipe) != 0) {
    conn_close(c);
    return;
  }
  uv_os_fd_t fd;
  struct ucred cred;
  socklen_t len = sizeof cred;
  if (uv_fileno((uv_handle_t *)&c->pipe, &fd) == 0 &&
      getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0) {
    c->uid = (unsigned)cred.uid;
    c->has_uid = 1;
  }
  uv_read_start((uv_stream_t *)&c->pipe, conn_alloc, conn_read);
}

static rbl_approval *approval_of(rbl_engine *e, char *err, size_t errlen) {
  if (e->approval) return e->approval;
  if (!e->approval_sock) {
    snprintf(err, errlen, "this run has no audit chain to place its approval socket beside");
    return NULL;
  }
  rbl_approval *a = calloc(1, sizeof *a);
  if (!a) return NULL;
  a->e = e;
  a->next_id = 1;
  snprintf(a->path, sizeof a->path, "%s", e->approval_sock);
  uv_pipe_init(&e->loop, &a->server, 0);
  a->server.data = a;
  struct stat st;
  if (lstat(a->path, &st) == 0 && S_ISSOCK(st.st_mode)) unlink(a->path); /* a crashed run's */
  mode_t old = umask(0077);                                              /* the owner only */
  int rc = uv_pipe_bind(&a->server, a->path);
  umask(old);
  if (rc == 0) rc = uv_listen((uv_stream_t *)&a->server, 8, on_connect);
  if (rc != 0) {
    snprintf(err, errlen, "cannot listen on %s: %s", a->path, uv_strerror(rc));
    uv_close((uv_handle_t *)&a->server, server_close_cb); /* frees a */
    return NULL;
  }
  uv_unref((uv_handle_t *)&a->server);
  a->listening = 1;
  e->approval = a;
  return a;
}

void rbl__approval_close(rbl_engine *e) {
  rbl_approval *a = e->approval;
  if (!a) return;
  tty_stop(a);
  while (a->reqs) {
    appr_req *r = a->reqs;
    a->reqs = r->next;
    r->outcome = "canceled";
  }
  while (a->conns) { /* a client still connected: its connection goes with the approval */
    appr_conn *c = a->conns;
    a->conns = c->next;
    c->a = NULL;
    conn_close(c);
  }
  if (a->listening) {
    uv_close((uv_handle_t *)&a->server, server_close_cb); /* frees a */
    unlink(a->path);
  } else {
    free(a);
  }
  e->approval = NULL;
}

/* ---- host.approval_wait(req) ---- */

static void req_timeout(uv_timer_t *t) {
  appr_req *r = t->data;
  audit_event(r->e, "approval_timeout", r, NULL, 0, 0, NULL, NULL, NULL, NULL);
  rbl__progress(r->e, "rbl: no approval within the timeout: the step fails closed");
  req_finish(r, "timeout");
}

static void req_cancel(void *ud) {
  appr_req *r = ud;
  rbl_approval *a = r->e->approval;
  if (a) {
    unlink_req(a, r);
    if (!a->reqs) tty_stop(a);
  }
  req_free(r);
}

static int req_push(lua_State *L, void *ud) {
  appr_req *r = ud;
  lua_createtable(L, 0, 4);
  lua_pushstring(L, r->outcome ? r->outcome : "canceled");
  lua_setfield(L, -2, "outcome");
  lua_createtable(L, r->ngranted, 0);
  for (int i = 0; i < r->ngranted; i++) {
    lua_pushstring(L, r->names[i]);
    lua_rawseti(L, -2, i + 1);
  }
  lua_setfield(L, -2, "approved_by");
  if (r->denied_by) {
    lua_pushstring(L, r->denied_by);
    lua_setfield(L, -2, "denied_by");
  }
  if (r->reason) {
    lua_pushstring(L, r->reason);
    lua_setfield(L, -2, "reason");
  }
  lua_pushinteger(L, r->id);
  lua_setfield(L, -2, "id");
  req_free(r);
  return 1;
}

static char *opt_dup(lua_State *L, int t, const char *k) {
  lua_getfield(L, t, k);
  const char *s = lua_tostring(L, -1);
  char *out = s ? strdup(s) : NULL;
  lua_pop(L, 1);
  return out;
}

/* host.approval_wait{message, tenant, step, plan_hash, change, approvers, timeout, yes_as}
 * -> {outcome = "granted"|"denied"|"timeout", approved_by = {...}, denied_by, reason, id}.
 * yes_as: --yes was given; it approves as that user at once. Yields until decided. */
int rbl__approval_wait(lua_State *L) {
  rbl_engine *e = rbl_engine_of(L);
  luaL_checktype(L, 1, LUA_TTABLE);
  rbl__poll_limits(L);
  char err[512];
  rbl_approval *a = approval_of(e, err, sizeof err);
  if (!a) return rbl_raise(L, "failed", "approve: %s", err);
  appr_req *r = calloc(1, sizeof *r);
  if (!r) return luaL_error(L, "out of memory");
  r->e = e;
  r->id = a->next_id++;
  r->message = opt_dup(L, 1, "message");
  if (!r->message) r->message = strdup("approval");
  r->tenant = opt_dup(L, 1, "tenant");
  r->step = opt_dup(L, 1, "step");
  r->plan_hash = opt_dup(L, 1, "plan_hash");
  r->change = opt_dup(L, 1, "change");
  char *yes_as = opt_dup(L, 1, "yes_as");
  lua_getfield(L, 1, "approvers");
  r->needed = (int)luaL_optinteger(L, -1, 1);
  lua_getfield(L, 1, "timeout");
  double timeout = luaL_optnumber(L, -1, 300);
  lua_pop(L, 2);
  if (r->needed < 1) r->needed = 1;
  if (r->needed > MAX_NAMES) r->needed = MAX_NAMES;
  r->next = a->reqs;
  a->reqs = r;
  audit_event(e, "approval_request", r, NULL, 0, 0, NULL, NULL, NULL, NULL);
  rbl__progress(e, "rbl: APPROVAL NEEDED (request %d, %d approver%s): %s", r->id, r->needed,
                r->needed > 1 ? "s" : "", r->message);
  rbl__progress(e, "     tenant %s  incident %s  step %s", r->tenant ? r->tenant : "-",
                e->approval_incident ? e->approval_incident : "-", r->step ? r->step : "-");
  if (r->change) rbl__progress(e, "     planned change: %s", r->change);
  if (r->plan_hash) rbl__progress(e, "     plan %s", r->plan_hash);
  rbl__progress(e, "     from another terminal: rbl approve %s [--deny]",
                e->approval_audit ? e->approval_audit : "AUDIT");
  if (yes_as) {
    char why[256];
    grant(r, yes_as, 1, (unsigned)getuid(), "--yes", r->plan_hash, NULL, NULL, why, sizeof why);
    free(yes_as);
    if (r->outcome) return req_push(L, r); /* decided at once: no wait */
  }
  r->wait = rbl_wait_new(L, req_push, req_cancel, r);
  if (tty_start(a) == 0) tty_prompt(r);
  r->timer = malloc(sizeof *r->timer);
  uv_timer_init(&e->loop, r->timer);
  r->timer->data = r;
  uv_timer_start(r->timer, req_timeout, (uint64_t)(timeout * 1000), 0);
  return rbl_wait_yield(L, r->wait);
}
