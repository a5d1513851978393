-- The report's shape (--report, docs/runbook-language.md "The report"): what each step did (its
-- calls, with targets and summaries, and an action naming its effects), the failure at the top
-- level, one runbook id with the file path beside it, and every list a JSON array.
local json = require "rbl.json"
local prim = require "rbl.prim"

local M = {}
local type, pairs, ipairs, tostring, rawget = type, pairs, ipairs, tostring, rawget

M.MAX_CALLS = 200 -- per step; the audit chain has every call, the report the first ones

-- Whether a call changed anything is prim.is_write's one answer (reads, waits, notify, and an
-- exec marked read_only are not changes), shared with nothing_to_do and resumed runs.
local QUIET = { sleep = true, log = true, ["retry.backoff"] = true } -- neither a read nor a change worth naming

function M.is_read(name, args)
  return not prim.is_write(name, args)
end

local function short(s, n)
  s = tostring(s)
  if #s > n then return s:sub(1, n - 3) .. "..." end
  return s
end

-- The call's target in a few words: Kind/name [ns], a container's name, a program's argv.
function M.target_text(prim, target, args)
  local t = type(target) == "table" and target or nil
  if t then
    local kind, name, ns = rawget(t, "kind"), rawget(t, "name"), rawget(t, "namespace")
    if type(kind) == "string" then
      return kind .. (type(name) == "string" and ("/" .. name) or "") .. (type(ns) == "string" and (" ns=" .. ns) or "")
    end
    local verb, res = rawget(t, "verb"), rawget(t, "resource")
    if type(verb) == "string" and type(res) == "string" then
      return verb .. " " .. res .. (type(ns) == "string" and (" ns=" .. ns) or "")
    end
    local c = rawget(t, "container")
    if type(c) == "string" then
      return (type(name) == "string" and name or c:sub(1, 12)) .. (type(name) == "string" and (" " .. c:sub(1, 12)) or "")
    end
  end
  local argv = (prim == "exec" and args and args[1]) or (prim == "docker_exec" and args and args[2]) or nil
  if type(argv) == "table" then
    local parts = {}
    for i, a in ipairs(argv) do
      if i > 8 then parts[#parts + 1] = "..."; break end
      parts[#parts + 1] = short(type(a) == "string" and a or "[" .. type(a) .. "]", 40)
    end
    local s = table.concat(parts, " ")
    if prim == "docker_exec" and type(t) == "table" and type(rawget(t, "name")) == "string" then
      s = rawget(t, "name") .. ": " .. s
    end
    return s
  end
  if t then
    local ok, s = pcall(json.encode, t)
    if ok and s then return short(s, 80) end
  end
  if args and type(args[1]) == "string" then return short(args[1], 80) end
  return nil
end

-- One call as the report lists it (prim.on_call -> book.note_call).
function M.call_entry(id, prim, tenant, target, args, ok, summary_or_err, duration_ms)
  local e = { call = id, prim = prim, tenant = tenant, target = M.target_text(prim, target, args),
    status = ok and "ok" or "error", duration_ms = duration_ms }
  if ok then
    e.summary = type(summary_or_err) == "table" and summary_or_err or nil
  else
    local err = summary_or_err
    if type(err) == "table" then
      local code, msg = rawget(err, "code"), rawget(err, "message")
      e.error = { code = type(code) == "string" and code or "failed",
        message = (type(msg) == "string" or type(msg) == "number") and tostring(msg) or "error" }
    else
      e.error = { code = "failed", message = tostring(err) }
    end
  end
  if not M.is_read(prim, args) and not QUIET[prim] then e.change = true end
  return e
end

-- What a step did, from its calls: the changes it made ("kube_patch ConfigMap/db-pool-config
-- ns=prod-tenant-7"), else what it read ("read: kube.get ConfigMap/db-pool-config"), else
-- "no primitive calls". Repeats are counted ("docker.restart x3").
function M.action_of(calls)
  if not calls or #calls == 0 then return "no primitive calls" end
  local function summarise(pick)
    local order, count = {}, {}
    for _, c in ipairs(calls) do
      if pick(c) then
        local key = c.prim .. (c.target and (" " .. c.target) or "")
        if #order < 6 or count[key] then
          if not count[key] then order[#order + 1] = key end
          count[key] = (count[key] or 0) + 1
        else
          count["..."] = (count["..."] or 0) + 1
        end
      end
    end
    local out = {}
    for _, k in ipairs(order) do out[#out + 1] = count[k] > 1 and (k .. " x" .. count[k]) or k end
    if count["..."] then out[#out + 1] = string.format("and %d more", count["..."]) end
    return out
  end
  local changes = summarise(function(c) return c.change end)
  if #changes > 0 then return table.concat(changes, "; ") end
  local reads = summarise(function(c) return not QUIET[c.prim] end)
  if #reads > 0 then return "read: " .. table.concat(reads, "; ") end
  return "no primitive calls"
end

-- A traceback as rbl shows it: the runbook's frames only, from the innermost one that is the
-- runbook's (file:line), without rbl's own ([rbl]/...) and C frames.
function M.clean_traceback(s)
  local msg, tb = s:match("^(.-)\nstack traceback:\n(.*)$")
  if not msg then return s end
  local keep = {}
  for line in (tb .. "\n"):gmatch("([^\n]*)\n") do
    local frame = line:match("^%s*(.-)%s*$")
    if frame ~= "" and not frame:match("^%[rbl%]") and not frame:match("^%[C%]") and frame ~= "(...tail calls...)"
      and frame ~= "stack traceback:" then
      keep[#keep + 1] = "  at " .. frame
    end
  end
  if #keep == 0 then return msg end
  return msg .. "\n" .. table.concat(keep, "\n")
end

local FAILED = { failed = true, precondition_failed = true, verification_failed = true,
  rollback_failed = false }

-- The failure at the top level: the step that failed the run, its status and reason.
function M.failure_of(rep, killed_msg)
  if rep.outcome == "resolved" then return nil end
  if killed_msg then -- refused or stopped: the step it happened in, if any
    local at
    for _, e in ipairs(rep.execution_trace) do
      if FAILED[e.status] and not (e.detail or ""):match("^not run: an earlier step failed") then at = e; break end
    end
    return { step = at and at.name, index = at and at.step, status = "refused", reason = killed_msg }
  end
  for _, e in ipairs(rep.execution_trace) do
    if FAILED[e.status] and not (e.detail or ""):match("^not run: an earlier step failed") then
      return { step = e.name, index = e.step, status = e.status, reason = e.detail or e.status,
        error_code = e.error_code }
    end
  end
  for _, e in ipairs(rep.execution_trace) do
    if e.status == "rollback_failed" then
      return { step = e.name, index = e.step, status = e.status, reason = e.rollback_detail or e.detail }
    end
  end
  return { status = rep.outcome, reason = rep.stopped_reason or (rep.interrupted and "interrupted") or rep.outcome }
end

-- Names whose value is a list: encoded as [] when empty, never {}.
local LISTS = { execution_trace = true, tenants = true, notifications = true, drift_detected = true,
  logs = true, calls = true, findings = true, skipped = true, checks = true, plan = true,
  approvals = true, errors = true, undone = true, not_undone = true, paths = true }

local function arrays(t, depth, seen)
  if depth > 6 or seen[t] then return end
  seen[t] = true
  for k, v in pairs(t) do
    if type(v) == "table" and getmetatable(v) == nil then
      if LISTS[k] and next(v) == nil then json.array(v)
      else arrays(v, depth + 1, seen) end
    end
  end
end

-- Completes the report runbook.report built. info: the run's info table (runbook_id and
-- runbook_path set by the host).
function M.shape(rep, book, info, killed_msg)
  rep.runbook_id = info.runbook_id or rep.runbook_id
  rep.runbook_path = info.runbook_path
  local entries = book.trace or {}
  for i, t in ipairs(rep.execution_trace) do
    local src = entries[i]
    local calls = src and src.calls or {}
    -- runbook.lua keeps the first calls and counts the rest (calls_more): the total is both
    local total = #calls + (src and src.calls_more or 0)
    if total > M.MAX_CALLS then
      t.calls_omitted = total - M.MAX_CALLS
      local kept = {}
      for k = 1, M.MAX_CALLS do kept[k] = calls[k] end
      t.calls = kept
    else
      t.calls = calls
    end
    t.description = src and src.description or nil
    if t.status == "skipped" and #calls == 0 then
      t.action = "skipped"
    else
      t.action = M.action_of(calls)
    end
    t.calls_total = total
    t.error_at = src and src.error_at or nil
  end
  rep.failure = M.failure_of(rep, killed_msg)
  if rep.tenants == nil then rep.tenants = {} end
  arrays(rep, 0, {})
  return rep
end

return M
