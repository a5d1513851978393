/* rbl.host: the primitive path for host-side Lua modules (begin -> scope -> intent -> effect ->
 * result). */
#ifndef RBL_HOST_H
#define RBL_HOST_H

#include <lua.h>

/* Raises unless a request with this method may leave for the call at idx: reads (GET/HEAD)
 * while the call resolves its scope, anything once its intent is durable. */
int rbl_host_call_check_http(lua_State *L, int idx, const char *method);

/* The calling primitive's tenant (NULL when bound to none) and name, from the C call object at
 * idx: what the gate decides with, whatever host Lua passes alongside. */
const char *rbl_host_call_tenant(lua_State *L, int idx);
const char *rbl_host_call_prim(lua_State *L, int idx);

int luaopen_rbl_host(lua_State *L);

#endif
