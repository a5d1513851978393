# Docker primitives: the demuxer in C, and end to end against a real dockerd (src/families/docker/tests/run_tests.sh).
if(CMOCKA_FOUND)
  add_executable(test_docker_stream ${CMAKE_SOURCE_DIR}/src/families/docker/tests/test_docker_stream.c)
  target_link_libraries(test_docker_stream PRIVATE rblcore PkgConfig::CMOCKA)
  add_test(NAME docker_stream COMMAND test_docker_stream)
endif()
add_test(NAME docker_primitives COMMAND bash ${CMAKE_SOURCE_DIR}/src/families/docker/tests/run_tests.sh ${CMAKE_BINARY_DIR}/rbl)
set_tests_properties(docker_primitives PROPERTIES TIMEOUT 600)
add_test(NAME docker_verbs COMMAND bash ${CMAKE_SOURCE_DIR}/src/families/docker/tests/verbs_tests.sh ${CMAKE_BINARY_DIR}/rbl)
set_tests_properties(docker_verbs PROPERTIES TIMEOUT 300)
# Writes canceled in flight against the real dockerd: docker.restart, docker_exec (test_cancel.sh).
add_test(NAME docker_cancel_writes COMMAND bash ${CMAKE_SOURCE_DIR}/src/families/docker/tests/test_cancel.sh ${CMAKE_BINARY_DIR}/rbl)
set_tests_properties(docker_cancel_writes PROPERTIES TIMEOUT 300)
# Docker writes in a dry run and under --plan against the real dockerd (test_plan.sh).
add_test(NAME docker_plan COMMAND bash ${CMAKE_SOURCE_DIR}/src/families/docker/tests/test_plan.sh ${CMAKE_BINARY_DIR}/rbl)
set_tests_properties(docker_plan PROPERTIES TIMEOUT 300)
