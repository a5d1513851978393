#!/usr/bin/env python3
"""A Kubernetes API server that answers at once, for bench/fanout_bench.sh: HTTPS (HTTP/1.1
keep-alive) on asyncio, no state, no authorization. It serves just what a kube_patch of a
ConfigMap asks: discovery (/api, /api/v1, /apis) and GET/PATCH of
/api/v1/namespaces/NS/configmaps/NAME (the answer is the object with data.value = "rbl").
Its own cost per request is a few tens of microseconds, so a fan-out measured against it is
rbl's cost, not the stand-in's (tests/kube/standin does real work per request).
usage: instant_kube.py --cert CRT --key KEY --port-file FILE [--token TOKEN]"""
import argparse, asyncio, json, re, ssl

CM = re.compile(rb"^/api/v1/namespaces/([a-z0-9-]+)/configmaps/([a-z0-9.-]+)$")
RESOURCES = {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "v1", "resources": [
    {"name": "configmaps", "singularName": "configmap", "namespaced": True, "kind": "ConfigMap",
     "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"], "shortNames": ["cm"]},
    {"name": "namespaces", "singularName": "namespace", "namespaced": False, "kind": "Namespace",
     "verbs": ["get", "list"], "shortNames": ["ns"]}]}
FIXED = {b"/api": {"kind": "APIVersions", "versions": ["v1"]},
         b"/api/v1": RESOURCES,
         b"/apis": {"kind": "APIGroupList", "apiVersion": "v1", "groups": []},
         b"/version": {"major": "1", "minor": "32", "gitVersion": "v1.32.4"}}


def answer(method, path, token_ok):
    if not token_ok:
        return 401, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Unauthorized", "code": 401}
    path = path.split(b"?", 1)[0]
    if method == b"GET" and path in FIXED:
        return 200, FIXED[path]
    m = CM.match(path)
    if m and method in (b"GET", b"PATCH"):
        ns, name = m.group(1).decode(), m.group(2).decode()
        return 200, {"apiVersion": "v1", "kind": "ConfigMap",
                     "metadata": {"name": name, "namespace": ns, "resourceVersion": "2",
                                  "uid": "00000000-0000-0000-0000-000000000001"},
                     "data": {"value": "rbl" if method == b"PATCH" else "original"}}
    return 404, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404}


async def serve(reader, writer, token):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.split(b"\r\n")
            method, path, _ = lines[0].split(b" ", 2)
            length, auth = 0, b""
            for l in lines[1:]:
                k, _, v = l.partition(b":")
                k = k.strip().lower()
                if k == b"content-length":
                    length = int(v)
                elif k == b"authorization":
                    auth = v.strip()
            if length:
                await reader.readexactly(length)
            status, obj = answer(method, path, token is None or auth == b"Bearer " + token)
            body = json.dumps(obj).encode()
            writer.write(b"HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                         % (status, len(body)) + body)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, ValueError, ssl.SSLError):
        pass
    finally:
        writer.close()


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--token")
    a = ap.parse_args()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(a.cert, a.key)
    token = a.token.encode() if a.token else None
    srv = await asyncio.start_server(lambda r, w: serve(r, w, token), "127.0.0.1", 0, ssl=ctx, backlog=2048)
    with open(a.port_file + ".tmp", "w") as f:
        f.write(str(srv.sockets[0].getsockname()[1]))
    import os
    os.rename(a.port_file + ".tmp", a.port_file)
    async with srv:
        await srv.serve_forever()

asyncio.run(main())
