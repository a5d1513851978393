-- bench/fanout_bench.sh's runbook: patch one ConfigMap in each tenant's namespace, params.c
-- at a time (every tenant of the run: --tenant 'bench-*').
runbook { id = "fanout-bench", params = { c = "32" } }
step "patch" {
  run = function()
    each_tenant(function()
      kube_patch("configmap", "bench", { data = { value = "rbl" } })
    end, { concurrency = tonumber(params.c or 32) })
  end,
}
