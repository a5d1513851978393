-- docker.stats, docker.top, docker.stop, docker.start, docker.kill against the real daemon.
-- params: c (a running container of the tenant, running `sleep`)
runbook { id = "docker-verbs", params = { c = "" } }

local function eq(got, want, what)
  if got ~= want then error(string.format("%s: expected %s, got %s", what, tostring(want), tostring(got)), 2) end
end
local function running() return docker.inspect(params.c).State.Running end

step "stats_top" { run = function()
  local s = docker.stats(params.c)
  eq(s.raw.id, docker.inspect(params.c).Id, "stats are the container's")
  assert(type(s.cpu_percent) == "number" and s.cpu_percent >= 0, "cpu_percent")
  assert(s.memory.usage > 0 and s.memory.limit >= s.memory.usage, "memory usage " .. s.memory.usage)
  assert(s.pids >= 1, "pids " .. s.pids)
  local t = docker.top(params.c)
  local found
  for _, p in ipairs(t.processes) do if tostring(p.CMD):find("sleep", 1, true) then found = p end end
  assert(found and tonumber(found.PID), "the sleep process in top")
end }

step "stop_start" { run = function()
  local r = docker.stop(params.c, { timeout = 1 })
  eq(r.changed, true, "stop changed")
  eq(r.was_running, true, "was running")
  eq(running(), false, "stopped")
  eq(docker.stop(params.c, { timeout = 1 }).changed, false, "a second stop: already stopped")
  local ok, e = pcall(docker.top, params.c)
  assert(not ok and e.code == "conflict", "top of a stopped container: " .. tostring(e and e.message))
  ok, e = pcall(docker.kill, params.c)
  assert(not ok and e.code == "conflict", "kill of a stopped container: " .. tostring(e and e.message))
  eq(docker.start(params.c).changed, true, "start")
  eq(running(), true, "running again")
  eq(docker.start(params.c).changed, false, "a second start: already running")
end }

step "kill" { run = function()
  local ok, e = pcall(docker.kill, params.c, { signal = "KILL; rm -rf /" })
  assert(not ok and e.code == "invalid", "a bad signal is invalid")
  eq(docker.kill(params.c, { signal = "SIGKILL" }).changed, true, "kill")
  wait_until(function() return not running() end, { timeout = 10, interval = 0.1 })
  docker.start(params.c)
end }
