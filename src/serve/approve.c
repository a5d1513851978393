/* rbl serve's GET and POST /v1/runs/ID/approve: shows what a running child run waits for, and
 * answers it for a person holding one of serve.approve_tokens, through the run's approval socket
 * (the client side `rbl approve` uses, on the thread pool so a slow run cannot stall the loop).
 * The forwarded answer and its result are records on serve's own chain; the run records the
 * answer on its chain with who forwarded it. */
#include "approval_client.h"
#include "ossl_dl.h"
#include "serve.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define APPROVE_TIMEOUT_MS 5000
#define APPROVE_BODY_MAX   8192
#define APPROVE_MAX_BUSY   2 /* forwards at once (the thread pool also syncs the spool) */

typedef struct appr_work {
  uv_work_t w;
  srv_state *S;
  srv_conn *c;
  srv_run *run; /* for its busy flag; runs are not freed while running */
  int post, deny, id;
  int pid;
  char run_id[48], incident[64], chain[4200], token[72], peer[64];
  char *as, *reason, *seen;
  int status; /* the answer, set by the worker */
  cJSON *out;
} appr_work;

/* Which approve token the request carries: its index; -1 none or wrong; -2 the webhook token. All
 * digests are compared, in constant time, whatever matches. */
int rbl_serve_approver(srv_state *S, const srv_request *r) {
  const char *a = r->authorization;
  if (!a || strncasecmp(a, "Bearer ", 7) != 0) return -1;
  a += 7;
  while (*a == ' ')
    a++;
  unsigned char d[32], hook[32];
  rbl_serve_token_digest(a, strlen(a), d);
  rbl_serve_token_digest(S->cfg.token, S->cfg.token_len, hook);
  int found = -1;
  for (int i = 0; i < S->cfg.napprove; i++)
    if (CRYPTO_memcmp(d, S->cfg.approve_tokens[i].digest, 32) == 0) found = i;
  int is_hook = CRYPTO_memcmp(d, hook, 32) == 0;
  return found >= 0 ? found : is_hook ? -2 : -1;
}

static cJSON *error_vobj(const char *fmt, va_list ap) __attribute__((format(printf, 1, 0)));
static cJSON *error_vobj(const char *fmt, va_list ap) {
  char msg[1200];
  vsnprintf(msg, sizeof msg, fmt, ap);
  cJSON *j = cJSON_CreateObject();
  cJSON_AddStringToObject(j, "error", msg);
  return j;
}

static void respond_error(srv_conn *c, int st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void respond_error(srv_conn *c, int st, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  cJSON *j = error_vobj(fmt, ap);
  va_end(ap);
  rbl_serve_respond_json(c, st, j);
}

static cJSON *error_obj(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static cJSON *error_obj(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  cJSON *j = error_vobj(fmt, ap);
  va_end(ap);
  return j;
}

/* Printable text of at most max bytes without control characters (UTF-8 passes). */
static int plain_text(const char *s, size_t min, size_t max) {
  size_t n = strlen(s);
  if (n < min || n > max) return 0;
  for (size_t i = 0; i < n; i++)
    if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f) return 0;
  return 1;
}

static int plan_hash_ok(const char *s) {
  if (strncmp(s, "sha256:", 7) != 0 || strlen(s) != 71) return 0;
  for (const char *p = s + 7; *p; p++)
    if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f'))) return 0;
  return 1;
}

/* The body of a POST: {"as", "deny", "reason", "id", "plan_hash"}, all optional. NULL or the
 * message of a 400. */
static const char *parse_body(appr_work *w, const srv_request *r) {
  if (r->body_len == 0) return NULL;
  cJSON *b = cJSON_ParseWithLength(r->body, r->body_len);
  if (!cJSON_IsObject(b)) {
    cJSON_Delete(b);
    return "the body must be a JSON object: {\"as\": NAME, \"deny\": false, \"reason\": TEXT, "
           "\"id\": N, \"plan_hash\": \"sha256:...\"} (every field optional)";
  }
  const char *bad = NULL;
  const cJSON *f;
  cJSON_ArrayForEach(f, b) {
    const char *k = f->string;
    if (!strcmp(k, "as")) {
      if (!cJSON_IsString(f) || !plain_text(f->valuestring, 1, 64))
        bad = "as must be a name of 1 to 64 characters without control characters";
      else
        w->as = strdup(f->valuestring);
    } else if (!strcmp(k, "deny")) {
      if (!cJSON_IsBool(f))
        bad = "deny must be true or false";
      else
        w->deny = cJSON_IsTrue(f);
    } else if (!strcmp(k, "reason")) {
      if (!cJSON_IsString(f) || !plain_text(f->valuestring, 0, 1024))
        bad = "reason must be text of at most 1024 bytes without control characters";
      else
        w->reason = strdup(f->valuestring);
    } else if (!strcmp(k, "id")) {
      if (!cJSON_IsNumber(f) || f->valuedouble < 1 || f->valuedouble > 1e6 ||
          f->valuedouble != (double)(int)f->valuedouble)
        bad = "id must be the request's number (a positive integer)";
      else
        w->id = (int)f->valuedouble;
    } else if (!strcmp(k, "plan_hash")) {
      if (!cJSON_IsString(f) || !plan_hash_ok(f->valuestring))
        bad =
            "plan_hash must be \"sha256:\" and 64 lower-case hex digits (the hash you were shown)";
      else
        w->seen = strdup(f->valuestring);
    } else {
      bad = "unknown field: the body takes as, deny, reason, id and plan_hash";
    }
    if (bad) break;
  }
  cJSON_Delete(b);
  return bad;
}

static void work_free(appr_work *w) {
  free(w->as);
  free(w->reason);
  free(w->seen);
  cJSON_Delete(w->out);
  free(w);
}

/* On the thread pool: status, then (POST) the answer. Touches only w. */
static void work_cb(uv_work_t *uw) {
  appr_work *w = uw->data;
  rbl_appr_client cl;
  char err[600];
  int rc = rbl_approval_connect(&cl, w->chain, err, sizeof err);
  if (rc == -3) { /* held by another user: not the run's */
    w->status = 502;
    w->out = error_obj("run %s: %s", w->run_id, err);
    return;
  }
  if (rc != 0) {
    w->status = 409;
    w->out = error_obj("run %s is not waiting for approval: it has not asked (%s)", w->run_id, err);
    return;
  }
  if (cl.peer_pid != w->pid) {
    /* Not the child serve started: its word is not taken, nothing is sent. */
    w->status = 502;
    w->out = error_obj("the approval socket %s is held by pid %d, not by run %s (pid %d): nothing "
                       "was sent",
                       cl.sock, cl.peer_pid, w->run_id, w->pid);
    rbl_approval_disconnect(&cl);
    return;
  }
  cJSON *st = rbl_approval_status(&cl, APPROVE_TIMEOUT_MS, err, sizeof err);
  const char *inc = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(st, "incident"));
  if (!st && cl.closed) { /* decided meanwhile, or ended: nothing waits any more */
    w->status = 409;
    w->out = error_obj("run %s is not waiting for approval any more (%s)", w->run_id, err);
    rbl_approval_disconnect(&cl);
    return;
  }
  if (!st || !inc || strcmp(inc, w->incident) != 0) {
    w->status = st ? 502 : 504;
    w->out = st ? error_obj("run %s answered for incident %.80s, not %s: nothing was sent",
                            w->run_id, inc ? inc : "(none)", w->incident)
                : error_obj("run %s: %s", w->run_id, err);
    cJSON_Delete(st);
    rbl_approval_disconnect(&cl);
    return;
  }
  cJSON *pending = cJSON_DetachItemFromObjectCaseSensitive(st, "pending");
  if (!w->post) {
    w->status = 200;
    w->out = cJSON_CreateObject();
    cJSON_AddStringToObject(w->out, "run", w->run_id);
    cJSON_AddStringToObject(w->out, "incident", w->incident);
    cJSON_AddItemToObject(w->out, "pending", pending);
    cJSON_Delete(st);
    rbl_approval_disconnect(&cl);
    return;
  }
  cJSON_AddItemToObject(st, "pending", pending);
  const char *why = NULL;
  int several = 0;
  const cJSON *pick = rbl_approval_pick(st, w->id, &why, &several);
  if (!pick) {
    w->status = several ? 400 : 409;
    w->out = error_obj("run %s: %s%s", w->run_id, why,
                       several ? " (give \"id\"; GET this URL lists them)" : "");
    cJSON_AddItemToObject(w->out, "pending", cJSON_Duplicate(pending, 1));
    cJSON_Delete(st);
    rbl_approval_disconnect(&cl);
    return;
  }
  cJSON *fw = cJSON_CreateObject();
  cJSON_AddStringToObject(fw, "by", "rbl serve");
  cJSON_AddStringToObject(fw, "token", w->token);
  cJSON_AddStringToObject(fw, "peer", w->peer);
  cJSON_AddStringToObject(fw, "serve_run", w->run_id);
  cJSON *req = cJSON_Duplicate(pick, 1);
  cJSON *m =
      rbl_approval_answer_msg(pick, w->deny, w->as ? w->as : w->token, w->reason, w->seen, fw);
  cJSON_Delete(st);
  cJSON *ans = rbl_approval_exchange(&cl, m, APPROVE_TIMEOUT_MS, err, sizeof err);
  rbl_approval_disconnect(&cl);
  if (!ans) {
    w->status = 504;
    w->out = error_obj("run %s: %s (the answer may or may not have been recorded: GET this URL)",
                       w->run_id, err);
    cJSON_Delete(req);
    return;
  }
  if (!cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(ans, "ok"))) {
    const char *e = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(ans, "error"));
    w->status = 409;
    w->out = error_obj("run %s refused the answer: %.600s", w->run_id, e ? e : "(no reason given)");
    cJSON_Delete(req);
    cJSON_Delete(ans);
    return;
  }
  const char *outcome = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(ans, "outcome"));
  const char *by = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(ans, "by"));
  w->status = 200;
  w->out = cJSON_CreateObject();
  cJSON_AddStringToObject(w->out, "run", w->run_id);
  cJSON_AddStringToObject(w->out, "incident", w->incident);
  cJSON_AddStringToObject(w->out, "decision", w->deny ? "denied" : "approved");
  cJSON_AddStringToObject(w->out, "by", by ? by : "?");
  cJSON_AddStringToObject(w->out, "token", w->token);
  cJSON_AddStringToObject(w->out, "outcome", outcome ? outcome : "?");
  cJSON_AddItemToObject(w->out, "request", req);
  cJSON_Delete(ans);
}

static void after_cb(uv_work_t *uw, int status) {
  appr_work *w = uw->data;
  srv_state *S = w->S;
  S->approving--;
  w->run->approving = 0;
  if (status != 0 && !w->out) {
    w->status = 503;
    w->out = error_obj("the approval was not forwarded (canceled)");
  }
  if (w->post) {
    const char *e = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(w->out, "error"));
    cJSON *rec = cJSON_CreateObject();
    cJSON_AddStringToObject(rec, "kind", "approval_forwarded");
    cJSON_AddStringToObject(rec, "serve_run", w->run_id);
    cJSON_AddStringToObject(rec, "incident", w->incident);
    cJSON_AddNumberToObject(rec, "status", w->status);
    if (e)
      cJSON_AddStringToObject(rec, "error", e);
    else {
      cJSON_AddStringToObject(
          rec, "outcome",
          cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(w->out, "outcome")));
      const cJSON *rq = cJSON_GetObjectItemCaseSensitive(w->out, "request");
      cJSON_AddItemToObject(rec, "request",
                            cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(rq, "id"), 1));
    }
    rbl_serve_note(S, rec);
    fprintf(stderr, "rbl serve: run %s: %s by %s (token %s) %s: %s\n", w->run_id,
            w->deny ? "denial" : "approval", w->as ? w->as : w->token, w->token,
            e ? "not recorded" : "recorded",
            e ? e : cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(w->out, "outcome")));
  }
  cJSON *out = w->out;
  w->out = NULL;
  rbl_serve_respond_json(w->c, w->status, out);
  work_free(w);
}

void rbl_serve_handle_approve(srv_state *S, srv_conn *c, const srv_request *r, const char *rest) {
  /* rest: "ID/approve" */
  const char *slash = strchr(rest, '/');
  size_t idlen = slash ? (size_t)(slash - rest) : 0;
  if (!slash || strcmp(slash, "/approve") != 0 || idlen == 0 || idlen >= 48)
    return respond_error(c, 404, "no such endpoint (see rbl help serve)");
  int get = !strcmp(r->method, "GET"), post = !strcmp(r->method, "POST");
  if (!get && !post) return respond_error(c, 405, "use GET (what waits) or POST (the answer)");
  int who = rbl_serve_approver(S, r);
  if (who == -2)
    return respond_error(c, 403,
                         S->cfg.napprove
                             ? "the webhook token (serve.token_file) cannot answer approvals: "
                               "use a token from serve.approve_tokens"
                             : "approving over HTTP is off: the config has no "
                               "serve.approve_tokens (the webhook token cannot approve)");
  if (who < 0) {
    S->m.refused_auth++;
    return respond_error(c, 401,
                         "missing or wrong bearer token (Authorization: Bearer <a token from "
                         "serve.approve_tokens>)");
  }
  char id[48];
  memcpy(id, rest, idlen);
  id[idlen] = 0;
  srv_run *run = NULL;
  for (srv_run *x = S->runs; x; x = x->next)
    if (!strcmp(x->id, id)) run = x;
  if (!run) return respond_error(c, 404, "no run %s (GET /v1/runs lists them)", id);
  if (run->state != R_RUNNING || !run->proc_open)
    return respond_error(c, 409, "run %s is %s%s%s: it is not waiting for approval", id,
                         run->state == R_QUEUED ? "queued" : "done",
                         run->state == R_DONE ? ", outcome " : "",
                         run->state == R_DONE ? run->outcome : "");
  if (run->approving)
    return respond_error(c, 409, "an answer for run %s is being forwarded: retry in a moment", id);
  if (S->approving >= APPROVE_MAX_BUSY)
    return respond_error(c, 503, "%d approvals are being forwarded: retry in a moment",
                         S->approving);
  appr_work *w = calloc(1, sizeof *w);
  if (!w) return respond_error(c, 503, "out of memory");
  w->S = S;
  w->c = c;
  w->run = run;
  w->post = post;
  w->pid = run->pid;
  snprintf(w->run_id, sizeof w->run_id, "%s", run->id);
  snprintf(w->incident, sizeof w->incident, "%s", run->incident);
  snprintf(w->chain, sizeof w->chain, "%s/audit/%s.jsonl", S->cfg.spool, run->incident);
  snprintf(w->token, sizeof w->token, "%s", S->cfg.approve_tokens[who].name);
  snprintf(w->peer, sizeof w->peer, "%s", r->peer);
  if (post) {
    const char *bad = parse_body(w, r);
    if (bad) {
      work_free(w);
      return respond_error(c, 400, "%s", bad);
    }
    /* Recorded before it is sent, as every effect. */
    cJSON *rec = cJSON_CreateObject();
    cJSON_AddStringToObject(rec, "kind", "approval_forward");
    cJSON_AddStringToObject(rec, "serve_run", w->run_id);
    cJSON_AddStringToObject(rec, "incident", w->incident);
    cJSON_AddStringToObject(rec, "decision", w->deny ? "deny" : "approve");
    cJSON_AddStringToObject(rec, "as", w->as ? w->as : w->token);
    cJSON_AddStringToObject(rec, "token", w->token);
    cJSON_AddStringToObject(rec, "peer", w->peer);
    if (w->id) cJSON_AddNumberToObject(rec, "request", w->id);
    if (w->reason) cJSON_AddStringToObject(rec, "reason", w->reason);
    if (w->seen) cJSON_AddStringToObject(rec, "plan_hash_seen", w->seen);
    rbl_serve_note(S, rec);
  }
  w->w.data = w;
  if (uv_queue_work(S->loop, &w->w, work_cb, after_cb) != 0) {
    work_free(w);
    return respond_error(c, 503, "cannot forward the approval now: retry");
  }
  S->approving++;
  run->approving = 1;
}

/* The body cap of this endpoint: an answer is small. */
size_t rbl_serve_approve_body_cap(const char *path) {
  return !strncmp(path, "/v1/runs/", 9) ? APPROVE_BODY_MAX : 0;
}
