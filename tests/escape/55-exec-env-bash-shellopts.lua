-- expect: exit=3 stderr~"(SHELLOPTS|PS4) is not on the allow list" stdout!~"s3cr3t-canary-value"
-- SHELLOPTS=xtrace makes bash print every command it runs, expanded: a secret the command line
-- holds goes to stderr, the result and the audit summary.
local r = exec({ "/usr/bin/bash", "-c", "tok=$(cat /dev/null)$RBL_TOKEN; true \"$tok\"" },
  { env = { SHELLOPTS = "xtrace", PS4 = "+trace ", RBL_TOKEN = secret("RBL_ESC_TOKEN") } })
print("stderr: " .. r.stderr)
