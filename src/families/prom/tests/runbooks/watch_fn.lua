-- prom.watch with functions, and wait_until.
runbook { id = "prom-watch-fn" }
step "fn" { run = function()
  local seen = 0
  local r = prom.watch("sum(reqs)", { ["until"] = function(v) seen = seen + 1; return v == 10 end,
    worse = function(v) return v > 1000 end, interval = 0.2, timeout = 10 })
  assert(r.resolved and r.baseline == 10 and seen >= 1, "watch with functions")
  local n = 0
  local v = wait_until(function() n = n + 1; return n >= 3 and prom.query("reqs")[1].value end,
    { interval = 0.1, timeout = 10 })
  assert(v == 10 and n == 3, "wait_until returns the truthy value")
  local ok, err = pcall(wait_until, function() return false end, { interval = 0.1, timeout = 0.5 })
  assert(not ok and err.code == "timeout", "wait_until timeout: " .. tostring(err))
  local ok2, err2 = pcall(prom.watch, "reqs or other_metric", { ["until"] = "< 1", timeout = 5 })
  assert(not ok2 and err2.code == "invalid" and err2.message:find("2 series", 1, true), "watch of 2 series: " .. tostring(err2))
  local ok3, err3 = pcall(prom.watch, "reqs", { ["until"] = "about 5" })
  assert(not ok3 and err3.code == "invalid", "bad until")
  log("functions ok")
end }
step "wait" { timeout = 60, run = function()
  wait_until(function() return false end, { interval = 0.1, timeout = 0.5 })
end }
