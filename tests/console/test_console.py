#!/usr/bin/env python3
"""The surfaces people look at during and after an incident (issue 15): the report's shape,
--progress json, output and tracebacks, `rbl audit show` as a postmortem timeline, `rbl check`
as a linter, and `rbl repl` driven through a pseudo-terminal. Runs the real binary; the
primitives used are exec (a local program) and the core ones, so no daemon is needed."""
import json, os, subprocess, sys, tempfile, unittest

RBL = os.path.abspath(sys.argv.pop(1) if len(sys.argv) > 1 else "build/rbl")
CONFIG = 'return { tenants = { "t1", "t2", "t3" }, exec = { allow = { "/bin/sh", "/bin/echo", "/bin/true" } } }\n'


class Run:
    def __init__(self, proc, d, audit, report):
        self.code, self.out, self.err = proc.returncode, proc.stdout, proc.stderr
        self.dir, self.audit_path = d, audit
        self.raw_report = ""
        if os.path.exists(report):
            with open(report) as f:
                self.raw_report = f.read()
        self.report = json.loads(self.raw_report) if self.raw_report else None

    def records(self):
        return [json.loads(l) for l in open(self.audit_path) if l.strip()]


def run(src, *args, tenants=("t1",), name="rb.lua", d=None, audit=None, timeout=60):
    d = d or tempfile.mkdtemp(prefix="rbl-console-")
    path = os.path.join(d, name)
    open(path, "w").write(src)
    cfg = os.path.join(d, "config.lua")
    open(cfg, "w").write(CONFIG)
    audit = audit or os.path.join(d, "audit.jsonl")
    report = os.path.join(d, "report.json")
    cmd = [RBL, "run", path, "--audit", audit, "--report", report, "--config", cfg]
    for t in tenants:
        cmd += ["--tenant", t]
    cmd += list(args)
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    return Run(p, d, audit, report)


def rbl(*args, timeout=60, **kw):
    return subprocess.run([RBL, *args], capture_output=True, text=True, timeout=timeout, **kw)


FAILING = """
runbook { id = "checkout-latency", description = "x" }
step "inspect" { run = function() exec({ "/bin/echo", "hello" }) end }
step "restart" {
  description = "restart the thing",
  run = function() exec({ "/bin/sh", "-c", "exit 0" }) end,
  verify = function() return false, "still slow" end,
  rollback = function() log("undo") end,
}
step "after" { run = function() end }
"""


class Report(unittest.TestCase):
    def test_runbook_id_is_the_declared_one_with_the_path_beside_it(self):
        r = run('runbook { id = "declared-id" }\nstep "a" { run = function() end }\n', name="file-name.lua")
        self.assertEqual(r.code, 0, r.err)
        self.assertEqual(r.report["runbook_id"], "declared-id")
        self.assertEqual(r.report["runbook_path"], os.path.join(os.path.realpath(r.dir), "file-name.lua"))
        start = [x for x in r.records() if x["kind"] == "run_start"][0]
        self.assertEqual(start["runbook"]["id"], "declared-id", "the chain names the same one id")
        self.assertIn("rbl: declared-id  tenant t1", r.err)

    def test_no_runbook_declaration_uses_the_file_name(self):
        r = run('log("x")\n', name="plain-script.lua")
        self.assertEqual(r.report["runbook_id"], "plain-script")

    def test_steps_say_what_they_changed(self):
        r = run(FAILING)
        t = r.report["execution_trace"]
        self.assertEqual(t[0]["action"], "exec /bin/echo hello")
        self.assertEqual([(c["prim"], c["target"], c["status"], c.get("change")) for c in t[0]["calls"]],
                         [("exec", "/bin/echo hello", "ok", True)])
        self.assertEqual(t[0]["calls"][0]["summary"]["exit_code"], 0)
        self.assertNotEqual(t[0]["action"], t[0]["name"])
        self.assertEqual(t[1]["description"], "restart the thing")
        self.assertEqual(t[2]["action"], "skipped")

    def test_failure_at_the_top_level(self):
        r = run(FAILING)
        self.assertEqual(r.code, 1)
        self.assertEqual(r.report["failure"], {"step": "restart", "index": 2,
                                               "status": "verification_failed", "reason": "still slow"})
        ok = run('runbook { id = "x" }\nstep "a" { run = function() end }\n')
        self.assertNotIn("failure", ok.report)

    def test_failure_of_a_refused_run(self):
        r = run('runbook { id = "x" }\nstep "a" { run = function() exec({ "/bin/cat" }) end }\n')
        self.assertEqual(r.code, 3, r.err)
        self.assertEqual(r.report["failure"]["status"], "refused")
        self.assertIn("allow", r.report["failure"]["reason"])

    def test_empty_lists_are_arrays(self):
        r = run('runbook { id = "x" }\nstep "a" { run = function() end }\nstep "b" { run = function() log("l") end }\n')
        self.assertEqual(r.report["execution_trace"][0]["calls"], [])
        self.assertNotIn('{}', r.raw_report.replace(" ", "").replace("\n", "").replace("\t", ""))
        empty = run('-- nothing at all\n')
        self.assertEqual(empty.report["execution_trace"], [])
        self.assertIn('"execution_trace":\t[]', empty.raw_report)

    def test_audit_chain_is_the_final_head_with_a_signature(self):
        d = tempfile.mkdtemp(prefix="rbl-console-")
        key = os.path.join(d, "sign.pem")
        subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", key], check=True, capture_output=True)
        os.chmod(key, 0o600)
        r = run('runbook { id = "x" }\nstep "a" { run = function() log("a") end }\n', "--sign-key", key, d=d)
        self.assertEqual(r.code, 0, r.err)
        recs = r.records()
        self.assertEqual(recs[-1]["kind"], "signature")
        self.assertEqual(r.report["audit_chain"], recs[-1]["hash"])
        p = rbl("audit", "verify", r.audit_path, "--head", r.report["audit_chain"])
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)

    def test_run_end_records_the_exit_code(self):
        r = run(FAILING)
        end = [x for x in r.records() if x["kind"] == "run_end"][0]
        self.assertEqual((end["outcome"], end["exit_code"]), ("failed", 1))

    def test_progress_json(self):
        r = run(FAILING, "--progress", "json")
        events = [json.loads(l) for l in r.err.splitlines()]
        kinds = [e["event"] for e in events]
        self.assertEqual(kinds[0], "run_start")
        self.assertEqual(kinds[-1], "run_end")
        self.assertEqual(events[0]["runbook_id"], "checkout-latency")
        self.assertIn({"event": "step", "index": 1, "step": "inspect", "status": "started"}, events)
        calls = [e for e in events if e["event"] == "call"]
        self.assertEqual([(c["step"], c["prim"], c["target"], c["status"]) for c in calls],
                         [("inspect", "exec", "/bin/echo hello", "ok"), ("restart", "exec", "/bin/sh -c exit 0", "ok")])
        self.assertIn("undo", [e.get("message") for e in events if e["event"] == "log"])
        end = events[-1]
        self.assertEqual((end["outcome"], end["exit_code"]), ("failed", 1))
        self.assertEqual(end["failure"]["step"], "restart")
        self.assertEqual(end["audit_chain"], r.report["audit_chain"])

    def test_progress_bad_value(self):
        p = rbl("run", "x.lua", "--tenant", "t", "--progress", "yaml")
        self.assertEqual(p.returncode, 2)
        self.assertIn("--progress wants json or text", p.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=1)
