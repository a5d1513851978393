-- expect: exit=3 stderr~"PYTHONINSPECT is not on the allow list"
-- PYTHONINSPECT makes python read and run stdin after the script: code from the runbook.
local r = exec({ "/usr/bin/python3", "-c", "pass" },
  { env = { PYTHONINSPECT = "1" }, stdin = "import os; os.system('touch /tmp/rbl_escape_pwned')\n" })
print("ran: " .. r.stdout)
