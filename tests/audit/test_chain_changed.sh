#!/usr/bin/env bash
# A run notices when its own chain file was changed by someone else while it held it (here: a
# program the runbook itself started, as the same user): appended to, rewritten in place (same
# size), truncated, replaced by another file. It says so at its end (stderr, run_end
# "chain_changed", report "audit_chain_changed") and exits 4. An untouched run exits 0.
# usage: test_chain_changed.sh path/to/rbl
set -u
# shellcheck source=../lib/common.sh
source "$(dirname "$0")/../lib/common.sh"
rbl_test_init chain-changed "${1:-}"
cd "$W" || exit 1
echo 'return { exec = { allow = { "/bin/sh" } } }' >cfg.lua
# case NAME SHELL-COMMAND (run inside the run, cwd = $W) WANT-EXIT WANT-STDERR-REGEX
case_() {
  local name=$1 cmd=$2 want=$3 re=$4
  printf 'exec({ "/bin/sh", "-c", [==[%s]==] })\nlog("after")\n' "$cmd" >"$name.lua"
  # an earlier run on the same chain, so that there is a prefix to protect
  echo 'log("first")' >first.lua
  "$RBL" run first.lua --tenant t1 --incident CC --config cfg.lua --audit "$name.jsonl" -q >/dev/null 2>&1
  "$RBL" run "$name.lua" --tenant t1 --incident CC --config cfg.lua --audit "$name.jsonl" \
    --report "$name.report.json" -q >"$name.out" 2>"$name.err"
  local rc=$?
  local said=0
  if [ -z "$re" ]; then ! grep -q 'changed by someone else' "$name.err" && said=1
  else grep -Eq -- "$re" "$name.err" && said=1; fi
  if [ "$rc" = "$want" ] && [ "$said" = 1 ]; then ok "$name: exit $rc, says so"
  else bad "$name: exit $rc (want $want), stderr: $(head -c 400 "$name.err")"; fi
  if [ "$want" = 4 ]; then
    if jq -e '.audit_chain_changed | type == "string"' "$name.report.json" >/dev/null 2>&1; then
      ok "$name: report names audit_chain_changed"
    else bad "$name: report has no audit_chain_changed"; fi
  fi
}
case_ untouched 'true' 0 ''
case_ appended 'echo "{\"kind\":\"log\",\"message\":\"forged\"}" >> appended.jsonl' 4 'changed by someone else.*appended to'
case_ rewritten 'printf X | dd of=rewritten.jsonl bs=1 seek=40 conv=notrunc 2>/dev/null' 4 'changed by someone else.*rewrote part of it'
case_ truncated 'truncate -s 100 truncated.jsonl' 4 'changed by someone else.*truncated'
case_ replaced 'cp replaced.jsonl x.tmp && mv x.tmp replaced.jsonl' 4 'changed by someone else.*replaced by another file'
case_ removed 'rm removed.jsonl' 4 'changed by someone else.*removed or renamed'
if grep -q '"chain_changed"' appended.jsonl; then ok "appended: run_end records chain_changed"; else bad "appended: run_end has no chain_changed"; fi
if "$RBL" audit verify untouched.jsonl >/dev/null; then ok "untouched: chain verifies"; else bad "untouched: verify failed"; fi
# the REPL says so too
echo 'log("first")' >first.lua
"$RBL" run first.lua --tenant t1 --incident CC --config cfg.lua --audit repl.jsonl -q >/dev/null 2>&1
printf '%s\n' 'exec({ "/bin/sh", "-c", "echo junk >> repl.jsonl" })' |
  "$RBL" repl --tenant t1 --incident CC --config cfg.lua --audit repl.jsonl --yes >repl.out 2>repl.err # --yes: a repl write without a terminal is refused otherwise
rc=$?
if [ "$rc" = 4 ] && grep -q 'changed by someone else' repl.err; then ok "repl: exit 4, says so"; else bad "repl: exit $rc: $(head -c 300 repl.err)"; fi
rbl_test_done
