#!/usr/bin/env python3
"""A unix-socket proxy in front of dockerd for the docker tests: logs every request line,
can run a command once before forwarding the first request that matches a pattern (to stage
a race between rbl's scope check and its effect), and can be killed to play a daemon that dies.

usage: proxy.py LISTEN TARGET [--log FILE] [--mode OCTAL] [--on REGEX --run SHELLCMD]
"""
import argparse, os, re, socket, subprocess, sys, threading

REQ = re.compile(rb"^(GET|POST|PUT|DELETE|HEAD|PATCH) (\S+) HTTP/1\.[01]\r\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("listen")
    ap.add_argument("target")
    ap.add_argument("--log")
    ap.add_argument("--mode", default="0660")
    ap.add_argument("--on")
    ap.add_argument("--run")
    a = ap.parse_args()
    lock = threading.Lock()
    fired = [False]
    logf = open(a.log, "a", buffering=1) if a.log else None
    on = re.compile(a.on) if a.on else None

    def note(line):
        if logf:
            with lock:
                logf.write(line + "\n")

    def pump(src, dst, sniff):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if sniff:
                    m = REQ.match(data)
                    if m:
                        line = (m.group(1) + b" " + m.group(2)).decode("latin-1")
                        note(line)
                        if on and a.run and not fired[0] and on.search(line):
                            fired[0] = True
                            subprocess.run(a.run, shell=True)
                            note("HOOK ran before " + line)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def serve(cli):
        up = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            up.connect(a.target)
        except OSError:
            cli.close()
            return
        threading.Thread(target=pump, args=(up, cli, False), daemon=True).start()
        pump(cli, up, True)

    if os.path.exists(a.listen):
        os.unlink(a.listen)
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(a.listen)
    os.chmod(a.listen, int(a.mode, 8))
    srv.listen(128)
    while True:
        cli, _ = srv.accept()
        threading.Thread(target=serve, args=(cli,), daemon=True).start()


if __name__ == "__main__":
    sys.exit(main())
