#!/usr/bin/env bash
# Honest interruption of writes (issue 14 item 3), end to end against the API stand-in: a
# kube write canceled in flight by the step timeout, Ctrl-C and the run deadline gets a
# result "canceled" with may_have_applied and its before-state; rollback reads the object
# back and undoes it only when the write took effect; the report says so; rbl rollback does
# the same from the chain. The stand-in's --answer-delay-ms applies a PATCH and answers late
# (canceled after it took effect); --fail '... hang' never applies it (canceled before).
# usage: test_cancel.sh path/to/rbl      (KEEP=1 keeps the work directory)
set -uo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../../../../tests/lib/common.sh
source "$HERE/../../../../tests/lib/common.sh"
rbl_test_init kube-cancel "${1:-}"
# shellcheck source=../../../../tests/kube/lib.sh
source "$HERE/../../../../tests/kube/lib.sh"
kube_ensure_deps || exit 1

show() { sed 's/^/    # /' "$1" | head -n 30; }

BASIC=$HERE/../../../../tests/kube/fixtures/basic.yaml
CM=/api/v1/namespaces/prod-tenant-7/configmaps/db-pool-config
DEP=/apis/apps/v1/namespaces/prod-tenant-7/deployments/api

start() {
  kube_standin_start --fixtures "$BASIC" --token t0k3n-alice=alice:sre --anonymous alice "$@" || exit 1
  KC=$W/kc-$KUBE_STANDIN_PORT
  kube_write_kubeconfig "$KC" "$KUBE_STANDIN_URL" --token t0k3n-alice
  export KUBECONFIG=$KC
}
kc() { kubectl --kubeconfig "$KC" "$@"; }
maxconn() { kc get cm db-pool-config -n prod-tenant-7 -o jsonpath='{.data.max_connections}'; }
replicas() { kc get deploy api -n prod-tenant-7 -o jsonpath='{.spec.replicas}'; }

cat >"$W/config.lua" <<'EOS'
return { tenants = { ["prod-tenant-7"] = {} }, kube = { timeout = 30 } }
EOS
cat >"$W/deadline.lua" <<'EOS'
return { tenants = { ["prod-tenant-7"] = {} }, kube = { timeout = 30 }, limits = { run_timeout = 2 } }
EOS
cat >"$W/nograce.lua" <<'EOS'
return { tenants = { ["prod-tenant-7"] = {} }, kube = { timeout = 30 }, limits = { run_timeout = 2, rollback_grace = 0 } }
EOS

# the write, then a step that would fail: the step's own timeout cancels the write
cat >"$W/patch.lua" <<'EOS'
runbook { id = "cancel-patch", params = { timeout = "1" } }
step "change" {
  timeout = tonumber(params.timeout or "1"),
  run = function() kube_patch("configmap", "db-pool-config", { data = { max_connections = "777" } }) end,
  rollback = "auto",
}
EOS
cat >"$W/scale.lua" <<'EOS'
runbook { id = "cancel-scale" }
step "scale" { timeout = 1, run = function() kube.scale("deployment", "api", 7) end, rollback = "auto" }
EOS
cat >"$W/restart.lua" <<'EOS'
runbook { id = "cancel-restart" }
step "restart" { timeout = 1, run = function() kube.rollout_restart("api") end, rollback = "auto" }
EOS
sed 's/timeout = 1, run/timeout = 30, run/' "$W/scale.lua" >"$W/scale30.lua"
sed 's/timeout = 1, run/timeout = 30, run/' "$W/restart.lua" >"$W/restart30.lua"
cat >"$W/delete.lua" <<'EOS'
runbook { id = "cancel-delete" }
step "delete" { timeout = 1, run = function() kube.delete("pod", "api-7d9f8-abcde") end, rollback = "auto" }
EOS
cat >"$W/toplevel.lua" <<'EOS'
-- a plain script: a write at the top level, then an error (top-level code has no rollback)
kube_patch("configmap", "db-pool-config", { data = { max_connections = "444" } })
error("stopped after a top-level write")
EOS
cat >"$W/topread.lua" <<'EOS'
kube_get("configmap", "db-pool-config")
error("stopped after a top-level read")
EOS
cat >"$W/norollback.lua" <<'EOS'
runbook { id = "cancel-norollback" }
step "change" { timeout = 1, run = function() kube_patch("configmap", "db-pool-config", { data = { max_connections = "555" } }) end }
EOS

# run NAME RUNBOOK [options...] -> RC, $W/NAME.{out,jsonl,report.json}
run() {
  local name=$1 rb=$2
  shift 2
  "$RBL" run "$W/$rb" --tenant prod-tenant-7 --incident "$name" --config "$W/config.lua" \
    --audit "$W/$name.jsonl" --report "$W/$name.report.json" "$@" >"$W/$name.out" 2>&1
  RC=$?
}
expect_rc() { if [ "$RC" = "$1" ]; then ok "$2 (exit $RC)"; else bad "$2: exit $RC, want $1"; show "$W/$3.out"; fi; }
# the canceled result of PRIM in chain NAME, as one JSON object
canceled() { jq -c "select(.kind==\"result\" and .prim==\"$2\" and .status==\"canceled\")" "$W/$1.jsonl" | head -n 1; }
rep() { jq -r "$2" "$W/$1.report.json"; }
verified() { "$RBL" audit verify "$W/$1.jsonl" >"$W/$1.verify" 2>&1; }

echo "# step timeout; the PATCH was applied, its answer never came in time"
start --answer-delay-ms "PATCH $CM:4000,1"
before=$(maxconn)
run applied patch.lua
expect_rc 1 "timed-out write: the run fails" applied
c=$(canceled applied kube_patch)
check "result canceled, code timeout" test "$(jq -r .error.code <<<"$c")" = timeout
check "may_have_applied: true" test "$(jq -r .may_have_applied <<<"$c")" = true
check "the before-state is in the canceled result" \
  test "$(jq -r '.before.fields[] | select(.path=="/data/max_connections") | .value' <<<"$c")" = "$before"
check "the intent is marked write" test "$(jq -c 'select(.kind=="intent" and .prim=="kube_patch") | .write' "$W/applied.jsonl")" = true
check "rollback read it back and undid it: report says done" test "$(rep applied '.execution_trace[0].rollback')" = done
check "the ConfigMap is back to its before-state" test "$(maxconn)" = "$before"
check "report: the canceled call is in the step's calls (canceled, timeout, may_have_applied)" \
  test "$(rep applied '.execution_trace[0].calls[] | select(.prim=="kube_patch") | .status + " " + .error.code + " " + (.may_have_applied|tostring) + " " + (.change|tostring)')" = "canceled timeout true true"
check "report: its action names the write" bash -c "jq -r '.execution_trace[0].action' '$W/applied.report.json' | grep -q '^kube_patch'"
check "the undo was recorded as uncertain (read back)" \
  test "$(jq -c 'select(.kind=="result" and .prim=="kube_undo") | .summary.uncertain' "$W/applied.jsonl")" = true
check "chain verifies, run ended" verified applied
check "audit show marks the call CANCELED" bash -c "'$RBL' audit show '$W/applied.jsonl' | grep -q 'CANCELED.*may have been applied'"
kube_standin_stop

echo "# step timeout; the PATCH never reached the object"
start --fail "PATCH $CM hang 1"
before=$(maxconn)
run notapplied patch.lua
expect_rc 1 "hung write: the run fails" notapplied
c=$(canceled notapplied kube_patch)
check "result canceled with may_have_applied" test "$(jq -r '.status + " " + (.may_have_applied|tostring)' <<<"$c")" = "canceled true"
check "rollback read back: not applied, report says not_needed" test "$(rep notapplied '.execution_trace[0].rollback')" = not_needed
check "no inverse PATCH was sent" test "$(jq -c 'select(.method=="PATCH")' "$KUBE_STANDIN_LOG" | wc -l)" = 1
check "the ConfigMap is unchanged" test "$(maxconn)" = "$before"
check "human intervention not required (nothing left applied)" test "$(rep notapplied '.human_intervention_required')" = false
check "chain verifies" verified notapplied
kube_standin_stop

echo "# Ctrl-C while the PATCH is in flight"
start --answer-delay-ms "PATCH $CM:4000,1"
before=$(maxconn)
"$RBL" run "$W/patch.lua" --tenant prod-tenant-7 --incident sigint --config "$W/config.lua" --param timeout=30 \
  --audit "$W/sigint.jsonl" --report "$W/sigint.report.json" >"$W/sigint.out" 2>&1 &
pid=$!
for _ in $(seq 100); do # the intent is durable before the PATCH leaves
  grep -q '"kind":"intent".*"prim":"kube_patch"' "$W/sigint.jsonl" 2>/dev/null && break
  sleep 0.1
done
sleep 0.5
kill -INT $pid
wait $pid
RC=$?
expect_rc 1 "interrupted run" sigint
c=$(canceled sigint kube_patch)
check "result canceled by the interrupt" test "$(jq -r .error.message <<<"$c")" = "interrupted (Ctrl-C)"
check "may_have_applied: true" test "$(jq -r .may_have_applied <<<"$c")" = true
check "rollback done" test "$(rep sigint '.execution_trace[0].rollback')" = done
check "the ConfigMap is back" test "$(maxconn)" = "$before"
check "report: the call canceled by Ctrl-C is listed" \
  test "$(rep sigint '.execution_trace[0].calls[] | select(.prim=="kube_patch") | .status + " " + .error.code')" = "canceled canceled"
check "chain verifies" verified sigint
kube_standin_stop

echo "# run deadline while the PATCH is in flight (applied, answer late): rollback in the grace"
start --answer-delay-ms "PATCH $CM:4000,1"
before=$(maxconn)
run deadline patch.lua --config "$W/deadline.lua" --param timeout=30
expect_rc 3 "run past its deadline: exit 3" deadline
c=$(canceled deadline kube_patch)
check "result canceled, code timeout, naming the run deadline" \
  test "$(jq -r '.error.code + " " + .error.message' <<<"$c")" = "timeout run deadline of 2s exceeded"
check "may_have_applied with before-state" test "$(jq -r '.may_have_applied and (.before.fields|length>0)' <<<"$c")" = true
check "the deadline is an audit record (interrupt, reason deadline, grace 60 s)" \
  test "$(jq -r 'select(.kind=="interrupt") | .reason + " " + (.grace_s|tostring)' "$W/deadline.jsonl")" = "deadline 60"
check "the automatic rollback read it back (uncertain) and undid it" \
  test "$(jq -c 'select(.kind=="result" and .prim=="kube_undo") | [.status, .summary.uncertain]' "$W/deadline.jsonl")" = '["ok",true]'
check "report: rollback done" test "$(rep deadline '.execution_trace[0].rollback')" = done
check "report: stopped by the deadline (refused), human intervention required" \
  test "$(rep deadline '.outcome + " " + .stopped_reason + " " + (.human_intervention_required|tostring)')" = "refused run deadline of 2s exceeded true"
check "report: the canceled call is in the step's calls, with may_have_applied" \
  test "$(rep deadline '.execution_trace[0].calls[] | select(.prim=="kube_patch") | [.status, .may_have_applied, .error.code] | @tsv')" = "$(printf 'canceled\ttrue\ttimeout')"
sleep 3 # the stand-in's late answer to the PATCH goes to nobody
check "read back afterwards: the ConfigMap holds its before-state" test "$(maxconn)" = "$before"
check "exactly two PATCHes reached the stand-in: the write and the undo" \
  test "$(jq -c "select(.method==\"PATCH\" and .path==\"$CM\")" "$KUBE_STANDIN_LOG" | wc -l)" = 2
check "chain verifies; the run ended (run_end)" verified deadline
check "verify does not call it unfinished" bash -c "! grep -q unfinished '$W/deadline.verify'"
check "audit show: the run ended (refused), not UNFINISHED" \
  bash -c "'$RBL' audit show '$W/deadline.jsonl' | grep -q 'outcome: refused' && ! '$RBL' audit show '$W/deadline.jsonl' | grep -q UNFINISHED"
head -n 3 "$W/deadline.jsonl" >"$W/crashed.jsonl" # the same run cut short: a crash
check "audit show tells a crashed run (no run_end) apart: UNFINISHED" bash -c "'$RBL' audit show '$W/crashed.jsonl' | grep -q UNFINISHED"
check "audit verify says the crashed run is unfinished (exit 0)" bash -c "'$RBL' audit verify '$W/crashed.jsonl' 2>&1 | grep -q unfinished"
n=$(wc -l <"$KUBE_STANDIN_LOG")
"$RBL" rollback "$W/deadline.jsonl" --config "$W/config.lua" >"$W/rbdl.out" 2>&1
RC=$?
expect_rc 0 "rbl rollback after the automatic one" rbdl
check "rbl rollback sent no write (already undone)" test "$(tail -n +$((n + 1)) "$KUBE_STANDIN_LOG" | jq -c 'select(.method!="GET")' | wc -l)" = 0
check "the ConfigMap still holds its before-state" test "$(maxconn)" = "$before"
kube_standin_stop

echo "# run deadline, the PATCH hung (never applied): read back, nothing undone"
start --fail "PATCH $CM hang 1"
before=$(maxconn)
run hung patch.lua --config "$W/deadline.lua" --param timeout=30
expect_rc 3 "hung write past the run deadline" hung
check "canceled, may_have_applied" test "$(canceled hung kube_patch | jq -r '.status + " " + (.may_have_applied|tostring)')" = "canceled true"
check "report: rollback not_needed (read back: not applied)" test "$(rep hung '.execution_trace[0].rollback')" = not_needed
check "no inverse PATCH was sent" test "$(jq -c 'select(.method=="PATCH")' "$KUBE_STANDIN_LOG" | wc -l)" = 1
check "read back afterwards: the ConfigMap is unchanged" test "$(maxconn)" = "$before"
check "chain verifies" verified hung
kube_standin_stop

echo "# limits.rollback_grace = 0: the deadline stops the run at once; rbl rollback undoes it"
start --answer-delay-ms "PATCH $CM:4000,1"
before=$(maxconn)
run nograce patch.lua --config "$W/nograce.lua" --param timeout=30
expect_rc 3 "run past its deadline: exit 3" nograce
c=$(canceled nograce kube_patch)
check "result canceled, code killed, naming the deadline" \
  bash -c "jq -r '.error.code + \" \" + .error.message' <<<'$c' | grep -q '^killed run deadline'"
check "report: rollback unknown (stopped before rollback)" test "$(rep nograce '.execution_trace[0].rollback')" = unknown
check "report: the canceled call is listed (killed, may_have_applied)" \
  test "$(rep nograce '.execution_trace[0].calls[] | select(.prim=="kube_patch") | .status + " " + .error.code + " " + (.may_have_applied|tostring)')" = "canceled killed true"
sleep 4 # the stand-in applies the PATCH, then answers nobody
check "the write did take effect" test "$(maxconn)" = 777
check "chain verifies" verified nograce
"$RBL" rollback "$W/nograce.jsonl" --config "$W/config.lua" --report "$W/rbdl.report.json" >"$W/rbng.out" 2>&1
RC=$?
expect_rc 0 "rbl rollback of the canceled write" rbng
check "rbl rollback restored the before-state" test "$(maxconn)" = "$before"
check "rbl rollback report: done" test "$(jq -r '.execution_trace[0].rollback' "$W/rbdl.report.json")" = done
"$RBL" rollback "$W/nograce.jsonl" --config "$W/config.lua" >"$W/rbdl2.out" 2>&1
RC=$?
expect_rc 0 "second rbl rollback" rbdl2
check "second rbl rollback: nothing to undo" grep -q "nothing to undo" "$W/rbdl2.out"
kube_standin_stop

echo "# a hung write: rbl rollback reads back, finds it not applied, sends nothing"
start --fail "PATCH $CM hang 1"
run hung2 patch.lua --config "$W/nograce.lua" --param timeout=30
expect_rc 3 "hung write past the run deadline" hung2
n=$(wc -l <"$KUBE_STANDIN_LOG")
"$RBL" rollback "$W/hung2.jsonl" --config "$W/config.lua" --report "$W/rbh.report.json" >"$W/rbh.out" 2>&1
RC=$?
expect_rc 0 "rbl rollback" rbh
check "rbl rollback report: not_needed" test "$(jq -r '.execution_trace[0].rollback' "$W/rbh.report.json")" = not_needed
check "rbl rollback sent no write" test "$(tail -n +$((n + 1)) "$KUBE_STANDIN_LOG" | jq -c 'select(.method!="GET")' | wc -l)" = 0
kube_standin_stop

echo "# scale and rollout_restart canceled by the run deadline after they took effect"
start --answer-delay-ms "PATCH $DEP/scale:4000,1" --answer-delay-ms "PATCH $DEP:4000,1"
r0=$(replicas)
run dlscale scale30.lua --config "$W/deadline.lua"
expect_rc 3 "scale past the run deadline" dlscale
check "scale: canceled by the deadline, may_have_applied" \
  test "$(canceled dlscale kube.scale | jq -r '.error.code + " " + (.may_have_applied|tostring)')" = "timeout true"
check "scale: rollback done; read back afterwards: replicas $r0" test "$(rep dlscale '.execution_trace[0].rollback') $(replicas)" = "done $r0"
check "scale: the canceled call is in the report" \
  test "$(rep dlscale '[.execution_trace[0].calls[] | select(.prim=="kube.scale") | .status] | join(",")')" = canceled
g0=$(kc get deploy api -n prod-tenant-7 -o jsonpath='{.metadata.generation}')
run dlrestart restart30.lua --config "$W/deadline.lua"
expect_rc 3 "rollout restart past the run deadline" dlrestart
check "restart: canceled, before-state recorded" \
  test "$(canceled dlrestart kube.rollout_restart | jq -r '.may_have_applied and (.before|type=="object")')" = true
check "restart: rollback not_needed (a restart is not undone by another)" \
  test "$(rep dlrestart '.execution_trace[0].rollback')" = not_needed
sleep 3.5 # the stand-in logs a request once answered
check "restart: exactly one restart PATCH, none from rollback" test "$(jq -c "select(.method==\"PATCH\" and .path==\"$DEP\")" "$KUBE_STANDIN_LOG" | wc -l)" = 1
check "restart: read back afterwards, the restart took effect (generation $g0 -> $((g0 + 1)))" \
  test "$(kc get deploy api -n prod-tenant-7 -o jsonpath='{.metadata.generation}')" = "$((g0 + 1))"
for ch in dlscale dlrestart; do check "chain $ch verifies" verified $ch; done
kube_standin_stop

echo "# scale and rollout_restart canceled after they took effect"
start --answer-delay-ms "PATCH $DEP/scale:4000,1" --answer-delay-ms "PATCH $DEP:4000,1" --answer-delay-ms "PATCH $CM:4000,1"
r0=$(replicas)
run scale scale.lua
expect_rc 1 "canceled scale" scale
check "scale: canceled, may_have_applied" test "$(canceled scale kube.scale | jq -r .may_have_applied)" = true
check "scale: rollback done, replicas back to $r0" test "$(rep scale '.execution_trace[0].rollback') $(replicas)" = "done $r0"
run restart restart.lua
expect_rc 1 "canceled rollout restart" restart
check "restart: canceled, before-state recorded" \
  test "$(canceled restart kube.rollout_restart | jq -r '.may_have_applied and (.before|type=="object")')" = true
check "restart: rollback not_needed (a restart is not undone by another)" \
  test "$(rep restart '.execution_trace[0].rollback')" = not_needed
sleep 3.5 # the stand-in logs a request once answered
check "restart: exactly one restart PATCH, no second one from rollback" test "$(jq -c "select(.method==\"PATCH\" and .path==\"$DEP\")" "$KUBE_STANDIN_LOG" | wc -l)" = 1
run norb norollback.lua
expect_rc 1 "canceled write in a step without rollback" norb
check "no rollback declared, change may be applied: rollback failed, human needed" \
  test "$(rep norb '.execution_trace[0].rollback') $(rep norb .human_intervention_required)" = "failed true"
for ch in scale restart norb; do check "chain $ch verifies" verified $ch; done
kube_standin_stop

echo "# a pod delete canceled in flight: its before-state, and rbl rollback names it as not undoable"
POD=/api/v1/namespaces/prod-tenant-7/pods/api-7d9f8-abcde
start --answer-delay-ms "DELETE $POD:4000,1"
uid=$(kc get pod api-7d9f8-abcde -n prod-tenant-7 -o jsonpath='{.metadata.uid}')
run delpod delete.lua
expect_rc 1 "canceled delete: the run fails" delpod
c=$(canceled delpod kube.delete)
check "delete: canceled, may_have_applied, the pod's uid and owner as before-state" \
  test "$(jq -r '[.may_have_applied, .before.uid, .before.kind] | map(tostring) | join(" ")' <<<"$c")" = "true $uid Pod"
check "delete: report lists the canceled call" \
  test "$(rep delpod '.execution_trace[0].calls[] | select(.prim=="kube.delete") | .status')" = canceled
"$RBL" rollback "$W/delpod.jsonl" --config "$W/config.lua" >"$W/rbdel.out" 2>&1
RC=$?
expect_rc 0 "rbl rollback of the chain" rbdel
check "rbl rollback says it cannot undo the canceled delete (not silently skipped)" \
  grep -q "kube.delete pods api-7d9f8-abcde in prod-tenant-7 (run .*): canceled in flight, it may have been applied, and rbl cannot undo kube.delete" "$W/rbdel.out"
check "chain delpod verifies" verified delpod
run toplevel toplevel.lua
expect_rc 1 "a top-level write, then an error: the run fails" toplevel
check "top level: rollback failed (never rolled back), human needed, the write applied" \
  test "$(rep toplevel '.execution_trace[0].rollback') $(rep toplevel .human_intervention_required) $(maxconn)" = "failed true 444"
run topread topread.lua
expect_rc 1 "a top-level read, then an error: the run fails" topread
check "top level without a write: no rollback field, no human needed" \
  test "$(rep topread '.execution_trace[0].rollback') $(rep topread .human_intervention_required)" = "null false"
for ch in toplevel topread; do check "chain $ch verifies" verified $ch; done
kube_standin_stop

rbl_test_done
