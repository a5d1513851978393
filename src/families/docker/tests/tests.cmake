# Docker primitives: the demuxer in C, and end to end against a real dockerd (src/families/docker/tests/run_tests.sh).
if(CMOCKA_FOUND)
  add_executable(test_docker_stream ${CMAKE_SOURCE_DIR}/src/families/docker/tests/test_docker_stream.c)
  target_link_libraries(test_docker_stream PRIVATE rblcore PkgConfig::CMOCKA)
  add_test(NAME docker_stream COMMAND test_docker_stream)
endif()
add_test(NAME docker_primitives COMMAND bash ${CMAKE_SOURCE_DIR}/src/families/docker/tests/run_tests.sh ${CMAKE_BINARY_DIR}/rbl)
set_tests_properties(docker_primitives PROPERTIES TIMEOUT 600)
