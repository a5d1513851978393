-- The drift benchmark as a runbook: bench/drift_bench.sh copies it next to a.json/b.json.
local actual = iac.json("a.json")
local expected = iac.json("b.json")
local d = drift_compare(actual, expected, { critical = { "max_connections" } })
log("drift items: %d", #d)
