-- expect: exit=0 stdout~"^logged$" step_timeout=10
-- 20 MiB to log(): it must not crash, and the line printed to stderr stays bounded. (Its 20 MiB
-- are hashed into the chain twice and canonicalised: about 1.4 s under ASan, so a 10 s step.)
log(string.rep("x", 20 << 20))
print("logged")
