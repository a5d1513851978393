# src/core/gate.c: the tenant gate's decisions, driven directly with adversarial requests and answers.
if(CMOCKA_FOUND)
  add_executable(test_gate ${CMAKE_SOURCE_DIR}/tests/unit/test_gate.c)
  target_link_libraries(test_gate PRIVATE rblcore PkgConfig::CMOCKA)
  add_test(NAME gate COMMAND test_gate)
  set_tests_properties(gate PROPERTIES TIMEOUT 60)
endif()
