#!/usr/bin/env bash
# The db-connection-exhaustion seed runbook end to end against the Kubernetes API stand-in and
# the real Terraform state: the drift comes out as the seed says (max_connections expected 500,
# actual 250, critical), the ConfigMap is patched and the API restarted; when the restart
# fails, the patch is rolled back automatically to the recorded before-state.
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

run_seed() { # name, extra stand-in options...
  local name=$1; shift
  kube_standin_start --fixtures "$ROOT/tests/kube/fixtures/basic.yaml" --tls-cert "$W/certs/server.crt" \
    --tls-key "$W/certs/server.key" --token "tok-seed=rbl-runner:rbl" "$@"
  kube_write_kubeconfig "$W/kc-$name" "$KUBE_STANDIN_URL" --ca "$W/certs/ca.crt" --token tok-seed
  set +e
  KUBECONFIG="$W/kc-$name" "$RBL" run "$ROOT/runbooks/db-connection-exhaustion.lua" --tenant prod-tenant-7 \
    --incident "INC-SEED-$name" --audit "$W/$name.jsonl" --report "$W/$name.json" >"$W/$name.out" 2>&1
  echo $? >"$W/$name.rc"
  set -e
}

run_seed ok
check "resolved: exit 0" '[ "$(cat "$W/ok.rc")" = 0 ] || { cat "$W/ok.out"; false; }'
check "the seed's drift, exactly" 'jq -e "[.execution_trace[0].drift_detected[] | select(.field == \"max_connections\")] == [{\"field\":\"max_connections\",\"expected\":500,\"actual\":\"250\",\"severity\":\"critical\"}]" "$W/ok.json" >/dev/null'
check "ConfigMap patched to 500" '[ "$(cm_value)" = 500 ]'
check "API rollout restarted" '[ "$(kube_log_requests ".method==\"PATCH\"" | grep -c deployments/api)" -ge 1 ]'
check "every step succeeded" '[ "$(jq -r "[.execution_trace[].status] | unique | join(\",\")" "$W/ok.json")" = success ]'
check "chain verifies" '"$RBL" audit verify "$W/ok.jsonl" >/dev/null'
kube_standin_stop

run_seed rollback --fail 'PATCH /apis/apps/v1/namespaces/prod-tenant-7/deployments/api 500'
check "restart failure: exit 1" '[ "$(cat "$W/rollback.rc")" = 1 ]'
check "patch rolled back to the before-state (250)" '[ "$(cm_value)" = 250 ]'
check "remediate_config reported rolled_back" '[ "$(jq -r ".execution_trace[2].status" "$W/rollback.json")" = rolled_back ]'
check "restart_api reported failed" '[ "$(jq -r ".execution_trace[3].status" "$W/rollback.json")" = failed ]'
check "chain verifies after the rollback" '"$RBL" audit verify "$W/rollback.jsonl" >/dev/null'
echo "db seed: $fails failed"
exit $((fails > 0))
