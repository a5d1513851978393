/* rbl.drift.c: confined file access and JSON/YAML decoding behind src/families/drift/iac.lua. */
#include "drift.h"
#include "budget.h"
#include "engine_int.h"
#include "json.h"
#include "rbl.h"
#include "yaml.h"

#include <lauxlib.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int fail(int code, char *err, size_t errlen, const char *fmt, const char *a, const char *b) {
  if (err && errlen) snprintf(err, errlen, fmt, a, b);
  return code;
}

/* Normalises rel lexically into out ("a/./b/../c" -> "a/c"); -1 if ".." climbs above it. */
static int normalise(const char *rel, char *out, size_t outlen) {
  size_t n = 0;
  const char *p = rel;
  out[0] = '\0';
  while (*p) {
    const char *q = strchr(p, '/');
    size_t seg = q ? (size_t)(q - p) : strlen(p);
    if (seg == 0 || (seg == 1 && p[0] == '.')) {
      /* skip empty and "." segments */
    } else if (seg == 2 && p[0] == '.' && p[1] == '.') {
      if (n == 0) return -1;
      while (n > 0 && out[n - 1] != '/')
        n--;
      if (n > 0) n--; /* the '/' before the dropped segment */
      out[n] = '\0';
    } else {
      if (n + seg + 2 > outlen) return -2;
      if (n > 0) out[n++] = '/';
      memcpy(out + n, p, seg);
      n += seg;
      out[n] = '\0';
    }
    p += seg;
    if (*p == '/') p++;
  }
  return 0;
}

int rbl_iac_resolve(const char *base, const char *rel, char *out, size_t outlen, char *err,
                    size_t errlen) {
  char norm[PATH_MAX], rbase[PATH_MAX], joined[2 * PATH_MAX + 2], real[PATH_MAX];
  if (!rel || !*rel) return fail(RBL_EINVAL, err, errlen, "iac: empty path%s%s", "", "");
  if (rel[0] == '/')
    return fail(RBL_EINVAL, err, errlen,
                "iac: %s: absolute paths are not allowed (paths are relative to the runbook "
                "directory %s)",
                rel, base ? base : "(none)");
  if (!base)
    return fail(RBL_EINVAL, err, errlen,
                "iac: %s: no directory to read files from (rbl repl: give --dir DIR)%s", rel, "");
  if (!realpath(base, rbase))
    return fail(rbl_from_errno(errno), err, errlen, "iac: runbook directory %s: %s", base,
                strerror(errno));
  if (!strcmp(rbase, "/"))
    return fail(RBL_EREFUSED, err, errlen,
                "iac: %s: the runbook directory is /, which would confine nothing: put the "
                "runbook in a directory of its own%s",
                rel, "");
  int rc = normalise(rel, norm, sizeof norm);
  if (rc == -1)
    return fail(RBL_EREFUSED, err, errlen, "iac: %s: path escapes the runbook directory %s", rel,
                rbase);
  if (rc == -2 || !norm[0])
    return fail(RBL_EINVAL, err, errlen, "iac: %s: not a file path%s", rel, "");
  snprintf(joined, sizeof joined, "%s/%s", rbase, norm);
  if (!realpath(joined, real)) {
    int e = errno;
    if (e == ENOENT || e == ENOTDIR)
      return fail(RBL_ENOTFOUND, err, errlen, "iac: %s: no such file in %s", rel, rbase);
    return fail(rbl_from_errno(e), err, errlen, "iac: %s: %s", rel, strerror(e));
  }
  /* Symlinks: the resolved file must still lie under the resolved base. */
  size_t bl = strlen(rbase);
  int inside = strncmp(real, rbase, bl) == 0 && real[bl] == '/';
  if (!inside)
    return fail(RBL_EREFUSED, err, errlen, "iac: %s: path escapes the runbook directory %s", rel,
                rbase);
  if (strlen(real) + 1 > outlen)
    return fail(RBL_ETOOBIG, err, errlen, "iac: %s: path too long%s", rel, "");
  memcpy(out, real, strlen(real) + 1);
  return 0;
}

int rbl_iac_read_file(const char *path, char **buf, size_t *len, char *err, size_t errlen) {
  *buf = NULL;
  *len = 0;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return fail(rbl_from_errno(errno), err, errlen, "%s: %s", path, strerror(errno));
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    close(fd);
    return fail(RBL_EINVAL, err, errlen, "%s: not a regular file%s", path, "");
  }
  if ((unsigned long long)st.st_size > RBL_IAC_MAX_FILE) {
    close(fd);
    return fail(RBL_ETOOBIG, err, errlen, "%s: larger than the 64 MiB limit%s", path, "");
  }
  size_t cap = (size_t)st.st_size + 1, n = 0;
  char *b = rbl_budget_realloc(NULL, cap + 1); /* counted: a 64 MiB file is run memory */
  if (!b) {
    close(fd);
    return fail(RBL_ENOMEM, err, errlen, "%s: out of memory%s", path, "");
  }
  for (;;) { /* read until EOF; a file that grows past its stat size and the cap fails */
    if (n == cap) {
      if (cap > RBL_IAC_MAX_FILE) {
        rbl_budget_free(b);
        close(fd);
        return fail(RBL_ETOOBIG, err, errlen, "%s: larger than the 64 MiB limit%s", path, "");
      }
      char *nb = rbl_budget_realloc(b, cap * 2 + 1);
      if (!nb) {
        rbl_budget_free(b);
        close(fd);
        return fail(RBL_ENOMEM, err, errlen, "%s: out of memory%s", path, "");
      }
      b = nb;
      cap *= 2;
    }
    ssize_t r = read(fd, b + n, cap - n);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      int e = errno;
      rbl_budget_free(b);
      close(fd);
      return fail(rbl_from_errno(e), err, errlen, "%s: %s", path, strerror(e));
    }
    if (r == 0) break;
    n += (size_t)r;
  }
  close(fd);
  b[n] = '\0';
  *buf = b;
  *len = n;
  return 0;
}

/* ---- Lua layer ---- */

/* Checks the path argument, confines it and reads the file into *buf (the caller frees
 * it); raises on failure, before anything is allocated. Reads block the loop briefly:
 * these are local files of at most 64 MiB, read once per call. */
static void iac_load(lua_State *L, char **buf, size_t *len) {
  size_t rl;
  const char *rel = luaL_checklstring(L, 1, &rl);
  if (strlen(rel) != rl) luaL_argerror(L, 1, "iac: path contains a NUL byte");
  const char *base = rbl_engine_runbook_dir(rbl_engine_of(L));
  char real[PATH_MAX], err[PATH_MAX + 256];
  int rc = rbl_iac_resolve(base, rel, real, sizeof real, err, sizeof err);
  if (rc == RBL_EREFUSED || (rc == RBL_EINVAL && rel[0] == '/')) {
    rbl_refuse(L, "iac", "%s", err + 5); /* drop "iac: ": rbl_refuse prefixes the primitive */
  } else if (rc) {
    rbl_raise(L, rbl_err_name(rc), "%s", err);
  }
  if ((rc = rbl_iac_read_file(real, buf, len, err, sizeof err)) != 0) {
    if (rc == RBL_ENOMEM) rbl__poll_limits(L); /* over the run's memory budget: "killed" */
    rbl_raise(L, rbl_err_name(rc), "iac: %s: %s", rel, err);
  }
}

/* 1-based line and column of offset off in buf. */
static void line_col(const char *buf, size_t off, size_t *line, size_t *col) {
  *line = 1;
  *col = 1;
  for (size_t i = 0; i < off && buf[i]; i++) {
    if (buf[i] == '\n')
      (*line)++, *col = 1;
    else
      (*col)++;
  }
}

/* iacc.read_json(path) -> the decoded document */
static int l_read_json(lua_State *L) {
  char *buf;
  size_t len;
  iac_load(L, &buf, &len);
  const char *end = NULL;
  rbl_budget_parse_begin();
  cJSON *j = cJSON_ParseWithLengthOpts(buf, len, &end, 0);
  rbl_budget_parse_end();
  if (!j && rbl__limits_hit(L)) {
    rbl_budget_free(buf);
    rbl__poll_limits(L); /* the tree outgrew the memory budget: raises "killed" */
  }
  if (!j) {
    size_t line, col;
    line_col(buf, end ? (size_t)(end - buf) : 0, &line, &col);
    rbl_budget_free(buf);
    return rbl_raise(L, "invalid", "iac: %s: invalid JSON at line %zu, column %zu",
                     lua_tostring(L, 1), line, col);
  }
  rbl_budget_free(buf);
  return rbl_json_push_free(L, j);
}

/* iacc.read_yaml(path) -> array of the documents */
static int l_read_yaml(lua_State *L) {
  char *buf;
  size_t len;
  char err[512];
  iac_load(L, &buf, &len);
  rbl_budget_parse_begin();
  cJSON *docs = rbl_yaml_parse(buf, len, err, sizeof err);
  rbl_budget_parse_end();
  rbl_budget_free(buf);
  if (!docs) rbl__poll_limits(L); /* out of the memory budget (alias expansion): raises */
  if (!docs) return rbl_raise(L, "invalid", "iac: %s: invalid YAML: %s", lua_tostring(L, 1), err);
  return rbl_json_push_free(L, docs);
}

static const luaL_Reg iacc_funcs[] = {
    {"read_json", l_read_json},
    {"read_yaml", l_read_yaml},
    {NULL, NULL},
};

int luaopen_rbl_drift_c(lua_State *L) {
  luaL_newlib(L, iacc_funcs);
  return 1;
}
