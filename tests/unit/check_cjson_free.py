#!/usr/bin/env python3
"""cJSON's memory goes back to cJSON, and only cJSON's memory does.

cJSON allocates through hooks (src/core/budget.c counts them against the run's budget), so a
string from cJSON_Print, cJSON_PrintUnformatted or cJSON_PrintBuffered is released with
cJSON_free, never free(); and a string handed to a cJSON item (valuestring) must come from cJSON
(cJSON_SetValuestring, cJSON_malloc), never malloc. tests/unit/test_engine.c proves the budget drifts otherwise
for the paths a unit test reaches; this check covers every C file of the tree.

Within each function, a variable assigned from cJSON_Print* must not reach free(VAR); an
out-parameter (*VAR = cJSON_Print...) must not reach free(VAR) anywhere in its file.

usage: check_cjson_free.py REPO_ROOT
"""
import os
import re
import sys

root = sys.argv[1]
ASSIGN = re.compile(r"(\*?)\s*([A-Za-z_][\w.>\-]*)\s*=\s*[^;=]*?\bcJSON_Print(?:Unformatted|Buffered)?\s*\(")
VALUESTRING = re.compile(r"->valuestring\s*=(?!=)(?!\s*cJSON_malloc\s*\()")


def strip(text):
    """Comments and string/char literals blanked (same length, lines kept)."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif c in "\"'":
            j = i + 1
            while j < n and text[j] != c:
                j += 2 if text[j] == "\\" else 1
            out.append(c + " " * (min(j, n) - i - 1) + (c if j < n else ""))
            i = j + 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def functions(code):
    """(start, end) offsets of each top-level brace block."""
    depth, start = 0, None
    for i, c in enumerate(code):
        if c == "{":
            if depth == 0:
                start = i
            depth += 1
        elif c == "}" and depth > 0:
            depth -= 1
            if depth == 0:
                yield start, i + 1


def line_of(code, off):
    return code.count("\n", 0, off) + 1


problems = []
for top in ("src", "tests", "bench"):
    for d, _, files in os.walk(os.path.join(root, top)):
        for name in files:
            if not name.endswith(".c"):
                continue
            path = os.path.join(d, name)
            rel = os.path.relpath(path, root)
            with open(path, encoding="utf-8", errors="replace") as f:
                code = strip(f.read())
            for m in VALUESTRING.finditer(code):
                problems.append("%s:%d: a string assigned to valuestring (cJSON frees it with "
                                "cJSON_free): use cJSON_SetValuestring" % (rel, line_of(code, m.start())))
            for s, e in functions(code):
                body = code[s:e]
                for m in ASSIGN.finditer(body):
                    line_start = body.rfind("\n", 0, m.start()) + 1
                    out_param = m.group(1) == "*" and not body[line_start:m.start()].strip()
                    var = m.group(2)
                    where = code if out_param else body
                    base = 0 if out_param else s
                    for f_ in re.finditer(r"(?<![\w.>])free\s*\(\s*%s\s*\)" % re.escape(var), where):
                        problems.append("%s:%d: %s holds a cJSON_Print* string (line %d) but is "
                                        "released with free(): use cJSON_free"
                                        % (rel, line_of(code, base + f_.start()), var,
                                           line_of(code, s + m.start())))

for p in problems:
    print(p)
print("%d problem(s)" % len(problems) if problems else "ok: cJSON strings go back to cJSON")
sys.exit(1 if problems else 0)
