#!/usr/bin/env python3
"""The surfaces people look at during and after an incident (issue 15): the report's shape,
--progress json, output and tracebacks, `rbl audit show` as a postmortem timeline, `rbl check`
as a linter, and `rbl repl` driven through a pseudo-terminal. Runs the real binary; the
primitives used are exec (a local program) and the core ones, so no daemon is needed."""
import json, os, re, subprocess, sys, tempfile, unittest

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

    def test_calls_are_capped_at_200_and_counted(self):
        # docs/runbook-language.md: a step's calls are the first 200; calls_total counts all
        r = run('runbook { id = "x" }\nstep "a" { run = function() for i = 1, 250 do '
                'exec({ "/bin/true" }) end end }\n', timeout=120)
        self.assertEqual(r.code, 0, r.err)
        step = r.report["execution_trace"][0]
        self.assertEqual(len(step["calls"]), 200)
        self.assertEqual(step["calls_total"], 250)
        self.assertEqual(step["calls_omitted"], 50)
        self.assertEqual(step["calls"][0]["call"] + 199, step["calls"][-1]["call"], "the first 200, in order")
        intents = [x for x in r.records() if x["kind"] == "intent" and x["prim"] == "exec"]
        self.assertEqual(len(intents), 250, "the chain keeps every call")

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


SHOW_RB = """
runbook { id = "postmortem" }
local lib = require "lib"
step "probe" {
  run = function()
    local s = secret("RBL_TEST_SECRET")
    log("two\\nlines")
    each_tenant(function(t)
      if t == "t1" then exec({ "/bin/sh", "-c", "exit 1" }) end
      log("tenant %s", t)
    end)
  end,
}
step "refuse" { run = function() each_tenant(function(t) if t == "t1" then exec({ "/bin/cat", "/etc/hostname" }) end end) end }
"""


def show(*args):
    return rbl("audit", "show", *args)


class AuditShow(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        d = tempfile.mkdtemp(prefix="rbl-console-")
        open(os.path.join(d, "lib.lua"), "w").write("return {}\n")
        env = dict(os.environ, RBL_TEST_SECRET="s3cr3t-value")
        path = os.path.join(d, "rb.lua")
        open(path, "w").write(SHOW_RB)
        open(os.path.join(d, "config.lua"), "w").write(CONFIG)
        cls.audit = os.path.join(d, "audit.jsonl")
        cls.p = subprocess.run([RBL, "run", path, "--tenant", "t1", "--tenant", "t2", "--config",
                                os.path.join(d, "config.lua"), "--audit", cls.audit, "--incident", "INC-PM"],
                               capture_output=True, text=True, env=env, timeout=60)
        cls.out = show(cls.audit).stdout

    def test_the_run_was_refused(self):
        self.assertEqual(self.p.returncode, 3, self.p.stderr)

    def test_exit_code_is_not_ok(self):
        self.assertRegex(self.out, r'call \d+ exec /bin/sh -c "exit 1" \[t1\]  EXIT 1 \d+ms')
        self.assertNotRegex(self.out, r'exit 1" \[t1\]  ok')

    def test_every_record_kind_printed(self):
        self.assertRegex(self.out, r"module lib \(.*lib\.lua, sha256:[0-9a-f]{12}")
        self.assertIn("secret RBL_TEST_SECRET read (its value is never recorded)", self.out)
        self.assertNotIn("s3cr3t-value", self.out)
        self.assertIn("log: two\\nlines", self.out)
        self.assertIn("!! REFUSED exec [t1]", self.out)
        self.assertIn("step 2 refuse: started", self.out)
        self.assertIn("!! FAILED call 2 exec [t1] before its intent (scope): refused:", self.out)

    def test_outcome_with_exit_code(self):
        self.assertRegex(self.out, r"outcome: refused \(exit 3\) after")

    def test_filters(self):
        by_t2 = show(self.audit, "--tenant", "t2").stdout
        self.assertIn("log: tenant t2", by_t2)
        self.assertNotIn("log: tenant t1", by_t2)
        self.assertNotIn("exec /bin/sh", by_t2)
        self.assertIn("step 1 probe", by_t2, "records bound to no tenant stay")
        none = show(self.audit, "--tenant", "nobody").stdout
        self.assertNotIn("=== run", none)
        self.assertIn("=== run", show(self.audit, "--run", "1").stdout)
        p = show(self.audit, "--run", "7")
        self.assertEqual(p.returncode, 2)
        self.assertIn("no run 7", p.stderr)
        self.assertNotIn("=== run", show(self.audit, "--since", "2000-01-01", "--until", "2000-01-02").stdout)
        self.assertIn("=== run", show(self.audit, "--since", "1h").stdout)
        self.assertIn("=== run", show(self.audit, "--since=2000-01-01T00:00").stdout)
        p = show(self.audit, "--since", "yesterday")
        self.assertEqual(p.returncode, 2)
        self.assertIn("RFC 3339", p.stderr)
        j = json.loads(show(self.audit, "--json", "--tenant", "t2").stdout)
        logs = [e["message"] for r in j["runs"] for e in r["events"] if e["type"] == "log"]
        self.assertIn("tenant t2", logs)
        self.assertNotIn("tenant t1", logs)

    def test_run_prefix_matching_several_runs_is_exit_2(self):
        d = tempfile.mkdtemp(prefix="rbl-console-")
        audit = os.path.join(d, "two.jsonl")
        for _ in range(2):
            r = run('log("x")\n', "--incident", "INC-TWO", d=d, audit=audit)
            self.assertEqual(r.code, 0, r.err)
        p = show(audit, "--run", "run-")
        self.assertEqual(p.returncode, 2)
        self.assertIn("matches 2 runs", p.stderr)
        self.assertNotIn("=== run", p.stdout)
        self.assertEqual(show(audit, "--run", "2").stdout.count("=== run"), 1)

    def test_patch_before_after_and_undo_from_records(self):
        # records as kube_patch and kube_undo write them (show does not verify: see audit verify)
        d = tempfile.mkdtemp(prefix="rbl-console-")
        recs = [
            {"kind": "run_start", "run": "r1", "incident": "I", "ts": "2026-01-17T03:42:15.000Z", "tenants": ["t"]},
            {"kind": "intent", "run": "r1", "incident": "I", "ts": "2026-01-17T03:42:15.100Z", "call": 4,
             "prim": "kube_patch", "tenant": "t",
             "target": {"kind": "ConfigMap", "name": "db", "namespace": "t"},
             "args": ["configmap", "db", {"data": {"max": "500", "gone": None}}, {"type": "merge"}]},
            {"kind": "result", "run": "r1", "incident": "I", "ts": "2026-01-17T03:42:15.200Z", "call": 4,
             "prim": "kube_patch", "status": "ok", "duration_ms": 87,
             "before": {"fields": [{"path": "/data/max", "exists": True, "value": "250"},
                                   {"path": "/data/new", "exists": False},
                                   {"path": "/data/gone", "exists": True, "value": "x"}]}},
            {"kind": "intent", "run": "r1", "incident": "I", "ts": "2026-01-17T03:42:16.000Z", "call": 5,
             "prim": "kube_undo", "tenant": "t", "target": {"kind": "ConfigMap", "name": "db", "namespace": "t"},
             "args": [{"call": 4, "run": "r0", "fields": [{"path": "/data/max", "exists": True, "value": "250"}]}]},
            {"kind": "result", "run": "r1", "incident": "I", "ts": "2026-01-17T03:42:16.100Z", "call": 5,
             "prim": "kube_undo", "status": "ok", "duration_ms": 9},
            {"kind": "intent", "run": "r1", "incident": "I", "ts": "2026-01-17T03:42:16.200Z", "call": 6,
             "prim": "docker.restart", "tenant": "t", "target": {"container": "0574cd2bd04c0e90f20a", "name": "api-1"}},
            {"kind": "repl", "run": "r1", "incident": "I", "ts": "2026-01-17T03:42:17.000Z", "line": "kube.get('cm','db')",
             "tenant": "t"},
            {"kind": "brand_new_kind", "run": "r1", "incident": "I", "ts": "2026-01-17T03:42:17.000Z", "what": "x\u001b[2J"},
            {"kind": "run_end", "run": "r1", "incident": "I", "ts": "2026-01-17T03:42:18.000Z", "outcome": "failed",
             "exit_code": 1},
        ]
        path = os.path.join(d, "c.jsonl")
        with open(path, "w") as f:
            for r in recs:
                f.write(json.dumps(r) + "\n")
        out = show(path).stdout
        self.assertIn('kube_patch ConfigMap/db ns=t [t]  ok 87ms  /data/max "250" -> "500", '
                      '/data/new (absent) -> ?, /data/gone "x" -> (removed)', out)
        self.assertIn('kube_undo ConfigMap/db ns=t [t]  ok 9ms  restored /data/max = "250"  (undoes call 4 of run r0)', out)
        self.assertIn("docker.restart api-1 (0574cd2bd04c) [t]  NO RESULT", out)
        self.assertIn("repl [t]> kube.get('cm','db')", out)
        self.assertIn('brand_new_kind {"what":"x\\u001b[2J"}', out)
        self.assertNotIn("\x1b", out)
        self.assertIn("outcome: failed (exit 1) after 3.000s", out)


EACH_TENANT = """local ok, e = pcall(each_tenant, function(t) if t == "t2" then error("bad " .. t, 0) end return t end)
log("%s|%s|%s|%s", tostring(e.results.t1), tostring(e.results.t3), tostring(e.errors.t2), tostring(e.errors[2]))
log("%s", e.message)
"""


class Output(unittest.TestCase):
    def test_traceback_lines_start_at_the_runbook(self):
        r = run('runbook { id = "x" }\nlocal function f(t) return t.a.b end\nstep "s" { run = function() f({}) end }\n')
        self.assertEqual(r.code, 1)
        detail = r.report["execution_trace"][0]["detail"]
        lines = detail.split("\n")
        self.assertRegex(lines[0], r"rb\.lua:2: attempt to index a nil value")
        self.assertEqual(lines[1], "  at %s/rb.lua:2: in upvalue 'f'" % r.dir)
        self.assertNotIn("[rbl]", detail)
        self.assertNotIn("[C]", detail)
        self.assertIn("\n        at %s/rb.lua:2: in upvalue 'f'\n" % r.dir, r.err, "printed as lines, under the step")

    def test_primitive_error_names_the_runbook_line(self):
        r = run('runbook { id = "x" }\nstep "s" {\n  run = function()\n    sleep("soon")\n  end,\n}\n')
        self.assertEqual(r.code, 1, r.err)
        self.assertEqual(r.report["execution_trace"][0]["error_at"], "%s/rb.lua:4" % r.dir)
        self.assertIn("      at %s/rb.lua:4" % r.dir, r.err)

    def test_log_lines_and_escaped_control_characters(self):
        r = run('log("first\\nsecond\\27[31mred\\rback")\n')
        self.assertIn("  first\n  second\\x1b[31mred\\x0dback\n", r.err)
        self.assertEqual(r.report["execution_trace"][0]["logs"], ["first\nsecond\x1b[31mred\rback"])

    def test_long_log_messages_are_cut_on_stderr_only(self):
        # stderr shows the first 100 lines and 8 KiB of a message; the audit and report keep it all
        r = run('runbook { id = "x" }\nstep "s" { run = function() local t = {} for i = 1, 150 do '
                't[i] = "line" .. i end log("%s", table.concat(t, "\\n")) '
                'log("%s", string.rep("y", 20000)) end }\n')
        self.assertEqual(r.code, 0, r.err)
        self.assertIn("  line100\n", r.err)
        self.assertNotIn("line101", r.err)
        ys = max((len(m) for m in re.findall("y+", r.err)), default=0)
        self.assertEqual(ys, 8192, "the first 8 KiB of the line")
        self.assertIn("y\n  ...\n", r.err)
        logs = r.report["execution_trace"][0]["logs"]
        self.assertEqual(logs[0].count("\n"), 149)
        self.assertEqual(len(logs[1]), 20000)
        recs = [x["message"] for x in r.records() if x["kind"] == "log"]
        self.assertEqual(len(recs[1]), 20000)

    def test_a_cut_never_prints_part_of_a_secret(self):
        # docs/runbook-language.md, "Secrets": text is masked before it is cut. A secret the run
        # read, straddling the 8 KiB cut of a log line or the cut of one line of rbl's own
        # output, must not leave its first bytes on stderr.
        d = tempfile.mkdtemp(prefix="rbl-console-")
        val = "TOPSECRETVALUE123"
        src = ('runbook { id = "x" }\nstep "s" { run = function() local s = secret("RBL_CUT_SECRET") '
               'log("%%s", string.rep("x", 8185) .. "%s") log("%%s", string.rep("x", 2040) .. "%s") '
               'error(string.rep("z", 2030) .. "%s") end }\n' % (val, val, val))
        path = os.path.join(d, "rb.lua")
        open(path, "w").write(src)
        p = subprocess.run([RBL, "run", path, "--tenant", "t1", "--audit", os.path.join(d, "a.jsonl"),
                            "--report", os.path.join(d, "r.json")], capture_output=True, text=True,
                           env=dict(os.environ, RBL_CUT_SECRET=val), timeout=60)
        self.assertEqual(p.returncode, 1, p.stderr)
        for k in range(4, len(val) + 1):
            self.assertNotIn(val[:k], p.stderr, "a prefix of the secret reached stderr")
        self.assertIn("[redacted]", p.stderr)

    def test_colour_terminal_gets_only_rbl_colour_codes(self):
        # stderr a terminal, NO_COLOR unset: rbl colours step statuses, and nothing else reaches
        # the terminal raw: not a log line's ESC, not a step name's, not an error's.
        import pty
        d = tempfile.mkdtemp(prefix="rbl-console-")
        path = os.path.join(d, "rb.lua")
        open(path, "w").write('step "a\\27[2Jx" { run = function() log("hi \\27]0;pwned\\7 \\27[31mred") end }\n'
                              'step "b" { run = function() error("bad \\27[2J") end }\n')
        env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
        pid, fd = pty.fork()
        if pid == 0:
            os.execve(RBL, [RBL, "run", path, "--tenant", "t1", "--audit", os.path.join(d, "a.jsonl")], env)
        out = b""
        while True:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
        _, status = os.waitpid(pid, 0)
        self.assertEqual(os.waitstatus_to_exitcode(status), 1, out)
        text = out.decode()
        import re
        self.assertEqual(re.findall(r"\x1b\[[0-9;]*m", text), ["\x1b[32m", "\x1b[0m", "\x1b[31m", "\x1b[0m"], text)
        self.assertEqual(text.count("\x1b"), 4, text)
        self.assertIn("hi \\x1b]0;pwned\\x07 \\x1b[31mred", text)
        self.assertIn("a\\x1b[2Jx", text)
        self.assertIn("bad \\x1b[2J", text)

    def test_each_tenant_errors_keyed_by_tenant(self):
        r = run(EACH_TENANT, tenants=("t1", "t2", "t3"))
        self.assertEqual(r.code, 0, r.err)
        logs = r.report["execution_trace"][0]["logs"]
        self.assertTrue(logs[0].startswith("t1|t3|bad t2") and logs[0].endswith("|nil"), logs[0])
        self.assertIn("[t2] bad t2", logs[1])


class Check(unittest.TestCase):
    def check(self, src, *args, name="rb.lua"):
        d = tempfile.mkdtemp(prefix="rbl-console-")
        path = os.path.join(d, name)
        open(path, "w").write(src)
        return rbl("check", *args, path), path

    def test_typo_in_a_primitive_fails_with_did_you_mean(self):
        p, path = self.check('runbook { id = "x" }\nstep "s" { run = function()\n  docker.restrat("api")\nend }\n')
        self.assertEqual(p.returncode, 2)
        self.assertIn(path + ":3: unknown field 'docker.restrat' (did you mean 'docker.restart'?)", p.stderr)

    def test_unknown_globals_with_suggestions(self):
        p, path = self.check('local x = tostrin(1)\nlocal y = kube_pach\nlocal z = frobnicate\n')
        self.assertEqual(p.returncode, 2)
        self.assertIn(":1: unknown global 'tostrin' (did you mean 'tostring'?)", p.stderr)
        self.assertIn(":2: unknown global 'kube_pach' (did you mean 'kube_patch'?)", p.stderr)
        self.assertIn(":3: unknown global 'frobnicate'\n", p.stderr)

    def test_no_false_alarms_on_scoping(self):
        src = """runbook { id = "x", params = { n = 1 } }
local function helper(a, ...) local b <const> = a; return b, ... end
mine = 1
function shared(v) return v end
local t = setmetatable({}, { __index = function(self, k) return k end })
function t:method(q) return self, q end
step "s" { run = function(ctx)
  for i, v in ipairs({ 1 }) do ctx[i] = v end
  for k = 1, 2 do ctx.k = k end
  repeat local z = 1 until z == 1
  while false do local w = 1 end
  if mine then local a = 1 elseif shared then local a = 2 else local a = 3 end
  goto done
  ::done::
  local s = ("x"):format() .. string.format("%d", params.n) .. json.encode({}) .. tenant
  return helper(1), { id = 1, run = 2, each = 3 }, _ENV
end }
"""
        p, path = self.check(src)
        self.assertEqual((p.returncode, p.stderr), (0, ""))

    def test_the_shipped_runbooks_pass(self):
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        rbs = [os.path.join(root, "runbooks", f) for f in sorted(os.listdir(os.path.join(root, "runbooks")))
               if f.endswith(".lua")]
        p = rbl("check", *rbs)
        self.assertEqual(p.returncode, 0, p.stderr)

    def test_secret_is_inert(self):
        p, _ = self.check('local s = secret("NOT_SET_ANYWHERE_XYZ")\nlog("%s", tostring(s))\n')
        self.assertEqual(p.returncode, 0, p.stderr)

    def test_config_files(self):
        d = tempfile.mkdtemp(prefix="rbl-console-")
        good = os.path.join(d, "good.lua")
        open(good, "w").write('return { tenants = { "a" }, exec = { allow = { "/bin/true" } } }\n')
        bad = os.path.join(d, "bad.lua")
        open(bad, "w").write('return { tenant = { "a" } }\n')
        p = rbl("check", good)
        self.assertEqual((p.returncode, p.stdout), (0, good + ": ok (config)\n"))
        p = rbl("check", bad)
        self.assertEqual(p.returncode, 2)
        self.assertIn("config: unknown key 'tenant' (did you mean 'tenants'?)", p.stderr)
        rb = os.path.join(d, "rb.lua")
        open(rb, "w").write('log("x")\n')
        self.assertEqual(rbl("check", "--config", good, rb).returncode, 0)
        self.assertEqual(rbl("check", "--config=" + bad, rb).returncode, 2)
        syntax = os.path.join(d, "broken.lua")
        open(syntax, "w").write('return { tenants = { "a" }\n')
        self.assertEqual(rbl("check", "--config", syntax, rb).returncode, 2)

    def test_check_is_bounded(self):
        p, _ = self.check("while true do end\n")
        self.assertEqual(p.returncode, 2)
        self.assertIn("run deadline", p.stderr)

    def test_version_flags(self):
        for flag in ("-V", "--version", "version"):
            p = rbl(flag)
            self.assertEqual(p.returncode, 0)
            self.assertRegex(p.stdout, r"^rbl \d+\.\d+\.\d+\n$")


class Pty:
    """rbl repl on a pseudo-terminal, as a person types into it (libedit reads the tty)."""

    def __init__(self, args, env):
        import pty
        self.pid, self.fd = pty.fork()
        if self.pid == 0:
            os.execve(RBL, [RBL, "repl", "--yes", *args], env)  # --yes: writes run unasked
        self.buf = b""

    def read_until(self, pattern, timeout=15):
        import re, select, time
        end = time.time() + timeout
        rx = re.compile(pattern)
        while True:
            text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]|\r|\x07", "", self.buf.decode("utf-8", "replace"))
            m = rx.search(text)
            if m:
                self.buf = b""
                return text
            left = end - time.time()
            if left <= 0:
                raise AssertionError("timed out waiting for %r; got: %r" % (pattern, text[-800:]))
            r, _, _ = select.select([self.fd], [], [], left)
            if r:
                try:
                    chunk = os.read(self.fd, 4096)
                except OSError:
                    chunk = b""
                if not chunk:
                    raise AssertionError("repl ended while waiting for %r; got: %r" % (pattern, text[-800:]))
                self.buf += chunk

    def send(self, s):
        os.write(self.fd, s.encode())

    def finish(self, timeout=15):
        import time
        self.send("\x15\r")  # an empty line (whatever was left on it), then end of input
        time.sleep(0.2)
        self.send("\x04")
        end = time.time() + timeout
        while time.time() < end:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                try:
                    while os.read(self.fd, 4096):
                        pass
                except OSError:
                    pass
                os.close(self.fd)
                return os.waitstatus_to_exitcode(status)
            time.sleep(0.05)
        os.kill(self.pid, 9)
        raise AssertionError("repl did not end on Ctrl-D")


class Repl(unittest.TestCase):
    def start(self, *extra, env_extra=None):
        d = tempfile.mkdtemp(prefix="rbl-repl-")
        self.d = d
        cfg = os.path.join(d, "config.lua")
        open(cfg, "w").write(CONFIG)
        kc = os.path.join(d, "kubeconfig")
        open(kc, "w").write("apiVersion: v1\nkind: Config\nclusters:\n- name: c1\n  cluster:\n    server: https://127.0.0.1:9\n"
                            "users:\n- name: u1\n  user:\n    token: abc\ncontexts:\n- name: ctx-pty\n  context:\n    cluster: c1\n"
                            "    user: u1\ncurrent-context: ctx-pty\n")
        self.audit = os.path.join(d, "audit.jsonl")
        self.hist = os.path.join(d, "history")
        env = dict(os.environ, TERM="xterm", KUBECONFIG=kc, DOCKER_HOST="unix://" + d + "/docker.sock",
                   RBL_HISTORY=self.hist, HOME=d, RBL_TEST_SECRET="hunter2hunter2")
        env.update(env_extra or {})
        p = Pty(["--tenant", "t1", "--tenant", "t2", "--incident", "INC-PTY", "--config", cfg,
                 "--audit", self.audit, *extra], env)
        return p

    def records(self):
        return [json.loads(l) for l in open(self.audit) if l.strip()]

    def test_banner_prompt_multiline_refusal_tenant_and_chain(self):
        p = self.start()
        out = p.read_until(r"rbl \(all tenants\) @ INC-PTY> ")
        self.assertIn("kube:   context ctx-pty, server https://127.0.0.1:9", out)
        self.assertIn("docker: unix://%s/docker.sock (DOCKER_HOST)" % self.d, out)
        p.send(":tenant t1\r")
        p.read_until(r"rbl t1 @ INC-PTY> ")
        p.send("function g(x)\r")
        p.read_until(r">> $")
        p.send("  return x + 1\r")
        p.read_until(r">> $")
        p.send("end\r")
        p.read_until(r"rbl t1 @ INC-PTY> ")
        p.send("g(41)\r")
        p.read_until(r"\n42\n.*rbl t1 @ INC-PTY> ")
        p.send('exec({ "/bin/cat", "/etc/hostname" })\r')
        out = p.read_until(r"rbl t1 @ INC-PTY> ")
        self.assertEqual(len(re.findall(r"refused", out)), 1, out)
        self.assertRegex(out, r"\nexec refused: program \"/bin/cat\" is not on the exec allow list")
        p.send("=1 + 1\r")
        p.read_until(r"\n2\n.*rbl t1 @ INC-PTY> ")
        p.send(":tenant t2\r")
        p.read_until(r"rbl t2 @ INC-PTY> ")
        p.send("tenant\r")
        p.read_until(r"\nt2\n")
        p.send(":tenant t9\r")
        p.read_until(r"t9 is not a tenant of this session")
        self.assertEqual(p.finish(), 1, "the exit status is the last command's")
        recs = self.records()
        self.assertEqual(recs[0]["kind"], "run_start")
        self.assertEqual(recs[0]["argv"][1], "repl")
        self.assertEqual(recs[0]["runbook"]["id"], "repl")
        lines = [(r["line"], r.get("tenant")) for r in recs if r["kind"] == "repl"]
        self.assertEqual(lines, [(":tenant t1", "t1"), ("function g(x)\n  return x + 1\nend", "t1"),
                                 ("g(41)", "t1"), ('exec({ "/bin/cat", "/etc/hostname" })', "t1"),
                                 ("=1 + 1", "t1"), (":tenant t2", "t2"), ("tenant", "t2")])
        self.assertTrue(any(r["kind"] == "refused" for r in recs))
        self.assertEqual((recs[-1]["kind"], recs[-1]["outcome"], recs[-1]["exit_code"]), ("run_end", "ended", 1))
        self.assertEqual(rbl("audit", "verify", self.audit).returncode, 0)

    def test_completion(self):
        p = self.start()
        p.read_until(r"INC-PTY> ")
        p.send("docker.resta\t")
        p.read_until(r"docker\.restart\($")
        p.send("\x15")  # Ctrl-U: clear the line
        p.send("=({ alpha = 1, beta = 2 })\r")
        p.read_until(r"alpha\s+1")
        p.send("_.alp\t")
        p.read_until(r"_\.alpha$")
        p.send("\r")
        p.read_until(r"\n1\n")
        p.send("kube_pa\t")
        p.read_until(r"kube_patch\($")
        p.send("\x15")
        self.assertEqual(p.finish(), 0)

    def test_help_rows_json_and_save(self):
        p = self.start()
        p.read_until(r"INC-PTY> ")
        p.send("help()\r")
        out = p.read_until(r"INC-PTY> ")
        self.assertIn("kube       kube_patch kube kube.get", out)
        self.assertIn(":tenant [NAME|-]", out)
        p.send("help(kube_patch)\r")
        out = p.read_until(r"INC-PTY> ")
        self.assertIn("kube_patch  (family kube, src/families/kube/kube.md)", out)
        self.assertIn("kube_patch(kind, name, patch, {namespace, type})", out)
        p.send('=({ { name = "a", n = 1 }, { name = "bbbb", n = 22 } })\r')
        out = p.read_until(r"\(2 rows\)")
        self.assertRegex(out, r"NAME\s+N\na\s+1\nbbbb\s+22\n")
        p.send(":json\r")
        p.read_until(r'"name":\s+"bbbb"')
        p.send('x = exec({ "/bin/echo", "hi" })\r')
        p.read_until(r"INC-PTY> ")
        p.send('nosuchthing()\r')
        p.read_until(r"error: .*nosuchthing")
        saved = os.path.join(self.d, "inv.lua")
        p.send(":save %s\r" % saved)
        p.read_until(r"saved .*inv\.lua")
        p.send(":save %s\r" % saved)
        p.read_until(r"never overwrites")
        self.assertEqual(p.finish(), 1, "the last command failed")
        text = open(saved).read()
        self.assertIn('runbook { id = "inv"', text)
        self.assertIn('    x = exec({ "/bin/echo", "hi" })', text)
        self.assertIn('    ctx.r1 = ({ { name = "a", n = 1 }, { name = "bbbb", n = 22 } })', text)
        self.assertNotIn("nosuchthing", text)
        self.assertNotIn("help(", text)
        self.assertEqual(rbl("check", saved).returncode, 0, rbl("check", saved).stderr)

    def test_history_persists_without_secrets(self):
        p = self.start()
        p.read_until(r"INC-PTY> ")
        p.send('s = secret("RBL_TEST_SECRET")\r')
        p.read_until(r"INC-PTY> ")
        p.send('pasted = "hunter2hunter2"\r')
        p.read_until(r"INC-PTY> ")
        p.send("=#pasted\r")
        p.read_until(r"\n14\n")
        self.assertEqual(p.finish(), 0)
        self.assertEqual(os.stat(self.hist).st_mode & 0o777, 0o600)
        hist = open(self.hist).read()
        self.assertIn('s = secret("RBL_TEST_SECRET")', hist)
        self.assertIn('pasted = "[redacted]"', hist)
        self.assertNotIn("hunter2", hist)
        self.assertNotIn("hunter2", open(self.audit).read())
        hist = self.hist
        os.chmod(hist, 0o644)
        p = self.start(env_extra={"RBL_HISTORY": hist})
        p.read_until(r"INC-PTY> ")
        self.assertEqual(os.stat(hist).st_mode & 0o777, 0o600, "tightened on load")
        p.send("\x1b[A")  # up: the previous session's last line
        p.read_until(r"=#pasted$")
        p.send("\x15")
        self.assertEqual(p.finish(), 0)

    def test_history_keeps_the_last_1000_entries(self):
        d = tempfile.mkdtemp(prefix="rbl-repl-")
        hist = os.path.join(d, "history")
        with open(hist, "w") as f:
            f.write("".join("x%d = %d\n" % (i, i) for i in range(1, 1201)))
        os.chmod(hist, 0o600)
        p = self.start(env_extra={"RBL_HISTORY": hist})
        p.read_until(r"INC-PTY> ")
        p.send("last = 1\r")
        p.read_until(r"INC-PTY> ")
        self.assertEqual(p.finish(), 0)
        lines = open(hist).read().splitlines()
        self.assertEqual(len(lines), 1000, lines[:3])
        self.assertEqual(lines[-1], "last = 1")
        self.assertEqual(lines[0], "x202 = 202", "the oldest entries are the ones dropped")

    def test_piped_stdin_still_works(self):
        d = tempfile.mkdtemp(prefix="rbl-repl-")
        cfg = os.path.join(d, "config.lua")
        open(cfg, "w").write(CONFIG)
        audit = os.path.join(d, "a.jsonl")
        p = subprocess.run([RBL, "repl", "--tenant", "t1", "--config", cfg, "--audit", audit],
                           input='exec({"/bin/cat"})\n=1+2\n', capture_output=True, text=True, timeout=30)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout, "3\n")
        self.assertEqual(p.stderr.count("refused:"), 1)


if __name__ == "__main__":
    unittest.main(verbosity=1)
