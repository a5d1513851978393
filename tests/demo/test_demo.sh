#!/usr/bin/env bash
# "Trying it locally" works as the README says: its first runbook sample is runbooks/quickstart.lua
# byte for byte and resolves against the shipped Terraform state; scripts/standin.sh gives a
# working KUBECONFIG (TLS + token); scripts/demo.sh runs the seed scenario against the dockerd
# and a stand-in of its own, then verify, show and rollback, and ends with what to try next.
# usage: test_demo.sh path/to/rbl
set -uo pipefail
RBL=$(realpath "${1:?usage: test_demo.sh path/to/rbl}")
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
W=$(mktemp -d /tmp/rbl-demo-test.XXXXXX)
fails=0
check() { if eval "$2"; then echo "ok    $1"; else echo "FAIL  $1"; fails=$((fails + 1)); fi; }
cleanup() { bash "$ROOT/scripts/standin.sh" stop --dir "$W/sd" >/dev/null 2>&1; rm -rf "$W"; }
trap cleanup EXIT

# the README's first lua block is the shipped quickstart
awk '/^```lua$/{f=1;next} f&&/^```$/{exit} f' "$ROOT/README.md" >"$W/readme.lua"
check "README's first runbook sample is runbooks/quickstart.lua" 'cmp -s "$W/readme.lua" "$ROOT/runbooks/quickstart.lua"'

out=$(bash "$ROOT/scripts/standin.sh" start --dir "$W/sd" 2>"$W/sd.err")
check "standin.sh prints exactly one export KUBECONFIG= line" '[ "$out" = "export KUBECONFIG=$W/sd/kubeconfig" ]'
check "the kubeconfig is 0600" '[ "$(stat -c %a "$W/sd/kubeconfig")" = 600 ]'
check "TLS and a token" 'grep -q "server: https://" "$W/sd/kubeconfig" && grep -q "token: [0-9a-f]\{32\}" "$W/sd/kubeconfig"'
eval "$out"
# the README's quick start: the dry run prints the plan it shows
"$RBL" run "$ROOT/runbooks/quickstart.lua" --tenant prod-tenant-7 --incident QS-0 --audit "$W/qs0.jsonl" \
  --dry-run --plan-out "$W/plan.json" >"$W/qs0.out" 2>&1
rc=$?
check "quick start 1: the dry run resolves and writes the plan" '[ $rc = 0 ] && [ -s "$W/plan.json" ] || { cat "$W/qs0.out"; false; }'
while IFS= read -r line; do
  check "quick start 1: the plan on stderr as the README shows it: ${line# }" 'grep -qxF -- "$line" "$W/qs0.out"'
done < <(sed -n '/^# 1\. the plan/,/^# 2\./p' "$ROOT/README.md" | grep '^#    ' | grep -v '^#    \.\.\.' | sed 's/^#    //')
"$RBL" run "$ROOT/runbooks/quickstart.lua" --tenant prod-tenant-7 --incident QS-1 --audit "$W/qs.jsonl" \
  --report "$W/qs.json" >"$W/qs.out" 2>&1
rc=$?
check "quickstart resolves against the stand-in (exit 0)" '[ $rc = 0 ] || { cat "$W/qs.out"; false; }'
check "quickstart found the seed's drift from the shipped state" \
  'jq -e "[.execution_trace[0].drift_detected[] | select(.field == \"max_connections\" and .expected == 500)] | length == 1" "$W/qs.json" >/dev/null'
# quick start 2: the plan made before that run no longer holds: exit 1, nothing written, and the
# run is named by the runbook's declared id although it stopped before its runbook{} ran
"$RBL" run "$ROOT/runbooks/quickstart.lua" --tenant prod-tenant-7 --plan "$W/plan.json" --audit "$W/qs2.jsonl" \
  --report "$W/qs2.json" >"$W/qs2.out" 2>&1
rc=$?
check "quick start 2: a stale plan is refused (exit 1, nothing written)" \
  '[ $rc = 1 ] && grep -q "the plan no longer holds; nothing was written" "$W/qs2.out" || { cat "$W/qs2.out"; false; }'
check "quick start 2: no intent of a write on its chain" '! jq -e "select(.kind == \"intent\" and .write == true)" "$W/qs2.jsonl" | grep -q .'
check "quick start 2: the chain and the report name the declared runbook id" \
  '[ "$(head -1 "$W/qs2.jsonl" | jq -r .runbook.id)" = db-connection-exhaustion ] && [ "$(jq -r .runbook_id "$W/qs2.json")" = db-connection-exhaustion ]'
check "no token without the kubeconfig's: a wrong token is refused by the stand-in" \
  'sed "s/token: .*/token: wrong/" "$W/sd/kubeconfig" >"$W/bad.kc"; ! KUBECONFIG="$W/bad.kc" "$RBL" run "$ROOT/runbooks/quickstart.lua" --tenant prod-tenant-7 --audit "$W/bad.jsonl" >/dev/null 2>&1'
bash "$ROOT/scripts/standin.sh" stop --dir "$W/sd" 2>/dev/null
check "standin.sh stop: stopped" '! bash "$ROOT/scripts/standin.sh" status --dir "$W/sd" >/dev/null'

# the demo, twice at once: unique names per run, so neither sees the other's containers
RBL=$RBL bash "$ROOT/scripts/demo.sh" --no-setup "$W/d1" >"$W/d1.out" 2>&1 &
p1=$!
RBL=$RBL bash "$ROOT/scripts/demo.sh" --no-setup "$W/d2" >"$W/d2.out" 2>&1
rc2=$?
wait $p1
rc1=$?
check "demo resolves (exit 0), twice at once" '[ $rc1 = 0 ] && [ $rc2 = 0 ] || { tail -40 "$W/d1.out" "$W/d2.out"; false; }'
for d in d1 d2; do
  check "$d: every step succeeded" '[ "$(jq -r "[.execution_trace[].status] | unique | join(\",\")" "$W/$d/report.json")" = success ]'
  check "$d: found exactly its own two containers" 'grep -c "log: container /rbl-demo-" "$W/$d.out" | grep -qx 2'
  check "$d: drift detected against Terraform state" 'grep -q "max_connections expected 500, actual 250 (critical)" "$W/$d.out"'
  check "$d: ConfigMap patched, rollout restarted, containers restarted" \
    'grep -q "kube_patch ConfigMap/db-pool-config" "$W/$d.out" && grep -q "kube.rollout_restart Deployment/api" "$W/$d.out" && [ "$(grep -c "docker.restart" "$W/$d.out")" -ge 2 ]'
  check "$d: audit show: the patch before -> after, the restarts by container name" \
    'grep -q "/data/max_connections \"250\" -> \"500\"" "$W/$d.out" && grep -q "docker.restart rbl-demo-[0-9-]*-api-1 (" "$W/$d.out"'
  check "$d: audit show: the rollback with what it restored" \
    'grep -q "kube_undo ConfigMap/db-pool-config ns=prod-tenant-7 \[prod-tenant-7\]  ok [0-9]*ms  restored" "$W/$d.out"'
  check "$d: audit show: outcome with its exit code" 'grep -q "outcome: resolved (exit 0)" "$W/$d.out"'
  check "$d: isolation scored" 'jq -e ".execution_trace[] | select(.name == \"score_isolation\") | .isolation.score >= 0" "$W/$d/report.json" >/dev/null'
  check "$d: rollback restored the patch and the chain verifies" \
    'grep -q "undo kube_patch configmaps db-pool-config" "$W/$d.out" && grep -q "rollback exit status 0" "$W/$d.out" && "$RBL" audit verify "$W/$d/audit.jsonl" >/dev/null'
  check "$d: ends with what to try next" 'grep -q "== what to try next" "$W/$d.out" && tail -3 "$W/$d.out" | grep -q "rbl check"'
done
apps=$(sed -n 's/.*label rbl\.demo=\(rbl-demo-[0-9]*-[0-9]*\)).*/\1/p' "$W/d1.out" "$W/d2.out")
check "two distinct container labels, one per demo" '[ "$(sort -u <<<"$apps" | wc -l)" = 2 ]'
left=0
for a in $apps; do left=$((left + $(docker ps -aq --filter "label=rbl.demo=$a" | wc -l))); done
check "the demos removed their containers" '[ $left = 0 ]'
echo "demo: $fails failed"
exit $((fails > 0))
