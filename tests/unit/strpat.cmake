# strpat.cmake: CTest registration for the budgeted pattern matcher (unit + differential vs stock Lua).
add_executable(test_strpat tests/unit/test_strpat.c src/core/strpat.c)
target_include_directories(test_strpat PRIVATE ${CMAKE_SOURCE_DIR}/src/core)
target_link_libraries(test_strpat PRIVATE PkgConfig::LUA PkgConfig::CMOCKA)
add_test(NAME strpat_unit COMMAND test_strpat)
# A hang in the catastrophic-pattern test must fail, not stall CI.
set_tests_properties(strpat_unit PROPERTIES TIMEOUT 120)

add_executable(test_strpat_diff tests/unit/test_strpat_diff.c src/core/strpat.c)
target_include_directories(test_strpat_diff PRIVATE ${CMAKE_SOURCE_DIR}/src/core)
target_link_libraries(test_strpat_diff PRIVATE PkgConfig::LUA)
add_test(NAME strpat_diff COMMAND test_strpat_diff tests/unit/strpat_diff.lua
         WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
set_tests_properties(strpat_diff PROPERTIES TIMEOUT 300)
