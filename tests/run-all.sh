#!/usr/bin/env bash
# The whole test suite, as CI runs it: setup, a warnings-as-errors build with every test,
# then the same suite under AddressSanitizer + UndefinedBehaviorSanitizer. Both passes always
# run (a failure in the first does not hide the second); the summary names each pass's failed
# tests, and the exit status is 0 only when both passed.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || { echo "run-all: setup failed"; exit 1; }
jobs=$(nproc 2>/dev/null || echo 2)
summary=()
failed=0

# pass NAME DIR CMAKE_ARGS -- CTEST_ARGS...
pass() {
  local name=$1 dir=$2 cfg=$3
  shift 4
  echo "=== run-all: $name pass ($dir)"
  if ! cmake -S . -B "$dir" $cfg >/dev/null || ! cmake --build "$dir" -j"$jobs"; then
    summary+=("$name: BUILD FAILED")
    failed=1
    return
  fi
  rm -f "$dir/Testing/Temporary/LastTestsFailed.log"
  ctest --test-dir "$dir" --output-on-failure -j"$jobs" "$@"
  local rc=$?
  local n
  n=$(ctest --test-dir "$dir" -N "$@" 2>/dev/null | sed -n 's/^Total Tests: //p')
  if [ "$rc" = 0 ]; then
    summary+=("$name: passed (${n:-?} tests)")
  else
    local list
    list=$(sed 's/^[0-9]*://' "$dir/Testing/Temporary/LastTestsFailed.log" 2>/dev/null | tr '\n' ' ')
    summary+=("$name: FAILED (of ${n:-?} tests): ${list:-ctest exit $rc}")
    failed=1
  fi
}

pass plain build "-DCMAKE_BUILD_TYPE=RelWithDebInfo -DRBL_WERROR=ON" -- "$@"
if [ "${RBL_SKIP_ASAN:-0}" != 1 ]; then
  export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
  pass asan build-asan "-DCMAKE_BUILD_TYPE=Debug -DRBL_WERROR=ON -DRBL_SANITIZE=ON" -- -LE no-asan "$@"
else
  summary+=("asan: not run (RBL_SKIP_ASAN=1)")
fi
echo "=== run-all summary"
printf '  %s\n' "${summary[@]}"
if [ "$failed" = 0 ]; then echo "run-all: every test passed"; else echo "run-all: FAILED"; fi
exit "$failed"
