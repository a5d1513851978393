#!/usr/bin/env bash
# A run pays only for what it uses (docs/internals.md, "Start-up"): a no-op run and an
# `rbl audit verify` without a key load no shared library beyond libc, libm and libcjson (libcurl
# on the first request, OpenSSL on the first key, signature or TLS: src/core/curl_dl.c,
# src/core/ossl_dl.c); a run with an audit key or a signing key loads OpenSSL and its chain
# verifies with the key; a new chain's directory is synced, in a thread, before the run's end
# (the dynamic loader's own trace, LD_DEBUG, and strace when installed, are the witnesses).
# usage: startup_libs.sh path/to/rbl
set -u
RBL=$(realpath "${1:?usage: startup_libs.sh path/to/rbl}")
W=$(mktemp -d /tmp/rbl-startup-libs.XXXXXX)
trap 'rm -rf "$W"' EXIT
cd "$W" || exit 1
pass=0 fail=0
ok() { echo "ok - $*"; pass=$((pass + 1)); }
bad() { echo "not ok - $*"; fail=$((fail + 1)); }

{
  echo 'runbook { id = "noop" }'
  for i in 1 2 3; do echo "step \"s$i\" { run = function(ctx) end }"; done
} >noop.lua

# loaded LOGFILE: the libraries the dynamic loader mapped, one per line
loaded() { sed -n 's/.*file=\([^ ]*\) \[0\];  \(needed\|dynamically loaded\).*/\1/p' "$1" | sort -u | tr '\n' ' '; }

LD_DEBUG=files LD_DEBUG_OUTPUT="$W/ld-noop" "$RBL" run noop.lua --tenant t1 --incident SL \
  --audit noop.jsonl -q >/dev/null 2>noop.err
rc=$?
libs=$(loaded "$W"/ld-noop.*)
if [ $rc = 0 ]; then ok "no-op run: exit 0"; else bad "no-op run: exit $rc: $(head -c 300 noop.err)"; fi
case "$libs" in
  *libcjson*) ok "the loader's trace is read (saw libcjson)" ;;
  *) bad "the loader's trace names no libcjson: $libs" ;;
esac
case "$libs" in
  *libcrypto* | *libssl* | *libcurl* | *libedit*) bad "no-op run loaded more than it uses: $libs" ;;
  *) ok "no-op run: no OpenSSL, libcurl or libedit ($libs)" ;;
esac

LD_DEBUG=files LD_DEBUG_OUTPUT="$W/ld-verify" "$RBL" audit verify noop.jsonl >/dev/null 2>verify.err
rc=$?
libs=$(loaded "$W"/ld-verify.*)
if [ $rc = 0 ]; then ok "audit verify: exit 0"; else bad "audit verify: exit $rc: $(head -c 300 verify.err)"; fi
case "$libs" in
  *libcrypto* | *libssl* | *libcurl*) bad "audit verify without a key loaded OpenSSL or libcurl: $libs" ;;
  *) ok "audit verify without a key: no OpenSSL" ;;
esac

# with a key: OpenSSL is loaded on demand and the MAC checks out with the same key
head -c 32 /dev/urandom >key.bin && chmod 600 key.bin
LD_DEBUG=files LD_DEBUG_OUTPUT="$W/ld-key" "$RBL" run noop.lua --tenant t1 --incident SK \
  --audit key.jsonl --audit-key key.bin -q >/dev/null 2>key.err
rc=$?
libs=$(loaded "$W"/ld-key.*)
if [ $rc = 0 ]; then ok "run with --audit-key: exit 0"; else bad "run with --audit-key: exit $rc: $(head -c 300 key.err)"; fi
case "$libs" in
  *libcrypto*) ok "run with --audit-key loaded libcrypto" ;;
  *) bad "run with --audit-key did not load libcrypto: $libs" ;;
esac
if grep -q '"mac":"hmac-sha256:' key.jsonl; then ok "records carry a MAC"; else bad "no MAC in key.jsonl"; fi
if "$RBL" audit verify key.jsonl --key key.bin >verify-key.out 2>&1; then ok "verify --key: the MACs check out"
else bad "verify --key failed: $(head -c 300 verify-key.out)"; fi
head -c 32 /dev/urandom >other.bin && chmod 600 other.bin
"$RBL" audit verify key.jsonl --key other.bin >other.out 2>&1
rc=$?
if [ $rc = 1 ] && grep -qi 'mac' other.out; then ok "verify with another key: exit 1, a bad MAC"
else bad "verify with another key: exit $rc: $(head -c 300 other.out)"; fi

# a signing key: an Ed25519 signature at the run's end, checked with the public key
if command -v openssl >/dev/null; then
  openssl genpkey -algorithm ed25519 -out sign.pem 2>/dev/null && chmod 600 sign.pem
  openssl pkey -in sign.pem -pubout -out pub.pem 2>/dev/null
  if "$RBL" run noop.lua --tenant t1 --incident SS --audit sign.jsonl --sign-key sign.pem -q \
    >/dev/null 2>sign.err; then ok "run with --sign-key: exit 0"
  else bad "run with --sign-key failed: $(head -c 300 sign.err)"; fi
  if "$RBL" audit verify sign.jsonl --pubkey pub.pem >verify-sign.out 2>&1; then
    ok "verify --pubkey: the signature checks out"
  else bad "verify --pubkey failed: $(head -c 300 verify-sign.out)"; fi
else
  echo "# openssl (the command) is missing: the signing case was not run"
  bad "openssl command missing (scripts/setup.sh installs it)"
fi

# the new chain's directory: fsync'ed (beside the run) before the run's final fdatasync returns
if command -v strace >/dev/null; then
  strace -f -e trace=fsync,fdatasync,exit_group -o trace.txt "$RBL" run noop.lua --tenant t1 \
    --incident SD --audit sub/dir.jsonl -q >/dev/null 2>&1
  if grep -q '^[0-9]* *fsync(' trace.txt && grep -q 'fdatasync(' trace.txt &&
    [ "$(grep -n 'fsync(' trace.txt | grep -v fdatasync | head -1 | cut -d: -f1)" -lt \
      "$(grep -n 'exit_group' trace.txt | head -1 | cut -d: -f1)" ]; then
    ok "a new chain: its directory fsync'ed and its records fdatasync'ed before exit"
  else bad "new chain: syncs missing: $(tr '\n' ' ' <trace.txt | head -c 400)"; fi
else
  echo "# strace is not installed: the sync order was not traced"
fi

echo "# $pass passed, $fail failed"
[ "$fail" = 0 ]
