-- One write params.what chooses; every one of them must be refused before any request.
local what = params.what
if what == "other_ns_get" then kube.get("configmap", "db-pool-config", { namespace = "prod-tenant-8" })
elseif what == "other_ns_patch" then kube_patch("deployment", "api", { spec = { replicas = 0 } }, { namespace = "prod-tenant-8" })
elseif what == "other_ns_list" then kube.list("configmaps", { namespace = "kube-system" })
elseif what == "cluster_write" then kube_patch("clusterrole", "edit", { metadata = { labels = { x = "y" } } })
elseif what == "other_namespace_object" then kube_patch("namespace", "prod-tenant-8", { metadata = { labels = { x = "y" } } })
elseif what == "tenant_label" then kube_patch("namespace", "prod-tenant-7", { metadata = { labels = { ["rbl.io/tenant"] = "prod-tenant-8" } } })
elseif what == "exec_sub" then kube.get("pods/exec", "api-7d9f8-abcde")
elseif what == "token_sub" then kube_patch("serviceaccounts/token", "api", { spec = {} })
elseif what == "can_i_other" then kube.can_i("get", "pods", { namespace = "prod-tenant-8" })
elseif what == "nul" then kube.get("configmap", "db\0pool")
-- patches of an object of the tenant's own that reach metadata.namespace or the tenant label:
-- host Lua has no check for them, the gate reads the body by its Content-Type (docs/gate.md)
elseif what == "json_namespace" then
  kube_patch("configmap", "db-pool-config", { { op = "replace", path = "/metadata/namespace", value = "prod-tenant-8" } }, { type = "json" })
elseif what == "json_label_move" then
  kube_patch("configmap", "db-pool-config", { { op = "move", from = "/metadata/labels/rbl.io~1tenant", path = "/data/t" } }, { type = "json" })
elseif what == "merge_label" then
  kube_patch("configmap", "db-pool-config", { metadata = { labels = { ["rbl.io/tenant"] = "prod-tenant-8" } } })
elseif what == "strategic_replace" then
  kube_patch("configmap", "db-pool-config", { metadata = { ["$patch"] = "replace", name = "db-pool-config" } }, { type = "strategic" })
elseif what == "bad_ns" then kube.get("configmap", "db-pool-config", { namespace = "../prod-tenant-8" })
else
  kube.get("configmap", what) -- a hostile name
end
