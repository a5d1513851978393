/* The sandbox: the allow-listed environment a runbook (or a config file) runs in. */
#ifndef RBL_SANDBOX_H
#define RBL_SANDBOX_H

#include <lua.h>

/* Pushes a fresh sandbox environment. The table on top of the stack before the call
 * (or nil) holds extra read-only globals (tenant, params, the primitives...).
 * Every global of the result is read-only; assignments create the runbook's own globals. */
void rbl_sandbox_push_env(lua_State *L);
/* The same with two tables on top: extras, then lazy (or nil): name -> host function that loads
 * the family owning the name and returns its globals (entry.lua). A lazy name reads as if it
 * were there (first touch loads it), cannot be assigned, and pairs(_G) loads all of them. */
void rbl_sandbox_push_env_lazy(lua_State *L);

/* Loads text (never bytecode) as a chunk whose _ENV is the table at env_idx.
 * Returns LUA_OK with the function pushed, or an error status with the message. */
int rbl_sandbox_load(lua_State *L, const char *buf, size_t len, const char *chunkname, int env_idx);

/* Installs the process-wide pieces (string metatable lock, pattern budget); once per state. */
void rbl_sandbox_init(lua_State *L);

/* Calls fn for every name of the Lua standard library the sandbox gives a runbook, members
 * as "lib.name" (the families add the rest: src/families/families.c). */
void rbl_sandbox_each_name(void (*fn)(const char *name, void *ud), void *ud);

#endif
