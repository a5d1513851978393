-- Tenant t1 runs queries that would see tenant t2's series without rbl's rewrite.
runbook { id = "prom-scoping" }
local function only_t1(what, res)
  for _, s in ipairs(res) do
    local t = s.labels.tenant
    if t ~= nil and t ~= "t1" then error(what .. ": a series of tenant " .. tostring(t) .. " leaked", 0) end
  end
  return res
end
local function one(q, want)
  local r = only_t1(q, prom.query(q))
  local vals = {}
  for i, s in ipairs(r) do vals[i] = s.value end
  table.sort(vals)
  local got = table.concat(vals, ",")
  if got ~= want then error(string.format("%s: got {%s}, want {%s}", q, got, want), 0) end
  log("%-60s -> {%s}", q, got)
end
step "scoped" { run = function()
  one("sum(reqs)", "10")                                          -- aggregation (30 unscoped)
  one("sum by (tenant) (reqs)", "10")
  one("sum(reqs) by (job)", "10")
  one("count(reqs)", "1")
  one("max_over_time(reqs[30s:1s])", "10")                        -- subquery
  one("sum(max_over_time(sum(reqs)[30s:1s]))", "10")              -- nested subquery
  one("reqs or other_metric", "1,10")                             -- or
  one("reqs unless other_metric", "10")                           -- unless
  one("reqs and on(tenant) other_metric", "10")
  one('{__name__=~"reqs|other_metric"}', "1,10")                  -- regex matcher, no metric name
  one('{__name__=~"re.*", job=~"a.+"}', "10")
  one('reqs{job!~"x.*"}', "10")
  one("rate(reqs[1m])", "0")                                      -- function of a range selector
  one("absent(nosuch)", "1")
  one("count(count by (tenant) ({__name__=~\".+\"}))", "1")       -- every series of every metric
  one("reqs / on(job) group_left sum by (job) (reqs)", "1")       -- 10/10, not 10/30
  one("reqs > bool 15", "0")
  one("topk(5, pool_saturation)", "0.95")
  one("sum(reqs offset 1s)", "10")
  one("-reqs", "-10")
  one('reqs{tenant="t1"}', "10")                                  -- its own tenant, said out loud
  one("# a comment\nsum(\n  reqs # another\n)", "10")
  one("reqs @ end()", "10")
  one("vector(1)", "1")
  local m = prom.range("sum(reqs) + sum(other_metric)", { start = "-5s", step = 1 })
  for _, p in ipairs(m[1].values) do assert(p[2] == 11, "range sum: " .. tostring(p[2])) end
  log("range of a binary aggregation: %d points of 11", #m[1].values)
end }
