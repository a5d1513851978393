#!/usr/bin/env bash
# rbl serve end to end with the real parts, all on loopback: Debian's prometheus,
# prometheus-alertmanager and prometheus-pushgateway, the real dockerd, rbl serve, and the local
# notification receiver. A pushed metric crosses a threshold, the rule fires, Alertmanager posts
# to rbl serve (bearer token from a file), the runbook restarts the labelled container, the
# metric recovers, the watch resolves, the notification reaches the receiver (signature
# checked), and the resolved alert is recorded.
# Every wait is keyed on the event it waits for (a run listed, the container's start time moved, the
# run done, the resolved notification counted), with deadlines generous enough for a loaded
# 2-core machine running the whole suite; nothing is assumed to have happened after a sleep.
# usage: e2e.sh path/to/rbl
set -uo pipefail
RBL=$(realpath "${1:?usage: e2e.sh path/to/rbl}")
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
IMG=${RBL_TEST_IMAGE:-rbl-test/busybox:1}
for p in prometheus prometheus-alertmanager prometheus-pushgateway; do
  command -v $p >/dev/null || { echo "$p is not installed (scripts/setup.sh installs it)"; exit 1; }
done
bash "$ROOT/src/families/docker/tests/setup.sh" || { echo "docker setup failed"; exit 1; }

W=$(mktemp -d /tmp/rbl-serve-e2e.XXXXXX)
RUN=$(date +%s)-$$
T=e2e-$RUN                 # the tenant, unique to this run (shared dockerd)
C=rbl-serve-e2e-$RUN       # the container
PIDS=()
pass=0 fail=0
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  wait 2>/dev/null
  docker rm -f "$C" >/dev/null 2>&1
  [ -n "${KEEP:-}" ] || rm -rf "$W"
}
trap cleanup EXIT
ok() { echo "ok   - $*"; pass=$((pass + 1)); }
bad() { echo "FAIL - $*"; fail=$((fail + 1)); }
check() { local what=$1; shift; if "$@"; then ok "$what"; else bad "$what"; fi; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
waitfor() { # SECONDS CMD...: until CMD succeeds, by the clock (a slow CMD does not stretch it)
  local end=$((SECONDS + $1)); shift
  while [ $SECONDS -lt $end ]; do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  "$@" >/dev/null 2>&1
}

docker run -d --name "$C" --label "rbl.tenant=$T" --label "rbl.test.run=$RUN" "$IMG" sleep 100000 >/dev/null
started_at() { docker inspect -f '{{.State.StartedAt}}' "$C" 2>/dev/null; }
STARTED0=""
waitfor 60 eval 'STARTED0=$(started_at) && [ -n "$STARTED0" ]' || { bad "docker inspect of the test container failed"; exit 1; }

# the notification receiver
HOOK_KEY_VALUE="e2e-hook-key-$RUN"
export HOOK_KEY="$HOOK_KEY_VALUE"
python3 "$ROOT/src/families/notify/tests/receiver.py" --port-file "$W/rport" --log "$W/recv.jsonl" \
  --key "$HOOK_KEY_VALUE" >"$W/receiver.log" 2>&1 &
PIDS+=($!)
waitfor 60 test -s "$W/rport"
RPORT=$(cat "$W/rport")

GPORT=$(free_port) PPORT=$(free_port) APORT=$(free_port) SPORT=$(free_port) CPORT=$(free_port)
PUSH=http://127.0.0.1:$GPORT PROM=http://127.0.0.1:$PPORT AM=http://127.0.0.1:$APORT

# rbl serve
TOKEN="e2e-token-$RUN-0123456789"
printf '%s\n' "$TOKEN" >"$W/token"
chmod 600 "$W/token"
cat >"$W/backlog.lua" <<'LUA'
runbook { id = "queue-backlog", params = { container = "none" } }
step "restart" {
  run = function(ctx) docker.restart(params.container, { timeout = 1 }) end,
}
step "watch" {
  run = function(ctx)
    ctx.w = prom.watch('max(e2e_queue_depth)', { ["until"] = "< 100", timeout = 300, interval = 1 })
  end,
  verify = function(ctx) return ctx.w.resolved, "the queue did not drain" end,
}
step "tell" {
  run = function(ctx)
    notify("hook", "queue backlog resolved on " .. params.container,
           { fields = { baseline = ctx.w.baseline, current = ctx.w.current } })
  end,
}
LUA
cat >"$W/cfg.lua" <<LUA
return {
  tenants = { "$T" },
  prom = { url = "$PROM", tenant_label = "tenant", timeout = 10 },
  notify = { channels = { hook = { type = "webhook", url = "http://127.0.0.1:$RPORT/hook/e2e", hmac_key = "HOOK_KEY" } } },
  serve = { token_file = "token", spool = "spool",
    routes = { { name = "backlog", match = { alertname = "QueueBacklog" }, runbook = "backlog.lua",
                 params = { container = "container" }, cooldown = 600, max_runs_per_hour = 4 } } },
}
LUA
"$RBL" serve --config "$W/cfg.lua" --listen "127.0.0.1:$SPORT" >"$W/serve.log" 2>&1 &
SPID=$!
PIDS+=($SPID)
waitfor 120 curl -sf -m 10 "http://127.0.0.1:$SPORT/healthz" || { bad "rbl serve did not start"; cat "$W/serve.log"; exit 1; }

# Alertmanager: one webhook receiver, the bearer token from the same file
cat >"$W/am.yml" <<YML
route:
  receiver: rbl
  group_by: [alertname, tenant]
  group_wait: 1s
  group_interval: 2s
  repeat_interval: 1h
receivers:
  - name: rbl
    webhook_configs:
      - url: http://127.0.0.1:$SPORT/v1/alertmanager
        send_resolved: true
        http_config:
          authorization:
            type: Bearer
            credentials_file: $W/token
YML
prometheus-alertmanager --config.file="$W/am.yml" --storage.path="$W/am" \
  --web.listen-address="127.0.0.1:$APORT" --cluster.listen-address="" >"$W/am.log" 2>&1 &
PIDS+=($!)

# Prometheus: scrapes the pushgateway, evaluates the rule every second, alerts Alertmanager
cat >"$W/rules.yml" <<YML
groups:
  - name: e2e
    rules:
      - alert: QueueBacklog
        expr: e2e_queue_depth{job="e2e"} > 100
        labels: { severity: critical }
        annotations: { summary: "queue backlog on {{ \$labels.container }}" }
YML
cat >"$W/prometheus.yml" <<YML
global: { scrape_interval: 1s, evaluation_interval: 1s }
rule_files: [ "$W/rules.yml" ]
alerting:
  alertmanagers: [ { static_configs: [ { targets: [ "127.0.0.1:$APORT" ] } ] } ]
scrape_configs:
  - job_name: pushgateway
    honor_labels: true
    static_configs: [ { targets: [ "127.0.0.1:$GPORT" ] } ]
YML
prometheus-pushgateway --web.listen-address="127.0.0.1:$GPORT" >"$W/push.log" 2>&1 &
PIDS+=($!)
prometheus --config.file="$W/prometheus.yml" --storage.tsdb.path="$W/tsdb" \
  --web.listen-address="127.0.0.1:$PPORT" --query.lookback-delta=3s >"$W/prom.log" 2>&1 &
PIDS+=($!)
waitfor 120 curl -sf -m 10 "$PROM/-/ready" && waitfor 120 curl -sf -m 10 "$AM/-/ready" &&
  waitfor 120 curl -sf -m 10 "$PUSH/-/ready" ||
  { bad "prometheus, alertmanager or the pushgateway did not start"; tail -5 "$W"/*.log; exit 1; }

push() { printf 'e2e_queue_depth{container="%s"} %s\n' "$C" "$1" |
  curl -sf -m 30 --data-binary @- "$PUSH/metrics/job/e2e/tenant/$T" >/dev/null; }
runs() { curl -sf -m 30 -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$SPORT/v1/runs"; }
tenant_runs() { runs | jq -e '[.runs[] | select(.tenant == "'"$T"'")] | length == '"$1"; }

t0=$(date +%s.%N)
waitfor 60 push 500 || bad "the pushgateway took the metric"   # over the threshold
check "the rule fired and Alertmanager posted: rbl serve lists a run for the tenant" waitfor 240 tenant_runs 1
# the container's start time moved (an inspect that fails or prints nothing is not a restart)
restarted() { local s; s=$(started_at) && [ -n "$s" ] && [ "$s" != "$STARTED0" ]; }
check "the runbook restarted the container" waitfor 240 restarted
t1=$(date +%s.%N)
echo "     (metric pushed to container restarted: $(python3 -c "print(round($t1 - $t0, 1))") s)"
check "rbl serve shows one run for the tenant" tenant_runs 1
waitfor 60 push 10 || bad "the pushgateway took the recovered metric"   # the metric recovers
ended() { runs | jq -e '[.runs[] | select(.tenant == "'"$T"'")][0].state == "done"'; }
check "the run ended" waitfor 360 ended
RUN_JSON=$(runs | jq '[.runs[] | select(.tenant == "'"$T"'")][0]')
check "the run succeeded (the watch resolved)" test "$(jq -r .outcome <<<"$RUN_JSON")" = succeeded
REPORT=$(jq -r .report <<<"$RUN_JSON")
check "the report's watch went from 500 to below 100" \
  jq -e '[.execution_trace[] | select(.name == "watch")][0] | (.baseline_metric == 500 and .current_metric < 100)' "$REPORT"
check "the webhook notification reached the receiver, signature verified" \
  jq -se 'map(select(.path == "/hook/e2e" and .verdict == "ok" and ((.body | fromjson | .message) | test("resolved on '"$C"'")))) | length == 1' "$W/recv.jsonl"
resolved() { curl -sf -m 30 "http://127.0.0.1:$SPORT/metrics" | grep -q '^rbl_serve_alerts_resolved_total [1-9]'; }
check "Alertmanager sent the resolved notification and rbl serve recorded it" waitfor 240 resolved
check "the resolved alert is in the spool" grep -q '"k":"resolved"' "$W/spool/spool.log"
check "the run's chain verifies" "$RBL" audit verify "$(jq -r .audit <<<"$RUN_JSON")"
CHAIN=$(jq -r .audit <<<"$RUN_JSON")
check "the chain records the restart of the container, bound to the tenant" \
  jq -se 'map(select(.kind == "intent" and .prim == "docker.restart" and .tenant == "'"$T"'")) | length == 1' "$CHAIN"
M=$(curl -sf -m 30 "http://127.0.0.1:$SPORT/metrics")
check "metrics: one run started and succeeded" grep -q '^rbl_serve_runs_succeeded_total 1$' <<<"$M"
# Alertmanager re-sent the firing group (group_interval) at least once while the run was in
# flight or cooling down: deduplicated, never a second run
check "no second run for the same group" test "$(grep -c '^rbl_serve_runs_started_total 1$' <<<"$M")" = 1
kill -TERM $SPID
wait $SPID
check "rbl serve stopped cleanly on SIGTERM" test $? = 0
echo "e2e: $pass passed, $fail failed"
[ $fail = 0 ]
