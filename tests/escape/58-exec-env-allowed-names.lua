-- expect: exit=0 stdout~"TZ=UTC LANG=C.UTF-8 EXTRA=yes" stdout!~"RBL_ESC_TOKEN" stdout~"PATH=/usr/local/sbin"
-- The allowed names reach the child (base list: TZ; config exec.env: EXTRA); nothing of rbl's own
-- environment does (RBL_ESC_TOKEN is set for rbl itself).
local r = exec({ "/usr/bin/perl", "-e",
  'print "TZ=$ENV{TZ} LANG=$ENV{LANG} EXTRA=$ENV{EXTRA}\\n"; print "$_\\n" for sort map {"$_=$ENV{$_}"} keys %ENV' },
  { env = { TZ = "UTC", EXTRA = "yes" } })
print(r.stdout)
