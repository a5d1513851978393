add_test(NAME runbook_dsl COMMAND python3 -W ignore::ResourceWarning ${CMAKE_SOURCE_DIR}/tests/runbooks/test_dsl.py $<TARGET_FILE:rbl>)
set_tests_properties(runbook_dsl PROPERTIES TIMEOUT 300)
add_test(NAME runbook_partial COMMAND python3 -W ignore::ResourceWarning ${CMAKE_SOURCE_DIR}/tests/runbooks/test_partial.py $<TARGET_FILE:rbl>)
set_tests_properties(runbook_partial PROPERTIES TIMEOUT 300)
