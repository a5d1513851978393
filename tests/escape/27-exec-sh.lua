-- expect: exit=3 stderr~"not on the exec allow list"
exec({ "sh", "-c", "touch /tmp/rbl_escape_pwned" })
