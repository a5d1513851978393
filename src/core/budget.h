/* The run-wide byte budget: limits.memory_mb covers Lua's allocator and every buffer a runbook
 * can make rbl allocate outside Lua (parsed JSON and YAML trees, HTTP response bodies). */
#ifndef RBL_BUDGET_H
#define RBL_BUDGET_H

#include <stddef.h>

struct rbl_engine;

/* The engine whose budget external allocations are charged to (engine_new binds it, engine_free
 * unbinds it and gives the binding back to the engine bound before). One run per process: cJSON's
 * allocator hooks are process-wide, so the binding is too. With nothing bound, nothing is charged
 * or refused. */
void rbl_budget_bind(struct rbl_engine *e);
void rbl_budget_unbind(struct rbl_engine *e);

/* Charges n bulk bytes: 0, or RBL_ENOMEM when they do not fit; the run is then killed for its
 * memory limit (exit 3) and the caller fails the operation (rbl__poll_limits raises). */
int rbl_budget_charge(size_t n);

/* Around a parser's run (cJSON_Parse, rbl_yaml_parse): what cJSON allocates meanwhile is bulk,
 * refused over the budget, and refused past the running task's deadline, so the parse stops. */
void rbl_budget_parse_begin(void);
void rbl_budget_parse_end(void);
void rbl_budget_release(size_t n);

/* realloc/free whose bytes are charged (malloc_usable_size, so no header): for buffers that
 * grow with what a peer or a runbook sends. rbl_budget_realloc returns NULL over budget, the
 * old block untouched. Free such a block with rbl_budget_free, never free. */
void *rbl_budget_realloc(void *p, size_t n);
void rbl_budget_free(void *p);

/* Routes cJSON's allocations through the budget (cJSON_InitHooks); once, at start-up. */
void rbl_budget_install_cjson(void);

#endif
