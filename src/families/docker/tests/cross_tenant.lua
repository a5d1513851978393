-- One cross-tenant attempt: must be refused (exit 3) before any effect.
-- params: target (a name, full id or id prefix of a container that is not the tenant's), prim
runbook { id = "docker-cross-tenant", description = "a refused cross-tenant docker call" }

step "attempt" {
  run = function()
    local p = params.prim or "exec"
    if p == "exec" then docker_exec(params.target, { "touch", "/tmp/pwned" })
    elseif p == "restart" then docker.restart(params.target)
    elseif p == "logs" then docker.logs(params.target)
    elseif p == "stop" or p == "start" or p == "kill" or p == "stats" or p == "top" then docker[p](params.target)
    else docker.inspect(params.target) end
  end,
}
