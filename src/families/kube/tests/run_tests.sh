#!/usr/bin/env bash
# The Kubernetes primitives end to end: the real `rbl run` and `rbl rollback` against the API
# stand-in (tests/kube). Checks exit codes, messages, object state (read back with kubectl),
# the stand-in's request log (what was and was not sent) and every audit chain.
# usage: run_tests.sh path/to/rbl      (KEEP=1 keeps the work directory)
set -uo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../../../../tests/lib/common.sh
source "$HERE/../../../../tests/lib/common.sh"
rbl_test_init kube-test "${1:-}"
RB=$HERE/runbooks
# shellcheck source=../../../../tests/kube/lib.sh
source "$HERE/../../../../tests/kube/lib.sh"
kube_ensure_deps || exit 1

CHAINS=()
show() { sed 's/^/    # /' "$1" | head -n 20; }

PKI=$W/pki
kube_mkcerts "$PKI" >/dev/null 2>&1 || { echo "cannot make test certificates"; exit 1; }
BASIC=$HERE/../../../../tests/kube/fixtures/basic.yaml
EXTRA=$HERE/fixtures/extra.yaml
NS7=/api/v1/namespaces/prod-tenant-7

start() {
  kube_standin_start --fixtures "$BASIC" --fixtures "$EXTRA" --tls-cert "$PKI/server.crt" --tls-key "$PKI/server.key" \
    --client-ca "$PKI/ca.crt" --token t0k3n-alice=alice:sre --token t0k3n-bob=bob:sre "$@" || exit 1
  KC=$W/kc-$KUBE_STANDIN_PORT
  kube_write_kubeconfig "$KC" "$KUBE_STANDIN_URL" --ca "$PKI/ca.crt" --token t0k3n-alice
  export KUBECONFIG=$KC
}
kc() { kubectl --kubeconfig "$KC" "$@"; }

cat >"$W/config.lua" <<'EOF'
return { tenants = { ["prod-tenant-7"] = {}, ["prod-tenant-8"] = {} }, kube = { timeout = 3 } }
EOF

# run NAME RUNBOOK [rbl run options...]: sets RC; output in $W/NAME.out, report, chain $W/NAME.jsonl
run() {
  local name=$1 rb=$2
  shift 2
  "$RBL" run "$RB/$rb" --tenant prod-tenant-7 --incident "$name" --config "$W/config.lua" \
    --audit "$W/$name.jsonl" --report "$W/$name.report.json" "$@" >"$W/$name.out" 2>&1
  RC=$?
  CHAINS+=("$W/$name.jsonl")
}
expect_rc() { # expect_rc WANT NAME
  if [ "$RC" = "$1" ]; then ok "$2 (exit $RC)"; else bad "$2: exit $RC, want $1"; show "$W/$3.out"; fi
}
has() { grep -q -- "$2" "$W/$1.out"; }
lines() { wc -l <"$KUBE_STANDIN_LOG"; }
# new requests since line N matching a jq filter
newreq() { tail -n +"$(($1 + 1))" "$KUBE_STANDIN_LOG" | jq -c "select($2)" | wc -l; }
state() { # state NAME: the ConfigMap data and the Deployment's replicas and env, for comparisons
  { kc get cm db-pool-config -n prod-tenant-7 -o json | jq -S '{data, labels: .metadata.labels}'
    kc get deploy api -n prod-tenant-7 -o json | jq -S '{r: .spec.replicas, env: .spec.template.spec.containers[0].env}'
  } >"$W/state.$1"
}

echo "# primitives"
start
run prims prims.lua
expect_rc 0 "every primitive against the stand-in" prims
check "the merge patch was sent as merge-patch+json" \
  test "$(newreq 0 '.method=="PATCH" and .content_type=="application/merge-patch+json"')" -ge 2
check "strategic and json patches used their content types" \
  test "$(newreq 0 '.content_type=="application/strategic-merge-patch+json" or .content_type=="application/json-patch+json"')" -ge 3
check "the kind resolved through discovery (aggregated)" test "$(newreq 0 '.path=="/apis"')" -ge 1
check "scale went through the scale subresource" test "$(newreq 0 '.method=="PATCH" and (.path|endswith("/deployments/api/scale"))')" = 1

echo "# tenant scope: refused, nothing sent"
for what in other_ns_get other_ns_patch other_ns_list cluster_write other_namespace_object tenant_label exec_sub token_sub \
  can_i_other nul bad_ns '../prod-tenant-8' 'a%2Fb' 'x?watch=true' 'x#frag' 'a/b' '..' '.' 'x y' '%2e%2e'; do
  n=$(lines)
  run "scope-$(echo "$what" | tr -c 'a-z0-9\n' '_')" scope_patch.lua --param "what=$what"
  name="scope-$(echo "$what" | tr -c 'a-z0-9\n' '_')"
  if [ "$RC" = 3 ] && [ "$(newreq "$n" '.method!="GET" or (.path|test("^/(api|apis|api/v1/namespaces)$")|not)')" = 0 ] &&
    grep -q '"kind":"refused"' "$W/$name.jsonl"; then
    ok "refused $what before any request (exit 3, audited)"
  else
    bad "scope $what: exit $RC"
    show "$W/$name.out"
    tail -n +"$((n + 1))" "$KUBE_STANDIN_LOG" | kube_log_requests true | sed 's/^/    # /' | tail -3
  fi
done
# the gate reads every PATCH by its Content-Type: these pass host Lua and reach the gate
for what in json_namespace json_label_move merge_label strategic_replace; do
  n=$(lines)
  run "scope-$what" scope_patch.lua --param "what=$what"
  if [ "$RC" = 3 ] && [ "$(newreq "$n" '.method!="GET"')" = 0 ] &&
    grep -q '"kind":"refused".*"reason":"gate: kube: a ' "$W/scope-$what.jsonl"; then
    ok "the gate refused the patch $what, nothing written (exit 3, audited)"
  else
    bad "gate patch $what: exit $RC"
    show "$W/scope-$what.out"
  fi
done
check "no request ever reached prod-tenant-8, kube-system, clusterroles or a dangerous subresource" \
  test "$(newreq 0 '(.path|test("prod-tenant-8|kube-system|clusterroles|/exec|/token|%"))')" = 0
kube_standin_stop

echo "# API errors, conflicts"
F=()
for s in e401:401 e403:403 e500:500 ehang:hang etrunc:truncate; do F+=(--fail "GET $NS7/configmaps/${s%%:*} ${s#*:}"); done
for s in e409:409 e409json:409 e422:422; do F+=(--fail "PATCH $NS7/configmaps/${s%%:*} ${s#*:}"); done
start "${F[@]}" --fail "PATCH $NS7/configmaps/conflict-once 409 1"
run errors errors.lua
expect_rc 0 "401, 403, 404, 409, 422, 500, timeout: clear messages naming kind, name, namespace, status" errors
n=$(lines)
run trunc get_one.lua --param name=etrunc
if [ "$RC" = 1 ] && grep -q 'configmaps "etrunc" in namespace "prod-tenant-7"' "$W/trunc.out"; then ok "truncated body: clear error"; else bad "truncated body: exit $RC"; show "$W/trunc.out"; fi
check "merge patch retried 409s 3 times, then gave up" test "$(newreq 0 '.method=="PATCH" and (.path|endswith("/e409"))')" = 4
check "json patch with a test op was not retried" test "$(newreq 0 '.method=="PATCH" and (.path|endswith("/e409json"))')" = 1
run conflict conflict_once.lua
expect_rc 0 "a 409 once: re-read and retried" conflict
check "conflict: two PATCHes, the second applied" test "$(newreq 0 '.method=="PATCH" and (.path|endswith("/conflict-once")) and .status==200')" = 1
check "conflict: the audit result says attempts=2" grep -q '"attempts":2' "$W/conflict.jsonl"
check "conflict: object patched" test "$(kc get cm conflict-once -n prod-tenant-7 -o jsonpath='{.data.k}')" = retried
kube_standin_stop

echo "# dry run"
start
state before
n=$(lines)
run dry dryrun.lua --dry-run
expect_rc 0 "dry run" dry
state after
check "dry run: objects unchanged" cmp -s "$W/state.before" "$W/state.after"
check "dry run: every write carried dryRun=All" test "$(newreq "$n" '.method=="PATCH" and (.query|test("dryRun=All")|not)')" = 0
check "dry run: writes were sent" test "$(newreq "$n" '.method=="PATCH"')" = 2
check "dry run: report says dry_run" test "$(jq .dry_run "$W/dry.report.json")" = true
check "dry run: audit results say dry_run" test "$(grep '"kind":"result"' "$W/dry.jsonl" | grep -c '"dry_run":true')" = 2

echo "# rollback"
run auto rollback_auto.lua
expect_rc 1 "run that patches then fails" auto
state afterauto
check "auto rollback restored ConfigMap, env and replicas" cmp -s "$W/state.before" "$W/state.afterauto"
check "report: the changing step is rolled_back" \
  test "$(jq -r '.execution_trace[] | select(.name=="change") | .status' "$W/auto.report.json")" = rolled_back
run change change.lua
expect_rc 0 "a successful run of reversible changes" change
state changed
check "the run changed the objects" bash -c "! cmp -s '$W/state.before' '$W/state.changed'"
"$RBL" rollback "$W/change.jsonl" --config "$W/config.lua" >"$W/rb1.out" 2>&1
RC=$?
expect_rc 0 "rbl rollback" rb1
state rolledback
check "rbl rollback restored every object" cmp -s "$W/state.before" "$W/state.rolledback"
n=$(lines)
"$RBL" rollback "$W/change.jsonl" --config "$W/config.lua" >"$W/rb2.out" 2>&1
RC=$?
expect_rc 0 "second rbl rollback" rb2
check "second rbl rollback sends no write" test "$(newreq "$n" '.method!="GET"')" = 0
check "second rbl rollback says nothing to undo" has rb2 "nothing to undo"

run change2 change.lua
expect_rc 0 "another change run" change2
kc patch cm db-pool-config -n prod-tenant-7 --type merge -p '{"data":{"max_connections":"800"}}' >/dev/null
n=$(lines)
"$RBL" rollback "$W/change2.jsonl" --config "$W/config.lua" >"$W/rb3.out" 2>&1
RC=$?
expect_rc 1 "rollback of an object changed since" rb3
check "changed-since: refused clearly" has rb3 "changed since the patch"
check "changed-since: the ConfigMap keeps the later change" \
  test "$(kc get cm db-pool-config -n prod-tenant-7 -o jsonpath='{.data.max_connections}')" = 800
check "changed-since: refusal names the field and both values" has rb3 '/data/max_connections is now "800", the patch left "700"'
check "changed-since: only the change nobody touched since was undone (one PATCH: /data/json removed)" \
  test "$(newreq "$n" '.method=="PATCH" and (.path|endswith("/db-pool-config"))')/$(kc get cm db-pool-config -n prod-tenant-7 -o jsonpath='{.data.json}{.data.fresh}')" = "1/1"
"$RBL" rollback "$W/change2.jsonl" --force --config "$W/config.lua" >"$W/rb4.out" 2>&1
RC=$?
expect_rc 0 "rbl rollback --force" rb4
state forced
check "--force restored the before-state" cmp -s "$W/state.before" "$W/state.forced"
n=$(lines)
"$RBL" rollback "$W/change2.jsonl" --dry-run --config "$W/config.lua" >"$W/rb5.out" 2>&1
RC=$?
expect_rc 0 "rbl rollback --dry-run after everything was undone" rb5
check "rollback --dry-run sends no write" test "$(newreq "$n" '.method!="GET"')" = 0
CHAINS+=("$W/change.jsonl" "$W/change2.jsonl")

echo "# rbl rollback acts only on a verified chain"
FORGE="python3 $HERE/../../../../tests/audit/forge.py"
cat >"$W/config-2t.lua" <<'EOF'
return { tenants = { ["prod-tenant-7"] = {}, ["prod-tenant-8"] = {} }, kube = { timeout = 3 } }
EOF
rbrun() { # rbrun NAME CHAIN [options]: rbl rollback; RC, output in $W/NAME.out
  local name=$1 chain=$2
  shift 2
  "$RBL" rollback "$chain" --config "$W/config-2t.lua" "$@" >"$W/$name.out" 2>&1
  RC=$?
}
reset_cm() { kc patch cm db-pool-config -n prod-tenant-7 --type merge -p '{"data":{"max_connections":"100","fresh":null,"json":null}}' >/dev/null 2>&1; kc scale deploy api -n prod-tenant-7 --replicas=3 >/dev/null 2>&1; }
run change3 change.lua
expect_rc 0 "a change run to undo" change3
# (a) one byte of a before-state changed: broken, exit 1 with verify's message, nothing sent or written
cp "$W/change3.jsonl" "$W/tampered.jsonl"
sed -i '0,/"max_connections":"[0-9]*"/s//"max_connections":"1"/' "$W/tampered.jsonl"
sum=$(sha256sum <"$W/tampered.jsonl")
n=$(lines)
rbrun rbt "$W/tampered.jsonl"
expect_rc 1 "rollback of a chain that fails verify" rbt
check "broken chain: verify's message (BROKEN at line, modified)" grep -q 'BROKEN at line [0-9]*, seq [0-9]*: modified' "$W/rbt.out"
check "broken chain: not one request sent" test "$(lines)" = "$n"
check "broken chain: nothing appended to it" test "$(sha256sum <"$W/tampered.jsonl")" = "$sum"
# (b) consistent forged records (no key): changes in prod-tenant-8 recorded under a run whose
#     run_start names only prod-tenant-7; the operator authorises both tenants
$FORGE "$W/change3.jsonl" '[dict(r, call=900+i, tenant="prod-tenant-8", before=dict(r["before"], tenant="prod-tenant-8", namespace="prod-tenant-8", call=900+i)) for i, r in enumerate(x for x in recs if x["kind"]=="result" and "before" in x)]'
"$RBL" audit verify "$W/change3.jsonl" >/dev/null
check "the forged records verify without a key (a hash chain only)" test $? = 0
n=$(lines)
rbrun rbf "$W/change3.jsonl" --tenant prod-tenant-7 --tenant prod-tenant-8
expect_rc 1 "rollback refuses records outside their run's tenants" rbf
check "forged tenant: named as not one the run was started for" grep -q 'tenant prod-tenant-8 is not one run' "$W/rbf.out"
check "forged tenant: no write reached prod-tenant-8" test "$(newreq "$n" '.method!="GET" and (.path|test("prod-tenant-8"))')" = 0
check "no key: rollback says the chain proves consistency, not authorship" grep -q 'carries no MAC and no signature' "$W/rbf.out"
reset_cm
# (c) a before-state without a resourceVersion cannot notice a later change: refused even with --force
run change4 change.lua
$FORGE "$W/change4.jsonl" '[dict(r, call=950, before={k: v for k, v in dict(r["before"], call=950).items() if k != "resourceVersion"}) for r in recs if r["kind"]=="result" and "before" in r and r["before"]["api"]["resource"]=="configmaps"][:1]'
n=$(lines)
rbrun rbv "$W/change4.jsonl" --force
expect_rc 1 "rollback refuses a before-state without resourceVersion" rbv
check "no resourceVersion: named" grep -q 'no resourceVersion' "$W/rbv.out"
check "no resourceVersion: the forged call 950 was not undone" bash -c "! grep -q '\"undoes\":{\"call\":950' '$W/change4.jsonl'"
reset_cm
# (d) with an HMAC key: a forged append (no key) breaks the chain; a MAC'd chain without --key is refused
printf 'k3y-%s' "$RANDOM$RANDOM" >"$W/hkey" && chmod 600 "$W/hkey"
run change5 change.lua --audit-key "$W/hkey"
expect_rc 0 "a MAC'd change run" change5
$FORGE "$W/change5.jsonl" '[dict(r, call=990) for r in recs if r["kind"]=="result" and "before" in r][:1]'
n=$(lines)
rbrun rbk "$W/change5.jsonl" --audit-key "$W/hkey"
expect_rc 1 "rollback with the key: a record appended without it breaks the chain" rbk
check "forged append under a key: verify's bad MAC message" grep -q 'bad MAC' "$W/rbk.out"
check "forged append under a key: nothing sent" test "$(lines)" = "$n"
reset_cm
run change6 change.lua --audit-key "$W/hkey"
rbrun rbnokey "$W/change6.jsonl"
expect_rc 2 "a MAC'd chain without --key is refused" rbnokey
check "MAC'd chain without a key: names --key" grep -q 'give --key FILE' "$W/rbnokey.out"
rbrun rbkey "$W/change6.jsonl" --key "$W/hkey" --audit-key "$W/hkey"
expect_rc 0 "a MAC'd chain with --key is undone" rbkey
CHAINS+=("$W/change4.jsonl" "$W/change6.jsonl")
kube_standin_stop

echo "# the tenant label of a Namespace: decided by the patch's effect"
start
label7() { kc get ns prod-tenant-7 -o jsonpath='{.metadata.labels.rbl\.io/tenant}'; }
# the stand-in applies every strategic-merge directive as the API server does; kubectl sends them
# (a server-side dry run shows the effect without applying it)
kc patch ns prod-tenant-7 --type strategic --dry-run=server -o json \
  -p '{"metadata":{"labels":{"$patch":"replace","team":"k"}}}' >"$W/kc-dry.json" 2>&1
check "kubectl: \$patch replace on labels drops the tenant label (server dry run)" \
  test "$(jq -r '.metadata.labels["rbl.io/tenant"] // "absent"' "$W/kc-dry.json")" = absent
kc patch ns prod-tenant-7 --type strategic --dry-run=server -o json \
  -p '{"metadata":{"labels":{"$patch":"merge","team":"k"}}}' >"$W/kc-dry2.json" 2>&1
check "kubectl: \$patch merge keeps it" test "$(jq -r '.metadata.labels["rbl.io/tenant"]' "$W/kc-dry2.json")" = prod-tenant-7
i=0
for p in '{"metadata":{"labels":{"$patch":"replace","team":"x"}}}' \
  '{"metadata":{"labels":{"$patch":"delete"}}}' \
  '{"metadata":{"$patch":"replace","name":"prod-tenant-7"}}' \
  '{"metadata":{"$patch":"delete"}}' \
  '{"$patch":"replace","metadata":{"name":"prod-tenant-7"}}' \
  '{"metadata":{"$retainKeys":["name","annotations"]}}' \
  '{"metadata":{"labels":{"$retainKeys":["team"],"team":"x"}}}'; do
  i=$((i + 1))
  n=$(lines)
  run "nsx-$i" ns_patch.lua --param "patch=$p"
  if [ "$RC" = 3 ] && grep -q 'would change the tenant label rbl.io/tenant' "$W/nsx-$i.out" &&
    [ "$(newreq "$n" '.method=="PATCH" and ((.query // "")|test("dryRun=All")|not)')" = 0 ] &&
    [ "$(newreq "$n" '.method=="PATCH" and ((.query // "")|test("dryRun=All"))')" = 1 ] &&
    [ "$(label7)" = prod-tenant-7 ]; then
    ok "refused by effect (exit 3, only the dry run sent, label kept): $p"
  else
    bad "directive $p: exit $RC, label now '$(label7)'"; show "$W/nsx-$i.out"
  fi
done
i=0
for p in '{"metadata":{"labels":{"$patch":"merge","team":"m"}}}' \
  '{"metadata":{"$setElementOrder/finalizers":[],"annotations":{"note":"a"}}}' \
  '{"metadata":{"$deleteFromPrimitiveList/finalizers":["x"],"annotations":{"note":"b"}}}' \
  '{"spec":{"$deleteFromPrimitiveList/finalizers":["example.com/x"]},"metadata":{"annotations":{"note":"c"}}}' \
  '{"metadata":{"$retainKeys":["name","labels","annotations"],"annotations":{"note":"d"}}}'; do
  i=$((i + 1))
  n=$(lines)
  run "nsok-$i" ns_patch.lua --param "patch=$p"
  if [ "$RC" = 0 ] && [ "$(newreq "$n" '.method=="PATCH" and ((.query // "")|test("dryRun=All")|not)')" = 1 ] &&
    [ "$(label7)" = prod-tenant-7 ]; then
    ok "a directive that keeps the label is applied (dry run, then the same bytes): $p"
  else
    bad "harmless directive $p: exit $RC"; show "$W/nsok-$i.out"
  fi
done
check "the real patch carried the resourceVersion precondition" \
  test "$(newreq 0 '.method=="PATCH" and (.path=="/api/v1/namespaces/prod-tenant-7") and ((.query // "")|test("fieldManager=rbl")) and ((.body // "")|tostring|test("resourceVersion")|not)')" = 0
run nsjson ns_patch.lua --param 'patch=[{"op":"add","path":"/metadata/annotations/j","value":"1"}]' --param type=json
expect_rc 0 "a json patch of the Namespace (a test op pins the version)" nsjson
kube_standin_stop

echo "# secrets in patches"
start
n=$(lines)
KUBE_PW="Wp4-real-credential-value" run secpatch secret_patch.lua
expect_rc 0 "a patch carrying secret() and Secret data" secpatch
check "secret(): the object holds the real value, not [redacted]" \
  test "$(kc get cm db-pool-config -n prod-tenant-7 -o jsonpath='{.data.password_ref}')" = Wp4-real-credential-value
check "secret(): the request carried the real value" \
  test "$(newreq "$n" '.method=="PATCH" and ((.body // "")|tostring|test("Wp4-real-credential-value"))')" -ge 1
check "Secret data: written" test "$(kc get secret db-credentials -n prod-tenant-7 -o jsonpath='{.data.password}' | base64 -d)" = Kq7-literal-secret-data
for v in Wp4-real-credential-value Kq7-literal-secret-data S3E3LWxpdGVyYWwtYmFzZTY0LWRhdGE= Kq7-json-patch-secret; do
  check "never written: $v (audit, report, output)" bash -c "! grep -qF -- '$v' '$W/secpatch.jsonl' '$W/secpatch.report.json' '$W/secpatch.out'"
done
check "the intents show the secret values redacted" \
  test "$(grep '"kind":"intent"' "$W/secpatch.jsonl" | grep -c '\[redacted\]')" -ge 3
check "printing the object's secret() value is masked" grep -q 'stored: \[redacted\]' "$W/secpatch.out"
kube_standin_stop

echo "# cluster access"
start
URL=$KUBE_STANDIN_URL
authrun() { # authrun NAME KUBECONFIG [env...]
  local name=$1 k=$2
  shift 2
  local kenv=(KUBECONFIG="$k")
  [ -n "$k" ] || kenv=(-u KUBECONFIG)
  env "${kenv[@]}" "$@" "$RBL" run "$RB/get_one.lua" --tenant prod-tenant-7 --incident "$name" \
    --config "$W/config.lua" --audit "$W/$name.jsonl" --report "$W/$name.report.json" >"$W/$name.out" 2>&1
  RC=$?
  CHAINS+=("$W/$name.jsonl")
}
kube_write_kubeconfig "$W/kc-otherca" "$URL" --ca "$PKI/other-ca.crt" --token t0k3n-alice
n=$(lines)
authrun otherca "$W/kc-otherca"
expect_rc 1 "a CA that does not match fails" otherca
check "CA mismatch: the message names the TLS failure" grep -qiE 'certificate|ssl|tls' "$W/otherca.out"
check "CA mismatch: no request reached the server" test "$(lines)" = "$n"

kube_write_kubeconfig "$W/kc-cert" "$URL" --ca "$PKI/ca.crt" --client-cert "$PKI/client.crt" --client-key "$PKI/client.key"
n=$(lines)
authrun cert "$W/kc-cert"
expect_rc 0 "client certificate files" cert
check "client certificate: auth kind reported" has cert "auth=client_certificate"
check "client certificate: the server saw alice" test "$(newreq "$n" '.user!="alice"')" = 0

b64() { base64 -w0 <"$1"; }
cat >"$W/kc-data" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: c
  cluster: {server: "$URL", certificate-authority-data: $(b64 "$PKI/ca.crt")}
users:
- name: u
  user: {client-certificate-data: $(b64 "$PKI/client.crt"), client-key-data: $(b64 "$PKI/client.key")}
contexts:
- {name: x, context: {cluster: c, user: u}}
current-context: x
EOF
authrun certdata "$W/kc-data"
expect_rc 0 "certificate-authority-data and client certificate/key data" certdata

# KUBECONFIG merge: the first file wins per name and for current-context
cat >"$W/kc-first" <<EOF
apiVersion: v1
kind: Config
users:
- name: standin
  user: {token: t0k3n-bob}
current-context: standin
EOF
n=$(lines)
authrun merged "$W/kc-first:$KC"
expect_rc 0 "KUBECONFIG with two files merges them" merged
check "merge: the first file's user won" test "$(newreq "$n" '.user!="bob"')" = 0

cat >"$W/kc-ctx" <<EOF
apiVersion: v1
kind: Config
clusters:
- {name: good, cluster: {server: "$URL", certificate-authority: $PKI/ca.crt}}
- {name: bad, cluster: {server: "https://127.0.0.1:1"}}
users:
- {name: a, user: {token: t0k3n-alice}}
contexts:
- {name: broken, context: {cluster: bad, user: a}}
- {name: standin, context: {cluster: good, user: a}}
current-context: broken
EOF
cat >"$W/config-ctx.lua" <<EOF
return { tenants = { ["prod-tenant-7"] = { namespaces = { "prod-tenant-7" } } }, kube = { kubeconfig = "$W/kc-ctx", context = "standin" } }
EOF
n=$(lines)
"$RBL" run "$RB/get_one.lua" --tenant prod-tenant-7 --incident ctx --config "$W/config-ctx.lua" --audit "$W/ctx.jsonl" >"$W/ctx.out" 2>&1
RC=$?
CHAINS+=("$W/ctx.jsonl")
expect_rc 0 "kubeconfig and context from the config" ctx
check "namespaces from the config: no namespace lookup" test "$(newreq "$n" '.path=="/api/v1/namespaces"')" = 0

printf 't0k3n-alice\n' >"$W/tokenfile"
cat >"$W/kc-tokfile" <<EOF
apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "$URL", certificate-authority: $PKI/ca.crt}}]
users: [{name: u, user: {tokenFile: tokenfile}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
EOF
n=$(lines)
(sleep 1.2; printf 't0k3n-bob\n' >"$W/tokenfile.new" && mv "$W/tokenfile.new" "$W/tokenfile") &
ROTATOR=$!
env KUBECONFIG="$W/kc-tokfile" "$RBL" run "$RB/get_twice.lua" --tenant prod-tenant-7 --incident tokfile --param pause=1 \
  --config "$W/config.lua" --audit "$W/tokfile.jsonl" >"$W/tokfile.out" 2>&1
RC=$?
wait "$ROTATOR"
CHAINS+=("$W/tokfile.jsonl")
expect_rc 0 "tokenFile (relative to the kubeconfig)" tokfile
check "tokenFile: re-read after it rotated (alice, then bob)" \
  test "$(newreq "$n" '(.path|endswith("/db-pool-config"))' | head -1)$(tail -n +"$((n + 1))" "$KUBE_STANDIN_LOG" | jq -r 'select(.path|endswith("/db-pool-config")) | .user' | uniq | tr '\n' ,)" = "3alice,bob,"

mkplugin() { # mkplugin FILE API EXPIRY [status json...]
  cat >"$1" <<EOF
#!/bin/sh
echo run >>"$1.count"
case "\$KUBERNETES_EXEC_INFO" in *'"kind":"ExecCredential"'*) ;; *) echo "no exec info" >&2; exit 3 ;; esac
case "\$KUBERNETES_EXEC_INFO" in *'"interactive":false'*) ;; *) echo "not marked non-interactive" >&2; exit 3 ;; esac
[ "\$PLUGIN_ENV" = from-kubeconfig ] || { echo "env missing" >&2; exit 4; }
printf '{"apiVersion":"%s","kind":"ExecCredential","status":{%s"expirationTimestamp":"%s"}}\n' "$2" '$4' "$3"
EOF
  chmod +x "$1"
}
plugin_kc() { # plugin_kc FILE PLUGIN API
  cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "$URL", certificate-authority: $PKI/ca.crt}}]
users:
- name: u
  user:
    exec:
      apiVersion: $3
      command: $2
      args: [--flag]
      env: [{name: PLUGIN_ENV, value: from-kubeconfig}]
      interactiveMode: Never
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
EOF
}
mkplugin "$W/plugin1" client.authentication.k8s.io/v1 2099-01-01T00:00:00Z '"token":"t0k3n-alice",'
plugin_kc "$W/kc-exec1" "$W/plugin1" client.authentication.k8s.io/v1
env KUBECONFIG="$W/kc-exec1" "$RBL" run "$RB/get_twice.lua" --tenant prod-tenant-7 --incident exec1 \
  --config "$W/config.lua" --audit "$W/exec1.jsonl" >"$W/exec1.out" 2>&1
RC=$?
CHAINS+=("$W/exec1.jsonl")
expect_rc 0 "exec credential plugin (v1)" exec1
check "exec plugin: run once, cached until expiry" test "$(wc -l <"$W/plugin1.count")" = 1
mkplugin "$W/plugin2" client.authentication.k8s.io/v1beta1 2000-01-01T00:00:00Z '"token":"t0k3n-alice",'
plugin_kc "$W/kc-exec2" "$W/plugin2" client.authentication.k8s.io/v1beta1
authrun exec2 "$W/kc-exec2"
expect_rc 0 "exec credential plugin (v1beta1), expired credential" exec2
check "exec plugin: an expired credential is fetched again" test "$(wc -l <"$W/plugin2.count")" -ge 3
CERT=$(awk 1 ORS='\\n' "$PKI/client.crt")
KEY=$(awk 1 ORS='\\n' "$PKI/client.key")
mkplugin "$W/plugin3" client.authentication.k8s.io/v1 2099-01-01T00:00:00Z "\"clientCertificateData\":\"$CERT\",\"clientKeyData\":\"$KEY\","
plugin_kc "$W/kc-exec3" "$W/plugin3" client.authentication.k8s.io/v1
n=$(lines)
authrun exec3 "$W/kc-exec3"
expect_rc 0 "exec plugin giving a client certificate" exec3
check "exec plugin certificate: the server saw alice" test "$(newreq "$n" '.user!="alice"')" = 0
check "exec plugin: the key never reached the audit" bash -c "! grep -q 'PRIVATE KEY' '$W/exec3.jsonl'"
printf '#!/bin/sh\necho "token expired, log in again" >&2\nexit 1\n' >"$W/plugin4"
chmod +x "$W/plugin4"
plugin_kc "$W/kc-exec4" "$W/plugin4" client.authentication.k8s.io/v1
authrun exec4 "$W/kc-exec4"
expect_rc 1 "a failing exec plugin" exec4
check "failing exec plugin: its message is shown" has exec4 "log in again"

SA=$W/sa
mkdir -p "$SA" "$W/nohome"
printf 't0k3n-alice' >"$SA/token"
cp "$PKI/ca.crt" "$SA/ca.crt"
authrun incluster "" HOME="$W/nohome" RBL_SA_DIR="$SA" KUBERNETES_SERVICE_HOST=127.0.0.1 \
  KUBERNETES_SERVICE_PORT="$KUBE_STANDIN_PORT"
expect_rc 0 "in-cluster config (RBL_SA_DIR)" incluster
check "in-cluster: auth kind reported" has incluster "auth=in_cluster"

cat >"$W/kc-insecure" <<EOF
apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "$URL", insecure-skip-tls-verify: true}}]
users: [{name: u, user: {token: t0k3n-alice}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
EOF
authrun insecure "$W/kc-insecure"
expect_rc 0 "insecure-skip-tls-verify when set" insecure
check "insecure: warned" has insecure "WARNING: TLS verification"
check "insecure: recorded in the audit" grep -q '"kind":"warning"' "$W/insecure.jsonl"
check "the token never reached the audit" bash -c "! grep -q t0k3n-alice '$W/insecure.jsonl'"

kube_write_kubeconfig "$W/kc-badtok" "$URL" --ca "$PKI/ca.crt" --token wrong-token
authrun badtok "$W/kc-badtok"
expect_rc 1 "a wrong token" badtok
check "wrong token: HTTP 401 named" has badtok "HTTP 401"
kube_standin_stop

echo "# audit chains"
for c in "${CHAINS[@]}"; do
  [ -f "$c" ] || continue
  if "$RBL" audit verify "$c" >/dev/null 2>&1; then ok "audit verify $(basename "$c")"; else bad "audit verify $(basename "$c")"; fi
done

rbl_test_done
