/* rbl serve: what the server files in src/serve share (prefixes rbl_serve_, rbl_srv_). */
#ifndef RBL_SERVE_H
#define RBL_SERVE_H

#include <cjson/cJSON.h>
#include <regex.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

/* ---- config (config.c) ---- */

typedef struct srv_match {
  char *label, *value; /* equality, or an anchored POSIX ERE when re is set */
  int is_re;
  regex_t re;
} srv_match;

typedef struct srv_param {
  char *name, *label;
  /* What the runbook [0] and the resolved_runbook [1] declare for it, read at start:
   * {"type": "string"|"number"|"boolean", "choices": [...]}, or NULL. */
  cJSON *decl[2];
} srv_param;

typedef struct srv_route {
  char *name; /* config's name, else "route-N" */
  srv_match *match;
  int nmatch;
  char *runbook;          /* absolute path */
  char *resolved_runbook; /* or NULL: resolved notifications are only recorded */
  char *tenant_label;
  srv_param *params;
  int nparams;
  double cooldown;       /* seconds after the incident's last run ended */
  int max_runs_per_hour; /* the brake */
  int concurrency;       /* runs of this route at once */
  int in_flight;         /* runtime */
} srv_route;

/* serve.approve_tokens: a name and the SHA-256 of its token (the token itself is not kept). */
typedef struct srv_token {
  char *name;
  unsigned char digest[32];
} srv_token;

typedef struct srv_config {
  char *config_path; /* absolute; passed to every child run */
  char *listen;      /* "ADDR:PORT" */
  char *token;       /* the bearer token (file contents, trailing newline dropped) */
  size_t token_len;
  srv_token *approve_tokens; /* serve.approve_tokens: who may answer approvals over HTTP */
  int napprove;
  char *spool; /* directory, absolute */
  int max_concurrent;
  int max_queued;       /* accepted runs waiting to start; beyond: 429 */
  size_t max_body;      /* bytes */
  double drain_timeout; /* SIGTERM: seconds runs get to finish */
  int on_restart_rerun; /* on_restart = "rerun" (else "interrupt") */
  size_t compact_bytes; /* serve.spool_compact_kb: the spool is rewritten beyond this size */
  char *audit_key;      /* serve.audit_key: HMAC key file for every chain (runs' and serve's) */
  char **tenants;
  int ntenants;
  srv_route *routes;
  int nroutes;
  char *tls_cert, *tls_key; /* serve.tls = {cert, key}: both or neither */
  int ha;                   /* serve.ha is set: runs coordinate through Leases (ha.c) */
  char *ha_namespace;       /* serve.ha.lease_namespace */
  char *ha_identity;        /* serve.ha.identity, default "<host name>-<pid>" */
  double ha_seconds;        /* serve.ha.lease_seconds */
} srv_config;

/* Loads and checks FILE's serve table. Returns 0, or 2 after printing the cause. */
int rbl_serve_config_load(srv_config *c, const char *path, const char *listen);
void rbl_serve_config_free(srv_config *c);
/* 1 when the route's match/match_re all hold for labels (a cJSON object of strings). */
int rbl_serve_route_matches(const srv_route *r, const cJSON *labels);
int rbl_serve_tenant_known(const srv_config *c, const char *t);
/* NULL when value fits the declaration (type, choices) as `rbl run --param` would take it; else
 * why not (a static string). */
const char *rbl_serve_param_refused(const cJSON *decl, const char *value);
/* SHA-256 of a token (tokens are compared as digests, in constant time). */
void rbl_serve_token_digest(const char *tok, size_t len, unsigned char out[32]);

/* ---- the spool (spool.c) ---- */

typedef struct srv_spool {
  int fd;
  char *path;
  uint64_t seq;         /* last seq appended */
  uint64_t synced;      /* last seq known durable */
  uint64_t sync_target; /* what the sync in flight covers */
  size_t bytes;         /* the file's size (what triggers compaction) */
  int syncing;          /* an fdatasync is on the thread pool */
  int failed;           /* a write or sync failed: nothing is accepted any more */
  char err[4400];
  uv_fs_t req;
  uv_loop_t *loop;
  void (*on_synced)(struct srv_spool *);
  void *ud;
} srv_spool;

/* Appends one record (takes ownership of rec, adds "seq" and "t"); not synced. Returns the seq
 * or 0 on failure (the spool is then failed). */
uint64_t rbl_serve_spool_append(srv_spool *s, cJSON *rec);
/* Starts a group sync if records are waiting and none is in flight. */
void rbl_serve_spool_kick(srv_spool *s);
/* Synchronous sync (startup, shutdown). 0 or -1. */
int rbl_serve_spool_sync_now(srv_spool *s);

/* Reads the spool file, verifying every entry; calls fn for each good record in order, and bad
 * for each refused entry (line number, reason, the entry's first bytes). Returns 0 or -1 (could
 * not read; err says why). */
typedef void (*srv_spool_fn)(void *ud, const cJSON *rec);
typedef void (*srv_spool_bad_fn)(void *ud, size_t line, const char *why, const char *head);
int rbl_serve_spool_read(const char *path, srv_spool_fn fn, srv_spool_bad_fn bad, void *ud,
                         char *err, size_t errlen);
/* Writes recs (an array of records, seq kept) to path.tmp, syncs, renames over path, syncs the
 * directory, and opens it for appending into s. 0 or -1. */
int rbl_serve_spool_rewrite(srv_spool *s, const char *path, const cJSON *recs, uint64_t seq);
/* The entry format, for tests: "<sha256 hex of json> <json>\n". malloc'd. */
char *rbl_serve_spool_line(const char *json, size_t *len);

/* ---- the HTTP/1.1 server (http.c) ---- */

typedef struct srv_conn srv_conn;

typedef struct srv_request {
  char method[16];
  char path[2048];
  char *body;
  size_t body_len;
  char *authorization; /* header value or NULL */
  char peer[64];
} srv_request;

/* Called once per complete request. The handler answers now or later with rbl_srv_respond
 * (exactly once); the connection holds further requests until then. */
typedef void (*srv_handler)(void *ud, srv_conn *c, const srv_request *r);

typedef struct srv_http {
  uv_tcp_t tcp;
  uv_loop_t *loop;
  srv_handler handler;
  void *ud;
  size_t max_body;
  int nconns, max_conns;
  int closing;
  srv_conn *conns;
  struct ssl_ctx_st *tls; /* SSL_CTX for every connection, or NULL (plain HTTP) */
  /* A smaller body cap for some paths (0: max_body), checked from Content-Length. */
  size_t (*body_cap)(const char *path);
} srv_http;

int rbl_srv_http_listen(srv_http *h, uv_loop_t *loop, const char *addr_port, char *err,
                        size_t errlen);
/* Loads cert and key (PEM): every connection is then TLS. 0 or -1 with err. */
int rbl_srv_http_tls(srv_http *h, const char *cert, const char *key, char *err, size_t errlen);
void rbl_srv_http_free(srv_http *h);
/* Closes every open connection (at exit; their memory is freed in the close callbacks). */
void rbl_srv_http_close_all(srv_http *h);
/* The port actually bound (for --listen ADDR:0). */
int rbl_srv_http_port(srv_http *h);
/* Stops accepting new connections; open ones finish their request and close. */
void rbl_srv_http_stop(srv_http *h);
/* Answers the connection's pending request. body may be NULL; ctype defaults to JSON. */
void rbl_srv_respond(srv_conn *c, int status, const char *ctype, const char *body, size_t len);
/* The connection is still open (the handler's answer would be delivered). */
int rbl_srv_conn_alive(const srv_conn *c);

/* ---- runs and decisions (runs.c) ---- */

enum { R_QUEUED, R_RUNNING, R_DONE };

/* One accepted run. Owned by the state's list; the process handle is closed before the run can
 * be dropped (proc_open). */
typedef struct srv_run {
  char id[48];
  char incident[64];
  int route;
  char tenant[64];
  cJSON *params; /* {name: value} */
  int resolved;  /* the route's resolved_runbook */
  int state;
  char outcome[32]; /* succeeded failed error refused audit_failed killed interrupted canceled */
  double accepted_at, started_at, ended_at;
  uint64_t accept_seq; /* may start once the spool has synced this far */
  int exit_code, term_signal;
  uv_process_t proc;
  int proc_open;
  int pid;
  /* serve.ha (ha.c): where this run stands with its incident's Lease */
  int ha;              /* HA_* */
  int ha_busy;         /* a lease request for it is in flight */
  int ha_cancel;       /* SIGINT sent: the lease was lost or could not be renewed */
  double ha_ok;        /* monotonic seconds: when the last successful acquire/renew was sent */
  double ha_sent;      /* monotonic seconds: when the last lease request for it was sent */
  char ha_holder[128]; /* the other replica holding it (standby, elsewhere, takeover) */
  char ha_prev_run[48];
  int approving; /* an answer to its approval request is being forwarded (approve.c) */
  struct srv_run *next;
} srv_run;

enum { HA_NONE, HA_ASKING, HA_HELD, HA_STANDBY, HA_RELEASED, HA_LOST, HA_ELSEWHERE, HA_TAKEOVER };

typedef struct srv_incident {
  char id[64];
  srv_run *active;      /* queued or running firing run */
  srv_run *active_res;  /* queued or running resolved run */
  double last_end;      /* when its last firing run ended (cooldown) */
  int resolved_handled; /* a resolved run was accepted since the last firing run */
  struct srv_incident *next;
} srv_incident;

typedef struct srv_metrics {
  uint64_t received, accepted, deduplicated, unrouted, resolved;
  uint64_t refused_tenant, refused_brake, refused_queue, refused_unavailable, refused_auth;
  uint64_t started, succeeded, failed, interrupted, canceled, spool_bad;
  uint64_t elsewhere, ha_takeovers, ha_lost; /* serve.ha */
  uint64_t hist[12];
  double dur_sum;
  uint64_t dur_count;
} srv_metrics;

#define SRV_NBUCKET 10
#define SRV_HASH    4096

typedef struct srv_state {
  srv_config cfg;
  uv_loop_t *loop;
  srv_spool spool;
  srv_http http;
  struct rbl_audit *chain; /* serve's own audit chain (pause, resume, spool problems) */
  char instance[48];
  char self_exe[4096];
  srv_run *runs, *runs_tail;
  int nruns_done;
  int queued, in_flight;
  srv_incident *inc[SRV_HASH];
  double **route_starts; /* per route: acceptance times within the last hour */
  int *route_nstarts;
  int paused, draining;
  uint64_t decisions; /* payloads decided (prunes the incident table now and then) */
  int replaying;      /* rbl_serve_replay is rebuilding state: nothing is appended */
  srv_metrics m;
  struct srv_pending *pending;
  uv_signal_t sigterm, sigint;
  uv_timer_t drain_timer;
  int drain_phase;
  int lock_fd;
  struct srv_ha *ha; /* serve.ha: the lease agent and its requests (ha.c), or NULL */
  int approving;     /* approval answers being forwarded on the thread pool (approve.c) */
} srv_state;

double rbl_serve_now(void);
/* Decides one Alertmanager payload (already parsed). Appends what it decided to the spool and
 * returns the HTTP status; *out gets the JSON answer. */
int rbl_serve_decide(srv_state *S, const cJSON *payload, cJSON **out);
/* Rewrites the spool from what is live in memory when it has grown past serve.spool_compact_kb
 * and nothing waits for a sync. */
void rbl_serve_compact(srv_state *S);
/* Starts every queued run that may start now. */
void rbl_serve_schedule(srv_state *S);
/* Replays the spool at start (before listening). 0 or -1 (message printed). */
int rbl_serve_replay(srv_state *S);
/* Sends sig to every running child. */
void rbl_serve_signal_runs(srv_state *S, int sig);
cJSON *rbl_serve_runs_json(srv_state *S);
void rbl_serve_note(srv_state *S, cJSON *rec); /* a record on serve's own chain, synced */

/* Ends a run that never started (serve.ha: it ran elsewhere, or was taken over) with outcome. */
void rbl_serve_run_end(srv_state *S, srv_run *r, const char *outcome);

/* ---- serve.ha (ha.c, agent.c) ---- */

/* Starts the lease agent and waits for its first answer (cluster resolved, Leases readable).
 * 0, or -1 after printing why. */
int rbl_serve_ha_start(srv_state *S);
/* 1 when r holds its incident's Lease and may start; otherwise asks for it (once) and returns 0. */
int rbl_serve_ha_may_start(srv_state *S, srv_run *r);
/* r ended: its Lease is released (state done), or forgotten. */
void rbl_serve_ha_run_ended(srv_state *S, srv_run *r);
/* Lease requests are in flight (a drain waits for them: a release must reach the API). */
int rbl_serve_ha_busy(srv_state *S);
/* Closes the agent and the timers (before the loop's handles are walked). */
void rbl_serve_ha_stop(srv_state *S);
/* Frees what is left once the loop is closed. */
void rbl_serve_ha_free(srv_state *S);
/* The run's Lease, for /v1/runs, or NULL. */
cJSON *rbl_serve_ha_json(srv_state *S, const srv_run *r);
/* The lease agent's main (`rbl serve --lease-agent CONFIG`). */
int rbl_serve_lease_agent(const char *config);
/* approve.c: GET/POST /v1/runs/ID/approve (rest is "ID/approve"). */
void rbl_serve_handle_approve(srv_state *S, srv_conn *c, const srv_request *r, const char *rest);
/* The serve.approve_tokens index the request's bearer token names; -1 none, -2 the webhook token.
 */
int rbl_serve_approver(srv_state *S, const srv_request *r);
size_t rbl_serve_approve_body_cap(const char *path);

/* serve.c */
void rbl_serve_respond_json(srv_conn *c, int st, cJSON *j); /* takes j */
int rbl_cmd_serve(int argc, char **argv);
void rbl_serve_usage(void);
void rbl_serve_child_init(void);

#endif
