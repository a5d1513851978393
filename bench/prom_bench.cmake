# prom_bench.cmake: `make prom_bench` runs bench/prom_bench.sh (prom.query vs curl, a 200-tenant
# fan-out); ctest runs only a smoke pass (10 queries, 5 tenants).
add_custom_target(prom_bench
  COMMAND bash ${CMAKE_SOURCE_DIR}/bench/prom_bench.sh $<TARGET_FILE:rbl>
  WORKING_DIRECTORY ${CMAKE_SOURCE_DIR}
  USES_TERMINAL)
add_test(NAME prom_bench_smoke COMMAND bash ${CMAKE_SOURCE_DIR}/bench/prom_bench.sh $<TARGET_FILE:rbl> 10 5)
set_tests_properties(prom_bench_smoke PROPERTIES TIMEOUT 300 SKIP_RETURN_CODE 77)
