add_executable(test_engine tests/unit/test_engine.c)
target_link_libraries(test_engine PRIVATE rblcore PkgConfig::CMOCKA)
add_test(NAME engine_unit COMMAND test_engine)
