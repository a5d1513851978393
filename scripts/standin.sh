#!/usr/bin/env bash
# Starts the Kubernetes API stand-in (tests/kube/standin) with TLS and a bearer token, in the
# background, and prints the line that points kubectl and rbl at it:
#     eval "$(bash scripts/standin.sh start)"      # then: kubectl get ns; rbl run ...
#     bash scripts/standin.sh stop
# The cluster state comes from tests/kube/fixtures/basic.yaml (namespaces prod-tenant-7 and
# prod-tenant-8, the seed's db-pool-config ConfigMap and api Deployment) unless --fixtures is
# given. Everything lives in DIR (default /tmp/rbl-standin-$UID): certificates, a fresh random
# token, kubeconfig (0600), the stand-in's request log (requests.log) and its pid.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)

usage() {
  cat <<EOF
usage: scripts/standin.sh start [--dir DIR] [--port N] [--fixtures FILE]... [-- STAND-IN OPTIONS]
       scripts/standin.sh stop|status [--dir DIR]
start prints 'export KUBECONFIG=DIR/kubeconfig' on stdout (everything else goes to stderr),
so  eval "\$(bash scripts/standin.sh start)"  sets it in your shell.
EOF
}

cmd=${1:-}
[ -n "$cmd" ] && shift || { usage >&2; exit 2; }
dir=${RBL_STANDIN_DIR:-/tmp/rbl-standin-$(id -u)}
port=0
fixtures=()
extra=()
while (($#)); do
  case $1 in
    --dir) dir=$2; shift 2 ;;
    --port) port=$2; shift 2 ;;
    --fixtures) fixtures+=(--fixtures "$2"); shift 2 ;;
    --) shift; extra=("$@"); break ;;
    -h|--help) usage; exit 0 ;;
    *) echo "standin.sh: unknown option '$1'" >&2; usage >&2; exit 2 ;;
  esac
done
((${#fixtures[@]})) || fixtures=(--fixtures "$ROOT/tests/kube/fixtures/basic.yaml")

running() { [ -s "$dir/pid" ] && kill -0 "$(cat "$dir/pid")" 2>/dev/null; }

case $cmd in
  stop)
    if running; then kill "$(cat "$dir/pid")"; echo "standin.sh: stopped (pid $(cat "$dir/pid"))" >&2
    else echo "standin.sh: not running ($dir)" >&2; fi
    rm -f "$dir/pid"
    exit 0 ;;
  status)
    if running; then echo "running: pid $(cat "$dir/pid"), $(cat "$dir/url"), KUBECONFIG=$dir/kubeconfig"; exit 0; fi
    echo "not running ($dir)"; exit 1 ;;
  start) ;;
  *) usage >&2; exit 2 ;;
esac

if running; then
  echo "standin.sh: already running (pid $(cat "$dir/pid"), $(cat "$dir/url")); 'stop' first for a fresh state" >&2
  echo "export KUBECONFIG=$dir/kubeconfig"
  exit 0
fi
python3 -c 'import yaml' 2>/dev/null || { echo "standin.sh: needs python3-yaml (apt-get install python3-yaml, or bash scripts/setup.sh)" >&2; exit 1; }
command -v openssl >/dev/null || { echo "standin.sh: needs openssl (apt-get install openssl)" >&2; exit 1; }
mkdir -p "$dir"
chmod 700 "$dir"
[ -s "$dir/certs/server.crt" ] || bash "$ROOT/tests/kube/mkcerts.sh" "$dir/certs"
token=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
rm -f "$dir/port"
# setsid: the stand-in outlives this script and the shell's job control.
setsid python3 "$ROOT/tests/kube/standin/kube_standin.py" "${fixtures[@]}" --port "$port" \
  --port-file "$dir/port" --tls-cert "$dir/certs/server.crt" --tls-key "$dir/certs/server.key" \
  --token "$token=rbl-runner:rbl" --log "$dir/requests.log" "${extra[@]}" \
  </dev/null >"$dir/stderr" 2>&1 &
pid=$!
for _ in $(seq 1 200); do
  [ -s "$dir/port" ] && break
  kill -0 "$pid" 2>/dev/null || { echo "standin.sh: the stand-in exited:" >&2; cat "$dir/stderr" >&2; exit 1; }
  sleep 0.05
done
[ -s "$dir/port" ] || { echo "standin.sh: no port after 10 s" >&2; kill "$pid"; exit 1; }
echo "$pid" >"$dir/pid"
url="https://127.0.0.1:$(tr -d '[:space:]' <"$dir/port")"
echo "$url" >"$dir/url"
umask 077
cat >"$dir/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: rbl-standin
  cluster:
    server: $url
    certificate-authority: $dir/certs/ca.crt
users:
- name: rbl-runner
  user:
    token: $token
contexts:
- name: rbl-standin
  context:
    cluster: rbl-standin
    user: rbl-runner
current-context: rbl-standin
EOF
cat >&2 <<EOF
standin.sh: Kubernetes API stand-in on $url (pid $pid), TLS, bearer token in $dir/kubeconfig
standin.sh: request log $dir/requests.log; stop with: bash scripts/standin.sh stop
EOF
echo "export KUBECONFIG=$dir/kubeconfig"
