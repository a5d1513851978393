#!/usr/bin/env python3
"""Numbers in the report and in `rbl audit show` are exact.

cJSON prints a number with 15 significant digits (17 when those do not read back within its
epsilon), so 9007199254740993 became 9.00719925474099e+15 and math.maxinteger
9.2233720368547758e+18. The report prints every integer digit for digit (to 2^63) and every
double so that it reads back as the same double; `rbl audit show` (--json and the timeline)
prints each number exactly as the chain holds it.

usage: test_numbers.py path/to/rbl
"""
import json
import os
import subprocess
import sys
import tempfile

RBL = os.path.realpath(sys.argv[1])
VALUES = {
    "big": ("9007199254740993", 9007199254740993),  # 2^53 + 1
    "d": ("10000000000000001", 10000000000000001),  # 1e16 + 1
    "max": ("math.maxinteger", 2**63 - 1),
    "min": ("math.mininteger", -(2**63)),
    "f": ("2^53 + 2", 9007199254740994.0),
    "tenth": ("0.1", 0.1),
    "third": ("1/3", 1 / 3),
    "e": ("1e300", 1e300),
    "n16": ("8888888888888889", 8888888888888889),
}
RUNBOOK = """runbook { id = "numbers" }
step "numbers" {
  run = function()
    local v = { %s }
    local zero = {}
    for k in pairs(v) do zero[k] = 0 end
    drift_compare(v, zero)
  end,
}
""" % ", ".join("%s = %s" % (k, lua) for k, (lua, _) in VALUES.items())

fails = 0


def check(ok, what):
    global fails
    print(("ok - " if ok else "not ok - ") + what)
    if not ok:
        fails += 1


def same(a, b):
    """Equal values of the same JSON kind (an int is not a float that rounds to it)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


with tempfile.TemporaryDirectory(prefix="rbl-numbers.") as w:
    with open(os.path.join(w, "n.lua"), "w") as f:
        f.write(RUNBOOK)
    p = subprocess.run([RBL, "run", "n.lua", "--tenant", "t1", "--report", "r.json", "--audit",
                        "a.jsonl", "--quiet"], cwd=w, capture_output=True, text=True, timeout=60)
    check(p.returncode == 0, "run exits 0 (%d: %s)" % (p.returncode, p.stderr[:300]))

    # the report: the drift items carry the runbook's own values
    with open(os.path.join(w, "r.json")) as f:
        report = json.load(f)
    items = {it["field"]: it["actual"] for it in report["execution_trace"][0]["drift_detected"]}
    for k, (lua, want) in VALUES.items():
        got = items.get(k)
        ok = got == want and (isinstance(want, float) or type(got) is int)
        check(ok, "report: %s = %s is %r (want %r)" % (k, lua, got, want))

    # audit show --json: each number as the chain line holds it (JSON parsed exactly by Python)
    with open(os.path.join(w, "a.jsonl")) as f:
        intent = [json.loads(l) for l in f if '"kind":"intent"' in l][0]
    held = intent["args"][0]
    p = subprocess.run([RBL, "audit", "show", "a.jsonl", "--json"], cwd=w, capture_output=True,
                       text=True, timeout=60)
    check(p.returncode == 0, "audit show --json exits 0 (%s)" % p.stderr[:300])
    shown = None
    for run in json.loads(p.stdout)["runs"]:
        for e in run.get("events", []):
            if e.get("prim") == "drift_compare" and "args" in e:
                shown = e["args"][0]
    check(shown is not None, "audit show --json has the call's arguments")
    for k in VALUES:
        check(shown is not None and same(shown.get(k), held[k]),
              "audit show --json: %s is %r, the chain holds %r" % (k, shown and shown.get(k),
                                                                  held[k]))
    # the integers the chain holds as integers are shown as integers, digit for digit
    check(type(held["max"]) is int and held["max"] == 9223372036854776000,
          "the chain holds math.maxinteger as the integer 9223372036854776000 (%r)" % held["max"])
    check(held["big"] == 9007199254740992,
          "the chain holds 2^53+1 rounded to a double, as docs/audit.md says (%r)" % held["big"])

    # the timeline prints the same digits
    p = subprocess.run([RBL, "audit", "show", "a.jsonl"], cwd=w, capture_output=True, text=True,
                       timeout=60)
    line = [l for l in p.stdout.splitlines() if "drift_compare" in l]
    want = json.dumps(held["big"])
    check(len(line) == 1 and ('"big":%s' % want) in line[0],
          "audit show timeline: big as %s (%s)" % (want, line[0][:200] if line else "no line"))

print("%d failed" % fails if fails else "all passed")
sys.exit(1 if fails else 0)
