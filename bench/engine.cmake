add_executable(bench_yield bench/yield_bench.c)
target_link_libraries(bench_yield PRIVATE rblcore)
# engine_bench_smoke: bench/engine_bench.py still runs (a few start-up pairs); the figures come
# from a full run by hand: python3 bench/engine_bench.py build
add_test(NAME engine_bench_smoke COMMAND python3 ${CMAKE_SOURCE_DIR}/bench/engine_bench.py ${CMAKE_BINARY_DIR} 3)
set_tests_properties(engine_bench_smoke PROPERTIES TIMEOUT 300 LABELS no-asan)
