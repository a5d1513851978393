#!/usr/bin/env python3
"""Engine benchmarks, each a ratio against a peer or a limit measured in the same run:
  1. start-up: `rbl run` of a 10-step no-op runbook (audit on disk, with its syncs) against
     /bin/true, interleaved, medians of wall time (goal <= 4x) and of CPU time;
  2. the yield/resume round trip through the scheduler (bench_yield);
  3. memory: peak RSS of 10,000 tasks sleeping at once in one `each`, less the peak RSS of the
     no-op run, per task (goal <= 4 KiB);
  4. audit: records/s written under group commit by a 1000-way `each` of sleep(0), while two
     busy processes load both cores, against the disk's fdatasync rate measured just before
     (goal >= 20,000 records/s on disk).
usage: bench/engine_bench.py [build-dir] [runs]      (runs: start-up pairs, default 60; fewer
than 10 is the smoke pass CI runs: 1,000 tasks, one audit run)"""
import os, statistics, subprocess, sys, tempfile, time

B = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "build")
RUNS = int(sys.argv[2]) if len(sys.argv) > 2 else 60
RBL = os.path.join(B, "rbl")
tmp = tempfile.mkdtemp(prefix="rbl-bench-", dir=os.environ.get("RBL_BENCH_DIR", "/var/tmp"))


def write(name, text):
    p = os.path.join(tmp, name)
    open(p, "w").write(text)
    return p


def spawn(argv, rss=False):
    """-> wall seconds, CPU seconds (user + sys), peak RSS KiB of one child (rss=True: through
    GNU time, whose own small footprint is the floor; a child forked from this Python would
    count Python's pages, which its peak RSS keeps past exec)."""
    rss_file = os.path.join(tmp, "rss")
    if rss:
        argv = ["/usr/bin/time", "-f", "%M", "-o", rss_file] + argv
    t0 = time.perf_counter()
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, ru = os.wait4(p.pid, 0)
    dt = time.perf_counter() - t0
    err = p.stderr.read()
    p.stderr.close()
    p.returncode = status
    if status != 0:
        sys.exit("bench run failed: %s: %s" % (" ".join(argv), err.decode(errors="replace")[-2000:]))
    return dt, ru.ru_utime + ru.ru_stime, int(open(rss_file).read().split()[-1]) if rss else 0


def rbl(path, audit, *extra, rss=False):
    return spawn([RBL, "run", path, "--tenant", "bench", "--incident", "BENCH", "--audit", audit, "--quiet", *extra],
                 rss=rss)


# 1. start-up, interleaved with its peer
noop = write("noop10.lua", 'runbook { id = "noop10" }\n' +
             "".join('step "s%d" { run = function(ctx) end }\n' % i for i in range(10)))
r, t = [], []
for i in range(RUNS):
    t.append(spawn(["/bin/true"]))
    audit = os.path.join(tmp, "noop-%d.jsonl" % i)
    r.append(rbl(noop, audit))
    os.unlink(audit)
med = lambda xs, k: statistics.median(x[k] for x in xs)
print("start-up: rbl run of a 10-step no-op runbook (new audit file on disk, its syncs) vs /bin/true, %d interleaved pairs"
      % RUNS)
print("  wall: %.2f ms vs %.2f ms = %.2fx (goal <= 4x); CPU: %.2f ms vs %.2f ms = %.2fx"
      % (med(r, 0) * 1e3, med(t, 0) * 1e3, med(r, 0) / med(t, 0), med(r, 1) * 1e3, med(t, 1) * 1e3,
         med(r, 1) / max(med(t, 1), 1e-6)))
noop_rss = rbl(noop, os.path.join(tmp, "noop-rss.jsonl"), rss=True)[2]

# 2. the scheduler's round trip
print(subprocess.run([os.path.join(B, "bench_yield"), "1000000"], capture_output=True, text=True).stdout.strip())

# 3. memory per sleeping task
SMOKE = RUNS < 10
TASKS = 1000 if SMOKE else 10000
fan = write("fan.lua", 'local l = {} for i = 1, %d do l[i] = i end\n'
            'each(l, function(i) sleep(0.5) end, { concurrency = %d })\n' % (TASKS, TASKS))
_, _, rss = rbl(fan, os.path.join(tmp, "fan.jsonl"), rss=True)
print("memory: %d tasks sleeping at once: peak RSS %.1f MiB, no-op run %.1f MiB: %.2f KiB per task (goal <= 4 KiB)"
      % (TASKS, rss / 1024.0, noop_rss / 1024.0, (rss - noop_rss) / TASKS))

# 4. audit records/s under group commit, both cores loaded, against the disk's fsync rate
def fsync_rate(path, seconds=1.0):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        os.write(fd, b"x" * 300 + b"\n")
        os.fdatasync(fd)
        n += 1
    dt = time.perf_counter() - t0
    os.close(fd)
    os.unlink(path)
    return n / dt

gc = write("gc.lua", 'local l = {} for i = 1, 1000 do l[i] = i end\n'
           'for r = 1, 5 do each(l, function(i) sleep(0) end, { concurrency = 1000 }) end\n')
load = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
try:
    time.sleep(0.3)
    rate = fsync_rate(os.path.join(tmp, "fsync.probe"))
    runs = []
    for i in range(1 if SMOKE else 3):
        audit = os.path.join(tmp, "gc-%d.jsonl" % i)
        dt, cpu, _ = rbl(gc, audit)
        recs = sum(1 for _ in open(audit))
        os.unlink(audit)
        runs.append((recs / dt, recs, dt, cpu))
    best = sorted(runs)[len(runs) // 2]  # the median
finally:
    for p in load:
        p.kill()
        p.wait()
print("audit (median of %d runs), two busy processes loading both cores: %d records in %.2f s = %.0f records/s "
      "(goal >= 20000: %.2fx), %.0f times the disk's fdatasync rate (%.0f/s, measured just before: group commit); "
      "rbl's own CPU %.2f s = %.0f records per CPU-second"
      % (len(runs), best[1], best[2], best[0], best[0] / 20000, best[0] / rate, rate, best[3], best[1] / best[3]))
import shutil
shutil.rmtree(tmp, ignore_errors=True)
