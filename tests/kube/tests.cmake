# Kubernetes API stand-in (tests/kube/README.md)
add_test(NAME kube_kubectl_fidelity COMMAND bash ${CMAKE_SOURCE_DIR}/tests/kube/test_kubectl_fidelity.sh)
add_test(NAME kube_standin_faults COMMAND bash ${CMAKE_SOURCE_DIR}/tests/kube/test_standin_faults.sh)
add_test(NAME kube_patch_semantics COMMAND python3 ${CMAKE_SOURCE_DIR}/tests/kube/test_patch_semantics.py)
