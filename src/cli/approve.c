/* rbl approve AUDIT [--as NAME] [--deny] [--reason TEXT] [--id N]: answers a run that waits for
 * approval, through the unix socket beside its audit chain (protocol: docs/approvals.md). Shows
 * what is asked first, and sends the plan hash it showed, so the grant is bound to it. */
#include "approval_client.h"
#include "cli.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int usage(const char *fmt, const char *arg) {
  fputs("rbl: approve: ", stderr);
  fprintf(stderr, fmt, arg);
  fputs("\nusage: rbl approve AUDIT [--as NAME] [--deny] [--reason TEXT] [--id N]\n", stderr);
  return 2;
}

static const char *str(const cJSON *o, const char *k) {
  const char *s = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(o, k));
  return s ? s : "-";
}

static void show(const cJSON *r) {
  const cJSON *id = cJSON_GetObjectItemCaseSensitive(r, "id");
  const cJSON *n = cJSON_GetObjectItemCaseSensitive(r, "approvers");
  printf("request %d: %s\n", cJSON_IsNumber(id) ? (int)id->valuedouble : 0, str(r, "message"));
  printf("  tenant %s  step %s\n", str(r, "tenant"), str(r, "step"));
  if (cJSON_GetObjectItemCaseSensitive(r, "change"))
    printf("  planned change: %s\n", str(r, "change"));
  if (cJSON_GetObjectItemCaseSensitive(r, "plan_hash")) printf("  plan %s\n", str(r, "plan_hash"));
  const cJSON *by = cJSON_GetObjectItemCaseSensitive(r, "approved_by");
  printf("  approvers needed %d, so far %d", cJSON_IsNumber(n) ? (int)n->valuedouble : 1,
         cJSON_GetArraySize(by));
  const cJSON *b;
  int first = 1;
  cJSON_ArrayForEach(b, by) {
    printf("%s%s", first ? ": " : ", ", cJSON_GetStringValue(b) ? cJSON_GetStringValue(b) : "?");
    first = 0;
  }
  printf("\n");
}

int rbl_cmd_approve(int argc, char **argv) {
  const char *audit = NULL, *as = NULL, *reason = NULL;
  int deny = 0, id = 0;
  for (int i = 0; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    const char *eq = strchr(a, '=');
    char opt[32] = "";
    if (a[0] == '-' && a[1] == '-' && eq && (size_t)(eq - a) < sizeof opt) {
      snprintf(opt, sizeof opt, "%.*s", (int)(eq - a), a); /* --opt=value */
      v = eq + 1;
    }
    const char *name = opt[0] ? opt : a;
    if (!strcmp(name, "-h") || !strcmp(name, "--help")) {
      printf("usage: rbl approve AUDIT [--as NAME] [--deny] [--reason TEXT] [--id N]\n\n"
             "Answers a run that waits for approval (approve() or a step's approve field),\n"
             "through the socket beside its audit chain AUDIT. Shows the request (tenant, step,\n"
             "planned change, plan hash), then approves it, or denies it with --deny. The run\n"
             "records who (--as NAME, else your user; your uid always), and the plan hash shown.\n"
             "--id picks one request when several wait.\n"
             "exit status: 0 recorded, 1 no run waiting or the run refused, 2 usage\n");
      return 0;
    } else if (!strcmp(name, "--deny")) {
      deny = 1;
    } else if (!strcmp(name, "--as") || !strcmp(name, "--reason") || !strcmp(name, "--id")) {
      if (!v) return usage("%s needs a value", name);
      if (!opt[0]) i++;
      if (!strcmp(name, "--as"))
        as = v;
      else if (!strcmp(name, "--reason"))
        reason = v;
      else if ((id = atoi(v)) <= 0)
        return usage("--id wants a request number, got '%s'", v);
    } else if (a[0] == '-') {
      return usage("unknown option %s", a);
    } else if (!audit) {
      audit = a;
    } else {
      return usage("unexpected argument %s", a);
    }
  }
  if (!audit) return usage("missing the audit chain (%s)", "AUDIT");
  rbl_appr_client cl;
  char err[512];
  if (rbl_approval_connect(&cl, audit, err, sizeof err) != 0) {
    fprintf(stderr, "rbl: approve: %s\n", err);
    return 1;
  }
  cJSON *st = rbl_approval_status(&cl, 10000, err, sizeof err);
  if (!st) {
    fprintf(stderr, "rbl: approve: the run at %s did not answer: %s\n", cl.sock, err);
    rbl_approval_disconnect(&cl);
    return 1;
  }
  printf("run %s  incident %s\n", str(st, "run"), str(st, "incident"));
  const char *why = NULL;
  int several = 0;
  const cJSON *r, *pick = rbl_approval_pick(st, id, &why, &several);
  if (!pick) {
    cJSON_ArrayForEach(r, cJSON_GetObjectItemCaseSensitive(st, "pending")) show(r);
    fprintf(stderr, "rbl: approve: %s\n",
            several ? "several requests wait: pick one with --id N"
            : !strcmp(why, "no pending request has that id") ? "no pending request has that --id"
                                                             : why);
    cJSON_Delete(st);
    rbl_approval_disconnect(&cl);
    return several ? 2 : 1;
  }
  show(pick);
  cJSON *m = rbl_approval_answer_msg(pick, deny, as, reason, NULL, NULL);
  cJSON_Delete(st);
  cJSON *ans = rbl_approval_exchange(&cl, m, 10000, err, sizeof err);
  rbl_approval_disconnect(&cl);
  if (!ans) {
    fprintf(stderr, "rbl: approve: the run did not answer: %s\n", err);
    return 1;
  }
  int ok = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(ans, "ok"));
  if (ok)
    printf("%s by %s; the request is %s\n", str(ans, "decision"), str(ans, "by"),
           str(ans, "outcome"));
  else
    fprintf(stderr, "rbl: approve: %s\n", str(ans, "error"));
  cJSON_Delete(ans);
  return ok ? 0 : 1;
}
