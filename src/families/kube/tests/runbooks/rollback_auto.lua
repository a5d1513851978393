-- Patches, then fails: rollback = "auto" must undo the patches, newest first.
runbook { id = "kube-rollback-auto" }
step "change" {
  run = function()
    kube_patch("configmap", "db-pool-config", { data = { max_connections = "999", added = "yes" }, metadata = { labels = { touched = "1" } } })
    kube_patch("deployment", "api", { spec = { template = { spec = { containers = {
      { name = "app", env = { { name = "LOG_LEVEL", value = "trace" } } } } } } } }, { type = "strategic" })
    kube.scale("deployment", "api", 5)
  end,
  rollback = "auto",
}
step "fails" { run = function() error("verification of the new pool size failed") end }
