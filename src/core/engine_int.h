/* Engine internals shared by engine.c, sandbox.c, host.c, proc.c and main.c (rbl__ prefix). */
#ifndef RBL_ENGINE_INT_H
#define RBL_ENGINE_INT_H

#include "engine.h"
#include <stdint.h>

enum { RBL_KILL_NONE = 0, RBL_KILL_REFUSED, RBL_KILL_LIMIT, RBL_KILL_AUDIT };
enum { TASK_NEW, TASK_READY, TASK_WAITING, TASK_DONE };

typedef struct rbl_task rbl_task;
typedef struct rbl_group rbl_group;

struct rbl_wait {
  rbl_task *task;
  rbl_wait_push push;
  rbl_wait_cancel cancel;
  void *ud;
  rbl_wait *next; /* durability queue link */
};

/* A coroutine the scheduler drives. Owned by the engine's task list; freed once its
 * result has been delivered to its group (or at engine teardown). */
struct rbl_task {
  rbl_engine *e;
  lua_State *co;    /* NULL for the root pseudo-task of the main thread */
  int ref;          /* registry ref keeping co alive */
  char *tenant;     /* bound tenant or NULL; owned */
  rbl_group *group; /* group this task reports to (NULL: main task) */
  int index;        /* 1-based index in the group */
  rbl_wait *wait;   /* what it waits on, or NULL */
  int state;
  int started; /* resumed at least once */
  int timed_out;
  int grace;         /* may run on past the run deadline (the main task, rollback's tasks): see
                        rbl_engine.grace_ok */
  uint64_t deadline; /* uv_hrtime() ns; 0 = none */
  rbl_task *next_ready, *prev_ready;
  rbl_task *prev_all, *next_all;
};

typedef struct rbl_limits {
  size_t memory;         /* bytes */
  double step_timeout;   /* seconds, default per step */
  double run_timeout;    /* seconds for the whole run */
  double rollback_grace; /* seconds past run_timeout for rollback (rbl run only; 0: none) */
  size_t output;         /* bytes a runbook may print */
  size_t exec_output;    /* bytes captured per stream of exec */
  long instructions_per_check;
  int http_connections; /* requests in flight per API server; more wait in a queue */
} rbl_limits;

struct rbl_engine {
  uv_loop_t loop;
  lua_State *L;
  rbl_task root; /* pseudo-task for the main thread */
  rbl_task *all; /* live tasks */
  rbl_task *ready_head, *ready_tail;
  rbl_wait *durable; /* waits for the next audit sync */
  uv_idle_t sched;
  uv_timer_t run_timer;
  uv_async_t sigint; /* woken by the SIGINT handler */
  int sigint_count;
  int interrupted;
  struct rbl_http *http;
  struct rbl_audit *audit;
  struct rbl_gate *gate; /* the tenant gate (gate.c): created on first use, freed with the engine */
  rbl_task *main_task;
  int main_done;
  int main_status; /* LUA_OK or error status of the main task */
  int killed;      /* RBL_KILL_* */
  char kill_msg[512];
  size_t mem, ext, mem_cap; /* bytes of Lua's allocator, bytes charged by budget.c, the cap */
  int mem_slack;            /* the cap holds RBL_MEM_SLACK of head room (killed for memory) */
  int unprotected;          /* scheduler code outside any task: an allocation failure would panic */
  rbl_task *running;        /* the task being resumed, or NULL */
  unsigned charges;         /* budget.c: allocations of parsers, for the deadline check */
  int parsing;              /* budget.c: a parser runs (rbl_budget_parse_begin) */
  rbl_engine *budget_prev;  /* budget.c: the engine bound before this one */
  rbl_limits limits;
  size_t printed;
  uint64_t run_deadline; /* uv_hrtime() ns; 0 = none */
  /* The run deadline with a grace for rollback (rbl run: grace_ok). At run_deadline the tasks
   * that are not grace tasks stop (the running step, canceled like a Ctrl-C); the main task
   * and the tasks it starts while rolling_back run on until grace_end, when the run is
   * killed. Without grace_ok (or a grace of 0) the run is killed at run_deadline. */
  int grace_ok, deadline_hit, deadline_swept, rolling_back;
  uint64_t grace_end;
  char deadline_msg[160];
  int dry_run;
  int check_mode; /* rbl check: primitives stop evaluation */
  int silent;     /* print writes nothing (rbl run's preflight evaluation, src/cli/preflight.c) */
  int ended;      /* the run is over: no primitive may start */
  char *runbook_dir;
  int quiet, color;
  int64_t next_call;
  struct rbl_call *live;         /* calls in flight: durable intent, no result yet (host.c) */
  struct rbl_approval *approval; /* approval.c: the socket and pending requests, or NULL */
  char *approval_sock;           /* where the approval socket goes (beside the chain); owned */
  char *approval_incident, *approval_run, *approval_audit; /* shown to approvers; owned */
  char **secrets; /* values to mask wherever text leaves the process; owned */
  size_t nsecrets;
  /* rbl run: the run_start record, built when the first record of the run is written (so it
   * names the runbook{} id declared by then); called once by rbl__audit, then cleared. */
  cJSON *(*start_record)(void *ud);
  void *start_ud;
  char runbook_id[128]; /* the id runbook{} declared (host.runbook_id), "" before */
  int progress_json;    /* --progress json: JSON lines on stderr instead of the text progress */
};

rbl_task *rbl__task_of(lua_State *L);
void rbl__push_error(lua_State *L, const char *code, const char *msg);
void rbl__kill(rbl_engine *e, int why, const char *fmt, ...);
/* The memory limit was hit (Lua's allocator or the byte budget, budget.c): the first time,
 * kills the run (exit 3) and grants RBL_MEM_SLACK so the host can finish it. */
void rbl__memory_exceeded(rbl_engine *e);
#define RBL_MEM_SLACK (32u << 20)
void rbl__poll_limits(lua_State *L); /* raises if killed, timed out or past a deadline */
int rbl__limits_hit(lua_State *L);   /* 1 when rbl__poll_limits would raise; raises nothing */
int rbl__task_stopping(rbl_task *t); /* the same for a task */
void rbl__durable_wait(rbl_engine *e, rbl_wait *w);
int rbl__spawn_group(lua_State *L); /* host.run_all */
int rbl__interrupt_check(lua_State *L);
int rbl__deadline_check(lua_State *L); /* host.deadline() */
int rbl__rolling_back(lua_State *L);   /* host.rolling_back(bool) */
void rbl__sandbox_hook(lua_State *co);
/* Pushes t[k] of the table at idx with raw access (no metamethod of a config or runbook runs),
 * or nil when idx is not a table; returns the pushed value's type. */
int rbl__raw_field(lua_State *L, int idx, const char *k);
/* Marks the table at idx read-only for the sandbox's rawset and setmetatable. */
void rbl__protect(lua_State *L, int idx);

/* Calls in flight of a task being aborted get a "canceled" result (host.c); a freed task is
 * forgotten by every call that pointed at it. */
void rbl__calls_cancel(rbl_engine *e, rbl_task *t, const char *code, const char *msg);
void rbl__calls_forget(rbl_engine *e, rbl_task *t);

/* Approvals (approval.c): host.approval_wait, and closing the socket at the run's end. */
typedef struct rbl_approval rbl_approval;
int rbl__approval_wait(lua_State *L);
void rbl__approval_close(rbl_engine *e);

/* Secrets: masking by value of every text that leaves the process. */
char *rbl__mask(rbl_engine *e, const char *s, size_t len,
                size_t *outlen); /* malloc'd or NULL if unchanged */
void rbl__mask_json(rbl_engine *e, cJSON *j);
/* How many bytes at the end of s[0,len) are the start (not the whole) of a secret: what a cut
 * left of one. 0 if none. */
size_t rbl__secret_tail(rbl_engine *e, const char *s, size_t len);
/* Appends an audit record (kind + fields in rec, taken); kills the run (exit 4) on failure. */
int rbl__audit(rbl_engine *e, cJSON *rec);
void rbl__progress(rbl_engine *e, const char *fmt, ...);
void rbl__progress_event(rbl_engine *e, cJSON *ev); /* --progress json: one line; consumes ev */

/* Lifecycle, for main.c. */
rbl_engine *rbl__engine_new(const rbl_limits *lim);
/* Runs the function on top of e->L (with nargs arguments below it... pushed after it) as the
 * main task and drives the loop until it ends or the run is killed. Leaves on e->L's stack
 * either the main function's first result (status LUA_OK) or its error value. */
int rbl__engine_run(rbl_engine *e, int nargs);
void rbl__engine_free(rbl_engine *e);
/* For a process that exits right after: stops what would outlive it (child processes, the
 * approval socket, requests in flight) as rbl__engine_free does, and leaves the memory (the Lua
 * state, tasks, loop) to the OS, whose reclaiming it is free: freeing it was a tenth of a
 * no-op run. Builds with sanitizers (RBL_FREE_AT_EXIT) free everything, so leak checks still
 * see every allocation. */
void rbl__engine_free_at_exit(rbl_engine *e);
void rbl__default_limits(rbl_limits *lim);

#endif
