-- A successful run of reversible changes, for `rbl rollback`.
runbook { id = "kube-change" }
step "change" { run = function()
  kube_patch("configmap", "db-pool-config", { data = { max_connections = "700", idle_timeout = json.null, fresh = "1" } })
  kube_patch("cm", "db-pool-config", { { op = "add", path = "/data/json", value = "j" } }, { type = "json" })
  kube.scale("deployment", "api", 6)
end, rollback = "auto" }
