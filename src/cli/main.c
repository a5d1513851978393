/* rbl: the command line. Parses flags, prints help, dispatches to the commands. */
#include "audit.h"
#include "cli.h"
#include "families.h"
#include "rbl.h"
#include "serve.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>

static const char *const usage_main =
    "usage: rbl COMMAND [ARGS]\n"
    "\n"
    "rbl runs SRE runbooks written in Lua against real infrastructure, bound to one\n"
    "tenant, every action recorded in a tamper-evident audit chain.\n"
    "\n"
    "commands:\n"
    "  run FILE --tenant T     run a runbook (exit 0 resolved, 1 failed, 2 usage, 3 refused, 4 "
    "audit)\n"
    "  check FILE...           lint runbooks and configs: syntax, unknown names, structure\n"
    "  repl --tenant T         run primitives one line at a time\n"
    "  audit verify|show PATH  verify or show an audit chain\n"
    "  rollback PATH           undo the reversible changes an audit chain recorded\n"
    "  approve AUDIT           answer a run that waits for approval (--deny to refuse)\n"
    "  serve --config FILE     take Alertmanager webhooks and run the routed runbooks\n"
    "  version                 print the version (also --version, -V)\n"
    "  help COMMAND            help for one command; `rbl help errors` lists the error codes\n";

static const char *const usage_run =
    "usage: rbl run FILE --tenant T [--tenant T2 | --tenant 'glob-*']... [options]\n"
    "       rbl run FILE --help      the runbook's parameters and steps\n"
    "       rbl run --resume AUDIT [FILE] [--audit PATH] [--audit-key FILE] [--config FILE]\n"
    "                                continue the failed run at the end of the chain AUDIT\n"
    "\n"
    "Runs the runbook FILE bound to the given tenant(s). Every option also takes the form\n"
    "--opt=value.\n"
    "\n"
    "  --tenant T         tenant the run is authorised for; repeat, or give a glob\n"
    "                     matched against the tenants the config knows\n"
    "  --incident ID      incident id (default: a generated run id)\n"
    "  --param K=V        runbook parameter (over the defaults in runbook{}); repeatable;\n"
    "                     an unknown name, wrong type or value outside choices is exit 2\n"
    "  --only STEP        run only this step; repeatable\n"
    "  --from STEP        start at this step\n"
    "  --skip STEP        leave this step out; repeatable\n"
    "  --resume AUDIT     verify the chain, then continue its failed run from the first step\n"
    "                     not in place, with the run's tenants, params and runbook (same SHA-256)\n"
    "  --dry-run          reads run for real; writes are server-side dry runs or not sent;\n"
    "                     the report gets the plan (each write: target, before -> after)\n"
    "  --plan-out FILE    a dry run that also writes its plan to FILE (JSON)\n"
    "  --plan FILE        run for real only if FILE's plan still holds: same runbook,\n"
    "                     params and tenants, every target unchanged; else exit 1, nothing "
    "written\n"
    "  --audit PATH       audit chain (default ./audit/<incident>.jsonl, appended)\n"
    "  --audit-key FILE   HMAC-SHA256 key for the chain (must not be group/world readable)\n"
    "  --sign-key FILE    Ed25519 private key (PEM): sign this run's final head\n"
    "  --report PATH      write the execution report (JSON) there\n"
    "  --config FILE      config file (Lua; default $RBL_CONFIG)\n"
    "  --yes, -y          approve as yourself: approvals (approve(), a step's approve field)\n"
    "                     count you as one approver, recorded as such; no confirmation of\n"
    "                     several tenants on a terminal\n"
    "  --quiet, -q        no progress on stderr\n"
    "  --progress json    progress on stderr as JSON lines (run_start, step, log, call,\n"
    "                     message, run_end events), for a chat bot to mirror the run;\n"
    "                     --progress text: the default, lines for people\n"
    "\n"
    "exit status: 0 resolved, 1 failed (rolled back), 2 usage/load error,\n"
    "             3 refused (tenant scope, sandbox, resource limit), 4 audit write failed,\n"
    "             the chain was changed by someone else during the run, or the\n"
    "             --report file could not be written (written atomically)\n";

static const char *const usage_check =
    "usage: rbl check [--config FILE] FILE...\n"
    "       rbl check --list-globals\n"
    "\n"
    "Lints each runbook without side effects: syntax errors as file:line; unknown globals\n"
    "and unknown fields of the registry's tables (docker.restrat), with did-you-mean;\n"
    "then the structure (runbook{}, duplicate or unknown step fields, steps without run).\n"
    "Top-level code is evaluated (10 s at most) where every primitive and secret() is inert.\n"
    "A config file is recognised and checked as one (unknown keys, with did-you-mean);\n"
    "--config FILE checks that config and uses it for the runbooks.\n"
    "--list-globals prints every name a runbook can reach, with its family and doc page\n"
    "(NAME, FAMILY, DOC; tab-separated), from the families registry.\n"
    "exit status: 0 all fine, 2 at least one file has an error\n";

static const char *const usage_repl =
    "usage: rbl repl --tenant T [--incident ID] [--audit PATH] [--audit-key FILE] [--config FILE]\n"
    "                [--dir DIR] [--yes] [--dry-run] [--sign-key FILE] [--param K=V]...\n"
    "                [--quiet] [--progress json]\n"
    "\n"
    "Evaluates Lua one chunk at a time in the runbook sandbox, with the same primitives,\n"
    "tenant gate and audit chain as rbl run. A refused call costs one line (audited); the\n"
    "session goes on. Expressions and =expr print (lists of objects as rows; :json raw);\n"
    "unfinished chunks continue at a >> prompt; Tab completes globals, family members and\n"
    "fields of _ (the last result); help() and help(kube_patch) quote the docs.\n"
    "Commands: :tenant [NAME|-]  :json [on|off]  :save FILE  :help  :quit (or Ctrl-D).\n"
    "History: ~/.rbl_history (RBL_HISTORY), 0600, secrets masked.\n"
    "exit status: that of the last line (0 ok, 1 error, 2 syntax, 3 refused, 4 audit)\n"
    "Every write asks on the terminal first (type the tenant's name) unless the session\n"
    "started with --yes; without a terminal, writes are refused.\n"
    "  --dir DIR   the directory iac.* and require read from (as a runbook's own directory);\n"
    "              without it they are refused. / is refused: it would confine nothing.\n"
    "The other options mean what they mean for rbl run (--dry-run: writes are server-side\n"
    "dry runs or not sent; --sign-key: sign the session's final head; --param: the params\n"
    "table). A session writes no report: its record is the audit chain.\n";

static const char *const usage_rollback =
    "usage: rbl rollback PATH [--audit PATH] [--dry-run] [--force] [--tenant T] [--config FILE]\n"
    "                    [--report PATH] [--audit-key FILE] [--sign-key FILE] [--key FILE]\n"
    "                    [--pubkey FILE] [--quiet]\n"
    "\n"
    "Verifies the audit chain PATH as `rbl audit verify` does (--key: the HMAC key, default\n"
    "--audit-key; --pubkey: every run must be signed), then undoes, newest first, the\n"
    "reversible changes its verified records hold, each only within the tenants of its\n"
    "run's run_start. A chain that does not verify: exit 1, nothing sent. A MAC'd or signed\n"
    "chain needs --key / --pubkey. Refuses when a field a change set holds another value\n"
    "since, unless --force, and a before-state without a resourceVersion always. Lists,\n"
    "with a warning, the actions it cannot undo (a restart, a deleted pod).\n"
    "The rollback is recorded on the chain given by --audit (default: PATH itself).\n"
    "exit status: 0 all undone (or nothing to do), 1 broken chain or an undo failed,\n"
    "             2 usage, unreadable chain or missing key, 3 refused, 4 audit write failed\n";

static int is_help(const char *a) {
  return !strcmp(a, "-h") || !strcmp(a, "--help") || !strcmp(a, "help");
}

/* Does argv[from..argc) ask for help (-h or --help, before a bare "--")? */
static int asks_help(int argc, char **argv, int from) {
  for (int i = from; i < argc && strcmp(argv[i], "--"); i++)
    if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) return 1;
  return 0;
}

static void print_error(int code, const char *name, const char *prose, void *ud) {
  (void)code;
  (void)ud;
  printf("%-12s %s\n", name, prose);
}

static int help(const char *cmd) {
  if (!cmd)
    fputs(usage_main, stdout);
  else if (!strcmp(cmd, "run"))
    fputs(usage_run, stdout);
  else if (!strcmp(cmd, "check"))
    fputs(usage_check, stdout);
  else if (!strcmp(cmd, "repl"))
    fputs(usage_repl, stdout);
  else if (!strcmp(cmd, "rollback"))
    fputs(usage_rollback, stdout);
  else if (!strcmp(cmd, "approve")) {
    char *av[] = {"--help", NULL};
    return rbl_cmd_approve(1, av);
  } else if (!strcmp(cmd, "audit")) {
    char *av[] = {"--help", NULL};
    return rbl_audit_main(1, av);
  } else if (!strcmp(cmd, "serve"))
    rbl_serve_usage();
  else if (!strcmp(cmd, "errors")) {
    printf("The error codes a failing primitive raises ({code = NAME, message = ...}):\n");
    rbl_err_each(print_error, NULL);
  } else if (!strcmp(cmd, "version"))
    fputs("usage: rbl version   (also rbl --version, rbl -V)\n\nPrints rbl's version.\n", stdout);
  else {
    fprintf(stderr, "rbl: no help for unknown command '%s'\n", cmd);
    return 2;
  }
  return 0;
}

static int bad_usage(const char *cmd, const char *fmt, const char *arg) {
  fprintf(stderr, "rbl %s: ", cmd);
  fprintf(stderr, fmt, arg);
  fprintf(stderr, "\nTry 'rbl help %s'.\n", cmd);
  return 2;
}

/* Parses run/repl flags. Returns -1 on success, else the exit status. */
static int parse_run(const char *cmd, int argc, char **argv, rbl_run_opts *o, int want_file) {
  memset(o, 0, sizeof *o);
  o->argc = argc;
  o->argv = argv;
  for (int i = 0; i < argc; i++) {
    const char *a = argv[i];
    const char *v = (i + 1 < argc) ? argv[i + 1] : NULL;
#define VALUE()                                                                                    \
  do {                                                                                             \
    if (!v) return bad_usage(cmd, "option %s needs a value", a);                                   \
    i++;                                                                                           \
  } while (0)
    if (is_help(a) && strcmp(a, "help")) {
      o->help = 1;
    } else if (!strcmp(a, "--only") || !strcmp(a, "--skip")) {
      VALUE();
      int *n = a[2] == 'o' ? &o->nonly : &o->nskip;
      if (*n >= 64) return bad_usage(cmd, "too many %s (max 64)", a);
      (a[2] == 'o' ? o->only : o->skip)[(*n)++] = v;
    } else if (!strcmp(a, "--from")) {
      VALUE();
      if (o->from)
        return bad_usage(cmd, "--from given twice (the first step to run is %s)", o->from);
      o->from = v;
    } else if (!strcmp(a, "--resume") && want_file) {
      VALUE();
      o->resume = v;
    } else if (!strcmp(a, "--tenant")) {
      VALUE();
      if (o->ntenants >= 64) return bad_usage(cmd, "too many --tenant (max %s)", "64");
      o->tenants[o->ntenants++] = v;
    } else if (!strcmp(a, "--incident")) {
      VALUE();
      o->incident = v;
    } else if (!strcmp(a, "--param")) {
      VALUE();
      if (!strchr(v, '=') || v[0] == '=') return bad_usage(cmd, "--param wants K=V, got '%s'", v);
      if (o->nparams >= 128) return bad_usage(cmd, "too many --param (max %s)", "128");
      o->params[o->nparams++] = v;
    } else if (!strcmp(a, "--dry-run"))
      o->dry_run = 1;
    else if (!strcmp(a, "--yes") || !strcmp(a, "-y"))
      o->yes = 1;
    else if (!strcmp(a, "--quiet") || !strcmp(a, "-q"))
      o->quiet = 1;
    else if (!strcmp(a, "--progress")) {
      VALUE();
      if (strcmp(v, "json") && strcmp(v, "text"))
        return bad_usage(cmd, "--progress wants json or text, got '%s'", v);
      o->progress_json = !strcmp(v, "json");
    } else if (!strcmp(a, "--audit")) {
      VALUE();
      o->audit_path = v;
    } else if (!strcmp(a, "--audit-key")) {
      VALUE();
      o->audit_key = v;
    } else if (!strcmp(a, "--sign-key")) {
      VALUE();
      o->sign_key = v;
    } else if (!strcmp(a, "--report") && want_file) {
      VALUE();
      o->report_path = v;
    } else if (!strcmp(a, "--config")) {
      VALUE();
      o->config_path = v;
    } else if (!strcmp(a, "--report") && !want_file) {
      return bad_usage(cmd,
                       "%s belongs to rbl run: a repl session writes no report (its record "
                       "is the audit chain, --audit)",
                       a);
    } else if (!strcmp(a, "--dir") && !want_file) {
      VALUE();
      o->dir = v;
    } else if (want_file && !strcmp(a, "--plan-out")) {
      VALUE();
      o->plan_out = v;
    } else if (want_file && !strcmp(a, "--plan")) {
      VALUE();
      o->plan_in = v;
    } else if (a[0] == '-' && a[1] && strchr(a, '='))
      return bad_usage(
          cmd, "unknown option '%s' (a flag takes no value: --dry-run, not --dry-run=1)", a);
    else if (a[0] == '-' && a[1])
      return bad_usage(cmd, "unknown option '%s'", a);
    else if (want_file && !o->file)
      o->file = a;
    else
      return bad_usage(cmd, "unexpected argument '%s'", a);
#undef VALUE
  }
  if (o->help) {
    if (!want_file || !o->file) help(cmd);
    return o->file ? -1 : 0; /* rbl run FILE --help: the runbook's own help (rbl_cmd_run) */
  }
  if (!want_file && (o->nonly || o->nskip || o->from))
    return bad_usage(cmd, "%s selects steps: it belongs to rbl run",
                     o->from ? "--from" : "--only/--skip");
  if (o->resume) {
    if (o->ntenants || o->nparams)
      return bad_usage(cmd, "--resume takes the tenants and params from the chain; drop %s",
                       o->ntenants ? "--tenant" : "--param");
    if (o->incident)
      return bad_usage(cmd, "--resume continues the chain's incident; drop %s", "--incident");
    if (o->nonly || o->nskip || o->from)
      return bad_usage(cmd, "--resume continues from the failed step; drop %s",
                       o->from ? "--from" : "--only/--skip");
    return -1;
  }
  if (want_file && !o->file) return bad_usage(cmd, "missing the runbook %s", "FILE");
  if (o->plan_out && o->plan_in)
    return bad_usage(cmd, "--plan-out writes a plan (a dry run) and --plan %s: give one of them",
                     "runs one for real");
  if (o->plan_in && o->dry_run)
    return bad_usage(cmd, "--plan runs the plan for real; to plan again use --dry-run %s",
                     "--plan-out FILE");
  if (o->plan_out) o->dry_run = 1; /* writing a plan is a dry run */
  if (o->ntenants == 0)
    return bad_usage(cmd, "missing --tenant (the run must be bound to a %s)", "tenant");
  return -1;
}

/* A core image would hold the run's secrets, tokens and audit keys: none is ever written. The
 * soft and hard limits are 0 (children inherit them) and the process is not dumpable, which also
 * covers a core_pattern that pipes to a handler and keeps other users' ptrace out. */
static void no_core_dumps(void) {
  struct rlimit rl = {0, 0};
  setrlimit(RLIMIT_CORE, &rl);
  prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
}

/* Every option that takes a value, whatever the command. "--opt=value" is split into "--opt"
 * "value" before any command parses its arguments, so every option of every command accepts
 * both forms; a command adding an option with a value adds its name here. */
static const char *const value_opts[] = {
    "--tenant", "--incident", "--param",  "--audit",    "--audit-key", "--sign-key",
    "--report", "--config",   "--key",    "--pubkey",   "--head",      "--only",
    "--from",   "--skip",     "--resume", "--plan-out", "--plan",      "--as",
    "--reason", "--listen",   "--dir",    "--id",       NULL};

/* -> a new argv (malloc'd array; its strings point into argv or value_opts), or NULL after
 * printing why ("--quiet=1": a flag takes no value). Nothing after a bare "--" is touched. */
static char **split_opt_values(int argc, char **argv, int *outc) {
  char **out = malloc(sizeof *out * (size_t)(2 * argc + 1));
  int n = 0, rest = 0;
  if (!out) return NULL;
  for (int i = 0; i < argc; i++) {
    char *a = argv[i], *eq = strchr(a, '=');
    if (!strcmp(a, "--")) rest = 1;
    if (rest || strncmp(a, "--", 2) || !eq) {
      out[n++] = a;
      continue;
    }
    size_t len = (size_t)(eq - a);
    const char *name = NULL;
    for (int k = 0; value_opts[k] && !name; k++)
      if (strlen(value_opts[k]) == len && !strncmp(a, value_opts[k], len)) name = value_opts[k];
    if (!name) { /* a flag given a value, or an unknown option: the command names it */
      out[n++] = a;
      continue;
    }
    out[n++] = (char *)name;
    out[n++] = eq + 1;
  }
  out[n] = NULL;
  *outc = n;
  return out;
}

static int dispatch(int argc, char **argv);

int main(int argc, char **argv) {
  no_core_dumps();
  /* A child that closes its stdin early must not kill rbl: writes then fail with EPIPE. */
  signal(SIGPIPE, SIG_IGN);
  rbl_serve_child_init();
  int n = 0;
  char **args = split_opt_values(argc, argv, &n);
  if (!args) {
    fputs("rbl: out of memory\n", stderr);
    return 2;
  }
  int rc = dispatch(n, args);
  free(args);
  return rc;
}

static int dispatch(int argc, char **argv) {
  if (argc < 2) {
    fputs(usage_main, stderr);
    return 2;
  }
  const char *cmd = argv[1];
  if (!strcmp(cmd, "version") && asks_help(argc, argv, 2)) return help("version");
  if (!strcmp(cmd, "version") && argc > 2)
    return bad_usage("version", "unexpected argument '%s' (rbl version takes none)", argv[2]);
  if (!strcmp(cmd, "version") || !strcmp(cmd, "--version") || !strcmp(cmd, "-V")) {
    printf("rbl %s\n", RBL_VERSION);
    return 0;
  }
  if (!strcmp(cmd, "-h") || !strcmp(cmd, "--help")) return help(NULL);
  if (!strcmp(cmd, "help")) return help(argc > 2 ? argv[2] : NULL);
  if (!strcmp(cmd, "run") || !strcmp(cmd, "repl")) {
    rbl_run_opts o;
    int want_file = !strcmp(cmd, "run");
    int rc = parse_run(cmd, argc - 2, argv + 2, &o, want_file);
    if (rc >= 0) return rc;
    return want_file ? rbl_cmd_run(&o) : rbl_cmd_repl(&o);
  }
  if (!strcmp(cmd, "check")) {
    if (argc == 3 && !strcmp(argv[2], "--list-globals")) {
      rbl_families_print();
      return 0;
    }
    if (asks_help(argc, argv, 2)) return help("check");
    if (argc < 3) return bad_usage("check", "missing %s", "FILE");
    return rbl_cmd_check(argc - 2, argv + 2);
  }
  if (!strcmp(cmd, "audit")) {
    return rbl_audit_main(argc - 2, argv + 2); /* no subcommand: its usage, exit 2 */
  }
  if (!strcmp(cmd, "approve")) return rbl_cmd_approve(argc - 2, argv + 2);
  if (!strcmp(cmd, "rollback")) {
    if (asks_help(argc, argv, 2) || (argc >= 3 && !strcmp(argv[2], "help")))
      return help("rollback");
    if (argc < 3) return bad_usage("rollback", "missing the audit %s", "PATH");
    return rbl_cmd_rollback(argc - 2, argv + 2);
  }
  if (!strcmp(cmd, "serve")) {
    if (asks_help(argc, argv, 2)) return help("serve");
    return rbl_cmd_serve(argc - 2, argv + 2);
  }
  fprintf(stderr, "rbl: unknown command '%s'\n", cmd);
  fputs(usage_main, stderr);
  return 2;
}
