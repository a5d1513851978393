/* strpat_bench.c: ns per call of rbl_strpat vs stock string.* on linear patterns over a 1 MiB
 * subject. */
#define _POSIX_C_SOURCE 200809L

#include <stdio.h>
#include <string.h>
#include <time.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "strpat.h"

#define SUBJECT_SIZE   (1u << 20)
#define TARGET_SECONDS 0.25

typedef struct {
  const char *func; /* find, match, gmatch or gsub */
  const char *pat;
  const char *repl; /* gsub only */
  const char *label;
} bench_case;

static const bench_case cases[] = {
    {"find", "NOTINSUBJECT", NULL, "find no-specials (absent)"},
    {"find", "NOT-IN-SUBJECT", NULL, "find leading literal '-' (absent)"},
    {"find", "ERROR%s+(%w+)", NULL, "find leading literal (absent)"},
    {"find", "%d%d%d%d%-%d%dZ", NULL, "find class run (absent)"},
    {"find", "[xyzXYZ]+q", NULL, "find set+ (absent)"},
    {"find", "latency=(%d+)ns", NULL, "find with capture (absent)"},
    {"match", "^.-NOT-IN-SUBJECT", NULL, "match anchored lazy"},
    {"match", "^[^\1]*$", NULL, "match anchored greedy set"},
    {"match", "%f[%w]%u%u%u%u%u%u", NULL, "match frontier (absent)"},
    {"gmatch", "%a+", NULL, "gmatch words (all)"},
    {"gsub", "%s+", " ", "gsub whitespace (all)"},
    {"gsub", "(%w+)=(%w+)", "%2=%1", "gsub swap pairs (all)"},
};

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A log-like subject: linear patterns scan all of it without matching. */
static void push_subject(lua_State *L) {
  static const char line[] =
      "2024-06-01 12:00:00 INFO svc=api latency=123ms path=/v1/items user=alice\n";
  luaL_Buffer b;
  size_t n = 0;
  luaL_buffinit(L, &b);
  while (n + sizeof line - 1 <= SUBJECT_SIZE) {
    luaL_addlstring(&b, line, sizeof line - 1);
    n += sizeof line - 1;
  }
  while (n++ < SUBJECT_SIZE)
    luaL_addchar(&b, ' ');
  luaL_pushresult(&b);
}

/* One call of lib.func on the subject (index 1); gmatch drains the iterator. */
static void run_once(lua_State *L, int lib, const bench_case *c) {
  lua_getfield(L, lib, c->func);
  lua_pushvalue(L, 1);
  lua_pushstring(L, c->pat);
  if (c->repl != NULL) {
    lua_pushstring(L, c->repl);
    lua_call(L, 3, LUA_MULTRET);
  } else {
    lua_call(L, 2, LUA_MULTRET);
  }
  if (strcmp(c->func, "gmatch") == 0) {
    int it = lua_gettop(L);
    for (;;) {
      lua_pushvalue(L, it);
      lua_call(L, 0, 1);
      if (lua_isnil(L, -1)) break;
      lua_pop(L, 1);
    }
  }
  lua_settop(L, 3);
}

static double ns_per_call(lua_State *L, int lib, const bench_case *c) {
  double t0 = now_s(), elapsed;
  long reps = 1, i;
  run_once(L, lib, c); /* warm up and size the run */
  elapsed = now_s() - t0;
  if (elapsed < TARGET_SECONDS)
    reps = (long)(TARGET_SECONDS / (elapsed > 1e-7 ? elapsed : 1e-7)) + 1;
  t0 = now_s();
  for (i = 0; i < reps; i++)
    run_once(L, lib, c);
  return (now_s() - t0) * 1e9 / (double)reps;
}

int main(void) {
  lua_State *L = luaL_newstate();
  size_t i;
  double worst = 0.0;
  luaL_openlibs(L);
  push_subject(L);            /* 1: subject */
  lua_getglobal(L, "string"); /* 2: stock */
  luaopen_rbl_strpat(L);      /* 3: ours */
  printf("%-32s %14s %14s %7s\n", "case (1 MiB subject)", "stock ns", "strpat ns", "ratio");
  for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    double stock = ns_per_call(L, 2, &cases[i]);
    double ours = ns_per_call(L, 3, &cases[i]);
    double ratio = ours / stock;
    if (ratio > worst) worst = ratio;
    printf("%-32s %14.0f %14.0f %7.2f\n", cases[i].label, stock, ours, ratio);
  }
  printf("worst ratio (strpat/stock): %.2f\n", worst);
  lua_close(L);
  return 0;
}
