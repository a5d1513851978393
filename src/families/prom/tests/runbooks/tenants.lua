-- prom.tenants: the run's authorised tenants that have series; also per tenant in each_tenant.
runbook { id = "prom-tenants", params = { want = "" } }
step "tenants" { run = function()
  local found = prom.tenants("pool_saturation > 0.9")
  local got = table.concat(found, ",")
  if got ~= params.want then error(string.format("prom.tenants: got {%s}, want {%s}", got, params.want), 0) end
  local each = each_tenant(function(t) return table.concat(prom.tenants("pool_saturation > 0.9"), ",") end)
  for _, t in ipairs(tenants) do
    local want = params.want:find(t, 1, true) and t or ""
    if each[t] ~= want then error(string.format("each_tenant %s: got {%s}, want {%s}", t, each[t], want), 0) end
  end
  local ok, err = pcall(prom.tenants, "sum(pool_saturation) or vector(1)")
  assert(not ok and err.code == "invalid", "an aggregation without the label is invalid")
  log("tenants {%s}", got)
end }
