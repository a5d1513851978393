add_test(NAME seed_db_connection_exhaustion COMMAND bash ${CMAKE_SOURCE_DIR}/tests/seeds/test_db_seed.sh $<TARGET_FILE:rbl>)
set_tests_properties(seed_db_connection_exhaustion PROPERTIES TIMEOUT 180)
add_test(NAME seed_resume_nothing_to_do COMMAND bash ${CMAKE_SOURCE_DIR}/tests/seeds/test_seed_resume.sh $<TARGET_FILE:rbl>)
set_tests_properties(seed_resume_nothing_to_do PROPERTIES TIMEOUT 240)
