/* rbl.kube.c: the small C helpers behind kubeconfig loading (src/families/kube/kubeconfig.lua). */
#ifndef RBL_KUBECONFIG_H
#define RBL_KUBECONFIG_H

#include <lua.h>

/* rbl.kube.c: parse_yaml(text), read_file(path), stat(path), b64decode(s), parse_time(rfc3339),
 * spawn(path, argv, env, {timeout}) (a credential plugin; yields). Host-side only. */
int luaopen_rbl_kube_c(lua_State *L);

#endif
