-- A query naming another tenant: refused (exit 3) and never sent. params.q is the query.
runbook { id = "prom-cross", params = { q = "" } }
step "cross" { run = function() prom.query(params.q) end }
