#!/usr/bin/env python3
"""Local notification receivers for the notify tests, on loopback.

Every request is checked against what the vendor documents and logged as one JSON line
({path, headers, body, verdict, status}) to --log. Paths:

  /slack/...          Slack incoming webhook: JSON {text, blocks?, attachments?}; Block Kit
                      section/context blocks as documented (section text <= 3000, <= 10 fields
                      of <= 2000, context <= 10 elements). Answers 200 "ok" (Slack's reply) or
                      400 "invalid_payload".
  /pd/v2/enqueue      PagerDuty Events API v2: routing_key, event_action in trigger|acknowledge|
                      resolve, dedup_key <= 255; a trigger needs payload {summary <= 1024,
                      source, severity in critical|error|warning|info, custom_details?}.
                      Answers 202 {"status":"success","message":"Event processed","dedup_key"}
                      or 400 {"status":"invalid event",...}.
  /hook/...           Signed webhook: X-Rbl-Timestamp and X-Rbl-Signature = sha256=<hex
                      HMAC-SHA256(key, "<timestamp>.<body>")> verified with --key; a timestamp
                      more than 300 s away, or a signature seen before (a replay), is refused
                      with 401.
A path may carry a script of statuses to answer first, before the checks above:
  .../s429r1/...   429 with Retry-After: 1, then normal
  .../s429date/... 429 with Retry-After as an HTTP date 1-2 s ahead, then normal
  .../s503x2/...   503, 503, then normal
  .../s500/...     500 always
"""
import argparse, email.utils, hashlib, hmac, http.server, json, os, sys, time, threading

p = argparse.ArgumentParser()
p.add_argument("--port-file", required=True)
p.add_argument("--log", required=True)
p.add_argument("--key", default="")
a = p.parse_args()

lock = threading.Lock()
counts = {}
seen_sigs = set()
TOLERANCE = 300


def text_obj(t, limit):
    return (isinstance(t, dict) and t.get("type") in ("mrkdwn", "plain_text") and isinstance(t.get("text"), str)
            and 0 < len(t["text"]) <= limit and set(t) <= {"type", "text", "emoji", "verbatim"})


def check_slack(body):
    if not isinstance(body, dict) or not isinstance(body.get("text"), str) or not body["text"]:
        return "slack: text must be a non-empty string"
    if not set(body) <= {"text", "blocks", "attachments", "thread_ts", "mrkdwn"}:
        return "slack: unknown top-level keys %s" % sorted(set(body) - {"text", "blocks", "attachments"})
    blocks = body.get("blocks", [])
    if not isinstance(blocks, list) or len(blocks) > 50:
        return "slack: blocks must be a list of at most 50"
    for b in blocks:
        t = b.get("type") if isinstance(b, dict) else None
        if t == "section":
            if "text" not in b and "fields" not in b:
                return "slack: section needs text or fields"
            if "text" in b and not text_obj(b["text"], 3000):
                return "slack: bad section text"
            if "fields" in b:
                f = b["fields"]
                if not isinstance(f, list) or not 0 < len(f) <= 10 or not all(text_obj(x, 2000) for x in f):
                    return "slack: bad section fields"
            if not set(b) <= {"type", "text", "fields", "block_id", "accessory"}:
                return "slack: unknown section keys"
        elif t == "context":
            e = b.get("elements")
            if not isinstance(e, list) or not 0 < len(e) <= 10 or not all(text_obj(x, 3000) for x in e):
                return "slack: bad context elements"
        else:
            return "slack: unexpected block type %r" % t
    return None


def check_pd(body):
    if not isinstance(body, dict):
        return "pagerduty: body must be an object"
    if not isinstance(body.get("routing_key"), str) or not body["routing_key"]:
        return "pagerduty: routing_key missing"
    act = body.get("event_action")
    if act not in ("trigger", "acknowledge", "resolve"):
        return "pagerduty: event_action invalid"
    dk = body.get("dedup_key")
    if dk is not None and (not isinstance(dk, str) or len(dk) > 255):
        return "pagerduty: dedup_key invalid"
    if act != "trigger" and not dk:
        return "pagerduty: acknowledge/resolve need dedup_key"
    if not set(body) <= {"routing_key", "event_action", "dedup_key", "payload", "client", "client_url", "links", "images"}:
        return "pagerduty: unknown top-level keys"
    if act == "trigger":
        pl = body.get("payload")
        if not isinstance(pl, dict):
            return "pagerduty: payload missing"
        if not isinstance(pl.get("summary"), str) or not 0 < len(pl["summary"]) <= 1024:
            return "pagerduty: payload.summary invalid"
        if not isinstance(pl.get("source"), str) or not pl["source"]:
            return "pagerduty: payload.source missing"
        if pl.get("severity") not in ("critical", "error", "warning", "info"):
            return "pagerduty: payload.severity invalid"
        if "custom_details" in pl and not isinstance(pl["custom_details"], dict):
            return "pagerduty: custom_details must be an object"
        if not set(pl) <= {"summary", "source", "severity", "timestamp", "component", "group", "class", "custom_details"}:
            return "pagerduty: unknown payload keys"
    return None


def check_hook(headers, raw):
    ts = headers.get("X-Rbl-Timestamp")
    sig = headers.get("X-Rbl-Signature")
    if not ts or not sig or not sig.startswith("sha256="):
        return "webhook: signature headers missing"
    try:
        t = int(ts)
    except ValueError:
        return "webhook: bad timestamp"
    if abs(time.time() - t) > TOLERANCE:
        return "webhook: stale timestamp (replay?)"
    want = hmac.new(a.key.encode(), ts.encode() + b"." + raw, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(want, sig[7:]):
        return "webhook: bad signature"
    with lock:
        if sig in seen_sigs:
            return "webhook: replayed signature"
        seen_sigs.add(sig)
    try:
        json.loads(raw)
    except ValueError:
        return "webhook: body is not JSON"
    return None


class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def reply(self, status, body, ctype="text/plain", extra=None):
        data = body.encode() if isinstance(body, str) else body
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        raw = self.rfile.read(n)
        path = self.path
        with lock:
            counts[path] = counts.get(path, 0) + 1
            k = counts[path]
        rec = {"path": path, "n": k, "t": time.time(), "headers": dict(self.headers), "body": raw.decode("utf-8", "replace")}
        status, extra, verdict = None, None, None
        if "/s429r1/" in path and k == 1:
            status, extra = 429, {"Retry-After": "1"}
        elif "/s429date/" in path and k == 1:
            status, extra = 429, {"Retry-After": email.utils.formatdate(time.time() + 2, usegmt=True)}
        elif "/s503x2/" in path and k <= 2:
            status = 503
        elif "/s500/" in path:
            status = 500
        if status is None:
            if self.headers.get("Content-Type") != "application/json":
                verdict = "content-type must be application/json"
            else:
                try:
                    body = json.loads(raw)
                except ValueError:
                    body, verdict = None, "body is not JSON"
                if verdict is None:
                    if path.startswith("/slack/"):
                        verdict = check_slack(body)
                    elif path.startswith("/pd/"):
                        verdict = check_pd(body)
                    elif path.startswith("/hook/"):
                        verdict = check_hook(self.headers, raw)
                    else:
                        verdict = "unknown path"
            if path.startswith("/pd/"):
                status = 400 if verdict else 202
                out = json.dumps({"status": "invalid event", "message": "Event object is invalid", "errors": [verdict]}
                                 if verdict else {"status": "success", "message": "Event processed",
                                                  "dedup_key": (body or {}).get("dedup_key")})
                rec.update(status=status, verdict=verdict or "ok")
                self.log(rec)
                return self.reply(status, out, "application/json")
            if path.startswith("/hook/") and verdict and verdict.startswith("webhook:"):
                status = 401
            else:
                status = 400 if verdict else 200
            rec.update(status=status, verdict=verdict or "ok")
            self.log(rec)
            return self.reply(status, "invalid_payload" if status == 400 else (verdict or "ok"))
        rec.update(status=status, verdict="scripted")
        self.log(rec)
        self.reply(status, "try later", extra=extra)

    def log(self, rec):
        with lock, open(a.log, "a") as f:
            f.write(json.dumps(rec) + "\n")

    def log_message(self, *args):
        pass


srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
with open(a.port_file + ".tmp", "w") as f:
    f.write(str(srv.server_address[1]))
os.rename(a.port_file + ".tmp", a.port_file)
srv.serve_forever()
