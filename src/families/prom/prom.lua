-- The prom family: prom.query, prom.range, prom.tenants and prom.watch over the Prometheus
-- HTTP API, and wait_until. Every query is rewritten in C (rbl.prom.c, promql.c) so that each
-- selector carries the call's tenant matcher before it is sent; the audit records the query as
-- sent. See src/families/prom/prom.md.
local host = require "rbl.host"
local prim = require "rbl.prim"
local http = require "rbl.http"
local json = require "rbl.json"
local promc = require "rbl.prom.c"

local M = {}
local type, tostring, tonumber, pcall, error, ipairs, pairs, rawget = type, tostring, tonumber, pcall,
  error, ipairs, pairs, rawget
local fmt, concat = string.format, table.concat

local DEFAULT_URL = "http://127.0.0.1:9090"
local DEFAULT_LABEL = "tenant"
local DEFAULT_TIMEOUT = 10        -- seconds per HTTP request
local MAX_RESPONSE = 64 * 1024 * 1024
local MAX_SAMPLES = 1000          -- samples a watch keeps (the most recent)

local pending = setmetatable({}, { __mode = "k" }) -- call -> the query as it will be sent

local function cfg()
  local c = host.config()
  return type(c) == "table" and type(c.prom) == "table" and c.prom or {}
end

local function label_name()
  local l = cfg().tenant_label
  if l == nil then return DEFAULT_LABEL end
  if type(l) ~= "string" or not l:match("^[%a_][%w_]*$") then
    host.raise("invalid", "prom: config prom.tenant_label must be a label name ([a-zA-Z_][a-zA-Z0-9_]*)")
  end
  return l
end

local function base_url()
  local u = cfg().url
  if u == nil then u = DEFAULT_URL end
  if type(u) ~= "string" or not (u:match("^https?://[^/%s]+") and not u:find("[%s%?#]")) then
    host.raise("invalid", fmt("prom: config prom.url must be an http:// or https:// URL, got %s", tostring(u)))
  end
  return (u:gsub("/+$", ""))
end

local function request_timeout()
  local t = cfg().timeout
  if t == nil then return DEFAULT_TIMEOUT end
  if type(t) ~= "number" or t <= 0 then host.raise("invalid", "prom: config prom.timeout must be a positive number") end
  return t
end

local function short(q)
  q = q:gsub("%s+", " ")
  return #q > 120 and (q:sub(1, 117) .. "...") or q
end

-- ---- auth ----

local function read_file(path, what)
  if type(path) ~= "string" then host.raise("invalid", fmt("prom: config prom.%s must be a path", what)) end
  local f, err = io.open(path, "rb")
  if not f then host.raise("invalid", fmt("prom: cannot read prom.%s: %s", what, tostring(err))) end
  local v = f:read("a") or ""
  f:close()
  return (v:gsub("[\r\n]+$", ""))
end

-- A secret by name, as secret() resolves it: the config's secrets file, else the environment.
local function secret_value(name, what)
  if type(name) ~= "string" or not name:match("^[%w_]+$") then
    host.raise("invalid", fmt("prom: config prom.%s must name a secret (letters, digits, _)", what))
  end
  local files = type(host.config()) == "table" and host.config().secrets or nil
  if type(files) == "table" and files[name] then return read_file(files[name], what) end
  local v = os.getenv(name)
  if v == nil then host.raise("not_found", fmt("prom: secret %s (prom.%s) is not set", name, what)) end
  return v
end

local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local function base64(s)
  local out = {}
  for i = 1, #s, 3 do
    local a, b, c = s:byte(i, i + 2)
    local n = a * 65536 + (b or 0) * 256 + (c or 0)
    local q = { (n >> 18) & 63, (n >> 12) & 63, (n >> 6) & 63, n & 63 }
    out[#out + 1] = B64:sub(q[1] + 1, q[1] + 1) .. B64:sub(q[2] + 1, q[2] + 1) ..
      (b and B64:sub(q[3] + 1, q[3] + 1) or "=") .. (c and B64:sub(q[4] + 1, q[4] + 1) or "=")
  end
  return concat(out)
end

-- Read on every request, so a rotated token or password is picked up within the run.
local function auth_headers()
  local c = cfg()
  local h = { "Accept: application/json" }
  local token
  if c.token_file ~= nil then token = read_file(c.token_file, "token_file")
  elseif c.token ~= nil then token = secret_value(c.token, "token") end
  if token then
    if token == "" or token:find("[%c]") then host.raise("invalid", "prom: the bearer token is empty or has control characters") end
    h[#h + 1] = "Authorization: Bearer " .. token
  elseif c.username ~= nil then
    if type(c.username) ~= "string" or c.username:find("[:%c]") then
      host.raise("invalid", "prom: config prom.username must be a string without ':' or control characters")
    end
    local pw = ""
    if c.password_file ~= nil then pw = read_file(c.password_file, "password_file")
    elseif c.password ~= nil then pw = secret_value(c.password, "password") end
    if pw:find("[\r\n]") then host.raise("invalid", "prom: the password has a line break") end
    h[#h + 1] = "Authorization: Basic " .. base64(c.username .. ":" .. pw)
  end
  return h
end

local function tls_opts(base)
  if base:sub(1, 8) ~= "https://" then return nil end
  local c = cfg()
  return { ca_file = c.ca_file, cert_file = c.cert_file, key_file = c.key_file,
           insecure = c.insecure_skip_verify == true or nil }
end

-- ---- the HTTP API ----

local function urlencode(s)
  return (s:gsub("[^%w%-%._~]", function(ch) return fmt("%%%02X", ch:byte()) end))
end

local function decode_body(res)
  local ok, v = pcall(json.decode, res.body or "")
  if ok and type(v) == "table" then return v end
  return nil
end

-- GET base..path?params; returns the API's data. Errors keep Prometheus's errorType and error.
local function api_get(call, what, path, params)
  local base = base_url()
  local q = {}
  for _, kv in ipairs(params) do
    if kv[2] ~= nil then q[#q + 1] = kv[1] .. "=" .. urlencode(tostring(kv[2])) end
  end
  local timeout = request_timeout()
  q[#q + 1] = "timeout=" .. urlencode(fmt("%gs", timeout))
  local ok, res = pcall(http.request, call, {
    method = "GET", url = base .. path .. "?" .. concat(q, "&"), headers = auth_headers(),
    tls = tls_opts(base), timeout = timeout + 1, connect_timeout = math.min(timeout, 10),
    max_response = MAX_RESPONSE, retries = 1,
  })
  if not ok then
    if type(res) == "table" and type(res.code) == "string" and res.code ~= "refused" then
      if res.code == "timeout" then
        host.raise("timeout", fmt("%s: Prometheus at %s did not answer within %g s", what, base, timeout))
      end
      host.raise(res.code, fmt("%s: Prometheus at %s: %s", what, base, tostring(res.message)))
    end
    error(res, 0)
  end
  local body = decode_body(res)
  local st = res.status
  if st == 200 and body and body.status == "success" and type(body.data) == "table" then
    return body.data, body.warnings
  end
  local etype = body and type(body.errorType) == "string" and body.errorType or nil
  local emsg = body and type(body.error) == "string" and body.error or nil
  if not emsg then
    local b = (res.body or ""):gsub("%s+$", "")
    emsg = b ~= "" and b:sub(1, 300) or ("HTTP " .. tostring(st))
  end
  local detail = etype and (etype .. ": " .. emsg) or emsg
  local code
  if st == 401 or st == 403 then code = "denied"
  elseif etype == "timeout" then code = "timeout"
  elseif st == 429 or st >= 500 or etype == "unavailable" then code = "unavailable"
  elseif st == 400 or st == 422 or etype == "bad_data" or etype == "execution" then code = "invalid"
  elseif st == 404 then code = "not_found"
  elseif st == 200 then code = "protocol"; detail = "malformed answer: " .. detail
  else code = "failed" end
  host.raise(code, fmt("%s: Prometheus at %s answered HTTP %d: %s", what, base, st, detail))
end

local function sample_value(v)
  if v == "NaN" then return 0 / 0 end
  if v == "+Inf" or v == "Inf" then return math.huge end
  if v == "-Inf" then return -math.huge end
  return tonumber(v)
end

local function labels_of(m)
  local l = {}
  if type(m) == "table" then for k, v in pairs(m) do l[k] = v end end
  return json.object(l)
end

-- data -> list, result type, number of series, number of points
local function convert(what, data)
  local rt, r = data.resultType, data.result
  local out = {}
  if rt == "vector" and type(r) == "table" then
    for i, s in ipairs(r) do
      local v = type(s.value) == "table" and s.value or {}
      out[i] = { labels = labels_of(s.metric), value = sample_value(v[2]), ts = tonumber(v[1]) }
    end
    return json.array(out), rt, #out, #out
  elseif rt == "matrix" and type(r) == "table" then
    local points = 0
    for i, s in ipairs(r) do
      local vals = {}
      for j, p in ipairs(type(s.values) == "table" and s.values or {}) do
        vals[j] = { tonumber(p[1]), sample_value(p[2]) }
      end
      points = points + #vals
      out[i] = { labels = labels_of(s.metric), values = json.array(vals) }
    end
    return json.array(out), rt, #out, points
  elseif (rt == "scalar" or rt == "string") and type(r) == "table" then
    out[1] = { labels = json.object({}), value = rt == "scalar" and sample_value(r[2]) or r[2], ts = tonumber(r[1]) }
    return json.array(out), rt, 1, 1
  end
  host.raise("protocol", fmt("%s: Prometheus answered an unknown result type %s", what, tostring(rt)))
end

-- ---- time arguments ----

local UNITS = { ms = 0.001, s = 1, m = 60, h = 3600, d = 86400, w = 604800, y = 31536000 }

-- "1h30m" -> 5400; numbers pass; nil when not a duration.
local function duration(v)
  if type(v) == "number" then return v end
  if type(v) ~= "string" or v == "" then return nil end
  local total, rest = 0, v
  while rest ~= "" do
    local n, u, r = rest:match("^(%d+%.?%d*)(ms)(.*)$")
    if not n then n, u, r = rest:match("^(%d+%.?%d*)([smhdwy])(.*)$") end
    if not n then return nil end
    total, rest = total + tonumber(n) * UNITS[u], r
  end
  return total
end

-- A time option: unix seconds, an RFC 3339 string, or "-5m" / "5m" (that long ago).
local function time_arg(what, name, v, default)
  if v == nil then return default end
  if type(v) == "number" then return fmt("%.3f", v) end
  if type(v) == "string" then
    if v:match("^%d%d%d%d%-%d%d%-%d%dT[%d:%.]+Z?$") or v:match("^%d%d%d%d%-%d%d%-%d%dT[%d:%.]+[+-]%d%d:%d%d$") then
      return v
    end
    local d = duration(v:gsub("^%-", ""):gsub("%s*ago$", ""))
    if d then return fmt("%.3f", os.time() - d) end
  end
  host.raise("invalid", fmt("%s: %s must be unix seconds, an RFC 3339 time or a duration ago like \"-5m\", got %s",
    what, name, tostring(v)))
end

local function opts_table(what, opts)
  if opts == nil then return {} end
  if type(opts) ~= "table" then host.raise("invalid", what .. ": options must be a table") end
  return opts
end

-- ---- scoping ----

-- The query as it will be sent, scoped to the call's tenant. Refuses (exit 3) a query that
-- reaches another tenant; raises invalid when the query cannot be parsed.
local function scoped(call, what, q)
  if type(q) ~= "string" or q == "" then host.raise("invalid", what .. ": the query must be a non-empty string") end
  if #q > promc.MAX_LEN then host.raise("invalid", fmt("%s: the query is longer than %d bytes", what, promc.MAX_LEN)) end
  if q:find("\0", 1, true) then host.raise("invalid", what .. ": the query contains a NUL byte") end
  local label = label_name()
  local tenant = call:tenant()
  if tenant then
    local out, kind, why = promc.scope(q, label, tenant)
    if out then return out, tenant end
    if kind == "scope" then host.refuse(call, fmt("query %q: %s; not sent", short(q), why)) end
    host.raise("invalid", fmt("%s: cannot scope the query to tenant %s: %s", what, tenant, why))
  end
  if cfg().unscoped == true then return q, nil end
  host.refuse(call, fmt("query %q: the call is bound to no tenant and the config does not set " ..
    "prom.unscoped = true; not sent (use each_tenant, or run with one tenant)", short(q)))
end

local function scope_target(call, what, q)
  local sent, tenant = scoped(call, what, q)
  pending[call] = sent
  return { query = sent, tenant = tenant, endpoint = base_url(), scoped = tenant ~= nil }
end

local function sent_query(call)
  local q = pending[call]
  if not q then error("prom: effect without a scoped query (bug in rbl)", 0) end
  return q
end

-- ---- prom.query / prom.range ----

M.query = prim.define("prom.query", {
  scope = function(call, q, opts)
    local o = opts_table("prom.query", opts)
    time_arg("prom.query", "time", o.time)
    return scope_target(call, "prom.query", q)
  end,
  effect = function(call, q, opts)
    local o = opts_table("prom.query", opts)
    local data, warnings = api_get(call, "prom.query", "/api/v1/query",
      { { "query", sent_query(call) }, { "time", time_arg("prom.query", "time", o.time) } })
    local list, rt, n = convert("prom.query", data)
    return list, { result_type = rt, series = n, warnings = warnings }
  end,
})

local function range_args(o)
  local now = os.time()
  local stop = time_arg("prom.range", "stop", o.stop, fmt("%.3f", now))
  local start = time_arg("prom.range", "start", o.start, nil)
  if not start then start = fmt("%.3f", (tonumber(stop) or now) - 3600) end
  local step = o.step
  if step == nil then
    local a, b = tonumber(start), tonumber(stop)
    step = (a and b and b > a) and math.max(1, math.ceil((b - a) / 250)) or 60
  else
    step = duration(step)
    if not step or step <= 0 then host.raise("invalid", "prom.range: step must be a positive number of seconds or a duration") end
  end
  return start, stop, step
end

M.range = prim.define("prom.range", {
  scope = function(call, q, opts)
    range_args(opts_table("prom.range", opts))
    return scope_target(call, "prom.range", q)
  end,
  effect = function(call, q, opts)
    local start, stop, step = range_args(opts_table("prom.range", opts))
    local data, warnings = api_get(call, "prom.range", "/api/v1/query_range",
      { { "query", sent_query(call) }, { "start", start }, { "end", stop }, { "step", fmt("%g", step) } })
    local list, rt, n, points = convert("prom.range", data)
    return list, { result_type = rt, series = n, points = points, warnings = warnings }
  end,
})

-- ---- prom.tenants ----

local tenant_sets = setmetatable({}, { __mode = "k" })

M.tenants = prim.define("prom.tenants", {
  scope = function(call, q)
    if type(q) ~= "string" or q == "" then host.raise("invalid", "prom.tenants: the query must be a non-empty string") end
    if #q > promc.MAX_LEN then host.raise("invalid", fmt("prom.tenants: the query is longer than %d bytes", promc.MAX_LEN)) end
    local label = label_name()
    local set = {}
    if call:tenant() then set[1] = call:tenant()
    else for i, t in ipairs(host.tenants()) do set[i] = t end end
    tenant_sets[call] = set
    if #set == 0 then return { query = nil, tenants = json.array({}), endpoint = base_url() } end
    local out, kind, why = promc.scope_set(q, label, set)
    if not out then
      if kind == "scope" then host.refuse(call, fmt("query %q: %s; not sent", short(q), why)) end
      host.raise("invalid", fmt("prom.tenants: cannot scope the query to the run's tenants: %s", why))
    end
    pending[call] = out
    return { query = out, tenants = set, endpoint = base_url() }
  end,
  effect = function(call, q)
    local set = tenant_sets[call]
    if #set == 0 then return json.array({}), { tenants = json.array({}) } end
    local data = api_get(call, "prom.tenants", "/api/v1/query", { { "query", sent_query(call) } })
    local list, rt = convert("prom.tenants", data)
    if rt ~= "vector" and rt ~= "matrix" then
      host.raise("invalid", fmt("prom.tenants: the query returned a %s; it must return series that carry the %s label",
        rt, label_name()))
    end
    local label, allowed, found, bare = label_name(), {}, {}, 0
    for _, t in ipairs(set) do allowed[t] = true end
    for _, s in ipairs(list) do
      local t = s.labels[label]
      if t == nil then bare = bare + 1
      elseif allowed[t] then found[t] = true end
    end
    if bare > 0 then
      host.raise("invalid", fmt("prom.tenants: %d result series carry no %s label (an aggregation dropped it? " ..
        "keep it with by (%s))", bare, label, label))
    end
    local out = {}
    for _, t in ipairs(set) do if found[t] then out[#out + 1] = t end end
    table.sort(out)
    return json.array(out), { tenants = json.array(out), series = #list }
  end,
})

-- ---- conditions ----

local OPS = {
  ["<"] = function(a, b) return a < b end, ["<="] = function(a, b) return a <= b end,
  [">"] = function(a, b) return a > b end, [">="] = function(a, b) return a >= b end,
  ["=="] = function(a, b) return a == b end, ["!="] = function(a, b) return a ~= b end,
}

-- until/worse: a function of the number, or a string like "< 200". Returns a predicate and a
-- description for the audit.
local function condition(what, name, c)
  if c == nil then return nil end
  if type(c) == "function" then
    return function(v) return c(v) and true or false end, "<function>"
  end
  if type(c) == "string" then
    local op, num = c:match("^%s*([<>=!]=?)%s*(%S+)%s*$")
    local n = num and tonumber(num)
    if op and OPS[op] and n then
      local f = OPS[op]
      return function(v) return f(v, n) end, op .. " " .. num
    end
  end
  host.raise("invalid", fmt("%s: %s must be a function of the value or a string like \"< 200\" " ..
    "(one of < <= > >= == !=), got %s", what, name, type(c) == "string" and fmt("%q", c) or type(c)))
end

local function num_opt(what, o, name, default, min, max)
  local v = rawget(o, name)
  if v == nil then return default end
  if type(v) ~= "number" or v ~= v or v < min or v > max then
    host.raise("invalid", fmt("%s: %s must be a number of seconds in %g..%g", what, name, min, max))
  end
  return v
end

local function finite(v)
  if type(v) == "number" and v == v and v ~= math.huge and v ~= -math.huge then return v end
  if v == nil then return nil end
  return tostring(v)
end

-- ---- prom.watch ----

-- One number from a watch poll: a scalar or a one-element vector; nil when there is no series.
local function single_value(what, sent, data)
  local list, rt, n = convert(what, data)
  if rt == "matrix" or rt == "string" then
    host.raise("invalid", fmt("%s: the query must return one number (a scalar or a one-element vector), " ..
      "it returned a %s", what, rt))
  end
  if n == 0 then return nil end
  if n > 1 then
    local ls = {}
    for i = 1, math.min(n, 3) do ls[i] = json.encode(list[i].labels) end
    host.raise("invalid", fmt("%s: the query must return one number (a scalar or a one-element vector), " ..
      "it returned %d series: %s%s; aggregate it (e.g. max(...))", what, n, concat(ls, ", "), n > 3 and ", ..." or ""))
  end
  return list[1].value, list[1].ts
end

function M.make_watch(book)
  return function(q, opts)
    local what = "prom.watch"
    if opts ~= nil and type(opts) ~= "table" then host.raise("invalid", what .. ": options must be a table") end
    opts = opts or {}
    local until_f, until_d = condition(what, "until", rawget(opts, "until"))
    if not until_f then host.raise("invalid", what .. ": until is required (a function or a string like \"< 200\")") end
    local worse_f, worse_d = condition(what, "worse", rawget(opts, "worse"))
    local hold = num_opt(what, opts, "hold", 0, 0, 86400)
    local timeout = num_opt(what, opts, "timeout", 300, 0.001, 86400)
    local interval = num_opt(what, opts, "interval", 10, 0.05, 3600)
    local no_data = rawget(opts, "no_data")
    if no_data ~= nil and no_data ~= "wait" and no_data ~= "fail" then
      host.raise("invalid", what .. ": no_data must be \"wait\" or \"fail\"")
    end
    -- which way is worse, for a step's several watches: away from the until condition
    local higher_worse = not (until_d:match("^>") ~= nil)
    local clean = { ["until"] = until_d, worse = worse_d, hold = hold, timeout = timeout, interval = interval,
                    no_data = no_data }
    local p = prim.define(what, {
      scope = function(call, query) return scope_target(call, what, query) end,
      effect = function(call)
        local sent = sent_query(call)
        local t0 = host.now_ms()
        local deadline = t0 + timeout * 1000
        local samples, nsamples, polls, nodata = {}, 0, 0, 0
        local baseline, current, held_since
        local function note()
          if book and book.note_metric then
            book.note_metric(finite(baseline), finite(current), #host.tenants() > 1 and call:tenant() or nil, higher_worse)
          end
        end
        local function state()
          return fmt("baseline %s, current %s, %d polls", tostring(baseline), tostring(current), polls)
        end
        while true do
          local data = api_get(call, what, "/api/v1/query", { { "query", sent } })
          polls = polls + 1
          local v, ts = single_value(what, sent, data)
          local now = host.now_ms()
          if v ~= nil then
            baseline = baseline == nil and v or baseline
            current = v
            nsamples = nsamples + 1
            samples[#samples + 1] = { ts, v }
            if #samples > MAX_SAMPLES then table.remove(samples, 1) end
            note()
            if worse_f and worse_f(v) then
              host.raise("failed", fmt("%s: the worse condition (%s) was met: %s", what, worse_d, state()))
            end
            if until_f(v) then
              held_since = held_since or now
              if now - held_since >= hold * 1000 or host.dry_run() then
                local res = { resolved = true, baseline = baseline, current = current, samples = json.array(samples),
                              polls = polls, held_s = (now - held_since) / 1000, dry_run = host.dry_run() or nil }
                return res, { resolved = true, baseline = finite(baseline), current = finite(current), polls = polls,
                              samples = nsamples, ["until"] = until_d, hold = hold }
              end
            else
              held_since = nil
            end
          else
            held_since = nil
            nodata = nodata + 1
            if no_data == "fail" then host.raise("invalid", fmt("%s: the query returned no series", what)) end
          end
          if host.dry_run() then
            return { resolved = false, dry_run = true, baseline = baseline, current = current,
                     samples = json.array(samples), polls = polls },
                   { resolved = false, dry_run = true, baseline = finite(baseline), current = finite(current) }
          end
          if now >= deadline then
            local held = held_since and fmt("; held for %.1f s of %g s", (now - held_since) / 1000, hold) or ""
            host.raise("timeout", fmt("%s: %s was not met for %g s within %g s (%s%s%s)", what, until_d, hold, timeout,
              state(), nodata > 0 and fmt(", %d polls without data", nodata) or "", held))
          end
          host.sleep(call, math.min(interval, (deadline - now) / 1000))
        end
      end,
    })
    return p(q, clean)
  end
end

-- ---- wait_until ----

local function wait_until(fn, opts)
  local what = "wait_until"
  if type(fn) ~= "function" then host.raise("invalid", what .. ": fn must be a function") end
  if opts ~= nil and type(opts) ~= "table" then host.raise("invalid", what .. ": options must be a table") end
  opts = opts or {}
  local timeout = num_opt(what, opts, "timeout", 60, 0.001, 86400)
  local interval = num_opt(what, opts, "interval", 2, 0.05, 3600)
  local p = prim.define(what, {
    effect = function(call)
      local t0 = host.now_ms()
      local deadline = t0 + timeout * 1000
      local attempts = 0
      while true do
        attempts = attempts + 1
        local v = fn()
        local now = host.now_ms()
        if v then
          return v, { attempts = attempts, waited_ms = math.floor(now - t0 + 0.5) }
        end
        if host.dry_run() then return v, { attempts = attempts, dry_run = true } end
        if now >= deadline then
          host.raise("timeout", fmt("%s: the condition was not met within %g s (%d attempts)", what, timeout, attempts))
        end
        host.sleep(call, math.min(interval, (deadline - now) / 1000))
      end
    end,
  })
  return p({ timeout = timeout, interval = interval })
end

-- The runbook globals this family contributes.
function M.globals(book)
  local function tenants(...)
    local list = M.tenants(...)
    if book and book.note_tenants and type(list) == "table" then book.note_tenants(list) end
    return list
  end
  return { prom = { query = M.query, range = M.range, tenants = tenants, watch = M.make_watch(book) },
           wait_until = wait_until }
end

return M
