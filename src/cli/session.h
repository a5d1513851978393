/* What the commands that run Lua share (run, check, repl, rollback): the run's context and the
 * setup steps, each in the file that owns it (rbl__ prefix). */
#ifndef RBL_SESSION_H
#define RBL_SESSION_H

#include "cli.h"
#include "engine_int.h"

#include <cjson/cJSON.h>
#include <stddef.h>

#define RUNBOOK_MAX (4u << 20)

/* rbl run --resume: what resume.c read from the verified chain. Owns its strings and records. */
typedef struct rbl_resume {
  char *run, *incident;
  cJSON *records; /* the resumed run's step and intent records */
  int file_given;
} rbl_resume;

typedef struct run_ctx {
  rbl_run_opts *o;
  rbl_engine *e;
  char run_id[40];
  char incident[160];
  char started[32];
  char sha[72];
  char *src;
  size_t srclen;
  char default_id[128];
  char audit_path[4096];
  const char *cmd;      /* the subcommand the run_start record names; NULL: "run" */
  char runbook_id[128]; /* the id run_start recorded: runbook{}'s, else default_id */
  int chain_changed;    /* someone else changed the chain while this run held it (exit 4) */
  rbl_resume *resume;   /* rbl run --resume, else NULL */
  char *plan_text;      /* --plan FILE's contents, owned; NULL without --plan */
  size_t plan_len;
  int plan_failed; /* --plan-out asked for a plan and none was written */
  /* The question before a run for several tenants (run.c): 0 not asked, 1 yes, -1 no. The
   * tenants it listed (owned); recorded after run_start (approval_request and _grant/_denial). */
  int confirm;
  cJSON *confirm_tenants;
} run_ctx;

/* session.c: identity, engine, audit chain, run_start, loading, driving a run to its end. */
int rbl__fail(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
char *rbl__read_file(const char *path, size_t cap, size_t *len, char *err, size_t errlen);
void rbl__sha256_hex(const char *data, size_t len, char out[72]);
int rbl__sha256_file(const char *path, char out[72]);
void rbl__gen_run_id(char out[40]);
void rbl__default_id_of(const char *file, char out[128]);
char *rbl__dir_of(const char *file);
int rbl__init_identity(run_ctx *c);
rbl_engine *rbl__setup_engine(rbl_run_opts *o);
int rbl__prepare_run(run_ctx *c);
void rbl__push_info(run_ctx *c);
int rbl__open_audit(run_ctx *c);
int rbl__approval_sock_path(const char *audit_path, char out[128]);
cJSON *rbl__run_start_record(run_ctx *c);
int rbl__load_runbook(run_ctx *c);
int rbl__exit_code_for(rbl_engine *e, const char *outcome);
/* Drives the prepared run to its end and returns its exit status; the process must exit next
 * (the engine's memory is left to the OS: rbl__engine_free_at_exit). */
int rbl__drive_run(run_ctx *c);
/* run.c: the records of the tenants question, appended right after run_start. */
void rbl__confirm_records(run_ctx *c);
/* run.c: a host module's main(book, arg) run as a run (rbl rollback). */
int rbl__run_embedded(rbl_run_opts *o, const char *host_module, const char *arg);

/* resume.c: rbl run --resume AUDIT (verify the chain, then take the failed run's setup). */
int rbl__resume_prepare(rbl_run_opts *o, rbl_resume *r);
void rbl__resume_push(lua_State *L, const rbl_resume *r);
void rbl__resume_free(rbl_run_opts *o, rbl_resume *r);

/* preflight.c: the runbook's declarations checked against the command line before a run. */
int rbl__preflight(run_ctx *c);

/* config.c: the config file and the limits it sets. */
int rbl__load_config(rbl_engine *e, const char *path);
/* Reads config.limits into e->limits: 0, or 2 after saying which limit is wrong and why. */
int rbl__apply_limits(rbl_engine *e);

/* tenants.c: --tenant names and globs against the tenants the config knows. */
int rbl__resolve_tenants(rbl_engine *e, rbl_run_opts *o);

/* session.c: at a run's end, before run_end: was the chain changed by anyone else while the run
 * held it? Says so on stderr, adds "chain_changed" to end (the run_end record). Returns 1 if so.
 */
int rbl__chain_changed(rbl_engine *e, cJSON *end);

/* report.c: the report and the run_end record. */
int rbl__write_report(run_ctx *c, const char *killed);

void rbl__open_modules(lua_State *L);

#endif
