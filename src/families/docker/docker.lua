-- The docker family: docker_exec, docker.ps/inspect/restart/logs/stop/start/kill/stats/top, and
-- detect_runtime("docker").
-- Every container reference is resolved to a full id and its tenant label checked in scope();
-- effects then address the container by that full id only (see src/families/docker/docker.md).
local host = require "rbl.host"
local prim = require "rbl.prim"
local http = require "rbl.http"
local json = require "rbl.json"
local dockerc = require "rbl.docker.c"

local M = {}
local type, tostring, pcall, error, ipairs, pairs = type, tostring, pcall, error, ipairs, pairs
local fmt, concat = string.format, table.concat

local DEFAULT_HOST = "unix:///var/run/docker.sock"
local MAX_API = "1.43"            -- newest Engine API version this module is written against
local API_TIMEOUT = 60            -- seconds, for every call but exec start
local MAX_OUTPUT = 64 * 1024 * 1024

-- Per run: one Lua state per run, so module state is per run.
local state = { ep = nil, version = nil, ping = nil }
local resolved = setmetatable({}, { __mode = "k" }) -- call -> target found by scope()

local function cfg()
  local c = host.config()
  return type(c) == "table" and type(c.docker) == "table" and c.docker or {}
end

-- The tenant label key: config labels.docker (as docs/config.md says; the C gate reads it too).
local function label_key()
  if cfg().label ~= nil then
    host.raise("invalid", "config: docker.label is not a setting; the Docker tenant label key is labels.docker")
  end
  local c = host.config()
  local l = type(c) == "table" and c.labels or nil
  local k = type(l) == "table" and l.docker or nil
  return type(k) == "string" and k ~= "" and k or "rbl.tenant"
end

-- The host-Lua scope checks run unless this is the test build that disables them
-- (RBL_MUTANT_NO_LUA_SCOPE, tests/gate/run_mutation.sh): there the C gate alone decides.
local function lua_scope()
  if not host.mutant_no_lua_scope() then return true end
  if not state.mutant_warned then
    state.mutant_warned = true
    host.progress("rbl: MUTANT TEST BUILD: host-Lua scope checks are off (docker)")
  end
  return false
end

local function env(name)
  local v = os.getenv(name)
  if v == "" then return nil end
  return v
end

-- The endpoint: DOCKER_HOST, else the config's docker.host, else the local socket.
local function endpoint()
  if state.ep then return state.ep end
  local c = cfg()
  local raw = env("DOCKER_HOST") or (type(c.host) == "string" and c.host) or DEFAULT_HOST
  local ep = { raw = raw }
  if raw:sub(1, 7) == "unix://" then
    ep.socket = raw:sub(8)
    ep.base = "http://docker"
    ep.name = raw
  else
    local scheme, hostport = raw:match("^(%a+)://([^/]+)/?$")
    if not (scheme == "tcp" or scheme == "http" or scheme == "https") then
      host.raise("invalid", fmt("docker: unsupported endpoint %q (use unix:///path or tcp://host:port)", raw))
    end
    local verify = env("DOCKER_TLS_VERIFY")
    local use_tls = scheme == "https" or (verify ~= nil and verify ~= "0") or c.tls ~= nil
    if use_tls then
      local t = type(c.tls) == "table" and c.tls or {}
      local dir = env("DOCKER_CERT_PATH") or t.cert_path or ((env("HOME") or "") .. "/.docker")
      ep.tls = { ca_file = t.ca_file or (dir .. "/ca.pem"), cert_file = t.cert_file or (dir .. "/cert.pem"),
                 key_file = t.key_file or (dir .. "/key.pem"), insecure = t.insecure }
      ep.base = "https://" .. hostport
    else
      ep.base = "http://" .. hostport
    end
    ep.name = (use_tls and "tcp+tls://" or "tcp://") .. hostport
  end
  state.ep = ep
  return ep
end

local function urlencode(s)
  return (s:gsub("[^%w%-%._~]", function(ch) return fmt("%%%02X", ch:byte()) end))
end

-- One request to the daemon. Transport failures are re-raised naming what was attempted;
-- the http layer's message already names the endpoint and the cause.
local function request(call, what, method, path, o)
  o = o or {}
  local ep = endpoint()
  local headers = { "Accept: application/json" }
  if o.body then headers[#headers + 1] = "Content-Type: application/json" end
  local ok, res = pcall(http.request, call, {
    method = method, url = ep.base .. path, unix_socket = ep.socket, tls = ep.tls,
    headers = headers, body = o.body, timeout = o.timeout or API_TIMEOUT,
    max_response = o.max_response, retries = (method == "GET") and 2 or 0,
  })
  if ok then return res end
  if type(res) == "table" and res.code then
    host.raise(res.code, fmt("%s: docker daemon at %s: %s", what, ep.name, tostring(res.message)))
  end
  error(res, 0)
end

local function daemon_message(res)
  local ok, v = pcall(json.decode, res.body or "")
  if ok and type(v) == "table" and type(v.message) == "string" then return v.message end
  local b = (res.body or ""):gsub("%s+$", "")
  return b ~= "" and b:sub(1, 200) or ("HTTP " .. tostring(res.status))
end

local function decode(what, res)
  local ok, v, err = pcall(json.decode, res.body or "")
  if not ok or v == nil then
    host.raise("protocol", fmt("%s: docker daemon at %s: malformed JSON reply: %s", what, endpoint().name,
      tostring(ok and err or v)))
  end
  return v
end

local function version_less(a, b)
  local a1, a2 = a:match("^(%d+)%.(%d+)")
  local b1, b2 = b:match("^(%d+)%.(%d+)")
  if not a1 or not b1 then return false end
  a1, a2, b1, b2 = tonumber(a1), tonumber(a2), tonumber(b1), tonumber(b2)
  return a1 < b1 or (a1 == b1 and a2 < b2)
end

-- The API version, negotiated through /_ping once per run.
local function api(call, what)
  if state.version then return state.version end
  local res = request(call, what, "GET", "/_ping", { timeout = 10 })
  if res.status ~= 200 then
    host.raise("unavailable", fmt("%s: docker daemon at %s: /_ping answered HTTP %d: %s", what, endpoint().name,
      res.status, daemon_message(res)))
  end
  local v = res.headers and res.headers["api-version"] or "1.24"
  if version_less(MAX_API, v) then v = MAX_API end
  state.version = state.version or v
  state.ping = res.headers
  return state.version
end

local function api_path(call, what, p)
  return "/v" .. api(call, what) .. p
end

local function short(id)
  return type(id) == "string" and id:sub(1, 12) or tostring(id)
end

local function tenant_of(call, what)
  local t = call:tenant()
  if not t then
    host.raise("invalid", what .. ": this run has several tenants and the code is bound to none; use each_tenant")
  end
  return t
end

-- scope(): resolve ref to what the daemon itself resolves it to, and check that container's label.
local function resolve(call, what, ref)
  if type(ref) ~= "string" then
    host.raise("invalid", fmt("%s: the container must be a name or an id (a string), got %s", what, type(ref)))
  end
  local ok, why = dockerc.check_ref(ref)
  if not ok then
    host.refuse(call, fmt("container reference %q %s: refused before any request", ref, why))
  end
  local tenant = tenant_of(call, what)
  local ep = endpoint()
  local w = what .. " " .. ref
  local res = request(call, w, "GET", api_path(call, w, "/containers/" .. urlencode(ref) .. "/json"))
  if res.status == 404 then
    host.raise("not_found", fmt("%s: container %s not found (docker daemon at %s: %s)", what, ref, ep.name,
      daemon_message(res)))
  end
  local msg = res.status ~= 200 and daemon_message(res) or nil
  if msg and msg:lower():find("multiple ids found", 1, true) and lua_scope() then
    -- dockerd 20.10 answers 500 "Multiple IDs found with provided prefix"
    host.refuse(call, fmt("container reference %q is ambiguous: it is a prefix of several container ids " ..
      "(docker daemon at %s: %s); use the name or the full id", ref, ep.name, msg))
  end
  if msg then
    host.raise(res.status >= 500 and "unavailable" or "failed",
      fmt("%s: inspecting container %s failed (docker daemon at %s: HTTP %d: %s)", what, ref, ep.name, res.status, msg))
  end
  local c = decode(what, res)
  if type(c.Id) ~= "string" or not c.Id:match("^%x+$") or #c.Id ~= 64 then
    host.raise("protocol", fmt("%s: docker daemon at %s returned no valid id for container %s", what, ep.name, ref))
  end
  local key = label_key()
  local labels = type(c.Config) == "table" and type(c.Config.Labels) == "table" and c.Config.Labels or {}
  local owner = labels[key]
  if owner ~= tenant and lua_scope() then
    local who = type(owner) == "string" and ("tenant " .. owner) or ("no tenant (no " .. key .. " label)")
    host.refuse(call, fmt("container %s belongs to %s, not %s", ref, who, tenant))
  end
  local name = type(c.Name) == "string" and c.Name:gsub("^/", "") or ref
  local st = type(c.State) == "table" and c.State or {}
  local target = { container = c.Id, name = name, ref = ref, tenant = tenant }
  resolved[call] = { id = c.Id, name = name, ref = ref, tenant = tenant, running = st.Running == true,
                     tty = type(c.Config) == "table" and c.Config.Tty == true, inspect = c }
  return target
end

local function target_of(call)
  local t = resolved[call]
  if not t then error("docker: effect without a resolved target (bug in rbl)", 0) end
  return t
end

local function label_of(t)
  if t.ref == t.id or t.ref == t.name then return fmt("%s (id %s)", t.ref, short(t.id)) end
  return fmt("%s (%s, id %s)", t.ref, t.name, short(t.id))
end

-- ---- docker_exec ----

local function check_argv(argv)
  if type(argv) ~= "table" or #argv == 0 then
    host.raise("invalid", "docker_exec: argv must be a non-empty table of strings (no shell)")
  end
  local out = {}
  for i = 1, #argv do
    local a = host.unwrap(argv[i])
    if type(a) == "number" then a = tostring(a) end
    if type(a) ~= "string" then host.raise("invalid", fmt("docker_exec: argv[%d] is a %s, not a string", i, type(a))) end
    out[i] = a
  end
  return out
end

local function env_list(e)
  if e == nil then return nil end
  if type(e) ~= "table" then host.raise("invalid", "docker_exec: env must be a table") end
  local out = {}
  for k, v in pairs(e) do
    v = host.unwrap(v)
    if type(k) == "number" then out[#out + 1] = tostring(v)
    else out[#out + 1] = tostring(k) .. "=" .. tostring(v) end
  end
  table.sort(out)
  return #out > 0 and out or nil
end

local function exec_code(call, what, eid)
  for _ = 1, 50 do
    local res = request(call, what, "GET", api_path(call, what, "/exec/" .. eid .. "/json"))
    if res.status ~= 200 then
      host.raise("failed", fmt("%s: exec inspect failed (HTTP %d: %s)", what, res.status, daemon_message(res)))
    end
    local x = decode(what, res)
    if not x.Running and type(x.ExitCode) == "number" then return x.ExitCode end
    host.sleep(call, 0.02) -- the stream can close a moment before the daemon records the exit
  end
  host.raise("failed", what .. ": the daemon did not report an exit code")
end

local function exec_effect(call, container, argv, opts)
  local t = target_of(call)
  opts = type(opts) == "table" and opts or {}
  local cmd = check_argv(argv)
  local what = "docker_exec " .. label_of(t)
  local ep = endpoint()
  if host.dry_run() and not opts.read_only then -- not sent: the normal shape, marked dry_run
    local st = type(t.inspect.State) == "table" and t.inspect.State or {}
    prim.plan(call, { argv = json.array(cmd), container_state = { running = st.Running == true,
      started_at = st.StartedAt }, changes = json.array({}) })
    return { exit_code = 0, stdout = "", stderr = "", duration_ms = 0, dry_run = true, container = t.id },
           { container = t.id, dry_run = true, sent = false }
  end
  local t0 = host.now_ms()
  local spec = { AttachStdin = false, AttachStdout = true, AttachStderr = true, Tty = false, Cmd = cmd,
                 Env = env_list(opts.env), User = opts.user, WorkingDir = opts.workdir }
  local res = request(call, what, "POST", api_path(call, what, "/containers/" .. t.id .. "/exec"),
    { body = json.encode(spec) })
  if res.status == 404 then
    host.raise("not_found", fmt("%s: container not found (docker daemon at %s: %s)", what, ep.name, daemon_message(res)))
  elseif res.status == 409 then
    host.raise("conflict", fmt("%s: container is not running (docker daemon at %s: %s)", what, ep.name, daemon_message(res)))
  elseif res.status ~= 201 and res.status ~= 200 then
    host.raise("failed", fmt("%s: exec create failed (docker daemon at %s: HTTP %d: %s)", what, ep.name,
      res.status, daemon_message(res)))
  end
  local eid = decode(what, res).Id
  if type(eid) ~= "string" or not eid:match("^%x+$") then
    host.raise("protocol", what .. ": exec create returned no id")
  end
  -- named in the result even if the call is canceled: the Engine API cannot stop an exec'd
  -- process, so a canceled exec may run on in the container (docker.md)
  prim.before(call, { prim = "docker_exec", container = t.id, exec = eid })
  local timeout = tonumber(opts.timeout)
  local limit = host.limits().exec_output
  if not limit or limit <= 0 then limit = MAX_OUTPUT end
  -- both streams plus the 8-byte frame headers
  local ok, sres = pcall(request, call, what, "POST", api_path(call, what, "/exec/" .. eid .. "/start"), {
    body = '{"Detach":false,"Tty":false}', timeout = timeout or 0, max_response = 2 * limit + limit // 8 + 65536 })
  if not ok then
    if type(sres) == "table" and sres.code == "timeout" then
      host.raise("timeout", fmt("%s: timeout after %g s running %s at %s (the process may still be running " ..
        "in the container)", what, timeout or 0, cmd[1], ep.name))
    elseif type(sres) == "table" and sres.code == "too_big" then
      host.raise("too_big", fmt("%s: output larger than the exec_output limit (%d bytes per stream) at %s",
        what, limit, ep.name))
    end
    error(sres, 0)
  end
  if sres.status ~= 200 then
    local code = sres.status == 404 and "not_found" or sres.status == 409 and "conflict" or "failed"
    host.raise(code, fmt("%s: exec start failed (docker daemon at %s: HTTP %d: %s)", what, ep.name, sres.status,
      daemon_message(sres)))
  end
  local stdout, stderr, syserr, rest = dockerc.demux(sres.body)
  if not stdout then host.raise("protocol", fmt("%s: docker daemon at %s: %s", what, ep.name, stderr)) end
  if rest ~= "" then
    host.raise("protocol", fmt("%s: docker daemon at %s: output stream cut inside a frame", what, ep.name))
  end
  if syserr ~= "" then stderr = stderr .. syserr end
  if #stdout > limit or #stderr > limit then
    host.raise("too_big", fmt("%s: output larger than the exec_output limit (%d bytes per stream) at %s",
      what, limit, ep.name))
  end
  local code = exec_code(call, what, eid)
  local ms = math.floor(host.now_ms() - t0 + 0.5)
  return { exit_code = code, stdout = stdout, stderr = stderr, duration_ms = ms },
         { container = t.id, exec = eid, exit_code = code, stdout_bytes = #stdout, stderr_bytes = #stderr,
           duration_ms = ms }
end

-- {read_only = true}: the runbook declares the command changes nothing; it then runs under
-- --dry-run too, and its intent says read_only (the runbook's word, not checked by rbl)
local function exec_writes(_, _, opts) return not (type(opts) == "table" and opts.read_only == true) end

-- The namespaces (PID, network, IPC) a container joins from another container ("container:<ref>"):
-- { {kind, ref}... }. Exported for verify_isolation (M.joined_namespaces).
local NS_MODES = { { "PidMode", "PID" }, { "NetworkMode", "network" }, { "IpcMode", "IPC" } }
local function joined_namespaces(inspect)
  local hc = type(inspect) == "table" and type(inspect.HostConfig) == "table" and inspect.HostConfig or {}
  local out = {}
  for _, m in ipairs(NS_MODES) do
    local v = hc[m[1]]
    if type(v) == "string" and v:sub(1, 10) == "container:" then out[#out + 1] = { kind = m[2], ref = v:sub(11) } end
  end
  return out
end
M.joined_namespaces = joined_namespaces

-- Is ref (an id, an id prefix or a name, as HostConfig names it) one of the containers in list?
local function names_one_of(ref, list)
  for _, c in ipairs(list) do
    if type(c.Id) == "string" and #ref >= 12 and c.Id:sub(1, #ref) == ref then return true end
    for _, n in ipairs(type(c.Names) == "table" and c.Names or {}) do
      if n == ref or n == "/" .. ref then return true end
    end
  end
  return false
end
M.names_one_of = names_one_of

-- The tenant's own containers (the daemon filters by label; checked again), for namespace joins.
local function own_containers(call, what, tenant)
  local key = label_key()
  local q = "/containers/json?all=1&filters=" .. urlencode(json.encode({ label = { key .. "=" .. tenant } }))
  local res = request(call, what, "GET", api_path(call, what, q))
  if res.status ~= 200 then
    host.raise("failed", fmt("%s: listing the tenant's containers failed (HTTP %d: %s)", what, res.status, daemon_message(res)))
  end
  local out = {}
  for _, c in ipairs(decode(what, res)) do
    if type(c.Labels) == "table" and c.Labels[key] == tenant then out[#out + 1] = c end
  end
  return out
end

M.docker_exec = prim.define("docker_exec", {
  write = exec_writes,
  scope = function(call, container)
    local target = resolve(call, "docker_exec", container)
    -- a container that joins another container's PID, network or IPC namespace sees into it: an
    -- exec there reads across tenants unless the other container is this tenant's own
    local joins = joined_namespaces(resolved[call].inspect)
    if #joins > 0 then
      local own = own_containers(call, "docker_exec " .. container, target.tenant)
      for _, j in ipairs(joins) do
        if not names_one_of(j.ref, own) then
          host.refuse(call, fmt("docker_exec %s: the container joins the %s namespace of container %s, which is not one of tenant %s's: an exec there would see into it",
            container, j.kind, j.ref, target.tenant))
        end
      end
    end
    return target
  end,
  effect = exec_effect,
})

-- ---- docker.ps / inspect / restart / logs ----

local function label_filters(call, opts)
  local tenant = tenant_of(call, "docker.ps")
  local key = label_key()
  local list = { key .. "=" .. tenant }
  local labels = type(opts) == "table" and (opts.labels or (opts.all == nil and opts)) or nil
  if type(labels) == "table" then
    for k, v in pairs(labels) do
      local f = type(k) == "number" and tostring(v) or (tostring(k) .. "=" .. tostring(v))
      local fk = f:match("^([^=]*)")
      if fk == key then
        host.refuse(call, fmt("docker.ps: the %s label is set by rbl (tenant %s), not by the runbook", key, tenant))
      end
      list[#list + 1] = f
    end
  end
  table.sort(list, function(a, b) return a < b end)
  return list, tenant, key
end

M.ps = prim.define("docker.ps", {
  scope = function(call, opts)
    local list = label_filters(call, opts)
    return { labels = list }
  end,
  effect = function(call, opts)
    local list, tenant, key = label_filters(call, opts)
    local q = "/containers/json?filters=" .. urlencode(json.encode({ label = list }))
    if type(opts) == "table" and opts.all then q = q .. "&all=1" end
    local what = "docker.ps"
    local res = request(call, what, "GET", api_path(call, what, q))
    if res.status ~= 200 then
      host.raise("failed", fmt("%s: docker daemon at %s: HTTP %d: %s", what, endpoint().name, res.status, daemon_message(res)))
    end
    local all, out = decode(what, res), json.array and json.array({}) or {}
    for _, c in ipairs(all) do -- the daemon filtered; check again all the same
      if type(c.Labels) == "table" and c.Labels[key] == tenant then out[#out + 1] = c end
    end
    return out, { count = #out }
  end,
})

M.inspect = prim.define("docker.inspect", {
  scope = function(call, c) return resolve(call, "docker.inspect", c) end,
  effect = function(call)
    local t = target_of(call)
    return t.inspect, { container = t.id }
  end,
})

-- The before-state of a write to a container's run state, declared before the request leaves,
-- and its undo: read the container back and put its run state back where it differs.
local restore -- the docker_restore primitive, defined below
state.restore_status = {}

local function run_state_before(call, pname, t)
  local st = type(t.inspect.State) == "table" and t.inspect.State or {}
  local before = { prim = pname, container = t.id, name = t.name, tenant = t.tenant,
    running = st.Running == true, paused = st.Paused == true, started_at = st.StartedAt,
    run = (host.info() or {}).run, call = call:id() }
  local key = tostring(before.run) .. "#" .. tostring(before.call)
  local function undo(o)
    state.restore_status[key] = nil
    local _, errs, n = host.run_all({ function() return restore(before, o) end }, { tenants = { t.tenant } })
    if n > 0 then error(errs[1], 0) end
    return state.restore_status[key] or "done"
  end
  prim.before(call, before, undo, pname)
end
M.run_state_before = run_state_before

M.restart = prim.define("docker.restart", {
  write = true,
  scope = function(call, c) return resolve(call, "docker.restart", c) end,
  effect = function(call, c, opts)
    local t = target_of(call)
    local what = "docker.restart " .. label_of(t)
    local secs = type(opts) == "table" and tonumber(opts.timeout) or 10
    if host.dry_run() then -- nothing sent; the normal shape, marked, and the plan item
      local st = type(t.inspect.State) == "table" and t.inspect.State or {}
      prim.plan(call, { container_state = { running = st.Running == true, started_at = st.StartedAt },
        changes = json.array({ { path = "/State/StartedAt", before_exists = true, before = st.StartedAt,
          after_exists = true, after = "(restarted: a new start time)" } }) })
      return { container = t.id, name = t.name, restarted = false, dry_run = true },
             { container = t.id, dry_run = true, sent = false }
    end
    run_state_before(call, "docker.restart", t)
    local res = request(call, what, "POST",
      api_path(call, what, fmt("/containers/%s/restart?t=%d", t.id, math.floor(secs))), { timeout = secs + API_TIMEOUT })
    if res.status == 404 then
      host.raise("not_found", fmt("%s: container not found (docker daemon at %s: %s)", what, endpoint().name, daemon_message(res)))
    elseif res.status ~= 204 and res.status ~= 200 then
      host.raise("failed", fmt("%s: docker daemon at %s: HTTP %d: %s", what, endpoint().name, res.status, daemon_message(res)))
    end
    return { container = t.id, name = t.name, restarted = true }, { container = t.id, name = t.name,
      irreversible = true, irreversible_why = "a restart cannot be undone (the processes were restarted)" }
  end,
})

-- ---- docker.stop / start / kill: lifecycle writes, sent by full id after the durable intent ----

local function lifecycle(pname, verb, query, why, opts_check)
  return prim.define(pname, {
    scope = function(call, c, opts)
      if opts ~= nil and type(opts) ~= "table" then host.raise("invalid", pname .. ": options must be a table") end
      local q, extra = opts_check(opts or {})
      local tg = resolve(call, pname, c)
      resolved[call].query, resolved[call].wait = q, extra
      return tg
    end,
    effect = function(call)
      local t = target_of(call)
      local what = pname .. " " .. label_of(t)
      if host.dry_run() then return { dry_run = true, container = t.id, name = t.name }, { dry_run = true, sent = false } end
      -- the run state before, for a result that never comes (canceled in flight); not undone
      local st = type(t.inspect.State) == "table" and t.inspect.State or {}
      prim.before(call, { prim = pname, container = t.id, name = t.name, tenant = t.tenant,
        running = st.Running == true, started_at = st.StartedAt })
      local res = request(call, what, "POST", api_path(call, what, fmt("/containers/%s/%s%s", t.id, verb, t.query)),
        { timeout = (t.wait or 0) + API_TIMEOUT })
      if res.status == 404 then
        host.raise("not_found", fmt("%s: container not found (docker daemon at %s: %s)", what, endpoint().name, daemon_message(res)))
      elseif res.status == 409 then
        host.raise("conflict", fmt("%s: docker daemon at %s: %s", what, endpoint().name, daemon_message(res)))
      elseif res.status ~= 204 and res.status ~= 200 and res.status ~= 304 then
        host.raise("failed", fmt("%s: docker daemon at %s: HTTP %d: %s", what, endpoint().name, res.status, daemon_message(res)))
      end
      local changed = res.status ~= 304 -- 304: already in that state
      return { container = t.id, name = t.name, changed = changed, was_running = t.running },
             { container = t.id, name = t.name, changed = changed, was_running = t.running,
               irreversible = changed or nil, irreversible_why = changed and why or nil }
    end,
  })
end

local function stop_opts(o)
  local secs = o.timeout == nil and 10 or o.timeout
  if math.type(secs) ~= "integer" or secs < 0 or secs > 3600 then
    host.raise("invalid", "docker.stop: timeout must be an integer number of seconds in 0..3600")
  end
  return "?t=" .. secs, secs
end

local function kill_opts(o)
  local sig = o.signal == nil and "SIGKILL" or o.signal
  if math.type(sig) == "integer" then sig = tostring(sig) end
  if type(sig) ~= "string" or not (sig:match("^SIG[A-Z0-9+-]+$") or sig:match("^[A-Z][A-Z0-9+-]*$") or sig:match("^%d+$")) or #sig > 16 then
    host.raise("invalid", "docker.kill: signal must be a signal name such as \"SIGTERM\" or a number")
  end
  return "?signal=" .. sig, 0
end

M.stop = lifecycle("docker.stop", "stop", nil,
  "rbl rollback does not start a stopped container again; docker.start does", stop_opts)
M.start = lifecycle("docker.start", "start", nil,
  "rbl rollback does not stop a started container again; docker.stop does", function() return "", 0 end)
M.kill = lifecycle("docker.kill", "kill", nil,
  "a killed process cannot be brought back; docker.start starts the container anew", kill_opts)

-- ---- docker.stats / docker.top: one sample, reads ----

local function num(v) return type(v) == "number" and v or 0 end

-- The figures `docker stats --no-stream` prints, from one stats sample.
local function stats_summary(st)
  local cpu, pre = type(st.cpu_stats) == "table" and st.cpu_stats or {}, type(st.precpu_stats) == "table" and st.precpu_stats or {}
  local cu, pu = type(cpu.cpu_usage) == "table" and cpu.cpu_usage or {}, type(pre.cpu_usage) == "table" and pre.cpu_usage or {}
  local cpu_delta = num(cu.total_usage) - num(pu.total_usage)
  local sys_delta = num(cpu.system_cpu_usage) - num(pre.system_cpu_usage)
  local ncpu = num(cpu.online_cpus)
  if ncpu == 0 and type(cu.percpu_usage) == "table" then ncpu = #cu.percpu_usage end
  local cpu_pct = (sys_delta > 0 and cpu_delta > 0) and (cpu_delta / sys_delta) * math.max(ncpu, 1) * 100 or 0
  local mem = type(st.memory_stats) == "table" and st.memory_stats or {}
  local ms = type(mem.stats) == "table" and mem.stats or {}
  local cache = ms.inactive_file or ms.total_inactive_file or 0 -- as the docker CLI does (cgroup v2 / v1)
  local usage = math.max(num(mem.usage) - num(cache), 0)
  local limit = num(mem.limit)
  local rx, tx = 0, 0
  for _, n in pairs(type(st.networks) == "table" and st.networks or {}) do
    if type(n) == "table" then rx, tx = rx + num(n.rx_bytes), tx + num(n.tx_bytes) end
  end
  local rd, wr = 0, 0
  local bio = type(st.blkio_stats) == "table" and st.blkio_stats or {}
  for _, e in ipairs(type(bio.io_service_bytes_recursive) == "table" and bio.io_service_bytes_recursive or {}) do
    local op = type(e) == "table" and tostring(e.op):lower() or ""
    if op == "read" then rd = rd + num(e.value) elseif op == "write" then wr = wr + num(e.value) end
  end
  return { cpu_percent = cpu_pct, online_cpus = ncpu,
           memory = { usage = usage, limit = limit, percent = limit > 0 and usage / limit * 100 or 0 },
           pids = type(st.pids_stats) == "table" and num(st.pids_stats.current) or 0,
           network = { rx_bytes = rx, tx_bytes = tx }, block = { read_bytes = rd, write_bytes = wr } }
end

M.stats = prim.define("docker.stats", {
  scope = function(call, c) return resolve(call, "docker.stats", c) end,
  effect = function(call)
    local t = target_of(call)
    local what = "docker.stats " .. label_of(t)
    -- stream=false: the daemon takes two samples about a second apart, so CPU % means something
    local res = request(call, what, "GET", api_path(call, what, fmt("/containers/%s/stats?stream=false", t.id)),
      { max_response = 4 * 1024 * 1024 })
    if res.status ~= 200 then
      host.raise(res.status == 404 and "not_found" or "failed",
        fmt("%s: docker daemon at %s: HTTP %d: %s", what, endpoint().name, res.status, daemon_message(res)))
    end
    local raw = decode(what, res)
    if type(raw) ~= "table" then host.raise("protocol", what .. ": the stats reply is not an object") end
    local out = stats_summary(raw)
    out.container, out.name, out.running, out.raw = t.id, t.name, t.running, raw
    return out, { container = t.id, cpu_percent = fmt("%.2f", out.cpu_percent), memory_usage = out.memory.usage,
      memory_limit = out.memory.limit, pids = out.pids }
  end,
})

M.top = prim.define("docker.top", {
  scope = function(call, c) return resolve(call, "docker.top", c) end,
  effect = function(call)
    local t = target_of(call)
    local what = "docker.top " .. label_of(t)
    local res = request(call, what, "GET", api_path(call, what, fmt("/containers/%s/top", t.id)),
      { max_response = 16 * 1024 * 1024 })
    if res.status == 409 then
      host.raise("conflict", fmt("%s: docker daemon at %s: %s", what, endpoint().name, daemon_message(res)))
    elseif res.status ~= 200 then
      host.raise(res.status == 404 and "not_found" or "failed",
        fmt("%s: docker daemon at %s: HTTP %d: %s", what, endpoint().name, res.status, daemon_message(res)))
    end
    local raw = decode(what, res)
    local titles = type(raw) == "table" and type(raw.Titles) == "table" and raw.Titles or {}
    local procs = {}
    for _, row in ipairs(type(raw) == "table" and type(raw.Processes) == "table" and raw.Processes or {}) do
      local p = {}
      for i, title in ipairs(titles) do p[tostring(title)] = type(row) == "table" and row[i] or nil end
      procs[#procs + 1] = p
    end
    return { container = t.id, name = t.name, titles = json.array(titles), processes = json.array(procs) },
           { container = t.id, processes = #procs }
  end,
})

-- docker_restore(before): after a write to a container's run state whose outcome is not known
-- (canceled in flight, or its answer lost), read the container back and start it again when it
-- ran before and does not now. Never exported to runbooks; rollback calls it.
restore = prim.define("docker_restore", {
  write = true,
  plan = false,
  scope = function(call, before)
    if type(before) ~= "table" or type(before.container) ~= "string" then
      host.raise("invalid", "docker_restore: not a recorded before-state")
    end
    local tg = resolve(call, "docker_restore", before.container)
    tg.undoes = { run = before.run, call = before.call }
    return tg
  end,
  effect = function(call, before)
    local t = target_of(call)
    local what = "docker_restore " .. label_of(t)
    local key = tostring(before.run) .. "#" .. tostring(before.call)
    local st = type(t.inspect.State) == "table" and t.inspect.State or {}
    local summary = { undoes = { run = before.run, call = before.call }, container = t.id,
      running_before = before.running, running = st.Running == true, dry_run = host.dry_run() or nil }
    if not before.running or st.Running == true then
      summary.noop = true
      state.restore_status[key] = "not_needed"
      return { container = t.id, running = st.Running == true }, summary
    end
    if host.dry_run() then
      summary.would_start = true
      state.restore_status[key] = "done"
      return { container = t.id, dry_run = true }, summary
    end
    local res = request(call, what, "POST", api_path(call, what, "/containers/" .. t.id .. "/start"))
    if res.status ~= 204 and res.status ~= 304 and res.status ~= 200 then
      host.raise(res.status == 404 and "not_found" or "failed",
        fmt("%s: start failed (docker daemon at %s: HTTP %d: %s)", what, endpoint().name, res.status, daemon_message(res)))
    end
    summary.started = true
    state.restore_status[key] = "done"
    return { container = t.id, running = true }, summary
  end,
})
M.restore = restore
function M.restore_status(before) return state.restore_status[tostring(before.run) .. "#" .. tostring(before.call)] end

M.logs = prim.define("docker.logs", {
  scope = function(call, c) return resolve(call, "docker.logs", c) end,
  effect = function(call, c, opts)
    local t = target_of(call)
    local what = "docker.logs " .. label_of(t)
    local tail = type(opts) == "table" and opts.tail or nil
    tail = tail == nil and "all" or tostring(math.floor(tonumber(tail) or 0))
    local res = request(call, what, "GET",
      api_path(call, what, fmt("/containers/%s/logs?stdout=1&stderr=1&tail=%s", t.id, tail)),
      { max_response = MAX_OUTPUT })
    if res.status ~= 200 then
      host.raise(res.status == 404 and "not_found" or "failed",
        fmt("%s: docker daemon at %s: HTTP %d: %s", what, endpoint().name, res.status, daemon_message(res)))
    end
    local stdout, stderr = res.body, ""
    if not t.tty then -- a TTY container's log is one raw stream
      local rest, _
      stdout, stderr, _, rest = dockerc.demux(res.body)
      if not stdout then host.raise("protocol", fmt("%s: %s", what, stderr)) end
      if rest ~= "" then host.raise("protocol", what .. ": log stream cut inside a frame") end
    end
    return { stdout = stdout, stderr = stderr, container = t.id },
           { container = t.id, stdout_bytes = #stdout, stderr_bytes = #stderr }
  end,
})

-- ---- detect_runtime("docker") ----

local docker_detect = prim.define("detect_runtime", {
  effect = function(call)
    local what = "detect_runtime docker"
    local v = api(call, what)
    local res = request(call, what, "GET", "/v" .. v .. "/version")
    if res.status ~= 200 then
      host.raise("failed", fmt("%s: docker daemon at %s: HTTP %d: %s", what, endpoint().name, res.status, daemon_message(res)))
    end
    local d = decode(what, res)
    local out = { runtime = "docker", version = d.Version, api_version = v, server_api_version = d.ApiVersion,
                  min_api_version = d.MinAPIVersion, os = d.Os, arch = d.Arch, kernel = d.KernelVersion,
                  endpoint = endpoint().raw }
    return out, out
  end,
})

-- detect_runtime("docker") (the core family's detect_runtime dispatches here).
function M.detect(...) return docker_detect("docker", ...) end

-- The runbook globals this module contributes (rbl.std collects them).
function M.globals()
  return { docker_exec = M.docker_exec,
           docker = { ps = M.ps, inspect = M.inspect, restart = M.restart, logs = M.logs, stop = M.stop,
                      start = M.start, kill = M.kill, stats = M.stats, top = M.top } }
end

return M
