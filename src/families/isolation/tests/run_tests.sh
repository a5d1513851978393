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
JOIN=iso-$RID-t9-join   # prod-tenant-9's container in prod-tenant-8's PID, network and IPC namespaces
OWN=iso-$RID-t9-own     # prod-tenant-9's container joining its own tenant's container
BASE9=iso-$RID-t9-base
cleanup() { docker rm -f "$JOIN" "$OWN" "$GOOD" "$BAD" "$BASE9" >/dev/null 2>&1 || true; rm -rf "$W"; }
trap 'cleanup' EXIT
check() { if eval "$2"; then echo "ok    $1"; else echo "FAIL  $1"; fails=$((fails + 1)); fi; }

docker run -d --name "$GOOD" --label "$LABEL=prod-tenant-7" --user 65534 rbl-test/busybox:1 sleep 600 >/dev/null
docker run -d --name "$BAD" --label "$LABEL=prod-tenant-8" --network host --pid host --ipc shareable \
  -v /var/run/docker.sock:/var/run/docker.sock rbl-test/busybox:1 sleep 600 >/dev/null

docker run -d --name "$BASE9" --label "$LABEL=prod-tenant-9" --user 65534 rbl-test/busybox:1 sleep 600 >/dev/null
docker run -d --name "$JOIN" --label "$LABEL=prod-tenant-9" --user 65534 --pid "container:$BAD" \
  --network "container:$BAD" --ipc "container:$BAD" rbl-test/busybox:1 sleep 600 >/dev/null
docker run -d --name "$OWN" --label "$LABEL=prod-tenant-9" --user 65534 --pid "container:$BASE9" \
  rbl-test/busybox:1 sleep 600 >/dev/null

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
# container:<id> namespace modes: joining another tenant's container is critical; one's own is fine
sed 's/verify_isolation()/verify_isolation({ kube = false })/' "$W/iso.lua" >"$W/iso9.lua"
t9=$("$RBL" run "$W/iso9.lua" --tenant prod-tenant-9 --config "$W/config.lua" --incident ISO-prod-tenant-9 \
  --audit "$W/prod-tenant-9.jsonl" --quiet)
check "joining another tenant's PID namespace is a finding" '[[ "$t9" == *"finding container.own_pid_namespace container $JOIN"* ]]'
check "joining another tenant's network namespace is a finding" '[[ "$t9" == *"finding container.own_network_namespace container $JOIN"* ]]'
check "joining another tenant's IPC namespace is a finding" '[[ "$t9" == *"finding container.own_ipc_namespace container $JOIN"* ]]'
check "joining the tenant's own container is no finding" '[[ "$t9" != *"namespace container $OWN"* ]]'
check "namespace joins are critical" \
  '[ "$(jq -r "select(.kind == \"isolation\") | .findings[] | select(.id == \"container.own_pid_namespace\") | .severity" "$W/prod-tenant-9.jsonl")" = critical ]'
cat > "$W/exec.lua" <<'LUA'
local r = docker_exec(params.c, { "cat", "/proc/1/cmdline" })
print("exec ran: " .. r.stdout)
LUA
set +e
"$RBL" run "$W/exec.lua" --tenant prod-tenant-9 --config "$W/config.lua" --param "c=$JOIN" --incident ISO-X9 \
  --audit "$W/x9.jsonl" >"$W/x9.out" 2>&1
rc=$?
"$RBL" run "$W/exec.lua" --tenant prod-tenant-9 --config "$W/config.lua" --param "c=$OWN" --incident ISO-O9 \
  --audit "$W/o9.jsonl" >"$W/o9.out" 2>&1
rco=$?
set -e
check "docker_exec into a container in another tenant's namespaces is refused (exit 3, nothing run)" \
  '[ "$rc" = 3 ] && grep -q "joins the PID namespace of container" "$W/x9.out" && ! grep -q "exec ran" "$W/x9.out" && ! grep -q "\"prim\":\"docker_exec\".*\"kind\":\"intent\"" "$W/x9.jsonl"'
check "docker_exec into a container joining its own tenant's container runs (exit 0)" '[ "$rco" = 0 ] && grep -q "exec ran" "$W/o9.out"'
none=$(run prod-tenant-7 KUBECONFIG=/nonexistent DOCKER_HOST=unix:///nonexistent.sock)
check "nothing reachable: score 0, both skipped" '[[ "$none" == *"score=0.000"* && "$none" == *"skipped docker"* && "$none" == *"skipped kubernetes"* ]]'
for t in prod-tenant-7 prod-tenant-8 prod-tenant-9; do
  check "audit chain of $t verifies" '"$RBL" audit verify "$W/$t.jsonl" >/dev/null'
  check "isolation verdict recorded for $t" 'grep -q "\"kind\":\"isolation\"" "$W/$t.jsonl"'
done
echo "isolation: $fails failed"
exit $((fails > 0))
