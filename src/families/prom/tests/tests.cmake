# The prom family: the PromQL scoper in C (cmocka, with a mutation fuzz), and end to end against
# Debian's prometheus and prometheus-pushgateway (src/families/prom/tests/run_tests.sh).
if(CMOCKA_FOUND)
  add_executable(test_promql ${CMAKE_SOURCE_DIR}/src/families/prom/tests/test_promql.c)
  target_link_libraries(test_promql PRIVATE rblcore PkgConfig::CMOCKA)
  add_test(NAME prom_promql COMMAND test_promql)
  set_tests_properties(prom_promql PROPERTIES TIMEOUT 300)
endif()
add_test(NAME prom_e2e COMMAND bash ${CMAKE_SOURCE_DIR}/src/families/prom/tests/run_tests.sh ${CMAKE_BINARY_DIR}/rbl)
set_tests_properties(prom_e2e PROPERTIES TIMEOUT 600)
