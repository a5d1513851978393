/* YAML (src/core/yaml.c): any input parses or fails with a message; nothing crashes or leaks.
 * Under the byte budget of a run: an alias bomb fails "out of memory", it does not grow. */
#include "fuzz.h"
#include "budget.h"
#include "yaml.h"

int LLVMFuzzerTestOneInput(const unsigned char *d, size_t n) {
  rbl_engine *e = fuzz_engine();
  char err[512];
  rbl_budget_parse_begin(); /* as iac.yaml and the kubeconfig loader parse */
  cJSON *j = rbl_yaml_parse((const char *)d, n, err, sizeof err);
  rbl_budget_parse_end();
  FUZZ_CHECK(j || err[0], "a failure without a message");
  if (j) {
    char *s = cJSON_PrintUnformatted(j); /* the tree is well formed */
    FUZZ_CHECK(s != NULL, "tree does not print");
    cJSON_free(s);
  }
  cJSON_Delete(j);
  fuzz_reset(e);
  return 0;
}
