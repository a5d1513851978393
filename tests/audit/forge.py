#!/usr/bin/env python3
"""Forges audit records the way an attacker who can write the chain file would: records appended
with a correct hash chain (and, given the key, a correct MAC), so that only a key, a signature or
--head can tell them from the writer's. ASCII content only (Python's sorted-key JSON is then JCS).
usage: forge.py CHAIN 'PYTHON-EXPR' [KEYFILE]
  PYTHON-EXPR is evaluated with `recs` (the chain's records, parsed) and must return the list of
  records (without seq/prev/hash/mac) to append; each keeps its own run, incident and ts."""
import hashlib, hmac, json, sys

def canon(o):
    return json.dumps(o, sort_keys=True, separators=(",", ":"), ensure_ascii=False)

path, expr = sys.argv[1], sys.argv[2]
key = open(sys.argv[3], "rb").read() if len(sys.argv) > 3 else None
recs = [json.loads(l) for l in open(path, encoding="utf-8") if l.strip()]
new = eval(expr, {"recs": recs, "json": json})
last = recs[-1]
seq, prev = last["seq"], last["hash"]
with open(path, "a", encoding="utf-8") as f:
    for r in new:
        seq += 1
        r = {k: v for k, v in r.items() if k not in ("hash", "mac")}
        r = dict(r, seq=seq, prev=prev)
        r.setdefault("incident", last["incident"])
        r.setdefault("ts", last["ts"])
        c = canon(r).encode()
        h = "sha256:" + hashlib.sha256(c).hexdigest()
        r["hash"] = h
        if key is not None:
            r["mac"] = "hmac-sha256:" + hmac.new(key, c, hashlib.sha256).hexdigest()
        f.write(canon(r) + "\n")
        prev = h
