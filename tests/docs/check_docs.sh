#!/usr/bin/env bash
# The docs are complete, checked against the families registry (`rbl check --list-globals`):
#   - every name a runbook can reach is documented on its family's doc page (the standard
#     library part on docs/runbook-language.md), in backquotes;
#   - every family's doc page exists and docs/runbook-language.md links to it;
#   - every error code of the vocabulary (`rbl help errors`) is documented in docs/errors.md;
#   - every command has --help; no doc sends the reader outside the repository.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
RBL=${1:-$ROOT/build/rbl}
missing=0
problem() { echo "$*"; missing=$((missing + 1)); }
list=$("$RBL" check --list-globals) || { echo "rbl check --list-globals failed"; exit 1; }
[ "$(wc -l <<<"$list")" -gt 50 ] || problem "the registry lists too few names: $(wc -l <<<"$list")"
while IFS=$'\t' read -r name family doc; do
  [ -s "$ROOT/$doc" ] || { problem "missing doc page $doc (family $family)"; continue; }
  case "$name" in string.*|table.*|math.*|utf8.*|os.*|coroutine.*) continue ;; esac
  short=${name##*.}
  # `name` or `t.name` or `name(`...: the name must appear inside backquotes on the page
  if ! grep -qE -- "\`[^\`]*\b${short//./\\.}\b[^\`]*\`" "$ROOT/$doc"; then
    problem "undocumented: $name (family $family, expected on $doc)"
  fi
done <<<"$list"
lang="$ROOT/docs/runbook-language.md"
for doc in $(cut -f3 <<<"$list" | sort -u); do
  [ "$doc" = docs/runbook-language.md ] && continue
  grep -q -- "(../$doc)" "$lang" || problem "docs/runbook-language.md does not link to $doc"
done
if errs=$("$RBL" help errors | tail -n +2); then
  while read -r code _; do
    [ -n "$code" ] || continue
    grep -q -- "\`$code\`" "$ROOT/docs/errors.md" || problem "error code $code not in docs/errors.md"
  done <<<"$errs"
else
  problem "rbl help errors failed"
fi
for cmd in run check repl audit rollback serve version errors; do
  out=$("$RBL" help "$cmd") || { problem "no help for $cmd"; continue; }
  [ -n "$out" ] || problem "empty help for $cmd"
done
for f in README.md docs/runbook-language.md docs/config.md docs/audit.md docs/errors.md docs/internals.md docs/serve.md; do
  [ -s "$ROOT/$f" ] || problem "missing doc: $f"
done
if grep -rn '\.\./shared\|shared/API\.md\|shared/DESIGN' "$ROOT/README.md" "$ROOT/docs" "$ROOT"/src/families/*/*.md; then
  problem "a doc points outside the repository (above)"
fi
echo "docs: $missing problem(s)"
exit $((missing > 0))
