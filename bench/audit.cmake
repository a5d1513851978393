add_executable(bench_audit_verify bench/audit_verify.c)
target_link_libraries(bench_audit_verify PRIVATE rblcore)
# CI checks the bench runs (2,000 records); the figure comes from a full run: build/bench_audit_verify
add_test(NAME audit_verify_bench_smoke COMMAND bench_audit_verify 2000)
set_tests_properties(audit_verify_bench_smoke PROPERTIES TIMEOUT 120 LABELS no-asan)
