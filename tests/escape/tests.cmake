add_test(NAME escape_suite COMMAND bash ${CMAKE_SOURCE_DIR}/tests/escape/run.sh ${CMAKE_BINARY_DIR}/rbl)
set_tests_properties(escape_suite PROPERTIES TIMEOUT 600)
