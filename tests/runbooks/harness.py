"""What the runbook-level suites share (test_dsl.py, test_partial.py): the real binary run on a
runbook text in a directory of its own, with its chain and report beside it; the Run that comes
back; the chain's verification."""
import json, os, subprocess, tempfile


class Run:
    def __init__(self, proc, d, audit, report):
        self.code, self.out, self.err = proc.returncode, proc.stdout, proc.stderr
        self.dir, self.audit_path = d, audit
        self.report = json.load(open(report)) if os.path.exists(report) else None

    def records(self):
        return [json.loads(l) for l in open(self.audit_path) if l.strip()]

    def logs(self):
        return [r["message"] for r in self.records() if r["kind"] == "log"]

    def status(self):
        return [(e["name"], e["status"]) for e in self.report["execution_trace"]]


def run_rbl(rbl, src, args, prefix, incident, tenants=("t1",), config=None, files=None, timeout=30,
            env=None, cls=Run):
    """rbl run SRC (as rb.lua, files beside it) --audit --report --incident INCIDENT, each tenant,
    the config when given, then args."""
    d = tempfile.mkdtemp(prefix=prefix)
    path = os.path.join(d, "rb.lua")
    open(path, "w").write(src)
    for name, text in (files or {}).items():
        open(os.path.join(d, name), "w").write(text)
    audit, report = os.path.join(d, "audit.jsonl"), os.path.join(d, "report.json")
    cmd = [rbl, "run", path, "--audit", audit, "--report", report, "--incident", incident]
    for t in tenants:
        cmd += ["--tenant", t]
    if config is not None:
        cfg = os.path.join(d, "config.lua")
        open(cfg, "w").write(config)
        cmd += ["--config", cfg]
    cmd += list(args)
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    return cls(p, d, audit, report)


def verify_chain(rbl, t, r):
    p = subprocess.run([rbl, "audit", "verify", r.audit_path], capture_output=True, text=True)
    t.assertEqual(p.returncode, 0, p.stdout + p.stderr)
