/* The registry of primitive families, in the manner of Lua's linit.c: the sandbox's globals,
 * rbl check's known names, the escape suite's allow list and the docs check all come from it.
 * Adding a family is one folder under src/families/ and one row here. */
#include "families.h"
#include "docker.h"
#include "drift.h"
#include "kube.h"
#include "prom.h"
#include "notify.h"
#include "sandbox.h"

#include <lauxlib.h>
#include <stdio.h>
#include <string.h>

const rbl_family rbl_families[] = {
    /* The DSL and the generic primitives: lua/rbl/std.lua, lua/rbl/runbook.lua, entry.lua. */
    {"core", "rbl.std", NULL, "docs/runbook-language.md",
     "log sleep parallel each each_tenant secret json json.encode json.decode json.null "
     "json.array json.object detect_runtime runbook step tenant tenants incident params dry_run "
     "approve"},
    {"exec", "rbl.exec", NULL, "src/families/exec/exec.md", "exec"},
    {"docker", "rbl.docker", luaopen_rbl_docker_c, "src/families/docker/docker.md",
     "docker_exec docker docker.ps docker.inspect docker.restart docker.logs docker.stop "
     "docker.start "
     "docker.kill docker.stats docker.top"},
    {"kube", "rbl.kube", luaopen_rbl_kube_c, "src/families/kube/kube.md",
     "kube_patch kube kube.get kube.list kube.rollout_restart kube.scale kube.can_i kube.wait "
     "kube.rollout_status kube.logs kube.events kube.delete kube.rollout_undo"},
    {"drift", "rbl.drift_prims", luaopen_rbl_drift_c, "src/families/drift/drift.md",
     "drift_compare iac iac.terraform iac.manifest iac.json iac.yaml"},
    {"isolation", "rbl.isolation", NULL, "src/families/isolation/isolation.md", "verify_isolation"},
    {"notify", "rbl.notify", luaopen_rbl_notify_c, "src/families/notify/notify.md", "notify"},
    {"prom", "rbl.prom", luaopen_rbl_prom_c, "src/families/prom/prom.md",
     "prom prom.query prom.range prom.tenants prom.watch wait_until"},
    {NULL, NULL, NULL, NULL, NULL}};

/* The next space-separated word of *s (its length in *len), or NULL at the end. */
static const char *next_word(const char **s, size_t *len) {
  *s += strspn(*s, " ");
  if (!**s) return NULL;
  const char *w = *s;
  *len = strcspn(w, " ");
  *s += *len;
  return w;
}

int luaopen_rbl_families(lua_State *L) {
  lua_newtable(L);
  lua_Integer i = 0;
  for (const rbl_family *f = rbl_families; f->name; f++) {
    lua_createtable(L, 0, 4);
    lua_pushstring(L, f->name);
    lua_setfield(L, -2, "name");
    lua_pushstring(L, f->module);
    lua_setfield(L, -2, "module");
    lua_pushstring(L, f->doc);
    lua_setfield(L, -2, "doc");
    lua_newtable(L);
    const char *s = f->globals, *w;
    size_t len;
    for (lua_Integer n = 1; (w = next_word(&s, &len)) != NULL; n++) {
      lua_pushlstring(L, w, len);
      lua_rawseti(L, -2, n);
    }
    lua_setfield(L, -2, "globals");
    lua_rawseti(L, -2, ++i);
  }
  return 1;
}

static void print_base(const char *name, void *ud) {
  (void)ud;
  printf("%s\tlua\tdocs/runbook-language.md\n", name);
}

void rbl_families_print(void) {
  rbl_sandbox_each_name(print_base, NULL);
  for (const rbl_family *f = rbl_families; f->name; f++) {
    const char *s = f->globals, *w;
    size_t len;
    while ((w = next_word(&s, &len)) != NULL)
      printf("%.*s\t%s\t%s\n", (int)len, w, f->name, f->doc);
  }
}
