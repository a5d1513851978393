# serve_bench.cmake: `make serve_bench` runs bench/serve_bench.sh (latency alert -> first
# primitive, accepted alerts/s against the disk's fsync rate).
add_custom_target(serve_bench
  COMMAND bash ${CMAKE_SOURCE_DIR}/bench/serve_bench.sh $<TARGET_FILE:rbl>
  WORKING_DIRECTORY ${CMAKE_SOURCE_DIR}
  USES_TERMINAL)
