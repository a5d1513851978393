/* strpat.h: budgeted Lua 5.4 pattern functions (find/match/gmatch/gsub) for the rbl sandbox. */
#ifndef RBL_STRPAT_H
#define RBL_STRPAT_H

#include <lua.h>

/*
 * Called by the matcher every RBL_STRPAT_POLL_INTERVAL steps while a pattern
 * function runs.  To stop the run it raises a Lua error (lua_error/luaL_error)
 * itself; the matcher holds no malloc'd memory, so unwinding is safe.  The
 * return value is ignored.  Anything it leaves on the stack is discarded.
 */
typedef int (*rbl_strpat_poll_fn)(lua_State *L);

#define RBL_STRPAT_POLL_INTERVAL 4096

/* Process-wide; NULL (the default) disables polling. */
void rbl_strpat_set_poll(rbl_strpat_poll_fn fn);

/* Pushes a table with find, match, gmatch and gsub (Lua 5.4 semantics). */
int luaopen_rbl_strpat(lua_State *L);

#endif
