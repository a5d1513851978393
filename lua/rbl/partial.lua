-- Partial and resumed runs: which steps --only / --from / --skip select, and where a resumed
-- run (rbl run --resume AUDIT) continues, from the records of the run it resumes.
local params = require "rbl.params"
local prim = require "rbl.prim"

local M = {}
local fmt = string.format

local function names_of(book)
  local ns = {}
  for i, s in ipairs(book.steps) do ns[i] = s.name end
  return ns
end

local function check_name(book, flag, name)
  if book.names[name] then return true end
  local ns = names_of(book)
  return nil, fmt("%s %s: no such step%s; steps: %s", flag, name, params.suggest(name, ns),
    #ns > 0 and table.concat(ns, ", ") or "none (a plain script has no steps)")
end

-- sel: {only = {names}, from = name, skip = {names}} from the command line.
-- -> skip (index -> reason the step is skipped on request), or nil, message.
function M.select(book, sel)
  local skip = {}
  if not sel then return skip end
  local only, skips, from = sel.only or {}, sel.skip or {}, sel.from
  if #only > 0 and (from or #skips > 0) then
    return nil, "--only names exactly the steps to run: it excludes --from and --skip"
  end
  for _, n in ipairs(only) do local ok, e = check_name(book, "--only", n); if not ok then return nil, e end end
  for _, n in ipairs(skips) do local ok, e = check_name(book, "--skip", n); if not ok then return nil, e end end
  if from then local ok, e = check_name(book, "--from", from); if not ok then return nil, e end end
  local set = {}
  for _, n in ipairs(only) do set[n] = true end
  local skipset = {}
  for _, n in ipairs(skips) do skipset[n] = true end
  local before = from ~= nil
  for i, s in ipairs(book.steps) do
    if from and s.name == from then before = false end
    if #only > 0 and not set[s.name] then skip[i] = "not selected (--only)"
    elseif before then skip[i] = "before --from " .. from
    elseif skipset[s.name] then skip[i] = "skipped on request (--skip)" end
  end
  if from and skipset[from] then return nil, fmt("--from %s and --skip %s: the first step to run is skipped", from, from) end
  return skip
end

-- The resumed run's steps, from its step and intent records (in chain order):
-- -> {status = {name -> last status}, wrote = {name -> true}, failed = name, order = {names}}.
local function steps_of(records)
  local st = { status = {}, wrote = {}, order = {}, started = {} }
  local current
  for _, r in ipairs(records) do
    if r.kind == "step" and type(r.step) == "string" then
      if r.status == "started" then
        current = r.step
        st.started[r.step] = true
        st.order[#st.order + 1] = r.step
      else
        st.status[r.step] = r.status
        if r.status ~= "retrying" then current = nil end
        if (r.status == "failed" or r.status == "precondition_failed" or r.status == "verification_failed")
          and not st.failed then
          st.failed = r.step
        end
      end
    elseif r.kind == "intent" and current and prim.is_write(r.prim, r.args) then
      st.wrote[current] = true
    end
  end
  -- a crash: the step that started and never ended is where the run stopped
  if not st.failed then
    for _, n in ipairs(st.order) do if st.status[n] == nil then st.failed = n; break end end
  end
  return st
end

-- Where a resumed run continues: the first step whose effect is not in place: the failed step,
-- or an earlier step the failed run rolled back. Before it, a step whose run wrote (and was
-- not undone) is skipped, as done by the resumed run; one that only read runs again, so that
-- what it put in ctx is there. -> skip (index -> reason), from (name), or nil, message.
function M.resume(book, resume)
  local st = steps_of(resume.records or {})
  if not st.failed then
    return nil, fmt("run %s has no failed step to resume from", tostring(resume.run))
  end
  if not book.names[st.failed] then
    return nil, fmt("run %s failed at step %s, which this runbook does not declare", tostring(resume.run), st.failed)
  end
  local from
  for _, s in ipairs(book.steps) do
    local status = st.status[s.name]
    if s.name == st.failed or status == "rolled_back" or status == "rollback_failed" then from = s.name; break end
  end
  local skip, reached = {}, false
  for i, s in ipairs(book.steps) do
    if s.name == from then reached = true end
    if not reached and st.wrote[s.name] then
      skip[i] = fmt("done by run %s (resumed)", tostring(resume.run))
    end
  end
  return skip, from
end

return M
