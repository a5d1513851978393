# tests/drift: drift.compare properties, the seed case, Terraform address resolution over
# real fixtures (pure Lua, plain lua5.4), and the drift benchmark as a smoke test.
find_program(LUA54 NAMES lua5.4 lua54)
if(LUA54)
  add_test(NAME drift_lua COMMAND ${LUA54} ${CMAKE_SOURCE_DIR}/src/families/drift/tests/test_drift.lua
           WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
  set_tests_properties(drift_lua PROPERTIES TIMEOUT 120)
  # src/families/drift/drift.lua's own self-test, under the plain interpreter (no rbl, no C).
  add_test(NAME drift_selftest COMMAND ${LUA54} ${CMAKE_SOURCE_DIR}/src/families/drift/drift.lua
           WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
  # The benchmark with a small document, so it cannot rot: checks the items it finds.
  add_test(NAME drift_bench_smoke
           COMMAND ${LUA54} ${CMAKE_SOURCE_DIR}/bench/drift_bench.lua --leaves 2000 --check
           WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
  set_tests_properties(drift_bench_smoke PROPERTIES TIMEOUT 120)
endif()
