add_executable(bench_yield bench/yield_bench.c)
target_link_libraries(bench_yield PRIVATE rblcore)
