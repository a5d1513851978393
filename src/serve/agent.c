/* serve.ha's lease agent: `rbl serve --lease-agent CONFIG`, started by rbl serve (ha.c), never by
 * hand. One engine for the agent's life (the config loaded as rbl run loads it, so `kube` resolves
 * as kube.* resolves it), one request at a time: a JSON line on stdin, rbl.lease's answer as one
 * line on stdout. Each request is one engine run (as the REPL runs one line), bounded by the
 * requests' own timeouts. The agent dies with serve (PR_SET_PDEATHSIG, SIGKILL) and ends at EOF. */
#include "serve.h"
#include "engine_int.h"
#include "session.h"

#include <lauxlib.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#define AGENT_MAX_LINE (64 * 1024)

int rbl_serve_lease_agent(const char *config) {
  pid_t parent = getppid();
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() != parent || parent == 1) return 2;
  signal(SIGINT, SIG_IGN); /* serve's to handle; SIGTERM ends the agent as usual */
  rbl_run_opts o;
  memset(&o, 0, sizeof o);
  o.quiet = 1;
  rbl_engine *e = rbl__setup_engine(&o);
  if (!e) return 2;
  if (rbl__load_config(e, config) != 0) {
    rbl__engine_free(e);
    return 2;
  }
  rbl__apply_limits(e);
  e->limits.run_timeout = 0; /* each request is bounded by its HTTP timeouts, not the run's */
  lua_State *L = e->L;
  char *line = malloc(AGENT_MAX_LINE + 2);
  if (!line) return 2;
  int rc = 0;
  while (fgets(line, AGENT_MAX_LINE + 2, stdin)) {
    size_t n = strlen(line);
    if (n == 0 || line[n - 1] != '\n') { /* over the bound: the protocol is broken */
      rc = 2;
      break;
    }
    line[--n] = 0;
    lua_settop(L, 0);
    lua_getglobal(L, "require");
    lua_pushliteral(L, "rbl.lease");
    if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
      fprintf(stderr, "rbl serve: lease agent: %s\n", lua_tostring(L, -1));
      rc = 2;
      break;
    }
    lua_getfield(L, -1, "handle");
    lua_remove(L, -2);
    lua_pushlstring(L, line, n);
    int st = rbl__engine_run(e, 1);
    if (e->killed) { /* a refusal (the gate) or a limit: the agent cannot go on */
      fprintf(stderr, "rbl serve: lease agent stopped: %s\n", e->kill_msg);
      printf("{\"error\":\"lease agent stopped\"}\n");
      fflush(stdout);
      rc = 3;
      break;
    }
    const char *out = st == LUA_OK ? lua_tostring(L, -1) : NULL;
    if (out && !strchr(out, '\n'))
      printf("%s\n", out);
    else
      printf("{\"error\":\"lease agent: %s\"}\n", st == LUA_OK ? "no answer" : "internal error");
    fflush(stdout);
  }
  free(line);
  rbl__engine_free(e);
  return rc;
}
