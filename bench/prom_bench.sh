#!/usr/bin/env bash
# prom bench, against Debian's prometheus fed by a pushgateway (both started here, on loopback):
#  1. prom.query latency vs curl on the same Prometheus: N sequential instant queries in one run
#     (each an audited, tenant-scoped primitive, its intent fsync'd) against one curl process
#     sending the same N scoped queries over one connection; per-query time and the ratio.
#  2. a 200-tenant each_tenant fan-out, one prom.query per tenant (concurrency 50).
# usage: bench/prom_bench.sh path/to/rbl [N] [TENANTS]     (exit 77: the gate refuses prom)
set -euo pipefail
RBL=$(realpath "${1:?usage: prom_bench.sh path/to/rbl [N] [TENANTS]}")
N=${2:-200}
T=${3:-200}
HERE=$(cd "$(dirname "$0")" && pwd)
W=$(mktemp -d /tmp/rbl-prom-bench.XXXXXX)
# shellcheck source=../src/families/prom/tests/promenv.sh
source "$HERE/../src/families/prom/tests/promenv.sh"
cleanup() { prom_stop; rm -rf "$W"; }
trap cleanup EXIT
[ -n "${PROM_BENCH_DEBUG:-}" ] && trap - EXIT
prom_start
tenants=()
for i in $(seq -f "%03g" 1 "$T"); do tenants+=("bt$i"); done
for t in "${tenants[@]}"; do push bench "$t" "reqs ${t#bt}"; done
prom_wait 'count(reqs)' 1 >/dev/null
prom_wait "reqs" "$T"
{
  printf 'return { prom = { url = "%s" }, tenants = {' "$PROM_URL"
  printf '"%s",' "${tenants[@]}"
  printf '} }\n'
} >"$W/config.lua"
now() { date +%s%N; }
ms() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", (b - a) / 1e6 }'; }
runrb() { "$RBL" run "$HERE/prom_bench.lua" --yes --quiet --config "$W/config.lua" --audit "$W/$1.jsonl" "${@:2}"; }

if ! runrb probe --tenant bt001 --param mode=seq --param n=1 2>"$W/probe.err"; then
  if grep -qF "endpoint class prom has no rules in the gate" "$W/probe.err"; then
    echo "SKIP: the tenant gate refuses prom requests"; exit 77
  fi
  cat "$W/probe.err" >&2; exit 1
fi

echo "== prom.query vs curl: $N sequential instant queries"
t0=$(now); runrb none --tenant bt001 --param mode=none; t1=$(now)
runrb seq --tenant bt001 --param mode=seq --param n="$N"; t2=$(now)
url="$PROM_URL/api/v1/query?query=$(python3 -c 'import urllib.parse; print(urllib.parse.quote("reqs{tenant=\"bt001\"}"))')"
args=(); for _ in $(seq 1 "$N"); do args+=("$url"); done
t3=$(now); curl -sf "${args[@]}" >/dev/null; t4=$(now)
t5=$(now); for _ in $(seq 1 "$N"); do curl -sf "$url" >/dev/null; done; t6=$(now)
RBL_MS=$(awk -v a="$t0" -v b="$t1" -v c="$t2" -v n="$N" 'BEGIN { printf "%.3f", ((c - b) - (b - a)) / 1e6 / n }')
CURL_MS=$(awk -v a="$t3" -v b="$t4" -v n="$N" 'BEGIN { printf "%.3f", (b - a) / 1e6 / n }')
CURLP_MS=$(awk -v a="$t5" -v b="$t6" -v n="$N" 'BEGIN { printf "%.3f", (b - a) / 1e6 / n }')
echo "rbl run fixed cost:                 $(ms "$t0" "$t1") ms"
echo "rbl prom.query (audited, scoped):   ${RBL_MS} ms per query"
echo "curl, one process, keep-alive:      ${CURL_MS} ms per query"
echo "curl, one process per query:        ${CURLP_MS} ms per query"
echo "ratio rbl / curl (keep-alive):      $(awk -v a="$RBL_MS" -v b="$CURL_MS" 'BEGIN { printf "%.2fx", a / b }')"
echo "ratio rbl / curl (process each):    $(awk -v a="$RBL_MS" -v b="$CURLP_MS" 'BEGIN { printf "%.2fx", a / b }')"

echo "== each_tenant fan-out over $T tenants, one prom.query each (concurrency 50)"
t7=$(now); runrb fanout --tenant 'bt*' --param mode=fanout; t8=$(now)
FAN_MS=$(ms "$t7" "$t8")
echo "rbl each_tenant:                    ${FAN_MS} ms total, $(awk -v a="$FAN_MS" -v n="$T" 'BEGIN { printf "%.2f", a / n }') ms per tenant"
"$RBL" audit verify "$W/fanout.jsonl" >/dev/null && echo "audit verify: ok ($(grep -c '"kind":"intent"' "$W/fanout.jsonl") intents)"
