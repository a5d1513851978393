-- rbl check's static analysis: unknown globals and unknown fields of the registry's tables
-- (docker.restrat), luacheck-style, from the tokens alone, so nothing of the runbook runs.
-- Scopes follow Lua's blocks; a name is known when a local, a parameter or a loop variable
-- declares it, when the file assigns it as a global, or when the registry (the sandbox's
-- globals, src/families/families.c) names it.
local M = {}

local KEYWORDS = {}
for w in ([[and break do else elseif end false for function goto if in local nil not or repeat
  return then true until while]]):gmatch("%a+") do KEYWORDS[w] = true end

-- -> list of {t = "name"|"kw"|"str"|"num"|"op", v = text, line = n}, or nil, message
function M.tokens(src)
  local out, i, line, n = {}, 1, 1, #src
  local function push(t, v) out[#out + 1] = { t = t, v = v, line = line } end
  local function long_bracket(at) -- [[ or [==[ at position at: -> closing position end, or nil
    local eq = src:match("^%[(=*)%[", at)
    if not eq then return nil end
    local close = "]" .. eq .. "]"
    local s, e = src:find(close, at + #eq + 2, true)
    if not s then return false end
    return e
  end
  while i <= n do
    local c = src:sub(i, i)
    if c == "\n" then line = line + 1; i = i + 1
    elseif c:match("%s") then i = i + 1
    elseif src:sub(i, i + 1) == "--" then
      local e = long_bracket(i + 2)
      if e == false then return nil, string.format("line %d: unfinished long comment", line) end
      if e then
        local _, nl = src:sub(i, e):gsub("\n", "")
        line = line + nl; i = e + 1
      else
        local s = src:find("\n", i, true)
        i = s or n + 1
      end
    elseif c == "[" and src:match("^%[=*%[", i) then
      local e = long_bracket(i)
      if not e then return nil, string.format("line %d: unfinished long string", line) end
      local _, nl = src:sub(i, e):gsub("\n", "")
      push("str", src:sub(i, e)); line = line + nl; i = e + 1
    elseif c == '"' or c == "'" then
      local j = i + 1
      while j <= n do
        local d = src:sub(j, j)
        if d == "\\" then
          if src:sub(j + 1, j + 1) == "\n" then line = line + 1 end
          if src:sub(j + 1, j + 1) == "z" then
            local ws = src:match("^%s*", j + 2)
            local _, nl = ws:gsub("\n", "")
            line = line + nl; j = j + 2 + #ws
          else
            j = j + 2
          end
        elseif d == c then break
        elseif d == "\n" then return nil, string.format("line %d: unfinished string", line)
        else j = j + 1 end
      end
      if j > n then return nil, string.format("line %d: unfinished string", line) end
      push("str", src:sub(i, j)); i = j + 1
    elseif c:match("[%a_]") then
      local w = src:match("^[%w_]+", i)
      push(KEYWORDS[w] and "kw" or "name", w); i = i + #w
    elseif c:match("%d") or (c == "." and src:sub(i + 1, i + 1):match("%d")) then
      local num = src:match("^0[xX][%x%.]*[pP][%+%-]?%d+", i) or src:match("^0[xX][%x%.]*", i)
        or src:match("^[%d%.]+[eE][%+%-]?%d+", i) or src:match("^[%d%.]+", i)
      push("num", num); i = i + #num
    else
      local op = src:match("^%.%.%.", i) or src:match("^[=~<>]=", i) or src:match("^%.%.", i)
        or src:match("^//", i) or src:match("^::", i) or src:match("^<<", i) or src:match("^>>", i) or c
      push("op", op); i = i + #op
    end
  end
  push("eof", "<eof>")
  return out
end

local distance = require("rbl.params").distance -- Levenshtein, small strings only

-- The closest candidate within 2 edits (1 for short names), or nil.
function M.suggest(word, candidates)
  local best, bd = nil, math.huge
  for _, c in ipairs(candidates) do
    local d = distance(word:lower(), c:lower())
    if d < bd or (d == bd and best and c < best) then best, bd = c, d end
  end
  local limit = #word <= 4 and 1 or 2
  if best and bd <= limit then return best end
  return nil
end

-- Checks src. known: the registry's names ("docker", "docker.restart", "string.format", ...).
-- -> list of {line = n, message = text}, sorted by line
function M.check(src, known)
  local toks, err = M.tokens(src)
  if not toks then return { { line = 0, message = err } } end
  local globals, members = {}, {}
  for _, name in ipairs(known) do
    local t, f = name:match("^([%w_]+)%.([%w_]+)$")
    if t then
      members[t] = members[t] or {}
      members[t][#members[t] + 1] = f
    else
      globals[name] = true
    end
  end
  local global_list = {}
  for g in pairs(globals) do global_list[#global_list + 1] = g end
  table.sort(global_list)

  -- Pass 1: the globals the file assigns itself (NAME = ..., function NAME, NAME.x = ... is not).
  local depth = {} -- context stack: "{" for table constructors, "b" for blocks
  local assigned = {}
  local function is_key(k) -- NAME at k directly inside a table constructor, as a key
    local p = toks[k - 1]
    return depth[#depth] == "{" and p and (p.v == "{" or p.v == "," or p.v == ";")
  end
  for k, tk in ipairs(toks) do
    if tk.v == "{" and tk.t == "op" then depth[#depth + 1] = "{"
    elseif tk.v == "}" and tk.t == "op" then if depth[#depth] == "{" then depth[#depth] = nil end
    elseif tk.t == "kw" and (tk.v == "function" or tk.v == "do" or tk.v == "then" or tk.v == "repeat") then
      depth[#depth + 1] = "b"
    elseif tk.t == "kw" and (tk.v == "end" or tk.v == "until") then
      while depth[#depth] == "{" do depth[#depth] = nil end
      depth[#depth] = nil
    elseif tk.t == "name" then
      local p, nx = toks[k - 1], toks[k + 1]
      local after_dot = p and (p.v == "." or p.v == ":")
      if not after_dot and p and p.t == "kw" and p.v == "function" then assigned[tk.v] = true
      elseif not after_dot and nx.v == "=" and not is_key(k) and not (p and p.v == "local") then
        assigned[tk.v] = true
      elseif not after_dot and nx.v == "," and not is_key(k) then
        -- a, b = ...: the names up to "=" are assigned (skipped when "in" or ")" comes first)
        local j = k + 1
        while toks[j].v == "," and toks[j + 1].t == "name" do j = j + 2 end
        if toks[j].v == "=" and not (p and (p.v == "local" or p.v == "for" or p.v == ",")) then
          for q = k, j - 1, 2 do assigned[toks[q].v] = true end
        end
      end
    end
  end

  -- Pass 2: scopes.
  local problems, seen = {}, {}
  local function problem(line, msg)
    local key = line .. msg
    if seen[key] then return end
    seen[key] = true
    problems[#problems + 1] = { line = line, message = msg }
  end
  local scopes = { { _ENV = true } }
  local function declare(name) scopes[#scopes][name] = true end
  local function is_local(name)
    for s = #scopes, 1, -1 do if scopes[s][name] then return true end end
    return false
  end
  local function open() scopes[#scopes + 1] = {} end
  local function close() if #scopes > 1 then scopes[#scopes] = nil end end
  local skip_do, pending_until = 0, nil
  local ctx = {} -- "{" or "b", to tell table keys from assignments
  local k = 1
  while k <= #toks do
    local tk = toks[k]
    if pending_until and tk.line > pending_until then close(); pending_until = nil end
    local p = toks[k - 1]
    if tk.t == "op" and tk.v == "{" then ctx[#ctx + 1] = "{"
    elseif tk.t == "op" and tk.v == "}" then if ctx[#ctx] == "{" then ctx[#ctx] = nil end
    elseif tk.t == "op" and tk.v == "::" then k = k + 2 -- ::label::
    elseif tk.t == "kw" then
      local w = tk.v
      if w == "goto" then k = k + 1
      elseif w == "local" and toks[k + 1].v == "function" then
        declare(toks[k + 2].v) -- "function" is handled next
      elseif w == "local" then
        local j = k + 1
        while toks[j].t == "name" do
          declare(toks[j].v)
          j = j + 1
          if toks[j].v == "<" then j = j + 3 end -- <const>, <close>
          if toks[j].v == "," then j = j + 1 else break end
        end
        k = j - 1
      elseif w == "function" then
        -- function [a.b:c](params) body end
        local j = k + 1
        local method = false
        if toks[j].t == "name" then
          local first = toks[j]
          if toks[j + 1].v ~= "." and toks[j + 1].v ~= ":" and not assigned[first.v] and not is_local(first.v)
            and not globals[first.v] then
            assigned[first.v] = true
          elseif (toks[j + 1].v == "." or toks[j + 1].v == ":") and not is_local(first.v) and not globals[first.v]
            and not assigned[first.v] then
            problem(first.line, string.format("unknown global '%s'", first.v))
          end
          j = j + 1
          while toks[j].v == "." or toks[j].v == ":" do
            if toks[j].v == ":" then method = true end
            j = j + 2
          end
        end
        open()
        ctx[#ctx + 1] = "b"
        if method then declare("self") end
        if toks[j].v == "(" then
          j = j + 1
          while toks[j].v ~= ")" and toks[j].t ~= "eof" do
            if toks[j].t == "name" then declare(toks[j].v) end
            j = j + 1
          end
        end
        k = j
      elseif w == "for" then
        open()
        ctx[#ctx + 1] = "b"
        local j = k + 1
        while toks[j].t == "name" do
          declare(toks[j].v)
          j = j + 1
          if toks[j].v == "," then j = j + 1 else break end
        end
        skip_do = skip_do + 1
        k = j - 1
      elseif w == "do" then
        if skip_do > 0 then skip_do = skip_do - 1 else open(); ctx[#ctx + 1] = "b" end
      elseif w == "while" then
        -- its "do" opens the block
      elseif w == "then" or w == "repeat" then open(); ctx[#ctx + 1] = "b"
      elseif w == "elseif" then close(); if ctx[#ctx] == "b" then ctx[#ctx] = nil end
      elseif w == "else" then close(); open()
      elseif w == "end" then
        close()
        while ctx[#ctx] == "{" do ctx[#ctx] = nil end
        ctx[#ctx] = nil
      elseif w == "until" then
        pending_until = tk.line
        while ctx[#ctx] == "{" do ctx[#ctx] = nil end
        ctx[#ctx] = nil
      end
    elseif tk.t == "name" then
      local after_dot = p and (p.v == "." or p.v == ":")
      local key = ctx[#ctx] == "{" and p and (p.v == "{" or p.v == "," or p.v == ";") and toks[k + 1].v == "="
      if not after_dot and not key then
        local name = tk.v
        if not is_local(name) then
          if not globals[name] and not assigned[name] then
            local s = M.suggest(name, global_list)
            problem(tk.line, string.format("unknown global '%s'%s", name,
              s and string.format(" (did you mean '%s'?)", s) or ""))
          elseif members[name] and not assigned[name] then
            -- a registry table: its fields are known exactly
            local j = k
            local nx, f = toks[j + 1], toks[j + 2]
            if (nx.v == "." or nx.v == ":") and f and f.t == "name" then
              local ok = false
              for _, m in ipairs(members[name]) do if m == f.v then ok = true; break end end
              if not ok then
                local s = M.suggest(f.v, members[name])
                problem(f.line, string.format("unknown field '%s.%s'%s", name, f.v,
                  s and string.format(" (did you mean '%s.%s'?)", name, s) or
                  string.format(" (%s has: %s)", name, table.concat(members[name], ", "))))
              end
            end
          end
        end
      end
    end
    k = k + 1
  end
  table.sort(problems, function(a, b) return a.line < b.line end)
  return problems
end

-- Is src a config file (a chunk that returns a table and declares no runbook or step)?
function M.is_config(src)
  local toks = M.tokens(src)
  if not toks then return false end
  local depth, returns = 0, false
  for _, tk in ipairs(toks) do
    if tk.t == "name" and (tk.v == "runbook" or tk.v == "step") then return false end
    if tk.t == "kw" and (tk.v == "function" or tk.v == "do" or tk.v == "then" or tk.v == "repeat") then depth = depth + 1
    elseif tk.t == "kw" and (tk.v == "end" or tk.v == "until") then depth = depth - 1
    elseif tk.t == "kw" and tk.v == "return" and depth == 0 then returns = true end
  end
  return returns
end

return M
