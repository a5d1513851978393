/* The prom family's C half: rbl.prom.c binds the PromQL scoper (promql.h) for prom.lua. */
#ifndef RBL_PROM_H
#define RBL_PROM_H

#include <lua.h>

/* rbl.prom.c: scope(q, label, tenant) and scope_set(q, label, {tenants}) -> query |
 * nil, "syntax" | "scope", reason; check(q, label, tenant) and check_set(q, label, {tenants})
 * -> true | nil, kind, reason; parse(q) -> true | nil, "syntax", reason. */
int luaopen_rbl_prom_c(lua_State *L);

#endif
