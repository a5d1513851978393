-- expect: exit=3 stderr~"PERL5LIB is not on the allow list"
-- PERL5LIB with PERL5OPT-free perl: any module the script uses can be shadowed. Refused by name.
local r = exec({ "/usr/bin/perl", "-e", "use strict; print 1" }, { env = { PERL5LIB = "pyinject" } })
print("ran: " .. r.stdout)
