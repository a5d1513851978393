-- 50 concurrent docker_exec calls with each(), over the tenant's fan-out containers.
-- params: prefix (container names are prefix1..prefixN), n (containers)
runbook { id = "docker-fanout", description = "50-way concurrent docker_exec" }

step "fanout" {
  run = function()
    local n = tonumber(params.n)
    local items = {}
    for i = 1, 50 do items[i] = i end
    local res = each(items, function(i)
      local c = params.prefix .. ((i - 1) % n + 1)
      return docker_exec(c, { "sh", "-c", "sleep 0.2; echo " .. i })
    end, { concurrency = 50 })
    for i = 1, 50 do
      assert(res[i].exit_code == 0 and res[i].stdout == i .. "\n", "item " .. i)
    end
    log("50 execs done")
  end,
}
