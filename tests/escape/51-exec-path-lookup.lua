-- expect: exit=3 stderr~"not on the exec allow list"
-- a bare name resolves through PATH; only an exact allow-list entry may run
exec({ "echo", "x" })
