-- Cross-tenant attempts of the incident verbs: each must be refused (exit 3) before any request.
runbook { id = "kube-verbs-scope", params = { what = "" } }

step "try" { run = function()
  local w = params.what
  if w == "logs_other_ns" then kube.logs("batch-1", { namespace = "prod-tenant-8", container = "main" })
  elseif w == "events_other_ns" then kube.events("pod", "batch-1", { namespace = "prod-tenant-8" })
  elseif w == "delete_other_ns" then kube.delete("pod", "batch-1", { namespace = "prod-tenant-8" })
  elseif w == "undo_other_ns" then kube.rollout_undo("api", { namespace = "prod-tenant-8" })
  elseif w == "wait_other_ns" then kube.wait("deployment", "api", "Available", { namespace = "prod-tenant-8", timeout = 2 })
  elseif w == "status_other_ns" then kube.rollout_status("api", { namespace = "prod-tenant-8", timeout = 2 })
  elseif w == "logs_traversal" then kube.logs("../../prod-tenant-8/pods/batch-1", { container = "main" })
  elseif w == "events_traversal" then kube.events("pod", "x/../../../prod-tenant-8")
  elseif w == "events_field_other_ns" then
    kube.list("events", { fields = { ["involvedObject.namespace"] = "prod-tenant-8" } })
  else error("unknown case " .. tostring(w)) end
end }
