-- docker.ps (scoped), docker.inspect, docker.restart, docker.logs (multiplexed and TTY).
-- params: c, logger (prints hello-out / hello-err), tty (a TTY container that prints tty-line),
-- count (how many running containers the tenant has)
runbook { id = "docker-lifecycle", description = "ps, inspect, restart, logs" }

step "ps_is_scoped" {
  run = function()
    local all = docker.ps{}
    assert(#all == tonumber(params.count), "ps count " .. #all .. " want " .. params.count)
    for _, c in ipairs(all) do assert(c.Labels["rbl.tenant"] == tenant, c.Id) end
    local web = docker.ps{ labels = { role = "web" } }
    assert(#web == 1 and web[1].Names[1] == "/" .. params.c, "web " .. #web)
    assert(#docker.ps{ labels = { role = "nothing-has-this" } } == 0)
  end,
}

step "restart" {
  run = function(ctx)
    local before = docker.inspect(params.c).State.StartedAt
    local r = docker.restart(params.c, { timeout = 1 })
    assert(r.restarted)
    local after = docker.inspect(params.c)
    assert(after.State.Running and after.State.StartedAt ~= before, "StartedAt unchanged")
  end,
}

step "logs" {
  run = function()
    local l = docker.logs(params.logger)
    assert(l.stdout == "hello-out\n", "stdout " .. l.stdout)
    assert(l.stderr == "hello-err\n", "stderr " .. l.stderr)
    local t = docker.logs(params.logger, { tail = 0 })
    assert(t.stdout == "" and t.stderr == "")
    local tty = docker.logs(params.tty)
    assert(tty.stdout:find("tty-line", 1, true), "tty " .. tty.stdout)
  end,
}
