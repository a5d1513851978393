-- rbl.drift: deep structural comparison of an actual and an expected document (pure Lua 5.4).
--
-- No globals, no I/O, no C: it runs unchanged under the plain lua5.4 interpreter.
-- Reference: src/families/drift/drift.md (options, item shape, path syntax, patch semantics).

local M = {}

local type, pairs, ipairs, next, rawget, rawlen, tostring, tonumber, error =
  type, pairs, ipairs, next, rawget, rawlen, tostring, tonumber, error
local mtype, sfmt, concat, sort = math.type, string.format, table.concat, table.sort

-- The host's json.null and array test (drift.configure); a private sentinel stands in
-- for null in patches when nothing was configured.
local own_null = setmetatable({}, { __name = "rbl.drift.null", __tostring = function() return "null" end })
local cfg = { null = nil, is_array = nil }

-- drift.configure{null = json.null, is_array = json.is_array}
function M.configure(c)
  if type(c) ~= "table" then error("drift.configure: table expected", 2) end
  cfg.null, cfg.is_array = c.null, c.is_array
end

-- The null used in patches and reports: the configured one, else drift.null.
local function null_value() return cfg.null or own_null end
M.null = own_null

local MAX_DEPTH = 1000

---------------------------------------------------------------------------- values

-- Kinds: "nil", "null", "array", "object", "string", "number", "boolean" (others: type()).
local function kind(v, null)
  if v == null and v ~= nil or v == own_null then return "null" end
  local t = type(v)
  if t ~= "table" then return t end
  local isarr = cfg.is_array
  if isarr and isarr(v) then return "array" end
  local n = rawlen(v)
  if n == 0 then return "object" end
  local c = 0
  for _ in next, v do c = c + 1 end
  return c == n and "array" or "object"
end

-- A decimal numeric string (no hex, inf, nan, blanks) as a number, else nil.
local function numeric(s)
  if s:find("[^%d%.eE+%-]") then return nil end
  return tonumber(s)
end

local function scalar_eq(a, e, coerce)
  if a == e then return true end
  if not coerce then return false end
  local ta, te = type(a), type(e)
  if ta == "string" and te == "number" then return numeric(a) == e end
  if ta == "number" and te == "string" then return numeric(e) == a end
  if ta == "string" and te == "boolean" then return a == tostring(e) end
  if ta == "boolean" and te == "string" then return e == tostring(a) end
  return false
end

-- Canonical form of a list key value, so 8080 and "8080" meet when coercing: numbers
-- stay numbers (1.0 and 1 are one table key), numeric strings become numbers.
local function canon(v, coerce)
  if coerce and type(v) == "string" then
    local b = v:byte(1)
    if not b or b > 57 then return v end -- cannot be numeric: the common case
    local n = numeric(v)
    if n then return n end
  end
  return v
end

local function numstr(v)
  if mtype(v) == "integer" then return sfmt("%d", v) end
  if v ~= v then return "NaN" end
  if v == math.huge then return "Infinity" elseif v == -math.huge then return "-Infinity" end
  return sfmt("%.14g", v)
end

local function jstr(s)
  return '"' .. s:gsub('[%c"\\]', function(c)
    if c == '"' then return '\\"' elseif c == "\\" then return "\\\\"
    elseif c == "\n" then return "\\n" elseif c == "\t" then return "\\t" end
    return sfmt("\\u%04x", c:byte())
  end) .. '"'
end

-- Compact JSON with sorted keys, for summaries (deterministic, bounded by the caller).
local function render(v, null, out)
  local k = kind(v, null)
  if k == "nil" then out[#out + 1] = "absent"
  elseif k == "null" then out[#out + 1] = "null"
  elseif k == "string" then out[#out + 1] = jstr(v)
  elseif k == "number" then out[#out + 1] = numstr(v)
  elseif k == "boolean" then out[#out + 1] = tostring(v)
  elseif k == "array" then
    out[#out + 1] = "["
    for i = 1, rawlen(v) do
      if i > 1 then out[#out + 1] = "," end
      render(rawget(v, i), null, out)
      if #out > 400 then break end
    end
    out[#out + 1] = "]"
  elseif k == "object" then
    local keys = {}
    for key in next, v do keys[#keys + 1] = tostring(key) end
    sort(keys)
    out[#out + 1] = "{"
    for i, key in ipairs(keys) do
      if i > 1 then out[#out + 1] = "," end
      out[#out + 1] = jstr(key) .. ":"
      local val = rawget(v, key)
      if val == nil then val = rawget(v, tonumber(key)) end
      render(val, null, out)
      if #out > 400 then break end
    end
    out[#out + 1] = "}"
  else
    out[#out + 1] = "<" .. k .. ">"
  end
end

-- A value for a summary line: numbers and plain words bare, other strings quoted.
local function show(v, null, other)
  if type(v) == "string" then
    local bare = v:find("^[%w_%./:@+%-]+$") and v ~= "null" and v ~= "true" and v ~= "false"
      and v ~= "absent"
    -- "500" next to 500 (coercion off) is quoted so the type change shows.
    if bare and type(other) == "number" and numeric(v) == other then bare = false end
    if bare then return v end
  end
  local out = {}
  render(v, null, out)
  local s = concat(out)
  if #s > 120 then s = s:sub(1, 117) .. "..." end
  return s
end

---------------------------------------------------------------------------- paths

-- A path is an array of segments: a string (object key), an integer (0-based list
-- index) or {key, value} (list item matched by key).

local function bare_key(k)
  return k ~= "" and k ~= "*" and k ~= "**" and not k:find('[%.%[%]"\\=%s%c]')
end

local function quote(s)
  return '"' .. s:gsub('[\\"]', "\\%0") .. '"'
end

local function item_value_text(v)
  if type(v) == "string" and v ~= "" and not v:find('[%[%]"\\=%s%c*]') then return v end
  if type(v) == "number" then return numstr(v) end
  return quote(tostring(v))
end

local function path_string(segs, n)
  local out = {}
  for i = 1, n or #segs do
    local s = segs[i]
    local ts = type(s)
    if ts == "string" then
      if bare_key(s) then
        out[#out + 1] = (#out > 0 and "." or "") .. s
      else
        out[#out + 1] = "[" .. quote(s) .. "]"
      end
    elseif ts == "number" then
      out[#out + 1] = "[" .. sfmt("%d", s) .. "]"
    else
      out[#out + 1] = "[" .. s[1] .. "=" .. item_value_text(s[2]) .. "]"
    end
  end
  return concat(out)
end
M.path_string = path_string

-- Parses a path or pattern. Pattern segments: {t = "key"|"glob"|"star"|"dstar"|"item"|
-- "index"|"keyed", ...}. Raises on syntax errors (message names the text).
local function parse(text)
  local segs, i, n = {}, 1, #text
  local function fail(why)
    error(sfmt("drift: bad path %q at %d: %s", text, i, why), 0)
  end
  local function read_quoted()
    local j, buf = i + 1, {}
    while j <= n do
      local c = text:sub(j, j)
      if c == "\\" then buf[#buf + 1] = text:sub(j + 1, j + 1); j = j + 2
      elseif c == '"' then i = j + 1; return concat(buf)
      else buf[#buf + 1] = c; j = j + 1 end
    end
    fail("unterminated quote")
  end
  while i <= n do
    local c = text:sub(i, i)
    if c == "." then
      if i == 1 or i == n then fail("empty segment") end
      i = i + 1
      c = text:sub(i, i)
      if c == "." or c == "[" then fail("empty segment") end
    end
    if c == "[" then
      i = i + 1
      local d = text:sub(i, i)
      if d == '"' then
        segs[#segs + 1] = { t = "key", v = read_quoted() }
      elseif d == "*" and text:sub(i + 1, i + 1) == "]" then
        segs[#segs + 1] = { t = "item" }; i = i + 1
      elseif d:find("%d") then
        local num = text:match("^%d+", i)
        segs[#segs + 1] = { t = "index", v = tonumber(num) }; i = i + #num
      else
        local k = text:match("^[^=%]]+", i)
        if not k then fail("expected a key, an index, * or \"...\"") end
        i = i + #k
        if text:sub(i, i) ~= "=" then fail("expected =") end
        i = i + 1
        local v
        if text:sub(i, i) == '"' then v = read_quoted()
        else v = text:match("^[^%]]*", i); i = i + #v end
        segs[#segs + 1] = { t = "keyed", k = k, v = v }
      end
      if text:sub(i, i) ~= "]" then fail("expected ]") end
      i = i + 1
    else
      local k = text:match('^[^%.%[]+', i)
      if not k then fail("empty segment") end
      i = i + #k
      if k == "*" then segs[#segs + 1] = { t = "star" }
      elseif k == "**" then segs[#segs + 1] = { t = "dstar" }
      elseif k:find("*", 1, true) then
        local lp = "^" .. k:gsub("[%^%$%(%)%%%.%[%]%+%-%?]", "%%%0"):gsub("%*", ".*") .. "$"
        segs[#segs + 1] = { t = "glob", v = lp }
      else segs[#segs + 1] = { t = "key", v = k } end
    end
  end
  return segs
end
M.parse_path = parse

local function seg_match(p, s, coerce)
  local t, ts = p.t, type(s)
  if t == "key" then return ts == "string" and s == p.v end
  if t == "star" then return true end
  if t == "glob" then return ts == "string" and s:find(p.v) ~= nil end
  if t == "item" then return ts ~= "string" end
  if t == "index" then return ts == "number" and s == p.v end
  -- pattern text "8080" names the item keyed 8080 whatever opts.coerce says
  if t == "keyed" then return ts == "table" and s[1] == p.k and canon(s[2], true) == canon(p.v, true) end
  return false
end

-- Does pattern pat[pi..] match path segs[si..n] exactly?
local function pmatch(pat, pi, segs, si, n, coerce)
  while true do
    local p = pat[pi]
    if not p then return si > n end
    if p.t == "dstar" then
      for k = si, n + 1 do
        if pmatch(pat, pi + 1, segs, k, n, coerce) then return true end
      end
      return false
    end
    if si > n or not seg_match(p, segs[si], coerce) then return false end
    pi, si = pi + 1, si + 1
  end
end

local function any_match(pats, segs, n, coerce)
  for i = 1, #pats do
    if pmatch(pats[i], 1, segs, 1, n, coerce) then return true end
  end
  return false
end

-- Compiles a list of pattern strings. A pattern of one plain key ("max_connections")
-- matches that key at any depth, like a .gitignore name; the others, and any pattern
-- written with a leading "." (".max_connections"), are anchored at the compared roots. A pattern that starts with opts.prefix also works without it.
local function compile(list, prefix, what)
  local out = {}
  if list == nil then return out end
  if type(list) == "string" then list = { list } end
  if type(list) ~= "table" then error("drift.compare: opts." .. what .. " must be a list of patterns", 3) end
  for _, text in ipairs(list) do
    if type(text) ~= "string" then error("drift.compare: opts." .. what .. ": pattern strings expected", 3) end
    local anchored = text:sub(1, 1) == "."
    local pat = parse(anchored and text:sub(2) or text)
    if not anchored and #pat == 1 and (pat[1].t == "key" or pat[1].t == "glob") and not text:find("^%[") then
      pat = { { t = "dstar" }, pat[1] }
    end
    out[#out + 1] = pat
    if #prefix > 0 and #pat > #prefix then
      local same = true
      for i = 1, #prefix do
        local p = pat[i]
        if not (p.t == "key" and p.v == prefix[i]) then same = false; break end
      end
      if same then out[#out + 1] = table.move(pat, #prefix + 1, #pat, 1, {}) end
    end
  end
  return out
end

---------------------------------------------------------------------------- comparison

local K8S_IGNORE = {
  "metadata.resourceVersion", "metadata.managedFields", "metadata.uid",
  "metadata.creationTimestamp", "metadata.generation", "metadata.selfLink",
  'metadata.annotations["kubectl.kubernetes.io/last-applied-configuration"]', "status",
}

-- Merge keys tried, in order, for lists of objects without an opts.keys entry.
local DEFAULT_KEYS = { "name" }
local FIELD_KEYS = { ports = { "containerPort", "port" }, volumeMounts = { "mountPath" },
  volumeDevices = { "devicePath" } }

local k8s_ignore -- K8S_IGNORE compiled, on first use

local function is_k8s(v, null)
  return kind(v, null) == "object" and rawget(v, "apiVersion") ~= nil and rawget(v, "kind") ~= nil
    and kind(rawget(v, "metadata"), null) == "object"
end

local Ctx = {}
Ctx.__index = Ctx

function Ctx:emit(op, depth, e, a)
  local segs = table.move(self.segs, 1, depth, 1, {})
  self.items[#self.items + 1] = { op = op, segs = segs, expected = e, actual = a }
end

function Ctx:ignored(depth)
  return self.has_ignore and any_match(self.ignore, self.segs, depth, self.coerce)
end

-- Elements of list by canonical key value, or nil unless every element is an object
-- with a scalar, unique value for key.
local function index_by(list, key, null, coerce)
  local map = {}
  for i = 1, rawlen(list) do
    local el = rawget(list, i)
    if type(el) ~= "table" or el == own_null then return nil end
    local kv = rawget(el, key)
    local tk = type(kv)
    if tk ~= "string" and tk ~= "number" and tk ~= "boolean" then return nil end
    local c = canon(kv, coerce)
    if map[c] ~= nil then return nil end
    map[c] = el
  end
  return map
end

-- The key field for a list at the current path and both sides indexed by it, or nil
-- to compare by position.
function Ctx:list_key(depth, la, le, segs)
  segs = segs or self.segs
  local candidates
  for _, kp in ipairs(self.keys) do
    if pmatch(kp.pat, 1, segs, 1, depth, self.coerce) then
      if not kp.key then return nil end
      candidates = { kp.key }
      break
    end
  end
  if not candidates then
    candidates = FIELD_KEYS[segs[depth]] or DEFAULT_KEYS
  end
  local null, coerce = self.null, self.coerce
  for _, key in ipairs(candidates) do
    local amap = index_by(la, key, null, coerce)
    local emap = amap and index_by(le, key, null, coerce)
    if emap then return key, amap, emap end
  end
  return nil
end

function Ctx:walk(a, e, depth)
  if a == e then return end
  local null = self.null
  if type(a) ~= "table" and type(e) ~= "table" and a ~= null and e ~= null then
    -- the common case, two scalars (a userdata null is not a scalar)
    if not scalar_eq(a, e, self.coerce) then self:emit("changed", depth, e, a) end
    return
  end
  if depth >= MAX_DEPTH then error("drift.compare: documents nested deeper than " .. MAX_DEPTH, 0) end
  local ka, ke = kind(a, null), kind(e, null)
  if ka == "object" and ke == "object" then return self:walk_object(a, e, depth) end
  if ka == "array" and ke == "array" then return self:walk_array(a, e, depth) end
  -- An empty table that carries no array mark is as good as an empty list, and back.
  if (ka == "array" and ke == "object" and next(e) == nil) or (ke == "array" and ka == "object" and next(a) == nil) then
    if next(a) == nil and next(e) == nil then return end
    return self:walk_array(a, e, depth)
  end
  if ka == "nil" then return self:emit("missing", depth, e, nil) end
  if ke == "nil" then return self:emit("unexpected", depth, nil, a) end
  if ka == ke and ka ~= "object" and ka ~= "array" then
    if ka == "null" then return end
    if scalar_eq(a, e, false) then return end
  elseif ka ~= "object" and ka ~= "array" and ke ~= "object" and ke ~= "array" then
    if scalar_eq(a, e, self.coerce) then return end
  end
  self:emit("changed", depth, e, a)
end

function Ctx:walk_object(a, e, depth)
  local segs, null, d1, has_ignore, coerce = self.segs, self.null, depth + 1, self.has_ignore, self.coerce
  for k, ev in next, e do
    if type(k) ~= "string" then k = tostring(k) end
    segs[d1] = k
    if not (has_ignore and any_match(self.ignore, segs, d1, self.coerce)) then
      local av = rawget(a, k)
      if av == nil and type(k) == "string" then av = rawget(a, tonumber(k) or k) end
      if av == ev then -- equal scalars, or the same table: the common case
      elseif type(ev) ~= "table" and type(av) ~= "table" and av ~= nil and av ~= null and ev ~= null then
        if not scalar_eq(av, ev, coerce) then self:emit("changed", d1, ev, av) end
      elseif (ev == null or ev == own_null) and (av == nil or av == null or av == own_null) then
        -- null and absent are the same for an object member (merge-patch semantics).
      elseif av == nil or av == null or av == own_null then
        self:emit("missing", d1, ev, nil)
      elseif ev == null or ev == own_null then
        if not self.only then self:emit("unexpected", d1, nil, av) end
      else
        self:walk(av, ev, d1)
      end
    end
  end
  if not self.only then
    for k, av in next, a do
      local sk = type(k) == "string" and k or tostring(k)
      if rawget(e, k) == nil and (sk == k or rawget(e, sk) == nil) and (type(k) ~= "string" or rawget(e, tonumber(k) or k) == nil)
        and av ~= null and av ~= own_null then
        segs[d1] = sk
        if not self:ignored(d1) then self:emit("unexpected", d1, nil, av) end
      end
    end
  end
  segs[d1] = nil
end

function Ctx:walk_array(a, e, depth)
  local segs, d1 = self.segs, depth + 1
  local key, amap, emap = self:list_key(depth, a, e)
  if key then
    local coerce = self.coerce
    for i = 1, rawlen(e) do
      local el = rawget(e, i)
      local kv = rawget(el, key)
      segs[d1] = { key, kv }
      if not self:ignored(d1) then
        local ael = amap[canon(kv, coerce)]
        if ael == nil then self:emit("missing", d1, el, nil) else self:walk(ael, el, d1) end
      end
    end
    if not self.only then
      for i = 1, rawlen(a) do
        local el = rawget(a, i)
        local kv = rawget(el, key)
        if emap[canon(kv, coerce)] == nil then
          segs[d1] = { key, kv }
          if not self:ignored(d1) then self:emit("unexpected", d1, nil, el) end
        end
      end
    end
  else
    local na, ne = rawlen(a), rawlen(e)
    for i = 1, math.max(na, ne) do
      segs[d1] = i - 1
      if not self:ignored(d1) then
        if i > na then self:emit("missing", d1, rawget(e, i), nil)
        elseif i > ne then self:emit("unexpected", d1, nil, rawget(a, i))
        else self:walk(rawget(a, i), rawget(e, i), d1) end
      end
    end
  end
  segs[d1] = nil
end

-- Copies v without the members an ignore pattern names (segs[1..depth] is v's path).
function Ctx:prune(v, segs, depth)
  local k = kind(v, self.null)
  if k ~= "object" and k ~= "array" then return v end
  local out = {}
  if k == "array" then
    local key = self:list_key(depth, v, v, segs)
    for i = 1, rawlen(v) do
      local el = rawget(v, i)
      segs[depth + 1] = i - 1
      if any_match(self.ignore, segs, depth + 1, self.coerce) then goto skip end
      if key then
        segs[depth + 1] = { key, rawget(el, key) }
        if any_match(self.ignore, segs, depth + 1, self.coerce) then goto skip end
      end
      out[#out + 1] = self:prune(el, segs, depth + 1)
      ::skip::
    end
    out = setmetatable(out, getmetatable(v))
  else
    for key, el in next, v do
      segs[depth + 1] = tostring(key)
      if not any_match(self.ignore, segs, depth + 1, self.coerce) then
        out[key] = self:prune(el, segs, depth + 1)
      end
    end
    out = setmetatable(out, getmetatable(v))
  end
  segs[depth + 1] = nil
  return out
end

-- Does a critical pattern match the item's path, an ancestor, or a path inside its value?
function Ctx:critical_at(it)
  local pats = self.critical
  if #pats == 0 then return false end
  local segs = it.segs
  for n = #segs, 0, -1 do
    if any_match(pats, segs, n, self.coerce) then return true end
  end
  local found = false
  local function scan(v, path, depth)
    if found then return end
    local k = kind(v, self.null)
    if k == "object" then
      for key, el in next, v do
        path[depth + 1] = tostring(key)
        if any_match(pats, path, depth + 1, self.coerce) then found = true; return end
        scan(el, path, depth + 1)
      end
    elseif k == "array" then
      local key = self:list_key(depth, v, v, path)
      for i = 1, rawlen(v) do
        local el = rawget(v, i)
        path[depth + 1] = i - 1
        if any_match(pats, path, depth + 1, self.coerce) then found = true; return end
        if key then
          path[depth + 1] = { key, rawget(el, key) }
          if any_match(pats, path, depth + 1, self.coerce) then found = true; return end
        end
        scan(el, path, depth + 1)
      end
    end
    path[depth + 1] = nil
  end
  local path = table.move(segs, 1, #segs, 1, {})
  scan(it.expected, path, #segs)
  if not found then
    path = table.move(segs, 1, #segs, 1, {})
    scan(it.actual, path, #segs)
  end
  return found
end

---------------------------------------------------------------------------- the drift object

local Drift = {}
Drift.__index = Drift
Drift.__name = "rbl.drift"
Drift.__metatable = "drift"

-- Private per-object state (segments, roots), so items stay plain data.
local private = setmetatable({}, { __mode = "k" })

local function cmp_seg(x, y)
  local tx, ty = type(x), type(y)
  if tx ~= ty then return tx < ty end
  if tx == "table" then
    if x[1] ~= y[1] then return x[1] < y[1] end
    local cx, cy = canon(x[2], true), canon(y[2], true)
    local tcx, tcy = type(cx), type(cy)
    if tcx ~= tcy then return tcx < tcy end
    if tcx == "boolean" then return not cx and cy end
    return cx < cy
  end
  return x < y
end

local function cmp_items(p, q)
  local a, b = p.segs, q.segs
  for i = 1, math.min(#a, #b) do
    local x, y = a[i], b[i]
    if cmp_seg(x, y) then return true end
    if cmp_seg(y, x) then return false end
  end
  return #a < #b
end

local function line(it, null)
  local e = it.op == "unexpected" and "absent" or show(it.expected, null, it.actual)
  local a = it.op == "missing" and "absent" or show(it.actual, null, it.expected)
  return sfmt("%s expected %s, actual %s (%s)", it.path == "" and "(root)" or it.path, e, a, it.severity)
end

-- One line per item: "<path> expected <value>, actual <value> (<severity>)".
function Drift:summary()
  if #self == 0 then return "no drift" end
  local p = private[self]
  local lines = {}
  for i = 1, #self do lines[i] = line(self[i], p and p.null) end
  return concat(lines, "\n")
end
Drift.__tostring = Drift.summary

-- The trace entry's drift_detected: {field, expected, actual, severity} per item;
-- an absent side is null.
function Drift:report()
  local nul = null_value()
  local out = {}
  for i = 1, #self do
    local it = self[i]
    local e, a = it.expected, it.actual
    if e == nil then e = nul end
    if a == nil then a = nul end
    out[i] = { field = it.path, expected = e, actual = a, severity = it.severity }
  end
  return out
end

local function deep_copy(v, null)
  if type(v) ~= "table" or v == null or v == own_null then return v end
  local out = {}
  for k, x in next, v do out[k] = deep_copy(x, null) end
  return setmetatable(out, getmetatable(v))
end

-- Walks v along segs[1..n]; nil when the path does not exist.
local function descend(v, segs, n, coerce)
  for i = 1, n do
    if type(v) ~= "table" then return nil end
    local s = segs[i]
    if type(s) == "string" then v = rawget(v, s)
    elseif type(s) == "number" then v = rawget(v, s + 1)
    else
      local found
      for j = 1, rawlen(v) do
        local el = rawget(v, j)
        if type(el) == "table" and canon(rawget(el, s[1]), coerce) == canon(s[2], coerce) then found = el; break end
      end
      v = found
    end
  end
  return v
end

-- Patch builder nodes: {[FINAL] = value} a value written as is; {[LIST] = {key, order, by}}
-- a keyed list (element builders by canonical key); any other table an object builder.
local FINAL, LIST = {}, {}

local function builder_child(node, s, nxt, coerce)
  if type(s) == "string" then
    local child = node[s]
    if child == nil then
      child = type(nxt) == "table" and { [LIST] = { key = nxt[1], order = {}, by = {} } } or {}
      node[s] = child
    end
    return child
  end
  local lm, c = node[LIST], canon(s[2], coerce)
  local child = lm.by[c]
  if child == nil then
    child = { [s[1]] = { [FINAL] = s[2] } }
    lm.by[c] = child
    lm.order[#lm.order + 1] = c
  end
  return child
end

local function builder_put(node, s, value, coerce)
  if type(s) == "string" then node[s] = { [FINAL] = value }; return end
  local lm, c = node[LIST], canon(s[2], coerce)
  if lm.by[c] == nil then lm.order[#lm.order + 1] = c end
  lm.by[c] = { [FINAL] = value }
end

-- Strategic form of a builder: keyed lists become lists of element patches.
local function finish(node)
  local f = node[FINAL]
  if f ~= nil then return f end
  local lm = node[LIST]
  if lm then
    local out = {}
    for i, c in ipairs(lm.order) do out[i] = finish(lm.by[c]) end
    return out
  end
  local out = {}
  for k, v in next, node do out[k] = finish(v) end
  return out
end

-- Applies a builder to a target value (RFC 7386 for objects, merge-by-key for keyed
-- lists): the value the patched document holds there.
local function apply_builder(target, node, nul, coerce)
  local f = node[FINAL]
  if f ~= nil then return deep_copy(f, nul) end
  local lm = node[LIST]
  if lm then
    local out = {}
    if type(target) == "table" then
      for i = 1, rawlen(target) do out[i] = rawget(target, i) end
    end
    for _, c in ipairs(lm.order) do
      local pe, idx = lm.by[c], nil
      for i, el in ipairs(out) do
        if type(el) == "table" and canon(rawget(el, lm.key), coerce) == c then idx = i; break end
      end
      local fv = pe[FINAL]
      if type(fv) == "table" and rawget(fv, "$patch") == "delete" then
        if idx then table.remove(out, idx) end
      elseif idx then out[idx] = apply_builder(out[idx], pe, nul, coerce)
      else out[#out + 1] = apply_builder(nil, pe, nul, coerce) end
    end
    return setmetatable(out, type(target) == "table" and getmetatable(target) or nil)
  end
  local out = {}
  if type(target) == "table" and target ~= nul and target ~= own_null then
    for k, v in next, target do out[k] = v end
    setmetatable(out, getmetatable(target))
  end
  for k, v in next, node do
    local fv = v[FINAL]
    if fv == nul or fv == own_null then out[k] = nil
    else out[k] = apply_builder(rawget(out, k), v, nul, coerce) end
  end
  return out
end

-- Merge form: every keyed list is written whole, as actual's list with the fixes applied.
local function to_merge(node, actual, nul, coerce)
  local f = node[FINAL]
  if f ~= nil then return f end
  if node[LIST] then return apply_builder(actual, node, nul, coerce) end
  local out = {}
  for k, v in next, node do
    out[k] = to_merge(v, type(actual) == "table" and rawget(actual, k) or nil, nul, coerce)
  end
  return out
end

-- :patch()           strategic-merge style: RFC 7386 for objects; a keyed list drifts as a
--                    partial list of {key = value, ...} element patches, an element to
--                    remove as {key = value, ["$patch"] = "delete"}; positional lists whole.
-- :patch("merge")    pure RFC 7386: every list that drifted is written out in full.
function Drift:patch(style)
  style = style or "strategic"
  if style ~= "strategic" and style ~= "merge" then
    error('drift:patch: style must be "strategic" or "merge"', 2)
  end
  local p = private[self]
  if not p then error("drift:patch: not a drift object", 2) end
  local nul, coerce = null_value(), p.coerce
  -- Paths are walked from a holder so an item or a list at the root needs no special case.
  local holder = {}
  local exp = { [""] = p.expected }
  for i = 1, #self do
    local it = self[i]
    local segs = table.move(p.segs[it], 1, #p.segs[it], 2, { "" })
    local node = holder
    for d = 1, #segs do
      local s, nxt = segs[d], segs[d + 1]
      if d == #segs then
        local v
        if it.op ~= "unexpected" then v = deep_copy(it.expected, nul)
        elseif type(s) == "table" then v = { [s[1]] = s[2], ["$patch"] = "delete" }
        else v = nul end
        builder_put(node, s, v, coerce)
        break
      end
      if type(nxt) == "number" then
        -- a positional list is replaced whole by expected's
        builder_put(node, s, deep_copy(descend(exp, segs, d, coerce), nul), coerce)
        break
      end
      node = builder_child(node, s, nxt, coerce)
    end
  end
  local root = holder[""]
  if root == nil then return {} end
  if style == "merge" then return to_merge(root, p.actual, nul, coerce) end
  return finish(root)
end

---------------------------------------------------------------------------- compare

local function check_opts(opts)
  if opts == nil then return {} end
  if type(opts) ~= "table" then error("drift.compare: opts must be a table", 3) end
  return opts
end

-- drift.compare(actual, expected, opts) -> drift object (see src/families/drift/drift.md).
function M.compare(actual, expected, opts)
  opts = check_opts(opts)
  local null = opts.null
  if null == nil then null = cfg.null end
  local coerce = opts.coerce ~= false
  local prefix = {}
  if opts.prefix ~= nil then
    if type(opts.prefix) ~= "string" then error("drift.compare: opts.prefix must be a string", 2) end
    for _, s in ipairs(parse(opts.prefix)) do
      if s.t ~= "key" then error("drift.compare: opts.prefix must be plain keys", 2) end
      prefix[#prefix + 1] = s.v
    end
  end
  local ignore = compile(opts.ignore, prefix, "ignore")
  if opts.k8s ~= false and (opts.k8s == true or is_k8s(actual, null)) then
    k8s_ignore = k8s_ignore or compile(K8S_IGNORE, {}, "ignore")
    for _, pat in ipairs(k8s_ignore) do ignore[#ignore + 1] = pat end
  end
  local keys = {}
  if opts.keys ~= nil then
    if type(opts.keys) ~= "table" then error("drift.compare: opts.keys must be a table", 2) end
    local names = {}
    for k in pairs(opts.keys) do names[#names + 1] = k end
    sort(names)
    for _, k in ipairs(names) do
      local v = opts.keys[k]
      if v ~= false and type(v) ~= "string" then error("drift.compare: opts.keys values are field names or false", 2) end
      for _, pat in ipairs(compile({ k }, prefix, "keys")) do keys[#keys + 1] = { pat = pat, key = v or nil } end
    end
  end
  local ctx = setmetatable({
    null = null, coerce = coerce, only = opts.only and true or false, segs = {}, items = {},
    ignore = ignore, has_ignore = #ignore > 0, critical = compile(opts.critical, prefix, "critical"), keys = keys,
  }, Ctx)
  ctx:walk(actual, expected, 0)

  local items = ctx.items
  sort(items, cmp_items)
  local d = setmetatable({}, Drift)
  local segs_of = {}
  local kept = {}
  for _, it in ipairs(items) do
    -- Ignored members are cut out of item values; an object left empty by that alone
    -- (annotations holding only last-applied-configuration) is no drift.
    local keep = true
    if #ignore > 0 then
      for _, side in ipairs({ "expected", "actual" }) do
        local v = it[side]
        if v ~= nil then
          local pv = ctx:prune(v, table.move(it.segs, 1, #it.segs, 1, {}), #it.segs)
          if type(v) == "table" and next(v) ~= nil and next(pv) == nil and it.op ~= "changed" then keep = false end
          it[side] = pv
        end
      end
    end
    if keep then kept[#kept + 1] = it end
  end
  items = kept
  for i, it in ipairs(items) do
    local full = it.segs
    if #prefix > 0 then full = table.move(it.segs, 1, #it.segs, #prefix + 1, table.move(prefix, 1, #prefix, 1, {})) end
    local item = {
      path = path_string(full), op = it.op, expected = it.expected, actual = it.actual,
      severity = ctx:critical_at(it) and "critical" or "warning",
    }
    d[i] = item
    segs_of[item] = it.segs
  end
  d.exists = #items > 0
  private[d] = { segs = segs_of, null = null, coerce = coerce, actual = actual, expected = expected }
  return d
end

-- A C-independent self-test (`lua5.4 src/families/drift/drift.lua`): raises on failure.
function M.selftest()
  local function check(cond, what) if not cond then error("drift selftest: " .. what, 2) end end
  local live = { max_connections = "250", idle_timeout = "30s", min_idle = "10" }
  local spec = { max_connections = 500, idle_timeout = "30s", min_idle = 10 }
  local d = M.compare(live, spec, { critical = { "max_connections" }, prefix = "db" })
  check(d:summary() == "db.max_connections expected 500, actual 250 (critical)", "seed summary")
  check(d:patch().max_connections == 500, "seed patch")
  check(not M.compare(spec, spec).exists, "compare(x, x)")
  local a = { spec = { containers = { { name = "b", image = "1" }, { name = "a", image = "2" } } } }
  local e = { spec = { containers = { { name = "a", image = "3" }, { name = "b", image = "1" } } } }
  d = M.compare(a, e)
  check(#d == 1 and d[1].path == "spec.containers[name=a].image", "keyed lists")
  check(M.compare({ ["my.key"] = 1 }, {})[1].path == '["my.key"]', "quoting")
  return true
end

if type(arg) == "table" and type(arg[0]) == "string" and arg[0]:match("drift%.lua$") and debug
  and debug.getinfo(1, "S").short_src == arg[0] then
  M.selftest()
  print("rbl.drift selftest: ok")
end

return M
