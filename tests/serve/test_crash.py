"""rbl serve under kill -9 at random moments while alerts pour in: no accepted alert lost, none
run twice, re-sends of accepted groups deduplicated across restarts, every chain verifies.
usage: test_crash.py RBL [ROUNDS]"""
import json, os, random, signal, sys, threading, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from servelib import Env, alert, payload, check, done

RBL = os.path.abspath(sys.argv[1])
ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 10
TENANTS = ("t1", "t2", "t3", "t4", "t5", "t6", "t7", "t8")

env = Env(RBL, serve_extra="max_concurrent = 4, max_queued = 100000,",
          route_extra="cooldown = 3600, max_runs_per_hour = 100000, concurrency = 4", tenants=TENANTS)
accepted = {}   # group -> incident (answered 200 accepted)
accepted_runs = {}  # run id -> group
posted = set()  # every group sent at least once
dedup_bad = []  # a re-send of an accepted group that was accepted again
lock = threading.Lock()
stop = threading.Event()
counter = [0]


def client(seed):
    rnd = random.Random(seed)
    while not stop.is_set():
        with lock:
            resend = bool(accepted) and rnd.random() < 0.3
            if resend:
                g = rnd.choice(sorted(accepted))
            else:
                counter[0] += 1
                g = "c%05d" % counter[0]
            posted.add(g)
        t = TENANTS[int(g[1:]) % len(TENANTS)]
        try:
            st, j = env.post(payload(g, [alert(g, tenant=t, marker=env.marker, sleep="0.1")]))
        except OSError:
            time.sleep(0.02)
            continue
        time.sleep(rnd.uniform(0.05, 0.25))  # about 25 alerts/s in all: runs keep up between kills
        if st != 200:
            continue
        r = j["results"][0]
        with lock:
            if r["decision"] == "accepted":
                if resend or g in accepted:
                    dedup_bad.append(g)
                accepted[g] = r["incident"]
                accepted_runs[r["run"]] = g


for rnd_no in range(ROUNDS):
    env.start()
    stop.clear()
    ts = [threading.Thread(target=client, args=(rnd_no * 10 + i,)) for i in range(4)]
    for t in ts:
        t.start()
    time.sleep(random.uniform(0.3, 1.8))
    env.proc.send_signal(signal.SIGKILL)  # kill -9 at a random moment under load
    env.proc.wait()
    env.proc = None
    stop.set()
    for t in ts:
        t.join()

env.start()
final = env.wait_idle(timeout=120)
env.stop()

check(len(accepted) >= ROUNDS, "alerts were accepted between the kills: %d groups" % len(accepted))
check(dedup_bad == [], "no re-send of an accepted group was accepted again: %s" % dedup_bad[:5])
runs = {}
for r in final["runs"]:
    runs.setdefault(r["params"]["group"], []).append(r)
final_ids = {r["id"] for r in final["runs"]}
lost = [(rid, g) for rid, g in accepted_runs.items() if rid not in final_ids]
check(lost == [], "every accepted run (by id) is known after the last restart: lost %s" % lost[:5])
if lost or dedup_bad:
    print(env.dir)
    for g in dedup_bad[:3]:
        print(g, [(rid) for rid, gg in accepted_runs.items() if gg == g], [r for r in final["runs"] if r["params"]["group"] == g])
twice = [g for g, rs in runs.items() if len(rs) > 1]
check(twice == [], "no group has two runs: %s" % twice[:5])
not_done = [g for g, rs in runs.items() if rs[0]["state"] != "done"]
check(not_done == [], "every run ended")
# by effect: the chains (run_start per group) and the runbook's own mark
starts = {}
for rec in env.chain_records():
    if rec["kind"] == "run_start":
        starts[rec["incident"]] = starts.get(rec["incident"], 0) + 1
missing = [g for g, inc in accepted.items() if starts.get(inc, 0) == 0]
check(missing == [], "every accepted group's chain has a run_start: missing %s" % missing[:5])
multi = [inc for inc, n in starts.items() if n > 1]
check(multi == [], "no chain has two run_starts (none run twice): %s" % multi[:5])
marks = {}
for m in env.marks():
    marks[m[0]] = marks.get(m[0], 0) + 1
check(all(n == 1 for n in marks.values()), "the runbook's effect happened at most once per group")
outcomes = {}
for g, rs in runs.items():
    outcomes[rs[0]["outcome"]] = outcomes.get(rs[0]["outcome"], 0) + 1
print("groups posted %d, accepted %d, outcomes %s" % (len(posted), len(accepted), outcomes))
check(set(outcomes) <= {"succeeded", "failed", "interrupted"}, "outcomes are succeeded, failed (canceled by the kill) or interrupted")
interrupted = [g for g, rs in runs.items() if rs[0]["outcome"] == "interrupted"]
recs = env.chain_records()
marked = {r["serve_run"] for r in recs if r["kind"] == "interrupted"}
check(all(runs[g][0]["id"] in marked for g in interrupted), "each interrupted run is marked on its own chain")
bad = env.verify_chains()
check(bad == [], "every chain verifies: %s" % bad[:2])
done()
