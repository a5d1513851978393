/* Command-line pieces shared by main.c and the commands it dispatches to. */
#ifndef RBL_CLI_H
#define RBL_CLI_H

#include <stddef.h>

typedef struct rbl_run_opts {
  const char *file;
  const char *tenants[64];
  int ntenants;
  const char *incident;
  const char *params[128]; /* "K=V" */
  int nparams;
  int dry_run, yes, quiet, check;
  int progress_json; /* --progress json */
  const char *audit_path, *audit_key, *sign_key, *report_path, *config_path;
  const char *dir; /* rbl repl --dir: the confinement root of iac.* and require, or NULL */
  const char *plan_out,
      *plan_in; /* --plan-out FILE (a dry run that writes its plan), --plan FILE */
  int argc;
  char **argv;
  /* partial and resumed runs (docs/runbook-language.md, "Partial and resumed runs") */
  const char *only[64], *skip[64], *from;
  int nonly, nskip;
  const char *resume; /* --resume AUDIT: tenants, params and FILE come from its chain */
  int help;           /* rbl run FILE --help: the runbook's parameters */
} rbl_run_opts;

int rbl_cmd_run(rbl_run_opts *o);
int rbl_cmd_check(int argc, char **argv);
int rbl_cmd_repl(rbl_run_opts *o);
int rbl_cmd_rollback(int argc, char **argv);
int rbl_cmd_approve(int argc, char **argv);

#endif
