-- API errors: each one a clear message naming kind, name, namespace and status.
runbook { id = "kube-errors" }

local function expect(code, pattern, fn, ...)
  local ok, e = pcall(fn, ...)
  if ok then error("expected an error matching " .. pattern, 2) end
  local msg = type(e) == "table" and e.message or tostring(e)
  if type(e) ~= "table" or e.code ~= code then error(string.format("expected code %s, got %s: %s", code, tostring(e.code), msg), 2) end
  if not msg:find(pattern) then error(string.format("message %q does not match %q", msg, pattern), 2) end
  log("%s -> %s", code, msg)
end

step "errors" { run = function()
  local ns = 'in namespace "prod%-tenant%-7"'
  expect("denied", 'configmaps "e401" ' .. ns .. ': HTTP 401', kube.get, "cm", "e401")
  expect("denied", 'configmaps "e403" ' .. ns .. ': HTTP 403', kube.get, "cm", "e403")
  expect("not_found", 'configmaps "nope" ' .. ns .. ': HTTP 404 NotFound', kube.get, "cm", "nope")
  expect("not_found", 'kind "widget" is not served', kube.get, "widget", "x")
  expect("conflict", 'configmaps "e409" ' .. ns .. ': HTTP 409.*gave up after 4 attempts', kube_patch, "cm", "e409", { data = { k = "w" } })
  expect("conflict", 'configmaps "e409json" ' .. ns .. ': HTTP 409', kube_patch, "cm", "e409json",
    { { op = "test", path = "/data/k", value = "v" }, { op = "replace", path = "/data/k", value = "w" } }, { type = "json" })
  expect("invalid", 'configmaps "e422" ' .. ns .. ': HTTP 422', kube_patch, "cm", "e422", { data = { k = "w" } })
  expect("invalid", 'configmaps "other" ' .. ns .. ': HTTP 422.*test', kube_patch, "cm", "other",
    { { op = "test", path = "/data/k", value = "not-v" } }, { type = "json" })
  expect("unavailable", 'configmaps "e500" ' .. ns .. ': HTTP 500', kube.get, "cm", "e500")
  expect("timeout", 'configmaps "ehang" ' .. ns, kube.get, "cm", "ehang")
  expect("invalid", 'not a DNS%-1123', kube.get, "cm", "UPPER")
  expect("invalid", 'non%-ASCII', kube.get, "cm", "db\u{2215}pool")
end }
