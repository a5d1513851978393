-- bench/kube_bench.sh's runbook: patch one ConfigMap in each tenant's namespace, 32 at a time.
runbook { id = "kube-bench", params = { value = "rbl" } }
step "patch" {
  run = function()
    each_tenant(function(t)
      kube_patch("configmap", "bench", { data = { value = params.value or "rbl" } })
    end, { concurrency = 32 })
  end,
}
