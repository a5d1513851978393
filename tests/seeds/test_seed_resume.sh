#!/usr/bin/env bash
# The db-connection-exhaustion seed runbook against the Kubernetes API stand-in, for what issue 14
# asks of partial runs: a run whose restart fails (rolled back) is resumed with
# `rbl run --resume` and resolves; the run after it finds the remediation in place and ends
# resolved with nothing_to_do and no write; a step with `retry` rides out two 503s of the API.
set -euo pipefail
RBL=$(realpath "${1:-build/rbl}")
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
source "$ROOT/tests/kube/lib.sh"
kube_ensure_deps
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
fails=0
check() { if eval "$2"; then echo "ok    $1"; else echo "FAIL  $1"; fails=$((fails + 1)); fi; }
kube_mkcerts "$W/certs"
cm_value() { curl -s --cacert "$W/certs/ca.crt" -H "Authorization: Bearer tok-seed" \
  "$KUBE_STANDIN_URL/api/v1/namespaces/prod-tenant-7/configmaps/db-pool-config" | jq -r .data.max_connections; }
writes() { kube_log_requests '.method=="PATCH" or .method=="POST" or .method=="PUT" or .method=="DELETE"' | grep -cv selfsubject || true; }

# one restart failure, then the API answers again
kube_standin_start --fixtures "$ROOT/tests/kube/fixtures/basic.yaml" --tls-cert "$W/certs/server.crt" \
  --tls-key "$W/certs/server.key" --token "tok-seed=rbl-runner:rbl" \
  --fail 'PATCH /apis/apps/v1/namespaces/prod-tenant-7/deployments/api 500 1'
kube_write_kubeconfig "$W/kc" "$KUBE_STANDIN_URL" --ca "$W/certs/ca.crt" --token tok-seed
export KUBECONFIG="$W/kc"
SEED="$ROOT/runbooks/db-connection-exhaustion.lua"

set +e
"$RBL" run "$SEED" --tenant prod-tenant-7 --incident INC-RESUME --audit "$W/chain.jsonl" \
  --report "$W/first.json" >"$W/first.out" 2>&1
echo $? >"$W/first.rc"
set -e
check "first run: the restart fails, exit 1" '[ "$(cat "$W/first.rc")" = 1 ] || { cat "$W/first.out"; false; }'
check "first run: the patch was rolled back (250)" '[ "$(cm_value)" = 250 ]'
first_run=$(jq -r .run_id "$W/first.json")

set +e
"$RBL" run --resume "$W/chain.jsonl" --report "$W/resume.json" >"$W/resume.out" 2>&1
echo $? >"$W/resume.rc"
set -e
check "resume: exit 0" '[ "$(cat "$W/resume.rc")" = 0 ] || { cat "$W/resume.out"; false; }'
check "resume: continues from the rolled-back remediate_config" \
  '[ "$(jq -r .resumes.from "$W/resume.json")" = remediate_config ]'
check "resume: names the run it resumes" '[ "$(jq -r .resumes.run "$W/resume.json")" = "$first_run" ]'
check "resume: the read-only steps ran again (ctx rebuilt)" \
  '[ "$(jq -r "[.execution_trace[] | select(.step > 0) | .status] | join(\",\")" "$W/resume.json")" = success,success,success,success ]'
check "resume: ConfigMap patched to 500" '[ "$(cm_value)" = 500 ]'
check "resume: appended to the same chain, linked" \
  '[ "$(jq -s -r "[.[] | select(.kind == \"run_start\")] | .[1].resumes.run" "$W/chain.jsonl")" = "$first_run" ]'
check "resume: same incident" '[ "$(jq -r .incident_id "$W/resume.json")" = INC-RESUME ]'
check "chain verifies" '"$RBL" audit verify "$W/chain.jsonl" >/dev/null'

before=$(writes)
set +e
"$RBL" run "$SEED" --tenant prod-tenant-7 --incident INC-AGAIN --audit "$W/again.jsonl" \
  --report "$W/again.json" >"$W/again.out" 2>&1
echo $? >"$W/again.rc"
set -e
check "already in place: exit 0" '[ "$(cat "$W/again.rc")" = 0 ] || { cat "$W/again.out"; false; }'
check "already in place: resolved, nothing_to_do, no human" \
  '[ "$(jq -r "[.outcome, .nothing_to_do, .human_intervention_required] | map(tostring) | join(\",\")" "$W/again.json")" = resolved,true,false ]'
check "already in place: remediate and restart skipped by when" \
  '[ "$(jq -r "[.execution_trace[] | select(.step > 2) | .status] | join(\",\")" "$W/again.json")" = skipped,skipped ]'
check "already in place: no write reached the API" '[ "$(writes)" = "$before" ]'
kube_standin_stop

# retry: two 503s on the ConfigMap patch, then success
kube_standin_start --fixtures "$ROOT/tests/kube/fixtures/basic.yaml" --tls-cert "$W/certs/server.crt" \
  --tls-key "$W/certs/server.key" --token "tok-seed=rbl-runner:rbl" \
  --fail 'PATCH /api/v1/namespaces/prod-tenant-7/configmaps/db-pool-config 503 2'
kube_write_kubeconfig "$W/kc" "$KUBE_STANDIN_URL" --ca "$W/certs/ca.crt" --token tok-seed
cat >"$W/retry.lua" <<'LUA'
runbook { id = "retry-patch" }
step "patch" {
  retry = { attempts = 3, backoff = 0.1 },
  run = function() kube_patch("configmap", "db-pool-config", { data = { max_connections = "500" } }) end,
  verify = function() return kube.get("configmap", "db-pool-config").data.max_connections == "500" end,
}
LUA
set +e
"$RBL" run "$W/retry.lua" --tenant prod-tenant-7 --incident INC-RETRY --audit "$W/retry.jsonl" \
  --report "$W/retry.json" >"$W/retry.out" 2>&1
echo $? >"$W/retry.rc"
set -e
check "retry: exit 0 after two 503s" '[ "$(cat "$W/retry.rc")" = 0 ] || { cat "$W/retry.out"; false; }'
check "retry: three attempts in the report" \
  '[ "$(jq -r "[.execution_trace[0].attempts[] | .status + \":\" + (.error_code // \"-\")] | join(\",\")" "$W/retry.json")" = "failed:unavailable,failed:unavailable,success:-" ]'
check "retry: two retrying records in the chain" \
  '[ "$(jq -s "[.[] | select(.kind == \"step\" and .status == \"retrying\")] | length" "$W/retry.jsonl")" = 2 ]'
check "retry: three PATCH requests reached the API" \
  '[ "$(kube_log_requests ".method==\"PATCH\"" | grep -c configmaps/db-pool-config)" = 3 ]'
check "retry: ConfigMap is 500" '[ "$(cm_value)" = 500 ]'
check "retry chain verifies" '"$RBL" audit verify "$W/retry.jsonl" >/dev/null'
kube_standin_stop
echo "seed resume: $fails failed"
exit $((fails > 0))
