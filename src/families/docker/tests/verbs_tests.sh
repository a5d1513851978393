#!/usr/bin/env bash
# docker.stop/start/kill/stats/top end to end: the real `rbl run` against the real dockerd. Every
# name and the tenant label key are unique to this run, so concurrent runs on a shared daemon
# never meet. Checks the daemon's own state and event stream, refusals, `rbl rollback`'s list of
# what it cannot undo, and every audit chain.
# usage: verbs_tests.sh path/to/rbl
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../../../../tests/lib/common.sh
source "$HERE/../../../../tests/lib/common.sh"
rbl_test_init docker-verbs "${1:-}"
IMG=${RBL_TEST_IMAGE:-rbl-test/busybox:1}
bash "$HERE/setup.sh" || { echo "docker setup failed"; exit 1; }
KEY=rbl.test.v$RUN # the tenant label key of this run only
rbl_at_exit 'docker ps -aq --filter "label=$KEY" | xargs -r docker rm -f >/dev/null 2>&1'
A=rbl-v$RUN-a
B=rbl-v$RUN-b
docker run -d --name "$A" --label "$KEY=ta" "$IMG" sleep 100000 >/dev/null
docker run -d --name "$B" --label "$KEY=tb" "$IMG" sleep 100000 >/dev/null
cat >"$W/config.lua" <<CFG
return { tenants = { "ta", "tb" }, labels = { docker = "$KEY" } }
CFG
run() { # NAME WANT RUNBOOK [options]
  local name=$1 want=$2 rb=$3
  shift 3
  "$RBL" run "$HERE/$rb" --tenant ta --config "$W/config.lua" --incident "$name" --audit "$W/$name.jsonl" \
    --report "$W/$name.json" "$@" >"$W/$name.out" 2>&1
  local rc=$?
  if [ "$rc" = "$want" ]; then ok "$name: exit $rc"; else bad "$name: exit $rc, want $want"; tail -n 12 "$W/$name.out" | sed 's/^/    | /'; fi
}

# followed live: the daemon keeps only its last 256 events for --since, and other suites on a
# shared daemon can push ours out
docker events --filter "container=$A" --filter event=start --filter event=kill --filter event=stop \
  --filter event=die --format '{{.Action}}' >"$W/events.a" 2>/dev/null &
EVPID=$!
sleep 1
run verbs 0 verbs.lua --param "c=$A"
sleep 1
kill "$EVPID" 2>/dev/null
EV=$(tr '\n' ' ' <"$W/events.a")
check "the daemon saw stop, start, kill, start (events: $EV)" \
  bash -c "grep -qE 'kill die stop.*start.*kill die.*start' <<<'$EV'"
check "the container is running at the end" test "$(docker inspect -f '{{.State.Running}}' "$A")" = true
check "results of stop/start/kill that changed something say irreversible" \
  test "$(jq -s '[.[] | select(.kind=="result" and (.prim|test("^docker\\.(stop|start|kill)$")) and .status=="ok" and .summary.changed==true and .summary.irreversible==true)] | length' "$W/verbs.jsonl")" = 4
check "a no-op stop/start is not marked irreversible" \
  test "$(jq -s '[.[] | select(.kind=="result" and .status=="ok" and .summary.changed==false and .summary.irreversible!=null)] | length' "$W/verbs.jsonl")" = 0
verify() { "$RBL" audit verify "$1" >/dev/null 2>&1; }
check "the audit chain verifies" verify "$W/verbs.jsonl"

"$RBL" rollback "$W/verbs.jsonl" --config "$W/config.lua" >"$W/rb.out" 2>&1
RC=$?
check "rbl rollback: exit 0 (nothing reversible)" test "$RC" = 0
check "rbl rollback warns it cannot undo the 4 lifecycle actions" grep -q "cannot undo 4 actions" "$W/rb.out"
check "... naming docker.stop and docker.kill" bash -c "grep -q '  - docker.stop' '$W/rb.out' && grep -q '  - docker.kill' '$W/rb.out'"
check "the chain still verifies after the rollback run" verify "$W/verbs.jsonl"

docker events --filter "container=$B" --format '{{.Action}}' >"$W/events.b" 2>/dev/null &
EVPID=$!
sleep 1
for v in stop start kill stats top; do
  run "xt-$v" 3 verbs_xt.lua --param "c=$B" --param "verb=$v"
  check "xt-$v: refused naming the owner" grep -q "belongs to tenant tb, not ta" "$W/xt-$v.out"
  check "xt-$v: chain verifies" verify "$W/xt-$v.jsonl"
done
sleep 1
kill "$EVPID" 2>/dev/null
check "the other tenant's container saw no event at all ($(tr '\n' ' ' <"$W/events.b"))" test ! -s "$W/events.b"
check "... and still runs" test "$(docker inspect -f '{{.State.Running}}' "$B")" = true
rbl_test_done
