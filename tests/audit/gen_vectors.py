#!/usr/bin/env python3
"""Regenerates the "records" part of jcs_vectors.json with an implementation independent of
rbl's C code (Python's json with sorted keys is JCS for ASCII keys and integer numbers)."""
import hashlib, json, sys

def canon(o):
    return json.dumps(o, sort_keys=True, separators=(",", ":"), ensure_ascii=False)

def sha(b):
    return "sha256:" + hashlib.sha256(b).hexdigest()

inc = "INC-0847293"
genesis = sha(("rbl-audit-v1\n" + inc).encode())
recs = [
    {"kind": "run_start", "tenants": ["prod-tenant-7"],
     "runbook": {"id": "db-connection-exhaustion", "path": "runbooks/db.lua", "sha256": "sha256:" + "ab" * 32},
     "modules": [{"name": "rbl.kube", "sha256": "sha256:" + "cd" * 32}], "rbl_version": "0.1.0",
     "host": "ops-1", "user": "alice", "argv": ["rbl", "run", "runbooks/db.lua"], "dry_run": False},
    {"kind": "intent", "call": 1, "prim": "kube_patch", "tenant": "prod-tenant-7",
     "args": {"patch": {"data": {"max_connections": "500"}}, "note": "caf\u00e9 \u001b[31m \u2028 \U0001F600"},
     "target": {"kind": "configmap", "name": "db-pool-config", "namespace": "prod-tenant-7"}},
    {"kind": "result", "call": 1, "status": "error", "error": {"code": "conflict", "message": "resourceVersion \"41\" changed\n"},
     "duration_ms": 37, "summary": None, "before": {"max_connections": "100"}},
]
out, prev = [], genesis
for i, r in enumerate(recs):
    r = dict(r, seq=i, ts="2026-01-17T03:42:15.%03dZ" % (123 + i), incident=inc, run="r-1", prev=prev)
    c = canon(r)
    h = sha(c.encode())
    line = canon(dict(r, hash=h))
    out.append({"record": r, "canonical": c, "hash": h, "line": line})
    prev = h

v = json.load(open(sys.argv[1]))
v["genesis"] = {"incident": inc, "prev": genesis}
v["records"] = out
with open(sys.argv[1], "w") as f:
    json.dump(v, f, indent=1, ensure_ascii=True)
    f.write("\n")
