/* The client side of the approval socket (protocol: docs/approvals.md), shared by `rbl approve`
 * and rbl serve's POST /v1/runs/ID/approve. Blocking; every exchange is bounded in time and size,
 * and every reply is read as hostile (checked before use). */
#ifndef RBL_APPROVAL_CLIENT_H
#define RBL_APPROVAL_CLIENT_H

#include <cjson/cJSON.h>
#include <stddef.h>

typedef struct rbl_appr_client {
  int fd;
  char sock[128]; /* the socket's path */
  int peer_pid;   /* the listening process (SO_PEERCRED), or 0 when unknown */
  unsigned peer_uid;
  int closed; /* the last exchange failed because the run closed the socket (not a timeout) */
} rbl_appr_client;

/* Connects to the socket of the run writing the chain at audit. 0; -1 when the chain cannot be
 * read (err names it), -2 when nothing listens there (no run waits; err says so), -3 when the
 * socket is held by another uid than the chain file's owner or root (nothing sent). */
int rbl_approval_connect(rbl_appr_client *c, const char *audit, char *err, size_t errlen);
/* Sends msg (taken) as one line and reads one reply line (at most timeout_ms, 1 MiB). The reply
 * is a JSON object, or NULL (err says why). */
cJSON *rbl_approval_exchange(rbl_appr_client *c, cJSON *msg, int timeout_ms, char *err,
                             size_t errlen);
/* {"op":"status"}: the run's status reply, checked to have ok and a pending list. */
cJSON *rbl_approval_status(rbl_appr_client *c, int timeout_ms, char *err, size_t errlen);
/* The pending request to answer: the one with id (id > 0), else the only one. NULL with *why and
 * *several (1 when several wait and no id was given). */
const cJSON *rbl_approval_pick(const cJSON *status, int id, const char **why, int *several);
/* The answer to send for the request pick: approve or deny, as, reason, the plan hash seen (the
 * request's own when seen is NULL), and forwarded (taken; NULL for none: who forwarded it). */
cJSON *rbl_approval_answer_msg(const cJSON *pick, int deny, const char *as, const char *reason,
                               const char *seen, cJSON *forwarded);
void rbl_approval_disconnect(rbl_appr_client *c);

#endif
