-- A query at top level of a multi-tenant run: bound to no tenant.
runbook { id = "prom-unbound", params = { want = 0 } }
step "unbound" { run = function()
  local r = prom.query("reqs")
  if #r ~= params.want then error(string.format("got %d series, want %d", #r, params.want), 0) end
  local per = each_tenant(function(t) return prom.query("reqs")[1].value end)
  log("unscoped %d series; t1=%s t2=%s", #r, tostring(per.t1), tostring(per.t2))
  assert(per.t1 == 10 and per.t2 == 20, "each_tenant scopes each call")
end }
