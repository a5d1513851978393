-- Kubernetes API primitives: kube.get/list/rollout_restart/scale/can_i, kube_patch and
-- detect_runtime("kubernetes"). Every call resolves its kind through discovery, checks the
-- tenant's namespaces and validates names before a URL exists (see src/families/kube/kube.md).
local host = require "rbl.host"
local prim = require "rbl.prim"
local http = require "rbl.http"
local json = require "rbl.json"
local kubeconfig = require "rbl.kubeconfig"

local M = {}
local type, tostring, pcall, error, ipairs, pairs, select = type, tostring, pcall, error, ipairs, pairs, select
local fmt, concat, sort = string.format, table.concat, table.sort

local DEFAULT_LABEL = "rbl.io/tenant"
local MAX_CONFLICT_RETRIES = 3
local RESTART_ANNOTATION = "kubectl.kubernetes.io/restartedAt"
local PATCH_TYPES = { merge = "application/merge-patch+json",
  strategic = "application/strategic-merge-patch+json", json = "application/json-patch+json" }
local AGG_ACCEPT = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,"
  .. "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json"
-- Subresources that reach into a workload or mint credentials: refused unless the config allows.
local DANGEROUS_SUBS = { exec = true, attach = true, portforward = true, proxy = true, token = true,
  ephemeralcontainers = true, eviction = true, binding = true }
-- Resources whose names follow the API's path-segment rules rather than DNS-1123.
local PATH_SEGMENT_NAMES = { roles = true, clusterroles = true, rolebindings = true, clusterrolebindings = true }

-- Per run: one Lua state per run, so module state is per run.
local state = { conn = nil, disc = nil, ns = {}, warned = false, undone = {} }

-- ---- configuration ----

local function rootcfg()
  local c = host.config()
  return type(c) == "table" and c or {}
end

local function cfg()
  local k = rootcfg().kube
  return type(k) == "table" and k or {}
end

local function label_key()
  local l = rootcfg().labels
  local k = type(l) == "table" and l.kube or nil
  return type(k) == "string" and k ~= "" and k or DEFAULT_LABEL
end

local function allowed_sub(sub)
  if sub == "scale" then return true end
  for _, s in ipairs(type(cfg().allow_subresources) == "table" and cfg().allow_subresources or {}) do
    if s == sub then return true end
  end
  return false
end

local function urlencode(s)
  return (tostring(s):gsub("[^%w%-%._~]", function(ch) return fmt("%%%02X", ch:byte()) end))
end

-- ---- the connection ----

local function conn()
  if state.conn then return state.conn end
  local c = kubeconfig.load(cfg())
  if c.insecure and not state.warned then
    state.warned = true
    host.progress(fmt("rbl: WARNING: TLS verification of %s is off (insecure-skip-tls-verify in context %q)",
      c.server, c.context))
    host.record("warning", { what = "kube: insecure-skip-tls-verify", server = c.server, context = c.context })
  end
  http.bind_endpoint("kube", c.server) -- the gate sends kube requests to this server only
  state.conn = c
  return c
end

-- One HTTP exchange. o: {query, body, ctype, accept, timeout}. Transport failures raise with
-- `what` in front; HTTP statuses are the caller's business.
local function request(call, what, method, path, o)
  o = o or {}
  local c = conn()
  for attempt = 1, 2 do
    local headers, tls = kubeconfig.credentials(c, call)
    headers[#headers + 1] = "Accept: " .. (o.accept or "application/json")
    headers[#headers + 1] = "User-Agent: rbl"
    if o.body then headers[#headers + 1] = "Content-Type: " .. (o.ctype or "application/json") end
    local url = c.server .. path .. ((o.query and o.query ~= "") and ("?" .. o.query) or "")
    local ok, res = pcall(http.request, call, {
      method = method, url = url, headers = headers, body = o.body, tls = tls,
      timeout = o.timeout or tonumber(cfg().timeout) or 30, retries = method == "GET" and 2 or 0,
    })
    if not ok then
      if type(res) == "table" and res.code then
        host.raise(res.code, fmt("%s: %s %s: %s", what, method, c.server, tostring(res.message)))
      end
      error(res, 0)
    end
    if res.status ~= 401 or attempt == 2 or not kubeconfig.invalidate(c) then return res end
  end
end

local STATUS_CODES = { [400] = "invalid", [401] = "denied", [403] = "denied", [404] = "not_found",
  [405] = "invalid", [409] = "conflict", [410] = "conflict", [415] = "invalid", [422] = "invalid",
  [429] = "unavailable", [502] = "unavailable", [503] = "unavailable", [504] = "timeout" }

-- Raises the API's error: the Status message when there is one, the code mapped to rbl's words.
local function api_error(what, res)
  local ok, st = pcall(json.decode, res.body or "")
  local reason, msg = nil, nil
  if ok and type(st) == "table" and st.kind == "Status" then
    reason, msg = st.reason, st.message
    local causes = type(st.details) == "table" and type(st.details.causes) == "table" and st.details.causes or {}
    local extra = {}
    for i, c in ipairs(causes) do
      if i > 3 then break end
      if type(c) == "table" and type(c.message) == "string" and not tostring(msg):find(c.message, 1, true) then
        extra[#extra + 1] = (type(c.field) == "string" and c.field ~= "" and (c.field .. ": ") or "") .. c.message
      end
    end
    if #extra > 0 and type(msg) == "string" then msg = msg .. " (" .. concat(extra, "; ") .. ")" end
  end
  if type(msg) ~= "string" or msg == "" then
    msg = (res.body or ""):gsub("%s+$", ""):sub(1, 200)
    if msg == "" then msg = "(empty body)" end
  end
  local code = STATUS_CODES[res.status] or (res.status >= 500 and "unavailable" or "failed")
  if res.status == 401 then msg = msg .. " (the credentials were rejected: check the token or certificate)" end
  host.raise(code, fmt("%s: HTTP %d%s: %s", what, res.status, type(reason) == "string" and (" " .. reason) or "", msg))
end

local function decode(what, res)
  local ok, v, err = pcall(json.decode, res.body or "")
  if not ok or type(v) ~= "table" then
    host.raise("protocol", fmt("%s: malformed JSON reply (HTTP %d, %d bytes): %s", what, res.status,
      #(res.body or ""), tostring(ok and err or v)))
  end
  return v
end

local function get_json(call, what, path, o)
  local res = request(call, what, "GET", path, o)
  if res.status ~= 200 then api_error(what, res) end
  return decode(what, res), res
end

-- ---- discovery: kinds, plurals, short names -> API paths (cached per run) ----

local function add_resource(d, group, version, r)
  local e = { group = group, version = version, resource = r.resource, kind = r.kind,
    singular = r.singular, short = r.short or {}, namespaced = r.namespaced, verbs = r.verbs or {}, subs = {} }
  d.list[#d.list + 1] = e
  d.by[group .. "/" .. r.resource] = d.by[group .. "/" .. r.resource] or e
  return e
end

local function aggregated(d, doc)
  for _, g in ipairs(doc.items or {}) do
    local group = type(g.metadata) == "table" and g.metadata.name or ""
    if group == json.null then group = "" end
    local v = (g.versions or {})[1] -- listed in the server's order of preference
    if type(v) == "table" then
      for _, r in ipairs(v.resources or {}) do
        local rk = type(r.responseKind) == "table" and r.responseKind or {}
        local e = add_resource(d, group, v.version, { resource = r.resource, kind = rk.kind,
          singular = r.singularResource, short = r.shortNames, namespaced = r.scope == "Namespaced", verbs = r.verbs })
        for _, s in ipairs(r.subresources or {}) do e.subs[s.subresource] = { verbs = s.verbs or {} } end
      end
    end
  end
end

local function legacy_list(d, group, version, doc)
  local subs = {}
  for _, r in ipairs(doc.resources or {}) do
    local base, sub = tostring(r.name):match("^([^/]+)/(.+)$")
    if base then subs[#subs + 1] = { base, sub, r }
    else
      add_resource(d, group, version, { resource = r.name, kind = r.kind, singular = r.singularName,
        short = r.shortNames, namespaced = r.namespaced, verbs = r.verbs })
    end
  end
  for _, s in ipairs(subs) do
    local e = d.by[group .. "/" .. s[1]]
    if e then e.subs[s[2]] = { verbs = s[3].verbs or {} } end
  end
end

local fetch_discovery

-- One discovery per run however wide the fan-out: the first task asks, the others wait for
-- its answer (1000 tasks starting at once sent 2000 discovery requests before).
local function discover(call)
  if state.disc then return state.disc end
  -- a task cancelled mid-discovery leaves the mark behind: past the requests' own time bound
  -- (timeout with retries), the next task asks again
  local wait, bound = 0.001, 4 * 1000 * (tonumber(cfg().timeout) or 30)
  while state.disc_busy and host.now_ms() - state.disc_busy < bound do
    host.pause(wait)
    wait = math.min(wait * 2, 0.05)
  end
  if state.disc then return state.disc end
  state.disc_busy = host.now_ms()
  local ok, d = pcall(fetch_discovery, call)
  state.disc_busy = nil
  if not ok then error(d, 0) end
  state.disc = d
  return d
end

function fetch_discovery(call)
  local d = { list = {}, by = {} }
  local what = "kube discovery"
  for _, root in ipairs({ "/api", "/apis" }) do
    local doc, res = get_json(call, what .. " " .. root, root, { accept = AGG_ACCEPT })
    if tostring(res.content_type or ""):find("as=APIGroupDiscoveryList", 1, true) then
      aggregated(d, doc)
    elseif root == "/api" then
      for _, v in ipairs(doc.versions or {}) do
        legacy_list(d, "", v, (get_json(call, what, "/api/" .. v)))
      end
    else
      for _, g in ipairs(doc.groups or {}) do
        local pv = type(g.preferredVersion) == "table" and g.preferredVersion.version
          or (type(g.versions) == "table" and g.versions[1] and g.versions[1].version)
        if type(g.name) == "string" and type(pv) == "string" then
          legacy_list(d, g.name, pv, (get_json(call, what, "/apis/" .. g.name .. "/" .. pv)))
        end
      end
    end
  end
  return d
end

local function matches(e, n)
  if e.resource == n or e.singular == n or (type(e.kind) == "string" and e.kind:lower() == n) then return true end
  for _, s in ipairs(e.short) do if s == n then return true end end
  return false
end

local function find_kind(d, name, group, version)
  for _, e in ipairs(d.list) do
    if matches(e, name) and (group == nil or e.group == group) and (version == nil or e.version == version) then
      return e
    end
  end
end

-- "configmap", "cm", "ConfigMap", "deployments.apps", "deployment.v1.apps", "deployments/scale"
-- -> discovery entry, subresource
local function resolve(call, kind)
  if type(kind) ~= "string" or kind == "" then host.raise("invalid", "kube: kind must be a non-empty string") end
  if #kind > 253 or not kind:match("^[%w%.%-/]+$") then
    host.raise("invalid", fmt("kube: %q is not a kind or resource name", kind))
  end
  local base, sub = kind:match("^([^/]+)/([^/]+)$")
  if not base then base = kind end
  local n = base:lower()
  local function lookup(d)
    local e = find_kind(d, n)
    if e then return e end
    local first, rest = n:match("^([^%.]+)%.(.+)$")
    if first then
      e = find_kind(d, first, rest)
      if e then return e end
      local v, g = rest:match("^([^%.]+)%.(.+)$")
      if v then return find_kind(d, first, g, v) end
    end
  end
  local e = lookup(discover(call))
  if not e then
    state.disc = nil -- a CRD may have appeared since: ask once more
    e = lookup(discover(call))
  end
  if not e then host.raise("not_found", fmt("kube: kind %q is not served by the API server at %s", kind, conn().server)) end
  return e, sub
end

-- ---- names and namespaces: validated before any URL is built ----

-- The host-Lua scope checks run unless this is the test build that disables them
-- (RBL_MUTANT_NO_LUA_SCOPE, tests/gate/run_mutation.sh): there the C gate alone decides.
local function lua_scope()
  if not host.mutant_no_lua_scope() then return true end
  if not state.mutant_warned then
    state.mutant_warned = true
    host.progress("rbl: MUTANT TEST BUILD: host-Lua scope checks are off (kube)")
  end
  return false
end

local function check_segment(call, what, label, s)
  if not lua_scope() then return end
  if type(s) ~= "string" then host.raise("invalid", fmt("%s: %s must be a string", what, label)) end
  if s == "" then host.raise("invalid", fmt("%s: %s is empty", what, label)) end
  -- anything that could change the path or the query is an escape attempt, not a typo
  if s == "." or s:find("..", 1, true) or s:find("[/\\%%%?#%z%c ]") then
    host.refuse(call, fmt("%s: %s %q could change the request path; nothing was sent", what, label, s))
  end
  if s:find("[\128-\255]") then
    host.raise("invalid", fmt("%s: %s %q holds non-ASCII characters", what, label, s))
  end
end

-- DNS-1123 label: a-z 0-9 '-', alphanumeric at both ends, at most 63.
local function valid_label(s)
  return type(s) == "string" and #s <= 63 and s:match("^[a-z0-9][-a-z0-9]*$") ~= nil and s:match("[a-z0-9]$") ~= nil
end

-- DNS-1123 subdomain: labels joined by '.', at most 253.
local function valid_subdomain(s)
  if type(s) ~= "string" or #s > 253 then return false end
  for part in (s .. "."):gmatch("([^.]*)%.") do
    if part == "" or not part:match("^[a-z0-9][-a-z0-9]*$") or not part:match("[a-z0-9]$") then return false end
  end
  return true
end

local function check_name(call, what, e, name)
  if not lua_scope() then return end
  check_segment(call, what, "name", name)
  if PATH_SEGMENT_NAMES[e.resource] then
    if not name:match("^[%w%-%._:@]+$") then host.raise("invalid", fmt("%s: name %q is not a valid path segment", what, name)) end
  elseif not valid_subdomain(name) then
    host.raise("invalid", fmt("%s: name %q is not a DNS-1123 subdomain (lower case letters, digits, '-', '.', at most 253)", what, name))
  end
end


local function check_namespace(call, what, ns)
  if not lua_scope() then return end
  check_segment(call, what, "namespace", ns)
  if not valid_label(ns) then
    host.raise("invalid", fmt("%s: namespace %q is not a DNS-1123 label", what, ns))
  end
end

-- The namespaces a tenant owns: the config's list, else those labelled for it (one GET per
-- tenant per run). The first is the default.
local function tenant_namespaces(call, what)
  local t = call:tenant()
  if not t then
    host.raise("invalid", what .. ": the run has several tenants and this call is bound to none; call it inside each_tenant()")
  end
  if state.ns[t] then return state.ns[t], t end
  local tc = rootcfg().tenants
  local entry = type(tc) == "table" and tc[t] or nil
  local list = {}
  local conf = type(entry) == "table" and (type(entry.namespaces) == "table" and entry.namespaces
    or (#entry > 0 and entry)) or nil
  if conf then
    for _, ns in ipairs(conf) do
      if not valid_label(ns) then host.raise("invalid", fmt("config: tenant %q: namespace %q is not a DNS-1123 label", t, tostring(ns))) end
      list[#list + 1] = ns
    end
  else
    local doc = get_json(call, fmt("kube: namespaces of tenant %q", t), "/api/v1/namespaces",
      { query = "labelSelector=" .. urlencode(label_key() .. "=" .. t) })
    for _, item in ipairs(doc.items or {}) do
      local n = type(item.metadata) == "table" and item.metadata.name
      if valid_label(n) then list[#list + 1] = n end
    end
    sort(list, function(a, b) if a == t then return true elseif b == t then return false end return a < b end)
  end
  state.ns[t] = list
  return list, t
end

local function owns(list, ns)
  for _, n in ipairs(list) do if n == ns then return true end end
  return false
end

local function api_prefix(e)
  return e.group == "" and ("/api/" .. e.version) or ("/apis/" .. e.group .. "/" .. e.version)
end

local function path_of(tg, with_name)
  local p = api_prefix(tg)
  if tg.namespace then p = p .. "/namespaces/" .. tg.namespace end
  p = p .. "/" .. tg.resource
  if with_name ~= false and tg.name then p = p .. "/" .. tg.name end
  if with_name ~= false and tg.subresource then p = p .. "/" .. tg.subresource end
  return p
end

local function describe(tg)
  local s = tg.resource .. (tg.group ~= "" and ("." .. tg.group) or "")
  if tg.name then s = s .. " " .. fmt("%q", tg.name) end
  if tg.subresource then s = s .. " (" .. tg.subresource .. ")" end
  if tg.namespace then s = s .. fmt(" in namespace %q", tg.namespace) end
  return s
end

-- scope(): resolves kind, name and namespace for the calling tenant; refuses what it may not touch.
-- o: {name, namespace, write, sub_from_kind}
local function target(call, pname, kind, name, opts, write)
  if opts ~= nil and type(opts) ~= "table" then host.raise("invalid", pname .. ": options must be a table") end
  opts = opts or {}
  local e, sub = resolve(call, kind)
  local what = fmt("%s %s", pname, e.resource .. (sub and ("/" .. sub) or ""))
  if name ~= nil then check_name(call, what, e, name) end
  if sub and lua_scope() then
    if DANGEROUS_SUBS[sub] and not allowed_sub(sub) then
      host.refuse(call, fmt("%s: subresource %s/%s is not allowed (config kube.allow_subresources)", what, e.resource, sub))
    end
    if write and not allowed_sub(sub) then
      host.refuse(call, fmt("%s: writes to subresource %s/%s are not allowed (config kube.allow_subresources)", what, e.resource, sub))
    end
    if not e.subs[sub] then host.raise("not_found", fmt("%s: %s has no subresource %q", what, e.resource, sub)) end
  end
  local nss, tenant = tenant_namespaces(call, what)
  local tg = { group = e.group, version = e.version, resource = e.resource, kind = e.kind, namespaced = e.namespaced,
    name = name, subresource = sub }
  if e.namespaced then
    local ns = opts.namespace
    if ns == nil then
      ns = nss[1]
      if ns == nil then host.refuse(call, fmt("%s: tenant %q owns no namespace (none configured, none labelled %s=%s)", what, tenant, label_key(), tenant)) end
    end
    check_namespace(call, what, ns)
    if not owns(nss, ns) and lua_scope() then
      host.refuse(call, fmt("%s: namespace %q does not belong to tenant %q (it owns: %s); nothing was sent",
        what, ns, tenant, #nss > 0 and concat(nss, ", ") or "none"))
    end
    tg.namespace = ns
  else
    if opts.namespace ~= nil then host.raise("invalid", fmt("%s: %s is cluster-scoped; namespace does not apply", what, e.resource)) end
    if write and not (e.group == "" and e.resource == "namespaces" and owns(nss, name)) and lua_scope() then
      host.refuse(call, fmt("%s %q: %s is cluster-scoped; a tenant's run may not write it", what, tostring(name), e.resource))
    end
  end
  tg.tenant = tenant
  return tg
end

-- ---- JSON pointers and the before-state of exactly the fields a patch changes ----

local function esc(t) return (tostring(t):gsub("~", "~0"):gsub("/", "~1")) end
local function unesc(t) return (t:gsub("~1", "/"):gsub("~0", "~")) end

local function to_ptr(toks)
  local p = {}
  for i, t in ipairs(toks) do p[i] = "/" .. esc(t) end
  return concat(p)
end

local function from_ptr(p)
  local toks, i = {}, 2
  if p == "" then return toks end
  while true do
    local j = p:find("/", i, true)
    toks[#toks + 1] = unesc(j and p:sub(i, j - 1) or p:sub(i))
    if not j then return toks end
    i = j + 1
  end
end

local function is_array(v) return type(v) == "table" and json.is_array(v) end

-- exists, value at toks (arrays are 0-based in pointers)
local function get_at(obj, toks, n)
  local v = obj
  for i = 1, n or #toks do
    if type(v) ~= "table" then return false end
    local t = toks[i]
    if is_array(v) then
      local k = tonumber(t)
      if not k or t:find("[^0-9]") then return false end
      v = v[k + 1]
    else
      v = v[t]
    end
    if v == nil then return false end
  end
  return true, v
end

local SKIP = { ["/metadata/resourceVersion"] = true, ["/metadata/managedFields"] = true,
  ["/metadata/generation"] = true, ["/metadata/uid"] = true, ["/metadata/creationTimestamp"] = true }

local function copy_toks(toks, extra)
  local t = {}
  for i, v in ipairs(toks) do t[i] = v end
  if extra ~= nil then t[#t + 1] = extra end
  return t
end

-- The paths a merge or strategic merge patch changes: leaves for merge patches; lists and
-- "$patch" directives make their whole list/map the unit for strategic ones.
local function walk_merge(v, toks, out, strategic)
  if type(v) ~= "table" or is_array(v) or v == json.null then
    out[#out + 1] = toks
    return
  end
  if next(v) == nil then out[#out + 1] = toks; return end
  if strategic and (v["$patch"] ~= nil or v["$retainKeys"] ~= nil) then out[#out + 1] = toks; return end
  for k, sub in pairs(v) do
    if type(k) == "string" then
      local directive, list = k:match("^%$([%a]+)/(.+)$")
      if strategic and directive then out[#out + 1] = copy_toks(toks, list)
      elseif not (strategic and k:sub(1, 1) == "$") then walk_merge(sub, copy_toks(toks, k), out, strategic) end
    end
  end
end

local function touched_paths(patch, ptype, cur)
  local raw = {}
  if ptype == "json" then
    for _, op in ipairs(patch) do
      for _, field in ipairs({ "path", "from" }) do
        local p = op[field]
        if type(p) == "string" and op.op ~= "test" and not (field == "from" and op.op == "copy") then
          local toks = from_ptr(p)
          local pex, parent = get_at(cur, toks, #toks - 1)
          if #toks > 0 and pex and is_array(parent) then toks[#toks] = nil end -- list edits: the list is the unit
          raw[#raw + 1] = toks
        end
      end
    end
  else
    walk_merge(patch, {}, raw, ptype == "strategic")
  end
  -- keep the shortest: a path under another touched path is covered by it
  local ptrs = {}
  for _, toks in ipairs(raw) do
    local p = to_ptr(toks)
    if not SKIP[p] then ptrs[#ptrs + 1] = p end
  end
  sort(ptrs, function(a, b) return #a < #b or (#a == #b and a < b) end)
  local keep = {}
  for _, p in ipairs(ptrs) do
    local covered = false
    for _, k in ipairs(keep) do
      if k == p or k == "" or p:sub(1, #k + 1) == k .. "/" then covered = true; break end
    end
    if not covered then keep[#keep + 1] = p end
  end
  return keep
end

local function capture(cur, ptrs)
  local fields = {}
  for _, p in ipairs(ptrs) do
    local ex, v = get_at(cur, from_ptr(p))
    fields[#fields + 1] = { path = p, exists = ex, value = ex and v or nil }
  end
  return fields
end

-- The JSON patch that puts fields back, given the object as it is now.
local function inverse_ops(fields, now)
  local ops = {}
  for _, f in ipairs(fields) do
    local toks = from_ptr(f.path)
    local ex = get_at(now, toks)
    if f.exists then
      if ex then ops[#ops + 1] = { op = "replace", path = f.path, value = f.value }
      else
        -- create missing parents: add at the first missing ancestor, with the value nested in it
        local k = 0
        while k < #toks - 1 and get_at(now, toks, k + 1) do k = k + 1 end
        local value = f.value
        for i = #toks, k + 2, -1 do value = { [toks[i]] = value } end
        ops[#ops + 1] = { op = "add", path = to_ptr(copy_toks({ table.unpack(toks, 1, k + 1) })), value = value }
      end
    elseif ex then
      ops[#ops + 1] = { op = "remove", path = f.path }
    end
  end
  return ops
end

-- ---- effects ----

local function dry() return host.dry_run() and true or false end

local function write_query()
  return "fieldManager=rbl" .. (dry() and "&dryRun=All" or "")
end

local function rv_of(obj)
  return type(obj) == "table" and type(obj.metadata) == "table" and obj.metadata.resourceVersion or nil
end

local function has_test_op(patch)
  for _, op in ipairs(patch) do if type(op) == "table" and op.op == "test" then return true end end
  return false
end

local function patch_sets_rv(patch)
  return type(patch) == "table" and type(patch.metadata) == "table" and patch.metadata.resourceVersion ~= nil
end

-- GET the object, PATCH it, retry 409s a bounded number of times when the patch allows it.
-- -> patched object, before-state fields, resourceVersion before, attempts
local function apply_patch(call, pname, tg, patch, ptype)
  local what = pname .. " " .. describe(tg)
  local ok, body = pcall(json.encode, patch)
  if not ok or type(body) ~= "string" then host.raise("invalid", what .. ": the patch cannot be encoded as JSON: " .. tostring(body)) end
  local retryable = ptype == "json" and not has_test_op(patch) or (ptype ~= "json" and not patch_sets_rv(patch))
  local attempts = 0
  while true do
    attempts = attempts + 1
    local cur = get_json(call, what, path_of(tg))
    local fields = capture(cur, touched_paths(patch, ptype, cur))
    local res = request(call, what, "PATCH", path_of(tg),
      { query = write_query(), body = body, ctype = PATCH_TYPES[ptype] })
    if res.status == 200 or res.status == 201 then
      return decode(what, res), fields, rv_of(cur), attempts
    end
    if not (res.status == 409 and retryable and attempts <= MAX_CONFLICT_RETRIES) then
      if res.status == 409 and retryable then
        local ok2, e = pcall(api_error, what, res)
        if not ok2 and type(e) == "table" then e.message = e.message .. fmt(" (gave up after %d attempts)", attempts) end
        error(e, 0)
      end
      api_error(what, res)
    end
  end
end

local function is_secret_kind(tg) return tg.group == "" and tg.resource == "secrets" end

-- The audit's before-state and the undo for one reversible write.
local function reversible(pname, call, tg, ptype, fields, rv_before, obj, undo_prim)
  local rec = { api = { group = tg.group, version = tg.version, resource = tg.resource, kind = tg.kind,
    namespaced = tg.namespaced }, name = tg.name, namespace = tg.namespace, subresource = tg.subresource,
    tenant = tg.tenant, patch_type = ptype, prim = pname, resourceVersion = rv_of(obj),
    resourceVersion_before = rv_before, fields = fields, run = (host.info() or {}).run, call = call:id() }
  local audit_rec = rec
  if is_secret_kind(tg) then -- the values stay in memory for "auto" rollback, never in the audit
    audit_rec = {}
    for k, v in pairs(rec) do audit_rec[k] = v end
    local red = {}
    for i, f in ipairs(fields) do red[i] = { path = f.path, exists = f.exists, value = f.exists and "[redacted]" or nil } end
    audit_rec.fields, audit_rec.redacted = red, true
  end
  local tenant = tg.tenant
  local function undo(o)
    local res, errs, n = host.run_all({ function() return undo_prim(rec, o) end }, { tenants = { tenant } })
    if n > 0 then error(errs[1], 0) end
    return res[1]
  end
  return audit_rec, undo
end

local undo_patch -- the kube_undo primitive, defined below

local function patch_effect(pname, call, tg, patch, ptype)
  local obj, fields, rv_before, attempts = apply_patch(call, pname, tg, patch, ptype)
  local summary = { kind = tg.kind, name = tg.name, namespace = tg.namespace, subresource = tg.subresource,
    patch_type = ptype, resourceVersion_before = rv_before, resourceVersion = rv_of(obj), attempts = attempts,
    dry_run = dry(), changed = #fields }
  local paths = {}
  for i, f in ipairs(fields) do paths[i] = f.path end
  summary.paths = json.array(paths)
  if dry() then return obj, summary end -- nothing changed: nothing to undo
  local before, undo = reversible(pname, call, tg, ptype, fields, rv_before, obj, undo_patch)
  return obj, summary, before, undo
end

local function check_patch(call, pname, tg, patch, ptype)
  local what = pname .. " " .. describe(tg)
  if ptype == "json" then
    if not is_array(patch) and not (type(patch) == "table" and #patch > 0) then
      host.raise("invalid", what .. ": a json patch is a list of operations")
    end
    for i, op in ipairs(patch) do
      if type(op) ~= "table" or type(op.op) ~= "string" or type(op.path) ~= "string" then
        host.raise("invalid", fmt("%s: operation %d needs op and path", what, i))
      end
    end
  elseif type(patch) ~= "table" or is_array(patch) then
    host.raise("invalid", what .. ": a " .. ptype .. " patch is an object")
  end
  -- a namespace's tenant label decides who owns it: changing it is an ownership transfer
  if tg.resource == "namespaces" and tg.group == "" and cfg().allow_tenant_label_change ~= true then
    local key, hit = label_key(), false
    if ptype == "json" then
      for _, op in ipairs(patch) do
        for _, p in ipairs({ op.path, op.from }) do
          if p == "" or p == "/metadata" or p == "/metadata/labels" or p == "/metadata/labels/" .. esc(key) then hit = true end
        end
      end
    else
      local md = patch.metadata
      if md == json.null or (type(md) == "table" and (md.labels == json.null or md["$patch"] ~= nil
        or (type(md.labels) == "table" and (md.labels[key] ~= nil or md.labels["$patch"] ~= nil)))) then hit = true end
    end
    if hit and lua_scope() then host.refuse(call, fmt("%s: the patch changes the tenant label %s (config kube.allow_tenant_label_change)", what, key)) end
  end
end

-- ---- the primitives ----

local resolved = setmetatable({}, { __mode = "k" }) -- call -> target found by scope()

M.get = prim.define("kube.get", {
  scope = function(call, kind, name, opts)
    if name == nil then host.raise("invalid", "kube.get: name is required (use kube.list for many)") end
    local tg = target(call, "kube.get", kind, name, opts, false)
    resolved[call] = tg
    return { kind = tg.kind, resource = tg.resource, group = tg.group, name = tg.name, namespace = tg.namespace,
      subresource = tg.subresource }
  end,
  effect = function(call)
    local tg = resolved[call]
    local obj = get_json(call, "kube.get " .. describe(tg), path_of(tg))
    return obj, { kind = tg.kind, name = tg.name, namespace = tg.namespace, resourceVersion = rv_of(obj) }
  end,
})

local function selector(v, what, label)
  if v == nil then return nil end
  if type(v) == "string" then return v end
  if type(v) ~= "table" then host.raise("invalid", fmt("%s: %s must be a string or a table", what, label)) end
  local parts = {}
  for k, val in pairs(v) do
    if type(k) == "number" then parts[#parts + 1] = tostring(val)
    else parts[#parts + 1] = tostring(k) .. "=" .. tostring(val) end
  end
  sort(parts)
  return concat(parts, ",")
end

M.list = prim.define("kube.list", {
  scope = function(call, kind, opts)
    local tg = target(call, "kube.list", kind, nil, opts, false)
    if tg.subresource then host.raise("invalid", "kube.list: subresources cannot be listed") end
    resolved[call] = tg
    return { kind = tg.kind, resource = tg.resource, group = tg.group, namespace = tg.namespace }
  end,
  effect = function(call, kind, opts)
    local tg = resolved[call]
    opts = opts or {}
    local what = "kube.list " .. describe(tg)
    local q = {}
    local ls, fs = selector(opts.labels, what, "labels"), selector(opts.fields, what, "fields")
    if ls and ls ~= "" then q[#q + 1] = "labelSelector=" .. urlencode(ls) end
    if fs and fs ~= "" then q[#q + 1] = "fieldSelector=" .. urlencode(fs) end
    q[#q + 1] = "limit=500"
    local items, list = {}, nil
    local cont
    repeat
      local query = concat(q, "&") .. (cont and ("&continue=" .. urlencode(cont)) or "")
      local page = get_json(call, what, path_of(tg, false), { query = query })
      list = list or page
      for _, it in ipairs(page.items or {}) do items[#items + 1] = it end
      cont = type(page.metadata) == "table" and page.metadata.continue or nil
      if cont == "" or cont == json.null then cont = nil end
    until not cont
    list.items = json.array(items)
    if type(list.metadata) == "table" then list.metadata.continue = nil end
    return list, { kind = tg.kind, namespace = tg.namespace, labels = ls, fields = fs, count = #items }
  end,
})

M.patch = prim.define("kube_patch", {
  scope = function(call, kind, name, patch, opts)
    if opts ~= nil and type(opts) ~= "table" then host.raise("invalid", "kube_patch: options must be a table") end
    local ptype = (opts or {}).type or "merge"
    if not PATCH_TYPES[ptype] then
      host.raise("invalid", fmt("kube_patch: type %q is not one of merge, strategic, json", tostring(ptype)))
    end
    local o = { namespace = (opts or {}).namespace }
    local tg = target(call, "kube_patch", kind, name, o, true)
    check_patch(call, "kube_patch", tg, patch, ptype)
    tg.ptype = ptype
    resolved[call] = tg
    return { kind = tg.kind, resource = tg.resource, group = tg.group, name = tg.name, namespace = tg.namespace,
      subresource = tg.subresource, type = ptype }
  end,
  effect = function(call, kind, name, patch)
    local tg = resolved[call]
    return patch_effect("kube_patch", call, tg, patch, tg.ptype)
  end,
})

M.scale = prim.define("kube.scale", {
  scope = function(call, kind, name, n, opts)
    if math.type(n) ~= "integer" or n < 0 then host.raise("invalid", "kube.scale: replicas must be a non-negative integer") end
    local tg = target(call, "kube.scale", kind, name, opts, true)
    if tg.subresource then host.raise("invalid", "kube.scale: give the kind, not a subresource") end
    local e = resolve(call, kind)
    if not e.subs.scale then host.raise("invalid", fmt("kube.scale: %s has no scale subresource", e.resource)) end
    tg.subresource = "scale"
    resolved[call] = tg
    return { kind = tg.kind, resource = tg.resource, group = tg.group, name = tg.name, namespace = tg.namespace, replicas = n }
  end,
  effect = function(call, kind, name, n)
    local tg = resolved[call]
    return patch_effect("kube.scale", call, tg, { spec = { replicas = n } }, "merge")
  end,
})

local WORKLOADS = { deployments = true, statefulsets = true, daemonsets = true }

M.rollout_restart = prim.define("kube.rollout_restart", {
  scope = function(call, name, opts)
    local kind = type(opts) == "table" and opts.kind or "deployment"
    local o = type(opts) == "table" and { namespace = opts.namespace } or nil
    local tg = target(call, "kube.rollout_restart", kind, name, o, true)
    if not WORKLOADS[tg.resource] or tg.subresource then
      host.raise("invalid", fmt("kube.rollout_restart: %s cannot be restarted (deployments, statefulsets, daemonsets)", tg.resource))
    end
    resolved[call] = tg
    return { kind = tg.kind, resource = tg.resource, group = tg.group, name = tg.name, namespace = tg.namespace }
  end,
  effect = function(call)
    local tg = resolved[call]
    local now = os.date("!%Y-%m-%dT%H:%M:%SZ")
    local patch = { spec = { template = { metadata = { annotations = { [RESTART_ANNOTATION] = now } } } } }
    local obj, summary = patch_effect("kube.rollout_restart", call, tg, patch, "strategic")
    summary.restartedAt = now
    -- not reversible: taking the annotation away would only start another rollout
    return obj, summary
  end,
})

M.can_i = prim.define("kube.can_i", {
  scope = function(call, verb, resource, opts)
    if type(verb) ~= "string" or not verb:match("^[%a%*]+$") then host.raise("invalid", "kube.can_i: verb must be a word such as get, patch, *") end
    if type(resource) ~= "string" or resource == "" then host.raise("invalid", "kube.can_i: resource is required") end
    if opts ~= nil and type(opts) ~= "table" then host.raise("invalid", "kube.can_i: options must be a table") end
    opts = opts or {}
    local attrs = { verb = verb }
    local base, sub = resource:match("^([^/]+)/([^/]+)$")
    base = base or resource
    attrs.subresource = sub or opts.subresource
    local e
    if base ~= "*" then
      local ok, ent = pcall(resolve, call, base)
      if ok then e = ent end
    end
    if e then attrs.resource, attrs.group = e.resource, e.group
    else
      attrs.resource = base:match("^[^%.]+") or base
      attrs.group = opts.group or base:match("^[^%.]+%.(.+)$") or ""
    end
    if opts.name ~= nil then check_segment(call, "kube.can_i", "name", opts.name); attrs.name = opts.name end
    local nss, tenant = tenant_namespaces(call, "kube.can_i")
    if opts.cluster == true and opts.namespace ~= nil then
      host.raise("invalid", "kube.can_i: cluster = true asks a cluster-wide question; namespace does not apply")
    end
    if opts.cluster ~= true and (not e or e.namespaced) then
      local ns = opts.namespace or nss[1]
      if ns then
        check_namespace(call, "kube.can_i", ns)
        if not owns(nss, ns) and lua_scope() then
          host.refuse(call, fmt("kube.can_i: namespace %q does not belong to tenant %q; nothing was sent", ns, tenant))
        end
        attrs.namespace = ns
      end
    end
    resolved[call] = attrs
    return attrs
  end,
  effect = function(call)
    local attrs = resolved[call]
    local what = fmt("kube.can_i %s %s%s", attrs.verb, attrs.resource, attrs.namespace and (" in namespace " .. attrs.namespace) or "")
    local body = json.encode({ apiVersion = "authorization.k8s.io/v1", kind = "SelfSubjectAccessReview",
      spec = { resourceAttributes = attrs } })
    local res = request(call, what, "POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", { body = body })
    if res.status ~= 201 and res.status ~= 200 then api_error(what, res) end
    local r = decode(what, res)
    local st = type(r.status) == "table" and r.status or {}
    local allowed = st.allowed == true
    return allowed, { allowed = allowed, reason = st.reason, denied = st.denied }
  end,
})

-- The inverse of a recorded patch (auto rollback and `rbl rollback`): refuses when the object
-- changed since the patch unless forced.
undo_patch = prim.define("kube_undo", {
  scope = function(call, rec, opts)
    if type(rec) ~= "table" or type(rec.api) ~= "table" or type(rec.fields) ~= "table" then
      host.raise("invalid", "kube_undo: not a recorded before-state")
    end
    local a = rec.api
    local kind = a.resource .. (a.group ~= "" and ("." .. a.group) or "")
    local tg = target(call, "kube_undo", kind, rec.name, { namespace = rec.namespace }, true)
    if rec.subresource then
      if not allowed_sub(rec.subresource) then host.refuse(call, "kube_undo: subresource " .. rec.subresource .. " is not allowed") end
      tg.subresource = rec.subresource
    end
    if rec.redacted then
      host.raise("invalid", fmt("kube_undo %s: the before-state of a Secret is not kept in the audit; restore it by hand", describe(tg)))
    end
    -- without the version the patch left, a later change by someone else could not be noticed
    if type(rec.resourceVersion) ~= "string" or rec.resourceVersion == "" then
      host.raise("invalid", fmt("kube_undo %s: the before-state has no resourceVersion, so a change made since could not be noticed; not undone (restore it by hand)", describe(tg)))
    end
    resolved[call] = tg
    return { kind = tg.kind, resource = tg.resource, name = tg.name, namespace = tg.namespace, subresource = tg.subresource,
      undoes = { run = rec.run, call = rec.call } }
  end,
  effect = function(call, rec, opts)
    local tg = resolved[call]
    local force = type(opts) == "table" and opts.force == true
    local what = "kube_undo " .. describe(tg)
    local now = get_json(call, what, path_of(tg))
    local rv = rv_of(now)
    local key = concat({ tg.group, tg.resource, tg.namespace or "", tg.name }, "/")
    local prior = state.undone[key]
    -- a newer change to the same object that this run has just undone does not count as "changed since"
    local chained = prior and prior.from_rv == rec.resourceVersion and prior.now_rv == rv
    local summary = { undoes = { run = rec.run, call = rec.call }, kind = tg.kind, name = tg.name,
      namespace = tg.namespace, subresource = tg.subresource, dry_run = dry(), forced = force or nil }
    if rv ~= rec.resourceVersion and not force and not chained then
      host.raise("conflict", fmt("%s: the object changed since the patch (resourceVersion now %s, the patch left %s); not undone (--force to undo anyway)",
        what, tostring(rv), tostring(rec.resourceVersion)))
    end
    local ops = inverse_ops(rec.fields, now)
    summary.ops = #ops
    if #ops == 0 then
      summary.noop = true
      state.undone[key] = { from_rv = rec.resourceVersion_before, now_rv = rv }
      return now, summary
    end
    if not force and rv then table.insert(ops, 1, { op = "test", path = "/metadata/resourceVersion", value = rv }) end
    local res = request(call, what, "PATCH", path_of(tg),
      { query = write_query(), body = json.encode(ops), ctype = PATCH_TYPES.json })
    if res.status ~= 200 then api_error(what, res) end
    local obj = decode(what, res)
    summary.resourceVersion = rv_of(obj)
    if not dry() then state.undone[key] = { from_rv = rec.resourceVersion_before, now_rv = rv_of(obj) } end
    return obj, summary
  end,
})
M.undo = undo_patch

local detect = prim.define("detect_runtime", {
  effect = function(call, kind)
    local c = conn()
    local v = get_json(call, "detect_runtime kubernetes: GET /version", "/version")
    local r = { runtime = "kubernetes", version = v.gitVersion, major = v.major, minor = v.minor,
      platform = v.platform, go_version = v.goVersion, endpoint = c.server, context = c.context,
      auth = c.auth, insecure = c.insecure or false, source = c.source }
    return r, { version = v.gitVersion, endpoint = c.server, auth = c.auth, context = c.context }
  end,
})

-- detect_runtime("kubernetes") (the core family's detect_runtime dispatches here).
function M.detect(...) return detect("kubernetes", ...) end

function M.globals(book)
  local g = {
    kube = { get = M.get, list = M.list, rollout_restart = M.rollout_restart, scale = M.scale, can_i = M.can_i },
    kube_patch = M.patch,
  }
  return g
end

return M
