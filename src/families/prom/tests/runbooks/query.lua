-- prom.query / prom.range / scalars, as tenant t1: results hold t1's series only.
runbook { id = "prom-query" }
local function only_t1(what, res)
  for _, s in ipairs(res) do
    local t = s.labels.tenant
    if t ~= nil and t ~= "t1" then error(what .. ": a series of tenant " .. tostring(t) .. " leaked", 0) end
  end
  return res
end
step "instant" { run = function()
  local r = only_t1("reqs", prom.query("reqs"))
  assert(#r == 1 and r[1].value == 10 and r[1].labels.__name__ == "reqs", "reqs: " .. json.encode(r))
  assert(type(r[1].ts) == "number", "ts is a number")
  local s = prom.query("scalar(sum(reqs))")
  assert(#s == 1 and s[1].value == 10 and next(s[1].labels) == nil, "scalar: " .. json.encode(s))
  local at = prom.query("reqs", { time = "-1s" })
  assert(#at == 1, "time option")
  log("instant ok")
end }
step "range" { run = function()
  local m = only_t1("range", prom.range("reqs", { start = "-20s", step = 1 }))
  assert(#m == 1 and #m[1].values >= 2, "range: " .. json.encode(m))
  assert(m[1].values[1][2] == 10 and type(m[1].values[1][1]) == "number", "matrix point {ts, value}")
  log("range ok: %d points", #m[1].values)
end }
