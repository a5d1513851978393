# src/core/http.c: the curl multi on libuv, against a server inside the test, openssl s_server and dockerd.
if(CMOCKA_FOUND)
  add_executable(test_http ${CMAKE_SOURCE_DIR}/tests/unit/test_http.c)
  target_link_libraries(test_http PRIVATE rblcore PkgConfig::CMOCKA)
  add_test(NAME http COMMAND test_http)
  set_tests_properties(http PROPERTIES TIMEOUT 120)
endif()
