-- One docker_exec whose result the test checks from outside (report, audit, container state).
-- params: c, cmd (run with sh -c), sleep_before (seconds, optional)
runbook { id = "docker-exec-one", description = "one docker_exec" }

step "exec" {
  run = function(ctx)
    if params.sleep_before then sleep(tonumber(params.sleep_before)) end
    local r = docker_exec(params.c, { "sh", "-c", params.cmd or "hostname" })
    log("exit=%d stdout=%s", r.exit_code, r.stdout)
    assert(r.exit_code == 0, r.stderr)
    ctx.out = r.stdout
  end,
}
