-- A lifecycle verb on another tenant's container: refused before any effect.
runbook { id = "docker-verbs-xt", params = { c = "", verb = "stop" } }
step "try" { run = function() docker[params.verb](params.c) end }
