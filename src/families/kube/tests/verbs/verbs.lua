-- kube.logs, kube.events, kube.delete, kube.rollout_undo against the stand-in (incident.yaml).
runbook { id = "kube-verbs" }

local function eq(got, want, what)
  if got ~= want then error(string.format("%s: expected %s, got %s", what, tostring(want), tostring(got)), 2) end
end

step "logs" { run = function()
  eq(kube.logs("batch-1", { container = "main", tail = 2 }), "ERROR pool exhausted (250/250)\nretrying in 5s\n", "tail")
  local all = kube.logs("batch-1", { container = "main" })
  eq(select(2, all:gsub("\n", "")), 5, "all lines")
  eq(select(2, kube.logs("batch-1", { container = "main", since = "1h" }):gsub("\n", "")), 3, "since drops old lines")
  eq(kube.logs("batch-1", { container = "main", previous = true }), "booting\npanic: too many connections\n", "previous")
  eq(kube.logs("batch-1", { container = "sidecar" }), "sidecar ready\n", "second container")
  eq(#kube.logs("batch-1", { container = "main", limit_bytes = 7 }), 7, "limit_bytes")
  local ok, e = pcall(kube.logs, "batch-1")
  assert(not ok and e.code == "invalid" and e.message:find("choose one of", 1, true), "two containers, none named: " .. tostring(e and e.message))
  ok, e = pcall(kube.logs, "batch-1", { container = "sidecar", previous = true })
  assert(not ok and e.code == "invalid" and e.message:find("previous terminated container", 1, true), tostring(e and e.message))
  ok, e = pcall(kube.logs, "nope-pod", { container = "main" })
  assert(not ok and e.code == "not_found", "missing pod: " .. tostring(e and e.message))
end }

step "events" { run = function()
  local evs = kube.events("pod", "batch-1")
  eq(#evs, 1, "events of batch-1")
  eq(evs[1].reason, "BackOff", "reason")
  eq(evs[1].type, "Warning", "type")
  eq(evs[1].count, 7, "count")
  local dep = kube.events("deployment", "api")
  assert(#dep >= 1 and dep[1].reason == "ScalingReplicaSet", "deployment events")
  for _, ev in ipairs(kube.events()) do
    assert(ev.metadata.namespace == "prod-tenant-7", "an event of another namespace: " .. ev.metadata.namespace)
    assert(ev.reason ~= "Tenant8Only", "prod-tenant-8's event")
  end
  eq(#kube.events("pod", "no-such-pod"), 0, "no events")
end }

step "rollout_undo" { run = function(ctx)
  kube_patch("deployment", "api", { spec = { template = { spec = { containers = {
    { name = "app", env = { { name = "LOG_LEVEL", value = "debug" } } } } } } } }, { type = "strategic" })
  kube.rollout_status("api", { timeout = 30, interval = 0.1 })
  local d = kube.rollout_undo("api")
  local level
  for _, e in ipairs(d.spec.template.spec.containers[1].env) do if e.name == "LOG_LEVEL" then level = e.value end end
  eq(level, "info", "undo restored the previous template")
  local s = kube.rollout_status("api", { timeout = 30, interval = 0.1 })
  eq(s.revision, "3", "the old ReplicaSet is revision 3")
  local ok, e = pcall(kube.rollout_undo, "api", { to_revision = 9 })
  assert(not ok and e.code == "not_found" and e.message:find("revision 9 not found", 1, true), tostring(e and e.message))
end }

step "delete" { run = function()
  local pods = kube.list("pods", { labels = { app = "api" } }).items
  eq(#pods, 1, "one api pod")
  local name = pods[1].metadata.name
  local r = kube.delete("pod", name)
  eq(r.deleted, true, "deleted")
  local ok, e = pcall(kube.get, "pod", name)
  assert(not ok and e.code == "not_found", "the pod is gone")
  local after = kube.list("pods", { labels = { app = "api" } }).items
  eq(#after, 1, "replaced by its ReplicaSet")
  assert(after[1].metadata.name ~= name, "a new pod")
  local evs = kube.events("pod", name)
  eq(evs[#evs].reason, "Killing", "Killing event")
  ok, e = pcall(kube.delete, "configmap", "db-pool-config")
  assert(not ok and e.code == "invalid" and e.message:find("only pods", 1, true), tostring(e and e.message))
end }
