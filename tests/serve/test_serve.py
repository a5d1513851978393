"""rbl serve: receiving, auth, bad input, routing, dedup, cooldown, the brake, the per-target lock,
resolved alerts, pause/resume, SIGTERM draining, and a hostile spool on restart.
usage: test_serve.py RBL"""
import http.client, json, os, signal, socket, sys, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from servelib import Env, TOKEN, alert, payload, check, done

RBL = os.path.abspath(sys.argv[1])


def raw(env, data, read=True):
    s = socket.create_connection(("127.0.0.1", env.port), timeout=10)
    s.sendall(data)
    out = b""
    if read:
        try:
            while True:
                b = s.recv(65536)
                if not b:
                    break
                out += b
        except socket.timeout:
            pass
    s.close()
    return out


def status_of(resp):
    try:
        return int(resp.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return None


def test_receiving_and_bad_input():
    env = Env(RBL, serve_extra="max_body_kb = 64,", route_extra="cooldown = 1, max_runs_per_hour = 50")
    env.start()
    m = env.marker
    st, j = env.request("GET", "/healthz", token=None)
    check(st == 200 and j["status"] == "ok", "healthz answers without a token")
    # auth failures
    p = payload("g-auth", [alert("g-auth", marker=m)])
    st, j = env.post(p, token=None)
    check(st == 401, "no Authorization: 401")
    st, j = env.post(p, token="wrong-token-0123456789")
    check(st == 401 and "bearer" in j["error"], "wrong token: 401 naming the bearer token")
    st, j = env.post(p, token=TOKEN + "x")
    check(st == 401, "token with a suffix: 401")
    st, j = env.post(p, token=TOKEN[:-1])
    check(st == 401, "token prefix: 401")
    st, j = env.request("POST", "/v1/alertmanager", json.dumps(p), token=None,
                        headers={"Authorization": "Basic " + TOKEN})
    check(st == 401, "Basic scheme: 401")
    st, j = env.request("GET", "/v1/runs", token=None)
    check(st == 401, "GET /v1/runs needs the token")
    st, j = env.request("POST", "/v1/pause", token="nope-nope-nope-nope")
    check(st == 401, "POST /v1/pause needs the token")
    # malformed JSON
    st, j = env.post('{"version": "4", "alerts": [')
    check(st == 400 and "not valid JSON" in j["error"], "malformed JSON: 400 saying so")
    st, j = env.post("[]")
    check(st == 400 and "JSON object" in j["error"], "a JSON array: 400")
    bad = dict(p, version="3")
    st, j = env.post(bad)
    check(st == 400 and 'version "4"' in j["error"], "wrong payload version: 400 naming version 4")
    st, j = env.post(dict(p, version=4))
    check(st == 400, "version as a number: 400")
    st, j = env.post(dict(p, groupKey=""))
    check(st == 400 and "groupKey" in j["error"], "empty groupKey: 400")
    st, j = env.post(dict(p, alerts=[]))
    check(st == 400 and "alerts" in j["error"], "no alerts: 400")
    a = alert("g-auth", marker=m)
    del a["labels"]
    st, j = env.post(dict(p, alerts=[a]))
    check(st == 400 and "missing labels" in j["error"], "alert without labels: 400 (missing labels)")
    a = alert("g-auth", marker=m)
    del a["labels"]["tenant"]
    st, j = env.post(dict(p, alerts=[a]))
    check(st == 400 and "'tenant'" in j["error"], "alert without the tenant label: 400 naming it")
    a = alert("g-auth", marker=m)
    del a["labels"]["service"]
    st, j = env.post(dict(p, alerts=[a]))
    check(st == 400 and "'service'" in j["error"] and "svc" in j["error"],
          "alert without a param's label: 400 naming label and param")
    a = alert("g-auth", marker=m, service="a\nb")
    st, j = env.post(dict(p, alerts=[a]))
    check(st == 400, "control character in a label value: 400")
    a = alert("g-auth", marker=m)
    a["status"] = "weird"
    st, j = env.post(dict(p, alerts=[a]))
    check(st == 400, "unknown alert status: 400")
    # huge bodies: refused from the Content-Length, before the body is read
    resp = raw(env, b"POST /v1/alertmanager HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " +
               TOKEN.encode() + b"\r\nContent-Length: 100000000\r\n\r\n")
    check(status_of(resp) == 413, "a 100 MB Content-Length: 413 without reading it")
    big = json.dumps(dict(p, commonAnnotations={"x": "y" * 70000}))
    st, j = env.post(big)
    check(st == 413, "a 70 KiB body over max_body_kb = 64: 413 (%s)" % st)
    resp = raw(env, b"POST /v1/alertmanager HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
    check(status_of(resp) == 411, "chunked body: 411")
    resp = raw(env, b"GET /healthz HTTP/1.1\r\n" + b"X-Pad: " + b"a" * 20000 + b"\r\n\r\n")
    check(status_of(resp) == 431, "a 20 KB header: 431")
    resp = raw(env, b"POST /v1/alertmanager HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!")
    check(status_of(resp) == 400, "conflicting Content-Length: 400")
    resp = raw(env, b"GET /healthz HTTP/2.0\r\n\r\n")
    check(status_of(resp) == 505, "HTTP/2.0 request line: 505")
    resp = raw(env, b"GARBAGE\r\n\r\n")
    check(status_of(resp) == 400, "garbage request line: 400")
    resp = raw(env, b"GET /healthz HTTP/1.1\r\n folded: x\r\n\r\n")
    check(status_of(resp) == 400, "obsolete line folding: 400")
    st, j = env.request("GET", "/nope")
    check(st == 404, "unknown path: 404")
    st, j = env.request("GET", "/v1/alertmanager")
    check(st == 405, "GET on the webhook: 405")
    # a slow client does not hold the server: another request is answered meanwhile
    s = socket.create_connection(("127.0.0.1", env.port))
    s.sendall(b"POST /v1/alertmanager HTTP/1.1\r\nContent-Length: 100\r\n\r\n{")
    st, j = env.request("GET", "/healthz")
    check(st == 200, "a half-sent request does not block others")
    s.close()
    # nothing above ran anything
    check(env.metrics()["rbl_serve_runs_started_total"] == 0, "no bad request started a run")
    check(env.metrics()["rbl_serve_requests_unauthorized_total"] >= 6, "401s are counted")
    # unknown tenant: recorded and refused
    st, j = env.post(payload("g-unk", [alert("g-unk", tenant="t9", marker=m)]))
    check(st == 403 and j["results"][0]["decision"] == "refused" and "unknown tenant" in j["results"][0]["reason"],
          "unknown tenant: 403, refused, reason given")
    st, j = env.post(payload("g-unk2", [alert("g-unk2", tenant="../../etc", marker=m)]))
    check(st == 403, "a path as tenant: 403")
    mt = env.metrics()
    check(mt['rbl_serve_alerts_refused_total{reason="unknown_tenant"}'] == 2, "unknown tenants counted")
    spool = open(os.path.join(env.dir, "spool", "spool.log")).read()
    check('"k":"refuse"' in spool and '"tenant":"t9"' in spool, "the refusal is recorded in the spool")
    # an unrouted alert is recorded, 200, nothing runs
    a = alert("g-x", marker=m)
    a["labels"]["alertname"] = "Other"
    st, j = env.post(payload("g-x", [a]))
    check(st == 200 and j.get("unrouted") == 1, "an alert no route matches: 200, unrouted")
    a = alert("g-x2", marker=m, severity="warning")
    st, j = env.post(payload("g-x2", [a]))
    check(st == 200 and j.get("unrouted") == 1, "match_re is anchored and must hold (severity=warning)")
    check(env.metrics()["rbl_serve_runs_started_total"] == 0, "still nothing ran")
    # keep-alive and pipelining: two requests in one write, two answers in order
    resp = raw(env, b"GET /healthz HTTP/1.1\r\n\r\nGET /metrics HTTP/1.1\r\nConnection: close\r\n\r\n")
    check(resp.count(b"HTTP/1.1 200") == 2 and b"rbl_serve_runs_started_total" in resp,
          "two pipelined requests on one connection are both answered")
    env.stop()
    return env


def test_once():
    env = Env(RBL, serve_extra="max_concurrent = 4,",
              route_extra="cooldown = 2, max_runs_per_hour = 6, concurrency = 2")
    env.start()
    m = env.marker
    # one group, sent three times while its run is in flight: one run
    p = payload("g1", [alert("g1", marker=m, sleep="1")])
    st, j1 = env.post(p)
    check(st == 200 and j1["results"][0]["decision"] == "accepted", "first firing: accepted")
    inc = j1["results"][0]["incident"]
    st, j2 = env.post(p)
    st3, j3 = env.post(p)
    check(j2["results"][0]["decision"] == "deduplicated" and j3["results"][0]["decision"] == "deduplicated",
          "re-sends while in flight: deduplicated")
    check(j2["results"][0]["incident"] == inc, "incident id stable across re-sends")
    check(j2["results"][0]["run"] == j1["results"][0]["run"], "dedup names the run in flight")
    # the same group with another alert added is the same incident
    p2 = payload("g1", [alert("g1", marker=m, sleep="1"), alert("g1", marker=m, svc="db")])
    st, j = env.post(p2)
    check(j["results"][0]["incident"] == inc and j["results"][0]["decision"] == "deduplicated",
          "a grown group keeps its incident and is deduplicated")
    env.wait_idle()
    st, j = env.post(p)
    check(j["results"][0]["decision"] == "deduplicated" and "cooldown" in j["results"][0]["reason"],
          "within the cooldown after the run: deduplicated")
    time.sleep(2.2)
    st, j = env.post(p)
    check(j["results"][0]["decision"] == "accepted", "after the cooldown: a new run")
    env.wait_idle()
    marks = [x for x in env.marks() if x[0] == "g1"]
    check(len(marks) == 2, "group g1 ran exactly twice (once, then after the cooldown): %d" % len(marks))
    # per-target lock: two groups, same tenant + runbook, never at once
    pa = payload("ga", [alert("ga", marker=m, sleep="1")])
    pb = payload("gb", [alert("gb", marker=m, sleep="1")])
    t0 = time.time()
    env.post(pa)
    env.post(pb)
    # another tenant runs alongside (concurrency 2)
    pc = payload("gc", [alert("gc", tenant="t2", marker=m, sleep="1")])
    env.post(pc)
    time.sleep(0.5)
    j = env.runs()
    running = [r for r in j["runs"] if r["state"] == "running"]
    check(sorted(r["tenant"] for r in running) == ["t1", "t2"],
          "one run per tenant+runbook at once; the other tenant runs alongside")
    env.wait_idle()
    byid = {r["incident"]: r for r in env.runs()["runs"]}
    ra = [r for r in env.runs()["runs"] if r["params"].get("group") in ("ga", "gb")]
    ra.sort(key=lambda r: r["started_at"])
    check(len(ra) == 2 and ra[1]["started_at"] >= ra[0]["ended_at"] - 0.01,
          "the second t1 run started after the first ended (target lock)")
    # the brake: max_runs_per_hour = 6 (g1 twice, ga, gb, gc: 5 so far)
    st, j = env.post(payload("gd", [alert("gd", marker=m)]))
    check(st == 200, "sixth run of the hour: accepted")
    st, j = env.post(payload("ge", [alert("ge", marker=m)]))
    check(st == 429 and "max_runs_per_hour" in j["results"][0]["reason"], "seventh: 429, the brake holds")
    mt = env.metrics()
    check(mt['rbl_serve_alerts_refused_total{reason="max_runs_per_hour"}'] == 1, "brake refusals counted")
    env.wait_idle()
    # resolved: recorded; the route's resolved_runbook runs once
    r = payload("gd", [alert("gd", marker=m, status="resolved")])
    st, j = env.post(r)
    check(st == 200 and j["results"][0]["decision"] == "resolved" and "run" in j["results"][0],
          "resolved: recorded, the resolved runbook accepted")
    st, j = env.post(r)
    check(j["results"][0]["decision"] == "resolved" and "run" not in j["results"][0],
          "a re-sent resolved notification runs nothing again")
    env.wait_idle()
    check(["resolved", "gd"] in env.marks(), "the resolved runbook ran")
    check(env.metrics()["rbl_serve_alerts_resolved_total"] == 2, "resolved alerts counted")
    # metrics add up
    mt = env.metrics()
    parts = (mt["rbl_serve_alerts_accepted_total"] + mt["rbl_serve_alerts_deduplicated_total"] +
             mt["rbl_serve_alerts_resolved_total"] + mt["rbl_serve_alerts_unrouted_total"] +
             sum(v for k, v in mt.items() if k.startswith("rbl_serve_alerts_refused_total")))
    check(parts == mt["rbl_serve_alerts_received_total"], "received = accepted + dedup + resolved + unrouted + refused")
    check(mt["rbl_serve_runs_started_total"] == mt["rbl_serve_runs_succeeded_total"] + mt["rbl_serve_runs_failed_total"],
          "every started run ended, succeeded or failed")
    check(mt["rbl_serve_run_duration_seconds_count"] == mt["rbl_serve_runs_started_total"],
          "the duration histogram counts every run")
    check(mt['rbl_serve_run_duration_seconds_bucket{le="+Inf"}'] == mt["rbl_serve_run_duration_seconds_count"],
          "histogram +Inf bucket = count")
    # each bucket holds exactly the runs whose start-to-exit time (as /v1/runs reports it) fits
    durs = [r["ended_at"] - r["started_at"] for r in env.runs()["runs"] if "started_at" in r]
    les = [1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600]
    got = [mt['rbl_serve_run_duration_seconds_bucket{le="%g"}' % le] for le in les]
    want = [sum(1 for d in durs if d <= le) for le in les]
    check(got == want and want[0] < want[-1], "histogram buckets match the runs' durations (%s vs %s)" % (got, want))
    check(abs(mt["rbl_serve_run_duration_seconds_sum"] - sum(durs)) < 0.01, "histogram sum = the durations' sum")
    # each run is a child rbl run with its own chain and report
    run0 = env.runs()["runs"][0]
    rep = json.load(open(run0["report"]))
    check(rep.get("outcome") == "resolved" and rep.get("incident", run0["incident"]) == run0["incident"],
          "the child's report is written where /v1/runs says")
    check(env.verify_chains() == [], "every chain verifies")
    starts = [r for r in env.chain_records() if r["kind"] == "run_start"]
    check(all(r["tenants"] in (["t1"], ["t2"]) for r in starts), "each child run is bound to its tenant")
    env.stop()
    return env


def test_pause_and_sigterm():
    env = Env(RBL, serve_extra="drain_timeout = 3,", route_extra="cooldown = 0, max_runs_per_hour = 100, concurrency = 4")
    env.start()
    m = env.marker
    st, j = env.request("POST", "/v1/pause", {"by": "alice", "reason": "automation misbehaves"})
    check(st == 200 and j["paused"], "pause: 200")
    st, j = env.post(payload("p1", [alert("p1", marker=m)]))
    check(st == 200 and j["results"][0]["decision"] == "accepted", "paused: alerts are still accepted")
    time.sleep(0.5)
    check(env.runs()["queued"] == 1 and env.marks() == [], "paused: nothing starts")
    check(env.metrics()["rbl_serve_paused"] == 1, "paused gauge")
    # paused survives a restart (recorded in the spool)
    check(env.stop() == 0, "SIGTERM while idle: exit 0")
    env.start()
    check(env.runs()["paused"] and env.runs()["queued"] == 1, "restart keeps the pause and the queued run")
    st, j = env.request("POST", "/v1/resume", {"by": "bob"})
    check(st == 200 and not j["paused"], "resume: 200")
    env.wait_idle()
    check([x[0] for x in env.marks()] == ["p1"], "after resume the queued run ran once")
    chain = [json.loads(l) for l in open(os.path.join(env.dir, "spool", "serve.jsonl"))]
    kinds = [(r["kind"], r.get("by")) for r in chain]
    check(("pause", "alice") in kinds and ("resume", "bob") in kinds, "pause and resume are on serve's chain with who")
    # SIGTERM with a run in flight: it finishes within the deadline; a queued one stays in the spool
    env.request("POST", "/v1/pause", {"by": "t"})
    env.post(payload("s2", [alert("s2", tenant="t1", marker=m)]))
    env.request("POST", "/v1/resume", {"by": "t"})
    env.post(payload("s1", [alert("s1", tenant="t2", marker=m, sleep="1.5")]))
    time.sleep(0.3)
    j = env.runs()
    env.request("POST", "/v1/pause", {"by": "t"})
    env.post(payload("s3", [alert("s3", tenant="t1", marker=m)]))
    t0 = time.time()
    env.proc.send_signal(signal.SIGTERM)
    time.sleep(0.2)
    try:
        st, j = env.post(payload("s4", [alert("s4", marker=m)]))
        refused = st == 503
    except OSError:
        refused = True
    check(refused, "after SIGTERM new alerts are refused (503 or the listener is closed)")
    rc = env.proc.wait(30)
    env.proc = None
    check(rc == 0, "drained and exited 0")
    groups = [x[0] for x in env.marks()]
    check("s1" in groups, "the run in flight finished before exit")
    check("s3" not in groups, "the queued run did not start during the drain")
    env.start()
    env.request("POST", "/v1/resume", {"by": "t"})
    env.wait_idle()
    check([x[0] for x in env.marks()].count("s3") == 1, "the queued run starts after the restart, once")
    # a run that outlives the drain deadline is interrupted, recorded, not re-run
    st, j = env.post(payload("s5", [alert("s5", tenant="t2", marker=m, sleep="30")]))
    s5id = j["results"][0]["run"]
    end = time.time() + 60  # until the run is running (keyed on its state, not a sleep)
    while time.time() < end and not any(r["id"] == s5id and r["state"] == "running" for r in env.runs()["runs"]):
        time.sleep(0.1)
    t_term = time.time()
    env.proc.send_signal(signal.SIGTERM)
    rc = env.proc.wait(40)
    took = time.time() - t_term
    env.proc = None
    check(rc == 0, "a long run is interrupted at the drain deadline; exit 0")
    # the deadline holds both ways: the run got drain_timeout (3 s), and serve did not wait for its
    # 30 s (SIGINT at the deadline, a hard stop 15 s later at most)
    check(2.9 <= took < 3 + 15 + 5, "SIGTERM to exit took %.1f s: drain_timeout 3 s, then the interrupt" % took)
    env.start()
    j = env.wait_idle()
    s5 = [r for r in j["runs"] if r["params"].get("group") == "s5"]
    check(len(s5) == 1 and s5[0]["outcome"] in ("failed", "interrupted"),
          "the interrupted run is recorded as ended, not re-run: %s" % (s5 and s5[0].get("outcome")))
    check(env.verify_chains() == [], "every chain verifies")
    env.stop()


def test_hostile_spool():
    env = Env(RBL, route_extra="cooldown = 0, max_runs_per_hour = 100")
    env.start()
    env.request("POST", "/v1/pause", {"by": "t"})
    m = env.marker
    for g in ("h1", "h2", "h3"):
        env.post(payload(g, [alert(g, marker=m)]))
    env.stop()
    path = os.path.join(env.dir, "spool", "spool.log")
    lines = open(path, "rb").read().split(b"\n")[:-1]
    # lines: pause, accept h1, accept h2, accept h3 (plus notes none)
    acc = [i for i, l in enumerate(lines) if b'"k":"accept"' in l]
    check(len(acc) == 3, "three accepted runs in the spool")
    h2 = bytearray(lines[acc[1]])
    h2[-5] ^= 0x01  # one flipped bit inside the JSON
    lines[acc[1]] = bytes(h2)
    from servelib import TOKEN as _t  # noqa
    import hashlib
    import re
    forged_json = re.sub(rb'"seq":[0-9]+', b'"seq":2', lines[acc[2]].split(b" ", 1)[1]).replace(b"h3", b"h9")
    lines.append(hashlib.sha256(forged_json).hexdigest().encode() + b" " + forged_json)  # seq not increasing
    evil = b'{"k":"accept","run":"../../etc/x","incident":"i","tenant":"t1","route":"svc","params":{},"t":1,"seq":999}'
    lines.append(hashlib.sha256(evil).hexdigest().encode() + b" " + evil)  # path in a run id
    lines.append(b"garbage line without a checksum")
    data = b"\n".join(lines) + b"\n" + b"0123456789abcdef" * 3  # a torn tail
    open(path, "wb").write(data)
    env.start()
    err = env.stderr()
    mt = env.metrics()
    check(mt["rbl_serve_spool_refused_entries_total"] == 5,
          "5 bad entries refused (flipped bit, replayed seq, path id, garbage, torn tail): %d" %
          mt["rbl_serve_spool_refused_entries_total"])
    check("checksum mismatch" in err and "torn entry" in err and "not increasing" in err,
          "each refusal names its cause on stderr")
    chain = open(os.path.join(env.dir, "spool", "serve.jsonl")).read()
    check(chain.count('"spool_refused"') == 5, "each refusal is recorded on serve's chain")
    env.request("POST", "/v1/resume", {"by": "t"})
    env.wait_idle()
    groups = sorted(x[0] for x in env.marks())
    check(groups == ["h1", "h3"], "the intact entries ran, the damaged one did not: %s" % groups)
    check(not os.path.exists("/etc/x.json"), "no file outside the spool")
    env.stop()
    # the spool was compacted: a second restart reads it clean
    env.start()
    check(env.metrics()["rbl_serve_spool_refused_entries_total"] == 0, "the rewritten spool reads back clean")
    env.stop()
    # a started run whose chain does not verify: never re-run on its word, marked interrupted
    env.start()
    env.request("POST", "/v1/pause", {"by": "t"})
    st, j = env.post(payload("h5", [alert("h5", marker=m)]))
    run_id, inc = j["results"][0]["run"], j["results"][0]["incident"]
    env.stop()
    import hashlib, re
    data = open(path, "rb").read()
    seq = max(int(x) for x in re.findall(rb'"seq":([0-9]+)', data)) + 1
    start = b'{"k":"start","run":"%s","t":%f,"seq":%d}' % (run_id.encode(), time.time(), seq)
    open(path, "ab").write(hashlib.sha256(start).hexdigest().encode() + b" " + start + b"\n")
    chain = os.path.join(env.dir, "spool", "audit", inc + ".jsonl")
    open(chain, "w").write('{"kind":"run_start","run":"x","argv":["%s"]}\n' %
                           os.path.join(env.dir, "spool", "runs", run_id + ".json"))
    env.start()
    env.request("POST", "/v1/resume", {"by": "t"})
    time.sleep(0.5)
    j = env.wait_idle()
    h5 = [r for r in j["runs"] if r["id"] == run_id]
    check(h5 and h5[0]["outcome"] == "interrupted", "a run whose chain does not verify is marked interrupted")
    check("h5" not in [x[0] for x in env.marks()], "and is not re-run")
    check("does not verify" in env.stderr(), "the replay says the chain does not verify")
    env.stop()
    # a spool locked by another serve: refused
    env.start()
    other = Env(RBL)
    other.dir, other.port, other.url = env.dir, env.port + 1, "127.0.0.1:%d" % (env.port + 1)
    p = other.start(wait=False)
    rc = p.wait(20)
    check(rc == 2 and "in use by another rbl serve" in other.stderr(), "a second serve on one spool exits 2")
    env.stop()


def max_overlap(runs):
    ev = []
    for r in runs:
        ev.append((r["started_at"], 1))
        ev.append((r["ended_at"], -1))
    cur = best = 0
    for _, d in sorted(ev, key=lambda x: (x[0], x[1])):
        cur += d
        best = max(best, cur)
    return best


def test_limits():
    tenants = ("t1", "t2", "t3", "t4", "t5", "t6")
    for serve_extra, conc, want, what in (("max_concurrent = 2,", 5, 2, "the global max_concurrent"),
                                          ("max_concurrent = 8,", 3, 3, "the route's concurrency")):
        env = Env(RBL, serve_extra=serve_extra, route_extra="cooldown = 0, max_runs_per_hour = 100, concurrency = %d" % conc,
                  tenants=tenants)
        env.start()
        for i, t in enumerate(tenants):
            g = "l%d" % i
            st, j = env.post(payload(g, [alert(g, tenant=t, marker=env.marker, sleep="0.8")]))
            assert j["results"][0]["decision"] == "accepted", j
        runs = env.wait_idle()["runs"]
        check(len(runs) == 6 and all(r["outcome"] == "succeeded" for r in runs), "six runs of six tenants succeeded")
        check(max_overlap(runs) == want, "%s holds: at most %d at once (saw %d)" % (what, want, max_overlap(runs)))
        env.stop()


def test_audit_key():
    import subprocess
    env = Env(RBL, serve_extra='audit_key = "audit.key",', route_extra="cooldown = 0, max_runs_per_hour = 100")
    kp = os.path.join(env.dir, "audit.key")
    fd = os.open(kp, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, os.urandom(32))
    os.close(fd)
    env.start()
    st, j = env.post(payload("ak", [alert("ak", marker=env.marker, sleep="3")]))
    time.sleep(1.0)
    env.proc.send_signal(signal.SIGKILL)  # mid-run: the restart reads the MAC'd chain back
    env.proc.wait()
    env.proc = None
    env.start()
    j = env.wait_idle()
    check(len(j["runs"]) == 1 and j["runs"][0]["outcome"] in ("failed", "interrupted"),
          "the run cut by kill -9 is found on its MAC'd chain and not re-run: %s" % j["runs"][0].get("outcome"))
    env.stop()
    recs = env.chain_records()
    check(recs and all("mac" in r for r in recs), "every record of the run's chain carries a MAC")
    serve_chain = os.path.join(env.dir, "spool", "serve.jsonl")
    check(all("mac" in json.loads(l) for l in open(serve_chain)), "so does serve's own chain")
    for p in env.chains() + [serve_chain]:
        r = subprocess.run([RBL, "audit", "verify", p, "--key", kp], capture_output=True, text=True)
        check(r.returncode == 0, "verifies with the key: %s" % os.path.basename(p))
    os.chmod(kp, 0o644)
    p = env.start(wait=True, expect_fail=True)
    p.wait(10)
    check(p.returncode == 2 and "serve.audit_key" in env.stderr() and "chmod 600" in env.stderr(),
          "a readable audit key: exit 2 with the fix")


def test_restart_policy():
    """A run cut mid-run with serve (node lost: serve and child both killed): on restart it is
    marked interrupted on its own chain; on_restart = "interrupt" does not run it again, "rerun"
    queues one new run of the incident on the same chain."""
    for policy in ("interrupt", "rerun"):
        env = Env(RBL, serve_extra='on_restart = "%s",' % policy, route_extra="cooldown = 0, max_runs_per_hour = 100")
        env.start()
        st, j = env.post(payload("rp", [alert("rp", marker=env.marker, sleep="12")]))
        rid, inc = j["results"][0]["run"], j["results"][0]["incident"]
        chainp = os.path.join(env.dir, "spool", "audit", inc + ".jsonl")
        end = time.time() + 90  # until the child has begun (its run_start) and made its mark
        while time.time() < end and not (env.marks() and os.path.exists(chainp)
                                         and '"run_start"' in open(chainp).read()):
            time.sleep(0.1)
        pid = [r for r in env.runs()["runs"] if r["id"] == rid][0]["pid"]
        os.kill(pid, signal.SIGSTOP)  # so the child cannot wind down when serve dies
        env.proc.send_signal(signal.SIGKILL)
        env.proc.wait()
        env.proc = None
        os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)
        env.start()
        final = env.wait_idle(timeout=120)
        runs = [r for r in final["runs"] if r["incident"] == inc]
        recs = [json.loads(l) for l in open(chainp) if l.strip()]
        marked = [r for r in recs if r["kind"] == "interrupted"]
        starts = [r for r in recs if r["kind"] == "run_start"]
        check(len(marked) == 1 and marked[0]["policy"] == policy and marked[0]["serve_run"] == rid,
              "on_restart = %s: the cut run is marked interrupted on its own chain" % policy)
        first = [r for r in runs if r["id"] == rid]
        check(first and first[0]["outcome"] == "interrupted", "on_restart = %s: its outcome is interrupted" % policy)
        if policy == "interrupt":
            check(len(runs) == 1 and len(starts) == 1 and len(env.marks()) == 1,
                  "on_restart = interrupt: not run again (%d runs, %d run_start)" % (len(runs), len(starts)))
        else:
            again = [r for r in runs if r["id"] != rid]
            check(len(again) == 1 and again[0]["state"] == "done" and len(starts) == 2 and len(env.marks()) == 2,
                  "on_restart = rerun: one new run of the incident on the same chain (%d runs, %d run_start)"
                  % (len(runs), len(starts)))
        check(env.verify_chains() == [], "on_restart = %s: every chain verifies" % policy)
        env.stop()


def test_compaction():
    env = Env(RBL, serve_extra="spool_compact_kb = 16,", route_extra="cooldown = 3600, max_runs_per_hour = 100")
    env.start()
    m = env.marker
    for g in ("k1", "k2"):
        env.post(payload(g, [alert(g, marker=m)]))
    env.wait_idle()
    env.request("POST", "/v1/pause", {"by": "t"})
    st, j = env.post(payload("k3", [alert("k3", marker=m)]))
    check(j["results"][0]["decision"] == "accepted", "k3 accepted while paused (queued)")
    c = http.client.HTTPConnection(env.url, timeout=30)
    for i in range(150):  # dedup notes grow the spool well past 16 KiB
        for g in ("k1", "k2", "k3"):
            st, j = env.post(payload(g, [alert(g, marker=m)]), conn=c)
            assert st == 200 and j["results"][0]["decision"] == "deduplicated", j
    size = os.path.getsize(os.path.join(env.dir, "spool", "spool.log"))
    check("spool compacted" in env.stderr(), "the spool was compacted while serving")
    check(size < 20 * 1024, "the spool stays near serve.spool_compact_kb: %d bytes" % size)
    env.stop()
    env.start()
    check(env.metrics()["rbl_serve_spool_refused_entries_total"] == 0, "the compacted spool reads back clean")
    for g in ("k1", "k2"):
        st, j = env.post(payload(g, [alert(g, marker=m)]))
        check(j["results"][0]["decision"] == "deduplicated", "%s: the cooldown survived compaction and restart" % g)
    env.request("POST", "/v1/resume", {"by": "t"})
    env.wait_idle()
    check(sorted(x[0] for x in env.marks()) == ["k1", "k2", "k3"], "the queued run survived compaction and ran once")
    env.stop()


def test_config_errors():
    import subprocess, tempfile
    env = Env(RBL)
    cfgp = os.path.join(env.dir, "cfg.lua")
    def run_cfg(text):
        open(cfgp, "w").write(text)
        r = subprocess.run([RBL, "serve", "--config", cfgp, "--listen", "127.0.0.1:1"], capture_output=True,
                           text=True, timeout=20)
        return r.returncode, r.stderr
    rc, err = run_cfg('return { tenants = {"t1"}, serve = { spool = "s", routes = {} } }')
    check(rc == 2 and "token_file is required" in err, "no token_file: exit 2 naming it")
    rc, err = run_cfg('return { serve = { token_file = "token", routes = {{ match = {a="b"}, runbook = "rb.lua" }} } }')
    check(rc == 2 and "tenants" in err, "no tenants list: exit 2")
    os.chmod(os.path.join(env.dir, "token"), 0o644)
    rc, err = run_cfg('return { tenants = {"t1"}, serve = { token_file = "token", routes = {{ match = {a="b"}, runbook = "rb.lua" }} } }')
    check(rc == 2 and "chmod 600" in err, "a world-readable token file: exit 2 with the fix")
    os.chmod(os.path.join(env.dir, "token"), 0o600)
    rc, err = run_cfg('return { tenants = {"t1"}, serve = { token_file = "token", routes = {{ match = {a="b"}, runbook = "missing.lua" }} } }')
    check(rc == 2 and "missing.lua" in err, "a missing runbook: exit 2 naming it")
    open(os.path.join(env.dir, "broken.lua"), "w").write("step 'x' { run = function( end }\n")
    rc, err = run_cfg('return { tenants = {"t1"}, serve = { token_file = "token", routes = {{ match = {a="b"}, runbook = "broken.lua" }} } }')
    check(rc == 2 and "broken.lua" in err and "rbl check" in err, "a runbook that fails rbl check: exit 2")
    rc, err = run_cfg('return { tenants = {"t1"}, serve = { token_file = "token", routes = {{ match = {a="b"}, runbook = "rb.lua", params = { nosuch = "x" } }} } }')
    check(rc == 2 and "declares no parameter 'nosuch'" in err and "svc" in err,
          "a route param the runbook does not declare: exit 2 naming it and the declared ones")
    rc, err = run_cfg('return { tenants = {"t1"}, serve = { token_file = "token", routes = {{ match_re = {a="(("}, runbook = "rb.lua" }} } }')
    check(rc == 2 and "match_re" in err, "a bad regex: exit 2")
    rc, err = run_cfg('return { tenants = {"t1"}, serve = { token_file = "token", routes = {{ runbook = "rb.lua" }} } }')
    check(rc == 2 and "at least one label" in err, "a route matching everything: exit 2")
    rc, err = run_cfg('return { tenants = {"t1"}, serve = { token_file = "token", max_concurrent = 0, routes = {{ match = {a="b"}, runbook = "rb.lua" }} } }')
    check(rc == 2 and "max_concurrent" in err, "max_concurrent = 0: exit 2")
    r = subprocess.run([RBL, "serve"], capture_output=True, text=True)
    check(r.returncode == 2 and "--config" in r.stderr, "no --config: exit 2")
    r = subprocess.run([RBL, "serve", "--config", cfgp, "--bogus"], capture_output=True, text=True)
    check(r.returncode == 2 and "--bogus" in r.stderr, "unknown option: exit 2")
    r = subprocess.run([RBL, "serve", "--help"], capture_output=True, text=True)
    check(r.returncode == 0 and "/v1/alertmanager" in r.stdout, "--help lists the endpoints")


PARAMS_RUNBOOK = r'''
runbook { id = "serve-params", params = {
  svc = { type = "string", required = true, description = "the service" },
  n = { type = "number", default = 1 },
  mode = { type = "string", choices = { "fast", "slow" }, default = "fast" },
  dry = { type = "boolean", default = false },
  marker = "none" } }
step "mark" {
  run = function(ctx)
    exec({ "/bin/sh", "-c", 'echo "$1 $2 $3 $4" >> "$5"', "sh", params.svc, tostring(params.n * 2),
           params.mode, tostring(params.dry), params.marker })
  end,
}
'''


def test_params():
    """Route params are checked against the runbook's declarations: at start (undeclared, or a
    required one the route does not map: exit 2) and per alert (type and choices: 400, nothing
    recorded or run); good values reach the run typed."""
    import subprocess
    env = Env(RBL)
    open(os.path.join(env.dir, "p.lua"), "w").write(PARAMS_RUNBOOK)
    cfgp = os.path.join(env.dir, "cfg.lua")

    def cfg(params):
        open(cfgp, "w").write("""return {
  tenants = { "t1" }, exec = { allow = { "/bin/sh" } },
  serve = { token_file = "token", spool = "spool",
    routes = { { name = "p", match = { alertname = "P" }, runbook = "p.lua", params = { %s },
                 cooldown = 0, max_runs_per_hour = 100 } } },
}""" % params)
    cfg('n = "n", marker = "marker"')
    r = subprocess.run([RBL, "serve", "--config", cfgp, "--listen", "127.0.0.1:1"], capture_output=True,
                       text=True, timeout=60)
    check(r.returncode == 2 and "requires the parameter 'svc'" in r.stderr and "params = { svc" in r.stderr,
          "a required runbook parameter the route does not map: exit 2 naming it and the fix")
    cfg('svc = "service", n = "n", mode = "mode", dry = "dry", marker = "marker"')
    env.start()

    def post(group, **labels):
        lab = {"alertname": "P", "tenant": "t1", "service": "api", "n": "3", "mode": "slow", "dry": "yes",
               "marker": env.marker}
        lab.update(labels)
        a = {"status": "firing", "labels": lab, "annotations": {}}
        return env.post({"version": "4", "groupKey": group, "status": "firing", "alerts": [a]})
    for labels, what in (({"n": "abc"}, "is not a number"), ({"n": "inf"}, "is not a number"),
                         ({"n": ""}, "is not a number"), ({"mode": "medium"}, "choices"),
                         ({"dry": "maybe"}, "is not a boolean")):
        st, j = post("bad-%s" % list(labels.values())[0], **labels)
        check(st == 400 and what in j["error"] and "label '%s'" % list(labels)[0] in j["error"],
              "label %s: 400 naming the label and why (%s)" % (labels, j.get("error")))
    mt = env.metrics()
    check(mt["rbl_serve_runs_started_total"] == 0 and mt["rbl_serve_alerts_received_total"] == 0,
          "a refused param value runs and counts nothing")
    st, j = post("good", n=" 0x10", mode="fast", dry="0")
    check(st == 200 and j["results"][0]["decision"] == "accepted", "good values (hex number, a choice): accepted")
    final = env.wait_idle()
    check(final["runs"][0]["outcome"] == "succeeded", "the run took them (%s)" % final["runs"][0]["outcome"])
    check(env.marks() == [["api", "32", "fast", "false"]], "the runbook saw them typed: %s" % env.marks())
    env.stop()


def test_tls():
    import ssl, subprocess
    env = Env(RBL, serve_extra='tls = { cert = "server.crt", key = "server.key" },',
              route_extra="cooldown = 0, max_runs_per_hour = 100")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", os.path.join(env.dir, "server.key"), "-out", os.path.join(env.dir, "server.crt")],
                   check=True, capture_output=True)
    env.tls_probe = True
    env.start()
    check("TLS" in env.stderr(), "serve says it listens with TLS")
    ctx = ssl.create_default_context(cafile=os.path.join(env.dir, "server.crt"))
    conn = http.client.HTTPSConnection("127.0.0.1", env.port, context=ctx, timeout=10)
    st, j = env.request("POST", "/v1/alertmanager", payload("tls1", [alert("tls1", marker=env.marker)]), conn=conn)
    check(st == 200 and j["results"][0]["decision"] == "accepted", "an alert over TLS is accepted")
    st, j = env.request("GET", "/v1/runs", conn=conn)
    check(st == 200 and len(j["runs"]) == 1, "keep-alive over TLS: a second request on the connection")
    big = json.dumps(payload("tls2", [alert("tls2", marker=env.marker)]) | {"commonAnnotations": {"x": "y" * 200000}})
    st, j = env.request("POST", "/v1/alertmanager", big, conn=conn)
    check(st == 200, "a 200 KB body over TLS (many records) is read whole")
    conn.close()
    resp = raw(env, b"GET /healthz HTTP/1.1\r\n\r\n")
    check(b"200 OK" not in resp, "plain HTTP to the TLS port gets no answer")
    bad = ssl.create_default_context()  # the system CAs do not know this certificate
    try:
        c2 = http.client.HTTPSConnection("127.0.0.1", env.port, context=bad, timeout=10)
        c2.request("GET", "/healthz")
        c2.getresponse()
        refused = False
    except ssl.SSLError:
        refused = True
    check(refused, "a client that does not trust the certificate fails the handshake")
    st, j = env.request("GET", "/healthz", conn=http.client.HTTPSConnection("127.0.0.1", env.port, context=ctx))
    check(st == 200, "the server still answers after a failed handshake")
    for _ in range(100):
        st, j = env.request("GET", "/v1/runs", conn=http.client.HTTPSConnection("127.0.0.1", env.port, context=ctx))
        if j["in_flight"] == 0 and j["queued"] == 0:
            break
        time.sleep(0.1)
    check(sorted(x[0] for x in env.marks()) == ["tls1", "tls2"], "both alerts sent over TLS ran")
    env.stop()
    os.unlink(os.path.join(env.dir, "server.key"))
    p = env.start(wait=True, expect_fail=True)
    p.wait(10)
    check(p.returncode == 2 and "serve.tls.key" in env.stderr(), "a missing key file: exit 2 naming serve.tls.key")


if __name__ == "__main__":
    which = sys.argv[2:] or ["config", "params", "receiving", "tls", "once", "limits", "pause", "spool", "restart", "compact",
                             "auditkey"]
    if "config" in which:
        test_config_errors()
    if "params" in which:
        test_params()
    if "receiving" in which:
        test_receiving_and_bad_input()
    if "tls" in which:
        test_tls()
    if "once" in which:
        test_once()
    if "limits" in which:
        test_limits()
    if "pause" in which:
        test_pause_and_sigterm()
    if "spool" in which:
        test_hostile_spool()
    if "restart" in which:
        test_restart_policy()
    if "compact" in which:
        test_compaction()
    if "auditkey" in which:
        test_audit_key()
    done()
