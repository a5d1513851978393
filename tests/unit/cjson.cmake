# cJSON's strings go back through cJSON_free, and cJSON items hold only cJSON's strings (the
# budget counts cJSON's allocations): a check over every C file; test_engine's
# test_cjson_strings_settle_the_budget shows the drift on the paths a unit test reaches.
add_test(NAME cjson_free COMMAND python3 ${CMAKE_SOURCE_DIR}/tests/unit/check_cjson_free.py ${CMAKE_SOURCE_DIR})
set_tests_properties(cjson_free PROPERTIES LABELS no-asan)
