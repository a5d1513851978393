/* YAML (src/core/yaml.c): any input parses or fails with a message; nothing crashes or leaks. */
#include "fuzz.h"
#include "yaml.h"

int LLVMFuzzerTestOneInput(const unsigned char *d, size_t n) {
  char err[512];
  cJSON *j = rbl_yaml_parse((const char *)d, n, err, sizeof err);
  FUZZ_CHECK(j || err[0], "a failure without a message");
  if (j) {
    char *s = cJSON_PrintUnformatted(j); /* the tree is well formed */
    FUZZ_CHECK(s != NULL, "tree does not print");
    cJSON_free(s);
  }
  cJSON_Delete(j);
  return 0;
}
