-- Cluster access as kubectl resolves it: kubeconfig files (KUBECONFIG merged), a context,
-- TLS material, tokens (static, rotating files), exec credential plugins, in-cluster config.
local host = require "rbl.host"
local json = require "rbl.json"
local kubec = require "rbl.kube.c"

local M = {}
local type, tostring, ipairs, pairs, error = type, tostring, ipairs, pairs, error
local fmt = string.format

local SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
local EXEC_APIS = { ["client.authentication.k8s.io/v1"] = true, ["client.authentication.k8s.io/v1beta1"] = true }

local function bad(msg) host.raise("invalid", "kube: " .. msg) end

local function env(name)
  local v = os.getenv(name)
  if v == nil or v == "" then return nil end
  return v
end

local function exists(path) return kubec.stat(path) ~= nil end

local function dirname(p) return p:match("^(.*)/[^/]*$") or "." end

-- A path inside a kubeconfig is relative to the file that holds it (as kubectl does).
local function resolve_path(p, base)
  if type(p) ~= "string" or p == "" then return nil end
  if p:sub(1, 1) == "/" then return p end
  if p:sub(1, 2) == "~/" and env("HOME") then return env("HOME") .. p:sub(2) end
  return base .. "/" .. p
end

local function load_file(path)
  local text, err = kubec.read_file(path)
  if not text then bad("kubeconfig " .. err) end
  local docs, perr = kubec.parse_yaml(text)
  if not docs then bad(fmt("kubeconfig %s: %s", path, perr)) end
  local doc = docs[1]
  if doc == nil or doc == json.null then return {} end
  if type(doc) ~= "table" then bad(fmt("kubeconfig %s: not a mapping", path)) end
  return doc
end

-- The files to merge: the config's kube.kubeconfig, else KUBECONFIG, else ~/.kube/config.
local function kubeconfig_files(kcfg)
  local list, explicit = {}, false
  local src = kcfg.kubeconfig
  if type(src) == "table" then
    for _, p in ipairs(src) do list[#list + 1] = p end
    explicit = true
  elseif type(src) == "string" then
    for p in src:gmatch("[^:]+") do list[#list + 1] = p end
    explicit = true
  elseif env("KUBECONFIG") then
    for p in env("KUBECONFIG"):gmatch("[^:]+") do list[#list + 1] = p end
  elseif env("HOME") then
    list[1] = env("HOME") .. "/.kube/config"
  end
  local found = {}
  for _, p in ipairs(list) do
    if exists(p) then found[#found + 1] = p
    elseif explicit then bad(fmt("kubeconfig %s: no such file (from the config's kube.kubeconfig)", p)) end
  end
  return found
end

-- kubectl's merge: for clusters, users and contexts the first file that names an entry wins;
-- current-context comes from the first file that sets it.
local function merge(files)
  local m = { clusters = {}, users = {}, contexts = {}, files = files }
  for _, path in ipairs(files) do
    local doc = load_file(path)
    local base = dirname(path)
    for _, sect in ipairs({ "clusters", "users", "contexts" }) do
      local entries = doc[sect]
      if entries ~= nil and entries ~= json.null then
        if type(entries) ~= "table" then bad(fmt("kubeconfig %s: %s must be a list", path, sect)) end
        for _, e in ipairs(entries) do
          if type(e) == "table" and type(e.name) == "string" and m[sect][e.name] == nil then
            local body = e[sect == "clusters" and "cluster" or sect == "users" and "user" or "context"]
            m[sect][e.name] = { body = type(body) == "table" and body or {}, base = base, file = path }
          end
        end
      end
    end
    local cc = doc["current-context"]
    if m.current == nil and type(cc) == "string" and cc ~= "" then m.current = cc end
  end
  return m
end

-- ---- credentials ----

-- A token file re-read whenever its mtime or size changes (projected tokens rotate).
local function token_file_source(path)
  local st = { path = path }
  return function()
    local mt, size = kubec.stat(path)
    if not mt then host.raise("denied", "kube: token file " .. tostring(size)) end
    if st.token == nil or mt ~= st.mtime or size ~= st.size then
      local text, err = kubec.read_file(path)
      if not text then host.raise("denied", "kube: token file " .. err) end
      st.token, st.mtime, st.size = text:gsub("%s+$", ""):gsub("^%s+", ""), mt, size
      if st.token == "" then host.raise("denied", "kube: token file " .. path .. " is empty") end
      host.secret("kube_token", st.token) -- masked wherever text leaves the process
    end
    return st.token
  end
end

local function find_program(cmd, base)
  if cmd:find("/", 1, true) then
    return cmd:sub(1, 1) == "/" and cmd or (base .. "/" .. cmd)
  end
  for dir in (env("PATH") or "/usr/local/bin:/usr/bin:/bin"):gmatch("[^:]+") do
    if exists(dir .. "/" .. cmd) then return dir .. "/" .. cmd end
  end
  return nil
end

-- An exec credential plugin: run it, parse its ExecCredential, cache until it expires.
local function exec_source(spec, base, cluster)
  local api = spec.apiVersion
  if not EXEC_APIS[api] then
    bad(fmt("exec plugin: apiVersion %q is not supported (use client.authentication.k8s.io/v1 or v1beta1)", tostring(api)))
  end
  if type(spec.command) ~= "string" or spec.command == "" then bad("exec plugin: command is required") end
  if spec.interactiveMode == "Always" then
    bad("exec plugin " .. spec.command .. ": interactiveMode Always needs a terminal; rbl runs unattended")
  end
  local st = {}
  local src = {}
  function src.get(call)
    if st.cred and (st.expires == nil or os.time() < st.expires - 10) then return st.cred end
    local path = find_program(spec.command, base)
    if not path then host.raise("denied", fmt("kube: exec plugin %q not found on PATH", spec.command)) end
    local argv = { path }
    for _, a in ipairs(type(spec.args) == "table" and spec.args or {}) do argv[#argv + 1] = tostring(a) end
    local envt = {}
    for _, e in ipairs(type(spec.env) == "table" and spec.env or {}) do
      if type(e) == "table" and type(e.name) == "string" then envt[e.name] = tostring(e.value or "") end
    end
    local req = { apiVersion = api, kind = "ExecCredential", spec = { interactive = false } }
    if spec.provideClusterInfo then
      req.spec.cluster = { server = cluster.server, ["certificate-authority-data"] = cluster["certificate-authority-data"],
        ["insecure-skip-tls-verify"] = cluster["insecure-skip-tls-verify"], ["tls-server-name"] = cluster["tls-server-name"],
        config = cluster.extensions and json.null or nil }
    end
    envt.KUBERNETES_EXEC_INFO = json.encode(req)
    kubec.bind_plugin(path) -- the gate spawns this plugin and no other for the run
    local r = kubec.spawn(path, argv, envt, { timeout = 60 })
    local who = "kube: exec plugin " .. spec.command
    if r.exit_code ~= 0 then
      host.raise("denied", fmt("%s exited with %d: %s", who, r.exit_code, (r.stderr:gsub("%s+$", "")):sub(1, 300)))
    end
    local ok, cred = pcall(json.decode, r.stdout)
    if not ok or type(cred) ~= "table" or cred.kind ~= "ExecCredential" then
      host.raise("protocol", who .. ": output is not an ExecCredential JSON object")
    end
    if cred.apiVersion ~= api then
      host.raise("protocol", fmt("%s: answered apiVersion %q, expected %q", who, tostring(cred.apiVersion), api))
    end
    local s = type(cred.status) == "table" and cred.status or {}
    local c = {}
    if type(s.token) == "string" and s.token ~= "" then
      c.token = s.token
      host.secret("kube_exec_token", s.token)
    end
    if type(s.clientCertificateData) == "string" and s.clientCertificateData ~= "" then
      if type(s.clientKeyData) ~= "string" or s.clientKeyData == "" then
        host.raise("protocol", who .. ": clientCertificateData without clientKeyData")
      end
      c.cert_pem, c.key_pem = s.clientCertificateData, s.clientKeyData
      host.secret("kube_exec_key", s.clientKeyData)
    end
    if not c.token and not c.cert_pem then host.raise("protocol", who .. ": status has neither token nor client certificate") end
    st.expires = nil
    if type(s.expirationTimestamp) == "string" then
      st.expires = kubec.parse_time(s.expirationTimestamp)
      if not st.expires then host.raise("protocol", who .. ": bad expirationTimestamp " .. s.expirationTimestamp) end
    end
    st.cred = c
    return c
  end
  function src.invalidate() st.cred = nil end
  return src
end

local function b64(field, v)
  local d, err = kubec.b64decode(v)
  if not d then bad(field .. ": " .. err) end
  return d
end

-- Fills conn.tls and conn.auth from a cluster and a user entry.
local function from_entries(conn, cluster, cbase, user, ubase)
  local server = cluster.server
  if type(server) ~= "string" or not server:match("^https?://[^/]") then
    bad(fmt("cluster of context %q: server %q must be an http(s):// URL", conn.context, tostring(server)))
  end
  conn.server = server:gsub("/+$", "")
  local tls = {}
  if cluster["certificate-authority-data"] then tls.ca_pem = b64("certificate-authority-data", cluster["certificate-authority-data"])
  elseif cluster["certificate-authority"] then tls.ca_file = resolve_path(cluster["certificate-authority"], cbase) end
  if cluster["insecure-skip-tls-verify"] == true then
    if tls.ca_pem or tls.ca_file then
      bad(fmt("cluster of context %q: certificate-authority and insecure-skip-tls-verify together are not allowed", conn.context))
    end
    tls.insecure = true
    conn.insecure = true
  end
  conn.auth = "none"
  if user["client-certificate-data"] then tls.cert_pem = b64("client-certificate-data", user["client-certificate-data"])
  elseif user["client-certificate"] then tls.cert_file = resolve_path(user["client-certificate"], ubase) end
  if user["client-key-data"] then
    tls.key_pem = b64("client-key-data", user["client-key-data"])
    host.secret("kube_client_key", tls.key_pem)
  elseif user["client-key"] then tls.key_file = resolve_path(user["client-key"], ubase) end
  if (tls.cert_pem or tls.cert_file) and not (tls.key_pem or tls.key_file) then
    bad(fmt("user of context %q: a client certificate needs a client key", conn.context))
  end
  if tls.cert_pem or tls.cert_file then conn.auth = "client_certificate" end
  if type(user.token) == "string" and user.token ~= "" then
    local t = user.token
    host.secret("kube_token", t)
    conn.token = function() return t end
    conn.auth = conn.auth == "none" and "token" or conn.auth .. "+token"
  elseif type(user.tokenFile) == "string" and user.tokenFile ~= "" then
    conn.token = token_file_source(resolve_path(user.tokenFile, ubase))
    conn.auth = conn.auth == "none" and "token_file" or conn.auth .. "+token_file"
  end
  if type(user.exec) == "table" then
    conn.exec = exec_source(user.exec, ubase, cluster)
    conn.auth = "exec"
  end
  if user["auth-provider"] then
    bad(fmt("user of context %q: auth-provider plugins are not supported (use an exec plugin)", conn.context))
  end
  if user.username or user.password then
    bad(fmt("user of context %q: basic authentication is not supported", conn.context))
  end
  conn.tls = tls
end

local function in_cluster()
  local dir = env("RBL_SA_DIR") or SA_DIR
  local h, p = env("KUBERNETES_SERVICE_HOST"), env("KUBERNETES_SERVICE_PORT")
  if not h or not p or not exists(dir .. "/token") then return nil end
  if h:find(":", 1, true) then h = "[" .. h .. "]" end
  local conn = { server = "https://" .. h .. ":" .. p, context = "(in-cluster)", auth = "in_cluster",
    source = dir, tls = {} }
  if exists(dir .. "/ca.crt") then conn.tls.ca_file = dir .. "/ca.crt" end
  conn.token = token_file_source(dir .. "/token")
  return conn
end

-- M.load(kcfg) -> conn: {server, context, source, auth, tls, insecure, token = fn, exec = src}
function M.load(kcfg)
  kcfg = type(kcfg) == "table" and kcfg or {}
  if kcfg.in_cluster == true then
    local c = in_cluster()
    if not c then bad("in_cluster is set but KUBERNETES_SERVICE_HOST/PORT or the service account token is missing") end
    return c
  end
  local files = kubeconfig_files(kcfg)
  if #files == 0 then
    local c = in_cluster()
    if c then return c end
    bad("no cluster configured: set KUBECONFIG, write ~/.kube/config, name one in the config (kube = { kubeconfig = ... }) or run in a pod")
  end
  local m = merge(files)
  local ctxname = type(kcfg.context) == "string" and kcfg.context or m.current
  if not ctxname then bad("no current-context in " .. table.concat(files, ":") .. " and none in the config (kube.context)") end
  local ctx = m.contexts[ctxname]
  if not ctx then bad(fmt("context %q not found in %s", ctxname, table.concat(files, ":"))) end
  local cl = m.clusters[ctx.body.cluster or ""]
  if not cl then bad(fmt("context %q: cluster %q not found", ctxname, tostring(ctx.body.cluster))) end
  local us = m.users[ctx.body.user or ""]
  if ctx.body.user and not us then bad(fmt("context %q: user %q not found", ctxname, tostring(ctx.body.user))) end
  local conn = { context = ctxname, source = table.concat(files, ":") }
  from_entries(conn, cl.body, cl.base, us and us.body or {}, us and us.base or ".")
  return conn
end

-- conn -> headers list, tls table for one request (may run the exec plugin; yields).
function M.credentials(conn, call)
  local headers, tls = {}, conn.tls
  if conn.exec then
    local c = conn.exec.get(call)
    if c.token then headers[#headers + 1] = "Authorization: Bearer " .. c.token end
    if c.cert_pem then
      tls = {}
      for k, v in pairs(conn.tls) do tls[k] = v end
      tls.cert_pem, tls.key_pem, tls.cert_file, tls.key_file = c.cert_pem, c.key_pem, nil, nil
    end
  elseif conn.token then
    headers[#headers + 1] = "Authorization: Bearer " .. conn.token(call)
  end
  return headers, tls
end

-- After a 401: forget cached credentials; true when asking again may help.
function M.invalidate(conn)
  if conn.exec then conn.exec.invalidate(); return true end
  return false
end

return M
