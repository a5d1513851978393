-- prom bench: params.mode = "seq" (n sequential prom.query calls) | "fanout" (each_tenant, one
-- prom.query per tenant) | "none" (the run's fixed cost).
runbook { id = "prom-bench", params = { mode = "seq", n = 200, q = "reqs" } }
step "bench" { run = function()
  if params.mode == "seq" then
    for _ = 1, params.n do assert(#prom.query(params.q) == 1) end
  elseif params.mode == "fanout" then
    local by = each_tenant(function(t) return prom.query(params.q)[1].value end, { concurrency = 50 })
    local n = 0
    for _ in pairs(by) do n = n + 1 end
    assert(n == #tenants, "every tenant answered")
  end
end }
