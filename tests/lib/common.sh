# The preamble the shell suites share (sourced, never run): the binary, a work directory removed
# at exit, an id unique to the run, "ok"/"not ok" lines with their counters, the summary.
#
#   source "$ROOT/tests/lib/common.sh"
#   rbl_test_init NAME "${1:-}" [USAGE_TAIL]
#                                RBL: the absolute path of the binary given (without one: exit 2
#                                with "usage: SCRIPT path/to/rbl USAGE_TAIL");
#                                W: a new directory /tmp/rbl-NAME.XXXXXX, removed at exit unless
#                                KEEP is set; RUN: an id unique to this run (names, labels and
#                                tenants on a daemon other runs share); pass=0, fail=0
#   rbl_at_exit 'COMMAND'        evaluated at exit, before W is removed, in the order registered
#                                (so it sees variables as they are then)
#   ok WHAT / bad WHAT           one "ok - WHAT" / "not ok - WHAT" line, counted
#   check WHAT COMMAND [ARG...]  ok when COMMAND succeeds, else bad
#   rbl_test_done                "# N passed, M failed"; returns non-zero when one failed
# shellcheck shell=bash

RBL_AT_EXIT=()

rbl_test_init() {
  local name=$1 bin=${2:-}
  if [ -z "$bin" ]; then
    echo "usage: $(basename "$0") path/to/rbl${3:+ $3}" >&2
    exit 2
  fi
  RBL=$(realpath "$bin")
  W=$(mktemp -d "/tmp/rbl-$name.XXXXXX")
  RUN=$(date +%s%N | tail -c 9)$$
  pass=0
  fail=0
  trap rbl__exit EXIT
}

rbl_at_exit() { RBL_AT_EXIT+=("$1"); }

rbl__exit() {
  local c
  for c in "${RBL_AT_EXIT[@]}"; do eval "$c" || true; done
  [ -n "${KEEP:-}" ] || rm -rf "$W"
}

ok() { echo "ok - $*"; pass=$((pass + 1)); }
bad() { echo "not ok - $*"; fail=$((fail + 1)); }
check() { local what=$1; shift; if "$@"; then ok "$what"; else bad "$what"; fi; }

rbl_test_done() {
  echo "# $pass passed, $fail failed"
  [ "$fail" = 0 ]
}
