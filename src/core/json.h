/* Lua <-> cJSON conversion and the sandbox's json module. */
#ifndef RBL_JSON_H
#define RBL_JSON_H

#include <lua.h>
#include <cjson/cJSON.h>

/* Pushes j as a Lua value. Arrays get the json.array metatable and objects the
 * json.object one, so an empty [] and {} stay distinct on the way back; null is json.null. */
void rbl_json_push(lua_State *L, const cJSON *j);
/* Pushes j as rbl_json_push does and frees it; an error while building the tables (the memory
 * limit, a deadline: the push polls them) is re-raised after j is freed. */
int rbl_json_push_free(lua_State *L, cJSON *j);

/* Converts the value at idx to cJSON using raw access only (no metamethods run).
 * Secrets become "[redacted]" when redact is set, and are refused otherwise unless
 * unwrap is set. Returns NULL with a message in err on cycles, depth > 64, functions,
 * non-finite numbers, mixed tables or more than 1e6 nodes. */
enum { RBL_JSON_REDACT = 1, RBL_JSON_UNWRAP_SECRETS = 2, RBL_JSON_EXACT_NUMBERS = 4 };
/* RBL_JSON_EXACT_NUMBERS: numbers cJSON would print inexactly become raw literals (cJSON_Raw):
 * for printing only (json.encode, the report, the plan), not for trees that JCS or the audit read.
 */
cJSON *rbl_json_from_lua(lua_State *L, int idx, int flags, char *err, size_t errlen);

int luaopen_rbl_json(lua_State *L);

#endif
