-- The first PATCH gets a 409 (stand-in --fail ... 409 1): re-read and retry.
runbook { id = "kube-conflict-once" }
step "patch" { run = function()
  local p = kube_patch("configmap", "conflict-once", { data = { k = "retried" } })
  assert(p.data.k == "retried", "patched after the retry")
end }
