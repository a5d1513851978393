-- verify_isolation: how well the current tenant is fenced off, judged from the runtimes that
-- answer (Docker: container isolation; Kubernetes: network policy and RBAC). Every read goes
-- through the audited primitives; the verdict itself is recorded too.
local host = require "rbl.host"

local M = {}
local type, ipairs, pairs, pcall, tostring, error = type, ipairs, pairs, pcall, tostring, error

-- Errors that mean "this runtime cannot be asked", as opposed to a stop the run must obey.
local SKIPPABLE = { unavailable = true, not_found = true, failed = true, invalid = true, denied = true,
  tls = true, protocol = true }

local function try(fn, ...)
  local ok, res = pcall(fn, ...)
  if ok then return true, res end
  local code = type(res) == "table" and rawget(res, "code") or nil
  if code and SKIPPABLE[code] then return false, res end
  error(res, 0)
end

-- API fields may be JSON null (a userdata) where a list is absent.
local function list(x) return type(x) == "table" and x or {} end
local function tbl(x) return type(x) == "table" and x or {} end

local DANGEROUS_CAPS = { ALL = true, SYS_ADMIN = true, NET_ADMIN = true, SYS_PTRACE = true,
  SYS_MODULE = true, DAC_READ_SEARCH = true, CAP_SYS_ADMIN = true, CAP_NET_ADMIN = true }

local function docker_checks(g, add, skipped)
  local ok, cs = try(g.docker.ps, { all = true })
  if not ok then skipped[#skipped + 1] = "docker: " .. tostring(cs.message or cs); return end
  for _, c in ipairs(cs) do
    local iok, i = try(g.docker.inspect, c.Id)
    if iok then
      local hc, cfg = tbl(i.HostConfig), tbl(i.Config)
      local name = (i.Name or c.Id):gsub("^/", "")
      local function chk(id, good, detail, severity)
        add("container." .. id, "container " .. name, good, detail, severity or "critical")
      end
      chk("not_privileged", hc.Privileged ~= true, "runs privileged")
      chk("own_network", hc.NetworkMode ~= "host", "shares the host network")
      chk("own_pid", hc.PidMode ~= "host", "shares the host PID namespace")
      chk("own_ipc", hc.IpcMode ~= "host", "shares the host IPC namespace")
      -- "container:<ref>": joins another container's namespace; critical unless that container
      -- is one of this tenant's own (the list above holds only the tenant's containers)
      local dk = require "rbl.docker"
      for _, j in ipairs(dk.joined_namespaces(i)) do
        chk("own_" .. j.kind:lower() .. "_namespace", dk.names_one_of(j.ref, cs),
          "joins the " .. j.kind .. " namespace of container " .. j.ref .. ", which is not one of this tenant's")
      end
      local sock = false
      for _, m in ipairs(list(i.Mounts)) do
        if type(m.Source) == "string" and m.Source:find("docker%.sock$") then sock = true end
      end
      chk("no_docker_socket", not sock, "mounts the Docker socket (full control of the host)")
      local caps = {}
      for _, cap in ipairs(list(hc.CapAdd)) do if DANGEROUS_CAPS[cap] then caps[#caps + 1] = cap end end
      chk("no_dangerous_caps", #caps == 0, "adds capabilities " .. table.concat(caps, ","))
      local user = type(cfg.User) == "string" and cfg.User or ""
      chk("non_root_user", user ~= "" and user ~= "0" and user ~= "root" and not user:match("^0:"),
        "runs as root", "warning")
    end
  end
end

local function empty_selector(sel)
  if type(sel) ~= "table" then return true end
  return next(tbl(sel.matchLabels)) == nil and next(tbl(sel.matchExpressions)) == nil
end

local function kube_checks(g, add, skipped, tenant)
  local ok, pols = try(g.kube.list, "networkpolicies")
  if not ok then skipped[#skipped + 1] = "kubernetes: " .. tostring(pols.message or pols); return end
  local deny_in, deny_out = false, false
  for _, p in ipairs(list(pols.items or pols)) do
    local spec = tbl(p.spec)
    if empty_selector(spec.podSelector) then
      local types = {}
      for _, t in ipairs(type(spec.policyTypes) == "table" and spec.policyTypes or { "Ingress" }) do types[t] = true end
      if types.Ingress and #list(spec.ingress) == 0 then deny_in = true end
      if types.Egress and #list(spec.egress) == 0 then deny_out = true end
    end
  end
  add("networkpolicy.default_deny_ingress", "namespace of " .. tostring(tenant), deny_in,
    "no default-deny ingress NetworkPolicy", "critical")
  add("networkpolicy.default_deny_egress", "namespace of " .. tostring(tenant), deny_out,
    "no default-deny egress NetworkPolicy", "warning")
  for _, probe in ipairs({ { "create", "clusterrolebindings" }, { "*", "*" }, { "get", "nodes" } }) do
    local cok, allowed = try(g.kube.can_i, probe[1], probe[2], { cluster = true })
    if cok then
      add("rbac.no_cluster_" .. (probe[1] == "*" and "admin" or probe[1] .. "_" .. probe[2]), "run credentials",
        allowed ~= true, "the run's credentials may " .. probe[1] .. " " .. probe[2] .. " cluster-wide", "critical")
    end
  end
end

function M.globals(book, g)
  local out = {}
  out.verify_isolation = function(opts)
    if opts ~= nil and type(opts) ~= "table" then host.raise("invalid", "verify_isolation: options must be a table") end
    opts = opts or {}
    local checks, findings, skipped = {}, {}, {}
    local weight = { critical = 3, warning = 1 }
    local total, passed = 0, 0
    local function add(id, target, good, detail, severity)
      checks[#checks + 1] = { id = id, target = target, passed = good, severity = severity }
      total = total + weight[severity]
      if good then passed = passed + weight[severity]
      else findings[#findings + 1] = { id = id, target = target, detail = detail, severity = severity } end
    end
    if opts.docker ~= false and g.docker then docker_checks(g, add, skipped) end
    if opts.kube ~= false and g.kube then kube_checks(g, add, skipped, host.tenant()) end
    -- Nothing checked proves nothing: the score is 0 then, never a vacuous 1.
    local score = total > 0 and passed / total or 0
    local res = { score = score, checks = checks, findings = findings, skipped = skipped, tenant = host.tenant() }
    host.record("isolation", { tenant = host.tenant(), score = score, checks = #checks,
      findings = findings, skipped = skipped })
    book.note_isolation(res, #host.tenants() > 1 and host.tenant() or nil)
    return res
  end
  return out
end

return M
