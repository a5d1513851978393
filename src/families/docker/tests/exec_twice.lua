-- Two docker_exec calls on one name with a pause between them (the test replaces the container
-- during the pause): each call resolves the name again and checks the tenant label of the
-- container it finds, so the second call reaches only what the name means then.
-- params: c (the container name), pause (seconds between the calls)
runbook { id = "docker-exec-twice", description = "docker_exec, a pause, docker_exec again" }

step "first" {
  run = function()
    local r = docker_exec(params.c, { "hostname" })
    log("first=%s", r.stdout)
  end,
}

step "second" {
  run = function()
    sleep(tonumber(params.pause))
    local r = docker_exec(params.c, { "hostname" })
    log("second=%s", r.stdout)
  end,
}
