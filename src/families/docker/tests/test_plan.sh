#!/usr/bin/env bash
# Docker writes in a dry run and a plan (issue 14 item 1), against the real dockerd: under
# --dry-run docker.restart and docker_exec send nothing and return their normal shape marked
# dry_run; docker_exec{read_only = true} runs and is recorded read_only; the plan holds the
# container's state, and --plan refuses (exit 1, nothing sent) once the container restarted.
# Names and labels are unique per run: other suites share the daemon.
# usage: test_plan.sh path/to/rbl
set -uo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../../../../tests/lib/common.sh
source "$HERE/../../../../tests/lib/common.sh"
rbl_test_init docker-plan "${1:-}"
# shellcheck source=app.sh
source "$HERE/app.sh"
docker_test_app wbp

cat >"$W/rb.lua" <<EOS
runbook { id = "docker-plan" }
step "look" { run = function(ctx) ctx.ro = docker_exec("$C", { "cat", "/proc/1/cmdline" }, { read_only = true }) end }
step "act" {
  run = function(ctx)
    ctx.w = docker_exec("$C", { "touch", "/tmp/written-$U" })
    ctx.r = docker.restart("$C", { timeout = 1 })
    log("exec %s %s, restart %s %s", tostring(ctx.w.exit_code), tostring(ctx.w.dry_run), tostring(ctx.r.restarted), tostring(ctx.r.dry_run))
  end,
}
EOS
s0=$(started)
"$RBL" run "$W/rb.lua" --tenant "$TEN" --config "$W/config.lua" --incident "P-$U" --dry-run --plan-out "$W/plan.json" \
  --audit "$W/dry.jsonl" --report "$W/dry.report.json" >"$W/dry.out" 2>&1
check "dry run resolves (exit 0)" test $? = 0
check "the restart was not sent (StartedAt unchanged)" test "$(started)" = "$s0"
check "the read-only exec ran: an exec instance, and no other" \
  test "$(jq -r 'select(.kind=="result" and .prim=="docker_exec") | (.summary.exec // "none" | length | tostring)' "$W/dry.jsonl" | tr '\n' ' ')" = "64 4 "
check "the write exec did not run" bash -c "! docker exec '$C' test -e /tmp/written-$U"
check "normal result shapes, marked dry_run" grep -q "exec 0 true, restart false true" "$W/dry.out"
check "the read-only exec's intent says read_only" \
  test "$(jq -c 'select(.kind=="intent" and .prim=="docker_exec") | .read_only' "$W/dry.jsonl" | head -n 1)" = true
check "its output came back" test "$(jq -r 'select(.kind=="result" and .prim=="docker_exec") | .summary.stdout_bytes' "$W/dry.jsonl" | head -n 1)" -gt 0
check "plan: the exec (with argv) and the restart, with the container's state" \
  test "$(jq -r '[.plan[] | .prim + ":" + (.container_state.started_at == "'"$s0"'" | tostring)] | join(" ")' "$W/dry.report.json")" \
  = "docker_exec:true docker.restart:true"
check "plan: argv of the exec" test "$(jq -r '.plan[0].argv | join(" ")' "$W/dry.report.json")" = "touch /tmp/written-$U"

echo "# the container restarted since the plan"
docker restart -t 0 "$C" >/dev/null
"$RBL" run "$W/rb.lua" --tenant "$TEN" --config "$W/config.lua" --plan "$W/plan.json" --audit "$W/real.jsonl" >"$W/real.out" 2>&1
check "--plan refuses: exit 1" test $? = 1
check "names the container and its state" grep -q "container $C: container state changed" "$W/real.out"
check "no call was even attempted (no intent after the plan check)" \
  test "$(jq -c 'select(.kind=="intent")' "$W/real.jsonl" | grep -c '"docker_exec"\|"docker.restart"')" = 0
check "the write exec did not run" bash -c "! docker exec '$C' test -e /tmp/written-$U"

echo "# a fresh plan runs for real"
"$RBL" run "$W/rb.lua" --tenant "$TEN" --config "$W/config.lua" --dry-run --plan-out "$W/plan2.json" --audit "$W/dry2.jsonl" >"$W/dry2.out" 2>&1
s1=$(started)
"$RBL" run "$W/rb.lua" --tenant "$TEN" --config "$W/config.lua" --plan "$W/plan2.json" --audit "$W/real2.jsonl" >"$W/real2.out" 2>&1
check "the plan ran (exit 0)" test $? = 0
check "the exec ran" docker exec "$C" test -e "/tmp/written-$U"
check "the restart happened" test "$(started)" != "$s1"
check "chains verify" "$RBL" audit verify "$W/real2.jsonl"

rbl_test_done
