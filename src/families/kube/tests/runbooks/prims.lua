-- Every Kubernetes primitive against the stand-in; the runbook checks its own results.
runbook { id = "kube-prims" }

local function eq(got, want, what)
  if got ~= want then error(string.format("%s: expected %s, got %s", what, tostring(want), tostring(got)), 2) end
end

step "read" { run = function()
  local cm = kube.get("configmap", "db-pool-config")
  eq(cm.data.max_connections, "250", "kube.get")
  for _, k in ipairs({ "cm", "ConfigMap", "configmaps", "configmap" }) do
    eq(kube.get(k, "db-pool-config").metadata.name, "db-pool-config", "kind alias " .. k)
  end
  eq(kube.get("deployments.apps", "api").kind, "Deployment", "resource.group")
  eq(kube.get("deployment.v1.apps", "api").kind, "Deployment", "kind.version.group")
  eq(kube.get("deploy", "api", { namespace = "prod-tenant-7" }).metadata.namespace, "prod-tenant-7", "explicit namespace")
  eq(#kube.list("deploy", { labels = { app = "api" } }).items, 1, "label selector table")
  eq(#kube.list("deploy", { labels = "app in (nope)" }).items, 0, "label selector string")
  eq(#kube.list("configmaps", { fields = { ["metadata.name"] = "db-pool-config" } }).items, 1, "field selector")
  eq(#kube.list("namespaces", { labels = { ["rbl.io/tenant"] = "prod-tenant-7" } }).items, 1, "cluster-scoped list")
  eq(kube.get("namespace", "prod-tenant-7").metadata.name, "prod-tenant-7", "cluster-scoped get")
  local rt = detect_runtime("kubernetes")
  eq(rt.runtime, "kubernetes", "detect_runtime")
  assert(rt.version:match("^v1%."), "server version")
  eq(rt.auth, "token", "auth kind")
  eq(kube.can_i("patch", "deployments"), true, "can_i patch deployments")
  eq(kube.can_i("delete", "namespaces"), false, "can_i delete namespaces")
  eq(kube.can_i("create", "pods/exec"), false, "can_i pods/exec")
end }

step "write" { run = function()
  local p = kube_patch("configmap", "db-pool-config", { data = { max_connections = "500" } })
  eq(p.data.max_connections, "500", "merge patch")
  eq(p.data.idle_timeout, "30s", "merge patch keeps the rest")
  p = kube_patch("deployment", "api", { spec = { template = { spec = { containers = {
    { name = "app", env = { { name = "LOG_LEVEL", value = "debug" } } } } } } } }, { type = "strategic" })
  local env = p.spec.template.spec.containers[1].env
  eq(#env, 3, "strategic patch merges env by name")
  p = kube_patch("cm", "db-pool-config", { { op = "add", path = "/data/extra", value = "1" } }, { type = "json" })
  eq(p.data.extra, "1", "json patch")
  local s = kube.scale("deployment", "api", 4)
  eq(s.spec.replicas, 4, "scale")
  eq(kube.get("deploy", "api").spec.replicas, 4, "scale visible")
  local r = kube.rollout_restart("api")
  assert(r.spec.template.metadata.annotations["kubectl.kubernetes.io/restartedAt"], "restartedAt annotation")
end }
