add_test(NAME demo_e2e COMMAND bash ${CMAKE_SOURCE_DIR}/tests/demo/test_demo.sh $<TARGET_FILE:rbl>)
set_tests_properties(demo_e2e PROPERTIES TIMEOUT 600)
