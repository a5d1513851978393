#!/usr/bin/env python3
"""Approvals end to end (issue 14 item 2) with the real rbl binary: approve() and a step's
approve field, `rbl approve` through the socket beside the chain (peer uid recorded),
approvers = n distinct people, --deny, --yes, the timeout failing closed with rollback, the
terminal path through a pty (typing the tenant's name; a wrong name; "no"), the confirmation
of several tenants on a terminal, the report's approvals and human_intervention_required, and
every chain verifying. usage: test_approvals.py path/to/rbl"""
import hashlib, json, os, pty, select, socket, stat, subprocess, sys, tempfile, time

RBL = os.path.realpath(sys.argv[1])
W = tempfile.mkdtemp(prefix="rbl-approvals.")
os.chdir(W)
passed = failed = 0


def check(what, cond, detail=""):
    global passed, failed
    if cond:
        passed += 1
        print("ok - " + what)
    else:
        failed += 1
        print("not ok - " + what + (("\n    # " + str(detail)[:2000].replace("\n", "\n    # ")) if detail else ""))


with open("cfg.lua", "w") as f:
    f.write('return { tenants = { "t1", "t2" } }\n')

RB = """runbook { id = "approvals" }
step "one" { run = function() log("one ran") end, rollback = function() log("undo one") end }
step "two" { approve = { message = "restart the api", approvers = %d, timeout = %d },
  run = function() log("two ran") end }
"""


def write_rb(name, approvers=1, timeout=20, text=None):
    with open(name, "w") as f:
        f.write(text if text is not None else RB % (approvers, timeout))


def start(rb, inc, *extra):
    return subprocess.Popen([RBL, "run", rb, "--tenant", "t1", "--config", "cfg.lua", "--incident", inc,
                             "--report", inc + ".json"] + list(extra), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True)


def wait_request(inc, n=1, timeout=15, path=None):
    # the request is recorded once the socket listens (bind, listen, then the record)
    path = path or "audit/%s.jsonl" % inc
    t0 = time.time()
    while time.time() - t0 < timeout:
        if os.path.exists(path) and sum(1 for l in open(path) if '"approval_request"' in l) >= n:
            return True
        time.sleep(0.05)
    return False


def approve(inc, *args):
    return subprocess.run([RBL, "approve", "audit/%s.jsonl" % inc] + list(args), capture_output=True, text=True)


def records(inc, kind):
    return [json.loads(l) for l in open("audit/%s.jsonl" % inc) if '"kind":"%s"' % kind in l]


def verify(inc):
    return subprocess.run([RBL, "audit", "verify", "audit/%s.jsonl" % inc], capture_output=True).returncode == 0


# 1. two distinct approvers through the socket
write_rb("two.lua", approvers=2)
p = start("two.lua", "A2")
check("the run asks (approval_request recorded)", wait_request("A2"))
a1 = approve("A2", "--as", "alice")
check("alice approves: exit 0, shows the request", a1.returncode == 0 and "restart the api" in a1.stdout and "tenant t1" in a1.stdout, a1)
a2 = approve("A2", "--as", "alice")
check("alice again is refused: n distinct people", a2.returncode == 1 and "distinct people" in a2.stderr, a2)
a3 = approve("A2", "--as", "bob", "--reason", "looks right")
out, _ = p.communicate(timeout=30)
check("bob's approval completes it; the run resolves", a3.returncode == 0 and p.returncode == 0, out + a3.stdout + a3.stderr)
rep = json.load(open("A2.json"))
check("report approvals: granted by alice and bob", rep["approvals"][0]["outcome"] == "granted"
      and rep["approvals"][0]["approved_by"] == ["alice", "bob"], rep.get("approvals"))
check("human_intervention_required: a person approved", rep["human_intervention_required"] is True)
grants = records("A2", "approval_grant")
check("each grant is an audit record with who, the peer uid and the channel",
      [g["by"] for g in grants] == ["alice", "bob"] and all(g.get("uid") == os.getuid() and g.get("via") == "socket" for g in grants), grants)
check("the reason is recorded", grants[1].get("reason") == "looks right")
check("step two ran after the approval", "two ran" in out)
check("the socket is gone after the run", not [n for n in os.listdir("audit") if n.endswith(".approve")])
check("chain verifies", verify("A2"))

# 2. a denial fails the step closed and rolls back
write_rb("one.lua", approvers=1)
p = start("one.lua", "D1")
check("asks", wait_request("D1"))
d = approve("D1", "--deny", "--as", "carol", "--reason", "not during the sale")
out, _ = p.communicate(timeout=30)
check("denied: exit 1", p.returncode == 1 and d.returncode == 0, out + d.stdout + d.stderr)
rep = json.load(open("D1.json"))
two = [e for e in rep["execution_trace"] if e["name"] == "two"][0]
check("the step failed with approval_denied, naming who", two["status"] == "failed" and two.get("error_code") == "approval_denied"
      and "carol" in two.get("detail", ""), two)
check("rollback ran (step one undone)", "undo one" in out and [e for e in rep["execution_trace"] if e["name"] == "one"][0]["status"] == "rolled_back", out)
check("two did not run", "two ran" not in out)
check("the denial is an audit record", records("D1", "approval_denial")[0]["by"] == "carol")
check("report: denied, human needed", rep["approvals"][0]["outcome"] == "denied" and rep["human_intervention_required"] is True)
check("chain verifies", verify("D1"))

# 3. nobody answers: the timeout fails closed
write_rb("to.lua", approvers=1, timeout=1)
p = start("to.lua", "T1")
out, _ = p.communicate(timeout=30)
rep = json.load(open("T1.json"))
two = [e for e in rep["execution_trace"] if e["name"] == "two"][0]
check("no TTY, no --yes, nobody: exit 1, approval_timeout", p.returncode == 1 and two.get("error_code") == "approval_timeout", out)
check("rollback ran", "undo one" in out)
check("the timeout is an audit record", len(records("T1", "approval_timeout")) == 1)
check("human_intervention_required: a person was needed", rep["human_intervention_required"] is True)

# 4. --yes approves as the invoking user, recorded as such
p = start("one.lua", "Y1", "--yes")
out, _ = p.communicate(timeout=30)
g = records("Y1", "approval_grant")
import pwd
me = pwd.getpwuid(os.getuid()).pw_name
check("--yes: resolves at once", p.returncode == 0, out)
check("--yes: recorded as the invoking user, via --yes", len(g) == 1 and g[0]["by"] == me and g[0]["via"] == "--yes", g)
p = start("two.lua", "Y2", "--yes")
check("--yes with approvers = 2 still waits for one more person", wait_request("Y2"))
time.sleep(0.5)
check("(still running)", p.poll() is None)
a = approve("Y2", "--as", "dave")
out, _ = p.communicate(timeout=30)
check("dave completes it", p.returncode == 0 and a.returncode == 0, out + a.stderr)

# 5. approve() as a primitive, and no pending request
write_rb("prim.lua", text="""runbook { id = "prim" }
step "s" { run = function() approve("flush the cache", { timeout = 20 }) log("flushed") end }
""")
p = start("prim.lua", "P1")
check("approve() asks", wait_request("P1"))
a = approve("P1")
out, _ = p.communicate(timeout=30)
check("approve(): granted as the caller's user, run resolves", p.returncode == 0 and "flushed" in out
      and records("P1", "approval_grant")[0]["by"] == me, out + a.stderr)
n = approve("P1")
check("rbl approve with no run waiting: exit 1, says so", n.returncode == 1 and "no run is waiting" in n.stderr, n)

# 6. a plan binds what the approver sees: the plan hash is shown and recorded
write_rb("plan.lua", text="""runbook { id = "planned" }
step "s" { approve = "go", run = function() exec({ "true" }) end }
""")
with open("cfg2.lua", "w") as f:
    f.write('return { tenants = { "t1" }, exec = { allow = { "true" } } }\n')
r = subprocess.run([RBL, "run", "plan.lua", "--tenant", "t1", "--config", "cfg2.lua", "--incident", "PL",
                    "--dry-run", "--plan-out", "plan.json", "--report", "PLd.json"], capture_output=True, text=True)
rep = json.load(open("PLd.json"))
check("dry run: approvals are not asked, reported would_ask", r.returncode == 0 and rep["approvals"][0]["outcome"] == "would_ask", r.stderr)
ph = json.load(open("plan.json"))["plan_hash"]
p = subprocess.Popen([RBL, "run", "plan.lua", "--tenant", "t1", "--config", "cfg2.lua", "--plan", "plan.json",
                      "--report", "PL.json"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True)
check("the plan's run asks", wait_request("PL", 2))
a = approve("PL")
out, _ = p.communicate(timeout=30)
check("rbl approve shows the plan hash and the planned change", ph in a.stdout and "exec program" in a.stdout, a.stdout)
g = [x for x in records("PL", "approval_grant")]
check("the grant records the plan hash the approver saw", g and g[-1].get("plan_hash_seen") == ph, g)
check("run resolves", p.returncode == 0, out)


# 7. the terminal: type the tenant's name (through a pty)
def run_pty(args, answers, timeout=30):
    pid, fd = pty.fork()
    if pid == 0:
        os.execv(RBL, [RBL] + args)
    buf, t0, sent = b"", time.time(), 0
    while time.time() - t0 < timeout:
        r, _, _ = select.select([fd], [], [], 0.2)
        if r:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            buf += chunk
        while sent < len(answers) and buf.count(answers[sent][0].encode()) > sum(1 for a in answers[:sent] if a[0] == answers[sent][0]):
            os.write(fd, answers[sent][1].encode() + b"\r")
            sent += 1
    done, status = os.waitpid(pid, os.WNOHANG)
    if done == 0:  # still running after the time given: stop it (a REPL waiting for input)
        os.kill(pid, 9)
        _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), buf.decode(errors="replace")


code, out = run_pty(["run", "one.lua", "--tenant", "t1", "--config", "cfg.lua", "--incident", "TTY1", "--report", "TTY1.json"],
                    [("to approve", "t2"), ("to approve", "t1")])
check("tty: a wrong name is not taken; the tenant's name approves", code == 0 and "is not the tenant's name" in out and "two ran" in out, out)
check("tty: the prompt shows the tenant, the incident, the step and the planned change",
      "tenant t1  incident TTY1  step two" in out and "planned change: not planned" in out, out)
g = records("TTY1", "approval_grant")
check("tty: recorded as the invoking user, via tty", len(g) == 1 and g[0]["by"] == me and g[0]["via"] == "tty", g)
code, out = run_pty(["run", "one.lua", "--tenant", "t1", "--config", "cfg.lua", "--incident", "TTY2", "--report", "TTY2.json"],
                    [("to approve", "no")])
check("tty: 'no' denies; the step fails closed", code == 1 and json.load(open("TTY2.json"))["approvals"][0]["outcome"] == "denied", out)

# 8. several tenants on a terminal: asked once before the run
write_rb("multi.lua", text="""runbook { id = "multi" }
step "s" { run = function() each_tenant(function(t) log("ran for %s", t) end) end }
""")
code, out = run_pty(["run", "multi.lua", "--tenant", "t*", "--config", "cfg.lua", "--incident", "M1", "--report", "M1.json"],
                    [("to run for all", "nope")])
m1 = [json.loads(l) for l in open("audit/M1.jsonl")] if os.path.exists("audit/M1.jsonl") else []
check("a glob on a terminal asks first; anything but yes: exit 1, nothing ran",
      code == 1 and "t1, t2" in out and "ran for" not in out and not [r for r in m1 if r["kind"] in ("step", "intent", "log")], out)
check("the question and the 'no' are in the chain, right after run_start: who, uid, which tenants",
      [r["kind"] for r in m1] == ["run_start", "approval_request", "approval_denial", "run_end"]
      and m1[1]["tenants"] == ["t1", "t2"] and m1[1]["request"] == 0
      and (m1[2]["by"], m1[2]["uid"], m1[2]["via"], m1[2]["tenants"]) == (me, os.getuid(), "tty", ["t1", "t2"])
      and m1[3]["exit_code"] == 1, m1)
rep = json.load(open("M1.json"))
check("the report's approvals list the denied question; human intervention required",
      rep["approvals"][0]["outcome"] == "denied" and rep["approvals"][0]["denied_by"] == me
      and rep["approvals"][0]["tenants"] == ["t1", "t2"] and rep["approvals"][0]["request"] == 0
      and rep["human_intervention_required"] is True and rep["outcome"] == "failed", rep)
code, out = run_pty(["run", "multi.lua", "--tenant", "t*", "--config", "cfg.lua", "--incident", "M2", "--report", "M2.json"],
                    [("to run for all", "yes")])
check("'yes' runs it for every tenant", code == 0 and "ran for t1" in out and "ran for t2" in out, out)
m2 = [json.loads(l) for l in open("audit/M2.jsonl")]
check("the 'yes' is in the chain before anything ran: approval_request, approval_grant by the user",
      [r["kind"] for r in m2[:3]] == ["run_start", "approval_request", "approval_grant"]
      and (m2[2]["by"], m2[2]["uid"], m2[2]["via"], m2[2]["tenants"]) == (me, os.getuid(), "tty", ["t1", "t2"]), m2[:4])
rep = json.load(open("M2.json"))
check("the report's approvals list the granted question first",
      rep["approvals"][0]["outcome"] == "granted" and rep["approvals"][0]["approved_by"] == [me]
      and rep["human_intervention_required"] is True, rep.get("approvals"))
code, out = run_pty(["run", "multi.lua", "--tenant", "t1", "--tenant", "t2", "--config", "cfg.lua", "--incident", "M4"],
                    [("to run for all", "yes")])
check("two --tenant names on a terminal ask too, and are recorded", code == 0 and "t1, t2" in out
      and [json.loads(l)["kind"] for l in open("audit/M4.jsonl")][1:3] == ["approval_request", "approval_grant"], out)
code, out = run_pty(["run", "multi.lua", "--tenant", "t*", "--config", "cfg.lua", "--incident", "M3", "--yes"], [])
check("--yes does not ask, and records no question", code == 0 and "to run for all" not in out
      and not [l for l in open("audit/M3.jsonl") if '"request":0' in l], out)

# 9. rbl repl: each write asks on the terminal unless the session started with --yes
code, out = run_pty(["repl", "--tenant", "t1", "--config", "cfg2.lua", "--audit", "repl1.jsonl"],
                    [("@ run-", 'r = exec({"true"}).exit_code'), ("to approve", "t1"), ("@ run-", 'print("code", r)')],
                    timeout=8)
check("repl on a terminal: the write asks, the tenant's name lets it run", "to approve" in out and "code\t0" in out, out)
p = subprocess.run([RBL, "repl", "--tenant", "t1", "--config", "cfg2.lua", "--audit", "repl2.jsonl"],
                   input='exec({"true"})\n', capture_output=True, text=True)
check("repl without a terminal or --yes: the write is refused, nothing spawned",
      "approval_denied" in p.stderr and not [l for l in open("repl2.jsonl") if '"kind":"intent"' in l and '"exec"' in l], p.stderr)
p = subprocess.run([RBL, "repl", "--tenant", "t1", "--config", "cfg2.lua", "--audit", "repl3.jsonl", "--yes"],
                   input='exec({"true"}).exit_code\n', capture_output=True, text=True)
check("repl --yes: writes run without asking", p.stdout.strip() == "0" and "approve" not in p.stderr, p.stdout + p.stderr)

# 10. the socket (docs/approvals.md, "The socket protocol"): beside the chain, owner only; the
#     protocol by hand; a plan hash that differs is refused; a line over 8 KiB gets no reply;
#     the /tmp path for a long chain path; rbl approve talks only to a socket the chain's owner
#     holds (someone else may bind the predictable /tmp path first)
def sock_send(s, f, line):
    s.sendall(line.encode() + b"\n")
    return json.loads(f.readline())


write_rb("sock.lua", approvers=1, timeout=20)
p = start("sock.lua", "S1")
check("socket run asks", wait_request("S1"))
sp = os.path.join(W, "audit", ".S1.jsonl.approve")
st = os.stat(sp)
check("the socket is beside the chain, a socket, the owner's only",
      stat.S_ISSOCK(st.st_mode) and st.st_mode & 0o077 == 0 and st.st_uid == os.getuid(), oct(st.st_mode))
s = socket.socket(socket.AF_UNIX)
s.connect(sp)
f = s.makefile("r")
stt = sock_send(s, f, '{"op": "status"}')
pend = stt.get("pending") or [{}]
check("status: the incident and the pending request", stt.get("ok") is True and stt.get("incident") == "S1"
      and pend[0].get("id") == 1 and pend[0].get("tenant") == "t1" and pend[0].get("step") == "two", stt)
s2 = socket.socket(socket.AF_UNIX)
s2.connect(sp)
s2.sendall(b"x" * 9000)
s2.settimeout(10)
try:
    closed = s2.recv(100) == b""
except ConnectionResetError:
    closed = True
check("a line over 8 KiB: the connection is closed without a reply", closed)
s2.close()
a = sock_send(s, f, '{"op": "approve", "as": "erin", "reason": "by hand"}')
check("approve without an id (one pending): granted", a.get("ok") is True and a.get("decision") == "approved"
      and a.get("outcome") == "granted" and a.get("by") == "erin", a)
s.close()
out, _ = p.communicate(timeout=30)
g = records("S1", "approval_grant")
check("the run resolves; the grant records erin, the peer's uid, via socket", p.returncode == 0 and g
      and g[0]["by"] == "erin" and g[0]["uid"] == os.getuid() and g[0]["via"] == "socket", out + str(g))
check("the socket is removed when the run ends", not os.path.exists(sp))

p = subprocess.Popen([RBL, "run", "plan.lua", "--tenant", "t1", "--config", "cfg2.lua", "--plan", "plan.json",
                      "--audit", "PL2.jsonl", "--report", "PL2.json"], stdout=subprocess.PIPE,
                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True)
wait_request(None, path="PL2.jsonl")
s = socket.socket(socket.AF_UNIX)
s.connect(".PL2.jsonl.approve")
f = s.makefile("r")
a = sock_send(s, f, '{"op": "approve", "id": 1, "as": "erin", "plan_hash": "sha256:%s"}' % ("0" * 64))
check("an answer with another plan hash is refused", a.get("ok") is False and "plan changed" in a.get("error", ""), a)
a = sock_send(s, f, '{"op": "approve", "id": 1, "as": "erin", "plan_hash": "%s"}' % ph)
check("the same answer with the plan's hash is granted", a.get("ok") is True and a.get("outcome") == "granted", a)
s.close()
out, _ = p.communicate(timeout=30)
check("the planned run resolves", p.returncode == 0, out)

deep = os.path.join(W, "d" * 60, "e" * 60)
os.makedirs(deep)
chain = os.path.join(deep, "L1.jsonl")
fallback = "/tmp/rbl-approve-" + hashlib.sha256(os.path.realpath(chain).encode()).hexdigest()[:16]
p = subprocess.Popen([RBL, "run", "sock.lua", "--tenant", "t1", "--config", "cfg.lua", "--audit", chain],
                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True)
wait_request(None, path=chain)
st = os.stat(fallback) if os.path.exists(fallback) else None
check("a long chain path: the socket is /tmp/rbl-approve-<16 hex of the SHA-256 of the chain's real path>, owner only",
      st is not None and stat.S_ISSOCK(st.st_mode) and st.st_mode & 0o077 == 0, fallback)
a = subprocess.run([RBL, "approve", chain, "--as", "frank"], capture_output=True, text=True)
out, _ = p.communicate(timeout=30)
check("rbl approve finds it there; the run resolves", a.returncode == 0 and p.returncode == 0, a.stderr + out)

if os.getuid() == 0:
    # another user binds the /tmp path of a chain first and plays a waiting run
    chain = os.path.join(deep, "L2.jsonl")
    open(chain, "w").close()
    os.chmod(chain, 0o600)
    fake = "/tmp/rbl-approve-" + hashlib.sha256(os.path.realpath(chain).encode()).hexdigest()[:16]
    if os.path.exists(fake):
        os.unlink(fake)
    got = os.path.join(W, "fake-got")
    faker = subprocess.Popen(["python3", "-c", r"""
import os, socket, sys
path, got = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_UNIX); s.bind(path); s.listen(1); print("ready", flush=True)
c, _ = s.accept(); data = c.recv(65536)
try:
    c.sendall(b'{"ok": true, "incident": "L2", "run": "r", "pending": [{"id": 1, "message": "FAKE", "tenant": "t1", "step": "two", "approvers": 1, "approved_by": []}]}\n')
    data += c.recv(65536)
except OSError:
    pass  # rbl approve hung up at once: as it should
open(got, "wb").write(data)
""", fake, got], stdout=subprocess.PIPE, text=True, preexec_fn=lambda: (os.setgid(65534), os.setuid(65534)))
    faker.stdout.readline()
    os.chmod(deep, 0o777)  # so uid 65534 may write what it received
    os.chmod(W, 0o777)
    a = subprocess.run([RBL, "approve", chain, "--as", "gina"], capture_output=True, text=True)
    check("rbl approve refuses a socket held by another uid than the chain's owner: exit 1, nothing shown or sent",
          a.returncode == 1 and "not the run's approval socket" in a.stderr and "FAKE" not in a.stdout
          and not (os.path.exists(got) and b"approve" in open(got, "rb").read()), a.stdout + a.stderr)
    faker.kill()
    faker.wait()
    if os.path.exists(fake):
        os.unlink(fake)
else:
    print("# not root: the foreign-socket case needs a second uid; not run, not counted")

for inc in ["A2", "D1", "T1", "Y1", "Y2", "P1", "PL", "TTY1", "TTY2", "M1", "M2", "M4"]:
    check("chain %s verifies" % inc, verify(inc))
print("# %d passed, %d failed" % (passed, failed))
sys.exit(1 if failed else 0)
