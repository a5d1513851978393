-- kube.wait and kube.rollout_status against the stand-in started with --rollout-ms: a change to
-- the Deployment's template rolls out over time; the runbook follows it.
runbook { id = "kube-waits" }

local function eq(got, want, what)
  if got ~= want then error(string.format("%s: expected %s, got %s", what, tostring(want), tostring(got)), 2) end
end

step "rollout" { run = function(ctx)
  local before = kube.get("deploy", "api").metadata.annotations["deployment.kubernetes.io/revision"]
  eq(before, "1", "revision before")
  -- the stand-in holds the rollout at its start while this annotation is set (so machine load
  -- cannot let it finish before the first poll); a parallel task lifts it a second later
  local STALL = "standin.rbl.io/stall-rollout"
  kube_patch("deployment", "api", { metadata = { annotations = { [STALL] = "true" } } })
  kube_patch("deployment", "api", { spec = { template = { spec = { containers = {
    { name = "app", env = { { name = "LOG_LEVEL", value = "warn" } } } } } } } }, { type = "strategic" })
  local d = kube.get("deploy", "api")
  assert((d.status.observedGeneration or 0) < d.metadata.generation or (d.status.updatedReplicas or 0) == 0,
    "the rollout should be held at its start")
  local ok, e = pcall(kube.rollout_status, "api", { timeout = 0.5, interval = 0.1 })
  assert(not ok and e.code == "timeout", "a held rollout times out: " .. tostring(e and e.message))
  local s = parallel(
    function() return kube.rollout_status("api", { timeout = 30, interval = 0.1 }) end,
    function()
      sleep(1)
      kube_patch("deployment", "api", { metadata = { annotations = { [STALL] = json.null } } })
    end)[1]
  eq(s.done, true, "rollout_status done")
  eq(s.revision, "2", "new revision")
  eq(s.updated_replicas, 2, "updated replicas")
  eq(s.available_replicas, 2, "available replicas")
  local w = kube.wait("deployment", "api", "condition=Available", { timeout = 10, interval = 0.1 })
  eq(w.metadata.name, "api", "kube.wait returns the object")
  eq(kube.wait("deploy", "api", "jsonpath={.status.updatedReplicas}=2", { timeout = 5, interval = 0.1 }).status.updatedReplicas, 2, "jsonpath")
  eq(kube.wait("pod", "batch-1", "jsonpath={.status.phase}=Running", { timeout = 5 }).metadata.name, "batch-1", "pod phase")
  eq(kube.wait("deploy", "api", function(o) return o.spec.replicas == 2 end, { timeout = 5 }).spec.replicas, 2, "function")
  local ok, e = pcall(kube.wait, "deploy", "api", "Progressing=False", { timeout = 1 })
  assert(not ok and e.code == "invalid", "a malformed condition is invalid: " .. tostring(e and e.message))
end }
