/* rbl rollback: undo the reversible changes an audit chain recorded (owned by the kube work). */
#include "cli.h"

#include <stdio.h>

int rbl_cmd_rollback(int argc, char **argv) {
  fprintf(stderr, "rbl: rollback: not available in this build yet; nothing was changed\n");
  return 2;
}
