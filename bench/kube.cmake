# kube.cmake: smoke passes of the Kubernetes benches (CI checks they still run; the figures come
# from full runs by hand: bash bench/kube_bench.sh build/rbl, bash bench/fanout_bench.sh build/rbl).
add_test(NAME kube_bench_smoke COMMAND env ANSIBLE=0 bash ${CMAKE_SOURCE_DIR}/bench/kube_bench.sh $<TARGET_FILE:rbl> 5)
set_tests_properties(kube_bench_smoke PROPERTIES TIMEOUT 300 LABELS no-asan)
add_test(NAME fanout_bench_smoke COMMAND bash ${CMAKE_SOURCE_DIR}/bench/fanout_bench.sh $<TARGET_FILE:rbl> 20 1)
set_tests_properties(fanout_bench_smoke PROPERTIES TIMEOUT 300 LABELS no-asan)
