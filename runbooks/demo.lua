-- The demo: finds config drift between the running state and the intended state, plans the
-- fix, checks the host, and fans out a health probe. Runs on any machine (no cluster needed):
--   build/rbl run runbooks/demo.lua --tenant demo-tenant --config runbooks/demo.config.lua
runbook {
  id = "demo-config-drift",
  description = "Connection pool drift: running config against the IaC spec",
  params = { probes = 5 },
}

local spec = iac.yaml("demo/intended.yaml")
local live = iac.json("demo/live.json")

step "inspect_host" {
  run = function(ctx)
    local r = exec({ "uname", "-sr" }, { timeout = 5 })
    ctx.kernel = r.stdout:gsub("%s+$", "")
    log("host kernel: %s", ctx.kernel)
  end,
  verify = function(ctx) return ctx.kernel ~= "", "uname printed nothing" end,
}

step "analyze_drift" {
  run = function(ctx)
    ctx.drift = drift_compare(live, spec, { critical = { "data.max_connections" } })
    for line in ctx.drift:summary():gmatch("[^\n]+") do log("%s", line) end
  end,
}

step "plan_remediation" {
  pre = function(ctx) return ctx.drift.exists, "no drift: nothing to plan" end,
  run = function(ctx)
    ctx.patch = ctx.drift:patch()
    log("merge patch to apply: %s", json.encode(ctx.patch))
  end,
  verify = function(ctx) return ctx.patch.data.max_connections == 500, "the patch must restore max_connections" end,
}

step "probe_replicas" {
  timeout = 10,
  run = function(ctx)
    local ids = {}
    for i = 1, params.probes do ids[i] = i end
    local results = each(ids, function(i)
      sleep(0.01 * i)
      local r = exec({ "/bin/sh", "-c", "echo replica-$0 ok", tostring(i) })
      return r.stdout:gsub("%s+$", "")
    end, { concurrency = 3 })
    log("probes: %s", table.concat(results, ", "))
    ctx.probes = #results
  end,
  verify = function(ctx) return ctx.probes == params.probes, "every probe must answer" end,
}
