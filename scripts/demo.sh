#!/usr/bin/env bash
# Sets up, builds and runs the demo runbook end to end, then verifies and shows its audit chain.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc 2>/dev/null || echo 2)" >/dev/null
rm -f /tmp/rbl-demo.jsonl
set +e
build/rbl run runbooks/demo.lua --tenant demo-tenant --incident INC-DEMO-1 \
  --config runbooks/demo.config.lua --audit /tmp/rbl-demo.jsonl --report /tmp/rbl-demo-report.json
rc=$?
set -e
echo "--- exit status: $rc (0 = resolved)"
echo "--- report: /tmp/rbl-demo-report.json"
build/rbl audit verify /tmp/rbl-demo.jsonl
build/rbl audit show /tmp/rbl-demo.jsonl
exit $rc
