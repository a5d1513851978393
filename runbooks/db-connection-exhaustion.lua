-- Seed scenario 1: database connection exhaustion after the pool config drifted from the
-- Terraform spec (max_connections 250 running, 500 intended). Finds the drift, checks the
-- tenant is fenced off, patches the ConfigMap, restarts the API, verifies; rolls back on failure.
--   rbl run runbooks/db-connection-exhaustion.lua --tenant prod-tenant-7 --incident INC-0847293
runbook {
  id = "db-connection-exhaustion",
  description = "Connection pool exhausted: restore the pool config from the Terraform spec",
  params = { configmap = "db-pool-config", deployment = "api", min_isolation = 0.5,
             state = "infra/terraform.tfstate" },
}

local spec = iac.terraform(params.state, string.format('module.tenant["%s"].terraform_data.db_pool', tenant))

step "analyze_drift" {
  run = function(ctx)
    local cm = kube.get("configmap", params.configmap)
    ctx.drift = drift_compare(cm.data, spec.input.data, { critical = { "max_connections" } })
    for line in ctx.drift:summary():gmatch("[^\n]+") do log("%s", line) end
  end,
}

step "verify_isolation" {
  run = function(ctx)
    local iso = verify_isolation({ docker = false })
    log("isolation score %.2f (%d findings)", iso.score, #iso.findings)
    assert(iso.score >= params.min_isolation, string.format("isolation %.2f below %.2f", iso.score, params.min_isolation))
  end,
}

step "remediate_config" {
  -- no drift is not a failure: the step is skipped, and with nothing else to do the run
  -- ends resolved with nothing_to_do = true
  when = function(ctx) return ctx.drift.exists, "no drift: nothing to remediate" end,
  run = function(ctx)
    -- ConfigMap data are strings: the API rejects the spec's numbers as they are.
    local data = {}
    for k, v in pairs(ctx.drift:patch("merge")) do data[k] = v == json.null and v or tostring(v) end
    kube_patch("configmap", params.configmap, { data = data }, { type = "merge" })
  end,
  verify = function()
    local v = kube.get("configmap", params.configmap).data.max_connections
    return tostring(v) == tostring(spec.input.data.max_connections), "max_connections is " .. tostring(v)
  end,
  rollback = "auto",
}

step "restart_api" {
  when = function(ctx) return ctx.drift.exists, "config unchanged: no restart needed" end,
  run = function() kube.rollout_restart(params.deployment) end,
  verify = function()
    local d = kube.get("deployment", params.deployment)
    return d.spec.template.metadata.annotations["kubectl.kubernetes.io/restartedAt"] ~= nil, "no restart annotation"
  end,
}
