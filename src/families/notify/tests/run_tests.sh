#!/usr/bin/env bash
# notify end to end against local receivers (receiver.py, loopback) that check the payloads the
# vendors document: Slack incoming webhook, PagerDuty Events API v2, the signed webhook (its
# signature verified with the key, replays and stale timestamps refused). Retries (429 with
# Retry-After in seconds and as an HTTP date, 503 twice), required = true / false failures,
# on_end (when = "failed" / "always"), secrets absent from chain, report and stderr, and
# `rbl audit verify` on every chain.
set -uo pipefail
RBL=$(realpath "${1:-build/rbl}")
HERE=$(cd "$(dirname "$0")" && pwd)
W=$(mktemp -d)
fails=0
RPID=
cleanup() { [[ -n "$RPID" ]] && kill "$RPID" 2>/dev/null; rm -rf "$W"; }
trap cleanup EXIT
check() { if eval "$2"; then echo "ok    $1"; else echo "FAIL  $1"; fails=$((fails + 1)); fi; }

SLACK_SECRET_PATH="T0RBL/B0RBL/slackSecretPath8c1f"
PD_KEY_VALUE="pdRoutingKey5e7a0c2d9b11f4aa6c3e"
HOOK_KEY_VALUE="hookHmacKey-3f9d2b7e"
export HOOK_KEY="$HOOK_KEY_VALUE"

python3 "$HERE/receiver.py" --port-file "$W/port" --log "$W/recv.jsonl" --key "$HOOK_KEY_VALUE" &
RPID=$!
for _ in $(seq 50); do [[ -s "$W/port" ]] && break; sleep 0.1; done
P=$(cat "$W/port")
B="http://127.0.0.1:$P"
export NOTIFY_SLACK_URL="$B/slack/$SLACK_SECRET_PATH"
printf '%s\n' "$PD_KEY_VALUE" > "$W/pd_key"

config() { # on_end channel, when (or empty)
  local onend=""
  [[ -n "${1:-}" ]] && onend="on_end = { channel = \"$1\", when = \"$2\" },"
  cat > "$W/config.lua" <<LUA
return {
  tenants = { "prod-tenant-7" },
  secrets = { PD_KEY = "$W/pd_key" },
  notify = {
    channels = {
      oncall  = { type = "slack", webhook = "NOTIFY_SLACK_URL" },
      pager   = { type = "pagerduty", routing_key = "PD_KEY", url = "$B/pd/v2/enqueue" },
      hook    = { type = "webhook", url = "$B/hook/plain", hmac_key = "HOOK_KEY" },
      slow429 = { type = "slack", url = "$B/slack/s429r1/x" },
      date429 = { type = "slack", url = "$B/slack/s429date/x" },
      flaky   = { type = "webhook", url = "$B/hook/s503x2/x", hmac_key = "HOOK_KEY", backoff = 0.2 },
      dead    = { type = "webhook", url = "$B/hook/s500/x", hmac_key = "HOOK_KEY", attempts = 3, backoff = 0.1 },
    },
    $onend
  },
}
LUA
}

run() { # name, runbook, [incident]
  local n=$1 rb=$2 inc=${3:-INC-$1}
  "$RBL" run "$rb" --tenant prod-tenant-7 --config "$W/config.lua" --incident "$inc" \
    --audit "$W/$n.jsonl" --report "$W/$n.report.json" >"$W/$n.out" 2>"$W/$n.err"
  echo $? >"$W/$n.rc"
}
rc() { cat "$W/$1.rc"; }
recv() { python3 - "$W/recv.jsonl" "$@"; } # prints what the python snippet on stdin decides

# ---- 1. payloads, exactly as documented ----
config
cat > "$W/payloads.lua" <<'LUA'
runbook { id = "notify-payloads" }
step "tell" { run = function()
  local r = notify("oncall", "Pool saturation fixed on *prod-tenant-7*", { fields = { pool = 97, region = "eu-west-1", note = "a < b & c" } })
  assert(r.sent == true and r.status == 200 and r.attempts == 1, "slack not sent")
  r = notify("pager", "Connection pool saturated", { fields = { pool = 97 }, severity = "critical" })
  assert(r.sent == true and r.status == 202, "pagerduty not sent")
  notify("pager", "ack", { action = "acknowledge" })
  notify("pager", "done", { action = "resolve" })
  r = notify("hook", "hooked", { fields = { a = 1, nested = { x = "y" } } })
  assert(r.sent == true, "webhook not sent")
end }
LUA
run payloads "$W/payloads.lua" INC-PAY
check "payload run resolved (exit 0)" '[[ "$(rc payloads)" == 0 ]] || { cat "$W/payloads.err"; false; }'
RUN_ID=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["run_id"])' "$W/payloads.report.json")
check "slack payload is exactly the documented incoming-webhook JSON" 'recv "$SLACK_SECRET_PATH" <<"PY"
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1])]
r = [x for x in recs if x["path"] == "/slack/" + sys.argv[2]]
want = {"text": "Pool saturation fixed on *prod-tenant-7*", "blocks": [
  {"type": "section", "text": {"type": "mrkdwn", "text": "Pool saturation fixed on *prod-tenant-7*"}},
  {"type": "section", "fields": [{"type": "mrkdwn", "text": "*note*\na &lt; b &amp; c"},
                                 {"type": "mrkdwn", "text": "*pool*\n97"},
                                 {"type": "mrkdwn", "text": "*region*\neu-west-1"}]},
  {"type": "context", "elements": [{"type": "mrkdwn", "text": "rbl | runbook notify-payloads | incident INC-PAY | tenant prod-tenant-7"}]}]}
ok = len(r) == 1 and r[0]["verdict"] == "ok" and json.loads(r[0]["body"]) == want
if not ok: print(r, file=sys.stderr)
sys.exit(0 if ok else 1)
PY'
check "pagerduty events v2: trigger, acknowledge, resolve with dedup_key = incident" 'recv "$PD_KEY_VALUE" "$RUN_ID" <<"PY"
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1]) if "/pd/" in l]
key, run = sys.argv[2], sys.argv[3]
bodies = [json.loads(x["body"]) for x in recs]
want = [{"routing_key": key, "event_action": "trigger", "dedup_key": "INC-PAY", "client": "rbl",
         "payload": {"summary": "Connection pool saturated", "source": "prod-tenant-7", "severity": "critical",
                     "custom_details": {"pool": 97, "incident": "INC-PAY", "run": run, "runbook": "notify-payloads", "tenant": "prod-tenant-7"}}},
        {"routing_key": key, "event_action": "acknowledge", "dedup_key": "INC-PAY"},
        {"routing_key": key, "event_action": "resolve", "dedup_key": "INC-PAY"}]
ok = bodies == want and all(x["status"] == 202 and x["verdict"] == "ok" for x in recs)
if not ok: print(bodies, file=sys.stderr)
sys.exit(0 if ok else 1)
PY'
check "webhook body, signature verified by the receiver with the key" 'recv "$RUN_ID" <<"PY"
import json, sys, time
recs = [json.loads(l) for l in open(sys.argv[1]) if "/hook/plain" in l]
b = json.loads(recs[0]["body"])
sent_at = b.pop("sent_at")
want = {"channel": "hook", "message": "hooked", "fields": {"a": 1, "nested": {"x": "y"}}, "incident": "INC-PAY",
        "run": sys.argv[2], "runbook": "notify-payloads", "tenant": "prod-tenant-7"}
h = recs[0]["headers"]
ok = (len(recs) == 1 and recs[0]["verdict"] == "ok" and b == want and abs(sent_at - time.time()) < 60
      and h["X-Rbl-Signature"].startswith("sha256=") and h["X-Rbl-Timestamp"].isdigit())
if not ok: print(recs, file=sys.stderr)
sys.exit(0 if ok else 1)
PY'
# Replays: the same request again is refused; a correctly signed one with an old timestamp too.
replay() {
  python3 - "$W/recv.jsonl" "$B" "$HOOK_KEY_VALUE" "$1" <<'PY'
import json, sys, urllib.request, hmac, hashlib, time
recs = [json.loads(l) for l in open(sys.argv[1]) if "/hook/plain" in l]
r = recs[0]
ts, sig = r["headers"]["X-Rbl-Timestamp"], r["headers"]["X-Rbl-Signature"]
if sys.argv[4] == "stale":
    ts = str(int(time.time()) - 600)
    sig = "sha256=" + hmac.new(sys.argv[3].encode(), ts.encode() + b"." + r["body"].encode(), hashlib.sha256).hexdigest()
req = urllib.request.Request(sys.argv[2] + "/hook/plain", data=r["body"].encode(), method="POST",
      headers={"Content-Type": "application/json", "X-Rbl-Timestamp": ts, "X-Rbl-Signature": sig})
try:
    urllib.request.urlopen(req); print(200)
except urllib.error.HTTPError as e:
    print(e.code, e.read().decode())
PY
}
check "replayed webhook request refused by the receiver" '[[ "$(replay same)" == "401 webhook: replayed signature" ]]'
check "old timestamp refused by the receiver" '[[ "$(replay stale)" == "401 webhook: stale timestamp (replay?)" ]]'
check "report: notifications and slack_notification_sent" 'python3 - "$W/payloads.report.json" <<"PY"
import json, sys
r = json.load(open(sys.argv[1]))
t = r["execution_trace"][0]
ok = (r.get("slack_notification_sent") is True and t.get("slack_notification_sent") is True
      and [n["channel"] for n in r["notifications"]] == ["oncall", "pager", "pager", "pager", "hook"]
      and all(n["sent"] for n in r["notifications"]))
sys.exit(0 if ok else 1)
PY'
check "intent records name the channel and its type only" 'python3 - "$W/payloads.jsonl" <<"PY"
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1])]
it = [r for r in recs if r["kind"] == "intent" and r["prim"] == "notify"]
ok = len(it) == 5 and all(r["args"] == [r["target"]["channel"], r["target"]["type"]] and set(r["target"]) == {"channel", "type"} for r in it)
sys.exit(0 if ok else 1)
PY'

# ---- 2. retries ----
cat > "$W/retries.lua" <<'LUA'
runbook { id = "notify-retries" }
step "retry" { run = function()
  local a = notify("slow429", "after 429", {})
  local b = notify("date429", "after 429 with a date", {})
  local c = notify("flaky", "after two 503s")
  assert(a.sent and a.attempts == 2, "429/Retry-After seconds")
  assert(b.sent and b.attempts == 2, "429/Retry-After date")
  assert(c.sent and c.attempts == 3, "503 twice")
end }
LUA
run retries "$W/retries.lua"
check "retries run resolved" '[[ "$(rc retries)" == 0 ]] || { cat "$W/retries.err"; false; }'
check "429 + Retry-After: 1 waited >= 1 s before the second attempt" 'recv <<"PY"
import json, sys
r = [json.loads(l) for l in open(sys.argv[1]) if "/s429r1/" in l]
ok = [x["status"] for x in r] == [429, 200] and r[1]["t"] - r[0]["t"] >= 0.95
sys.exit(0 if ok else 1)
PY'
check "429 + Retry-After as an HTTP date honoured" 'recv <<"PY"
import json, sys
r = [json.loads(l) for l in open(sys.argv[1]) if "/s429date/" in l]
ok = [x["status"] for x in r] == [429, 200] and r[1]["t"] - r[0]["t"] >= 0.9
sys.exit(0 if ok else 1)
PY'
check "503 twice then 200, backoff growing, each attempt re-signed and accepted" 'recv <<"PY"
import json, sys
r = [json.loads(l) for l in open(sys.argv[1]) if "/s503x2/" in l]
ok = [x["status"] for x in r] == [503, 503, 200] and r[2]["verdict"] == "ok" and (r[2]["t"] - r[1]["t"]) > (r[1]["t"] - r[0]["t"])
sys.exit(0 if ok else 1)
PY'
check "every attempt is in the result summary" 'python3 - "$W/retries.jsonl" <<"PY"
import json, sys
res = [json.loads(l) for l in open(sys.argv[1])]
res = [r for r in res if r["kind"] == "result" and r["prim"] == "notify"]
got = [[a.get("status") for a in r["summary"]["attempts"]] for r in res]
ok = got == [[429, 200], [429, 200], [503, 503, 200]] and res[0]["summary"]["attempts"][0]["retry_after"] == 1 \
     and all("wait_ms" in r["summary"]["attempts"][0] for r in res)
if not ok: print(got, file=sys.stderr)
sys.exit(0 if ok else 1)
PY'

# ---- 3. required = true: the step fails, rollback runs, exit 1 ----
cat > "$W/required.lua" <<'LUA'
runbook { id = "notify-required" }
step "change" { run = function() log("changed") end, rollback = function() log("undone") end }
step "page" { run = function() notify("dead", "must arrive", { required = true }) end }
LUA
run required "$W/required.lua"
check "required = true failure: exit 1" '[[ "$(rc required)" == 1 ]]'
check "required = true failure: earlier step rolled back" 'python3 - "$W/required.report.json" <<"PY"
import json, sys
r = json.load(open(sys.argv[1]))
t = r["execution_trace"]
ok = r["outcome"] == "failed" and t[0]["status"] == "rolled_back" and t[1]["status"] == "failed" \
     and "not delivered after 3 attempts [500 (waited 0.1 s), 500 (waited 0.2 s), 500]" in t[1]["detail"]
if not ok: print(t, file=sys.stderr)
sys.exit(0 if ok else 1)
PY'

# ---- 4. required = false: the run resolves, the failure is audited ----
cat > "$W/optional.lua" <<'LUA'
runbook { id = "notify-optional" }
step "tell" { run = function()
  local r = notify("dead", "nice to have")
  assert(r.sent == false and r.error:find("not delivered after 3 attempts", 1, true), "expected sent = false")
end }
LUA
run optional "$W/optional.lua"
check "required = false failure: run resolved (exit 0)" '[[ "$(rc optional)" == 0 ]] || { cat "$W/optional.err"; false; }'
check "required = false failure: audited as an error result with its attempts" 'python3 - "$W/optional.jsonl" <<"PY"
import json, sys
res = [json.loads(l) for l in open(sys.argv[1])]
res = [r for r in res if r["kind"] == "result" and r["prim"] == "notify"]
ok = len(res) == 1 and res[0]["status"] == "error" and "[500 (waited 0.1 s), 500 (waited 0.2 s), 500]" in res[0]["error"]["message"]
sys.exit(0 if ok else 1)
PY'
check "required = false failure: in the report as sent = false" 'grep -q "\"sent\":[[:space:]]*false" "$W/optional.report.json"'

# ---- 5. on_end ----
cat > "$W/ok.lua" <<'LUA'
runbook { id = "notify-ok" }
step "fine" { run = function() log("fine") end }
LUA
cat > "$W/bad.lua" <<'LUA'
runbook { id = "notify-bad" }
step "first" { run = function() log("first") end }
step "broken" { run = function() error("boom") end }
LUA
count_end() { python3 -c 'import json,sys; print(sum(1 for l in open(sys.argv[1]) if json.loads(l)["path"] == "/hook/plain" and "run_end" in json.loads(l)["body"]))' "$W/recv.jsonl"; }
config hook failed
n0=$(count_end)
run endok "$W/ok.lua" INC-ENDOK
check "on_end failed: nothing sent for a resolved run" '[[ "$(rc endok)" == 0 && "$(count_end)" == "$n0" ]]'
run endbad "$W/bad.lua" INC-ENDBAD
check "on_end failed: summary sent for a failed run, exit stays 1" '[[ "$(rc endbad)" == 1 && "$(count_end)" == "$((n0 + 1))" ]]'
check "on_end summary: outcome, tenant, incident, steps, audit head" 'python3 - "$W/recv.jsonl" "$W/endbad.jsonl" <<"PY"
import json, sys
r = [json.loads(l) for l in open(sys.argv[1]) if "run_end" in l][-1]
b = json.loads(r["body"])
chain = [json.loads(l) for l in open(sys.argv[2])]
hashes = {c["hash"] for c in chain}
ok = (r["verdict"] == "ok" and b["event"] == "run_end" and b["outcome"] == "failed" and b["tenant"] == "prod-tenant-7"
      and b["incident"] == "INC-ENDBAD" and b["runbook"] == "notify-bad"
      and b["steps"] == [{"name": "first", "status": "success"}, {"name": "broken", "status": "failed"}]
      and b["audit_head"] in hashes)
if not ok: print(b, file=sys.stderr)
sys.exit(0 if ok else 1)
PY'
config oncall always
run endalways "$W/ok.lua" INC-ENDALWAYS
check "on_end always: slack summary for a resolved run" '[[ "$(rc endalways)" == 0 ]] && python3 - "$W/recv.jsonl" "$SLACK_SECRET_PATH" <<"PY"
import json, sys
r = [json.loads(l) for l in open(sys.argv[1]) if json.loads(l)["path"] == "/slack/" + sys.argv[2]][-1]
b = json.loads(r["body"])
sys.exit(0 if r["verdict"] == "ok" and "INC-ENDALWAYS" in b["text"] and "resolved" in b["text"] else 1)
PY'
check "on_end in the report" 'grep -q "\"on_end\":[[:space:]]*true" "$W/endalways.report.json" && grep -q "\"slack_notification_sent\":[[:space:]]*true" "$W/endalways.report.json"'
config dead always
run enddead "$W/ok.lua" INC-ENDDEAD
check "on_end failure never changes the exit code, and is recorded" '[[ "$(rc enddead)" == 0 ]] && grep -q "\"status\":\"error\"" "$W/enddead.jsonl" && grep -q "\"on_end\":[[:space:]]*true" "$W/enddead.report.json"'

# ---- 6. secrets and the chain ----
for n in payloads retries required optional endok endbad endalways enddead; do
  check "audit verify $n" '"$RBL" audit verify "$W/$n.jsonl" >/dev/null'
  check "no secret in $n chain/report/stderr" '[[ -s "$W/$n.jsonl" && -s "$W/$n.report.json" ]] && ! grep -l -e "$SLACK_SECRET_PATH" -e "$PD_KEY_VALUE" -e "$HOOK_KEY_VALUE" "$W/$n.jsonl" "$W/$n.report.json" "$W/$n.err" "$W/$n.out"'
done

echo "notify: $fails failed"
exit $((fails > 0))
