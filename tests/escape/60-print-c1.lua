-- expect: exit=0 stdout~"u009b2J" stdout~"x9b31m"
-- 8-bit C1 controls drive a terminal like ESC does (0x9b is CSI): print escapes them, both as
-- UTF-8 (U+009B) and as a raw byte; the suite checks no raw C1 reaches stdout or stderr.
print("\xc2\x9b" .. "2J", "\x9b" .. "31m", "caf\xc3\xa9 \xe2\x82\xac ok")
log("%s", "\xc2\x9b" .. "2J log")
