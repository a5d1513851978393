/* The engine: the libuv loop, the Lua state, tasks (coroutines) and the waits that park them. */
#include "engine_int.h"
#include "audit.h"
#include "budget.h"
#include "gate.h"
#include "http.h"
#include "rbl.h"

#include <lauxlib.h>
#include <lualib.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void rbl__default_limits(rbl_limits *lim) {
  lim->memory = 256u << 20;
  lim->step_timeout = 300;
  lim->run_timeout = 3600;
  lim->rollback_grace = 60;
  lim->output = 1u << 20;
  lim->exec_output = 16u << 20;
  lim->instructions_per_check = 1000;
  lim->http_connections = 32;
}

static void sched_cb(uv_idle_t *h);

/* ---- memory cap ---- */

void rbl__memory_exceeded(rbl_engine *e) {
  if (e->mem_slack) return;
  e->mem_cap += RBL_MEM_SLACK;
  e->mem_slack = 1;
  if (e->killed) return; /* already stopping for another reason: only the head room */
  e->killed = RBL_KILL_LIMIT;
  snprintf(e->kill_msg, sizeof e->kill_msg,
           "memory limit of %zu MiB exceeded (Lua values, parsed JSON/YAML, HTTP responses and "
           "exec output count; raise limits.memory_mb in the config if the run needs more)",
           e->limits.memory >> 20);
  if (e->sched.data) uv_idle_start(&e->sched, sched_cb);
}

static void *engine_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  rbl_engine *e = ud;
  size_t old = ptr ? osize : 0;
  if (nsize == 0) {
    free(ptr);
    e->mem -= old;
    return NULL;
  }
  if (nsize > old && e->mem + e->ext + (nsize - old) > e->mem_cap) {
    /* Cannot do work here: flag it; the pcall wrapper, the hook and the scheduler act. */
    rbl__memory_exceeded(e);
    /* Only code running inside a task may see a failed allocation: it is protected. The
     * scheduler's own bookkeeping between resumes is not, and a memory error there would
     * panic Lua (abort); it is small and bounded per task, so it is granted once the run
     * is marked killed. */
    if (!e->unprotected) return NULL;
  }
  void *p = realloc(ptr, nsize);
  if (p) e->mem = e->mem - old + nsize;
  return p;
}

/* ---- tasks ---- */

rbl_task *rbl__task_of(lua_State *L) { return *(rbl_task **)lua_getextraspace(L); }

rbl_engine *rbl_engine_of(lua_State *L) { return rbl__task_of(L)->e; }
uv_loop_t *rbl_engine_loop(rbl_engine *e) { return &e->loop; }
const char *rbl_engine_runbook_dir(rbl_engine *e) { return e->runbook_dir; }
int rbl_engine_dry_run(rbl_engine *e) { return e->dry_run; }

struct rbl_http *rbl_engine_http(rbl_engine *e) {
  if (e->http) return e->http;
  if (rbl_http_new(&e->http, &e->loop) != 0)
    e->http = NULL;
  else
    rbl_http_set_max_per_host(e->http, e->limits.http_connections);
  return e->http;
}

const char *rbl_task_tenant(lua_State *L) { return rbl__task_of(L)->tenant; }

static void sched_cb(uv_idle_t *h);

static void ready_push(rbl_engine *e, rbl_task *t) {
  t->state = TASK_READY;
  t->next_ready = NULL;
  t->prev_ready = e->ready_tail;
  if (e->ready_tail)
    e->ready_tail->next_ready = t;
  else
    e->ready_head = t;
  e->ready_tail = t;
  uv_idle_start(&e->sched, sched_cb);
}

/* O(1): aborting a group of 100 000 ready tasks must not scan the queue for each. */
static void ready_remove(rbl_engine *e, rbl_task *t) {
  if (t->prev_ready)
    t->prev_ready->next_ready = t->next_ready;
  else if (e->ready_head == t)
    e->ready_head = t->next_ready;
  else
    return; /* not queued */
  if (t->next_ready)
    t->next_ready->prev_ready = t->prev_ready;
  else
    e->ready_tail = t->prev_ready;
  t->next_ready = t->prev_ready = NULL;
}

static rbl_task *ready_pop(rbl_engine *e) {
  rbl_task *t = e->ready_head;
  if (t) ready_remove(e, t);
  return t;
}

/* Protected part of task_new: a memory error here must not panic e->L, which runs no pcall
 * of its own while the scheduler works. Returns the thread and its registry ref. */
static int new_thread_p(lua_State *L) {
  lua_newthread(L);
  lua_pushvalue(L, -1);
  lua_pushinteger(L, luaL_ref(L, LUA_REGISTRYINDEX));
  return 2;
}

static rbl_task *task_new(rbl_engine *e, const char *tenant, uint64_t deadline) {
  lua_State *L = e->L;
  if (!lua_checkstack(L, 4)) return NULL;
  rbl_task *t = calloc(1, sizeof *t);
  if (!t || (tenant && !(t->tenant = strdup(tenant)))) {
    free(t);
    return NULL;
  }
  lua_pushcfunction(L, new_thread_p);
  if (lua_pcall(L, 0, 2, 0) != LUA_OK) {
    lua_pop(L, 1);
    free(t->tenant);
    free(t);
    return NULL;
  }
  t->e = e;
  t->co = lua_tothread(L, -2);
  t->ref = (int)lua_tointeger(L, -1);
  lua_pop(L, 2);
  *(rbl_task **)lua_getextraspace(t->co) = t;
  t->deadline = deadline;
  t->grace = e->rolling_back || e->deadline_hit; /* rollback's own tasks run on in the grace */
  t->state = TASK_NEW;
  rbl__sandbox_hook(t->co);
  t->next_all = e->all;
  if (e->all) e->all->prev_all = t;
  e->all = t;
  return t;
}

static void task_free(rbl_task *t) {
  rbl_engine *e = t->e;
  rbl__calls_forget(e, t);
  if (t->prev_all)
    t->prev_all->next_all = t->next_all;
  else
    e->all = t->next_all;
  if (t->next_all) t->next_all->prev_all = t->prev_all;
  luaL_unref(e->L, LUA_REGISTRYINDEX, t->ref);
  free(t->tenant);
  free(t);
}

/* ---- waits ---- */

rbl_wait *rbl_wait_new(lua_State *L, rbl_wait_push push, rbl_wait_cancel cancel, void *ud) {
  rbl_task *t = rbl__task_of(L);
  if (!t->co || t->co != L) {
    if (cancel) cancel(ud);
    luaL_error(L, "primitives that wait cannot run inside coroutine.create/wrap "
                  "(use parallel or each)");
    return NULL;
  }
  rbl_wait *w = calloc(1, sizeof *w);
  if (!w) {
    if (cancel) cancel(ud);
    luaL_error(L, "out of memory");
    return NULL;
  }
  w->task = t;
  w->push = push;
  w->cancel = cancel;
  w->ud = ud;
  return w;
}

static int wait_k(lua_State *L, int status, lua_KContext ctx) {
  rbl_wait *w = (rbl_wait *)ctx;
  rbl_wait_push push = w->push;
  void *ud = w->ud;
  w->task->wait = NULL;
  free(w);
  return push ? push(L, ud) : 0;
}

int rbl_wait_yield(lua_State *L, rbl_wait *w) {
  w->task->wait = w;
  w->task->state = TASK_WAITING;
  return lua_yieldk(L, 0, (lua_KContext)w, wait_k);
}

void rbl_wait_done(rbl_wait *w) {
  rbl_task *t = w->task;
  if (t->wait != w || t->state != TASK_WAITING) return;
  ready_push(t->e, t);
}

void rbl__durable_wait(rbl_engine *e, rbl_wait *w) {
  w->next = e->durable;
  e->durable = w;
  uv_idle_start(&e->sched, sched_cb);
}

static void durable_remove(rbl_engine *e, rbl_wait *w) {
  for (rbl_wait **p = &e->durable; *p; p = &(*p)->next)
    if (*p == w) {
      *p = w->next;
      return;
    }
}

int rbl__raw_field(lua_State *L, int idx, const char *k) {
  idx = lua_absindex(L, idx);
  if (!lua_istable(L, idx)) {
    lua_pushnil(L);
    return LUA_TNIL;
  }
  lua_pushstring(L, k);
  return lua_rawget(L, idx);
}

/* ---- errors ---- */

static int err_tostring(lua_State *L) {
  lua_getfield(L, 1, "code");
  lua_getfield(L, 1, "message");
  lua_pushfstring(L, "%s: %s", luaL_optstring(L, -2, "error"), luaL_optstring(L, -1, "?"));
  return 1;
}

/* The one error object: {code = <a name of the vocabulary in src/core/errors.c>, message}. */
void rbl__push_error(lua_State *L, const char *code, const char *msg) {
  lua_createtable(L, 0, 2);
  if (rbl_err_from_name(code) == 0) { /* never a name the docs do not list */
    lua_pushfstring(L, "%s (bug in rbl: unknown error code '%s')", msg, code);
    lua_setfield(L, -2, "message");
    lua_pushliteral(L, "failed");
    lua_setfield(L, -2, "code");
  } else {
    lua_pushstring(L, code);
    lua_setfield(L, -2, "code");
    lua_pushstring(L, msg);
    lua_setfield(L, -2, "message");
  }
  if (luaL_newmetatable(L, "rbl.error")) {
    lua_pushcfunction(L, err_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pushliteral(L, "rbl.error");
    lua_setfield(L, -2, "__name");
  }
  lua_setmetatable(L, -2);
}

int rbl_raise(lua_State *L, const char *code, const char *fmt, ...) {
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  rbl__push_error(L, code, msg);
  return lua_error(L);
}

/* ---- the scheduler ---- */

static void task_finish(rbl_task *t, int ok);
static rbl_task *group_owner(rbl_group *g);

/* Aborts a task and everything it waits on; its group sees the error (code, msg). */
static void task_abort(rbl_task *t, const char *code, const char *msg) {
  if (t->state == TASK_DONE) return;
  if (t->state == TASK_READY) ready_remove(t->e, t);
  rbl_wait *w = t->wait;
  t->wait = NULL;
  t->state = TASK_DONE;
  if (w) {
    durable_remove(t->e, w);
    if (w->cancel) w->cancel(w->ud);
    free(w);
  }
  if (t->e->live) { /* the calls it had in flight say why they never finished */
    const char *ccode = code, *cmsg = msg;
    rbl_engine *e = t->e;
    if (e->killed) {
      ccode = "killed";
      cmsg = e->kill_msg;
    } else if (e->interrupted) {
      ccode = "canceled";
      cmsg = "interrupted (Ctrl-C)";
    } else {
      int step_timeout = 0;
      for (rbl_task *a = t; a && a->group; a = group_owner(a->group))
        if (a->timed_out) {
          ccode = "timeout";
          cmsg = "the step's deadline passed";
          step_timeout = 1;
          break;
        }
      if (!step_timeout && e->deadline_hit && !t->grace) {
        ccode = "timeout";
        cmsg = e->deadline_msg;
      }
    }
    rbl__calls_cancel(e, t, ccode, cmsg);
  }
  lua_settop(t->co, 0);
  rbl__push_error(t->co, code, msg);
  task_finish(t, 0);
}

/* ---- groups: run_all(fns, opts) from one task, results delivered by index ---- */

/* Owned by the waiting task's rbl_wait (its ud); freed by group_free when delivered or canceled. */
struct rbl_group {
  rbl_engine *e;
  rbl_task *owner;
  rbl_wait *wait;
  int n, started, finished, concurrency;
  int fns_ref, tenants_ref, results_ref, errors_ref;
  int nerrors;
  int max_errors; /* -1: none; once more items failed, no new item starts (halted) */
  int halted;
  int ramp, window, wave_end; /* ramp: waves of 1, 2, 4, ... items (the first wave_end items may
                                 start), then a sliding window of concurrency */
  int dying;
  uint64_t deadline;
  double timeout;
  uv_timer_t *timer; /* freed in its close callback */
};

static rbl_task *group_owner(rbl_group *g) { return g->owner; }

static void timer_close_cb(uv_handle_t *h) { free(h); }

static void group_free(rbl_group *g) {
  lua_State *L = g->e->L;
  luaL_unref(L, LUA_REGISTRYINDEX, g->fns_ref);
  luaL_unref(L, LUA_REGISTRYINDEX, g->tenants_ref);
  luaL_unref(L, LUA_REGISTRYINDEX, g->results_ref);
  luaL_unref(L, LUA_REGISTRYINDEX, g->errors_ref);
  if (g->timer) uv_close((uv_handle_t *)g->timer, timer_close_cb);
  free(g);
}

static void group_start_next(rbl_group *g) {
  lua_State *L = g->e->L;
  while (!g->dying && !g->halted && g->started < g->n &&
         g->started - g->finished < g->concurrency && (!g->ramp || g->started < g->wave_end)) {
    int i = ++g->started;
    const char *tenant = g->owner->tenant;
    lua_rawgeti(L, LUA_REGISTRYINDEX, g->tenants_ref);
    if (lua_istable(L, -1)) {
      lua_rawgeti(L, -1, i);
      tenant = lua_tostring(L, -1); /* kept alive by the tenants table */
      lua_pop(L, 1);
    }
    rbl_task *t = task_new(g->e, tenant, g->deadline);
    lua_pop(L, 1);
    if (!t) {
      rbl__kill(g->e, RBL_KILL_LIMIT, "out of memory");
      return;
    }
    t->group = g;
    t->index = i;
    lua_rawgeti(L, LUA_REGISTRYINDEX, g->fns_ref);
    lua_rawgeti(L, -1, i);
    lua_xmove(L, t->co, 1);
    lua_pop(L, 1);
    ready_push(g->e, t);
  }
}

static int group_push(lua_State *L, void *ud) {
  rbl_group *g = ud;
  lua_rawgeti(L, LUA_REGISTRYINDEX, g->results_ref);
  lua_rawgeti(L, LUA_REGISTRYINDEX, g->errors_ref);
  lua_pushinteger(L, g->nerrors);
  lua_pushinteger(L, g->n - g->started); /* never started: the error budget was spent */
  group_free(g);
  return 4;
}

static void group_cancel(void *ud) {
  rbl_group *g = ud;
  g->dying = 1;
  for (rbl_task *t = g->e->all, *next; t; t = next) {
    next = t->next_all;
    if (t->group == g && t->state != TASK_DONE) task_abort(t, "canceled", "canceled");
  }
  /* Aborted tasks of a dying group free themselves; the rest never started. */
  group_free(g);
}

static void group_task_done(rbl_group *g, rbl_task *t, int ok) {
  lua_State *L = g->e->L;
  lua_rawgeti(L, LUA_REGISTRYINDEX, ok ? g->results_ref : g->errors_ref);
  if (lua_gettop(t->co) > 0) {
    lua_xmove(t->co, L, 1);
  } else {
    lua_pushnil(L);
  }
  lua_rawseti(L, -2, t->index);
  lua_pop(L, 1);
  if (!ok) g->nerrors++;
  g->finished++;
  if (g->max_errors >= 0 && g->nerrors > g->max_errors) g->halted = 1;
  if (g->ramp && g->finished == g->started && g->started == g->wave_end) { /* a wave is done */
    g->window = g->window > g->concurrency / 2 ? g->concurrency : g->window * 2;
    if (g->window >= g->concurrency)
      g->ramp = 0; /* from now on a sliding window */
    else
      g->wave_end += g->window;
  }
  group_start_next(g);
  if ((g->finished == g->n || (g->halted && g->finished == g->started)) &&
      g->owner->wait == g->wait) {
    if (g->timer) uv_timer_stop(g->timer);
    rbl_wait_done(g->wait);
  }
}

static void group_timeout_cb(uv_timer_t *h) {
  rbl_group *g = h->data;
  rbl_engine *e = g->e;
  char msg[128];
  snprintf(msg, sizeof msg, "timed out after %.3gs", g->timeout);
  e->unprotected++;
  for (rbl_task *t = g->e->all, *next; t; t = next) {
    next = t->next_all;
    if (t->group == g && t->state != TASK_DONE) {
      t->timed_out = 1;
      task_abort(t, "timeout", msg);
    }
  }
  /* Tasks not yet started fail with the same timeout (after a spent error budget they stay
   * never started). */
  while (g->started < g->n && !g->dying && !g->halted) {
    g->started++;
    lua_State *L = g->e->L;
    lua_rawgeti(L, LUA_REGISTRYINDEX, g->errors_ref);
    rbl__push_error(L, "timeout", msg);
    lua_rawseti(L, -2, g->started);
    lua_pop(L, 1);
    g->nerrors++;
    g->finished++;
  }
  if ((g->finished == g->n || (g->halted && g->finished == g->started)) &&
      g->owner->wait == g->wait)
    rbl_wait_done(g->wait);
  e->unprotected--;
}

/* host.run_all(fns [, {concurrency = n, tenants = {...}, timeout = s, max_errors = n, ramp = b}])
 * -> results (by index), errors (by index), error count, count never started. max_errors: once
 * more than that many items failed, no new item starts (those in flight finish). ramp: at most
 * 1 item in flight, then 2, 4, ... each time every started item has finished, up to concurrency. */
int rbl__spawn_group(lua_State *L) {
  rbl_task *owner = rbl__task_of(L);
  rbl_engine *e = owner->e;
  luaL_checktype(L, 1, LUA_TTABLE);
  int n = (int)luaL_len(L, 1);
  rbl__poll_limits(L);
  if (n == 0) {
    lua_newtable(L);
    lua_newtable(L);
    lua_pushinteger(L, 0);
    lua_pushinteger(L, 0);
    return 4;
  }
  rbl_group *g = calloc(1, sizeof *g);
  if (!g) return luaL_error(L, "out of memory");
  g->e = e;
  g->owner = owner;
  g->n = n;
  g->concurrency = n > 0 ? n : 1;
  g->deadline = owner->deadline;
  g->tenants_ref = LUA_NOREF;
  g->max_errors = -1;
  g->window = g->wave_end = 1;
  if (lua_istable(L, 2)) {
    lua_getfield(L, 2, "max_errors");
    if (!lua_isnil(L, -1)) {
      lua_Integer m = luaL_checkinteger(L, -1);
      g->max_errors = m < 0 ? 0 : (m > n ? n : (int)m);
    }
    lua_getfield(L, 2, "ramp");
    g->ramp = lua_toboolean(L, -1);
    lua_pop(L, 2);
    lua_getfield(L, 2, "concurrency");
    if (!lua_isnil(L, -1)) {
      lua_Integer c = luaL_checkinteger(L, -1);
      g->concurrency = c < 1 ? 1 : (c > 100000 ? 100000 : (int)c);
    }
    lua_getfield(L, 2, "timeout");
    g->timeout = luaL_optnumber(L, -1, 0);
    lua_getfield(L, 2, "tenants");
    if (lua_istable(L, -1)) {
      lua_pushvalue(L, -1);
      g->tenants_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    lua_pop(L, 3);
  }
  if (g->concurrency <= 1) g->ramp = 0; /* one at a time already */
  if (g->timeout > 0) {
    uint64_t dl = uv_hrtime() + (uint64_t)(g->timeout * 1e9);
    if (!g->deadline || dl < g->deadline) g->deadline = dl;
  }
  lua_pushvalue(L, 1);
  g->fns_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_newtable(L);
  g->results_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_newtable(L);
  g->errors_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  g->wait = rbl_wait_new(L, group_push, group_cancel, g);
  if (g->timeout > 0) {
    g->timer = malloc(sizeof *g->timer);
    uv_timer_init(&e->loop, g->timer);
    g->timer->data = g;
    uv_timer_start(g->timer, group_timeout_cb, (uint64_t)(g->timeout * 1000), 0);
  }
  group_start_next(g);
  return rbl_wait_yield(L, g->wait);
}

static void task_finish(rbl_task *t, int ok) {
  rbl_engine *e = t->e;
  t->state = TASK_DONE;
  if (t == e->main_task) {
    e->main_done = 1;
    e->main_status = ok ? LUA_OK : LUA_ERRRUN;
    if (lua_gettop(t->co) > 0)
      lua_xmove(t->co, e->L, 1);
    else
      lua_pushnil(e->L);
    uv_stop(&e->loop);
    return; /* freed at engine teardown */
  }
  rbl_group *g = t->group;
  if (g && !g->dying) group_task_done(g, t, ok);
  task_free(t);
}

static void task_resume(rbl_engine *e, rbl_task *t) {
  int nres = 0, nargs = 0;
  if (!t->started) {
    t->started = 1;
    nargs = lua_gettop(t->co) - 1;
  }
  t->state = TASK_WAITING;
  int unprotected = e->unprotected;
  e->unprotected = 0; /* the task's code runs protected by lua_resume */
  e->running = t;
  int st = lua_resume(t->co, e->L, nargs, &nres);
  e->running = NULL;
  e->unprotected = unprotected;
  if (st == LUA_YIELD) {
    if (!t->wait) {
      lua_settop(t->co, 0);
      rbl__push_error(t->co, "invalid", "coroutine.yield outside a coroutine");
      task_finish(t, 0);
    }
    return;
  }
  if (st == LUA_OK) {
    if (nres > 1) lua_pop(t->co, nres - 1);
    task_finish(t, 1);
    return;
  }
  /* Error: keep structured errors as they are, add a traceback to strings. */
  if (lua_type(t->co, -1) == LUA_TSTRING) {
    luaL_traceback(e->L, t->co, lua_tostring(t->co, -1), 0);
    lua_xmove(e->L, t->co, 1);
  }
  if (lua_gettop(t->co) > 1) {
    lua_replace(t->co, 1);
    lua_settop(t->co, 1);
  }
  task_finish(t, 0);
}

static void sched_cb(uv_idle_t *h) {
  rbl_engine *e = h->data;
  e->unprotected++;
  for (;;) {
    rbl_task *t;
    while (!e->killed && (t = ready_pop(e)))
      task_resume(e, t);
    if (e->killed || !e->durable) break;
    /* Group commit: one sync for every intent appended during this round. */
    if (e->audit && rbl_audit_sync(e->audit) != 0) {
      rbl__kill(e, RBL_KILL_AUDIT, "%s", rbl_audit_error(e->audit));
      break;
    }
    rbl_wait *w = e->durable;
    e->durable = NULL;
    while (w) {
      rbl_wait *next = w->next;
      rbl_wait_done(w);
      w = next;
    }
  }
  if (e->killed && e->main_task && !e->main_done) {
    task_abort(e->main_task, "killed", e->kill_msg);
  }
  if (!e->ready_head && !e->durable) uv_idle_stop(&e->sched);
  e->unprotected--;
}

/* ---- kill, deadlines, Ctrl-C ---- */

/* Ctrl-C: a plain handler counts and wakes the loop (uv_async_send is async-signal-safe); the
 * loop cancels the running step, and rbl__poll_limits sees a second Ctrl-C even while a long C
 * call or a pure-Lua loop keeps the loop from running. One engine runs at a time. */
static volatile sig_atomic_t sigint_raw;
static uv_async_t *sigint_async;

static void sigint_handler(int signum) {
  sigint_raw++;
  if (sigint_async) uv_async_send(sigint_async);
}

static void second_interrupt(rbl_engine *e) {
  static const char msg[] = "rbl: second interrupt: exiting now\n";
  if (write(2, msg, sizeof msg - 1) < 0) { /* nothing to do */
  }
  if (e->audit) rbl_audit_sync(e->audit);
  _exit(130);
}

/* The first Ctrl-C: recorded, and every task of the running step canceled but self (the task
 * that noticed it in rbl__poll_limits, which raises instead); the DSL rolls back and stops. */
static void interrupt_now(rbl_engine *e, rbl_task *self) {
  e->sigint_count = 1;
  e->interrupted = 1;
  e->unprotected++;
  cJSON *rec = cJSON_CreateObject();
  cJSON_AddStringToObject(rec, "kind", "interrupt");
  cJSON_AddStringToObject(rec, "message", "Ctrl-C: the running step is canceled and rolled back");
  rbl__audit(e, rec);
  rbl__progress(e, "rbl: interrupted: canceling the running step (Ctrl-C again exits at once)");
  for (rbl_task *t = e->all, *next; t; t = next) {
    next = t->next_all;
    if (t != self && t != e->main_task && t->group && t->group->owner == e->main_task &&
        t->state != TASK_DONE)
      task_abort(t, "canceled", "interrupted (Ctrl-C)");
  }
  uv_idle_start(&e->sched, sched_cb);
  e->unprotected--;
}

void rbl__kill(rbl_engine *e, int why, const char *fmt, ...);

static int grace_usable(const rbl_engine *e) { return e->grace_ok && e->limits.rollback_grace > 0; }

/* Past the run deadline with no grace left: the run is killed (exit 3). */
static void deadline_kill(rbl_engine *e) {
  if (e->deadline_hit)
    rbl__kill(e, RBL_KILL_LIMIT,
              "run deadline of %gs exceeded, and the %gs grace for rollback after it too "
              "(limits.rollback_grace)",
              e->limits.run_timeout, e->limits.rollback_grace);
  else
    rbl__kill(e, RBL_KILL_LIMIT, "run deadline of %gs exceeded", e->limits.run_timeout);
}

/* The run deadline passed (first noticed by the timer or by a task): audited once, and said. */
static void deadline_mark(rbl_engine *e) {
  if (e->deadline_hit) return;
  e->deadline_hit = 1;
  e->unprotected++;
  cJSON *rec = cJSON_CreateObject();
  cJSON_AddStringToObject(rec, "kind", "interrupt");
  cJSON_AddStringToObject(rec, "reason", "deadline");
  char msg[320];
  snprintf(msg, sizeof msg,
           "%s: the running step is canceled; rollback has %gs more (limits.rollback_grace)",
           e->deadline_msg, e->limits.rollback_grace);
  cJSON_AddStringToObject(rec, "message", msg);
  cJSON_AddNumberToObject(rec, "grace_s", e->limits.rollback_grace);
  rbl__audit(e, rec);
  rbl__progress(e, "rbl: %s", msg);
  uv_idle_start(&e->sched, sched_cb);
  e->unprotected--;
}

void rbl__kill(rbl_engine *e, int why, const char *fmt, ...) {
  if (e->killed) return;
  e->killed = why;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(e->kill_msg, sizeof e->kill_msg, fmt, ap);
  va_end(ap);
  uv_idle_start(&e->sched, sched_cb);
}

void rbl__poll_limits(lua_State *L) {
  rbl_task *t = rbl__task_of(L);
  rbl_engine *e = t->e;
  if (t == &e->root) return; /* host code on the main thread (report after a kill) */
  if (sigint_raw >= 2 && sigint_async) second_interrupt(e);
  if (sigint_raw == 1 && sigint_async && !e->interrupted) { /* before the loop could see it */
    interrupt_now(e, t);
    if (t != e->main_task && t->group && t->group->owner == e->main_task)
      rbl_raise(L, "canceled", "interrupted (Ctrl-C)");
  }
  if (e->killed) {
    lua_sethook(L, lua_gethook(L), LUA_MASKCOUNT, 1); /* re-arm tight: nothing runs on */
    rbl__push_error(L, "killed", e->kill_msg);
    lua_error(L);
  }
  if (e->run_deadline && uv_hrtime() > e->run_deadline) {
    if (!grace_usable(e) || uv_hrtime() > e->grace_end) {
      deadline_kill(e);
      rbl__push_error(L, "killed", e->kill_msg);
      lua_error(L);
    }
    deadline_mark(e);
    if (!t->grace) rbl_raise(L, "timeout", "%s", e->deadline_msg);
  }
  if (t->timed_out) rbl_raise(L, "timeout", "step timed out");
  if (t->deadline && uv_hrtime() > t->deadline) {
    t->timed_out = 1;
    rbl_raise(L, "timeout", "timed out (pure Lua code ran past the step deadline)");
  }
}

int rbl__limits_hit(lua_State *L) { return rbl__task_stopping(rbl__task_of(L)); }

int rbl__task_stopping(rbl_task *t) {
  rbl_engine *e = t->e;
  if (t == &e->root) return 0;
  uint64_t now = uv_hrtime();
  int past_run = e->run_deadline && now > e->run_deadline &&
                 (!grace_usable(e) || !t->grace || now > e->grace_end);
  return e->killed || t->timed_out || past_run || (t->deadline && now > t->deadline);
}

/* The run deadline passed: the first time, the timer (on the loop) stops every task of the
 * running step that is not rollback's, as a Ctrl-C does, and the grace starts; the second
 * time (the grace is over, or there is none) the run is killed. */
static void run_timer_cb(uv_timer_t *h) {
  rbl_engine *e = h->data;
  if (!grace_usable(e) || e->deadline_swept) {
    deadline_kill(e);
    return;
  }
  deadline_mark(e);
  e->deadline_swept = 1;
  e->unprotected++;
  for (rbl_task *t = e->all, *next; t; t = next) {
    next = t->next_all;
    if (t != e->main_task && !t->grace && t->group && t->group->owner == e->main_task &&
        t->state != TASK_DONE)
      task_abort(t, "timeout", e->deadline_msg);
  }
  uv_idle_start(&e->sched, sched_cb);
  e->unprotected--;
  uint64_t now = uv_hrtime();
  uv_timer_start(&e->run_timer, run_timer_cb,
                 e->grace_end > now ? (e->grace_end - now) / 1000000 + 1 : 0, 0);
}

static void sigint_cb(uv_async_t *h) {
  rbl_engine *e = h->data;
  if (sigint_raw >= 2) second_interrupt(e);
  if (sigint_raw == 1 && !e->interrupted) interrupt_now(e, NULL);
}

int rbl__interrupt_check(lua_State *L) {
  lua_pushboolean(L, rbl_engine_of(L)->interrupted);
  return 1;
}

/* host.deadline() -> nil while the run deadline has not passed; else its message and when the
 * grace for rollback ends (host.now_ms() units; nil without a grace). */
int rbl__deadline_check(lua_State *L) {
  rbl_engine *e = rbl_engine_of(L);
  if (!e->run_deadline || (!e->deadline_hit && uv_hrtime() <= e->run_deadline)) return 0;
  if (!grace_usable(e)) {
    lua_pushstring(L, e->deadline_msg);
    return 1;
  }
  deadline_mark(e);
  lua_pushstring(L, e->deadline_msg);
  lua_pushnumber(L, (double)e->grace_end / 1e6);
  return 2;
}

/* host.rolling_back(on): the tasks started while on may run on in the grace past the deadline. */
int rbl__rolling_back(lua_State *L) {
  rbl_engine_of(L)->rolling_back = lua_toboolean(L, 1);
  return 0;
}

/* ---- lifecycle ---- */

rbl_engine *rbl__engine_new(const rbl_limits *lim) {
  rbl_engine *e = calloc(1, sizeof *e);
  if (!e) return NULL;
  e->limits = *lim;
  e->mem_cap = lim->memory;
  if (uv_loop_init(&e->loop) != 0) {
    free(e);
    return NULL;
  }
  e->L = lua_newstate(engine_alloc, e);
  rbl_budget_install_cjson();
  rbl_budget_bind(e);
  if (!e->L) {
    uv_loop_close(&e->loop);
    free(e);
    return NULL;
  }
  e->root.e = e;
  *(rbl_task **)lua_getextraspace(e->L) = &e->root;
  uv_idle_init(&e->loop, &e->sched);
  e->sched.data = e;
  uv_timer_init(&e->loop, &e->run_timer);
  e->run_timer.data = e;
  uv_async_init(&e->loop, &e->sigint, sigint_cb);
  e->sigint.data = e;
  return e;
}

int rbl__engine_run(rbl_engine *e, int nargs) {
  /* Several runs per engine (the REPL runs one per line): each gets a fresh main task. */
  e->main_done = 0;
  e->interrupted = 0;
  e->sigint_count = 0;
  rbl_task *t = task_new(e, e->root.tenant, 0);
  if (!t) return LUA_ERRMEM;
  e->main_task = t;
  t->grace = 1;
  e->deadline_hit = e->deadline_swept = e->rolling_back = 0;
  lua_xmove(e->L, t->co, nargs + 1);
  ready_push(e, t);
  uv_idle_start(&e->sched, sched_cb);
  if (e->limits.run_timeout > 0) {
    e->run_deadline = uv_hrtime() + (uint64_t)(e->limits.run_timeout * 1e9);
    e->grace_end = e->run_deadline + (uint64_t)(e->limits.rollback_grace * 1e9);
    snprintf(e->deadline_msg, sizeof e->deadline_msg, "run deadline of %gs exceeded",
             e->limits.run_timeout);
    uv_timer_start(&e->run_timer, run_timer_cb, (uint64_t)(e->limits.run_timeout * 1000), 0);
  }
  struct sigaction sa, old_sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = sigint_handler;
  sigemptyset(&sa.sa_mask);
  sigint_raw = 0;
  sigint_async = &e->sigint;
  sigaction(SIGINT, &sa, &old_sa);
  /* Neither keeps the loop alive: when only they remain, every task waits on nothing. */
  uv_unref((uv_handle_t *)&e->sigint);
  uv_unref((uv_handle_t *)&e->run_timer);
  while (!e->main_done) {
    uv_run(&e->loop, UV_RUN_DEFAULT);
    if (!e->main_done && !e->killed && !e->ready_head && !uv_loop_alive(&e->loop)) {
      rbl__kill(e, RBL_KILL_LIMIT, "deadlock: every task waits and nothing can wake them");
    }
    if (e->killed && !e->main_done) sched_cb(&e->sched);
  }
  uv_timer_stop(&e->run_timer);
  sigaction(SIGINT, &old_sa, NULL);
  sigint_async = NULL;
  return e->main_status;
}

static void close_walk(uv_handle_t *h, void *arg) {
  if (!uv_is_closing(h)) uv_close(h, NULL);
}

static void engine_free(rbl_engine *e, int memory);

void rbl__engine_free(rbl_engine *e) { engine_free(e, 1); }

void rbl__engine_free_at_exit(rbl_engine *e) {
#if defined(RBL_FREE_AT_EXIT) || defined(__SANITIZE_ADDRESS__)
  engine_free(e, 1);
#else
  engine_free(e, 0);
#endif
}

/* memory = 0: only what outlives the process (rbl__engine_free_at_exit). */
static void engine_free(rbl_engine *e, int memory) {
  if (!e) return;
  e->ended = 1;
  for (rbl_task *t = e->all; t; t = t->next_all) {
    if (t->wait) {
      durable_remove(e, t->wait);
      if (t->wait->cancel == group_cancel) {
        rbl_group *g = t->wait->ud;
        g->dying = 1;
        group_free(g);
      } else if (t->wait->cancel) {
        t->wait->cancel(t->wait->ud);
      }
      free(t->wait);
      t->wait = NULL;
    }
  }
  /* After the waits: close frees requests without calling back, cancel hooks first. */
  rbl__approval_close(e);
  if (e->http) rbl_http_close(e->http);
  e->http = NULL;
  if (!memory) return; /* the finalizers only free memory */
  lua_close(e->L);     /* finalizers run here; primitives refuse (ended) */
  rbl_gate_free(e->gate);
  e->gate = NULL;
  while (e->all) {
    rbl_task *t = e->all;
    e->all = t->next_all;
    free(t->tenant);
    free(t);
  }
  uv_run(&e->loop, UV_RUN_NOWAIT);
  uv_walk(&e->loop, close_walk, NULL);
  uv_run(&e->loop, UV_RUN_DEFAULT);
  uv_loop_close(&e->loop);
  rbl_budget_unbind(e);
  for (size_t i = 0; i < e->nsecrets; i++)
    free(e->secrets[i]);
  free(e->secrets);
  free(e->root.tenant);
  free(e->runbook_dir);
  free(e->approval_sock);
  free(e->approval_incident);
  free(e->approval_run);
  free(e->approval_audit);
  free(e);
}
