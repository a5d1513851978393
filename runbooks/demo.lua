-- The demo (scripts/demo.sh): the seed incident end to end against a real dockerd and the
-- Kubernetes API stand-in. The tenant's API containers run on Docker; its pool ConfigMap has
-- drifted from the Terraform state (max_connections 250 running, 500 intended). The runbook
-- finds the containers, detects the drift against the state file, patches the ConfigMap,
-- restarts the Deployment and the containers, verifies, and scores the tenant's isolation.
--   eval "$(bash scripts/standin.sh start)"
--   rbl run runbooks/demo.lua --tenant prod-tenant-7 --param app=<the containers' rbl.demo label>
runbook {
  id = "demo-db-pool-drift",
  description = "Connection pool exhausted: restore the pool config from Terraform state, restart the API",
  params = { configmap = "db-pool-config", deployment = "api", state = "infra/terraform.tfstate",
             app = "rbl-demo", min_isolation = 0.5 },
}

local spec = iac.terraform(params.state, string.format('module.tenant["%s"].terraform_data.db_pool', tenant))

step "find_containers" {
  run = function(ctx)
    ctx.containers = docker.ps { labels = { ["rbl.demo"] = params.app } }
    for _, c in ipairs(ctx.containers) do log("container %s %s (%s)", c.Names[1], c.Id:sub(1, 12), c.Status) end
  end,
  verify = function(ctx) return #ctx.containers > 0, "no container labelled rbl.demo=" .. params.app end,
}

step "analyze_drift" {
  run = function(ctx)
    local cm = kube.get("configmap", params.configmap)
    ctx.drift = drift_compare(cm.data, spec.input.data, { critical = { "max_connections" } })
    log("%s", ctx.drift:summary())
  end,
}

step "remediate_config" {
  when = function(ctx) return ctx.drift.exists, "no drift: nothing to remediate" end,
  run = function(ctx)
    -- ConfigMap data are strings: the API rejects the state's numbers as they are.
    local data = {}
    for k, v in pairs(ctx.drift:patch("merge")) do data[k] = v == json.null and v or tostring(v) end
    return kube_patch("configmap", params.configmap, { data = data }, { type = "merge" })
  end,
  verify = function()
    local v = kube.get("configmap", params.configmap).data.max_connections
    return tostring(v) == tostring(spec.input.data.max_connections), "max_connections is " .. tostring(v)
  end,
  rollback = "auto",
}

step "restart_api" {
  run = function(ctx)
    kube.rollout_restart(params.deployment)
    each(ctx.containers, function(c) return docker.restart(c.Id, { timeout = 2 }) end, { concurrency = 4 })
  end,
  verify = function(ctx)
    local d = kube.get("deployment", params.deployment)
    if not d.spec.template.metadata.annotations["kubectl.kubernetes.io/restartedAt"] then
      return false, "no restart annotation on deployment " .. params.deployment
    end
    for _, c in ipairs(ctx.containers) do
      local r = docker_exec(c.Id, { "cat", "/proc/1/cmdline" }, { timeout = 5 })
      if r.exit_code ~= 0 then return false, c.Names[1] .. " does not answer after the restart" end
    end
    return true
  end,
}

step "score_isolation" {
  run = function(ctx)
    local iso = verify_isolation()
    log("isolation score %.2f (%d findings)", iso.score, #iso.findings)
    for _, f in ipairs(iso.findings) do log("finding: %s", json.encode(f)) end
    return iso.score
  end,
}
