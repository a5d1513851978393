-- expect: exit=3 stderr~"not on the exec allow list"
exec({ "/bin/echo\0/../sh", "-c", "touch /tmp/rbl_escape_pwned" })
