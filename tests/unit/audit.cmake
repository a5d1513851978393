add_executable(test_audit tests/unit/test_audit.c)
target_link_libraries(test_audit PRIVATE rblcore PkgConfig::CMOCKA)
add_test(NAME audit_unit COMMAND test_audit WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})

add_executable(test_jcs tests/unit/test_jcs.c)
target_link_libraries(test_jcs PRIVATE rblcore PkgConfig::CMOCKA)
add_test(NAME audit_jcs COMMAND test_jcs WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
