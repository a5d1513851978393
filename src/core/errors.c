/* The error vocabulary: one table maps each code to its stable name and its prose. */
#include "rbl.h"
#include <errno.h>
#include <stddef.h>
#include <string.h>

static const struct {
  int code;
  const char *name;  /* stable: runbooks match on it, the audit records it */
  const char *prose; /* what it means, for people */
} vocabulary[] = {
    {RBL_EINVAL, "invalid", "bad argument, malformed input or misuse of a primitive"},
    {RBL_EREFUSED, "refused",
     "outside the run's tenant scope, the exec allow list or the sandbox: nothing was sent"},
    {RBL_ENOTFOUND, "not_found", "the target does not exist"},
    {RBL_ECONFLICT, "conflict", "the target changed under the call (resourceVersion, state)"},
    {RBL_EDENIED, "denied", "the endpoint or the file system denied the credentials"},
    {RBL_ETIMEDOUT, "timeout", "the call, the step or the run ran out of time"},
    {RBL_ECANCELED, "canceled", "the call was canceled (step timeout, Ctrl-C)"},
    {RBL_ECONNECT, "unavailable", "the endpoint could not be reached"},
    {RBL_EUNAVAIL, "unavailable", "the endpoint answered that it cannot serve now"},
    {RBL_ETLS, "tls", "the TLS handshake or certificate check failed"},
    {RBL_EPROTO, "protocol", "the endpoint answered something malformed"},
    {RBL_ETOOBIG, "too_big", "a size limit was reached (output, response, argument)"},
    {RBL_EIO, "io", "reading or writing a file failed"},
    {RBL_ENOSPC, "io", "the disk is full"},
    {RBL_EROFS, "io", "the file system is read-only"},
    {RBL_ELOCKED, "locked", "another process holds the lock (the audit chain)"},
    {RBL_ENOMEM, "no_memory", "out of memory"},
    {RBL_EFAILED, "failed", "the action failed; the message says how"},
    {RBL_EKILLED, "killed", "the run was stopped by a refusal, a limit or an audit failure"},
    {RBL_ECHECK, "check", "not evaluated: rbl check runs no primitive"},
    {RBL_EAPPROVAL_DENIED, "approval_denied",
     "a person denied the approval: the step failed closed"},
    {RBL_EAPPROVAL_TIMEOUT, "approval_timeout",
     "not enough approvals within the timeout (or nobody could be asked): the step failed closed"},
};
#define NVOCAB (sizeof vocabulary / sizeof *vocabulary)

const char *rbl_err_name(int code) {
  if (code == RBL_OK) return "ok";
  for (size_t i = 0; i < NVOCAB; i++)
    if (vocabulary[i].code == code) return vocabulary[i].name;
  return "failed";
}

const char *rbl_strerror(int code) {
  if (code == RBL_OK) return "ok";
  for (size_t i = 0; i < NVOCAB; i++)
    if (vocabulary[i].code == code) return vocabulary[i].prose;
  return "unknown error";
}

int rbl_err_from_name(const char *name) {
  for (size_t i = 0; i < NVOCAB; i++)
    if (!strcmp(vocabulary[i].name, name)) return vocabulary[i].code;
  return 0;
}

void rbl_err_each(void (*fn)(int code, const char *name, const char *prose, void *ud), void *ud) {
  for (size_t i = 0; i < NVOCAB; i++) {
    size_t j = 0; /* each name once, with its first prose */
    while (j < i && strcmp(vocabulary[j].name, vocabulary[i].name))
      j++;
    if (j == i) fn(vocabulary[i].code, vocabulary[i].name, vocabulary[i].prose, ud);
  }
}

int rbl_from_errno(int e) {
  switch (e) {
  case 0: return RBL_OK;
  case ENOMEM: return RBL_ENOMEM;
  case ENOSPC:
  case EDQUOT: return RBL_ENOSPC;
  case EROFS: return RBL_EROFS;
  case EACCES:
  case EPERM: return RBL_EDENIED;
  case ENOENT: return RBL_ENOTFOUND;
  case ETIMEDOUT: return RBL_ETIMEDOUT;
  case ECANCELED: return RBL_ECANCELED;
  case EWOULDBLOCK: return RBL_ELOCKED;
  case EINVAL: return RBL_EINVAL;
  default: return RBL_EIO;
  }
}
