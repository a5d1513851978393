/* rbl rollback: undo the reversible changes an audit chain recorded, newest first, as an
 * audited run on the chain (the logic is lua/rbl/rollback_main.lua). */
#include "cli.h"
#include "session.h"
#include "audit.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int usage(const char *fmt, const char *arg) {
  fputs("rbl: rollback: ", stderr);
  fprintf(stderr, fmt, arg);
  fputs("\nusage: rbl rollback PATH [--audit PATH] [--dry-run] [--force] [--tenant T]... [--config "
        "FILE]"
        " [--report FILE] [--audit-key FILE] [--key FILE] [--pubkey FILE] [--sign-key FILE]"
        " [--quiet]\n",
        stderr);
  return 2;
}

/* The tenants of each verified run_start: runs[run] = [tenants]. A run's first run_start counts.
 */
static void run_tenants(cJSON *records, cJSON *runs) {
  cJSON *r;
  cJSON_ArrayForEach(r, records) {
    const char *kind = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(r, "kind"));
    const char *run = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(r, "run"));
    cJSON *ts = cJSON_GetObjectItemCaseSensitive(r, "tenants");
    if (!kind || strcmp(kind, "run_start") || !run || cJSON_GetObjectItemCaseSensitive(runs, run))
      continue;
    cJSON *list = cJSON_AddArrayToObject(runs, run);
    cJSON *t;
    if (cJSON_IsArray(ts)) cJSON_ArrayForEach(t, ts) {
        if (cJSON_IsString(t)) cJSON_AddItemToArray(list, cJSON_CreateString(t->valuestring));
      }
  }
}

/* Verifies one chain as `rbl audit verify` would (with the key and public key when given, and
 * requiring them when the chain carries MACs or signatures). Returns 0 with *out filled, or the
 * exit status after saying why (1: broken, nothing is undone; 2: unreadable or a key missing). */
static int verified(const char *path, const char *key, const char *pub, rbl_audit_verified *out) {
  char msg[1400];
  int rc = rbl_audit_verify_file(path, key, pub, out, msg, sizeof msg);
  if (rc == 1) {
    fprintf(stderr,
            "rbl: rollback: %s\nrbl: rollback: the chain does not verify: nothing was undone "
            "(see rbl audit verify %s)\n",
            msg, path);
    return 1;
  }
  if (rc) {
    fprintf(stderr, "rbl: rollback: %s\n", msg);
    return 2;
  }
  const char *need = out->macs && !out->keyed      ? "its records carry a MAC: give --key FILE (or "
                                                     "--audit-key FILE), the key the runs used"
                     : out->sigs && !out->pubkeyed ? "its runs are signed: give --pubkey FILE"
                                                   : NULL;
  if (need) {
    fprintf(stderr,
            "rbl: rollback: %s: %s, so that the records can be checked before any is acted on\n",
            path, need);
    cJSON_Delete(out->records);
    cJSON_Delete(out->notes);
    return 2;
  }
  return 0;
}

/* The incident, the tenants of the verified runs (unless --tenant was given), and the argument
 * of rollback_main: {force, audit, chain, runs, results} from the verified records only. */
static int scan_chain(const char *path, rbl_run_opts *o, char **incident, int want_tenants,
                      const char *key, const char *pub, int force, char **arg) {
  rbl_audit_verified v, va;
  int rc = verified(path, key, pub, &v);
  if (rc) return rc;
  memset(&va, 0, sizeof va);
  int other = o->audit_path && strcmp(o->audit_path, path) != 0 && access(o->audit_path, F_OK) == 0;
  if (other && (rc = verified(o->audit_path, key, pub, &va)) != 0) {
    cJSON_Delete(v.records);
    cJSON_Delete(v.notes);
    return rc;
  }
  if (!v.macs && !v.sigs)
    fprintf(stderr,
            "rbl: rollback: note: %s carries no MAC and no signature: it verifies as consistent, "
            "but anyone able to write the file could have written consistent records\n",
            path);
  cJSON *first = cJSON_GetArrayItem(v.records, 0);
  const char *inc = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(first, "incident"));
  cJSON *a = cJSON_CreateObject();
  cJSON *runs = cJSON_AddObjectToObject(a, "runs");
  cJSON *results = cJSON_AddArrayToObject(a, "results");
  run_tenants(v.records, runs);
  cJSON_AddBoolToObject(a, "force", force);
  cJSON_AddStringToObject(a, "audit", o->audit_path ? o->audit_path : path);
  cJSON_AddStringToObject(a, "chain", path);
  cJSON *lists[2] = {v.records, va.records};
  for (int k = 0; k < 2; k++) {
    cJSON *r;
    cJSON_ArrayForEach(r, lists[k]) {
      const char *kind = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(r, "kind"));
      if (!kind || strcmp(kind, "result")) continue;
      if (k == 1) { /* from the other chain only the record of what was undone counts */
        const char *prim = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(r, "prim"));
        if (!prim || (strcmp(prim, "kube_undo") && strcmp(prim, "docker_restore"))) continue;
        cJSON_DeleteItemFromObjectCaseSensitive(r, "before");
      }
      cJSON_AddItemToArray(results, cJSON_Duplicate(r, 1));
    }
  }
  if (inc) *incident = strdup(inc);
  if (want_tenants) {
    cJSON *run;
    cJSON_ArrayForEach(run, runs) {
      cJSON *t;
      cJSON_ArrayForEach(t, run) {
        int dup = 0;
        for (int i = 0; i < o->ntenants; i++)
          dup |= !strcmp(o->tenants[i], t->valuestring);
        if (!dup && o->ntenants < 64) o->tenants[o->ntenants++] = strdup(t->valuestring);
      }
    }
  }
  *arg = cJSON_PrintUnformatted(a);
  cJSON_Delete(a);
  cJSON_Delete(v.records);
  cJSON_Delete(v.notes);
  cJSON_Delete(va.records);
  cJSON_Delete(va.notes);
  if (!*incident) {
    fprintf(stderr, "rbl: rollback: %s holds no audit records\n", path);
    return 2;
  }
  return *arg ? 0 : 2;
}

int rbl_cmd_rollback(int argc, char **argv) {
  rbl_run_opts o;
  memset(&o, 0, sizeof o);
  const char *chain = NULL, *key = NULL, *pub = NULL;
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
             !strcmp(a, "--report") || !strcmp(a, "--audit-key") || !strcmp(a, "--key") ||
             !strcmp(a, "--pubkey") || !strcmp(a, "--sign-key")) {
      if (!v) return usage("%s needs a value", a);
      if (!strcmp(a, "--audit"))
        o.audit_path = v;
      else if (!strcmp(a, "--config"))
        o.config_path = v;
      else if (!strcmp(a, "--report"))
        o.report_path = v;
      else if (!strcmp(a, "--audit-key"))
        o.audit_key = v;
      else if (!strcmp(a, "--sign-key"))
        o.sign_key = v;
      else if (!strcmp(a, "--key"))
        key = v;
      else if (!strcmp(a, "--pubkey"))
        pub = v;
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
  char *incident = NULL, *arg = NULL;
  int given = o.ntenants;
  int rc = scan_chain(chain, &o, &incident, given == 0, key ? key : o.audit_key, pub, force, &arg);
  if (rc) {
    for (int i = given; i < o.ntenants; i++)
      free((char *)o.tenants[i]);
    free(incident);
    cJSON_free(arg); /* cJSON_PrintUnformatted's */
    return rc;
  }
  if (o.ntenants == 0) {
    free(incident);
    cJSON_free(arg); /* cJSON_PrintUnformatted's */
    return usage("%s names no tenant in a verified run_start; give --tenant", chain);
  }
  o.incident = incident;
  o.file = chain;
  if (!o.audit_path) o.audit_path = chain;
  o.argc = argc;
  o.argv = argv;
  rc = rbl__run_embedded(&o, "rbl.rollback_main", arg);
  for (int i = given; i < o.ntenants; i++)
    free((char *)o.tenants[i]);
  free(incident);
  cJSON_free(arg); /* cJSON_PrintUnformatted's */
  return rc;
}
