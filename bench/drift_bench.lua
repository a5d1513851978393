-- Benchmark of drift.compare on two ~50k-leaf documents differing in a handful of places.
--   lua5.4 bench/drift_bench.lua [--leaves N] [--runs R] [--check]
-- The documents are built in Lua from bench/drift_bench_gen.lua's seed (plain lua5.4 has no
-- JSON decoder); the time is drift.compare alone, median of R runs, CPU time.
local dir = (arg and arg[0] or ""):match("^(.*)/bench/[^/]*$") or "."
package.path = dir .. "/bench/?.lua;" .. package.path
package.preload["rbl.drift"] = function() return dofile(dir .. "/src/families/drift/drift.lua") end

local drift = require "rbl.drift"
local gen = require "drift_bench_gen"

local leaves, runs, check = 50000, 9, false
local i = 1
while arg and arg[i] do
  if arg[i] == "--leaves" then leaves = tonumber(arg[i + 1]); i = i + 1
  elseif arg[i] == "--runs" then runs = tonumber(arg[i + 1]); i = i + 1
  elseif arg[i] == "--check" then check = true
  else io.stderr:write("usage: drift_bench.lua [--leaves N] [--runs R] [--check]\n"); os.exit(2) end
  i = i + 1
end

local actual, expected = gen.pair(leaves)
local times, d = {}, nil
for r = 1, runs do
  collectgarbage("collect")
  local t0 = os.clock()
  d = drift.compare(actual, expected, { critical = { "max_connections" } })
  times[r] = (os.clock() - t0) * 1000
end
table.sort(times)
local median = times[(runs + 1) // 2]

if check then
  local want = {}
  if #actual.tenants > 200 then
    for _, c in ipairs(gen.changes) do want[#want + 1] = c end
    table.sort(want, function(x, y) return x.path < y.path end)
  end
  local got = {}
  for _, it in ipairs(d) do got[#got + 1] = it end
  table.sort(got, function(x, y) return x.path < y.path end)
  local ok = #got == #want
  for k = 1, math.min(#got, #want) do
    if got[k].path ~= want[k].path or got[k].op ~= want[k].op then ok = false end
  end
  if not ok then
    io.stderr:write("drift_bench: unexpected items:\n", d:summary(), "\n")
    os.exit(1)
  end
end

io.write(string.format("drift.compare: %d leaves, %d items, median %.1f ms (min %.1f, max %.1f, %d runs)\n",
  leaves, #d, median, times[1], times[runs], runs))
if os.getenv("DRIFT_BENCH_SUMMARY") then io.write(d:summary(), "\n") end
