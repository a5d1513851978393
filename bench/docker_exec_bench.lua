-- Bench runbook for bench/docker_bench.sh.
-- params: mode = "fanout" (n calls over `containers` containers named prefix1.., with each at
-- concurrency c) or "single" (one warm-up, then `n` sequential calls on prefix1).
runbook { id = "docker-exec-bench", description = "docker_exec throughput and latency" }

local n, k, c = tonumber(params.n or 200), tonumber(params.containers or 10), tonumber(params.c or 10)

if params.mode == "single" then
  docker_exec(params.prefix .. "1", { "true" }) -- warm-up: endpoint, API version, connection
  local ms = {}
  for i = 1, n do ms[i] = docker_exec(params.prefix .. "1", { "true" }).duration_ms end
  table.sort(ms)
  log("effect_ms_median=%d", ms[(n + 1) // 2])
else
  local items = {}
  for i = 1, n do items[i] = i end
  local res = each(items, function(i)
    return docker_exec(params.prefix .. ((i - 1) % k + 1), { "echo", tostring(i) })
  end, { concurrency = c })
  for i = 1, n do assert(res[i].stdout == i .. "\n", "call " .. i) end
  log("calls=%d", n)
end
