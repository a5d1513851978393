add_test(NAME docs_complete COMMAND bash ${CMAKE_SOURCE_DIR}/tests/docs/check_docs.sh $<TARGET_FILE:rbl>)
file(GLOB RBL_FORMAT_SOURCES ${CMAKE_SOURCE_DIR}/src/*.c ${CMAKE_SOURCE_DIR}/src/*.h
     ${CMAKE_SOURCE_DIR}/tests/unit/*.c ${CMAKE_SOURCE_DIR}/bench/*.c)
find_program(CLANG_FORMAT clang-format)
if(CLANG_FORMAT)
  add_test(NAME c_formatted COMMAND ${CLANG_FORMAT} --dry-run -Werror ${RBL_FORMAT_SOURCES})
  set_tests_properties(c_formatted PROPERTIES LABELS no-asan)
endif()
