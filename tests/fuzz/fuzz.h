/* Shared by the harnesses: an rbl engine whose main state runs host code (as rbl's own Lua does),
 * and the check that aborts with the input's reason when a property fails. */
#ifndef RBL_FUZZ_H
#define RBL_FUZZ_H

#include "engine_int.h"
#include "sandbox.h"
#include "session.h"

#include <lauxlib.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>

#define FUZZ_CHECK(cond, ...)                                                                      \
  do {                                                                                             \
    if (!(cond)) {                                                                                 \
      fprintf(stderr, "fuzz property failed: %s: ", #cond);                                        \
      fprintf(stderr, __VA_ARGS__);                                                                \
      fputc('\n', stderr);                                                                         \
      abort();                                                                                     \
    }                                                                                              \
  } while (0)

/* One engine for the whole fuzzing session, as rbl__setup_engine builds it; it also binds the
 * byte budget (256 MiB), as in a run, so parser output is bounded the way rbl bounds it. */
static rbl_engine *fuzz_engine(void) {
  static rbl_engine *e;
  if (e) return e;
  rbl_limits lim;
  rbl__default_limits(&lim);
  e = rbl__engine_new(&lim);
  if (!e) abort();
  luaL_openlibs(e->L);
  rbl__open_modules(e->L);
  rbl_sandbox_init(e->L);
  return e;
}

/* After each input: a run killed for memory by the last input is alive again for the next. */
static void fuzz_reset(rbl_engine *e) {
  e->killed = RBL_KILL_NONE;
  e->kill_msg[0] = '\0';
  if (e->mem_slack) {
    e->mem_cap -= RBL_MEM_SLACK;
    e->mem_slack = 0;
  }
}

#endif
