#!/usr/bin/env bash
# The demo: the seed incident end to end on this machine. Sets up (fresh Debian 12: installs what
# is missing, starts dockerd), builds, starts the Kubernetes API stand-in (TLS + token) and two
# tenant containers on the dockerd, runs runbooks/demo.lua (drift against Terraform state, patch,
# restart, verify, isolation score), then `rbl audit verify`, `rbl audit show` and `rbl rollback`.
# Leaves the audit chain and the report in DIR (default /tmp/rbl-demo) and ends with what to try
# next. The docker CLI is used here only to create the demo's containers.
#   usage: scripts/demo.sh [--no-setup] [--keep] [DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
setup=1 keep=0 W=/tmp/rbl-demo
for a in "$@"; do
  case $a in
    --no-setup) setup=0 ;;
    --keep) keep=1 ;;
    -h|--help) sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "demo.sh: unknown option '$a'" >&2; exit 2 ;;
    *) W=$a ;;
  esac
done
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

[ "$setup" = 1 ] && bash scripts/setup.sh
# dockerd (started when none answers) and the offline test image, also with --no-setup.
bash src/families/docker/tests/setup.sh
if [ -z "${RBL:-}" ] && { [ ! -x build/rbl ] || [ "$setup" = 1 ]; }; then
  cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  cmake --build build -j"$(nproc 2>/dev/null || echo 2)" >/dev/null
fi
RBL=${RBL:-$ROOT/build/rbl}   # RBL=path: another build (the tests run the ASan one)
IMG=${RBL_TEST_IMAGE:-rbl-test/busybox:1}
TENANT=prod-tenant-7
# Unique per demo run: the dockerd may be shared (other demos, test suites).
APP=rbl-demo-$(date +%H%M%S)-$$
INC=INC-DEMO-$(date +%Y%m%d%H%M%S)
rm -rf "$W"
mkdir -p "$W"

cleanup() {
  [ "$keep" = 1 ] && return 0
  docker ps -aq --filter "label=rbl.demo=$APP" | xargs -r docker rm -f >/dev/null 2>&1 || true
  bash scripts/standin.sh stop --dir "$W/standin" 2>/dev/null || true
}
trap cleanup EXIT

say "Kubernetes API stand-in (TLS, bearer token): scripts/standin.sh"
eval "$(bash scripts/standin.sh start --dir "$W/standin")"
echo "KUBECONFIG=$KUBECONFIG"

say "two $TENANT containers on the dockerd (label rbl.demo=$APP)"
for i in 1 2; do
  docker run -d --name "$APP-api-$i" --user 65534 --label "rbl.tenant=$TENANT" --label "rbl.demo=$APP" \
    "$IMG" sleep 100000 >/dev/null
  echo "$APP-api-$i"
done

say "rbl run runbooks/demo.lua --tenant $TENANT --incident $INC"
set +e
"$RBL" run runbooks/demo.lua --tenant "$TENANT" --incident "$INC" --param "app=$APP" \
  --audit "$W/audit.jsonl" --report "$W/report.json"
rc=$?
set -e
echo "exit status $rc (0 = resolved); report: $W/report.json"

say "rbl audit verify $W/audit.jsonl"
"$RBL" audit verify "$W/audit.jsonl"

say "rbl audit show $W/audit.jsonl"
"$RBL" audit show "$W/audit.jsonl"

say "rbl rollback $W/audit.jsonl   (undoes the ConfigMap patch; restarts cannot be undone)"
set +e
"$RBL" rollback "$W/audit.jsonl" 2>&1
rrc=$?
set -e
echo "rollback exit status $rrc"
"$RBL" audit show "$W/audit.jsonl" --run 2
"$RBL" audit verify "$W/audit.jsonl"

say "what to try next"
if [ "$keep" = 1 ]; then
  echo "  (--keep: the stand-in and the containers stay; stop with: bash scripts/standin.sh stop --dir $W/standin;"
  echo "   docker rm -f \$(docker ps -aq --filter label=rbl.demo=$APP))"
  echo "  export KUBECONFIG=$KUBECONFIG"
else
  echo "  (run with --keep to leave the stand-in and the containers up for these; or: eval \"\$(bash scripts/standin.sh start)\")"
fi
cat <<EOF
  $RBL repl --tenant $TENANT --incident $INC --audit $W/audit.jsonl
      kube.get("configmap", "db-pool-config").data      docker.ps{}      help(kube_patch)
      kube.get("configmap", "db-pool-config", {namespace = "prod-tenant-8"})   -- refused: one line, the session goes on
  $RBL run runbooks/demo.lua --tenant $TENANT --dry-run --param app=$APP
  $RBL audit show $W/audit.jsonl --run 1 --since 10m      # also --tenant, --until; --json | jq
  jq . $W/report.json
  $RBL check runbooks/*.lua                             # the linter: unknown globals and fields, did-you-mean
EOF
exit $rc
