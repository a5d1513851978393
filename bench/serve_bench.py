"""rbl serve benchmark: (1) alert-to-first-primitive latency, p50/p99: from sending a webhook to
the `intent` record of the run's first primitive on its chain; (2) sustained alerts/s accepted
with durable spooling (each answer waits for an fdatasync covering its entry), against the
disk's own rate of sequential write+fdatasync measured in the same directory in the same run.
usage: serve_bench.py RBL [LATENCY_ALERTS] [FLOOD_SECONDS] [CLIENTS]"""
import datetime, json, os, socket, statistics, sys, threading, time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "serve"))
from servelib import Env, TOKEN, alert, payload  # noqa: E402

RBL = os.path.abspath(sys.argv[1])
N_LAT = int(sys.argv[2]) if len(sys.argv) > 2 else 40
FLOOD_S = float(sys.argv[3]) if len(sys.argv) > 3 else 5
CLIENTS = int(sys.argv[4]) if len(sys.argv) > 4 else 32


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def latency():
    env = Env(RBL, serve_extra="max_concurrent = 8,",
              route_extra="cooldown = 3600, max_runs_per_hour = 100000, concurrency = 8",
              tenants=tuple("t%d" % i for i in range(1, 9)))
    env.start()
    sent = {}
    for i in range(N_LAT):
        g = "lat%03d" % i
        t = time.time()
        st, j = env.post(payload(g, [alert(g, tenant="t%d" % (1 + i % 8), marker=env.marker)]))
        assert st == 200 and j["results"][0]["decision"] == "accepted", (st, j)
        sent[j["results"][0]["incident"]] = t
        time.sleep(0.25)  # one at a time: latency, not queueing
    env.wait_idle(120)
    lat = []
    for rec in env.chain_records():
        if rec["kind"] == "intent" and rec["incident"] in sent:
            ts = datetime.datetime.strptime(rec["ts"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(
                tzinfo=datetime.timezone.utc).timestamp()
            lat.append((ts - sent.pop(rec["incident"])) * 1000)
    env.stop()
    return lat


def fsync_rate(d, seconds=2.0):
    p = os.path.join(d, "fsync-probe")
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    n, t0 = 0, time.time()
    while time.time() - t0 < seconds:
        os.write(fd, b"x" * 300 + b"\n")
        os.fdatasync(fd)
        n += 1
    el = time.time() - t0
    os.close(fd)
    os.unlink(p)
    return n / el


def flood():
    env = Env(RBL, serve_extra="max_queued = 100000,",
              route_extra="cooldown = 3600, max_runs_per_hour = 100000")
    env.start()
    env.request("POST", "/v1/pause", {"by": "bench"})  # accepted runs queue; nothing runs
    peer = fsync_rate(os.path.join(env.dir, "spool"))
    count = [0]
    lock = threading.Lock()
    stop = time.time() + FLOOD_S

    def worker(k):
        s = socket.create_connection(("127.0.0.1", env.port))
        buf = b""
        i = 0
        n = 0
        while time.time() < stop:
            g = "fl%02d-%06d" % (k, i)
            i += 1
            b = json.dumps(payload(g, [alert(g, marker=env.marker)])).encode()
            s.sendall(b"POST /v1/alertmanager HTTP/1.1\r\nAuthorization: Bearer " + TOKEN.encode() +
                      b"\r\nContent-Length: %d\r\n\r\n" % len(b) + b)
            while b"\r\n\r\n" not in buf:
                buf += s.recv(65536)
            head, rest = buf.split(b"\r\n\r\n", 1)
            ln = int([l.split(b":")[1] for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")][0])
            while len(rest) < ln:
                rest += s.recv(65536)
            buf = rest[ln:]
            if head.startswith(b"HTTP/1.1 200") and b'"accepted"' in rest[:ln]:
                n += 1
        with lock:
            count[0] += n
        s.close()

    t0 = time.time()
    ts = [threading.Thread(target=worker, args=(k,)) for k in range(CLIENTS)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    el = time.time() - t0
    env.stop()
    return count[0] / el, peer


lat = latency()
rate, peer = flood()
print("alert-to-first-primitive latency over %d alerts: p50 %.1f ms, p99 %.1f ms (max %.1f)" %
      (len(lat), pct(lat, 50), pct(lat, 99), max(lat)))
print("sustained accepted alerts/s, each synced before its answer (%d clients, %.0f s): %.0f" %
      (CLIENTS, FLOOD_S, rate))
print("the disk's sequential write+fdatasync rate (same directory, same run): %.0f/s" % peer)
print("ratio accepted/s : fsyncs/s = %.1fx (group commit: one sync covers every alert waiting)" %
      (rate / peer))
