add_test(NAME isolation COMMAND bash ${CMAKE_SOURCE_DIR}/src/families/isolation/tests/run_tests.sh $<TARGET_FILE:rbl>)
set_tests_properties(isolation PROPERTIES TIMEOUT 180)
