# notify: the gate decision, secret resolver and signature in C; end to end against local
# receivers that check the vendors' documented payloads (src/families/notify/tests/run_tests.sh).
if(CMOCKA_FOUND)
  add_executable(test_notify_gate ${CMAKE_SOURCE_DIR}/src/families/notify/tests/test_notify_gate.c)
  target_link_libraries(test_notify_gate PRIVATE rblcore PkgConfig::CMOCKA)
  add_test(NAME notify_gate COMMAND test_notify_gate)
endif()
add_test(NAME notify_e2e COMMAND bash ${CMAKE_SOURCE_DIR}/src/families/notify/tests/run_tests.sh $<TARGET_FILE:rbl>)
set_tests_properties(notify_e2e PROPERTIES TIMEOUT 180)
