-- The runbook DSL: runbook{}, step "name" {...}, the step state machine, rollback and the report.
local host = require "rbl.host"
local prim = require "rbl.prim"
local report = require "rbl.report"
local params = require "rbl.params"
local partial = require "rbl.partial"
local json = require "rbl.json"

local M = {}
local APPROVAL_TIMEOUT = 300 -- seconds, when approve{} names none
local describe_target -- a plan item's target in words (with the plans, below)
local type, pairs, ipairs, tostring, error, pcall = type, pairs, ipairs, tostring, error, pcall

local STEP_FIELDS = { when = "function", pre = "function", run = "function", verify = "function",
  rollback = "function|auto", timeout = "number", description = "string", retry = "table",
  verify_in_dry_run = "boolean", approve = "string|table" }
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
  if type(e) == "string" then return report.clean_traceback(e) end
  if type(e) == "number" or type(e) == "boolean" or e == nil then return tostring(e) end
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

  -- prom.watch: the metric's first and latest value, for the step's trace entry. Several watches
  -- in one step (one per tenant under each_tenant): `metrics` holds each tenant's, and
  -- baseline_metric/current_metric are the worst of them (higher_worse: which way is worse).
  function book.note_metric(baseline, current, tenant, higher_worse)
    local cur = book.current or book.top
    if tenant == nil then
      cur.baseline_metric, cur.current_metric = baseline, current
      return
    end
    cur.metrics = cur.metrics or {}
    cur.metrics[tenant] = { baseline = baseline, current = current }
    local function worse(a, b)
      if type(a) ~= "number" then return b end
      if type(b) ~= "number" then return a end
      if higher_worse == false then return math.min(a, b) end
      return math.max(a, b)
    end
    local wb, wc
    for _, m in pairs(cur.metrics) do wb, wc = worse(wb, m.baseline), worse(wc, m.current) end
    cur.baseline_metric, cur.current_metric = wb, wc
  end

  -- prom.tenants: the tenants a metric names (the seed's "found 3 tenants in alert state").
  function book.note_tenants(list)
    local cur = book.current or book.top
    cur.tenants = list
  end

  function book.note_isolation(res, tenant)
    local cur = book.current or book.top
    cur.isolation = { score = res.score, findings = res.findings, skipped = res.skipped }
    if tenant ~= nil then
      cur.isolation_by_tenant = cur.isolation_by_tenant or {}
      cur.isolation_by_tenant[tenant] = res.score
      local low
      for _, sc in pairs(cur.isolation_by_tenant) do if type(sc) == "number" and (low == nil or sc < low) then low = sc end end
      cur.isolation_score = low -- several tenants in one step: the lowest score
    else
      cur.isolation_score = res.score
    end
  end

  -- Which steps called a primitive that writes (nothing_to_do; a resumed run's plan).
  prim.on_intent = function(name, args)
    if not prim.is_write(name, args) then return end
    book.wrote = true
    local cur = book.current or book.top
    if cur then cur.wrote = true end
  end

  -- Every call, for the report's per-step calls and action (lua/rbl/report.lua).
  local function note_call(cur, id, name, tenant, target, args, ok, res, ms, canceled)
    if not cur then return end
    cur.calls = cur.calls or {}
    if #cur.calls < report.MAX_CALLS then
      local c = report.call_entry(id, name, tenant, target, args, ok, res, ms)
      if canceled then
        c.status = "canceled"
        if canceled.write then c.may_have_applied = canceled.may_have_applied == true end
      end
      cur.calls[#cur.calls + 1] = c
      host.progress_event({ event = "call", step = cur.name, call = id, prim = name, tenant = tenant,
        target = c.target, status = c.status, duration_ms = ms, error = c.error, may_have_applied = c.may_have_applied })
    else
      cur.calls_more = (cur.calls_more or 0) + 1
    end
  end
  book.inflight = {} -- call id -> the call whose effect started and has no result yet
  prim.on_start = function(call, name, tenant, target, args)
    book.inflight[call:id()] = { call = call, cur = book.current or book.top, name = name, tenant = tenant,
      target = target, args = args }
  end
  prim.on_call = function(id, name, tenant, target, args, ok, res, ms)
    local f = book.inflight[id]
    book.inflight[id] = nil
    note_call(f and f.cur or book.current or book.top, id, name, tenant, target, args, ok, res, ms)
  end
  -- The calls canceled in flight (a step timeout, Ctrl-C, the run deadline, a kill) get no
  -- result in Lua: each is listed with its step's calls as "canceled", with may_have_applied.
  -- all: also a call still without a result (the run was stopped): listed as canceled by the stop.
  function book.flush_canceled(all)
    local ids = {}
    for id in pairs(book.inflight) do ids[#ids + 1] = id end
    table.sort(ids)
    for _, id in ipairs(ids) do
      local f = book.inflight[id]
      local c = host.canceled(f.call)
      if not c and all then
        c = { code = "killed", message = host.killed() or "the run was stopped", duration_ms = nil }
      end
      if c then
        book.inflight[id] = nil
        note_call(f.cur, id, f.name, f.tenant, f.target, f.args, false, { code = c.code, message = c.message },
          c.duration_ms, c)
      end
    end
  end

  -- A write's undo, registered before its request leaves (uncertain: it may or may not be
  -- applied; the undo reads back) and confirmed or dropped when its result comes (prim.lua).
  -- Approvals: approve() and a step's approve field. The C side (src/core/approval.c) waits
  -- for the terminal, the socket beside the chain, or --yes; every step is audited there.
  book.approvals = {}
  function book.ask_approval(message, opts, stepname)
    local info = host.info() or {}
    local tenant = host.tenant() or info.tenant_label
    local entry = { step = stepname, message = message, tenant = tenant, approvers = opts.approvers or 1 }
    book.approvals[#book.approvals + 1] = entry
    if host.dry_run() then -- nothing will change: say who would be asked, ask nobody
      entry.outcome = "would_ask"
      host.record("approval_request", { message = message, tenant = tenant, step = stepname,
        approvers = entry.approvers, dry_run = true })
      host.progress("rbl: [dry run] would ask for approval: " .. message)
      return true
    end
    -- what the approver is shown: the planned writes of this step when the run follows a plan
    local change, plan_hash
    if book.plan_doc then
      plan_hash = book.plan_doc.plan_hash
      local parts = {}
      for _, it in ipairs(book.plan_doc.plan or {}) do
        if it.step == stepname or stepname == nil then
          local fields = {}
          for _, c in ipairs(it.changes or {}) do
            local okb, b = pcall(json.encode, c.before); local oka, a = pcall(json.encode, c.after)
            fields[#fields + 1] = string.format("%s: %s -> %s", tostring(c.path),
              c.before_exists and (okb and b or "?") or "(absent)", c.after_exists and (oka and a or "?") or "(absent)")
          end
          parts[#parts + 1] = string.format("%s %s%s", tostring(it.prim), describe_target(it),
            #fields > 0 and (" (" .. table.concat(fields, "; ") .. ")") or "")
        end
      end
      change = #parts > 0 and table.concat(parts, "; ") or "no write planned for this step"
    else
      change = "not planned: the run was started without --plan, so what the step writes is decided as it runs"
    end
    entry.plan_hash, entry.change = plan_hash, change
    local res = host.approval_wait({ message = message, tenant = tenant, step = stepname,
      plan_hash = plan_hash, change = change, approvers = opts.approvers, timeout = opts.timeout,
      yes_as = info.yes and info.user or nil })
    entry.request, entry.outcome = res.id, res.outcome
    entry.approved_by = json.array(res.approved_by or {})
    entry.denied_by, entry.reason = res.denied_by, res.reason
    book.human_asked = true
    if res.outcome == "granted" then return true end
    if res.outcome == "denied" then
      host.raise("approval_denied", string.format("approve: denied by %s%s", tostring(res.denied_by),
        res.reason and (": " .. res.reason) or ""))
    end
    host.raise("approval_timeout", string.format("approve: %d of %d approvals within %gs; the step fails closed",
      #(res.approved_by or {}), opts.approvers or 1, opts.timeout or APPROVAL_TIMEOUT))
  end

  -- Dry run: each write that returned is a plan item, in the order the writes happened.
  book.plan = {}
  prim.on_plan = function(item)
    local cur = book.current
    item.step = cur and cur.name or nil
    item.index = #book.plan + 1
    book.plan[#book.plan + 1] = item
  end

  prim.on_undo = function(name, call_id, undo, uncertain)
    local cur = book.current
    if not cur then return nil end
    local h = { prim = name, call = call_id, fn = undo, uncertain = uncertain or false }
    cur.undo = cur.undo or {}
    cur.undo[#cur.undo + 1] = h
    return h
  end

  local function check_fields(where, t, spec)
    for k, v in pairs(t) do
      local want = spec[k]
      if not want then error(string.format("%s: unknown field '%s'", where, tostring(k)), 3) end
      local tv = type(v)
      if not (want == tv or (want == "function|auto" and (tv == "function" or v == "auto"))
          or (want == "string|table" and (tv == "string" or tv == "table"))) then
        error(string.format("%s: field '%s' must be %s, got %s", where, k,
          want == "function|auto" and "a function or \"auto\"" or want == "string|table" and "a string or a table"
          or "a " .. want, tv), 3)
      end
    end
  end

  book.runbook = function(t)
    if type(t) ~= "table" then error("runbook{}: expects a table", 2) end
    if book.declared then error("runbook{}: declared twice", 2) end
    check_fields("runbook{}", t, RUNBOOK_FIELDS)
    if t.id and not t.id:match("^[%w][%w%._%-]*$") then error("runbook{}: id must be letters, digits, . _ -", 2) end
    if t.params ~= nil then
      local spec, err = params.declare(t.params)
      if not spec then error("runbook{}: " .. err, 2) end
      book.params_spec = spec
      -- rbl check evaluates without --param; a run checks them here (and before it starts)
      local vals, perr = params.resolve(spec, host.info().cli_params or {}, { partial = host.check_mode() })
      if not vals then book.usage_error = perr; error(perr, 2) end
      book.param_values = vals
    end
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
      if def.retry then
        local err = M.check_retry(def.retry)
        if err then error(string.format("step '%s': %s", name, err), 2) end
      end
      book.names[name] = true
      book.steps[#book.steps + 1] = { name = name, def = def }
    end
  end
  return book
end

-- retry = { attempts = n, backoff = seconds, on = { codes... } }: the step's run is tried again
-- when it fails with one of the codes (default RETRY_ON); never after a refusal or a kill.
local RETRY_FIELDS = { attempts = true, backoff = true, on = true }
local RETRY_ON = { "timeout", "unavailable" }
local NEVER_RETRY = { refused = true, killed = true, check = true }

function M.check_retry(r)
  for k in pairs(r) do
    if not RETRY_FIELDS[k] then
      return string.format("retry: unknown field '%s'%s (fields: attempts, backoff, on)", tostring(k),
        params.suggest(k, { "attempts", "backoff", "on" }))
    end
  end
  if math.type(r.attempts) ~= "integer" or r.attempts < 1 or r.attempts > 100 then
    return "retry: attempts must be an integer from 1 to 100 (the first try included)"
  end
  if r.backoff ~= nil and (type(r.backoff) ~= "number" or r.backoff < 0 or r.backoff > 3600) then
    return "retry: backoff must be a number of seconds from 0 to 3600"
  end
  if r.on ~= nil then
    if type(r.on) ~= "table" or r.on[1] == nil then return "retry: on must be a non-empty list of error codes" end
    for _, c in ipairs(r.on) do
      if type(c) ~= "string" or host.error(c, "").code ~= c then
        return string.format("retry: on: %s is not an error code (rbl help errors)", tostring(c))
      end
      if NEVER_RETRY[c] then return string.format("retry: on: %s is never retried", c) end
    end
  end
end

local function retry_codes(r)
  local set = {}
  for _, c in ipairs(r.on or RETRY_ON) do set[c] = true end
  return set
end

-- The wait between attempts: audited like sleep, and bound by the step's deadline.
local backoff_wait = prim.define("retry.backoff", { effect = function(call, s) host.sleep(call, s) end })

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
    duration_ms = entry.duration_ms, detail = entry.detail, requested = entry.requested,
    attempts = entry.attempts and #entry.attempts or nil })
end

-- Status words in colour on a terminal (never with NO_COLOR or when stderr is not a TTY).
local COLORS = { success = "32", skipped = "33", rolled_back = "33", failed = "31", precondition_failed = "31",
  verification_failed = "31", rollback_failed = "1;31" }
-- The status padded, and its colour code (host.progress sends it only to a colour terminal).
local function paint(status)
  return string.format("%-20s", status), COLORS[status] or "0"
end

local function progress_line(index, name, status, ms, detail)
  if host.progress_event({ event = "step", index = index, step = name, status = status, duration_ms = ms,
      detail = detail }) then return end
  -- a multi-line detail (a traceback) prints as lines, indented under the step
  local first, rest = tostring(detail or ""):match("^([^\n]*)\n?(.*)$")
  local padded, sgr = paint(status)
  host.progress(string.format("[%d] %-28s ", index, name), sgr, padded, "0",
    string.format(" %6d ms%s", ms, detail and ("  " .. first) or ""))
  for line in rest:gmatch("[^\n]+") do host.progress("      " .. line) end
end

local function progress(entry)
  local detail = entry.detail
  if detail and entry.error_at then detail = detail .. "\n  at " .. entry.error_at end
  progress_line(entry.step, entry.name, entry.status, entry.duration_ms, detail)
end

-- Tries the step's run again while it fails with a code its retry lists, time is left and
-- attempts remain; every attempt is a step record ("retrying") and an entry in the report.
local function retry_run(s, ctx, entry, deadline, ok, r)
  local spec, codes = s.def.retry, retry_codes(s.def.retry)
  local attempt, t_attempt = 1, host.now_ms()
  entry.attempts = {}
  while true do
    local a = { attempt = attempt, status = ok and "success" or "failed",
      duration_ms = math.floor(host.now_ms() - t_attempt + 0.5) }
    if not ok then a.error_code, a.detail = errcode(r) or "failed", errtext(r) end
    entry.attempts[#entry.attempts + 1] = a
    if ok then return ok, r end
    local why
    if attempt >= spec.attempts then why = "no attempts left"
    elseif not codes[a.error_code] then why = "code " .. a.error_code .. " is not retried"
    elseif host.killed() or host.interrupted() or host.deadline() then why = "the run was stopped"
    end
    local wait = (spec.backoff or 1) * 2 ^ (attempt - 1)
    if not why and host.now_ms() / 1000 + wait >= deadline then why = "the step's timeout leaves no time for another attempt" end
    if why then
      if attempt > 1 or spec.attempts > 1 then a.note = why end
      return ok, r
    end
    host.record("step", { step = s.name, index = entry.step, status = "retrying", attempt = attempt,
      attempts = spec.attempts, error = { code = a.error_code, message = a.detail }, backoff = wait })
    progress_line(entry.step, s.name, "retrying", a.duration_ms,
      string.format("attempt %d/%d: %s; next in %gs", attempt, spec.attempts, a.detail, wait))
    local wok, werr = invoke(function() backoff_wait(wait) end, ctx, deadline)
    if not wok then return false, werr end
    attempt, t_attempt = attempt + 1, host.now_ms()
    ok, r = invoke(s.def.run, ctx, deadline)
  end
end

-- Runs one step; returns true when it succeeded or was skipped.
local function run_step(book, ctx, i, s, entry)
  local def = s.def
  local t0 = host.now_ms()
  local deadline = t0 / 1000 + step_timeout(def)
  book.current = entry
  local function finish(status, detail)
    book.flush_canceled()
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
    if not r[1] then
      entry.skipped_by_when = true
      return finish("skipped", r[2] and tostring(r[2]) or "when() returned false")
    end
  end
  if def.pre then
    local ok, r = invoke(def.pre, ctx, deadline)
    if not ok then return finish("failed", "pre: " .. errtext(r)) end
    if not r[1] then return finish("precondition_failed", r[2] and tostring(r[2]) or "precondition not met") end
  end
  if def.approve ~= nil and not host.dry_run() then
    local a = def.approve
    local msg = type(a) == "string" and a or (type(a) == "table" and rawget(a, "message")) or nil
    local o = { approvers = type(a) == "table" and rawget(a, "approvers") or nil,
      timeout = type(a) == "table" and rawget(a, "timeout") or nil }
    if type(msg) ~= "string" or msg == "" then msg = "approve step " .. s.name end
    -- people's time is not the step's: the wait has its own timeout
    local ok, r = invoke(function() return book.ask_approval(msg, o, s.name) end, ctx,
      host.now_ms() / 1000 + (tonumber(o.timeout) or APPROVAL_TIMEOUT) + 5)
    if not ok then
      entry.error_code = errcode(r)
      return finish("failed", "approval: " .. errtext(r))
    end
    deadline = host.now_ms() / 1000 + step_timeout(def) -- the step's time starts after the approval
  elseif def.approve ~= nil then
    book.ask_approval(type(def.approve) == "string" and def.approve or tostring(rawget(def.approve, "message")), {}, s.name)
  end
  entry.started = true
  local ok, r = invoke(def.run, ctx, deadline)
  if def.retry then ok, r = retry_run(s, ctx, entry, deadline, ok, r) end
  if not ok then
    entry.error_code = errcode(r)
    local where = type(r) == "table" and rawget(r, "where")
    entry.error_at = type(where) == "string" and where or nil
    return finish("failed", errtext(r))
  end
  if r[1] ~= nil then entry.result = r[1] end
  if def.verify and host.dry_run() and not def.verify_in_dry_run then
    -- nothing was changed: verifying unchanged state would say nothing (or fail for nothing)
    entry.verify = "would_verify"
  elseif def.verify then
    local vok, v = invoke(def.verify, ctx, deadline)
    if not vok then return finish("verification_failed", "verify: " .. errtext(v)) end
    if not v[1] then return finish("verification_failed", v[2] and tostring(v[2]) or "verify() returned false") end
  end
  return finish("success", entry.detail)
end

-- Undoes one step. entry.rollback says truthfully what became of its changes: "done" (undone),
-- "not_needed" (nothing it changed needed undoing: no write took effect, or a write read back
-- as not applied), "failed" (an undo failed, or writes stay applied with no rollback declared),
-- "unknown" (a write may have been applied and could not be read back).
local function rollback_step(book, ctx, s, entry)
  local rb = s.def.rollback
  local t0 = host.now_ms()
  local deadline = t0 / 1000 + step_timeout(s.def)
  -- past the run's deadline, rollback has the grace (limits.rollback_grace) and no more; a
  -- quarter second of it is left for the report
  local _, grace_end = host.deadline()
  if grace_end then deadline = math.min(deadline, grace_end / 1000 - 0.25) end
  local ok, err, status = true, nil, nil
  entry.rollback_running = true -- a kill from here on leaves its outcome unknown (report)
  local undo = {}
  for _, u in ipairs(entry.undo or {}) do if not u.dropped and u.fn then undo[#undo + 1] = u end end
  if rb == "auto" then
    local done, unknown = 0, 0
    for k = #undo, 1, -1 do
      local u = undo[k]
      local uok, r = invoke(function() return u.fn() end, ctx, deadline)
      if not uok then
        if u.uncertain and errcode(r) ~= "conflict" then
          unknown = unknown + 1
          err = err or r
        else
          ok, err = false, r
          break
        end
      elseif r[1] ~= "not_needed" then
        done = done + 1
      end
    end
    if not ok then status = "failed"
    elseif unknown > 0 then status = "unknown"
    elseif done > 0 then status = "done"
    else
      status = "not_needed"
      entry.rollback_detail = #undo == 0 and "nothing recorded to undo"
        or "read back: no recorded change had taken effect"
    end
  elseif type(rb) == "function" then
    local rok, e = invoke(rb, ctx, deadline)
    if not rok then ok, err = false, e end
    status = ok and "done" or "failed"
  else
    if #undo == 0 then
      entry.rollback = "not_needed"
      entry.rollback_detail = "no rollback declared; no reversible change recorded"
      return true
    end
    entry.rollback = "failed"
    entry.rollback_detail = string.format("no rollback declared; %d change(s) may stay applied", #undo)
    return false
  end
  book.flush_canceled()
  entry.rollback = status
  if err then entry.rollback_detail = errtext(err) end
  entry.rollback_ms = math.floor(host.now_ms() - t0 + 0.5)
  local rstatus = (status == "done" or status == "not_needed") and "rolled_back" or "rollback_failed"
  host.record("step", { step = s.name, index = entry.step, status = rstatus, rollback = status,
    duration_ms = entry.rollback_ms, detail = entry.rollback_detail })
  progress_line(entry.step, s.name, rstatus, entry.rollback_ms,
    status .. (entry.rollback_detail and (": " .. entry.rollback_detail) or ""))
  return status == "done" or status == "not_needed"
end

-- ---- plans (--dry-run, --plan-out FILE, --plan FILE) ----

local function sorted_tenants(list)
  local t = {}
  for i, v in ipairs(list or {}) do t[i] = tostring(v) end
  table.sort(t)
  return t
end

-- What the plan hash covers: the runbook's SHA-256, the params and tenants given, every item.
local function plan_hash(sha, params, tenants, items)
  return host.canonical_sha256({ runbook_sha256 = sha, params = params or {},
    tenants = json.array(sorted_tenants(tenants)), plan = json.array(items or {}) })
end
M.plan_hash = plan_hash

function M.plan_document(book, info)
  local items = json.array(book.plan or {})
  return { kind = "rbl.plan", version = 1,
    runbook = { id = book.meta.id or info.default_id, sha256 = info.runbook_sha256 },
    incident = info.incident, run = info.run, created_at = info.started_at,
    tenants = json.array(sorted_tenants(info.tenants)), params = info.cli_params or {},
    plan = items, plan_hash = plan_hash(info.runbook_sha256, info.cli_params, info.tenants, items) }
end

function describe_target(it)
  local t = type(it.target) == "table" and it.target or {}
  if t.container then return string.format("container %s", tostring(t.name or t.container)) end
  if t.name then
    return string.format("%s %s%s", tostring(t.kind or t.resource), tostring(t.name),
      t.namespace and (" in " .. tostring(t.namespace)) or "")
  end
  if t.program then return "program " .. tostring(t.program) end
  return tostring(it.prim)
end

local function kind_of(t)
  return tostring(t.resource) .. ((t.group and t.group ~= "") and ("." .. t.group) or "")
end

-- Reads one planned target back (an audited read, bound to the item's tenant). -> nil or why it moved
local function target_moved(it)
  local t = it.target
  if type(t) ~= "table" then return nil end
  local tenant = it.tenant
  local res, errs, n = host.run_all({ function()
    if t.resource and t.name then
      local kube = require "rbl.kube"
      local obj = kube.get(kind_of(t), t.name, { namespace = t.namespace })
      return { rv = type(obj.metadata) == "table" and obj.metadata.resourceVersion or nil }
    elseif t.container then
      local docker = require "rbl.docker"
      local c = docker.inspect(t.container)
      local st = type(c.State) == "table" and c.State or {}
      return { running = st.Running == true, started_at = st.StartedAt }
    end
    return {}
  end }, { tenants = tenant and { tenant } or nil })
  if n > 0 then return "cannot be read back: " .. errtext(errs[1]) end
  local now = res[1] or {}
  if it.resourceVersion and now.rv ~= it.resourceVersion then
    return string.format("resourceVersion %s in the plan, %s now", tostring(it.resourceVersion), tostring(now.rv))
  end
  local cs = it.container_state
  if type(cs) == "table" and (cs.running ~= now.running or cs.started_at ~= now.started_at) then
    return string.format("container state changed (running %s, started %s in the plan; running %s, started %s now)",
      tostring(cs.running), tostring(cs.started_at), tostring(now.running), tostring(now.started_at))
  end
  return nil
end

-- --plan FILE: the plan must still hold, before anything runs. -> true, or false, reasons
local function check_plan(book, info)
  local ok, doc = pcall(json.decode, info.plan_text)
  local where = tostring(info.plan_path)
  if not ok or type(doc) ~= "table" or doc.kind ~= "rbl.plan" or type(doc.plan) ~= "table" then
    return false, { where .. " is not an rbl plan (write one with --dry-run --plan-out FILE)" }
  end
  local moved = {}
  local rb = type(doc.runbook) == "table" and doc.runbook or {}
  if rb.sha256 ~= info.runbook_sha256 then
    moved[#moved + 1] = string.format("the runbook changed since the plan (%s in the plan, %s now)",
      tostring(rb.sha256), tostring(info.runbook_sha256))
  end
  local pp, cp = type(doc.params) == "table" and doc.params or {}, info.cli_params or {}
  local names = {}
  for k in pairs(pp) do names[k] = true end
  for k in pairs(cp) do names[k] = true end
  local sorted = {}
  for k in pairs(names) do sorted[#sorted + 1] = tostring(k) end
  table.sort(sorted)
  for _, k in ipairs(sorted) do
    if pp[k] ~= cp[k] then
      moved[#moved + 1] = string.format("param %s is %s in the plan, %s now", k,
        pp[k] == nil and "not given" or string.format("%q", tostring(pp[k])),
        cp[k] == nil and "not given" or string.format("%q", tostring(cp[k])))
    end
  end
  local pt, ct = sorted_tenants(doc.tenants), sorted_tenants(info.tenants)
  if table.concat(pt, ",") ~= table.concat(ct, ",") then
    moved[#moved + 1] = string.format("tenants are %s in the plan, %s now", table.concat(pt, ", "), table.concat(ct, ", "))
  end
  if #moved == 0 and plan_hash(rb.sha256, doc.params, doc.tenants, doc.plan) ~= doc.plan_hash then
    moved[#moved + 1] = "the plan file was changed after it was written (its plan_hash does not match)"
  end
  if #moved == 0 then
    for _, it in ipairs(doc.plan) do
      local why = target_moved(it)
      if why then moved[#moved + 1] = string.format("%s: %s", describe_target(it), why) end
    end
  end
  if #moved > 0 then return false, moved end
  -- during the run, each write must be one of the plan's, once
  local unused = {}
  for _, it in ipairs(doc.plan) do unused[#unused + 1] = it end
  prim.plan_guard = function(name, tenant, args_sha)
    for i, it in ipairs(unused) do
      if it.prim == name and it.args_sha256 == args_sha and it.tenant == tenant then
        table.remove(unused, i)
        return true
      end
    end
    return false, string.format("%s: this write is not in the plan %s (the run took another path than " ..
      "the dry run; nothing was sent)", name, where)
  end
  book.plan_used = { path = where, plan_hash = doc.plan_hash }
  book.plan_doc = doc
  return true
end

-- The steps skipped on request (--only/--from/--skip, or a resumed run's plan): index ->
-- reason; nil when the request is wrong (book.usage_error says why: exit 2).
function M.plan_steps(book)
  if book.usage_error then return nil end
  local info = host.info()
  local skip, err = partial.select(book, info.select)
  if skip and info.resume then
    local rskip, from = partial.resume(book, info.resume)
    if not rskip then skip, err = nil, from
    else
      for i, why in pairs(rskip) do skip[i] = skip[i] or why end
      book.resumed = { run = info.resume.run, from = from }
      host.progress(string.format("rbl: resuming run %s from step %s", info.resume.run, from))
    end
  end
  if not skip then book.usage_error = err end
  return skip
end

-- Nothing to do: the run resolved, called no primitive that writes (top level and steps
-- alike), and at least one step was skipped by its `when`: the remediation was considered
-- and found already in place.
function M.nothing_to_do(book, outcome)
  if outcome ~= "resolved" or book.wrote then return false end
  for _, e in ipairs(book.trace or {}) do
    if e.skipped_by_when then return true end
  end
  return false
end

-- The main task: top-level code, then the steps, then rollback on failure.
function M.main(book, chunk)
  local t_start = host.now_ms()
  local ctx = {}
  book.ctx = ctx
  book.trace = {}
  book.top = { step = 0, name = "(top level)", action = "load", status = "pending" }
  local info = host.info() or {}
  local tc = info.tenant_confirm -- the question asked before the run (src/cli/run.c): audited there
  if tc then
    local granted = tc.outcome == "granted"
    table.insert(book.approvals, 1, { request = 0, message = "run for " .. #(tc.tenants or {}) ..
      " tenants (asked once before the run)", tenants = json.array(tc.tenants or {}), approvers = 1,
      outcome = tc.outcome, via = "tty", approved_by = json.array(granted and { tc.by } or {}),
      denied_by = (not granted) and tc.by or nil })
    book.human_asked = true
    if not granted then
      book.top.status, book.top.action = "failed", "confirm_tenants"
      book.top.detail = "not confirmed: the run for several tenants was not confirmed with 'yes'; nothing ran"
      book.trace[1] = book.top
      book.running = true
      book.outcome = "failed"
      return "failed"
    end
  end
  if info.plan_text then
    local pok, moved = check_plan(book, info)
    if not pok then
      local msg = "the plan no longer holds; nothing was written: " .. table.concat(moved, "; ")
      book.top.status, book.top.detail, book.top.action = "failed", msg, "plan_check"
      book.top.duration_ms = math.floor(host.now_ms() - t_start + 0.5)
      book.trace[1] = book.top
      host.record("plan_check", { plan = tostring(info.plan_path), ok = false, moved = moved })
      host.progress("rbl: " .. msg)
      book.running = true
      book.outcome = "failed"
      book.plan_rejected = true
      return "failed"
    end
    host.record("plan_check", { plan = tostring(info.plan_path), ok = true, plan_hash = book.plan_used.plan_hash })
    host.progress("rbl: plan " .. tostring(info.plan_path) .. " still holds (" .. tostring(book.plan_used.plan_hash) .. ")")
  end
  local ok, r = invoke(function() return chunk() end, ctx, t_start / 1000 + host.limits().step_timeout)
  book.flush_canceled()
  book.running = true
  local outcome = "resolved"
  if not ok then
    book.top.status, book.top.detail = "failed", errtext(r)
    if book.top.wrote then -- top-level code has no rollback: what it wrote may stay applied
      book.top.rollback = "failed"
      book.top.rollback_detail = "top-level code is never rolled back: its writes may be applied " ..
        "(rbl rollback AUDIT reads each back and undoes it); put writes in a step to have them rolled back"
    end
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
  local skip = outcome == "resolved" and M.plan_steps(book) or nil
  if not skip then outcome = "failed" end
  if outcome == "resolved" then
    for i, s in ipairs(book.steps) do
      local entry = entry_for(book, i, s)
      book.trace[#book.trace + 1] = entry
      s.entry = entry
      if skip[i] and not host.interrupted() then
        entry.status, entry.detail, entry.requested = "skipped", skip[i], true
        record_step(s, entry)
        progress(entry)
      elseif host.interrupted() or host.deadline() then
        entry.status = "failed"
        entry.detail = "not run: " .. (host.interrupted() and "interrupted (Ctrl-C)" or tostring(host.deadline()))
        failed_at = i
        break
      elseif not run_step(book, ctx, i, s, entry) then failed_at = i; break end
    end
  end
  if failed_at then
    outcome = "failed"
    book.rollback_failed = false
    host.rolling_back(true) -- rollback's tasks run on past the run deadline, within its grace
    for i = failed_at, 1, -1 do
      local s = book.steps[i]
      local e = s.entry
      if e and e.started then
        local rok = rollback_step(book, ctx, s, e)
        if not rok then book.rollback_failed = true end
        local declared = s.def.rollback ~= nil -- without one, the step's status stays as it ran
        if i ~= failed_at and declared and (e.rollback == "done" or e.rollback == "not_needed") then e.status = "rolled_back"
        elseif i ~= failed_at and declared and (e.rollback == "failed" or e.rollback == "unknown") then e.status = "rollback_failed" end
      end
    end
    host.rolling_back(false)
    for i = failed_at + 1, #book.steps do
      local s = book.steps[i]
      book.trace[#book.trace + 1] = { step = i, name = s.name, action = s.name, status = "skipped",
        duration_ms = 0, detail = "not run: an earlier step failed" }
    end
  end
  if host.interrupted() then book.interrupted = true end
  book.outcome = outcome
  book.nothing_to_do = M.nothing_to_do(book, outcome)
  if host.dry_run() then -- the plan, on stderr: what the real run would change
    host.progress(string.format("plan: %d write(s)%s", #book.plan, #book.plan > 0 and ":" or ""))
    for _, it in ipairs(book.plan) do
      host.progress(string.format("  %d. [%s] %s %s", it.index, tostring(it.step or "top level"), it.prim, describe_target(it)))
      for _, c in ipairs(it.changes or {}) do
        local function show(ex, v)
          if not ex then return "(absent)" end
          local okj, txt = pcall(json.encode, v)
          return okj and txt or tostring(v)
        end
        host.progress(string.format("       %s: %s -> %s", tostring(c.path), show(c.before_exists, c.before),
          show(c.after_exists, c.after)))
      end
      if it.argv then host.progress("       would run: " .. table.concat(it.argv, " ")) end
    end
  end
  -- config notify.on_end: the run's summary; its failure never changes the outcome.
  if book.on_end then pcall(book.on_end, book, outcome) end
  return outcome
end

-- The report, in the shape of an incident execution log. Also used after a kill.
function M.report(book, info, killed_msg)
  if book.flush_canceled then book.flush_canceled(true) end
  local trace = {}
  for _, e in ipairs(book.trace or {}) do
    local t = { step = e.step, name = e.name, action = e.action, status = e.status,
      duration_ms = e.duration_ms or 0, detail = e.detail, drift_detected = e.drift_detected,
      logs = e.logs, error_code = e.error_code, isolation = e.isolation, rollback = e.rollback, rollback_detail = e.rollback_detail,
      rollback_ms = e.rollback_ms, notifications = e.notifications, slack_notification_sent = e.slack_notification_sent,
      requested = e.requested, attempts = e.attempts, fanout = e.fanout }
    if killed_msg and e.status == "pending" then t.status, t.detail = "failed", killed_msg end
    if killed_msg and e.started and not e.rollback then
      -- stopped before its rollback could run or finish: say what may be left applied
      local left = 0
      for _, u in ipairs(e.undo or {}) do if not u.dropped and u.fn then left = left + 1 end end
      local s = book.steps and book.steps[e.step]
      local own = s and type(s.def.rollback) == "function" and e.wrote -- its own rollback, not run
      if e.rollback_running then
        t.rollback = "unknown"
        t.rollback_detail = "the run was stopped while this step was being rolled back: its changes may be applied" ..
          (left > 0 and string.format(" (%d recorded; rbl rollback AUDIT reads each back and undoes it)", left) or "")
        if t.status == "success" then t.status = "rollback_failed" end
      elseif left > 0 or own then
        t.rollback = "unknown"
        t.rollback_detail = left > 0 and string.format("the run was stopped before rollback; %d change(s) may be applied " ..
          "(rbl rollback AUDIT reads each back and undoes it)", left)
          or "the run was stopped before the step's rollback function could run; its writes may be applied"
      else
        t.rollback, t.rollback_detail = "not_needed", "no reversible change recorded"
      end
    end
    t.baseline_metric, t.current_metric = e.baseline_metric, e.current_metric
    t.metrics, t.tenants, t.isolation_score = e.metrics, e.tenants, e.isolation_score
    t.isolation_by_tenant = e.isolation_by_tenant
    t.verify = e.verify
    trace[#trace + 1] = t
  end
  local outcome = book.outcome or "failed"
  local human = outcome ~= "resolved" and (book.rollback_failed or killed_msg ~= nil or book.interrupted or false)
  if book.human_asked then human = true end -- a person approved, or was needed and did not
  if outcome ~= "resolved" then
    for _, e in ipairs(book.trace or {}) do
      if e.started and e.rollback ~= "done" and e.rollback ~= "not_needed" then human = true end
      if e == book.top and e.rollback == "failed" then human = true end -- its writes stay applied
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
    nothing_to_do = (not killed_msg and book.nothing_to_do) and true or false,
    resumes = book.resumed, selection = info.select,
    plan = info.dry_run and json.array(book.plan or {}) or nil,
    plan_hash = info.dry_run and plan_hash(info.runbook_sha256, info.cli_params, info.tenants, book.plan) or nil,
    plan_file = book.plan_used,
    approvals = json.array(book.approvals or {}),
  }
  return report.shape(rep, book, info, killed_msg)
end

return M
