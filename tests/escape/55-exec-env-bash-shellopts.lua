-- expect: exit=3 stderr~"(SHELLOPTS|PS4) is not on the allow list" stdout!~"s3cr3t-canary-value"
-- SHELLOPTS=xtrace makes bash print every command it runs, expanded: a secret the command line
-- holds goes to stderr, the result and the audit summary. (PS4 from the environment is also
-- command substitution for a non-root bash.)
local r = exec({ "/usr/bin/bash", "-c", 'true "$1"', "x", secret("RBL_ESC_TOKEN") },
  { env = { SHELLOPTS = "xtrace", PS4 = "+trace " } })
print("stderr: " .. r.stderr)
