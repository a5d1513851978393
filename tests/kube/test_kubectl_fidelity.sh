#!/usr/bin/env bash
# Proves the Kubernetes API stand-in is faithful enough for the real kubectl:
# starts it with TLS + client-CA + bearer token + RBAC enforcement, drives
# /usr/bin/kubectl against it and checks results and the request log.
# Exits non-zero at the first failed assertion, saying what failed.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
source "$HERE/lib.sh"

KUBECTL=${KUBECTL:-kubectl}
command -v "$KUBECTL" >/dev/null || { echo "SKIP/FAIL: kubectl not found" >&2; exit 1; }
kube_ensure_deps
command -v jq >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q jq >/dev/null

WORK=$(mktemp -d "${TMPDIR:-/tmp}/kube-fidelity.XXXXXX")
# removed at exit (lib.sh chains its own cleanup before this); KUBE_STANDIN_KEEP=1 keeps it
[[ ${KUBE_STANDIN_KEEP:-0} == 1 ]] || trap 'rm -rf "$WORK"' EXIT
export HOME=$WORK/home # isolates kubectl's discovery/openapi cache
mkdir -p "$HOME"
unset KUBECONFIG

step=""
STEP() { step=$*; echo "--- [$SECONDS s] $step"; }
fail() {
    echo "FAIL [$step]: $*" >&2
    if [[ -n ${KUBE_STANDIN_LOG:-} && -f $KUBE_STANDIN_LOG ]]; then
        echo "last requests:" >&2
        tail -n 5 "$KUBE_STANDIN_LOG" | jq -c '{method,path,query,user,status}' >&2 || true
    fi
    exit 1
}
eq() { # actual expected what
    [[ "$1" == "$2" ]] || fail "$3: expected [$2], got [$1]"
}
contains() { # haystack needle what
    [[ "$1" == *"$2"* ]] || fail "$3: expected output to contain [$2], got [$1]"
}
# k CONFIG ARGS...: run kubectl, capture stdout in $out, stderr in $err, exit status in $rc
k() {
    local cfg=$1
    shift
    rc=0
    out=$("$KUBECTL" --kubeconfig "$cfg" "$@" 2>"$WORK/stderr") || rc=$?
    err=$(cat "$WORK/stderr")
}
ok() { # CONFIG ARGS... : must succeed
    k "$@"
    [[ $rc == 0 ]] || fail "kubectl ${*:2} exited $rc: $err"
}
bad() { # CONFIG ARGS... : must fail
    k "$@"
    [[ $rc != 0 ]] || fail "kubectl ${*:2} succeeded but must fail; output: $out"
}
log_count() { jq -s "[.[] | select($1)] | length" "$KUBE_STANDIN_LOG"; }
log_mark() { mark=$(wc -l <"$KUBE_STANDIN_LOG"); }
log_since() { tail -n +"$((mark + 1))" "$KUBE_STANDIN_LOG"; }
log_since_count() { log_since | jq -s "[.[] | select($1)] | length"; }

STEP "certificates and stand-in"
CERTS=$WORK/certs
kube_mkcerts "$CERTS"
kube_standin_start --fixtures "$HERE/fixtures/basic.yaml" \
    --tls-cert "$CERTS/server.crt" --tls-key "$CERTS/server.key" --client-ca "$CERTS/ca.crt" \
    --token admin-token=admin:system:masters --token bob-token=bob:dev \
    --authorization-mode RBAC
ADMIN=$WORK/admin.kubeconfig
ALICE=$WORK/alice.kubeconfig
WRONG=$WORK/wrong-token.kubeconfig
OTHERCA=$WORK/other-ca.kubeconfig
kube_write_kubeconfig "$ADMIN" "$KUBE_STANDIN_URL" --ca "$CERTS/ca.crt" --token admin-token
kube_write_kubeconfig "$ALICE" "$KUBE_STANDIN_URL" --ca "$CERTS/ca.crt" \
    --client-cert "$CERTS/client.crt" --client-key "$CERTS/client.key"
kube_write_kubeconfig "$WRONG" "$KUBE_STANDIN_URL" --ca "$CERTS/ca.crt" --token not-a-valid-token
kube_write_kubeconfig "$OTHERCA" "$KUBE_STANDIN_URL" --ca "$CERTS/other-ca.crt" --token admin-token
P7=(-n prod-tenant-7)
P8=(-n prod-tenant-8)

STEP "kubectl version / discovery"
ok "$ADMIN" version -o json
eq "$(jq -r .serverVersion.gitVersion <<<"$out")" "v1.32.4" "server version"
ok "$ADMIN" api-resources -o name
for r in namespaces configmaps secrets pods services serviceaccounts deployments.apps \
    networkpolicies.networking.k8s.io roles.rbac.authorization.k8s.io clusterrolebindings.rbac.authorization.k8s.io \
    selfsubjectaccessreviews.authorization.k8s.io; do
    grep -qx "$r" <<<"$out" || fail "api-resources lacks $r: $out"
done
eq "$(log_count '.path=="/apis" and (.response_content_type // "" | test("g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"))' | tr -d ' ')" \
    "$(log_count '.path=="/apis"' | tr -d ' ')" "kubectl uses aggregated discovery v2 for /apis"
ok "$ADMIN" get --raw /apis/apps/v1
eq "$(jq -r '[.resources[] | select(.name=="deployments/scale") | .kind, .group] | join(",")' <<<"$out")" \
    "Scale,autoscaling" "legacy discovery of deployments/scale"

STEP "kubectl get ns"
ok "$ADMIN" get ns
for ns in prod-tenant-7 prod-tenant-8 kube-system default; do
    grep -Eq "^$ns +Active " <<<"$out" || fail "get ns table lacks $ns Active: $out"
done
contains "$(head -1 <<<"$out")" "STATUS" "namespace table header (server-side Table)"
ok "$ADMIN" get ns -l rbl.io/tenant -o json
eq "$(jq -r '[.items[].metadata.name] | join(" ")' <<<"$out")" "prod-tenant-7 prod-tenant-8" "namespaces with tenant label"

STEP "get configmap db-pool-config"
ok "$ADMIN" get configmap db-pool-config "${P7[@]}" -o json
eq "$(jq -c -S .data <<<"$out")" '{"idle_timeout":"30s","max_connections":"250"}' "configmap data"
eq "$(jq -r .kind <<<"$out")" "ConfigMap" "kind"
rv0=$(jq -r .metadata.resourceVersion <<<"$out")
[[ $rv0 =~ ^[0-9]+$ ]] || fail "resourceVersion not numeric string: $rv0"
[[ $(jq -r .metadata.uid <<<"$out") =~ ^[0-9a-f-]{36}$ ]] || fail "uid missing"
cp <(echo "$out") "$WORK/stale-cm.json"

STEP "patch --type merge"
ok "$ADMIN" patch configmap db-pool-config "${P7[@]}" --type merge -p '{"data":{"max_connections":"500","tmp":"x"}}'
contains "$out" "configmap/db-pool-config patched" "merge patch output"
ok "$ADMIN" get configmap db-pool-config "${P7[@]}" -o json
eq "$(jq -c -S .data <<<"$out")" '{"idle_timeout":"30s","max_connections":"500","tmp":"x"}' "after merge patch"
rv1=$(jq -r .metadata.resourceVersion <<<"$out")
((rv1 > rv0)) || fail "resourceVersion did not increase ($rv0 -> $rv1)"
ok "$ADMIN" patch configmap db-pool-config "${P7[@]}" --type merge -p '{"data":{"tmp":null}}'
ok "$ADMIN" get configmap db-pool-config "${P7[@]}" -o json
eq "$(jq -c -S .data <<<"$out")" '{"idle_timeout":"30s","max_connections":"500"}' "merge patch null deletes key"
eq "$(log_count '.method=="PATCH" and .content_type=="application/merge-patch+json" and (.path|endswith("/configmaps/db-pool-config"))' | tr -d ' ')" \
    "2" "merge patches logged with application/merge-patch+json"

STEP "patch --type json"
ok "$ADMIN" patch configmap db-pool-config "${P7[@]}" --type json \
    -p '[{"op":"test","path":"/data/max_connections","value":"500"},{"op":"replace","path":"/data/max_connections","value":"600"},{"op":"add","path":"/data/owner","value":"sre"}]'
ok "$ADMIN" get configmap db-pool-config "${P7[@]}" -o json
eq "$(jq -c -S .data <<<"$out")" '{"idle_timeout":"30s","max_connections":"600","owner":"sre"}' "after json patch"
rv_before=$(jq -r .metadata.resourceVersion <<<"$out")
log_mark
bad "$ADMIN" patch configmap db-pool-config "${P7[@]}" --type json \
    -p '[{"op":"test","path":"/data/max_connections","value":"999"},{"op":"replace","path":"/data/max_connections","value":"1"}]'
contains "$err" "The request is invalid" "failed json patch test op error text"
contains "$err" "test failed" "failed json patch test op error text"
ok "$ADMIN" get configmap db-pool-config "${P7[@]}" -o json
eq "$(jq -r .data.max_connections <<<"$out")" "600" "failed test op leaves object unchanged"
eq "$(jq -r .metadata.resourceVersion <<<"$out")" "$rv_before" "failed test op leaves resourceVersion unchanged"
eq "$(log_since_count '.method=="PATCH" and .content_type=="application/json-patch+json" and .status==422' | tr -d ' ')" \
    "1" "json patch failure logged as 422"

STEP "patch --type strategic (env merged by name)"
ok "$ADMIN" patch deployment api "${P7[@]}" --type strategic \
    -p '{"spec":{"template":{"spec":{"containers":[{"name":"app","env":[{"name":"LOG_LEVEL","value":"debug"},{"name":"POOL_SIZE","$patch":"delete"},{"name":"NEW_VAR","value":"1"}]}]}}}}'
ok "$ADMIN" get deployment api "${P7[@]}" -o json
eq "$(jq -c '.spec.template.spec.containers[0].env' <<<"$out")" \
    '[{"name":"DB_HOST","value":"db.prod-tenant-7.svc"},{"name":"LOG_LEVEL","value":"debug"},{"name":"NEW_VAR","value":"1"}]' \
    "strategic patch keeps other env entries, deletes by \$patch"
eq "$(jq -c '[.spec.template.spec.containers[0].ports[].containerPort]' <<<"$out")" '[8080,9090]' "ports untouched"
eq "$(jq -r '.spec.template.spec.containers[0].image' <<<"$out")" "busybox:1.36" "image untouched"
eq "$(jq -r .metadata.generation <<<"$out")" "2" "generation bumped by spec change"
eq "$(jq -r .status.observedGeneration <<<"$out")" "2" "observedGeneration follows"
ok "$ADMIN" patch deployment api "${P7[@]}" --type strategic \
    -p '{"spec":{"template":{"spec":{"containers":[{"name":"app","ports":[{"containerPort":9090,"name":"prom"}]}]}}}}'
ok "$ADMIN" get deployment api "${P7[@]}" -o json
eq "$(jq -c '[.spec.template.spec.containers[0].ports[] | [.containerPort,.name]]' <<<"$out")" \
    '[[8080,"http"],[9090,"prom"]]' "ports merged by containerPort"
gen=$(jq -r .metadata.generation <<<"$out")
eq "$(log_count '.method=="PATCH" and .content_type=="application/strategic-merge-patch+json"' | tr -d ' ')" "2" \
    "strategic patches logged"
ok "$ADMIN" patch deployment api "${P7[@]}" --type merge -p '{"metadata":{"labels":{"tier":"backend"}}}'
ok "$ADMIN" get deployment api "${P7[@]}" -o json
eq "$(jq -r .metadata.generation <<<"$out")" "$gen" "metadata-only change does not bump generation"
eq "$(jq -r .metadata.labels.tier <<<"$out")" "backend" "label added by merge patch"

STEP "rollout restart"
gen=$(jq -r .metadata.generation <<<"$out")
log_mark
ok "$ADMIN" rollout restart deployment/api "${P7[@]}"
contains "$out" "deployment.apps/api restarted" "rollout restart output"
ok "$ADMIN" get deployment api "${P7[@]}" -o json
restarted=$(jq -r '.spec.template.metadata.annotations["kubectl.kubernetes.io/restartedAt"] // empty' <<<"$out")
[[ $restarted =~ ^20[0-9]{2}-[0-9]{2}-[0-9]{2}T ]] || fail "restartedAt annotation missing: $restarted"
eq "$(jq -r .metadata.generation <<<"$out")" "$((gen + 1))" "generation bumped by rollout restart"
eq "$(log_since_count '.method=="PATCH" and .content_type=="application/strategic-merge-patch+json" and (.query|test("fieldManager=kubectl-rollout"))' | tr -d ' ')" \
    "1" "rollout restart = one strategic merge PATCH"
ok "$ADMIN" rollout status deployment/api "${P7[@]}" --timeout=10s
contains "$out" "successfully rolled out" "rollout status"

STEP "scale"
log_mark
ok "$ADMIN" scale deployment/api --replicas=5 "${P7[@]}"
contains "$out" "deployment.apps/api scaled" "scale output"
ok "$ADMIN" get deployment api "${P7[@]}" -o json
eq "$(jq -r .spec.replicas <<<"$out")" "5" "spec.replicas after scale"
eq "$(log_since_count '.method=="PATCH" and .path=="/apis/apps/v1/namespaces/prod-tenant-7/deployments/api/scale"' | tr -d ' ')" \
    "1" "scale goes through the scale subresource"
ok "$ADMIN" get --raw /apis/apps/v1/namespaces/prod-tenant-7/deployments/api/scale
eq "$(jq -c '[.kind,.apiVersion,.spec.replicas,.status.selector]' <<<"$out")" '["Scale","autoscaling/v1",5,"app=api"]' "Scale object"
ok "$ADMIN" get deployment api "${P8[@]}" -o json
eq "$(jq -r .spec.replicas <<<"$out")" "2" "other tenant's deployment untouched"

STEP "label namespace"
ok "$ADMIN" label ns prod-tenant-8 rbl.io/quarantine=true
contains "$out" "namespace/prod-tenant-8 labeled" "label output"
ok "$ADMIN" get ns prod-tenant-8 -o json
eq "$(jq -c -S .metadata.labels <<<"$out")" \
    '{"kubernetes.io/metadata.name":"prod-tenant-8","rbl.io/quarantine":"true","rbl.io/tenant":"prod-tenant-8"}' "namespace labels"
ok "$ADMIN" label ns prod-tenant-8 rbl.io/quarantine-
ok "$ADMIN" get ns prod-tenant-8 -o json
eq "$(jq -r '.metadata.labels["rbl.io/quarantine"] // "absent"' <<<"$out")" "absent" "label removed"

STEP "label selectors"
ok "$ADMIN" get deployments -A -l app=api -o json
eq "$(jq -r '[.items[] | .metadata.namespace + "/" + .metadata.name] | join(" ")' <<<"$out")" \
    "prod-tenant-7/api prod-tenant-8/api" "deployments -A -l app=api"
ok "$ADMIN" get --raw '/apis/apps/v1/deployments?labelSelector=app%3Dapi'
eq "$(jq -r .kind <<<"$out")" "DeploymentList" "list kind"
eq "$(jq -r '.items | length' <<<"$out")" "2" "raw list across namespaces"
[[ $(jq -r .metadata.resourceVersion <<<"$out") =~ ^[0-9]+$ ]] || fail "list resourceVersion"
ok "$ADMIN" get deployments -A -l 'app in (api,web),tier!=frontend' -o name
eq "$(paste -sd' ' <<<"$out")" "deployment.apps/api deployment.apps/api" "set-based selector"
ok "$ADMIN" get deployments -A -l 'tier' -o json
eq "$(jq -r '[.items[].metadata.namespace] | join(" ")' <<<"$out")" "prod-tenant-7" "exists selector"
ok "$ADMIN" get deployments -A -l '!tier' -o json
eq "$(jq -r '[.items[].metadata.namespace] | join(" ")' <<<"$out")" "prod-tenant-8" "!key selector"
ok "$ADMIN" get configmaps "${P7[@]}" -l 'app notin (api)' -o json
eq "$(jq -r '.items | length' <<<"$out")" "0" "notin selector"
ok "$ADMIN" get pods -A --field-selector status.phase=Running -o json
eq "$(jq -r '[.items[].metadata.name] | join(" ")' <<<"$out")" "api-7d9f8-abcde" "field selector status.phase"
ok "$ADMIN" get deploy api "${P7[@]}"
grep -Eq '^api +5/5 +5 +5 ' <<<"$out" || fail "deployment table row: $out"

STEP "auth can-i as alice (client certificate CN=alice O=sre)"
ok "$ALICE" auth can-i patch configmaps -n prod-tenant-7
eq "$out" "yes" "alice can patch configmaps in prod-tenant-7"
bad "$ALICE" auth can-i patch configmaps -n prod-tenant-8
eq "$out" "no" "alice cannot patch configmaps in prod-tenant-8"
ok "$ALICE" auth can-i get configmaps -n prod-tenant-8
eq "$out" "yes" "alice (group sre) can get configmaps in prod-tenant-8"
bad "$ALICE" auth can-i list configmaps -n prod-tenant-8
ok "$ALICE" auth can-i patch deployments.apps --subresource=scale -n prod-tenant-7
bad "$ALICE" auth can-i delete namespaces
eq "$(log_count '.path=="/apis/authorization.k8s.io/v1/selfsubjectaccessreviews" and .user=="alice" and .status==201' | tr -d ' ')" \
    "6" "SelfSubjectAccessReviews posted as alice"
ok "$ADMIN" auth can-i '*' '*' --all-namespaces
eq "$out" "yes" "system:masters can do everything"

STEP "RBAC enforcement with kubectl as alice"
ok "$ALICE" patch configmap db-pool-config "${P7[@]}" --type merge -p '{"data":{"edited_by":"alice"}}'
ok "$ALICE" get deployment api "${P8[@]}" -o json
bad "$ALICE" patch deployment api "${P8[@]}" --type merge -p '{"spec":{"replicas":3}}'
contains "$err" 'Error from server (Forbidden): deployments.apps "api" is forbidden: User "alice" cannot patch resource "deployments" in API group "apps" in the namespace "prod-tenant-8"' "forbidden error text"
bad "$ALICE" get configmaps "${P8[@]}"
contains "$err" "cannot list resource \"configmaps\"" "list forbidden"

STEP "--dry-run=server leaves the object unchanged"
ok "$ADMIN" get configmap db-pool-config "${P7[@]}" -o json
before=$out
log_mark
ok "$ADMIN" patch configmap db-pool-config "${P7[@]}" --type merge -p '{"data":{"max_connections":"1"}}' --dry-run=server -o json
eq "$(jq -r .data.max_connections <<<"$out")" "1" "dry-run response shows the patched object"
ok "$ADMIN" get configmap db-pool-config "${P7[@]}" -o json
eq "$(jq -c -S . <<<"$out")" "$(jq -c -S . <<<"$before")" "object unchanged after dry-run (incl. resourceVersion)"
eq "$(log_since_count '.method=="PATCH" and (.query|test("dryRun=All"))' | tr -d ' ')" "1" "dry-run PATCH sent with dryRun=All"
ok "$ADMIN" scale deployment/api --replicas=9 "${P7[@]}" --dry-run=server
ok "$ADMIN" get deployment api "${P7[@]}" -o json
eq "$(jq -r .spec.replicas <<<"$out")" "5" "dry-run scale does not store"
# rbl's dry-run plan of kube.rollout_restart is this: a strategic patch with dryRun=All
dep_before=$out
log_mark
ok "$ADMIN" patch deployment api "${P7[@]}" --type strategic --dry-run=server -o json \
  -p '{"spec":{"template":{"metadata":{"annotations":{"kubectl.kubernetes.io/restartedAt":"2026-01-17T03:42:15Z"}}}}}'
contains "$(jq -r '.spec.template.metadata.annotations["kubectl.kubernetes.io/restartedAt"]' <<<"$out")" "2026-01-17T03:42:15Z" \
  "dry-run restart answers the object with the restart annotation"
eq "$(log_since_count '.method=="PATCH" and .content_type=="application/strategic-merge-patch+json" and (.query|test("dryRun=All"))' | tr -d ' ')" "1" \
  "dry-run restart sent as a strategic merge patch with dryRun=All"
ok "$ADMIN" get deployment api "${P7[@]}" -o json
eq "$(jq -c -S . <<<"$out")" "$(jq -c -S . <<<"$dep_before")" "dry-run restart stores nothing (incl. resourceVersion)"

STEP "watch: kubectl wait sees a later change"
(sleep 1 && "$KUBECTL" --kubeconfig "$ADMIN" patch configmap db-pool-config "${P7[@]}" --type merge \
    -p '{"data":{"flag":"on"}}' >/dev/null 2>&1) &
patcher=$!
ok "$ADMIN" wait --for=jsonpath='{.data.flag}'=on configmap/db-pool-config "${P7[@]}" --timeout=15s
wait "$patcher" || fail "background patch failed"
contains "$out" "configmap/db-pool-config condition met" "kubectl wait output"
[[ $(log_count '.query|test("watch=true")' | tr -d ' ') -ge 1 ]] || fail "kubectl wait did not watch"

STEP "replace of a stale object -> 409 Conflict"
log_mark
bad "$ADMIN" replace -f "$WORK/stale-cm.json"
contains "$err" "Error from server (Conflict)" "conflict error"
contains "$err" 'Operation cannot be fulfilled on configmaps "db-pool-config": the object has been modified; please apply your changes to the latest version and try again' "conflict message"
eq "$(log_since_count '.method=="PUT" and .status==409' | tr -d ' ')" "1" "PUT answered 409"
ok "$ADMIN" get configmap db-pool-config "${P7[@]}" -o json
jq '.data.max_connections="700"' <<<"$out" >"$WORK/fresh-cm.json"
ok "$ADMIN" replace -f "$WORK/fresh-cm.json"
ok "$ADMIN" get configmap db-pool-config "${P7[@]}" -o json
eq "$(jq -r .data.max_connections <<<"$out")" "700" "replace with current resourceVersion succeeds"

STEP "create / apply / delete / validation errors"
cat >"$WORK/gen.yaml" <<'EOF'
apiVersion: v1
kind: ConfigMap
metadata:
  generateName: runbook-
  namespace: prod-tenant-7
data: {a: "1"}
EOF
ok "$ADMIN" create -f "$WORK/gen.yaml" -o json
[[ $(jq -r .metadata.name <<<"$out") =~ ^runbook-[a-z0-9]{5}$ ]] || fail "generateName: $(jq -r .metadata.name <<<"$out")"
cat >"$WORK/applied.yaml" <<'EOF'
apiVersion: v1
kind: ConfigMap
metadata: {name: applied, namespace: prod-tenant-7}
data: {k: v1}
EOF
ok "$ADMIN" apply -f "$WORK/applied.yaml"
contains "$out" "configmap/applied created" "apply create"
sed -i 's/k: v1/k: v2/' "$WORK/applied.yaml"
ok "$ADMIN" apply -f "$WORK/applied.yaml"
contains "$out" "configmap/applied configured" "apply update"
ok "$ADMIN" get cm applied "${P7[@]}" -o json
eq "$(jq -r .data.k <<<"$out")" "v2" "applied value"
ok "$ADMIN" delete cm applied "${P7[@]}"
contains "$out" 'configmap "applied" deleted' "delete output"
bad "$ADMIN" get cm applied "${P7[@]}"
contains "$err" 'Error from server (NotFound): configmaps "applied" not found' "not found text"
bad "$ADMIN" create configmap Bad_Name "${P7[@]}" --from-literal=a=b
contains "$err" 'ConfigMap "Bad_Name" is invalid: metadata.name: Invalid value: "Bad_Name"' "invalid name"
bad "$ADMIN" create configmap fine -n no-such-ns --from-literal=a=b
contains "$err" 'namespaces "no-such-ns" not found' "unknown namespace"
bad "$ADMIN" create configmap db-pool-config "${P7[@]}" --from-literal=a=b
contains "$err" 'configmaps "db-pool-config" already exists' "already exists"
printf 'apiVersion: v1\nkind: ConfigMap\nmetadata: {name: typo, namespace: prod-tenant-7}\ndtaa: {a: b}\n' >"$WORK/typo.yaml"
bad "$ADMIN" create -f "$WORK/typo.yaml"
contains "$err" 'strict decoding error: unknown field "dtaa"' "server-side field validation (kubectl --validate=strict default)"

STEP "percent-encoded names never reach another object"
ok "$ADMIN" get --raw /api/v1/namespaces/prod-tenant-7/configmaps/db-pool%2Dconfig
eq "$(jq -r .metadata.name <<<"$out")" "db-pool-config" "percent-decoding of a segment"
for p in "/api/v1/namespaces/prod-tenant-7/configmaps/..%2Fsecrets%2Fdb-credentials" \
    "/api/v1/namespaces/prod-tenant-7%2Fconfigmaps%2Fdb-pool-config" \
    "/api/v1/namespaces/prod-tenant-7/configmaps/%2E%2E" \
    "/api/v1/namespaces/prod-tenant-7/configmaps/db-pool-config%252F..%252Fx"; do
    code=$(curl -s -o "$WORK/trav.json" -w '%{http_code}' --cacert "$CERTS/ca.crt" \
        -H 'Authorization: Bearer admin-token' "$KUBE_STANDIN_URL$p")
    [[ $code == 404 || $code == 400 ]] || fail "traversal $p answered $code: $(cat "$WORK/trav.json")"
    eq "$(jq -r .kind "$WORK/trav.json")" "Status" "traversal answer is a Status"
done

STEP "leases (coordination.k8s.io/v1): create, get, update, resourceVersion conflicts"
cat >"$WORK/lease.yaml" <<'YAML'
apiVersion: coordination.k8s.io/v1
kind: Lease
metadata: { name: am-group-1, namespace: prod-tenant-7 }
spec: { holderIdentity: replica-a, leaseDurationSeconds: 15 }
YAML
ok "$ADMIN" create -f "$WORK/lease.yaml" -o json
eq "$(jq -r '.spec.holderIdentity' <<<"$out")" "replica-a" "lease created"
rv=$(jq -r '.metadata.resourceVersion' <<<"$out")
ok "$ADMIN" get lease am-group-1 "${P7[@]}" -o json
eq "$(jq -r '.kind + " " + .apiVersion' <<<"$out")" "Lease coordination.k8s.io/v1" "lease kind and group"
ok "$ADMIN" get leases "${P7[@]}"
contains "$out" "am-group-1" "kubectl get leases lists it"
# replica b takes it over with the resourceVersion it read
jq '.spec.holderIdentity = "replica-b"' <<<"$(kubectl --kubeconfig "$ADMIN" get lease am-group-1 "${P7[@]}" -o json)" >"$WORK/lease-b.json"
ok "$ADMIN" replace -f "$WORK/lease-b.json" -o json
eq "$(jq -r '.spec.holderIdentity' <<<"$out")" "replica-b" "lease updated"
[[ $(jq -r '.metadata.resourceVersion' <<<"$out") != "$rv" ]] || fail "resourceVersion did not change"
# replica a, still holding the old resourceVersion, loses the race: 409 Conflict
jq --arg rv "$rv" '.spec.holderIdentity = "replica-a" | .metadata.resourceVersion = $rv' "$WORK/lease-b.json" >"$WORK/lease-a.json"
bad "$ADMIN" replace -f "$WORK/lease-a.json"
contains "$err" 'Operation cannot be fulfilled on leases.coordination.k8s.io "am-group-1": the object has been modified' "lease conflict message"
ok "$ADMIN" get lease am-group-1 "${P7[@]}" -o jsonpath='{.spec.holderIdentity}'
eq "$out" "replica-b" "the lost race changed nothing"
# an update that names no resourceVersion is refused for Leases (no unconditional update): 422.
# kubectl replace fills in the current resourceVersion itself, so this PUT is sent with curl.
jq '.spec.holderIdentity = "replica-c" | del(.metadata.resourceVersion)' "$WORK/lease-b.json" >"$WORK/lease-c.json"
code=$(curl -s -o "$WORK/lease-c.out" -w '%{http_code}' --cacert "$CERTS/ca.crt" -X PUT \
  -H 'Authorization: Bearer admin-token' -H 'Content-Type: application/json' --data-binary @"$WORK/lease-c.json" \
  "$KUBE_STANDIN_URL/apis/coordination.k8s.io/v1/namespaces/prod-tenant-7/leases/am-group-1")
eq "$code" "422" "lease update without resourceVersion refused"
eq "$(jq -r '.message' "$WORK/lease-c.out")" \
  'leases.coordination.k8s.io "am-group-1" is invalid: metadata.resourceVersion: Invalid value: 0x0: must be specified for an update' \
  "the API server's message"
ok "$ADMIN" get lease am-group-1 "${P7[@]}" -o jsonpath='{.spec.holderIdentity}'
eq "$out" "replica-b" "the refused update changed nothing"
bad "$ADMIN" create -f "$WORK/lease.yaml"
contains "$err" 'leases.coordination.k8s.io "am-group-1" already exists' "a second create is AlreadyExists"
# acquireTime/renewTime are metav1.MicroTime: RFC 3339 with exactly six fraction digits, decoded
# with Go's time.Parse before validation, so anything else is 400 BadRequest (kubectl sends the
# fields as written: it does not decode Leases).
jq '.spec.renewTime = "2026-12-01T13:40:00Z"' "$WORK/lease-b.json" >"$WORK/lease-d.json"
bad "$ADMIN" replace -f "$WORK/lease-d.json"
contains "$err" 'Lease in version "v1" cannot be handled as a Lease: parsing time "2026-12-01T13:40:00Z" as "2006-01-02T15:04:05.000000Z07:00": cannot parse "Z" as ".000000"' \
  "a renewTime without microseconds is refused with Go's parse error"
cat >"$WORK/lease-bad.yaml" <<'YAML'
apiVersion: coordination.k8s.io/v1
kind: Lease
metadata: { name: am-group-2, namespace: prod-tenant-7 }
spec: { holderIdentity: replica-a, acquireTime: "yesterday" }
YAML
bad "$ADMIN" create -f "$WORK/lease-bad.yaml"
contains "$err" 'Lease in version "v1" cannot be handled as a Lease: parsing time "yesterday" as "2006-01-02T15:04:05.000000Z07:00": cannot parse "yesterday" as "2006"' \
  "an acquireTime that is no time is refused"
bad "$ADMIN" get lease am-group-2 "${P7[@]}"
contains "$err" 'NotFound' "the refused create made nothing"
rv=$(kubectl --kubeconfig "$ADMIN" get lease am-group-1 "${P7[@]}" -o jsonpath='{.metadata.resourceVersion}')
jq --arg rv "$rv" '.metadata.resourceVersion = $rv | .spec.renewTime = "2026-12-01T25:00:00.000000Z"' \
  "$WORK/lease-b.json" >"$WORK/lease-e.json"
code=$(curl -s -o "$WORK/lease-e.out" -w '%{http_code}' --cacert "$CERTS/ca.crt" -X PUT \
  -H 'Authorization: Bearer admin-token' -H 'Content-Type: application/json' --data-binary @"$WORK/lease-e.json" \
  "$KUBE_STANDIN_URL/apis/coordination.k8s.io/v1/namespaces/prod-tenant-7/leases/am-group-1")
eq "$code" "400" "an out-of-range renewTime is 400"
eq "$(jq -r '.reason + ": " + .message' "$WORK/lease-e.out")" \
  'BadRequest: Lease in version "v1" cannot be handled as a Lease: parsing time "2026-12-01T25:00:00.000000Z": hour out of range' \
  "Go's range message"
jq --arg rv "$rv" '.metadata.resourceVersion = $rv | .spec.renewTime = "2026-12-01T13:40:00.123456Z" | .spec.acquireTime = "2026-12-01T14:40:00.000000+01:00"' \
  "$WORK/lease-b.json" >"$WORK/lease-f.json"
ok "$ADMIN" replace -f "$WORK/lease-f.json" -o json
eq "$(jq -r '.spec.renewTime' <<<"$out")" "2026-12-01T13:40:00.123456Z" "a valid MicroTime is accepted"
ok "$ADMIN" delete lease am-group-1 "${P7[@]}"

STEP "wrong token -> 401"
log_mark
bad "$WRONG" get configmap db-pool-config "${P7[@]}"
contains "$err" "error: You must be logged in to the server (Unauthorized)" "kubectl's 401 text"
[[ $(log_since_count '.status==401' | tr -d ' ') -ge 1 ]] || fail "401 not logged"
eq "$(log_since_count '.status!=401' | tr -d ' ')" "0" "nothing but 401s for a wrong token"
# kubectl prompts for a username when a kubeconfig user has no credentials
# (stdin EOF -> "error: EOF"), so probe "no credentials" with curl.
code=$(curl -s -o "$WORK/anon.json" -w '%{http_code}' --cacert "$CERTS/ca.crt" "$KUBE_STANDIN_URL/api/v1/namespaces")
eq "$code" "401" "no credentials -> 401"
eq "$(jq -c '[.kind,.apiVersion,.status,.reason,.code,.message]' "$WORK/anon.json")" \
    '["Status","v1","Failure","Unauthorized",401,"Unauthorized"]' "401 Status object"

STEP "CA mismatch fails TLS"
log_mark
bad "$OTHERCA" get ns
contains "$err" "certificate signed by unknown authority" "TLS verification error"
eq "$(log_since | wc -l | tr -d ' ')" "0" "no HTTP request reached the stand-in over an unverified TLS connection"

STEP "request log"
eq "$(log_count '.user==null and .status!=401' | tr -d ' ')" "0" "unauthenticated requests only ever got 401"
eq "$(log_count '.method=="PATCH" and .path=="/api/v1/namespaces/prod-tenant-8/configmaps/db-pool-config"' | tr -d ' ')" \
    "0" "no patch was ever sent to prod-tenant-8's configmap"
jq -e -s 'all(.[]; has("method") and has("path") and has("query") and has("user") and has("status") and has("content_type") and has("body"))' \
    "$KUBE_STANDIN_LOG" >/dev/null || fail "log lines lack required keys"
jq -e -s '[.[] | select(.method=="PATCH" and .content_type=="application/merge-patch+json" and (.path|endswith("/configmaps/db-pool-config")))][0].body | fromjson | .data.max_connections == "500"' \
    "$KUBE_STANDIN_LOG" >/dev/null || fail "first merge patch body not logged verbatim"

STEP "second stand-in: rollouts over time, ReplicaSet history, pod logs, events, pod delete"
kube_standin_stop
kube_standin_start --fixtures "$HERE/fixtures/basic.yaml" --fixtures "$HERE/fixtures/incident.yaml" \
    --tls-cert "$CERTS/server.crt" --tls-key "$CERTS/server.key" --token admin-token=admin:system:masters \
    --authorization-mode RBAC --rollout-ms 300
kube_write_kubeconfig "$ADMIN" "$KUBE_STANDIN_URL" --ca "$CERTS/ca.crt" --token admin-token
ok "$ADMIN" api-resources -o name
grep -qx "replicasets.apps" <<<"$out" || fail "api-resources lacks replicasets.apps"
ok "$ADMIN" get --raw /api/v1
eq "$(jq -r '[.resources[] | select(.name=="pods/log") | .verbs | join(",")] | join("")' <<<"$out")" "get" "discovery of pods/log"
ok "$ADMIN" get rs "${P7[@]}" -l app=api -o json
eq "$(jq -r '[.items[] | .metadata.annotations["deployment.kubernetes.io/revision"] + ":" + (.spec.replicas|tostring)] | join(" ")' <<<"$out")" \
    "1:2" "a fixture Deployment owns one ReplicaSet, revision 1"
eq "$(jq -r '.items[0].metadata.ownerReferences[0] | .kind + "/" + .name + "/" + (.controller|tostring)' <<<"$out")" \
    "Deployment/api/true" "the ReplicaSet's controller reference"

STEP "rollout status follows a rollout that takes time (kubectl rollout status)"
# held at its start (the stall annotation) until kubectl watches, so no machine load can let the
# rollout finish before kubectl looks
ok "$ADMIN" annotate deployment/api "${P7[@]}" standin.rbl.io/stall-rollout=true
ok "$ADMIN" set env deployment/api "${P7[@]}" LOG_LEVEL=warn -o json
eq "$(jq -r '(.metadata.generation|tostring) + ">" + (.status.observedGeneration|tostring)' <<<"$out")" "2>1" \
    "the write's answer: the new generation is not observed yet"
watches() { log_count '.path=="/apis/apps/v1/namespaces/prod-tenant-7/deployments" and (.query|test("watch=true"))' | tr -d ' '; }
w0=$(watches)
"$KUBECTL" --kubeconfig "$ADMIN" rollout status deployment/api "${P7[@]}" --timeout=60s >"$WORK/rs.out" 2>&1 &
rs=$!
for _ in $(seq 600); do (($(watches) > w0)) && break; sleep 0.1; done
(($(watches) > w0)) || fail "kubectl rollout status did not watch"
ok "$ADMIN" annotate deployment/api "${P7[@]}" standin.rbl.io/stall-rollout-
wait "$rs" || fail "kubectl rollout status failed: $(cat "$WORK/rs.out")"
out=$(cat "$WORK/rs.out")
contains "$out" "0 out of 2 new replicas have been updated" "rollout status saw the rollout held at its start"
contains "$out" 'deployment "api" successfully rolled out' "rollout status end"
ok "$ADMIN" get deployment api "${P7[@]}" -o json
eq "$(jq -c '[.status.updatedReplicas, .status.availableReplicas, .metadata.annotations["deployment.kubernetes.io/revision"]]' <<<"$out")" \
    '[2,2,"2"]' "status converged, revision 2"

STEP "kubectl wait for a condition"
ok "$ADMIN" wait --for=condition=Available deployment/api "${P7[@]}" --timeout=10s
contains "$out" "deployment.apps/api condition met" "kubectl wait condition"
bad "$ADMIN" wait --for=condition=Progressing=False deployment/api "${P7[@]}" --timeout=1s
contains "$err" "timed out waiting for the condition" "kubectl wait times out"

STEP "a rollout that stalls exceeds its progress deadline"
ok "$ADMIN" patch deployment stuck "${P7[@]}" --type merge -p '{"spec":{"template":{"metadata":{"labels":{"app":"stuck","v":"2"}}}}}'
bad "$ADMIN" rollout status deployment/stuck "${P7[@]}" --timeout=20s
contains "$err" 'deployment "stuck" exceeded its progress deadline' "progress deadline"
ok "$ADMIN" get deployment stuck "${P7[@]}" -o json
eq "$(jq -r '.status.conditions[] | select(.type=="Progressing") | .status + "/" + .reason' <<<"$out")" \
    "False/ProgressDeadlineExceeded" "Progressing condition"

STEP "kubectl rollout undo restores the previous ReplicaSet's template"
ok "$ADMIN" rollout history deployment/api "${P7[@]}"
grep -Eq '^1 ' <<<"$out" && grep -Eq '^2 ' <<<"$out" || fail "rollout history: $out"
log_mark
ok "$ADMIN" rollout undo deployment/api "${P7[@]}"
contains "$out" "deployment.apps/api rolled back" "rollout undo output"
eq "$(log_since_count '.method=="PATCH" and .content_type=="application/json-patch+json" and (.path|endswith("/deployments/api"))' | tr -d ' ')" \
    "1" "rollout undo = one JSON patch of the Deployment"
ok "$ADMIN" rollout status deployment/api "${P7[@]}" --timeout=20s
ok "$ADMIN" get deployment api "${P7[@]}" -o json
eq "$(jq -r '.spec.template.spec.containers[0].env[] | select(.name=="LOG_LEVEL") | .value' <<<"$out")" "info" "template restored"
eq "$(jq -r '.metadata.annotations["deployment.kubernetes.io/revision"]' <<<"$out")" "3" "the old ReplicaSet became revision 3"
ok "$ADMIN" get rs "${P7[@]}" -l app=api -o json
eq "$(jq -r '[.items[] | .metadata.annotations["deployment.kubernetes.io/revision"] + ":" + (.spec.replicas|tostring)] | sort | join(" ")' <<<"$out")" \
    "2:0 3:2" "two ReplicaSets: the rolled-back one scaled down"
bad "$ADMIN" rollout undo deployment/api "${P7[@]}" --to-revision=9
contains "$err" "unable to find specified revision 9" "unknown revision"

STEP "kubectl logs"
ok "$ADMIN" logs batch-1 "${P7[@]}" -c main --tail=2
eq "$out" $'ERROR pool exhausted (250/250)\nretrying in 5s' "logs --tail"
ok "$ADMIN" logs batch-1 "${P7[@]}" -c main --since=1h
eq "$(wc -l <<<"$out" | tr -d ' ')" "3" "logs --since drops the old lines"
ok "$ADMIN" logs batch-1 "${P7[@]}" -c main --previous
eq "$out" $'booting\npanic: too many connections' "logs --previous"
ok "$ADMIN" logs batch-1 "${P7[@]}" -c main --timestamps --tail=1
[[ $out =~ ^20[0-9-]+T[0-9:.]+Z\ retrying\ in\ 5s$ ]] || fail "logs --timestamps: $out"
bad "$ADMIN" logs batch-1 "${P7[@]}" -c sidecar --previous
contains "$err" 'previous terminated container "sidecar" in pod "batch-1" not found' "no previous instance"
bad "$ADMIN" logs batch-1 "${P7[@]}" -c nope
contains "$err" "container nope is not valid for pod batch-1" "unknown container"
eq "$(log_count '(.path|endswith("/pods/batch-1/log")) and .response_content_type=="text/plain"' | tr -d ' ')" "4" \
    "the four reads went to the pods/log subresource, answered as text/plain"

STEP "kubectl get events"
ok "$ADMIN" get events "${P7[@]}" --field-selector involvedObject.name=batch-1,involvedObject.kind=Pod -o json
eq "$(jq -r '[.items[] | .type + "/" + .reason + "/" + (.count|tostring)] | join(" ")' <<<"$out")" "Warning/BackOff/7" \
    "events of one object by field selector"
ok "$ADMIN" get events "${P7[@]}" --field-selector involvedObject.name=api,involvedObject.kind=Deployment -o json
contains "$(jq -r '[.items[].message] | join("|")' <<<"$out")" "Scaled up replica set api-" "the deployment controller's events"
ok "$ADMIN" get events "${P7[@]}"
contains "$(head -1 <<<"$out")" "REASON" "events table"
contains "$out" "pod/batch-1" "events table names the object"

STEP "kubectl delete pod: gone, replaced by its ReplicaSet, Killing event"
ok "$ADMIN" get pods "${P7[@]}" -l app=api -o json
eq "$(jq -r '[.items[].metadata.name] | join(" ")' <<<"$out")" "api-7d9f8-abcde" "the pod before"
ok "$ADMIN" delete pod api-7d9f8-abcde "${P7[@]}"
contains "$out" 'pod "api-7d9f8-abcde" deleted' "delete pod output"
bad "$ADMIN" get pod api-7d9f8-abcde "${P7[@]}"
contains "$err" 'pods "api-7d9f8-abcde" not found' "the deleted pod is gone"
ok "$ADMIN" get pods "${P7[@]}" -l app=api -o json
[[ $(jq -r '.items[0].metadata.name' <<<"$out") =~ ^api-[a-z0-9]{10}-[a-z0-9]{5}$ ]] || fail "no replacement pod: $out"
eq "$(jq -r '.items[0].metadata.ownerReferences[0].kind' <<<"$out")" "ReplicaSet" "the replacement's owner"
ok "$ADMIN" get events "${P7[@]}" --field-selector involvedObject.name=api-7d9f8-abcde -o json
eq "$(jq -r '[.items[].reason] | join(" ")' <<<"$out")" "Killing" "Killing event of the deleted pod"

echo "PASS: kubectl fidelity ($(wc -l <"$KUBE_STANDIN_LOG" | tr -d ' ') requests)"
