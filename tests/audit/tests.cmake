add_test(NAME audit_crash_suite COMMAND python3 ${CMAKE_SOURCE_DIR}/tests/audit/crash_suite.py $<TARGET_FILE:rbl> 70)
set_tests_properties(audit_crash_suite PROPERTIES TIMEOUT 600)
add_test(NAME audit_chain_changed COMMAND bash ${CMAKE_SOURCE_DIR}/tests/audit/test_chain_changed.sh $<TARGET_FILE:rbl>)
set_tests_properties(audit_chain_changed PROPERTIES TIMEOUT 120)
# Numbers exactly: the report (integers to 2^63, doubles that round-trip) and rbl audit show (as
# the chain holds them), where cJSON's own printing kept 15 significant digits.
add_test(NAME audit_numbers COMMAND python3 ${CMAKE_SOURCE_DIR}/tests/audit/test_numbers.py $<TARGET_FILE:rbl>)
set_tests_properties(audit_numbers PROPERTIES TIMEOUT 120)
