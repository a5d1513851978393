/* The primitive families: one table from which everything that names them is derived. */
#ifndef RBL_FAMILIES_H
#define RBL_FAMILIES_H

#include <lua.h>

typedef struct rbl_family {
  const char *name;     /* its folder under src/families/ ("core": lua/rbl) */
  const char *module;   /* its Lua face, whose globals(book, g) returns what it adds */
  lua_CFunction open_c; /* its C half, preloaded as rbl.<name>.c, or NULL */
  const char *doc;      /* its doc page, relative to the repository root */
  const char *globals;  /* every sandbox name it adds, space-separated; "t.f" for a member of t */
} rbl_family;

/* The registry, ended by a row whose name is NULL. */
extern const rbl_family rbl_families[];

/* rbl.families (host Lua): {{name =, module =, doc =, globals = {...}}, ...} in registry order. */
int luaopen_rbl_families(lua_State *L);

/* Prints "NAME\tFAMILY\tDOC" for every name a runbook can reach: the sandbox's part of the
 * Lua standard library ("lua"), then each family's names. For `rbl check --list-globals`. */
void rbl_families_print(void);

#endif
