#!/usr/bin/env python3
"""Engine benchmarks (issue 2 and 3): rbl run on a 10-step no-op runbook, the yield/resume round
trip, peak RSS of a 1000-coroutine each, and audited calls per second with group commit.
usage: bench/engine_bench.py [build-dir]"""
import os, resource, statistics, subprocess, sys, tempfile, time

B = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "build")
RBL = os.path.join(B, "rbl")
tmp = tempfile.mkdtemp(prefix="rbl-bench-", dir=os.environ.get("RBL_BENCH_DIR", "/var/tmp"))


def write(name, text):
    p = os.path.join(tmp, name)
    open(p, "w").write(text)
    return p


def rbl(path, audit, *extra):
    t0 = time.perf_counter()
    p = subprocess.run([RBL, "run", path, "--tenant", "bench", "--incident", "BENCH", "--audit", audit,
                        "--quiet", *extra], capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        sys.exit("bench run failed: " + p.stderr)
    return dt


noop = write("noop10.lua", 'runbook { id = "noop10" }\n' +
             "".join('step "s%d" { run = function(ctx) end }\n' % i for i in range(10)))
times = []
for i in range(40):
    times.append(rbl(noop, os.path.join(tmp, "noop-%d.jsonl" % i)))
base = []
for i in range(40):
    t0 = time.perf_counter()
    subprocess.run(["/bin/true"])
    base.append(time.perf_counter() - t0)
m, b = statistics.median(times), statistics.median(base)
print("rbl run, 10-step no-op runbook (audit on disk, fsync): median %.2f ms, p90 %.2f ms over %d runs (goal <= 5 ms)"
      % (m * 1e3, sorted(times)[int(len(times) * 0.9)] * 1e3, len(times)))
print("  process start baseline (/bin/true, same run): median %.2f ms; rbl beyond it: %.2f ms" % (b * 1e3, (m - b) * 1e3))

print(subprocess.run([os.path.join(B, "bench_yield"), "1000000"], capture_output=True, text=True).stdout.strip())

fan = write("fan.lua", 'local l = {} for i = 1, 1000 do l[i] = i end\n'
            'each(l, function(i) sleep(0.2) end, { concurrency = 1000 })\n')
before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
rbl(fan, os.path.join(tmp, "fan.jsonl"))
rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print("peak RSS of a 1000-coroutine each (1000 sleeping tasks at once): %.1f MiB" % (rss / 1024.0))

gc = write("gc.lua", 'local l = {} for i = 1, 1000 do l[i] = i end\n'
           'for r = 1, 5 do each(l, function(i) sleep(0) end, { concurrency = 1000 }) end\n')
calls = 5000
disk = min(rbl(gc, os.path.join(tmp, "gc-%d.jsonl" % i)) for i in range(3))
shm = "/dev/shm" if os.path.isdir("/dev/shm") else tmp
tmpfs = min(rbl(gc, os.path.join(shm, "rbl-gc-%d-%d.jsonl" % (os.getpid(), i))) for i in range(3))
for i in range(3):
    try: os.unlink(os.path.join(shm, "rbl-gc-%d-%d.jsonl" % (os.getpid(), i)))
    except OSError: pass
print("audited calls/s, 1000-way each of sleep(0), group commit: %.0f on disk, %.0f on tmpfs (goal >= 20000 on disk)"
      % (calls / disk, calls / tmpfs))
print("per-call overhead of the disk against tmpfs: %.2f us" % ((disk - tmpfs) / calls * 1e6))
