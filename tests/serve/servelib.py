"""Shared by the rbl serve tests: a work directory with a config, starting and stopping
`rbl serve`, posting Alertmanager payloads, reading the spool and the chains."""
import glob, http.client, json, os, signal, socket, subprocess, sys, tempfile, time

TOKEN = "serve-test-token-0123456789"
HERE = os.path.dirname(os.path.abspath(__file__))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


FAILED = []


def check(cond, what):
    if cond:
        print("ok   -", what)
    else:
        print("FAIL -", what)
        FAILED.append(what)
    return cond


def done():
    if FAILED:
        print("%d check(s) failed" % len(FAILED))
        sys.exit(1)
    print("all checks passed")


RUNBOOK = r'''
runbook { id = "serve-test", params = { svc = "none", group = "none", marker = "none", sleep = "0" } }
step "mark" {
  run = function(ctx)
    exec({ "/bin/sh", "-c", 'echo "$1 $2" >> "$3"; sleep "$4"', "sh", params.group, params.svc,
           params.marker, params.sleep })
  end,
}
'''

RESOLVED_RUNBOOK = r'''
-- the route passes all its params to both runbooks; an undeclared --param is exit 2
runbook { id = "serve-test-resolved", params = { svc = "none", group = "none", marker = "none", sleep = "0" } }
step "note" {
  run = function(ctx)
    exec({ "/bin/sh", "-c", 'echo "resolved $1" >> "$2"', "sh", params.group, params.marker })
  end,
}
'''


class Env:
    """A directory with rb.lua, cfg.lua, the token file and the spool."""

    def __init__(self, rbl, serve_extra="", route_extra="", tenants=("t1", "t2")):
        self.rbl = rbl
        self.dir = tempfile.mkdtemp(prefix="rbl-serve-")
        self.marker = os.path.join(self.dir, "marks")
        self.port = free_port()
        self.url = "127.0.0.1:%d" % self.port
        self.proc = None
        with open(os.path.join(self.dir, "rb.lua"), "w") as f:
            f.write(RUNBOOK)
        with open(os.path.join(self.dir, "resolved.lua"), "w") as f:
            f.write(RESOLVED_RUNBOOK)
        fd = os.open(os.path.join(self.dir, "token"), os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(fd, (TOKEN + "\n").encode())
        os.close(fd)
        self.write_config(serve_extra, route_extra, tenants)

    def write_config(self, serve_extra="", route_extra="", tenants=("t1", "t2")):
        ts = ", ".join('"%s"' % t for t in tenants)
        cfg = """return {
  tenants = { %s },
  exec = { allow = { "/bin/sh" } },
  limits = { run_timeout = 60 },
  serve = { token_file = "token", spool = "spool", %s
    routes = {
      { name = "svc", match = { alertname = "SvcDown" }, match_re = { severity = "crit.*|page" },
        runbook = "rb.lua", resolved_runbook = "resolved.lua",
        params = { svc = "service", group = "group", marker = "marker", sleep = "sleep" }, %s },
    } },
}
""" % (ts, serve_extra, route_extra)
        with open(os.path.join(self.dir, "cfg.lua"), "w") as f:
            f.write(cfg)

    def start(self, wait=True, expect_fail=False):
        self.err = open(os.path.join(self.dir, "serve.err"), "ab")
        self.proc = subprocess.Popen([self.rbl, "serve", "--config", os.path.join(self.dir, "cfg.lua"),
                                      "--listen", self.url], stdout=self.err, stderr=self.err)
        if not wait:
            return self.proc
        for _ in range(200):
            if self.proc.poll() is not None:
                if expect_fail:
                    return self.proc
                raise RuntimeError("rbl serve exited %d: %s" % (self.proc.returncode, self.stderr()))
            try:
                if getattr(self, "tls_probe", False):  # TLS: a connection is enough
                    socket.create_connection(("127.0.0.1", self.port), timeout=2).close()
                    return self.proc
                c = http.client.HTTPConnection(self.url, timeout=2)
                c.request("GET", "/healthz")
                c.getresponse().read()
                return self.proc
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("rbl serve did not listen: " + self.stderr())

    def stderr(self):
        with open(os.path.join(self.dir, "serve.err"), errors="replace") as f:
            return f.read()

    def stop(self, sig=signal.SIGTERM, timeout=60):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        rc = self.proc.returncode if self.proc else None
        self.proc = None
        return rc

    def request(self, method, path, body=None, token=TOKEN, headers=None, conn=None):
        c = conn or http.client.HTTPConnection(self.url, timeout=30)
        h = dict(headers or {})
        if token is not None:
            h["Authorization"] = "Bearer " + token
        if body is not None and not isinstance(body, (bytes, str)):
            body = json.dumps(body)
        c.request(method, path, body=body, headers=h)
        r = c.getresponse()
        data = r.read()
        if conn is None:
            c.close()
        try:
            j = json.loads(data)
        except ValueError:
            j = data.decode(errors="replace")
        return r.status, j

    def post(self, payload, **kw):
        return self.request("POST", "/v1/alertmanager", payload, **kw)

    def runs(self):
        st, j = self.request("GET", "/v1/runs")
        assert st == 200, (st, j)
        return j

    def metrics(self):
        c = http.client.HTTPConnection(self.url, timeout=10)
        c.request("GET", "/metrics")
        text = c.getresponse().read().decode()
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                k, v = line.rsplit(" ", 1)
                out[k] = float(v)
        return out

    def wait_idle(self, timeout=60):
        end = time.time() + timeout
        while time.time() < end:
            j = self.runs()
            if j["queued"] == 0 and j["in_flight"] == 0:
                return j
            time.sleep(0.1)
        raise RuntimeError("runs did not finish: %s" % json.dumps(self.runs())[:2000])

    def marks(self):
        try:
            with open(self.marker) as f:
                return [l.split() for l in f.read().splitlines() if l.strip()]
        except FileNotFoundError:
            return []

    def chains(self):
        return glob.glob(os.path.join(self.dir, "spool", "audit", "*.jsonl"))

    def chain_records(self):
        out = []
        for p in self.chains():
            with open(p) as f:
                for line in f:
                    if line.strip():
                        out.append(json.loads(line))
        return out

    def verify_chains(self):
        bad = []
        for p in self.chains() + [os.path.join(self.dir, "spool", "serve.jsonl")]:
            r = subprocess.run([self.rbl, "audit", "verify", p], capture_output=True, text=True)
            if r.returncode != 0:
                bad.append((p, r.stdout + r.stderr))
        return bad


def alert(group, tenant="t1", status="firing", svc="api", sleep="0", marker=None, **labels):
    lab = {"alertname": "SvcDown", "severity": "critical", "tenant": tenant, "service": svc,
           "group": group, "sleep": sleep}
    if marker:
        lab["marker"] = marker
    lab.update(labels)
    return {"status": status, "labels": lab, "annotations": {}, "startsAt": "2026-01-01T00:00:00Z",
            "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "http://prom/graph", "fingerprint": group}


def payload(group, alerts, status=None):
    st = status or ("firing" if any(a["status"] == "firing" for a in alerts) else "resolved")
    return {"version": "4", "groupKey": '{}:{group="%s"}' % group, "truncatedAlerts": 0,
            "status": st, "receiver": "rbl", "groupLabels": {"group": group},
            "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://am", "alerts": alerts}
