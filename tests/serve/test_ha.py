"""serve.ha (docs/serve.md, "Across replicas"): two rbl serve replicas, each with its own spool,
one Kubernetes API stand-in over TLS with RBAC and a request log.

  - a lease namespace RBAC refuses: a clear error at start, exit 2; a bad lease_namespace: exit 2;
  - the same alert posted to both replicas runs once (both /v1/runs, the runbook's effect, the
    chains, the stand-in's log: one Lease create, no second run_start);
  - kill -9 of the holder mid-run: its child dies with it (SIGKILL), the other replica waits for
    the Lease to expire, takes it over (the PUT is in the log), marks its run interrupted (by
    takeover) and runs nothing; no second run_start anywhere; the holder's own replay, when it
    comes back, appends interrupted to the run's chain; every chain verifies;
  - a 409 on renew (injected once with the stand-in's --fail) leaves the run running and holding;
  - a Lease another holder takes mid-run is lost: the run is canceled;
  - the lease agent killed: serve starts a new one and the next alert runs under its Lease.

Waits are keyed on events (answers of /v1/runs, lines of the log) with generous bounds, so the
test holds on a loaded machine. usage: test_ha.py RBL"""
import json, os, shutil, signal, ssl, subprocess, sys, tempfile, time, urllib.error, urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from servelib import Env, alert, check, done, payload  # noqa: E402

RBL = os.path.abspath(sys.argv[1])
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STANDIN = os.path.join(ROOT, "tests", "kube", "standin", "kube_standin.py")
LEASE_SECONDS = 9
LEASES = "/apis/coordination.k8s.io/v1/namespaces/rbl-system/leases"

WORK = tempfile.mkdtemp(prefix="rbl-serve-ha-")
subprocess.run(["bash", os.path.join(ROOT, "tests", "kube", "mkcerts.sh"), os.path.join(WORK, "certs")],
               check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
CA = os.path.join(WORK, "certs", "ca.crt")
FIXTURES = os.path.join(WORK, "fixtures.yaml")
SA_USER = "rbl-serve"
with open(FIXTURES, "w") as f:
    # the Role and RoleBinding for Leases are deploy/rbl-serve.yaml's own (get, create, update on
    # leases in rbl-system); the binding's subject becomes the user the stand-in's token names
    # (--token cannot name a ServiceAccount user: it splits USER:GROUPS at ':')
    import yaml
    docs = [d for d in yaml.safe_load_all(open(os.path.join(ROOT, "deploy", "rbl-serve.yaml")))
            if d and d["kind"] in ("Role", "RoleBinding") and d["metadata"]["name"] == "rbl-serve-leases"]
    assert len(docs) == 2, "deploy/rbl-serve.yaml lost its Lease Role or RoleBinding"
    for d in docs:
        if d["kind"] == "RoleBinding":
            d["subjects"] = [{"kind": "User", "name": SA_USER}]
    docs = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "rbl-system"}},
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "other"}}] + docs
    f.write(yaml.safe_dump_all(docs))

STANDINS = []
ENVS = []


def standin(name, *extra):
    d = os.path.join(WORK, name)
    os.makedirs(d)
    log = os.path.join(d, "requests.log")
    p = subprocess.Popen([sys.executable, STANDIN, "--fixtures", FIXTURES, "--port", "0", "--port-file",
                          os.path.join(d, "port"), "--tls-cert", os.path.join(WORK, "certs", "server.crt"),
                          "--tls-key", os.path.join(WORK, "certs", "server.key"),
                          "--token", "serve-token=" + SA_USER, "--token", "other-token=nobody",
                          "--authorization-mode", "RBAC", "--log", log] + list(extra),
                         stderr=open(os.path.join(d, "stderr"), "w"))
    STANDINS.append(p)
    for _ in range(600):
        if os.path.exists(os.path.join(d, "port")) and open(os.path.join(d, "port")).read().strip():
            break
        if p.poll() is not None:
            raise RuntimeError("stand-in exited: " + open(os.path.join(d, "stderr")).read())
        time.sleep(0.05)
    port = int(open(os.path.join(d, "port")).read().strip())
    return "https://127.0.0.1:%d" % port, log


def log_lines(log):
    out = []
    try:
        with open(log) as f:
            for line in f:
                if line.strip():
                    out.append(json.loads(line))
    except FileNotFoundError:
        pass
    return out


def replica(server, ident, token="serve-token", ns="rbl-system", marker_dir=None):
    e = Env(RBL, serve_extra='ha = { lease_namespace = "%s", lease_seconds = %d, identity = "%s" },'
            % (ns, LEASE_SECONDS, ident))
    kc = os.path.join(e.dir, "kubeconfig")
    with open(kc, "w") as f:
        f.write("""apiVersion: v1
kind: Config
clusters: [{name: standin, cluster: {server: "%s", certificate-authority: "%s"}}]
users: [{name: serve, user: {token: %s}}]
contexts: [{name: standin, context: {cluster: standin, user: serve}}]
current-context: standin
""" % (server, CA, token))
    cfg = os.path.join(e.dir, "cfg.lua")
    text = open(cfg).read().replace("return {\n", 'return {\n  kube = { kubeconfig = "%s" },\n' % kc, 1)
    with open(cfg, "w") as f:
        f.write(text)
    e.ident = ident
    ENVS.append(e)
    return e


def wait_for(what, fn, timeout=120):
    end = time.time() + timeout
    while time.time() < end:
        v = fn()
        if v:
            return v
        time.sleep(0.2)
    raise RuntimeError("timed out waiting for: " + what)


def runs_of(e, incident):
    return [r for r in e.runs()["runs"] if r["incident"] == incident]


def run_starts(e, incident):
    p = os.path.join(e.dir, "spool", "audit", incident + ".jsonl")
    if not os.path.exists(p):
        return 0, []
    recs = [json.loads(l) for l in open(p) if l.strip()]
    return sum(1 for r in recs if r["kind"] == "run_start"), recs


def cleanup():
    for e in ENVS:
        try:
            e.stop(signal.SIGKILL, timeout=10)
        except Exception:
            pass
    for p in STANDINS:
        p.kill()
        p.wait()
    if not os.environ.get("KEEP"):
        for e in ENVS:
            shutil.rmtree(e.dir, ignore_errors=True)


try:
    # ---- start: refused by RBAC, a bad namespace ----
    server, log = standin("main")
    bad = replica(server, "replica-x", token="other-token")
    p = bad.start(expect_fail=True)
    p.wait(60)
    err = bad.stderr()
    check(p.returncode == 2, "RBAC refusing Leases: rbl serve exits 2 (got %s)" % p.returncode)
    check("refuses to let this replica read Leases in namespace rbl-system" in err and
          "grant get, create and update on leases in rbl-system" in err and "403" in err,
          "the error names the namespace, the 403 and the fix: %s" % err.strip()[-400:])
    check("listening" not in err, "it never listened")
    bad2 = replica(server, "replica-y", ns="Not_A_Namespace")
    p = bad2.start(expect_fail=True)
    p.wait(60)
    check(p.returncode == 2 and "serve.ha.lease_namespace 'Not_A_Namespace' is not a namespace name" in bad2.stderr(),
          "a bad lease_namespace is exit 2 with the key named: %s" % bad2.stderr().strip()[-200:])
    bad3 = replica(server, "replica-z", ns="other")
    p = bad3.start(expect_fail=True)
    p.wait(60)
    check(p.returncode == 2 and "namespace other" in bad3.stderr(),
          "a namespace the Role does not cover is refused at start: %s" % bad3.stderr().strip()[-200:])

    # ---- two replicas, the same alert to both: it runs once ----
    base = len(log_lines(log))  # what the refused replicas asked is not the pair's
    a = replica(server, "replica-a")
    b = replica(server, "replica-b")
    marks = os.path.join(WORK, "marks")
    a.start()
    b.start()
    pl = payload("g-once", [alert("g-once", sleep="3", marker=marks)])
    sa, ja = a.post(pl)
    sb, jb = b.post(pl)
    check(sa == 200 and sb == 200, "both replicas accept the alert (%s, %s)" % (sa, sb))
    inc = ja["results"][0]["incident"]
    check(jb["results"][0]["incident"] == inc, "both name the same incident")
    ra = wait_for("both replicas end the incident's run",
                  lambda: all(r["state"] == "done" for e in (a, b) for r in runs_of(e, inc)) and
                  len(runs_of(a, inc)) == 1 and len(runs_of(b, inc)) == 1 and [runs_of(a, inc)[0], runs_of(b, inc)[0]])
    outcomes = sorted(r["outcome"] for r in ra)
    check(outcomes == ["elsewhere", "succeeded"], "one replica ran it, the other recorded elsewhere: %s" % outcomes)
    ran = [r for r in ra if r["outcome"] == "succeeded"][0]
    other = [r for r in ra if r["outcome"] == "elsewhere"][0]
    holder = "replica-a" if ran in runs_of(a, inc) else "replica-b"
    check(other["ha"]["state"] == "elsewhere" and other["ha"]["holder"] == holder,
          "the other's /v1/runs names the replica that ran it: %s" % other.get("ha"))
    check(ran["ha"]["state"] == "released" and ran["ha"]["lease"].startswith("rbl-") and len(ran["ha"]["lease"]) == 20,
          "the runner released its Lease rbl-<16 hex>: %s" % ran.get("ha"))
    n = sum(1 for l in open(marks) if l.split()[0] == "g-once") if os.path.exists(marks) else 0
    check(n == 1, "the runbook's effect happened once (%d)" % n)
    starts = run_starts(a, inc)[0] + run_starts(b, inc)[0]
    check(starts == 1, "one run_start across both replicas' chains (%d)" % starts)
    lease = ran["ha"]["lease"]
    reqs = [r for r in log_lines(log)[base:] if r["path"].startswith(LEASES)]
    creates = [r for r in reqs if r["method"] == "POST" and r["status"] == 201 and lease in (r.get("body") or "")]
    check(len(creates) == 1, "the stand-in created the Lease once (%d)" % len(creates))
    check(all(r["method"] in ("GET", "POST", "PUT") for r in reqs), "only GET, POST and PUT of Leases were sent")
    check(all(r["user"] == SA_USER for r in reqs), "every Lease request is the replicas' user")
    other_paths = [r["path"] for r in log_lines(log)[base:] if not r["path"].startswith(LEASES)]
    check(other_paths == [], "nothing but Leases was requested: %s" % other_paths[:3])
    done_put = [r for r in reqs if r["method"] == "PUT" and r["path"].endswith(lease) and r["status"] == 200 and
                json.loads(r["body"])["metadata"]["annotations"].get("rbl.io/state") == "done"]
    check(len(done_put) == 1, "the release is a PUT with state done (%d)" % len(done_put))
    bad_times = [r for r in reqs if r["method"] in ("POST", "PUT") and r["status"] == 400]
    check(bad_times == [], "every renewTime/acquireTime sent was a valid MicroTime")

    # ---- kill -9 of the holder mid-run: the other takes over, marks it interrupted ----
    pl = payload("g-kill", [alert("g-kill", sleep="300", marker=marks)])
    sa, ja = a.post(pl)
    sb, _ = b.post(pl)
    inc = ja["results"][0]["incident"]
    check(sa == 200 and sb == 200, "both accept the second alert")

    def roles():
        rs = {e.ident: runs_of(e, inc) for e in (a, b)}
        if not all(len(v) == 1 for v in rs.values()):
            return None
        run = [e for e in (a, b) if rs[e.ident][0]["state"] == "running"]
        stand = [e for e in (a, b) if (rs[e.ident][0].get("ha") or {}).get("state") == "standby"]
        if len(run) == 1 and len(stand) == 1 and os.path.exists(marks) and \
                any(l.split()[0] == "g-kill" for l in open(marks)):
            return run[0], stand[0], rs[run[0].ident][0]
        return None
    holder_env, survivor, hrun = wait_for("one replica runs the incident, the other stands by", roles)
    child = hrun["pid"]
    t_kill = time.time()
    holder_env.proc.send_signal(signal.SIGKILL)
    holder_env.proc.wait()
    wait_for("the holder's child dies with it (SIGKILL on parent death)",
             lambda: not os.path.exists("/proc/%d" % child) or
             open("/proc/%d/stat" % child).read().split(") ")[1].startswith("Z"), timeout=30)
    check(True, "the holder's child died with it")
    srun = wait_for("the survivor marks the run interrupted",
                    lambda: [r for r in runs_of(survivor, inc) if r["state"] == "done"], timeout=120)[0]
    waited = time.time() - t_kill
    check(srun["outcome"] == "interrupted", "the survivor's run is interrupted (%s)" % srun["outcome"])
    tk = (srun.get("ha") or {}).get("interrupted_by_takeover") or {}
    check(tk.get("holder") == holder_env.ident and tk.get("holder_run") == hrun["id"],
          "/v1/runs shows it interrupted by takeover of %s's run %s: %s" % (holder_env.ident, hrun["id"], tk))
    check(waited >= LEASE_SECONDS - 1, "the takeover waited for the Lease to expire (%.1f s >= %d s)"
          % (waited, LEASE_SECONDS - 1))
    takeover = [r for r in log_lines(log) if r["method"] == "PUT" and r["status"] == 200 and
                r["path"].endswith(srun["ha"]["lease"]) and
                json.loads(r["body"])["metadata"]["annotations"].get("rbl.io/state") == "interrupted"]
    check(len(takeover) == 1, "the takeover PUT is in the stand-in's log (%d)" % len(takeover))
    if takeover:
        ann = json.loads(takeover[0]["body"])["metadata"]["annotations"]
        spec = json.loads(takeover[0]["body"])["spec"]
        check(ann.get("rbl.io/interrupted-by") == survivor.ident and
              ann.get("rbl.io/interrupted-holder") == holder_env.ident and
              ann.get("rbl.io/interrupted-run") == hrun["id"] and ann.get("rbl.io/interrupted-at"),
              "the Lease records who interrupted it, whom and when: %s" % ann)
        check(spec.get("holderIdentity") == survivor.ident and "resourceVersion" in json.loads(takeover[0]["body"])["metadata"],
              "the takeover names the survivor and the resourceVersion it read")
    check(run_starts(survivor, inc)[0] == 0, "the survivor started nothing for the incident")
    check(run_starts(holder_env, inc)[0] == 1, "the holder's chain has its one run_start")
    serve_chain = [json.loads(l) for l in open(os.path.join(survivor.dir, "spool", "serve.jsonl")) if l.strip()]
    check(any(r.get("kind") == "serve_ha" and r.get("what") == "takeover" and r.get("holder") == holder_env.ident
              for r in serve_chain), "the takeover is on the survivor's serve chain")
    time.sleep(LEASE_SECONDS / 3 + 1)
    check(run_starts(survivor, inc)[0] == 0 and len(runs_of(survivor, inc)) == 1,
          "still no second run on the survivor a tick later")
    # the holder comes back on its own spool: its replay appends interrupted to the run's chain
    holder_env.start()
    wait_for("the holder's replay ends the run", lambda: runs_of(holder_env, inc) and
             runs_of(holder_env, inc)[0]["state"] == "done", timeout=60)
    n, recs = run_starts(holder_env, inc)
    check(runs_of(holder_env, inc)[0]["outcome"] == "interrupted", "the holder's replay marks its run interrupted")
    check(n == 1 and any(r["kind"] == "interrupted" for r in recs),
          "the run's own chain has interrupted appended, and still one run_start")
    for e in (a, b):
        check(e.verify_chains() == [], "every chain of %s verifies" % e.ident)
        check(e.stop() == 0, "%s stops cleanly (exit 0)" % e.ident)

    # ---- a 409 on renew: the run goes on and keeps its Lease ----
    server2, log2 = standin("conflict", "--fail", "PUT %s/.* 409 1" % LEASES)
    c = replica(server2, "replica-c")
    c.start()
    pl = payload("g-409", [alert("g-409", sleep=str(LEASE_SECONDS + 3), marker=marks)])
    st, j = c.post(pl)
    inc = j["results"][0]["incident"]
    faults = wait_for("the first renewal gets the injected 409",
                      lambda: [r for r in log_lines(log2) if r["method"] == "PUT" and r["status"] == 409], timeout=60)
    check(len(faults) == 1, "one renewal got the injected 409")
    after = wait_for("a renewal succeeds after the 409",
                     lambda: [r for r in log_lines(log2) if r["method"] == "PUT" and r["status"] == 200 and
                              r["ts"] > faults[0]["ts"]], timeout=60)
    check(bool(after), "after the 409 the Lease is read again and renewed with the new resourceVersion")
    mid = runs_of(c, inc)[0]
    check(mid["state"] == "running" and mid["ha"]["state"] == "held",
          "the run still runs and holds its Lease after the 409 (%s, %s)" % (mid["state"], mid["ha"]["state"]))
    fin = wait_for("the run ends", lambda: runs_of(c, inc)[0]["state"] == "done" and runs_of(c, inc)[0], timeout=120)
    check(fin["outcome"] == "succeeded", "the run succeeded: the 409 did not cancel it (%s)" % fin["outcome"])
    check("canceling" not in c.stderr(), "nothing was canceled")

    # ---- a Lease taken by someone else mid-run: lost, the run is canceled ----
    pl = payload("g-lost", [alert("g-lost", sleep="300", marker=marks)])
    st, j = c.post(pl)
    inc = j["results"][0]["incident"]
    r0 = wait_for("the run holds its Lease and runs", lambda: [r for r in runs_of(c, inc) if r["state"] == "running" and
                                                              r["ha"]["state"] == "held"], timeout=60)[0]
    ctx = ssl.create_default_context(cafile=CA)
    url = server2 + LEASES + "/" + r0["ha"]["lease"]
    hdr = {"Authorization": "Bearer serve-token", "Content-Type": "application/json"}
    for _ in range(5):  # another holder takes it with the version it read (a real conflict loop)
        cur = json.loads(urllib.request.urlopen(urllib.request.Request(url, headers=hdr), context=ctx).read())
        cur["spec"]["holderIdentity"] = "intruder"
        try:
            urllib.request.urlopen(urllib.request.Request(url, data=json.dumps(cur).encode(), headers=hdr,
                                                          method="PUT"), context=ctx).read()
            break
        except urllib.error.HTTPError as e:
            if e.code != 409:
                raise
    fin = wait_for("the run whose Lease was lost ends", lambda: runs_of(c, inc)[0]["state"] == "done" and
                   runs_of(c, inc)[0], timeout=90)
    check(fin["ha"]["state"] == "lost" and fin["ha"]["holder"] == "intruder",
          "/v1/runs shows the Lease lost to its new holder: %s" % fin["ha"])
    check(fin["outcome"] != "succeeded" and "lost the Lease of incident %s to intruder" % inc in c.stderr(),
          "the run was canceled when its Lease was lost (%s)" % fin["outcome"])
    check(c.metrics().get("rbl_serve_ha_leases_lost_total") == 1, "rbl_serve_ha_leases_lost_total counts it")

    # ---- the lease agent dies: serve starts a new one, and Leases work again ----
    def agent_pid():
        for pid in os.listdir("/proc"):
            try:
                if pid.isdigit() and open("/proc/%s/stat" % pid).read().split(") ")[1].split()[1] == str(c.proc.pid):
                    if "--lease-agent" in open("/proc/%s/cmdline" % pid).read().split("\0"):
                        return int(pid)
            except (OSError, IndexError):
                pass
        return None
    old_agent = wait_for("the lease agent is a child of serve", agent_pid, timeout=30)
    os.kill(old_agent, signal.SIGKILL)
    wait_for("serve starts a new lease agent", lambda: c.stderr().count("ha: Leases in namespace rbl-system") >= 2,
             timeout=60)
    check(agent_pid() not in (None, old_agent), "a new lease agent runs")
    st, j = c.post(payload("g-agent", [alert("g-agent", sleep="0", marker=marks)]))
    inc = j["results"][0]["incident"]
    fin = wait_for("the run after the restart ends", lambda: runs_of(c, inc) and runs_of(c, inc)[0]["state"] == "done" and
                   runs_of(c, inc)[0], timeout=90)
    check(fin["outcome"] == "succeeded" and fin["ha"]["state"] == "released",
          "after the agent's restart an alert runs under its Lease (%s, %s)" % (fin["outcome"], fin["ha"]["state"]))
    check(c.stop() == 0, "replica-c stops cleanly (exit 0)")
finally:
    cleanup()
    if not os.environ.get("KEEP"):
        shutil.rmtree(WORK, ignore_errors=True)
done()
