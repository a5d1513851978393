"""rbl serve: GET and POST /v1/runs/ID/approve (docs/serve.md, "Approvals over HTTP").
A run serve started that waits for approval is approved (or denied) over HTTP with a token from
serve.approve_tokens; the person and the token are recorded on the run's chain and report and on
serve's chain. Also: the webhook token cannot approve, wrong tokens are 401, unknown runs 404,
runs that do not wait 409, bad bodies 400/413, a socket not held by the run is not answered, and
the config refuses an approve token equal to the webhook token.
usage: test_approve.py RBL"""
import json, os, socket, subprocess, sys, threading, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from servelib import Env, TOKEN, alert, payload, check, done

RBL = os.path.abspath(sys.argv[1])
APPROVE = "approve-token-oncall-0123456789"
OTHER = "approve-token-lead-9876543210"

# prep writes and has a rollback; write asks for approval first. A denial fails the run closed:
# write never runs, prep is rolled back.
RUNBOOK = r'''
runbook { id = "serve-approve", params = { svc = "none", group = "none", marker = "none", sleep = "0" } }
step "prep" {
  run = function(ctx)
    exec({ "/bin/sh", "-c", 'echo "prep $1" >> "$2"; sleep "$3"', "sh", params.group, params.marker, params.sleep })
  end,
  rollback = function(ctx)
    exec({ "/bin/sh", "-c", 'echo "rollback $1" >> "$2"', "sh", params.group, params.marker })
  end,
}
step "write" {
  approve = { message = "restart " .. params.svc, timeout = 120 },
  run = function(ctx)
    exec({ "/bin/sh", "-c", 'echo "write $1" >> "$2"', "sh", params.group, params.marker })
  end,
}
'''


def secret_file(env, name, value):
    fd = os.open(os.path.join(env.dir, name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.write(fd, (value + "\n").encode())
    os.close(fd)


def make_env():
    env = Env(RBL, serve_extra='approve_tokens = { oncall = "approve.token", lead = "lead.token" },',
              route_extra="cooldown = 0, max_runs_per_hour = 100, concurrency = 4")
    with open(os.path.join(env.dir, "rb.lua"), "w") as f:
        f.write(RUNBOOK)
    secret_file(env, "approve.token", APPROVE)
    secret_file(env, "lead.token", OTHER)
    return env


def approve_url(run):
    return "/v1/runs/%s/approve" % run


def fire(env, group, sleep="0", tenant="t1"):
    st, j = env.post(payload(group, [alert(group, tenant=tenant, marker=env.marker, sleep=sleep)]))
    assert st == 200 and j["results"][0]["decision"] == "accepted", (st, j)
    return j["results"][0]["run"], j["results"][0]["incident"]


def wait_pending(env, run, timeout=120):
    """Until the run's approval request is visible over HTTP (keyed on the event, not a sleep)."""
    end = time.time() + timeout
    last = None
    while time.time() < end:
        st, j = env.request("GET", approve_url(run), token=APPROVE)
        last = (st, j)
        if st == 200 and j.get("pending"):
            return j
        time.sleep(0.2)
    raise RuntimeError("run %s never waited for approval: %s" % (run, last))


def run_of(env, run):
    for r in env.runs()["runs"]:
        if r["id"] == run:
            return r
    return None


def wait_done(env, run, timeout=120):
    end = time.time() + timeout
    while time.time() < end:
        r = run_of(env, run)
        if r and r["state"] == "done":
            return r
        time.sleep(0.2)
    raise RuntimeError("run %s did not end: %s" % (run, run_of(env, run)))


def chain(env, incident):
    with open(os.path.join(env.dir, "spool", "audit", incident + ".jsonl")) as f:
        return [json.loads(l) for l in f if l.strip()]


def serve_chain(env):
    with open(os.path.join(env.dir, "spool", "serve.jsonl")) as f:
        return [json.loads(l) for l in f if l.strip()]


def test_approve_and_deny():
    env = make_env()
    env.start()
    m = env.marker

    # --- approve: the run proceeds, the identity is recorded ---
    run, inc = fire(env, "g-ok")
    j = wait_pending(env, run)
    req = j["pending"][0]
    check(j["incident"] == inc and req["message"] == "restart api" and req["step"] == "write"
          and req["tenant"] == "t1", "GET shows what the run waits for (message, step, tenant)")
    # auth: only an approve token answers
    st, j = env.request("POST", approve_url(run), {"as": "mallory"}, token=TOKEN)
    check(st == 403 and "webhook token" in j["error"], "the webhook token cannot approve: 403 saying so")
    st, j = env.request("GET", approve_url(run), token=TOKEN)
    check(st == 403, "the webhook token cannot read approvals either: 403")
    st, j = env.request("POST", approve_url(run), {"as": "mallory"}, token="wrong-token-0123456789")
    check(st == 401 and "bearer" in j["error"], "a wrong token: 401")
    st, j = env.request("POST", approve_url(run), {"as": "mallory"}, token=None)
    check(st == 401, "no token: 401")
    st, j = env.request("POST", approve_url(run), {"as": "mallory"}, token=APPROVE + "x")
    check(st == 401, "an approve token with a suffix: 401")
    st, j = env.request("POST", "/v1/pause", {"by": "mallory"}, token=APPROVE)
    check(st == 401, "an approve token cannot pause (only GET /v1/runs besides approvals)")
    st, j = env.request("GET", "/v1/runs", token=APPROVE)
    check(st == 200 and any(r["id"] == run for r in j["runs"]), "an approve token lists the runs")
    # bad bodies: refused before anything is sent
    for body, what in ((b"[1]", "a JSON array"), (b"{", "broken JSON"),
                       ({"as": "a\nb"}, "a control character in as"), ({"as": ""}, "an empty as"),
                       ({"deny": "true"}, "deny as a string"), ({"id": 0}, "id 0"),
                       ({"plan_hash": "sha256:nothex"}, "a malformed plan_hash"),
                       ({"approve": True}, "an unknown field")):
        st, j = env.request("POST", approve_url(run), body, token=APPROVE)
        check(st == 400, "bad body (%s): 400 (%s)" % (what, j.get("error") if isinstance(j, dict) else j))
    st, j = env.request("POST", approve_url(run), {"as": "x", "reason": "y" * 9000}, token=APPROVE)
    check(st == 413, "a body over 8 KiB: 413 (%s)" % st)
    check(not any(x[0] == "write" for x in env.marks()), "nothing above let the step run")
    check(not any(r["kind"] in ("approval_grant", "approval_denial") for r in chain(env, inc)),
          "nothing above reached the run's chain")
    # the answer
    st, j = env.request("POST", approve_url(run), {"as": "alice", "reason": "checked the dashboard"},
                        token=APPROVE)
    check(st == 200 and j["decision"] == "approved" and j["by"] == "alice" and j["token"] == "oncall"
          and j["outcome"] == "granted", "POST approves: 200, by alice with token oncall, granted (%s)" % j)
    st, j = env.request("POST", approve_url(run), {"as": "bob"}, token=OTHER)
    check(st == 409, "a second answer after the decision: 409 (%s)" % j.get("error"))
    r = wait_done(env, run)
    check(r["outcome"] == "succeeded", "the approved run went on and succeeded")
    check(["write", "g-ok"] in env.marks(), "the approved step ran")
    grants = [x for x in chain(env, inc) if x["kind"] == "approval_grant"]
    g = grants[0] if grants else {}
    check(len(grants) == 1 and g.get("by") == "alice" and g.get("via") == "socket"
          and g.get("uid") == os.getuid() and g.get("reason") == "checked the dashboard"
          and g.get("forwarded", {}).get("by") == "rbl serve"
          and g.get("forwarded", {}).get("token") == "oncall"
          and g.get("forwarded", {}).get("serve_run") == run
          and g.get("forwarded", {}).get("peer", "").startswith("127.0.0.1:"),
          "the run's chain records alice, the token's name, the peer and serve (%s)" % g)
    rep = json.load(open(r["report"]))
    ap = (rep.get("approvals") or [{}])[0]
    check(ap.get("outcome") == "granted" and ap.get("approved_by") == ["alice"]
          and rep.get("human_intervention_required") is True,
          "the report names alice as the approver (%s)" % ap)
    sc = serve_chain(env)
    fwd = [x for x in sc if x["kind"] == "approval_forward" and x.get("serve_run") == run]
    res = [x for x in sc if x["kind"] == "approval_forwarded" and x.get("serve_run") == run]
    # the second answer may have found the run already ended (409 before anything is forwarded)
    check(len(fwd) in (1, 2) and fwd[0]["as"] == "alice" and fwd[0]["token"] == "oncall"
          and fwd[0]["decision"] == "approve" and fwd[0]["reason"] == "checked the dashboard",
          "serve's chain records each answer before it is forwarded (%d)" % len(fwd))
    check(len(res) == len(fwd) and res[0].get("outcome") == "granted" and res[0]["status"] == 200
          and all(x["status"] == 409 for x in res[1:]), "and each one's result, granted or refused (409)")
    st, j = env.request("POST", approve_url(run), {}, token=APPROVE)
    check(st == 409 and "done" in j["error"], "a run that ended: 409 (%s)" % j.get("error"))

    # --- deny: the step fails closed, rollback runs ---
    run2, inc2 = fire(env, "g-no")
    wait_pending(env, run2)
    st, j = env.request("POST", approve_url(run2), {"deny": True, "reason": "not during the sale"},
                        token=OTHER)
    check(st == 200 and j["decision"] == "denied" and j["by"] == "lead" and j["outcome"] == "denied",
          "POST deny without as: recorded as the token's name (%s)" % j)
    r2 = wait_done(env, run2)
    check(r2["outcome"] == "failed", "the denied run failed closed (%s)" % r2["outcome"])
    marks = env.marks()
    check(["rollback", "g-no"] in marks and ["write", "g-no"] not in marks,
          "the denied step never ran; the step before it was rolled back")
    den = [x for x in chain(env, inc2) if x["kind"] == "approval_denial"]
    check(len(den) == 1 and den[0]["by"] == "lead" and den[0]["forwarded"]["token"] == "lead"
          and den[0]["reason"] == "not during the sale", "the denial is on the run's chain")
    rep = json.load(open(r2["report"]))
    check((rep.get("failure") or {}).get("reason", "").find("denied by lead") >= 0,
          "the report's failure names the denial (%s)" % rep.get("failure"))

    # --- the same run can be answered on the host with rbl approve (issue 12: either way) ---
    run5, inc5 = fire(env, "g-cli")
    wait_pending(env, run5)
    r = subprocess.run([RBL, "approve", os.path.join(env.dir, "spool", "audit", inc5 + ".jsonl"), "--as", "dave"],
                       capture_output=True, text=True, timeout=60)
    check(r.returncode == 0 and "approved by dave" in r.stdout, "rbl approve answers a run serve started (%s)" % r.stderr)
    check(wait_done(env, run5)["outcome"] == "succeeded", "and the run goes on")
    g5 = [x for x in chain(env, inc5) if x["kind"] == "approval_grant"]
    check(len(g5) == 1 and g5[0]["by"] == "dave" and "forwarded" not in g5[0], "recorded as dave, not forwarded")

    # --- unknown run, not waiting, queued ---
    st, j = env.request("POST", approve_url("sr-nosuch"), {}, token=APPROVE)
    check(st == 404, "an unknown run: 404")
    st, j = env.request("POST", "/v1/runs/../approve", {}, token=APPROVE)
    check(st in (400, 404), "a path-like id: refused (%d)" % st)
    run3, inc3 = fire(env, "g-slow", sleep="15")
    end = time.time() + 60
    while time.time() < end and (run_of(env, run3) or {}).get("state") != "running":
        time.sleep(0.1)
    st, j = env.request("POST", approve_url(run3), {"as": "alice"}, token=APPROVE)
    check(st == 409 and "not waiting" in j["error"], "a running run that has not asked: 409 (%s)" % j.get("error"))
    # --- a socket at the run's place not held by the run: nothing is sent to it ---
    chainp = os.path.join(env.dir, "spool", "audit", inc3 + ".jsonl")
    end = time.time() + 60
    while time.time() < end and not os.path.exists(chainp):
        time.sleep(0.1)
    sockp = os.path.join(os.path.dirname(chainp), "." + os.path.basename(chainp) + ".approve")
    got = []
    fake = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    ok = True
    try:
        fake.bind(sockp)
        fake.listen(4)
    except OSError:
        ok = False  # the run asked already (it unlinks a stale socket when it binds its own)

    def serve_fake():
        fake.settimeout(10)
        try:
            c, _ = fake.accept()
            c.settimeout(5)
            while True:
                line = c.recv(65536)
                if not line:
                    break
                got.append(line)
                c.sendall(json.dumps({"ok": True, "incident": inc3, "run": "x", "pending": [
                    {"id": 1, "message": "fake", "approvers": 1, "approved_by": []}]}).encode() + b"\n")
        except OSError:
            pass
    if ok:
        t = threading.Thread(target=serve_fake)
        t.start()
        st, j = env.request("POST", approve_url(run3), {"as": "alice"}, token=APPROVE)
        t.join()
        check(st == 502 and "not by run" in j["error"] and not any(b'"approve"' in x for x in got),
              "a socket another process holds: 502, no answer sent to it (%s)" % j.get("error"))
        fake.close()
        os.unlink(sockp)
    else:
        check(False, "could not place the fake socket before the run asked")
    st, j = env.request("POST", "/v1/pause", {"by": "test"})
    run4, _ = fire(env, "g-queued", tenant="t2")  # another tenant: not behind g-slow's target lock
    st, j = env.request("POST", approve_url(run4), {"as": "alice"}, token=APPROVE)
    check(st == 409 and "queued" in j["error"], "a queued run: 409 saying queued")
    env.request("POST", "/v1/resume", {"by": "test"})
    wait_pending(env, run4)  # once resumed it starts and asks; nobody else will answer it
    st, j = env.request("POST", approve_url(run4), {"as": "alice", "deny": True, "id": 1}, token=APPROVE)
    check(st == 200 and j["outcome"] == "denied", "the once-queued run, now asking, is denied by id")

    # the slow run asks after its sleep; approving it still works
    wait_pending(env, run3)
    st, j = env.request("POST", approve_url(run3), {"as": "carol", "id": 1}, token=APPROVE)
    check(st == 200 and j["outcome"] == "granted", "the real run is approved after the fake socket went away")
    wait_done(env, run3)
    env.wait_idle()
    check(env.verify_chains() == [], "every chain verifies, serve's included")
    env.stop()


def test_config():
    env = make_env()
    secret_file(env, "approve.token", TOKEN)
    p = env.start(wait=True, expect_fail=True)
    p.wait(20)
    check(p.returncode == 2 and "same token as serve.token_file" in env.stderr(),
          "an approve token equal to the webhook token: exit 2 saying why")
    secret_file(env, "approve.token", OTHER)
    p = env.start(wait=True, expect_fail=True)
    p.wait(20)
    check(p.returncode == 2 and "hold the same token" in env.stderr(),
          "two approve names with one token: exit 2")
    secret_file(env, "approve.token", APPROVE)
    os.chmod(os.path.join(env.dir, "approve.token"), 0o644)
    p = env.start(wait=True, expect_fail=True)
    p.wait(20)
    check(p.returncode == 2 and "chmod 600" in env.stderr(), "a readable approve token file: exit 2")
    # without approve_tokens the endpoint is off, and says how to turn it on
    env2 = Env(RBL, route_extra="cooldown = 0, max_runs_per_hour = 100")
    env2.start()
    st, j = env2.request("POST", approve_url("sr-x"), {}, token=TOKEN)
    check(st == 403 and "serve.approve_tokens" in j["error"], "no approve_tokens: 403 naming the key")
    env2.stop()


if __name__ == "__main__":
    which = sys.argv[2:] or ["config", "approve"]
    if "config" in which:
        test_config()
    if "approve" in which:
        test_approve_and_deny()
    done()
