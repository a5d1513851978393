/* rbl.proc: the exec effect. uv_spawn, argv never through a shell, a process group killed on
 * timeout. */
#include "budget.h"
#include "engine_int.h"
#include "gate.h"
#include "host.h"
#include "proc.h"

#include <lauxlib.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

typedef struct buf {
  char *data;
  size_t len, cap, limit;
  int truncated;
} buf;

/* One running process. Owned by itself: freed when every handle has closed (handles == 0)
 * and nobody waits (wait == NULL after done or cancel). */
typedef struct proc_op {
  uv_process_t proc;
  uv_pipe_t out, err, in;
  uv_timer_t timer;
  uv_write_t wreq;
  int handles;
  rbl_wait *wait;
  buf bout, berr;
  char *stdin_data;
  int64_t exit_code;
  int term_signal;
  int exited, timed_out;
  double timeout;
  const char *what; /* static string naming the caller */
  uint64_t t0, t1;

} proc_op;

static void op_maybe_free(proc_op *op) {
  if (op->handles > 0 || op->wait) return;
  rbl_budget_free(op->bout.data);
  rbl_budget_free(op->berr.data);
  free(op->stdin_data);
  free(op);
}

static void on_close(uv_handle_t *h) {
  proc_op *op = h->data;
  op->handles--;
  op_maybe_free(op);
}

static void close_all(proc_op *op) {
  uv_handle_t *hs[] = {(uv_handle_t *)&op->proc, (uv_handle_t *)&op->out, (uv_handle_t *)&op->err,
                       (uv_handle_t *)&op->in, (uv_handle_t *)&op->timer};
  for (size_t i = 0; i < sizeof hs / sizeof *hs; i++)
    if (hs[i]->data && !uv_is_closing(hs[i])) uv_close(hs[i], on_close);
}

/* Done once the process exited and both pipes reached EOF. */
static void maybe_done(proc_op *op) {
  if (!op->exited || !uv_is_closing((uv_handle_t *)&op->out) ||
      !uv_is_closing((uv_handle_t *)&op->err))
    return;
  close_all(op);
  if (op->wait) {
    rbl_wait *w = op->wait;
    rbl_wait_done(w);
  }
}

static void alloc_cb(uv_handle_t *h, size_t sugg, uv_buf_t *b) {
  static char scratch[65536]; /* read lands here, then copied within the cap */
  b->base = scratch;
  b->len = sizeof scratch;
}

static void buf_add(buf *b, const char *p, size_t n) {
  if (b->len + n > b->limit) {
    n = b->limit > b->len ? b->limit - b->len : 0;
    b->truncated = 1;
  }
  if (!n) return;
  if (b->len + n > b->cap) {
    size_t cap = b->cap ? b->cap * 2 : 4096;
    while (cap < b->len + n)
      cap *= 2;
    char *d = rbl_budget_realloc(b->data, cap); /* captures of concurrent execs add up */
    if (!d) {
      b->truncated = 1;
      b->limit = b->len; /* over the run's budget (the run is killed): keep no more */
      return;
    }
    b->data = d;
    b->cap = cap;
  }
  memcpy(b->data + b->len, p, n);
  b->len += n;
}

static void read_cb(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
  proc_op *op = s->data;
  if (n > 0) {
    buf_add(s == (uv_stream_t *)&op->out ? &op->bout : &op->berr, b->base, (size_t)n);
    return;
  }
  if (n < 0) {
    uv_close((uv_handle_t *)s, on_close);
    maybe_done(op);
  }
}

static void exit_cb(uv_process_t *p, int64_t status, int sig) {
  proc_op *op = p->data;
  op->exited = 1;
  op->exit_code = status;
  op->term_signal = sig;
  op->t1 = uv_hrtime();
  /* Children that kept the pipes open must not hold the call: close the group. */
  uv_kill(-p->pid, SIGKILL);
  uv_timer_stop(&op->timer);
  maybe_done(op);
}

static void timeout_cb(uv_timer_t *t) {
  proc_op *op = t->data;
  op->timed_out = 1;
  uv_kill(-op->proc.pid, SIGKILL);
}

static void cancel_cb(void *ud) {
  proc_op *op = ud;
  op->wait = NULL;
  if (!op->exited) uv_kill(-op->proc.pid, SIGKILL);
  close_all(op);
  op_maybe_free(op);
}

static void write_cb(uv_write_t *r, int status) {
  proc_op *op = r->data;
  if (!uv_is_closing((uv_handle_t *)&op->in)) uv_close((uv_handle_t *)&op->in, on_close);
}

/* A captured stream; cut short at the cap, it does not end in the start of a secret (that start
 * becomes "[redacted]": masking, which needs the whole value, could not catch it later). */
static void push_stream(lua_State *L, const buf *b) {
  const char *d = b->data ? b->data : "";
  size_t tail = b->truncated ? rbl__secret_tail(rbl_engine_of(L), d, b->len) : 0;
  lua_pushlstring(L, d, b->len - tail);
  if (tail) {
    lua_pushliteral(L, "[redacted]");
    lua_concat(L, 2);
  }
}

static int push_cb(lua_State *L, void *ud) {
  proc_op *op = ud;
  op->wait = NULL;
  if (rbl__limits_hit(L)) { /* the capture outgrew the run's memory budget: "killed" */
    op_maybe_free(op);
    rbl__poll_limits(L);
  }
  double ms = (double)(op->t1 - op->t0) / 1e6;
  if (op->timed_out) {
    double timeout = op->timeout;
    const char *what = op->what;
    op_maybe_free(op);
    return rbl_raise(L, "timeout", "%s: timed out after %gs (process group killed)", what, timeout);
  }
  lua_createtable(L, 0, 6);
  lua_pushinteger(L, op->term_signal ? 128 + op->term_signal : op->exit_code);
  lua_setfield(L, -2, "exit_code");
  if (op->term_signal) {
    lua_pushinteger(L, op->term_signal);
    lua_setfield(L, -2, "signal");
  }
  push_stream(L, &op->bout);
  lua_setfield(L, -2, "stdout");
  push_stream(L, &op->berr);
  lua_setfield(L, -2, "stderr");
  lua_pushinteger(L, (lua_Integer)(ms + 0.5));
  lua_setfield(L, -2, "duration_ms");
  lua_pushboolean(L, op->bout.truncated || op->berr.truncated);
  lua_setfield(L, -2, "truncated");
  op_maybe_free(op);
  return 1;
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Builds a NULL-terminated vector from the array (or, with is_env, the name -> value map) at
 * idx, secrets unwrapped. The strings and the vector are anchored in a table left on the stack,
 * which is all uv_spawn needs: it copies them before the task ever yields. */
static char **string_vector(lua_State *L, int idx, int is_env) {
  idx = lua_absindex(L, idx);
  lua_newtable(L);
  int keep = lua_gettop(L);
  lua_Integer n = 0;
  if (is_env) {
    lua_pushnil(L);
    while (lua_next(L, idx)) {
      const char *key = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
      lua_getfield(L, LUA_REGISTRYINDEX, "rbl.unwrap");
      lua_insert(L, -2);
      lua_call(L, 1, 1);
      const char *val = lua_tostring(L, -1);
      if (!key || !val || strchr(key, '=')) luaL_error(L, "exec: env must map names to strings");
      lua_pushfstring(L, "%s=%s", key, val);
      lua_rawseti(L, keep, ++n);
      lua_pop(L, 1);
    }
  } else {
    lua_Integer len = (lua_Integer)lua_rawlen(L, idx);
    for (lua_Integer i = 1; i <= len; i++) {
      lua_getfield(L, LUA_REGISTRYINDEX, "rbl.unwrap");
      lua_rawgeti(L, idx, i);
      lua_call(L, 1, 1);
      if (!lua_tostring(L, -1)) luaL_error(L, "exec: argv[%d] is not a string", (int)i);
      lua_rawseti(L, keep, ++n);
    }
  }
  char **v = lua_newuserdatauv(L, (size_t)(n + 1) * sizeof(char *), 0);
  for (lua_Integer i = 1; i <= n; i++) {
    lua_rawgeti(L, keep, i);
    v[i - 1] = (char *)lua_tostring(L, -1); /* anchored by keep */
    lua_pop(L, 1);
  }
  v[n] = NULL;
  /* An environment in name order, not the table's hash order: the child sees the same block
   * every run, and the gate names the same first refused variable every run. */
  if (is_env) qsort(v, (size_t)n, sizeof *v, cmp_str);
  lua_rawseti(L, keep, n + 1); /* anchor the vector too */
  return v;
}

int rbl_proc_spawn(lua_State *L, const rbl_proc_spec *spec) {
  char why[1024];
  rbl_gate *g = rbl_gate_of(L);
  if (spec->gate_class == RBL_GATE_EXEC
          ? rbl_gate_spawn_exec(g, spec->path, spec->argv, spec->user_env, why, sizeof why) != 0
          : rbl_gate_spawn(g, spec->gate_class, spec->path, why, sizeof why) != 0)
    return rbl_refuse(L, spec->prim ? spec->prim : spec->what, "%s", why);
  proc_op *op = calloc(1, sizeof *op);
  if (!op) return luaL_error(L, "out of memory");
  op->bout.limit = op->berr.limit = spec->output_cap;
  op->timeout = spec->timeout;
  op->what = spec->what;
  uv_loop_t *loop = rbl_engine_loop(rbl_engine_of(L));
  uv_pipe_init(loop, &op->out, 0);
  uv_pipe_init(loop, &op->err, 0);
  uv_pipe_init(loop, &op->in, 0);
  uv_timer_init(loop, &op->timer);
  op->out.data = op->err.data = op->in.data = op->timer.data = op;
  op->handles = 4;
  uv_stdio_container_t stdio[3] = {
      {.flags = UV_CREATE_PIPE | UV_READABLE_PIPE, .data.stream = (uv_stream_t *)&op->in},
      {.flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE, .data.stream = (uv_stream_t *)&op->out},
      {.flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE, .data.stream = (uv_stream_t *)&op->err}};
  uv_process_options_t po = {.exit_cb = exit_cb,
                             .file = spec->path,
                             .args = (char **)spec->argv,
                             .env = (char **)spec->env,
                             .cwd = spec->cwd,
                             .flags = UV_PROCESS_DETACHED,
                             .stdio_count = 3,
                             .stdio = stdio};
  op->t0 = uv_hrtime();
  int rc = uv_spawn(loop, &op->proc, &po);
  /* Even a failed uv_spawn leaves the process handle in the loop: it is closed like the others
   * (freeing op before its close callback tripped an assertion at exit). */
  op->proc.data = op;
  op->handles++;
  if (rc != 0) {
    close_all(op);
    struct stat st;
    if (rc == UV_ENOENT && spec->cwd && (stat(spec->cwd, &st) != 0 || !S_ISDIR(st.st_mode)))
      return rbl_raise(L, "failed", "%s %s: working directory %s does not exist", spec->what,
                       spec->path, spec->cwd);
    if (rc == UV_E2BIG)
      return rbl_raise(L, "failed",
                       "%s %s: argument list too long (arguments and environment together "
                       "exceed the kernel's limit)",
                       spec->what, spec->path);
    return rbl_raise(L, "failed", "%s %s: %s", spec->what, spec->path, uv_strerror(rc));
  }
  uv_read_start((uv_stream_t *)&op->out, alloc_cb, read_cb);
  uv_read_start((uv_stream_t *)&op->err, alloc_cb, read_cb);
  if (spec->stdin_data && spec->stdin_len) {
    op->stdin_data = malloc(spec->stdin_len);
    memcpy(op->stdin_data, spec->stdin_data, spec->stdin_len);
    uv_buf_t b = uv_buf_init(op->stdin_data, (unsigned)spec->stdin_len);
    op->wreq.data = op;
    uv_write(&op->wreq, (uv_stream_t *)&op->in, &b, 1, write_cb);
  } else {
    uv_close((uv_handle_t *)&op->in, on_close);
  }
  if (spec->timeout > 0)
    uv_timer_start(&op->timer, timeout_cb, (uint64_t)(spec->timeout * 1000), 0);
  op->wait = rbl_wait_new(L, push_cb, cancel_cb, op);
  return rbl_wait_yield(L, op->wait);
}

/* proc.spawn(call, path, argv, opts) */
static int l_spawn(lua_State *L) {
  rbl_host_call_check_http(L, 1, "EXEC");
  rbl_engine *e = rbl_engine_of(L);
  const char *path = luaL_checkstring(L, 2);
  luaL_checktype(L, 3, LUA_TTABLE);
  luaL_checktype(L, 4, LUA_TTABLE);
  lua_getfield(L, 4, "timeout");
  double timeout = luaL_optnumber(L, -1, e->limits.step_timeout);
  lua_getfield(L, 4, "cwd");
  const char *cwd = luaL_optstring(L, -1, NULL);
  lua_getfield(L, 4, "stdin");
  size_t inlen = 0;
  const char *indata = luaL_optlstring(L, -1, NULL, &inlen);
  lua_getfield(L, 4, "env");
  int envidx = lua_gettop(L);
  char **argv = string_vector(L, 3, 0);
  char **user_env = lua_istable(L, envidx) ? string_vector(L, envidx, 1) : NULL;
  lua_newtable(L);
  lua_pushstring(L, "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
  lua_setfield(L, -2, "PATH");
  lua_pushliteral(L, "C.UTF-8");
  lua_setfield(L, -2, "LANG");
  if (lua_istable(L, envidx)) {
    lua_pushnil(L);
    while (lua_next(L, envidx)) {
      lua_pushvalue(L, -2);
      lua_insert(L, -2);
      lua_settable(L, -4);
    }
  }
  char **env = string_vector(L, lua_gettop(L), 1);
  rbl_proc_spec spec = {.what = "exec",
                        .prim = rbl_host_call_prim(L, 1),
                        .gate_class = RBL_GATE_EXEC,
                        .path = path,
                        .argv = argv,
                        .env = env,
                        .user_env = user_env,
                        .cwd = cwd,
                        .stdin_data = indata,
                        .stdin_len = inlen,
                        .timeout = timeout,
                        .output_cap = e->limits.exec_output};
  return rbl_proc_spawn(L, &spec);
}

static const luaL_Reg proc_funcs[] = {{"spawn", l_spawn}, {NULL, NULL}};

int luaopen_rbl_proc(lua_State *L) {
  luaL_newlib(L, proc_funcs);
  return 1;
}
