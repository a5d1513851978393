#!/bin/sh
# Builds the libFuzzer harnesses with clang, or runs one for a while (docs/fuzzing.md).
#   run.sh build OUT               configure and build tests/fuzz into OUT
#   run.sh run OUT NAME SECONDS    fuzz NAME (yaml, json, ...) for SECONDS from its seed corpus
#   FUZZ_SEED=N and FUZZ_RUNS=N make a run repeatable (ctest sets both: the same inputs every time)
# New inputs go to a scratch corpus in OUT, never into the repository; a crash leaves its input
# in OUT/artifacts and makes this exit non-zero.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
cmd=$1 out=$2
case $cmd in
build)
  cc=${CC_FUZZ:-$(command -v clang)}
  cmake -S "$here" -B "$out" -DCMAKE_C_COMPILER="$cc" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  cmake --build "$out" -j2 >/dev/null
  ;;
run)
  name=$3 secs=$4
  work="$out/corpus/$name"
  mkdir -p "$work" "$out/artifacts"
  ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1} UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1} \
    "$out/fuzz_$name" -max_total_time="$secs" ${FUZZ_SEED:+-seed="$FUZZ_SEED"} ${FUZZ_RUNS:+-runs="$FUZZ_RUNS"} -timeout=60 -rss_limit_mb=2048 -max_len=65536 \
    -print_final_stats=1 -artifact_prefix="$out/artifacts/$name-" "$work" "$here/corpus/$name"
  ;;
*) echo "usage: run.sh build OUT | run.sh run OUT NAME SECONDS" >&2; exit 2 ;;
esac
