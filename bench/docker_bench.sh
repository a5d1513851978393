#!/usr/bin/env bash
# docker_exec bench, in one run against the same containers:
#  1. N calls (default 200) over 10 containers at concurrency 10: rbl (`each`) against
#     bench/docker_raw_exec.py, a minimal raw-socket client of the Engine API doing the same
#     execs (create, attached start, inspect) with the same concurrency (goal: rbl <= 1.05x of
#     it), runs interleaved, ROUNDS each (default 3), medians; then a shell loop of
#     `docker exec` once (serial; on 2 cores the daemon's ~150 ms of CPU per exec caps this
#     ratio near 2-2.6x);
#  2. one call: rbl's docker_exec vs the raw create/start/inspect sequence with
#     `curl --unix-socket` (goal: <= 1.2x), medians of N sequential calls.
# usage: bench/docker_bench.sh path/to/rbl [calls] [rounds]
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../tests/lib/common.sh
source "$HERE/../tests/lib/common.sh"
rbl_test_init docker-bench "${1:-}" "[calls] [rounds]"
N=${2:-200}
ROUNDS=${3:-3}
SOCK=/var/run/docker.sock
IMG=rbl-test/busybox:1
bash "$HERE/../src/families/docker/tests/setup.sh"
# The dockerd is shared with other suites and runs: the containers, their label and the tenant
# are this run's own, and only they are removed.
TEN=bench-$RUN
PFX=rbl-bench-$RUN-
rbl_at_exit 'docker ps -aq --filter "label=rbl.bench=$RUN" | xargs -r docker rm -f >/dev/null 2>&1'
for i in $(seq 1 10); do
  docker run -d --name "$PFX$i" --label "rbl.bench=$RUN" --label "rbl.tenant=$TEN" "$IMG" sleep 100000 >/dev/null
done
echo "return { tenants = { \"$TEN\" } }" >"$W/config.lua"
now() { date +%s%N; }
ms() { echo $(( ($2 - $1) / 1000000 )); }

V=$(curl -s --unix-socket $SOCK -D - -o /dev/null http://d/_ping | tr -d '\r' | awk -F': ' 'tolower($1)=="api-version"{print $2}')
echo "== $N docker_exec calls over 10 containers, concurrency 10 ($ROUNDS interleaved rounds, the order alternating)"
rbl_ms=() raw_ms=() ratios=() rbl_cpu=() raw_cpu=()
med() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : int((a[NR/2]+a[NR/2+1])/2)}'; }
# cpu FILE: user+system seconds GNU time wrote
cpu() { awk '{printf "%.2f", $1 + $2}' "$1"; }
run_rbl() {
  local a b
  a=$(now)
  /usr/bin/time -f '%U %S' -o "$W/cpu-rbl" "$RBL" run "$HERE/docker_exec_bench.lua" --tenant "$TEN" \
    --config "$W/config.lua" --audit "$W/fan-$1.jsonl" --quiet --param mode=fanout --param n="$N" \
    --param prefix="$PFX" --param c=10
  b=$(now)
  rbl_ms+=($(ms "$a" "$b")) rbl_cpu+=($(cpu "$W/cpu-rbl"))
}
run_raw() {
  local a b
  a=$(now)
  /usr/bin/time -f '%U %S' -o "$W/cpu-raw" python3 "$HERE/docker_raw_exec.py" "$SOCK" "$V" "$PFX" "$N" 10 10
  b=$(now)
  raw_ms+=($(ms "$a" "$b")) raw_cpu+=($(cpu "$W/cpu-raw"))
}
for r in $(seq 1 "$ROUNDS"); do
  if [ $((r % 2)) = 1 ]; then run_rbl "$r"; run_raw; else run_raw; run_rbl "$r"; fi
  ratios+=($(awk -v a="${rbl_ms[-1]}" -v b="${raw_ms[-1]}" 'BEGIN { printf "%.3f", a / b }'))
done
RBL_MS=$(med "${rbl_ms[@]}"); RAW_MS=$(med "${raw_ms[@]}")
t1=$(now)
for i in $(seq 1 "$N"); do docker exec "$PFX$(( (i - 1) % 10 + 1 ))" echo "$i" >/dev/null; done
t2=$(now)
CLI_MS=$(ms "$t1" "$t2")
echo "rbl (each, concurrency 10):        ${RBL_MS} ms  (runs: ${rbl_ms[*]}; CPU s: ${rbl_cpu[*]})"
echo "raw Engine API client (10 threads): ${RAW_MS} ms  (runs: ${raw_ms[*]}; CPU s: ${raw_cpu[*]})"
echo "per round rbl / raw: ${ratios[*]} (median $(printf '%s\n' "${ratios[@]}" | sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}')x)"
echo "shell loop of docker exec (serial): ${CLI_MS} ms"
echo "rbl / raw client: $(awk -v a="$RBL_MS" -v b="$RAW_MS" 'BEGIN { printf "%.3fx", a / b }') (goal <= 1.05x)"
echo "docker exec loop / rbl: $(awk -v a="$CLI_MS" -v b="$RBL_MS" 'BEGIN { printf "%.2fx", a / b }') (daemon-bound: ~2-2.6x on 2 cores)"

echo "== one call (median of 15)"
"$RBL" run "$HERE/docker_exec_bench.lua" --tenant "$TEN" --config "$W/config.lua" --audit "$W/one.jsonl" \
  --param mode=single --param n=15 --param prefix="$PFX" 2>"$W/one.err"
EFFECT=$(grep -o 'effect_ms_median=[0-9]*' "$W/one.err" | cut -d= -f2)
# the whole primitive: begin..result as the audit records it (scope GET, durable intent, effect)
WHOLE=$(python3 - "$W/one.jsonl" <<'PY'
import json, sys
d = sorted(r["duration_ms"] for r in map(json.loads, open(sys.argv[1])) if r.get("kind") == "result" and r.get("prim") == "docker_exec")[1:]
print(d[len(d) // 2])
PY
)
C=$(docker inspect -f '{{.Id}}' "${PFX}1")
raw=()
for _ in $(seq 1 15); do
  a=$(now)
  E=$(curl -s --unix-socket $SOCK -H 'Content-Type: application/json' \
    -d '{"AttachStdout":true,"AttachStderr":true,"Cmd":["true"]}' "http://d/v$V/containers/$C/exec" | sed 's/.*"Id":"\([0-9a-f]*\)".*/\1/')
  curl -s --unix-socket $SOCK -H 'Content-Type: application/json' -d '{"Detach":false,"Tty":false}' \
    "http://d/v$V/exec/$E/start" >/dev/null
  curl -s --unix-socket $SOCK "http://d/v$V/exec/$E/json" >/dev/null
  b=$(now)
  raw+=($(ms "$a" "$b"))
done
RAW=$(printf '%s\n' "${raw[@]}" | sort -n | sed -n 8p)
echo "curl create/start/inspect:    ${RAW} ms"
echo "rbl docker_exec effect:       ${EFFECT} ms  ($(awk -v a="$EFFECT" -v b="$RAW" 'BEGIN { printf "%.2fx", a / b }') of curl, goal <= 1.2x)"
echo "rbl docker_exec whole call:   ${WHOLE} ms  (with the scope check and the durable intent)"
