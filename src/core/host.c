/* rbl.host: call objects and the one path every primitive takes, plus secrets, log and sleep. */
#include "host.h"
#include "textesc.h"
#include "audit.h"
#include "engine_int.h"
#include "jcs.h"
#include "json.h"
#include "rbl.h"
#include "sha256.h"

#include <lauxlib.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { CALL_SCOPE, CALL_DURABLE, CALL_DONE };

/* One primitive call; a full userdata owned by Lua, tenant string owned by it (freed in __gc). */
typedef struct rbl_call {
  int64_t id;
  char prim[40];
  char *tenant;
  int state;
  uint64_t t0;
  int write;      /* a write primitive (prim.define{write = true}) */
  int sent;       /* a request other than GET/HEAD (or a spawn) left for this call */
  cJSON *before;  /* the before-state the effect declared (host.before), owned */
  rbl_task *task; /* the task that runs the call while it is in flight */
  int canceled;   /* its task was aborted in flight: the fields below say why (host.canceled) */
  char cancel_code[16];
  char cancel_msg[240];
  double cancel_ms;
  rbl_engine *e;
  struct rbl_call *prev_live, *next_live; /* e->live: calls with a durable intent, no result */
} rbl_call;

static void live_unlink(rbl_call *c) {
  if (!c->e) return;
  if (c->prev_live)
    c->prev_live->next_live = c->next_live;
  else if (c->e->live == c)
    c->e->live = c->next_live;
  if (c->next_live) c->next_live->prev_live = c->prev_live;
  c->prev_live = c->next_live = NULL;
}

static void live_link(rbl_engine *e, rbl_call *c) {
  c->e = e;
  c->prev_live = NULL;
  c->next_live = e->live;
  if (e->live) e->live->prev_live = c;
  e->live = c;
}

static rbl_call *check_call(lua_State *L, int idx) { return luaL_checkudata(L, idx, "rbl.call"); }

/* ---- audit plumbing ---- */

int rbl__audit(rbl_engine *e, cJSON *rec) {
  if (!e->audit) {
    cJSON_Delete(rec);
    return 0;
  }
  if (e->start_record) { /* the run's first record goes first */
    cJSON *(*start)(void *) = e->start_record;
    e->start_record = NULL;
    cJSON *first = start(e->start_ud);
    if (first && rbl__audit(e, first) != 0) {
      cJSON_Delete(rec);
      return -1;
    }
  }
  rbl__mask_json(e, rec);
  if (rbl_audit_append(e->audit, rec) < 0) {
    rbl__kill(e, RBL_KILL_AUDIT, "%s", rbl_audit_error(e->audit));
    return -1;
  }
  return 0;
}

static cJSON *call_record(const char *kind, const rbl_call *c) {
  cJSON *r = cJSON_CreateObject();
  cJSON_AddStringToObject(r, "kind", kind);
  cJSON_AddNumberToObject(r, "call", (double)c->id);
  cJSON_AddStringToObject(r, "prim", c->prim);
  if (c->tenant) cJSON_AddStringToObject(r, "tenant", c->tenant);
  return r;
}

/* ---- secrets ---- */

char *rbl__mask(rbl_engine *e, const char *s, size_t len, size_t *outlen) {
  char *out = NULL;
  size_t n = len;
  for (size_t k = 0; k < e->nsecrets; k++) {
    const char *sec = e->secrets[k];
    size_t sl = strlen(sec);
    if (sl < 4) continue; /* masking tiny values would shred ordinary text */
    const char *src = out ? out : s;
    if (!memmem(src, n, sec, sl)) continue;
    /* each match of sl >= 4 bytes becomes 10: at most n / sl matches */
    char *buf = malloc(n + (n / sl) * 10 + 16);
    if (!buf) {
      free(out);
      if (outlen) *outlen = 0;
      return strdup("[redacted: out of memory while masking]");
    }
    size_t o = 0;
    for (size_t i = 0; i < n;) {
      if (i + sl <= n && memcmp(src + i, sec, sl) == 0) {
        memcpy(buf + o, "[redacted]", 10);
        o += 10;
        i += sl;
      } else {
        buf[o++] = src[i++];
      }
    }
    buf[o] = 0;
    free(out);
    out = buf;
    n = o;
  }
  if (outlen) *outlen = n;
  return out;
}

size_t rbl__secret_tail(rbl_engine *e, const char *s, size_t len) {
  size_t best = 0;
  for (size_t k = 0; k < e->nsecrets; k++) {
    const char *sec = e->secrets[k];
    size_t sl = strlen(sec);
    if (sl < 4) continue; /* as rbl__mask: tiny values are not masked at all */
    for (size_t t = sl - 1 < len ? sl - 1 : len; t > best; t--)
      if (memcmp(s + len - t, sec, t) == 0) {
        best = t;
        break;
      }
  }
  return best;
}

/* Replaces bytes that are not valid UTF-8 with '?' in place: audit records and reports are
 * JSON, and command output may be anything. */
static void utf8_scrub(char *s) {
  unsigned char *p = (unsigned char *)s;
  while (*p) {
    int n = *p < 0x80             ? 0
            : (*p & 0xe0) == 0xc0 ? 1
            : (*p & 0xf0) == 0xe0 ? 2
            : (*p & 0xf8) == 0xf0 ? 3
                                  : -1;
    int ok = n >= 0 && !(n == 1 && *p < 0xc2) && !(n == 3 && *p > 0xf4);
    for (int k = 1; ok && k <= n; k++)
      ok = (p[k] & 0xc0) == 0x80;
    if (ok && n == 2) ok = !(p[0] == 0xe0 && p[1] < 0xa0) && !(p[0] == 0xed && p[1] > 0x9f);
    if (ok && n == 3) ok = !(p[0] == 0xf0 && p[1] < 0x90) && !(p[0] == 0xf4 && p[1] > 0x8f);
    if (!ok) {
      *p++ = '?';
      continue;
    }
    p += n + 1;
  }
}

void rbl__mask_json(rbl_engine *e, cJSON *j) {
  for (cJSON *c = j; c; c = c->next) {
    if (cJSON_IsString(c) && c->valuestring) {
      char *m = e->nsecrets ? rbl__mask(e, c->valuestring, strlen(c->valuestring), NULL) : NULL;
      /* the string stays cJSON's allocation (cJSON_Delete frees it with cJSON_free); when the
       * copy fails the text is emptied, never left unmasked */
      if (m && !cJSON_SetValuestring(c, m)) c->valuestring[0] = 0;
      free(m);
      utf8_scrub(c->valuestring);
    }
    if (c->child) rbl__mask_json(e, c->child);
  }
}

static int secret_gc(lua_State *L) {
  char **v = luaL_checkudata(L, 1, "rbl.secret");
  /* the value stays in e->secrets for masking until the run ends */
  *v = NULL;
  return 0;
}

static int secret_tostring(lua_State *L) {
  lua_pushliteral(L, "[redacted]");
  return 1;
}

/* host.secret(name, value): registers value for masking and returns the opaque handle. */
static int l_secret(lua_State *L) {
  rbl_engine *e = rbl_engine_of(L);
  size_t len;
  const char *v = luaL_checklstring(L, 2, &len);
  char **ud = lua_newuserdatauv(L, sizeof(char *), 0);
  *ud = NULL;
  if (luaL_newmetatable(L, "rbl.secret")) {
    lua_pushcfunction(L, secret_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pushcfunction(L, secret_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushliteral(L, "secret");
    lua_setfield(L, -2, "__name");
    lua_pushliteral(L, "secret");
    lua_setfield(L, -2, "__metatable");
  }
  lua_setmetatable(L, -2);
  char **grown = realloc(e->secrets, (e->nsecrets + 1) * sizeof *grown);
  if (!grown) return luaL_error(L, "out of memory");
  e->secrets = grown;
  e->secrets[e->nsecrets] = strndup(v, len);
  *ud = e->secrets[e->nsecrets++];
  return 1;
}

static int l_unwrap(lua_State *L) {
  char **v = luaL_testudata(L, 1, "rbl.secret");
  if (!v) {
    lua_settop(L, 1);
    return 1;
  }
  lua_pushstring(L, *v ? *v : "");
  return 1;
}

static int l_mask(lua_State *L) {
  size_t len, olen;
  const char *s = luaL_checklstring(L, 1, &len);
  char *m = rbl__mask(rbl_engine_of(L), s, len, &olen);
  if (!m) {
    lua_settop(L, 1);
    return 1;
  }
  lua_pushlstring(L, m, olen);
  free(m);
  return 1;
}

/* host.cut(s, n): s masked, then at most n bytes of it; a secret the text ended in the middle of
 * (a capture cut short) leaves no prefix behind: it becomes "[redacted]" too. */
static int l_cut(lua_State *L) {
  rbl_engine *e = rbl_engine_of(L);
  size_t len, olen;
  const char *s = luaL_checklstring(L, 1, &len);
  lua_Integer n = luaL_checkinteger(L, 2);
  char *m = rbl__mask(e, s, len, &olen);
  const char *t = m ? m : s;
  size_t tl = m ? olen : len;
  size_t tail = rbl__secret_tail(e, t, tl);
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  luaL_addlstring(&b, t, tl - tail);
  if (tail) luaL_addstring(&b, "[redacted]");
  free(m);
  luaL_pushresult(&b);
  size_t rl;
  const char *r = lua_tolstring(L, -1, &rl);
  if (n >= 0 && rl > (size_t)n) lua_pushlstring(L, r, (size_t)n);
  return 1;
}

/* ---- copying arguments across the boundary (raw access only) ---- */

static void copy_value(lua_State *L, int idx, int depth);

static void copy_table(lua_State *L, int idx, int depth) {
  if (depth > 64) luaL_error(L, "argument nested too deeply (limit 64)");
  luaL_checkstack(L, 6, "argument nested too deeply");
  lua_newtable(L);
  int dst = lua_gettop(L);
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    int t = lua_type(L, -2);
    if (t != LUA_TSTRING && t != LUA_TNUMBER && t != LUA_TBOOLEAN)
      luaL_error(L, "argument table key of type %s", lua_typename(L, t));
    lua_pushvalue(L, -2);
    copy_value(L, lua_gettop(L) - 1, depth + 1);
    lua_rawset(L, dst);
    lua_pop(L, 1);
  }
  /* Keep rbl's own json array/object marker so [] and {} stay distinct; a metatable the
   * runbook made is never carried into host code. */
  if (lua_getmetatable(L, idx)) {
    int marker = 0;
    static const char *const markers[] = {"rbl.json.array", "rbl.json.object"};
    for (int k = 0; k < 2 && !marker; k++) {
      luaL_getmetatable(L, markers[k]);
      marker = lua_rawequal(L, -1, -2);
      lua_pop(L, 1);
    }
    if (marker)
      lua_setmetatable(L, dst);
    else
      lua_pop(L, 1);
  }
}

static void copy_value(lua_State *L, int idx, int depth) {
  idx = lua_absindex(L, idx);
  switch (lua_type(L, idx)) {
  case LUA_TTABLE: copy_table(L, idx, depth); break;
  case LUA_TFUNCTION:
  case LUA_TTHREAD:
    luaL_error(L, "a %s cannot be passed to a primitive", luaL_typename(L, idx));
    break;
  case LUA_TUSERDATA:
    if (!luaL_testudata(L, idx, "rbl.secret"))
      luaL_error(L, "a userdata cannot be passed to a primitive");
    /* fallthrough */
  default: lua_pushvalue(L, idx);
  }
}

/* host.begin(name, ...) -> call, args (a copy), number of args */
static int l_begin(lua_State *L) {
  rbl_engine *e = rbl_engine_of(L);
  const char *name = luaL_checkstring(L, 1);
  int nargs = lua_gettop(L) - 1;
  if (e->ended)
    return rbl_raise(L, "refused", "%s: the run has ended; no primitive may start", name);
  rbl__poll_limits(L);
  if (e->check_mode) return rbl_raise(L, "check", "%s: not evaluated by rbl check", name);
  rbl_call *c = lua_newuserdatauv(L, sizeof *c, 0);
  memset(c, 0, sizeof *c);
  luaL_setmetatable(L, "rbl.call");
  snprintf(c->prim, sizeof c->prim, "%s", name);
  const char *tenant = rbl_task_tenant(L);
  c->tenant = tenant ? strdup(tenant) : NULL;
  c->id = ++e->next_call;
  c->t0 = uv_hrtime();
  lua_createtable(L, nargs, 0);
  for (int i = 0; i < nargs; i++) {
    copy_value(L, 2 + i, 0);
    lua_rawseti(L, -2, i + 1);
  }
  lua_pushinteger(L, nargs);
  return 3;
}

/* host.intent(call, args, target): audit the intent, then wait until it is durable. */
static int intent_push(lua_State *L, void *ud) { return 0; }

static int l_intent(lua_State *L) {
  rbl_engine *e = rbl_engine_of(L);
  rbl_call *c = check_call(L, 1);
  if (c->state != CALL_SCOPE) return luaL_error(L, "intent recorded twice");
  char err[160];
  cJSON *rec = call_record("intent", c);
  cJSON *args = rbl_json_from_lua(L, 2, RBL_JSON_REDACT, err, sizeof err);
  if (!args && rbl__limits_hit(L)) { /* the copy stopped at a deadline or a kill: no intent */
    cJSON_Delete(rec);
    rbl__poll_limits(L);
  }
  cJSON_AddItemToObject(rec, "args", args ? args : cJSON_CreateString(err));
  if (!lua_isnoneornil(L, 3)) {
    cJSON *tg = rbl_json_from_lua(L, 3, RBL_JSON_REDACT, err, sizeof err);
    if (tg) cJSON_AddItemToObject(rec, "target", tg);
  }
  c->write = lua_toboolean(L, 4);
  if (c->write) cJSON_AddBoolToObject(rec, "write", 1);
  if (lua_toboolean(L, 5)) cJSON_AddBoolToObject(rec, "read_only", 1);
  if (e->dry_run) cJSON_AddBoolToObject(rec, "dry_run", 1);
  c->task = rbl__task_of(L);
  if (rbl__audit(e, rec) != 0) { rbl__poll_limits(L); }
  c->state = CALL_DURABLE;
  live_link(e, c);
  if (!e->audit) return 0;
  rbl_wait *w = rbl_wait_new(L, intent_push, NULL, NULL);
  rbl__durable_wait(e, w);
  return rbl_wait_yield(L, w);
}

/* host.result(call, ok, value_or_err, summary, before) */
static int l_result(lua_State *L) {
  rbl_engine *e = rbl_engine_of(L);
  rbl_call *c = check_call(L, 1);
  int ok = lua_toboolean(L, 2);
  char err[160];
  cJSON *rec = call_record("result", c);
  cJSON_AddStringToObject(rec, "status", ok ? "ok" : "error");
  cJSON_AddNumberToObject(rec, "duration_ms", (double)((uv_hrtime() - c->t0) / 1000000));
  if (!ok) {
    cJSON *er = cJSON_AddObjectToObject(rec, "error");
    if (lua_istable(L, 3)) {
      lua_getfield(L, 3, "code");
      lua_getfield(L, 3, "message");
      cJSON_AddStringToObject(er, "code", luaL_optstring(L, -2, "failed"));
      cJSON_AddStringToObject(er, "message", luaL_optstring(L, -1, ""));
      lua_pop(L, 2);
    } else {
      cJSON_AddStringToObject(er, "code", "failed");
      cJSON_AddStringToObject(er, "message", lua_tostring(L, 3) ? lua_tostring(L, 3) : "error");
    }
  }
  if (lua_istable(L, 4)) {
    cJSON *s = rbl_json_from_lua(L, 4, RBL_JSON_REDACT, err, sizeof err);
    if (s) cJSON_AddItemToObject(rec, "summary", s);
  }
  if (lua_istable(L, 5)) {
    cJSON *b = rbl_json_from_lua(L, 5, RBL_JSON_REDACT, err, sizeof err);
    if (b) cJSON_AddItemToObject(rec, "before", b);
  } else if (!ok && c->write && c->before) {
    cJSON_AddItemToObject(rec, "before", cJSON_Duplicate(c->before, 1));
  }
  /* a write that failed after its request left may still have been applied (a lost answer) */
  if (!ok && c->write) cJSON_AddBoolToObject(rec, "may_have_applied", c->sent);
  c->state = CALL_DONE;
  live_unlink(c);
  rbl__audit(e, rec);
  rbl__poll_limits(L);
  return 0;
}

/* A refusal: audited, the run is killed (exit 3), and the caller gets the error. */
int rbl_refuse(lua_State *L, const char *prim, const char *fmt, ...) {
  rbl_engine *e = rbl_engine_of(L);
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  cJSON *rec = cJSON_CreateObject();
  cJSON_AddStringToObject(rec, "kind", "refused");
  cJSON_AddStringToObject(rec, "prim", prim);
  const char *tenant = rbl_task_tenant(L);
  if (tenant) cJSON_AddStringToObject(rec, "tenant", tenant);
  cJSON_AddStringToObject(rec, "reason", msg);
  rbl__audit(e, rec);
  if (e->audit) rbl_audit_sync(e->audit);
  rbl__kill(e, RBL_KILL_REFUSED, "%s refused: %s", prim, msg);
  return rbl_raise(L, "refused", "%s: %s", prim, msg);
}

/* host.refuse(call_or_name, reason) */
static int l_refuse(lua_State *L) {
  const char *prim = lua_isuserdata(L, 1) ? check_call(L, 1)->prim : luaL_checkstring(L, 1);
  return rbl_refuse(L, prim, "%s", luaL_checkstring(L, 2));
}

int rbl_host_call_check_http(lua_State *L, int idx, const char *method) {
  rbl_call *c = check_call(L, idx);
  if (c->state == CALL_DURABLE) {
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) c->sent = 1;
    return 0;
  }
  if (c->state == CALL_SCOPE && (!strcmp(method, "GET") || !strcmp(method, "HEAD"))) return 0;
  return luaL_error(L, "%s: %s request before the intent is durable (bug in rbl)", c->prim, method);
}

const char *rbl_host_call_tenant(lua_State *L, int idx) { return check_call(L, idx)->tenant; }
const char *rbl_host_call_prim(lua_State *L, int idx) { return check_call(L, idx)->prim; }

static int l_call_tenant(lua_State *L) {
  rbl_call *c = check_call(L, 1);
  if (!c->tenant)
    lua_pushnil(L);
  else
    lua_pushstring(L, c->tenant);
  return 1;
}

static int l_call_id(lua_State *L) {
  lua_pushinteger(L, check_call(L, 1)->id);
  return 1;
}

static int call_gc(lua_State *L) {
  rbl_call *c = check_call(L, 1);
  live_unlink(c);
  free(c->tenant);
  c->tenant = NULL;
  cJSON_Delete(c->before);
  c->before = NULL;
  return 0;
}

/* host.before(call, state): the before-state of a write, declared by its effect before the
 * request that changes anything leaves. A result that never comes (the call is canceled) or an
 * error result carries it, so rollback can restore from it after reading back what happened. */
static int l_before(lua_State *L) {
  rbl_call *c = check_call(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  char err[160];
  cJSON *b = rbl_json_from_lua(L, 2, RBL_JSON_REDACT, err, sizeof err);
  if (!b) return luaL_error(L, "before: %s", err);
  cJSON_Delete(c->before);
  c->before = b;
  return 0;
}

/* host.canceled(call) -> nil, or {code, message, duration_ms, write, may_have_applied} when the
 * call's task was aborted while it was in flight (its audit result says "canceled"). */
static int l_canceled(lua_State *L) {
  rbl_call *c = check_call(L, 1);
  if (!c->canceled) return 0;
  lua_createtable(L, 0, 5);
  lua_pushstring(L, c->cancel_code);
  lua_setfield(L, -2, "code");
  lua_pushstring(L, c->cancel_msg);
  lua_setfield(L, -2, "message");
  lua_pushnumber(L, c->cancel_ms);
  lua_setfield(L, -2, "duration_ms");
  lua_pushboolean(L, c->write);
  lua_setfield(L, -2, "write");
  lua_pushboolean(L, c->sent);
  lua_setfield(L, -2, "may_have_applied");
  return 1;
}

/* host.sent(call) -> true once a request that may change something left for the call. */
static int l_sent(lua_State *L) {
  lua_pushboolean(L, check_call(L, 1)->sent);
  return 1;
}

/* The calls of task t that are in flight (intent durable, no result) get their result now,
 * status "canceled": t is being aborted (step timeout, Ctrl-C, the run's deadline or a kill)
 * and its coroutine will never run again. A write says whether its request had left
 * (may_have_applied) and carries its before-state, which rollback uses after reading back. */
void rbl__calls_cancel(rbl_engine *e, rbl_task *t, const char *code, const char *msg) {
  for (rbl_call *c = e->live, *next; c; c = next) {
    next = c->next_live;
    if (c->task != t || c->state != CALL_DURABLE) continue;
    live_unlink(c);
    c->state = CALL_DONE;
    c->canceled = 1;
    snprintf(c->cancel_code, sizeof c->cancel_code, "%s", code);
    snprintf(c->cancel_msg, sizeof c->cancel_msg, "%s", msg);
    c->cancel_ms = (double)((uv_hrtime() - c->t0) / 1000000);
    if (e->killed == RBL_KILL_AUDIT) continue; /* the chain cannot take it */
    cJSON *rec = call_record("result", c);
    cJSON_AddStringToObject(rec, "status", "canceled");
    cJSON_AddNumberToObject(rec, "duration_ms", c->cancel_ms);
    cJSON *er = cJSON_AddObjectToObject(rec, "error");
    cJSON_AddStringToObject(er, "code", code);
    cJSON_AddStringToObject(er, "message", msg);
    if (c->write) {
      cJSON_AddBoolToObject(rec, "write", 1);
      cJSON_AddBoolToObject(rec, "may_have_applied", c->sent);
      if (c->before) cJSON_AddItemToObject(rec, "before", cJSON_Duplicate(c->before, 1));
    }
    rbl__audit(e, rec);
  }
}

/* Task t is freed: no call may point at it any more. */
void rbl__calls_forget(rbl_engine *e, rbl_task *t) {
  for (rbl_call *c = e->live, *next; c; c = next) {
    next = c->next_live;
    if (c->task == t) {
      live_unlink(c);
      c->task = NULL;
    }
  }
}

/* ---- sleep: the smallest effect ---- */

typedef struct sleep_op {
  uv_timer_t timer; /* freed in close_cb */
  rbl_wait *wait;
} sleep_op;

static void sleep_close(uv_handle_t *h) { free(h->data); }
static void sleep_cb(uv_timer_t *t) {
  sleep_op *op = t->data;
  rbl_wait *w = op->wait;
  uv_close((uv_handle_t *)&op->timer, sleep_close);
  rbl_wait_done(w);
}
static void sleep_cancel(void *ud) {
  sleep_op *op = ud;
  if (uv_is_closing((uv_handle_t *)&op->timer)) return; /* fired already: close_cb frees */
  uv_timer_stop(&op->timer);
  uv_close((uv_handle_t *)&op->timer, sleep_close);
}
static int sleep_push(lua_State *L, void *ud) { return 0; }

/* host.sleep(call, seconds) */
static int l_sleep(lua_State *L) {
  rbl_call *c = check_call(L, 1);
  if (c->state != CALL_DURABLE) return luaL_error(L, "sleep before intent");
  double s = luaL_checknumber(L, 2);
  if (!(s >= 0) || s > 86400) return luaL_argerror(L, 2, "seconds must be within 0..86400");
  sleep_op *op = malloc(sizeof *op);
  if (!op) return luaL_error(L, "out of memory");
  uv_timer_init(rbl_engine_loop(rbl_engine_of(L)), &op->timer);
  op->timer.data = op;
  op->wait = rbl_wait_new(L, sleep_push, sleep_cancel, op);
  uv_timer_start(&op->timer, sleep_cb, (uint64_t)(s * 1000), 0);
  return rbl_wait_yield(L, op->wait);
}

/* host.pause(seconds): parks the calling task for at most 1 s, with no call and no record: for
 * host code waiting on another task of the run (kube's discovery, fetched once however many
 * tasks ask at the same moment). Not a primitive: it has no effect to audit. */
static int l_pause(lua_State *L) {
  double s = luaL_checknumber(L, 1);
  if (!(s >= 0) || s > 1) return luaL_argerror(L, 1, "seconds must be within 0..1");
  sleep_op *op = malloc(sizeof *op);
  if (!op) return luaL_error(L, "out of memory");
  uv_timer_init(rbl_engine_loop(rbl_engine_of(L)), &op->timer);
  op->timer.data = op;
  op->wait = rbl_wait_new(L, sleep_push, sleep_cancel, op);
  uv_timer_start(&op->timer, sleep_cb, (uint64_t)(s * 1000), 0);
  return rbl_wait_yield(L, op->wait);
}

/* ---- records, log, small accessors ---- */

/* host.record(kind, fields): an audit record from the DSL (step transitions). */
static int l_record(lua_State *L) {
  rbl_engine *e = rbl_engine_of(L);
  const char *kind = luaL_checkstring(L, 1);
  char err[160];
  cJSON *rec = lua_istable(L, 2) ? rbl_json_from_lua(L, 2, RBL_JSON_REDACT, err, sizeof err)
                                 : cJSON_CreateObject();
  if (!rec || !cJSON_IsObject(rec)) {
    cJSON_Delete(rec);
    rbl__poll_limits(L); /* stopped at a deadline or a kill: that is the error */
    return luaL_error(L, "record: %s", err);
  }
  cJSON_DeleteItemFromObject(rec, "kind");
  cJSON_AddStringToObject(rec, "kind", kind);
  rbl__audit(e, rec);
  rbl__poll_limits(L);
  return 0;
}

/* With --progress json: ev (consumed) as one JSON line on stderr, secrets masked. */
void rbl__progress_event(rbl_engine *e, cJSON *ev) {
  if (!ev) return;
  rbl__mask_json(e, ev);
  char *s = e->progress_json && !e->quiet ? cJSON_PrintUnformatted(ev) : NULL;
  cJSON_Delete(ev);
  if (!s) return;
  size_t n = strlen(s);
  s[n] = '\n';                  /* over the terminator: the buffer holds n + 1 bytes */
  if (write(2, s, n + 1) < 0) { /* stderr gone: nothing to report to */
  }
  cJSON_free(s);
}

/* The longest line rbl__progress prints (escapes included): a log() line's 8 KiB fit. */
#define PROGRESS_LINE 16384

/* Appends raw to out[*o, cap) with secrets masked and every control character escaped: C0 and
 * ESC (always, whatever the colour setting: a runbook's or a server's text never drives the
 * terminal), DEL, bytes that are not UTF-8 (8-bit C1) and C1 as UTF-8. */
static void progress_text(rbl_engine *e, const char *raw, char *out, size_t cap, size_t *o) {
  char *m = rbl__mask(e, raw, strlen(raw), NULL);
  const unsigned char *s = (const unsigned char *)(m ? m : raw);
  const unsigned char *end = s + strlen((const char *)s);
  while (*s && *o < cap - 8) {
    size_t k = *s >= 0x80 ? rbl_utf8_len(s, (size_t)(end - s)) : 1;
    if (*s < 0x20 || *s == 0x7f || !k) { /* C0 (ESC too), DEL, bytes that are not UTF-8 */
      *o += (size_t)snprintf(out + *o, 8, "\\x%02x", *s++);
    } else if (k == 2 && s[0] == 0xc2 && s[1] <= 0x9f) { /* C1 as UTF-8 */
      *o += (size_t)snprintf(out + *o, 8, "\\u%04x", s[1]);
      s += 2;
    } else {
      for (size_t j = 0; j < k && *o < cap - 8; j++)
        out[(*o)++] = (char)*s++;
    }
  }
  free(m);
}

static void progress_write(const char *out, size_t o) {
  if (write(2, out, o) < 0) { /* stderr gone: nothing to report to */
  }
}

/* Writes one line to stderr, control characters escaped, secrets masked (with --progress json:
 * a {"event": "message"} line). */
void rbl__progress(rbl_engine *e, const char *fmt, ...) {
  if (e->quiet) return;
  /* The whole text first: it is masked before anything cuts it (a cut through a secret would
   * print its first bytes); the line printed is cut after masking, at PROGRESS_LINE bytes. */
  char *raw = NULL;
  va_list ap;
  va_start(ap, fmt);
  int n = vasprintf(&raw, fmt, ap);
  va_end(ap);
  if (n < 0) return;
  if (e->progress_json) {
    cJSON *ev = cJSON_CreateObject();
    cJSON_AddStringToObject(ev, "event", "message");
    cJSON_AddStringToObject(ev, "text", raw);
    free(raw);
    return rbl__progress_event(e, ev);
  }
  char *out = malloc(PROGRESS_LINE + 16);
  if (out) {
    size_t o = 0;
    progress_text(e, raw, out, PROGRESS_LINE + 8, &o);
    out[o++] = '\n';
    progress_write(out, o);
  }
  free(out);
  free(raw);
}

/* host.progress(text) prints one line. host.progress(text, sgr, text, sgr, ...): the odd
 * arguments are text (escaped, as above), the even ones colour codes ("32", "1;31", "0"), sent
 * as ESC [ code m only on a colour terminal: the only escape sequences rbl ever writes. */
static int l_progress(lua_State *L) {
  rbl_engine *e = rbl_engine_of(L);
  int n = lua_gettop(L);
  if (n <= 1) {
    rbl__progress(e, "%s", luaL_checkstring(L, 1));
    return 0;
  }
  if (e->quiet) return 0;
  luaL_Buffer plain;
  luaL_buffinit(L, &plain);
  for (int i = 1; i <= n; i += 2)
    luaL_addstring(&plain, luaL_checkstring(L, i));
  luaL_pushresult(&plain);
  if (e->progress_json || !e->color) {
    rbl__progress(e, "%s", lua_tostring(L, -1));
    return 0;
  }
  char out[4096];
  size_t o = 0;
  for (int i = 1; i <= n; i++) {
    const char *t = luaL_checkstring(L, i);
    if (i % 2) {
      progress_text(e, t, out, sizeof out, &o);
    } else {
      luaL_argcheck(L, strspn(t, "0123456789;") == strlen(t) && strlen(t) < 16, i,
                    "not a colour code");
      if (o < sizeof out - 24) o += (size_t)snprintf(out + o, 24, "\033[%sm", t);
    }
  }
  out[o++] = '\n';
  progress_write(out, o);
  return 0;
}

/* host.progress_event(t) -> true when --progress json wrote t as a JSON line (the caller then
 * skips its text line), false otherwise. */
static int l_progress_event(lua_State *L) {
  rbl_engine *e = rbl_engine_of(L);
  luaL_checktype(L, 1, LUA_TTABLE);
  if (!e->progress_json) return lua_pushboolean(L, 0), 1;
  char err[128];
  rbl__progress_event(e, rbl_json_from_lua(L, 1, RBL_JSON_REDACT, err, sizeof err));
  lua_pushboolean(L, 1);
  return 1;
}

/* host.runbook_id(id): runbook{} declared its id; the run's records and report name it. */
static int l_runbook_id(lua_State *L) {
  rbl_engine *e = rbl_engine_of(L);
  snprintf(e->runbook_id, sizeof e->runbook_id, "%s", luaL_checkstring(L, 1));
  return 0;
}

static int l_raise(lua_State *L) {
  return rbl_raise(L, luaL_checkstring(L, 1), "%s", luaL_checkstring(L, 2));
}

/* host.error(code, message [, fields]) -> the error object, not raised; fields (a table the
 * host built) add to it, e.g. the gathered errors of a fan-out. */
static int l_error(lua_State *L) {
  rbl__push_error(L, luaL_checkstring(L, 1), luaL_checkstring(L, 2));
  if (lua_istable(L, 3)) {
    lua_pushnil(L);
    while (lua_next(L, 3)) {
      if (lua_type(L, -2) == LUA_TSTRING && strcmp(lua_tostring(L, -2), "code") &&
          strcmp(lua_tostring(L, -2), "message")) {
        lua_pushvalue(L, -2);
        lua_insert(L, -2);
        lua_rawset(L, -4);
      } else {
        lua_pop(L, 1);
      }
    }
  }
  return 1;
}

static int l_tenant(lua_State *L) {
  const char *t = rbl_task_tenant(L);
  if (!t)
    lua_pushnil(L);
  else
    lua_pushstring(L, t);
  return 1;
}

static int l_registry(lua_State *L, const char *key) {
  lua_getfield(L, LUA_REGISTRYINDEX, key);
  return 1;
}
static int l_config(lua_State *L) { return l_registry(L, "rbl.config"); }
static int l_tenants(lua_State *L) { return l_registry(L, "rbl.tenants"); }
static int l_info(lua_State *L) { return l_registry(L, "rbl.info"); }

static int l_dry_run(lua_State *L) {
  lua_pushboolean(L, rbl_engine_of(L)->dry_run);
  return 1;
}

/* host.mutant_no_lua_scope(): true only in a test build (cmake -DRBL_MUTANT_NO_LUA_SCOPE=ON) whose
 * host-Lua scope checks are no-ops, so that tests/gate/run_mutation.sh can show the gate alone
 * refuses every cross-tenant case. Never true in a normal build. */
static int l_mutant_no_lua_scope(lua_State *L) {
#ifdef RBL_MUTANT_NO_LUA_SCOPE
  lua_pushboolean(L, 1);
#else
  lua_pushboolean(L, 0);
#endif
  return 1;
}

static int l_now_ms(lua_State *L) {
  lua_pushnumber(L, (double)uv_hrtime() / 1e6);
  return 1;
}

static int l_color(lua_State *L) {
  lua_pushboolean(L, rbl_engine_of(L)->color);
  return 1;
}

/* host.tty_ask(prompt) -> the line typed on the controlling terminal, or nil. Blocks: only for
 * rbl repl, whose line waits for the answer anyway (runs ask through approval.c, on the loop). */
static int l_tty_ask(lua_State *L) {
  const char *prompt = luaL_checkstring(L, 1);
  FILE *tty = fopen("/dev/tty", "r+");
  if (!tty) return 0;
  fputs(prompt, tty);
  fflush(tty);
  char line[256];
  if (!fgets(line, sizeof line, tty)) {
    fclose(tty);
    return 0;
  }
  fclose(tty);
  line[strcspn(line, "\r\n")] = 0;
  lua_pushstring(L, line);
  return 1;
}

/* host.isatty(): stdin and stderr are a terminal (someone can be asked there). */
static int l_isatty(lua_State *L) {
  lua_pushboolean(L, isatty(0) && isatty(2));
  return 1;
}

static int l_check_mode(lua_State *L) {
  lua_pushboolean(L, rbl_engine_of(L)->check_mode);
  return 1;
}

static int l_killed(lua_State *L) {
  rbl_engine *e = rbl_engine_of(L);
  if (!e->killed) return 0;
  lua_pushstring(L, e->kill_msg);
  return 1;
}

static int l_limits(lua_State *L) {
  rbl_engine *e = rbl_engine_of(L);
  lua_createtable(L, 0, 4);
  lua_pushnumber(L, e->limits.step_timeout);
  lua_setfield(L, -2, "step_timeout");
  lua_pushinteger(L, (lua_Integer)e->limits.exec_output);
  lua_setfield(L, -2, "exec_output");
  return 1;
}

/* host.protect(t): rawset and setmetatable from the sandbox refuse t from now on. */
static int l_protect(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  rbl__protect(L, 1);
  return 1;
}

/* host.canonical_sha256(v) -> "sha256:<hex>" of v's canonical JSON (RFC 8785, as the chain
 * hashes records): the plan's hash, and the hash of a write's arguments. Secrets redacted. */
static int l_canonical_sha256(lua_State *L) {
  char err[160];
  cJSON *j = rbl_json_from_lua(L, 1, RBL_JSON_REDACT, err, sizeof err);
  if (!j) return luaL_error(L, "canonical_sha256: %s", err);
  size_t len = 0;
  char *txt = rbl_jcs_string(j, &len);
  cJSON_Delete(j);
  if (!txt) return luaL_error(L, "canonical_sha256: not representable as canonical JSON");
  unsigned char md[32];
  rbl_sha256(txt, len, md);
  free(txt);
  char out[72] = "sha256:";
  for (unsigned i = 0; i < 32; i++)
    snprintf(out + 7 + 2 * i, 3, "%02x", md[i]);
  lua_pushstring(L, out);
  return 1;
}

static const luaL_Reg call_methods[] = {{"tenant", l_call_tenant}, {"id", l_call_id}, {NULL, NULL}};

static const luaL_Reg host_funcs[] = {{"begin", l_begin},
                                      {"intent", l_intent},
                                      {"result", l_result},
                                      {"before", l_before},
                                      {"sent", l_sent},
                                      {"canceled", l_canceled},
                                      {"canonical_sha256", l_canonical_sha256},
                                      {"approval_wait", rbl__approval_wait},
                                      {"isatty", l_isatty},
                                      {"tty_ask", l_tty_ask},
                                      {"refuse", l_refuse},
                                      {"raise", l_raise},
                                      {"error", l_error},
                                      {"tenant", l_tenant},
                                      {"tenants", l_tenants},
                                      {"config", l_config},
                                      {"info", l_info},
                                      {"run_all", rbl__spawn_group},
                                      {"sleep", l_sleep},
                                      {"pause", l_pause},
                                      {"record", l_record},
                                      {"progress", l_progress},
                                      {"progress_event", l_progress_event},
                                      {"runbook_id", l_runbook_id},
                                      {"secret", l_secret},
                                      {"unwrap", l_unwrap},
                                      {"mask", l_mask},
                                      {"cut", l_cut},
                                      {"dry_run", l_dry_run},
                                      {"now_ms", l_now_ms},
                                      {"interrupted", rbl__interrupt_check},
                                      {"deadline", rbl__deadline_check},
                                      {"rolling_back", rbl__rolling_back},
                                      {"killed", l_killed},
                                      {"limits", l_limits},
                                      {"protect", l_protect},
                                      {"check_mode", l_check_mode},
                                      {"color", l_color},
                                      {"mutant_no_lua_scope", l_mutant_no_lua_scope},
                                      {NULL, NULL}};

int luaopen_rbl_host(lua_State *L) {
  if (luaL_newmetatable(L, "rbl.call")) {
    luaL_newlib(L, call_methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, call_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);
  lua_pushcfunction(L, l_unwrap);
  lua_setfield(L, LUA_REGISTRYINDEX, "rbl.unwrap");
  luaL_newlib(L, host_funcs);
  return 1;
}
