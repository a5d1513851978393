# Sourced by test_cancel.sh and test_plan.sh, after tests/lib/common.sh's rbl_test_init: one
# container of a tenant unique to this run (other suites share the daemon), removed at exit.
# docker_test_app PREFIX sets U, TEN and C, and writes $W/config.lua binding the run to TEN.
docker_test_app() {
  local img=${RBL_TEST_IMAGE:-rbl-test/busybox:1}
  bash "$HERE/setup.sh" || { echo "docker setup failed"; exit 1; }
  U=$1$RUN
  TEN=tenant-$U
  rbl_at_exit 'docker ps -aq --filter "label=rbl.test=$U" | xargs -r docker rm -f >/dev/null 2>&1'
  C=rbl-$U-app
  # PID 1 sleep has no SIGTERM handler: a restart waits its full grace time before SIGKILL
  docker run -d --name "$C" --label "rbl.test=$U" --label "rbl.tenant=$TEN" "$img" sleep 100000 >/dev/null ||
    { echo "cannot start the test container"; exit 1; }
  printf 'return { tenants = { "%s" } }\n' "$TEN" >"$W/config.lua"
}
started() { docker inspect -f '{{.State.StartedAt}}' "$C"; }
