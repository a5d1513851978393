# strpat.cmake: benchmark of rbl_strpat vs stock string.* (run by hand: ./bench_strpat).
add_executable(bench_strpat bench/strpat_bench.c src/core/strpat.c)
target_include_directories(bench_strpat PRIVATE ${CMAKE_SOURCE_DIR}/src/core)
target_link_libraries(bench_strpat PRIVATE PkgConfig::LUA)
