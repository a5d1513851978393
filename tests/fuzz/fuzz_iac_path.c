/* iac path resolution (src/families/drift/drift.c, rbl_iac_resolve): whatever the relative path
 * (dot segments, //, symlinks in and out of the tree), a resolved file lies under the base. */
#include "fuzz.h"
#include "drift.h"

#include <limits.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char base[PATH_MAX], rbase[PATH_MAX];

static void make_tree(void) {
  char t[] = "/tmp/rbl-fuzz-iac.XXXXXX", p[PATH_MAX + 64];
  if (!mkdtemp(t)) abort();
  snprintf(base, sizeof base, "%s/base", t);
  mkdir(base, 0700);
  snprintf(p, sizeof p, "%s/a", base), mkdir(p, 0700);
  snprintf(p, sizeof p, "%s/a/b", base), mkdir(p, 0700);
  static const char *const files[] = {"f.json", "a/g.yaml", "a/b/h.tfstate", "../outside.json"};
  for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
    snprintf(p, sizeof p, "%s/%s", base, files[i]);
    FILE *f = fopen(p, "w");
    if (f) fclose(f);
  }
  snprintf(p, sizeof p, "%s/up", base), symlink("../", p);         /* out of the tree */
  snprintf(p, sizeof p, "%s/etc", base), symlink("/etc", p);       /* absolute, outside */
  snprintf(p, sizeof p, "%s/a/in", base), symlink("../f.json", p); /* inside */
  snprintf(p, sizeof p, "%s/a/loop", base), symlink("loop", p);    /* a loop */
  snprintf(p, sizeof p, "%s/out.json", base), symlink("../outside.json", p);
  if (!realpath(base, rbase)) abort();
}

int LLVMFuzzerTestOneInput(const unsigned char *d, size_t n) {
  if (!base[0]) make_tree();
  char rel[PATH_MAX + 16], out[PATH_MAX], err[PATH_MAX + 256];
  if (n >= sizeof rel) n = sizeof rel - 1;
  memcpy(rel, d, n);
  rel[n] = '\0'; /* a NUL inside ends the path, as luaL_checklstring's caller refuses it */
  err[0] = '\0';
  int rc = rbl_iac_resolve(base, rel, out, sizeof out, err, sizeof err);
  if (rc != 0) {
    FUZZ_CHECK(err[0] != '\0', "refused without a reason: %s", rel);
    return 0;
  }
  size_t bl = strlen(rbase);
  FUZZ_CHECK(strncmp(out, rbase, bl) == 0 && out[bl] == '/', "%s resolved outside: %s", rel, out);
  char again[PATH_MAX];
  FUZZ_CHECK(realpath(out, again) && strcmp(again, out) == 0, "%s: %s is not a real path", rel,
             out);
  return 0;
}
