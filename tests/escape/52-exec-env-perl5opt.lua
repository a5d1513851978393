-- expect: exit=3 stderr~"PERL5OPT is not on the allow list"
-- Perl reads switches (and so code: -Mmodule;code) from PERL5OPT: an allow-listed perl must not
-- become an arbitrary command. The child environment is built from an allow list of names.
local r = exec({ "/usr/bin/perl", "-e", "print 1" },
  { env = { PERL5OPT = "-Mstrict;system(q{touch},q{/tmp/rbl_escape_pwned})" } })
print("ran: " .. r.stdout)
