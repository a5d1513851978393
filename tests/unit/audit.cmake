add_executable(test_audit tests/unit/test_audit.c)
target_link_libraries(test_audit PRIVATE rblcore PkgConfig::OPENSSL PkgConfig::CMOCKA)
add_test(NAME audit_unit COMMAND test_audit WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})

add_executable(test_jcs tests/unit/test_jcs.c)
target_link_libraries(test_jcs PRIVATE rblcore PkgConfig::CMOCKA)
add_test(NAME audit_jcs COMMAND test_jcs WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})

# src/core/sha256.c (the chain's hash) against FIPS 180-4 examples and OpenSSL's SHA-256.
add_executable(test_sha256 tests/unit/test_sha256.c)
target_link_libraries(test_sha256 PRIVATE rblcore PkgConfig::OPENSSL PkgConfig::CMOCKA)
add_test(NAME audit_sha256 COMMAND test_sha256)

# A no-op run and a keyless verify load no OpenSSL or libcurl; a key loads OpenSSL on demand.
add_test(NAME startup_libs COMMAND bash ${CMAKE_SOURCE_DIR}/tests/unit/startup_libs.sh $<TARGET_FILE:rbl>)
set_tests_properties(startup_libs PROPERTIES TIMEOUT 120 LABELS no-asan)
