/* The tenant gate: a small reference monitor every outgoing effect passes through. http.c asks
 * it before any request leaves and hands it every answer; proc.c asks it before any spawn. It
 * decides from what it checks itself (the URL it parses, the config it reads, facts it learned
 * from the daemon's and the API's own answers), never from what host Lua says. See docs/gate.md.
 *
 * The decision functions are free of Lua (tests/unit/test_gate.c drives them directly); the
 * engine's gate is created and configured from the registry's rbl.config on first use
 * (rbl_gate_of). Every decision returns 0 (allowed) or -1 (refused, with why filled). */
#ifndef RBL_GATE_H
#define RBL_GATE_H

#include <lua.h>
#include <stddef.h>

typedef struct rbl_gate rbl_gate;

/* What is spawned: a runbook's exec (the exec allow list) or the kubeconfig's credential
 * plugin (the one program bound with rbl_gate_bind(g, "kube-plugin", path)). */
enum { RBL_GATE_EXEC = 0, RBL_GATE_KUBE_PLUGIN = 1 };

typedef struct rbl_gate_req {
  const char *method;      /* "GET", "POST", ... */
  const char *url;         /* url_len bytes: an embedded NUL is seen and refused */
  size_t url_len;          /* */
  const char *unix_socket; /* or NULL */
  const char *body;        /* or NULL */
  size_t body_len;
  const char *const *headers; /* the header lines as sent ("Name: value"), nheaders of them */
  size_t nheaders;
  const char *tenant; /* the calling primitive's tenant (from the C call object), or NULL */
} rbl_gate_req;

/* What the gate will learn from (and check in) the answer to an allowed request. Filled by
 * rbl_gate_http, handed back with the answer to rbl_gate_answer. Plain data, no pointers. */
typedef struct rbl_gate_ticket {
  int learn;       /* internal: which kind of answer this is */
  char tenant[64]; /* the call's tenant */
  char ref[130];   /* docker: the container reference of a resolution read */
  char group[254]; /* kube discovery: the group and version asked about */
  char version[64];
} rbl_gate_ticket;

rbl_gate *rbl_gate_new(void);
void rbl_gate_free(rbl_gate *g);

/* Configuration, before the first decision. rbl_gate_set keys: "labels.docker", "labels.kube",
 * "docker.host" (the raw endpoint: unix:///path, tcp://host:port, https://host:port), "prom.url",
 * "path" (the process PATH, searched after the fixed one for bare exec names),
 * "kube.allow_tenant_label_change" ("1"). rbl_gate_add lists: "exec.allow", "exec.env",
 * "exec.program.env", "exec.program.argv" (see rbl_gate_spawn_exec),
 * "kube.allow_subresources", "kube.allow_cluster_writes". rbl_gate_add_tenant: a tenant, and when
 * has_ns its authoritative namespace list. All copy their strings. Return 0 or -1 (bad key). */
int rbl_gate_set(rbl_gate *g, const char *key, const char *value);
int rbl_gate_add(rbl_gate *g, const char *list, const char *value);
int rbl_gate_add_tenant(rbl_gate *g, const char *tenant, int has_ns, const char *const *ns,
                        size_t nns);

/* Binds an endpoint class once: "kube" (the API server base URL) or "kube-plugin" (the absolute
 * path of the kubeconfig's credential plugin). Sealed: binding the same value again is a no-op,
 * a different value is refused. */
int rbl_gate_bind(rbl_gate *g, const char *cls, const char *value, char *why, size_t n);

/* May this request leave? Fills *t with what to check in its answer. */
int rbl_gate_http(rbl_gate *g, const rbl_gate_req *r, rbl_gate_ticket *t, char *why, size_t n);
/* The answer to a request rbl_gate_http allowed: learns from it, and refuses to hand host Lua
 * an answer that discloses another tenant's container (docker resolution reads). */
int rbl_gate_answer(rbl_gate *g, const rbl_gate_ticket *t, long status, const char *body,
                    size_t len, char *why, size_t n);
/* May this program be spawned (cls: RBL_GATE_EXEC or RBL_GATE_KUBE_PLUGIN)? */
int rbl_gate_spawn(rbl_gate *g, int cls, const char *path, char *why, size_t n);

/* May the runbook's exec start this program with this argv (argv[0] as given, NULL-terminated)
 * and set these variables (env: the runbook's "NAME=VALUE" entries, NULL-terminated, or NULL)?
 * The program check of rbl_gate_spawn, then: every name is in the base list (locale, TZ, TERM,
 * NO_COLOR), in "exec.env" or in the program's "exec.program.env" ("PROGRAM\nNAME"); and when
 * "exec.program.argv" holds rules for the program ("PROGRAM\nGLOB\nGLOB...", one glob per
 * argument after the program, fnmatch(3); a last "..." matches the rest), argv matches one. */
int rbl_gate_spawn_exec(rbl_gate *g, const char *path, char *const *argv, char *const *env,
                        char *why, size_t n);

/* The engine's gate, created and configured from the registry's rbl.config on first use. */
rbl_gate *rbl_gate_of(lua_State *L);

#endif
