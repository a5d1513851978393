#!/usr/bin/env bash
# Wide fan-out stays flat: patch one ConfigMap in each of N tenant namespaces (default 1000)
# with each_tenant at concurrency 32 and at concurrency N, against two servers:
#   - the API stand-in (tests/kube/standin: real work per request, one thread per connection);
#   - bench/instant_kube.py, an HTTPS server that answers at once, so the stand-in's own cost
#     is not mistaken for rbl's.
# Runs are interleaved (32, N, 32, N, ...), ROUNDS each (default 3); prints the medians of wall
# time and peak RSS per concurrency and the ratios wide/narrow (goal: time ratio <= 1.0, peak
# RSS < 40 MiB at concurrency N). Every run is checked: exit 0, N patch results in the chain,
# `rbl audit verify` exits 0.
# usage: bench/fanout_bench.sh [path/to/rbl] [N] [ROUNDS]
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
RBL=$(realpath "${1:-$HERE/../build/rbl}")
N=${2:-1000}
ROUNDS=${3:-3}
W=$(mktemp -d /tmp/rbl-fanout-bench.XXXXXX)
INSTANT_PID=
cleanup() { [[ -n $INSTANT_PID ]] && kill "$INSTANT_PID" 2>/dev/null; rm -rf "$W"; }
trap cleanup EXIT
source "$HERE/../tests/kube/lib.sh"
kube_ensure_deps
kube_mkcerts "$W/pki" >/dev/null 2>&1
{
  echo "return { tenants = {"
  for i in $(seq -f '%04g' 0 $((N - 1))); do
    printf -- '---\napiVersion: v1\nkind: Namespace\nmetadata: {name: bench-%s, labels: {rbl.io/tenant: bench-%s}}\n' "$i" "$i" >>"$W/fixtures.yaml"
    printf -- '---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: bench, namespace: bench-%s}\ndata: {value: original}\n' "$i" >>"$W/fixtures.yaml"
    echo "  [\"bench-$i\"] = { namespaces = { \"bench-$i\" } },"
  done
  echo "} }"
} >"$W/config.lua"
kube_standin_start --fixtures "$W/fixtures.yaml" --tls-cert "$W/pki/server.crt" --tls-key "$W/pki/server.key" \
  --token bench-token=bench:system:masters
kube_write_kubeconfig "$W/standin.kubeconfig" "$KUBE_STANDIN_URL" --ca "$W/pki/ca.crt" --token bench-token
python3 "$HERE/instant_kube.py" --cert "$W/pki/server.crt" --key "$W/pki/server.key" \
  --port-file "$W/instant.port" --token bench-token 2>"$W/instant.err" &
INSTANT_PID=$!
for _ in $(seq 1 100); do [[ -s $W/instant.port ]] && break; sleep 0.05; done
[[ -s $W/instant.port ]] || { cat "$W/instant.err" >&2; exit 1; }
kube_write_kubeconfig "$W/instant.kubeconfig" "https://127.0.0.1:$(cat "$W/instant.port")" --ca "$W/pki/ca.crt" \
  --token bench-token

python3 - "$RBL" "$W" "$N" "$ROUNDS" "$HERE/fanout_bench.lua" <<'PY'
import json, os, statistics, subprocess, sys, time
rbl, w, n, rounds, book = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
wide = n
res = {}
def run(server, c, k):
    audit = os.path.join(w, "%s-%d-%d.jsonl" % (server, c, k))
    env = dict(os.environ, KUBECONFIG=os.path.join(w, server + ".kubeconfig"))
    rss_file = os.path.join(w, "rss")
    t0 = time.perf_counter()
    # through GNU time: a child forked from this Python would count Python's pages in its peak
    p = subprocess.Popen(["/usr/bin/time", "-f", "%M", "-o", rss_file, rbl, "run", book, "--tenant", "bench-*", "--config", os.path.join(w, "config.lua"),
                          "--audit", audit, "--quiet", "--param", "c=%d" % c], env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, st, ru = os.wait4(p.pid, 0)
    dt = time.perf_counter() - t0
    err = p.stderr.read().decode(errors="replace")
    if st != 0:
        sys.exit("fanout_bench: %s c=%d failed (status %d): %s" % (server, c, st, err[-2000:]))
    ok = sum(1 for l in open(audit) if '"kind":"result"' in l and '"prim":"kube_patch"' in l and '"status":"ok"' in l)
    if ok != n:
        sample = [l for l in open(audit) if '"kind":"result"' in l][:1]
        sys.exit("fanout_bench: %s c=%d: %d of %d patches in the chain; a result: %s" % (server, c, ok, n, sample))
    if subprocess.run([rbl, "audit", "verify", audit], stdout=subprocess.DEVNULL).returncode != 0:
        sys.exit("fanout_bench: %s: the chain does not verify" % audit)
    if not os.environ.get("FANOUT_KEEP"): os.unlink(audit)
    return dt, int(open(rss_file).read().split()[-1]) / 1024.0
for server in ("instant", "standin"):
    for k in range(rounds):
        for c in (32, wide):
            res.setdefault((server, c), []).append(run(server, c, k))
print("fanout_bench: %d tenants, one ConfigMap patch each; medians of %d interleaved runs" % (n, rounds))
for server, label in (("instant", "instant HTTPS server"), ("standin", "API stand-in")):
    t = {c: statistics.median(x[0] for x in res[(server, c)]) for c in (32, wide)}
    m = {c: statistics.median(x[1] for x in res[(server, c)]) for c in (32, wide)}
    print("  %-22s concurrency 32: %6.2f s %5.1f MiB | concurrency %d: %6.2f s %5.1f MiB | time %d/32: %.2fx (goal <= 1.0), RSS %.1f MiB (goal < 40)"
          % (label, t[32], m[32], wide, t[wide], m[wide], wide, t[wide] / t[32], m[wide]))
PY
