-- docker_exec: streams, exit codes, user/env/workdir, ids, errors, timeout, detect_runtime.
-- params: c (a running container of the tenant), stopped (a stopped one of the tenant)
runbook { id = "docker-exec-basic", description = "docker_exec against a real dockerd" }

local function fails(code, needle, f, ...)
  local ok, err = pcall(f, ...)
  assert(not ok, "expected a failure")
  assert(type(err) == "table" and err.code == code, "code: " .. tostring(err))
  assert(tostring(err.message):find(needle, 1, true), "message: " .. tostring(err.message))
  return err
end

step "streams_and_exit_code" {
  run = function(ctx)
    local r = docker_exec(params.c, { "sh", "-c", "echo out; echo err >&2; exit 3" })
    assert(r.exit_code == 3, "exit code " .. tostring(r.exit_code))
    assert(r.stdout == "out\n", "stdout " .. r.stdout)
    assert(r.stderr == "err\n", "stderr " .. r.stderr)
    assert(math.type(r.duration_ms) == "integer" and r.duration_ms >= 0)
    assert(docker_exec(params.c, { "true" }).exit_code == 0)
    assert(docker_exec(params.c, { "false" }).exit_code == 1)
  end,
}

step "interleaved_streams" {
  run = function()
    local r = docker_exec(params.c, { "sh", "-c", "i=0; while [ $i -lt 3000 ]; do echo o$i; echo e$i >&2; i=$((i+1)); done" })
    local no, ne = 0, 0
    for l in r.stdout:gmatch("[^\n]+") do assert(l == "o" .. no, l); no = no + 1 end
    for l in r.stderr:gmatch("[^\n]+") do assert(l == "e" .. ne, l); ne = ne + 1 end
    assert(no == 3000 and ne == 3000, no .. " " .. ne)
  end,
}

step "user_env_workdir" {
  run = function()
    local r = docker_exec(params.c, { "sh", "-c", 'id -un; echo "$FOO"; echo "$BAR"; pwd' },
      { user = "nobody", env = { FOO = "bar baz", BAR = "x=y" }, workdir = "/tmp" })
    assert(r.stdout == "nobody\nbar baz\nx=y\n/tmp\n", r.stdout)
    assert(docker_exec(params.c, { "id", "-u" }, { user = "65534" }).stdout == "65534\n")
    assert(docker_exec(params.c, { "id", "-u" }).stdout == "0\n")
  end,
}

step "by_full_id_and_prefix" {
  run = function()
    local c = docker.inspect(params.c)
    assert(type(c.Id) == "string" and #c.Id == 64)
    assert(docker_exec(c.Id, { "hostname" }).stdout == c.Config.Hostname .. "\n")
    assert(docker_exec(c.Id:sub(1, 12), { "true" }).exit_code == 0)
  end,
}

step "errors_name_container_and_endpoint" {
  run = function()
    local e = fails("not_found", "rbl-test-no-such-container", docker_exec, "rbl-test-no-such-container", { "true" })
    assert(e.message:find("unix://", 1, true), e.message)
    e = fails("conflict", "not running", docker_exec, params.stopped, { "true" })
    assert(e.message:find(params.stopped, 1, true), e.message)
    fails("invalid", "argv", docker_exec, params.c, {})
  end,
}

step "timeout" {
  run = function()
    local t0 = os.time()
    local e = fails("timeout", params.c, docker_exec, params.c, { "sleep", "30" }, { timeout = 1 })
    assert(e.message:find("timeout after 1 s", 1, true), e.message)
    assert(os.time() - t0 < 10)
  end,
}

step "detect_runtime" {
  run = function()
    local d = detect_runtime("docker")
    assert(d.api_version:match("^1%.%d+$"), d.api_version)
    assert(d.os == "linux", tostring(d.os))
    assert(type(d.version) == "string" and d.version ~= "")
    assert(d.endpoint:find("^unix://"), d.endpoint)
  end,
}
