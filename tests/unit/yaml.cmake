# src/core/yaml.c (YAML -> cJSON) and src/families/drift/drift.c's path confinement.
if(CMOCKA_FOUND)
  add_executable(test_yaml ${CMAKE_SOURCE_DIR}/tests/unit/test_yaml.c)
  target_link_libraries(test_yaml PRIVATE rblcore PkgConfig::CMOCKA)
  target_compile_definitions(test_yaml PRIVATE RBL_SOURCE_DIR="${CMAKE_SOURCE_DIR}")
  add_test(NAME yaml COMMAND test_yaml)
  set_tests_properties(yaml PROPERTIES TIMEOUT 60)
endif()
