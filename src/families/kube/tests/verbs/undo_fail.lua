-- A step that undoes a rollout and then fails: rollback = "auto" puts the template back.
runbook { id = "kube-undo-rollback" }

step "undo_then_fail" {
  run = function()
    kube.rollout_undo("api")
    error("verification after the undo failed")
  end,
  rollback = "auto",
}
