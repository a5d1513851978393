# docker.cmake: smoke pass of bench/docker_bench.sh (10 calls, one round); the figures come from a
# full run by hand: bash bench/docker_bench.sh build/rbl
add_test(NAME docker_bench_smoke COMMAND bash ${CMAKE_SOURCE_DIR}/bench/docker_bench.sh $<TARGET_FILE:rbl> 10 1)
set_tests_properties(docker_bench_smoke PROPERTIES TIMEOUT 300 LABELS no-asan)
