#!/usr/bin/env python3
"""Error budgets on fan-out (each / each_tenant with max_errors and ramp), with failures
injected at known positions: exact counts of started, failed and never-started items, from the
error object, the report's fanout entry and the chain (an item that starts makes one audited
sleep call; one that never starts makes none)."""
import json, os, subprocess, sys, tempfile, unittest

RBL = os.path.abspath(sys.argv.pop(1) if len(sys.argv) > 1 else "build/rbl")

# fail: set of failing positions; each item: log "start i after F" (F = items finished when it
# started), an audited sleep (the item's real work), then fail or succeed.
PROLOGUE = """
local fail = {}
for _, i in ipairs(%s) do fail[i] = true end
local finished = 0
local function item(i, t)
  log("start %%d after %%d", i, finished)
  sleep(%s)
  finished = finished + 1
  if fail[i] then error({ code = "unavailable", message = "item " .. i .. " down" }) end
  return i * 10
end
local list = {}
for i = 1, %d do list[i] = i end
"""


def run(src, tenants=("t1",)):
    d = tempfile.mkdtemp(prefix="rbl-fanout-")
    path = os.path.join(d, "rb.lua")
    with open(path, "w") as f:
        f.write('runbook { id = "fan" }\nstep "fan" { run = function(ctx)\n' + src + '\nend }\n')
    audit, report = os.path.join(d, "a.jsonl"), os.path.join(d, "r.json")
    cmd = [RBL, "run", path, "--audit", audit, "--report", report, "--incident", "INC-F"]
    for t in tenants:
        cmd += ["--tenant", t]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    with open(audit) as f:
        recs = [json.loads(l) for l in f]
    with open(report) as f:
        rep = json.load(f)
    v = subprocess.run([RBL, "audit", "verify", audit], capture_output=True, text=True)
    assert v.returncode == 0, v.stdout
    return p, recs, rep


def logs(recs):
    return [r["message"] for r in recs if r["kind"] == "log"]


def starts(recs):
    return [int(m.split()[1]) for m in logs(recs) if m.startswith("start ")]


def after(recs):
    return {int(m.split()[1]): int(m.split()[3]) for m in logs(recs) if m.startswith("start ")}


class Budget(unittest.TestCase):
    def budget_run(self, fail, n, opts, sleep="0.01", catch=True):
        body = PROLOGUE % ("{" + ",".join(map(str, fail)) + "}", sleep, n)
        if catch:
            body += ('local ok, e = pcall(each, list, item, %s)\n'
                     'if ok then log("returned") else log("error %%s|%%s|%%s|%%s|%%s", e.code, tostring(e.failed), '
                     'tostring(e.not_started), tostring(e.started), e.message) end' % opts)
        else:
            body += 'each(list, item, %s)' % opts
        return run(body)

    def outcome(self, recs):
        line = [m for m in logs(recs) if m.startswith("error ") or m == "returned"][0]
        if line == "returned":
            return None
        code, failed, not_started, started, msg = line[6:].split("|", 4)
        return code, int(failed), int(not_started), int(started), msg

    def test_sequential_stops_after_the_budget_is_exceeded(self):
        p, recs, rep = self.budget_run([3, 5, 7], 10, "{ concurrency = 1, max_errors = 1 }")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(starts(recs), [1, 2, 3, 4, 5])
        code, failed, not_started, started, msg = self.outcome(recs)
        self.assertEqual((code, failed, not_started, started), ("unavailable", 2, 5, 5))
        self.assertIn("2 of 10 failed (max_errors 1), 5 never started, 3 succeeded", msg)
        sleeps = [r for r in recs if r["kind"] == "intent" and r["prim"] == "sleep"]
        self.assertEqual(len(sleeps), 5, "items never started made no call")
        fan = rep["execution_trace"][0]["fanout"][0]
        self.assertEqual({k: fan[k] for k in ("items", "started", "failed", "succeeded", "not_started", "max_errors")},
                         {"items": 10, "started": 5, "failed": 2, "succeeded": 3, "not_started": 5, "max_errors": 1})

    def test_in_flight_items_finish_after_the_budget_is_spent(self):
        # concurrency 3: 1 and 2 fail at once; 1's failure (within budget) starts 4; 2's spends it;
        # 3 and 4 are in flight and finish; 5..10 never start
        src_sleep = "(fail[i] and 0 or 0.2)"
        p, recs, rep = self.budget_run([1, 2], 10, "{ concurrency = 3, max_errors = 1 }", sleep=src_sleep)
        self.assertEqual(starts(recs), [1, 2, 3, 4])
        code, failed, not_started, started, msg = self.outcome(recs)
        self.assertEqual((failed, not_started, started), (2, 6, 4))
        results = [r for r in recs if r["kind"] == "result" and r["prim"] == "sleep"]
        self.assertEqual(len(results), 4, "the in-flight items ran to their end")
        self.assertTrue(all(r["status"] == "ok" for r in results))

    def test_within_the_budget_returns_results_and_errors(self):
        body = PROLOGUE % ("{4, 8}", "0", 10) + (
            'local res, errs = each(list, item, { concurrency = 4, max_errors = 2 })\n'
            'log("res %s %s %s err %s %s", tostring(res[1]), tostring(res[4]), tostring(res[10]), '
            'errs[4].code, tostring(errs[5]))')
        p, recs, rep = run(body)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("res 10 nil 100 err unavailable nil", logs(recs))
        fan = rep["execution_trace"][0]["fanout"][0]
        self.assertEqual((fan["started"], fan["failed"], fan["not_started"]), (10, 2, 0))

    def test_uncaught_budget_error_fails_the_step(self):
        p, recs, rep = self.budget_run([1], 5, "{ concurrency = 1, max_errors = 0 }", catch=False)
        self.assertEqual(p.returncode, 1)
        self.assertEqual(starts(recs), [1])
        self.assertIn("4 never started", rep["execution_trace"][0]["detail"])

    def test_percentages_round_down(self):
        # 10% of 25 = 2.5 -> 2: the third failure spends it
        p, recs, _ = self.budget_run([1, 2, 3, 4], 25, '{ concurrency = 1, max_errors = "10%" }')
        self.assertEqual(self.outcome(recs)[1:4], (3, 22, 3))
        # 12.5% of 8 = 1 exactly
        p, recs, _ = self.budget_run([2, 4, 6], 8, '{ concurrency = 1, max_errors = "12.5%" }')
        self.assertEqual(self.outcome(recs)[1:4], (2, 4, 4))
        # 0%: the first failure stops new starts
        p, recs, _ = self.budget_run([2], 6, '{ concurrency = 1, max_errors = "0%" }')
        self.assertEqual(self.outcome(recs)[1:4], (1, 4, 2))
        # 100%: every item runs, the failures come back
        p, recs, _ = self.budget_run([1, 2, 3], 3, '{ concurrency = 1, max_errors = "100%" }')
        self.assertIsNone(self.outcome(recs))

    def test_ramp_doubles_per_wave_up_to_concurrency(self):
        p, recs, rep = self.budget_run([], 12, "{ concurrency = 4, ramp = true }", sleep="0.05")
        self.assertEqual(p.returncode, 0, p.stderr)
        a = after(recs)
        # wave 1: item 1 alone; wave 2: items 2-3 after 1 finished; wave 3: 4-7 after 3; then a
        # sliding window of 4 (each later item starts once four before it are still... finished)
        self.assertEqual([a[i] for i in (1, 2, 3)], [0, 1, 1])
        self.assertEqual([a[i] for i in (4, 5, 6, 7)], [3, 3, 3, 3])
        for i in range(8, 13):
            self.assertGreaterEqual(a[i], i - 4, "never more than 4 in flight")
        self.assertEqual(sorted(a), list(range(1, 13)))

    def test_ramp_without_concurrency_goes_up_to_all(self):
        p, recs, _ = self.budget_run([], 7, "{ ramp = true }", sleep="0.02")
        a = after(recs)
        self.assertEqual([a[i] for i in range(1, 8)], [0, 1, 1, 3, 3, 3, 3])

    def test_ramp_limits_the_blast_radius(self):
        # the second wave fails entirely: with max_errors 1 nothing after it starts
        p, recs, _ = self.budget_run([2, 3], 20, "{ concurrency = 8, ramp = true, max_errors = 1 }")
        self.assertEqual(starts(recs), [1, 2, 3])
        self.assertEqual(self.outcome(recs)[1:4], (2, 17, 3))
        # without ramp, the same failures with concurrency 8 start 8 at once, then stop
        p, recs, _ = self.budget_run([2, 3], 20, "{ concurrency = 8, max_errors = 1 }", sleep="(fail[i] and 0 or 0.2)")
        self.assertEqual(self.outcome(recs)[1:4], (2, 11, 9))

    def test_each_tenant_budget(self):
        body = ('local ok, e = pcall(each_tenant, function(t) log("start %s", t) sleep(0) '
                'if t == "t2" then error({code = "unavailable", message = "down"}) end end, '
                '{ concurrency = 1, max_errors = 0 })\n'
                'log("done %s %s %s", tostring(ok), tostring(e.not_started), e.code)')
        p, recs, _ = run(body, tenants=("t1", "t2", "t3"))
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual([m for m in logs(recs)], ["start t1", "start t2", "done false 1 unavailable"])
        intents = [r for r in recs if r["kind"] == "intent" and r["prim"] == "sleep"]
        self.assertEqual(sorted(r["tenant"] for r in intents), ["t1", "t2"])

    def test_bad_options_are_invalid(self):
        for opts in ('{ max_errors = -1 }', '{ max_errors = "abc" }', '{ max_errors = "150%" }',
                     '{ max_errors = 1.5 }', '{ ramp = "yes" }'):
            p, recs, _ = run('local ok, e = pcall(each, {1}, function() end, %s) log("%%s %%s", e.code, e.message)' % opts)
            self.assertEqual(len(logs(recs)), 1, opts)
            self.assertRegex(logs(recs)[0], r"^invalid each: (max_errors|ramp)", opts)


if __name__ == "__main__":
    unittest.main(verbosity=1)
