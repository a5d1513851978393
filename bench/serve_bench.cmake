# serve_bench.cmake: `make serve_bench` runs bench/serve_bench.sh (latency alert -> first
# primitive, accepted alerts/s against the disk's fsync rate).
add_custom_target(serve_bench
  COMMAND bash ${CMAKE_SOURCE_DIR}/bench/serve_bench.sh $<TARGET_FILE:rbl>
  WORKING_DIRECTORY ${CMAKE_SOURCE_DIR}
  USES_TERMINAL)
# CI checks the bench runs (5 alerts, a 1 s flood from 4 clients); figures from the full run
add_test(NAME serve_bench_smoke COMMAND bash ${CMAKE_SOURCE_DIR}/bench/serve_bench.sh $<TARGET_FILE:rbl> 5 1 4)
set_tests_properties(serve_bench_smoke PROPERTIES TIMEOUT 300 LABELS no-asan)
