/* kubeconfig loading (src/families/kube/kubeconfig.lua through the embedded Lua and the C
 * YAML/base64 helpers it uses): any file either loads or fails with rbl's structured
 * `invalid` error naming the problem; never a Lua runtime error from inside rbl. */
#include "fuzz.h"

#include <fcntl.h>
#include <unistd.h>

static char path[64];

static const char prog[] =
    "local path = ...\n"
    "local kc = require 'rbl.kubeconfig'\n"
    "local ok, err = pcall(kc.load, { kubeconfig = path })\n"
    "if ok then assert(type(err) == 'table' and type(err.server) == 'string', 'no server') return "
    "end\n"
    "assert(type(err) == 'table' and err.code == 'invalid' and type(err.message) == 'string',\n"
    "       'not a structured error: ' .. tostring(type(err) == 'table' and (err.message or "
    "err.code) or err))\n";

int LLVMFuzzerTestOneInput(const unsigned char *d, size_t n) {
  rbl_engine *e = fuzz_engine();
  if (!path[0]) snprintf(path, sizeof path, "/tmp/rbl-fuzz-kubeconfig-%d.yaml", (int)getpid());
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  if (fd < 0 || (n && write(fd, d, n) != (ssize_t)n)) abort();
  close(fd);
  lua_State *L = e->L;
  if (luaL_loadstring(L, prog) != LUA_OK) abort();
  lua_pushstring(L, path);
  int rc = lua_pcall(L, 1, 0, 0);
  FUZZ_CHECK(rc == LUA_OK, "%s", lua_tostring(L, -1));
  lua_settop(L, 0);
  lua_gc(L, LUA_GCCOLLECT, 0);
  fuzz_reset(e);
  return 0;
}
