#!/usr/bin/env bash
# Docker writes canceled in flight (issue 14 item 3), against the real dockerd: docker.restart
# canceled by the step timeout gets a result "canceled" with may_have_applied and the
# container's before-state; rollback reads the container back; rbl rollback starts it again
# when it ran before and no longer runs. A canceled docker_exec names its exec instance, and
# its process runs on in the container (the Engine API cannot stop an exec'd process).
# Names and labels are unique per run: other suites share the daemon.
# usage: test_cancel.sh path/to/rbl
set -uo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../../../../tests/lib/common.sh
source "$HERE/../../../../tests/lib/common.sh"
rbl_test_init docker-cancel "${1:-}"
# shellcheck source=app.sh
source "$HERE/app.sh"
docker_test_app wbc
running() { docker inspect -f '{{.State.Running}}' "$C"; }

cat >"$W/restart.lua" <<EOS
runbook { id = "cancel-docker-restart" }
step "restart" { timeout = 1, run = function() docker.restart("$C", { timeout = 4 }) end, rollback = "auto" }
EOS
cat >"$W/exec.lua" <<EOS
runbook { id = "cancel-docker-exec" }
step "exec" { timeout = 2, run = function() docker_exec("$C", { "sh", "-c", "sleep 3; touch /tmp/marker-$U" }) end }
EOS
run() {
  local name=$1 rb=$2
  shift 2
  "$RBL" run "$W/$rb" --tenant "$TEN" --config "$W/config.lua" --incident "$name" \
    --audit "$W/$name.jsonl" --report "$W/$name.report.json" "$@" >"$W/$name.out" 2>&1
  RC=$?
}
canceled() { jq -c "select(.kind==\"result\" and .prim==\"$2\" and .status==\"canceled\")" "$W/$1.jsonl" | head -n 1; }

echo "# docker.restart canceled by the step timeout"
s0=$(started)
run restart restart.lua
check "the run fails (exit 1)" test "$RC" = 1
c=$(canceled restart docker.restart)
check "result canceled, code timeout, may_have_applied" test "$(jq -r '.error.code + " " + (.may_have_applied|tostring)' <<<"$c")" = "timeout true"
check "before-state: running, its StartedAt" test "$(jq -r '(.before.running|tostring) + " " + .before.started_at' <<<"$c")" = "true $s0"
check "rollback read the container back: running, nothing to restore (not_needed)" \
  test "$(jq -r '.execution_trace[0].rollback' "$W/restart.report.json")" = not_needed
check "the read-back is audited (docker_restore, noop)" \
  test "$(jq -c 'select(.kind=="result" and .prim=="docker_restore") | .summary.noop' "$W/restart.jsonl")" = true
check "report: the canceled restart is listed in the step's calls" \
  test "$(jq -r '.execution_trace[0].calls[] | select(.prim=="docker.restart") | .status + " " + .error.code' "$W/restart.report.json")" = "canceled timeout"
check "chain verifies" "$RBL" audit verify "$W/restart.jsonl"
for _ in $(seq 100); do [ "$(running)" = true ] && [ "$(started)" != "$s0" ] && break; sleep 0.1; done
echo "# (dockerd finished the restart on its own: StartedAt $(started), was $s0)"

echo "# the run deadline cancels a restart mid-write: the automatic rollback reads the container back"
cat >"$W/deadline.lua" <<EOS
return { tenants = { "$TEN" }, limits = { run_timeout = 1 } }
EOS
cat >"$W/nograce.lua" <<EOS
return { tenants = { "$TEN" }, limits = { run_timeout = 1, rollback_grace = 0 } }
EOS
sed 's/timeout = 1, run/timeout = 30, run/' "$W/restart.lua" >"$W/restart30.lua"
s1=$(started)
run deadline restart30.lua --config "$W/deadline.lua"
check "the run is stopped (exit 3)" test "$RC" = 3
c=$(canceled deadline docker.restart)
check "result canceled by the run deadline (timeout), may_have_applied" \
  test "$(jq -r '.error.code + " " + .error.message + " " + (.may_have_applied|tostring)' <<<"$c")" = "timeout run deadline of 1s exceeded true"
check "before-state: running, its StartedAt" test "$(jq -r '(.before.running|tostring) + " " + .before.started_at' <<<"$c")" = "true $s1"
rb=$(jq -c 'select(.kind=="result" and .prim=="docker_restore")' "$W/deadline.jsonl")
check "rollback in the grace read the container back (docker_restore, audited): it was running, nothing started" \
  test "$(jq -r '.status + " " + (.summary.noop|tostring)' <<<"$rb")" = "ok true"
check "report: rollback not_needed" test "$(jq -r '.execution_trace[0].rollback' "$W/deadline.report.json")" = not_needed
check "report: the canceled restart is in the step's calls, with may_have_applied" \
  test "$(jq -r '.execution_trace[0].calls[] | select(.prim=="docker.restart") | .status + " " + (.may_have_applied|tostring)' "$W/deadline.report.json")" = "canceled true"
check "chain verifies" "$RBL" audit verify "$W/deadline.jsonl"
for _ in $(seq 100); do [ "$(running)" = true ] && [ "$(started)" != "$s1" ] && break; sleep 0.1; done
check "read back afterwards: the container runs (dockerd finished the restart it was asked for)" test "$(running)" = true

echo "# limits.rollback_grace = 0: no automatic rollback; rbl rollback, the container now stopped"
s1=$(started)
run nograce restart30.lua --config "$W/nograce.lua"
check "the run is stopped (exit 3)" test "$RC" = 3
c=$(canceled nograce docker.restart)
check "result canceled, code killed, may_have_applied" test "$(jq -r '.error.code + " " + (.may_have_applied|tostring)' <<<"$c")" = "killed true"
check "report: rollback unknown" test "$(jq -r '.execution_trace[0].rollback' "$W/nograce.report.json")" = unknown
for _ in $(seq 100); do [ "$(running)" = true ] && [ "$(started)" != "$s1" ] && break; sleep 0.1; done
docker stop -t 1 "$C" >/dev/null
check "(setup) the container is stopped" test "$(running)" = false
"$RBL" rollback "$W/nograce.jsonl" --config "$W/config.lua" --report "$W/rb.report.json" >"$W/rb.out" 2>&1
check "rbl rollback exits 0" test $? = 0
check "it started the container again (it ran before)" test "$(running)" = true
check "rbl rollback report: done" test "$(jq -r '.execution_trace[0].rollback' "$W/rb.report.json")" = done
"$RBL" rollback "$W/nograce.jsonl" --config "$W/config.lua" >"$W/rb2.out" 2>&1
check "second rbl rollback: nothing to undo" grep -q "nothing to undo" "$W/rb2.out"

echo "# docker_exec canceled by the step timeout"
run exec exec.lua
check "the run fails (exit 1)" test "$RC" = 1
c=$(canceled exec docker_exec)
eid=$(jq -r .before.exec <<<"$c")
check "result canceled, may_have_applied, names the exec instance" \
  bash -c "[ '$(jq -r .may_have_applied <<<"$c")' = true ] && [[ '$eid' =~ ^[0-9a-f]{64}$ ]]"
for _ in $(seq 150); do docker exec "$C" test -f "/tmp/marker-$U" 2>/dev/null && break; sleep 0.1; done
check "as documented, the exec'd process ran on to its end in the container" docker exec "$C" test -f "/tmp/marker-$U"
check "chain verifies" "$RBL" audit verify "$W/exec.jsonl"

rbl_test_done
