#!/usr/bin/env bash
# deploy/ is accepted by an API server: `kubectl apply --dry-run=server` of every manifest against
# the stand-in (TLS, bearer token, RBAC enforcement), which then holds none of them; a broken
# manifest is refused the same way; the runbook the ConfigMap ships passes `rbl check`.
# usage: deploy.sh path/to/rbl
set -euo pipefail
RBL=$(realpath "${1:?usage: deploy.sh path/to/rbl}")
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
source "$ROOT/tests/kube/lib.sh"
kube_ensure_deps
W=$(mktemp -d /tmp/rbl-serve-deploy.XXXXXX)
export HOME=$W/home
mkdir -p "$HOME"
unset KUBECONFIG
fail() { echo "FAIL - $*"; exit 1; }
ok() { echo "ok   - $*"; }
kube_mkcerts "$W/certs"
printf "[]\n" >"$W/empty.yaml"
kube_standin_start --fixtures "$W/empty.yaml" --tls-cert "$W/certs/server.crt" --tls-key "$W/certs/server.key" \
  --token admin-token=admin:system:masters --authorization-mode RBAC
K=$W/admin.kubeconfig
kube_write_kubeconfig "$K" "$KUBE_STANDIN_URL" --ca "$W/certs/ca.crt" --token admin-token
kc() { kubectl --kubeconfig "$K" "$@"; }
kc create namespace rbl-system >/dev/null
kc create namespace shop >/dev/null
out=$(kc apply --dry-run=server -f "$ROOT/deploy/rbl-serve.yaml" -f "$ROOT/deploy/rbac-tenant.yaml" 2>&1) ||
  fail "kubectl apply --dry-run=server refused deploy/: $out"
for o in serviceaccount/rbl-serve secret/rbl-serve-token \
  configmap/rbl-serve-config statefulset.apps/rbl-serve service/rbl-serve service/rbl-serve-peers \
  networkpolicy.networking.k8s.io/rbl-serve role.rbac.authorization.k8s.io/rbl-runbooks \
  rolebinding.rbac.authorization.k8s.io/rbl-serve role.rbac.authorization.k8s.io/rbl-serve-leases \
  rolebinding.rbac.authorization.k8s.io/rbl-serve-leases; do
  grep -q "^$o .*(server dry run)" <<<"$out" || fail "$o not accepted: $out"
done
ok "every manifest in deploy/ is accepted by the server (dry run)"
n=$(jq -s '[.[] | select((.method=="POST" or .method=="PATCH" or .method=="PUT") and (.path|test("/namespaces/(rbl-system|shop)/")))] | length' "$KUBE_STANDIN_LOG")
d=$(jq -s '[.[] | select((.method=="POST" or .method=="PATCH" or .method=="PUT") and (.path|test("/namespaces/(rbl-system|shop)/")) and (.query|tostring|test("dryRun")))] | length' "$KUBE_STANDIN_LOG")
[ "$n" -ge 11 ] && [ "$n" = "$d" ] || fail "every write was a dry run ($d of $n)"
ok "every write reached the server as a dry run ($n)"
if kc get statefulset rbl-serve -n rbl-system >/dev/null 2>&1; then fail "the dry run created the StatefulSet"; fi
ok "the server holds none of them afterwards"
sed 's/^kind: StatefulSet$/kind: StatefulSt/' "$ROOT/deploy/rbl-serve.yaml" >"$W/broken.yaml"
if kc apply --dry-run=server --validate=false -f "$W/broken.yaml" >"$W/broken.out" 2>&1; then fail "a misspelt kind was accepted"; fi
grep -q 'no matches for kind "StatefulSt"' "$W/broken.out" || fail "unexpected error: $(cat "$W/broken.out")"
ok "a broken manifest is refused"
python3 - "$ROOT/deploy/rbl-serve.yaml" "$W" <<'PY'
import sys, yaml
for d in yaml.safe_load_all(open(sys.argv[1])):
    if d and d["kind"] == "ConfigMap":
        for k, v in d["data"].items():
            open(sys.argv[2] + "/" + k, "w").write(v)
PY
"$RBL" check "$W/restart.lua" >/dev/null || fail "the shipped runbook does not pass rbl check"
ok "the runbook the ConfigMap ships passes rbl check"
rm -rf "$W"
echo "deploy: all checks passed"
