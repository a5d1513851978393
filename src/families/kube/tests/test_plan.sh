#!/usr/bin/env bash
# A dry run is a plan (issue 14 item 1), against the API stand-in: the seed runbook's dry run
# against the drifted cluster exits 0 and shows the patch; --plan-out writes the plan;
# --plan runs it for real only while it holds (same runbook, params, tenants, every target's
# resourceVersion), else exit 1 naming what moved with nothing written; verify is reported
# would_verify unless the step opts in; exec{read_only = true} runs under dry run.
# usage: test_plan.sh path/to/rbl      (KEEP=1 keeps the work directory)
set -uo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../../../.." && pwd)
# shellcheck source=../../../../tests/lib/common.sh
source "$ROOT/tests/lib/common.sh"
rbl_test_init kube-plan "${1:-}"
# shellcheck source=../../../../tests/kube/lib.sh
source "$ROOT/tests/kube/lib.sh"
kube_ensure_deps || exit 1

show() { sed 's/^/    # /' "$1" | head -n 30; }

kube_standin_start --fixtures "$ROOT/tests/kube/fixtures/basic.yaml" --token t0k3n-alice=alice:sre --anonymous alice || exit 1
kube_write_kubeconfig "$W/kc" "$KUBE_STANDIN_URL" --token t0k3n-alice
export KUBECONFIG=$W/kc
kc() { kubectl --kubeconfig "$W/kc" "$@"; }
maxconn() { kc get cm db-pool-config -n prod-tenant-7 -o jsonpath='{.data.max_connections}'; }
# writes: anything but GET and the access reviews (verify_isolation asks those by POST)
W_SEL='.method!="GET" and (.path|test("accessreviews$")|not)'
writes_since() { tail -n +"$(($1 + 1))" "$KUBE_STANDIN_LOG" | jq -c "select($W_SEL)" | wc -l; }
real_writes_since() { tail -n +"$(($1 + 1))" "$KUBE_STANDIN_LOG" | jq -c "select($W_SEL and (.query|test(\"dryRun=All\")|not))" | wc -l; }
lines() { wc -l <"$KUBE_STANDIN_LOG"; }

cp "$ROOT/runbooks/db-connection-exhaustion.lua" "$W/seed.lua"
mkdir -p "$W/infra" && cp "$ROOT/runbooks/infra/terraform.tfstate" "$W/infra/"
SEED=$W/seed.lua
cd "$W" || exit 1
# seed NAME [options]: the seed runbook on tenant prod-tenant-7 -> RC, NAME.{out,report.json}
seed() {
  local name=$1; shift
  "$RBL" run "$SEED" --tenant prod-tenant-7 --report "$W/$name.report.json" "$@" >"$W/$name.out" 2>&1
  RC=$?
}
rc() { if [ "$RC" = "$1" ]; then ok "$2 (exit $RC)"; else bad "$2: exit $RC, want $1"; show "$W/$3.out"; fi; }
rep() { jq -r "$2" "$W/$1.report.json"; }

echo "# the seed runbook's dry run against the drifted cluster"
n=$(lines)
seed dry --incident INC-PLAN --dry-run --plan-out "$W/plan.json"
rc 0 "dry run of the seed runbook resolves" dry
check "nothing was changed (max_connections still 250)" test "$(maxconn)" = 250
check "no write without dryRun=All reached the server" test "$(real_writes_since "$n")" = 0
check "the patch and the restart were sent as server dry runs" test "$(writes_since "$n")" = 2
check "report plan: the ConfigMap patch, max_connections 250 -> 500" \
  test "$(rep dry '.plan[0] | [.prim, .target.kind, .target.name, (.changes[] | select(.path=="/data/max_connections") | .before + "->" + .after)] | join(" ")')" \
  = "kube_patch ConfigMap db-pool-config 250->500"
check "report plan: the restart, second" test "$(rep dry '.plan[1].prim')" = kube.rollout_restart
check "report plan items carry the target's resourceVersion" test "$(rep dry '[.plan[].resourceVersion | type] | unique | join(",")')" = string
check "plan_hash in the report, equal to the plan file's" test "$(rep dry .plan_hash)" = "$(jq -r .plan_hash "$W/plan.json")"
check "verify reported would_verify, not run" test "$(rep dry '[.execution_trace[] | select(.name=="remediate_config" or .name=="restart_api") | .verify] | join(",")')" = would_verify,would_verify
check "stderr shows the patch it would make" grep -q '/data/max_connections: "250" -> "500"' "$W/dry.out"
check "the audit intents of the writes say dry_run" \
  test "$(jq -c 'select(.kind=="intent" and .write==true) | .dry_run' "$W/audit/INC-PLAN.jsonl" | sort -u)" = true

echo "# the plan is the same when nothing moved (a second dry run)"
seed dry2 --incident INC-PLAN --dry-run
check "the same patch is planned again (the restart differs by its timestamp)" \
  test "$(jq -S -c '.plan[0]' "$W/dry2.report.json")" = "$(jq -S -c '.plan[0]' "$W/dry.report.json")"

echo "# refusals: --plan with what moved, nothing written"
n=$(lines)
seed p_param --plan "$W/plan.json" --param deployment=web
rc 1 "another param" p_param
check "names the param" grep -q 'param deployment is not given in the plan, "web" now' "$W/p_param.out"
seed p_tenant --plan "$W/plan.json" --tenant prod-tenant-8
rc 1 "other tenants" p_tenant
check "names the tenants" grep -q "tenants are prod-tenant-7 in the plan, prod-tenant-7, prod-tenant-8 now" "$W/p_tenant.out"
jq '.plan[0].changes[1].after = "5000"' "$W/plan.json" >"$W/tampered.json"
seed p_tamper --plan "$W/tampered.json"
rc 1 "a plan edited after it was written" p_tamper
check "says the plan file was changed" grep -q "plan file was changed after it was written" "$W/p_tamper.out"
echo "-- edited" >>"$W/seed2.lua"; cat "$SEED" >>"$W/seed2.lua"
"$RBL" run "$W/seed2.lua" --tenant prod-tenant-7 --plan "$W/plan.json" >"$W/p_rb.out" 2>&1
RC=$?
rc 1 "another runbook" p_rb
check "says the runbook changed" grep -q "the runbook changed since the plan" "$W/p_rb.out"
echo '{"kind":"something else"}' >"$W/notaplan.json"
seed p_not --plan "$W/notaplan.json"
rc 1 "not a plan" p_not
"$RBL" run "$SEED" --tenant prod-tenant-7 --plan "$W/plan.json" --dry-run >"$W/p_usage.out" 2>&1
RC=$?
rc 2 "--plan with --dry-run is a usage error" p_usage
"$RBL" run "$SEED" --tenant prod-tenant-7 --plan "$W/missing.json" >"$W/p_missing.out" 2>&1
RC=$?
rc 2 "a missing plan file" p_missing
check "no write at all during the refusals" test "$(writes_since "$n")" = 0
check "max_connections still 250" test "$(maxconn)" = 250

echo "# a target changed since the plan"
kc annotate cm db-pool-config -n prod-tenant-7 touched-by=someone-else >/dev/null
n=$(lines)
seed p_moved --plan "$W/plan.json"
rc 1 "the ConfigMap moved" p_moved
check "names the object and its resourceVersions" grep -q "ConfigMap db-pool-config in prod-tenant-7: resourceVersion 17 in the plan, .* now" "$W/p_moved.out"
check "nothing written" test "$(writes_since "$n")" = 0
check "report: failed, the plan check named" bash -c "jq -r '.outcome + \" \" + .execution_trace[0].detail' \"$W/p_moved.report.json\" | grep -q '^failed the plan no longer holds'"
check "the chain records the failed plan check" test "$(jq -c 'select(.kind=="plan_check") | .ok' "$W/audit/INC-PLAN.jsonl" | tail -n 1)" = false

echo "# a fresh plan, run for real while it holds"
seed dry3 --incident INC-PLAN3 --dry-run --plan-out "$W/plan3.json"
rc 0 "a new plan" dry3
seed real --plan "$W/plan3.json"
rc 0 "the plan ran for real" real
check "the ConfigMap now says 500" test "$(maxconn)" = 500
check "the real run joined the plan's incident" test -s "$W/audit/INC-PLAN3.jsonl"
check "the chain records the plan check with its hash" \
  test "$(jq -r 'select(.kind=="plan_check" and .ok) | .plan_hash' "$W/audit/INC-PLAN3.jsonl")" = "$(jq -r .plan_hash "$W/plan3.json")"
check "chain verifies" "$RBL" audit verify "$W/audit/INC-PLAN3.jsonl"
n=$(lines)
seed again --plan "$W/plan3.json"
rc 1 "the same plan a second time: its targets moved" again
check "nothing written the second time" test "$(writes_since "$n")" = 0

echo "# the real run takes another path than the plan: the write not in the plan is refused"
cat >"$W/reads.lua" <<'EOS'
runbook { id = "reads-then-writes" }
step "copy" {
  run = function()
    local v = kube.get("deployment", "api").metadata.labels.app
    kube_patch("configmap", "db-pool-config", { data = { copied = tostring(v) } })
  end,
  rollback = "auto",
}
EOS
"$RBL" run "$W/reads.lua" --tenant prod-tenant-7 --incident INC-READS --dry-run --plan-out "$W/reads-plan.json" >"$W/reads-dry.out" 2>&1
RC=$?
rc 0 "dry run of a runbook whose patch depends on a read" reads-dry
kc label deploy api -n prod-tenant-7 app=changed --overwrite >/dev/null # not a write target: not checked up front
n=$(lines)
"$RBL" run "$W/reads.lua" --tenant prod-tenant-7 --plan "$W/reads-plan.json" --report "$W/reads.report.json" >"$W/reads.out" 2>&1
RC=$?
rc 1 "the run fails" reads
check "the write is refused as not in the plan" grep -q "this write is not in the plan" "$W/reads.out"
check "nothing written" test "$(writes_since "$n")" = 0
check "the ConfigMap has no copied key" test -z "$(kc get cm db-pool-config -n prod-tenant-7 -o jsonpath='{.data.copied}')"

echo "# a dry run that fails writes no plan"
cat >"$W/failing.lua" <<'EOS'
runbook { id = "failing-dry" }
step "change" { run = function() kube_patch("configmap", "db-pool-config", { data = { x = "1" } }) end }
step "broken" { run = function() error("broken on purpose") end }
EOS
"$RBL" run "$W/failing.lua" --tenant prod-tenant-7 --dry-run --plan-out "$W/failing-plan.json" >"$W/failing.out" 2>&1
RC=$?
rc 1 "failing dry run" failing
check "no plan file" test ! -e "$W/failing-plan.json"
check "says why" grep -q "plan not written" "$W/failing.out"

echo "# verify_in_dry_run, and exec{read_only = true}"
cat >"$W/cfg.lua" <<'EOS'
return { tenants = { "prod-tenant-7" }, exec = { allow = { "uname", "touch" } } }
EOS
cat >"$W/verify.lua" <<EOS
runbook { id = "verify-dry" }
step "ro" { run = function(ctx)
  ctx.ro = exec({ "uname", "-s" }, { read_only = true })
  ctx.w = exec({ "touch", "$W/touched" })
end }
step "check" { run = function() end, verify = function() return false, "verify ran" end, verify_in_dry_run = true }
EOS
"$RBL" run "$W/verify.lua" --tenant prod-tenant-7 --config "$W/cfg.lua" --dry-run --report "$W/verify.report.json" --audit "$W/verify.jsonl" >"$W/verify.out" 2>&1
RC=$?
rc 1 "verify_in_dry_run: the step's verify ran and failed" verify
check "the read-only exec ran under dry run" test "$(jq -r 'select(.kind=="result" and .prim=="exec") | .summary.stdout' "$W/verify.jsonl" | head -n 1)" = "Linux"
check "its intent is recorded read_only" test "$(jq -c 'select(.kind=="intent" and .prim=="exec") | .read_only' "$W/verify.jsonl" | head -n 1)" = true
check "the other exec did not run" test ! -e "$W/touched"
check "and is in the plan with its argv" test "$(rep verify '.plan[0].argv | join(" ")')" = "touch $W/touched"

rbl_test_done
