/* rbl rollback: undo the reversible changes an audit chain recorded, newest first, as an
 * audited run on the chain (the logic is lua/rbl/rollback_main.lua). */
#include "cli.h"
#include "session.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int usage(const char *fmt, const char *arg) {
  fputs("rbl: rollback: ", stderr);
  fprintf(stderr, fmt, arg);
  fputs("\nusage: rbl rollback PATH [--audit PATH] [--dry-run] [--force] [--tenant T]... [--config "
        "FILE]"
        " [--report FILE] [--audit-key FILE] [--quiet]\n",
        stderr);
  return 2;
}

/* Takes the incident from the chain and, unless --tenant was given, the tenants of every run
 * on it (the runs whose changes may be undone). Tenant strings are strdup'd into o. */
static int scan_chain(const char *path, rbl_run_opts *o, char **incident, int want_tenants) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    fprintf(stderr, "rbl: rollback: cannot read %s: %s\n", path, strerror(errno));
    return 2;
  }
  char *line = NULL;
  size_t cap = 0;
  ssize_t n;
  while ((n = getline(&line, &cap, f)) > 0) {
    cJSON *r = cJSON_ParseWithLength(line, (size_t)n);
    if (!r) continue; /* a torn last line: verify reports it; the records before it still count */
    const char *inc = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(r, "incident"));
    if (inc && !*incident) *incident = strdup(inc);
    const char *kind = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(r, "kind"));
    cJSON *ts = cJSON_GetObjectItemCaseSensitive(r, "tenants");
    if (want_tenants && kind && !strcmp(kind, "run_start") && cJSON_IsArray(ts)) {
      cJSON *t;
      cJSON_ArrayForEach(t, ts) {
        const char *name = cJSON_GetStringValue(t);
        int dup = 0;
        for (int i = 0; name && i < o->ntenants; i++)
          dup |= !strcmp(o->tenants[i], name);
        if (name && !dup && o->ntenants < 64) o->tenants[o->ntenants++] = strdup(name);
      }
    }
    cJSON_Delete(r);
  }
  free(line);
  fclose(f);
  if (!*incident) {
    fprintf(stderr, "rbl: rollback: %s holds no audit records\n", path);
    return 2;
  }
  return 0;
}

int rbl_cmd_rollback(int argc, char **argv) {
  rbl_run_opts o;
  memset(&o, 0, sizeof o);
  const char *chain = NULL;
  int force = 0;
  for (int i = 0; i < argc; i++) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "--dry-run"))
      o.dry_run = 1;
    else if (!strcmp(a, "--force"))
      force = 1;
    else if (!strcmp(a, "--quiet") || !strcmp(a, "-q"))
      o.quiet = 1;
    else if (!strcmp(a, "--audit") || !strcmp(a, "--tenant") || !strcmp(a, "--config") ||
             !strcmp(a, "--report") || !strcmp(a, "--audit-key")) {
      if (!v) return usage("%s needs a value", a);
      if (!strcmp(a, "--audit"))
        o.audit_path = v;
      else if (!strcmp(a, "--config"))
        o.config_path = v;
      else if (!strcmp(a, "--report"))
        o.report_path = v;
      else if (!strcmp(a, "--audit-key"))
        o.audit_key = v;
      else if (o.ntenants < 64)
        o.tenants[o.ntenants++] = v;
      i++;
    } else if (a[0] == '-')
      return usage("unknown option %s", a);
    else if (!chain)
      chain = a;
    else
      return usage("unexpected argument %s", a);
  }
  if (!chain) return usage("missing the audit %s", "PATH");
  char *incident = NULL;
  int given = o.ntenants;
  int rc = scan_chain(chain, &o, &incident, given == 0);
  if (rc) return rc;
  if (o.ntenants == 0) {
    free(incident);
    return usage("%s names no tenant; give --tenant", chain);
  }
  o.incident = incident;
  o.file = chain;
  if (!o.audit_path) o.audit_path = chain;
  o.argc = argc;
  o.argv = argv;
  char arg[8300];
  /* flags, the chain rollbacks are recorded on, the chain to undo: one per line */
  snprintf(arg, sizeof arg, "%s\n%s\n%s", force ? "force" : "", o.audit_path, chain);
  rc = rbl__run_embedded(&o, "rbl.rollback_main", arg);
  for (int i = given; i < o.ntenants; i++)
    free((char *)o.tenants[i]);
  free(incident);
  return rc;
}
