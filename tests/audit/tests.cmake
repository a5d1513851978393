add_test(NAME audit_crash_suite COMMAND python3 ${CMAKE_SOURCE_DIR}/tests/audit/crash_suite.py $<TARGET_FILE:rbl> 70)
set_tests_properties(audit_crash_suite PROPERTIES TIMEOUT 600)
add_test(NAME audit_chain_changed COMMAND bash ${CMAKE_SOURCE_DIR}/tests/audit/test_chain_changed.sh $<TARGET_FILE:rbl>)
set_tests_properties(audit_chain_changed PROPERTIES TIMEOUT 120)
