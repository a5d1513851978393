# libFuzzer harnesses (docs/fuzzing.md): built with clang into build/fuzz, each run a few seconds
# from its seed corpus. Registered only where clang is installed (scripts/setup.sh installs it,
# so CI runs them); labelled fuzz, and no-asan since they carry ASan and UBSan themselves.
find_program(RBL_CLANG clang)
if(RBL_CLANG)
  set(RBL_FUZZ_OUT ${CMAKE_BINARY_DIR}/fuzz)
  add_test(NAME fuzz_build COMMAND ${CMAKE_COMMAND} -E env CC_FUZZ=${RBL_CLANG}
           sh ${CMAKE_SOURCE_DIR}/tests/fuzz/run.sh build ${RBL_FUZZ_OUT})
  set_tests_properties(fuzz_build PROPERTIES FIXTURES_SETUP rbl_fuzz LABELS "fuzz;no-asan" TIMEOUT 1200)
  foreach(h yaml json jcs strpat docker_stream kubeconfig audit iac_path promql)
    add_test(NAME fuzz_${h} COMMAND ${CMAKE_COMMAND} -E env FUZZ_SEED=1 FUZZ_RUNS=20000
             sh ${CMAKE_SOURCE_DIR}/tests/fuzz/run.sh run ${RBL_FUZZ_OUT} ${h} 5)
    set_tests_properties(fuzz_${h} PROPERTIES FIXTURES_REQUIRED rbl_fuzz LABELS "fuzz;no-asan" TIMEOUT 300)
  endforeach()
endif()
