# rbl serve (docs/serve.md): receiving, bad input, routing, once, pause, SIGTERM, a hostile spool
# (test_serve.py); kill -9 under load (test_crash.py); a flood (test_flood.py).
add_test(NAME serve_http COMMAND python3 ${CMAKE_SOURCE_DIR}/tests/serve/test_serve.py $<TARGET_FILE:rbl>)
set_tests_properties(serve_http PROPERTIES TIMEOUT 480)
# POST /v1/runs/ID/approve: approve and deny over HTTP, tokens, 401/403/404/409, bad bodies.
add_test(NAME serve_approve COMMAND python3 ${CMAKE_SOURCE_DIR}/tests/serve/test_approve.py $<TARGET_FILE:rbl>)
set_tests_properties(serve_approve PROPERTIES TIMEOUT 300)
add_test(NAME serve_crash COMMAND python3 ${CMAKE_SOURCE_DIR}/tests/serve/test_crash.py $<TARGET_FILE:rbl> 10)
set_tests_properties(serve_crash PROPERTIES TIMEOUT 240)
add_test(NAME serve_flood COMMAND python3 ${CMAKE_SOURCE_DIR}/tests/serve/test_flood.py $<TARGET_FILE:rbl> 10 1000)
set_tests_properties(serve_flood PROPERTIES TIMEOUT 240)
# End to end with the real parts: prometheus, prometheus-alertmanager, the pushgateway, dockerd.
add_test(NAME serve_e2e COMMAND bash ${CMAKE_SOURCE_DIR}/tests/serve/e2e.sh $<TARGET_FILE:rbl>)
set_tests_properties(serve_e2e PROPERTIES TIMEOUT 1200)
# deploy/ against the API stand-in with the real kubectl (apply --dry-run=server).
add_test(NAME serve_deploy COMMAND bash ${CMAKE_SOURCE_DIR}/tests/serve/deploy.sh $<TARGET_FILE:rbl>)
set_tests_properties(serve_deploy PROPERTIES TIMEOUT 180)
# serve.ha: two replicas, Leases on the API stand-in over TLS with RBAC (tests/serve/test_ha.py).
add_test(NAME serve_ha COMMAND python3 ${CMAKE_SOURCE_DIR}/tests/serve/test_ha.py $<TARGET_FILE:rbl>)
set_tests_properties(serve_ha PROPERTIES TIMEOUT 300)
