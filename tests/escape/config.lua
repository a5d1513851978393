return { limits = { memory_mb = 64, step_timeout = 2, run_timeout = 10, output_kb = 64 }, exec = { allow = { "/bin/echo", "/usr/bin/perl", "/usr/bin/python3", "/usr/bin/bash" },
  env = { "EXTRA" }, programs = { ["/usr/bin/bash"] = { argv = { { "--version" } } } } } }
