-- rbl rollback: reads an audit chain, finds the reversible changes it recorded (results with a
-- before-state) that no later undo reverted, and undoes them newest first through kube_undo.
local host = require "rbl.host"
local json = require "rbl.json"
local runbook = require "rbl.runbook"

local M = {}
local fmt = string.format

-- arg (JSON, built by src/cli/rollback.c from the records `rbl audit verify` verified):
-- {force, audit, chain, runs = {run = {tenants...}}, results = {result records...}}
function M.prepare(arg)
  local a = json.decode(arg)
  local book = runbook.new_book("rollback")
  book.meta.id = "rollback"
  book.rb = { force = a.force == true, audit = a.audit, chain = a.chain, runs = a.runs or {},
    results = a.results or {} }
  return book
end

-- The error codes of a write whose answer was lost (its outcome is not known).
local LOST = { timeout = true, unavailable = true, protocol = true }
local function key_of(run, call) return tostring(run) .. "#" .. tostring(call) end

local function has(list, x)
  for _, v in ipairs(type(list) == "table" and list or {}) do if v == x then return true end end
  return false
end

-- Why the verified result r cannot be undone, or nil: its before-state must describe this very
-- call, and its tenant must be one its run was started for (the verified run_start).
local function untrusted(book, r, b)
  if b.run ~= nil and b.run ~= r.run or b.call ~= nil and b.call ~= r.call then
    return fmt("its before-state names another call (%s#%s)", tostring(b.run), tostring(b.call))
  end
  if b.tenant ~= nil and b.tenant ~= r.tenant then
    return fmt("its before-state names tenant %s, the call ran for %s", tostring(b.tenant), tostring(r.tenant))
  end
  local ts = book.rb.runs[r.run]
  if not ts then return fmt("run %s has no run_start on the chain", tostring(r.run)) end
  if not has(ts, r.tenant) then
    return fmt("tenant %s is not one run %s was started for", tostring(r.tenant), tostring(r.run))
  end
  return nil
end

-- The reversible changes of the chain (newest first) and the set already undone.
local function pending(book)
  local recs = book.rb.results
  local done = {}
  for _, r in ipairs(recs) do
    local s = r.summary
    if (r.prim == "kube_undo" or r.prim == "docker_restore") and r.status == "ok" and type(s) == "table"
      and type(s.undoes) == "table" and not s.dry_run then
      done[key_of(s.undoes.run, s.undoes.call)] = true
    end
  end
  local todo, cannot = {}, {}
  for i = #recs, 1, -1 do
    local r = recs[i]
    local b = r.before
    local s = r.summary
    if r.status == "ok" and type(s) == "table" and s.irreversible == true and not s.dry_run then
      cannot[#cannot + 1] = r
    end
    -- a write that completed, or one whose outcome is not known (canceled in flight, or failed
    -- after its request left: may_have_applied), which the undo reads back first
    local settled = r.status == "ok" or r.may_have_applied == true
    local kube_rec = type(b) == "table" and type(b.fields) == "table" and type(b.api) == "table"
      and b.prim ~= "kube.rollout_restart"
    local docker_rec = type(b) == "table" and r.status ~= "ok" and type(b.container) == "string"
      and b.prim == "docker.restart"
    -- canceled in flight, or its answer lost (an error the daemon did not give: a definite refusal
    -- such as a 409 was not applied), and not undoable: said, never skipped in silence
    local ecode = type(r.error) == "table" and r.error.code or nil
    local unknown = r.status == "canceled" or (r.status == "error" and LOST[ecode])
    if unknown and r.may_have_applied == true and not (kube_rec or docker_rec) then
      cannot[#cannot + 1] = r
    end
    if settled and (kube_rec or docker_rec) then
      local k = key_of(r.run, r.call)
      if not done[k] then
        done[k] = true -- the same change named twice is undone once
        todo[#todo + 1] = { rec = r, before = b, key = k, untrusted = untrusted(book, r, b) }
      end
    end
  end
  return todo, cannot
end

-- What rollback cannot undo (a restart, a deleted pod): said, never silently skipped.
local function warn_cannot(cannot)
  if #cannot == 0 then return end
  host.progress(fmt("rbl rollback: WARNING: cannot undo %d action%s on this chain:", #cannot, #cannot == 1 and "" or "s"))
  local list = {}
  for _, r in ipairs(cannot) do
    local s = type(r.summary) == "table" and r.summary or type(r.before) == "table" and r.before or {}
    local why = s.irreversible_why
    if r.status ~= "ok" then
      why = fmt("%s, it may have been applied, and rbl cannot undo %s", r.status == "canceled" and "canceled in flight"
        or "its answer was lost", tostring(r.prim))
    end
    local what = fmt("%s %s%s%s", tostring(r.prim), s.kind and (tostring(s.kind):lower() .. "s ") or "",
      tostring(s.name or s.container or "?"), s.namespace and (" in " .. tostring(s.namespace)) or "")
    host.progress(fmt("  - %s (run %s, call %s): %s", what, tostring(r.run), tostring(r.call),
      tostring(why or "not reversible")))
    list[#list + 1] = { prim = r.prim, run = r.run, call = r.call, target = what, why = why }
  end
  host.record("warning", { what = fmt("rollback: cannot undo %d action(s)", #cannot), actions = list })
end

local function label(b)
  if not b.api then return fmt("restore %s container %s", tostring(b.prim), tostring(b.name or b.container)) end
  return fmt("undo %s %s%s%s", b.prim or "kube_patch", b.api.resource .. (b.api.group ~= "" and ("." .. b.api.group) or ""),
    " " .. tostring(b.name), b.namespace and (" in " .. b.namespace) or "")
end

local function errtext(e)
  if type(e) == "table" then return (e.code and (e.code .. ": ") or "") .. tostring(e.message or "error") end
  return tostring(e)
end

function M.main(book, arg)
  local kube = require "rbl.kube"
  local docker = require "rbl.docker"
  local t0 = host.now_ms()
  book.trace = {}
  local authorised = {}
  for _, t in ipairs(host.tenants()) do authorised[t] = true end
  local ok, todo, cannot = pcall(pending, book)
  if not ok then
    book.trace[1] = { step = 1, name = "read chain", action = "read", status = "failed", detail = errtext(todo), duration_ms = 0 }
    book.outcome = "failed"
    return "failed"
  end
  warn_cannot(cannot)
  if #todo == 0 then
    host.progress("rbl rollback: nothing to undo (no reversible change on the chain that is not already undone)")
    host.record("log", { message = "rollback: nothing to undo" })
  end
  local failed = false
  for i, item in ipairs(todo) do
    local b = item.before
    local tenant = item.rec.tenant
    local entry = { step = i, name = label(b), action = b.api and "kube_undo" or "docker_restore",
      status = "pending", duration_ms = 0 }
    book.trace[#book.trace + 1] = entry
    local s0 = host.now_ms()
    if item.untrusted then
      entry.status, entry.detail = "failed", "not undone: " .. item.untrusted
      failed = true
    elseif not tenant or not authorised[tenant] then
      entry.status, entry.detail = "skipped", fmt("tenant %s is not authorised for this rollback (--tenant)", tostring(tenant))
    else
      local _, errs, n = host.run_all({ function()
        if b.api then return kube.undo(b, { force = book.rb.force }) end
        return docker.restore(b, { force = book.rb.force })
      end }, { tenants = { tenant } })
      local uncertain = item.rec.status ~= "ok"
      if n > 0 then
        failed = true
        entry.status, entry.detail, entry.error_code = "failed", errtext(errs[1]), type(errs[1]) == "table" and errs[1].code or nil
        entry.rollback = uncertain and errtext(errs[1]):find("^conflict") == nil and "unknown" or "failed"
      else
        entry.status = "success"
        local st = (b.api and kube.undo_status or docker.restore_status)(b)
        entry.rollback = st or "done"
        if st == "not_needed" then
          entry.detail = uncertain and "read back: the write had not taken effect; nothing to undo"
            or "already as before; nothing to undo"
        else
          entry.detail = host.dry_run() and "dry run: the inverse patch was sent with dryRun=All" or "restored"
        end
      end
    end
    entry.duration_ms = math.floor(host.now_ms() - s0 + 0.5)
    host.record("step", { step = entry.name, index = i, status = entry.status, detail = entry.detail })
    host.progress(fmt("[%d] %-50s %-10s %s", i, entry.name, entry.status, entry.detail or ""))
    if host.killed() then failed = true; break end
  end
  book.outcome = failed and "failed" or "resolved"
  book.total_ms = host.now_ms() - t0
  return book.outcome
end

return M
