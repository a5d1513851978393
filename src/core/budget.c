/* The run-wide byte budget (budget.h): one counter beside the Lua allocator's, one cap. */
#include "budget.h"
#include "engine_int.h"
#include "rbl.h"

#include <malloc.h>
#include <stdlib.h>

/* Process-wide because cJSON's hooks are: they take no context. */
static rbl_engine *bound;

/* Nested engines (a check-mode engine made while a run's exists) bind on top and, when freed,
 * give the binding back to the engine they covered. */
void rbl_budget_bind(rbl_engine *e) {
  if (bound == e) return;
  e->budget_prev = bound;
  bound = e;
}

void rbl_budget_unbind(rbl_engine *e) {
  if (bound != e) { /* freed out of order: unlink it from the engines below the bound one */
    for (rbl_engine *x = bound; x; x = x->budget_prev)
      if (x->budget_prev == e) x->budget_prev = e->budget_prev;
    e->budget_prev = NULL;
    return;
  }
  bound = e->budget_prev;
  e->budget_prev = NULL;
  e->ext = 0; /* blocks still held are released uncounted */
}

/* Bulk bytes (a parser's output, a response body, a file) grow with the input: they fail once
 * they do not fit, and once the run was killed for memory. Everything else cJSON allocates
 * (audit records, the gate's decisions) is the host's own bookkeeping, small per operation: it
 * is counted, may trigger the kill, and is always granted, so a killed run still writes its
 * records and its run_end. */
static int charge(rbl_engine *e, size_t n, int bulk) {
  if (e->mem + e->ext + n > e->mem_cap) {
    rbl__memory_exceeded(e); /* kills the run, grants the Lua allocator head room */
    if (bulk) return RBL_ENOMEM;
  }
  if (bulk && e->mem_slack) return RBL_ENOMEM;
  e->ext += n;
  return 0;
}

int rbl_budget_charge(size_t n) { return bound ? charge(bound, n, 1) : 0; }

void rbl_budget_parse_begin(void) {
  if (bound) bound->parsing++;
}

void rbl_budget_parse_end(void) {
  if (bound && bound->parsing > 0) bound->parsing--;
}

void rbl_budget_release(size_t n) {
  rbl_engine *e = bound;
  if (!e) return;
  e->ext = n > e->ext ? 0 : e->ext - n; /* a block charged before the binding: never below 0 */
}

/* Keeps "charged == malloc_usable_size" for every block: charges a guess of n first, so a
 * refused growth never reaches realloc, then settles on what the allocator really gave. */
void *rbl_budget_realloc(void *p, size_t n) {
  size_t old = p ? malloc_usable_size(p) : 0;
  if (n > old && rbl_budget_charge(n - old) != 0) return NULL;
  size_t charged = n > old ? n : old;
  void *np = realloc(p, n ? n : 1);
  if (!np) {
    rbl_budget_release(charged - old);
    return NULL;
  }
  size_t now = malloc_usable_size(np);
  if (now > charged) {
    if (bound) bound->ext += now - charged; /* allocator rounding: a few bytes, always granted */
  } else {
    rbl_budget_release(charged - now);
  }
  return np;
}

void rbl_budget_free(void *p) {
  if (!p) return;
  rbl_budget_release(malloc_usable_size(p));
  free(p);
}

/* A parser (cJSON_Parse of 100 MiB, libyaml's aliases) offers no poll of its own, but it
 * allocates as it goes: past a deadline or a kill its allocations fail, so it stops, and the
 * caller's rbl__poll_limits raises the reason. */
static void *cj_malloc(size_t n) {
  rbl_engine *e = bound;
  if (e && e->parsing && (++e->charges & 1023) == 0 && e->running && rbl__task_stopping(e->running))
    return NULL;
  void *p = malloc(n);
  if (p && e && charge(e, malloc_usable_size(p), e->parsing > 0) != 0) {
    free(p);
    return NULL;
  }
  return p;
}

static void cj_free(void *p) { rbl_budget_free(p); }

void rbl_budget_install_cjson(void) {
  cJSON_Hooks h = {cj_malloc, cj_free};
  cJSON_InitHooks(&h);
}
