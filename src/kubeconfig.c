/* rbl.kubec: YAML, file, base64 and time helpers for kubeconfig loading, and the exec
 * credential plugin runner (uv_spawn, yields; not an audited exec: it only fetches a token). */
#include "kubeconfig.h"
#include "engine.h"
#include "json.h"
#include "yaml.h"

#include <errno.h>
#include <lauxlib.h>
#include <openssl/evp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#define KUBEC_FILE_MAX (8u << 20)
#define KUBEC_OUT_MAX  (1u << 20)

extern char **environ;

/* kubec.parse_yaml(text) -> array of documents | nil, "line L, column C: why" */
static int kubec_parse_yaml(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  char err[256];
  cJSON *docs = rbl_yaml_parse(s, len, err, sizeof err);
  if (!docs) {
    luaL_pushfail(L);
    lua_pushstring(L, err);
    return 2;
  }
  rbl_json_push(L, docs);
  cJSON_Delete(docs);
  return 1;
}

/* kubec.read_file(path) -> contents, mtime_ns | nil, message */
static int kubec_read_file(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  FILE *f = fopen(path, "rb");
  struct stat st;
  if (!f || fstat(fileno(f), &st) != 0) {
    int e = errno;
    if (f) fclose(f);
    luaL_pushfail(L);
    lua_pushfstring(L, "%s: %s", path, strerror(e));
    return 2;
  }
  if (!S_ISREG(st.st_mode) || (size_t)st.st_size > KUBEC_FILE_MAX) {
    fclose(f);
    luaL_pushfail(L);
    lua_pushfstring(L, "%s: %s", path,
                    S_ISREG(st.st_mode) ? "file too large" : "not a regular file");
    return 2;
  }
  luaL_Buffer b;
  char *p = luaL_buffinitsize(L, &b, (size_t)st.st_size + 1);
  size_t n = fread(p, 1, (size_t)st.st_size + 1, f);
  int bad = ferror(f);
  fclose(f);
  if (bad) {
    luaL_pushfail(L);
    lua_pushfstring(L, "%s: read error", path);
    return 2;
  }
  luaL_pushresultsize(&b, n);
  lua_pushinteger(L, (lua_Integer)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec);
  return 2;
}

/* kubec.stat(path) -> mtime_ns, size | nil, message: cheap check whether a token file rotated */
static int kubec_stat(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  struct stat st;
  if (stat(path, &st) != 0) {
    luaL_pushfail(L);
    lua_pushfstring(L, "%s: %s", path, strerror(errno));
    return 2;
  }
  lua_pushinteger(L, (lua_Integer)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec);
  lua_pushinteger(L, (lua_Integer)st.st_size);
  return 2;
}

/* kubec.b64decode(s) -> bytes | nil, message (whitespace ignored, padding required) */
static int kubec_b64decode(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  luaL_Buffer clean;
  luaL_buffinit(L, &clean);
  for (size_t i = 0; i < len; i++)
    if (s[i] != ' ' && s[i] != '\n' && s[i] != '\r' && s[i] != '\t') luaL_addchar(&clean, s[i]);
  luaL_pushresult(&clean);
  size_t n;
  const char *c = lua_tolstring(L, -1, &n);
  if (n % 4 != 0) {
    luaL_pushfail(L);
    lua_pushliteral(L, "invalid base64 (length not a multiple of 4)");
    return 2;
  }
  unsigned char *out = malloc(n / 4 * 3 + 1);
  if (!out) return luaL_error(L, "not enough memory");
  int got = n ? EVP_DecodeBlock(out, (const unsigned char *)c, (int)n) : 0;
  if (got < 0) {
    free(out);
    luaL_pushfail(L);
    lua_pushliteral(L, "invalid base64");
    return 2;
  }
  if (n >= 1 && c[n - 1] == '=') got--; /* EVP_DecodeBlock counts padding as zero bytes */
  if (n >= 2 && c[n - 2] == '=') got--;
  lua_pushlstring(L, (const char *)out, (size_t)got);
  free(out);
  return 1;
}

/* kubec.parse_time("2026-01-17T03:42:15Z" or with an offset / fraction) -> epoch seconds | nil */
static int kubec_parse_time(lua_State *L) {
  const char *s = luaL_checkstring(L, 1);
  struct tm tm;
  memset(&tm, 0, sizeof tm);
  const char *p = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
  if (!p) {
    luaL_pushfail(L);
    return 1;
  }
  if (*p == '.') {
    p++;
    while (*p >= '0' && *p <= '9')
      p++;
  }
  long off = 0;
  if (*p == '+' || *p == '-') {
    int hh = 0, mm = 0;
    if (sscanf(p + 1, "%2d:%2d", &hh, &mm) != 2) {
      luaL_pushfail(L);
      return 1;
    }
    off = (hh * 3600L + mm * 60L) * (*p == '-' ? -1 : 1);
  } else if (*p != 'Z' && *p != 'z') {
    luaL_pushfail(L);
    return 1;
  }
  lua_pushinteger(L, (lua_Integer)timegm(&tm) - off);
  return 1;
}

/* ---- the credential plugin runner ---- */

/* One plugin process. Owned by itself: freed when its handles have closed and nobody waits. */
typedef struct kspawn {
  uv_process_t proc;
  uv_pipe_t out, err;
  uv_timer_t timer;
  int handles;
  rbl_wait *wait;
  char *obuf, *ebuf;
  size_t olen, elen;
  int64_t exit_code;
  int term_signal, exited, timed_out;
  double timeout;
} kspawn;

static void ks_maybe_free(kspawn *k) {
  if (k->handles > 0 || k->wait) return;
  free(k->obuf);
  free(k->ebuf);
  free(k);
}

static void ks_on_close(uv_handle_t *h) {
  kspawn *k = h->data;
  k->handles--;
  ks_maybe_free(k);
}

static void ks_close_all(kspawn *k) {
  uv_handle_t *hs[] = {(uv_handle_t *)&k->proc, (uv_handle_t *)&k->out, (uv_handle_t *)&k->err,
                       (uv_handle_t *)&k->timer};
  for (size_t i = 0; i < sizeof hs / sizeof *hs; i++)
    if (hs[i]->data && !uv_is_closing(hs[i])) uv_close(hs[i], ks_on_close);
}

static void ks_maybe_done(kspawn *k) {
  if (!k->exited || !uv_is_closing((uv_handle_t *)&k->out) ||
      !uv_is_closing((uv_handle_t *)&k->err))
    return;
  ks_close_all(k);
  if (k->wait) rbl_wait_done(k->wait);
}

static void ks_alloc(uv_handle_t *h, size_t sugg, uv_buf_t *b) {
  static char scratch[16384];
  b->base = scratch;
  b->len = sizeof scratch;
}

static void ks_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
  kspawn *k = s->data;
  if (n < 0) {
    uv_close((uv_handle_t *)s, ks_on_close);
    ks_maybe_done(k);
    return;
  }
  char **buf = s == (uv_stream_t *)&k->out ? &k->obuf : &k->ebuf;
  size_t *len = s == (uv_stream_t *)&k->out ? &k->olen : &k->elen;
  if (n == 0 || *len + (size_t)n > KUBEC_OUT_MAX) return; /* over the cap: dropped */
  char *d = realloc(*buf, *len + (size_t)n + 1);
  if (!d) return;
  memcpy(d + *len, b->base, (size_t)n);
  *len += (size_t)n;
  d[*len] = 0;
  *buf = d;
}

static void ks_exit(uv_process_t *p, int64_t status, int sig) {
  kspawn *k = p->data;
  k->exited = 1;
  k->exit_code = status;
  k->term_signal = sig;
  uv_kill(-p->pid, SIGKILL); /* grandchildren holding the pipes must not hold us */
  uv_timer_stop(&k->timer);
  ks_maybe_done(k);
}

static void ks_timeout(uv_timer_t *t) {
  kspawn *k = t->data;
  k->timed_out = 1;
  uv_kill(-k->proc.pid, SIGKILL);
}

static void ks_cancel(void *ud) {
  kspawn *k = ud;
  k->wait = NULL;
  if (!k->exited) uv_kill(-k->proc.pid, SIGKILL);
  ks_close_all(k);
  ks_maybe_free(k);
}

static int ks_push(lua_State *L, void *ud) {
  kspawn *k = ud;
  k->wait = NULL;
  if (k->timed_out) {
    double t = k->timeout;
    ks_maybe_free(k);
    return rbl_raise(L, "timeout", "credential plugin timed out after %gs", t);
  }
  lua_createtable(L, 0, 3);
  lua_pushinteger(L, k->term_signal ? 128 + k->term_signal : k->exit_code);
  lua_setfield(L, -2, "exit_code");
  lua_pushlstring(L, k->obuf ? k->obuf : "", k->olen);
  lua_setfield(L, -2, "stdout");
  lua_pushlstring(L, k->ebuf ? k->ebuf : "", k->elen);
  lua_setfield(L, -2, "stderr");
  ks_maybe_free(k);
  return 1;
}

/* Builds argv (from the array at idx) or env (this process's environment overlaid with the
 * map at idx) as a NULL-terminated vector of strings kept alive in a table at the stack top. */
static const char **ks_vector(lua_State *L, int idx, int is_env) {
  lua_newtable(L);
  int keep = lua_gettop(L);
  lua_Integer n = 0;
  if (is_env) {
    for (char **e = environ; *e; e++) {
      const char *eq = strchr(*e, '=');
      if (!eq) continue;
      lua_pushlstring(L, *e, (size_t)(eq - *e));
      lua_pushstring(L, eq + 1);
      lua_rawset(L, keep);
    }
    if (lua_istable(L, idx)) {
      lua_pushnil(L);
      while (lua_next(L, idx)) {
        if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TSTRING ||
            strchr(lua_tostring(L, -2), '='))
          luaL_error(L, "kubec.spawn: env must map names to strings");
        lua_pushvalue(L, -2);
        lua_insert(L, -2);
        lua_rawset(L, keep);
      }
    }
    lua_newtable(L); /* keep, list */
    lua_pushnil(L);
    while (lua_next(L, keep)) {
      lua_pushfstring(L, "%s=%s", lua_tostring(L, -2), lua_tostring(L, -1));
      lua_rawseti(L, keep + 1, ++n);
      lua_pop(L, 1);
    }
    lua_replace(L, keep);
  } else {
    lua_Integer len = (lua_Integer)lua_rawlen(L, idx);
    for (lua_Integer i = 1; i <= len; i++) {
      if (lua_rawgeti(L, idx, i) != LUA_TSTRING)
        luaL_error(L, "kubec.spawn: argv must hold strings");
      lua_rawseti(L, keep, ++n);
    }
  }
  const char **v = lua_newuserdatauv(L, (size_t)(n + 1) * sizeof(char *), 0);
  for (lua_Integer i = 1; i <= n; i++) {
    lua_rawgeti(L, keep, i);
    v[i - 1] = lua_tostring(L, -1); /* anchored by the table */
    lua_pop(L, 1);
  }
  v[n] = NULL;
  lua_rawseti(L, keep, n + 1); /* anchor the vector too */
  return v;
}

/* kubec.spawn(path, argv, env, {timeout = s}) -> {exit_code, stdout, stderr}; yields.
 * The plugin inherits this process's environment plus env; stdin is /dev/null. */
static int kubec_spawn(lua_State *L) {
  rbl_engine *e = rbl_engine_of(L);
  const char *path = luaL_checkstring(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  double timeout = 60;
  if (lua_istable(L, 4)) {
    lua_getfield(L, 4, "timeout");
    timeout = luaL_optnumber(L, -1, 60);
    lua_pop(L, 1);
  }
  lua_settop(L, 3);
  const char **argv = ks_vector(L, 2, 0);
  const char **env = ks_vector(L, 3, 1);
  kspawn *k = calloc(1, sizeof *k);
  if (!k) return luaL_error(L, "not enough memory");
  k->timeout = timeout;
  uv_loop_t *loop = rbl_engine_loop(e);
  uv_pipe_init(loop, &k->out, 0);
  uv_pipe_init(loop, &k->err, 0);
  uv_timer_init(loop, &k->timer);
  k->out.data = k->err.data = k->timer.data = k->proc.data = k;
  k->handles = 4; /* the process handle is initialised by uv_spawn even when it fails */
  uv_stdio_container_t stdio[3] = {
      {.flags = UV_IGNORE},
      {.flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE, .data.stream = (uv_stream_t *)&k->out},
      {.flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE, .data.stream = (uv_stream_t *)&k->err}};
  uv_process_options_t po = {.exit_cb = ks_exit,
                             .file = path,
                             .args = (char **)argv,
                             .env = (char **)env,
                             .flags = UV_PROCESS_DETACHED,
                             .stdio_count = 3,
                             .stdio = stdio};
  int rc = uv_spawn(loop, &k->proc, &po);
  if (rc != 0) {
    ks_close_all(k);
    return rbl_raise(L, "failed", "credential plugin %s: %s", path, uv_strerror(rc));
  }
  uv_read_start((uv_stream_t *)&k->out, ks_alloc, ks_read);
  uv_read_start((uv_stream_t *)&k->err, ks_alloc, ks_read);
  if (timeout > 0) uv_timer_start(&k->timer, ks_timeout, (uint64_t)(timeout * 1000), 0);
  k->wait = rbl_wait_new(L, ks_push, ks_cancel, k);
  return rbl_wait_yield(L, k->wait);
}

static const luaL_Reg kubec_funcs[] = {{"parse_yaml", kubec_parse_yaml},
                                       {"read_file", kubec_read_file},
                                       {"stat", kubec_stat},
                                       {"b64decode", kubec_b64decode},
                                       {"parse_time", kubec_parse_time},
                                       {"spawn", kubec_spawn},
                                       {NULL, NULL}};

int luaopen_rbl_kubec(lua_State *L) {
  luaL_newlib(L, kubec_funcs);
  return 1;
}
