# Every C path a runbook reaches is bounded in time and memory; nothing a runbook does aborts rbl.
add_test(NAME limits COMMAND python3 -W ignore::ResourceWarning ${CMAKE_SOURCE_DIR}/tests/limits/test_limits.py $<TARGET_FILE:rbl>)
set_tests_properties(limits PROPERTIES TIMEOUT 600)
# Peak RSS against the budget: meaningless under ASan (shadow memory, quarantine).
add_test(NAME limits_rss COMMAND python3 -W ignore::ResourceWarning ${CMAKE_SOURCE_DIR}/tests/limits/test_limits.py $<TARGET_FILE:rbl> --rss)
set_tests_properties(limits_rss PROPERTIES TIMEOUT 300 LABELS no-asan)
