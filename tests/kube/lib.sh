# shellcheck shell=bash
# tests/kube/lib.sh -- helpers for tests that need the Kubernetes API stand-in.
# Source it from bash:   source "$(dirname "$0")/../kube/lib.sh"   (or an absolute path)
#
# Functions
#   kube_ensure_deps
#       Installs python3-yaml with apt-get when `import yaml` fails. Dies if it cannot.
#
#   kube_mkcerts DIR
#       Runs tests/kube/mkcerts.sh DIR: ca.crt/key, server.crt/key (SAN 127.0.0.1,
#       localhost), client.crt/key (CN=alice, O=sre), other-ca.crt/key (unrelated CA).
#
#   kube_standin_start [STAND-IN OPTIONS...]
#       Starts tests/kube/standin/kube_standin.py on a free port with the given
#       options (e.g. --fixtures tests/kube/fixtures/basic.yaml --tls-cert ... --token t=u:g).
#       --port 0 and --port-file are added; --log is added unless given.
#       Waits until the port file exists (the socket is listening by then) and
#       fails if the process dies first (its stderr is shown). Sets:
#         KUBE_STANDIN_PID   process id
#         KUBE_STANDIN_PORT  TCP port on 127.0.0.1
#         KUBE_STANDIN_URL   https://127.0.0.1:PORT (http:// without --tls-cert)
#         KUBE_STANDIN_LOG   request log (JSON lines), KUBE_STANDIN_DIR  its work dir
#       Registers an EXIT trap (chained with any existing one) that stops every
#       stand-in started this way and deletes their work dirs (set
#       KUBE_STANDIN_KEEP=1 to keep them, e.g. to read the log after a
#       failure). Several stand-ins may run at once; the variables describe
#       the most recent one.
#
#   kube_standin_stop [PID]
#       Stops one stand-in (default: $KUBE_STANDIN_PID) and waits for it to exit.
#
#   kube_write_kubeconfig FILE SERVER_URL [--ca FILE] [--token TOKEN]
#                         [--client-cert FILE --client-key FILE] [--namespace NS]
#       Writes a single-context kubeconfig (context "standin").
#
#   kube_log_requests [JQ_FILTER]
#       Prints "METHOD PATH?QUERY STATUS" for each logged request of the current
#       stand-in matching the optional jq select() filter, e.g.
#       kube_log_requests '.method=="PATCH"'.
#
# Caveats: the stand-in runs as a background job of your shell, so a bare
# `wait` (no PID) blocks until it exits -- wait for specific PIDs. kubectl
# (client-go) does not send bearer tokens over plain http://, so tests that
# drive kubectl with a token need --tls-cert (or use --anonymous).

KUBE_TESTS_DIR=${KUBE_TESTS_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)}
KUBE_STANDIN_PY="$KUBE_TESTS_DIR/standin/kube_standin.py"
KUBE_STANDIN_PIDS=()
KUBE_STANDIN_DIRS=()

kube_ensure_deps() {
    # the stand-in also finds Debian's python3-yaml when python3 is not /usr/bin/python3
    if ! python3 -c 'import yaml' 2>/dev/null && ! /usr/bin/python3 -c 'import yaml' 2>/dev/null; then
        echo "kube/lib.sh: installing python3-yaml" >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-yaml >/dev/null 2>&1 ||
            { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-yaml >/dev/null; } ||
            { echo "kube/lib.sh: cannot install python3-yaml" >&2; return 1; }
    fi
}

kube_mkcerts() {
    bash "$KUBE_TESTS_DIR/mkcerts.sh" "$1"
}

_kube_standin_stop_all() {
    local p
    for p in "${KUBE_STANDIN_PIDS[@]}"; do
        kill "$p" 2>/dev/null || true
    done
    for p in "${KUBE_STANDIN_PIDS[@]}"; do
        wait "$p" 2>/dev/null || true
    done
    KUBE_STANDIN_PIDS=()
    if [[ ${KUBE_STANDIN_KEEP:-0} != 1 ]]; then
        for p in "${KUBE_STANDIN_DIRS[@]}"; do rm -rf "$p"; done
    fi
    KUBE_STANDIN_DIRS=()
}

_kube_install_trap() {
    [[ ${_KUBE_TRAP_SET:-} == 1 ]] && return 0
    local prev
    prev=$(trap -p EXIT | sed -E "s/^trap -- '(.*)' EXIT$/\1/")
    # shellcheck disable=SC2064
    trap "_kube_standin_stop_all; ${prev:-:}" EXIT
    _KUBE_TRAP_SET=1
}

kube_standin_start() {
    local dir has_log=0 a
    dir=$(mktemp -d "${TMPDIR:-/tmp}/kube-standin.XXXXXX")
    for a in "$@"; do [[ $a == --log ]] && has_log=1; done
    local extra=(--port 0 --port-file "$dir/port")
    if [[ $has_log == 0 ]]; then
        extra+=(--log "$dir/requests.log")
        KUBE_STANDIN_LOG="$dir/requests.log"
    else
        local prev=""
        for a in "$@"; do [[ $prev == --log ]] && KUBE_STANDIN_LOG=$a; prev=$a; done
    fi
    _kube_install_trap
    python3 "$KUBE_STANDIN_PY" "${extra[@]}" "$@" 2>"$dir/stderr" &
    KUBE_STANDIN_PID=$!
    KUBE_STANDIN_PIDS+=("$KUBE_STANDIN_PID")
    KUBE_STANDIN_DIR=$dir
    KUBE_STANDIN_DIRS+=("$dir")
    local i
    for ((i = 0; i < 200; i++)); do
        [[ -s $dir/port ]] && break
        if ! kill -0 "$KUBE_STANDIN_PID" 2>/dev/null; then
            echo "kube/lib.sh: stand-in exited during startup:" >&2
            cat "$dir/stderr" >&2
            return 1
        fi
        sleep 0.05
    done
    if [[ ! -s $dir/port ]]; then
        echo "kube/lib.sh: stand-in did not start within 10s" >&2
        cat "$dir/stderr" >&2
        return 1
    fi
    KUBE_STANDIN_PORT=$(tr -d '[:space:]' <"$dir/port")
    local scheme=http
    for a in "$@"; do [[ $a == --tls-cert ]] && scheme=https; done
    KUBE_STANDIN_URL="$scheme://127.0.0.1:$KUBE_STANDIN_PORT"
    export KUBE_STANDIN_PID KUBE_STANDIN_PORT KUBE_STANDIN_URL KUBE_STANDIN_LOG KUBE_STANDIN_DIR
}

kube_standin_stop() {
    local pid=${1:-$KUBE_STANDIN_PID} p keep=()
    [[ -n $pid ]] || return 0
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    for p in "${KUBE_STANDIN_PIDS[@]}"; do [[ $p == "$pid" ]] || keep+=("$p"); done
    KUBE_STANDIN_PIDS=("${keep[@]}")
}

kube_write_kubeconfig() {
    local file=$1 server=$2 ca="" token="" cert="" key="" ns=""
    shift 2
    while (($#)); do
        case $1 in
            --ca) ca=$2; shift 2 ;;
            --token) token=$2; shift 2 ;;
            --client-cert) cert=$2; shift 2 ;;
            --client-key) key=$2; shift 2 ;;
            --namespace) ns=$2; shift 2 ;;
            *) echo "kube_write_kubeconfig: unknown option $1" >&2; return 2 ;;
        esac
    done
    {
        echo "apiVersion: v1"
        echo "kind: Config"
        echo "clusters:"
        echo "- name: standin"
        echo "  cluster:"
        echo "    server: $server"
        if [[ -n $ca ]]; then echo "    certificate-authority: $ca"; fi
        echo "users:"
        echo "- name: standin"
        if [[ -z $token && -z $cert ]]; then
            echo "  user: {}"
        else
            echo "  user:"
            if [[ -n $token ]]; then echo "    token: $token"; fi
            if [[ -n $cert ]]; then echo "    client-certificate: $cert"; fi
            if [[ -n $key ]]; then echo "    client-key: $key"; fi
        fi
        echo "contexts:"
        echo "- name: standin"
        echo "  context:"
        echo "    cluster: standin"
        echo "    user: standin"
        if [[ -n $ns ]]; then echo "    namespace: $ns"; fi
        echo "current-context: standin"
    } >"$file"
    chmod 600 "$file"
}

kube_log_requests() {
    local filter=${1:-true}
    jq -r "select($filter) | \"\(.method) \(.path)\(if .query != \"\" then \"?\" + .query else \"\" end) \(.status)\"" \
        "$KUBE_STANDIN_LOG"
}
