#!/usr/bin/env python3
"""Declared parameters, --opt=value, step selection (--only/--from/--skip), nothing_to_do and
declared retries, through the real rbl binary: exit codes, what ran (the chain's log records),
what the report and the chain say, and that nothing is written when the command line is wrong."""
import json, os, subprocess, sys, tempfile, time, unittest

from harness import Run, run_rbl, verify_chain

RBL = os.path.abspath(sys.argv.pop(1) if len(sys.argv) > 1 else "build/rbl")


class PartialRun(Run):
    def status(self):  # the steps only: not the top level (step 0)
        return [(e["name"], e["status"]) for e in self.report["execution_trace"] if e["step"] > 0]


def run(src, *args, tenants=("t1",), config=None, timeout=60):
    return run_rbl(RBL, src, args, "rbl-partial-", "INC-P", tenants=tenants, config=config,
                   timeout=timeout, cls=PartialRun)


def verify(t, r):
    verify_chain(RBL, t, r)


DECLARED = """
runbook { id = "decl", description = "declared parameters", params = {
  target   = { type = "string", required = true, description = "the deployment to act on" },
  env      = { choices = { "dev", "staging", "prod" }, default = "dev", description = "where" },
  replicas = { type = "number", default = 3 },
  force    = false,
  mode     = "safe",
} }
log("target=%s env=%s replicas=%s force=%s mode=%s", params.target, params.env, tostring(params.replicas),
    tostring(params.force), params.mode)
step "one" { run = function() log("one") end }
"""


class Params(unittest.TestCase):
    def test_values_typed_over_defaults(self):
        r = run(DECLARED, "--param", "target=api", "--param", "replicas=5", "--param", "force=yes")
        self.assertEqual(r.code, 0, r.err)
        self.assertEqual(r.logs()[0], "target=api env=dev replicas=5 force=true mode=safe")
        verify(self, r)

    def test_bad_command_line_is_exit_2_with_nothing_run_or_audited(self):
        cases = [
            (["--param", "target=api", "--param", "trget=x"], "unknown parameter --param trget", "did you mean 'target'"),
            (["--param", "target=api", "--param", "Target=x"], "unknown parameter", "did you mean 'target'"),
            (["--param", "target=api", "--param", "env=prdo"], "not one of dev, staging, prod", "did you mean 'prod'"),
            (["--param", "target=api", "--param", "replicas=many"], "is not a number", "replicas"),
            (["--param", "target=api", "--param", "replicas=inf"], "is not a number", "replicas"),
            (["--param", "target=api", "--param", "force=maybe"], "is not a boolean", "force"),
            ([], "missing --param target", "the deployment to act on"),
        ]
        for args, want, hint in cases:
            r = run(DECLARED, *args)
            self.assertEqual(r.code, 2, (args, r.err))
            self.assertIn(want, r.err, args)
            self.assertIn(hint, r.err, args)
            self.assertFalse(os.path.exists(r.audit_path), "nothing is audited: %s" % args)
            self.assertIsNone(r.report, args)

    def test_a_wrong_param_never_reaches_a_side_effect(self):
        # the top-level code would touch a file before any step: it must not run at all
        d = tempfile.mkdtemp()
        marker = os.path.join(d, "effect")
        src = ('runbook { id = "x", params = { n = 1 } }\nexec({"/usr/bin/touch", "%s"})\n' % marker)
        r = run(src, "--param", "m=2", config='return { exec = { allow = { "/usr/bin/touch" } } }')
        self.assertEqual(r.code, 2, r.err)
        self.assertIn("did you mean 'n'", r.err)
        self.assertFalse(os.path.exists(marker))
        self.assertFalse(os.path.exists(r.audit_path))
        r = run(src, "--param", "n=2", config='return { exec = { allow = { "/usr/bin/touch" } } }')
        self.assertEqual(r.code, 0, r.err)
        self.assertTrue(os.path.exists(marker))

    def test_declaration_found_only_during_the_run_is_still_exit_2(self):
        # runbook{} behind a condition the inert evaluation cannot decide: checked when declared
        # (under inert evaluation sleep returns a value, so the top level stops before runbook{})
        src = ('if sleep(0) ~= nil then error("inert") end\nrunbook { id = "late", params = { n = 1 } }\n'
               'step "s" { run = function() log("ran") end }')
        r = run(src, "--param", "x=1")
        self.assertEqual(r.code, 2, r.err)
        self.assertIn("unknown parameter --param x", r.err)
        self.assertEqual(r.logs(), [])
        self.assertEqual(r.report["outcome"], "failed")
        self.assertEqual([x["kind"] for x in r.records() if x["kind"] == "step"], [])
        verify(self, r)

    def test_bad_declarations_name_the_parameter(self):
        for decl, want in [('{ n = { type = "int" } }', 'type must be'),
                           ('{ n = { type = "number", default = "x" } }', 'default "x" is not a number'),
                           ('{ n = { required = true, default = 1 } }', 'required parameter has no default'),
                           ('{ n = { choices = { "a" }, default = "b" } }', 'not one of its choices'),
                           ('{ n = { typ = "string" } }', "unknown field 'typ' (did you mean 'type'?)"),
                           ('{ n = { 1, 2 } }', "unknown field")]:
            d = tempfile.mkdtemp()
            f = os.path.join(d, "rb.lua")
            open(f, "w").write('runbook { id = "x", params = %s }' % decl)
            p = subprocess.run([RBL, "check", f], capture_output=True, text=True)
            self.assertEqual(p.returncode, 2, decl)
            self.assertIn(want, p.stderr, decl)
        d = tempfile.mkdtemp()
        f = os.path.join(d, "rb.lua")
        open(f, "w").write('runbook{id="x"} step "s" { retry = { attempts = 100, backoff = 3600 }, run = function() end }')
        p = subprocess.run([RBL, "check", f], capture_output=True, text=True)
        self.assertEqual(p.returncode, 0, "the documented bounds themselves are fine: " + p.stderr)

    def test_check_accepts_required_params_without_values(self):
        d = tempfile.mkdtemp()
        f = os.path.join(d, "rb.lua")
        open(f, "w").write(DECLARED)
        p = subprocess.run([RBL, "check", f], capture_output=True, text=True)
        self.assertEqual(p.returncode, 0, p.stderr)

    def test_runbook_help_lists_parameters_and_steps(self):
        d = tempfile.mkdtemp()
        f = os.path.join(d, "rb.lua")
        open(f, "w").write(DECLARED)
        p = subprocess.run([RBL, "run", f, "--help"], capture_output=True, text=True)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("runbook decl: declared parameters", p.stdout)
        self.assertRegex(p.stdout, r"target +string, required +the deployment to act on")
        self.assertRegex(p.stdout, r"env +string, default dev, one of dev, staging, prod +where")
        self.assertRegex(p.stdout, r"replicas +number, default 3")
        self.assertIn("steps (--only, --from, --skip): one", p.stdout)
        self.assertFalse(os.path.exists(os.path.join(d, "audit")))
        # without a runbook: the command's usage
        p = subprocess.run([RBL, "run", "--help"], capture_output=True, text=True)
        self.assertEqual(p.returncode, 0)
        self.assertIn("usage: rbl run", p.stdout)

    def test_undeclared_runbook_takes_params_as_strings(self):
        r = run('log("%s %s", params.x, type(params.x))', "--param", "x=5")
        self.assertEqual(r.code, 0, r.err)
        self.assertEqual(r.logs(), ["5 string"])
        r = run('runbook { id = "x", params = {} }', "--param", "x=5")
        self.assertEqual(r.code, 2)
        self.assertIn("this runbook's parameters: none", r.err)


class OptEqualsValue(unittest.TestCase):
    def test_every_run_option_in_both_forms(self):
        d = tempfile.mkdtemp()
        f = os.path.join(d, "rb.lua")
        open(f, "w").write(DECLARED)
        audit, report, cfg = (os.path.join(d, n) for n in ("a.jsonl", "r.json", "c.lua"))
        open(cfg, "w").write("return {}")
        p = subprocess.run([RBL, "run", f, "--tenant=t1", "--incident=INC-EQ", "--param=target=a=b",
                            "--audit=" + audit, "--report=" + report, "--config=" + cfg, "--only=one", "--quiet"],
                           capture_output=True, text=True)
        self.assertEqual(p.returncode, 0, p.stderr)
        rep = json.load(open(report))
        self.assertEqual(rep["incident_id"], "INC-EQ")
        recs = [json.loads(l) for l in open(audit)]
        self.assertEqual(recs[0]["params"], {"target": "a=b"})
        self.assertIn("target=a=b", [r["message"] for r in recs if r["kind"] == "log"][0])
        v = subprocess.run([RBL, "audit", "verify", audit, "--head=" + rep["audit_chain"]], capture_output=True, text=True)
        self.assertEqual(v.returncode, 0, v.stdout + v.stderr)
        rb = subprocess.run([RBL, "rollback", audit, "--audit=" + audit, "--quiet", "--dry-run"], capture_output=True, text=True)
        self.assertEqual(rb.returncode, 0, rb.stderr)

    def test_a_flag_given_a_value_is_a_usage_error(self):
        d = tempfile.mkdtemp()
        f = os.path.join(d, "rb.lua")
        open(f, "w").write("")
        p = subprocess.run([RBL, "run", f, "--tenant=t1", "--dry-run=1"], capture_output=True, text=True)
        self.assertEqual(p.returncode, 2)
        self.assertIn("a flag takes no value", p.stderr)
        p = subprocess.run([RBL, "run", f, "--tenant="], capture_output=True, text=True)
        self.assertEqual(p.returncode, 2)


STEPS = """runbook { id = "s" }
step "analyze" { run = function() log("analyze") end }
step "patch" { run = function() log("patch") end, rollback = function() log("rb patch") end }
step "restart" { run = function() log("restart") end }
step "verify_all" { run = function() log("verify_all") %s end }
"""


class Selection(unittest.TestCase):
    def test_only_from_skip(self):
        for args, ran in [(["--only", "patch"], ["patch"]),
                          (["--only", "patch", "--only", "verify_all"], ["patch", "verify_all"]),
                          (["--from", "restart"], ["restart", "verify_all"]),
                          (["--skip", "restart"], ["analyze", "patch", "verify_all"]),
                          (["--from", "patch", "--skip", "verify_all"], ["patch", "restart"])]:
            r = run(STEPS % "", *args)
            self.assertEqual(r.code, 0, (args, r.err))
            self.assertEqual(r.logs(), ran, args)
            skipped = {e["name"]: e["detail"] for e in r.report["execution_trace"] if e.get("requested")}
            self.assertEqual(set(skipped), {"analyze", "patch", "restart", "verify_all"} - set(ran), args)
            for name, detail in skipped.items():
                self.assertRegex(detail, r"--only|--from|--skip")
            chain = [x for x in r.records() if x["kind"] == "step" and x.get("requested")]
            self.assertEqual({x["step"] for x in chain}, set(skipped), args)
            self.assertTrue(all(x["status"] == "skipped" for x in chain))
            self.assertEqual(r.records()[0]["kind"], "run_start")
            self.assertIn("select", r.records()[0])
            self.assertFalse(r.report["nothing_to_do"], "skipping on request is not 'nothing to do'")
            verify(self, r)

    def test_unknown_step_is_exit_2_with_did_you_mean(self):
        for args, want in [(["--only", "pach"], "--only pach: no such step (did you mean 'patch'?)"),
                           (["--from", "restrat"], "(did you mean 'restart'?)"),
                           (["--skip", "verify"], "(did you mean 'verify_all'?)"),
                           (["--only", "patch", "--skip", "restart"], "excludes --from and --skip"),
                           (["--from", "patch", "--skip", "patch"], "the first step to run is skipped")]:
            r = run(STEPS % "", *args)
            self.assertEqual(r.code, 2, args)
            self.assertIn(want, r.err, args)
            self.assertFalse(os.path.exists(r.audit_path), args)

    def test_failure_after_a_selection_rolls_back_only_what_ran(self):
        r = run(STEPS % "error('boom')", "--from", "patch")
        self.assertEqual(r.code, 1)
        self.assertEqual(r.logs(), ["patch", "restart", "verify_all", "rb patch"])
        self.assertEqual(r.status()[0], ("analyze", "skipped"))


NOTHING = """runbook { id = "n" }
step "analyze" { run = function(ctx) ctx.drift = %s end }
step "remediate" { when = function(ctx) return ctx.drift, "no drift" end,
                   run = function() exec({"/bin/true"}) end }
"""


class NothingToDo(unittest.TestCase):
    CFG = 'return { exec = { allow = { "/bin/true" } } }'

    def test_already_in_place_is_resolved_nothing_to_do(self):
        r = run(NOTHING % "false", config=self.CFG)
        self.assertEqual(r.code, 0, r.err)
        self.assertEqual(r.report["outcome"], "resolved")
        self.assertIs(r.report["nothing_to_do"], True)
        self.assertIs(r.report["human_intervention_required"], False)
        self.assertEqual(r.status(), [("analyze", "success"), ("remediate", "skipped")])

    def test_a_remediation_that_ran_is_not_nothing_to_do(self):
        r = run(NOTHING % "true", config=self.CFG)
        self.assertEqual(r.code, 0, r.err)
        self.assertIs(r.report["nothing_to_do"], False)

    def test_a_write_outside_the_skipped_step_is_not_nothing_to_do(self):
        src = (NOTHING % "false").replace('ctx.drift = false', 'exec({"/bin/true"}) ctx.drift = false')
        r = run(src, config=self.CFG)
        self.assertIs(r.report["nothing_to_do"], False)
        src = (NOTHING % "false").replace('ctx.drift = false', 'exec({"/bin/true"}, {read_only = true}) ctx.drift = false')
        r = run(src, config=self.CFG)
        self.assertIs(r.report["nothing_to_do"], True, r.err)

    def test_pre_is_still_a_failure(self):
        src = NOTHING.replace("when =", "pre =") % "false"
        r = run(src, config=self.CFG)
        self.assertEqual(r.code, 1)
        self.assertIs(r.report["nothing_to_do"], False)
        self.assertEqual(r.status()[1], ("remediate", "precondition_failed"))


RETRY = """runbook { id = "r" }
local n = 0
step "flaky" {
  retry = %s,
  run = function() n = n + 1 log("attempt %%d", n) if n <= %d then error({ code = "%s", message = "try " .. n }) end end,
  rollback = function() log("rb") end,
}
"""


class Retry(unittest.TestCase):
    def attempts(self, r):
        return [x for x in r.records() if x["kind"] == "step" and x["status"] == "retrying"]

    def test_retries_listed_codes_until_success(self):
        t0 = time.time()
        r = run(RETRY % ("{ attempts = 4, backoff = 0.05 }", 2, "unavailable"))
        self.assertEqual(r.code, 0, r.err)
        self.assertEqual(r.logs(), ["attempt 1", "attempt 2", "attempt 3"])
        att = r.report["execution_trace"][0]["attempts"]
        self.assertEqual([a["status"] for a in att], ["failed", "failed", "success"])
        self.assertEqual([a.get("error_code") for a in att], ["unavailable", "unavailable", None])
        recs = self.attempts(r)
        self.assertEqual([x["attempt"] for x in recs], [1, 2])
        self.assertEqual([x["backoff"] for x in recs], [0.05, 0.1], "backoff doubles")
        self.assertGreaterEqual(time.time() - t0, 0.15)
        waits = [x for x in r.records() if x["kind"] == "intent" and x["prim"] == "retry.backoff"]
        self.assertEqual(len(waits), 2)
        verify(self, r)

    def test_gives_up_after_attempts_and_rolls_back(self):
        r = run(RETRY % ("{ attempts = 3, backoff = 0 }", 9, "timeout"))
        self.assertEqual(r.code, 1)
        self.assertEqual(r.logs(), ["attempt 1", "attempt 2", "attempt 3", "rb"])
        att = r.report["execution_trace"][0]["attempts"]
        self.assertEqual(len(att), 3)
        self.assertEqual(att[-1]["note"], "no attempts left")

    def test_unlisted_code_is_not_retried(self):
        r = run(RETRY % ("{ attempts = 3, backoff = 0 }", 9, "conflict"))
        self.assertEqual(r.code, 1)
        self.assertEqual(r.logs(), ["attempt 1", "rb"])
        self.assertEqual(self.attempts(r), [])
        r = run(RETRY % ('{ attempts = 3, backoff = 0, on = { "conflict" } }', 1, "conflict"))
        self.assertEqual(r.code, 0, r.err)
        self.assertEqual(r.logs(), ["attempt 1", "attempt 2"])

    def test_a_refusal_is_never_retried(self):
        r = run('runbook{id="x"} step "s" { retry = { attempts = 5, backoff = 0, on = { "failed" } }, '
                'run = function() log("try") exec({"/bin/ls"}) end }')
        self.assertEqual(r.code, 3)
        self.assertEqual(r.logs(), ["try"])

    def test_the_step_timeout_bounds_the_retries(self):
        t0 = time.time()
        r = run(RETRY.replace('step "flaky" {', 'step "flaky" { timeout = 1,') % ("{ attempts = 50, backoff = 0.2 }", 99, "timeout"))
        self.assertLess(time.time() - t0, 5)
        self.assertEqual(r.code, 1)
        self.assertLessEqual(len(r.logs()), 5)

    def test_bad_retry_declarations(self):
        for decl, want in [("{ attempts = 0 }", "attempts must be"), ("{ attempts = 2, on = { 'nope' } }", "not an error code"),
                           ("{ attempts = 2, on = { 'refused' } }", "refused is never retried"),
                           ("{ attempts = 2, backof = 1 }", "did you mean 'backoff'"),
                           ("{ attempts = 101 }", "from 1 to 100"), ("{ attempts = 2.5 }", "an integer"),
                           ("{ attempts = 2, on = { 'killed' } }", "killed is never retried"),
                           ("{ attempts = 2, on = { 'check' } }", "check is never retried"),
                           ("{ attempts = 2, backoff = -1 }", "from 0 to 3600"),
                           ("{ attempts = 2, backoff = 3601 }", "from 0 to 3600")]:
            d = tempfile.mkdtemp()
            f = os.path.join(d, "rb.lua")
            open(f, "w").write('runbook{id="x"} step "s" { retry = %s, run = function() end }' % decl)
            p = subprocess.run([RBL, "check", f], capture_output=True, text=True)
            self.assertEqual(p.returncode, 2, decl)
            self.assertIn(want, p.stderr, decl)


RESUMABLE = """runbook { id = "res", params = { flag = { type = "string", required = true }, n = 1 } }
step "analyze" { run = function(ctx) ctx.seen = params.n log("analyze %s", tenant) end }
step "write" { run = function(ctx) exec({"/bin/true"}) log("write %d", ctx.seen) end }
step "undoable" { run = function() exec({"/bin/true"}) log("undoable") end, rollback = function() log("rb undoable") end }
step "flaky" { run = function(ctx)
  log("flaky %d", ctx.seen)
  if exec({"/usr/bin/test", "-e", params.flag}, {read_only = true}).exit_code ~= 0 then error("not yet") end
end }
step "last" { run = function() log("last") end }
"""
RES_CFG = 'return { exec = { allow = { "/bin/true", "/usr/bin/test" } } }'


class Resume(unittest.TestCase):
    def failed_run(self):
        d = tempfile.mkdtemp(prefix="rbl-resume-")
        rb, cfg = os.path.join(d, "rb.lua"), os.path.join(d, "c.lua")
        open(rb, "w").write(RESUMABLE)
        open(cfg, "w").write(RES_CFG)
        flag, audit = os.path.join(d, "flag"), os.path.join(d, "INC-R.jsonl")
        p = subprocess.run([RBL, "run", rb, "--tenant", "t1", "--incident", "INC-R", "--audit", audit, "--config", cfg,
                            "--param", "flag=" + flag, "--param", "n=7", "--report", os.path.join(d, "r1.json")],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 1, p.stderr)
        return d, rb, cfg, flag, audit

    def resume(self, audit, *extra, report=None):
        cmd = [RBL, "run", "--resume", audit, *extra]
        if report:
            cmd += ["--report", report]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60)

    def test_continues_from_the_first_step_not_in_place_with_the_same_params(self):
        d, rb, cfg, flag, audit = self.failed_run()
        first = [json.loads(l) for l in open(audit)]
        first_run = first[0]["run"]
        open(flag, "w").write("")
        rep = os.path.join(d, "r2.json")
        p = self.resume(audit, "--config", cfg, report=rep)
        self.assertEqual(p.returncode, 0, p.stderr)
        recs = [json.loads(l) for l in open(audit)]
        second = [r for r in recs if r["run"] != first_run]
        self.assertEqual(second[0]["kind"], "run_start")
        self.assertEqual(second[0]["resumes"], {"run": first_run})
        self.assertEqual(second[0]["params"], {"flag": flag, "n": "7"})
        self.assertEqual(second[0]["tenants"], ["t1"])
        logs = [r["message"] for r in second if r["kind"] == "log"]
        # analyze only read: it runs again (ctx rebuilt); write wrote and was not undone: skipped;
        # undoable was rolled back by the failed run: the run continues there
        self.assertEqual(logs, ["analyze t1", "undoable", "flaky 7", "last"])
        report = json.load(open(rep))
        st = {e["name"]: (e["status"], e.get("detail")) for e in report["execution_trace"] if e["step"] > 0}
        self.assertEqual(st["write"], ("skipped", "done by run %s (resumed)" % first_run))
        self.assertEqual(report["resumes"], {"run": first_run, "from": "undoable"})
        self.assertEqual(report["incident_id"], "INC-R")
        v = subprocess.run([RBL, "audit", "verify", audit], capture_output=True, text=True)
        self.assertEqual(v.returncode, 0, v.stdout)
        # the resumed run resolved: nothing more to resume
        p = self.resume(audit, "--config", cfg)
        self.assertEqual(p.returncode, 2)
        self.assertIn("resolved: nothing to resume", p.stderr)

    def test_a_resumed_run_that_fails_again_is_resumable(self):
        d, rb, cfg, flag, audit = self.failed_run()
        p = self.resume(audit, "--config", cfg)
        self.assertEqual(p.returncode, 1, p.stderr)
        open(flag, "w").write("")
        p = self.resume(audit, "--config", cfg)
        self.assertEqual(p.returncode, 0, p.stderr)

    def test_keeps_the_failed_runs_step_selection(self):
        d = tempfile.mkdtemp(prefix="rbl-resume-")
        rb, cfg, flag, audit = (os.path.join(d, n) for n in ("rb.lua", "c.lua", "flag", "a.jsonl"))
        open(rb, "w").write(RESUMABLE)
        open(cfg, "w").write(RES_CFG)
        p = subprocess.run([RBL, "run", rb, "--tenant", "t1", "--audit", audit, "--config", cfg,
                            "--param", "flag=" + flag, "--skip", "last"], capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 1, p.stderr)
        open(flag, "w").write("")
        rep = os.path.join(d, "r.json")
        p = self.resume(audit, "--config", cfg, report=rep)
        self.assertEqual(p.returncode, 0, p.stderr)
        report = json.load(open(rep))
        last = [e for e in report["execution_trace"] if e["name"] == "last"][0]
        self.assertEqual((last["status"], last["detail"]), ("skipped", "skipped on request (--skip)"))
        self.assertEqual(report["selection"], {"skip": ["last"]})

    def test_refuses_a_tampered_chain_without_acting(self):
        d, rb, cfg, flag, audit = self.failed_run()
        lines = open(audit).read().splitlines(True)
        lines[0] = lines[0].replace('"n":"7"', '"n":"8"')
        open(audit, "w").write("".join(lines))
        size = os.path.getsize(audit)
        p = self.resume(audit, "--config", cfg)
        self.assertEqual(p.returncode, 2)
        self.assertIn("does not verify", p.stderr)
        self.assertIn("modified", p.stderr)
        self.assertEqual(os.path.getsize(audit), size, "nothing appended")

    def test_refuses_a_changed_runbook(self):
        d, rb, cfg, flag, audit = self.failed_run()
        open(rb, "a").write("-- edited\n")
        p = self.resume(audit, "--config", cfg)
        self.assertEqual(p.returncode, 2)
        self.assertIn("changed since run", p.stderr)

    def test_refuses_what_it_cannot_resume(self):
        d, rb, cfg, flag, audit = self.failed_run()
        for extra, want in [(["--tenant", "t2"], "takes the tenants and params from the chain"),
                            (["--param", "n=1"], "takes the tenants and params from the chain"),
                            (["--from", "last"], "continues from the failed step")]:
            p = self.resume(audit, "--config", cfg, *extra)
            self.assertEqual(p.returncode, 2, extra)
            self.assertIn(want, p.stderr)
        p = self.resume(os.path.join(d, "missing.jsonl"))
        self.assertEqual(p.returncode, 2)
        self.assertIn("cannot use the chain", p.stderr)
        # a dry run is not resumed
        audit2 = os.path.join(d, "INC-D.jsonl")
        subprocess.run([RBL, "run", rb, "--tenant", "t1", "--incident", "INC-D", "--audit", audit2, "--config", cfg,
                        "--param", "flag=" + flag, "--dry-run"], capture_output=True, timeout=60)
        p = self.resume(audit2, "--config", cfg)
        self.assertEqual(p.returncode, 2)
        self.assertIn("dry run", p.stderr)

    def test_with_a_key_the_mac_is_checked(self):
        d = tempfile.mkdtemp(prefix="rbl-resume-")
        key, other = os.path.join(d, "k"), os.path.join(d, "k2")
        for f, v in ((key, "secret-one"), (other, "secret-two")):
            open(f, "w").write(v)
            os.chmod(f, 0o600)
        rb, cfg, flag, audit = (os.path.join(d, n) for n in ("rb.lua", "c.lua", "flag", "a.jsonl"))
        open(rb, "w").write(RESUMABLE)
        open(cfg, "w").write(RES_CFG)
        p = subprocess.run([RBL, "run", rb, "--tenant", "t1", "--audit", audit, "--config", cfg, "--audit-key", key,
                            "--param", "flag=" + flag], capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 1, p.stderr)
        open(flag, "w").write("")
        p = self.resume(audit, "--config", cfg, "--audit-key", other)
        self.assertEqual(p.returncode, 2)
        self.assertIn("bad MAC", p.stderr)
        p = self.resume(audit, "--config", cfg, "--audit-key", key)
        self.assertEqual(p.returncode, 0, p.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=1)
