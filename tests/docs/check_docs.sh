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
for cmd in run check repl audit rollback approve serve version errors; do
  out=$("$RBL" help "$cmd") || { problem "no help for $cmd"; continue; }
  [ -n "$out" ] || problem "empty help for $cmd"
done
# --help is there and true for every command: `rbl help CMD`, `rbl CMD --help`, `-h` and
# `--help` after other arguments print the same usage, exit 0; an unknown option is exit 2
# naming it; every option a command parses is in its help; every option the README's Usage
# block gives a command is in that command's help.
helpof() { "$RBL" help "$1" 2>&1; }
for cmd in run check repl audit rollback approve serve version; do
  want=$(helpof "$cmd") || problem "rbl help $cmd: exit $?"
  head -1 <<<"$want" | grep -q "^usage: rbl $cmd" || problem "rbl help $cmd does not start with usage: rbl $cmd"
  case $cmd in run | repl) extra="--tenant t" ;; audit) extra="" ;; *) extra="x" ;; esac
  for args in "--help" "-h" "$extra --help"; do
    # shellcheck disable=SC2086
    got=$("$RBL" "$cmd" $args 2>&1) || problem "rbl $cmd $args: exit $?"
    [ "$got" = "$want" ] || problem "rbl $cmd $args differs from rbl help $cmd"
  done
  rc=0
  err=$("$RBL" "$cmd" --no-such-option 2>&1 >/dev/null) || rc=$?
  [ "$rc" = 2 ] || problem "rbl $cmd --no-such-option: exit $rc, not 2"
  grep -q -- "--no-such-option" <<<"$err" || problem "rbl $cmd --no-such-option: the error does not name it"
done
for sub in verify show; do
  want=$("$RBL" audit "$sub" --help) || problem "rbl audit $sub --help: exit $?"
  head -1 <<<"$want" | grep -q "^usage: rbl audit $sub" || problem "rbl audit $sub --help: no usage"
  [ "$("$RBL" audit "$sub" x --help)" = "$want" ] || problem "rbl audit $sub x --help differs"
done
opts_in() { grep -oE -- "$2" "$ROOT/$1" | grep -oE -- '--[a-z][a-z-]*' | sort -u; }
parsed_run=$(sed -n '/^static int parse_run/,/^}/p' "$ROOT/src/cli/main.c" |
  grep -oE '"--[a-z][a-z-]*' | tr -d '"' | sort -u)
runrepl_help="$(helpof run) $(helpof repl)"
for o in $parsed_run; do
  grep -q -- "$o\b" <<<"$runrepl_help" || problem "rbl run/repl parse $o; neither help names it"
done
for pair in rollback:src/cli/rollback.c approve:src/cli/approve.c check:src/cli/check.c \
  serve:src/serve/serve.c "audit verify:src/core/audit_verify.c" "audit show:src/core/audit_show.c"; do
  cmd=${pair%%:*} file=${pair#*:}
  # shellcheck disable=SC2086
  h=$("$RBL" $cmd --help 2>&1)
  for o in $(opts_in "$file" '"--[a-z][a-z-]*"' | grep -vx -- --help); do
    grep -q -- "$o\b" <<<"$h" || problem "rbl $cmd parses $o ($file); its help does not name it"
  done
done
cmd=
while read -r line; do
  case $line in rbl\ *) read -r _ cmd sub rest <<<"$line" ;; *) sub="" rest=$line ;; esac
  case $cmd in run | check | repl | rollback | approve | serve) h=$(helpof "$cmd") ;;
    audit) h=$("$RBL" audit "$sub" --help) ;; *) continue ;; esac
  for o in $(grep -oE -- '--[a-z][a-z-]*' <<<"$sub $rest" | sort -u); do
    grep -q -- "$o\b" <<<"$h" || problem "README's Usage gives rbl $cmd $o; rbl help $cmd does not"
  done
done < <(sed -n '/^## Usage/,/^```$/p' "$ROOT/README.md" | grep -E '^(rbl [a-z]+|  +\[)')
for f in README.md docs/runbook-language.md docs/config.md docs/audit.md docs/errors.md docs/internals.md docs/serve.md; do
  [ -s "$ROOT/$f" ] || problem "missing doc: $f"
done
if grep -rn '\.\./shared\|shared/API\.md\|shared/DESIGN' "$ROOT/README.md" "$ROOT/docs" "$ROOT"/src/families/*/*.md; then
  problem "a doc points outside the repository (above)"
fi
echo "docs: $missing problem(s)"
exit $((missing > 0))
