#!/usr/bin/env bash
# The seed's six steps end to end (runbooks/pool-saturation.lua) against the real dockerd, the
# Kubernetes API stand-in (RBAC on) and Debian's real prometheus + pushgateway, with a local
# Slack receiver: the runtimes detected, the 3 tenants in alert state found from the metric,
# their pool config compared with Terraform state and patched, isolation verified, the metric
# watched until it recovers (the recovered values are pushed while the watch runs), on-call told.
# Asserts the report's fields with their values, the objects, the receiver's payload and the chain.
# Names and the Docker tenant label key are unique to the run (a shared daemon).
set -uo pipefail
RBL=$(realpath "${1:-build/rbl}")
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
W=$(mktemp -d /tmp/rbl-pool-seed.XXXXXX)
RUN=p$(date +%s%N | tail -c 9)$$
KEY=rbl.test.$RUN
TENANTS=(prod-tenant-3 prod-tenant-7 prod-tenant-8 prod-tenant-9)
BG=()
# shellcheck source=../kube/lib.sh
source "$ROOT/tests/kube/lib.sh"
# shellcheck source=../../src/families/prom/tests/promenv.sh
source "$ROOT/src/families/prom/tests/promenv.sh"
cleanup() {
  for p in "${BG[@]}"; do kill "$p" 2>/dev/null; done
  prom_stop
  docker ps -aq --filter "label=$KEY" | xargs -r docker rm -f >/dev/null 2>&1
  [ -n "${KEEP:-}" ] || rm -rf "$W"
}
trap cleanup EXIT
fails=0
check() { if eval "$2"; then echo "ok    $1"; else echo "FAIL  $1"; fails=$((fails + 1)); fi; }

kube_ensure_deps || exit 1
bash "$ROOT/src/families/docker/tests/setup.sh" || { echo "docker setup failed"; exit 1; }
prom_start || exit 1
for t in "${TENANTS[@]}"; do
  docker run -d --name "rbl-$RUN-$t" --label "$KEY=$t" "${RBL_TEST_IMAGE:-rbl-test/busybox:1}" sleep 100000 >/dev/null
done
push pool prod-tenant-7 'db_connection_pool_saturation 0.97'
push pool prod-tenant-8 'db_connection_pool_saturation 0.95'
push pool prod-tenant-9 'db_connection_pool_saturation 0.93'
push pool prod-tenant-3 'db_connection_pool_saturation 0.31'
prom_wait 'db_connection_pool_saturation' 4 || exit 1

kube_mkcerts "$W/pki" >/dev/null 2>&1 || exit 1
kube_standin_start --fixtures "$ROOT/tests/seeds/pool/cluster.yaml" --tls-cert "$W/pki/server.crt" \
  --tls-key "$W/pki/server.key" --token "tok-$RUN=rbl-runner:sre" --authorization-mode RBAC || exit 1
kube_write_kubeconfig "$W/kc" "$KUBE_STANDIN_URL" --ca "$W/pki/ca.crt" --token "tok-$RUN"
export KUBECONFIG=$W/kc

python3 "$ROOT/src/families/notify/tests/receiver.py" --port-file "$W/recv.port" --log "$W/recv.jsonl" &
BG+=($!)
for _ in $(seq 100); do [ -s "$W/recv.port" ] && break; sleep 0.05; done
printf 'http://127.0.0.1:%s/slack/T0001/B0001/%s' "$(cat "$W/recv.port")" "$RUN" >"$W/slack_url"
chmod 600 "$W/slack_url"
{
  echo "return {"
  echo "  tenants = {"
  for t in "${TENANTS[@]}"; do echo "    [\"$t\"] = { namespaces = { \"$t\" } },"; done
  echo "  },"
  echo "  labels = { docker = \"$KEY\" },"
  echo "  kube = { timeout = 5 },"
  echo "  prom = { url = \"$PROM_URL\", timeout = 5 },"
  echo "  notify = { channels = { oncall = { type = \"slack\", webhook = \"SLACK_WEBHOOK_URL\" } } },"
  echo "  secrets = { SLACK_WEBHOOK_URL = \"$W/slack_url\" },"
  echo "}"
} >"$W/config.lua"

# The metric recovers while the watch runs: once the chain holds the three prom.watch intents.
(
  for _ in $(seq 600); do
    [ "$(grep -c '"kind":"intent".*"prim":"prom.watch"' "$W/run.jsonl" 2>/dev/null)" = 3 ] && break
    sleep 0.1
  done
  sleep 2
  push pool prod-tenant-7 'db_connection_pool_saturation 0.42'
  push pool prod-tenant-8 'db_connection_pool_saturation 0.38'
  push pool prod-tenant-9 'db_connection_pool_saturation 0.35'
  date +%s%N >"$W/pushed"
) &
BG+=($!)

"$RBL" run "$ROOT/runbooks/pool-saturation.lua" --tenant 'prod-tenant-*' --incident "INC-0847293-$RUN" \
  --config "$W/config.lua" --audit "$W/run.jsonl" --report "$W/report.json" \
  --param hold=2 --param interval=0.5 --param watch_timeout=60 >"$W/run.out" 2>&1
RC=$?
R=$W/report.json
step() { jq -c --arg n "$1" ".execution_trace[] | select(.name == \$n) | $2" "$R"; }

check "resolved: exit 0" '[ "$RC" = 0 ] || { tail -20 "$W/run.out"; false; }'
check "every step succeeded, in the seed's order" \
  '[ "$(jq -c "[.execution_trace[] | .name + \":\" + .status]" "$R")" = "[\"detect_runtime:success\",\"identify_tenants:success\",\"analyze_drift:success\",\"remediate_config:success\",\"verify_isolation:success\",\"watch_recovery:success\",\"notify_oncall:success\"]" ]'
check "report: tenants (the run's) = the four" \
  '[ "$(jq -c ".tenants | sort" "$R")" = "[\"prod-tenant-3\",\"prod-tenant-7\",\"prod-tenant-8\",\"prod-tenant-9\"]" ]'
check "detect_runtime: docker and kubernetes named with versions" \
  'grep -q "Runtime: docker [0-9].* at unix://.*; kubernetes v1.32.4 at https://127.0.0.1:" "$W/run.out"'
check "identify_tenants: tenants in alert state = 7, 8, 9" \
  '[ "$(step identify_tenants .tenants)" = "[\"prod-tenant-7\",\"prod-tenant-8\",\"prod-tenant-9\"]" ]'
check "identify_tenants: the seed's log line" \
  'grep -q "Found 3 tenants in alert state: prod-tenant-7, prod-tenant-8, prod-tenant-9" "$W/run.out"'
check "analyze_drift: drift_detected = max_connections, expected 500, actual 250/250/300, critical" \
  '[ "$(step analyze_drift "[.drift_detected[] | [.field, .expected, .actual, .severity]] | sort")" = "[[\"max_connections\",500,\"250\",\"critical\"],[\"max_connections\",500,\"250\",\"critical\"],[\"max_connections\",500,\"300\",\"critical\"]]" ]'
cm() { curl -s --cacert "$W/pki/ca.crt" -H "Authorization: Bearer tok-$RUN" \
  "$KUBE_STANDIN_URL/api/v1/namespaces/$1/configmaps/db-pool-config" | jq -r .data.max_connections; }
check "remediate: the three pool configs are 500 now" '[ "$(cm prod-tenant-7)$(cm prod-tenant-8)$(cm prod-tenant-9)" = 500500500 ]'
check "remediate: prod-tenant-3 (not in alert) was never written" \
  '[ "$(jq -c "select(.method != \"GET\" and (.path|test(\"prod-tenant-3\")))" "$KUBE_STANDIN_LOG" | wc -l)" = 0 ]'
check "remediate: three merge patches" \
  '[ "$(jq -c "select(.method == \"PATCH\" and .content_type == \"application/merge-patch+json\")" "$KUBE_STANDIN_LOG" | wc -l)" = 3 ]'
# isolation: each container runs as root (a warning, weight 1), every critical check passes
# (Docker: 6 critical per container; Kubernetes: default-deny ingress critical, egress warning,
# 3 RBAC probes critical): (18 + 3 + 1 + 9) / (18 + 1 + 3 + 1 + 9) = 31/32
check "verify_isolation: isolation_score = 31/32 = 0.96875 (only the root-user warning fails)" \
  '[ "$(step verify_isolation .isolation_score)" = 0.96875 ]'
check "verify_isolation: per tenant, the three in alert state, each 0.96875" \
  '[ "$(step verify_isolation ".isolation_by_tenant | to_entries | sort_by(.key) | map(.key + \"=\" + (.value|tostring)) | join(\",\")")" = "\"prod-tenant-7=0.96875,prod-tenant-8=0.96875,prod-tenant-9=0.96875\"" ]'
check "verify_isolation: the only findings are the root-user warnings" \
  '[ "$(jq -c "select(.kind==\"isolation\") | [.findings[] | .severity] | unique" "$W/run.jsonl" | sort -u)" = "[\"warning\"]" ]'
check "watch: baseline_metric = 0.97 (the worst tenant before)" '[ "$(step watch_recovery .baseline_metric)" = 0.97 ]'
check "watch: current_metric = 0.42 (the worst tenant after)" '[ "$(step watch_recovery .current_metric)" = 0.42 ]'
check "watch: per tenant baseline -> current" \
  '[ "$(step watch_recovery "[.metrics | to_entries | sort_by(.key) | .[] | .key + \":\" + (.value.baseline|tostring) + \">\" + (.value.current|tostring)] | join(\",\")")" = "\"prod-tenant-7:0.97>0.42,prod-tenant-8:0.95>0.38,prod-tenant-9:0.93>0.35\"" ]'
check "watch: it watched (several polls each) and resolved after the push" \
  '[ "$(jq -c "select(.kind==\"result\" and .prim==\"prom.watch\") | [.summary.resolved, (.summary.polls > 1)]" "$W/run.jsonl" | sort -u)" = "[true,true]" ]'
check "notify: slack_notification_sent = true (report and step)" \
  '[ "$(jq .slack_notification_sent "$R")$(step notify_oncall .slack_notification_sent)" = truetrue ]'
check "notify: the receiver got one valid Slack payload naming the 3 tenants" \
  '[ "$(jq -c "select(.path|startswith(\"/slack/\")) | [.verdict, (.body|fromjson|tostring|test(\"resolved for 3 tenants: prod-tenant-7, prod-tenant-8, prod-tenant-9\"))]" "$W/recv.jsonl")" = "[\"ok\",true]" ]'
check "the webhook URL (a secret) is in neither the chain nor the report" \
  '! grep -qF "$(cat "$W/slack_url")" "$W/run.jsonl" "$R"'
check "outcome resolved, the report's audit_chain is the chain's head" \
  '[ "$(jq -r .outcome "$R")" = resolved ] && [ "$(jq -r .audit_chain "$R")" = "$(tail -1 "$W/run.jsonl" | jq -r .hash)" ]'
check "chain verifies" '"$RBL" audit verify "$W/run.jsonl" >/dev/null'
echo "pool seed: $fails failed"
exit $((fails > 0))
