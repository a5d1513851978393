#!/usr/bin/env python3
"""The peer of rbl's docker_exec fan-out in bench/docker_bench.sh: a minimal client of the
Docker Engine API on raw unix sockets, doing the same execs with the same concurrency and the
same three requests per exec (create, start attached, inspect for the exit code), and checking
each output as the rbl runbook does. No scope check, no audit: the floor rbl is measured against.
usage: docker_raw_exec.py SOCKET API_VERSION PREFIX N CONTAINERS CONCURRENCY"""
import json, socket, sys, threading

sock_path, ver, prefix, n, k, c = sys.argv[1], sys.argv[2], sys.argv[3], *map(int, sys.argv[4:7])


class Conn:
    """One keep-alive HTTP/1.1 connection to the daemon."""

    def __init__(self):
        self.s = None

    def request(self, method, path, body=None, until_close=False):
        if self.s is None:
            self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.s.connect(sock_path)
        data = b"" if body is None else json.dumps(body).encode()
        head = "%s /v%s%s HTTP/1.1\r\nHost: docker\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % (
            method, ver, path, len(data))
        self.s.sendall(head.encode() + data)
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = self.s.recv(65536)
            if not chunk:
                raise ConnectionError("daemon closed the connection")
            buf += chunk
        head, rest = buf.split(b"\r\n\r\n", 1)
        lines = head.decode().split("\r\n")
        status = int(lines[0].split()[1])
        hdr = {l.split(":", 1)[0].lower(): l.split(":", 1)[1].strip() for l in lines[1:] if ":" in l}
        if "content-length" in hdr and not until_close:
            want = int(hdr["content-length"])
            while len(rest) < want:
                rest += self.s.recv(65536)
            return status, rest[:want]
        if hdr.get("transfer-encoding") == "chunked" and not until_close:
            out = b""
            while True:
                while b"\r\n" not in rest:
                    rest += self.s.recv(65536)
                size_line, rest = rest.split(b"\r\n", 1)
                size = int(size_line, 16)
                while len(rest) < size + 2:
                    rest += self.s.recv(65536)
                out, rest = out + rest[:size], rest[size + 2:]
                if size == 0:
                    return status, out
        while True:  # the attached stream: until the daemon closes it
            chunk = self.s.recv(65536)
            if not chunk:
                break
            rest += chunk
        self.s.close()
        self.s = None
        return status, rest


def demux(raw):
    """stdout of Docker's multiplexed stream (8-byte frame headers)."""
    out, i = b"", 0
    while i + 8 <= len(raw):
        size = int.from_bytes(raw[i + 4:i + 8], "big")
        if raw[i] == 1:
            out += raw[i + 8:i + 8 + size]
        i += 8 + size
    return out


def one(conn, i):
    name = "%s%d" % (prefix, (i - 1) % k + 1)
    st, b = conn.request("POST", "/containers/%s/exec" % name,
                         {"AttachStdout": True, "AttachStderr": True, "Cmd": ["echo", str(i)]})
    assert st == 201, (st, b)
    eid = json.loads(b)["Id"]
    start = Conn()
    st, raw = start.request("POST", "/exec/%s/start" % eid, {"Detach": False, "Tty": False}, until_close=True)
    assert st == 200, st
    st, b = conn.request("GET", "/exec/%s/json" % eid)
    assert st == 200 and json.loads(b)["ExitCode"] == 0
    assert demux(raw) == ("%d\n" % i).encode(), (i, raw)


nexti, lock, errors = [1], threading.Lock(), []


def worker():
    conn = Conn()
    while True:
        with lock:
            i = nexti[0]
            nexti[0] += 1
        if i > n:
            return
        try:
            one(conn, i)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append("%d: %r" % (i, e))
            return


threads = [threading.Thread(target=worker) for _ in range(c)]
for t in threads:
    t.start()
for t in threads:
    t.join()
if errors:
    sys.exit("docker_raw_exec: " + "; ".join(errors[:3]))
