-- prom.watch: params.until / worse / timeout / hold; the step fails on timeout or worse.
runbook { id = "prom-watch", params = { q = "max(latency_ms)", ["until"] = "< 200", worse = "", hold = 2,
  timeout = 30, interval = 0.5 } }
step "watch" {
  run = function()
    local r = prom.watch(params.q, { ["until"] = params["until"], worse = params.worse ~= "" and params.worse or nil,
      hold = params.hold, timeout = params.timeout, interval = params.interval })
    log("resolved=%s baseline=%s current=%s samples=%d", tostring(r.resolved), tostring(r.baseline),
      tostring(r.current), #r.samples)
    assert(r.resolved == true and #r.samples >= 2)
  end,
  rollback = function() log("rolled back after the watch failed") end,
}
