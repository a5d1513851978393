#!/usr/bin/env python3
"""Crash suite: kill -9 rbl at random moments during a fan-out, many times. After every kill,
`rbl audit verify` exits 0, no result record lacks its intent, every exec effect that ran has a
durable intent, and a new run on the same incident appends a continuation that verifies.
usage: crash_suite.py RBL [ROUNDS]"""
import json, os, random, signal, subprocess, sys, tempfile, time

RBL = os.path.abspath(sys.argv[1])
ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 60
rng = random.Random(20261123)
d = tempfile.mkdtemp(prefix="rbl-crash-")
marks = os.path.join(d, "marks")
os.mkdir(marks)
runbook = os.path.join(d, "fan.lua")
with open(runbook, "w") as f:
    f.write("""
local l = {} for i = 1, 1500 do l[i] = i end
each(l, function(i)
  sleep(0.001 * (i %% 7))
  if i %% 25 == 0 then exec({"/usr/bin/touch", "%s/" .. incident .. "-" .. i}) end
  log("item %%d", i)
end, { concurrency = 64 })
""" % marks)
cfg = os.path.join(d, "cfg.lua")
with open(cfg, "w") as f:
    f.write('return { exec = { allow = { "/usr/bin/touch" } } }')


def verify(path):
    p = subprocess.run([RBL, "audit", "verify", path], capture_output=True, text=True)
    return p.returncode, p.stdout + p.stderr


def check_pairs(path, incident):
    """Every result has an intent before it; every mark file has a durable exec intent."""
    intents, problems = {}, []
    with open(path, "rb") as f:
        lines = f.read().split(b"\n")
    for raw in lines:
        try:
            r = json.loads(raw)
        except ValueError:
            continue  # a torn tail: verify judges it
        key = (r.get("run"), r.get("call"))
        if r.get("kind") == "intent":
            intents[key] = r
        elif r.get("kind") == "result" and key not in intents:
            problems.append("result without intent: %s" % (key,))
    exec_intents = sum(1 for r in intents.values() if r.get("prim") == "exec")
    effects = len([m for m in os.listdir(marks) if m.startswith(incident + "-")])
    if effects > exec_intents:
        problems.append("%d exec effects but only %d durable exec intents" % (effects, exec_intents))
    return problems


def holders_of(path):
    """The processes that have path open: (pid, command) pairs, from /proc."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            for fd in os.listdir("/proc/%s/fd" % pid):
                if os.readlink("/proc/%s/fd/%s" % (pid, fd)) == path:
                    found.append((int(pid), open("/proc/%s/comm" % pid).read().strip()))
                    break
        except OSError:
            pass
    return found


failures = mid_run = 0
for n in range(ROUNDS):
    incident = "CRASH-%03d" % n
    path = os.path.join(d, incident + ".jsonl")
    p = subprocess.Popen([RBL, "run", runbook, "--tenant", "t1", "--incident", incident, "--audit", path,
                          "--config", cfg, "--quiet"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # Kill when the chain has grown to a random size: mid-run by construction, at a random
    # record (and often mid-write), whatever the machine's speed.
    target = rng.randint(200, 600000)
    deadline = time.time() + 30
    while p.poll() is None and time.time() < deadline:
        try:
            if os.path.getsize(path) >= target:
                break
        except OSError:
            pass
        time.sleep(0.0005)
    p.send_signal(signal.SIGKILL)
    p.wait()
    problems = []
    if os.path.exists(path):
        rc, out = verify(path)
        if rc != 0:
            problems.append("verify after kill exited %d: %s" % (rc, out.strip()))
        if "unfinished" in out:
            mid_run += 1
        problems += check_pairs(path, incident)
        # The next run on the incident continues the same chain. A child rbl forked for an exec
        # just before the kill holds a copy of the chain's descriptor, and with it the flock,
        # until its exec closes it (O_CLOEXEC): on a loaded machine that can take a moment. So a
        # "locked" continuation is retried while the holder is such an orphan, for 5 s at most;
        # a lock that outlives that is a failure.
        for attempt in range(26):
            c = subprocess.run([RBL, "run", runbook, "--tenant", "t1", "--incident", incident, "--audit", path,
                                "--config", cfg, "--quiet"], capture_output=True, text=True, timeout=60)
            if c.returncode != 4 or "is locked by another run" not in c.stderr:
                break
            holders = holders_of(path)
            print("round %d: chain still locked after the kill, held by %s; retrying" % (n, holders or "nobody now"))
            time.sleep(0.2)
        if c.returncode != 0:
            problems.append("continuation run exited %d: %s" % (c.returncode, c.stderr.strip()[-300:]))
        rc, out = verify(path)
        if rc != 0:
            problems.append("verify after continuation exited %d: %s" % (rc, out.strip()))
        problems += check_pairs(path, incident)
    if problems:
        failures += 1
        print("FAIL round %d (%s): %s" % (n, incident, "; ".join(problems)))
print("crash suite: %d rounds, %d killed mid-run, %d failed" % (ROUNDS, mid_run, failures))
if mid_run < min(50, ROUNDS * 3 // 4):
    print("FAIL: too few kills landed mid-run (%d): the suite would prove nothing" % mid_run)
    failures += 1
sys.exit(1 if failures else 0)
