/* The client side of the approval socket (docs/approvals.md): rbl approve and rbl serve's
 * POST /v1/runs/ID/approve both answer a waiting run through these functions. */
#include "approval_client.h"
#include "session.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define REPLY_MAX (1u << 20)

int rbl_approval_connect(rbl_appr_client *c, const char *audit, char *err, size_t errlen) {
  memset(c, 0, sizeof *c);
  c->fd = -1;
  if (rbl__approval_sock_path(audit, c->sock) != 0) {
    snprintf(err, errlen, "cannot read %s: %s", audit, strerror(errno));
    return -1;
  }
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  if (strlen(c->sock) >= sizeof sa.sun_path) {
    snprintf(err, errlen, "socket path %s is too long", c->sock);
    return -1;
  }
  memcpy(sa.sun_path, c->sock, strlen(c->sock) + 1);
  c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (c->fd < 0 || connect(c->fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
    snprintf(err, errlen, "no run is waiting for approval on %s (nothing listens on %s: %s)", audit,
             c->sock, strerror(errno));
    rbl_approval_disconnect(c);
    return -2;
  }
  /* The process listening must be the run that writes the chain: the chain file's owner (or
   * root). A socket someone else bound first (the /tmp fallback path is predictable) is not
   * shown to the person, and nothing is sent to it. */
  struct ucred cred = {0};
  socklen_t len = sizeof cred;
  struct stat ast = {0};
  if (stat(audit, &ast) != 0 || getsockopt(c->fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 ||
      (cred.uid != ast.st_uid && cred.uid != 0)) {
    snprintf(err, errlen,
             "%s is held by uid %u, not by the owner of %s (uid %u): not the run's approval "
             "socket, nothing sent; remove it if it is stale, or ask whoever owns it",
             c->sock, (unsigned)cred.uid, audit, (unsigned)ast.st_uid);
    rbl_approval_disconnect(c);
    return -3;
  }
  c->peer_pid = (int)cred.pid;
  c->peer_uid = (unsigned)cred.uid;
  return 0;
}

static double mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1000 + ts.tv_nsec / 1e6;
}

cJSON *rbl_approval_exchange(rbl_appr_client *c, cJSON *msg, int timeout_ms, char *err,
                             size_t errlen) {
  char *txt = cJSON_PrintUnformatted(msg);
  cJSON_Delete(msg);
  if (!txt) {
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  size_t n = strlen(txt);
  int ok = c->fd >= 0 && send(c->fd, txt, n, MSG_NOSIGNAL) == (ssize_t)n &&
           send(c->fd, "\n", 1, MSG_NOSIGNAL) == 1;
  cJSON_free(txt);
  if (!ok) {
    c->closed = 1;
    snprintf(err, errlen, "the run closed its approval socket (%s)", strerror(errno));
    return NULL;
  }
  size_t cap = 65536, len = 0;
  char *buf = malloc(cap + 1);
  double end = mono_ms() + timeout_ms;
  while (buf) {
    double left = end - mono_ms();
    struct pollfd p = {.fd = c->fd, .events = POLLIN};
    int pr = left > 0 ? poll(&p, 1, (int)left + 1) : 0;
    if (pr < 0 && errno == EINTR) continue;
    if (pr <= 0) {
      snprintf(err, errlen, "the run did not answer within %d ms", timeout_ms);
      break;
    }
    ssize_t got = read(c->fd, buf + len, cap - len);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) {
      c->closed = 1;
      snprintf(err, errlen, "the run closed its approval socket before answering");
      break;
    }
    char *nl = memchr(buf + len, '\n', (size_t)got);
    len += (size_t)got;
    if (nl) {
      *nl = 0;
      cJSON *r = cJSON_Parse(buf);
      free(buf);
      if (!cJSON_IsObject(r)) {
        cJSON_Delete(r);
        snprintf(err, errlen, "the run's answer is not a JSON object");
        return NULL;
      }
      return r;
    }
    if (len == cap) {
      if (cap >= REPLY_MAX) {
        snprintf(err, errlen, "the run's answer is longer than %u bytes", REPLY_MAX);
        break;
      }
      char *nb = realloc(buf, cap * 2 + 1);
      if (!nb) break;
      buf = nb;
      cap *= 2;
    }
  }
  if (!buf) snprintf(err, errlen, "out of memory");
  free(buf);
  return NULL;
}

cJSON *rbl_approval_status(rbl_appr_client *c, int timeout_ms, char *err, size_t errlen) {
  cJSON *q = cJSON_CreateObject();
  cJSON_AddStringToObject(q, "op", "status");
  cJSON *st = rbl_approval_exchange(c, q, timeout_ms, err, errlen);
  if (st && (!cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(st, "ok")) ||
             !cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(st, "pending")))) {
    snprintf(err, errlen, "the run's status answer has no pending list");
    cJSON_Delete(st);
    return NULL;
  }
  return st;
}

const cJSON *rbl_approval_pick(const cJSON *status, int id, const char **why, int *several) {
  const cJSON *pending = cJSON_GetObjectItemCaseSensitive(status, "pending");
  const cJSON *r, *pick = NULL;
  int n = 0;
  *several = 0;
  cJSON_ArrayForEach(r, pending) {
    const cJSON *rid = cJSON_GetObjectItemCaseSensitive(r, "id");
    if (!cJSON_IsObject(r) || !cJSON_IsNumber(rid)) continue;
    n++;
    if (!id || (int)rid->valuedouble == id) pick = r;
  }
  if (n == 0) {
    *why = "no approval is pending in this run";
    return NULL;
  }
  if (!pick) {
    *why = "no pending request has that id";
    return NULL;
  }
  if (!id && n > 1) {
    *several = 1;
    *why = "several requests wait: pick one by its id";
    return NULL;
  }
  return pick;
}

cJSON *rbl_approval_answer_msg(const cJSON *pick, int deny, const char *as, const char *reason,
                               const char *seen, cJSON *forwarded) {
  cJSON *m = cJSON_CreateObject();
  cJSON_AddStringToObject(m, "op", deny ? "deny" : "approve");
  cJSON_AddItemToObject(m, "id", cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(pick, "id"), 1));
  if (as) cJSON_AddStringToObject(m, "as", as);
  if (reason) cJSON_AddStringToObject(m, "reason", reason);
  const cJSON *ph = cJSON_GetObjectItemCaseSensitive(pick, "plan_hash");
  if (seen)
    cJSON_AddStringToObject(m, "plan_hash", seen);
  else if (cJSON_IsString(ph))
    cJSON_AddStringToObject(m, "plan_hash", ph->valuestring);
  if (forwarded) cJSON_AddItemToObject(m, "forwarded", forwarded);
  return m;
}

void rbl_approval_disconnect(rbl_appr_client *c) {
  if (c->fd >= 0) close(c->fd);
  c->fd = -1;
}
