add_test(NAME runbook_dsl COMMAND python3 -W ignore::ResourceWarning ${CMAKE_SOURCE_DIR}/tests/runbooks/test_dsl.py $<TARGET_FILE:rbl>)
set_tests_properties(runbook_dsl PROPERTIES TIMEOUT 300)
