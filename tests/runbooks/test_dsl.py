#!/usr/bin/env python3
"""Runbook-level tests: run the real rbl binary on small runbooks and check exit codes,
reports, step ordering, rollback, timeouts, Ctrl-C, rbl check and flag handling."""
import json, os, signal, subprocess, sys, tempfile, time, unittest

from harness import run_rbl, verify_chain

RBL = os.path.abspath(sys.argv.pop(1) if len(sys.argv) > 1 else "build/rbl")


def run(src, *args, config=None, tenants=("t1",), files=None, timeout=30, env=None):
    return run_rbl(RBL, src, args, "rbl-dsl-", "INC-T", tenants=tenants, config=config,
                   files=files, timeout=timeout, env=env)


def verify(t, r):
    verify_chain(RBL, t, r)


STEPS3 = """
runbook { id = "t" }
step "a" { run = function() log("run a") end, rollback = function() log("rb a") end }
step "b" { run = function() log("run b") %s end, rollback = function() log("rb b") end %s }
step "c" { run = function() log("run c") end, rollback = function() log("rb c") end }
"""


class Steps(unittest.TestCase):
    def test_order_and_success(self):
        r = run(STEPS3 % ("", ""))
        self.assertEqual(r.code, 0, r.err)
        self.assertEqual(r.logs(), ["run a", "run b", "run c"])
        self.assertEqual(r.status(), [("a", "success"), ("b", "success"), ("c", "success")])
        self.assertEqual(r.report["outcome"], "resolved")
        self.assertFalse(r.report["human_intervention_required"])
        verify(self, r)

    def test_run_fails_rolls_back_started_in_reverse_including_failing(self):
        r = run(STEPS3 % ("error('boom')", ""))
        self.assertEqual(r.code, 1, r.err)
        self.assertEqual(r.logs(), ["run a", "run b", "rb b", "rb a"])
        self.assertEqual(r.status(), [("a", "rolled_back"), ("b", "failed"), ("c", "skipped")])
        b = r.report["execution_trace"][1]
        self.assertIn("boom", b["detail"])
        self.assertEqual(b["rollback"], "done")
        self.assertEqual(r.report["outcome"], "failed")
        verify(self, r)

    def test_precondition_failure_does_not_roll_back_the_step_itself(self):
        r = run(STEPS3 % ("", ", pre = function() return false, 'not now' end"))
        self.assertEqual(r.code, 1)
        self.assertEqual(r.logs(), ["run a", "rb a"])
        self.assertEqual(r.status()[1], ("b", "precondition_failed"))
        self.assertEqual(r.report["execution_trace"][1]["detail"], "not now")

    def test_verify_failure_rolls_back_the_step(self):
        r = run(STEPS3 % ("", ", verify = function() return false, 'still broken' end"))
        self.assertEqual(r.code, 1)
        self.assertEqual(r.logs(), ["run a", "run b", "rb b", "rb a"])
        self.assertEqual(r.status()[1], ("b", "verification_failed"))

    def test_failure_in_first_and_last_position(self):
        first = run(STEPS3.replace('log("run a")', 'error("x")') % ("", ""))
        self.assertEqual(first.logs(), ["rb a"])
        self.assertEqual(first.status(), [("a", "failed"), ("b", "skipped"), ("c", "skipped")])
        last = run(STEPS3.replace('log("run c")', 'log("run c") error("x")') % ("", ""))
        self.assertEqual(last.logs(), ["run a", "run b", "run c", "rb c", "rb b", "rb a"])

    def test_when_false_skips_and_continues(self):
        r = run(STEPS3 % ("", ", when = function() return false end"))
        self.assertEqual(r.code, 0)
        self.assertEqual(r.logs(), ["run a", "run c"])
        self.assertEqual(r.status()[1], ("b", "skipped"))

    def test_rollback_failure_needs_a_human(self):
        src = STEPS3.replace('log("rb a")', 'error("cannot undo")') % ("error('boom')", "")
        r = run(src)
        self.assertEqual(r.code, 1)
        self.assertEqual(r.status()[0], ("a", "rollback_failed"))
        self.assertTrue(r.report["human_intervention_required"])

    def test_ctx_is_shared_and_result_flows(self):
        r = run("""runbook{id="x"}
step "a" { run = function(ctx) ctx.n = 41 end }
step "b" { run = function(ctx) ctx.n = ctx.n + 1 end, verify = function(ctx) return ctx.n == 42 end }""")
        self.assertEqual(r.code, 0, r.err)


class Timeouts(unittest.TestCase):
    def test_step_timeout_on_a_waiting_primitive(self):
        t0 = time.time()
        r = run('runbook{id="x"} step "slow" { timeout = 0.3, run = function() sleep(30) end, rollback = function() log("rb") end }')
        self.assertLess(time.time() - t0, 5)
        self.assertEqual(r.code, 1)
        self.assertEqual(r.status(), [("slow", "failed")])
        self.assertIn("timed out", r.report["execution_trace"][0]["detail"])
        self.assertEqual(r.logs(), ["rb"])
        verify(self, r)

    def test_step_timeout_on_a_pure_lua_loop_even_under_pcall(self):
        t0 = time.time()
        r = run('runbook{id="x"} step "spin" { timeout = 0.3, run = function() while true do pcall(function() while true do end end) end end }')
        self.assertLess(time.time() - t0, 5)
        self.assertEqual(r.code, 1)
        self.assertIn("timeout", r.report["execution_trace"][0]["detail"])

    def test_run_deadline_is_exit_3(self):
        r = run('while true do end', config="return { limits = { run_timeout = 0.5 } }")
        self.assertEqual(r.code, 3)
        self.assertIn("run deadline", r.err)
        verify(self, r)

    def test_memory_cap_is_exit_3_even_under_pcall(self):
        r = run('local t = {} pcall(function() while true do t[#t+1] = string.rep("x", 1e6) .. #t end end) print("survived")',
                config="return { limits = { memory_mb = 32 } }")
        self.assertEqual(r.code, 3, r.err)
        self.assertNotIn("survived", r.out)
        self.assertIn("memory limit", r.err)
        verify(self, r)


class RunDeadlineGrace(unittest.TestCase):
    """The run deadline cancels the running step as Ctrl-C does; rollback gets
    limits.rollback_grace past it, and no more."""

    def test_deadline_mid_step_rolls_back_in_the_grace(self):
        src = """
runbook { id = "dl" }
step "one" { run = function() log("one") end, rollback = function() log("rb one") end }
step "two" { run = function() sleep(30) end, rollback = function() log("rb two") end }
step "three" { run = function() log("three") end }
"""
        t0 = time.time()
        r = run(src, config="return { limits = { run_timeout = 1, rollback_grace = 20 } }")
        self.assertLess(time.time() - t0, 5)
        self.assertEqual(r.code, 3, r.err)
        self.assertEqual(r.status(), [("one", "rolled_back"), ("two", "failed"), ("three", "skipped")])
        tr = r.report["execution_trace"]
        self.assertEqual([tr[0]["rollback"], tr[1]["rollback"]], ["done", "done"])
        self.assertEqual(tr[1]["detail"], "timeout: run deadline of 1s exceeded")
        self.assertEqual(r.logs(), ["one", "rb two", "rb one"])
        self.assertEqual(r.report["stopped_reason"], "run deadline of 1s exceeded")
        self.assertEqual(r.report["outcome"], "refused")
        recs = r.records()
        intr = [x for x in recs if x["kind"] == "interrupt"]
        self.assertEqual([(x.get("reason"), x.get("grace_s")) for x in intr], [("deadline", 20)])
        # the sleep was canceled by the deadline: its result and the report's call say so
        res = [x for x in recs if x["kind"] == "result" and x["prim"] == "sleep"]
        self.assertEqual([(x["status"], x["error"]["code"]) for x in res], [("canceled", "timeout")])
        self.assertEqual([(c["prim"], c["status"]) for c in tr[1]["calls"]], [("sleep", "canceled")])
        self.assertIn("rollback has 20s more", r.err)
        verify(self, r)

    def test_pure_lua_loop_under_pcall_stops_at_the_deadline_and_rolls_back(self):
        src = """
runbook { id = "dl" }
step "spin" { run = function() while true do pcall(function() while true do end end) end end,
  rollback = function() log("rb spin") end }
"""
        t0 = time.time()
        r = run(src, config="return { limits = { run_timeout = 1, rollback_grace = 20 } }")
        self.assertLess(time.time() - t0, 5)
        self.assertEqual(r.code, 3, r.err)
        self.assertEqual(r.logs(), ["rb spin"])
        self.assertEqual(r.report["execution_trace"][0]["rollback"], "done")
        verify(self, r)

    def test_the_grace_is_bounded_a_rollback_that_hangs(self):
        src = """
runbook { id = "dl" }
step "one" { run = function() sleep(30) end, rollback = function() while true do pcall(sleep, 1) end end }
"""
        t0 = time.time()
        r = run(src, config="return { limits = { run_timeout = 1, rollback_grace = 1.5 } }")
        took = time.time() - t0
        self.assertLess(took, 4.5)
        self.assertGreater(took, 2.0)
        self.assertEqual(r.code, 3, r.err)
        e = r.report["execution_trace"][0]
        self.assertEqual(e["rollback"], "failed")  # its rollback function ran out of the grace
        self.assertIn("timeout", e["rollback_detail"])
        verify(self, r)

    def test_a_deadline_during_rollback_starts_the_grace_then_kills(self):
        # step two fails on its own; the deadline passes while step one's rollback runs: that
        # rollback is not canceled at the deadline, only bounded by the grace
        src = """
runbook { id = "dl" }
step "one" { run = function() log("one") end, rollback = function() log("rb one start") sleep(30) end }
step "two" { run = function() error("boom") end, rollback = function() log("rb two") end }
"""
        t0 = time.time()
        r = run(src, config="return { limits = { run_timeout = 1, rollback_grace = 2 } }")
        took = time.time() - t0
        self.assertGreater(took, 2.5)
        self.assertLess(took, 6)
        self.assertEqual(r.code, 3, r.err)
        self.assertIn("grace for rollback", r.report["stopped_reason"])
        tr = r.report["execution_trace"]
        self.assertEqual((tr[0]["status"], tr[0]["rollback"]), ("rollback_failed", "unknown"))
        self.assertEqual(tr[1]["rollback"], "done")
        self.assertEqual(r.logs(), ["one", "rb two", "rb one start"])
        verify(self, r)

    def test_grace_zero_stops_at_once(self):
        src = """
runbook { id = "dl" }
step "one" { run = function() sleep(30) end, rollback = function() log("rb one") end }
"""
        r = run(src, config="return { limits = { run_timeout = 1, rollback_grace = 0 } }")
        self.assertEqual(r.code, 3, r.err)
        self.assertEqual(r.logs(), [])
        self.assertFalse([x for x in r.records() if x["kind"] == "interrupt"])
        e = r.report["execution_trace"][0]
        self.assertEqual([(c["prim"], c["status"], c["error"]["code"]) for c in e["calls"]], [("sleep", "canceled", "killed")])
        verify(self, r)


class Interrupt(unittest.TestCase):
    def start(self, src):
        d = tempfile.mkdtemp(prefix="rbl-int-")
        open(os.path.join(d, "rb.lua"), "w").write(src)
        self.audit, self.report = os.path.join(d, "a.jsonl"), os.path.join(d, "r.json")
        return subprocess.Popen([RBL, "run", os.path.join(d, "rb.lua"), "--tenant", "t1", "--incident", "INC-I",
                                 "--audit", self.audit, "--report", self.report],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    SRC = """runbook{id="x"}
step "a" { run = function() log("run a") end, rollback = function() log("rb a") end }
step "b" { run = function() log("run b") sleep(30) end, rollback = function() log("rb b") end }
step "c" { run = function() log("run c") end }"""

    def test_first_ctrl_c_cancels_and_rolls_back(self):
        p = self.start(self.SRC)
        time.sleep(0.6)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=10)
        self.assertEqual(p.returncode, 1, err)
        rep = json.load(open(self.report))
        self.assertEqual([e["status"] for e in rep["execution_trace"]], ["rolled_back", "failed", "skipped"])
        self.assertIn("interrupted", rep["execution_trace"][1]["detail"])
        recs = [json.loads(l) for l in open(self.audit)]
        self.assertEqual([r["message"] for r in recs if r["kind"] == "log"], ["run a", "run b", "rb b", "rb a"])
        self.assertEqual(len([r for r in recs if r["kind"] == "interrupt"]), 1, "the cancel is recorded")
        self.assertEqual(subprocess.run([RBL, "audit", "verify", self.audit], capture_output=True).returncode, 0)

    def test_second_ctrl_c_exits_at_once(self):
        p = self.start(self.SRC.replace('log("rb b")', 'sleep(30)'))
        time.sleep(0.6)
        p.send_signal(signal.SIGINT)
        time.sleep(0.4)
        p.send_signal(signal.SIGINT)
        p.communicate(timeout=10)
        self.assertEqual(p.returncode, 130)
        self.assertEqual(subprocess.run([RBL, "audit", "verify", self.audit], capture_output=True).returncode, 0)


class Scripts(unittest.TestCase):
    def test_plain_script(self):
        r = run('log("hello %s", tenant) print(json.encode({a = 1}))')
        self.assertEqual(r.code, 0, r.err)
        self.assertIn('{"a":1}', r.out)
        self.assertEqual(r.logs(), ["hello t1"])

    def test_plain_script_error_is_a_failure(self):
        r = run('error("nope")')
        self.assertEqual(r.code, 1)
        self.assertIn("nope", r.report["execution_trace"][0]["detail"])

    def test_syntax_error_is_exit_2_with_file_line(self):
        r = run('local x = \nstep "a" {')
        self.assertEqual(r.code, 2)
        self.assertRegex(r.err, r"rb\.lua:\d+:")
        self.assertFalse(os.path.exists(r.audit_path), "nothing is audited for a runbook that does not load")

    def test_structural_errors(self):
        self.assertEqual(run('step "a" { run = function() end } step "a" { run = function() end }').code, 1)
        r = run('step "a" { run = function() end, retries = 3 }')
        self.assertIn("unknown field 'retries'", r.err + json.dumps(r.report))

    def test_params_defaults_and_overrides(self):
        src = 'runbook{ id = "p", params = { n = 1, name = "x", on = false } } log("%d %s %s", params.n + 1, params.name, tostring(params.on))'
        self.assertEqual(run(src).logs(), ["2 x false"])
        r = run(src, "--param", "n=41", "--param", "name=y", "--param", "on=true")
        self.assertEqual(r.logs(), ["42 y true"])
        self.assertEqual(run(src, "--param", "n=abc").code, 2)  # a wrong type is a usage error

    def test_each_tenant_binds_every_task(self):
        r = run('local seen = each_tenant(function(t) sleep(0.01) log("in %s as %s", t, tenant) return t end, {concurrency = 2}) log("top %s", tostring(tenant))',
                tenants=("t1", "t2", "t3"))
        self.assertEqual(r.code, 0, r.err)
        self.assertEqual(sorted(r.logs()[:3]), ["in t1 as t1", "in t2 as t2", "in t3 as t3"])
        self.assertEqual(r.logs()[3], "top nil")
        tenants = {rec.get("tenant") for rec in r.records() if rec["kind"] == "intent"}
        self.assertEqual(tenants, {"t1", "t2", "t3"})

    def test_parallel_gathers_errors(self):
        r = run('local ok, e = pcall(parallel, function() return 1 end, function() error("x") end) log("%s %s", tostring(ok), e.code) local r = parallel(function() return 1 end, function() return 2 end) log("%d", r[1] + r[2])')
        self.assertEqual(r.logs(), ["false failed", "3"])

    def test_exec_allow_list_and_capture(self):
        cfg = 'return { exec = { allow = { "/bin/sh" } } }'
        r = run('local r = exec({"/bin/sh", "-c", "echo out; echo err >&2; exit 3"}) log("%d %s %s", r.exit_code, r.stdout, r.stderr)', config=cfg)
        self.assertEqual(r.logs(), ["3 out\n err\n"])
        r = run('exec({"/bin/ls"})', config=cfg)
        self.assertEqual(r.code, 3)
        self.assertIn("not on the exec allow list", r.err)
        refused = [x for x in r.records() if x["kind"] == "refused"]
        self.assertEqual(len(refused), 1)

    def test_exec_timeout_kills_the_process_group(self):
        cfg = 'return { exec = { allow = { "/bin/sh" } } }'
        t0 = time.time()
        r = run('local ok, e = pcall(exec, {"/bin/sh", "-c", "sleep 30 & sleep 30"}, {timeout = 0.3}) log("%s", e.code)', config=cfg)
        self.assertLess(time.time() - t0, 5)
        self.assertEqual(r.logs(), ["timeout"])

    def test_secret_never_leaves(self):
        env = dict(os.environ, DB_PASSWORD="hunter2-very-secret")
        cfg = 'return { exec = { allow = { "/bin/sh" }, env = { "P" } } }'
        r = run('local s = secret("DB_PASSWORD") local r = exec({"/bin/sh", "-c", "echo pw=$P"}, {env = {P = s}}) '
                'print(r.stdout) log("%s %s", tostring(s), r.stdout) error(r.stdout)', config=cfg, env=env)
        self.assertEqual(r.code, 1)
        for blob in (r.out, r.err, open(r.audit_path).read(), json.dumps(r.report)):
            self.assertNotIn("hunter2-very-secret", blob)
        self.assertIn("pw=[redacted]", r.out)

    def test_a_short_secret_repeated_is_masked_without_overrunning(self):
        # a 4-byte secret becomes the 10-byte "[redacted]", 2.5 times as long; the buffer was
        # sized for twice the text (a heap overflow: the run crashed with SIGSEGV)
        env = dict(os.environ, TOK="abcd")
        r = run('local s = secret("TOK") log("%s", string.rep("abcd", 200000))', env=env)
        self.assertEqual(r.code, 0, r.err)
        msgs = [x["message"] for x in r.records() if x["kind"] == "log"]
        self.assertEqual(msgs, ["[redacted]" * 200000])
        self.assertNotIn("abcd", r.out + r.err)
        verify(self, r)

    def test_secret_from_the_configured_file_before_the_environment(self):
        # docs/config.md: secret(NAME) reads the file the config names for NAME (its final line
        # break dropped), else the environment variable NAME; neither: not_found. The values are
        # compared by hash (a program printing a secret is masked).
        import hashlib
        d = tempfile.mkdtemp()
        path = os.path.join(d, "pw")
        open(path, "w").write("from-the-file-1234\n")
        env = dict(os.environ, PW="from-the-env-5678", ONLY_ENV="only-env-9012")
        cfg = 'return { exec = { allow = { "/bin/sh" }, env = { "P" } }, secrets = { PW = %r } }' % path
        h = 'printf %s \\"$P\\" | sha256sum | cut -c1-16'
        r = run('local a = exec({"/bin/sh", "-c", "%s"}, {env = {P = secret("PW")}}) log("%%s", a.stdout) '
                'local b = exec({"/bin/sh", "-c", "%s"}, {env = {P = secret("ONLY_ENV")}}) log("%%s", b.stdout) '
                'local ok, e = pcall(secret, "NOT_THERE_ANYWHERE") log("%%s", e.code)' % (h, h),
                config=cfg, env=env)
        self.assertEqual(r.code, 0, r.err)
        sha = lambda v: hashlib.sha256(v.encode()).hexdigest()[:16]
        logs = [l.strip() for l in r.logs()]
        self.assertEqual(logs[0], sha("from-the-file-1234"), "the file's value, its line break dropped")
        self.assertEqual(logs[1], sha("only-env-9012"), "the environment's value when no file is named")
        self.assertEqual(logs[2], "not_found")

    SECRET = "Zq9-very-secret-value-77"

    def _no_part_of_secret(self, r, blobs=None):
        """No 5+ byte piece of the secret's start anywhere (a cut keeps no prefix of it)."""
        blobs = blobs or (r.out, r.err, open(r.audit_path).read(), json.dumps(r.report))
        for blob in blobs:
            for k in range(5, len(self.SECRET) + 1):
                self.assertNotIn(self.SECRET[:k], blob, "a %d-byte prefix of the secret leaked" % k)

    def test_summary_cut_keeps_no_part_of_a_secret(self):
        # the exec summary keeps 512 bytes of each stream: the secret straddles byte 512
        env = dict(os.environ, TOK=self.SECRET)
        cfg = 'return { exec = { allow = { "/bin/sh" }, env = { "P" } } }'
        r = run('local s = secret("TOK") local r = exec({"/bin/sh", "-c", "printf %0505d 0; printf %s \\"$P\\"; printf %s \\"$P\\" >&2"}, {env = {P = s}}) '
                'log("%d bytes", #r.stdout)', config=cfg, env=env)
        self.assertEqual(r.code, 0, r.err)
        self.assertIn("%d bytes" % (505 + len(self.SECRET)), r.out + open(r.audit_path).read())
        res = [x for x in r.records() if x["kind"] == "result" and x["prim"] == "exec"][0]
        self.assertTrue(res["summary"]["stdout"].startswith("0" * 505), res["summary"]["stdout"][-40:])
        self.assertLessEqual(len(res["summary"]["stdout"]), 512)
        self._no_part_of_secret(r)
        verify(self, r)

    def test_capture_cap_keeps_no_part_of_a_secret(self):
        # the capture cap (1 KiB) cuts the program's output in the middle of the secret
        env = dict(os.environ, TOK=self.SECRET)
        cfg = 'return { exec = { allow = { "/bin/sh" }, env = { "P" } }, limits = { exec_output_kb = 1 } }'
        r = run('local s = secret("TOK") local r = exec({"/bin/sh", "-c", "printf %01014d 0; printf %s \\"$P\\""}, {env = {P = s}}) '
                'print(r.stdout:sub(-30)) log("truncated=%s", tostring(r.truncated))', config=cfg, env=env)
        self.assertEqual(r.code, 0, r.err)
        self.assertIn("truncated=true", r.out + open(r.audit_path).read())
        self.assertIn("[redacted]", r.out)
        self._no_part_of_secret(r)
        verify(self, r)


ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FAKE_SYSTEMCTL = """#!/bin/sh
d=$(dirname "$0")
echo "$*" >> "$d/calls"
case "$1" in
  is-active) cat "$d/state" ;;
  show) cat "$d/nrestarts" ;;
  restart) echo active > "$d/state"; echo $(( $(cat "$d/nrestarts") + 1 )) > "$d/nrestarts" ;;
  *) exit 1 ;;
esac
"""


class SeedCacheRestart(unittest.TestCase):
    def run_seed(self, state, restarts):
        d = tempfile.mkdtemp(prefix="rbl-seed-")
        sc = os.path.join(d, "systemctl")
        with open(sc, "w") as f:
            f.write(FAKE_SYSTEMCTL)
        os.chmod(sc, 0o755)
        for name, val in (("state", state), ("nrestarts", str(restarts)), ("calls", "")):
            with open(os.path.join(d, name), "w") as f:
                f.write(val + ("\n" if val else ""))
        cfg = os.path.join(d, "c.lua")
        with open(cfg, "w") as f:
            f.write('return { exec = { allow = { "%s" } } }' % sc)
        rep = os.path.join(d, "r.json")
        p = subprocess.run([RBL, "run", os.path.join(ROOT, "runbooks", "cache-restart.lua"), "--tenant", "t1",
                            "--incident", "INC-C", "--audit", os.path.join(d, "a.jsonl"), "--report", rep,
                            "--config", cfg, "--param", "systemctl=" + sc], capture_output=True, text=True, timeout=60)
        with open(os.path.join(d, "calls")) as f:
            calls = f.read().split("\n")
        with open(rep) as f:
            report = json.load(f)
        return p, report, calls

    def test_restarts_a_failed_cache(self):
        p, rep, calls = self.run_seed("failed", 0)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("restart redis-cache", calls)
        self.assertEqual([e["status"] for e in rep["execution_trace"]], ["success", "success"])

    def test_circuit_breaker_blocks_a_crash_loop(self):
        p, rep, calls = self.run_seed("failed", 3)
        self.assertEqual(p.returncode, 1)
        self.assertNotIn("restart redis-cache", calls)
        self.assertEqual(rep["execution_trace"][1]["status"], "precondition_failed")
        self.assertIn("circuit breaker open", rep["execution_trace"][1]["detail"])

    def test_healthy_cache_is_left_alone(self):
        p, rep, calls = self.run_seed("active", 0)
        self.assertEqual(p.returncode, 0)
        self.assertEqual(rep["execution_trace"][1]["status"], "skipped")
        self.assertNotIn("restart redis-cache", calls)


class Repl(unittest.TestCase):
    def repl(self, text, *extra):
        d = tempfile.mkdtemp(prefix="rbl-repl-")
        audit = os.path.join(d, "a.jsonl")
        p = subprocess.run([RBL, "repl", "--tenant", "t1", "--incident", "INC-R", "--audit", audit, *extra],
                           input=text, capture_output=True, text=True, timeout=30)
        return p, audit

    def test_lines_evaluate_in_the_sandbox_and_are_audited(self):
        p, audit = self.repl('tenant\n1 + 2\nx = 40\nx + 2\nsleep(0)\n{a = json.array({})}\nerror("oops")\nio\n')
        self.assertEqual(p.returncode, 0, p.stderr)
        out = p.stdout.split("\n")
        self.assertEqual(out[:4], ["t1", "3", "42", "nil"])
        self.assertIn("a  []", p.stdout)  # one object prints as key  value lines
        self.assertIn("error: repl:1: oops", p.stderr)
        with open(audit) as f:
            recs = [json.loads(l) for l in f]
        self.assertEqual([r["line"] for r in recs if r["kind"] == "repl"][:2], ["tenant", "1 + 2"])
        self.assertTrue(any(r["kind"] == "intent" and r["prim"] == "sleep" for r in recs))
        self.assertEqual(subprocess.run([RBL, "audit", "verify", audit], capture_output=True).returncode, 0)

    def test_refusal_costs_one_line_and_the_session_goes_on(self):
        p, audit = self.repl('exec({"/bin/ls"})\nprint("after")\n')
        self.assertEqual(p.returncode, 0, "the exit status is the last line's")
        self.assertIn("after", p.stdout)
        self.assertEqual(len([l for l in p.stderr.splitlines() if "refused" in l]), 1, p.stderr)
        p, audit = self.repl('print("before")\nexec({"/bin/ls"})\n')
        self.assertEqual(p.returncode, 3, "a refused last line")
        with open(audit) as f:
            self.assertTrue(any(json.loads(l)["kind"] == "refused" for l in f))
        self.assertEqual(subprocess.run([RBL, "audit", "verify", audit], capture_output=True).returncode, 0)

    def test_echo_escapes_control_characters(self):
        # values and error texts are data: ESC, BEL, 8-bit C1 (raw 0x9b = CSI, U+009B) and
        # non-UTF-8 bytes must not reach the terminal raw, in the value or in an error
        d = tempfile.mkdtemp(prefix="rbl-repl-")
        audit = os.path.join(d, "a.jsonl")
        lines = (b'"\\27]0;pwned\\7\\27[2J" .. "x"\n'
                 b'"\\xc2\\x9b" .. "31m" .. "\\x9b" .. "1m"\n'
                 b'error("\\27[31mred\\xc2\\x9b")\n'
                 b'"caf\\xc3\\xa9"\n'
                 b'local x = "\x1b[2J\x9b\n')  # unfinished at <eof>: continues, as in lua.c
        p = subprocess.run([RBL, "repl", "--tenant", "t1", "--incident", "INC-R", "--audit", audit],
                           input=lines, capture_output=True, timeout=30)
        for name, blob in (("stdout", p.stdout), ("stderr", p.stderr)):
            t = blob.decode("utf-8", "surrogateescape")
            bad = [hex(ord(c)) for c in t if ord(c) < 0x20 and c not in "\n\t" or ord(c) == 0x7f
                   or 0x80 <= ord(c) <= 0x9f or 0xdc80 <= ord(c) <= 0xdcff]
            self.assertEqual(bad, [], "%s holds raw control characters: %r" % (name, blob))
        self.assertIn(b"\\x1b]0;pwned\\x07\\x1b[2Jx", p.stdout)
        self.assertIn(b"\\u009b31m\\x9b1m", p.stdout)
        self.assertIn(b"error: repl:1: \\x1b[31mred\\u009b", p.stderr)
        self.assertIn("caf\u00e9".encode(), p.stdout)

    def test_file_root_is_dir_never_the_working_directory_nor_slash(self):
        d = tempfile.mkdtemp(prefix="rbl-repl-root-")
        open(os.path.join(d, "x.json"), "w").write('{"k": "from-dir"}')
        open(os.path.join(d, "m.lua"), "w").write('return "module-from-dir"')
        audit = os.path.join(d, "a.jsonl")
        base = [RBL, "repl", "--tenant", "t1", "--incident", "INC-R", "--audit", audit]
        lines = 'print(pcall(iac.json, "x.json"))\nprint(pcall(require, "m"))\n'
        # the working directory holds the files: without --dir they are still refused
        p = subprocess.run(base, input=lines, capture_output=True, text=True, timeout=30, cwd=d)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertNotIn("from-dir", p.stdout)
        self.assertEqual(p.stdout.count("give --dir DIR"), 2, p.stdout)
        # --dir names the root
        p = subprocess.run(base + ["--dir", d], input=lines, capture_output=True, text=True, timeout=30)
        self.assertIn("from-dir", p.stdout)
        self.assertIn("module-from-dir", p.stdout)
        # / confines nothing: refused
        p = subprocess.run(base + ["--dir", "/"], input='iac.json("etc/hostname")\n', capture_output=True,
                           text=True, timeout=30)
        self.assertEqual(p.returncode, 3, p.stderr)
        self.assertIn("would confine nothing", p.stderr)
        p = subprocess.run(base + ["--dir", "/"], input='print(pcall(require, "etc.m"))\n', capture_output=True,
                           text=True, timeout=30)
        self.assertIn("would confine nothing", p.stdout)

    def test_syntax_error_is_reported_and_the_session_goes_on(self):
        p, _ = self.repl("local = \n7 * 6\n")
        self.assertIn("42", p.stdout)
        self.assertIn("repl:1:", p.stderr)


class Roots(unittest.TestCase):
    def test_runbook_in_slash_reads_nothing(self):
        if not os.access("/", os.W_OK):
            self.fail("this test places a runbook in / and needs to write there (run as root)")
        path = "/rbl-root-test-%d.lua" % os.getpid()
        try:
            open(path, "w").write('print(pcall(require, "etc.nothing")) local v = iac.yaml("etc/hostname") print(v)')
            d = tempfile.mkdtemp()
            audit = os.path.join(d, "a.jsonl")
            p = subprocess.run([RBL, "run", path, "--tenant", "t1", "--incident", "INC-S", "--audit", audit],
                               capture_output=True, text=True, timeout=30)
        finally:
            os.unlink(path)
        self.assertEqual(p.returncode, 3, p.stdout + p.stderr)
        self.assertIn("would confine nothing", p.stdout)
        self.assertIn("would confine nothing", p.stderr)


class Report(unittest.TestCase):
    def test_report_is_atomic_and_a_failed_write_is_exit_4(self):
        d = tempfile.mkdtemp(prefix="rbl-report-")
        rb = os.path.join(d, "rb.lua")
        open(rb, "w").write('for i = 1, 200 do log("line %d of a long report %s", i, string.rep("x", 60)) end')
        # a missing directory
        p = subprocess.run([RBL, "run", rb, "--tenant", "t1", "--incident", "INC-P", "--audit",
                            os.path.join(d, "a.jsonl"), "--report", os.path.join(d, "no", "r.json")],
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(p.returncode, 4, p.stderr)
        self.assertIn("could not be written", p.stderr)
        # a full filesystem (a tiny tmpfs in a private mount namespace): exit 4, the old report kept
        mnt = os.path.join(d, "mnt")
        os.mkdir(mnt)
        script = ('mount -t tmpfs -o size=16k none "$1" || exit 99; printf old > "$1/r.json"; '
                  'head -c 20000 /dev/zero > "$1/fill" 2>/dev/null; '
                  '"$2" run "$3" --tenant t1 --incident INC-P --audit "$4" --report "$1/r.json" >/dev/null 2>"$4.err"; '
                  'echo "rc=$?"; echo "content=$(cat "$1/r.json")"; ls "$1"')
        p = subprocess.run(["unshare", "-m", "sh", "-c", script, "sh", mnt, RBL, rb, os.path.join(d, "b.jsonl")],
                           capture_output=True, text=True, timeout=60)
        if "exit 99" in p.stdout or p.returncode == 99:
            self.fail("cannot mount a tmpfs here (needs root and unshare): %s" % p.stderr)
        self.assertIn("rc=4", p.stdout, p.stdout + p.stderr + open(os.path.join(d, "b.jsonl.err")).read())
        self.assertIn("content=old", p.stdout)
        self.assertNotIn("tmp-", p.stdout)  # no temporary file left behind
        self.assertIn("No space left on device", open(os.path.join(d, "b.jsonl.err")).read())
        # and a report that can be written is complete JSON
        p = subprocess.run([RBL, "run", rb, "--tenant", "t1", "--incident", "INC-P", "--audit",
                            os.path.join(d, "c.jsonl"), "--report", os.path.join(d, "ok.json")],
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(p.returncode, 0, p.stderr)
        json.load(open(os.path.join(d, "ok.json")))


class Verify(unittest.TestCase):
    def test_a_cut_chain_says_its_last_run_has_no_run_end(self):
        d = tempfile.mkdtemp(prefix="rbl-cut-")
        key = os.path.join(d, "k")
        open(key, "w").write("cut-test-key")
        os.chmod(key, 0o600)
        rb = os.path.join(d, "rb.lua")
        open(rb, "w").write('log("one") log("two")')
        audit = os.path.join(d, "a.jsonl")
        for _ in range(2):
            subprocess.run([RBL, "run", rb, "--tenant", "t1", "--incident", "INC-C", "--audit", audit,
                            "--audit-key", key, "-q"], check=True)
        lines = open(audit).read().splitlines(True)
        open(audit, "w").write("".join(lines[:-2]))  # the last run's run_end and a log record removed
        p = subprocess.run([RBL, "audit", "verify", audit, "--key", key], capture_output=True, text=True)
        self.assertEqual(p.returncode, 0, p.stdout)
        self.assertIn("has no run_end: the chain may have been cut", p.stdout)
        self.assertIn("a MAC cannot show that", p.stdout)
        self.assertIn("--head", p.stdout)


class Flags(unittest.TestCase):
    def cli(self, *args):
        return subprocess.run([RBL, *args], capture_output=True, text=True)

    def test_usage_errors_are_exit_2(self):
        d = tempfile.mkdtemp()
        f = os.path.join(d, "x.lua")
        open(f, "w").write("")
        cases = [["run", f], ["run", f, "--tenant"], ["run", f, "--tenant", "t1", "--bogus"],
                 ["run", f, "--tenant", "BAD_NAME"], ["run", f, "--tenant", "t1", "--incident", "../../etc/x"],
                 ["run", f, "--tenant", "t1", "--param", "novalue"], ["run", "/nonexistent.lua", "--tenant", "t1"],
                 ["nope"], ["run", f, "--tenant", "prod-*"]]
        for c in cases:
            p = self.cli(*c)
            self.assertEqual(p.returncode, 2, (c, p.stderr))
            self.assertTrue(p.stderr.startswith("rbl"), p.stderr)
        # the message names the cause: a key file that is not there, a directory given as runbook
        for c, want in [(["run", f, "--tenant", "t1", "--audit-key", "/nonexistent.key"],
                         "--audit-key /nonexistent.key: No such file or directory"),
                        (["run", f, "--tenant", "t1", "--sign-key", "/nonexistent.pem"],
                         "--sign-key /nonexistent.pem: No such file or directory"),
                        (["run", d, "--tenant", "t1"], "Is a directory")]:
            p = self.cli(*c)
            self.assertEqual(p.returncode, 2, (c, p.stderr))
            self.assertIn(want, p.stderr)

    def test_repl_refuses_report_and_version_takes_no_argument(self):
        p = self.cli("repl", "--tenant", "t1", "--report", "/tmp/x.json")
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn("--report belongs to rbl run", p.stderr)
        p = self.cli("version", "extra")
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn("takes none", p.stderr)

    def test_tenant_glob_matches_config(self):
        r = run('log("%d", #tenants)', "--tenant", "prod-*", tenants=(),
                config='return { tenants = { "prod-1", "prod-2", "dev-1" } }')
        self.assertEqual(r.logs(), ["2"])
        r = run('', tenants=("prod-9",), config='return { tenants = { "prod-1" } }')
        self.assertEqual(r.code, 2)

    def test_help_everywhere(self):
        for c in (["--help"], ["help", "run"], ["run", "--help"], ["check", "-h"], ["audit", "--help"],
                  ["help", "repl"], ["help", "rollback"], ["version"], ["--version"]):
            p = self.cli(*c)
            self.assertEqual(p.returncode, 0, c)
            self.assertTrue(p.stdout.strip(), c)


class Check(unittest.TestCase):
    def check(self, src):
        d = tempfile.mkdtemp()
        f = os.path.join(d, "rb.lua")
        open(f, "w").write(src)
        return subprocess.run([RBL, "check", f], capture_output=True, text=True), d

    def test_good_runbook_without_side_effects(self):
        p, d = self.check('runbook{id="x"} exec({"/usr/bin/touch", "%s/sidefx"}) step "a" { run = function() end }' % "/tmp")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertFalse(os.path.exists("/tmp/sidefx"))

    def test_errors(self):
        for src, want in [('step "a" { run = function() end } step "a" { run = function() end }', "duplicate"),
                          ('step "a" { run = function() end, retries = 1 }', "unknown field"),
                          ('step "a" { run = function() end, retry = 1 }', "must be a table"),
                          ('step "a" { verify = function() end }', "no run"),
                          ('runbook{id="x"}\nlocal = 1', "rb.lua:2:")]:
            p, _ = self.check(src)
            self.assertEqual(p.returncode, 2, src)
            self.assertIn(want, p.stderr)


class AuditFailure(unittest.TestCase):
    @unittest.skipUnless(os.geteuid() == 0, "needs root to mount a small tmpfs")
    def test_full_disk_stops_before_the_effect_exit_4(self):
        d = tempfile.mkdtemp()
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", d], check=True)
        try:
            audit = os.path.join(d, "a.jsonl")
            marker = os.path.join(tempfile.mkdtemp(), "effect")
            src = os.path.join(tempfile.mkdtemp(), "rb.lua")
            open(src, "w").write('each({1,2,3,4,5,6,7,8,9,10}, function(i) log(string.rep("x", 4000)) end) '
                                 'for i = 1, 200 do log(string.rep("y", 2000)) end exec({"/usr/bin/touch", "%s"})' % marker)
            cfg = os.path.join(os.path.dirname(src), "c.lua")
            open(cfg, "w").write('return { exec = { allow = { "/usr/bin/touch" } } }')
            p = subprocess.run([RBL, "run", src, "--tenant", "t1", "--incident", "INC-F", "--audit", audit, "--config", cfg],
                               capture_output=True, text=True, timeout=30)
            self.assertEqual(p.returncode, 4, p.stderr)
            self.assertIn(audit, p.stderr)
            self.assertIn("No space left", p.stderr)
            self.assertFalse(os.path.exists(marker), "the effect must not start once the audit failed")
            v = subprocess.run([RBL, "audit", "verify", audit], capture_output=True, text=True)
            self.assertEqual(v.returncode, 0, v.stdout + v.stderr)
        finally:
            subprocess.run(["umount", d])



class Errors(unittest.TestCase):
    """One error vocabulary (docs/errors.md): misuse is a structured `invalid` naming the
    primitive, a missing file is `not_found`, and the codes are those `rbl help errors` lists."""

    def test_misuse_and_missing_file_codes(self):
        r = run("""
local function code(f, ...)
  local ok, e = pcall(f, ...)
  assert(not ok, "no error")
  assert(type(e) == "table", "not a structured error: " .. tostring(e))
  return e.code, e.message
end
local c, m = code(each, 1, print)
assert(c == "invalid" and m:find("^each: "), c .. " " .. m)
c, m = code(each_tenant, 42)
assert(c == "invalid" and m:find("^each_tenant: "), c .. " " .. m)
c, m = code(parallel, 1)
assert(c == "invalid" and m:find("^parallel: "), c .. " " .. m)
c, m = code(sleep, "x")
assert(c == "invalid", c .. " " .. m)
c, m = code(iac.json, "missing.json")
assert(c == "not_found", "iac.json of a missing file: " .. c .. " " .. m)
local ok, e = pcall(parallel, function() error({code = "timeout", message = "x"}) end)
assert(not ok and e.code == "timeout" and type(e.errors) == "table" and tostring(e):find("^timeout: "), tostring(e))
log("codes ok")
""")
        self.assertEqual(r.code, 0, r.err)
        self.assertIn("codes ok", r.logs())
        verify(self, r)

    def test_undocumented_docker_label_key_is_an_error_naming_the_right_one(self):
        # docs/config.md documents labels.docker; the old docker.label must not be silently ignored
        r = run('local ok, e = pcall(docker.ps)\nassert(not ok and e.code == "invalid", tostring(e))\n'
                'assert(e.message:find("labels.docker", 1, true), e.message)\nlog("named")',
                config='return { docker = { label = "my.tenant" } }')
        self.assertEqual(r.code, 0, r.err)
        self.assertIn("named", r.logs())
        verify(self, r)

    def test_help_errors_lists_the_documented_codes(self):
        p = subprocess.run([RBL, "help", "errors"], capture_output=True, text=True)
        self.assertEqual(p.returncode, 0)
        codes = {l.split()[0] for l in p.stdout.splitlines()[1:] if l.strip()}
        for c in ("invalid", "refused", "not_found", "timeout", "tls", "killed", "check", "failed"):
            self.assertIn(c, codes)

if __name__ == "__main__":
    unittest.main(verbosity=1)
