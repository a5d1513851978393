runbook { id = "db-connection-exhaustion", description = "pool drift after a bad deploy" }

local spec = iac.terraform("infra/terraform.tfstate",            -- runbooks/infra, beside this file
  string.format('module.tenant["%s"].terraform_data.db_pool', tenant)).input

step "analyze_drift" {
  run = function(ctx)
    local cm = kube.get("configmap", "db-pool-config")          -- the tenant's namespace
    ctx.drift = drift_compare(cm.data, spec.data, { critical = { "max_connections" } })
    log("%s", ctx.drift:summary())                              -- max_connections expected 500, actual 250 (critical)
  end,
}

step "remediate_config" {
  when     = function(ctx) return ctx.drift.exists, "no drift" end,   -- false: skipped, not failed
  run      = function(ctx)
    local data = {}                                             -- ConfigMap data are strings
    for k, v in pairs(ctx.drift:patch()) do data[k] = tostring(v) end
    kube_patch("configmap", "db-pool-config", { data = data })
  end,
  verify   = function() return kube.get("configmap", "db-pool-config").data.max_connections == "500" end,
  rollback = "auto",   -- inverse patch from the before-state the audit recorded
}
