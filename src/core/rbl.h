/* Shared definitions for every rbl module: the error vocabulary (src/core/errors.c). */
#ifndef RBL_H
#define RBL_H

#include <stddef.h>

#ifndef RBL_VERSION
#define RBL_VERSION "0.0.0"
#endif

/* Errors are negative codes, never errno; the l_* layer turns them into Lua errors. */
enum {
  RBL_OK = 0,
  RBL_ENOMEM = -1,
  RBL_EIO = -2,    /* read/write/sync failed */
  RBL_EINVAL = -3, /* bad argument or malformed input */
  RBL_ETIMEDOUT = -4,
  RBL_ECANCELED = -5,
  RBL_ETOOBIG = -6,  /* a size cap was hit */
  RBL_EPROTO = -7,   /* malformed reply from a peer */
  RBL_ECONNECT = -8, /* could not reach the endpoint */
  RBL_ETLS = -9,
  RBL_ENOTFOUND = -10,
  RBL_EDENIED = -11, /* permission denied (file, socket, API 401/403) */
  RBL_ELOCKED = -12, /* a lock is held by someone else */
  RBL_ENOSPC = -13,  /* disk full */
  RBL_EROFS = -14,   /* read-only file system */
  RBL_ECONFLICT = -15,
  RBL_EREFUSED = -16, /* tenant scope or sandbox refusal */
  RBL_EFAILED = -17,  /* the action failed; the message says how */
  RBL_EKILLED = -18,  /* the run was stopped (refusal, limit, audit failure, Ctrl-C twice) */
  RBL_ECHECK = -19,   /* a primitive is not evaluated under rbl check */
  RBL_EUNAVAIL = -20, /* the endpoint answered that it cannot serve now (5xx, 429) */
  RBL_EAPPROVAL_DENIED = -21,  /* a person denied an approval */
  RBL_EAPPROVAL_TIMEOUT = -22, /* not enough approvals within the timeout */
};

/* The one error vocabulary, as libuv pairs uv_err_name() with uv_strerror(): every code has a
 * stable name (what runbooks and the audit see: "timeout", "not_found", ...) and prose. */
const char *rbl_err_name(int code);
const char *rbl_strerror(int code);
/* The code of a stable name, or 0 when the name is not in the vocabulary. */
int rbl_err_from_name(const char *name);
/* Calls fn for each code in the vocabulary (docs, `rbl help errors`). */
void rbl_err_each(void (*fn)(int code, const char *name, const char *prose, void *ud), void *ud);

/* The code for an errno value (ENOSPC -> RBL_ENOSPC, ...). */
int rbl_from_errno(int e);

#endif
