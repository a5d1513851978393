-- Under --dry-run the patch is sent with dryRun=All: the answer shows the change, the object keeps its state.
runbook { id = "kube-dry-run" }
step "writes" { run = function()
  local p = kube_patch("configmap", "db-pool-config", { data = { max_connections = "1" } })
  assert(p.data.max_connections == "1", "server-side dry run answers the patched object")
  assert(dry_run == true)
  kube.scale("deployment", "api", 9)
  assert(kube.get("configmap", "db-pool-config").data.max_connections == "250", "nothing stored")
end }
