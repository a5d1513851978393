add_test(NAME console COMMAND python3 -W ignore::ResourceWarning ${CMAKE_SOURCE_DIR}/tests/console/test_console.py $<TARGET_FILE:rbl>)
set_tests_properties(console PROPERTIES TIMEOUT 300)
