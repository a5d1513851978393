/* Running a program on the loop: the one process runner behind exec and credential plugins. */
#ifndef RBL_PROC_H
#define RBL_PROC_H

#include <lua.h>
#include <stddef.h>

typedef struct rbl_proc_spec {
  const char *what;       /* names the caller in errors: "exec", "credential plugin" */
  const char *path;       /* absolute program path; no shell */
  char *const *argv;      /* NULL-terminated; valid only during the call (copied by uv_spawn) */
  char *const *env;       /* NULL-terminated KEY=VALUE: the child's whole environment */
  char *const *user_env;  /* exec: the entries the runbook asked for (the gate checks their
                             names against the allow list); NULL: none */
  const char *cwd;        /* or NULL */
  const char *stdin_data; /* or NULL: stdin at EOF */
  size_t stdin_len;
  double timeout;    /* seconds; 0 = none. Past it the process group is killed */
  size_t output_cap; /* bytes kept per stream; beyond: dropped, truncated = true */
  int gate_class;    /* what the gate checks: RBL_GATE_EXEC (0: the exec allow list) or
                        RBL_GATE_KUBE_PLUGIN (the kubeconfig's bound credential plugin) */
  const char *prim;  /* names a refusal in the audit; NULL: what */
} rbl_proc_spec;

/* Asks the gate first (a refusal kills the run, nothing is spawned). Then starts the process in
 * its own process group and parks the calling task; resumes it with
 * {exit_code, stdout, stderr, duration_ms, truncated, signal}, or raises "timeout". Cancelling
 * the task kills the group. Use as `return rbl_proc_spawn(L, &spec);`. */
int rbl_proc_spawn(lua_State *L, const rbl_proc_spec *spec);

int luaopen_rbl_proc(lua_State *L);

#endif
