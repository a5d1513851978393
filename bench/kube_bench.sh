#!/usr/bin/env bash
# Patch one ConfigMap in each of N tenant namespaces (default 200), on the same API stand-in:
#   - rbl: one `rbl run` over each_tenant (concurrency 32), median of 3 runs;
#   - a shell loop of `kubectl patch` (goal: rbl >= 30x faster);
#   - Ansible's kubernetes.core.k8s (state: patched) from Debian's `ansible` package, one
#     playbook looping over the N namespaces (goal: rbl >= 100x faster). The bench installs
#     ansible and python3-kubernetes with apt-get when they are missing; ANSIBLE=0 skips it.
# usage: bench/kube_bench.sh [path/to/rbl] [N]      prints the times and the ratios
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
RBL=$(realpath "${1:-$HERE/../build/rbl}")
N=${2:-200}
W=$(mktemp -d /tmp/rbl-kube-bench.XXXXXX)
trap 'rm -rf "$W"' EXIT
source "$HERE/../tests/kube/lib.sh"
kube_ensure_deps
command -v kubectl >/dev/null || { echo "kube_bench: kubectl is required" >&2; exit 2; }
ANSIBLE=${ANSIBLE:-1}
if [[ $ANSIBLE == 1 ]] && ! { command -v ansible-playbook >/dev/null && /usr/bin/python3 -c 'import kubernetes' 2>/dev/null; }; then
  echo "kube_bench: installing Debian's ansible and python3-kubernetes" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends ansible python3-kubernetes >/dev/null ||
    { echo "kube_bench: cannot install ansible (ANSIBLE=0 skips that part)" >&2; exit 2; }
fi

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
rbl_runs=()
for r in 1 2 3; do
  t0=$(now)
  "$RBL" run "$HERE/kube_bench.lua" --tenant 'bench-*' --config "$W/config.lua" --audit "$W/audit-$r.jsonl" --quiet \
    --param value="rbl$r" # a new value each run: every object changes every time
  t1=$(now)
  rbl_runs+=("$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')")
  patched=$(kubectl get cm -A -o json | jq '[.items[] | select(.metadata.name=="bench" and .data.value=="rbl'"$r"'")] | length')
  [ "$patched" = "$N" ] || { echo "kube_bench: rbl patched $patched of $N ConfigMaps" >&2; exit 1; }
  "$RBL" audit verify "$W/audit-$r.jsonl" >/dev/null
done
RBL_S=$(printf '%s\n' "${rbl_runs[@]}" | sort -n | sed -n 2p)

t2=$(now)
for i in $(seq -f '%03g' 0 $((N - 1))); do
  kubectl patch configmap bench -n "bench-$i" --type merge -p '{"data":{"value":"kubectl"}}' >/dev/null
done
t3=$(now)
patched=$(kubectl get cm -A -o json | jq '[.items[] | select(.metadata.name=="bench" and .data.value=="kubectl")] | length')
[ "$patched" = "$N" ] || { echo "kube_bench: kubectl patched $patched of $N ConfigMaps" >&2; exit 1; }

ANS_S=""
if [[ $ANSIBLE == 1 ]]; then
  {
    echo "- hosts: localhost"
    echo "  connection: local"
    echo "  gather_facts: false"
    echo "  tasks:"
    echo "    - kubernetes.core.k8s:"
    echo "        kubeconfig: $W/kubeconfig"
    echo "        state: patched"
    echo "        kind: ConfigMap"
    echo "        name: bench"
    echo "        namespace: \"{{ item }}\""
    echo "        definition: {data: {value: ansible}}"
    echo "      loop:"
    for i in $(seq -f '%03g' 0 $((N - 1))); do echo "        - bench-$i"; done
  } >"$W/playbook.yml"
  t4=$(now)
  ANSIBLE_PYTHON_INTERPRETER=/usr/bin/python3 ANSIBLE_LOCALHOST_WARNING=false ANSIBLE_INVENTORY_UNPARSED_WARNING=false \
    /usr/bin/python3 "$(command -v ansible-playbook)" -i localhost, "$W/playbook.yml" >"$W/ansible.log" 2>&1 ||
    { tail -30 "$W/ansible.log" >&2; echo "kube_bench: ansible-playbook failed" >&2; exit 1; }
  t5=$(now)
  patched=$(kubectl get cm -A -o json | jq '[.items[] | select(.metadata.name=="bench" and .data.value=="ansible")] | length')
  [ "$patched" = "$N" ] || { echo "kube_bench: ansible patched $patched of $N ConfigMaps" >&2; exit 1; }
  ANS_S=$(awk -v a="$t4" -v b="$t5" 'BEGIN { print b - a }')
fi

awk -v n="$N" -v r="$RBL_S" -v c="$t2" -v d="$t3" -v an="$ANS_S" -v runs="${rbl_runs[*]}" 'BEGIN {
  k = d - c
  printf "kube_bench: %d ConfigMaps in %d tenant namespaces, one API stand-in\n", n, n
  printf "  rbl run (each_tenant, concurrency 32): %7.2f s  (%.1f patches/s; median of runs %s)\n", r, n / r, runs
  printf "  kubectl patch loop:                     %7.2f s  (%.1f patches/s)  ratio %.1fx (goal >= 30x)\n", k, n / k, k / r
  if (an != "") printf "  ansible kubernetes.core.k8s:            %7.2f s  (%.1f patches/s)  ratio %.1fx (goal >= 100x)\n", an, n / an, an / r }'
