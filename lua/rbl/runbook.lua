-- The runbook DSL: runbook{}, step "name" {...}, the step state machine, rollback and the report.
local host = require "rbl.host"
local prim = require "rbl.prim"
local report = require "rbl.report"

local M = {}
local type, pairs, ipairs, tostring, error, pcall = type, pairs, ipairs, tostring, error, pcall

local STEP_FIELDS = { when = "function", pre = "function", run = "function", verify = "function",
  rollback = "function|auto", timeout = "number", description = "string" }
local RUNBOOK_FIELDS = { id = "string", description = "string", params = "table", version = "string",
  owner = "string", tags = "table" }

-- Error values may come from the runbook: read them raw, never through its metamethods.
local rawget = rawget
local function errtext(e)
  if type(e) == "table" then
    local code, msg = rawget(e, "code"), rawget(e, "message")
    code = type(code) == "string" and code or nil
    msg = (type(msg) == "string" or type(msg) == "number") and msg or "error (a table)"
    return (code and (code .. ": ") or "") .. msg
  end
  if type(e) == "string" or type(e) == "number" or type(e) == "boolean" or e == nil then return tostring(e) end
  return "error (a " .. type(e) .. ")"
end

local function errcode(e)
  local c = type(e) == "table" and rawget(e, "code") or nil
  return type(c) == "string" and c or nil
end

-- book: the declarations of one runbook file.
function M.new_book(default_id)
  local book = { meta = { id = default_id }, steps = {}, names = {}, declared = false, current = nil }

  function book.note_log(msg)
    local cur = book.current
    if cur then cur.logs = cur.logs or {}; cur.logs[#cur.logs + 1] = msg
    else book.top_logs = book.top_logs or {}; book.top_logs[#book.top_logs + 1] = msg end
  end

  function book.note_drift(items)
    local cur = book.current or book.top
    cur.drift_detected = cur.drift_detected or {}
    for _, it in ipairs(items) do cur.drift_detected[#cur.drift_detected + 1] = it end
  end

  -- A notification sent (or not) by notify() or the run's on_end summary (src/families/notify).
  function book.note_notification(n)
    book.notifications = book.notifications or {}
    book.notifications[#book.notifications + 1] = n
    if n.type == "slack" then book.slack_sent = book.slack_sent or n.sent == true end
    local cur = not n.on_end and (book.current or book.top) or nil
    if cur then
      cur.notifications = cur.notifications or {}
      cur.notifications[#cur.notifications + 1] = n
      if n.type == "slack" then cur.slack_notification_sent = cur.slack_notification_sent or n.sent == true end
    end
  end

  -- prom.watch: the metric's first and latest value, for the step's trace entry.
  function book.note_metric(baseline, current)
    local cur = book.current or book.top
    cur.baseline_metric, cur.current_metric = baseline, current
  end

  function book.note_isolation(res)
    local cur = book.current or book.top
    cur.isolation = { score = res.score, findings = res.findings, skipped = res.skipped }
  end

  -- Every call, for the report's per-step calls and action (lua/rbl/report.lua).
  prim.on_call = function(id, name, tenant, target, args, ok, res, ms)
    local cur = book.current or book.top
    if not cur then return end
    cur.calls = cur.calls or {}
    if #cur.calls <= report.MAX_CALLS then
      local c = report.call_entry(id, name, tenant, target, args, ok, res, ms)
      cur.calls[#cur.calls + 1] = c
      host.progress_event({ event = "call", step = cur.name, call = id, prim = name, tenant = tenant,
        target = c.target, status = c.status, duration_ms = ms, error = c.error })
    else
      cur.calls_more = (cur.calls_more or 0) + 1
    end
  end

  prim.on_undo = function(name, call_id, undo)
    local cur = book.current
    if cur then cur.undo = cur.undo or {}; cur.undo[#cur.undo + 1] = { prim = name, call = call_id, fn = undo } end
  end

  local function check_fields(where, t, spec)
    for k, v in pairs(t) do
      local want = spec[k]
      if not want then error(string.format("%s: unknown field '%s'", where, tostring(k)), 3) end
      local tv = type(v)
      if not (want == tv or (want == "function|auto" and (tv == "function" or v == "auto"))) then
        error(string.format("%s: field '%s' must be %s, got %s", where, k,
          want == "function|auto" and "a function or \"auto\"" or "a " .. want, tv), 3)
      end
    end
  end

  book.runbook = function(t)
    if type(t) ~= "table" then error("runbook{}: expects a table", 2) end
    if book.declared then error("runbook{}: declared twice", 2) end
    check_fields("runbook{}", t, RUNBOOK_FIELDS)
    if t.id and not t.id:match("^[%w][%w%._%-]*$") then error("runbook{}: id must be letters, digits, . _ -", 2) end
    book.declared = true
    for k, v in pairs(t) do book.meta[k] = v end
    if t.id then host.runbook_id(t.id) end
  end

  book.step = function(name)
    if type(name) ~= "string" or name == "" then error("step: name must be a non-empty string", 2) end
    if book.names[name] then error(string.format("step '%s': duplicate step name", name), 2) end
    if book.running then error("step: steps must be declared at the top level", 2) end
    return function(def)
      if type(def) ~= "table" then error(string.format("step '%s': expects a table", name), 2) end
      check_fields(string.format("step '%s'", name), def, STEP_FIELDS)
      if def.run == nil then error(string.format("step '%s': has no run function", name), 2) end
      if def.timeout and def.timeout <= 0 then error(string.format("step '%s': timeout must be > 0", name), 2) end
      book.names[name] = true
      book.steps[#book.steps + 1] = { name = name, def = def }
    end
  end
  return book
end

-- Calls fn(ctx) as its own task with a deadline; returns ok, {results...} or false, err.
local function invoke(fn, ctx, deadline)
  local remaining = deadline - host.now_ms() / 1000
  if remaining <= 0 then return false, { code = "timeout", message = "step deadline passed" } end
  local res, errs, n = host.run_all({ function() return { fn(ctx) } end }, { timeout = remaining })
  if n > 0 then return false, errs[1] end
  return true, res[1]
end

local function step_timeout(def)
  return def.timeout or host.limits().step_timeout
end

local function entry_for(book, i, s)
  return { step = i, name = s.name, action = s.name, status = "pending", duration_ms = 0,
    description = s.def.description }
end

local function record_step(s, entry)
  host.record("step", { step = s.name, index = entry.step, status = entry.status,
    duration_ms = entry.duration_ms, detail = entry.detail })
end

-- Status words in colour on a terminal (never with NO_COLOR or when stderr is not a TTY).
local COLORS = { success = "32", skipped = "33", rolled_back = "33", failed = "31", precondition_failed = "31",
  verification_failed = "31", rollback_failed = "1;31" }
local function paint(status)
  local padded = string.format("%-20s", status)
  if not host.color() or not COLORS[status] then return padded end
  return "\27[" .. COLORS[status] .. "m" .. padded .. "\27[0m"
end

local function progress_line(index, name, status, ms, detail)
  if host.progress_event({ event = "step", index = index, step = name, status = status, duration_ms = ms,
      detail = detail }) then return end
  host.progress(string.format("[%d] %-28s %s %6d ms%s", index, name, paint(status), ms,
    detail and ("  " .. detail) or ""))
end

local function progress(entry)
  progress_line(entry.step, entry.name, entry.status, entry.duration_ms, entry.detail)
end

-- Runs one step; returns true when it succeeded or was skipped.
local function run_step(book, ctx, i, s, entry)
  local def = s.def
  local t0 = host.now_ms()
  local deadline = t0 / 1000 + step_timeout(def)
  book.current = entry
  local function finish(status, detail)
    entry.status, entry.detail = status, detail
    entry.duration_ms = math.floor(host.now_ms() - t0 + 0.5)
    record_step(s, entry)
    progress(entry)
    book.current = nil
    return status == "success" or status == "skipped"
  end
  host.record("step", { step = s.name, index = i, status = "started" })
  host.progress_event({ event = "step", index = i, step = s.name, status = "started" })
  if def.when then
    local ok, r = invoke(def.when, ctx, deadline)
    if not ok then return finish("failed", "when: " .. errtext(r)) end
    if not r[1] then return finish("skipped", r[2] and tostring(r[2]) or "when() returned false") end
  end
  if def.pre then
    local ok, r = invoke(def.pre, ctx, deadline)
    if not ok then return finish("failed", "pre: " .. errtext(r)) end
    if not r[1] then return finish("precondition_failed", r[2] and tostring(r[2]) or "precondition not met") end
  end
  entry.started = true
  local ok, r = invoke(def.run, ctx, deadline)
  if not ok then
    entry.error_code = errcode(r)
    return finish("failed", errtext(r))
  end
  if r[1] ~= nil then entry.result = r[1] end
  if def.verify then
    local vok, v = invoke(def.verify, ctx, deadline)
    if not vok then return finish("verification_failed", "verify: " .. errtext(v)) end
    if not v[1] then return finish("verification_failed", v[2] and tostring(v[2]) or "verify() returned false") end
  end
  return finish("success", entry.detail)
end

local function rollback_step(book, ctx, s, entry)
  local rb = s.def.rollback
  local t0 = host.now_ms()
  local deadline = t0 / 1000 + step_timeout(s.def)
  local ok, err = true, nil
  if rb == "auto" then
    local undo = entry.undo or {}
    for k = #undo, 1, -1 do
      local u = undo[k]
      local uok, e = invoke(function() return u.fn() end, ctx, deadline)
      if not uok then ok, err = false, e; break end
    end
    if #undo == 0 then entry.rollback_detail = "nothing recorded to undo" end
  elseif type(rb) == "function" then
    local rok, e = invoke(rb, ctx, deadline)
    if not rok then ok, err = false, e end
  else
    entry.rollback = "none"
    return true
  end
  entry.rollback = ok and "done" or "failed"
  if not ok then entry.rollback_detail = errtext(err) end
  entry.rollback_ms = math.floor(host.now_ms() - t0 + 0.5)
  host.record("step", { step = s.name, index = entry.step, status = ok and "rolled_back" or "rollback_failed",
    duration_ms = entry.rollback_ms, detail = entry.rollback_detail })
  progress_line(entry.step, s.name, ok and "rolled_back" or "rollback_failed", entry.rollback_ms,
    entry.rollback_detail)
  return ok
end

-- The main task: top-level code, then the steps, then rollback on failure.
function M.main(book, chunk)
  local t_start = host.now_ms()
  local ctx = {}
  book.ctx = ctx
  book.trace = {}
  book.top = { step = 0, name = "(top level)", action = "load", status = "pending" }
  local ok, r = invoke(function() return chunk() end, ctx, t_start / 1000 + host.limits().step_timeout)
  book.running = true
  local outcome = "resolved"
  if not ok then
    book.top.status, book.top.detail = "failed", errtext(r)
    book.top.duration_ms = math.floor(host.now_ms() - t_start + 0.5)
    book.trace[1] = book.top
    host.progress("top-level code failed: " .. errtext(r))
    outcome = "failed"
  elseif book.top.drift_detected or book.top_logs then
    book.top.status = "success"
    book.top.duration_ms = math.floor(host.now_ms() - t_start + 0.5)
    book.top.logs = book.top_logs
    book.trace[1] = book.top
  end
  local failed_at
  if outcome == "resolved" then
    for i, s in ipairs(book.steps) do
      local entry = entry_for(book, i, s)
      book.trace[#book.trace + 1] = entry
      s.entry = entry
      if host.interrupted() then
        entry.status, entry.detail = "failed", "not run: interrupted (Ctrl-C)"
        failed_at = i
        break
      end
      if not run_step(book, ctx, i, s, entry) then failed_at = i; break end
    end
  end
  if failed_at then
    outcome = "failed"
    book.rollback_failed = false
    for i = failed_at, 1, -1 do
      local s = book.steps[i]
      local e = s.entry
      if e and e.started then
        local rok = rollback_step(book, ctx, s, e)
        if not rok then book.rollback_failed = true end
        if i ~= failed_at and e.rollback == "done" then e.status = "rolled_back"
        elseif i ~= failed_at and e.rollback == "failed" then e.status = "rollback_failed" end
      end
    end
    for i = failed_at + 1, #book.steps do
      local s = book.steps[i]
      book.trace[#book.trace + 1] = { step = i, name = s.name, action = s.name, status = "skipped",
        duration_ms = 0, detail = "not run: an earlier step failed" }
    end
  end
  if host.interrupted() then book.interrupted = true end
  book.outcome = outcome
  -- config notify.on_end: the run's summary; its failure never changes the outcome.
  if book.on_end then pcall(book.on_end, book, outcome) end
  return outcome
end

-- The report, in the shape of an incident execution log. Also used after a kill.
function M.report(book, info, killed_msg)
  local trace = {}
  for _, e in ipairs(book.trace or {}) do
    local t = { step = e.step, name = e.name, action = e.action, status = e.status,
      duration_ms = e.duration_ms or 0, detail = e.detail, drift_detected = e.drift_detected,
      logs = e.logs, error_code = e.error_code, isolation = e.isolation, rollback = e.rollback, rollback_detail = e.rollback_detail,
      rollback_ms = e.rollback_ms, notifications = e.notifications, slack_notification_sent = e.slack_notification_sent }
    if killed_msg and e.status == "pending" then t.status, t.detail = "failed", killed_msg end
    t.baseline_metric, t.current_metric = e.baseline_metric, e.current_metric
    trace[#trace + 1] = t
  end
  local outcome = book.outcome or "failed"
  local human = outcome ~= "resolved" and (book.rollback_failed or killed_msg ~= nil or book.interrupted or false)
  if outcome ~= "resolved" then
    for _, e in ipairs(book.trace or {}) do
      if e.started and e.rollback ~= "done" then human = true end
    end
  end
  local rep = {
    incident_id = info.incident, run_id = info.run, runbook_id = book.meta.id or info.default_id,
    tenant = info.tenant_label, tenants = info.tenants, timestamp = info.started_at,
    execution_trace = trace, outcome = killed_msg and "refused" or outcome,
    stopped_reason = killed_msg, interrupted = book.interrupted or nil,
    total_execution_time_ms = math.floor(host.now_ms() - info.t0_ms + 0.5),
    human_intervention_required = human and true or false, dry_run = info.dry_run,
    notifications = book.notifications, slack_notification_sent = book.slack_sent,
  }
  return report.shape(rep, book, info, killed_msg)
end

return M
