-- Kubernetes API primitives: kube.get/list/rollout_restart/scale/can_i/wait/rollout_status/logs/events/
-- delete/rollout_undo, kube_patch and
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
local state = { conn = nil, disc = nil, ns = {}, warned = false, undone = {}, undo_status = {} }

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
-- A Namespace's tenant label is guarded by effect (the gate, docs/gate.md): the patch carries a
-- resourceVersion precondition of the version just read and goes out first as a dry run.
local function label_guarded(tg)
  return tg.resource == "namespaces" and tg.group == "" and cfg().allow_tenant_label_change ~= true
end

-- The patch pinned to resourceVersion rv (encoded), for a guarded Namespace.
local function pinned_body(what, patch, ptype, rv)
  if type(rv) ~= "string" then host.raise("failed", what .. ": the object has no resourceVersion to pin the patch to") end
  if ptype == "json" then
    local ops = { { op = "test", path = "/metadata/resourceVersion", value = rv } }
    for _, op in ipairs(patch) do ops[#ops + 1] = op end
    return json.encode_unwrapped(json.array(ops))
  end
  local md = patch.metadata
  if md ~= nil and (type(md) ~= "table" or is_array(md)) then
    host.raise("invalid", what .. ": metadata must be an object (the patch is pinned to a resourceVersion)")
  end
  if type(md) == "table" and md.resourceVersion ~= nil and md.resourceVersion ~= rv then
    host.raise("conflict", fmt("%s: the patch names resourceVersion %s, the object is at %s", what, tostring(md.resourceVersion), rv))
  end
  local p2, md2 = {}, {}
  for k, v in pairs(patch) do p2[k] = v end
  for k, v in pairs(type(md) == "table" and md or {}) do md2[k] = v end
  md2.resourceVersion = rv
  p2.metadata = md2
  return json.encode_unwrapped(p2)
end

-- GET the object, PATCH it, retry 409s a bounded number of times when the patch allows it.
-- -> patched object, before-state fields, resourceVersion before, attempts
local function apply_patch(call, pname, tg, patch, ptype, declare)
  local what = pname .. " " .. describe(tg)
  local ok, body = pcall(json.encode_unwrapped, patch) -- secret() values: the real bytes, here only
  if not ok or type(body) ~= "string" then host.raise("invalid", what .. ": the patch cannot be encoded as JSON: " .. tostring(body)) end
  local guarded = label_guarded(tg)
  local retryable = ptype == "json" and not has_test_op(patch) or (ptype ~= "json" and not patch_sets_rv(patch))
  local attempts = 0
  while true do
    attempts = attempts + 1
    local cur = get_json(call, what, path_of(tg))
    local fields = capture(cur, touched_paths(patch, ptype, cur))
    if declare then declare(fields, rv_of(cur)) end -- before the request that may change it
    local b, res = body, nil
    if guarded then
      b = pinned_body(what, patch, ptype, rv_of(cur))
      if not dry() then -- the dry run whose answer the gate compares; a real run's own dry run
        res = request(call, what, "PATCH", path_of(tg),
          { query = "fieldManager=rbl&dryRun=All", body = b, ctype = PATCH_TYPES[ptype] })
        if res.status == 200 or res.status == 201 then res = nil end
      end
    end
    res = res or request(call, what, "PATCH", path_of(tg),
      { query = write_query(), body = b, ctype = PATCH_TYPES[ptype] })
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

local function same_value(a, b)
  if type(a) ~= "table" or type(b) ~= "table" then return a == b end
  for k, v in pairs(a) do if not same_value(v, b[k]) then return false end end
  for k in pairs(b) do if a[k] == nil then return false end end
  return true
end

local function is_secret_kind(tg) return tg.group == "" and tg.resource == "secrets" end

-- The audit's before-state and the undo for one reversible write.
local function reversible(pname, call, tg, ptype, fields, rv_before, obj, undo_prim)
  -- obj nil: the write's outcome is not known yet (declared before the request leaves); the
  -- undo then reads back whether it took effect (kube_undo, uncertain)
  local rec = { api = { group = tg.group, version = tg.version, resource = tg.resource, kind = tg.kind,
    namespaced = tg.namespaced }, name = tg.name, namespace = tg.namespace, subresource = tg.subresource,
    tenant = tg.tenant, patch_type = ptype, prim = pname, resourceVersion = obj and rv_of(obj) or nil,
    resourceVersion_before = rv_before, fields = fields, run = (host.info() or {}).run, call = call:id(),
    -- what the patch left at those paths: the undo compares them, not the resourceVersion, which a
    -- controller's status write also moves (obj nil: the write's outcome is not known yet)
    after = obj and capture(obj, (function() local p = {} for i, f in ipairs(fields) do p[i] = f.path end return p end)()) or nil,
    uncertain = obj == nil or nil }
  local audit_rec = rec
  if is_secret_kind(tg) then -- the values stay in memory for "auto" rollback, never in the audit
    audit_rec = {}
    for k, v in pairs(rec) do audit_rec[k] = v end
    local red = {}
    for i, f in ipairs(fields) do red[i] = { path = f.path, exists = f.exists, value = f.exists and "[redacted]" or nil } end
    audit_rec.fields, audit_rec.after, audit_rec.redacted = red, nil, true
  end
  local tenant = tg.tenant
  local key = tostring(rec.run) .. "#" .. tostring(rec.call)
  local function undo(o)
    state.undo_status[key] = nil
    local _, errs, n = host.run_all({ function() return undo_prim(rec, o) end }, { tenants = { tenant } })
    if n > 0 then error(errs[1], 0) end
    return state.undo_status[key] or "done"
  end
  return audit_rec, undo
end

local undo_patch -- the kube_undo primitive, defined below

local function patch_effect(pname, call, tg, patch, ptype, irreversible)
  local declare
  if not dry() then
    declare = function(fields, rv_before)
      local before, undo = reversible(pname, call, tg, ptype, fields, rv_before, nil, undo_patch)
      prim.before(call, before, not irreversible and undo or nil, pname)
    end
  end
  local obj, fields, rv_before, attempts = apply_patch(call, pname, tg, patch, ptype, declare)
  local summary = { kind = tg.kind, name = tg.name, namespace = tg.namespace, subresource = tg.subresource,
    patch_type = ptype, resourceVersion_before = rv_before, resourceVersion = rv_of(obj), attempts = attempts,
    dry_run = dry(), changed = #fields }
  local paths = {}
  for i, f in ipairs(fields) do paths[i] = f.path end
  summary.paths = json.array(paths)
  if dry() then -- the plan: each touched field, before (read) -> after (the server's dry run)
    local changes, secret = {}, is_secret_kind(tg)
    for i, f in ipairs(fields) do
      local aex, av = get_at(obj, from_ptr(f.path))
      changes[i] = { path = f.path, before_exists = f.exists, after_exists = aex,
        before = f.exists and (secret and "[redacted]" or f.value) or nil,
        after = aex and (secret and "[redacted]" or av) or nil }
    end
    prim.plan(call, { changes = json.array(changes), resourceVersion = rv_before,
      target = { kind = tg.kind, resource = tg.resource, group = tg.group, name = tg.name,
        namespace = tg.namespace, subresource = tg.subresource } })
    return obj, summary
  end
  if irreversible then return obj, summary end -- nothing to undo
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
  -- a namespace's tenant label decides who owns it: changing it is an ownership transfer. Named
  -- outright, it is refused here (a friendly message before anything is sent); every other way
  -- (strategic-merge directives, moves, duplicate keys) the C gate decides by effect: the patch is
  -- sent as a dry run pinned to the version read, and the label compared before and after.
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
      if md == json.null or (type(md) == "table" and (md.labels == json.null
        or (type(md.labels) == "table" and md.labels[key] ~= nil))) then hit = true end
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

-- A Secret's values: data (base64) and stringData, in a merge/strategic patch or the values of a
-- json patch's operations under /data, /stringData or the whole object.
local function secret_values(patch, ptype, each)
  local function leaves(v)
    if type(v) == "string" then each(v)
    elseif type(v) == "table" then for _, x in pairs(v) do leaves(x) end end
  end
  if ptype == "json" then
    for _, op in ipairs(type(patch) == "table" and patch or {}) do
      if type(op) == "table" then leaves(op.value) end
    end
  elseif type(patch) == "table" then
    leaves(patch.data)
    leaves(patch.stringData)
  end
end

-- The patch as the audit intent and the report show it: for a Secret, every value redacted.
local function redact_secret_patch(patch, ptype)
  local function red(v)
    if type(v) == "string" then return "[redacted]" end
    if type(v) ~= "table" then return v end
    local out = is_array(v) and json.array({}) or {}
    for k, x in pairs(v) do out[k] = red(x) end
    return out
  end
  if ptype == "json" then
    local ops = json.array({})
    for i, op in ipairs(patch) do
      local o = {}
      for k, v in pairs(type(op) == "table" and op or {}) do o[k] = v end
      if o.value ~= nil then o.value = red(o.value) end
      ops[i] = o
    end
    return ops
  end
  local out = {}
  for k, v in pairs(patch) do out[k] = v end
  if out.data ~= nil then out.data = red(out.data) end
  if out.stringData ~= nil then out.stringData = red(out.stringData) end
  return out
end

M.patch = prim.define("kube_patch", {
  record_args = function(tg, args, n)
    if not (type(tg) == "table" and tg.resource == "secrets" and (tg.group or "") == "") then return args end
    local shown = {}
    for i = 1, n do shown[i] = args[i] end
    if type(args[3]) == "table" then shown[3] = redact_secret_patch(args[3], tg.type) end
    return shown
  end,
  write = true,
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
    -- a Secret's new values are masked wherever text leaves the run (an API error echoing them)
    if is_secret_kind(tg) then secret_values(patch, ptype, function(v) host.secret("kube secret value", v) end) end
    return { kind = tg.kind, resource = tg.resource, group = tg.group, name = tg.name, namespace = tg.namespace,
      subresource = tg.subresource, type = ptype }
  end,
  effect = function(call, kind, name, patch)
    local tg = resolved[call]
    return patch_effect("kube_patch", call, tg, patch, tg.ptype)
  end,
})

M.scale = prim.define("kube.scale", {
  write = true,
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
  write = true,
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
    local obj, summary = patch_effect("kube.rollout_restart", call, tg, patch, "strategic", true)
    summary.restartedAt = now
    -- not reversible: taking the annotation away would only start another rollout
    if not dry() then
      summary.irreversible = true
      summary.irreversible_why = "a restart cannot be undone (its pods were replaced); undo the change that needed it instead"
    end
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

-- ---- waiting: kube.wait, kube.rollout_status (polling reads of the object) ----

local function num_opt(what, o, name, default, min, max)
  local v = o[name]
  if v == nil then return default end
  if type(v) ~= "number" or v ~= v or v < min or v > max then
    host.raise("invalid", fmt("%s: %s must be a number of seconds in %g..%g", what, name, min, max))
  end
  return v
end

local function wait_opts(what, opts)
  if opts ~= nil and type(opts) ~= "table" then host.raise("invalid", what .. ": options must be a table") end
  opts = opts or {}
  return { timeout = num_opt(what, opts, "timeout", 60, 0.001, 86400),
           interval = num_opt(what, opts, "interval", 1, 0.05, 3600), namespace = opts.namespace }
end

-- "{.status.phase}", ".status.conditions[0].type", "{.metadata.annotations['a.b/c']}" -> path tokens
local function jsonpath_tokens(what, expr)
  local p = expr:match("^{(.*)}$") or expr
  if p:sub(1, 1) ~= "." then host.raise("invalid", fmt("%s: jsonpath %q must start with '.' (e.g. {.status.phase})", what, expr)) end
  local toks, i = {}, 1
  while i <= #p do
    local c = p:sub(i, i)
    if c == "." then
      local name = p:match("^[%w_%-]+", i + 1)
      if not name then host.raise("invalid", fmt("%s: jsonpath %q: a field name is expected at %d", what, expr, i + 1)) end
      toks[#toks + 1] = name
      i = i + 1 + #name
    elseif c == "[" then
      local idx = p:match("^%[(%d+)%]", i)
      local key = p:match("^%['([^']+)'%]", i) or p:match('^%["([^"]+)"%]', i)
      if idx then toks[#toks + 1] = tonumber(idx) + 1; i = i + #idx + 2
      elseif key then toks[#toks + 1] = key; i = i + #key + 4
      else host.raise("invalid", fmt("%s: jsonpath %q: [n] or ['key'] expected at %d", what, expr, i)) end
    else
      host.raise("invalid", fmt("%s: jsonpath %q: unexpected %q at %d (filters and wildcards are not supported)", what, expr, c, i))
    end
  end
  return toks
end

local function at_path(obj, toks)
  local v = obj
  for _, t in ipairs(toks) do
    if type(v) ~= "table" then return nil end
    v = v[t]
  end
  return v
end

local function scalar_text(v)
  if v == nil or v == json.null then return nil end
  if type(v) == "table" then return json.encode(v) end
  if math.type(v) == "float" and v == math.floor(v) then return fmt("%d", v) end
  return tostring(v)
end

-- The condition of kube.wait, as kubectl wait's --for: "Ready" or "condition=Ready[=False]",
-- "delete", "create", "jsonpath={.status.phase}[=Running]", or a function of the object.
-- -> {kind, desc, check = function(obj) -> met, detail}
local function wait_condition(what, c)
  if type(c) == "function" then
    return { kind = "function", desc = "<function>", check = function(obj)
      return c(obj) and true or false, "the function returned false"
    end }
  end
  if type(c) ~= "string" or c == "" then
    host.raise("invalid", what .. ": condition must be a string such as \"Available\", \"condition=Ready=False\", " ..
      "\"delete\", \"jsonpath={.status.phase}=Running\", or a function of the object")
  end
  if c == "delete" or c == "create" then return { kind = c, desc = c } end
  local jp = c:match("^jsonpath=(.+)$")
  if jp then
    local expr, want = jp:match("^({.-})=(.*)$")
    expr = expr or jp
    local toks = jsonpath_tokens(what, expr)
    return { kind = "jsonpath", desc = c, check = function(obj)
      local got = scalar_text(at_path(obj, toks))
      if want == nil then return got ~= nil and got ~= "", fmt("%s is %s", expr, got or "absent") end
      return got == want, fmt("%s is %s", expr, got == nil and "absent" or fmt("%q", got))
    end }
  end
  local name, value = c:match("^condition=([%w%.%-_/]+)=(%w+)$")
  if not name then name = c:match("^condition=([%w%.%-_/]+)$") or c:match("^([%a][%w%.%-_/]*)$") end
  if not name then
    host.raise("invalid", fmt("%s: condition %q is not one of NAME, condition=NAME[=VALUE], delete, create, " ..
      "jsonpath={...}[=VALUE]", what, c))
  end
  value = value or "True"
  local lname, lvalue = name:lower(), value:lower()
  return { kind = "condition", desc = "condition=" .. name .. "=" .. value, check = function(obj)
    local st = type(obj.status) == "table" and obj.status or {}
    for _, cond in ipairs(type(st.conditions) == "table" and st.conditions or {}) do
      if type(cond) == "table" and type(cond.type) == "string" and cond.type:lower() == lname then
        local gen = type(obj.metadata) == "table" and obj.metadata.generation or nil
        local og = cond.observedGeneration or st.observedGeneration
        local detail = fmt("%s=%s%s%s", cond.type, tostring(cond.status), type(cond.reason) == "string" and (" " .. cond.reason) or "",
          type(cond.message) == "string" and (": " .. cond.message) or "")
        if type(gen) == "number" and type(og) == "number" and og < gen then
          return false, fmt("generation %d not observed yet (observed %d); %s", gen, og, detail)
        end
        return tostring(cond.status):lower() == lvalue, detail
      end
    end
    return false, "no " .. name .. " condition"
  end }
end

-- Polls fn(now_ms) -> done, value, summary, detail until done or the timeout (a `timeout` error
-- naming the last state). fn may raise to fail at once.
local function poll(call, what, o, fn)
  local t0 = host.now_ms()
  local deadline, polls = t0 + o.timeout * 1000, 0
  while true do
    polls = polls + 1
    local done, value, summary, detail = fn()
    local now = host.now_ms()
    if done then
      summary.polls, summary.waited_ms = polls, math.floor(now - t0 + 0.5)
      return value, summary
    end
    if host.dry_run() then
      summary.polls, summary.dry_run, summary.met = polls, true, false
      return value, summary
    end
    if now >= deadline then
      host.raise("timeout", fmt("%s: not met within %g s (%d polls; last: %s)", what, o.timeout, polls, tostring(detail)))
    end
    host.sleep(call, math.min(o.interval, (deadline - now) / 1000))
  end
end

-- GET the object: the object, or nil when it does not exist (404).
local function get_or_nil(call, what, tg)
  local res = request(call, what, "GET", path_of(tg))
  if res.status == 404 then return nil end
  if res.status ~= 200 then api_error(what, res) end
  return decode(what, res)
end

-- fn: the runbook's condition function, kept out of the call's arguments (a primitive's
-- arguments are data; the audit records "<function>").
local function wait_impl(fn)
  return {
  scope = function(call, kind, name, condition, opts)
    if name == nil then host.raise("invalid", "kube.wait: name is required") end
    local o = wait_opts("kube.wait", opts)
    local tg = target(call, "kube.wait", kind, name, { namespace = o.namespace }, false)
    if tg.subresource then host.raise("invalid", "kube.wait: give the kind, not a subresource") end
    local cond = wait_condition("kube.wait", fn or condition)
    resolved[call] = { tg = tg, o = o, cond = cond }
    return { kind = tg.kind, resource = tg.resource, group = tg.group, name = tg.name, namespace = tg.namespace,
      condition = cond.desc, timeout = o.timeout }
  end,
  effect = function(call)
    local r = resolved[call]
    local tg, cond = r.tg, r.cond
    local what = fmt("kube.wait %s for %s", describe(tg), cond.desc)
    return poll(call, what, r.o, function()
      local obj = get_or_nil(call, what, tg)
      local sum = { kind = tg.kind, name = tg.name, namespace = tg.namespace, condition = cond.desc, met = true }
      if cond.kind == "delete" then
        if obj == nil then return true, { deleted = true, name = tg.name, namespace = tg.namespace }, sum end
        return false, nil, sum, "the object still exists (resourceVersion " .. tostring(rv_of(obj)) .. ")"
      end
      if obj == nil then
        if cond.kind == "create" then return false, nil, sum, "the object does not exist yet" end
        host.raise("not_found", fmt("%s: %s not found", what, describe(tg)))
      end
      sum.resourceVersion = rv_of(obj)
      if cond.kind == "create" then return true, obj, sum end
      local ok, met, detail = pcall(cond.check, obj)
      if not ok then error(met, 0) end
      if met then sum.detail = detail; return true, obj, sum end
      return false, obj, sum, detail
    end)
  end,
  }
end

local wait_data = prim.define("kube.wait", wait_impl(nil))

function M.wait(kind, name, condition, opts)
  if type(condition) == "function" then
    return prim.define("kube.wait", wait_impl(condition))(kind, name, "<function>", opts)
  end
  return wait_data(kind, name, condition, opts)
end

-- kubectl's rollout status of a Deployment: -> done, message (raises when the deadline passed)
local function deployment_rollout(what, d)
  local md, spec = type(d.metadata) == "table" and d.metadata or {}, type(d.spec) == "table" and d.spec or {}
  local st = type(d.status) == "table" and d.status or {}
  local gen, og = tonumber(md.generation) or 0, tonumber(st.observedGeneration) or 0
  if gen > og then return false, "waiting for the deployment spec update to be observed" end
  for _, c in ipairs(type(st.conditions) == "table" and st.conditions or {}) do
    if type(c) == "table" and c.type == "Progressing" and c.reason == "ProgressDeadlineExceeded" then
      host.raise("failed", fmt("%s: the rollout exceeded its progress deadline (%s)", what, tostring(c.message)))
    end
  end
  local want = tonumber(spec.replicas) or 1
  local upd, reps, avail = tonumber(st.updatedReplicas) or 0, tonumber(st.replicas) or 0, tonumber(st.availableReplicas) or 0
  if upd < want then return false, fmt("%d out of %d new replicas have been updated", upd, want) end
  if reps > upd then return false, fmt("%d old replicas are pending termination", reps - upd) end
  if avail < upd then return false, fmt("%d of %d updated replicas are available", avail, upd) end
  return true, "successfully rolled out"
end

M.rollout_status = prim.define("kube.rollout_status", {
  scope = function(call, name, opts)
    local o = wait_opts("kube.rollout_status", opts)
    local kind = type(opts) == "table" and opts.kind or "deployment"
    local tg = target(call, "kube.rollout_status", kind, name, { namespace = o.namespace }, false)
    if tg.resource ~= "deployments" or tg.group ~= "apps" or tg.subresource then
      host.raise("invalid", fmt("kube.rollout_status: %s: only deployments are followed (statefulsets and daemonsets are not supported yet)", tg.resource))
    end
    resolved[call] = { tg = tg, o = o }
    return { kind = tg.kind, name = tg.name, namespace = tg.namespace, timeout = o.timeout }
  end,
  effect = function(call)
    local r = resolved[call]
    local tg = r.tg
    local what = "kube.rollout_status " .. describe(tg)
    return poll(call, what, r.o, function()
      local d = get_json(call, what, path_of(tg))
      local done, msg = deployment_rollout(what, d)
      local st = type(d.status) == "table" and d.status or {}
      local ann = type(d.metadata) == "table" and type(d.metadata.annotations) == "table" and d.metadata.annotations or {}
      local out = { done = done, message = msg, revision = ann["deployment.kubernetes.io/revision"],
        replicas = st.replicas or 0, updated_replicas = st.updatedReplicas or 0,
        available_replicas = st.availableReplicas or 0, object = d }
      return done, out, { name = tg.name, namespace = tg.namespace, done = done, message = msg,
        revision = out.revision, resourceVersion = rv_of(d) }, msg
    end)
  end,
})

-- ---- incident verbs: kube.logs, kube.events, kube.delete, kube.rollout_undo ----

local DEFAULT_LOG_LIMIT = 10 * 1024 * 1024

-- "90", 90, "30s", "5m", "2h" -> seconds (integer, rounded up)
local function seconds_of(what, v)
  local n
  if type(v) == "number" then n = v
  elseif type(v) == "string" then
    local num, unit = v:match("^(%d+%.?%d*)([smhd]?)$")
    n = num and tonumber(num) * ({ [""] = 1, s = 1, m = 60, h = 3600, d = 86400 })[unit] or nil
  end
  if not n or n ~= n or n <= 0 or n > 10 * 365 * 86400 then
    host.raise("invalid", fmt("%s: since must be a positive number of seconds or a duration like \"10m\", \"2h\"", what))
  end
  return math.ceil(n)
end

M.logs = prim.define("kube.logs", {
  scope = function(call, pod, opts)
    local what = "kube.logs"
    if opts ~= nil and type(opts) ~= "table" then host.raise("invalid", what .. ": options must be a table") end
    opts = opts or {}
    local tg = target(call, what, "pods", pod, { namespace = opts.namespace }, false)
    local e = resolve(call, "pods")
    if not e.subs.log then host.raise("not_found", what .. ": the API server offers no pods/log subresource") end
    tg.subresource = "log"
    local q, shown = {}, { kind = "Pod", name = tg.name, namespace = tg.namespace }
    if opts.container ~= nil then
      if not valid_label(opts.container) then host.raise("invalid", fmt("%s: container %q is not a container name", what, tostring(opts.container))) end
      q[#q + 1] = "container=" .. opts.container
      shown.container = opts.container
    end
    if opts.tail ~= nil then
      if math.type(opts.tail) ~= "integer" or opts.tail < 0 then host.raise("invalid", what .. ": tail must be a non-negative integer") end
      q[#q + 1] = "tailLines=" .. opts.tail
      shown.tail = opts.tail
    end
    if opts.since ~= nil then
      shown.since = seconds_of(what, opts.since)
      q[#q + 1] = "sinceSeconds=" .. shown.since
    end
    if opts.previous ~= nil and type(opts.previous) ~= "boolean" then host.raise("invalid", what .. ": previous must be a boolean") end
    if opts.previous then q[#q + 1] = "previous=true"; shown.previous = true end
    if opts.timestamps then q[#q + 1] = "timestamps=true" end
    local limit = opts.limit_bytes or DEFAULT_LOG_LIMIT
    if math.type(limit) ~= "integer" or limit < 1 or limit > 64 * 1024 * 1024 then
      host.raise("invalid", what .. ": limit_bytes must be an integer in 1..67108864")
    end
    q[#q + 1] = "limitBytes=" .. limit
    resolved[call] = { tg = tg, query = concat(q, "&"), limit = limit }
    return shown
  end,
  effect = function(call)
    local r = resolved[call]
    local what = "kube.logs " .. describe(r.tg)
    local res = request(call, what, "GET", path_of(r.tg), { query = r.query, accept = "text/plain, */*",
      max_response = r.limit + 65536 })
    if res.status ~= 200 then api_error(what, res) end
    local text = res.body or ""
    local _, lines = text:gsub("\n", "")
    return text, { bytes = #text, lines = lines, truncated = #text >= r.limit or nil }
  end,
})

local function event_time(ev)
  local t = ev.lastTimestamp
  if type(t) ~= "string" then t = ev.eventTime end
  if type(t) ~= "string" then t = ev.firstTimestamp end
  if type(t) ~= "string" and type(ev.metadata) == "table" then t = ev.metadata.creationTimestamp end
  return type(t) == "string" and t or ""
end

M.events = prim.define("kube.events", {
  scope = function(call, kind, name, opts)
    local what = "kube.events"
    if opts ~= nil and type(opts) ~= "table" then host.raise("invalid", what .. ": options must be a table") end
    opts = opts or {}
    local fs = {}
    local shown = {}
    if kind ~= nil then
      local e, sub = resolve(call, kind)
      if sub then host.raise("invalid", what .. ": give the kind, not a subresource") end
      if type(e.kind) ~= "string" then host.raise("invalid", fmt("%s: %s has no kind name", what, e.resource)) end
      fs[#fs + 1] = "involvedObject.kind=" .. e.kind
      shown.kind = e.kind
      if name ~= nil then
        check_name(call, what, e, name)
        fs[#fs + 1] = "involvedObject.name=" .. name
        shown.name = name
      end
    elseif name ~= nil then
      host.raise("invalid", what .. ": a name needs its kind (kube.events(\"pod\", name))")
    end
    local tg = target(call, what, "events", nil, { namespace = opts.namespace }, false)
    shown.namespace = tg.namespace
    resolved[call] = { tg = tg, fs = concat(fs, ",") }
    return shown
  end,
  effect = function(call)
    local r = resolved[call]
    local what = "kube.events " .. describe(r.tg)
    local q = { "limit=500" }
    if r.fs ~= "" then q[#q + 1] = "fieldSelector=" .. urlencode(r.fs) end
    local items, cont = {}, nil
    repeat
      local page = get_json(call, what, path_of(r.tg, false), { query = concat(q, "&") .. (cont and ("&continue=" .. urlencode(cont)) or "") })
      for _, it in ipairs(type(page.items) == "table" and page.items or {}) do
        if type(it) == "table" then items[#items + 1] = it end
      end
      cont = type(page.metadata) == "table" and page.metadata.continue or nil
      if cont == "" or cont == json.null then cont = nil end
    until not cont or #items >= 10000
    sort(items, function(a, b) return event_time(a) < event_time(b) end)
    local warnings = 0
    for _, ev in ipairs(items) do if ev.type == "Warning" then warnings = warnings + 1 end end
    return json.array(items), { count = #items, warnings = warnings, fields = r.fs ~= "" and r.fs or nil }
  end,
})

local DELETE_WHY = "a deleted pod cannot be restored by rbl; its controller, if it has one, creates a new pod"

M.delete = prim.define("kube.delete", {
  scope = function(call, kind, name, opts)
    local what = "kube.delete"
    if name == nil then host.raise("invalid", what .. ": name is required") end
    if opts ~= nil and type(opts) ~= "table" then host.raise("invalid", what .. ": options must be a table") end
    opts = opts or {}
    local tg = target(call, what, kind, name, { namespace = opts.namespace }, true)
    if tg.resource ~= "pods" or tg.group ~= "" or tg.subresource then
      host.raise("invalid", fmt("%s: only pods can be deleted (a pod's controller replaces it); %s cannot", what, tg.resource))
    end
    local grace = opts.grace
    if grace ~= nil and (math.type(grace) ~= "integer" or grace < 0) then
      host.raise("invalid", what .. ": grace must be a non-negative integer (seconds)")
    end
    resolved[call] = { tg = tg, grace = grace }
    return { kind = "Pod", name = tg.name, namespace = tg.namespace, grace = grace, irreversible = true }
  end,
  effect = function(call)
    local r = resolved[call]
    local tg = r.tg
    local what = "kube.delete " .. describe(tg)
    local pod = get_json(call, what, path_of(tg))
    local md = type(pod.metadata) == "table" and pod.metadata or {}
    local owner
    for _, o in ipairs(type(md.ownerReferences) == "table" and md.ownerReferences or {}) do
      if type(o) == "table" and o.controller == true then owner = tostring(o.kind) .. "/" .. tostring(o.name) end
    end
    local body = { apiVersion = "v1", kind = "DeleteOptions", preconditions = { uid = md.uid },
      gracePeriodSeconds = r.grace }
    if dry() then body.dryRun = json.array({ "All" }) end
    if not dry() then -- what was there: a canceled or failed delete's result carries it (not undoable)
      prim.before(call, { prim = "kube.delete", kind = "Pod", name = tg.name, namespace = tg.namespace, uid = md.uid,
        owner = owner, phase = type(pod.status) == "table" and pod.status.phase or nil, tenant = tg.tenant,
        run = (host.info() or {}).run, call = call:id() }, nil, "kube.delete")
    end
    local res = request(call, what, "DELETE", path_of(tg), { query = dry() and "dryRun=All" or nil, body = json.encode(body) })
    if res.status ~= 200 and res.status ~= 202 then api_error(what, res) end
    local st = type(pod.status) == "table" and pod.status or {}
    local out = { deleted = not dry(), dry_run = dry() or nil, name = tg.name, namespace = tg.namespace, uid = md.uid,
      owner = owner, phase = st.phase, node = type(pod.spec) == "table" and pod.spec.nodeName or nil }
    return out, { kind = "Pod", name = tg.name, namespace = tg.namespace, uid = md.uid, owner = owner, phase = st.phase,
      dry_run = dry(), irreversible = true, irreversible_why = DELETE_WHY .. (owner and (" (" .. owner .. ")") or "") }
  end,
})

local REVISION = "deployment.kubernetes.io/revision"
local HASH_LABEL = "pod-template-hash"
-- Deployment annotations kubectl's rollout undo keeps from the Deployment, never from the ReplicaSet.
local UNDO_SKIP = { ["kubectl.kubernetes.io/last-applied-configuration"] = true, [REVISION] = true,
  ["deployment.kubernetes.io/revision-history"] = true, ["deployment.kubernetes.io/desired-replicas"] = true,
  ["deployment.kubernetes.io/max-replicas"] = true, ["deprecated.deployment.rollback.to"] = true }

local function deep_equal(a, b)
  if type(a) ~= "table" or type(b) ~= "table" then return a == b end
  for k, v in pairs(a) do if not deep_equal(v, b[k]) then return false end end
  for k in pairs(b) do if a[k] == nil then return false end end
  return true
end

local function without_hash(tmpl)
  local t = json.decode(json.encode(tmpl))
  if type(t) == "table" and type(t.metadata) == "table" and type(t.metadata.labels) == "table" then
    t.metadata.labels[HASH_LABEL] = nil
    if next(t.metadata.labels) == nil then t.metadata.labels = nil end
  end
  return t
end

-- The ReplicaSets a Deployment controls, as kubectl finds them: by its selector, then by controller uid.
local function replicasets_of(call, what, tg, d)
  local sel = type(d.spec) == "table" and type(d.spec.selector) == "table" and d.spec.selector or {}
  if sel.matchExpressions ~= nil and sel.matchExpressions ~= json.null and #sel.matchExpressions > 0 then
    host.raise("invalid", what .. ": a selector with matchExpressions is not supported; undo it with kube_patch")
  end
  local parts = {}
  for k, v in pairs(type(sel.matchLabels) == "table" and sel.matchLabels or {}) do parts[#parts + 1] = k .. "=" .. tostring(v) end
  sort(parts)
  local e = resolve(call, "replicasets.apps")
  local rtg = { group = e.group, version = e.version, resource = e.resource, namespace = tg.namespace }
  local list = get_json(call, what, path_of(rtg, false), { query = "labelSelector=" .. urlencode(concat(parts, ",")) })
  local uid, out = d.metadata.uid, {}
  for _, rs in ipairs(type(list.items) == "table" and list.items or {}) do
    for _, o in ipairs(type(rs.metadata) == "table" and type(rs.metadata.ownerReferences) == "table" and rs.metadata.ownerReferences or {}) do
      if o.controller == true and o.uid == uid then
        local ann = type(rs.metadata.annotations) == "table" and rs.metadata.annotations or {}
        local rev = tonumber(ann[REVISION])
        if rev then out[#out + 1] = { rev = rev, rs = rs } end
      end
    end
  end
  sort(out, function(a, b) return a.rev > b.rev end)
  return out
end

M.rollout_undo = prim.define("kube.rollout_undo", {
  scope = function(call, name, opts)
    local what = "kube.rollout_undo"
    if opts ~= nil and type(opts) ~= "table" then host.raise("invalid", what .. ": options must be a table") end
    opts = opts or {}
    local tg = target(call, what, "deployments.apps", name, { namespace = opts.namespace }, true)
    local to = opts.to_revision
    if to ~= nil and (math.type(to) ~= "integer" or to < 1) then host.raise("invalid", what .. ": to_revision must be a positive integer") end
    tg.to = to
    resolved[call] = tg
    return { kind = tg.kind, name = tg.name, namespace = tg.namespace, to_revision = to }
  end,
  effect = function(call)
    local tg = resolved[call]
    local what = "kube.rollout_undo " .. describe(tg)
    local d = get_json(call, what, path_of(tg))
    if type(d.spec) == "table" and d.spec.paused == true then
      host.raise("conflict", what .. ": the deployment is paused; resume it first")
    end
    local revs = replicasets_of(call, what, tg, d)
    local pick
    if tg.to then
      for _, r in ipairs(revs) do if r.rev == tg.to then pick = r end end
      if not pick then host.raise("not_found", fmt("%s: revision %d not found (revisions: %s)", what, tg.to,
        #revs > 0 and concat((function() local t = {} for i, r in ipairs(revs) do t[i] = r.rev end return t end)(), ", ") or "none")) end
    else
      pick = revs[2]
      if not pick then host.raise("not_found", fmt("%s: no previous revision (no rollout history)", what)) end
    end
    local ann = type(d.metadata.annotations) == "table" and d.metadata.annotations or {}
    local current = ann[REVISION]
    local tmpl = without_hash(pick.rs.spec.template)
    if deep_equal(tmpl, without_hash(d.spec.template)) then
      return d, { name = tg.name, namespace = tg.namespace, skipped = true, from_revision = current,
        to_revision = pick.rev, reason = "the current template already matches revision " .. pick.rev }
    end
    -- the revision's template and the annotations its ReplicaSet carries (a change-cause), as kubectl
    -- does; the controller-managed revision annotations are left to the controller
    local ops = { { op = "replace", path = "/spec/template", value = tmpl } }
    local rsann = type(pick.rs.metadata.annotations) == "table" and pick.rs.metadata.annotations or {}
    local keys = {}
    for k in pairs(rsann) do if not UNDO_SKIP[k] and ann[k] ~= rsann[k] then keys[#keys + 1] = k end end
    sort(keys)
    if #keys > 0 and type(d.metadata.annotations) ~= "table" then
      local all = {}
      for _, k in ipairs(keys) do all[k] = rsann[k] end
      ops[#ops + 1] = { op = "add", path = "/metadata/annotations", value = all }
    else
      for _, k in ipairs(keys) do ops[#ops + 1] = { op = "add", path = "/metadata/annotations/" .. esc(k), value = rsann[k] } end
    end
    local obj, summary, before, undo = patch_effect("kube.rollout_undo", call, tg, ops, "json")
    summary.from_revision, summary.to_revision = current, pick.rev
    return obj, summary, before, undo
  end,
})

-- The inverse of a recorded patch (auto rollback and `rbl rollback`): refuses when the object
-- changed since the patch unless forced.
undo_patch = prim.define("kube_undo", {
  write = true,
  plan = false,
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
    -- (a write whose answer never came has none: its undo reads back from the version before)
    local rv_known = rec.uncertain == true and rec.resourceVersion_before or rec.resourceVersion
    if type(rv_known) ~= "string" or rv_known == "" then
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
      namespace = tg.namespace, subresource = tg.subresource, dry_run = dry(), forced = force or nil,
      uncertain = rec.uncertain or nil }
    local skey = tostring(rec.run) .. "#" .. tostring(rec.call)
    -- a write whose answer never came: unchanged since its before-state means it was not applied
    if rec.uncertain and rv and rv == rec.resourceVersion_before then
      summary.ops, summary.noop, summary.not_applied = 0, true, true
      state.undo_status[skey] = "not_needed"
      return now, summary
    end
    if rec.uncertain then -- noop
    elseif type(rec.after) == "table" and not rec.redacted then
      -- by the fields: a newer resourceVersion alone (a controller's status write) is not a change
      -- of what the patch changed
      for _, f in ipairs(rec.after) do
        local ex, v = get_at(now, from_ptr(f.path))
        if (ex ~= (f.exists == true) or (ex and not same_value(v, f.value))) and not force then
          local function show(e, x) return e and (type(x) == "table" and "changed" or fmt("%q", tostring(x))) or "absent" end
          host.raise("conflict", fmt("%s: the object changed since the patch (%s is now %s, the patch left %s); " ..
            "not undone (--force to undo anyway)", what, f.path, show(ex, v), show(f.exists, f.value)))
        end
      end
    elseif rv ~= rec.resourceVersion and not force and not chained then
      host.raise("conflict", fmt("%s: the object changed since the patch (resourceVersion now %s, the patch left %s); not undone (--force to undo anyway)",
        what, tostring(rv), tostring(rec.resourceVersion)))
    end
    local ops = inverse_ops(rec.fields, now)
    summary.ops = #ops
    if #ops == 0 then
      summary.noop = true
      state.undone[key] = { from_rv = rec.resourceVersion_before, now_rv = rv }
      state.undo_status[skey] = "not_needed"
      return now, summary
    end
    if not force and type(rec.after) == "table" and not rec.redacted then
      -- atomic against a concurrent change of what the patch changed, not against status writes
      local tests = {}
      for _, f in ipairs(rec.after) do
        if f.exists then tests[#tests + 1] = { op = "test", path = f.path, value = f.value } end
      end
      for i = #tests, 1, -1 do table.insert(ops, 1, tests[i]) end
    elseif not force and rv then
      table.insert(ops, 1, { op = "test", path = "/metadata/resourceVersion", value = rv })
    end
    local res = request(call, what, "PATCH", path_of(tg),
      { query = write_query(), body = json.encode(ops), ctype = PATCH_TYPES.json })
    if res.status ~= 200 then api_error(what, res) end
    local obj = decode(what, res)
    summary.resourceVersion = rv_of(obj)
    state.undo_status[skey] = "done"
    if not dry() then state.undone[key] = { from_rv = rec.resourceVersion_before, now_rv = rv_of(obj) } end
    return obj, summary
  end,
})
M.undo = undo_patch
-- What the last undo of a recorded change found: "done" or "not_needed" (nil: not undone here).
function M.undo_status(rec) return state.undo_status[tostring(rec.run) .. "#" .. tostring(rec.call)] end

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
    kube = { get = M.get, list = M.list, rollout_restart = M.rollout_restart, scale = M.scale, can_i = M.can_i,
             wait = M.wait, rollout_status = M.rollout_status, logs = M.logs, events = M.events, delete = M.delete,
             rollout_undo = M.rollout_undo },
    kube_patch = M.patch,
  }
  return g
end

return M
