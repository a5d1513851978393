#!/usr/bin/env bash
# The prom family end to end: the real `rbl run` binary against Debian's prometheus and
# prometheus-pushgateway, started here on loopback with temporary config and storage. Series of
# tenants t1 and t2 are pushed with curl; runbooks query them as t1. Prometheus's query log
# (query_log_file) shows every query it received, which proves what was and was never sent.
# usage: run_tests.sh path/to/rbl
set -uo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../../../../tests/lib/common.sh
source "$HERE/../../../../tests/lib/common.sh"
rbl_test_init prom-test "${1:-}"
RB=$HERE/runbooks
BG=()

# shellcheck source=promenv.sh
source "$HERE/promenv.sh"
rbl_at_exit 'for p in "${BG[@]}"; do kill "$p" 2>/dev/null; done'
rbl_at_exit prom_stop

prom_start || exit 1
push app t1 'reqs 10\npool_saturation 0.95\nlatency_ms 500\nerr_ratio 0.5'
push app t2 'reqs 20\npool_saturation 0.97\nlatency_ms 900\nerr_ratio 0.1'
push other t1 'other_metric 1'
push other t2 'other_metric 2'
prom_wait 'reqs' 2 && prom_wait 'other_metric' 2 || exit 1
sleep 3 # a few seconds of history for ranges and subqueries

cat >"$W/config.lua" <<CFG
return { tenants = { "t1", "t2", "t3" }, prom = { url = "$PROM_URL", timeout = 5 } }
CFG
cat >"$W/unscoped.lua" <<CFG
return { tenants = { "t1", "t2", "t3" }, prom = { url = "$PROM_URL", unscoped = true } }
CFG
cat >"$W/down.lua" <<CFG
return { tenants = { "t1" }, prom = { url = "http://127.0.0.1:$(free_port)", timeout = 2 } }
CFG

# run NAME WANT_EXIT RUNBOOK [rbl run options...] (default tenant t1 and config.lua)
run() {
  local name=$1 want=$2 rb=$3; shift 3
  local args=("$@")
  [[ " ${args[*]} " == *" --tenant "* ]] || args+=(--tenant t1)
  [[ " ${args[*]} " == *" --config "* ]] || args+=(--config "$W/config.lua")
  "$RBL" run "$RB/$rb" --yes --incident "$name" --audit "$W/$name.jsonl" --report "$W/$name.json" \
    "${args[@]}" >"$W/$name.out" 2>"$W/$name.err"
  local rc=$?
  if [ "$rc" = "$want" ]; then ok "$name: exit $rc"
  else
    bad "$name: exit $rc, want $want"
    sed 's/^/    | /' "$W/$name.err" | tail -15
  fi
  if "$RBL" audit verify "$W/$name.jsonl" >"$W/$name.verify" 2>&1; then ok "$name: audit verify"
  else bad "$name: audit verify"; sed 's/^/    | /' "$W/$name.verify" | tail -3; fi
}
errhas() { grep -qF -- "$2" "$W/$1.err" || { echo "    $1: stderr lacks: $2"; sed 's/^/    | /' "$W/$1.err" | tail -5; return 1; }; }
# jq over a run's report
rep() { local name=$1; shift; jq -e "$@" "$W/$name.json" >/dev/null || { echo "    $name: report fails: $*"; return 1; }; }
qlog_has() { grep -qF -- "$1" "$PROM_QUERY_LOG"; }

# ---- query, range, scalars ----
run query 0 query.lua
check "query: the audit records the query as sent" \
  grep -qF '"query":"reqs{tenant=\"t1\"}"' "$W/query.jsonl"
check "query: Prometheus received the scoped query" qlog_has 'reqs{tenant=\"t1\"}'

# ---- scoping against the real Prometheus ----
run scoping 0 scoping.lua
check "scoping: 25 queries gave t1's values only" rep scoping '.execution_trace[0].logs | length == 25'
check "scoping: every query Prometheus received from rbl names t1" \
  python3 - "$PROM_QUERY_LOG" <<'PY'
import json, re, sys
bad = []
for line in open(sys.argv[1]):
    rec = json.loads(line)
    q = rec.get("params", {}).get("query", "")
    if 'tenant="t2"' in q or "tenant=~" in q:
        bad.append(q)
sys.exit(1 if bad else 0)
PY

# ---- cross-tenant: refused, exit 3, never sent ----
i=0
for q in 'refusedmark1{tenant="t2"}' 'sum(refusedmark2{tenant=~"t.*"})' 'refusedmark3{tenant!="t1"}' \
  'rate(refusedmark4{"tenant"="t2"}[5m])' 'max_over_time(refusedmark5{tenant="t\x32"}[5m:1m])' \
  'refusedmark6 or other_metric{tenant="t2"}' 'label_replace(refusedmark7, "tenant", "t2", "", "")' \
  'refusedmark8{tenant=""}' 'count_values("tenant", refusedmark9)'; do
  i=$((i + 1))
  run "cross$i" 3 cross.lua --param "q=$q"
  check "cross$i: refusal names the reason" errhas "cross$i" "prom.query refused"
  check "cross$i: never sent" bash -c "! grep -q refusedmark$i '$PROM_QUERY_LOG'"
  check "cross$i: audit has the refusal" grep -q '"kind":"refused"' "$W/cross$i.jsonl"
done

# ---- prom.tenants ----
run tenants_all 0 tenants.lua --tenant t1 --tenant t2 --tenant t3 --param want=t1,t2
run tenants_t1t3 0 tenants.lua --tenant t1 --tenant t3 --param want=t1
check "tenants: one regex matcher over the authorised tenants" \
  qlog_has 'pool_saturation{tenant=~\"t1|t3\"} > 0.9'
run tenants_t3 0 tenants.lua --tenant t3 --param want=

# ---- a call bound to no tenant ----
run unbound 3 unbound.lua --tenant t1 --tenant t2
check "unbound: refused without prom.unscoped" errhas unbound "prom.unscoped = true"
run unscoped 0 unbound.lua --tenant t1 --tenant t2 --config "$W/unscoped.lua" --param want=2

# ---- watch ----
(sleep 3; push app t1 'reqs 10\npool_saturation 0.95\nlatency_ms 120\nerr_ratio 0.5') &
BG+=($!)
run watch_resolves 0 watch.lua --param hold=2 --param interval=0.5 --param timeout=30
check "watch: trace carries baseline_metric and current_metric" \
  rep watch_resolves '.execution_trace[0].baseline_metric == 500 and .execution_trace[0].current_metric == 120'
check "watch: several polls audited as one call" \
  rep watch_resolves '.execution_trace[0].status == "success"'
run watch_timeout 1 watch.lua --param until="< 50" --param timeout=2 --param interval=0.5
check "watch timeout: step failed with code timeout" \
  rep watch_timeout '.execution_trace[0].status == "failed" and .execution_trace[0].error_code == "timeout"'
check "watch timeout: metrics in the trace" rep watch_timeout '.execution_trace[0].current_metric == 120'
check "watch timeout: rollback ran" rep watch_timeout '.execution_trace[0].rollback == "done"'
run watch_worse 1 watch.lua --param q='max(err_ratio)' --param until="< 0.1" --param worse="> 0.3"
check "watch worse: step failed with code failed" \
  rep watch_worse '.execution_trace[0].error_code == "failed" and (.execution_trace[0].detail | test("worse condition"))'
run watch_fn 1 watch_fn.lua
check "watch_fn: functions and wait_until" rep watch_fn '.execution_trace[0].status == "success"'
check "wait_until timeout fails the step" \
  rep watch_fn '.execution_trace[1].status == "failed" and .execution_trace[1].error_code == "timeout"'

# ---- errors ----
run errors_bad 0 errors.lua --param mode=bad
run errors_down 0 errors.lua --param mode=down --config "$W/down.lua"

echo "# prom: $pass passed, $fail failed"
[ "$fail" = 0 ]
