-- The seed case end to end through rbl, from the real fixtures beside this file:
--   build/rbl run src/families/drift/tests/seed_runbook.lua --tenant prod-tenant-7 --report /tmp/r.json
-- Expected: exit 0; the analyze_drift trace entry has drift_detected =
--   [{"field":"max_connections","expected":500,"actual":"250","severity":"critical"}]
-- and the log line "max_connections expected 500, actual 250 (critical)".
-- (Not registered in ctest until the lead wires iac/drift_compare into the sandbox.)
runbook { id = "drift-seed", description = "running config vs Terraform spec" }

local spec = iac.terraform("tf/terraform.tfstate", 'module.tenant["prod-tenant-7"].terraform_data.db_pool')
local live = iac.json("k8s/live-configmap.json") -- stands in for kube.get("configmap", "db-pool-config")

step "analyze_drift" {
  run = function(ctx)
    ctx.drift = drift_compare(live.data, spec.input.data, { critical = { "max_connections" } })
    log("%s", ctx.drift:summary())
  end,
  verify = function(ctx)
    return #ctx.drift == 1 and ctx.drift[1].severity == "critical", "expected exactly the seed's item"
  end,
}

step "plan_patch" {
  when = function(ctx) return ctx.drift.exists, "no drift: nothing to patch" end,
  run = function(ctx)
    local patch = { data = ctx.drift:patch() }
    log("patch: %s", json.encode(patch))
    assert(patch.data.max_connections == 500, "patch sets max_connections")
  end,
}
