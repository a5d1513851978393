-- Tests for src/families/drift/drift.lua and the pure parts of src/families/drift/iac.lua, under plain lua5.4:
--   lua5.4 src/families/drift/tests/test_drift.lua        (from the repository root)
-- Property tests run over documents generated from a fixed seed; fixtures are real
-- Terraform output (src/families/drift/tests/tf) and real-shaped Kubernetes objects (src/families/drift/tests/k8s).

local root = (arg and arg[0] or ""):match("^(.*)/src/families/drift/tests/[^/]*$") or "."
package.path = root .. "/src/families/drift/?.lua;" .. package.path
package.preload["rbl.drift"] = function() return dofile(root .. "/src/families/drift/drift.lua") end
package.preload["rbl.iac"] = function() return dofile(root .. "/src/families/drift/iac.lua") end

local drift = require "rbl.drift"
local iac = require "rbl.iac"

local failures, count = 0, 0
local function test(name, fn)
  count = count + 1
  local ok, err = xpcall(fn, debug.traceback)
  if ok then io.write("ok   ", name, "\n")
  else failures = failures + 1; io.write("FAIL ", name, "\n", tostring(err), "\n") end
end

local function eq(got, want, what)
  if got ~= want then
    error(string.format("%s: got %s, want %s", what or "value", tostring(got), tostring(want)), 2)
  end
end

---------------------------------------------------------------------------- helpers

-- A small JSON decoder for the fixtures (null -> the NULL sentinel, arrays marked).
local NULL = setmetatable({}, { __name = "null" })
local ARRAY = {}
local function is_marked_array(t) return getmetatable(t) == ARRAY end

local function json_decode(s)
  local pos = 1
  local function ws() pos = s:find("[^ \t\r\n]", pos) or #s + 1 end
  local val
  local function str()
    local out = {}
    pos = pos + 1
    while true do
      local c = s:sub(pos, pos)
      if c == '"' then pos = pos + 1; return table.concat(out) end
      if c == "\\" then
        local e = s:sub(pos + 1, pos + 1)
        local map = { n = "\n", t = "\t", r = "\r", b = "\b", f = "\f", ['"'] = '"', ["\\"] = "\\", ["/"] = "/" }
        if e == "u" then out[#out + 1] = utf8.char(tonumber(s:sub(pos + 2, pos + 5), 16)); pos = pos + 6
        else out[#out + 1] = map[e]; pos = pos + 2 end
      else out[#out + 1] = c; pos = pos + 1 end
    end
  end
  function val()
    ws()
    local c = s:sub(pos, pos)
    if c == "{" then
      local t = {}
      pos = pos + 1; ws()
      if s:sub(pos, pos) == "}" then pos = pos + 1; return t end
      while true do
        ws(); local k = str(); ws(); pos = pos + 1 -- ':'
        t[k] = val(); ws()
        local d = s:sub(pos, pos); pos = pos + 1
        if d == "}" then return t end
      end
    elseif c == "[" then
      local t = setmetatable({}, ARRAY)
      pos = pos + 1; ws()
      if s:sub(pos, pos) == "]" then pos = pos + 1; return t end
      while true do
        t[#t + 1] = val(); ws()
        local d = s:sub(pos, pos); pos = pos + 1
        if d == "]" then return t end
      end
    elseif c == '"' then return str()
    elseif s:sub(pos, pos + 3) == "true" then pos = pos + 4; return true
    elseif s:sub(pos, pos + 4) == "false" then pos = pos + 5; return false
    elseif s:sub(pos, pos + 3) == "null" then pos = pos + 4; return NULL
    else
      local num = s:match("^-?%d+%.?%d*[eE]?[-+]?%d*", pos)
      pos = pos + #num
      return math.tointeger(tonumber(num)) or tonumber(num)
    end
  end
  return val()
end

local function read(path)
  local f = assert(io.open(root .. "/" .. path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

local function copy(v)
  if type(v) ~= "table" or v == NULL then return v end
  local out = {}
  for k, x in pairs(v) do out[k] = copy(x) end
  return setmetatable(out, getmetatable(v))
end

local function is_array(t)
  if type(t) ~= "table" or t == NULL then return false end
  if is_marked_array(t) then return true end
  local n = #t
  if n == 0 then return false end
  local c = 0
  for _ in pairs(t) do c = c + 1 end
  return c == n
end

local function is_null(v) return v == NULL or v == drift.null end

-- RFC 7386, plus the strategic list form :patch() emits for lists of objects keyed by
-- `key_of(list)`: element patches merged by key, {"$patch": "delete"} removes.
local function keyed(list, key)
  if not is_array(list) then return false end
  for _, el in ipairs(list) do
    if type(el) ~= "table" or is_array(el) or el[key] == nil then return false end
  end
  return true
end

local function apply(target, patch, strategic)
  if type(patch) ~= "table" or is_null(patch) then return copy(patch) end
  if is_array(patch) then
    if strategic and keyed(patch, "name") and (target == nil or keyed(target, "name") or (type(target) == "table" and next(target) == nil)) then
      local out = {}
      for i, el in ipairs(target or {}) do out[i] = copy(el) end
      for _, pe in ipairs(patch) do
        local idx
        for i, el in ipairs(out) do if el.name == pe.name then idx = i end end
        if pe["$patch"] == "delete" then
          if idx then table.remove(out, idx) end
        elseif idx then out[idx] = apply(out[idx], pe, strategic)
        else out[#out + 1] = apply(nil, pe, strategic) end
      end
      return out
    end
    return copy(patch)
  end
  local out = {}
  if type(target) == "table" and not is_array(target) and not is_null(target) then
    for k, v in pairs(target) do out[k] = copy(v) end
  end
  for k, v in pairs(patch) do
    if is_null(v) then out[k] = nil else out[k] = apply(out[k], v, strategic) end
  end
  return out
end

-- Deterministic random documents.
local rng_state = 20260117
local function rand(n) -- 1..n, an LCG so the sequence is the same on every platform
  rng_state = (rng_state * 1103515245 + 12345) % 2147483648
  return rng_state % n + 1
end

local KEYS = { "alpha", "beta", "gamma", "delta", "eps", "zeta", "eta", "theta", "my.key", "a[b]", "with space" }
local function gen_scalar()
  local r = rand(6)
  if r == 1 then return rand(1000) end
  if r == 2 then return "s" .. rand(50) end
  if r == 3 then return rand(2) == 1 end
  if r == 4 then return rand(100) / 4 end
  if r == 5 then return "v-" .. rand(9) end
  return "x"
end

local function gen(depth)
  local r = rand(depth > 4 and 2 or 6)
  if r <= 2 then return gen_scalar() end
  if r <= 4 then
    local t = {}
    for _ = 1, rand(5) do t[KEYS[rand(#KEYS)]] = gen(depth + 1) end
    return t
  end
  if r == 5 then
    local t = {}
    for i = 1, rand(4) do t[i] = gen_scalar() end
    return t
  end
  local t, used = {}, {}
  for _ = 1, rand(4) do
    local name = "n" .. rand(8)
    if not used[name] then
      used[name] = true
      local el = gen(depth + 2)
      if type(el) ~= "table" or is_array(el) then el = { value = el } end
      el.name = name
      t[#t + 1] = el
    end
  end
  return t
end

-- A random edit somewhere in v (returns the edited copy).
local function mutate(v, depth)
  depth = depth or 0
  if type(v) ~= "table" or depth > 6 or rand(5) == 1 then return gen(depth + 3) end
  local out = copy(v)
  if is_array(out) then
    local r = rand(4)
    if r == 1 and #out > 0 then table.remove(out, rand(#out))
    elseif r == 2 and #out > 1 then local i, j = rand(#out), rand(#out); out[i], out[j] = out[j], out[i]
    elseif #out > 0 then local i = rand(#out); local m = mutate(out[i], depth + 1)
      if type(out[i]) == "table" and out[i].name then
        if type(m) ~= "table" or is_array(m) then m = { value = m } end
        m.name = out[i].name
      end
      out[i] = m
    end
    return out
  end
  local keys = {}
  for k in pairs(out) do keys[#keys + 1] = k end
  table.sort(keys)
  local r = rand(3)
  if r == 1 or #keys == 0 then out[KEYS[rand(#KEYS)]] = gen(depth + 1)
  elseif r == 2 then out[keys[rand(#keys)]] = nil
  else local k = keys[rand(#keys)]; out[k] = mutate(out[k], depth + 1) end
  return out
end

-- The same document rebuilt with keys inserted in a shuffled order.
local function shuffled(v)
  if type(v) ~= "table" then return v end
  if is_array(v) then
    local out = {}
    for i, x in ipairs(v) do out[i] = shuffled(x) end
    return out
  end
  local keys = {}
  for k in pairs(v) do keys[#keys + 1] = k end
  table.sort(keys)
  for i = #keys, 2, -1 do local j = rand(i); keys[i], keys[j] = keys[j], keys[i] end
  local out = {}
  for _, k in ipairs(keys) do out[k] = shuffled(v[k]) end
  return out
end

local function summary(d) return d:summary() end

---------------------------------------------------------------------------- properties

local N = 1500

test("compare(x, x) and compare(x, copy(x)) are empty", function()
  for i = 1, N do
    local x = gen(0)
    local d = drift.compare(x, x)
    eq(#d, 0, "self " .. i); eq(d.exists, false, "exists")
    d = drift.compare(copy(x), x)
    eq(#d, 0, "copy " .. i .. ": " .. d:summary())
  end
end)

test("applying :patch() to actual leaves no drift (strategic and merge, with only)", function()
  local items, ops = 0, {}
  for i = 1, N do
    local expected = { root = gen(0), list = gen(1) }
    local actual = mutate(mutate(expected))
    for _, only in ipairs({ false, true }) do
      local d = drift.compare(actual, expected, { only = only })
      items = items + #d
      for _, it in ipairs(d) do ops[it.op] = (ops[it.op] or 0) + 1 end
      for _, style in ipairs({ "strategic", "merge" }) do
        local patched = apply(actual, d:patch(style), style == "strategic")
        local again = drift.compare(patched, expected, { only = only })
        if #again > 0 then
          error(string.format("case %d (%s, only=%s): drift after patch:\n%s\nfirst:\n%s", i, style,
            tostring(only), again:summary(), d:summary()))
        end
      end
    end
  end
  -- the generator really exercises every kind of item
  assert(items > N and ops.changed and ops.missing and ops.unexpected, "too little drift generated")
end)

test("key order never matters", function()
  for i = 1, N do
    local e = gen(0)
    local a = mutate(e)
    local d = drift.compare(a, e)
    eq(summary(drift.compare(shuffled(a), shuffled(e))), summary(d), "case " .. i)
    for _, it in ipairs(d) do -- every path reads back as a pattern matching just that item
      if it.path ~= "" then
        local again = drift.compare(a, e, { ignore = { "." .. it.path } })
        eq(#again, #d - 1, "ignore " .. it.path)
      end
    end
  end
end)

test("items are sorted by path and deterministic", function()
  for _ = 1, 100 do
    local e = { a = gen(0), b = gen(0), c = gen(0) }
    local a = mutate(mutate(mutate(e)))
    local d = drift.compare(a, e)
    eq(d:summary(), drift.compare(a, e):summary(), "repeat")
  end
  local d = drift.compare({ args = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12 } }, { args = { 0, 2, 3, 4, 5, 6, 7, 8, 9, 10, 0, 12 } })
  eq(d[1].path, "args[0]"); eq(d[2].path, "args[10]", "numeric, not text, order")
end)

test("deep nesting (depth 100)", function()
  local function chain(n, leaf)
    local t = leaf
    for i = n, 1, -1 do t = { ["k" .. i] = t } end
    return t
  end
  local d = drift.compare(chain(100, 1), chain(100, 2))
  eq(#d, 1)
  local parts = {}
  for i = 1, 100 do parts[i] = "k" .. i end
  eq(d[1].path, table.concat(parts, "."))
  eq(#drift.compare(chain(100, { x = 1 }), chain(100, { x = 1 })), 0)
  local patched = apply(chain(100, 1), d:patch())
  eq(#drift.compare(patched, chain(100, 2)), 0, "patched")
end)

test("lists of objects match by key regardless of order", function()
  local e = { spec = { containers = { { name = "app", image = "a:1" }, { name = "side", image = "s:1" } } } }
  local a = { spec = { containers = { { name = "side", image = "s:1" }, { name = "app", image = "a:1" } } } }
  eq(#drift.compare(a, e), 0)
  a.spec.containers[2].image = "a:2"
  local d = drift.compare(a, e)
  eq(#d, 1); eq(d[1].path, "spec.containers[name=app].image"); eq(d[1].op, "changed")
  -- opts.keys names another key; numbers and numeric strings meet as keys
  local pe = { spec = { ports = { { containerPort = 80, protocol = "TCP" }, { containerPort = 443, protocol = "TCP" } } } }
  local pa = { spec = { ports = { { containerPort = "443", protocol = "TCP" }, { containerPort = 80, protocol = "UDP" } } } }
  d = drift.compare(pa, pe, { keys = { ["spec.ports"] = "containerPort" } })
  eq(#d, 1); eq(d[1].path, "spec.ports[containerPort=80].protocol")
  -- ports are keyed by containerPort by default too
  eq(drift.compare(pa, pe)[1].path, "spec.ports[containerPort=80].protocol")
  -- keys = false forces positions
  d = drift.compare(a, e, { keys = { ["spec.containers"] = false } })
  eq(d[1].path, "spec.containers[0].image")
  -- missing and unexpected items
  d = drift.compare({ l = { { name = "x" }, { name = "y" } } }, { l = { { name = "y" }, { name = "z", v = 1 } } })
  eq(d:summary(), 'l[name=x] expected absent, actual {"name":"x"} (warning)\n' ..
    'l[name=z] expected {"name":"z","v":1}, actual absent (warning)')
  eq(d[1].op, "unexpected"); eq(d[2].op, "missing")
  local sp = d:patch()
  eq(#sp.l, 2); eq(sp.l[1].name, "x"); eq(sp.l[1]["$patch"], "delete"); eq(sp.l[2].name, "z")
  local mp = d:patch("merge")
  eq(#mp.l, 2); eq(mp.l[1].name, "y"); eq(mp.l[2].name, "z"); eq(mp.l[2].v, 1)
end)

test("coercion of numbers and numeric strings", function()
  eq(#drift.compare({ n = "500" }, { n = 500 }), 0)
  eq(#drift.compare({ n = "1.0" }, { n = 1 }), 0)
  eq(#drift.compare({ n = 1.0 }, { n = 1 }), 0)
  eq(#drift.compare({ b = "true" }, { b = true }), 0)
  eq(#drift.compare({ n = "0x1F" }, { n = 31 }), 1, "hex is not numeric text")
  eq(#drift.compare({ n = " 5" }, { n = 5 }), 1, "blanks are not numeric text")
  eq(#drift.compare({ n = "abc" }, { n = 1 }), 1)
  local d = drift.compare({ n = "500" }, { n = 500 }, { coerce = false })
  eq(#d, 1); eq(d:summary(), 'n expected 500, actual "500" (warning)')
  -- two strings compare as text: "1.10" and "1.1" are different versions
  eq(#drift.compare({ n = "1.10" }, { n = "1.1" }), 1, "two numeric strings")
end)

test("ignore and critical wildcards", function()
  local e = { metadata = { annotations = { a = "1", b = "2" }, labels = { x = "1" } }, spec = { replicas = 3 } }
  local a = { metadata = { annotations = { a = "9", c = "3" }, labels = { x = "2" } }, spec = { replicas = 2 } }
  local d = drift.compare(a, e, { ignore = { "metadata.annotations.*" } })
  eq(d:summary(), "metadata.labels.x expected 1, actual 2 (warning)\nspec.replicas expected 3, actual 2 (warning)")
  d = drift.compare(a, e, { ignore = { "metadata" }, critical = { "spec.*" } })
  eq(d:summary(), "spec.replicas expected 3, actual 2 (critical)")
  d = drift.compare(a, e, { ignore = { "**.annotations" }, critical = { "**.x" } })
  eq(d[1].severity, "critical"); eq(d[2].severity, "warning")
  -- ** at depth, resourceVersion anywhere
  d = drift.compare({ x = { y = { resourceVersion = "1", v = 1 } } }, { x = { y = { resourceVersion = "2", v = 1 } } },
    { ignore = { "**.resourceVersion" } })
  eq(#d, 0)
  -- [*] any list item, keyed and positional
  local ce = { spec = { containers = { { name = "app", image = "a:1", tty = true } } }, args = { "a", "b" } }
  local ca = { spec = { containers = { { name = "app", image = "a:2", tty = false } } }, args = { "a", "c" } }
  d = drift.compare(ca, ce, { critical = { "spec.containers[*].image", "args[*]" } })
  eq(d:summary(), "args[1] expected b, actual c (critical)\n" ..
    "spec.containers[name=app].image expected a:1, actual a:2 (critical)\n" ..
    "spec.containers[name=app].tty expected true, actual false (warning)")
  d = drift.compare(ca, ce, { ignore = { "spec.containers[name=app].tty", "args[1]" } })
  eq(d:summary(), "spec.containers[name=app].image expected a:1, actual a:2 (warning)")
  -- a critical name inside a missing subtree makes the subtree item critical
  d = drift.compare({}, { db = { pool = { max_connections = 500 } } }, { critical = { "max_connections" } })
  eq(d[1].path, "db"); eq(d[1].severity, "critical")
  d = drift.compare({}, { db = { pool = { size = 5 } } }, { critical = { "max_connections" } })
  eq(d[1].severity, "warning")
  -- glob inside a key
  -- a leading "." anchors a one-key pattern at the root
  d = drift.compare({ x = 1, sub = { x = 1 } }, { x = 2, sub = { x = 2 } }, { ignore = { ".x" } })
  eq(d:summary(), "sub.x expected 2, actual 1 (warning)")
  d = drift.compare({ x = 1, sub = { x = 1 } }, { x = 2, sub = { x = 2 } }, { ignore = { "x" } })
  eq(#d, 0)
  d = drift.compare({ a = { x_1 = 1, y = 1 } }, { a = { x_1 = 2, y = 2 } }, { ignore = { "a.x_*" } })
  eq(d:summary(), "a.y expected 2, actual 1 (warning)")
  -- ignored members are left out of an item's value and of the patch
  d = drift.compare({}, { meta = { resourceVersion = "5", name = "n" } }, { ignore = { "**.resourceVersion" } })
  eq(d[1].expected.resourceVersion, nil); eq(d:patch().meta.resourceVersion, nil)
end)

test("path quoting", function()
  local d = drift.compare({ data = { ["my.key"] = "1", ["a[b]"] = 1, ['q"'] = 1, plain = 1, [""] = 1 } },
    { data = { ["my.key"] = "2", ["a[b]"] = 2, ['q"'] = 2, plain = 2, [""] = 2 } })
  local paths = {}
  for i, it in ipairs(d) do paths[i] = it.path end
  eq(table.concat(paths, " "), 'data[""] data["a[b]"] data["my.key"] data.plain data["q\\""]')
  d = drift.compare({ l = { { name = "my app", v = 1 }, { name = "x.y", v = 1 } } }, { l = { { name = "my app", v = 2 }, { name = "x.y", v = 2 } } })
  eq(d[1].path, 'l[name="my app"].v'); eq(d[2].path, "l[name=x.y].v")
  d = drift.compare({ ["my.key"] = { a = 1 } }, { ["my.key"] = { a = 2 } })
  eq(d[1].path, '["my.key"].a')
  -- patterns use the same syntax
  d = drift.compare({ data = { ["my.key"] = "1", other = 1 } }, { data = { ["my.key"] = "2", other = 2 } },
    { critical = { 'data["my.key"]' } })
  eq(d[1].severity, "critical"); eq(d[2].severity, "warning")
  -- paths parse back to the same segments
  local segs = drift.parse_path('spec.containers[name="my app"].env[2]["a.b"]')
  eq(#segs, 6); eq(segs[3].t, "keyed"); eq(segs[3].v, "my app"); eq(segs[5].v, 2); eq(segs[6].v, "a.b")
end)

test("only: compare the fields expected has", function()
  local a = { data = { max_connections = "250", extra = "x" }, metadata = { name = "n" } }
  local e = { data = { max_connections = 500 } }
  local d = drift.compare(a, e, { only = true })
  eq(d:summary(), "data.max_connections expected 500, actual 250 (warning)")
  d = drift.compare(a, e)
  eq(#d, 3)
  -- keyed lists: extra actual elements are not drift under only
  d = drift.compare({ l = { { name = "a", v = 1 }, { name = "b" } } }, { l = { { name = "a", v = 2 } } }, { only = true })
  eq(d:summary(), "l[name=a].v expected 2, actual 1 (warning)")
end)

test("null and absent are the same for object members", function()
  drift.configure { null = NULL, is_array = is_marked_array }
  eq(#drift.compare({ a = NULL }, {}), 0)
  eq(#drift.compare({}, { a = NULL }), 0)
  local d = drift.compare({ a = 1 }, { a = NULL })
  eq(d[1].op, "unexpected"); eq(d:patch().a, NULL)
  -- empty list vs empty object, marked arrays
  eq(#drift.compare(setmetatable({}, ARRAY), {}), 0)
  eq(#drift.compare({ l = setmetatable({}, ARRAY) }, { l = setmetatable({}, ARRAY) }), 0)
  d = drift.compare({ l = setmetatable({}, ARRAY) }, { l = { 1 } })
  eq(d[1].path, "l[0]"); eq(d[1].op, "missing")
  local r = d:report()
  eq(r[1].field, "l[0]"); eq(r[1].actual, NULL); eq(r[1].expected, 1); eq(r[1].severity, "warning")
  drift.configure {}
end)

test("Kubernetes objects ignore server-set fields by default", function()
  drift.configure { null = NULL, is_array = is_marked_array }
  local live = json_decode(read("src/families/drift/tests/k8s/live-configmap.json"))
  local want = copy(live)
  want.metadata.resourceVersion, want.metadata.uid, want.metadata.managedFields = "1", "other", nil
  want.metadata.creationTimestamp = nil
  want.metadata.annotations = nil
  want.data.max_connections = "500"
  local d = drift.compare(live, want)
  eq(d:summary(), "data.max_connections expected 500, actual 250 (warning)")
  eq(#drift.compare(live, want, { k8s = false }) > 1, true, "k8s = false compares everything")
  -- the live Deployment against its manifest (decoded by hand from manifests.yaml)
  local dep = json_decode(read("src/families/drift/tests/k8s/live-deployment.json"))
  local e = copy(dep)
  e.spec.replicas = 3
  e.metadata.annotations = nil
  local c = e.spec.template.spec.containers
  c[2].image = "registry.example.com/pgbouncer:1.22.1"
  c[2].env = setmetatable({ c[2].env[3], { name = "DEFAULT_POOL_SIZE", value = "50" } }, ARRAY)
  d = drift.compare(dep, e, { critical = { "**.image" } })
  eq(d:summary(), table.concat({
    'metadata.annotations expected absent, actual {"deployment.kubernetes.io/revision":"7"} (warning)',
    "spec.replicas expected 3, actual 2 (warning)",
    "spec.template.spec.containers[name=pgbouncer].env[name=DEBUG] expected absent, actual {\"name\":\"DEBUG\",\"value\":\"1\"} (warning)",
    "spec.template.spec.containers[name=pgbouncer].env[name=DEFAULT_POOL_SIZE].value expected 50, actual 20 (warning)",
    "spec.template.spec.containers[name=pgbouncer].image expected registry.example.com/pgbouncer:1.22.1, actual registry.example.com/pgbouncer:1.21.0 (critical)",
  }, "\n"))
  local p = d:patch()
  eq(p.status, nil)
  local pc = p.spec.template.spec.containers
  eq(#pc, 1); eq(pc[1].name, "pgbouncer"); eq(#pc[1].env, 2)
  eq(pc[1].env[1].name, "DEBUG"); eq(pc[1].env[1]["$patch"], "delete")
  eq(pc[1].env[2].name, "DEFAULT_POOL_SIZE"); eq(pc[1].env[2].value, "50")
  eq(#drift.compare(apply(dep, p, true), e), 0, "strategic patch applied")
  eq(#drift.compare(apply(dep, d:patch("merge"), false), e), 0, "merge patch applied")
  drift.configure {}
end)

---------------------------------------------------------------------------- terraform

local state = json_decode(read("src/families/drift/tests/tf/terraform.tfstate"))
local show = json_decode(read("src/families/drift/tests/tf/show.json"))

test("terraform addresses over the real state and show -json files", function()
  iac.set_reader { null = NULL }
  for _, doc in ipairs({ state, show }) do
    local v = iac.find_terraform(doc, "terraform_data.db_pool")
    eq(v.input.data.max_connections, 500); eq(v.output.data.idle_timeout, "30s")
    eq(iac.find_terraform(doc, "terraform_data.replica[2]").input.name, "db-replica-2")
    v = iac.find_terraform(doc, 'module.tenant["prod-tenant-7"].terraform_data.db_pool')
    eq(v.input.metadata.namespace, "prod-tenant-7"); eq(v.input.data.max_connections, 500)
    v = iac.find_terraform(doc, 'module.tenant["staging-tenant-2"].terraform_data.db_pool')
    eq(v.input.data.max_connections, 100)
    v = iac.find_terraform(doc, 'module.tenant["prod-tenant-7"].terraform_data.worker["batch"]')
    eq(v.input.role, "batch")
    v = iac.find_terraform(doc, 'module.tenant["staging-tenant-2"].module.quota.terraform_data.limits[0]')
    eq(v.input.memory, "8Gi"); eq(v.input.tenant, "staging-tenant-2")
  end
  -- state and show agree on every attribute of the seed's resource
  local a = iac.find_terraform(state, 'module.tenant["prod-tenant-7"].terraform_data.db_pool')
  local b = iac.find_terraform(show, 'module.tenant["prod-tenant-7"].terraform_data.db_pool')
  eq(#drift.compare(a, b), 0, "state vs show")
end)

test("terraform: clear errors listing near matches", function()
  iac.set_reader { null = NULL }
  local ok, e = pcall(iac.find_terraform, state, "kubernetes_config_map.db_pool", "infra/terraform.tfstate")
  eq(ok, false); eq(e.code, "not_found")
  eq(e.message:match("^[^;]*"), "iac.terraform: infra/terraform.tfstate: no resource kubernetes_config_map.db_pool")
  assert(e.message:find("near: terraform_data.db_pool", 1, true), e.message)
  ok, e = pcall(iac.find_terraform, show, "terraform_data.replica")
  eq(ok, false); assert(e.message:find("terraform_data.replica[0]", 1, true), e.message)
  ok, e = pcall(iac.find_terraform, state, 'module.tenant["nope"].terraform_data.db_pool')
  assert(e.message:find('module.tenant["prod-tenant-7"].terraform_data.db_pool', 1, true), e.message)
  ok, e = pcall(iac.find_terraform, state, "bad address")
  eq(e.code, "invalid")
  ok, e = pcall(iac.find_terraform, { foo = 1 }, "a.b")
  assert(e.message:find("not a Terraform state", 1, true))
  local ad = iac.parse_address('module.a["x.y"].module.b[3].data.aws_ami.latest["k"]')
  eq(#ad.modules, 2); eq(ad.modules[1].key, "x.y"); eq(ad.modules[2].key, 3)
  eq(ad.mode, "data"); eq(ad.type, "aws_ami"); eq(ad.name, "latest"); eq(ad.key, "k")
  -- data sources resolve in a state document too
  local doc = { version = 4, resources = { { mode = "data", type = "x", name = "y",
    instances = { { attributes = { id = "d1" } } } } } }
  eq(iac.find_terraform(doc, "data.x.y").id, "d1")
  ok = pcall(iac.find_terraform, doc, "x.y")
  eq(ok, false, "managed x.y is not data.x.y")
end)

test("iac.terraform / manifest / yaml through a stubbed reader", function()
  local docs = {
    { apiVersion = "v1", kind = "ConfigMap", metadata = { name = "db-pool-config", namespace = "prod-tenant-7" },
      data = { max_connections = "500" } },
    { apiVersion = "v1", kind = "ConfigMap", metadata = { name = "db-pool-config", namespace = "staging" },
      data = { max_connections = "100" } },
    { apiVersion = "apps/v1", kind = "Deployment", metadata = { name = "db-pool" } },
    NULL,
  }
  local seen
  iac.set_reader {
    null = NULL,
    json = function(p) seen = p; return p:find("show") and show or state end,
    yaml = function(p) seen = p; return p == "one.yaml" and { docs[3] } or docs end,
  }
  eq(iac.terraform("infra/terraform.tfstate", "terraform_data.db_pool").input.data.max_connections, 500)
  eq(seen, "infra/terraform.tfstate")
  eq(iac.manifest("m.yaml", "configmap", "db-pool-config", "staging").data.max_connections, "100")
  eq(iac.manifest("m.yaml", "DEPLOYMENT", "db-pool").kind, "Deployment")
  local ok, e = pcall(iac.manifest, "m.yaml", "ConfigMap", "db-pool-config")
  eq(ok, false); assert(e.message:find("several namespaces", 1, true), e.message)
  ok, e = pcall(iac.manifest, "m.yaml", "Secret", "x")
  eq(e.code, "not_found"); assert(e.message:find("ConfigMap/db-pool-config (prod-tenant-7)", 1, true), e.message)
  eq(iac.yaml("one.yaml").kind, "Deployment")
  eq(#iac.yaml("m.yaml"), 3, "the empty document is left out")
  iac.set_reader(nil)
end)

---------------------------------------------------------------------------- the seed case

test("seed: running config vs Terraform spec, db.max_connections 500 vs 250, critical", function()
  drift.configure { null = NULL, is_array = is_marked_array }
  iac.set_reader { null = NULL }
  local live = json_decode(read("src/families/drift/tests/k8s/live-configmap.json"))
  local spec = iac.find_terraform(state, 'module.tenant["prod-tenant-7"].terraform_data.db_pool')
  -- the DESIGN.md runbook: data against data
  local d = drift.compare(live.data, spec.input.data, { critical = { "max_connections" } })
  eq(d:summary(), "max_connections expected 500, actual 250 (critical)")
  -- named the way the incident reads: prefix "db"
  d = drift.compare(live.data, spec.input.data, { critical = { "max_connections" }, prefix = "db" })
  eq(#d, 1)
  eq(d:summary(), "db.max_connections expected 500, actual 250 (critical)")
  eq(d[1].path, "db.max_connections"); eq(d[1].op, "changed")
  eq(d[1].expected, 500); eq(d[1].actual, "250"); eq(d[1].severity, "critical")
  -- a prefixed pattern works too
  d = drift.compare(live.data, spec.input.data, { critical = { "db.max_connections" }, prefix = "db" })
  eq(d[1].severity, "critical")
  -- the whole ConfigMap against {data = spec}: data.max_connections
  d = drift.compare(live, { data = spec.input.data }, { critical = { "data.max_connections" }, only = true })
  eq(d:summary(), "data.max_connections expected 500, actual 250 (critical)")
  local r = d:report()
  eq(#r, 1); eq(r[1].field, "data.max_connections"); eq(r[1].expected, 500); eq(r[1].actual, "250")
  eq(r[1].severity, "critical")
  local p = d:patch()
  eq(p.data.max_connections, 500)
  local n = 0
  for _ in pairs(p) do n = n + 1 end
  eq(n, 1, "the patch touches data only")
  drift.configure {}
end)

test("roots: nil, scalars and lists", function()
  local d = drift.compare(nil, { a = 1 })
  eq(d:summary(), '(root) expected {"a":1}, actual absent (warning)'); eq(d[1].op, "missing"); eq(d[1].path, "")
  eq(d:patch().a, 1)
  eq(drift.compare(1, nil)[1].op, "unexpected")
  eq(drift.compare(1, 2):summary(), "(root) expected 2, actual 1 (warning)")
  d = drift.compare({ { name = "a", v = 1 } }, { { name = "a", v = 2 } })
  eq(d[1].path, "[name=a].v")
  eq(#d:patch(), 1); eq(d:patch()[1].v, 2)
  d = drift.compare({ 1, 2 }, { 1, 3 })
  eq(d[1].path, "[1]"); eq(d:patch()[2], 3)
end)

test("errors: bad options and patterns", function()
  local ok, e = pcall(drift.compare, {}, {}, { critical = { "a..b" } })
  eq(ok, false); assert(tostring(e):find("bad path", 1, true), tostring(e))
  ok = pcall(drift.compare, {}, {}, 5)
  eq(ok, false)
  ok = pcall(drift.compare, {}, {}, { keys = { a = 5 } })
  eq(ok, false)
end)

io.write(string.format("%d tests, %d failed\n", count, failures))
os.exit(failures == 0 and 0 or 1)
