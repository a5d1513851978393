# Approvals: approve(), step approve fields, rbl approve over the socket, --yes, timeouts, the terminal via a pty.
add_test(NAME approvals COMMAND python3 ${CMAKE_SOURCE_DIR}/tests/approvals/test_approvals.py ${CMAKE_BINARY_DIR}/rbl)
set_tests_properties(approvals PROPERTIES TIMEOUT 300)
