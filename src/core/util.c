/* Error names and small helpers shared by every module. */
#include "rbl.h"
#include <errno.h>

const char *rbl_strerror(int code) {
  switch (code) {
  case RBL_OK: return "ok";
  case RBL_ENOMEM: return "out of memory";
  case RBL_EIO: return "i/o error";
  case RBL_EINVAL: return "invalid";
  case RBL_ETIMEDOUT: return "timeout";
  case RBL_ECANCELED: return "canceled";
  case RBL_ETOOBIG: return "too big";
  case RBL_EPROTO: return "protocol error";
  case RBL_ECONNECT: return "unavailable";
  case RBL_ETLS: return "tls error";
  case RBL_ENOTFOUND: return "not found";
  case RBL_EDENIED: return "permission denied";
  case RBL_ELOCKED: return "locked";
  case RBL_ENOSPC: return "no space left on device";
  case RBL_EROFS: return "read-only file system";
  case RBL_ECONFLICT: return "conflict";
  case RBL_EREFUSED: return "refused";
  default: return "unknown error";
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
