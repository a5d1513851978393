-- Patches the tenant's own Namespace with a patch given as JSON text (params.patch, type
-- params.type): the tenant-label guard decides by the patch's effect (docs/gate.md).
runbook { id = "kube-ns-patch", params = { patch = "{}", type = "strategic" } }
step "patch" { run = function()
  kube_patch("namespace", "prod-tenant-7", json.decode(params.patch), { type = params.type })
end }
