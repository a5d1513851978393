add_test(NAME audit_crash_suite COMMAND python3 ${CMAKE_SOURCE_DIR}/tests/audit/crash_suite.py $<TARGET_FILE:rbl> 70)
set_tests_properties(audit_crash_suite PROPERTIES TIMEOUT 600)
