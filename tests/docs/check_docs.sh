#!/usr/bin/env bash
# Every name a runbook can reach (the escape suite's allow list, which the sandbox must match
# exactly) is documented in docs/runbook-language.md, and every command has --help.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
RBL=${1:-$ROOT/build/rbl}
doc="$ROOT/docs/runbook-language.md"
missing=0
while read -r name; do
  case "$name" in string.*|table.*|math.*|utf8.*|os.*|coroutine.*) continue ;; esac
  short=${name##*.}
  if ! grep -q -- "\`[^\`]*\b${short//./\\.}\b" "$doc" && ! grep -qw -- "$short" "$doc"; then
    echo "undocumented: $name"; missing=$((missing + 1))
  fi
done < "$ROOT/tests/escape/allowlist.txt"
for cmd in run check repl audit rollback version; do
  out=$("$RBL" help "$cmd") || { echo "no help for $cmd"; missing=$((missing + 1)); }
  [ -n "$out" ] || { echo "empty help for $cmd"; missing=$((missing + 1)); }
done
for f in README.md docs/audit.md docs/config.md src/families/docker/docker.md src/families/kube/kube.md src/families/drift/drift.md docs/runbook-language.md; do
  [ -s "$ROOT/$f" ] || { echo "missing doc: $f"; missing=$((missing + 1)); }
done
echo "docs: $missing problem(s)"
exit $((missing > 0))
