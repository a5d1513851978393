/* Intended-state loaders (iac.*): files confined to the runbook's directory, JSON and YAML readers.
 */
#ifndef RBL_IAC_H
#define RBL_IAC_H

#include <stddef.h>
#include <lua.h>

/* Largest file iac.* reads. */
#define RBL_IAC_MAX_FILE (64u << 20)

/* Resolves rel against the directory base and writes the real path of the file to out.
 * rel must be relative, and neither its ".." segments nor any symlink on the way may
 * lead outside realpath(base). Returns 0, or a negative RBL_E* code with a message in err:
 * RBL_EINVAL (empty or absolute path), RBL_EREFUSED (escapes base), RBL_ENOTFOUND,
 * RBL_EDENIED, RBL_ETOOBIG (out too small), RBL_EIO. */
int rbl_iac_resolve(const char *base, const char *rel, char *out, size_t outlen, char *err,
                    size_t errlen);

/* Reads a whole regular file of at most RBL_IAC_MAX_FILE bytes into a NUL-terminated buffer
 * counted by the run's byte budget (free it with rbl_budget_free). Returns 0 or a negative
 * RBL_E* code with a message in err. */
int rbl_iac_read_file(const char *path, char **buf, size_t *len, char *err, size_t errlen);

/* rbl.drift.c: read_json(path), read_yaml(path) for src/families/drift/iac.lua; paths are relative
 * to the runbook's directory. */
int luaopen_rbl_drift_c(lua_State *L);

#endif
