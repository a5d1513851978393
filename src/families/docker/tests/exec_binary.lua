-- 5 MiB of random bytes through docker_exec, on stdout and on stderr, checked by sha256.
-- params: c. The config allows `exec` of sha256sum, which hashes what rbl received.
runbook { id = "docker-exec-binary", description = "binary-safe demux of several MiB" }

step "binary" {
  run = function()
    local gen = docker_exec(params.c, { "sh", "-c", "head -c 5242880 /dev/urandom > /tmp/blob && sha256sum /tmp/blob" })
    assert(gen.exit_code == 0, gen.stderr)
    local want = gen.stdout:match("^(%x+)")
    local out = docker_exec(params.c, { "cat", "/tmp/blob" })
    assert(#out.stdout == 5242880, "stdout bytes " .. #out.stdout)
    assert(out.stderr == "")
    assert(exec({ "sha256sum" }, { stdin = out.stdout }).stdout:match("^(%x+)") == want, "stdout sha256 differs")
    local err = docker_exec(params.c, { "sh", "-c", "cat /tmp/blob >&2; echo done" })
    assert(#err.stderr == 5242880, "stderr bytes " .. #err.stderr)
    assert(err.stdout == "done\n")
    assert(exec({ "sha256sum" }, { stdin = err.stderr }).stdout:match("^(%x+)") == want, "stderr sha256 differs")
    log("5 MiB intact, sha256 %s", want)
  end,
}
