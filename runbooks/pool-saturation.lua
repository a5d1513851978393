-- Seed incident, all six steps: connection pool saturation across tenants after the pool config
-- drifted from the Terraform spec. Detects the runtimes, finds the tenants in alert state from
-- the metric, compares their pool config with Terraform state, patches it, verifies each tenant
-- is fenced off, watches the metric recover, and tells on-call.
--   rbl run runbooks/pool-saturation.lua --tenant 'prod-tenant-*' --incident INC-0847293 --config rbl.lua
-- The config names the Prometheus (prom.url) and the slack channel (notify.channels.oncall).
runbook {
  id = "db-pool-saturation",
  description = "Connection pool saturation: restore the pool config from Terraform, watch it recover, tell on-call",
  -- metric: the saturation metric (0..1), one series per tenant; in alert above threshold,
  -- recovered below recovered (held for hold seconds); state: Terraform state, relative to this file
  params = { metric = "db_connection_pool_saturation", threshold = 0.9, recovered = 0.5,
             configmap = "db-pool-config", state = "infra/pool-saturation.tfstate", min_isolation = 0.5,
             watch_timeout = 300, hold = 10, interval = 5, channel = "oncall" },
}

local fmt, concat = string.format, table.concat

-- the tenants in alert state, as a set, for the steps that act on them only
local function affected(ctx, t) return ctx.hot ~= nil and ctx.hot[t] == true end

step "detect_runtime" {
  run = function(ctx)
    local d = detect_runtime("docker")
    local k = detect_runtime("kubernetes")
    log("Runtime: docker %s at %s; kubernetes %s at %s", d.version, d.endpoint, k.version, k.endpoint)
  end,
}

step "identify_tenants" {
  run = function(ctx)
    log("Querying metrics API for connection pool saturation.")
    ctx.tenants = prom.tenants(fmt("%s > %s", params.metric, params.threshold))
    ctx.hot = {}
    for _, t in ipairs(ctx.tenants) do ctx.hot[t] = true end
    log("Found %d tenants in alert state: %s", #ctx.tenants, concat(ctx.tenants, ", "))
  end,
  verify = function(ctx) return #ctx.tenants > 0, "no tenant in alert state" end,
}

step "analyze_drift" {
  run = function(ctx)
    ctx.drift = each_tenant(function(t)
      if not affected(ctx, t) then return nil end
      local spec = iac.terraform(params.state, fmt('module.tenant["%s"].terraform_data.db_pool', t))
      local cm = kube.get("configmap", params.configmap)
      local d = drift_compare(cm.data, spec.input.data, { critical = { "max_connections" }, coerce = true })
      for line in d:summary():gmatch("[^\n]+") do log("%s: %s", t, line) end
      return { exists = d.exists, patch = d:patch("merge") }
    end)
  end,
}

step "remediate_config" {
  pre = function(ctx)
    for _, d in pairs(ctx.drift) do if d.exists then return true end end
    return false, "no drift: nothing to remediate"
  end,
  run = function(ctx)
    each_tenant(function(t)
      local d = ctx.drift[t]
      if not d or not d.exists then return end
      local data = {}
      for k, v in pairs(d.patch) do data[k] = v == json.null and v or tostring(v) end -- ConfigMap data are strings
      kube_patch("configmap", params.configmap, { data = data }, { type = "merge" })
      log("%s: pool config patched (%s)", t, json.encode(data))
    end)
  end,
  verify = function(ctx)
    local bad = {}
    each_tenant(function(t)
      if not affected(ctx, t) then return end
      local v = kube.get("configmap", params.configmap).data.max_connections
      local spec = iac.terraform(params.state, fmt('module.tenant["%s"].terraform_data.db_pool', t))
      if tostring(v) ~= tostring(spec.input.data.max_connections) then bad[#bad + 1] = t .. "=" .. tostring(v) end
    end)
    return #bad == 0, "max_connections still off: " .. concat(bad, ", ")
  end,
  rollback = "auto",
}

step "verify_isolation" {
  run = function(ctx)
    local low = each_tenant(function(t)
      if not affected(ctx, t) then return nil end
      local iso = verify_isolation({})
      log("%s: isolation score %.2f (%d findings)", t, iso.score, #iso.findings)
      return iso.score
    end)
    for t, score in pairs(low) do
      if score < params.min_isolation then error(fmt("%s: isolation %.2f below %.2f", t, score, params.min_isolation)) end
    end
  end,
}

step "watch_recovery" {
  run = function(ctx)
    log("Watching connection pool metrics for %g s post-remediation", params.watch_timeout)
    each_tenant(function(t)
      if not affected(ctx, t) then return end
      local w = prom.watch(fmt("max(%s)", params.metric), { ["until"] = "< " .. params.recovered,
        hold = params.hold, timeout = params.watch_timeout, interval = params.interval })
      log("%s: %s -> %s, resolved", t, tostring(w.baseline), tostring(w.current))
    end)
  end,
}

step "notify_oncall" {
  run = function(ctx)
    log("Notifying on-call with full execution audit")
    notify(params.channel, fmt("Connection pool saturation resolved for %d tenants: %s", #ctx.tenants, concat(ctx.tenants, ", ")),
      { fields = { incident = incident, tenants = concat(ctx.tenants, ", "), runbook = "db-pool-saturation" }, required = true })
  end,
}
