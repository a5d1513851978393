#!/usr/bin/env bash
# The Docker primitives end to end: the real `rbl run` binary against a real dockerd, with
# labelled test containers. Checks exit codes, reports, audit chains and, for cross-tenant
# attempts, the daemon's own event stream. The docker CLI is used for setup and checks only.
# usage: run_tests.sh path/to/rbl
set -uo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../../../../tests/lib/common.sh
source "$HERE/../../../../tests/lib/common.sh"
rbl_test_init docker-test "${1:-}"
IMG=${RBL_TEST_IMAGE:-rbl-test/busybox:1}
SOCK=/var/run/docker.sock

bash "$HERE/setup.sh" || { echo "docker setup failed"; exit 1; }

# The dockerd may be shared with other suites and other runs of this one: every tenant, container
# name and cleanup label is unique to this run (RUN; no shared rbl.test=docker label: older copies
# of this suite remove every container carrying it).
TA=ta-$RUN
TB=tb-$RUN
P=rbl-$RUN
chmod 755 "$W"
PIDS=()
rbl_at_exit 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done'
rbl_at_exit 'docker ps -aq --filter label=rbl.test.run=$RUN | xargs -r docker rm -f >/dev/null 2>&1'

# mk NAME TENANT [docker run options...] -- [command...]
mk() {
  local name=$1 tenant=$2; shift 2
  local opts=() cmd=(sleep 100000)
  while [ $# -gt 0 ] && [ "$1" != -- ]; do opts+=("$1"); shift; done
  [ "${1:-}" = -- ] && { shift; [ $# -gt 0 ] && cmd=("$@"); }
  local lab=(--label "rbl.test.run=$RUN")
  [ -n "$tenant" ] && lab+=(--label "rbl.tenant=$tenant")
  docker run -d --name "$name" "${lab[@]}" "${opts[@]}" "$IMG" "${cmd[@]}" >/dev/null
}
cid() { docker inspect -f '{{.Id}}' "$1"; }

docker ps -aq --filter label=rbl.test.run=$RUN | xargs -r docker rm -f >/dev/null 2>&1
mk $P-ta-web "$TA" --label role=web
mk $P-ta-logger "$TA" -- sh -c 'echo hello-out; echo hello-err >&2; exec sleep 100000'
mk $P-ta-tty "$TA" -t -- sh -c 'echo tty-line; exec sleep 100000'
docker create --name $P-ta-stopped --label "rbl.test.run=$RUN" --label "rbl.tenant=$TA" "$IMG" true >/dev/null
for i in $(seq 1 10); do mk "$P-ta-f$i" "$TA"; done
mk $P-tb-web "$TB" --label role=web
mk $P-nolabel ""
TA_WEB=$(cid $P-ta-web)
TB_WEB=$(cid $P-tb-web)
NOLABEL=$(cid $P-nolabel)
TA_COUNT=$(docker ps -q --filter label=rbl.tenant=$TA | wc -l) # 13, plus any other container of "ta"
TB_STARTED=$(docker inspect -f '{{.State.StartedAt}}' $P-tb-web)

cat >"$W/config.lua" <<EOF
return { tenants = { "$TA", "$TB" }, exec = { allow = { "sha256sum" } } }
EOF

# run NAME WANT_EXIT RUNBOOK [rbl run options...]: runs as tenant ta
run() {
  local name=$1 want=$2 rb=$3; shift 3
  "$RBL" run "$HERE/$rb" --tenant "$TA" --config "$W/config.lua" --incident "$name" \
    --audit "$W/$name.jsonl" --report "$W/$name.json" "$@" >"$W/$name.out" 2>"$W/$name.err"
  local rc=$?
  if [ "$rc" = "$want" ]; then ok "$name: exit $rc"
  else
    bad "$name: exit $rc, want $want"
    sed 's/^/    | /' "$W/$name.err" | tail -15
  fi
  return 0
}
errhas() { grep -qF -- "$2" "$W/$1.err" || { echo "    $1: stderr lacks: $2"; sed 's/^/    | /' "$W/$1.err" | tail -5; return 1; }; }
report_is() { # NAME OUTCOME: the report's outcome, and its audit_chain is the chain's last hash
  python3 - "$W/$1.json" "$W/$1.jsonl" "$2" <<'PY'
import json, sys
rep = json.load(open(sys.argv[1]))
last = [json.loads(l) for l in open(sys.argv[2]) if l.strip()][-1]
ok = rep.get("outcome") == sys.argv[3] and rep.get("audit_chain") == last.get("hash")
if not ok: print("    report:", rep.get("outcome"), rep.get("audit_chain"), "last", last.get("hash"))
sys.exit(0 if ok else 1)
PY
}
audit_refused() { # NAME NEEDLE: a refused record with the reason, and no docker intent at all
  python3 - "$W/$1.jsonl" "$2" <<'PY'
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
ref = [r for r in recs if r.get("kind") == "refused" and sys.argv[2] in json.dumps(r)]
intents = [r for r in recs if r.get("kind") == "intent" and str(r.get("prim", "")).startswith("docker")]
if not ref or intents: print("    audit: refused", len(ref), "docker intents", len(intents))
sys.exit(0 if ref and not intents else 1)
PY
}
verify() { "$RBL" audit verify "$W/$1.jsonl" >/dev/null 2>&1; }
exec_events() { # SINCE UNTIL CONTAINER_ID: exec_create events the daemon logged for it
  docker events --since "$1" --until "$2" --filter event=exec_create --filter "container=$3" --format '{{.ID}}' | wc -l
}

echo "# primitives"
run exec_basic 0 exec_basic.lua --param c=$P-ta-web --param stopped=$P-ta-stopped
check "exec_basic: report resolved, chain head" report_is exec_basic resolved
check "exec_basic: audit verifies" verify exec_basic
run exec_binary 0 exec_binary.lua --param c=$P-ta-web
run lifecycle 0 lifecycle.lua --param c=$P-ta-web --param logger=$P-ta-logger --param tty=$P-ta-tty --param count=$TA_COUNT
check "lifecycle: report resolved" report_is lifecycle resolved

echo "# 50-way fan-out"
t0=$(date +%s%N)
run fanout 0 fanout.lua --param prefix=$P-ta-f --param n=10
echo "# fan-out of 50 docker_exec took $(( ($(date +%s%N) - t0) / 1000000 )) ms"

echo "# cross-tenant attempts (tenant ta against tb's and unlabelled containers)"
T0=$(date +%s)
run xt_name 3 cross_tenant.lua --param target=$P-tb-web
check "xt_name: message names owner and tenant" errhas xt_name "container $P-tb-web belongs to tenant $TB, not $TA"
check "xt_name: audit has the refusal, no intent" audit_refused xt_name "belongs to tenant $TB, not $TA"
check "xt_name: audit verifies" verify xt_name
run xt_full_id 3 cross_tenant.lua --param "target=$TB_WEB"
check "xt_full_id: refused" errhas xt_full_id "belongs to tenant $TB, not $TA"
run xt_prefix 3 cross_tenant.lua --param "target=${TB_WEB:0:12}"
check "xt_prefix: refused" errhas xt_prefix "belongs to tenant $TB, not $TA"
run xt_short_prefix 3 cross_tenant.lua --param "target=${TB_WEB:0:5}"
run xt_nolabel 3 cross_tenant.lua --param target=$P-nolabel
check "xt_nolabel: refused (no label)" errhas xt_nolabel "belongs to no tenant"
run xt_restart 3 cross_tenant.lua --param target=$P-tb-web --param prim=restart
run xt_logs 3 cross_tenant.lua --param "target=$TB_WEB" --param prim=logs
run xt_inspect 3 cross_tenant.lua --param "target=${TB_WEB:0:12}" --param prim=inspect

# a name that equals a prefix of another tenant's container id: the daemon resolves exact
# names first, and rbl checks the label of what the daemon resolved
mk "${TB_WEB:0:10}" "$TA"
TA_SHADOW=$(cid "${TB_WEB:0:10}")
run shadow_own 0 exec_one.lua --param "c=${TB_WEB:0:10}" --param cmd=hostname
check "shadow_own: ran in ta's container named like tb's id prefix" \
  grep -qF "stdout=$(docker inspect -f '{{.Config.Hostname}}' "$TA_SHADOW")" "$W/shadow_own.err"
mk "${TA_WEB:0:10}" "$TB"
TB_SHADOW=$(cid "${TA_WEB:0:10}")
run shadow_other 3 cross_tenant.lua --param "target=${TA_WEB:0:10}"
check "shadow_other: the daemon resolved the name to tb's container: refused" errhas shadow_other "belongs to tenant $TB, not $TA"

# an ambiguous id prefix: one hex digit shared by two ids of the daemon
AMB=$(docker ps -aq --no-trunc | cut -c1 | sort | uniq -d | head -1)
if [ -n "$AMB" ]; then
  run xt_ambiguous 3 cross_tenant.lua --param "target=$AMB"
  check "xt_ambiguous: refused as ambiguous" errhas xt_ambiguous "is ambiguous"
fi

sleep 1.1
T1=$(date +%s)
for c in "$TB_WEB" "$NOLABEL" "$TB_SHADOW"; do
  n=$(exec_events "$T0" "$T1" "$c")
  check "daemon events: no exec_create on ${c:0:12} during the attempts ($n)" [ "$n" = 0 ]
done
n=$(exec_events "$T0" "$T1" "$TA_SHADOW")
check "daemon events: the tenant's own exec is seen ($n, control)" [ "$n" -ge 1 ]
check "tb's container was not restarted" [ "$(docker inspect -f '{{.State.StartedAt}}' $P-tb-web)" = "$TB_STARTED" ]
check "tb's container has no /tmp/pwned" docker exec $P-tb-web sh -c '[ ! -e /tmp/pwned ]'

echo "# references rejected before any request (through a logging proxy)"
python3 "$HERE/proxy.py" "$W/log.sock" "$SOCK" --log "$W/log-proxy.log" & PIDS+=($!)
for _ in $(seq 50); do [ -S "$W/log.sock" ] && break; sleep 0.1; done
i=0
for ref in "../$P-tb-web" "$P-ta-web/../../$P-tb-web" "a/b" "$(printf 'x%.0s' $(seq 1 200))" "$P-ta-web"$'\x01'; do
  i=$((i + 1))
  DOCKER_HOST="unix://$W/log.sock" run "badref$i" 3 cross_tenant.lua --param "target=$ref"
done
check "bad refs: no container request reached the daemon" bash -c "! grep -q /containers/ '$W/log-proxy.log' 2>/dev/null"
DOCKER_HOST="unix://$W/log.sock" run via_proxy 0 exec_one.lua --param c=$P-ta-web
check "effects address the full id only (proxy log)" \
  grep -qE "^POST /v[0-9.]+/containers/$TA_WEB/exec$" "$W/log-proxy.log"
check "the API version is negotiated once per run" [ "$(grep -c '^GET /_ping' "$W/log-proxy.log")" = 1 ]

echo "# race: the container is replaced by another tenant's between scope and effect"
mk $P-race "$TA"
RACE_OLD=$(cid $P-race)
python3 "$HERE/proxy.py" "$W/race.sock" "$SOCK" --log "$W/race.log" \
  --on "^POST /v[0-9.]+/containers/[0-9a-f]{64}/exec$" \
  --run "docker rm -f $P-race >/dev/null && docker run -d --name $P-race --label rbl.test.run=$RUN --label rbl.tenant=$TB $IMG sleep 100000 >$W/race.newid" \
  & PIDS+=($!)
for _ in $(seq 50); do [ -S "$W/race.sock" ] && break; sleep 0.1; done
R0=$(date +%s)
DOCKER_HOST="unix://$W/race.sock" run race 1 exec_one.lua --param c=$P-race
check "race: the swap happened between check and effect" grep -q "HOOK ran before POST" "$W/race.log"
check "race: the exec addressed the checked full id" grep -qF "/containers/$RACE_OLD/exec" "$W/race.log"
check "race: it failed as not found" errhas race "not found"
sleep 1.1
NEW=$(cat "$W/race.newid" 2>/dev/null)
n=$(exec_events "$R0" "$(date +%s)" "${NEW:-none}")
check "race: no exec_create on the other tenant's new container ($n)" [ -n "$NEW" -a "$n" = 0 ]

echo "# the container is replaced between two calls of one run: the second resolves the name again"
# twice NAME TENANT_OF_REPLACEMENT WANT_EXIT: the first call runs; during the pause the container
# is removed and a new one of that name created for the given tenant; -> the new container's id
twice() {
  local name=$1 tenant=$2 want=$3
  mk "$P-$name" "$TA"
  "$RBL" run "$HERE/exec_twice.lua" --tenant "$TA" --config "$W/config.lua" --incident "$name" \
    --audit "$W/$name.jsonl" --param c="$P-$name" --param pause=6 >"$W/$name.out" 2>"$W/$name.err" &
  local pid=$! i
  for i in $(seq 100); do grep -q '"prim":"docker_exec"' "$W/$name.jsonl" 2>/dev/null &&
    grep '"kind":"result"' "$W/$name.jsonl" | grep -q '"prim":"docker_exec"' && break; sleep 0.05; done
  docker rm -f "$P-$name" >/dev/null
  docker run -d --name "$P-$name" --label "rbl.test.run=$RUN" --label "rbl.tenant=$tenant" "$IMG" \
    sleep 100000 >"$W/$name.newid"
  wait "$pid"
  local rc=$?
  if [ "$rc" = "$want" ]; then ok "$name: exit $rc"; else bad "$name: exit $rc, want $want"; sed 's/^/    | /' "$W/$name.err" | tail -5; fi
}
T0=$(date +%s)
twice swap_other "$TB" 3
check "swap_other: the second call is refused: the name now means tenant $TB's container" \
  errhas swap_other "belongs to tenant $TB"
NEW=$(cat "$W/swap_other.newid")
sleep 1.1
n=$(exec_events "$T0" "$(date +%s)" "$NEW")
check "swap_other: no exec_create on the other tenant's new container ($n)" [ "$n" = 0 ]
check "swap_other: audit verifies" verify swap_other
twice swap_own "$TA" 0
NEW=$(cat "$W/swap_own.newid")
check "swap_own: the second call exec'd in the new container (its id in the chain)" \
  python3 -c 'import json,sys
rs=[json.loads(l) for l in open(sys.argv[1]) if "\"prim\":\"docker_exec\"" in l and "\"kind\":\"result\"" in l]
sys.exit(0 if len(rs) == 2 and rs[1]["summary"]["container"] == sys.argv[2] != rs[0]["summary"]["container"] else 1)' \
  "$W/swap_own.jsonl" "$NEW"

echo "# the daemon unreachable"
DOCKER_HOST="unix://$W/missing.sock" run down_missing 1 exec_one.lua --param c=$P-ta-web
check "missing socket: names endpoint and cause" errhas down_missing "connect to $W/missing.sock: No such file or directory"
check "missing socket: names the container" errhas down_missing "$P-ta-web"
check "missing socket: audit verifies" verify down_missing
python3 "$HERE/proxy.py" "$W/dying.sock" "$SOCK" & DYING=$!
PIDS+=($DYING)
for _ in $(seq 50); do [ -S "$W/dying.sock" ] && break; sleep 0.1; done
( sleep 1.5; kill "$DYING" ) &
DOCKER_HOST="unix://$W/dying.sock" run down_midrun 1 daemon_down.lua --param c=$P-ta-web --param pause=3
check "daemon gone mid-run: names endpoint and cause" errhas down_midrun "connect to $W/dying.sock: Connection refused"
check "daemon gone mid-run: audit verifies" verify down_midrun
if command -v setpriv >/dev/null && [ "$(id -u)" = 0 ]; then
  python3 "$HERE/proxy.py" "$W/root-only.sock" "$SOCK" --mode 0600 & PIDS+=($!)
  for _ in $(seq 50); do [ -S "$W/root-only.sock" ] && break; sleep 0.1; done
  mkdir -p "$W/nobody" && chmod 777 "$W/nobody"
  DOCKER_HOST="unix://$W/root-only.sock" setpriv --reuid=65534 --regid=65534 --clear-groups \
    "$RBL" run "$HERE/exec_one.lua" --tenant "$TA" --config "$W/config.lua" --param c=$P-ta-web \
    --audit "$W/nobody/denied.jsonl" >"$W/denied.out" 2>"$W/denied.err"
  rc=$?
  check "socket permission denied: exit 1 ($rc)" [ "$rc" = 1 ]
  check "socket permission denied: names endpoint and cause" errhas denied "connect to $W/root-only.sock: Permission denied"
fi

rbl_test_done
