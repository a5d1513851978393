add_test(NAME docs_complete COMMAND bash ${CMAKE_SOURCE_DIR}/tests/docs/check_docs.sh $<TARGET_FILE:rbl>)
