#!/usr/bin/env bash
# The sandbox escape suite: runs every tests/escape/NN-*.lua with the real rbl and checks
#   - the exit code and the regexes of its first line:
#       -- expect: exit=N [stdout~"ERE"] [stderr~"ERE"] [stdout!~"ERE"] [stderr!~"ERE"] [xfail="why"] [step_timeout=N]
#     (xfail: a known, reported finding outside the sandbox; failing it is XFAIL, not a failure)
#   - no crash (exit >= 128 other than the timeout's 124) and no hang (timeout per attempt)
#   - no side effect: canary outside the runbook dir unchanged, /tmp/rbl_escape_pwned absent,
#     no raw ESC/BEL byte on stdout or stderr, `rbl audit verify` of the chain exits 0.
# Usage: run.sh PATH/TO/rbl [NAME-FILTER]
set -u
RBL=${1:?usage: run.sh PATH/TO/rbl [filter]}
FILTER=${2:-}
RBL=$(cd "$(dirname "$RBL")" && pwd)/$(basename "$RBL")
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PER_ATTEMPT=${RBL_ESCAPE_TIMEOUT:-20}
W=$(mktemp -d "${TMPDIR:-/tmp}/rbl-escape.XXXXXX")
trap 'rm -rf "$W"' EXIT
mkdir -p "$W/rb" "$W/outside" "$W/audit" "$W/out" "$W/rb/pyinject"
# a module directory an interpreter must never be pointed at (PYTHONPATH, PERL5LIB tests)
printf 'import os\nopen("/tmp/rbl_escape_pwned", "w").close()\n' > "$W/rb/pyinject/sitecustomize.py"
printf 'package strict; open(my $f, ">", "/tmp/rbl_escape_pwned"); sub import {} 1;\n' > "$W/rb/pyinject/strict.pm"
cp "$HERE"/*.lua "$W/rb/"
# fixtures: a bytecode module, a symlink out of the runbook dir, a canary outside it
if command -v luac5.4 >/dev/null 2>&1; then
  echo 'return 1' > "$W/bc_src.lua" && luac5.4 -o "$W/rb/bytecode_mod.lua" "$W/bc_src.lua"
else
  printf '\033Lua\124\000\031\223\015\012\032\012return 1\n' > "$W/rb/bytecode_mod.lua"
fi
echo 'return "canary"' > "$W/outside/canary.lua"
ln -s "$W/outside/canary.lua" "$W/rb/outside_link.lua"
CANARY_SUM=$(sha256sum "$W/outside/canary.lua" | cut -d' ' -f1)
PWNED=/tmp/rbl_escape_pwned
rm -f "$PWNED"
export RBL_ESC_TOKEN="s3cr3t-canary-value"
export NO_COLOR=1

pass=0 fail=0 xfail=0 xpass=0
failed=()
check_re() { # file op re -> 0 ok
  local f=$1 op=$2 re=$3
  if [ "$op" = "~" ]; then grep -Eq -- "$re" "$f"; else ! grep -Eq -- "$re" "$f"; fi
}
for rb in "$W"/rb/[0-9][0-9]-*.lua; do
  name=$(basename "$rb" .lua)
  [ -n "$FILTER" ] && [[ $name != *$FILTER* ]] && continue
  head1=$(head -n1 "$rb")
  if [[ $head1 != "-- expect:"* ]]; then echo "FAIL $name: no expect line"; fail=$((fail+1)); failed+=("$name"); continue; fi
  want_exit=$(sed -nE 's/.*exit=([0-9]+).*/\1/p' <<<"$head1")
  xf=$(sed -nE 's/.*xfail="([^"]*)".*/\1/p' <<<"$head1")
  audit="$W/audit/$name.jsonl"
  out="$W/out/$name.stdout" err="$W/out/$name.stderr"
  # step_timeout=N: a case whose point is not time (a 20 MiB log under ASan) gets a longer step
  cfg="$W/rb/config.lua"
  st=$(sed -nE 's/.*step_timeout=([0-9]+).*/\1/p' <<<"$head1")
  if [ -n "$st" ]; then
    cfg="$W/cfg-$name.lua"
    sed -E "s/step_timeout = [0-9]+/step_timeout = $st/" "$W/rb/config.lua" >"$cfg"
    grep -q "step_timeout = $st" "$cfg" || { echo "FAIL $name: step_timeout not applied"; exit 1; }
  fi
  t0=$(date +%s%N)
  (cd "$W/rb" && timeout -k 5 "$PER_ATTEMPT" "$RBL" run "$rb" --tenant t1 --incident ESC \
      --audit "$audit" --config "$cfg" --report "$W/out/$name.report.json" \
      >"$out" 2>"$err" </dev/null)
  rc=$?
  ms=$(( ($(date +%s%N) - t0) / 1000000 ))
  why=()
  if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then why+=("hang: killed after ${PER_ATTEMPT}s")
  elif [ "$rc" -ge 128 ]; then why+=("crash: exit $rc (signal $((rc-128)))")
  elif [ "$rc" != "$want_exit" ]; then why+=("exit $rc, want $want_exit"); fi
  # regexes: stdout~"..." stderr!~"..."
  while IFS= read -r spec; do
    stream=${spec%%[~!]*}; rest=${spec#"$stream"}
    if [[ $rest == '!~'* ]]; then op='!'; re=${rest#'!~"'}; else op='~'; re=${rest#'~"'}; fi
    re=${re%'"'}
    f=$out; [ "$stream" = stderr ] && f=$err
    check_re "$f" "$op" "$re" || why+=("$stream $op \"$re\" not satisfied")
  done < <(grep -oE '(stdout|stderr)!?~"([^"\\]|\\.)*"' <<<"$head1")
  # side effects
  [ -e "$PWNED" ] && { why+=("side effect: $PWNED exists"); rm -f "$PWNED"; }
  [ "$(sha256sum "$W/outside/canary.lua" | cut -d' ' -f1)" = "$CANARY_SUM" ] || why+=("side effect: canary changed")
  extra=$(find "$W/outside" "$W/rb" -newer "$W/rb/config.lua" -type f ! -name '*.lua' 2>/dev/null)
  [ -n "$extra" ] && why+=("side effect: new files: $extra")
  if LC_ALL=C grep -q $'[\x1b\x07]' "$out" "$err"; then why+=("raw ESC/BEL on stdout/stderr"); fi
  # C1 controls too: U+0080..U+009F, and bytes that are not UTF-8 (a raw 0x9b is CSI)
  if ! python3 -c 'import sys
for f in sys.argv[1:]:
    t = open(f, "rb").read().decode("utf-8", "surrogateescape")
    if any(0x80 <= ord(c) <= 0x9f or 0xdc80 <= ord(c) <= 0xdcff for c in t): sys.exit(1)' "$out" "$err"; then
    why+=("raw C1 control or non-UTF-8 byte on stdout/stderr")
  fi
  if grep -q "AddressSanitizer\|runtime error:\|LeakSanitizer" "$err"; then why+=("sanitizer report on stderr"); fi
  if [ -s "$audit" ]; then
    "$RBL" audit verify "$audit" >"$W/out/$name.verify" 2>&1 || why+=("audit verify exit $? ($(head -c 200 "$W/out/$name.verify"))")
  elif [ "$want_exit" != 2 ]; then why+=("no audit chain written"); fi
  if [ ${#why[@]} -eq 0 ]; then
    if [ -n "$xf" ]; then echo "XPASS $name (${ms} ms) [was: $xf]"; xpass=$((xpass+1))
    else echo "ok    $name (exit $rc, ${ms} ms)"; pass=$((pass+1)); fi
  elif [ -n "$xf" ]; then
    echo "XFAIL $name (${ms} ms): $xf"; xfail=$((xfail+1))
  else
    echo "FAIL  $name (exit $rc, ${ms} ms): ${why[*]}"
    echo "      stdout: $(head -c 300 "$out" | tr '\n' '|')"
    echo "      stderr: $(tail -c 400 "$err" | tr '\n' '|')"
    fail=$((fail+1)); failed+=("$name")
  fi
  # the walk of the real environment is diffed against the families registry
  # (`rbl check --list-globals`): nothing reachable that is not registered, nothing missing
  if [ "$name" = 01-allowlist ]; then
    if ! diff -u <("$RBL" check --list-globals | cut -f1 | LC_ALL=C sort) \
                 <(sed -n 's/^ENV //p' "$out" | LC_ALL=C sort) >"$W/out/allowlist.diff"; then
      echo "FAIL  01-allowlist: environment differs from the registry (rbl check --list-globals):"; sed 's/^/      /' "$W/out/allowlist.diff" | head -40
      fail=$((fail+1)); failed+=("01-allowlist(diff)")
    fi
  fi
done
echo "escape suite: $pass passed, $fail failed, $xfail known findings (xfail), $xpass xpass"
[ $fail -eq 0 ] || { echo "failed: ${failed[*]}"; exit 1; }
exit 0
