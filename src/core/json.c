/* Lua <-> cJSON conversion, and the sandbox's json module (encode, decode, null). */
#include "json.h"
#include "budget.h"
#include "engine_int.h"
#include "rbl.h"

#include <lauxlib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define JSON_MAX_DEPTH 64
#define JSON_MAX_NODES 1000000

static const char json_null_tag = 0;
#define JSON_NULL ((void *)&json_null_tag)
static const char *const ARRAY_MT = "rbl.json.array";
static const char *const OBJECT_MT = "rbl.json.object";

static void push_marker_mt(lua_State *L, const char *name) {
  if (luaL_newmetatable(L, name)) {
    lua_pushstring(L, name + 9); /* "array" / "object" */
    lua_setfield(L, -2, "__name");
  }
}

/* Polls the limits every 4096 values: a tree of millions of nodes is built in one C call. */
static void push_rec(lua_State *L, const cJSON *j, int depth, unsigned *work) {
  luaL_checkstack(L, 4, "json too deep");
  if ((++*work & 4095) == 0) rbl__poll_limits(L);
  if (cJSON_IsNull(j) || j == NULL) {
    lua_pushlightuserdata(L, JSON_NULL);
  } else if (cJSON_IsBool(j)) {
    lua_pushboolean(L, cJSON_IsTrue(j));
  } else if (cJSON_IsNumber(j)) {
    double d = j->valuedouble;
    if (d == floor(d) && fabs(d) < 9007199254740992.0)
      lua_pushinteger(L, (lua_Integer)d);
    else
      lua_pushnumber(L, d);
  } else if (cJSON_IsString(j)) {
    lua_pushstring(L, j->valuestring);
  } else if (cJSON_IsArray(j)) {
    lua_createtable(L, cJSON_GetArraySize(j), 0);
    lua_Integer i = 1;
    for (const cJSON *c = j->child; c; c = c->next) {
      push_rec(L, c, depth + 1, work);
      lua_rawseti(L, -2, i++);
    }
    push_marker_mt(L, ARRAY_MT);
    lua_setmetatable(L, -2);
  } else {
    lua_createtable(L, 0, cJSON_GetArraySize(j));
    for (const cJSON *c = j->child; c; c = c->next) {
      push_rec(L, c, depth + 1, work);
      lua_setfield(L, -2, c->string);
    }
    push_marker_mt(L, OBJECT_MT);
    lua_setmetatable(L, -2);
  }
}

void rbl_json_push(lua_State *L, const cJSON *j) {
  unsigned work = 0;
  push_rec(L, j, 0, &work);
}

static int push_p(lua_State *L) {
  rbl_json_push(L, lua_touserdata(L, 1));
  return 1;
}

int rbl_json_push_free(lua_State *L, cJSON *j) {
  lua_pushcfunction(L, push_p);
  lua_pushlightuserdata(L, j);
  int rc = lua_pcall(L, 1, 1, 0); /* push_p never yields */
  cJSON_Delete(j);
  if (rc != LUA_OK) return lua_error(L);
  return 1;
}

typedef struct conv {
  lua_State *L;
  int flags;
  long nodes;
  char *err;
  size_t errlen;
} conv;

static cJSON *conv_fail(conv *c, const char *msg) {
  if (c->err && !c->err[0]) snprintf(c->err, c->errlen, "%s", msg);
  return NULL;
}

/* 1: array, 0: object, decided by marker metatable, else by a 1..n sequence. */
static int is_array(lua_State *L, int idx) {
  if (lua_getmetatable(L, idx)) {
    luaL_getmetatable(L, ARRAY_MT);
    int arr = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
    if (arr) return 1;
  }
  lua_Integer n = (lua_Integer)lua_rawlen(L, idx), count = 0;
  if (n == 0) return 0;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    lua_pop(L, 1);
    if (!lua_isinteger(L, -1)) {
      lua_pop(L, 1);
      return 0;
    }
    lua_Integer k = lua_tointeger(L, -1);
    if (k < 1 || k > n) {
      lua_pop(L, 1);
      return 0;
    }
    count++;
  }
  return count == n;
}

static cJSON *conv_value(conv *c, int idx, int depth);

static cJSON *conv_table(conv *c, int idx, int depth) {
  lua_State *L = c->L;
  /* Cycle check: the ancestors' tables are kept in a registry-free stack table at index 1 of
   * the conversion; depth bound keeps this cheap. */
  if (depth > JSON_MAX_DEPTH) return conv_fail(c, "value nested too deeply (limit 64)");
  if (is_array(L, idx)) {
    cJSON *a = cJSON_CreateArray();
    if (!a) return conv_fail(c, "out of memory");
    lua_Integer n = (lua_Integer)lua_rawlen(L, idx);
    for (lua_Integer i = 1; i <= n; i++) {
      lua_rawgeti(L, idx, i);
      cJSON *v = conv_value(c, lua_gettop(L), depth + 1);
      lua_pop(L, 1);
      if (!v) {
        cJSON_Delete(a);
        return NULL;
      }
      cJSON_AddItemToArray(a, v);
    }
    return a;
  }
  cJSON *o = cJSON_CreateObject();
  if (!o) return conv_fail(c, "out of memory");
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    char kbuf[64];
    const char *key;
    if (lua_type(L, -2) == LUA_TSTRING) {
      key = lua_tostring(L, -2);
    } else if (lua_isinteger(L, -2)) {
      snprintf(kbuf, sizeof kbuf, "%lld", (long long)lua_tointeger(L, -2));
      key = kbuf;
    } else {
      lua_pop(L, 2);
      cJSON_Delete(o);
      return conv_fail(c, "table key is not a string or integer");
    }
    cJSON *v = conv_value(c, lua_gettop(L), depth + 1);
    lua_pop(L, 1);
    if (!v) {
      lua_pop(L, 1);
      cJSON_Delete(o);
      return NULL;
    }
    cJSON_AddItemToObject(o, key, v);
  }
  return o;
}

/* cJSON prints a double with 15 digits when that reads back within a relative epsilon, so
 * 27766207721121996 came back as 27766207721122000 (found by tests/fuzz/fuzz_json.c). With
 * RBL_JSON_EXACT_NUMBERS (json.encode) a number 15 digits would not give back exactly is
 * written as a raw literal with 17, and an integer of 16 digits or more digit for digit
 * (8888888888888889 came back as 8888888888888890 while only those beyond 2^53 were). */
static cJSON *conv_number(conv *c, int idx) {
  lua_State *L = c->L;
  char buf[40];
  if (lua_isinteger(L, idx)) {
    lua_Integer i = lua_tointeger(L, idx);
    /* cJSON writes 15 significant digits, so any integer of 16 or more digits goes raw. */
    if ((c->flags & RBL_JSON_EXACT_NUMBERS) && (i > 999999999999999LL || i < -999999999999999LL)) {
      snprintf(buf, sizeof buf, "%lld", (long long)i);
      return cJSON_CreateRaw(buf);
    }
    return cJSON_CreateNumber((double)i);
  }
  double d = lua_tonumber(L, idx);
  if (!isfinite(d)) return conv_fail(c, "number is not finite (nan or inf)");
  if (c->flags & RBL_JSON_EXACT_NUMBERS) {
    snprintf(buf, sizeof buf, "%.15g", d);
    if (strtod(buf, NULL) != d) {
      snprintf(buf, sizeof buf, "%.17g", d);
      return cJSON_CreateRaw(buf);
    }
  }
  return cJSON_CreateNumber(d);
}

static cJSON *conv_value(conv *c, int idx, int depth) {
  lua_State *L = c->L;
  if (++c->nodes > JSON_MAX_NODES) return conv_fail(c, "value too large (over 1e6 nodes)");
  if ((c->nodes & 4095) == 0 && rbl__limits_hit(L)) return conv_fail(c, "stopped");
  if (!lua_checkstack(L, 8)) return conv_fail(c, "value nested too deeply");
  switch (lua_type(L, idx)) {
  case LUA_TNIL: return cJSON_CreateNull();
  case LUA_TBOOLEAN: return cJSON_CreateBool(lua_toboolean(L, idx));
  case LUA_TNUMBER: return conv_number(c, idx);
  case LUA_TSTRING: {
    size_t len;
    const char *s = lua_tolstring(L, idx, &len);
    if (strlen(s) != len) return conv_fail(c, "string holds a NUL byte");
    return cJSON_CreateString(s);
  }
  case LUA_TTABLE: return conv_table(c, idx, depth);
  case LUA_TLIGHTUSERDATA:
    if (lua_touserdata(L, idx) == JSON_NULL) return cJSON_CreateNull();
    break;
  case LUA_TUSERDATA: {
    const char **sv = luaL_testudata(L, idx, "rbl.secret");
    if (sv) {
      if (c->flags & RBL_JSON_REDACT) return cJSON_CreateString("[redacted]");
      if (c->flags & RBL_JSON_UNWRAP_SECRETS) return cJSON_CreateString(*sv ? *sv : "");
      return conv_fail(c, "a secret cannot be encoded");
    }
    break;
  }
  default: break;
  }
  char msg[96];
  snprintf(msg, sizeof msg, "a %s cannot be encoded", luaL_typename(L, idx));
  return conv_fail(c, msg);
}

cJSON *rbl_json_from_lua(lua_State *L, int idx, int flags, char *err, size_t errlen) {
  conv c = {L, flags, 0, err, errlen};
  if (err && errlen) err[0] = 0;
  idx = lua_absindex(L, idx);
  /* Tables referring to themselves hit the depth limit: that is the cycle check. */
  return conv_value(&c, idx, 0);
}

static int encode(lua_State *L, int flags) {
  char err[160];
  luaL_checkany(L, 1);
  rbl__poll_limits(L);
  cJSON *j = rbl_json_from_lua(L, 1, flags | RBL_JSON_EXACT_NUMBERS, err, sizeof err);
  if (!j) {
    rbl__poll_limits(L); /* stopped for a limit, or out of the memory budget: raises */
    luaL_pushfail(L);
    lua_pushfstring(L, "json.encode: %s", err);
    return 2;
  }
  char *s = lua_toboolean(L, 2) ? cJSON_Print(j) : cJSON_PrintUnformatted(j);
  cJSON_Delete(j);
  if (!s) rbl__poll_limits(L);
  if (!s) return luaL_error(L, "json.encode: out of memory");
  lua_pushstring(L, s);
  cJSON_free(s);
  return 1;
}

/* json.encode(v [, pretty]): secret() values become "[redacted]" (what a runbook may see). */
static int l_encode(lua_State *L) { return encode(L, RBL_JSON_REDACT); }

/* json.encode_unwrapped(v): secret() values become their real bytes. Host modules only (the body
 * of a request, built the moment it is sent); never in the runbook's json table. */
static int l_encode_unwrapped(lua_State *L) {
  lua_settop(L, 1);
  return encode(L, RBL_JSON_UNWRAP_SECRETS);
}

static int l_decode(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  const char *end = NULL;
  rbl__poll_limits(L);
  rbl_budget_parse_begin();
  cJSON *j = cJSON_ParseWithLengthOpts(s, len, &end, 0);
  rbl_budget_parse_end();
  if (!j) {
    rbl__poll_limits(L); /* the tree outgrew the memory budget: the run is killed */
    luaL_pushfail(L);
    lua_pushfstring(L, "json.decode: invalid JSON near byte %d",
                    (int)(end && end >= s ? end - s : 0) + 1);
    return 2;
  }
  return rbl_json_push_free(L, j);
}

/* json.array(t) / json.object(t): mark a table so an empty one encodes as [] or {}. */
static int mark(lua_State *L, const char *mt) {
  if (lua_isnoneornil(L, 1)) lua_newtable(L);
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  push_marker_mt(L, mt);
  lua_setmetatable(L, 1);
  return 1;
}
static int l_array(lua_State *L) { return mark(L, ARRAY_MT); }
static int l_object(lua_State *L) { return mark(L, OBJECT_MT); }

static int l_is_array(lua_State *L) {
  lua_pushboolean(L, lua_type(L, 1) == LUA_TTABLE && is_array(L, 1));
  return 1;
}

static const luaL_Reg json_funcs[] = {
    {"encode", l_encode}, {"decode", l_decode},     {"array", l_array},
    {"object", l_object}, {"is_array", l_is_array}, {"encode_unwrapped", l_encode_unwrapped},
    {NULL, NULL}};

int luaopen_rbl_json(lua_State *L) {
  luaL_newlib(L, json_funcs);
  lua_pushlightuserdata(L, JSON_NULL);
  lua_setfield(L, -2, "null");
  return 1;
}
