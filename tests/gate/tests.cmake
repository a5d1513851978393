# The gate's proof by mutation (docs/gate.md): a build whose host-Lua scope checks are no-ops
# (RBL_MUTANT_NO_LUA_SCOPE) runs every cross-tenant case of the Docker and Kubernetes suites
# against the real dockerd and the API stand-in; the C gate alone must refuse them all.
add_test(NAME gate_mutation COMMAND bash ${CMAKE_SOURCE_DIR}/tests/gate/run_mutation.sh
         ${CMAKE_SOURCE_DIR} ${CMAKE_BINARY_DIR}/mutant ${CMAKE_BINARY_DIR}/rbl)
set_tests_properties(gate_mutation PROPERTIES TIMEOUT 1200 LABELS no-asan)
