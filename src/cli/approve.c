/* rbl approve AUDIT [--as NAME] [--deny] [--reason TEXT] [--id N]: answers a run that waits for
 * approval, through the unix socket beside its audit chain (protocol: docs/approvals.md). Shows
 * what is asked first, and sends the plan hash it showed, so the grant is bound to it. */
#include "cli.h"
#include "session.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

static int usage(const char *fmt, const char *arg) {
  fputs("rbl: approve: ", stderr);
  fprintf(stderr, fmt, arg);
  fputs("\nusage: rbl approve AUDIT [--as NAME] [--deny] [--reason TEXT] [--id N]\n", stderr);
  return 2;
}

/* One JSON line out, one back (10 s at most). */
static cJSON *exchange(int fd, cJSON *msg) {
  char *txt = cJSON_PrintUnformatted(msg);
  cJSON_Delete(msg);
  if (!txt) return NULL;
  size_t n = strlen(txt);
  int ok = write(fd, txt, n) == (ssize_t)n && write(fd, "\n", 1) == 1;
  cJSON_free(txt);
  if (!ok) return NULL;
  char buf[65536];
  size_t len = 0;
  while (len < sizeof buf - 1) {
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (poll(&p, 1, 10000) <= 0) return NULL;
    ssize_t got = read(fd, buf + len, sizeof buf - 1 - len);
    if (got <= 0) return NULL;
    len += (size_t)got;
    if (memchr(buf, '\n', len)) break;
  }
  buf[len] = 0;
  return cJSON_Parse(buf);
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
  char sock[128];
  if (rbl__approval_sock_path(audit, sock) != 0) {
    fprintf(stderr, "rbl: approve: cannot read %s: %s\n", audit, strerror(errno));
    return 1;
  }
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  if (strlen(sock) >= sizeof sa.sun_path) {
    fprintf(stderr, "rbl: approve: socket path %s is too long\n", sock);
    close(fd);
    return 1;
  }
  memcpy(sa.sun_path, sock, strlen(sock) + 1);
  if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
    fprintf(stderr,
            "rbl: approve: no run is waiting for approval on %s (nothing listens on %s: %s)\n",
            audit, sock, strerror(errno));
    if (fd >= 0) close(fd);
    return 1;
  }
  /* The process listening must be the run that writes the chain: the chain file's owner (or
   * root). A socket someone else bound first (the /tmp fallback path is predictable) is not
   * shown to the person, and nothing is sent to it. */
  struct ucred cred = {0};
  socklen_t clen = sizeof cred;
  struct stat ast = {0};
  if (stat(audit, &ast) != 0 || getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) != 0 ||
      (cred.uid != ast.st_uid && cred.uid != 0)) {
    fprintf(stderr,
            "rbl: approve: %s is held by uid %u, not by the owner of %s (uid %u): not the run's "
            "approval socket, nothing sent; remove it if it is stale, or ask whoever owns it\n",
            sock, (unsigned)cred.uid, audit, (unsigned)ast.st_uid);
    close(fd);
    return 1;
  }
  cJSON *q = cJSON_CreateObject();
  cJSON_AddStringToObject(q, "op", "status");
  cJSON *st = exchange(fd, q);
  const cJSON *pending = cJSON_GetObjectItemCaseSensitive(st, "pending");
  if (!st || !cJSON_IsArray(pending)) {
    fprintf(stderr, "rbl: approve: the run at %s did not answer\n", sock);
    cJSON_Delete(st);
    close(fd);
    return 1;
  }
  printf("run %s  incident %s\n", str(st, "run"), str(st, "incident"));
  const cJSON *r, *pick = NULL;
  int n = 0;
  cJSON_ArrayForEach(r, pending) {
    n++;
    const cJSON *rid = cJSON_GetObjectItemCaseSensitive(r, "id");
    if (!id || (cJSON_IsNumber(rid) && (int)rid->valuedouble == id)) pick = r;
  }
  if (n == 0 || !pick || (!id && n > 1)) {
    cJSON_ArrayForEach(r, pending) show(r);
    fprintf(stderr, "rbl: approve: %s\n",
            n == 0  ? "no approval is pending in this run"
            : !pick ? "no pending request has that --id"
                    : "several requests wait: pick one with --id N");
    cJSON_Delete(st);
    close(fd);
    return n == 0 || !pick ? 1 : 2;
  }
  show(pick);
  cJSON *m = cJSON_CreateObject();
  cJSON_AddStringToObject(m, "op", deny ? "deny" : "approve");
  cJSON_AddItemToObject(m, "id", cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(pick, "id"), 1));
  if (as) cJSON_AddStringToObject(m, "as", as);
  if (reason) cJSON_AddStringToObject(m, "reason", reason);
  const cJSON *ph = cJSON_GetObjectItemCaseSensitive(pick, "plan_hash");
  if (cJSON_IsString(ph)) cJSON_AddStringToObject(m, "plan_hash", ph->valuestring);
  cJSON_Delete(st);
  cJSON *ans = exchange(fd, m);
  close(fd);
  if (!ans) {
    fprintf(stderr, "rbl: approve: the run did not answer\n");
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
