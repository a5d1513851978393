# strpat.cmake: benchmark of rbl_strpat vs stock string.* (run by hand: ./bench_strpat).
add_executable(bench_strpat bench/strpat_bench.c src/core/strpat.c)
target_include_directories(bench_strpat PRIVATE ${CMAKE_SOURCE_DIR}/src/core)
target_link_libraries(bench_strpat PRIVATE PkgConfig::LUA)
# CI checks the bench runs; its figures are read from the same command run by hand
add_test(NAME strpat_bench_smoke COMMAND bench_strpat)
set_tests_properties(strpat_bench_smoke PROPERTIES TIMEOUT 300 LABELS no-asan)
