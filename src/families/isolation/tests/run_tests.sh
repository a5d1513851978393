#!/usr/bin/env bash
# verify_isolation against the real dockerd and the Kubernetes API stand-in: a well-fenced
# tenant scores 1, a badly fenced one scores lower with the findings named, an unreachable
# runtime is skipped (and nothing checked scores 0), and the audit chain verifies.
set -euo pipefail
RBL=$(realpath "${1:-build/rbl}")
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../../../.." && pwd)
source "$ROOT/tests/kube/lib.sh"
kube_ensure_deps
W=$(mktemp -d)
fails=0
# The dockerd may be shared: this run's containers and its tenant label key are its own, so no
# other suite's (or run's) prod-tenant-7 container is judged, and none of this run's elsewhere.
RID=$(date +%s)-$$
LABEL=rbl.isotest.$RID
GOOD=iso-$RID-t7-good
BAD=iso-$RID-t8-bad
cleanup() { docker rm -f "$GOOD" "$BAD" >/dev/null 2>&1 || true; rm -rf "$W"; }
trap 'cleanup' EXIT
check() { if eval "$2"; then echo "ok    $1"; else echo "FAIL  $1"; fails=$((fails + 1)); fi; }

docker run -d --name "$GOOD" --label "$LABEL=prod-tenant-7" --user 65534 rbl-test/busybox:1 sleep 600 >/dev/null
docker run -d --name "$BAD" --label "$LABEL=prod-tenant-8" --network host --pid host \
  -v /var/run/docker.sock:/var/run/docker.sock rbl-test/busybox:1 sleep 600 >/dev/null

kube_mkcerts "$W/certs"
kube_standin_start --fixtures "$ROOT/tests/kube/fixtures/basic.yaml" --tls-cert "$W/certs/server.crt" \
  --tls-key "$W/certs/server.key" --token "tok-iso=rbl-runner:rbl"
kube_write_kubeconfig "$W/kubeconfig" "$KUBE_STANDIN_URL" --ca "$W/certs/ca.crt" --token tok-iso

cat > "$W/iso.lua" <<'LUA'
local r = verify_isolation()
print(string.format("score=%.3f", r.score))
for _, f in ipairs(r.findings) do print("finding " .. f.id .. " " .. f.target) end
for _, s in ipairs(r.skipped) do print("skipped " .. s) end
LUA
echo "return { labels = { docker = \"$LABEL\" } }" >"$W/config.lua"
run() { # tenant, extra env...
  local t=$1; shift
  env "$@" "$RBL" run "$W/iso.lua" --tenant "$t" --config "$W/config.lua" --incident "ISO-$t" --audit "$W/$t.jsonl" --quiet
}
good=$(run prod-tenant-7 KUBECONFIG="$W/kubeconfig")
bad=$(run prod-tenant-8 KUBECONFIG="$W/kubeconfig")
check "well-fenced tenant scores 1 (default deny, non-root, own namespaces)" '[[ "$good" == *"score=1.000"* ]]'
check "badly fenced tenant scores below 1" '[[ "$bad" != *"score=1.000"* && "$bad" == *"score=0."* ]]'
check "host network named" '[[ "$bad" == *"finding container.own_network container $BAD"* ]]'
check "host pid named" '[[ "$bad" == *"finding container.own_pid container $BAD"* ]]'
check "docker socket mount named" '[[ "$bad" == *"finding container.no_docker_socket container $BAD"* ]]'
check "missing default-deny named" '[[ "$bad" == *"finding networkpolicy.default_deny_ingress"* ]]'
check "other tenant's containers never judged" '[[ "$good" != *"$BAD"* && "$bad" != *"$GOOD"* ]]'
# the RBAC probes are cluster-wide questions: kube.can_i(..., {cluster = true}) names no namespace
check "three cluster-wide RBAC probes, none scoped to a namespace" \
  '[ "$(jq -c "select(.kind == \"intent\" and .prim == \"kube.can_i\") | .target.namespace" "$W/prod-tenant-7.jsonl" | sort | uniq -c | tr -s " ")" = " 3 null" ]'
none=$(run prod-tenant-7 KUBECONFIG=/nonexistent DOCKER_HOST=unix:///nonexistent.sock)
check "nothing reachable: score 0, both skipped" '[[ "$none" == *"score=0.000"* && "$none" == *"skipped docker"* && "$none" == *"skipped kubernetes"* ]]'
for t in prod-tenant-7 prod-tenant-8; do
  check "audit chain of $t verifies" '"$RBL" audit verify "$W/$t.jsonl" >/dev/null'
  check "isolation verdict recorded for $t" 'grep -q "\"kind\":\"isolation\"" "$W/$t.jsonl"'
done
echo "isolation: $fails failed"
exit $((fails > 0))
