# drift_bench.cmake: `make drift_bench` runs bench/drift_bench.sh (drift.compare vs jq -S + diff).
add_custom_target(drift_bench
  COMMAND sh ${CMAKE_SOURCE_DIR}/bench/drift_bench.sh
  WORKING_DIRECTORY ${CMAKE_SOURCE_DIR}
  USES_TERMINAL)
