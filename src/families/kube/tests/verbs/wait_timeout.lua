-- kube.wait / rollout_status that never succeed: the step fails with code timeout (or failed for
-- a rollout past its progress deadline); params.what picks the case.
runbook { id = "kube-wait-timeout", params = { what = "condition" } }

step "wait" { run = function()
  if params.what == "condition" then
    kube.wait("deployment", "api", "condition=Progressing=False", { timeout = 1, interval = 0.2 })
  elseif params.what == "rollout" then
    kube_patch("deployment", "stuck", { spec = { template = { metadata = { labels = { app = "stuck", v = "2" } } } } })
    kube.rollout_status("stuck", { timeout = 1.5, interval = 0.2 })
  elseif params.what == "deadline" then
    kube_patch("deployment", "stuck", { spec = { template = { metadata = { labels = { app = "stuck", v = "3" } } } } })
    kube.rollout_status("stuck", { timeout = 30, interval = 0.2 })
  elseif params.what == "missing" then
    kube.wait("pod", "no-such-pod", "Ready", { timeout = 5 })
  end
end }
