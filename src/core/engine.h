/* The engine: one libuv loop, one sandboxed Lua state, the task scheduler and the primitive path.
 */
#ifndef RBL_ENGINE_H
#define RBL_ENGINE_H

#include <lua.h>
#include <uv.h>
#include <stdint.h>
#include <cjson/cJSON.h>

typedef struct rbl_engine rbl_engine;
struct rbl_audit;
struct rbl_http;

/* ---- waiting: how a C primitive parks its coroutine until a libuv callback ----
 *
 *   static int l_thing(lua_State *L) {
 *     op = ...; start the async work with op as its user data;
 *     op->wait = rbl_wait_new(L, push_results, cancel_hook, op);
 *     return rbl_wait_yield(L, op->wait);          // always at the tail
 *   }
 *   static void on_done(...) { op->result = ...; rbl_wait_done(op->wait); }
 *
 * rbl_wait_done() only schedules: the engine resumes the coroutine on the loop, first
 * calling push(L, ud), which pushes the values the Lua caller receives and returns their
 * count. push may raise (luaL_error / rbl_raise) to make the call fail.
 * cancel(ud) is called instead when the task is cancelled (step timeout, Ctrl-C, kill):
 * it must stop the work and guarantee rbl_wait_done() is never called for this wait
 * afterwards; push is then never called. cancel may also come after rbl_wait_done() but
 * before push (the task was aborted while ready): it then only releases ud. The engine owns the
 * rbl_wait and frees it after push or cancel; ud stays the caller's. */
typedef struct rbl_wait rbl_wait;
typedef int (*rbl_wait_push)(lua_State *L, void *ud);
typedef void (*rbl_wait_cancel)(void *ud);
rbl_wait *rbl_wait_new(lua_State *L, rbl_wait_push push, rbl_wait_cancel cancel, void *ud);
int rbl_wait_yield(lua_State *L, rbl_wait *w);
void rbl_wait_done(rbl_wait *w);

/* ---- engine accessors, for primitives ---- */
rbl_engine *rbl_engine_of(lua_State *L); /* raises if L is not an rbl state */
uv_loop_t *rbl_engine_loop(rbl_engine *e);
struct rbl_http *rbl_engine_http(rbl_engine *e);   /* created on first use */
const char *rbl_engine_runbook_dir(rbl_engine *e); /* directory of the runbook, for file loaders */
int rbl_engine_dry_run(rbl_engine *e);

/* The tenant the calling task is bound to; NULL when the run has several tenants and the
 * task is bound to none (a primitive that needs a tenant must then raise). */
const char *rbl_task_tenant(lua_State *L);

/* Raises a structured primitive error: a table {code=, message=} with __tostring.
 * code is a short stable word ("timeout", "not_found", "refused", "conflict", ...). */
int rbl_raise(lua_State *L, const char *code, const char *fmt, ...);

/* A tenant-scope or sandbox refusal: audited, the run is killed (exit 3), raises. */
int rbl_refuse(lua_State *L, const char *prim, const char *fmt, ...);

#endif
