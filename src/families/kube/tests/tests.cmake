# Kubernetes primitives end to end: the real `rbl run` / `rbl rollback` against the API stand-in (tests/kube).
add_test(NAME kube_primitives COMMAND bash ${CMAKE_SOURCE_DIR}/src/families/kube/tests/run_tests.sh ${CMAKE_BINARY_DIR}/rbl)
set_tests_properties(kube_primitives PROPERTIES TIMEOUT 600)
# kube.wait, kube.rollout_status and the incident verbs against the stand-in (rollouts taking time).
add_test(NAME kube_verbs COMMAND bash ${CMAKE_SOURCE_DIR}/src/families/kube/tests/verbs_tests.sh ${CMAKE_BINARY_DIR}/rbl)
set_tests_properties(kube_verbs PROPERTIES TIMEOUT 600)
# Writes canceled in flight (step timeout, Ctrl-C, run deadline): canceled results, read-back rollback.
add_test(NAME kube_cancel_writes COMMAND bash ${CMAKE_SOURCE_DIR}/src/families/kube/tests/test_cancel.sh ${CMAKE_BINARY_DIR}/rbl)
set_tests_properties(kube_cancel_writes PROPERTIES TIMEOUT 300)
# A dry run is a plan: --dry-run, --plan-out, --plan against the stand-in (test_plan.sh).
add_test(NAME kube_plan COMMAND bash ${CMAKE_SOURCE_DIR}/src/families/kube/tests/test_plan.sh ${CMAKE_BINARY_DIR}/rbl)
set_tests_properties(kube_plan PROPERTIES TIMEOUT 300)
