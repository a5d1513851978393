-- One read and detect_runtime, for the auth tests: prints the auth kind in the report.
local r = detect_runtime("kubernetes")
log("auth=%s", r.auth)
local cm = kube.get("configmap", params.name or "db-pool-config", { namespace = params.ns })
log("got %s", cm.metadata.name)
