-- Error codes keep Prometheus's message. params.mode: bad | down
runbook { id = "prom-errors", params = { mode = "bad" } }
step "errors" { run = function()
  if params.mode == "bad" then
    local ok, err = pcall(prom.query, "nosuchfunction(reqs)")
    assert(not ok and err.code == "invalid", "bad query: " .. tostring(err))
    assert(err.message:find("bad_data", 1, true) and err.message:find("unknown function", 1, true),
      "Prometheus's errorType and error: " .. err.message)
    log("%s", err.message)
    local ok2, err2 = pcall(prom.query, "rate(reqs)")
    assert(not ok2 and err2.code == "invalid" and err2.message:find("range vector", 1, true), tostring(err2))
    log("%s", err2.message)
    local ok3, err3 = pcall(prom.query, "sum(reqs")
    assert(not ok3 and err3.code == "invalid" and err3.message:find("parse error", 1, true), tostring(err3))
    log("%s", err3.message)
    local ok4, err4 = pcall(prom.range, "reqs", { start = "-1h", step = 0.01 })
    assert(not ok4 and err4.code == "invalid" and err4.message:find("11,000", 1, true), tostring(err4))
    log("%s", err4.message)
  else
    local ok, err = pcall(prom.query, "reqs")
    assert(not ok and err.code == "unavailable", "down: " .. tostring(err))
    log("%s", err.message)
  end
end }
