-- expect: exit=0 stdout~"^logged$"
-- 20 MiB to log(): it must not crash, and the line printed to stderr stays bounded.
log(string.rep("x", 20 << 20))
print("logged")
