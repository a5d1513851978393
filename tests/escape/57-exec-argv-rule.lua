-- expect: exit=3 stderr~"match none of the 1 argv rule" stdout~"version ok"
-- The config allows bash only as `bash --version` (exec.programs argv rule): `bash -c CODE`
-- is refused by the gate, nothing starts.
local r = exec({ "/usr/bin/bash", "--version" })
if r.exit_code == 0 then print("version ok") end
exec({ "/usr/bin/bash", "-c", "touch /tmp/rbl_escape_pwned" })
