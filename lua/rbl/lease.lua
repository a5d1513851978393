-- serve.ha's Lease client (docs/serve.md, "Across replicas"). It runs in `rbl serve`'s lease
-- agent (src/serve/agent.c), one engine for the server's life, one request at a time: serve
-- (src/serve/ha.c) writes a JSON line, M.handle answers one. The cluster is resolved exactly as
-- kube.* resolves it (rbl.kubeconfig over the config's `kube` table), and every request passes
-- the gate as the "kube-lease" class: GET/PUT of a named Lease and POST of the collection in
-- the lease namespace, nothing else (docs/gate.md, "Lease rules").
--
-- Every answer is read as hostile: a Lease must name itself, its namespace and a
-- resourceVersion; its times are never compared with the local clock. Expiry is judged as
-- client-go's leader election judges it: by the local (monotonic) time since this replica last
-- saw the Lease's resourceVersion change, against the holder's leaseDurationSeconds.
local host = require "rbl.host"
local http = require "rbl.http"
local json = require "rbl.json"
local kubeconfig = require "rbl.kubeconfig"

local M = {}
local type, tostring, pcall, error, pairs, tonumber = type, tostring, pcall, error, pairs, tonumber
local fmt = string.format

local A = "rbl.io/" -- annotation prefix
local MAX_TRIES = 3

local S = { conn = nil, ns = nil, me = nil, seconds = 15, timeout = 5,
  obj = {},  -- name -> the Lease as last read or written (what a PUT starts from)
  seen = {}, -- name -> { rv = resourceVersion, t = local ms when this rv was first seen }
}

local function cfg_kube()
  local c = host.config()
  local k = type(c) == "table" and c.kube or nil
  return type(k) == "table" and k or {}
end

local function path(name)
  return "/apis/coordination.k8s.io/v1/namespaces/" .. S.ns .. "/leases" .. (name and ("/" .. name) or "")
end

-- MicroTime: RFC 3339 with exactly six fraction digits (the API server refuses anything else).
local function microtime()
  return os.date("!%Y-%m-%dT%H:%M:%S", os.time()) .. ".000000Z"
end

local function request(method, name, body)
  local call = host.begin("serve.lease", method, name)
  host.intent(call, { method = method, lease = name or "(create)" }, { namespace = S.ns }, method ~= "GET")
  local c = S.conn
  local ok, res
  for attempt = 1, 2 do
    local headers, tls = kubeconfig.credentials(c, call)
    headers[#headers + 1] = "Accept: application/json"
    headers[#headers + 1] = "User-Agent: rbl-serve"
    if body then headers[#headers + 1] = "Content-Type: application/json" end
    ok, res = pcall(http.request, call, { method = method, url = c.server .. path(method ~= "POST" and name or nil),
      headers = headers, body = body, tls = tls, timeout = S.timeout, connect_timeout = S.timeout,
      max_response = 1024 * 1024, retries = method == "GET" and 1 or 0 })
    if not ok or res.status ~= 401 or attempt == 2 or not kubeconfig.invalidate(c) then break end
  end
  host.result(call, ok and res.status < 500, ok and {} or res, { status = ok and res.status or nil })
  if not ok then
    local msg = type(res) == "table" and res.message or tostring(res)
    error(fmt("%s %s: %s", method, c.server .. path(name), tostring(msg)), 0)
  end
  return res
end

-- The API's Status message, for errors.
local function status_text(res)
  local ok, st = pcall(json.decode, res.body or "")
  local msg = ok and type(st) == "table" and type(st.message) == "string" and st.message or
    (res.body or ""):sub(1, 200)
  return fmt("HTTP %d: %s", res.status, msg)
end

local function str(v, max)
  return type(v) == "string" and #v <= max and v or nil
end

-- A Lease answer, read as hostile. Returns the object and a plain view of it, or raises.
local function lease_of(res, name)
  local ok, o = pcall(json.decode, res.body or "")
  if not ok or type(o) ~= "table" or o.kind ~= "Lease" or type(o.metadata) ~= "table" then
    error(fmt("the API server's answer for Lease %s/%s is not a Lease", S.ns, name), 0)
  end
  local md = o.metadata
  local rv = str(md.resourceVersion, 64)
  if md.name ~= name or md.namespace ~= S.ns or not rv or rv == "" then
    error(fmt("the API server answered for another Lease (%s/%s) or without a resourceVersion when asked for %s/%s",
      tostring(md.namespace), tostring(md.name), S.ns, name), 0)
  end
  local spec = type(o.spec) == "table" and o.spec or {}
  local ann = type(md.annotations) == "table" and md.annotations or {}
  local dur = math.tointeger(spec.leaseDurationSeconds)
  if not dur or dur < 1 or dur > 86400 then dur = S.seconds end
  local v = { rv = rv, holder = str(spec.holderIdentity, 256) or "", duration = dur,
    transitions = math.tointeger(spec.leaseTransitions) or 0,
    state = str(ann[A .. "state"], 32) or "", run = str(ann[A .. "run"], 64) or "",
    ended = tonumber(str(ann[A .. "ended"], 32) or "") }
  S.obj[name] = o
  local now = host.now_ms()
  local seen = S.seen[name]
  if not seen or seen.rv ~= rv then S.seen[name] = { rv = rv, t = now } end
  v.quiet_ms = now - S.seen[name].t
  return o, v
end

local function get(name)
  local res = request("GET", name)
  if res.status == 404 then return nil end
  if res.status ~= 200 then error(fmt("GET Lease %s/%s: %s", S.ns, name, status_text(res)), 0) end
  return lease_of(res, name)
end

local function annotate(o, fields)
  o.metadata.annotations = type(o.metadata.annotations) == "table" and o.metadata.annotations or {}
  for k, v in pairs(fields) do o.metadata.annotations[A .. k] = v end
end

-- PUT of the Lease as last read, changed by fn; the resourceVersion read goes with it (the API
-- server refuses a Lease update without one). Returns the new view, or nil on 409.
local function put(name, fn)
  local o = S.obj[name]
  o.apiVersion, o.kind = "coordination.k8s.io/v1", "Lease"
  o.metadata.managedFields = nil
  o.spec = type(o.spec) == "table" and o.spec or {}
  fn(o)
  local res = request("PUT", name, json.encode(o))
  if res.status == 409 then return nil end
  if res.status ~= 200 then error(fmt("PUT Lease %s/%s: %s", S.ns, name, status_text(res)), 0) end
  local _, v = lease_of(res, name)
  return v
end

local function mine(o, meta, state, transitions)
  local now = microtime()
  o.spec.holderIdentity = S.me
  o.spec.leaseDurationSeconds = math.tointeger(S.seconds)
  o.spec.acquireTime = now
  o.spec.renewTime = now
  o.spec.leaseTransitions = transitions
  annotate(o, { state = state, incident = meta.incident or "", run = meta.run or "",
    started = tostring(os.time()), ended = "" })
end

-- M.init{namespace, identity, seconds}: resolves the cluster, binds the gate, and reads one
-- Lease to show the API server and RBAC let this replica read Leases there.
function M.init(req)
  S.ns, S.me = req.namespace, req.identity
  S.seconds = tonumber(req.seconds) or 15
  S.timeout = math.max(1, math.min(10, S.seconds / 3))
  local c = kubeconfig.load(cfg_kube())
  http.bind_endpoint("kube-lease", c.server .. " " .. S.ns)
  S.conn = c
  local res = request("GET", "rbl-access-check")
  if res.status == 403 or res.status == 401 then
    error(fmt("the API server %s refuses to let this replica read Leases in namespace %s (%s): grant get, create " ..
      "and update on leases in %s to its identity (deploy/rbl-serve.yaml has the Role)", c.server, S.ns,
      status_text(res), S.ns), 0)
  end
  if res.status ~= 404 and res.status ~= 200 then
    error(fmt("GET a Lease in namespace %s on %s: %s", S.ns, c.server, status_text(res)), 0)
  end
  return { server = c.server, context = c.context }
end

-- M.acquire{name, incident, run, cooldown}: may this replica run the incident now?
--   acquired   - the Lease is now this replica's, state running
--   held       - another replica holds it and renews it (holder)
--   elsewhere  - another replica ran it (state done or interrupted) less than cooldown ago
--   takeover   - the holder stopped renewing for its leaseDurationSeconds while running: the Lease
--                is now this replica's, state interrupted; the caller must not run (holder, run)
function M.acquire(req)
  local name = req.name
  -- a Lease naming this identity that this process never took is a previous incarnation's
  -- (a fixed identity across restarts): it is judged like any other holder's
  local known = S.obj[name] ~= nil
  for _ = 1, MAX_TRIES do
    local o, v = get(name)
    local other = v and v.holder ~= "" and (v.holder ~= S.me or not known)
    if not o then
      local body = { apiVersion = "coordination.k8s.io/v1", kind = "Lease",
        metadata = { name = name, namespace = S.ns, labels = { ["app.kubernetes.io/managed-by"] = "rbl" } },
        spec = {} }
      mine(body, req, "running", 0)
      local res = request("POST", nil, json.encode(body))
      if res.status == 201 or res.status == 200 then
        lease_of(res, name)
        return { result = "acquired" }
      end
      if res.status ~= 409 then error(fmt("POST Lease %s/%s: %s", S.ns, name, status_text(res)), 0) end
      -- AlreadyExists: another replica created it first; read it again
    elseif v.state == "running" and other then
      if v.quiet_ms < v.duration * 1000 then
        return { result = "held", holder = v.holder, run = v.run }
      end
      local prev_holder, prev_run = v.holder, v.run
      local nv = put(name, function(x)
        mine(x, req, "interrupted", v.transitions + 1)
        annotate(x, { ["interrupted-by"] = S.me, ["interrupted-at"] = microtime(),
          ["interrupted-holder"] = prev_holder, ["interrupted-run"] = prev_run, ended = tostring(os.time()) })
      end)
      if nv then return { result = "takeover", holder = prev_holder, run = prev_run, quiet_ms = v.quiet_ms } end
    elseif v.state ~= "running" and other and v.ended and (tonumber(req.cooldown) or 0) > 0
      and os.time() - v.ended < tonumber(req.cooldown) then
      return { result = "elsewhere", holder = v.holder, state = v.state, run = v.run }
    else
      local nv = put(name, function(x) mine(x, req, "running", v.transitions + (v.holder == S.me and 0 or 1)) end)
      if nv then return { result = "acquired" } end
    end
  end
  return { result = "held", holder = "(changing: conflicts on every try)" }
end

-- M.renew{name}: renewTime now, with the resourceVersion last seen. On 409 the Lease is read
-- again: still this replica's (someone changed another field) -> renewed again; else lost.
function M.renew(req)
  local name = req.name
  if not S.obj[name] then return { result = "lost", holder = "(never held)" } end
  for _ = 1, MAX_TRIES do
    local v = put(name, function(x) x.spec.renewTime = microtime() end)
    if v then return { result = "renewed" } end
    local o, cur = get(name)
    if not o then return { result = "lost", holder = "(deleted)" } end
    if cur.holder ~= S.me or cur.state ~= "running" then return { result = "lost", holder = cur.holder } end
  end
  error(fmt("renew Lease %s/%s: a conflict on every try", S.ns, name), 0)
end

-- M.release{name, outcome}: the run ended here: state done, ended now. Kept (not deleted: this
-- replica may not delete Leases) so other replicas see the cooldown.
function M.release(req)
  local name = req.name
  if not S.obj[name] then return { result = "released" } end
  for _ = 1, MAX_TRIES do
    local v = put(name, function(x)
      x.spec.renewTime = microtime()
      annotate(x, { state = "done", outcome = tostring(req.outcome or ""), ended = tostring(os.time()) })
    end)
    if v then S.obj[name], S.seen[name] = nil, nil; return { result = "released" } end
    local o, cur = get(name)
    if not o or cur.holder ~= S.me then S.obj[name], S.seen[name] = nil, nil; return { result = "lost", holder = o and cur.holder or "" } end
  end
  error(fmt("release Lease %s/%s: a conflict on every try", S.ns, name), 0)
end

-- M.forget{name}: drops what this replica remembers of a Lease it no longer follows.
function M.forget(req)
  S.obj[req.name], S.seen[req.name] = nil, nil
  return { result = "forgotten" }
end

local OPS = { init = M.init, acquire = M.acquire, renew = M.renew, release = M.release, forget = M.forget }

-- One request line in, one answer line out (both JSON objects; the answer echoes "id").
function M.handle(line)
  local ok, req = pcall(json.decode, line)
  if not ok or type(req) ~= "table" or type(OPS[req.op]) ~= "function" then
    return json.encode({ error = "not a lease agent request" })
  end
  if req.op ~= "init" and not S.conn then return json.encode({ id = req.id, error = "not initialised" }) end
  if req.name ~= nil and (type(req.name) ~= "string" or not req.name:match("^rbl%-[0-9a-f]+$")) then
    return json.encode({ id = req.id, error = "bad lease name" })
  end
  local ok2, out = pcall(OPS[req.op], req)
  if not ok2 then
    local msg = type(out) == "table" and (out.message or out.code) or out
    return json.encode({ id = req.id, error = tostring(msg) })
  end
  out.id = req.id
  return json.encode(out)
end

return M
