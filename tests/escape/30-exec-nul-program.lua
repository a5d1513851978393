-- expect: exit=3 stderr~"program name contains a NUL byte"
exec({ "/bin/echo\0/../sh", "-c", "touch /tmp/rbl_escape_pwned" })
