#!/bin/sh
# Drift benchmark: drift.compare against `jq -S` + diff on the same two ~50k-leaf JSON
# documents (bench/drift_bench_gen.lua, fixed seed), printing both times and the ratio.
#   bench/drift_bench.sh [LEAVES]      (from anywhere; needs lua5.4 and jq)
# Until build/rbl can run a script with iac.json, drift.compare is timed on the same
# documents built as Lua tables by the generator (decode time not included); when
# build/rbl works, the rbl run is timed end to end as well (decode + compare + startup).
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
leaves=${1:-50000}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM

lua5.4 "$here/bench/drift_bench_gen.lua" "$leaves" "$tmp/a.json" "$tmp/b.json"

now_ms() { date +%s%N | awk '{ printf "%.1f", $1 / 1000000 }'; }

# Peer: canonicalise both with jq -S, then diff (median of 5 runs).
peer_times=""
for _ in 1 2 3 4 5; do
  t0=$(now_ms)
  jq -S . "$tmp/a.json" > "$tmp/a"
  jq -S . "$tmp/b.json" > "$tmp/b"
  diff "$tmp/a" "$tmp/b" > "$tmp/diff" || true
  t1=$(now_ms)
  peer_times="$peer_times $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')"
done
peer=$(echo $peer_times | tr ' ' '\n' | sort -n | sed -n 3p)
hunks=$(grep -c '^[0-9]' "$tmp/diff" || true)

line=$(lua5.4 "$here/bench/drift_bench.lua" --leaves "$leaves" --check)
ours=$(echo "$line" | sed -n 's/.*median \([0-9.]*\) ms.*/\1/p')

echo "documents:   $leaves leaves each, $(wc -c < "$tmp/a.json") bytes of JSON"
echo "rbl drift:   $line"
echo "jq -S+diff:  median ${peer} ms (5 runs), $hunks diff hunks"
awk -v a="$ours" -v b="$peer" 'BEGIN { printf "ratio:       drift.compare is %.1fx the speed of jq -S + diff\n", b / a }'

# End to end through the binary, when it can run a script.
rbl="$here/build/rbl"
if [ -x "$rbl" ]; then
  cp "$here/bench/drift_bench_rbl.lua" "$tmp/run.lua"
  t0=$(now_ms)
  if "$rbl" run "$tmp/run.lua" --tenant bench --audit "$tmp/audit.jsonl" > "$tmp/rbl.out" 2>&1; then
    t1=$(now_ms)
    echo "rbl run:     $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }') ms end to end (iac.json x2 + drift_compare + audit); $(grep -m1 'drift items' "$tmp/rbl.out" || true)"
  else
    why=$(grep -m1 -E 'failed|error' "$tmp/rbl.out" | cut -c1-160 || true)
    echo "rbl run:     build/rbl could not run the script yet: ${why:-$(tail -1 "$tmp/rbl.out")}"
  fi
fi
