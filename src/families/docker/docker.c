/* The Docker multiplexed stream demuxer and the container reference check, bound as rbl.docker.c.
 */
#include "docker.h"

#include <lauxlib.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "rbl.h"

#define FRAME_HEADER 8
#define MAX_REF      128

ssize_t rbl_docker_demux(const char *p, size_t n, rbl_docker_sink sink, void *ud, size_t *bad_at) {
  const unsigned char *u = (const unsigned char *)p;
  size_t off = 0;
  while (n - off >= FRAME_HEADER) {
    const unsigned char *h = u + off;
    if (h[0] > RBL_DOCKER_SYSERR || h[1] || h[2] || h[3]) {
      if (bad_at) *bad_at = off;
      return RBL_EPROTO;
    }
    size_t size = (size_t)h[4] << 24 | (size_t)h[5] << 16 | (size_t)h[6] << 8 | (size_t)h[7];
    if (n - off - FRAME_HEADER < size) break; /* incomplete frame */
    if (size > 0) sink(ud, h[0], p + off + FRAME_HEADER, size);
    off += FRAME_HEADER + size;
  }
  return (ssize_t)off;
}

int rbl_docker_check_ref(const char *ref, size_t len, const char **why) {
  const char *w = NULL;
  if (len == 0)
    w = "is empty";
  else if (len > MAX_REF)
    w = "is longer than 128 bytes";
  else if (memchr(ref, '\0', len))
    w = "holds a NUL byte";
  else if (memchr(ref, '/', len))
    w = "holds '/'";
  else if (memmem(ref, len, "..", 2))
    w = "holds '..'";
  else
    for (size_t i = 0; i < len; i++)
      if ((unsigned char)ref[i] < 0x20 || ref[i] == 0x7f) {
        w = "holds a control character";
        break;
      }
  if (why) *why = w;
  return w ? RBL_EINVAL : 0;
}

/* ---- rbl.docker.c ---- */

/* Two passes over the frames: sizes first, then copies into buffers the GC owns, so an
 * out-of-memory error in the middle leaks nothing. */
typedef struct demux_acc {
  size_t size[3]; /* stdout (and stdin), stderr, syserr */
  char *buf[3];
  size_t at[3];
} demux_acc;

static int slot(int stream) {
  return stream == RBL_DOCKER_STDERR ? 1 : stream == RBL_DOCKER_SYSERR ? 2 : 0;
}

static void count_sink(void *ud, int stream, const char *p, size_t n) {
  ((demux_acc *)ud)->size[slot(stream)] += n;
}

static void copy_sink(void *ud, int stream, const char *p, size_t n) {
  demux_acc *a = ud;
  int s = slot(stream);
  memcpy(a->buf[s] + a->at[s], p, n);
  a->at[s] += n;
}

/* dockerc.demux(data) -> stdout, stderr, syserr, rest  |  nil, message */
static int l_demux(lua_State *L) {
  size_t n, bad = 0;
  const char *p = luaL_checklstring(L, 1, &n);
  demux_acc a;
  memset(&a, 0, sizeof a);
  ssize_t used = rbl_docker_demux(p, n, count_sink, &a, &bad);
  if (used < 0) {
    luaL_pushfail(L);
    lua_pushfstring(L, "malformed stream frame header at byte %I", (lua_Integer)bad);
    return 2;
  }
  for (int i = 0; i < 3; i++)
    a.buf[i] = lua_newuserdatauv(L, a.size[i] ? a.size[i] : 1, 0);
  rbl_docker_demux(p, (size_t)used, copy_sink, &a, NULL);
  for (int i = 0; i < 3; i++)
    lua_pushlstring(L, a.buf[i], a.size[i]);
  lua_pushlstring(L, p + used, n - (size_t)used);
  return 4;
}

/* dockerc.check_ref(s) -> true | nil, reason */
static int l_check_ref(lua_State *L) {
  size_t n;
  const char *why;
  const char *s = luaL_checklstring(L, 1, &n);
  if (rbl_docker_check_ref(s, n, &why) == 0) {
    lua_pushboolean(L, 1);
    return 1;
  }
  luaL_pushfail(L);
  lua_pushstring(L, why);
  return 2;
}

static const luaL_Reg dockerc_funcs[] = {
    {"demux", l_demux},
    {"check_ref", l_check_ref},
    {NULL, NULL},
};

int luaopen_rbl_docker_c(lua_State *L) {
  luaL_newlib(L, dockerc_funcs);
  return 1;
}
