-- Config for the demo: one tenant, and the programs the demo may run.
return {
  tenants = { "demo-tenant" },
  exec = { allow = { "uname", "/bin/echo", "/bin/sh" } },
  limits = { step_timeout = 30, run_timeout = 120 },
}
