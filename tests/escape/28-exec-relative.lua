-- expect: exit=3 stderr~"not on the exec allow list"
pcall(exec, { "./echo", "x" })
print("NOT STOPPED")
