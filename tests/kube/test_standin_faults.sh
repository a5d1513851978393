#!/usr/bin/env bash
# Checks the stand-in's own test features with curl: --fail (status codes,
# truncate, hang, COUNT), --delay-ms, --anonymous, tokens over plain HTTP,
# the request log, keep-alive, dryRun on create, preconditions, reviews,
# fixture directories and startup errors.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
source "$HERE/lib.sh"
kube_ensure_deps
command -v jq >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q jq >/dev/null
WORK=$(mktemp -d "${TMPDIR:-/tmp}/kube-faults.XXXXXX")
# removed at exit (lib.sh chains its own cleanup before this); KUBE_STANDIN_KEEP=1 keeps it
[[ ${KUBE_STANDIN_KEEP:-0} == 1 ]] || trap 'rm -rf "$WORK"' EXIT

step=""
STEP() { step=$*; echo "--- $step"; }
fail() { echo "FAIL [$step]: $*" >&2; exit 1; }
eq() { [[ "$1" == "$2" ]] || fail "$3: expected [$2], got [$1]"; }
# req METHOD PATH [curl args...]: sets $code and $body (and $crc = curl exit status)
req() {
    local m=$1 p=$2
    shift 2
    crc=0
    code=$(curl -s -o "$WORK/body" -w '%{http_code}' -X "$m" "$@" "$KUBE_STANDIN_URL$p") || crc=$?
    body=$(cat "$WORK/body" 2>/dev/null || true)
}
CM=/api/v1/namespaces/prod-tenant-7/configmaps/db-pool-config
MERGE=(-H 'Content-Type: application/merge-patch+json')

STEP "startup"
kube_standin_start --fixtures "$HERE/fixtures" --anonymous anon-user --token bob-token=bob:dev,ops \
    --fail "PATCH $CM 500 1" \
    --fail 'GET /api/v1/namespaces/prod-tenant-8/configmaps/.* 403' \
    --fail "PUT $CM truncate 1" \
    --fail 'GET /api/v1/namespaces/kube-system/configmaps hang' \
    --fail 'DELETE /api/v1/namespaces/prod-tenant-7/secrets/db-credentials 409 2' \
    --delay-ms '/api/v1/namespaces/prod-tenant-7/serviceaccounts/.*:700'
[[ $KUBE_STANDIN_URL == http://127.0.0.1:* ]] || fail "URL $KUBE_STANDIN_URL"

STEP "--fail with COUNT: first PATCH 500 (not applied), then normal"
req PATCH "$CM" "${MERGE[@]}" -d '{"data":{"max_connections":"500"}}'
eq "$code" 500 "injected status"
eq "$(jq -c '[.kind,.status,.reason,.code]' <<<"$body")" '["Status","Failure","InternalError",500]' "injected Status"
req GET "$CM"
eq "$(jq -r .data.max_connections <<<"$body")" "250" "injected failure not applied"
req PATCH "$CM" "${MERGE[@]}" -d '{"data":{"max_connections":"500"}}'
eq "$code" 200 "second PATCH passes"
eq "$(jq -r .data.max_connections <<<"$body")" "500" "second PATCH applied"

STEP "--fail without COUNT fails every time; reasons"
for _ in 1 2 3; do
    req GET /api/v1/namespaces/prod-tenant-8/configmaps/anything
    eq "$code" 403 "403 every time"
done
eq "$(jq -r .reason <<<"$body")" "Forbidden" "403 reason"
req DELETE /api/v1/namespaces/prod-tenant-7/secrets/db-credentials
eq "$(jq -r '"\(.code) \(.reason)"' <<<"$body")" "409 Conflict" "409 injected"
req DELETE /api/v1/namespaces/prod-tenant-7/secrets/db-credentials
eq "$code" 409 "409 twice"
req DELETE /api/v1/namespaces/prod-tenant-7/secrets/db-credentials
eq "$code" 200 "third DELETE passes"
eq "$(jq -r .status <<<"$body")" "Success" "delete Status"

STEP "truncate: applied, answer cut short"
req GET "$CM"
cur=$body
req PUT "$CM" -H 'Content-Type: application/json' -d "$(jq -c '.data.max_connections="600"' <<<"$cur")"
[[ $crc != 0 ]] || fail "curl did not notice the truncated answer (code $code)"
req GET "$CM"
eq "$(jq -r .data.max_connections <<<"$body")" "600" "truncated PUT was applied"
eq "$(jq -r 'select(.fault=="truncate") | .method' "$KUBE_STANDIN_LOG")" "PUT" "truncate logged"

STEP "hang: never answered"
start=$(date +%s%N)
req GET /api/v1/namespaces/kube-system/configmaps --max-time 1.5
eq "$crc" 28 "curl timed out"
elapsed=$((($(date +%s%N) - start) / 1000000))
((elapsed >= 1400)) || fail "hang returned after ${elapsed}ms"
eq "$(jq -r 'select(.fault=="hang") | .path' "$KUBE_STANDIN_LOG")" "/api/v1/namespaces/kube-system/configmaps" "hang logged"

STEP "--delay-ms"
start=$(date +%s%N)
req GET /api/v1/namespaces/prod-tenant-7/serviceaccounts/api
elapsed=$((($(date +%s%N) - start) / 1000000))
eq "$code" 200 "delayed request answered"
((elapsed >= 700)) || fail "delay not applied (${elapsed}ms)"
start=$(date +%s%N)
req GET "$CM"
elapsed=$((($(date +%s%N) - start) / 1000000))
((elapsed < 600)) || fail "unrelated request delayed (${elapsed}ms)"

STEP "authentication: anonymous, token, bad token"
req GET /version -H 'Authorization: Bearer bob-token'
eq "$code" 200 "token"
req GET /version -H 'Authorization: Bearer nope'
eq "$code" 401 "bad token is 401 even with --anonymous"
eq "$(jq -c '[.kind,.reason,.code]' <<<"$body")" '["Status","Unauthorized",401]' "401 Status"
req GET /version
eq "$code" 200 "anonymous"
eq "$(tail -n 3 "$KUBE_STANDIN_LOG" | jq -r .user | paste -sd, -)" "bob,null,anon-user" "users in log"

STEP "request log format"
last=$(jq -c 'select(.method=="PATCH" and .status==200)' "$KUBE_STANDIN_LOG" | head -1)
eq "$(jq -r .content_type <<<"$last")" "application/merge-patch+json" "content_type logged"
eq "$(jq -r .body <<<"$last")" '{"data":{"max_connections":"500"}}' "body logged verbatim"
req GET "/api/v1/namespaces/prod-tenant-7/configmaps?labelSelector=app%3Dapi"
eq "$(tail -n 1 "$KUBE_STANDIN_LOG" | jq -r .query)" "labelSelector=app%3Dapi" "raw query logged"

STEP "keep-alive and Content-Length"
curl -s -v -o /dev/null -o /dev/null "$KUBE_STANDIN_URL/version" "$KUBE_STANDIN_URL$CM" 2>"$WORK/verbose"
grep -qi "re-using existing connection\|reusing existing connection" "$WORK/verbose" || fail "connection not reused: $(cat "$WORK/verbose")"
hdr=$(curl -s -D - -o "$WORK/b" "$KUBE_STANDIN_URL$CM")
len=$(grep -i '^content-length:' <<<"$hdr" | tr -dc 0-9)
eq "$len" "$(stat -c %s "$WORK/b")" "Content-Length matches body"

STEP "errors: 404 / 405 / 415 / 400 / 422"
req GET /apis/apps/v1/namespaces/prod-tenant-7/daemonsets
eq "$code" 404 "unknown resource"
req POST "$CM" -H 'Content-Type: application/json' -d '{}'
eq "$code" 405 "POST on an item"
req PATCH "$CM" -H 'Content-Type: application/apply-patch+yaml' -d 'data: {a: b}'
eq "$code" 415 "server-side apply not supported"
req GET '/api/v1/configmaps?labelSelector=a%20in%20(b'
eq "$code" 400 "bad selector"
req GET '/api/v1/pods?fieldSelector=spec.foo%3Dx'
eq "$(jq -r .message <<<"$body")" "field label not supported: spec.foo" "bad field selector"
req POST /apis/apps/v1/namespaces/prod-tenant-7/deployments -H 'Content-Type: application/json' \
    -d '{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"x"},"spec":{"selector":{"matchLabels":{"a":"b"}},"template":{"metadata":{"labels":{"a":"c"}},"spec":{"containers":[{"name":"c","image":"i"}]}}}}'
eq "$code" 422 "selector/template mismatch"
eq "$(jq -r '.details.causes[0].field' <<<"$body")" "spec.template.metadata.labels" "cause field"

STEP "dryRun create, precondition conflicts"
req GET /api/v1/namespaces/prod-tenant-7/configmaps
rv_before=$(jq -r .metadata.resourceVersion <<<"$body")
req POST '/api/v1/namespaces/prod-tenant-7/configmaps?dryRun=All' -H 'Content-Type: application/json' \
    -d '{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"dry"},"data":{"a":"b"}}'
eq "$code" 201 "dry-run create"
eq "$(jq -r '.metadata.resourceVersion // "none"' <<<"$body")" "none" "dry-run create has no resourceVersion"
req GET /api/v1/namespaces/prod-tenant-7/configmaps/dry
eq "$code" 404 "dry-run create stored nothing"
req GET /api/v1/namespaces/prod-tenant-7/configmaps
eq "$(jq -r .metadata.resourceVersion <<<"$body")" "$rv_before" "dry-run did not bump resourceVersion"
req PATCH "$CM" "${MERGE[@]}" -d '{"metadata":{"resourceVersion":"1"},"data":{"a":"b"}}'
eq "$code" 409 "PATCH with stale resourceVersion"
eq "$(jq -r .reason <<<"$body")" "Conflict" "conflict reason"
req PATCH "$CM" -H 'Content-Type: application/json-patch+json' -d '[{"op":"test","path":"/data/nope","value":"x"}]'
eq "$code" 422 "json patch test failure"
req DELETE "$CM" -H 'Content-Type: application/json' -d '{"preconditions":{"resourceVersion":"1"}}'
eq "$code" 409 "delete precondition"

STEP "concurrent writers: no lost update"
pids=()
for i in $(seq 1 20); do
    curl -s -o /dev/null -X PATCH "${MERGE[@]}" -d "{\"data\":{\"k$i\":\"$i\"}}" "$KUBE_STANDIN_URL$CM" &
    pids+=($!)
    curl -s -o /dev/null "$KUBE_STANDIN_URL/api/v1/configmaps" &
    pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done
req GET "$CM"
eq "$(jq '[.data | keys[] | select(startswith("k"))] | length' <<<"$body")" "20" "all 20 concurrent patches kept"
eq "$(jq -s '[.[] | select(.method=="PATCH" and .status==200 and (.body|test("\"k[0-9]+\"")))] | length' "$KUBE_STANDIN_LOG")" "20" "20 patches logged"

STEP "SubjectAccessReview (RBAC from the store)"
sar() { # user groups-json verb resource ns
    req POST /apis/authorization.k8s.io/v1/subjectaccessreviews -H 'Content-Type: application/json' \
        -d "{\"apiVersion\":\"authorization.k8s.io/v1\",\"kind\":\"SubjectAccessReview\",\"spec\":{\"user\":\"$1\",\"groups\":$2,\"resourceAttributes\":{\"verb\":\"$3\",\"resource\":\"$4\",\"namespace\":\"$5\"}}}"
    allowed=$(jq -r .status.allowed <<<"$body")
}
sar alice '["sre"]' patch configmaps prod-tenant-7
eq "$allowed" true "alice patch in 7"
eq "$(jq -r .status.reason <<<"$body")" 'RBAC: allowed by RoleBinding "alice-edit/prod-tenant-7" of ClusterRole "edit" to User "alice"' "reason"
sar alice '["sre"]' patch configmaps prod-tenant-8
eq "$allowed" false "alice patch in 8"
sar alice '["sre"]' get configmaps prod-tenant-8
eq "$allowed" true "alice get in 8 (group sre)"
sar alice '[]' get configmaps prod-tenant-8
eq "$allowed" false "without group sre"
sar carol '["system:masters"]' delete namespaces ''
eq "$allowed" true "system:masters"

kube_standin_stop "$KUBE_STANDIN_PID"

STEP "startup errors"
printf 'apiVersion: v1\nkind: ConfigMap\nmetadata: {name: Bad_Name, namespace: default}\n' >"$WORK/bad.yaml"
if python3 "$KUBE_STANDIN_PY" --fixtures "$WORK/bad.yaml" --port 0 2>"$WORK/err"; then fail "bad fixture accepted"; fi
grep -q "Bad_Name" "$WORK/err" || fail "startup error does not name the object: $(cat "$WORK/err")"

echo "PASS: stand-in faults and features"
