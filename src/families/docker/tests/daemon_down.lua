-- A docker_exec, then a pause during which the test kills the daemon's socket proxy, then another.
-- params: c
runbook { id = "docker-daemon-down", description = "the daemon goes away mid-run" }

step "before" { run = function() assert(docker_exec(params.c, { "true" }).exit_code == 0) end }
step "pause" { run = function() sleep(tonumber(params.pause or 3)) end }
step "after" { run = function() docker_exec(params.c, { "true" }) end }
