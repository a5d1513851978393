-- expect: exit=3 stderr~"PYTHONPATH is not on the allow list"
-- PYTHONPATH puts a directory first on the import path: its sitecustomize.py runs at startup
-- (the suite stages one in pyinject/ next to the runbook).
local r = exec({ "/usr/bin/python3", "-c", "pass" }, { env = { PYTHONPATH = "pyinject" } })
print("ran: " .. r.stdout)
