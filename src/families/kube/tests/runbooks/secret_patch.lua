-- Secrets in patches: a secret() value inside a patch body is sent as the real value (the audit
-- and the report show it redacted); new Secret data is redacted in the intent and the result.
runbook { id = "kube-secret-patch" }
step "patch" { run = function()
  kube_patch("configmap", "db-pool-config", { data = { password_ref = secret("KUBE_PW") } })
  kube_patch("secret", "db-credentials", { stringData = { password = "Kq7-literal-secret-data" },
    data = { token = "S3E3LWxpdGVyYWwtYmFzZTY0LWRhdGE=" } })
  kube_patch("secret", "db-credentials", { { op = "add", path = "/stringData", value = { extra = "Kq7-json-patch-secret" } } },
    { type = "json" })
  local cm = kube.get("configmap", "db-pool-config")
  -- the object holds the real value; printing it is masked like every text that leaves
  print("stored: " .. cm.data.password_ref)
end }
