/* Docker Engine API helpers that must be exact: the multiplexed stream demuxer and the
 * container reference check. Free of Lua; rbl.docker.c binds them for
 * src/families/docker/docker.lua. */
#ifndef RBL_DOCKER_STREAM_H
#define RBL_DOCKER_STREAM_H

#include <stddef.h>
#include <sys/types.h>
#include <lua.h>

/* Stream ids in a frame header: 0 stdin, 1 stdout, 2 stderr, 3 the daemon's own error. */
enum { RBL_DOCKER_STDIN = 0, RBL_DOCKER_STDOUT = 1, RBL_DOCKER_STDERR = 2, RBL_DOCKER_SYSERR = 3 };

typedef void (*rbl_docker_sink)(void *ud, int stream, const char *p, size_t n);

/* Walks the frames of a multiplexed (non-TTY) attach/exec/logs stream: each frame is an
 * 8-byte header {stream, 0, 0, 0, size as big-endian uint32} and size payload bytes; sink
 * gets every complete frame's payload (binary-safe). Returns the bytes consumed (anything
 * after is an incomplete frame) or RBL_EPROTO when a header is malformed, with *bad_at set
 * to its offset. */
ssize_t rbl_docker_demux(const char *p, size_t n, rbl_docker_sink sink, void *ud, size_t *bad_at);

/* 0 when ref may be sent to the daemon as a container name, id or id prefix; otherwise
 * RBL_EINVAL and a reason (empty, over 128 bytes, '/', "..", NUL or control characters). */
int rbl_docker_check_ref(const char *ref, size_t len, const char **why);

/* rbl.docker.c: demux(data) -> stdout, stderr, syserr, rest | nil, message; check_ref(s) ->
 * true | nil, reason. */
int luaopen_rbl_docker_c(lua_State *L);

#endif
