#!/usr/bin/env bash
# kube.wait, kube.rollout_status and the incident verbs (kube.logs, kube.events, kube.delete,
# kube.rollout_undo) end to end: the real `rbl run` / `rbl rollback` against the API stand-in,
# rollouts taking time (--rollout-ms). Checks exit codes, error codes and messages, object state
# (read back with kubectl), the stand-in's request log and every audit chain.
# usage: verbs_tests.sh path/to/rbl      (KEEP=1 keeps the work directory)
set -uo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
RB=$HERE/verbs
ROOT=$HERE/../../../..
# shellcheck source=../../../../tests/lib/common.sh
source "$ROOT/tests/lib/common.sh"
rbl_test_init kube-verbs "${1:-}"
# shellcheck source=../../../../tests/kube/lib.sh
source "$ROOT/tests/kube/lib.sh"
kube_ensure_deps || exit 1

CHAINS=()
show() { sed 's/^/    # /' "$1" | tail -n 15; }

kube_mkcerts "$W/pki" >/dev/null 2>&1 || { echo "cannot make test certificates"; exit 1; }
start() {
  kube_standin_start --fixtures "$ROOT/tests/kube/fixtures/basic.yaml" --fixtures "$ROOT/tests/kube/fixtures/incident.yaml" \
    --tls-cert "$W/pki/server.crt" --tls-key "$W/pki/server.key" --token t0k=alice:sre "$@" || exit 1
  KC=$W/kc-$KUBE_STANDIN_PORT
  kube_write_kubeconfig "$KC" "$KUBE_STANDIN_URL" --ca "$W/pki/ca.crt" --token t0k
  export KUBECONFIG=$KC
}
kc() { kubectl --kubeconfig "$KC" "$@"; }
cat >"$W/config.lua" <<'CFG'
return { tenants = { ["prod-tenant-7"] = {}, ["prod-tenant-8"] = {} }, kube = { timeout = 5 } }
CFG
run() { # run NAME RUNBOOK [rbl run options...]: RC, $W/NAME.out, .report.json, .jsonl
  local name=$1 rb=$2
  shift 2
  "$RBL" run "$RB/$rb" --tenant prod-tenant-7 --incident "$name" --config "$W/config.lua" \
    --audit "$W/$name.jsonl" --report "$W/$name.report.json" "$@" >"$W/$name.out" 2>&1
  RC=$?
  CHAINS+=("$W/$name.jsonl")
}
expect_rc() { if [ "$RC" = "$1" ]; then ok "$2 (exit $RC)"; else bad "$2: exit $RC, want $1"; show "$W/$3.out"; fi; }
has() { grep -qF -- "$2" "$W/$1.out" || { echo "    # $1.out lacks: $2"; show "$W/$1.out"; return 1; }; }
lines() { wc -l <"$KUBE_STANDIN_LOG"; }
newreq() { tail -n +"$(($1 + 1))" "$KUBE_STANDIN_LOG" | jq -c "select($2)" | wc -l; }
failure_code() { jq -r '[.. | objects | select(has("error_code")) | .error_code][0] // empty' "$W/$1.report.json"; }
result_of() { # result_of NAME PRIM: the summary of the last ok result of PRIM on the chain
  jq -c --arg p "$2" 'select(.kind=="result" and .prim==$p and .status=="ok") | .summary' "$W/$1.jsonl" | tail -1
}
env_level() { kc get deploy api -n prod-tenant-7 -o json | jq -r '.spec.template.spec.containers[0].env[] | select(.name=="LOG_LEVEL") | .value'; }

echo "# kube.wait and kube.rollout_status follow a rollout that takes time"
start --rollout-ms 150
n=$(lines)
run waits waits.lua
expect_rc 0 "rollout followed to the end; conditions, jsonpath, functions" waits
check "the rollout was polled more than once (it took time)" \
  test "$(newreq "$n" '.method=="GET" and .path=="/apis/apps/v1/namespaces/prod-tenant-7/deployments/api"')" -ge 4
check "rollout_status result: done at revision 2" \
  test "$(result_of waits kube.rollout_status | jq -r '[.done, .revision, (.polls > 1)] | map(tostring) | join(",")')" = "true,2,true"
check "kube.wait intent names the condition" \
  grep -q '"kind":"intent".*"prim":"kube.wait".*"condition":"condition=Available=True"' "$W/waits.jsonl"
check "kubectl agrees: revision 2 rolled out" test "$(kc get deploy api -n prod-tenant-7 -o jsonpath='{.metadata.annotations.deployment\.kubernetes\.io/revision}')" = 2

for c in condition rollout deadline missing; do
  run "timeout-$c" wait_timeout.lua --param what=$c
  expect_rc 1 "kube.wait/rollout_status that cannot succeed ($c) fails the step" "timeout-$c"
done
check "a condition never met: code timeout" test "$(failure_code timeout-condition)" = timeout
check "... and says what it last saw" has timeout-condition "not met within 1 s"
check "... the Progressing condition it last saw" has timeout-condition "Progressing=True"
check "a rollout that does not progress: code timeout" test "$(failure_code timeout-rollout)" = timeout
check "... naming the rollout's state" has timeout-rollout "0 out of 2 new replicas have been updated"
check "a rollout past its progress deadline: code failed, not a wait for the timeout" test "$(failure_code timeout-deadline)" = failed
check "... named as the deadline" has timeout-deadline "exceeded its progress deadline"
check "waiting for a pod that does not exist: not_found" test "$(failure_code timeout-missing)" = not_found
kube_standin_stop

echo "# kube.logs, kube.events, kube.rollout_undo, kube.delete"
start --rollout-ms 100
n=$(lines)
run verbs verbs.lua
expect_rc 0 "the incident verbs" verbs
check "logs read through the pods/log subresource with tailLines, sinceSeconds, previous, limitBytes" \
  test "$(newreq "$n" '(.path=="/api/v1/namespaces/prod-tenant-7/pods/batch-1/log") and (.query|test("limitBytes="))')" -ge 6
check "events listed in the tenant's namespace with an involvedObject field selector" \
  test "$(newreq "$n" '.path=="/api/v1/namespaces/prod-tenant-7/events" and (.query|test("fieldSelector=involvedObject.kind%3DPod%2CinvolvedObject.name%3Dbatch-1"))')" -ge 1
check "rollout_undo sent one JSON patch of the Deployment" \
  test "$(newreq "$n" '.method=="PATCH" and .content_type=="application/json-patch+json" and .path=="/apis/apps/v1/namespaces/prod-tenant-7/deployments/api"')" = 1
check "the delete carried the pod's uid as a precondition" \
  test "$(newreq "$n" '.method=="DELETE" and (.body|fromjson|.preconditions.uid|length) == 36')" = 1
check "kube.delete's intent and result say irreversible" \
  bash -c "grep '\"prim\":\"kube.delete\"' '$W/verbs.jsonl' | grep '\"kind\":\"intent\"' | grep -q '\"irreversible\":true' &&
           test \"\$(jq -r 'select(.kind==\"result\" and .prim==\"kube.delete\") | .summary.irreversible' '$W/verbs.jsonl')\" = true"
check "rollout_undo recorded a before-state (reversible)" \
  test "$(jq -c 'select(.kind=="result" and .prim=="kube.rollout_undo" and .status=="ok") | .before.fields | map(.path)' "$W/verbs.jsonl")" = '["/spec/template"]'
check "nothing was ever sent to prod-tenant-8" test "$(newreq 0 '(.path|test("prod-tenant-8"))')" = 0
check "kubectl agrees: LOG_LEVEL is info again after the undo" test "$(env_level)" = info

echo "# rbl rollback: undoes the rollout undo, lists what it cannot undo"
"$RBL" rollback "$W/verbs.jsonl" --config "$W/config.lua" >"$W/rb.out" 2>&1
RC=$?
expect_rc 0 "rbl rollback of the verbs run" rb
check "both reversible changes undone, newest first (the rollout undo, then the patch before it)" \
  test "$(grep -cE '^\[[12]\] undo (kube.rollout_undo|kube_patch) deployments.apps api .* success' "$W/rb.out")" = 2
check "the Deployment is as before the run (LOG_LEVEL info), though its controller wrote its status meanwhile" \
  test "$(env_level)" = info
check "rollback warns about the deleted pod" has rb "cannot undo"
check "... naming it" has rb "kube.delete pods"
check "the warning is on the chain" grep -q '"kind":"warning".*cannot undo' "$W/verbs.jsonl"
"$RBL" rollback "$W/verbs.jsonl" --config "$W/config.lua" >"$W/rb2.out" 2>&1
RC=$?
expect_rc 0 "a second rbl rollback" rb2
check "... still lists the deleted pod it cannot undo" has rb2 "kube.delete pods"
CHAINS+=("$W/verbs.jsonl")
kube_standin_stop

echo "# rollback = auto after a rollout undo"
start
kc set env deploy/api -n prod-tenant-7 LOG_LEVEL=warn >/dev/null
run undo undo_fail.lua
expect_rc 1 "a step that undoes a rollout, then fails" undo
check "auto rollback put the undone template back (warn)" test "$(env_level)" = warn
check "report: the step's rollback is done" test "$(jq -r '.execution_trace[0].rollback' "$W/undo.report.json")" = done

echo "# tenant scope: refused before any request"
for w in logs_other_ns events_other_ns delete_other_ns undo_other_ns wait_other_ns status_other_ns logs_traversal events_traversal \
  events_field_other_ns; do
  n=$(lines)
  run "scope-$w" scope.lua --param "what=$w"
  if [ "$RC" = 3 ] && [ "$(newreq "$n" '(.path|test("prod-tenant-8")) or .method!="GET"')" = 0 ] &&
    grep -q '"kind":"refused"' "$W/scope-$w.jsonl"; then
    ok "refused $w (exit 3, audited, nothing sent)"
  else
    bad "scope $w: exit $RC"
    show "$W/scope-$w.out"
  fi
done
kube_standin_stop

echo "# audit chains"
for c in "${CHAINS[@]}"; do
  [ -f "$c" ] || continue
  if "$RBL" audit verify "$c" >/dev/null 2>&1; then ok "audit verify $(basename "$c")"; else bad "audit verify $(basename "$c")"; fi
done
rbl_test_done
