-- Seed scenario 2: a degraded cache node. Restarts the service through its service manager
-- (systemctl, through exec: argv, no shell), behind a circuit breaker: no restart when the
-- unit already restarted too often, so a crash loop escalates to a human instead.
--   rbl run runbooks/cache-restart.lua --tenant prod-tenant-7 --config rbl.config.lua
-- (the config's exec.allow must list the systemctl binary)
runbook {
  id = "cache-restart",
  description = "Degraded cache node: restart it unless the circuit breaker is open",
  params = { service = "redis-cache", systemctl = "systemctl", max_restarts = 3 },
}

local function systemctl(...)
  return exec({ params.systemctl, ... }, { timeout = 30 })
end

-- is-active and show change nothing: marked read-only, so a healthy cache ends nothing_to_do
local function systemctl_read(...)
  return exec({ params.systemctl, ... }, { timeout = 30, read_only = true })
end

local function first_word(s) return (s or ""):match("^%s*(%S*)") end

step "check_health" {
  run = function(ctx)
    ctx.state = first_word(systemctl_read("is-active", params.service).stdout)
    log("%s is %s", params.service, ctx.state)
  end,
}

step "restart_cache" {
  when = function(ctx) return ctx.state ~= "active", "service is healthy" end,
  pre = function(ctx)
    local n = tonumber(first_word(systemctl_read("show", params.service, "-p", "NRestarts", "--value").stdout)) or 0
    ctx.restarts = n
    if n >= params.max_restarts then
      return false, string.format("circuit breaker open: %d restarts already (limit %d); escalate", n, params.max_restarts)
    end
    return true
  end,
  run = function(ctx)
    local r = systemctl("restart", params.service)
    if r.exit_code ~= 0 then error("restart failed: " .. r.stderr) end
  end,
  verify = function()
    for _ = 1, 10 do
      if first_word(systemctl_read("is-active", params.service).stdout) == "active" then return true end
      sleep(0.2)
    end
    return false, params.service .. " did not come back"
  end,
  rollback = function() log("a restart cannot be undone; %s left for a human", params.service) end,
}
