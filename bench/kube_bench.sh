#!/usr/bin/env bash
# Patch one ConfigMap in each of N tenant namespaces (default 200): one `rbl run` over
# each_tenant (concurrency 32) against a shell loop of `kubectl patch`, on the same API stand-in.
# usage: bench/kube_bench.sh [path/to/rbl] [N]      prints both times and the ratio
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
RBL=$(realpath "${1:-$HERE/../build/rbl}")
N=${2:-200}
W=$(mktemp -d /tmp/rbl-kube-bench.XXXXXX)
trap 'rm -rf "$W"' EXIT
source "$HERE/../tests/kube/lib.sh"
kube_ensure_deps
command -v kubectl >/dev/null || { echo "kube_bench: kubectl is required" >&2; exit 2; }

kube_mkcerts "$W/pki" >/dev/null 2>&1
{
  echo "return { tenants = {"
  for i in $(seq -f '%03g' 0 $((N - 1))); do
    printf -- '---\napiVersion: v1\nkind: Namespace\nmetadata: {name: bench-%s, labels: {rbl.io/tenant: bench-%s}}\n' "$i" "$i" >>"$W/fixtures.yaml"
    printf -- '---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: bench, namespace: bench-%s}\ndata: {value: original}\n' "$i" >>"$W/fixtures.yaml"
    echo "  [\"bench-$i\"] = { namespaces = { \"bench-$i\" } },"
  done
  echo "} }"
} >"$W/config.lua"
kube_standin_start --fixtures "$W/fixtures.yaml" --tls-cert "$W/pki/server.crt" --tls-key "$W/pki/server.key" \
  --token bench-token=bench:system:masters
kube_write_kubeconfig "$W/kubeconfig" "$KUBE_STANDIN_URL" --ca "$W/pki/ca.crt" --token bench-token
export KUBECONFIG=$W/kubeconfig

now() { date +%s.%N; }
t0=$(now)
"$RBL" run "$HERE/kube_bench.lua" --tenant 'bench-*' --config "$W/config.lua" --audit "$W/audit.jsonl" --quiet
t1=$(now)
patched=$(kubectl get cm -A -o json | jq '[.items[] | select(.metadata.name=="bench" and .data.value=="rbl")] | length')
[ "$patched" = "$N" ] || { echo "kube_bench: rbl patched $patched of $N ConfigMaps" >&2; exit 1; }
"$RBL" audit verify "$W/audit.jsonl" >/dev/null

t2=$(now)
for i in $(seq -f '%03g' 0 $((N - 1))); do
  kubectl patch configmap bench -n "bench-$i" --type merge -p '{"data":{"value":"kubectl"}}' >/dev/null
done
t3=$(now)

awk -v n="$N" -v a="$t0" -v b="$t1" -v c="$t2" -v d="$t3" 'BEGIN {
  r = b - a; k = d - c
  printf "kube_bench: %d ConfigMaps in %d tenant namespaces\n", n, n
  printf "  rbl run (each_tenant, concurrency 32): %.2f s  (%.1f patches/s)\n", r, n / r
  printf "  kubectl patch loop:                     %.2f s  (%.1f patches/s)\n", k, n / k
  printf "  ratio: %.1fx\n", k / r }'
